//! HTTP layer: router, auth/latency/fault middleware, errors, pagination.

mod hooks;
mod pipelines;
mod projects;
mod repository;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::faults::FaultResponse;
use crate::model::RequestLog;
use crate::state::State as SimState;
use crate::util::{build_query, lock};
use crate::{Sim, util};

/// Builds the router for a simulator.
pub(crate) fn router(sim: Sim) -> Router {
    let api = Router::new()
        .route("/api/v4/user", get(user))
        .route("/api/v4/version", get(version))
        .route("/api/v4/projects", get(projects::list))
        .route("/api/v4/projects/{id}", get(projects::get_one))
        .route(
            "/api/v4/groups/{id}/projects",
            get(projects::group_projects),
        )
        .route(
            "/api/v4/projects/{id}/repository/files/{file_path}/raw",
            get(repository::raw_file),
        )
        .route(
            "/api/v4/projects/{id}/repository/files/{file_path}",
            get(repository::get_file).head(repository::head_file),
        )
        .route(
            "/api/v4/projects/{id}/repository/tree",
            get(repository::tree),
        )
        .route(
            "/api/v4/projects/{id}/repository/blobs/{sha}/raw",
            get(repository::blob_raw),
        )
        .route(
            "/api/v4/projects/{id}/repository/branches",
            get(repository::branches),
        )
        .route(
            "/api/v4/projects/{id}/repository/branches/{branch}",
            get(repository::branch),
        )
        .route("/api/v4/projects/{id}/pipeline", post(pipelines::create))
        .route("/api/v4/projects/{id}/pipelines", get(pipelines::list))
        .route(
            "/api/v4/projects/{id}/pipelines/{pipeline_id}",
            get(pipelines::get_one),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pipeline_id}/variables",
            get(pipelines::variables),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pipeline_id}/retry",
            post(pipelines::retry),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pipeline_id}/cancel",
            post(pipelines::cancel),
        )
        .route(
            "/api/v4/projects/{id}/hooks",
            get(hooks::project_list).post(hooks::project_create),
        )
        .route(
            "/api/v4/projects/{id}/hooks/{hook_id}",
            get(hooks::project_get)
                .put(hooks::project_update)
                .delete(hooks::project_delete),
        )
        .route(
            "/api/v4/projects/{id}/hooks/{hook_id}/test/{trigger}",
            post(hooks::project_test),
        )
        .route(
            "/api/v4/groups/{id}/hooks",
            get(hooks::group_list).post(hooks::group_create),
        )
        .route(
            "/api/v4/groups/{id}/hooks/{hook_id}",
            get(hooks::group_get)
                .put(hooks::group_update)
                .delete(hooks::group_delete),
        )
        .fallback(fallback);
    api.layer(middleware::from_fn_with_state(sim.clone(), gate))
        .with_state(sim)
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}))
}

async fn user(State(sim): State<Sim>) -> Response {
    axum::Json(crate::webhooks::user_json(&sim.url())).into_response()
}

async fn version() -> Response {
    axum::Json(json!({"version": "17.6.0", "revision": "sim", "kas": {"enabled": false}}))
        .into_response()
}

/// Logging, latency, fault injection and authentication for every request.
async fn gate(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let received = std::time::Instant::now();
    sim.inner
        .request_count
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !matches!(req.method().as_str(), "GET" | "HEAD") {
        sim.inner
            .write_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let token = request_token(req.headers());
    *lock(&sim.inner.endpoint_counts)
        .entry(crate::model::Endpoint::of_path(&path))
        .or_insert(0) += 1;
    if !sim.inner.opts.latency.is_zero() {
        tokio::time::sleep(sim.inner.opts.latency).await;
    }
    let mut injected = None;
    let mut after = None;
    let mut stall = None;
    match sim.inner.faults.take_request_fault(&method, &path) {
        Some(FaultResponse::StatusAfter(code)) => after = Some(code),
        Some(FaultResponse::StallAfter(d)) => stall = Some(d),
        Some(FaultResponse::Status(code)) => injected = Some(status_response(code)),
        Some(FaultResponse::RateLimited { retry_after_secs }) => {
            injected = Some(rate_limited(retry_after_secs));
        }
        Some(FaultResponse::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let was_injected = injected.is_some();
    let resp = match injected {
        Some(r) => r,
        None if !authorized(&sim, req.headers()) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"}),
        )
        .into_response(),
        None => next.run(req).await,
    };
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    // The request took effect, but the client sees an error (a proxy timing out, say).
    let (resp, was_injected) = match after {
        Some(code) => (status_response(code), true),
        None => (resp, was_injected),
    };
    sim.log_request(RequestLog {
        method,
        path,
        query,
        status: resp.status().as_u16(),
        injected: was_injected,
        received,
        token,
    });
    resp
}

fn authorized(sim: &Sim, headers: &HeaderMap) -> bool {
    request_token(headers)
        .is_some_and(|t| t == sim.inner.opts.token || lock(&sim.inner.extra_tokens).contains(&t))
}

/// The token a request authenticates with: `PRIVATE-TOKEN`, else `Authorization: Bearer`.
pub(crate) fn request_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("private-token") {
        return v.to_str().ok().map(str::to_owned);
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned())
}

/// An injected error status with a GitLab-like JSON body.
fn status_response(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return rate_limited(1);
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    ApiError::new(
        status,
        json!({"message": format!("{} {reason}", status.as_u16())}),
    )
    .into_response()
}

/// GitLab's 429 answer.
fn rate_limited(retry_after: u64) -> Response {
    let reset = time::OffsetDateTime::now_utc().unix_timestamp() + retry_after as i64;
    let mut headers = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    put("retry-after", retry_after.to_string());
    put("ratelimit-limit", "600".to_owned());
    put("ratelimit-observed", "600".to_owned());
    put("ratelimit-remaining", "0".to_owned());
    put("ratelimit-reset", reset.to_string());
    put("content-type", "text/plain".to_owned());
    (StatusCode::TOO_MANY_REQUESTS, headers, "Retry later\n").into_response()
}

/// An error answer with a JSON body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, body: Value) -> Self {
        Self { status, body }
    }

    /// `404 {"message":"404 <what> Not Found"}`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            json!({"message": format!("404 {what} Not Found")}),
        )
    }

    /// `403 {"message":"403 Forbidden"}`.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    }

    /// `400 {"error": msg}` (parameter validation errors).
    pub fn bad_request(msg: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, json!({"error": msg}))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// Result of handlers.
pub(crate) type ApiResult = Result<Response, ApiError>;

/// Decoded query parameters.
#[derive(Debug, Default)]
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn from_raw(raw: Option<&str>) -> Self {
        Self(util::parse_query(raw))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(parse_bool)
    }
}

/// GitLab-style boolean parsing.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "t" => Some(true),
        "false" | "0" | "no" | "f" => Some(false),
        _ => None,
    }
}

/// Page selection of an offset-paginated list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageReq {
    pub page: usize,
    pub per_page: usize,
}

impl PageReq {
    pub fn from(params: &Params) -> Self {
        let page = params
            .get("page")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|p| *p > 0)
            .unwrap_or(1);
        let per_page = params
            .get("per_page")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|p| *p > 0)
            .unwrap_or(20)
            .min(100);
        Self { page, per_page }
    }

    pub fn offset(&self) -> usize {
        (self.page - 1).saturating_mul(self.per_page)
    }
}

/// Builds an absolute URL for `path` with `params`, overriding some keys.
pub(crate) fn page_url(
    base: &str,
    path: &str,
    params: &Params,
    overrides: &[(&str, String)],
    remove: &[&str],
) -> String {
    let mut pairs: Vec<(String, String)> = params
        .0
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k) && !remove.contains(&k.as_str()))
        .cloned()
        .collect();
    for (k, v) in overrides {
        pairs.push(((*k).to_owned(), v.clone()));
    }
    format!("{base}{path}?{}", build_query(&pairs))
}

/// Offset pagination headers (`X-*` and `Link`).
pub(crate) fn offset_headers(
    sim: &Sim,
    path: &str,
    params: &Params,
    page: PageReq,
    total: usize,
) -> HeaderMap {
    let base = sim.url();
    let total_pages = total.div_ceil(page.per_page).max(1);
    let has_next = page.offset().saturating_add(page.per_page) < total;
    let counted = total <= sim.inner.opts.count_limit;
    let per = ("per_page", page.per_page.to_string());
    let url = |p: usize| {
        page_url(
            &base,
            path,
            params,
            &[("page", p.to_string()), per.clone()],
            &[],
        )
    };
    let mut links = Vec::new();
    if has_next {
        links.push(format!("<{}>; rel=\"next\"", url(page.page + 1)));
    }
    if page.page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url(page.page - 1)));
    }
    links.push(format!("<{}>; rel=\"first\"", url(1)));
    if counted {
        links.push(format!("<{}>; rel=\"last\"", url(total_pages)));
    }
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-page", page.page.to_string());
    put("x-per-page", page.per_page.to_string());
    put(
        "x-next-page",
        if has_next {
            (page.page + 1).to_string()
        } else {
            String::new()
        },
    );
    put(
        "x-prev-page",
        if page.page > 1 {
            (page.page - 1).to_string()
        } else {
            String::new()
        },
    );
    if counted {
        put("x-total", total.to_string());
        put("x-total-pages", total_pages.to_string());
    }
    put("link", links.join(", "));
    h
}

/// Answers an offset-paginated list: `items` is the whole (filtered, ordered)
/// list; only the page is rendered by `render`.
pub(crate) fn paginate<T>(
    sim: &Sim,
    path: &str,
    params: &Params,
    items: &[T],
    render: impl Fn(&T) -> Value,
) -> Response {
    let page = PageReq::from(params);
    let headers = offset_headers(sim, path, params, page, items.len());
    let body: Vec<Value> = items
        .iter()
        .skip(page.offset())
        .take(page.per_page)
        .map(render)
        .collect();
    (headers, axum::Json(body)).into_response()
}

/// Parses a request body: JSON object, or flat form-urlencoded fields.
pub(crate) fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    let trimmed = body.as_ref().trim_ascii();
    if trimmed.is_empty() {
        return Ok(serde_json::Map::new());
    }
    if trimmed.first() == Some(&b'{') {
        return match serde_json::from_slice::<Value>(trimmed) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(ApiError::bad_request("400 Bad request - invalid JSON body")),
        };
    }
    let text = String::from_utf8_lossy(trimmed);
    let mut m = serde_json::Map::new();
    for (k, v) in util::parse_query(Some(&text)) {
        m.insert(k, Value::String(v));
    }
    Ok(m)
}

/// Reads a string field.
pub(crate) fn field_str<'a>(m: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// Reads a boolean field (JSON bool or string).
pub(crate) fn field_bool(m: &serde_json::Map<String, Value>, key: &str) -> Option<bool> {
    match m.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => parse_bool(s),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        _ => None,
    }
}

/// Resolves a project key (id or path) to its id.
pub(crate) fn project_id(st: &SimState, key: &str) -> Result<u64, ApiError> {
    st.find_project(key)
        .ok_or_else(|| ApiError::not_found("Project"))
}

/// Locks the state.
pub(crate) fn state(sim: &Sim) -> std::sync::MutexGuard<'_, SimState> {
    lock(&sim.inner.state)
}
