//! Seeds for randomized suites: fixed by default so a run is repeatable,
//! overridable from the environment, and always printed.

/// The seed in environment variable `var` (decimal or `0x` hex), or
/// `default`. Prints which one is used, and how to repeat the run.
///
/// # Panics
///
/// When the variable is set but is not a number.
pub fn from_env(var: &str, default: u64) -> u64 {
    let seed = match std::env::var(var) {
        Ok(text) => parse(&text).unwrap_or_else(|| panic!("{var}={text:?} is not a u64 seed")),
        Err(_) => default,
    };
    eprintln!("seed: {var}={seed:#x} (set {var} to repeat or vary this run)");
    seed
}

fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A seed for item `index` derived from `seed` (SplitMix64), so each item's
/// randomness does not depend on how many others ran or in which order.
pub fn derive(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_hex() {
        assert_eq!(parse("42"), Some(42));
        assert_eq!(parse("0x2a"), Some(42));
        assert_eq!(parse("forty-two"), None);
    }

    #[test]
    fn derived_seeds_differ() {
        let a: Vec<u64> = (0..100).map(|i| derive(7, i)).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(a.len(), b.len());
    }
}
