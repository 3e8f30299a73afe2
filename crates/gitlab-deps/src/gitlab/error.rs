//! Errors of the GitLab client.

use reqwest::StatusCode;

/// What went wrong talking to GitLab. `what` names the request in user terms
/// ("list projects of group images", "read Dockerfile of apps/web").
#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    /// 401: the token is missing, wrong or expired.
    #[error(
        "GitLab rejected the token while trying to {what} (401): check --token-file or GITLAB_DEPS_TOKEN"
    )]
    Unauthorized {
        /// The request.
        what: String,
    },
    /// 403: the token lacks a permission.
    #[error("GitLab refused to {what} (403 Forbidden): the token needs more access ({message})")]
    Forbidden {
        /// The request.
        what: String,
        message: String,
    },
    /// 404: the object does not exist or is not visible to the token.
    #[error("GitLab could not {what}: not found (404{})", fmt_message(message))]
    NotFound {
        /// The request.
        what: String,
        message: String,
    },
    /// 400/422: GitLab refused the request as invalid.
    #[error("GitLab refused to {what} ({status}): {message}")]
    Rejected {
        /// The request.
        what: String,
        status: StatusCode,
        message: String,
    },
    /// A transient failure that persisted through every retry, or another unexpected status.
    #[error("GitLab failed to {what} ({status}) after {attempts} attempt(s): {message}")]
    Status {
        /// The request.
        what: String,
        /// The last status.
        status: StatusCode,
        /// Attempts made.
        attempts: u32,
        message: String,
    },
    /// The network failed through every retry.
    #[error("cannot reach GitLab to {what} after {attempts} attempt(s): {reason}")]
    Network {
        /// The request.
        what: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// The configured token cannot be sent as an HTTP header (a stray control character, say). The
    /// message does not repeat the token.
    #[error(
        "the GitLab token contains characters an HTTP header cannot carry: check --token-file or GITLAB_DEPS_TOKEN"
    )]
    InvalidToken,
    /// The answer was not what the API documents.
    #[error("unexpected answer from GitLab to {what}: {reason}")]
    Decode {
        /// The request.
        what: String,
        /// Why it did not decode.
        reason: String,
    },
}

fn fmt_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl GitLabError {
    /// True for errors that retrying later may cure (outages, rate limits, network).
    pub fn is_transient(&self) -> bool {
        match self {
            GitLabError::Network { .. } => true,
            GitLabError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }

    /// The HTTP status, when GitLab answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            GitLabError::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            GitLabError::Forbidden { .. } => Some(StatusCode::FORBIDDEN),
            GitLabError::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            GitLabError::Rejected { status, .. } | GitLabError::Status { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// Extracts GitLab's error message from a JSON body (`{"message": ...}` or `{"error": ...}`), else the
/// start of the body.
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["message", "error"] {
            if let Some(v) = value.get(key) {
                return match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => flatten_message(other),
                };
            }
        }
    }
    let trimmed = body.trim();
    trimmed.chars().take(200).collect()
}

/// `{"base": ["Missing CI config file"]}` -> `base: Missing CI config file`.
fn flatten_message(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", flatten_message(v)))
            .collect::<Vec<_>>()
            .join("; "),
        serde_json::Value::Array(items) => items
            .iter()
            .map(flatten_message)
            .collect::<Vec<_>>()
            .join(", "),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_extracted() {
        assert_eq!(
            error_message(r#"{"message":"404 File Not Found"}"#),
            "404 File Not Found"
        );
        assert_eq!(
            error_message(r#"{"message":{"base":["Missing CI config file"]}}"#),
            "base: Missing CI config file"
        );
        assert_eq!(error_message("Retry later\n"), "Retry later");
    }
}
