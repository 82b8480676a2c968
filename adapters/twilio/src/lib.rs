//! Twilio message sends through idem: one text per key, whatever fails.
//!
//! ```no_run
//! use idem::{Executor, IdempotencyKey};
//! use idem::ledger::SqliteStore;
//! use idem_twilio::{CreateMessage, Credentials, TwilioClient};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = Executor::builder(SqliteStore::open("worker.db").await?).build();
//! let twilio = TwilioClient::builder(
//!     executor,
//!     Credentials::auth_token("ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "auth-token"),
//! )
//! .status_callback("https://hooks.example.com/twilio/status".parse()?)
//! .build()?;
//!
//! let key: IdempotencyKey = "joes-bikes_service_ticket_messages_01HZX3_v1".parse()?;
//! let msg = CreateMessage::from_number("+15558675310", "+15017122661", "Your bike is ready");
//! // Run this as often as the job is retried: the customer gets one text.
//! match twilio.messages().create(&key, &msg).await {
//!     Ok(sent) => println!("{} is {:?}", sent.message.sid, sent.message.status),
//!     Err(e) if e.is_retryable() => println!("later, same key: {e}"),
//!     Err(e) => println!("needs an operator: {e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Safety class: local only
//!
//! Twilio has no idempotency key for sends, so idem's ledger is the only
//! thing between a retry and a second text. The row is written before the
//! request leaves; a row that `succeeded` is answered from the ledger.
//! Automatic resends happen only when the request provably queued nothing:
//! a connect failure (refused, DNS, TLS before sending) or a 429 (Twilio error
//! 20429, documented as "not processed and safe to retry"), after
//! `Retry-After`. A timeout, a reset or a 5xx after sending leaves the row
//! `unknown` and is never resent automatically; the error names the key and
//! says what to do: reconcile, or bump the key (an operator retry that sends
//! exactly one more message, under `…_v<n+1>`).
//!
//! # Reconciliation
//!
//! The key travels in the `StatusCallback` URL (`?idemkey=…`). Twilio's
//! status callbacks then settle an `unknown` row with
//! [`reconcile_from_callback`] (proof: the callback names our key and the
//! message SID). Without a callback,
//! [`Messages::reconcile`] looks the message up by recipient, sender, body
//! and time; it can settle a row only when exactly one message matches, and
//! finding none proves nothing. [`TwilioClient`] implements
//! [`idem::reconcile::Reconcile`] (provider `twilio`): the same lookup from
//! the key alone, with the message each send records on its ledger row; it
//! never answers `NotApplied`. The [`reconcile`] module says exactly how far
//! each can go.
//!
//! # Testing
//!
//! `idem_testkit::FakeTwilio` (crate `idem-testkit`, as a dev-dependency) is a
//! simulated Messages API that counts the messages it really queued and
//! fails on demand.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod classifier;
mod client;
pub mod error;
mod model;
pub mod reconcile;
pub mod signature;

pub use classifier::TwilioClassifier;
#[allow(deprecated)]
pub use client::{
    CALLBACK_KEY_PARAM, Credentials, DEFAULT_BASE_URL, Messages, OPERATION, PROVIDER,
    PROVIDER_NAME, Sent, Twilio, TwilioClient, TwilioClientBuilder,
};
pub use error::{AdapterError, Error, TwilioError};
pub use model::{
    CreateMessage, MAX_BODY_CHARS, MAX_MEDIA, Message, MessageSid, MessageStatus, Sender,
};
pub use reconcile::{CallbackOutcome, Reconciled, reconcile_from_callback};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
