//! Shared pieces of idem's runnable examples.

pub mod inbound;
