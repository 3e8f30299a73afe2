//! Optional read protection of the status pages and the JSON API: a bearer token (also accepted
//! as the password of HTTP Basic, so a browser can prompt for it and send it with every request,
//! the event stream included), or a header set by a trusted authenticating proxy. Off by default.
//! Webhooks (their own secret), `/healthz`, `/readyz` and `/metrics` stay open.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::AppState;

/// Who may read the pages and the API.
#[derive(Debug, Clone, Default)]
pub struct ReadAccess {
    /// Requests must carry this token (`Authorization: Bearer`, or as the Basic password).
    pub token: Option<SecretString>,
    /// Requests carrying this header (set by an authenticating reverse proxy) are let in.
    pub trusted_user_header: Option<String>,
}

impl ReadAccess {
    /// Whether any protection is configured.
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.trusted_user_header.is_none()
    }

    /// Whether a request with these headers may read.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.is_open() {
            return true;
        }
        if let Some(name) = &self.trusted_user_header
            && headers
                .get(name.as_str())
                .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
        {
            return true;
        }
        let Some(token) = &self.token else {
            return false;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(presented_token)
        else {
            return false;
        };
        given
            .as_bytes()
            .ct_eq(token.expose_secret().as_bytes())
            .into()
    }
}

/// The token in an `Authorization` value: `Bearer T`, or `Basic base64(user:T)` (any user).
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text
            .split_once(':')
            .map(|(_, password)| password.to_owned());
    }
    None
}

/// Paths readable without credentials.
fn is_public(path: &str) -> bool {
    matches!(path, "/hooks/gitlab" | "/healthz" | "/readyz" | "/metrics")
}

/// The middleware: 401 for a protected path without valid credentials.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_public(request.uri().path()) || state.http.read_access.allows(request.headers()) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "reading gitlab-deps needs the read token (Authorization: Bearer, or as the password when the browser asks)\n",
    )
        .into_response();
    if state.http.read_access.token.is_some() {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"gitlab-deps\", charset=\"UTF-8\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn open_by_default() {
        assert!(ReadAccess::default().allows(&HeaderMap::new()));
    }

    #[test]
    fn token_as_bearer_or_basic_password() {
        let access = ReadAccess {
            token: Some(SecretString::from("s3cret")),
            trusted_user_header: None,
        };
        assert!(!access.allows(&HeaderMap::new()));
        assert!(access.allows(&headers(&[("authorization", "Bearer s3cret")])));
        assert!(!access.allows(&headers(&[("authorization", "Bearer s3cre")])));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret");
        assert!(access.allows(&headers(&[("authorization", &format!("Basic {basic}"))])));
        let wrong = base64::engine::general_purpose::STANDARD.encode("s3cret:nope");
        assert!(!access.allows(&headers(&[("authorization", &format!("Basic {wrong}"))])));
        assert!(
            !access.allows(&headers(&[("x-remote-user", "alice")])),
            "no trusted header configured"
        );
    }

    #[test]
    fn trusted_proxy_header() {
        let access = ReadAccess {
            token: None,
            trusted_user_header: Some("X-Remote-User".into()),
        };
        assert!(access.allows(&headers(&[("x-remote-user", "alice")])));
        assert!(!access.allows(&headers(&[("x-remote-user", " ")])));
        assert!(!access.allows(&HeaderMap::new()));
    }
}
