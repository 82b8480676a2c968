//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub, unused_imports)]

use idem::executor::RetrySettings;
use idem::{Executor, LedgerStore, ManualClock};
use idem_stripe::{Amount, CreatePaymentIntent, Currency, PaymentMethodId, StripeClient};
use idem_testkit::FakeStripe;
pub use idem_testkit::ledger::{DAY, fast_retry, key, manual_clock as clock, past_lease, row};

pub const SECRET: &str = "sk_test_51FakeSecretKeyForTests";

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
