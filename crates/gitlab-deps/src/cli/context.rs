//! Resolves global settings (flag > env > config file > default) and opens what commands need.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use url::Url;

use super::GlobalArgs;
use crate::config::{self, FileConfig, ScanSettings};
use crate::gitlab::{GitLab, GitLabOptions, RetryPolicy};
use crate::graph::DepGraph;
use crate::store::{SqliteStore, Store};

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

    /// The database file.
    pub fn db_path(&self) -> anyhow::Result<PathBuf> {
        match self.args.db.clone().or_else(|| self.file.db.clone()) {
            Some(p) => Ok(p),
            None => Ok(config::default_db_path()?),
        }
    }

    /// Opens the store.
    pub fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let path = self.db_path()?;
        Ok(Arc::new(SqliteStore::open(&path)?))
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
    pub fn token(&self) -> anyhow::Result<String> {
        if let Some(path) = &self.args.token_file {
            return Ok(config::read_secret_file(path)?);
        }
        if let Ok(token) = std::env::var("GITLAB_DEPS_TOKEN")
            && !token.trim().is_empty()
        {
            return Ok(token.trim().to_owned());
        }
        if let Some(path) = &self.file.token_file {
            return Ok(config::read_secret_file(path)?);
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
        let timeout = match &self.file.request_timeout {
            Some(v) => config::parse_duration("request_timeout", v)?,
            None => Duration::from_secs(30),
        };
        let concurrency = self.args.concurrency.or(self.file.concurrency).unwrap_or(8);
        anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
        Ok(GitLab::new(GitLabOptions {
            base_url: self.gitlab_url()?,
            token: self.token()?,
            concurrency,
            timeout,
            retry: RetryPolicy::default(),
        })?)
    }

    /// Discovery settings.
    pub fn scan_settings(&self) -> anyhow::Result<ScanSettings> {
        Ok(ScanSettings::from_file(&self.file.scan)?)
    }

    /// The stored graph.
    pub fn graph(&self, store: &dyn Store) -> anyhow::Result<DepGraph> {
        crate::scan::load_graph(store).context("cannot load the dependency graph")
    }
}
