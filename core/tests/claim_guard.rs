//! The second line behind scenario 1 of the outbound-guarantee issue: a row
//! that may have taken effect is `unknown`, never `pending` (the completion
//! path sees to that). Should such a row be `pending` all the same (a manual
//! edit, a future bug), a plain pending claim still refuses it; only the
//! caller that has decided a resend is safe (`ClaimFrom::PendingOrUnknown`)
//! may take it. The row is forced into that state with raw SQL, because no
//! store operation produces it.

use std::time::{Duration, SystemTime};

use idem::ledger::{Begin, ClaimFrom, Completion, LedgerStore, NewOperation};
use idem::{Fingerprint, IdempotencyKey};

const FORCE: &str = "UPDATE idem_operations SET state = 'pending', \
    maybe_applied_at = COALESCE(maybe_applied_at, $2) WHERE key = $1";

async fn possibly_applied_pending_row<S: LedgerStore>(
    store: &S,
    force: impl AsyncFnOnce(&str, i64),
) -> IdempotencyKey {
    let key: IdempotencyKey = "shop_texts_9_v1".parse().unwrap();
    let op = NewOperation::new(
        key.clone(),
        "twilio",
        "messages.create",
        Fingerprint::builder().extra("body", b"hi").finish(),
    );
    let now = SystemTime::now();
    let Begin::Claimed(_, lease) = store
        .begin_claimed(&op, Duration::from_secs(60), now)
        .await
        .unwrap()
    else {
        panic!("fresh key");
    };
    store
        .complete(
            &lease,
            &Completion::Unknown {
                note: "test: timed out after sending".into(),
                status: None,
            },
            now,
        )
        .await
        .unwrap();
    force(key.as_str(), 1_800_000_000_000).await;
    key
}

async fn check<S: LedgerStore>(store: &S, key: &IdempotencyKey) {
    let now = SystemTime::now();
    let lease = Duration::from_secs(60);
    assert!(
        store
            .claim(key, ClaimFrom::Pending, lease, now)
            .await
            .unwrap()
            .is_none(),
        "a pending row that may have taken effect is not claimed as fresh"
    );
    assert!(
        store
            .claim(key, ClaimFrom::PendingOrUnknown, lease, now)
            .await
            .unwrap()
            .is_some(),
        "the caller that decided a resend is safe may take it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pending_claim_refuses_a_possibly_applied_row() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let pool = store.pool().clone();
    let key = possibly_applied_pending_row(&store, async |k, at| {
        sqlx::query(FORCE)
            .bind(k)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
    })
    .await;
    check(&store, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pending_claim_refuses_a_possibly_applied_row() {
    let Some(store) = idem::testing::pg_store("claim_guard").await else {
        return;
    };
    let pool = store.pool().clone();
    let key = possibly_applied_pending_row(&store, async |k, at| {
        sqlx::query(FORCE)
            .bind(k)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
    })
    .await;
    check(&store, &key).await;
}
