//! The escape hatch: `StripeClient::post` (a keyed raw write) and `extra`
//! on typed params, plus the PaymentIntent fields the typed API gained.

mod common;

use common::*;
use idem::adapter::Answer;
use idem_stripe::{Amount, CreatePaymentIntent, Currency, Error, SetupFutureUsage, TransferData};
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{header, method, path};
use idem_testkit::mock::{Mock, MockServer};

fn form_of(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn client_for(server: &MockServer) -> (idem_stripe::StripeClient, tempfile::TempDir) {
    let (store, dir) = idem::testing::sqlite_store().await;
    let client = idem_stripe::StripeClient::builder(executor(store, &clock()), SECRET)
        .base_url(server.uri())
        .retry(fast_retry())
        .build()
        .unwrap();
    (client, dir)
}

#[tokio::test]
async fn raw_post_sends_the_key_records_and_replays() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/transfers"))
        .and(header("idempotency-key", "joes-bikes_payouts_1_v1"))
        .respond_with(
            Reply::new(200).set_body_json(serde_json::json!({"id": "tr_1", "object": "transfer"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (stripe, _dir) = client_for(&server).await;
    let k = key("joes-bikes_payouts_1_v1");
    let params = [
        ("amount", "400"),
        ("currency", "usd"),
        ("destination", "acct_1"),
    ];
    let first: Answer<serde_json::Value> = stripe.post(&k, "/v1/transfers", &params).await.unwrap();
    assert_eq!(first.value["id"], "tr_1");
    let row = row(stripe.executor(), &k).await;
    assert_eq!(row.operation, "raw:POST /v1/transfers");
    let again: Answer<serde_json::Value> = stripe.post(&k, "/v1/transfers", &params).await.unwrap();
    assert!(
        again.from_ledger(),
        "answered from the ledger, nothing sent"
    );
    let err = stripe
        .post::<serde_json::Value>(&k, "/v1/transfers", &[("amount", "401")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }), "{err}");
    let err = stripe
        .post::<serde_json::Value>(
            &key("joes-bikes_payouts_2_v1"),
            "https://evil.example/v1/transfers",
            &params,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    server.verify().await;
}

#[tokio::test]
async fn new_payment_intent_fields_and_extras_are_sent_and_fingerprinted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(Reply::new(200).set_body_json(serde_json::json!({
            "id": "pi_1", "object": "payment_intent", "amount": 1099, "currency": "usd",
            "status": "requires_payment_method", "metadata": {}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (stripe, _dir) = client_for(&server).await;
    let mut p = CreatePaymentIntent::new(Amount::minor(1099), Currency::usd());
    p.statement_descriptor = Some("JOES BIKES".into());
    p.setup_future_usage = Some(SetupFutureUsage::OffSession);
    p.on_behalf_of = Some("acct_1Shop".into());
    p.transfer_data = Some(TransferData {
        destination: "acct_1Shop".into(),
        amount: Some(Amount::minor(900)),
    });
    p.application_fee_amount = Some(Amount::minor(199));
    let p = p.extra("shipping[name]", "Joe").extra(
        "payment_method_options[card][request_three_d_secure]",
        "any",
    );
    let k = key("joes-bikes_orders_77_v1");
    stripe.payment_intents().create(&k, &p).await.unwrap();
    let form = form_of(&server.received_requests().await[0].body);
    for (name, value) in [
        ("statement_descriptor", "JOES BIKES"),
        ("setup_future_usage", "off_session"),
        ("on_behalf_of", "acct_1Shop"),
        ("transfer_data[destination]", "acct_1Shop"),
        ("transfer_data[amount]", "900"),
        ("application_fee_amount", "199"),
        ("shipping[name]", "Joe"),
        (
            "payment_method_options[card][request_three_d_secure]",
            "any",
        ),
        ("metadata[idem_key]", "joes-bikes_orders_77_v1"),
    ] {
        assert!(
            form.contains(&(name.into(), value.into())),
            "{name} missing from {form:?}"
        );
    }
    // Another extra under the same key is another request.
    let changed = p.clone().extra("shipping[phone]", "555");
    let err = stripe
        .payment_intents()
        .create(&k, &changed)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }), "{err}");
    // An extra never overrides what the adapter or the struct sends.
    let k2 = key("joes-bikes_orders_78_v1");
    for taken in ["amount", "metadata[idem_key]", "statement_descriptor"] {
        let hostile = p.clone().extra(taken, "1");
        let err = stripe
            .payment_intents()
            .create(&k2, &hostile)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { .. }),
            "{taken}: {err}"
        );
    }
    assert!(stripe.executor().store().get(&k2).await.unwrap().is_none());
    server.verify().await;
}
