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
use std::sync::{Arc, Mutex};

use aws_sdk_cognitoidentityprovider::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cognitoidentityprovider::types::{
    AttributeDataType, AttributeType, AuthFlowType, ExplicitAuthFlowsType, MessageActionType,
    SchemaAttributeType, UsernameAttributeType,
};
use aws_sdk_cognitoidentityprovider::Client;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::config::VerifierBuilder;
use crate::Verifier;

mod client;
mod fake;

pub use client::HttpConnection;
pub use fake::{Behaviour, FakeCognito};

/// Errors of the helpers, boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The endpoint tests use: `AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER`, else
/// `AWS_ENDPOINT_URL`, else `http://127.0.0.1:4566` (LocalStack's and `moto_server -p 4566`'s).
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
                "no Cognito emulator answers at {endpoint} ({}): start one, such as moto's server \
                 (`pip install 'moto[server]'`, then `moto_server -p 4566`), cognito-local \
                 (`npx cognito-local`, on port 9229) or LocalStack Pro, and point AWS_ENDPOINT_URL at it",
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
