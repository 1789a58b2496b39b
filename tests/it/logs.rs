//! The sidecar's log lines as daprd writes them, read from the real binary's output: text lines
//! in logrus's layout with the app id and daprd's scope and no process (ractor) spans at info;
//! `--log-as-json` lines that parse and carry daprd's fields; process names only at debug.
//! (`rapr run -f`'s lines: tests/it/multi_app.rs.)

use serde_json::Value;

use crate::harness::{Sidecar, SidecarBuilder};

/// Some request handling and a component, so the log holds more than the start.
async fn exercise(sc: &Sidecar) {
    let r = sc.client.post(sc.url("/v1.0/state/store")).json(&serde_json::json!([{"key": "k", "value": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = sc.client.get(sc.url("/v1.0/invoke/nobody-here/method/x")).send().await.unwrap();
    assert!(r.status().is_server_error() || r.status().is_client_error());
}

fn log_lines(sc: &Sidecar) -> Vec<String> {
    sc.logs().lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

#[tokio::test]
async fn text_lines_carry_time_level_msg_app_id_and_scope_without_process_spans() {
    let sc = SidecarBuilder::new("lg-text").memory("store").start().await;
    exercise(&sc).await;
    let lines = log_lines(&sc);
    assert!(lines.len() >= 3, "{lines:#?}");
    for l in &lines {
        assert!(l.starts_with("time=\"") && l.contains(" level=") && l.contains(" msg="), "logrus layout: {l}");
        assert!(l.contains(" app_id=lg-text "), "the app id: {l}");
        assert!(l.contains(" scope=dapr.") || l.contains(" scope=rapr."), "daprd's scope: {l}");
        assert!(!l.contains("Actor{") && !l.contains("process="), "no process spans at info: {l}");
    }
    assert!(lines.iter().any(|l| l.contains("msg=\"API servers listening\"") && l.contains("scope=dapr.runtime ")), "{lines:#?}");
}

#[tokio::test]
async fn json_lines_parse_and_carry_daprds_fields() {
    let sc = SidecarBuilder::new("lg-json").memory("store").args(&["--log-as-json"]).start().await;
    exercise(&sc).await;
    let lines = log_lines(&sc);
    assert!(lines.len() >= 3, "{lines:#?}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        for k in ["time", "level", "msg", "scope", "type", "app_id", "instance", "ver"] {
            assert!(v[k].is_string(), "{k} in {l}");
        }
        assert_eq!(v["app_id"], "lg-json");
        assert_eq!(v["type"], "log");
        assert!(["debug", "info", "warning", "error"].contains(&v["level"].as_str().unwrap()), "logrus's level names: {l}");
        assert!(time::OffsetDateTime::parse(v["time"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).is_ok(), "RFC 3339: {l}");
        assert!(v.get("process").is_none(), "no process at info: {l}");
    }
    let gateway = lines.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["msg"] == "API servers listening").expect("the listening line");
    assert_eq!(gateway["scope"], "dapr.runtime");
    assert!(gateway["http"].is_string(), "the event's own fields: {gateway}");
}

#[tokio::test]
async fn process_names_show_at_debug_only() {
    let sc = SidecarBuilder::new("lg-debug").env("RAPR_LOG", "debug").args(&["--log-as-json"]).start().await;
    let lines = log_lines(&sc);
    let with_process: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["process"].is_string()).collect();
    assert!(!with_process.is_empty(), "debug lines name their process:\n{}", lines.join("\n"));
    assert!(lines.iter().all(|l| !l.contains("Actor{")), "as a field, never as a span path");
}
