//! Shared pieces of idem's runnable examples.

pub mod demo;
pub mod inbound;

/// The root README's Rust snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// One worker match for every adapter: `idem_stripe::Error`,
/// `idem_twilio::Error`, `idem_gbp::Error` and `idem_meta::Error` are all
/// [`idem::adapter::CallError`], so `InFlight` and `OutcomeUnknown` are
/// handled by the same code.
///
/// ```
/// use idem::adapter::{AdapterFailure, CallError, WireError};
/// use idem::{ExecError, IdempotencyKey};
/// use std::time::SystemTime;
///
/// fn next_step<E: WireError, A: AdapterFailure<E>>(err: &CallError<E, A>) -> &'static str {
///     match err {
///         CallError::InFlight { .. } => "in flight elsewhere: try later",
///         CallError::OutcomeUnknown { resend_safe_until: Some(_), .. } => "resend, same key",
///         CallError::OutcomeUnknown { .. } => "reconcile, or bump the key",
///         e if e.is_retryable() => "try later, same key",
///         _ => "an operator looks",
///     }
/// }
///
/// let key: IdempotencyKey = "joes-bikes_orders_42_v1".parse().unwrap();
/// let in_flight = || ExecError::InFlight { key: key.clone(), lease_expires_at: SystemTime::now() };
/// let unknown = || ExecError::OutcomeUnknown { key: key.clone(), reason: "timed out".into() };
///
/// let s: idem_stripe::Error = in_flight().into();
/// let t: idem_twilio::Error = in_flight().into();
/// let g: idem_gbp::Error = in_flight().into();
/// let m: idem_meta::Error = in_flight().into();
/// for step in [next_step(&s), next_step(&t), next_step(&g), next_step(&m)] {
///     assert_eq!(step, "in flight elsewhere: try later");
/// }
/// let s: idem_stripe::Error = unknown().into();
/// let t: idem_twilio::Error = unknown().into();
/// let g: idem_gbp::Error = unknown().into();
/// let m: idem_meta::Error = unknown().into();
/// for step in [next_step(&s), next_step(&t), next_step(&g), next_step(&m)] {
///     assert_eq!(step, "reconcile, or bump the key");
/// }
/// assert_eq!(s.key(), Some(&key));
/// assert!(!m.is_retryable() && m.is_unknown());
/// ```
pub mod one_match {}
