//! The executor's errors: [`ExecError`] (with the [`UnrecordedAnswer`] it may carry) for
//! recorded writes and [`ReadError`] for unrecorded reads.
//!
//! The executor sits on top: it wraps the ledger's [`StoreError`] and names keys, never the
//! other way round.

use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;

use super::{TransportError, TransportKind};
use crate::key::IdempotencyKey;
use crate::ledger::{OperationState, StoreError};

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
        state: OperationState,
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
        error: TransportError,
    },
}

impl ReadError {
    /// Whether the request was refused because its method is not a read.
    pub fn is_unsafe_method(&self) -> bool {
        matches!(self, Self::UnsafeMethod { .. })
    }

    /// The transport failure, when no answer arrived.
    pub fn transport(&self) -> Option<&TransportError> {
        match self {
            Self::Transport { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the last attempt timed out.
    pub fn is_timeout(&self) -> bool {
        self.transport()
            .is_some_and(|e| e.kind == TransportKind::Timeout)
    }

    /// Whether reading again later may succeed (a transport failure).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transport { .. })
    }
}
