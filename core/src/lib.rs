#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapter;
pub mod clock;
pub mod error;
pub mod executor;
pub mod fingerprint;
pub mod inbound;
pub mod key;
pub mod ledger;
pub mod metrics;
pub mod reconcile;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod time;
pub mod webhook;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ExecError, KeyError, KeyPart, ReadError, StoreError, UnrecordedAnswer};
pub use executor::{Delivered, Executor, OutboundRequest, Provider, ReadResponse, SafetyClass};
pub use fingerprint::Fingerprint;
pub use inbound::{EndpointConfig, IdempotencyLayer, with_idempotency};
pub use key::IdempotencyKey;
pub use ledger::{LedgerStore, Operation, OperationState};
