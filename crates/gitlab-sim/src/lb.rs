//! A round-robin HTTP load balancer for tests and benchmarks: one address in front of several
//! replicas of a service, as a real deployment puts them behind haproxy or a Kubernetes Service.
//!
//! Every request goes to the next backend in turn (per request, not per connection: the
//! simulator's webhook client keeps connections alive, and a per-connection balancer would send
//! every delivery down the same one). A backend that refuses the connection, or drops it before
//! answering, is skipped and the request goes to the next one, as a balancer with health checks
//! and retries on connection failures does; so deliveries keep arriving while a replica is down.
//! That retry resends a request that may have reached the dead backend, which suits idempotent
//! requests such as GitLab's webhook deliveries (they carry an `Idempotency-Key`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::util::lock;

/// Largest request body forwarded (webhook bodies are far smaller).
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// How long one backend may take to answer before the request counts as failed there.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A running round-robin load balancer; stops serving when dropped.
#[derive(Debug)]
pub struct LoadBalancer {
    inner: Arc<Inner>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    /// Base URLs of the backends (`http://127.0.0.1:PORT`).
    backends: Mutex<Vec<String>>,
    /// Requests answered by each backend, by index.
    answered: Mutex<Vec<u64>>,
    next: AtomicUsize,
    http: reqwest::Client,
}

impl LoadBalancer {
    /// Binds `127.0.0.1:0` in the current tokio runtime and balances over `backends` (base URLs
    /// such as `http://127.0.0.1:8080`).
    pub async fn start(backends: Vec<String>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let http = reqwest::Client::builder()
            .timeout(BACKEND_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            answered: Mutex::new(vec![0; backends.len()]),
            backends: Mutex::new(backends),
            next: AtomicUsize::new(0),
            http,
        });
        let app = Router::new().fallback(forward).with_state(inner.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("load balancer stopped: {e}");
            }
        });
        Ok(Self { inner, url, task })
    }

    /// The balancer's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces backend `index` (a replica restarted on another address).
    pub fn set_backend(&self, index: usize, url: &str) {
        if let Some(b) = lock(&self.inner.backends).get_mut(index) {
            url.clone_into(b);
        }
    }

    /// The backends' base URLs, by index.
    pub fn backends(&self) -> Vec<String> {
        lock(&self.inner.backends).clone()
    }

    /// Requests each backend answered (any HTTP status), by index.
    pub fn answered(&self) -> Vec<u64> {
        lock(&self.inner.answered).clone()
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Headers that belong to one connection and are not passed on.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    [
        header::CONNECTION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn pass_on(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(k, _)| !hop_by_hop(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn forward(State(lb): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("load balancer: {e}\n")).into_response();
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let headers = pass_on(&parts.headers);
    let backends = lock(&lb.backends).clone();
    let n = backends.len();
    let first = lb.next.fetch_add(1, Ordering::Relaxed);
    let mut last_error = String::from("no backend");
    for k in 0..n {
        let index = (first + k) % n;
        let result = lb
            .http
            .request(parts.method.clone(), format!("{}{path}", backends[index]))
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                last_error = format!("{}: {e}", backends[index]);
                continue;
            }
        };
        let status = response.status();
        let response_headers = pass_on(response.headers());
        let Ok(bytes) = response.bytes().await else {
            last_error = format!("{}: connection lost while answering", backends[index]);
            continue;
        };
        if let Some(count) = lock(&lb.answered).get_mut(index) {
            *count += 1;
        }
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = status;
        *out.headers_mut() = response_headers;
        return out;
    }
    (
        StatusCode::BAD_GATEWAY,
        format!("load balancer: every backend failed; last: {last_error}\n"),
    )
        .into_response()
}
