//! Issue 13, adapter side: a message Twilio accepted but has not sent yet
//! (no `date_sent`) is found by reconciliation, and reconciliation from the
//! key alone ([`idem::reconcile::Reconcile`]) works from what the ledger row
//! records.

mod common;

use std::time::Duration;

use common::*;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem::{Executor, OperationState};
use idem_testkit::{FakeTwilio, Fault};
use idem_twilio::{CreateMessage, Reconciled, TwilioClient};

async fn lose_answer(
    fake: &FakeTwilio,
    twilio: &TwilioClient,
    k: &idem::IdempotencyKey,
    m: &CreateMessage,
) {
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(3),
    });
    let err = twilio.messages().create(k, m).await.unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(state(twilio, k).await, OperationState::Unknown);
}

async fn a_queued_message_whose_answer_was_lost_is_found(exec: Executor) {
    let fake = FakeTwilio::start().await;
    let twilio = client_on(exec, &fake.base_url(), fast_retry());
    let k = key("joes-bikes_sms_61_v1");
    lose_answer(&fake, &twilio, &k, &msg()).await;
    // Twilio queued it and has not sent it yet: it has no sent date.
    let queued = fake.messages();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].status, "queued");
    assert_eq!(queued[0].sent_at, None);

    match twilio.messages().reconcile(&k, &msg()).await.unwrap() {
        Reconciled::Found(sent) => assert_eq!(sent.message.sid.as_str(), queued[0].sid),
        other => panic!("expected Found, got {other:?}"),
    }
    assert_eq!(state(&twilio, &k).await, OperationState::Succeeded);
    assert_eq!(fake.side_effects(), 1);
    // The lookup did not lean on the sent date.
    let list = fake.reads();
    assert!(!list.is_empty());
    assert!(
        list.iter()
            .all(|r| !r.url.query().unwrap_or("").contains("DateSent")),
        "{list:?}"
    );
}

#[tokio::test]
async fn a_queued_message_whose_answer_was_lost_is_found_sqlite() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    a_queued_message_whose_answer_was_lost_is_found(Executor::builder(store).build()).await;
}

#[tokio::test]
async fn a_queued_message_whose_answer_was_lost_is_found_postgres() {
    let Some(store) = idem::testing::pg_store("twilio queued lookup").await else {
        return;
    };
    a_queued_message_whose_answer_was_lost_is_found(Executor::builder(store).build()).await;
}

#[tokio::test]
async fn an_accepted_service_message_whose_answer_was_lost_is_found() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let fake = FakeTwilio::start().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_62_v1");
    let m = CreateMessage::via_service(TO, "MG00000000000000000000000000000001", "Ready");
    lose_answer(&fake, &twilio, &k, &m).await;
    assert_eq!(fake.messages()[0].status, "accepted");
    assert!(matches!(
        twilio.messages().reconcile(&k, &m).await.unwrap(),
        Reconciled::Found(_)
    ));
}

#[tokio::test]
async fn the_fake_dates_a_message_only_once_sent() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let fake = FakeTwilio::start().await;
    let twilio = client(store, &fake.base_url());
    let sent = twilio
        .messages()
        .create(&key("joes-bikes_sms_63_v1"), &msg())
        .await
        .unwrap();
    assert_eq!(sent.message.date_sent, None, "queued: no date_sent");
    let sid = sent.message.sid.as_str().to_owned();
    fake.status_callback(&sid, "sent").unwrap();
    assert!(fake.messages()[0].sent_at.is_some());
}

// ----- Reconcile (from the key alone) ------------------------------------

async fn reconcile_trait_finds_a_lost_send_from_the_key_alone(exec: Executor) {
    let fake = FakeTwilio::start().await;
    let twilio = client_on(exec, &fake.base_url(), fast_retry());
    assert_eq!(Reconcile::provider(&twilio), "twilio");
    let k = key("joes-bikes_sms_64_v1");
    lose_answer(&fake, &twilio, &k, &msg()).await;
    let sid = fake.messages()[0].sid.clone();
    match Reconcile::reconcile(&twilio, &k).await.unwrap() {
        ReconcileVerdict::Applied { provider_id, .. } => {
            assert_eq!(provider_id.as_deref(), Some(sid.as_str()));
        }
        other => panic!("expected Applied, got {other:?}"),
    }
    assert_eq!(state(&twilio, &k).await, OperationState::Succeeded);
    // Settled: the next run answers from the ledger, nothing is resent.
    assert!(
        twilio
            .messages()
            .create(&k, &msg())
            .await
            .unwrap()
            .from_ledger()
    );
    assert_eq!(fake.write_requests(), 1);
}

#[tokio::test]
async fn reconcile_trait_finds_a_lost_send_from_the_key_alone_sqlite() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    reconcile_trait_finds_a_lost_send_from_the_key_alone(Executor::builder(store).build()).await;
}

#[tokio::test]
async fn reconcile_trait_finds_a_lost_send_from_the_key_alone_postgres() {
    let Some(store) = idem::testing::pg_store("twilio reconcile trait").await else {
        return;
    };
    reconcile_trait_finds_a_lost_send_from_the_key_alone(Executor::builder(store).build()).await;
}

#[tokio::test]
async fn reconcile_trait_never_says_not_applied() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let fake = FakeTwilio::start().await;
    let twilio = client(store, &fake.base_url());
    // Lost before Twilio queued anything: nothing to find, but that is not
    // proof, so the row stays unknown.
    let k = key("joes-bikes_sms_65_v1");
    fake.inject(Fault::ServerError);
    let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
    assert!(err.is_unknown(), "{err}");
    let before = twilio.executor().store().get(&k).await.unwrap().unwrap();
    assert!(matches!(
        Reconcile::reconcile(&twilio, &k).await.unwrap(),
        ReconcileVerdict::Undetermined { .. }
    ));
    let after = twilio.executor().store().get(&k).await.unwrap().unwrap();
    assert_eq!(after.state, OperationState::Unknown);
    assert_eq!(after.claims, before.claims);
    assert_eq!(fake.write_requests(), 1);

    assert!(matches!(
        Reconcile::reconcile(&twilio, &key("joes-bikes_sms_66_v1")).await,
        Err(ReconcileError::NotReconcilable { .. })
    ));
}
