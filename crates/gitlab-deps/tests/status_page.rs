//! The status page, the JSON API and the live event stream of a real `serve` process against a
//! simulated GitLab: a chain with a failure, seen by the API (snapshots), the pages (the drawn
//! graph, blocked-by, no external URL) and a server-sent event after a change.
//!
//! Update the snapshots with `INSTA_UPDATE=always cargo test -p gitlab-deps --test status_page`.

mod common;

use std::time::{Duration, Instant};

use common::{SECRET, Service, SimServer, Workdir, gitlab_deps, wait_until};
use gitlab_sim::{Outcome, ProjectSpec, SimOptions};

const CI: &str = "build:\n  script: [make]\n";

/// base -> ruby -> web -> svc, base -> tools -> web, and a cycle loop/a <-> loop/b.
fn instance() -> SimServer {
    let server = SimServer::start(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    });
    let sim = &server.sim;
    let reg = sim.registry_host();
    let project = |spec: ProjectSpec| sim.add_project(spec.file(".gitlab-ci.yml", CI));
    project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian:bookworm\n"));
    project(
        ProjectSpec::new("images/ruby").file("Dockerfile", format!("FROM {reg}/images/base\n")),
    );
    project(
        ProjectSpec::new("images/tools").file("Dockerfile", format!("FROM {reg}/images/base\n")),
    );
    project(ProjectSpec::new("apps/web").file(
        "Dockerfile",
        format!("FROM {reg}/images/ruby AS build\nFROM {reg}/images/tools\n"),
    ));
    project(ProjectSpec::new("apps/svc").file(".gitlab-deps", "apps/web\n"));
    project(ProjectSpec::new("loop/a").file(".gitlab-deps", "loop/b\n"));
    project(ProjectSpec::new("loop/b").file("Dockerfile", format!("FROM {reg}/loop/a\n")));
    server
}

struct Fixture {
    server: SimServer,
    work: Workdir,
    service: Service,
}

impl Fixture {
    fn start() -> Self {
        let server = instance();
        let work = Workdir::new();
        gitlab_deps(&work, &server.url, None)
            .arg("scan")
            .assert()
            .success();
        let service = Service::start(&work, &server.url, "127.0.0.1:0", &[]);
        gitlab_deps(&work, &server.url, None)
            .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
            .args(["hooks", "sync", "--public-url", &service.url])
            .assert()
            .success();
        Self {
            server,
            work,
            service,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.service.url);
        self.server
            .runtime
            .block_on(async {
                let r = reqwest::get(&url).await?;
                let status = r.status().as_u16();
                Ok::<_, reqwest::Error>((status, r.text().await?))
            })
            .unwrap()
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        let stable = body
            .replace(&self.server.url, "http://[gitlab]")
            .replace(&self.service.url, "http://[service]");
        serde_json::from_str(&stable).unwrap()
    }

    /// Our running pipeline of a project.
    fn ours(&self, project: &str) -> u64 {
        let mut found = None;
        wait_until(60, &format!("a pipeline of ours for {project}"), || {
            found = self
                .server
                .sim
                .pipelines(project)
                .into_iter()
                .find(|p| p.source == "api" && !p.status.is_finished())
                .map(|p| p.id);
            found.is_some()
        });
        found.unwrap()
    }

    /// A change at base, built; ruby fails, tools succeeds: web and svc are blocked by ruby.
    fn chain_with_a_failure(&self) {
        let sim = &self.server.sim;
        let base = sim.run_pipeline("images/base", "push");
        sim.finish_pipeline("images/base", base, Outcome::Success);
        let ruby = self.ours("images/ruby");
        let tools = self.ours("images/tools");
        sim.finish_pipeline("images/ruby", ruby, Outcome::Failed);
        sim.finish_pipeline("images/tools", tools, Outcome::Success);
        wait_until(60, "ruby failed, web and svc blocked by it", || {
            let p = self.json("/api/projects/apps/svc");
            p["state"] == "blocked" && p["blocked_by"] == serde_json::json!(["images/ruby"])
        });
        wait_until(60, "tools done in the chain", || {
            let c = self.json("/api/cascades");
            c["active"][0]["projects"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["project"] == "images/tools" && p["state"] == "done")
            })
        });
    }
}

fn ids() -> insta::internals::Redaction {
    insta::dynamic_redaction(|value, _| match value.as_u64() {
        Some(_) => "[id]".into(),
        None => value,
    })
}

fn mask_pipeline_urls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Some(at) = s.find("/-/pipelines/") {
                s.truncate(at + "/-/pipelines/".len());
                s.push_str("[id]");
            }
            if let Some(at) = s.find("pipeline #") {
                let rest: String = s[at + 10..]
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .to_owned();
                s.truncate(at + 10);
                s.push_str("[id]");
                s.push_str(&rest);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(mask_pipeline_urls),
        serde_json::Value::Object(o) => o.values_mut().for_each(mask_pipeline_urls),
        _ => {}
    }
}

#[test]
fn api_pages_and_live_events_follow_a_chain_with_a_failure() {
    let f = Fixture::start();
    f.chain_with_a_failure();

    // The API, with run-specific values (times, ids, the chain id) redacted.
    let mut cascades = f.json("/api/cascades");
    mask_pipeline_urls(&mut cascades);
    insta::assert_json_snapshot!("api_cascades", cascades, {
        ".active[].id" => "[chain]",
        ".active[].started_ms" => "[time]",
        ".active[].duration_ms" => "[duration]",
    });
    let chain_id = f.json("/api/cascades")["active"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = f.json(&format!("/api/cascades/{chain_id}"));
    assert_eq!(one["root"], "images/base");
    let (status, _) = f.get("/api/cascades/c-nope");
    assert_eq!(status, 404);

    let mut web = f.json("/api/projects/apps/web");
    mask_pipeline_urls(&mut web);
    insta::assert_json_snapshot!("api_project_web", web, {
        ".cascades" => "[chains]",
        ".pipelines[].id" => ids(),
    });
    let (status, body) = f.get("/api/projects/apps/wbe");
    assert_eq!(status, 404);
    assert!(
        body.contains("apps/web"),
        "suggests the close match: {body}"
    );

    insta::assert_json_snapshot!(
        "api_graph_around_web",
        f.json("/api/graph?around=apps/web&depth=1")
    );
    let whole = f.json("/api/graph");
    assert_eq!(whole["nodes"].as_array().unwrap().len(), 7);
    let cycle: Vec<&serde_json::Value> = whole["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["in_cycle"] == true)
        .collect();
    assert_eq!(cycle.len(), 2, "loop/a <-> loop/b: {whole}");

    let openapi = f.json("/api/openapi.json");
    for path in [
        "/api/graph",
        "/api/cascades/{id}",
        "/api/projects/{path}",
        "/readyz",
    ] {
        assert!(
            openapi["paths"][path]["get"].is_object(),
            "{path} in {openapi}"
        );
    }

    let ready = f.json("/readyz");
    assert_eq!(ready["ready"], true, "{ready}");

    // The status page draws the graph with the states and lists the chain.
    let (status, page) = f.get("/");
    assert_eq!(status, 200);
    for (path, state) in [
        ("images/ruby", "failed"),
        ("apps/web", "blocked"),
        ("apps/svc", "blocked"),
        ("images/tools", "idle"),
    ] {
        assert!(
            page.contains(&format!("data-path=\"{path}\" data-state=\"{state}\"")),
            "{path} drawn as {state}"
        );
    }
    assert!(page.contains("class=\"edge cycle\""), "cycle edges dashed");
    assert!(page.contains("blocked by failed images/ruby"));
    assert!(
        page.contains("data-outcome=failed"),
        "the chain stopped on its failure"
    );
    let (status, project) = f.get("/projects/apps/web");
    assert_eq!(status, 200);
    assert!(project.contains("Dockerfile:1"), "the edge's origin line");

    // Served HTML, CSS and JS load nothing from elsewhere: every absolute URL is the GitLab
    // instance's (links to pipelines and projects), none in the assets.
    for path in ["/", "/projects/apps/web", "/projects/nope"] {
        let (_, html) = f.get(path);
        for (at, _) in html.match_indices("://") {
            let start = html[..at]
                .rfind(['"', '\'', '(', ' ', '='])
                .map_or(0, |i| i + 1);
            assert!(
                html[start..].starts_with(&f.server.url),
                "{path} refers to {}",
                &html[start..(at + 40).min(html.len())]
            );
        }
        for attr in ["src=", "<link"] {
            for (at, _) in html.match_indices(attr) {
                let rest = &html[at..(at + 60).min(html.len())];
                assert!(rest.contains("/assets/"), "{path}: {rest}");
            }
        }
    }
    for asset in ["/assets/style.css", "/assets/live.js"] {
        let (status, text) = f.get(asset);
        assert_eq!(status, 200);
        for bad in ["://", "@import", "url("] {
            assert!(!text.contains(bad), "{asset} contains {bad}");
        }
    }
}

/// Reads server-sent events until one named `update` whose data satisfies `want`, or the deadline.
async fn next_update(
    response: &mut reqwest::Response,
    buffer: &mut String,
    deadline: Instant,
    want: impl Fn(u64) -> bool,
) -> Option<u64> {
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let name = event.lines().find_map(|l| l.strip_prefix("event: "));
            let data = event.lines().find_map(|l| l.strip_prefix("data: "));
            if name == Some("update")
                && let Some(n) = data.and_then(|d| d.trim().parse::<u64>().ok())
                && want(n)
            {
                return Some(n);
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .ok()?
            .ok()??;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[test]
fn an_event_arrives_after_a_change() {
    let f = Fixture::start();
    let url = format!("{}/api/events", f.service.url);
    let sim = &f.server.sim;
    f.server.runtime.block_on(async {
        let mut response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buffer = String::new();
        let first = next_update(&mut response, &mut buffer, deadline, |_| true)
            .await
            .expect("the stream opens with the current state");
        // A change at base: the engine makes ruby and tools stale and starts them.
        let base = sim.run_pipeline("images/base", "push");
        sim.finish_pipeline("images/base", base, Outcome::Success);
        let later = next_update(&mut response, &mut buffer, deadline, |n| n > first).await;
        assert!(later.is_some(), "no update event after the change");
    });
    wait_until(60, "the change shows in the API", || {
        f.json("/api/cascades")["active"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let _ = &f.work;
}

#[test]
fn a_read_token_protects_pages_and_api_but_not_webhooks_or_health() {
    let server = instance();
    let work = Workdir::new();
    let token = work.write("read-token", "page-token\n");
    let config = work.write(
        "config.toml",
        &format!(
            "[serve]\nread_token_file = {:?}\n",
            token.display().to_string()
        ),
    );
    let service = Service::start_with_config(&work, &server.url, "127.0.0.1:0", &[], Some(&config));
    let get = |path: &str, auth: Option<&str>| -> (u16, Option<String>) {
        let url = format!("{}{path}", service.url);
        server
            .runtime
            .block_on(async {
                let client = reqwest::Client::new();
                let mut request = client.get(&url);
                if let Some(auth) = auth {
                    request = request.header("Authorization", auth);
                }
                let r = request.send().await?;
                let challenge = r
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap_or_default().to_owned());
                Ok::<_, reqwest::Error>((r.status().as_u16(), challenge))
            })
            .unwrap()
    };
    for path in [
        "/",
        "/api/status",
        "/api/graph",
        "/api/events",
        "/projects/apps/web",
    ] {
        let (status, challenge) = get(path, None);
        assert_eq!(status, 401, "{path}");
        assert!(
            challenge.is_some_and(|c| c.starts_with("Basic")),
            "{path}: the browser asks"
        );
        assert_eq!(get(path, Some("Bearer wrong")).0, 401, "{path}");
    }
    assert_eq!(get("/api/graph", Some("Bearer page-token")).0, 200);
    // "user:page-token", as a browser sends it after asking.
    assert_eq!(get("/", Some("Basic dXNlcjpwYWdlLXRva2Vu")).0, 200);
    assert_eq!(get("/healthz", None).0, 200);
    assert_eq!(get("/readyz", None).0, 200);
}
