//! One conformance suite for every ledger store. Each case is a function over
//! `Arc<dyn LedgerStore>`; the macro at the bottom runs every case against
//! SQLite, against PostgreSQL (which skips loudly outside CI when no
//! server is reachable, and fails under CI) and against the in-memory store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use idem::ledger::{Begin, ClaimFrom, Completion, ListFilter, NewOperation, Resolution};
use idem::{Fingerprint, IdempotencyKey, LedgerStore, OperationState, StoreError};

const LEASE: Duration = Duration::from_secs(60);

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn key(s: &str) -> IdempotencyKey {
    s.parse().unwrap()
}

fn fp(body: &str) -> Fingerprint {
    Fingerprint::builder()
        .method("POST")
        .target("/x")
        .body(body.as_bytes())
        .finish()
}

fn new_op(k: &str) -> NewOperation {
    NewOperation::new(key(k), "acme", "things.create", fp("a=1"))
}

async fn claimed(store: &dyn LedgerStore, k: &str, now: SystemTime) -> idem::ledger::Lease {
    store.begin(&new_op(k), now).await.unwrap();
    store
        .claim(&key(k), ClaimFrom::Pending, LEASE, now)
        .await
        .unwrap()
        .expect("claimable")
}

fn ok(status: u16, body: &'static str) -> Completion {
    Completion::Succeeded {
        status,
        body: Bytes::from_static(body.as_bytes()),
    }
}

async fn begin_records_pending_once(store: Arc<dyn LedgerStore>) {
    let first = store.begin(&new_op("s_t_1_v1"), t(0)).await.unwrap();
    assert_eq!(first.state, OperationState::Pending);
    assert_eq!(first.claims, 0);
    assert_eq!(first.created_at, t(0));
    let again = store.begin(&new_op("s_t_1_v1"), t(5)).await.unwrap();
    assert_eq!(
        again, first,
        "a second begin returns the stored row unchanged"
    );
}

async fn fingerprint_mismatch_is_refused(store: Arc<dyn LedgerStore>) {
    store.begin(&new_op("s_t_1_v1"), t(0)).await.unwrap();
    let other_body = NewOperation::new(key("s_t_1_v1"), "acme", "things.create", fp("a=2"));
    let err = store.begin(&other_body, t(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::KeyReused { .. }), "{err}");
    let other_op = NewOperation::new(key("s_t_1_v1"), "acme", "things.delete", fp("a=1"));
    assert!(matches!(
        store.begin(&other_op, t(1)).await,
        Err(StoreError::KeyReused { .. })
    ));
    let other_provider = NewOperation::new(key("s_t_1_v1"), "other", "things.create", fp("a=1"));
    assert!(matches!(
        store.begin(&other_provider, t(1)).await,
        Err(StoreError::KeyReused { .. })
    ));
    // The mismatch changed nothing.
    let row = store.get(&key("s_t_1_v1")).await.unwrap().unwrap();
    assert_eq!(row.fingerprint, fp("a=1"));
    assert_eq!(row.state, OperationState::Pending);
}

async fn claim_is_exclusive_and_success_is_stored(store: Arc<dyn LedgerStore>) {
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    assert_eq!(lease.expires_at, t(60));
    let row = store.get(&key("s_t_1_v1")).await.unwrap().unwrap();
    assert_eq!(row.state, OperationState::Sending);
    assert_eq!(row.claims, 1);
    assert_eq!(row.first_sent_at, Some(t(0)));
    assert!(
        store
            .claim(&key("s_t_1_v1"), ClaimFrom::PendingOrUnknown, LEASE, t(1))
            .await
            .unwrap()
            .is_none(),
        "a live lease cannot be claimed again"
    );
    let done = store
        .complete(&lease, &ok(201, "{\"id\":7}"), t(2))
        .await
        .unwrap();
    assert_eq!(done.state, OperationState::Succeeded);
    assert_eq!(done.response_status, Some(201));
    assert_eq!(done.response_body.as_deref(), Some(&b"{\"id\":7}"[..]));
    assert_eq!(done.lease_expires_at, None);
    assert!(
        store
            .claim(&key("s_t_1_v1"), ClaimFrom::PendingOrUnknown, LEASE, t(3))
            .await
            .unwrap()
            .is_none()
    );
}

async fn failure_is_stored(store: Arc<dyn LedgerStore>) {
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    let failed = Completion::Failed {
        status: 400,
        body: Bytes::from_static(b"{\"error\":\"bad\"}"),
        note: "rejected".into(),
    };
    let row = store.complete(&lease, &failed, t(1)).await.unwrap();
    assert_eq!(row.state, OperationState::Failed);
    assert_eq!(row.response_status, Some(400));
    assert_eq!(row.note.as_deref(), Some("rejected"));
    assert!(
        store
            .claim(&key("s_t_1_v1"), ClaimFrom::PendingOrUnknown, LEASE, t(2))
            .await
            .unwrap()
            .is_none()
    );
}

async fn not_sent_returns_to_pending(store: Arc<dyn LedgerStore>) {
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    let row = store
        .complete(
            &lease,
            &Completion::NotSent {
                note: "connect refused".into(),
            },
            t(1),
        )
        .await
        .unwrap();
    assert_eq!(row.state, OperationState::Pending);
    assert_eq!(row.first_sent_at, Some(t(0)), "first send time is kept");
    let again = store
        .claim(&key("s_t_1_v1"), ClaimFrom::Pending, LEASE, t(2))
        .await
        .unwrap();
    assert!(again.is_some());
    assert_eq!(
        store.get(&key("s_t_1_v1")).await.unwrap().unwrap().claims,
        2
    );
}

async fn unknown_needs_explicit_permission(store: Arc<dyn LedgerStore>) {
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    let unknown = Completion::Unknown {
        note: "timed out".into(),
        status: None,
    };
    let row = store.complete(&lease, &unknown, t(1)).await.unwrap();
    assert_eq!(row.state, OperationState::Unknown);
    assert!(
        store
            .claim(&key("s_t_1_v1"), ClaimFrom::Pending, LEASE, t(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .claim(&key("s_t_1_v1"), ClaimFrom::PendingOrUnknown, LEASE, t(2))
            .await
            .unwrap()
            .is_some()
    );
}

async fn lease_expiry_turns_sending_into_unknown(store: Arc<dyn LedgerStore>) {
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    assert!(
        !store.expire_lease(&key("s_t_1_v1"), t(59)).await.unwrap(),
        "lease still live"
    );
    assert!(store.expire_lease(&key("s_t_1_v1"), t(60)).await.unwrap());
    let row = store.get(&key("s_t_1_v1")).await.unwrap().unwrap();
    assert_eq!(row.state, OperationState::Unknown);
    assert!(row.note.as_deref().unwrap().contains("lease expired"));
    assert!(
        row.may_have_taken_effect(),
        "an expired send may have taken effect"
    );
    // Fencing is on "no newer claim": a new claim gets a new token, and the
    // old one can no longer complete.
    let second = store
        .claim(&key("s_t_1_v1"), ClaimFrom::PendingOrUnknown, LEASE, t(62))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(second.token, lease.token);
    assert!(matches!(
        store.complete(&lease, &ok(200, "{}"), t(63)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let row = store
        .complete(&second, &ok(200, "{\"ok\":1}"), t(63))
        .await
        .unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
    assert_eq!(row.claims, 2);
}

async fn a_late_definitive_answer_is_kept_when_no_newer_claim_came(store: Arc<dyn LedgerStore>) {
    // The holder's lease ran out (paused VM, clock step) and the row was
    // expired to unknown, but nobody claimed it since: the holder's success
    // is recorded.
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    assert!(store.expire_lease(&key("s_t_1_v1"), t(61)).await.unwrap());
    let row = store
        .complete(&lease, &ok(201, r#"{"sid":"SM1"}"#), t(62))
        .await
        .unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
    assert_eq!(row.provider_id.as_deref(), Some("SM1"));
    // The same without anyone noticing the expiry.
    let lease = claimed(&*store, "s_t_2_v1", t(0)).await;
    let row = store
        .complete(&lease, &ok(200, r#"{"id":"pi_2"}"#), t(500))
        .await
        .unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
    // An expired holder that sent nothing cannot downgrade unknown.
    let lease = claimed(&*store, "s_t_3_v1", t(0)).await;
    assert!(store.expire_lease(&key("s_t_3_v1"), t(61)).await.unwrap());
    let not_sent = Completion::NotSent {
        note: "connection refused".into(),
    };
    let row = store.complete(&lease, &not_sent, t(62)).await.unwrap();
    assert_eq!(row.state, OperationState::Unknown);
    assert!(row.may_have_taken_effect());
    // After an operator bump the old holder's answer is refused.
    let lease = claimed(&*store, "s_t_4_v1", t(0)).await;
    assert!(store.expire_lease(&key("s_t_4_v1"), t(61)).await.unwrap());
    store.bump(&key("s_t_4_v1"), false, t(62)).await.unwrap();
    assert!(matches!(
        store.complete(&lease, &ok(200, "{}"), t(63)).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

async fn may_have_taken_effect_is_never_downgraded(store: Arc<dyn LedgerStore>) {
    // Scenario: a timeout makes the row unknown; a resend inside the key
    // window is refused by the network (provably not sent); the row must stay
    // unknown, so that 25 h later it is not claimed as a fresh pending row.
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    let unknown = Completion::Unknown {
        note: "timeout".into(),
        status: None,
    };
    let row = store.complete(&lease, &unknown, t(30)).await.unwrap();
    assert_eq!(
        row.maybe_applied_at,
        Some(t(0)),
        "the earliest possible effect"
    );
    let resend = store
        .claim(
            &key("s_t_1_v1"),
            ClaimFrom::PendingOrUnknown,
            LEASE,
            t(3600),
        )
        .await
        .unwrap()
        .unwrap();
    let refused = Completion::NotSent {
        note: "connection refused".into(),
    };
    let row = store.complete(&resend, &refused, t(3601)).await.unwrap();
    assert_eq!(row.state, OperationState::Unknown, "not pending");
    assert_eq!(row.maybe_applied_at, Some(t(0)));
    assert!(
        row.note
            .as_deref()
            .unwrap()
            .contains("may have taken effect")
    );
    assert!(
        store
            .claim(&key("s_t_1_v1"), ClaimFrom::Pending, LEASE, t(90_000))
            .await
            .unwrap()
            .is_none(),
        "a plain pending claim never picks it up"
    );
    // Only reconciliation's proof of absence clears it.
    let row = store
        .resolve(
            &key("s_t_1_v1"),
            &Resolution::NotApplied {
                note: "the provider has no object with this key".into(),
            },
            t(90_001),
        )
        .await
        .unwrap();
    assert_eq!(row.state, OperationState::Pending);
    assert_eq!(row.maybe_applied_at, None);
    // The row that never had a possible effect goes back to pending.
    let lease = claimed(&*store, "s_t_2_v1", t(0)).await;
    let row = store.complete(&lease, &refused, t(1)).await.unwrap();
    assert_eq!(row.state, OperationState::Pending);
    assert_eq!(row.maybe_applied_at, None);
}

async fn leases_renew_until_taken_over(store: Arc<dyn LedgerStore>) {
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    let renewed = store.renew(&lease, LEASE, t(50)).await.unwrap();
    assert_eq!(renewed.expires_at, t(110));
    assert_eq!(renewed.token, lease.token);
    assert!(
        !store.expire_lease(&key("s_t_1_v1"), t(100)).await.unwrap(),
        "the renewed lease is live"
    );
    assert!(store.expire_lease(&key("s_t_1_v1"), t(110)).await.unwrap());
    assert!(matches!(
        store.renew(&renewed, LEASE, t(111)).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

async fn a_late_answer_survives_a_reconciliation_that_found_nothing(store: Arc<dyn LedgerStore>) {
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    assert!(store.expire_lease(&key("s_t_1_v1"), t(61)).await.unwrap());
    store
        .resolve(
            &key("s_t_1_v1"),
            &Resolution::NotApplied {
                note: "not found".into(),
            },
            t(70),
        )
        .await
        .unwrap();
    let row = store
        .complete(&lease, &ok(201, r#"{"id":"x_1"}"#), t(71))
        .await
        .unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
    assert_eq!(row.provider_id.as_deref(), Some("x_1"));
}

async fn checkpoint_survives_claims_and_is_fenced(store: Arc<dyn LedgerStore>) {
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    store
        .checkpoint(&lease, "container=17", t(1))
        .await
        .unwrap();
    let unknown = Completion::Unknown {
        note: "timeout".into(),
        status: None,
    };
    store.complete(&lease, &unknown, t(2)).await.unwrap();
    assert!(matches!(
        store.checkpoint(&lease, "x", t(3)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    store
        .claim(&key("s_t_1_v1"), ClaimFrom::PendingOrUnknown, LEASE, t(4))
        .await
        .unwrap()
        .unwrap();
    let row = store.get(&key("s_t_1_v1")).await.unwrap().unwrap();
    assert_eq!(row.checkpoint.as_deref(), Some("container=17"));
}

async fn resolve_settles_unknown_only(store: Arc<dyn LedgerStore>) {
    store.begin(&new_op("s_t_2_v1"), t(0)).await.unwrap();
    let found = Resolution::Succeeded {
        status: 200,
        body: Bytes::from_static(b"{\"id\":\"pi_1\"}"),
        note: "found by search".into(),
    };
    let err = store
        .resolve(&key("s_t_2_v1"), &found, t(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidState {
                state: OperationState::Pending,
                ..
            }
        ),
        "{err}"
    );

    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    store
        .complete(
            &lease,
            &Completion::Unknown {
                note: "t".into(),
                status: None,
            },
            t(1),
        )
        .await
        .unwrap();
    let row = store.resolve(&key("s_t_1_v1"), &found, t(2)).await.unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
    assert_eq!(row.note.as_deref(), Some("found by search"));
    assert!(matches!(
        store.resolve(&key("s_t_1_v1"), &found, t(3)).await,
        Err(StoreError::InvalidState {
            state: OperationState::Succeeded,
            ..
        })
    ));

    // A send whose lease expired can be resolved too, and NotApplied means
    // "send again with the same key".
    claimed(&*store, "s_t_3_v1", t(0)).await;
    let row = store
        .resolve(
            &key("s_t_3_v1"),
            &Resolution::NotApplied {
                note: "no such post".into(),
            },
            t(61),
        )
        .await
        .unwrap();
    assert_eq!(row.state, OperationState::Pending);
    assert!(matches!(
        store
            .resolve(
                &key("missing_t_1_v1"),
                &Resolution::NotApplied {
                    note: String::new()
                },
                t(1)
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn bump_rules(store: Arc<dyn LedgerStore>) {
    // failed -> superseded, returns v2.
    let lease = claimed(&*store, "s_t_1_v1", t(0)).await;
    let failed = Completion::Failed {
        status: 400,
        body: Bytes::new(),
        note: "no".into(),
    };
    store.complete(&lease, &failed, t(1)).await.unwrap();
    let next = store.bump(&key("s_t_1_v1"), false, t(2)).await.unwrap();
    assert_eq!(next.as_str(), "s_t_1_v2");
    let old = store.get(&key("s_t_1_v1")).await.unwrap().unwrap();
    assert_eq!(old.state, OperationState::Superseded);
    assert_eq!(old.superseded_by, Some(next.clone()));
    // Bumping a superseded attempt again is refused.
    assert!(matches!(
        store.bump(&key("s_t_1_v1"), true, t(3)).await,
        Err(StoreError::InvalidState {
            state: OperationState::Superseded,
            ..
        })
    ));
    // The new attempt starts fresh.
    let v2 = NewOperation::new(next.clone(), "acme", "things.create", fp("a=1"));
    assert_eq!(
        store.begin(&v2, t(4)).await.unwrap().state,
        OperationState::Pending
    );

    // succeeded: refused unless forced.
    let lease = claimed(&*store, "s_t_2_v1", t(0)).await;
    store.complete(&lease, &ok(200, "{}"), t(1)).await.unwrap();
    let err = store.bump(&key("s_t_2_v1"), false, t(2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidState {
                state: OperationState::Succeeded,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        store.get(&key("s_t_2_v1")).await.unwrap().unwrap().state,
        OperationState::Succeeded
    );
    assert_eq!(
        store
            .bump(&key("s_t_2_v1"), true, t(2))
            .await
            .unwrap()
            .as_str(),
        "s_t_2_v2"
    );

    // sending with a live lease: refused even when forced; after expiry allowed.
    claimed(&*store, "s_t_3_v1", t(0)).await;
    assert!(matches!(
        store.bump(&key("s_t_3_v1"), true, t(30)).await,
        Err(StoreError::InvalidState {
            state: OperationState::Sending,
            ..
        })
    ));
    assert_eq!(
        store
            .bump(&key("s_t_3_v1"), false, t(61))
            .await
            .unwrap()
            .as_str(),
        "s_t_3_v2"
    );

    // unknown: allowed (the operator's explicit call).
    let lease = claimed(&*store, "s_t_4_v1", t(0)).await;
    store
        .complete(
            &lease,
            &Completion::Unknown {
                note: "t".into(),
                status: None,
            },
            t(1),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .bump(&key("s_t_4_v1"), false, t(2))
            .await
            .unwrap()
            .as_str(),
        "s_t_4_v2"
    );

    assert!(matches!(
        store.bump(&key("nobody_t_1_v1"), false, t(2)).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn concurrent_claimers_have_one_winner(store: Arc<dyn LedgerStore>) {
    store.begin(&new_op("s_t_1_v1"), t(0)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim(&key("s_t_1_v1"), ClaimFrom::PendingOrUnknown, LEASE, t(1))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one of 50 concurrent claimers wins");
    assert_eq!(
        store.get(&key("s_t_1_v1")).await.unwrap().unwrap().claims,
        1
    );
}

async fn concurrent_begins_agree(store: Arc<dyn LedgerStore>) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Half of them use a different body: they must all be refused,
            // whoever inserted first (the race loser is checked too).
            let body = if i % 2 == 0 { "a=1" } else { "a=2" };
            let op = NewOperation::new(key("s_t_1_v1"), "acme", "things.create", fp(body));
            (body, store.begin(&op, t(0)).await)
        }));
    }
    let mut accepted = std::collections::HashSet::new();
    for task in tasks {
        let (body, result) = task.await.unwrap();
        match result {
            Ok(_) => {
                accepted.insert(body);
            }
            Err(StoreError::KeyReused { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(
        accepted.len(),
        1,
        "only one request shape is accepted for a key"
    );
}

async fn list_and_purge(store: Arc<dyn LedgerStore>) {
    for (i, completion) in [
        ok(200, "{}"),
        Completion::Failed {
            status: 400,
            body: Bytes::new(),
            note: "x".into(),
        },
        Completion::Unknown {
            note: "x".into(),
            status: None,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let k = format!("s_t_{i}_v1");
        let lease = claimed(&*store, &k, t(0)).await;
        store
            .complete(&lease, &completion, t(10 + i as u64))
            .await
            .unwrap();
    }
    store.begin(&new_op("s_t_9_v1"), t(20)).await.unwrap();
    let problems = store
        .list(&ListFilter {
            states: vec![OperationState::Failed, OperationState::Unknown],
            ..ListFilter::default()
        })
        .await
        .unwrap();
    let keys: Vec<_> = problems.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(
        keys,
        ["s_t_2_v1", "s_t_1_v1"],
        "newest first, only the asked states"
    );
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 4);
    let none = ListFilter {
        provider: Some("other".into()),
        ..ListFilter::default()
    };
    assert!(store.list(&none).await.unwrap().is_empty());
    let one = ListFilter {
        limit: Some(1),
        ..ListFilter::default()
    };
    assert_eq!(store.list(&one).await.unwrap().len(), 1);

    // Terminal rows older than the cut are compacted in batches (the row
    // stays, its body goes); unknown and pending rows are untouched.
    assert_eq!(
        store.purge(t(11), 10).await.unwrap(),
        1,
        "only the succeeded row is older than t(11)"
    );
    assert_eq!(
        store.purge(t(100), 10).await.unwrap(),
        1,
        "then the failed row"
    );
    assert_eq!(store.purge(t(100), 10).await.unwrap(), 0);
    let rows = store.list(&ListFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 4, "the sweep forgets no key");
    for row in &rows {
        let settled = matches!(
            row.state,
            OperationState::Succeeded | OperationState::Failed
        );
        assert_eq!(row.compacted_at.is_some(), settled, "{row:?}");
        if settled {
            assert_eq!(row.response_body, None);
            assert!(row.response_status.is_some(), "the status is kept");
        }
    }
    // Deleting is a separate, explicit operation.
    assert_eq!(store.forget(t(100), 10).await.unwrap(), 2);
    let left: Vec<_> = store
        .list(&ListFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.state)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&OperationState::Unknown) && left.contains(&OperationState::Pending));
}

async fn purge_respects_batch_size(store: Arc<dyn LedgerStore>) {
    for i in 0..7 {
        let k = format!("s_t_{i}_v1");
        let lease = claimed(&*store, &k, t(0)).await;
        store.complete(&lease, &ok(200, "{}"), t(1)).await.unwrap();
    }
    assert_eq!(store.purge(t(5), 3).await.unwrap(), 3);
    assert_eq!(store.purge(t(5), 3).await.unwrap(), 3);
    assert_eq!(store.purge(t(5), 3).await.unwrap(), 1);
}

async fn begin_claimed_records_and_claims_in_one_step(store: Arc<dyn LedgerStore>) {
    let Begin::Claimed(row, lease) = store
        .begin_claimed(&new_op("s_t_1_v1"), LEASE, t(0))
        .await
        .unwrap()
    else {
        panic!("a fresh key is claimed")
    };
    assert_eq!((row.state, row.claims), (OperationState::Sending, 1));
    assert_eq!(row.first_sent_at, Some(t(0)));
    assert_eq!(row.lease_expires_at, Some(t(60)));
    assert_eq!(lease.expires_at, t(60));
    assert_eq!(
        store.get(&key("s_t_1_v1")).await.unwrap().unwrap(),
        row,
        "the row is durable"
    );
    // A second caller gets the row unchanged and no lease.
    match store
        .begin_claimed(&new_op("s_t_1_v1"), LEASE, t(1))
        .await
        .unwrap()
    {
        Begin::Existing(existing) => assert_eq!(existing, row),
        other => panic!("expected the existing row, got {other:?}"),
    }
    // A different request under the same key is refused, as with begin.
    let other = NewOperation::new(key("s_t_1_v1"), "acme", "things.create", fp("a=2"));
    assert!(matches!(
        store.begin_claimed(&other, LEASE, t(1)).await,
        Err(StoreError::KeyReused { .. })
    ));
    let done = store.complete(&lease, &ok(201, "{}"), t(2)).await.unwrap();
    assert_eq!(done.state, OperationState::Succeeded);
}

async fn concurrent_begin_claimed_has_one_winner(store: Arc<dyn LedgerStore>) {
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .begin_claimed(&new_op("s_t_1_v1"), LEASE, t(0))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Begin::Claimed(..)) {
            winners += 1;
        }
    }
    assert_eq!(
        winners, 1,
        "exactly one of 50 concurrent first attempts claims the key"
    );
    assert_eq!(
        store.get(&key("s_t_1_v1")).await.unwrap().unwrap().claims,
        1
    );
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _dir) = idem::testing::sqlite_store().await;
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(store) = idem::testing::pg_store(stringify!($case)).await else { return };
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(std::sync::Arc::new(idem::ledger::MemoryStore::new())).await;
                }
            )*
        }
    };
}

conformance!(
    begin_records_pending_once,
    fingerprint_mismatch_is_refused,
    claim_is_exclusive_and_success_is_stored,
    failure_is_stored,
    not_sent_returns_to_pending,
    unknown_needs_explicit_permission,
    lease_expiry_turns_sending_into_unknown,
    checkpoint_survives_claims_and_is_fenced,
    resolve_settles_unknown_only,
    bump_rules,
    concurrent_claimers_have_one_winner,
    concurrent_begins_agree,
    list_and_purge,
    purge_respects_batch_size,
    a_late_definitive_answer_is_kept_when_no_newer_claim_came,
    may_have_taken_effect_is_never_downgraded,
    leases_renew_until_taken_over,
    a_late_answer_survives_a_reconciliation_that_found_nothing,
    begin_claimed_records_and_claims_in_one_step,
    concurrent_begin_claimed_has_one_winner,
);
