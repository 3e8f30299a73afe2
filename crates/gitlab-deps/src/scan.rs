//! Discovery: list projects, read their Dockerfiles and `.gitlab-deps`, store references, and
//! resolve them into the dependency graph.
//!
//! Incremental by default. A project's repository tree is listed only when the listing hints at a
//! change: a new `last_activity_at`, or one still inside GitLab's hourly throttle window for that
//! field (`scan.activity_grace`). An unchanged instance therefore costs the listing requests alone.
//! The tree gives each dependency file's blob id, a hash of its content: a file is read only when
//! its blob id differs from the stored one, by that id, and a blob shared by several projects is
//! read once per scan. See `docs/discovery.md` for the request budget.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use url::Url;

use crate::config::ScanSettings;
use crate::discover::deps_file::{InstanceUrls, parse_deps_file};
use crate::discover::dockerfile::parse_dockerfile;
use crate::discover::image::{ImageName, RegistryIndex, normalise_prefix};
use crate::gitlab::{GitLab, GitLabError, Project, ProjectScope, TreeEntry};
use crate::store::{
    DeriveFn, DiscoveryStore, Edge, External, FileBlobs, PrefixRule, ProjectRecord, ProjectScan,
    RefKind, Reference, ReplaceOutcome, Resolution, ResolveInput, StoreError, Warning,
};
use crate::util::{now_ms, parse_timestamp_ms};

/// The file listing upstream projects by path or URL.
pub const DEPS_FILE: &str = ".gitlab-deps";
const SAVE_BATCH: usize = 200;
const FINGERPRINT_KEY: &str = "scan.fingerprint";
/// Store key holding the instance addresses learned from project URLs (JSON), so that a
/// single-project rescan recognises them too.
const INSTANCE_URLS_KEY: &str = "scan.instance_urls";
/// Store key holding when the last complete scan ended (Unix ms); the service reloads its graph
/// when it changes.
pub const LAST_SCAN_KEY: &str = "scan.last_at_ms";
/// Store key holding the wall time of the last complete scan (ms), for the service's metrics.
pub const LAST_SCAN_DURATION_KEY: &str = "scan.last_duration_ms";

/// Scan failures. Problems with single projects are warnings, not errors.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// GitLab failed in a way that stops the whole scan (bad token, unknown group, outage).
    #[error(transparent)]
    GitLab(#[from] GitLabError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to scan.
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    /// Groups (with subgroups); empty means every visible project.
    pub groups: Vec<String>,
    /// Re-read every project's files, ignoring what the store knows.
    pub full: bool,
}

/// Receives progress while a scan runs (the CLI draws a progress bar from it).
pub trait ScanProgress: Send + Sync {
    /// `n` more projects were listed.
    fn listed(&self, _n: usize) {}
    /// One project was handled.
    fn project_done(&self, _path: &str) {}
}

/// Ignores progress.
pub struct NoProgress;
impl ScanProgress for NoProgress {}

/// What a scan did and found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScanSummary {
    /// Projects listed in scope (after include/exclude, without archived and empty ones).
    pub projects_seen: usize,
    /// Projects whose files were read.
    pub projects_read: usize,
    /// Projects whose tree was listed but whose dependency files had not changed.
    pub files_unchanged: usize,
    /// Projects skipped on the listing alone.
    pub skipped_unchanged: usize,
    /// Projects removed from the store (gone, archived, emptied, excluded).
    pub removed: usize,
    /// Projects that could not be read this time (kept as they were).
    pub failed: usize,
    /// Projects in the store with at least one upstream project.
    pub with_dependencies: usize,
    pub edges: usize,
    /// Distinct external images.
    pub external_images: usize,
    /// All current warnings (files, unknown projects, unreadable projects).
    pub warnings: Vec<Warning>,
    /// API requests sent.
    pub requests: u64,
    /// Wall time.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

/// The warning for a project that could not be read this time.
fn skipped(path: &str, e: &dyn std::fmt::Display) -> Warning {
    Warning {
        project: path.to_owned(),
        file: None,
        line: None,
        message: format!("skipped this time: {e}"),
    }
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// What a push-triggered rescan changed in the store's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescanned {
    /// Only this project's upstream edges (and its record) may have changed.
    Project { id: u64 },
    /// The project appeared, left, or moved: the whole graph was re-resolved.
    Everything,
    /// Nothing changed (the project could not be read this time, or is not one we keep).
    Nothing,
}

/// Runs scans against one GitLab instance into one store.
pub struct Scanner {
    gitlab: GitLab,
    store: Arc<dyn DiscoveryStore>,
    settings: ScanSettings,
    instance: Url,
    registry_override: Option<String>,
}

/// How much of a project a scan re-reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// The tree only when the listing hints at a change; files only where the blob id moved.
    Incremental,
    /// The tree in any case (a push said something changed); files only where the blob id moved.
    Tree,
    /// Every file (`--full`, or settings that change how files are read).
    Full,
}

enum Outcome {
    Read(ProjectScan),
    Unchanged(ProjectRecord),
    FilesUnchanged(ProjectRecord),
    Gone(u64),
    /// Could not be read this time; the warning names the project.
    Failed(Warning),
}

/// Blob contents read during one scan, by blob id. Blob ids are content hashes, so projects sharing
/// a file (a common base Dockerfile) share one read; concurrent tasks asking for the same blob wait
/// for the one read in flight.
#[derive(Default)]
struct BlobCache {
    blobs: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<str>>>>>,
}

impl BlobCache {
    async fn read(
        &self,
        gitlab: &GitLab,
        project_id: u64,
        blob_id: &str,
    ) -> Result<Arc<str>, GitLabError> {
        let cell = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(blob_id.to_owned())
            .or_default()
            .clone();
        // A failed read leaves the cell empty: the next project that needs the blob tries again.
        cell.get_or_try_init(|| async {
            gitlab
                .blob_raw(project_id, blob_id)
                .await
                .map(Arc::<str>::from)
        })
        .await
        .cloned()
    }
}

/// What one scan (or single-project rescan) shares between its project tasks.
struct ScanContext {
    blobs: BlobCache,
    /// Blob ids of each project's dependency files when last read.
    stored_files: HashMap<u64, FileBlobs>,
    /// The configured URL and the addresses stored by earlier scans.
    known_urls: InstanceUrls,
    /// The configured URL and the addresses the projects of this scan show.
    learned_urls: Mutex<InstanceUrls>,
}

impl ScanContext {
    fn new(
        configured: InstanceUrls,
        known_urls: InstanceUrls,
        stored_files: HashMap<u64, FileBlobs>,
    ) -> Self {
        Self {
            blobs: BlobCache::default(),
            stored_files,
            learned_urls: Mutex::new(configured),
            known_urls,
        }
    }

    /// Records a project's addresses; returns the instance addresses to parse its files with
    /// (the known ones and the project's own).
    fn learn(&self, project: &Project) -> InstanceUrls {
        let mut own = InstanceUrls::default();
        own.add_project(
            &project.path_with_namespace,
            &project.web_url,
            project.http_url_to_repo.as_deref(),
            project.ssh_url_to_repo.as_deref(),
        );
        self.learned_urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(&own);
        let mut urls = self.known_urls.clone();
        urls.extend(&own);
        urls
    }

    /// The configured URL and what this scan's projects showed.
    fn learned_urls(&self) -> InstanceUrls {
        self.learned_urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The tree entry found for each configured dependency file that exists.
type ListedFiles = BTreeMap<String, TreeEntry>;

/// How a listed file is remembered: its blob id, or for a link or submodule (never read) its mode
/// and id, so that turning one into the other counts as a change.
fn remembered_id(entry: &TreeEntry) -> String {
    if entry.is_regular_file() {
        entry.id.clone()
    } else {
        format!("{}:{}", entry.mode, entry.id)
    }
}

impl Scanner {
    /// A scanner. `instance` is the GitLab base URL (for `.gitlab-deps` URLs); `registry_override`
    /// replaces the registry host of every project.
    pub fn new(
        gitlab: GitLab,
        store: Arc<dyn DiscoveryStore>,
        settings: ScanSettings,
        instance: Url,
        registry_override: Option<String>,
    ) -> Self {
        Self {
            gitlab,
            store,
            settings,
            instance,
            registry_override,
        }
    }

    /// Scans, stores and resolves. Single projects that fail become warnings; a failure of the
    /// listing itself (bad token, unknown group, GitLab down) fails the scan after saving what was read.
    pub async fn scan(
        &self,
        request: &ScanRequest,
        progress: &dyn ScanProgress,
    ) -> Result<ScanSummary, ScanError> {
        let started = Instant::now();
        let requests_before = self.gitlab.request_count();
        let fingerprint = self.fingerprint();
        let depth = if request.full
            || self.store.meta(FINGERPRINT_KEY).await?.as_deref() != Some(fingerprint.as_str())
        {
            Depth::Full
        } else {
            Depth::Incremental
        };
        let stored: HashMap<u64, ProjectRecord> = self
            .store
            .projects()
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        let ctx = ScanContext::new(
            InstanceUrls::new(&self.instance),
            self.known_urls().await?,
            self.store.file_blobs().await?,
        );
        let groups = if request.groups.is_empty() {
            self.settings.groups.clone()
        } else {
            request.groups.clone()
        };
        let scopes: Vec<ProjectScope> = if groups.is_empty() {
            vec![ProjectScope::All]
        } else {
            groups
                .iter()
                .map(|g| ProjectScope::Group(g.trim_matches('/').to_owned()))
                .collect()
        };

        let mut summary = ScanSummary::default();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut out_of_scope: Vec<u64> = Vec::new();
        let mut listing_error: Option<GitLabError> = None;
        let mut pending: Vec<ProjectScan> = Vec::new();
        let mut touched: Vec<ProjectRecord> = Vec::new();
        let mut scan_warnings: Vec<Warning> = Vec::new();

        for scope in &scopes {
            let pages = self.gitlab.list_projects(scope.clone());
            let projects = stream::unfold(pages, |mut rx| async move {
                rx.recv().await.map(|page| (page, rx))
            })
            .flat_map(|page| match page {
                Ok(projects) => {
                    progress.listed(projects.len());
                    stream::iter(projects.into_iter().map(Ok).collect::<Vec<_>>())
                }
                Err(e) => stream::iter(vec![Err(e)]),
            });
            let work = projects
                .map(|item| {
                    let stored = &stored;
                    let ctx = &ctx;
                    let seen_before = match &item {
                        Ok(p) => !seen.insert(p.id),
                        Err(_) => false,
                    };
                    async move {
                        match item {
                            Err(e) => Err(e),
                            Ok(_) if seen_before => Ok(None),
                            Ok(p) => {
                                let previous = stored.get(&p.id);
                                Ok(Some(self.handle(p, previous, depth, ctx).await))
                            }
                        }
                    }
                })
                .buffer_unordered(self.concurrency_hint());
            let mut work = std::pin::pin!(work);
            while let Some(result) = work.next().await {
                match result {
                    Err(e) => {
                        listing_error = Some(e);
                        break;
                    }
                    Ok(None) => {}
                    Ok(Some((path, outcome))) => {
                        progress.project_done(&path);
                        match outcome {
                            Outcome::Read(scan) => {
                                summary.projects_seen += 1;
                                summary.projects_read += 1;
                                pending.push(scan);
                            }
                            Outcome::Unchanged(record) => {
                                summary.projects_seen += 1;
                                summary.skipped_unchanged += 1;
                                if stored.get(&record.id) != Some(&record) {
                                    touched.push(record);
                                }
                            }
                            Outcome::FilesUnchanged(record) => {
                                summary.projects_seen += 1;
                                summary.files_unchanged += 1;
                                touched.push(record);
                            }
                            Outcome::Gone(id) => out_of_scope.push(id),
                            Outcome::Failed(message) => {
                                summary.projects_seen += 1;
                                summary.failed += 1;
                                tracing::warn!("{message}");
                                scan_warnings.push(message);
                            }
                        }
                        if pending.len() >= SAVE_BATCH {
                            self.store.save_scans(&pending).await?;
                            pending.clear();
                        }
                        if touched.len() >= SAVE_BATCH {
                            self.store.update_records(&touched).await?;
                            touched.clear();
                        }
                    }
                }
            }
            if listing_error.is_some() {
                break;
            }
        }
        self.store.save_scans(&pending).await?;
        self.store.update_records(&touched).await?;

        // Forget what left the scope, but only when every listing completed: a partial listing
        // says nothing about the projects it did not reach.
        let mut removed: Vec<u64> = out_of_scope
            .into_iter()
            .filter(|id| stored.contains_key(id))
            .collect();
        if listing_error.is_none() {
            let missing: Vec<&ProjectRecord> = stored
                .values()
                .filter(|r| !seen.contains(&r.id) && scopes.iter().any(|s| in_scope(s, &r.path)))
                .collect();
            removed.extend(self.confirm_gone(&missing, &scopes).await);
            if !self.settings.include.is_empty() || !self.settings.exclude.is_empty() {
                removed.extend(
                    stored
                        .values()
                        .filter(|r| !self.settings.wants(&r.path))
                        .map(|r| r.id),
                );
            }
        }
        removed.sort_unstable();
        removed.dedup();
        self.store.remove_projects(&removed).await?;
        summary.removed = removed.len();

        let resolution = resolve(
            self.store.as_ref(),
            self.registry_override.as_deref(),
            &self.instance,
        )
        .await?;
        if listing_error.is_none() {
            // Every project was seen: what they show replaces what older scans learned.
            self.save_urls(&ctx.learned_urls()).await?;
            self.store.set_meta(FINGERPRINT_KEY, &fingerprint).await?;
            // Before the stamp, which tells the service to reload and read it.
            self.store
                .set_meta(
                    LAST_SCAN_DURATION_KEY,
                    &started.elapsed().as_millis().to_string(),
                )
                .await?;
            self.store
                .set_meta("scan.last_at_ms", &now_ms().to_string())
                .await?;
        }
        if let Some(e) = listing_error {
            return Err(e.into());
        }
        summary.with_dependencies = resolution
            .edges
            .iter()
            .map(|e| e.downstream.as_str())
            .collect::<BTreeSet<_>>()
            .len();
        summary.edges = resolution.edges.len();
        summary.external_images = resolution
            .externals
            .iter()
            .map(|e| e.image.as_str())
            .collect::<BTreeSet<_>>()
            .len();
        summary.warnings = self.store.warnings().await?;
        summary.warnings.extend(scan_warnings);
        summary.requests = self.gitlab.request_count() - requests_before;
        summary.duration = started.elapsed();
        Ok(summary)
    }

    /// Re-reads one project now (after a push changed its files) and re-resolves what that
    /// changes: the project's own edges, or everything when the project appeared, left, was
    /// renamed or got another registry prefix (which changes what other projects resolve to).
    pub async fn rescan_project(&self, path: &str) -> Result<Rescanned, ScanError> {
        let project = self.gitlab.project(path).await?;
        let stored = self.store.project(project.id).await?;
        let known = self.known_urls().await?;
        let ctx = ScanContext::new(
            InstanceUrls::new(&self.instance),
            known.clone(),
            HashMap::from([(project.id, self.store.project_file_blobs(project.id).await?)]),
        );
        // A push says something changed: always list the tree, but read only the files whose
        // blob id moved.
        let (_, outcome) = self
            .handle(project, stored.as_ref(), Depth::Tree, &ctx)
            .await;
        // One project says nothing about the others' addresses: add to what is known.
        let mut urls = known;
        urls.extend(&ctx.learned_urls());
        self.save_urls(&urls).await?;
        // Same path and prefix as stored: other projects' references resolve as before.
        let same_place = |r: &ProjectRecord| {
            stored
                .as_ref()
                .is_some_and(|s| s.path == r.path && s.registry_prefix == r.registry_prefix)
        };
        let id = match outcome {
            Outcome::Read(scan) => {
                let id = scan.record.id;
                let local = same_place(&scan.record);
                self.store.save_scans(&[scan]).await?;
                local.then_some(id)
            }
            Outcome::Unchanged(r) | Outcome::FilesUnchanged(r) => {
                let id = r.id;
                let local = same_place(&r);
                self.store.update_records(&[r]).await?;
                local.then_some(id)
            }
            Outcome::Gone(id) => {
                if stored.is_none() {
                    return Ok(Rescanned::Nothing);
                }
                self.store.remove_projects(&[id]).await?;
                None
            }
            Outcome::Failed(message) => {
                tracing::warn!("{message}");
                return Ok(Rescanned::Nothing);
            }
        };
        if let Some(id) = id {
            let resolved = resolve_project(
                self.store.as_ref(),
                id,
                self.registry_override.as_deref(),
                &self.instance,
            )
            .await?;
            // Forgotten meanwhile (by a scan of another process): that scan resolves everything.
            if resolved.is_some() {
                return Ok(Rescanned::Project { id });
            }
        }
        resolve(
            self.store.as_ref(),
            self.registry_override.as_deref(),
            &self.instance,
        )
        .await?;
        Ok(Rescanned::Everything)
    }

    /// Of the stored projects a complete listing did not return, those that are really gone,
    /// archived, emptied, or moved out of scope. Offset pages can skip a row when a project is
    /// deleted mid-listing, so each is asked for before it is forgotten (with its pending work).
    async fn confirm_gone(&self, missing: &[&ProjectRecord], scopes: &[ProjectScope]) -> Vec<u64> {
        // Owned items: a closure over borrowed ones makes the future not `Send` for every
        // lifetime, which the service's background rescans need.
        let owned: Vec<(u64, String)> = missing.iter().map(|r| (r.id, r.path.clone())).collect();
        let checks = owned.into_iter().map(|(id, path)| async move {
            let gone = match self.gitlab.project(&id.to_string()).await {
                Err(GitLabError::NotFound { .. }) => true,
                Ok(p) => {
                    p.archived
                        || p.empty_repo == Some(true)
                        || p.default_branch.is_none()
                        || !self.settings.wants(&p.path_with_namespace)
                        || !scopes.iter().any(|s| in_scope(s, &p.path_with_namespace))
                }
                Err(e) => {
                    tracing::warn!("{path}: not in the listing, kept for now: {e}");
                    false
                }
            };
            gone.then_some(id)
        });
        stream::iter(checks)
            .buffer_unordered(16)
            .filter_map(|id| async move { id })
            .collect()
            .await
    }

    /// The configured URL with the addresses stored by earlier scans. A stored value that does
    /// not decode (written by another version) is ignored: the scan learns it again.
    async fn known_urls(&self) -> Result<InstanceUrls, ScanError> {
        let mut urls = InstanceUrls::new(&self.instance);
        if let Some(json) = self.store.meta(INSTANCE_URLS_KEY).await? {
            match serde_json::from_str::<InstanceUrls>(&json) {
                Ok(stored) => urls.extend(&stored),
                Err(e) => tracing::warn!("ignoring stored instance addresses: {e}"),
            }
        }
        Ok(urls)
    }

    async fn save_urls(&self, urls: &InstanceUrls) -> Result<(), ScanError> {
        let json = serde_json::to_string(urls).map_err(crate::store::StoreError::from)?;
        if self.store.meta(INSTANCE_URLS_KEY).await?.as_deref() != Some(json.as_str()) {
            self.store.set_meta(INSTANCE_URLS_KEY, &json).await?;
        }
        Ok(())
    }

    fn concurrency_hint(&self) -> usize {
        // Enough projects in flight that the client's request slots never idle.
        64
    }

    /// What the stored references depend on besides the files: a change forces a full re-read.
    fn fingerprint(&self) -> String {
        // v2: files are tracked by blob id; a store written before has no blob ids, so its
        // first scan re-reads everything (a file deleted meanwhile would otherwise go unnoticed).
        format!(
            "v2|{}|{}|{}",
            self.settings.dockerfiles.join(","),
            self.settings.build_args.fingerprint(),
            self.settings.platforms_fingerprint()
        )
    }

    async fn handle(
        &self,
        project: Project,
        stored: Option<&ProjectRecord>,
        depth: Depth,
        ctx: &ScanContext,
    ) -> (String, Outcome) {
        let path = project.path_with_namespace.clone();
        let outcome = self.handle_inner(project, stored, depth, ctx).await;
        (path, outcome)
    }

    async fn handle_inner(
        &self,
        project: Project,
        stored: Option<&ProjectRecord>,
        depth: Depth,
        ctx: &ScanContext,
    ) -> Outcome {
        let path = project.path_with_namespace.clone();
        let instance = ctx.learn(&project);
        let empty = project.empty_repo == Some(true) || project.default_branch.is_none();
        if project.archived || empty || !self.settings.wants(&path) {
            return Outcome::Gone(project.id);
        }
        let Some(branch) = project.default_branch.clone() else {
            return Outcome::Gone(project.id);
        };
        let mut record = ProjectRecord {
            id: project.id,
            path: path.clone(),
            default_branch: Some(branch.clone()),
            web_url: project.web_url.clone(),
            registry_prefix: project.container_registry_image_prefix.clone(),
            last_activity_at: project.last_activity_at.clone(),
            head_sha: stored.and_then(|s| s.head_sha.clone()),
            checked_at_ms: stored.and_then(|s| s.checked_at_ms),
        };
        if depth == Depth::Incremental && !self.needs_tree_check(stored, &project) {
            return Outcome::Unchanged(record);
        }
        let checked_at = now_ms();
        // The tree replaces the branch head as the change detector: a missing branch or an empty
        // repository answers 404 there as well.
        let listed = match self.list_files(project.id, &branch).await {
            Ok(Some(listed)) => listed,
            Ok(None) => return Outcome::Gone(project.id),
            Err(e) => return Outcome::Failed(skipped(&path, &e)),
        };
        record.checked_at_ms = Some(checked_at);
        let files: FileBlobs = listed
            .iter()
            .map(|(name, entry)| (name.clone(), remembered_id(entry)))
            .collect();
        let empty_files = FileBlobs::new();
        let previous = ctx.stored_files.get(&project.id).unwrap_or(&empty_files);
        if depth != Depth::Full && *previous == files {
            return Outcome::FilesUnchanged(record);
        }
        let reuse = if depth == Depth::Full {
            &empty_files
        } else {
            previous
        };
        match self
            .read_files(&project, &listed, reuse, &instance, ctx)
            .await
        {
            Ok((refs, warnings)) => Outcome::Read(ProjectScan {
                record,
                refs,
                warnings,
                files,
            }),
            Err(e) => Outcome::Failed(skipped(&path, &e)),
        }
    }

    fn needs_tree_check(&self, stored: Option<&ProjectRecord>, project: &Project) -> bool {
        let Some(stored) = stored else { return true };
        if stored.checked_at_ms.is_none()
            || stored.default_branch != project.default_branch
            || stored.last_activity_at != project.last_activity_at
        {
            return true;
        }
        // GitLab bumps last_activity_at at most once an hour, so activity soon after the recorded
        // one may not show: keep checking until our last check is past that window.
        let Some(activity) = project
            .last_activity_at
            .as_deref()
            .and_then(parse_timestamp_ms)
        else {
            return true;
        };
        let grace = self.settings.activity_grace.as_millis() as i64;
        stored
            .checked_at_ms
            .is_none_or(|checked| checked < activity + grace)
    }

    /// The configured dependency files, as paths from the repository root.
    fn file_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .settings
            .dockerfiles
            .iter()
            .map(|n| n.trim_matches('/').to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        names.push(DEPS_FILE.to_owned());
        names.dedup();
        names
    }

    /// The tree entries of the configured files that exist: one request for the root, plus one
    /// per configured subdirectory whose top directory exists. `None` when the root tree is not
    /// there (no such branch, empty repository, project gone).
    async fn list_files(
        &self,
        project_id: u64,
        branch: &str,
    ) -> Result<Option<ListedFiles>, GitLabError> {
        let Some(root) = self.gitlab.tree(project_id, "", branch).await? else {
            return Ok(None);
        };
        let names = self.file_names();
        // Directories are never dependency files; blobs, links and submodules are (links and
        // submodules only to be reported).
        let find = |entries: &[TreeEntry], name: &str| {
            entries
                .iter()
                .find(|e| e.name == name && e.kind != "tree")
                .cloned()
        };
        let mut listed = ListedFiles::new();
        let mut dirs: BTreeSet<&str> = BTreeSet::new();
        for name in &names {
            match name.rsplit_once('/') {
                None => {
                    if let Some(entry) = find(&root, name) {
                        listed.insert(name.clone(), entry);
                    }
                }
                Some((dir, _)) => {
                    let top = dir.split('/').next().unwrap_or(dir);
                    if root.iter().any(|e| e.kind == "tree" && e.name == top) {
                        dirs.insert(dir);
                    }
                }
            }
        }
        let trees = futures::future::join_all(
            dirs.iter()
                .map(|dir| self.gitlab.tree(project_id, dir, branch)),
        )
        .await;
        for (dir, entries) in dirs.iter().zip(trees) {
            // A missing subdirectory (404, or an empty list on some versions) holds no file.
            let entries = entries?.unwrap_or_default();
            for name in &names {
                if let Some((d, base)) = name.rsplit_once('/')
                    && d == *dir
                    && let Some(entry) = find(&entries, base)
                {
                    listed.insert(name.clone(), entry);
                }
            }
        }
        Ok(Some(listed))
    }

    /// References and warnings of the listed files. A regular file whose blob id is in `reuse`
    /// keeps its stored findings; the others are read by blob id (through the scan's cache).
    /// Symbolic links and submodules are reported, not read.
    async fn read_files(
        &self,
        project: &Project,
        listed: &ListedFiles,
        reuse: &FileBlobs,
        instance: &InstanceUrls,
        ctx: &ScanContext,
    ) -> Result<(Vec<Reference>, Vec<Warning>), ScanError> {
        let path = &project.path_with_namespace;
        let unchanged = |name: &str, entry: &TreeEntry| {
            entry.is_regular_file() && reuse.get(name) == Some(&entry.id)
        };
        let to_read: Vec<(&String, &TreeEntry)> = listed
            .iter()
            .filter(|(name, entry)| entry.is_regular_file() && !unchanged(name, entry))
            .collect();
        let reads = futures::future::join_all(
            to_read
                .iter()
                .map(|(_, entry)| ctx.blobs.read(&self.gitlab, project.id, &entry.id)),
        )
        .await;
        let mut contents: HashMap<&str, Arc<str>> = HashMap::new();
        for ((name, _), content) in to_read.iter().zip(reads) {
            contents.insert(name.as_str(), content?);
        }
        let kept = if listed.iter().any(|(n, e)| unchanged(n, e)) {
            self.store.project_findings(project.id).await?
        } else {
            Default::default()
        };

        let mut refs = Vec::new();
        let mut warnings = Vec::new();
        let warn = |file: &str, line: Option<u32>, message: String| Warning {
            project: path.clone(),
            file: Some(file.to_owned()),
            line,
            message,
        };
        for (name, entry) in listed {
            let name = name.as_str();
            if unchanged(name, entry) {
                refs.extend(kept.0.iter().filter(|r| r.file == name).cloned());
                warnings.extend(
                    kept.1
                        .iter()
                        .filter(|w| w.file.as_deref() == Some(name))
                        .cloned(),
                );
                continue;
            }
            if entry.is_symlink() {
                warnings.push(warn(
                    name,
                    None,
                    "is a symbolic link; links are not followed: name the file it points to in [scan] dockerfiles".to_owned(),
                ));
                continue;
            }
            if entry.kind == "commit" {
                warnings.push(warn(name, None, "is a submodule; not read".to_owned()));
                continue;
            }
            let Some(content) = contents.get(name) else {
                continue;
            };
            let content: &str = content;
            if name == DEPS_FILE {
                let (entries, problems) = parse_deps_file(content, instance);
                refs.extend(entries.into_iter().map(|e| Reference {
                    kind: RefKind::Project,
                    file: DEPS_FILE.into(),
                    line: e.line as u32,
                    value: e.path,
                }));
                warnings.extend(
                    problems
                        .into_iter()
                        .map(|w| warn(DEPS_FILE, Some(w.line as u32), w.message)),
                );
                continue;
            }
            let args = self.settings.build_args.for_project(path);
            match parse_dockerfile(content, &args, &self.settings.platforms) {
                Ok(parsed) => {
                    for image in parsed.images {
                        match ImageName::parse(&image.reference) {
                            Ok(name_) => refs.push(Reference {
                                kind: RefKind::Image,
                                file: name.to_owned(),
                                line: image.line as u32,
                                value: name_.to_string(),
                            }),
                            Err(e) => {
                                warnings.push(warn(name, Some(image.line as u32), e.to_string()))
                            }
                        }
                    }
                    warnings.extend(
                        parsed
                            .warnings
                            .into_iter()
                            .map(|w| warn(name, Some(w.line as u32), w.message)),
                    );
                }
                Err(e) => warnings.push(warn(name, None, format!("skipped: {e}"))),
            }
        }
        Ok((refs, warnings))
    }
}

fn in_scope(scope: &ProjectScope, path: &str) -> bool {
    match scope {
        ProjectScope::All => true,
        ProjectScope::Group(group) => {
            let path = path.to_ascii_lowercase();
            let group = group.to_ascii_lowercase();
            path.strip_prefix(&group)
                .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

/// The registry image prefix of a project: the override host if given, else what GitLab reports,
/// else `registry.<gitlab host>`.
pub fn registry_prefix(
    record: &ProjectRecord,
    registry_override: Option<&str>,
    instance: &Url,
) -> String {
    let path = record.path.to_ascii_lowercase();
    match (registry_override, &record.registry_prefix) {
        (Some(host), _) => format!("{}/{path}", host.trim_end_matches('/').to_ascii_lowercase()),
        (None, Some(prefix)) if !prefix.is_empty() => prefix.to_ascii_lowercase(),
        _ => format!(
            "registry.{}/{path}",
            instance.host_str().unwrap_or_default().to_ascii_lowercase()
        ),
    }
}

/// How many times a whole resolve starts over when projects were added, removed or renamed while
/// it ran, before leaving the write to whoever changed them (they resolve afterwards).
const RESOLVE_TRIES: usize = 3;

/// Derives edges, external images and unknown-project warnings from every stored reference, and
/// stores them in one transaction.
///
/// Never writes over newer data: a project whose references were saved again while this ran keeps
/// what its own (newer) resolve stores, and if the set of projects, their paths or registry
/// prefixes changed meanwhile, the resolve starts over.
pub async fn resolve(
    store: &dyn DiscoveryStore,
    registry_override: Option<&str>,
    instance: &Url,
) -> Result<Resolution, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let input = store.resolve_input().await?;
        let resolution = resolve_all(&input, registry_override, instance)?;
        match store
            .replace_resolution_from(&resolution, &input.versions)
            .await?
        {
            ReplaceOutcome::Written { kept } => {
                if !kept.is_empty() {
                    tracing::debug!(
                        "kept the newer resolution of {} projects rescanned meanwhile",
                        kept.len()
                    );
                }
                return Ok(resolution);
            }
            ReplaceOutcome::CatalogMoved if tries < RESOLVE_TRIES => {
                tracing::debug!("projects changed while resolving; resolving again");
            }
            ReplaceOutcome::CatalogMoved => {
                tracing::warn!(
                    "projects kept changing while resolving; leaving the graph to the scan that changed them"
                );
                return Ok(resolution);
            }
        }
    }
}

fn resolve_all(
    input: &ResolveInput,
    registry_override: Option<&str>,
    instance: &Url,
) -> Result<Resolution, StoreError> {
    let projects = &input.projects;
    let mut by_lower: HashMap<String, &str> = HashMap::with_capacity(projects.len());
    for p in projects {
        // The first by path wins, as in the store's indexed look-up.
        by_lower
            .entry(p.path.to_ascii_lowercase())
            .or_insert(p.path.as_str());
    }
    let index = RegistryIndex::new(projects.iter().map(|p| {
        (
            p.path.clone(),
            registry_prefix(p, registry_override, instance),
        )
    }));
    let mut resolution = Resolution::default();
    // References come ordered by project: derive each project's part from its run of them.
    let refs = &input.references;
    let mut start = 0;
    while let Some((project, _)) = refs.get(start) {
        let len = refs[start..]
            .iter()
            .take_while(|(p, _)| p == project)
            .count();
        let own: Vec<Reference> = refs[start..start + len]
            .iter()
            .map(|(_, r)| r.clone())
            .collect();
        let part = derive(
            project,
            &own,
            &mut |path| {
                Ok(by_lower
                    .get(&path.to_ascii_lowercase())
                    .map(|p| (*p).to_owned()))
            },
            &mut |image| Ok(index.resolve(image).map(str::to_owned)),
        )?;
        resolution.edges.extend(part.edges);
        resolution.externals.extend(part.externals);
        resolution.warnings.extend(part.warnings);
        start += len;
    }
    Ok(resolution)
}

/// Re-derives one project's edges (to its upstreams), external images and unknown-project
/// warnings from its stored references, with indexed look-ups, and replaces them in the same
/// transaction. `None` when the project is not stored.
///
/// Only the project's own part of the graph changes: valid as long as no project was added,
/// removed, renamed or given another registry prefix (those change what other projects' references
/// resolve to; [`resolve`] handles them).
pub async fn resolve_project(
    store: &dyn DiscoveryStore,
    id: u64,
    registry_override: Option<&str>,
    instance: &Url,
) -> Result<Option<Resolution>, StoreError> {
    let rule = prefix_rule(registry_override, instance);
    let derive_one: DeriveFn = Box::new(|project, refs, lookup| {
        // Two closures cannot both borrow the look-up mutably: share it through a cell.
        let lookup = std::cell::RefCell::new(lookup);
        derive(
            project,
            refs,
            &mut |path| lookup.borrow_mut().project_by_path(path),
            &mut |image| {
                for prefix in candidate_prefixes(image) {
                    if let Some(owner) = lookup.borrow_mut().project_by_prefix(&prefix)? {
                        return Ok(Some(owner));
                    }
                }
                Ok(None)
            },
        )
    });
    store.resolve_project(id, &rule, derive_one).await
}

/// How [`registry_prefix`] derives prefixes, for the store's indexed look-ups.
fn prefix_rule(registry_override: Option<&str>, instance: &Url) -> PrefixRule {
    match registry_override {
        Some(host) => PrefixRule {
            reported: false,
            base: normalise_prefix(&host.trim_end_matches('/').to_ascii_lowercase()),
        },
        None => PrefixRule {
            reported: true,
            base: format!(
                "registry.{}",
                instance.host_str().unwrap_or_default().to_ascii_lowercase()
            ),
        },
    }
}

/// The prefixes a project owning `image` could have, longest first: `host/a/b/c`, `host/a/b`,
/// `host/a` (the same walk as [`RegistryIndex::resolve`]).
fn candidate_prefixes(image: &ImageName) -> Vec<String> {
    let full = image.without_tag().to_ascii_lowercase();
    let registry_len = image.registry.len();
    let mut out = Vec::new();
    let mut candidate = full.as_str();
    loop {
        out.push(candidate.to_owned());
        match candidate.rfind('/') {
            Some(cut) if cut > registry_len => candidate = &candidate[..cut],
            _ => return out,
        }
    }
}

/// One project's part of the resolution, from its references in file and line order.
fn derive(
    project: &str,
    refs: &[Reference],
    by_path: &mut dyn FnMut(&str) -> Result<Option<String>, StoreError>,
    by_image: &mut dyn FnMut(&ImageName) -> Result<Option<String>, StoreError>,
) -> Result<Resolution, StoreError> {
    let mut resolution = Resolution::default();
    let mut edge_seen: HashSet<String> = HashSet::new();
    for reference in refs {
        let via = format!("{}:{}", reference.file, reference.line);
        let upstream = match reference.kind {
            RefKind::Project => match by_path(&reference.value)? {
                Some(p) => Some(p),
                None => {
                    resolution.warnings.push(Warning {
                        project: project.to_owned(),
                        file: Some(reference.file.clone()),
                        line: Some(reference.line),
                        message: format!("unknown project {:?}", reference.value),
                    });
                    continue;
                }
            },
            RefKind::Image => match ImageName::parse(&reference.value) {
                Ok(image) => by_image(&image)?,
                Err(_) => None,
            },
        };
        match upstream {
            // A project building on its own image (a cache stage, say) is not a dependency.
            Some(upstream) if upstream == project => {}
            Some(upstream) => {
                if edge_seen.insert(upstream.clone()) {
                    resolution.edges.push(Edge {
                        upstream,
                        downstream: project.to_owned(),
                        via,
                    });
                }
            }
            None => resolution.externals.push(External {
                project: project.to_owned(),
                image: reference.value.clone(),
            }),
        }
    }
    resolution.externals.sort_by(|a, b| a.image.cmp(&b.image));
    resolution.externals.dedup();
    Ok(resolution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matching_respects_segments() {
        let g = ProjectScope::Group("images".into());
        assert!(in_scope(&g, "images/base"));
        assert!(in_scope(&g, "Images/sub/x"));
        assert!(!in_scope(&g, "images-old/x"));
        assert!(in_scope(&ProjectScope::All, "x/y"));
    }

    #[test]
    fn registry_prefix_precedence() {
        let url = Url::parse("https://git.example.org/").unwrap();
        let mut r = ProjectRecord {
            id: 1,
            path: "Group/Proj".into(),
            default_branch: None,
            web_url: String::new(),
            registry_prefix: None,
            last_activity_at: None,
            head_sha: None,
            checked_at_ms: None,
        };
        assert_eq!(
            registry_prefix(&r, None, &url),
            "registry.git.example.org/group/proj"
        );
        r.registry_prefix = Some("reg.example.org:5050/group/proj".into());
        assert_eq!(
            registry_prefix(&r, None, &url),
            "reg.example.org:5050/group/proj"
        );
        assert_eq!(
            registry_prefix(&r, Some("other:443"), &url),
            "other:443/group/proj"
        );
    }

    mod resolving {
        use super::*;
        use crate::store::{ReplaceOutcome, SqliteStore};

        fn url() -> Url {
            Url::parse("https://git.example.org/").unwrap()
        }

        fn record(id: u64, path: &str, prefix: Option<&str>) -> ProjectRecord {
            ProjectRecord {
                id,
                path: path.into(),
                default_branch: Some("main".into()),
                web_url: String::new(),
                registry_prefix: prefix.map(str::to_owned),
                last_activity_at: None,
                head_sha: Some("h".into()),
                checked_at_ms: None,
            }
        }

        fn reference(kind: RefKind, line: u32, value: &str) -> Reference {
            Reference {
                kind,
                file: if kind == RefKind::Project {
                    DEPS_FILE.into()
                } else {
                    "Dockerfile".into()
                },
                line,
                value: value.into(),
            }
        }

        fn scan(record: ProjectRecord, refs: Vec<Reference>) -> ProjectScan {
            ProjectScan {
                record,
                refs,
                warnings: vec![],
                files: FileBlobs::new(),
            }
        }

        fn image(line: u32, value: &str) -> Reference {
            reference(RefKind::Image, line, value)
        }

        fn project(line: u32, value: &str) -> Reference {
            reference(RefKind::Project, line, value)
        }

        /// base (registry from GitLab), tools (derived registry), app using both and more.
        async fn instance() -> SqliteStore {
            let s = SqliteStore::in_memory().unwrap();
            s.save_scans(&[
                scan(
                    record(1, "img/Base", Some("reg.example.org:5050/img/base")),
                    vec![image(1, "docker.io/library/debian:12")],
                ),
                scan(record(2, "img/tools", None), vec![]),
                scan(
                    record(3, "apps/app", None),
                    vec![
                        image(1, "reg.example.org:5050/img/base/sub:1"),
                        image(2, "registry.git.example.org/img/tools:2"),
                        image(3, "registry.git.example.org/apps/app:cache"),
                        image(4, "docker.io/library/alpine:3"),
                        image(5, "docker.io/library/alpine:3"),
                        project(1, "IMG/tools"),
                        project(2, "gone/project"),
                    ],
                ),
            ])
            .await
            .unwrap();
            s
        }

        #[tokio::test]
        async fn one_project_resolves_edges_externals_warnings_and_skips_itself() {
            let s = instance().await;
            resolve(&s, None, &url()).await.unwrap();
            let r = resolve_project(&s, 3, None, &url()).await.unwrap().unwrap();
            let edges: Vec<_> = r
                .edges
                .iter()
                .map(|e| format!("{}->{} {}", e.upstream, e.downstream, e.via))
                .collect();
            // Tools is named twice: one edge, from the first reference in file and line order.
            assert_eq!(
                edges,
                [
                    "img/tools->apps/app .gitlab-deps:1",
                    "img/Base->apps/app Dockerfile:1",
                ]
            );
            assert_eq!(
                r.externals,
                [External {
                    project: "apps/app".into(),
                    image: "docker.io/library/alpine:3".into()
                }]
            );
            assert_eq!(r.warnings.len(), 1);
            assert_eq!(
                r.warnings[0].to_string(),
                "apps/app: .gitlab-deps:2: unknown project \"gone/project\""
            );
            // What it stored is what the whole resolve stores.
            let whole = resolve(&s, None, &url()).await.unwrap();
            assert_eq!(s.edges().await.unwrap().len(), whole.edges.len());
            let mut own = r.edges.clone();
            own.sort_by(|a, b| a.upstream.cmp(&b.upstream));
            assert_eq!(s.upstream_edges("apps/app").await.unwrap(), own);
        }

        #[tokio::test]
        async fn one_project_resolve_replaces_only_that_projects_part() {
            let s = instance().await;
            resolve(&s, None, &url()).await.unwrap();
            s.save_scans(&[scan(
                record(3, "apps/app", None),
                vec![image(1, "registry.git.example.org/img/tools")],
            )])
            .await
            .unwrap();
            resolve_project(&s, 3, None, &url()).await.unwrap().unwrap();
            let edges: Vec<_> = s
                .edges()
                .await
                .unwrap()
                .into_iter()
                .map(|e| format!("{}->{}", e.upstream, e.downstream))
                .collect();
            assert_eq!(edges, ["img/tools->apps/app"]);
            let externals: Vec<_> = s
                .externals()
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.project)
                .collect();
            assert_eq!(externals, ["img/Base"], "base's external stays");
            assert!(s.warnings().await.unwrap().is_empty());
            assert!(
                resolve_project(&s, 99, None, &url())
                    .await
                    .unwrap()
                    .is_none()
            );
        }

        #[tokio::test]
        async fn one_project_resolve_follows_a_registry_override() {
            let s = instance().await;
            let r = resolve_project(&s, 3, Some("https://mirror:443/"), &url())
                .await
                .unwrap()
                .unwrap();
            // Only the `.gitlab-deps` name resolves: every image is on another registry.
            assert_eq!(r.edges.len(), 1);
            assert_eq!(r.edges[0].via, ".gitlab-deps:1");
            // Its own cache image is not recognised as its own either.
            assert_eq!(r.externals.len(), 4);
            s.save_scans(&[scan(
                record(3, "apps/app", None),
                vec![
                    image(1, "mirror:443/img/base/x"),
                    image(2, "reg.example.org:5050/img/base"),
                ],
            )])
            .await
            .unwrap();
            let r = resolve_project(&s, 3, Some("https://mirror:443/"), &url())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(r.edges.len(), 1);
            assert_eq!(r.edges[0].upstream, "img/Base");
            assert_eq!(
                r.externals.len(),
                1,
                "GitLab's prefix does not count under an override"
            );
        }

        #[tokio::test]
        async fn a_whole_resolve_does_not_overwrite_a_newer_project_resolve() {
            let s = instance().await;
            resolve(&s, None, &url()).await.unwrap();
            // A whole resolve (a scheduled rescan, another process) reads...
            let read = s.resolve_input().await.unwrap();
            let stale = resolve_all(&read, None, &url()).unwrap();
            // ...a push saves and resolves the app's new references meanwhile...
            s.save_scans(&[scan(
                record(3, "apps/app", None),
                vec![image(1, "registry.git.example.org/img/tools")],
            )])
            .await
            .unwrap();
            resolve_project(&s, 3, None, &url()).await.unwrap().unwrap();
            // ...then the whole resolve writes what it derived from the older references.
            let outcome = s
                .replace_resolution_from(&stale, &read.versions)
                .await
                .unwrap();
            assert_eq!(
                outcome,
                ReplaceOutcome::Written {
                    kept: vec!["apps/app".into()]
                }
            );
            let ups: Vec<_> = s
                .upstream_edges("apps/app")
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.upstream)
                .collect();
            assert_eq!(ups, ["img/tools"]);
            assert!(
                s.warnings().await.unwrap().is_empty(),
                "the stale warning is not back"
            );
            // The other projects' part is written as read.
            assert_eq!(s.externals().await.unwrap().len(), 1);
        }

        #[tokio::test]
        async fn a_whole_resolve_keeps_data_saved_but_not_yet_resolved() {
            let s = instance().await;
            resolve(&s, None, &url()).await.unwrap();
            let read = s.resolve_input().await.unwrap();
            let stale = resolve_all(&read, None, &url()).unwrap();
            // A scan in another process saved new references; its own resolve comes later.
            s.save_scans(&[scan(record(3, "apps/app", None), vec![])])
                .await
                .unwrap();
            s.replace_resolution_from(&stale, &read.versions)
                .await
                .unwrap();
            resolve(&s, None, &url()).await.unwrap();
            assert!(s.upstream_edges("apps/app").await.unwrap().is_empty());
        }

        #[tokio::test]
        async fn a_whole_resolve_is_not_written_over_a_changed_catalog() {
            let s = instance().await;
            let read = s.resolve_input().await.unwrap();
            let stale = resolve_all(&read, None, &url()).unwrap();
            // Renaming tools changes what `.gitlab-deps` names resolve to.
            s.update_records(&[record(2, "img/tools2", None)])
                .await
                .unwrap();
            assert_eq!(
                s.replace_resolution_from(&stale, &read.versions)
                    .await
                    .unwrap(),
                ReplaceOutcome::CatalogMoved
            );
            assert!(s.edges().await.unwrap().is_empty(), "nothing written");
            // Metadata that other projects do not resolve against leaves the catalog alone.
            let read = s.resolve_input().await.unwrap();
            let mut touched = record(2, "img/tools2", None);
            touched.checked_at_ms = Some(5);
            s.update_records(&[touched]).await.unwrap();
            assert!(matches!(
                s.replace_resolution_from(&stale, &read.versions)
                    .await
                    .unwrap(),
                ReplaceOutcome::Written { .. }
            ));
            // Removing a project moves it too.
            let read = s.resolve_input().await.unwrap();
            s.remove_projects(&[2]).await.unwrap();
            assert_eq!(
                s.replace_resolution_from(&stale, &read.versions)
                    .await
                    .unwrap(),
                ReplaceOutcome::CatalogMoved
            );
        }

        #[tokio::test]
        async fn the_whole_resolve_starts_over_and_writes_the_current_catalog() {
            let s = instance().await;
            s.update_records(&[record(2, "img/tools2", None)])
                .await
                .unwrap();
            resolve(&s, None, &url()).await.unwrap();
            let ups: Vec<_> = s
                .upstream_edges("apps/app")
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.upstream)
                .collect();
            assert_eq!(ups, ["img/Base"]);
        }

        mod agreement {
            use super::*;
            use proptest::prelude::*;

            const PATHS: &[&str] = &["a/x", "A/y", "a/x/sub", "b/z", "b"];
            const HOSTS: &[&str] = &["registry.git.example.org", "reg:5050", "mirror"];

            fn value(kind: bool, host: usize, path: usize, tail: bool) -> Reference {
                if kind {
                    project(1, PATHS[path])
                } else {
                    let tail = if tail { "/img:1" } else { "" };
                    image(
                        1,
                        &format!("{}/{}{tail}", HOSTS[host], PATHS[path].to_ascii_lowercase()),
                    )
                }
            }

            proptest! {
                /// Every project's one-project resolve derives what the whole resolve derives
                /// for it, whatever the catalog and the override.
                #[test]
                fn one_project_and_whole_resolves_agree(
                    present in proptest::collection::vec(any::<bool>(), PATHS.len()),
                    prefixed in proptest::collection::vec(any::<bool>(), PATHS.len()),
                    refs in proptest::collection::vec(
                        (0..PATHS.len(), proptest::collection::vec(
                            (any::<bool>(), 0..HOSTS.len(), 0..PATHS.len(), any::<bool>()), 0..4)),
                        0..6),
                    over in proptest::option::of(Just("mirror")),
                ) {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    runtime.block_on(async {
                    let s = SqliteStore::in_memory().unwrap();
                    let mut by_project: HashMap<usize, Vec<Reference>> = HashMap::new();
                    for (owner, values) in refs {
                        let list = by_project.entry(owner).or_default();
                        for (i, (k, h, p, t)) in values.into_iter().enumerate() {
                            let mut r = value(k, h, p, t);
                            r.line = list.len() as u32 + i as u32 + 1;
                            list.push(r);
                        }
                    }
                    let scans: Vec<ProjectScan> = (0..PATHS.len())
                        .filter(|&i| present[i])
                        .map(|i| {
                            let prefix = prefixed[i]
                                .then(|| format!("reg:5050/{}", PATHS[i].to_ascii_lowercase()));
                            scan(
                                record(i as u64 + 1, PATHS[i], prefix.as_deref()),
                                by_project.remove(&i).unwrap_or_default(),
                            )
                        })
                        .collect();
                    s.save_scans(&scans).await.unwrap();
                    let whole = resolve(&s, over, &url()).await.unwrap();
                    for sc in &scans {
                        let one = resolve_project(&s, sc.record.id, over, &url()).await.unwrap().unwrap();
                        let path = &sc.record.path;
                        let edges: Vec<_> = whole.edges.iter().filter(|e| &e.downstream == path).cloned().collect();
                        let externals: Vec<_> = whole.externals.iter().filter(|e| &e.project == path).cloned().collect();
                        let warnings: Vec<_> = whole.warnings.iter().filter(|w| &w.project == path).cloned().collect();
                        prop_assert_eq!(one.edges, edges);
                        prop_assert_eq!(one.externals, externals);
                        prop_assert_eq!(one.warnings, warnings);
                    }
                    Ok(())
                    })?;
                }
            }
        }
    }

    /// The public addresses learned by a scan are stored, so a single-project rescan (after a
    /// push) recognises them; the rescan reads the changed file by blob id.
    #[tokio::test]
    async fn a_single_project_rescan_knows_the_public_addresses() {
        use crate::config::{ScanFileConfig, ScanSettings};
        use crate::gitlab::GitLabOptions;
        use crate::store::SqliteStore;

        let sim = gitlab_sim::Sim::new(gitlab_sim::SimOptions {
            external_url: Some("https://gitlab.example.org/gitlab".into()),
            ..Default::default()
        });
        sim.add_project(gitlab_sim::ProjectSpec::new("g/base").file("README.md", "x"));
        sim.add_project(gitlab_sim::ProjectSpec::new("g/app").file(".gitlab-deps", "# none\n"));
        let url = Url::parse(&sim.start().await.unwrap()).unwrap();
        let gitlab = GitLab::new(GitLabOptions {
            concurrency: 4,
            timeout: Duration::from_secs(10),
            ..GitLabOptions::new(url.clone(), sim.token().into())
        })
        .unwrap();
        let store: Arc<dyn DiscoveryStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let settings = ScanSettings::from_file(&ScanFileConfig::default()).unwrap();
        let scanner = Scanner::new(gitlab, store.clone(), settings, url, None);
        // An address no project shows any more is forgotten by a complete scan.
        let stale = InstanceUrls::new(&Url::parse("https://old.example.org/").unwrap());
        store
            .set_meta(INSTANCE_URLS_KEY, &serde_json::to_string(&stale).unwrap())
            .await
            .unwrap();
        scanner
            .scan(&ScanRequest::default(), &NoProgress)
            .await
            .unwrap();
        let json = store.meta(INSTANCE_URLS_KEY).await.unwrap().unwrap();
        assert!(!json.contains("old.example.org"), "{json}");
        let stored: InstanceUrls = serde_json::from_str(&json).unwrap();
        let (entries, warnings) = parse_deps_file(
            "https://gitlab.example.org/gitlab/g/base.git\ngit@gitlab.example.org:g/base\n",
            &stored,
        );
        assert_eq!((entries.len(), warnings.len()), (2, 0), "{warnings:?}");

        sim.set_file(
            "g/app",
            ".gitlab-deps",
            "https://gitlab.example.org/gitlab/g/base/-/tree/main\n",
        );
        sim.reset_request_log();
        scanner.rescan_project("g/app").await.unwrap();
        let edges: Vec<(String, String)> = store
            .edges()
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.upstream, e.downstream))
            .collect();
        assert_eq!(edges, [("g/base".to_owned(), "g/app".to_owned())]);
        assert!(store.warnings().await.unwrap().is_empty());
        assert_eq!(sim.endpoint_count(gitlab_sim::Endpoint::Blob), 1);
        assert_eq!(sim.endpoint_count(gitlab_sim::Endpoint::File), 0);
        // The rescan added to the stored addresses, it did not replace them.
        let after: InstanceUrls =
            serde_json::from_str(&store.meta(INSTANCE_URLS_KEY).await.unwrap().unwrap()).unwrap();
        assert_eq!(after, stored);
    }
}
