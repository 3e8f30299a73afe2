//! The PostgreSQL store, for several replicas sharing one database: tokio-postgres connections
//! in a deadpool pool, statements prepared once per connection (deadpool's statement cache),
//! TLS by rustls.
//!
//! Split by half: [`discovery`] (projects, references, the derived graph), [`orchestration`]
//! (event log, cascade state, activity), [`lease`] (the engine's lease and the fence), and
//! [`schema`] (versioned migrations). `docs/store.md` describes the transactions and locks.

mod discovery;
mod lease;
mod orchestration;
mod pipeline;
mod schema;
#[cfg(any(test, feature = "store-conformance"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod tls;

use std::str::FromStr as _;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret as _, SecretString};
use tokio_postgres::config::SslMode;

use super::StoreError;

/// Advisory lock (transaction-scoped) taken while migrating.
const LOCK_MIGRATE: i64 = 0x676c_6470_0001;
/// Advisory lock taken by every writer of projects, references and the derived graph, so a
/// resolve reads and writes with no other discovery writer in between (as SQLite's one writer).
const LOCK_DISCOVERY: i64 = 0x676c_6470_0002;
/// Advisory lock taken by every insert into the event log until it commits, so events become
/// visible in sequence order (see [`orchestration`]).
const LOCK_EVENTS: i64 = 0x676c_6470_0003;

/// Connections per replica: the engine, the intake's group commit, scans and API reads at once.
const POOL_SIZE: usize = 16;
/// How long an operation waits for a connection (the pool is busy, or the server is away).
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL implementation of the store traits ([`super::Store`]).
pub struct PostgresStore {
    pool: Pool,
    /// The database's URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…` or `postgresql://…`; `sslmode` and
    /// `sslrootcert` as in [`tls`]) and applies pending migrations.
    /// `password`, when given, replaces any password in the URL.
    pub async fn connect(
        url: &SecretString,
        password: Option<&SecretString>,
    ) -> Result<Self, StoreError> {
        let shown = redact(url.expose_secret());
        let open_error = {
            let shown = shown.clone();
            move |reason: String| StoreError::Open {
                path: shown.clone(),
                reason,
            }
        };
        let tls_settings = tls::settings(url.expose_secret());
        let mut config = tokio_postgres::Config::from_str(&tls_settings.url)
            .map_err(|e| open_error(describe(&e)))?;
        if let Some(password) = password {
            config.password(password.expose_secret());
        }
        if config.get_application_name().is_none() {
            config.application_name("gitlab-deps");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(tls::connector(&tls_settings).map_err(&open_error)?),
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, manager_config),
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| open_error(e.to_string()))?;
        let store = Self { pool, shown };
        let mut client = store.client().await.map_err(|e| match e {
            StoreError::Pool { reason, .. } => open_error(reason),
            other => other,
        })?;
        schema::migrate(&mut client, &store.shown)
            .await
            .map_err(|e| match e {
                StoreError::Postgres(e) => open_error(describe(&e)),
                other => other,
            })?;
        Ok(store)
    }

    /// The database's URL without its password.
    pub fn database(&self) -> &str {
        &self.shown
    }

    /// A pooled connection.
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Pool {
            database: self.shown.clone(),
            reason: match e {
                deadpool_postgres::PoolError::Backend(e) => describe(&e),
                other => other.to_string(),
            },
        })
    }
}

/// One line for a PostgreSQL error: the server's message (with its detail) when it sent one,
/// else the client's error and its cause.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            out.push_str(" (");
            out.push_str(detail);
            out.push(')');
        }
        return out;
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The URL without its password (in the authority or as a `password` parameter), for messages
/// and logs.
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(an unparseable PostgreSQL URL)".to_owned();
    };
    if parsed.password().is_some() {
        // Cannot fail for URLs with a host, which every URL with a password has.
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| k != "password")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    parsed.to_string()
}

/// Ids as PostgreSQL stores them (`BIGINT`; GitLab ids fit).
fn sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}
