//! Twilio's time formats: RFC 2822 in GMT (`Thu, 24 Aug 2023 05:01:45 +0000`)
//! for resource fields, `YYYY-MM-DD` (GMT) for the `DateSent` filters.

use std::time::SystemTime;

/// Formats a time as Twilio writes `date_created`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn rfc2822(t: SystemTime) -> String {
    // httpdate writes `Thu, 24 Aug 2023 05:01:45 GMT`; Twilio writes `+0000`.
    let text = httpdate::fmt_http_date(t);
    match text.strip_suffix(" GMT") {
        Some(head) => format!("{head} +0000"),
        None => text,
    }
}

/// Reads Twilio's `date_created` (`Thu, 24 Aug 2023 05:01:45 +0000`).
pub(crate) fn parse_rfc2822(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let head = text
        .strip_suffix(" +0000")
        .or_else(|| text.strip_suffix(" GMT"))
        .or_else(|| text.strip_suffix(" -0000"))?;
    httpdate::parse_http_date(&format!("{head} GMT")).ok()
}

/// The GMT calendar date of `t` as `YYYY-MM-DD`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn ymd(t: SystemTime) -> String {
    // `Thu, 24 Aug 2023 05:01:45 GMT`
    let text = httpdate::fmt_http_date(t);
    let mut parts = text.split_whitespace().skip(1);
    let (Some(day), Some(month), Some(year)) = (parts.next(), parts.next(), parts.next()) else {
        return "1970-01-01".to_owned();
    };
    let month = match month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        _ => 12,
    };
    format!("{year}-{month:02}-{day}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_692_853_305);
        assert_eq!(rfc2822(t), "Thu, 24 Aug 2023 05:01:45 +0000");
        assert_eq!(parse_rfc2822("Thu, 24 Aug 2023 05:01:45 +0000"), Some(t));
        assert_eq!(ymd(t), "2023-08-24");
        assert_eq!(
            ymd(UNIX_EPOCH + Duration::from_secs(86_400 * 31)),
            "1970-02-01"
        );
        assert_eq!(parse_rfc2822("yesterday"), None);
    }
}
