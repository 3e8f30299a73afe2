//! The engine loop: folds the durable event log into the cascade state, persists it, and starts
//! the resulting pipeline creations ([`super::create`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::create::Claim;
use super::intake::{Intake, Recorded, Signals};
use super::leader::Leadership;
use super::log::{INPUT_EVENT, load_cascade};
use super::observe::Chains;
use super::reconcile::status_of;
use super::recovery::{Recovery, RecoveryOptions};
use crate::cascade::{Action, Cascade, Input, ProjectState, Throttle, VAR_ATTEMPT};
use crate::config::PathPatterns;
use crate::gitlab::GitLab;
use crate::gitlab::payload::{self, HookEvent, PushEvent};
use crate::graph::DepGraph;
use crate::metrics::Metrics;
use crate::scan::Scanner;
use crate::store::{Activity, Lease, NewEvent, ProjectRecord, Store, StoreError, StoredEvent};
use crate::util::{Clock, SystemClock};

/// Events folded per engine step.
const BATCH: usize = 512;
/// Activity lines kept in memory for the status page (it shows the newest 100).
const ACTIVITY_KEPT: usize = 100;
/// Store key holding the time of the last complete scan (written by [`crate::scan`]).
const SCAN_STAMP: &str = crate::scan::LAST_SCAN_KEY;

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
    /// Overdue polls, catch-up and their request budget.
    pub recovery: RecoveryOptions,
}

/// The stored project records the engine needs, by path and by id.
#[derive(Clone)]
pub(super) struct Records {
    pub(super) by_path: HashMap<String, ProjectRecord>,
    pub(super) path_by_id: HashMap<u64, String>,
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
    pub(super) store: Arc<dyn Store>,
    pub(super) gitlab: GitLab,
    pub(super) scanner: Option<Arc<Scanner>>,
    pub(super) opts: EngineOptions,
    pub(super) graph: RwLock<Arc<DepGraph>>,
    pub(super) records: RwLock<Arc<Records>>,
    /// Held from reading the store to installing the result, by whole reloads and one-project
    /// updates alike: each installs what the store held when it read, so neither can install
    /// older data over the other's newer.
    pub(super) graph_writer: tokio::sync::Mutex<()>,
    /// Moves with every graph installed (whole reloads and one-project updates), so standbys
    /// learn of graph changes that no scan stamp records.
    pub(super) graph_version: std::sync::atomic::AtomicU64,
    /// Never held across a store call: the status page reads it while the database is locked.
    pub(super) cascade: tokio::sync::Mutex<Cascade>,
    /// Held through an engine step, store calls included (see [`Engine::process`]).
    step: tokio::sync::Mutex<()>,
    /// The newest activity lines, newest first: the status page reads them without the store.
    activity: Mutex<VecDeque<(i64, String)>>,
    pub(super) wake: Arc<Notify>,
    /// Group commit for internal inputs (creation results, reconciler findings): a wave of
    /// creations answering at once makes one transaction, not one each, and the webhook intake
    /// does not queue behind them for the event log.
    inputs: Intake,
    pub(super) in_flight: Mutex<HashSet<String>>,
    /// Projects being rescanned; `true` when another push arrived meanwhile (scan once more).
    pub(super) rescanning: Mutex<HashMap<String, bool>>,
    /// When recent pipelines were created, for `max_per_minute` (empty without that limit);
    /// entries older than a minute are dropped by [`Engine::throttle`] before every dispatch.
    pub(super) created_at: Mutex<VecDeque<Instant>>,
    /// The wall-clock time the cascade and the reconciler go by.
    pub(super) clock: Arc<dyn Clock>,
    /// Overdue polls and catch-up.
    pub(super) recovery: Recovery,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Chains in progress, for the chain-duration metric.
    pub(super) chains: Mutex<Chains>,
    /// Bumped whenever the cascade state or the graph changed, so views are computed once per
    /// change and live pages are pushed an update.
    pub(super) changed: tokio::sync::watch::Sender<u64>,
    /// The replica's leadership, when it shares the database with others (`serve`). Without one
    /// the engine acts alone (tests, benchmarks driving it directly).
    pub(super) leadership: OnceLock<Arc<Leadership>>,
}

/// Under what the engine acts: its commits are fenced with the lease, and a creation started
/// under a lease is given up once this replica no longer holds that lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Acting {
    /// No leadership attached: nobody else runs an engine on this database.
    Alone,
    /// As the leader under this lease.
    Under(Lease),
}

impl Acting {
    /// The fence for [`crate::store::OrchestrationStore::commit_cascade`].
    pub(super) fn fence(&self) -> Option<&Lease> {
        match self {
            Acting::Alone => None,
            Acting::Under(lease) => Some(lease),
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Loads the graph and the persisted cascade state.
    pub async fn new(
        store: Arc<dyn Store>,
        gitlab: GitLab,
        scanner: Option<Arc<Scanner>>,
        opts: EngineOptions,
    ) -> Result<Self, StoreError> {
        Self::with_clock(store, gitlab, scanner, opts, Arc::new(SystemClock)).await
    }

    /// As [`Engine::new`], going by `clock`.
    pub async fn with_clock(
        store: Arc<dyn Store>,
        gitlab: GitLab,
        scanner: Option<Arc<Scanner>>,
        opts: EngineOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let cascade = load_cascade(store.as_ref()).await?;
        let activity = store.recent_activity(ACTIVITY_KEPT).await?;
        let recovery = Recovery::load(
            store.as_ref(),
            opts.recovery.clone(),
            opts.max_running,
            clock.now_ms(),
        )
        .await?;
        let chains = Mutex::new(Chains::of(&cascade));
        let wake = Arc::new(Notify::new());
        let inputs = {
            let wake = Arc::clone(&wake);
            let signals = Signals {
                committed: Box::new(move || wake.notify_one()),
                // Each caller logs its own failure.
                failed: Box::new(|| {}),
            };
            Intake::start(Arc::clone(&store), None, None, signals)
        };
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
            graph_writer: tokio::sync::Mutex::new(()),
            graph_version: std::sync::atomic::AtomicU64::new(0),
            step: tokio::sync::Mutex::new(()),
            cascade: tokio::sync::Mutex::new(cascade),
            activity: Mutex::new(activity.into()),
            wake,
            inputs,
            in_flight: Mutex::new(HashSet::new()),
            rescanning: Mutex::new(HashMap::new()),
            created_at: Mutex::new(VecDeque::new()),
            clock,
            recovery,
            metrics: Metrics::new(),
            chains,
            changed: tokio::sync::watch::Sender::new(0),
            leadership: OnceLock::new(),
        };
        engine.reload().await?;
        engine.observe_scan().await;
        Ok(engine)
    }

    /// Runs the engine only while `leadership` holds the lease (set once, by the service).
    pub fn attach(&self, leadership: Arc<Leadership>) {
        if self.leadership.set(leadership).is_err() {
            tracing::warn!("the engine already has a leadership; keeping the first");
        }
    }

    /// The replica's leadership, when attached.
    pub fn leadership(&self) -> Option<&Arc<Leadership>> {
        self.leadership.get()
    }

    /// Whether this replica runs the engine now (always, without a leadership).
    pub fn is_leader(&self) -> bool {
        self.acting().is_some()
    }

    /// How the engine may act now; `None` on a standby.
    pub(super) fn acting(&self) -> Option<Acting> {
        match self.leadership.get() {
            None => Some(Acting::Alone),
            Some(l) => l.current().map(Acting::Under),
        }
    }

    /// Whether work started as `acting` may still go on (its lease is still held and valid).
    pub(super) fn still_acting(&self, acting: &Acting) -> bool {
        match (acting, self.leadership.get()) {
            (Acting::Alone, _) => true,
            (Acting::Under(lease), Some(l)) => l.holds(lease.epoch),
            (Acting::Under(_), None) => false,
        }
    }

    /// Steps down after the store fenced a write off.
    pub(super) fn fenced(&self, e: &StoreError) {
        if let Some(l) = self.leadership.get() {
            l.step_down(&e.to_string());
        }
    }

    /// Becoming leader: another replica moved the cascade state, the recovery state and the
    /// graph meanwhile, so everything is read again from the store, as a start-up does.
    pub async fn take_over(&self) -> Result<(), StoreError> {
        // After any step of an earlier term: its commit is fenced or landed before the read.
        let _step = self.step.lock().await;
        let cascade = load_cascade(self.store.as_ref()).await?;
        let activity = self.store.recent_activity(ACTIVITY_KEPT).await?;
        self.recovery
            .reload(self.store.as_ref(), self.clock.now_ms())
            .await?;
        *lock(&self.chains) = Chains::of(&cascade);
        *self.cascade.lock().await = cascade;
        *lock(&self.activity) = activity.into();
        self.reload().await?;
        self.observe_scan().await;
        Ok(())
    }

    /// A standby's view: takes the leader's cascade state and activity (when the leader's
    /// published change counter moved) and the graph (when a scan by any process or a graph
    /// change on the leader moved) from the store. `seen` and `graph_seen` hold what was taken
    /// last time, so a quiet second costs two small reads.
    pub(super) async fn follow(&self, seen: &mut Option<String>, graph_seen: &mut Option<String>) {
        let read = (
            self.store.meta(SCAN_STAMP).await,
            self.store.meta(super::replica::CHANGES_KEY).await,
        );
        let (stamp, counter) = match read {
            (Ok(stamp), Ok(counter)) => (stamp, counter),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!("standby cannot read the leader's change counters: {e}");
                return;
            }
        };
        // `<epoch>:<graph version>:<change counter>`: the graph part moves with push rescans.
        let graph_part = counter
            .as_deref()
            .and_then(|c| c.rsplit_once(':'))
            .map_or("", |(graph, _)| graph);
        let graph_key = format!("{}|{graph_part}", stamp.unwrap_or_default());
        if graph_seen.as_ref() != Some(&graph_key) {
            if let Err(e) = self.reload().await {
                tracing::warn!("cannot reload the graph: {e}");
                return;
            }
            self.observe_scan().await;
            *graph_seen = Some(graph_key);
        }
        // Nothing published yet (a leader of an older version): read every time.
        if counter.is_some() && counter == *seen {
            return;
        }
        // Read after the counter: a change published meanwhile is read again next time.
        let cascade = match load_cascade(self.store.as_ref()).await {
            Ok(cascade) => cascade,
            Err(e) => {
                tracing::debug!("standby cannot read the cascade state: {e}");
                return;
            }
        };
        *self.cascade.lock().await = cascade;
        *seen = counter;
        if let Ok(activity) = self.store.recent_activity(ACTIVITY_KEPT).await {
            *lock(&self.activity) = activity.into();
        }
        self.bump();
    }

    /// The settings it runs with.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The GitLab client (its [`GitLab::health`] for the status page).
    pub fn gitlab(&self) -> &GitLab {
        &self.gitlab
    }

    /// The wall-clock time the engine goes by (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A project's GitLab page, when known.
    pub fn web_url(&self, project: &str) -> Option<String> {
        self.records()
            .by_path
            .get(project)
            .map(|r| r.web_url.clone())
    }

    /// One project's full cascade state (idle ones included, with their recent pipelines).
    pub async fn project_state(&self, project: &str) -> Option<crate::cascade::ProjectState> {
        self.cascade.lock().await.state(project).cloned()
    }

    /// Re-reads the graph and project records from the store (after a scan).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _writer = self.graph_writer.lock().await;
        let projects = self.store.projects().await?;
        let graph = crate::store::graph_of(&projects, self.store.edges().await?);
        let records = Records {
            path_by_id: projects.iter().map(|p| (p.id, p.path.clone())).collect(),
            by_path: projects.into_iter().map(|p| (p.path.clone(), p)).collect(),
        };
        *self.graph.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(graph);
        *self.records.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(records);
        self.graph_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.bump();
        Ok(())
    }

    /// A receiver of the change counter: it moves after every engine step that changed the
    /// cascade state, and after every graph reload.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(super) fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub(super) fn graph(&self) -> Arc<DepGraph> {
        self.graph.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True when a push may have changed a project's dependency files on its default branch.
    pub fn push_matters(&self, push: &PushEvent) -> bool {
        let watched: Vec<&str> = self.opts.watched_files.iter().map(String::as_str).collect();
        push.touches(&watched)
    }

    /// Wakes the engine loop (after an event was logged).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// A copy of the current state. Never waits for the store: nothing holds the cascade while
    /// it waits for the database.
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
            tokio::spawn(self.clone().catch_up_loop(shutdown.clone())),
        ];
        if let Some(every) = self.opts.rescan_every {
            tasks.push(tokio::spawn(self.clone().rescan_loop(every, shutdown)));
        }
        tasks
    }

    async fn run_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut scan_stamp = self.store.meta(SCAN_STAMP).await.ok().flatten();
        let mut checked = Instant::now();
        loop {
            // A scan by another process (`gitlab-deps scan`, a timer) changes the graph under us.
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = Instant::now();
                let stamp = self.store.meta(SCAN_STAMP).await.ok().flatten();
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
        // One step at a time, so commits land in the order their steps ran.
        let _step = self.step.lock().await;
        // A standby leaves the log to the leader.
        let Some(acting) = self.acting() else {
            return Ok(());
        };
        loop {
            let events = self.store.unprocessed_events(BATCH).await?;
            let graph = self.graph();
            let records = self.records();
            let mut cascade = self.cascade.lock().await;
            let now = self.clock.now_ms();
            let mut log = Vec::new();
            let mut rescans = Vec::new();
            let mut last = None;
            for event in &events {
                last = Some(event.seq);
                for input in self.inputs(event, &records, &mut rescans) {
                    self.observe_finish(&cascade, &input, now);
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
            let counters = cascade.counters();
            let dirty = cascade.take_dirty();
            // Copied (only what changed), so the commit below runs without the cascade: the
            // status page and the reconciler never wait for the database.
            let changes: Vec<(String, Option<ProjectState>)> = dirty
                .into_iter()
                .map(|(p, state)| (p, state.cloned()))
                .collect();
            // Claimed before the lock is released, so the reconciler never starts a second
            // creation of the same attempt.
            {
                let mut claimed = lock(&self.in_flight);
                for Action::CreatePipeline { attempt, .. } in &actions {
                    claimed.insert(attempt.clone());
                }
            }
            self.observe_dispatch(&cascade, &graph, &actions, now);
            drop(cascade);
            let rows: Vec<(String, Option<&ProjectState>)> = changes
                .iter()
                .map(|(p, state)| (p.clone(), state.as_ref()))
                .collect();
            if !changes.is_empty() || last.is_some() || !log.is_empty() {
                // The intent to create each pipeline is durable before any is created.
                // Fenced with the lease: a replica that lost the leadership records no intent.
                // The step's activity lines go in the same commit (one transaction a step).
                let activity = Activity {
                    at_ms: now,
                    lines: &log,
                };
                let committed = self
                    .store
                    .commit_cascade(&rows, counters, last, activity, acting.fence())
                    .await;
                if let Err(e) = committed {
                    if matches!(e, StoreError::Fenced { .. }) {
                        self.fenced(&e);
                    }
                    // Keep the changes for the next commit; the events stay unprocessed and the
                    // intents unperformed and unclaimed (the reconciler resolves them if nothing
                    // else does).
                    drop(rows);
                    {
                        let mut claimed = lock(&self.in_flight);
                        for Action::CreatePipeline { attempt, .. } in &actions {
                            claimed.remove(attempt);
                        }
                    }
                    let projects = changes.into_iter().map(|(p, _)| p);
                    self.cascade.lock().await.mark_dirty(projects);
                    return Err(e);
                }
            }
            if !changes.is_empty() || !actions.is_empty() {
                self.bump();
            }
            for action in actions {
                let Action::CreatePipeline {
                    project,
                    attempt,
                    variables,
                } = action;
                tokio::spawn(self.clone().create(
                    project,
                    attempt,
                    variables,
                    Claim::Claimed,
                    acting.clone(),
                ));
            }
            // After the creations are on their way: the chain metrics must not delay them.
            self.observe_changes(&rows, now);
            drop(rows);
            for line in &log {
                tracing::info!("{line}");
            }
            self.remember_activity(now, &log);
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

    /// Logs an internal input durably and wakes the loop; true when the key was new.
    pub(super) async fn enqueue(&self, key: &str, input: &Input) -> bool {
        let event = match NewEvent::input(key, input) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!("cannot record {key}: {e}");
                return false;
            }
        };
        match self.inputs.record(event).await {
            Ok(recorded) => recorded == Recorded::New,
            Err(e) => {
                tracing::error!("cannot record {key}: {e}");
                false
            }
        }
    }

    /// The newest activity lines, newest first, from memory.
    pub fn recent_activity(&self, limit: usize) -> Vec<(i64, String)> {
        lock(&self.activity).iter().take(limit).cloned().collect()
    }

    fn remember_activity(&self, at_ms: i64, lines: &[String]) {
        let mut kept = lock(&self.activity);
        for line in lines {
            kept.push_front((at_ms, line.clone()));
        }
        kept.truncate(ACTIVITY_KEPT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrate::enqueue_operator_input;
    use crate::store::Lease;

    /// Starts base and tools (app waits for base) with the given per-minute limit; returns how
    /// many creation times the engine keeps.
    async fn creation_times_kept(limit: Option<u32>) -> usize {
        let (store, mut engine) = crate::orchestrate::rescan_tests::engine().await;
        engine.opts.max_running = 10;
        engine.opts.max_per_minute = limit;
        let engine = Arc::new(engine);
        for project in ["img/base", "img/tools"] {
            let input = Input::Rebuild {
                project: project.into(),
            };
            enqueue_operator_input(store.as_ref(), &input)
                .await
                .unwrap();
        }
        engine.process().await.unwrap();
        let started = engine.cascade.lock().await.counts().running;
        assert_eq!(started, 2, "base and tools started");
        lock(&engine.created_at).len()
    }

    #[tokio::test]
    async fn activity_is_served_from_memory_newest_first_and_bounded() {
        let (store, first) = crate::orchestrate::rescan_tests::engine().await;
        let lines: Vec<String> = (0..150).map(|i| format!("line {i}")).collect();
        let activity = Activity {
            at_ms: 7,
            lines: &lines,
        };
        store
            .commit_cascade(&[], Default::default(), None, activity, None)
            .await
            .unwrap();
        // Loaded once at start: a new engine sees what the store kept.
        let engine = Engine::new(
            Arc::clone(&store),
            first.gitlab.clone(),
            None,
            first.opts.clone(),
        )
        .await
        .unwrap();
        let shown = engine.recent_activity(1000);
        assert_eq!(shown.len(), ACTIVITY_KEPT);
        assert_eq!(shown[0], (7, "line 149".to_owned()));
        let engine = Arc::new(engine);
        let input = Input::Rebuild {
            project: "img/tools".into(),
        };
        enqueue_operator_input(store.as_ref(), &input)
            .await
            .unwrap();
        engine.process().await.unwrap();
        let shown = engine.recent_activity(1000);
        assert_eq!(shown.len(), ACTIVITY_KEPT);
        assert!(shown[0].1.starts_with("img/tools"), "{shown:?}");
        // Logged to the store as well, in the same order.
        assert_eq!(store.recent_activity(1).await.unwrap()[0], shown[0]);
    }

    /// `engine` attached to a leadership that holds the lease of `store` (epoch 1).
    async fn leading(store: &Arc<dyn Store>, engine: &Engine) -> Arc<Leadership> {
        use crate::orchestrate::leader::{LeaseOptions, Role, StoreLeases};
        let leadership = Leadership::new(
            Arc::new(StoreLeases(Arc::clone(store))),
            LeaseOptions::with_ttl(Duration::from_secs(60)),
            "a".into(),
        );
        tokio::spawn(Arc::clone(&leadership).run(CancellationToken::new()));
        let mut role = leadership.subscribe();
        role.wait_for(|r| matches!(r, Role::Leader(_)))
            .await
            .unwrap();
        engine.attach(Arc::clone(&leadership));
        leadership
    }

    /// Another replica takes the lease from under `a` (as after its expiry): epoch 2.
    async fn superseded(store: &Arc<dyn Store>) {
        let held = store.lease().await.unwrap().unwrap();
        let lease = Lease {
            holder: held.holder,
            epoch: held.epoch,
        };
        store.release_lease(&lease).await.unwrap();
        let taken = store
            .acquire_lease("b", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(taken.map(|l| l.epoch), Some(2));
    }

    #[tokio::test]
    async fn a_fenced_commit_records_nothing_and_makes_the_engine_step_down() {
        let (store, engine) = crate::orchestrate::rescan_tests::engine().await;
        let engine = Arc::new(engine);
        let leadership = leading(&store, &engine).await;
        assert!(engine.is_leader());
        superseded(&store).await;
        // Still leader by its own clock: only the commit can tell.
        assert!(engine.is_leader());
        let input = Input::Rebuild {
            project: "img/base".into(),
        };
        enqueue_operator_input(store.as_ref(), &input)
            .await
            .unwrap();
        let err = engine.process().await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Fenced {
                    held: 1,
                    current: 2
                }
            ),
            "{err}"
        );
        assert!(!engine.is_leader());
        assert_eq!(leadership.role(), crate::orchestrate::Role::Standby);
        // Nothing recorded: no intent, the event still unprocessed for the new leader.
        assert_eq!(store.cascade_state().await.unwrap(), None);
        assert_eq!(store.unprocessed_events(10).await.unwrap().len(), 1);
        assert!(lock(&engine.in_flight).is_empty(), "no creation started");
        // A standby leaves the log alone.
        engine.process().await.unwrap();
        assert_eq!(store.unprocessed_events(10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_creation_started_under_a_lost_lease_sends_nothing() {
        let (store, engine) = crate::orchestrate::rescan_tests::engine().await;
        let engine = Arc::new(engine);
        let leadership = leading(&store, &engine).await;
        let acting = engine.acting().unwrap();
        assert!(matches!(acting, Acting::Under(ref l) if l.epoch == 1));
        leadership.step_down("test");
        // The GitLab address is unreachable: a request would be retried for seconds, and a
        // creation would be counted as a failure; none is made.
        let outcome = engine
            .create_or_adopt_for_test("img/base", "a-1", &acting)
            .await;
        assert_eq!(outcome, Ok(None));
        assert_eq!(engine.metrics.creations_abandoned.get(), 1);
        assert_eq!(engine.metrics.pipelines_created.get(), 0);
    }

    #[tokio::test]
    async fn creation_times_are_kept_only_for_a_per_minute_limit() {
        assert_eq!(creation_times_kept(None).await, 0);
        assert_eq!(creation_times_kept(Some(5)).await, 2);
    }
}
