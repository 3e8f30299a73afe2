//! `GET /metrics`: the text exposition of [`crate::metrics::Metrics`].

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// `GET /metrics`. The hook gauges are refreshed from the database, where every hook sync (this
/// service's, or `update` run by a timer) leaves its counts: no GitLab request per scrape.
pub(crate) async fn render(State(state): State<AppState>) -> impl IntoResponse {
    state.engine.refresh_hook_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.engine.metrics.encode(),
    )
}

/// Times the webhook handler, from the request reaching it to the answer (a middleware, so the
/// handler stays free of it).
pub(crate) async fn time_webhook(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state
        .engine
        .metrics
        .webhook_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}
