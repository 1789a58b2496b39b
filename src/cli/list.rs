//! `rapr list`: the apps `rapr run` started on this machine, as `dapr list` shows them.

use clap::Args;
use serde_json::json;

use crate::config::rapr_home;
use super::runs::{age, list, now, RunRecord};

/// Flags of `rapr list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Output format: table or json.
    #[arg(long = "output", short = 'o', default_value = "table")]
    pub output: String,
}

fn as_json(r: &RunRecord, now: u64) -> serde_json::Value {
    json!({
        "appId": r.app_id,
        "httpPort": r.http_port,
        "grpcPort": r.grpc_port,
        "appPort": r.app_port,
        "command": r.command,
        "age": age(r.created, now),
        "created": r.created,
        "cliPid": r.cli_pid,
        "appPid": r.app_pid,
        "runTemplatePath": r.run_template_path.clone().unwrap_or_default(),
    })
}

fn table(records: &[RunRecord], now: u64) -> String {
    let mut rows = vec![["APP ID", "HTTP PORT", "GRPC PORT", "APP PORT", "COMMAND", "AGE", "PID"].map(String::from).to_vec()];
    for r in records {
        let app_port = if r.app_port == 0 { String::new() } else { r.app_port.to_string() };
        rows.push(vec![r.app_id.clone(), r.http_port.to_string(), r.grpc_port.to_string(), app_port, r.command.clone(), age(r.created, now), r.cli_pid.to_string()]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `rapr list`; returns the exit code.
pub fn run_list(args: &ListArgs) -> i32 {
    let records = list(&rapr_home());
    let now = now();
    match args.output.as_str() {
        "json" => {
            let all: Vec<_> = records.iter().map(|r| as_json(r, now)).collect();
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".into()));
        }
        "table" => {
            if records.is_empty() {
                println!("No Dapr instances found.");
            } else {
                print!("{}", table(&records, now));
            }
        }
        other => {
            eprintln!("invalid --output {other:?}: use table or json");
            return 1;
        }
    }
    0
}
