//! Resolves global settings (flag > env > config file > default) and opens what commands need.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use secrecy::SecretString;
use url::Url;

use super::GlobalArgs;
use crate::config::{self, FileConfig, ScanSettings};
use crate::gitlab::{GitLab, GitLabOptions};
use crate::graph::DepGraph;
use crate::store::{self, DiscoveryStore, Location, Store};

/// Settings shared by the commands.
pub struct Context {
    /// The command-line globals.
    pub args: GlobalArgs,
    /// The config file (empty when there is none).
    pub file: FileConfig,
}

impl Context {
    /// Reads the config file named by `--config`/`GITLAB_DEPS_CONFIG`, or the default one if it exists.
    pub fn new(args: GlobalArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => match FileConfig::default_path().filter(|p| p.is_file()) {
                Some(path) => FileConfig::load(&path)?,
                None => FileConfig::default(),
            },
        };
        Ok(Self { args, file })
    }

    /// The database: `--db`/`GITLAB_DEPS_DB`, else the config's `db`, else the default SQLite
    /// file; a PostgreSQL URL gets the password from `--db-password-file`/
    /// `GITLAB_DEPS_DB_PASSWORD_FILE`, else the config's `db_password_file`, when one is set.
    pub fn db_location(&self) -> anyhow::Result<Location> {
        let mut location = match self.args.db.clone().or_else(|| self.file.db.clone()) {
            Some(location) => location,
            None => Location::Sqlite(config::default_db_path()?),
        };
        if let Location::Postgres { password, .. } = &mut location {
            let file = self
                .args
                .db_password_file
                .as_ref()
                .or(self.file.db_password_file.as_ref());
            if let Some(file) = file {
                *password = Some(config::read_secret_file(file, config::DB_PASSWORD)?);
            }
        }
        Ok(location)
    }

    /// The delivery spool: `explicit` (flag or config), else next to the database file (else in
    /// the state directory, for a database that is not a file).
    pub fn spool_path(&self, explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
        if let Some(path) = explicit.or_else(|| self.file.serve.spool.clone()) {
            return Ok(path);
        }
        let db = self.db_location()?;
        let state = std::env::var_os("STATE_DIRECTORY");
        let path = config::default_spool_path(db.sqlite_path(), state.as_deref())?;
        // For a database that is not a file the default lies in the data directory, which no
        // SQLite file has created yet on a fresh machine.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("cannot create the spool's directory {}", dir.display())
            })?;
        }
        Ok(path)
    }

    /// Opens the store.
    pub async fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(store::open(&self.db_location()?).await?)
    }

    /// The GitLab base URL.
    pub fn gitlab_url(&self) -> anyhow::Result<Url> {
        let raw = self
            .args
            .gitlab_url
            .clone()
            .or_else(|| self.file.gitlab_url.clone())
            .ok_or(config::ConfigError::MissingUrl)?;
        Ok(config::parse_gitlab_url(&raw)?)
    }

    /// The API token: `--token-file`, else `GITLAB_DEPS_TOKEN`, else the config's `token_file`.
    pub fn token(&self) -> anyhow::Result<SecretString> {
        if let Some(path) = &self.args.token_file {
            return Ok(config::read_secret_file(path, config::API_TOKEN)?);
        }
        if let Some(token) = config::secret_from_env("GITLAB_DEPS_TOKEN") {
            return Ok(token);
        }
        if let Some(path) = &self.file.token_file {
            return Ok(config::read_secret_file(path, config::API_TOKEN)?);
        }
        Err(config::ConfigError::MissingToken.into())
    }

    /// The registry host override.
    pub fn registry(&self) -> Option<String> {
        self.args
            .registry
            .clone()
            .or_else(|| self.file.registry.clone())
    }

    /// A GitLab client.
    pub fn gitlab(&self) -> anyhow::Result<GitLab> {
        Ok(GitLab::new(self.gitlab_options()?)?)
    }

    /// How to reach GitLab, resolved from flags, environment and config file.
    pub fn gitlab_options(&self) -> anyhow::Result<GitLabOptions> {
        let mut options = GitLabOptions::new(self.gitlab_url()?, self.token()?);
        if let Some(v) = &self.file.request_timeout {
            options.timeout = config::parse_duration("request_timeout", v)?;
        }
        if let Some(n) = self.args.concurrency.or(self.file.concurrency) {
            anyhow::ensure!(n > 0, "--concurrency must be at least 1");
            options.concurrency = n;
        }
        Ok(options)
    }

    /// Discovery settings.
    pub fn scan_settings(&self) -> anyhow::Result<ScanSettings> {
        Ok(ScanSettings::from_file(&self.file.scan)?)
    }

    /// The stored graph.
    pub async fn graph(&self, store: &dyn DiscoveryStore) -> anyhow::Result<DepGraph> {
        crate::store::load_graph(store)
            .await
            .context("cannot load the dependency graph")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::hooks_cmd::webhook_secret;
    use crate::hooks::{SyncOptions, hook_spec};
    use crate::service::HttpOptions;
    use secrecy::ExposeSecret;

    /// Every settings struct a secret passes through, resolved from files as the commands do,
    /// formats without the secret's text.
    #[test]
    fn debug_output_of_resolved_settings_shows_no_secret() {
        const TOKEN: &str = "glpat-token-sentinel-4711";
        const SECRET: &str = "webhook-secret-sentinel-0815";
        let dir = tempfile::tempdir().unwrap();
        let (token_file, secret_file, config) = (
            dir.path().join("token"),
            dir.path().join("secret"),
            dir.path().join("config.toml"),
        );
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
        std::fs::write(
            &config,
            format!(
                "gitlab_url = \"https://git.example.org\"\ntoken_file = {token_file:?}\n\
                 [serve]\nwebhook_secret_file = {secret_file:?}\n"
            ),
        )
        .unwrap();
        let ctx = Context::new(GlobalArgs {
            config: Some(config),
            token_file: Some(token_file),
            ..GlobalArgs::default()
        })
        .unwrap();

        let options = ctx.gitlab_options().unwrap();
        let secret = webhook_secret(&ctx, ctx.file.serve.webhook_secret_file.as_ref())
            .unwrap()
            .unwrap();
        // They were read: the test would pass vacuously otherwise.
        assert_eq!(options.token.expose_secret(), TOKEN);
        assert_eq!(secret.expose_secret(), SECRET);

        let sync = SyncOptions {
            url: "https://deps.example/hooks/gitlab".into(),
            secret: secret.clone(),
            rotate_secret: false,
            dry_run: false,
            groups: Vec::new(),
        };
        let spec = hook_spec(&sync.url, &sync.secret, Some("main"));
        let http = HttpOptions {
            webhook_secret: Some(secret),
            max_body_bytes: 1,
            ..HttpOptions::default()
        };
        let printed = [
            format!("{:?}", ctx.args),
            format!("{:?}", ctx.file),
            format!("{options:?}"),
            format!("{options:#?}"),
            format!("{sync:?}"),
            format!("{spec:?}"),
            format!("{http:?}"),
        ];
        for text in printed {
            assert!(!text.contains(TOKEN), "token in {text}");
            assert!(!text.contains(SECRET), "webhook secret in {text}");
            assert!(!text.contains("sentinel"), "part of a secret in {text}");
        }
        // The hook body is the one place the webhook secret is written out.
        assert_eq!(serde_json::to_value(&spec).unwrap()["token"], SECRET);
    }
}
