//! A server process that one test owns (a private redis-server or PostgreSQL on a free port):
//! started, signalled (`STOP`/`CONT`/`QUIT`), killed and restarted by the test, killed on drop.
//! Tests that stop a server use one of these, never the shared servers.

use std::net::TcpStream;
use std::process::Child;
use std::time::Duration;

use super::eventually;

/// A private server process; `start` spawns it again on the same port for every restart.
pub struct PrivateServer {
    child: Option<Child>,
    port: u16,
    what: String,
    start: Box<dyn Fn() -> Child + Send>,
}

impl PrivateServer {
    /// A server not started yet; `what` names it in the readiness wait.
    pub fn new(what: &str, port: u16, start: Box<dyn Fn() -> Child + Send>) -> Self {
        Self { child: None, port, what: what.to_string(), start }
    }

    /// A server started and listening.
    pub async fn started(what: &str, port: u16, start: Box<dyn Fn() -> Child + Send>) -> Self {
        let mut s = Self::new(what, port, start);
        s.start().await;
        s
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts it (again) and waits until it accepts connections.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.what);
        self.child = Some((self.start)());
        let port = self.port;
        let what = format!("{} to listen", self.what);
        eventually(Duration::from_secs(20), &what, || async move { TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()) }).await;
    }

    /// Sends `signal` (`STOP`, `CONT`, `QUIT`...) to the running process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
    }

    /// Stops the process with `signal` (e.g. PostgreSQL's immediate shutdown, `QUIT`) and reaps it.
    pub fn stop_with(&mut self, signal: &str) {
        self.signal(signal);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Kills the process (SIGKILL) and reaps it; a no-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start a private redis-server on `port` with its files in `dir`; with `appendonly` a
/// graceful stop (SIGTERM, `SHUTDOWN`) keeps the data for the restart.
pub fn redis_server(port: u16, dir: &std::path::Path, appendonly: bool) -> Box<dyn Fn() -> Child + Send> {
    let dir = dir.to_path_buf();
    let aof = if appendonly { "yes" } else { "no" };
    Box::new(move || {
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", aof])
            .arg("--dir")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server")
    })
}
