//! When and how long to wait before retrying a GitLab request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// Retry settings for transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Largest wait a `Retry-After` may impose; a longer one is capped, so a bogus header cannot
    /// stall a scan for hours.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The backoff delays between attempts (exponential with jitter): `max_attempts - 1` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

/// True for statuses worth retrying.
pub(crate) fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The wait GitLab asks for: `Retry-After` (seconds), else `RateLimit-Reset` (a Unix time).
pub(crate) fn requested_wait(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let reset = header("ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_seconds_wins() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        h.insert("ratelimit-reset", HeaderValue::from_static("1"));
        assert_eq!(requested_wait(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn ratelimit_reset_is_a_unix_time() {
        let mut h = HeaderMap::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        h.insert(
            "ratelimit-reset",
            HeaderValue::from_str(&(now + 5).to_string()).unwrap(),
        );
        let wait = requested_wait(&h).unwrap();
        assert!(wait <= Duration::from_secs(5) && wait >= Duration::from_secs(4));
        assert_eq!(requested_wait(&HeaderMap::new()), None);
    }

    #[test]
    fn delays_are_bounded() {
        let p = RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        };
        let d: Vec<_> = p.delays().collect();
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|d| *d <= p.max_delay * 2));
    }
}
