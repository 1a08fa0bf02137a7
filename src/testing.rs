//! Test helpers (feature `test-util`): seed an emulator, and a fake `GetUser` upstream.
//!
//! [`Emulator`] talks to moto or LocalStack through the same SDK the verifier uses, signing its
//! admin calls with dummy credentials (emulators accept any). [`FakeCognito`] is a small HTTP
//! server that stands in for Cognito where an emulator cannot show a behaviour: throttling,
//! 5xx answers, hangs, latency, and exact call counts. It can also forward to an emulator, and
//! count what passes.
//!
//! Not for production use.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cognitoidentityprovider::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cognitoidentityprovider::types::{
    AttributeDataType, AttributeType, AuthFlowType, ExplicitAuthFlowsType, MessageActionType,
    SchemaAttributeType, UsernameAttributeType,
};
use aws_sdk_cognitoidentityprovider::Client;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::config::VerifierBuilder;
use crate::Verifier;

/// Errors of the helpers, boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The endpoint tests use: `AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER`, else
/// `AWS_ENDPOINT_URL`, else `http://127.0.0.1:4566` (where `localstack/start.sh` serves).
pub fn endpoint_from_env() -> String {
    ["AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "http://127.0.0.1:4566".to_owned())
}

/// An emulated Cognito (moto, cognito-local or LocalStack) and an admin client for it.
#[derive(Clone, Debug)]
pub struct Emulator {
    admin: Client,
    endpoint: String,
    region: String,
}

impl Emulator {
    /// Connects to the emulator at [`endpoint_from_env`] in region `us-east-1`.
    ///
    /// # Errors
    /// When nothing answers there, with a message saying how to start one.
    pub async fn from_env() -> Result<Self, BoxError> {
        Self::connect(&endpoint_from_env(), "us-east-1").await
    }

    /// Connects to the emulator at `endpoint`, and checks that it answers.
    ///
    /// # Errors
    /// When nothing answers there, with a message saying how to start one.
    pub async fn connect(endpoint: &str, region: &str) -> Result<Self, BoxError> {
        let conf = aws_sdk_cognitoidentityprovider::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
            .build();
        let admin = Client::from_conf(conf);
        if let Err(e) = admin.list_user_pools().max_results(1).send().await {
            return Err(format!(
                "no Cognito emulator answers at {endpoint} ({}): start one with `./localstack/start.sh` \
                 or point AWS_ENDPOINT_URL at yours",
                aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(e)
            )
            .into());
        }
        Ok(Emulator { admin, endpoint: endpoint.to_owned(), region: region.to_owned() })
    }

    /// The emulator's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The admin client (signed with dummy credentials), for anything the helpers lack.
    pub fn admin(&self) -> &Client {
        &self.admin
    }

    /// Creates a user pool with a `custom:tenant` attribute and one app client that allows the
    /// admin password flow.
    ///
    /// # Errors
    /// When the emulator refuses a call.
    pub async fn create_pool(&self, name: &str) -> Result<TestPool, BoxError> {
        let pool = self
            .admin
            .create_user_pool()
            .pool_name(name)
            .schema(
                SchemaAttributeType::builder()
                    .name("tenant")
                    .attribute_data_type(AttributeDataType::String)
                    .mutable(true)
                    .build(),
            )
            .send()
            .await?;
        let pool = pool.user_pool.ok_or("CreateUserPool returned no pool")?;
        // cognito-local makes every pool sign in by email unless configured otherwise.
        let email_usernames = pool.username_attributes().contains(&UsernameAttributeType::Email);
        let mut pool = TestPool {
            admin: self.admin.clone(),
            pool_id: pool.id.ok_or("CreateUserPool returned no id")?,
            client_id: String::new(),
            endpoint: self.endpoint.clone(),
            email_usernames,
            users: Arc::default(),
        };
        pool.client_id = pool.create_client(&format!("{name}-app")).await?;
        Ok(pool)
    }

    /// The region pools are created in.
    pub fn region(&self) -> &str {
        &self.region
    }
}

/// A user pool on the emulator, with its first app client.
#[derive(Clone, Debug)]
pub struct TestPool {
    admin: Client,
    endpoint: String,
    /// Whether users sign in by email (their username is then a generated id).
    email_usernames: bool,
    /// For each name given to [`create_user`](Self::create_user): the name to sign in with, and
    /// the username Cognito gave the user.
    users: Arc<Mutex<std::collections::HashMap<String, (String, String)>>>,
    /// The pool id.
    pub pool_id: String,
    /// The first app client's id.
    pub client_id: String,
}

/// The tokens of one sign-in.
#[derive(Clone)]
pub struct Tokens {
    /// The access token.
    pub access: String,
    /// The ID token.
    pub id: String,
    /// The refresh token.
    pub refresh: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens([redacted])")
    }
}

impl TestPool {
    /// A verifier builder for this pool and its first client, pointed at the emulator.
    pub fn verifier(&self) -> VerifierBuilder {
        Verifier::builder(&self.pool_id).client_id(&self.client_id).endpoint_url(&self.endpoint)
    }

    /// Adds an app client that allows the admin password flow; returns its id.
    ///
    /// # Errors
    /// When the emulator refuses the call.
    pub async fn create_client(&self, name: &str) -> Result<String, BoxError> {
        let out = self
            .admin
            .create_user_pool_client()
            .user_pool_id(&self.pool_id)
            .client_name(name)
            .explicit_auth_flows(ExplicitAuthFlowsType::AllowAdminUserPasswordAuth)
            .explicit_auth_flows(ExplicitAuthFlowsType::AllowRefreshTokenAuth)
            .send()
            .await?;
        Ok(out.user_pool_client.and_then(|c| c.client_id).ok_or("CreateUserPoolClient returned no id")?)
    }

    /// Creates a confirmed user with a permanent password and these attributes.
    ///
    /// In a pool that signs in by email (cognito-local's default), the user signs in with
    /// their `email` attribute (`{name}@example.com` when none is given) and Cognito names them
    /// by a generated id: [`login`](Self::login) and [`username`](Self::username) say which.
    ///
    /// # Errors
    /// When the emulator refuses a call.
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        attributes: &[(&str, &str)],
    ) -> Result<(), BoxError> {
        let login = match (self.email_usernames, attributes.iter().find(|(k, _)| *k == "email")) {
            (false, _) => name.to_owned(),
            (true, Some((_, email))) => (*email).to_owned(),
            (true, None) => format!("{name}@example.com"),
        };
        let mut req = self
            .admin
            .admin_create_user()
            .user_pool_id(&self.pool_id)
            .username(&login)
            .message_action(MessageActionType::Suppress);
        for (k, value) in attributes {
            req = req.user_attributes(AttributeType::builder().name(*k).value(*value).build()?);
        }
        let created = req.send().await?;
        let username = created.user.and_then(|u| u.username).unwrap_or_else(|| login.clone());
        self.users.lock().unwrap().insert(name.to_owned(), (login.clone(), username));
        self.admin
            .admin_set_user_password()
            .user_pool_id(&self.pool_id)
            .username(&login)
            .password(password)
            .permanent(true)
            .send()
            .await?;
        Ok(())
    }

    /// The name a user made by [`create_user`](Self::create_user) signs in with, which also
    /// names them in admin calls.
    pub fn login(&self, name: &str) -> String {
        self.users.lock().unwrap().get(name).map_or_else(|| name.to_owned(), |(login, _)| login.clone())
    }

    /// The username Cognito gave a user made by [`create_user`](Self::create_user): `GetUser`
    /// and the `username` claim say this.
    pub fn username(&self, name: &str) -> String {
        self.users.lock().unwrap().get(name).map_or_else(|| name.to_owned(), |(_, username)| username.clone())
    }

    /// Signs a user in through `client_id` with the admin password flow.
    ///
    /// # Errors
    /// When the emulator refuses the sign-in.
    pub async fn sign_in(&self, client_id: &str, name: &str, password: &str) -> Result<Tokens, BoxError> {
        let out = self
            .admin
            .admin_initiate_auth()
            .user_pool_id(&self.pool_id)
            .client_id(client_id)
            .auth_flow(AuthFlowType::AdminUserPasswordAuth)
            .auth_parameters("USERNAME", self.login(name))
            .auth_parameters("PASSWORD", password)
            .send()
            .await?;
        let r = out.authentication_result.ok_or("AdminInitiateAuth returned no tokens")?;
        Ok(Tokens {
            access: r.access_token.ok_or("no access token")?,
            id: r.id_token.ok_or("no id token")?,
            refresh: r.refresh_token.unwrap_or_default(),
        })
    }

    /// Creates `group` if needed and adds `username` to it.
    ///
    /// # Errors
    /// When the emulator refuses a call.
    pub async fn add_to_group(&self, name: &str, group: &str) -> Result<(), BoxError> {
        let _ = self.admin.create_group().user_pool_id(&self.pool_id).group_name(group).send().await;
        self.admin
            .admin_add_user_to_group()
            .user_pool_id(&self.pool_id)
            .username(self.login(name))
            .group_name(group)
            .send()
            .await?;
        Ok(())
    }
}

/// The claims of a user's access token as a user pool issues them: issuer from the pool id,
/// `client_id`, `token_use` = `access`, the `aws.cognito.signin.user.admin` scope, `username`
/// `user-{sub}`, `jti` `jti-{sub}`, and `exp` `ttl_secs` from now. Add or change fields on the
/// returned value as a test needs, then sign it with [`TestSigner::sign`].
pub fn access_claims(pool_id: &str, client_id: &str, sub: &str, ttl_secs: i64) -> serde_json::Value {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let region = pool_id.split_once('_').map_or("us-east-1", |(r, _)| r);
    serde_json::json!({
        "iss": format!("https://cognito-idp.{region}.amazonaws.com/{pool_id}"),
        "sub": sub,
        "client_id": client_id,
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "exp": now + ttl_secs,
        "iat": now,
        "auth_time": now,
        "jti": format!("jti-{sub}"),
        "username": format!("user-{sub}"),
    })
}

// A 2048-bit RSA key made for these tests only (PKCS#1 DER, base64), and its modulus.
const TEST_KEY_DER: &str = "MIIEpQIBAAKCAQEA8Y5gI7umU7Gwns2w3d+fhT3erQCuvSWlpqCOKS0+sxQw4UpG8kKdEfPYPDc81Pe//Vvuxt23XoGZOwaTTtwMM1tbLLKpk1bKkm5buvVSohEvgZGTd6SreuGHVjNwIqOsHFL/E+neXJ+VSH2pE/pOrSnS7hb3MezjnBu75Uf3cIHtyo9M72SUmcEZ1APEK7bXtDb1ftsWRmKIaRGix7npE9NxPBPNgdkG8KxA4VbyarJn0em6WAN1ONLa9pmQOHCyZ5UqSSwmfL5nBIYUQCzTdiFEkygKUoM7G7EGvp3AUUyoQCHClVuzWhbD1jzB5mj/gpGrV92YJUn3r/gvvtE2TwIDAQABAoIBAA1b8uw2/hFl4988f/odWnyrecu2nHNgiCNJgOM9GdkclkF3cqoGThqGkmBuK6KZmxgfg/qim3gSEc/mYrI7UD9s34N+1AsOg0CK8u7Jj4rgCXEQhIfa5xLyMyJs0NhRlfyxCGNpDT+xIbfzHy04LC6+f+hkA8LSl5n0HLWm/8PMiEB9CCjX5FcTtOyNnuAi1zxNAKIY7MCnwyAXLu2RQ0Bk+mhr1aAiIwTt2Pz0S0vBGaVrdwtOGsvAlgKIQBknvApTflpkIQHLC/wi1fYdHwYwzejQIxcK2PrBaAqlvoLD0a1HNkznQ+0ildYf0XAG8bzgm6oDWwNsCGFYuZVviFECgYEA/A8ij0P41IZTCsYU+9y+espfrEZ9j+ffQqLKOnWrXiG4M9x9uA57mW7CA6RWH7/ngesRIL487FQm01CT83oKUMVOQoTvpczb9pqTzuvxsJPM0020ftxiegg7L4Uzu0w6VUpdfkuiwsnQ8Qa3Osn7e8d0O48OkFJO/JtF7+dsDv8CgYEA9VUz1m80bweYlAh9tUpvPjbq0esXb019Y/Gx4a5kg0VvIJk9KCJ5fhnZt7CtCZ09JlnBAxFywomsSzvGfqlvO1AGg1aVeApSr8Gljy08tzinAJuC4OBTQN/fcpJ1fGJ0/7cXCkHFmDZA4aDS7zInrXxw/VG5c3sK0OM/X7g9KLECgYEArNl8K57DLoqGu+amUSlJfk71WOBmDp9FnR6ha4Fx6PVaqkXT+LoFzGwFpBW38cHZ8l/OuRN8F9yFW3fwXZEdLdKAHmGnLZ3UYcITBl0KurpARc8NrclXxrOKUsYXeaOGhSKgBpG7pbRcEk02rZwBVxqp/IXXyOSIwfWA+klK8uUCgYEAglar3abjEoHUnAEO2Dwdcc43XyMpJibjETAdMys1l1BSQ91l0mbOaSJOuvqQU+VH0ZIpqvmgIJ6H/MhbInvd7oMLksdzTX0ehOW6kaCU+zqL7xSvqc1ELdlCm1oYNOcSBbE9+mMLGVzph3Wr2wyoa9ELLmo2vpWGH4g76Ry20WECgYEA6W1Hun9JqPGUBNOLyggCUlqT/3vqoqCpa+r22zqjOlIm6tXICL1BX2e3PJ3V8SbimL83gsYb+zVw3em6IXb/QvJ6J8YDkI0k4ot2dnsUH00k2/RxiDd/6mNTzvfF/SX+Wevfzm4usItfPzLkrXPQm8z3ivp3YPay3Ilb4WSdM5Y=";
const TEST_KEY_N: &str = "8Y5gI7umU7Gwns2w3d-fhT3erQCuvSWlpqCOKS0-sxQw4UpG8kKdEfPYPDc81Pe__Vvuxt23XoGZOwaTTtwMM1tbLLKpk1bKkm5buvVSohEvgZGTd6SreuGHVjNwIqOsHFL_E-neXJ-VSH2pE_pOrSnS7hb3MezjnBu75Uf3cIHtyo9M72SUmcEZ1APEK7bXtDb1ftsWRmKIaRGix7npE9NxPBPNgdkG8KxA4VbyarJn0em6WAN1ONLa9pmQOHCyZ5UqSSwmfL5nBIYUQCzTdiFEkygKUoM7G7EGvp3AUUyoQCHClVuzWhbD1jzB5mj_gpGrV92YJUn3r_gvvtE2Tw";

/// Signs tokens the way a user pool does (RS256, with a `kid`), with a fixed test key.
///
/// [`FakeCognito`] serves its JWKS, so tokens it signs pass the signature check.
#[derive(Clone)]
pub struct TestSigner {
    kid: String,
    key: EncodingKey,
}

impl std::fmt::Debug for TestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Default for TestSigner {
    fn default() -> Self {
        TestSigner::with_kid("test-key-1")
    }
}

impl TestSigner {
    /// The test key under the key id `kid`.
    pub fn with_kid(kid: &str) -> Self {
        let der = base64::engine::general_purpose::STANDARD.decode(TEST_KEY_DER).expect("test key");
        TestSigner { kid: kid.to_owned(), key: EncodingKey::from_rsa_der(&der) }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWT of these claims, signed with RS256.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signing with the test key")
    }

    /// The JWK of the public key.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": TEST_KEY_N, "e": "AQAB"})
    }

    /// A JWKS holding the public key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk()] })
    }
}

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
    revoked: Mutex<std::collections::HashSet<String>>,
    jwks: Mutex<Option<String>>,
    jwks_down: AtomicBool,
    jwks_fetches: AtomicU64,
    latency: Mutex<Duration>,
    calls: AtomicU64,
    user_info_calls: AtomicU64,
    revoke_token_calls: AtomicU64,
    signed_calls: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// A stand-in for Cognito's API on loopback that counts `GetUser` calls.
///
/// Dropping it stops accepting connections.
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
            signed_calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, accept_state.clone()));
            }
        });
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

    /// The URL to give [`VerifierBuilder::endpoint_url`].
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

/// An HTTP/1.1 message: the head (up to and including the blank line) and the body.
struct Message {
    head: String,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

async fn read_message<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Message>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let mut msg = Message { head, body: Vec::new() };
            let len: usize = msg.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let start = end + 4;
            while buf.len() < start + len {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            msg.body = buf[start..start + len].to_vec();
            buf.drain(..start + len);
            return Ok(Some(msg));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", if status < 400 { "OK" } else { "Error" });
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn forward(upstream: &str, request: &Message) -> Result<Vec<u8>, BoxError> {
    let host = upstream.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = TcpStream::connect(host).await?;
    conn.write_all(request.head.as_bytes()).await?;
    conn.write_all(&request.body).await?;
    let mut buf = Vec::new();
    let answer = read_message(&mut conn, &mut buf).await?.ok_or("upstream closed the connection")?;
    let status: u16 =
        answer.head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
    let headers: Vec<(&str, &str)> = answer
        .head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("connection"))
        .collect();
    Ok(response(status, &headers, &answer.body))
}

/// The claims of the token in a `GetUser` request, unverified.
/// The token of a request: `GetUser`'s `AccessToken`, or userInfo's bearer token.
fn token_of(request: &Message) -> Option<String> {
    if let Some(bearer) = request.header("authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        return Some(bearer.to_owned());
    }
    let body = serde_json::from_slice::<serde_json::Value>(&request.body).ok()?;
    Some(body.get("AccessToken")?.as_str()?.to_owned())
}

/// The claims of the token in a request, unverified.
fn token_claims(request: &Message) -> Option<serde_json::Map<String, serde_json::Value>> {
    let token = token_of(request)?;
    let payload = token.split('.').nth(1)?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&payload).ok()
}

fn is_revoked(state: &FakeState, request: &Message) -> bool {
    token_of(request).is_some_and(|t| state.revoked.lock().unwrap().contains(&t))
}

/// userInfo's answer, as the behaviour says: the user as a flat JSON object, or 401 for a
/// revoked token; `None` to hang.
fn user_info_answer(behaviour: &Behaviour, revoked: bool, request: &Message) -> Option<Vec<u8>> {
    let json = |status, body: serde_json::Value| {
        response(status, &[("Content-Type", "application/json")], body.to_string().as_bytes())
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
async fn jwks_answer(state: &FakeState, behaviour: &Behaviour, request: &Message) -> Vec<u8> {
    state.jwks_fetches.fetch_add(1, SeqCst);
    let served = state.jwks.lock().unwrap().clone();
    match (state.jwks_down.load(SeqCst), served, behaviour) {
        (true, _, _) => response(500, &[], b"down"),
        (false, Some(json), _) => response(200, &[("Content-Type", "application/json")], json.as_bytes()),
        (false, None, Behaviour::Forward(upstream)) => {
            forward(upstream, request).await.unwrap_or_else(|e| response(502, &[], e.to_string().as_bytes()))
        }
        (false, None, _) => response(404, &[], b"no JWKS"),
    }
}

/// A Cognito JSON answer: a user, or an error code.
fn json_answer(status: u16, error: Option<&str>, body: &serde_json::Value) -> Vec<u8> {
    let mut headers = vec![("Content-Type", "application/x-amz-json-1.1")];
    headers.extend(error.map(|code| ("x-amzn-ErrorType", code)));
    response(status, &headers, body.to_string().as_bytes())
}

/// `GetUser`'s answer with a user, or a rejection or an error, as the behaviour says; `None` to
/// hang.
fn get_user_answer(behaviour: &Behaviour, revoked: bool, request: &Message) -> Option<Vec<u8>> {
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

/// A userInfo request: counted, delayed like a `GetUser` call, answered; `None` to hang.
async fn serve_user_info(state: &FakeState, behaviour: &Behaviour, request: &Message) -> Option<Vec<u8>> {
    state.user_info_calls.fetch_add(1, SeqCst);
    let revoked = is_revoked(state, request);
    let now = state.in_flight.fetch_add(1, SeqCst) + 1;
    state.max_in_flight.fetch_max(now, SeqCst);
    let latency = *state.latency.lock().unwrap();
    tokio::time::sleep(latency).await;
    let answer = user_info_answer(behaviour, revoked, request);
    state.in_flight.fetch_sub(1, SeqCst);
    answer
}

/// `RevokeToken`'s answer: success, or the behaviour's error.
fn revoke_token_answer(state: &FakeState, behaviour: &Behaviour) -> Vec<u8> {
    state.revoke_token_calls.fetch_add(1, SeqCst);
    match behaviour {
        Behaviour::Error(status, code) => {
            json_answer(*status, Some(code), &serde_json::json!({"__type": code, "message": "fake"}))
        }
        _ => json_answer(200, None, &serde_json::json!({})),
    }
}

async fn serve(mut stream: TcpStream, state: Arc<FakeState>) {
    let mut buf = Vec::new();
    while let Ok(Some(request)) = read_message(&mut stream, &mut buf).await {
        let is_get_user = request.header("x-amz-target").is_some_and(|t| t.ends_with(".GetUser"));
        let behaviour = state.behaviour.lock().unwrap().clone();
        let target = request.head.split_whitespace().nth(1).unwrap_or("");
        if request.head.starts_with("GET ") && target.ends_with("/.well-known/jwks.json") {
            if stream.write_all(&jwks_answer(&state, &behaviour, &request).await).await.is_err() {
                return;
            }
            continue;
        }
        let is_user_info = request.head.starts_with("GET ") && target.ends_with("/oauth2/userInfo");
        if is_user_info {
            match serve_user_info(&state, &behaviour, &request).await {
                Some(answer) if stream.write_all(&answer).await.is_ok() => continue,
                Some(_) => return,
                None => {
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    return;
                }
            }
        }
        // Cognito decides when the call arrives: a sign-out during the round trip does not
        // change an answer already on its way.
        let revoked = is_get_user && is_revoked(&state, &request);
        if is_get_user {
            state.calls.fetch_add(1, SeqCst);
            if request.header("authorization").is_some() {
                state.signed_calls.fetch_add(1, SeqCst);
            }
            let now = state.in_flight.fetch_add(1, SeqCst) + 1;
            state.max_in_flight.fetch_max(now, SeqCst);
            let latency = *state.latency.lock().unwrap();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
        }
        if request.header("x-amz-target").is_some_and(|t| t.ends_with(".RevokeToken")) {
            if stream.write_all(&revoke_token_answer(&state, &behaviour)).await.is_err() {
                return;
            }
            continue;
        }
        let answer = match (&behaviour, is_get_user) {
            (Behaviour::Forward(upstream), _) => Some(
                forward(upstream, &request)
                    .await
                    .unwrap_or_else(|e| response(502, &[], e.to_string().as_bytes())),
            ),
            (_, true) => get_user_answer(&behaviour, revoked, &request),
            (_, false) => Some(response(400, &[("x-amzn-ErrorType", "UnknownOperationException")], b"{}")),
        };
        let Some(answer) = answer else {
            // Hang: hold the connection open until the client gives up.
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            state.in_flight.fetch_sub(1, SeqCst);
            return;
        };
        if is_get_user {
            state.in_flight.fetch_sub(1, SeqCst);
        }
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A keep-alive HTTP/1.1 client on one connection, for load generators and soak runs: sends a
/// request, reads the whole answer, again and again on the same socket.
pub struct HttpConnection {
    read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl HttpConnection {
    /// Connects to `addr` (`host:port`).
    ///
    /// # Errors
    /// When the connection cannot be made.
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(HttpConnection { read: BufReader::new(read), write, line: String::new() })
    }

    /// A GET request with these extra header lines, such as `Authorization: Bearer ...`.
    pub fn get_request(path: &str, headers: &[&str]) -> Vec<u8> {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.into_bytes()
    }

    /// Sends one complete request and returns the answer's status and body.
    ///
    /// # Errors
    /// When the connection fails or the answer is not HTTP/1.1 with a `Content-Length`.
    pub async fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        self.write.write_all(request).await?;
        self.line.clear();
        self.read.read_line(&mut self.line).await?;
        let status = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("status line"))?;
        let mut length = 0;
        loop {
            self.line.clear();
            if self.read.read_line(&mut self.line).await? == 0 {
                return Err(bad("connection closed in the headers"));
            }
            if self.line == "\r\n" {
                break;
            }
            if let Some((k, v)) = self.line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().map_err(|_| bad("content-length"))?;
                }
            }
        }
        let mut body = vec![0; length];
        self.read.read_exact(&mut body).await?;
        Ok((status, body))
    }
}
