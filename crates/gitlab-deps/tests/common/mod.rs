//! Helpers shared by the integration tests: a simulated GitLab on a background runtime and the real
//! binary pointed at it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use gitlab_sim::{PipelineInfo, ProjectSpec, Sim, SimOptions};

/// A simulated GitLab served from its own runtime, so synchronous tests can drive the binary.
pub struct SimServer {
    pub sim: Sim,
    pub url: String,
    pub runtime: tokio::runtime::Runtime,
}

impl SimServer {
    pub fn start(opts: SimOptions) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sim = Sim::new(opts);
        let url = runtime.block_on(sim.start()).unwrap();
        Self { sim, url, runtime }
    }
}

/// A scratch directory with a database and a config file.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("deps.db")
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The real binary, isolated from the user's environment, pointed at the simulator.
pub fn gitlab_deps(work: &Workdir, gitlab_url: &str, config: Option<&Path>) -> Command {
    let mut cmd = Command::cargo_bin("gitlab-deps").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", work.dir.path())
        .env("GITLAB_DEPS_URL", gitlab_url)
        .env("GITLAB_DEPS_TOKEN", "sim-token")
        .env("GITLAB_DEPS_DB", work.db());
    if let Some(config) = config {
        cmd.env("GITLAB_DEPS_CONFIG", config);
    }
    cmd
}

/// Parses stdout as JSON.
pub fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Runs the binary without a config file and parses its JSON output.
pub fn query(work: &Workdir, gitlab_url: &str, args: &[&str]) -> serde_json::Value {
    json(
        &gitlab_deps(work, gitlab_url, None)
            .args(args)
            .output()
            .unwrap(),
    )
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The webhook secret the tests use.
pub const SECRET: &str = "test-webhook-secret";

/// A running `gitlab-deps serve` child process, killed (SIGKILL) on drop.
pub struct Service {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`, to restart on the same address.
    pub addr: String,
}

impl Service {
    /// Starts `serve` and waits for its "serving on" line.
    pub fn start(work: &Workdir, gitlab_url: &str, listen: &str, extra: &[&str]) -> Self {
        Self::start_with_config(work, gitlab_url, listen, extra, None)
    }

    /// Like [`Service::start`], with a config file.
    pub fn start_with_config(
        work: &Workdir,
        gitlab_url: &str,
        listen: &str,
        extra: &[&str],
        config: Option<&Path>,
    ) -> Self {
        use std::io::BufRead;
        let bin = env!("CARGO_BIN_EXE_gitlab-deps");
        let mut child = std::process::Command::new(bin)
            .env_clear()
            .envs(config.map(|c| ("GITLAB_DEPS_CONFIG", c)))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", work.dir.path())
            .env("GITLAB_DEPS_URL", gitlab_url)
            .env("GITLAB_DEPS_TOKEN", "sim-token")
            .env("GITLAB_DEPS_DB", work.db())
            .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "gitlab_deps=info")
            .args(["serve", "--listen", listen])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(work.path("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                panic!(
                    "serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(work.path("serve.log")).unwrap_or_default()
                )
            })
            .to_owned();
        let addr = url.trim_start_matches("http://").to_owned();
        Self { child, url, addr }
    }

    /// The process id (for /proc/<pid>/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Scans the simulated instance into a fresh database, starts the real `serve` binary on it (with
/// `extra` arguments and an optional config file's text) and installs the hooks with `hooks sync`:
/// what the orchestration tests start from.
pub fn scan_and_serve(
    server: &SimServer,
    extra: &[&str],
    config: Option<&str>,
) -> (Workdir, Service) {
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();
    let config = config.map(|text| work.write("config.toml", text));
    let service =
        Service::start_with_config(&work, &server.url, "127.0.0.1:0", extra, config.as_deref());
    gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
        .args(["hooks", "sync", "--public-url", &service.url])
        .assert()
        .success();
    (work, service)
}

/// Pipelines gitlab-deps created (source `api`) for a project.
pub fn ours(sim: &Sim, project: &str) -> Vec<PipelineInfo> {
    sim.pipelines(project)
        .into_iter()
        .filter(|p| p.source == "api")
        .collect()
}

/// Adds a project with a Dockerfile and a CI config that builds it.
pub fn image_project(sim: &Sim, path: &str, dockerfile: String) {
    sim.add_project(
        ProjectSpec::new(path)
            .file("Dockerfile", dockerfile)
            .file(".gitlab-ci.yml", "build:\n  script: [make]\n"),
    );
}

/// base -> {ruby, tools} -> app: the smallest graph with a diamond.
pub fn diamond(sim: &Sim) {
    let reg = sim.registry_host();
    image_project(sim, "images/base", "FROM debian:bookworm\n".into());
    image_project(sim, "images/ruby", format!("FROM {reg}/images/base\n"));
    image_project(sim, "images/tools", format!("FROM {reg}/images/base\n"));
    image_project(
        sim,
        "apps/app",
        format!("FROM {reg}/images/ruby\nFROM {reg}/images/tools\n"),
    );
}
