//! RFC 3339 timestamps (UTC, whole seconds) and the clock.

/// The current time as (Unix seconds, Unix milliseconds), from `wasi:clocks/wall-clock` inside
/// a component and the system clock natively; 0 before 1970.
pub fn now() -> (u64, u64) {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    (elapsed.as_secs(), millis)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC; crate `rfc3339`). Times
/// before 1970 clamp to the epoch (the database never holds them).
pub fn rfc3339(unix_secs: i64) -> String {
    ::rfc3339::format(unix_secs.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_and_clamps_before_1970() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
    }
}
