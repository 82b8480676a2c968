//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idem::executor::RetrySettings;
use idem::ledger::SqliteStore;
use idem::{Executor, IdempotencyKey, Operation};
use idem_gbp::{
    AccessToken, GbpClient, LocalPost, LocationName, ReviewName, TokenError, TokenSource,
};

pub fn key(s: &str) -> IdempotencyKey {
    s.parse().expect("valid test key")
}

pub fn review() -> ReviewName {
    ReviewName::new("111", "222", "rev-1").unwrap()
}

pub fn location() -> LocationName {
    LocationName::new("111", "222").unwrap()
}

pub fn post() -> LocalPost {
    LocalPost::standard("en-US", "Spring tune-ups are 20% off this week.")
}

/// Short timeouts and backoffs, so tests run fast.
pub fn fast_retry() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_attempt_timeout(Duration::from_millis(300))
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
    pub dir: tempfile::TempDir,
}

pub async fn sqlite_executor(clock: Option<idem::ManualClock>) -> Setup {
    let (store, dir) = idem::testing::sqlite_store().await;
    let builder = Executor::builder(store);
    let executor = match clock {
        Some(c) => builder.clock(c).build(),
        None => builder.build(),
    };
    Setup { executor, dir }
}

/// A second executor over the same SQLite file: another worker process.
pub async fn reopen(setup: &Setup) -> Executor {
    let store = SqliteStore::open(idem::testing::sqlite_path(&setup.dir))
        .await
        .unwrap();
    Executor::builder(store).build()
}

pub fn client(executor: Executor, base_url: &str, tokens: impl TokenSource) -> GbpClient {
    GbpClient::builder(executor, tokens)
        .base_url(base_url)
        .retry(fast_retry())
        .build()
        .unwrap()
}

pub async fn row(executor: &Executor, key: &IdempotencyKey) -> Operation {
    executor
        .store()
        .get(key)
        .await
        .unwrap()
        .expect("ledger row")
}
