//! The reconciliation skeleton every adapter shares: open the ledger record
//! for a lookup, ask the provider with plain reads, and record a verdict only
//! if the record did not change meanwhile.
//!
//! A lookup takes no lease, so what it reads can be stale by the time it
//! returns: another worker may have claimed the record again (its lease ran
//! out), settled it, or an operator may have bumped it. [`AdapterCore::settle`]
//! checks the record against the one the lookup started from and records
//! nothing when it changed ([`CallError::RecordChanged`]), so a verdict such
//! as "not applied", which leads to a resend, never rests on a stale read.
//!
//! ```
//! use idem::adapter::{AdapterCore, CallError, Expect, Provider};
//! use idem::ledger::MemoryStore;
//! # use idem::executor::{RetrySettings, SafetyClass, StatusClassifier};
//! # #[derive(Debug, thiserror::Error)] #[error("wire")] struct Wire;
//! # impl idem::adapter::WireError for Wire {
//! #     fn parse(_: http::StatusCode, _: Option<&http::HeaderMap>, _: &[u8]) -> Self { Wire }
//! # }
//! # struct Acme;
//! # impl Provider for Acme {
//! #     const NAME: &'static str = "acme";
//! #     type WireError = Wire;
//! #     type Classifier = StatusClassifier;
//! #     fn safety_class() -> SafetyClass { SafetyClass::LocalOnly }
//! #     fn classifier() -> StatusClassifier { StatusClassifier }
//! #     fn default_retry() -> RetrySettings { RetrySettings::default() }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = idem::Executor::builder(MemoryStore::new()).build();
//! let core = AdapterCore::new::<Acme>(executor, "https://api.acme.test/", Acme::default_retry())?;
//! let key: idem::IdempotencyKey = "shop_orders_1_v1".parse()?;
//!
//! // No record: nothing to reconcile, and nothing is guessed.
//! let err = core.open_lookup::<Wire, std::convert::Infallible>(&key, Expect::any()).await.unwrap_err();
//! assert!(matches!(err, CallError::Store(idem::StoreError::NotFound { .. })));
//! # Ok(())
//! # }
//! ```

use crate::error::StoreError;
use crate::executor::{self, Executor, OutboundRequest, ReadResponse};
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::ledger::{Operation, OperationState, Resolution};

use super::{AdapterCore, CallError, WireError};

/// What the record a lookup is about must be ([`AdapterCore::open_lookup`]).
/// A record of another provider, operation or request is refused as
/// [`CallError::KeyReused`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    operation: Option<&'a str>,
    fingerprint: Option<&'a Fingerprint>,
    live_sending: bool,
}

impl<'a> Expect<'a> {
    /// Any operation of this adapter's provider.
    pub fn any() -> Self {
        Self::default()
    }

    /// The operation named `operation` in the ledger.
    pub fn operation(operation: &'a str) -> Self {
        Self {
            operation: Some(operation),
            ..Self::default()
        }
    }

    /// And made for the request with this fingerprint.
    #[must_use]
    pub fn fingerprint(mut self, fingerprint: &'a Fingerprint) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// A record still `sending` under a live lease may be looked up too (a
    /// lookup that can only ever settle it `succeeded`, never resend).
    #[must_use]
    pub fn live_sending(mut self) -> Self {
        self.live_sending = true;
        self
    }
}

/// A ledger record opened for a lookup by [`AdapterCore::open_lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// It already succeeded: answer from its stored body, ask nothing.
    Succeeded(Operation),
    /// `unknown`, or `sending` with a lease that ran out: ask the provider.
    Open(Operation),
    /// `pending`: nothing was processed by the provider yet.
    Pending(Operation),
}

/// What [`AdapterCore::settle`] did.
#[derive(Debug)]
pub enum Settled {
    /// The verdict is recorded.
    Recorded(Operation),
    /// The record had been settled `succeeded` meanwhile (a status callback,
    /// another lookup, the sender's own answer): that record stands and the
    /// verdict was not recorded.
    AlreadySucceeded(Operation),
}

impl AdapterCore {
    /// Reads the record `key` names for a lookup. Only this provider's
    /// records that match `expect` are opened; the state decides the rest:
    ///
    /// | state | result |
    /// | --- | --- |
    /// | `succeeded` | [`Lookup::Succeeded`] |
    /// | `unknown`, `sending` with an expired lease | [`Lookup::Open`] |
    /// | `sending` with a live lease | [`CallError::InFlight`] (or `Open` with [`Expect::live_sending`]) |
    /// | `pending` | [`Lookup::Pending`] |
    /// | `failed` | [`CallError::Rejected`] with the stored answer |
    /// | `superseded` | [`CallError::Superseded`] |
    ///
    /// # Errors
    ///
    /// Those in the table, [`CallError::Store`] with
    /// [`StoreError::NotFound`] when there is no record (or the ledger
    /// fails), and [`CallError::KeyReused`] for a record of another
    /// provider, operation or request.
    pub async fn open_lookup<E: WireError, A>(
        &self,
        key: &IdempotencyKey,
        expect: Expect<'_>,
    ) -> Result<Lookup, CallError<E, A>> {
        open_record(self.executor(), self.provider().name(), key, expect).await
    }

    /// A plain read for a lookup ([`Executor::read`](crate::Executor::read):
    /// no ledger row, no lease) whose answer must be a 2xx JSON `T`.
    /// `what` names the read in errors ("the message list").
    ///
    /// # Errors
    ///
    /// [`CallError::LookupFailed`] when the read failed, the provider
    /// refused it (its error answer parsed), or the answer is unreadable.
    pub async fn read_json<T: serde::de::DeserializeOwned, E: WireError, A>(
        &self,
        key: &IdempotencyKey,
        provider: &executor::Provider,
        request: OutboundRequest,
        what: &str,
    ) -> Result<T, CallError<E, A>> {
        let answer = self
            .executor()
            .read(provider, request)
            .await
            .map_err(|e| lookup_failed(key, format!("{what} failed: {e}"), None))?;
        lookup_answer(key, &answer, what)
    }

    /// Records `resolution`, reached by a lookup that started from `seen`,
    /// unless the record changed meanwhile.
    ///
    /// # Errors
    ///
    /// [`CallError::RecordChanged`] when another worker claimed, settled or
    /// bumped the record since `seen` (nothing is recorded: the lookup may
    /// be stale; reconcile again), and store errors.
    pub async fn settle<E, A>(
        &self,
        key: &IdempotencyKey,
        seen: &Operation,
        resolution: &Resolution,
    ) -> Result<Settled, CallError<E, A>> {
        let current = record(self.executor(), key).await?;
        if current.state == OperationState::Succeeded {
            return Ok(Settled::AlreadySucceeded(current));
        }
        if current.state != seen.state || current.claims != seen.claims {
            return Err(CallError::RecordChanged {
                key: key.clone(),
                state: current.state,
            });
        }
        let store = self.executor().store();
        match store.resolve(key, resolution, self.executor().now()).await {
            Ok(op) => Ok(Settled::Recorded(op)),
            // Settled between the check and the write: its record stands.
            Err(StoreError::InvalidState {
                state: OperationState::Succeeded,
                ..
            }) => Ok(Settled::AlreadySucceeded(
                record(self.executor(), key).await?,
            )),
            Err(StoreError::InvalidState { state, .. }) => Err(CallError::RecordChanged {
                key: key.clone(),
                state,
            }),
            Err(e) => Err(e.into()),
        }
    }
}

async fn record<E, A>(
    executor: &Executor,
    key: &IdempotencyKey,
) -> Result<Operation, CallError<E, A>> {
    executor
        .store()
        .get(key)
        .await?
        .ok_or_else(|| CallError::Store(StoreError::NotFound { key: key.clone() }))
}

/// [`AdapterCore::open_lookup`] for an executor and provider name (also
/// behind [`record_to_reconcile`](super::record_to_reconcile)): the one
/// table of which records a lookup may open.
pub(crate) async fn open_record<E: WireError, A>(
    executor: &Executor,
    provider: &str,
    key: &IdempotencyKey,
    expect: Expect<'_>,
) -> Result<Lookup, CallError<E, A>> {
    let op = record(executor, key).await?;
    let reused = |detail: String| CallError::KeyReused {
        key: key.clone(),
        detail,
        error: None,
    };
    if op.provider != provider {
        return Err(reused(format!(
            "the record belongs to provider {:?}",
            op.provider
        )));
    }
    if let Some(operation) = expect.operation.filter(|o| *o != op.operation) {
        return Err(reused(format!(
            "the record is a {:?} operation, not {operation:?}",
            op.operation
        )));
    }
    if expect.fingerprint.is_some_and(|f| *f != op.fingerprint) {
        return Err(reused(
            "the record was made for a different request".to_owned(),
        ));
    }
    let now = executor.now();
    match op.state {
        OperationState::Succeeded => Ok(Lookup::Succeeded(op)),
        OperationState::Unknown => Ok(Lookup::Open(op)),
        OperationState::Sending if expect.live_sending || op.lease_expired(now) => {
            Ok(Lookup::Open(op))
        }
        OperationState::Sending => Err(CallError::InFlight {
            key: key.clone(),
            lease_expires_at: op.lease_expires_at.unwrap_or(now),
        }),
        OperationState::Pending => Ok(Lookup::Pending(op)),
        OperationState::Failed => Err(CallError::rejected_from_ledger(
            key,
            op.response_status,
            op.response_body,
        )),
        OperationState::Superseded => Err(match op.superseded_by {
            Some(by) => CallError::Superseded {
                key: key.clone(),
                by,
            },
            None => CallError::Store(StoreError::Corrupt(format!(
                "{key} is superseded but names no successor"
            ))),
        }),
    }
}

/// A lookup's answer (from [`AdapterCore::read_json`], or a read an adapter
/// made itself, for example after refreshing a token) as a 2xx JSON `T`.
///
/// # Errors
///
/// [`CallError::LookupFailed`] for an error answer (parsed as `E`) or an
/// unreadable body.
pub fn lookup_answer<T: serde::de::DeserializeOwned, E: WireError, A>(
    key: &IdempotencyKey,
    answer: &ReadResponse,
    what: &str,
) -> Result<T, CallError<E, A>> {
    lookup_succeeded(key, answer, what)?;
    answer
        .json()
        .map_err(|e| lookup_failed(key, format!("{what}: unreadable answer: {e}"), None))
}

/// Whether a lookup's answer is a success, for an adapter that reads the
/// body itself.
///
/// # Errors
///
/// [`CallError::LookupFailed`] for an error answer (parsed as `E`).
pub fn lookup_succeeded<E: WireError, A>(
    key: &IdempotencyKey,
    answer: &ReadResponse,
    what: &str,
) -> Result<(), CallError<E, A>> {
    if answer.is_success() {
        return Ok(());
    }
    let error = E::parse(answer.status, Some(&answer.headers), &answer.body);
    let reason = format!(
        "{what} failed: HTTP {} after {} attempt(s)",
        answer.status.as_u16(),
        answer.attempts
    );
    Err(lookup_failed(key, reason, Some(Box::new(error))))
}

/// [`CallError::LookupFailed`].
pub fn lookup_failed<E, A>(
    key: &IdempotencyKey,
    reason: String,
    error: Option<Box<E>>,
) -> CallError<E, A> {
    CallError::LookupFailed {
        key: key.clone(),
        reason,
        error,
    }
}

/// What a proof that an effect happened (a status callback, a webhook event
/// naming the key) did to the record it names: see [`settle_by_proof`].
#[derive(Debug)]
pub enum Proven {
    /// No record has the key.
    NoRecord,
    /// The record is one the proof does not cover (another provider's, or
    /// another operation): untouched.
    NotCovered(Operation),
    /// It was `unknown` (or `sending` with a lease that ran out) and is now
    /// `succeeded`, with the proof's answer.
    Settled(Operation),
    /// It had already succeeded: untouched. Compare its stored answer with
    /// the proof to spot a second effect under one key.
    AlreadySucceeded(Operation),
    /// A sender holds a live lease: untouched. Its own answer, or a later
    /// proof, settles it.
    InFlight(Operation),
    /// `pending`, `failed` or `superseded`: untouched.
    Untouched(Operation),
    /// It changed under each attempt: untouched. Apply the proof again.
    KeptChanging,
}

/// Applies a proof that the effect recorded under `key` happened: a record
/// the proof `covers` that is `unknown`, or `sending` with a lease that ran
/// out, becomes `succeeded` with `answer` and `note`. Nothing else is
/// changed: a proof never downgrades a record or overrides another answer.
/// A record that changes between the read and the write is read once more.
///
/// # Errors
///
/// The store's errors.
pub async fn settle_by_proof<S: crate::ledger::LedgerStore + ?Sized>(
    store: &S,
    key: &IdempotencyKey,
    covers: impl Fn(&Operation) -> bool,
    answer: bytes::Bytes,
    note: &str,
    now: std::time::SystemTime,
) -> Result<Proven, StoreError> {
    for _ in 0..2 {
        let Some(op) = store.get(key).await? else {
            return Ok(Proven::NoRecord);
        };
        if !covers(&op) {
            return Ok(Proven::NotCovered(op));
        }
        match op.state {
            OperationState::Succeeded => return Ok(Proven::AlreadySucceeded(op)),
            OperationState::Unknown => {}
            OperationState::Sending if op.lease_expired(now) => {}
            OperationState::Sending => return Ok(Proven::InFlight(op)),
            _ => return Ok(Proven::Untouched(op)),
        }
        let resolution = Resolution::Succeeded {
            status: 200,
            body: answer.clone(),
            note: note.to_owned(),
        };
        match store.resolve(key, &resolution, now).await {
            Ok(op) => return Ok(Proven::Settled(op)),
            Err(StoreError::InvalidState { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Proven::KeptChanging)
}
