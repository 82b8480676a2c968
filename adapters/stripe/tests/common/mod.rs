//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime};

use idem::executor::RetrySettings;
use idem::{Executor, IdempotencyKey, LedgerStore, ManualClock, Operation};
use idem_stripe::fake::FakeStripe;
use idem_stripe::{Amount, CreatePaymentIntent, Currency, PaymentMethodId, StripeClient};

pub const SECRET: &str = "sk_test_51FakeSecretKeyForTests";

/// Short timeouts and backoffs: a lost response shows up as a 300 ms timeout.
pub fn fast_retry() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_attempt_timeout(Duration::from_millis(300))
        .with_total_timeout(Duration::from_secs(3))
}

pub fn key(s: &str) -> IdempotencyKey {
    s.parse().expect("valid key")
}

pub fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000))
}

pub fn executor(store: impl LedgerStore, clock: &ManualClock) -> Executor {
    Executor::builder(store).clock(clock.clone()).build()
}

pub fn client(executor: Executor, fake: &FakeStripe) -> StripeClient {
    client_with(executor, fake, fast_retry())
}

pub fn client_with(executor: Executor, fake: &FakeStripe, retry: RetrySettings) -> StripeClient {
    StripeClient::builder(executor, SECRET)
        .base_url(fake.base_url())
        .retry(retry)
        .build()
        .expect("valid client settings")
}

/// A confirmed card payment of $10.99.
pub fn charge_params() -> CreatePaymentIntent {
    let mut p = CreatePaymentIntent::new(Amount::minor(1099), Currency::usd());
    p.payment_method = Some("pm_card_visa".parse::<PaymentMethodId>().unwrap());
    p.payment_method_types = vec!["card".into()];
    p.confirm = Some(true);
    p.metadata.insert("order_id".into(), "42".into());
    p
}

pub async fn row(executor: &Executor, key: &IdempotencyKey) -> Operation {
    executor
        .store()
        .get(key)
        .await
        .expect("store works")
        .expect("row exists")
}

/// Time to move a `ManualClock` so that a lease taken with `retry` has
/// expired (claim budget + the executor's default 30 s lease margin).
pub fn past_lease(retry: &RetrySettings) -> Duration {
    retry.claim_budget() + Duration::from_secs(31)
}

pub const DAY: Duration = Duration::from_secs(24 * 3600);
