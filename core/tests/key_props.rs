//! Property tests of the key grammar: parts that follow the rules always
//! round-trip; any text at all parses to a key or a typed error, never a panic.

use idem::{IdempotencyKey, KeyError};
use proptest::prelude::*;

fn shop() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,20}"
}
fn table() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,30}"
}
fn row() -> impl Strategy<Value = String> {
    "[A-Za-z0-9-]{1,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn parts_round_trip(shop in shop(), table in table(), row in row(), n in 1u32..) {
        let key = IdempotencyKey::new(&shop, &table, &row, n).unwrap();
        let text = key.to_string();
        prop_assert_eq!(&text, &format!("{shop}_{table}_{row}_v{n}"));
        let parsed: IdempotencyKey = text.parse().unwrap();
        prop_assert_eq!(parsed.shop(), shop.as_str());
        prop_assert_eq!(parsed.table(), table.as_str());
        prop_assert_eq!(parsed.row(), row.as_str());
        prop_assert_eq!(parsed.attempt(), n);
        prop_assert_eq!(&parsed, &key);
        if n < u32::MAX {
            let next = key.next_attempt().unwrap();
            prop_assert_eq!(next.attempt(), n + 1);
            prop_assert!(next.same_operation(&key));
        }
    }
}

proptest! {
    // 100k cases of arbitrary text and of near-miss keys.
    #![proptest_config(ProptestConfig::with_cases(100_000))]

    #[test]
    fn any_text_parses_or_errs_without_panic(text in ".{0,300}") {
        match text.parse::<IdempotencyKey>() {
            Ok(key) => prop_assert_eq!(key.to_string(), text),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn near_misses_parse_or_err_without_panic(text in "[a-zA-Z0-9_v.-]{0,60}") {
        match text.parse::<IdempotencyKey>() {
            Ok(key) => {
                prop_assert_eq!(key.to_string(), text.clone());
                prop_assert_eq!(IdempotencyKey::new(key.shop(), key.table(), key.row(), key.attempt()).unwrap(), key);
            }
            Err(KeyError::TooLong { .. }) => prop_assert!(text.len() > 255),
            Err(_) => {}
        }
    }

    #[test]
    fn constructor_never_panics(shop in ".{0,12}", table in ".{0,12}", row in ".{0,12}", n in any::<u32>()) {
        if let Ok(key) = IdempotencyKey::new(&shop, &table, &row, n) {
            prop_assert_eq!(key.to_string().parse::<IdempotencyKey>().unwrap(), key);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// Distinct tool calls get distinct keys, every derived key parses back,
    /// and the same call always gets the same key.
    #[test]
    fn tool_call_keys_are_injective(
        a in (".{1,40}", 0u32..4, ".{1,20}", prop_oneof![".{1,30}".prop_map(Some), Just(None)], 0u32..4),
        b in (".{1,40}", 0u32..4, ".{1,20}", prop_oneof![".{1,30}".prop_map(Some), Just(None)], 0u32..4),
    ) {
        use idem::key::ToolCall;
        let derive = |(conv, turn, tool, id, index): &(String, u32, String, Option<String>, u32)| {
            let call = match id {
                Some(id) => ToolCall::Id(id),
                None => ToolCall::Index(*index),
            };
            IdempotencyKey::for_tool_call("shop", conv, *turn, tool, call).unwrap()
        };
        let (ka, kb) = (derive(&a), derive(&b));
        let parsed: IdempotencyKey = ka.as_str().parse().unwrap();
        prop_assert_eq!(&parsed, &ka);
        prop_assert_eq!(derive(&a), ka.clone());
        let same_call = a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 == b.3
            && (a.3.is_some() || a.4 == b.4);
        prop_assert_eq!(ka == kb, same_call);
    }
}
