//! The gitlab-deps benchmarks (see `BENCHMARKS.md`), a binary of their own crate so that neither
//! they nor the simulator they drive are part of the tool's build.
//!
//! * `bench scan`: a full scan, then a re-scan of the unchanged instance, of an in-process
//!   `gitlab-sim` with per-request latency, through the library (`Scanner`, `GitLab`, `SqliteStore`).
//!   The baseline is the ideal bound `requests × latency / concurrency`: what a client that keeps
//!   every request slot busy all the time would need.
//! * `bench plan`: builds a large random layered dependency graph and times `DepGraph::plan`.
//! * `bench push-rescan`: push -> new edges in the engine's graph on 100,000 projects.
//!
//! Each subcommand is meant to run in its own process, so that the peak RSS it reports (`VmHWM`)
//! belongs to that measurement alone. Performance is reported, never asserted.
//!
//! A new benchmark is a module `src/<name>.rs` declared below, a variant of [`Command`] and its arm
//! in `main`; shared helpers (`ms`, `ratio`, `rss`, `SplitMix`, ...) are reached with `super::`.

mod engine_step;
mod ha;
mod hooks;
mod observe_cost;
mod push_rescan;
mod recovery;
mod scan_requests;
mod status_page;
mod store_backends;
mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use gitlab_deps::config::{ScanFileConfig, ScanSettings};
use gitlab_deps::gitlab::{GitLab, GitLabOptions, ProjectScope};
use gitlab_deps::graph::DepGraph;
use gitlab_deps::scan::{NoProgress, ScanRequest, ScanSummary, Scanner, resolve};
use gitlab_deps::server;
use gitlab_deps::service::{Service, ServiceConfig};
use gitlab_deps::store::{SqliteStore, Store};
use gitlab_sim::{ProjectSpec, Sim, SimOptions};
use serde_json::json;
use url::Url;

/// Projects per listing page (the client asks for the maximum GitLab allows).
const PER_PAGE: u64 = 100;

/// Command line of the benchmark binary.
#[derive(Parser)]
#[command(about = "gitlab-deps discovery benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The benchmarks.
#[derive(Subcommand)]
enum Command {
    /// Full scan and unchanged re-scan of a simulated instance.
    Scan {
        /// Projects on the simulated instance.
        #[arg(long, default_value_t = 10_000)]
        projects: usize,
        /// Latency the simulator adds to every API request, in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Requests in flight at once (the client's `concurrency`).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Branch-head requests sent straight through the client first, to measure what the
        /// client and simulator alone achieve (0 skips this).
        #[arg(long, default_value_t = 2_000)]
        floor_requests: usize,
    },
    /// Requests of a tree-based scan: cold, serial per-file baseline, re-scan after commits.
    ScanRequests(scan_requests::Args),
    /// Graph build and `plan()` on a random layered DAG.
    Plan {
        /// Projects in the graph.
        #[arg(long, default_value_t = 100_000)]
        projects: usize,
        /// Timed `plan()` runs (the median is reported).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Seed of the graph generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// One change cascading through a generated graph: the real engine and server, with gitlab-sim
    /// running every pipeline at once (unlimited runners) and delivering webhooks over HTTP.
    Cascade {
        /// Projects in the graph (all downstream of one root).
        #[arg(long, default_value_t = 1_000)]
        projects: usize,
        /// Layers of the graph (the critical path is this many pipelines).
        #[arg(long, default_value_t = 8)]
        layers: usize,
        /// How long each simulated pipeline runs, in milliseconds.
        #[arg(long, default_value_t = 1_000)]
        pipeline_ms: u64,
        /// Seed of the graph generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `sqlite` (a file), or `postgres` / a `postgres://` server URL: a fresh database on
        /// that server (`postgres` alone: `GITLAB_DEPS_TEST_POSTGRES`, else `scripts/test-postgres`).
        #[arg(long, default_value = "sqlite")]
        db: String,
    },
    /// `hooks sync` on a simulated instance: install, then a second run with nothing changed.
    Hooks {
        /// Projects on the simulated instance.
        #[arg(long, default_value_t = 10_000)]
        projects: usize,
        /// Latency the simulator adds to every API request, in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Requests in flight at once (the client's `concurrency`).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// A push changing a Dockerfile, until its new edges are in the engine's graph.
    PushRescan {
        /// Projects in the stored graph.
        #[arg(long, default_value_t = 100_000)]
        projects: usize,
        /// Pushes timed.
        #[arg(long, default_value_t = 50)]
        pushes: usize,
        /// Latency the simulator adds to every API request, in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Seed of the graph generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Webhook intake: events per second and time to acknowledge under concurrent load.
    Intake {
        /// Events to send.
        #[arg(long, default_value_t = 50_000)]
        requests: usize,
        /// Concurrent connections.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Steady load for the latency figures, in events per second (a saturation run as fast as
        /// the clients can send follows).
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
    },
    /// Reading Pipeline Hook bodies of growing size (see `bench/webhooks.rs`).
    Payloads {
        /// Jobs (`builds` entries) per payload, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,50,500")]
        jobs: Vec<usize>,
        /// Timed batches per figure (the median is reported).
        #[arg(long, default_value_t = 21)]
        runs: usize,
    },
    /// Recovery time after a crash or a lost webhook, and catch-up cost (see `recovery.rs`).
    Recovery(recovery::Args),
    /// Store operations on PostgreSQL against SQLite (see `store_backends.rs`).
    StoreBackends(store_backends::Args),
    /// Two replicas on PostgreSQL: kill -9 of the leader -> first pipeline of the new one (see `ha.rs`).
    Failover(ha::FailoverArgs),
    /// Webhook intake through a load balancer to two replicas on PostgreSQL (see `ha.rs`).
    IntakeHa(ha::IntakeArgs),
    /// Status page and JSON API over HTTP on a large graph with a chain in progress.
    StatusPage {
        #[arg(long, default_value_t = 10_000)]
        projects: usize,
        /// Timed requests per URL (after one warm-up).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Engine cost per event with a wave of rebuilds in flight (see `engine_step.rs`).
    EngineStep {
        #[arg(long, default_value_t = 100_000)]
        projects: usize,
        #[arg(long, default_value_t = 10)]
        layers: usize,
        /// Projects kept stale at once (rebuilds are added when fewer are).
        #[arg(long, default_value_t = 1_000)]
        stale: usize,
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 50)]
        max_running: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Cost of the metrics' observation per engine step, by instance size (see `observe_cost.rs`).
    ObserveCost {
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        projects: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        layers: usize,
        #[arg(long, default_value_t = 500)]
        stale: usize,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

fn main() -> anyhow::Result<()> {
    // Retries and warnings of the client go to stderr; the results go to stdout.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Scan {
            projects,
            latency_ms,
            concurrency,
            floor_requests,
        } => {
            anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
            anyhow::ensure!(projects > 0, "--projects must be at least 1");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(bench_scan(
                projects,
                Duration::from_millis(latency_ms),
                concurrency,
                floor_requests,
            ))
        }
        Command::ScanRequests(args) => scan_requests::run(args),
        Command::Plan {
            projects,
            runs,
            seed,
        } => bench_plan(projects, runs.max(1), seed),
        Command::Cascade {
            projects,
            layers,
            pipeline_ms,
            seed,
            db,
        } => {
            anyhow::ensure!(projects >= 2, "--projects must be at least 2");
            let cluster = ha::Cluster::for_db(&db)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(bench_cascade(
                projects,
                layers,
                pipeline_ms,
                seed,
                cluster.as_ref(),
            ))
        }
        Command::Hooks {
            projects,
            latency_ms,
            concurrency,
        } => {
            anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(hooks::bench_hooks(
                projects,
                Duration::from_millis(latency_ms),
                concurrency,
            ))
        }
        Command::PushRescan {
            projects,
            pushes,
            latency_ms,
            seed,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(push_rescan::bench_push_rescan(
                projects, pushes, latency_ms, seed,
            )),
        Command::Intake {
            requests,
            clients,
            rate,
        } => {
            anyhow::ensure!(
                requests > 0 && clients > 0,
                "--requests and --clients must be positive"
            );
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(bench_intake(requests, clients, rate))
        }
        Command::Recovery(args) => recovery::run(args),
        Command::StoreBackends(args) => store_backends::run(args),
        Command::Failover(args) => ha::failover(args),
        Command::IntakeHa(args) => ha::intake(args),
        Command::StatusPage {
            projects,
            runs,
            seed,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(status_page::bench_status_page(projects, runs.max(1), seed)),
        Command::Payloads { jobs, runs } => webhooks::bench_payloads(&jobs, runs.max(1)),
        Command::EngineStep {
            projects,
            layers,
            stale,
            events,
            max_running,
            seed,
        } => engine_step::bench_engine_step(projects, layers, stale, events, max_running, seed),
        Command::ObserveCost {
            projects,
            layers,
            stale,
            events,
            seed,
        } => observe_cost::bench_observe_cost(&projects, layers, stale, events, seed),
    }
}

/// A small deterministic PRNG (SplitMix64): the generated instance and graph are the same on every
/// run and machine, so figures from different runs are comparable.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A project as a scan would store it, for seeding a store without scanning: its `Dockerfile` is
/// built `FROM` each of `upstreams` (tag `1`) on `registry`, one line each.
fn image_scan<'a>(
    id: u64,
    path: &str,
    web_url: String,
    registry: &str,
    upstreams: impl Iterator<Item = &'a str>,
) -> gitlab_deps::store::ProjectScan {
    use gitlab_deps::store::{ProjectRecord, ProjectScan, RefKind, Reference};
    ProjectScan {
        record: ProjectRecord {
            id,
            path: path.to_owned(),
            default_branch: Some("main".into()),
            web_url,
            registry_prefix: Some(format!("{registry}/{path}")),
            last_activity_at: None,
            head_sha: None,
            checked_at_ms: None,
        },
        refs: upstreams
            .enumerate()
            .map(|(k, upstream)| Reference {
                kind: RefKind::Image,
                file: "Dockerfile".into(),
                line: k as u32 + 1,
                value: format!("{registry}/{upstream}:1"),
            })
            .collect(),
        warnings: Vec::new(),
        files: Default::default(),
    }
}

/// A project of [`layered_graph`]: `lNN/pNNNNNN`.
fn layered_name(layer: usize, i: usize) -> String {
    format!("l{layer:02}/p{i:06}")
}

/// The layered graph of the engine benchmarks: `layers` layers of `per_layer` projects, each below
/// the first built on 1–3 projects of the layer above. Seeded, so every run builds the same graph.
fn layered_graph(
    per_layer: usize,
    layers: usize,
    rng: &mut SplitMix,
) -> (Vec<String>, Vec<(String, String)>) {
    let name = layered_name;
    let mut nodes = Vec::with_capacity(per_layer * layers);
    let mut edges = Vec::new();
    for layer in 0..layers {
        for i in 0..per_layer {
            nodes.push(name(layer, i));
            if layer > 0 {
                for _ in 0..1 + rng.below(3) {
                    edges.push((name(layer - 1, rng.below(per_layer)), name(layer, i)));
                }
            }
        }
    }
    (nodes, edges)
}

/// `(peak, current)` resident set size in bytes, from `/proc/self/status` (`VmHWM`, `VmRSS`).
fn rss() -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status (Linux only)")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/self/status"))?;
        let kb: u64 = line
            .trim_start_matches(name)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("cannot parse {line:?}"))?;
        Ok(kb * 1024)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `requests × latency / concurrency`: the wall time if every request slot were busy all the time.
fn ideal(requests: u64, latency: Duration, concurrency: usize) -> Duration {
    latency.mul_f64(requests as f64 / concurrency as f64)
}

fn ratio(measured: Duration, ideal: Duration) -> f64 {
    if ideal.is_zero() {
        f64::NAN
    } else {
        measured.as_secs_f64() / ideal.as_secs_f64()
    }
}

/// The namespace of project `i`: 10 top-level groups with 4 subgroups each, 50 namespaces in all.
fn namespace(i: usize) -> String {
    let ns = i % 50;
    let (group, sub) = (ns / 5, ns % 5);
    if sub == 0 {
        format!("group{group:02}")
    } else {
        format!("group{group:02}/sub{sub}")
    }
}

fn project_path(i: usize) -> String {
    format!("{}/project-{i:05}", namespace(i))
}

/// What the generator put on the instance, to check the scan found it.
#[derive(Default)]
struct Generated {
    dockerfiles: usize,
    external_only: usize,
    deps_files: usize,
}

/// Populates the simulator: every third project has a Dockerfile (one in five of those on an
/// external image only, the others on an earlier project's image), every 97th a `.gitlab-deps`.
fn populate(sim: &Sim, n: usize, rng: &mut SplitMix) -> Generated {
    let registry = sim.registry_host();
    let mut generated = Generated::default();
    for i in 0..n {
        let mut spec = ProjectSpec::new(project_path(i)).file("README.md", "benchmark project\n");
        if i % 3 == 0 {
            generated.dockerfiles += 1;
            let dockerfile = if i == 0 || rng.below(5) == 0 {
                generated.external_only += 1;
                "FROM debian:bookworm\nRUN true\n".to_owned()
            } else {
                let upstream = project_path(rng.below(i));
                format!("FROM {registry}/{upstream}:v{}\nRUN make\n", rng.below(10))
            };
            spec = spec.file("Dockerfile", dockerfile);
        }
        if i % 97 == 1 {
            generated.deps_files += 1;
            let a = project_path(rng.below(i));
            let b = project_path(rng.below(i));
            spec = spec.file(".gitlab-deps", format!("# upstreams\n{a}\n{b}\n"));
        }
        sim.add_project(spec);
    }
    generated
}

/// A fresh directory for the benchmark database, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("gitlab-deps-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One timed pass: what it cost against its ideal bound.
struct Pass {
    wall: Duration,
    client_requests: u64,
    sim_requests: u64,
    ideal: Duration,
    summary: Option<ScanSummary>,
}

impl Pass {
    fn ratio(&self) -> f64 {
        ratio(self.wall, self.ideal)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "wall_ms": ms(self.wall).round(),
            "requests": self.client_requests,
            "sim_requests": self.sim_requests,
            "ideal_ms": ms(self.ideal).round(),
            "ratio": (self.ratio() * 1000.0).round() / 1000.0,
        })
    }
}

async fn bench_scan(
    n: usize,
    latency: Duration,
    concurrency: usize,
    floor_requests: usize,
) -> anyhow::Result<()> {
    let mut rng = SplitMix(42);
    let sim = Sim::new(SimOptions {
        latency,
        ..Default::default()
    });
    let started = Instant::now();
    let generated = populate(&sim, n, &mut rng);
    let populate_time = started.elapsed();
    let url = sim.start().await.context("cannot start gitlab-sim")?;
    eprintln!("populated {n} projects in {populate_time:.1?}; simulator at {url}");
    let instance = Url::parse(&url).context("gitlab-sim returned a bad URL")?;
    let gitlab = GitLab::new(GitLabOptions {
        concurrency,
        ..GitLabOptions::new(instance.clone(), sim.token().into())
    })?;

    // Progress on stderr every 10 s, so a long run shows it is alive.
    let watchdog = {
        let (gitlab, sim) = (gitlab.clone(), sim.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!(
                    "  {:>4.0} s: client {} requests, simulator {} since the last reset",
                    started.elapsed().as_secs_f64(),
                    gitlab.request_count(),
                    sim.request_count()
                );
            }
        })
    };

    // The floor: single requests pushed through the client as fast as its slots allow, without
    // the scanner. If this is already far above 1.0 the simulator or the machine is the limit.
    let floor = if floor_requests > 0 {
        eprintln!("client floor: {floor_requests} requests...");
        let project_ids: Vec<u64> = (0..n.min(floor_requests))
            .filter_map(|i| sim.project_id(&project_path(i)))
            .collect();
        let before = gitlab.request_count();
        let started = Instant::now();
        let results: Vec<_> = futures::stream::iter((0..floor_requests).map(|k| {
            let gitlab = gitlab.clone();
            let id = project_ids[k % project_ids.len()];
            async move { gitlab.branch_head(id, "main").await }
        }))
        .buffer_unordered(concurrency * 4)
        .collect()
        .await;
        let wall = started.elapsed();
        let failures = results.iter().filter(|r| !matches!(r, Ok(Some(_)))).count();
        anyhow::ensure!(failures == 0, "{failures} floor requests failed");
        let requests = gitlab.request_count() - before;
        Some(Pass {
            wall,
            client_requests: requests,
            sim_requests: requests,
            ideal: ideal(requests, latency, concurrency),
            summary: None,
        })
    } else {
        None
    };

    let dir = TempDir::new()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.0.join("bench.db"))?);
    let mut settings = ScanSettings::from_file(&ScanFileConfig::default())?;
    // No grace: the re-scan then trusts an unchanged `last_activity_at` and skips the head check,
    // which is the listing-only path being measured.
    settings.activity_grace = Duration::ZERO;
    let files_per_project = settings.dockerfiles.len() as u64 + 1;
    let scanner = Scanner::new(
        gitlab.clone(),
        store.clone(),
        settings,
        instance.clone(),
        None,
    );
    let (_, rss_before) = rss()?;

    let run = async |label: &str| -> anyhow::Result<Pass> {
        sim.reset_request_log();
        let before = gitlab.request_count();
        let started = Instant::now();
        let summary = scanner
            .scan(&ScanRequest::default(), &NoProgress)
            .await
            .with_context(|| format!("{label} failed"))?;
        let wall = started.elapsed();
        let client_requests = gitlab.request_count() - before;
        Ok(Pass {
            wall,
            client_requests,
            sim_requests: sim.request_count(),
            ideal: ideal(client_requests, latency, concurrency),
            summary: Some(summary),
        })
    };
    eprintln!("full scan...");
    let full = run("the full scan").await?;
    let (peak_after_scan, _) = rss()?;
    eprintln!("re-scan...");
    let rescan = run("the re-scan").await?;
    watchdog.abort();

    // Where the re-scan's time goes: the listing alone (its first page is necessarily fetched
    // before the page count is known), and the re-resolution of the stored references, which
    // costs the same whatever the latency.
    let started = Instant::now();
    let mut pages_rx = gitlab.list_projects(ProjectScope::All);
    let mut listed = 0usize;
    while let Some(page) = pages_rx.recv().await {
        listed += page?.len();
    }
    let listing_alone = started.elapsed();
    let started = Instant::now();
    resolve(store.as_ref(), None, &instance).await?;
    let resolve_alone = started.elapsed();
    let (peak, _) = rss()?;

    let pages = (n as u64).div_ceil(PER_PAGE);
    let expected_full = pages + n as u64 * (1 + files_per_project);
    let full_summary = full.summary.clone().unwrap_or_default();
    let rescan_summary = rescan.summary.clone().unwrap_or_default();

    println!("== bench scan: {n} projects, {latency:?} latency, concurrency {concurrency} ==");
    println!(
        "instance       {} Dockerfiles ({} external only), {} .gitlab-deps; generated in {:.1} s",
        generated.dockerfiles,
        generated.external_only,
        generated.deps_files,
        populate_time.as_secs_f64()
    );
    if let Some(floor) = &floor {
        println!(
            "client floor   {} requests in {:.2} s, ideal {:.2} s, ratio {:.3}",
            floor.client_requests,
            floor.wall.as_secs_f64(),
            floor.ideal.as_secs_f64(),
            floor.ratio()
        );
    }
    println!(
        "full scan      {:.2} s for {} requests (sim saw {}, {expected_full} with the old per-file reads); ideal {:.2} s; ratio {:.3} (goal <= 1.2)",
        full.wall.as_secs_f64(),
        full.client_requests,
        full.sim_requests,
        full.ideal.as_secs_f64(),
        full.ratio()
    );
    println!(
        "               seen {}, read {}, failed {}, edges {}, with dependencies {}, external images {}, warnings {}",
        full_summary.projects_seen,
        full_summary.projects_read,
        full_summary.failed,
        full_summary.edges,
        full_summary.with_dependencies,
        full_summary.external_images,
        full_summary.warnings.len()
    );
    println!(
        "re-scan        {:.3} s for {} requests (sim saw {}, goal {pages} listing pages); ideal {:.3} s; ratio {:.3}",
        rescan.wall.as_secs_f64(),
        rescan.client_requests,
        rescan.sim_requests,
        rescan.ideal.as_secs_f64(),
        rescan.ratio()
    );
    println!(
        "               read {}, files unchanged {}, skipped {}; listing alone {:.0} ms ({listed} projects), resolve alone {:.0} ms",
        rescan_summary.projects_read,
        rescan_summary.files_unchanged,
        rescan_summary.skipped_unchanged,
        ms(listing_alone),
        ms(resolve_alone)
    );
    println!(
        "memory         RSS {:.1} MiB before the scan (simulator populated), peak {:.1} MiB after the scan, {:.1} MiB after the re-scan",
        mib(rss_before),
        mib(peak_after_scan),
        mib(peak)
    );
    let summary = json!({
        "bench": "scan",
        "projects": n,
        "latency_ms": ms(latency),
        "concurrency": concurrency,
        "floor": floor.as_ref().map(Pass::json),
        "full_scan": full.json(),
        "full_scan_expected_requests": expected_full,
        "rescan": rescan.json(),
        "rescan_goal_requests": pages,
        "listing_alone_ms": ms(listing_alone).round(),
        "resolve_alone_ms": ms(resolve_alone).round(),
        "rss_before_scan_mib": mib(rss_before).round(),
        "peak_rss_after_scan_mib": mib(peak_after_scan).round(),
        "peak_rss_mib": mib(peak).round(),
    });
    println!("{summary}");
    Ok(())
}

/// A random layered DAG: `layers` layers of growing size; every project below the top layer has
/// 1 to 5 upstreams (3 on average), mostly in the layer just above and otherwise in any higher
/// one, so paths from a top project meet again and again (diamonds).
fn layered_dag(n: usize, rng: &mut SplitMix) -> (Vec<String>, Vec<(u32, u32)>, Vec<usize>) {
    let layers = 12usize.min(n);
    // Layer k holds a share proportional to k + 1: few base images, many applications.
    let weight_sum: usize = (1..=layers).sum();
    let mut starts = Vec::with_capacity(layers + 1);
    let mut at = 0usize;
    for k in 0..layers {
        starts.push(at);
        at += (n * (k + 1) / weight_sum).max(1);
    }
    starts.push(n.max(at));
    let names: Vec<String> = (0..n)
        .map(|i| format!("{}/service-{i:06}", namespace(i)))
        .collect();
    let mut edges = Vec::with_capacity(n * 3);
    for k in 1..layers {
        for v in starts[k]..starts[k + 1].min(n) {
            let upstreams = 1 + rng.below(5);
            for _ in 0..upstreams {
                let layer = if rng.below(4) < 3 {
                    k - 1
                } else {
                    rng.below(k)
                };
                let (lo, hi) = (starts[layer], starts[layer + 1].min(n));
                if hi > lo {
                    edges.push(((lo + rng.below(hi - lo)) as u32, v as u32));
                }
            }
        }
    }
    (names, edges, starts)
}

fn bench_plan(n: usize, runs: usize, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(n >= 2, "--projects must be at least 2");
    let mut rng = SplitMix(seed);
    let (names, edges, starts) = layered_dag(n, &mut rng);
    let (_, rss_inputs) = rss()?;

    // Like `load_graph`: owned strings go in, the graph keeps what it needs.
    let started = Instant::now();
    let graph = DepGraph::from_parts(
        names.iter().cloned(),
        edges
            .iter()
            .map(|&(u, d)| (names[u as usize].clone(), names[d as usize].clone())),
    );
    let build = started.elapsed();
    let (peak_after_build, _) = rss()?;

    // The root: the top-layer project with the most descendants, i.e. the largest plan a change
    // to a base image can cause in this graph.
    let top = starts.get(1).copied().unwrap_or(1).min(n);
    let root = names[..top]
        .iter()
        .take(64)
        .max_by_key(|p| graph.acyclic_descendants(p).len())
        .context("empty top layer")?;
    let mut times = Vec::with_capacity(runs);
    let mut waves = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        waves = std::hint::black_box(graph.plan(&[root.as_str()]));
        times.push(started.elapsed());
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    let planned: usize = waves.iter().map(Vec::len).sum();
    let (peak, _) = rss()?;

    println!("== bench plan: {n} projects ==");
    println!(
        "graph          {} projects, {} edges ({:.2} upstreams per project), {} layers",
        graph.len(),
        graph.edge_count(),
        graph.edge_count() as f64 / graph.len() as f64,
        starts.len() - 1
    );
    println!("build          {:.1} ms (from_parts)", ms(build));
    println!(
        "plan           median {:.2} ms over {runs} runs (min {:.2}, max {:.2}); goal < 50 ms; root {root}: {planned} projects in {} waves",
        ms(median),
        ms(times[0]),
        ms(times[times.len() - 1]),
        waves.len()
    );
    println!(
        "memory         RSS {:.1} MiB with the generated inputs, peak {:.1} MiB after the build, {:.1} MiB at the end; goal < 150 MB",
        mib(rss_inputs),
        mib(peak_after_build),
        mib(peak)
    );
    let summary = json!({
        "bench": "plan",
        "projects": graph.len(),
        "edges": graph.edge_count(),
        "build_ms": (ms(build) * 10.0).round() / 10.0,
        "plan_median_ms": (ms(median) * 100.0).round() / 100.0,
        "plan_min_ms": (ms(times[0]) * 100.0).round() / 100.0,
        "plan_max_ms": (ms(times[times.len() - 1]) * 100.0).round() / 100.0,
        "runs": runs,
        "planned_projects": planned,
        "waves": waves.len(),
        "rss_inputs_mib": mib(rss_inputs).round(),
        "peak_rss_mib": mib(peak).round(),
    });
    println!("{summary}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Orchestration benchmarks.

/// A scanned simulated instance with the real service on top (not yet serving).
struct ScannedService {
    service: Service,
    summary: ScanSummary,
    _dir: TempDir,
}

impl ScannedService {
    async fn new(sim: &Sim, url: &str, max_running: usize, secret: &str) -> anyhow::Result<Self> {
        Self::on(sim, url, max_running, secret, None).await
    }

    /// [`ScannedService::new`] on a fresh database of `cluster` (a SQLite file without).
    async fn on(
        sim: &Sim,
        url: &str,
        max_running: usize,
        secret: &str,
        cluster: Option<&ha::Cluster>,
    ) -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let db = dir.0.join("deps.db");
        let store: Arc<dyn Store> = match cluster {
            Some(cluster) => ha::postgres_store(&cluster.database().await?).await?,
            None => Arc::new(SqliteStore::open(&db)?),
        };
        let base = Url::parse(&format!("{url}/"))?;
        let mut config = ServiceConfig::new(
            GitLabOptions::new(base, sim.token().into()),
            ScanSettings::from_file(&ScanFileConfig::default())?,
        );
        config.engine.max_running = max_running;
        config.engine.rescan_every = None;
        config.http.webhook_secret = Some(secret.into());
        // As `serve` runs: the intake's own connection and the spool next to the database.
        config.http.spool = Some(gitlab_deps::server::spool_path(&db));
        let importer: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);
        let service = Service::new(config, store)
            .await?
            .with_spool_importer(importer);
        let summary = service
            .scanner()
            .scan(&ScanRequest::default(), &NoProgress)
            .await?;
        service.engine().reload().await?;
        Ok(Self {
            service,
            summary,
            _dir: dir,
        })
    }
}

/// A cascade through the real engine and server: sim pipelines deliver webhooks over HTTP.
async fn bench_cascade(
    projects: usize,
    layers: usize,
    pipeline_ms: u64,
    seed: u64,
    cluster: Option<&ha::Cluster>,
) -> anyhow::Result<()> {
    let pipeline = Duration::from_millis(pipeline_ms);
    let sim = Sim::new(SimOptions {
        pipeline_duration: pipeline,
        ..SimOptions::default()
    });
    let url = sim.start().await?;
    let reg = sim.registry_host();
    let mut rng = SplitMix(seed);
    // Layer 0 is the root alone; every other project builds on 1-3 projects of earlier layers, at
    // least one in the layer just above, so one change of the root affects everything and the graph
    // is full of diamonds.
    let layers = layers.max(2);
    let per_layer = ((projects - 1) / (layers - 1)).max(1);
    let mut layer_of: Vec<usize> = vec![0];
    let mut paths: Vec<String> = vec!["base/root".into()];
    for i in 1..projects {
        let layer = (1 + (i - 1) / per_layer).min(layers - 1);
        layer_of.push(layer);
        paths.push(format!("l{layer}/p{i:05}"));
    }
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, l) in layer_of.iter().enumerate() {
        by_layer[*l].push(i);
    }
    let ci = "build:\n  script: [make]\n";
    let mut edges = 0usize;
    for i in 0..projects {
        let layer = layer_of[i];
        let mut ups: Vec<usize> = Vec::new();
        if layer > 0 {
            let above = &by_layer[layer - 1];
            ups.push(above[rng.below(above.len())]);
            for _ in 0..rng.below(3) {
                let l = rng.below(layer);
                let pool = &by_layer[l];
                ups.push(pool[rng.below(pool.len())]);
            }
            ups.sort_unstable();
            ups.dedup();
        }
        edges += ups.len();
        let mut dockerfile = String::new();
        for (k, u) in ups.iter().enumerate() {
            dockerfile.push_str(&format!("FROM {reg}/{} AS s{k}\n", paths[*u]));
        }
        if ups.is_empty() {
            dockerfile.push_str("FROM debian:bookworm\n");
        }
        sim.add_project(
            ProjectSpec::new(paths[i].clone())
                .file("Dockerfile", dockerfile)
                .file(".gitlab-ci.yml", ci),
        );
    }
    let secret = "bench-secret";
    let scanned = ScannedService::on(&sim, &url, usize::MAX, secret, cluster).await?;
    anyhow::ensure!(
        scanned.summary.edges == edges,
        "scan found {} edges, generated {edges}",
        scanned.summary.edges
    );
    let engine = scanned.service.engine().clone();
    let snapshot = engine.snapshot().await;
    let graph = snapshot.graph.clone();
    let root = paths[0].as_str();
    let waves = graph.plan(&[root]);
    let affected: usize = waves.iter().map(Vec::len).sum();
    let old_tool = gitlab_deps::demo::direct_trigger_builds(&graph, &[root]);
    let (listener, addr) = server::bind("127.0.0.1:0").await?;
    for p in &paths {
        sim.add_hook(p, &format!("http://{addr}/hooks/gitlab"), secret);
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server_task = tokio::spawn(scanned.service.serve(listener, shutdown.clone()));

    let started = Instant::now();
    sim.run_pipeline(root, "push");
    let deadline = started + pipeline * (waves.len() as u32 + 2) * 4 + Duration::from_secs(60);
    loop {
        let ours = sim.finished_pipelines("api");
        // Only look at the engine once everything was built: a snapshot clones its state, and
        // polling that would slow down what is measured.
        if ours >= affected && engine.snapshot().await.cascade.projects().next().is_none() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cascade did not finish ({ours}/{affected} built)"
        );
        // The figures come from the simulator's records, not from this loop: it counts (under
        // the simulator's lock, copying nothing) and only now and then.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = sim.all_pipelines();
    let root_pipeline = all
        .iter()
        .find(|(p, _)| p == root)
        .map(|(_, p)| p.clone())
        .context("root pipeline")?;
    let created: Vec<_> = all.iter().filter(|(_, p)| p.source == "api").collect();
    let first = root_pipeline.created_at;
    let last = created
        .iter()
        .filter_map(|(_, p)| p.finished_at)
        .max()
        .context("no finished pipeline")?;
    let elapsed = (last - first).unsigned_abs();
    let critical = pipeline * (waves.len() as u32 + 1);

    // Reaction time: from sending the success webhook of a project's last upstream to the arrival
    // of the request creating the project's pipeline.
    let requests = sim.requests();
    let deliveries = sim.deliveries();
    let ids: std::collections::HashMap<String, u64> = paths
        .iter()
        .filter_map(|p| Some((p.clone(), sim.project_id(p)?)))
        .collect();
    let mut reactions: Vec<Duration> = Vec::new();
    // The reaction in two parts: from the delivery to our answer (the intake), and from the
    // answer to the creating request (the engine's step and the request itself).
    let (mut acks, mut after_ack): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for (project, _) in &created {
        let Some(id) = ids.get(project.as_str()) else {
            continue;
        };
        let create_path = format!("/api/v4/projects/{id}/pipeline");
        let Some(request) = requests
            .iter()
            .find(|r| r.method == "POST" && r.path == create_path)
        else {
            continue;
        };
        let trigger = graph
            .acyclic_upstreams(project)
            .iter()
            .filter_map(|u| {
                deliveries
                    .iter()
                    .filter(|d| {
                        d.project == *u
                            && d.pipeline_status.as_deref() == Some("success")
                            && d.sent <= request.received
                    })
                    .map(|d| (d.sent, d.answered))
                    .max()
            })
            .max();
        if let Some((sent, answered)) = trigger {
            reactions.push(request.received - sent);
            acks.push(answered.saturating_duration_since(sent));
            after_ack.push(request.received.saturating_duration_since(answered));
        }
    }
    reactions.sort();
    acks.sort();
    after_ack.sort();
    let median = |v: &[Duration]| v.get(v.len() / 2).copied().unwrap_or_default();
    let pct = |q: f64| {
        reactions
            .get(((reactions.len() as f64 * q) as usize).min(reactions.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    shutdown.cancel();
    let _ = server_task.await;

    let store = if cluster.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "cascade: {projects} projects, {edges} edges, {} waves, {affected} affected by one change of {root}, on {store}",
        waves.len()
    );
    println!(
        "  pipelines created            {}  ({:.2} per affected project)",
        created.len(),
        created.len() as f64 / affected as f64
    );
    println!(
        "  old tool (direct dependents) {old_tool}  ({:.2} per affected project)",
        old_tool as f64 / affected as f64
    );
    println!("  time to finish               {:.0} ms", ms(elapsed));
    println!(
        "  critical path                {:.0} ms ({} waves + root, {} ms each)",
        ms(critical),
        waves.len(),
        pipeline_ms
    );
    println!(
        "  time / critical path         {:.3}",
        ms(elapsed) / ms(critical)
    );
    println!(
        "  success event -> creation    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(reactions.last().copied().unwrap_or_default()),
        reactions.len()
    );
    println!(
        "    delivery -> answer p50 {:.2} ms, answer -> creation p50 {:.2} ms",
        ms(median(&acks)),
        ms(median(&after_ack)),
    );
    println!(
        "{}",
        json!({
            "bench": "cascade", "store": store, "projects": projects, "edges": edges, "waves": waves.len(), "affected": affected,
            "pipelines_created": created.len(), "created_per_affected": created.len() as f64 / affected as f64,
            "old_tool_pipelines": old_tool, "old_tool_per_affected": old_tool as f64 / affected as f64,
            "elapsed_ms": ms(elapsed), "critical_path_ms": ms(critical), "ratio": ms(elapsed) / ms(critical),
            "reaction_p50_ms": ms(pct(0.5)), "reaction_p99_ms": ms(pct(0.99)),
            "answer_p50_ms": ms(median(&acks)), "answer_to_creation_p50_ms": ms(median(&after_ack)),
        })
    );
    Ok(())
}

/// Webhook intake: concurrent clients posting pipeline events; `/healthz` under the same load is
/// the baseline (what the HTTP stack alone does on this machine).
async fn bench_intake(requests: usize, clients: usize, rate: u64) -> anyhow::Result<()> {
    let sim = Sim::new(SimOptions::default());
    let url = sim.start().await?;
    sim.add_project(ProjectSpec::new("g/base").file("Dockerfile", "FROM debian\n"));
    let scanned = ScannedService::new(&sim, &url, 10, ha::SECRET).await?;
    let (listener, addr) = server::bind("127.0.0.1:0").await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server_task = tokio::spawn(scanned.service.serve(listener, shutdown.clone()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let base = format!("http://{addr}");
    let run = async |label: &str, healthz: bool, pace: u64| {
        ha::load(&client, &base, label, healthz, requests, clients, pace)
            .await
            .map(|l| (l.rate, l.p50, l.p99))
    };
    let (base_rate, base_p50, base_p99) = run("healthz", true, 0).await?;
    let (steady_rate, steady_p50, steady_p99) = run("steady", false, rate).await?;
    let (max_rate, p50, p99) = run("hook", false, 0).await?;
    shutdown.cancel();
    let _ = server_task.await;
    println!("webhook intake: {requests} events per run, clients in the same process");
    println!(
        "  steady load of {rate}/s        {steady_rate:.0} events/s, p50 {:.2} ms, p99 {:.2} ms",
        ms(steady_p50),
        ms(steady_p99)
    );
    println!(
        "  saturation, {clients} clients      {max_rate:.0} events/s, p50 {:.2} ms, p99 {:.2} ms",
        ms(p50),
        ms(p99)
    );
    println!(
        "  baseline GET /healthz        {base_rate:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        ms(base_p50),
        ms(base_p99)
    );
    println!("  intake / baseline throughput {:.2}", max_rate / base_rate);
    println!(
        "{}",
        json!({"bench": "intake", "requests": requests, "clients": clients,
            "steady_rate": rate, "steady_events_per_s": steady_rate,
            "steady_p50_ms": ms(steady_p50), "steady_p99_ms": ms(steady_p99),
            "max_events_per_s": max_rate, "max_p50_ms": ms(p50), "max_p99_ms": ms(p99),
            "baseline_per_s": base_rate, "baseline_p99_ms": ms(base_p99),
            "ratio_to_baseline": max_rate / base_rate})
    );
    Ok(())
}

/// A realistic pipeline event the service keeps and applies: a default-branch success of a
/// project nothing depends on (each one is a change with nothing to rebuild).
pub(crate) fn intake_event(i: usize) -> String {
    json!({
        "object_kind": "pipeline",
        "object_attributes": {"id": 1_000_000 + i, "iid": i, "ref": "main", "tag": false, "sha": "0".repeat(40),
            "source": "push", "status": "success", "detailed_status": "passed", "stages": ["build"],
            "created_at": "2026-01-02 15:04:05 UTC", "finished_at": null, "duration": null, "variables": []},
        "merge_request": null,
        "user": {"id": 1, "name": "Administrator", "username": "root"},
        "project": {"id": 1, "name": "base", "path_with_namespace": "g/base", "default_branch": "main",
            "web_url": "http://gitlab.test/g/base"},
        "commit": {"id": "0".repeat(40), "message": "fix openssl", "title": "fix openssl"},
        "builds": [{"id": i, "stage": "build", "name": "build", "status": "success"}]
    })
    .to_string()
}
