//! HTTP only: the webhook receiver (verify, then parse, then commit to the event log), the status
//! page, the JSON API and metrics. The work happens in [`crate::orchestrate`].

mod access;
mod api;
mod graph_view;
mod live;
mod metrics;
mod openapi;
mod pages;
mod status;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::orchestrate::Engine;
use crate::orchestrate::intake;
use crate::store::StoreError;

pub use access::ReadAccess;

/// Server failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address is taken or invalid.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(String),
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The webhook secret (`X-Gitlab-Token`); `None` only with `--insecure-no-webhook-secret`.
    /// Its `Debug` shows no text.
    pub webhook_secret: Option<SecretString>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Who may read the pages and the API (open by default).
    pub read_access: ReadAccess,
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    pub http: Arc<HttpOptions>,
    pub intake: intake::Intake,
    pub live: live::Live,
}

/// Builds the router: `POST /hooks/gitlab`, `GET /healthz`, `GET /readyz`, `GET /` (status
/// page), `GET /projects/{path}`, the JSON API under `/api/`, `GET /metrics`. Must be called
/// inside a Tokio runtime (it starts the event writer and the live view).
pub fn router(engine: Arc<Engine>, http: HttpOptions) -> Router {
    router_until(engine, http, CancellationToken::new())
}

/// [`router`], whose event streams end when `closing` is cancelled.
fn router_until(engine: Arc<Engine>, http: HttpOptions, closing: CancellationToken) -> Router {
    let max = http.max_body_bytes;
    let waker = Arc::clone(&engine);
    let intake = intake::Intake::start(Arc::clone(engine.store()), move || waker.notify());
    let live = live::Live::start(&engine, closing);
    let state = AppState {
        engine,
        http: Arc::new(http),
        intake,
        live,
    };
    let documented = openapi::routes()
        .into_iter()
        .fold(Router::new(), |router, (path, method)| {
            router.route(path, method)
        });
    documented
        .route("/hooks/gitlab", post(webhook::receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(pages::status))
        .route("/projects/{*path}", get(pages::project))
        .route("/assets/style.css", get(pages::style))
        .route("/assets/live.js", get(pages::script))
        .route("/api/openapi.json", get(openapi::json))
        .route("/metrics", get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::guard,
        ))
        .layer(DefaultBodyLimit::max(max))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Binds the listener (so the caller learns the port before serving).
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Bind {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
    let local = listener.local_addr().map_err(|e| ServerError::Bind {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((listener, local))
}

/// Runs the engine and the HTTP server until `shutdown` is cancelled.
pub async fn run(
    engine: Arc<Engine>,
    http: HttpOptions,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let tasks = engine.clone().spawn(shutdown.clone());
    let app = router_until(engine, http, shutdown.clone());
    let stop = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(|e| ServerError::Serve(e.to_string()));
    shutdown.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    served
}
