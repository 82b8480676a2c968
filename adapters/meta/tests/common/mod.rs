//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem::executor::RetrySettings;
use idem::{Executor, IdempotencyKey, LedgerStore, ManualClock, OperationState};
use idem_meta::MetaClient;
use wiremock::{Request, Respond, ResponseTemplate};

/// Short retries for tests: 3 attempts, 20–40 ms backoff, 300 ms per attempt.
pub fn fast() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(40))
        .with_attempt_timeout(Duration::from_millis(300))
        .with_total_timeout(Duration::from_secs(3))
}

/// Longer than [`fast`]'s attempt timeout.
pub const LOST: Duration = Duration::from_millis(900);

pub fn key(s: &str) -> IdempotencyKey {
    s.parse().unwrap()
}

pub struct Setup {
    pub exec: Executor,
    pub store: Arc<dyn LedgerStore>,
    pub clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
}

pub async fn setup() -> Setup {
    let (store, dir) = idem::testing::sqlite_store().await;
    let clock = ManualClock::starting_now();
    let exec = Executor::builder(store).clock(clock.clone()).build();
    Setup {
        store: exec.store().clone(),
        exec,
        clock,
        _dir: Some(dir),
    }
}

pub async fn setup_pg(test: &str) -> Option<Setup> {
    let store = idem::testing::pg_store(test).await?;
    let clock = ManualClock::starting_now();
    let exec = Executor::builder(store).clock(clock.clone()).build();
    Some(Setup {
        store: exec.store().clone(),
        exec,
        clock,
        _dir: None,
    })
}

impl Setup {
    pub fn client(&self, base: &str) -> MetaClient {
        MetaClient::builder(self.exec.clone(), "EAAtestpagetoken")
            .base_url(base)
            .retry(fast())
            .container_wait(Duration::from_secs(2), Duration::from_millis(20))
            .build()
            .unwrap()
    }

    pub async fn state(&self, k: &IdempotencyKey) -> OperationState {
        self.store.get(k).await.unwrap().unwrap().state
    }
}

/// Answers from a script, one entry per call; the last entry repeats.
pub struct Script(Vec<ResponseTemplate>, AtomicUsize);

impl Script {
    pub fn new(steps: Vec<ResponseTemplate>) -> Self {
        Self(steps, AtomicUsize::new(0))
    }
}

impl Respond for Script {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.1.fetch_add(1, Ordering::SeqCst);
        self.0[n.min(self.0.len() - 1)].clone()
    }
}

pub fn meta_error(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}
