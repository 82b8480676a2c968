//! The idempotency key: `<shop>_<table>_<row>_v<n>`.
//!
//! A key names one attempt at one external write. It is made when the write is
//! first attempted, stored on the local record before any request leaves the
//! process, and reused by every retry. Only an operator's explicit retry moves
//! it to the next attempt with [`IdempotencyKey::next_attempt`].
//!
//! | part | rule |
//! | --- | --- |
//! | shop | lowercase ASCII letters, digits and `-`; starts with a letter or digit |
//! | table | lowercase ASCII letters, digits and `_`; starts with a letter |
//! | row | ASCII letters, digits and `-` |
//! | n | decimal attempt number, at least 1, no leading zeros |
//! | whole key | at most [`MAX_KEY_LEN`] bytes |
//!
//! ```
//! use idem::IdempotencyKey;
//!
//! let key: IdempotencyKey = "joes-bikes_service_ticket_messages_01HZX3_v2".parse()?;
//! assert_eq!(key.shop(), "joes-bikes");
//! assert_eq!(key.table(), "service_ticket_messages");
//! assert_eq!(key.row(), "01HZX3");
//! assert_eq!(key.attempt(), 2);
//! assert_eq!(key.next_attempt()?.to_string(), "joes-bikes_service_ticket_messages_01HZX3_v3");
//! # Ok::<(), idem::KeyError>(())
//! ```

use std::fmt;
use std::str::FromStr;

mod error;

pub use error::{KeyError, KeyPart};

/// The longest key accepted, in bytes. Stripe refuses longer keys.
pub const MAX_KEY_LEN: usize = 255;

/// Which call of a tool, in [`IdempotencyKey::for_tool_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolCall<'a> {
    /// The model provider's id for the call (OpenAI `call_…`, Anthropic
    /// `toolu_…`): the best choice, stable across retries of the turn.
    Id(&'a str),
    /// The call's position among the turn's tool calls, from 0, when the
    /// provider gives no id.
    Index(u32),
}

/// A validated idempotency key of the form `<shop>_<table>_<row>_v<n>`.
///
/// Construct one from parts with [`IdempotencyKey::new`], parse one with
/// [`str::parse`], or derive one for an AI tool call with
/// [`IdempotencyKey::for_tool_call`]. Formatting with `Display` gives back
/// exactly the parsed text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey {
    text: String,
    // Byte offsets into `text`: end of shop, end of table, end of row.
    shop_end: usize,
    table_end: usize,
    row_end: usize,
    attempt: u32,
}

impl IdempotencyKey {
    /// Builds a key from its parts.
    ///
    /// # Errors
    ///
    /// Returns a [`KeyError`] naming the part that breaks the grammar, or
    /// [`KeyError::TooLong`] when the whole key would exceed [`MAX_KEY_LEN`].
    ///
    /// ```
    /// use idem::IdempotencyKey;
    /// let key = IdempotencyKey::new("joes-bikes", "transactions", "42", 1)?;
    /// assert_eq!(key.as_str(), "joes-bikes_transactions_42_v1");
    /// assert!(IdempotencyKey::new("Joes", "transactions", "42", 1).is_err());
    /// # Ok::<(), idem::KeyError>(())
    /// ```
    pub fn new(shop: &str, table: &str, row: &str, attempt: u32) -> Result<Self, KeyError> {
        validate_shop(shop)?;
        validate_table(table)?;
        validate_row(row)?;
        if attempt == 0 {
            return Err(KeyError::ZeroAttempt);
        }
        let text = format!("{shop}_{table}_{row}_v{attempt}");
        if text.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: text.len() });
        }
        let shop_end = shop.len();
        let table_end = shop_end + 1 + table.len();
        let row_end = table_end + 1 + row.len();
        Ok(Self {
            text,
            shop_end,
            table_end,
            row_end,
            attempt,
        })
    }

    /// Derives the first-attempt key for one AI tool call.
    ///
    /// One call is identified by the conversation, the turn, the tool's name
    /// and the call itself ([`ToolCall`]: the model provider's tool-call id,
    /// such as OpenAI's `call_…` or Anthropic's `toolu_…`, or the call's index
    /// in the turn). Two calls of the same tool in one turn therefore get two
    /// keys, and the same call retried gets the same key.
    ///
    /// The derivation is injective: the row part is `t<turn>-` followed by
    /// 32 hex digits of SHA-256 over all four inputs, each length-framed, so
    /// distinct inputs give distinct keys (up to a SHA-256 collision) and ids
    /// with characters the grammar cannot carry (`conv_…`, `msg_…`, `/`,
    /// anything non-ASCII) or of any length are accepted. The table part,
    /// `tool_<name>`, is there for people reading the ledger: the tool name
    /// lowercased, every other character mapped to `_`, cut to 64 bytes. It
    /// carries no identity of its own.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] when the shop is not a valid shop slug (the tenant is
    /// never guessed), or the conversation id, tool name or provider call id
    /// is empty.
    ///
    /// ```
    /// use idem::IdempotencyKey;
    /// use idem::key::ToolCall;
    /// let a = IdempotencyKey::for_tool_call("joes-bikes", "conv_01HZX3", 4, "Send-SMS", ToolCall::Id("call_a1"))?;
    /// let b = IdempotencyKey::for_tool_call("joes-bikes", "conv_01HZX3", 4, "Send-SMS", ToolCall::Id("call_b2"))?;
    /// assert_ne!(a, b, "two calls of one tool in one turn");
    /// assert_eq!(a.table(), "tool_send_sms");
    /// assert!(a.row().starts_with("t4-"));
    /// let again = IdempotencyKey::for_tool_call("joes-bikes", "conv_01HZX3", 4, "Send-SMS", ToolCall::Id("call_a1"))?;
    /// assert_eq!(a, again, "a retried call keeps its key");
    /// # Ok::<(), idem::KeyError>(())
    /// ```
    pub fn for_tool_call(
        shop: &str,
        conversation_id: &str,
        turn: u32,
        tool_name: &str,
        call: ToolCall<'_>,
    ) -> Result<Self, KeyError> {
        use sha2::{Digest, Sha256};
        validate_shop(shop)?;
        if conversation_id.is_empty() || tool_name.is_empty() {
            return Err(KeyError::Empty { part: KeyPart::Row });
        }
        let mut hasher = Sha256::new();
        let mut frame = |label: &[u8], value: &[u8]| {
            for part in [label, value] {
                hasher.update((part.len() as u64).to_be_bytes());
                hasher.update(part);
            }
        };
        frame(b"conversation", conversation_id.as_bytes());
        frame(b"turn", &turn.to_be_bytes());
        frame(b"tool", tool_name.as_bytes());
        match call {
            ToolCall::Id("") => {
                return Err(KeyError::Empty { part: KeyPart::Row });
            }
            ToolCall::Id(id) => frame(b"call-id", id.as_bytes()),
            ToolCall::Index(i) => frame(b"call-index", &i.to_be_bytes()),
        }
        let digest = hasher.finalize();
        let row = format!("t{turn}-{}", hex::encode(&digest[..16]));
        let mut table = String::from("tool_");
        for c in tool_name.chars() {
            if table.len() >= 64 {
                break;
            }
            table.push(match c {
                'A'..='Z' => c.to_ascii_lowercase(),
                'a'..='z' | '0'..='9' => c,
                _ => '_',
            });
        }
        Self::new(shop, &table, &row, 1)
    }

    /// The whole key as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The shop slug.
    pub fn shop(&self) -> &str {
        &self.text[..self.shop_end]
    }

    /// The table name of the local record.
    pub fn table(&self) -> &str {
        &self.text[self.shop_end + 1..self.table_end]
    }

    /// The row id of the local record.
    pub fn row(&self) -> &str {
        &self.text[self.table_end + 1..self.row_end]
    }

    /// The attempt number `n` (1 or more).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The key of the next attempt (`v<n>` → `v<n+1>`), for an operator's
    /// explicit retry. The receiver is unchanged.
    ///
    /// # Errors
    ///
    /// [`KeyError::AttemptOverflow`] at `u32::MAX`, or [`KeyError::TooLong`]
    /// when the longer number would push the key past [`MAX_KEY_LEN`].
    pub fn next_attempt(&self) -> Result<Self, KeyError> {
        let next = self
            .attempt
            .checked_add(1)
            .ok_or(KeyError::AttemptOverflow)?;
        Self::new(self.shop(), self.table(), self.row(), next)
    }

    /// Whether `other` names the same operation (same shop, table and row),
    /// whatever the attempt.
    pub fn same_operation(&self, other: &Self) -> bool {
        self.text[..self.row_end] == other.text[..other.row_end]
    }
}

fn validate_shop(shop: &str) -> Result<(), KeyError> {
    let part = KeyPart::Shop;
    let first = shop.chars().next().ok_or(KeyError::Empty { part })?;
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(KeyError::BadStart { part, ch: first });
    }
    check_chars(shop, part, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })
}

fn validate_table(table: &str) -> Result<(), KeyError> {
    let part = KeyPart::Table;
    let first = table.chars().next().ok_or(KeyError::Empty { part })?;
    if !first.is_ascii_lowercase() {
        return Err(KeyError::BadStart { part, ch: first });
    }
    check_chars(table, part, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
    })
}

fn validate_row(row: &str) -> Result<(), KeyError> {
    let part = KeyPart::Row;
    if row.is_empty() {
        return Err(KeyError::Empty { part });
    }
    check_chars(row, part, |c| c.is_ascii_alphanumeric() || c == '-')
}

fn check_chars(text: &str, part: KeyPart, ok: impl Fn(char) -> bool) -> Result<(), KeyError> {
    match text.char_indices().find(|&(_, c)| !ok(c)) {
        Some((index, ch)) => Err(KeyError::InvalidChar { part, ch, index }),
        None => Ok(()),
    }
}

fn parse_attempt(digits: &str) -> Result<u32, KeyError> {
    if digits.is_empty() {
        return Err(KeyError::MissingAttempt);
    }
    if let Some((index, ch)) = digits.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        return Err(KeyError::InvalidChar {
            part: KeyPart::Attempt,
            ch,
            index,
        });
    }
    if digits.starts_with('0') {
        return Err(if digits.len() == 1 {
            KeyError::ZeroAttempt
        } else {
            KeyError::LeadingZero
        });
    }
    digits.parse().map_err(|_| KeyError::AttemptOverflow)
}

impl FromStr for IdempotencyKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(KeyError::EmptyKey);
        }
        if s.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: s.len() });
        }
        let (shop, rest) = s.split_once('_').ok_or(KeyError::MissingSeparator)?;
        let (body, digits) = rest.rsplit_once("_v").ok_or(KeyError::MissingAttempt)?;
        let attempt = parse_attempt(digits)?;
        let (table, row) = body.rsplit_once('_').ok_or(KeyError::MissingSeparator)?;
        Self::new(shop, table, row, attempt)
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = KeyError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.text
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey").field(&self.text).finish()
    }
}

impl serde::Serialize for IdempotencyKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// sqlx support: the key is stored as text and validated when decoded.
macro_rules! sqlx_text_type {
    ($db:ty, $feature:literal) => {
        #[cfg(feature = $feature)]
        impl sqlx::Type<$db> for IdempotencyKey {
            fn type_info() -> <$db as sqlx::Database>::TypeInfo {
                <String as sqlx::Type<$db>>::type_info()
            }
            fn compatible(ty: &<$db as sqlx::Database>::TypeInfo) -> bool {
                <String as sqlx::Type<$db>>::compatible(ty)
            }
        }

        #[cfg(feature = $feature)]
        impl<'q> sqlx::Encode<'q, $db> for IdempotencyKey {
            fn encode_by_ref(
                &self,
                buf: &mut <$db as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, $db>>::encode(self.text.clone(), buf)
            }
        }

        #[cfg(feature = $feature)]
        impl<'r> sqlx::Decode<'r, $db> for IdempotencyKey {
            fn decode(
                value: <$db as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, $db>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    };
}

sqlx_text_type!(sqlx::Sqlite, "sqlite");
sqlx_text_type!(sqlx::Postgres, "postgres");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_design_example() {
        let key: IdempotencyKey = "joes-bikes_service_ticket_messages_01HZX3_v2"
            .parse()
            .unwrap();
        assert_eq!(key.shop(), "joes-bikes");
        assert_eq!(key.table(), "service_ticket_messages");
        assert_eq!(key.row(), "01HZX3");
        assert_eq!(key.attempt(), 2);
    }

    #[test]
    fn table_may_look_like_an_attempt() {
        let key: IdempotencyKey = "s_orders_v2_row_v7".parse().unwrap();
        assert_eq!(key.table(), "orders_v2");
        assert_eq!(key.row(), "row");
        assert_eq!(key.attempt(), 7);
        let key: IdempotencyKey = "s_t_v5_v1".parse().unwrap();
        assert_eq!(key.row(), "v5");
    }

    #[test]
    fn rejects_with_specific_errors() {
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::EmptyKey),
            ("shop", KeyError::MissingSeparator),
            ("shop_table_row", KeyError::MissingAttempt),
            ("shop_table_row_v", KeyError::MissingAttempt),
            ("shop_table_row_v0", KeyError::ZeroAttempt),
            ("shop_table_row_v01", KeyError::LeadingZero),
            ("shop_table_row_v99999999999", KeyError::AttemptOverflow),
            ("shop_row_v1", KeyError::MissingSeparator),
            (
                "Shop_table_row_v1",
                KeyError::BadStart {
                    part: KeyPart::Shop,
                    ch: 'S',
                },
            ),
            (
                "shop_9table_row_v1",
                KeyError::BadStart {
                    part: KeyPart::Table,
                    ch: '9',
                },
            ),
            (
                "shop_table_r.w_v1",
                KeyError::InvalidChar {
                    part: KeyPart::Row,
                    ch: '.',
                    index: 1,
                },
            ),
            (
                "shop_table_row_v1x",
                KeyError::InvalidChar {
                    part: KeyPart::Attempt,
                    ch: 'x',
                    index: 1,
                },
            ),
            (
                "_table_row_v1",
                KeyError::Empty {
                    part: KeyPart::Shop,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &input.parse::<IdempotencyKey>().unwrap_err(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn length_limit_is_exact() {
        let row = "r".repeat(MAX_KEY_LEN - "s_t__v1".len());
        let key = IdempotencyKey::new("s", "t", &row, 1).unwrap();
        assert_eq!(key.as_str().len(), MAX_KEY_LEN);
        assert_eq!(key.as_str().parse::<IdempotencyKey>().unwrap(), key);
        // v1 -> v2 keeps the length; v9 -> v10 adds a byte and must be refused.
        let row = "r".repeat(MAX_KEY_LEN - "s_t__v9".len());
        let key = IdempotencyKey::new("s", "t", &row, 9).unwrap();
        assert_eq!(
            key.next_attempt().unwrap_err(),
            KeyError::TooLong { len: 256 }
        );
        let long = format!("{}x", key.as_str());
        assert!(matches!(
            long.parse::<IdempotencyKey>(),
            Err(KeyError::TooLong { .. })
        ));
    }

    #[test]
    fn next_attempt_keeps_the_operation() {
        let key = IdempotencyKey::new("s", "t", "1", 1).unwrap();
        let next = key.next_attempt().unwrap();
        assert_eq!(next.as_str(), "s_t_1_v2");
        assert!(key.same_operation(&next));
        let max = IdempotencyKey::new("s", "t", "1", u32::MAX).unwrap();
        assert_eq!(max.next_attempt().unwrap_err(), KeyError::AttemptOverflow);
    }

    #[test]
    fn tool_call_keys() {
        let one = |conv: &str, turn, tool: &str, call| {
            IdempotencyKey::for_tool_call("shop", conv, turn, tool, call)
        };
        let a = one("conv_1", 0, "lookup.order", ToolCall::Id("call_1")).unwrap();
        assert_eq!(a.table(), "tool_lookup_order");
        assert!(a.row().starts_with("t0-") && a.row().len() == 3 + 32);
        let b = one("conv_1", 0, "lookup.order", ToolCall::Id("call_2")).unwrap();
        assert_ne!(a, b, "two calls of the same tool in one turn");
        let i0 = one("conv_1", 0, "lookup.order", ToolCall::Index(0)).unwrap();
        let i1 = one("conv_1", 0, "lookup.order", ToolCall::Index(1)).unwrap();
        assert_ne!(i0, i1);
        // Names the old normalisation merged stay apart.
        assert_ne!(
            one("c", 0, "send-sms", ToolCall::Index(0)).unwrap(),
            one("c", 0, "send_sms", ToolCall::Index(0)).unwrap()
        );
        // Long and non-ASCII ids are accepted, not cut.
        let long = "x".repeat(10_000);
        let k = one(&long, 7, "caf\u{e9}", ToolCall::Id(&long)).unwrap();
        assert!(k.as_str().len() <= MAX_KEY_LEN);
        // Refusals: an invalid shop, an empty id or name.
        assert!(IdempotencyKey::for_tool_call("Shop!", "c", 0, "x", ToolCall::Index(0)).is_err());
        assert!(one("", 0, "x", ToolCall::Index(0)).is_err());
        assert!(one("c", 0, "", ToolCall::Index(0)).is_err());
        assert!(one("c", 0, "x", ToolCall::Id("")).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let key: IdempotencyKey = "a_b_c_v1".parse().unwrap();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, "\"a_b_c_v1\"");
        assert_eq!(serde_json::from_str::<IdempotencyKey>(&json).unwrap(), key);
        assert!(serde_json::from_str::<IdempotencyKey>("\"bad\"").is_err());
    }
}
