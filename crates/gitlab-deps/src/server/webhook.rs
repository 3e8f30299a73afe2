//! `POST /hooks/gitlab`: check, persist, acknowledge. The work happens in the engine afterwards.

use std::collections::BTreeSet;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::gitlab::payload::{self, HookEvent};
use crate::store::NewEvent;

const KINDS: [&str; 2] = ["Pipeline Hook", "Push Hook"];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Distinct unknown sources remembered, so a flood of invented names cannot grow memory.
const MAX_UNKNOWN_SOURCES: usize = 64;

/// Warns once per unknown pipeline source: it may be a new way GitLab builds a branch, which a
/// newer gitlab-deps would count.
fn warn_unknown_source(source: &str) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() < MAX_UNKNOWN_SOURCES && seen.insert(source.to_owned()) {
        tracing::warn!(
            source,
            "ignoring a default-branch pipeline of unknown source {source:?}: only pipelines that \
             build the branch count (see docs/webhooks.md); counted in \
             gitlab_deps_webhooks_total{{result=\"unknown_source\"}}"
        );
    }
}

/// True when the request carries the configured secret. A missing or empty token never matches.
fn authorised(headers: &HeaderMap, secret: Option<&SecretString>) -> bool {
    let Some(secret) = secret else { return true };
    let given = headers
        .get("x-gitlab-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    !given.is_empty() && secrets_match(given, secret.expose_secret().as_bytes())
}

/// Compares two secrets without the time taken telling anything about either: both are hashed
/// to fixed-size digests first, so neither the position of the first difference nor a length
/// mismatch shortens the comparison (a plain `ct_eq` on the texts returns at once when the
/// lengths differ, revealing the secret's length).
fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    let given = Sha256::digest(given);
    let expected = Sha256::digest(expected);
    bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

/// The webhook handler.
pub(crate) async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let metrics = &state.engine.metrics;
    if !authorised(&headers, state.http.webhook_secret.as_ref()) {
        metrics.webhook("unknown", "unauthorized");
        tracing::warn!("rejected a webhook with a missing or wrong X-Gitlab-Token");
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Gitlab-Token\n".into(),
        );
    }
    let Some(kind) = header(&headers, "x-gitlab-event") else {
        metrics.webhook("unknown", "malformed");
        return (
            StatusCode::BAD_REQUEST,
            "missing X-Gitlab-Event header\n".into(),
        );
    };
    let Some(kind) = KINDS.into_iter().find(|k| *k == kind) else {
        // GitLab disables hooks that keep failing: accept what we do not use.
        metrics.webhook("other", "ignored");
        return (StatusCode::OK, format!("ignored: {kind}\n"));
    };
    let relevant = match payload::parse(kind, &body) {
        Err(e) => {
            metrics.webhook(kind, "malformed");
            tracing::warn!("rejected a webhook: {e}");
            return (StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
        // Only final default-branch pipelines and pushes touching dependency files matter; the
        // rest (every intermediate status, every branch) is acknowledged without being stored.
        Ok(Some(HookEvent::Pipeline(p))) => {
            if let Some(source) = p.unknown_source() {
                metrics.webhook(kind, "unknown_source");
                warn_unknown_source(source);
                return (StatusCode::OK, "ignored: unknown pipeline source\n".into());
            }
            p.final_status().is_some() && p.is_default_branch_build()
        }
        Ok(Some(HookEvent::Push(push))) => state.engine.push_matters(&push),
        Ok(None) => false,
    };
    if !relevant {
        metrics.webhook(kind, "ignored");
        return (StatusCode::OK, "ignored: nothing to do\n".into());
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        metrics.webhook(kind, "malformed");
        return (StatusCode::BAD_REQUEST, "body is not UTF-8\n".into());
    };
    // Redeliveries of one event share the Idempotency-Key (GitLab 17.4+); older versions only send
    // a per-delivery UUID.
    let key = header(&headers, "idempotency-key")
        .map(|k| format!("idem:{k}"))
        .or_else(|| header(&headers, "x-gitlab-event-uuid").map(|k| format!("uuid:{k}")))
        .unwrap_or_else(|| format!("anon:{}", uuid::Uuid::new_v4()));
    let event = NewEvent {
        delivery_key: key,
        kind: kind.to_owned(),
        body: text.to_owned(),
    };
    match state.intake.record(event).await {
        Ok(Some(_)) => {
            metrics.webhook(kind, "accepted");
            (StatusCode::OK, "accepted\n".into())
        }
        Ok(None) => {
            metrics.webhook(kind, "duplicate");
            (StatusCode::OK, "duplicate delivery\n".into())
        }
        Err(e) => {
            tracing::error!("cannot record a webhook: {e}");
            metrics.webhook(kind, "error");
            // GitLab may not redeliver it (or give up on the hook): look for what it carried.
            state.engine.intake_failed();
            // 5xx: GitLab retries the delivery later.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record the event\n".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn secrets_must_match_exactly() {
        let secret = SecretString::from("s3cret");
        let mut h = HeaderMap::new();
        assert!(!authorised(&h, Some(&secret)));
        assert!(authorised(&h, None));
        h.insert("x-gitlab-token", HeaderValue::from_static("s3cre"));
        assert!(!authorised(&h, Some(&secret)));
        h.insert("x-gitlab-token", HeaderValue::from_static("s3cret"));
        assert!(authorised(&h, Some(&secret)));
        // An empty header never matches, not even a (misconfigured) empty secret.
        h.insert("x-gitlab-token", HeaderValue::from_static(""));
        assert!(!authorised(&h, Some(&secret)));
        assert!(!authorised(&h, Some(&SecretString::from(""))));
    }

    #[test]
    fn the_comparison_is_exact_whatever_the_lengths() {
        // Equal.
        assert!(secrets_match(b"s3cret", b"s3cret"));
        // Different, same length: first, middle and last byte.
        assert!(!secrets_match(b"x3cret", b"s3cret"));
        assert!(!secrets_match(b"s3xret", b"s3cret"));
        assert!(!secrets_match(b"s3crex", b"s3cret"));
        // Different lengths, including a prefix and an extension of the secret.
        assert!(!secrets_match(b"s3cre", b"s3cret"));
        assert!(!secrets_match(b"s3crett", b"s3cret"));
        assert!(!secrets_match(
            b"a-much-longer-guess-than-the-secret",
            b"s3cret"
        ));
        // Empty on either side.
        assert!(!secrets_match(b"", b"s3cret"));
        assert!(!secrets_match(b"s3cret", b""));
        // Two empty inputs are equal as bytes; `authorised` rejects an empty token before this.
        assert!(secrets_match(b"", b""));
    }

    proptest::proptest! {
        /// The digest comparison agrees with plain equality on any bytes.
        #[test]
        fn the_comparison_agrees_with_equality(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
        ) {
            proptest::prop_assert_eq!(secrets_match(&a, &b), a == b);
            proptest::prop_assert!(secrets_match(&a, &a));
        }
    }
}
