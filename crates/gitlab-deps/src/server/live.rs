//! The live view: what every non-idle project does, the chains in progress and the recent ones,
//! and the instance's health, computed once per engine change (not per request) and pushed to
//! browsers with server-sent events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::gitlab::ClientHealth;
use crate::graph::DepGraph;
use crate::orchestrate::{Engine, ProjectView, RoleView, Snapshot, describe};
use crate::store::Edge;

/// Where each edge comes from (`file:line`), by (upstream, downstream).
pub(crate) type Vias = HashMap<(String, String), String>;

/// Finished chains kept in memory.
const HISTORY: usize = 30;
/// How long a request waits for the view of a change the engine already made.
const FRESH_WAIT: Duration = Duration::from_secs(2);
/// Warnings listed on the page (the API and the CLI have all).
const WARNINGS_SHOWN: usize = 50;

/// One project's part in a chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct ChainProject {
    /// Project path.
    pub project: String,
    /// `running`, `failed`, `blocked`, `waiting`, `queued`, or `done` (it left the chain: built).
    pub state: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// Link to our pipeline.
    pub pipeline_url: Option<String>,
    /// Nearest pending upstreams.
    pub waits_for: Vec<String>,
    /// Failed projects above it.
    pub blocked_by: Vec<String>,
}

/// One chain (cascade): a change at `root` and every project it made out of date.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct Chain {
    /// The cascade id (`c-<n>`).
    pub id: String,
    /// Where the change began.
    pub root: String,
    /// `running` (something runs or waits), `failed` (only failed and blocked projects are
    /// left), `succeeded` or `stopped` (finished after a failure was forgotten or cancelled).
    pub outcome: &'static str,
    /// When the change was recorded (Unix ms).
    pub started_ms: i64,
    /// When the last project left the chain, for finished chains.
    pub finished_ms: Option<i64>,
    /// Until finished or now.
    pub duration_ms: i64,
    /// Every project seen in the chain, upstreams first.
    pub projects: Vec<ChainProject>,
}

/// Health at a glance.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Health {
    /// When the last complete scan finished (Unix ms).
    pub last_scan_ms: Option<i64>,
    /// Scan warnings (unknown `.gitlab-deps` entries, unresolved ARGs, unreadable files), the
    /// first [`WARNINGS_SHOWN`].
    pub warnings: Vec<String>,
    /// How many warnings there are in all.
    pub warning_count: usize,
    /// Dependency cycles (edges inside them are ignored for rebuilds).
    pub cycles: Vec<Vec<String>>,
    /// Webhooks GitLab disabled, as of the last hook sync.
    pub hooks_disabled: i64,
    /// Projects and groups the last hook sync could not give a webhook.
    pub hooks_missing: i64,
    /// What the GitLab client saw.
    pub gitlab: ClientHealth,
    /// This replica's role and the leader.
    pub role: Option<RoleView>,
}

/// Everything the pages and the API show, as of one engine change.
pub(crate) struct LiveView {
    /// The engine's change counter this view reflects.
    pub generation: u64,
    /// Non-idle projects (see [`describe`]).
    pub projects: Vec<ProjectView>,
    /// Index into `projects` by path.
    pub by_project: HashMap<String, usize>,
    /// Chains in progress (running or stuck on a failure), oldest first.
    pub chains: Vec<Chain>,
    /// Finished chains, newest first.
    pub history: Vec<Chain>,
    /// The graph the view was computed on.
    pub graph: Arc<DepGraph>,
    /// Where each edge comes from.
    pub vias: Arc<Vias>,
    /// Scan, hooks and GitLab health.
    pub health: Health,
}

impl LiveView {
    pub(crate) fn empty() -> Self {
        Self {
            generation: 0,
            projects: Vec::new(),
            by_project: HashMap::new(),
            chains: Vec::new(),
            history: Vec::new(),
            graph: Arc::new(DepGraph::new()),
            vias: Arc::new(HashMap::new()),
            health: Health::default(),
        }
    }

    /// The view of one project, when it is not idle.
    pub fn project(&self, path: &str) -> Option<&ProjectView> {
        self.by_project.get(path).map(|&i| &self.projects[i])
    }

    /// A project's state for drawing: its view's state, else `idle`.
    pub fn state_of(&self, path: &str) -> &'static str {
        self.project(path).map_or("idle", |v| v.state)
    }

    /// A chain in progress or in the history.
    pub fn chain(&self, id: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .chain(self.history.iter())
            .find(|c| c.id == id)
    }
}

/// The shared handle: handlers read the latest view, SSE streams subscribe to it.
#[derive(Clone)]
pub(crate) struct Live {
    views: watch::Receiver<Arc<LiveView>>,
    engine_changes: watch::Receiver<u64>,
    /// Cancelled when the server shuts down: event streams end then, or a graceful shutdown
    /// would wait for every open page.
    closing: CancellationToken,
}

impl Live {
    /// Starts the task that recomputes the view after every engine change. It ends when the engine
    /// is dropped.
    pub fn start(engine: &Arc<Engine>, closing: CancellationToken) -> Self {
        let (tx, views) = watch::channel(Arc::new(LiveView::empty()));
        let engine_changes = engine.subscribe();
        let mut changes = engine.subscribe();
        let weak: Weak<Engine> = Arc::downgrade(engine);
        tokio::spawn(async move {
            let mut tracker = Tracker::default();
            let mut vias: Option<(Arc<DepGraph>, Arc<Vias>)> = None;
            loop {
                let generation = *changes.borrow_and_update();
                let Some(engine) = weak.upgrade() else { return };
                let view = compute(&engine, generation, &mut tracker, &mut vias).await;
                drop(engine);
                tx.send_replace(Arc::new(view));
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        Self {
            views,
            engine_changes,
            closing,
        }
    }

    /// The view of the engine's latest change (waiting briefly for it to be computed), so a
    /// request made after a change sees it.
    pub async fn current(&self) -> Arc<LiveView> {
        let target = (*self.engine_changes.borrow()).max(1);
        let mut views = self.views.clone();
        match tokio::time::timeout(FRESH_WAIT, views.wait_for(|v| v.generation >= target)).await {
            Ok(Ok(view)) => Arc::clone(&view),
            _ => Arc::clone(&self.views.borrow()),
        }
    }

    /// A receiver that is notified of every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<LiveView>> {
        self.views.clone()
    }
}

async fn compute(
    engine: &Engine,
    generation: u64,
    tracker: &mut Tracker,
    vias: &mut Option<(Arc<DepGraph>, Arc<Vias>)>,
) -> LiveView {
    let snapshot = engine.snapshot().await;
    let now = engine.now_ms();
    let projects = describe(&snapshot);
    let by_project = projects
        .iter()
        .enumerate()
        .map(|(i, v)| (v.project.clone(), i))
        .collect();
    tracker.update(&snapshot, &projects, now);
    let graph = Arc::clone(&snapshot.graph);
    // Edge origins and scan warnings change only with the graph: read them once per graph.
    let fresh = match vias {
        Some((g, v)) if Arc::ptr_eq(g, &graph) => Some(Arc::clone(v)),
        _ => None,
    };
    let store = Arc::clone(engine.store());
    let reread = fresh.is_none() || tracker.health.is_none();
    if reread {
        let edges: Vec<Edge> = store.edges().await.unwrap_or_default();
        let warnings = store.warnings().await.unwrap_or_default();
        let last_scan = store
            .meta(crate::scan::LAST_SCAN_KEY)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.parse::<i64>().ok());
        let map: Vias = edges
            .into_iter()
            .map(|e| ((e.upstream, e.downstream), e.via))
            .collect();
        *vias = Some((Arc::clone(&graph), Arc::new(map)));
        tracker.health = Some(Health {
            last_scan_ms: last_scan,
            warning_count: warnings.len(),
            warnings: warnings
                .iter()
                .take(WARNINGS_SHOWN)
                .map(ToString::to_string)
                .collect(),
            cycles: graph.cycles(),
            ..Health::default()
        });
    }
    let mut health = tracker.health.clone().unwrap_or_default();
    // A sync run by another process (`update` from a timer) left its counts in the store.
    engine.refresh_hook_gauges().await;
    health.hooks_disabled = engine.metrics.hooks_disabled.get();
    health.hooks_missing = engine.metrics.hooks_missing.get();
    health.gitlab = engine.gitlab().health();
    health.role = Some(engine.role_view().await);
    LiveView {
        generation,
        projects,
        by_project,
        chains: tracker.active(&graph, now),
        history: tracker.history.iter().cloned().collect(),
        graph,
        vias: vias
            .as_ref()
            .map_or_else(|| Arc::new(HashMap::new()), |(_, v)| Arc::clone(v)),
        health,
    }
}

/// Follows chains across engine changes, to know which projects of a chain are done and when a
/// chain finished. Memory: the projects of the chains in progress and of [`HISTORY`] finished ones.
#[derive(Default)]
struct Tracker {
    active: BTreeMap<String, Tracked>,
    history: VecDeque<Chain>,
    health: Option<Health>,
}

struct Tracked {
    root: String,
    started_ms: i64,
    /// Projects in the order they joined, with their last seen part.
    order: Vec<String>,

    parts: HashMap<String, ChainProject>,
    outcome: &'static str,
}

impl Tracker {
    fn update(&mut self, snapshot: &Snapshot, views: &[ProjectView], now: i64) {
        // Roots and start times of the chains in progress, from the causes.
        let mut live: BTreeMap<String, (String, i64)> = BTreeMap::new();
        for (_, state) in snapshot.cascade.projects() {
            let causes = state
                .stale
                .iter()
                .flat_map(|s| s.causes.iter())
                .chain(state.running.iter().flat_map(|r| r.causes.iter()));
            for c in causes {
                let e = live
                    .entry(c.cascade.clone())
                    .or_insert_with(|| (c.root.clone(), c.at_ms));
                e.1 = e.1.min(c.at_ms);
            }
        }
        for (id, (root, started)) in &live {
            self.active.entry(id.clone()).or_insert_with(|| Tracked {
                root: root.clone(),
                started_ms: *started,
                order: Vec::new(),
                parts: HashMap::new(),
                outcome: "running",
            });
        }
        let mut current: HashMap<&str, BTreeMap<&str, &ProjectView>> = HashMap::new();
        for v in views {
            for id in &v.cascades {
                current
                    .entry(id.as_str())
                    .or_default()
                    .insert(v.project.as_str(), v);
            }
        }
        let mut finished = Vec::new();
        for (id, chain) in self.active.iter_mut() {
            let now_in = current.get(id.as_str());
            for (project, part) in chain.parts.iter_mut() {
                if now_in.is_none_or(|m| !m.contains_key(project.as_str())) {
                    part.state = "done";
                    part.detail = "built".to_owned();
                    part.waits_for.clear();
                    part.blocked_by.clear();
                }
            }
            if let Some(members) = now_in {
                for (project, v) in members {
                    if !chain.parts.contains_key(*project) {
                        chain.order.push((*project).to_owned());
                    }
                    chain.parts.insert(
                        (*project).to_owned(),
                        ChainProject {
                            project: (*project).to_owned(),
                            state: v.state,
                            detail: v.detail.clone(),
                            pipeline_url: v.pipeline_url.clone(),
                            waits_for: v.waits_for.clone(),
                            blocked_by: v.blocked_by.clone(),
                        },
                    );
                }
            }
            if !live.contains_key(id) {
                let outcome = if chain.outcome == "failed" {
                    "stopped"
                } else {
                    "succeeded"
                };
                finished.push((id.clone(), outcome));
            } else {
                let busy = chain
                    .parts
                    .values()
                    .any(|p| matches!(p.state, "running" | "waiting" | "queued"));
                chain.outcome = if busy || chain.parts.is_empty() {
                    "running"
                } else if chain.parts.values().any(|p| p.state == "failed") {
                    "failed"
                } else {
                    "running"
                };
            }
        }
        for (id, outcome) in finished {
            if let Some(chain) = self.active.remove(&id) {
                let mut done = chain.render(&id, now);
                done.projects.sort_by_cached_key(|p| {
                    (snapshot.graph.topo_rank(&p.project), p.project.clone())
                });
                done.outcome = outcome;
                done.finished_ms = Some(now);
                self.history.push_front(done);
                self.history.truncate(HISTORY);
            }
        }
    }

    fn active(&self, graph: &DepGraph, now: i64) -> Vec<Chain> {
        let mut out: Vec<Chain> = self
            .active
            .iter()
            .map(|(id, c)| c.render(id, now))
            .collect();
        // Top of the graph first, as the chain runs.
        for chain in &mut out {
            chain
                .projects
                .sort_by_cached_key(|p| (graph.topo_rank(&p.project), p.project.clone()));
        }
        out.sort_by(|a, b| (a.started_ms, &a.id).cmp(&(b.started_ms, &b.id)));
        out
    }
}

impl Tracked {
    fn render(&self, id: &str, now: i64) -> Chain {
        Chain {
            id: id.to_owned(),
            root: self.root.clone(),
            outcome: self.outcome,
            started_ms: self.started_ms,
            finished_ms: None,
            duration_ms: (now - self.started_ms).max(0),
            projects: self
                .order
                .iter()
                .filter_map(|p| self.parts.get(p).cloned())
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/api/events", responses((status = 200, description = "Server-sent events: `update` with the change counter as data", content_type = "text/event-stream", body = String)))]
/// `GET /api/events`: a server-sent event `update` (data: the change counter) after every engine
/// change, and a keep-alive comment while nothing changes. Pages reload their live parts on it.
pub(crate) async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.live.subscribe();
    let closing = state.live.closing.clone();
    let stream = futures::stream::unfold((rx, true), move |(mut rx, first)| {
        let closing = closing.clone();
        async move {
            // The first event tells a fresh page the generation it has; the rest follow changes.
            if !first {
                tokio::select! {
                    changed = rx.changed() => changed.ok()?,
                    _ = closing.cancelled() => return None,
                }
            }
            let generation = rx.borrow_and_update().generation;
            let event = Event::default()
                .event("update")
                .data(generation.to_string());
            Some((Ok(event), (rx, false)))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
