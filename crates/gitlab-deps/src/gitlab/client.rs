//! The client: connection settings, the retrying request path and one method per endpoint.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderValue;
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use super::error::{GitLabError, error_message};
use super::observer::{ApiObserver, endpoint_class, outcome_of_error, outcome_of_status};
use super::retry::{RetryPolicy, is_retryable, requested_wait};
use super::types::{Branch, Pipeline, TreeEntry, Variable};

/// Tree entries per page: GitLab's maximum.
const TREE_PER_PAGE: u32 = 100;

/// How to reach GitLab.
#[derive(Debug, Clone)]
pub struct GitLabOptions {
    /// Instance base URL (`https://git.example.org/`, may have a path).
    pub base_url: Url,
    /// API token sent as `PRIVATE-TOKEN` (its `Debug` shows no text).
    pub token: SecretString,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Timeout for one request.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// Which projects a listing covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectScope {
    /// Every project the token can see.
    All,
    /// A group with its subgroups.
    Group(String),
}

/// A cheaply cloneable GitLab API client.
#[derive(Clone)]
pub struct GitLab {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    http: reqwest::Client,
    pub(super) api: Url,
    /// The `PRIVATE-TOKEN` value, marked sensitive so HTTP-layer `Debug` output hides it.
    token: HeaderValue,
    permits: Semaphore,
    retry: RetryPolicy,
    requests: AtomicU64,
    /// Where request figures go (metrics), once set; shared by every clone of the client.
    observer: OnceLock<Arc<dyn ApiObserver>>,
    /// Unix ms of the last HTTP answer of any status (0: none yet).
    last_answer_ms: AtomicI64,
    /// Unix ms of the last request that got no answer (0: none).
    last_unreachable_ms: AtomicI64,
    /// Unix ms until which GitLab asked us to hold back (429), 0 when it never did.
    rate_limited_until_ms: AtomicI64,
}

/// What the client knows of GitLab's health, from the requests it made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ClientHealth {
    /// Unix ms of GitLab's last answer (any status), `None` before the first.
    pub last_answer_ms: Option<i64>,
    /// Unix ms of the last request that got no answer (network error), `None` if none did.
    pub last_unreachable_ms: Option<i64>,
    /// Until when GitLab's rate limit asked us to wait (Unix ms), `None` if it never did.
    pub rate_limited_until_ms: Option<i64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn stamp(value: &AtomicI64) -> Option<i64> {
    Some(value.load(Ordering::Relaxed)).filter(|&v| v > 0)
}

/// The `PRIVATE-TOKEN` header value: the one place the token's text is read. The error does not
/// repeat the token.
fn token_header(token: &SecretString) -> Result<HeaderValue, GitLabError> {
    let mut value =
        HeaderValue::from_str(token.expose_secret()).map_err(|_| GitLabError::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// URL-encodes one path segment (`group/sub` -> `group%2Fsub`).
pub(crate) fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, NON_ALPHANUMERIC).to_string()
}

impl GitLab {
    /// Builds a client. Fails if the TLS backend cannot initialise or the token cannot be sent as
    /// a header.
    pub fn new(options: GitLabOptions) -> Result<Self, GitLabError> {
        let token = token_header(&options.token)?;
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("gitlab-deps/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(options.concurrency.max(1) * 2)
            // reqwest keeps custom headers such as PRIVATE-TOKEN across redirects to other hosts:
            // follow none, and report a redirect as the error it is.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GitLabError::Network {
                what: "set up the HTTP client".into(),
                attempts: 0,
                reason: e.to_string(),
            })?;
        let api = options
            .base_url
            .join("api/v4/")
            .map_err(|e| GitLabError::Decode {
                what: "build the API URL".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api,
                token,
                permits: Semaphore::new(options.concurrency.max(1)),
                retry: options.retry,
                requests: AtomicU64::new(0),
                observer: OnceLock::new(),
                last_answer_ms: AtomicI64::new(0),
                last_unreachable_ms: AtomicI64::new(0),
                rate_limited_until_ms: AtomicI64::new(0),
            }),
        })
    }

    /// Reports every request of this client and its clones to `observer` from now on. Only the
    /// first call has an effect.
    pub fn set_observer(&self, observer: Arc<dyn ApiObserver>) {
        let _ = self.inner.observer.set(observer);
    }

    /// HTTP requests sent so far (retries included).
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The API root, `<base>/api/v4/`.
    pub fn api_url(&self) -> &Url {
        &self.inner.api
    }

    /// Builds an API URL from a path relative to `/api/v4/`.
    pub(super) fn url(&self, path: &str) -> Result<Url, GitLabError> {
        self.inner.api.join(path).map_err(|e| GitLabError::Decode {
            what: format!("build URL for {path}"),
            reason: e.to_string(),
        })
    }

    /// Sends a request with retries. `body` is JSON. Returns the successful response, or the typed
    /// error for a permanent failure or exhausted retries.
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<Response, GitLabError> {
        self.send_with(method, url, body, what, true).await
    }

    /// The retry policy of this client. Callers that retry whole operations (creating a
    /// pipeline after checking it does not exist yet, say) pace them with the same policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// Like [`GitLab::send`]. With `idempotent` false, only failures that certainly happened before
    /// GitLab acted are retried (429, connection refused): after a 5xx or a lost response the request
    /// may have taken effect, and repeating it could, say, create a second pipeline.
    pub(super) async fn send_with(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        what: &str,
        idempotent: bool,
    ) -> Result<Response, GitLabError> {
        // Never send the token to another host, whatever a Link header says.
        if url.origin() != self.inner.api.origin() {
            return Err(GitLabError::Decode {
                what: what.to_owned(),
                reason: format!("refusing to follow a link to another host: {url}"),
            });
        }
        let mut delays = self.inner.retry.delays();
        let mut attempts = 0u32;
        let observer = self.inner.observer.get();
        let endpoint = endpoint_class(&method, url.path());
        loop {
            attempts += 1;
            let mut request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header("PRIVATE-TOKEN", self.inner.token.clone());
            if let Some(body) = body {
                request = request.json(body);
            }
            let outcome = {
                let _permit =
                    self.inner
                        .permits
                        .acquire()
                        .await
                        .map_err(|_| GitLabError::Network {
                            what: what.to_owned(),
                            attempts,
                            reason: "client shut down".into(),
                        })?;
                self.inner.requests.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let outcome = request.send().await;
                if let Some(observer) = observer {
                    let label = match &outcome {
                        Ok(response) => outcome_of_status(response.status()),
                        Err(err) => outcome_of_error(err),
                    };
                    observer.request(endpoint, label, started.elapsed());
                }
                outcome
            };
            match &outcome {
                Ok(_) => self.inner.last_answer_ms.store(now_ms(), Ordering::Relaxed),
                Err(_) => self
                    .inner
                    .last_unreachable_ms
                    .store(now_ms(), Ordering::Relaxed),
            }
            // The permit is released before any wait, so a backing-off request never holds a slot.
            let wait = match outcome {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let asked = requested_wait(response.headers());
                    let message = error_message(&response.text().await.unwrap_or_default());
                    if !is_retryable(status) {
                        return Err(permanent(status, what, message));
                    }
                    let retry_safe = idempotent || status == StatusCode::TOO_MANY_REQUESTS;
                    let next = if retry_safe { delays.next() } else { None };
                    let Some(backoff) = next else {
                        return Err(GitLabError::Status {
                            what: what.to_owned(),
                            status,
                            attempts,
                            message,
                        });
                    };
                    let wait = asked
                        .map(|w| w.min(self.inner.retry.max_retry_after))
                        .unwrap_or(backoff);
                    // Some rate limiters answer 429 without a wait header: the backoff wait counts too.
                    if let Some(observer) = observer
                        && status == StatusCode::TOO_MANY_REQUESTS
                    {
                        observer.rate_limited(endpoint, wait);
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let until = now_ms() + wait.as_millis() as i64;
                        self.inner
                            .rate_limited_until_ms
                            .store(until, Ordering::Relaxed);
                    }
                    tracing::warn!(%status, attempt = attempts, wait_ms = wait.as_millis() as u64, "GitLab asked to retry: {what}");
                    wait
                }
                Err(err) => {
                    let next = if idempotent || err.is_connect() {
                        delays.next()
                    } else {
                        None
                    };
                    let Some(backoff) = next else {
                        return Err(GitLabError::Network {
                            what: what.to_owned(),
                            attempts,
                            reason: error_chain(&err),
                        });
                    };
                    tracing::warn!(attempt = attempts, error = %error_chain(&err), "network error, retrying: {what}");
                    backoff
                }
            };
            if let Some(observer) = observer {
                observer.retry(endpoint);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// What the requests made so far tell of GitLab's health (for `/readyz` and the status page).
    pub fn health(&self) -> ClientHealth {
        ClientHealth {
            last_answer_ms: stamp(&self.inner.last_answer_ms),
            last_unreachable_ms: stamp(&self.inner.last_unreachable_ms),
            rate_limited_until_ms: stamp(&self.inner.rate_limited_until_ms),
        }
    }

    /// GET and decode JSON.
    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, GitLabError> {
        let url = self.url(path)?;
        let response = self.send(Method::GET, url, None, what).await?;
        decode(response, what).await
    }

    /// The head commit of a branch; `None` when the branch does not exist.
    pub async fn branch_head(
        &self,
        project_id: u64,
        branch: &str,
    ) -> Result<Option<String>, GitLabError> {
        let what = format!("read branch {branch} of project {project_id}");
        let path = format!(
            "projects/{project_id}/repository/branches/{}",
            encode(branch)
        );
        match self.get_json::<Branch>(&path, &what).await {
            Ok(branch) => Ok(Some(branch.commit.id)),
            Err(GitLabError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The entries of one directory of a repository at `git_ref` (`dir` empty for the root), every
    /// page of it. `None` when the ref, the repository or the directory does not exist (GitLab
    /// answers 404 Tree Not Found; some versions answer an empty list for a missing directory,
    /// which reads as an empty directory here).
    pub async fn tree(
        &self,
        project_id: u64,
        dir: &str,
        git_ref: &str,
    ) -> Result<Option<Vec<TreeEntry>>, GitLabError> {
        let shown = if dir.is_empty() { "/" } else { dir };
        let what = format!("list {shown} of project {project_id}");
        let mut base = self.url(&format!("projects/{project_id}/repository/tree"))?;
        base.query_pairs_mut()
            .append_pair("ref", git_ref)
            .append_pair("per_page", &TREE_PER_PAGE.to_string());
        if !dir.is_empty() {
            base.query_pairs_mut().append_pair("path", dir);
        }
        let mut entries = Vec::new();
        let mut page = 1u32;
        let mut next = Some({
            let mut url = base.clone();
            url.query_pairs_mut().append_pair("page", "1");
            url
        });
        while let Some(url) = next.take() {
            let response = match self.send(Method::GET, url, None, &what).await {
                Ok(response) => response,
                Err(GitLabError::NotFound { .. }) if entries.is_empty() => return Ok(None),
                Err(e) => return Err(e),
            };
            let headers = response.headers().clone();
            let batch: Vec<TreeEntry> = decode(response, &what).await?;
            let got_some = !batch.is_empty();
            entries.extend(batch);
            // Offset pages say `X-Next-Page`; a keyset answer only has a `Link` to the next page
            // (built from GitLab's external URL: keep our own origin).
            next = match super::paginate::header_u32(&headers, "x-next-page") {
                // A server that stands still or moves backwards would loop forever.
                Some(n) if n > page && got_some => {
                    page = n;
                    let mut url = base.clone();
                    url.query_pairs_mut().append_pair("page", &n.to_string());
                    Some(url)
                }
                Some(_) => None,
                None if got_some => {
                    super::paginate::link_next(&headers).map(|link| self.same_origin(&link))
                }
                None => None,
            };
        }
        Ok(Some(entries))
    }

    /// A blob's raw content by its id. Blob ids are hashes of the content, so the answer for one
    /// id never changes.
    pub async fn blob_raw(&self, project_id: u64, sha: &str) -> Result<String, GitLabError> {
        let what = format!("read blob {sha} of project {project_id}");
        let url = self.url(&format!(
            "projects/{project_id}/repository/blobs/{}/raw",
            encode(sha)
        ))?;
        let response = self.send(Method::GET, url, None, &what).await?;
        let bytes = response.bytes().await.map_err(|e| GitLabError::Network {
            what: what.clone(),
            attempts: 1,
            reason: error_chain(&e),
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A file's raw content at a ref; `None` when the file (or ref) does not exist.
    pub async fn file_raw(
        &self,
        project_id: u64,
        file_path: &str,
        git_ref: &str,
    ) -> Result<Option<String>, GitLabError> {
        let what = format!("read {file_path} of project {project_id}");
        let mut url = self.url(&format!(
            "projects/{project_id}/repository/files/{}/raw",
            encode(file_path)
        ))?;
        url.query_pairs_mut().append_pair("ref", git_ref);
        match self.send(Method::GET, url, None, &what).await {
            Ok(response) => {
                let bytes = response.bytes().await.map_err(|e| GitLabError::Network {
                    what: what.clone(),
                    attempts: 1,
                    reason: error_chain(&e),
                })?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Err(GitLabError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a pipeline on `git_ref` with CI variables. Retries only rate limits and refused
    /// connections: after a 5xx or a lost answer the pipeline may exist, so the caller must look for
    /// it (by a variable it set) before trying again.
    pub async fn create_pipeline(
        &self,
        project_id: u64,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Pipeline, GitLabError> {
        let what = format!("create a pipeline on {git_ref} of project {project_id}");
        let body = serde_json::json!({
            "ref": git_ref,
            "variables": variables
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v, "variable_type": "env_var"}))
                .collect::<Vec<_>>(),
        });
        let url = self.url(&format!("projects/{project_id}/pipeline"))?;
        let response = self
            .send_with(Method::POST, url, Some(&body), &what, false)
            .await?;
        decode(response, &what).await
    }

    /// One pipeline.
    pub async fn pipeline(
        &self,
        project_id: u64,
        pipeline_id: u64,
    ) -> Result<Pipeline, GitLabError> {
        let what = format!("read pipeline {pipeline_id} of project {project_id}");
        self.get_json(
            &format!("projects/{project_id}/pipelines/{pipeline_id}"),
            &what,
        )
        .await
    }

    /// The newest pipelines created through the API on a ref (one page, newest first).
    pub async fn recent_pipelines(
        &self,
        project_id: u64,
        git_ref: &str,
        per_page: u32,
    ) -> Result<Vec<Pipeline>, GitLabError> {
        let what = format!("list pipelines of project {project_id}");
        let mut url = self.url(&format!("projects/{project_id}/pipelines"))?;
        url.query_pairs_mut()
            .append_pair("ref", git_ref)
            .append_pair("source", "api")
            .append_pair("order_by", "id")
            .append_pair("sort", "desc")
            .append_pair("per_page", &per_page.to_string());
        let response = self.send(Method::GET, url, None, &what).await?;
        decode(response, &what).await
    }

    /// The newest successful pipelines on a ref last updated after `updated_after_ms` (one page,
    /// newest id first): what catch-up asks to find root changes whose webhook never arrived.
    pub async fn successful_pipelines_since(
        &self,
        project_id: u64,
        git_ref: &str,
        updated_after_ms: i64,
        per_page: u32,
    ) -> Result<Vec<Pipeline>, GitLabError> {
        let what = format!("list recent successful pipelines of project {project_id}");
        let mut url = self.url(&format!("projects/{project_id}/pipelines"))?;
        url.query_pairs_mut()
            .append_pair("ref", git_ref)
            .append_pair("status", "success")
            .append_pair(
                "updated_after",
                &crate::util::format_timestamp_ms(updated_after_ms),
            )
            .append_pair("order_by", "id")
            .append_pair("sort", "desc")
            .append_pair("per_page", &per_page.to_string());
        let response = self.send(Method::GET, url, None, &what).await?;
        decode(response, &what).await
    }

    /// The variables a pipeline was created with.
    pub async fn pipeline_variables(
        &self,
        project_id: u64,
        pipeline_id: u64,
    ) -> Result<Vec<Variable>, GitLabError> {
        let what = format!("read variables of pipeline {pipeline_id}");
        self.get_json(
            &format!("projects/{project_id}/pipelines/{pipeline_id}/variables"),
            &what,
        )
        .await
    }

    /// One project by id or full path.
    pub async fn project(&self, id_or_path: &str) -> Result<super::Project, GitLabError> {
        let what = format!("read project {id_or_path}");
        self.get_json(&format!("projects/{}", encode(id_or_path)), &what)
            .await
    }
}

/// Decodes a JSON body.
pub(super) async fn decode<T: DeserializeOwned>(
    response: Response,
    what: &str,
) -> Result<T, GitLabError> {
    let bytes = response.bytes().await.map_err(|e| GitLabError::Network {
        what: what.to_owned(),
        attempts: 1,
        reason: error_chain(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| GitLabError::Decode {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn permanent(status: StatusCode, what: &str, message: String) -> GitLabError {
    let what = what.to_owned();
    if status.is_redirection() {
        return GitLabError::Rejected {
            what,
            status,
            message: "GitLab answered with a redirect: check --gitlab-url (https, the exact host, the path)"
                .to_owned(),
        };
    }
    match status {
        StatusCode::UNAUTHORIZED => GitLabError::Unauthorized { what },
        StatusCode::FORBIDDEN => GitLabError::Forbidden { what, message },
        StatusCode::NOT_FOUND => GitLabError::NotFound { what, message },
        s if s.is_client_error() => GitLabError::Rejected {
            what,
            status: s,
            message,
        },
        s => GitLabError::Status {
            what,
            status: s,
            attempts: 1,
            message,
        },
    }
}

/// The error with its causes, so "connection refused" is not hidden behind "error sending request".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_header_is_sensitive_and_errors_do_not_repeat_it() {
        let value = token_header(&SecretString::from("glpat-sentinel")).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.as_bytes(), b"glpat-sentinel");
        assert!(!format!("{value:?}").contains("sentinel"));
        let err = token_header(&SecretString::from("glpat-sen\ntinel")).unwrap_err();
        assert!(!err.to_string().contains("sen"), "{err}");
    }
}
