//! High availability on PostgreSQL: two replicas of the real service, each in a runtime of its own
//! (dropping that runtime is the `kill -9`: its tasks stop mid-step and its connections close),
//! behind gitlab-sim's round-robin load balancer.
//!
//! * `bench failover`: the leader is killed, then a pipeline its successor must react to
//!   succeeds; measured: kill -> the successor's creation of the downstream pipeline (by its own
//!   GitLab token). Baseline: the lease ttl, the bound the design allows for the takeover alone.
//!   A reaction without failover, measured in the same run, shows what is not failover.
//! * `bench intake-ha`: webhook deliveries through the load balancer to two replicas on
//!   PostgreSQL, at a steady rate and as fast as the clients can send. Baselines in the same run:
//!   `GET /healthz` through the same balancer under the same load, one replica on PostgreSQL
//!   with and without the balancer, and one replica on SQLite without it (what `bench intake`
//!   measures).
//!
//! The cluster comes from `GITLAB_DEPS_TEST_POSTGRES` (a superuser URL) or is started with
//! `scripts/test-postgres` for the benchmark's life.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args as ClapArgs;
use futures::StreamExt as _;
use gitlab_deps::config::{ScanFileConfig, ScanSettings};
use gitlab_deps::gitlab::GitLabOptions;
use gitlab_deps::orchestrate::{Leadership, LeaseOptions};
use gitlab_deps::scan::{NoProgress, ScanRequest};
use gitlab_deps::server;
use gitlab_deps::service::{Service, ServiceConfig};
use gitlab_deps::store::{PostgresStore, SqliteStore, Store};
use gitlab_sim::{LoadBalancer, Outcome, ProjectSpec, Sim, SimOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{TempDir, ms};

pub(crate) const SECRET: &str = "bench-secret";
const CI: &str = "build:\n  script: [make]\n";

/// `bench failover` arguments.
#[derive(Debug, ClapArgs)]
pub struct FailoverArgs {
    /// Leader kills measured.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// The lease ttl in milliseconds, as `serve --lease-ttl` (default: the service's default).
    #[arg(long)]
    pub lease_ttl_ms: Option<u64>,
}

/// `bench intake-ha` arguments.
#[derive(Debug, ClapArgs)]
pub struct IntakeArgs {
    /// Events sent per run.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Concurrent connections of the saturation run.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Steady load, events per second.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

/// The PostgreSQL server the benchmarks make their databases on; a started one stops when this
/// is dropped (the script's stdin closes).
pub(crate) struct Cluster {
    admin: String,
    _script: Option<Child>,
}

impl Cluster {
    /// For `--db`: `sqlite` (none), `postgres` ([`Cluster::get`]) or a server URL whose user may
    /// create databases.
    pub(crate) fn for_db(db: &str) -> anyhow::Result<Option<Self>> {
        match db {
            "sqlite" => Ok(None),
            "postgres" => Self::get().map(Some),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Some(Self {
                    admin: url.to_owned(),
                    _script: None,
                }))
            }
            other => anyhow::bail!("--db {other}: want sqlite, postgres or a postgres:// URL"),
        }
    }

    /// `GITLAB_DEPS_TEST_POSTGRES`, else a cluster of `scripts/test-postgres`.
    fn get() -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("GITLAB_DEPS_TEST_POSTGRES")
            && !url.trim().is_empty()
        {
            return Ok(Self {
                admin: url.trim().to_owned(),
                _script: None,
            });
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/test-postgres");
        let mut child = Command::new(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {script}; or set GITLAB_DEPS_TEST_POSTGRES"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        anyhow::ensure!(
            line.starts_with("postgres"),
            "scripts/test-postgres did not start a cluster (its stderr says why)"
        );
        Ok(Self {
            admin: line.trim().to_owned(),
            _script: Some(child),
        })
    }

    /// A new, empty database; its URL.
    pub(crate) async fn database(&self) -> anyhow::Result<String> {
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&self.admin, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot connect to {}", self.admin))?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        let mut url = Url::parse(&self.admin)?;
        url.set_path(&format!("/{name}"));
        Ok(url.to_string())
    }
}

/// A store on the PostgreSQL database at `url`.
pub(crate) async fn postgres_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(
        PostgresStore::connect(&url.to_owned().into(), None).await?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Replicas.

/// A replica's database.
#[derive(Clone)]
enum Db {
    /// A PostgreSQL URL.
    Postgres(String),
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
}

/// Where a replica keeps its data and how it reaches GitLab.
#[derive(Clone)]
struct ReplicaSpec {
    name: String,
    gitlab: String,
    token: String,
    db: Db,
    lease: LeaseOptions,
}

/// One `serve` in a runtime of its own.
struct Replica {
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    leadership: Arc<Leadership>,
    _dir: TempDir,
}

impl Replica {
    fn start(spec: &ReplicaSpec) -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("replica-{}", spec.name))
            .enable_all()
            .build()?;
        let (url, leadership) = runtime.block_on(async {
            let (store, importer): (Arc<dyn Store>, Arc<dyn Store>) = match &spec.db {
                Db::Postgres(db) => (postgres_store(db).await?, postgres_store(db).await?),
                Db::Sqlite(db) => (
                    Arc::new(SqliteStore::open(db)?),
                    Arc::new(SqliteStore::open(db)?),
                ),
            };
            let mut config = ServiceConfig::new(
                GitLabOptions::new(
                    Url::parse(&format!("{}/", spec.gitlab))?,
                    spec.token.clone().into(),
                ),
                ScanSettings::from_file(&ScanFileConfig::default())?,
            );
            config.engine.rescan_every = None;
            config.http.webhook_secret = Some(SECRET.into());
            config.http.spool = Some(dir.0.join("deliveries.spool"));
            config.lease = spec.lease;
            config.replica_name = Some(spec.name.clone());
            let service = Service::new(config, store)
                .await?
                .with_spool_importer(importer);
            let leadership = Arc::clone(service.leadership());
            let (listener, addr) = server::bind("127.0.0.1:0").await?;
            tokio::spawn(service.serve(listener, CancellationToken::new()));
            anyhow::Ok((format!("http://{addr}"), leadership))
        })?;
        Ok(Self {
            runtime: Some(runtime),
            url,
            leadership,
            _dir: dir,
        })
    }

    fn is_leader(&self) -> bool {
        self.runtime.is_some() && self.leadership.current().is_some()
    }

    /// As `kill -9`: every task stops where it is, sockets close, nothing is released.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every millisecond until it holds or `secs` pass.
fn wait(secs: u64, what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Scans the simulated instance into the database at `db` (PostgreSQL URL or SQLite file).
async fn scan(sim_url: &str, token: &str, store: Arc<dyn Store>) -> anyhow::Result<()> {
    let config = ServiceConfig::new(
        GitLabOptions::new(Url::parse(&format!("{sim_url}/"))?, token.to_owned().into()),
        ScanSettings::from_file(&ScanFileConfig::default())?,
    );
    let service = Service::new(config, store).await?;
    service
        .scanner()
        .scan(&ScanRequest::default(), &NoProgress)
        .await?;
    Ok(())
}

/// The harness: gitlab-sim and the balancer on a runtime of their own.
struct Harness {
    runtime: tokio::runtime::Runtime,
    sim: Sim,
    url: String,
}

impl Harness {
    fn new(opts: SimOptions) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let sim = Sim::new(opts);
        let url = runtime.block_on(sim.start())?;
        Ok(Self { runtime, sim, url })
    }
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// bench failover

/// Runs `bench failover`.
pub fn failover(args: FailoverArgs) -> anyhow::Result<()> {
    let lease = match args.lease_ttl_ms {
        Some(ms) => LeaseOptions::with_ttl(Duration::from_millis(ms)),
        None => LeaseOptions::default(),
    };
    let runs = args.runs.max(1);
    let cluster = Cluster::get()?;
    // Pipelines finish when the benchmark says so: the trigger comes while the leader is dead.
    let h = Harness::new(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    })?;
    let reg = h.sim.registry_host();
    // One pair per measurement (run 0: the reaction without failover).
    for k in 0..=runs {
        h.sim.add_project(
            ProjectSpec::new(format!("up/p{k:02}"))
                .file("Dockerfile", "FROM debian:bookworm\n")
                .file(".gitlab-ci.yml", CI),
        );
        h.sim.add_project(
            ProjectSpec::new(format!("down/p{k:02}"))
                .file("Dockerfile", format!("FROM {reg}/up/p{k:02}\n"))
                .file(".gitlab-ci.yml", CI),
        );
    }
    let db = h.runtime.block_on(cluster.database())?;
    h.runtime
        .block_on(async { scan(&h.url, &h.sim.token(), postgres_store(&db).await?).await })?;
    let specs: Vec<ReplicaSpec> = (0..2)
        .map(|i| {
            let token = format!("token-{i}");
            h.sim.accept_token(&token);
            ReplicaSpec {
                name: format!("r{i}"),
                gitlab: h.url.clone(),
                token,
                db: Db::Postgres(db.clone()),
                lease,
            }
        })
        .collect();
    let mut replicas = vec![Replica::start(&specs[0])?];
    wait(30, "the first replica to lead", || replicas[0].is_leader())?;
    replicas.push(Replica::start(&specs[1])?);
    let lb = h.runtime.block_on(LoadBalancer::start(
        replicas.iter().map(|r| r.url.clone()).collect(),
    ))?;
    for k in 0..=runs {
        for side in ["up", "down"] {
            h.sim.add_hook(
                &format!("{side}/p{k:02}"),
                &format!("{}/hooks/gitlab", lb.url()),
                SECRET,
            );
        }
    }
    let created = |k: usize| {
        h.sim
            .pipelines(&format!("down/p{k:02}"))
            .into_iter()
            .find(|p| p.source == "api")
    };
    let mut takeovers = Vec::new();
    let mut failovers = Vec::new();
    let mut reaction = Duration::ZERO;
    for k in 0..=runs {
        let leader = (0..2)
            .find(|i| replicas[*i].is_leader())
            .context("no leader")?;
        let up = format!("up/p{k:02}");
        let pipeline = h.sim.run_pipeline(&up, "push");
        // Its `running` event is applied before the kill, so only the success is left; then
        // the kill falls at a different point of the renewal cycle each run (golden-ratio
        // steps), since the time to take over depends on how long ago the lease was renewed.
        let phase = ((k as f64) * 0.618_034).fract();
        std::thread::sleep(Duration::from_millis(100) + lease.renew_every.mul_f64(phase));
        let killed = Instant::now();
        if k > 0 {
            replicas[leader].kill();
        }
        h.sim.finish_pipeline(&up, pipeline, Outcome::Success);
        let mut took_over = None;
        wait(60, &format!("down/p{k:02} created"), || {
            if took_over.is_none() && replicas[1 - leader].is_leader() {
                took_over = Some(killed.elapsed());
            }
            created(k).is_some()
        })?;
        let pipeline = created(k).context("created")?;
        let took = pipeline.created_instant - killed;
        if k == 0 {
            reaction = took;
            continue;
        }
        anyhow::ensure!(
            pipeline.token.as_deref() == Some(specs[1 - leader].token.as_str()),
            "run {k}: created by {:?}, not by the new leader",
            pipeline.token
        );
        failovers.push(took);
        takeovers.push(took_over.unwrap_or(took));
        eprintln!(
            "run {k}: kill -> new leader {:.0} ms, -> downstream created {:.0} ms",
            ms(took_over.unwrap_or(took)),
            ms(took)
        );
        let restarted = Replica::start(&specs[leader])?;
        lb.set_backend(leader, &restarted.url);
        replicas[leader] = restarted;
    }
    failovers.sort();
    takeovers.sort();
    let ttl = lease.ttl;
    println!(
        "failover: {runs} kills of the leader, two replicas on PostgreSQL, lease ttl {:.0} ms (renewed every {:.0} ms, standbys ask every {:.0} ms)",
        ms(ttl),
        ms(lease.renew_every),
        ms(lease.retry_every)
    );
    println!(
        "  kill -> first creation by the new leader  p50 {:.0} ms, max {:.0} ms; goal < 5000 ms",
        ms(pct(&failovers, 0.5)),
        ms(failovers.last().copied().unwrap_or_default())
    );
    println!(
        "  kill -> new leader                        p50 {:.0} ms, max {:.0} ms",
        ms(pct(&takeovers, 0.5)),
        ms(takeovers.last().copied().unwrap_or_default())
    );
    println!(
        "  baseline: lease ttl                       {:.0} ms  (p50 / ttl {:.2}, max / ttl {:.2})",
        ms(ttl),
        ms(pct(&failovers, 0.5)) / ms(ttl),
        ms(failovers.last().copied().unwrap_or_default()) / ms(ttl)
    );
    println!(
        "  reaction without failover                 {:.0} ms",
        ms(reaction)
    );
    println!(
        "{}",
        json!({
            "bench": "failover", "runs": runs, "lease_ttl_ms": ms(ttl),
            "failover_p50_ms": ms(pct(&failovers, 0.5)).round(),
            "failover_max_ms": ms(failovers.last().copied().unwrap_or_default()).round(),
            "takeover_p50_ms": ms(pct(&takeovers, 0.5)).round(),
            "takeover_max_ms": ms(takeovers.last().copied().unwrap_or_default()).round(),
            "p50_over_ttl": ms(pct(&failovers, 0.5)) / ms(ttl),
            "max_over_ttl": ms(failovers.last().copied().unwrap_or_default()) / ms(ttl),
            "reaction_without_failover_ms": ms(reaction).round(),
            "goal_ms": 5000,
        })
    );
    drop(replicas);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bench intake-ha

/// What one load run measured.
pub(crate) struct Load {
    /// Requests per second over the run.
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Sends `requests` events (or `GET /healthz`) to `base`: at `pace` per second (open loop), or
/// as fast as `clients` connections can when `pace` is 0. Every request must succeed. Shared by
/// `bench intake` and `bench intake-ha`.
pub(crate) async fn load(
    client: &reqwest::Client,
    base: &str,
    label: &str,
    healthz: bool,
    requests: usize,
    clients: usize,
    pace: u64,
) -> anyhow::Result<Load> {
    let started = Instant::now();
    let slots = if pace > 0 { clients.max(256) } else { clients };
    let mut latencies: Vec<Option<Duration>> = futures::stream::iter(0..requests)
        .map(|i| {
            let client = client.clone();
            let label = label.to_owned();
            async move {
                if pace > 0 {
                    let at = started + Duration::from_secs_f64(i as f64 / pace as f64);
                    tokio::time::sleep_until(at.into()).await;
                }
                let t = Instant::now();
                let response = if healthz {
                    client.get(format!("{base}/healthz")).send().await
                } else {
                    client
                        .post(format!("{base}/hooks/gitlab"))
                        .header("X-Gitlab-Event", "Pipeline Hook")
                        .header("X-Gitlab-Token", SECRET)
                        .header("Idempotency-Key", format!("{label}-{i}"))
                        .header("Content-Type", "application/json")
                        .body(crate::intake_event(i))
                        .send()
                        .await
                };
                response
                    .is_ok_and(|r| r.status().is_success())
                    .then(|| t.elapsed())
            }
        })
        .buffer_unordered(slots)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failed = latencies.iter().filter(|l| l.is_none()).count();
    anyhow::ensure!(
        failed == 0,
        "{label}: {failed} of {requests} requests failed"
    );
    let mut l: Vec<Duration> = latencies.drain(..).flatten().collect();
    l.sort();
    Ok(Load {
        rate: requests as f64 / elapsed.as_secs_f64(),
        p50: pct(&l, 0.5),
        p99: pct(&l, 0.99),
    })
}

/// Runs `bench intake-ha`.
pub fn intake(args: IntakeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.requests > 0 && args.clients > 0,
        "--requests and --clients must be positive"
    );
    let cluster = Cluster::get()?;
    let h = Harness::new(SimOptions::default())?;
    h.sim
        .add_project(ProjectSpec::new("g/base").file("Dockerfile", "FROM debian\n"));
    let db = h.runtime.block_on(cluster.database())?;
    let sqlite_dir = TempDir::new()?;
    let sqlite_db = sqlite_dir.0.join("deps.db");
    h.runtime.block_on(async {
        scan(&h.url, &h.sim.token(), postgres_store(&db).await?).await?;
        scan(
            &h.url,
            &h.sim.token(),
            Arc::new(SqliteStore::open(&sqlite_db)?),
        )
        .await
    })?;
    let spec = |i: usize, db: Db| ReplicaSpec {
        name: format!("r{i}"),
        gitlab: h.url.clone(),
        token: h.sim.token(),
        db,
        lease: LeaseOptions::default(),
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients.max(256))
        .build()?;
    let (n, c, rate) = (args.requests, args.clients, args.rate);

    // Two replicas on PostgreSQL behind the balancer.
    let replicas = [
        Replica::start(&spec(0, Db::Postgres(db.clone())))?,
        Replica::start(&spec(1, Db::Postgres(db.clone())))?,
    ];
    wait(30, "a leader", || replicas.iter().any(Replica::is_leader))?;
    let lb = h.runtime.block_on(LoadBalancer::start(
        replicas.iter().map(|r| r.url.clone()).collect(),
    ))?;
    let (healthz, steady, max) = h.runtime.block_on(async {
        let healthz = load(&client, lb.url(), "healthz", true, n, c, 0).await?;
        let steady = load(&client, lb.url(), "pg-steady", false, n, c, rate).await?;
        let max = load(&client, lb.url(), "pg-max", false, n, c, 0).await?;
        anyhow::Ok((healthz, steady, max))
    })?;
    let answered = lb.answered();
    drop(lb);
    drop(replicas);

    // One replica on the same PostgreSQL, no balancer: what the balancer and the second writer add.
    let one = Replica::start(&spec(0, Db::Postgres(db.clone())))?;
    wait(30, "the PostgreSQL replica to lead", || one.is_leader())?;
    let lone = h
        .runtime
        .block_on(LoadBalancer::start(vec![one.url.clone()]))?;
    let (pg1_steady, pg1_max, pg1lb_steady, pg1lb_max) = h.runtime.block_on(async {
        let steady = load(&client, &one.url, "pg1-steady", false, n, c, rate).await?;
        let max = load(&client, &one.url, "pg1-max", false, n, c, 0).await?;
        let lb_steady = load(&client, lone.url(), "pg1lb-steady", false, n, c, rate).await?;
        let lb_max = load(&client, lone.url(), "pg1lb-max", false, n, c, 0).await?;
        anyhow::Ok((steady, max, lb_steady, lb_max))
    })?;
    drop(lone);
    drop(one);

    // One replica on SQLite, no balancer: the single-node figure.
    let single = Replica::start(&spec(0, Db::Sqlite(sqlite_db.clone())))?;
    wait(30, "the SQLite replica to lead", || single.is_leader())?;
    let (sq_steady, sq_max) = h.runtime.block_on(async {
        let steady = load(&client, &single.url, "sq-steady", false, n, c, rate).await?;
        let max = load(&client, &single.url, "sq-max", false, n, c, 0).await?;
        anyhow::Ok((steady, max))
    })?;
    drop(single);

    let line = |what: &str, l: &Load| {
        println!(
            "  {what:<44} {:>6.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            l.rate,
            ms(l.p50),
            ms(l.p99)
        );
    };
    println!(
        "webhook intake, two replicas on PostgreSQL behind a round-robin balancer: {n} events per run, {c} clients (saturation)"
    );
    line(&format!("steady {rate}/s, PostgreSQL x2"), &steady);
    line("saturation, PostgreSQL x2", &max);
    line("baseline GET /healthz via the balancer", &healthz);
    line(
        &format!("steady {rate}/s, PostgreSQL x1, direct"),
        &pg1_steady,
    );
    line("saturation, PostgreSQL x1, direct", &pg1_max);
    line(
        &format!("steady {rate}/s, PostgreSQL x1 via balancer"),
        &pg1lb_steady,
    );
    line("saturation, PostgreSQL x1 via balancer", &pg1lb_max);
    line(&format!("steady {rate}/s, SQLite x1, direct"), &sq_steady);
    line("saturation, SQLite x1, direct", &sq_max);
    println!("  deliveries answered per replica {answered:?}");
    println!(
        "  PostgreSQL x2 / healthz throughput {:.2}; goal >= 2000/s sustained, p99 < 20 ms",
        max.rate / healthz.rate
    );
    println!(
        "{}",
        json!({
            "bench": "intake-ha", "requests": n, "clients": c, "steady_rate": rate,
            "pg_steady_per_s": steady.rate, "pg_steady_p50_ms": ms(steady.p50), "pg_steady_p99_ms": ms(steady.p99),
            "pg_max_per_s": max.rate, "pg_max_p50_ms": ms(max.p50), "pg_max_p99_ms": ms(max.p99),
            "healthz_per_s": healthz.rate, "healthz_p99_ms": ms(healthz.p99),
            "pg1_steady_per_s": pg1_steady.rate, "pg1_steady_p99_ms": ms(pg1_steady.p99),
            "pg1_max_per_s": pg1_max.rate, "pg1_max_p99_ms": ms(pg1_max.p99),
            "pg1_lb_steady_p99_ms": ms(pg1lb_steady.p99), "pg1_lb_max_per_s": pg1lb_max.rate,
            "pg1_lb_max_p99_ms": ms(pg1lb_max.p99),
            "sqlite_steady_per_s": sq_steady.rate, "sqlite_steady_p99_ms": ms(sq_steady.p99),
            "sqlite_max_per_s": sq_max.rate, "sqlite_max_p99_ms": ms(sq_max.p99),
            "answered_per_replica": answered,
            "pg_max_over_healthz": max.rate / healthz.rate,
        })
    );
    Ok(())
}
