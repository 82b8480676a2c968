//! Request fingerprints: a versioned hash of what makes two requests "the same".
//!
//! A key reused for a different request is a bug in the caller; comparing
//! fingerprints catches it. The stored form carries its algorithm version
//! (`v1:` + 64 hex digits of SHA-256), so a later change of canonical form can
//! keep comparing old records with the algorithm that made them.
//!
//! ```
//! use idem::Fingerprint;
//!
//! let a = Fingerprint::builder().method("POST").target("/v1/refunds").body(b"amount=5").finish();
//! let b = Fingerprint::builder().method("POST").target("/v1/refunds").body(b"amount=6").finish();
//! assert_ne!(a, b);
//! assert!(a.as_str().starts_with("v1:"));
//! ```

use std::fmt;

use sha2::{Digest, Sha256};

/// The fingerprint algorithm this version of idem writes.
pub const FINGERPRINT_VERSION: u32 = 1;

/// A request fingerprint in its stored text form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Starts a fingerprint over labelled fields.
    pub fn builder() -> FingerprintBuilder {
        FingerprintBuilder {
            hasher: Sha256::new(),
        }
    }

    /// Wraps a stored fingerprint text (as read from a ledger row).
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The stored text form, `v<version>:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The algorithm version, if the text has one.
    pub fn version(&self) -> Option<u32> {
        self.0.strip_prefix('v')?.split_once(':')?.0.parse().ok()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fingerprint").field(&self.0).finish()
    }
}

/// Accumulates labelled fields. Every field is length-prefixed, so no two
/// different field sequences hash alike by concatenation.
#[derive(Clone)]
pub struct FingerprintBuilder {
    hasher: Sha256,
}

impl fmt::Debug for FingerprintBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FingerprintBuilder").finish_non_exhaustive()
    }
}

impl FingerprintBuilder {
    fn field(mut self, label: &str, value: &[u8]) -> Self {
        for part in [label.as_bytes(), value] {
            self.hasher.update((part.len() as u64).to_be_bytes());
            self.hasher.update(part);
        }
        self
    }

    /// The HTTP method, upper-cased.
    pub fn method(self, method: &str) -> Self {
        self.field("method", method.to_ascii_uppercase().as_bytes())
    }

    /// The request target: path and query string.
    pub fn target(self, path_and_query: &str) -> Self {
        self.field("target", path_and_query.as_bytes())
    }

    /// A header; the name is lower-cased. Add headers in a fixed order.
    pub fn header(self, name: &str, value: &[u8]) -> Self {
        let name = name.to_ascii_lowercase();
        self.field("header", name.as_bytes()).field("value", value)
    }

    /// The body bytes.
    pub fn body(self, body: &[u8]) -> Self {
        self.field("body", body)
    }

    /// Any other labelled field (for example an operation name).
    pub fn extra(self, label: &str, value: &[u8]) -> Self {
        self.field("extra", label.as_bytes()).field("value", value)
    }

    /// The finished fingerprint.
    pub fn finish(self) -> Fingerprint {
        let digest = self.hasher.finalize();
        Fingerprint(format!("v{FINGERPRINT_VERSION}:{}", hex::encode(digest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_framed() {
        let a = Fingerprint::builder().target("/ab").body(b"c").finish();
        let b = Fingerprint::builder().target("/a").body(b"bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn method_case_and_header_name_case_do_not_matter() {
        let a = Fingerprint::builder()
            .method("post")
            .header("Content-Type", b"x")
            .finish();
        let b = Fingerprint::builder()
            .method("POST")
            .header("content-type", b"x")
            .finish();
        assert_eq!(a, b);
        assert_eq!(a.version(), Some(1));
        assert_eq!(a.as_str().len(), 3 + 64);
    }
}
