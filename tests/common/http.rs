//! A minimal HTTP/1.1 client over a raw socket, so tests can send any bytes.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request with these raw header lines and reads the whole answer. A connection the
/// server closes without an answer gives status 0.
pub async fn request_raw(addr: SocketAddr, method: &str, path: &str, headers: &[&[u8]]) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    for h in headers {
        req.extend_from_slice(h);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut raw = Vec::new();
    let sent = stream.write_all(&req).await;
    let read = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        assert!(sent.is_err() || read.is_err() || raw.is_empty(), "a partial answer: {text}");
        return Reply { status: 0, headers: Vec::new(), body: String::new() };
    };
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

/// Sends one request with these headers.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let lines: Vec<Vec<u8>> = headers.iter().map(|(k, v)| format!("{k}: {v}").into_bytes()).collect();
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    request_raw(addr, "GET", path, &refs).await
}

/// `Authorization: Bearer <token>`.
pub async fn get_with_token(addr: SocketAddr, path: &str, token: &str) -> Reply {
    get(addr, path, &[("Authorization", &format!("Bearer {token}"))]).await
}

/// `POST` with `Authorization: Bearer <token>` and no body, as `/logout` takes it.
pub async fn post_with_token(addr: SocketAddr, path: &str, token: &str) -> Reply {
    request_raw(addr, "POST", path, &[format!("Authorization: Bearer {token}").as_bytes()]).await
}
