//! The decisions behind `idem_lint`, kept free of compiler types.
//!
//! The lint itself (in the parent crate) only walks the HIR and resolves callees; every
//! decision it takes is a call into this crate:
//!
//! - [`Policy::is_external_http_call`]: does a resolved callee belong to an HTTP client crate
//!   (`reqwest`, `reqwest_middleware` by default)?
//! - [`Policy::is_allowed_site`]: may code in this crate and module make such a call (the adapter
//!   crates and `idem::executor` by default)?
//! - [`suggest_adapter`] and [`message`]: which adapter should the diagnostic name?
//!
//! The crate has no dependencies, so its tests run on stable (`cargo +stable test`) as well as
//! on the lint's pinned nightly.
//!
//! ```
//! use idem_lint_policy::{Policy, Suggestion, suggest_adapter};
//!
//! let policy = Policy::default();
//! assert!(policy.is_external_http_call("reqwest"));
//! assert!(!policy.is_allowed_site("my_worker", &["my_worker", "jobs"]));
//! assert!(policy.is_allowed_site("idem", &["idem", "executor"]));
//! assert_eq!(
//!     suggest_adapter(Some("https://api.stripe.com/v1/payment_intents")),
//!     Suggestion::Adapter { service: "Stripe", package: "idem-stripe" },
//! );
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Crates whose functions make (or prepare) outbound HTTP requests.
///
/// Names are crate names as rustc sees them (`_`, not `-`).
pub const DEFAULT_HTTP_CRATES: &[&str] = &["reqwest", "reqwest_middleware"];

/// Where direct HTTP calls are allowed by default: the four adapter crates and core's executor.
///
/// An entry is a crate name (`idem_stripe`: the whole crate) or a module path inside a crate
/// (`idem::executor`: that module and its submodules only).
pub const DEFAULT_ALLOWED: &[&str] = &[
    "idem_stripe",
    "idem_twilio",
    "idem_gbp",
    "idem_meta",
    "idem::executor",
];

/// The adapters idem ships, as (service, package, host suffixes that identify the service).
pub const ADAPTERS: &[(&str, &str, &[&str])] = &[
    ("Stripe", "idem-stripe", &["stripe.com"]),
    ("Twilio", "idem-twilio", &["twilio.com"]),
    (
        "Google Business Profile",
        "idem-gbp",
        &[
            "mybusiness.googleapis.com",
            "mybusinessbusinessinformation.googleapis.com",
            "mybusinessaccountmanagement.googleapis.com",
            "mybusinessnotifications.googleapis.com",
            "mybusinessverifications.googleapis.com",
            "mybusinessqanda.googleapis.com",
            "mybusinesslodging.googleapis.com",
            "mybusinessplaceactions.googleapis.com",
            "businessprofileperformance.googleapis.com",
        ],
    ),
    (
        "Meta",
        "idem-meta",
        &["facebook.com", "instagram.com", "fb.com", "fbcdn.net"],
    ),
];

/// Turns a package or crate name into the crate name rustc uses (`idem-stripe` → `idem_stripe`).
pub fn crate_name(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// One allow-list entry, split into crate name and module segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    segments: Vec<String>,
}

impl AllowEntry {
    /// Parses `crate` or `crate::module::…`. A leading `::` and surrounding blanks are ignored,
    /// `-` in the crate name is read as `_`. Returns `None` for an empty entry.
    pub fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim().trim_start_matches("::");
        let mut segments: Vec<String> = entry
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let first = segments.first_mut()?;
        *first = crate_name(first);
        Some(Self { segments })
    }

    /// Whether a call site in `module_path` (crate name first) falls under this entry.
    pub fn covers(&self, module_path: &[&str]) -> bool {
        self.segments.len() <= module_path.len()
            && self
                .segments
                .iter()
                .zip(module_path)
                .all(|(entry, site)| entry == site)
    }
}

/// What the lint flags and where it lets calls through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    http_crates: Vec<String>,
    allowed: Vec<AllowEntry>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new(DEFAULT_HTTP_CRATES, DEFAULT_ALLOWED)
    }
}

impl Policy {
    /// A policy from explicit lists (crate names may use `-` or `_`).
    pub fn new(
        http_crates: impl IntoIterator<Item = impl AsRef<str>>,
        allowed: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        Self {
            http_crates: http_crates
                .into_iter()
                .map(|c| crate_name(c.as_ref()))
                .filter(|c| !c.is_empty())
                .collect(),
            allowed: allowed
                .into_iter()
                .filter_map(|e| AllowEntry::parse(e.as_ref()))
                .collect(),
        }
    }

    /// Whether a callee defined in crate `callee_crate` is an external HTTP call.
    ///
    /// The lint passes the crate that *defines* the resolved function (after re-exports and
    /// trait-impl resolution), so `reqwest::Client::post`, `reqwest::get`, and
    /// `<reqwest::Client as Default>::default` all arrive here as `reqwest`.
    pub fn is_external_http_call(&self, callee_crate: &str) -> bool {
        let callee_crate = crate_name(callee_crate);
        self.http_crates.iter().any(|c| *c == callee_crate)
    }

    /// Whether code in `site_crate` at `module_path` may call an HTTP client directly.
    ///
    /// `module_path` starts with the crate name, then the modules enclosing the call site, for
    /// example `["idem", "executor", "send"]`. Code inside an HTTP client crate itself is always
    /// allowed (it is not worker code).
    pub fn is_allowed_site(&self, site_crate: &str, module_path: &[&str]) -> bool {
        let site_crate = crate_name(site_crate);
        if self.http_crates.contains(&site_crate) {
            return true;
        }
        let mut path: Vec<&str> = Vec::with_capacity(module_path.len() + 1);
        path.push(&site_crate);
        // Accept module paths with or without the crate name in front.
        let rest = match module_path.first() {
            Some(first) if crate_name(first) == site_crate => &module_path[1..],
            _ => module_path,
        };
        path.extend_from_slice(rest);
        self.allowed.iter().any(|entry| entry.covers(&path))
    }

    /// The whole decision: flag a call to a function defined in `callee_crate` made from
    /// `site_crate` at `module_path`?
    pub fn should_flag(&self, callee_crate: &str, site_crate: &str, module_path: &[&str]) -> bool {
        self.is_external_http_call(callee_crate) && !self.is_allowed_site(site_crate, module_path)
    }
}

/// The adapter a diagnostic should point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suggestion {
    /// The call's URL identifies a service idem has an adapter for.
    Adapter {
        /// Service name, e.g. `Stripe`.
        service: &'static str,
        /// Package to depend on, e.g. `idem-stripe`.
        package: &'static str,
    },
    /// No URL, or a service without an adapter: list them all.
    Unknown,
}

/// The host of an absolute `http(s)://` URL, lower-cased; `None` for anything else.
pub fn host_of(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(stripped) = host_port.strip_prefix('[') {
        stripped.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Picks the adapter from a URL (or bare host) found at the call site, if any.
pub fn suggest_adapter(url_or_host: Option<&str>) -> Suggestion {
    let Some(text) = url_or_host else {
        return Suggestion::Unknown;
    };
    let host = host_of(text).unwrap_or_else(|| text.trim().to_ascii_lowercase());
    for &(service, package, suffixes) in ADAPTERS {
        let matches = suffixes
            .iter()
            .any(|s| host == *s || host.ends_with(&format!(".{s}")));
        if matches {
            return Suggestion::Adapter { service, package };
        }
    }
    Suggestion::Unknown
}

/// The adapter map as one sentence, for diagnostics and clippy.toml reasons.
pub fn adapter_map() -> String {
    let list: Vec<String> = ADAPTERS
        .iter()
        .map(|(service, package, _)| format!("{service} → `{package}`"))
        .collect();
    format!(
        "{}; for another service, add an adapter crate built on `idem::executor`",
        list.join(", ")
    )
}

/// The diagnostic's main line for a flagged call to `callee` (a printable path).
///
/// With a known service the line names its adapter; otherwise it says to use an adapter and the
/// diagnostic's help line ([`adapter_map`]) lists them.
pub fn message(callee: &str, suggestion: Suggestion) -> String {
    match suggestion {
        Suggestion::Adapter { service, package } => format!(
            "direct HTTP call `{callee}` outside an idem adapter: {service} writes go through `{package}`"
        ),
        Suggestion::Unknown => format!(
            "direct HTTP call `{callee}` outside an idem adapter: use the adapter for the service"
        ),
    }
}

/// The diagnostic's help line: which adapter serves which service.
pub fn help() -> String {
    format!("idem adapters: {}", adapter_map())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_crates_are_reqwest_and_middleware() {
        let p = Policy::default();
        assert!(p.is_external_http_call("reqwest"));
        assert!(p.is_external_http_call("reqwest_middleware"));
        assert!(p.is_external_http_call("reqwest-middleware"));
        assert!(!p.is_external_http_call("reqwest_retry"));
        assert!(!p.is_external_http_call("http"));
        assert!(!p.is_external_http_call("url"));
        assert!(!p.is_external_http_call("idem"));
        assert!(!p.is_external_http_call("reqwestx"));
    }

    #[test]
    fn adapters_and_executor_are_allowed_by_default() {
        let p = Policy::default();
        for krate in ["idem_stripe", "idem_twilio", "idem_gbp", "idem_meta"] {
            assert!(p.is_allowed_site(krate, &[krate]), "{krate}");
            assert!(
                p.is_allowed_site(krate, &[krate, "client", "inner"]),
                "{krate}"
            );
        }
        assert!(p.is_allowed_site("idem-stripe", &["idem_stripe"]));
        assert!(p.is_allowed_site("idem", &["idem", "executor"]));
        assert!(p.is_allowed_site("idem", &["idem", "executor", "send"]));
        // The module path may leave the crate name out.
        assert!(p.is_allowed_site("idem", &["executor"]));
    }

    #[test]
    fn rest_of_core_and_workers_are_not_allowed() {
        let p = Policy::default();
        assert!(!p.is_allowed_site("idem", &["idem"]));
        assert!(!p.is_allowed_site("idem", &["idem", "ledger"]));
        assert!(!p.is_allowed_site("idem", &["idem", "executorx"]));
        assert!(!p.is_allowed_site("idem_examples", &["idem_examples"]));
        assert!(!p.is_allowed_site("idem_tests", &["idem_tests"]));
        assert!(!p.is_allowed_site("worker_direct", &["worker_direct", "jobs"]));
        // A crate called like a module of an allowed crate is not that module.
        assert!(!p.is_allowed_site("executor", &["executor"]));
        // A prefix of a crate name is not the crate.
        assert!(!p.is_allowed_site("idem_stripe_fake", &["idem_stripe_fake"]));
    }

    #[test]
    fn http_client_crates_themselves_are_not_worker_code() {
        let p = Policy::default();
        assert!(p.is_allowed_site("reqwest", &["reqwest", "async_impl"]));
        assert!(p.is_allowed_site("reqwest_middleware", &["reqwest_middleware"]));
    }

    #[test]
    fn should_flag_combines_both_decisions() {
        let p = Policy::default();
        assert!(p.should_flag("reqwest", "worker", &["worker"]));
        assert!(p.should_flag("reqwest_middleware", "idem", &["idem", "retry"]));
        assert!(!p.should_flag("reqwest", "idem_meta", &["idem_meta"]));
        assert!(!p.should_flag("reqwest", "idem", &["idem", "executor"]));
        assert!(!p.should_flag("idem_stripe", "worker", &["worker"]));
        assert!(!p.should_flag("std", "worker", &["worker"]));
    }

    #[test]
    fn configured_lists_replace_the_defaults() {
        let p = Policy::new(
            ["reqwest", "ureq"],
            ["my-adapter", "::app::http::outbound", "  "],
        );
        assert!(p.is_external_http_call("ureq"));
        assert!(!p.is_external_http_call("reqwest_middleware"));
        assert!(p.is_allowed_site("my_adapter", &["my_adapter"]));
        assert!(p.is_allowed_site("app", &["app", "http", "outbound", "x"]));
        assert!(!p.is_allowed_site("app", &["app", "http"]));
        assert!(!p.is_allowed_site("idem_stripe", &["idem_stripe"]));

        let nothing = Policy::new(DEFAULT_HTTP_CRATES, Vec::<String>::new());
        assert!(!nothing.is_allowed_site("idem_stripe", &["idem_stripe"]));
    }

    #[test]
    fn allow_entries_parse() {
        assert_eq!(AllowEntry::parse(""), None);
        assert_eq!(AllowEntry::parse("::"), None);
        let e = AllowEntry::parse(" idem-core::executor ").unwrap();
        assert!(e.covers(&["idem_core", "executor"]));
        assert!(!e.covers(&["idem_core"]));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_of("https://api.stripe.com/v1/charges").as_deref(),
            Some("api.stripe.com")
        );
        assert_eq!(
            host_of("HTTPS://API.Twilio.com:443/2010-04-01").as_deref(),
            Some("api.twilio.com")
        );
        assert_eq!(
            host_of("http://user:pw@graph.facebook.com?x=1").as_deref(),
            Some("graph.facebook.com")
        );
        assert_eq!(host_of("http://[::1]:8080/").as_deref(), Some("::1"));
        assert_eq!(host_of("/v1/charges"), None);
        assert_eq!(host_of("ftp://stripe.com"), None);
        assert_eq!(host_of("https:///nohost"), None);
    }

    #[test]
    fn suggestions_follow_the_url() {
        let adapter = |s| match suggest_adapter(Some(s)) {
            Suggestion::Adapter { package, .. } => Some(package),
            Suggestion::Unknown => None,
        };
        assert_eq!(
            adapter("https://api.stripe.com/v1/payment_intents"),
            Some("idem-stripe")
        );
        assert_eq!(
            adapter("https://files.stripe.com/v1/files"),
            Some("idem-stripe")
        );
        assert_eq!(
            adapter("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"),
            Some("idem-twilio")
        );
        assert_eq!(
            adapter("https://mybusiness.googleapis.com/v4/accounts/1/locations/2/reviews/3/reply"),
            Some("idem-gbp")
        );
        assert_eq!(
            adapter("https://graph.facebook.com/v19.0/123/feed"),
            Some("idem-meta")
        );
        assert_eq!(
            adapter("https://graph.instagram.com/me/media"),
            Some("idem-meta")
        );
        assert_eq!(adapter("api.stripe.com"), Some("idem-stripe"));
        // Look-alike hosts are not the service.
        assert_eq!(adapter("https://notstripe.com/v1"), None);
        assert_eq!(adapter("https://stripe.com.evil.example/v1"), None);
        assert_eq!(adapter("https://www.googleapis.com/storage/v1"), None);
        assert_eq!(suggest_adapter(None), Suggestion::Unknown);
    }

    #[test]
    fn messages_name_the_adapter() {
        let m = message(
            "reqwest::RequestBuilder::send",
            Suggestion::Adapter {
                service: "Stripe",
                package: "idem-stripe",
            },
        );
        assert!(m.contains("`reqwest::RequestBuilder::send`"), "{m}");
        assert!(m.contains("`idem-stripe`"), "{m}");

        let m = message("reqwest::get", Suggestion::Unknown);
        assert!(m.contains("`reqwest::get`"), "{m}");
        let h = help();
        for package in [
            "idem-stripe",
            "idem-twilio",
            "idem-gbp",
            "idem-meta",
            "idem::executor",
        ] {
            assert!(h.contains(package), "{package} missing from {h}");
        }
    }

    #[test]
    fn every_adapter_is_allowed_by_default() {
        let p = Policy::default();
        for (_, package, _) in ADAPTERS {
            let krate = crate_name(package);
            assert!(p.is_allowed_site(&krate, &[&krate]), "{package}");
        }
    }
}
