//! Helpers shared by the integration tests: a simulated GitLab on a background runtime and the real
//! binary pointed at it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use gitlab_sim::{Sim, SimOptions};

/// A simulated GitLab served from its own runtime, so synchronous tests can drive the binary.
pub struct SimServer {
    pub sim: Sim,
    pub url: String,
    _runtime: tokio::runtime::Runtime,
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
        Self {
            sim,
            url,
            _runtime: runtime,
        }
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
