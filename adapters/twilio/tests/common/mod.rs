//! Shared helpers for the Twilio adapter's integration tests.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::time::Duration;

use idem::executor::RetrySettings;
use idem::ledger::LedgerStore;
use idem::{Executor, IdempotencyKey, OperationState};
use idem_testkit::FakeTwilio;
pub use idem_testkit::ledger::key;
use idem_twilio::{CALLBACK_KEY_PARAM, CreateMessage, Credentials, TwilioClient};

pub const ACCOUNT: &str = FakeTwilio::ACCOUNT_SID;
pub const TO: &str = "+15558675310";
pub const FROM: &str = "+15017122661";
pub const CALLBACK: &str = "https://hooks.example.com/twilio/status";
pub const MESSAGES_PATH: &str =
    "/2010-04-01/Accounts/AC00000000000000000000000000000fa4/Messages.json";

/// Short timeouts and backoffs; `Retry-After` honoured up to 5 s.
pub fn fast_retry() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(4)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .with_attempt_timeout(Duration::from_millis(700))
        .with_total_timeout(Duration::from_secs(6))
        .with_max_retry_after(Duration::from_secs(5))
}

pub fn client_on(executor: Executor, base: &str, retry: RetrySettings) -> TwilioClient {
    TwilioClient::builder(
        executor,
        Credentials::auth_token(ACCOUNT, "test-auth-token"),
    )
    .base_url(base)
    .retry(retry)
    .lookup_retry(fast_retry())
    .status_callback(CALLBACK.parse().unwrap())
    .build()
    .unwrap()
}

pub fn client(store: impl LedgerStore, base: &str) -> TwilioClient {
    client_on(Executor::builder(store).build(), base, fast_retry())
}

pub fn msg() -> CreateMessage {
    CreateMessage::from_number(TO, FROM, "Your bike is ready for pickup")
}

/// A Twilio 201 body (the shape of twilio-oai's `create` example).
pub fn created(sid: &str) -> serde_json::Value {
    serde_json::json!({
        "account_sid": ACCOUNT,
        "api_version": "2010-04-01",
        "body": "Your bike is ready for pickup",
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_sent": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": FROM,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": "1",
        "price": null,
        "price_unit": null,
        "sid": sid,
        "status": "queued",
        "to": TO,
        "uri": format!("{MESSAGES_PATH}/{sid}.json"),
    })
}

pub const SID1: &str = "SM00000000000000000000000000000001";
pub const SID2: &str = "SM00000000000000000000000000000002";

/// The idem key carried by a request's StatusCallback URL, decoded.
pub fn callback_key(req: &idem_testkit::Request) -> Option<String> {
    let cb = req.form_value("StatusCallback")?;
    let url: url::Url = cb.parse().ok()?;
    url.query_pairs()
        .find(|(k, _)| k == CALLBACK_KEY_PARAM)
        .map(|(_, v)| v.into_owned())
}

pub async fn state(client: &TwilioClient, key: &IdempotencyKey) -> OperationState {
    idem_testkit::ledger::row(client.executor(), key)
        .await
        .state
}

/// Reserves a loopback port that refuses connections until something binds it.
pub fn refused_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
