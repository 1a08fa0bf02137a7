//! [`FakeCognito`]: Cognito's API on loopback, served by hyper, for what no emulator can show.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{BoxError, TestSigner};

/// What [`FakeCognito`] does with a `GetUser` call.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Passes every request to this endpoint (an emulator) and its answer back.
    Forward(String),
    /// Accepts any token as this user.
    User {
        /// The username to return.
        username: String,
        /// The attributes to return.
        attributes: Vec<(String, String)>,
    },
    /// Accepts any token as the user its own claims name (`username`, and `sub` as the `sub`
    /// attribute), with these further attributes: what Cognito answers for a genuine token.
    Claims {
        /// The attributes to return besides `sub`.
        attributes: Vec<(String, String)>,
    },
    /// Answers with this HTTP status and Cognito error code, such as
    /// `(400, "TooManyRequestsException")` or `(500, "InternalErrorException")`.
    Error(u16, String),
    /// Reads the request and never answers.
    Hang,
}

struct FakeState {
    behaviour: Mutex<Behaviour>,
    revoked: Mutex<HashSet<String>>,
    jwks: Mutex<Option<String>>,
    jwks_down: AtomicBool,
    jwks_fetches: AtomicU64,
    latency: Mutex<Duration>,
    calls: AtomicU64,
    user_info_calls: AtomicU64,
    revoke_token_calls: AtomicU64,
    global_sign_out_calls: AtomicU64,
    signed_calls: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    upstream: Client<HttpConnector, Full<Bytes>>,
}

/// A stand-in for Cognito's API on loopback that counts `GetUser` calls.
///
/// Dropping it closes the listener and every connection it holds.
pub struct FakeCognito {
    addr: SocketAddr,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCognito {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCognito {
    /// Starts a fake on a free loopback port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(behaviour: Behaviour) -> Result<Self, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Serve the test signer's keys, unless requests go to an emulator that has its own.
        let jwks =
            (!matches!(behaviour, Behaviour::Forward(_))).then(|| TestSigner::default().jwks().to_string());
        let state = Arc::new(FakeState {
            behaviour: Mutex::new(behaviour),
            revoked: Mutex::default(),
            jwks: Mutex::new(jwks),
            jwks_down: AtomicBool::new(false),
            jwks_fetches: AtomicU64::new(0),
            latency: Mutex::new(Duration::ZERO),
            calls: AtomicU64::new(0),
            user_info_calls: AtomicU64::new(0),
            revoke_token_calls: AtomicU64::new(0),
            global_sign_out_calls: AtomicU64::new(0),
            signed_calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            upstream: Client::builder(TokioExecutor::new()).build_http(),
        });
        let task = tokio::spawn(accept(listener, state.clone()));
        Ok(FakeCognito { addr, state, task })
    }

    /// A fake that accepts any token as `username` with these attributes.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn user(username: &str, attributes: &[(&str, &str)]) -> Result<Self, BoxError> {
        Self::start(Behaviour::User {
            username: username.to_owned(),
            attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        })
        .await
    }

    /// The URL to give [`VerifierBuilder::endpoint_url`](crate::VerifierBuilder::endpoint_url).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what the fake does from the next request on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Delays every `GetUser` answer by `latency`, as a round trip to Cognito would.
    pub fn set_latency(&self, latency: Duration) {
        *self.state.latency.lock().unwrap() = latency;
    }

    /// `/oauth2/userInfo` requests received so far (the fake serves it on any path prefix).
    pub fn user_info_calls(&self) -> u64 {
        self.state.user_info_calls.load(SeqCst)
    }

    /// `RevokeToken` calls received so far (answered with success, or the behaviour's error).
    pub fn revoke_token_calls(&self) -> u64 {
        self.state.revoke_token_calls.load(SeqCst)
    }

    /// `GlobalSignOut` calls received so far, unless forwarded: each revokes its token (as
    /// [`revoke`](Self::revoke) does), or answers the behaviour's error.
    pub fn global_sign_out_calls(&self) -> u64 {
        self.state.global_sign_out_calls.load(SeqCst)
    }

    /// `GetUser` calls received so far.
    pub fn get_user_calls(&self) -> u64 {
        self.state.calls.load(SeqCst)
    }

    /// With [`Behaviour::User`], answers `NotAuthorizedException` for this token from now on,
    /// as Cognito does after a sign-out.
    pub fn revoke(&self, token: &str) {
        self.state.revoked.lock().unwrap().insert(token.to_owned());
    }

    /// Serves this JWKS document at `/{pool}/.well-known/jwks.json` (any pool); `None` forwards
    /// (with [`Behaviour::Forward`]) or answers 404.
    pub fn set_jwks(&self, jwks: Option<serde_json::Value>) {
        *self.state.jwks.lock().unwrap() = jwks.map(|j| j.to_string());
    }

    /// Makes the JWKS endpoint answer 500 (`true`) or serve again (`false`).
    pub fn set_jwks_down(&self, down: bool) {
        self.state.jwks_down.store(down, SeqCst);
    }

    /// JWKS requests received so far.
    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(SeqCst)
    }

    /// `GetUser` calls that carried an `Authorization` header (a SigV4 signature).
    pub fn signed_get_user_calls(&self) -> u64 {
        self.state.signed_calls.load(SeqCst)
    }

    /// The most `GetUser` calls that were in progress at once.
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(SeqCst)
    }
}

/// Accepts connections until aborted; aborting drops the set, which closes every connection.
async fn accept(listener: TcpListener, state: Arc<FakeState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { return };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |request| handle(state.clone(), request));
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A request as the fake reads it: the whole body collected.
struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The operation named by `X-Amz-Target`, such as `GetUser`.
    fn operation(&self) -> Option<&str> {
        self.header("x-amz-target")?.rsplit_once('.').map(|(_, op)| op)
    }
}

type Answer = Response<Full<Bytes>>;

fn response(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(*k), http::HeaderValue::try_from(*v)) {
            answer.headers_mut().append(k, v);
        }
    }
    answer
}

/// Counts a call in progress for as long as it lives, even when the client gives up.
struct InFlight<'a>(&'a FakeState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a FakeState) -> Self {
        let now = state.in_flight.fetch_add(1, SeqCst) + 1;
        state.max_in_flight.fetch_max(now, SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

async fn handle(state: Arc<FakeState>, request: hyper::Request<Incoming>) -> Result<Answer, Infallible> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await else {
        return Ok(response(400, &[], "unreadable body"));
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body: body.to_bytes(),
    };
    let behaviour = state.behaviour.lock().unwrap().clone();
    let answer = match (&request.method, request.operation()) {
        (&Method::GET, _) if request.path.ends_with("/.well-known/jwks.json") => {
            Some(jwks_answer(&state, &behaviour, &request).await)
        }
        (&Method::GET, _) if request.path.ends_with("/oauth2/userInfo") => {
            serve_user_info(&state, &behaviour, &request).await
        }
        (_, Some("GetUser")) => serve_get_user(&state, &behaviour, &request).await,
        (_, Some("RevokeToken")) => Some(revoke_token_answer(&state, &behaviour)),
        (_, Some("GlobalSignOut")) if !matches!(behaviour, Behaviour::Forward(_)) => {
            global_sign_out_answer(&state, &behaviour, &request)
        }
        _ => Some(match &behaviour {
            Behaviour::Forward(upstream) => forward(&state, upstream, &request).await,
            _ => response(400, &[("x-amzn-ErrorType", "UnknownOperationException")], "{}"),
        }),
    };
    match answer {
        Some(answer) => Ok(answer),
        // Hang: hold the connection open until the client gives up.
        None => std::future::pending().await,
    }
}

/// Passes the request to `upstream` and its answer back; 502 when that fails.
async fn forward(state: &FakeState, upstream: &str, request: &Request) -> Answer {
    let relay = async {
        let mut outgoing = hyper::Request::new(Full::new(request.body.clone()));
        *outgoing.method_mut() = request.method.clone();
        *outgoing.uri_mut() = format!("{}{}", upstream.trim_end_matches('/'), request.path).parse()?;
        for (k, v) in &request.headers {
            if ![HOST, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING].contains(k) {
                outgoing.headers_mut().append(k, v.clone());
            }
        }
        let (parts, body) = state.upstream.request(outgoing).await?.into_parts();
        let mut answer = Response::new(Full::new(body.collect().await?.to_bytes()));
        *answer.status_mut() = parts.status;
        for (k, v) in &parts.headers {
            if ![CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING].contains(k) {
                answer.headers_mut().append(k, v.clone());
            }
        }
        Ok::<_, BoxError>(answer)
    };
    relay.await.unwrap_or_else(|e| response(502, &[], e.to_string()))
}

/// The token of a request: `GetUser`'s `AccessToken`, or userInfo's bearer token.
fn token_of(request: &Request) -> Option<String> {
    if let Some(bearer) = request.header("authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        return Some(bearer.to_owned());
    }
    let body = serde_json::from_slice::<serde_json::Value>(&request.body).ok()?;
    Some(body.get("AccessToken")?.as_str()?.to_owned())
}

/// The claims of the token in a request, unverified.
fn token_claims(request: &Request) -> Option<serde_json::Map<String, serde_json::Value>> {
    let token = token_of(request)?;
    let payload = token.split('.').nth(1)?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&payload).ok()
}

fn is_revoked(state: &FakeState, request: &Request) -> bool {
    token_of(request).is_some_and(|t| state.revoked.lock().unwrap().contains(&t))
}

/// userInfo's answer, as the behaviour says: the user as a flat JSON object, or 401 for a
/// revoked token; `None` to hang.
fn user_info_answer(behaviour: &Behaviour, revoked: bool, request: &Request) -> Option<Answer> {
    let json = |status, body: serde_json::Value| {
        response(status, &[("Content-Type", "application/json")], body.to_string())
    };
    let claims = token_claims(request).unwrap_or_default();
    let claim = |name: &str| claims.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let user = |username: String, attributes: &[(String, String)]| {
        let mut fields = serde_json::Map::new();
        fields.insert("sub".into(), claim("sub").into());
        fields.extend(attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))));
        fields.insert("username".into(), username.into());
        json(200, serde_json::Value::Object(fields))
    };
    Some(match behaviour {
        Behaviour::Hang => return None,
        Behaviour::User { .. } | Behaviour::Claims { .. } if revoked => json(
            401,
            serde_json::json!({"error": "invalid_token", "error_description": "Access token has been revoked"}),
        ),
        Behaviour::User { username, attributes } => user(username.clone(), attributes),
        Behaviour::Claims { attributes } => user(claim("username"), attributes),
        Behaviour::Error(status, code) => json(*status, serde_json::json!({"error": code})),
        Behaviour::Forward(_) => json(404, serde_json::json!({"error": "not forwarded"})),
    })
}

/// The answer to a JWKS request.
async fn jwks_answer(state: &FakeState, behaviour: &Behaviour, request: &Request) -> Answer {
    state.jwks_fetches.fetch_add(1, SeqCst);
    let served = state.jwks.lock().unwrap().clone();
    match (state.jwks_down.load(SeqCst), served, behaviour) {
        (true, _, _) => response(500, &[], "down"),
        (false, Some(json), _) => response(200, &[("Content-Type", "application/json")], json),
        (false, None, Behaviour::Forward(upstream)) => forward(state, upstream, request).await,
        (false, None, _) => response(404, &[], "no JWKS"),
    }
}

/// A Cognito JSON answer: a user, or an error code.
fn json_answer(status: u16, error: Option<&str>, body: &serde_json::Value) -> Answer {
    let mut headers = vec![(CONTENT_TYPE.as_str(), "application/x-amz-json-1.1")];
    headers.extend(error.map(|code| ("x-amzn-ErrorType", code)));
    response(status, &headers, body.to_string())
}

/// `GetUser`'s answer with a user, or a rejection or an error, as the behaviour says; `None` to
/// hang.
fn get_user_answer(behaviour: &Behaviour, revoked: bool, request: &Request) -> Option<Answer> {
    let attribute = |k: &str, v: &str| serde_json::json!({"Name": k, "Value": v});
    Some(match behaviour {
        Behaviour::Hang => return None,
        Behaviour::User { .. } | Behaviour::Claims { .. } if revoked => {
            let code = "NotAuthorizedException";
            json_answer(
                400,
                Some(code),
                &serde_json::json!({"__type": code, "message": "Access Token has been revoked"}),
            )
        }
        Behaviour::User { username, attributes } => {
            let attrs: Vec<_> = attributes.iter().map(|(k, v)| attribute(k, v)).collect();
            json_answer(200, None, &serde_json::json!({"Username": username, "UserAttributes": attrs}))
        }
        Behaviour::Claims { attributes } => {
            let claims = token_claims(request).unwrap_or_default();
            let claim = |name: &str| claims.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let mut attrs = vec![attribute("sub", &claim("sub"))];
            attrs.extend(attributes.iter().map(|(k, v)| attribute(k, v)));
            json_answer(
                200,
                None,
                &serde_json::json!({"Username": claim("username"), "UserAttributes": attrs}),
            )
        }
        Behaviour::Error(status, code) => {
            json_answer(*status, Some(code), &serde_json::json!({"__type": code, "message": "fake"}))
        }
        Behaviour::Forward(_) => unreachable!("forwarded before"),
    })
}

/// A `GetUser` call: counted, delayed by the latency, answered as the behaviour says; `None` to
/// hang.
async fn serve_get_user(state: &FakeState, behaviour: &Behaviour, request: &Request) -> Option<Answer> {
    // Cognito decides when the call arrives: a sign-out during the round trip does not change
    // an answer already on its way.
    let revoked = is_revoked(state, request);
    state.calls.fetch_add(1, SeqCst);
    if request.header("authorization").is_some() {
        state.signed_calls.fetch_add(1, SeqCst);
    }
    let in_flight = InFlight::enter(state);
    let latency = *state.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let answer = match behaviour {
        Behaviour::Forward(upstream) => Some(forward(state, upstream, request).await),
        _ => get_user_answer(behaviour, revoked, request),
    };
    match answer {
        Some(answer) => Some(answer),
        None => {
            // Counted in flight until the client gives up and the connection closes.
            let _held = in_flight;
            std::future::pending().await
        }
    }
}

/// A userInfo request: counted, delayed like a `GetUser` call, answered; `None` to hang.
async fn serve_user_info(state: &FakeState, behaviour: &Behaviour, request: &Request) -> Option<Answer> {
    state.user_info_calls.fetch_add(1, SeqCst);
    let revoked = is_revoked(state, request);
    let _in_flight = InFlight::enter(state);
    let latency = *state.latency.lock().unwrap();
    tokio::time::sleep(latency).await;
    user_info_answer(behaviour, revoked, request)
}

/// `GlobalSignOut`'s answer: the token revoked from now on (`NotAuthorizedException` when it
/// already was), or the behaviour's error; `None` to hang.
fn global_sign_out_answer(state: &FakeState, behaviour: &Behaviour, request: &Request) -> Option<Answer> {
    state.global_sign_out_calls.fetch_add(1, SeqCst);
    let error = |status, code: &str| {
        json_answer(status, Some(code), &serde_json::json!({"__type": code, "message": "fake"}))
    };
    Some(match behaviour {
        Behaviour::Hang => return None,
        Behaviour::Error(status, code) => error(*status, code),
        _ => match token_of(request).is_some_and(|token| state.revoked.lock().unwrap().insert(token)) {
            true => json_answer(200, None, &serde_json::json!({})),
            false => error(400, "NotAuthorizedException"),
        },
    })
}

/// `RevokeToken`'s answer: success, or the behaviour's error.
fn revoke_token_answer(state: &FakeState, behaviour: &Behaviour) -> Answer {
    state.revoke_token_calls.fetch_add(1, SeqCst);
    match behaviour {
        Behaviour::Error(status, code) => {
            json_answer(*status, Some(code), &serde_json::json!({"__type": code, "message": "fake"}))
        }
        _ => json_answer(200, None, &serde_json::json!({})),
    }
}
