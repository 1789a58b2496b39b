//! Turns the `Resiliency` documents found on the resource paths into one merged set of policies.
//!
//! Never fails as a whole: a document out of scope is skipped; one that does not parse is an
//! error naming its file and resource, and the rest still loads. A target naming an unknown
//! policy keeps its target with nothing for that part, as daprd (whose lookups of an unknown
//! name give no policy); rapr also logs a warning naming the target and the policy, where
//! daprd is silent. It is not a load error: the sidecar stays healthy, as daprd does. A retry policy named after a built-in one redefines it under daprd's
//! rules (`super::builtin`).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::builtin;
use super::spec::{self, PolicyNames, ResiliencySpec};
use super::Policies;
use crate::config::ResourceError;

/// Loads `documents` (file, YAML value) for `app_id`.
pub(crate) fn load(documents: &[(PathBuf, yaml_serde::Value)], app_id: &str) -> (Policies, Vec<ResourceError>) {
    let mut errors = Vec::new();
    let mut specs = Vec::new();
    for (file, value) in documents {
        let (name, scopes) = spec::name_and_scopes(value);
        if !scopes.is_empty() && !scopes.iter().any(|s| s == app_id) {
            tracing::info!(resiliency = %name, "resiliency is scoped to other apps; not loaded");
            continue;
        }
        match spec::parse(value.clone()) {
            Ok(s) => specs.push((file.as_path(), s)),
            Err(reason) => errors.push(error(file, &name, reason)),
        }
    }
    let mut p = Policies::default();
    for (_, s) in &specs {
        merge_policies(&mut p, s);
    }
    let is_default = |n: &String| n.starts_with("Default");
    p.has_defaults = p.timeouts.keys().any(is_default) || p.retries.keys().any(is_default) || p.breakers.keys().any(is_default);
    for (file, s) in specs {
        let warn = |target: String, reason: String| {
            tracing::warn!(resiliency = %s.name, file = %file.display(), "target {target}: {reason}; that part of the target has no policy");
        };
        let err = |target: String, reason: String| error(file, &s.name, format!("target {target}: {reason}"));
        for (app, a) in s.apps {
            if let Err(reason) = check(&p, &a.names) {
                warn(format!("apps.{app}"), reason);
            }
            if let Some(size) = a.circuit_breaker_cache_size.filter(|n| *n > 0) {
                p.app_cache_sizes.insert(app.clone(), usize::try_from(size).unwrap_or(usize::MAX));
            }
            p.apps.insert(app, a.names);
        }
        for (component, c) in s.components {
            let checked = check(&p, &c.outbound).map_err(|e| ("outbound", e)).and_then(|()| check(&p, &c.inbound).map_err(|e| ("inbound", e)));
            if let Err((dir, reason)) = checked {
                warn(format!("components.{component}.{dir}"), reason);
            }
            p.components.insert(component, c);
        }
        for (actor, a) in s.actors {
            let scope = match (a.names.circuit_breaker.as_deref(), a.circuit_breaker_scope.as_deref()) {
                (Some(_), None | Some("")) => Err("actor circuit breakers must include scope".to_string()),
                (_, Some(s)) if !matches!(s, "type" | "id" | "both" | "") => Err(format!("unknown circuit breaker scope {s:?}")),
                _ => Ok(()),
            };
            match scope.and_then(|()| check(&p, &a.names)) {
                Ok(()) => {
                    p.actors.insert(actor, a);
                }
                Err(reason) => errors.push(err(format!("actors.{actor}"), reason)),
            }
        }
        tracing::info!(resiliency = %s.name, file = %file.display(), "loaded resiliency configuration");
        p.resources.push(s.name);
    }
    if !p.actors.is_empty() {
        tracing::warn!(actor_types = p.actors.len(), "resiliency actor targets are accepted but not applied by rapr yet");
    }
    (p, errors)
}

fn merge_policies(p: &mut Policies, s: &ResiliencySpec) {
    let overridden = |kind: &str, name: &str| {
        tracing::warn!(resiliency = %s.name, policy = %name, kind, "a policy of this name was already loaded; the later one wins");
    };
    for (name, t) in &s.timeouts {
        if p.timeouts.insert(name.clone(), *t).is_some() {
            overridden("timeout", name);
        }
    }
    for (name, r) in &s.retries {
        let Some(r) = builtin::user_retry(&s.name, name, (**r).clone()) else { continue };
        if p.retries.insert(name.clone(), Arc::new(r)).is_some() {
            overridden("retry", name);
        }
    }
    for (name, b) in &s.circuit_breakers {
        if p.breakers.insert(name.clone(), b.clone()).is_some() {
            overridden("circuitBreaker", name);
        }
    }
}

fn check(p: &Policies, names: &PolicyNames) -> Result<(), String> {
    fn known(kind: &str, name: &Option<String>, exists: impl Fn(&str) -> bool) -> Result<(), String> {
        match name.as_deref() {
            Some(n) if !n.is_empty() && !exists(n) => Err(format!("unknown {kind} policy {n:?}")),
            _ => Ok(()),
        }
    }
    known("timeout", &names.timeout, |n| p.timeouts.contains_key(n))?;
    known("retry", &names.retry, |n| p.retries.contains_key(n))?;
    known("circuitBreaker", &names.circuit_breaker, |n| p.breakers.contains_key(n))
}

fn error(file: &Path, name: &str, reason: String) -> ResourceError {
    let name = if name.is_empty() { "(unnamed)" } else { name };
    ResourceError { file: file.to_path_buf(), component: None, reason: format!("resiliency {name}: {reason}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(texts: &[&str]) -> Vec<(PathBuf, yaml_serde::Value)> {
        texts.iter().enumerate().map(|(i, t)| (PathBuf::from(format!("r{i}.yaml")), yaml_serde::from_str(t).unwrap())).collect()
    }

    fn res(name: &str, body: &str) -> String {
        format!("apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: {name}\n{body}")
    }

    #[test]
    fn unknown_policy_names_leave_their_target_without_that_policy() {
        let a = res("a", "spec:\n  policies:\n    timeouts:\n      t: 1s\n  targets:\n    apps:\n      good:\n        timeout: t\n      bad:\n        timeout: t\n        retry: nosuch\n    components:\n      store:\n        inbound:\n          circuitBreaker: nocb\n");
        let (p, errors) = load(&docs(&[&a]), "me");
        assert!(p.apps.contains_key("good") && p.apps.contains_key("bad"), "the target stays (daprd's PolicyDefined is true)");
        assert!(p.components.contains_key("store"));
        assert!(errors.is_empty(), "a warning, not a load error (daprd loads it silently): {errors:?}");
    }

    #[test]
    fn targets_may_name_policies_of_other_resources_and_later_policies_win() {
        let a = res("a", "spec:\n  policies:\n    timeouts:\n      t: 1s\n");
        let b = res("b", "spec:\n  policies:\n    timeouts:\n      t: 2s\n  targets:\n    apps:\n      x:\n        timeout: t\n");
        let (p, errors) = load(&docs(&[&b, &a]), "me");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(p.timeouts["t"], std::time::Duration::from_secs(1));
        assert_eq!(p.resources, vec!["b".to_string(), "a".to_string()]);
    }

    #[test]
    fn scopes_filter_and_bad_documents_are_reported() {
        let scoped = res("scoped", "scopes: [other]\nspec:\n  policies:\n    timeouts:\n      t: never\n");
        let mine = res("mine", "scopes: [me]\nspec:\n  policies:\n    timeouts:\n      t: 3s\n");
        let bad = res("bad", "spec:\n  policies:\n    circuitBreakers:\n      cb:\n        trip: failures >\n");
        let (p, errors) = load(&docs(&[&scoped, &mine, &bad]), "me");
        assert_eq!(p.resources, vec!["mine".to_string()], "the out-of-scope document is not even parsed");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("resiliency bad: circuit breaker policy cb: trip: invalid CEL expression"), "{}", errors[0]);
    }

    #[test]
    fn actor_targets_are_checked_like_daprd() {
        let a = res("a", "spec:\n  policies:\n    circuitBreakers:\n      cb: {}\n  targets:\n    actors:\n      noscope:\n        circuitBreaker: cb\n      ok:\n        circuitBreaker: cb\n        circuitBreakerScope: id\n      weird:\n        circuitBreakerScope: planet\n");
        let (p, errors) = load(&docs(&[&a]), "me");
        assert!(p.actors.contains_key("ok"));
        let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(msgs.iter().any(|m| m.contains("actors.noscope: actor circuit breakers must include scope")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("actors.weird: unknown circuit breaker scope \"planet\"")), "{msgs:?}");
    }
}
