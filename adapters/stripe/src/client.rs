//! The typed client: [`StripeClient`] and its resources.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use idem::SafetyClass;
use idem::adapter::{AdapterCore, Answer, Extra, Facts, finish, record_facts};
use idem::executor::{RetrySettings, Source, Url};
use idem::{Delivered, Executor, IdempotencyKey, OutboundRequest};
use serde::de::DeserializeOwned;

use crate::classifier::StripeClassifier;
use crate::error::{AdapterError, ConfigError, Error, StripeError};
use crate::form::Form;
use crate::objects::{Charge, Customer, PaymentIntent, Refund};
use crate::params::{
    CapturePaymentIntent, ConfirmPaymentIntent, CreateCharge, CreateCustomer, CreatePaymentIntent,
    CreateRefund, RefundTarget,
};
use crate::reconcile::capture_facts;
use crate::types::{IDEM_KEY_METADATA, Metadata, PaymentIntentId};
use idem::adapter::Provider as AdapterProvider;

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
pub(crate) enum OpKind {
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

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::PaymentIntentCreate => "payment_intents.create",
            Self::PaymentIntentConfirm => "payment_intents.confirm",
            Self::PaymentIntentCapture => "payment_intents.capture",
            Self::RefundCreate => "refunds.create",
            Self::CustomerCreate => "customers.create",
            Self::ChargeCreate => "charges.create",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
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

    /// The client.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the base URL, the secret key or a header value
    /// is invalid.
    pub fn build(self) -> Result<StripeClient, ConfigError> {
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
        let core = AdapterCore::new::<Stripe>(self.executor, &self.base_url, self.retry)
            .map_err(|_| ConfigError::BaseUrl)?;
        Ok(StripeClient {
            inner: Arc::new(Inner {
                core,
                secret_key: self.secret_key,
                stripe_version: self.stripe_version,
                stripe_account: self.stripe_account,
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) core: AdapterCore,
    pub(crate) secret_key: String,
    pub(crate) stripe_version: Option<String>,
    pub(crate) stripe_account: Option<String>,
}

/// Typed, key-required, retry-safe Stripe writes. Cheap to clone.
///
/// Every write takes an [`IdempotencyKey`], sends it as `Idempotency-Key`,
/// records it in the ledger before the first attempt, and stores it on the
/// created object as `metadata[idem_key]` (see [`IDEM_KEY_METADATA`]).
#[derive(Clone)]
pub struct StripeClient {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.inner.core.base().as_str())
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

    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        self.inner.core.url(segments, query)
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

    pub(crate) fn get(&self, url: Url) -> OutboundRequest {
        self.with_common_headers(OutboundRequest::get(url))
    }

    /// A keyed raw write for what the typed API lacks: a form `POST` to
    /// `path` below the base URL (for example `"/v1/transfers"`), with this
    /// client's headers and `Idempotency-Key: <key>`, through the executor
    /// (recorded first, fingerprinted, answered from the ledger on a rerun).
    /// An unknown outcome is not reconciled automatically: the record stays
    /// `unknown` for an operator.
    ///
    /// # Errors
    ///
    /// See [`Error`]; [`Error::InvalidRequest`] for a path that would leave
    /// the base URL.
    pub async fn post<T: DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<Answer<T>, Error> {
        let core = &self.inner.core;
        let request = self
            .with_common_headers(core.raw_request(key, Method::POST, path)?)
            .header("Idempotency-Key", key.as_str())
            .form(params.iter().copied());
        core.raw_write(core.provider(), key, request).await
    }

    async fn write<T: DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        kind: OpKind,
        url: Url,
        form: Form,
        extra: &Extra,
        checkpoint: Option<String>,
    ) -> Result<StripeResponse<T>, Error> {
        let mut pairs = form.pairs().to_vec();
        extra
            .append_to(&mut pairs)
            .map_err(|reason| Error::invalid(key, reason))?;
        let request = self
            .with_common_headers(OutboundRequest::post(url))
            .header("Idempotency-Key", key.as_str())
            .form(pairs);
        let core = &self.inner.core;
        let facts = checkpoint.as_deref().map_or(Facts::None, Facts::Required);
        // At most two rounds: a second only after reconciliation proved that
        // a confirm or capture did not happen (record back to `pending`).
        let mut last_unknown = None;
        for _ in 0..2 {
            let result = match core
                .begin(core.provider(), key, kind.name(), &request)
                .await
            {
                Ok(Ok(done)) => return respond(key, &done),
                Ok(Err(mut claim)) => match record_facts(&mut claim, facts).await {
                    Ok(()) => {
                        let outcome = claim.send(request.clone()).await;
                        finish(claim, outcome).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(done) => return respond(key, &done),
                Err(Error::OutcomeUnknown { key, reason, .. }) => {
                    match self.after_unknown(&key, reason).await? {
                        Some(response) => return Ok(response),
                        None => last_unknown = Some(key),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::OutcomeUnknown {
            key: last_unknown.unwrap_or_else(|| key.clone()),
            reason: "still unknown after reconciliation and a resend".to_owned(),
            resend_safe_until: None,
        })
    }
}

pub(crate) fn decode<T: DeserializeOwned>(key: &IdempotencyKey, body: &[u8]) -> Result<T, Error> {
    idem::adapter::decode_json(key, body)
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
            .write(
                key,
                OpKind::PaymentIntentCreate,
                url,
                form,
                &params.extra,
                None,
            )
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
                &params.extra,
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
                &params.extra,
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
            .write(
                key,
                OpKind::RefundCreate,
                url,
                form,
                &params.extra,
                Some(checkpoint),
            )
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
            .write(key, OpKind::CustomerCreate, url, form, &params.extra, None)
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
            .write(key, OpKind::ChargeCreate, url, form, &params.extra, None)
            .await
    }
}

idem::adapter_basics!(
    builder: StripeClientBuilder,
    client: StripeClient,
    retry_doc: "Replaces the retry settings (see [`default_retry`](crate::default_retry)). They must fit in Stripe's 24 h key window, which they do by a wide margin."
);

#[cfg(test)]
mod tests {
    use super::*;

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
