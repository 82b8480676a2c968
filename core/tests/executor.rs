//! The outbound executor against wiremock fakes and raw TCP peers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idem::executor::{
    Begun, Classifier, Effect, RetrySettings, Source, StatusClassifier, Url, Verdict,
    default_status_verdict,
};
use idem::ledger::SqliteStore;
use idem::{
    ExecError, Executor, IdempotencyKey, LedgerStore, ManualClock, OperationState, OutboundRequest,
    Provider, SafetyClass, StoreError,
};
use tokio::io::AsyncReadExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn fast() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(4)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_attempt_timeout(Duration::from_millis(400))
        .with_total_timeout(Duration::from_secs(5))
}

fn native() -> Provider {
    Provider::new(
        "native",
        SafetyClass::NativeKey { retention: DAY },
        StatusClassifier,
    )
    .with_retry(fast())
}

fn local() -> Provider {
    Provider::new("local", SafetyClass::LocalOnly, StatusClassifier).with_retry(fast())
}

/// A local-only provider that documents 429 as "not processed".
#[derive(Debug)]
struct ThrottleIsNotProcessed;

impl Classifier for ThrottleIsNotProcessed {
    fn classify(&self, status: http::StatusCode, _: &http::HeaderMap, _: &[u8]) -> Verdict {
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            Verdict::Transient(Effect::None)
        } else {
            default_status_verdict(status)
        }
    }
}

fn key(s: &str) -> IdempotencyKey {
    s.parse().unwrap()
}

struct Setup {
    exec: Executor,
    store: SqliteStore,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (store, dir) = idem::testing::sqlite_store().await;
    let clock = ManualClock::starting_now();
    let exec = Executor::builder(store.clone())
        .clock(clock.clone())
        .build();
    Setup {
        exec,
        store,
        clock,
        _dir: dir,
    }
}

fn request(base: &str, k: &IdempotencyKey) -> OutboundRequest {
    let url: Url = format!("{base}/v1/charges").parse().unwrap();
    OutboundRequest::post(url)
        .header("Idempotency-Key", k.as_str())
        .form([("amount", "500"), ("currency", "usd")])
}

/// Answers from a script, one entry per call; the last entry repeats.
struct Script(Vec<ResponseTemplate>, AtomicUsize);

impl Script {
    fn new(steps: Vec<ResponseTemplate>) -> Self {
        Self(steps, AtomicUsize::new(0))
    }
}

impl Respond for Script {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.1.fetch_add(1, Ordering::SeqCst);
        self.0[n.min(self.0.len() - 1)].clone()
    }
}

/// A mock provider that answers every POST with `response`, and fails the
/// test on drop unless it received exactly `expect` requests.
async fn answering(response: impl Respond + 'static, expect: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(response)
        .expect(expect)
        .mount(&server)
        .await;
    server
}

fn keys_seen(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn state(store: &SqliteStore, k: &IdempotencyKey) -> OperationState {
    store.get(k).await.unwrap().unwrap().state
}

#[tokio::test]
async fn succeeded_in_ledger_makes_no_second_request() {
    let s = setup().await;
    let server = answering(
        ResponseTemplate::new(200).set_body_string("{\"id\":\"ch_1\"}"),
        1,
    )
    .await;
    let k = key("shop_charges_1_v1");
    let first = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap();
    assert_eq!(first.source, Source::Wire { attempts: 1 });
    for _ in 0..3 {
        let again = s
            .exec
            .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
            .await
            .unwrap();
        assert_eq!(again.source, Source::Ledger);
        assert_eq!(again.body, first.body);
        assert_eq!(again.status, 200);
    }
}

#[tokio::test]
async fn two_500s_then_200_is_three_requests_with_one_key() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(Script::new(vec![
            ResponseTemplate::new(500),
            ResponseTemplate::new(500),
            ResponseTemplate::new(200).set_body_string("{\"id\":\"ch_1\"}"),
        ]))
        .expect(3)
        .mount(&server)
        .await;
    let k = key("shop_charges_2_v1");
    let done = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap();
    assert_eq!(done.source, Source::Wire { attempts: 3 });
    let seen = keys_seen(&server.received_requests().await.unwrap());
    assert_eq!(
        seen,
        vec![k.to_string(); 3],
        "every attempt carries the same key"
    );
    assert_eq!(state(&s.store, &k).await, OperationState::Succeeded);
}

#[tokio::test]
async fn local_only_timeout_ends_unknown_and_is_never_resent() {
    let s = setup().await;
    let server = answering(
        ResponseTemplate::new(201).set_delay(Duration::from_secs(3)),
        1,
    )
    .await;
    let k = key("shop_messages_3_v1");
    for _ in 0..3 {
        let err = s
            .exec
            .execute(&local(), &k, "messages.create", request(&server.uri(), &k))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ExecError::OutcomeUnknown { key, .. } if key == &k),
            "{err}"
        );
        assert!(
            err.to_string().contains(k.as_str()),
            "the error names the key: {err}"
        );
    }
    assert_eq!(state(&s.store, &k).await, OperationState::Unknown);
}

#[tokio::test]
async fn local_only_5xx_is_not_retried() {
    let s = setup().await;
    let server = answering(ResponseTemplate::new(503), 1).await;
    let k = key("shop_messages_4_v1");
    let err = s
        .exec
        .execute(&local(), &k, "messages.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    let op = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(op.response_status, Some(503));
}

/// Reserves a loopback port that refuses connections until a server binds it.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn connect_refused_is_retried_and_sends_once() {
    let s = setup().await;
    let addr = closed_port();
    // The provider comes up only after the operation was claimed (the first
    // attempt follows the claim at once and is refused) and well before the
    // retry (at least 75 ms of backoff later).
    let watcher = s.store.clone();
    let watched = key("shop_messages_5_v1");
    let server = tokio::spawn(async move {
        while watcher
            .get(&watched)
            .await
            .unwrap()
            .is_none_or(|op| op.claims == 0)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let server = MockServer::builder().listener(listener).start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201).set_body_string("{}"))
            .expect(1)
            .mount(&server)
            .await;
        server
    });
    let provider = Provider::new("local", SafetyClass::LocalOnly, StatusClassifier).with_retry(
        fast()
            .with_max_attempts(6)
            .with_backoff(Duration::from_millis(150), Duration::from_millis(300)),
    );
    let k = key("shop_messages_5_v1");
    let done = s
        .exec
        .execute(
            &provider,
            &k,
            "messages.create",
            request(&format!("http://{addr}"), &k),
        )
        .await
        .unwrap();
    let Source::Wire { attempts } = done.source else {
        panic!("{:?}", done.source)
    };
    assert!(
        attempts >= 2,
        "the refused attempt was retried ({attempts} attempts)"
    );
    let server = server.await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn connect_refused_throughout_leaves_pending_for_a_later_run() {
    let s = setup().await;
    let addr = closed_port();
    let k = key("shop_messages_6_v1");
    let err = s
        .exec
        .execute(
            &local(),
            &k,
            "messages.create",
            request(&format!("http://{addr}"), &k),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::NotSent { .. }), "{err}");
    assert!(err.is_retryable());
    let op = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Pending);
    assert_eq!(op.claims, 1);
    // The provider is back: the later run sends it, with the same key.
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let server = MockServer::builder().listener(listener).start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    s.exec
        .execute(&local(), &k, "messages.create", request(&server.uri(), &k))
        .await
        .unwrap();
    assert_eq!(
        keys_seen(&server.received_requests().await.unwrap()),
        vec![k.to_string()]
    );
}

/// Starts an operation whose first request hangs at the provider, waits until
/// the provider has it, then kills the worker (aborts the task) mid-flight.
async fn crash_mid_flight(s: &Setup, provider: &Provider, server: &MockServer, k: &IdempotencyKey) {
    let exec = s.exec.clone();
    let provider = provider.clone();
    let (k2, base) = (k.clone(), server.uri());
    let task = tokio::spawn(async move {
        let _ = exec
            .execute(&provider, &k2, "charges.create", request(&base, &k2))
            .await;
    });
    let started = Instant::now();
    while server.received_requests().await.unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(
        state(&s.store, k).await,
        OperationState::Sending,
        "the dead worker's row is left sending"
    );
}

#[tokio::test]
async fn crash_after_sending_then_new_worker_reuses_the_key() {
    let s = setup().await;
    let server = answering(
        Script::new(vec![
            ResponseTemplate::new(200).set_delay(Duration::from_secs(2)),
            ResponseTemplate::new(200).set_body_string("{\"id\":\"ch_9\"}"),
        ]),
        2,
    )
    .await;
    let provider = native().with_retry(fast().with_attempt_timeout(Duration::from_secs(10)));
    let k = key("shop_charges_7_v1");
    crash_mid_flight(&s, &provider, &server, &k).await;

    // While the lease is live, another worker is refused rather than resending.
    let err = s
        .exec
        .execute(&provider, &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::InFlight { .. }), "{err}");

    // A new worker process (new executor, same ledger file) after the lease ran out.
    s.clock.advance(Duration::from_secs(3600));
    let store = SqliteStore::open(idem::testing::sqlite_path(&s._dir))
        .await
        .unwrap();
    let next_worker = Executor::builder(store).clock(s.clock.clone()).build();
    let done = next_worker
        .execute(&provider, &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap();
    assert_eq!(done.json::<serde_json::Value>().unwrap()["id"], "ch_9");
    assert_eq!(
        keys_seen(&server.received_requests().await.unwrap()),
        vec![k.to_string(), k.to_string()],
        "the retry reused the stored key"
    );
    let op = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!((op.state, op.claims), (OperationState::Succeeded, 2));
}

#[tokio::test]
async fn crash_after_sending_local_only_is_unknown_not_resent() {
    let s = setup().await;
    let server = answering(
        ResponseTemplate::new(201).set_delay(Duration::from_secs(2)),
        1,
    )
    .await;
    let provider = local().with_retry(fast().with_attempt_timeout(Duration::from_secs(10)));
    let k = key("shop_messages_8_v1");
    crash_mid_flight(&s, &provider, &server, &k).await;
    s.clock.advance(Duration::from_secs(3600));
    let err = s
        .exec
        .execute(&provider, &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::OutcomeUnknown { key, .. } if key == &k),
        "{err}"
    );
    assert_eq!(state(&s.store, &k).await, OperationState::Unknown);
}

#[tokio::test]
async fn retry_after_is_waited_out() {
    let s = setup().await;
    let server = answering(
        Script::new(vec![
            ResponseTemplate::new(429).insert_header("Retry-After", "1"),
            ResponseTemplate::new(201).set_body_string("{}"),
        ]),
        2,
    )
    .await;
    let provider =
        Provider::new("local", SafetyClass::LocalOnly, ThrottleIsNotProcessed).with_retry(fast());
    let k = key("shop_messages_9_v1");
    let started = Instant::now();
    s.exec
        .execute(&provider, &k, "messages.create", request(&server.uri(), &k))
        .await
        .unwrap();
    // A lower bound, not a timing measurement: the backoff alone is <= 40 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
}

/// Sends once to a provider that always answers 429 with `Retry-After:
/// value` (a wait above the settings' limit) and returns the wait the
/// "not sent" error reports.
async fn reported_wait(s: &Setup, value: &str, k: &IdempotencyKey) -> Option<Duration> {
    let server = answering(
        ResponseTemplate::new(429).insert_header("Retry-After", value),
        1,
    )
    .await;
    let provider =
        Provider::new("local", SafetyClass::LocalOnly, ThrottleIsNotProcessed).with_retry(fast());
    let err = s
        .exec
        .execute(&provider, k, "messages.create", request(&server.uri(), k))
        .await
        .unwrap_err();
    match err {
        ExecError::NotSent { retry_after, .. } => retry_after,
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn retry_after_beyond_the_limit_ends_the_claim_as_not_sent() {
    let s = setup().await;
    let k = key("shop_messages_10_v1");
    assert_eq!(
        reported_wait(&s, "120", &k).await,
        Some(Duration::from_secs(120))
    );
    assert_eq!(state(&s.store, &k).await, OperationState::Pending);
}

/// A `Retry-After` date is measured against the executor's clock, not the
/// system's: two minutes after the injected clock's 2001 is two minutes,
/// although by the system clock that date passed long ago (no wait at all,
/// so the claim would have retried instead of ending).
#[tokio::test]
async fn retry_after_dates_are_measured_against_the_injected_clock() {
    let s = setup().await;
    let start = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    s.clock.set(start);
    let date = idem::time::format_http_date(start + Duration::from_secs(120));
    let k = key("shop_messages_10b_v1");
    assert_eq!(
        reported_wait(&s, &date, &k).await,
        Some(Duration::from_secs(120))
    );
}

#[tokio::test]
async fn attempts_are_bounded_and_a_later_run_resends_inside_the_window() {
    let s = setup().await;
    let server = answering(ResponseTemplate::new(500), 4 + 4).await;
    let k = key("shop_charges_11_v1");
    let err = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        4,
        "max_attempts bounds one claim"
    );
    // An hour later (inside the 24 h key window) a retried job resends with the same key.
    s.clock.advance(Duration::from_secs(3600));
    let err = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(err.is_unknown());
    assert_eq!(
        keys_seen(&server.received_requests().await.unwrap()),
        vec![k.to_string(); 8]
    );
}

#[tokio::test]
async fn no_blind_resend_after_the_key_window() {
    let s = setup().await;
    let server = answering(ResponseTemplate::new(500), 4).await;
    let k = key("shop_charges_12_v1");
    s.exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    s.clock.advance(DAY + Duration::from_secs(1));
    let err = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::OutcomeUnknown { reason, .. } if reason.contains("window")),
        "{err}"
    );
}

#[tokio::test]
async fn total_time_is_bounded() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_delay(Duration::from_millis(300)))
        .mount(&server)
        .await;
    let provider = native().with_retry(
        fast()
            .with_max_attempts(100)
            .with_total_timeout(Duration::from_secs(1)),
    );
    let k = key("shop_charges_13_v1");
    let started = Instant::now();
    s.exec
        .execute(&provider, &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    let n = server.received_requests().await.unwrap().len();
    assert!(
        n < 100,
        "total_timeout stopped the retries after {n} attempts"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn key_reused_for_a_different_request_sends_nothing() {
    let s = setup().await;
    let server = answering(ResponseTemplate::new(200), 1).await;
    let k = key("shop_charges_14_v1");
    s.exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap();
    let url: Url = format!("{}/v1/charges", server.uri()).parse().unwrap();
    let different = OutboundRequest::post(url)
        .header("Idempotency-Key", k.as_str())
        .form([("amount", "999")]);
    let err = s
        .exec
        .execute(&native(), &k, "charges.create", different)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecError::Store(StoreError::KeyReused { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn rejection_is_stored_and_replayed_without_a_request() {
    let s = setup().await;
    let server = answering(
        ResponseTemplate::new(400).set_body_string("{\"error\":{\"code\":\"card_declined\"}}"),
        1,
    )
    .await;
    let k = key("shop_charges_15_v1");
    let first = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(
        matches!(
            first,
            ExecError::Rejected {
                from_ledger: false,
                ..
            }
        ),
        "{first}"
    );
    let second = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    match second {
        ExecError::Rejected {
            status,
            body,
            from_ledger: true,
            ..
        } => {
            assert_eq!(status, 400);
            assert!(String::from_utf8_lossy(&body).contains("card_declined"));
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn superseded_key_is_refused_and_the_bump_sends_v2() {
    let s = setup().await;
    let server = answering(
        Script::new(vec![ResponseTemplate::new(400), ResponseTemplate::new(200)]),
        2,
    )
    .await;
    let k = key("shop_charges_16_v1");
    s.exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    let v2 = s
        .store
        .bump(&k, false, idem::Clock::now(&s.clock))
        .await
        .unwrap();
    let err = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::Superseded { by, .. } if by == &v2),
        "{err}"
    );
    s.exec
        .execute(
            &native(),
            &v2,
            "charges.create",
            request(&server.uri(), &v2),
        )
        .await
        .unwrap();
    assert_eq!(
        keys_seen(&server.received_requests().await.unwrap()),
        vec![
            "shop_charges_16_v1".to_owned(),
            "shop_charges_16_v2".to_owned()
        ]
    );
}

#[tokio::test]
async fn reset_after_the_request_is_unknown_for_local_only() {
    let s = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            seen.fetch_add(1, Ordering::SeqCst);
            // Read the whole request, then drop the connection without a word:
            // the provider may have acted.
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            socket.set_zero_linger().ok();
            drop(socket);
        }
    });
    let k = key("shop_messages_17_v1");
    let err = s
        .exec
        .execute(
            &local(),
            &k,
            "messages.create",
            request(&format!("http://{addr}"), &k),
        )
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "never resent");
}

#[tokio::test]
async fn store_down_sends_nothing() {
    let s = setup().await;
    let server = answering(ResponseTemplate::new(200), 0).await;
    s.store.pool().close().await;
    let k = key("shop_charges_18_v1");
    let err = s
        .exec
        .execute(&native(), &k, "charges.create", request(&server.uri(), &k))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::Store(e) if e.is_unavailable()),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn multi_step_claim_keeps_its_checkpoint() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let k = key("shop_posts_19_v1");
    let fingerprint = idem::Fingerprint::builder()
        .extra("caption", b"hello")
        .finish();
    let Begun::Claimed(mut claim) = s
        .exec
        .begin(&local(), &k, "ig.publish", fingerprint.clone())
        .await
        .unwrap()
    else {
        panic!("expected a claim")
    };
    claim.checkpoint("container:42").await.unwrap();
    drop(claim); // the worker dies between the two steps
    s.clock.advance(Duration::from_secs(3600));
    let err = s
        .exec
        .begin(&local(), &k, "ig.publish", fingerprint.clone())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "local-only: no automatic resend");
    // The adapter reconciles (container still unpublished) and resumes.
    let Begun::Claimed(claim) = s
        .exec
        .begin_after_reconcile(&local(), &k, "ig.publish", fingerprint)
        .await
        .unwrap()
    else {
        panic!("expected a claim")
    };
    assert_eq!(
        claim.operation().checkpoint.as_deref(),
        Some("container:42")
    );
    assert!(claim.is_resend());
}
