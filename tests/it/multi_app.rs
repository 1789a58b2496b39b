//! Several apps on one machine: two `rapr run`s calling each other by app id through the shared
//! `$RAPR_HOME/nameresolution.db`, `rapr run -f` with a multi-app run file, `rapr list` and
//! `rapr stop` (of one app of a run file, or of the whole file), and sidecar log lines that name
//! their app. Apps are small Python HTTP file servers and shell scripts using curl.

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
    // A private embedded control plane (it stops once the home folder is removed).
    c.env("RAPR_HOME", home).env("RAPR_PLACEMENT_PORT", free_port().to_string()).env("RAPR_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    c
}

fn app_dir(root: &Path, name: &str, file: &str, content: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("serve.py"), SERVE_PY).unwrap();
    std::fs::write(dir.join(file), content).unwrap();
    dir
}

/// A running `rapr run` whose stdout and stderr (the sidecars' logs) are read line by line.
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
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(out).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        // Read even when unused: a full stderr pipe would block the run.
        tokio::spawn(async move {
            let mut r = BufReader::new(err).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx2.send(l);
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
    stop_with(home, &["--app-id", ids]).await
}

async fn stop_with(home: &Path, args: &[&str]) -> String {
    let mut cmd = rapr(home);
    cmd.arg("stop").args(args);
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
    alpha.until_line("serving ma-alpha").await;
    // beta calls alpha through its own sidecar as soon as it starts, then serves.
    let script = "until curl -sf http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/ma-alpha/method/a.txt; do sleep 0.2; done; echo; exec python3 serve.py";
    let mut cmd = rapr(&home);
    cmd.args(["run", "--app-id", "ma-beta", "--app-port", &pb.to_string(), "--", "sh", "-c", script]).current_dir(&dir_b);
    let mut beta = Run::start(cmd);
    beta.until_line("from alpha").await;
    beta.until_line("serving ma-beta").await;

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
        assert!(lines.iter().any(|l| l == "✅  Exited Dapr successfully"), "{}", lines.join("\n"));
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
    run.until_line("❌  The App process of mf-client exited with error code: 3").await;

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
    assert!(lines.iter().any(|l| l == "✅  Exited Dapr mf-server successfully"), "{}", lines.join("\n"));
}

/// A run file of two file servers, `<prefix>-a` serving `a.txt` and `<prefix>-b` serving `b.txt`,
/// their sidecars logging to the console (the CLI's default is a file).
fn two_servers(root: &Path, prefix: &str) {
    app_dir(root, "a", "a.txt", "from a");
    app_dir(root, "b", "b.txt", "from b");
    let (pa, pb) = (free_port(), free_port());
    let yaml = format!(
        "version: 1\ncommon:\n  daprdLogDestination: console\napps:\n  - appID: {prefix}-a\n    appDirPath: ./a\n    appPort: {pa}\n    command: [\"python3\", \"serve.py\"]\n  - appID: {prefix}-b\n    appDirPath: ./b\n    appPort: {pb}\n    command: [\"python3\", \"serve.py\"]\n"
    );
    std::fs::write(root.join("dapr.yaml"), yaml).unwrap();
}

#[tokio::test]
async fn run_file_stop_app_id_stops_one_app_and_stop_run_file_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    two_servers(root.path(), "ms");
    let mut cmd = rapr(&home);
    cmd.args(["run", "-f"]).arg(root.path());
    let mut run = Run::start(cmd);
    run.until_line("== APP - ms-a == serving ms-a").await;
    run.until_line("== APP - ms-b == serving ms-b").await;
    let l = listed(&home, &["ms-a", "ms-b"]).await;
    let port = |id: &str| l.iter().find(|r| r["appId"] == id).unwrap()["httpPort"].as_u64().unwrap();
    let (a_http, b_http) = (port("ms-a"), port("ms-b"));

    let out = stop(&home, "ms-a").await;
    assert!(out.contains("app stopped successfully: ms-a"), "{out}");
    run.until_line("✅  Exited App ms-a successfully").await;
    // `rapr stop` returns once the record is gone: the list already shows only the other app.
    let ids: Vec<Value> = list(&home).await.iter().map(|r| r["appId"].clone()).collect();
    assert_eq!(ids, vec![Value::from("ms-b")]);
    // ms-a's sidecar is down; ms-b and its sidecar still serve.
    assert!(reqwest::get(format!("http://127.0.0.1:{a_http}/v1.0/healthz")).await.is_err(), "ms-a's sidecar still answers");
    let r = reqwest::get(format!("http://127.0.0.1:{b_http}/v1.0/invoke/ms-b/method/b.txt")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "from b");
    assert!(!run.seen.iter().any(|l| l.contains("Exited App ms-b") || l.contains("Exited Dapr ms-b")), "{}", run.seen.join("\n"));

    // The folder names its dapr.yaml, as for `rapr run -f`.
    let out = stop_with(&home, &["-f", root.path().to_str().unwrap()]).await;
    assert!(out.contains("app stopped successfully: ms-b"), "{out}");
    let (status, lines) = run.finish().await;
    assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l == "✅  Exited App ms-b successfully"), "{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l == "✅  Exited Dapr ms-b successfully"), "{}", lines.join("\n"));
    assert!(list(&home).await.is_empty());
    assert_eq!(std::fs::read_dir(home.join("run")).unwrap().count(), 0, "records and the control socket removed on exit");
    // Nothing left to stop from that file.
    let mut cmd = rapr(&home);
    cmd.args(["stop", "--run-file"]).arg(root.path().join("dapr.yaml"));
    let out = cmd.output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("couldn't find apps with run file"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a two-app run file (`extra` flags) through a call from one app to the other and a stop;
/// every line it printed.
async fn run_file_lines(extra: &[&str]) -> Vec<String> {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    two_servers(root.path(), "ml");
    let mut cmd = rapr(&home);
    cmd.env("RAPR_LOG", "info").args(["run", "-f"]).arg(root.path()).args(extra);
    let mut run = Run::start(cmd);
    run.until_line("== APP - ml-a == serving ml-a").await;
    run.until_line("== APP - ml-b == serving ml-b").await;
    // A call through ml-a's sidecar to ml-b's: request handling on both.
    let l = listed(&home, &["ml-a", "ml-b"]).await;
    let a_http = l.iter().find(|r| r["appId"] == "ml-a").unwrap()["httpPort"].as_u64().unwrap();
    let r = reqwest::get(format!("http://127.0.0.1:{a_http}/v1.0/invoke/ml-b/method/b.txt")).await.unwrap();
    assert_eq!(r.text().await.unwrap(), "from b");
    stop_with(&home, &["--run-file", root.path().join("dapr.yaml").to_str().unwrap()]).await;
    let (status, lines) = run.finish().await;
    assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
    lines
}

/// Lines from the start (the root's setup), from processes (the gateway), and from the drain,
/// for each app, found by `has(line, app id, words)`.
fn assert_each_app_logged(lines: &[String], has: impl Fn(&str, &str, &str) -> bool) {
    for id in ["ml-a", "ml-b"] {
        for what in ["API servers listening", "registered with name resolution", "draining the APIs"] {
            assert!(lines.iter().any(|l| has(l, id, what)), "no {what:?} line for {id}:\n{}", lines.join("\n"));
        }
    }
}

#[tokio::test]
async fn run_file_sidecar_log_lines_name_their_app() {
    let lines = run_file_lines(&[]).await;
    // Text lines, daprd's layout: `time="…" level=info msg="…" app_id=ml-a scope=dapr.runtime …`.
    let logs: Vec<&String> = lines.iter().filter(|l| l.starts_with("time=\"")).collect();
    let unnamed: Vec<&&String> = logs.iter().filter(|l| !l.contains(" app_id=ml-a ") && !l.contains(" app_id=ml-b ")).collect();
    assert!(unnamed.is_empty(), "log lines without their app:\n{}", unnamed.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n"));
    assert!(!logs.iter().any(|l| l.contains("Actor{") || l.contains("sidecar{")), "no span paths at info:\n{}", lines.join("\n"));
    assert_each_app_logged(&lines, |l, id, what| l.starts_with("time=\"") && l.contains(&format!(" app_id={id} ")) && l.contains(what));
}

#[tokio::test]
async fn run_file_json_log_lines_carry_their_app_id_at_the_top() {
    let lines = run_file_lines(&["--log-as-json"]).await;
    let json: Vec<Value> = lines.iter().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    // The CLI's own status lines are its `{"time","status","msg"}` objects (no app); the rest
    // are the sidecars' log lines.
    let (status, logs): (Vec<Value>, Vec<Value>) = json.into_iter().partition(|v| v.get("status").is_some());
    assert!(status.iter().any(|v| v["msg"].as_str().is_some_and(|m| m.contains("starting app \"ml-a\""))), "{status:?}");
    assert!(!logs.is_empty(), "{}", lines.join("\n"));
    for l in &logs {
        assert!(l["app_id"] == "ml-a" || l["app_id"] == "ml-b", "a line without its app: {l}");
        assert!(l["scope"].as_str().is_some_and(|s| !s.is_empty()) && l["type"] == "log" && l["msg"].is_string(), "{l}");
    }
    assert_each_app_logged(&lines, |l, id, what| serde_json::from_str::<Value>(l).is_ok_and(|v| v["app_id"] == id && v["msg"].as_str().is_some_and(|m| m.contains(what))));
}
