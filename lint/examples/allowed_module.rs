//! Only one module is allowed (the test's dylint.toml allows `allowed_module::executor`), the
//! way core's `idem::executor` is: calls elsewhere in the crate are flagged.

mod executor {
    pub fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    pub mod inner {
        pub fn client() -> reqwest::Client {
            reqwest::Client::builder().build().unwrap()
        }
    }
}

mod ledger {
    pub fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    // Same name, wrong place: only `allowed_module::executor` is allowed.
    pub mod executor {
        pub fn client() -> reqwest::Client {
            reqwest::Client::new()
        }
    }
}

fn main() {
    let _ = executor::client();
    let _ = executor::inner::client();
    let _ = ledger::client();
    let _ = ledger::executor::client();
}
