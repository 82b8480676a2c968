//! Typed request parameters. Names follow Stripe's API reference (checked
//! against the official Python client's `stripe/params/`, API versions
//! `2026-08-26.dahlia` and `2026-10-28.endive`). Only a commonly used subset
//! of each endpoint's parameters is offered.

use idem::adapter::Extra;

use crate::form::Form;
use crate::types::{
    Amount, ChargeId, Currency, CustomerId, Metadata, PaymentIntentId, PaymentMethodId,
};

/// `capture_method` of a PaymentIntent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaptureMethod {
    /// `automatic`: capture when the customer authorizes.
    Automatic,
    /// `automatic_async`.
    AutomaticAsync,
    /// `manual`: authorize now, capture later with
    /// [`PaymentIntents::capture`](crate::PaymentIntents::capture).
    Manual,
}

impl CaptureMethod {
    fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::AutomaticAsync => "automatic_async",
            Self::Manual => "manual",
        }
    }
}

/// `automatic_payment_methods` of a PaymentIntent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutomaticPaymentMethods {
    /// `enabled`.
    pub enabled: bool,
    /// `allow_redirects`: `Some(false)` sends `never`, `Some(true)` `always`.
    pub allow_redirects: Option<bool>,
}

/// Parameters of `POST /v1/payment_intents`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatePaymentIntent {
    /// `amount` (required), in the currency's smallest unit.
    pub amount: Amount,
    /// `currency` (required).
    pub currency: Currency,
    /// `customer`.
    pub customer: Option<CustomerId>,
    /// `payment_method`.
    pub payment_method: Option<PaymentMethodId>,
    /// `payment_method_types[i]` (API versions up to `2026-08-26.dahlia`;
    /// removed in `2026-10-28.endive`, use `allowed_payment_method_types`).
    pub payment_method_types: Vec<String>,
    /// `allowed_payment_method_types[i]` (from `2026-08-26.dahlia`).
    pub allowed_payment_method_types: Vec<String>,
    /// `automatic_payment_methods[enabled]`, `[allow_redirects]`.
    pub automatic_payment_methods: Option<AutomaticPaymentMethods>,
    /// `capture_method`.
    pub capture_method: Option<CaptureMethod>,
    /// `confirm`: confirm at once.
    pub confirm: Option<bool>,
    /// `off_session` (with `confirm`).
    pub off_session: Option<bool>,
    /// `return_url` (with `confirm`).
    pub return_url: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `receipt_email`.
    pub receipt_email: Option<String>,
    /// `statement_descriptor_suffix`.
    pub statement_descriptor_suffix: Option<String>,
    /// `statement_descriptor` (non-card payments; cards use the suffix).
    pub statement_descriptor: Option<String>,
    /// `setup_future_usage`: save the payment method for later payments.
    pub setup_future_usage: Option<SetupFutureUsage>,
    /// `on_behalf_of` (Connect): the account that is the business of record.
    pub on_behalf_of: Option<String>,
    /// `transfer_data[destination]` and `[amount]` (Connect destination charges).
    pub transfer_data: Option<TransferData>,
    /// `application_fee_amount` (Connect), in the smallest currency unit.
    pub application_fee_amount: Option<Amount>,
    /// `metadata[k]`; the adapter adds `idem_key`.
    pub metadata: Metadata,
    /// Parameters this struct lacks, sent as they are (see `extra`):
    /// `shipping[...]` and `payment_method_options[...]`, for example.
    pub extra: Extra,
}

/// `setup_future_usage` of a PaymentIntent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupFutureUsage {
    /// `on_session`: the customer will be present.
    OnSession,
    /// `off_session`: charged later without the customer.
    OffSession,
}

impl SetupFutureUsage {
    fn as_str(self) -> &'static str {
        match self {
            Self::OnSession => "on_session",
            Self::OffSession => "off_session",
        }
    }
}

/// `transfer_data` of a destination charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferData {
    /// `destination`: the connected account (`acct_...`).
    pub destination: String,
    /// `amount` transferred, when not the whole charge.
    pub amount: Option<Amount>,
}

impl CreatePaymentIntent {
    /// A PaymentIntent for `amount` in `currency`, everything else unset.
    pub fn new(amount: Amount, currency: Currency) -> Self {
        Self {
            amount,
            currency,
            customer: None,
            payment_method: None,
            payment_method_types: Vec::new(),
            allowed_payment_method_types: Vec::new(),
            automatic_payment_methods: None,
            capture_method: None,
            confirm: None,
            off_session: None,
            return_url: None,
            description: None,
            receipt_email: None,
            statement_descriptor_suffix: None,
            statement_descriptor: None,
            setup_future_usage: None,
            on_behalf_of: None,
            transfer_data: None,
            application_fee_amount: None,
            metadata: Metadata::new(),
            extra: Extra::default(),
        }
    }

    pub(crate) fn encode(&self, f: &mut Form) {
        f.push("amount", self.amount);
        f.push("currency", &self.currency);
        f.opt("customer", self.customer.as_ref());
        f.opt("payment_method", self.payment_method.as_ref());
        f.list("payment_method_types", &self.payment_method_types);
        f.list(
            "allowed_payment_method_types",
            &self.allowed_payment_method_types,
        );
        if let Some(apm) = self.automatic_payment_methods {
            f.push("automatic_payment_methods[enabled]", apm.enabled);
            f.opt(
                "automatic_payment_methods[allow_redirects]",
                apm.allow_redirects
                    .map(|a| if a { "always" } else { "never" }),
            );
        }
        f.opt(
            "capture_method",
            self.capture_method.map(CaptureMethod::as_str),
        );
        f.opt("confirm", self.confirm);
        f.opt("off_session", self.off_session);
        f.opt("return_url", self.return_url.as_ref());
        f.opt("description", self.description.as_ref());
        f.opt("receipt_email", self.receipt_email.as_ref());
        f.opt(
            "statement_descriptor_suffix",
            self.statement_descriptor_suffix.as_ref(),
        );
        f.opt("statement_descriptor", self.statement_descriptor.as_ref());
        f.opt(
            "setup_future_usage",
            self.setup_future_usage.map(SetupFutureUsage::as_str),
        );
        f.opt("on_behalf_of", self.on_behalf_of.as_ref());
        if let Some(t) = &self.transfer_data {
            f.push("transfer_data[destination]", &t.destination);
            f.opt("transfer_data[amount]", t.amount);
        }
        f.opt("application_fee_amount", self.application_fee_amount);
    }
}

/// Parameters of `POST /v1/payment_intents/{intent}/confirm`. Stripe takes no
/// `metadata` here, so a confirm is reconciled by reading the intent's
/// status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfirmPaymentIntent {
    /// `payment_method`.
    pub payment_method: Option<PaymentMethodId>,
    /// `capture_method`.
    pub capture_method: Option<CaptureMethod>,
    /// `off_session`.
    pub off_session: Option<bool>,
    /// `return_url`.
    pub return_url: Option<String>,
    /// `receipt_email`.
    pub receipt_email: Option<String>,
    /// Parameters this struct lacks, sent as they are (see `extra`).
    pub extra: Extra,
}

impl ConfirmPaymentIntent {
    pub(crate) fn encode(&self, f: &mut Form) {
        f.opt("payment_method", self.payment_method.as_ref());
        f.opt(
            "capture_method",
            self.capture_method.map(CaptureMethod::as_str),
        );
        f.opt("off_session", self.off_session);
        f.opt("return_url", self.return_url.as_ref());
        f.opt("receipt_email", self.receipt_email.as_ref());
    }
}

/// Parameters of `POST /v1/payment_intents/{intent}/capture`. Reconciled by
/// reading the intent's status. `metadata` here updates the intent's
/// metadata; the adapter does not add `idem_key` to it (that would overwrite
/// the key of the create).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapturePaymentIntent {
    /// `amount_to_capture` (defaults to the full capturable amount).
    pub amount_to_capture: Option<Amount>,
    /// `final_capture`.
    pub final_capture: Option<bool>,
    /// `statement_descriptor_suffix`.
    pub statement_descriptor_suffix: Option<String>,
    /// `metadata[k]`.
    pub metadata: Metadata,
    /// Parameters this struct lacks, sent as they are (see `extra`).
    pub extra: Extra,
}

impl CapturePaymentIntent {
    pub(crate) fn encode(&self, f: &mut Form) {
        f.opt("amount_to_capture", self.amount_to_capture);
        f.opt("final_capture", self.final_capture);
        f.opt(
            "statement_descriptor_suffix",
            self.statement_descriptor_suffix.as_ref(),
        );
        f.map("metadata", &self.metadata);
    }
}

/// `reason` of a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefundReason {
    /// `duplicate`.
    Duplicate,
    /// `fraudulent`.
    Fraudulent,
    /// `requested_by_customer`.
    RequestedByCustomer,
}

impl RefundReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Fraudulent => "fraudulent",
            Self::RequestedByCustomer => "requested_by_customer",
        }
    }
}

/// What a refund refunds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefundTarget {
    /// `payment_intent`.
    PaymentIntent(PaymentIntentId),
    /// `charge`.
    Charge(ChargeId),
}

/// Parameters of `POST /v1/refunds`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRefund {
    /// `payment_intent` or `charge` (one is required).
    pub target: RefundTarget,
    /// `amount` (defaults to the whole remaining amount).
    pub amount: Option<Amount>,
    /// `reason`.
    pub reason: Option<RefundReason>,
    /// `metadata[k]`; the adapter adds `idem_key`.
    pub metadata: Metadata,
    /// Parameters this struct lacks, sent as they are (see `extra`).
    pub extra: Extra,
}

impl CreateRefund {
    /// Refunds a PaymentIntent (in full unless `amount` is set).
    pub fn payment_intent(id: PaymentIntentId) -> Self {
        Self::new(RefundTarget::PaymentIntent(id))
    }

    /// Refunds a charge (in full unless `amount` is set).
    pub fn charge(id: ChargeId) -> Self {
        Self::new(RefundTarget::Charge(id))
    }

    fn new(target: RefundTarget) -> Self {
        Self {
            target,
            amount: None,
            reason: None,
            metadata: Metadata::new(),
            extra: Extra::default(),
        }
    }

    pub(crate) fn encode(&self, f: &mut Form) {
        match &self.target {
            RefundTarget::PaymentIntent(id) => f.push("payment_intent", id),
            RefundTarget::Charge(id) => f.push("charge", id),
        }
        f.opt("amount", self.amount);
        f.opt("reason", self.reason.map(RefundReason::as_str));
    }
}

/// Parameters of `POST /v1/customers` (all optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateCustomer {
    /// `email`.
    pub email: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `phone`.
    pub phone: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `payment_method`: attach this PaymentMethod.
    pub payment_method: Option<PaymentMethodId>,
    /// `metadata[k]`; the adapter adds `idem_key`.
    pub metadata: Metadata,
    /// Parameters this struct lacks, sent as they are (see `extra`).
    pub extra: Extra,
}

impl CreateCustomer {
    pub(crate) fn encode(&self, f: &mut Form) {
        f.opt("email", self.email.as_ref());
        f.opt("name", self.name.as_ref());
        f.opt("phone", self.phone.as_ref());
        f.opt("description", self.description.as_ref());
        f.opt("payment_method", self.payment_method.as_ref());
    }
}

/// Parameters of `POST /v1/charges` (legacy; prefer PaymentIntents).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateCharge {
    /// `amount`.
    pub amount: Amount,
    /// `currency`.
    pub currency: Currency,
    /// `customer`.
    pub customer: Option<CustomerId>,
    /// `source`: a card, bank account or token id (for example `tok_visa`).
    pub source: Option<String>,
    /// `capture`: `false` only authorizes.
    pub capture: Option<bool>,
    /// `description`.
    pub description: Option<String>,
    /// `receipt_email`.
    pub receipt_email: Option<String>,
    /// `statement_descriptor_suffix`.
    pub statement_descriptor_suffix: Option<String>,
    /// `metadata[k]`; the adapter adds `idem_key`.
    pub metadata: Metadata,
    /// Parameters this struct lacks, sent as they are (see `extra`).
    pub extra: Extra,
}

impl CreateCharge {
    /// A charge of `amount` in `currency`, everything else unset.
    pub fn new(amount: Amount, currency: Currency) -> Self {
        Self {
            amount,
            currency,
            customer: None,
            source: None,
            capture: None,
            description: None,
            receipt_email: None,
            statement_descriptor_suffix: None,
            metadata: Metadata::new(),
            extra: Extra::default(),
        }
    }

    pub(crate) fn encode(&self, f: &mut Form) {
        f.push("amount", self.amount);
        f.push("currency", &self.currency);
        f.opt("customer", self.customer.as_ref());
        f.opt("source", self.source.as_ref());
        f.opt("capture", self.capture);
        f.opt("description", self.description.as_ref());
        f.opt("receipt_email", self.receipt_email.as_ref());
        f.opt(
            "statement_descriptor_suffix",
            self.statement_descriptor_suffix.as_ref(),
        );
    }
}

/// `extra(name, value)` on every params struct: a parameter the struct
/// lacks, sent as it is. It is part of the request (so of the fingerprint);
/// a name the adapter already sends (`amount`, `metadata[idem_key]`, ...) is
/// refused with `InvalidRequest`, never overridden.
macro_rules! with_extra {
    ($($t:ty),*) => {$(
        impl $t {
            /// Adds a parameter this struct lacks (Stripe's form name, for
            /// example `shipping[address][line1]`), sent as it is.
            #[must_use]
            pub fn extra(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
                self.extra.push(name, value);
                self
            }
        }
    )*};
}
with_extra!(
    CreatePaymentIntent,
    ConfirmPaymentIntent,
    CapturePaymentIntent,
    CreateRefund,
    CreateCustomer,
    CreateCharge
);
