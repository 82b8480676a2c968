//! The `Idempotency-Key` request header and the `Prefer: wait=N` preference.
//!
//! The IETF draft (`draft-ietf-httpapi-idempotency-key-header`) sends the key
//! as a Structured Field string (RFC 8941): `Idempotency-Key: "8e03978e"`.
//! Many clients send a bare token instead: `Idempotency-Key: 8e03978e`. Both
//! are accepted. Either way the key itself must be 1 to 255 visible ASCII
//! characters (`!` to `~`); anything else is refused before a handler runs.
//! RFC 8941 parameters after a quoted key (`"k";x=1`) are parsed and ignored;
//! after a bare key they are part of the key (a bare key is taken verbatim).
//!
//! The key is echoed on responses as a valid Structured Field item: bare when
//! it is an sf-token (`order-42`), otherwise as an sf-string with `\"` and
//! `\\` escaped (`"8e03978e"`, `"a\"b"`), see [`ClientKey::to_header_value`].
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
            let (key, after) = unquote(rest)?;
            parameters(after)?;
            key
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

    /// The key as echoed on responses: always a valid RFC 8941 item. A key
    /// that is an sf-token (a letter or `*`, then token characters, `:` or
    /// `/`) is echoed bare; any other key as an sf-string, with `"` and `\`
    /// escaped. [`ClientKey::parse`] reads either form back to the same key.
    ///
    /// ```
    /// use idem::inbound::ClientKey;
    ///
    /// assert_eq!(ClientKey::new("order-42")?.to_header_value(), "order-42");
    /// assert_eq!(ClientKey::new("8e03978e")?.to_header_value(), "\"8e03978e\"");
    /// assert_eq!(ClientKey::new("a\"b")?.to_header_value(), r#""a\"b""#);
    /// # Ok::<(), idem::inbound::KeyHeaderError>(())
    /// ```
    pub fn to_header_value(&self) -> HeaderValue {
        let text = if is_sf_token(self.0.as_bytes()) {
            self.0.clone()
        } else {
            sf_string(&self.0)
        };
        // Visible ASCII, quotes and backslashes are always a valid header
        // value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
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

/// RFC 8941 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `key` is an RFC 8941 sf-token: `( ALPHA / "*" ) *( tchar / ":" / "/" )`.
pub(crate) fn is_sf_token(key: &[u8]) -> bool {
    match key.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'*')
                && rest.iter().all(|&b| is_tchar(b) || b == b':' || b == b'/')
        }
        None => false,
    }
}

/// `key` as an RFC 8941 sf-string.
pub(crate) fn sf_string(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 2);
    s.push('"');
    for c in key.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Checks RFC 8941 parameters after an item (`;key=value` repeated, with
/// optional spaces before each `;`), whose values are ignored.
fn parameters(mut rest: &[u8]) -> Result<(), KeyHeaderError> {
    let bad = || KeyHeaderError::TrailingData;
    loop {
        while let [b' ', tail @ ..] = rest {
            rest = tail;
        }
        let Some(tail) = rest.strip_prefix(b";") else {
            return if rest.is_empty() { Ok(()) } else { Err(bad()) };
        };
        rest = tail;
        while let [b' ', tail @ ..] = rest {
            rest = tail;
        }
        // key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
        match rest.first() {
            Some(b) if b.is_ascii_lowercase() || *b == b'*' => {}
            _ => return Err(bad()),
        }
        let len = rest
            .iter()
            .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(b)))
            .unwrap_or(rest.len());
        rest = &rest[len..];
        if let Some(tail) = rest.strip_prefix(b"=") {
            rest = bare_item(tail).ok_or_else(bad)?;
        }
    }
}

/// Skips one RFC 8941 bare item, returning what follows it.
fn bare_item(raw: &[u8]) -> Option<&[u8]> {
    match raw.first()? {
        b'"' => unquote(&raw[1..]).ok().map(|(_, after)| after),
        b'?' => match raw.get(1)? {
            b'0' | b'1' => Some(&raw[2..]),
            _ => None,
        },
        b':' => {
            let body = &raw[1..];
            let end = body.iter().position(|b| *b == b':')?;
            body[..end]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
                .then(|| &body[end + 1..])
        }
        b if b.is_ascii_alphabetic() || *b == b'*' => {
            let len = raw
                .iter()
                .position(|&b| !(is_tchar(b) || b == b':' || b == b'/'))
                .unwrap_or(raw.len());
            Some(&raw[len..])
        }
        b if b.is_ascii_digit() || *b == b'-' => {
            let start = usize::from(*b == b'-');
            let digits = &raw[start..];
            let int = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            if int == 0 || int > 15 {
                return None;
            }
            let mut end = start + int;
            if raw.get(end) == Some(&b'.') {
                let frac = raw[end + 1..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .unwrap_or(raw.len() - end - 1);
                if frac == 0 || frac > 3 || int > 12 {
                    return None;
                }
                end += 1 + frac;
            }
            Some(&raw[end..])
        }
        _ => None,
    }
}

/// Parses the rest of an RFC 8941 sf-string after its opening quote:
/// the unescaped text and what follows the closing quote.
fn unquote(rest: &[u8]) -> Result<(Vec<u8>, &[u8]), KeyHeaderError> {
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
            b'"' => return Ok((out, &rest[i + 1..])),
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
        assert_eq!(parse(b"\"abc\" x"), Err(KeyHeaderError::TrailingData));
        assert_eq!(parse(b"\"abc\";X=1"), Err(KeyHeaderError::TrailingData));
        assert_eq!(
            parse(b"\"abc\";x=\"open"),
            Err(KeyHeaderError::TrailingData)
        );
        assert_eq!(
            parse(b"\"abc\";x=1.2345"),
            Err(KeyHeaderError::TrailingData)
        );
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
    fn parameters_after_a_quoted_key_are_ignored() {
        for raw in [
            &br#""k";x=1"#[..],
            br#""k";x"#,
            br#""k"; x=?1;y=tok/en:1;z="s\"";n=-1.5;b=:aGk=:"#,
            br#""k" ;a*b.c-d_e=*x"#,
        ] {
            assert_eq!(parse(raw).unwrap(), "k", "{}", String::from_utf8_lossy(raw));
        }
        // A bare key is taken verbatim, parameters and all.
        assert_eq!(parse(b"k;x=1").unwrap(), "k;x=1");
    }

    #[test]
    fn echo_is_a_token_or_an_escaped_string() {
        let echo = |k: &str| ClientKey::new(k).unwrap().to_header_value();
        assert_eq!(echo("order-1"), "order-1");
        assert_eq!(echo("*a:b/c"), "*a:b/c");
        assert_eq!(echo("8e03978e-40d5"), "\"8e03978e-40d5\"");
        assert_eq!(echo(r#"a"b"#), r#""a\"b""#);
        assert_eq!(echo(r"a\b"), r#""a\\b""#);
        assert_eq!(echo("k;x=1"), "\"k;x=1\"");
    }

    /// An independent reading of an RFC 8941 item without parameters:
    /// `Some(text)` for a token or a well-formed sf-string, `None` otherwise.
    fn sf_item_value(raw: &[u8]) -> Option<String> {
        if let Some(body) = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
            let mut out = String::new();
            let mut chars = std::str::from_utf8(body).ok()?.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next()? {
                        e @ ('"' | '\\') => out.push(e),
                        _ => return None,
                    },
                    '"' => return None,
                    ' '..='~' => out.push(c),
                    _ => return None,
                }
            }
            return Some(out);
        }
        let text = std::str::from_utf8(raw).ok()?;
        let mut chars = text.chars();
        let first = chars.next()?;
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c);
        ((first.is_ascii_alphabetic() || first == '*') && chars.all(tchar)).then(|| text.to_owned())
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
        fn echo_is_valid_sf_and_parses_back(key in "[!-~]{1,255}") {
            let k = ClientKey::new(key.clone()).unwrap();
            let echoed = k.to_header_value();
            prop_assert_eq!(sf_item_value(echoed.as_bytes()), Some(key.clone()));
            prop_assert_eq!(ClientKey::parse(&echoed).unwrap(), k);
        }

        #[test]
        fn quoted_keys_with_parameters_parse_to_the_key(
            key in "[!-~]{1,255}",
            params in proptest::collection::vec(("[a-z*][a-z0-9_.*-]{0,5}", prop_oneof![
                Just(String::new()),
                Just("=?1".to_owned()),
                "=-?[0-9]{1,9}",
                "=[a-zA-Z*][a-zA-Z0-9:/!#$%&'*+.^_`|~-]{0,6}",
                "=\"[ -!#-\\[\\]-~]{0,6}\"",
            ]), 0..4),
        ) {
            let mut raw = sf_quote(&key);
            for (name, value) in &params {
                raw.push(';');
                raw.push_str(name);
                raw.push_str(value);
            }
            prop_assert_eq!(parse(raw.as_bytes()).unwrap(), key);
        }

        #[test]
        fn over_long_keys_are_refused(key in "[!-~]{256,400}") {
            prop_assert!(parse(sf_quote(&key).as_bytes()).is_err());
        }
    }
}
