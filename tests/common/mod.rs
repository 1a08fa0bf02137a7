//! Shared set-up of the integration tests.
#![allow(dead_code)]

pub mod example;
pub mod http;

use std::time::{SystemTime, UNIX_EPOCH};

use std::net::{SocketAddr, TcpListener};

use actix_cognito::testing::{Behaviour, Emulator, FakeCognito, TestPool, Tokens};
use actix_cognito::{Rejection, VerifyError};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

pub const PASSWORD: &str = "Corr3ct-Horse!";

/// The emulator, or a failure that says how to start one. Emulator tests never skip.
pub async fn emulator() -> Emulator {
    emulator_of(Kind::Moto).await
}

/// The emulators the suite runs against. `./scripts/test.sh` starts both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// moto's server (or LocalStack), at `AWS_ENDPOINT_URL`.
    Moto,
    /// cognito-local in its default configuration, at `COGNITO_LOCAL_ENDPOINT`.
    CognitoLocal,
}

impl Kind {
    pub fn endpoint(self) -> String {
        match self {
            Kind::Moto => actix_cognito::testing::endpoint_from_env(),
            Kind::CognitoLocal => std::env::var("COGNITO_LOCAL_ENDPOINT")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "http://127.0.0.1:9229".to_owned()),
        }
    }
}

pub async fn emulator_of(kind: Kind) -> Emulator {
    match Emulator::connect(&kind.endpoint(), "us-east-1").await {
        Ok(e) => e,
        Err(e) if kind == Kind::CognitoLocal => {
            panic!("{e}\n(cognito-local: `EMULATOR=cognito-local ./localstack/start.sh`, or run ./scripts/test.sh)")
        }
        Err(e) => panic!("{e}"),
    }
}

/// A fresh pool on the emulator with user `alice` (attributes below) signed in.
pub struct Seeded {
    pub emulator: Emulator,
    pub pool: TestPool,
    pub tokens: Tokens,
    /// Counts every `GetUser` call on its way to the emulator.
    pub proxy: FakeCognito,
}

pub const ALICE_ATTRIBUTES: &[(&str, &str)] = &[
    ("email", "alice@example.com"),
    ("email_verified", "true"),
    ("phone_number", "+15550100"),
    ("given_name", "Alice"),
    ("custom:tenant", "acme"),
];

pub async fn seeded(name: &str) -> Seeded {
    seeded_on(Kind::Moto, name).await
}

pub async fn seeded_on(kind: Kind, name: &str) -> Seeded {
    let emulator = emulator_of(kind).await;
    let pool = emulator.create_pool(name).await.expect("create pool");
    pool.create_user("alice", PASSWORD, ALICE_ATTRIBUTES).await.expect("create user");
    let tokens = pool.sign_in(&pool.client_id, "alice", PASSWORD).await.expect("sign in");
    let proxy = FakeCognito::start(Behaviour::Forward(emulator.endpoint().to_owned())).await.unwrap();
    Seeded { emulator, pool, tokens, proxy }
}

impl Seeded {
    /// Where the emulator serves the pool's keys.
    pub fn jwks_url(&self) -> String {
        format!("{}/{}/.well-known/jwks.json", self.emulator.endpoint(), self.pool.pool_id)
    }

    /// A verifier builder for the pool, whose calls go through the counting proxy. An emulator
    /// that names itself in `iss` (cognito-local) does so on its own port, not the proxy's:
    /// that issuer is allowed, as anyone behind a proxy would.
    pub fn verifier(&self) -> actix_cognito::VerifierBuilder {
        let builder = self.pool.verifier().endpoint_url(self.proxy.endpoint());
        match claims_of(&self.tokens.access)["iss"].as_str() {
            Some(iss) if iss.starts_with("http://") => builder.allow_issuer(iss),
            _ => builder,
        }
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An unsigned token with a Cognito-shaped header and these claims.
pub fn token_with(claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64(br#"{"kid":"dummy","alg":"RS256"}"#),
        b64(claims.to_string().as_bytes()),
        b64(&[7u8; 256])
    )
}

/// The claims of a token.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The same token with some claims changed (its signature no longer matches).
pub fn altered(token: &str, changes: &[(&str, Value)]) -> String {
    let mut claims = claims_of(token);
    for (k, v) in changes {
        claims[*k] = v.clone();
    }
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2])
}

pub use actix_cognito::testing::access_claims;

pub const FAKE_POOL: &str = "us-east-1_FakePool1";
pub const FAKE_CLIENT: &str = "fakeclient1";

/// An access token for the fake upstream's pool, signed with the key the fake serves.
pub fn fake_token(sub: &str, ttl_secs: i64) -> String {
    actix_cognito::testing::TestSigner::default().sign(&access_claims(FAKE_POOL, FAKE_CLIENT, sub, ttl_secs))
}

/// The ways a token can be revoked in Cognito.
#[derive(Debug, Clone, Copy)]
pub enum Revoke {
    GlobalSignOut,
    AdminUserGlobalSignOut,
    AdminDisableUser,
    AdminDeleteUser,
}

impl Seeded {
    /// Revokes alice's token on the emulator.
    pub async fn revoke(&self, how: Revoke) {
        let admin = self.emulator.admin();
        let pool = &self.pool.pool_id;
        match how {
            Revoke::GlobalSignOut => admin
                .global_sign_out()
                .access_token(&self.tokens.access)
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}")),
            Revoke::AdminUserGlobalSignOut => admin
                .admin_user_global_sign_out()
                .user_pool_id(pool)
                .username(self.pool.login("alice"))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}")),
            Revoke::AdminDisableUser => admin
                .admin_disable_user()
                .user_pool_id(pool)
                .username(self.pool.login("alice"))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}")),
            Revoke::AdminDeleteUser => admin
                .admin_delete_user()
                .user_pool_id(pool)
                .username(self.pool.login("alice"))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}")),
        }
        .unwrap_or_else(|e| panic!("{how:?}: {e:?}"));
    }
}

/// Starts an Actix server on a free loopback port, running until the test ends.
pub fn spawn<F, T, B>(app: F) -> SocketAddr
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(app).workers(1).listen(listener).unwrap().disable_signals().run();
    actix_web::rt::spawn(server);
    addr
}

/// The rejection of a verdict, or a failure naming what came instead.
pub fn rejection<T: std::fmt::Debug>(r: Result<T, VerifyError>) -> Rejection {
    match r {
        Err(VerifyError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Log lines captured at WARN and above.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's WARN lines while the guard lives: run the test on a current-thread
/// runtime so that every task logs here.
pub fn capture_warnings() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// The value of one sample (`name{labels}`) in a Prometheus text page; 0 when absent.
pub fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}
