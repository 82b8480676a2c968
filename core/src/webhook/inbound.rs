//! Inbound provider events: verify, deduplicate, settle the ledger, run the
//! handler in one transaction with the "processed" mark.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt as _;
use sha2::{Digest, Sha256};

use super::signature::{self, SignatureError, WebhookSecret};
use super::store::{EventClaim, WebhookStore};
use crate::adapter::{Proven, settle_by_proof};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::inbound::BoxError;
use crate::key::IdempotencyKey;
use crate::ledger::{LedgerStore, Operation};

/// The response header set on a duplicate delivery's answer.
pub const DUPLICATE_HEADER: &str = "webhook-duplicate";

/// The query parameter of a Twilio status-callback URL that carries the idem
/// key (as `idem_twilio` writes it).
pub const TWILIO_KEY_PARAM: &str = "idemkey";

/// How an endpoint's deliveries are authenticated.
#[derive(Clone)]
pub struct Verifier {
    kind: VerifierKind,
}

#[derive(Clone)]
enum VerifierKind {
    Stripe(Vec<String>),
    Twilio {
        auth_token: String,
        public_origin: String,
    },
    Meta(String),
    Standard(Vec<WebhookSecret>),
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets are never shown.
        f.debug_tuple("Verifier").field(&self.provider()).finish()
    }
}

impl Verifier {
    /// Stripe: `Stripe-Signature` checked with the endpoint secrets
    /// (`whsec_…`; give two while rolling a secret).
    pub fn stripe<S: Into<String>>(secrets: impl IntoIterator<Item = S>) -> Self {
        Self {
            kind: VerifierKind::Stripe(secrets.into_iter().map(Into::into).collect()),
        }
    }

    /// Twilio: `X-Twilio-Signature` checked with the account's auth token.
    /// `public_origin` is the scheme, host and port Twilio called (for
    /// example `https://hooks.example.com`); the request's path and query
    /// are appended to it, because behind a proxy the local URI has another
    /// host.
    pub fn twilio(auth_token: impl Into<String>, public_origin: impl Into<String>) -> Self {
        Self {
            kind: VerifierKind::Twilio {
                auth_token: auth_token.into(),
                public_origin: public_origin.into().trim_end_matches('/').to_owned(),
            },
        }
    }

    /// Meta: `X-Hub-Signature-256` checked with the app secret.
    pub fn meta(app_secret: impl Into<String>) -> Self {
        Self {
            kind: VerifierKind::Meta(app_secret.into()),
        }
    }

    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` checked with any of `secrets`.
    pub fn standard(secrets: impl IntoIterator<Item = WebhookSecret>) -> Self {
        Self {
            kind: VerifierKind::Standard(secrets.into_iter().collect()),
        }
    }

    /// The provider name recorded with events: `stripe`, `twilio`, `meta`
    /// or `standard`.
    pub fn provider(&self) -> &'static str {
        match self.kind {
            VerifierKind::Stripe(_) => "stripe",
            VerifierKind::Twilio { .. } => "twilio",
            VerifierKind::Meta(_) => "meta",
            VerifierKind::Standard(_) => "standard",
        }
    }
}

/// One receiving endpoint's settings. Build with [`InboundWebhook::builder`].
#[derive(Clone)]
pub struct InboundWebhook {
    name: String,
    verifier: Verifier,
    tolerance: Duration,
    replay_window: Duration,
    lease: Duration,
    max_body: usize,
    settle_ledger: bool,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for InboundWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundWebhook")
            .field("name", &self.name)
            .field("verifier", &self.verifier)
            .field("tolerance", &self.tolerance)
            .field("replay_window", &self.replay_window)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Builds an [`InboundWebhook`].
#[derive(Debug)]
pub struct InboundWebhookBuilder {
    inner: InboundWebhook,
}

/// Why an endpoint's settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookConfigError {
    /// The endpoint name is empty.
    #[error("the endpoint name is empty")]
    EmptyName,
    /// No secret is configured (deliveries could never be verified).
    #[error("no signing secret is configured for endpoint {0:?}")]
    NoSecret(String),
    /// A duration is out of range.
    #[error("{what} must be between {min:?} and {max:?}, not {got:?}")]
    OutOfRange {
        /// The setting.
        what: &'static str,
        /// The value given.
        got: Duration,
        /// Lowest allowed.
        min: Duration,
        /// Highest allowed.
        max: Duration,
    },
}

impl InboundWebhook {
    /// Settings for the endpoint `name` (the deduplication scope: event ids
    /// are unique per endpoint), verified by `verifier`. Defaults: 5 min
    /// signature tolerance, 72 h replay window (Stripe retries for up to
    /// three days), 5 min handler lease, 1 MiB body limit, ledger settlement
    /// on.
    pub fn builder(name: impl Into<String>, verifier: Verifier) -> InboundWebhookBuilder {
        InboundWebhookBuilder {
            inner: Self {
                name: name.into(),
                verifier,
                tolerance: Duration::from_secs(300),
                replay_window: Duration::from_secs(72 * 3600),
                lease: Duration::from_secs(300),
                max_body: 1024 * 1024,
                settle_ledger: true,
                clock: Arc::new(SystemClock),
            },
        }
    }

    /// The endpoint name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// How far a signed timestamp may be from now.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// How long processed event ids are kept for deduplication (see
    /// [`WebhookStore::purge_events`]).
    pub fn replay_window(&self) -> Duration {
        self.replay_window
    }

    pub(crate) fn max_body(&self) -> usize {
        self.max_body
    }

    /// The time before which processed event records may be purged at `now`.
    pub fn purge_before(&self, now: SystemTime) -> SystemTime {
        now.checked_sub(self.replay_window)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl InboundWebhookBuilder {
    /// Signature timestamp tolerance (Stripe, Standard Webhooks), 1 s to 1 h.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.inner.tolerance = tolerance;
        self
    }

    /// How long processed event ids are kept (1 min to 30 days). It must
    /// cover the provider's whole retry period, or a late redelivery runs
    /// the handler again.
    pub fn replay_window(mut self, window: Duration) -> Self {
        self.inner.replay_window = window;
        self
    }

    /// How long one handler run holds its event (1 s to 1 h). A delivery
    /// that arrives after the lease ran out (the first run crashed) runs
    /// the handler again; only one run can commit.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.inner.lease = lease;
        self
    }

    /// The largest body accepted (default 1 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.inner.max_body = bytes;
        self
    }

    /// Whether events that name an idem key settle `unknown` ledger rows
    /// (default on).
    pub fn settle_ledger(mut self, on: bool) -> Self {
        self.inner.settle_ledger = on;
        self
    }

    /// The clock (tests use [`ManualClock`](crate::ManualClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.inner.clock = clock;
        self
    }

    /// The settings.
    ///
    /// # Errors
    ///
    /// [`WebhookConfigError`] for an empty name, a missing secret or a
    /// duration out of range.
    pub fn build(self) -> Result<InboundWebhook, WebhookConfigError> {
        let c = self.inner;
        if c.name.is_empty() {
            return Err(WebhookConfigError::EmptyName);
        }
        let no_secret = match &c.verifier.kind {
            VerifierKind::Stripe(s) => s.is_empty() || s.iter().any(String::is_empty),
            VerifierKind::Twilio { auth_token, .. } => auth_token.is_empty(),
            VerifierKind::Meta(s) => s.is_empty(),
            VerifierKind::Standard(s) => s.is_empty(),
        };
        if no_secret {
            return Err(WebhookConfigError::NoSecret(c.name));
        }
        let range = |what, got: Duration, min: u64, max: u64| {
            let (min, max) = (Duration::from_secs(min), Duration::from_secs(max));
            if got < min || got > max {
                Err(WebhookConfigError::OutOfRange {
                    what,
                    got,
                    min,
                    max,
                })
            } else {
                Ok(())
            }
        };
        range("tolerance", c.tolerance, 1, 3600)?;
        range("replay window", c.replay_window, 60, 30 * 86_400)?;
        range("lease", c.lease, 1, 3600)?;
        Ok(c)
    }
}

/// A verified event, as the handler sees it.
#[derive(Clone)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The receiving endpoint.
    pub endpoint: String,
    /// `stripe`, `twilio`, `meta` or `standard`.
    pub provider: &'static str,
    /// The provider's event id (the deduplication key). Stripe: the event's
    /// `id`; Standard Webhooks: `webhook-id`; Twilio: `<MessageSid>:<status>`
    /// (otherwise a hash of the signed URL and parameters); Meta: the hex
    /// SHA-256 of the body (Meta sends no event id).
    pub id: String,
    /// The event type when the provider names one (Stripe `type`, Standard
    /// Webhooks `type`, Twilio `MessageStatus`, Meta `object`).
    pub kind: Option<String>,
    /// The raw body, exactly as signed.
    pub body: Bytes,
    /// What the event did to the ledger.
    pub ledger: Vec<LedgerLink>,
}

impl fmt::Debug for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEvent")
            .field("endpoint", &self.endpoint)
            .field("provider", &self.provider)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("body_len", &self.body.len())
            .field("ledger", &self.ledger)
            .finish()
    }
}

impl WebhookEvent {
    /// The body as JSON (Stripe, Meta, Standard Webhooks).
    ///
    /// # Errors
    ///
    /// When the body is not the expected JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The form parameters (Twilio).
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

/// What an event did to one ledger row it names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerLink {
    /// The key named by the event.
    pub key: IdempotencyKey,
    /// The provider's object id (`pi_…`, `SM…`).
    pub provider_id: Option<String>,
    /// What happened.
    pub outcome: LinkOutcome,
}

/// How an event's ledger link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkOutcome {
    /// The `unknown` row is now `succeeded`; its note names the event.
    Settled,
    /// The row had already succeeded; it was not touched.
    AlreadySucceeded,
    /// Nothing was changed, for this reason (no such row, another
    /// provider's row, the row's state, or an event that proves nothing).
    Untouched(String),
}

/// Why the handler failed. Its text is logged and stored as the event's
/// `last_error`: keep secrets and bodies out of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    /// A handler error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The handler of [`handle_webhook`]: it gets the open transaction and the
/// verified event. Its writes through the transaction commit together with
/// the "processed" mark, or not at all.
pub type EventHandler<Db> = Arc<
    dyn for<'t> Fn(
            &'t mut sqlx::Transaction<'static, Db>,
            &'t WebhookEvent,
        ) -> BoxFuture<'t, Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// Wraps a closure as an [`EventHandler`] (this fixes the closure's
/// higher-ranked signature, which `Arc::new` alone may not infer).
pub fn event_handler<Db, F>(f: F) -> EventHandler<Db>
where
    Db: sqlx::Database,
    F: for<'t> Fn(
            &'t mut sqlx::Transaction<'static, Db>,
            &'t WebhookEvent,
        ) -> BoxFuture<'t, Result<(), HandlerError>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

/// How one delivery ended (also the `outcome` of the tracing event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Processed,
    Duplicate,
    Busy(Option<Duration>),
    HandlerFailed,
    StoreUnavailable,
    BadSignature,
    BadRequest,
    TooLarge,
}

impl Answer {
    fn status(self) -> StatusCode {
        match self {
            Self::Processed | Self::Duplicate => StatusCode::OK,
            Self::Busy(_) | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::HandlerFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadSignature | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Duplicate => "duplicate",
            Self::Busy(_) => "in_flight",
            Self::HandlerFailed => "handler_failed",
            Self::StoreUnavailable => "store_unavailable",
            Self::BadSignature => "bad_signature",
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
        }
    }

    pub(crate) fn response(self) -> Response<Bytes> {
        let body = format!("{{\"status\":\"{}\"}}", self.word());
        let mut r = Response::new(Bytes::from(body));
        *r.status_mut() = self.status();
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            Self::Duplicate => {
                r.headers_mut()
                    .insert(DUPLICATE_HEADER, HeaderValue::from_static("true"));
            }
            Self::Busy(wait) => {
                let secs = wait.map_or(1, |w| w.as_secs().clamp(1, 3600));
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            Self::StoreUnavailable => {
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1u64));
            }
            _ => {}
        }
        r
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .ok_or(SignatureError::MissingHeader(name))?
        .to_str()
        .map_err(|_| SignatureError::Malformed(name))
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// A key candidate from an event, with the rows it may settle.
struct Candidate {
    key: IdempotencyKey,
    provider: &'static str,
    operations: Option<&'static [&'static str]>,
    provider_id: Option<String>,
    object: Bytes,
}

/// Verified and parsed, before any store access.
struct Parsed {
    event: WebhookEvent,
    candidates: Vec<Candidate>,
}

/// Verifies the signature and reads the event id. Touches no store.
fn verify_and_parse(
    config: &InboundWebhook,
    parts: &Parts,
    body: Bytes,
    now: SystemTime,
) -> Result<Parsed, Answer> {
    let bad = |e: SignatureError| {
        tracing::warn!(target: "idem::webhook", endpoint = %config.name, provider = config.verifier.provider(), reason = %e, "webhook signature refused");
        Answer::BadSignature
    };
    let malformed = |what: &str| {
        tracing::warn!(target: "idem::webhook", endpoint = %config.name, provider = config.verifier.provider(), reason = what, "webhook refused");
        Answer::BadRequest
    };
    let mut candidates = Vec::new();
    let (id, kind) = match &config.verifier.kind {
        VerifierKind::Stripe(secrets) => {
            let sig = header(&parts.headers, "stripe-signature").map_err(bad)?;
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            signature::stripe_verify(&secrets, sig, &body, now, config.tolerance).map_err(bad)?;
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| malformed("the body is not JSON"))?;
            let id = v["id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| malformed("the event has no id"))?
                .to_owned();
            let kind = v["type"].as_str().map(str::to_owned);
            if let Some(k) = kind.as_deref() {
                stripe_candidates(k, &v, &mut candidates);
            }
            (id, kind)
        }
        VerifierKind::Standard(secrets) => {
            let msg_id = header(&parts.headers, "webhook-id").map_err(bad)?;
            let ts = header(&parts.headers, "webhook-timestamp").map_err(bad)?;
            let sig = header(&parts.headers, "webhook-signature").map_err(bad)?;
            signature::standard_verify(secrets, msg_id, ts, sig, &body, now, config.tolerance)
                .map_err(bad)?;
            let kind = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned));
            (msg_id.to_owned(), kind)
        }
        VerifierKind::Meta(secret) => {
            let sig = header(&parts.headers, "x-hub-signature-256").map_err(bad)?;
            signature::meta_verify(secret, sig, &body).map_err(bad)?;
            let kind = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["object"].as_str().map(str::to_owned));
            (sha256_hex(&[&body]), kind)
        }
        VerifierKind::Twilio {
            auth_token,
            public_origin,
        } => {
            let sig = header(&parts.headers, "x-twilio-signature").map_err(bad)?;
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let url = format!("{public_origin}{target}");
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            signature::twilio_verify(auth_token, &url, params.iter().map(|(k, v)| (k, v)), sig)
                .map_err(bad)?;
            let get = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let sid = get("MessageSid").or_else(|| get("SmsSid"));
            let status = get("MessageStatus").or_else(|| get("SmsStatus"));
            let id = match (&sid, &status) {
                (Some(sid), Some(status)) => format!("{sid}:{status}"),
                _ => {
                    let mut sorted = params.clone();
                    sorted.sort();
                    let flat: Vec<&[u8]> = std::iter::once(url.as_bytes())
                        .chain(
                            sorted
                                .iter()
                                .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]),
                        )
                        .collect();
                    sha256_hex(&flat)
                }
            };
            let key = parts.uri.query().and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == TWILIO_KEY_PARAM)
                    .map(|(_, v)| v.into_owned())
            });
            if let (Some(key), Some(sid)) = (key, &sid) {
                match key.parse::<IdempotencyKey>() {
                    Ok(key) => {
                        let object = serde_json::json!({
                            "sid": sid,
                            "status": status,
                            "account_sid": get("AccountSid"),
                            "to": get("To"),
                            "from": get("From"),
                            "messaging_service_sid": get("MessagingServiceSid"),
                            "direction": "outbound-api",
                            "error_code": get("ErrorCode").and_then(|c| c.parse::<i64>().ok()),
                        });
                        candidates.push(Candidate {
                            key,
                            provider: "twilio",
                            operations: Some(&["messages.create"]),
                            provider_id: Some(sid.clone()),
                            object: Bytes::from(object.to_string()),
                        });
                    }
                    Err(_) => return Err(malformed("the idemkey parameter is not an idem key")),
                }
            }
            (id, status)
        }
    };
    Ok(Parsed {
        event: WebhookEvent {
            endpoint: config.name.clone(),
            provider: config.verifier.provider(),
            id,
            kind,
            body,
            ledger: Vec::new(),
        },
        candidates,
    })
}

/// Stripe `payment_intent.*` events: `data.object.metadata.idem_key` names
/// the create (any such event proves the PaymentIntent exists);
/// `request.idempotency_key` names the API request that caused the event,
/// which took effect unless the event reports a failed payment.
fn stripe_candidates(kind: &str, v: &serde_json::Value, out: &mut Vec<Candidate>) {
    if !kind.starts_with("payment_intent.") {
        return;
    }
    let object = &v["data"]["object"];
    let provider_id = object["id"].as_str().map(str::to_owned);
    let bytes = Bytes::from(object.to_string());
    if let Some(key) = object["metadata"]["idem_key"]
        .as_str()
        .and_then(|k| k.parse().ok())
    {
        out.push(Candidate {
            key,
            provider: "stripe",
            operations: Some(&["payment_intents.create"]),
            provider_id: provider_id.clone(),
            object: bytes.clone(),
        });
    }
    if kind != "payment_intent.payment_failed"
        && let Some(key) = v["request"]["idempotency_key"]
            .as_str()
            .and_then(|k| k.parse::<IdempotencyKey>().ok())
        && !out.iter().any(|c| c.key == key)
    {
        out.push(Candidate {
            key,
            provider: "stripe",
            operations: None,
            provider_id,
            object: bytes,
        });
    }
}

/// Settles one named row: only an `unknown` row (or an expired send) moves,
/// and only to `succeeded`.
async fn settle<S: LedgerStore + ?Sized>(
    store: &S,
    event: &WebhookEvent,
    c: &Candidate,
    now: SystemTime,
) -> Result<LinkOutcome, StoreError> {
    let note = format!(
        "settled by {} webhook event {} ({}) at endpoint {}{}",
        event.provider,
        event.id,
        event.kind.as_deref().unwrap_or("no type"),
        event.endpoint,
        c.provider_id
            .as_deref()
            .map(|p| format!("; provider id {p}"))
            .unwrap_or_default()
    );
    let covers = |op: &Operation| {
        op.provider == c.provider
            && c.operations
                .is_none_or(|ops| ops.contains(&op.operation.as_str()))
    };
    let untouched = |why: String| Ok(LinkOutcome::Untouched(why));
    match settle_by_proof(store, &c.key, covers, c.object.clone(), &note, now).await? {
        Proven::NoRecord => untouched("no ledger row has this key".into()),
        Proven::NotCovered(op) if op.provider != c.provider => {
            untouched(format!("the row belongs to provider {:?}", op.provider))
        }
        Proven::NotCovered(op) => untouched(format!(
            "the event does not prove the outcome of {:?}",
            op.operation
        )),
        Proven::Settled(_) => {
            tracing::info!(target: "idem::webhook", key = %c.key, event = %event.id, endpoint = %event.endpoint, "unknown ledger row settled by a webhook event");
            Ok(LinkOutcome::Settled)
        }
        Proven::AlreadySucceeded(_) => Ok(LinkOutcome::AlreadySucceeded),
        Proven::InFlight(op) | Proven::Untouched(op) => {
            untouched(format!("the row is {}", op.state))
        }
        Proven::KeptChanging => untouched("the row changed concurrently".into()),
    }
}

/// What a handler run returned, for [`process`].
/// The transaction is `None` when the handler did not give it back.
pub(crate) type RunResult<Db, R> = (
    Option<sqlx::Transaction<'static, Db>>,
    Result<R, HandlerError>,
);

/// The shared path of [`handle_webhook`] and the layer. `run` gets the
/// transaction by value and gives it back with its result.
pub(crate) async fn process<S, R, F, Fut>(
    store: &S,
    config: &InboundWebhook,
    parts: &Parts,
    body: Bytes,
    run: F,
) -> Result<R, Answer>
where
    S: WebhookStore,
    F: FnOnce(sqlx::Transaction<'static, S::Db>, WebhookEvent) -> Fut,
    Fut: Future<Output = RunResult<S::Db, R>>,
{
    let now = config.clock.now();
    if body.len() > config.max_body {
        return Err(Answer::TooLarge);
    }
    // Signature first: nothing below runs for an unauthenticated request.
    let Parsed {
        mut event,
        candidates,
    } = verify_and_parse(config, parts, body, now)?;
    let unavailable = |e: StoreError| {
        tracing::error!(target: "idem::webhook", endpoint = %config.name, error = %e, "webhook store failed");
        Answer::StoreUnavailable
    };
    let token = match store
        .claim_event(&config.name, &event.id, event.provider, config.lease, now)
        .await
        .map_err(unavailable)?
    {
        EventClaim::Claimed { token } => token,
        EventClaim::Processed => return Err(Answer::Duplicate),
        EventClaim::Busy { until } => {
            return Err(Answer::Busy(until.and_then(|u| u.duration_since(now).ok())));
        }
    };
    let event_id = event.id.clone();
    let fail = |why: String| {
        let token = token.clone();
        let id = event_id.clone();
        async move {
            if let Err(e) = store
                .release_event(&config.name, &id, &token, &why, config.clock.now())
                .await
            {
                tracing::error!(target: "idem::webhook", endpoint = %config.name, error = %e, "could not release a webhook event; it is retried after its lease");
            }
        }
    };
    if config.settle_ledger {
        for c in &candidates {
            match settle(store, &event, c, now).await {
                Ok(outcome) => event.ledger.push(LedgerLink {
                    key: c.key.clone(),
                    provider_id: c.provider_id.clone(),
                    outcome,
                }),
                Err(e) => {
                    let answer = unavailable(e);
                    fail("the ledger could not be settled".into()).await;
                    return Err(answer);
                }
            }
        }
    }
    let tx = match store.begin_tx().await {
        Ok(tx) => tx,
        Err(e) => {
            let answer = unavailable(e);
            fail("no transaction could be opened".into()).await;
            return Err(answer);
        }
    };
    let id = event.id.clone();
    let (tx, result) = run(tx, event).await;
    let (mut tx, value) = match (tx, result) {
        (Some(tx), Ok(v)) => (tx, v),
        (None, Ok(_)) => {
            fail("the handler did not give the transaction back".into()).await;
            return Err(Answer::HandlerFailed);
        }
        (tx, Err(e)) => {
            drop(tx);
            tracing::warn!(target: "idem::webhook", endpoint = %config.name, event = %id, error = %e, "webhook handler failed; the event stays unprocessed");
            fail(format!("handler failed: {e}")).await;
            return Err(Answer::HandlerFailed);
        }
    };
    let marked = S::mark_processed_in(&mut tx, &config.name, &id, &token, config.clock.now()).await;
    match marked {
        Ok(true) => {}
        Ok(false) => {
            // The lease ran out and another delivery took the event over:
            // this run's writes are rolled back; the other run decides.
            drop(tx);
            tracing::warn!(target: "idem::webhook", endpoint = %config.name, event = %id, "webhook handler outlived its lease; its writes were rolled back");
            return Err(Answer::Busy(None));
        }
        Err(e) => {
            drop(tx);
            let answer = unavailable(e);
            fail("the processed mark could not be written".into()).await;
            return Err(answer);
        }
    }
    if let Err(e) = tx.commit().await {
        let answer = unavailable(StoreError::from_sqlx(e));
        fail("the commit failed".into()).await;
        return Err(answer);
    }
    tracing::info!(target: "idem::webhook", endpoint = %config.name, event = %id, "webhook event processed");
    Ok(value)
}

/// Handles one delivery with `handler`:
///
/// 1. reads the body and verifies the signature (400 when it fails, and the
///    store is not touched);
/// 2. takes the event by its provider id for this endpoint: a processed one
///    answers 200 with `webhook-duplicate: true` and does not run the
///    handler; one whose handler is running elsewhere answers 503 with
///    `Retry-After` (never 2xx: that run may still fail);
/// 3. settles `unknown` ledger rows the event names (see the module docs);
/// 4. runs the handler in a transaction and writes the "processed" mark in
///    the same transaction; 200 when it commits, 500 (the event stays
///    unprocessed, so the provider's redelivery runs it again) when the
///    handler fails, 503 when the store fails.
///
/// ```no_run
/// use idem::ledger::SqliteStore;
/// use idem::webhook::{InboundWebhook, Verifier, event_handler, handle_webhook};
///
/// # async fn demo(request: http::Request<http_body_util::Full<bytes::Bytes>>) -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::open("app.db").await?;
/// let config = InboundWebhook::builder("stripe", Verifier::stripe(["whsec_..."])).build()?;
/// let handler = event_handler::<sqlx::Sqlite, _>(|tx, event| {
///     Box::pin(async move {
///         sqlx::query("INSERT INTO payments_seen (event) VALUES ($1)")
///             .bind(&event.id)
///             .execute(&mut **tx)
///             .await
///             .map_err(|e| idem::webhook::HandlerError::new(e.to_string()))?;
///         Ok(())
///     })
/// });
/// let response = handle_webhook(&store, &config, request, &handler).await;
/// # let _ = response; Ok(()) }
/// ```
pub async fn handle_webhook<S, B>(
    store: &S,
    config: &InboundWebhook,
    request: Request<B>,
    handler: &EventHandler<S::Db>,
) -> Response<Bytes>
where
    S: WebhookStore,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let body = match read_body(body, config.max_body).await {
        Ok(b) => b,
        Err(a) => return a.response(),
    };
    let result = process(store, config, &parts, body, |mut tx, event| async move {
        let r = handler(&mut tx, &event).await;
        (Some(tx), r)
    })
    .await;
    match result {
        Ok(()) => Answer::Processed.response(),
        Err(a) => a.response(),
    }
}

pub(crate) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Answer>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(Answer::TooLarge)
            } else {
                Err(Answer::BadRequest)
            }
        }
    }
}
