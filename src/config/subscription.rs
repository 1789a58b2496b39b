//! Parses declarative `Subscription` resources (dapr.io/v1alpha1 and dapr.io/v2alpha1) into the
//! runtime's `pubsub::Subscription` (issue 11 B.4). Pure: the file's text comes from the loader.
//!
//! daprd converts v1alpha1 to v2alpha1 (`spec.route` becomes `spec.routes.default`) and keeps
//! the rules in order with the default last. Scopes filter by app id as for components. Where
//! daprd stops the sidecar on a `match` expression that does not compile, rapr rejects only that
//! subscription, naming the file and the expression, and loads the rest
//! (docs/runtime-semantics.md, pub/sub). Whether the named pub/sub exists is checked when the
//! subscriptions start, since components load after resources are parsed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::resources::ResourceError;
use crate::pubsub::routing::Routes;
use crate::pubsub::{BulkSubscribe, Rule, Subscription, SubscriptionKind};

#[derive(Deserialize, Default)]
struct RawMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawBulk {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    max_messages_count: i32,
    #[serde(default)]
    max_await_duration_ms: i32,
}

#[derive(Deserialize)]
struct RawRule {
    #[serde(default, rename = "match")]
    match_expr: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize, Default)]
struct RawRoutes {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    default: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    pubsubname: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, yaml_serde::Value>>,
    /// v1alpha1 only.
    #[serde(default)]
    route: String,
    /// v2alpha1 only.
    #[serde(default)]
    routes: RawRoutes,
    #[serde(default)]
    dead_letter_topic: String,
    #[serde(default)]
    bulk_subscribe: RawBulk,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: RawSpec,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

/// Parses one `Subscription` document of `api_version`; `Ok(None)` when its scopes leave this
/// app out.
pub fn parse(value: yaml_serde::Value, api_version: &str, file: &Path, app_id: &str) -> Result<Option<Subscription>, ResourceError> {
    let err = |reason: String| ResourceError { file: file.to_path_buf(), component: None, reason };
    let raw: Raw = yaml_serde::from_value(value).map_err(|e| err(format!("invalid Subscription: {e}")))?;
    let name = raw.metadata.name;
    let named = |reason: String| err(format!("subscription {name:?}: {reason}"));
    let scopes = raw.scopes.unwrap_or_default();
    if !scopes.is_empty() && !scopes.iter().any(|s| s == app_id) {
        tracing::info!(subscription = %name, file = %file.display(), "subscription is scoped to other apps; not loaded");
        return Ok(None);
    }
    let spec = raw.spec;
    let rules = match api_version {
        "dapr.io/v1alpha1" => vec![Rule { match_expr: String::new(), path: spec.route }],
        "dapr.io/v2alpha1" => {
            let mut rules: Vec<Rule> = spec.routes.rules.into_iter().map(|r| Rule { match_expr: r.match_expr.trim().to_string(), path: r.path }).collect();
            if !spec.routes.default.is_empty() {
                rules.push(Rule { match_expr: String::new(), path: spec.routes.default });
            }
            rules
        }
        other => return Err(named(format!("apiVersion {other} is not dapr.io/v1alpha1 or dapr.io/v2alpha1"))),
    };
    if spec.pubsubname.trim().is_empty() {
        return Err(named("spec.pubsubname is required".into()));
    }
    if spec.topic.trim().is_empty() {
        return Err(named("spec.topic is required".into()));
    }
    // daprd would run it and drop every message as unrouted; refusing it says why up front.
    if rules.iter().all(|r| r.path.is_empty()) {
        return Err(named("no route: set spec.route (v1alpha1) or spec.routes (v2alpha1)".into()));
    }
    let mut metadata = HashMap::new();
    for (k, v) in spec.metadata.unwrap_or_default() {
        let v = match v {
            yaml_serde::Value::Null => String::new(),
            yaml_serde::Value::String(s) => s,
            yaml_serde::Value::Bool(b) => b.to_string(),
            yaml_serde::Value::Number(n) => n.to_string(),
            _ => return Err(named(format!("spec.metadata.{k} must be a string"))),
        };
        metadata.insert(k, v);
    }
    let sub = Subscription {
        name: name.clone(),
        pubsub: spec.pubsubname,
        topic: spec.topic,
        rules,
        dead_letter_topic: Some(spec.dead_letter_topic).filter(|t| !t.is_empty()),
        metadata,
        bulk: BulkSubscribe {
            enabled: spec.bulk_subscribe.enabled,
            max_messages_count: spec.bulk_subscribe.max_messages_count,
            max_await_duration_ms: spec.bulk_subscribe.max_await_duration_ms,
        },
        scopes,
        kind: SubscriptionKind::Declarative,
        source: Some(file.to_path_buf()),
    };
    Routes::compile(&sub).map_err(|e| named(e.to_string()))?;
    Ok(Some(sub))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Resources;

    fn load(text: &str) -> Resources {
        let mut r = Resources::default();
        r.add_file(Path::new("subs.yaml"), text, "app1");
        r
    }

    const V1: &str = "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: v1sub\nspec:\n  topic: orders\n  route: /orders\n  pubsubname: ps\n  deadLetterTopic: dead\n  metadata:\n    rawPayload: \"true\"\n    n: 3\n  bulkSubscribe:\n    enabled: true\n    maxMessagesCount: 5\nscopes: [app1, app2]\n";

    const V2: &str = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: v2sub\nspec:\n  topic: t2\n  pubsubname: ps\n  routes:\n    rules:\n    - match: event.type == 'widget'\n      path: /widgets\n    - match: '  event.data.n == 5 '\n      path: /five\n    default: /rest\n";

    #[test]
    fn v1alpha1_becomes_one_default_route() {
        let r = load(V1);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let s = &r.subscriptions[0];
        assert_eq!((s.name.as_str(), s.pubsub.as_str(), s.topic.as_str()), ("v1sub", "ps", "orders"));
        assert_eq!(s.rules, vec![Rule { match_expr: String::new(), path: "/orders".into() }]);
        assert_eq!(s.dead_letter_topic.as_deref(), Some("dead"));
        assert!(s.raw_payload());
        assert_eq!(s.metadata.get("n").map(String::as_str), Some("3"));
        assert_eq!(s.bulk, BulkSubscribe { enabled: true, max_messages_count: 5, max_await_duration_ms: 0 });
        assert_eq!(s.kind, SubscriptionKind::Declarative);
        assert_eq!(s.source.as_deref(), Some(Path::new("subs.yaml")));
    }

    #[test]
    fn v2alpha1_keeps_rule_order_with_the_default_last() {
        let r = load(V2);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let paths: Vec<_> = r.subscriptions[0].rules.iter().map(|r| (r.match_expr.as_str(), r.path.as_str())).collect();
        assert_eq!(paths, vec![("event.type == 'widget'", "/widgets"), ("event.data.n == 5", "/five"), ("", "/rest")]);
        assert_eq!(r.subscriptions[0].dead_letter_topic, None);
    }

    #[test]
    fn scopes_leave_other_apps_out() {
        let mut r = Resources::default();
        r.add_file(Path::new("s.yaml"), V1, "app3");
        assert!(r.subscriptions.is_empty());
        assert!(r.errors.is_empty());
    }

    #[test]
    fn a_bad_expression_rejects_only_its_subscription_naming_file_and_expression() {
        let bad = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: bad\nspec:\n  topic: t\n  pubsubname: ps\n  routes:\n    rules:\n    - match: event.type ==\n      path: /x\n";
        let r = load(&format!("{V1}---\n{bad}---\n{V2}"));
        let names: Vec<_> = r.subscriptions.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["v1sub", "v2sub"]);
        assert_eq!(r.errors.len(), 1);
        let msg = r.errors[0].to_string();
        assert!(msg.contains("subs.yaml") && msg.contains("\"bad\"") && msg.contains("event.type =="), "{msg}");
    }

    #[test]
    fn missing_fields_and_routes_are_errors() {
        for (spec, want) in [
            ("  topic: t\n  route: /a\n", "pubsubname"),
            ("  pubsubname: ps\n  route: /a\n", "topic"),
            ("  pubsubname: ps\n  topic: t\n", "no route"),
        ] {
            let r = load(&format!("apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n{spec}"));
            assert!(r.subscriptions.is_empty(), "{spec}");
            assert!(r.errors[0].reason.contains(want), "{}", r.errors[0]);
        }
        // A v2 document's `route` is not read (daprd decodes it as v2alpha1).
        let r = load("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: ps\n  topic: t\n  route: /a\n");
        assert!(r.errors[0].reason.contains("no route"), "{}", r.errors[0]);
    }
}
