//! Typed Stripe objects as returned by the endpoints this crate writes to.
//! Only the commonly used fields are typed; unknown fields are ignored.

use serde::Deserialize;

use crate::types::{
    Amount, ChargeId, Currency, CustomerId, Metadata, PaymentIntentId, PaymentMethodId, RefundId,
};

/// `status` of a PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PaymentIntentStatus {
    /// `requires_payment_method`.
    RequiresPaymentMethod,
    /// `requires_confirmation`.
    RequiresConfirmation,
    /// `requires_action`.
    RequiresAction,
    /// `processing`.
    Processing,
    /// `requires_capture`.
    RequiresCapture,
    /// `canceled`.
    Canceled,
    /// `succeeded`.
    Succeeded,
    /// A status this crate does not know yet.
    #[serde(other)]
    Other,
}

/// A PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PaymentIntent {
    /// `id`.
    pub id: PaymentIntentId,
    /// `amount`.
    pub amount: Amount,
    /// `amount_received`.
    pub amount_received: Option<Amount>,
    /// `amount_capturable`.
    pub amount_capturable: Option<Amount>,
    /// `currency`.
    pub currency: Currency,
    /// `status`.
    pub status: PaymentIntentStatus,
    /// `customer` (not expanded).
    pub customer: Option<CustomerId>,
    /// `payment_method` (not expanded).
    pub payment_method: Option<PaymentMethodId>,
    /// `latest_charge` (not expanded).
    pub latest_charge: Option<ChargeId>,
    /// `capture_method`.
    pub capture_method: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `metadata` (holds `idem_key`).
    #[serde(default)]
    pub metadata: Metadata,
    /// `created` (Unix seconds).
    #[serde(default)]
    pub created: i64,
    /// `livemode`.
    #[serde(default)]
    pub livemode: bool,
}

/// A Refund.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Refund {
    /// `id`.
    pub id: RefundId,
    /// `amount`.
    pub amount: Amount,
    /// `currency`.
    pub currency: Currency,
    /// `status` (`pending`, `requires_action`, `succeeded`, `failed`,
    /// `canceled`).
    pub status: Option<String>,
    /// `payment_intent`.
    pub payment_intent: Option<PaymentIntentId>,
    /// `charge` (any charge id form).
    pub charge: Option<ChargeId>,
    /// `reason`.
    pub reason: Option<String>,
    /// `metadata` (holds `idem_key`).
    #[serde(default)]
    pub metadata: Metadata,
    /// `created` (Unix seconds).
    #[serde(default)]
    pub created: i64,
}

/// A Customer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Customer {
    /// `id`.
    pub id: CustomerId,
    /// `email`.
    pub email: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `phone`.
    pub phone: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `metadata` (holds `idem_key`).
    #[serde(default)]
    pub metadata: Metadata,
    /// `created` (Unix seconds).
    #[serde(default)]
    pub created: i64,
}

/// A Charge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Charge {
    /// `id`.
    pub id: ChargeId,
    /// `amount`.
    pub amount: Amount,
    /// `amount_captured`.
    pub amount_captured: Option<Amount>,
    /// `amount_refunded`.
    pub amount_refunded: Option<Amount>,
    /// `currency`.
    pub currency: Currency,
    /// `status` (`succeeded`, `pending`, `failed`).
    pub status: Option<String>,
    /// `paid`.
    #[serde(default)]
    pub paid: bool,
    /// `captured`.
    #[serde(default)]
    pub captured: bool,
    /// `customer` (not expanded).
    pub customer: Option<CustomerId>,
    /// `payment_intent`.
    pub payment_intent: Option<PaymentIntentId>,
    /// `metadata` (holds `idem_key`).
    #[serde(default)]
    pub metadata: Metadata,
    /// `created` (Unix seconds).
    #[serde(default)]
    pub created: i64,
}

/// Any object this crate writes, as found by reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StripeObject {
    /// A PaymentIntent (create, confirm, capture).
    PaymentIntent(PaymentIntent),
    /// A Refund.
    Refund(Refund),
    /// A Customer.
    Customer(Customer),
    /// A Charge.
    Charge(Charge),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_realistic_payment_intent() {
        // Shape of the PaymentIntent in stripe/openapi fixtures3.json.
        let body = r#"{"amount": 1099, "amount_capturable": 0, "amount_received": 0,
            "capture_method": "automatic", "created": 1234567890, "currency": "usd",
            "customer": null, "description": null, "id": "pi_1PgafyB7WZ01zgkWSjxsAJo3",
            "latest_charge": null, "livemode": false, "metadata": {}, "object": "payment_intent",
            "payment_method": null, "payment_method_types": ["card"],
            "status": "requires_payment_method", "transfer_data": {"destination": {"id": "obj_123"}}}"#;
        let pi: PaymentIntent = serde_json::from_str(body).unwrap();
        assert_eq!(pi.id.as_str(), "pi_1PgafyB7WZ01zgkWSjxsAJo3");
        assert_eq!(pi.amount, Amount::minor(1099));
        assert_eq!(pi.status, PaymentIntentStatus::RequiresPaymentMethod);
        let other: PaymentIntent =
            serde_json::from_str(&body.replace("requires_payment_method", "brand_new")).unwrap();
        assert_eq!(other.status, PaymentIntentStatus::Other);
    }
}
