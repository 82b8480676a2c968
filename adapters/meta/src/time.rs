//! Graph API timestamps: `2024-05-01T12:30:00+0000` (ISO 8601 with a
//! `±hhmm` offset), as `created_time` and Instagram `timestamp` carry them.
//! The calendar is [`idem::time`]; only Graph's forms are named here.

use std::time::SystemTime;

/// How Graph writes times.
const GRAPH: &str = "%Y-%m-%dT%H:%M:%S%z";

/// What Graph timestamps are read as: its own form, then RFC 3339's `±hh:mm`
/// and `Z`, then no offset at all (UTC).
const READ: [&str; 4] = [
    GRAPH,
    "%Y-%m-%dT%H:%M:%S%:z",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S",
];

/// Parses a Graph timestamp. `None` when it is not in one of those forms or
/// names a date or time that does not exist.
pub(crate) fn parse(s: &str) -> Option<SystemTime> {
    READ.iter()
        .find_map(|pattern| idem::time::parse(pattern, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formats a time the way the Graph API does (UTC, `+0000`).
    fn format(t: SystemTime) -> String {
        idem::time::format(t, GRAPH).unwrap_or_default()
    }
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trips() {
        let t = UNIX_EPOCH + Duration::from_secs(1_714_566_600);
        assert_eq!(format(t), "2024-05-01T12:30:00+0000");
        assert_eq!(parse("2024-05-01T12:30:00+0000"), Some(t));
        assert_eq!(parse("2024-05-01T14:30:00+02:00"), Some(t));
        assert_eq!(parse("2024-05-01T14:30:00+0200"), Some(t));
        assert_eq!(parse("2024-05-01T12:30:00Z"), Some(t));
        assert_eq!(parse("2024-05-01T12:30:00"), Some(t));
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("2024-13-01T12:30:00+0000"), None);
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format(leap), "2000-02-29T00:00:00+0000");
        assert_eq!(parse(&format(leap)), Some(leap));
    }

    /// The hand-written reader checked the day against 1 to 31 whatever the
    /// month, so it read 31 February as 2 or 3 March.
    #[test]
    fn dates_that_do_not_exist_are_refused() {
        for bad in [
            "2024-02-31T12:30:00+0000",
            "2023-02-29T12:30:00+0000",
            "2024-06-31T12:30:00+0000",
            "2024-13-01T12:30:00+0000",
            "2024-05-01T24:61:00+0000",
            "2024-05-01T12:30:61+0000",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
