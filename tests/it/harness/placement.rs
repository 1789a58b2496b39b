//! A placement node the test owns (`rapr placement` on free ports, killed on drop) and a
//! simulated sidecar that speaks daprd's side of `ReportDaprStatus`: it reports its host,
//! acknowledges every order as daprd does, and publishes the tables of each finished round.
//! The actor, scheduler and workflow tests reuse both.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rapr_proto::placement::v1::placement_client::PlacementClient;
use rapr_proto::placement::v1::{Host, HostOperation, PlacementOrder, PlacementTables};
use tokio::sync::{mpsc, watch};
use tonic::Status;

/// A running `rapr placement`.
pub struct PlacementNode {
    child: Option<Child>,
    pub grpc: u16,
    pub healthz: u16,
    pub metrics: u16,
    /// The address its listeners are on (127.0.0.1, or its network namespace's address).
    pub host: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PlacementNode {
    /// Starts a lone node with `args` added to its ports, and waits until it leads.
    pub async fn start(args: &[&str]) -> Self {
        let [grpc, healthz, metrics] = rapr::net_ports::free_ports().expect("free ports");
        let node = Self::spawn(grpc, healthz, metrics, tempfile::tempdir().unwrap(), args);
        node.wait_ready(true).await;
        node
    }

    /// Starts a node on these ports and data directory (a cluster member, or a restart),
    /// without waiting.
    pub fn spawn(grpc: u16, healthz: u16, metrics: u16, dir: tempfile::TempDir, args: &[&str]) -> Self {
        Self::spawn_in(None, "127.0.0.1", [grpc, healthz, metrics], dir, args, &[])
    }

    /// Starts a node inside network namespace `netns` (when given), listening on `host`.
    pub fn spawn_in(netns: Option<&str>, host: &str, [grpc, healthz, metrics]: [u16; 3], dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.path().join("placement.log");
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = match netns {
            // `ip netns exec` execs the binary after entering the namespace: the pid is rapr's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_rapr")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_rapr")),
        };
        let child = cmd
            .args(["placement", "--port", &grpc.to_string(), "--healthz-port", &healthz.to_string(), "--metrics-port", &metrics.to_string()])
            .args(["--listen-address", host, "--healthz-listen-address", host, "--metadata-enabled"])
            .arg("--raft-logstore-path")
            .arg(dir.path().join("data"))
            .args(args)
            .env("RAPR_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("start rapr placement");
        Self { child: Some(child), grpc, healthz, metrics, host: host.to_string(), log, _dir: dir }
    }

    /// Waits until the node is healthy and, with `leading`, leads.
    pub async fn wait_ready(&self, leading: bool) {
        let client = reqwest::Client::new();
        let start = Instant::now();
        let path = if leading { "/placement/state" } else { "/healthz" };
        loop {
            if let Ok(r) = client.get(self.url(path)).timeout(Duration::from_millis(500)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "placement not ready in 20s:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Whether it leads now (its metadata endpoint answers only on the leader).
    pub async fn leads(&self) -> bool {
        let r = reqwest::Client::new().get(self.url("/placement/state")).timeout(Duration::from_millis(500)).send().await;
        r.is_ok_and(|r| r.status() == 200)
    }

    /// Kills the process (SIGKILL) and takes back its data directory for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap())
    }

    /// `http://<host>:<healthz><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.healthz)
    }

    /// The gRPC address sidecars dial.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.grpc)
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/placement/state` as JSON.
    pub async fn state(&self) -> serde_json::Value {
        reqwest::get(self.url("/placement/state")).await.unwrap().json().await.unwrap()
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
    }
}

impl Drop for PlacementNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("--- placement log ---\n{}", self.logs());
            }
        }
    }
}

/// A report as daprd v1.18 sends it.
pub fn report(name: &str, app_id: &str, types: &[&str]) -> Host {
    Host {
        name: name.into(),
        id: app_id.into(),
        namespace: "default".into(),
        entities: types.iter().map(|t| t.to_string()).collect(),
        api_level: 20,
        operation: HostOperation::Report as i32,
        ..Default::default()
    }
}

/// A simulated daprd: one stream, acknowledging every order.
pub struct FakeSidecar {
    out: Option<mpsc::UnboundedSender<Host>>,
    /// The tables of the last round this sidecar saw through to its unlock (version, tables).
    pub tables: watch::Receiver<Option<(u64, PlacementTables)>>,
    /// How the stream ended, once it did.
    pub ended: watch::Receiver<Option<Status>>,
    task: tokio::task::JoinHandle<()>,
    host: Host,
}

impl FakeSidecar {
    /// Connects to `address` and reports `host`; `Err` when placement refuses the stream at once.
    pub async fn connect(address: &str, host: Host) -> Result<Self, Status> {
        let mut client = PlacementClient::connect(format!("http://{address}")).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let (out, rx) = mpsc::unbounded_channel::<Host>();
        out.send(host.clone()).unwrap();
        let inbound = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut orders = client.report_dapr_status(inbound).await?.into_inner();
        let (tables_tx, tables) = watch::channel(None);
        let (ended_tx, ended) = watch::channel(None);
        let acks = out.clone();
        let me = host.clone();
        let task = tokio::spawn(async move {
            let mut pending: Option<PlacementTables> = None;
            loop {
                match orders.message().await {
                    Ok(Some(PlacementOrder { tables, operation, version })) => {
                        let op = match operation.as_str() {
                            "lock" => HostOperation::Lock,
                            "update" => {
                                pending = tables;
                                HostOperation::Update
                            }
                            "unlock" => {
                                if let Some(t) = pending.take() {
                                    let _ = tables_tx.send(Some((version, t)));
                                }
                                HostOperation::Unlock
                            }
                            other => panic!("unknown placement operation {other:?}"),
                        };
                        let ack = Host { operation: op as i32, version: Some(version), id: me.id.clone(), namespace: me.namespace.clone(), ..Default::default() };
                        if acks.send(ack).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = ended_tx.send(Some(Status::ok("")));
                        return;
                    }
                    Err(s) => {
                        let _ = ended_tx.send(Some(s));
                        return;
                    }
                }
            }
        });
        Ok(Self { out: Some(out), tables, ended, task, host })
    }

    /// Sends another message (a new report, or something malformed).
    pub fn send(&self, host: Host) {
        let _ = self.out.as_ref().expect("open").send(host);
    }

    /// Waits until a finished round's tables satisfy `f`; returns them with their version.
    pub async fn wait_tables(&mut self, deadline: Duration, what: &str, f: impl Fn(&PlacementTables) -> bool) -> (u64, PlacementTables) {
        let r = tokio::time::timeout(deadline, self.tables.wait_for(|t| t.as_ref().is_some_and(|(_, t)| f(t)))).await.map(|r| r.map(|v| v.clone()));
        match r {
            Ok(Ok(v)) => v.unwrap(),
            _ => panic!("{}: timed out after {deadline:?} waiting for tables where {what}; last: {:?}", self.host.name, *self.tables.borrow()),
        }
    }

    /// Waits for the stream to end; its status.
    pub async fn wait_end(&mut self, deadline: Duration) -> Status {
        match tokio::time::timeout(deadline, self.ended.wait_for(Option::is_some)).await {
            Ok(Ok(s)) => s.clone().unwrap(),
            _ => panic!("{}: the stream did not end in {deadline:?}", self.host.name),
        }
    }

    /// Leaves: ends its side of the stream and stops answering.
    pub fn leave(mut self) {
        self.out.take();
        self.task.abort();
    }
}

/// The host names of `actor_type` in `tables`, sorted.
pub fn hosts_of(tables: &PlacementTables, actor_type: &str) -> Vec<String> {
    let mut v: Vec<String> = tables.entries.get(actor_type).map(|t| t.load_map.keys().cloned().collect()).unwrap_or_default();
    v.sort();
    v
}

/// A control plane of `n` placement nodes on one host (free ports; each its own data directory).
pub struct PlacementCluster {
    pub nodes: Vec<Option<PlacementNode>>,
    /// Per node: (id, gRPC, healthz, metrics) and the cluster's `--initial-cluster`.
    ports: Vec<(String, u16, u16, u16)>,
    initial: String,
    env: Vec<(String, String)>,
}

impl PlacementCluster {
    /// Starts `n` nodes and waits until one leads.
    pub async fn start(n: usize) -> Self {
        Self::start_with_env(n, &[]).await
    }

    /// As `start`, each node with `env` (a `FAILPOINTS` setting, say).
    pub async fn start_with_env(n: usize, env: &[(&str, &str)]) -> Self {
        let mut ports = Vec::new();
        let mut peers = Vec::new();
        for i in 0..n {
            let [grpc, healthz, metrics, raft] = rapr::net_ports::free_ports().expect("free ports");
            ports.push((format!("placement-{i}"), grpc, healthz, metrics));
            peers.push(format!("placement-{i}=127.0.0.1:{raft}"));
        }
        let initial = peers.join(",");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut c = Self { nodes: Vec::new(), ports, initial, env };
        for i in 0..n {
            let node = c.spawn(i, tempfile::tempdir().unwrap());
            c.nodes.push(Some(node));
        }
        for n in c.nodes.iter().flatten() {
            n.wait_ready(false).await;
        }
        c.leader(Duration::from_secs(20)).await;
        c
    }

    fn spawn(&self, i: usize, dir: tempfile::TempDir) -> PlacementNode {
        let (id, grpc, healthz, metrics) = &self.ports[i];
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        PlacementNode::spawn_in(None, "127.0.0.1", [*grpc, *healthz, *metrics], dir, &["--id", id, "--initial-cluster", &self.initial], &env)
    }

    /// The `--initial-cluster` every node was given.
    pub fn initial_cluster(&self) -> &str {
        &self.initial
    }

    /// Every node's gRPC address, comma separated (a sidecar's `--placement-host-address`).
    pub fn addresses(&self) -> String {
        self.ports.iter().map(|(_, g, _, _)| format!("127.0.0.1:{g}")).collect::<Vec<_>>().join(",")
    }

    /// The index of the node that leads, waiting up to `deadline` for one.
    pub async fn leader(&self, deadline: Duration) -> usize {
        let start = Instant::now();
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(n) = n {
                    if n.leads().await {
                        return i;
                    }
                }
            }
            assert!(start.elapsed() < deadline, "no placement leader in {deadline:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills node `i` (SIGKILL); its data directory is kept for `restart`.
    pub fn kill(&mut self, i: usize) -> tempfile::TempDir {
        self.nodes[i].take().expect("running").kill()
    }

    /// Starts node `i` again on its ports and data directory.
    pub async fn restart(&mut self, i: usize, dir: tempfile::TempDir) {
        let node = self.spawn(i, dir);
        node.wait_ready(false).await;
        self.nodes[i] = Some(node);
    }
}

/// A state component marked `actorStateStore`, so a sidecar hosts its app's actor types.
pub const ACTOR_STORE_YAML: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: actorstore\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - name: actorStateStore\n    value: \"true\"\n";

/// An app whose `/dapr/config` declares `types`; its port.
pub async fn actor_app(types: &'static [&'static str]) -> u16 {
    use axum::routing::get;
    let app = axum::Router::new().route("/dapr/config", get(move || async move { axum::Json(serde_json::json!({ "entities": types, "actorIdleTimeout": "1h" })) }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}
