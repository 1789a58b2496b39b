//! `rapr run -f FILE`: a multi-app run file in the shape of `dapr run -f dapr.yaml`.
//!
//! ```yaml
//! version: 1
//! common:                      # shared by every app; an app's own keys win
//!   resourcesPath: ./res       # or resourcesPaths: "a,b" / [a, b]
//!   env: { DEBUG: true }       # merged, the app's values win
//! apps:
//!   - appID: orders            # default: the base name of appDirPath
//!     appDirPath: ./orders     # the app's working directory
//!     appPort: 8080
//!     command: ["python3", "app.py"]
//! ```
//! Relative paths are resolved against the file's folder. Without resources, an app uses
//! `<appDirPath>/.dapr/resources` when it exists, else rapr's defaults; likewise
//! `<appDirPath>/.dapr/config.yaml`. Each app gets its own in-process sidecar on free ports
//! (unless `daprHTTPPort`/`daprGRPCPort` are set) and its output is prefixed `== APP - <appID> == `.
//! How the apps then run and stop (one alone with `rapr stop --app-id`, all with SIGINT, SIGTERM
//! or `rapr stop -f`) is multi_run.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::default_sidecar_args;
use super::run::{default_resources, free_port, workers_per_sidecar, AppLaunch, ChannelOptions, RunArgs};
use crate::sidecar::Signals;

/// One or several paths: `"a,b"` or `[a, b]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Paths {
    fn list(&self) -> Vec<String> {
        match self {
            Paths::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
            Paths::Many(v) => v.clone(),
        }
    }
}

/// An app of the run file (also the shape of `common`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppEntry {
    #[serde(rename = "appID")]
    app_id: Option<String>,
    app_dir_path: Option<String>,
    app_port: Option<u16>,
    app_protocol: Option<String>,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, yaml_serde::Value>>,
    resources_path: Option<String>,
    resources_paths: Option<Paths>,
    config_file_path: Option<String>,
    #[serde(rename = "daprHTTPPort")]
    dapr_http_port: Option<u16>,
    #[serde(rename = "daprGRPCPort")]
    dapr_grpc_port: Option<u16>,
    #[serde(rename = "daprInternalGRPCPort")]
    dapr_internal_grpc_port: Option<u16>,
    #[serde(flatten)]
    channel: ChannelOptions,
}

impl AppEntry {
    fn resources(&self) -> Option<Vec<String>> {
        self.resources_paths.as_ref().map(Paths::list).or_else(|| self.resources_path.clone().map(|p| vec![p])).filter(|v| !v.is_empty())
    }
}

/// A multi-app run file.
#[derive(Debug, Clone, Deserialize)]
struct RunFile {
    version: Option<yaml_serde::Value>,
    #[serde(default)]
    common: AppEntry,
    #[serde(default)]
    apps: Vec<AppEntry>,
}

fn text(v: &yaml_serde::Value) -> String {
    match v {
        yaml_serde::Value::String(s) => s.clone(),
        yaml_serde::Value::Null => String::new(),
        other => yaml_serde::to_string(other).map(|s| s.trim_end().to_string()).unwrap_or_default(),
    }
}

/// The file named by `-f`: the path itself, or `dapr.yaml` inside a folder.
fn locate(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("dapr.yaml")
    } else {
        path.to_path_buf()
    }
}

fn load(file: &Path) -> Result<RunFile, String> {
    let raw = std::fs::read_to_string(file).map_err(|e| format!("cannot read the run file {}: {e}", file.display()))?;
    let parsed: RunFile = yaml_serde::from_str(&raw).map_err(|e| format!("invalid run file {}: {e}", file.display()))?;
    if parsed.version.as_ref().map(text).as_deref().is_some_and(|v| v != "1") {
        return Err(format!("invalid run file {}: only version 1 is supported", file.display()));
    }
    if parsed.apps.is_empty() {
        return Err(format!("invalid run file {}: no apps", file.display()));
    }
    Ok(parsed)
}

/// Turns the file into launches: ports chosen, paths resolved, `common` folded in.
fn plan(rf: &RunFile, file: &Path) -> Result<Vec<AppLaunch>, String> {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let abs = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
    let mut out = Vec::new();
    for app in &rf.apps {
        let dir = app.app_dir_path.as_deref().or(rf.common.app_dir_path.as_deref()).map(abs).unwrap_or_else(|| base.clone());
        let app_id = app
            .app_id
            .clone()
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| format!("an app of {} has neither appID nor appDirPath", file.display()))?;
        let command = app.command.clone().or_else(|| rf.common.command.clone()).filter(|c| !c.is_empty()).ok_or_else(|| format!("app {app_id} has no command"))?;
        let resources = match app.resources().or_else(|| rf.common.resources()) {
            Some(paths) => paths.iter().map(|p| abs(p)).collect(),
            None if dir.join(".dapr").join("resources").is_dir() => vec![dir.join(".dapr").join("resources")],
            None => vec![default_resources()?],
        };
        let config = app.config_file_path.as_deref().or(rf.common.config_file_path.as_deref()).map(abs).or_else(|| Some(dir.join(".dapr").join("config.yaml")).filter(|p| p.is_file()));
        let port = |p: Option<u16>| p.map(Ok).unwrap_or_else(free_port).map_err(|e| format!("cannot find a free port: {e}"));
        let mut flags = default_sidecar_args();
        flags.app_id = app_id.clone();
        flags.app_port = app.app_port.or(rf.common.app_port).unwrap_or(0);
        flags.app_protocol = app.app_protocol.clone().or_else(|| rf.common.app_protocol.clone()).unwrap_or_else(|| "http".into());
        flags.dapr_http_port = port(app.dapr_http_port)?;
        flags.dapr_grpc_port = port(app.dapr_grpc_port)?;
        flags.dapr_internal_grpc_port = app.dapr_internal_grpc_port.unwrap_or(0);
        flags.resources_path = resources;
        flags.config = config;
        flags.dapr_listen_addresses = "127.0.0.1".into();
        flags.metrics_port = 0;
        rf.common.channel.apply(&mut flags);
        app.channel.apply(&mut flags);
        let mut env: BTreeMap<String, String> = rf.common.env.iter().flatten().map(|(k, v)| (k.clone(), text(v))).collect();
        env.extend(app.env.iter().flatten().map(|(k, v)| (k.clone(), text(v))));
        out.push(AppLaunch {
            prefix: format!("== APP - {app_id} == "),
            app_id,
            flags,
            command,
            env: env.into_iter().collect(),
            dir: Some(dir),
            run_file: Some(file.display().to_string()),
            control: None,
            workers: workers_per_sidecar(rf.apps.len()),
        });
    }
    Ok(out)
}

/// `rapr run -f`; returns the exit code.
pub async fn run_file(path: &Path, _args: &RunArgs) -> i32 {
    // Installed first: a SIGTERM while the apps start still stops the run cleanly.
    let signals = Signals::install();
    let file = resolve(path);
    match load(&file).and_then(|rf| plan(&rf, &file)) {
        Ok(launches) => super::multi_run::run(launches, signals).await,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// The run file `-f PATH` names, made absolute: the name its apps' records give it, which
/// `rapr stop -f` matches.
pub fn resolve(path: &Path) -> PathBuf {
    let file = locate(path);
    std::fs::canonicalize(&file).unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_keys_fold_into_apps() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dapr.yaml");
        let yaml = "version: 1\ncommon:\n  resourcesPath: ./res\n  env:\n    DEBUG: true\n    WHO: common\napps:\n  - appDirPath: ./orders\n    appPort: 8080\n    command: [\"sh\", \"-c\", \"true\"]\n    env:\n      WHO: orders\n    appMaxConcurrency: 2\n  - appID: other\n    appDirPath: ./x\n    resourcesPaths: [\"/abs\"]\n    daprHTTPPort: 3999\n    command: [\"true\"]\n";
        std::fs::write(&file, yaml).unwrap();
        let rf = load(&file).unwrap();
        let l = plan(&rf, &file).unwrap();
        assert_eq!(l[0].app_id, "orders");
        assert_eq!(l[0].flags.app_port, 8080);
        assert_eq!(l[0].flags.app_max_concurrency, 2);
        assert_eq!(l[0].flags.resources_path, vec![dir.path().join("res")]);
        assert_eq!(l[0].env, vec![("DEBUG".into(), "true".into()), ("WHO".into(), "orders".into())]);
        assert_eq!(l[0].dir.as_deref(), Some(dir.path().join("orders").as_path()));
        assert_eq!(l[0].prefix, "== APP - orders == ");
        assert_eq!(l[1].app_id, "other");
        assert_eq!(l[1].flags.dapr_http_port, 3999);
        assert_eq!(l[1].flags.resources_path, vec![PathBuf::from("/abs")]);
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dapr.yaml");
        std::fs::write(&file, "version: 2\napps:\n  - appID: a\n    command: [x]\n").unwrap();
        assert!(load(&file).unwrap_err().contains("version 1"));
        std::fs::write(&file, "version: 1\napps: []\n").unwrap();
        assert!(load(&file).unwrap_err().contains("no apps"));
        assert_eq!(locate(dir.path()), file);
    }
}
