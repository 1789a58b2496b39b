//! `rapr run` as `dapr run` of the Dapr CLI 1.18 runs apps: the app inherits the terminal (no
//! `== APP ==` prefix) in a process group of its own whose every process a stop reaches; the
//! CLI's closing lines and the app's own exit code; the CLI's environment; the sidecar alone;
//! the sidecar stopping by itself; run files parsed as the CLI does (appDirPath-relative paths,
//! the app's `.dapr/` folder over `common`, log files under `.dapr/logs`); `rapr list -o json|yaml`.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::Command;

use crate::harness::{eventually, free_port, memory_yaml};

fn rapr(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rapr"));
    // A private embedded control plane (it stops once the home folder is removed).
    c.env("RAPR_HOME", home).env("RAPR_PLACEMENT_PORT", free_port().to_string()).env("RAPR_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    c
}

async fn output_within(cmd: &mut Command, deadline: Duration) -> Output {
    let child = cmd.spawn().expect("start rapr");
    tokio::time::timeout(deadline, child.wait_with_output()).await.expect("rapr run did not finish").unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads a child's stdout and stderr as they come (a full pipe would block it); both texts
/// once it has exited.
fn drain(child: &mut tokio::process::Child) -> tokio::task::JoinHandle<(String, String)> {
    use tokio::io::AsyncReadExt as _;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    tokio::spawn(async move {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let _ = tokio::join!(out.read_to_end(&mut o), err.read_to_end(&mut e));
        (text(&o), text(&e))
    })
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

async fn list(home: &Path, format: &str) -> String {
    let out = output_within(rapr(home).args(["list", "-o", format]), Duration::from_secs(20)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[tokio::test]
async fn a_stop_ends_every_process_of_the_apps_group() {
    let home = tempfile::tempdir().unwrap();
    let pidfile = home.path().join("bg.pid");
    // The shell's background child is what `sh -c`, npm or `go run` leave behind.
    let script = format!("sleep 100 & echo $! > {}; wait", pidfile.display());
    let child = rapr(home.path()).args(["run", "--app-id", "grp", "--", "sh", "-c", &script]).spawn().unwrap();
    let bg: i32 = eventually(Duration::from_secs(30), "the app's background child", || async {
        std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok())
    })
    .await;
    assert!(alive(bg));
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("rapr run stops").unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stopped by us: 0; {stdout}{}", text(&out.stderr));
    eventually(Duration::from_secs(10), "the background child to be gone", || async { (!alive(bg)).then_some(()) }).await;
    for want in ["terminated signal received: shutting down", "✅  Exited Dapr successfully", "✅  Exited App successfully"] {
        assert!(stdout.contains(want), "{want:?} in {stdout}");
    }
}

#[tokio::test]
async fn the_apps_exit_code_and_the_clis_closing_lines() {
    let home = tempfile::tempdir().unwrap();
    let out = output_within(rapr(home.path()).args(["run", "--app-id", "fails", "--", "sh", "-c", "echo plain; exit 3"]), Duration::from_secs(60)).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "the app's own code: {stdout}{stderr}");
    assert!(stdout.lines().any(|l| l == "plain"), "the app's output unprefixed: {stdout}");
    assert!(!stdout.contains("== APP"), "{stdout}");
    assert!(stderr.contains("❌  The App process exited with error code: 3"), "{stderr}");
    assert!(stderr.contains("❌  Error exiting App: app exited with status 3"), "{stderr}");
    assert!(!stdout.contains("Exited App successfully"), "never after a failure: {stdout}");
    assert!(stdout.contains("✅  Exited Dapr successfully"), "{stdout}");
    assert!(stdout.contains("You're up and running! Both Dapr and your app logs will appear here."), "{stdout}");

    let out = output_within(rapr(home.path()).args(["run", "--app-id", "ok", "--", "true"]), Duration::from_secs(60)).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("✅  Exited App successfully") && stdout.contains("✅  Exited Dapr successfully"), "{stdout}");
}

#[tokio::test]
async fn the_app_gets_the_clis_environment_and_flags_reach_the_sidecar() {
    let home = tempfile::tempdir().unwrap();
    let (http, metrics, internal) = (free_port(), free_port(), free_port());
    let script = format!(
        "env | grep -E '^(APP_|DAPR_)' | sort; curl -s -o /dev/null -w 'metrics=%{{http_code}}\\n' http://127.0.0.1:{metrics}/metrics; \
         (exec 3<>/dev/tcp/127.0.0.1/{internal}) 2>/dev/null && echo internal=open || echo internal=closed"
    );
    let mut cmd = rapr(home.path());
    cmd.args(["run", "-a", "envs", "-H", &http.to_string(), "-M", &metrics.to_string(), "-I", &internal.to_string(), "--app-ssl", "--enable-api-logging"])
        .args(["--app-channel-address", "localhost", "--", "bash", "-c", &script]);
    let out = output_within(&mut cmd, Duration::from_secs(60)).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for want in [
        "APP_ID=envs".to_string(),
        "APP_CHANNEL_ADDRESS=localhost".into(),
        "APP_PROTOCOL=https".into(),
        format!("DAPR_HTTP_PORT={http}"),
        format!("DAPR_METRICS_PORT={metrics}"),
        "metrics=200".into(),
        "internal=open".into(),
    ] {
        assert!(stdout.lines().any(|l| l == want), "{want} in {stdout}");
    }
    assert!(stdout.lines().any(|l| l.starts_with("DAPR_GRPC_PORT=")), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("APP_PORT=")), "no app port, no APP_PORT: {stdout}");
}

#[tokio::test]
async fn the_sidecar_alone_runs_until_it_is_shut_down() {
    let home = tempfile::tempdir().unwrap();
    let res = home.path().join("res");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(res.join("mem.yaml"), memory_yaml("mem")).unwrap();
    let http = free_port();
    let child = rapr(home.path()).args(["run", "--app-id", "solo", "--dapr-http-port", &http.to_string(), "--resources-path"]).arg(&res).spawn().unwrap();
    let client = reqwest::Client::new();
    let meta: Value = eventually(Duration::from_secs(30), "the sidecar's metadata", || async {
        client.get(format!("http://127.0.0.1:{http}/v1.0/metadata")).send().await.ok()?.json().await.ok()
    })
    .await;
    assert_eq!(meta["id"], "solo");
    let listed: Vec<Value> = serde_json::from_str(&list(home.path(), "json").await).unwrap();
    let row = listed.iter().find(|r| r["appId"] == "solo").expect("listed");
    assert_eq!(row["appPid"], 0);
    assert_eq!(row["command"], "");
    assert_eq!(row["daprdPid"], row["cliPid"], "the sidecar lives in the rapr run process");
    assert_eq!(row["httpPort"], http);
    // The sidecar stopping by itself ends the run, as daprd exiting ends `dapr run`.
    let r = client.post(format!("http://127.0.0.1:{http}/v1.0/shutdown")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("rapr run ends with its sidecar").unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("WARNING: no application command found."), "{stdout}");
    assert!(stdout.contains("You're up and running! Dapr logs will appear here."), "{stdout}");
    assert!(stdout.contains("✅  Exited Dapr successfully"), "{stdout}");
    assert!(!stdout.contains("Exited App"), "no app: {stdout}");
}

fn component_names(meta: &Value) -> Vec<String> {
    meta["components"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(String::from)).collect()
}

#[tokio::test]
async fn a_run_file_as_the_cli_parses_it() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let r = root.path();
    for (dir, comp) in [("shared", "common-store"), ("own/.dapr/resources", "own-store"), ("apps/b/comp", "b-store")] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
        std::fs::write(r.join(dir).join("c.yaml"), memory_yaml(comp)).unwrap();
    }
    std::fs::create_dir_all(r.join("plain")).unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let app = "echo hello from $APP_ID; exec sleep 100";
    let cmd = format!("command: [\"sh\", \"-c\", \"{app}\"]");
    let yaml = [
        "version: 1\nname: shop\ncommon:\n  resourcesPath: ./shared\n  logLevel: warn\napps:".to_string(),
        format!("  - appDirPath: ./own\n    daprHTTPPort: {pa}\n    appLogDestination: file\n    {cmd}"),
        format!("  - appID: rf-b\n    appDirPath: ./apps/b\n    resourcesPaths: [./comp]\n    daprHTTPPort: {pb}\n    {cmd}"),
        format!("  - appDirPath: ./plain\n    daprHTTPPort: {pc}\n    logLevel: info\n    daprdLogDestination: console\n    surprise: yes\n    {cmd}\n"),
    ]
    .join("\n");
    std::fs::write(r.join("dapr.yaml"), yaml).unwrap();
    // No RAPR_LOG: the run's filter comes from the apps' logLevel (the most verbose, info).
    let mut child = rapr(&home).env_remove("RAPR_LOG").args(["run", "-f"]).arg(r.join("dapr.yaml")).spawn().unwrap();
    let output = drain(&mut child);
    let client = reqwest::Client::new();
    let meta = |port: u16| {
        let client = client.clone();
        async move {
            eventually(Duration::from_secs(40), "a sidecar's metadata", || async {
                client.get(format!("http://127.0.0.1:{port}/v1.0/metadata")).send().await.ok()?.json::<Value>().await.ok()
            })
            .await
        }
    };
    let (ma, mb, mc) = (meta(pa).await, meta(pb).await, meta(pc).await);
    assert_eq!(ma["id"], "own", "appID defaults to appDirPath's name");
    assert_eq!(component_names(&ma), ["own-store"], "the app's .dapr/resources wins over common");
    assert_eq!(component_names(&mb), ["b-store"], "resourcesPaths relative to appDirPath");
    assert_eq!(component_names(&mc), ["common-store"], "common's resourcesPath, relative to the run file");

    let listed: Vec<Value> = eventually(Duration::from_secs(30), "three apps listed", || async {
        let l: Vec<Value> = serde_json::from_str(&list(&home, "json").await).ok()?;
        (l.len() == 3).then_some(l)
    })
    .await;
    let own = listed.iter().find(|x| x["appId"] == "own").unwrap();
    assert_eq!(own["runTemplateName"], "shop");
    let app_log = own["appLogPath"].as_str().unwrap().to_string();
    let daprd_log = own["daprdLogPath"].as_str().unwrap().to_string();
    assert!(app_log.contains("/own/.dapr/logs/own_app_") && app_log.ends_with(".log"), "{app_log}");
    assert!(daprd_log.contains("/own/.dapr/logs/own_daprd_"), "{daprd_log}");
    let plain = listed.iter().find(|x| x["appId"] == "plain").unwrap();
    assert_eq!(plain["daprdLogPath"], "", "console only: no file");
    let yaml = list(&home, "yaml").await;
    assert!(yaml.contains("appId: own") && yaml.contains("runTemplatePath:"), "{yaml}");

    eventually(Duration::from_secs(20), "the app's line in its log file", || async {
        std::fs::read_to_string(&app_log).ok().filter(|t| t.contains("== APP - own == hello from own")).map(|_| ())
    })
    .await;
    // common's logLevel warn: own's sidecar writes no info lines (plain's, at info, does).
    let sidecar_lines = std::fs::read_to_string(&daprd_log).unwrap();
    assert!(!sidecar_lines.contains("level=info"), "common's logLevel, lines in the file:\n{sidecar_lines}");

    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait()).await.expect("the run stops").unwrap();
    let (stdout, stderr) = output.await.unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("== APP - rf-b == hello from rf-b"), "fileAndConsole: on the console too: {stdout}");
    assert!(!stdout.contains("== APP - own =="), "appLogDestination file: not on the console: {stdout}");
    assert!(stdout.contains("app plain: unknown key surprise is ignored"), "{stdout}");
    assert!(stderr.contains("app_id=plain") && !stderr.contains("app_id=own") && !stderr.contains("app_id=rf-b"), "only plain's sidecar logs to the console:\n{stderr}");
    assert!(stderr.lines().any(|l| l.contains("app_id=plain") && l.contains("level=info") && l.contains("API servers listening")), "plain's own logLevel info:\n{stderr}");
}

/// `-u` end to end: the app reaches its sidecar over the socket the CLI names
/// (`<dir>/dapr-<id>-http.socket`); `--log-as-json` turns the CLI's own status lines into its
/// `{"time","status","msg"}` objects; and with no `-c` the Configuration in rapr's home applies,
/// as the CLI falls back to `~/.dapr/config.yaml`.
#[tokio::test]
async fn a_unix_socket_run_with_json_status_lines_and_the_home_configuration() {
    let home = tempfile::tempdir().unwrap();
    // `rapr init`'s file, edited as a user edits ~/.dapr/config.yaml.
    std::fs::write(
        home.path().join("config.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprConfig\nspec:\n  features:\n  - name: HomeConfigFeature\n    enabled: true\n",
    )
    .unwrap();
    let socks = tempfile::tempdir().unwrap();
    let sock = socks.path().join("dapr-uds-http.socket");
    let script = format!("curl -s --unix-socket {} http://localhost/v1.0/metadata; echo", sock.display());
    let mut cmd = rapr(home.path());
    cmd.args(["run", "-a", "uds", "--log-as-json", "-u"]).arg(socks.path()).args(["--", "sh", "-c", &script]);
    let out = output_within(&mut cmd, Duration::from_secs(60)).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let meta: Value = stdout.lines().find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v["id"] == "uds")).unwrap_or_else(|| panic!("metadata over the socket in {stdout}"));
    let features: Vec<&str> = meta["enabledFeatures"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(features.contains(&"HomeConfigFeature"), "rapr home's config.yaml applied: {features:?}");
    assert!(!sock.exists(), "the socket file is removed at shutdown");
    let status: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v.get("status").is_some()).collect();
    let msgs: Vec<(&str, &str)> = status.iter().map(|v| (v["status"].as_str().unwrap(), v["msg"].as_str().unwrap())).collect();
    for want in [("warning", "Unix domain sockets are currently a preview feature"), ("success", "Exited App successfully"), ("success", "Exited Dapr successfully")] {
        assert!(msgs.contains(&want), "{want:?} as JSON in {stdout}");
    }
    for v in &status {
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "time, status, msg only: {v}");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    }
    assert!(!stdout.contains("✅"), "no text status line with --log-as-json: {stdout}");
}
