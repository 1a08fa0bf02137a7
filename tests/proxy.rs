//! In a company network: every HTTPS call the crate makes (`GetUser`, the signing keys,
//! userInfo) goes through the proxy that `HTTPS_PROXY` names, and trusts a private CA given to
//! `ca_pem`. A binary of its own: the proxy variables are the process's.
//!
//! Cognito's stand-in is served over TLS as `cognito.test`, a name that does not resolve here:
//! only the proxy can reach it, as in a network whose one route out is the proxy. Its
//! certificate is signed by a CA made for the test.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_cognito::testing::{access_claims, Behaviour, FakeCognito, TestSigner};
use actix_cognito::{ConfigError, Verifier};
use common::{FAKE_CLIENT, FAKE_POOL};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "cognito.test";

/// A CONNECT proxy on loopback: tunnels to `cognito.test` (which it alone can reach), records
/// each CONNECT target, and refuses everything while `refuse` is set.
struct Proxy {
    addr: SocketAddr,
    connects: Arc<Mutex<Vec<String>>>,
    refuse: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, refusing) = (connects.clone(), refuse.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (seen, refusing) = (seen.clone(), refusing.clone());
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, refusing) = (seen.clone(), refusing.clone());
                    async move {
                        let target = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
                        seen.lock().unwrap().push(format!("{} {target}", req.method()));
                        let reachable = req.method() == hyper::Method::CONNECT
                            && target.starts_with(&format!("{HOST}:"))
                            && !refusing.load(std::sync::atomic::Ordering::SeqCst);
                        if !reachable {
                            let mut answer = hyper::Response::new(Empty::<Bytes>::new());
                            *answer.status_mut() = hyper::StatusCode::FORBIDDEN;
                            return Ok::<_, hyper::Error>(answer);
                        }
                        tokio::spawn(async move {
                            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
                            let Ok(mut upstream) = TcpStream::connect(upstream).await else { return };
                            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream)
                                .await;
                        });
                        Ok(hyper::Response::new(Empty::<Bytes>::new()))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Proxy { addr, connects, refuse }
    }

    fn connects(&self) -> Vec<String> {
        self.connects.lock().unwrap().clone()
    }
}

/// TLS in front of the fake, as `cognito.test`, with a certificate a private CA signed; that
/// CA's PEM.
async fn tls_front(fake: SocketAddr) -> (SocketAddr, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "actix-cognito proxy test CA");
    ca_params.key_usages =
        vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(vec![HOST.to_owned()]).unwrap();
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let Ok(mut plain) = TcpStream::connect(fake).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, ca_pem)
}

fn token(sub: &str, scope: &str) -> String {
    let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, sub, 3600);
    claims["scope"] = scope.into();
    TestSigner::default().sign(&claims)
}

#[tokio::test]
async fn getuser_the_keys_and_userinfo_all_go_through_the_proxy_and_trust_the_private_ca() {
    let fake = FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap();
    let fake_addr: SocketAddr = fake.endpoint().trim_start_matches("http://").parse().unwrap();
    let (front, ca_pem) = tls_front(fake_addr).await;
    let proxy = Proxy::start(front).await;
    // The process's proxy, as a company network sets it (only this binary's).
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe {
        std::env::set_var("HTTPS_PROXY", format!("http://{}", proxy.addr));
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let endpoint = format!("https://{HOST}:{}", front.port());
    let builder = || {
        Verifier::builder(FAKE_POOL)
            .client_id(FAKE_CLIENT)
            .endpoint_url(&endpoint)
            .user_info_domain(&endpoint)
            .ca_pem(ca_pem.clone())
    };

    let verifier = builder().build_hydrated().await.expect("the keys through the proxy");
    let user = verifier.verify(&token("admin-scope", "aws.cognito.signin.user.admin")).await.unwrap();
    assert_eq!(user.username(), "user-admin-scope");
    let user = verifier.verify(&token("openid-only", "openid email")).await.unwrap();
    assert_eq!(user.username(), "user-openid-only");
    assert!(fake.jwks_fetches() >= 1 && fake.get_user_calls() == 1 && fake.user_info_calls() == 1);
    let connects = proxy.connects();
    assert!(
        !connects.is_empty() && connects.iter().all(|c| *c == format!("CONNECT {HOST}:{}", front.port())),
        "{connects:?}"
    );

    // Without the private CA, the certificate is refused and the error says so.
    let err = Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .endpoint_url(&endpoint)
        .build_hydrated()
        .await
        .unwrap_err();
    assert!(matches!(err, ConfigError::Jwks(_)), "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");

    // A proxy that refuses: a clear error at start, and a 503 (never a 401) for a new token.
    proxy.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = builder().build_hydrated().await.unwrap_err();
    assert!(matches!(err, ConfigError::Jwks(_)), "{err}");
    eprintln!("with the proxy refusing: {err}");
    assert!(err.to_string().contains("jwks.json"), "{err}");
    let lazy = builder().build().unwrap();
    let fresh = lazy.verify(&token("during-refusal", "aws.cognito.signin.user.admin")).await.unwrap_err();
    assert!(fresh.is_unavailable(), "{fresh:?}");

    // A bad CA bundle is refused at build, naming the setting.
    let err = builder().ca_pem("not a certificate").build().unwrap_err();
    assert!(matches!(err, ConfigError::InvalidSetting { setting: "ca_pem", .. }), "{err}");
}
