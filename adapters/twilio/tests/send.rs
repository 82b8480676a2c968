//! Sends: the done-when cases, against the mock server (`.expect(n)`) and
//! the fake Twilio (side effects counted by the fake).

mod common;

use std::time::{Duration, Instant};

use common::*;
use idem::executor::{RetrySettings, Source};
use idem::ledger::{PgStore, SqliteStore};
use idem::{Executor, OperationState};
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{basic_auth, method, path};
use idem_testkit::mock::{Mock, MockServer};
use idem_testkit::{FakeTwilio, Fault};
use idem_twilio::{CreateMessage, Credentials, Error, Sender, TwilioClient, TwilioError};

fn created_response(sid: &str) -> Reply {
    Reply::new(201).set_body_json(created(sid))
}

#[tokio::test]
async fn ledger_succeeded_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(created_response(SID1))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_sms_1_v1");

    let first = twilio.messages().create(&k, &msg()).await.unwrap();
    assert_eq!(first.message.sid.as_str(), SID1);
    assert!(matches!(first.source, Source::Wire { attempts: 1 }));
    assert_eq!(state(&twilio, &k).await, OperationState::Succeeded);

    // The job is retried (twice): answered from the ledger, nothing sent.
    for _ in 0..2 {
        let again = twilio.messages().create(&k, &msg()).await.unwrap();
        assert!(again.from_ledger());
        assert_eq!(again.message.sid.as_str(), SID1);
    }
}

#[tokio::test]
async fn lost_response_then_retry_sends_one_message_and_stays_unknown() {
    let server = MockServer::start().await;
    // Twilio queues the message, but its answer comes too late.
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(created_response(SID1).set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_sms_2_v1");

    let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(err.key(), Some(&k));
    let shown = err.to_string();
    assert!(shown.contains("joes-bikes_sms_2_v1"), "{shown}");
    assert!(shown.contains("bump"), "{shown}");

    // The retried job: not resent, still unknown, same key.
    let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(err.key(), Some(&k));
    assert!(!err.is_retryable());
    assert_eq!(state(&twilio, &k).await, OperationState::Unknown);
}

#[tokio::test]
async fn lost_response_against_the_fake_queues_exactly_one_message() {
    let fake = FakeTwilio::start().await;
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_secs(3),
    });
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_3_v1");
    for _ in 0..3 {
        let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
        assert!(err.is_unknown(), "{err}");
    }
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.write_requests(), 1);
    assert_eq!(state(&twilio, &k).await, OperationState::Unknown);
}

#[tokio::test]
async fn connection_reset_before_or_after_queueing_ends_unknown_and_is_not_resent() {
    // Twilio takes no key: a reset connection is an unknown outcome whether
    // or not the message was queued, and it is never sent again.
    for (fault, queued) in [(Fault::ResetBeforeEffect, 0), (Fault::ResetAfterEffect, 1)] {
        let fake = FakeTwilio::start().await;
        fake.inject(fault.clone());
        let (store, _dir) = idem::testing::sqlite_store().await;
        let twilio = client(store, &fake.base_url());
        let k = key("joes-bikes_sms_reset_v1");
        for _ in 0..2 {
            let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
            assert!(err.is_unknown(), "{fault:?}: {err}");
        }
        assert_eq!(fake.side_effects(), queued, "{fault:?}");
        assert_eq!(fake.write_requests(), 1, "{fault:?}: sent once");
        assert_eq!(state(&twilio, &k).await, OperationState::Unknown);
    }
}

#[tokio::test]
async fn server_error_ends_unknown_and_is_not_resent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(Reply::new(500).set_body_json(serde_json::json!({
            "code": 20500, "message": "Internal Server Error", "status": 500
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_sms_4_v1");
    let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
    assert!(err.is_unknown(), "{err}");
    let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(state(&twilio, &k).await, OperationState::Unknown);
}

/// The first attempt goes to a port nobody listens on (connection refused:
/// provably never sent); a server starts on that port shortly after, and
/// the retry inside the same claim reaches it. What this proves: a connect
/// failure is retried with the same key and the message is sent once. It
/// relies on no other process taking the freed port in those 300 ms.
#[tokio::test]
async fn connect_refused_is_retried_and_sends_once() {
    let addr = refused_port();
    let retry = RetrySettings::default()
        .with_max_attempts(30)
        .with_backoff(Duration::from_millis(50), Duration::from_millis(100))
        .with_attempt_timeout(Duration::from_secs(2))
        .with_total_timeout(Duration::from_secs(10));
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client_on(
        Executor::builder(store).build(),
        &format!("http://{addr}"),
        retry,
    );
    let server_task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let server = MockServer::start_on(listener).await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(created_response(SID1))
            .expect(1)
            .mount(&server)
            .await;
        server
    });
    let k = key("joes-bikes_sms_5_v1");
    let sent = twilio.messages().create(&k, &msg()).await.unwrap();
    let server = server_task.await.unwrap();
    match sent.source {
        Source::Wire { attempts } => assert!(
            attempts >= 2,
            "the refused attempt should have been retried, saw {attempts} attempt(s)"
        ),
        other => panic!("expected a wire answer, got {other:?}"),
    }
    assert_eq!(state(&twilio, &k).await, OperationState::Succeeded);
    server.verify().await;
}

#[tokio::test]
async fn rate_limit_429_waits_out_retry_after_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(
            Reply::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(serde_json::json!({
                    "code": 20429,
                    "message": "Too Many Requests",
                    "more_info": "https://www.twilio.com/docs/errors/20429",
                    "status": 429
                })),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(created_response(SID1))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_sms_6_v1");
    let started = Instant::now();
    let sent = twilio.messages().create(&k, &msg()).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured (took {waited:?})"
    );
    assert_eq!(sent.source, Source::Wire { attempts: 2 });
    assert_eq!(sent.message.sid.as_str(), SID1);
    assert_eq!(state(&twilio, &k).await, OperationState::Succeeded);
}

#[tokio::test]
async fn rate_limit_against_the_fake_queues_one_message() {
    let fake = FakeTwilio::start().await;
    fake.inject(Fault::RateLimited {
        retry_after_secs: 0,
    });
    fake.inject(Fault::RateLimited {
        retry_after_secs: 0,
    });
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let sent = twilio
        .messages()
        .create(&key("joes-bikes_sms_7_v1"), &msg())
        .await
        .unwrap();
    assert_eq!(sent.source, Source::Wire { attempts: 3 });
    assert_eq!(fake.write_requests(), 3);
    assert_eq!(fake.side_effects(), 1);
}

#[tokio::test]
async fn rate_limit_beyond_the_budget_is_not_sent_and_stays_pending() {
    let fake = FakeTwilio::start().await;
    // Retry-After longer than the client honours: the claim ends, nothing queued.
    fake.inject(Fault::RateLimited {
        retry_after_secs: 60,
    });
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_8_v1");
    let err = twilio.messages().create(&k, &msg()).await.unwrap_err();
    match &err {
        Error::NotSent {
            retry_after, error, ..
        } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(60)));
            assert_eq!(error.as_ref().and_then(|t| t.code()), Some(20429));
        }
        other => panic!("expected NotSent, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(state(&twilio, &k).await, OperationState::Pending);
    // A later run sends it with the same key.
    let sent = twilio.messages().create(&k, &msg()).await.unwrap();
    assert!(!sent.from_ledger());
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.write_requests(), 2);
}

#[tokio::test]
async fn invalid_to_400_fails_with_twilios_code_and_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(Reply::new(400).set_body_json(serde_json::json!({
            "code": 21211,
            "message": "The 'To' number +1555 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_sms_9_v1");
    let bad = CreateMessage::from_number("+1555", FROM, "hello");
    let err = twilio.messages().create(&k, &bad).await.unwrap_err();
    match &err {
        Error::Rejected {
            error, from_ledger, ..
        } => {
            assert_eq!(error.code(), Some(21211));
            assert_eq!(error.status(), 400);
            assert!(!from_ledger);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(err.wire_error().and_then(TwilioError::code), Some(21211));
    assert!(!err.is_retryable());
    assert!(
        !err.to_string().contains("+1555"),
        "Display leaks the number"
    );
    assert_eq!(state(&twilio, &k).await, OperationState::Failed);

    // The job runs again: the stored rejection comes back, nothing is sent.
    let err = twilio.messages().create(&k, &bad).await.unwrap_err();
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
    assert_eq!(err.wire_error().and_then(TwilioError::code), Some(21211));
}

#[tokio::test]
async fn operator_bump_sends_exactly_one_more_message_with_the_v2_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(created_response(SID1).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(created_response(SID2))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let v1 = key("joes-bikes_service_ticket_messages_01HZX3_v1");

    assert!(
        twilio
            .messages()
            .create(&v1, &msg())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert!(
        twilio
            .messages()
            .create(&v1, &msg())
            .await
            .unwrap_err()
            .is_unknown()
    );

    // The operator decides the customer did not get it and retries.
    let store = twilio.executor().store().clone();
    let v2 = store
        .bump(&v1, false, twilio.executor().now())
        .await
        .unwrap();
    assert_eq!(v2.as_str(), "joes-bikes_service_ticket_messages_01HZX3_v2");

    // The old job can no longer send under v1.
    let err = twilio.messages().create(&v1, &msg()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Superseded { by, .. } if by == &v2),
        "{err:?}"
    );

    let sent = twilio.messages().create(&v2, &msg()).await.unwrap();
    assert_eq!(sent.message.sid.as_str(), SID2);
    assert!(!sent.from_ledger());
    // Retried again: from the ledger.
    assert!(
        twilio
            .messages()
            .create(&v2, &msg())
            .await
            .unwrap()
            .from_ledger()
    );

    let requests = server.received_requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(callback_key(&requests[0]).as_deref(), Some(v1.as_str()));
    assert_eq!(callback_key(&requests[1]).as_deref(), Some(v2.as_str()));
    assert_eq!(state(&twilio, &v1).await, OperationState::Superseded);
    assert_eq!(state(&twilio, &v2).await, OperationState::Succeeded);
}

async fn two_workers_send_one_message(a: Executor, b: Executor, name: &str) {
    let server = MockServer::start().await;
    // Slow enough that the two workers overlap.
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(created_response(SID1).set_delay(Duration::from_millis(400)))
        .expect(1)
        .mount(&server)
        .await;
    let retry = fast_retry().with_attempt_timeout(Duration::from_secs(3));
    let worker_a = client_on(a, &server.uri(), retry);
    let worker_b = client_on(b, &server.uri(), retry);
    let k = key(&format!("joes-bikes_sms_{name}_v1"));
    let m = msg();
    let (ra, rb) = tokio::join!(
        worker_a.messages().create(&k, &m),
        worker_b.messages().create(&k, &m)
    );
    let mut wire = 0;
    for r in [ra, rb] {
        match r {
            Ok(sent) if sent.from_ledger() => {}
            Ok(sent) => {
                wire += 1;
                assert_eq!(sent.message.sid.as_str(), SID1);
            }
            Err(Error::InFlight { key, .. }) => assert_eq!(key, k),
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(wire, 1, "exactly one worker sends");
    // Both workers' next run answers from the ledger.
    assert!(
        worker_a
            .messages()
            .create(&k, &m)
            .await
            .unwrap()
            .from_ledger()
    );
    assert!(
        worker_b
            .messages()
            .create(&k, &m)
            .await
            .unwrap()
            .from_ledger()
    );
}

#[tokio::test]
async fn two_concurrent_workers_send_one_message_sqlite() {
    let (store_a, dir) = idem::testing::sqlite_store().await;
    let store_b = SqliteStore::open(idem::testing::sqlite_path(&dir))
        .await
        .unwrap();
    two_workers_send_one_message(
        Executor::builder(store_a).build(),
        Executor::builder(store_b).build(),
        "sqlite",
    )
    .await;
}

#[tokio::test]
async fn two_concurrent_workers_send_one_message_postgres() {
    let Some(url) = idem::testing::pg_database_url("twilio two workers").await else {
        return;
    };
    let store_a = PgStore::connect(&url).await.unwrap();
    let store_b = PgStore::connect(&url).await.unwrap();
    two_workers_send_one_message(
        Executor::builder(store_a).build(),
        Executor::builder(store_b).build(),
        "postgres",
    )
    .await;
}

#[tokio::test]
async fn sends_twilios_form_fields_with_api_key_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .and(basic_auth("SK0123", "key-secret"))
        .respond_with(created_response(SID1))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = TwilioClient::builder(
        Executor::builder(store).build(),
        Credentials::api_key(ACCOUNT, "SK0123", "key-secret"),
    )
    .base_url(server.uri())
    .retry(fast_retry())
    .build()
    .unwrap();
    let m = CreateMessage::new(
        TO,
        Sender::FromService {
            from: FROM.into(),
            service: "MG0123456789abcdef0123456789abcdef".into(),
        },
        Some("Look".into()),
    )
    .media_url("https://example.com/a.jpg".parse().unwrap())
    .media_url("https://example.com/b.png".parse().unwrap())
    .status_callback("https://hooks.example.com/cb?shop=joes".parse().unwrap());
    let k = key("joes-bikes_sms_10_v1");
    twilio.messages().create(&k, &m).await.unwrap();

    let requests = server.received_requests().await;
    let fields = requests[0].form();
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "To",
            "From",
            "MessagingServiceSid",
            "Body",
            "MediaUrl",
            "MediaUrl",
            "StatusCallback"
        ]
    );
    assert_eq!(fields[4].1, "https://example.com/a.jpg");
    assert_eq!(fields[5].1, "https://example.com/b.png");
    let cb = &fields[6].1;
    assert!(!cb.contains('_'), "underscores in the callback URL: {cb}");
    assert!(
        cb.starts_with("https://hooks.example.com/cb?shop=joes&idemkey="),
        "{cb}"
    );
    assert_eq!(callback_key(&requests[0]).as_deref(), Some(k.as_str()));
    // Credentials travel only in the Authorization header.
    assert!(!requests[0].url.as_str().contains("key-secret"));
    assert!(!String::from_utf8_lossy(&requests[0].body).contains("key-secret"));
}

#[tokio::test]
async fn no_callback_base_means_no_status_callback_field() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = TwilioClient::builder(
        Executor::builder(store).build(),
        Credentials::auth_token(ACCOUNT, "t"),
    )
    .base_url(fake.base_url())
    .retry(fast_retry())
    .build()
    .unwrap();
    twilio
        .messages()
        .create(&key("joes-bikes_sms_11_v1"), &msg())
        .await
        .unwrap();
    assert_eq!(fake.messages()[0].status_callback, None);
}

#[tokio::test]
async fn same_key_for_a_different_message_is_refused_before_sending() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_12_v1");
    twilio.messages().create(&k, &msg()).await.unwrap();
    let other = CreateMessage::from_number(TO, FROM, "A different text");
    let err = twilio.messages().create(&k, &other).await.unwrap_err();
    assert!(matches!(&err, Error::KeyReused { .. }), "{err:?}");
    assert_eq!(fake.write_requests(), 1);
}

#[tokio::test]
async fn invalid_message_is_refused_before_anything_is_recorded() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_13_v1");
    let empty = CreateMessage::new(TO, Sender::From(FROM.into()), None);
    let err = twilio.messages().create(&k, &empty).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    assert!(twilio.executor().store().get(&k).await.unwrap().is_none());
    assert_eq!(fake.write_requests(), 0);
}

#[tokio::test]
async fn fake_rejects_an_invalid_to_like_twilio() {
    let fake = FakeTwilio::start().await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &fake.base_url());
    let k = key("joes-bikes_sms_14_v1");
    let err = twilio
        .messages()
        .create(&k, &CreateMessage::from_number("555-1234", FROM, "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.wire_error().and_then(TwilioError::code), Some(21211));
    assert_eq!(fake.side_effects(), 0);
    assert_eq!(fake.write_requests(), 1);
}
