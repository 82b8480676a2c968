//! The outbound guarantee under attack, through the public API only: a fake
//! provider (wiremock), an injected `ManualClock`, and a wrapper
//! `LedgerStore` that fails on command. Each case is one of the ways the
//! guarantee broke before (issue 13); each runs on SQLite and PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use idem::executor::{RetrySettings, StatusClassifier, Url};
use idem::ledger::{
    Begin, ClaimFrom, Completion, Lease, ListFilter, NewOperation, Operation, Resolution,
};
use idem::{
    ExecError, Executor, IdempotencyKey, LedgerStore, ManualClock, OperationState, OutboundRequest,
    Provider, SafetyClass, StoreError,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn fast() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(2)
        .with_backoff(Duration::from_millis(5), Duration::from_millis(10))
        .with_attempt_timeout(Duration::from_millis(300))
        .with_total_timeout(Duration::from_secs(2))
}

fn stripe_like() -> Provider {
    Provider::new(
        "stripe",
        SafetyClass::NativeKey { retention: DAY },
        StatusClassifier,
    )
    .with_retry(fast())
}

fn twilio_like() -> Provider {
    Provider::new("twilio", SafetyClass::LocalOnly, StatusClassifier).with_retry(fast())
}

fn key(s: &str) -> IdempotencyKey {
    s.parse().unwrap()
}

fn charge(base: &str, k: &IdempotencyKey) -> OutboundRequest {
    let url: Url = format!("{base}/v1/payment_intents").parse().unwrap();
    OutboundRequest::post(url)
        .header("Idempotency-Key", k.as_str())
        .form([("amount", "500"), ("currency", "usd")])
}

fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

async fn provider_answering(response: ResponseTemplate, expect: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(response)
        .expect(expect)
        .mount(&server)
        .await;
    server
}

/// A store that delegates to a real one and fails `complete` while
/// `fail_completes` is above zero (one failure per call).
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn LedgerStore>,
    fail_completes: AtomicU32,
}

impl Flaky {
    fn new(inner: Arc<dyn LedgerStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_completes: AtomicU32::new(0),
        })
    }
}

fn blip() -> StoreError {
    StoreError::Unavailable {
        message: "injected: connection reset by the database".into(),
        source: None,
    }
}

#[async_trait]
impl LedgerStore for Flaky {
    async fn begin(&self, op: &NewOperation, now: SystemTime) -> Result<Operation, StoreError> {
        self.inner.begin(op, now).await
    }
    async fn begin_claimed(
        &self,
        op: &NewOperation,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Begin, StoreError> {
        self.inner.begin_claimed(op, lease_for, now).await
    }
    async fn get(&self, key: &IdempotencyKey) -> Result<Option<Operation>, StoreError> {
        self.inner.get(key).await
    }
    async fn claim(
        &self,
        key: &IdempotencyKey,
        from: ClaimFrom,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner.claim(key, from, lease_for, now).await
    }
    async fn expire_lease(
        &self,
        key: &IdempotencyKey,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner.expire_lease(key, now).await
    }
    async fn checkpoint(
        &self,
        lease: &Lease,
        value: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.inner.checkpoint(lease, value, now).await
    }
    async fn renew(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Lease, StoreError> {
        self.inner.renew(lease, lease_for, now).await
    }
    async fn complete(
        &self,
        lease: &Lease,
        completion: &Completion,
        now: SystemTime,
    ) -> Result<Operation, StoreError> {
        let left = self.fail_completes.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_completes.store(left - 1, Ordering::SeqCst);
            return Err(blip());
        }
        self.inner.complete(lease, completion, now).await
    }
    async fn resolve(
        &self,
        key: &IdempotencyKey,
        resolution: &Resolution,
        now: SystemTime,
    ) -> Result<Operation, StoreError> {
        self.inner.resolve(key, resolution, now).await
    }
    async fn bump(
        &self,
        key: &IdempotencyKey,
        force: bool,
        now: SystemTime,
    ) -> Result<IdempotencyKey, StoreError> {
        self.inner.bump(key, force, now).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Operation>, StoreError> {
        self.inner.list(filter).await
    }
    async fn purge(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        self.inner.purge(before, batch).await
    }
    async fn forget(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        self.inner.forget(before, batch).await
    }
}

struct World {
    exec: Executor,
    store: Arc<Flaky>,
    clock: ManualClock,
    _guard: Option<tempfile::TempDir>,
}

async fn world(backend: &str, test: &str) -> Option<World> {
    let (inner, guard): (Arc<dyn LedgerStore>, _) = match backend {
        "sqlite" => {
            let (store, dir) = idem::testing::sqlite_store().await;
            (Arc::new(store), Some(dir))
        }
        _ => (Arc::new(idem::testing::pg_store(test).await?), None),
    };
    let store = Flaky::new(inner);
    let clock = ManualClock::starting_now();
    let exec = Executor::builder_shared(store.clone())
        .clock(clock.clone())
        .lease_margin(Duration::from_secs(1))
        .build();
    Some(World {
        exec,
        store,
        clock,
        _guard: guard,
    })
}

async fn row(w: &World, k: &IdempotencyKey) -> Operation {
    w.store.get(k).await.unwrap().unwrap()
}

/// Scenario 1: a timeout makes the charge `unknown`; an hour later the
/// retry is refused by the network (provably not sent). That must not erase
/// "possibly applied": 25 h after the first send, nothing may be sent with
/// a key Stripe has forgotten.
async fn a_failed_resend_keeps_possibly_applied(backend: &str) {
    let Some(w) = world(backend, "a_failed_resend_keeps_possibly_applied").await else {
        return;
    };
    let k = key("shop_payments_1_v1");
    let slow = provider_answering(
        ResponseTemplate::new(200)
            .set_body_string(r#"{"id":"pi_1"}"#)
            .set_delay(Duration::from_secs(2)),
        2,
    )
    .await;
    let err = w
        .exec
        .execute(
            &stripe_like(),
            &k,
            "payment_intents.create",
            charge(&slow.uri(), &k),
        )
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    let first = row(&w, &k).await;
    assert!(first.may_have_taken_effect());

    w.clock.advance(HOUR);
    let err = w
        .exec
        .execute(
            &stripe_like(),
            &k,
            "payment_intents.create",
            charge(&closed_port(), &k),
        )
        .await
        .unwrap_err();
    assert!(
        err.is_unknown() && !err.is_retryable(),
        "a refused resend does not make the charge 'not sent': {err}"
    );
    let after = row(&w, &k).await;
    assert_eq!(after.state, OperationState::Unknown);
    assert_eq!(after.maybe_applied_at, first.maybe_applied_at);

    w.clock.advance(DAY);
    let late = provider_answering(ResponseTemplate::new(200), 0).await;
    let err = w
        .exec
        .execute(
            &stripe_like(),
            &k,
            "payment_intents.create",
            charge(&late.uri(), &k),
        )
        .await
        .unwrap_err();
    assert!(
        err.is_unknown(),
        "past the key window it needs reconciliation: {err}"
    );
    assert_eq!(row(&w, &k).await.state, OperationState::Unknown);
    // `late` verifies on drop that it received nothing.
}

/// Scenario 3: Twilio answered 201 with the SID, then the completion write
/// failed once. The write is retried and the answer kept.
async fn a_ledger_blip_after_the_answer_loses_nothing(backend: &str) {
    let Some(w) = world(backend, "a_ledger_blip_after_the_answer_loses_nothing").await else {
        return;
    };
    let server = provider_answering(
        ResponseTemplate::new(201).set_body_string(r#"{"sid":"SM1","status":"queued"}"#),
        2,
    )
    .await;
    let k = key("shop_messages_1_v1");
    w.store.fail_completes.store(1, Ordering::SeqCst);
    let sent = w
        .exec
        .execute(
            &twilio_like(),
            &k,
            "messages.create",
            charge(&server.uri(), &k),
        )
        .await
        .expect("the blip is absorbed by a retried write");
    assert_eq!(sent.status.as_u16(), 201);
    let stored = row(&w, &k).await;
    assert_eq!(stored.state, OperationState::Succeeded);
    assert_eq!(stored.provider_id.as_deref(), Some("SM1"));

    // A store that stays down: the answer comes back in a distinct error
    // that is not "safe to retry".
    let k = key("shop_messages_2_v1");
    w.store.fail_completes.store(1_000, Ordering::SeqCst);
    let err = w
        .exec
        .execute(
            &twilio_like(),
            &k,
            "messages.create",
            charge(&server.uri(), &k),
        )
        .await
        .unwrap_err();
    w.store.fail_completes.store(0, Ordering::SeqCst);
    match &err {
        ExecError::AnswerNotRecorded { key: got, answer } => {
            assert_eq!(got, &k);
            assert_eq!(answer.status.as_u16(), 201);
            assert!(answer.succeeded);
            assert_eq!(answer.provider_id.as_deref(), Some("SM1"));
            assert!(answer.error.is_unavailable());
        }
        other => panic!("expected AnswerNotRecorded, got {other}"),
    }
    assert!(!err.is_retryable(), "never call this safe to retry");
    assert!(err.to_string().contains(k.as_str()));
    // The row is still held (`sending`), then `unknown`: never `pending`.
    assert_eq!(row(&w, &k).await.state, OperationState::Sending);
}

/// Scenario 4: the lease runs out while the response is in flight (a clock
/// step). Nobody claims the row; the late 201 is recorded, not thrown away.
async fn a_late_success_is_kept(backend: &str) {
    let Some(w) = world(backend, "a_late_success_is_kept").await else {
        return;
    };
    // The answer takes 2 s; the attempt may take 10 s.
    let patient = Provider::new("twilio", SafetyClass::LocalOnly, StatusClassifier).with_retry(
        fast()
            .with_attempt_timeout(Duration::from_secs(10))
            .with_total_timeout(Duration::from_secs(20)),
    );
    let server = provider_answering(
        ResponseTemplate::new(201)
            .set_body_string(r#"{"sid":"SM9"}"#)
            .set_delay(Duration::from_secs(2)),
        1,
    )
    .await;
    let k = key("shop_messages_9_v1");
    let exec = w.exec.clone();
    let (k2, base) = (k.clone(), server.uri());
    let task = tokio::spawn(async move {
        exec.execute(&patient, &k2, "messages.create", charge(&base, &k2))
            .await
    });
    // Once the request is at the provider and while its answer is on the
    // way, the clock steps past the lease, and another worker notices and
    // marks the row unknown.
    let started = std::time::Instant::now();
    while server.received_requests().await.unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w.clock.advance(Duration::from_secs(3600));
    assert!(
        w.store
            .expire_lease(&k, w.clock.now_for_test())
            .await
            .unwrap()
    );
    let sent = task
        .await
        .unwrap()
        .expect("the late definitive answer is recorded");
    assert_eq!(sent.status.as_u16(), 201);
    let stored = row(&w, &k).await;
    assert_eq!(stored.state, OperationState::Succeeded);
    assert_eq!(stored.provider_id.as_deref(), Some("SM9"));
}

/// Scenario 4, second rule: a send never starts on an expired lease that
/// another worker has taken over.
async fn a_send_never_starts_on_a_lost_lease(backend: &str) {
    let Some(w) = world(backend, "a_send_never_starts_on_a_lost_lease").await else {
        return;
    };
    let server = provider_answering(ResponseTemplate::new(200).set_body_string("{}"), 1).await;
    let k = key("shop_payments_7_v1");
    let provider = stripe_like();
    let req = charge(&server.uri(), &k);
    let idem::executor::Begun::Claimed(mut slow) = w
        .exec
        .begin(&provider, &k, "payment_intents.create", req.fingerprint())
        .await
        .unwrap()
    else {
        panic!("fresh key is claimed");
    };
    // The first worker stalls past its lease; a second worker takes over and
    // sends (Stripe's key makes its resend safe).
    w.clock.advance(Duration::from_secs(3600));
    let second = w
        .exec
        .execute(
            &provider,
            &k,
            "payment_intents.create",
            charge(&server.uri(), &k),
        )
        .await
        .unwrap();
    assert_eq!(second.status.as_u16(), 200);
    // The stalled worker wakes up: it must not send.
    let outcome = slow.send(charge(&server.uri(), &k)).await;
    assert!(outcome.lease_lost);
    assert!(outcome.attempts.is_empty(), "nothing was sent");
    let err = slow.finish(outcome).await.unwrap_err();
    assert!(
        matches!(err, ExecError::Store(StoreError::LeaseLost { .. })),
        "{err}"
    );
    assert_eq!(row(&w, &k).await.state, OperationState::Succeeded);
}

/// Scenario 6: the weekly sweep must not forget a key that took effect; the
/// redelivered job is not sent again.
async fn the_sweep_remembers_what_was_done(backend: &str) {
    let Some(w) = world(backend, "the_sweep_remembers_what_was_done").await else {
        return;
    };
    let server = provider_answering(
        ResponseTemplate::new(201).set_body_string(r#"{"sid":"SM5"}"#),
        1,
    )
    .await;
    let k = key("shop_messages_5_v1");
    let provider = twilio_like();
    w.exec
        .execute(&provider, &k, "messages.create", charge(&server.uri(), &k))
        .await
        .unwrap();
    w.clock.advance(8 * DAY);
    let swept = w.store.purge(w.clock.now_for_test(), 100).await.unwrap();
    assert_eq!(swept, 1);
    let err = w
        .exec
        .execute(&provider, &k, "messages.create", charge(&server.uri(), &k))
        .await
        .unwrap_err();
    match &err {
        ExecError::Compacted {
            key: got,
            state,
            provider_id,
        } => {
            assert_eq!(got, &k);
            assert_eq!(*state, OperationState::Succeeded);
            assert_eq!(provider_id.as_deref(), Some("SM5"));
        }
        other => panic!("expected Compacted, got {other}"),
    }
    assert!(!err.is_retryable());
}

/// Outbound fingerprint: the same key sent for another connected account is
/// refused, not answered from the first account's row.
async fn the_same_key_for_another_account_is_refused(backend: &str) {
    let Some(w) = world(backend, "the_same_key_for_another_account_is_refused").await else {
        return;
    };
    let server = provider_answering(
        ResponseTemplate::new(200).set_body_string(r#"{"id":"pi_a"}"#),
        1,
    )
    .await;
    let k = key("shop_payments_3_v1");
    let for_account = |acct: &str| charge(&server.uri(), &k).header("Stripe-Account", acct);
    w.exec
        .execute(
            &stripe_like(),
            &k,
            "payment_intents.create",
            for_account("acct_A"),
        )
        .await
        .unwrap();
    let err = w
        .exec
        .execute(
            &stripe_like(),
            &k,
            "payment_intents.create",
            for_account("acct_B"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecError::Store(StoreError::KeyReused { .. })),
        "{err}"
    );
}

trait NowForTest {
    fn now_for_test(&self) -> SystemTime;
}

impl NowForTest for ManualClock {
    fn now_for_test(&self) -> SystemTime {
        idem::Clock::now(self)
    }
}

macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case("sqlite").await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case("postgres").await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_failed_resend_keeps_possibly_applied,
    a_ledger_blip_after_the_answer_loses_nothing,
    a_late_success_is_kept,
    a_send_never_starts_on_a_lost_lease,
    the_sweep_remembers_what_was_done,
    the_same_key_for_another_account_is_refused,
);

/// Scenario 5: the embedded ledger is durable by default and respects the
/// caller's own choice.
#[tokio::test]
async fn sqlite_is_durable_by_default_and_respects_the_callers_choice() {
    use idem::ledger::SqliteStore;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};
    let dir = tempfile::tempdir().unwrap();
    let open = SqliteStore::open(dir.path().join("a.db")).await.unwrap();
    assert_eq!(open.synchronous().await.unwrap(), 2, "open() is FULL");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
    let connect = SqliteStore::connect(&url).await.unwrap();
    assert_eq!(connect.synchronous().await.unwrap(), 2, "connect() is FULL");
    let plain = SqliteConnectOptions::new()
        .filename(dir.path().join("c.db"))
        .create_if_missing(true);
    let unset = SqliteStore::connect_with(plain.clone()).await.unwrap();
    assert_eq!(unset.synchronous().await.unwrap(), 2, "unset stays FULL");
    let normal = SqliteStore::connect_with(plain.synchronous(SqliteSynchronous::Normal))
        .await
        .unwrap();
    assert_eq!(
        normal.synchronous().await.unwrap(),
        1,
        "the caller's NORMAL is kept"
    );
}
