//! Property tests of the invariants of docs/cascade-model.md on random graphs and random interleavings.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::H;
use super::*;

/// A random graph of up to 12 projects: forward edges in a shuffled order (a DAG whose topological
/// order differs from name order), plus a few back edges that make cycles the cascade must ignore.
fn arb_graph() -> impl Strategy<Value = DepGraph> {
    (1usize..=12)
        .prop_flat_map(|n| {
            let pairs = n * (n - 1) / 2;
            (
                Just(n),
                prop::collection::vec(prop::bool::weighted(0.3), pairs),
                prop::collection::vec(prop::bool::weighted(0.04), pairs),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            )
        })
        .prop_map(|(n, fwd, back, perm)| {
            let name = |i: usize| format!("g/p{:02}", perm[i]);
            let mut edges = Vec::new();
            let mut k = 0;
            for i in 0..n {
                for j in i + 1..n {
                    if fwd[k] {
                        edges.push((name(i), name(j)));
                    }
                    if back[k] {
                        edges.push((name(j), name(i)));
                    }
                    k += 1;
                }
            }
            DepGraph::from_parts((0..n).map(name), edges)
        })
}

struct Live {
    project: String,
    attempt: String,
    pid: u64,
    created_sent: bool,
}

/// A simulated executor (GitLab + webhooks) around the cascade, checking invariants as it goes.
struct Sim {
    g: DepGraph,
    c: Cascade,
    now: i64,
    next_pid: u64,
    live: Vec<Live>,
    /// Delivered event inputs, for redelivery.
    history: Vec<Input>,
    /// Projects whose last result from us was a failure and that have not succeeded since.
    failed_since_success: BTreeSet<String>,
    creations: BTreeMap<String, usize>,
    /// What incremental storage holds: the dirty projects applied after every step.
    stored: BTreeMap<String, ProjectState>,
}

impl Sim {
    fn new(g: DepGraph) -> Self {
        Sim {
            g,
            c: Cascade::new(),
            now: 0,
            next_pid: 0,
            live: Vec::new(),
            history: Vec::new(),
            failed_since_success: BTreeSet::new(),
            creations: BTreeMap::new(),
            stored: BTreeMap::new(),
        }
    }

    /// Incremental storage (dirty projects only) keeps an exact copy of the state.
    fn store(&mut self) {
        let dirty: Vec<(String, Option<ProjectState>)> = self
            .c
            .take_dirty()
            .into_iter()
            .map(|(p, s)| (p, s.cloned()))
            .collect();
        for (p, state) in dirty {
            match state {
                Some(state) => self.stored.insert(p, state),
                None => self.stored.remove(&p),
            };
        }
        assert_eq!(self.stored, self.c.projects, "stored copy diverged");
        self.c.assert_index_exact(&self.g);
    }

    fn deliver(&mut self, input: Input) -> Applied {
        self.now += 1;
        if matches!(
            input,
            Input::PipelineFinished { .. }
                | Input::PipelineCreated { .. }
                | Input::CreateFailed { .. }
        ) {
            self.history.push(input.clone());
        }
        let applied = self.c.apply(&self.g, input, self.now);
        self.store();
        applied
    }

    fn pid(&mut self) -> u64 {
        self.next_pid += 1;
        self.next_pid
    }

    fn change(&mut self, p: &str) {
        let pid = self.pid();
        self.failed_since_success.remove(p);
        self.deliver(Input::PipelineFinished {
            project: p.into(),
            pipeline_id: pid,
            attempt: None,
            status: PipelineStatus::Success,
            reason: None,
            // Created now: after every cause recorded so far.
            created_ms: Some(self.now + 1),
        });
    }

    /// Invariant 5: a redelivery changes nothing.
    fn replay(&mut self, k: usize) {
        if self.history.is_empty() {
            return;
        }
        let input = self.history[k % self.history.len()].clone();
        let before = self.c.clone();
        self.now += 1;
        let applied = self.c.apply(&self.g, input.clone(), self.now);
        assert!(applied.is_noop(), "replay of {input:?} touched {applied:?}");
        assert_eq!(self.c, before, "replay of {input:?} changed the state");
        self.store();
    }

    fn finish(&mut self, k: usize, status: PipelineStatus, with_attempt: bool) {
        if self.live.is_empty() {
            return;
        }
        let live = self.live.remove(k % self.live.len());
        let cancelled = self.cancelled(&live.project);
        match status {
            PipelineStatus::Success => {
                self.failed_since_success.remove(&live.project);
            }
            _ if !cancelled => {
                self.failed_since_success.insert(live.project.clone());
            }
            _ => {}
        }
        // Without the attempt variable only the recorded pipeline id identifies it.
        let attempt = (with_attempt || !live.created_sent).then_some(live.attempt);
        self.deliver(Input::PipelineFinished {
            project: live.project,
            pipeline_id: live.pid,
            attempt,
            status,
            reason: None,
            created_ms: None,
        });
    }

    fn created(&mut self, k: usize) {
        let pending: Vec<usize> = (0..self.live.len())
            .filter(|&i| !self.live[i].created_sent)
            .collect();
        if pending.is_empty() {
            return;
        }
        let i = pending[k % pending.len()];
        self.live[i].created_sent = true;
        let input = Input::PipelineCreated {
            project: self.live[i].project.clone(),
            attempt: self.live[i].attempt.clone(),
            pipeline_id: self.live[i].pid,
        };
        self.deliver(input);
    }

    fn create_failed(&mut self, k: usize) {
        let pending: Vec<usize> = (0..self.live.len())
            .filter(|&i| !self.live[i].created_sent)
            .collect();
        if pending.is_empty() {
            return;
        }
        let live = self.live.remove(pending[k % pending.len()]);
        if !self.cancelled(&live.project) {
            self.failed_since_success.insert(live.project.clone());
        }
        self.deliver(Input::CreateFailed {
            project: live.project,
            attempt: live.attempt,
            reason: "403".into(),
        });
    }

    fn cancel(&mut self, p: &str, with_descendants: bool) {
        // An operator cancel overrides the failure blocking of the projects it clears.
        self.failed_since_success.remove(p);
        if with_descendants {
            for d in self.g.acyclic_descendants(p) {
                self.failed_since_success.remove(d);
            }
        }
        self.deliver(Input::Cancel {
            projects: vec![p.into()],
            with_descendants,
        });
    }

    /// The operator cancelled the project while its pipeline ran: its failure does not block.
    fn cancelled(&self, p: &str) -> bool {
        self.c
            .state(p)
            .and_then(|s| s.running.as_ref())
            .is_some_and(|r| r.cancelled)
    }

    fn blocks(&self, p: &str) -> bool {
        self.c
            .state(p)
            .is_some_and(|s| s.stale.is_some() || s.running.is_some())
    }

    fn dispatch(&mut self, t: Throttle) -> usize {
        self.now += 1;
        let running_before = self.c.running_pipelines().len() + self.c.pending_attempts().len();
        let actions = self.c.dispatch(&self.g, t, &|_| false, self.now);
        self.store();
        assert!(actions.len() <= t.can_create);
        assert!(
            actions.is_empty() || running_before + actions.len() <= t.max_running,
            "max_running exceeded"
        );
        let n = actions.len();
        for a in actions {
            let Action::CreatePipeline {
                project, attempt, ..
            } = a;
            assert!(
                self.live.iter().all(|l| l.project != project),
                "{project} started while its pipeline runs"
            );
            for anc in self.g.acyclic_ancestors(&project) {
                // Invariant 1: nothing above is stale or running.
                assert!(
                    !self.blocks(anc),
                    "{project} started while ancestor {anc} is pending"
                );
                // Invariant 3: nothing above failed without a later success.
                assert!(
                    !self.failed_since_success.contains(anc),
                    "{project} started below failed {anc}"
                );
            }
            *self.creations.entry(project.clone()).or_default() += 1;
            let pid = self.pid();
            self.live.push(Live {
                project,
                attempt,
                pid,
                created_sent: false,
            });
        }
        n
    }

    /// Dispatches with an exclusion and checks the result against [`reference_dispatch`]: same
    /// projects started in the same order, same exclusions cleared.
    fn dispatch_like_reference(&mut self, t: Throttle, excluded: &dyn Fn(&str) -> bool) {
        self.now += 1;
        let mut reference = self.c.clone();
        let want = reference_dispatch(&mut reference, &self.g, t, excluded);
        let actions = self.c.dispatch(&self.g, t, excluded, self.now);
        self.store();
        let got: Vec<String> = actions
            .iter()
            .map(|Action::CreatePipeline { project, .. }| project.clone())
            .collect();
        assert_eq!(
            got, want,
            "dispatch started other projects than the full walk"
        );
        // The status views: the walk the frontier prunes finds the same blockers, and the copy
        // they work on carries exact indexes.
        let plain = Cascade::from_parts(self.c.projects.clone(), self.c.counters());
        for p in self.g.projects() {
            assert_eq!(self.c.blocked_by(&self.g, p), plain.blocked_by(&self.g, p));
        }
        self.c.active_copy().assert_index_exact(&self.g);
        for (p, s) in &reference.projects {
            if !want.contains(p) {
                assert_eq!(
                    self.c.projects.get(p).map(|s| s.stale.is_some()),
                    Some(s.stale.is_some()),
                    "{p}: exclusion handled differently"
                );
            }
        }
        for a in actions {
            let Action::CreatePipeline {
                project, attempt, ..
            } = a;
            let pid = self.pid();
            self.live.push(Live {
                project,
                attempt,
                pid,
                created_sent: false,
            });
        }
    }

    /// Invariant 4: with every pipeline succeeding and no change, everything settles. Failed
    /// projects are retried by the operator first.
    fn drain(&mut self) {
        for _ in 0..500 {
            while self.live.iter().any(|l| !l.created_sent) {
                self.created(0);
            }
            while !self.live.is_empty() {
                self.finish(0, PipelineStatus::Success, true);
            }
            let failed: Vec<String> = self
                .c
                .projects()
                .filter(|(_, s)| s.failed.is_some())
                .map(|(p, _)| p.to_owned())
                .collect();
            for p in &failed {
                self.deliver(Input::Rebuild { project: p.clone() });
            }
            let started = self.dispatch(Throttle::unlimited());
            if started == 0 && failed.is_empty() && self.live.is_empty() {
                break;
            }
        }
        for (p, s) in self.c.projects() {
            assert!(
                s.stale.is_none() && s.running.is_none(),
                "{p} not settled: {s:?}"
            );
        }
    }
}

/// Dispatch as it was before the indexes, walking every project on every call: the oracle for
/// the incremental one. Clears the excluded projects' `stale` like it and returns the projects it
/// would start, in order (what it records for them is the shared code after the choice).
fn reference_dispatch(
    c: &mut Cascade,
    graph: &DepGraph,
    throttle: Throttle,
    excluded: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    for (p, st) in c.projects.iter_mut() {
        if st.running.is_none() && st.stale.is_some() && excluded(p) {
            st.stale = None;
        }
    }
    let mut running = 0usize;
    let mut pending = Vec::new();
    for (p, st) in &c.projects {
        running += usize::from(st.running.is_some());
        if st.blocks()
            && let Some(i) = graph.index_of(p)
        {
            pending.push(i);
        }
    }
    let slots = throttle
        .max_running
        .saturating_sub(running)
        .min(throttle.can_create);
    if slots == 0 {
        return Vec::new();
    }
    let mut blocked = vec![false; graph.len()];
    for d in graph.reach_ids(&pending, true, true) {
        blocked[d as usize] = true;
    }
    let mut candidates: Vec<(u32, i64, u32)> = c
        .projects
        .iter()
        .filter(|(p, st)| {
            st.running.is_none() && st.failed.is_none() && st.stale.is_some() && !excluded(p)
        })
        .filter_map(|(p, st)| {
            let i = graph.index_of(p)?;
            let since = st.stale.as_ref().map_or(0, |s| s.since_ms);
            (!blocked[i as usize]).then(|| (graph.rank_of(i), since, i))
        })
        .collect();
    candidates.sort_unstable();
    candidates
        .into_iter()
        .take(slots)
        .map(|(_, _, i)| graph.name(i).to_owned())
        .collect()
}

/// The same projects with other random edges (a rescan changed the graph).
fn regraph(g: &DepGraph, seed: u16) -> DepGraph {
    let names: Vec<String> = g.projects().iter().map(|p| p.to_string()).collect();
    let mut edges = Vec::new();
    let mut bits = u32::from(seed).wrapping_mul(2_654_435_761);
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            bits = bits.rotate_left(5) ^ 0x9E37_79B9;
            if bits % 4 == 0 {
                edges.push((a.clone(), b.clone()));
            }
        }
    }
    DepGraph::from_parts(names, edges)
}

fn throttle(b: u16, c: u16) -> Throttle {
    Throttle {
        max_running: 1 + (b % 4) as usize,
        can_create: if c.is_multiple_of(5) {
            usize::MAX
        } else {
            (c % 4) as usize
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Invariants 1, 3, 4 and 5 under random completions, failures, duplicates, reordering
    /// (finished before created), create failures, retries, cancels and external changes.
    #[test]
    fn invariants_hold_under_random_interleavings(
        g in arb_graph(),
        ops in prop::collection::vec((0u8..10, any::<u16>(), any::<u16>()), 0..150),
    ) {
        let projects: Vec<String> = g.projects().iter().map(|s| s.to_string()).collect();
        let mut sim = Sim::new(g);
        for (op, b, c) in ops {
            let p = &projects[b as usize % projects.len()];
            match op {
                0 | 1 => {
                    let status = match c % 6 {
                        0 => PipelineStatus::Failed,
                        1 => PipelineStatus::Canceled,
                        _ => PipelineStatus::Success,
                    };
                    sim.finish(b as usize, status, c % 2 == 0);
                }
                2 => sim.created(b as usize),
                3 | 4 => sim.replay(b as usize),
                5 => sim.change(p),
                6 => sim.create_failed(b as usize),
                7 => {
                    sim.deliver(Input::Rebuild { project: p.clone() });
                }
                8 if c % 4 == 0 => sim.cancel(p, c % 8 == 0),
                _ => {}
            }
            sim.dispatch(throttle(b, c));
            let json = serde_json::to_string(&sim.c).unwrap();
            let back: Cascade = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &sim.c);
            // Loading rebuilds the indexes from the states.
            back.assert_index_exact(&sim.g);
        }
        sim.drain();
    }

    /// The indexes are derived state: after any sequence of inputs, dispatches (with exclusions),
    /// renames, graph changes and prunes they equal a recomputation from the project states (checked
    /// after every step by `Sim::store`), and dispatch starts exactly what the full walk starts.
    #[test]
    fn indexes_equal_recomputation(
        g in arb_graph(),
        exclude_mask in any::<u16>(),
        ops in prop::collection::vec((0u8..14, any::<u16>(), any::<u16>()), 0..150),
    ) {
        let projects: Vec<String> = g.projects().iter().map(|s| s.to_string()).collect();
        // A few projects excluded (not every case, so that the unexcluded paths get coverage).
        let excluded: BTreeSet<String> = projects
            .iter()
            .enumerate()
            .filter(|(i, _)| exclude_mask % 3 == 0 && exclude_mask & (1 << (i % 16)) != 0)
            .map(|(_, p)| p.clone())
            .collect();
        let excl = |p: &str| excluded.contains(p);
        let mut sim = Sim::new(g);
        for (op, b, c) in ops {
            let p = &projects[b as usize % projects.len()];
            match op {
                0 | 1 => {
                    let status = match c % 5 {
                        0 => PipelineStatus::Failed,
                        1 => PipelineStatus::Canceled,
                        _ => PipelineStatus::Success,
                    };
                    sim.finish(b as usize, status, c % 2 == 0);
                }
                2 => sim.created(b as usize),
                3 => sim.replay(b as usize),
                4 | 5 => sim.change(p),
                6 => sim.create_failed(b as usize),
                7 => {
                    sim.deliver(Input::Rebuild { project: p.clone() });
                }
                8 => sim.cancel(p, c % 2 == 0),
                9 => {
                    sim.deliver(Input::Forget { projects: vec![p.clone()] });
                }
                10 => {
                    // A rename and back: the state moves away from the graph and returns.
                    // Its pipeline memory moves too, so earlier events are no redeliveries.
                    sim.history.clear();
                    let away = format!("{p}-renamed");
                    sim.c.rename(p, &away);
                    sim.store();
                    if c % 2 == 0 {
                        sim.c.rename(&away, p);
                        sim.store();
                    }
                }
                11 => {
                    // Prune drops pipeline memory: earlier events are no redeliveries.
                    sim.history.clear();
                    sim.g = regraph(&sim.g, c);
                    sim.c.prune(&sim.g);
                    sim.store();
                }
                _ => {}
            }
            sim.dispatch_like_reference(throttle(b, c), &excl);
            prop_assert!(sim.c.has_frontier(&sim.g));
        }
    }

    /// Invariant 2: without failures and without changes during builds, every descendant of the
    /// changes gets exactly one pipeline — the projects of `plan` — whatever the throttle, the
    /// delivery order and the duplicates.
    #[test]
    fn every_descendant_built_exactly_once(
        g in arb_graph(),
        root_mask in any::<u16>(),
        ops in prop::collection::vec((0u8..4, any::<u16>(), any::<u16>()), 0..80),
    ) {
        let mut roots: Vec<String> = g
            .projects()
            .iter()
            .enumerate()
            .filter(|(i, _)| root_mask & (1 << i) != 0)
            .map(|(_, p)| p.to_string())
            .collect();
        let root_refs: Vec<&str> = roots.iter().map(String::as_str).collect();
        let expected: BTreeMap<String, usize> =
            g.plan(&root_refs).into_iter().flatten().map(|p| (p, 1)).collect();
        // Downstream roots first: a root's own change must not hide the change of a root above it
        // (its push pipeline would count as built from fresh parents).
        roots.sort_by_key(|r| std::cmp::Reverse(g.topo_rank(r)));
        let mut sim = Sim::new(g);
        for r in &roots {
            sim.change(r);
        }
        for (op, b, c) in ops {
            match op {
                0 => sim.finish(b as usize, PipelineStatus::Success, c % 2 == 0),
                1 => sim.created(b as usize),
                2 => sim.replay(b as usize),
                _ => {}
            }
            sim.dispatch(throttle(b, c));
        }
        sim.drain();
        prop_assert_eq!(sim.creations, expected);
    }

    /// Cross-check of the two modules: with unlimited throttle and every pipeline succeeding, the
    /// cascade starts projects in exactly the waves of `DepGraph::plan`.
    #[test]
    fn plan_equals_cascade_waves(g in arb_graph(), root_mask in any::<u16>()) {
        let mut roots: Vec<String> = g
            .projects()
            .iter()
            .enumerate()
            .filter(|(i, _)| root_mask & (1 << i) != 0)
            .map(|(_, p)| p.to_string())
            .collect();
        let root_refs: Vec<&str> = roots.iter().map(String::as_str).collect();
        let plan = g.plan(&root_refs);
        roots.sort_by_key(|r| std::cmp::Reverse(g.topo_rank(r)));
        let mut h = H::new(&[]);
        h.g = g;
        for r in &roots {
            h.change(r);
        }
        prop_assert_eq!(h.drain(), plan);
        prop_assert!(h.quiet());
    }
}
