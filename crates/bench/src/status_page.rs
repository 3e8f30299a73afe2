//! `bench status-page`: the status page and the JSON API on a large instance, over real HTTP:
//! time per request and response size, with one chain of thousands of projects in progress.
//!
//! The graph is the random layered graph of `bench plan`, stored directly as resolved image
//! references. One project near the top is rebuilt with `max_running = 0`, so thousands of
//! projects stay waiting or queued (the engine never calls GitLab). Each URL is fetched `runs`
//! times after one warm-up; the baseline is `/healthz` in the same run (the HTTP round trip
//! alone), so "server time" is a request's median minus the baseline's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gitlab_deps::cascade::Input;
use gitlab_deps::config::{ScanFileConfig, ScanSettings};
use gitlab_deps::gitlab::GitLabOptions;
use gitlab_deps::orchestrate::enqueue_operator_input;
use gitlab_deps::scan::resolve;
use gitlab_deps::server;
use gitlab_deps::service::{Service, ServiceConfig};
use gitlab_deps::store::{ProjectScan, SqliteStore, Store};
use serde_json::json;
use url::Url;

use super::{SplitMix, TempDir, image_scan, layered_dag, ms};

const REGISTRY: &str = "registry.bench.invalid";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn p95(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * 0.95).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

/// Runs the benchmark and prints a table and a JSON line.
pub async fn bench_status_page(n: usize, runs: usize, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(n >= 100, "--projects must be at least 100");
    let mut rng = SplitMix(seed);
    let (names, edges, starts) = layered_dag(n, &mut rng);
    let mut ups: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &(u, d) in &edges {
        ups[d as usize].push(u);
    }
    // GitLab is never called (nothing may start), so its URL leads nowhere.
    let base = Url::parse("http://127.0.0.1:9/")?;
    let dir = TempDir::new()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.0.join("deps.db"))?);
    let scans: Vec<ProjectScan> = names
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let upstreams = ups[i].iter().map(|&u| names[u as usize].as_str());
            image_scan(
                i as u64 + 1,
                path,
                format!("{base}{path}"),
                REGISTRY,
                upstreams,
            )
        })
        .collect();
    for chunk in scans.chunks(5_000) {
        store.save_scans(chunk).await?;
    }
    resolve(store.as_ref(), None, &base).await?;

    let mut config = ServiceConfig::new(
        GitLabOptions::new(base, "bench-token".into()),
        ScanSettings::from_file(&ScanFileConfig::default())?,
    );
    config.engine.max_running = 0;
    config.engine.rescan_every = None;
    config.http.webhook_secret = Some("bench-secret".into());
    let service = Service::new(config, Arc::clone(&store)).await?;
    let (listener, addr) = server::bind("127.0.0.1:0").await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server_task = tokio::spawn(service.serve(listener, shutdown.clone()));

    // A change near the top: most of the instance below it becomes stale.
    let root = names[starts[1]].clone();
    enqueue_operator_input(
        store.as_ref(),
        &Input::Rebuild {
            project: root.clone(),
        },
    )
    .await?;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let affected = loop {
        let status: serde_json::Value = client.get(url("/api/status")).send().await?.json().await?;
        let active = status["projects"].as_array().map_or(0, Vec::len);
        if active > 0 {
            break active;
        }
        anyhow::ensure!(Instant::now() < deadline, "the rebuild never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A project in the middle of the graph, for the neighbourhood views.
    let middle = names[starts[starts.len() / 2] + 3].clone();
    let targets = [
        ("/healthz (baseline)".to_owned(), "/healthz".to_owned()),
        ("/ (active view)".to_owned(), "/".to_owned()),
        (
            "/?around=P&depth=2".to_owned(),
            format!("/?around={middle}&depth=2"),
        ),
        ("/api/graph (active)".to_owned(), "/api/graph".to_owned()),
        (
            "/api/graph?around=P&depth=2".to_owned(),
            format!("/api/graph?around={middle}&depth=2"),
        ),
        ("/projects/P".to_owned(), format!("/projects/{middle}")),
        (
            "/api/projects/P".to_owned(),
            format!("/api/projects/{middle}"),
        ),
        ("/api/cascades".to_owned(), "/api/cascades".to_owned()),
        ("/api/status".to_owned(), "/api/status".to_owned()),
    ];
    println!(
        "status page on {n} projects, {} edges, {affected} projects in one chain in progress; {runs} requests each",
        edges.len()
    );
    println!(
        "{:<30} {:>10} {:>10} {:>12} {:>10}",
        "request", "median ms", "p95 ms", "server ms", "bytes"
    );
    let mut baseline = Duration::ZERO;
    let mut results = Vec::new();
    for (label, path) in &targets {
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0usize;
        for run in 0..=runs {
            let started = Instant::now();
            let response = client.get(url(path)).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            let body = response.bytes().await.context("reading a response")?;
            let took = started.elapsed();
            bytes = body.len();
            // The first request warms caches and connections.
            if run > 0 {
                times.push(took);
            }
        }
        let (med, high) = (median(times.clone()), p95(times));
        if path == "/healthz" {
            baseline = med;
        }
        let server_ms = ms(med.saturating_sub(baseline));
        println!(
            "{label:<30} {:>10.2} {:>10.2} {:>12.2} {:>10}",
            ms(med),
            ms(high),
            server_ms,
            bytes
        );
        results.push(json!({
            "request": label,
            "median_ms": ms(med),
            "p95_ms": ms(high),
            "server_ms": server_ms,
            "bytes": bytes,
        }));
    }
    println!(
        "{}",
        json!({
            "bench": "status-page",
            "projects": n,
            "edges": edges.len(),
            "active": affected,
            "runs": runs,
            "results": results,
        })
    );
    shutdown.cancel();
    let _ = server_task.await;
    Ok(())
}
