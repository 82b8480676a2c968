//! The webhook tables (`idem_webhook_*`, migration 10) on SQLite and
//! PostgreSQL. One SQL text serves both backends (`$N` placeholders).

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use sqlx::Row;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::clock::{from_millis, to_millis};
use crate::error::StoreError;
use crate::ledger::LedgerStore;

/// The processing state of one inbound event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventState {
    /// Seen but not processed: the last handler run failed (the provider's
    /// next delivery runs it again).
    Pending,
    /// A delivery holds the event and its handler is running.
    Processing,
    /// The handler's writes and this mark committed together.
    Processed,
}

impl EventState {
    /// The stored text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn parse(s: &str) -> Result<Self, StoreError> {
        [Self::Pending, Self::Processing, Self::Processed]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown webhook event state {s:?}")))
    }
}

/// One inbound event as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventRecord {
    /// The receiving endpoint's name.
    pub endpoint: String,
    /// The provider's event id.
    pub event_id: String,
    /// The provider (`stripe`, `twilio`, `meta`, `standard`).
    pub provider: String,
    /// The state.
    pub state: EventState,
    /// How many deliveries of this event arrived (duplicates included).
    pub deliveries: u32,
    /// How many times the handler was started for it.
    pub runs: u32,
    /// Why the last run failed (no body, no secret).
    pub last_error: Option<String>,
    /// When the current run's lease ends (state `processing`).
    pub lease_expires_at: Option<SystemTime>,
    /// First delivery.
    pub received_at: SystemTime,
    /// When it was processed.
    pub processed_at: Option<SystemTime>,
}

/// What [`WebhookStore::claim_event`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventClaim {
    /// This delivery holds the event under `token` and must run the handler.
    Claimed {
        /// The fencing token.
        token: String,
    },
    /// Already processed: a duplicate.
    Processed,
    /// Another delivery holds it (its handler runs now) or it changed
    /// concurrently: answer a retryable status.
    Busy {
        /// When the other delivery's lease ends, if known.
        until: Option<SystemTime>,
    },
}

/// An outbound endpoint's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The endpoint id.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Failed attempts in a row (reset by a success).
    pub consecutive_failures: u32,
    /// When it was disabled.
    pub disabled_at: Option<SystemTime>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
}

/// The state of one outbound delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt got a 2xx.
    Delivered,
    /// Every attempt failed; no more are made.
    Failed,
}

impl DeliveryState {
    /// The stored text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn parse(s: &str) -> Result<Self, StoreError> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown webhook delivery state {s:?}")))
    }
}

/// One outbound delivery (`webhook:{event_id}`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The platform's event id: also the `webhook-id` header of every attempt.
    pub event_id: String,
    /// The target endpoint.
    pub endpoint_id: String,
    /// The ledger key the executor records attempts under.
    pub ledger_key: String,
    /// The body sent.
    pub payload: Vec<u8>,
    /// Hex SHA-256 of the body.
    pub payload_sha256: String,
    /// The state.
    pub state: DeliveryState,
    /// Attempts started.
    pub attempts: u32,
    /// When the next attempt is due (state `pending`).
    pub next_attempt_at: SystemTime,
    /// The last HTTP status received.
    pub last_status: Option<u16>,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// When an attempt got a 2xx.
    pub delivered_at: Option<SystemTime>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload is customer data: only its length is shown.
        f.debug_struct("Delivery")
            .field("event_id", &self.event_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("last_status", &self.last_status)
            .field("last_error", &self.last_error)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// One logged delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryAttempt {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The `webhook-id` header sent (the same on every attempt).
    pub webhook_id: String,
    /// The `webhook-timestamp` header sent (Unix seconds).
    pub webhook_timestamp: i64,
    /// When it started.
    pub started_at: SystemTime,
    /// When it ended.
    pub finished_at: SystemTime,
    /// `delivered`, `failed` or `ledger` (answered from the ledger: an
    /// earlier attempt had succeeded, nothing was sent).
    pub outcome: String,
    /// The receiver's status, if one came.
    pub status: Option<u16>,
    /// What failed, in words.
    pub error: Option<String>,
}

/// What the sender records at the end of one attempt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttemptResult {
    /// The attempt.
    pub attempt: DeliveryAttempt,
    /// The delivery's new state.
    pub state: DeliveryState,
    /// When the next attempt is due (state `pending`).
    pub next_attempt_at: SystemTime,
    /// Whether this attempt counts as a failure of the endpoint.
    pub endpoint_failed: bool,
    /// Failures in a row after which the endpoint is disabled.
    pub disable_after: u32,
}

/// A store of webhook records, in the same database as the ledger, so a
/// handler's writes, the "processed" mark and ledger rows share one
/// database. Implemented by [`SqliteStore`](crate::ledger::SqliteStore) and
/// [`PgStore`](crate::ledger::PgStore).
#[async_trait]
pub trait WebhookStore: LedgerStore + Clone {
    /// The sqlx database.
    type Db: sqlx::Database;

    /// Opens a transaction (SQLite: `BEGIN IMMEDIATE`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn begin_tx(&self) -> Result<sqlx::Transaction<'static, Self::Db>, StoreError>;

    /// Takes an inbound event for processing under a lease: a new event, a
    /// `pending` one (an earlier run failed) or a `processing` one whose
    /// lease ran out. Counts the delivery either way.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn claim_event(
        &self,
        endpoint: &str,
        event_id: &str,
        provider: &str,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<EventClaim, StoreError>;

    /// Marks the event processed inside `tx`, fenced by `token`: the mark
    /// commits with the handler's writes. `false` when the lease was lost.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn mark_processed_in(
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        endpoint: &str,
        event_id: &str,
        token: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError>;

    /// Gives the event back as `pending` after a failed run (fenced).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn release_event(
        &self,
        endpoint: &str,
        event_id: &str,
        token: &str,
        error: &str,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// Reads one event record.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn event(
        &self,
        endpoint: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError>;

    /// Deletes up to `batch` processed events first received before
    /// `before` (the end of the replay window). Returns how many.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn purge_events(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError>;

    /// Creates an outbound endpoint, or updates its URL and secrets (its
    /// enabled state is kept).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn upsert_endpoint(
        &self,
        id: &str,
        url: &str,
        secrets: &str,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// An endpoint's state and its stored secrets (`whsec_…`, space
    /// separated). Never log the secrets.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn endpoint_with_secrets(
        &self,
        id: &str,
    ) -> Result<Option<(EndpointStatus, String)>, StoreError>;

    /// Lists endpoints (only disabled ones when `disabled_only`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn list_endpoints(&self, disabled_only: bool) -> Result<Vec<EndpointStatus>, StoreError>;

    /// Re-enables an endpoint (operator action) and resets its failure
    /// count. `false` when there is no such endpoint.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn enable_endpoint(&self, id: &str, now: SystemTime) -> Result<bool, StoreError>;

    /// Inserts a delivery unless its event id exists. `true` when inserted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn insert_delivery(
        &self,
        delivery: &Delivery,
        now: SystemTime,
    ) -> Result<bool, StoreError>;

    /// Reads one delivery.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn delivery(&self, event_id: &str) -> Result<Option<Delivery>, StoreError>;

    /// Event ids of deliveries due at `now` on enabled endpoints, oldest due
    /// first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn due_deliveries(&self, now: SystemTime, limit: u32) -> Result<Vec<String>, StoreError>;

    /// Takes a due delivery under a lease and counts the attempt. Returns
    /// the delivery when this caller holds it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn claim_delivery(
        &self,
        event_id: &str,
        token: &str,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Option<Delivery>, StoreError>;

    /// Gives a claimed delivery back without an attempt (another worker
    /// was sending it), due again at `due`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn release_delivery(
        &self,
        event_id: &str,
        token: &str,
        due: SystemTime,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// Logs an attempt and moves the delivery and its endpoint on, in one
    /// transaction fenced by `token`. Returns the endpoint's state
    /// afterwards, or `None` when the lease was lost (nothing written).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn finish_attempt(
        &self,
        event_id: &str,
        token: &str,
        result: &AttemptResult,
        now: SystemTime,
    ) -> Result<Option<EndpointStatus>, StoreError>;

    /// The attempts of one delivery, in order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn attempts(&self, event_id: &str) -> Result<Vec<DeliveryAttempt>, StoreError>;

    /// Deletes up to `batch` delivered or failed deliveries (and their
    /// attempts) last changed before `before`. Returns how many.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn purge_deliveries(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError>;
}

/// `webhook:{event_id}`, the delivery's idempotency key.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn dedupe_key(event_id: &str) -> String {
    format!("webhook:{event_id}")
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn corrupt(e: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn opt_status(v: Option<i64>) -> Result<Option<u16>, StoreError> {
    v.map(|s| u16::try_from(s).map_err(corrupt)).transpose()
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn decode_event<R>(row: &R) -> Result<EventRecord, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(EventRecord {
        endpoint: row.try_get("endpoint").map_err(corrupt)?,
        event_id: row.try_get("event_id").map_err(corrupt)?,
        provider: row.try_get("provider").map_err(corrupt)?,
        state: EventState::parse(&row.try_get::<String, _>("state").map_err(corrupt)?)?,
        deliveries: to_u32(row.try_get("deliveries").map_err(corrupt)?),
        runs: to_u32(row.try_get("runs").map_err(corrupt)?),
        last_error: row.try_get("last_error").map_err(corrupt)?,
        lease_expires_at: row
            .try_get::<Option<i64>, _>("lease_expires_at")
            .map_err(corrupt)?
            .map(from_millis),
        received_at: from_millis(row.try_get("received_at").map_err(corrupt)?),
        processed_at: row
            .try_get::<Option<i64>, _>("processed_at")
            .map_err(corrupt)?
            .map(from_millis),
    })
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn decode_endpoint<R>(row: &R) -> Result<EndpointStatus, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(EndpointStatus {
        id: row.try_get("id").map_err(corrupt)?,
        url: row.try_get("url").map_err(corrupt)?,
        enabled: row.try_get::<String, _>("state").map_err(corrupt)? == "enabled",
        consecutive_failures: to_u32(row.try_get("consecutive_failures").map_err(corrupt)?),
        disabled_at: row
            .try_get::<Option<i64>, _>("disabled_at")
            .map_err(corrupt)?
            .map(from_millis),
        disabled_reason: row.try_get("disabled_reason").map_err(corrupt)?,
    })
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn decode_delivery<R>(row: &R) -> Result<Delivery, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Delivery {
        event_id: row.try_get("event_id").map_err(corrupt)?,
        endpoint_id: row.try_get("endpoint_id").map_err(corrupt)?,
        ledger_key: row.try_get("ledger_key").map_err(corrupt)?,
        payload: row.try_get("payload").map_err(corrupt)?,
        payload_sha256: row.try_get("payload_sha256").map_err(corrupt)?,
        state: DeliveryState::parse(&row.try_get::<String, _>("state").map_err(corrupt)?)?,
        attempts: to_u32(row.try_get("attempts").map_err(corrupt)?),
        next_attempt_at: from_millis(row.try_get("next_attempt_at").map_err(corrupt)?),
        last_status: opt_status(row.try_get("last_status").map_err(corrupt)?)?,
        last_error: row.try_get("last_error").map_err(corrupt)?,
        created_at: from_millis(row.try_get("created_at").map_err(corrupt)?),
        delivered_at: row
            .try_get::<Option<i64>, _>("delivered_at")
            .map_err(corrupt)?
            .map(from_millis),
    })
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn decode_attempt<R>(row: &R) -> Result<DeliveryAttempt, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(DeliveryAttempt {
        attempt: to_u32(row.try_get("attempt").map_err(corrupt)?),
        webhook_id: row.try_get("webhook_id").map_err(corrupt)?,
        webhook_timestamp: row.try_get("webhook_timestamp").map_err(corrupt)?,
        started_at: from_millis(row.try_get("started_at").map_err(corrupt)?),
        finished_at: from_millis(row.try_get("finished_at").map_err(corrupt)?),
        outcome: row.try_get("outcome").map_err(corrupt)?,
        status: opt_status(row.try_get("status").map_err(corrupt)?)?,
        error: row.try_get("error").map_err(corrupt)?,
    })
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
const EVENT_COLUMNS: &str = "endpoint, event_id, provider, state, deliveries, runs, last_error, \
    lease_expires_at, received_at, processed_at";
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const ENDPOINT_COLUMNS: &str =
    "id, url, state, consecutive_failures, disabled_at, disabled_reason, secrets";
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const DELIVERY_COLUMNS: &str = "event_id, endpoint_id, ledger_key, payload, payload_sha256, state, \
    attempts, next_attempt_at, last_status, last_error, created_at, delivered_at";

#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! impl_webhook_store {
    ($store:ty, $db:ty, $begin:expr) => {
        #[async_trait]
        impl WebhookStore for $store {
            type Db = $db;

            async fn begin_tx(&self) -> Result<sqlx::Transaction<'static, $db>, StoreError> {
                $begin(&self.pool).await.map_err(StoreError::from_sqlx)
            }

            async fn claim_event(
                &self,
                endpoint: &str,
                event_id: &str,
                provider: &str,
                lease_for: Duration,
                now: SystemTime,
            ) -> Result<EventClaim, StoreError> {
                let token = uuid::Uuid::new_v4().simple().to_string();
                let now_ms = to_millis(now);
                let until = to_millis(now + lease_for);
                let inserted = sqlx::query(
                    "INSERT INTO idem_webhook_events (endpoint, event_id, provider, state, \
                     lease_token, lease_expires_at, deliveries, runs, received_at, updated_at) \
                     VALUES ($1, $2, $3, 'processing', $4, $5, 1, 1, $6, $6) \
                     ON CONFLICT (endpoint, event_id) DO NOTHING",
                )
                .bind(endpoint)
                .bind(event_id)
                .bind(provider)
                .bind(&token)
                .bind(until)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                if inserted.rows_affected() == 1 {
                    return Ok(EventClaim::Claimed { token });
                }
                let taken = sqlx::query(
                    "UPDATE idem_webhook_events SET state = 'processing', lease_token = $3, \
                     lease_expires_at = $4, deliveries = deliveries + 1, runs = runs + 1, \
                     updated_at = $5 WHERE endpoint = $1 AND event_id = $2 AND \
                     (state = 'pending' OR (state = 'processing' AND \
                     (lease_expires_at IS NULL OR lease_expires_at <= $5)))",
                )
                .bind(endpoint)
                .bind(event_id)
                .bind(&token)
                .bind(until)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                if taken.rows_affected() == 1 {
                    return Ok(EventClaim::Claimed { token });
                }
                sqlx::query(
                    "UPDATE idem_webhook_events SET deliveries = deliveries + 1 \
                     WHERE endpoint = $1 AND event_id = $2",
                )
                .bind(endpoint)
                .bind(event_id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                match self.event(endpoint, event_id).await? {
                    Some(r) if r.state == EventState::Processed => Ok(EventClaim::Processed),
                    Some(r) => Ok(EventClaim::Busy { until: r.lease_expires_at }),
                    None => Ok(EventClaim::Busy { until: None }),
                }
            }

            async fn mark_processed_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                endpoint: &str,
                event_id: &str,
                token: &str,
                now: SystemTime,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE idem_webhook_events SET state = 'processed', lease_token = NULL, \
                     lease_expires_at = NULL, last_error = NULL, processed_at = $4, updated_at = $4 \
                     WHERE endpoint = $1 AND event_id = $2 AND state = 'processing' AND lease_token = $3",
                )
                .bind(endpoint)
                .bind(event_id)
                .bind(token)
                .bind(to_millis(now))
                .execute(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_event(
                &self,
                endpoint: &str,
                event_id: &str,
                token: &str,
                error: &str,
                now: SystemTime,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE idem_webhook_events SET state = 'pending', lease_token = NULL, \
                     lease_expires_at = NULL, last_error = $4, updated_at = $5 \
                     WHERE endpoint = $1 AND event_id = $2 AND state = 'processing' AND lease_token = $3",
                )
                .bind(endpoint)
                .bind(event_id)
                .bind(token)
                .bind(error)
                .bind(to_millis(now))
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(())
            }

            async fn event(&self, endpoint: &str, event_id: &str) -> Result<Option<EventRecord>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM idem_webhook_events WHERE endpoint = $1 AND event_id = $2"
                ))
                .bind(endpoint)
                .bind(event_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                row.as_ref().map(decode_event).transpose()
            }

            async fn purge_events(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
                let done = sqlx::query(
                    "DELETE FROM idem_webhook_events WHERE (endpoint, event_id) IN \
                     (SELECT endpoint, event_id FROM idem_webhook_events \
                     WHERE state = 'processed' AND received_at < $1 LIMIT $2)",
                )
                .bind(to_millis(before))
                .bind(i64::from(batch))
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected())
            }

            async fn upsert_endpoint(&self, id: &str, url: &str, secrets: &str, now: SystemTime) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO idem_webhook_endpoints (id, url, secrets, state, \
                     consecutive_failures, created_at, updated_at) VALUES ($1, $2, $3, 'enabled', 0, $4, $4) \
                     ON CONFLICT (id) DO UPDATE SET url = $2, secrets = $3, updated_at = $4",
                )
                .bind(id)
                .bind(url)
                .bind(secrets)
                .bind(to_millis(now))
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(())
            }

            async fn endpoint_with_secrets(&self, id: &str) -> Result<Option<(EndpointStatus, String)>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM idem_webhook_endpoints WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                match row {
                    Some(row) => Ok(Some((
                        decode_endpoint(&row)?,
                        row.try_get("secrets").map_err(corrupt)?,
                    ))),
                    None => Ok(None),
                }
            }

            async fn list_endpoints(&self, disabled_only: bool) -> Result<Vec<EndpointStatus>, StoreError> {
                let sql = if disabled_only {
                    format!("SELECT {ENDPOINT_COLUMNS} FROM idem_webhook_endpoints WHERE state = 'disabled' ORDER BY id")
                } else {
                    format!("SELECT {ENDPOINT_COLUMNS} FROM idem_webhook_endpoints ORDER BY id")
                };
                let rows = sqlx::query(&sql)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                rows.iter().map(decode_endpoint).collect()
            }

            async fn enable_endpoint(&self, id: &str, now: SystemTime) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE idem_webhook_endpoints SET state = 'enabled', consecutive_failures = 0, \
                     disabled_at = NULL, disabled_reason = NULL, updated_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(to_millis(now))
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_delivery(&self, d: &Delivery, now: SystemTime) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO idem_webhook_deliveries (dedupe_key, event_id, endpoint_id, \
                     ledger_key, payload, payload_sha256, state, attempts, next_attempt_at, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $8) \
                     ON CONFLICT (dedupe_key) DO NOTHING",
                )
                .bind(dedupe_key(&d.event_id))
                .bind(&d.event_id)
                .bind(&d.endpoint_id)
                .bind(&d.ledger_key)
                .bind(&d.payload)
                .bind(&d.payload_sha256)
                .bind(to_millis(d.next_attempt_at))
                .bind(to_millis(now))
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delivery(&self, event_id: &str) -> Result<Option<Delivery>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM idem_webhook_deliveries WHERE dedupe_key = $1"
                ))
                .bind(dedupe_key(event_id))
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                row.as_ref().map(decode_delivery).transpose()
            }

            async fn due_deliveries(&self, now: SystemTime, limit: u32) -> Result<Vec<String>, StoreError> {
                let rows = sqlx::query(
                    "SELECT d.event_id FROM idem_webhook_deliveries d \
                     JOIN idem_webhook_endpoints e ON e.id = d.endpoint_id \
                     WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND e.state = 'enabled' \
                     AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $1) \
                     ORDER BY d.next_attempt_at, d.dedupe_key LIMIT $2",
                )
                .bind(to_millis(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                rows.iter()
                    .map(|r| r.try_get::<String, _>(0).map_err(corrupt))
                    .collect()
            }

            async fn claim_delivery(
                &self,
                event_id: &str,
                token: &str,
                lease_for: Duration,
                now: SystemTime,
            ) -> Result<Option<Delivery>, StoreError> {
                let done = sqlx::query(
                    "UPDATE idem_webhook_deliveries SET lease_token = $2, lease_expires_at = $3, \
                     attempts = attempts + 1, updated_at = $4 \
                     WHERE dedupe_key = $1 AND state = 'pending' AND next_attempt_at <= $4 \
                     AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
                     AND endpoint_id IN (SELECT id FROM idem_webhook_endpoints WHERE state = 'enabled')",
                )
                .bind(dedupe_key(event_id))
                .bind(token)
                .bind(to_millis(now + lease_for))
                .bind(to_millis(now))
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                if done.rows_affected() == 1 {
                    self.delivery(event_id).await
                } else {
                    Ok(None)
                }
            }

            async fn release_delivery(&self, event_id: &str, token: &str, due: SystemTime, now: SystemTime) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE idem_webhook_deliveries SET lease_token = NULL, lease_expires_at = NULL, \
                     attempts = attempts - 1, next_attempt_at = $3, updated_at = $4 \
                     WHERE dedupe_key = $1 AND lease_token = $2",
                )
                .bind(dedupe_key(event_id))
                .bind(token)
                .bind(to_millis(due))
                .bind(to_millis(now))
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(())
            }

            async fn finish_attempt(
                &self,
                event_id: &str,
                token: &str,
                result: &AttemptResult,
                now: SystemTime,
            ) -> Result<Option<EndpointStatus>, StoreError> {
                let key = dedupe_key(event_id);
                let now_ms = to_millis(now);
                let mut tx = self.begin_tx().await?;
                let a = &result.attempt;
                let delivered_at = (result.state == DeliveryState::Delivered).then_some(now_ms);
                let moved = sqlx::query(
                    "UPDATE idem_webhook_deliveries SET state = $3, next_attempt_at = $4, \
                     lease_token = NULL, lease_expires_at = NULL, last_status = $5, last_error = $6, \
                     delivered_at = COALESCE(delivered_at, $7), updated_at = $8 \
                     WHERE dedupe_key = $1 AND lease_token = $2",
                )
                .bind(&key)
                .bind(token)
                .bind(result.state.as_str())
                .bind(to_millis(result.next_attempt_at))
                .bind(a.status.map(i64::from))
                .bind(a.error.as_deref())
                .bind(delivered_at)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                if moved.rows_affected() != 1 {
                    return Ok(None);
                }
                sqlx::query(
                    "INSERT INTO idem_webhook_attempts (dedupe_key, attempt, webhook_id, \
                     webhook_timestamp, started_at, finished_at, outcome, status, error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&key)
                .bind(i64::from(a.attempt))
                .bind(&a.webhook_id)
                .bind(a.webhook_timestamp)
                .bind(to_millis(a.started_at))
                .bind(to_millis(a.finished_at))
                .bind(&a.outcome)
                .bind(a.status.map(i64::from))
                .bind(a.error.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                let endpoint_id: String = sqlx::query(
                    "SELECT endpoint_id FROM idem_webhook_deliveries WHERE dedupe_key = $1",
                )
                .bind(&key)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?
                .try_get(0)
                .map_err(corrupt)?;
                if result.endpoint_failed {
                    let reason = format!(
                        "disabled after {} failed attempts in a row (last: {})",
                        result.disable_after,
                        a.error.as_deref().unwrap_or("failure")
                    );
                    sqlx::query(
                        "UPDATE idem_webhook_endpoints SET \
                         consecutive_failures = consecutive_failures + 1, \
                         state = CASE WHEN consecutive_failures + 1 >= $2 THEN 'disabled' ELSE state END, \
                         disabled_at = CASE WHEN consecutive_failures + 1 >= $2 AND state = 'enabled' THEN $3 ELSE disabled_at END, \
                         disabled_reason = CASE WHEN consecutive_failures + 1 >= $2 AND state = 'enabled' THEN $4 ELSE disabled_reason END, \
                         updated_at = $3 WHERE id = $1",
                    )
                    .bind(&endpoint_id)
                    .bind(i64::from(result.disable_after))
                    .bind(now_ms)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                } else {
                    sqlx::query(
                        "UPDATE idem_webhook_endpoints SET consecutive_failures = 0, updated_at = $2 WHERE id = $1",
                    )
                    .bind(&endpoint_id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                }
                let row = sqlx::query(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM idem_webhook_endpoints WHERE id = $1"
                ))
                .bind(&endpoint_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                let status = row.as_ref().map(decode_endpoint).transpose()?;
                tx.commit().await.map_err(StoreError::from_sqlx)?;
                Ok(status)
            }

            async fn attempts(&self, event_id: &str) -> Result<Vec<DeliveryAttempt>, StoreError> {
                let rows = sqlx::query(
                    "SELECT attempt, webhook_id, webhook_timestamp, started_at, finished_at, \
                     outcome, status, error FROM idem_webhook_attempts WHERE dedupe_key = $1 \
                     ORDER BY attempt",
                )
                .bind(dedupe_key(event_id))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
                rows.iter().map(decode_attempt).collect()
            }

            async fn purge_deliveries(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
                let mut tx = self.begin_tx().await?;
                let keys: Vec<String> = sqlx::query(
                    "SELECT dedupe_key FROM idem_webhook_deliveries \
                     WHERE state IN ('delivered', 'failed') AND updated_at < $1 LIMIT $2",
                )
                .bind(to_millis(before))
                .bind(i64::from(batch))
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?
                .iter()
                .map(|r| r.try_get::<String, _>(0).map_err(corrupt))
                .collect::<Result<_, _>>()?;
                for key in &keys {
                    for sql in [
                        "DELETE FROM idem_webhook_attempts WHERE dedupe_key = $1",
                        "DELETE FROM idem_webhook_deliveries WHERE dedupe_key = $1",
                    ] {
                        sqlx::query(sql)
                            .bind(key)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                    }
                }
                tx.commit().await.map_err(StoreError::from_sqlx)?;
                Ok(keys.len() as u64)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
async fn sqlite_begin(
    pool: &sqlx::SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    // IMMEDIATE takes the write lock up front, so a handler's writes never
    // fail on a lock upgrade halfway through.
    pool.begin_with("BEGIN IMMEDIATE").await
}

#[cfg(feature = "postgres")]
async fn pg_begin(
    pool: &sqlx::PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin().await
}

#[cfg(feature = "sqlite")]
impl_webhook_store!(crate::ledger::SqliteStore, sqlx::Sqlite, sqlite_begin);

#[cfg(feature = "postgres")]
impl_webhook_store!(crate::ledger::PgStore, sqlx::Postgres, pg_begin);
