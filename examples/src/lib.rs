//! Shared pieces of idem's runnable examples.
