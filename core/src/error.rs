//! Errors of the core crate.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;

use crate::key::{IdempotencyKey, MAX_KEY_LEN};
use crate::ledger::OperationState;

/// A part of an idempotency key, named in [`KeyError`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyPart {
    /// The shop slug.
    Shop,
    /// The table name.
    Table,
    /// The row id.
    Row,
    /// The attempt number after `_v`.
    Attempt,
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shop => "shop",
            Self::Table => "table",
            Self::Row => "row",
            Self::Attempt => "attempt number",
        })
    }
}

/// Why a text or a set of parts is not a valid [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The whole key is empty.
    #[error("idempotency key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("idempotency key is {len} bytes long; the limit is {MAX_KEY_LEN}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// A `_` separating shop, table and row is missing.
    #[error("idempotency key must look like <shop>_<table>_<row>_v<n>; a `_` separator is missing")]
    MissingSeparator,
    /// No `_v<n>` suffix.
    #[error("idempotency key must end in `_v<n>` with an attempt number")]
    MissingAttempt,
    /// The attempt number is 0.
    #[error("idempotency key attempt number must be 1 or more, not 0")]
    ZeroAttempt,
    /// The attempt number has a leading zero.
    #[error("idempotency key attempt number must not have leading zeros")]
    LeadingZero,
    /// The attempt number does not fit in a `u32`, or cannot be incremented.
    #[error("idempotency key attempt number is too large")]
    AttemptOverflow,
    /// A part is empty.
    #[error("idempotency key {part} is empty")]
    Empty {
        /// The empty part.
        part: KeyPart,
    },
    /// A part starts with a character it may not start with.
    #[error("idempotency key {part} may not start with {ch:?}")]
    BadStart {
        /// The part.
        part: KeyPart,
        /// The offending first character.
        ch: char,
    },
    /// A part holds a character it may not hold.
    #[error("idempotency key {part} may not contain {ch:?} (at byte {index} of the {part})")]
    InvalidChar {
        /// The part.
        part: KeyPart,
        /// The offending character.
        ch: char,
        /// Its byte offset within the part.
        index: usize,
    },
}

/// Errors from a [`LedgerStore`](crate::ledger::LedgerStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or failed; nothing was changed by
    /// this call. Safe to retry later.
    #[error("ledger store unavailable: {message}")]
    Unavailable {
        /// What failed, without credentials.
        message: String,
        /// The underlying database error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The key already names a different request (other provider, operation
    /// or request fingerprint).
    #[error("idempotency key {key} was already used for a different request ({detail})")]
    KeyReused {
        /// The key.
        key: IdempotencyKey,
        /// Which field differs (never the request body).
        detail: String,
    },
    /// No record has this key.
    #[error("no ledger record for idempotency key {key}")]
    NotFound {
        /// The key.
        key: IdempotencyKey,
    },
    /// The record is not in a state that allows the change.
    #[error("ledger record {key} is {state}: {reason}")]
    InvalidState {
        /// The key.
        key: IdempotencyKey,
        /// Its current state.
        state: OperationState,
        /// Why the change is refused.
        reason: &'static str,
    },
    /// The caller's lease was lost (expired and taken over); its result was
    /// not written.
    #[error("lease on {key} was lost; another worker took the operation over")]
    LeaseLost {
        /// The key.
        key: IdempotencyKey,
    },
    /// A stored row could not be read back (corrupt or from a newer version).
    #[error("ledger row is unreadable: {0}")]
    Corrupt(String),
    /// Applying the shipped migrations failed.
    #[error("ledger migration failed: {0}")]
    Migration(String),
    /// A schema name given to [`PgStore::connect_in_schema`](crate::ledger::PgStore::connect_in_schema)
    /// is not a plain lowercase identifier. Nothing was connected.
    #[error("invalid schema name {name:?}: use lowercase letters, digits and _ (at most 63 bytes)")]
    InvalidSchemaName {
        /// The refused name (cut to 64 characters).
        name: String,
    },
}

impl StoreError {
    /// Whether trying the same call later may succeed (the store was down).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn from_sqlx(err: sqlx::Error) -> Self {
        let message = match &err {
            sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_owned(),
            sqlx::Error::PoolClosed => "the connection pool is closed".to_owned(),
            sqlx::Error::Io(e) => format!("I/O error: {e}"),
            sqlx::Error::Database(e) => format!("database error: {}", e.message()),
            other => other.to_string(),
        };
        Self::Unavailable {
            message,
            source: Some(Box::new(err)),
        }
    }
}

/// Errors from the outbound [`Executor`](crate::executor::Executor).
///
/// Every variant that concerns an operation names its key, so an operator
/// can find the record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The provider rejected the request; the rejection is recorded as
    /// `failed`. A new attempt needs an operator bump.
    #[error("provider rejected {key} with HTTP {status}; recorded as failed")]
    Rejected {
        /// The key.
        key: IdempotencyKey,
        /// The provider's HTTP status.
        status: StatusCode,
        /// The provider's response body, for the adapter to parse. Not shown
        /// by `Display`.
        body: Bytes,
        /// Whether this came from the ledger (an earlier run) rather than
        /// from the wire now.
        from_ledger: bool,
    },
    /// The request may have reached the provider but no usable answer came
    /// back, and resending is not safe. The record is `unknown`.
    #[error(
        "outcome of {key} is unknown ({reason}); not resent. Reconcile with the provider, \
         then resolve the record or bump to the next attempt"
    )]
    OutcomeUnknown {
        /// The key.
        key: IdempotencyKey,
        /// What happened, without secrets.
        reason: String,
    },
    /// The request provably did not take effect (never sent, or the provider
    /// said it was not processed). The record is back to `pending`, so a later
    /// run sends it with the same key.
    #[error(
        "{key} was not processed by the provider ({reason}); safe to retry later with the same key"
    )]
    NotSent {
        /// The key.
        key: IdempotencyKey,
        /// What happened.
        reason: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<std::time::Duration>,
    },
    /// Another worker holds the operation's lease and is sending it now.
    #[error("{key} is being sent by another worker (lease until {})", crate::time::format_http_date(*lease_expires_at))]
    InFlight {
        /// The key.
        key: IdempotencyKey,
        /// When that worker's lease ends.
        lease_expires_at: SystemTime,
    },
    /// An operator moved the operation to a later attempt.
    #[error("{key} was superseded by {by}; use the new key")]
    Superseded {
        /// The old key.
        key: IdempotencyKey,
        /// The key that replaced it.
        by: IdempotencyKey,
    },
    /// The request could not be prepared (for example an invalid URL or a
    /// body that cannot be buffered). Nothing was recorded or sent.
    #[error("invalid outbound request for {key}: {reason}")]
    InvalidRequest {
        /// The key.
        key: IdempotencyKey,
        /// What is wrong.
        reason: String,
    },
    /// The provider answered definitively (it acted, or it refused), but the
    /// ledger could not record the answer, even after retries. **Not safe to
    /// retry**: a resend could repeat the side effect. The answer is here;
    /// settle the key with it (for example `LedgerStore::resolve` once the
    /// store is back, or the operator console). The row stays `sending` and
    /// becomes `unknown` when its lease runs out.
    #[error(
        "the provider answered {key} with HTTP {} but the ledger could not record it \
         ({}); do not resend: settle the key with this answer", answer.status, answer.error
    )]
    AnswerNotRecorded {
        /// The key.
        key: IdempotencyKey,
        /// The provider's answer and the store's error (boxed, to keep
        /// `Result<_, ExecError>` small).
        answer: Box<UnrecordedAnswer>,
    },
    /// The operation was settled long ago and the sweep has since dropped
    /// its stored answer; the key is remembered, so nothing is sent again.
    #[error("{key} already {state} earlier (provider id {}); its stored answer was compacted by the sweep, nothing was sent", provider_id.as_deref().unwrap_or("unknown"))]
    Compacted {
        /// The key.
        key: IdempotencyKey,
        /// `succeeded` or `failed`.
        state: crate::ledger::OperationState,
        /// The provider's id for the object, when it was recorded.
        provider_id: Option<String>,
    },
    /// The ledger failed. When this happens before sending, nothing was sent.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The definitive answer carried by [`ExecError::AnswerNotRecorded`].
#[derive(Debug)]
#[non_exhaustive]
pub struct UnrecordedAnswer {
    /// The provider's HTTP status.
    pub status: StatusCode,
    /// Whether the provider accepted the request (else it rejected it).
    pub succeeded: bool,
    /// The provider's id for the object, when the answer names one.
    pub provider_id: Option<String>,
    /// The provider's body. Not shown by `Display`.
    pub body: Bytes,
    /// Why the write failed.
    pub error: StoreError,
}

impl ExecError {
    /// The key the error concerns, if any.
    pub fn key(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::Rejected { key, .. }
            | Self::OutcomeUnknown { key, .. }
            | Self::NotSent { key, .. }
            | Self::InFlight { key, .. }
            | Self::Superseded { key, .. }
            | Self::InvalidRequest { key, .. }
            | Self::AnswerNotRecorded { key, .. }
            | Self::Compacted { key, .. } => Some(key),
            Self::Store(StoreError::KeyReused { key, .. })
            | Self::Store(StoreError::NotFound { key })
            | Self::Store(StoreError::InvalidState { key, .. })
            | Self::Store(StoreError::LeaseLost { key }) => Some(key),
            Self::Store(_) => None,
        }
    }

    /// Whether running the same job again later, with the same key, may
    /// succeed without operator action.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NotSent { .. } | Self::InFlight { .. } => true,
            Self::Store(e) => e.is_unavailable(),
            _ => false,
        }
    }

    /// Whether the outcome is unknown and needs reconciliation.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown { .. })
    }
}

/// Errors from [`Executor::read`](crate::executor::Executor::read), an
/// unrecorded `GET`/`HEAD`. A read touches no ledger row, so no variant names
/// a key; none shows the request's URL (it may carry credentials).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The request is not a safe read (only `GET` and `HEAD` are). Nothing
    /// was sent: a write must go through
    /// [`Executor::execute`](crate::executor::Executor::execute) and the
    /// ledger.
    #[error(
        "refused to send {method} to {provider} as an unrecorded read: only GET and HEAD \
         bypass the ledger"
    )]
    UnsafeMethod {
        /// The provider.
        provider: String,
        /// The refused method.
        method: http::Method,
    },
    /// The request could not be prepared (for example an invalid header).
    /// Nothing was sent.
    #[error("invalid read request to {provider}: {reason}")]
    InvalidRequest {
        /// The provider.
        provider: String,
        /// What is wrong.
        reason: String,
    },
    /// No complete answer arrived within the provider's retry bounds.
    #[error("read from {provider} failed after {attempts} attempt(s): {error}")]
    Transport {
        /// The provider.
        provider: String,
        /// Attempts on the wire.
        attempts: u32,
        /// The last attempt's failure (its message carries no URL).
        error: crate::executor::TransportError,
    },
}

impl ReadError {
    /// Whether the request was refused because its method is not a read.
    pub fn is_unsafe_method(&self) -> bool {
        matches!(self, Self::UnsafeMethod { .. })
    }

    /// The transport failure, when no answer arrived.
    pub fn transport(&self) -> Option<&crate::executor::TransportError> {
        match self {
            Self::Transport { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the last attempt timed out.
    pub fn is_timeout(&self) -> bool {
        self.transport()
            .is_some_and(|e| e.kind == crate::executor::TransportKind::Timeout)
    }

    /// Whether reading again later may succeed (a transport failure).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transport { .. })
    }
}
