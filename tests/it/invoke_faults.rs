//! Invocation under faults: a hanging app, an app that drops the connection, a target sidecar
//! killed mid-request, malformed requests, and 10,000 concurrent connections twice with no
//! leak. Each request gets a clear answer (or a clean failure); the sidecar keeps serving.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Sidecar, SidecarBuilder};

/// A raw TCP "app": `/hang` never answers, `/drop` closes without answering, `/cut` sends
/// headers and half a body then closes, anything else answers `ok`.
async fn raw_app() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                if head.starts_with("GET /hang") {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                } else if head.starts_with("GET /drop") {
                    // Close without a word.
                } else if head.starts_with("GET /cut") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf").await;
                } else {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                }
            });
        }
    });
    port
}

async fn pair(name: &str, app_port: u16, home: &std::path::Path) -> (Sidecar, Sidecar) {
    let log = std::env::var("RAPR_FAULT_LOG").unwrap_or_else(|_| "info".into());
    let target = SidecarBuilder::new(name).home(home).env("RAPR_LOG", &log).args(&["--app-port", &app_port.to_string()]).start().await;
    let caller = SidecarBuilder::new(&format!("{name}-caller")).home(home).env("RAPR_LOG", &log).start().await;
    (caller, target)
}

async fn still_serving(sc: &Sidecar, target: &str) {
    let r = sc.client.get(sc.url(&format!("/v1.0/invoke/{target}/method/fine"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn hanging_dropping_and_cutting_apps() {
    let home = tempfile::tempdir().unwrap();
    let (caller, _target) = pair("flt-app", raw_app().await, home.path()).await;
    // A hanging app: callers that give up are let go, and nothing else waits behind them.
    for _ in 0..20 {
        let r = caller.client.get(caller.url("/v1.0/invoke/flt-app/method/hang")).timeout(Duration::from_millis(300)).send().await;
        assert!(r.unwrap_err().is_timeout());
    }
    still_serving(&caller, "flt-app").await;
    // An app that closes without answering: a clear error.
    let r = caller.client.get(caller.url("/v1.0/invoke/flt-app/method/drop")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(b["message"].as_str().unwrap().starts_with("failed to invoke, id: flt-app, err: "), "{b}");
    // An app that dies mid-response: the caller's body fails instead of looking complete.
    // (The failure surfaces before the caller has the head, as daprd's error answer when the
    // app's sidecar read the short answer whole before replying, or while it reads the body.)
    let complete = match caller.client.get(caller.url("/v1.0/invoke/flt-app/method/cut")).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        Ok(r) => {
            let status = r.status();
            let b: Value = r.json().await.unwrap();
            assert_eq!((status.as_u16(), b["errorCode"].as_str()), (500, Some("ERR_DIRECT_INVOKE")), "{b}");
            false
        }
        Err(_) => false,
    };
    assert!(!complete, "a truncated body must not read as complete");
    still_serving(&caller, "flt-app").await;
}

#[tokio::test]
async fn a_target_killed_mid_request() {
    let home = tempfile::tempdir().unwrap();
    let (caller, target) = pair("flt-kill", raw_app().await, home.path()).await;
    let url = caller.url("/v1.0/invoke/flt-kill/method/hang");
    let client = caller.client.clone();
    let pending = tokio::spawn(async move { client.get(url).timeout(Duration::from_secs(20)).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(target.pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let r = pending.await.unwrap().expect("the caller answers instead of hanging");
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "ERR_DIRECT_INVOKE");
}

#[tokio::test]
async fn malformed_requests_get_an_answer_and_do_not_hurt() {
    let home = tempfile::tempdir().unwrap();
    let (caller, _target) = pair("flt-bad", raw_app().await, home.path()).await;
    for raw in [
        &b"GET /v1.0/invoke/flt-bad/method/x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"[..],
        b"GET /v1.0/invoke/flt-bad/method/x HTTP/1.1\r\nHost: x\r\nx-bin: \x01\x02\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
        b"POST /v1.0/invoke/flt-bad/method/x HTTP/1.1\r\nHost: x\r\ncontent-length: nope\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", caller.http)).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 4"), "{:?} got {text:?}", String::from_utf8_lossy(raw));
    }
    still_serving(&caller, "flt-bad").await;
}

/// A keep-alive app with a deep accept backlog, so the app is never the bottleneck.
async fn keep_alive_app() -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = socket.listen(8192).unwrap();
    let port = l.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

/// RSS once the allocator has returned what the round freed: jemalloc's background thread
/// decays dirty pages over ~10 s, so this waits until three readings a second apart agree
/// (within 1%), for at most 30 s.
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    let mut steady = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid);
        steady = if now.abs_diff(last) * 100 <= last { steady + 1 } else { 0 };
        last = now;
        if steady == 3 {
            break;
        }
    }
    last
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap()
}

/// What one round saw: how many connections answered 200, and every other outcome counted by
/// kind (a status line with its `errorCode`, or the client-side failure), so a failing run says
/// WHICH answers were not ok instead of only how many.
#[derive(Default)]
struct Round {
    took: Duration,
    ok: usize,
    answered: usize,
    not_ok: std::collections::BTreeMap<String, usize>,
}

impl Round {
    fn note(&mut self, kind: String) {
        *self.not_ok.entry(kind).or_default() += 1;
    }
}

/// One connection's outcome: `Ok(())` for a 200, else what went wrong and whether an answer came.
type Outcome = Result<(), (bool, String)>;

/// The status line and `errorCode` of a non-200 answer: the kind a failing run counts.
fn answer_kind(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let status = text.lines().next().unwrap_or("").trim().to_string();
    let code = text.split("\"errorCode\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("-");
    let message: String = text.split("\"message\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("").chars().take(120).collect();
    format!("{status} {code} {message}")
}

/// Opens `n` connections (in batches, so the listen backlog never overflows), keeps them all
/// open, then sends one invocation on each and reads every answer.
async fn round(port: u16, n: usize) -> Round {
    let started = std::time::Instant::now();
    let mut result = Round::default();
    let mut conns = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(500) {
        let mut opening = Vec::new();
        for i in 0..500.min(n - batch * 500) {
            // Spread clients over several loopback source addresses: each has its own ephemeral
            // ports, so two rounds of 10,000 never run out while the first round's are in TIME_WAIT.
            let source = std::net::SocketAddr::from(([127, 0, 0, 2 + (i % 16) as u8], 0));
            opening.push(tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {:?}", e.kind()))?;
                socket.bind(source).map_err(|e| format!("bind: {:?}", e.kind()))?;
                let stream = socket.connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await.map_err(|e| format!("connect: {:?}", e.kind()))?;
                // Close with a reset: no TIME_WAIT left behind to collide with later listeners.
                // reason: a zero linger resets at once on drop, it never blocks the thread.
                #[allow(deprecated)]
                stream.set_linger(Some(Duration::ZERO)).map_err(|e| format!("linger: {:?}", e.kind()))?;
                Ok::<_, String>(stream)
            }));
        }
        for o in opening {
            match o.await {
                Ok(Ok(c)) => conns.push(c),
                Ok(Err(kind)) => result.note(kind),
                Err(e) => result.note(format!("open task: {e}")),
            }
        }
    }
    let mut tasks = Vec::with_capacity(n);
    for mut s in conns {
        tasks.push(tokio::spawn(async move {
            // Keep-alive request; this side closes after the answer, so TIME_WAIT stays with the
            // client, whose kernel never reuses those ports (server-side TIME_WAIT would collide).
            s.write_all(b"GET /v1.0/invoke/flt-load/method/fine HTTP/1.1\r\nHost: x\r\n\r\n").await.map_err(|e| (false, format!("write: {:?}", e.kind())))?;
            let read = async {
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.map_err(|e| (!out.is_empty(), format!("read: {:?}", e.kind())))?;
                    if n == 0 {
                        return if out.is_empty() { Err((false, "closed without an answer".to_string())) } else { Ok(out) };
                    }
                    out.extend_from_slice(&buf[..n]);
                    if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                        let len = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
                        if out.len() >= end + 4 + len {
                            return Ok(out);
                        }
                    }
                }
            };
            // Generous: on a loaded 2-core machine a debug-build round can take minutes; what
            // this test proves is that every connection is answered, not how fast.
            let out = tokio::time::timeout(Duration::from_secs(300), read).await.map_err(|_| (false, "no answer in 300 s".to_string()))??;
            if out.starts_with(b"HTTP/1.1 200") {
                Ok(())
            } else {
                Err((true, answer_kind(&out)))
            }
        }));
    }
    for t in tasks {
        let outcome: Outcome = t.await.unwrap_or_else(|e| Err((false, format!("request task: {e}"))));
        match outcome {
            Ok(()) => {
                result.answered += 1;
                result.ok += 1;
            }
            Err((answered, kind)) => {
                result.answered += usize::from(answered);
                result.note(kind);
            }
        }
    }
    result.took = started.elapsed();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_connections_twice_without_a_leak() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(65536), hard).unwrap();
    let home = tempfile::tempdir().unwrap();
    let (caller, _target) = pair("flt-load", keep_alive_app().await, home.path()).await;
    const N: usize = 10_000;
    // Warm-up with a full round: allocator arenas, HTTP/2 stream tables and connection pools
    // reach their working size (the first round alone grows RSS ~10%; later ones stay flat).
    let warm = round(caller.http, N).await;
    println!("warm-up: {} ok / {} answered in {:?}, not ok {:?}", warm.ok, warm.answered, warm.took, warm.not_ok);
    let first = round(caller.http, N).await;
    let after_first = settled_rss(caller.pid()).await;
    let second = round(caller.http, N).await;
    let after_second = settled_rss(caller.pid()).await;
    println!(
        "10,000 connections: round 1 {} ok / {} answered in {:?}, RSS {after_first} KiB, not ok {:?}; round 2 {} ok / {} answered in {:?}, RSS {after_second} KiB, not ok {:?}",
        first.ok, first.answered, first.took, first.not_ok, second.ok, second.answered, second.took, second.not_ok
    );
    assert_eq!((first.answered, second.answered), (N, N), "every connection got an answer: not ok {:?} / {:?}", first.not_ok, second.not_ok);
    assert!(first.ok > N * 99 / 100 && second.ok > N * 99 / 100, "nearly all succeed: {}, {}; not ok {:?} / {:?}", first.ok, second.ok, first.not_ok, second.not_ok);
    assert!(after_second * 10 < after_first * 11, "RSS grew more than 10% in the second round: {after_first} -> {after_second} KiB");
    still_serving(&caller, "flt-load").await;
}


/// A registry write that takes seconds (a slow fsync, another sidecar holding the write lock)
/// must not stall invocations: lookups have their own connection. Before, every call whose
/// cached address had expired queued behind the write on the registry's one thread (one cause of
/// the seconds-long invoke-grpc p50 CI once measured).
#[tokio::test]
async fn a_slow_name_registry_write_does_not_stall_invocations() {
    let home = tempfile::tempdir().unwrap();
    let port = raw_app().await;
    let _target = SidecarBuilder::new("inv-slowreg").home(home.path()).args(&["--app-port", &port.to_string()]).start().await;
    // The caller's registry refresh (every 3 s) sleeps 2.5 s on the registry's writer.
    let caller = SidecarBuilder::new("inv-slowreg-caller").home(home.path()).env("FAILPOINTS", "nameres:refresh=sleep(2500)").start().await;
    let started = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(7) {
        let t = std::time::Instant::now();
        let r = caller.client.get(caller.url("/v1.0/invoke/inv-slowreg/method/ok")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(worst < Duration::from_millis(1000), "an invocation waited {worst:?} behind a registry write");
}
