//! Wall-clock time as the API writes it: RFC 3339, UTC, to the millisecond
//! (`2026-12-01T14:03:26.123Z`), in room events, `/sse/updates`, heartbeats and results.

use chrono::{SecondsFormat, Utc};

/// The current time, e.g. `2026-12-01T14:03:26.123Z`.
pub fn rfc3339_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn milliseconds_in_utc() {
        let now = super::rfc3339_now();
        assert_eq!(now.len(), "2026-12-01T14:03:26.123Z".len());
        assert!(now.ends_with('Z'));
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok());
    }
}
