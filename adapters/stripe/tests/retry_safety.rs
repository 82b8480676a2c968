//! The "done when" guarantees of issue 3, against the simulated Stripe.

mod common;

use std::time::Duration;

use common::*;
use idem::executor::Source;
use idem::{Executor, OperationState};
use idem_stripe::{
    AdapterError, Amount, CaptureMethod, CapturePaymentIntent, CreateCustomer, CreateRefund, Error,
    PaymentIntentStatus, Reconciliation, StripeObject,
};
use idem_testkit::{FakeStripe, Fault};

#[tokio::test]
async fn reset_connections_before_and_after_the_charge_are_retried_with_the_key_and_charge_once() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client(exec.clone(), &fake);
    let k = key("joes-bikes_orders_reset_v1");

    // The first attempt never reaches Stripe; the second charges, then the
    // connection is reset before the answer.
    fake.inject(Fault::ResetBeforeEffect);
    fake.inject(Fault::ResetAfterEffect);
    let pi = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .expect("the third attempt gets the stored answer");

    assert_eq!(fake.side_effects(), 1, "exactly one charge");
    assert_eq!(fake.write_requests(), 3, "two reset attempts, one replay");
    assert_eq!(fake.keys_on_wire(), vec![k.to_string(); 3]);
    assert!(pi.replayed, "Stripe replayed the stored answer");
    assert_eq!(
        pi.object.id.as_str(),
        fake.payment_intents()[0]["id"].as_str().unwrap()
    );
    assert_eq!(row(&exec, &k).await.state, OperationState::Succeeded);
}

#[tokio::test]
async fn lost_response_then_retry_gives_one_charge_and_the_original_intent() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client(exec.clone(), &fake);
    let k = key("joes-bikes_orders_1_v1");

    // Stripe charges, but the answer never arrives in time.
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(2),
    });
    let pi = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .expect("the retry inside the claim gets the stored answer");

    assert_eq!(fake.side_effects(), 1, "exactly one charge");
    assert_eq!(fake.payment_intents().len(), 1);
    assert_eq!(fake.write_requests(), 2, "one lost attempt, one retry");
    assert_eq!(fake.keys_on_wire(), vec![k.to_string(), k.to_string()]);
    let original = &fake.payment_intents()[0];
    assert_eq!(pi.object.id.as_str(), original["id"].as_str().unwrap());
    assert_eq!(pi.object.status, PaymentIntentStatus::Succeeded);
    assert!(pi.replayed, "Stripe replayed the first answer");
    assert_eq!(
        pi.object.metadata.get("idem_key").map(String::as_str),
        Some(k.as_str())
    );
    assert_eq!(row(&exec, &k).await.state, OperationState::Succeeded);

    // Running the job again answers from the ledger: no request at all.
    let again = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap();
    assert_eq!(again.source, Source::Ledger);
    assert!(again.replayed);
    assert_eq!(again.object.id, pi.object.id);
    assert_eq!(fake.write_requests(), 2);
    assert_eq!(fake.side_effects(), 1);
}

#[tokio::test]
async fn lost_response_across_runs_resends_the_same_key_inside_the_window() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(1));
    let k = key("joes-bikes_orders_2_v1");

    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(2),
    });
    let err = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::OutcomeUnknown {
                resend_safe_until: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains(k.as_str()));
    assert_eq!(row(&exec, &k).await.state, OperationState::Unknown);

    clock.advance(Duration::from_secs(3600));
    let pi = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .expect("resent with the same key; Stripe dedupes");
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.keys_on_wire(), vec![k.to_string(), k.to_string()]);
    assert_eq!(
        pi.object.id.as_str(),
        fake.payment_intents()[0]["id"].as_str().unwrap()
    );
}

async fn two_workers_one_charge(exec_a: Executor, exec_b: Executor) {
    let fake = FakeStripe::start().await;
    let k = key("joes-bikes_orders_3_v1");
    // The first send takes a while, so the second worker runs meanwhile.
    fake.inject(Fault::SlowProcessing {
        delay: Duration::from_millis(250),
    });
    let retry = fast_retry().with_attempt_timeout(Duration::from_secs(2));
    let a = client_with(exec_a.clone(), &fake, retry);
    let b = client_with(exec_b, &fake, retry);
    let (ra, rb) = tokio::join!(
        async { a.payment_intents().create(&k, &charge_params()).await },
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.payment_intents().create(&k, &charge_params()).await
        }
    );
    // Exactly one worker sends; the other sees the live lease.
    let (ok, loser) = match (ra, rb) {
        (Ok(ok), Err(Error::InFlight { key, .. })) => {
            assert_eq!(key, k);
            (ok, &b)
        }
        (Err(Error::InFlight { key, .. }), Ok(ok)) => {
            assert_eq!(key, k);
            (ok, &a)
        }
        other => panic!("one worker sends, the other sees the lease: {other:?}"),
    };
    assert_eq!(fake.side_effects(), 1, "one charge");
    assert_eq!(fake.write_requests(), 1, "the second worker sent nothing");
    // The second worker's retry answers from the ledger.
    let later = loser
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap();
    assert_eq!(later.object.id, ok.object.id);
    assert_eq!(later.source, Source::Ledger);
    assert_eq!(fake.write_requests(), 1);
}

#[tokio::test]
async fn two_workers_on_one_key_give_one_charge_sqlite() {
    let (store, dir) = idem::testing::sqlite_store().await;
    // Worker B opens the same file on its own, like another process.
    let other = idem::ledger::SqliteStore::open(idem::testing::sqlite_path(&dir))
        .await
        .unwrap();
    let clock = clock();
    two_workers_one_charge(executor(store, &clock), executor(other, &clock)).await;
}

#[tokio::test]
async fn two_workers_on_one_key_give_one_charge_postgres() {
    let Some(url) = idem::testing::pg_database_url("stripe two workers").await else {
        return;
    };
    let a = idem::ledger::PgStore::connect(&url).await.unwrap();
    let b = idem::ledger::PgStore::connect(&url).await.unwrap();
    let clock = clock();
    two_workers_one_charge(executor(a, &clock), executor(b, &clock)).await;
}

#[tokio::test]
async fn two_ledgers_racing_at_stripe_get_409_then_the_replay() {
    // Two workers that do not share a ledger: Stripe's own key decides. The
    // second sees 409 idempotency_key_in_use, retries, and gets the replay.
    let fake = FakeStripe::start().await;
    let (sa, _da) = idem::testing::sqlite_store().await;
    let (sb, _db) = idem::testing::sqlite_store().await;
    let clock = clock();
    let retry = fast_retry()
        .with_attempt_timeout(Duration::from_secs(2))
        .with_backoff(Duration::from_millis(300), Duration::from_millis(400))
        .with_max_attempts(4);
    let a = client_with(executor(sa, &clock), &fake, retry);
    let b = client_with(executor(sb, &clock), &fake, retry);
    let k = key("joes-bikes_orders_4_v1");
    fake.inject(Fault::SlowProcessing {
        delay: Duration::from_millis(400),
    });
    let (ra, rb) = tokio::join!(
        async { a.payment_intents().create(&k, &charge_params()).await },
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.payment_intents().create(&k, &charge_params()).await
        }
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.object.id, rb.object.id);
    assert!(rb.replayed);
    assert_eq!(fake.side_effects(), 1, "one charge");
    assert!(fake.write_requests() >= 3, "409 seen and retried");
}

#[tokio::test]
async fn crash_after_sending_then_a_new_process_sends_the_same_key() {
    let fake = FakeStripe::start().await;
    let (store, dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let retry = fast_retry().with_attempt_timeout(Duration::from_secs(10));
    let k = key("joes-bikes_orders_5_v1");

    // Process 1 sends; Stripe charges; the answer is slow; the process dies.
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(8),
    });
    let first = client_with(executor(store, &clock), &fake, retry);
    let task = tokio::spawn({
        let k = k.clone();
        async move { first.payment_intents().create(&k, &charge_params()).await }
    });
    for _ in 0..200 {
        if fake.side_effects() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.side_effects(), 1, "Stripe charged");
    task.abort();
    let _ = task.await;

    // Process 2: a new store and executor on the same file.
    let store2 = idem::ledger::SqliteStore::open(idem::testing::sqlite_path(&dir))
        .await
        .unwrap();
    let exec2 = executor(store2, &clock);
    assert_eq!(row(&exec2, &k).await.state, OperationState::Sending);
    let second = client_with(exec2.clone(), &fake, retry);
    // While the dead worker's lease is live, nobody else sends.
    let err = second
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InFlight { .. }), "{err:?}");
    assert_eq!(fake.write_requests(), 1);

    clock.advance(past_lease(&retry));
    let pi = second
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .expect("resent with the same key after the lease ran out");
    assert_eq!(fake.keys_on_wire(), vec![k.to_string(), k.to_string()]);
    assert_eq!(fake.side_effects(), 1, "one charge");
    assert_eq!(
        pi.object.id.as_str(),
        fake.payment_intents()[0]["id"].as_str().unwrap()
    );
    let op = row(&exec2, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, 2);
}

#[tokio::test]
async fn after_the_key_window_it_reconciles_through_search_instead_of_resending() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(1));
    let k = key("joes-bikes_orders_6_v1");

    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(2),
    });
    let err = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap_err();
    assert!(err.is_unknown());

    // A day later Stripe has pruned the key: a resend would charge again.
    clock.advance(DAY + Duration::from_secs(60));
    fake.expire_keys();
    let pi = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .expect("found by search");
    assert_eq!(pi.source, Source::Reconciled);
    assert_eq!(fake.write_requests(), 1, "no blind resend");
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(
        pi.object.id.as_str(),
        fake.payment_intents()[0]["id"].as_str().unwrap()
    );
    let searches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(searches.len(), 1);
    assert_eq!(searches[0].path(), "/v1/payment_intents/search");
    assert_eq!(
        searches[0].url.query(),
        Some(format!("query=metadata%5B%27idem_key%27%5D%3A%27{k}%27").as_str())
    );
    let op = row(&exec, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, 1, "the search took no claim of the record");

    // From now on the ledger answers.
    let again = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap();
    assert_eq!(again.source, Source::Ledger);
    assert_eq!(again.object.id, pi.object.id);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn not_found_after_the_window_then_operator_bump_sends_v2() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(1));
    let v1 = key("joes-bikes_orders_7_v1");

    // The request times out and nothing happened at Stripe.
    fake.inject(Fault::StallWithoutEffect {
        delay: Duration::from_secs(2),
    });
    assert!(
        stripe
            .payment_intents()
            .create(&v1, &charge_params())
            .await
            .unwrap_err()
            .is_unknown()
    );
    clock.advance(DAY + Duration::from_secs(60));
    let err = stripe
        .payment_intents()
        .create(&v1, &charge_params())
        .await
        .unwrap_err();
    match &err {
        Error::Adapter(AdapterError::NotFound { key, .. }) => assert_eq!(key, &v1),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(err.to_string().contains("search may lag"));
    assert_eq!(fake.write_requests(), 1, "no blind resend");
    assert_eq!(row(&exec, &v1).await.state, OperationState::Unknown);

    // The operator retries: v1 is superseded, v2 goes out.
    let v2 = exec.store().bump(&v1, false, exec.now()).await.unwrap();
    assert_eq!(v2.as_str(), "joes-bikes_orders_7_v2");
    match stripe.payment_intents().create(&v1, &charge_params()).await {
        Err(Error::Superseded { key, by }) => {
            assert_eq!(key, v1);
            assert_eq!(by, v2);
        }
        other => panic!("v1 must stay superseded: {other:?}"),
    }
    let pi = stripe
        .payment_intents()
        .create(&v2, &charge_params())
        .await
        .unwrap();
    assert_eq!(fake.keys_on_wire(), vec![v1.to_string(), v2.to_string()]);
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(
        pi.object.metadata.get("idem_key").map(String::as_str),
        Some(v2.as_str())
    );
    let old = row(&exec, &v1).await;
    assert_eq!(old.state, OperationState::Superseded);
    assert_eq!(old.superseded_by.as_ref(), Some(&v2));
}

#[tokio::test]
async fn operator_bump_on_postgres_keeps_v1_superseded() {
    let Some(store) = idem::testing::pg_store("stripe bump").await else {
        return;
    };
    let fake = FakeStripe::start().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client(exec.clone(), &fake);
    let v1 = key("joes-bikes_orders_8_v1");
    let mut declined = charge_params();
    declined.payment_method = Some("pm_card_chargeDeclined".parse().unwrap());
    let err = stripe
        .payment_intents()
        .create(&v1, &declined)
        .await
        .unwrap_err();
    assert!(
        err.wire_error().is_some_and(|e| e.is_card_error()),
        "{err:?}"
    );
    let v2 = exec.store().bump(&v1, false, exec.now()).await.unwrap();
    stripe
        .payment_intents()
        .create(&v2, &charge_params())
        .await
        .unwrap();
    assert_eq!(fake.keys_on_wire(), vec![v1.to_string(), v2.to_string()]);
    assert_eq!(row(&exec, &v1).await.state, OperationState::Superseded);
    assert_eq!(row(&exec, &v2).await.state, OperationState::Succeeded);
}

#[tokio::test]
async fn key_reused_for_a_different_request_is_a_typed_error_never_retried() {
    let fake = FakeStripe::start().await;
    let clock = clock();
    let k = key("joes-bikes_orders_9_v1");

    // Same ledger: refused locally, nothing sent.
    let (store, _dir) = idem::testing::sqlite_store().await;
    let stripe = client(executor(store, &clock), &fake);
    stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap();
    let mut other = charge_params();
    other.amount = Amount::minor(5000);
    match stripe.payment_intents().create(&k, &other).await {
        Err(Error::KeyReused { error: None, .. }) => {}
        res => panic!("expected a local KeyReused: {res:?}"),
    }
    assert_eq!(fake.write_requests(), 1);

    // Another ledger (say, restored from a backup): Stripe refuses it.
    let (store2, _dir2) = idem::testing::sqlite_store().await;
    let stripe2 = client(executor(store2, &clock), &fake);
    let err = stripe2
        .payment_intents()
        .create(&k, &other)
        .await
        .unwrap_err();
    match &err {
        Error::KeyReused { error: Some(e), .. } => assert!(e.is_key_reuse()),
        other => panic!("expected KeyReused from Stripe: {other:?}"),
    }
    assert!(err.to_string().contains("reused for a different request"));
    assert!(!err.is_retryable());
    assert_eq!(fake.write_requests(), 2, "the 400 is not retried");
    assert_eq!(fake.side_effects(), 1);
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_key() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let stripe = client_with(
        executor(store, &clock),
        &fake,
        fast_retry().with_max_attempts(4),
    );
    let k = key("joes-bikes_customers_10_v1");
    fake.inject(Fault::ServerError);
    fake.inject(Fault::RateLimited {
        retry_after_secs: 0,
    });
    fake.inject(FakeStripe::lock_timeout());
    let params = CreateCustomer {
        email: Some("jenny@example.com".into()),
        ..Default::default()
    };
    let customer = stripe.customers().create(&k, &params).await.unwrap();
    assert_eq!(fake.write_requests(), 4);
    assert_eq!(fake.keys_on_wire(), vec![k.to_string(); 4]);
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(customer.object.email.as_deref(), Some("jenny@example.com"));
    assert!(customer.request_id.is_some());
}

#[tokio::test]
async fn should_retry_false_on_a_5xx_is_not_resent() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(4));
    let k = key("joes-bikes_orders_11_v1");
    fake.inject(FakeStripe::should_not_retry());
    let err = stripe
        .payment_intents()
        .create(&k, &charge_params())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err:?}");
    assert_eq!(fake.write_requests(), 1, "Stripe-Should-Retry: false wins");
    assert_eq!(row(&exec, &k).await.state, OperationState::Unknown);
}

#[tokio::test]
async fn card_decline_is_recorded_and_answered_from_the_ledger() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client(exec.clone(), &fake);
    let k = key("joes-bikes_orders_12_v1");
    let mut params = charge_params();
    params.payment_method = Some("pm_card_chargeDeclined".parse().unwrap());
    let err = stripe
        .payment_intents()
        .create(&k, &params)
        .await
        .unwrap_err();
    let Error::Rejected {
        error, from_ledger, ..
    } = &err
    else {
        panic!("expected Api: {err:?}")
    };
    assert!(!from_ledger);
    assert_eq!(error.code.as_deref(), Some("card_declined"));
    assert_eq!(error.decline_code.as_deref(), Some("generic_decline"));
    assert!(error.request_id.is_some());
    assert!(!err.to_string().contains(SECRET));
    let again = stripe
        .payment_intents()
        .create(&k, &params)
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        Error::Rejected {
            from_ledger: true,
            ..
        }
    ));
    assert_eq!(fake.write_requests(), 1);
    assert_eq!(row(&exec, &k).await.state, OperationState::Failed);
}

#[tokio::test]
async fn refund_after_the_window_is_reconciled_by_listing_the_intents_refunds() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(1));
    let pi = stripe
        .payment_intents()
        .create(&key("joes-bikes_orders_13_v1"), &charge_params())
        .await
        .unwrap();
    let k = key("joes-bikes_refunds_13_v1");
    let params = CreateRefund::payment_intent(pi.object.id.clone());
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(2),
    });
    assert!(
        stripe
            .refunds()
            .create(&k, &params)
            .await
            .unwrap_err()
            .is_unknown()
    );
    clock.advance(DAY + Duration::from_secs(60));
    fake.expire_keys();
    let refund = stripe.refunds().create(&k, &params).await.unwrap();
    assert_eq!(refund.source, Source::Reconciled);
    assert_eq!(fake.refunds().len(), 1);
    assert_eq!(fake.write_requests(), 2, "payment + one refund attempt");
    let list = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert_eq!(list.path(), "/v1/refunds");
    assert!(
        list.url
            .query()
            .unwrap()
            .contains(&format!("payment_intent={}", pi.object.id))
    );
    assert_eq!(refund.object.amount, Amount::minor(1099));
}

#[tokio::test]
async fn capture_after_the_window_that_did_not_happen_is_sent_again() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(1));
    let mut params = charge_params();
    params.capture_method = Some(CaptureMethod::Manual);
    let pi = stripe
        .payment_intents()
        .create(&key("joes-bikes_orders_14_v1"), &params)
        .await
        .unwrap();
    assert_eq!(pi.object.status, PaymentIntentStatus::RequiresCapture);
    let k = key("joes-bikes_captures_14_v1");
    fake.inject(Fault::StallWithoutEffect {
        delay: Duration::from_secs(2),
    });
    let capture = CapturePaymentIntent::default();
    assert!(
        stripe
            .payment_intents()
            .capture(&k, &pi.object.id, &capture)
            .await
            .unwrap_err()
            .is_unknown()
    );
    clock.advance(DAY + Duration::from_secs(60));
    // Reading the intent proves the capture did not happen: it is resent.
    let captured = stripe
        .payment_intents()
        .capture(&k, &pi.object.id, &capture)
        .await
        .unwrap();
    assert_eq!(captured.object.status, PaymentIntentStatus::Succeeded);
    assert_eq!(fake.side_effects(), 2, "create + one capture");
    assert_eq!(fake.write_requests(), 3);
    assert_eq!(
        row(&exec, &k).await.claims,
        2,
        "the first capture and its resend; reading the intent claimed nothing"
    );

    // And reconcile() now answers from the ledger.
    match stripe.reconcile(&k).await.unwrap() {
        Reconciliation::Found(obj) => match *obj {
            StripeObject::PaymentIntent(found) => assert_eq!(found.id, pi.object.id),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reconcile_reports_what_it_cannot_know() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let exec = executor(store, &clock);
    let stripe = client_with(exec.clone(), &fake, fast_retry().with_max_attempts(1));
    assert!(matches!(
        stripe.reconcile(&key("joes-bikes_orders_15_v1")).await,
        Err(Error::Store(idem::StoreError::NotFound { .. }))
    ));

    // Created, but the search index lags: not found, the record stays unknown.
    let k = key("joes-bikes_customers_15_v1");
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(2),
    });
    assert!(
        stripe
            .customers()
            .create(&k, &CreateCustomer::default())
            .await
            .is_err()
    );
    fake.set_search_lag(true);
    let before = row(&exec, &k).await;
    assert_eq!(before.state, OperationState::Unknown);
    clock.advance(Duration::from_secs(5));
    assert!(matches!(
        stripe.reconcile(&k).await.unwrap(),
        Reconciliation::NotFound { .. }
    ));
    let after = row(&exec, &k).await;
    assert_eq!(after.state, OperationState::Unknown);
    assert_eq!(after.claims, before.claims, "a lookup claims nothing");
    assert_eq!(
        after.updated_at, before.updated_at,
        "nor touches the record"
    );
    assert_eq!(after.note, before.note);
    fake.set_search_lag(false);
    match stripe.reconcile(&k).await.unwrap() {
        Reconciliation::Found(obj) => match *obj {
            StripeObject::Customer(c) => assert_eq!(c.metadata["idem_key"], k.as_str()),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let op = row(&exec, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, before.claims);
    assert_eq!(fake.side_effects(), 1);
}

#[tokio::test]
async fn reserved_metadata_key_is_refused_before_anything_is_sent() {
    let fake = FakeStripe::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let stripe = client(executor(store, &clock), &fake);
    let mut params = charge_params();
    params.metadata.insert("idem_key".into(), "mine".into());
    let err = stripe
        .payment_intents()
        .create(&key("joes-bikes_orders_16_v1"), &params)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }));
    assert!(fake.requests().is_empty());
}
