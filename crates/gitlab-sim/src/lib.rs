//! `gitlab-sim`: a simulated GitLab server speaking a faithful subset of the
//! REST API v4 over real HTTP, with pipelines that change status over time,
//! real webhook deliveries and fault injection.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use gitlab_sim::{ProjectSpec, Sim, SimOptions};
//! let sim = Sim::new(SimOptions::default());
//! sim.add_project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian"));
//! let url = sim.start().await?;
//! // GET {url}/api/v4/projects with header PRIVATE-TOKEN: sim-token
//! # let _ = url; Ok(()) }
//! ```

#![warn(missing_docs)]

mod api;
mod engine;
mod faults;
pub mod lb;
mod model;
mod sample;
mod state;
mod util;
mod webhooks;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use faults::{FaultHandle, FaultResponse, FaultRule, Faults};
pub use lb::LoadBalancer;
pub use model::{
    DeliveryLog, Endpoint, HookInfo, MergeRequestSpec, Outcome, PipelineInfo, PipelineSpec,
    PipelineStatus, ProjectSpec, RequestLog, SampleInfo,
};

use crate::state::{State, Urls};

/// The hooks with these ids, in that order.
fn hook_infos(st: &State, ids: &[u64]) -> Vec<HookInfo> {
    ids.iter()
        .filter_map(|id| st.hooks.get(id))
        .map(hook_info)
        .collect()
}

fn hook_info(h: &state::Hook) -> HookInfo {
    HookInfo {
        id: h.id,
        project_id: h.project_id,
        group_id: h.group_id,
        url: h.url.clone(),
        token: h.token.clone(),
        push_events: h.push_events,
        pipeline_events: h.pipeline_events,
        tag_push_events: h.tag_push_events,
        merge_requests_events: h.merge_requests_events,
        enable_ssl_verification: h.enable_ssl_verification,
        push_events_branch_filter: h.push_events_branch_filter.clone(),
        branch_filter_strategy: h.branch_filter_strategy.clone(),
        alert_status: h.alert_status.clone(),
        uuid: h.uuid.clone(),
    }
}
use crate::util::lock;

/// Maximum number of entries kept by the request log (oldest dropped first);
/// [`Sim::request_count`] keeps counting past it.
pub const REQUEST_LOG_CAPACITY: usize = 200_000;

/// Options of a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Accepted token (`PRIVATE-TOKEN` or `Authorization: Bearer`). Default `sim-token`.
    pub token: String,
    /// Registry host for `container_registry_image_prefix`. Default `registry.gitlab.test`.
    pub registry_host: Option<String>,
    /// Latency added to every API request. Default 0.
    pub latency: Duration,
    /// Time from creation to final status (running at half). Default 200 ms.
    pub pipeline_duration: Duration,
    /// Pipelines finish by themselves (default `true`); otherwise they stay
    /// `running` until [`Sim::finish_pipeline`].
    pub auto_finish: bool,
    /// Above this many items, lists omit `X-Total`, `X-Total-Pages` and
    /// `rel="last"` (GitLab: 10,000).
    pub count_limit: usize,
    /// The instance's public address (GitLab's `external_url`, e.g.
    /// `https://gitlab.example.org` or `https://example.org/gitlab`), shown in
    /// `web_url`, `http_url_to_repo` and `ssh_url_to_repo` while the API is
    /// served on a local address. Default: the address it serves on.
    pub external_url: Option<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            token: "sim-token".to_owned(),
            registry_host: None,
            latency: Duration::ZERO,
            pipeline_duration: Duration::from_millis(200),
            auto_finish: true,
            count_limit: 10_000,
            external_url: None,
        }
    }
}

/// Shared state behind a [`Sim`].
pub(crate) struct Inner {
    pub opts: SimOptions,
    pub registry: String,
    pub state: Mutex<State>,
    pub faults: FaultHandle,
    pub request_count: AtomicU64,
    pub write_count: AtomicU64,

    pub endpoint_counts: Mutex<std::collections::BTreeMap<Endpoint, u64>>,
    pub requests: Mutex<VecDeque<RequestLog>>,
    pub deliveries: Mutex<Vec<DeliveryLog>>,
    pub base_url: Mutex<Option<String>>,
    pub runtime: Mutex<Option<tokio::runtime::Handle>>,
    pub http: reqwest::Client,
    pub webhooks: Mutex<webhooks::Queues>,
    /// Tokens accepted besides `opts.token` ([`Sim::accept_token`]).
    pub extra_tokens: Mutex<Vec<String>>,
}

/// A simulated GitLab instance. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("url", &self.url()).finish()
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new(SimOptions::default())
    }
}

impl Sim {
    /// Creates a simulator (not yet serving; see [`Sim::start`]).
    pub fn new(opts: SimOptions) -> Self {
        let registry = opts
            .registry_host
            .clone()
            .unwrap_or_else(|| "registry.gitlab.test".to_owned());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                opts,
                registry,
                state: Mutex::new(State::new()),
                faults: FaultHandle::default(),
                request_count: AtomicU64::new(0),
                write_count: AtomicU64::new(0),

                endpoint_counts: Mutex::new(std::collections::BTreeMap::new()),
                requests: Mutex::new(VecDeque::new()),
                deliveries: Mutex::new(Vec::new()),
                base_url: Mutex::new(None),
                runtime: Mutex::new(tokio::runtime::Handle::try_current().ok()),
                http,
                webhooks: Mutex::new(webhooks::Queues::default()),
                extra_tokens: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Binds `127.0.0.1:0` and serves in a tokio task; returns the base URL
    /// `http://127.0.0.1:PORT`.
    pub async fn start(&self) -> std::io::Result<String> {
        self.start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and serves in a tokio task; returns the base URL.
    pub async fn start_on(&self, addr: SocketAddr) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}");
        *lock(&self.inner.base_url) = Some(url.clone());
        *lock(&self.inner.runtime) = Some(tokio::runtime::Handle::current());
        let app = api::router(self.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("gitlab-sim server stopped: {e}");
            }
        });
        Ok(url)
    }

    /// Base URL (`http://127.0.0.1:PORT`), or `http://gitlab.test` before start.
    pub fn url(&self) -> String {
        lock(&self.inner.base_url)
            .clone()
            .unwrap_or_else(|| "http://gitlab.test".to_owned())
    }

    /// The accepted token.
    pub fn token(&self) -> String {
        self.inner.opts.token.clone()
    }

    /// Accepts `token` as well as the main one, with the same rights: clients given tokens of their
    /// own can be told apart afterwards ([`PipelineInfo::token`]).
    pub fn accept_token(&self, token: &str) {
        let mut tokens = lock(&self.inner.extra_tokens);
        if !tokens.iter().any(|t| t == token) {
            tokens.push(token.to_owned());
        }
    }

    /// The registry host used in `container_registry_image_prefix`.
    pub fn registry_host(&self) -> String {
        self.inner.registry.clone()
    }

    pub(crate) fn urls(&self) -> Urls {
        Urls {
            base: self
                .inner
                .opts
                .external_url
                .as_deref()
                .map_or_else(|| self.url(), |u| u.trim_end_matches('/').to_owned()),
            registry: self.inner.registry.clone(),
        }
    }

    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(fut);
        } else if let Some(h) = lock(&self.inner.runtime).clone() {
            h.spawn(fut);
        } else {
            tracing::warn!("gitlab-sim: no tokio runtime; background work skipped");
        }
    }

    /// Creates a group and its parents; returns its id.
    pub fn add_group(&self, full_path: &str) -> u64 {
        lock(&self.inner.state).ensure_group(full_path)
    }

    /// Creates a project (and its namespace groups); returns its id. An
    /// existing path returns the existing id unchanged.
    pub fn add_project(&self, spec: ProjectSpec) -> u64 {
        lock(&self.inner.state).add_project(spec)
    }

    /// Id of a project by full path.
    pub fn project_id(&self, project: &str) -> Option<u64> {
        lock(&self.inner.state).find_project(project)
    }

    /// Commits `content` to `file_path` on the default branch (new head sha,
    /// `last_activity_at` = now). No hooks, no pipeline (see [`Sim::push`]).
    ///
    /// # Panics
    /// If the project does not exist.
    #[track_caller]
    pub fn set_file(&self, project: &str, file_path: &str, content: &str) {
        self.commit_files(project, &[(file_path, Some(content))]);
    }

    /// Commits a symbolic link at `file_path` pointing to `target` on the
    /// default branch (git mode `120000`; its blob content is the target path).
    ///
    /// # Panics
    /// If the project does not exist.
    #[track_caller]
    pub fn set_symlink(&self, project: &str, file_path: &str, target: &str) {
        let (id, branch, _, _) = self.commit_files(project, &[(file_path, Some(target))]);
        let mut st = lock(&self.inner.state);
        if let Some(r) = st
            .projects
            .get_mut(&id)
            .and_then(|p| p.branches.get_mut(&branch))
            && let Some(entry) = Arc::make_mut(&mut r.files).get_mut(file_path)
        {
            entry.mode = "120000";
        }
    }

    /// Removes a file from the default branch with a new commit.
    ///
    /// # Panics
    /// If the project does not exist.
    #[track_caller]
    pub fn remove_file(&self, project: &str, file_path: &str) {
        self.commit_files(project, &[(file_path, None)]);
    }

    #[track_caller]
    fn commit_files(
        &self,
        project: &str,
        files: &[(&str, Option<&str>)],
    ) -> (u64, String, String, String) {
        let mut st = lock(&self.inner.state);
        let id = match st.find_project(project) {
            Some(id) => id,
            None => panic!("gitlab-sim: unknown project {project}"),
        };
        let Some(p) = st.projects.get_mut(&id) else {
            panic!("gitlab-sim: unknown project {project}");
        };
        let branch = p
            .default_branch
            .clone()
            .unwrap_or_else(|| "main".to_owned());
        let changes: Vec<(String, Option<String>)> = files
            .iter()
            .map(|(f, c)| ((*f).to_owned(), c.map(str::to_owned)))
            .collect();
        let message = match files {
            [(f, Some(_))] => format!("Update {f}"),
            [(f, None)] => format!("Delete {f}"),
            _ => format!("Update {} files", files.len()),
        };
        let (before, after) = state::commit(p, &branch, &changes, &message);
        (id, branch, before, after)
    }

    /// One commit changing (`Some`) or removing (`None`) several files on the
    /// default branch, then a Push Hook to hooks with `push_events`, then (if
    /// `.gitlab-ci.yml` exists after the commit) a pipeline with source `push`.
    ///
    /// # Panics
    /// If the project does not exist.
    #[track_caller]
    pub fn push(&self, project: &str, files: &[(&str, Option<&str>)]) -> Option<u64> {
        let (id, branch, before, after) = self.commit_files(project, files);
        webhooks::push_event(self, id, &branch, &before, &after);
        let has_ci = {
            let st = lock(&self.inner.state);
            st.projects
                .get(&id)
                .and_then(|p| p.branches.get(&branch))
                .is_some_and(|r| r.files.contains_key(".gitlab-ci.yml"))
        };
        has_ci.then(|| {
            engine::create(
                self,
                id,
                engine::NewPipeline {
                    ref_name: Some(branch),
                    sha: Some(after),
                    before_sha: Some(before),
                    ..engine::NewPipeline::new("push")
                },
            )
            .map(|(pid, _)| pid)
            .unwrap_or_default()
        })
    }

    /// Head commit of the default branch.
    pub fn head_commit(&self, project: &str) -> Option<String> {
        let st = lock(&self.inner.state);
        let id = st.find_project(project)?;
        st.projects.get(&id)?.head().map(|r| r.head.clone())
    }

    /// Content of a file on the default branch.
    pub fn file(&self, project: &str, file_path: &str) -> Option<String> {
        let st = lock(&self.inner.state);
        let id = st.find_project(project)?;
        st.projects
            .get(&id)?
            .head()?
            .files
            .get(file_path)
            .map(|f| f.content.to_string())
    }

    /// Creates a branch at the default branch head.
    ///
    /// # Panics
    /// If the project does not exist or is empty.
    #[track_caller]
    pub fn add_branch(&self, project: &str, branch: &str) {
        self.copy_ref(project, branch, false);
    }

    /// Creates a tag at the default branch head.
    ///
    /// # Panics
    /// If the project does not exist or is empty.
    #[track_caller]
    pub fn add_tag(&self, project: &str, tag: &str) {
        self.copy_ref(project, tag, true);
    }

    #[track_caller]
    fn copy_ref(&self, project: &str, name: &str, tag: bool) {
        let mut st = lock(&self.inner.state);
        let p = st
            .find_project(project)
            .and_then(|id| st.projects.get_mut(&id));
        let Some(p) = p else {
            panic!("gitlab-sim: unknown project {project}");
        };
        let Some(head) = p.head().cloned() else {
            panic!("gitlab-sim: project {project} is empty");
        };
        if tag {
            p.tags.insert(name.to_owned(), head);
        } else {
            p.branches.insert(name.to_owned(), head);
        }
    }

    /// Archives or unarchives a project.
    pub fn set_archived(&self, project: &str, archived: bool) {
        let mut st = lock(&self.inner.state);
        if let Some(id) = st.find_project(project) {
            st.set_archived(id, archived);
        }
    }

    /// Whether the token is Maintainer of the project; `false` answers 403 on
    /// all hook endpoints and on pipeline create/retry/cancel.
    pub fn set_maintainer(&self, project: &str, yes: bool) {
        self.with_project(project, |p| p.maintainer = yes);
    }

    /// Whether pipelines created through the API may carry variables; `false` answers such a
    /// request with GitLab's 400 "Insufficient permissions to set pipeline variables".
    pub fn set_variables_allowed(&self, project: &str, yes: bool) {
        self.with_project(project, |p| p.variables_allowed = yes);
    }

    /// Outcome of all future pipelines of the project (after any queued ones).
    pub fn set_pipeline_outcome(&self, project: &str, outcome: Outcome) {
        self.with_project(project, |p| p.outcome_default = outcome);
    }

    /// Outcomes of the next pipelines (and retries), in order.
    pub fn queue_pipeline_outcomes(&self, project: &str, outcomes: &[Outcome]) {
        self.with_project(project, |p| {
            p.outcome_queue.extend(outcomes.iter().copied())
        });
    }

    fn with_project(&self, project: &str, f: impl FnOnce(&mut state::Project)) {
        let mut st = lock(&self.inner.state);
        if let Some(p) = st
            .find_project(project)
            .and_then(|id| st.projects.get_mut(&id))
        {
            f(p);
        } else {
            tracing::warn!("gitlab-sim: unknown project {project}");
        }
    }

    /// Starts a pipeline on the default branch as GitLab would for a
    /// push/web/schedule (no CI-file or ref validation); returns its id.
    ///
    /// # Panics
    /// If the project does not exist.
    #[track_caller]
    pub fn run_pipeline(&self, project: &str, source: &str) -> u64 {
        self.run_pipeline_with(project, PipelineSpec::new(source))
    }

    /// Starts a pipeline described by `spec`; returns its id.
    ///
    /// # Panics
    /// If the project does not exist.
    #[track_caller]
    pub fn run_pipeline_with(&self, project: &str, spec: PipelineSpec) -> u64 {
        let Some(id) = self.project_id(project) else {
            panic!("gitlab-sim: unknown project {project}");
        };
        let upstream = spec.upstream.as_ref().and_then(|(p, pid)| {
            let up = self.project_id(p);
            up.map(|u| (u, *pid))
        });
        let req = engine::NewPipeline {
            ref_name: spec.ref_name,
            tag: Some(spec.tag),
            variables: spec
                .variables
                .into_iter()
                .map(|(k, v)| state::Variable {
                    key: k,
                    value: v,
                    variable_type: "env_var".to_owned(),
                })
                .collect(),
            outcome: spec.outcome,
            merge_request: spec.merge_request,
            upstream,
            ..engine::NewPipeline::new(&spec.source)
        };
        engine::create(self, id, req)
            .map(|(pid, _)| pid)
            .unwrap_or_default()
    }

    /// Finishes a pipeline now with `outcome` (for `auto_finish: false`).
    /// Pipeline ids are global; `project` is only for readability.
    /// No-op if it already finished.
    pub fn finish_pipeline(&self, project: &str, pipeline_id: u64, outcome: Outcome) {
        let _ = project;
        engine::finish(self, pipeline_id, outcome.status());
    }

    /// Retries a failed or canceled pipeline (same id; back to pending; takes
    /// the next queued/default outcome). Ids are global; `project` is informational.
    pub fn retry_pipeline(&self, project: &str, pipeline_id: u64) {
        let _ = project;
        engine::retry(self, pipeline_id);
    }

    /// Pipelines of a project, oldest first.
    pub fn pipelines(&self, project: &str) -> Vec<PipelineInfo> {
        let st = lock(&self.inner.state);
        let Some(p) = st.find_project(project).and_then(|id| st.projects.get(&id)) else {
            return Vec::new();
        };
        p.pipelines
            .iter()
            .filter_map(|id| st.pipelines.get(id))
            .map(|pl| st.pipeline_info(pl))
            .collect()
    }

    /// One pipeline by global id.
    pub fn pipeline(&self, pipeline_id: u64) -> Option<PipelineInfo> {
        let st = lock(&self.inner.state);
        st.pipelines
            .get(&pipeline_id)
            .map(|pl| st.pipeline_info(pl))
    }

    /// All pipelines as (project path, info), by id.
    pub fn all_pipelines(&self) -> Vec<(String, PipelineInfo)> {
        let st = lock(&self.inner.state);
        let mut v: Vec<(String, PipelineInfo)> = st
            .pipelines
            .values()
            .map(|pl| {
                let info = st.pipeline_info(pl);
                (info.project.clone(), info)
            })
            .collect();
        v.sort_by_key(|(_, i)| i.id);
        v
    }

    /// How many pipelines of `source` (`api`, `push`, …) have finished: a count under the lock,
    /// for callers that poll and must not copy every pipeline each time.
    pub fn finished_pipelines(&self, source: &str) -> usize {
        lock(&self.inner.state)
            .pipelines
            .values()
            .filter(|pl| pl.source == source && pl.status.is_finished())
            .count()
    }

    /// Hooks of a project, token included.
    pub fn hooks(&self, project: &str) -> Vec<HookInfo> {
        let st = lock(&self.inner.state);
        let Some(p) = st.find_project(project).and_then(|id| st.projects.get(&id)) else {
            return Vec::new();
        };
        hook_infos(&st, &p.hooks)
    }

    /// Hooks of a group, token included.
    pub fn group_hooks(&self, group: &str) -> Vec<HookInfo> {
        let st = lock(&self.inner.state);
        let Some(g) = st.find_group(group).and_then(|id| st.groups.get(&id)) else {
            return Vec::new();
        };
        hook_infos(&st, &g.hooks)
    }

    /// Whether group hooks exist (GitLab Premium); without, their endpoints answer 404 as on a
    /// Free instance. Default `false`.
    pub fn set_premium(&self, yes: bool) {
        lock(&self.inner.state).premium = yes;
    }

    /// Sets a hook's `alert_status` (`executable`, `temporarily_disabled`, `disabled`), as GitLab
    /// does after failed deliveries; a disabled hook receives no events. `disabled_until` is set an
    /// hour ahead for `temporarily_disabled`.
    pub fn set_hook_alert_status(&self, hook_id: u64, status: &str) {
        if let Some(h) = lock(&self.inner.state).hooks.get_mut(&hook_id) {
            h.alert_status = status.to_owned();
            h.disabled_until =
                (status == "temporarily_disabled").then(|| util::now() + time::Duration::hours(1));
        }
    }

    /// Changes a project's default branch, creating the branch at the current head if needed.
    ///
    /// # Panics
    /// If the project does not exist or is empty.
    #[track_caller]
    pub fn set_default_branch(&self, project: &str, branch: &str) {
        let mut st = lock(&self.inner.state);
        let p = st
            .find_project(project)
            .and_then(|id| st.projects.get_mut(&id));
        let Some(p) = p else {
            panic!("gitlab-sim: unknown project {project}");
        };
        let Some(head) = p.head().cloned() else {
            panic!("gitlab-sim: project {project} is empty");
        };
        p.branches.entry(branch.to_owned()).or_insert(head);
        p.default_branch = Some(branch.to_owned());
    }

    /// Adds a hook with `pipeline_events` and `push_events`; returns its id.
    ///
    /// # Panics
    /// If the project does not exist.
    #[track_caller]
    pub fn add_hook(&self, project: &str, url: &str, token: &str) -> u64 {
        let mut st = lock(&self.inner.state);
        let Some(pid) = st.find_project(project) else {
            panic!("gitlab-sim: unknown project {project}");
        };
        let id = st.next_hook_id;
        st.next_hook_id += 1;
        st.hooks.insert(
            id,
            state::Hook {
                id,
                project_id: pid,
                url: url.to_owned(),
                token: token.to_owned(),
                push_events: true,
                pipeline_events: true,
                tag_push_events: false,
                merge_requests_events: false,
                enable_ssl_verification: true,
                push_events_branch_filter: None,
                branch_filter_strategy: "wildcard".to_owned(),
                alert_status: "executable".to_owned(),
                disabled_until: None,
                group_id: None,
                created_at: util::now(),
                uuid: uuid::Uuid::new_v4().to_string(),
            },
        );
        if let Some(p) = st.projects.get_mut(&pid) {
            p.hooks.push(id);
        }
        id
    }

    /// Handle to change faults at any time.
    pub fn faults(&self) -> FaultHandle {
        self.inner.faults.clone()
    }

    /// Replaces the fault configuration.
    pub fn set_faults(&self, f: Faults) {
        self.inner.faults.set(f);
    }

    /// Number of API requests received (faulted and unauthorized included).
    pub fn request_count(&self) -> u64 {
        self.inner.request_count.load(Ordering::Relaxed)
    }

    /// Number of API requests other than GET and HEAD received (faulted ones included); reset by
    /// [`Sim::reset_request_log`].
    pub fn write_count(&self) -> u64 {
        self.inner.write_count.load(Ordering::Relaxed)
    }

    /// Logged requests, oldest first (at most [`REQUEST_LOG_CAPACITY`]).
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.inner.requests).iter().cloned().collect()
    }

    /// Requests received per endpoint class since the start or the last
    /// [`Sim::reset_request_log`] (faulted and unauthorized included).
    pub fn endpoint_count(&self, endpoint: Endpoint) -> u64 {
        lock(&self.inner.endpoint_counts)
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// Clears the request log and resets [`Sim::request_count`] and the
    /// per-endpoint counts.
    pub fn reset_request_log(&self) {
        lock(&self.inner.requests).clear();
        lock(&self.inner.endpoint_counts).clear();
        self.inner.request_count.store(0, Ordering::Relaxed);
        self.inner.write_count.store(0, Ordering::Relaxed);
    }

    /// Webhook delivery attempts, oldest first.
    pub fn deliveries(&self) -> Vec<DeliveryLog> {
        lock(&self.inner.deliveries).clone()
    }

    /// Resends the project's last webhook event (to each hook it went to) with
    /// the same `Idempotency-Key` and a new `X-Gitlab-Event-UUID`.
    pub fn redeliver_last(&self, project: &str) {
        if let Some(id) = self.project_id(project) {
            webhooks::redeliver_last(self, id);
        }
    }

    /// Polls `cond` every 5 ms until it holds or `timeout` passes; returns
    /// whether it held. For tests waiting on asynchronous effects.
    pub async fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until a pipeline reaches a final status; returns it (or `None`
    /// on timeout / unknown pipeline).
    pub async fn wait_pipeline(
        &self,
        pipeline_id: u64,
        timeout: Duration,
    ) -> Option<PipelineStatus> {
        let mut status = None;
        self.wait_for(timeout, |s| {
            status = s.pipeline(pipeline_id).map(|p| p.status);
            status.is_some_and(PipelineStatus::is_finished)
        })
        .await
        .then_some(status)
        .flatten()
    }

    /// Builds the demo instance (see [`SampleInfo`]).
    pub fn with_sample_instance(&self) -> SampleInfo {
        sample::build(self)
    }

    pub(crate) fn log_request(&self, entry: RequestLog) {
        let mut log = lock(&self.inner.requests);
        if log.len() >= REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }
}
