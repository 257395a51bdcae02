//! RFC 3339 timestamps in UTC from Unix seconds: the dates in the auth and customer APIs
//! (`2023-11-14T22:13:20Z`, as the OpenAPI documents promise) and the `timestamp` of telemetry's
//! log lines (`2023-11-14T22:13:20.082242Z`). Plain Rust with no dependencies, so it adds
//! nothing to the components but these few functions.
//!
//! The calendar is the proleptic Gregorian one, for any `i64`: times before 1970 give dates
//! before 1970 (callers that must not show them clamp first), and years past 9999 are written
//! with more digits (RFC 3339 itself stops at 9999). Leap seconds do not exist in Unix time and
//! are never written.

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (RFC 3339, UTC, whole seconds).
pub fn format(unix_secs: i64) -> String {
    write(unix_secs, None)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for Unix seconds plus `micros` (0..=999_999) microseconds
/// (RFC 3339, UTC, six fractional digits, as in the log lines).
pub fn format_micros(unix_secs: i64, micros: u32) -> String {
    debug_assert!(micros < 1_000_000, "{micros} microseconds is a second or more");
    write(unix_secs, Some(micros))
}

fn write(unix_secs: i64, micros: Option<u32>) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match micros {
        None => format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"),
        Some(micros) => format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"),
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
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
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(86_399), "1970-01-01T23:59:59Z");
        assert_eq!(format(86_400), "1970-01-02T00:00:00Z");
        assert_eq!(format(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn leap_years() {
        // 2000 is a leap year (divisible by 400), 2100 is not (by 100), 2024 is (by 4).
        assert_eq!(format(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(format(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(format(1_677_628_800), "2023-03-01T00:00:00Z");
        assert_eq!(format(4_107_456_000), "2100-02-28T00:00:00Z");
        assert_eq!(format(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(format(1_735_603_200), "2024-12-31T00:00:00Z");
    }

    #[test]
    fn past_2038_and_9999() {
        assert_eq!(format(2_147_483_647), "2038-01-19T03:14:07Z");
        assert_eq!(format(2_147_483_648), "2038-01-19T03:14:08Z");
        assert_eq!(format(4_294_967_296), "2106-02-07T06:28:16Z");
        assert_eq!(format(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(format(253_402_300_800), "10000-01-01T00:00:00Z");
    }

    #[test]
    fn before_1970() {
        assert_eq!(format(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format(-86_400), "1969-12-31T00:00:00Z");
        assert_eq!(format(-2_208_988_800), "1900-01-01T00:00:00Z");
        assert_eq!(format(-62_135_596_800), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn extremes_do_not_overflow() {
        assert!(format(i64::MAX).ends_with("T15:30:07Z"));
        assert!(format(i64::MIN).ends_with("T08:29:52Z"));
    }

    #[test]
    fn microseconds_have_six_digits() {
        assert_eq!(format_micros(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(951_782_400, 123_456), "2000-02-29T00:00:00.123456Z");
        assert_eq!(format_micros(1_700_000_000, 7), "2023-11-14T22:13:20.000007Z");
        assert_eq!(format_micros(2_147_483_647, 999_999), "2038-01-19T03:14:07.999999Z");
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

    #[test]
    fn agrees_with_chrono_from_year_1_to_9999() {
        // Every 11th day (11 is prime to the week, the year and the 400-year cycle, so every
        // month day and leap day comes round), at a time of day that moves through the whole day.
        let first = -62_135_596_800_i64;
        let last = 253_402_300_799_i64;
        let mut secs = first;
        let mut step = 0_i64;
        while secs <= last {
            let at = secs + (step * 7_919) % 86_400;
            let micros = u32::try_from(step % 1_000_000).unwrap();
            let theirs = chrono::DateTime::from_timestamp(at, micros * 1000).unwrap();
            assert_eq!(format(at), theirs.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            assert_eq!(format_micros(at, micros), theirs.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
            secs += 11 * 86_400;
            step += 1;
        }
    }
}
