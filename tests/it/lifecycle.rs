//! The sidecar's life: `DAPR_API_TOKEN` on both transports, shutdown through the API and by
//! SIGTERM with a graceful drain that loses no acknowledged write, command-line parsing (unknown
//! flags, Go-style single-dash flags), a taken port, and the `rapr run` / `rapr init` front door.
//!
//! Processes the harness does not start are run through `tokio::process` with `kill_on_drop`
//! and a deadline, so a test that fails never leaves a sidecar behind.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rapr_proto::runtime::v1 as pb;
use serde_json::{json, Value};
use tokio::process::Command;
use tonic::Code;

use crate::harness::{eventually, free_port, sqlite_yaml, SidecarBuilder};

fn rapr() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rapr"));
    // `rapr run`'s embedded control plane on a private port (under the test's RAPR_HOME, so it
    // stops once that folder is removed).
    c.env("RAPR_PLACEMENT_PORT", free_port().to_string());
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    c
}

/// Runs `cmd` to completion, or panics (killing it) after `deadline`.
async fn output_within(mut cmd: Command, deadline: Duration) -> Output {
    let child = cmd.spawn().expect("start rapr");
    match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("{cmd:?} did not finish within {deadline:?}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn wait_healthy(client: &reqwest::Client, port: u16) {
    let url = format!("http://127.0.0.1:{port}/v1.0/healthz");
    eventually(Duration::from_secs(20), "the sidecar to be healthy", || async {
        client.get(&url).send().await.ok().filter(|r| r.status() == 204).map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn api_token_guards_http_except_health() {
    let sc = SidecarBuilder::new("app").memory("mem").env("DAPR_API_TOKEN", "secret").start().await;
    let save = json!([{"key": "k", "value": "v"}]);

    for (what, req) in [
        ("metadata without token", sc.client.get(sc.url("/v1.0/metadata"))),
        ("save without token", sc.client.post(sc.url("/v1.0/state/mem")).json(&save)),
        ("metadata with a wrong token", sc.client.get(sc.url("/v1.0/metadata")).header("dapr-api-token", "wrong")),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(r.text().await.unwrap().trim_end(), "invalid api token", "{what}");
    }

    for path in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
        let r = sc.client.get(sc.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 204, "{path} is exempt");
    }

    let r = sc.client.get(sc.url("/v1.0/metadata")).header("dapr-api-token", "secret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], "app");
    let r = sc.client.post(sc.url("/v1.0/state/mem")).header("dapr-api-token", "secret").json(&save).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = sc.client.get(sc.url("/v1.0/state/mem/k")).header("dapr-api-token", "secret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!("v"));
}

#[tokio::test]
async fn api_token_guards_grpc() {
    let sc = SidecarBuilder::new("app").memory("mem").env("DAPR_API_TOKEN", "secret").start().await;
    let mut c = sc.grpc().await;

    let e = c.get_metadata(pb::GetMetadataRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let mut wrong = tonic::Request::new(pb::GetMetadataRequest {});
    wrong.metadata_mut().insert("dapr-api-token", "wrong".parse().unwrap());
    let e = c.get_metadata(wrong).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c.get_state(pb::GetStateRequest { store_name: "mem".into(), key: "k".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let mut ok = tonic::Request::new(pb::GetMetadataRequest {});
    ok.metadata_mut().insert("dapr-api-token", "secret".parse().unwrap());
    assert_eq!(c.get_metadata(ok).await.unwrap().into_inner().id, "app");
    let mut save = tonic::Request::new(pb::SaveStateRequest {
        store_name: "mem".into(),
        states: vec![rapr_proto::common::v1::StateItem { key: "k".into(), value: b"v".to_vec(), ..Default::default() }],
    });
    save.metadata_mut().insert("dapr-api-token", "secret".parse().unwrap());
    c.save_state(save).await.unwrap();
}

#[tokio::test]
async fn http_shutdown_answers_204_and_exits_zero() {
    let mut sc = SidecarBuilder::new("app").memory("mem").start().await;
    let r = sc.client.post(sc.url("/v1.0/shutdown")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let status = sc.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn sigterm_exits_cleanly() {
    let mut sc = SidecarBuilder::new("app").sqlite("statestore").start().await;
    kill(Pid::from_raw(i32::try_from(sc.pid()).unwrap()), Signal::SIGTERM).unwrap();
    let status = sc.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(sc.logs().contains("signal received"), "{}", sc.logs());
}

/// 50 writers save distinct keys in a loop; once they are all flowing, the sidecar is shut down
/// mid-load. Every save that was acknowledged (204) must be in the database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_drain_loses_no_acknowledged_write() {
    const WRITERS: usize = 50;
    let data = tempfile::tempdir().unwrap();
    let yaml = sqlite_yaml("statestore", data.path());
    let mut sc = SidecarBuilder::new("app").file("statestore.yaml", &yaml).start().await;

    let acks = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            // One client per writer: separate connections, as separate app instances would have.
            let client = reqwest::Client::new();
            let url = sc.url("/v1.0/state/statestore");
            let acks = Arc::clone(&acks);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..100_000 {
                    let key = format!("w{w}-{i}");
                    let body = json!([{"key": key, "value": format!("v-{key}")}]);
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 204 => {
                            acked.push(key);
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                        // Refused, reset or not acknowledged: the shutdown has landed.
                        _ => return (acked, true),
                    }
                }
                (acked, false)
            })
        })
        .collect();
    eventually(Duration::from_secs(20), "every writer to be acknowledged once", || async {
        (acks.load(Ordering::SeqCst) >= WRITERS * 2).then_some(())
    })
    .await;

    let r = sc.client.post(sc.url("/v1.0/shutdown")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let at_shutdown = acks.load(Ordering::SeqCst);

    let mut acked = Vec::new();
    let mut interrupted = 0;
    for w in writers {
        let (keys, cut) = tokio::time::timeout(Duration::from_secs(60), w).await.expect("writer stuck").unwrap();
        acked.extend(keys);
        interrupted += usize::from(cut);
    }
    let status = sc.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(interrupted, WRITERS, "the shutdown cut every writer mid-load");
    assert!(acked.len() >= at_shutdown, "{} acked, {at_shutdown} before the shutdown", acked.len());
    println!("{} writes acknowledged, {at_shutdown} of them before the shutdown", acked.len());
    drop(sc);

    let sc = SidecarBuilder::new("app").file("statestore.yaml", &yaml).start().await;
    let r = sc.client.post(sc.url("/v1.0/state/statestore/bulk")).json(&json!({"keys": acked})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let items: Vec<Value> = r.json().await.unwrap();
    assert_eq!(items.len(), acked.len());
    let lost: Vec<&str> = items
        .iter()
        .filter(|i| i["data"] != json!(format!("v-{}", i["key"].as_str().unwrap())))
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert!(lost.is_empty(), "{} of {} acknowledged writes lost, e.g. {:?}", lost.len(), acked.len(), &lost[..lost.len().min(10)]);
}

#[tokio::test]
async fn unknown_flag_is_rejected_naming_it() {
    let mut cmd = rapr();
    cmd.args(["sidecar", "--no-such-flag"]);
    let out = output_within(cmd, Duration::from_secs(20)).await;
    assert!(!out.status.success(), "{:?}", out.status);
    assert!(text(&out.stderr).contains("--no-such-flag"), "stderr: {}", text(&out.stderr));
}

#[tokio::test]
async fn go_style_single_dash_flags_work() {
    let res = tempfile::tempdir().unwrap();
    std::fs::write(res.path().join("mem.yaml"), crate::harness::memory_yaml("mem")).unwrap();
    let (http, grpc) = (free_port(), free_port());
    let mut cmd = rapr();
    cmd.args(["sidecar", "-app-id", "goapp", "-dapr-http-port", &http.to_string(), "-dapr-grpc-port", &grpc.to_string()])
        .args(["-metrics-port", "0", "-dapr-listen-addresses", "127.0.0.1", "-log-level", "info", "-resources-path"])
        .arg(res.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let client = reqwest::Client::new();
    wait_healthy(&client, http).await;
    let m: Value = client.get(format!("http://127.0.0.1:{http}/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["id"], "goapp");
    assert_eq!(m["components"][0]["name"], "mem");
    kill(Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("exit after SIGTERM").unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn second_sidecar_on_a_taken_port_exits_naming_the_port() {
    let sc = SidecarBuilder::new("first").memory("mem").start().await;
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = rapr();
    cmd.args(["sidecar", "--app-id", "second", "--dapr-http-port", &sc.http.to_string(), "--dapr-grpc-port", &free_port().to_string()])
        .args(["--metrics-port", "0", "--dapr-listen-addresses", "127.0.0.1", "--resources-path"])
        .arg(empty.path());
    let out = output_within(cmd, Duration::from_secs(20)).await;
    assert!(!out.status.success(), "{:?}", out.status);
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!(":{}", sc.http)), "the port is named: {stderr}");
    // The first sidecar is untouched.
    let r = sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

fn curl_script(tail: &str) -> String {
    let base = "http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/state/statestore";
    format!(
        "echo hi; echo \"port=$DAPR_HTTP_PORT\"; \
         code=$(curl -s -o /dev/null -w '%{{http_code}}' -X POST -H 'content-type: application/json' -d '[{{\"key\":\"k\",\"value\":\"from-app\"}}]' {base}); \
         echo \"save=$code\"; echo \"got=$(curl -s {base}/k)\"; {tail}"
    )
}

/// The app writes to the terminal itself (as with CLI 1.17+): its lines come unprefixed.
fn assert_app_saw_the_sidecar(stdout: &str, http: Option<u16>) {
    assert!(stdout.lines().any(|l| l == "hi"), "{stdout}");
    let port_line = stdout.lines().find(|l| l.starts_with("port=")).unwrap_or_else(|| panic!("{stdout}"));
    let port: u16 = port_line.trim_start_matches("port=").parse().unwrap_or_else(|_| panic!("{port_line}"));
    if let Some(h) = http {
        assert_eq!(port, h);
    }
    assert!(stdout.lines().any(|l| l == "save=204"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "got=\"from-app\""), "{stdout}");
    assert!(stdout.contains("You're up and running!"), "{stdout}");
}

#[tokio::test]
async fn rapr_run_starts_the_app_with_its_sidecar_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(res.join("statestore.yaml"), sqlite_yaml("statestore", dir.path())).unwrap();
    let (http, grpc) = (free_port(), free_port());
    let mut cmd = rapr();
    cmd.args(["run", "--app-id", "t", "--dapr-http-port", &http.to_string(), "--dapr-grpc-port", &grpc.to_string(), "--resources-path"])
        .arg(&res)
        .args(["--", "sh", "-c", &curl_script("exit 3")])
        .env("RAPR_HOME", dir.path().join("home"));
    let out = output_within(cmd, Duration::from_secs(60)).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert_app_saw_the_sidecar(&stdout, Some(http));
    assert!(!dir.path().join("home").join("components").exists(), "--resources-path given: no defaults written");
}

fn assert_default_statestore(home: &Path) {
    let yaml = std::fs::read_to_string(home.join("components").join("statestore.yaml")).expect("components/statestore.yaml written");
    assert!(yaml.contains("kind: Component"), "{yaml}");
    assert!(yaml.contains("name: statestore"), "{yaml}");
    assert!(yaml.contains("type: state.sqlite"), "{yaml}");
    assert!(yaml.contains(&home.display().to_string()), "the database lives under RAPR_HOME: {yaml}");
}

#[tokio::test]
async fn rapr_run_without_resources_path_writes_and_uses_the_defaults() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = rapr();
    cmd.args(["run", "--app-id", "defaults", "--", "sh", "-c", &curl_script("exit 0")]).env("RAPR_HOME", home.path());
    let out = output_within(cmd, Duration::from_secs(60)).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert_default_statestore(home.path());
    assert_app_saw_the_sidecar(&stdout, None);
}

#[tokio::test]
async fn rapr_init_writes_the_default_components() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = rapr();
    cmd.arg("init").env("RAPR_HOME", home.path());
    let out = output_within(cmd, Duration::from_secs(20)).await;
    assert!(out.status.success(), "{:?}: {}", out.status, text(&out.stderr));
    assert_default_statestore(home.path());
    let config = std::fs::read_to_string(home.path().join("config.yaml")).unwrap();
    assert!(config.contains("kind: Configuration"), "{config}");
}

#[tokio::test]
async fn rapr_run_stops_the_app_and_the_sidecar_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("res");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(res.join("statestore.yaml"), sqlite_yaml("statestore", dir.path())).unwrap();
    let (http, grpc) = (free_port(), free_port());
    let marker = dir.path().join("app-got-term");
    let ready = dir.path().join("app-ready");
    let script = format!("trap 'touch {}; exit 0' TERM; touch {}; while true; do sleep 0.1; done", marker.display(), ready.display());
    let mut cmd = rapr();
    cmd.args(["run", "--app-id", "sig", "--dapr-http-port", &http.to_string(), "--dapr-grpc-port", &grpc.to_string(), "--resources-path"])
        .arg(&res)
        .env("RAPR_HOME", dir.path().join("home"))
        .args(["--", "sh", "-c", &script]);
    let child = cmd.spawn().unwrap();
    let client = reqwest::Client::new();
    wait_healthy(&client, http).await;
    eventually(Duration::from_secs(20), "the app to install its trap", || async { ready.exists().then_some(()) }).await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("rapr run did not stop on SIGTERM").unwrap();
    let stdout = text(&out.stdout);
    assert!(marker.exists(), "the app received SIGTERM; stdout: {stdout}");
    assert_eq!(out.status.code(), Some(0), "the app's exit code; stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("✅  Exited Dapr successfully") && stdout.contains("✅  Exited App successfully"), "{stdout}");
    assert!(client.get(format!("http://127.0.0.1:{http}/v1.0/healthz")).send().await.is_err(), "the sidecar is gone");
}
