//! Inbound wrapper latency (filled in below).
fn main() {}
