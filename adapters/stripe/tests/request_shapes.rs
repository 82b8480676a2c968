//! Request shapes, checked byte for byte with the plain mock server and `.expect(n)`.
//!
//! Parameter names are Stripe's, as listed by the official Python client
//! (stripe 16.1.0, `stripe/params/_payment_intent_create_params.py`,
//! `_payment_intent_confirm_params.py`, `_payment_intent_capture_params.py`,
//! `_refund_create_params.py`, `_customer_create_params.py`,
//! `_charge_create_params.py`, `_payment_intent_search_params.py`,
//! `_refund_list_params.py`).

mod common;

use common::*;
use idem_stripe::{
    Amount, AutomaticPaymentMethods, CaptureMethod, CapturePaymentIntent, ConfirmPaymentIntent,
    CreateCharge, CreateCustomer, CreatePaymentIntent, CreateRefund, Currency, Error,
    PaymentIntentStatus, RefundReason, StripeClient,
};
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{body_string, header, header_exists, method, path};
use idem_testkit::mock::{Mock, MockServer};

fn pi_json(id: &str, status: &str) -> serde_json::Value {
    // Shape of stripe/openapi fixtures3.json's payment_intent.
    serde_json::json!({
        "id": id, "object": "payment_intent", "amount": 1099, "amount_capturable": 0,
        "amount_received": 1099, "capture_method": "automatic", "created": 1234567890,
        "currency": "usd", "customer": null, "latest_charge": null, "livemode": false,
        "metadata": {"idem_key": "joes-bikes_orders_1_v1"}, "payment_method": null,
        "payment_method_types": ["card"], "status": status
    })
}

async fn client_for(server: &MockServer) -> (StripeClient, tempfile::TempDir) {
    let (store, dir) = idem::testing::sqlite_store().await;
    let clock = clock();
    let client = StripeClient::builder(executor(store, &clock), SECRET)
        .base_url(server.uri())
        .stripe_version("2026-08-26.dahlia")
        .stripe_account("acct_1Connected")
        .retry(fast_retry())
        .build()
        .unwrap();
    (client, dir)
}

fn enc(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test]
async fn create_payment_intent_shape_and_ledger_replay() {
    let server = MockServer::start().await;
    let k = key("joes-bikes_orders_1_v1");
    let body = enc(&[
        ("amount", "1099"),
        ("currency", "usd"),
        ("customer", "cus_123"),
        ("payment_method", "pm_card_visa"),
        ("payment_method_types[0]", "card"),
        ("automatic_payment_methods[enabled]", "true"),
        ("automatic_payment_methods[allow_redirects]", "never"),
        ("capture_method", "manual"),
        ("confirm", "true"),
        ("description", "Order 42"),
        ("metadata[idem_key]", "joes-bikes_orders_1_v1"),
        ("metadata[order_id]", "42"),
    ]);
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .and(header("authorization", format!("Bearer {SECRET}").as_str()))
        .and(header("idempotency-key", k.as_str()))
        .and(header("stripe-version", "2026-08-26.dahlia"))
        .and(header("stripe-account", "acct_1Connected"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(body))
        .respond_with(Reply::new(200).set_body_json(pi_json("pi_1", "requires_capture")))
        .expect(1)
        .mount(&server)
        .await;
    let (stripe, _dir) = client_for(&server).await;
    let mut p = CreatePaymentIntent::new(Amount::minor(1099), Currency::usd());
    p.customer = Some("cus_123".parse().unwrap());
    p.payment_method = Some("pm_card_visa".parse().unwrap());
    p.payment_method_types = vec!["card".into()];
    p.automatic_payment_methods = Some(AutomaticPaymentMethods {
        enabled: true,
        allow_redirects: Some(false),
    });
    p.capture_method = Some(CaptureMethod::Manual);
    p.confirm = Some(true);
    p.description = Some("Order 42".into());
    p.metadata.insert("order_id".into(), "42".into());
    let first = stripe.payment_intents().create(&k, &p).await.unwrap();
    assert_eq!(first.object.id.as_str(), "pi_1");
    assert!(!first.replayed);
    // Second run: from the ledger, no request (`expect(1)` checks on drop).
    let second = stripe.payment_intents().create(&k, &p).await.unwrap();
    assert!(second.replayed);
    assert_eq!(second.object, first.object);
}

#[tokio::test]
async fn confirm_and_capture_shapes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents/pi_1/confirm"))
        .and(header("idempotency-key", "joes-bikes_confirms_1_v1"))
        .and(body_string(enc(&[
            ("payment_method", "pm_card_visa"),
            ("off_session", "true"),
            ("return_url", "https://shop.example/done"),
        ])))
        .respond_with(Reply::new(200).set_body_json(pi_json("pi_1", "requires_capture")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents/pi_1/capture"))
        .and(header("idempotency-key", "joes-bikes_captures_1_v1"))
        .and(body_string(enc(&[
            ("amount_to_capture", "500"),
            ("final_capture", "true"),
            ("metadata[step]", "capture"),
        ])))
        .respond_with(Reply::new(200).set_body_json(pi_json("pi_1", "succeeded")))
        .expect(1)
        .mount(&server)
        .await;
    let (stripe, _dir) = client_for(&server).await;
    let id = "pi_1".parse().unwrap();
    let c = ConfirmPaymentIntent {
        payment_method: Some("pm_card_visa".parse().unwrap()),
        off_session: Some(true),
        return_url: Some("https://shop.example/done".into()),
        ..Default::default()
    };
    let confirmed = stripe
        .payment_intents()
        .confirm(&key("joes-bikes_confirms_1_v1"), &id, &c)
        .await
        .unwrap();
    assert_eq!(
        confirmed.object.status,
        PaymentIntentStatus::RequiresCapture
    );
    let mut cap = CapturePaymentIntent {
        amount_to_capture: Some(Amount::minor(500)),
        final_capture: Some(true),
        ..Default::default()
    };
    cap.metadata.insert("step".into(), "capture".into());
    let captured = stripe
        .payment_intents()
        .capture(&key("joes-bikes_captures_1_v1"), &id, &cap)
        .await
        .unwrap();
    assert_eq!(captured.object.status, PaymentIntentStatus::Succeeded);
}

#[tokio::test]
async fn refund_customer_and_charge_shapes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(header("idempotency-key", "joes-bikes_refunds_1_v1"))
        .and(body_string(enc(&[
            ("payment_intent", "pi_1"),
            ("amount", "300"),
            ("reason", "requested_by_customer"),
            ("metadata[idem_key]", "joes-bikes_refunds_1_v1"),
        ])))
        .respond_with(Reply::new(200).set_body_json(serde_json::json!({
            "id": "re_1", "object": "refund", "amount": 300, "charge": "ch_1",
            "created": 1234567890, "currency": "usd",
            "metadata": {"idem_key": "joes-bikes_refunds_1_v1"},
            "payment_intent": "pi_1", "reason": "requested_by_customer", "status": "succeeded"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header("idempotency-key", "joes-bikes_customers_1_v1"))
        .and(body_string(enc(&[
            ("email", "jenny@example.com"),
            ("name", "Jenny Rosen"),
            ("metadata[idem_key]", "joes-bikes_customers_1_v1"),
        ])))
        .respond_with(Reply::new(200).set_body_json(serde_json::json!({
            "id": "cus_1", "object": "customer", "email": "jenny@example.com",
            "name": "Jenny Rosen", "metadata": {"idem_key": "joes-bikes_customers_1_v1"},
            "created": 1234567890
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(header("idempotency-key", "joes-bikes_charges_1_v1"))
        .and(body_string(enc(&[
            ("amount", "2000"),
            ("currency", "eur"),
            ("source", "tok_visa"),
            ("capture", "false"),
            ("metadata[idem_key]", "joes-bikes_charges_1_v1"),
        ])))
        .respond_with(Reply::new(200).set_body_json(serde_json::json!({
            "id": "ch_1", "object": "charge", "amount": 2000, "amount_captured": 0,
            "captured": false, "paid": true, "currency": "eur", "status": "succeeded",
            "metadata": {"idem_key": "joes-bikes_charges_1_v1"}, "created": 1234567890
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (stripe, _dir) = client_for(&server).await;
    let mut r = CreateRefund::payment_intent("pi_1".parse().unwrap());
    r.amount = Some(Amount::minor(300));
    r.reason = Some(RefundReason::RequestedByCustomer);
    let refund = stripe
        .refunds()
        .create(&key("joes-bikes_refunds_1_v1"), &r)
        .await
        .unwrap();
    assert_eq!(refund.object.id.as_str(), "re_1");
    let c = CreateCustomer {
        email: Some("jenny@example.com".into()),
        name: Some("Jenny Rosen".into()),
        ..Default::default()
    };
    let customer = stripe
        .customers()
        .create(&key("joes-bikes_customers_1_v1"), &c)
        .await
        .unwrap();
    assert_eq!(customer.object.id.as_str(), "cus_1");
    let mut ch = CreateCharge::new(Amount::minor(2000), Currency::eur());
    ch.source = Some("tok_visa".into());
    ch.capture = Some(false);
    let charge = stripe
        .charges()
        .create(&key("joes-bikes_charges_1_v1"), &ch)
        .await
        .unwrap();
    assert_eq!(charge.object.id.as_str(), "ch_1");
    assert!(!charge.object.captured);
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_key_then_recorded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header("idempotency-key", "joes-bikes_customers_2_v1"))
        .and(header_exists("authorization"))
        .respond_with(
            Reply::new(503).set_body_string(r#"{"error":{"type":"api_error","message":"down"}}"#),
        )
        .expect(3)
        .mount(&server)
        .await;
    let (stripe, _dir) = client_for(&server).await;
    let err = stripe
        .customers()
        .create(
            &key("joes-bikes_customers_2_v1"),
            &CreateCustomer::default(),
        )
        .await
        .unwrap_err();
    // Three attempts (the configured maximum), then unknown; inside the key
    // window a later run may resend.
    assert!(
        matches!(
            err,
            Error::OutcomeUnknown {
                resend_safe_until: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn secrets_never_show() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Reply::new(401).set_body_string(format!(
            r#"{{"error":{{"type":"invalid_request_error","message":"Invalid API Key provided: {SECRET}"}}}}"#
        )))
        .expect(1)
        .mount(&server)
        .await;
    let (stripe, _dir) = client_for(&server).await;
    assert!(!format!("{stripe:?}").contains(SECRET));
    let err = stripe
        .customers()
        .create(
            &key("joes-bikes_customers_3_v1"),
            &CreateCustomer::default(),
        )
        .await
        .unwrap_err();
    let shown = format!("{err} / {err:?} / {}", err.wire_error().unwrap());
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!err.wire_error().unwrap().to_string().contains(SECRET));
}
