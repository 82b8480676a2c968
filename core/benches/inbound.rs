//! Latency the inbound wrapper adds to a handler: a fresh key (insert +
//! complete) and a replay (one read), on SQLite and PostgreSQL, next to the
//! bare handler in the same run.
//!
//! ```text
//! cargo bench -p idem --bench inbound
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use idem::inbound::{EndpointConfig, InboundStore, with_idempotency};

fn request(key: &str) -> Request<Full<Bytes>> {
    Request::post("/orders")
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .extension(idem::inbound::Actor::new("bench-user"))
        .body(Full::new(Bytes::from_static(br#"{"item":"bike","qty":1}"#)))
        .unwrap()
}

async fn handler(req: Request<Bytes>) -> Response<Full<Bytes>> {
    let body = req.into_body();
    Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .header("location", "/orders/1")
        .body(Full::new(body))
        .unwrap()
}

fn bench_store<S: InboundStore>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: S,
) {
    let config = EndpointConfig::builder("bench").build().unwrap();
    let mut group = c.benchmark_group(format!("inbound/{name}"));
    group.bench_function("bare_handler", |b| {
        b.to_async(rt).iter(|| async {
            let (parts, body) = request("k").into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let r = handler(Request::from_parts(parts, body)).await;
            r.into_body().collect().await.unwrap().to_bytes()
        });
    });
    let n = AtomicU64::new(0);
    group.bench_function("fresh_key", |b| {
        b.to_async(rt).iter(|| async {
            let key = format!("fresh-{}", n.fetch_add(1, Ordering::Relaxed));
            let r = with_idempotency(&store, &config, request(&key), handler).await;
            assert_eq!(r.status(), 201);
            r.into_body().collect().await.unwrap().to_bytes()
        });
    });
    rt.block_on(async {
        with_idempotency(&store, &config, request("replayed"), handler).await;
    });
    group.bench_function("replay", |b| {
        b.to_async(rt).iter(|| async {
            let r = with_idempotency(&store, &config, request("replayed"), handler).await;
            assert_eq!(r.headers()["idempotent-replayed"], "true");
            r.into_body().collect().await.unwrap().to_bytes()
        });
    });
    group.finish();
}

fn inbound(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sqlite, _dir) = rt.block_on(idem::testing::sqlite_store());
    bench_store(c, &rt, "sqlite", sqlite);
    if let Some(pg) = rt.block_on(idem::testing::pg_store("bench_inbound")) {
        bench_store(c, &rt, "postgres", pg);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = inbound
}
criterion_main!(benches);
