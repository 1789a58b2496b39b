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
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PlacementNode {
    /// Starts a node with `args` added to its ports, and waits for its health endpoint.
    pub async fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let [grpc, healthz, metrics] = rapr::net_ports::free_ports().expect("free ports");
        let log = dir.path().join("placement.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rapr"))
            .args(["placement", "--port", &grpc.to_string(), "--healthz-port", &healthz.to_string(), "--metrics-port", &metrics.to_string()])
            .args(["--listen-address", "127.0.0.1", "--healthz-listen-address", "127.0.0.1", "--metadata-enabled"])
            .args(args)
            .env("RAPR_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("start rapr placement");
        let mut node = Self { child: Some(child), grpc, healthz, metrics, log, _dir: dir };
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("placement exited early ({status}):\n{}", node.logs());
            }
            // Healthy, and leading (a lone node elects itself at once).
            if let Ok(r) = client.get(node.url("/placement/state")).timeout(Duration::from_millis(500)).send().await {
                if r.status() == 200 {
                    return node;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "placement not healthy in 20s:\n{}", node.logs());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:<healthz><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.healthz)
    }

    /// The gRPC address sidecars dial.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
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
