//! Indexes over the per-project states, so that one engine step costs what the event touches
//! rather than a walk over every project.
//!
//! They are derived state: never persisted, rebuilt from the project states after loading, and
//! brought up to date by [`Index::update`] for every project whose state a mutation changed
//! (the same projects that are marked dirty for storage). The property tests compare them with a
//! full recomputation after every step.
//!
//! Two parts:
//! - by path, independent of the graph: the stale, running, failed and active (any of the three)
//!   projects, and the projects that became stale-and-not-running since dispatch last checked
//!   them against the exclusion;
//! - the blocked frontier, tied to one graph ([`Frontier`]): which projects are held (stale,
//!   running, or below such a project over acyclic edges), and the startable ones in dispatch
//!   order. A step updates it by propagating from the projects whose blocking changed, and stops
//!   where nothing changes; handing the cascade another graph drops it, and dispatch rebuilds it
//!   once for that graph.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ProjectState;
use crate::graph::DepGraph;

/// Derived indexes of a [`super::Cascade`]; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Index {
    /// Projects with `stale`.
    pub stale: BTreeSet<String>,
    /// Projects with `running`.
    pub running: BTreeSet<String>,
    /// Projects with `failed`.
    pub failed: BTreeSet<String>,
    /// Projects that are stale, running or failed.
    pub active: BTreeSet<String>,
    /// Stale and not running, not yet checked against the exclusion by dispatch. Not compared
    /// with a recomputation: it depends on when dispatch last ran.
    pub unchecked: BTreeSet<String>,
    /// The blocked frontier for one graph, `None` until dispatch builds it.
    pub frontier: Option<Frontier>,
    /// What the indexes hold for each active project, so that a touch that changes none of it
    /// (a new cause on a project already stale, the usual case when a success marks everything
    /// below it) costs one hash look-up.
    pub filed: HashMap<String, Filed>,
}

/// The part of a project's state the indexes depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Filed {
    stale_since: Option<i64>,
    running: bool,
    failed: bool,
}

impl Filed {
    fn of(state: Option<&ProjectState>) -> Option<Self> {
        let s = state.filter(|s| !s.is_idle())?;
        Some(Filed {
            stale_since: s.stale.as_ref().map(|st| st.since_ms),
            running: s.running.is_some(),
            failed: s.failed.is_some(),
        })
    }
}

/// Whether a project may start (as far as its own state goes): stale, not running, not failed.
fn startable_since(state: Option<&ProjectState>) -> Option<i64> {
    let s = state?;
    if s.running.is_some() || s.failed.is_some() {
        return None;
    }
    s.stale.as_ref().map(|st| st.since_ms)
}

fn set(index: &mut BTreeSet<String>, project: &str, on: bool) {
    if on {
        if !index.contains(project) {
            index.insert(project.to_owned());
        }
    } else {
        index.remove(project);
    }
}

impl Index {
    /// Builds the path indexes from scratch (the frontier is left to dispatch).
    pub fn rebuild(projects: &BTreeMap<String, ProjectState>) -> Self {
        let mut index = Index::default();
        for (p, s) in projects {
            index.set_paths(p, Some(s));
        }
        index
    }

    fn set_paths(&mut self, project: &str, state: Option<&ProjectState>) {
        let stale = state.is_some_and(|s| s.stale.is_some());
        let running = state.is_some_and(|s| s.running.is_some());
        let failed = state.is_some_and(|s| s.failed.is_some());
        set(&mut self.stale, project, stale);
        set(&mut self.running, project, running);
        set(&mut self.failed, project, failed);
        set(&mut self.active, project, stale || running || failed);
        set(&mut self.unchecked, project, stale && !running);
        match Filed::of(state) {
            Some(filed) => {
                self.filed.insert(project.to_owned(), filed);
            }
            None => {
                self.filed.remove(project);
            }
        }
    }

    /// Brings every index up to date for one project whose state may have changed. `graph` is the
    /// graph the change was computed on, `None` when there is none (a rename): a frontier for
    /// another graph, or without one, is dropped.
    pub fn update(
        &mut self,
        projects: &BTreeMap<String, ProjectState>,
        graph: Option<&DepGraph>,
        project: &str,
    ) {
        let state = projects.get(project);
        if self
            .frontier
            .as_ref()
            .is_some_and(|f| graph.is_none_or(|g| f.graph != g.id()))
        {
            self.frontier = None;
        }
        if self.filed.get(project).copied() == Filed::of(state) {
            return;
        }
        self.set_paths(project, state);
        let keep = match (&mut self.frontier, graph) {
            (Some(f), Some(g)) if f.graph == g.id() => {
                if let Some(i) = g.index_of(project) {
                    f.update(g, projects, i);
                }
                true
            }
            (None, _) => true,
            _ => false,
        };
        if !keep {
            self.frontier = None;
        }
    }

    /// The frontier for `graph`, built now if there is none for it.
    pub fn frontier_for(
        &mut self,
        graph: &DepGraph,
        projects: &BTreeMap<String, ProjectState>,
    ) -> &mut Frontier {
        let frontier = match self.frontier.take() {
            Some(f) if f.graph == graph.id() => f,
            _ => Frontier::build(graph, projects, self),
        };
        self.frontier.insert(frontier)
    }

    /// The frontier, if it was built for `graph`.
    pub fn frontier_of(&self, graph: &DepGraph) -> Option<&Frontier> {
        self.frontier.as_ref().filter(|f| f.graph == graph.id())
    }

    /// Everything except `unchecked` and the frontier, which [`Index::rebuild`] does not build.
    #[cfg(test)]
    pub fn same_paths(&self, other: &Index) -> bool {
        self.filed == other.filed
            && self.stale == other.stale
            && self.running == other.running
            && self.failed == other.failed
            && self.active == other.active
    }
}

/// Blocking over one graph, by dense node index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frontier {
    /// [`DepGraph::id`] of the graph it was built for.
    graph: u64,
    /// The project itself is stale or running.
    blocks: Vec<bool>,
    /// `blocks`, or some acyclic upstream is held: nothing at or below it may start.
    held: Vec<bool>,
    /// How many acyclic upstreams are held; a project is blocked while this is not zero.
    pressure: Vec<u32>,
    /// Startable projects that nothing blocks, in dispatch order: (rank, stale since, index).
    /// Index order is path order.
    ready: BTreeSet<(u32, i64, u32)>,
    /// The `since` each member of `ready` is filed under.
    ready_since: HashMap<u32, i64>,
}

impl Frontier {
    pub(super) fn build(
        graph: &DepGraph,
        projects: &BTreeMap<String, ProjectState>,
        index: &Index,
    ) -> Self {
        let n = graph.len();
        let mut blocks = vec![false; n];
        let mut starts = Vec::new();
        for p in index.stale.iter().chain(index.running.iter()) {
            if let Some(i) = graph.index_of(p)
                && !std::mem::replace(&mut blocks[i as usize], true)
            {
                starts.push(i);
            }
        }
        let mut held = blocks.clone();
        for d in graph.reach_ids(&starts, true, true) {
            held[d as usize] = true;
        }
        let mut pressure = vec![0u32; n];
        for u in 0..n as u32 {
            if held[u as usize] {
                for &d in graph.acyclic_down_ids(u) {
                    pressure[d as usize] += 1;
                }
            }
        }
        let mut frontier = Frontier {
            graph: graph.id(),
            blocks,
            held,
            pressure,
            ready: BTreeSet::new(),
            ready_since: HashMap::new(),
        };
        for p in &index.stale {
            if let Some(i) = graph.index_of(p) {
                frontier.refresh_ready(graph, i, projects.get(p));
            }
        }
        frontier
    }

    /// Whether anything at or above the project blocks (it is stale or running itself, or below
    /// such a project). `false` for an index the graph does not have.
    pub fn held(&self, i: u32) -> bool {
        self.held.get(i as usize).copied().unwrap_or(false)
    }

    /// How many projects [`Frontier::ready`] yields.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Startable projects nothing blocks, in dispatch order (rank, oldest stale, path).
    pub fn ready(&self) -> impl Iterator<Item = u32> + '_ {
        self.ready.iter().map(|&(_, _, i)| i)
    }

    fn update(&mut self, graph: &DepGraph, projects: &BTreeMap<String, ProjectState>, i: u32) {
        let state = projects.get(graph.name(i));
        let blocks = state.is_some_and(ProjectState::blocks);
        if let Some(b) = self.blocks.get_mut(i as usize)
            && *b != blocks
        {
            *b = blocks;
            self.propagate(graph, projects, i);
        }
        self.refresh_ready(graph, i, state);
    }

    /// Re-derives `held` from `start` downwards, as far as it changes.
    fn propagate(
        &mut self,
        graph: &DepGraph,
        projects: &BTreeMap<String, ProjectState>,
        start: u32,
    ) {
        let mut stack = vec![start];
        while let Some(u) = stack.pop() {
            let u_ix = u as usize;
            let held = self.blocks[u_ix] || self.pressure[u_ix] > 0;
            if held == self.held[u_ix] {
                continue;
            }
            self.held[u_ix] = held;
            for &d in graph.acyclic_down_ids(u) {
                let d_ix = d as usize;
                let was_blocked = self.pressure[d_ix] > 0;
                if held {
                    self.pressure[d_ix] += 1;
                } else {
                    self.pressure[d_ix] = self.pressure[d_ix].saturating_sub(1);
                }
                if was_blocked != (self.pressure[d_ix] > 0) {
                    self.refresh_ready(graph, d, projects.get(graph.name(d)));
                    stack.push(d);
                }
            }
        }
    }

    fn refresh_ready(&mut self, graph: &DepGraph, i: u32, state: Option<&ProjectState>) {
        let blocked = self.pressure.get(i as usize).is_none_or(|&p| p > 0);
        let want = startable_since(state).filter(|_| !blocked);
        let have = self.ready_since.get(&i).copied();
        if want == have {
            return;
        }
        let rank = graph.rank_of(i);
        if let Some(since) = have {
            self.ready.remove(&(rank, since, i));
            self.ready_since.remove(&i);
        }
        if let Some(since) = want {
            self.ready.insert((rank, since, i));
            self.ready_since.insert(i, since);
        }
    }
}
