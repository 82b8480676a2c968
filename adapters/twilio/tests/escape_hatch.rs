//! The escape hatch: a keyed raw write (`TwilioClient::post`) and
//! `CreateMessage::extra`, for what the typed API lacks. Both go through the
//! executor under the key: recorded first, fingerprinted, answered from the
//! ledger on a rerun, never resent once they may have reached Twilio.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use idem::adapter::Answer;
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{basic_auth, method, path};
use idem_testkit::mock::{Mock, MockServer};
use idem_twilio::{CreateMessage, Error};

const CALLS_PATH: &str = "/2010-04-01/Accounts/AC00000000000000000000000000000fa4/Calls.json";
const CALLS: &str = "2010-04-01/Accounts/AC00000000000000000000000000000fa4/Calls.json";

fn form_of(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[tokio::test]
async fn raw_post_is_recorded_then_answered_from_the_ledger() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .and(basic_auth(ACCOUNT, "test-auth-token"))
        .respond_with(
            Reply::new(201).set_body_json(serde_json::json!({"sid": "CA1", "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_calls_1_v1");
    let params = [
        ("To", TO),
        ("From", FROM),
        ("Url", "https://example.com/twiml"),
    ];

    let first: Answer<serde_json::Value> = twilio.post(&k, CALLS, &params).await.unwrap();
    assert_eq!(first.value["sid"], "CA1");
    assert!(!first.from_ledger());
    let row = idem_testkit::ledger::row(twilio.executor(), &k).await;
    assert_eq!(row.operation, format!("raw:POST /{CALLS}"));
    assert_eq!(row.state, idem::OperationState::Succeeded);

    // The job runs again: the ledger answers, nothing is sent (`expect(1)`).
    let again: Answer<serde_json::Value> = twilio.post(&k, CALLS, &params).await.unwrap();
    assert!(again.from_ledger());
    assert_eq!(again.value["sid"], "CA1");

    // The same key with other parameters is refused before sending.
    let other = [
        ("To", "+15550000000"),
        ("From", FROM),
        ("Url", "https://example.com/twiml"),
    ];
    let err = twilio
        .post::<serde_json::Value>(&k, CALLS, &other)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }), "{err}");
    server.verify().await;
}

#[tokio::test]
async fn a_raw_post_that_may_have_reached_twilio_is_never_resent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(
            Reply::new(201)
                .set_body_json(serde_json::json!({"sid": "CA2"}))
                .set_delay(Duration::from_secs(3)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_calls_2_v1");
    let params = [("To", TO), ("From", FROM)];
    for _ in 0..3 {
        let err = twilio
            .post::<serde_json::Value>(&k, CALLS, &params)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err}");
        assert!(!err.is_retryable(), "may have happened: never resent");
    }
    assert_eq!(state(&twilio, &k).await, idem::OperationState::Unknown);
    server.verify().await;
}

#[tokio::test]
async fn a_raw_path_cannot_leave_the_base_url_and_records_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Reply::new(201).set_body_json(serde_json::json!({})))
        .expect(0)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_calls_3_v1");
    for hostile in [
        "https://evil.example/steal",
        "//evil.example/steal",
        "../../admin",
        "2010-04-01/../../x",
        "a/%2e%2e/b",
        "a\\b",
    ] {
        let err = twilio
            .post::<serde_json::Value>(&k, hostile, &[("To", TO)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { .. }),
            "{hostile}: {err}"
        );
    }
    let nothing = twilio.executor().store().get(&k).await.unwrap();
    assert!(nothing.is_none(), "nothing was recorded");
    server.verify().await;
}

#[tokio::test]
async fn extra_parameters_are_sent_fingerprinted_and_never_override() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(Reply::new(201).set_body_json(created(SID1)))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let k = key("joes-bikes_sms_extra_v1");

    let with_extra = msg()
        .extra("ValidityPeriod", 600)
        .extra("ShortenUrls", true);
    twilio.messages().create(&k, &with_extra).await.unwrap();
    let sent = server.received_requests().await;
    let form = form_of(&sent[0].body);
    assert!(
        form.contains(&("ValidityPeriod".into(), "600".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("ShortenUrls".into(), "true".into())),
        "{form:?}"
    );

    // Another extra under the same key is another request: refused.
    let changed = msg().extra("ValidityPeriod", 60);
    let err = twilio.messages().create(&k, &changed).await.unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }), "{err}");

    // A name the adapter sends itself is refused, nothing recorded.
    let k2 = key("joes-bikes_sms_extra_v2");
    for taken in ["To", "Body", "StatusCallback"] {
        let hostile = msg().extra(taken, "+15550000000");
        let err = twilio.messages().create(&k2, &hostile).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { .. }),
            "{taken}: {err}"
        );
    }
    assert!(twilio.executor().store().get(&k2).await.unwrap().is_none());
    server.verify().await;
}

#[tokio::test]
async fn content_templates_and_scheduled_sends_are_typed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(Reply::new(201).set_body_json(created(SID1)))
        .expect(1)
        .mount(&server)
        .await;
    let (store, _dir) = idem::testing::sqlite_store().await;
    let twilio = client(store, &server.uri());
    let mut vars = serde_json::Map::new();
    vars.insert("1".into(), "Joe".into());
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let msg = CreateMessage::new(
        TO,
        idem_twilio::Sender::MessagingService("MG00000000000000000000000000000001".into()),
        None,
    )
    .content("HX00000000000000000000000000000001", vars)
    .send_at(at);
    twilio
        .messages()
        .create(&key("joes-bikes_sms_tpl_v1"), &msg)
        .await
        .unwrap();
    let form = form_of(&server.received_requests().await[0].body);
    let get = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        get("ContentSid").as_deref(),
        Some("HX00000000000000000000000000000001")
    );
    assert_eq!(get("ContentVariables").as_deref(), Some(r#"{"1":"Joe"}"#));
    assert_eq!(get("SendAt").as_deref(), Some("2030-03-17T17:46:40Z"));
    assert_eq!(get("ScheduleType").as_deref(), Some("fixed"));
    assert_eq!(get("Body"), None);

    // A schedule needs a Messaging Service; a bad ContentSid is refused.
    let k = key("joes-bikes_sms_tpl_v2");
    let unscheduled = CreateMessage::from_number(TO, FROM, "hi").send_at(at);
    assert!(matches!(
        twilio
            .messages()
            .create(&k, &unscheduled)
            .await
            .unwrap_err(),
        Error::InvalidRequest { .. }
    ));
    let bad = CreateMessage::from_number(TO, FROM, "hi").content("HXshort", serde_json::Map::new());
    assert!(matches!(
        twilio.messages().create(&k, &bad).await.unwrap_err(),
        Error::InvalidRequest { .. }
    ));
    server.verify().await;
}
