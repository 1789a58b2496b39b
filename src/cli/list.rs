//! `rapr list`: the apps `rapr run` started on this machine, as `dapr list` of the Dapr CLI 1.18
//! shows them: its table columns, and `-o json|yaml` with its field names (pkg/standalone/list.go
//! `ListOutput`). The sidecar runs inside `rapr run`, so `daprdPid` is the CLI pid.

use clap::Args;
use serde::Serialize;

use super::runs::{age, list, now, RunRecord};
use crate::config::rapr_home;

/// Flags of `rapr list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Output format: json, yaml, or table (default).
    #[arg(long = "output", short = 'o', default_value = "table")]
    pub output: String,
}

/// One row, the CLI's `ListOutput`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    app_id: String,
    http_port: u16,
    grpc_port: u16,
    app_port: u16,
    metrics_enabled: bool,
    command: String,
    age: String,
    created: String,
    daprd_pid: u32,
    cli_pid: u32,
    app_pid: u32,
    max_request_body_size: u64,
    http_read_buffer_size: u64,
    run_template_path: String,
    app_log_path: String,
    daprd_log_path: String,
    run_template_name: String,
}

/// `2006-01-02 15:04.05`, the CLI's layout (in UTC; the CLI writes local time).
fn created(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute].[second]")).unwrap_or_default()
}

/// The CLI's `TruncateString(s, 20)`.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn row(r: &RunRecord, now: u64) -> Row {
    Row {
        app_id: r.app_id.clone(),
        http_port: r.http_port,
        grpc_port: r.grpc_port,
        app_port: r.app_port,
        metrics_enabled: r.metrics_port != 0,
        command: truncate(&r.command, 20),
        age: age(r.created, now),
        created: created(r.created),
        daprd_pid: if r.daprd_pid == 0 { r.cli_pid } else { r.daprd_pid },
        cli_pid: r.cli_pid,
        app_pid: r.app_pid,
        max_request_body_size: r.max_request_body_size,
        http_read_buffer_size: r.http_read_buffer_size,
        run_template_path: r.run_template_path.clone().unwrap_or_default(),
        app_log_path: r.app_log_path.clone().unwrap_or_default(),
        daprd_log_path: r.daprd_log_path.clone().unwrap_or_default(),
        run_template_name: r.run_template_name.clone().unwrap_or_default(),
    }
}

const COLUMNS: [&str; 13] = ["APP ID", "HTTP PORT", "GRPC PORT", "APP PORT", "COMMAND", "AGE", "CREATED", "DAPRD PID", "CLI PID", "APP PID", "RUN_TEMPLATE_PATH", "APP_LOG_PATH", "DAPRD_LOG_PATH"];

fn table(rows: &[Row]) -> String {
    let mut cells = vec![COLUMNS.map(String::from).to_vec()];
    for r in rows {
        cells.push(vec![
            r.app_id.clone(),
            r.http_port.to_string(),
            r.grpc_port.to_string(),
            r.app_port.to_string(),
            r.command.clone(),
            r.age.clone(),
            r.created.clone(),
            r.daprd_pid.to_string(),
            r.cli_pid.to_string(),
            r.app_pid.to_string(),
            r.run_template_path.clone(),
            r.app_log_path.clone(),
            r.daprd_log_path.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..COLUMNS.len()).map(|c| cells.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in cells {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}  ")).collect();
        out.push_str(line.concat().trim_end());
        out.push('\n');
    }
    out
}

/// `rapr list`; returns the exit code.
pub fn run_list(args: &ListArgs) -> i32 {
    let now = now();
    let rows: Vec<Row> = list(&rapr_home()).iter().map(|r| row(r, now)).collect();
    let printed = match args.output.as_str() {
        "json" => serde_json::to_string_pretty(&rows).map_err(|e| e.to_string()),
        "yaml" => yaml_serde::to_string(&rows).map_err(|e| e.to_string()),
        "table" | "" if rows.is_empty() => Ok("No Dapr instances found.".to_string()),
        "table" | "" => Ok(table(&rows).trim_end().to_string()),
        _ => {
            super::status::failure("An invalid output format was specified.");
            return 1;
        }
    };
    match printed {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            super::status::failure(&e);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_as_the_cli_writes_them() {
        let rec = RunRecord { app_id: "a".into(), http_port: 1, grpc_port: 2, app_port: 3, metrics_port: 9, command: "python3 a-long-app-name.py".into(), cli_pid: 7, created: 100, ..Default::default() };
        let r = row(&rec, 105);
        assert_eq!(r.command, "python3 a-long-ap...");
        assert_eq!((r.daprd_pid, r.age.as_str(), r.metrics_enabled), (7, "5s", true));
        let v = serde_json::to_value(&r).unwrap();
        for k in ["appId", "httpPort", "grpcPort", "appPort", "metricsEnabled", "command", "age", "created", "daprdPid", "cliPid", "appPid", "maxRequestBodySize", "httpReadBufferSize", "runTemplatePath", "appLogPath", "daprdLogPath", "runTemplateName"] {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
        let t = table(&[r]);
        assert!(t.starts_with("APP ID  HTTP PORT  GRPC PORT  APP PORT  COMMAND"), "{t}");
        assert!(t.contains("DAPRD PID  CLI PID  APP PID  RUN_TEMPLATE_PATH  APP_LOG_PATH  DAPRD_LOG_PATH"), "{t}");
    }
}
