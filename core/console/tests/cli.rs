//! The `idem` CLI: the commands of the former `operator_retry` example
//! (list, show, retry, sweep) with their meaning kept, `--json` output, and
//! the installed binary itself.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clap::Parser as _;
use idem::ledger::Completion;
use idem::{LedgerStore, OperationState};
use idem_console::ConsoleError;
use idem_console::cli::{Cli, CliError, execute};
use support::*;

async fn run(db: &Db, args: &str, now: SystemTime) -> Result<String, CliError> {
    let argv = std::iter::once("idem").chain(args.split_whitespace());
    let cli = Cli::try_parse_from(argv).map_err(|e| CliError::Usage(e.to_string()))?;
    execute(&db.ledger, &cli, now).await
}

async fn four(store: &dyn LedgerStore, now: SystemTime) {
    let old = now - Duration::from_secs(30 * 86_400);
    let hour = Duration::from_secs(3600);
    let failed = Completion::Failed {
        status: 402,
        body: Bytes::from_static(b"{}"),
        note: "card declined".into(),
    };
    let unknown = Completion::Unknown {
        note: "timed out after sending".into(),
        status: None,
    };
    let ok = || Completion::Succeeded {
        status: 200,
        body: Bytes::from_static(b"{\"id\":1}"),
    };
    seed_one(
        store,
        "joes_transactions_1_v1",
        "stripe",
        Some(failed),
        hour,
        now,
    )
    .await;
    seed_one(
        store,
        "joes_transactions_2_v1",
        "stripe",
        Some(unknown),
        hour,
        now,
    )
    .await;
    seed_one(
        store,
        "joes_transactions_3_v1",
        "stripe",
        Some(ok()),
        hour,
        now,
    )
    .await;
    seed_one(
        store,
        "joes_transactions_4_v1",
        "stripe",
        Some(ok()),
        hour,
        old,
    )
    .await;
}

#[tokio::test]
async fn list_show_retry_sweep() {
    let db = open(Backend::Sqlite, "cli").await.unwrap();
    let now = SystemTime::now();
    four(&*db.store, now).await;
    let (k_failed, k_unknown, k_ok, k_old) = (
        "joes_transactions_1_v1",
        "joes_transactions_2_v1",
        "joes_transactions_3_v1",
        "joes_transactions_4_v1",
    );

    let listed = run(&db, "list", now).await.unwrap();
    assert!(
        listed.contains(k_failed) && listed.contains(k_unknown),
        "{listed}"
    );
    assert!(
        !listed.contains(k_ok),
        "succeeded rows are not problems: {listed}"
    );

    let shown = run(&db, &format!("show {k_unknown}"), now).await.unwrap();
    assert!(
        shown.contains("state:          unknown") && shown.contains("timed out after sending"),
        "{shown}"
    );

    let retried = run(&db, &format!("retry {k_failed}"), now).await.unwrap();
    assert!(
        retried.contains("next attempt: joes_transactions_1_v2"),
        "{retried}"
    );
    assert!(
        retried.contains("before:") && retried.contains("after:") && retried.contains("superseded"),
        "{retried}"
    );
    assert_eq!(state(&db, k_failed).await, OperationState::Superseded);

    // An unknown row is refused until the key is typed again; the refusal
    // warns that the write may have happened and names Reconcile.
    let refused = run(&db, &format!("retry {k_unknown}"), now)
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(
        matches!(
            refused,
            CliError::Console(ConsoleError::ConfirmationRequired { .. })
        ) && text.contains("may already have happened")
            && text.contains("Reconcile"),
        "{text}"
    );
    assert_eq!(state(&db, k_unknown).await, OperationState::Unknown);
    let retried = run(
        &db,
        &format!("retry {k_unknown} --confirm {k_unknown}"),
        now,
    )
    .await
    .unwrap();
    assert!(
        retried.contains("warning") && retried.contains("Reconcile"),
        "{retried}"
    );

    // A succeeded operation needs --force (and the typed key).
    let refused = run(&db, &format!("retry {k_ok}"), now).await.unwrap_err();
    assert!(
        matches!(
            refused,
            CliError::Console(ConsoleError::ForceRequired { .. })
        ),
        "{refused}"
    );
    assert_eq!(state(&db, k_ok).await, OperationState::Succeeded);
    run(&db, &format!("retry {k_ok} --force --confirm {k_ok}"), now)
        .await
        .unwrap();
    assert_eq!(state(&db, k_ok).await, OperationState::Superseded);

    let swept = run(&db, "sweep --older-than-days 7 --batch 1", now)
        .await
        .unwrap();
    assert!(swept.contains("swept 1 "), "{swept}");
    // The sweep compacts: the old row stays (so a redelivered job is still
    // answered from the ledger), its body is gone.
    let old = db.store.get(&key(k_old)).await.unwrap().unwrap();
    assert!(
        old.compacted_at.is_some() && old.response_body.is_none(),
        "{old:?}"
    );
    assert_eq!(old.state, OperationState::Succeeded);
    let again = run(&db, "sweep --older-than-days 7 --batch 1", now)
        .await
        .unwrap();
    assert!(
        again.contains("swept 0 "),
        "a compacted row is not swept twice: {again}"
    );
    assert!(db.store.get(&key(k_unknown)).await.unwrap().is_some());

    // Deleting outright is a separate command that must be asked for.
    let refused = run(&db, "forget --older-than-days 7", now)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("--yes-delete-rows"),
        "{refused}"
    );
    assert!(db.store.get(&key(k_old)).await.unwrap().is_some());
    let forgot = run(&db, "forget --older-than-days 7 --yes-delete-rows", now)
        .await
        .unwrap();
    assert!(forgot.contains("deleted 1 "), "{forgot}");
    assert!(db.store.get(&key(k_old)).await.unwrap().is_none());
    assert!(db.store.get(&key(k_unknown)).await.unwrap().is_some());

    // Every change is in the audit.
    let v: serde_json::Value =
        serde_json::from_str(&run(&db, "audit --json", now).await.unwrap()).unwrap();
    let actions: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("forget", "ok"),
            ("sweep", "ok"),
            ("sweep", "ok"),
            ("retry", "ok"),
            ("retry", "ok"),
            ("retry", "ok")
        ],
        "3 retries, two sweeps and a forget; nothing for the refusals: {v}"
    );
}

async fn state(db: &Db, k: &str) -> OperationState {
    db.store.get(&key(k)).await.unwrap().unwrap().state
}

#[tokio::test]
async fn json_output_and_actor() {
    let db = open(Backend::Sqlite, "cli_json").await.unwrap();
    let now = SystemTime::now();
    seed(&*db.store, now).await;
    let v: serde_json::Value = serde_json::from_str(
        &run(&db, "--json list --provider twilio", now)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["items"][0]["key"], UNKNOWN, "{v}");
    let v: serde_json::Value = serde_json::from_str(
        &run(&db, &format!("show {FAILED} --json"), now)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["operation"]["state"], "failed");
    assert_eq!(v["operation"]["provider_id"], "ch_declined");
    assert!(!v.to_string().contains(BODY_SECRET), "no bodies: {v}");
    let v: serde_json::Value = serde_json::from_str(
        &run(&db, &format!("--actor ops-bob --json retry {FAILED}"), now)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["next"], "joes-bikes_transactions_1_v2");
    let v: serde_json::Value =
        serde_json::from_str(&run(&db, "--json audit", now).await.unwrap()).unwrap();
    assert_eq!(v[0]["actor"], "ops-bob");
    assert_eq!(
        (v[0]["state_before"].as_str(), v[0]["state_after"].as_str()),
        (Some("failed"), Some("superseded"))
    );
    let v: serde_json::Value =
        serde_json::from_str(&run(&db, "--json list --state sending", now).await.unwrap()).unwrap();
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        1,
        "only the expired lease: {v}"
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let db = open(Backend::Sqlite, "cli_bad").await.unwrap();
    let now = SystemTime::now();
    for (input, expect) in [
        ("", "Usage"),
        ("frobnicate", "unrecognized subcommand"),
        ("show", "required"),
        ("show Not_A_Key", "invalid key"),
        ("list --state nope", "unknown state"),
        ("list --limit x", "invalid value"),
        ("list --older-than soon", "age"),
        ("retry shop_t_1_v1 --yes", "unexpected argument"),
        ("show shop_t_1_v1", "no ledger record"),
    ] {
        let err = run(&db, input, now).await.unwrap_err().to_string();
        assert!(err.contains(expect), "{input:?} -> {err}");
    }
}

/// The installed binary: exit codes, `--json`, and the database from the
/// environment.
#[tokio::test]
async fn the_binary() {
    let db = open(Backend::Sqlite, "cli_bin").await.unwrap();
    seed(&*db.store, SystemTime::now()).await;
    let idem = env!("CARGO_BIN_EXE_idem");
    let out = std::process::Command::new(idem)
        .args(["--json", "list", "--shop", "ann-cycles"])
        .env("IDEM_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["key"], OTHER_SHOP_UNKNOWN);

    let out = std::process::Command::new(idem)
        .args(["--db", &db.url, "--json", "retry", UNKNOWN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["code"], "confirmation_required");

    let out = std::process::Command::new(idem)
        .args(["list"])
        .env_remove("IDEM_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--db"),
        "{out:?}"
    );

    // serve refuses to start without a password: never anonymous.
    let out = std::process::Command::new(idem)
        .args(["--db", &db.url, "serve", "--listen", "127.0.0.1:0"])
        .env_remove("IDEM_CONSOLE_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("IDEM_CONSOLE_PASSWORD"),
        "{out:?}"
    );
}
