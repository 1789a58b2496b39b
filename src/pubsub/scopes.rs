//! Topic scoping of a pub/sub component, as daprd reads it from the component's metadata
//! (daprd `pkg/scopes` and `IsOperationAllowed`):
//!
//! - `publishingScopes` / `subscriptionScopes`: `app1=t1,t2;app2=t3`: an app listed there may
//!   publish / subscribe only to its topics (an app not listed is unrestricted, unless the topic
//!   is protected);
//! - `allowedTopics`: `t1,t2`: no other topic may be used by anyone;
//! - `protectedTopics`: `t1`: only apps whose scope lists it may use it.
//!
//! These are runtime keys, not the broker's: `PubSubKind::build` takes them out of the
//! metadata before the broker sees it, and `PubSubClient::scopes` hands them to the publish
//! facade and the deliveries.

use std::collections::HashMap;

use crate::components::metadata::ComponentMetadata;

/// The component metadata keys this module owns.
pub const KEYS: [&str; 4] = [PUBLISHING_SCOPES, SUBSCRIPTION_SCOPES, ALLOWED_TOPICS, PROTECTED_TOPICS];
/// Per-app publishing scopes.
pub const PUBLISHING_SCOPES: &str = "publishingScopes";
/// Per-app subscription scopes.
pub const SUBSCRIPTION_SCOPES: &str = "subscriptionScopes";
/// The only topics the component may use.
pub const ALLOWED_TOPICS: &str = "allowedTopics";
/// Topics only scoped apps may use.
pub const PROTECTED_TOPICS: &str = "protectedTopics";

/// One component's topic rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    publishing: HashMap<String, Vec<String>>,
    subscription: HashMap<String, Vec<String>>,
    allowed: Vec<String>,
    protected: Vec<String>,
}

/// Appends `t` unless present (daprd keeps the first occurrence's order).
fn push_unique(list: &mut Vec<String>, t: &str) {
    if !list.iter().any(|x| x == t) {
        list.push(t.to_string());
    }
}

/// daprd's `GetScopedTopics` for every app at once: spaces removed, `;` between apps, `=`
/// between app and topics, `,` between topics; an entry without `=` is skipped.
fn per_app(val: &str) -> HashMap<String, Vec<String>> {
    let val: String = val.chars().filter(|c| *c != ' ').collect();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for entry in val.split(';') {
        let mut parts = entry.split('=');
        let (Some(app), Some(topics)) = (parts.next(), parts.next()) else { continue };
        let list = out.entry(app.to_string()).or_default();
        for t in topics.split(',') {
            push_unique(list, t);
        }
    }
    out
}

/// daprd's `getParamTopics`: spaces removed, `,` between topics, duplicates dropped.
fn topics(val: &str) -> Vec<String> {
    let val: String = val.chars().filter(|c| *c != ' ').collect();
    let mut out = Vec::new();
    for t in val.split(',') {
        push_unique(&mut out, t);
    }
    out
}

fn nonempty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

impl Scopes {
    /// Reads (and marks read) the four keys, case-insensitively as daprd; an empty value is
    /// no rule.
    pub fn from_metadata(md: &mut ComponentMetadata) -> Self {
        let publishing = md.string(&[PUBLISHING_SCOPES]);
        let subscription = md.string(&[SUBSCRIPTION_SCOPES]);
        let allowed = md.string(&[ALLOWED_TOPICS]);
        let protected = md.string(&[PROTECTED_TOPICS]);
        Self::parse(publishing.as_deref(), subscription.as_deref(), allowed.as_deref(), protected.as_deref())
    }

    /// Builds the rules from the four raw values.
    pub fn parse(publishing: Option<&str>, subscription: Option<&str>, allowed: Option<&str>, protected: Option<&str>) -> Self {
        Self {
            publishing: nonempty(publishing).map(per_app).unwrap_or_default(),
            subscription: nonempty(subscription).map(per_app).unwrap_or_default(),
            allowed: nonempty(allowed).map(topics).unwrap_or_default(),
            protected: nonempty(protected).map(topics).unwrap_or_default(),
        }
    }

    /// Whether any rule is set.
    pub fn is_empty(&self) -> bool {
        self.publishing.is_empty() && self.subscription.is_empty() && self.allowed.is_empty() && self.protected.is_empty()
    }

    /// Whether `app_id` may publish to `topic`.
    pub fn may_publish(&self, app_id: &str, topic: &str) -> bool {
        self.allowed_with(self.publishing.get(app_id), topic)
    }

    /// Whether `app_id` may subscribe to `topic`.
    pub fn may_subscribe(&self, app_id: &str, topic: &str) -> bool {
        self.allowed_with(self.subscription.get(app_id), topic)
    }

    /// daprd's `IsOperationAllowed`: outside `allowedTopics` (when set) never; then a topic
    /// that is protected, or any topic of an app with a scope, only if the scope lists it.
    fn allowed_with(&self, scoped: Option<&Vec<String>>, topic: &str) -> bool {
        if !self.allowed.is_empty() && !self.allowed.iter().any(|t| t == topic) {
            return false;
        }
        let protected = self.protected.iter().any(|t| t == topic);
        let scoped: &[String] = scoped.map_or(&[], Vec::as_slice);
        if !protected && scoped.is_empty() {
            return true;
        }
        scoped.iter().any(|t| t == topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_app_scopes() {
        let s = Scopes::parse(Some("app1=t1, t2;app2=t3;broken;app1=t4"), Some("app1="), None, None);
        assert!(s.may_publish("app1", "t1") && s.may_publish("app1", "t2") && s.may_publish("app1", "t4"));
        assert!(!s.may_publish("app1", "t3"));
        assert!(s.may_publish("other", "anything"), "an app without a scope is unrestricted");
        assert!(!s.may_subscribe("app1", "t1"), "an empty scope allows nothing (daprd's `app1=` is the topic \"\")");
        assert!(s.may_subscribe("app2", "t1"));
    }

    #[test]
    fn allowed_and_protected_topics() {
        let s = Scopes::parse(Some("app1=p"), None, Some("a, p"), Some("p"));
        assert!(s.may_publish("x", "a"));
        assert!(!s.may_publish("x", "b"), "not in allowedTopics");
        assert!(!s.may_publish("x", "p"), "protected needs a scope");
        assert!(s.may_publish("app1", "p"));
        assert!(!s.may_subscribe("app1", "p"), "publishing scope does not grant subscribing");
        assert!(Scopes::parse(None, None, Some(""), Some("")).is_empty());
    }

    #[test]
    fn reads_the_keys_case_insensitively_and_marks_them_read() {
        let mut md = ComponentMetadata::new("ps", &[("PublishingScopes".into(), "a=t".into()), ("redisHost".into(), "h".into())]);
        let s = Scopes::from_metadata(&mut md);
        assert!(!s.may_publish("a", "u"));
        assert_eq!(md.unread(), vec!["redishost".to_string()]);
    }
}
