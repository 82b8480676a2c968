//! # idem-stripe
//!
//! Typed, key-required, retry-safe Stripe writes on top of [`idem`]'s ledger
//! and executor: a customer is charged once, however often the job runs.
//!
//! ```no_run
//! use idem::{Executor, IdempotencyKey};
//! use idem::ledger::SqliteStore;
//! use idem_stripe::{Amount, CreatePaymentIntent, Currency, StripeClient};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = Executor::builder(SqliteStore::open("worker.db").await?).build();
//! let stripe = StripeClient::builder(executor, "sk_test_...")
//!     .stripe_version("2026-10-28.endive")
//!     .build()?;
//!
//! // The key is stored on the order row before this call, and reused on every retry.
//! let key: IdempotencyKey = "joes-bikes_orders_42_v1".parse()?;
//! let mut params = CreatePaymentIntent::new(Amount::minor(1099), Currency::usd());
//! // `payment_method_types` is gone in 2026-10-28.endive; the client refuses it
//! // there (Error::UnsupportedParameter) before anything is recorded or sent.
//! params.allowed_payment_method_types = vec!["card".into()];
//! params.metadata.insert("order_id".into(), "42".into());
//!
//! let intent = stripe.payment_intents().create(&key, &params).await?;
//! println!("{} {:?} (replayed: {})", intent.object.id, intent.object.status, intent.replayed);
//! # Ok(()) }
//! ```
//!
//! ## What it guarantees
//!
//! * **Key required.** Every write takes an [`IdempotencyKey`](idem::IdempotencyKey)
//!   (no `Option`, no default), sent as `Idempotency-Key` and recorded in the
//!   ledger before the first attempt.
//! * **Safety class:** [`NativeKey`](idem::SafetyClass::NativeKey) with a
//!   24 h retention. Connect errors, timeouts, 409 (`lock_timeout`,
//!   `idempotency_key_in_use`), 429 and 5xx are retried with the same key,
//!   with backoff and jitter, while the whole retry fits in Stripe's key
//!   window. `Stripe-Should-Retry` wins when Stripe sends it (see
//!   [`StripeClassifier`]). A 400 `idempotency_error` is
//!   [`Error::KeyReused`] and is never retried.
//! * **Ledger first.** A succeeded operation answers from the ledger with no
//!   request ([`StripeResponse::replayed`] is `true`).
//! * **Key in metadata.** Every object created through idem carries its key as
//!   `metadata[idem_key]` ([`IDEM_KEY_METADATA`]). Once the key window has
//!   passed with an outcome still unknown, the write is not resent blindly:
//!   [`StripeClient::reconcile`] (called automatically) searches for the key
//!   and returns the object, or [`AdapterError::NotFound`] / [`AdapterError::Undetermined`]
//!   when Stripe's answer proves nothing. Only positive proof that the
//!   effect is absent lets the same key be sent again.
//! * **Versions.** With [`StripeClientBuilder::stripe_version`] set, a
//!   parameter that version does not have is refused
//!   ([`AdapterError::UnsupportedParameter`]) before anything is recorded or sent.
//!
//! ## Reconciliation limits
//!
//! * Stripe's search lags writes by up to about a minute: "not found" is not
//!   proof, so the record stays `unknown` until found or bumped by an operator.
//! * Refunds have no search API: their PaymentIntent's (or charge's) refunds
//!   are listed and matched on `metadata[idem_key]`.
//! * Confirm takes no metadata: a confirm or capture is reconciled by reading
//!   the PaymentIntent. `requires_confirmation` with nothing received proves a
//!   confirm did not happen; `requires_capture` proves a *final* capture did
//!   not happen, but a partial one (`final_capture=false`) only when nothing
//!   was received at all; otherwise (and for `requires_payment_method` or
//!   `canceled`) the outcome is [`Reconciliation::Undetermined`].
//! * The client implements [`idem::reconcile::Reconcile`] (provider
//!   `stripe`), for tools that reconcile any provider's rows by key.
//!
//! ## Testing
//!
//! `idem_testkit::FakeStripe` (crate `idem-testkit`, as a dev-dependency) is a
//! simulated Stripe that keeps Stripe's idempotency rules, counts real side
//! effects and injects faults.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod classifier;
mod client;
pub mod error;
mod form;
mod reconcile;
pub use reconcile::Reconciliation;

/// The types of this crate: ids and values, request params, answered objects.
pub mod model {
    pub mod objects;
    pub mod params;
    pub mod types;
}
pub use model::{objects, params, types};

pub use classifier::StripeClassifier;
pub use client::{
    Charges, Customers, DEFAULT_BASE_URL, KEY_RETENTION, PROVIDER_NAME, PaymentIntents, Refunds,
    Stripe, StripeClient, StripeClientBuilder, StripeResponse, default_retry,
};
pub use error::{AdapterError, ConfigError, Error, ErrorType, ParseError, StripeError};
pub use objects::{Charge, Customer, PaymentIntent, PaymentIntentStatus, Refund, StripeObject};
pub use params::{
    AutomaticPaymentMethods, CaptureMethod, CapturePaymentIntent, ConfirmPaymentIntent,
    CreateCharge, CreateCustomer, CreatePaymentIntent, CreateRefund, RefundReason, RefundTarget,
    SetupFutureUsage, TransferData,
};
pub use types::{
    Amount, ChargeId, Currency, CustomerId, IDEM_KEY_METADATA, Metadata, PaymentIntentId,
    PaymentMethodId, RefundId,
};
