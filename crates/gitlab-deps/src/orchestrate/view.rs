//! What each project that is not idle is doing and why, as shown by the status page, the API,
//! `gitlab-deps status` and the demo.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::engine::Snapshot;
use crate::cascade::ProjectState;

/// One project that is not idle.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ProjectView {
    /// Project path.
    pub project: String,
    /// `running`, `failed`, `blocked` (below a failure), `waiting` (for upstreams) or `queued`
    /// (startable, held back by the throttle).
    pub state: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// Our pipeline, when running or failed.
    pub pipeline_id: Option<u64>,
    /// Link to it.
    pub pipeline_url: Option<String>,
    /// The projects it waits for (its nearest pending upstreams).
    pub waits_for: Vec<String>,
    /// When blocked: the failed projects above it, however far up (a project below a blocked one
    /// is blocked by the same failure, not waiting).
    pub blocked_by: Vec<String>,
    /// Where the change began.
    pub roots: Vec<String>,
    /// The chains (cascade ids) it takes part in.
    pub cascades: Vec<String>,
}

/// Describes every non-idle project, running first, then failed, blocked, waiting, queued.
///
/// Walks the active projects once in topological order, so "blocked" propagates from a failed
/// project through every project below it that waits on it, directly or through other blocked ones.
pub fn describe(snapshot: &Snapshot) -> Vec<ProjectView> {
    let cascade = &snapshot.cascade;
    let graph = &snapshot.graph;
    let url = |project: &str, id: u64| {
        snapshot
            .web_urls
            .get(project)
            .filter(|u| !u.is_empty())
            .map(|u| format!("{u}/-/pipelines/{id}"))
    };
    let mut active: Vec<(&str, &ProjectState)> = cascade.projects().collect();
    // Blockers are acyclic ancestors, which have a smaller rank: they are described first.
    active.sort_by_key(|(p, _)| (graph.topo_rank(p).unwrap_or(usize::MAX), *p));
    // Failed projects above each blocked project, filled in the order above.
    let mut blocked: HashMap<&str, BTreeSet<String>> = HashMap::new();
    let mut out: Vec<ProjectView> = Vec::with_capacity(active.len());
    for (project, s) in active {
        let (roots, cascades) = origins(s);
        let base = ProjectView {
            project: project.to_owned(),
            state: "queued",
            detail: String::new(),
            pipeline_id: None,
            pipeline_url: None,
            waits_for: Vec::new(),
            blocked_by: Vec::new(),
            roots,
            cascades,
        };
        if let Some(r) = &s.running {
            let detail = match r.pipeline_id {
                Some(id) => format!("pipeline #{id} running (after {})", r.upstreams.join(", ")),
                None => "creating its pipeline".to_owned(),
            };
            out.push(ProjectView {
                state: "running",
                detail,
                pipeline_id: r.pipeline_id,
                pipeline_url: r.pipeline_id.and_then(|id| url(project, id)),
                ..base
            });
            continue;
        }
        if let Some(f) = &s.failed {
            out.push(ProjectView {
                state: "failed",
                detail: format!("failed: {} (a later success resumes the chain)", f.reason),
                pipeline_id: f.pipeline_id,
                pipeline_url: f.pipeline_id.and_then(|id| url(project, id)),
                ..base
            });
            continue;
        }
        let waits_for = cascade.blocked_by(graph, project);
        let mut failed_above = BTreeSet::new();
        for w in &waits_for {
            if cascade.state(w).is_some_and(|s| s.failed.is_some()) {
                failed_above.insert(w.clone());
            } else if let Some(up) = blocked.get(w.as_str()) {
                failed_above.extend(up.iter().cloned());
            }
        }
        let view = if !failed_above.is_empty() {
            let by: Vec<String> = failed_above.iter().cloned().collect();
            ProjectView {
                state: "blocked",
                detail: format!("blocked by failed {}", by.join(", ")),
                blocked_by: by,
                waits_for,
                ..base
            }
        } else if !waits_for.is_empty() {
            ProjectView {
                state: "waiting",
                detail: format!("waits for {}", waits_for.join(", ")),
                waits_for,
                ..base
            }
        } else {
            ProjectView {
                detail: "queued (throttled)".to_owned(),
                ..base
            }
        };
        if !failed_above.is_empty() {
            blocked.insert(project, failed_above);
        }
        out.push(view);
    }
    out.sort_by(|a, b| (order(a.state), &a.project).cmp(&(order(b.state), &b.project)));
    out
}

/// Sort order of the states: what needs attention first.
fn order(state: &str) -> u8 {
    match state {
        "running" => 0,
        "failed" => 1,
        "blocked" => 2,
        "waiting" => 3,
        _ => 4,
    }
}

/// Where a project's change began (root projects) and which chains it belongs to, both sorted.
fn origins(s: &ProjectState) -> (Vec<String>, Vec<String>) {
    let (mut roots, mut cascades): (Vec<String>, Vec<String>) = match (&s.running, &s.stale) {
        (Some(r), _) => (
            r.roots.clone(),
            std::iter::once(r.cascade.clone())
                .chain(r.causes.iter().map(|c| c.cascade.clone()))
                .collect(),
        ),
        (None, Some(st)) => st
            .causes
            .iter()
            .map(|c| (c.root.clone(), c.cascade.clone()))
            .unzip(),
        _ => (Vec::new(), Vec::new()),
    };
    roots.sort();
    roots.dedup();
    cascades.retain(|c| !c.is_empty());
    cascades.sort();
    cascades.dedup();
    (roots, cascades)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cascade::{Action, Cascade, Input, PipelineStatus, Throttle};
    use crate::graph::DepGraph;

    /// a -> b -> c -> d and b -> e: a change at `a` built, then `b`'s pipeline fails.
    fn failed_below_root() -> Snapshot {
        let graph = DepGraph::from_parts(
            Vec::new(),
            [("a", "b"), ("b", "c"), ("c", "d"), ("b", "e")]
                .map(|(u, d)| (u.to_owned(), d.to_owned())),
        );
        let mut cascade = Cascade::new();
        cascade.apply(
            &graph,
            Input::Rebuild {
                project: "a".into(),
            },
            1_000,
        );
        let mut now = 1_000;
        let mut run = |cascade: &mut Cascade, project: &str, status: PipelineStatus| {
            now += 10;
            let actions = cascade.dispatch(&graph, Throttle::unlimited(), &|_| false, now);
            let Some(Action::CreatePipeline { attempt, .. }) = actions
                .into_iter()
                .find(|Action::CreatePipeline { project: p, .. }| p == project)
            else {
                panic!("{project} not started");
            };
            cascade.apply(
                &graph,
                Input::PipelineCreated {
                    project: project.into(),
                    attempt: attempt.clone(),
                    pipeline_id: 7,
                },
                now,
            );
            cascade.apply(
                &graph,
                Input::PipelineFinished {
                    project: project.into(),
                    pipeline_id: 7,
                    attempt: Some(attempt),
                    status,
                    reason: Some("pipeline #7 failed".into()),
                    created_ms: None,
                },
                now,
            );
        };
        run(&mut cascade, "a", PipelineStatus::Success);
        run(&mut cascade, "b", PipelineStatus::Failed);
        Snapshot {
            cascade,
            graph: Arc::new(graph),
            web_urls: [("b".to_owned(), "https://gl.example/g/b".to_owned())].into(),
        }
    }

    #[test]
    fn everything_below_a_failure_is_blocked_by_it() {
        let views = describe(&failed_below_root());
        let by: Vec<(&str, &str, Vec<String>)> = views
            .iter()
            .map(|v| (v.project.as_str(), v.state, v.blocked_by.clone()))
            .collect();
        let failed = vec!["b".to_owned()];
        assert_eq!(
            by,
            vec![
                ("b", "failed", vec![]),
                ("c", "blocked", failed.clone()),
                ("d", "blocked", failed.clone()),
                ("e", "blocked", failed),
            ]
        );
        let d = &views[2];
        assert_eq!(d.waits_for, vec!["c"], "its nearest pending upstream");
        assert_eq!(d.detail, "blocked by failed b");
        assert_eq!(
            views[0].pipeline_url.as_deref(),
            Some("https://gl.example/g/b/-/pipelines/7")
        );
        assert_eq!(views[0].roots, vec!["a"]);
        assert_eq!(views[0].cascades.len(), 1);
    }
}
