//! `bench push-rescan`: the time from a push that changes a Dockerfile's `FROM` lines to the new
//! edges being in the running engine's graph, on a 100,000-project graph.
//!
//! The graph is stored directly (the random layered graph of `bench plan`, as image references
//! resolved by the real resolver); only the pushed projects live on the simulator, which
//! delivers their push webhooks over HTTP to the real server and answers the rescan's reads with
//! the configured latency. The API part is measured in the same run: the reads a rescan makes,
//! sent through the same client right after each push, so the result reads as "X ms + reads".
//! For comparison the run also times what a push cost before: a whole resolve and graph reload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gitlab_deps::config::{ScanFileConfig, ScanSettings};
use gitlab_deps::gitlab::GitLabOptions;
use gitlab_deps::scan::resolve;
use gitlab_deps::server;
use gitlab_deps::service::{Service, ServiceConfig};
use gitlab_deps::store::{SqliteStore, Store};
use gitlab_sim::{ProjectSpec, Sim, SimOptions};
use serde_json::json;
use url::Url;

use super::{SplitMix, TempDir, image_scan, layered_dag, mib, ms, rss};

/// Stored ids of projects that are not on the simulator start here, clear of the simulator's.
const OFFLINE_IDS: u64 = 10_000_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn dockerfile(reg: &str, upstreams: &[&str]) -> String {
    let mut out = String::new();
    for (k, u) in upstreams.iter().enumerate() {
        out.push_str(&format!("FROM {reg}/{u}:1 AS s{k}\n"));
    }
    out.push_str("RUN make\n");
    out
}

/// Runs the benchmark and prints a summary line and a JSON line.
pub async fn bench_push_rescan(
    n: usize,
    pushes: usize,
    latency_ms: u64,
    seed: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(n >= 100, "--projects must be at least 100");
    anyhow::ensure!(pushes > 0, "--pushes must be at least 1");
    let latency = Duration::from_millis(latency_ms);
    let sim = Sim::new(SimOptions {
        latency,
        ..SimOptions::default()
    });
    let url = sim.start().await?;
    let reg = sim.registry_host();
    let mut rng = SplitMix(seed);
    let (names, edges, starts) = layered_dag(n, &mut rng);
    let mut ups: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &(u, d) in &edges {
        ups[d as usize].push(u);
    }

    // The pushed projects, on the simulator: four applications (bottom layer, nothing below
    // them) and four from the middle layer (thousands below them, whose ranks may change).
    let layer_start = |i: usize| {
        starts
            .iter()
            .copied()
            .filter(|&s| s <= i)
            .max()
            .unwrap_or(0)
    };
    let bottom = starts[starts.len() - 2];
    let middle = starts[starts.len() / 2];
    let pushed: Vec<usize> = (0..4)
        .map(|k| bottom + k * 7)
        .chain((0..4).map(|k| middle + k * 7))
        .collect();
    let mut sim_ids = std::collections::HashMap::new();
    for &i in &pushed {
        let upstreams: Vec<&str> = ups[i].iter().map(|&u| names[u as usize].as_str()).collect();
        let id = sim.add_project(
            ProjectSpec::new(names[i].clone()).file("Dockerfile", dockerfile(&reg, &upstreams)),
        );
        sim_ids.insert(i, id);
    }

    // The stored graph: every project with its image references, as a scan would save them.
    let dir = TempDir::new()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.0.join("deps.db"))?);
    let setup = Instant::now();
    let mut batch = Vec::new();
    for (i, path) in names.iter().enumerate() {
        let id = sim_ids.get(&i).copied().unwrap_or(OFFLINE_IDS + i as u64);
        let upstreams = ups[i].iter().map(|&u| names[u as usize].as_str());
        batch.push(image_scan(
            id,
            path,
            format!("{url}/{path}"),
            &reg,
            upstreams,
        ));
        if batch.len() == 5_000 {
            store.save_scans(&batch).await?;
            batch.clear();
        }
    }
    store.save_scans(&batch).await?;
    let base = Url::parse(&format!("{url}/"))?;
    let resolved = resolve(store.as_ref(), None, &base).await?;
    let distinct_edges = {
        let mut e = edges.clone();
        e.sort_unstable();
        e.dedup();
        e.len()
    };
    anyhow::ensure!(
        resolved.edges.len() == distinct_edges,
        "resolved {} edges, generated {distinct_edges}",
        resolved.edges.len()
    );
    let setup = setup.elapsed();

    let settings = ScanSettings::from_file(&ScanFileConfig::default())?;
    let dockerfiles = settings.dockerfiles.clone();
    let secret = "bench-secret";
    let mut config = ServiceConfig::new(
        GitLabOptions::new(base.clone(), sim.token().into()),
        settings,
    );
    config.engine.max_running = 1;
    config.engine.rescan_every = None;
    config.http.webhook_secret = Some(secret.into());
    let service = Service::new(config, Arc::clone(&store)).await?;
    let engine = Arc::clone(service.engine());
    let gitlab = service.gitlab().clone();
    let (listener, addr) = server::bind("127.0.0.1:0").await?;
    for &i in &pushed {
        sim.add_hook(&names[i], &format!("http://{addr}/hooks/gitlab"), secret);
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server_task = tokio::spawn(service.serve(listener, shutdown.clone()));

    let mut total = Vec::with_capacity(pushes);
    let mut reads = Vec::with_capacity(pushes);
    let mut own = Vec::with_capacity(pushes);
    for push in 0..pushes {
        let i = pushed[push % pushed.len()];
        let path = names[i].as_str();
        // 1 to 3 new upstreams from the layers above.
        let upper = layer_start(i).max(1);
        let mut new_ups: Vec<&str> = (0..1 + rng.below(3))
            .map(|_| names[rng.below(upper)].as_str())
            .collect();
        new_ups.sort_unstable();
        new_ups.dedup();
        let content = dockerfile(&reg, &new_ups);
        // The reads of one rescan, alone, while nothing else runs: the project, its branch head,
        // its files at that head.
        let id = sim_ids[&i];
        let started = Instant::now();
        let project = gitlab.project(path).await?;
        let head = gitlab
            .branch_head(id, project.default_branch.as_deref().unwrap_or("main"))
            .await?
            .context("no head")?;
        let mut names_read: Vec<&str> = dockerfiles.iter().map(String::as_str).collect();
        names_read.push(gitlab_deps::scan::DEPS_FILE);
        for r in futures::future::join_all(names_read.iter().map(|f| gitlab.file_raw(id, f, &head)))
            .await
        {
            r?;
        }
        let api = started.elapsed();

        let started = Instant::now();
        sim.push(path, &[("Dockerfile", Some(content.as_str()))]);
        let deadline = started + Duration::from_secs(60);
        loop {
            if engine.snapshot().await.graph.upstreams(path) == new_ups {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "push {push}: {path}'s new edges never reached the graph"
            );
            tokio::task::yield_now().await;
        }
        let elapsed = started.elapsed();

        total.push(elapsed);
        reads.push(api);
        own.push(elapsed.saturating_sub(api));
    }

    // The two steps beyond the reads, alone: the one-project resolve in the store, and the new
    // graph with that project's upstreams swapped in.
    let graph = engine.snapshot().await.graph;
    let mut store_step = Vec::new();
    let mut graph_step = Vec::new();
    for k in 0..pushes.min(20) {
        let i = pushed[k % pushed.len()];
        let started = Instant::now();
        gitlab_deps::scan::resolve_project(store.as_ref(), sim_ids[&i], None, &base)
            .await?
            .context("pushed project not stored")?;
        store_step.push(started.elapsed());
        let ups: Vec<String> = graph
            .upstreams(&names[i])
            .into_iter()
            .map(str::to_owned)
            .collect();
        let started = Instant::now();
        std::hint::black_box(
            graph
                .with_upstreams(&names[i], &ups)
                .context("known project")?,
        );
        graph_step.push(started.elapsed());
    }

    // What a push cost before: resolving every reference and reloading the whole graph.
    let mut whole = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        resolve(store.as_ref(), None, &base).await?;
        engine.reload().await?;
        whole.push(started.elapsed());
    }
    shutdown.cancel();
    let _ = server_task.await;
    let (peak, _) = rss()?;

    total.sort_unstable();
    reads.sort_unstable();
    own.sort_unstable();
    whole.sort_unstable();
    store_step.sort_unstable();
    graph_step.sort_unstable();
    let p = |v: &[Duration], q: f64| (ms(percentile(v, q)) * 100.0).round() / 100.0;
    println!("== bench push-rescan: {n} projects, {distinct_edges} edges, {pushes} pushes ==");
    println!(
        "push -> graph    p50 {:.1} ms, p99 {:.1} ms (simulated API latency {latency_ms} ms per request)",
        p(&total, 0.5),
        p(&total, 0.99)
    );
    println!(
        "rescan reads     p50 {:.1} ms, p99 {:.1} ms (project, branch head, {} files in parallel)",
        p(&reads, 0.5),
        p(&reads, 0.99),
        names_len(&dockerfiles)
    );
    println!(
        "beyond the reads p50 {:.1} ms, p99 {:.1} ms; goal < 50 ms",
        p(&own, 0.5),
        p(&own, 0.99)
    );
    println!(
        "of which         one-project resolve p50 {:.2} ms, graph swap p50 {:.1} ms (p99 {:.1} ms)",
        p(&store_step, 0.5),
        p(&graph_step, 0.5),
        p(&graph_step, 0.99)
    );
    println!(
        "before: whole resolve + reload median {:.0} ms ({:.0}x the p50 beyond the reads)",
        p(&whole, 0.5),
        p(&whole, 0.5) / p(&own, 0.5).max(0.01)
    );
    println!(
        "setup {:.1} s (storing {n} projects + the first resolve), peak RSS {:.0} MiB",
        setup.as_secs_f64(),
        mib(peak)
    );
    let summary = json!({
        "bench": "push-rescan",
        "projects": n,
        "edges": distinct_edges,
        "pushes": pushes,
        "latency_ms": latency_ms,
        "push_to_graph_p50_ms": p(&total, 0.5),
        "push_to_graph_p99_ms": p(&total, 0.99),
        "reads_p50_ms": p(&reads, 0.5),
        "reads_p99_ms": p(&reads, 0.99),
        "beyond_reads_p50_ms": p(&own, 0.5),
        "beyond_reads_p99_ms": p(&own, 0.99),
        "whole_resolve_reload_median_ms": p(&whole, 0.5),
        "resolve_project_p50_ms": p(&store_step, 0.5),
        "graph_swap_p50_ms": p(&graph_step, 0.5),
        "graph_swap_p99_ms": p(&graph_step, 0.99),
        "peak_rss_mib": mib(peak).round(),
    });
    println!("{summary}");
    Ok(())
}

fn names_len(dockerfiles: &[String]) -> usize {
    dockerfiles.len() + 1
}
