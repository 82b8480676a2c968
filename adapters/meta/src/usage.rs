//! Meta's rate-limit usage headers.
//!
//! - `X-App-Usage` (platform rate limits, app and user tokens):
//!   `{"call_count": 28, "total_time": 25, "total_cputime": 25}`, each a
//!   percentage of the limit.
//! - `X-Business-Use-Case-Usage` (Business Use Case limits: Page access
//!   tokens, Instagram): `{"<business-object-id>": [{"type": "pages",
//!   "call_count": 1, "total_cputime": 1, "total_time": 1,
//!   "estimated_time_to_regain_access": 0}]}`, where
//!   `estimated_time_to_regain_access` is in minutes.
//!
//! Headers are absent until an endpoint has seen enough calls; absence is
//! not read as headroom or as a limit.

use std::time::Duration;

use http::HeaderMap;
use serde::Deserialize;

/// Header name of platform usage.
pub const APP_USAGE: &str = "x-app-usage";
/// Header name of Business Use Case usage.
pub const BUSINESS_USE_CASE_USAGE: &str = "x-business-use-case-usage";

/// Platform usage (`X-App-Usage`), percentages of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AppUsage {
    /// Calls made, in percent of the limit.
    pub call_count: f64,
    /// CPU time, in percent of the limit.
    pub total_cputime: f64,
    /// Total time, in percent of the limit.
    pub total_time: f64,
}

impl AppUsage {
    /// The highest of the three percentages.
    pub fn max_percent(&self) -> f64 {
        self.call_count.max(self.total_cputime).max(self.total_time)
    }
}

/// One entry of `X-Business-Use-Case-Usage`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BusinessUseCaseUsage {
    /// The business object (Page, IG account, ad account) the entry is for.
    #[serde(skip)]
    pub object_id: String,
    /// The use case, for example `pages` or `instagram`.
    #[serde(rename = "type")]
    pub use_case: Option<String>,
    /// Calls made, in percent of the limit.
    pub call_count: f64,
    /// CPU time, in percent of the limit.
    pub total_cputime: f64,
    /// Total time, in percent of the limit.
    pub total_time: f64,
    /// Minutes until a throttled caller regains access (0 when not
    /// throttled).
    pub estimated_time_to_regain_access: Option<f64>,
}

impl BusinessUseCaseUsage {
    /// The highest of the three percentages.
    pub fn max_percent(&self) -> f64 {
        self.call_count.max(self.total_cputime).max(self.total_time)
    }
}

/// Usage as reported on one response.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Usage {
    /// `X-App-Usage`, when present and readable.
    pub app: Option<AppUsage>,
    /// `X-Business-Use-Case-Usage` entries, when present and readable.
    pub business: Vec<BusinessUseCaseUsage>,
}

impl Usage {
    /// Reads both headers. `None` when neither is present (or readable).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let app = headers
            .get(APP_USAGE)
            .and_then(|v| serde_json::from_slice::<AppUsage>(v.as_bytes()).ok());
        let business = headers
            .get(BUSINESS_USE_CASE_USAGE)
            .and_then(|v| {
                serde_json::from_slice::<
                    std::collections::BTreeMap<String, Vec<BusinessUseCaseUsage>>,
                >(v.as_bytes())
                .ok()
            })
            .map(|map| {
                map.into_iter()
                    .flat_map(|(id, entries)| {
                        entries.into_iter().map(move |mut e| {
                            e.object_id.clone_from(&id);
                            e
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if app.is_none() && business.is_empty() {
            return None;
        }
        Some(Self { app, business })
    }

    /// The highest percentage across every header and entry.
    pub fn max_percent(&self) -> f64 {
        let app = self.app.map_or(0.0, |a| a.max_percent());
        self.business
            .iter()
            .map(BusinessUseCaseUsage::max_percent)
            .fold(app, f64::max)
    }

    /// The longest `estimated_time_to_regain_access` across entries, when
    /// any is above zero.
    pub fn regain_access_after(&self) -> Option<Duration> {
        let minutes = self
            .business
            .iter()
            .filter_map(|e| e.estimated_time_to_regain_access)
            .filter(|m| m.is_finite() && *m > 0.0)
            .fold(0.0_f64, f64::max);
        (minutes > 0.0).then(|| Duration::from_secs_f64(minutes * 60.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn reads_app_usage() {
        let h = headers(&[(
            "X-App-Usage",
            r#"{"call_count":28,"total_time":25,"total_cputime":91}"#,
        )]);
        let u = Usage::from_headers(&h).unwrap();
        assert_eq!(u.app.unwrap().call_count, 28.0);
        assert_eq!(u.max_percent(), 91.0);
        assert_eq!(u.regain_access_after(), None);
    }

    #[test]
    fn reads_business_use_case_usage() {
        let h = headers(&[(
            "x-business-use-case-usage",
            r#"{"112130216863063":[{"type":"pages","call_count":97,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":3}]}"#,
        )]);
        let u = Usage::from_headers(&h).unwrap();
        assert_eq!(u.business.len(), 1);
        assert_eq!(u.business[0].object_id, "112130216863063");
        assert_eq!(u.business[0].use_case.as_deref(), Some("pages"));
        assert_eq!(u.max_percent(), 97.0);
        assert_eq!(u.regain_access_after(), Some(Duration::from_secs(180)));
    }

    #[test]
    fn absent_or_garbled_headers_are_none() {
        assert_eq!(Usage::from_headers(&HeaderMap::new()), None);
        assert_eq!(
            Usage::from_headers(&headers(&[("x-app-usage", "not json")])),
            None
        );
    }
}
