//! Several apps on one machine: two `rapr run`s calling each other by app id through the shared
//! `$RAPR_HOME/nameresolution.db`, `rapr run -f` with a multi-app run file, `rapr list` and
//! `rapr stop`. Apps are small Python HTTP file servers and shell scripts using curl.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::harness::{eventually, free_port};

/// Serves its folder on `$APP_PORT`; exits 0 on SIGTERM.
const SERVE_PY: &str = "import http.server, os, signal, sys\n\
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n\
srv = http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['APP_PORT'])), http.server.SimpleHTTPRequestHandler)\n\
print('serving ' + os.environ['APP_ID'], flush=True)\n\
srv.serve_forever()\n";

fn rapr(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rapr"));
    c.env("RAPR_HOME", home).env("RAPR_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    c
}

fn app_dir(root: &Path, name: &str, file: &str, content: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("serve.py"), SERVE_PY).unwrap();
    std::fs::write(dir.join(file), content).unwrap();
    dir
}

/// A running `rapr run` whose stdout is read line by line.
struct Run {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("start rapr run");
        let (tx, lines) = mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut r = BufReader::new(out).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        Self { child, lines, seen: vec![] }
    }

    async fn until_line(&mut self, want: &str) {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            if self.seen.iter().any(|l| l == want) {
                return;
            }
            while let Some(l) = self.lines.recv().await {
                let hit = l == want;
                self.seen.push(l);
                if hit {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok() && self.seen.iter().any(|l| l == want), "no line {want:?} in:\n{}", self.seen.join("\n"));
    }

    async fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await.expect("rapr run did not exit").unwrap();
        while let Some(l) = self.lines.recv().await {
            self.seen.push(l);
        }
        (status, self.seen)
    }
}

async fn list(home: &Path) -> Vec<Value> {
    let mut cmd = rapr(home);
    cmd.args(["list", "-o", "json"]);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().cloned().unwrap_or_default()
}

async fn listed(home: &Path, ids: &[&str]) -> Vec<Value> {
    eventually(Duration::from_secs(30), "the apps to show in rapr list", || async {
        let l = list(home).await;
        ids.iter().all(|id| l.iter().any(|r| r["appId"] == *id)).then_some(l)
    })
    .await
}

async fn stop(home: &Path, ids: &str) -> String {
    let mut cmd = rapr(home);
    cmd.args(["stop", "--app-id", ids]);
    let out = tokio::time::timeout(Duration::from_secs(40), cmd.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test]
async fn two_rapr_runs_call_each_other_by_app_id_and_stop() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let (pa, pb) = (free_port(), free_port());
    let dir_a = app_dir(root.path(), "alpha", "a.txt", "from alpha");
    let dir_b = app_dir(root.path(), "beta", "b.txt", "from beta");

    let mut cmd = rapr(&home);
    cmd.args(["run", "--app-id", "ma-alpha", "--app-port", &pa.to_string(), "--", "python3", "serve.py"]).current_dir(&dir_a);
    let mut alpha = Run::start(cmd);
    alpha.until_line("== APP == serving ma-alpha").await;
    // beta calls alpha through its own sidecar as soon as it starts, then serves.
    let script = "until curl -sf http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/ma-alpha/method/a.txt; do sleep 0.2; done; echo; exec python3 serve.py";
    let mut cmd = rapr(&home);
    cmd.args(["run", "--app-id", "ma-beta", "--app-port", &pb.to_string(), "--", "sh", "-c", script]).current_dir(&dir_b);
    let mut beta = Run::start(cmd);
    beta.until_line("== APP == from alpha").await;
    beta.until_line("== APP == serving ma-beta").await;

    let l = listed(&home, &["ma-alpha", "ma-beta"]).await;
    let a = l.iter().find(|r| r["appId"] == "ma-alpha").unwrap();
    assert_eq!(a["appPort"], pa);
    assert_eq!(a["command"], "python3 serve.py");
    assert!(a["age"].as_str().unwrap().ends_with('s'), "{a}");
    let a_http = a["httpPort"].as_u64().unwrap();
    // And the other way: alpha's sidecar finds beta.
    let r = reqwest::get(format!("http://127.0.0.1:{a_http}/v1.0/invoke/ma-beta/method/b.txt")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "from beta");

    let out = stop(&home, "ma-alpha,ma-beta").await;
    assert!(out.contains("app stopped successfully: ma-alpha") && out.contains("app stopped successfully: ma-beta"), "{out}");
    for run in [alpha, beta] {
        let (status, lines) = run.finish().await;
        assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
        assert!(lines.iter().any(|l| l == "Exited rapr successfully"), "{}", lines.join("\n"));
    }
    assert!(list(&home).await.is_empty());
    assert_eq!(std::fs::read_dir(home.join("run")).unwrap().count(), 0, "records removed on exit");
    // Stopping what is not running fails, naming the id.
    let mut cmd = rapr(&home);
    cmd.args(["stop", "--app-id", "ma-alpha"]);
    let out = cmd.output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("couldn't find app id ma-alpha"));
}

#[tokio::test]
async fn run_file_starts_every_app_with_prefixed_output() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let ps = free_port();
    app_dir(root.path(), "server", "s.txt", "from server");
    std::fs::create_dir_all(root.path().join("client")).unwrap();
    let client = "echo greeting=$GREETING id=$APP_ID dir=$(basename $PWD); \
                  until curl -sf http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/mf-server/method/s.txt; do sleep 0.2; done; echo; exit 3";
    let yaml = format!(
        "version: 1\ncommon:\n  env:\n    GREETING: hello\napps:\n  - appID: mf-server\n    appDirPath: ./server\n    appPort: {ps}\n    command: [\"python3\", \"serve.py\"]\n  - appID: mf-client\n    appDirPath: ./client\n    env:\n      GREETING: hi\n    command: [\"sh\", \"-c\", {}]\n",
        serde_json::to_string(client).unwrap()
    );
    std::fs::write(root.path().join("dapr.yaml"), yaml).unwrap();

    let mut cmd = rapr(&home);
    cmd.args(["run", "-f"]).arg(root.path());
    let mut run = Run::start(cmd);
    run.until_line("== APP - mf-server == serving mf-server").await;
    run.until_line("== APP - mf-client == greeting=hi id=mf-client dir=client").await;
    run.until_line("== APP - mf-client == from server").await;
    run.until_line("Exited App mf-client successfully").await;

    let l = listed(&home, &["mf-server"]).await;
    let s = l.iter().find(|r| r["appId"] == "mf-server").unwrap();
    assert!(s["runTemplatePath"].as_str().unwrap().ends_with("dapr.yaml"), "{s}");
    assert_eq!(s["appPort"], ps);
    eventually(Duration::from_secs(20), "the exited client to leave the list", || async {
        (!list(&home).await.iter().any(|r| r["appId"] == "mf-client")).then_some(())
    })
    .await;

    stop(&home, "mf-server").await;
    let (status, lines) = run.finish().await;
    assert_eq!(status.code(), Some(3), "the first non-zero exit code: {}", lines.join("\n"));
    assert!(lines.iter().any(|l| l == "Exited rapr successfully"), "{}", lines.join("\n"));
}
