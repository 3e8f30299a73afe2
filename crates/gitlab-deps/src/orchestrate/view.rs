//! What each project that is not idle is doing and why, as shown by the status page, the API,
//! `gitlab-deps status` and the demo.

use serde::Serialize;

use super::engine::Snapshot;

/// One project that is not idle.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    /// The projects it waits for.
    pub waits_for: Vec<String>,
    /// Where the change began.
    pub roots: Vec<String>,
}

/// Describes every non-idle project, running first, then failed, blocked, waiting, queued.
pub fn describe(snapshot: &Snapshot) -> Vec<ProjectView> {
    let cascade = &snapshot.cascade;
    let url = |project: &str, id: u64| {
        snapshot
            .web_urls
            .get(project)
            .filter(|u| !u.is_empty())
            .map(|u| format!("{u}/-/pipelines/{id}"))
    };
    let mut out: Vec<ProjectView> = cascade
        .projects()
        .map(|(project, s)| {
            let roots: Vec<String> = match (&s.running, &s.stale) {
                (Some(r), _) => r.roots.clone(),
                (None, Some(st)) => {
                    let mut r: Vec<String> = st.causes.iter().map(|c| c.root.clone()).collect();
                    r.sort();
                    r.dedup();
                    r
                }
                _ => Vec::new(),
            };
            if let Some(r) = &s.running {
                let detail = match r.pipeline_id {
                    Some(id) => {
                        format!("pipeline #{id} running (after {})", r.upstreams.join(", "))
                    }
                    None => "creating its pipeline".to_owned(),
                };
                return ProjectView {
                    project: project.to_owned(),
                    state: "running",
                    detail,
                    pipeline_id: r.pipeline_id,
                    pipeline_url: r.pipeline_id.and_then(|id| url(project, id)),
                    waits_for: Vec::new(),
                    roots,
                };
            }
            if let Some(f) = &s.failed {
                return ProjectView {
                    project: project.to_owned(),
                    state: "failed",
                    detail: format!("failed: {} (a later success resumes the chain)", f.reason),
                    pipeline_id: f.pipeline_id,
                    pipeline_url: f.pipeline_id.and_then(|id| url(project, id)),
                    waits_for: Vec::new(),
                    roots,
                };
            }
            let waits_for = cascade.blocked_by(&snapshot.graph, project);
            let failed_above: Vec<&String> = waits_for
                .iter()
                .filter(|p| cascade.state(p).is_some_and(|s| s.failed.is_some()))
                .collect();
            let (state, detail) = if !failed_above.is_empty() {
                (
                    "blocked",
                    format!(
                        "blocked by failed {}",
                        failed_above
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            } else if !waits_for.is_empty() {
                ("waiting", format!("waits for {}", waits_for.join(", ")))
            } else {
                ("queued", "queued (throttled)".to_owned())
            };
            ProjectView {
                project: project.to_owned(),
                state,
                detail,
                pipeline_id: None,
                pipeline_url: None,
                waits_for,
                roots,
            }
        })
        .collect();
    let order = |s: &str| match s {
        "running" => 0,
        "failed" => 1,
        "blocked" => 2,
        "waiting" => 3,
        _ => 4,
    };
    out.sort_by(|a, b| (order(a.state), &a.project).cmp(&(order(b.state), &b.project)));
    out
}
