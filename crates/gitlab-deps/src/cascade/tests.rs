use super::*;

/// A small driver: a graph, the cascade, and a fake GitLab that creates pipelines on demand.
pub(super) struct H {
    pub g: DepGraph,
    pub c: Cascade,
    pub now: i64,
    pub next_pid: u64,
    /// Every CreatePipeline, in order.
    pub created: Vec<String>,
    /// project -> (attempt, pipeline id) of our pipelines not yet finished.
    pub live: BTreeMap<String, (String, u64)>,
}

pub(super) fn graph(edges: &[(&str, &str)]) -> DepGraph {
    DepGraph::from_parts(
        Vec::new(),
        edges.iter().map(|(u, d)| (u.to_string(), d.to_string())),
    )
}

fn never(_: &str) -> bool {
    false
}

impl H {
    pub fn new(edges: &[(&str, &str)]) -> Self {
        H {
            g: graph(edges),
            c: Cascade::new(),
            now: 1_000,
            next_pid: 100,
            created: Vec::new(),
            live: BTreeMap::new(),
        }
    }

    fn tick(&mut self) -> i64 {
        self.now += 10;
        self.now
    }

    pub fn apply(&mut self, input: Input) -> Applied {
        let now = self.tick();
        self.c.apply(&self.g, input, now)
    }

    /// A pipeline we did not create succeeded at `p` (a push).
    pub fn change(&mut self, p: &str) -> Applied {
        self.next_pid += 1;
        let pid = self.next_pid;
        self.apply(Input::PipelineFinished {
            project: p.into(),
            pipeline_id: pid,
            attempt: None,
            status: PipelineStatus::Success,
            reason: None,
            // Created now, after everything recorded so far.
            created_ms: Some(self.now + 1),
        })
    }

    pub fn dispatch_with(&mut self, t: Throttle, excluded: &dyn Fn(&str) -> bool) -> Vec<String> {
        let now = self.tick();
        let actions = self.c.dispatch(&self.g, t, excluded, now);
        let mut started = Vec::new();
        for a in actions {
            let Action::CreatePipeline {
                project, attempt, ..
            } = a;
            self.next_pid += 1;
            let pid = self.next_pid;
            let applied = self.apply(Input::PipelineCreated {
                project: project.clone(),
                attempt: attempt.clone(),
                pipeline_id: pid,
            });
            assert_eq!(applied.touched, vec![project.clone()]);
            self.live.insert(project.clone(), (attempt, pid));
            self.created.push(project.clone());
            started.push(project);
        }
        started
    }

    pub fn dispatch(&mut self) -> Vec<String> {
        self.dispatch_with(Throttle::unlimited(), &never)
    }

    pub fn finish(&mut self, p: &str, status: PipelineStatus) -> Input {
        let (attempt, pid) = self.live.remove(p).expect("no live pipeline");
        let input = Input::PipelineFinished {
            project: p.into(),
            pipeline_id: pid,
            attempt: Some(attempt),
            status,
            reason: None,
            created_ms: None,
        };
        self.apply(input.clone());
        input
    }

    pub fn succeed(&mut self, p: &str) -> Input {
        self.finish(p, PipelineStatus::Success)
    }

    pub fn st(&self, p: &str) -> ProjectState {
        self.c.state(p).cloned().unwrap_or_default()
    }

    pub fn stale(&self, p: &str) -> bool {
        self.st(p).stale.is_some()
    }

    pub fn running(&self, p: &str) -> bool {
        self.st(p).running.is_some()
    }

    pub fn failed(&self, p: &str) -> bool {
        self.st(p).failed.is_some()
    }

    /// Succeeds everything running until nothing is left to do; returns the waves started.
    pub fn drain(&mut self) -> Vec<Vec<String>> {
        let mut waves = Vec::new();
        loop {
            let mut wave = self.dispatch();
            wave.sort();
            let live: Vec<String> = self.live.keys().cloned().collect();
            if wave.is_empty() && live.is_empty() {
                return waves;
            }
            if !wave.is_empty() {
                waves.push(wave);
            }
            for p in live {
                self.succeed(&p);
            }
        }
    }

    pub fn quiet(&self) -> bool {
        self.c
            .projects()
            .all(|(_, s)| s.stale.is_none() && s.running.is_none())
    }
}

const DIAMOND: &[(&str, &str)] = &[
    ("img/base", "img/ruby"),
    ("img/base", "img/tools"),
    ("img/ruby", "apps/app"),
    ("img/tools", "apps/app"),
];

#[test]
fn starting_causes_nothing() {
    let mut h = H::new(DIAMOND);
    assert!(h.dispatch().is_empty());
    assert_eq!(h.c, Cascade::new());
}

#[test]
fn diamond_app_built_once_after_both() {
    let mut h = H::new(DIAMOND);
    let a = h.change("img/base");
    assert_eq!(
        a.touched,
        vec!["apps/app", "img/base", "img/ruby", "img/tools"]
    );
    assert!(!h.stale("img/base"));
    assert!(h.stale("apps/app"));
    assert_eq!(h.dispatch(), vec!["img/ruby", "img/tools"]);
    assert!(h.dispatch().is_empty(), "app waits");
    assert_eq!(
        h.c.blocked_by(&h.g, "apps/app"),
        vec!["img/ruby", "img/tools"]
    );
    h.succeed("img/ruby");
    assert!(h.dispatch().is_empty(), "app still waits for tools");
    assert_eq!(h.c.blocked_by(&h.g, "apps/app"), vec!["img/tools"]);
    h.succeed("img/tools");
    assert_eq!(h.dispatch(), vec!["apps/app"]);
    h.succeed("apps/app");
    assert!(h.dispatch().is_empty());
    assert_eq!(h.created, vec!["img/ruby", "img/tools", "apps/app"]);
    assert!(h.quiet());
    assert_eq!(h.c.projects().count(), 0);
}

#[test]
fn variables_carry_upstreams_roots_cascade_attempt() {
    let mut h = H::new(DIAMOND);
    h.change("img/base");
    h.dispatch();
    h.succeed("img/ruby");
    h.succeed("img/tools");
    let actions = h.c.dispatch(&h.g, Throttle::default(), &never, h.now + 1);
    let Action::CreatePipeline {
        project,
        attempt,
        variables,
    } = &actions[0];
    assert_eq!(project, "apps/app");
    assert_eq!(attempt, "a-3");
    assert_eq!(
        variables,
        &vec![
            (
                VAR_UPSTREAM.to_string(),
                "img/base,img/ruby,img/tools".to_string()
            ),
            (VAR_ROOT.to_string(), "img/base".to_string()),
            (VAR_CASCADE.to_string(), "c-1".to_string()),
            (VAR_ATTEMPT.to_string(), "a-3".to_string()),
        ]
    );
    assert_eq!(
        h.c.pending_attempts(),
        vec![("apps/app".into(), "a-3".into())]
    );
    let run = h.st("apps/app").running.unwrap();
    assert_eq!(run.roots, vec!["img/base"]);
    assert_eq!(run.cascade, "c-1");
    assert!(
        h.st("apps/app").stale.is_none(),
        "causes moved into running"
    );
}

#[test]
fn chain_builds_in_order() {
    let mut h = H::new(&[("a", "b"), ("b", "c"), ("c", "d")]);
    h.change("a");
    assert_eq!(h.drain(), vec![vec!["b"], vec!["c"], vec!["d"]]);
    assert!(h.quiet());
}

#[test]
fn success_not_ours_keeps_stale_when_upstream_pending() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    // b's own push pipeline finishes while a's change is still pending above it... a is not
    // pending here (its change is done), so b's build counts as fresh.
    h.change("b");
    assert!(!h.stale("b"), "built with fresh upstreams");
    assert!(h.stale("c"));
    h.c = Cascade::new();
    h.change("a");
    h.dispatch(); // b running
    h.change("b"); // a push on b while our b pipeline runs: b's upstream a is idle -> fresh
    assert!(h.running("b"));
    assert!(!h.stale("b"));
    // Now with an upstream pending: mark b stale via a manual rebuild of a, then b's push.
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.apply(Input::Rebuild {
        project: "a".into(),
    });
    h.change("b");
    assert!(h.stale("b"), "a is stale: b's push did not use a fresh a");
    assert_eq!(h.dispatch(), vec!["a"]);
}

#[test]
fn failure_blocks_below_then_later_success_resumes() {
    let mut h = H::new(DIAMOND);
    h.change("img/base");
    h.dispatch();
    let ruby_pid = h.live["img/ruby"].1;
    h.finish("img/ruby", PipelineStatus::Failed);
    assert!(h.failed("img/ruby"));
    assert!(h.stale("img/ruby"), "a failed project stays stale");
    h.succeed("img/tools");
    assert!(
        h.dispatch().is_empty(),
        "app blocked by failed ruby, ruby not retried"
    );
    assert_eq!(h.c.blocked_by(&h.g, "apps/app"), vec!["img/ruby"]);
    assert_eq!(
        h.st("img/ruby").failed.unwrap().reason,
        format!("pipeline {ruby_pid} failed")
    );
    // Somebody fixes ruby and pushes: a not-ours success resumes the chain.
    h.change("img/ruby");
    assert!(!h.failed("img/ruby"));
    assert!(!h.stale("img/ruby"));
    assert_eq!(h.drain(), vec![vec!["apps/app"]]);
    assert_eq!(h.created.iter().filter(|p| *p == "apps/app").count(), 1);
    assert!(h.quiet());
}

#[test]
fn failure_retry_by_rebuild() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    h.dispatch();
    h.finish("b", PipelineStatus::Canceled);
    assert!(h.failed("b"));
    assert!(h.dispatch().is_empty());
    let a = h.apply(Input::Rebuild {
        project: "b".into(),
    });
    assert!(a.log.iter().any(|l| l.contains("rebuild requested")));
    assert!(!h.failed("b"));
    assert_eq!(h.drain(), vec![vec!["b"], vec!["c"]]);
    let roots = h.c.state("c").map(|s| s.seen.len());
    assert_eq!(roots, Some(1));
    assert!(h.quiet());
}

#[test]
fn new_cause_on_failed_project_clears_failed() {
    let mut h = H::new(&[("a", "b")]);
    h.change("a");
    h.dispatch();
    h.finish("b", PipelineStatus::Failed);
    assert!(h.failed("b"));
    h.change("a");
    assert!(!h.failed("b"));
    assert_eq!(h.dispatch(), vec!["b"]);
    // The retry answers both changes of a.
    let run = h.st("b").running.unwrap();
    assert_eq!(run.causes.len(), 2);
    assert_eq!(run.cascade, "c-1", "oldest cascade");
}

#[test]
fn failure_not_ours_changes_nothing() {
    let mut h = H::new(&[("a", "b")]);
    let a = h.apply(Input::PipelineFinished {
        project: "a".into(),
        pipeline_id: 5,
        attempt: None,
        status: PipelineStatus::Failed,
        reason: Some("boom".into()),
        created_ms: None,
    });
    assert!(a.is_noop());
    assert_eq!(h.c, Cascade::new());
}

#[test]
fn failure_while_restale_is_retried_not_failed() {
    let mut h = H::new(&[("a", "b")]);
    h.change("a");
    h.dispatch();
    h.change("a"); // new a while b runs
    assert!(h.st("b").running.unwrap().restale);
    h.finish("b", PipelineStatus::Failed);
    assert!(!h.failed("b"), "a newer upstream build deserves a try");
    assert!(h.stale("b"));
    assert_eq!(h.dispatch(), vec!["b"]);
}

#[test]
fn overlap_change_while_waiting_coalesces() {
    // ruby changes while app waits on base: app once.
    let mut h = H::new(DIAMOND);
    h.apply(Input::Rebuild {
        project: "img/base".into(),
    });
    assert_eq!(h.dispatch(), vec!["img/base"]);
    h.change("img/ruby");
    assert!(
        h.stale("img/ruby"),
        "base is running: ruby's push did not use it"
    );
    h.succeed("img/base");
    let waves = h.drain();
    assert_eq!(waves, vec![vec!["img/ruby", "img/tools"], vec!["apps/app"]]);
    let app = h.created.iter().filter(|p| *p == "apps/app").count();
    assert_eq!(app, 1);
}

#[test]
fn overlap_change_while_running_rebuilds_once_more() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    assert_eq!(h.dispatch(), vec!["b"]);
    h.change("a");
    let run = h.st("b").running.unwrap();
    assert!(run.restale);
    assert!(h.dispatch().is_empty(), "b is running: no second pipeline");
    h.succeed("b");
    assert!(h.stale("b"), "stays stale after restale");
    assert!(h.stale("c"));
    assert_eq!(h.dispatch(), vec!["b"], "c waits for b's second build");
    h.succeed("b");
    assert_eq!(h.drain(), vec![vec!["c"]]);
    assert_eq!(h.created, vec!["b", "b", "c"]);
}

#[test]
fn redeliveries_are_noops() {
    let mut h = H::new(DIAMOND);
    let change = Input::PipelineFinished {
        project: "img/base".into(),
        pipeline_id: 7,
        attempt: None,
        status: PipelineStatus::Success,
        reason: None,
        created_ms: None,
    };
    h.apply(change.clone());
    let before = h.c.clone();
    assert!(h.apply(change.clone()).is_noop());
    assert_eq!(h.c, before);
    h.dispatch();
    let (attempt, pid) = h.live["img/ruby"].clone();
    let created = Input::PipelineCreated {
        project: "img/ruby".into(),
        attempt: attempt.clone(),
        pipeline_id: pid,
    };
    let before = h.c.clone();
    assert!(h.apply(created.clone()).is_noop());
    assert_eq!(h.c, before);
    let done = h.succeed("img/ruby");
    let before = h.c.clone();
    assert!(h.apply(done.clone()).is_noop());
    assert!(h.apply(created).is_noop(), "created after finished");
    assert!(h.apply(change).is_noop());
    assert_eq!(h.c, before);
    let failed = h.finish("img/tools", PipelineStatus::Failed);
    let before = h.c.clone();
    assert!(h.apply(failed).is_noop());
    assert_eq!(h.c, before);
    // An immediate repeat of a rebuild request is a no-op too.
    h.apply(Input::Rebuild {
        project: "apps/app".into(),
    });
    let before = h.c.clone();
    assert!(
        h.apply(Input::Rebuild {
            project: "apps/app".into()
        })
        .is_noop()
    );
    assert_eq!(h.c, before);
}

#[test]
fn old_redelivery_beyond_memory_is_ignored() {
    let mut h = H::new(&[("a", "b")]);
    for pid in 1..=40u64 {
        h.apply(Input::PipelineFinished {
            project: "a".into(),
            pipeline_id: pid,
            attempt: None,
            status: PipelineStatus::Success,
            reason: None,
            created_ms: None,
        });
    }
    assert_eq!(h.st("a").seen.len(), SEEN_PIPELINES);
    let before = h.c.clone();
    let a = h.apply(Input::PipelineFinished {
        project: "a".into(),
        pipeline_id: 3,
        attempt: None,
        status: PipelineStatus::Success,
        reason: None,
        created_ms: None,
    });
    assert!(a.is_noop());
    assert_eq!(h.c, before);
}

#[test]
fn retried_pipeline_same_id_new_status_counts() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    h.dispatch();
    let (_, pid) = h.live["b"].clone();
    h.finish("b", PipelineStatus::Failed);
    // Retrying the failed pipeline in GitLab reuses its id; its success is a change at b.
    let a = h.apply(Input::PipelineFinished {
        project: "b".into(),
        pipeline_id: pid,
        attempt: Some("a-1".into()),
        status: PipelineStatus::Success,
        reason: None,
        created_ms: None,
    });
    assert!(!a.is_noop());
    assert!(!h.failed("b") && !h.stale("b"));
    assert_eq!(h.drain(), vec![vec!["c"]]);
}

#[test]
fn adoption_by_attempt_before_created_event() {
    let mut h = H::new(&[("a", "b")]);
    h.change("a");
    let actions = h.c.dispatch(&h.g, Throttle::default(), &never, 5);
    assert_eq!(actions.len(), 1);
    assert!(h.c.is_ours("b", 999, Some("a-1")));
    assert!(!h.c.is_ours("b", 999, None));
    assert!(!h.c.is_ours("b", 999, Some("a-2")));
    // Finished arrives before Created (fast pipeline, or adoption after a crash).
    h.apply(Input::PipelineFinished {
        project: "b".into(),
        pipeline_id: 999,
        attempt: Some("a-1".into()),
        status: PipelineStatus::Success,
        reason: None,
        created_ms: None,
    });
    assert!(!h.running("b") && !h.stale("b"));
    let late = h.apply(Input::PipelineCreated {
        project: "b".into(),
        attempt: "a-1".into(),
        pipeline_id: 999,
    });
    assert!(late.is_noop());
}

#[test]
fn created_with_another_id_keeps_the_first() {
    let mut h = H::new(&[("a", "b")]);
    h.change("a");
    h.dispatch();
    let (attempt, pid) = h.live["b"].clone();
    let a = h.apply(Input::PipelineCreated {
        project: "b".into(),
        attempt: attempt.clone(),
        pipeline_id: pid + 50,
    });
    assert!(a.is_noop());
    assert_eq!(h.c.running_pipelines(), vec![("b".into(), pid)]);
    // A copy carrying our attempt but another pipeline id is not ours.
    assert!(!h.c.is_ours("b", pid + 50, Some(&attempt)));
    assert!(h.c.is_ours("b", pid, None));
}

#[test]
fn create_failed_marks_failed_and_keeps_stale() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    let actions = h.c.dispatch(&h.g, Throttle::default(), &never, 5);
    assert_eq!(actions.len(), 1);
    let a = h.apply(Input::CreateFailed {
        project: "b".into(),
        attempt: "a-1".into(),
        reason: "403 Forbidden".into(),
    });
    assert!(a.log.iter().any(|l| l.contains("403")));
    let st = h.st("b");
    assert_eq!(st.failed.as_ref().unwrap().pipeline_id, None);
    assert!(st.stale.is_some() && st.running.is_none());
    assert!(h.dispatch().is_empty());
    // Replay and wrong attempt: no-ops.
    assert!(
        h.apply(Input::CreateFailed {
            project: "b".into(),
            attempt: "a-1".into(),
            reason: "403".into()
        })
        .is_noop()
    );
}

#[test]
fn cancel_drops_pending_work() {
    let mut h = H::new(&[("a", "b"), ("b", "c"), ("c", "d")]);
    h.change("a");
    h.dispatch();
    let a = h.apply(Input::Cancel {
        projects: vec!["c".into()],
        with_descendants: false,
    });
    assert_eq!(a.touched, vec!["c"]);
    assert!(!h.stale("c") && h.stale("d"));
    // d still waits: b (its ancestor) runs, even though its direct upstream c is idle.
    assert!(h.dispatch().is_empty());
    assert_eq!(h.c.blocked_by(&h.g, "d"), vec!["b"]);
    let a = h.apply(Input::Cancel {
        projects: vec!["b".into()],
        with_descendants: true,
    });
    assert_eq!(a.touched, vec!["b", "d"]);
    assert!(h.running("b"), "the pipeline exists: still tracked");
    assert!(h.st("b").running.unwrap().cancelled);
    // Cancelling again changes nothing.
    assert!(
        h.apply(Input::Cancel {
            projects: vec!["b".into()],
            with_descendants: true
        })
        .is_noop()
    );
    // Its failure now does not bring the work back.
    h.finish("b", PipelineStatus::Canceled);
    assert!(!h.stale("b") && h.failed("b"));
    assert!(h.dispatch().is_empty());
    assert!(h.quiet());
}

#[test]
fn cancelled_running_success_still_propagates() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    h.dispatch();
    h.apply(Input::Cancel {
        projects: vec!["b".into()],
        with_descendants: true,
    });
    assert!(!h.stale("c"));
    h.succeed("b");
    assert!(h.stale("c"), "a new build of b exists: c is out of date");
    assert_eq!(h.drain(), vec![vec!["c"]]);
}

#[test]
fn exclusion_skips_but_descendants_proceed() {
    let mut h = H::new(&[("a", "x"), ("x", "b"), ("a", "c")]);
    let excl = |p: &str| p == "x";
    h.change("a");
    assert!(h.stale("x"));
    let started = h.dispatch_with(Throttle::unlimited(), &excl);
    assert_eq!(started, vec!["c", "b"], "rank order: c (1) before b (2)");
    assert!(!h.stale("x"));
    for p in ["b", "c"] {
        h.succeed(p);
    }
    assert!(h.dispatch_with(Throttle::unlimited(), &excl).is_empty());
    assert!(h.quiet());
}

#[test]
fn throttle_limits_running_and_creations() {
    let edges: Vec<(String, String)> = (0..6).map(|i| ("root".into(), format!("p{i}"))).collect();
    let mut h = H::new(&[]);
    h.g = DepGraph::from_parts(Vec::new(), edges);
    h.change("root");
    let t = Throttle {
        max_running: 4,
        can_create: 3,
    };
    assert_eq!(h.dispatch_with(t, &never), vec!["p0", "p1", "p2"]);
    assert_eq!(
        h.dispatch_with(t, &never),
        vec!["p3"],
        "max_running reached"
    );
    assert!(h.dispatch_with(t, &never).is_empty());
    h.succeed("p1");
    assert_eq!(h.dispatch_with(t, &never), vec!["p4"]);
    let zero = Throttle {
        max_running: 10,
        can_create: 0,
    };
    assert!(h.dispatch_with(zero, &never).is_empty());
}

#[test]
fn dispatch_orders_by_rank_then_oldest() {
    // b (rank 1) became stale before z (rank 1) and y (rank 0 below nothing pending).
    let mut h = H::new(&[("a", "z"), ("q", "b"), ("q", "y")]);
    h.change("a");
    h.change("q");
    h.apply(Input::Rebuild {
        project: "q".into(),
    }); // q stale too, blocks b and y
    let one = Throttle {
        max_running: 1,
        can_create: 1,
    };
    assert_eq!(h.dispatch_with(one, &never), vec!["q"], "rank 0 first");
    h.succeed("q");
    assert_eq!(
        h.dispatch_with(one, &never),
        vec!["z"],
        "oldest stale first"
    );
}

#[test]
fn graph_changes_never_panic_and_prune_drops() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    h.dispatch();
    // Rescan: b and c disappear.
    h.g = graph(&[("a", "d")]);
    assert!(h.dispatch().is_empty());
    assert!(h.c.blocked_by(&h.g, "c").is_empty());
    h.succeed("b");
    h.apply(Input::Rebuild {
        project: "c".into(),
    });
    h.apply(Input::Cancel {
        projects: vec!["zzz".into()],
        with_descendants: true,
    });
    let gone = h.c.prune(&h.g);
    assert_eq!(gone, vec!["b", "c"]);
    h.change("a");
    assert_eq!(h.dispatch(), vec!["d"]);
}

#[test]
fn unknown_projects_are_ignored() {
    let mut h = H::new(&[("a", "b")]);
    assert!(h.change("nope").is_noop());
    let a = h.apply(Input::Rebuild {
        project: "nope".into(),
    });
    assert!(a.is_noop() && !a.log.is_empty());
    assert!(
        h.apply(Input::PipelineCreated {
            project: "nope".into(),
            attempt: "a-1".into(),
            pipeline_id: 1
        })
        .is_noop()
    );
    assert_eq!(h.c, Cascade::new());
}

#[test]
fn cycles_are_ignored_by_the_cascade() {
    // a <-> b, b -> c: a change at a marks nothing (in-cycle edge), b marks c.
    let mut h = H::new(&[("a", "b"), ("b", "a"), ("b", "c")]);
    h.change("a");
    assert!(h.dispatch().is_empty());
    h.change("b");
    assert_eq!(h.drain(), vec![vec!["c"]]);
}

#[test]
fn state_roundtrips_through_json() {
    let mut h = H::new(DIAMOND);
    h.change("img/base");
    h.dispatch();
    h.finish("img/ruby", PipelineStatus::Failed);
    let json = serde_json::to_string(&h.c).unwrap();
    let back: Cascade = serde_json::from_str(&json).unwrap();
    assert_eq!(back, h.c);
    // Counters survive: the next ids do not repeat.
    h.c = back;
    h.change("img/tools");
    assert!(
        h.st("apps/app")
            .stale
            .unwrap()
            .causes
            .iter()
            .any(|c| c.cascade == "c-2")
    );
}

#[test]
fn large_cascade_log_is_summarised() {
    let edges: Vec<(String, String)> = (0..500)
        .map(|i| ("base".into(), format!("p{i:03}")))
        .collect();
    let mut h = H::new(&[]);
    h.g = DepGraph::from_parts(Vec::new(), edges);
    let a = h.change("base");
    assert_eq!(a.touched.len(), 501);
    assert!(a.log.len() < 60);
    assert!(a.log.last().unwrap().contains("450 more"));
}

#[test]
fn plan_matches_cascade_waves_on_diamond() {
    let mut h = H::new(DIAMOND);
    let plan = h.g.plan(&["img/base"]);
    h.change("img/base");
    assert_eq!(h.drain(), plan);
}

#[test]
fn a_pipeline_created_before_the_change_does_not_count_as_a_rebuild() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    h.dispatch_with(
        Throttle {
            max_running: 0,
            can_create: 0,
        },
        &never,
    );
    assert!(h.stale("b"));
    // A push pipeline of b that started before a changed finishes now: it built on the old a.
    h.apply(Input::PipelineFinished {
        project: "b".into(),
        pipeline_id: 900,
        attempt: None,
        status: PipelineStatus::Success,
        reason: None,
        created_ms: Some(0),
    });
    assert!(h.stale("b"), "b must still be rebuilt on the new a");
    // Without a creation time it is not trusted either.
    h.apply(Input::PipelineFinished {
        project: "b".into(),
        pipeline_id: 901,
        attempt: None,
        status: PipelineStatus::Success,
        reason: None,
        created_ms: None,
    });
    assert!(h.stale("b"));
}

#[test]
fn our_long_pipeline_is_recognised_after_many_newer_ones() {
    let mut h = H::new(&[("a", "b")]);
    h.change("a");
    assert_eq!(h.dispatch(), vec!["b"]);
    // Twenty pipelines of b that are not ours finish while ours still runs (higher ids).
    for pid in 1000..1020 {
        h.apply(Input::PipelineFinished {
            project: "b".into(),
            pipeline_id: pid,
            attempt: None,
            status: PipelineStatus::Failed,
            reason: None,
            created_ms: None,
        });
        h.apply(Input::PipelineFinished {
            project: "b".into(),
            pipeline_id: pid + 100,
            attempt: None,
            status: PipelineStatus::Success,
            reason: None,
            created_ms: Some(0),
        });
    }
    assert!(h.st("b").running.is_some());
    h.succeed("b");
    assert!(h.st("b").running.is_none(), "our final event was dropped");
}

#[test]
fn a_renamed_project_keeps_its_pending_work() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    assert_eq!(h.dispatch(), vec!["b"]);
    h.c.take_dirty();
    h.c.rename("b", "renamed/b");
    let dirty: Vec<String> = h.c.take_dirty().into_iter().map(|(p, _)| p).collect();
    assert_eq!(dirty, ["b", "renamed/b"]);
    assert!(h.c.state("b").is_none());
    assert!(h.c.state("renamed/b").is_some_and(|s| s.running.is_some()));
}

#[test]
fn forget_drops_a_running_pipeline_that_never_finishes() {
    let mut h = H::new(&[("a", "b"), ("b", "c")]);
    h.change("a");
    assert_eq!(h.dispatch(), vec!["b"]);
    // b's pipeline waits on a manual job forever; the operator forgets it.
    let a = h.apply(Input::Forget {
        projects: vec!["b".into()],
    });
    assert_eq!(a.touched, ["b"]);
    assert!(h.c.state("b").is_some_and(|s| s.is_idle()));
    // c, still pending, is no longer blocked.
    assert!(h.stale("c"));
    assert_eq!(h.dispatch(), vec!["c"]);
}
