//! Hot reload of components (daprd v1.18's `HotReload`, on by default): the supervisor's side.
//!
//! The resource watcher (`sidecar/reload.rs`) hands over every component now on disk; this
//! compares them by name with the children the supervisor runs and, as daprd's components
//! reconciler does, leaves an unchanged one alone, closes a changed one and initialises it
//! again from its new spec, closes a removed one, and starts a new one. A changed or removed
//! component's old host drains on a task of its own (the mailbox never waits for it); a changed
//! one starts again only once its old host has stopped (`Retired`), so a store is never opened
//! twice at once. A start begun for a spec that has since been replaced is discarded by its
//! generation.

use std::time::Duration;

use ractor::ActorRef;

use super::{failed_resource, new_child, ComponentSupervisorMsg, ComponentSupervisorState};
use crate::components::starter::Running;
use crate::config::{ComponentSpec, ResourceError};

/// How a reload changes one component.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    Added(String),
    Changed(String),
    Removed(String),
}

/// What changed between the running specs and those on disk (pure: the unit tests' subject).
pub(super) fn diff<'a>(running: impl Iterator<Item = &'a ComponentSpec> + Clone, on_disk: &[ComponentSpec]) -> Vec<Change> {
    let mut changes = Vec::new();
    for spec in running.clone() {
        if !on_disk.iter().any(|s| s.name == spec.name) {
            changes.push(Change::Removed(spec.name.clone()));
        }
    }
    for spec in on_disk {
        match running.clone().find(|s| s.name == spec.name) {
            None => changes.push(Change::Added(spec.name.clone())),
            Some(old) if old != spec => changes.push(Change::Changed(spec.name.clone())),
            Some(_) => {}
        }
    }
    changes
}

/// Stops a retired host on its own task; `then` is sent once it has stopped.
fn retire(me: &ActorRef<ComponentSupervisorMsg>, running: Running, then: Option<ComponentSupervisorMsg>) {
    let me = me.clone();
    tokio::spawn(async move {
        // Drains the host's in-flight work before its store closes.
        let _ = running.cell().stop_and_wait(Some("reloaded".into()), Some(Duration::from_secs(10))).await;
        if let Some(msg) = then {
            let _ = me.send_message(msg);
        }
    });
}

impl ComponentSupervisorState {
    /// Applies the components now on disk; the caller publishes.
    pub(super) fn reconcile(&mut self, me: &ActorRef<ComponentSupervisorMsg>, specs: Vec<ComponentSpec>, load_errors: Vec<ResourceError>) {
        if self.stopping {
            return;
        }
        self.load_failures = load_errors.iter().map(failed_resource).collect();
        let changes = diff(self.children.values().map(|c| &c.spec), &specs);
        for change in changes {
            match change {
                Change::Removed(name) => {
                    tracing::info!(component = %name, "component removed from disk; closing it");
                    self.order.retain(|n| n != &name);
                    if let Some(running) = self.children.remove(&name).and_then(|c| c.running) {
                        retire(me, running, None);
                    }
                }
                Change::Added(name) | Change::Changed(name) => {
                    let Some(spec) = specs.iter().find(|s| s.name == name) else { continue };
                    let mut child = match new_child(spec, &self.args.app_id) {
                        Ok(child) => child,
                        Err(status) => {
                            self.load_failures.push(*status);
                            if let Some(running) = self.children.remove(&name).and_then(|c| c.running) {
                                retire(me, running, None);
                            }
                            self.order.retain(|n| n != &name);
                            continue;
                        }
                    };
                    let old = self.children.remove(&name);
                    let supported = !child.first_done;
                    match old {
                        Some(mut old) => {
                            tracing::info!(component = %name, "component changed on disk; closing it to load it again");
                            child.generation = old.generation + 1;
                            if let (Some(running), true) = (old.running.take(), supported) {
                                child.starting = true;
                                retire(me, running, Some(ComponentSupervisorMsg::Retired { name: name.clone(), generation: child.generation }));
                                self.children.insert(name, child);
                                continue;
                            } else if let Some(running) = old.running.take() {
                                retire(me, running, None);
                            }
                        }
                        None => {
                            tracing::info!(component = %name, "component added on disk; starting it");
                            // Secret stores first, as at start.
                            if spec.category() == "secretstores" {
                                self.order.insert(0, name.clone());
                            } else {
                                self.order.push(name.clone());
                            }
                        }
                    }
                    self.children.insert(name.clone(), child);
                    if supported {
                        self.start(me, name);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, ty: &str) -> ComponentSpec {
        let yaml = format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  version: v1\n");
        let mut r = crate::config::Resources::default();
        r.add_file(std::path::Path::new("c.yaml"), &yaml, "app");
        r.components.remove(0)
    }

    #[test]
    fn unchanged_components_are_left_alone_and_the_rest_classified() {
        let running = [spec("same", "state.in-memory"), spec("edited", "state.in-memory"), spec("gone", "pubsub.in-memory")];
        let on_disk = [spec("same", "state.in-memory"), spec("edited", "state.sqlite"), spec("new", "pubsub.in-memory")];
        let changes = diff(running.iter(), &on_disk);
        assert_eq!(changes, vec![Change::Removed("gone".into()), Change::Changed("edited".into()), Change::Added("new".into())]);
        assert!(diff(running.iter(), &running).is_empty());
    }
}
