//! Small helpers shared by several modules.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where the orchestration runtime reads the wall-clock time: the system clock in the service, a
/// hand-moved one in tests (so that "ten minutes later" takes no ten minutes).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock standing at `ms` since the Unix epoch.
    pub fn at(ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(by, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Formats Unix milliseconds as an ISO 8601 UTC timestamp (`2026-01-02T15:04:05.123Z`), the
/// shape GitLab's API accepts in time filters such as `updated_after`.
pub fn format_timestamp_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses GitLab's ISO 8601 timestamps (`2026-01-02T15:04:05.000Z`, `2026-01-02T15:04:05.123+01:00`)
/// into Unix milliseconds.
pub fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gitlab_timestamps() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01.000Z"), Some(1000));
        assert_eq!(
            parse_timestamp_ms("1970-01-01T01:00:01.5+01:00"),
            Some(1500)
        );
        assert_eq!(parse_timestamp_ms("yesterday"), None);
    }
}
