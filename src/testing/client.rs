//! [`HttpConnection`]: one keep-alive HTTP/1.1 connection, driven by hyper.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, ToSocketAddrs};

use super::BoxError;

/// A keep-alive HTTP/1.1 client on one connection, for load generators and soak runs: sends a
/// request, reads the whole answer, again and again on the same socket.
pub struct HttpConnection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl std::fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnection").field("host", &self.host).finish_non_exhaustive()
    }
}

impl HttpConnection {
    /// Connects to `addr` (`host:port`).
    ///
    /// # Errors
    /// When the connection cannot be made.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let host = HeaderValue::try_from(stream.peer_addr()?.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(HttpConnection { sender, host })
    }

    /// Sends one request and returns the answer's status and whole body.
    ///
    /// # Errors
    /// When a header is not valid HTTP, or the connection fails.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<(u16, Bytes), BoxError> {
        let mut request = Request::new(Full::new(body.into()));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse()?;
        request.headers_mut().insert(http::header::HOST, self.host.clone());
        for (k, v) in headers {
            request.headers_mut().append(HeaderName::try_from(*k)?, HeaderValue::try_from(*v)?);
        }
        self.sender.ready().await?;
        let (parts, body) = self.sender.send_request(request).await?.into_parts();
        Ok((parts.status.as_u16(), body.collect().await?.to_bytes()))
    }

    /// A `GET` with these headers, such as `("Authorization", "Bearer ...")`.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<(u16, Bytes), BoxError> {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }
}
