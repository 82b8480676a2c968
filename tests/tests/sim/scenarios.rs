//! The scenarios of issue 13 that the simulator reaches, as scripted runs:
//! no random faults, the scripted ones at the named await points, and the
//! same invariant checks as the random runs.

use std::sync::Arc;
use std::time::Duration;

use idem::ledger::MemoryStore;
use idem::{LedgerStore, OperationState};

use super::world::{Fault, Site};
use super::{Final, Kind, Rates, StoreKind, World, paused_runtime};

const QUIET: Rates = Rates {
    store: 0.0,
    provider: 0.0,
};

fn script(world: &World, steps: &[(Site, Fault)]) {
    world
        .shared
        .script
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(steps.iter().copied());
}

fn violations(world: &World) -> Vec<String> {
    world
        .shared
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn effects(world: &World, i: usize) -> u32 {
    let key = world.jobs[i].key.as_str().to_owned();
    world
        .shared
        .truth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .effects
        .get(&key)
        .copied()
        .unwrap_or(0)
}

async fn state(world: &World, i: usize) -> Option<OperationState> {
    world
        .store
        .inner
        .get(&world.jobs[i].key)
        .await
        .ok()
        .flatten()
        .map(|r| r.state)
}

/// Every scenario on the in-memory store and on the real stores.
type Scenario =
    fn(Arc<dyn LedgerStore>, StoreKind) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn on_each_store(scenario: Scenario) {
    paused_runtime().block_on(scenario(Arc::new(MemoryStore::new()), StoreKind::Memory));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (sqlite, _dir) = idem::testing::sqlite_store().await;
        scenario(Arc::new(sqlite), StoreKind::Sqlite).await;
        if let Some(pg) = idem::testing::pg_store("sim_scenario").await {
            scenario(Arc::new(pg), StoreKind::Postgres).await;
        }
    });
}

/// 1. A timeout makes a PaymentIntent create unknown; an hour later the
///    resend is refused by the network; 25 h after the first send the job
///    runs again. Nothing may be sent with the forgotten key.
#[test]
fn scenario_1_a_failed_resend_keeps_possibly_applied() {
    on_each_store(|store, kind| {
        Box::pin(async move {
            let mut w = World::new(11, store, QUIET);
            let job = w.add_job(Kind::Stripe);
            script(
                &w,
                &[
                    (Site::Provider, Fault::LostResponse),
                    (Site::Provider, Fault::RateLimited),
                    (Site::Provider, Fault::RateLimited),
                ],
            );
            w.run_batch(&[job]).await;
            assert_eq!(w.jobs[job].done, Some(Final::Unknown), "{kind:?}");
            w.shared.clock.advance(Duration::from_secs(3600));
            script(
                &w,
                &[
                    (Site::Provider, Fault::Refused),
                    (Site::Provider, Fault::Refused),
                    (Site::Provider, Fault::Refused),
                ],
            );
            w.jobs[job].done = None;
            w.run_batch(&[job]).await;
            assert_eq!(
                state(&w, job).await,
                Some(OperationState::Unknown),
                "{kind:?}: not pending"
            );
            w.shared.clock.advance(Duration::from_secs(25 * 3600));
            w.jobs[job].done = None;
            w.run_batch(&[job]).await;
            w.check_touched().await;
            assert_eq!(effects(&w, job), 1, "{kind:?}: one PaymentIntent");
            assert!(
                matches!(w.jobs[job].done, Some(Final::Succeeded(_))),
                "{kind:?}: found by search: {:?}",
                w.jobs[job].done
            );
            assert_eq!(violations(&w), Vec::<String>::new(), "{kind:?}");
        })
    });
}

/// 3. Twilio answers 201 and the completion write fails: once (retried
///    write records it) and on every try (AnswerNotRecorded, never "safe to
///    retry").
#[test]
fn scenario_3_a_ledger_blip_after_the_answer_keeps_it() {
    on_each_store(|store, kind| {
        Box::pin(async move {
            let mut w = World::new(13, store, QUIET);
            let once = w.add_job(Kind::Twilio);
            script(&w, &[(Site::StoreBefore("complete"), Fault::StoreFail)]);
            w.run_batch(&[once]).await;
            assert!(
                matches!(w.jobs[once].done, Some(Final::Succeeded(_))),
                "{kind:?}: {:?}",
                w.jobs[once].done
            );
            assert_eq!(state(&w, once).await, Some(OperationState::Succeeded));
            let always = w.add_job(Kind::Twilio);
            script(&w, &[(Site::StoreBefore("complete"), Fault::StoreFail); 5]);
            w.run_batch(&[always]).await;
            assert_eq!(
                w.jobs[always].done,
                Some(Final::AnswerNotRecorded(true)),
                "{kind:?}"
            );
            w.shared.clock.advance(Duration::from_secs(300));
            w.jobs[always].done = None;
            w.run_batch(&[always]).await;
            assert_eq!(
                w.jobs[always].done,
                Some(Final::Unknown),
                "{kind:?}: not resent"
            );
            assert_eq!(effects(&w, always), 1, "{kind:?}: one message");
            w.check_touched().await;
            assert_eq!(violations(&w), Vec::<String>::new(), "{kind:?}");
        })
    });
}

/// 4. The lease runs out while the 201 is in flight and nobody claims the
///    row: the late success is recorded.
#[test]
fn scenario_4_a_late_success_is_kept() {
    on_each_store(|store, kind| {
        Box::pin(async move {
            let mut w = World::new(17, store, QUIET);
            let job = w.add_job(Kind::Twilio);
            script(&w, &[(Site::Provider, Fault::LateAnswer)]);
            w.run_batch(&[job]).await;
            assert!(
                matches!(w.jobs[job].done, Some(Final::Succeeded(_))),
                "{kind:?}: {:?}",
                w.jobs[job].done
            );
            assert_eq!(state(&w, job).await, Some(OperationState::Succeeded));
            // The same with the expiry noticed by a second worker first.
            let other = w.add_job(Kind::Twilio);
            script(&w, &[(Site::Provider, Fault::LateAnswer)]);
            w.run_batch(&[other, other]).await;
            w.check_touched().await;
            assert_eq!(effects(&w, other), 1, "{kind:?}");
            assert_eq!(
                state(&w, other).await,
                Some(OperationState::Succeeded),
                "{kind:?}"
            );
            assert_eq!(violations(&w), Vec::<String>::new(), "{kind:?}");
        })
    });
}

/// 6. A week after a text was sent the sweep runs; the job is redelivered
///    with the same key and must not text again.
#[test]
fn scenario_6_the_sweep_remembers() {
    on_each_store(|store, kind| {
        Box::pin(async move {
            let mut w = World::new(19, store, QUIET);
            let job = w.add_job(Kind::Twilio);
            w.run_batch(&[job]).await;
            assert!(
                matches!(w.jobs[job].done, Some(Final::Succeeded(_))),
                "{kind:?}"
            );
            w.shared.clock.advance(Duration::from_secs(8 * 86_400));
            let before = w.now() - Duration::from_secs(7 * 86_400);
            assert_eq!(
                w.store.purge(before, 100).await.expect("sweep"),
                1,
                "{kind:?}"
            );
            w.run_batch(&[job]).await;
            w.check_touched().await;
            assert_eq!(effects(&w, job), 1, "{kind:?}: one text");
            assert_eq!(w.jobs[job].done, Some(Final::Compacted), "{kind:?}");
            assert_eq!(violations(&w), Vec::<String>::new(), "{kind:?}");
        })
    });
}
