//! The ledger: the local record of every external operation.
//!
//! One row per idempotency key. The row is written before the first request
//! leaves the process, moves through the states below, and is what every retry
//! (in this process or another, after a crash) consults first.
//!
//! ```text
//! pending ──claim──▶ sending ──▶ succeeded
//!    ▲                  │   ├──▶ failed
//!    └── not processed ─┘   └──▶ unknown ──(resend where safe)──▶ sending
//! any of pending/failed/unknown ──operator bump──▶ superseded  (v<n+1> starts as pending)
//! ```
//!
//! Two stores implement [`LedgerStore`] for production: [`SqliteStore`]
//! (embedded default, feature `sqlite`) and [`PgStore`] (many workers on many
//! machines, feature `postgres`).
//! [`MemoryStore`] keeps the same semantics in memory, for fast tests. All
//! three run the same conformance suite.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;

mod error;
mod memory;
pub(crate) mod sql;

pub(crate) use sql::provider_id_of;

pub use error::StoreError;
pub use memory::MemoryStore;

/// The SQL stores, at their old paths (they live in [`crate::store`]).
#[cfg(feature = "postgres")]
pub use crate::store::postgres::PgStore;
/// The SQL stores, at their old paths (they live in [`crate::store`]).
#[cfg(feature = "sqlite")]
pub use crate::store::sqlite::SqliteStore;

/// The state of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OperationState {
    /// Recorded; not yet sent (or provably not processed and safe to send).
    Pending,
    /// A worker holds a lease and is sending it.
    Sending,
    /// The provider accepted it; the result is stored.
    Succeeded,
    /// The provider rejected it; the rejection is stored.
    Failed,
    /// It may or may not have taken effect.
    Unknown,
    /// An operator moved it to the next attempt.
    Superseded,
}

impl OperationState {
    /// All states, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Sending,
        Self::Succeeded,
        Self::Failed,
        Self::Unknown,
        Self::Superseded,
    ];

    /// The stored text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::Superseded => "superseded",
        }
    }

    /// Whether no further change happens without an operator.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Superseded)
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OperationState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown operation state {s:?}")))
    }
}

/// A ledger row.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Operation {
    /// The idempotency key.
    pub key: IdempotencyKey,
    /// Provider name, for example `stripe`.
    pub provider: String,
    /// Operation name, for example `payment_intents.create`.
    pub operation: String,
    /// Fingerprint of the request the key was first used for.
    pub fingerprint: Fingerprint,
    /// Current state.
    pub state: OperationState,
    /// How many times the operation was claimed for sending.
    pub claims: u32,
    /// When the current lease ends (state `sending`).
    pub lease_expires_at: Option<SystemTime>,
    /// When the operation was first claimed for sending: a conservative start
    /// of a provider's key-retention window.
    pub first_sent_at: Option<SystemTime>,
    /// When the row was created.
    pub created_at: SystemTime,
    /// When the row last changed.
    pub updated_at: SystemTime,
    /// Stored provider status (succeeded, failed, sometimes unknown).
    pub response_status: Option<u16>,
    /// Stored provider body.
    pub response_body: Option<Bytes>,
    /// Why the operation failed or is unknown, in words (no secrets).
    pub note: Option<String>,
    /// Progress recorded inside a multi-step operation (for example a
    /// container id), kept across claims.
    pub checkpoint: Option<String>,
    /// The key that replaced this one (state `superseded`).
    pub superseded_by: Option<IdempotencyKey>,
    /// The earliest time an attempt may have taken effect at the provider.
    /// Set when an outcome becomes unknown (and on success); cleared only
    /// when reconciliation proves the effect absent. While it is set the row
    /// never returns to `pending` on its own: a later attempt that provably
    /// never left the process leaves it `unknown`.
    pub maybe_applied_at: Option<SystemTime>,
    /// The provider's id for the object (from the stored answer's `id`, `sid`
    /// or `name`), kept when the sweep compacts the row.
    pub provider_id: Option<String>,
    /// When set, the sweep dropped the stored body (the value is the sweep's
    /// cutoff); the key, state, fingerprint, provider id and successor remain.
    pub compacted_at: Option<SystemTime>,
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body is left out: it can hold customer data.
        f.debug_struct("Operation")
            .field("key", &self.key)
            .field("provider", &self.provider)
            .field("operation", &self.operation)
            .field("state", &self.state)
            .field("claims", &self.claims)
            .field("lease_expires_at", &self.lease_expires_at)
            .field("first_sent_at", &self.first_sent_at)
            .field("response_status", &self.response_status)
            .field("note", &self.note)
            .field("checkpoint", &self.checkpoint)
            .field("superseded_by", &self.superseded_by)
            .field("maybe_applied_at", &self.maybe_applied_at)
            .field("provider_id", &self.provider_id)
            .field("compacted_at", &self.compacted_at)
            .finish_non_exhaustive()
    }
}

impl Operation {
    /// Whether a `sending` row's lease has run out at `now` (its sender died).
    pub fn lease_expired(&self, now: SystemTime) -> bool {
        self.state == OperationState::Sending && self.lease_expires_at.is_none_or(|t| t <= now)
    }

    /// Whether an attempt of this key may have taken effect at the provider
    /// and nothing has settled it since.
    pub fn may_have_taken_effect(&self) -> bool {
        self.maybe_applied_at.is_some()
    }
}

/// What [`LedgerStore::begin`] records for a new operation.
#[derive(Debug, Clone)]
pub struct NewOperation {
    /// The key.
    pub key: IdempotencyKey,
    /// Provider name.
    pub provider: String,
    /// Operation name.
    pub operation: String,
    /// Request fingerprint.
    pub fingerprint: Fingerprint,
}

impl NewOperation {
    /// A new-operation record.
    pub fn new(
        key: IdempotencyKey,
        provider: impl Into<String>,
        operation: impl Into<String>,
        fingerprint: Fingerprint,
    ) -> Self {
        Self {
            key,
            provider: provider.into(),
            operation: operation.into(),
            fingerprint,
        }
    }
}

/// A worker's exclusive right to send one operation until `expires_at`.
/// Completing with a lease that was taken over fails with
/// [`StoreError::LeaseLost`] (fencing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The key.
    pub key: IdempotencyKey,
    /// The fencing token.
    pub token: String,
    /// When the lease ends.
    pub expires_at: SystemTime,
}

/// What [`LedgerStore::begin_claimed`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Begin {
    /// The key was new: it is recorded as `sending` under this lease.
    Claimed(Operation, Lease),
    /// The key already existed (same request): its row, unchanged.
    Existing(Operation),
}

/// Which states a claim may start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimFrom {
    /// Only `pending`.
    Pending,
    /// `pending` or `unknown`: the caller has decided a resend with the same
    /// key is safe (provider dedupes it, or reconciliation proved nothing
    /// happened).
    PendingOrUnknown,
}

/// How a claim ends.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Completion {
    /// The provider accepted the request.
    Succeeded {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: Bytes,
    },
    /// The provider rejected it.
    Failed {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: Bytes,
        /// Short reason, no secrets.
        note: String,
    },
    /// It may have taken effect.
    Unknown {
        /// What happened.
        note: String,
        /// Last HTTP status seen, if any.
        status: Option<u16>,
    },
    /// Provably not processed: back to `pending`.
    NotSent {
        /// What happened.
        note: String,
    },
}

/// How reconciliation settled an `unknown` operation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Resolution {
    /// The provider has the object: the operation succeeded.
    Succeeded {
        /// Status to store (200 when found by a lookup).
        status: u16,
        /// The object found, as the provider returned it.
        body: Bytes,
        /// How it was found.
        note: String,
    },
    /// The provider shows no effect: the operation may be sent again with
    /// the same key (back to `pending`).
    NotApplied {
        /// How this was established.
        note: String,
    },
}

/// Filter for [`LedgerStore::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only these states (all when empty).
    pub states: Vec<OperationState>,
    /// Only this provider.
    pub provider: Option<String>,
    /// At most this many rows (default 100).
    pub limit: Option<u32>,
}

/// A store of ledger rows. Every method is atomic on its own.
#[async_trait]
pub trait LedgerStore: Send + Sync + fmt::Debug + 'static {
    /// Records a new operation as `pending`, or returns the existing row for
    /// the key.
    ///
    /// # Errors
    ///
    /// [`StoreError::KeyReused`] when the key exists for another provider,
    /// operation or fingerprint; [`StoreError::Unavailable`] when the
    /// database fails.
    async fn begin(&self, op: &NewOperation, now: SystemTime) -> Result<Operation, StoreError>;

    /// Records a new operation and claims it in one atomic step (one
    /// durable write instead of two): a fresh key is inserted directly as
    /// `sending` under a new lease. When the key already exists, nothing is
    /// changed and the existing row is returned, exactly as
    /// [`begin`](Self::begin) would.
    ///
    /// The default implementation calls `begin` and never claims; stores
    /// override it.
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin).
    async fn begin_claimed(
        &self,
        op: &NewOperation,
        _lease_for: Duration,
        now: SystemTime,
    ) -> Result<Begin, StoreError> {
        Ok(Begin::Existing(self.begin(op, now).await?))
    }

    /// Reads one row.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn get(&self, key: &IdempotencyKey) -> Result<Option<Operation>, StoreError>;

    /// Atomically moves the row to `sending` under a new lease, from the
    /// states `from` allows. Returns `None` when the row is not claimable
    /// (another worker won, or its state forbids it).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn claim(
        &self,
        key: &IdempotencyKey,
        from: ClaimFrom,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Option<Lease>, StoreError>;

    /// Moves a `sending` row whose lease ran out to `unknown`. Returns
    /// whether it did.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn expire_lease(&self, key: &IdempotencyKey, now: SystemTime)
    -> Result<bool, StoreError>;

    /// Records progress inside a claim (fenced by the lease).
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when the lease is no longer held.
    async fn checkpoint(
        &self,
        lease: &Lease,
        value: &str,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// Extends a held lease to `now + lease_for` (fenced by the token and the
    /// `sending` state). Long multi-step operations call it between steps.
    ///
    /// The default implementation refuses, for stores that predate it.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when the row was expired or claimed by
    /// another worker; [`StoreError::Unavailable`] when the database fails.
    async fn renew(
        &self,
        lease: &Lease,
        _lease_for: Duration,
        _now: SystemTime,
    ) -> Result<Lease, StoreError> {
        Err(StoreError::Unavailable {
            message: format!("this ledger store cannot renew the lease of {}", lease.key),
            source: None,
        })
    }

    /// Ends a claim, fenced on "no newer claim": it succeeds while the
    /// lease's token is still the row's, even after the lease expired, so a
    /// late but definitive answer is kept. After expiry (row `unknown`) or a
    /// reconciliation that found nothing (row `pending`), only a definitive
    /// completion (`Succeeded`, `Failed`) is accepted there. A `NotSent`
    /// completion of a row that may have taken effect leaves it `unknown`.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when another claim, a reconciliation that
    /// settled the row, or an operator bump came in between.
    async fn complete(
        &self,
        lease: &Lease,
        completion: &Completion,
        now: SystemTime,
    ) -> Result<Operation, StoreError>;

    /// Settles an `unknown` row (or a `sending` row whose lease expired)
    /// after reconciliation with the provider.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidState`] when the row is in another state.
    async fn resolve(
        &self,
        key: &IdempotencyKey,
        resolution: &Resolution,
        now: SystemTime,
    ) -> Result<Operation, StoreError>;

    /// Operator retry: marks the row `superseded` and returns the next
    /// attempt's key. Refused while a live lease is held, when the row is
    /// already superseded, and when it `succeeded` unless `force`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] or [`StoreError::InvalidState`].
    async fn bump(
        &self,
        key: &IdempotencyKey,
        force: bool,
        now: SystemTime,
    ) -> Result<IdempotencyKey, StoreError>;

    /// Lists rows, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Operation>, StoreError>;

    /// The sweep: compacts up to `batch` rows in a terminal state
    /// (`succeeded`, `failed`, `superseded`) last changed before `before`.
    /// Compaction drops the stored body and keeps the row (key, state,
    /// fingerprint, provider id, successor), so a redelivered job with the
    /// same key is still answered from the ledger and never sent again.
    /// Returns how many rows were compacted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn purge(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError>;

    /// Deletes up to `batch` rows in a terminal state last changed before
    /// `before`, outright. **A retry of a deleted key sends again**: use it
    /// only for keys whose jobs can never be redelivered. Returns how many
    /// rows were deleted.
    ///
    /// The default implementation refuses.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    async fn forget(&self, _before: SystemTime, _batch: u32) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable {
            message: "this ledger store does not support deleting rows".to_owned(),
            source: None,
        })
    }
}
