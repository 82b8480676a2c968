//! The client skeleton every adapter shares: the executor, the provider
//! policy for writes, the base URL, and the one keyed write path.

use std::fmt;

use http::Method;

use super::{AdapterFailure, CallError, Provider, WireError, parse_base_url};
use crate::executor::Url;
use crate::executor::{self, Begun, Claim, Delivered, Executor, OutboundRequest, RetrySettings};
use crate::key::IdempotencyKey;

/// What an adapter client holds whatever the provider: the executor (and
/// through it the ledger), the executor's provider policy for writes, and
/// the base URL every path is joined to. Cheap to clone.
///
/// ```
/// use idem::adapter::{AdapterCore, Provider};
/// # use idem::executor::{RetrySettings, SafetyClass, StatusClassifier};
/// # #[derive(Debug, thiserror::Error)] #[error("wire")] struct W;
/// # impl idem::adapter::WireError for W {
/// #     fn parse(_: http::StatusCode, _: Option<&http::HeaderMap>, _: &[u8]) -> Self { W }
/// # }
/// struct Acme;
/// impl Provider for Acme {
///     const NAME: &'static str = "acme";
///     type WireError = W;
///     type Classifier = StatusClassifier;
///     fn safety_class() -> SafetyClass { SafetyClass::LocalOnly }
///     fn classifier() -> StatusClassifier { StatusClassifier }
///     fn default_retry() -> RetrySettings { RetrySettings::default() }
/// }
/// # let executor = idem::Executor::builder(idem::ledger::MemoryStore::new()).build();
/// let core = AdapterCore::new::<Acme>(executor, "https://api.acme.test/v2", Acme::default_retry())?;
/// assert_eq!(core.url(&["orders", "1"], &[]).as_str(), "https://api.acme.test/v2/orders/1");
/// assert!(core.raw_url("https://elsewhere.test/x").is_err(), "a raw path never leaves the base");
/// # Ok::<(), String>(())
/// ```
#[derive(Clone)]
pub struct AdapterCore {
    executor: Executor,
    provider: executor::Provider,
    base: Url,
    raw_hosts: &'static [&'static str],
}

impl fmt::Debug for AdapterCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterCore")
            .field("provider", &self.provider.name())
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// The answer to a keyed raw write.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Answer<T> {
    /// The decoded body (`null` for an empty one).
    pub value: T,
    /// The key it was written under.
    pub key: IdempotencyKey,
    /// The provider's status.
    pub status: http::StatusCode,
    /// From the wire now, or from the ledger (no request was made).
    pub source: executor::Source,
}

impl<T> Answer<T> {
    /// An answer (for adapters whose write path is their own).
    pub fn new(
        value: T,
        key: IdempotencyKey,
        status: http::StatusCode,
        source: executor::Source,
    ) -> Self {
        Self {
            value,
            key,
            status,
            source,
        }
    }

    /// Whether the answer came from the ledger: no request was made now.
    pub fn from_ledger(&self) -> bool {
        self.source == executor::Source::Ledger
    }
}

/// What a write records before its first send, so that reconciliation can
/// find the effect again from the key alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Facts<'a> {
    /// Nothing to record.
    None,
    /// Must be recorded: if the ledger refuses it, nothing is sent.
    Required(&'a str),
    /// An aid only: if it cannot be recorded the send goes on, and such a
    /// record reconciles from the key alone.
    Hint(&'a str),
}

impl AdapterCore {
    /// The skeleton of a client of `P`: `base_url` must be an absolute
    /// `http(s)` URL (a trailing `/` is added to its path and its query
    /// dropped, so paths join below it), writes use `P`'s policy with
    /// `retry`.
    ///
    /// # Errors
    ///
    /// A sentence saying what is wrong with the base URL (the URL itself is
    /// not repeated: it may carry credentials).
    pub fn new<P: Provider>(
        executor: Executor,
        base_url: &str,
        retry: RetrySettings,
    ) -> Result<Self, String> {
        let mut base = parse_base_url(base_url)?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        Ok(Self {
            executor,
            provider: P::executor_provider(retry),
            base,
            raw_hosts: &[],
        })
    }

    /// Lets raw writes also name an absolute `https://` URL on exactly one
    /// of `hosts` (a provider whose API spans several hosts, as Google's
    /// Business Profile APIs do). Nothing else: no other scheme, port, user
    /// information or host, and no suffix match.
    #[must_use]
    pub fn with_raw_hosts(mut self, hosts: &'static [&'static str]) -> Self {
        self.raw_hosts = hosts;
        self
    }

    /// The executor (and through it the ledger store).
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The executor's provider policy for writes.
    pub fn provider(&self) -> &executor::Provider {
        &self.provider
    }

    /// The base URL (its path ends in `/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base with `segments` appended (each percent-encoded as one path
    /// segment) and `query` pairs added.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        super::join_url(&self.base, segments, query)
    }

    /// The URL of a caller's raw `path` (`"v1/transfers"` or
    /// `"/v1/transfers"`, with an optional `?query`), always below the base
    /// URL.
    ///
    /// # Errors
    ///
    /// A path that would leave the base (an absolute URL, `//host`, `..`
    /// segments, a `\`), a fragment, or control characters.
    pub fn raw_url(&self, path: &str) -> Result<Url, String> {
        if let Some(url) = self.allowed_absolute(path)? {
            return Ok(url);
        }
        let rel = path.strip_prefix('/').unwrap_or(path);
        let (route, query) = rel.split_once('?').unwrap_or((rel, ""));
        let bad = rel.is_empty()
            || rel.starts_with('/')
            || rel.contains('#')
            || rel.contains('\\')
            || rel.chars().any(|c| c.is_control() || c == ' ')
            || route.contains(':')
            || route
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".." || s.eq_ignore_ascii_case("%2e%2e"));
        if bad {
            return Err("a raw path must be a relative path below the base URL \
                 (segments without `..`, `:`, `\\`, spaces or a fragment)"
                .to_owned());
        }
        let mut url = self
            .base
            .join(route)
            .map_err(|e| format!("cannot join the raw path to the base URL: {e}"))?;
        if url.origin() != self.base.origin() || !url.path().starts_with(self.base.path()) {
            return Err("a raw path must stay below the base URL".to_owned());
        }
        if !query.is_empty() {
            url.set_query(Some(query));
        }
        Ok(url)
    }

    /// An absolute raw URL on one of [`with_raw_hosts`](Self::with_raw_hosts)'s
    /// hosts: `Ok(None)` when `path` is not absolute.
    fn allowed_absolute(&self, path: &str) -> Result<Option<Url>, String> {
        if !path.starts_with("https://") || self.raw_hosts.is_empty() {
            return Ok(None);
        }
        let refuse =
            || "an absolute raw URL must be https on one of the provider's own hosts".to_owned();
        let url: Url = path.parse().map_err(|_| refuse())?;
        let host_ok = url.host_str().is_some_and(|h| self.raw_hosts.contains(&h));
        let clean = url.username().is_empty()
            && url.password().is_none()
            && url.port().is_none()
            && url.fragment().is_none()
            && !path
                .split(['/', '?'])
                .any(|s| s == ".." || s == "." || s.to_ascii_lowercase().contains("%2e"))
            && !path.contains('\\');
        if host_ok && clean {
            Ok(Some(url))
        } else {
            Err(refuse())
        }
    }

    /// A raw request to `path` below the base URL (see [`raw_url`](Self::raw_url)).
    ///
    /// # Errors
    ///
    /// [`CallError::InvalidRequest`] for a path that would leave the base.
    pub fn raw_request<E, A>(
        &self,
        key: &IdempotencyKey,
        method: Method,
        path: &str,
    ) -> Result<OutboundRequest, CallError<E, A>> {
        let url = self
            .raw_url(path)
            .map_err(|reason| CallError::invalid(key, reason))?;
        Ok(OutboundRequest::new(method, url))
    }

    /// The operation name a raw write is recorded under:
    /// `raw:<METHOD> <path without query>`.
    pub fn raw_operation(method: &Method, path: &str) -> String {
        let route = path.split('?').next().unwrap_or(path);
        format!("raw:{method} /{}", route.trim_start_matches('/'))
    }

    /// A keyed raw write: `request` (from [`raw_request`](Self::raw_request),
    /// with its body and the adapter's authorization) goes through
    /// [`write_with`](Self::write_with) under `raw:<METHOD> <path>`, and the
    /// answer is decoded into `T` (`serde_json::Value` for any JSON).
    ///
    /// # Errors
    ///
    /// As [`write_with`](Self::write_with); an answer that is not a `T` is
    /// [`CallError::Undecodable`].
    pub async fn raw_write<T: serde::de::DeserializeOwned, E: WireError, A: AdapterFailure<E>>(
        &self,
        provider: &executor::Provider,
        key: &IdempotencyKey,
        request: OutboundRequest,
    ) -> Result<Answer<T>, CallError<E, A>> {
        let route = request
            .url()
            .path()
            .strip_prefix(self.base.path())
            .unwrap_or(request.url().path())
            .to_owned();
        let operation = Self::raw_operation(request.method(), &route);
        let done = self
            .write_with(provider, key, &operation, request, Facts::None)
            .await?;
        Ok(Answer {
            value: decode_json(key, &done.body)?,
            key: done.key,
            status: done.status,
            source: done.source,
        })
    }

    /// One keyed write with the client's write policy: see
    /// [`write_with`](Self::write_with).
    ///
    /// # Errors
    ///
    /// As [`write_with`](Self::write_with).
    pub async fn write<E: WireError, A: AdapterFailure<E>>(
        &self,
        key: &IdempotencyKey,
        operation: &str,
        request: OutboundRequest,
        facts: Facts<'_>,
    ) -> Result<Delivered, CallError<E, A>> {
        self.write_with(&self.provider, key, operation, request, facts)
            .await
    }

    /// One keyed write, the only path an adapter's write takes: records the
    /// operation (or answers from the ledger with no request), records the
    /// `facts`, sends with `provider`'s retries, and records the outcome.
    ///
    /// # Errors
    ///
    /// Every [`crate::ExecError`] mapped once by [`CallError::from_exec`],
    /// with the provider's error answer parsed from the wire when there
    /// was one (a rejection, or a `NotSent` answer such as a 429).
    pub async fn write_with<E: WireError, A: AdapterFailure<E>>(
        &self,
        provider: &executor::Provider,
        key: &IdempotencyKey,
        operation: &str,
        request: OutboundRequest,
        facts: Facts<'_>,
    ) -> Result<Delivered, CallError<E, A>> {
        let mut claim = match self.begin(provider, key, operation, &request).await? {
            Ok(done) => return Ok(done),
            Err(claim) => claim,
        };
        record_facts(&mut claim, facts).await?;
        let outcome = claim.send(request).await;
        finish(claim, outcome).await
    }

    /// Records and claims the operation: `Ok(Ok(answer))` when the ledger
    /// already holds the answer, `Ok(Err(claim))` when this worker may send.
    ///
    /// # Errors
    ///
    /// The executor's refusal, mapped.
    pub async fn begin<E: WireError, A>(
        &self,
        provider: &executor::Provider,
        key: &IdempotencyKey,
        operation: &str,
        request: &OutboundRequest,
    ) -> Result<Result<Delivered, Claim>, CallError<E, A>> {
        if let Some(reason) = &request.error {
            return Err(CallError::invalid(key, reason));
        }
        match self
            .executor
            .begin(provider, key, operation, request.fingerprint())
            .await?
        {
            Begun::Done(done) => Ok(Ok(done)),
            Begun::Claimed(claim) => Ok(Err(claim)),
        }
    }
}

/// Records `facts` on the claim unless it already holds them.
///
/// # Errors
///
/// The ledger's refusal of [`Facts::Required`] facts.
pub async fn record_facts<E: WireError, A>(
    claim: &mut Claim,
    facts: Facts<'_>,
) -> Result<(), CallError<E, A>> {
    let (value, required) = match facts {
        Facts::None => return Ok(()),
        Facts::Required(v) => (v, true),
        Facts::Hint(v) => (v, false),
    };
    if claim.operation().checkpoint.as_deref() == Some(value) {
        return Ok(());
    }
    match claim.checkpoint(value).await {
        Ok(()) => Ok(()),
        Err(e) if required => Err(e.into()),
        Err(e) => {
            tracing::warn!(key = %claim.key(), error = %e,
                "the lookup facts could not be recorded; sending anyway");
            Ok(())
        }
    }
}

/// Records a send's outcome and maps a failure, parsing the provider's
/// error answer from the wire once (its headers included).
///
/// # Errors
///
/// As [`CallError::from_exec`], with a `NotSent` carrying the provider's
/// answer when one came.
pub async fn finish<E: WireError, A: AdapterFailure<E>>(
    claim: Claim,
    outcome: executor::SendOutcome,
) -> Result<Delivered, CallError<E, A>> {
    let answer = outcome
        .response
        .as_ref()
        .filter(|(status, _, _)| !status.is_success())
        .map(|(status, headers, body)| (*status, headers.clone(), body.clone()));
    let key = claim.key().clone();
    claim.finish(outcome).await.map_err(|e| {
        let headers = answer.as_ref().map(|(_, h, _)| h);
        let mut err = CallError::from_exec(e, headers);
        if let (CallError::NotSent { error, .. }, Some((status, headers, body))) =
            (&mut err, &answer)
        {
            *error = Some(Box::new(E::parse(*status, Some(headers), body)));
        }
        tracing::warn!(key = %key, error = %err, "write not delivered");
        err
    })
}

/// Decodes a provider's JSON answer for `key` into `T`; an empty (or
/// all-white-space) body reads as `null`.
///
/// # Errors
///
/// [`CallError::Undecodable`], with serde's message.
pub fn decode_json<T: serde::de::DeserializeOwned, E, A>(
    key: &IdempotencyKey,
    body: &[u8],
) -> Result<T, CallError<E, A>> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| CallError::Undecodable {
        key: key.clone(),
        reason: e.to_string(),
    })
}

/// Parameters a typed params struct lacks, sent as they are: the escape
/// hatch that spares a worker a direct HTTP call. They are part of the
/// request, so they are fingerprinted with it, and a name the adapter
/// itself sends is refused, never overridden.
///
/// ```
/// use idem::adapter::Extra;
///
/// let mut extra = Extra::default();
/// extra.push("statement_descriptor_suffix", "ORDER 42");
/// extra.push("application_fee_amount", 120);
/// let mut form = vec![("amount".to_owned(), "1200".to_owned())];
/// extra.append_to(&mut form)?;
/// assert_eq!(form[2], ("application_fee_amount".to_owned(), "120".to_owned()));
///
/// extra.push("amount", "1");
/// assert!(extra.append_to(&mut form.clone()).is_err(), "never overrides");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra(Vec<(String, serde_json::Value)>);

impl Extra {
    /// Adds `name=value` (a string, number, bool, or for JSON bodies any
    /// JSON value).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.0.push((name.into(), value.into()));
    }

    /// The pairs, in the order they were added.
    pub fn pairs(&self) -> &[(String, serde_json::Value)] {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn check(&self, taken: impl Fn(&str) -> bool) -> Result<(), String> {
        for (name, _) in &self.0 {
            if name.trim().is_empty() {
                return Err("an extra parameter has an empty name".to_owned());
            }
            if taken(name) {
                return Err(format!(
                    "extra parameter `{name}` is already set by the typed parameters or the adapter"
                ));
            }
        }
        Ok(())
    }

    /// Appends the pairs to a form after checking them (a string value as
    /// it is, any other as its JSON text: `1200`, `true`).
    ///
    /// # Errors
    ///
    /// An empty name, or a name `form` already holds (the typed params or
    /// the adapter set it; repeat a field through the typed API instead).
    pub fn append_to(&self, form: &mut Vec<(String, String)>) -> Result<(), String> {
        self.check(|name| form.iter().any(|(n, _)| n == name))?;
        form.extend(self.0.iter().map(|(n, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (n.clone(), text)
        }));
        Ok(())
    }

    /// Adds the pairs as top-level fields of a JSON object body.
    ///
    /// # Errors
    ///
    /// `body` is not an object, a name is empty, or the object already has
    /// the field.
    pub fn merge_into_json(&self, body: &mut serde_json::Value) -> Result<(), String> {
        let Some(obj) = body.as_object_mut() else {
            return Err("extra fields need a JSON object body".to_owned());
        };
        self.check(|name| obj.contains_key(name))?;
        obj.extend(self.0.iter().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{SafetyClass, StatusClassifier};

    #[derive(Debug, thiserror::Error)]
    #[error("wire")]
    struct W;
    impl WireError for W {
        fn parse(_: http::StatusCode, _: Option<&http::HeaderMap>, _: &[u8]) -> Self {
            W
        }
    }
    struct P;
    impl Provider for P {
        const NAME: &'static str = "p";
        type WireError = W;
        type Classifier = StatusClassifier;
        fn safety_class() -> SafetyClass {
            SafetyClass::LocalOnly
        }
        fn classifier() -> StatusClassifier {
            StatusClassifier
        }
        fn default_retry() -> RetrySettings {
            RetrySettings::default()
        }
    }

    fn core(base: &str) -> AdapterCore {
        let executor = Executor::builder(crate::ledger::MemoryStore::new()).build();
        AdapterCore::new::<P>(executor, base, RetrySettings::default()).unwrap()
    }

    #[test]
    fn raw_paths_stay_below_the_base() {
        let c = core("https://api.example.test/v1?x=1");
        assert_eq!(c.base().as_str(), "https://api.example.test/v1/");
        for ok in [
            "transfers",
            "/transfers",
            "transfers/tr_1/reversals",
            "a?b=1&c=2",
        ] {
            let url = c.raw_url(ok).unwrap();
            assert!(
                url.as_str().starts_with("https://api.example.test/v1/"),
                "{ok}: {url}"
            );
        }
        assert_eq!(
            c.raw_url("a?b=1").unwrap().as_str(),
            "https://api.example.test/v1/a?b=1"
        );
        for bad in [
            "",
            "https://evil.test/x",
            "//evil.test/x",
            "///x",
            "../admin",
            "a/../../admin",
            "a/%2e%2e/b",
            "a/./b",
            "a//b",
            "a\\b",
            "a#frag",
            "a b",
            "a\nb",
            "mailto:x",
            "evil.test:443/x",
        ] {
            assert!(c.raw_url(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn absolute_raw_urls_only_on_the_providers_own_hosts() {
        let c = core("http://127.0.0.1:9/")
            .with_raw_hosts(&["api.example.test", "uploads.example.test"]);
        let ok = c
            .raw_url("https://uploads.example.test/v1/files?x=1")
            .unwrap();
        assert_eq!(ok.as_str(), "https://uploads.example.test/v1/files?x=1");
        for bad in [
            "https://evil.test/v1/files",
            "https://uploads.example.test.evil.test/v1",
            "https://evil.test#@uploads.example.test/",
            "https://user:pw@uploads.example.test/v1",
            "https://uploads.example.test:8443/v1",
            "http://uploads.example.test/v1",
            "https://uploads.example.test/a/%2e%2e/b",
        ] {
            assert!(c.raw_url(bad).is_err(), "{bad} must be refused");
        }
        // Without hosts, an absolute URL is refused as before.
        assert!(
            core("https://api.example.test/")
                .raw_url("https://api.example.test/x")
                .is_err()
        );
    }

    #[test]
    fn raw_operations_name_method_and_route() {
        assert_eq!(
            AdapterCore::raw_operation(&Method::POST, "/v1/transfers?expand[]=x"),
            "raw:POST /v1/transfers"
        );
        assert_eq!(
            AdapterCore::raw_operation(&Method::PATCH, "v4/x"),
            "raw:PATCH /v4/x"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        let executor = Executor::builder(crate::ledger::MemoryStore::new()).build();
        assert!(
            AdapterCore::new::<P>(executor.clone(), "ftp://x", RetrySettings::default()).is_err()
        );
        assert!(AdapterCore::new::<P>(executor, "not a url", RetrySettings::default()).is_err());
    }
}
