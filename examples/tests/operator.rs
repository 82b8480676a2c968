//! The operator CLI's commands against a real SQLite ledger.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use idem::ledger::{ClaimFrom, Completion, NewOperation};
use idem::{Fingerprint, IdempotencyKey, LedgerStore, OperationState};
use idem_examples::operator::{OperatorError, run};

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

async fn seed(
    store: &dyn LedgerStore,
    key: &str,
    completion: Completion,
    now: SystemTime,
) -> IdempotencyKey {
    let key: IdempotencyKey = key.parse().unwrap();
    let fp = Fingerprint::builder()
        .body(key.as_str().as_bytes())
        .finish();
    store
        .begin(
            &NewOperation::new(key.clone(), "stripe", "payment_intents.create", fp),
            now,
        )
        .await
        .unwrap();
    let lease = store
        .claim(&key, ClaimFrom::Pending, Duration::from_secs(60), now)
        .await
        .unwrap()
        .unwrap();
    store.complete(&lease, &completion, now).await.unwrap();
    key
}

#[tokio::test]
async fn list_show_retry_sweep() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let now = SystemTime::now();
    let old = now - Duration::from_secs(30 * 86_400);
    let failed = Completion::Failed {
        status: 402,
        body: Bytes::from_static(b"{}"),
        note: "card declined".into(),
    };
    let unknown = Completion::Unknown {
        note: "timed out after sending".into(),
        status: None,
    };
    let ok = Completion::Succeeded {
        status: 200,
        body: Bytes::from_static(b"{\"id\":1}"),
    };
    let k_failed = seed(&store, "joes_transactions_1_v1", failed, now).await;
    let k_unknown = seed(&store, "joes_transactions_2_v1", unknown, now).await;
    let k_ok = seed(&store, "joes_transactions_3_v1", ok.clone(), now).await;
    let k_old = seed(&store, "joes_transactions_4_v1", ok, old).await;

    let listed = run(&store, &args("list"), now).await.unwrap();
    assert!(
        listed.contains(k_failed.as_str()) && listed.contains(k_unknown.as_str()),
        "{listed}"
    );
    assert!(
        !listed.contains(k_ok.as_str()),
        "succeeded rows are not problems: {listed}"
    );

    let shown = run(&store, &args(&format!("show {k_unknown}")), now)
        .await
        .unwrap();
    assert!(
        shown.contains("state:          unknown") && shown.contains("timed out after sending"),
        "{shown}"
    );

    let retried = run(&store, &args(&format!("retry {k_failed}")), now)
        .await
        .unwrap();
    assert!(
        retried.contains("next attempt: joes_transactions_1_v2"),
        "{retried}"
    );
    assert!(
        retried.contains("before:") && retried.contains("after:") && retried.contains("superseded"),
        "{retried}"
    );
    assert_eq!(
        store.get(&k_failed).await.unwrap().unwrap().state,
        OperationState::Superseded
    );

    let retried = run(&store, &args(&format!("retry {k_unknown}")), now)
        .await
        .unwrap();
    assert!(
        retried.contains("warning") && retried.contains("Reconcile"),
        "unknown gets a warning: {retried}"
    );

    // A succeeded operation needs --force.
    let refused = run(&store, &args(&format!("retry {k_ok}")), now)
        .await
        .unwrap_err();
    assert!(matches!(refused, OperatorError::Store(_)), "{refused}");
    assert_eq!(
        store.get(&k_ok).await.unwrap().unwrap().state,
        OperationState::Succeeded
    );
    run(&store, &args(&format!("retry {k_ok} --force")), now)
        .await
        .unwrap();

    let swept = run(&store, &args("sweep --older-than-days 7 --batch 1"), now)
        .await
        .unwrap();
    assert!(swept.contains("swept 1 "), "{swept}");
    assert!(store.get(&k_old).await.unwrap().is_none());
    assert!(store.get(&k_unknown).await.unwrap().is_some());
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let now = SystemTime::now();
    for (input, expect) in [
        ("", "no command"),
        ("frobnicate", "unknown command"),
        ("show", "exactly one KEY"),
        ("show Not_A_Key", "invalid key"),
        ("list --state nope", "unknown state"),
        ("list --limit x", "takes a number"),
        ("retry shop_t_1_v1 --yes", "unknown flag"),
        ("show shop_t_1_v1", "no ledger record"),
    ] {
        let err = run(&store, &args(input), now)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{input:?} -> {err}");
    }
}
