#![doc = include_str!("../README.md")]
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
