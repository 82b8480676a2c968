//! Errors of the inbound wrapper.

use std::time::Duration;

/// Why an `Idempotency-Key` header was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyHeaderError {
    /// The key is empty.
    #[error("the Idempotency-Key header is empty")]
    Empty,
    /// The key is longer than 255 bytes.
    #[error("the Idempotency-Key is {len} bytes long; the limit is 255")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte that is not visible ASCII (`!` to `~`).
    #[error(
        "the Idempotency-Key holds byte 0x{byte:02x} at {index}; only visible ASCII is allowed"
    )]
    InvalidChar {
        /// Byte offset in the key.
        index: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A quoted key without its closing quote.
    #[error("the quoted Idempotency-Key has no closing quote")]
    Unterminated,
    /// A backslash not followed by `"` or `\` in a quoted key.
    #[error("the quoted Idempotency-Key has an invalid escape at {index}")]
    BadEscape {
        /// Byte offset after the opening quote.
        index: usize,
    },
    /// Something follows the closing quote.
    #[error("the quoted Idempotency-Key is followed by other data")]
    TrailingData,
    /// The header appears more than once.
    #[error("the Idempotency-Key header appears more than once")]
    Repeated,
}

/// An [`EndpointConfig`](super::EndpointConfig) or
/// [`Sweeper`](super::Sweeper) setting out of range, reported when the
/// configuration is built rather than on the first request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The endpoint name is empty or longer than 200 bytes.
    #[error("endpoint name must be 1 to 200 bytes, got {len}")]
    EndpointName {
        /// Its length.
        len: usize,
    },
    /// The replay window is outside 5 minutes to 72 hours.
    #[error("replay window (TTL) must be between 5 minutes and 72 hours, got {ttl:?}")]
    TtlOutOfRange {
        /// The requested window.
        ttl: Duration,
    },
    /// The in-flight lease is outside 1 second to 1 hour.
    #[error("in-flight lease must be between 1 second and 1 hour, got {lease:?}")]
    LeaseOutOfRange {
        /// The requested lease.
        lease: Duration,
    },
    /// The heartbeat is zero or longer than half the lease.
    #[error(
        "heartbeat must be more than zero and at most half the lease ({lease:?}), got {heartbeat:?}"
    )]
    HeartbeatOutOfRange {
        /// The requested heartbeat.
        heartbeat: Duration,
        /// The lease.
        lease: Duration,
    },
    /// The in-flight wait bound is over 60 seconds.
    #[error("in-flight wait bound must be at most 60 seconds, got {wait:?}")]
    WaitTooLong {
        /// The requested bound.
        wait: Duration,
    },
    /// A body cap of zero bytes.
    #[error("body size caps must be at least 1 byte")]
    ZeroBodyCap,
    /// A sweeper setting is out of range.
    #[error("sweeper {setting} is out of range: {reason}")]
    Sweeper {
        /// Which setting.
        setting: &'static str,
        /// Why.
        reason: &'static str,
    },
}
