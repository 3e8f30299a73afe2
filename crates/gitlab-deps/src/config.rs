//! Configuration: a TOML file merged under command-line flags and environment variables.
//!
//! Precedence is flag > environment > config file > default. Clap resolves the first two (every global
//! flag has an `env` fallback); the accessors of [`crate::cli::Context`] (`gitlab_url`, `token`,
//! `gitlab_options`, ...) fill what is still unset from the file. The API token and the webhook
//! secret have no flag of their own: their variables (`GITLAB_DEPS_TOKEN`,
//! `GITLAB_DEPS_WEBHOOK_SECRET`) are read there too, with [`secret_from_env`].
//!
//! Secrets (the API token, the webhook secret) are [`SecretString`]s from the moment they are read:
//! their `Debug` shows no text, and they are wiped from memory when dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use secrecy::SecretString;
use secrecy::zeroize::Zeroize;
use serde::Deserialize;
use url::Url;

use crate::discover::{Platform, PlatformError};

/// Everything that can go wrong while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// No GitLab URL was given anywhere.
    #[error(
        "no GitLab URL: pass --gitlab-url, set GITLAB_DEPS_URL, or put gitlab_url in the config file"
    )]
    MissingUrl,
    /// The GitLab URL does not parse.
    #[error("invalid GitLab URL {url:?}: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why it is wrong.
        reason: String,
    },
    /// No token was given anywhere.
    #[error(
        "no GitLab token: pass --token-file FILE, set GITLAB_DEPS_TOKEN, or put token_file in the config file"
    )]
    MissingToken,
    /// A secret file (API token, webhook secret) could not be read or is empty.
    #[error("cannot read the {what} file {path}: {reason}")]
    TokenFile {
        /// Which secret it holds ("GitLab API token", "webhook secret").
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A path pattern is not a valid glob.
    #[error("invalid path pattern {pattern:?} in {key}: {reason}")]
    Pattern {
        /// The config key holding it.
        key: &'static str,
        pattern: String,
        reason: String,
    },
    /// A duration setting does not parse.
    #[error("invalid duration {value:?} for {key}: {reason} (use e.g. \"30s\", \"5m\", \"1h\")")]
    Duration {
        key: &'static str,
        value: String,
        reason: String,
    },
    /// A `[scan] platforms` entry is not `os/arch[/variant]`, or the list is empty.
    #[error("invalid scan.platforms: {0}")]
    Platform(String),
    /// No database location could be determined.
    #[error("no data directory for the database: pass --db FILE|URL or set GITLAB_DEPS_DB")]
    NoDataDir,
}

/// The config file, as written by the user. Every key is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Base URL of the GitLab instance.
    pub gitlab_url: Option<String>,
    /// File holding the API token.
    pub token_file: Option<PathBuf>,
    /// SQLite database file, or a PostgreSQL URL.
    pub db: Option<crate::store::Location>,
    /// File holding the PostgreSQL password.
    pub db_password_file: Option<PathBuf>,
    /// Registry host override (`host[:port]`).
    pub registry: Option<String>,
    /// Parallel API requests (default 8).
    pub concurrency: Option<usize>,
    /// Timeout for one API request (default "30s").
    pub request_timeout: Option<String>,
    /// Log format: `auto`, `text` or `json`.
    pub log_format: Option<crate::logging::LogFormat>,
    /// Discovery settings.
    #[serde(default)]
    pub scan: ScanFileConfig,
    /// Orchestration settings.
    #[serde(default)]
    pub cascade: CascadeFileConfig,
    /// Server settings.
    #[serde(default)]
    pub serve: ServeFileConfig,
    /// Webhook settings.
    #[serde(default)]
    pub hooks: HooksFileConfig,
}

/// `[hooks]` in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksFileConfig {
    /// One group hook per group of `[scan] groups` instead of a hook on each project (GitLab
    /// Premium; on Free the projects keep their own hooks).
    #[serde(default)]
    pub group: bool,
}

/// `[scan]` in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanFileConfig {
    /// Groups scanned when `scan` is given none (empty: every visible project).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Only projects whose path matches one of these globs (empty: all).
    #[serde(default)]
    pub include: Vec<String>,
    /// Projects whose path matches one of these globs are skipped.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Dockerfile-like files read in each project (default `Dockerfile`, `Containerfile`).
    pub dockerfiles: Option<Vec<String>>,
    /// Per-project `ARG` overrides: keys are project path globs, values a table of ARG values.
    #[serde(default)]
    pub build_args: BTreeMap<String, BTreeMap<String, String>>,
    /// How long after a project's `last_activity_at` the scanner still re-checks its head commit
    /// (GitLab updates that field at most once an hour; default "75m").
    pub activity_grace: Option<String>,
    /// Target platforms Dockerfiles are evaluated for (`os/arch[/variant]`, default
    /// `["linux/amd64"]`); the images of every platform are dependencies.
    pub platforms: Option<Vec<String>>,
}

/// `[cascade]` in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeFileConfig {
    /// At most this many pipelines created by the tool run at once (default 10).
    pub max_running: Option<usize>,
    /// At most this many pipelines created per minute (default: unlimited).
    pub max_per_minute: Option<u32>,
    /// Projects matching these globs are never triggered.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Poll a created pipeline that has no final status after this long (default "10m").
    pub reconcile_after: Option<String>,
}

/// `[serve]` in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFileConfig {
    /// Listen address (default 127.0.0.1:8080).
    pub listen: Option<String>,
    /// URL under which GitLab reaches this service.
    pub public_url: Option<String>,
    /// File holding the webhook secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// Largest accepted webhook body in bytes (default 5 MiB: pipeline events of pipelines with many
    /// jobs are large).
    pub max_body_bytes: Option<usize>,
    /// How often the whole graph is rescanned (default "6h"; "0s" disables).
    pub rescan_every: Option<String>,
    /// Time a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open (default "10s").
    pub header_timeout: Option<String>,
    /// Time a client has to send a whole webhook body (default "15s").
    pub body_timeout: Option<String>,
    /// HTTP connections served at once; more wait until one closes (default 512, lowered to fit
    /// the file descriptor limit).
    pub max_connections: Option<usize>,
    /// Webhook body bytes held by all requests at once (default 32 MiB, at least
    /// `max_body_bytes`).
    pub max_body_bytes_in_flight: Option<usize>,
    /// How often to ask GitLab for default-branch successes whose webhook never arrived (default
    /// "5m"; "0s": only at start-up and after failures to record a webhook).
    pub catch_up_interval: Option<String>,
    /// GitLab requests that overdue polls and catch-up may spend per minute on average
    /// (default 50).
    pub recovery_requests_per_minute: Option<u32>,
    /// File holding a token that reading the status pages and the API requires.
    pub read_token_file: Option<PathBuf>,
    /// A request header set by an authenticating reverse proxy: requests carrying it may read.
    pub trusted_user_header: Option<String>,
    /// File where deliveries are kept while the database is busy or unreachable (default: next
    /// to a SQLite database file; else `gitlab-deps.spool` in `$STATE_DIRECTORY` or the data
    /// directory).
    pub spool: Option<PathBuf>,
    /// How long the engine's lease lasts without renewal (default "3s"): with several replicas
    /// on one database, a failed leader is replaced within about this long.
    pub lease_ttl: Option<String>,
    /// A name put in front of this replica's holder id (shown as the leader).
    pub replica_name: Option<String>,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// The default config file location (`$XDG_CONFIG_HOME/gitlab-deps/config.toml` on Linux), if any.
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "gitlab-deps")
            .map(|d| d.config_dir().join("config.toml"))
    }
}

/// Parses a human duration such as `30s` or `1h 15m`.
pub fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| ConfigError::Duration {
        key,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// Normalises a GitLab base URL: must be http(s); a trailing slash is added so joins keep a
/// relative URL root (`https://example.org/gitlab/`). Credentials in the URL are refused: the URL
/// shows in error messages and logs, and the token belongs in a file.
pub fn parse_gitlab_url(raw: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        url: without_userinfo(raw.trim()),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("only http and https are supported"));
    }
    if url.host_str().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "it must not contain credentials: put the token in --token-file or GITLAB_DEPS_TOKEN",
        ));
    }
    url.set_query(None);
    url.set_fragment(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// `raw` with anything between `://` and an `@` in the authority replaced by `***`, so an error
/// message about a URL never repeats a password in it, even when the URL does not parse.
fn without_userinfo(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://").map(|i| i + 3) else {
        return raw.to_owned();
    };
    let rest = &raw[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &raw[..scheme_end], &rest[at..]),
        None => raw.to_owned(),
    }
}

/// Reads a secret (token, webhook secret) from a file: surrounding whitespace trimmed, must not be empty.
/// Error messages name the secret (`what`: "GitLab API token", "webhook secret") and the file,
/// never its content.
pub fn read_secret_file(path: &Path, what: &'static str) -> Result<SecretString, ConfigError> {
    let mut text = std::fs::read_to_string(path).map_err(|e| ConfigError::TokenFile {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let secret = SecretString::from(text.trim());
    let empty = text.trim().is_empty();
    text.zeroize();
    if empty {
        return Err(ConfigError::TokenFile {
            what,
            path: path.to_owned(),
            reason: "the file is empty".into(),
        });
    }
    Ok(secret)
}

/// What [`read_secret_file`] calls the API token.
pub const API_TOKEN: &str = "GitLab API token";
/// What [`read_secret_file`] calls the database password.
pub const DB_PASSWORD: &str = "database password";
/// What [`read_secret_file`] calls the webhook secret.
pub const WEBHOOK_SECRET: &str = "webhook secret";

/// A secret from an environment variable, trimmed; `None` when unset, not Unicode or blank.
pub fn secret_from_env(name: &str) -> Option<SecretString> {
    let mut value = std::env::var(name).ok()?;
    let secret = (!value.trim().is_empty()).then(|| SecretString::from(value.trim()));
    value.zeroize();
    secret
}

/// A set of project path globs (`apps/*`, `legacy/**`). `*` does not cross `/`; `**` does.
#[derive(Debug, Clone)]
pub struct PathPatterns {
    set: GlobSet,
    empty: bool,
}

impl Default for PathPatterns {
    /// No patterns: matches nothing.
    fn default() -> Self {
        Self {
            set: GlobSet::empty(),
            empty: true,
        }
    }
}

impl PathPatterns {
    /// Compiles the patterns; `key` names the setting in errors.
    pub fn new(key: &'static str, patterns: &[String]) -> Result<Self, ConfigError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| ConfigError::Pattern {
                    key,
                    pattern: pattern.clone(),
                    reason: e.kind().to_string(),
                })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| ConfigError::Pattern {
            key,
            pattern: patterns.join(", "),
            reason: e.to_string(),
        })?;
        Ok(Self {
            set,
            empty: patterns.is_empty(),
        })
    }

    /// True when no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// True when `path` matches one of the patterns.
    pub fn matches(&self, path: &str) -> bool {
        !self.empty && self.set.is_match(path)
    }
}

/// Per-project `ARG` overrides from `[scan.build_args]`.
#[derive(Debug, Clone, Default)]
pub struct BuildArgs {
    rules: Vec<(Glob, globset::GlobMatcher, BTreeMap<String, String>)>,
    table: BTreeMap<String, BTreeMap<String, String>>,
}

impl BuildArgs {
    /// Compiles the `[scan.build_args]` table. Globs apply in order of the key text, so a more
    /// specific exact path (applied last, see [`BuildArgs::for_project`]) wins.
    pub fn new(table: &BTreeMap<String, BTreeMap<String, String>>) -> Result<Self, ConfigError> {
        let mut rules = Vec::new();
        for (pattern, args) in table {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| ConfigError::Pattern {
                    key: "scan.build_args",
                    pattern: pattern.clone(),
                    reason: e.kind().to_string(),
                })?;
            let matcher = glob.compile_matcher();
            rules.push((glob, matcher, args.clone()));
        }
        // Exact paths after globs, so they override them.
        rules.sort_by_key(|(glob, _, _)| {
            let g = glob.glob();
            (g.contains(['*', '?', '[', '{']) as u8 ^ 1, g.to_owned())
        });
        Ok(Self {
            rules,
            table: table.clone(),
        })
    }

    /// A stable text of the settings, to notice when they change between scans.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(&self.table).unwrap_or_default()
    }

    /// The ARG overrides for one project.
    pub fn for_project(&self, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (_, matcher, args) in &self.rules {
            if matcher.is_match(path) {
                out.extend(args.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out
    }
}

/// Discovery settings after merging.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// Groups scanned when the command names none.
    pub groups: Vec<String>,
    /// Only these projects (empty: all).
    pub include: PathPatterns,
    /// Never these projects.
    pub exclude: PathPatterns,
    /// Dockerfile-like files to read.
    pub dockerfiles: Vec<String>,
    /// ARG overrides.
    pub build_args: BuildArgs,
    /// See [`ScanFileConfig::activity_grace`].
    pub activity_grace: Duration,
    /// See [`ScanFileConfig::platforms`]; never empty.
    pub platforms: Vec<Platform>,
}

impl ScanSettings {
    /// Builds the settings from the file section.
    pub fn from_file(file: &ScanFileConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            groups: file.groups.clone(),
            include: PathPatterns::new("scan.include", &file.include)?,
            exclude: PathPatterns::new("scan.exclude", &file.exclude)?,
            dockerfiles: file
                .dockerfiles
                .clone()
                .unwrap_or_else(|| vec!["Dockerfile".into(), "Containerfile".into()]),
            build_args: BuildArgs::new(&file.build_args)?,
            activity_grace: match &file.activity_grace {
                Some(v) => parse_duration("scan.activity_grace", v)?,
                None => Duration::from_secs(75 * 60),
            },
            platforms: parse_platforms(file.platforms.as_deref())?,
        })
    }

    /// A stable text of the settings that change what a Dockerfile yields besides
    /// `build_args`, to notice when they change between scans.
    pub fn platforms_fingerprint(&self) -> String {
        self.platforms
            .iter()
            .map(Platform::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True when the project is in scope by the include/exclude patterns.
    pub fn wants(&self, path: &str) -> bool {
        (self.include.is_empty() || self.include.matches(path)) && !self.exclude.matches(path)
    }
}

/// Parses `[scan] platforms`; `None` gives the default, `linux/amd64`.
fn parse_platforms(values: Option<&[String]>) -> Result<Vec<Platform>, ConfigError> {
    let Some(values) = values else {
        return Ok(vec![Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        }]);
    };
    if values.is_empty() {
        return Err(ConfigError::Platform(
            "the list is empty: give at least one platform, e.g. [\"linux/amd64\"]".into(),
        ));
    }
    let mut platforms: Vec<Platform> = Vec::with_capacity(values.len());
    for value in values {
        let platform: Platform = value
            .parse()
            .map_err(|e: PlatformError| ConfigError::Platform(e.to_string()))?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    Ok(platforms)
}

/// The default delivery spool: next to the SQLite database file `db` (its name with `.spool`
/// appended); for a database that is not a file, `gitlab-deps.spool` in `state_directory` (systemd's
/// `$STATE_DIRECTORY`, its first entry when it lists several) or else in the data directory of
/// the default database.
pub fn default_spool_path(
    db: Option<&Path>,
    state_directory: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, ConfigError> {
    if let Some(db) = db {
        let mut name = db.as_os_str().to_owned();
        name.push(".spool");
        return Ok(name.into());
    }
    let state = state_directory
        .and_then(|dirs| std::env::split_paths(dirs).next())
        .filter(|dir| !dir.as_os_str().is_empty());
    let dir = match state {
        Some(dir) => dir,
        None => default_db_path()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or(ConfigError::NoDataDir)?,
    };
    Ok(dir.join("gitlab-deps.spool"))
}

/// The default database file: `$XDG_DATA_HOME/gitlab-deps/gitlab-deps.db` on Linux.
pub fn default_db_path() -> Result<PathBuf, ConfigError> {
    directories::ProjectDirs::from("", "", "gitlab-deps")
        .map(|d| d.data_dir().join("gitlab-deps.db"))
        .ok_or(ConfigError::NoDataDir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn parses_a_full_config() {
        let cfg = FileConfig::parse(
            r#"
gitlab_url = "https://git.example.org"
token_file = "/etc/gitlab-deps/token"
concurrency = 16
[scan]
groups = ["images", "apps"]
exclude = ["apps/sandbox/**"]
dockerfiles = ["Dockerfile", "docker/Dockerfile"]
[scan.build_args."apps/*"]
RUBY = "3.3"
[scan.build_args."apps/web"]
RUBY = "3.4"
[cascade]
max_running = 4
max_per_minute = 30
[serve]
listen = "0.0.0.0:8080"
"#,
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(cfg.concurrency, Some(16));
        let scan = ScanSettings::from_file(&cfg.scan).unwrap();
        assert!(scan.wants("apps/web"));
        assert!(!scan.wants("apps/sandbox/deep/x"));
        assert_eq!(scan.dockerfiles.len(), 2);
        assert_eq!(scan.build_args.for_project("apps/web")["RUBY"], "3.4");
        assert_eq!(scan.build_args.for_project("apps/api")["RUBY"], "3.3");
        assert!(scan.build_args.for_project("images/base").is_empty());
    }

    #[test]
    fn platforms_default_parse_and_reject() {
        let scan = |toml: &str| {
            let cfg = FileConfig::parse(toml, Path::new("c.toml")).unwrap();
            ScanSettings::from_file(&cfg.scan)
        };
        assert_eq!(scan("").unwrap().platforms_fingerprint(), "linux/amd64");
        let s = scan("[scan]\nplatforms = [\"linux/amd64\", \"Linux/ARM64\", \"linux/arm/v7\", \"linux/amd64\"]")
            .unwrap();
        assert_eq!(
            s.platforms_fingerprint(),
            "linux/amd64,linux/arm64,linux/arm/v7"
        );
        for bad in [
            "[]",
            "[\"linux\"]",
            "[\"linux/\"]",
            "[\"a/b/c/d\"]",
            "[\"linux/amd 64\"]",
        ] {
            let err = scan(&format!("[scan]\nplatforms = {bad}")).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid scan.platforms"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_spool_goes_next_to_a_database_file_else_into_the_state_directory() {
        let db = Path::new("/var/lib/gitlab-deps/deps.db");
        assert_eq!(
            default_spool_path(Some(db), Some("/ignored".as_ref())).unwrap(),
            Path::new("/var/lib/gitlab-deps/deps.db.spool")
        );
        assert_eq!(
            default_spool_path(None, Some("/var/lib/gd:/var/lib/other".as_ref())).unwrap(),
            Path::new("/var/lib/gd/gitlab-deps.spool")
        );
        let fallback = default_spool_path(None, None).unwrap();
        assert_eq!(
            fallback.parent(),
            default_db_path().unwrap().parent(),
            "the default database's directory"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = FileConfig::parse("gitlab_ur = \"x\"", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("c.toml"), "{err}");
    }

    #[test]
    fn star_does_not_cross_slashes() {
        let p = PathPatterns::new("x", &["apps/*".into()]).unwrap();
        assert!(p.matches("apps/web"));
        assert!(!p.matches("apps/sub/web"));
    }

    #[test]
    fn gitlab_url_keeps_relative_root() {
        let url = parse_gitlab_url("https://example.org/gitlab").unwrap();
        assert_eq!(url.as_str(), "https://example.org/gitlab/");
        assert!(parse_gitlab_url("ftp://x").is_err());
        assert!(parse_gitlab_url("not a url").is_err());
    }

    #[test]
    fn gitlab_url_with_credentials_is_refused_without_repeating_them() {
        for raw in [
            "https://user:hunter2@example.org/",
            "https://hunter2@example.org",
            "https://oauth2:hunter2@exa mple.org/",
            "ftp://u:hunter2@example.org/",
        ] {
            let err = parse_gitlab_url(raw).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{raw}: {err}");
            assert!(
                err.contains("example.org") || err.contains("exa mple"),
                "{err}"
            );
        }
        assert_eq!(
            without_userinfo("https://a:b@h/x@y"),
            "https://***@h/x@y".to_owned()
        );
        assert_eq!(without_userinfo("https://h/x@y"), "https://h/x@y");
    }

    #[test]
    fn secret_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "  abc\n").unwrap();
        assert_eq!(
            read_secret_file(&f, API_TOKEN).unwrap().expose_secret(),
            "abc"
        );
        assert!(!format!("{:?}", read_secret_file(&f, API_TOKEN).unwrap()).contains("abc"));
        std::fs::write(&f, "\n").unwrap();
        // The message says which secret the empty file was meant to hold.
        let empty = read_secret_file(&f, WEBHOOK_SECRET)
            .unwrap_err()
            .to_string();
        assert!(
            empty.starts_with("cannot read the webhook secret file "),
            "{empty}"
        );
        assert!(empty.ends_with(": the file is empty"), "{empty}");
        assert!(read_secret_file(&dir.path().join("missing"), API_TOKEN).is_err());
    }
}
