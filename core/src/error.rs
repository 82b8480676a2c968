//! The crate's errors in one place, as re-exports.
//!
//! Each error lives with the module that raises it, and the dependencies run one way,
//! key ← ledger ← executor:
//!
//! | error | defined in | knows about |
//! | --- | --- | --- |
//! | [`KeyError`], [`KeyPart`] | [`crate::key`] (`key/error.rs`) | the key's own rules only |
//! | [`StoreError`] | [`crate::ledger`] (`ledger/error.rs`) | keys and [`OperationState`](crate::ledger::OperationState) |
//! | [`ExecError`], [`UnrecordedAnswer`], [`ReadError`] | [`crate::executor`] (`executor/error.rs`) | keys, [`StoreError`], [`TransportError`](crate::executor::TransportError) |
//!
//! The key imports nothing from the ledger or the executor, the ledger nothing from the
//! executor. This module only re-exports, so `idem::error::StoreError` and the others keep
//! their paths; the defining modules never import from here.

pub use crate::executor::{ExecError, ReadError, UnrecordedAnswer};
pub use crate::key::{KeyError, KeyPart};
pub use crate::ledger::StoreError;
