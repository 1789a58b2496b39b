//! Two hosts on one machine: sidecars in two network namespaces joined by a veth pair, each
//! advertising its veth address (`DAPR_HOST_IP`) in the shared name-resolution file, invoking
//! across them. The namespaces, addresses and apps are this test's own and removed afterwards.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Namespaces {
    a: String,
    b: String,
    children: Vec<Child>,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run ip");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Namespaces {
    fn new() -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let (a, b) = (format!("rapr-{tag}-a"), format!("rapr-{tag}-b"));
        let (va, vb) = (format!("rv{tag}a"), format!("rv{tag}b"));
        sh(&["ip", "netns", "add", &a]);
        sh(&["ip", "netns", "add", &b]);
        sh(&["ip", "link", "add", &va, "type", "veth", "peer", "name", &vb]);
        sh(&["ip", "link", "set", &va, "netns", &a]);
        sh(&["ip", "link", "set", &vb, "netns", &b]);
        for (ns, dev, addr) in [(&a, &va, "10.213.7.1/24"), (&b, &vb, "10.213.7.2/24")] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        Self { a, b, children: Vec::new() }
    }

    fn spawn(&mut self, ns: &str, cmd: &[&str], env: &[(&str, &str)], log: &std::path::Path) {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn curl(&self, ns: &str, url: &str) -> Option<String> {
        let out = Command::new("ip").args(["netns", "exec", ns, "curl", "-s", "-m", "5", "-w", "\n%{http_code}", url]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace removes its end of the veth pair, and so the pair.
        let _ = Command::new("ip").args(["netns", "delete", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "delete", &self.b]).status();
    }
}

const APP: &str = "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        body = ('host-b saw ' + self.path + ' from ' + self.headers.get('dapr-caller-app-id', '?')).encode()\n        self.send_response(200)\n        self.send_header('content-length', str(len(body)))\n        self.end_headers()\n        self.wfile.write(body)\n    def log_message(self, *a):\n        pass\nhttp.server.HTTPServer(('127.0.0.1', 8080), H).serve_forever()\n";

#[test]
fn sidecars_in_two_network_namespaces_invoke_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let bin = env!("CARGO_BIN_EXE_rapr");
    let mut ns = Namespaces::new();
    let (a, b) = (ns.a.clone(), ns.b.clone());
    let home_s = home.display().to_string();
    ns.spawn(&b, &["python3", "-c", APP], &[], &dir.path().join("app.log"));
    let sidecar = |app: &str, app_port: &str| -> Vec<String> {
        let mut v: Vec<String> = [bin, "sidecar", "--app-id", app, "--dapr-http-port", "3500", "--dapr-grpc-port", "50001", "--dapr-internal-grpc-port", "50002", "--metrics-port", "0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !app_port.is_empty() {
            v.extend(["--app-port".to_string(), app_port.to_string()]);
        }
        v
    };
    let cmd_b = sidecar("host-b", "8080");
    let cmd_a = sidecar("host-a", "");
    ns.spawn(&b, &cmd_b.iter().map(String::as_str).collect::<Vec<_>>(), &[("DAPR_HOST_IP", "10.213.7.2"), ("RAPR_HOME", &home_s)], &dir.path().join("b.log"));
    ns.spawn(&a, &cmd_a.iter().map(String::as_str).collect::<Vec<_>>(), &[("DAPR_HOST_IP", "10.213.7.1"), ("RAPR_HOME", &home_s)], &dir.path().join("a.log"));
    let logs = || ["a.log", "b.log", "app.log"].iter().map(|f| format!("--- {f}\n{}", std::fs::read_to_string(dir.path().join(f)).unwrap_or_default())).collect::<String>();
    let start = Instant::now();
    let answer = loop {
        if let Some(out) = ns.curl(&a, "http://127.0.0.1:3500/v1.0/invoke/host-b/method/hello") {
            if out.ends_with("\n200") {
                break out;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no answer across namespaces:\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(answer, "host-b saw /hello from host-a\n200");
    // host-a registered its veth address, not loopback: host-b reaches it too.
    let db = rusqlite::Connection::open(home.join("nameresolution.db")).unwrap();
    let addr: String = db.query_row("SELECT address FROM hosts WHERE app_id = 'host-a'", [], |r| r.get(0)).unwrap();
    assert_eq!(addr, "10.213.7.1:50002");
    let out = ns.curl(&b, "http://127.0.0.1:3500/v1.0/invoke/host-a/method/x").unwrap();
    assert!(out.contains("app channel not initialized"), "host-b reached host-a's sidecar across the veth: {out}");
}
