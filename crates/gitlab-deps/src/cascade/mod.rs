//! The cascade: a pure, persisted state machine that decides which projects to rebuild and when.
//!
//! It follows `make`, per project rather than per cascade (see docs/cascade-model.md): each project has a
//! small state — `stale` (must be rebuilt, with causes), `running` (our pipeline, not yet seen
//! finished), `failed` (our last pipeline failed). [`Cascade::apply`] folds one [`Input`] into the
//! state; [`Cascade::dispatch`] then decides what to start and returns [`Action`]s. The caller persists
//! the whole [`Cascade`] (serde) after every `apply` and every `dispatch`, *before* performing the
//! actions, so a pipeline creation is always preceded by its recorded intent (attempt id).
//!
//! Semantics chosen where the model left room (each is also noted where it is implemented):
//! - While a project runs, its `stale` holds only causes that arrived after the pipeline was created
//!   (then `running.restale` is set); the causes the pipeline answers live in `running.causes` and are
//!   put back into `stale` if it fails, so the failed project keeps blocking its descendants.
//! - Blocking is transitive: a project waits while any acyclic ancestor is stale or running (not just
//!   a direct upstream). With transitive marking both are the same, but the transitive check also
//!   holds after an operator cancelled part of a chain.
//! - Cancelling a running project keeps the running entry (the pipeline exists and its events must
//!   still be recognised) but drops its pending causes; if that pipeline still succeeds, its success
//!   is ours and propagates like any other, because a new build of the project now exists.
//! - A manual rebuild behaves like a change at the project: the project and all its acyclic
//!   descendants are marked stale with a new cascade (cause upstream = root = the project itself);
//!   it respects blocking by stale or running upstreams like any stale project.
//! - Excluded projects are never started and never waited for: `dispatch` clears their `stale` (their
//!   descendants were already marked by the same event and proceed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::graph::DepGraph;
use index::Index;

mod index;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// CI variable: comma-separated upstream paths whose new builds caused this pipeline, sorted.
pub const VAR_UPSTREAM: &str = "GITLAB_DEPS_UPSTREAM";
/// CI variable: comma-separated root paths (where the changes happened), sorted.
pub const VAR_ROOT: &str = "GITLAB_DEPS_ROOT";
/// CI variable: the cascade id of the oldest cause.
pub const VAR_CASCADE: &str = "GITLAB_DEPS_CASCADE";
/// CI variable: the attempt id; used to adopt a pipeline after a crash and to recognise its events.
pub const VAR_ATTEMPT: &str = "GITLAB_DEPS_ATTEMPT";

/// How many finished pipeline ids each project remembers to make redeliveries no-ops.
const SEEN_PIPELINES: usize = 16;
/// How many per-project lines one transition logs before summarising, so a change at the base of a
/// 100k graph does not produce a 100k-line log.
const LOG_DETAIL: usize = 50;

/// Why a project must be rebuilt: a new build of `upstream`, in the cascade started by a change at
/// `root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// The project whose new build made this one out of date (the project itself for a manual rebuild).
    pub upstream: String,
    /// Where the cascade started.
    pub root: String,
    /// The cascade id (`c-<n>`); every cascade has exactly one root.
    pub cascade: String,
    /// When the cause was recorded.
    pub at_ms: i64,
}

/// The project must be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stale {
    /// Causes, deduplicated by `(upstream, cascade)`, in arrival order.
    pub causes: Vec<Cause>,
    /// When the project became stale (dispatch starts the oldest first within a rank).
    pub since_ms: i64,
}

/// Our pipeline for the project, created (or about to be) and not yet seen finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Attempt id (`a-<n>`), passed as [`VAR_ATTEMPT`].
    pub attempt: String,
    /// `None` until [`Input::PipelineCreated`]: an intent to resolve after a crash.
    pub pipeline_id: Option<u64>,
    /// An upstream produced a new build after this pipeline was created: rebuild once more after it.
    pub restale: bool,
    /// When dispatch started it.
    pub started_ms: i64,
    /// Upstreams whose new builds it answers, sorted (the project itself excluded).
    pub upstreams: Vec<String>,
    /// Roots of those causes, sorted.
    pub roots: Vec<String>,
    /// Cascade id of the oldest cause.
    pub cascade: String,
    /// The causes this pipeline answers: propagated on success, restored into `stale` on failure.
    #[serde(default)]
    pub causes: Vec<Cause>,
    /// `stale.since_ms` when it started, restored on failure so it keeps its place in the queue.
    #[serde(default)]
    pub stale_since_ms: i64,
    /// The operator cancelled the project while this pipeline ran: a failure does not restore causes.
    #[serde(default)]
    pub cancelled: bool,
}

/// Our last pipeline for the project failed, was canceled, or could not be created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Human-readable reason.
    pub reason: String,
    /// The failed pipeline; `None` when creating it failed.
    pub pipeline_id: Option<u64>,
    /// When the failure was recorded.
    pub at_ms: i64,
}

/// Final status of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PipelineStatus {
    /// Succeeded: a new build of the project exists.
    Success,
    /// Failed.
    Failed,
    /// Canceled (treated like a failure).
    Canceled,
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PipelineStatus::Success => "succeeded",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "was canceled",
        })
    }
}

/// A pipeline whose final status was already applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenPipeline {
    pub id: u64,
    /// The status applied (a retried pipeline can finish again with another status).
    pub status: PipelineStatus,
}

/// Per-project state; the default is idle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectState {
    /// Must be rebuilt (while running: only causes that arrived after the pipeline was created).
    pub stale: Option<Stale>,
    /// Our pipeline in flight.
    pub running: Option<Running>,
    /// Our last pipeline failed.
    pub failed: Option<Failure>,
    /// The last [`SEEN_PIPELINES`] finished pipelines by id, ascending: redeliveries are no-ops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<SeenPipeline>,
}

impl ProjectState {
    /// Neither stale, running nor failed.
    pub fn is_idle(&self) -> bool {
        self.stale.is_none() && self.running.is_none() && self.failed.is_none()
    }

    fn blocks(&self) -> bool {
        self.stale.is_some() || self.running.is_some()
    }

    fn already_seen(&self, id: u64, status: PipelineStatus, ours: bool) -> bool {
        // Pipeline ids grow over time, so once the memory is full anything older than its oldest
        // entry is an old redelivery, not news — except our own running pipeline, which may have
        // started long before newer pipelines of the project finished.
        self.seen.iter().any(|s| s.id == id && s.status == status)
            || (!ours
                && self.seen.len() >= SEEN_PIPELINES
                && self.seen.first().is_some_and(|s| id < s.id))
    }

    fn remember(&mut self, id: u64, status: PipelineStatus) {
        match self.seen.binary_search_by_key(&id, |s| s.id) {
            Ok(i) => self.seen[i].status = status,
            Err(i) => self.seen.insert(i, SeenPipeline { id, status }),
        }
        if self.seen.len() > SEEN_PIPELINES {
            self.seen.remove(0);
        }
    }

    fn add_cause(&mut self, cause: Cause, now_ms: i64) {
        let stale = self.stale.get_or_insert_with(|| Stale {
            causes: Vec::new(),
            since_ms: now_ms,
        });
        if !stale
            .causes
            .iter()
            .any(|c| c.upstream == cause.upstream && c.cascade == cause.cascade)
        {
            stale.causes.push(cause);
        }
    }
}

/// The fields of a finished pipeline, unpacked from [`Input::PipelineFinished`].
struct Finished<'a> {
    pipeline_id: u64,
    attempt: Option<&'a str>,
    status: PipelineStatus,
    reason: Option<String>,
    created_ms: Option<i64>,
}

/// An event for the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A pipeline on the project's default branch (not tag/MR/child — the caller filters) reached a
    /// final status. `attempt` is the [`VAR_ATTEMPT`] variable if present.
    PipelineFinished {
        project: String,
        pipeline_id: u64,
        /// Our attempt id, if the pipeline carries one.
        attempt: Option<String>,
        status: PipelineStatus,
        /// Failure reason for the log and status page.
        reason: Option<String>,
        /// When GitLab created the pipeline (Unix ms), if known. A pipeline that is not ours only
        /// counts as building on fresh upstreams if it was created after the project went stale.
        #[serde(default)]
        created_ms: Option<i64>,
    },
    /// The pipeline for an attempt was created (or adopted after a crash).
    PipelineCreated {
        project: String,
        /// Attempt id from the action.
        attempt: String,
        /// The new pipeline.
        pipeline_id: u64,
    },
    /// Creating the pipeline failed permanently; transient errors are retried by the caller.
    CreateFailed {
        project: String,
        /// Attempt id from the action.
        attempt: String,
        /// Why (HTTP status and message).
        reason: String,
    },
    /// Operator: rebuild `project` as if it had changed (new cascade rooted at it).
    Rebuild { project: String },
    /// Operator: forget everything about these projects: pending work, failure, and our running
    /// pipeline (one that never finishes, say, parked on a manual job). What waits below them is
    /// unblocked; its pending work stays.
    Forget {
        /// Project paths.
        projects: Vec<String>,
    },
    /// Operator: drop pending work for these projects, optionally with all their descendants.
    Cancel {
        /// Project paths.
        projects: Vec<String>,
        /// Also every acyclic descendant.
        with_descendants: bool,
    },
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Create a pipeline on the project's default branch with these variables; the intent
    /// (project, attempt) is already recorded as `running` with `pipeline_id: None`.
    CreatePipeline {
        project: String,
        /// Attempt id, also in `variables` as [`VAR_ATTEMPT`].
        attempt: String,
        /// CI variables, in the order [`VAR_UPSTREAM`], [`VAR_ROOT`], [`VAR_CASCADE`], [`VAR_ATTEMPT`].
        variables: Vec<(String, String)>,
    },
}

/// Limits for one dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// At most this many projects running at once (already running ones count).
    pub max_running: usize,
    /// How many creations the rate limiter allows right now (`usize::MAX` if unlimited).
    pub can_create: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            max_running: 10,
            can_create: usize::MAX,
        }
    }
}

impl Throttle {
    /// No limit at all.
    pub fn unlimited() -> Self {
        Throttle {
            max_running: usize::MAX,
            can_create: usize::MAX,
        }
    }
}

/// What one [`Cascade::apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Projects whose state changed, sorted. Empty: the input was a no-op (e.g. a redelivery).
    pub touched: Vec<String>,
    /// Human-readable transitions for logs and the status page.
    pub log: Vec<String>,
}

impl Applied {
    /// Whether nothing changed.
    pub fn is_noop(&self) -> bool {
        self.touched.is_empty()
    }
}

/// Collects an [`Applied`] while applying.
#[derive(Default)]
struct Out {
    touched: BTreeSet<String>,
    log: Vec<String>,
    marked: usize,
}

impl Out {
    fn touch(&mut self, p: &str) {
        if !self.touched.contains(p) {
            self.touched.insert(p.to_owned());
        }
    }
}

/// The whole orchestration state: per-project states and the id counters. Persist it as a whole,
/// or incrementally: [`Cascade::take_dirty`] names the projects whose state changed since the last
/// call, and [`Cascade::counters`] the id counters, which [`Cascade::from_parts`] reassembles.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "StoredCascade")]
pub struct Cascade {
    /// Projects with a non-default state (or remembered pipelines), by path.
    projects: BTreeMap<String, ProjectState>,
    /// Next attempt number (`a-<n>`).
    next_attempt: u64,
    /// Next cascade number (`c-<n>`).
    next_cascade: u64,
    /// Projects changed since the last [`Cascade::take_dirty`]: not state, bookkeeping for storage.
    #[serde(skip)]
    dirty: BTreeSet<String>,
    /// Derived from `projects`, kept up to date by every mutation (see [`index`]).
    #[serde(skip)]
    index: Index,
}

/// The serialized form of a [`Cascade`]: deserializing goes through [`Cascade::from_parts`] so
/// that the indexes are rebuilt.
#[derive(Deserialize)]
struct StoredCascade {
    projects: BTreeMap<String, ProjectState>,
    next_attempt: u64,
    next_cascade: u64,
}

impl From<StoredCascade> for Cascade {
    fn from(stored: StoredCascade) -> Self {
        Cascade::from_parts(
            stored.projects,
            Counters {
                next_attempt: stored.next_attempt,
                next_cascade: stored.next_cascade,
            },
        )
    }
}

/// How many projects are in each state (a project can be in more than one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Stale projects.
    pub stale: usize,
    /// Projects with a pipeline of ours in flight.
    pub running: usize,
    /// Projects whose last pipeline of ours failed.
    pub failed: usize,
}

impl PartialEq for Cascade {
    fn eq(&self, other: &Self) -> bool {
        self.projects == other.projects
            && self.next_attempt == other.next_attempt
            && self.next_cascade == other.next_cascade
    }
}

impl Eq for Cascade {}

/// The id counters of a [`Cascade`], stored beside the per-project states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Next attempt number.
    pub next_attempt: u64,
    /// Next cascade number.
    pub next_cascade: u64,
}

impl Cascade {
    /// Empty state: nothing stale, nothing running.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reassembles a cascade from stored per-project states and counters.
    pub fn from_parts(
        projects: impl IntoIterator<Item = (String, ProjectState)>,
        counters: Counters,
    ) -> Self {
        let projects: BTreeMap<String, ProjectState> = projects.into_iter().collect();
        let index = Index::rebuild(&projects);
        Self {
            projects,
            next_attempt: counters.next_attempt,
            next_cascade: counters.next_cascade,
            dirty: BTreeSet::new(),
            index,
        }
    }

    /// Brings the indexes up to date for projects whose state may have changed.
    fn reindex<'a>(
        &mut self,
        graph: Option<&DepGraph>,
        changed: impl IntoIterator<Item = &'a str>,
    ) {
        for p in changed {
            self.index.update(&self.projects, graph, p);
        }
    }

    /// Moves a project's state to a new path (the project was renamed or moved: GitLab keeps its
    /// id). Pending work, running pipelines and failures follow it.
    pub fn rename(&mut self, from: &str, to: &str) {
        if from == to {
            return;
        }
        if let Some(state) = self.projects.remove(from) {
            self.projects.insert(to.to_owned(), state);
            self.dirty.insert(from.to_owned());
            self.dirty.insert(to.to_owned());
            self.reindex(None, [from, to]);
        }
    }

    /// A copy holding only the projects that are stale, running or failed (and the counters):
    /// everything the status views need, without the idle projects' pipeline memory.
    pub fn active_copy(&self) -> Self {
        // Idle projects neither block nor wait, so the indexes (and the blocked frontier) carry
        // over as they are.
        let mut index = self.index.clone();
        index.unchecked.clear();
        index.unchecked.extend(
            self.index
                .unchecked
                .iter()
                .filter(|p| self.index.active.contains(*p))
                .cloned(),
        );
        Self {
            projects: self
                .projects()
                .map(|(p, s)| (p.to_owned(), s.clone()))
                .collect(),
            next_attempt: self.next_attempt,
            next_cascade: self.next_cascade,
            dirty: BTreeSet::new(),
            index,
        }
    }

    /// How many projects are stale, running and failed.
    pub fn counts(&self) -> StateCounts {
        StateCounts {
            stale: self.index.stale.len(),
            running: self.index.running.len(),
            failed: self.index.failed.len(),
        }
    }

    /// Marks projects as changed again (their storage failed and must be retried).
    pub fn mark_dirty(&mut self, projects: impl IntoIterator<Item = String>) {
        self.dirty.extend(projects);
    }

    /// The id counters.
    pub fn counters(&self) -> Counters {
        Counters {
            next_attempt: self.next_attempt,
            next_cascade: self.next_cascade,
        }
    }

    /// The projects whose state changed since the last call, each with its state now (`None`: it has
    /// none any more). Storing these and [`Cascade::counters`] keeps a stored copy equal to `self`.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<&ProjectState>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|p| {
                let state = self.projects.get(&p);
                (p, state)
            })
            .collect()
    }

    /// The state of a project, if it has one (`None` means idle).
    pub fn state(&self, project: &str) -> Option<&ProjectState> {
        self.projects.get(project)
    }

    /// Projects that are stale, running or failed, sorted by path.
    pub fn projects(&self) -> impl Iterator<Item = (&str, &ProjectState)> {
        self.index
            .active
            .iter()
            .filter_map(|p| Some((p.as_str(), self.projects.get(p)?)))
    }

    /// `(project, attempt)` running with no pipeline id: intents to resolve after a crash (adopt the
    /// pipeline carrying the attempt variable, or create it), sorted.
    pub fn pending_attempts(&self) -> Vec<(String, String)> {
        self.index
            .running
            .iter()
            .filter_map(|p| {
                let r = self.projects.get(p)?.running.as_ref()?;
                r.pipeline_id
                    .is_none()
                    .then(|| (p.clone(), r.attempt.clone()))
            })
            .collect()
    }

    /// `(project, pipeline id)` of our created pipelines not yet seen finished, for the reconciler.
    pub fn running_pipelines(&self) -> Vec<(String, u64)> {
        self.index
            .running
            .iter()
            .filter_map(|p| {
                let s = self.projects.get(p)?;
                Some((p.clone(), s.running.as_ref()?.pipeline_id?))
            })
            .collect()
    }

    /// Whether a pipeline is the project's running one: same pipeline id, or — before the id is
    /// recorded — same attempt id. A pipeline carrying our attempt id but another pipeline id than
    /// the recorded one (a copy someone started) is not ours.
    pub fn is_ours(&self, project: &str, pipeline_id: u64, attempt: Option<&str>) -> bool {
        self.projects
            .get(project)
            .and_then(|s| s.running.as_ref())
            .is_some_and(|r| match r.pipeline_id {
                Some(id) => id == pipeline_id,
                None => attempt == Some(r.attempt.as_str()),
            })
    }

    /// Why a project waits: its nearest acyclic ancestors that are stale or running (on every
    /// upstream path, the first such one), sorted. Direct upstreams first come to mind, but after a
    /// partial cancel the blocker may be further up. Failed upstreams are stale, so they appear too;
    /// look up their state to say "blocked by failed X".
    pub fn blocked_by(&self, graph: &DepGraph, project: &str) -> Vec<String> {
        let Some(start) = graph.index_of(project) else {
            return Vec::new();
        };
        // With the frontier of this graph, only held projects can lead to a blocker: the walk
        // skips everything with nothing pending above it.
        let frontier = self.index.frontier_of(graph);
        let mut seen = BTreeSet::new();
        let mut out = BTreeSet::new();
        let mut stack: Vec<u32> = graph.acyclic_up_ids(start).to_vec();
        while let Some(u) = stack.pop() {
            if !seen.insert(u) || frontier.is_some_and(|f| !f.held(u)) {
                continue;
            }
            let name = graph.name(u);
            if self.projects.get(name).is_some_and(ProjectState::blocks) {
                out.insert(name.to_owned());
            } else {
                stack.extend_from_slice(graph.acyclic_up_ids(u));
            }
        }
        out.into_iter().collect()
    }

    /// Drops the states of projects that are no longer in the graph (call after a rescan) and
    /// returns their paths. Until then such states are ignored by dispatch and never cause a panic.
    /// A dropped running pipeline is forgotten: its events become "not ours" and are ignored, since
    /// the project is no longer in the graph.
    pub fn prune(&mut self, graph: &DepGraph) -> Vec<String> {
        let gone: Vec<String> = self
            .projects
            .keys()
            .filter(|p| !graph.contains(p))
            .cloned()
            .collect();
        for p in &gone {
            self.projects.remove(p);
            self.dirty.insert(p.clone());
        }
        self.reindex(Some(graph), gone.iter().map(String::as_str));
        gone
    }

    fn new_cascade_id(&mut self) -> String {
        self.next_cascade += 1;
        format!("c-{}", self.next_cascade)
    }

    fn new_attempt_id(&mut self) -> String {
        self.next_attempt += 1;
        format!("a-{}", self.next_attempt)
    }

    fn is_blocking(&self, p: &str) -> bool {
        self.projects.get(p).is_some_and(ProjectState::blocks)
    }

    /// Applies one input. Pure apart from `self`; replaying an event input (a redelivered
    /// `PipelineFinished`, `PipelineCreated` or `CreateFailed`) changes nothing.
    pub fn apply(&mut self, graph: &DepGraph, input: Input, now_ms: i64) -> Applied {
        let mut out = Out::default();
        match input {
            Input::PipelineFinished {
                project,
                pipeline_id,
                attempt,
                status,
                reason,
                created_ms,
            } => self.on_finished(
                graph,
                &project,
                Finished {
                    pipeline_id,
                    attempt: attempt.as_deref(),
                    status,
                    reason,
                    created_ms,
                },
                now_ms,
                &mut out,
            ),
            Input::PipelineCreated {
                project,
                attempt,
                pipeline_id,
            } => self.on_created(&project, &attempt, pipeline_id, &mut out),
            Input::CreateFailed {
                project,
                attempt,
                reason,
            } => self.on_create_failed(&project, &attempt, reason, now_ms, &mut out),
            Input::Rebuild { project } => self.on_rebuild(graph, &project, now_ms, &mut out),
            Input::Cancel {
                projects,
                with_descendants,
            } => self.on_cancel(graph, &projects, with_descendants, &mut out),
            Input::Forget { projects } => self.on_forget(&projects, &mut out),
        }
        if out.marked > LOG_DETAIL {
            out.log.push(format!(
                "... and {} more projects marked stale",
                out.marked - LOG_DETAIL
            ));
        }
        self.dirty.extend(out.touched.iter().cloned());
        // Every change of a project's state touches it: that is what keeps storage and the
        // indexes exact.
        self.reindex(Some(graph), out.touched.iter().map(String::as_str));
        Applied {
            touched: out.touched.into_iter().collect(),
            log: out.log,
        }
    }

    #[allow(clippy::too_many_arguments)] // the fields of one input, unpacked
    fn on_finished(
        &mut self,
        graph: &DepGraph,
        project: &str,
        finished: Finished<'_>,
        now_ms: i64,
        out: &mut Out,
    ) {
        let Finished {
            pipeline_id,
            attempt,
            status,
            reason,
            created_ms,
        } = finished;
        let ours = self.is_ours(project, pipeline_id, attempt);
        if self
            .projects
            .get(project)
            .is_some_and(|s| s.already_seen(pipeline_id, status, ours))
        {
            return;
        }
        match (ours, status) {
            (true, PipelineStatus::Success) => {
                let Some(st) = self.projects.get_mut(project) else {
                    return;
                };
                let Some(run) = st.running.take() else {
                    return;
                };
                // `stale` holds only causes that arrived while running (restale): keep them.
                st.failed = None;
                st.remember(pipeline_id, status);
                out.touch(project);
                out.log.push(format!(
                    "{project} succeeded (pipeline {pipeline_id}, {})",
                    run.cascade
                ));
                if run.restale && st.stale.is_some() {
                    out.log.push(format!(
                        "{project} stays stale: an upstream changed while it ran"
                    ));
                }
                // Each (root, cascade) the build answered travels on to the descendants.
                let mut origins: Vec<(String, String)> = run
                    .causes
                    .iter()
                    .map(|c| (c.root.clone(), c.cascade.clone()))
                    .collect();
                if origins.is_empty() {
                    origins = run
                        .roots
                        .iter()
                        .map(|r| (r.clone(), run.cascade.clone()))
                        .collect();
                }
                origins.sort();
                origins.dedup();
                self.mark_descendants(graph, project, &origins, now_ms, out);
            }
            (true, _) => {
                let Some(st) = self.projects.get_mut(project) else {
                    return;
                };
                let Some(run) = st.running.take() else {
                    return;
                };
                let reason = reason.unwrap_or_else(|| format!("pipeline {pipeline_id} {status}"));
                out.log.push(format!("{project} failed: {reason}"));
                if fail(st, run, reason, Some(pipeline_id), now_ms) {
                    out.log.push(format!(
                        "{project} will be retried: an upstream changed while it ran"
                    ));
                }
                st.remember(pipeline_id, status);
                out.touch(project);
            }
            (false, PipelineStatus::Success) => {
                // A pipeline we did not create (push, schedule, web, retry): a change.
                if !graph.contains(project) && !self.projects.contains_key(project) {
                    return;
                }
                let cascade = self.new_cascade_id();
                // Its build used fresh parents only if nothing above it is pending.
                let fresh = graph.index_of(project).is_none_or(|i| {
                    !graph
                        .acyclic_up_ids(i)
                        .iter()
                        .any(|&u| self.is_blocking(graph.name(u)))
                });
                let st = self.projects.entry(project.to_owned()).or_default();
                // Only a pipeline created after the project went stale built on what made it
                // stale: a retry of our failed pipeline, or one created later. An older one (or
                // one of unknown age) leaves it stale.
                let retry_of_ours = st
                    .failed
                    .as_ref()
                    .is_some_and(|f| f.pipeline_id == Some(pipeline_id));
                let recent = retry_of_ours
                    || st
                        .stale
                        .as_ref()
                        .is_some_and(|s| created_ms.is_some_and(|c| c > s.since_ms));
                st.failed = None;
                if fresh && recent && st.stale.take().is_some() {
                    out.log.push(format!(
                        "{project} no longer stale: built with fresh upstreams"
                    ));
                }
                if let Some(run) = st.running.as_mut() {
                    run.restale = st.stale.is_some();
                }
                st.remember(pipeline_id, status);
                out.touch(project);
                out.log.push(format!(
                    "{project} changed (pipeline {pipeline_id}): cascade {cascade}"
                ));
                let origins = [(project.to_owned(), cascade)];
                self.mark_descendants(graph, project, &origins, now_ms, out);
            }
            (false, _) => {
                // No new build exists: nothing to propagate, nothing to remember.
            }
        }
    }

    fn on_created(&mut self, project: &str, attempt: &str, pipeline_id: u64, out: &mut Out) {
        let Some(run) = self
            .projects
            .get_mut(project)
            .and_then(|s| s.running.as_mut())
            .filter(|r| r.attempt == attempt)
        else {
            // Unknown attempt: already finished (its result arrived first) or redelivered late.
            return;
        };
        match run.pipeline_id {
            None => {
                run.pipeline_id = Some(pipeline_id);
                out.touch(project);
                out.log.push(format!(
                    "{project} pipeline {pipeline_id} created ({attempt})"
                ));
            }
            Some(id) if id == pipeline_id => {}
            Some(id) => {
                // Keep the first: two pipelines for one attempt means a duplicate creation, and the
                // recorded one is the one the reconciler already tracks.
                out.log.push(format!(
                    "{project}: attempt {attempt} already has pipeline {id}, ignoring pipeline {pipeline_id}"
                ));
            }
        }
    }

    fn on_create_failed(
        &mut self,
        project: &str,
        attempt: &str,
        reason: String,
        now_ms: i64,
        out: &mut Out,
    ) {
        let Some(st) = self.projects.get_mut(project) else {
            return;
        };
        if !st
            .running
            .as_ref()
            .is_some_and(|r| r.attempt == attempt && r.pipeline_id.is_none())
        {
            return;
        }
        let Some(run) = st.running.take() else {
            return;
        };
        out.log.push(format!(
            "{project} failed: could not create pipeline: {reason}"
        ));
        if fail(st, run, reason, None, now_ms) {
            out.log.push(format!(
                "{project} will be retried: an upstream changed while it ran"
            ));
        }
        out.touch(project);
    }

    fn on_rebuild(&mut self, graph: &DepGraph, project: &str, now_ms: i64, out: &mut Out) {
        if !graph.contains(project) {
            out.log
                .push(format!("rebuild of unknown project {project} ignored"));
            return;
        }
        // A manual rebuild that is still pending (and not failed) makes a repeat a no-op, so a
        // double-click or a redelivered request does not start a second cascade.
        let pending = self.projects.get(project).is_some_and(|s| {
            s.failed.is_none()
                && s.stale
                    .as_ref()
                    .is_some_and(|st| st.causes.iter().any(|c| c.upstream == project))
        });
        if pending {
            return;
        }
        let cascade = self.new_cascade_id();
        out.log
            .push(format!("{project} rebuild requested: cascade {cascade}"));
        let cause = Cause {
            upstream: project.to_owned(),
            root: project.to_owned(),
            cascade: cascade.clone(),
            at_ms: now_ms,
        };
        self.mark(project, cause, now_ms, out);
        // Marking is transitive so that "no direct upstream pending" keeps meaning "no ancestor".
        let origins = [(project.to_owned(), cascade)];
        self.mark_descendants(graph, project, &origins, now_ms, out);
    }

    fn on_cancel(
        &mut self,
        graph: &DepGraph,
        projects: &[String],
        with_descendants: bool,
        out: &mut Out,
    ) {
        let mut targets: BTreeSet<String> = projects.iter().cloned().collect();
        if with_descendants {
            let ids: Vec<u32> = projects.iter().filter_map(|p| graph.index_of(p)).collect();
            for d in graph.reach_ids(&ids, true, true) {
                targets.insert(graph.name(d).to_owned());
            }
        }
        for p in &targets {
            let Some(st) = self.projects.get_mut(p) else {
                continue;
            };
            let mut changed = st.stale.take().is_some();
            if let Some(run) = st.running.as_mut()
                && (!run.cancelled || run.restale)
            {
                run.cancelled = true;
                run.restale = false;
                changed = true;
                out.log.push(format!(
                    "{p}: pipeline {} keeps running (cancel it in GitLab to stop it)",
                    run.pipeline_id
                        .map_or_else(|| run.attempt.clone(), |id| id.to_string())
                ));
            }
            if changed {
                out.touch(p);
                out.log.push(format!("{p} cancelled"));
            }
        }
    }

    fn on_forget(&mut self, projects: &[String], out: &mut Out) {
        for p in projects {
            let Some(st) = self.projects.get_mut(p) else {
                continue;
            };
            if st.is_idle() {
                continue;
            }
            if let Some(run) = st.running.take() {
                out.log.push(format!(
                    "{p}: pipeline {} forgotten by the operator (it is not tracked any more)",
                    run.pipeline_id
                        .map_or_else(|| run.attempt.clone(), |id| id.to_string())
                ));
            }
            st.stale = None;
            st.failed = None;
            out.touch(p);
            out.log
                .push(format!("{p} forgotten: no pending work, no failure"));
        }
    }

    /// Adds a cause to one project: a running project gets `restale`, a failed one gets another try.
    fn mark(&mut self, project: &str, cause: Cause, now_ms: i64, out: &mut Out) {
        let st = match self.projects.get_mut(project) {
            Some(st) => st,
            None => self.projects.entry(project.to_owned()).or_default(),
        };
        if out.marked < LOG_DETAIL {
            out.log.push(format!(
                "{project} stale (cause {}, {})",
                cause.upstream, cause.cascade
            ));
        }
        out.marked += 1;
        st.add_cause(cause, now_ms);
        if let Some(run) = st.running.as_mut() {
            run.restale = true;
        }
        st.failed = None;
        out.touch(project);
    }

    fn mark_descendants(
        &mut self,
        graph: &DepGraph,
        project: &str,
        origins: &[(String, String)],
        now_ms: i64,
        out: &mut Out,
    ) {
        let Some(i) = graph.index_of(project) else {
            return;
        };
        for d in graph.reach_ids(&[i], true, true) {
            let name = graph.name(d);
            for (root, cascade) in origins {
                let cause = Cause {
                    upstream: project.to_owned(),
                    root: root.clone(),
                    cascade: cascade.clone(),
                    at_ms: now_ms,
                };
                self.mark(name, cause, now_ms, out);
            }
        }
    }

    /// Stale projects that nothing above blocks and that are not running: after a
    /// [`Cascade::dispatch`], those it held back for the throttle. Costs O(1); 0 before the first
    /// dispatch on `graph`.
    pub fn ready_count(&self, graph: &DepGraph) -> usize {
        self.index.frontier_of(graph).map_or(0, |f| f.ready_len())
    }

    /// Decides what to start now and records each start as `running` with a fresh attempt id and no
    /// pipeline id; returns the pipelines to create. Persist the state before performing them.
    ///
    /// A project starts when it is stale, not running, not failed, not excluded, in the graph, and no
    /// acyclic ancestor is stale or running; candidates go by topological rank, then oldest
    /// `since_ms`, then path, within `max_running` (running ones count) and `can_create`.
    /// Excluded projects that are stale (and not running) have their `stale` cleared here; each is
    /// checked once after it becomes so, so `excluded` must answer the same on every call (the
    /// engine's exclusion is fixed for its lifetime; a load checks every stale project again).
    ///
    /// Costs what changed since the last call, not the number of projects: the candidates come
    /// from the blocked frontier, built once per graph.
    pub fn dispatch(
        &mut self,
        graph: &DepGraph,
        throttle: Throttle,
        excluded: &dyn Fn(&str) -> bool,
        now_ms: i64,
    ) -> Vec<Action> {
        // Excluded: never triggered, never waited for. Only projects that became stale (and not
        // running) since the last dispatch need the check: the others passed it already.
        for p in std::mem::take(&mut self.index.unchecked) {
            let Some(st) = self.projects.get_mut(&p) else {
                continue;
            };
            if st.running.is_none() && st.stale.is_some() && excluded(&p) {
                st.stale = None;
                self.dirty.insert(p.clone());
                self.index.update(&self.projects, Some(graph), &p);
            }
        }

        let running = self.index.running.len();
        // Built here once per graph (after a load or a graph change), kept up to date after.
        let frontier = self.index.frontier_for(graph, &self.projects);
        let slots = throttle
            .max_running
            .saturating_sub(running)
            .min(throttle.can_create);
        if slots == 0 {
            return Vec::new();
        }
        // Startable and blocked by nothing, already in order: topological rank, oldest
        // `since_ms`, path.
        let candidates: Vec<u32> = frontier
            .ready()
            .filter(|&i| !excluded(graph.name(i)))
            .take(slots)
            .collect();

        let mut actions = Vec::new();
        for i in candidates {
            let project = graph.name(i).to_owned();
            let attempt = self.new_attempt_id();
            let Some(st) = self.projects.get_mut(&project) else {
                continue;
            };
            let Some(stale) = st.stale.take() else {
                continue;
            };
            let mut upstreams: Vec<String> = stale
                .causes
                .iter()
                .filter(|c| c.upstream != project)
                .map(|c| c.upstream.clone())
                .collect();
            upstreams.sort();
            upstreams.dedup();
            let mut roots: Vec<String> = stale.causes.iter().map(|c| c.root.clone()).collect();
            roots.sort();
            roots.dedup();
            // One id for GITLAB_DEPS_CASCADE: the oldest cause's, so a chain keeps the id it started
            // with; the full set stays in `causes`.
            let cascade = stale
                .causes
                .iter()
                .min_by(|a, b| {
                    (a.at_ms, cascade_number(&a.cascade), &a.cascade).cmp(&(
                        b.at_ms,
                        cascade_number(&b.cascade),
                        &b.cascade,
                    ))
                })
                .map(|c| c.cascade.clone())
                .unwrap_or_default();
            let running = Running {
                attempt: attempt.clone(),
                pipeline_id: None,
                restale: false,
                started_ms: now_ms,
                upstreams,
                roots,
                cascade,
                causes: stale.causes,
                stale_since_ms: stale.since_ms,
                cancelled: false,
            };
            let variables = variables_for(&running);
            st.running = Some(running);
            self.index.update(&self.projects, Some(graph), &project);
            self.dirty.insert(project.clone());
            actions.push(Action::CreatePipeline {
                project,
                attempt,
                variables,
            });
        }
        actions
    }
}

#[cfg(test)]
impl Cascade {
    /// Panics unless every index equals what a full recomputation from the project states gives.
    pub(crate) fn assert_index_exact(&self, graph: &DepGraph) {
        let fresh = Index::rebuild(&self.projects);
        assert!(
            self.index.same_paths(&fresh),
            "path indexes diverged:\n kept {:?}\n want {:?}",
            self.index,
            fresh
        );
        for p in &self.index.unchecked {
            let s = self.projects.get(p);
            assert!(
                s.is_some_and(|s| s.stale.is_some() && s.running.is_none()),
                "{p} awaits the exclusion check but is not stale-and-idle: {s:?}"
            );
        }
        if let Some(kept) = self.index.frontier_of(graph) {
            let want = index::Frontier::build(graph, &self.projects, &fresh);
            assert_eq!(kept, &want, "blocked frontier diverged");
        }
    }

    /// Whether a blocked frontier exists for this graph.
    pub(crate) fn has_frontier(&self, graph: &DepGraph) -> bool {
        self.index.frontier_of(graph).is_some()
    }
}

/// The CI variables of a pipeline we create for `running` (also used to re-create it after a crash).
pub fn variables_for(running: &Running) -> Vec<(String, String)> {
    vec![
        (VAR_UPSTREAM.to_owned(), running.upstreams.join(",")),
        (VAR_ROOT.to_owned(), running.roots.join(",")),
        (VAR_CASCADE.to_owned(), running.cascade.clone()),
        (VAR_ATTEMPT.to_owned(), running.attempt.clone()),
    ]
}

/// `c-12` -> 12, so that `c-9` sorts before `c-10`.
fn cascade_number(id: &str) -> u64 {
    id.strip_prefix("c-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Our pipeline failed: the project keeps (or gets back) its causes, so everything below it waits.
///
/// If upstreams produced new builds while it ran (`stale` already holds newer causes), the failure
/// is not recorded as blocking: like any new cause on a failed project, the newer upstream build
/// deserves a try, which `dispatch` starts when nothing above is pending.
fn fail(
    st: &mut ProjectState,
    run: Running,
    reason: String,
    pipeline_id: Option<u64>,
    now_ms: i64,
) -> bool {
    let retry = st.stale.is_some();
    if !run.cancelled && !run.causes.is_empty() {
        let mut restored = Stale {
            causes: run.causes,
            since_ms: run.stale_since_ms,
        };
        if let Some(newer) = st.stale.take() {
            restored.since_ms = restored.since_ms.min(newer.since_ms);
            for c in newer.causes {
                if !restored
                    .causes
                    .iter()
                    .any(|r| r.upstream == c.upstream && r.cascade == c.cascade)
                {
                    restored.causes.push(c);
                }
            }
        }
        st.stale = Some(restored);
    }
    if !retry {
        st.failed = Some(Failure {
            reason,
            pipeline_id,
            at_ms: now_ms,
        });
    }
    retry
}
