//! Which `iss` values a verifier accepts: Cognito's two forms for each pool, the ones added with
//! `allow_issuer`, and, under an endpoint override on a loopback host, the forms emulators use.
//!
//! Emulators put their own address in `iss`: moto the AWS form, cognito-local
//! `http://localhost:9229/{pool}` (its issuer domain), LocalStack
//! `http://localhost.localstack.cloud:4566/{pool}` even when the container's port is mapped to
//! another one. Which loopback alias and which of those ports appears depends on how the emulator
//! was started, not on how this process reaches it, so with a loopback endpoint every loopback
//! alias on the endpoint's port or on 4566 is accepted, with the pool id as the path. Nothing is
//! loosened for an endpoint on any other host.

use http::Uri;

/// LocalStack's edge port, which its tokens name whatever port the container is reached on.
const LOCALSTACK_PORT: u16 = 4566;

/// The hosts that name this machine in an emulator's issuer.
const LOOPBACK_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "::1", "localhost.localstack.cloud"];

/// The accepted issuers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Issuers {
    /// Accepted as they are.
    pub(crate) exact: Vec<String>,
    /// With a loopback endpoint override: its pool ids and ports.
    loopback: Option<Loopback>,
}

#[derive(Debug, Clone)]
struct Loopback {
    /// The paths accepted: `/{pool}` for each pool.
    paths: Vec<String>,
    ports: Vec<u16>,
}

impl Issuers {
    pub(crate) fn new(exact: Vec<String>) -> Self {
        Issuers { exact, loopback: None }
    }

    /// Also accepts the issuers emulators use for these pools, given the endpoint override.
    /// `{endpoint}/{pool}` is always added; a loopback endpoint adds every loopback alias on
    /// its port or on 4566, a non-loopback one only LocalStack's host on its port.
    pub(crate) fn add_emulator(&mut self, endpoint: &Uri, pools: &[&str]) {
        let base = endpoint.to_string();
        let base = base.trim_end_matches('/');
        let port = port_of(endpoint);
        for pool in pools {
            self.exact.push(format!("{base}/{pool}"));
        }
        if is_loopback(endpoint.host().unwrap_or_default()) {
            let mut ports = vec![port];
            if port != LOCALSTACK_PORT {
                ports.push(LOCALSTACK_PORT);
            }
            self.loopback = Some(Loopback { paths: pools.iter().map(|p| format!("/{p}")).collect(), ports });
        } else {
            for pool in pools {
                for scheme in ["http", "https"] {
                    self.exact.push(format!("{scheme}://localhost.localstack.cloud:{port}/{pool}"));
                }
            }
        }
    }

    /// Whether `iss` is accepted.
    pub(crate) fn accepts(&self, iss: &str) -> bool {
        self.exact.iter().any(|e| e == iss) || self.loopback.as_ref().is_some_and(|l| l.accepts(iss))
    }

    /// Whether an endpoint override made emulator issuers acceptable.
    pub(crate) fn emulated(&self) -> bool {
        self.loopback.is_some() || self.exact.iter().any(|e| e.starts_with("http://"))
    }

    /// A description of what is accepted, for a log line.
    pub(crate) fn describe(&self) -> String {
        let mut out = self.exact.join(", ");
        if let Some(l) = &self.loopback {
            let ports: Vec<String> = l.ports.iter().map(u16::to_string).collect();
            out.push_str(&format!(
                ", or http(s)://{{{}}}:{{{}}}{{{}}}",
                LOOPBACK_HOSTS.join(","),
                ports.join(","),
                l.paths.join(",")
            ));
        }
        out
    }
}

impl Loopback {
    fn accepts(&self, iss: &str) -> bool {
        let Ok(uri) = iss.parse::<Uri>() else { return false };
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.query().is_none()
            && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
            && LOOPBACK_HOSTS.contains(&unbracket(uri.host().unwrap_or_default()))
            && self.ports.contains(&port_of(&uri))
            && self.paths.iter().any(|p| p == uri.path())
    }
}

/// The origin of an issuer (`scheme://host:port`), for a log line; never more of the claim.
pub(crate) fn origin(iss: &str) -> String {
    match iss.parse::<Uri>() {
        Ok(uri) if uri.scheme_str().is_some() && uri.host().is_some() => {
            format!("{}://{}:{}", uri.scheme_str().unwrap_or(""), uri.host().unwrap_or(""), port_of(&uri))
        }
        _ => "(not a URL)".to_owned(),
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// The port of an absolute URL, explicit or by its scheme.
pub(crate) fn port_of(uri: &Uri) -> u16 {
    uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 })
}

/// Whether `host` names this machine: `localhost`, a loopback address, or LocalStack's host
/// (which resolves to 127.0.0.1).
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = unbracket(host);
    host.eq_ignore_ascii_case("localhost")
        || host.eq_ignore_ascii_case("localhost.localstack.cloud")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulated(endpoint: &str) -> Issuers {
        let mut issuers =
            Issuers::new(vec!["https://cognito-idp.us-east-1.amazonaws.com/local_Pool1".into()]);
        issuers.add_emulator(&endpoint.parse().unwrap(), &["local_Pool1"]);
        issuers
    }

    #[test]
    fn a_loopback_endpoint_accepts_every_loopback_alias_on_its_port() {
        for endpoint in ["http://127.0.0.1:9229", "http://localhost:9229/", "http://[::1]:9229"] {
            let issuers = emulated(endpoint);
            for iss in [
                "http://localhost:9229/local_Pool1",
                "http://127.0.0.1:9229/local_Pool1",
                "http://[::1]:9229/local_Pool1",
                "https://localhost:9229/local_Pool1",
                "https://cognito-idp.us-east-1.amazonaws.com/local_Pool1",
            ] {
                assert!(issuers.accepts(iss), "{endpoint} should accept {iss}");
            }
        }
    }

    #[test]
    fn a_loopback_endpoint_accepts_localstacks_host_on_4566_and_on_its_own_port() {
        // testcontainers: the container's 4566 reached as 14566.
        let issuers = emulated("http://127.0.0.1:14566");
        assert!(issuers.accepts("http://localhost.localstack.cloud:4566/local_Pool1"));
        assert!(issuers.accepts("http://localhost.localstack.cloud:14566/local_Pool1"));
        assert!(issuers.accepts("http://localhost:4566/local_Pool1"));
        assert!(
            emulated("http://localhost:4566").accepts("https://localhost.localstack.cloud:4566/local_Pool1")
        );
    }

    #[test]
    fn a_loopback_endpoint_still_refuses_other_pools_hosts_ports_and_shapes() {
        let issuers = emulated("http://127.0.0.1:9229");
        for iss in [
            "http://localhost:9229/local_Other",
            "http://localhost:9229/local_Pool1/",
            "http://localhost:9229/local_Pool1?x=1",
            "http://localhost:9230/local_Pool1",
            "http://evil.example.com:9229/local_Pool1",
            "http://localhost.evil.example.com:9229/local_Pool1",
            "http://user@localhost:9229/local_Pool1",
            "ftp://localhost:9229/local_Pool1",
            "localhost:9229/local_Pool1",
            "http://127.0.0.2:9229/local_Pool",
            "",
        ] {
            assert!(!issuers.accepts(iss), "accepted {iss}");
        }
    }

    #[test]
    fn a_non_loopback_endpoint_gets_no_aliases() {
        let issuers = emulated("http://cognito.internal.example.com:4566");
        assert!(issuers.accepts("http://cognito.internal.example.com:4566/local_Pool1"));
        assert!(issuers.accepts("http://localhost.localstack.cloud:4566/local_Pool1"));
        for iss in [
            "http://localhost:4566/local_Pool1",
            "http://127.0.0.1:4566/local_Pool1",
            "http://localhost.localstack.cloud:9229/local_Pool1",
            "http://cognito.internal.example.com:4567/local_Pool1",
        ] {
            assert!(!issuers.accepts(iss), "accepted {iss}");
        }
    }

    #[test]
    fn origins_name_scheme_host_and_port_only() {
        assert_eq!(origin("http://localhost:9229/local_Pool1"), "http://localhost:9229");
        assert_eq!(
            origin("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_X"),
            "https://cognito-idp.eu-west-1.amazonaws.com:443"
        );
        assert_eq!(origin("not a url"), "(not a URL)");
    }
}
