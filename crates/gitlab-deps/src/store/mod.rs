//! Persistence behind two async traits, implemented by the embedded [`SqliteStore`] and by
//! [`PostgresStore`] for highly available deployments ([`open`] picks one by [`Location`]):
//! [`DiscoveryStore`] (projects, references, the
//! derived graph, hook fingerprints) and [`OrchestrationStore`] (event log, cascade state, activity),
//! both over [`MetaStore`]; [`Store`] is both. Callers take the half they need. The contract each
//! method keeps is in `docs/store.md`, and [`conformance`] tests it against any implementation.
//!
//! The discovery data model: per project, its listing metadata, the raw references found in its
//! files (`refs`) and its warnings, replaced atomically per project. The edges are *derived* from all
//! projects' references by [`crate::scan::resolve`] and replaced in one transaction at the end of a
//! scan, so a reader never sees a half-written graph and an interrupted scan loses nothing. A push
//! re-derives one project's part with [`DiscoveryStore::resolve_project`] instead.
//!
//! Resolves never go backwards: each project's references carry a version, bumped whenever they
//! (or the project's path or registry prefix) change, and the store counts changes to the catalog
//! of paths and prefixes that references resolve against. A whole resolve writes only if the
//! catalog is still the one it read, and leaves alone the projects whose version moved since; a
//! one-project resolve reads and writes in one transaction.

#[cfg(any(test, feature = "store-conformance"))]
pub mod conformance;
mod graph;
mod location;
mod migrations;
pub mod postgres;
mod sqlite;

pub use graph::{graph_of, load_graph};
pub use location::{Location, open};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cascade::{Cascade, Counters, Input, ProjectState};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open database {path}: {reason}")]
    Open { path: String, reason: String },
    /// The database was written by a newer gitlab-deps.
    #[error(
        "database {path} has schema version {found}, newer than this gitlab-deps understands ({supported}): upgrade gitlab-deps"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL query failed.
    #[error("database error: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had (the server is unreachable, refuses the login, or
    /// every pooled connection stayed busy).
    #[error("no connection to database {database}: {reason}")]
    Pool { database: String, reason: String },
    /// Stored JSON did not decode.
    #[error("corrupt stored value: {0}")]
    Json(#[from] serde_json::Error),
    /// The thread running a database operation stopped (it panicked, or the runtime is shutting
    /// down).
    #[error("database worker stopped: {0}")]
    Worker(String),
    /// A write was fenced off: another replica took the leadership (a newer lease epoch) since
    /// this one's lease was granted. Nothing was written.
    #[error(
        "leadership lost: lease epoch {held} was superseded by epoch {current}; this replica no longer runs the engine"
    )]
    Fenced { held: i64, current: i64 },
}

/// A project as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    /// GitLab id (stable across renames).
    pub id: u64,
    pub path: String,
    pub default_branch: Option<String>,
    /// Web address.
    pub web_url: String,
    /// Image prefix on the registry, as GitLab reports it (before any override).
    pub registry_prefix: Option<String>,
    /// `last_activity_at` from the listing.
    pub last_activity_at: Option<String>,
    /// Head commit of the default branch when files were last read by an older version. Scans
    /// now detect changes by blob ids (`project_files`) and keep this value as it was.
    pub head_sha: Option<String>,
    /// When the head commit was last verified (Unix ms).
    pub checked_at_ms: Option<i64>,
}

/// What kind of reference a project's file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    /// An image reference from a Dockerfile-like file (normalised).
    Image,
    /// A project path from `.gitlab-deps`.
    Project,
}

impl RefKind {
    fn as_str(self) -> &'static str {
        match self {
            RefKind::Image => "image",
            RefKind::Project => "project",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "project" {
            RefKind::Project
        } else {
            RefKind::Image
        }
    }
}

/// One upstream reference found in a project's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Image or project.
    pub kind: RefKind,
    /// The file it was found in.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// The normalised image or the project path.
    pub value: String,
}

/// A problem found while scanning, kept for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub project: String,
    /// The file, when the problem is in one.
    pub file: Option<String>,
    /// 1-based line, when known.
    pub line: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => {
                write!(f, "{}: {file}:{line}: {}", self.project, self.message)
            }
            (Some(file), None) => write!(f, "{}: {file}: {}", self.project, self.message),
            _ => write!(f, "{}: {}", self.project, self.message),
        }
    }
}

/// The result of reading one project's files.
#[derive(Debug, Clone)]
pub struct ProjectScan {
    /// The project's metadata, head commit included.
    pub record: ProjectRecord,
    /// References found.
    pub refs: Vec<Reference>,
    /// Problems found in its files.
    pub warnings: Vec<Warning>,
    /// The dependency files present, each with its git blob id (replaced with the references).
    pub files: FileBlobs,
}

/// Dependency file path -> git blob id (a hash of its content).
pub type FileBlobs = std::collections::BTreeMap<String, String>;

/// A dependency edge: `downstream` is built on `upstream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// The project depended on.
    pub upstream: String,
    /// The dependent project.
    pub downstream: String,
    /// Where it comes from (`Dockerfile:3`, `.gitlab-deps:2`).
    pub via: String,
}

/// An image a project uses that no project on the instance builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct External {
    pub project: String,
    /// The normalised image.
    pub image: String,
}

/// The derived graph data, replaced as a whole by each resolution.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Edges between projects.
    pub edges: Vec<Edge>,
    /// External images per project.
    pub externals: Vec<External>,
    /// Warnings found while resolving (unknown projects in `.gitlab-deps`).
    pub warnings: Vec<Warning>,
}

/// What a whole resolve read, and the versions its result is valid for.
#[derive(Debug, Clone, Default)]
pub struct ResolveInput {
    /// Every project, by path.
    pub projects: Vec<ProjectRecord>,
    /// Every reference with its project's path, by path, file, line.
    pub references: Vec<(String, Reference)>,
    /// The versions read with them.
    pub versions: ResolveVersions,
}

/// The versions a whole resolve read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveVersions {
    /// Per project id: its path and references version.
    pub projects: HashMap<u64, (String, i64)>,
    /// The catalog version (paths and registry prefixes of all projects).
    pub catalog: i64,
}

/// What became of a whole resolve's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// Written; the projects listed (by path) were left alone because their references changed
    /// after the read (a newer resolve of theirs stands, or will).
    Written {
        /// Projects whose newer data was kept.
        kept: Vec<String>,
    },
    /// Nothing written: projects were added, removed, renamed or got another registry prefix
    /// after the read, so the result may resolve references against a stale catalog.
    CatalogMoved,
}

/// How image prefixes of projects are derived, for indexed look-ups (mirrors
/// [`crate::scan::registry_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRule {
    /// Whether GitLab's reported prefix counts (false under a registry override).
    pub reported: bool,
    /// The normalised base of derived prefixes `base/lowercase path`: the override, or
    /// `registry.<GitLab host>`.
    pub base: String,
}

/// Indexed look-ups for resolving one project, answered inside the store's transaction.
pub trait ResolveLookup {
    /// The project whose path equals `path` ignoring ASCII case (the first by path if several).
    fn project_by_path(&mut self, path: &str) -> Result<Option<String>, StoreError>;
    /// The project whose normalised image prefix is exactly `prefix` (the first by path if several).
    fn project_by_prefix(&mut self, prefix: &str) -> Result<Option<String>, StoreError>;
}

/// Derives one project's resolution from its path and references, with look-ups. Owned and
/// `Send`, because a store runs it wherever its transaction lives (SQLite: a blocking thread).
pub type DeriveFn = Box<
    dyn FnMut(&str, &[Reference], &mut dyn ResolveLookup) -> Result<Resolution, StoreError>
        + Send
        + 'static,
>;

/// The stored orchestration state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredCascade {
    pub counters: Counters,
    /// `(project, state)` pairs, by project.
    pub projects: Vec<(String, ProjectState)>,
}

/// A delivery to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Deduplication key (`Idempotency-Key`, else the event UUID).
    pub delivery_key: String,
    /// The `X-Gitlab-Event` header.
    pub kind: String,
    /// The raw JSON body.
    pub body: String,
}

/// Activity lines a store keeps (older ones are dropped as new ones arrive).
pub(crate) const ACTIVITY_STORED: i64 = 10_000;

impl NewEvent {
    /// An internal or operator input as the event log records it (an [`INPUT_EVENT`]).
    pub fn input(key: &str, input: &Input) -> Result<Self, serde_json::Error> {
        Ok(Self {
            delivery_key: key.to_owned(),
            kind: INPUT_EVENT.to_owned(),
            body: serde_json::to_string(input)?,
        })
    }
}

/// Lines for the activity log shown on the status page, all stamped with one time.
#[derive(Debug, Clone, Copy)]
pub struct Activity<'a> {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The lines, oldest first.
    pub lines: &'a [String],
}

impl Activity<'_> {
    /// No lines.
    pub const NONE: Activity<'static> = Activity {
        at_ms: 0,
        lines: &[],
    };
}

/// A durable record of one webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    /// The `X-Gitlab-Event` header.
    pub kind: String,
    /// The raw JSON body.
    pub body: String,
}

/// The engine's leadership among replicas sharing one database, as granted by
/// [`OrchestrationStore::acquire_lease`]. The epoch grows with every grant, so a write fenced with
/// an older epoch is refused ([`StoreError::Fenced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it: unique per process start (host, pid, a random part).
    pub holder: String,
    /// Grant number, strictly increasing over the database's life.
    pub epoch: i64,
}

/// The current lease as every replica can read it (for `/readyz` and the status page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub holder: String,
    pub epoch: i64,
    /// Milliseconds until it expires by the database's clock (negative: expired, free to take).
    pub expires_in_ms: i64,
}

/// Event-log kind of an internal or operator input: the body is a serialized [`Input`].
pub const INPUT_EVENT: &str = "gitlab-deps/input";

/// Small key/value settings, shared by both halves (scan stamps, instance URLs, hook keys).
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// A small key/value setting.
    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a key/value setting.
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
}

/// The discovery half: projects, their references and file blobs, the derived graph (edges,
/// externals, warnings) and webhook fingerprints. Every method is atomic; see `docs/store.md` for
/// the guarantees each must give.
#[async_trait]
pub trait DiscoveryStore: MetaStore {
    /// Every known project, by path.
    async fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError>;
    /// One project by GitLab id.
    async fn project(&self, id: u64) -> Result<Option<ProjectRecord>, StoreError>;
    /// Replaces the data of each project (metadata, references, file warnings, file blobs), all in
    /// one transaction, and bumps each project's references version.
    async fn save_scans(&self, scans: &[ProjectScan]) -> Result<(), StoreError>;
    /// Updates listing metadata (path, branch, URLs, activity, checked time) without touching references.
    async fn update_records(&self, records: &[ProjectRecord]) -> Result<(), StoreError>;
    /// Forgets projects (gone, archived, emptied, or excluded) with everything they own.
    async fn remove_projects(&self, ids: &[u64]) -> Result<(), StoreError>;
    /// The stored dependency-file blob ids of every project.
    async fn file_blobs(&self) -> Result<HashMap<u64, FileBlobs>, StoreError>;
    /// The stored dependency-file blob ids of one project.
    async fn project_file_blobs(&self, id: u64) -> Result<FileBlobs, StoreError>;
    /// One project's stored references and file warnings, in the order saved.
    async fn project_findings(&self, id: u64)
    -> Result<(Vec<Reference>, Vec<Warning>), StoreError>;
    /// Every project's references, with the project's path, by path, file, line.
    async fn references(&self) -> Result<Vec<(String, Reference)>, StoreError>;
    /// Replaces the derived graph in one transaction, unconditionally.
    async fn replace_resolution(&self, resolution: &Resolution) -> Result<(), StoreError>;
    /// Every project and reference, with their versions, read in one transaction.
    async fn resolve_input(&self) -> Result<ResolveInput, StoreError>;
    /// Replaces the derived graph in one transaction if the catalog is still the one `read`, and
    /// keeps the stored data of projects whose references changed since.
    async fn replace_resolution_from(
        &self,
        resolution: &Resolution,
        read: &ResolveVersions,
    ) -> Result<ReplaceOutcome, StoreError>;
    /// Re-derives one project's part of the graph in one transaction: reads its path and
    /// references, calls `derive` (whose look-ups see the same transaction), and replaces the
    /// project's upstream edges, externals and resolve warnings with the result. No other writer
    /// may change projects or references between the read and the write. `None` when the project
    /// is not stored.
    async fn resolve_project(
        &self,
        id: u64,
        rule: &PrefixRule,
        derive: DeriveFn,
    ) -> Result<Option<Resolution>, StoreError>;
    /// The edges into one project (its upstreams), by upstream.
    async fn upstream_edges(&self, downstream: &str) -> Result<Vec<Edge>, StoreError>;
    /// The dependency edges, by downstream, upstream.
    async fn edges(&self) -> Result<Vec<Edge>, StoreError>;
    /// External images, by project, image.
    async fn externals(&self) -> Result<Vec<External>, StoreError>;
    /// Scan and resolution warnings, by project, file, line.
    async fn warnings(&self) -> Result<Vec<Warning>, StoreError>;
    /// The secret fingerprint recorded per webhook id.
    async fn hook_fingerprints(&self) -> Result<HashMap<u64, String>, StoreError>;
    /// Records fingerprints of hooks just written and forgets those of hooks removed, in one
    /// transaction.
    async fn update_hook_fingerprints(
        &self,
        set: &[(u64, String)],
        forget: &[u64],
    ) -> Result<(), StoreError>;
}

/// The orchestration half: the durable event log, the cascade state and the activity log.
#[async_trait]
pub trait OrchestrationStore: MetaStore {
    /// Records a webhook delivery durably unless `delivery_key` was seen before. Returns its sequence
    /// number, or `None` for a redelivery.
    async fn insert_event(
        &self,
        delivery_key: &str,
        kind: &str,
        body: &str,
    ) -> Result<Option<i64>, StoreError>;
    /// Records several deliveries in one transaction (group commit for the webhook receiver);
    /// the result has one entry per event, as [`OrchestrationStore::insert_event`] would return.
    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Option<i64>>, StoreError>;
    /// Records an internal or operator input in the event log, as an [`INPUT_EVENT`], unless
    /// `key` was seen before.
    async fn insert_input(&self, key: &str, input: &Input) -> Result<Option<i64>, StoreError> {
        let event = NewEvent::input(key, input)?;
        self.insert_event(&event.delivery_key, &event.kind, &event.body)
            .await
    }
    /// Events recorded but not yet processed, oldest (lowest sequence number) first.
    async fn unprocessed_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;
    /// Stores what changed in the orchestration state (per project: its state, or `None` to
    /// delete it) and the counters, marks events up to `processed_up_to` processed and appends
    /// the `activity` lines (the activity log keeps the newest 10,000), in one transaction: an
    /// engine step is one commit. With a `fence`, the same transaction first checks that the
    /// stored lease epoch is still the fence's and writes nothing ([`StoreError::Fenced`]) when it
    /// moved: this is where creation intents are recorded, so a replica that lost the leadership
    /// records none.
    async fn commit_cascade(
        &self,
        changes: &[(String, Option<&ProjectState>)],
        counters: Counters,
        processed_up_to: Option<i64>,
        activity: Activity<'_>,
        fence: Option<&Lease>,
    ) -> Result<(), StoreError>;
    /// Forgets processed events received before the given time (their delivery keys too).
    async fn prune_events(&self, received_before_ms: i64) -> Result<usize, StoreError>;
    /// The orchestration state, if any was stored.
    async fn cascade_state(&self) -> Result<Option<StoredCascade>, StoreError>;
    /// The newest activity lines, newest first.
    async fn recent_activity(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError>;
    /// Grants the engine's lease to `holder` for `ttl` (by the database's clock) when nobody
    /// holds an unexpired one, or `holder` itself does; every grant gets a new, higher epoch.
    /// `None` while another holder's lease runs. Atomic: of two replicas asking at once, one wins.
    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Extends `lease` to `ttl` from now if its epoch is still the stored one (expired or not:
    /// nobody else took it meanwhile). `false` when another grant superseded it.
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;
    /// Ends `lease` now, if it is still the stored one, so another replica takes over at once.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;
    /// The stored lease, if one was ever granted.
    async fn lease(&self) -> Result<Option<LeaseInfo>, StoreError>;
}

/// Both halves: what the service needs. Implemented for every type that implements both.
pub trait Store: DiscoveryStore + OrchestrationStore {}

impl<T: DiscoveryStore + OrchestrationStore + ?Sized> Store for T {}

/// Loads the orchestration state (empty when none was stored).
pub async fn load_cascade(store: &dyn OrchestrationStore) -> Result<Cascade, StoreError> {
    Ok(match store.cascade_state().await? {
        Some(stored) => Cascade::from_parts(stored.projects, stored.counters),
        None => Cascade::new(),
    })
}

/// Records an operator input (cancel, rebuild) for the service to apply, from the CLI.
pub async fn enqueue_operator_input(
    store: &dyn OrchestrationStore,
    input: &Input,
) -> Result<(), StoreError> {
    let key = format!("operator:{}", uuid::Uuid::new_v4());
    store.insert_input(&key, input).await?;
    Ok(())
}
