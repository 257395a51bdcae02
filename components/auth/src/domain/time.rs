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

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC). Times before 1970 clamp to
/// the epoch (the database never holds them).
pub fn rfc3339(unix_secs: i64) -> String {
    let secs = unix_secs.max(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn every_day_boundary_round_trips_through_the_calendar() {
        // Day by day for 200 years: the date moves forward by exactly one day each time.
        let mut previous = civil_from_days(0);
        for day in 1..73_000 {
            let current = civil_from_days(day);
            let (py, pm, pd) = previous;
            let (y, m, d) = current;
            let next_in_month = (y, m, d) == (py, pm, pd + 1);
            let next_month = d == 1 && ((y == py && m == pm + 1) || (y == py + 1 && m == 1 && pm == 12));
            assert!(next_in_month || next_month, "{previous:?} -> {current:?}");
            previous = current;
        }
    }
}
