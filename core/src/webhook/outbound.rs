//! The platform's own webhooks, delivered to its customers' endpoints per
//! the Standard Webhooks specification, through the executor.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::signature::{self, SignatureError, WebhookSecret};
use super::store::{
    AttemptResult, Delivery, DeliveryAttempt, DeliveryState, EndpointStatus, WebhookStore,
};
use crate::error::{ExecError, KeyError, StoreError};
use crate::executor::{
    Begun, Classifier, Effect, Executor, OutboundRequest, Provider, RetrySettings, SafetyClass,
    Url, Verdict,
};
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;

/// The provider name of outbound webhook deliveries in the ledger.
pub const PROVIDER: &str = "webhooks";
/// The operation name of a delivery in the ledger.
pub const OPERATION: &str = "webhook.deliver";
/// The table part of every delivery's ledger key.
pub const KEY_TABLE: &str = "webhook_deliveries";

/// Why a webhook call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event id cannot form a ledger key (empty, or too long).
    #[error("event id {event_id:?} cannot form a ledger key: {source}")]
    EventId {
        /// The event id.
        event_id: String,
        /// Why.
        source: KeyError,
    },
    /// No endpoint has this id.
    #[error("no webhook endpoint {0:?}")]
    UnknownEndpoint(String),
    /// The event id was enqueued before for another endpoint or payload.
    #[error("webhook:{event_id} was enqueued before with {detail}")]
    Conflict {
        /// The event id.
        event_id: String,
        /// What differs.
        detail: &'static str,
    },
    /// A secret is malformed, or an endpoint has none.
    #[error("endpoint secret: {0}")]
    Secret(#[from] SignatureError),
    /// The endpoint URL is not a valid absolute URL.
    #[error("endpoint URL is invalid")]
    InvalidUrl,
}

/// Derives the ledger key of the delivery of `event_id`:
/// `<shop>_webhook_deliveries_<row>_v1`, where `<row>` keeps ASCII letters
/// and digits and writes every other byte (including `-`) as `-` followed by
/// its two lowercase hex digits. Each `-` starts exactly one escape, so the
/// mapping is injective: two event ids never share a key, and
/// [`event_id_from_key`] gives the id back.
///
/// ```
/// let key = idem::webhook::delivery_key("platform", "evt_1-A")?;
/// assert_eq!(key.as_str(), "platform_webhook_deliveries_evt-5f1-2dA_v1");
/// assert_eq!(idem::webhook::event_id_from_key(&key).as_deref(), Some("evt_1-A"));
/// # Ok::<(), idem::webhook::WebhookError>(())
/// ```
///
/// # Errors
///
/// [`WebhookError::EventId`] when the id is empty or the key would pass
/// [`MAX_KEY_LEN`](crate::key::MAX_KEY_LEN).
pub fn delivery_key(shop: &str, event_id: &str) -> Result<IdempotencyKey, WebhookError> {
    let mut row = String::with_capacity(event_id.len());
    for b in event_id.bytes() {
        if b.is_ascii_alphanumeric() {
            row.push(char::from(b));
        } else {
            row.push('-');
            row.push_str(&format!("{b:02x}"));
        }
    }
    IdempotencyKey::new(shop, KEY_TABLE, &row, 1).map_err(|source| WebhookError::EventId {
        event_id: event_id.to_owned(),
        source,
    })
}

/// The event id a [`delivery_key`] was derived from, or `None` for a key of
/// another shape.
pub fn event_id_from_key(key: &IdempotencyKey) -> Option<String> {
    if key.table() != KEY_TABLE {
        return None;
    }
    let row = key.row().as_bytes();
    let mut out = Vec::with_capacity(row.len());
    let mut i = 0;
    while i < row.len() {
        if row[i] == b'-' {
            let hex = row.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if hex.bytes().any(|c| c.is_ascii_uppercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(row[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads receivers' answers: a 2xx is a delivery; anything else is a
/// failure to retry (Standard Webhooks senders retry every non-2xx).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiverClassifier;

impl Classifier for ReceiverClassifier {
    fn classify(&self, status: StatusCode, _headers: &HeaderMap, _body: &[u8]) -> Verdict {
        if status.is_success() {
            Verdict::Success
        } else {
            Verdict::Transient(Effect::Possible)
        }
    }
}

/// What [`WebhookSender::enqueue`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Enqueued {
    /// `false` when `webhook:{event_id}` already existed (same endpoint and
    /// payload): nothing new was created.
    pub created: bool,
    /// The delivery.
    pub delivery: Delivery,
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptReport {
    /// The event id.
    pub event_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// The delivery's state afterwards.
    pub state: DeliveryState,
    /// The receiver's status, if one came.
    pub status: Option<u16>,
    /// Whether the endpoint is disabled afterwards.
    pub endpoint_disabled: bool,
}

/// Builds a [`WebhookSender`].
#[derive(Debug)]
pub struct WebhookSenderBuilder<S> {
    store: S,
    executor: Executor,
    shop: String,
    backoff: Vec<Duration>,
    disable_after: u32,
    attempt_timeout: Duration,
    lease: Duration,
}

impl<S: WebhookStore> WebhookSenderBuilder<S> {
    /// The shop part of delivery keys (default `platform`).
    pub fn shop(mut self, shop: impl Into<String>) -> Self {
        self.shop = shop.into();
        self
    }

    /// The waits before the 2nd, 3rd, … attempt; the number of attempts is
    /// one more than its length. Default: 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h, 10 h (the schedule the Standard Webhooks guide suggests).
    pub fn backoff(mut self, waits: Vec<Duration>) -> Self {
        self.backoff = waits;
        self
    }

    /// Failed attempts in a row (over all its deliveries) after which an
    /// endpoint is disabled (default 20, at least 1).
    pub fn disable_after(mut self, n: u32) -> Self {
        self.disable_after = n.max(1);
        self
    }

    /// How long one attempt may take (default 15 s).
    pub fn attempt_timeout(mut self, t: Duration) -> Self {
        self.attempt_timeout = t;
        self
    }

    /// The sender.
    ///
    /// # Errors
    ///
    /// [`WebhookError::EventId`] when the shop cannot start a key.
    pub fn build(self) -> Result<WebhookSender<S>, WebhookError> {
        delivery_key(&self.shop, "probe")?;
        let retry = RetrySettings::default()
            .with_max_attempts(1)
            .with_attempt_timeout(self.attempt_timeout)
            .with_total_timeout(self.attempt_timeout);
        let provider = Provider::new(
            PROVIDER,
            SafetyClass::NaturallyIdempotent,
            ReceiverClassifier,
        )
        .with_retry(retry);
        Ok(WebhookSender {
            store: self.store,
            executor: self.executor,
            provider,
            shop: self.shop,
            backoff: self.backoff,
            disable_after: self.disable_after,
            lease: self.lease.max(self.attempt_timeout * 2),
        })
    }
}

/// Enqueues and delivers the platform's webhooks.
///
/// * [`enqueue`](Self::enqueue) is idempotent by `webhook:{event_id}`.
/// * [`deliver_due`](Self::deliver_due) makes every due attempt: each one
///   goes through the [`Executor`] under the delivery's ledger key
///   ([`delivery_key`]), carries `webhook-id: <event_id>` (the same on every
///   attempt), a fresh `webhook-timestamp` and a `webhook-signature` with
///   one `v1` signature per endpoint secret.
/// * Every attempt is logged ([`attempts`](Self::attempts)); a failure is
///   retried after the backoff; an endpoint that fails
///   [`disable_after`](WebhookSenderBuilder::disable_after) times in a row
///   is disabled ([`disabled_endpoints`](Self::disabled_endpoints)) until
///   an operator calls [`enable_endpoint`](Self::enable_endpoint).
///
/// Delivery is at least once. See the module docs for what "delivered
/// once" can and cannot mean.
pub struct WebhookSender<S> {
    store: S,
    executor: Executor,
    provider: Provider,
    shop: String,
    backoff: Vec<Duration>,
    disable_after: u32,
    lease: Duration,
}

impl<S: fmt::Debug> fmt::Debug for WebhookSender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("store", &self.store)
            .field("shop", &self.shop)
            .field("backoff", &self.backoff)
            .field("disable_after", &self.disable_after)
            .finish_non_exhaustive()
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

impl<S: WebhookStore> WebhookSender<S> {
    /// Starts building a sender over `store` that sends through `executor`
    /// (whose ledger should be the same database).
    pub fn builder(store: S, executor: Executor) -> WebhookSenderBuilder<S> {
        WebhookSenderBuilder {
            store,
            executor,
            shop: "platform".to_owned(),
            backoff: [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            disable_after: 20,
            attempt_timeout: Duration::from_secs(15),
            lease: Duration::from_secs(60),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Creates or updates an endpoint. Several secrets = rotation: every
    /// attempt is signed with each (newest first), so a receiver that knows
    /// any one of them verifies it.
    ///
    /// # Errors
    ///
    /// [`WebhookError::Secret`] with no secret, [`WebhookError::InvalidUrl`]
    /// for a URL that is not absolute http(s), or a store error.
    pub async fn upsert_endpoint(
        &self,
        id: &str,
        url: &str,
        secrets: &[WebhookSecret],
    ) -> Result<(), WebhookError> {
        if secrets.is_empty() {
            return Err(WebhookError::Secret(SignatureError::NoSecret));
        }
        let parsed: Url = url.parse().map_err(|_| WebhookError::InvalidUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl);
        }
        let text = secrets
            .iter()
            .map(WebhookSecret::expose)
            .collect::<Vec<_>>()
            .join(" ");
        self.store
            .upsert_endpoint(id, url, &text, self.executor.now())
            .await?;
        Ok(())
    }

    /// Records one delivery of `payload` (JSON) to `endpoint` for the
    /// platform event `event_id`, idempotently: enqueueing the same event
    /// again (a retried "send webhook" job) returns the existing delivery
    /// and creates nothing.
    ///
    /// # Errors
    ///
    /// [`WebhookError::Conflict`] when the event id was enqueued with another
    /// endpoint or payload, [`WebhookError::UnknownEndpoint`],
    /// [`WebhookError::EventId`], or a store error.
    pub async fn enqueue(
        &self,
        event_id: &str,
        endpoint: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Enqueued, WebhookError> {
        let payload: Bytes = payload.into();
        let key = delivery_key(&self.shop, event_id)?;
        if self.store.endpoint_with_secrets(endpoint).await?.is_none() {
            return Err(WebhookError::UnknownEndpoint(endpoint.to_owned()));
        }
        let now = self.executor.now();
        let delivery = Delivery {
            event_id: event_id.to_owned(),
            endpoint_id: endpoint.to_owned(),
            ledger_key: key.as_str().to_owned(),
            payload_sha256: sha256_hex(&payload),
            payload: payload.to_vec(),
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: now,
            last_status: None,
            last_error: None,
            created_at: now,
            delivered_at: None,
        };
        let created = self.store.insert_delivery(&delivery, now).await?;
        let stored = self.store.delivery(event_id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("webhook:{event_id} vanished after insert"))
        })?;
        if !created {
            if stored.endpoint_id != delivery.endpoint_id {
                return Err(WebhookError::Conflict {
                    event_id: event_id.to_owned(),
                    detail: "another endpoint",
                });
            }
            if stored.payload_sha256 != delivery.payload_sha256 {
                return Err(WebhookError::Conflict {
                    event_id: event_id.to_owned(),
                    detail: "another payload",
                });
            }
        }
        Ok(Enqueued {
            created,
            delivery: stored,
        })
    }

    /// Makes every attempt due now (at most `limit`), one after another.
    ///
    /// # Errors
    ///
    /// A store error (attempts already made stay recorded).
    pub async fn deliver_due(&self, limit: u32) -> Result<Vec<AttemptReport>, WebhookError> {
        let due = self
            .store
            .due_deliveries(self.executor.now(), limit)
            .await?;
        let mut reports = Vec::new();
        for id in due {
            if let Some(r) = self.attempt(&id).await? {
                reports.push(r);
            }
        }
        Ok(reports)
    }

    /// Makes one attempt of `event_id`'s delivery if it is due, its
    /// endpoint is enabled and no other worker holds it; `None` otherwise.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn attempt(&self, event_id: &str) -> Result<Option<AttemptReport>, WebhookError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let started = self.executor.now();
        let Some(delivery) = self
            .store
            .claim_delivery(event_id, &token, self.lease, started)
            .await?
        else {
            return Ok(None);
        };
        let Some((endpoint, secrets)) = self
            .store
            .endpoint_with_secrets(&delivery.endpoint_id)
            .await?
        else {
            return Err(WebhookError::UnknownEndpoint(delivery.endpoint_id));
        };
        let secrets = secrets
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(WebhookSecret::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let key: IdempotencyKey = delivery
            .ledger_key
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("stored delivery key: {e}")))?;
        let timestamp = signature_time(started);
        let url: Url = endpoint.url.parse().map_err(|_| WebhookError::InvalidUrl)?;
        let request = OutboundRequest::post(url)
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature::standard_sign(&secrets, &delivery.event_id, started, &delivery.payload),
            )
            .body_bytes("application/json", delivery.payload.clone());
        // The fingerprint leaves the URL out, so moving an endpoint to a new
        // URL does not look like a different request to the ledger.
        let fingerprint = Fingerprint::builder()
            .method("POST")
            .target("webhook")
            .extra("event-id", delivery.event_id.as_bytes())
            .body(&delivery.payload)
            .finish();
        let (outcome, status, error) = match self
            .executor
            .begin(&self.provider, &key, OPERATION, fingerprint)
            .await
        {
            Ok(Begun::Done(_)) => ("ledger", None, None),
            Ok(Begun::Claimed(mut claim)) => {
                let sent = claim.send(request).await;
                let status = sent.response.as_ref().map(|(s, _, _)| s.as_u16());
                match claim.finish(sent).await {
                    Ok(_) => ("delivered", status, None),
                    Err(ExecError::Store(e)) => {
                        self.release(event_id, &token).await;
                        return Err(e.into());
                    }
                    Err(e) => ("failed", status, Some(attempt_error(&e))),
                }
            }
            Err(ExecError::InFlight {
                lease_expires_at, ..
            }) => {
                self.store
                    .release_delivery(event_id, &token, lease_expires_at, self.executor.now())
                    .await?;
                return Ok(None);
            }
            Err(ExecError::Store(e)) => {
                self.release(event_id, &token).await;
                return Err(e.into());
            }
            Err(e) => ("failed", None, Some(attempt_error(&e))),
        };
        let finished = self.executor.now();
        let delivered = outcome != "failed";
        let attempt_no = delivery.attempts;
        let max_attempts = u32::try_from(self.backoff.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let (state, next) = if delivered {
            (DeliveryState::Delivered, finished)
        } else if attempt_no >= max_attempts {
            (DeliveryState::Failed, finished)
        } else {
            let wait = self
                .backoff
                .get(attempt_no as usize - 1)
                .copied()
                .unwrap_or_default();
            (DeliveryState::Pending, finished + wait)
        };
        let result = AttemptResult {
            attempt: DeliveryAttempt {
                attempt: attempt_no,
                webhook_id: delivery.event_id.clone(),
                webhook_timestamp: timestamp,
                started_at: started,
                finished_at: finished,
                outcome: outcome.to_owned(),
                status,
                error: error.clone(),
            },
            state,
            next_attempt_at: next,
            endpoint_failed: !delivered,
            disable_after: self.disable_after,
        };
        let Some(endpoint) = self
            .store
            .finish_attempt(event_id, &token, &result, finished)
            .await?
        else {
            tracing::warn!(target: "idem::webhook", event = %event_id, "webhook delivery lease lost before the attempt was recorded");
            return Ok(None);
        };
        tracing::info!(target: "idem::webhook", event = %event_id, endpoint = %endpoint.id, attempt = attempt_no, outcome, status, "webhook delivery attempt");
        if !endpoint.enabled {
            tracing::warn!(target: "idem::webhook", endpoint = %endpoint.id, failures = endpoint.consecutive_failures, "webhook endpoint disabled");
        }
        Ok(Some(AttemptReport {
            event_id: event_id.to_owned(),
            attempt: attempt_no,
            state,
            status,
            endpoint_disabled: !endpoint.enabled,
        }))
    }

    async fn release(&self, event_id: &str, token: &str) {
        let now = self.executor.now();
        if let Err(e) = self.store.release_delivery(event_id, token, now, now).await {
            tracing::error!(target: "idem::webhook", event = %event_id, error = %e, "could not release a webhook delivery; it is retried after its lease");
        }
    }

    /// One delivery.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn delivery(&self, event_id: &str) -> Result<Option<Delivery>, WebhookError> {
        Ok(self.store.delivery(event_id).await?)
    }

    /// The logged attempts of one delivery.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn attempts(&self, event_id: &str) -> Result<Vec<DeliveryAttempt>, WebhookError> {
        Ok(self.store.attempts(event_id).await?)
    }

    /// One endpoint's state (no secrets).
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn endpoint(&self, id: &str) -> Result<Option<EndpointStatus>, WebhookError> {
        Ok(self.store.endpoint_with_secrets(id).await?.map(|(s, _)| s))
    }

    /// The endpoints that are disabled, for the operator.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn disabled_endpoints(&self) -> Result<Vec<EndpointStatus>, WebhookError> {
        Ok(self.store.list_endpoints(true).await?)
    }

    /// Re-enables an endpoint (operator action); its pending deliveries
    /// resume at their due times.
    ///
    /// # Errors
    ///
    /// [`WebhookError::UnknownEndpoint`] or a store error.
    pub async fn enable_endpoint(&self, id: &str) -> Result<(), WebhookError> {
        if self.store.enable_endpoint(id, self.executor.now()).await? {
            Ok(())
        } else {
            Err(WebhookError::UnknownEndpoint(id.to_owned()))
        }
    }
}

fn signature_time(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn attempt_error(e: &ExecError) -> String {
    match e {
        ExecError::OutcomeUnknown { reason, .. } | ExecError::NotSent { reason, .. } => {
            reason.clone()
        }
        ExecError::InvalidRequest { reason, .. } => format!("invalid request: {reason}"),
        other => other.to_string(),
    }
}
