//! The conformance suite on PostgreSQL (each case on a fresh database), and what SQLite cannot
//! show: concurrent grants, concurrent writers of the event log, a fenced commit racing a
//! take-over, migrations under concurrency.

use std::sync::Arc;
use std::time::Duration;

use super::testing::{self, TestDatabase};
use super::*;
use crate::store::{Activity, DiscoveryStore, Lease, MetaStore, NewEvent, OrchestrationStore};

/// A store on a fresh database and the database's guard; `None` when PostgreSQL is absent (and
/// the test was reported as skipped).
async fn fresh() -> Option<(PostgresStore, TestDatabase)> {
    let db = testing::database().await?;
    Some((db.store().await, db))
}

// Each case on a fresh database; without PostgreSQL (outside CI) each says SKIPPED and returns.
crate::store_conformance_tests!(
    postgres,
    optional
        || async {
            let db = testing::database().await?;
            let store = db.store().await;
            Some((
                std::sync::Arc::new(store) as std::sync::Arc<dyn crate::store::Store>,
                Box::new(db) as Box<dyn std::any::Any + Send>,
            ))
        }
);

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
            .commit_cascade(&[], Default::default(), Some(last), Activity::NONE, None)
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
            old.commit_cascade(
                &changes,
                Default::default(),
                None,
                Activity::NONE,
                Some(&lease)
            ),
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
            .commit_cascade(&[], Default::default(), None, Activity::NONE, Some(&lease))
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
        .expect_err("refused");
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
    assert_eq!(store.project(1).await.unwrap().unwrap().path, "g/p00002");
    assert_eq!(store.project(2).await.unwrap().unwrap().path, "g/p00001");
}

/// A batch ends as its records written one by one would: a path taken from a project of the
/// same batch removes that project, which may come back later in the batch as a new one.
#[tokio::test]
async fn a_batch_of_records_ends_as_one_by_one_writes_would() {
    let Some((store, _db)) = fresh().await else {
        return;
    };
    let record = |id: u64, path: &str| crate::store::ProjectRecord {
        id,
        path: path.into(),
        default_branch: None,
        web_url: String::new(),
        registry_prefix: None,
        last_activity_at: None,
        head_sha: None,
        checked_at_ms: None,
    };
    store
        .update_records(&[record(1, "g/a"), record(2, "g/a"), record(1, "g/b")])
        .await
        .unwrap();
    let got: Vec<(u64, String)> = store
        .projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.path))
        .collect();
    assert_eq!(got, [(2, "g/a".to_owned()), (1, "g/b".to_owned())]);
}

/// The test cluster has TLS with a CA of its own (`ca.crt` beside its certificate; see
/// `scripts/test-postgres`): `require` encrypts, `verify-full` with that CA checks the
/// certificate, and `verify-full` against the system's CAs refuses it.
#[tokio::test]
async fn tls_encrypts_with_require_and_checks_the_certificate_with_verify_full() {
    let Some((store, db)) = fresh().await else {
        return;
    };
    let client = store.client().await.unwrap();
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        assert!(
            std::env::var_os("CI").is_none(),
            "the CI cluster has TLS (scripts/test-postgres installs openssl)"
        );
        eprintln!("SKIPPED: the test cluster has no TLS (openssl is not installed)");
        return;
    }
    let cert: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let ca = std::path::Path::new(&cert).with_file_name("ca.crt");
    let url = |query: String| SecretString::from(format!("{}?{query}", db.url));
    let encrypted = |store: PostgresStore| async move {
        let client = store.client().await.unwrap();
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, bool>(0)
    };
    let connect = |query: String| {
        let url = url(query);
        async move { PostgresStore::connect(&url, None).await }
    };
    assert!(encrypted(connect("sslmode=require".into()).await.unwrap()).await);
    assert!(!encrypted(connect("sslmode=disable".into()).await.unwrap()).await);
    let checked = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    assert!(encrypted(connect(checked).await.unwrap()).await);
    let refused = connect("sslmode=verify-full".into())
        .await
        .expect_err("the test CA is nobody's system CA");
    assert!(
        refused.to_string().starts_with("cannot open database"),
        "{refused}"
    );
}
