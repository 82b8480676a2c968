//! A minimal HTTP/1.1 client over one kept-alive loopback connection, for
//! load generators and storms against local servers (the suites do not use
//! reqwest: outbound HTTP belongs to idem's executor), and the message
//! reader the fault proxy shares.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest message head read.
const MAX_HEAD: usize = 64 * 1024;
/// The longest body read.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    host: String,
}

impl Conn {
    /// Connects to `addr` (loopback).
    ///
    /// # Errors
    ///
    /// When the connection fails.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            host: addr.to_string(),
        })
    }

    /// Sends `POST path` with a JSON body and extra headers, and reads the
    /// answer.
    ///
    /// # Errors
    ///
    /// When the connection breaks or the answer is not HTTP/1.1.
    pub async fn post_json(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.host,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await?;
        let raw = read_message(&mut self.stream, &mut self.buf, true)
            .await?
            .ok_or_else(|| invalid("the server closed the connection"))?;
        parse_reply(raw)
    }
}

fn parse_reply(raw: Vec<u8>) -> std::io::Result<Reply> {
    let head_end = find(&raw, b"\r\n\r\n").ok_or_else(|| invalid("no header end"))? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: raw[head_end..].to_vec(),
    })
}

/// Reads one HTTP/1.1 message (head plus `Content-Length` body; for an
/// answer without a length, everything until the peer closes). `buf` keeps
/// bytes read past the message for the next call. `None` when the peer closed
/// before a new message began.
pub(crate) async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    answer: bool,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("message head too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(invalid("peer closed inside a message head"))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head.lines().find_map(|line| {
        let value = line.strip_prefix("content-length:")?;
        value.trim().parse::<usize>().ok()
    });
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let total = match length {
        Some(len) if len <= MAX_BODY => Some(head_end + len),
        Some(_) => return Err(invalid("body too long")),
        None if chunked => return Err(invalid("chunked bodies are not supported")),
        // A request without a length has no body; an answer without one
        // runs until the peer closes.
        None if !answer => Some(head_end),
        None => None,
    };
    loop {
        if let Some(total) = total {
            if buf.len() >= total {
                let rest = buf.split_off(total);
                let message = std::mem::replace(buf, rest);
                return Ok(Some(message));
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if total.is_none() {
                return Ok(Some(std::mem::take(buf)));
            }
            return Err(invalid("peer closed inside a message body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}
