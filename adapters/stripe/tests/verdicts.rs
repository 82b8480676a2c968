//! Issue 13, adapter side: reconciliation verdicts need positive proof,
//! requests fit the configured `Stripe-Version`, and `Stripe-Account` is part
//! of what a key stands for.

mod common;

use std::time::Duration;

use common::*;
use idem::executor::Source;
use idem::reconcile::{Reconcile, ReconcileVerdict};
use idem::{Executor, ManualClock, OperationState};
use idem_stripe::{
    AdapterError, Amount, CaptureMethod, CapturePaymentIntent, CreatePaymentIntent, Currency,
    Error, PaymentIntentStatus, Reconciliation, StripeClient,
};
use idem_testkit::{FakeStripe, Fault};

async fn pg(test: &str) -> Option<(Executor, ManualClock)> {
    let store = idem::testing::pg_store(test).await?;
    let clock = clock();
    Some((executor(store, &clock), clock))
}

async fn sqlite() -> (Executor, ManualClock, tempfile::TempDir) {
    let (store, dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    (executor(store, &clock), clock, dir)
}

/// An authorized (manual capture) PaymentIntent of $10.99.
async fn authorized(stripe: &StripeClient, n: u32) -> idem_stripe::PaymentIntent {
    let mut params = charge_params();
    params.capture_method = Some(CaptureMethod::Manual);
    let pi = stripe
        .payment_intents()
        .create(&key(&format!("joes-bikes_orders_{n}_v1")), &params)
        .await
        .unwrap()
        .object;
    assert_eq!(pi.status, PaymentIntentStatus::RequiresCapture);
    pi
}

fn partial(minor: u64) -> CapturePaymentIntent {
    CapturePaymentIntent {
        amount_to_capture: Some(Amount::minor(minor)),
        final_capture: Some(false),
        ..CapturePaymentIntent::default()
    }
}

/// Scenario 2: a partial capture (`final_capture=false`) whose answer was
/// lost leaves the intent `requires_capture` with `amount_received > 0`.
/// After the key window that is no proof that the capture did not happen:
/// the row stays `unknown`, nothing is captured again.
async fn lost_partial_capture_is_not_captured_again(exec: Executor, clock: ManualClock) {
    let fake = FakeStripe::start().await;
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(1));
    let pi = authorized(&stripe, 21).await;
    let k = key("joes-bikes_captures_21_v1");
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(2),
    });
    let err = stripe
        .payment_intents()
        .capture(&k, &pi.id, &partial(500))
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err:?}");
    let at_stripe = fake.object(pi.id.as_str()).unwrap();
    assert_eq!(at_stripe["status"], "requires_capture");
    assert_eq!(at_stripe["amount_received"], 500);
    assert_eq!(at_stripe["amount_capturable"], 599);
    let charge = fake
        .object(at_stripe["latest_charge"].as_str().unwrap())
        .unwrap();
    assert_eq!(charge["amount_captured"], 500);

    clock.advance(DAY + Duration::from_secs(60));
    fake.expire_keys();
    let err = stripe
        .payment_intents()
        .capture(&k, &pi.id, &partial(500))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Adapter(AdapterError::Undetermined { .. })),
        "{err:?}"
    );
    assert!(err.is_unknown());
    assert!(!err.is_retryable(), "an operator decides");
    assert_eq!(
        fake.side_effects(),
        2,
        "the create and the one partial capture"
    );
    assert_eq!(
        fake.write_requests(),
        2,
        "nothing was sent after the window"
    );
    assert_eq!(fake.object(pi.id.as_str()).unwrap()["amount_received"], 500);
    let before = row(&exec, &k).await;
    assert_eq!(before.state, OperationState::Unknown);

    // reconcile() and the Reconcile trait say the same and change nothing.
    assert!(matches!(
        stripe.reconcile(&k).await.unwrap(),
        Reconciliation::Undetermined { .. }
    ));
    assert!(matches!(
        Reconcile::reconcile(&stripe, &k).await.unwrap(),
        ReconcileVerdict::Undetermined { .. }
    ));
    let after = row(&exec, &k).await;
    assert_eq!(after.state, OperationState::Unknown);
    assert_eq!(after.claims, before.claims);
    assert_eq!(fake.write_requests(), 2);
}

#[tokio::test]
async fn lost_partial_capture_is_not_captured_again_sqlite() {
    let (exec, clock, _dir) = sqlite().await;
    lost_partial_capture_is_not_captured_again(exec, clock).await;
}

#[tokio::test]
async fn lost_partial_capture_is_not_captured_again_postgres() {
    let Some((exec, clock)) = pg("stripe lost partial capture").await else {
        return;
    };
    lost_partial_capture_is_not_captured_again(exec, clock).await;
}

/// The positive proofs still work: a partial capture that never reached
/// Stripe (nothing received on the intent) is sent again after the window,
/// and a final capture after earlier partial ones is sent again while the
/// intent is still `requires_capture`.
async fn captures_proven_absent_are_sent_again(exec: Executor, clock: ManualClock) {
    let fake = FakeStripe::start().await;
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(1));
    let pi = authorized(&stripe, 22).await;

    let first = key("joes-bikes_captures_22a_v1");
    fake.inject(Fault::StallWithoutEffect {
        delay: Duration::from_secs(2),
    });
    assert!(
        stripe
            .payment_intents()
            .capture(&first, &pi.id, &partial(300))
            .await
            .unwrap_err()
            .is_unknown()
    );
    clock.advance(DAY + Duration::from_secs(60));
    fake.expire_keys();
    let done = stripe
        .payment_intents()
        .capture(&first, &pi.id, &partial(300))
        .await
        .unwrap();
    assert_eq!(done.object.amount_received, Some(Amount::minor(300)));
    assert_eq!(done.object.status, PaymentIntentStatus::RequiresCapture);

    // Now a final capture of the rest, lost before Stripe processed it.
    let last = key("joes-bikes_captures_22b_v1");
    let rest = CapturePaymentIntent {
        amount_to_capture: Some(Amount::minor(799)),
        ..CapturePaymentIntent::default()
    };
    fake.inject(Fault::StallWithoutEffect {
        delay: Duration::from_secs(2),
    });
    assert!(
        stripe
            .payment_intents()
            .capture(&last, &pi.id, &rest)
            .await
            .unwrap_err()
            .is_unknown()
    );
    clock.advance(DAY + Duration::from_secs(60));
    fake.expire_keys();
    let done = stripe
        .payment_intents()
        .capture(&last, &pi.id, &rest)
        .await
        .unwrap();
    assert_eq!(done.object.status, PaymentIntentStatus::Succeeded);
    assert_eq!(done.object.amount_received, Some(Amount::minor(1099)));
    assert_eq!(fake.side_effects(), 3, "create + two captures");
    assert_eq!(row(&exec, &last).await.state, OperationState::Succeeded);
}

#[tokio::test]
async fn captures_proven_absent_are_sent_again_sqlite() {
    let (exec, clock, _dir) = sqlite().await;
    captures_proven_absent_are_sent_again(exec, clock).await;
}

#[tokio::test]
async fn captures_proven_absent_are_sent_again_postgres() {
    let Some((exec, clock)) = pg("stripe captures proven absent").await else {
        return;
    };
    captures_proven_absent_are_sent_again(exec, clock).await;
}

// ----- Stripe-Version ----------------------------------------------------

fn versioned(exec: Executor, fake: &FakeStripe, version: &str) -> StripeClient {
    StripeClient::builder(exec, SECRET)
        .base_url(fake.base_url())
        .retry(fast_retry())
        .stripe_version(version)
        .build()
        .unwrap()
}

fn with_types(types: &[&str], allowed: bool) -> CreatePaymentIntent {
    let mut p = CreatePaymentIntent::new(Amount::minor(1099), Currency::usd());
    let list: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
    if allowed {
        p.allowed_payment_method_types = list;
    } else {
        p.payment_method_types = list;
    }
    p
}

#[tokio::test]
async fn payment_method_types_is_sent_on_dahlia() {
    let (exec, _clock, _dir) = sqlite().await;
    let fake = FakeStripe::start().await;
    let stripe = versioned(exec, &fake, "2026-08-26.dahlia");
    let pi = stripe
        .payment_intents()
        .create(
            &key("joes-bikes_orders_31_v1"),
            &with_types(&["card"], false),
        )
        .await
        .unwrap();
    assert_eq!(pi.source, Source::Wire { attempts: 1 });
    let seen = &fake.requests()[0];
    assert_eq!(seen.header("stripe-version"), Some("2026-08-26.dahlia"));
    assert!(
        seen.form()
            .contains(&("payment_method_types[0]".to_owned(), "card".to_owned()))
    );
}

#[tokio::test]
async fn payment_method_types_is_refused_on_endive_before_anything_is_recorded() {
    let (exec, _clock, _dir) = sqlite().await;
    let fake = FakeStripe::start().await;
    let stripe = versioned(exec.clone(), &fake, "2026-10-28.endive");
    let k = key("joes-bikes_orders_32_v1");
    let err = stripe
        .payment_intents()
        .create(&k, &with_types(&["card"], false))
        .await
        .unwrap_err();
    match &err {
        Error::Adapter(AdapterError::UnsupportedParameter {
            key,
            param,
            version,
            ..
        }) => {
            assert_eq!(key, &k);
            assert_eq!(*param, "payment_method_types");
            assert_eq!(version, "2026-10-28.endive");
        }
        other => panic!("expected UnsupportedParameter, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("allowed_payment_method_types"),
        "{err}"
    );
    assert!(fake.requests().is_empty(), "nothing sent");
    assert!(
        exec.store().get(&k).await.unwrap().is_none(),
        "nothing recorded"
    );

    // Its replacement goes through.
    let ok = stripe
        .payment_intents()
        .create(&k, &with_types(&["card"], true))
        .await
        .unwrap();
    assert_eq!(ok.object.status, PaymentIntentStatus::RequiresPaymentMethod);
    let seen = &fake.requests()[0];
    assert!(seen.form().contains(&(
        "allowed_payment_method_types[0]".to_owned(),
        "card".to_owned()
    )));
    assert!(
        !seen
            .form()
            .iter()
            .any(|(k, _)| k.starts_with("payment_method_types"))
    );
}

#[tokio::test]
async fn allowed_payment_method_types_is_refused_before_dahlia() {
    let (exec, _clock, _dir) = sqlite().await;
    let fake = FakeStripe::start().await;
    let stripe = versioned(exec, &fake, "2025-03-31.basil");
    let err = stripe
        .payment_intents()
        .create(
            &key("joes-bikes_orders_33_v1"),
            &with_types(&["card"], true),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Adapter(AdapterError::UnsupportedParameter {
                param: "allowed_payment_method_types",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn an_unreadable_stripe_version_is_a_config_error() {
    let (exec, _clock, _dir) = sqlite().await;
    let err = StripeClient::builder(exec, SECRET)
        .stripe_version("latest")
        .build()
        .unwrap_err();
    assert_eq!(err, idem_stripe::ConfigError::StripeVersion);
}

// ----- Stripe-Account ----------------------------------------------------

fn for_account(exec: Executor, fake: &FakeStripe, account: &str) -> StripeClient {
    StripeClient::builder(exec, SECRET)
        .base_url(fake.base_url())
        .retry(fast_retry())
        .stripe_account(account)
        .build()
        .unwrap()
}

async fn same_key_for_another_account_is_key_reuse(exec: Executor) {
    let fake = FakeStripe::start().await;
    let a = for_account(exec.clone(), &fake, "acct_1ShopA");
    let b = for_account(exec.clone(), &fake, "acct_1ShopB");
    let k = key("joes-bikes_orders_41_v1");
    let first = a
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap();
    assert_eq!(
        fake.requests()[0].header("stripe-account"),
        Some("acct_1ShopA")
    );
    let err = b
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .expect_err("another account's request must not get the first account's answer");
    assert!(matches!(err, Error::KeyReused { .. }), "{err:?}");
    assert_eq!(fake.write_requests(), 1);
    // The first account still gets its own answer.
    let again = a
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap();
    assert_eq!(again.object.id, first.object.id);
}

#[tokio::test]
async fn same_key_for_another_account_is_key_reuse_sqlite() {
    let (exec, _clock, _dir) = sqlite().await;
    same_key_for_another_account_is_key_reuse(exec).await;
}

#[tokio::test]
async fn same_key_for_another_account_is_key_reuse_postgres() {
    let Some((exec, _clock)) = pg("stripe other account").await else {
        return;
    };
    same_key_for_another_account_is_key_reuse(exec).await;
}
