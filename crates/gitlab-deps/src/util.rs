//! Small helpers shared by several modules.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
