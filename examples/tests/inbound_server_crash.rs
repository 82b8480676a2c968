//! The inbound example server killed with SIGKILL while a request holds its
//! key: after a restart on the same database the key is free again within
//! the 3 s lease (the dead server's heartbeat stopped), and a duplicate in
//! between is told to retry after at most that long. SQLite and PostgreSQL.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

async fn start(env: &(&str, String)) -> (String, Child) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inbound_server"));
    cmd.args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .env_remove("DATABASE_URL")
        .env(env.0, &env.1);
    let mut child = cmd.spawn().expect("start inbound_server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a listening line");
    let addr = line
        .strip_prefix("listening on http://")
        .expect("listening line")
        .to_owned();
    (addr, child)
}

/// Status, `Retry-After` and whether the answer was replayed.
async fn deploy(addr: &str, key: &str) -> Option<(u16, Option<u64>, bool)> {
    let body = r#"{"service":"web"}"#;
    let req = format!(
        "POST /deployments HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         authorization: Bearer alice\r\nidempotency-key: {key}\r\nprefer: wait=0\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw);
    let head = text.split_once("\r\n\r\n")?.0.to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let retry_after = header("retry-after").and_then(|v| v.trim().parse().ok());
    Some((
        status,
        retry_after,
        header("idempotent-replayed").as_deref() == Some("true"),
    ))
}

async fn killed_holder_frees_its_key(env: (&str, String)) {
    let (addr, mut child) = start(&env).await;
    // The deployment handler takes 200 ms; kill the server halfway.
    let held = tokio::spawn({
        let addr = addr.clone();
        async move { deploy(&addr, "crash-1").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    assert!(
        held.await.unwrap().is_none(),
        "the killed server never answered"
    );

    let (addr, _child) = start(&env).await;
    let restarted = Instant::now();
    let (status, retry_after, _) = deploy(&addr, "crash-1").await.expect("an answer");
    if status == 409 {
        let wait = retry_after.expect("Retry-After on the in-flight conflict");
        assert!(
            (1..=3).contains(&wait),
            "Retry-After {wait} s is the lease left"
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
    } else {
        assert_eq!(status, 202, "the lease had already run out");
    }
    let mut last = None;
    for _ in 0..10 {
        let answer = deploy(&addr, "crash-1").await.expect("an answer");
        if answer.0 == 202 {
            last = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, _, _) = last.expect("the key is free again");
    assert_eq!(status, 202);
    assert!(
        restarted.elapsed() < Duration::from_secs(6),
        "freed within about one 3 s lease, not 60 s: {:?}",
        restarted.elapsed()
    );
    // And now it is stored: the next retry replays.
    let (status, _, replayed) = deploy(&addr, "crash-1").await.expect("an answer");
    assert_eq!(status, 202);
    assert!(replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_frees_its_key_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db").display().to_string();
    killed_holder_frees_its_key(("INBOUND_SQLITE", path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_frees_its_key_on_postgres() {
    let Some(url) = idem::testing::pg_database_url("killed_server_frees_its_key").await else {
        return;
    };
    killed_holder_frees_its_key(("DATABASE_URL", url)).await;
}
