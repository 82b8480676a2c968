//! The date forms the simulated providers write. The calendar itself is
//! [`idem::time`] (jiff); only the providers' forms are named here.

use std::time::SystemTime;

/// Twilio's `date_created`: `Thu, 24 Aug 2023 05:01:45 +0000`.
pub(crate) use idem::time::format_rfc2822 as rfc2822;

/// The UTC calendar date, `YYYY-MM-DD` (Twilio's `DateSent` filters).
pub(crate) use idem::time::format_date as ymd;

/// RFC 3339 in UTC, with nanoseconds when there are any (Google's
/// `createTime`).
pub(crate) use idem::time::format_rfc3339_nanos as rfc3339;

/// The Graph API's times: UTC with `+0000`, whole seconds.
pub(crate) fn graph(t: SystemTime) -> String {
    idem::time::format(t, "%Y-%m-%dT%H:%M:%S%z").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn formats() {
        let t = UNIX_EPOCH + Duration::from_secs(1_692_853_305);
        assert_eq!(rfc2822(t), "Thu, 24 Aug 2023 05:01:45 +0000");
        assert_eq!(ymd(t), "2023-08-24");
        assert_eq!(
            ymd(UNIX_EPOCH + Duration::from_secs(86_400 * 31)),
            "1970-02-01"
        );
        assert_eq!(rfc3339(t), "2023-08-24T05:01:45Z");
        assert_eq!(
            rfc3339(t + Duration::from_nanos(5)),
            "2023-08-24T05:01:45.000000005Z"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(graph(leap), "2000-02-29T00:00:00+0000");
        assert_eq!(
            rfc2822(UNIX_EPOCH + Duration::from_secs(1_714_521_600 + 3 * 86_400)),
            "Sat, 04 May 2024 00:00:00 +0000"
        );
    }
}
