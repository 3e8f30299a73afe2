//! `bench scan-requests`: what a scan costs in requests now that it lists trees and reads blobs by
//! id, against the ideal bound and against a serial per-file scan like the old Python tool's.
//!
//! Same instance as `bench scan` (seeded generator, 10,000 projects by default). Three passes:
//! 1. a cold scan through the library (`Scanner`), counted per endpoint class by the simulator;
//! 2. the baseline: a sequential loop over the listed projects reading `Dockerfile` and
//!    `.gitlab-deps` through the files API, one request at a time;
//! 3. commits to README.md of `--touched` projects, then a re-scan: tree requests and file reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gitlab_deps::config::{ScanFileConfig, ScanSettings};
use gitlab_deps::gitlab::{GitLab, GitLabOptions, ProjectScope};
use gitlab_deps::scan::{NoProgress, ScanRequest, Scanner};
use gitlab_deps::store::{SqliteStore, Store};
use gitlab_sim::{Endpoint, Sim, SimOptions};
use serde_json::json;
use url::Url;

use super::{SplitMix, TempDir, ideal, ms, populate, project_path, ratio};

/// Options of `bench scan-requests`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Projects on the simulated instance.
    #[arg(long, default_value_t = 10_000)]
    projects: usize,
    /// Latency the simulator adds to every API request, in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Requests in flight at once (the client's `concurrency`).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Projects the serial baseline reads (0 skips it; default: all of them).
    #[arg(long)]
    serial_projects: Option<usize>,
    /// Projects that get a commit touching no dependency file before the re-scan.
    #[arg(long, default_value_t = 1_000)]
    touched: usize,
}

/// Runs the benchmark on its own runtime.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.projects > 0, "--projects must be at least 1");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

/// Requests per endpoint class since the last reset.
fn by_endpoint(sim: &Sim) -> serde_json::Value {
    json!({
        "list": sim.endpoint_count(Endpoint::ListProjects),
        "tree": sim.endpoint_count(Endpoint::Tree),
        "blob": sim.endpoint_count(Endpoint::Blob),
        "file": sim.endpoint_count(Endpoint::File),
        "branch": sim.endpoint_count(Endpoint::Branch),
        "other": sim.endpoint_count(Endpoint::Project) + sim.endpoint_count(Endpoint::Other),
    })
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let n = args.projects;
    let latency = Duration::from_millis(args.latency_ms);
    let concurrency = args.concurrency;
    let sim = Sim::new(SimOptions {
        latency,
        ..Default::default()
    });
    let generated = populate(&sim, n, &mut SplitMix(42));
    let url = sim.start().await.context("cannot start gitlab-sim")?;
    let instance = Url::parse(&url).context("gitlab-sim returned a bad URL")?;
    let client = |concurrency: usize| {
        GitLab::new(GitLabOptions {
            concurrency,
            ..GitLabOptions::new(instance.clone(), sim.token().into())
        })
    };
    let gitlab = client(concurrency)?;
    let dir = TempDir::new()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.0.join("bench.db"))?);
    let mut settings = ScanSettings::from_file(&ScanFileConfig::default())?;
    // No grace: a re-scan then trusts an unchanged `last_activity_at`, and lists the tree of
    // exactly the projects whose activity moved.
    settings.activity_grace = Duration::ZERO;
    let scanner = Scanner::new(gitlab.clone(), store, settings, instance.clone(), None);

    eprintln!("cold scan of {n} projects...");
    sim.reset_request_log();
    let before = gitlab.request_count();
    let started = Instant::now();
    let cold = scanner
        .scan(&ScanRequest::default(), &NoProgress)
        .await
        .context("the cold scan failed")?;
    let cold_wall = started.elapsed();
    let cold_requests = gitlab.request_count() - before;
    let cold_ideal = ideal(cold_requests, latency, concurrency);
    let cold_counts = by_endpoint(&sim);

    // The baseline: one project after another, two files each, one request at a time.
    let serial_n = args.serial_projects.unwrap_or(n).min(n);
    let serial = if serial_n > 0 {
        eprintln!("serial baseline over {serial_n} projects...");
        let serial_client = client(1)?;
        sim.reset_request_log();
        let started = Instant::now();
        let mut pages = serial_client.list_projects(ProjectScope::All);
        let mut projects = Vec::new();
        while let Some(page) = pages.recv().await {
            projects.extend(page?);
        }
        let mut found = 0usize;
        for project in projects.iter().take(serial_n) {
            let branch = project.default_branch.as_deref().unwrap_or("main");
            for file in ["Dockerfile", ".gitlab-deps"] {
                if serial_client
                    .file_raw(project.id, file, branch)
                    .await?
                    .is_some()
                {
                    found += 1;
                }
            }
        }
        let wall = started.elapsed();
        let requests = serial_client.request_count();
        Some((wall, requests, found))
    } else {
        None
    };

    eprintln!("commits to {} projects, then a re-scan...", args.touched);
    let step = (n / args.touched.max(1)).max(1);
    let touched: Vec<usize> = (0..n).step_by(step).take(args.touched).collect();
    for i in &touched {
        sim.set_file(&project_path(*i), "README.md", "touched by the benchmark\n");
    }
    sim.reset_request_log();
    let before = gitlab.request_count();
    let started = Instant::now();
    let rescan = scanner
        .scan(&ScanRequest::default(), &NoProgress)
        .await
        .context("the re-scan failed")?;
    let rescan_wall = started.elapsed();
    let rescan_requests = gitlab.request_count() - before;
    let rescan_ideal = ideal(rescan_requests, latency, concurrency);
    let rescan_counts = by_endpoint(&sim);

    let per_project = cold_requests as f64 / n as f64;
    println!(
        "== bench scan-requests: {n} projects, {latency:?} latency, concurrency {concurrency} =="
    );
    println!(
        "instance       {} Dockerfiles ({} on the same external-only content), {} .gitlab-deps",
        generated.dockerfiles, generated.external_only, generated.deps_files
    );
    println!(
        "cold scan      {cold_requests} requests = {per_project:.3} per project (goal <= 1.4); by endpoint {cold_counts}"
    );
    println!(
        "               {:.2} s, ideal {:.2} s, ratio {:.3} (goal <= 1.2); read {}, failed {}, edges {}",
        cold_wall.as_secs_f64(),
        cold_ideal.as_secs_f64(),
        ratio(cold_wall, cold_ideal),
        cold.projects_read,
        cold.failed,
        cold.edges
    );
    let serial_json = serial.map(|(wall, requests, found)| {
        let serial_ideal = ideal(requests, latency, 1);
        let extrapolated = wall.as_secs_f64() * n as f64 / serial_n as f64;
        println!(
            "serial         {serial_n} projects: {requests} requests in {:.2} s (ideal {:.2} s, ratio {:.3}), {found} files found; \
             for {n} projects about {extrapolated:.1} s, {:.1}x the cold scan",
            wall.as_secs_f64(),
            serial_ideal.as_secs_f64(),
            ratio(wall, serial_ideal),
            extrapolated / cold_wall.as_secs_f64()
        );
        json!({
            "projects": serial_n,
            "requests": requests,
            "wall_ms": ms(wall).round(),
            "ideal_ms": ms(serial_ideal).round(),
            "extrapolated_ms": (extrapolated * 1000.0).round(),
            "speedup_of_cold_scan": ((extrapolated / cold_wall.as_secs_f64()) * 100.0).round() / 100.0,
        })
    });
    println!(
        "re-scan        after commits to {} projects touching no dependency file: {rescan_requests} requests; by endpoint {rescan_counts}",
        touched.len()
    );
    println!(
        "               {:.2} s, ideal {:.2} s, ratio {:.3}; read {}, files unchanged {}, skipped {}",
        rescan_wall.as_secs_f64(),
        rescan_ideal.as_secs_f64(),
        ratio(rescan_wall, rescan_ideal),
        rescan.projects_read,
        rescan.files_unchanged,
        rescan.skipped_unchanged
    );
    let summary = json!({
        "bench": "scan-requests",
        "projects": n,
        "latency_ms": ms(latency),
        "concurrency": concurrency,
        "cold": {
            "requests": cold_requests,
            "per_project": (per_project * 1000.0).round() / 1000.0,
            "by_endpoint": cold_counts,
            "wall_ms": ms(cold_wall).round(),
            "ideal_ms": ms(cold_ideal).round(),
            "ratio": (ratio(cold_wall, cold_ideal) * 1000.0).round() / 1000.0,
        },
        "serial": serial_json,
        "rescan_after_commits": {
            "touched": touched.len(),
            "requests": rescan_requests,
            "by_endpoint": rescan_counts,
            "projects_read": rescan.projects_read,
            "wall_ms": ms(rescan_wall).round(),
            "ideal_ms": ms(rescan_ideal).round(),
        },
    });
    println!("{summary}");
    Ok(())
}
