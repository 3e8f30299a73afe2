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
use crate::discover::image::{ImageName, RegistryIndex};
use crate::gitlab::{GitLab, GitLabError, Project, ProjectScope, TreeEntry};
use crate::graph::DepGraph;
use crate::store::{
    Edge, External, FileBlobs, ProjectRecord, ProjectScan, RefKind, Reference, Resolution, Store,
    StoreError, Warning,
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
    /// Dependency edges.
    pub edges: usize,
    /// Distinct external images.
    pub external_images: usize,
    /// All current warnings (files, unknown projects, unreadable projects).
    pub warnings: Vec<String>,
    /// API requests sent.
    pub requests: u64,
    /// Wall time.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Runs scans against one GitLab instance into one store.
pub struct Scanner {
    gitlab: GitLab,
    store: Arc<dyn Store>,
    settings: ScanSettings,
    instance: Url,
    registry_override: Option<String>,
}

enum Outcome {
    Read(ProjectScan),
    Unchanged(ProjectRecord),
    FilesUnchanged(ProjectRecord),
    Gone(u64),
    Failed(String),
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
        store: Arc<dyn Store>,
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
        let full = request.full
            || self.store.meta(FINGERPRINT_KEY)?.as_deref() != Some(fingerprint.as_str());
        let stored: HashMap<u64, ProjectRecord> = self
            .store
            .projects()?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        let ctx = ScanContext::new(
            InstanceUrls::new(&self.instance),
            self.known_urls()?,
            self.store.file_blobs()?,
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
        let mut scan_warnings: Vec<String> = Vec::new();

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
                                Ok(Some(self.handle(p, previous, full, ctx).await))
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
                            self.store.save_scans(&pending)?;
                            pending.clear();
                        }
                        if touched.len() >= SAVE_BATCH {
                            self.store.update_records(&touched)?;
                            touched.clear();
                        }
                    }
                }
            }
            if listing_error.is_some() {
                break;
            }
        }
        self.store.save_scans(&pending)?;
        self.store.update_records(&touched)?;

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
        self.store.remove_projects(&removed)?;
        summary.removed = removed.len();

        let resolution = resolve(
            self.store.as_ref(),
            self.registry_override.as_deref(),
            &self.instance,
        )?;
        if listing_error.is_none() {
            // Every project was seen: what they show replaces what older scans learned.
            self.save_urls(&ctx.learned_urls())?;
            self.store.set_meta(FINGERPRINT_KEY, &fingerprint)?;
            self.store
                .set_meta("scan.last_at_ms", &now_ms().to_string())?;
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
        summary.warnings = self
            .store
            .warnings()?
            .iter()
            .map(|w| w.to_string())
            .collect();
        summary.warnings.extend(scan_warnings);
        summary.requests = self.gitlab.request_count() - requests_before;
        summary.duration = started.elapsed();
        Ok(summary)
    }

    /// Re-reads one project now (after a push changed its files), then re-resolves the graph.
    pub async fn rescan_project(&self, path: &str) -> Result<(), ScanError> {
        let project = self.gitlab.project(path).await?;
        let stored = self.store.project(project.id)?;
        let known = self.known_urls()?;
        let ctx = ScanContext::new(
            InstanceUrls::new(&self.instance),
            known.clone(),
            HashMap::from([(project.id, self.store.project_file_blobs(project.id)?)]),
        );
        let (_, outcome) = self.handle(project, stored.as_ref(), true, &ctx).await;
        // One project says nothing about the others' addresses: add to what is known.
        let mut urls = known;
        urls.extend(&ctx.learned_urls());
        self.save_urls(&urls)?;
        match outcome {
            Outcome::Read(scan) => self.store.save_scans(&[scan])?,
            Outcome::Unchanged(r) | Outcome::FilesUnchanged(r) => {
                self.store.update_records(&[r])?
            }
            Outcome::Gone(id) => self.store.remove_projects(&[id])?,
            Outcome::Failed(message) => tracing::warn!("{message}"),
        }
        resolve(
            self.store.as_ref(),
            self.registry_override.as_deref(),
            &self.instance,
        )?;
        Ok(())
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
    fn known_urls(&self) -> Result<InstanceUrls, ScanError> {
        let mut urls = InstanceUrls::new(&self.instance);
        if let Some(json) = self.store.meta(INSTANCE_URLS_KEY)? {
            match serde_json::from_str::<InstanceUrls>(&json) {
                Ok(stored) => urls.extend(&stored),
                Err(e) => tracing::warn!("ignoring stored instance addresses: {e}"),
            }
        }
        Ok(urls)
    }

    fn save_urls(&self, urls: &InstanceUrls) -> Result<(), ScanError> {
        let json = serde_json::to_string(urls).map_err(crate::store::StoreError::from)?;
        if self.store.meta(INSTANCE_URLS_KEY)?.as_deref() != Some(json.as_str()) {
            self.store.set_meta(INSTANCE_URLS_KEY, &json)?;
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
            "v2|{}|{}",
            self.settings.dockerfiles.join(","),
            self.settings.build_args.fingerprint()
        )
    }

    async fn handle(
        &self,
        project: Project,
        stored: Option<&ProjectRecord>,
        full: bool,
        ctx: &ScanContext,
    ) -> (String, Outcome) {
        let path = project.path_with_namespace.clone();
        let outcome = self.handle_inner(project, stored, full, ctx).await;
        (path, outcome)
    }

    async fn handle_inner(
        &self,
        project: Project,
        stored: Option<&ProjectRecord>,
        full: bool,
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
        if !full && !self.needs_tree_check(stored, &project) {
            return Outcome::Unchanged(record);
        }
        let checked_at = now_ms();
        // The tree replaces the branch head as the change detector: a missing branch or an empty
        // repository answers 404 there as well.
        let listed = match self.list_files(project.id, &branch).await {
            Ok(Some(listed)) => listed,
            Ok(None) => return Outcome::Gone(project.id),
            Err(e) => return Outcome::Failed(format!("{path}: skipped this time: {e}")),
        };
        record.checked_at_ms = Some(checked_at);
        let files: FileBlobs = listed
            .iter()
            .map(|(name, entry)| (name.clone(), remembered_id(entry)))
            .collect();
        let empty_files = FileBlobs::new();
        let previous = ctx.stored_files.get(&project.id).unwrap_or(&empty_files);
        if !full && *previous == files {
            return Outcome::FilesUnchanged(record);
        }
        let reuse = if full { &empty_files } else { previous };
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
            Err(e) => Outcome::Failed(format!("{path}: skipped this time: {e}")),
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
            self.store.project_findings(project.id)?
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
            match parse_dockerfile(content, &args) {
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
                Err(e) => warnings.push(warn(name, None, format!("cannot parse: {e}"))),
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

/// The dependency graph of stored projects and resolved edges.
pub fn graph_of(projects: &[ProjectRecord], edges: Vec<Edge>) -> DepGraph {
    DepGraph::from_parts(
        projects.iter().map(|p| p.path.clone()),
        edges.into_iter().map(|e| (e.upstream, e.downstream)),
    )
}

/// Loads the dependency graph from the store.
pub fn load_graph(store: &dyn Store) -> Result<DepGraph, StoreError> {
    Ok(graph_of(&store.projects()?, store.edges()?))
}

/// Derives edges, external images and unknown-project warnings from every stored reference, and
/// stores them in one transaction.
pub fn resolve(
    store: &dyn Store,
    registry_override: Option<&str>,
    instance: &Url,
) -> Result<Resolution, StoreError> {
    let projects = store.projects()?;
    let by_lower: HashMap<String, &str> = projects
        .iter()
        .map(|p| (p.path.to_ascii_lowercase(), p.path.as_str()))
        .collect();
    let index = RegistryIndex::new(projects.iter().map(|p| {
        (
            p.path.clone(),
            registry_prefix(p, registry_override, instance),
        )
    }));
    let mut resolution = Resolution::default();
    let mut edge_seen: HashSet<(String, String)> = HashSet::new();
    for (project, reference) in store.references()? {
        let via = format!("{}:{}", reference.file, reference.line);
        let upstream = match reference.kind {
            RefKind::Project => match by_lower.get(&reference.value.to_ascii_lowercase()) {
                Some(p) => Some((*p).to_owned()),
                None => {
                    resolution.warnings.push(Warning {
                        project: project.clone(),
                        file: Some(reference.file.clone()),
                        line: Some(reference.line),
                        message: format!("unknown project {:?}", reference.value),
                    });
                    continue;
                }
            },
            RefKind::Image => ImageName::parse(&reference.value)
                .ok()
                .and_then(|image| index.resolve(&image).map(str::to_owned)),
        };
        match upstream {
            // A project building on its own image (a cache stage, say) is not a dependency.
            Some(upstream) if upstream == project => {}
            Some(upstream) => {
                if edge_seen.insert((upstream.clone(), project.clone())) {
                    resolution.edges.push(Edge {
                        upstream,
                        downstream: project.clone(),
                        via,
                    });
                }
            }
            None => resolution.externals.push(External {
                project: project.clone(),
                image: reference.value.clone(),
            }),
        }
    }
    resolution
        .externals
        .sort_by(|a, b| (&a.project, &a.image).cmp(&(&b.project, &b.image)));
    resolution.externals.dedup();
    store.replace_resolution(&resolution)?;
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

    /// The public addresses learned by a scan are stored, so a single-project rescan (after a
    /// push) recognises them; the rescan reads the changed file by blob id.
    #[tokio::test]
    async fn a_single_project_rescan_knows_the_public_addresses() {
        use crate::config::{ScanFileConfig, ScanSettings};
        use crate::gitlab::{GitLabOptions, RetryPolicy};
        use crate::store::SqliteStore;

        let sim = gitlab_sim::Sim::new(gitlab_sim::SimOptions {
            external_url: Some("https://gitlab.example.org/gitlab".into()),
            ..Default::default()
        });
        sim.add_project(gitlab_sim::ProjectSpec::new("g/base").file("README.md", "x"));
        sim.add_project(gitlab_sim::ProjectSpec::new("g/app").file(".gitlab-deps", "# none\n"));
        let url = Url::parse(&sim.start().await.unwrap()).unwrap();
        let gitlab = GitLab::new(GitLabOptions {
            base_url: url.clone(),
            token: sim.token(),
            concurrency: 4,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        })
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let settings = ScanSettings::from_file(&ScanFileConfig::default()).unwrap();
        let scanner = Scanner::new(gitlab, store.clone(), settings, url, None);
        // An address no project shows any more is forgotten by a complete scan.
        let stale = InstanceUrls::new(&Url::parse("https://old.example.org/").unwrap());
        store
            .set_meta(INSTANCE_URLS_KEY, &serde_json::to_string(&stale).unwrap())
            .unwrap();
        scanner
            .scan(&ScanRequest::default(), &NoProgress)
            .await
            .unwrap();
        let json = store.meta(INSTANCE_URLS_KEY).unwrap().unwrap();
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
            .unwrap()
            .into_iter()
            .map(|e| (e.upstream, e.downstream))
            .collect();
        assert_eq!(edges, [("g/base".to_owned(), "g/app".to_owned())]);
        assert!(store.warnings().unwrap().is_empty());
        assert_eq!(sim.endpoint_count(gitlab_sim::Endpoint::Blob), 1);
        assert_eq!(sim.endpoint_count(gitlab_sim::Endpoint::File), 0);
        // The rescan added to the stored addresses, it did not replace them.
        let after: InstanceUrls =
            serde_json::from_str(&store.meta(INSTANCE_URLS_KEY).unwrap().unwrap()).unwrap();
        assert_eq!(after, stored);
    }
}
