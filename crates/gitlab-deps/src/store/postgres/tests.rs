//! The conformance suite on PostgreSQL (each case on a fresh database), and what SQLite cannot
//! show: concurrent grants, concurrent writers of the event log, a fenced commit racing a
//! take-over, migrations under concurrency.

use std::sync::Arc;
use std::time::Duration;

use super::testing::{self, TestDatabase};
use super::*;
use crate::store::{DiscoveryStore, Lease, MetaStore, NewEvent, OrchestrationStore};

/// A store on a fresh database and the database's guard; `None` when PostgreSQL is absent (and
/// the test was reported as skipped).
async fn fresh() -> Option<(PostgresStore, TestDatabase)> {
    let db = testing::database().await?;
    Some((db.store().await, db))
}

crate::store_conformance_tests!(postgres, || async {
    match testing::database().await {
        Some(db) => {
            let store = db.store().await;
            (
                std::sync::Arc::new(store) as std::sync::Arc<dyn crate::store::Store>,
                Box::new(db) as Box<dyn std::any::Any + Send>,
            )
        }
        // Skipped (said so on stderr): an in-memory SQLite store keeps the case meaningful.
        None => (
            std::sync::Arc::new(crate::store::SqliteStore::in_memory().unwrap())
                as std::sync::Arc<dyn crate::store::Store>,
            Box::new(()) as Box<dyn std::any::Any + Send>,
        ),
    }
});

#[tokio::test]
async fn two_replicas_asking_at_once_get_one_grant() {
    let Some((_, db)) = fresh().await else { return };
    for round in 0..10 {
        let (a, b) = (db.store().await, db.store().await);
        let ttl = Duration::from_secs(60);
        let (na, nb) = (format!("a{round}"), format!("b{round}"));
        let (ga, gb) = tokio::join!(a.acquire_lease(&na, ttl), b.acquire_lease(&nb, ttl));
        let grants: Vec<Lease> = [ga.unwrap(), gb.unwrap()].into_iter().flatten().collect();
        assert_eq!(grants.len(), 1, "round {round}: {grants:?}");
        // Free it for the next round.
        a.release_lease(&grants[0]).await.unwrap();
    }
}

/// Two replicas' intakes insert batches at once while an engine-like reader processes "up to the
/// last sequence number seen", as the engine does: every event is read exactly once.
#[tokio::test]
async fn concurrent_writers_never_make_the_reader_skip_an_event() {
    let Some((_, db)) = fresh().await else { return };
    let (a, b, reader) = (
        Arc::new(db.store().await),
        Arc::new(db.store().await),
        db.store().await,
    );
    const BATCHES: usize = 60;
    const PER_BATCH: usize = 20;
    let writer = |store: Arc<PostgresStore>, name: &'static str| {
        tokio::spawn(async move {
            for batch in 0..BATCHES {
                let events: Vec<NewEvent> = (0..PER_BATCH)
                    .map(|i| NewEvent {
                        delivery_key: format!("{name}-{batch}-{i}"),
                        kind: "Push Hook".into(),
                        body: "{}".into(),
                    })
                    .collect();
                store.insert_events(&events).await.unwrap();
            }
        })
    };
    let (wa, wb) = (writer(a, "a"), writer(b, "b"));
    let mut seen = std::collections::HashSet::new();
    let total = 2 * BATCHES * PER_BATCH;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} read",
            seen.len()
        );
        let batch = reader.unprocessed_events(50).await.unwrap();
        let Some(last) = batch.last().map(|e| e.seq) else {
            tokio::task::yield_now().await;
            continue;
        };
        for e in &batch {
            assert!(seen.insert(e.seq), "event {} read twice", e.seq);
        }
        reader
            .commit_cascade(&[], Default::default(), Some(last), None)
            .await
            .unwrap();
    }
    wa.await.unwrap();
    wb.await.unwrap();
    assert!(reader.unprocessed_events(10).await.unwrap().is_empty());
    assert_eq!(seen.len(), total);
}

/// A leader commits with its fence while another replica takes the expired lease over: either the
/// commit lands before the take-over (and the new leader sees it), or it is fenced off and nothing
/// of it lands. Never both a new epoch and a commit under the old one after it.
#[tokio::test]
async fn a_fenced_commit_racing_a_take_over_lands_whole_before_it_or_not_at_all() {
    let Some((_, db)) = fresh().await else { return };
    let (old, new) = (db.store().await, db.store().await);
    for round in 0..20 {
        let lease = old
            .acquire_lease("old", Duration::ZERO)
            .await
            .unwrap()
            .expect("free");
        let project = format!("g/p{round}");
        let state = crate::cascade::ProjectState::default();
        let changes = [(project.clone(), Some(&state))];
        let (committed, taken) = tokio::join!(
            old.commit_cascade(&changes, Default::default(), None, Some(&lease)),
            new.acquire_lease("new", Duration::from_secs(60))
        );
        let taken = taken.unwrap().expect("an expired lease is free");
        let stored = new.cascade_state().await.unwrap().unwrap_or_default();
        let landed = stored.projects.iter().any(|(p, _)| *p == project);
        match committed {
            Ok(()) => assert!(landed, "round {round}: committed but not stored"),
            Err(StoreError::Fenced { held, current }) => {
                assert_eq!((held, current), (lease.epoch, taken.epoch));
                assert!(!landed, "round {round}: fenced but stored");
            }
            Err(e) => panic!("{e}"),
        }
        // After the take-over, the old epoch commits nothing.
        let late = old
            .commit_cascade(&[], Default::default(), None, Some(&lease))
            .await;
        assert!(matches!(late, Err(StoreError::Fenced { .. })), "{late:?}");
        new.release_lease(&taken).await.unwrap();
    }
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let Some(db) = testing::database().await else {
        return;
    };
    let url = db.secret();
    let opens = (0..4).map(|_| PostgresStore::connect(&url, None));
    for store in futures::future::join_all(opens).await {
        store.unwrap().set_meta("k", "v").await.unwrap();
    }
    let store = db.store().await;
    let client = store.client().await.unwrap();
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM gitlab_deps_schema ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=schema::MIGRATIONS.len() as i32).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_named_without_the_password() {
    let Some((store, db)) = fresh().await else {
        return;
    };
    store
        .client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO gitlab_deps_schema (version) VALUES (99)")
        .await
        .unwrap();
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("hunter2")).unwrap();
    // Trust authentication: the server accepts (and ignores) the password.
    let err = PostgresStore::connect(&SecretString::from(url.to_string()), None)
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("upgrade gitlab-deps"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains(&db.url), "{text}");
}

#[test]
fn urls_are_shown_without_passwords() {
    assert_eq!(
        redact("postgres://app:s3cret@db.example:5432/deps?sslmode=require&password=x"),
        "postgres://app@db.example:5432/deps?sslmode=require"
    );
    assert_eq!(
        redact("postgresql://db.example/deps"),
        "postgresql://db.example/deps"
    );
    assert_eq!(
        redact("postgres://a:b@[::1/x"),
        "(an unparseable PostgreSQL URL)"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named_in_one_line() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = SecretString::from(format!(
        "postgres://u:pw@127.0.0.1:{port}/deps?sslmode=disable&connect_timeout=2"
    ));
    let err = PostgresStore::connect(&url, None).await.err().unwrap();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot open database postgres://u@127.0.0.1:{port}/deps"
        )),
        "{text}"
    );
    assert!(!text.contains("pw"), "{text}");
}

#[tokio::test]
async fn a_batch_of_ten_thousand_scans_lands_in_a_few_statements() {
    let Some((store, _db)) = fresh().await else {
        return;
    };
    let scans: Vec<crate::store::ProjectScan> = (1..=10_000u64)
        .map(|i| crate::store::ProjectScan {
            record: crate::store::ProjectRecord {
                id: i,
                path: format!("g/p{i:05}"),
                default_branch: Some("main".into()),
                web_url: String::new(),
                registry_prefix: None,
                last_activity_at: None,
                head_sha: None,
                checked_at_ms: None,
            },
            refs: vec![crate::store::Reference {
                kind: crate::store::RefKind::Image,
                file: "Dockerfile".into(),
                line: 1,
                value: "base".into(),
            }],
            warnings: vec![],
            files: Default::default(),
        })
        .collect();
    store.save_scans(&scans).await.unwrap();
    assert_eq!(store.projects().await.unwrap().len(), 10_000);
    // Paths swapped between two projects in one batch: both keep their ids.
    let mut a = scans[0].clone();
    let mut b = scans[1].clone();
    std::mem::swap(&mut a.record.path, &mut b.record.path);
    store.save_scans(&[a, b]).await.unwrap();
    let _ = store.project(1).await.unwrap().unwrap();
}
