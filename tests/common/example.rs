//! Runs the example server as its own process.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The example's binary with every feature, built (or found up to date) once per test run.
pub fn server_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--all-features", "--example", "server"])
            .status()
            .unwrap();
        assert!(status.success(), "building the example server failed");
    });
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    dir.join(format!("server{}", std::env::consts::EXE_SUFFIX))
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the example with exactly these variables, and no AWS credentials.
pub fn command(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(server_binary());
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(vars.iter().copied()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

pub async fn start(vars: &[(&str, &str)]) -> Server {
    let port = free_port();
    let port_s = port.to_string();
    let mut all = vars.to_vec();
    all.push(("PORT", &port_s));
    let mut server = Server { child: command(&all).spawn().unwrap(), addr: ([127, 0, 0, 1], port).into() };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(server.addr).await.is_ok() {
            return server;
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the example server exited with {status}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the example server did not listen on {}", server.addr);
}
