//! A fresh, empty PostgreSQL database per test, on one throwaway cluster per test run.
//!
//! The cluster: `GITLAB_DEPS_TEST_POSTGRES` (a superuser URL) when set, as CI sets it; otherwise
//! `scripts/test-postgres` is started once per test process, and stops when the process exits
//! (its stdin, held here, closes). Without either: under `CI` the test panics (CI always has
//! PostgreSQL); elsewhere [`database`] prints why on stderr and answers `None`, and the test
//! returns early.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::sync::{Mutex, OnceLock};

use secrecy::SecretString;

use super::PostgresStore;

/// The variable naming an existing cluster's superuser URL.
pub const CLUSTER_ENV: &str = "GITLAB_DEPS_TEST_POSTGRES";

/// A database made for one test; dropped with this guard.
pub struct TestDatabase {
    /// Its URL (superuser, no password).
    pub url: String,
    name: String,
    admin: String,
}

impl TestDatabase {
    /// The URL as the secret the store takes.
    pub fn secret(&self) -> SecretString {
        SecretString::from(self.url.clone())
    }

    /// A store on this database (migrated).
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.secret(), None)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on itself: a thread of its own
        // with a small runtime does it. FORCE ends connections still open (a pool not yet dropped).
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// The cluster's superuser URL, or why there is none.
fn cluster() -> &'static Result<String, String> {
    static CLUSTER: OnceLock<Result<String, String>> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        if let Ok(url) = std::env::var(CLUSTER_ENV)
            && !url.trim().is_empty()
        {
            return Ok(url.trim().to_owned());
        }
        start_cluster()
    })
}

/// The started cluster's script, kept for the process's life: its stdin closes when the process
/// exits, however it ends, and the script then stops and deletes the cluster.
static SCRIPT: Mutex<Option<Child>> = Mutex::new(None);

fn start_cluster() -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/test-postgres");
    let mut child = Command::new(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let url = line.trim().to_owned();
    if read.is_err() || !url.starts_with("postgres") {
        let _ = child.kill();
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(err
            .lines()
            .last()
            .unwrap_or("scripts/test-postgres failed")
            .to_owned());
    }
    *SCRIPT.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    Ok(url)
}

/// A fresh, empty database for one test, or `None` (after saying why on stderr) when no
/// PostgreSQL is available outside CI.
pub async fn database() -> Option<TestDatabase> {
    let cluster = tokio::task::spawn_blocking(cluster)
        .await
        .expect("cluster start");
    let admin = match cluster {
        Ok(url) => url.clone(),
        Err(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL not available in CI ({reason})");
            }
            eprintln!(
                "SKIPPED: PostgreSQL not available ({reason}); install postgresql or set {CLUSTER_ENV}"
            );
            return None;
        }
    };
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster {admin}: {e}"));
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {}", super::describe(&e)));
    let mut url = url::Url::from_str(&admin).expect("cluster URL");
    url.set_path(&format!("/{name}"));
    Some(TestDatabase {
        url: url.to_string(),
        name,
        admin,
    })
}
