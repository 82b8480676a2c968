//! Reconciliation of `unknown` sends: status callbacks and lookups, against
//! the fake Twilio.

mod common;

use std::time::Duration;

use common::*;
use idem::OperationState;
use idem::executor::Source;
use idem_testkit::{FakeTwilio, Fault};
use idem_twilio::{
    AdapterError, CALLBACK_KEY_PARAM, CallbackOutcome, CreateMessage, Error, MessageStatus,
    OPERATION, Reconciled, TwilioClient, TwilioError, reconcile_from_callback,
};

async fn unknown_send(fake: &FakeTwilio, twilio: &TwilioClient, k: &idem::IdempotencyKey) {
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(3),
    });
    let err = twilio.messages().create(k, &msg()).await.unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(state(twilio, k).await, OperationState::Unknown);
}

#[tokio::test]
async fn status_callback_settles_an_unknown_send() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_20_v1");
    unknown_send(&fake, &twilio, &k).await;

    let queued = fake.messages();
    assert_eq!(queued.len(), 1);
    let cb_url = queued[0].status_callback.clone().unwrap();
    assert!(!cb_url.contains('_'), "{cb_url}");

    // Twilio reports the message as sent: the callback URL carries our key.
    let params = fake.status_callback(&queued[0].sid, "sent").unwrap();
    assert!(
        params
            .iter()
            .any(|(k2, v)| k2 == CALLBACK_KEY_PARAM && v == k.as_str())
    );
    let store = twilio.executor().store().clone();
    let outcome = reconcile_from_callback(store.as_ref(), params.clone(), twilio.executor().now())
        .await
        .unwrap();
    match &outcome {
        CallbackOutcome::Resolved { key, sid, status } => {
            assert_eq!(key, &k);
            assert_eq!(sid.as_str(), queued[0].sid);
            assert_eq!(status, &MessageStatus::Sent);
        }
        other => panic!("expected Resolved, got {other:?}"),
    }
    assert_eq!(state(&twilio, &k).await, OperationState::Succeeded);

    // The retried job now answers from the ledger with Twilio's SID.
    let sent = twilio.messages().create(&k, &msg()).await.unwrap();
    assert!(sent.from_ledger());
    assert_eq!(sent.message.sid.as_str(), queued[0].sid);
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.write_requests(), 1);

    // A later delivery update for the same message changes nothing.
    let params = fake.status_callback(&queued[0].sid, "delivered").unwrap();
    let again = twilio.handle_status_callback(params).await.unwrap();
    assert!(
        matches!(again, CallbackOutcome::AlreadySucceeded { .. }),
        "{again:?}"
    );
}

#[tokio::test]
async fn callback_reporting_another_message_for_a_settled_key_is_a_duplicate() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_21_v1");
    let sent = twilio.messages().create(&k, &msg()).await.unwrap();
    let mut params = fake
        .status_callback(sent.message.sid.as_str(), "delivered")
        .unwrap();
    for (name, value) in &mut params {
        if name == "MessageSid" {
            *value = "SM0000000000000000000000000000dead".into();
        }
    }
    let outcome = twilio.handle_status_callback(params).await.unwrap();
    assert!(
        matches!(outcome, CallbackOutcome::Duplicate { .. }),
        "{outcome:?}"
    );
    assert_eq!(state(&twilio, &k).await, OperationState::Succeeded);
}

#[tokio::test]
async fn callback_while_the_sender_holds_the_lease_changes_nothing() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_22_v1");
    // A worker has claimed the key and is sending.
    let claim = twilio
        .executor()
        .begin(
            twilio.provider(),
            &k,
            OPERATION,
            idem::Fingerprint::from_stored("v1:test"),
        )
        .await
        .unwrap();
    let params = vec![
        (CALLBACK_KEY_PARAM.to_owned(), k.to_string()),
        (
            "MessageSid".to_owned(),
            "SM0123456789abcdef0123456789abcdef".to_owned(),
        ),
        ("MessageStatus".to_owned(), "sent".to_owned()),
        ("AccountSid".to_owned(), ACCOUNT.to_owned()),
    ];
    let outcome = twilio.handle_status_callback(params).await.unwrap();
    assert!(
        matches!(outcome, CallbackOutcome::InFlight { .. }),
        "{outcome:?}"
    );
    assert_eq!(state(&twilio, &k).await, OperationState::Sending);
    drop(claim);
}

#[tokio::test]
async fn callback_for_another_account_or_without_key() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_23_v1");
    unknown_send(&fake, &twilio, &k).await;
    let sid = fake.messages()[0].sid.clone();
    let mut params = fake.status_callback(&sid, "sent").unwrap();
    for (name, value) in &mut params {
        if name == "AccountSid" {
            *value = "AC99999999999999999999999999999999".into();
        }
    }
    let err = twilio.handle_status_callback(params).await.unwrap_err();
    assert!(
        matches!(err, Error::Adapter(AdapterError::Callback(_))),
        "{err:?}"
    );
    assert_eq!(state(&twilio, &k).await, OperationState::Unknown);

    let no_key = vec![("MessageSid", sid.as_str()), ("MessageStatus", "sent")];
    let outcome = twilio.handle_status_callback(no_key).await.unwrap();
    assert_eq!(outcome, CallbackOutcome::NotOurs);
}

#[tokio::test]
async fn callback_after_a_bump_warns_of_a_possible_second_text() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let v1 = key("joes-bikes_sms_24_v1");
    unknown_send(&fake, &twilio, &v1).await;
    let store = twilio.executor().store().clone();
    let v2 = store
        .bump(&v1, false, twilio.executor().now())
        .await
        .unwrap();
    let sid = fake.messages()[0].sid.clone();
    let params = fake.status_callback(&sid, "delivered").unwrap();
    let outcome = twilio.handle_status_callback(params).await.unwrap();
    match outcome {
        CallbackOutcome::AfterBump { key, by, .. } => {
            assert_eq!(key, v1);
            assert_eq!(by, Some(v2));
        }
        other => panic!("expected AfterBump, got {other:?}"),
    }
}

#[tokio::test]
async fn lookup_finds_the_message_whose_answer_was_lost() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_25_v1");
    unknown_send(&fake, &twilio, &k).await;
    let sid = fake.messages()[0].sid.clone();

    let found = twilio.messages().reconcile(&k, &msg()).await.unwrap();
    match &found {
        Reconciled::Found(sent) => {
            assert_eq!(sent.message.sid.as_str(), sid);
            assert_eq!(sent.source, Source::Reconciled);
        }
        other => panic!("expected Found, got {other:?}"),
    }
    let op = twilio.executor().store().get(&k).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(
        op.claims, 1,
        "the lookup claimed nothing; only the verdict changed the row"
    );
    let again = twilio.messages().create(&k, &msg()).await.unwrap();
    assert!(again.from_ledger());
    assert_eq!(again.message.sid.as_str(), sid);
    assert_eq!(fake.write_requests(), 1);
    assert_eq!(fake.side_effects(), 1);
}

#[tokio::test]
async fn lookup_with_two_identical_texts_settles_nothing() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_26_v1");
    let body = msg().body.unwrap();
    unknown_send(&fake, &twilio, &k).await;
    // Someone else sent the same text to the same number just now.
    fake.seed_message(TO, FROM, &body);

    let before = twilio.executor().store().get(&k).await.unwrap().unwrap();
    let outcome = twilio.messages().reconcile(&k, &msg()).await.unwrap();
    match outcome {
        Reconciled::Ambiguous { candidates, .. } => assert_eq!(candidates.len(), 2),
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    // No verdict: the row is exactly as it was (no claim, no new note).
    let after = twilio.executor().store().get(&k).await.unwrap().unwrap();
    assert_eq!(after, before);
    assert_eq!(after.state, OperationState::Unknown);
    let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
    assert!(err.is_unknown());
    assert_eq!(fake.write_requests(), 1);
}

#[tokio::test]
async fn lookup_that_finds_nothing_leaves_unknown_then_bump_sends_once() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let v1 = key("joes-bikes_sms_27_v1");
    // A 500 that queued nothing: the client cannot know that.
    fake.inject(Fault::ServerError);
    assert!(
        twilio
            .messages()
            .create(&v1, &msg())
            .await
            .unwrap_err()
            .is_unknown()
    );
    // A message to the same number with another text does not match.
    fake.seed_message(TO, FROM, "Something else entirely");

    let before = twilio.executor().store().get(&v1).await.unwrap().unwrap();
    let outcome = twilio.messages().reconcile(&v1, &msg()).await.unwrap();
    let Reconciled::NotFound {
        window_start,
        window_end,
        ..
    } = outcome
    else {
        panic!("expected NotFound, got {outcome:?}");
    };
    assert_eq!(state(&twilio, &v1).await, OperationState::Unknown);
    // Looking again uses the same window and still settles nothing.
    let outcome = twilio.messages().reconcile(&v1, &msg()).await.unwrap();
    assert!(
        matches!(outcome, Reconciled::NotFound { window_start: s, window_end: e, .. }
            if s == window_start && e == window_end),
        "{outcome:?}"
    );
    // Neither lookup touched the row: no claim, no note, no checkpoint.
    let op = twilio.executor().store().get(&v1).await.unwrap().unwrap();
    assert_eq!(op, before);
    assert_eq!(op.claims, 1);

    // The operator accepts the risk and bumps: exactly one message goes out.
    let store = twilio.executor().store().clone();
    let v2 = store
        .bump(&v1, false, twilio.executor().now())
        .await
        .unwrap();
    twilio.messages().create(&v2, &msg()).await.unwrap();
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.write_requests(), 2);
}

#[tokio::test]
async fn lookup_with_a_different_message_is_refused() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_28_v1");
    unknown_send(&fake, &twilio, &k).await;
    let other = CreateMessage::from_number(TO, FROM, "not what was sent");
    let err = twilio.messages().reconcile(&k, &other).await.unwrap_err();
    assert!(matches!(&err, Error::KeyReused { .. }), "{err:?}");
    assert_eq!(state(&twilio, &k).await, OperationState::Unknown);
}

#[tokio::test]
async fn lookup_of_a_pending_or_failed_row_is_refused() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_29_v1");
    fake.inject(FakeTwilio::invalid_to());
    let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
    assert_eq!(err.wire_error().and_then(TwilioError::code), Some(21211));
    let err = twilio.messages().reconcile(&k, &msg()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rejected {
                from_ledger: true,
                ..
            }
        ),
        "{err:?}"
    );
}
