//! Quick end-to-end check of executor + SQLite ledger against wiremock.
use idem::executor::StatusClassifier;
use idem::ledger::SqliteStore;
use idem::{Executor, IdempotencyKey, OperationState, OutboundRequest, Provider, SafetyClass};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn second_run_answers_from_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("l.db")).await.unwrap();
    let exec = Executor::builder(store).build();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/send"))
        .respond_with(ResponseTemplate::new(201).set_body_string("{\"id\":1}"))
        .expect(1)
        .mount(&server)
        .await;
    let provider = Provider::new("acme", SafetyClass::LocalOnly, StatusClassifier);
    let key: IdempotencyKey = "s_t_1_v1".parse().unwrap();
    let url: idem::executor::Url = format!("{}/send", server.uri()).parse().unwrap();
    let d1 = exec
        .execute(
            &provider,
            &key,
            "send",
            OutboundRequest::post(url.clone()).form([("a", "1")]),
        )
        .await
        .unwrap();
    assert!(!d1.from_ledger());
    let d2 = exec
        .execute(
            &provider,
            &key,
            "send",
            OutboundRequest::post(url).form([("a", "1")]),
        )
        .await
        .unwrap();
    assert!(d2.from_ledger());
    assert_eq!(d2.body, d1.body);
    let op = exec.store().get(&key).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Succeeded);
}
