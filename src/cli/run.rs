//! `rapr run`: the developer's front door, as `dapr run`. Starts a sidecar in this process on the
//! embedded defaults (or `--resources-path`), then the app with `DAPR_HTTP_PORT`,
//! `DAPR_GRPC_PORT`, `APP_ID` and `APP_PORT`; prefixes the app's output `== APP == `; exits with
//! the app's exit code; on SIGINT/SIGTERM stops the app and drains the sidecar.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::init::{ensure_defaults, rapr_home};
use crate::config::SidecarArgs;
use crate::runtime::{wait_for_signal, Sidecar};

/// Flags of `rapr run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// App id (generated when absent).
    #[arg(long = "app-id", short = 'a')]
    pub app_id: Option<String>,
    /// Port the app listens on.
    #[arg(long = "app-port", short = 'p')]
    pub app_port: Option<u16>,
    /// App protocol.
    #[arg(long = "app-protocol", short = 'P', default_value = "http")]
    pub app_protocol: String,
    /// Sidecar HTTP port (a free one when absent).
    #[arg(long = "dapr-http-port", short = 'H')]
    pub dapr_http_port: Option<u16>,
    /// Sidecar gRPC port (a free one when absent).
    #[arg(long = "dapr-grpc-port", short = 'G')]
    pub dapr_grpc_port: Option<u16>,
    /// Resource folders (default: `~/.rapr/components`, written on first use).
    #[arg(long = "resources-path", short = 'd')]
    pub resources_path: Vec<PathBuf>,
    /// Configuration file.
    #[arg(long = "config", short = 'c')]
    pub config: Option<PathBuf>,
    /// Sidecar log level.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// The app's command line.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn pipe(stream: impl AsyncRead + Unpin, to_stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if to_stderr {
            eprintln!("== APP == {line}");
        } else {
            println!("== APP == {line}");
        }
    }
}

async fn wait_healthy(port: u16, deadline: Duration) -> bool {
    let url = format!("http://127.0.0.1:{port}/v1.0/healthz");
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < deadline {
        if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `rapr run`; returns the exit code.
pub async fn run(args: RunArgs, mut flags: SidecarArgs) -> i32 {
    let resources = if args.resources_path.is_empty() {
        match ensure_defaults(&rapr_home()) {
            Ok(dir) => vec![dir],
            Err(e) => {
                eprintln!("cannot write the default components under {}: {e}", rapr_home().display());
                return 1;
            }
        }
    } else {
        args.resources_path.clone()
    };
    let (http_port, grpc_port) = match (args.dapr_http_port.map(Ok).unwrap_or_else(free_port), args.dapr_grpc_port.map(Ok).unwrap_or_else(free_port)) {
        (Ok(h), Ok(g)) => (h, g),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot find a free port: {e}");
            return 1;
        }
    };
    let app_id = args.app_id.clone().unwrap_or_else(|| format!("app-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    flags.app_id = app_id.clone();
    flags.app_port = args.app_port.unwrap_or(0);
    flags.app_protocol = args.app_protocol.clone();
    flags.dapr_http_port = http_port;
    flags.dapr_grpc_port = grpc_port;
    flags.resources_path = resources;
    flags.config = args.config.clone();
    flags.dapr_listen_addresses = "127.0.0.1".into();
    println!("Starting rapr with id {app_id}. HTTP Port: {http_port}. gRPC Port: {grpc_port}");
    let sidecar = match Sidecar::start(flags, std::env::var("DAPR_API_TOKEN").ok()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if !wait_healthy(http_port, Duration::from_secs(60)).await {
        eprintln!("the sidecar did not become healthy; see /v1.0/metadata for component errors");
    }
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .env("DAPR_HTTP_PORT", http_port.to_string())
        .env("DAPR_GRPC_PORT", grpc_port.to_string())
        .env("APP_ID", &app_id)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = args.app_port {
        cmd.env("APP_PORT", p.to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start the app {:?}: {e}", args.command[0]);
            sidecar.shutdown.trigger();
            sidecar.run_until_stopped().await;
            return 1;
        }
    };
    let out = child.stdout.take().map(|s| tokio::spawn(pipe(s, false)));
    let err = child.stderr.take().map(|s| tokio::spawn(pipe(s, true)));
    println!("You're up and running! Both rapr and your app logs will appear here.");
    let status = tokio::select! {
        s = child.wait() => s,
        _ = wait_for_signal() => {
            println!("Terminating the app and the sidecar");
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
            match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    let _ = child.kill().await;
                    child.wait().await
                }
            }
        }
    };
    for t in [out, err].into_iter().flatten() {
        let _ = t.await;
    }
    let code = match status {
        Ok(s) => s.code().unwrap_or(1),
        Err(e) => {
            eprintln!("waiting for the app failed: {e}");
            1
        }
    };
    println!("Exited App successfully");
    sidecar.shutdown.trigger();
    sidecar.run_until_stopped().await;
    println!("Exited rapr successfully");
    code
}
