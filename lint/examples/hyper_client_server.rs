//! hyper as a server stays allowed; hyper's client is flagged like any other client.

fn main() {
    // Server side: not flagged.
    let _server = hyper::server::conn::http1::Builder::new();
    // Client side: flagged.
    let _client = hyper::client::conn::http1::Builder::new();
}
