//! HTTP only: the webhook receiver (verify, then parse, then commit to the event log), the status
//! page, the JSON API and metrics. The work happens in [`crate::orchestrate`].

mod access;
mod api;
mod body;
mod graph_view;
mod listen;
mod live;
mod metrics;
mod openapi;
mod pages;
mod status;
mod webhook;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::orchestrate::intake;
use crate::orchestrate::{Engine, Spool, SpoolError};
use crate::store::{Store, StoreError};

pub use access::ReadAccess;

/// Server failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address is taken or invalid.
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(String),
    /// The delivery spool cannot be opened.
    #[error("{0}: check that the spool's directory is writable (setting `spool`)")]
    Spool(#[from] SpoolError),
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The webhook secret (`X-Gitlab-Token`); `None` only with `--insecure-no-webhook-secret`.
    /// Its `Debug` shows no text.
    pub webhook_secret: Option<SecretString>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// The delivery spool file. When set, deliveries are kept there while the database is busy
    /// or unreachable, and imported once it answers. `None`: deliveries wait for the store as
    /// long as it takes (in-memory stores, tests).
    pub spool: Option<PathBuf>,
    /// Limits that keep slow or hostile clients from pinning the server.
    pub limits: HttpLimits,
    /// Who may read the pages and the API (open by default).
    pub read_access: ReadAccess,
}

/// Connection and body limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers, counted from the connection's start or the
    /// previous response (so it also closes idle keep-alive connections).
    pub header_timeout: Duration,
    /// Time a client has to send a whole webhook body.
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog. Lowered at start when the
    /// file descriptor limit is too small for it.
    pub max_connections: usize,
    /// Body bytes held by all webhook requests at once (at least `max_body_bytes`).
    pub max_body_bytes_in_flight: usize,
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    pub http: Arc<HttpOptions>,
    pub intake: intake::Intake,
    pub bodies: body::BodyBudget,
    pub live: live::Live,
}

/// The default delivery spool of the SQLite database at `db`: the same name with `.spool`
/// appended.
pub fn spool_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".spool");
    name.into()
}

/// Builds the router: `POST /hooks/gitlab`, `GET /healthz`, `GET /readyz`, `GET /` (status
/// page), `GET /projects/{path}`, the JSON API under `/api/`, `GET /metrics`. Must be called
/// inside a Tokio runtime (it starts the event writer and the live view). Fails when the spool
/// cannot be opened.
pub fn router(engine: Arc<Engine>, http: HttpOptions) -> Result<Router, ServerError> {
    router_until(engine, http, None, CancellationToken::new())
}

/// [`router`], importing the spool through `importer` (a store handle of its own, so an import
/// waiting for a locked database holds up nothing else; `None`: the engine's store), whose event
/// streams end when `closing` is cancelled.
fn router_until(
    engine: Arc<Engine>,
    http: HttpOptions,
    importer: Option<Arc<dyn Store>>,
    closing: CancellationToken,
) -> Result<Router, ServerError> {
    let spool = http.spool.as_deref().map(Spool::open).transpose()?;
    let importer = spool.as_ref().and(importer);
    let (waker, alarm) = (Arc::clone(&engine), Arc::clone(&engine));
    let signals = intake::Signals {
        committed: Box::new(move || waker.notify()),
        failed: Box::new(move || alarm.intake_failed()),
    };
    let intake = intake::Intake::start(Arc::clone(engine.store()), spool, importer, signals);
    let bodies = body::BodyBudget::new(http.limits.max_body_bytes_in_flight, http.max_body_bytes);
    let live = live::Live::start(&engine, closing);
    let state = AppState {
        engine,
        http: Arc::new(http),
        intake,
        bodies,
        live,
    };
    let documented = openapi::routes()
        .into_iter()
        .fold(Router::new(), |router, (path, method)| {
            router.route(path, method)
        });
    Ok(documented
        .route(
            "/hooks/gitlab",
            post(webhook::receive).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::time_webhook,
            )),
        )
        // From memory: answers whatever the database is doing.
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
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state))
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

/// Runs the HTTP server until `shutdown` is cancelled (the engine runs beside it, see
/// [`crate::service::Service::serve`]). The spool is imported through `importer` when given.
pub async fn run(
    engine: Arc<Engine>,
    http: HttpOptions,
    importer: Option<Arc<dyn Store>>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let limits = http.limits.clone();
    let app = router_until(engine, http, importer, shutdown.clone())?;
    listen::serve(listener, app, &limits, shutdown.clone()).await;
    shutdown.cancel();
    Ok(())
}
