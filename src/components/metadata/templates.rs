//! Dapr's metadata templates: `{uuid}`, `{podName}`, `{namespace}` and `{appID}` in any metadata
//! value of any component, expanded once for all components before anything reads them.
//!
//! As daprd (pkg/runtime/meta): each `{uuid}` becomes a new random UUID (two in one value differ);
//! `{podName}` is env `POD_NAME` and a value that uses it while that is unset or empty fails the
//! component; `{namespace}` is `<namespace>.<appID>` with the namespace from env `NAMESPACE`
//! (`default` when unset); `{appID}` is the app id. The replacements run in that order, on every
//! literal value, so the runtime's own keys (`keyPrefix`, `actorStateStore`) see the expanded
//! value too, as daprd's state processor does.

use crate::config::{ComponentSpec, MetadataItem, ResourceError, Resources};

/// A metadata value that refers to `{podName}` while no pod name is set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse metadata: property {key} refers to {{podName}} but podName is not set")]
pub struct TemplateError {
    /// The metadata key whose value uses `{podName}`.
    pub key: String,
}

/// Who this sidecar is, for the templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The app id (`{appID}`).
    pub app_id: String,
    /// The namespace (`{namespace}` is `<namespace>.<app_id>`).
    pub namespace: String,
    /// The pod name (`{podName}`); empty when not running in a pod.
    pub pod_name: String,
}

impl Identity {
    /// The identity daprd reads: env `NAMESPACE` (`default` when unset) and `POD_NAME`.
    pub fn from_env(app_id: &str) -> Self {
        Self {
            app_id: app_id.to_string(),
            namespace: std::env::var("NAMESPACE").unwrap_or_else(|_| "default".to_string()),
            pod_name: std::env::var("POD_NAME").unwrap_or_default(),
        }
    }

    /// `value` of metadata `key` with every template expanded.
    pub fn expand(&self, key: &str, value: &str) -> Result<String, TemplateError> {
        let mut out = value.to_string();
        // One fresh UUID per occurrence, as daprd replaces them one at a time.
        while let Some(at) = out.find("{uuid}") {
            out.replace_range(at..at + "{uuid}".len(), &uuid::Uuid::new_v4().to_string());
        }
        if out.contains("{podName}") {
            if self.pod_name.is_empty() {
                return Err(TemplateError { key: key.to_string() });
            }
            out = out.replace("{podName}", &self.pod_name);
        }
        out = out.replace("{namespace}", &format!("{}.{}", self.namespace, self.app_id));
        Ok(out.replace("{appID}", &self.app_id))
    }

    /// `spec` with every literal metadata value expanded (values from a `secretKeyRef` are
    /// expanded by the resolver when it fills them in, at each start).
    pub fn expand_spec(&self, spec: &ComponentSpec) -> Result<ComponentSpec, TemplateError> {
        let mut out = spec.clone();
        for item in &mut out.metadata {
            if let Some(v) = &item.value {
                item.value = Some(self.expand(&item.name, v)?);
            }
        }
        // As daprd's pub/sub processor: a broker without a `consumerID` (absent or blank) gets
        // the app id, so every sidecar of one app shares one consumer group.
        let has_consumer = |m: &MetadataItem| m.name.eq_ignore_ascii_case("consumerID") && (m.secret_key_ref.is_some() || m.value.as_deref().is_some_and(|v| !v.trim().is_empty()));
        if out.type_name.starts_with("pubsub.") && !out.metadata.iter().any(has_consumer) {
            out.metadata.retain(|m| !m.name.eq_ignore_ascii_case("consumerID"));
            out.metadata.push(MetadataItem { name: "consumerID".into(), value: Some(self.app_id.clone()), secret_key_ref: None });
        }
        Ok(out)
    }
}

/// Expands the templates of every loaded component; a component whose templates cannot be
/// expanded moves to the load errors (it fails, as its init fails in daprd).
pub fn expand_components(resources: &mut Resources, identity: &Identity) {
    let components = std::mem::take(&mut resources.components);
    for spec in components {
        match identity.expand_spec(&spec) {
            Ok(expanded) => resources.components.push(expanded),
            Err(e) => resources.errors.push(ResourceError { file: spec.source.clone(), component: Some(spec.name.clone()), reason: e.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pod: &str) -> Identity {
        Identity { app_id: "shop".into(), namespace: "prod".into(), pod_name: pod.into() }
    }

    #[test]
    fn every_token_as_daprd_expands_it() {
        let i = id("shop-7f9");
        assert_eq!(i.expand("k", "{appID}-state").unwrap(), "shop-state");
        assert_eq!(i.expand("k", "{namespace}").unwrap(), "prod.shop");
        assert_eq!(i.expand("k", "{podName}/{appID}/{podName}").unwrap(), "shop-7f9/shop/shop-7f9");
        assert_eq!(i.expand("k", "plain {appid} {APPID}").unwrap(), "plain {appid} {APPID}", "tokens are case-sensitive");
        assert_eq!(i.expand("k", "").unwrap(), "");
    }

    #[test]
    fn each_uuid_is_a_new_one() {
        let v = id("").expand("consumerID", "{uuid}:{uuid}").unwrap();
        let (a, b) = v.split_once(':').unwrap();
        assert!(uuid::Uuid::parse_str(a).is_ok() && uuid::Uuid::parse_str(b).is_ok(), "{v}");
        assert_ne!(a, b);
        assert_ne!(id("").expand("k", "{uuid}").unwrap(), id("").expand("k", "{uuid}").unwrap());
    }

    #[test]
    fn pod_name_must_be_set_when_used() {
        let e = id("").expand("consumerGroup", "{podName}").unwrap_err();
        assert_eq!(e.to_string(), "failed to parse metadata: property consumerGroup refers to {podName} but podName is not set");
        assert_eq!(id("").expand("k", "{appID}").unwrap(), "shop", "only a value that uses it fails");
    }

    #[test]
    fn default_namespace_when_unset() {
        // The variable itself is not touched: tests run in parallel in one process.
        let i = Identity::from_env("a");
        match std::env::var("NAMESPACE") {
            Ok(ns) => assert_eq!(i.namespace, ns),
            Err(_) => assert_eq!(i.namespace, "default"),
        }
    }

    fn spec(name: &str, items: &[(&str, Option<&str>)]) -> ComponentSpec {
        let mut spec = ComponentSpec::new(name, "state.in-memory");
        spec.metadata = items.iter().map(|(k, v)| MetadataItem { name: k.to_string(), value: v.map(str::to_string), secret_key_ref: None }).collect();
        spec
    }

    #[test]
    fn components_are_expanded_and_a_failing_one_is_a_load_error() {
        let mut r = Resources::default();
        r.components.push(spec("good", &[("keyPrefix", Some("{appID}-x")), ("password", None)]));
        r.components.push(spec("bad", &[("group", Some("{podName}"))]));
        expand_components(&mut r, &id(""));
        assert_eq!(r.components.len(), 1);
        assert_eq!(r.components[0].metadata_value("keyPrefix"), Some("shop-x"));
        assert_eq!(r.components[0].metadata[1].value, None, "a secretKeyRef item stays unresolved");
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].component.as_deref(), Some("bad"));
        assert!(r.errors[0].reason.contains("{podName}"), "{}", r.errors[0].reason);
    }

    #[test]
    fn a_pubsub_without_consumer_id_gets_the_app_id() {
        let with = |ty: &str, items: &[(&str, Option<&str>)]| {
            let mut s = spec("p", items);
            s.type_name = ty.into();
            id("").expand_spec(&s).unwrap()
        };
        assert_eq!(with("pubsub.redis", &[]).metadata_value("consumerID"), Some("shop"));
        assert_eq!(with("pubsub.redis", &[("consumerid", Some(" "))]).metadata_value("consumerID"), Some("shop"), "blank is unset");
        assert_eq!(with("pubsub.redis", &[("consumerID", Some("{appID}-x"))]).metadata_value("consumerID"), Some("shop-x"));
        let mut secret = spec("p", &[("consumerID", None)]);
        secret.type_name = "pubsub.redis".into();
        secret.metadata[0].secret_key_ref = Some(crate::config::SecretKeyRef { name: "s".into(), key: "k".into() });
        let secret = id("").expand_spec(&secret).unwrap();
        assert_eq!((secret.metadata.len(), secret.metadata[0].value.as_deref()), (1, None), "a secretKeyRef stays");
        assert_eq!(with("state.redis", &[]).metadata_value("consumerID"), None, "only pub/sub");
    }
}
