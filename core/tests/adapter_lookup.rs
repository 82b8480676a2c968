//! The reconciliation skeleton every adapter uses (`AdapterCore::open_lookup`
//! and `AdapterCore::settle`), attacked with the sequences that break a
//! lookup made without a lease: another worker re-claiming and resending
//! while the provider is asked, a status callback settling the row
//! meanwhile, and lookups aimed at the wrong record.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use idem::adapter::{AdapterCore, CallError, Expect, Lookup, Provider, Settled, WireError};
use idem::executor::{RetrySettings, SafetyClass, StatusClassifier};
use idem::ledger::{ClaimFrom, Completion, LedgerStore, NewOperation, Resolution, SqliteStore};
use idem::{Executor, Fingerprint, IdempotencyKey, ManualClock, OperationState};

#[derive(Debug, thiserror::Error)]
#[error("acme error")]
struct Wire;

impl WireError for Wire {
    fn parse(_: http::StatusCode, _: Option<&http::HeaderMap>, _: &[u8]) -> Self {
        Wire
    }
}

struct Acme;

impl Provider for Acme {
    const NAME: &'static str = "acme";
    type WireError = Wire;
    type Classifier = StatusClassifier;
    fn safety_class() -> SafetyClass {
        SafetyClass::LocalOnly
    }
    fn classifier() -> StatusClassifier {
        StatusClassifier
    }
    fn default_retry() -> RetrySettings {
        RetrySettings::default()
    }
}

type Error = CallError<Wire, Infallible>;

const LEASE: Duration = Duration::from_secs(30);

struct Setup {
    core: AdapterCore,
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
    let core = AdapterCore::new::<Acme>(exec, "https://api.acme.test/", Acme::default_retry())
        .expect("base URL");
    Setup {
        core,
        store,
        clock,
        _dir: dir,
    }
}

fn key(s: &str) -> IdempotencyKey {
    s.parse().expect("key")
}

fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::builder()
        .method("POST")
        .target("/v1/orders")
        .body(body.as_bytes())
        .finish()
}

impl Setup {
    fn now(&self) -> std::time::SystemTime {
        self.core.executor().now()
    }

    /// A row of `provider`/`operation` for `body`, left `pending`.
    async fn pending(&self, k: &IdempotencyKey, provider: &str, operation: &str, body: &str) {
        let op = NewOperation::new(k.clone(), provider, operation, fingerprint(body));
        self.store.begin(&op, self.now()).await.expect("begin");
    }

    /// One send of the row that ends with its outcome unknown.
    async fn send_unknown(&self, k: &IdempotencyKey) {
        let lease = self
            .store
            .claim(k, ClaimFrom::PendingOrUnknown, LEASE, self.now())
            .await
            .expect("claim")
            .expect("claimed");
        let unknown = Completion::Unknown {
            note: "timeout".to_owned(),
            status: None,
        };
        self.store
            .complete(&lease, &unknown, self.now())
            .await
            .expect("complete");
    }

    async fn unknown_row(&self, k: &IdempotencyKey) -> idem::Operation {
        self.pending(k, "acme", "orders.create", "a").await;
        self.send_unknown(k).await;
        self.row(k).await
    }

    async fn row(&self, k: &IdempotencyKey) -> idem::Operation {
        self.store.get(k).await.expect("get").expect("row")
    }

    async fn open(&self, k: &IdempotencyKey, expect: Expect<'_>) -> Result<Lookup, Error> {
        self.core.open_lookup(k, expect).await
    }
}

fn not_applied() -> Resolution {
    Resolution::NotApplied {
        note: "the lookup found nothing".to_owned(),
    }
}

/// The attack: a reconciler opens an unknown row and asks the provider. While
/// it waits, an operator marks the row not applied, another worker claims it
/// and sends again, and that send also ends unknown. The row is `unknown`
/// again, exactly as the reconciler first saw it, except for its claims. A
/// "not applied" from the stale lookup would lead to a third send: it must
/// not be recorded.
#[tokio::test]
async fn a_stale_not_applied_after_another_send_is_not_recorded() {
    let s = setup().await;
    let k = key("shop_orders_1_v1");
    s.unknown_row(&k).await;
    let Lookup::Open(seen) = s
        .open(&k, Expect::operation("orders.create"))
        .await
        .unwrap()
    else {
        panic!("an unknown row opens for a lookup");
    };

    // Meanwhile: resolved not applied, claimed, sent, unknown again.
    s.store.resolve(&k, &not_applied(), s.now()).await.unwrap();
    s.send_unknown(&k).await;
    let before = s.row(&k).await;
    assert_eq!(before.state, OperationState::Unknown);
    assert_eq!(before.claims, seen.claims + 1);

    let err = s
        .core
        .settle::<Wire, Infallible>(&k, &seen, &not_applied())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::RecordChanged {
                state: OperationState::Unknown,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable(), "reconciling again is the way on");
    let after = s.row(&k).await;
    assert_eq!(after.state, OperationState::Unknown, "nothing was recorded");
    assert_eq!(after.claims, before.claims);
}

/// A status callback (or the sender's own late answer) settles the row
/// `succeeded` while the lookup runs: that record stands, whatever the
/// lookup concluded.
#[tokio::test]
async fn a_row_settled_meanwhile_keeps_its_answer() {
    let s = setup().await;
    let k = key("shop_orders_2_v1");
    let seen = s.unknown_row(&k).await;
    let theirs = Resolution::Succeeded {
        status: 200,
        body: Bytes::from_static(b"{\"id\":\"theirs\"}"),
        note: "from a status callback".to_owned(),
    };
    s.store.resolve(&k, &theirs, s.now()).await.unwrap();

    let settled = s
        .core
        .settle::<Wire, Infallible>(&k, &seen, &not_applied())
        .await
        .unwrap();
    let Settled::AlreadySucceeded(op) = settled else {
        panic!("the earlier success stands: {settled:?}");
    };
    assert_eq!(
        op.response_body.as_deref(),
        Some(&b"{\"id\":\"theirs\"}"[..])
    );
    assert_eq!(s.row(&k).await.state, OperationState::Succeeded);
}

/// An unchanged row takes the verdict.
#[tokio::test]
async fn an_unchanged_row_records_the_verdict() {
    let s = setup().await;
    let k = key("shop_orders_3_v1");
    let seen = s.unknown_row(&k).await;
    let settled = s
        .core
        .settle::<Wire, Infallible>(&k, &seen, &not_applied())
        .await
        .unwrap();
    assert!(matches!(settled, Settled::Recorded(_)), "{settled:?}");
    assert_eq!(s.row(&k).await.state, OperationState::Pending);
}

/// A lookup aimed at the wrong record is refused before anything is asked:
/// another provider's row, another operation, another request, no row.
#[tokio::test]
async fn a_lookup_of_the_wrong_record_is_refused() {
    let s = setup().await;
    let theirs = key("shop_orders_4_v1");
    s.pending(&theirs, "other", "orders.create", "a").await;
    s.send_unknown(&theirs).await;
    let err = s.open(&theirs, Expect::any()).await.unwrap_err();
    assert!(matches!(err, CallError::KeyReused { .. }), "{err:?}");

    let k = key("shop_orders_5_v1");
    s.unknown_row(&k).await;
    let err = s
        .open(&k, Expect::operation("refunds.create"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::KeyReused { .. }), "{err:?}");
    let other = fingerprint("b");
    let err = s
        .open(&k, Expect::any().fingerprint(&other))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::KeyReused { .. }), "{err:?}");
    let same = fingerprint("a");
    let opened = s
        .open(&k, Expect::operation("orders.create").fingerprint(&same))
        .await;
    assert!(matches!(opened, Ok(Lookup::Open(_))), "{opened:?}");

    let err = s
        .open(&key("shop_orders_6_v1"), Expect::any())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Store(idem::StoreError::NotFound { .. })),
        "{err:?}"
    );
    let reconcile = err.into_reconcile_error(&key("shop_orders_6_v1"));
    assert!(matches!(
        reconcile,
        idem::reconcile::ReconcileError::NotReconcilable { .. }
    ));
}

/// Each state opens as the table in `open_lookup`'s docs says.
#[tokio::test]
async fn each_state_opens_as_documented() {
    let s = setup().await;
    let k = key("shop_orders_7_v1");
    s.pending(&k, "acme", "orders.create", "a").await;
    assert!(matches!(
        s.open(&k, Expect::any()).await,
        Ok(Lookup::Pending(_))
    ));

    // A live lease: in flight, unless the lookup can only ever settle it.
    s.store
        .claim(&k, ClaimFrom::PendingOrUnknown, LEASE, s.now())
        .await
        .unwrap()
        .unwrap();
    let err = s.open(&k, Expect::any()).await.unwrap_err();
    assert!(matches!(err, CallError::InFlight { .. }), "{err:?}");
    assert!(matches!(
        s.open(&k, Expect::any().live_sending()).await,
        Ok(Lookup::Open(_))
    ));
    // The sender died: its lease runs out and the row opens.
    s.clock.advance(LEASE + Duration::from_secs(1));
    assert!(matches!(
        s.open(&k, Expect::any()).await,
        Ok(Lookup::Open(_))
    ));

    let failed = key("shop_orders_8_v1");
    s.pending(&failed, "acme", "orders.create", "a").await;
    let lease = s
        .store
        .claim(&failed, ClaimFrom::PendingOrUnknown, LEASE, s.now())
        .await
        .unwrap()
        .unwrap();
    let rejection = Completion::Failed {
        status: 422,
        body: Bytes::from_static(b"{}"),
        note: "rejected".to_owned(),
    };
    s.store.complete(&lease, &rejection, s.now()).await.unwrap();
    let err = s.open(&failed, Expect::any()).await.unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Rejected {
                from_ledger: true,
                ..
            }
        ),
        "{err:?}"
    );

    let bumped = key("shop_orders_9_v1");
    s.unknown_row(&bumped).await;
    let next = s.store.bump(&bumped, false, s.now()).await.unwrap();
    let err = s.open(&bumped, Expect::any()).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Superseded { by, .. } if *by == next),
        "{err:?}"
    );
}

/// A proof (a callback, a webhook event) settles only an open record, and
/// never downgrades or overrides one: a forged or late callback for a
/// `pending`, `failed` or bumped row, or for another provider's row, changes
/// nothing.
#[tokio::test]
async fn a_proof_settles_only_an_open_record() {
    use idem::adapter::{Proven, settle_by_proof};
    let s = setup().await;
    let answer = Bytes::from_static(b"{\"id\":\"proof\"}");
    let prove = |k: IdempotencyKey, provider: &'static str| {
        let (store, answer, now) = (s.store.clone(), answer.clone(), s.now());
        async move {
            let covers = |op: &idem::Operation| op.provider == provider;
            settle_by_proof(&store, &k, covers, answer, "proof", now)
                .await
                .unwrap()
        }
    };

    let pending = key("shop_orders_10_v1");
    s.pending(&pending, "acme", "orders.create", "a").await;
    assert!(matches!(
        prove(pending.clone(), "acme").await,
        Proven::Untouched(_)
    ));
    assert_eq!(s.row(&pending).await.state, OperationState::Pending);

    let open = key("shop_orders_11_v1");
    s.unknown_row(&open).await;
    assert!(matches!(
        prove(open.clone(), "other").await,
        Proven::NotCovered(_)
    ));
    assert_eq!(s.row(&open).await.state, OperationState::Unknown);
    assert!(matches!(
        prove(open.clone(), "acme").await,
        Proven::Settled(_)
    ));
    let row = s.row(&open).await;
    assert_eq!(row.state, OperationState::Succeeded);
    assert_eq!(row.response_body.as_deref(), Some(&answer[..]));
    assert!(matches!(
        prove(open.clone(), "acme").await,
        Proven::AlreadySucceeded(_)
    ));

    let live = key("shop_orders_12_v1");
    s.pending(&live, "acme", "orders.create", "a").await;
    s.store
        .claim(&live, ClaimFrom::PendingOrUnknown, LEASE, s.now())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        prove(live.clone(), "acme").await,
        Proven::InFlight(_)
    ));
    s.clock.advance(LEASE + Duration::from_secs(1));
    assert!(matches!(
        prove(live.clone(), "acme").await,
        Proven::Settled(_)
    ));

    let bumped = key("shop_orders_13_v1");
    s.unknown_row(&bumped).await;
    s.store.bump(&bumped, false, s.now()).await.unwrap();
    assert!(matches!(
        prove(bumped.clone(), "acme").await,
        Proven::Untouched(_)
    ));
    assert_eq!(s.row(&bumped).await.state, OperationState::Superseded);
    assert!(matches!(
        prove(key("shop_orders_14_v1"), "acme").await,
        Proven::NoRecord
    ));
}
