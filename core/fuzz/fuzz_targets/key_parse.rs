//! `IdempotencyKey::from_str` on arbitrary text: never panics, and every key
//! it accepts obeys the grammar and round-trips exactly (text → key → text,
//! and parts → key).
#![no_main]

use idem::IdempotencyKey;
use idem::key::MAX_KEY_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = text.parse::<IdempotencyKey>() else {
        return;
    };
    // Text round trip.
    assert_eq!(key.as_str(), text);
    assert_eq!(key.to_string(), text);
    assert!(!text.is_empty() && text.len() <= MAX_KEY_LEN);
    let again: IdempotencyKey = key.as_str().parse().expect("a formatted key parses");
    assert_eq!(again, key);
    // Parts round trip.
    let rebuilt = IdempotencyKey::new(key.shop(), key.table(), key.row(), key.attempt())
        .expect("the parts of a parsed key are valid");
    assert_eq!(rebuilt, key);
    assert_eq!(
        text,
        format!("{}_{}_{}_v{}", key.shop(), key.table(), key.row(), key.attempt())
    );
    // The grammar, checked independently of the parser.
    let shop = key.shop().as_bytes();
    assert!(!shop.is_empty() && !shop.contains(&b'_'));
    assert!(shop[0].is_ascii_lowercase() || shop[0].is_ascii_digit());
    assert!(shop
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'));
    let table = key.table().as_bytes();
    assert!(!table.is_empty() && table[0].is_ascii_lowercase());
    assert!(table
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_'));
    let row = key.row().as_bytes();
    assert!(!row.is_empty() && row.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'));
    assert!(key.attempt() >= 1);
    // The next attempt differs only in its number.
    if let Ok(next) = key.next_attempt() {
        assert_eq!(next.attempt(), key.attempt() + 1);
        assert!(next.same_operation(&key));
        assert_ne!(next, key);
    }
});
