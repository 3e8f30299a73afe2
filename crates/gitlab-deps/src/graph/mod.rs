//! The dependency graph between GitLab projects and its queries.
//!
//! Nodes are project full paths (`group/sub/name`); an edge `upstream -> downstream` means "downstream
//! is built FROM upstream", so a new build of the upstream makes the downstream out of date.
//!
//! The graph is immutable once built: everything the orchestration asks repeatedly (strongly connected
//! components, the acyclic view, topological ranks) is computed once in [`DepGraph::from_parts`], and
//! the queries work on dense `u32` node indices rather than strings, so that a plan over 100,000
//! projects stays in the low milliseconds.
//!
//! Cycles: edges inside a strongly connected component are reported ([`DepGraph::cycles`]) and drawn,
//! but ignored for orchestration, because a cycle has no build order. All `acyclic_*` queries and
//! [`DepGraph::plan`] use only the edges between different components, which form a DAG.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use thiserror::Error;

#[cfg(test)]
mod tests;

/// Errors of graph look-ups that the CLI turns into messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GraphError {
    /// The path is not a project of the graph; `suggestions` holds close matches, best first.
    #[error("unknown project `{path}`{}", did_you_mean(.suggestions))]
    UnknownProject {
        /// The path that was asked for.
        path: String,
        /// Up to three known paths close to it.
        suggestions: Vec<String>,
    },
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", suggestions.join(", "))
    }
}

/// Compressed adjacency lists: the neighbours of node `i` are `adj[off[i]..off[i + 1]]`, sorted.
///
/// One flat array instead of a `Vec` per node keeps 100k-node graphs cache friendly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Adj {
    off: Vec<u32>,
    adj: Vec<u32>,
}

impl Adj {
    /// Builds from `(from, to)` pairs that are already sorted and deduplicated.
    fn from_sorted(n: usize, pairs: &[(u32, u32)]) -> Self {
        let mut off = vec![0u32; n + 1];
        for &(from, _) in pairs {
            off[from as usize + 1] += 1;
        }
        for i in 0..n {
            off[i + 1] += off[i];
        }
        Adj {
            off,
            adj: pairs.iter().map(|&(_, to)| to).collect(),
        }
    }

    /// Builds from pairs in any order (sorts a copy).
    fn from_pairs(n: usize, mut pairs: Vec<(u32, u32)>) -> Self {
        pairs.sort_unstable();
        pairs.dedup();
        Self::from_sorted(n, &pairs)
    }

    /// A copy with row `i` replaced by `row` (sorted, unique).
    fn with_row(&self, i: u32, row: &[u32]) -> Self {
        let i = i as usize;
        let (a, b) = match (self.off.get(i), self.off.get(i + 1)) {
            (Some(&a), Some(&b)) => (a as usize, b as usize),
            _ => return self.clone(),
        };
        let mut adj = Vec::with_capacity(self.adj.len() - (b - a) + row.len());
        adj.extend_from_slice(&self.adj[..a]);
        adj.extend_from_slice(row);
        adj.extend_from_slice(&self.adj[b..]);
        let (grow, shrink) = (row.len() as u32, (b - a) as u32);
        let off = self
            .off
            .iter()
            .enumerate()
            .map(|(k, &o)| if k > i { o + grow - shrink } else { o })
            .collect();
        Adj { off, adj }
    }

    /// A copy with `x` taken out of the rows `from` and put into the rows `to` (both sorted;
    /// rows stay sorted).
    fn moving(&self, x: u32, from: &[u32], to: &[u32]) -> Self {
        let n = self.off.len().saturating_sub(1);
        let mut off = Vec::with_capacity(n + 1);
        off.push(0u32);
        let mut adj = Vec::with_capacity(self.adj.len() + to.len());
        for r in 0..n as u32 {
            let row = self.of(r);
            match (from.binary_search(&r).is_ok(), to.binary_search(&r).is_ok()) {
                (true, false) => adj.extend(row.iter().copied().filter(|&y| y != x)),
                (false, true) => {
                    let at = row.partition_point(|&y| y < x);
                    adj.extend_from_slice(&row[..at]);
                    if row.get(at) != Some(&x) {
                        adj.push(x);
                    }
                    adj.extend_from_slice(&row[at..]);
                }
                _ => adj.extend_from_slice(row),
            }
            off.push(adj.len() as u32);
        }
        Adj { off, adj }
    }

    fn of(&self, i: u32) -> &[u32] {
        let i = i as usize;
        match (self.off.get(i), self.off.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.adj[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// The dependency graph: projects and "built from" edges, with precomputed cycle and rank data.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DepGraph {
    /// Sorted, unique; a node's index is its position, so index order is name order and sorted
    /// index lists map to sorted name lists without another sort.
    /// Shared between a graph and the ones derived from it by [`DepGraph::with_upstreams`].
    names: Arc<[String]>,
    /// All edges, both directions.
    down: Adj,
    up: Adj,
    /// Edges between different strongly connected components only (a DAG).
    adown: Adj,
    aup: Adj,
    /// Strongly connected component id per node.
    scc: Vec<u32>,
    /// Components with more than one node (the cycles), members sorted.
    cyclic: Vec<Vec<u32>>,
    /// Topological rank over the acyclic edges.
    rank: Vec<u32>,
    edge_count: usize,
    /// Which graph this is, so that state derived from one graph (the cascade's blocking index)
    /// can tell when it is handed another.
    id: GraphId,
}

/// Identifies one built graph: every construction gets a new id, a clone keeps it (graphs are
/// immutable, so a clone is the same graph). Ignored by equality, which compares content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GraphId(u64);

impl GraphId {
    fn fresh() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        GraphId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Default for GraphId {
    fn default() -> Self {
        Self::fresh()
    }
}

impl PartialEq for GraphId {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for GraphId {}

impl std::fmt::Debug for DepGraph {
    /// Projects and edges only: the precomputed indices are noise when debugging.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepGraph")
            .field("projects", &self.names)
            .field("edges", &self.edges())
            .finish()
    }
}

impl DepGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the graph from projects and `(upstream, downstream)` edges.
    ///
    /// Endpoints that are not in `projects` are added as nodes; self-edges are ignored (their
    /// project is still added); duplicate edges collapse.
    pub fn from_parts(
        projects: impl IntoIterator<Item = String>,
        edges: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let edges: Vec<(String, String)> = edges.into_iter().collect();
        let mut names: Vec<String> = projects.into_iter().collect();
        names.reserve(edges.len() * 2);
        for (u, d) in &edges {
            names.push(u.clone());
            names.push(d.clone());
        }
        names.sort_unstable();
        names.dedup();
        let id = |s: &str| names.binary_search_by(|x| x.as_str().cmp(s)).ok();
        let pairs: Vec<(u32, u32)> = edges
            .iter()
            .filter_map(|(u, d)| Some((id(u)? as u32, id(d)? as u32)))
            .collect();
        Self::from_indexed(names.into(), pairs)
    }

    /// This graph with `project`'s upstreams replaced by `upstreams` (the rest unchanged), or
    /// `None` when one of the paths is not a project of the graph.
    ///
    /// When the project is in no cycle before or after, the cycles cannot change: the adjacency
    /// lists are copied with the project's edges moved, and only the ranks of the project and its
    /// descendants are recomputed, with no string sorted or copied. Otherwise the cycle data is
    /// recomputed over the integer edges.
    pub fn with_upstreams(&self, project: &str, upstreams: &[String]) -> Option<Self> {
        let p = self.index_of(project)?;
        let mut new_ups = upstreams
            .iter()
            .map(|u| self.index_of(u))
            .collect::<Option<Vec<u32>>>()?;
        new_ups.retain(|&u| u != p);
        new_ups.sort_unstable();
        new_ups.dedup();
        let in_cycle = self.cyclic.iter().any(|c| c.binary_search(&p).is_ok());
        if !in_cycle {
            // A new upstream that the project reaches would close a cycle.
            let below = self.reach_ids(&[p], false, true);
            if new_ups.iter().all(|u| below.binary_search(u).is_err()) {
                return Some(self.with_acyclic_upstreams(p, &new_ups));
            }
        }
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(self.edge_count + new_ups.len());
        for u in 0..self.names.len() as u32 {
            pairs.extend(self.down.of(u).iter().filter(|&&d| d != p).map(|&d| (u, d)));
        }
        pairs.extend(new_ups.into_iter().map(|u| (u, p)));
        Some(Self::from_indexed(self.names.clone(), pairs))
    }

    /// [`Self::with_upstreams`] for a project in no cycle before or after: every edge into it is
    /// acyclic, and the components stay as they are.
    fn with_acyclic_upstreams(&self, p: u32, new_ups: &[u32]) -> Self {
        let old_ups = self.up.of(p).to_vec();
        let mut graph = DepGraph {
            names: self.names.clone(),
            down: self.down.moving(p, &old_ups, new_ups),
            up: self.up.with_row(p, new_ups),
            adown: self.adown.moving(p, &old_ups, new_ups),
            aup: self.aup.with_row(p, new_ups),
            scc: self.scc.clone(),
            cyclic: self.cyclic.clone(),
            rank: self.rank.clone(),
            edge_count: self.edge_count - old_ups.len() + new_ups.len(),
            id: GraphId::fresh(),
        };
        // Only the project and what is below it can change rank: Kahn's algorithm over them,
        // the ranks of everything else being final.
        let below = graph.reach_unsorted(&[p], true, true);
        let mut inside = vec![false; graph.names.len()];
        inside[p as usize] = true;
        for &v in &below {
            inside[v as usize] = true;
        }
        let mut indeg: std::collections::HashMap<u32, u32> = below
            .iter()
            .map(|&v| {
                let n = graph
                    .aup
                    .of(v)
                    .iter()
                    .filter(|&&u| inside[u as usize])
                    .count();
                (v, n as u32)
            })
            .collect();
        let mut queue = vec![p];
        while let Some(v) = queue.pop() {
            graph.rank[v as usize] = graph
                .aup
                .of(v)
                .iter()
                .map(|&u| graph.rank[u as usize] + 1)
                .max()
                .unwrap_or(0);
            for &d in graph.adown.of(v) {
                if let Some(n) = indeg.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 {
                        queue.push(d);
                    }
                }
            }
        }
        graph
    }

    /// Builds from sorted unique names and edges as index pairs (self-edges and duplicates are
    /// dropped here).
    fn from_indexed(names: Arc<[String]>, mut pairs: Vec<(u32, u32)>) -> Self {
        let n = names.len();
        pairs.retain(|(u, d)| u != d);
        pairs.sort_unstable();
        pairs.dedup();
        let edge_count = pairs.len();

        // Kosaraju rather than Tarjan: petgraph's Tarjan is recursive and overflows the stack on
        // long chains (a 100k-project chain), Kosaraju's DFS is iterative.
        let mut pg: DiGraph<(), (), u32> = DiGraph::with_capacity(n, pairs.len());
        for _ in 0..n {
            pg.add_node(());
        }
        for &(u, d) in &pairs {
            pg.add_edge(NodeIndex::new(u as usize), NodeIndex::new(d as usize), ());
        }
        let mut scc = vec![0u32; n];
        let mut cyclic = Vec::new();
        for (c, comp) in petgraph::algo::kosaraju_scc(&pg).into_iter().enumerate() {
            for v in &comp {
                scc[v.index()] = c as u32;
            }
            if comp.len() > 1 {
                let mut members: Vec<u32> = comp.iter().map(|v| v.index() as u32).collect();
                members.sort_unstable();
                cyclic.push(members);
            }
        }
        drop(pg);

        let down = Adj::from_sorted(n, &pairs);
        let up = Adj::from_pairs(n, pairs.iter().map(|&(u, d)| (d, u)).collect());
        let acyclic: Vec<(u32, u32)> = pairs
            .iter()
            .copied()
            .filter(|&(u, d)| scc[u as usize] != scc[d as usize])
            .collect();
        let adown = Adj::from_sorted(n, &acyclic);
        let aup = Adj::from_pairs(n, acyclic.iter().map(|&(u, d)| (d, u)).collect());

        // Kahn's algorithm over the acyclic edges; rank = 1 + max rank of upstreams.
        let mut indeg: Vec<u32> = (0..n as u32).map(|i| aup.of(i).len() as u32).collect();
        let mut rank = vec![0u32; n];
        let mut queue: Vec<u32> = (0..n as u32).filter(|&i| indeg[i as usize] == 0).collect();
        while let Some(u) = queue.pop() {
            for &d in adown.of(u) {
                let r = rank[u as usize] + 1;
                if rank[d as usize] < r {
                    rank[d as usize] = r;
                }
                indeg[d as usize] -= 1;
                if indeg[d as usize] == 0 {
                    queue.push(d);
                }
            }
        }

        DepGraph {
            names,
            down,
            up,
            adown,
            aup,
            scc,
            cyclic,
            rank,
            edge_count,
            id: GraphId::fresh(),
        }
    }

    // ---- index-level helpers, shared with the cascade (same crate) ----

    /// The dense index of a project.
    pub(crate) fn index_of(&self, p: &str) -> Option<u32> {
        self.names
            .binary_search_by(|x| x.as_str().cmp(p))
            .ok()
            .map(|i| i as u32)
    }

    /// The path of a dense index (empty for an out-of-range index, which callers never pass).
    pub(crate) fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }

    /// The identity of this graph (see [`GraphId`]).
    pub(crate) fn id(&self) -> u64 {
        self.id.0
    }

    pub(crate) fn acyclic_up_ids(&self, i: u32) -> &[u32] {
        self.aup.of(i)
    }

    pub(crate) fn acyclic_down_ids(&self, i: u32) -> &[u32] {
        self.adown.of(i)
    }

    pub(crate) fn rank_of(&self, i: u32) -> u32 {
        self.rank.get(i as usize).copied().unwrap_or(0)
    }

    /// Every node reachable from `starts` over `adj` through at least one edge, in index order.
    pub(crate) fn reach_ids(&self, starts: &[u32], acyclic: bool, downward: bool) -> Vec<u32> {
        let mut out = self.reach_unsorted(starts, acyclic, downward);
        out.sort_unstable();
        out
    }

    /// Same as [`Self::reach_ids`], in discovery order.
    fn reach_unsorted(&self, starts: &[u32], acyclic: bool, downward: bool) -> Vec<u32> {
        let adj = match (acyclic, downward) {
            (true, true) => &self.adown,
            (true, false) => &self.aup,
            (false, true) => &self.down,
            (false, false) => &self.up,
        };
        // Marked when pushed, so each node enters the stack once: the stack is the output.
        let mut seen = vec![false; self.names.len()];
        let mut out: Vec<u32> = Vec::new();
        for &s in starts {
            for &w in adj.of(s) {
                if !std::mem::replace(&mut seen[w as usize], true) {
                    out.push(w);
                }
            }
        }
        let mut next = 0;
        while let Some(&v) = out.get(next) {
            next += 1;
            for &w in adj.of(v) {
                if !std::mem::replace(&mut seen[w as usize], true) {
                    out.push(w);
                }
            }
        }
        out
    }

    fn names_of(&self, ids: &[u32]) -> Vec<&str> {
        ids.iter().map(|&i| self.name(i)).collect()
    }

    fn reach_names(&self, p: &str, acyclic: bool, downward: bool) -> Vec<&str> {
        match self.index_of(p) {
            Some(i) => {
                let ids = self.reach_ids(&[i], acyclic, downward);
                // A project in a cycle reaches itself; the queries exclude it by contract.
                ids.iter()
                    .filter(|&&v| v != i)
                    .map(|&v| self.name(v))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    // ---- public queries ----

    /// Whether `p` is a project of the graph.
    pub fn contains(&self, p: &str) -> bool {
        self.index_of(p).is_some()
    }

    /// `Ok` when `p` is a project, else [`GraphError::UnknownProject`] with [`Self::suggest`]ions.
    pub fn require(&self, p: &str) -> Result<(), GraphError> {
        if self.contains(p) {
            Ok(())
        } else {
            Err(GraphError::UnknownProject {
                path: p.to_owned(),
                suggestions: self.suggest(p).into_iter().map(str::to_owned).collect(),
            })
        }
    }

    /// Number of projects.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the graph has no project.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Number of distinct edges (self-edges excluded).
    pub fn edge_count(&self) -> usize {
        self.edge_count
    }

    /// All projects, sorted.
    pub fn projects(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// All edges `(upstream, downstream)`, sorted.
    pub fn edges(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::with_capacity(self.edge_count);
        for u in 0..self.names.len() as u32 {
            for &d in self.down.of(u) {
                out.push((self.name(u), self.name(d)));
            }
        }
        out
    }

    /// Direct upstreams of `p` (all edges, cycles included), sorted; empty for an unknown path.
    pub fn upstreams(&self, p: &str) -> Vec<&str> {
        self.index_of(p)
            .map_or_else(Vec::new, |i| self.names_of(self.up.of(i)))
    }

    /// Direct downstreams of `p` (all edges), sorted.
    pub fn downstreams(&self, p: &str) -> Vec<&str> {
        self.index_of(p)
            .map_or_else(Vec::new, |i| self.names_of(self.down.of(i)))
    }

    /// Transitive upstreams of `p` over all edges, sorted, excluding `p`.
    pub fn ancestors(&self, p: &str) -> Vec<&str> {
        self.reach_names(p, false, false)
    }

    /// Transitive downstreams of `p` over all edges, sorted, excluding `p`.
    pub fn descendants(&self, p: &str) -> Vec<&str> {
        self.reach_names(p, false, true)
    }

    /// Every strongly connected component with more than one project, as a path starting at its
    /// smallest member; the list is sorted.
    ///
    /// The order is a depth-first preorder inside the component, successors taken in name order:
    /// for a simple cycle this is the cycle itself (`["g/a", "g/b"]` means a -> b -> a); for a
    /// component that is not one simple cycle, every member is listed once and is reached by an
    /// edge from an earlier member (the last one leads back, the component being strongly connected).
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = self
            .cyclic
            .iter()
            .map(|members| {
                let comp = members.first().map_or(u32::MAX, |&m| self.scc[m as usize]);
                let mut seen: HashSet<u32> = HashSet::with_capacity(members.len());
                let mut order = Vec::with_capacity(members.len());
                let mut stack: Vec<u32> = members.first().copied().into_iter().collect();
                while let Some(v) = stack.pop() {
                    if !seen.insert(v) {
                        continue;
                    }
                    order.push(self.name(v).to_owned());
                    // Reversed so that the smallest successor is visited first.
                    for &w in self.down.of(v).iter().rev() {
                        if self.scc[w as usize] == comp && !seen.contains(&w) {
                            stack.push(w);
                        }
                    }
                }
                order
            })
            .collect();
        out.sort();
        out
    }

    /// Whether `upstream` and `downstream` are two different projects of the same strongly
    /// connected component (so an edge between them is ignored for orchestration).
    pub fn edge_in_cycle(&self, upstream: &str, downstream: &str) -> bool {
        match (self.index_of(upstream), self.index_of(downstream)) {
            (Some(u), Some(d)) => u != d && self.scc[u as usize] == self.scc[d as usize],
            _ => false,
        }
    }

    /// Rebuild plan for a change at `roots`: every project acyclically downstream of a root, once,
    /// in the earliest wave after all of its affected upstreams; each wave sorted.
    ///
    /// Roots are not in the waves unless a root is downstream of another root. Unknown roots are
    /// ignored. This is exactly the order in which the cascade starts projects when every pipeline
    /// succeeds and nothing throttles (see the cross-check test).
    pub fn plan(&self, roots: &[&str]) -> Vec<Vec<String>> {
        let n = self.names.len();
        let mut is_root = vec![false; n];
        let root_ids: Vec<u32> = roots.iter().filter_map(|r| self.index_of(r)).collect();
        for &r in &root_ids {
            is_root[r as usize] = true;
        }
        let mut affected = self.reach_unsorted(&root_ids, true, true);
        let mut in_plan = vec![false; n];
        for &v in &affected {
            in_plan[v as usize] = true;
        }
        // Upstreams come before downstreams in rank order, so one pass computes the levels.
        affected.sort_unstable_by_key(|&v| (u64::from(self.rank[v as usize]) << 32) | u64::from(v));
        let mut level = vec![0u32; n];
        let mut waves: Vec<Vec<u32>> = Vec::new();
        for &v in &affected {
            let lvl = 1 + self
                .aup
                .of(v)
                .iter()
                .filter(|&&u| in_plan[u as usize] || is_root[u as usize])
                .map(|&u| level[u as usize])
                .max()
                .unwrap_or(0);
            level[v as usize] = lvl;
            let w = lvl as usize - 1;
            if waves.len() <= w {
                waves.resize_with(w + 1, Vec::new);
            }
            waves[w].push(v);
        }
        waves
            .into_iter()
            .map(|mut wave| {
                wave.sort_unstable();
                wave.into_iter().map(|v| self.name(v).to_owned()).collect()
            })
            .collect()
    }

    /// Direct upstreams of `p` ignoring in-cycle edges, sorted.
    pub fn acyclic_upstreams(&self, p: &str) -> Vec<&str> {
        self.index_of(p)
            .map_or_else(Vec::new, |i| self.names_of(self.aup.of(i)))
    }

    /// Direct downstreams of `p` ignoring in-cycle edges, sorted.
    pub fn acyclic_downstreams(&self, p: &str) -> Vec<&str> {
        self.index_of(p)
            .map_or_else(Vec::new, |i| self.names_of(self.adown.of(i)))
    }

    /// Transitive downstreams of `p` ignoring in-cycle edges, sorted, excluding `p`.
    pub fn acyclic_descendants(&self, p: &str) -> Vec<&str> {
        self.reach_names(p, true, true)
    }

    /// Transitive upstreams of `p` ignoring in-cycle edges, sorted, excluding `p`.
    pub fn acyclic_ancestors(&self, p: &str) -> Vec<&str> {
        self.reach_names(p, true, false)
    }

    /// Topological rank of `p` over the acyclic edges: 0 without acyclic upstreams, else
    /// 1 + the maximum rank of its acyclic upstreams. `None` for an unknown path.
    pub fn topo_rank(&self, p: &str) -> Option<usize> {
        self.index_of(p).map(|i| self.rank_of(i) as usize)
    }

    /// Known projects close to an unknown path, best first, at most 3.
    ///
    /// Ranking: same last segment (case-insensitive) first, then projects whose path ends with the
    /// given text (`web` or `apps/web`), then small edit distances on the whole path or on the last
    /// segment (at most a third of the length, at least 1-2 edits); ties by distance, then by name.
    pub fn suggest(&self, unknown: &str) -> Vec<&str> {
        fn last(s: &str) -> &str {
            s.rsplit('/').next().unwrap_or(s)
        }
        let full = unknown.trim_matches('/').to_lowercase();
        let seg = last(&full).to_owned();
        let full_max = (full.chars().count() / 3).max(2);
        let seg_max = (seg.chars().count() / 3).max(1);
        let suffix = format!("/{full}");
        let mut scored: Vec<((u8, usize), &str)> = Vec::new();
        for name in self.names.iter() {
            let lower = name.to_lowercase();
            let nseg = last(&lower);
            let score = if nseg == seg {
                Some((0, levenshtein(&lower, &full)))
            } else if lower.ends_with(&suffix) {
                Some((1, lower.len() - full.len()))
            } else {
                let d_full = bounded_levenshtein(&lower, &full, full_max);
                let d_seg = bounded_levenshtein(nseg, &seg, seg_max);
                d_full.into_iter().chain(d_seg).min().map(|d| (2, d))
            };
            if let Some(s) = score {
                scored.push((s, name.as_str()));
            }
        }
        scored.sort_unstable();
        scored.into_iter().take(3).map(|(_, n)| n).collect()
    }

    /// Graphviz rendering: edges upstream -> downstream, in-cycle edges red and dashed.
    pub fn to_dot(&self) -> String {
        fn q(s: &str) -> String {
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        }
        let mut out = String::from("digraph gitlab_deps {\n");
        for name in self.names.iter() {
            let _ = writeln!(out, "  {};", q(name));
        }
        for (u, d) in self.edges() {
            let style = if self.edge_in_cycle(u, d) {
                " [color=red, style=dashed]"
            } else {
                ""
            };
            let _ = writeln!(out, "  {} -> {}{};", q(u), q(d), style);
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid rendering (`graph TD`): ids derived from the paths (sanitised, unique), labels the
    /// paths, in-cycle edges dotted (`-.->`).
    pub fn to_mermaid(&self) -> String {
        let mut used: HashSet<String> = HashSet::with_capacity(self.names.len());
        let ids: Vec<String> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                // A prefix keeps ids clear of Mermaid keywords (`end`, `graph`) and leading digits.
                let base: String = std::iter::once('p')
                    .chain(std::iter::once('_'))
                    .chain(
                        name.chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
                    )
                    .collect();
                let id = if used.contains(&base) {
                    format!("{base}_{i}")
                } else {
                    base
                };
                used.insert(id.clone());
                id
            })
            .collect();
        let mut out = String::from("graph TD\n");
        for (i, name) in self.names.iter().enumerate() {
            let label = name.replace('"', "#quot;");
            let _ = writeln!(out, "  {}[\"{}\"]", ids[i], label);
        }
        for u in 0..self.names.len() as u32 {
            for &d in self.down.of(u) {
                let arrow = if self.scc[u as usize] == self.scc[d as usize] {
                    "-.->"
                } else {
                    "-->"
                };
                let _ = writeln!(out, "  {} {} {}", ids[u as usize], arrow, ids[d as usize]);
            }
        }
        out
    }
}

/// Classic two-row Levenshtein distance over chars.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Levenshtein distance if it is at most `max`; skips the quadratic work when the lengths alone
/// rule it out, which is most of a 100k-project scan.
fn bounded_levenshtein(a: &str, b: &str, max: usize) -> Option<usize> {
    if a.chars().count().abs_diff(b.chars().count()) > max {
        return None;
    }
    let d = levenshtein(a, b);
    (d <= max).then_some(d)
}
