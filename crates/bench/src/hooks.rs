//! `bench hooks`: `hooks sync` on a simulated instance, first run (install) and a second run with
//! nothing changed, each against its ideal bound `requests × latency / concurrency`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use gitlab_deps::gitlab::{GitLab, GitLabOptions};
use gitlab_deps::hooks::{HookSummary, SyncOptions, sync_hooks};
use gitlab_deps::store::{ProjectRecord, SqliteStore};
use gitlab_sim::{ProjectSpec, Sim, SimOptions};
use serde_json::json;
use url::Url;

use super::{ideal, ms, ratio};

struct Run {
    wall: Duration,
    client_requests: u64,
    sim_writes: u64,
    ideal: Duration,
    summary: HookSummary,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        json!({
            "wall_ms": ms(self.wall).round(),
            "requests": self.client_requests,
            "writes": self.sim_writes,
            "ideal_ms": ms(self.ideal).round(),
            "ratio": (ratio(self.wall, self.ideal) * 1000.0).round() / 1000.0,
            "created": self.summary.created,
            "updated": self.summary.updated,
            "unchanged": self.summary.unchanged,
            "failed": self.summary.failed.len(),
        })
    }
}

async fn run(
    sim: &Sim,
    gitlab: &GitLab,
    store: &SqliteStore,
    projects: &[ProjectRecord],
    options: &SyncOptions,
    latency: Duration,
    concurrency: usize,
) -> anyhow::Result<Run> {
    sim.reset_request_log();
    let before = gitlab.request_count();
    let started = Instant::now();
    let summary = sync_hooks(gitlab, store, projects, options).await?;
    let wall = started.elapsed();
    let client_requests = gitlab.request_count() - before;
    anyhow::ensure!(summary.failed.is_empty(), "failures: {:?}", summary.failed);
    Ok(Run {
        wall,
        client_requests,
        sim_writes: sim.write_count(),
        ideal: ideal(client_requests, latency, concurrency),
        summary,
    })
}

/// Installs hooks on `n` projects, then syncs again with nothing changed.
pub async fn bench_hooks(n: usize, latency: Duration, concurrency: usize) -> anyhow::Result<()> {
    let sim = Sim::new(SimOptions {
        latency,
        ..Default::default()
    });
    let projects: Vec<ProjectRecord> = (0..n)
        .map(|i| {
            let path = format!("group{:02}/project{i:05}", i % 10);
            let id = sim.add_project(ProjectSpec::new(&path).file("Dockerfile", "FROM debian\n"));
            ProjectRecord {
                id,
                path,
                default_branch: Some("main".to_owned()),
                web_url: String::new(),
                registry_prefix: None,
                last_activity_at: None,
                head_sha: None,
                checked_at_ms: None,
            }
        })
        .collect();
    let url = sim.start().await.context("cannot start gitlab-sim")?;
    let gitlab = GitLab::new(GitLabOptions {
        concurrency,
        ..GitLabOptions::new(
            Url::parse(&url).context("gitlab-sim returned a bad URL")?,
            sim.token().into(),
        )
    })?;
    let store = SqliteStore::in_memory()?;
    let options = SyncOptions {
        url: "https://deps.example/hooks/gitlab".to_owned(),
        secret: "bench-secret".into(),
        rotate_secret: false,
        dry_run: false,
        groups: Vec::new(),
    };
    eprintln!("first sync of {n} projects...");
    let first = run(
        &sim,
        &gitlab,
        &store,
        &projects,
        &options,
        latency,
        concurrency,
    )
    .await?;
    eprintln!("second sync...");
    let second = run(
        &sim,
        &gitlab,
        &store,
        &projects,
        &options,
        latency,
        concurrency,
    )
    .await?;

    println!("== bench hooks: {n} projects, {latency:?} latency, concurrency {concurrency} ==");
    for (name, r) in [("first sync", &first), ("second sync", &second)] {
        println!(
            "{name:<14} {:.2} s for {} requests ({} writes; {} created, {} updated, {} unchanged); ideal {:.2} s; ratio {:.3}",
            r.wall.as_secs_f64(),
            r.client_requests,
            r.sim_writes,
            r.summary.created,
            r.summary.updated,
            r.summary.unchanged,
            r.ideal.as_secs_f64(),
            ratio(r.wall, r.ideal)
        );
    }
    println!(
        "{}",
        json!({
            "bench": "hooks",
            "projects": n,
            "latency_ms": ms(latency),
            "concurrency": concurrency,
            "first_sync": first.json(),
            "second_sync": second.json(),
            "second_sync_goal": "0 writes, ratio <= 1.3",
        })
    );
    Ok(())
}
