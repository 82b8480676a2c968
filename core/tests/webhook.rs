//! Webhooks in both directions, on SQLite and PostgreSQL: duplicates,
//! out-of-order and concurrent duplicates, bad and expired signatures, a
//! handler failure then redelivery, an `unknown` ledger row settled by an
//! event, and outbound retries with one stable `webhook-id`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use idem::ledger::{Completion, LedgerStore, NewOperation};
use idem::webhook::signature::{self, WebhookSecret};
use idem::webhook::{
    DUPLICATE_HEADER, EventHandler, EventState, HandlerError, InboundWebhook, Verifier,
    WebhookEvent, WebhookSender, WebhookStore, event_handler, handle_webhook,
};
use idem::{Clock, Executor, Fingerprint, IdempotencyKey, ManualClock, OperationState};
use tokio::sync::Notify;

const STRIPE_SECRET: &str = "whsec_test_stripe_secret";

/// What the test handler saw and does.
#[derive(Default)]
struct Probe {
    runs: AtomicUsize,
    fail_next: AtomicUsize,
    started: Notify,
    gate: Option<Notify>,
    delay: Option<Duration>,
}

fn stripe_event(id: &str, kind: &str, object: serde_json::Value) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "id": id,
            "object": "event",
            "type": kind,
            "data": { "object": object },
            "request": { "id": null, "idempotency_key": null },
        })
        .to_string(),
    )
}

fn stripe_request(body: &Bytes, secret: &str, at: SystemTime) -> Request<Full<Bytes>> {
    Request::post("/hooks/stripe")
        .header(
            "stripe-signature",
            signature::stripe_sign(&[secret], at, body),
        )
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap()
}

fn stripe_config(clock: &ManualClock) -> InboundWebhook {
    InboundWebhook::builder("stripe-main", Verifier::stripe([STRIPE_SECRET]))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

fn is_duplicate<B>(r: &Response<B>) -> bool {
    r.headers().get(DUPLICATE_HEADER).is_some()
}

fn key(s: &str) -> IdempotencyKey {
    s.parse().unwrap()
}

/// A ledger row left `unknown` (the answer was lost).
async fn unknown_row(
    store: &dyn LedgerStore,
    k: &str,
    provider: &str,
    operation: &str,
    now: SystemTime,
) {
    let op = NewOperation::new(
        key(k),
        provider,
        operation,
        Fingerprint::builder().body(k.as_bytes()).finish(),
    );
    store.begin(&op, now).await.unwrap();
    let lease = store
        .claim(
            &key(k),
            idem::ledger::ClaimFrom::Pending,
            Duration::from_secs(30),
            now,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .complete(
            &lease,
            &Completion::Unknown {
                note: "timed out".into(),
                status: None,
            },
            now,
        )
        .await
        .unwrap();
}

macro_rules! webhook_suite {
    ($modname:ident, $db:ty, $open:expr, $strict:expr) => {
        mod $modname {
            use super::*;

            type Db = $db;
            /// Whether a delivery that overlaps a running handler is
            /// answered at once (PostgreSQL's row-level writes) rather than
            /// after waiting for the write lock (SQLite).
            const STRICT_IN_FLIGHT: bool = $strict;

            fn handler(probe: &Arc<Probe>) -> EventHandler<Db> {
                let probe = Arc::clone(probe);
                event_handler::<Db, _>(move |tx, event: &WebhookEvent| {
                    let probe = Arc::clone(&probe);
                    Box::pin(async move {
                        probe.runs.fetch_add(1, Ordering::SeqCst);
                        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
                            .bind(event.id.clone())
                            .execute(&mut **tx)
                            .await
                            .map_err(|e| HandlerError::new(e.to_string()))?;
                        probe.started.notify_one();
                        if let Some(d) = probe.delay {
                            tokio::time::sleep(d).await;
                        }
                        if let Some(gate) = &probe.gate {
                            gate.notified().await;
                        }
                        if probe
                            .fail_next
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                        {
                            return Err(HandlerError::new("injected failure"));
                        }
                        Ok(())
                    })
                })
            }

            async fn effects<S: WebhookStore<Db = Db>>(store: &S) -> Vec<String> {
                let mut tx = store.begin_tx().await.unwrap();
                let rows: Vec<(String,)> = sqlx::query_as("SELECT event_id FROM effects ORDER BY event_id")
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                rows.into_iter().map(|r| r.0).collect()
            }

            async fn event_rows<S: WebhookStore<Db = Db>>(store: &S) -> i64 {
                let mut tx = store.begin_tx().await.unwrap();
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM idem_webhook_events")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                n
            }

            macro_rules! open {
                ($name:expr) => {{
                    let Some((store, guard)) = ($open)($name).await else { return };
                    let mut tx = store.begin_tx().await.unwrap();
                    sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL)")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    (store, guard)
                }};
            }

            #[tokio::test]
            async fn a_duplicate_answers_2xx_without_running_the_handler() {
                let (store, _guard) = open!("webhook_duplicate");
                let clock = ManualClock::starting_now();
                let config = stripe_config(&clock);
                let probe = Arc::new(Probe::default());
                let h = handler(&probe);
                let body = stripe_event("evt_1", "charge.succeeded", serde_json::json!({"id": "ch_1"}));
                let first = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await;
                assert_eq!(first.status(), StatusCode::OK);
                assert!(!is_duplicate(&first));
                // Stripe redelivers with a fresh timestamp and signature.
                clock.advance(Duration::from_secs(60));
                let second = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await;
                assert_eq!(second.status(), StatusCode::OK);
                assert!(is_duplicate(&second));
                assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
                assert_eq!(effects(&store).await, vec!["evt_1".to_owned()]);
                let rec = store.event("stripe-main", "evt_1").await.unwrap().unwrap();
                assert_eq!(rec.state, EventState::Processed);
                assert_eq!((rec.deliveries, rec.runs), (2, 1));
                // Another endpoint has its own id space.
                let other = InboundWebhook::builder("stripe-connect", Verifier::stripe([STRIPE_SECRET]))
                    .clock(Arc::new(clock.clone()))
                    .build()
                    .unwrap();
                let third = handle_webhook(&store, &other, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await;
                assert_eq!(third.status(), StatusCode::OK);
                assert!(!is_duplicate(&third));
                assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
            }

            #[tokio::test]
            async fn out_of_order_duplicates_run_each_event_once() {
                let (store, _guard) = open!("webhook_out_of_order");
                let clock = ManualClock::starting_now();
                let secret = WebhookSecret::generate();
                let config = InboundWebhook::builder("generic", Verifier::standard([secret.clone()]))
                    .clock(Arc::new(clock.clone()))
                    .build()
                    .unwrap();
                let probe = Arc::new(Probe::default());
                let h = handler(&probe);
                let mut duplicates = 0;
                for id in ["msg_a", "msg_b", "msg_a", "msg_c", "msg_b", "msg_a", "msg_c"] {
                    clock.advance(Duration::from_secs(7));
                    let body = Bytes::from(format!("{{\"type\":\"order.paid\",\"id\":\"{id}\"}}"));
                    let now = clock.now();
                    let ts = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs().to_string();
                    let req = Request::post("/hooks")
                        .header("webhook-id", id)
                        .header("webhook-timestamp", ts)
                        .header("webhook-signature", signature::standard_sign(std::slice::from_ref(&secret), id, now, &body))
                        .body(Full::new(body))
                        .unwrap();
                    let r = handle_webhook(&store, &config, req, &h).await;
                    assert_eq!(r.status(), StatusCode::OK);
                    duplicates += usize::from(is_duplicate(&r));
                }
                assert_eq!(duplicates, 4);
                assert_eq!(probe.runs.load(Ordering::SeqCst), 3);
                assert_eq!(effects(&store).await, vec!["msg_a", "msg_b", "msg_c"]);
            }

            #[tokio::test]
            async fn concurrent_duplicates_run_the_handler_exactly_once() {
                let (store, _guard) = open!("webhook_concurrent");
                let clock = ManualClock::starting_now();
                let config = stripe_config(&clock);
                // A slow handler, so the deliveries really overlap.
                let probe = Arc::new(Probe { delay: Some(Duration::from_millis(300)), ..Probe::default() });
                let h = handler(&probe);
                let body = stripe_event("evt_c", "charge.succeeded", serde_json::json!({"id": "ch_c"}));
                // Open the pool's connections first (PostgreSQL's SCRAM
                // handshake is slow in debug builds), so the deliveries meet.
                futures::future::join_all((0..10).map(|_| store.event("warm", "up"))).await;
                let mut tasks = Vec::new();
                for _ in 0..8 {
                    let (store, config, h, body, clock) = (store.clone(), config.clone(), h.clone(), body.clone(), clock.clone());
                    tasks.push(tokio::spawn(async move {
                        handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await
                    }));
                }
                let mut processed = 0;
                let mut busy = 0;
                for t in tasks {
                    let r = t.await.unwrap();
                    match r.status() {
                        StatusCode::OK if !is_duplicate(&r) => processed += 1,
                        StatusCode::OK => {}
                        StatusCode::SERVICE_UNAVAILABLE => {
                            assert!(r.headers().contains_key("retry-after"));
                            busy += 1;
                        }
                        other => panic!("unexpected status {other}"),

                    }
                }
                assert_eq!(processed, 1);
                // On PostgreSQL an overlapping delivery is answered 503 at
                // once; SQLite serialises writers, so there it waits for the
                // first run's commit and is then answered as a duplicate.
                if STRICT_IN_FLIGHT {
                    assert!(busy >= 1, "some deliveries overlapped the running handler");
                }
                assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
                assert_eq!(effects(&store).await.len(), 1);
            }

            #[tokio::test]
            async fn a_delivery_during_a_run_that_then_fails_is_not_told_processed() {
                let (store, _guard) = open!("webhook_in_flight");
                let clock = ManualClock::starting_now();
                let config = stripe_config(&clock);
                let probe = Arc::new(Probe { gate: Some(Notify::new()), ..Probe::default() });
                probe.fail_next.store(1, Ordering::SeqCst);
                let h = handler(&probe);
                let body = stripe_event("evt_f", "charge.succeeded", serde_json::json!({"id": "ch_f"}));
                let first = {
                    let (store, config, h, body, clock) = (store.clone(), config.clone(), h.clone(), body.clone(), clock.clone());
                    tokio::spawn(async move {
                        handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await
                    })
                };
                probe.started.notified().await;
                // The first handler is running: a second delivery must neither
                // run the handler now nor be told the event was processed.
                let second = {
                    let (store, config, h, body, clock) = (store.clone(), config.clone(), h.clone(), body.clone(), clock.clone());
                    tokio::spawn(async move {
                        handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await
                    })
                };
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "no second run while the first runs");
                if STRICT_IN_FLIGHT {
                    assert!(second.is_finished(), "PostgreSQL answers at once");
                }
                probe.gate.as_ref().unwrap().notify_one();
                let first = first.await.unwrap();
                assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
                // The gate is open for a run of the second delivery, if it gets one.
                probe.gate.as_ref().unwrap().notify_one();
                let second = second.await.unwrap();
                assert!(!is_duplicate(&second), "never told processed while the first run could fail");
                match second.status() {
                    // In flight: retry later (PostgreSQL; SQLite when its lock
                    // wait ends before the first run).
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(second.headers().contains_key("retry-after"));
                        assert!(STRICT_IN_FLIGHT || probe.runs.load(Ordering::SeqCst) == 1);
                        let h2 = handler(&Arc::new(Probe::default()));
                        let third = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h2).await;
                        assert_eq!(third.status(), StatusCode::OK);
                        assert!(!is_duplicate(&third));
                    }
                    // SQLite: the second delivery waited for the write lock,
                    // found the event released and ran it itself.
                    StatusCode::OK => {
                        assert!(!STRICT_IN_FLIGHT, "PostgreSQL must not wait");
                        assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
                    }
                    other => panic!("unexpected status {other}"),
                }
                assert_eq!(effects(&store).await, vec!["evt_f".to_owned()]);
            }

            #[tokio::test]
            async fn bad_and_expired_signatures_get_400_and_touch_nothing() {
                let (store, _guard) = open!("webhook_bad_signature");
                let clock = ManualClock::starting_now();
                let config = stripe_config(&clock);
                let probe = Arc::new(Probe::default());
                let h = handler(&probe);
                let body = stripe_event("evt_b", "charge.succeeded", serde_json::json!({"id": "ch_b"}));
                let cases = vec![
                    ("wrong secret", stripe_request(&body, "whsec_attacker", clock.now())),
                    ("expired", stripe_request(&body, STRIPE_SECRET, clock.now() - Duration::from_secs(301))),
                    ("from the future", stripe_request(&body, STRIPE_SECRET, clock.now() + Duration::from_secs(301))),
                    ("tampered body", {
                        let mut r = stripe_request(&body, STRIPE_SECRET, clock.now());
                        *r.body_mut() = Full::new(stripe_event("evt_b", "charge.refunded", serde_json::json!({})));
                        r
                    }),
                    ("no header", Request::post("/").body(Full::new(body.clone())).unwrap()),
                ];
                for (what, req) in cases {
                    let r = handle_webhook(&store, &config, req, &h).await;
                    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
                }
                // Twilio, Meta and Standard Webhooks refuse forgeries the same way.
                let twilio = InboundWebhook::builder("twilio", Verifier::twilio("token", "https://hooks.example.com"))
                    .clock(Arc::new(clock.clone()))
                    .build()
                    .unwrap();
                let form = "MessageSid=SM1&MessageStatus=delivered";
                let forged = signature::twilio_sign("other", "https://hooks.example.com/t", [("MessageSid", "SM1"), ("MessageStatus", "delivered")]);
                let req = Request::post("/t").header("x-twilio-signature", forged).body(Full::new(Bytes::from(form))).unwrap();
                assert_eq!(handle_webhook(&store, &twilio, req, &h).await.status(), StatusCode::BAD_REQUEST);
                let meta = InboundWebhook::builder("meta", Verifier::meta("appsecret")).build().unwrap();
                let req = Request::post("/m").header("x-hub-signature-256", signature::meta_sign("nope", b"{}")).body(Full::new(Bytes::from_static(b"{}"))).unwrap();
                assert_eq!(handle_webhook(&store, &meta, req, &h).await.status(), StatusCode::BAD_REQUEST);
                let secret = WebhookSecret::generate();
                let std_cfg = InboundWebhook::builder("std", Verifier::standard([secret.clone()]))
                    .clock(Arc::new(clock.clone()))
                    .tolerance(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let old = clock.now() - Duration::from_secs(61);
                let ts = old.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs().to_string();
                let req = Request::post("/s")
                    .header("webhook-id", "msg_1")
                    .header("webhook-timestamp", ts)
                    .header("webhook-signature", signature::standard_sign(&[secret], "msg_1", old, b"{}"))
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap();
                assert_eq!(handle_webhook(&store, &std_cfg, req, &h).await.status(), StatusCode::BAD_REQUEST, "older than the configured tolerance");
                assert_eq!(probe.runs.load(Ordering::SeqCst), 0);
                assert_eq!(event_rows(&store).await, 0, "no event row for a refused delivery");
            }

            #[tokio::test]
            async fn a_handler_failure_answers_500_and_the_redelivery_runs_it() {
                let (store, _guard) = open!("webhook_handler_failure");
                let clock = ManualClock::starting_now();
                let config = stripe_config(&clock);
                let probe = Arc::new(Probe::default());
                probe.fail_next.store(1, Ordering::SeqCst);
                let h = handler(&probe);
                let body = stripe_event("evt_h", "charge.succeeded", serde_json::json!({"id": "ch_h"}));
                let first = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await;
                assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
                assert!(effects(&store).await.is_empty(), "the failed run's insert was rolled back");
                let rec = store.event("stripe-main", "evt_h").await.unwrap().unwrap();
                assert_eq!(rec.state, EventState::Pending);
                assert!(rec.last_error.unwrap().contains("injected"));
                clock.advance(Duration::from_secs(60));
                let again = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await;
                assert_eq!(again.status(), StatusCode::OK);
                assert!(!is_duplicate(&again));
                assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
                assert_eq!(effects(&store).await, vec!["evt_h".to_owned()]);
                let dup = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, clock.now()), &h).await;
                assert!(is_duplicate(&dup));
                assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
            }

            #[tokio::test]
            async fn an_event_settles_an_unknown_row_and_never_downgrades() {
                let (store, _guard) = open!("webhook_settle");
                let clock = ManualClock::starting_now();
                let config = stripe_config(&clock);
                let h = handler(&Arc::new(Probe::default()));
                let now = clock.now();
                unknown_row(&store, "joes-bikes_transactions_1042_v1", "stripe", "payment_intents.create", now).await;
                let object = serde_json::json!({
                    "id": "pi_123", "object": "payment_intent", "status": "succeeded",
                    "metadata": { "idem_key": "joes-bikes_transactions_1042_v1" },
                });
                let body = stripe_event("evt_pi", "payment_intent.succeeded", object);
                let r = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, now), &h).await;
                assert_eq!(r.status(), StatusCode::OK);
                let op = store.get(&key("joes-bikes_transactions_1042_v1")).await.unwrap().unwrap();
                assert_eq!(op.state, OperationState::Succeeded);
                let note = op.note.clone().unwrap();
                assert!(note.contains("evt_pi") && note.contains("pi_123"), "{note}");
                let stored: serde_json::Value = serde_json::from_slice(op.response_body.as_ref().unwrap()).unwrap();
                assert_eq!(stored["id"], "pi_123");

                // A later event for the same key never moves the succeeded row.
                let later = serde_json::json!({
                    "id": "pi_123", "object": "payment_intent", "status": "canceled",
                    "metadata": { "idem_key": "joes-bikes_transactions_1042_v1" },
                });
                let body = stripe_event("evt_pi_2", "payment_intent.canceled", later);
                let r = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, now), &h).await;
                assert_eq!(r.status(), StatusCode::OK);
                let again = store.get(&key("joes-bikes_transactions_1042_v1")).await.unwrap().unwrap();
                assert_eq!(again.note, op.note);
                assert_eq!(again.response_body, op.response_body);

                // A failed payment names the confirm request: it proves nothing.
                unknown_row(&store, "joes-bikes_transactions_1043_v1", "stripe", "payment_intents.confirm", now).await;
                let mut failed: serde_json::Value = serde_json::from_slice(&stripe_event("evt_fail", "payment_intent.payment_failed", serde_json::json!({"id": "pi_9", "metadata": {}}))).unwrap();
                failed["request"]["idempotency_key"] = "joes-bikes_transactions_1043_v1".into();
                let body = Bytes::from(failed.to_string());
                let r = handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, now), &h).await;
                assert_eq!(r.status(), StatusCode::OK);
                let op = store.get(&key("joes-bikes_transactions_1043_v1")).await.unwrap().unwrap();
                assert_eq!(op.state, OperationState::Unknown);
                // ...whereas the same request's success settles it.
                let mut ok = failed.clone();
                ok["id"] = "evt_ok".into();
                ok["type"] = "payment_intent.succeeded".into();
                let body = Bytes::from(ok.to_string());
                handle_webhook(&store, &config, stripe_request(&body, STRIPE_SECRET, now), &h).await;
                let op = store.get(&key("joes-bikes_transactions_1043_v1")).await.unwrap().unwrap();
                assert_eq!(op.state, OperationState::Succeeded);
                assert!(op.note.unwrap().contains("evt_ok"));

                // Twilio: the key in the callback URL's query.
                unknown_row(&store, "joes-bikes_service_ticket_messages_78_v1", "twilio", "messages.create", now).await;
                let twilio = InboundWebhook::builder("twilio", Verifier::twilio("token", "https://hooks.example.com"))
                    .clock(Arc::new(clock.clone()))
                    .build()
                    .unwrap();
                let path = "/twilio/status?idemkey=joes-bikes%5Fservice%5Fticket%5Fmessages%5F78%5Fv1";
                let params = [("MessageSid", "SM0123456789abcdef0123456789abcdef"), ("MessageStatus", "delivered"), ("To", "+15558675310")];
                let sig = signature::twilio_sign("token", &format!("https://hooks.example.com{path}"), params);
                let form: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
                let req = Request::post(path).header("x-twilio-signature", sig).body(Full::new(Bytes::from(form))).unwrap();
                let r = handle_webhook(&store, &twilio, req, &h).await;
                assert_eq!(r.status(), StatusCode::OK);
                let op = store.get(&key("joes-bikes_service_ticket_messages_78_v1")).await.unwrap().unwrap();
                assert_eq!(op.state, OperationState::Succeeded);
                assert!(op.note.unwrap().contains("SM0123456789abcdef0123456789abcdef:delivered"));
            }

            #[tokio::test]
            async fn an_outbound_retry_reuses_the_same_webhook_id() {
                use wiremock::matchers::method;
                use wiremock::{Mock, MockServer, ResponseTemplate};
                let (store, _guard) = open!("webhook_outbound_retry");
                let server = MockServer::start().await;
                Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).up_to_n_times(1).with_priority(1).mount(&server).await;
                Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).with_priority(2).mount(&server).await;
                let clock = ManualClock::starting_now();
                let executor = Executor::builder(store.clone()).clock(clock.clone()).build();
                let sender = WebhookSender::builder(store.clone(), executor).build().unwrap();
                let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
                sender.upsert_endpoint("acme", &format!("{}/hooks", server.uri()), &[new.clone(), old.clone()]).await.unwrap();
                let payload = Bytes::from_static(br#"{"type":"invoice.paid","invoice":"in_1"}"#);
                let first = sender.enqueue("evt_out_1", "acme", payload.clone()).await.unwrap();
                assert!(first.created);
                // A retried "send webhook" job: one delivery.
                let again = sender.enqueue("evt_out_1", "acme", payload.clone()).await.unwrap();
                assert!(!again.created);
                assert!(sender.enqueue("evt_out_1", "acme", Bytes::from_static(b"{}")).await.is_err());

                let reports = sender.deliver_due(10).await.unwrap();
                assert_eq!(reports.len(), 1);
                assert_eq!(reports[0].status, Some(500));
                assert_eq!(reports[0].state, idem::webhook::DeliveryState::Pending);
                assert!(sender.deliver_due(10).await.unwrap().is_empty(), "not due before the backoff");
                clock.advance(Duration::from_secs(5));
                let reports = sender.deliver_due(10).await.unwrap();
                assert_eq!(reports[0].state, idem::webhook::DeliveryState::Delivered);
                clock.advance(Duration::from_secs(3600));
                assert!(sender.deliver_due(10).await.unwrap().is_empty(), "a delivered event is not sent again");
                sender.enqueue("evt_out_1", "acme", payload.clone()).await.unwrap();
                assert!(sender.deliver_due(10).await.unwrap().is_empty());

                let received = server.received_requests().await.unwrap();
                assert_eq!(received.len(), 2);
                let mut stamps = Vec::new();
                for r in &received {
                    assert_eq!(r.headers["webhook-id"], "evt_out_1");
                    let ts = r.headers["webhook-timestamp"].to_str().unwrap().to_owned();
                    let sig = r.headers["webhook-signature"].to_str().unwrap();
                    assert_eq!(sig.split(' ').count(), 2, "one signature per secret");
                    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(ts.parse().unwrap());
                    for s in [&old, &new] {
                        signature::standard_verify(std::slice::from_ref(s), "evt_out_1", &ts, sig, &r.body, at, Duration::from_secs(300)).unwrap();
                    }
                    assert_eq!(r.body, payload.to_vec());
                    stamps.push(ts);
                }
                assert_ne!(stamps[0], stamps[1], "each attempt is signed afresh");
                let attempts = sender.attempts("evt_out_1").await.unwrap();
                assert_eq!(attempts.len(), 2);
                assert_eq!((attempts[0].status, attempts[1].status), (Some(500), Some(204)));
                assert!(attempts.iter().all(|a| a.webhook_id == "evt_out_1"));
                let ledger_key = idem::webhook::delivery_key("platform", "evt_out_1").unwrap();
                let op = store.get(&ledger_key).await.unwrap().unwrap();
                assert_eq!(op.state, OperationState::Succeeded);
                assert_eq!(op.claims, 2);
            }

            #[tokio::test]
            async fn an_endpoint_that_keeps_failing_is_disabled_and_visible() {
                use wiremock::matchers::method;
                use wiremock::{Mock, MockServer, ResponseTemplate};
                let (store, _guard) = open!("webhook_disable");
                let server = MockServer::start().await;
                Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
                let clock = ManualClock::starting_now();
                let executor = Executor::builder(store.clone()).clock(clock.clone()).build();
                let sender = WebhookSender::builder(store.clone(), executor)
                    .backoff(vec![Duration::from_secs(1); 10])
                    .disable_after(3)
                    .build()
                    .unwrap();
                sender.upsert_endpoint("flaky", &server.uri(), &[WebhookSecret::generate()]).await.unwrap();
                sender.enqueue("evt_d", "flaky", Bytes::from_static(b"{}")).await.unwrap();
                let mut made = 0;
                for _ in 0..6 {
                    made += sender.deliver_due(10).await.unwrap().len();
                    clock.advance(Duration::from_secs(1));
                }
                assert_eq!(made, 3, "no attempt once disabled");
                let disabled = sender.disabled_endpoints().await.unwrap();
                assert_eq!(disabled.len(), 1);
                assert_eq!(disabled[0].id, "flaky");
                assert_eq!(disabled[0].consecutive_failures, 3);
                assert!(disabled[0].disabled_reason.as_deref().unwrap().contains("3 failed attempts"));
                assert_eq!(sender.attempts("evt_d").await.unwrap().len(), 3);
                sender.enable_endpoint("flaky").await.unwrap();
                assert!(sender.disabled_endpoints().await.unwrap().is_empty());
                assert_eq!(sender.deliver_due(10).await.unwrap().len(), 1, "resumes once enabled");
            }
        }
    };
}

async fn open_sqlite(_name: &str) -> Option<(idem::ledger::SqliteStore, tempfile::TempDir)> {
    Some(idem::testing::sqlite_store().await)
}

async fn open_pg(name: &str) -> Option<(idem::ledger::PgStore, ())> {
    idem::testing::pg_store(name).await.map(|s| (s, ()))
}

webhook_suite!(sqlite, sqlx::Sqlite, open_sqlite, false);
webhook_suite!(postgres, sqlx::Postgres, open_pg, true);

#[test]
fn delivery_keys_are_injective_and_valid() {
    let ids = [
        "evt_1", "evt-1", "evt-5f1", "evt.1", "EVT_1", "a/b", "ä", "msg_2Lx9",
    ];
    let keys: Vec<_> = ids
        .iter()
        .map(|id| idem::webhook::delivery_key("platform", id).unwrap())
        .collect();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(idem::webhook::event_id_from_key(k).as_deref(), Some(ids[i]));
        for (j, other) in keys.iter().enumerate() {
            assert_eq!(i == j, k == other, "{} vs {}", ids[i], ids[j]);
        }
    }
    assert!(idem::webhook::delivery_key("platform", "").is_err());
    assert!(idem::webhook::delivery_key("platform", &"x".repeat(300)).is_err());
}
