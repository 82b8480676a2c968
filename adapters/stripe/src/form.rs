//! Stripe's v1 form encoding: `application/x-www-form-urlencoded` pairs with
//! nested objects as `parent[child]=v` and arrays indexed as `list[0]=v`.
//! Pairs keep insertion order, so a request encodes to the same bytes on
//! every run (the ledger fingerprints the body).

use crate::types::Metadata;

/// An ordered list of form pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// `name=value`.
    pub(crate) fn push(&mut self, name: impl Into<String>, value: impl std::fmt::Display) {
        self.pairs.push((name.into(), value.to_string()));
    }

    /// `name=value` when there is a value.
    pub(crate) fn opt<V: std::fmt::Display>(&mut self, name: &str, value: Option<V>) {
        if let Some(v) = value {
            self.push(name, v);
        }
    }

    /// `name[0]=a&name[1]=b`.
    pub(crate) fn list<V: std::fmt::Display>(&mut self, name: &str, values: &[V]) {
        for (i, v) in values.iter().enumerate() {
            self.push(format!("{name}[{i}]"), v);
        }
    }

    /// `name[k]=v` for each entry, in key order.
    pub(crate) fn map(&mut self, name: &str, map: &Metadata) {
        for (k, v) in map {
            self.push(format!("{name}[{k}]"), v);
        }
    }

    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_indexed() {
        let mut f = Form::new();
        f.push("amount", 500);
        f.list("payment_method_types", &["card", "link"]);
        let mut m = Metadata::new();
        m.insert("order_id".into(), "42".into());
        m.insert("a b".into(), "x&y".into());
        f.map("metadata", &m);
        f.opt::<u32>("skipped", None);
        let pairs: Vec<_> = f.pairs().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            pairs,
            [
                "amount=500",
                "payment_method_types[0]=card",
                "payment_method_types[1]=link",
                "metadata[a b]=x&y",
                "metadata[order_id]=42"
            ]
        );
    }
}
