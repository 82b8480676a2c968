//! The ledger's fresh-key path (`begin_claimed`, then `complete`: the two
//! durable writes around every first send) against the floor of the database
//! underneath: the same two statements run by the database's own client
//! library, in the same run, with interleaved rounds.
//!
//! * SQLite, at `synchronous=NORMAL` and at `FULL`: rusqlite (prepared,
//!   cached statements on one connection, a plain loop) vs sqlx running the
//!   same statements through a pool vs `idem::ledger::SqliteStore`.
//! * PostgreSQL over loopback: `pgbench -M prepared` (libpq) running the same
//!   two statements as a custom script vs sqlx vs `idem::ledger::PgStore`.
//!
//! Every case runs `--ops` fresh keys one after another (one client), in
//! `--rounds` rounds whose order alternates; the table gives each case's
//! median time per key and the median of the per-round ratios to the floor.
//!
//! ```text
//! cargo run --release -p idem-tests --bin idem-floors -- [--rounds 5] [--ops 2000] [--only sqlite|postgres]
//! ```
//!
//! PostgreSQL uses `IDEM_TEST_DATABASE_URL` (default
//! postgres://postgres:postgres@127.0.0.1:5432/postgres) and a fresh database,
//! and `pgbench` from `PATH` or `/usr/lib/postgresql/*/bin`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use clap::Parser;
use idem::ledger::{Begin, Completion, LedgerStore, NewOperation, PgStore, SqliteStore};
use idem::testing::statements;
use idem::{Fingerprint, IdempotencyKey};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};

#[derive(Parser, Debug)]
#[command(about = "idem's ledger fresh-key path against the database's own floor")]
struct Args {
    /// Rounds per case (the order of the cases alternates between rounds).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Fresh keys per case and round.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Run one store only.
    #[arg(long, value_parser = ["sqlite", "postgres"])]
    only: Option<String>,
}

const PROVIDER: &str = "stripe";
const OPERATION: &str = "create_payment_intent";
const FINGERPRINT: &str = "v1:3f1a0c6e8f7d2b4a9c5e1d0b7a6f3e2c1d4b5a6978e0f1c2d3b4a5968778695a";
const BODY: &[u8] = br#"{"id":"pi_3QxFloorBench","object":"payment_intent","amount":2000,"currency":"usd","status":"succeeded"}"#;
const LEASE_MS: i64 = 120_000;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

fn key_text(case: &str, round: usize, i: usize) -> String {
    format!("floor_{case}_{round}x{i}_v1")
}

type Fail = Box<dyn std::error::Error + Send + Sync>;

/// sqlx running the two statements `ops` times on `pool` (SQLite or
/// PostgreSQL; one text, `$N` placeholders, serves both).
macro_rules! sqlx_loop {
    ($pool:expr, $round:expr, $ops:expr) => {{
        let begin = statements::begin_claimed();
        let complete = statements::complete();
        let start = Instant::now();
        for i in 0..$ops {
            let key = key_text("sqlx", $round, i);
            let token = uuid::Uuid::new_v4().to_string();
            let now = now_ms();
            let row = sqlx::query(&begin)
                .bind(&key)
                .bind(PROVIDER)
                .bind(OPERATION)
                .bind(FINGERPRINT)
                .bind(&token)
                .bind(now + LEASE_MS)
                .bind(now)
                .fetch_one(&$pool)
                .await?;
            std::hint::black_box(row);
            let row = sqlx::query(&complete)
                .bind(&key)
                .bind(&token)
                .bind("succeeded")
                .bind(200_i64)
                .bind(BODY)
                .bind(Option::<String>::None)
                .bind(now)
                .bind("pi_3QxFloorBench")
                .fetch_one(&$pool)
                .await?;
            std::hint::black_box(row);
        }
        start.elapsed() / u32::try_from($ops).unwrap_or(u32::MAX)
    }};
}

// --- SQLite --------------------------------------------------------------------------------

/// A migrated, empty ledger file for one case and round.
async fn fresh_sqlite_file(dir: &Path, name: &str) -> Result<PathBuf, Fail> {
    let path = dir.join(format!("{name}.db"));
    let store = SqliteStore::open(&path).await?;
    store.pool().close().await;
    Ok(path)
}

fn rusqlite_case(path: &Path, sync: &str, round: usize, ops: usize) -> Result<Duration, Fail> {
    use rusqlite::types::Value;
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", sync)?;
    let begin = statements::begin_claimed();
    let complete = statements::complete();
    let row_of = |r: &rusqlite::Row<'_>| {
        (0..18)
            .map(|c| r.get::<_, Value>(c))
            .collect::<Result<Vec<_>, _>>()
    };
    let start = Instant::now();
    for i in 0..ops {
        let key = key_text("rusqlite", round, i);
        let token = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let row = conn.prepare_cached(&begin)?.query_row(
            rusqlite::named_params! {
                "$1": key, "$2": PROVIDER, "$3": OPERATION, "$4": FINGERPRINT,
                "$5": token, "$6": now + LEASE_MS, "$7": now,
            },
            row_of,
        )?;
        std::hint::black_box(row);
        let row = conn.prepare_cached(&complete)?.query_row(
            rusqlite::named_params! {
                "$1": key, "$2": token, "$3": "succeeded", "$4": 200_i64, "$5": BODY,
                "$6": Option::<String>::None, "$7": now, "$8": "pi_3QxFloorBench",
            },
            row_of,
        )?;
        std::hint::black_box(row);
    }
    Ok(start.elapsed() / u32::try_from(ops).unwrap_or(u32::MAX))
}

/// sqlx running the same two statements through a pool with sqlx's defaults.
async fn sqlx_sqlite_case(
    path: &Path,
    sync: SqliteSynchronous,
    round: usize,
    ops: usize,
) -> Result<Duration, Fail> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10))
        .synchronous(sync);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    let took = sqlx_loop!(pool, round, ops);
    pool.close().await;
    Ok(took)
}

/// The store's own fresh-key path, as the executor drives it.
async fn idem_case<S: LedgerStore>(store: &S, round: usize, ops: usize) -> Result<Duration, Fail> {
    let fingerprint = Fingerprint::from_stored(FINGERPRINT);
    let body = Bytes::from_static(BODY);
    let start = Instant::now();
    for i in 0..ops {
        let key = IdempotencyKey::from_str(&key_text("idem", round, i))?;
        let op = NewOperation::new(key, PROVIDER, OPERATION, fingerprint.clone());
        let now = SystemTime::now();
        let lease = match store
            .begin_claimed(&op, Duration::from_millis(LEASE_MS as u64), now)
            .await?
        {
            Begin::Claimed(_, lease) => lease,
            Begin::Existing(op) => return Err(format!("key {} already existed", op.key).into()),
            _ => return Err("begin_claimed answered neither claimed nor existing".into()),
        };
        let done = store
            .complete(
                &lease,
                &Completion::Succeeded {
                    status: 200,
                    body: body.clone(),
                },
                now,
            )
            .await?;
        std::hint::black_box(done);
    }
    Ok(start.elapsed() / u32::try_from(ops).unwrap_or(u32::MAX))
}

async fn sqlite_section(args: &Args, level: &str) -> Result<Vec<Row>, Fail> {
    let dir = tempfile::tempdir()?;
    let sync = match level {
        "NORMAL" => SqliteSynchronous::Normal,
        _ => SqliteSynchronous::Full,
    };
    let mut cases: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for round in 0..args.rounds {
        let mut order = [0usize, 1, 2];
        if round % 2 == 1 {
            order.reverse();
        }
        for case in order {
            let path = fresh_sqlite_file(dir.path(), &format!("{level}-{round}-{case}")).await?;
            let took = match case {
                0 => rusqlite_case(&path, level, round, args.ops)?,
                1 => sqlx_sqlite_case(&path, sync, round, args.ops).await?,
                _ => {
                    let options = SqliteConnectOptions::new()
                        .filename(&path)
                        .synchronous(sync);
                    let store = SqliteStore::connect_with(options).await?;
                    let level_now = store.synchronous().await?;
                    let want = if level == "NORMAL" { 1 } else { 2 };
                    if level_now != want {
                        return Err(format!("store runs synchronous={level_now}").into());
                    }
                    let took = idem_case(&store, round, args.ops).await?;
                    store.pool().close().await;
                    took
                }
            };
            cases[case].push(took);
        }
    }
    Ok(rows(
        &format!("SQLite, synchronous={level}"),
        &[
            "rusqlite 0.32 (floor)",
            "sqlx 0.8, same statements",
            "idem SqliteStore",
        ],
        cases,
    ))
}

// --- PostgreSQL ----------------------------------------------------------------------------

fn pgbench() -> Option<PathBuf> {
    if Command::new("pgbench").arg("--version").output().is_ok() {
        return Some(PathBuf::from("pgbench"));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// The two statements as a pgbench script: `$N` become pgbench variables;
/// the note (`$6`) is bound as NULL, as the store binds it for a success.
fn pgbench_script() -> String {
    let vars = |sql: String, names: &[&str]| {
        // Replace from the highest number down, so `$1` never eats `$10`.
        let mut sql = sql;
        for (i, name) in names.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", i + 1), name);
        }
        sql
    };
    let begin = vars(
        statements::begin_claimed(),
        &[":k", ":provider", ":operation", ":fp", ":k", ":exp", ":now"],
    );
    let complete = vars(
        statements::complete(),
        &[
            ":k",
            ":k",
            ":state",
            ":status",
            ":body",
            "CAST(NULL AS text)",
            ":now",
            ":pid",
        ],
    );
    format!("\\set k random(1, 9000000000000000000)\n{begin};\n{complete};\n")
}

fn pgbench_case(bin: &Path, url: &str, script: &Path, ops: usize) -> Result<Duration, Fail> {
    let now = now_ms();
    let body_hex: String = BODY.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(bin)
        .args(["-n", "-M", "prepared", "-c", "1", "-j", "1"])
        .args(["-t", &ops.to_string()])
        .arg("-f")
        .arg(script)
        .args(["-D", &format!("provider={PROVIDER}")])
        .args(["-D", &format!("operation={OPERATION}")])
        .args(["-D", &format!("fp={FINGERPRINT}")])
        .args(["-D", &format!("exp={}", now + LEASE_MS)])
        .args(["-D", &format!("now={now}")])
        .args(["-D", "state=succeeded", "-D", "status=200"])
        .args(["-D", &format!("body=\\x{body_hex}")])
        .args(["-D", "pid=pi_3QxFloorBench"])
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let failed = text
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0");
    if failed != "0" {
        return Err(format!("pgbench: {failed} failed transactions").into());
    }
    let ms: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("latency average = "))
        .and_then(|v| v.trim_end_matches(" ms").trim().parse().ok())
        .ok_or_else(|| format!("no latency in pgbench output: {text}"))?;
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

async fn sqlx_pg_case(url: &str, round: usize, ops: usize) -> Result<Duration, Fail> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(url)
        .await?;
    let took = sqlx_loop!(pool, round, ops);
    pool.close().await;
    Ok(took)
}

async fn postgres_section(args: &Args) -> Result<Vec<Row>, Fail> {
    let Some(bin) = pgbench() else {
        println!("PostgreSQL section skipped: pgbench not found");
        return Ok(Vec::new());
    };
    let Some(url) = idem::testing::pg_database_url("idem-floors").await else {
        println!("PostgreSQL section skipped: no server reachable");
        return Ok(Vec::new());
    };
    let store = PgStore::connect(&url).await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("fresh.sql");
    std::fs::write(&script, pgbench_script())?;
    let truncate = || async {
        sqlx::query("TRUNCATE idem_operations")
            .execute(store.pool())
            .await
    };
    let mut cases: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for round in 0..args.rounds {
        let mut order = [0usize, 1, 2];
        if round % 2 == 1 {
            order.reverse();
        }
        for case in order {
            truncate().await?;
            let took = match case {
                0 => pgbench_case(&bin, &url, &script, args.ops)?,
                1 => sqlx_pg_case(&url, round, args.ops).await?,
                _ => idem_case(&store, round, args.ops).await?,
            };
            cases[case].push(took);
        }
    }
    Ok(rows(
        "PostgreSQL (loopback)",
        &[
            "pgbench -M prepared, libpq (floor)",
            "sqlx 0.8, same statements",
            "idem PgStore",
        ],
        cases,
    ))
}

// --- report --------------------------------------------------------------------------------

struct Row {
    section: String,
    case: String,
    rounds: Vec<Duration>,
    median: Duration,
    ratio: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn rows(section: &str, names: &[&str], cases: Vec<Vec<Duration>>) -> Vec<Row> {
    let floor = cases[0].clone();
    names
        .iter()
        .zip(cases)
        .map(|(name, rounds)| {
            let ratios = rounds
                .iter()
                .zip(&floor)
                .map(|(c, f)| c.as_secs_f64() / f.as_secs_f64())
                .collect();
            let median_s = median(rounds.iter().map(Duration::as_secs_f64).collect());
            Row {
                section: section.to_owned(),
                case: (*name).to_owned(),
                median: Duration::from_secs_f64(median_s),
                ratio: median(ratios),
                rounds,
            }
        })
        .collect()
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() -> Result<(), Fail> {
    let args = Args::parse();
    if args.rounds == 0 || args.ops == 0 {
        return Err("--rounds and --ops must be at least 1".into());
    }
    println!(
        "idem-floors: {} rounds x {} fresh keys per case, one client, interleaved",
        args.rounds, args.ops
    );
    let mut all = Vec::new();
    if args.only.as_deref() != Some("postgres") {
        all.extend(sqlite_section(&args, "NORMAL").await?);
        all.extend(sqlite_section(&args, "FULL").await?);
    }
    if args.only.as_deref() != Some("sqlite") {
        all.extend(postgres_section(&args).await?);
    }
    println!();
    println!(
        "| store | case | per key, median (µs) | vs floor (median of per-round ratios) | rounds (µs) |"
    );
    println!("| --- | --- | ---: | ---: | --- |");
    for r in &all {
        let rounds: Vec<String> = r.rounds.iter().map(|d| us(*d)).collect();
        println!(
            "| {} | {} | {} | {:.2}× | {} |",
            r.section,
            r.case,
            us(r.median),
            r.ratio,
            rounds.join(", ")
        );
    }
    Ok(())
}
