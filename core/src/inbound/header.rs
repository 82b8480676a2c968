//! The `Idempotency-Key` request header and the `Prefer: wait=N` preference.
//!
//! The IETF draft (`draft-ietf-httpapi-idempotency-key-header`) sends the key
//! as a Structured Field string (RFC 8941): `Idempotency-Key: "8e03978e"`.
//! Many clients send a bare token instead: `Idempotency-Key: 8e03978e`. Both
//! are accepted. Either way the key itself must be 1 to 255 visible ASCII
//! characters (`!` to `~`); anything else is refused before a handler runs.
//!
//! ```
//! use http::HeaderValue;
//! use idem::inbound::ClientKey;
//!
//! let quoted = ClientKey::parse(&HeaderValue::from_static("\"order-42\""))?;
//! let bare = ClientKey::parse(&HeaderValue::from_static("order-42"))?;
//! assert_eq!(quoted, bare);
//! assert!(ClientKey::parse(&HeaderValue::from_static("\"\"")).is_err());
//! # Ok::<(), idem::inbound::KeyHeaderError>(())
//! ```

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::error::KeyHeaderError;

/// `Idempotency-Key`.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `Idempotent-Replayed`: `true` on a replayed response.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// `Idempotency-Key-Expires`: when the key's replay window ends (an HTTP
/// date). After it, the same key starts a new request.
pub static IDEMPOTENCY_KEY_EXPIRES: HeaderName = HeaderName::from_static("idempotency-key-expires");

/// The longest accepted client key, in bytes.
pub const MAX_CLIENT_KEY_LEN: usize = 255;

/// A client-chosen idempotency key from an `Idempotency-Key` header: 1 to
/// 255 visible ASCII characters. This is not the outbound
/// [`IdempotencyKey`](crate::IdempotencyKey) grammar; clients pick their own
/// tokens (usually UUIDs).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(String);

impl ClientKey {
    /// Parses one header value: a Structured Field string (`"..."`, with
    /// `\"` and `\\` escapes) or a bare token. Surrounding spaces and tabs
    /// are ignored.
    ///
    /// # Errors
    ///
    /// [`KeyHeaderError`] naming what is wrong: empty, too long, a character
    /// that is not visible ASCII, or a malformed quoted string.
    pub fn parse(value: &HeaderValue) -> Result<Self, KeyHeaderError> {
        Self::parse_bytes(value.as_bytes())
    }

    /// As [`ClientKey::parse`], from raw bytes.
    ///
    /// # Errors
    ///
    /// As [`ClientKey::parse`].
    pub fn parse_bytes(raw: &[u8]) -> Result<Self, KeyHeaderError> {
        let trimmed = trim_ows(raw);
        let key = if let Some(rest) = trimmed.strip_prefix(b"\"") {
            unquote(rest)?
        } else {
            trimmed.to_vec()
        };
        Self::check(key)
    }

    /// Checks an already-unquoted key.
    ///
    /// # Errors
    ///
    /// As [`ClientKey::parse`].
    pub fn new(key: impl Into<String>) -> Result<Self, KeyHeaderError> {
        Self::check(key.into().into_bytes())
    }

    fn check(key: Vec<u8>) -> Result<Self, KeyHeaderError> {
        if key.is_empty() {
            return Err(KeyHeaderError::Empty);
        }
        if key.len() > MAX_CLIENT_KEY_LEN {
            return Err(KeyHeaderError::TooLong { len: key.len() });
        }
        if let Some(index) = key.iter().position(|b| !b.is_ascii_graphic()) {
            return Err(KeyHeaderError::InvalidChar {
                index,
                byte: key[index],
            });
        }
        // Only ASCII graphic bytes remain, so this cannot fail.
        String::from_utf8(key)
            .map(Self)
            .map_err(|_| KeyHeaderError::InvalidChar { index: 0, byte: 0 })
    }

    /// Reads the key from request headers: `Ok(None)` when there is no
    /// `Idempotency-Key` header.
    ///
    /// # Errors
    ///
    /// [`KeyHeaderError::Repeated`] when the header appears more than once,
    /// otherwise as [`ClientKey::parse`].
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, KeyHeaderError> {
        let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(KeyHeaderError::Repeated);
        }
        Self::parse(first).map(Some)
    }

    /// A fresh random key (UUID v4), for endpoints configured to generate
    /// one when the client sent none.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a bare-token header value, as echoed on responses.
    pub fn to_header_value(&self) -> HeaderValue {
        // Visible ASCII is always a valid header value.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientKey").field(&self.0).finish()
    }
}

fn trim_ows(mut raw: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = raw {
        raw = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = raw {
        raw = rest;
    }
    raw
}

/// Parses the rest of an RFC 8941 sf-string after its opening quote.
fn unquote(rest: &[u8]) -> Result<Vec<u8>, KeyHeaderError> {
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'\\' => match rest.get(i + 1) {
                Some(&c @ (b'"' | b'\\')) => {
                    out.push(c);
                    i += 2;
                }
                _ => return Err(KeyHeaderError::BadEscape { index: i + 1 }),
            },
            b'"' => {
                if i + 1 != rest.len() {
                    return Err(KeyHeaderError::TrailingData);
                }
                return Ok(out);
            }
            c if (0x20..=0x7e).contains(&c) => {
                out.push(c);
                i += 1;
            }
            c => {
                return Err(KeyHeaderError::InvalidChar {
                    index: out.len(),
                    byte: c,
                });
            }
        }
    }
    Err(KeyHeaderError::Unterminated)
}

/// The `wait` preference of a `Prefer` header (RFC 7240), if any:
/// `Prefer: wait=5` asks the server to hold the response up to 5 seconds.
/// Unparseable preferences are ignored, as RFC 7240 asks.
pub fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all(http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            let pref = pref.split(';').next()?.trim();
            let (name, value) = pref.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .map(Duration::from_secs)
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(raw: &[u8]) -> Result<String, KeyHeaderError> {
        ClientKey::parse_bytes(raw).map(|k| k.0)
    }

    #[test]
    fn accepts_quoted_and_bare() {
        assert_eq!(parse(b"\"abc\"").unwrap(), "abc");
        assert_eq!(parse(b"abc").unwrap(), "abc");
        assert_eq!(parse(b"  \"abc\"\t").unwrap(), "abc");
        assert_eq!(parse(br#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        assert_eq!(
            parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap(),
            "8e03978e-40d5-43e8-bc93-6894a57f9324"
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse(b""), Err(KeyHeaderError::Empty));
        assert_eq!(parse(b"   "), Err(KeyHeaderError::Empty));
        assert_eq!(parse(b"\"\""), Err(KeyHeaderError::Empty));
        assert_eq!(parse(b"\"abc"), Err(KeyHeaderError::Unterminated));
        assert_eq!(
            parse(b"\"a\\bc\""),
            Err(KeyHeaderError::BadEscape { index: 2 })
        );
        assert_eq!(parse(b"\"abc\";x=1"), Err(KeyHeaderError::TrailingData));
        assert_eq!(
            parse(b"a b"),
            Err(KeyHeaderError::InvalidChar {
                index: 1,
                byte: b' '
            })
        );
        assert_eq!(
            parse(b"\"a b\""),
            Err(KeyHeaderError::InvalidChar {
                index: 1,
                byte: b' '
            })
        );
        assert_eq!(
            parse("caf\u{e9}".as_bytes()),
            Err(KeyHeaderError::InvalidChar {
                index: 3,
                byte: 0xc3
            })
        );
        assert_eq!(
            parse(&[b'k'; 256]),
            Err(KeyHeaderError::TooLong { len: 256 })
        );
        assert!(parse(&[b'k'; 255]).is_ok());
    }

    #[test]
    fn repeated_header_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append(&IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        assert_eq!(
            ClientKey::from_headers(&headers).unwrap().unwrap().as_str(),
            "a"
        );
        headers.append(&IDEMPOTENCY_KEY, HeaderValue::from_static("b"));
        assert_eq!(
            ClientKey::from_headers(&headers),
            Err(KeyHeaderError::Repeated)
        );
        assert_eq!(ClientKey::from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn prefer_wait_is_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(prefer_wait(&headers), None);
        headers.insert("prefer", HeaderValue::from_static("respond-async, wait=3"));
        assert_eq!(prefer_wait(&headers), Some(Duration::from_secs(3)));
        headers.insert("prefer", HeaderValue::from_static("wait=soon"));
        assert_eq!(prefer_wait(&headers), None);
    }

    #[test]
    fn generated_keys_are_valid() {
        let k = ClientKey::generate();
        assert_eq!(parse(k.as_str().as_bytes()).unwrap(), k.as_str());
    }

    fn sf_quote(key: &str) -> String {
        let mut s = String::from("\"");
        for c in key.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    }

    proptest! {
        #[test]
        fn valid_keys_round_trip_quoted_and_bare(key in "[!-~]{1,255}") {
            prop_assert_eq!(parse(sf_quote(&key).as_bytes()).unwrap(), key.clone());
            if !key.starts_with('"') {
                prop_assert_eq!(parse(key.as_bytes()).unwrap(), key);
            }
        }

        #[test]
        fn anything_accepted_is_visible_ascii_and_short(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(k) = parse(&raw) {
                prop_assert!(!k.is_empty() && k.len() <= MAX_CLIENT_KEY_LEN);
                prop_assert!(k.bytes().all(|b| b.is_ascii_graphic()));
            }
        }

        #[test]
        fn over_long_keys_are_refused(key in "[!-~]{256,400}") {
            prop_assert!(parse(sf_quote(&key).as_bytes()).is_err());
        }
    }
}
