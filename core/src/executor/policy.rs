//! Provider policies: how safe a resend is, and how a provider's answers are
//! classified.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

/// How safe it is to send a provider the same write again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SafetyClass {
    /// The provider dedupes on our idempotency key for at least `retention`
    /// (Stripe: 24 h). Any transient failure may be resent with the same key
    /// while the whole retry budget still fits inside that window.
    NativeKey {
        /// The shortest time the provider is documented to keep a key.
        retention: Duration,
    },
    /// The write is an upsert or delete (for example a PUT of a review
    /// reply): sending it twice has the effect of sending it once. Any
    /// transient failure may be resent.
    NaturallyIdempotent,
    /// The provider has no key: only our ledger prevents a duplicate. A
    /// resend is allowed only when the request provably had no effect
    /// (never connected, or an explicit "not processed" answer). A timeout
    /// after sending ends `unknown`.
    LocalOnly,
}

impl SafetyClass {
    /// Whether an attempt that failed with `effect` may be resent within the
    /// same claim.
    pub fn may_retry(self, effect: Effect) -> bool {
        match self {
            Self::NativeKey { .. } | Self::NaturallyIdempotent => true,
            Self::LocalOnly => effect == Effect::None,
        }
    }

    /// Whether an operation whose outcome is `unknown` may be resent with the
    /// same key now, without reconciliation. `first_sent_at` is when it was
    /// first claimed; `budget` is how long one more claim may take.
    pub fn may_resend_unknown(
        self,
        first_sent_at: Option<SystemTime>,
        now: SystemTime,
        budget: Duration,
    ) -> bool {
        match self {
            Self::NativeKey { retention } => match first_sent_at {
                Some(first) => first + retention > now + budget,
                None => true,
            },
            Self::NaturallyIdempotent => true,
            Self::LocalOnly => false,
        }
    }

    /// A short name for logs and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NativeKey { .. } => "native key",
            Self::NaturallyIdempotent => "naturally idempotent",
            Self::LocalOnly => "local only",
        }
    }
}

/// Whether a failed attempt may have changed anything at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Provably nothing happened: the connection was never made, or the
    /// provider said the request was not processed.
    None,
    /// It may have taken effect (timeout or reset after sending, 5xx).
    Possible,
}

/// A classifier's reading of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The provider accepted the request.
    Success,
    /// The provider rejected the request definitively (for example a 400
    /// validation error); nothing happened and resending will not help.
    Rejected,
    /// A transient failure; whether it may be resent depends on the
    /// [`SafetyClass`] and the effect.
    Transient(Effect),
    /// It may have taken effect and must not be resent automatically, whatever
    /// the class (for example Stripe's `Stripe-Should-Retry: false` on a 5xx).
    Ambiguous,
}

impl Verdict {
    /// Whether the attempt may have changed something at the provider.
    pub fn effect_possible(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Transient(Effect::Possible) | Self::Ambiguous
        )
    }
}

/// Kinds of transport failure, as far as reqwest can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// No connection was made (refused, DNS, TLS handshake): the request
    /// never left.
    Connect,
    /// The request was sent (or partly sent) and no answer came in time.
    Timeout,
    /// The connection broke while sending or waiting (reset, closed).
    Connection,
    /// Headers arrived but the body broke off.
    Body,
    /// Anything else.
    Other,
}

/// A transport failure of one attempt. Its message carries no URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// The kind.
    pub kind: TransportKind,
    /// What happened, in words.
    pub message: String,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl TransportError {
    pub(crate) fn from_reqwest(e: &reqwest::Error) -> Self {
        let kind = if e.is_connect() {
            TransportKind::Connect
        } else if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_body() || e.is_decode() {
            TransportKind::Body
        } else if e.is_request() {
            TransportKind::Connection
        } else {
            TransportKind::Other
        };
        let mut message = kind_text(kind).to_owned();
        // The innermost cause says "connection reset" and the like; the URL is
        // stripped because it may carry credentials in a query string.
        let mut source = std::error::Error::source(e);
        let mut last = None;
        while let Some(s) = source {
            last = Some(s.to_string());
            source = s.source();
        }
        if let Some(last) = last {
            message.push_str(": ");
            message.push_str(&last);
        }
        Self { kind, message }
    }
}

fn kind_text(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Connect => "could not connect",
        TransportKind::Timeout => "timed out",
        TransportKind::Connection => "connection failed while sending or waiting",
        TransportKind::Body => "response body broke off",
        TransportKind::Other => "transport error",
    }
}

/// Reads a provider's answers. One per provider; the provider's own signal
/// (a retry header, an error flag) should win over status-code defaults.
pub trait Classifier: Send + Sync + fmt::Debug + 'static {
    /// Classifies a complete response.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict;

    /// Classifies a transport failure. The default: a connect failure had
    /// no effect; anything else may have.
    fn classify_transport(&self, error: &TransportError) -> Verdict {
        match error.kind {
            TransportKind::Connect => Verdict::Transient(Effect::None),
            _ => Verdict::Transient(Effect::Possible),
        }
    }

    /// How long the provider asked us to wait before the next attempt. The
    /// default reads `Retry-After` (seconds or an HTTP date). `now` is the
    /// executor's [`Clock`](crate::Clock) when the answer arrived: an HTTP
    /// date is measured from it, not from the system clock.
    fn retry_after(
        &self,
        _status: StatusCode,
        headers: &HeaderMap,
        _body: &[u8],
        now: SystemTime,
    ) -> Option<Duration> {
        parse_retry_after(headers, now)
    }
}

/// The default classifier: 2xx succeed; 408, 429 and 5xx are transient with
/// a possible effect; other statuses are rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusClassifier;

impl Classifier for StatusClassifier {
    fn classify(&self, status: StatusCode, _headers: &HeaderMap, _body: &[u8]) -> Verdict {
        default_status_verdict(status)
    }
}

/// The status-code reading [`StatusClassifier`] uses, for classifiers that
/// refine it.
pub fn default_status_verdict(status: StatusCode) -> Verdict {
    if status.is_success() {
        Verdict::Success
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Verdict::Transient(Effect::Possible)
    } else {
        Verdict::Rejected
    }
}

/// Parses a `Retry-After` header: delta-seconds, or an HTTP date (any of
/// its three forms) measured from `now`; a date already past waits zero.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = crate::time::parse_http_date(value)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Bounds on one claim's retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetrySettings {
    /// Attempts on the wire, the first included (at least 1).
    pub max_attempts: u32,
    /// Smallest backoff between attempts.
    pub min_backoff: Duration,
    /// Largest backoff between attempts.
    pub max_backoff: Duration,
    /// Time limit of one attempt.
    pub attempt_timeout: Duration,
    /// Time limit of all attempts and waits of one claim.
    pub total_timeout: Duration,
    /// The longest `Retry-After` honoured; a longer one ends the claim (the
    /// operation stays retryable later).
    pub max_retry_after: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetrySettings {
    /// Sets [`max_attempts`](Self::max_attempts) (clamped to at least 1).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff bounds.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn with_attempt_timeout(mut self, t: Duration) -> Self {
        self.attempt_timeout = t;
        self
    }

    /// Sets the total time budget of one claim.
    pub fn with_total_timeout(mut self, t: Duration) -> Self {
        self.total_timeout = t;
        self
    }

    /// Sets the longest `Retry-After` honoured.
    pub fn with_max_retry_after(mut self, t: Duration) -> Self {
        self.max_retry_after = t;
        self
    }

    /// How long one claim may take at most, waits included.
    pub fn claim_budget(&self) -> Duration {
        self.total_timeout + self.attempt_timeout
    }
}

/// Everything the executor needs to know about one provider. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Provider {
    pub(crate) name: Cow<'static, str>,
    pub(crate) class: SafetyClass,
    pub(crate) classifier: Arc<dyn Classifier>,
    pub(crate) retry: RetrySettings,
}

impl Provider {
    /// A provider with the default [`RetrySettings`].
    ///
    /// ```
    /// use idem::executor::{Provider, SafetyClass, StatusClassifier};
    /// let p = Provider::new("acme", SafetyClass::LocalOnly, StatusClassifier);
    /// assert_eq!(p.name(), "acme");
    /// ```
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        class: SafetyClass,
        classifier: impl Classifier,
    ) -> Self {
        Self {
            name: name.into(),
            class,
            classifier: Arc::new(classifier),
            retry: RetrySettings::default(),
        }
    }

    /// Replaces the retry settings.
    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// The provider's name, as stored in the ledger.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its safety class.
    pub fn class(&self) -> SafetyClass {
        self.class
    }

    /// Its retry settings.
    pub fn retry(&self) -> &RetrySettings {
        &self.retry
    }

    /// Its classifier.
    pub fn classifier(&self) -> &dyn Classifier {
        &*self.classifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_only_never_resends_a_possible_effect() {
        assert!(SafetyClass::LocalOnly.may_retry(Effect::None));
        assert!(!SafetyClass::LocalOnly.may_retry(Effect::Possible));
        assert!(SafetyClass::NaturallyIdempotent.may_retry(Effect::Possible));
    }

    #[test]
    fn native_key_window() {
        let class = SafetyClass::NativeKey {
            retention: Duration::from_secs(24 * 3600),
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let budget = Duration::from_secs(90);
        assert!(class.may_resend_unknown(Some(t0), t0 + Duration::from_secs(3600), budget));
        assert!(!class.may_resend_unknown(Some(t0), t0 + Duration::from_secs(24 * 3600), budget));
        // The whole next claim must fit inside the window.
        assert!(!class.may_resend_unknown(
            Some(t0),
            t0 + Duration::from_secs(24 * 3600 - 60),
            budget
        ));
        assert!(!SafetyClass::LocalOnly.may_resend_unknown(Some(t0), t0, budget));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        let date = crate::time::format_http_date(now + Duration::from_secs(30));
        h.insert(http::header::RETRY_AFTER, date.parse().unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h, now), None);
    }

    #[test]
    fn default_statuses() {
        assert_eq!(
            default_status_verdict(StatusCode::CREATED),
            Verdict::Success
        );
        assert_eq!(
            default_status_verdict(StatusCode::BAD_REQUEST),
            Verdict::Rejected
        );
        assert_eq!(
            default_status_verdict(StatusCode::SERVICE_UNAVAILABLE),
            Verdict::Transient(Effect::Possible)
        );
    }
}
