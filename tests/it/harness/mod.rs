//! Test harness: starts the real `rapr` binary on free ports with a temporary resources folder,
//! waits for it with a deadline (never a bare sleep), and prints its logs when a test fails.
//! Ports come from rapr's one allocator (`rapr::net_ports`); a sidecar that could not bind a port
//! picked for it (another process took it in between) is started again on fresh ports.

#![allow(dead_code)]

pub mod partition;
pub mod placement;
pub mod private_server;
mod start_retry;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rapr_proto::runtime::v1::dapr_client::DaprClient;
use tonic::transport::Channel;

/// A free TCP port on loopback, never handed out before in this test process.
pub fn free_port() -> u16 {
    rapr::net_ports::free_port().expect("a free port")
}

/// How many times a sidecar start is tried when a picked port turns out taken.
const START_ATTEMPTS: usize = 4;

/// Polls `f` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A component YAML for `state.sqlite` in `dir`.
pub fn sqlite_yaml(name: &str, dir: &Path) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n",
        dir.join(format!("{name}.db")).display()
    )
}

/// A component YAML for `state.in-memory`.
pub fn memory_yaml(name: &str) -> String {
    format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.in-memory\n  version: v1\n")
}

/// Builds a sidecar to start.
pub struct SidecarBuilder {
    app_id: String,
    dir: tempfile::TempDir,
    files: Vec<(String, String)>,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    args: Vec<String>,
    wait_healthy: bool,
    home: Option<PathBuf>,
    first_ports: Option<(u16, u16)>,
}

impl SidecarBuilder {
    /// A sidecar for `app_id` with no components yet.
    pub fn new(app_id: &str) -> Self {
        Self { app_id: app_id.into(), dir: tempfile::tempdir().unwrap(), files: vec![], env: vec![], env_removed: vec![], args: vec![], wait_healthy: true, home: None, first_ports: None }
    }

    /// The temp folder (for data files).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Adds a resource file.
    pub fn file(mut self, name: &str, text: &str) -> Self {
        self.files.push((name.into(), text.into()));
        self
    }

    /// Adds a `state.sqlite` store.
    pub fn sqlite(self, name: &str) -> Self {
        let y = sqlite_yaml(name, self.dir.path());
        self.file(&format!("{name}.yaml"), &y)
    }

    /// Adds a `state.in-memory` store.
    pub fn memory(self, name: &str) -> Self {
        let y = memory_yaml(name);
        self.file(&format!("{name}.yaml"), &y)
    }

    /// Sets an environment variable for the sidecar.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Removes an environment variable the test process has from the sidecar's environment.
    pub fn env_remove(mut self, k: &str) -> Self {
        self.env_removed.push(k.into());
        self
    }

    /// Adds command-line arguments.
    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    /// Shares `RAPR_HOME` (and so name resolution) with other sidecars of the test; by default
    /// each sidecar has its own, so parallel tests never resolve each other's apps.
    pub fn home(mut self, home: &Path) -> Self {
        self.home = Some(home.to_path_buf());
        self
    }

    /// HTTP and gRPC ports for the first start attempt (to test the retry on a taken port);
    /// later attempts get fresh ones.
    pub fn first_ports(mut self, http: u16, grpc: u16) -> Self {
        self.first_ports = Some((http, grpc));
        self
    }

    /// Only wait for the listeners, not for `/v1.0/healthz` to be 204.
    pub fn allow_unhealthy(mut self) -> Self {
        self.wait_healthy = false;
        self
    }

    /// Starts the binary and waits until it serves; starts it again on fresh ports when a port
    /// picked for it was taken before it bound it.
    pub async fn start(mut self) -> Sidecar {
        let res = self.dir.path().join("resources");
        std::fs::create_dir_all(&res).unwrap();
        for (name, text) in &self.files {
            std::fs::write(res.join(name), text).unwrap();
        }
        for attempt in 1..=START_ATTEMPTS {
            let (http, grpc) = self.first_ports.take().unwrap_or_else(|| {
                let [h, g] = rapr::net_ports::free_ports().expect("free ports");
                (h, g)
            });
            match self.try_start(&res, http, grpc).await {
                Ok(child) => {
                    let log = self.dir.path().join("sidecar.log");
                    return Sidecar { child: Some(child), http, grpc, log, _dir: self.dir, client: reqwest::Client::new() };
                }
                Err(logs) if attempt < START_ATTEMPTS && rapr::net_ports::is_addr_in_use(&logs) => {
                    eprintln!("sidecar {} could not bind port {http} or {grpc} (attempt {attempt}); retrying on fresh ports", self.app_id);
                }
                Err(logs) => panic!("sidecar exited early:\n{logs}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// One start on `http`/`grpc`: the child once it serves, `Err(logs)` if it exited first;
    /// panics if it is not ready in time.
    async fn try_start(&self, res: &Path, http: u16, grpc: u16) -> Result<Child, String> {
        let log = self.dir.path().join("sidecar.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rapr"));
        cmd.args(["sidecar", "--app-id", &self.app_id, "--dapr-http-port", &http.to_string(), "--dapr-grpc-port", &grpc.to_string()])
            .args(["--metrics-port", "0", "--dapr-listen-addresses", "127.0.0.1", "--resources-path"])
            .arg(res)
            .args(&self.args)
            .env("RAPR_LOG", "info")
            .env("RAPR_HOME", self.home.clone().unwrap_or_else(|| self.dir.path().join("home")))
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf));
        for k in &self.env_removed {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // Killed on drop until it is handed to the `Sidecar`.
        let mut child = KillOnDrop(Some(cmd.spawn().expect("start rapr")));
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{http}{}", if self.wait_healthy { "/v1.0/healthz" } else { "/v1.0/healthz/outbound" });
        let logs = || std::fs::read_to_string(&log).unwrap_or_default();
        let start = Instant::now();
        let mut last = String::from("no answer");
        loop {
            if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("exit {status}\n{}", logs()));
            }
            // Bounded: a port taken by a process that accepts and never answers must not hang.
            if let Ok(r) = client.get(&url).timeout(Duration::from_millis(500)).send().await {
                if r.status() == 204 {
                    // Invariant: the child is taken only here, once.
                    return Ok(child.0.take().unwrap());
                }
                last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
            }
            assert!(start.elapsed() < Duration::from_secs(20), "sidecar not ready in 20s (last answer: {last}):\n{}", logs());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A child process killed when dropped (a start that panics leaves nothing running).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running sidecar process.
pub struct Sidecar {
    child: Option<Child>,
    /// HTTP port.
    pub http: u16,
    /// gRPC port.
    pub grpc: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// HTTP client.
    pub client: reqwest::Client,
}

impl Sidecar {
    /// Full URL of an HTTP path.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// A gRPC client on the Dapr service.
    pub async fn grpc(&self) -> DaprClient<Channel> {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{}", self.grpc)).unwrap().connect().await.unwrap();
        DaprClient::new(ch)
    }

    /// The folder given as `--resources-path` (hot reload tests edit it).
    pub fn resources_dir(&self) -> PathBuf {
        self._dir.path().join("resources")
    }

    /// The sidecar's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < deadline, "sidecar did not exit within {deadline:?}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- sidecar log ({}) -----\n{}", self.log.display(), self.logs());
        }
    }
}
