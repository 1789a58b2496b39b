//! `rapr run`'s embedded control plane (issue 14 A.8): two runs starting at once start one
//! daemon and both sidecars connect to its placement; it outlives the runs until
//! `rapr stop --control-plane`; a dead one is replaced by the next run; removing its directory
//! stops it. Each test has its own RAPR_HOME and placement port.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::harness::{eventually, free_port};

fn rapr(home: &Path, placement: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rapr"));
    c.env("RAPR_HOME", home).env("RAPR_PLACEMENT_PORT", placement.to_string()).env("RAPR_LOG", "warn");
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    c
}

fn record(home: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(home.join("control-plane").join("control-plane.json")).ok()?).ok()
}

fn alive(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
}

/// Live `rapr control-plane` processes whose record is under `home`.
fn daemons(home: &Path) -> Vec<i64> {
    let needle = home.join("control-plane").join("control-plane.json").display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == "control-plane") && args.contains(&needle) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

async fn placement_of(http: u16) -> Option<String> {
    let m: Value = reqwest::get(format!("http://127.0.0.1:{http}/v1.0/metadata")).await.ok()?.json().await.ok()?;
    m["actorRuntime"]["placement"].as_str().map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_share_one_control_plane_that_stays_until_stopped() {
    let home = tempfile::tempdir().unwrap();
    let placement = free_port();
    let (h1, h2) = (free_port(), free_port());
    let mut runs = Vec::new();
    for (id, http) in [("cp-one", h1), ("cp-two", h2)] {
        let child = rapr(home.path(), placement).args(["run", "--app-id", id, "--dapr-http-port", &http.to_string(), "--", "sleep", "60"]).spawn().unwrap();
        runs.push(child);
    }
    for http in [h1, h2] {
        eventually(Duration::from_secs(30), "the sidecar connected to the embedded placement", || async {
            (placement_of(http).await.as_deref() == Some("placement: connected")).then_some(())
        })
        .await;
    }
    let rec = record(home.path()).expect("the control plane's record");
    assert_eq!(rec["placement"], format!("127.0.0.1:{placement}"));
    let pid = rec["pid"].as_i64().unwrap();
    assert_eq!(daemons(home.path()), [pid], "one daemon for the two runs");

    // The runs end; the control plane stays (as `dapr init`'s placement does).
    for mut r in runs {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(r.id().unwrap() as i32), nix::sys::signal::Signal::SIGTERM);
        tokio::time::timeout(Duration::from_secs(30), r.wait()).await.expect("the run stops").unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(alive(pid), "the control plane outlives the runs");

    let out = rapr(home.path(), placement).args(["stop", "--control-plane"]).stdout(Stdio::piped()).output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("✅  control plane stopped (pid {pid})"));
    assert!(!alive(pid));
    assert!(record(home.path()).is_none(), "the record is removed");
    let out = rapr(home.path(), placement).args(["stop", "--control-plane"]).stdout(Stdio::piped()).output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no control plane running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_control_plane_is_replaced_and_removing_its_folder_stops_it() {
    let home = tempfile::tempdir().unwrap();
    let placement = free_port();
    let run = |home: &Path| {
        let mut c = rapr(home, placement);
        c.args(["run", "--app-id", "cp-once", "--", "true"]);
        c
    };
    assert!(run(home.path()).status().await.unwrap().success());
    let first = record(home.path()).expect("a record")["pid"].as_i64().unwrap();
    assert!(alive(first));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    eventually(Duration::from_secs(5), "the killed daemon gone", || async { (!alive(first)).then_some(()) }).await;

    // Its record is left behind, naming a dead process: the next run starts another.
    assert!(record(home.path()).is_some());
    assert!(run(home.path()).status().await.unwrap().success());
    let second = record(home.path()).expect("a record")["pid"].as_i64().unwrap();
    assert_ne!(second, first);
    assert_eq!(daemons(home.path()), [second]);

    std::fs::remove_dir_all(home.path().join("control-plane")).unwrap();
    eventually(Duration::from_secs(5), "the daemon stops once its folder is gone", || async { (!alive(second)).then_some(()) }).await;
}
