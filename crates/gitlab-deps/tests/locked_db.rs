//! The service keeps answering `/healthz`, `/` and `/api/status` while another process holds the
//! database locked for longer than the busy timeout, even with an engine step stuck on that lock.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{Service, SimServer, Workdir, gitlab_deps, wait_until};
use gitlab_sim::{ProjectSpec, SimOptions};
use rusqlite::{Connection, TransactionBehavior};

/// Well below the store's 10 s busy timeout: an answer this fast did not wait for the lock.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// What the locking thread reports.
enum Locked {
    /// The lock is held and the engine has the event still to commit.
    Held,
    /// The engine committed the event before the lock was taken: try again.
    TooLate,
}

/// Commits an operator input the engine has to commit in turn, then takes the write lock at
/// once, and holds it until told to let go.
fn lock_after_an_event(db: &std::path::Path, key: &str, release: mpsc::Receiver<()>) -> Locked {
    let mut conn = Connection::open(db).unwrap();
    conn.execute(
        "INSERT INTO events (delivery_key, kind, body, received_ms) VALUES (?1, 'gitlab-deps/input', ?2, 0)",
        [key, r#"{"Rebuild":{"project":"other/solo"}}"#],
    )
    .unwrap();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .unwrap();
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('test.lock', '1') ON CONFLICT(key) DO UPDATE SET value = value + 1",
        [],
    )
    .unwrap();
    let processed: i64 = tx
        .query_row(
            "SELECT processed FROM events WHERE delivery_key = ?1",
            [key],
            |r| r.get(0),
        )
        .unwrap();
    if processed != 0 {
        return Locked::TooLate;
    }
    // The caller holds the receiver's sender; a send (or its drop) ends the lock.
    let _ = release.recv();
    tx.commit().unwrap();
    Locked::Held
}

#[test]
fn status_routes_answer_while_the_database_is_locked() {
    let server = SimServer::start(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    });
    let reg = server.sim.registry_host();
    for (path, dockerfile) in [
        ("images/base", "FROM debian\n".to_owned()),
        ("apps/app", format!("FROM {reg}/images/base\n")),
        ("other/solo", "FROM alpine\n".to_owned()),
    ] {
        server.sim.add_project(
            ProjectSpec::new(path)
                .file("Dockerfile", dockerfile)
                .file(".gitlab-ci.yml", "build:\n  script: [make]\n"),
        );
    }
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();
    let service = Service::start(&work, &server.url, "127.0.0.1:0", &[]);
    // Something for the page to show: base running (pipelines here only finish by hand).
    gitlab_deps(&work, &server.url, None)
        .args(["rebuild", "--queue", "images/base"])
        .assert()
        .success();
    let client = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .unwrap();
    let get = |path: &str| -> Result<(u16, String), reqwest::Error> {
        let url = format!("{}{path}", service.url);
        server.runtime.block_on(async {
            let response = client.get(&url).send().await?;
            let status = response.status().as_u16();
            Ok((status, response.text().await?))
        })
    };
    let running = |body: &str| {
        let status: serde_json::Value = serde_json::from_str(body).unwrap();
        status["projects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["project"] == "images/base" && p["state"] == "running")
    };
    wait_until(30, "base running", || {
        get("/api/status").is_ok_and(|(_, body)| running(&body))
    });

    // Lock the database right after an event the engine must commit, so an engine step ends up
    // waiting on the lock in the middle of its work.
    let (release, held) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (release, released) = mpsc::channel();
            let db = work.db();
            let key = format!("locked-db-test:{attempt}");
            let holder = std::thread::spawn(move || lock_after_an_event(&db, &key, released));
            // The thread returns at once when too late, else only when released.
            wait_until(10, "the lock to be taken", || {
                holder.is_finished() || lock_is_held(&work.db())
            });
            if holder.is_finished() {
                assert!(matches!(holder.join().unwrap(), Locked::TooLate));
                assert!(attempt < 5, "the engine always committed before the lock");
                continue;
            }
            break (release, holder);
        }
    };

    // Held past the busy timeout: the engine's commit gives up and says so, and the routes keep
    // answering meanwhile.
    let log = work.path("serve.log");
    let mut answered = 0;
    wait_until(60, "the engine to give up on the locked database", || {
        for path in ["/healthz", "/", "/api/status"] {
            let (status, body) = get(path)
                .unwrap_or_else(|e| panic!("{path} did not answer within {ANSWER_WITHIN:?}: {e}"));
            assert_eq!(status, 200, "{path}: {body}");
            if path == "/api/status" {
                assert!(
                    running(&body),
                    "the status shows the running pipeline: {body}"
                );
            }
            if path == "/" {
                assert!(body.contains("images/base"), "{body}");
            }
            answered += 1;
        }
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot process events")
    });
    assert!(answered >= 3);
    release.send(()).unwrap();
    assert!(matches!(held.join().unwrap(), Locked::Held));

    // Released: the held-up event goes through.
    wait_until(30, "the queued rebuild of other/solo", || {
        get("/api/status").is_ok_and(|(_, body)| body.contains("other/solo"))
    });
}

/// True while another connection holds the write lock (a write attempt fails at once).
fn lock_is_held(db: &std::path::Path) -> bool {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(Duration::ZERO).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_err()
}
