//! Recovery without stalls: after a crash, a lost root change or a lost webhook of our own
//! pipeline, the chain below goes on within seconds, not after `reconcile_after`. Kill and restart
//! drive the real binary; the overdue poll runs the engine in-process on a hand-moved clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Service, SimServer, Workdir, ours, wait_until};
use gitlab_deps::cascade::Input;
use gitlab_deps::config::ScanSettings;
use gitlab_deps::gitlab::GitLabOptions;
use gitlab_deps::orchestrate::{CatchUpReason, Engine, enqueue_operator_input};
use gitlab_deps::scan::{NoProgress, ScanRequest};
use gitlab_deps::service::{Service as InProcess, ServiceConfig};
use gitlab_deps::store::{SqliteStore, Store};
use gitlab_deps::util::{Clock, ManualClock, SystemClock};
use gitlab_sim::{FaultRule, Outcome, ProjectSpec, Sim, SimOptions};

const CI: &str = "build:\n  script: [make]\n";
/// Far above every deadline below: nothing here may wait for the reconciler's upper bound.
const RECONCILE_AFTER: &str = "1h";

/// base -> mid -> leaf, pipelines finished by the test.
fn chain(sim: &Sim) {
    let reg = sim.registry_host();
    for (path, dockerfile) in [
        ("images/base", "FROM debian:bookworm\n".to_owned()),
        ("images/mid", format!("FROM {reg}/images/base\n")),
        ("apps/leaf", format!("FROM {reg}/images/mid\n")),
    ] {
        sim.add_project(
            ProjectSpec::new(path)
                .file("Dockerfile", dockerfile)
                .file(".gitlab-ci.yml", CI),
        );
    }
}

fn hand_finished() -> SimOptions {
    SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    }
}

fn finish_all(sim: &Sim, project: &str) {
    for p in sim.pipelines(project) {
        if !p.status.is_finished() {
            sim.finish_pipeline(project, p.id, Outcome::Success);
        }
    }
}

struct Setup {
    server: SimServer,
    work: Workdir,
    service: Service,
}

impl Setup {
    fn sim(&self) -> &Sim {
        &self.server.sim
    }

    fn restart(&mut self, args: &[&str]) {
        let addr = self.service.addr.clone();
        self.service = Service::start(&self.work, &self.server.url, &addr, args);
    }

    /// One counter of `GET /metrics` (summed over labels matching `labels`).
    fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = http_get(&self.service.addr, "/metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A plain HTTP/1.0 GET (the answer's body; empty when the service is not answering).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return String::new();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

fn setup(args: &[&str]) -> Setup {
    let server = SimServer::start(hand_finished());
    chain(&server.sim);
    let (work, service) = common::scan_and_serve(&server, args, None);
    Setup {
        server,
        work,
        service,
    }
}

#[test]
fn a_pipeline_created_just_before_a_crash_and_finished_meanwhile_is_applied_on_restart() {
    let args = ["--reconcile-after", RECONCILE_AFTER];
    let mut s = setup(&args);
    // mid's creation takes effect, but its answer never reaches the service before it dies.
    s.sim().faults().add(FaultRule::stall_after(
        "POST",
        "/pipeline",
        1,
        Duration::from_secs(120),
    ));
    let base = s.sim().run_pipeline("images/base", "push");
    s.sim()
        .finish_pipeline("images/base", base, Outcome::Success);
    wait_until(30, "mid's pipeline created", || {
        ours(s.sim(), "images/mid").len() == 1
    });
    s.service.kill();
    finish_all(s.sim(), "images/mid");
    s.restart(&args);
    // Adopted by its attempt id and applied at once: leaf starts within seconds, not an hour.
    wait_until(20, "leaf started after the restart", || {
        ours(s.sim(), "apps/leaf").len() == 1
    });
    finish_all(s.sim(), "apps/leaf");
    wait_until(20, "leaf's success applied", || {
        s.metric("gitlab_deps_projects", "state=\"running\"") == 0.0
    });
    assert_eq!(ours(s.sim(), "images/mid").len(), 1, "mid created once");
    assert_eq!(ours(s.sim(), "apps/leaf").len(), 1, "leaf created once");
}

#[test]
fn a_root_change_delivered_while_the_service_was_down_runs_the_chain_once() {
    let mut s = setup(&["--reconcile-after", RECONCILE_AFTER]);
    s.service.kill();
    let base = s.sim().run_pipeline("images/base", "push");
    s.sim()
        .finish_pipeline("images/base", base, Outcome::Success);
    // Scheduled rounds every second ask base and mid again and again: finds must not rebuild.
    s.restart(&[
        "--reconcile-after",
        RECONCILE_AFTER,
        "--catch-up-interval",
        "1s",
    ]);
    wait_until(20, "mid started by catch-up", || {
        ours(s.sim(), "images/mid").len() == 1
    });
    finish_all(s.sim(), "images/mid");
    wait_until(20, "leaf started", || ours(s.sim(), "apps/leaf").len() == 1);
    finish_all(s.sim(), "apps/leaf");
    // mid's success arrived by webhook and is found by catch-up too; let a few rounds see it.
    let rounds = s.metric("gitlab_deps_recovery_polls_total", "catch_up_scheduled");
    wait_until(30, "three more catch-up rounds", || {
        s.metric("gitlab_deps_recovery_polls_total", "catch_up_scheduled") >= rounds + 6.0
    });
    wait_until(20, "nothing running", || {
        s.metric("gitlab_deps_projects", "state=\"running\"") == 0.0
            && s.metric("gitlab_deps_projects", "state=\"stale\"") == 0.0
    });
    assert_eq!(ours(s.sim(), "images/mid").len(), 1, "mid built once");
    assert_eq!(ours(s.sim(), "apps/leaf").len(), 1, "leaf built once");
    // base's success came through catch-up (mid's too, if a round found it before its webhook
    // was applied: logged twice, applied once, which the counts above show), unless GitLab's
    // retry of its webhook reached the restarted service first: after a kill -9 the restarted
    // `serve` waits as standby for the dead one's lease to expire, and GitLab retries meanwhile.
    let base_retried = s.sim().deliveries().iter().any(|d| {
        d.project == "images/base"
            && d.pipeline_id == Some(base)
            && d.pipeline_status.as_deref() == Some("success")
            && d.status.is_some_and(|code| (200..300).contains(&code))
    });
    assert!(
        base_retried || s.metric("gitlab_deps_caught_up_pipelines_total", "") >= 1.0,
        "base's success reached the restarted service somehow"
    );
}

// ---------------------------------------------------------------------------------------------
// In-process, on a hand-moved clock.

struct Engined {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    _service: InProcess,
}

/// The scanned chain and an engine over it that nothing runs but the test. No webhook is
/// installed: every delivery is lost.
async fn in_process(sim: &Sim, url: &str) -> Engined {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let mut config = ServiceConfig::new(
        GitLabOptions::new(format!("{url}/").parse().unwrap(), sim.token().into()),
        ScanSettings::from_file(&Default::default()).unwrap(),
    );
    config.engine.rescan_every = None;
    config.engine.reconcile_after = Duration::from_secs(3600);
    let clock = Arc::new(ManualClock::at(SystemClock.now_ms()));
    let service = InProcess::with_clock(config, Arc::clone(&store), clock.clone())
        .await
        .unwrap();
    service
        .scanner()
        .scan(&ScanRequest::default(), &NoProgress)
        .await
        .unwrap();
    service.engine().reload().await.unwrap();
    Engined {
        engine: Arc::clone(service.engine()),
        store,
        clock,
        _service: service,
    }
}

/// Runs the engine loop by hand until `cond` holds (creations run as spawned tasks).
async fn process_until(engine: &Arc<Engine>, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        engine.process().await.unwrap();
        if cond() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(engine: &Engine, line_start: &str) -> f64 {
    engine
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_webhook_of_our_running_pipeline_is_caught_by_the_overdue_poll() {
    let sim = Sim::new(hand_finished());
    let url = sim.start().await.unwrap();
    chain(&sim);
    let e = in_process(&sim, &url).await;
    let rebuild = Input::Rebuild {
        project: "images/mid".into(),
    };
    enqueue_operator_input(e.store.as_ref(), &rebuild)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        e.engine.process().await.unwrap();
        let snapshot = e.engine.snapshot().await;
        let recorded = snapshot
            .cascade
            .state("images/mid")
            .and_then(|s| s.running.as_ref()?.pipeline_id);
        if recorded.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mid's pipeline recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    finish_all(&sim, "images/mid");
    // Not overdue yet: no request.
    e.engine.reconcile(false).await;
    assert_eq!(
        metric(&e.engine, "gitlab_deps_recovery_requests_total"),
        0.0
    );
    // Past the default estimate (5 min) plus its margin, far below reconcile_after (1 h).
    e.clock.advance(Duration::from_secs(6 * 60 + 20));
    e.engine.reconcile(false).await;
    assert_eq!(
        metric(
            &e.engine,
            "gitlab_deps_recovery_polls_total{reason=\"overdue\"}"
        ),
        1.0
    );
    process_until(&e.engine, "leaf started", || {
        ours(&sim, "apps/leaf").len() == 1
    })
    .await;
    // Polled once more only after a back-off: a second tick at once asks nothing.
    e.engine.reconcile(false).await;
    assert_eq!(
        metric(&e.engine, "gitlab_deps_recovery_requests_total"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_before_the_first_start_do_not_count() {
    let sim = Sim::new(hand_finished());
    let url = sim.start().await.unwrap();
    chain(&sim);
    let before = sim.run_pipeline("images/base", "push");
    sim.finish_pipeline("images/base", before, Outcome::Success);
    let e = in_process(&sim, &url).await;
    let report = e.engine.catch_up(CatchUpReason::Startup).await;
    assert_eq!((report.asked, report.found), (2, 0), "{report:?}");
    // A success after the first start is found, once.
    e.clock.advance(Duration::from_secs(1));
    let after = sim.run_pipeline("images/base", "push");
    sim.finish_pipeline("images/base", after, Outcome::Success);
    e.clock.advance(Duration::from_secs(120));
    let report = e.engine.catch_up(CatchUpReason::IntakeFailure).await;
    assert_eq!(report.found, 1, "{report:?}");
    e.clock.advance(Duration::from_secs(120));
    let report = e.engine.catch_up(CatchUpReason::IntakeFailure).await;
    assert_eq!((report.asked, report.found), (2, 0), "{report:?}");
    process_until(&e.engine, "mid started", || {
        ours(&sim, "images/mid").len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_asks_each_project_at_most_once_per_interval() {
    let sim = Sim::new(hand_finished());
    let url = sim.start().await.unwrap();
    chain(&sim);
    let e = in_process(&sim, &url).await;
    let first = e.engine.catch_up(CatchUpReason::Scheduled).await;
    assert_eq!(first.asked, 2, "base and mid have dependents, leaf not");
    e.clock.advance(Duration::from_secs(4 * 60));
    let again = e.engine.catch_up(CatchUpReason::Scheduled).await;
    assert_eq!((again.due, again.asked), (0, 0), "the interval is 5 min");
    e.clock.advance(Duration::from_secs(60));
    let later = e.engine.catch_up(CatchUpReason::Scheduled).await;
    assert_eq!(later.asked, 2);
}
