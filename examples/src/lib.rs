//! Shared pieces of idem's runnable examples.

pub mod demo;
pub mod inbound;
pub mod operator;
