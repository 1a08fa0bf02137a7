//! One HTTP client for every call the crate makes: `GetUser` and the other Cognito calls, the
//! signing keys (JWKS) and userInfo.
//!
//! It is the `SdkConfig`'s HTTP client when the app gives one
//! ([`VerifierBuilder::sdk_config`](crate::VerifierBuilder::sdk_config)): whatever proxy, CA,
//! DNS resolver or connection pool the app chose for its AWS calls applies to the crate's too.
//! Otherwise it is the client the AWS SDK builds by default (hyper, rustls on aws-lc), which
//! honours `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`, `ALL_PROXY` and `NO_PROXY` as
//! the SDK does, and trusts the system's roots plus the certificates given to
//! [`VerifierBuilder::ca_pem`](crate::VerifierBuilder::ca_pem). One client, one TLS stack: the
//! Cognito client is given the same one.

use std::time::Duration;

use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_async::time::SystemTimeSource;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime::client::auth::no_auth::{NoAuthScheme, NO_AUTH_SCHEME_ID};
use aws_smithy_runtime::client::identity::no_auth::NoAuthIdentityResolver;
use aws_smithy_runtime::client::identity::IdentityCache;
use aws_smithy_runtime::client::orchestrator::endpoints::StaticUriEndpointResolver;
use aws_smithy_runtime::client::retries::strategy::NeverRetryStrategy;
use aws_smithy_runtime_api::client::auth::static_resolver::StaticAuthSchemeOptionResolver;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector as _, HttpConnectorSettings, SharedHttpClient,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

/// The SDK's default HTTPS client, with the system's roots plus `ca_pem`'s certificates.
///
/// # Errors
/// When `ca_pem` holds no usable certificate.
pub(crate) fn default_client(ca_pem: Option<&[u8]>) -> Result<SharedHttpClient, String> {
    let mut trust = TrustStore::empty().with_native_roots(true);
    if let Some(pem) = ca_pem {
        let mut reader = pem;
        let certs: Vec<_> = rustls_pemfile_certs(&mut reader)?;
        if certs.is_empty() {
            return Err("no PEM certificate in it".into());
        }
        trust = trust.with_pem_certificate(pem.to_vec());
    }
    let context = TlsContext::builder().with_trust_store(trust).build().map_err(|e| e.to_string())?;
    Ok(Builder::new().build_with_connector_fn(move |settings, components| {
        let mut builder = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
        builder.tls_context(context.clone()).build()
    }))
}

/// The certificates of a PEM document, checked before the TLS layer is given it.
fn rustls_pemfile_certs(reader: &mut &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(reader)
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| format!("not a PEM certificate: {e}")))
        .collect()
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer in time.
    Timeout,
    /// No connection, or it broke.
    Connection(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Connection(why) => write!(f, "request failed: {why}"),
        }
    }
}

/// GETs over the one client.
#[derive(Clone)]
pub(crate) struct Transport {
    client: SharedHttpClient,
    /// What a connector is made with outside the SDK's orchestrator: the time and sleep
    /// sources; the rest are inert stand-ins the connector never calls.
    components: RuntimeComponents,
    settings: HttpConnectorSettings,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("client", &self.client).finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(client: SharedHttpClient, connect_timeout: Duration) -> Self {
        let components = RuntimeComponentsBuilder::new("actix-cognito")
            .with_auth_scheme_option_resolver(Some(StaticAuthSchemeOptionResolver::new(vec![
                NO_AUTH_SCHEME_ID,
            ])))
            .with_endpoint_resolver(Some(StaticUriEndpointResolver::uri("http://unused.invalid")))
            .with_auth_scheme(NoAuthScheme::new())
            .with_identity_cache(Some(IdentityCache::no_cache()))
            .with_identity_resolver(NO_AUTH_SCHEME_ID, NoAuthIdentityResolver::new())
            .with_retry_strategy(Some(NeverRetryStrategy::new()))
            .with_time_source(Some(SystemTimeSource::new()))
            .with_sleep_impl(Some(TokioSleep::new()))
            .build()
            .expect("every required runtime component is set above");
        let settings = HttpConnectorSettings::builder().connect_timeout(connect_timeout).build();
        Transport { client, components, settings }
    }

    /// The client, for the Cognito client's configuration.
    pub(crate) fn client(&self) -> SharedHttpClient {
        self.client.clone()
    }

    /// GETs `url` (with `Authorization: Bearer {bearer}` when given) within `timeout`: the status
    /// and at most `limit` bytes of the body.
    pub(crate) async fn get(
        &self,
        url: &str,
        bearer: Option<&str>,
        limit: usize,
        timeout: Duration,
    ) -> Result<(u16, Bytes), Failure> {
        let mut request = http::Request::get(url);
        if let Some(token) = bearer {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(SdkBody::empty()).map_err(|e| Failure::Connection(e.to_string()))?;
        let request = HttpRequest::try_from(request).map_err(|e| Failure::Connection(e.to_string()))?;
        let exchange = async {
            let connector = self.client.http_connector(&self.settings, &self.components);
            let response = connector.call(request).await.map_err(|e| match e.is_timeout() {
                true => Failure::Timeout,
                false => Failure::Connection(error_chain(&e)),
            })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| Failure::Connection(format!("body: {e}")))?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| Failure::Timeout)?
    }
}

/// An error and its sources, on one line: the connector's own message says little ("io error").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
