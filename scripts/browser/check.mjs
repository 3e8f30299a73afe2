// Loads the status page of a running `gitlab-deps demo` in headless Chromium and checks what a
// person would look at: the demo's chain finishes (live, over server-sent events) with its failed
// project and the project blocked below it, and the drawn graph has one node per project with the
// same states. Saves a screenshot. Usage: node check.mjs URL CHROMIUM SCREENSHOT PROFILE_DIR
import { chromium } from "playwright-core";

const [url, executablePath, screenshot, profile] = process.argv.slice(2);
const deadline = 180_000;

function fail(message) {
  console.error(`browser test: ${message}`);
  process.exitCode = 1;
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
});
try {
  const page = await context.newPage();
  const external = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(url)) external.push(r.url());
  });
  await page.goto(url + "/");
  // Finished: a chain stopped on its failure, with a failed and a blocked project and nothing
  // running, waiting or queued any more. The page only gets there through live updates.
  await page.waitForFunction(
    () => {
      const chain = document.querySelector("article.chain[data-outcome=failed]");
      if (!chain) return false;
      const states = [...chain.querySelectorAll("tr[data-state]")].map((r) => r.dataset.state);
      return (
        states.includes("failed") &&
        states.includes("blocked") &&
        !states.some((s) => ["running", "waiting", "queued"].includes(s))
      );
    },
    null,
    { timeout: deadline, polling: 200 },
  );
  const live = await page.textContent("#live-state");
  if (live !== "live") fail(`the page is not on server-sent events: "${live}"`);

  const api = await page.evaluate(async () => (await fetch("/api/graph")).json());
  const drawn = await page.$$eval("svg.graph g.node", (nodes) =>
    nodes.map((n) => ({ path: n.dataset.path, state: n.dataset.state })),
  );
  const expected = api.nodes.map((n) => `${n.path}=${n.state}`).sort();
  const got = drawn.map((n) => `${n.path}=${n.state}`).sort();
  if (JSON.stringify(expected) !== JSON.stringify(got)) {
    fail(`drawn nodes ${JSON.stringify(got)} differ from /api/graph ${JSON.stringify(expected)}`);
  }
  if (!drawn.some((n) => n.state === "failed") || !drawn.some((n) => n.state === "blocked")) {
    fail(`the graph shows no failed or no blocked project: ${JSON.stringify(drawn)}`);
  }
  const box = await page.$eval("svg.graph", (svg) => svg.getBoundingClientRect().height);
  if (!(box > 50)) fail(`the graph is not drawn (height ${box})`);
  // The search box highlights matching nodes.
  const some = drawn[0].path;
  await page.fill("#filter", some);
  const matched = await page.$$eval("svg.graph g.node.match", (n) => n.map((x) => x.dataset.path));
  if (!matched.includes(some)) fail(`searching ${some} highlights ${JSON.stringify(matched)}`);
  await page.fill("#filter", "");
  if (external.length > 0) fail(`requests to elsewhere: ${external.join(", ")}`);

  await page.screenshot({ path: screenshot, fullPage: true });
  // The failed project's page lists its downstreams with the line each edge comes from.
  const failed = drawn.find((n) => n.state === "failed").path;
  await page.goto(`${url}/projects/${failed}`);
  const text = await page.textContent("main");
  if (!text.includes("Built on it")) fail(`the project page of ${failed} lacks its downstreams`);
  if (process.exitCode !== 1) {
    console.log(`browser test: ok (${drawn.length} projects drawn, screenshot ${screenshot})`);
  }
} catch (e) {
  fail(e.message);
} finally {
  await context.close();
}
