//! Where inbound records live: the [`InboundStore`] trait. Its SQL
//! implementations on [`SqliteStore`](crate::ledger::SqliteStore) and
//! [`PgStore`](crate::ledger::PgStore) are in `crate::store`, beside the
//! stores' ledger halves and migrations.
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
    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
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
