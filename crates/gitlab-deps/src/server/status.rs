//! `GET /api/status`: what the service is doing, for programs (the page is in [`super::pages`]).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use crate::orchestrate::{LeaderView, ProjectView};

/// `GET /api/status`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StatusJson {
    /// `leader` (this replica runs the engine) or `standby` (it shows the leader's work as
    /// stored, at most a second old).
    role: &'static str,
    /// The replica holding the engine's lease (`null`: none, or the store did not answer).
    leader: Option<LeaderView>,
    projects: Vec<ProjectView>,
    graph: GraphCounts,
    activity: Vec<Activity>,
}

/// Graph size.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct GraphCounts {
    projects: usize,
    edges: usize,
}

/// One activity log line.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Activity {
    at_ms: i64,
    line: String,
}

/// The newest `limit` lines of the activity log, newest first, from the engine's memory: the
/// page must answer while the database is locked.
pub(crate) async fn activity(state: &AppState, limit: usize) -> Vec<(i64, String)> {
    state.engine.recent_activity(limit)
}

/// `GET /api/status`: every non-idle project, graph size, the last 100 activity lines.
#[utoipa::path(get, path = "/api/status", responses((status = 200, description = "What the service is doing", body = StatusJson)))]
pub(crate) async fn json(State(state): State<AppState>) -> Json<serde_json::Value> {
    let view = state.live.current().await;
    let role = state.engine.role_view().await;
    let status = StatusJson {
        role: role.role,
        leader: role.leader,
        projects: view.projects.clone(),
        graph: GraphCounts {
            projects: view.graph.len(),
            edges: view.graph.edge_count(),
        },
        activity: activity(&state, 100)
            .await
            .into_iter()
            .map(|(at_ms, line)| Activity { at_ms, line })
            .collect(),
    };
    Json(serde_json::to_value(status).unwrap_or_default())
}
