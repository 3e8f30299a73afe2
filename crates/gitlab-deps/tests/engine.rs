//! The engine in-process: the real service (engine, HTTP receiver, GitLab client) started through
//! `Service` in the test's own runtime, against gitlab-sim, with a clock the test moves by hand.
//! Timing rules ("poll after ten minutes") are checked without waiting ten minutes, and the test
//! reads the engine's state directly instead of polling a spawned binary.

mod common;

use common::diamond;

use std::sync::Arc;
use std::time::Duration;

use gitlab_deps::config::{ScanFileConfig, ScanSettings};
use gitlab_deps::gitlab::GitLabOptions;
use gitlab_deps::scan::{NoProgress, ScanRequest};
use gitlab_deps::server;
use gitlab_deps::service::{Service, ServiceConfig};
use gitlab_deps::store::{SqliteStore, Store};
use gitlab_deps::util::ManualClock;
use gitlab_sim::{Outcome, PipelineInfo, Sim, SimOptions};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "in-process-secret";
const WAIT: Duration = Duration::from_secs(30);
const RECONCILE_AFTER: Duration = Duration::from_secs(600);

struct Running {
    sim: Sim,
    service_engine: Arc<gitlab_deps::orchestrate::Engine>,
    clock: Arc<ManualClock>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The diamond on a simulator whose pipelines run until the test finishes them, scanned, served,
/// with hooks pointing at the service.
async fn start() -> Running {
    let sim = Sim::new(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    });
    let url = sim.start().await.unwrap();
    diamond(&sim);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("deps.db")).unwrap());
    let mut config = ServiceConfig::new(
        GitLabOptions::new(format!("{url}/").parse().unwrap(), sim.token().into()),
        ScanSettings::from_file(&ScanFileConfig::default()).unwrap(),
    );
    config.engine.reconcile_after = RECONCILE_AFTER;
    config.engine.rescan_every = None;
    config.http.webhook_secret = Some(SECRET.into());
    // Now: pipelines created before the service first ran do not count, so the clock starts at
    // the simulator's time and moves only forward.
    let clock = Arc::new(ManualClock::at(gitlab_deps::util::now_ms()));
    let service = Service::with_clock(config, store, clock.clone())
        .await
        .unwrap();
    service
        .scanner()
        .scan(&ScanRequest::default(), &NoProgress)
        .await
        .unwrap();
    let engine = Arc::clone(service.engine());
    engine.reload().await.unwrap();
    let (listener, addr) = server::bind("127.0.0.1:0").await.unwrap();
    for project in ["images/base", "images/ruby", "images/tools", "apps/app"] {
        sim.add_hook(project, &format!("http://{addr}/hooks/gitlab"), SECRET);
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(service.serve(listener, shutdown.clone()));
    Running {
        sim,
        service_engine: engine,
        clock,
        shutdown,
        _dir: dir,
    }
}

/// Pipelines gitlab-deps created (source `api`) for a project.
fn ours(sim: &Sim, project: &str) -> Vec<PipelineInfo> {
    sim.pipelines(project)
        .into_iter()
        .filter(|p| p.source == "api")
        .collect()
}

fn finish_all(sim: &Sim, project: &str, outcome: Outcome) {
    for p in sim.pipelines(project) {
        if !p.status.is_finished() {
            sim.finish_pipeline(project, p.id, outcome);
        }
    }
}

/// The state the engine reports for a project (`None`: idle).
async fn state_of(r: &Running, project: &str) -> Option<String> {
    let snapshot = r.service_engine.snapshot().await;
    gitlab_deps::orchestrate::describe(&snapshot)
        .into_iter()
        .find(|v| v.project == project)
        .map(|v| v.state.to_owned())
}

/// Base succeeds by a push; the engine starts ruby and tools.
async fn first_wave(r: &Running) {
    let base = r.sim.run_pipeline("images/base", "push");
    r.sim.finish_pipeline("images/base", base, Outcome::Success);
    assert!(
        r.sim
            .wait_for(WAIT, |s| ours(s, "images/ruby").len() == 1
                && ours(s, "images/tools").len() == 1)
            .await,
        "ruby and tools started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diamond_waits_for_both_parents_and_builds_each_once() {
    let r = start().await;
    first_wave(&r).await;
    finish_all(&r.sim, "images/ruby", Outcome::Success);
    // Ruby's success alone starts nothing: app also waits for tools.
    let waited = async {
        loop {
            if state_of(&r, "apps/app").await.as_deref() == Some("waiting") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, waited)
        .await
        .expect("app waits for tools");
    assert!(ours(&r.sim, "apps/app").is_empty(), "app not started yet");
    finish_all(&r.sim, "images/tools", Outcome::Success);
    assert!(
        r.sim
            .wait_for(WAIT, |s| ours(s, "apps/app").len() == 1)
            .await,
        "app started once both parents succeeded"
    );
    let app = &ours(&r.sim, "apps/app")[0];
    for parent in ["images/ruby", "images/tools"] {
        let finished = ours(&r.sim, parent)[0]
            .finished_at
            .expect("parent finished");
        assert!(app.created_at >= finished, "app created after {parent}");
    }
    finish_all(&r.sim, "apps/app", Outcome::Success);
    let settled = async {
        while r
            .service_engine
            .snapshot()
            .await
            .cascade
            .projects()
            .next()
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, settled)
        .await
        .expect("nothing pending");
    for project in ["images/ruby", "images/tools", "apps/app"] {
        assert_eq!(ours(&r.sim, project).len(), 1, "{project} built once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_webhook_is_polled_once_reconcile_after_has_passed_on_the_clock() {
    let r = start().await;
    first_wave(&r).await;
    // The engine has taken in both creations (the reconciler polls only pipelines it knows).
    let known = async {
        loop {
            let snapshot = r.service_engine.snapshot().await;
            let views = gitlab_deps::orchestrate::describe(&snapshot);
            if views.iter().filter(|v| v.pipeline_id.is_some()).count() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, known)
        .await
        .expect("both pipelines known to the engine");
    r.sim.faults().drop_webhooks(1000);
    finish_all(&r.sim, "images/ruby", Outcome::Success);
    finish_all(&r.sim, "images/tools", Outcome::Success);
    let pipelines_read = |sim: &Sim| {
        sim.requests()
            .iter()
            .filter(|q| q.method == "GET" && q.path.contains("/pipelines/"))
            .count()
    };

    // Not yet overdue: the reconciler leaves the pipelines alone.
    let before = pipelines_read(&r.sim);
    r.service_engine.reconcile(false).await;
    assert_eq!(pipelines_read(&r.sim), before, "nothing polled early");
    assert_eq!(
        state_of(&r, "images/ruby").await.as_deref(),
        Some("running")
    );

    // Ten minutes later by the clock, both are polled, found finished, and app starts.
    r.clock.advance(RECONCILE_AFTER + Duration::from_secs(1));
    r.service_engine.reconcile(false).await;
    assert!(pipelines_read(&r.sim) >= before + 2, "both polled");
    assert!(
        r.sim
            .wait_for(WAIT, |s| ours(s, "apps/app").len() == 1)
            .await,
        "app started without webhooks"
    );
    for project in ["images/ruby", "images/tools"] {
        assert_eq!(ours(&r.sim, project).len(), 1, "{project} built once");
    }
}
