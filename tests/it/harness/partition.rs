//! A placement cluster whose nodes each run in their own network namespace, joined by a bridge
//! in the test's namespace, so a test can cut one node off from the others (its bridge port
//! detached: both ends of its link stay up, packets just go nowhere) and heal it again. The
//! namespaces, links and addresses are the test's own (a random tag and subnet) and are removed
//! on drop; the shared services and the test machine's own links are never touched.

use std::process::Command;
use std::time::{Duration, Instant};

use super::placement::PlacementNode;

/// Ports inside each namespace (each has its own port space).
const GRPC: u16 = 50005;
const HEALTHZ: u16 = 8080;
const METRICS: u16 = 9090;
const RAFT: u16 = 30000;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// N placement nodes, one per namespace.
pub struct NetCluster {
    bridge: String,
    /// Each node's namespace.
    pub namespaces: Vec<String>,
    /// Each node's bridge-side link.
    ports: Vec<String>,
    /// Each node's address.
    pub hosts: Vec<String>,
    pub nodes: Vec<PlacementNode>,
}

impl NetCluster {
    /// Creates the bridge and namespaces, starts `n` nodes and waits until one leads.
    pub async fn start(n: usize) -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let subnet = 100 + u8::from_str_radix(&tag[..2], 16).unwrap() % 100;
        let bridge = format!("rb{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut c = Self { bridge: bridge.clone(), namespaces: Vec::new(), ports: Vec::new(), hosts: Vec::new(), nodes: Vec::new() };
        ip(&["addr", "add", &format!("10.214.{subnet}.254/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..n {
            let (ns, outer, inner) = (format!("rapr-{tag}-{i}"), format!("rb{tag}p{i}"), format!("rb{tag}n{i}"));
            ip(&["netns", "add", &ns]);
            c.namespaces.push(ns.clone());
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            c.ports.push(outer.clone());
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "master", &bridge]);
            ip(&["link", "set", &outer, "up"]);
            let host = format!("10.214.{subnet}.{}", i + 1);
            ip(&["-n", &ns, "addr", "add", &format!("{host}/24"), "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            c.hosts.push(host);
        }
        let initial = c.hosts.iter().enumerate().map(|(i, h)| format!("placement-{i}={h}:{RAFT}")).collect::<Vec<_>>().join(",");
        for i in 0..n {
            let id = format!("placement-{i}");
            let args = ["--id", id.as_str(), "--initial-cluster", initial.as_str()];
            let node = PlacementNode::spawn_in(Some(&c.namespaces[i]), &c.hosts[i], [GRPC, HEALTHZ, METRICS], tempfile::tempdir().unwrap(), &args, &[]);
            c.nodes.push(node);
        }
        for node in &c.nodes {
            node.wait_ready(false).await;
        }
        c.leader(Duration::from_secs(20), None).await;
        c
    }

    /// The node that leads (seen from the test's namespace, so a cut-off node never counts),
    /// other than `not`, waiting up to `deadline`.
    pub async fn leader(&self, deadline: Duration, not: Option<usize>) -> usize {
        let start = Instant::now();
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if Some(i) != not && n.leads().await {
                    return i;
                }
            }
            assert!(start.elapsed() < deadline, "no placement leader in {deadline:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cuts node `i` off from the others and from the test.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.ports[i], "nomaster"]);
    }

    /// Joins node `i` to the others again.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.ports[i], "master", &self.bridge]);
    }

    /// The status of `GET path` on node `i`'s healthz server, asked from inside its own namespace
    /// (so it answers while cut off); 0 when nothing answered.
    pub fn status_inside(&self, i: usize, path: &str) -> u16 {
        let url = self.nodes[i].url(path);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[i], "curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}", &url])
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// Runs `f` on a thread inside node `i`'s namespace, with its own runtime (a sidecar of that
    /// host: it reaches the node while the node is cut off).
    pub fn inside<T: Send + 'static>(&self, i: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.namespaces[i]);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // Only this thread moves into the namespace.
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the namespace");
            f()
        })
        .join()
        .expect("the thread in the namespace")
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        // Nodes first (their sockets live in the namespaces), then the namespaces (deleting one
        // removes its veth pair), then the bridge.
        self.nodes.clear();
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        let _ = Command::new("ip").args(["link", "delete", &self.bridge]).status();
    }
}
