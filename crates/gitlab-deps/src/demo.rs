//! `gitlab-deps demo`: a simulated GitLab, a scan, the server and a live cascade, on this machine.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gitlab_sim::{Sim, SimOptions};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{ScanFileConfig, ScanSettings};
use crate::gitlab::GitLabOptions;
use crate::graph::DepGraph;
use crate::hooks::{SyncOptions, sync_hooks};
use crate::orchestrate::{Engine, describe};
use crate::scan::{NoProgress, ScanRequest};
use crate::server;
use crate::service::{Service, ServiceConfig};
use crate::store::{SqliteStore, Store};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Address of the gitlab-deps server.
    pub listen: String,
    /// Address of the simulated GitLab.
    pub sim_listen: String,
    /// How long each simulated pipeline runs.
    pub pipeline_duration: Duration,
    /// Stop after the summary instead of serving until Ctrl-C.
    pub exit_when_done: bool,
}

/// What the demo's cascade did, for the summary and the test.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DemoReport {
    /// Pipelines created by gitlab-deps, per project.
    pub pipelines: BTreeMap<String, usize>,
    /// Projects whose pipeline failed.
    pub failed: Vec<String>,
    /// Projects left blocked below a failure.
    pub blocked: Vec<String>,
    /// Pipelines the old direct-dependents-only tool would have started for the same change.
    pub old_tool_pipelines: usize,
    /// Wall time of the cascade in milliseconds.
    pub elapsed_ms: u64,
    /// Critical path (longest chain x pipeline time) in milliseconds.
    pub critical_path_ms: u64,
}

/// Pipelines the replaced tool starts for a change of `roots`: every success triggers every direct
/// dependent, so a project is built once per path from a root to it.
pub fn direct_trigger_builds(graph: &DepGraph, roots: &[&str]) -> usize {
    let mut paths: HashMap<String, usize> = roots.iter().map(|r| ((*r).to_owned(), 1)).collect();
    let mut total = 0;
    for wave in graph.plan(roots) {
        for project in wave {
            let n: usize = graph
                .acyclic_upstreams(&project)
                .iter()
                .map(|u| paths.get(*u).copied().unwrap_or(0))
                .sum();
            total += n;
            paths.insert(project, n);
        }
    }
    total
}

/// Runs the demo.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    let sim = Sim::new(SimOptions {
        pipeline_duration: opts.pipeline_duration,
        ..SimOptions::default()
    });
    let sim_addr = opts
        .sim_listen
        .parse()
        .context("invalid --sim-listen address")?;
    let sim_url = sim
        .start_on(sim_addr)
        .await
        .with_context(|| format!("cannot start the simulated GitLab on {}", opts.sim_listen))?;
    let sample = sim.with_sample_instance();
    println!(
        "Simulated GitLab at {sim_url} (token {}), {} projects.",
        sim.token(),
        sample.projects.len()
    );

    let db = std::env::temp_dir().join(format!("gitlab-deps-demo-{}.db", std::process::id()));
    remove_db(&db);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_async(&db).await?);
    let base_url = Url::parse(&format!("{sim_url}/"))?;
    let (listener, addr) = server::bind(&opts.listen).await?;
    let server_url = format!("http://{addr}");
    let mut config = ServiceConfig::new(
        GitLabOptions::new(base_url, sim.token().into()),
        ScanSettings::from_file(&ScanFileConfig::default())?,
    );
    // The demo's pipelines take seconds: a lost webhook should not hold it for ten minutes.
    config.engine.reconcile_after = Duration::from_secs(60);
    config.engine.rescan_every = None;
    config.http.webhook_secret = Some(secrecy::SecretString::from(
        uuid::Uuid::new_v4().simple().to_string(),
    ));
    let secret = config.http.webhook_secret.clone().unwrap_or_default();
    let service = Service::new(config, Arc::clone(&store)).await?;
    let summary = service
        .scanner()
        .scan(&ScanRequest::default(), &NoProgress)
        .await?;
    println!(
        "Scanned: {} projects, {} dependencies, {} external images, {} warnings (database {}).",
        summary.projects_seen,
        summary.edges,
        summary.external_images,
        summary.warnings.len(),
        db.display()
    );
    let engine = Arc::clone(service.engine());
    engine.reload().await?;
    let hooks = sync_hooks(
        service.gitlab(),
        store.as_ref(),
        &store.projects().await?,
        &SyncOptions {
            url: format!("{server_url}/hooks/gitlab"),
            secret,
            rotate_secret: false,
            dry_run: false,
            groups: Vec::new(),
        },
    )
    .await?;
    println!(
        "gitlab-deps serving at {server_url} (status page; webhooks installed on {} projects).",
        hooks.created
    );
    let shutdown = CancellationToken::new();
    let server_task = tokio::spawn(service.serve(listener, shutdown.clone()));

    let graph = engine.snapshot().await.graph;
    let root = sample.root.as_str();
    let waves = graph.plan(&[root]);
    println!();
    println!(
        "{root} was rebuilt (an openssl fix, say). Its pipeline runs; when it succeeds, gitlab-deps"
    );
    println!("rebuilds everything built on it, each project once, after all of its parents:");
    for (i, wave) in waves.iter().enumerate() {
        println!("  wave {}: {}", i + 1, wave.join(", "));
    }
    println!();
    let started = Instant::now();
    let id = sim.run_pipeline(root, "push");
    println!("[  0.0s] {root:<20} pipeline #{id} started by a push");
    let report = watch(&sim, &engine, started, &waves, opts.pipeline_duration).await;
    let report = DemoReport {
        old_tool_pipelines: direct_trigger_builds(&graph, &[root]),
        ..report
    };
    print_summary(&report);
    if opts.exit_when_done {
        shutdown.cancel();
    } else {
        println!();
        println!(
            "Still serving: status page {server_url}/ , simulated GitLab {sim_url} . Ctrl-C stops."
        );
        println!("Try: gitlab-deps --db {} status", db.display());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::cli::shutdown_signal().await;
            stop.cancel();
        });
    }
    let _ = server_task.await;
    drop(store);
    remove_db(&db);
    Ok(report)
}

/// Removes the demo's database and its WAL files.
fn remove_db(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// Prints each project's state changes until the cascade is quiet.
async fn watch(
    sim: &Sim,
    engine: &Arc<Engine>,
    started: Instant,
    waves: &[Vec<String>],
    pipeline: Duration,
) -> DemoReport {
    let mut last: HashMap<String, String> = HashMap::new();
    let mut finished: HashMap<u64, String> = HashMap::new();
    let deadline = started + Duration::from_secs(120) + pipeline * 40;
    let mut quiet_since: Option<Instant> = None;
    let mut last_finish = started;
    loop {
        let stamp = format!("[{:>5.1}s]", started.elapsed().as_secs_f64());
        for (project, p) in sim.all_pipelines() {
            if p.status.is_finished() && !finished.contains_key(&p.id) {
                finished.insert(p.id, project.clone());
                last_finish = Instant::now();
                println!("{stamp} {project:<20} pipeline #{} {}", p.id, p.status);
            }
        }
        let snapshot = engine.snapshot().await;
        let views = describe(&snapshot);
        for v in &views {
            let line = format!("{:<8} {}", v.state, v.detail);
            if last.get(&v.project) != Some(&line) {
                println!("{stamp} {:<20} {line}", v.project);
                last.insert(v.project.clone(), line);
            }
        }
        last.retain(|p, _| views.iter().any(|v| &v.project == p));
        // Quiet: nothing runs or waits, except what a failure blocks, and the root has finished.
        let busy = views
            .iter()
            .any(|v| matches!(v.state, "running" | "waiting" | "queued"));
        let root_done = !finished.is_empty()
            && sim
                .all_pipelines()
                .iter()
                .all(|(_, p)| p.status.is_finished());
        if !busy && root_done {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            // Give the last webhook a moment to land before declaring the cascade done.
            if since.elapsed() > (pipeline * 2).max(Duration::from_secs(1)) {
                break;
            }
        } else {
            quiet_since = None;
        }
        if Instant::now() > deadline {
            println!("{stamp} giving up waiting for the cascade to finish");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = last_finish.duration_since(started);
    let mut pipelines = BTreeMap::new();
    for (project, p) in sim.all_pipelines() {
        if p.source == "api" {
            *pipelines.entry(project).or_insert(0) += 1;
        }
    }
    let snapshot = engine.snapshot().await;
    let views = describe(&snapshot);
    DemoReport {
        pipelines,
        failed: views
            .iter()
            .filter(|v| v.state == "failed")
            .map(|v| v.project.clone())
            .collect(),
        blocked: views
            .iter()
            .filter(|v| v.state == "blocked")
            .map(|v| v.project.clone())
            .collect(),
        old_tool_pipelines: 0,
        elapsed_ms: elapsed.as_millis() as u64,
        critical_path_ms: (pipeline * (waves.len() as u32 + 1)).as_millis() as u64,
    }
}

fn print_summary(r: &DemoReport) {
    println!();
    println!("Summary");
    let created: usize = r.pipelines.values().sum();
    println!(
        "  pipelines created by gitlab-deps: {created} for {} projects",
        r.pipelines.len()
    );
    for (project, n) in &r.pipelines {
        println!("    {project:<20} {n}");
    }
    println!(
        "  the old tool (direct dependents on every success) would have run {}",
        r.old_tool_pipelines
    );
    if !r.failed.is_empty() {
        println!(
            "  failed: {} (a later success of it resumes what it blocks)",
            r.failed.join(", ")
        );
    }
    if !r.blocked.is_empty() {
        println!("  blocked below a failure: {}", r.blocked.join(", "));
    }
    println!(
        "  time: {:.1}s, critical path {:.1}s (ratio {:.2})",
        r.elapsed_ms as f64 / 1000.0,
        r.critical_path_ms as f64 / 1000.0,
        r.elapsed_ms as f64 / r.critical_path_ms.max(1) as f64
    );
    let _ = std::io::stdout().flush();
}
