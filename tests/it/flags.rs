//! `rapr sidecar` flags against the real binary (issue 12 A): each flag does what daprd does with
//! it, or the sidecar refuses to start and says why.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{eventually, free_port, SidecarBuilder};

/// Runs `rapr sidecar` with `args` and returns its exit code and output once it exits.
fn run_to_exit(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rapr"))
        .arg("sidecar")
        .args(["--dapr-http-port", &free_port().to_string(), "--dapr-grpc-port", &free_port().to_string(), "--metrics-port", "0"])
        .args(["--dapr-listen-addresses", "127.0.0.1"])
        .args(args)
        .env("RAPR_HOME", tempfile::tempdir().unwrap().path())
        .stdin(Stdio::null())
        .output()
        .expect("run rapr");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn flags_rapr_cannot_honour_stop_the_start_with_the_reason() {
    for (args, needle) in [
        (&["--app-id", "fl-mode", "--mode", "kubernetes"][..], "--mode kubernetes: rapr runs in standalone mode only"),
        (&["--app-id", "fl-mtls", "--enable-mtls"][..], "--enable-mtls true: mTLS between sidecars needs a sentry"),
        (&["--app-id", "fl-prof", "--enable-profiling", "--profile-port", "7777"][..], "--enable-profiling true: daprd serves Go's pprof"),
        (&["--app-id", "fl-size", "--read-buffer-size", "lots"][..], "invalid value \\\"lots\\\" for --read-buffer-size"),
    ] {
        let (code, out) = run_to_exit(args);
        assert_eq!(code, 1, "{args:?} must not start:\n{out}");
        assert!(out.contains(needle), "{args:?}: the message says why:\n{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_to_exit(&["--app-id", "fl-log", "--log-file", &dir.path().join("no/such/dir/x.log").display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed to open log file"), "{out}");
}

#[tokio::test]
async fn public_port_serves_health_and_metadata_only() {
    let public = free_port();
    let sc = SidecarBuilder::new("fl-public").memory("store").args(&["--dapr-public-port", &public.to_string(), "--dapr-public-listen-address", "127.0.0.1"]).start().await;
    let url = |p: &str| format!("http://127.0.0.1:{public}{p}");
    assert_eq!(sc.client.get(url("/v1.0/healthz")).send().await.unwrap().status(), 204);
    assert_eq!(sc.client.get(url("/v1.0/healthz/outbound")).send().await.unwrap().status(), 204);
    let meta: serde_json::Value = sc.client.get(url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["id"], "fl-public");
    assert_eq!(sc.client.get(url("/v1.0/state/store/k")).send().await.unwrap().status(), 404, "no state API on the public port");
    assert_eq!(sc.client.post(url("/v1.0/shutdown")).send().await.unwrap().status(), 404, "no shutdown on the public port");
    // The main port still serves the state API.
    assert_eq!(sc.client.get(sc.url("/v1.0/state/store/k")).send().await.unwrap().status(), 204);
}

/// One HTTP/1.1 request over a Unix socket; returns the raw answer.
async fn unix_get(socket: &Path, path: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn unix_domain_socket_replaces_the_tcp_api_ports() {
    let dir = tempfile::tempdir().unwrap();
    let (http, grpc) = (free_port(), free_port());
    let log = dir.path().join("out.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapr"))
        .args(["sidecar", "--app-id", "fl-uds", "--dapr-http-port", &http.to_string(), "--dapr-grpc-port", &grpc.to_string(), "--metrics-port", "0"])
        .args(["--dapr-listen-addresses", "127.0.0.1", "--unix-domain-socket"])
        .arg(dir.path())
        .env("RAPR_HOME", dir.path().join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (http_sock, grpc_sock) = (dir.path().join("dapr-fl-uds-http.socket"), dir.path().join("dapr-fl-uds-grpc.socket"));
    let start = Instant::now();
    while !(http_sock.exists() && grpc_sock.exists()) {
        assert!(child.try_wait().unwrap().is_none(), "exited: {}", std::fs::read_to_string(&log).unwrap_or_default());
        assert!(start.elapsed() < Duration::from_secs(20), "no sockets: {}", std::fs::read_to_string(&log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let answer = eventually(Duration::from_secs(10), "healthz over the socket", || {
        let s = http_sock.clone();
        async move { Some(unix_get(&s, "/v1.0/healthz").await).filter(|a| a.starts_with("HTTP/1.1 204")) }
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let meta = unix_get(&http_sock, "/v1.0/metadata").await;
    assert!(meta.starts_with("HTTP/1.1 200") && meta.contains("\"id\":\"fl-uds\""), "{meta}");
    // As daprd: the API ports are not opened on TCP at all.
    assert!(std::net::TcpStream::connect(("127.0.0.1", http)).is_err(), "no TCP HTTP API");
    assert!(std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err(), "no TCP gRPC API");
    // The sockets go with the sidecar.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!http_sock.exists() && !grpc_sock.exists(), "the socket files are removed on shutdown");
}

#[tokio::test]
async fn api_logging_writes_a_line_per_call_even_above_info() {
    // RAPR_LOG would override --log-level; without it, warn hides other info lines but not these.
    let sc = SidecarBuilder::new("fl-apilog").memory("store").env_remove("RAPR_LOG").args(&["--enable-api-logging", "--log-level", "warn"]).start().await;
    assert_eq!(sc.client.get(sc.url("/v1.0/state/store/some-key")).header("user-agent", "flags-test").send().await.unwrap().status(), 204);
    let mut grpc = sc.grpc().await;
    grpc.get_metadata(rapr_proto::runtime::v1::GetMetadataRequest::default()).await.unwrap();
    let logs = eventually(Duration::from_secs(5), "the API lines", || {
        let l = sc.logs();
        async move { (l.contains("HTTP API Called") && l.contains("gRPC API Called")).then_some(l) }
    })
    .await;
    let http = logs.lines().find(|l| l.contains("GET /v1.0/state/store/some-key")).unwrap_or_else(|| panic!("{logs}"));
    for part in ["level=info", "msg=\"HTTP API Called\"", "scope=dapr.runtime.http-info", "useragent=flags-test", "code=204", "size=0", "duration="] {
        assert!(http.contains(part), "{part} in {http}");
    }
    let grpc_line = logs.lines().find(|l| l.contains("gRPC API Called")).unwrap();
    for part in ["scope=dapr.runtime.grpc.api-info", "method=/dapr.proto.runtime.v1.Dapr/GetMetadata", "code=0", "duration="] {
        assert!(grpc_line.contains(part), "{part} in {grpc_line}");
    }
    assert!(!logs.contains("API servers listening"), "other info lines stay hidden at warn:\n{logs}");
}

#[tokio::test]
async fn several_configs_merge_and_drive_api_logging() {
    let b = SidecarBuilder::new("fl-configs").memory("store");
    let dir = b.dir();
    let (first, second) = (dir.join("a.yaml"), dir.join("b.yaml"));
    let cfg = |name: &str, logging: &str| format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: {name}\nspec:\n  logging:\n    apiLogging:\n{logging}");
    std::fs::write(&first, cfg("a", "      enabled: true\n      omitHealthChecks: true\n")).unwrap();
    std::fs::write(&second, cfg("b", "      obfuscateURLs: true\n")).unwrap();
    let sc = b.args(&["--config", first.to_str().unwrap(), "--config", second.to_str().unwrap()]).start().await;
    assert_eq!(sc.client.get(sc.url("/v1.0/state/store/secret-key")).send().await.unwrap().status(), 204);
    let logs = eventually(Duration::from_secs(5), "the API line", || {
        let l = sc.logs();
        async move { l.contains("HTTP API Called").then_some(l) }
    })
    .await;
    assert!(logs.contains("method=\"GET /v1.0/state/{store}/{key}\""), "the second file's obfuscateURLs: the route, not the key:\n{logs}");
    assert!(!logs.contains("secret-key"), "{logs}");
    assert!(!logs.lines().any(|l| l.contains("HTTP API Called") && l.contains("healthz")), "the first file's omitHealthChecks kept:\n{logs}");
}

#[tokio::test]
async fn allowed_origins_answer_only_the_listed_origins() {
    let sc = SidecarBuilder::new("fl-cors").memory("store").args(&["--allowed-origins", "http://a.example"]).start().await;
    let get = |origin: &'static str| sc.client.get(sc.url("/v1.0/metadata")).header("origin", origin).send();
    let r = get("http://a.example").await.unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("http://a.example"));
    let r = get("http://b.example").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none(), "another origin gets no CORS header");
    let pre = sc.client.request(reqwest::Method::OPTIONS, sc.url("/v1.0/state/store")).header("origin", "http://a.example").header("access-control-request-method", "POST").send().await.unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert!(pre.headers().get("access-control-allow-methods").unwrap().to_str().unwrap().contains("POST"));

    // daprd's default (no --allowed-origins): no CORS middleware at all.
    let plain = SidecarBuilder::new("fl-nocors").start().await;
    let r = plain.client.get(plain.url("/v1.0/metadata")).header("origin", "http://a.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn read_buffer_size_bounds_the_request_head() {
    let big = "x".repeat(16 << 10);
    let sc = SidecarBuilder::new("fl-rbs").start().await;
    let r = sc.client.get(sc.url("/v1.0/metadata")).header("x-big", &big).send().await.unwrap();
    assert_eq!(r.status(), 431, "daprd's default 4Ki (+ Go's 4 KiB) refuses a 16 KiB header");
    let sc = SidecarBuilder::new("fl-rbs2").args(&["--read-buffer-size", "32Ki"]).start().await;
    assert_eq!(sc.client.get(sc.url("/v1.0/metadata")).header("x-big", &big).send().await.unwrap().status(), 200);
    let sc = SidecarBuilder::new("fl-rbs3").args(&["--dapr-http-read-buffer-size", "32"]).start().await;
    assert_eq!(sc.client.get(sc.url("/v1.0/metadata")).header("x-big", &big).send().await.unwrap().status(), 200, "the deprecated KB flag");
}

#[tokio::test]
async fn max_body_size_wins_over_the_deprecated_flag() {
    let body = serde_json::json!([{"key": "k", "value": "x".repeat(1536 << 10)}]);
    let sc = SidecarBuilder::new("fl-body1").memory("store").args(&["--dapr-http-max-request-size", "1"]).start().await;
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&body).send().await.unwrap();
    assert!(r.status().is_client_error() && r.text().await.unwrap().contains("too large"), "1 MB alone refuses 1.5 MiB");
    let sc = SidecarBuilder::new("fl-body2").memory("store").args(&["--dapr-http-max-request-size", "1", "--max-body-size", "2Mi"]).start().await;
    assert_eq!(sc.client.post(sc.url("/v1.0/state/store")).json(&body).send().await.unwrap().status(), 204, "--max-body-size wins");
}

#[tokio::test]
async fn metrics_and_internal_servers_listen_on_their_own_addresses() {
    // 127.0.0.2 and .3 are loopback too on Linux: what binds there is not reachable on .1.
    let (metrics, internal, public) = (free_port(), free_port(), free_port());
    let sc = SidecarBuilder::new("fl-listen")
        .args(&["--metrics-port", &metrics.to_string(), "--metrics-listen-address", "127.0.0.2"])
        .args(&["--dapr-internal-grpc-port", &internal.to_string(), "--dapr-internal-grpc-listen-address", "127.0.0.3"])
        .args(&["--dapr-public-port", &public.to_string(), "--dapr-public-listen-address", "127.0.0.2"])
        .start()
        .await;
    let r = sc.client.get(format!("http://127.0.0.2:{metrics}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(sc.client.get(format!("http://127.0.0.1:{metrics}/metrics")).send().await.is_err(), "not on --dapr-listen-addresses");
    assert!(std::net::TcpStream::connect(("127.0.0.3", internal)).is_ok());
    assert!(std::net::TcpStream::connect(("127.0.0.1", internal)).is_err(), "internal gRPC not on --dapr-listen-addresses");
    assert_eq!(sc.client.get(format!("http://127.0.0.2:{public}/v1.0/healthz")).send().await.unwrap().status(), 204);
}

#[tokio::test]
async fn block_shutdown_duration_keeps_serving_after_sigterm() {
    let mut sc = SidecarBuilder::new("fl-block").args(&["--dapr-block-shutdown-duration", "3s"]).start().await;
    let _ = Command::new("kill").args(["-TERM", &sc.pid().to_string()]).status();
    eventually(Duration::from_secs(5), "the blocking line", || {
        let l = sc.logs();
        async move { l.contains("Blocking graceful shutdown for 3s or until app reports unhealthy").then_some(()) }
    })
    .await;
    assert_eq!(sc.client.get(sc.url("/v1.0/healthz")).send().await.unwrap().status(), 204, "still serving while blocked");
    let status = sc.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    assert!(sc.logs().contains("Block shutdown period expired, entering shutdown..."), "{}", sc.logs());
}

#[tokio::test]
async fn a_repeated_flag_keeps_its_last_value_as_pflag() {
    // The harness already gives --metrics-port 0; daprd's pflag takes the last value.
    let port = free_port();
    let sc = SidecarBuilder::new("fl-repeat").args(&["--metrics-port", &port.to_string()]).start().await;
    assert_eq!(sc.client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn log_file_comma_lists_and_app_ssl() {
    let b = SidecarBuilder::new("fl-misc");
    let dir = b.dir();
    let (one, two) = (dir.join("one"), dir.join("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    std::fs::write(one.join("a.yaml"), crate::harness::memory_yaml("first")).unwrap();
    std::fs::write(two.join("b.yaml"), crate::harness::memory_yaml("second")).unwrap();
    let log = dir.join("sidecar-file.log");
    let list = format!("{},{}", one.display(), two.display());
    let sc = b.args(&["--resources-path", &list, "--log-file", log.to_str().unwrap(), "--app-ssl"]).start().await;
    let meta: serde_json::Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = meta["components"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(names.contains(&"first") && names.contains(&"second"), "{meta}");
    assert_eq!(meta["appConnectionProperties"]["protocol"], "https", "--app-ssl turns http into https: {meta}");
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("API servers listening") && written.contains("the 'app-ssl' flag is deprecated"), "{written}");
    assert!(!sc.logs().contains("API servers listening"), "the lines go to the file, not the terminal");
}

/// daprd's one-shot commands: `--version` and `--build-info` print and exit 0; `--wait` polls
/// the sidecar on `--dapr-http-port` until it is outbound ready and exits 0 (daprd's
/// `WaitUntilDaprOutboundReady`).
#[tokio::test]
async fn version_build_info_and_wait_run_alone_as_daprds() {
    let (code, out) = run_to_exit(&["--version"]);
    assert_eq!((code, out.trim()), (0, env!("CARGO_PKG_VERSION")));
    let (code, out) = run_to_exit(&["--build-info"]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("Version: {}\nGit Commit: ", env!("CARGO_PKG_VERSION"))), "{out}");
    let sc = SidecarBuilder::new("fl-wait").start().await;
    let port = sc.url("").trim_start_matches("http://127.0.0.1:").trim_end_matches('/').to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_rapr")).args(["sidecar", "--wait", "--dapr-http-port", &port]).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Dapr is outbound ready!"), "{text}");
}

/// daprd's remaining flags parse as daprd parses them: bad values stop the start; the ones that
/// have nothing to act on in rapr yet say so.
#[tokio::test]
async fn daprds_other_flags_are_checked_as_daprd_checks_them() {
    for (args, needle) in [
        (&["--app-id", "fl-init", "--disable-init-endpoints", "subscribe,bindings"][..], "--disable-init-endpoints"),
        (&["--app-id", "fl-diss", "--actors-disseminate-timeout", "0s"][..], "must be positive"),
        (&["--app-id", "fl-hot", "--hot-reload-reconcile-interval", "often"][..], "--hot-reload-reconcile-interval"),
    ] {
        let (code, out) = run_to_exit(args);
        assert_eq!(code, 1, "{args:?} must not start:\n{out}");
        assert!(out.contains(needle), "{args:?}: {out}");
    }
    let sc = SidecarBuilder::new("fl-others")
        .args(&["--scheduler-job-streams", "2", "--app-binding-options-timeout", "5s", "--hot-reload-reconcile-interval", "30s"])
        .args(&["--control-plane-address", "cp:443", "--control-plane-trust-domain", "td", "--control-plane-namespace", "ns", "--actors-service", "placement:x"])
        .start()
        .await;
    for needle in ["--control-plane-address cp:443: used in kubernetes mode only", "Flag --actors-service has been deprecated"] {
        assert!(sc.logs().contains(needle), "{needle} in {}", sc.logs());
    }
}

/// `--disable-init-endpoints subscribe`: the app's `/dapr/subscribe` is never fetched (daprd's
/// `ProgrammaticSubscriptionEnabled` false); declarative subscriptions still load.
#[tokio::test]
async fn disabled_subscribe_init_endpoint_is_not_called() {
    let app = crate::pubsub::app::SubscriberApp::start(serde_json::json!([{"pubsubname": "ps", "topic": "prog", "route": "/prog"}])).await;
    let ps = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ps\nspec:\n  type: pubsub.in-memory\n  version: v1\n";
    let declared = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: decl\nspec:\n  pubsubname: ps\n  topic: decl\n  routes:\n    default: /decl\n";
    let sc = SidecarBuilder::new("fl-noinit").file("ps.yaml", ps).file("decl.yaml", declared).args(&["--app-port", &app.port_arg(), "--disable-init-endpoints", "subscribe"]).start().await;
    crate::pubsub::wait_active(&sc, "ps", "decl").await;
    let meta: serde_json::Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let topics: Vec<&str> = meta["subscriptions"].as_array().unwrap().iter().filter_map(|s| s["topic"].as_str()).collect();
    assert_eq!(topics, vec!["decl"], "{meta:#}");
    assert_eq!(app.subscribe_calls(), 0, "the app was asked for its subscriptions");
    // Without the flag the same app is asked (the count above can fail).
    let sc2 = SidecarBuilder::new("fl-init-on").file("ps.yaml", ps).args(&["--app-port", &app.port_arg()]).start().await;
    crate::pubsub::wait_active(&sc2, "ps", "prog").await;
    assert!(app.subscribe_calls() >= 1);
}
