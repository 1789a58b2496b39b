//! `rapr run -f FILE`: a multi-app run file, parsed as the Dapr CLI 1.18 parses it
//! (pkg/runfileconfig):
//!
//! ```yaml
//! version: 1
//! common:                        # shared: an app's own value wins, `env` is merged
//!   resourcesPath: ./res         # relative to the run file's folder
//!   env: { DEBUG: true }
//! apps:
//!   - appDirPath: ./orders       # required; the app's working directory; default appID
//!     appPort: 8080
//!     resourcesPaths: [./comp]   # relative to appDirPath
//!     appLogDestination: file    # console | file | fileAndConsole (default)
//!     daprdLogDestination: console  # console | file (default) | fileAndConsole
//!     command: ["python3", "app.py"]
//! ```
//! - Paths in `common` resolve against the run file's folder, an app's against its `appDirPath`
//!   (`~` expanded); each must exist.
//! - Resources: the app's `resourcesPaths`/`resourcesPath`, else `<appDirPath>/.dapr/resources`,
//!   else `common`'s, else rapr's defaults. Config: the app's `configFilePath`, else
//!   `<appDirPath>/.dapr/config.yaml`, else `common`'s.
//! - Log files: `<appDirPath>/.dapr/logs/<appID>_app_<yyyyMMddHHmmss>.log` and `…_daprd_….log`
//!   (stamped in UTC).
//! - Keys the CLI knows but rapr cannot use (`runtimePath`, the Kubernetes `container*` keys)
//!   and keys neither knows are warned about, never silently dropped.
//!
//! How the apps then run and stop is multi_run.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::app_process::AppOutput;
use super::launch::{workers_per_sidecar, AppLaunch, RecordExtras};
use super::run::{default_config, default_resources, port_or_free, RunArgs};
use super::run_flags::{AppEnv, ChannelOptions, SidecarArgv};
use super::status;
use crate::runtime::logging::{level_of, LineSink};
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
    app_port: Option<i32>,
    app_protocol: Option<String>,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, yaml_serde::Value>>,
    resources_path: Option<String>,
    resources_paths: Option<Paths>,
    config_file_path: Option<String>,
    log_level: Option<String>,
    #[serde(rename = "daprHTTPPort")]
    dapr_http_port: Option<i32>,
    #[serde(rename = "daprGRPCPort")]
    dapr_grpc_port: Option<i32>,
    #[serde(rename = "daprInternalGRPCPort")]
    dapr_internal_grpc_port: Option<i32>,
    metrics_port: Option<i32>,
    profile_port: Option<i32>,
    unix_domain_socket: Option<String>,
    daprd_log_destination: Option<String>,
    app_log_destination: Option<String>,
    #[serde(flatten)]
    channel: ChannelOptions,
    /// Every other key, warned about.
    #[serde(flatten)]
    other: BTreeMap<String, yaml_serde::Value>,
}

/// A multi-app run file.
#[derive(Debug, Clone, Deserialize)]
struct RunFile {
    version: Option<yaml_serde::Value>,
    name: Option<String>,
    #[serde(default)]
    common: AppEntry,
    #[serde(default)]
    apps: Vec<AppEntry>,
    #[serde(flatten)]
    other: BTreeMap<String, yaml_serde::Value>,
}

/// Keys of the CLI's run file that rapr reads but does not use.
const UNUSED_KEYS: [(&str, &str); 4] = [
    ("runtimePath", "the sidecar is rapr itself"),
    ("containerImage", "Kubernetes only"),
    ("containerImagePullPolicy", "Kubernetes only"),
    ("createService", "Kubernetes only"),
];

fn warn_keys(other: &BTreeMap<String, yaml_serde::Value>, section: &str) {
    for key in other.keys() {
        match UNUSED_KEYS.iter().find(|(k, _)| k == key) {
            Some((_, why)) => status::warning(&format!("{section}: {key} is not used ({why})")),
            None => status::warning(&format!("{section}: unknown key {key} is ignored")),
        }
    }
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
    let parsed: RunFile = yaml_serde::from_str(&raw).map_err(|e| format!("error in parsing the provided app config file: {e}"))?;
    if parsed.version.as_ref().map(text).filter(|v| !v.is_empty() && v != "0").is_none() {
        return Err("required field 'version' not found in the provided run template file".into());
    }
    if parsed.apps.iter().any(|a| a.app_dir_path.as_deref().is_none_or(str::is_empty)) {
        return Err("required field 'appDirPath' not found in the provided app config file".into());
    }
    Ok(parsed)
}

/// `p` made absolute against `base` (`~` is the home folder); it must exist.
fn resolve_path(base: &Path, p: &str) -> Result<PathBuf, String> {
    let expanded = match p.strip_prefix("~/").or((p == "~").then_some("")) {
        Some(rest) => dirs::home_dir().unwrap_or_default().join(rest),
        None => PathBuf::from(p),
    };
    let abs = clean(&if expanded.is_absolute() { expanded } else { base.join(expanded) });
    if abs.exists() {
        Ok(abs)
    } else {
        Err(format!("error in validating the path {}: no such file or directory", abs.display()))
    }
}

/// `a/./b/../c` → `a/c`, as Go's `filepath.Join` cleans the CLI's paths.
fn clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn resources_of(e: &AppEntry, base: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in e.resources_paths.iter().flat_map(Paths::list).chain(e.resources_path.clone().filter(|p| !p.trim().is_empty())) {
        out.push(resolve_path(base, &p)?);
    }
    Ok(out)
}

/// Where a log goes, as the run file says (`default` when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogDest {
    Console,
    File,
    FileAndConsole,
}

fn log_dest(v: Option<&str>, default: LogDest) -> Result<LogDest, String> {
    match v {
        None | Some("") => Ok(default),
        Some("console") => Ok(LogDest::Console),
        Some("file") => Ok(LogDest::File),
        Some("fileAndConsole") => Ok(LogDest::FileAndConsole),
        Some(other) => Err(format!("invalid log destination type: {other}")),
    }
}

/// `<appDir>/.dapr/logs/<appID>_<kind>_<yyyyMMddHHmmss>.log`, created.
fn log_file(dir: &Path, app_id: &str, kind: &str) -> Result<(PathBuf, Arc<std::fs::File>), String> {
    let logs = dir.join(".dapr").join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    // UTC: the CLI stamps local time, which the `time` crate cannot read safely in a threaded
    // process.
    let now = time::OffsetDateTime::now_utc();
    let stamp = now.format(time::macros::format_description!("[year][month][day][hour][minute][second]")).unwrap_or_default();
    let path = logs.join(format!("{app_id}_{kind}_{stamp}.log"));
    let f = std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok((path, Arc::new(f)))
}

/// Turns the file into launches: paths resolved, `common` folded in, ports chosen, log files
/// opened.
fn plan(rf: &RunFile, file: &Path, log_as_json: bool) -> Result<Vec<AppLaunch>, String> {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = std::fs::canonicalize(&base).unwrap_or(base);
    warn_keys(&rf.other, "run file");
    warn_keys(&rf.common.other, "common");
    let common_resources = resources_of(&rf.common, &base)?;
    let common_config = rf.common.config_file_path.as_deref().filter(|p| !p.is_empty()).map(|p| resolve_path(&base, p)).transpose()?;
    let mut out = Vec::new();
    for app in &rf.apps {
        let dir = resolve_path(&base, app.app_dir_path.as_deref().unwrap_or_default())?;
        let app_id = app.app_id.clone().filter(|a| !a.is_empty()).or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
        warn_keys(&app.other, &format!("app {app_id}"));
        status::info(&format!("Validating config and starting app {app_id:?}"));
        let own = resources_of(app, &dir)?;
        let local = dir.join(".dapr").join("resources");
        let resources = if !own.is_empty() {
            own
        } else if local.is_dir() {
            vec![local]
        } else if !common_resources.is_empty() {
            common_resources.clone()
        } else {
            vec![default_resources()?]
        };
        let local_config = dir.join(".dapr").join("config.yaml");
        let config = match app.config_file_path.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Some(resolve_path(&dir, p)?),
            None if local_config.is_file() => Some(local_config),
            None => common_config.clone().or_else(default_config),
        };
        let channel = app.channel.or(&rf.common.channel);
        let protocol = channel.app_protocol(app.app_protocol.as_deref().or(rf.common.app_protocol.as_deref()));
        let app_port = u16::try_from(app.app_port.unwrap_or(0).max(0)).map_err(|_| format!("invalid appPort of {app_id}"))?;
        let (http_port, grpc_port, metrics_port) = (port_or_free(app.dapr_http_port)?, port_or_free(app.dapr_grpc_port)?, port_or_free(app.metrics_port)?);
        let ports = [http_port, grpc_port, port_or_free(app.dapr_internal_grpc_port)?, metrics_port];
        let mut argv = SidecarArgv::with_base(super::run_flags::SidecarBase { app_id: &app_id, app_port, protocol: &protocol, ports });
        argv.flag("log-level", app.log_level.as_deref().or(rf.common.log_level.as_deref()).filter(|l| !l.is_empty()).unwrap_or("info"));
        if log_as_json {
            argv.flag("log-as-json", true);
        }
        for r in &resources {
            argv.flag("resources-path", r.display());
        }
        argv.opt("config", config.as_ref().map(|c| c.display()));
        argv.opt("unix-domain-socket", app.unix_domain_socket.as_deref().filter(|s| !s.is_empty()));
        if channel.enable_profiling == Some(true) {
            argv.flag("profile-port", port_or_free(app.profile_port)?);
        }
        channel.push(&mut argv);
        let flags = argv.parse().map_err(|e| format!("app {app_id}: {e}"))?;
        let mut env: BTreeMap<String, String> = rf.common.env.iter().flatten().map(|(k, v)| (k.clone(), text(v))).collect();
        env.extend(app.env.iter().flatten().map(|(k, v)| (k.clone(), text(v))));
        let env: Vec<(String, String)> = env.into_iter().collect();
        let env = AppEnv { app_id: &app_id, app_channel_address: &flags.app_channel_address, app_port, http_port, grpc_port, metrics_port, app_protocol: &protocol }.vars(&env);
        let command = app.command.clone().or_else(|| rf.common.command.clone()).unwrap_or_default();
        let mut record = RecordExtras { run_template_path: Some(file.display().to_string()), run_template_name: rf.name.clone(), ..Default::default() };
        let daprd_dest = log_dest(app.daprd_log_destination.as_deref().or(rf.common.daprd_log_destination.as_deref()), LogDest::File)?;
        let file_log = match daprd_dest {
            LogDest::Console => None,
            _ => {
                let (path, file) = log_file(&dir, &app_id, "daprd")?;
                record.daprd_log_path = Some(path.display().to_string());
                Some(file)
            }
        };
        let sidecar_log = Some(LineSink { file: file_log, console: daprd_dest != LogDest::File, level: level_of(&flags.log_level) });
        let output = if command.is_empty() {
            status::warning(&format!("No application command found for app {app_id:?} present in {}", file.display()));
            AppOutput::Inherit
        } else {
            let app_dest = log_dest(app.app_log_destination.as_deref().or(rf.common.app_log_destination.as_deref()), LogDest::FileAndConsole)?;
            let file = match app_dest {
                LogDest::Console => None,
                _ => {
                    let (path, file) = log_file(&dir, &app_id, "app")?;
                    record.app_log_path = Some(path.display().to_string());
                    Some(file)
                }
            };
            AppOutput::Prefixed { prefix: format!("== APP - {app_id} == "), console: app_dest != LogDest::File, file }
        };
        out.push(AppLaunch { app_id, flags, command, env, dir: Some(dir), output, sidecar_log, record, workers: workers_per_sidecar(rf.apps.len()) });
    }
    Ok(out)
}

/// The log level `rapr run -f` starts its logging with: the most verbose of its apps' (each
/// sidecar then keeps to its own), else `--log-level`.
pub fn log_level_for(path: &Path, given: &str) -> String {
    let Ok(rf) = load(&resolve(path)) else { return given.to_string() };
    let levels = rf.apps.iter().map(|a| a.log_level.as_deref().or(rf.common.log_level.as_deref()).unwrap_or("info"));
    levels.max_by_key(|l| level_of(l)).unwrap_or(given).to_string()
}

/// `rapr run -f`; returns the exit code.
pub async fn run_file(path: &Path, args: &RunArgs) -> i32 {
    // Installed first: a SIGTERM while the apps start still stops the run cleanly.
    let signals = Signals::install();
    // The process filter is the most verbose app's; rapr run's own lines keep to --log-level.
    crate::runtime::logging::set_other_threads_level(level_of(&args.log_level));
    let file = resolve(path);
    let planned = load(&file).and_then(|rf| if rf.apps.is_empty() { Err("No apps to run".into()) } else { plan(&rf, &file, args.log_as_json) });
    match planned {
        Ok(mut launches) => {
            super::control_plane::attach(&mut launches, args.data_dir.as_deref(), args.placement_port).await;
            super::multi_run::run(launches, signals).await
        }
        Err(e) => {
            status::failure(&format!("Error getting apps from config file: {e}"));
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
#[path = "run_file_tests.rs"]
mod tests;
