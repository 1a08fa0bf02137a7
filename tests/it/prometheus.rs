//! The dashboard against a real Prometheus: two example servers in fleet mode under a little
//! load, scraped every second, and every expression of `examples/grafana-dashboard.json`
//! evaluated through Prometheus's HTTP API. An expression that errs or returns no series fails.
#![cfg(feature = "redis")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use common::example::{free_port, start};
use common::http::{get, get_with_token};

/// A Prometheus server of the test's own, stopped when dropped.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    async fn scraping(targets: &[std::net::SocketAddr]) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("actix-cognito-prometheus-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let targets: Vec<String> = targets.iter().map(|a| format!("'{a}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: actix\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run prometheus ({e}): install it (apt-get install prometheus) or run ./scripts/test.sh")
            });
        let prometheus = Prometheus { child, addr: ([127, 0, 0, 1], port).into(), _dir: TempDir(dir) };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(prometheus.addr).await.is_err()
            || get(prometheus.addr, "/-/ready", &[]).await.status != 200
        {
            assert!(started.elapsed() < Duration::from_secs(30), "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    /// The result of an instant query: its series, or the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let query: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let reply = get(self.addr, &format!("/api/v1/query?query={query}"), &[]).await;
        let body = reply.json();
        if body["status"] != "success" {
            return Err(format!("{}: {}", reply.status, body["error"]));
        }
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Every `expr` of the dashboard's panels.
fn dashboard_expressions() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(out.len() >= 10, "the dashboard lost its panels");
    out
}

#[tokio::test]
async fn every_dashboard_expression_returns_series_from_two_scraped_example_servers() {
    let s = common::seeded("prometheus").await;
    let redis = crate::fleet::Redis::start().await;
    let endpoint = s.proxy.endpoint();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let vars = [
            ("COGNITO_USER_POOL_ID", s.pool.pool_id.as_str()),
            ("COGNITO_CLIENT_ID", s.pool.client_id.as_str()),
            ("COGNITO_CACHE_TTL_SECS", "2"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("REDIS_URL", &redis.url()),
        ];
        servers.push(start(&vars).await);
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();

    // The histogram is exported as one: buckets, not a summary's quantiles.
    let page = get(addrs[0], "/metrics", &[]).await.body;
    assert!(page.contains("# TYPE actix_cognito_get_user_duration_seconds histogram"), "{page}");
    for line in page.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(page.contains(&format!("# HELP {name} ")), "{name} has no # HELP");
    }

    let prometheus = Prometheus::scraping(&addrs).await;
    // A little load: a user's token on both servers, a new sign-in now and then, garbage.
    let mut tokens = vec![s.tokens.access.clone()];
    let load = async {
        for round in 0..40 {
            if round % 10 == 0 {
                tokens
                    .push(s.pool.sign_in(&s.pool.client_id, "alice", common::PASSWORD).await.unwrap().access);
            }
            for addr in &addrs {
                for token in &tokens {
                    assert_eq!(get_with_token(*addr, "/me", token).await.status, 200);
                }
                assert_eq!(get_with_token(*addr, "/me", "not.a.token").await.status, 401);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    load.await;

    for (title, expr) in dashboard_expressions() {
        let started = Instant::now();
        loop {
            match prometheus.query(&expr).await {
                Ok(series) if !series.is_empty() => break,
                Ok(_) if started.elapsed() < Duration::from_secs(20) => {}
                Ok(_) => panic!("no series for {expr:?} (panel {title:?})"),
                Err(e) => panic!("{expr:?} (panel {title:?}) failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Both instances are in the fleet's figures.
    let up = prometheus.query("sum(up{job=\"actix\"})").await.unwrap();
    assert_eq!(up[0]["value"][1], "2", "{up:?}");
}
