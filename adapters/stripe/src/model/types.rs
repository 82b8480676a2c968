//! Small value types: object ids, amounts, currencies, metadata.
//!
//! Ids are newtypes per object kind, so a `CustomerId` cannot be passed where
//! a `PaymentIntentId` is expected; [`Amount`] and [`Currency`] are distinct
//! types, so an amount cannot be passed as a currency or the other way round.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// The metadata key under which every object created through idem carries
/// its idempotency key (for example `metadata[idem_key]=joes-bikes_orders_42_v1`).
/// Reconciliation searches for it. Callers may not set it themselves.
pub const IDEM_KEY_METADATA: &str = "idem_key";

/// Object metadata: up to 50 string keys (at most 40 characters each) with
/// string values (at most 500 characters), as Stripe documents it. Sorted,
/// so the encoded request is the same on every run.
pub type Metadata = BTreeMap<String, String>;

macro_rules! stripe_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        idem::provider_id!($(#[$doc])* $name);

        impl $name {
            /// The id's expected prefix.
            pub const PREFIX: &'static str = $prefix;
        }

        impl FromStr for $name {
            type Err = ParseError;

            /// Parses an id: it must start with the kind's prefix and hold
            /// only ASCII letters, digits and `_`.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let body_ok = s.len() > $prefix.len()
                    && s.len() <= 255
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !s.starts_with($prefix) || !body_ok {
                    return Err(ParseError::Id {
                        kind: stringify!($name),
                        expected_prefix: $prefix,
                    });
                }
                Ok(Self(s.to_owned()))
            }
        }
    };
}

stripe_id!(
    /// A PaymentIntent id (`pi_...`).
    PaymentIntentId,
    "pi_"
);
stripe_id!(
    /// A Customer id (`cus_...`).
    CustomerId,
    "cus_"
);
stripe_id!(
    /// A Charge id (`ch_...`; legacy charges made from a source may also
    /// start `py_`, parse those with [`ChargeId::from_any`]).
    ChargeId,
    "ch_"
);
stripe_id!(
    /// A Refund id (`re_...`).
    RefundId,
    "re_"
);
stripe_id!(
    /// A PaymentMethod id (`pm_...`).
    PaymentMethodId,
    "pm_"
);

impl ChargeId {
    /// Accepts any non-empty charge id made of ASCII letters, digits and `_`
    /// (Stripe also issues `py_` charge ids).
    ///
    /// # Errors
    ///
    /// [`ParseError::Id`] when the text is empty or holds other characters.
    pub fn from_any(s: &str) -> Result<Self, ParseError> {
        if s.is_empty()
            || s.len() > 255
            || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ParseError::Id {
                kind: "ChargeId",
                expected_prefix: "ch_",
            });
        }
        Ok(Self(s.to_owned()))
    }
}

/// An amount in the currency's smallest unit (cents for `usd`, yen for
/// `jpy`), as Stripe expects it.
///
/// ```
/// use idem_stripe::Amount;
/// let price = Amount::minor(1099); // $10.99 in usd
/// assert_eq!(price.get(), 1099);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(u64);

impl Amount {
    /// An amount of `units` of the smallest currency unit.
    pub const fn minor(units: u64) -> Self {
        Self(units)
    }

    /// The amount in the smallest currency unit.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A three-letter ISO 4217 currency code, stored lowercase as Stripe returns
/// it.
///
/// ```
/// use idem_stripe::Currency;
/// let eur: Currency = "EUR".parse().unwrap();
/// assert_eq!(eur.as_str(), "eur");
/// assert!("euro".parse::<Currency>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// US dollar.
    pub fn usd() -> Self {
        Self("usd".to_owned())
    }

    /// Euro.
    pub fn eur() -> Self {
        Self("eur".to_owned())
    }

    /// Pound sterling.
    pub fn gbp() -> Self {
        Self("gbp".to_owned())
    }

    /// The lowercase code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Currency {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(ParseError::Currency)
        }
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_check_their_prefix() {
        assert!("pi_123".parse::<PaymentIntentId>().is_ok());
        assert!("cus_123".parse::<PaymentIntentId>().is_err());
        assert!("pi_".parse::<PaymentIntentId>().is_err());
        assert!("pi_12/../x".parse::<PaymentIntentId>().is_err());
        assert!("py_123".parse::<ChargeId>().is_err());
        assert!(ChargeId::from_any("py_123").is_ok());
    }

    #[test]
    fn currency_is_three_letters_lowercased() {
        assert_eq!("USD".parse::<Currency>().unwrap(), Currency::usd());
        assert!("us".parse::<Currency>().is_err());
        assert!("u$d".parse::<Currency>().is_err());
    }
}
