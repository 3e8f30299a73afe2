//! Where the store lives: a SQLite file or a PostgreSQL database, from the `db` setting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};

use super::{PostgresStore, SqliteStore, Store, StoreError};

/// The database the `db` setting names: a PostgreSQL URL (`postgres://…` or `postgresql://…`),
/// else a SQLite file. The URL may hold a password, so it is a secret: `Debug` shows it without.
#[derive(Clone)]
pub enum Location {
    /// A SQLite database file (created when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres {
        /// The connection URL.
        url: SecretString,
        /// A password replacing any in the URL (from a password file).
        password: Option<SecretString>,
    },
}

impl Location {
    /// Reads a `db` value: PostgreSQL for a `postgres://`/`postgresql://` URL, else a file path.
    pub fn parse(raw: &str) -> Self {
        let scheme = raw.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Location::Postgres {
                url: SecretString::from(raw),
                password: None,
            },
            _ => Location::Sqlite(PathBuf::from(raw)),
        }
    }

    /// The SQLite file, if that is what this is.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres { .. } => None,
        }
    }

    /// How messages name it: the file, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres { url, .. } => super::postgres::redact(url.expose_secret()),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Location::Postgres { password, .. } => f
                .debug_struct("Postgres")
                .field("url", &self.shown())
                .field("password", &password.as_ref().map(|_| "[REDACTED]"))
                .finish(),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Location::parse(s))
    }
}

impl<'de> serde::Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(Location::parse(&raw))
    }
}

/// Opens the store at `location`, migrating its schema: what every command uses.
pub async fn open(location: &Location) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(SqliteStore::open_async(path).await?),
        Location::Postgres { url, password } => {
            Arc::new(PostgresStore::connect(url, password.as_ref()).await?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_everything_else_a_file() {
        assert!(matches!(
            Location::parse("postgres://h/db"),
            Location::Postgres { .. }
        ));
        assert!(matches!(
            Location::parse("PostgreSQL://h/db"),
            Location::Postgres { .. }
        ));
        assert_eq!(
            Location::parse("/var/lib/deps.db").sqlite_path(),
            Some(Path::new("/var/lib/deps.db"))
        );
        assert_eq!(
            Location::parse("postgres.db").sqlite_path(),
            Some(Path::new("postgres.db"))
        );
    }

    #[test]
    fn debug_and_messages_never_show_the_password() {
        let mut location = Location::parse("postgres://app:s3cret@db.test/deps");
        if let Location::Postgres { password, .. } = &mut location {
            *password = Some(SecretString::from("other"));
        }
        let shown = format!("{location:?} {}", location.shown());
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
        assert!(shown.contains("postgres://app@db.test/deps"), "{shown}");
    }
}
