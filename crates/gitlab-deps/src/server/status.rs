//! What the service is doing, for people (`GET /`) and programs (`GET /api/status`).

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde::Serialize;

use super::AppState;
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

#[derive(Serialize)]
struct StatusJson {
    projects: Vec<ProjectView>,
    graph: GraphCounts,
    activity: Vec<Activity>,
}

#[derive(Serialize)]
struct GraphCounts {
    projects: usize,
    edges: usize,
}

#[derive(Serialize)]
struct Activity {
    at_ms: i64,
    line: String,
}

async fn collect(state: &AppState) -> StatusJson {
    let snapshot = state.engine.snapshot().await;
    let store = state.engine.store().clone();
    let activity = tokio::task::spawn_blocking(move || store.recent_activity(100))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    StatusJson {
        projects: describe(&snapshot),
        graph: GraphCounts {
            projects: snapshot.graph.len(),
            edges: snapshot.graph.edge_count(),
        },
        activity: activity
            .into_iter()
            .map(|(at_ms, line)| Activity { at_ms, line })
            .collect(),
    }
}

/// `GET /api/status`.
pub(crate) async fn json(State(state): State<AppState>) -> Json<serde_json::Value> {
    let status = collect(&state).await;
    Json(serde_json::to_value(status).unwrap_or_default())
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn clock(at_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// `GET /`: a page that refreshes itself every 5 seconds.
pub(crate) async fn page(State(state): State<AppState>) -> Html<String> {
    let status = collect(&state).await;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
         <title>gitlab-deps</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse}td,th{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}\
         .running{color:#1f75cb}.failed,.blocked{color:#c91c00}.waiting,.queued{color:#888}\
         code{font-size:.9em}</style></head><body><h1>gitlab-deps</h1>",
    );
    html.push_str(&format!(
        "<p>{} projects, {} dependencies. <a href=/api/status>JSON</a> · <a href=/metrics>metrics</a></p>",
        status.graph.projects, status.graph.edges
    ));
    if status.projects.is_empty() {
        html.push_str("<p>Nothing to rebuild: every project is up to date.</p>");
    } else {
        html.push_str("<h2>Rebuilds</h2><table><tr><th>project</th><th>state</th><th>detail</th><th>change began at</th></tr>");
        for p in &status.projects {
            let detail = match &p.pipeline_url {
                Some(u) => format!("<a href=\"{}\">{}</a>", esc(u), esc(&p.detail)),
                None => esc(&p.detail),
            };
            html.push_str(&format!(
                "<tr><td><code>{}</code></td><td class={}>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.project),
                p.state,
                p.state,
                detail,
                esc(&p.roots.join(", "))
            ));
        }
        html.push_str("</table>");
    }
    html.push_str("<h2>Activity</h2><table>");
    for a in &status.activity {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            clock(a.at_ms),
            esc(&a.line)
        ));
    }
    html.push_str("</table></body></html>");
    Html(html)
}
