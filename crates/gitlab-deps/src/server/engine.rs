//! The engine: folds the durable event log into the cascade state, persists it, and performs the
//! resulting actions (pipeline creations) against GitLab. Also runs the reconciler (polls pipelines
//! whose webhooks may have been lost, resolves creations interrupted by a crash) and rescans.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::payload::{self, HookEvent};
use crate::cascade::{
    Action, Cascade, Counters, Input, PipelineStatus, ProjectState, Throttle, VAR_ATTEMPT,
};
use crate::config::PathPatterns;
use crate::gitlab::{GitLab, GitLabError};
use crate::graph::DepGraph;
use crate::scan::{Rescanned, ScanRequest, Scanner};
use crate::store::{ProjectRecord, Store, StoreError, StoredEvent};
use crate::util::now_ms;

/// Event-log kind of an internal or operator input: the body is a serialized [`Input`].
pub const INPUT_EVENT: &str = "gitlab-deps/input";
const BATCH: usize = 512;
const EVENT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Store key holding the time of the last complete scan (written by [`crate::scan`]).
const SCAN_STAMP: &str = crate::scan::LAST_SCAN_KEY;
/// Attempts to rescan a project after a push before leaving it to the scheduled rescan.
const RESCAN_TRIES: u32 = 3;
/// Attempts to create one pipeline before leaving it to the reconciler.
const CREATE_TRIES: u32 = 6;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// At most this many pipelines of ours run at once.
    pub max_running: usize,
    /// At most this many pipelines created per minute.
    pub max_per_minute: Option<u32>,
    /// Projects never triggered.
    pub exclude: PathPatterns,
    /// Poll a created pipeline with no final status after this long.
    pub reconcile_after: Duration,
    /// Rescan the whole instance this often (`None`: never).
    pub rescan_every: Option<Duration>,
    /// Files whose change in a push triggers a rescan of the project.
    pub watched_files: Vec<String>,
}

/// How a creation task was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Fresh from dispatch; the engine already claimed the attempt.
    Claimed,
    /// Resolving an old intent (after a crash or an outage): claim it, and look for an existing
    /// pipeline before creating one.
    Recover,
}

/// A pipeline creation to resolve: project, attempt, variables.
type Intent = (String, String, Vec<(String, String)>);

#[derive(Clone)]
struct Records {
    by_path: HashMap<String, ProjectRecord>,
    path_by_id: HashMap<u64, String>,
}

/// A consistent view for the status page and the demo.
pub struct Snapshot {
    /// The cascade state.
    pub cascade: Cascade,
    /// The graph it runs on.
    pub graph: Arc<DepGraph>,
    /// Web URLs of projects, by path.
    pub web_urls: HashMap<String, String>,
}

/// The orchestration engine. Create with [`Engine::new`], run with [`Engine::spawn`].
pub struct Engine {
    store: Arc<dyn Store>,
    gitlab: GitLab,
    scanner: Option<Arc<Scanner>>,
    opts: EngineOptions,
    graph: RwLock<Arc<DepGraph>>,
    records: RwLock<Arc<Records>>,
    /// Held from reading the store to installing the result, by whole reloads and one-project
    /// updates alike: each installs what the store held when it read, so neither can install
    /// older data over the other's newer.
    graph_writer: Mutex<()>,
    cascade: tokio::sync::Mutex<Cascade>,
    wake: Notify,
    in_flight: Mutex<HashSet<String>>,
    /// Projects being rescanned; `true` when another push arrived meanwhile (scan once more).
    rescanning: Mutex<HashMap<String, bool>>,
    /// When recent pipelines were created, for `max_per_minute` (empty without that limit);
    /// entries older than a minute are dropped by [`Engine::throttle`] before every dispatch.
    created_at: Mutex<VecDeque<Instant>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Loads the graph and the persisted cascade state.
    pub fn new(
        store: Arc<dyn Store>,
        gitlab: GitLab,
        scanner: Option<Arc<Scanner>>,
        opts: EngineOptions,
    ) -> Result<Self, StoreError> {
        let cascade = load_cascade(store.as_ref())?;
        let engine = Self {
            store,
            gitlab,
            scanner,
            opts,
            graph: RwLock::new(Arc::new(DepGraph::new())),
            records: RwLock::new(Arc::new(Records {
                by_path: HashMap::new(),
                path_by_id: HashMap::new(),
            })),
            graph_writer: Mutex::new(()),
            cascade: tokio::sync::Mutex::new(cascade),
            wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            rescanning: Mutex::new(HashMap::new()),
            created_at: Mutex::new(VecDeque::new()),
            metrics: Metrics::new(),
        };
        engine.reload()?;
        Ok(engine)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Re-reads the graph and project records from the store (after a scan).
    pub fn reload(&self) -> Result<(), StoreError> {
        let _writer = lock(&self.graph_writer);
        let projects = self.store.projects()?;
        let graph = crate::scan::graph_of(&projects, self.store.edges()?);
        let records = Records {
            path_by_id: projects.iter().map(|p| (p.id, p.path.clone())).collect(),
            by_path: projects.into_iter().map(|p| (p.path.clone(), p)).collect(),
        };
        *self.graph.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(graph);
        *self.records.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(records);
        Ok(())
    }

    fn graph(&self) -> Arc<DepGraph> {
        self.graph.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True when a push may have changed a project's dependency files on its default branch.
    pub fn push_matters(&self, push: &super::payload::PushEvent) -> bool {
        let watched: Vec<&str> = self.opts.watched_files.iter().map(String::as_str).collect();
        push.touches(&watched)
    }

    /// Wakes the engine loop (after an event was logged).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// A copy of the current state.
    pub async fn snapshot(&self) -> Snapshot {
        // Only what is not idle: idle projects keep a small pipeline memory each, and copying all
        // of them for every status request would cost O(projects).
        let cascade = self.cascade.lock().await.active_copy();
        let records = self.records();
        let web_urls = cascade
            .projects()
            .filter_map(|(p, _)| Some((p.to_owned(), records.by_path.get(p)?.web_url.clone())))
            .collect();
        Snapshot {
            cascade,
            graph: self.graph(),
            web_urls,
        }
    }

    /// Starts the engine loop, the reconciler and the periodic rescan.
    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(self.clone().run_loop(shutdown.clone())),
            tokio::spawn(self.clone().reconcile_loop(shutdown.clone())),
        ];
        if let Some(every) = self.opts.rescan_every {
            tasks.push(tokio::spawn(self.clone().rescan_loop(every, shutdown)));
        }
        tasks
    }

    async fn run_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut scan_stamp = self.store.meta(SCAN_STAMP).ok().flatten();
        let mut checked = Instant::now();
        loop {
            // A scan by another process (`gitlab-deps scan`, a timer) changes the graph under us.
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = Instant::now();
                let stamp = self.store.meta(SCAN_STAMP).ok().flatten();
                if stamp != scan_stamp {
                    scan_stamp = stamp;
                    tracing::info!("the dependency graph was rescanned, reloading it");
                    self.after_scan().await;
                }
            }
            if let Err(e) = self.process().await {
                tracing::error!("cannot process events: {e}");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                // Operator commands arrive through the database, and throttled work becomes
                // startable as time passes: look again every second.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Drains the event log: applies every logged event, dispatches, persists, then acts.
    pub async fn process(self: &Arc<Self>) -> Result<(), StoreError> {
        loop {
            let events = self.store.unprocessed_events(BATCH)?;
            let graph = self.graph();
            let records = self.records();
            let mut cascade = self.cascade.lock().await;
            let now = now_ms();
            let mut log = Vec::new();
            let mut rescans = Vec::new();
            let mut last = None;
            for event in &events {
                last = Some(event.seq);
                for input in self.inputs(event, &records, &mut rescans) {
                    let applied = cascade.apply(&graph, input, now);
                    log.extend(applied.log);
                }
            }
            let throttle = self.throttle();
            let exclude = &self.opts.exclude;
            let actions = cascade.dispatch(&graph, throttle, &|p| exclude.matches(p), now);
            // Creation times only matter to a per-minute limit; without one they are not kept.
            if self.opts.max_per_minute.is_some() && !actions.is_empty() {
                let mut times = lock(&self.created_at);
                let at = Instant::now();
                times.extend(actions.iter().map(|_| at));
            }
            for Action::CreatePipeline {
                project, attempt, ..
            } in &actions
            {
                log.push(format!(
                    "{project}: starting a pipeline (attempt {attempt})"
                ));
            }
            let changes = cascade
                .take_dirty()
                .into_iter()
                .map(|(p, state)| Ok((p, state.map(serde_json::to_string).transpose()?)))
                .collect::<Result<Vec<_>, serde_json::Error>>()?;
            if !changes.is_empty() || last.is_some() {
                // The intent to create each pipeline is durable before any is created.
                let counters = serde_json::to_string(&cascade.counters())?;
                if let Err(e) = self.store.commit_cascade(&changes, &counters, last) {
                    // Keep the changes for the next commit; the events stay unprocessed and the
                    // intents unperformed (the reconciler resolves them if nothing else does).
                    cascade.mark_dirty(changes.into_iter().map(|(p, _)| p));
                    return Err(e);
                }
            }
            // Claimed before the lock is released, so the reconciler never starts a second
            // creation of the same attempt.
            {
                let mut claimed = lock(&self.in_flight);
                for Action::CreatePipeline { attempt, .. } in &actions {
                    claimed.insert(attempt.clone());
                }
            }
            self.metrics.observe(&cascade);
            drop(cascade);
            for action in actions {
                let Action::CreatePipeline {
                    project,
                    attempt,
                    variables,
                } = action;
                tokio::spawn(
                    self.clone()
                        .create(project, attempt, variables, Claim::Claimed),
                );
            }
            for line in &log {
                tracing::info!("{line}");
            }
            if let Err(e) = self.store.log_activity(now, &log) {
                tracing::warn!("cannot write the activity log: {e}");
            }
            self.metrics.events_processed.inc_by(events.len() as u64);
            for project in rescans {
                self.clone().spawn_rescan(project);
            }
            if events.len() < BATCH {
                return Ok(());
            }
        }
    }

    /// Translates one logged event into cascade inputs.
    fn inputs(
        &self,
        event: &StoredEvent,
        records: &Records,
        rescans: &mut Vec<String>,
    ) -> Vec<Input> {
        if event.kind == INPUT_EVENT {
            return match serde_json::from_str::<Input>(&event.body) {
                Ok(input) => vec![input],
                Err(e) => {
                    tracing::error!(
                        seq = event.seq,
                        "skipping an unreadable internal event: {e}"
                    );
                    Vec::new()
                }
            };
        }
        let parsed = match payload::parse(&event.kind, event.body.as_bytes()) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(seq = event.seq, "skipping event: {e}");
                return Vec::new();
            }
        };
        match parsed {
            HookEvent::Pipeline(p) => {
                let Some(status) = p.final_status().and_then(status_of) else {
                    return Vec::new();
                };
                if !p.is_default_branch_build() {
                    return Vec::new();
                }
                // Renames keep the id; the stored path is the one the graph knows.
                let Some(project) = records
                    .path_by_id
                    .get(&p.project_id)
                    .cloned()
                    .or_else(|| p.project.clone())
                else {
                    // Neither known nor named: not a project of ours.
                    return Vec::new();
                };
                vec![Input::PipelineFinished {
                    project,
                    pipeline_id: p.pipeline_id,
                    attempt: p.variable(VAR_ATTEMPT).map(str::to_owned),
                    status,
                    reason: Some(format!("pipeline #{} {}", p.pipeline_id, p.status)),
                    created_ms: p.created_ms,
                }]
            }
            HookEvent::Push(push) => {
                let watched: Vec<&str> =
                    self.opts.watched_files.iter().map(String::as_str).collect();
                if push.touches(&watched)
                    && let Some(project) = records
                        .path_by_id
                        .get(&push.project_id)
                        .cloned()
                        .or(push.project)
                {
                    rescans.push(project);
                }
                Vec::new()
            }
        }
    }

    fn throttle(&self) -> Throttle {
        let can_create = match self.opts.max_per_minute {
            None => usize::MAX,
            Some(limit) => {
                let mut times = lock(&self.created_at);
                while times
                    .front()
                    .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    times.pop_front();
                }
                (limit as usize).saturating_sub(times.len())
            }
        };
        Throttle {
            max_running: self.opts.max_running,
            can_create,
        }
    }

    /// Logs an internal input durably and wakes the loop.
    fn enqueue(&self, key: &str, input: &Input) {
        let body = match serde_json::to_string(input) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode {input:?}: {e}");
                return;
            }
        };
        match self.store.insert_event(key, INPUT_EVENT, &body) {
            Ok(_) => self.notify(),
            Err(e) => tracing::error!("cannot record {key}: {e}"),
        }
    }

    /// Creates the pipeline of an attempt exactly once: before every retry (and always when
    /// `adopt_first`, after a crash) it looks for a pipeline that already carries the attempt id.
    async fn create(
        self: Arc<Self>,
        project: String,
        attempt: String,
        variables: Vec<(String, String)>,
        claim: Claim,
    ) {
        if claim == Claim::Recover && !lock(&self.in_flight).insert(attempt.clone()) {
            return;
        }
        let adopt_first = claim == Claim::Recover;
        let outcome = self
            .create_or_adopt(&project, &attempt, &variables, adopt_first)
            .await;
        lock(&self.in_flight).remove(&attempt);
        match outcome {
            Ok(Some(pipeline_id)) => self.enqueue(
                &format!("created:{attempt}"),
                &Input::PipelineCreated {
                    project,
                    attempt,
                    pipeline_id,
                },
            ),
            Ok(None) => {}
            Err(reason) => {
                self.metrics.create_failures.inc();
                tracing::warn!("{project}: cannot create a pipeline: {reason}");
                self.enqueue(
                    &format!("create-failed:{attempt}"),
                    &Input::CreateFailed {
                        project,
                        attempt,
                        reason,
                    },
                );
            }
        }
    }

    /// `Ok(Some(id))`: created or adopted. `Ok(None)`: still unknown (GitLab unreachable); the
    /// reconciler tries again later. `Err(reason)`: a permanent refusal.
    async fn create_or_adopt(
        &self,
        project: &str,
        attempt: &str,
        variables: &[(String, String)],
        adopt_first: bool,
    ) -> Result<Option<u64>, String> {
        let record = self.records().by_path.get(project).cloned();
        let Some(record) = record else {
            return Err("the project is no longer known (rescan?)".into());
        };
        let Some(branch) = record.default_branch.clone() else {
            return Err("the project has no default branch".into());
        };
        let mut backoff = Duration::from_millis(250);
        let mut variables_allowed = true;
        for try_no in 0..CREATE_TRIES {
            if (adopt_first || try_no > 0) && variables_allowed {
                match self.find_attempt(record.id, &branch, attempt).await {
                    Ok(Some(id)) => {
                        tracing::info!("{project}: adopted pipeline #{id} of attempt {attempt}");
                        return Ok(Some(id));
                    }
                    Ok(None) => {}
                    Err(e) if !e.is_transient() => {
                        return Err(format!("cannot check for an existing pipeline: {e}"));
                    }
                    Err(e) => {
                        tracing::warn!("{project}: cannot look for attempt {attempt}: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            let with_variables = variables_allowed;
            let sent: &[(String, String)] = if with_variables { variables } else { &[] };
            match self.gitlab.create_pipeline(record.id, &branch, sent).await {
                Ok(p) => {
                    self.metrics.pipelines_created.inc();
                    return Ok(Some(p.id));
                }
                // The project forbids pipeline variables (GitLab's "minimum role to use pipeline
                // variables": no one). The pipeline still runs, without the GITLAB_DEPS_*
                // context; we recognise it by its id, but cannot adopt it after a crash.
                Err(e) if with_variables && refuses_variables(&e) => {
                    tracing::warn!(
                        "{project}: GitLab refuses pipeline variables here ({e}); creating its pipeline without the GITLAB_DEPS_* variables"
                    );
                    variables_allowed = false;
                }
                // A lost or garbled answer, an outage, or a token being rotated: the pipeline may
                // or may not exist, so look before trying again.
                Err(e)
                    if e.is_transient()
                        || matches!(
                            e,
                            GitLabError::Decode { .. } | GitLabError::Unauthorized { .. }
                        ) =>
                {
                    tracing::warn!(
                        "{project}: creating a pipeline failed, will check and retry: {e}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(None)
    }

    /// Finds our pipeline for an attempt among the project's newest API pipelines.
    async fn find_attempt(
        &self,
        project_id: u64,
        branch: &str,
        attempt: &str,
    ) -> Result<Option<u64>, GitLabError> {
        let recent = self
            .gitlab
            .recent_pipelines(project_id, branch, 100)
            .await?;
        for p in recent
            .iter()
            .filter(|p| p.source.as_deref().is_none_or(|s| s == "api"))
        {
            match self.gitlab.pipeline_variables(project_id, p.id).await {
                Ok(variables) => {
                    if variables
                        .iter()
                        .any(|v| v.key == VAR_ATTEMPT && v.value == attempt)
                    {
                        return Ok(Some(p.id));
                    }
                }
                // One unreadable pipeline (deleted meanwhile, say) says nothing about the others.
                Err(e) if !e.is_transient() => {
                    tracing::debug!("skipping pipeline #{}: {e}", p.id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn reconcile_loop(self: Arc<Self>, shutdown: CancellationToken) {
        // On start-up every open pipeline and every unresolved intent is checked at once: events
        // may have been missed while the service was down.
        let mut startup = true;
        let mut pruned = Instant::now();
        let every = (self.opts.reconcile_after / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            self.reconcile(startup).await;
            if startup || pruned.elapsed() > Duration::from_secs(3600) {
                pruned = Instant::now();
                // Delivery keys are kept a week: GitLab redelivers within hours, not weeks.
                match self.store.prune_events(now_ms() - EVENT_RETENTION_MS) {
                    Ok(n) if n > 0 => tracing::info!("pruned {n} old webhook events"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot prune old events: {e}"),
                }
            }
            startup = false;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Polls our pipelines that stayed open too long, and resolves creations that never completed.
    pub async fn reconcile(self: &Arc<Self>, all: bool) {
        let now = now_ms();
        let after = self.opts.reconcile_after.as_millis() as i64;
        let (open, intents) = {
            let cascade = self.cascade.lock().await;
            // Started at least `age` ms ago (everything, on start-up).
            let older_than = |p: &str, age: i64| {
                all || cascade
                    .state(p)
                    .and_then(|s| s.running.as_ref())
                    .is_some_and(|r| now - r.started_ms >= age)
            };
            let open: Vec<(String, u64, String)> = cascade
                .running_pipelines()
                .into_iter()
                .filter(|(p, _)| older_than(p, after))
                .filter_map(|(p, id)| {
                    let attempt = cascade.state(&p)?.running.as_ref()?.attempt.clone();
                    Some((p, id, attempt))
                })
                .collect();
            // An intent whose creation gave up (GitLab down) is retried sooner than a pipeline
            // is polled: nothing else will start that project.
            let intent_after = after.min(30_000);
            let intents: Vec<Intent> = cascade
                .pending_attempts()
                .into_iter()
                .filter(|(p, _)| older_than(p, intent_after))
                .filter_map(|(p, attempt)| {
                    let r = cascade.state(&p)?.running.as_ref()?;
                    let variables = crate::cascade::variables_for(r);
                    Some((p, attempt, variables))
                })
                .collect();
            (open, intents)
        };
        let records = self.records();
        for (project, pipeline_id, attempt) in open {
            let Some(record) = records.by_path.get(&project) else {
                continue;
            };
            match self.gitlab.pipeline(record.id, pipeline_id).await {
                Ok(p) => {
                    if let Some(status) = status_of(&p.status) {
                        tracing::info!(
                            "{project}: reconciler found pipeline #{pipeline_id} {}",
                            p.status
                        );
                        self.metrics.reconciled.inc();
                        self.enqueue(
                            &format!("poll:{pipeline_id}:{}", p.status),
                            &Input::PipelineFinished {
                                project,
                                pipeline_id,
                                attempt: Some(attempt),
                                status,
                                reason: Some(format!(
                                    "pipeline #{pipeline_id} {} (polled)",
                                    p.status
                                )),
                                created_ms: p
                                    .created_at
                                    .as_deref()
                                    .and_then(crate::util::parse_timestamp_ms),
                            },
                        );
                    }
                }
                // Deleted (by hand or by retention): it will never finish, so it must not hold
                // its project and everything below it forever.
                Err(GitLabError::NotFound { .. }) => {
                    tracing::warn!(
                        "{project}: pipeline #{pipeline_id} is gone; counting it as canceled"
                    );
                    self.enqueue(
                        &format!("poll:{pipeline_id}:gone"),
                        &Input::PipelineFinished {
                            project,
                            pipeline_id,
                            attempt: Some(attempt),
                            status: PipelineStatus::Canceled,
                            reason: Some(format!("pipeline #{pipeline_id} was deleted")),
                            created_ms: None,
                        },
                    );
                }
                Err(e) => tracing::warn!("{project}: cannot poll pipeline #{pipeline_id}: {e}"),
            }
        }
        for (project, attempt, variables) in intents {
            if lock(&self.in_flight).contains(&attempt) {
                continue;
            }
            tokio::spawn(
                self.clone()
                    .create(project, attempt, variables, Claim::Recover),
            );
        }
    }

    fn spawn_rescan(self: Arc<Self>, project: String) {
        let Some(scanner) = self.scanner.clone() else {
            return;
        };
        {
            let mut rescanning = lock(&self.rescanning);
            if let Some(again) = rescanning.get_mut(&project) {
                // The running rescan may have read the files before this push.
                *again = true;
                return;
            }
            rescanning.insert(project.clone(), false);
        }
        tokio::spawn(async move {
            loop {
                tracing::info!("{project}: its dependency files changed, rescanning it");
                let mut delay = Duration::from_secs(2);
                for attempt in 1..=RESCAN_TRIES {
                    match scanner.rescan_project(&project).await {
                        Ok(Rescanned::Project { id }) => {
                            self.after_project_rescan(id).await;
                            break;
                        }
                        Ok(Rescanned::Everything) => {
                            self.after_scan().await;
                            break;
                        }
                        Ok(Rescanned::Nothing) => break,
                        Err(e) if attempt < RESCAN_TRIES => {
                            tracing::warn!("{project}: rescan failed, trying again: {e}");
                            tokio::time::sleep(delay).await;
                            delay *= 4;
                        }
                        // The scheduled full rescan catches up later.
                        Err(e) => tracing::warn!("{project}: rescan failed: {e}"),
                    }
                }
                let mut rescanning = lock(&self.rescanning);
                if rescanning.get(&project) == Some(&true) {
                    rescanning.insert(project.clone(), false);
                } else {
                    rescanning.remove(&project);
                    return;
                }
            }
        });
    }

    /// Takes one rescanned project's new upstream edges and record into the graph and records,
    /// without reloading the rest. Falls back to a whole reload when the project is not where
    /// the graph has it (a scan of another process moved things meanwhile).
    pub async fn after_project_rescan(&self, id: u64) {
        match self.update_project(id) {
            // The next engine step uses the new graph.
            Ok(true) => self.notify(),
            Ok(false) => self.after_scan().await,
            Err(e) => tracing::error!("cannot update the graph: {e}"),
        }
    }

    /// `Ok(false)` when a one-project update does not fit the current graph.
    fn update_project(&self, id: u64) -> Result<bool, StoreError> {
        let _writer = lock(&self.graph_writer);
        let Some(record) = self.store.project(id)? else {
            return Ok(false);
        };
        if self.records().path_by_id.get(&id) != Some(&record.path) {
            return Ok(false);
        }
        let upstreams: Vec<String> = self
            .store
            .upstream_edges(&record.path)?
            .into_iter()
            .map(|e| e.upstream)
            .collect();
        let Some(graph) = self.graph().with_upstreams(&record.path, &upstreams) else {
            return Ok(false);
        };
        // The engine uses a record's id, default branch and web URL; the id and path are the same.
        // Copying the maps for a head commit alone would cost O(projects) per push.
        let stale = self.records().by_path.get(&record.path).is_none_or(|r| {
            r.default_branch != record.default_branch || r.web_url != record.web_url
        });
        if stale {
            let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
            // Copies the maps only while a reader still holds the old ones.
            Arc::make_mut(&mut records)
                .by_path
                .insert(record.path.clone(), record);
        }
        *self.graph.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(graph);
        Ok(true)
    }

    async fn after_scan(&self) {
        let before = self.records();
        if let Err(e) = self.reload() {
            tracing::error!("cannot reload the graph: {e}");
            return;
        }
        let after = self.records();
        let graph = self.graph();
        let mut cascade = self.cascade.lock().await;
        // A renamed or moved project keeps its id: its pending work follows it instead of being
        // pruned (which would unblock what waits for it and forget its running pipeline).
        for (id, old_path) in &before.path_by_id {
            if let Some(new_path) = after.path_by_id.get(id)
                && new_path != old_path
                && cascade.state(old_path).is_some()
            {
                tracing::info!("{old_path} is now {new_path}; its pending work follows it");
                cascade.rename(old_path, new_path);
            }
        }
        let gone = cascade.prune(&graph);
        drop(cascade);
        if !gone.is_empty() {
            tracing::info!(
                "dropped pending work of projects that left the graph: {}",
                gone.join(", ")
            );
        }
        // The next engine step persists the renames and removals.
        self.notify();
    }

    async fn rescan_loop(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let Some(scanner) = self.scanner.clone() else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            match scanner
                .scan(&ScanRequest::default(), &crate::scan::NoProgress)
                .await
            {
                Ok(summary) => {
                    tracing::info!(
                        projects = summary.projects_seen,
                        read = summary.projects_read,
                        edges = summary.edges,
                        "scheduled rescan done"
                    );
                    // The scan's new stamp makes the engine loop reload the graph, as it does
                    // for a scan by another process; reloading here too would do it twice.
                }
                Err(e) => tracing::warn!("scheduled rescan failed: {e}"),
            }
        }
    }
}

/// GitLab's refusal of pipeline variables: 400 (or 403) "Insufficient permissions to set pipeline
/// variables".
fn refuses_variables(e: &GitLabError) -> bool {
    let message = match e {
        GitLabError::Rejected { message, .. } | GitLabError::Forbidden { message, .. } => message,
        _ => return false,
    };
    message.to_ascii_lowercase().contains("pipeline variables")
}

/// Maps a GitLab status to a final cascade status; `skipped` did not build, like a cancel.
fn status_of(status: &str) -> Option<PipelineStatus> {
    match status {
        "success" => Some(PipelineStatus::Success),
        "failed" => Some(PipelineStatus::Failed),
        "canceled" | "skipped" => Some(PipelineStatus::Canceled),
        _ => None,
    }
}

/// Loads the orchestration state from the store (empty when none was stored).
pub fn load_cascade(store: &dyn Store) -> Result<Cascade, StoreError> {
    let Some(stored) = store.cascade_state()? else {
        return Ok(Cascade::new());
    };
    let counters: Counters = serde_json::from_str(&stored.counters)?;
    let projects = stored
        .projects
        .into_iter()
        .map(|(p, state)| Ok((p, serde_json::from_str::<ProjectState>(&state)?)))
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    Ok(Cascade::from_parts(projects, counters))
}

/// Records an operator input (cancel, rebuild) for the service to apply, from the CLI.
pub fn enqueue_operator_input(store: &dyn Store, input: &Input) -> Result<(), StoreError> {
    let body = serde_json::to_string(input)?;
    let key = format!("operator:{}", uuid::Uuid::new_v4());
    store.insert_event(&key, INPUT_EVENT, &body)?;
    Ok(())
}

#[cfg(test)]
#[path = "engine_rescan_tests.rs"]
mod rescan_tests;

#[cfg(test)]
mod throttle_tests {
    use super::*;

    /// Starts base and tools (app waits for base) with the given per-minute limit; returns how
    /// many creation times the engine keeps.
    async fn creation_times_kept(limit: Option<u32>) -> usize {
        let (store, mut engine) = super::rescan_tests::engine();
        engine.opts.max_running = 10;
        engine.opts.max_per_minute = limit;
        let engine = Arc::new(engine);
        for project in ["img/base", "img/tools"] {
            let input = Input::Rebuild {
                project: project.into(),
            };
            enqueue_operator_input(store.as_ref(), &input).unwrap();
        }
        engine.process().await.unwrap();
        let started = engine.cascade.lock().await.counts().running;
        assert_eq!(started, 2, "base and tools started");
        lock(&engine.created_at).len()
    }

    #[tokio::test]
    async fn creation_times_are_kept_only_for_a_per_minute_limit() {
        assert_eq!(creation_times_kept(None).await, 0);
        assert_eq!(creation_times_kept(Some(5)).await, 2);
    }
}
