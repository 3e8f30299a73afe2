//! What the engine reports to the metrics beyond state counts: how long downstream projects wait
//! for their pipelines, how long whole chains take, the queue, and the last scan. Every update costs
//! what the step touched, never a walk over all projects.

use std::collections::{HashMap, HashSet, VecDeque};

use super::engine::Engine;
use crate::cascade::{Action, Cascade, ProjectState};
use crate::graph::DepGraph;
use crate::metrics::Metrics;

/// The chains (cascade ids) in progress, each with the projects that still carry it: what the
/// chain-duration metric needs, kept up to date from the states each engine step changed.
#[derive(Debug, Default)]
pub struct Chains {
    /// Cascade ids each non-idle project carries (in its stale or running causes).
    by_project: HashMap<String, HashSet<String>>,
    /// Open chains by cascade id.
    open: HashMap<String, Chain>,
    /// Every project that joined a chain since the live view last looked, so the view (computed
    /// a few times a second, not per step) lists projects that joined and left in between.
    joined: VecDeque<Joined>,
}

/// A project joined a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The cascade id.
    pub cascade: String,
    /// Where the chain began.
    pub root: String,
    /// When its oldest cause carried by the project was recorded.
    pub at_ms: i64,
    pub project: String,
}

/// Most joins kept for the live view: beyond it (a view stuck for a long time) the oldest are
/// dropped, and the view only misses projects that already left.
const JOINED_KEPT: usize = 100_000;

#[derive(Debug)]
struct Chain {
    /// The oldest cause of the chain: when its root changed.
    started_ms: i64,
    /// Projects carrying it.
    members: usize,
}

/// The cascade ids a state carries, each with its oldest cause time. A project can carry many
/// causes: a map keeps this linear in their number.
fn carried(state: Option<&ProjectState>) -> HashMap<&str, (i64, &str)> {
    let mut out: HashMap<&str, (i64, &str)> = HashMap::new();
    let Some(state) = state else {
        return out;
    };
    let causes = state
        .stale
        .iter()
        .flat_map(|s| s.causes.iter())
        .chain(state.running.iter().flat_map(|r| r.causes.iter()));
    for cause in causes {
        out.entry(cause.cascade.as_str())
            .and_modify(|(at, _)| *at = (*at).min(cause.at_ms))
            .or_insert((cause.at_ms, cause.root.as_str()));
    }
    out
}

impl Chains {
    /// Every chain the cascade carries now (once, when the engine starts).
    pub fn of(cascade: &Cascade) -> Self {
        let mut chains = Self::default();
        for (project, state) in cascade.projects() {
            chains.update(project, Some(state), 0);
        }
        chains
    }

    /// Records a project's new state; returns the durations (ms) of the chains it was the last
    /// member of.
    pub fn update(&mut self, project: &str, state: Option<&ProjectState>, now_ms: i64) -> Vec<i64> {
        let now = carried(state);
        let before = self.by_project.remove(project).unwrap_or_default();
        for (id, (at, root)) in &now {
            if before.contains(*id) {
                continue;
            }
            let chain = self.open.entry((*id).to_owned()).or_insert(Chain {
                started_ms: *at,
                members: 0,
            });
            chain.started_ms = chain.started_ms.min(*at);
            chain.members += 1;
            if self.joined.len() == JOINED_KEPT {
                self.joined.pop_front();
            }
            self.joined.push_back(Joined {
                cascade: (*id).to_owned(),
                root: (*root).to_owned(),
                at_ms: *at,
                project: project.to_owned(),
            });
        }
        let mut finished = Vec::new();
        for id in before {
            if now.contains_key(id.as_str()) {
                continue;
            }
            if let Some(chain) = self.open.get_mut(&id) {
                chain.members = chain.members.saturating_sub(1);
                if chain.members == 0 {
                    finished.push(now_ms - chain.started_ms);
                    self.open.remove(&id);
                }
            }
        }
        if !now.is_empty() {
            self.by_project.insert(
                project.to_owned(),
                now.into_keys().map(str::to_owned).collect(),
            );
        }
        finished
    }

    /// The projects that joined a chain since the last call, oldest first.
    pub fn take_joined(&mut self) -> Vec<Joined> {
        self.joined.drain(..).collect()
    }

    /// Records the states an engine step changed and observes the chains that ended.
    pub fn observe(
        &mut self,
        metrics: &Metrics,
        changes: &[(String, Option<&ProjectState>)],
        now_ms: i64,
    ) {
        for (project, state) in changes {
            for ms in self.update(project, *state, now_ms) {
                metrics.chain_seconds.observe(seconds(ms));
            }
        }
    }
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// After a dispatch: how long each project about to get a pipeline waited since the newest
/// upstream success it answers, and the state and queue gauges. Costs O(actions), plus O(1).
pub fn observe_dispatch(
    metrics: &Metrics,
    cascade: &Cascade,
    graph: &DepGraph,
    actions: &[Action],
    now_ms: i64,
) {
    for Action::CreatePipeline { project, .. } in actions {
        let newest = cascade
            .state(project)
            .and_then(|s| s.running.as_ref())
            .and_then(|r| {
                r.causes
                    .iter()
                    .filter(|c| c.upstream != *project)
                    .map(|c| c.at_ms)
                    .max()
            });
        // A manual rebuild of the project itself answers no upstream.
        if let Some(at) = newest {
            metrics.trigger_delay_seconds.observe(seconds(now_ms - at));
        }
    }
    metrics.observe(cascade);
    metrics
        .queue_throttled
        .set(i64::try_from(cascade.ready_count(graph)).unwrap_or(i64::MAX));
}

impl Engine {
    /// After a step's states changed: closes the chains that no project carries any more.
    pub(super) fn observe_changes(&self, changes: &[(String, Option<&ProjectState>)], now_ms: i64) {
        super::engine::lock(&self.chains).observe(&self.metrics, changes, now_ms);
    }

    /// The projects that joined a chain since the last call (for the live view).
    pub(crate) fn take_chain_joins(&self) -> Vec<Joined> {
        super::engine::lock(&self.chains).take_joined()
    }

    /// See [`observe_dispatch`].
    pub(super) fn observe_dispatch(
        &self,
        cascade: &Cascade,
        graph: &DepGraph,
        actions: &[Action],
        now_ms: i64,
    ) {
        observe_dispatch(&self.metrics, cascade, graph, actions, now_ms);
    }

    /// Sets the hook gauges from the counts the last hook sync of any process stored.
    pub async fn refresh_hook_gauges(&self) {
        let stored = async |key| {
            self.store
                .meta(key)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.parse::<i64>().ok())
        };
        if let Some(n) = stored(crate::hooks::DISABLED_META).await {
            self.metrics.hooks_disabled.set(n);
        }
        if let Some(n) = stored(crate::hooks::MISSING_META).await {
            self.metrics.hooks_missing.set(n);
        }
    }

    /// Sets the scan gauges from the graph the engine holds and the store's warnings (after every
    /// scan it runs or loads, and at start).
    pub(crate) async fn observe_scan(&self) {
        let graph = self.graph();
        let m = &self.metrics;
        m.scan_projects
            .set(i64::try_from(graph.len()).unwrap_or(i64::MAX));
        m.scan_edges
            .set(i64::try_from(graph.edge_count()).unwrap_or(i64::MAX));
        if let Ok(warnings) = self.store.warnings().await {
            m.scan_warnings
                .set(i64::try_from(warnings.len()).unwrap_or(i64::MAX));
        }
        if let Ok(Some(ms)) = self.store.meta(crate::scan::LAST_SCAN_DURATION_KEY).await
            && let Ok(ms) = ms.parse::<u64>()
        {
            m.scan_duration_seconds.set(ms as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::{Cause, Running, Stale};

    fn cause(cascade: &str, upstream: &str, at_ms: i64) -> Cause {
        Cause {
            upstream: upstream.into(),
            root: "root".into(),
            cascade: cascade.into(),
            at_ms,
        }
    }

    fn stale(causes: Vec<Cause>) -> ProjectState {
        ProjectState {
            stale: Some(Stale {
                causes,
                since_ms: 0,
            }),
            ..ProjectState::default()
        }
    }

    fn running(causes: Vec<Cause>) -> ProjectState {
        ProjectState {
            running: Some(Running {
                attempt: "a-1".into(),
                pipeline_id: None,
                restale: false,
                started_ms: 0,
                upstreams: vec![],
                roots: vec![],
                cascade: "c-1".into(),
                causes,
                stale_since_ms: 0,
                cancelled: false,
            }),
            ..ProjectState::default()
        }
    }

    #[test]
    fn joins_are_kept_for_the_live_view_once_each() {
        let mut chains = Chains::default();
        let a = stale(vec![cause("c-1", "root", 1_000), cause("c-1", "x", 900)]);
        chains.update("a", Some(&a), 1_000);
        // Moving on inside the same chain is no new join; leaving it is none either.
        chains.update(
            "a",
            Some(&running(vec![cause("c-1", "root", 1_000)])),
            1_500,
        );
        chains.update("a", None, 2_000);
        chains.update("b", Some(&stale(vec![cause("c-2", "a", 2_000)])), 2_000);
        let joined = chains.take_joined();
        let seen: Vec<(&str, &str, i64)> = joined
            .iter()
            .map(|j| (j.cascade.as_str(), j.project.as_str(), j.at_ms))
            .collect();
        assert_eq!(seen, [("c-1", "a", 900), ("c-2", "b", 2_000)]);
        assert_eq!(joined[0].root, "root");
        assert!(chains.take_joined().is_empty(), "drained");
    }

    #[test]
    fn a_chain_ends_when_its_last_project_finishes() {
        let mut chains = Chains::default();
        // The root succeeded at 1000: both children are stale in chain c-1.
        let a = stale(vec![cause("c-1", "root", 1_000)]);
        assert!(chains.update("a", Some(&a), 1_000).is_empty());
        assert!(chains.update("b", Some(&a), 1_000).is_empty());
        // a runs, then succeeds and hands the chain to c.
        let run = running(vec![cause("c-1", "root", 1_000)]);
        assert!(chains.update("a", Some(&run), 1_500).is_empty());
        let c = stale(vec![cause("c-1", "a", 4_000)]);
        assert!(chains.update("c", Some(&c), 4_000).is_empty());
        assert!(chains.update("a", None, 4_000).is_empty());
        // b and c finish: the chain took from the root's change to the last finish.
        assert!(
            chains
                .update("b", Some(&ProjectState::default()), 5_000)
                .is_empty()
        );
        assert_eq!(chains.update("c", None, 9_000), vec![8_000]);
        assert!(chains.open.is_empty() && chains.by_project.is_empty());
    }

    #[test]
    fn a_project_in_two_chains_closes_each_separately() {
        let mut chains = Chains::default();
        let both = stale(vec![cause("c-1", "r1", 100), cause("c-2", "r2", 300)]);
        chains.update("x", Some(&both), 300);
        let only_second = stale(vec![cause("c-2", "r2", 300)]);
        assert_eq!(chains.update("x", Some(&only_second), 1_100), vec![1_000]);
        assert_eq!(chains.update("x", None, 2_300), vec![2_000]);
    }

    #[test]
    fn a_failure_keeps_the_chain_open() {
        let mut chains = Chains::default();
        chains.update("x", Some(&running(vec![cause("c-1", "r", 0)])), 0);
        // A failure restores the causes into `stale`: the chain is still being worked on.
        let failed = stale(vec![cause("c-1", "r", 0)]);
        assert!(chains.update("x", Some(&failed), 10).is_empty());
        assert_eq!(chains.update("x", None, 50), vec![50]);
    }
}
