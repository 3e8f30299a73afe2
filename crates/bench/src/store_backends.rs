//! The store operations that carry load, on PostgreSQL against SQLite (the baseline, measured in
//! the same run on this machine): a 10,000-project scan saved in one call, cascade commits of
//! hundreds of project states, and webhook intake from two replicas at once (group commits of
//! `batch` deliveries from `writers` tasks per replica).
//!
//! PostgreSQL: the cluster in `GITLAB_DEPS_TEST_POSTGRES`, else a throwaway one started by
//! `scripts/test-postgres` (fsync off, as the test cluster is; a production server with fsync pays
//! a disk flush per commit). Each backend gets a fresh database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use gitlab_deps::cascade::ProjectState;
use gitlab_deps::store::postgres::testing;
use gitlab_deps::store::{
    Activity, NewEvent, ProjectRecord, ProjectScan, RefKind, Reference, SqliteStore, Store,
};

use super::{TempDir, ms};

/// `bench store-backends` arguments.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Projects in the saved scan.
    #[arg(long, default_value_t = 10_000)]
    pub projects: usize,
    /// Project states changed per cascade commit.
    #[arg(long, default_value_t = 500)]
    pub changed: usize,
    /// Cascade commits timed.
    #[arg(long, default_value_t = 50)]
    pub commits: usize,
    /// Deliveries per replica.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Deliveries per group commit.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Concurrent writers per replica.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
}

struct Figures {
    save_scans: Duration,
    commit: Duration,
    events_per_s: f64,
    batch_p99: Duration,
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch > 0 && args.writers > 0 && args.commits > 0,
        "--batch, --writers and --commits must be positive"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = TempDir::new()?;
        let path = dir.0.join("bench.db");
        let sqlite = {
            let (a, b) = (SqliteStore::open(&path)?, SqliteStore::open(&path)?);
            measure(&args, Arc::new(a), Arc::new(b)).await?
        };
        let Some(db) = testing::database().await else {
            anyhow::bail!("PostgreSQL is not available (see above)");
        };
        let postgres = measure(
            &args,
            Arc::new(db.store().await),
            Arc::new(db.store().await),
        )
        .await?;
        println!(
            "store-backends: {} projects saved, {} commits of {} states, {} deliveries x 2 replicas in batches of {} from {} writers each",
            args.projects, args.commits, args.changed, args.events, args.batch, args.writers
        );
        println!("| operation | SQLite (baseline) | PostgreSQL | PostgreSQL / SQLite |");
        println!("|---|---|---|---|");
        let row = |what: &str, s: f64, p: f64, unit: &str| {
            println!("| {what} | {s:.1} {unit} | {p:.1} {unit} | {:.2} |", p / s);
        };
        row(
            "save_scans (one call)",
            ms(sqlite.save_scans),
            ms(postgres.save_scans),
            "ms",
        );
        row(
            "commit_cascade (per commit)",
            ms(sqlite.commit),
            ms(postgres.commit),
            "ms",
        );
        row(
            "insert_events, two replicas",
            sqlite.events_per_s,
            postgres.events_per_s,
            "events/s",
        );
        row(
            "insert_events p99 per group commit",
            ms(sqlite.batch_p99),
            ms(postgres.batch_p99),
            "ms",
        );
        Ok(())
    })
}

async fn measure(args: &Args, a: Arc<dyn Store>, b: Arc<dyn Store>) -> anyhow::Result<Figures> {
    let scans: Vec<ProjectScan> = (0..args.projects)
        .map(|i| ProjectScan {
            record: ProjectRecord {
                id: i as u64 + 1,
                path: format!("group{}/project{i:06}", i % 50),
                default_branch: Some("main".into()),
                web_url: format!("https://gitlab.example/p/{i}"),
                registry_prefix: Some(format!("registry.example/group{}/project{i:06}", i % 50)),
                last_activity_at: None,
                head_sha: None,
                checked_at_ms: None,
            },
            refs: (0..3)
                .map(|r| Reference {
                    kind: RefKind::Image,
                    file: "Dockerfile".into(),
                    line: r + 1,
                    value: format!(
                        "registry.example/group0/project{:06}",
                        (i + r as usize) % 97
                    ),
                })
                .collect(),
            warnings: vec![],
            files: [("Dockerfile".to_owned(), format!("blob-{i}"))].into(),
        })
        .collect();
    let started = Instant::now();
    a.save_scans(&scans).await?;
    let save_scans = started.elapsed();

    let state = ProjectState::default();
    let names: Vec<String> = (0..args.changed).map(|i| format!("g/p{i}")).collect();
    let changes: Vec<(String, Option<&ProjectState>)> =
        names.iter().map(|n| (n.clone(), Some(&state))).collect();
    let started = Instant::now();
    for _ in 0..args.commits {
        let seq = a
            .insert_event(&uuid::Uuid::new_v4().to_string(), "Push Hook", "{}")
            .await?;
        a.commit_cascade(&changes, Default::default(), seq, Activity::NONE, None)
            .await?;
    }
    let commit = started.elapsed() / args.commits as u32;

    let per_writer = args.events / args.writers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (replica, store) in [a, b].into_iter().enumerate() {
        for writer in 0..args.writers {
            let store = Arc::clone(&store);
            let batch = args.batch;
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut sent = 0;
                while sent < per_writer {
                    let n = batch.min(per_writer - sent);
                    let events: Vec<NewEvent> = (0..n)
                        .map(|i| NewEvent {
                            delivery_key: format!("{replica}-{writer}-{}", sent + i),
                            kind: "Pipeline Hook".into(),
                            body: r#"{"object_kind":"pipeline","object_attributes":{"id":1,"status":"success"}}"#.into(),
                        })
                        .collect();
                    let t = Instant::now();
                    store.insert_events(&events).await?;
                    latencies.push(t.elapsed());
                    sent += n;
                }
                anyhow::Ok(latencies)
            }));
        }
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let batch_p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    let total = per_writer * args.writers * 2;
    Ok(Figures {
        save_scans,
        commit,
        events_per_s: total as f64 / elapsed.as_secs_f64(),
        batch_p99,
    })
}
