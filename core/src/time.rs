//! The SDK's one calendar: the date forms that cross the wire, read and
//! written with [`jiff`].
//!
//! | form | written as | used by |
//! | --- | --- | --- |
//! | HTTP date (RFC 9110 IMF-fixdate) | `Tue, 14 Nov 2023 22:13:20 GMT` | `Retry-After`, `Idempotency-Key-Expires` |
//! | RFC 3339 | `2023-11-14T22:13:20Z` | problem bodies, Google |
//! | RFC 2822 | `Tue, 14 Nov 2023 22:13:20 +0000` | Twilio |
//! | any other | a `strftime` pattern ([`format()`], [`parse()`]) | Graph's `+0000` offsets, Twilio's date filters |
//!
//! Every time is in UTC. Readers check the calendar (no 31 February, no
//! 13th month, no 24:61) and return `None` for anything they cannot read,
//! never a guess. Times before 1970 are refused as well: the ledger stores
//! milliseconds since the Unix epoch, and no provider dates its objects
//! earlier. Writers clamp a time before 1970 to the epoch and one past
//! jiff's range (the end of the year 9999) to its end, so they never fail.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use idem::time;
//!
//! let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! assert_eq!(time::format_http_date(t), "Tue, 14 Nov 2023 22:13:20 GMT");
//! assert_eq!(time::format_rfc3339(t), "2023-11-14T22:13:20Z");
//! assert_eq!(time::format_rfc2822(t), "Tue, 14 Nov 2023 22:13:20 +0000");
//! assert_eq!(time::parse_rfc3339("2023-11-14T23:13:20+01:00"), Some(t));
//! assert_eq!(time::parse_rfc3339("2023-02-31T00:00:00Z"), None);
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use jiff::fmt::rfc2822;
use jiff::fmt::strtime;
use jiff::tz::Offset;

/// The three forms an HTTP date may take (RFC 9110 §5.6.7): IMF-fixdate,
/// then the obsolete RFC 850 and asctime forms a recipient must still read.
const HTTP_DATE_PATTERNS: [&str; 3] = [
    "%a, %d %b %Y %H:%M:%S GMT",
    "%A, %d-%b-%y %H:%M:%S GMT",
    "%a %b %e %H:%M:%S %Y",
];

/// RFC 3339 `date-time`: `T`, optional fraction, then `Z` or `±hh:mm`.
const RFC3339_PATTERNS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.f%:z"];

const RFC3339_SECONDS: &str = "%Y-%m-%dT%H:%M:%SZ";
const RFC3339_NANOS: &str = "%Y-%m-%dT%H:%M:%S%.9fZ";
const RFC2822_UTC: &str = "%a, %d %b %Y %H:%M:%S +0000";
const DATE: &str = "%Y-%m-%d";

/// `t` as a jiff timestamp, clamped to what every writer can print.
fn timestamp(t: SystemTime) -> Timestamp {
    if t <= UNIX_EPOCH {
        return Timestamp::UNIX_EPOCH;
    }
    Timestamp::try_from(t).unwrap_or(Timestamp::MAX)
}

/// A read timestamp as a `SystemTime`; `None` before the epoch.
fn system_time(ts: Timestamp) -> Option<SystemTime> {
    (ts >= Timestamp::UNIX_EPOCH).then(|| SystemTime::from(ts))
}

/// Formats `t` (in UTC) with a `strftime` pattern, as
/// [`jiff::fmt::strtime`] defines them. `None` only when the pattern is not
/// one (a stray `%`, or a directive that needs a time zone name).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_secs(1_714_566_600);
/// assert_eq!(
///     idem::time::format(t, "%Y-%m-%dT%H:%M:%S%z").as_deref(),
///     Some("2024-05-01T12:30:00+0000")
/// );
/// assert_eq!(idem::time::format(t, "%"), None);
/// ```
pub fn format(t: SystemTime, pattern: &str) -> Option<String> {
    strtime::format(pattern, timestamp(t)).ok()
}

/// Reads `text` with a `strftime` pattern ([`jiff::fmt::strtime`]). The
/// whole text must match. A pattern without an offset (`%z`, `%:z`) reads
/// the time as UTC. `None` when the text does not match, names an invalid
/// date or time, or falls before 1970.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_secs(1_714_566_600);
/// let graph = "%Y-%m-%dT%H:%M:%S%z";
/// assert_eq!(idem::time::parse(graph, "2024-05-01T12:30:00+0000"), Some(t));
/// assert_eq!(idem::time::parse(graph, "2024-05-01T14:30:00+0200"), Some(t));
/// assert_eq!(idem::time::parse("%Y-%m-%d %H:%M", "2024-05-01 12:30"), Some(t));
/// assert_eq!(idem::time::parse(graph, "2024-02-31T12:30:00+0000"), None);
/// ```
pub fn parse(pattern: &str, text: &str) -> Option<SystemTime> {
    let tm = strtime::parse(pattern, text).ok()?;
    let ts = match tm.offset() {
        Some(_) => tm.to_timestamp().ok()?,
        None => Offset::UTC.to_timestamp(tm.to_datetime().ok()?).ok()?,
    };
    system_time(ts)
}

/// Formats `t` as an HTTP date, IMF-fixdate (`Tue, 14 Nov 2023 22:13:20
/// GMT`), as `Retry-After` and `Idempotency-Key-Expires` carry it. Fractions
/// of a second are dropped.
pub fn format_http_date(t: SystemTime) -> String {
    rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&timestamp(t))
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 GMT".to_owned())
}

/// Reads an HTTP date in any of its three forms (RFC 9110 §5.6.7):
/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday,
/// 06-Nov-94 08:49:37 GMT`) or asctime (`Sun Nov  6 08:49:37 1994`). The
/// weekday must match the date.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
/// assert_eq!(idem::time::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
/// assert_eq!(idem::time::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
/// assert_eq!(idem::time::parse_http_date("Sun Nov  6 08:49:37 1994"), Some(t));
/// assert_eq!(idem::time::parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), None);
/// ```
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    HTTP_DATE_PATTERNS
        .iter()
        .find_map(|pattern| parse(pattern, text))
}

/// Formats `t` as RFC 3339 in UTC to the whole second
/// (`2023-11-14T22:13:20Z`), as problem bodies carry expiry times.
pub fn format_rfc3339(t: SystemTime) -> String {
    format(t, RFC3339_SECONDS).unwrap_or_default()
}

/// Formats `t` as RFC 3339 in UTC with nine fractional digits when it has a
/// fraction of a second (`2014-10-02T15:01:23.045123456Z`), as Google writes
/// times, and to the whole second otherwise.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::new(1_412_262_083, 45_000_000);
/// assert_eq!(idem::time::format_rfc3339_nanos(t), "2014-10-02T15:01:23.045000000Z");
/// ```
pub fn format_rfc3339_nanos(t: SystemTime) -> String {
    let ts = timestamp(t);
    let pattern = if ts.subsec_nanosecond() == 0 {
        RFC3339_SECONDS
    } else {
        RFC3339_NANOS
    };
    strtime::format(pattern, ts).unwrap_or_default()
}

/// Reads an RFC 3339 `date-time`: a `T` between date and time, up to nine
/// fractional digits, and `Z` or a `±hh:mm` offset. A leap second (`:60`)
/// reads as `:59`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::new(1_412_262_083, 45_123_456);
/// assert_eq!(idem::time::parse_rfc3339("2014-10-02T15:01:23.045123456Z"), Some(t));
/// assert_eq!(idem::time::parse_rfc3339("2014-10-02T15:01:23+0200"), None);
/// ```
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    RFC3339_PATTERNS
        .iter()
        .find_map(|pattern| parse(pattern, text))
}

/// Formats `t` as RFC 2822 in UTC with a `+0000` offset and a two-digit day
/// (`Thu, 24 Aug 2023 05:01:45 +0000`), as Twilio writes `date_created`.
pub fn format_rfc2822(t: SystemTime) -> String {
    format(t, RFC2822_UTC).unwrap_or_default()
}

/// Reads an RFC 2822 date-time with any offset, `GMT` or `UT`
/// (`Thu, 24 Aug 2023 07:01:45 +0200`). The weekday, when present, must
/// match the date.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_secs(1_692_853_305);
/// assert_eq!(idem::time::parse_rfc2822("Thu, 24 Aug 2023 05:01:45 +0000"), Some(t));
/// assert_eq!(idem::time::parse_rfc2822("Thu, 24 Aug 2023 07:01:45 +0200"), Some(t));
/// assert_eq!(idem::time::parse_rfc2822("yesterday"), None);
/// ```
pub fn parse_rfc2822(text: &str) -> Option<SystemTime> {
    rfc2822::DateTimeParser::new()
        .parse_timestamp(text)
        .ok()
        .and_then(system_time)
}

/// The UTC calendar date of `t` as `YYYY-MM-DD`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_secs(86_400 * 31);
/// assert_eq!(idem::time::format_date(t), "1970-02-01");
/// ```
pub fn format_date(t: SystemTime) -> String {
    format(t, DATE).unwrap_or_default()
}

/// Whole seconds since the Unix epoch (0 before it), as Graph's `since` and
/// `scheduled_publish_time` take times.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// assert_eq!(idem::time::unix_seconds(UNIX_EPOCH + Duration::from_millis(1_500)), 1);
/// assert_eq!(idem::time::unix_seconds(UNIX_EPOCH - Duration::from_secs(1)), 0);
/// ```
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// Times every format must carry there and back: the epoch, a leap day,
    /// a day with a one-digit day of the month, the last second of a year,
    /// and one far ahead.
    const SECONDS: [u64; 6] = [
        0,
        951_782_400,
        1_692_853_305,
        1_704_067_199,
        1_709_251_200,
        4_102_444_800,
    ];

    /// One of the writers above.
    type Writer = fn(SystemTime) -> String;

    #[test]
    fn known_dates_are_written_as_before() {
        let cases: [(Writer, SystemTime, &str); 11] = [
            (format_rfc3339, UNIX_EPOCH, "1970-01-01T00:00:00Z"),
            (format_rfc3339, at(1_700_000_000, 0), "2023-11-14T22:13:20Z"),
            (format_rfc3339, at(951_782_400, 0), "2000-02-29T00:00:00Z"),
            // Problem bodies carry whole seconds.
            (
                format_rfc3339,
                at(1_700_000_000, 999_000_000),
                "2023-11-14T22:13:20Z",
            ),
            (
                format_rfc3339_nanos,
                at(1_412_262_083, 45_123_456),
                "2014-10-02T15:01:23.045123456Z",
            ),
            (
                format_rfc3339_nanos,
                at(951_782_400, 0),
                "2000-02-29T00:00:00Z",
            ),
            (
                format_http_date,
                at(1_700_000_000, 0),
                "Tue, 14 Nov 2023 22:13:20 GMT",
            ),
            (
                format_http_date,
                UNIX_EPOCH,
                "Thu, 01 Jan 1970 00:00:00 GMT",
            ),
            (
                format_rfc2822,
                at(1_692_853_305, 0),
                "Thu, 24 Aug 2023 05:01:45 +0000",
            ),
            // Two-digit days, as Twilio writes them.
            (
                format_rfc2822,
                at(1_709_251_200, 0),
                "Fri, 01 Mar 2024 00:00:00 +0000",
            ),
            (format_date, at(1_692_853_305, 0), "2023-08-24"),
        ];
        for (write, t, want) in cases {
            assert_eq!(write(t), want);
        }
    }

    #[test]
    fn every_format_round_trips() {
        for secs in SECONDS {
            let whole = at(secs, 0);
            assert_eq!(parse_rfc3339(&format_rfc3339(whole)), Some(whole));
            assert_eq!(parse_http_date(&format_http_date(whole)), Some(whole));
            assert_eq!(parse_rfc2822(&format_rfc2822(whole)), Some(whole));
            for nanos in [0, 1, 45_123_456, 999_999_999] {
                let t = at(secs, nanos);
                assert_eq!(parse_rfc3339(&format_rfc3339_nanos(t)), Some(t));
            }
            let graph = "%Y-%m-%dT%H:%M:%S%z";
            assert_eq!(
                parse(graph, &format(whole, graph).unwrap_or_default()),
                Some(whole)
            );
        }
    }

    #[test]
    fn offsets_are_applied() {
        let t = at(1_412_262_083, 0);
        assert_eq!(parse_rfc3339("2014-10-02T15:01:23Z"), Some(t));
        assert_eq!(parse_rfc3339("2014-10-02T17:01:23+02:00"), Some(t));
        assert_eq!(parse_rfc3339("2014-10-02T10:01:23-05:00"), Some(t));
        assert_eq!(parse_rfc2822("Thu, 02 Oct 2014 15:01:23 GMT"), Some(t));
        assert_eq!(parse_rfc2822("Thu, 02 Oct 2014 15:01:23 -0000"), Some(t));
        assert_eq!(parse_rfc2822(" Thu, 02 Oct 2014 17:01:23 +0200 "), Some(t));
    }

    #[test]
    fn a_leap_second_reads_as_the_second_before() {
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2016-12-31T23:59:59Z")
        );
    }

    /// The hand-written Graph reader took any day from 1 to 31 in any
    /// month; none of these readers does.
    #[test]
    fn impossible_dates_and_times_are_refused() {
        for bad in [
            "2024-02-31T12:30:00Z",
            "2023-02-29T12:30:00Z",
            "2024-04-31T12:30:00Z",
            "2024-13-01T12:30:00Z",
            "2024-00-01T12:30:00Z",
            "2024-05-00T12:30:00Z",
            "2024-05-01T24:61:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:61:00Z",
            "2024-05-01T12:30:61Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
            let graph = bad.replace('Z', "+0000");
            assert_eq!(parse("%Y-%m-%dT%H:%M:%S%z", &graph), None, "{graph}");
        }
        for bad in [
            "Sat, 31 Feb 2024 12:30:00 +0000",
            "Mon, 01 Foo 2024 12:30:00 +0000",
            "Wed, 01 May 2024 24:61:00 +0000",
        ] {
            assert_eq!(parse_rfc2822(bad), None, "{bad}");
            let http = bad.replace("+0000", "GMT");
            assert_eq!(parse_http_date(&http), None, "{http}");
        }
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "yesterday",
            "2014-10-02",
            "2014-10-02T15:01:23",
            "2014-10-02T15:01:23.Z",
            "2014-10-02 15:01:23Z",
            "2014-10-02T15:01:23+0200",
            "2014-10-02T15:01:23+02",
            "2014-10-02T15:01:23Z trailing",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for bad in ["", "soon", "Wed, 01 May 2024 12:30:00", "1714566600"] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
            assert_eq!(parse_rfc2822(bad), None, "{bad}");
        }
        // A weekday that does not match the date.
        assert_eq!(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_rfc2822("Fri, 24 Aug 2023 05:01:45 +0000"), None);
        // Before the epoch.
        assert_eq!(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT"), None);
    }

    #[test]
    fn writers_clamp_instead_of_failing() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(format_rfc3339(before), "1970-01-01T00:00:00Z");
        assert_eq!(format_http_date(before), "Thu, 01 Jan 1970 00:00:00 GMT");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert!(format_rfc3339(far).starts_with("9999-12-"));
        assert!(format_http_date(far).contains(" Dec 9999 "));
        assert!(format_rfc2822(far).contains(" Dec 9999 "));
    }
}
