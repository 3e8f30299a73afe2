//! Recovery: how long the chain stands still after a crash or a lost webhook, and what catch-up
//! costs GitLab on a large instance.
//!
//! * Restart scenarios (real time, default settings, the real service over HTTP in a runtime of its
//!   own that is dropped to simulate `kill -9`): base -> mid -> leaf on gitlab-sim.
//!   - `adopt`: killed right after mid's creation reached GitLab (its answer held back), mid
//!     finishes while the service is down; measured: restart -> leaf's pipeline created.
//!   - `lost_root`: base succeeds while the service is down; measured: restart -> mid created.
//!   - `lost_webhook`: no restart; mid's webhooks are dropped after it built once with them (so its
//!     duration is known); measured: mid finished -> leaf created.
//!
//!   The baseline is what the previous version needed: nothing but the reconciler looked,
//!   `reconcile_after` (10 min) after the pipeline started.
//! * Catch-up cost (hand-moved clock, no waiting): `projects` projects of which `with_dependents`
//!   have dependents; a start-up round, then `rounds` scheduled rounds one interval apart. Counted:
//!   pipeline-list requests gitlab-sim answered per round, the average rate, and how long until
//!   every project with dependents was asked once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args as ClapArgs;
use gitlab_deps::config::{ScanFileConfig, ScanSettings};
use gitlab_deps::gitlab::GitLabOptions;
use gitlab_deps::orchestrate::CatchUpReason;
use gitlab_deps::scan::{NoProgress, ScanRequest};
use gitlab_deps::service::{Service, ServiceConfig, defaults};
use gitlab_deps::store::{SqliteStore, Store};
use gitlab_deps::util::{Clock, ManualClock, SystemClock};
use gitlab_sim::{FaultRule, Outcome, ProjectSpec, Sim, SimOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{TempDir, ms};

const SECRET: &str = "bench-secret";
const CI: &str = "build:\n  script: [make]\n";

/// `bench recovery` arguments.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Projects on the catch-up instance.
    #[arg(long, default_value_t = 10_000)]
    pub projects: usize,
    /// How many of them have dependents.
    #[arg(long, default_value_t = 3_000)]
    pub with_dependents: usize,
    /// Scheduled catch-up rounds after the start-up round.
    #[arg(long, default_value_t = 12)]
    pub rounds: usize,
    /// Skip the real-time restart scenarios (about two minutes).
    #[arg(long)]
    pub skip_restart: bool,
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if !args.skip_restart {
        for scenario in [Scenario::Adopt, Scenario::LostRoot, Scenario::LostWebhook] {
            let took = runtime.block_on(restart_scenario(scenario))?;
            let baseline = defaults::RECONCILE_AFTER;
            println!(
                "{}",
                json!({
                    "bench": "recovery",
                    "scenario": scenario.name(),
                    "recovery_ms": ms(took).round(),
                    "baseline_ms": ms(baseline).round(),
                    "ratio_to_baseline": (took.as_secs_f64() / baseline.as_secs_f64() * 1e6).round() / 1e6,
                    "goal_ms": 60_000,
                })
            );
        }
    }
    runtime.block_on(catch_up_cost(&args))
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Adopt,
    LostRoot,
    LostWebhook,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Adopt => "adopt",
            Scenario::LostRoot => "lost_root",
            Scenario::LostWebhook => "lost_webhook",
        }
    }
}

/// A service in a runtime of its own: dropping it is a `kill -9` (no task survives).
struct Running {
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts the service on `db`, listening on `addr`; scans first when `scan`. Returns once it
    /// serves, with the address it listens on.
    fn start(
        db: &std::path::Path,
        gitlab: &str,
        addr: &str,
        scan: bool,
    ) -> anyhow::Result<(Self, String)> {
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let (ready, listening) = std::sync::mpsc::channel::<anyhow::Result<String>>();
        let (db, gitlab, addr) = (db.to_owned(), gitlab.to_owned(), addr.to_owned());
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            else {
                let _ = ready.send(Err(anyhow::anyhow!("no runtime")));
                return;
            };
            let shutdown = CancellationToken::new();
            let started = rt.block_on(async {
                let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);
                let mut config = ServiceConfig::new(
                    GitLabOptions::new(Url::parse(&format!("{gitlab}/"))?, "sim-token".into()),
                    ScanSettings::from_file(&ScanFileConfig::default())?,
                );
                config.engine.rescan_every = None;
                config.http.webhook_secret = Some(SECRET.into());
                let service = Service::new(config, store).await?;
                if scan {
                    service
                        .scanner()
                        .scan(&ScanRequest::default(), &NoProgress)
                        .await?;
                    service.engine().reload().await?;
                }
                let listener = tokio::net::TcpListener::bind(&addr).await?;
                let local = listener.local_addr()?.to_string();
                let token = shutdown.clone();
                let task = tokio::spawn(async move { service.serve(listener, token).await });
                anyhow::Ok((local, task))
            });
            match started {
                Ok((local, _task)) => {
                    let _ = ready.send(Ok(local));
                    let _ = killed.recv();
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
            // Every task of the service dies with its runtime, mid-request or not.
            rt.shutdown_background();
        });
        let local = listening.recv().context("the service thread died")??;
        Ok((
            Self {
                kill: Some(kill),
                thread: Some(thread),
            },
            local,
        ))
    }

    fn kill(&mut self) {
        self.kill.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn created(sim: &Sim, project: &str) -> usize {
    sim.pipelines(project)
        .into_iter()
        .filter(|p| p.source == "api")
        .count()
}

fn finish_all(sim: &Sim, project: &str) {
    for p in sim.pipelines(project) {
        if !p.status.is_finished() {
            sim.finish_pipeline(project, p.id, Outcome::Success);
        }
    }
}

async fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs one scenario; returns the time the chain stood still.
async fn restart_scenario(scenario: Scenario) -> anyhow::Result<Duration> {
    let sim = Sim::new(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    });
    let url = sim.start().await?;
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
    let dir = TempDir::new()?;
    let db = dir.0.join("deps.db");
    let (mut first, addr) = Running::start(&db, &url, "127.0.0.1:0", true)?;
    for project in ["images/base", "images/mid", "apps/leaf"] {
        sim.add_hook(project, &format!("http://{addr}/hooks/gitlab"), SECRET);
    }
    let limit = Duration::from_secs(15 * 60);
    let run_base = || {
        let id = sim.run_pipeline("images/base", "push");
        sim.finish_pipeline("images/base", id, Outcome::Success);
    };
    match scenario {
        Scenario::Adopt => {
            sim.faults().add(FaultRule::stall_after(
                "POST",
                "/pipeline",
                1,
                Duration::from_secs(3600),
            ));
            run_base();
            wait("mid created", limit, || created(&sim, "images/mid") == 1).await?;
            first.kill();
            finish_all(&sim, "images/mid");
            let (_second, _) = Running::start(&db, &url, &addr, false)?;
            let t0 = Instant::now();
            wait("leaf created", limit, || created(&sim, "apps/leaf") == 1).await?;
            Ok(t0.elapsed())
        }
        Scenario::LostRoot => {
            first.kill();
            run_base();
            let (_second, _) = Running::start(&db, &url, &addr, false)?;
            let t0 = Instant::now();
            wait("mid created", limit, || created(&sim, "images/mid") == 1).await?;
            Ok(t0.elapsed())
        }
        Scenario::LostWebhook => {
            // One build with webhooks, so mid's duration is known.
            run_base();
            wait("mid created", limit, || created(&sim, "images/mid") == 1).await?;
            finish_all(&sim, "images/mid");
            wait("leaf created", limit, || created(&sim, "apps/leaf") == 1).await?;
            finish_all(&sim, "apps/leaf");
            run_base();
            wait("mid created again", limit, || {
                created(&sim, "images/mid") == 2
            })
            .await?;
            sim.faults().drop_webhooks(1_000);
            finish_all(&sim, "images/mid");
            let t0 = Instant::now();
            wait("leaf created again", limit, || {
                created(&sim, "apps/leaf") == 2
            })
            .await?;
            Ok(t0.elapsed())
        }
    }
}

/// Catch-up requests on a large instance, on a hand-moved clock.
async fn catch_up_cost(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.with_dependents > 0 && args.projects > args.with_dependents,
        "--projects must exceed --with-dependents > 0"
    );
    let sim = Sim::new(SimOptions::default());
    let url = sim.start().await?;
    let reg = sim.registry_host();
    for i in 0..args.projects {
        let dockerfile = if i < args.with_dependents {
            "FROM alpine\n".to_owned()
        } else {
            format!("FROM {reg}/base/b{:05}\n", i % args.with_dependents)
        };
        let path = if i < args.with_dependents {
            format!("base/b{i:05}")
        } else {
            format!("apps/a{i:05}")
        };
        sim.add_project(ProjectSpec::new(&path).file("Dockerfile", dockerfile));
    }
    let dir = TempDir::new()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.0.join("deps.db"))?);
    let config = {
        let mut c = ServiceConfig::new(
            GitLabOptions::new(Url::parse(&format!("{url}/"))?, sim.token().into()),
            ScanSettings::from_file(&ScanFileConfig::default())?,
        );
        c.engine.rescan_every = None;
        c
    };
    let interval = config
        .engine
        .recovery
        .catch_up_interval
        .unwrap_or(defaults::CATCH_UP_INTERVAL);
    let per_minute = config.engine.recovery.requests_per_minute;
    let clock = Arc::new(ManualClock::at(SystemClock.now_ms()));
    let service = Service::with_clock(config, store, clock.clone()).await?;
    let scanned = Instant::now();
    service
        .scanner()
        .scan(&ScanRequest::default(), &NoProgress)
        .await?;
    service.engine().reload().await?;
    let scan_ms = ms(scanned.elapsed());
    let engine = service.engine();
    let lists = |sim: &Sim| {
        sim.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/pipelines"))
            .count()
    };
    sim.reset_request_log();
    let mut per_round = Vec::new();
    let mut asked_total = 0;
    let mut covered_after = None;
    for round in 0..=args.rounds {
        let reason = if round == 0 {
            CatchUpReason::Startup
        } else {
            clock.advance(interval);
            CatchUpReason::Scheduled
        };
        let before = lists(&sim);
        let report = engine.catch_up(reason).await;
        let requests = lists(&sim) - before;
        asked_total += report.asked;
        if covered_after.is_none() && asked_total >= args.with_dependents {
            covered_after = Some(round);
        }
        per_round.push(json!({
            "round": round,
            "requests": requests,
            "asked": report.asked,
            "deferred": report.deferred,
            "found": report.found,
        }));
    }
    let scheduled: usize = per_round
        .iter()
        .skip(1)
        .filter_map(|r| r["requests"].as_u64())
        .sum::<u64>() as usize;
    let span = interval.as_secs_f64() * args.rounds.max(1) as f64;
    let naive_rate = args.with_dependents as f64 / interval.as_secs_f64();
    let rate = scheduled as f64 / span;
    println!(
        "{}",
        json!({
            "bench": "recovery-catch-up",
            "projects": args.projects,
            "with_dependents": args.with_dependents,
            "interval_s": interval.as_secs(),
            "budget_per_minute": per_minute,
            "scan_ms": scan_ms.round(),
            "requests_per_interval": scheduled as f64 / args.rounds.max(1) as f64,
            "requests_per_s": (rate * 1000.0).round() / 1000.0,
            "naive_requests_per_s": (naive_rate * 1000.0).round() / 1000.0,
            "ratio_to_naive": (rate / naive_rate * 1000.0).round() / 1000.0,
            "full_coverage_min": covered_after.map(|r| r as f64 * interval.as_secs_f64() / 60.0),
            "rounds": per_round,
        })
    );
    Ok(())
}
