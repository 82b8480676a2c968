//! Why a key does not parse: [`KeyError`] and the [`KeyPart`] it names.
//!
//! The key knows nothing of storage or HTTP; this file imports only from `key`.

use std::fmt;

use super::MAX_KEY_LEN;

/// A part of an idempotency key, named in [`KeyError`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyPart {
    /// The shop slug.
    Shop,
    /// The table name.
    Table,
    /// The row id.
    Row,
    /// The attempt number after `_v`.
    Attempt,
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shop => "shop",
            Self::Table => "table",
            Self::Row => "row",
            Self::Attempt => "attempt number",
        })
    }
}

/// Why a text or a set of parts is not a valid [`IdempotencyKey`](super::IdempotencyKey).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The whole key is empty.
    #[error("idempotency key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("idempotency key is {len} bytes long; the limit is {MAX_KEY_LEN}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// A `_` separating shop, table and row is missing.
    #[error("idempotency key must look like <shop>_<table>_<row>_v<n>; a `_` separator is missing")]
    MissingSeparator,
    /// No `_v<n>` suffix.
    #[error("idempotency key must end in `_v<n>` with an attempt number")]
    MissingAttempt,
    /// The attempt number is 0.
    #[error("idempotency key attempt number must be 1 or more, not 0")]
    ZeroAttempt,
    /// The attempt number has a leading zero.
    #[error("idempotency key attempt number must not have leading zeros")]
    LeadingZero,
    /// The attempt number does not fit in a `u32`, or cannot be incremented.
    #[error("idempotency key attempt number is too large")]
    AttemptOverflow,
    /// A part is empty.
    #[error("idempotency key {part} is empty")]
    Empty {
        /// The empty part.
        part: KeyPart,
    },
    /// A part starts with a character it may not start with.
    #[error("idempotency key {part} may not start with {ch:?}")]
    BadStart {
        /// The part.
        part: KeyPart,
        /// The offending first character.
        ch: char,
    },
    /// A part holds a character it may not hold.
    #[error("idempotency key {part} may not contain {ch:?} (at byte {index} of the {part})")]
    InvalidChar {
        /// The part.
        part: KeyPart,
        /// The offending character.
        ch: char,
        /// Its byte offset within the part.
        index: usize,
    },
}
