//! Inbound header parsing and request fingerprinting on arbitrary bytes.
//!
//! The input is split at 0xFF bytes into: `Idempotency-Key` value, a second
//! `Idempotency-Key` value (when present), a `Prefer` value, a method, a
//! target, and a body. Checked:
//! * parsing never panics; an accepted key is 1 to 255 visible ASCII bytes;
//! * an accepted key round-trips through its quoted (RFC 8941) form, with
//!   and without parameters, and through its echo, which is always an
//!   sf-token or an sf-string;
//! * a header map with the key twice is refused as repeated;
//! * `Prefer: wait` never panics;
//! * fingerprints are deterministic, versioned, and framed: moving bytes
//!   between the target and the body changes the fingerprint.
#![no_main]

use http::{HeaderMap, HeaderValue};
use idem::Fingerprint;
use idem::inbound::{ClientKey, IDEMPOTENCY_KEY, MAX_CLIENT_KEY_LEN, prefer_wait};
use libfuzzer_sys::fuzz_target;

fn quoted(key: &str) -> Vec<u8> {
    let mut out = vec![b'"'];
    for b in key.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xFF);
    let raw_key = parts.next().unwrap_or_default();
    let second = parts.next();
    let prefer = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    let parsed = ClientKey::parse_bytes(raw_key);
    if let Ok(key) = &parsed {
        let text = key.as_str();
        assert!(!text.is_empty() && text.len() <= MAX_CLIENT_KEY_LEN);
        assert!(text.bytes().all(|b| b.is_ascii_graphic()));
        let requoted = ClientKey::parse_bytes(&quoted(text)).expect("quoted form parses");
        assert_eq!(&requoted, key);
        let mut with_params = quoted(text);
        with_params.extend_from_slice(b";x=1;y");
        assert_eq!(
            &ClientKey::parse_bytes(&with_params).expect("parameters are ignored"),
            key
        );
        let echo = key.to_header_value();
        let echo = echo.as_bytes();
        let token = echo
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'*')
            && echo
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(b));
        assert!(
            token || echo == quoted(text).as_slice(),
            "echo is a token or the sf-string"
        );
        let echoed = ClientKey::parse_bytes(echo).expect("echoed form parses");
        assert_eq!(&echoed, key);
    }

    if let Ok(value) = HeaderValue::from_bytes(raw_key) {
        let mut headers = HeaderMap::new();
        headers.append(&IDEMPOTENCY_KEY, value.clone());
        let from_map = ClientKey::from_headers(&headers);
        assert_eq!(
            from_map.as_ref().ok().cloned().flatten(),
            parsed.as_ref().ok().cloned()
        );
        if let Some(second) = second.and_then(|s| HeaderValue::from_bytes(s).ok()) {
            headers.append(&IDEMPOTENCY_KEY, second);
            assert!(
                ClientKey::from_headers(&headers).is_err(),
                "a repeated key is refused"
            );
        }
    }

    if let Ok(value) = HeaderValue::from_bytes(prefer) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HeaderName::from_static("prefer"), value);
        let _ = prefer_wait(&headers);
    }

    let method = String::from_utf8_lossy(method);
    let target = String::from_utf8_lossy(target);
    let fp = |t: &str, b: &[u8]| {
        Fingerprint::builder()
            .method(&method)
            .target(t)
            .body(b)
            .finish()
    };
    let a = fp(&target, body);
    assert_eq!(a, fp(&target, body), "deterministic");
    assert_eq!(a.version(), Some(1));
    assert_eq!(a.as_str().len(), 3 + 64);
    if let Some(last) = target.chars().last() {
        // Move the target's last character into the body.
        let shorter = &target[..target.len() - last.len_utf8()];
        let mut moved = last.to_string().into_bytes();
        moved.extend_from_slice(body);
        assert_ne!(a, fp(shorter, &moved), "fields are framed");
    }
});
