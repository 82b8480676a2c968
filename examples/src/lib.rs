//! Shared pieces of idem's runnable examples.

pub mod demo;
pub mod inbound;

/// The root README's Rust snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
