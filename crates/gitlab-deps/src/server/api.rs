//! The JSON API: the graph (whole, a neighbourhood or a chain), chains, one project, readiness.
//! Everything is read from the live view computed once per engine change.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::graph_view::{self, DEFAULT_DEPTH, Layout, MAX_DEPTH, Selection, WHOLE_GRAPH};
use super::live::{Chain, LiveView};
use crate::cascade::PipelineStatus;
use crate::gitlab::ClientHealth;
use crate::orchestrate::LeaderView;

/// How long after GitLab's last answer a failed request still counts as a blip, not an outage.
const REACHABLE_WINDOW_MS: i64 = 5 * 60 * 1000;

/// API failures, each answered with a status and a one-line JSON error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No such project.
    #[error("no project {path} in the graph")]
    UnknownProject {
        /// The path asked for.
        path: String,
        /// Close matches.
        suggestions: Vec<String>,
    },
    /// No such chain.
    #[error("no chain {0} in progress or in the recent history")]
    UnknownChain(String),
}

/// An error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorJson {
    error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    suggestions: Vec<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let suggestions = match &self {
            ApiError::UnknownProject { suggestions, .. } => suggestions.clone(),
            ApiError::UnknownChain(_) => Vec::new(),
        };
        let body = ErrorJson {
            error: self.to_string(),
            suggestions,
        };
        (StatusCode::NOT_FOUND, Json(body)).into_response()
    }
}

/// Query of the graph views: `around` a project to `depth`, or a `chain`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GraphQuery {
    /// Project path to centre on.
    pub around: Option<String>,
    /// Edges from it, default 2, at most 10.
    pub depth: Option<usize>,
    /// A chain id.
    pub chain: Option<String>,
}

impl GraphQuery {
    /// The selection this query asks for on `view`'s graph.
    pub fn selection(&self, view: &LiveView) -> Selection {
        if let Some(path) = self
            .around
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            return Selection::Around {
                path: path.trim_matches('/').to_owned(),
                depth: self.depth.unwrap_or(DEFAULT_DEPTH).min(MAX_DEPTH),
            };
        }
        if let Some(id) = self.chain.as_deref().filter(|c| !c.is_empty()) {
            return Selection::Chain(id.to_owned());
        }
        if view.graph.len() <= WHOLE_GRAPH {
            Selection::Whole
        } else {
            Selection::Active
        }
    }
}

/// Lays out what `query` asks for.
pub(crate) fn graph_layout(view: &LiveView, query: &GraphQuery) -> Result<Layout, ApiError> {
    let selection = query.selection(view);
    match graph_view::select(view, &selection) {
        Some((projects, cut)) => Ok(graph_view::layout(view, &projects, cut)),
        None => Err(unknown_project(view, query.around.as_deref().unwrap_or(""))),
    }
}

fn unknown_project(view: &LiveView, path: &str) -> ApiError {
    ApiError::UnknownProject {
        path: path.to_owned(),
        // Only on a miss: a scan over the names, bounded by the instance, not done per view.
        suggestions: view
            .graph
            .suggest(path)
            .into_iter()
            .map(str::to_owned)
            .collect(),
    }
}

/// `GET /api/graph`.
#[utoipa::path(get, path = "/api/graph", params(GraphQuery), responses(
    (status = 200, description = "The selected projects laid out, and the edges between them", body = Layout),
    (status = 404, description = "`around` names no project", body = ErrorJson)))]
pub(crate) async fn graph(
    State(state): State<AppState>,
    Query(query): Query<GraphQuery>,
) -> Result<Json<Layout>, ApiError> {
    let view = state.live.current().await;
    graph_layout(&view, &query).map(Json)
}

/// Chains in progress and recently finished.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Cascades {
    /// In progress (running, or stopped on a failure), oldest first.
    pub active: Vec<Chain>,
    /// Finished, newest first (kept in memory since the service started).
    pub recent: Vec<Chain>,
}

/// `GET /api/cascades`.
#[utoipa::path(get, path = "/api/cascades", responses((status = 200, description = "Chains in progress and recently finished", body = Cascades)))]
pub(crate) async fn cascades(State(state): State<AppState>) -> Json<Cascades> {
    let view = state.live.current().await;
    Json(Cascades {
        active: view.chains.clone(),
        recent: view.history.clone(),
    })
}

/// `GET /api/cascades/{id}`.
#[utoipa::path(get, path = "/api/cascades/{id}", params(("id" = String, Path, description = "Chain id (`c-<n>`)")), responses(
    (status = 200, description = "The chain", body = Chain),
    (status = 404, description = "Not in progress nor in the recent history", body = ErrorJson)))]
pub(crate) async fn cascade(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Chain>, ApiError> {
    let view = state.live.current().await;
    view.chain(&id)
        .cloned()
        .map(Json)
        .ok_or(ApiError::UnknownChain(id))
}

/// One neighbour of a project and the file line the edge comes from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Neighbour {
    /// Project path.
    pub project: String,
    /// `file:line` in the downstream project.
    pub via: Option<String>,
    /// The edge is inside a cycle (ignored for rebuilds).
    pub in_cycle: bool,
    /// Its state.
    pub state: &'static str,
}

/// A pipeline the engine saw finish for the project.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SeenPipelineJson {
    /// Pipeline id.
    pub id: u64,
    /// `success`, `failed` or `canceled`.
    pub status: String,
    /// Link to it.
    pub url: Option<String>,
}

/// `GET /api/projects/{path}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProjectJson {
    /// Project path.
    pub project: String,
    /// Its page on GitLab.
    pub web_url: Option<String>,
    /// `idle`, `running`, `failed`, `blocked`, `waiting` or `queued`.
    pub state: &'static str,
    /// Why.
    pub detail: String,
    /// Our pipeline when running or failed.
    pub pipeline_url: Option<String>,
    /// Nearest pending upstreams.
    pub waits_for: Vec<String>,
    /// Failed projects above it.
    pub blocked_by: Vec<String>,
    /// Chains it takes part in.
    pub cascades: Vec<String>,
    /// What it is built from.
    pub upstreams: Vec<Neighbour>,
    /// What is built from it.
    pub downstreams: Vec<Neighbour>,
    /// Pipelines the engine saw finish on it, newest first (ours and others' that count).
    pub pipelines: Vec<SeenPipelineJson>,
}

/// Collects a project's page data; `Err` for an unknown project.
pub(crate) async fn project_json(state: &AppState, path: &str) -> Result<ProjectJson, ApiError> {
    let path = path.trim_matches('/');
    let view = state.live.current().await;
    if !view.graph.contains(path) {
        return Err(unknown_project(&view, path));
    }
    let neighbours = |names: Vec<&str>, up: bool| -> Vec<Neighbour> {
        names
            .into_iter()
            .map(|n| {
                let key = if up {
                    (n.to_owned(), path.to_owned())
                } else {
                    (path.to_owned(), n.to_owned())
                };
                Neighbour {
                    project: n.to_owned(),
                    via: view.vias.get(&key).cloned(),
                    in_cycle: view.graph.edge_in_cycle(&key.0, &key.1),
                    state: view.state_of(n),
                }
            })
            .collect()
    };
    let upstreams = neighbours(view.graph.upstreams(path), true);
    let downstreams = neighbours(view.graph.downstreams(path), false);
    let web_url = state.engine.web_url(path).filter(|u| !u.is_empty());
    let seen = state
        .engine
        .project_state(path)
        .await
        .map(|s| s.seen)
        .unwrap_or_default();
    let pipelines = seen
        .iter()
        .rev()
        .map(|p| SeenPipelineJson {
            id: p.id,
            status: match p.status {
                PipelineStatus::Success => "success",
                PipelineStatus::Failed => "failed",
                PipelineStatus::Canceled => "canceled",
            }
            .to_owned(),
            url: web_url
                .as_ref()
                .map(|u| format!("{u}/-/pipelines/{}", p.id)),
        })
        .collect();
    let active = view.project(path);
    Ok(ProjectJson {
        project: path.to_owned(),
        state: view.state_of(path),
        detail: active.map_or_else(|| "up to date".to_owned(), |v| v.detail.clone()),
        pipeline_url: active.and_then(|v| v.pipeline_url.clone()),
        waits_for: active.map(|v| v.waits_for.clone()).unwrap_or_default(),
        blocked_by: active.map(|v| v.blocked_by.clone()).unwrap_or_default(),
        cascades: active.map(|v| v.cascades.clone()).unwrap_or_default(),
        web_url,
        upstreams,
        downstreams,
        pipelines,
    })
}

/// `GET /api/projects/{path}`.
#[utoipa::path(get, path = "/api/projects/{path}", params(("path" = String, Path, description = "Project path, slashes included")), responses(
    (status = 200, description = "The project", body = ProjectJson),
    (status = 404, description = "No such project; close matches suggested", body = ErrorJson)))]
pub(crate) async fn project(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Result<Json<ProjectJson>, ApiError> {
    project_json(&state, &path).await.map(Json)
}

/// `GET /readyz` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Ready {
    /// `ready` or `not_ready` (as `ready`).
    pub status: &'static str,
    /// Store open and GitLab not known to be unreachable. Both roles are ready: every replica
    /// takes webhooks.
    pub ready: bool,
    /// `leader` (this replica runs the engine) or `standby`.
    pub role: &'static str,
    /// The replica holding the engine's lease, as the store has it (`null`: none, or the store
    /// did not answer).
    pub leader: Option<LeaderView>,
    /// The store answered a read.
    pub store: bool,
    /// GitLab answered recently, or nothing has failed since its last answer.
    pub gitlab: bool,
    /// What the client saw.
    pub gitlab_health: ClientHealth,
}

/// Whether GitLab counts as reachable: it answered, and no request went unanswered since, unless
/// that answer is recent (one lost request is a blip, not an outage).
pub(crate) fn gitlab_reachable(h: &ClientHealth, now_ms: i64) -> bool {
    match (h.last_answer_ms, h.last_unreachable_ms) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(ok), Some(bad)) => ok >= bad || now_ms - ok < REACHABLE_WINDOW_MS,
    }
}

/// `GET /readyz`: 200 when ready, else 503; the body says which part is not.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready", body = Ready),
    (status = 503, description = "Not ready: the store or GitLab", body = Ready)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let store_ok = state.engine.store().meta("schema.probe").await.is_ok();
    let health = state.engine.gitlab().health();
    let gitlab = gitlab_reachable(&health, state.engine.now_ms());
    let ready = store_ok && gitlab;
    let role = state.engine.role_view().await;
    let body = Ready {
        status: if ready { "ready" } else { "not_ready" },
        ready,
        role: role.role,
        leader: role.leader,
        store: store_ok,
        gitlab,
        gitlab_health: health,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_reachability() {
        let h = |ok, bad| ClientHealth {
            last_answer_ms: ok,
            last_unreachable_ms: bad,
            rate_limited_until_ms: None,
        };
        let now = 10 * 60 * 1000;
        assert!(gitlab_reachable(&h(None, None), now), "nothing asked yet");
        assert!(!gitlab_reachable(&h(None, Some(5)), now));
        assert!(gitlab_reachable(&h(Some(9), Some(5)), now));
        assert!(
            gitlab_reachable(&h(Some(now - 1000), Some(now)), now),
            "a blip"
        );
        assert!(!gitlab_reachable(&h(Some(1), Some(now)), now));
    }
}
