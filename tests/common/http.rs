//! HTTP requests of the tests: hyper's client, and raw bytes for requests no client would send.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
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

/// Sends one request with these raw header lines, malformed ones included, and reads the whole
/// answer. A connection the server closes without an answer gives status 0.
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

/// Sends one request with these headers on a new connection, through hyper's client.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path).header("Host", addr.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let answer = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.expect("answer");
    let (parts, body) = answer.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = body.collect().await.expect("body").to_bytes();
    Reply { status: parts.status.as_u16(), headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// `GET` with these headers.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, headers).await
}

/// `Authorization: Bearer <token>`.
pub async fn get_with_token(addr: SocketAddr, path: &str, token: &str) -> Reply {
    get(addr, path, &[("Authorization", &format!("Bearer {token}"))]).await
}

/// `POST` with `Authorization: Bearer <token>` and no body, as `/logout` takes it.
pub async fn post_with_token(addr: SocketAddr, path: &str, token: &str) -> Reply {
    request(addr, "POST", path, &[("Authorization", &format!("Bearer {token}"))]).await
}
