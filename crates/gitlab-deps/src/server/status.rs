//! What the service is doing, for people (`GET /`) and programs (`GET /api/status`).

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde::Serialize;

use super::AppState;
use crate::orchestrate::{ProjectView, describe};

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
    // From memory only: the page must answer while the database is locked.
    let snapshot = state.engine.snapshot().await;
    let activity = state.engine.recent_activity(100);
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
