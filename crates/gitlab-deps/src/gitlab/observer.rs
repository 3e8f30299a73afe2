//! What the client reports about its requests, for metrics. The client knows nothing of where the
//! figures go: the service hands it an [`ApiObserver`].

use std::time::Duration;

use reqwest::{Method, StatusCode};

/// Receives one call per HTTP attempt, per retry and per wait GitLab imposed.
pub trait ApiObserver: Send + Sync {
    /// One attempt ended: `endpoint` is an [`endpoint_class`], `outcome` an [`outcome_of_status`]
    /// or [`outcome_of_error`] label.
    fn request(&self, endpoint: &'static str, outcome: &'static str, took: Duration);
    /// A failed attempt is about to be repeated.
    fn retry(&self, endpoint: &'static str);
    /// The client waits `wait` before the next attempt because GitLab rate-limited the request
    /// (429): the wait GitLab asked for (`Retry-After`, `RateLimit-Reset`), else the backoff.
    fn rate_limited(&self, endpoint: &'static str, wait: Duration);
}

/// The kind of API call a request is, from its method and path below `/api/v4/`: a small fixed set
/// of labels, whatever the project or id in the path.
pub fn endpoint_class(method: &Method, path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    // Relative (`projects/1`) and absolute (`/api/v4/projects/1`) paths alike.
    let path = format!("/{}", path.trim_start_matches('/'));
    let has = |part: &str| path.contains(part);
    if has("/hooks") {
        "hooks"
    } else if has("/repository/tree") {
        "tree"
    } else if has("/repository/blobs/") {
        "blob"
    } else if has("/repository/files/") {
        "file"
    } else if has("/repository/branches/") {
        "branch"
    } else if has("/variables") && has("/pipelines/") {
        "variables"
    } else if method == Method::POST && path.ends_with("/pipeline") {
        "pipeline_create"
    } else if has("/pipelines") {
        "pipelines"
    } else if has("/projects") {
        "projects"
    } else {
        "other"
    }
}

/// The label of an HTTP answer: its status class (`2xx`, `4xx`, ...), with `429` apart.
pub fn outcome_of_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "429",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The label of a request that got no answer.
pub fn outcome_of_error(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect_error"
    } else {
        "network_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_we_call_has_its_class() {
        let get = Method::GET;
        for (method, path, class) in [
            (&get, "projects?simple=true&per_page=100", "projects"),
            (
                &get,
                "groups/a%2Fb/projects?include_subgroups=true",
                "projects",
            ),
            (&get, "projects/12", "projects"),
            (&get, "projects/12/repository/tree?recursive=true", "tree"),
            (&get, "projects/12/repository/blobs/abc/raw", "blob"),
            (
                &get,
                "projects/12/repository/files/docker%2FDockerfile/raw?ref=main",
                "file",
            ),
            (&get, "projects/12/repository/branches/main", "branch"),
            (&Method::POST, "projects/12/pipeline", "pipeline_create"),
            (&get, "projects/12/pipelines/7", "pipelines"),
            (&get, "projects/12/pipelines?ref=main", "pipelines"),
            (&get, "projects/12/pipelines/7/variables", "variables"),
            (&get, "projects/12/hooks", "hooks"),
            (&Method::PUT, "projects/12/hooks/3", "hooks"),
            (
                &Method::POST,
                "groups/4/hooks/3/test/pipeline_events",
                "hooks",
            ),
            (&get, "version", "other"),
        ] {
            assert_eq!(endpoint_class(method, path), class, "{method} {path}");
        }
    }

    #[test]
    fn statuses_fall_in_classes_with_rate_limits_apart() {
        assert_eq!(outcome_of_status(StatusCode::OK), "2xx");
        assert_eq!(outcome_of_status(StatusCode::CREATED), "2xx");
        assert_eq!(outcome_of_status(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(outcome_of_status(StatusCode::TOO_MANY_REQUESTS), "429");
        assert_eq!(outcome_of_status(StatusCode::BAD_GATEWAY), "5xx");
    }
}
