//! `GET /metrics`: the text exposition of [`crate::metrics::Metrics`].

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

/// `GET /metrics`. The disabled-hooks gauge is refreshed from the database, where every hook sync
/// (this service's, or `update` run by a timer) leaves its count: no GitLab request per scrape.
pub(crate) async fn render(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(Some(n)) = state.engine.store().meta(crate::hooks::DISABLED_META).await
        && let Ok(n) = n.parse()
    {
        state.engine.metrics.hooks_disabled.set(n);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.engine.metrics.encode(),
    )
}
