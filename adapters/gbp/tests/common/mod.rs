//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idem::Executor;
use idem::executor::RetrySettings;
use idem_gbp::{
    AccessToken, GbpClient, LocalPost, LocationName, ReviewName, TokenError, TokenSource,
};
use idem_testkit::ledger::TestLedger;
pub use idem_testkit::ledger::{key, row};

pub fn review() -> ReviewName {
    ReviewName::new("111", "222", "rev-1").unwrap()
}

pub fn location() -> LocationName {
    LocationName::new("111", "222").unwrap()
}

pub fn post() -> LocalPost {
    LocalPost::standard("en-US", "Spring tune-ups are 20% off this week.")
}

/// The testkit's fast retries, with 5 s in all and `Retry-After` honoured
/// up to 2 s.
pub fn fast_retry() -> RetrySettings {
    idem_testkit::ledger::fast_retry()
        .with_total_timeout(Duration::from_secs(5))
        .with_max_retry_after(Duration::from_secs(2))
}

/// A token source that hands out `initial` until refreshed, then `fresh`,
/// and counts the calls.
#[derive(Debug)]
pub struct CountingToken {
    current: Mutex<String>,
    fresh: String,
    pub tokens: AtomicUsize,
    pub refreshes: AtomicUsize,
}

impl CountingToken {
    pub fn new(initial: &str, fresh: &str) -> Self {
        Self {
            current: Mutex::new(initial.to_owned()),
            fresh: fresh.to_owned(),
            tokens: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
        }
    }

    pub fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenSource for CountingToken {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        self.tokens.fetch_add(1, Ordering::SeqCst);
        Ok(AccessToken::new(self.current.lock().unwrap().clone()))
    }

    async fn refresh(&self) -> Result<AccessToken, TokenError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let mut current = self.current.lock().unwrap();
        *current = self.fresh.clone();
        Ok(AccessToken::new(current.clone()))
    }
}

/// An executor over a fresh SQLite ledger.
pub struct Setup {
    pub executor: Executor,
    ledger: TestLedger,
}

pub async fn sqlite_executor(clock: Option<idem::ManualClock>) -> Setup {
    let ledger = match clock {
        Some(c) => TestLedger::sqlite_with_clock(c).await,
        None => TestLedger::sqlite().await,
    };
    Setup {
        executor: ledger.executor(),
        ledger,
    }
}

/// A second executor over the same SQLite file: another worker process.
pub async fn reopen(setup: &Setup) -> Executor {
    setup.ledger.reopen().await.expect("a SQLite ledger")
}

pub fn client(executor: Executor, base_url: &str, tokens: impl TokenSource) -> GbpClient {
    GbpClient::builder(executor, tokens)
        .base_url(base_url)
        .retry(fast_retry())
        .build()
        .unwrap()
}
