//! Fault injection: scripted error responses, random 5xx, lost and
//! duplicated webhooks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::lock;

/// What an injected fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultResponse {
    /// Plain status with GitLab-like JSON body (`{"message":"502 Bad Gateway"}`).
    Status(u16),
    /// `429` with `Retry-After: <secs>`, `RateLimit-*` headers and body `Retry later`.
    RateLimited {
        /// `Retry-After` seconds.
        retry_after_secs: u64,
    },
    /// Waits this long, then serves the request normally (a slow server).
    Delay(Duration),
    /// Serves the request (its effect happens), then answers this status instead of the real
    /// answer: a write that succeeded behind a failing proxy.
    StatusAfter(u16),
    /// Serves the request (its effect happens), then holds the answer this long: a client that
    /// dies meanwhile never learns the outcome.
    StallAfter(Duration),
}

/// "The next `times` requests matching `method` and `path_contains` answer `response`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// HTTP method to match (case-insensitive); `None` matches any.
    pub method: Option<String>,
    /// Substring of the raw (percent-encoded) request path, e.g. `/pipeline`
    /// (which also matches `/pipelines/...`). Empty matches every path.
    pub path_contains: String,
    /// How many more requests this rule applies to.
    pub times: usize,
    /// The injected answer.
    pub response: FaultResponse,
}

impl FaultRule {
    /// The next `times` requests `method path_contains` answer `status`.
    pub fn status(method: &str, path_contains: &str, times: usize, status: u16) -> Self {
        Self {
            method: Some(method.to_owned()),
            path_contains: path_contains.to_owned(),
            times,
            response: FaultResponse::Status(status),
        }
    }

    /// The next `times` requests answer 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limited(
        method: &str,
        path_contains: &str,
        times: usize,
        retry_after_secs: u64,
    ) -> Self {
        Self {
            method: Some(method.to_owned()),
            path_contains: path_contains.to_owned(),
            times,
            response: FaultResponse::RateLimited { retry_after_secs },
        }
    }

    /// The next `times` requests `method path_contains` take effect but answer `status`.
    pub fn status_after(method: &str, path_contains: &str, times: usize, status: u16) -> Self {
        Self {
            method: Some(method.to_owned()),
            path_contains: path_contains.to_owned(),
            times,
            response: FaultResponse::StatusAfter(status),
        }
    }

    /// The next `times` requests `method path_contains` take effect, then their answer is held
    /// for `stall`.
    pub fn stall_after(method: &str, path_contains: &str, times: usize, stall: Duration) -> Self {
        Self {
            method: Some(method.to_owned()),
            path_contains: path_contains.to_owned(),
            times,
            response: FaultResponse::StallAfter(stall),
        }
    }

    /// The next `times` requests are delayed by `delay`.
    pub fn delay(method: &str, path_contains: &str, times: usize, delay: Duration) -> Self {
        Self {
            method: Some(method.to_owned()),
            path_contains: path_contains.to_owned(),
            times,
            response: FaultResponse::Delay(delay),
        }
    }

    /// Matches any method.
    pub fn any_method(mut self) -> Self {
        self.method = None;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.contains(&self.path_contains)
    }
}

/// The whole fault configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Scripted rules; the first matching rule with `times > 0` applies and is
    /// decremented. Exhausted rules are removed.
    pub fail_next: Vec<FaultRule>,
    /// Fraction (0.0..=1.0) of API requests answering a random 500/502/503.
    pub error_rate: f64,
    /// Drop (never send) the next N webhook deliveries; logged as dropped.
    pub drop_webhooks: usize,
    /// Deliver every webhook twice (same `Idempotency-Key`, new event UUID).
    pub duplicate_webhooks: bool,
}

/// Shared handle to the simulator's faults; changes apply immediately.
#[derive(Debug, Clone, Default)]
pub struct FaultHandle {
    inner: Arc<Mutex<Faults>>,
}

impl FaultHandle {
    /// Adds a rule.
    pub fn add(&self, rule: FaultRule) -> &Self {
        lock(&self.inner).fail_next.push(rule);
        self
    }

    /// The next `times` requests `method path_contains` answer `status`
    /// (e.g. `fail_next("POST", "/pipeline", 3, 502)`).
    pub fn fail_next(&self, method: &str, path_contains: &str, times: usize, status: u16) -> &Self {
        self.add(FaultRule::status(method, path_contains, times, status))
    }

    /// The next `times` requests answer 429 with `Retry-After: retry_after_secs`
    /// (e.g. `rate_limit_next("GET", "/projects", 2, 1)`).
    pub fn rate_limit_next(
        &self,
        method: &str,
        path_contains: &str,
        times: usize,
        retry_after_secs: u64,
    ) -> &Self {
        self.add(FaultRule::rate_limited(
            method,
            path_contains,
            times,
            retry_after_secs,
        ))
    }

    /// The next `times` matching requests are delayed by `delay`.
    pub fn delay_next(
        &self,
        method: &str,
        path_contains: &str,
        times: usize,
        delay: Duration,
    ) -> &Self {
        self.add(FaultRule::delay(method, path_contains, times, delay))
    }

    /// Sets the random 5xx fraction.
    pub fn set_error_rate(&self, rate: f64) -> &Self {
        lock(&self.inner).error_rate = rate.clamp(0.0, 1.0);
        self
    }

    /// Drops the next `n` webhook deliveries (adds to any pending count).
    pub fn drop_webhooks(&self, n: usize) -> &Self {
        lock(&self.inner).drop_webhooks += n;
        self
    }

    /// Delivers every webhook twice while `yes`.
    pub fn duplicate_webhooks(&self, yes: bool) -> &Self {
        lock(&self.inner).duplicate_webhooks = yes;
        self
    }

    /// Removes all faults.
    pub fn clear(&self) {
        *lock(&self.inner) = Faults::default();
    }

    /// Replaces the whole configuration.
    pub fn set(&self, faults: Faults) {
        *lock(&self.inner) = faults;
    }

    /// Current configuration (rules with their remaining counts).
    pub fn get(&self) -> Faults {
        lock(&self.inner).clone()
    }

    /// Picks the fault for a request, consuming one use of a rule.
    pub(crate) fn take_request_fault(&self, method: &str, path: &str) -> Option<FaultResponse> {
        let mut f = lock(&self.inner);
        if let Some(pos) = f.fail_next.iter().position(|r| r.matches(method, path)) {
            let rule = &mut f.fail_next[pos];
            rule.times -= 1;
            let resp = rule.response;
            if rule.times == 0 {
                f.fail_next.remove(pos);
            }
            return Some(resp);
        }
        if f.error_rate > 0.0 && rand::random_bool(f.error_rate.clamp(0.0, 1.0)) {
            let statuses = [500, 502, 503];
            let s = statuses[rand::random_range(0..statuses.len())];
            return Some(FaultResponse::Status(s));
        }
        None
    }

    /// Whether the next webhook delivery must be dropped (consumes one).
    pub(crate) fn take_webhook_drop(&self) -> bool {
        let mut f = lock(&self.inner);
        if f.drop_webhooks > 0 {
            f.drop_webhooks -= 1;
            true
        } else {
            false
        }
    }

    /// Whether webhooks are currently duplicated.
    pub(crate) fn duplicating(&self) -> bool {
        lock(&self.inner).duplicate_webhooks
    }
}
