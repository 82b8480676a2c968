//! The decisions behind `idem_lint`, kept free of compiler types.
//!
//! The lint itself (in the parent crate) only walks the HIR and resolves callees and types;
//! every decision it takes is a call into this crate:
//!
//! - [`Policy::is_denied_item`]: is an item (a function, a type) part of an HTTP client or
//!   provider SDK on the deny list (reqwest, ureq, hyper's client, async-stripe, ...)?
//! - [`Policy::is_allowed_site`]: may code in this crate and module use one (the adapter crates
//!   and `idem::executor` by default)?
//! - [`suggest_adapter`] and [`message`]: which adapter should the diagnostic name?
//!
//! The default lists are the `[idem_lint]` table of the repository's `dylint.toml`, compiled in
//! ([`DYLINT_TOML`], read by [`Config::parse`]): the dependency gate and the clippy check read
//! the same file, so the three layers share one deny list.
//!
//! The crate has no dependencies, so its tests run on stable (`cargo +stable test`) as well as
//! on the lint's pinned nightly.
//!
//! ```
//! use idem_lint_policy::{Policy, Suggestion, suggest_adapter};
//!
//! let policy = Policy::default();
//! assert!(policy.is_denied_item("reqwest", &["Client"]));
//! assert!(policy.is_denied_item("ureq", &["Agent"]));
//! assert!(policy.is_denied_item("hyper", &["client", "conn", "http1", "SendRequest"]));
//! assert!(!policy.is_denied_item("hyper", &["server", "conn", "http1", "Builder"]));
//! assert!(!policy.is_allowed_site("my_worker", &["my_worker", "jobs"]));
//! assert!(policy.is_allowed_site("idem", &["idem", "executor"]));
//! assert_eq!(
//!     suggest_adapter(Some("https://api.stripe.com/v1/payment_intents")),
//!     Suggestion::Adapter { service: "Stripe", package: "idem-stripe" },
//! );
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;

pub use config::{Config, ConfigError, DenyEntry};

/// The repository's `dylint.toml`: its `[idem_lint]` table holds the default lists.
pub const DYLINT_TOML: &str = include_str!("../../../dylint.toml");

/// The default configuration ([`DYLINT_TOML`]'s `[idem_lint]` table).
///
/// # Panics
///
/// Never at run time for a released lint: the policy's own tests parse the same file.
pub fn default_config() -> Config {
    Config::parse(DYLINT_TOML).expect("the repository's dylint.toml parses")
}

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
    deny: Vec<DenyEntry>,
    allowed: Vec<AllowEntry>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::from_config(&default_config())
    }
}

impl Policy {
    /// A policy from a deny list and an allow-list (crate names may use `-` or `_`).
    pub fn with_deny(
        deny: impl IntoIterator<Item = DenyEntry>,
        allowed: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        Self {
            deny: deny.into_iter().collect(),
            allowed: allowed
                .into_iter()
                .filter_map(|e| AllowEntry::parse(e.as_ref()))
                .collect(),
        }
    }

    /// A policy from whole crates to deny (no feature or module limits) and an allow-list.
    pub fn new(
        denied_crates: impl IntoIterator<Item = impl AsRef<str>>,
        allowed: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        Self::with_deny(
            denied_crates
                .into_iter()
                .filter(|c| !c.as_ref().trim().is_empty())
                .map(|c| DenyEntry::crate_only(c.as_ref())),
            allowed,
        )
    }

    /// The policy of a parsed configuration.
    pub fn from_config(config: &Config) -> Self {
        Self::with_deny(config.deny.iter().cloned(), &config.allowed)
    }

    /// The deny list in effect.
    pub fn deny(&self) -> &[DenyEntry] {
        &self.deny
    }

    /// Whether crate `krate` (as rustc names it) is on the deny list, whatever its modules.
    pub fn is_denied_crate(&self, krate: &str) -> bool {
        let krate = crate_name(krate);
        self.deny.iter().any(|d| d.matches_crate(&krate))
    }

    /// Whether the item at `path` (module segments and item name, without the crate) inside
    /// crate `krate` is part of a denied client: its crate is on the list and, for an entry
    /// with `modules`, the item lies under one of them (`hyper::client`, not `hyper::server`).
    ///
    /// The lint passes the crate and path that *define* the item (after re-exports and
    /// trait-impl resolution), so `reqwest::Client::post`, `reqwest::get` and
    /// `<reqwest::Client as Default>::default` all arrive as reqwest items.
    pub fn is_denied_item(&self, krate: &str, path: &[&str]) -> bool {
        let krate = crate_name(krate);
        self.deny.iter().any(|d| d.covers(&krate, path))
    }

    /// Whether a callee defined in crate `callee_crate` is an external HTTP call, for entries
    /// that deny the whole crate. Kept for callers that only know the crate.
    pub fn is_external_http_call(&self, callee_crate: &str) -> bool {
        let krate = crate_name(callee_crate);
        self.deny
            .iter()
            .any(|d| d.matches_crate(&krate) && d.modules.is_empty())
    }

    /// Whether code in `site_crate` at `module_path` may use an HTTP client directly.
    ///
    /// `module_path` starts with the crate name, then the modules enclosing the call site, for
    /// example `["idem", "executor", "send"]`. Code inside a denied crate itself is always
    /// allowed (it is not worker code).
    pub fn is_allowed_site(&self, site_crate: &str, module_path: &[&str]) -> bool {
        let site_crate = crate_name(site_crate);
        if self.is_denied_crate(&site_crate) {
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

    /// The whole decision: flag a use of the item `callee_path` of `callee_crate` made from
    /// `site_crate` at `module_path`?
    pub fn should_flag_item(
        &self,
        callee_crate: &str,
        callee_path: &[&str],
        site_crate: &str,
        module_path: &[&str],
    ) -> bool {
        self.is_denied_item(callee_crate, callee_path)
            && !self.is_allowed_site(site_crate, module_path)
    }

    /// [`Policy::should_flag_item`] for whole-crate entries (the callee's path unknown).
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
    fn the_repository_dylint_toml_is_the_default() {
        let c = default_config();
        let libs: Vec<&str> = c.deny.iter().map(|d| d.lib.as_str()).collect();
        for lib in [
            "reqwest",
            "reqwest_middleware",
            "ureq",
            "hyper",
            "hyper_util",
            "isahc",
            "surf",
            "attohttpc",
            "curl",
            "awc",
            "stripe",
            "twilio",
            "octocrab",
        ] {
            assert!(
                libs.contains(&lib),
                "{lib} missing from the default deny list"
            );
        }
        assert_eq!(
            c.allowed,
            [
                "idem_stripe",
                "idem_twilio",
                "idem_gbp",
                "idem_meta",
                "idem::executor"
            ]
        );
        assert!(c.vetted.contains(&"wiremock".to_owned()));
        let hyper = c.deny.iter().find(|d| d.lib == "hyper").unwrap();
        assert_eq!(hyper.features, ["client"]);
        let stripe = c.deny.iter().find(|d| d.package == "async-stripe").unwrap();
        assert_eq!(stripe.lib, "stripe");
    }

    #[test]
    fn clients_and_sdks_are_denied_servers_are_not() {
        let p = Policy::default();
        assert!(p.is_denied_item("reqwest", &["async_impl", "client", "Client"]));
        assert!(p.is_denied_item("ureq", &["agent", "Agent"]));
        assert!(p.is_denied_item("isahc", &["client", "HttpClient"]));
        assert!(p.is_denied_item("stripe", &["client", "stripe", "Client"]));
        assert!(p.is_denied_item("stripe_billing", &["invoice", "Invoice"]));
        assert!(p.is_denied_item("octocrab", &["Octocrab"]));
        assert!(p.is_denied_item("twilio", &["Client"]));
        // hyper and hyper-util: the client modules only.
        assert!(p.is_denied_item("hyper", &["client", "conn", "http1", "SendRequest"]));
        assert!(p.is_denied_item("hyper", &["client", "conn", "http1", "handshake"]));
        assert!(!p.is_denied_item("hyper", &["server", "conn", "http1", "Builder"]));
        assert!(!p.is_denied_item("hyper", &["body", "incoming", "Incoming"]));
        assert!(p.is_denied_item("hyper_util", &["client", "legacy", "client", "Client"]));
        assert!(!p.is_denied_item("hyper_util", &["rt", "tokio", "TokioIo"]));
        assert!(!p.is_denied_item("hyper_util", &["server", "conn", "auto", "Builder"]));
        // Neighbours are not clients.
        assert!(!p.is_denied_item("http", &["request", "Request"]));
        assert!(!p.is_denied_item("tower", &["util", "oneshot", "Oneshot"]));
        assert!(!p.is_denied_item("url", &["Url"]));
        assert!(!p.is_denied_item("reqwestx", &["Client"]));
        // Whole-crate entries also answer the crate-only question; module-limited ones do not.
        assert!(p.is_external_http_call("ureq"));
        assert!(!p.is_external_http_call("hyper"));
    }

    #[test]
    fn config_parser_reads_the_subset_and_rejects_the_rest() {
        let c = Config::parse(
            "[other]\nx = \"y\"\n[idem_lint]\n# comment\nallowed = [\n  \"a\", # trailing\n  \"b::c\",\n]\n\
             deny = [ { package = \"my-client\", features = [\"net\"], modules = [\"my_client::net\"] }, { package = \"sdk-*\", lib = \"sdk_*\" } ]\n\
             http_crates = [\"extra\"]\n",
        )
        .unwrap();
        assert_eq!(c.allowed, ["a", "b::c"]);
        assert_eq!(c.deny.len(), 3);
        assert_eq!(c.deny[0].lib, "my_client");
        assert_eq!(
            c.deny[0].modules,
            [vec!["my_client".to_owned(), "net".to_owned()]]
        );
        let p = Policy::from_config(&c);
        assert!(p.is_denied_item("my_client", &["net", "Conn"]));
        assert!(!p.is_denied_item("my_client", &["fmt"]));
        assert!(p.is_denied_item("sdk_payments", &["Client"]));
        assert!(p.is_denied_item("extra", &["x"]));
        assert!(p.is_allowed_site("b", &["b", "c", "d"]));

        for bad in [
            "[idem_lint]\nunknown = []\n",
            "[idem_lint]\ndeny = [ { lib = \"x\" } ]\n",
            "[idem_lint]\ndeny = [ { package = \"x\", colour = \"red\" } ]\n",
            "[idem_lint]\ndeny = [ { package = \"x\", modules = [\"y::z\"] } ]\n",
            "[idem_lint]\nallowed = \"not a list\"\n",
            "[idem_lint]\nallowed = [ \"unterminated ]\n",
            "[idem_lint]\nallowed = [ 1 ]\n",
        ] {
            assert!(Config::parse(bad).is_err(), "accepted: {bad}");
        }
    }

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

        let nothing = Policy::new(["reqwest"], Vec::<String>::new());
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
