//! The typed client: [`StripeClient`] and its resources.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use idem::executor::{Begun, Claim, RetrySettings, Source, Url, Verdict};
use idem::ledger::Resolution;
use idem::{Delivered, ExecError, Executor, IdempotencyKey, OperationState, OutboundRequest};
use idem::{Provider, SafetyClass, StoreError};
use serde::de::DeserializeOwned;

use crate::classifier::StripeClassifier;
use crate::error::{AdapterError, ConfigError, Error, StripeError};
use crate::form::Form;
use crate::objects::{Charge, Customer, PaymentIntent, PaymentIntentStatus, Refund, StripeObject};
use crate::params::{
    CapturePaymentIntent, ConfirmPaymentIntent, CreateCharge, CreateCustomer, CreatePaymentIntent,
    CreateRefund, RefundTarget,
};
use crate::types::{Amount, IDEM_KEY_METADATA, Metadata, PaymentIntentId};
use idem::adapter::{Provider as AdapterProvider, join_url};

/// Stripe's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

/// The provider name in the ledger.
pub const PROVIDER_NAME: &str = "stripe";

/// How long Stripe keeps an idempotency key at least: 24 hours.
pub const KEY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The retry settings used unless [`StripeClientBuilder::retry`] overrides
/// them: 3 attempts (2 retries, as Stripe's own clients), backoff 0.5 s to 5 s
/// with jitter, 80 s per attempt (Stripe's clients' timeout), 120 s in all.
pub fn default_retry() -> RetrySettings {
    Stripe::default_retry()
}

/// Stripe as idem's adapter kit describes it: name, safety class
/// ([`NativeKey`](SafetyClass::NativeKey), 24 h), classifier, retry and
/// wire error.
#[derive(Debug, Clone, Copy)]
pub struct Stripe;

impl AdapterProvider for Stripe {
    const NAME: &'static str = PROVIDER_NAME;
    type WireError = StripeError;
    type Classifier = StripeClassifier;

    fn safety_class() -> SafetyClass {
        SafetyClass::NativeKey {
            retention: KEY_RETENTION,
        }
    }

    fn classifier() -> StripeClassifier {
        StripeClassifier
    }

    fn default_retry() -> RetrySettings {
        RetrySettings::default()
            .with_max_attempts(3)
            .with_backoff(Duration::from_millis(500), Duration::from_secs(5))
            .with_attempt_timeout(Duration::from_secs(80))
            .with_total_timeout(Duration::from_secs(120))
    }
}

/// The operations this crate writes, as named in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    PaymentIntentCreate,
    PaymentIntentConfirm,
    PaymentIntentCapture,
    RefundCreate,
    CustomerCreate,
    ChargeCreate,
}

impl OpKind {
    const ALL: [Self; 6] = [
        Self::PaymentIntentCreate,
        Self::PaymentIntentConfirm,
        Self::PaymentIntentCapture,
        Self::RefundCreate,
        Self::CustomerCreate,
        Self::ChargeCreate,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::PaymentIntentCreate => "payment_intents.create",
            Self::PaymentIntentConfirm => "payment_intents.confirm",
            Self::PaymentIntentCapture => "payment_intents.capture",
            Self::RefundCreate => "refunds.create",
            Self::CustomerCreate => "customers.create",
            Self::ChargeCreate => "charges.create",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A Stripe answer and where it came from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StripeResponse<T> {
    /// The object.
    pub object: T,
    /// The operation's key.
    pub key: IdempotencyKey,
    /// From the wire now, from the ledger (no request made), or from
    /// reconciliation (found by search after the key window).
    pub source: Source,
    /// Whether this is a replay of an earlier answer: read from the ledger,
    /// or Stripe answered with `Idempotent-Replayed: true`.
    pub replayed: bool,
    /// Stripe's `Request-Id`, when the answer came from the wire.
    pub request_id: Option<String>,
}

/// `2026-08-26.dahlia`: `allowed_payment_method_types` exists from here.
const DAHLIA: &str = "2026-08-26";
/// `2026-10-28.endive`: `payment_method_types` is gone from PaymentIntent
/// create and confirm.
const ENDIVE: &str = "2026-10-28";

/// The `YYYY-MM-DD` date a Stripe version starts with.
fn version_date(version: &str) -> Option<&str> {
    let date = version.split('.').next()?;
    let b = date.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    shape.then_some(date)
}

/// What [`StripeClient::reconcile`] established.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reconciliation {
    /// The operation took effect; this is the object. The ledger record is
    /// now `succeeded` (or already was).
    Found(Box<StripeObject>),
    /// The operation provably did not take effect (it was never sent, or the
    /// PaymentIntent is still waiting for this confirm or capture). The record
    /// is `pending`: the next run sends it with the same key.
    NotApplied {
        /// How this was established.
        note: String,
    },
    /// No object carries the key. Stripe's search lags writes by up to about
    /// a minute, so this is not proof: the record stays `unknown`. Try again
    /// later; if still not found, an operator may bump the key.
    NotFound {
        /// How it was looked up.
        note: String,
    },
    /// Stripe's answer proves neither that the operation happened nor that
    /// it did not (for example a partial capture while the intent still
    /// waits for more captures). The record stays `unknown`; nothing is
    /// resent. An operator settles it (`store.resolve`) or bumps the key.
    Undetermined {
        /// What was read and why it is not proof.
        note: String,
    },
}

enum RawReconciliation {
    Found(Bytes),
    NotApplied(String),
    NotFound(String),
    Undetermined(String),
}

/// Builds a [`StripeClient`].
pub struct StripeClientBuilder {
    executor: Executor,
    secret_key: String,
    base_url: String,
    stripe_version: Option<String>,
    stripe_account: Option<String>,
    retry: RetrySettings,
}

impl fmt::Debug for StripeClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClientBuilder")
            .field("base_url", &self.base_url)
            .field("stripe_version", &self.stripe_version)
            .field("stripe_account", &self.stripe_account)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl StripeClientBuilder {
    /// Sends to `url` instead of `https://api.stripe.com` (tests, the fake).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Sends `Stripe-Version: <version>` (for example `2026-08-26.dahlia`).
    /// Without it Stripe uses the account's default version, which this
    /// client cannot see: parameters are then sent as given.
    ///
    /// With a version, every request is checked against it before anything
    /// is recorded or sent: a parameter the version does not have is
    /// [`AdapterError::UnsupportedParameter`]. `build` refuses a version that does
    /// not start with a `YYYY-MM-DD` date ([`ConfigError::StripeVersion`]).
    pub fn stripe_version(mut self, version: impl Into<String>) -> Self {
        self.stripe_version = Some(version.into());
        self
    }

    /// Sends `Stripe-Account: <acct_...>` (Connect: act on a connected
    /// account).
    pub fn stripe_account(mut self, account: impl Into<String>) -> Self {
        self.stripe_account = Some(account.into());
        self
    }

    /// Replaces the retry settings (see [`default_retry`]). They must fit in
    /// Stripe's 24 h key window, which they do by a wide margin.
    pub fn retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// The client.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the base URL, the secret key or a header value
    /// is invalid.
    pub fn build(self) -> Result<StripeClient, ConfigError> {
        let base: Url = self.base_url.parse().map_err(|_| ConfigError::BaseUrl)?;
        if base.cannot_be_a_base() {
            return Err(ConfigError::BaseUrl);
        }
        if self.secret_key.is_empty()
            || http::HeaderValue::from_str(&format!("Bearer {}", self.secret_key)).is_err()
        {
            return Err(ConfigError::SecretKey);
        }
        if let Some(v) = &self.stripe_version {
            if version_date(v).is_none() {
                return Err(ConfigError::StripeVersion);
            }
        }
        for (name, value) in [
            ("Stripe-Version", &self.stripe_version),
            ("Stripe-Account", &self.stripe_account),
        ] {
            if let Some(v) = value {
                if v.is_empty() || http::HeaderValue::from_str(v).is_err() {
                    return Err(ConfigError::Header(name));
                }
            }
        }
        let provider = Stripe::executor_provider(self.retry);
        Ok(StripeClient {
            inner: Arc::new(Inner {
                executor: self.executor,
                secret_key: self.secret_key,
                base,
                stripe_version: self.stripe_version,
                stripe_account: self.stripe_account,
                provider,
            }),
        })
    }
}

struct Inner {
    executor: Executor,
    secret_key: String,
    base: Url,
    stripe_version: Option<String>,
    stripe_account: Option<String>,
    provider: Provider,
}

/// Typed, key-required, retry-safe Stripe writes. Cheap to clone.
///
/// Every write takes an [`IdempotencyKey`], sends it as `Idempotency-Key`,
/// records it in the ledger before the first attempt, and stores it on the
/// created object as `metadata[idem_key]` (see [`IDEM_KEY_METADATA`]).
#[derive(Clone)]
pub struct StripeClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.inner.base.as_str())
            .field("stripe_version", &self.inner.stripe_version)
            .field("stripe_account", &self.inner.stripe_account)
            .finish_non_exhaustive()
    }
}

impl StripeClient {
    /// Starts building a client that sends through `executor` with
    /// `secret_key` (`sk_...` or a restricted `rk_...`).
    pub fn builder(executor: Executor, secret_key: impl Into<String>) -> StripeClientBuilder {
        StripeClientBuilder {
            executor,
            secret_key: secret_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            stripe_version: None,
            stripe_account: None,
            retry: default_retry(),
        }
    }

    /// PaymentIntents: create, confirm, capture.
    pub fn payment_intents(&self) -> PaymentIntents<'_> {
        PaymentIntents { client: self }
    }

    /// Refunds: create.
    pub fn refunds(&self) -> Refunds<'_> {
        Refunds { client: self }
    }

    /// Customers: create.
    pub fn customers(&self) -> Customers<'_> {
        Customers { client: self }
    }

    /// Charges (legacy): create.
    pub fn charges(&self) -> Charges<'_> {
        Charges { client: self }
    }

    /// The provider description the executor uses for writes.
    pub fn provider(&self) -> &Provider {
        &self.inner.provider
    }

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// Finds out what happened to the operation recorded under `key`:
    ///
    /// * a create (PaymentIntent, Customer, Charge) is looked up with
    ///   Stripe's search API, `metadata['idem_key']:'<key>'`;
    /// * a refund is looked up by listing the refunds of its PaymentIntent or
    ///   charge (Stripe has no refund search) and matching `metadata[idem_key]`;
    /// * a confirm or capture is looked up by reading the PaymentIntent's
    ///   status (Stripe takes no metadata on confirm).
    ///
    /// When found, the ledger record becomes `succeeded` with the object as
    /// its stored answer. A record that already succeeded answers from the
    /// ledger with no request. The lookup is a plain read
    /// ([`Executor::read`]): it takes no lease and leaves the record as it is
    /// unless it reaches a verdict (found: `succeeded`; a confirm or capture
    /// proven not applied: back to `pending`, checked against the record
    /// just before, so a stale read never causes a resend).
    ///
    /// # Errors
    ///
    /// [`AdapterError::NoRecord`] when the ledger has no such key,
    /// [`Error::InFlight`] while a worker is sending it, [`Error::Rejected`] when it
    /// failed earlier, [`Error::Superseded`], [`AdapterError::Reconcile`] when the
    /// lookup itself failed, and store errors.
    pub async fn reconcile(&self, key: &IdempotencyKey) -> Result<Reconciliation, Error> {
        let kind = self.kind_of(key).await?;
        Ok(match self.reconcile_raw(key).await? {
            RawReconciliation::Found(body) => {
                let object = match kind {
                    OpKind::PaymentIntentCreate
                    | OpKind::PaymentIntentConfirm
                    | OpKind::PaymentIntentCapture => {
                        StripeObject::PaymentIntent(decode::<PaymentIntent>(key, &body)?)
                    }
                    OpKind::RefundCreate => StripeObject::Refund(decode::<Refund>(key, &body)?),
                    OpKind::CustomerCreate => {
                        StripeObject::Customer(decode::<Customer>(key, &body)?)
                    }
                    OpKind::ChargeCreate => StripeObject::Charge(decode::<Charge>(key, &body)?),
                };
                Reconciliation::Found(Box::new(object))
            }
            RawReconciliation::NotApplied(note) => Reconciliation::NotApplied { note },
            RawReconciliation::NotFound(note) => Reconciliation::NotFound { note },
            RawReconciliation::Undetermined(note) => Reconciliation::Undetermined { note },
        })
    }

    async fn kind_of(&self, key: &IdempotencyKey) -> Result<OpKind, Error> {
        let op = self
            .inner
            .executor
            .store()
            .get(key)
            .await?
            .ok_or_else(|| no_record(key))?;
        if op.provider != PROVIDER_NAME {
            return Err(Error::InvalidRequest {
                key: key.clone(),
                reason: format!("the record belongs to provider {:?}", op.provider),
            });
        }
        OpKind::from_name(&op.operation).ok_or_else(|| Error::InvalidRequest {
            key: key.clone(),
            reason: format!("unknown Stripe operation {:?}", op.operation),
        })
    }

    async fn reconcile_raw(&self, key: &IdempotencyKey) -> Result<RawReconciliation, Error> {
        let executor = &self.inner.executor;
        let op = executor
            .store()
            .get(key)
            .await?
            .ok_or_else(|| no_record(key))?;
        let kind = OpKind::from_name(&op.operation).ok_or_else(|| Error::InvalidRequest {
            key: key.clone(),
            reason: format!("unknown Stripe operation {:?}", op.operation),
        })?;
        let now = executor.now();
        match op.state {
            OperationState::Pending => {
                return Ok(RawReconciliation::NotApplied(
                    "the record is pending: nothing was processed by Stripe yet".to_owned(),
                ));
            }
            OperationState::Succeeded => {
                return Ok(RawReconciliation::Found(
                    op.response_body.clone().unwrap_or_default(),
                ));
            }
            OperationState::Failed => {
                return Err(Error::rejected_from_ledger(
                    key,
                    op.response_status,
                    op.response_body.clone(),
                ));
            }
            OperationState::Superseded => {
                return Err(match op.superseded_by.clone() {
                    Some(by) => Error::Superseded {
                        key: key.clone(),
                        by,
                    },
                    None => Error::Store(StoreError::Corrupt(format!(
                        "{key} is superseded but names no successor"
                    ))),
                });
            }
            OperationState::Sending if !op.lease_expired(now) => {
                return Err(Error::InFlight {
                    key: key.clone(),
                    lease_expires_at: op.lease_expires_at.unwrap_or(now),
                });
            }
            // Unknown, or a sender that died mid-flight: ask Stripe.
            _ => {}
        }
        let Some((request, what)) = self.lookup_request(kind, key, op.checkpoint.as_deref()) else {
            // Nothing learned: the record stays as it is.
            return Ok(RawReconciliation::Undetermined(
                "no way to look this operation up (its target was not recorded)".to_owned(),
            ));
        };
        // A plain read: no ledger row, no lease, the record untouched.
        let answer = executor
            .read(&self.inner.provider, request)
            .await
            .map_err(|e| AdapterError::Reconcile {
                key: key.clone(),
                reason: format!("{what} failed: {e}"),
            })?;
        if answer.verdict != Verdict::Success {
            return Err(AdapterError::Reconcile {
                key: key.clone(),
                reason: format!(
                    "{what} failed: HTTP {} after {} attempt(s)",
                    answer.status, answer.attempts
                ),
            }
            .into());
        }
        let found = interpret(kind, key, &answer.body, &what, op.checkpoint.as_deref());
        let resolution = match &found {
            RawReconciliation::Found(object) => Resolution::Succeeded {
                status: 200,
                body: object.clone(),
                note: format!("reconciled: found by {what}"),
            },
            RawReconciliation::NotApplied(note) => {
                // "Not applied" leads to a resend, so it must not rest on a
                // stale read: if another worker claimed or settled the record
                // while Stripe was being asked, reconcile again instead.
                let current = executor
                    .store()
                    .get(key)
                    .await?
                    .ok_or_else(|| no_record(key))?;
                if current.state != op.state || current.claims != op.claims {
                    return Err(AdapterError::Reconcile {
                        key: key.clone(),
                        reason: format!(
                            "the record changed (now {}) while Stripe was being asked; \
                             reconcile again",
                            current.state
                        ),
                    }
                    .into());
                }
                Resolution::NotApplied {
                    note: format!("reconciled: {note}"),
                }
            }
            // Not proof either way: the record stays as it is.
            RawReconciliation::NotFound(_) | RawReconciliation::Undetermined(_) => {
                tracing::warn!(key = %key, operation = kind.name(), lookup = %what,
                    "Stripe reconciliation undetermined; the record stays unknown");
                return Ok(found);
            }
        };
        match executor
            .store()
            .resolve(key, &resolution, executor.now())
            .await
        {
            Ok(_) => {}
            // Settled meanwhile by another worker: its result stands.
            Err(StoreError::InvalidState {
                state: OperationState::Succeeded,
                ..
            }) => {
                let op = executor
                    .store()
                    .get(key)
                    .await?
                    .ok_or_else(|| no_record(key))?;
                return Ok(RawReconciliation::Found(
                    op.response_body.unwrap_or_default(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(key = %key, operation = kind.name(), lookup = %what, "Stripe reconciliation done");
        Ok(found)
    }

    fn lookup_request(
        &self,
        kind: OpKind,
        key: &IdempotencyKey,
        checkpoint: Option<&str>,
    ) -> Option<(OutboundRequest, String)> {
        let query = format!("metadata['{IDEM_KEY_METADATA}']:'{key}'");
        let search = |object: &str| {
            let url = self.url(&["v1", object, "search"], &[("query", &query)]);
            Some((self.get(url), format!("search of {object} for {query}")))
        };
        match kind {
            OpKind::PaymentIntentCreate => search("payment_intents"),
            OpKind::CustomerCreate => search("customers"),
            OpKind::ChargeCreate => search("charges"),
            OpKind::RefundCreate => {
                let (name, id) = target_of(checkpoint?)?;
                if name != "payment_intent" && name != "charge" {
                    return None;
                }
                let url = self.url(&["v1", "refunds"], &[(name, id), ("limit", "100")]);
                Some((self.get(url), format!("list of refunds of {id}")))
            }
            OpKind::PaymentIntentConfirm | OpKind::PaymentIntentCapture => {
                let (name, id) = target_of(checkpoint?)?;
                if name != "payment_intent" {
                    return None;
                }
                let url = self.url(&["v1", "payment_intents", id], &[]);
                Some((self.get(url), format!("retrieval of {id}")))
            }
        }
    }

    /// Refuses parameters the configured `Stripe-Version` does not have.
    /// Checked against stripe-python's `PaymentIntentCreateParams` for
    /// `2026-08-26.dahlia` and `2026-10-28.endive` (16.1.0).
    fn check_version(
        &self,
        key: &IdempotencyKey,
        params: &CreatePaymentIntent,
    ) -> Result<(), Error> {
        let Some(version) = &self.inner.stripe_version else {
            return Ok(());
        };
        let Some(date) = version_date(version) else {
            // build() refuses such versions.
            return Err(Error::InvalidRequest {
                key: key.clone(),
                reason: "unreadable Stripe-Version".to_owned(),
            });
        };
        let refuse = |param, hint| {
            Err(AdapterError::UnsupportedParameter {
                key: key.clone(),
                param,
                version: version.clone(),
                hint,
            }
            .into())
        };
        if !params.payment_method_types.is_empty() && date >= ENDIVE {
            return refuse(
                "payment_method_types",
                "removed in 2026-10-28.endive: use allowed_payment_method_types",
            );
        }
        if !params.allowed_payment_method_types.is_empty() && date < DAHLIA {
            return refuse(
                "allowed_payment_method_types",
                "added in 2026-08-26.dahlia: use payment_method_types",
            );
        }
        Ok(())
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        join_url(&self.inner.base, segments, query)
    }

    fn with_common_headers(&self, mut req: OutboundRequest) -> OutboundRequest {
        req = req.bearer_auth(&self.inner.secret_key);
        if let Some(v) = &self.inner.stripe_version {
            req = req.header("Stripe-Version", v);
        }
        if let Some(a) = &self.inner.stripe_account {
            req = req.header("Stripe-Account", a);
        }
        req
    }

    fn get(&self, url: Url) -> OutboundRequest {
        self.with_common_headers(OutboundRequest::get(url))
    }

    async fn write<T: DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        kind: OpKind,
        url: Url,
        form: Form,
        checkpoint: Option<String>,
    ) -> Result<StripeResponse<T>, Error> {
        let request = self
            .with_common_headers(OutboundRequest::post(url))
            .header("Idempotency-Key", key.as_str())
            .form(form.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let executor = &self.inner.executor;
        let provider = &self.inner.provider;
        // At most two rounds: a second only after reconciliation proved that
        // a confirm or capture did not happen (record back to `pending`).
        let mut last_unknown = None;
        for _ in 0..2 {
            let begun = executor
                .begin(provider, key, kind.name(), request.fingerprint())
                .await;
            let result = match begun {
                Ok(Begun::Done(delivered)) => return respond(key, &delivered),
                Ok(Begun::Claimed(claim)) => {
                    match self
                        .send_claimed(claim, request.clone(), checkpoint.as_deref())
                        .await
                    {
                        Ok(delivered) => return respond(key, &delivered),
                        Err(e) => Err(e),
                    }
                }
                Ok(_) => {
                    return Err(AdapterError::Reconcile {
                        key: key.clone(),
                        reason: "unexpected executor answer".to_owned(),
                    }
                    .into());
                }
                Err(e) => Err((e, None)),
            };
            match result {
                Ok(response) => return Ok(response),
                Err((ExecError::OutcomeUnknown { key, reason }, _)) => {
                    match self.after_unknown(&key, reason).await? {
                        Some(response) => return Ok(response),
                        None => last_unknown = Some(key),
                    }
                }
                Err((e, headers)) => return Err(Error::from_exec(e, headers.as_ref())),
            }
        }
        Err(Error::OutcomeUnknown {
            key: last_unknown.unwrap_or_else(|| key.clone()),
            reason: "still unknown after reconciliation and a resend".to_owned(),
            resend_safe_until: None,
        })
    }

    async fn send_claimed(
        &self,
        mut claim: Claim,
        request: OutboundRequest,
        checkpoint: Option<&str>,
    ) -> Result<Delivered, (ExecError, Option<HeaderMap>)> {
        if let Some(cp) = checkpoint {
            if claim.operation().checkpoint.as_deref() != Some(cp) {
                claim.checkpoint(cp).await.map_err(|e| (e, None))?;
            }
        }
        let outcome = claim.send(request).await;
        let headers = outcome.response.as_ref().map(|(_, h, _)| h.clone());
        claim.finish(outcome).await.map_err(|e| (e, headers))
    }

    /// An operation ended `unknown`. Inside Stripe's key window the next run
    /// resends the same key (Stripe dedupes it), so say so. Past it, a resend
    /// could charge twice: reconcile instead. Returns `None` when
    /// reconciliation proved the operation did not happen (record pending).
    async fn after_unknown<T: DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        reason: String,
    ) -> Result<Option<StripeResponse<T>>, Error> {
        let executor = &self.inner.executor;
        let provider = &self.inner.provider;
        let op = executor
            .store()
            .get(key)
            .await?
            .ok_or_else(|| no_record(key))?;
        let now = executor.now();
        let budget = provider.retry().claim_budget();
        if provider
            .class()
            .may_resend_unknown(op.first_sent_at, now, budget)
        {
            let until = op.first_sent_at.map(|first| first + KEY_RETENTION - budget);
            return Err(Error::OutcomeUnknown {
                key: key.clone(),
                reason,
                resend_safe_until: until.or(Some(now)),
            });
        }
        tracing::warn!(key = %key, %reason, "Stripe key window passed with the outcome unknown; reconciling instead of resending");
        match self.reconcile_raw(key).await? {
            RawReconciliation::Found(body) => {
                let object = decode::<T>(key, &body)?;
                Ok(Some(StripeResponse {
                    object,
                    key: key.clone(),
                    source: Source::Reconciled,
                    replayed: false,
                    request_id: None,
                }))
            }
            RawReconciliation::NotApplied(_) => Ok(None),
            RawReconciliation::NotFound(note) => Err(AdapterError::NotFound {
                key: key.clone(),
                note,
            }
            .into()),
            RawReconciliation::Undetermined(note) => Err(AdapterError::Undetermined {
                key: key.clone(),
                note,
            }
            .into()),
        }
    }
}

/// The operation's target in a checkpoint: `payment_intent=pi_…`, possibly
/// followed by `;name=value` facts about the request (see [`capture_facts`]).
fn target_of(checkpoint: &str) -> Option<(&str, &str)> {
    checkpoint.split(';').next()?.split_once('=')
}

/// What a capture's checkpoint says of its finality: `Some(true)` for a
/// final capture, `Some(false)` for `final_capture=false`, `None` when the
/// record predates the fact (older versions recorded only the intent).
fn capture_is_final(checkpoint: Option<&str>) -> Option<bool> {
    checkpoint?
        .split(';')
        .skip(1)
        .find_map(|fact| fact.strip_prefix("final_capture="))
        .and_then(|v| v.parse().ok())
}

/// The checkpoint of a capture: its intent and whether it is final.
fn capture_facts(id: &PaymentIntentId, params: &CapturePaymentIntent) -> String {
    let final_capture = params.final_capture != Some(false);
    format!("payment_intent={id};final_capture={final_capture}")
}

/// Reads a lookup's answer. "Not applied" is only ever concluded from
/// positive proof that the effect is absent; everything Stripe's answer does
/// not prove is `NotFound` (search) or `Undetermined` (status reads).
fn interpret(
    kind: OpKind,
    key: &IdempotencyKey,
    body: &[u8],
    what: &str,
    checkpoint: Option<&str>,
) -> RawReconciliation {
    match kind {
        OpKind::PaymentIntentCreate
        | OpKind::CustomerCreate
        | OpKind::ChargeCreate
        | OpKind::RefundCreate => {
            // An object carrying the key is proof it was created; no object
            // is not proof of anything (search lags, the refund list is
            // capped at 100).
            let data = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("data").and_then(|d| d.as_array()).cloned())
                .unwrap_or_default();
            let found = data.into_iter().find(|object| {
                object
                    .get("metadata")
                    .and_then(|m| m.get(IDEM_KEY_METADATA))
                    .and_then(|v| v.as_str())
                    == Some(key.as_str())
            });
            match found.and_then(|o| serde_json::to_vec(&o).ok()) {
                Some(bytes) => RawReconciliation::Found(Bytes::from(bytes)),
                None => RawReconciliation::NotFound(format!("{what}: no object found")),
            }
        }
        OpKind::PaymentIntentConfirm => {
            let Ok(pi) = serde_json::from_slice::<PaymentIntent>(body) else {
                return RawReconciliation::Undetermined(format!("{what}: unreadable answer"));
            };
            use PaymentIntentStatus as S;
            match &pi.status {
                S::RequiresAction | S::Processing | S::RequiresCapture | S::Succeeded => {
                    RawReconciliation::Found(Bytes::copy_from_slice(body))
                }
                // Nothing was charged: a confirm that went through leaves the
                // intent past this state, or (3-D Secure with manual
                // confirmation) back here with nothing charged, so a second
                // confirm cannot charge twice.
                S::RequiresConfirmation if pi.amount_received == Some(Amount::minor(0)) => {
                    RawReconciliation::NotApplied(format!(
                        "{what}: the intent is requires_confirmation with nothing received, \
                         so the confirm did not happen"
                    ))
                }
                status => RawReconciliation::Undetermined(format!(
                    "{what}: the intent is {status:?} (amount_received {:?}); cannot tell \
                     whether the confirm ran",
                    pi.amount_received.map(Amount::get)
                )),
            }
        }
        OpKind::PaymentIntentCapture => {
            let Ok(pi) = serde_json::from_slice::<PaymentIntent>(body) else {
                return RawReconciliation::Undetermined(format!("{what}: unreadable answer"));
            };
            use PaymentIntentStatus as S;
            let received = pi.amount_received.map(Amount::get);
            match (&pi.status, capture_is_final(checkpoint), received) {
                (S::Succeeded, _, _) => RawReconciliation::Found(Bytes::copy_from_slice(body)),
                // A final capture that happened leaves the intent
                // `succeeded`; still `requires_capture` proves it did not.
                (S::RequiresCapture, Some(true), _) => RawReconciliation::NotApplied(format!(
                    "{what}: the intent is still requires_capture, so the final capture did not happen"
                )),
                // A partial capture (`final_capture=false`, or a record that
                // does not say) leaves the intent `requires_capture` either
                // way: only "nothing received at all" proves it did not happen.
                (S::RequiresCapture, _, Some(0)) => RawReconciliation::NotApplied(format!(
                    "{what}: the intent is requires_capture with nothing received, so the \
                     capture did not happen"
                )),
                (status, finality, received) => RawReconciliation::Undetermined(format!(
                    "{what}: the intent is {status:?} with amount_received {received:?} and the \
                     capture is {}; that does not prove whether this capture ran",
                    match finality {
                        Some(true) => "final",
                        Some(false) => "partial (final_capture=false)",
                        None => "of unrecorded finality",
                    }
                )),
            }
        }
    }
}

fn decode<T: DeserializeOwned>(key: &IdempotencyKey, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| {
        AdapterError::Decode {
            key: key.clone(),
            source,
        }
        .into()
    })
}

fn respond<T: DeserializeOwned>(
    key: &IdempotencyKey,
    delivered: &Delivered,
) -> Result<StripeResponse<T>, Error> {
    let header = |name: &str| {
        delivered
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let replayed = delivered.from_ledger()
        || header("idempotent-replayed").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Ok(StripeResponse {
        object: decode(key, &delivered.body)?,
        key: key.clone(),
        source: delivered.source,
        replayed,
        request_id: header("request-id"),
    })
}

fn no_record(key: &IdempotencyKey) -> Error {
    AdapterError::NoRecord { key: key.clone() }.into()
}

/// Adds `metadata[idem_key]` to the caller's metadata.
fn with_key(key: &IdempotencyKey, metadata: &Metadata) -> Result<Metadata, Error> {
    if metadata.contains_key(IDEM_KEY_METADATA) {
        return Err(Error::InvalidRequest {
            key: key.clone(),
            reason: format!("metadata key {IDEM_KEY_METADATA:?} is reserved for idem"),
        });
    }
    let mut m = metadata.clone();
    m.insert(IDEM_KEY_METADATA.to_owned(), key.to_string());
    Ok(m)
}

/// `client.payment_intents()`.
#[derive(Debug, Clone, Copy)]
pub struct PaymentIntents<'a> {
    client: &'a StripeClient,
}

impl PaymentIntents<'_> {
    /// `POST /v1/payment_intents`, with `metadata[idem_key]=<key>`.
    ///
    /// # Errors
    ///
    /// See [`Error`]. After Stripe's 24 h key window an unknown outcome is
    /// reconciled through search instead of resent.
    pub async fn create(
        &self,
        key: &IdempotencyKey,
        params: &CreatePaymentIntent,
    ) -> Result<StripeResponse<PaymentIntent>, Error> {
        self.client.check_version(key, params)?;
        let mut form = Form::new();
        params.encode(&mut form);
        form.map("metadata", &with_key(key, &params.metadata)?);
        let url = self.client.url(&["v1", "payment_intents"], &[]);
        self.client
            .write(key, OpKind::PaymentIntentCreate, url, form, None)
            .await
    }

    /// `POST /v1/payment_intents/{id}/confirm`.
    ///
    /// # Errors
    ///
    /// See [`Error`]. After the key window an unknown confirm is reconciled by
    /// reading the intent's status.
    pub async fn confirm(
        &self,
        key: &IdempotencyKey,
        id: &PaymentIntentId,
        params: &ConfirmPaymentIntent,
    ) -> Result<StripeResponse<PaymentIntent>, Error> {
        let mut form = Form::new();
        params.encode(&mut form);
        let url = self
            .client
            .url(&["v1", "payment_intents", id.as_str(), "confirm"], &[]);
        self.client
            .write(
                key,
                OpKind::PaymentIntentConfirm,
                url,
                form,
                Some(format!("payment_intent={id}")),
            )
            .await
    }

    /// `POST /v1/payment_intents/{id}/capture`.
    ///
    /// # Errors
    ///
    /// See [`Error`]. After the key window an unknown capture is reconciled by
    /// reading the intent's status.
    pub async fn capture(
        &self,
        key: &IdempotencyKey,
        id: &PaymentIntentId,
        params: &CapturePaymentIntent,
    ) -> Result<StripeResponse<PaymentIntent>, Error> {
        let mut form = Form::new();
        params.encode(&mut form);
        let url = self
            .client
            .url(&["v1", "payment_intents", id.as_str(), "capture"], &[]);
        self.client
            .write(
                key,
                OpKind::PaymentIntentCapture,
                url,
                form,
                Some(capture_facts(id, params)),
            )
            .await
    }
}

/// `client.refunds()`.
#[derive(Debug, Clone, Copy)]
pub struct Refunds<'a> {
    client: &'a StripeClient,
}

impl Refunds<'_> {
    /// `POST /v1/refunds`, with `metadata[idem_key]=<key>`. Stripe has no
    /// refund search: reconciliation lists the refunds of the PaymentIntent or
    /// charge (recorded in the ledger as the operation's checkpoint).
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn create(
        &self,
        key: &IdempotencyKey,
        params: &CreateRefund,
    ) -> Result<StripeResponse<Refund>, Error> {
        let mut form = Form::new();
        params.encode(&mut form);
        form.map("metadata", &with_key(key, &params.metadata)?);
        let checkpoint = match &params.target {
            RefundTarget::PaymentIntent(id) => format!("payment_intent={id}"),
            RefundTarget::Charge(id) => format!("charge={id}"),
        };
        let url = self.client.url(&["v1", "refunds"], &[]);
        self.client
            .write(key, OpKind::RefundCreate, url, form, Some(checkpoint))
            .await
    }
}

/// `client.customers()`.
#[derive(Debug, Clone, Copy)]
pub struct Customers<'a> {
    client: &'a StripeClient,
}

impl Customers<'_> {
    /// `POST /v1/customers`, with `metadata[idem_key]=<key>`.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn create(
        &self,
        key: &IdempotencyKey,
        params: &CreateCustomer,
    ) -> Result<StripeResponse<Customer>, Error> {
        let mut form = Form::new();
        params.encode(&mut form);
        form.map("metadata", &with_key(key, &params.metadata)?);
        let url = self.client.url(&["v1", "customers"], &[]);
        self.client
            .write(key, OpKind::CustomerCreate, url, form, None)
            .await
    }
}

/// `client.charges()`.
#[derive(Debug, Clone, Copy)]
pub struct Charges<'a> {
    client: &'a StripeClient,
}

impl Charges<'_> {
    /// `POST /v1/charges` (legacy), with `metadata[idem_key]=<key>`.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn create(
        &self,
        key: &IdempotencyKey,
        params: &CreateCharge,
    ) -> Result<StripeResponse<Charge>, Error> {
        let mut form = Form::new();
        params.encode(&mut form);
        form.map("metadata", &with_key(key, &params.metadata)?);
        let url = self.client.url(&["v1", "charges"], &[]);
        self.client
            .write(key, OpKind::ChargeCreate, url, form, None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pi(status: &str, received: Option<u64>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "id": "pi_1", "amount": 1000, "currency": "usd", "status": status,
        });
        if let Some(r) = received {
            v["amount_received"] = serde_json::json!(r);
        }
        v.to_string().into_bytes()
    }

    fn verdict(kind: OpKind, body: &[u8], checkpoint: &str) -> &'static str {
        let key: IdempotencyKey = "t_x_1_v1".parse().unwrap();
        match interpret(kind, &key, body, "read", Some(checkpoint)) {
            RawReconciliation::Found(_) => "found",
            RawReconciliation::NotApplied(_) => "not applied",
            RawReconciliation::NotFound(_) => "not found",
            RawReconciliation::Undetermined(_) => "undetermined",
        }
    }

    #[test]
    fn capture_verdicts_need_positive_proof() {
        use OpKind::PaymentIntentCapture as C;
        let final_cp = "payment_intent=pi_1;final_capture=true";
        let partial_cp = "payment_intent=pi_1;final_capture=false";
        let old_cp = "payment_intent=pi_1";
        let waiting_paid = pi("requires_capture", Some(300));
        let waiting_unpaid = pi("requires_capture", Some(0));
        assert_eq!(verdict(C, &waiting_paid, final_cp), "not applied");
        assert_eq!(verdict(C, &waiting_paid, partial_cp), "undetermined");
        assert_eq!(verdict(C, &waiting_paid, old_cp), "undetermined");
        assert_eq!(verdict(C, &waiting_unpaid, partial_cp), "not applied");
        assert_eq!(verdict(C, &waiting_unpaid, old_cp), "not applied");
        // No amount_received in the answer: nothing proven.
        assert_eq!(
            verdict(C, &pi("requires_capture", None), partial_cp),
            "undetermined"
        );
        assert_eq!(
            verdict(C, &pi("succeeded", Some(1000)), partial_cp),
            "found"
        );
        assert_eq!(
            verdict(C, &pi("canceled", Some(0)), final_cp),
            "undetermined"
        );
        assert_eq!(verdict(C, b"not json", final_cp), "undetermined");
    }

    #[test]
    fn confirm_verdicts_need_positive_proof() {
        use OpKind::PaymentIntentConfirm as F;
        let cp = "payment_intent=pi_1";
        assert_eq!(
            verdict(F, &pi("requires_confirmation", Some(0)), cp),
            "not applied"
        );
        assert_eq!(
            verdict(F, &pi("requires_confirmation", None), cp),
            "undetermined"
        );
        assert_eq!(
            verdict(F, &pi("requires_payment_method", Some(0)), cp),
            "undetermined"
        );
        assert_eq!(verdict(F, &pi("processing", Some(0)), cp), "found");
    }

    #[test]
    fn checkpoints_name_the_target_and_the_finality() {
        let id: PaymentIntentId = "pi_1".parse().unwrap();
        let partial = CapturePaymentIntent {
            final_capture: Some(false),
            ..CapturePaymentIntent::default()
        };
        let cp = capture_facts(&id, &partial);
        assert_eq!(target_of(&cp), Some(("payment_intent", "pi_1")));
        assert_eq!(capture_is_final(Some(&cp)), Some(false));
        let cp = capture_facts(&id, &CapturePaymentIntent::default());
        assert_eq!(capture_is_final(Some(&cp)), Some(true));
        assert_eq!(capture_is_final(Some("payment_intent=pi_1")), None);
        assert_eq!(target_of("charge=ch_1"), Some(("charge", "ch_1")));
    }

    #[test]
    fn version_dates() {
        assert_eq!(version_date("2026-10-28.endive"), Some("2026-10-28"));
        assert_eq!(version_date("2024-06-20"), Some("2024-06-20"));
        assert_eq!(version_date("latest"), None);
        assert_eq!(version_date("2026-1-28.x"), None);
        assert!(version_date("2026-10-28.endive").unwrap() >= ENDIVE);
        assert!(version_date("2026-08-26.dahlia").unwrap() < ENDIVE);
    }
}
