//! `ResourceWatcher`: hot reload of the resource folders, as daprd v1.18 does by default
//! (feature `HotReload`, on unless a Configuration switches it off).
//!
//! It watches every `--resources-path` (a folder, or a file's folder) and, a moment after the
//! last change (edits come in bursts), and every minute as a backup for a missed event (daprd's
//! reconcile interval), reads the resources again and compares them with what runs:
//! - components and declarative subscriptions are applied in place, as daprd's reconcilers:
//!   the `ComponentSupervisor` closes and re-initialises a changed component, closes a removed
//!   one, starts a new one; the `SubscriptionManager` does the same for subscriptions;
//! - a changed `Resiliency` or `HTTPEndpoint` needs a whole new runtime, as in daprd (whose
//!   reconciler sends itself SIGHUP): the sidecar drains, stops and starts again in the same
//!   process (`RestartHandle`).
//!
//! Reading the files runs on a blocking task and comes back as a message, so the mailbox only
//! ever holds short work. A watcher that cannot start (no inotify) logs and leaves the sidecar
//! running without hot reload.

use std::path::PathBuf;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::load::load_resources;
use crate::components::metadata::templates::{expand_components, Identity};
use crate::components::supervisor::ComponentSupervisorClient;
use crate::config::http_endpoint::PendingHttpEndpoint;
use crate::config::{ComponentSpec, Resources};
use crate::pubsub::manager::SubscriptionManagerClient;
use crate::pubsub::Subscription;
use crate::runtime::shutdown::RestartHandle;

/// How long after a change the folders are read (edits and `cp` come as bursts of events).
const SETTLE: Duration = Duration::from_millis(250);

/// What the running sidecar was started from, to compare each reload with.
#[derive(Clone, Default)]
pub struct Loaded {
    /// Components, their metadata templates expanded.
    pub components: Vec<ComponentSpec>,
    /// Declarative subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// `Resiliency` documents.
    pub resiliency: Vec<(PathBuf, yaml_serde::Value)>,
    /// `HTTPEndpoint`s.
    pub http_endpoints: Vec<PendingHttpEndpoint>,
    /// Resources that failed to load, as shown.
    pub errors: Vec<String>,
}

impl Loaded {
    /// What `resources` holds (before the root hands its parts out).
    pub fn of(resources: &Resources) -> Self {
        Self {
            components: resources.components.clone(),
            subscriptions: resources.subscriptions.clone(),
            resiliency: resources.resiliency.clone(),
            http_endpoints: resources.http_endpoints.clone(),
            errors: resources.errors.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Messages of the watcher.
pub enum ResourceWatcherMsg {
    /// Something changed under a watched folder.
    Changed,
    /// Time to read the folders (the burst settled, or the backup interval passed).
    Read,
    /// The folders were read.
    Loaded(Box<Resources>),
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for ResourceWatcherMsg {}

/// What the watcher is started with.
pub struct ResourceWatcherArgs {
    /// `--resources-path` entries.
    pub paths: Vec<PathBuf>,
    /// This app's id (scopes, metadata templates).
    pub app_id: String,
    /// What runs now.
    pub loaded: Loaded,
    /// Applies component changes.
    pub components: ComponentSupervisorClient,
    /// Applies subscription changes.
    pub subscriptions: SubscriptionManagerClient,
    /// Asks for a whole new runtime.
    pub restart: RestartHandle,
    /// The backup reconcile period (`--hot-reload-reconcile-interval`, daprd's 60 s by default).
    pub reconcile_every: Duration,
}

/// The process.
pub struct ResourceWatcher;

/// Its state.
pub struct ResourceWatcherState {
    args: ResourceWatcherArgs,
    /// Kept alive for as long as the folders are watched.
    _watcher: Option<notify::RecommendedWatcher>,
    /// A read is scheduled or running.
    reading: bool,
    /// A change arrived while reading: read again after.
    again: bool,
    /// A reload of the whole runtime was asked for: nothing more to apply here.
    restarting: bool,
}

/// Folders to watch: each folder path, and each file path's folder.
fn watch_targets(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let dir = if p.is_file() { p.parent().map(|d| if d.as_os_str().is_empty() { PathBuf::from(".") } else { d.to_path_buf() }) } else { Some(p.clone()) };
        if let Some(d) = dir.filter(|d| d.is_dir()) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// Only YAML files are resources: a store's own files beside them (a SQLite database written on
/// every save) must not set off a read.
fn is_resource_file(p: &std::path::Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn start_watching(me: &ActorRef<ResourceWatcherMsg>, paths: &[PathBuf]) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let targets = watch_targets(paths);
    if targets.is_empty() {
        return None;
    }
    let me = me.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access() && (e.paths.is_empty() || e.paths.iter().any(|p| is_resource_file(p)))) {
            let _ = me.cast(ResourceWatcherMsg::Changed);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the resource folders; hot reload is off");
            return None;
        }
    };
    for t in &targets {
        if let Err(e) = watcher.watch(t, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(folder = %t.display(), error = %e, "cannot watch a resource folder; its changes are picked up every minute");
        }
    }
    tracing::info!(folders = ?targets, "watching resource folders for hot reload");
    Some(watcher)
}

impl ResourceWatcherState {
    /// Applies what was read; returns whether the whole runtime must reload.
    async fn apply(&mut self, mut read: Resources) -> bool {
        let loaded = &mut self.args.loaded;
        if read.resiliency != loaded.resiliency {
            tracing::info!("a Resiliency resource changed on disk; reloading the runtime");
            return true;
        }
        if read.http_endpoints != loaded.http_endpoints {
            tracing::info!("an HTTPEndpoint resource changed on disk; reloading the runtime");
            return true;
        }
        let errors: Vec<String> = read.errors.iter().map(ToString::to_string).collect();
        if read.components != loaded.components || errors != loaded.errors {
            self.args.components.reconcile(read.components.clone(), std::mem::take(&mut read.errors)).await;
            loaded.components = read.components;
            loaded.errors = errors;
        }
        if read.subscriptions != loaded.subscriptions {
            self.args.subscriptions.reconcile_declared(read.subscriptions.clone()).await;
            loaded.subscriptions = read.subscriptions;
        }
        false
    }
}

impl Actor for ResourceWatcher {
    type Msg = ResourceWatcherMsg;
    type State = ResourceWatcherState;
    type Arguments = ResourceWatcherArgs;

    async fn pre_start(&self, me: ActorRef<Self::Msg>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        let watcher = start_watching(&me, &args.paths);
        // The backup reconcile; its handle is not needed (it ends with this process).
        drop(me.send_interval(args.reconcile_every, || ResourceWatcherMsg::Read));
        Ok(ResourceWatcherState { args, _watcher: watcher, reading: false, again: false, restarting: false })
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if st.restarting {
            return Ok(());
        }
        match msg {
            ResourceWatcherMsg::Changed => {
                if st.reading {
                    st.again = true;
                } else {
                    st.reading = true;
                    drop(me.send_after(SETTLE, || ResourceWatcherMsg::Read));
                }
            }
            ResourceWatcherMsg::Read => {
                st.reading = true;
                let (paths, app_id) = (st.args.paths.clone(), st.args.app_id.clone());
                let me = me.clone();
                tokio::task::spawn_blocking(move || {
                    let mut read = load_resources(&paths, &app_id);
                    expand_components(&mut read, &Identity::from_env(&app_id));
                    // As at start: resiliency errors show like other resource errors.
                    let (_, resiliency_errors) = crate::resiliency::Resiliency::load(&read.resiliency, &app_id);
                    read.errors.extend(resiliency_errors);
                    let _ = me.cast(ResourceWatcherMsg::Loaded(Box::new(read)));
                });
            }
            ResourceWatcherMsg::Loaded(read) => {
                if st.apply(*read).await {
                    st.restarting = true;
                    st.args.restart.trigger();
                    return Ok(());
                }
                st.reading = false;
                if std::mem::take(&mut st.again) {
                    st.reading = true;
                    drop(me.send_after(SETTLE, || ResourceWatcherMsg::Read));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_folders_and_the_folders_of_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "").unwrap();
        let missing = dir.path().join("missing");
        let targets = watch_targets(&[dir.path().to_path_buf(), file, missing]);
        assert_eq!(targets, vec![dir.path().to_path_buf()]);
    }
}
