//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use idem::executor::RetrySettings;
use idem::{Executor, IdempotencyKey, LedgerStore, ManualClock, OperationState};
use idem_meta::MetaClient;
use idem_testkit::Reply;
use idem_testkit::ledger::TestLedger;
pub use idem_testkit::ledger::{LOST, key};
pub use idem_testkit::mock::Script;

/// The testkit's fast retries with 20–40 ms backoff: 3 attempts, 300 ms per
/// attempt.
pub fn fast() -> RetrySettings {
    idem_testkit::ledger::fast_retry()
        .with_backoff(Duration::from_millis(20), Duration::from_millis(40))
}

pub struct Setup {
    pub exec: Executor,
    pub store: Arc<dyn LedgerStore>,
    pub clock: ManualClock,
    _ledger: TestLedger,
}

pub async fn setup() -> Setup {
    let clock = ManualClock::starting_now();
    Setup::on(TestLedger::sqlite_with_clock(clock.clone()).await, clock)
}

pub async fn setup_pg(test: &str) -> Option<Setup> {
    let clock = ManualClock::starting_now();
    let ledger = TestLedger::postgres_with_clock(test, clock.clone()).await?;
    Some(Setup::on(ledger, clock))
}

impl Setup {
    fn on(ledger: TestLedger, clock: ManualClock) -> Self {
        Self {
            exec: ledger.executor(),
            store: ledger.store().clone(),
            clock,
            _ledger: ledger,
        }
    }

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

pub fn meta_error(status: u16, body: &str) -> Reply {
    Reply::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}
