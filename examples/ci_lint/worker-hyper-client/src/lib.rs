//! CI fixture: a worker that charges a card with hyper's client (hyper-util's pooled legacy
//! client, and hyper's own connection-level client).
//!
//! hyper as a server stays allowed; its client is an HTTP client like any other. `.ci/lint.sh`
//! expects the dependency gate, the clippy gate and the dylint lint to reject it.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const URL: &str = "http://api.stripe.com/v1/payment_intents";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn charge() -> Result<hyper::Request<Full<Bytes>>, Error> {
    Ok(hyper::Request::post(URL).body(Full::new(Bytes::from_static(b"amount=2000&currency=usd")))?)
}

/// Charges through hyper-util's pooled client. Rejected by every gate.
pub async fn charge_pooled() -> Result<u16, Error> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(charge()?).await?;
    Ok(response.status().as_u16())
}

/// Charges over one connection with hyper's own client. Rejected by every gate.
pub async fn charge_over_connection(stream: tokio::net::TcpStream) -> Result<u16, Error> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    drop(connection);
    let response = sender.send_request(charge()?).await?;
    Ok(response.status().as_u16())
}
