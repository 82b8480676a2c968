//! Runs the README's main demo scenario (two worker processes, one SIGKILL,
//! four misbehaving simulated providers) and checks the counts the providers
//! report.

use idem::OperationState;
use idem_examples::demo::{Kind, run_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_has_exactly_one_side_effect_despite_faults_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_scenario(
        std::path::Path::new(env!("CARGO_BIN_EXE_worker")),
        dir.path(),
    )
    .await
    .unwrap();
    println!("{}", report.table());
    assert_eq!(report.rows.len(), 8);
    for row in &report.rows {
        assert_eq!(
            row.side_effects, 1,
            "{}: provider-side effects",
            row.job.name
        );
        assert_eq!(
            row.state,
            Some(OperationState::Succeeded),
            "{}",
            row.job.name
        );
    }
    assert!(report.all_exactly_once());
    assert!(report.notes[0].contains("SIGKILL"), "{:?}", report.notes);
    assert!(
        report.notes[0].contains("was sending"),
        "killed mid-flight: {:?}",
        report.notes
    );

    let row = |name: &str| report.rows.iter().find(|r| r.job.name == name).unwrap();
    // The faults really happened: retries reached the providers...
    assert_eq!(
        row("charge #1041").writes_on_wire,
        3,
        "two 500s, then success"
    );
    assert_eq!(row("text #77").writes_on_wire, 2, "429, then success");
    assert_eq!(row("reply r-9001").writes_on_wire, 2, "503, then success");
    assert_eq!(row("post #12").writes_on_wire, 2, "throttled, then success");
    // ...the killed charge was resent by the second worker with the same key
    // (Stripe deduplicated it), after the dead worker's lease ran out...
    let killed = row("charge #1042");
    assert_eq!((killed.writes_on_wire, killed.claims), (2, 2));
    // ...the idempotent reply was resent after its lost response...
    assert!(row("reply r-9002").writes_on_wire >= 2);
    // ...and the local-only sends whose responses were lost were never resent:
    // they were reconciled with the provider instead.
    for name in ["text #78", "post #13"] {
        let r = row(name);
        assert!(matches!(r.job.kind, Kind::Text | Kind::Post));
        assert_eq!(r.writes_on_wire, 1, "{name} must not be resent");
    }
}
