//! The adapter kit: what every provider adapter (`idem-stripe`,
//! `idem-twilio`, `idem-gbp`, `idem-meta`, and yours) shares.
//!
//! * [`Provider`]: a provider's name, safety class, classifier, default
//!   retry and wire error, in one place; [`Provider::executor_provider`]
//!   builds the executor's [`executor::Provider`] from it.
//! * [`WireError`]: the provider's own error answer, parsed once from a
//!   rejected response.
//! * [`CallError`]: the one error shape every adapter returns. Each
//!   [`ExecError`] is mapped here, once ([`CallError::from_exec`]); the
//!   adapter's own cases sit in [`CallError::Adapter`].
//!
//! A worker's match on the shared cases is the same code for every adapter
//! (the `idem-examples` crate runs it on all four):
//!
//! ```
//! use idem::adapter::{AdapterFailure, CallError, WireError};
//!
//! /// What a worker does next, whichever adapter failed.
//! fn next_step<E: WireError, A: AdapterFailure<E>>(err: &CallError<E, A>) -> &'static str {
//!     match err {
//!         CallError::InFlight { .. } => "another worker is sending it: try later",
//!         CallError::OutcomeUnknown { resend_safe_until: Some(_), .. } => "resend, same key",
//!         CallError::OutcomeUnknown { .. } => "reconcile, or an operator bumps the key",
//!         e if e.is_retryable() => "try later with the same key",
//!         _ => "an operator looks at it",
//!     }
//! }
//!
//! # #[derive(Debug, thiserror::Error)] #[error("wire")] struct Wire;
//! # impl WireError for Wire {
//! #     fn parse(_: http::StatusCode, _: Option<&http::HeaderMap>, _: &[u8]) -> Self { Wire }
//! # }
//! let key: idem::IdempotencyKey = "shop_orders_1_v1".parse().unwrap();
//! let err: CallError<Wire> = idem::ExecError::OutcomeUnknown { key, reason: "timeout".into() }.into();
//! assert_eq!(next_step(&err), "reconcile, or an operator bumps the key");
//! ```

mod core;
mod lookup;

pub use self::core::{AdapterCore, Answer, Extra, Facts, decode_json, finish, record_facts};
pub use self::lookup::{
    Expect, Lookup, Proven, Settled, lookup_answer, lookup_failed, lookup_succeeded,
    settle_by_proof,
};

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use crate::error::{ExecError, StoreError, UnrecordedAnswer};
use crate::executor::{self, Classifier, RetrySettings, SafetyClass, Url};
use crate::key::IdempotencyKey;
use crate::ledger::OperationState;

/// A provider's own error answer (Stripe's `{"error": {...}}`, Google's
/// `google.rpc.Status`, ...), read from a rejected response.
///
/// `Display` must not show secrets or request values.
pub trait WireError: std::error::Error + Send + Sync + 'static {
    /// Reads a rejected response. Never fails: a body that is not the
    /// provider's error shape gives an error that says so. `headers` is
    /// `None` when the answer was read back from the ledger.
    fn parse(status: StatusCode, headers: Option<&HeaderMap>, body: &[u8]) -> Self;

    /// Whether the provider refused the key because it was first used for a
    /// different request (Stripe's 400 `idempotency_error`). Such a rejection
    /// becomes [`CallError::KeyReused`].
    fn is_key_reuse(&self) -> bool {
        false
    }
}

/// A provider adapter's description: the things each adapter used to spell
/// out by hand when building its [`executor::Provider`].
pub trait Provider {
    /// The provider name recorded in the ledger.
    const NAME: &'static str;
    /// The provider's error answer.
    type WireError: WireError;
    /// The provider's classifier.
    type Classifier: Classifier;
    /// The safety class of the provider's writes.
    fn safety_class() -> SafetyClass;
    /// The classifier.
    fn classifier() -> Self::Classifier;
    /// The retry settings used unless the user overrides them.
    fn default_retry() -> RetrySettings;
    /// The executor's provider for writes, with `retry`.
    fn executor_provider(retry: RetrySettings) -> executor::Provider {
        executor::Provider::new(Self::NAME, Self::safety_class(), Self::classifier())
            .with_retry(retry)
    }
}

/// What an adapter's own error cases ([`CallError::Adapter`]) tell the
/// shared accessors.
pub trait AdapterFailure<E>: std::error::Error + Send + Sync + 'static {
    /// The key the error concerns, if any.
    fn key(&self) -> Option<&IdempotencyKey>;
    /// Whether running the same job again later, with the same key, may
    /// succeed without an operator.
    fn is_retryable(&self) -> bool;
    /// Whether the outcome is still unknown.
    fn is_unknown(&self) -> bool {
        false
    }
    /// The provider's error answer, when this case carries one.
    fn wire_error(&self) -> Option<&E> {
        None
    }
    /// Whether reconciling again cannot change this (a record in the wrong
    /// state, no record): see [`CallError::into_reconcile_error`].
    fn is_not_reconcilable(&self) -> bool {
        false
    }
}

impl<E> AdapterFailure<E> for Infallible {
    fn key(&self) -> Option<&IdempotencyKey> {
        match *self {}
    }
    fn is_retryable(&self) -> bool {
        match *self {}
    }
}

/// The error every adapter call returns: the executor's outcomes, with the
/// provider's error answer `E` parsed once, plus the adapter's own cases `A`.
///
/// Every variant about an operation names its key, so an operator can find
/// the ledger record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E, A = Infallible> {
    /// The provider rejected the request; the rejection is recorded as
    /// `failed`. Sending it again with the same key gives the same answer,
    /// so a new attempt needs an operator bump.
    #[error("provider rejected {key} with HTTP {status}{}: {error}", if *.from_ledger { " (recorded earlier)" } else { "" })]
    Rejected {
        /// The key.
        key: IdempotencyKey,
        /// The HTTP status.
        status: StatusCode,
        /// The provider's error answer.
        #[source]
        error: Box<E>,
        /// Whether the rejection was read from the ledger (an earlier run).
        from_ledger: bool,
    },
    /// The key was already used for a different request: our ledger holds
    /// another request under it, or the provider said so. Never retried; use
    /// a new key for the new request.
    #[error("idempotency key {key} was reused for a different request ({detail})")]
    KeyReused {
        /// The key.
        key: IdempotencyKey,
        /// What differs (never the request body).
        detail: String,
        /// The provider's error, when the provider refused it.
        #[source]
        error: Option<Box<E>>,
    },
    /// The request may have reached the provider but no usable answer came
    /// back. The record is `unknown`. When `resend_safe_until` is set, running
    /// the same job again before then resends with the same key and the
    /// provider dedupes it (or the write is an upsert); otherwise it is not
    /// resent: reconcile, then resolve or bump.
    #[error("outcome of {key} is unknown ({reason}); {}", if .resend_safe_until.is_some() { "a retry with the same key is safe" } else { "not resent: reconcile with the provider, then resolve the record or bump the key" })]
    OutcomeUnknown {
        /// The key.
        key: IdempotencyKey,
        /// What happened, without secrets.
        reason: String,
        /// Until when a resend with the same key is safe, if it is.
        resend_safe_until: Option<SystemTime>,
    },
    /// The provider provably did not process the request (never sent, rate
    /// limited). The record is back to `pending`; a later run sends it with
    /// the same key.
    #[error(
        "{key} was not processed by the provider ({reason}); safe to retry later with the same key"
    )]
    NotSent {
        /// The key.
        key: IdempotencyKey,
        /// What happened.
        reason: String,
        /// How long the provider asked to wait, if it said.
        retry_after: Option<Duration>,
        /// The provider's error, when it answered with one.
        error: Option<Box<E>>,
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
    /// The request is invalid before sending. Nothing was recorded or sent.
    #[error("invalid request for {key}: {reason}")]
    InvalidRequest {
        /// The key.
        key: IdempotencyKey,
        /// What is wrong.
        reason: String,
    },
    /// The provider answered definitively but the ledger could not record
    /// it. **Not safe to retry**: settle the key with this answer (see
    /// [`ExecError::AnswerNotRecorded`]).
    #[error(
        "the provider answered {key} with HTTP {} but the ledger could not record it \
         ({}); do not resend: settle the key with this answer", answer.status, answer.error
    )]
    AnswerNotRecorded {
        /// The key.
        key: IdempotencyKey,
        /// The provider's answer and the store's error.
        answer: Box<UnrecordedAnswer>,
    },
    /// The operation was settled long ago and its stored answer compacted;
    /// nothing was sent (see [`ExecError::Compacted`]).
    #[error("{key} already {state} earlier (provider id {}); its stored answer was compacted by the sweep, nothing was sent", provider_id.as_deref().unwrap_or("unknown"))]
    Compacted {
        /// The key.
        key: IdempotencyKey,
        /// `succeeded` or `failed`.
        state: OperationState,
        /// The provider's id for the object, when it was recorded.
        provider_id: Option<String>,
    },
    /// Reconciliation found the record in a state it cannot settle
    /// (`pending`: nothing was sent yet). Nothing was asked or changed.
    #[error("{key} is {state}; only an unknown outcome can be reconciled")]
    NotUnknown {
        /// The key.
        key: IdempotencyKey,
        /// The record's state.
        state: OperationState,
    },
    /// Asking the provider what happened failed. The record is as it was.
    #[error("could not look {key} up at the provider ({reason}); the record is unchanged")]
    LookupFailed {
        /// The key.
        key: IdempotencyKey,
        /// What failed, without secrets.
        reason: String,
        /// The provider's error answer, when it refused the read.
        #[source]
        error: Option<Box<E>>,
    },
    /// The record changed while the provider was asked (another worker
    /// claimed or settled it, or an operator bumped it), so the lookup may
    /// be stale and nothing was recorded. Reconcile again.
    #[error(
        "{key} changed (now {state}) while the provider was asked; nothing was recorded, reconcile again"
    )]
    RecordChanged {
        /// The key.
        key: IdempotencyKey,
        /// Its state now.
        state: OperationState,
    },
    /// The provider answered with success, but its answer is not the
    /// expected object. The effect happened and the answer is recorded: do
    /// not resend.
    #[error("the provider's answer for {key} is not the expected object ({reason}); do not resend")]
    Undecodable {
        /// The key.
        key: IdempotencyKey,
        /// What could not be read (never the body itself).
        reason: String,
    },
    /// The ledger failed. When this happens before sending, nothing was sent.
    #[error("ledger error: {0}")]
    Store(#[source] StoreError),
    /// A case only this adapter has.
    #[error(transparent)]
    Adapter(A),
}

impl<E: WireError, A> CallError<E, A> {
    /// Maps an executor error, parsing the provider's body once.
    /// `headers` are the rejected response's headers when it came from the
    /// wire now.
    pub fn from_exec(err: ExecError, headers: Option<&HeaderMap>) -> Self {
        match err {
            ExecError::Rejected {
                key,
                status,
                body,
                from_ledger,
            } => {
                let error = E::parse(status, headers, &body);
                if error.is_key_reuse() {
                    Self::KeyReused {
                        key,
                        detail: "the provider says the key was first used with other parameters"
                            .to_owned(),
                        error: Some(Box::new(error)),
                    }
                } else {
                    Self::Rejected {
                        key,
                        status,
                        error: Box::new(error),
                        from_ledger,
                    }
                }
            }
            ExecError::OutcomeUnknown { key, reason } => Self::OutcomeUnknown {
                key,
                reason,
                resend_safe_until: None,
            },
            ExecError::NotSent {
                key,
                reason,
                retry_after,
            } => Self::NotSent {
                key,
                reason,
                retry_after,
                error: None,
            },
            ExecError::InFlight {
                key,
                lease_expires_at,
            } => Self::InFlight {
                key,
                lease_expires_at,
            },
            ExecError::Superseded { key, by } => Self::Superseded { key, by },
            ExecError::InvalidRequest { key, reason } => Self::InvalidRequest { key, reason },
            ExecError::AnswerNotRecorded { key, answer } => Self::AnswerNotRecorded { key, answer },
            ExecError::Compacted {
                key,
                state,
                provider_id,
            } => Self::Compacted {
                key,
                state,
                provider_id,
            },
            ExecError::Store(e) => e.into(),
        }
    }

    /// The rejection read back from a `failed` ledger record (no headers).
    pub fn rejected_from_ledger(
        key: &IdempotencyKey,
        status: Option<u16>,
        body: Option<bytes::Bytes>,
    ) -> Self {
        Self::from_exec(
            ExecError::Rejected {
                key: key.clone(),
                status: status
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::BAD_REQUEST),
                body: body.unwrap_or_default(),
                from_ledger: true,
            },
            None,
        )
    }
}

impl<E, A> CallError<E, A> {
    /// Marks an unknown outcome as safe to resend until `until` (a provider
    /// that dedupes the key, or a write that is an upsert); other errors are
    /// returned as they are.
    #[must_use]
    pub fn resend_safe_until(mut self, until: SystemTime) -> Self {
        if let Self::OutcomeUnknown {
            resend_safe_until, ..
        } = &mut self
        {
            *resend_safe_until = Some(until);
        }
        self
    }

    /// An invalid request: nothing was recorded or sent.
    pub fn invalid(key: &IdempotencyKey, reason: impl Into<String>) -> Self {
        Self::InvalidRequest {
            key: key.clone(),
            reason: reason.into(),
        }
    }
}

impl<E: WireError, A> From<ExecError> for CallError<E, A> {
    fn from(err: ExecError) -> Self {
        Self::from_exec(err, None)
    }
}

impl<E, A> From<StoreError> for CallError<E, A> {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::KeyReused { key, detail } => Self::KeyReused {
                key,
                detail: format!("the ledger holds another request under it: {detail}"),
                error: None,
            },
            e => Self::Store(e),
        }
    }
}

impl<E, A: AdapterFailure<E>> CallError<E, A> {
    /// The key the error concerns, if any.
    pub fn key(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::Rejected { key, .. }
            | Self::KeyReused { key, .. }
            | Self::OutcomeUnknown { key, .. }
            | Self::NotSent { key, .. }
            | Self::InFlight { key, .. }
            | Self::Superseded { key, .. }
            | Self::InvalidRequest { key, .. }
            | Self::AnswerNotRecorded { key, .. }
            | Self::Compacted { key, .. }
            | Self::NotUnknown { key, .. }
            | Self::LookupFailed { key, .. }
            | Self::RecordChanged { key, .. }
            | Self::Undecodable { key, .. } => Some(key),
            Self::Store(
                StoreError::NotFound { key }
                | StoreError::InvalidState { key, .. }
                | StoreError::LeaseLost { key }
                | StoreError::KeyReused { key, .. },
            ) => Some(key),
            Self::Store(_) => None,
            Self::Adapter(a) => a.key(),
        }
    }

    /// Whether running the same job again later, with the same key, may
    /// succeed without an operator: nothing was processed, another worker
    /// holds the key, the ledger was down, or the outcome is unknown but a
    /// resend is provably safe (`resend_safe_until` is set). An unknown
    /// outcome without that proof, and an answer the ledger could not
    /// record, are never retryable: the effect may have happened.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NotSent { .. }
            | Self::InFlight { .. }
            | Self::LookupFailed { .. }
            | Self::RecordChanged { .. } => true,
            Self::OutcomeUnknown {
                resend_safe_until, ..
            } => resend_safe_until.is_some(),
            Self::Store(e) => e.is_unavailable(),
            Self::Adapter(a) => a.is_retryable(),
            _ => false,
        }
    }

    /// Whether the outcome is unknown and needs a retry, reconciliation or
    /// an operator.
    pub fn is_unknown(&self) -> bool {
        match self {
            Self::OutcomeUnknown { .. } => true,
            Self::Adapter(a) => a.is_unknown(),
            _ => false,
        }
    }

    /// The provider's error answer, when it answered with one.
    pub fn wire_error(&self) -> Option<&E> {
        match self {
            Self::Rejected { error, .. } => Some(error),
            Self::KeyReused { error, .. }
            | Self::NotSent { error, .. }
            | Self::LookupFailed { error, .. } => error.as_deref(),
            Self::Adapter(a) => a.wire_error(),
            _ => None,
        }
    }

    /// The provider's HTTP status, for a rejection.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The adapter's own case, if this is one.
    pub fn adapter(&self) -> Option<&A> {
        match self {
            Self::Adapter(a) => Some(a),
            _ => None,
        }
    }
}

/// Declares a provider's id type: a `String` newtype that serializes as
/// the bare id, with `as_str`, `Display`, `AsRef<str>` and a `Debug` that
/// names the kind, so one kind of id cannot be passed for another. An id
/// with a shape is checked by the adapter's own constructor (a `FromStr`);
/// `unchecked` adds `new` and `From<&str>` for ids the provider hands out
/// with no documented shape. The crate using it depends on `serde`.
///
/// ```
/// idem::provider_id!(
///     /// A Facebook Page id.
///     PageId, unchecked
/// );
/// let page = PageId::new("1234");
/// assert_eq!(page.as_str(), "1234");
/// assert_eq!(format!("{page:?}"), r#"PageId("1234")"#);
/// assert_eq!(serde_json::to_string(&page).unwrap(), r#""1234""#);
/// ```
#[macro_export]
macro_rules! provider_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, unchecked) => {
        $crate::provider_id!($(#[$doc])* $name);

        impl $name {
            /// Wraps an id as the provider gave it.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

/// Declares an open enum of a provider's wire values (a status, an error
/// type): one variant per known text, plus `Other(String)` for a value this
/// version does not know, kept as sent. It gets `as_str`, `parse` (which
/// never fails), `Display`, and `Serialize`/`Deserialize` as the bare text.
/// The crate using it depends on `serde`.
///
/// ```
/// idem::wire_enum! {
///     /// An order's status.
///     pub enum OrderStatus {
///         /// Paid.
///         Paid = "paid",
///         /// Refunded.
///         Refunded = "refunded",
///     }
/// }
/// assert_eq!(OrderStatus::parse("paid"), OrderStatus::Paid);
/// assert_eq!(OrderStatus::parse("lost").as_str(), "lost");
/// let json: OrderStatus = serde_json::from_str(r#""refunded""#).unwrap();
/// assert_eq!(json.to_string(), "refunded");
/// ```
#[macro_export]
macro_rules! wire_enum {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know, as sent.
            Other(String),
        }

        impl $name {
            /// The provider's text for it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }

            /// Reads the provider's text; an unknown one is `Other`.
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as ::serde::Deserialize>::deserialize(d)?;
                Ok(Self::parse(&text))
            }
        }
    };
}

/// The parts every adapter's builder and client share, generated once:
/// the builder's `base_url` and `retry` setters (fields `base_url: String`
/// and `retry: RetrySettings`), and the client's `executor()` and
/// `provider()` (field `inner.core:` [`AdapterCore`]). `retry_doc` says
/// what the adapter's retries may resend.
#[macro_export]
macro_rules! adapter_basics {
    (builder: $builder:ty, client: $client:ty, retry_doc: $retry_doc:literal) => {
        impl $builder {
            /// Sends to this base URL instead of the provider's (a test
            /// server, the simulator of `idem-testkit`, a proxy). It must be
            /// an absolute `http(s)` URL; `build` refuses anything else.
            pub fn base_url(mut self, url: impl Into<String>) -> Self {
                self.base_url = url.into();
                self
            }

            #[doc = $retry_doc]
            pub fn retry(mut self, retry: $crate::executor::RetrySettings) -> Self {
                self.retry = retry;
                self
            }
        }

        impl $client {
            /// The executor (and through it the ledger store).
            pub fn executor(&self) -> &$crate::Executor {
                self.inner.core.executor()
            }

            /// The provider policy the executor uses for writes.
            pub fn provider(&self) -> &$crate::executor::Provider {
                self.inner.core.provider()
            }
        }
    };
}

/// A ledger record an adapter's [`Reconcile`](crate::reconcile::Reconcile)
/// implementation was asked about, as [`record_to_reconcile`] found it.
#[derive(Debug)]
pub enum ToReconcile {
    /// It already succeeded: the verdict is `Applied` with the stored answer.
    Succeeded(crate::ledger::Operation),
    /// It is `unknown` (or `sending` with a lease that ran out): look it up.
    Open(crate::ledger::Operation),
}

impl ToReconcile {
    /// The record.
    pub fn operation(&self) -> &crate::ledger::Operation {
        match self {
            Self::Succeeded(op) | Self::Open(op) => op,
        }
    }
}

/// Reads the record `key` names for reconciliation by the adapter named
/// `provider`, refusing what cannot be reconciled: no record, another
/// provider's record, and any state but `succeeded`, `unknown` and (when its
/// lease ran out, or `live_sending` allows it) `sending`. The table is
/// [`AdapterCore::open_lookup`]'s.
///
/// # Errors
///
/// [`ReconcileError::NotReconcilable`](crate::reconcile::ReconcileError::NotReconcilable)
/// for those; `Failed` when the ledger fails.
pub async fn record_to_reconcile(
    executor: &executor::Executor,
    provider: &str,
    key: &IdempotencyKey,
    live_sending: bool,
) -> Result<ToReconcile, crate::reconcile::ReconcileError> {
    /// A rejection read back only to be named in the refusal.
    #[derive(Debug, thiserror::Error)]
    #[error("its answer is in the record")]
    struct Stored;
    impl WireError for Stored {
        fn parse(_: StatusCode, _: Option<&HeaderMap>, _: &[u8]) -> Self {
            Stored
        }
    }
    let expect = if live_sending {
        lookup::Expect::any().live_sending()
    } else {
        lookup::Expect::any()
    };
    let refused = |e: CallError<Stored>| e.into_reconcile_error(key);
    match lookup::open_record(executor, provider, key, expect).await {
        Ok(lookup::Lookup::Succeeded(op)) => Ok(ToReconcile::Succeeded(op)),
        Ok(lookup::Lookup::Open(op)) => Ok(ToReconcile::Open(op)),
        Ok(lookup::Lookup::Pending(op)) => Err(refused(CallError::NotUnknown {
            key: key.clone(),
            state: op.state,
        })),
        Err(e) => Err(refused(e)),
    }
}

impl<E, A: AdapterFailure<E>> CallError<E, A> {
    /// This error as a [`Reconcile`](crate::reconcile::Reconcile) error:
    /// `NotReconcilable` for what asking again will not change (in flight,
    /// superseded, rejected, an invalid request, and the adapter cases its
    /// [`AdapterFailure::is_not_reconcilable`] names), `Failed` otherwise.
    pub fn into_reconcile_error(self, key: &IdempotencyKey) -> crate::reconcile::ReconcileError
    where
        E: std::fmt::Display,
        A: std::fmt::Display,
    {
        let reason = self.to_string();
        let key = key.clone();
        match &self {
            Self::InFlight { .. }
            | Self::Rejected { .. }
            | Self::Superseded { .. }
            | Self::InvalidRequest { .. }
            | Self::KeyReused { .. }
            | Self::NotUnknown { .. }
            | Self::Store(StoreError::NotFound { .. }) => {
                crate::reconcile::ReconcileError::NotReconcilable { key, reason }
            }
            Self::Adapter(a) if a.is_not_reconcilable() => {
                crate::reconcile::ReconcileError::NotReconcilable { key, reason }
            }
            _ => crate::reconcile::ReconcileError::Failed { key, reason },
        }
    }
}

/// The `resend_safe_until` of a write that is safe to resend at any time
/// (an upsert or a delete): the last second of the year 9999.
pub fn resend_safe_forever() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// A base URL for an adapter: absolute `http(s)`, able to carry a path.
///
/// # Errors
///
/// A sentence saying what is wrong (the URL itself is not repeated: it may
/// carry credentials).
pub fn parse_base_url(text: &str) -> Result<Url, String> {
    let url: Url = text
        .parse()
        .map_err(|e: url::ParseError| format!("base URL is not a URL: {e}"))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err("base URL must be an absolute http(s) URL".to_owned());
    }
    Ok(url)
}

/// `base` with `segments` appended to its path and `query` pairs added.
pub fn join_url(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wire {0}")]
    struct Wire(u16);

    impl WireError for Wire {
        fn parse(status: StatusCode, _: Option<&HeaderMap>, body: &[u8]) -> Self {
            Self(if body == b"reuse" { 0 } else { status.as_u16() })
        }
        fn is_key_reuse(&self) -> bool {
            self.0 == 0
        }
    }

    fn key() -> IdempotencyKey {
        "s_t_1_v1".parse().unwrap()
    }

    #[test]
    fn maps_every_exec_error_once() {
        type E = CallError<Wire>;
        let rejected = E::from(ExecError::Rejected {
            key: key(),
            status: StatusCode::PAYMENT_REQUIRED,
            body: bytes::Bytes::from_static(b"{}"),
            from_ledger: false,
        });
        assert_eq!(rejected.wire_error().map(|w| w.0), Some(402));
        assert!(!rejected.is_retryable());
        let reuse = E::from(ExecError::Rejected {
            key: key(),
            status: StatusCode::BAD_REQUEST,
            body: bytes::Bytes::from_static(b"reuse"),
            from_ledger: false,
        });
        assert!(matches!(reuse, CallError::KeyReused { error: Some(_), .. }));
        let unknown = E::from(ExecError::OutcomeUnknown {
            key: key(),
            reason: "timeout".into(),
        });
        assert!(unknown.is_unknown());
        assert!(!unknown.is_retryable(), "may have happened");
        let in_flight = E::from(ExecError::InFlight {
            key: key(),
            lease_expires_at: SystemTime::UNIX_EPOCH,
        });
        assert!(in_flight.is_retryable());
        assert_eq!(in_flight.key(), Some(&key()));
        let answer = E::from(ExecError::AnswerNotRecorded {
            key: key(),
            answer: Box::new(UnrecordedAnswer {
                status: StatusCode::OK,
                succeeded: true,
                provider_id: None,
                body: bytes::Bytes::new(),
                error: StoreError::Corrupt("x".into()),
            }),
        });
        assert!(!answer.is_retryable(), "the effect happened");
        let reused = E::from(ExecError::Store(StoreError::KeyReused {
            key: key(),
            detail: "fingerprint".into(),
        }));
        assert!(matches!(reused, CallError::KeyReused { error: None, .. }));
        assert!(!reused.is_retryable());
        let down = E::from(StoreError::Unavailable {
            message: "down".into(),
            source: None,
        });
        assert!(down.is_retryable());
        assert_eq!(down.key(), None);
    }

    #[test]
    fn base_urls_and_joins() {
        assert!(parse_base_url("mailto:x@y").is_err());
        assert!(parse_base_url("not a url").is_err());
        let base = parse_base_url("https://api.example.com/v2/").unwrap();
        let url = join_url(&base, &["a", "b c"], &[("q", "1")]);
        assert_eq!(url.as_str(), "https://api.example.com/v2/a/b%20c?q=1");
    }
}
