//! Fleet mode on a Redis cluster: three masters the test starts (`--cluster-enabled`), reached
//! through one node's address as ElastiCache gives it.
#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_cognito::testing::{Behaviour, FakeCognito};
use actix_cognito::{Rejection, Verifier, VerifyError};
use common::{fake_token, seeded, FAKE_CLIENT, FAKE_POOL};

use crate::common;

/// Three cluster-enabled redis-servers, each master of a third of the slots; with TLS, over TLS
/// only (clients and the cluster bus), with the restricted ACL user `app` and an `admin`.
struct Cluster {
    ports: [u16; 3],
    bus_ports: [u16; 3],
    children: [Option<Child>; 3],
    dir: std::path::PathBuf,
    /// With TLS: the private CA's certificate.
    ca_pem: Option<String>,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(false).await
    }

    async fn start_with(tls: bool) -> Cluster {
        let port = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ports = [port(), port(), port()];
        let bus_ports = [port(), port(), port()];
        let dir = std::env::temp_dir().join(format!("actix-cognito-cluster-{}", ports[0]));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = tls.then(|| crate::fleet::write_tls_files(&dir));
        let mut cluster = Cluster { ports, bus_ports, children: [None, None, None], dir, ca_pem };
        for i in 0..3 {
            cluster.start_node(i).await;
        }
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (i, (from, to)) in ranges.iter().enumerate() {
            cluster.cmd(i, &["CLUSTER", "ADDSLOTSRANGE", &from.to_string(), &to.to_string()]).await;
        }
        for i in 1..3 {
            let (port, bus) = (cluster.ports[i].to_string(), cluster.bus_ports[i].to_string());
            cluster.cmd(0, &["CLUSTER", "MEET", "127.0.0.1", &port, &bus]).await;
        }
        cluster.wait_ok().await;
        cluster
    }

    async fn start_node(&mut self, i: usize) {
        let port = self.ports[i].to_string();
        let config = self.dir.join(format!("nodes-{port}.conf"));
        let mut args: Vec<String> = vec!["--cluster-port".into(), self.bus_ports[i].to_string()];
        if self.ca_pem.is_some() {
            let path = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
            args.extend(["--port".into(), "0".into(), "--tls-port".into(), port.clone()]);
            args.extend(["--tls-cluster".into(), "yes".into(), "--tls-auth-clients".into(), "no".into()]);
            args.extend([
                "--tls-cert-file".into(),
                path("cert.pem"),
                "--tls-key-file".into(),
                path("key.pem"),
            ]);
            args.extend(["--tls-ca-cert-file".into(), path("ca.pem")]);
            args.extend(
                ["--user", "default", "off", "--user", "admin", "on", ">admin-pass", "~*", "&*", "+@all"]
                    .map(String::from),
            );
            args.extend(["--user", "app", "on", ">s3cret-pass"].map(String::from));
            args.extend(crate::fleet::ACL_RULES.iter().map(|r| r.to_string()));
        } else {
            args.extend(["--port".into(), port.clone()]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .arg("--cluster-config-file")
            .arg(&config)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it (apt-get install redis-server) or run ./scripts/test.sh")
            });
        self.children[i] = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.ports[i])).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not listen on port {port}");
    }

    fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every node says the cluster is ok.
    async fn wait_ok(&self) {
        let started = Instant::now();
        for i in 0..3 {
            loop {
                if let redis::Value::BulkString(info) = self.cmd(i, &["CLUSTER", "INFO"]).await {
                    if String::from_utf8_lossy(&info).contains("cluster_state:ok") {
                        break;
                    }
                }
                assert!(started.elapsed() < Duration::from_secs(20), "the cluster did not form");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The URL of node `i`: any node will do, as with ElastiCache's configuration endpoint. With
    /// TLS, as the restricted ACL user.
    fn url(&self, i: usize) -> String {
        match self.ca_pem {
            Some(_) => format!("rediss://app:s3cret-pass@localhost:{}", self.ports[i]),
            None => format!("redis://127.0.0.1:{}", self.ports[i]),
        }
    }

    async fn cmd(&self, i: usize, args: &[&str]) -> redis::Value {
        let client = match &self.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                format!("rediss://admin:admin-pass@localhost:{}", self.ports[i]),
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone().into_bytes()) },
            )
            .unwrap(),
            None => redis::Client::open(self.url(i)).unwrap(),
        };
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// Keys held by node `i`.
    async fn keys_on(&self, i: usize) -> i64 {
        match self.cmd(i, &["DBSIZE"]).await {
            redis::Value::Int(n) => n,
            other => panic!("{other:?}"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.stop_node(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn claims_fake() -> FakeCognito {
    FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap()
}

/// Three instances on the cluster, each given node 0's address only (and the CA, with TLS).
async fn three(fake: &FakeCognito, cluster: &Cluster) -> Vec<Verifier> {
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let mut builder = Verifier::builder(FAKE_POOL)
            .client_id(FAKE_CLIENT)
            .endpoint_url(fake.endpoint())
            .redis(cluster.url(0))
            .redis_timeout(Duration::from_millis(500));
        if let Some(ca) = &cluster.ca_pem {
            builder = builder.redis_ca_pem(ca.clone().into_bytes());
        }
        let v = builder.build_hydrated().await.unwrap();
        fleet.push(v);
    }
    fleet
}

#[tokio::test]
async fn a_cluster_shares_each_verdict_once_over_every_master_and_invalidations_reach_every_instance() {
    let (fake, cluster) = (claims_fake().await, Cluster::start().await);
    let fleet = three(&fake, &cluster).await;
    let tokens: Vec<String> = (0..30).map(|i| fake_token(&format!("cluster-user-{i}"), 3600)).collect();
    for (i, token) in tokens.iter().enumerate() {
        for j in 0..3 {
            fleet[(i + j) % 3].verify(token).await.unwrap();
        }
    }
    assert_eq!(fake.get_user_calls(), 30, "one GetUser call per token across three instances");
    // The users' slots spread the verdicts over the three masters.
    for i in 0..3 {
        let keys = cluster.keys_on(i).await;
        assert!(keys >= 5, "master {i} holds {keys} keys");
    }

    // A sign-out on one instance reaches the other two within 100 ms.
    let token = &tokens[7];
    fake.revoke(token);
    let started = Instant::now();
    fleet[0].invalidate_user("cluster-user-7").await;
    for v in &fleet[1..] {
        loop {
            match v.verify(token).await {
                Err(VerifyError::Rejected(Rejection::NotAuthorized)) => break,
                Ok(_) => {
                    assert!(started.elapsed() < Duration::from_millis(100), "still accepted after 100 ms")
                }
                Err(e) => panic!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // The other users are still shared.
    let calls = fake.get_user_calls();
    for v in &fleet {
        v.verify(&tokens[8]).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), calls);
}

#[tokio::test]
async fn a_master_down_leaves_requests_answered_and_sharing_resumes_when_it_returns() {
    let (fake, mut cluster) = (claims_fake().await, Cluster::start().await);
    let fleet = three(&fake, &cluster).await;
    fleet[0].verify(&fake_token("before", 3600)).await.unwrap();
    cluster.stop_node(2);
    // Every request is answered, by Cognito when Redis cannot say.
    for i in 0..20 {
        let token = fake_token(&format!("during-{i}"), 3600);
        for v in &fleet {
            let started = Instant::now();
            v.verify(&token).await.unwrap();
            assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        }
    }
    cluster.start_node(2).await;
    cluster.wait_ok().await;
    // Once the breaker lets Redis in again, verdicts are shared again.
    let started = Instant::now();
    let mut n = 0;
    loop {
        let token = fake_token(&format!("after-{n}"), 3600);
        n += 1;
        let before = fake.get_user_calls();
        for v in &fleet {
            v.verify(&token).await.unwrap();
        }
        if fake.get_user_calls() == before + 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "sharing did not resume");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// ElastiCache as it is in production: a cluster over TLS with a private CA, an ACL user
/// limited to the crate's keys and channel.
#[tokio::test]
async fn a_tls_cluster_with_a_private_ca_works_as_the_restricted_acl_user() {
    let (fake, cluster) = (claims_fake().await, Cluster::start_with(true).await);
    let fleet = three(&fake, &cluster).await;
    let tokens: Vec<String> = (0..12).map(|i| fake_token(&format!("tls-user-{i}"), 3600)).collect();
    for token in &tokens {
        for v in &fleet {
            v.verify(token).await.unwrap();
        }
    }
    assert_eq!(fake.get_user_calls(), 12, "verdicts are not shared over the TLS cluster");
    fake.revoke(&tokens[3]);
    let started = Instant::now();
    fleet[0].invalidate_user("tls-user-3").await;
    for v in &fleet[1..] {
        while v.verify(&tokens[3]).await.is_ok() {
            assert!(started.elapsed() < Duration::from_millis(200), "still accepted after 200 ms");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for v in &fleet {
        assert_eq!(v.readiness().redis, Some(actix_cognito::RedisState::Up));
    }
}

/// The bar: three example servers against the cluster, all given one node's address.
#[tokio::test]
async fn three_example_servers_on_a_cluster_share_verdicts_and_sign_outs() {
    let s = seeded("cluster-example").await;
    let cluster = Cluster::start().await;
    let servers = crate::fleet::three_servers(&s, &cluster.url(0)).await;
    let get = common::http::get_with_token;
    for server in &servers {
        assert_eq!(get(server.addr, "/me", &s.tokens.access).await.status, 200);
    }
    assert_eq!(s.proxy.get_user_calls(), 1, "a token verified on one is a hit on the others");

    // 30 distinct tokens, each requested on all three: 30 calls.
    let mut tokens = Vec::new();
    for _ in 0..30 {
        tokens.push(s.pool.sign_in(&s.pool.client_id, "alice", common::PASSWORD).await.unwrap().access);
    }
    for (i, token) in tokens.iter().enumerate() {
        for j in 0..3 {
            assert_eq!(get(servers[(i + j) % 3].addr, "/me", token).await.status, 200);
        }
    }
    assert_eq!(s.proxy.get_user_calls(), 31);

    // Logout on one: 401 on the others within 200 ms.
    crate::fleet::logout_reaches_the_others_within(&servers, &s.tokens.access, Duration::from_millis(200))
        .await;
}
