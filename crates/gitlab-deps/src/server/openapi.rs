//! The OpenAPI description of the JSON API (`GET /api/openapi.json`), generated from the handlers'
//! annotations, and the table the router mounts the API from, so the two cannot drift apart
//! unnoticed (see the test).

use axum::Json;
use axum::routing::{MethodRouter, get};
use utoipa::OpenApi;

use super::{AppState, api, live, status};

/// The description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "gitlab-deps",
        description = "Dependencies between GitLab projects and their rebuild chains, read-only."
    ),
    paths(
        status::json,
        api::graph,
        api::cascades,
        api::cascade,
        api::project,
        live::events,
        api::readyz,
    )
)]
pub(crate) struct ApiDoc;

/// The documented routes, as the router mounts them (`{*path}` matches slashes).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/status", get(status::json)),
        ("/api/graph", get(api::graph)),
        ("/api/cascades", get(api::cascades)),
        ("/api/cascades/{id}", get(api::cascade)),
        ("/api/projects/{*path}", get(api::project)),
        ("/api/events", get(live::events)),
        ("/readyz", get(api::readyz)),
    ]
}

/// `GET /api/openapi.json`.
pub(crate) async fn json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_documents_exactly_the_mounted_routes() {
        let doc = ApiDoc::openapi();
        let mut documented: Vec<String> = doc.paths.paths.keys().cloned().collect();
        let mut mounted: Vec<String> = routes()
            .into_iter()
            .map(|(path, _)| path.replace("{*", "{"))
            .collect();
        documented.sort();
        mounted.sort();
        assert_eq!(documented, mounted);
        for (path, item) in &doc.paths.paths {
            assert!(item.get.is_some(), "{path} is documented as GET");
        }
    }

    #[test]
    fn readiness_and_status_document_the_role_and_the_leader() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for schema in ["Ready", "StatusJson"] {
            let properties = &schemas[schema]["properties"];
            assert!(properties["role"].is_object(), "{schema}: {properties}");
            assert!(properties["leader"].is_object(), "{schema}: {properties}");
        }
        let leader = &schemas["LeaderView"]["properties"];
        for field in ["holder", "epoch", "expires_in_ms"] {
            assert!(leader[field].is_object(), "{field} in {leader}");
        }
    }
}
