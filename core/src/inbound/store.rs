//! Where inbound records live: the [`InboundStore`] trait and its SQL
//! implementations on [`SqliteStore`](crate::ledger::SqliteStore) and
//! [`PgStore`](crate::ledger::PgStore).
//!
//! One row per (actor, endpoint, key), in the `idem_inbound` table created by
//! the crate's shipped migrations. The race between two first requests is
//! decided by that table's UNIQUE index: both insert with
//! `ON CONFLICT DO NOTHING`, and exactly one sees a row affected. Completing
//! a record is fenced by its lease token, so a request whose lease ran out
//! cannot overwrite the answer of the request that took over.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use http::{HeaderName, HeaderValue};
use tokio::sync::Notify;

use super::header::ClientKey;
use crate::error::StoreError;
use crate::fingerprint::Fingerprint;

/// Which record a request maps to: who asked, at which endpoint, with which
/// key. One tenant's key never reaches another tenant's record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The actor (user or API client) from the actor extractor; empty for
    /// anonymous requests.
    pub actor: String,
    /// The endpoint name from its [`EndpointConfig`](super::EndpointConfig).
    pub endpoint: String,
    /// The client's key.
    pub key: ClientKey,
}

/// What [`InboundStore::begin`] is asked to record.
#[derive(Debug, Clone)]
pub struct BeginRequest<'a> {
    /// The record's scope.
    pub scope: &'a Scope,
    /// The request's fingerprint.
    pub fingerprint: &'a Fingerprint,
    /// How long a completed answer is replayed.
    pub ttl: Duration,
    /// How long the in-flight lease lasts.
    pub lease_for: Duration,
}

/// The state of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordState {
    /// A request holds the lease and is running the handler.
    InFlight,
    /// The answer is stored.
    Completed,
}

impl RecordState {
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "in_flight" => Ok(Self::InFlight),
            "completed" => Ok(Self::Completed),
            other => Err(StoreError::Corrupt(format!(
                "unknown inbound record state {other:?}"
            ))),
        }
    }
}

/// A stored handler answer.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// The headers chosen for replay (at least `Content-Type` and `Location`
    /// when present).
    pub headers: HeaderMap,
    /// The body; empty when `replayable` is false.
    pub body: Bytes,
    /// False when the body was too large or streamed and was not stored: a
    /// retry is then refused rather than given a broken replay.
    pub replayable: bool,
}

impl fmt::Debug for StoredResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body and header values can hold customer data.
        f.debug_struct("StoredResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("replayable", &self.replayable)
            .finish()
    }
}

/// One inbound record as read back from the store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InboundRecord {
    /// Its scope.
    pub scope: Scope,
    /// Fingerprint of the request that made it.
    pub fingerprint: Fingerprint,
    /// In flight or completed.
    pub state: RecordState,
    /// When the in-flight lease ends.
    pub lease_expires_at: Option<SystemTime>,
    /// When the replay window ends.
    pub replay_until: SystemTime,
    /// When the record was made.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// The stored answer, once completed.
    pub response: Option<StoredResponse>,
}

impl InboundRecord {
    /// Whether an in-flight record's lease has run out at `now` (its request
    /// died without an answer).
    pub fn lease_expired(&self, now: SystemTime) -> bool {
        self.state == RecordState::InFlight && self.lease_expires_at.is_none_or(|t| t <= now)
    }
}

/// The right to run the handler for one record, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundLease {
    /// The record's scope.
    pub scope: Scope,
    /// The fencing token.
    pub token: String,
    /// When the lease ends.
    pub expires_at: SystemTime,
    /// When the replay window of the answer will end.
    pub replay_until: SystemTime,
    /// True when an existing record (expired window, or a dead request's
    /// lease) was taken over rather than a new one inserted.
    pub took_over: bool,
}

/// What [`InboundStore::begin`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Begin {
    /// This request owns the record and runs the handler.
    Started(InboundLease),
    /// A live record exists. The caller checks its fingerprint and state.
    Existing(InboundRecord),
}

/// One sweeper run, as written to the audit table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepRun {
    /// When the run started.
    pub started_at: SystemTime,
    /// When it finished.
    pub finished_at: SystemTime,
    /// Records made before this time were eligible.
    pub cutoff: SystemTime,
    /// How many records were deleted.
    pub deleted: u64,
    /// How many batches ran.
    pub batches: u32,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

impl SweepRun {
    /// A run record.
    pub fn new(
        started_at: SystemTime,
        finished_at: SystemTime,
        cutoff: SystemTime,
        deleted: u64,
        batches: u32,
        error: Option<String>,
    ) -> Self {
        Self {
            started_at,
            finished_at,
            cutoff,
            deleted,
            batches,
            error,
        }
    }
}

/// A store of inbound records. Every method is atomic on its own.
#[async_trait]
pub trait InboundStore: Send + Sync + fmt::Debug + 'static {
    /// Inserts an in-flight record, or takes over one whose replay window
    /// ended or whose request died (lease expired, same fingerprint), or
    /// returns the live record that is there.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn begin(&self, req: &BeginRequest<'_>, now: SystemTime) -> Result<Begin, StoreError>;

    /// Reads one record.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn get(&self, scope: &Scope) -> Result<Option<InboundRecord>, StoreError>;

    /// Stores the answer, fenced by the lease. Returns false when the lease
    /// was lost (another request took the record over); nothing is written
    /// then.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn complete(
        &self,
        lease: &InboundLease,
        response: &StoredResponse,
        now: SystemTime,
    ) -> Result<bool, StoreError>;

    /// Deletes the in-flight record, fenced by the lease, so a retry runs the
    /// handler again. Returns whether a record was deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn release(&self, lease: &InboundLease) -> Result<bool, StoreError>;

    /// Extends the in-flight lease to `now + lease_for`, fenced by the lease
    /// token (the heartbeat of a running handler). Returns false when the
    /// lease was lost (the record completed, was released or taken over);
    /// nothing is written then.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn renew(
        &self,
        lease: &InboundLease,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError>;

    /// Deletes up to `batch` records made before `cutoff` whose replay
    /// window has ended and that no live request holds. Returns how many.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn sweep_batch(
        &self,
        cutoff: SystemTime,
        now: SystemTime,
        batch: u32,
    ) -> Result<u64, StoreError>;

    /// Writes one audit row for a sweeper run.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn record_sweep(&self, run: &SweepRun) -> Result<(), StoreError>;

    /// The latest sweeper runs, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn sweep_runs(&self, limit: u32) -> Result<Vec<SweepRun>, StoreError>;

    /// Waits until the record may have changed (completed or released) or
    /// `timeout` passes. The default wakes on completions in this process;
    /// PostgreSQL also wakes on completions in other processes through
    /// `LISTEN/NOTIFY`.
    async fn wait_for_change(&self, scope: &Scope, timeout: Duration) {
        let notified = local_notifier().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Ok(Some(r)) = self.get(scope).await
            && r.state == RecordState::InFlight
        {
            let _ = tokio::time::timeout(timeout, notified).await;
        }
    }
}

#[async_trait]
impl<T: InboundStore + ?Sized> InboundStore for std::sync::Arc<T> {
    async fn begin(&self, req: &BeginRequest<'_>, now: SystemTime) -> Result<Begin, StoreError> {
        (**self).begin(req, now).await
    }
    async fn get(&self, scope: &Scope) -> Result<Option<InboundRecord>, StoreError> {
        (**self).get(scope).await
    }
    async fn complete(
        &self,
        lease: &InboundLease,
        response: &StoredResponse,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        (**self).complete(lease, response, now).await
    }
    async fn release(&self, lease: &InboundLease) -> Result<bool, StoreError> {
        (**self).release(lease).await
    }
    async fn renew(
        &self,
        lease: &InboundLease,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        (**self).renew(lease, lease_for, now).await
    }
    async fn sweep_batch(
        &self,
        cutoff: SystemTime,
        now: SystemTime,
        batch: u32,
    ) -> Result<u64, StoreError> {
        (**self).sweep_batch(cutoff, now, batch).await
    }
    async fn record_sweep(&self, run: &SweepRun) -> Result<(), StoreError> {
        (**self).record_sweep(run).await
    }
    async fn sweep_runs(&self, limit: u32) -> Result<Vec<SweepRun>, StoreError> {
        (**self).sweep_runs(limit).await
    }
    async fn wait_for_change(&self, scope: &Scope, timeout: Duration) {
        (**self).wait_for_change(scope, timeout).await
    }
}

/// Wakes in-process waiters whenever a record completes or is released.
pub(crate) fn local_notifier() -> &'static Notify {
    static NOTIFY: OnceLock<Notify> = OnceLock::new();
    NOTIFY.get_or_init(Notify::new)
}

/// A store whose handler can run inside the store's own transaction (see
/// [`with_idempotency_tx`](super::with_idempotency_tx)).
#[async_trait]
pub trait TxInboundStore: InboundStore {
    /// The sqlx database.
    type Db: sqlx::Database;

    /// Opens a transaction on the store's pool.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn begin_tx(&self) -> Result<sqlx::Transaction<'static, Self::Db>, StoreError>;

    /// As [`InboundStore::complete`], inside `tx`: the answer commits or
    /// rolls back with the handler's own writes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn complete_in(
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        lease: &InboundLease,
        response: &StoredResponse,
        now: SystemTime,
    ) -> Result<bool, StoreError>;
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql {
    use super::*;
    use crate::clock::from_millis;
    use sqlx::Row;

    pub(crate) const COLUMNS: &str = "actor, endpoint, key, fingerprint, state, \
        lease_expires_at, replay_until, created_at, updated_at, response_status, \
        response_headers, response_body, replayable";

    pub(crate) const INSERT: &str = "INSERT INTO idem_inbound (actor, endpoint, key, \
        fingerprint, state, lease_token, lease_expires_at, replay_until, created_at, updated_at, \
        replayable) VALUES ($1, $2, $3, $4, 'in_flight', $5, $6, $7, $8, $8, TRUE) \
        ON CONFLICT (actor, endpoint, key) DO NOTHING";

    /// Takes over a record whose replay window ended (and that no live
    /// request holds), or an in-flight record for the same request whose
    /// lease ran out.
    pub(crate) const TAKE_OVER: &str = "UPDATE idem_inbound SET fingerprint = $4, \
        state = 'in_flight', lease_token = $5, lease_expires_at = $6, replay_until = $7, \
        created_at = $8, updated_at = $8, response_status = NULL, response_headers = NULL, \
        response_body = NULL, replayable = TRUE, waiting = FALSE \
        WHERE actor = $1 AND endpoint = $2 AND key = $3 AND ( \
        (replay_until <= $8 AND NOT (state = 'in_flight' AND lease_expires_at > $8)) \
        OR (state = 'in_flight' AND lease_expires_at <= $8 AND fingerprint = $4))";

    pub(crate) const COMPLETE: &str = "UPDATE idem_inbound SET state = 'completed', \
        lease_token = NULL, lease_expires_at = NULL, response_status = $5, \
        response_headers = $6, response_body = $7, replayable = $8, updated_at = $9 \
        WHERE actor = $1 AND endpoint = $2 AND key = $3 AND state = 'in_flight' \
        AND lease_token = $4";

    pub(crate) const RENEW: &str = "UPDATE idem_inbound SET lease_expires_at = $5 \
        WHERE actor = $1 AND endpoint = $2 AND key = $3 AND state = 'in_flight' \
        AND lease_token = $4";

    /// A waiter's mark on an in-flight record (PostgreSQL notifies only
    /// marked records when they settle).
    #[cfg(feature = "postgres")]
    pub(crate) const MARK_WAITING: &str = "UPDATE idem_inbound SET waiting = TRUE \
        WHERE actor = $1 AND endpoint = $2 AND key = $3 AND state = 'in_flight'";

    pub(crate) const RELEASE: &str = "DELETE FROM idem_inbound WHERE actor = $1 AND \
        endpoint = $2 AND key = $3 AND state = 'in_flight' AND lease_token = $4";

    pub(crate) const SWEEP: &str = "DELETE FROM idem_inbound WHERE (actor, endpoint, key) IN \
        (SELECT actor, endpoint, key FROM idem_inbound WHERE created_at < $1 \
        AND replay_until <= $2 AND NOT (state = 'in_flight' AND lease_expires_at > $2) \
        LIMIT $3)";

    pub(crate) const RECORD_SWEEP: &str = "INSERT INTO idem_inbound_sweeps (started_at, \
        finished_at, cutoff, deleted, batches, error) VALUES ($1, $2, $3, $4, $5, $6)";

    pub(crate) const SWEEP_RUNS: &str = "SELECT started_at, finished_at, cutoff, deleted, \
        batches, error FROM idem_inbound_sweeps ORDER BY id DESC LIMIT $1";

    /// Mirrors the `WHERE` of [`TAKE_OVER`], to skip the write when it
    /// cannot match. The statement itself decides any race.
    pub(crate) fn can_take_over(record: &InboundRecord, fp: &Fingerprint, now: SystemTime) -> bool {
        let live_lease = record.state == RecordState::InFlight
            && record.lease_expires_at.is_some_and(|t| t > now);
        let window_over = record.replay_until <= now && !live_lease;
        let dead_same_request = record.state == RecordState::InFlight
            && record.lease_expires_at.is_some_and(|t| t <= now)
            && record.fingerprint == *fp;
        window_over || dead_same_request
    }

    pub(crate) fn select() -> String {
        format!(
            "SELECT {COLUMNS} FROM idem_inbound WHERE actor = $1 AND endpoint = $2 AND key = $3"
        )
    }

    /// Stored header form: `name: value` lines.
    pub(crate) fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    }

    pub(crate) fn decode_headers(raw: &[u8]) -> Result<HeaderMap, StoreError> {
        let mut headers = HeaderMap::new();
        for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let at = line
                .windows(2)
                .position(|w| w == b": ")
                .ok_or_else(|| StoreError::Corrupt("stored header line without ': '".into()))?;
            let name = HeaderName::from_bytes(&line[..at])
                .map_err(|e| StoreError::Corrupt(format!("stored header name: {e}")))?;
            let value = HeaderValue::from_bytes(&line[at + 2..])
                .map_err(|e| StoreError::Corrupt(format!("stored header value: {e}")))?;
            headers.append(name, value);
        }
        Ok(headers)
    }

    fn corrupt(e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }

    pub(crate) fn decode_record<R>(row: &R) -> Result<InboundRecord, StoreError>
    where
        R: Row,
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let text = |col: &str| row.try_get::<String, _>(col).map_err(corrupt);
        let int = |col: &str| row.try_get::<i64, _>(col).map_err(corrupt);
        let opt_int = |col: &str| row.try_get::<Option<i64>, _>(col).map_err(corrupt);
        let key = ClientKey::new(text("key")?).map_err(corrupt)?;
        let state = RecordState::parse(&text("state")?)?;
        let response = match opt_int("response_status")? {
            Some(status) if state == RecordState::Completed => {
                let status = u16::try_from(status)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| corrupt(format!("stored status {status}")))?;
                let headers = row
                    .try_get::<Option<Vec<u8>>, _>("response_headers")
                    .map_err(corrupt)?
                    .unwrap_or_default();
                let body = row
                    .try_get::<Option<Vec<u8>>, _>("response_body")
                    .map_err(corrupt)?
                    .unwrap_or_default();
                Some(StoredResponse {
                    status,
                    headers: decode_headers(&headers)?,
                    body: Bytes::from(body),
                    replayable: row.try_get::<bool, _>("replayable").map_err(corrupt)?,
                })
            }
            _ => None,
        };
        Ok(InboundRecord {
            scope: Scope {
                actor: text("actor")?,
                endpoint: text("endpoint")?,
                key,
            },
            fingerprint: Fingerprint::from_stored(text("fingerprint")?),
            state,
            lease_expires_at: opt_int("lease_expires_at")?.map(from_millis),
            replay_until: from_millis(int("replay_until")?),
            created_at: from_millis(int("created_at")?),
            updated_at: from_millis(int("updated_at")?),
            response,
        })
    }

    pub(crate) fn decode_run<R>(row: &R) -> Result<SweepRun, StoreError>
    where
        R: Row,
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let int = |col: &str| row.try_get::<i64, _>(col).map_err(corrupt);
        Ok(SweepRun {
            started_at: from_millis(int("started_at")?),
            finished_at: from_millis(int("finished_at")?),
            cutoff: from_millis(int("cutoff")?),
            deleted: u64::try_from(int("deleted")?).unwrap_or(0),
            batches: u32::try_from(int("batches")?).unwrap_or(0),
            error: row.try_get::<Option<String>, _>("error").map_err(corrupt)?,
        })
    }
}

/// Writes the [`InboundStore`] and [`TxInboundStore`] impls for one sqlx
/// backend.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! impl_inbound_store {
    ($store:ty, $db:ty, $wait:ident) => {
        impl $store {
            async fn inbound_complete_on<'e, E>(
                executor: E,
                lease: &InboundLease,
                response: &StoredResponse,
                now: SystemTime,
            ) -> Result<bool, StoreError>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let done = sqlx::query(sql::COMPLETE)
                    .bind(&lease.scope.actor)
                    .bind(&lease.scope.endpoint)
                    .bind(lease.scope.key.as_str())
                    .bind(&lease.token)
                    .bind(i64::from(response.status.as_u16()))
                    .bind(sql::encode_headers(&response.headers))
                    .bind(response.body.to_vec())
                    .bind(response.replayable)
                    .bind(to_millis(now))
                    .execute(executor)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }
        }

        #[async_trait]
        impl InboundStore for $store {
            async fn begin(
                &self,
                req: &BeginRequest<'_>,
                now: SystemTime,
            ) -> Result<Begin, StoreError> {
                let scope = req.scope;
                let expires_at = now + req.lease_for;
                let replay_until = now + req.ttl;
                // Read first: a replay (the key exists and is not stale)
                // costs one SELECT and no write. A fresh key pays one extra
                // index read before its insert.
                if let Some(record) = self.get(scope).await? {
                    if !sql::can_take_over(&record, req.fingerprint, now) {
                        return Ok(Begin::Existing(record));
                    }
                }
                // A record can vanish (swept or released) between the insert
                // and the read; try again a few times.
                for _ in 0..4 {
                    let token = uuid::Uuid::new_v4().to_string();
                    let inserted = sqlx::query(sql::INSERT)
                        .bind(&scope.actor)
                        .bind(&scope.endpoint)
                        .bind(scope.key.as_str())
                        .bind(req.fingerprint.as_str())
                        .bind(&token)
                        .bind(to_millis(expires_at))
                        .bind(to_millis(replay_until))
                        .bind(to_millis(now))
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                    let lease = |took_over| InboundLease {
                        scope: scope.clone(),
                        token: token.clone(),
                        expires_at,
                        replay_until,
                        took_over,
                    };
                    if inserted.rows_affected() == 1 {
                        return Ok(Begin::Started(lease(false)));
                    }
                    // The key exists. A replay needs nothing more than this
                    // read; only a stale record is worth a conditional write.
                    let Some(record) = self.get(scope).await? else {
                        continue;
                    };
                    if !sql::can_take_over(&record, req.fingerprint, now) {
                        return Ok(Begin::Existing(record));
                    }
                    let taken = sqlx::query(sql::TAKE_OVER)
                        .bind(&scope.actor)
                        .bind(&scope.endpoint)
                        .bind(scope.key.as_str())
                        .bind(req.fingerprint.as_str())
                        .bind(&token)
                        .bind(to_millis(expires_at))
                        .bind(to_millis(replay_until))
                        .bind(to_millis(now))
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                    if taken.rows_affected() == 1 {
                        return Ok(Begin::Started(lease(true)));
                    }
                    // Another request took it over first: look again.
                }
                Err(StoreError::Unavailable {
                    message: "inbound record kept vanishing during begin".into(),
                    source: None,
                })
            }

            async fn get(&self, scope: &Scope) -> Result<Option<InboundRecord>, StoreError> {
                let row = sqlx::query(&sql::select())
                    .bind(&scope.actor)
                    .bind(&scope.endpoint)
                    .bind(scope.key.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                row.as_ref().map(sql::decode_record).transpose()
            }

            async fn complete(
                &self,
                lease: &InboundLease,
                response: &StoredResponse,
                now: SystemTime,
            ) -> Result<bool, StoreError> {
                let done = Self::inbound_complete_on(&self.pool, lease, response, now).await;
                local_notifier().notify_waiters();
                done
            }

            async fn release(&self, lease: &InboundLease) -> Result<bool, StoreError> {
                let done = sqlx::query(sql::RELEASE)
                    .bind(&lease.scope.actor)
                    .bind(&lease.scope.endpoint)
                    .bind(lease.scope.key.as_str())
                    .bind(&lease.token)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                local_notifier().notify_waiters();
                Ok(done.rows_affected() == 1)
            }

            async fn renew(
                &self,
                lease: &InboundLease,
                lease_for: Duration,
                now: SystemTime,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(sql::RENEW)
                    .bind(&lease.scope.actor)
                    .bind(&lease.scope.endpoint)
                    .bind(lease.scope.key.as_str())
                    .bind(&lease.token)
                    .bind(to_millis(now + lease_for))
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn sweep_batch(
                &self,
                cutoff: SystemTime,
                now: SystemTime,
                batch: u32,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(sql::SWEEP)
                    .bind(to_millis(cutoff))
                    .bind(to_millis(now))
                    .bind(i64::from(batch))
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected())
            }

            async fn record_sweep(&self, run: &SweepRun) -> Result<(), StoreError> {
                sqlx::query(sql::RECORD_SWEEP)
                    .bind(to_millis(run.started_at))
                    .bind(to_millis(run.finished_at))
                    .bind(to_millis(run.cutoff))
                    .bind(i64::try_from(run.deleted).unwrap_or(i64::MAX))
                    .bind(i64::from(run.batches))
                    .bind(run.error.as_deref())
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Ok(())
            }

            async fn sweep_runs(&self, limit: u32) -> Result<Vec<SweepRun>, StoreError> {
                let rows = sqlx::query(sql::SWEEP_RUNS)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                rows.iter().map(sql::decode_run).collect()
            }

            async fn wait_for_change(&self, scope: &Scope, timeout: Duration) {
                $wait(self, scope, timeout).await
            }
        }

        #[async_trait]
        impl TxInboundStore for $store {
            type Db = $db;

            async fn begin_tx(&self) -> Result<sqlx::Transaction<'static, $db>, StoreError> {
                begin_tx_on(&self.pool).await
            }

            async fn complete_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                lease: &InboundLease,
                response: &StoredResponse,
                now: SystemTime,
            ) -> Result<bool, StoreError> {
                Self::inbound_complete_on(&mut **tx, lease, response, now).await
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite_impl {
    use super::*;
    use crate::clock::to_millis;
    use crate::ledger::SqliteStore;

    async fn begin_tx_on(
        pool: &sqlx::SqlitePool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        // IMMEDIATE takes the write lock up front, so the handler's writes
        // never fail on a lock upgrade halfway through.
        pool.begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::from_sqlx)
    }

    async fn local_wait(store: &SqliteStore, scope: &Scope, timeout: Duration) {
        let notified = local_notifier().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Ok(Some(r)) = store.get(scope).await
            && r.state == RecordState::InFlight
        {
            let _ = tokio::time::timeout(timeout, notified).await;
        }
    }

    impl_inbound_store!(SqliteStore, sqlx::Sqlite, local_wait);
}

#[cfg(feature = "postgres")]
mod postgres_impl {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::sync::broadcast;

    use super::*;
    use crate::clock::to_millis;
    use crate::ledger::PgStore;

    /// The channel the `idem_inbound` trigger notifies on (payload: the
    /// client key).
    const CHANNEL: &str = "idem_inbound";

    async fn begin_tx_on(
        pool: &sqlx::PgPool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        pool.begin().await.map_err(StoreError::from_sqlx)
    }

    type Listeners = HashMap<String, (broadcast::Sender<String>, tokio::task::JoinHandle<()>)>;

    /// One `LISTEN` connection per database per process, shared by every
    /// waiter; started on the first wait.
    fn subscribe(pool: &sqlx::PgPool) -> broadcast::Receiver<String> {
        static LISTENERS: OnceLock<Mutex<Listeners>> = OnceLock::new();
        let options = pool.connect_options();
        let id = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let mut map = LISTENERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((tx, task)) = map.get(&id)
            && !task.is_finished()
        {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(1024);
        let sender = tx.clone();
        let options = (*options).clone();
        let task = tokio::spawn(async move {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options);
            let Ok(mut listener) = sqlx::postgres::PgListener::connect_with(&pool).await else {
                return;
            };
            if listener.listen(CHANNEL).await.is_err() {
                return;
            }
            while let Ok(n) = listener.recv().await {
                let _ = sender.send(n.payload().to_owned());
            }
        });
        map.insert(id, (tx, task));
        rx
    }

    async fn pg_wait(store: &PgStore, scope: &Scope, timeout: Duration) {
        let mut remote = subscribe(&store.pool);
        let local = local_notifier().notified();
        tokio::pin!(local);
        local.as_mut().enable();
        // Mark the record as waited for, after subscribing: a completion
        // before the mark finds no waiter and sends nothing, but then the
        // mark matches no in-flight record and the wait ends here; a
        // completion after it sees the mark and notifies.
        match sqlx::query(sql::MARK_WAITING)
            .bind(&scope.actor)
            .bind(&scope.endpoint)
            .bind(scope.key.as_str())
            .execute(&store.pool)
            .await
        {
            Ok(done) if done.rows_affected() == 1 => {}
            _ => return,
        }
        let key = scope.key.as_str().to_owned();
        let remote_done = async move {
            loop {
                match remote.recv().await {
                    Ok(k) if k == key => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    // The listener stopped: fall back to the timeout.
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(timeout, async {
            tokio::select! {
                () = &mut local => {}
                () = remote_done => {}
            }
        })
        .await;
    }

    impl_inbound_store!(PgStore, sqlx::Postgres, pg_wait);
}
