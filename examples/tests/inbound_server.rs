//! The inbound example server, run as its own process on loopback, against
//! SQLite and PostgreSQL.

use std::process::Stdio;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

struct Server {
    addr: String,
    _child: Child,
    _dir: Option<tempfile::TempDir>,
}

async fn start(database_url: Option<String>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inbound_server"));
    cmd.args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .env_remove("DATABASE_URL");
    let dir = match database_url {
        Some(url) => {
            cmd.env("DATABASE_URL", url);
            None
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            cmd.env("INBOUND_SQLITE", dir.path().join("inbound.db"));
            Some(dir)
        }
    };
    let mut child = cmd.spawn().expect("start inbound_server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a listening line");
    let addr = line
        .strip_prefix("listening on http://")
        .expect("listening line")
        .to_owned();
    Server {
        addr,
        _child: child,
        _dir: dir,
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &str,
) -> Answer {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !body.is_empty() {
        req.extend_from_slice(b"content-type: application/json\r\n");
    }
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body.as_bytes());
    raw_http(addr, &req).await
}

/// Sends `req` as is, on its own connection.
async fn raw_http(addr: &str, req: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(req).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

async fn post(addr: &str, path: &str, user: &str, key: &[u8], body: &str) -> Answer {
    let auth = format!("Bearer {user}");
    http(
        addr,
        "POST",
        path,
        &[("authorization", auth.as_bytes()), ("idempotency-key", key)],
        body,
    )
    .await
}

async fn stats(addr: &str) -> Value {
    http(addr, "GET", "/stats", &[], "").await.json()
}

async fn scenario(server: Server) {
    let addr = server.addr.as_str();

    // Duplicate POST: identical replay, one order. The Bearer scheme is
    // matched in any case.
    let a = post(addr, "/orders", "alice", b"order-1", r#"{"item":"bike"}"#).await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.header("idempotency-key"), Some("order-1"));
    let b = post(addr, "/orders", "alice", b"order-1", r#"{"item":"bike"}"#).await;
    assert_eq!(b.status, 201);
    assert!(b.replayed());
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} alice");
        let r = http(
            addr,
            "POST",
            "/orders",
            &[
                ("authorization", auth.as_bytes()),
                ("idempotency-key", b"order-1"),
            ],
            r#"{"item":"bike"}"#,
        )
        .await;
        assert!(r.replayed(), "{scheme}: {r:?}");
        assert_eq!(r.body, a.body);
    }
    assert_eq!(b.body, a.body);
    assert_eq!(b.header("location"), a.header("location"));
    assert_eq!(stats(addr).await["orders"], 1);

    // Conflicting body: 409 problem+json.
    let c = post(addr, "/orders", "alice", b"order-1", r#"{"item":"car"}"#).await;
    assert_eq!(c.status, 409);
    assert_eq!(c.header("content-type"), Some("application/problem+json"));
    assert_eq!(c.json()["type"], "urn:idem:problem:idempotency-key-reused");

    // Another user with the same key: a fresh order of their own.
    let d = post(addr, "/orders", "bob", b"order-1", r#"{"item":"bike"}"#).await;
    assert_eq!(d.status, 201);
    assert!(!d.replayed());
    assert_ne!(d.json()["id"], a.json()["id"]);
    assert_eq!(stats(addr).await["orders"], 2);

    // Malformed keys: 400, nothing created.
    for key in [&b""[..], &[b'k'; 256][..], b"caf\xe9", b"\"unterminated"] {
        let e = post(addr, "/api-keys", "alice", key, "{}").await;
        assert_eq!(e.status, 400, "{key:?}");
        assert_eq!(e.header("content-type"), Some("application/problem+json"));
    }
    let no_key = http(
        addr,
        "POST",
        "/api-keys",
        &[("authorization", b"Bearer alice")],
        "{}",
    )
    .await;
    assert_eq!(no_key.status, 400);
    assert_eq!(
        no_key.json()["type"],
        "urn:idem:problem:idempotency-key-missing"
    );
    assert_eq!(stats(addr).await["api_keys"], 0);

    // An API key minted once and replayed, secret included.
    let k1 = post(addr, "/api-keys", "alice", b"\"mint-1\"", "{}").await;
    let k2 = post(addr, "/api-keys", "alice", b"mint-1", "{}").await;
    assert_eq!(k1.status, 201);
    assert!(k2.replayed());
    assert_eq!(k1.json()["secret"], k2.json()["secret"]);
    assert_eq!(stats(addr).await["api_keys"], 1);

    // 1. No usable identity: 401 problem+json, never alice's answer (her
    // minted secret least of all), whatever the credential looks like.
    let secret = k1.json()["secret"].as_str().unwrap().to_owned();
    for auth in [
        None,
        Some(&b"Bearer"[..]),
        Some(b"Bearer "),
        Some(b"Basic YWxpY2U6eA=="),
        Some(b"Bearer Alice"),
        Some(b"Bearer alice bob"),
        Some(b"Token alice"),
    ] {
        let mut headers = vec![("idempotency-key", &b"mint-1"[..])];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let r = http(addr, "POST", "/api-keys", &headers, "{}").await;
        assert_eq!(r.status, 401, "{auth:?}: {r:?}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.json()["type"], "urn:idem:problem:actor-missing");
        assert!(!r.body.contains(&secret));
    }
    assert_eq!(stats(addr).await["api_keys"], 1);

    // 2. A 415 (no Content-Type) is not stored: the corrected retry with the
    // same key and body runs once.
    let body = r#"{"item":"lamp"}"#;
    let no_type = format!(
        "POST /orders HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer alice\r\n\
         idempotency-key: fix-1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let u = raw_http(addr, no_type.as_bytes()).await;
    assert_eq!(u.status, 415, "{u:?}");
    assert_eq!(u.header("content-type"), Some("application/problem+json"));
    let orders_before = stats(addr).await["orders"].as_u64().unwrap();
    let fixed = post(addr, "/orders", "alice", b"fix-1", body).await;
    assert_eq!(fixed.status, 201, "{fixed:?}");
    assert!(!fixed.replayed());
    assert_eq!(stats(addr).await["orders"], orders_before + 1);
    // JSON rejections are problem+json and not stored either.
    let bad = post(addr, "/orders", "alice", b"fix-2", "{").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("content-type"), Some("application/problem+json"));
    // The 400 was not stored, so the same key with another body runs
    // (and is refused by the extractor, again not stored) ...
    let shape = post(addr, "/orders", "alice", b"fix-2", r#"{"item":5}"#).await;
    assert_eq!(shape.status, 422, "{shape:?}");
    assert_eq!(
        shape.header("content-type"),
        Some("application/problem+json")
    );
    // ... and the corrected request with that key creates the order.
    let ok = post(addr, "/orders", "alice", b"fix-2", r#"{"item":"ok"}"#).await;
    assert_eq!(ok.status, 201, "{ok:?}");
    assert!(!ok.replayed());

    // 3. A wrong method does not burn the key; 4. its 405 is problem+json
    // with Allow, and so is the 404.
    for method in ["PUT", "DELETE", "PATCH", "QUERY"] {
        let w = http(
            addr,
            method,
            "/orders",
            &[
                ("authorization", b"Bearer alice"),
                ("idempotency-key", b"method-1"),
            ],
            "{}",
        )
        .await;
        assert_eq!(w.status, 405, "{method}: {w:?}");
        assert_eq!(w.header("allow"), Some("POST"));
        assert_eq!(w.header("content-type"), Some("application/problem+json"));
    }
    let right = post(addr, "/orders", "alice", b"method-1", "{}").await;
    assert_eq!(right.status, 201, "{right:?}");
    assert!(!right.replayed());
    let missing = http(addr, "GET", "/nowhere", &[], "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    // hyper's own refusal of a head it cannot parse, as documented: a bare
    // 400 with an empty body.
    let control = raw_http(
        addr,
        b"POST /orders HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(control.status, 400);
    assert_eq!(control.body, "");

    // 6. The key echo is a valid structured field; parameters are ignored.
    let q = post(addr, "/orders", "alice", br#""q\"1";x=1"#, "{}").await;
    assert_eq!(q.status, 201);
    assert_eq!(q.header("idempotency-key"), Some(r#""q\"1""#));
    let q2 = post(addr, "/orders", "alice", br#""q\"1""#, "{}").await;
    assert!(q2.replayed());
    let uuid = post(addr, "/orders", "alice", b"8e03978e-40d5", "{}").await;
    assert_eq!(uuid.header("idempotency-key"), Some("\"8e03978e-40d5\""));

    // 100 concurrent identical deployments: one side effect; the rest wait
    // and replay, or get 409.
    let addr_owned: Arc<str> = Arc::from(addr);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let addr = Arc::clone(&addr_owned);
            tokio::spawn(async move {
                post(
                    &addr,
                    "/deployments",
                    "alice",
                    b"deploy-1",
                    r#"{"service":"web"}"#,
                )
                .await
            })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            202 if r.replayed() => assert_eq!(r.json()["id"], 1),
            202 => fresh += 1,
            409 => assert_eq!(
                r.json()["type"],
                "urn:idem:problem:idempotency-key-in-flight"
            ),
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(stats(addr).await["deployments"], 1);

    // The OpenAPI document specifies the header and the error answers.
    let doc = http(addr, "GET", "/openapi.json", &[], "").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let op = &doc["paths"]["/orders"]["post"];
    assert_eq!(
        op["parameters"][0]["$ref"],
        "#/components/parameters/Idempotency-Key"
    );
    assert_eq!(
        doc["components"]["parameters"]["Idempotency-Key"]["in"],
        "header"
    );
    for status in ["400", "401", "409", "413", "415", "422", "503"] {
        assert!(op["responses"][status].is_object(), "{status} documented");
    }
    let key = &doc["components"]["parameters"]["Idempotency-Key"]["schema"];
    assert_eq!(key["maxLength"], 255);
    assert_eq!(
        op["responses"]["409"]["headers"]["Retry-After"]["$ref"],
        "#/components/headers/Retry-After"
    );
    assert!(doc["components"]["headers"]["Retry-After"].is_object());
    // Every error response declares problem+json.
    for (status, r) in op["responses"].as_object().unwrap() {
        if !status.starts_with('2') {
            assert!(
                r["content"]["application/problem+json"].is_object(),
                "{status}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_server_on_sqlite() {
    scenario(start(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_server_on_postgres() {
    let Some(url) = idem::testing::pg_database_url("example_server_on_postgres").await else {
        return;
    };
    scenario(start(Some(url)).await).await;
}
