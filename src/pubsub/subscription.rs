//! `Subscription`: one topic subscription as the runtime runs it, whatever declared it (the
//! app's `/dapr/subscribe` or `ListTopicSubscriptions`, a `Subscription` resource v1alpha1 or
//! v2alpha1, or a gRPC streaming subscription). Loading turns each style into this one shape;
//! `SubscriptionManager` runs one `Delivery` per value; `/v1.0/metadata` lists them.

use std::collections::HashMap;
use std::path::PathBuf;

/// Who declared a subscription; `/v1.0/metadata` reports it (daprd's `PubsubSubscriptionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionKind {
    /// A `Subscription` resource file.
    Declarative,
    /// The app's answer to `GET /dapr/subscribe` or `ListTopicSubscriptions`.
    Programmatic,
    /// A gRPC `SubscribeTopicEventsAlpha1` stream (lives as long as its connection).
    Streaming,
}

impl SubscriptionKind {
    /// daprd's enum name (`DECLARATIVE`, ...), as the HTTP metadata API prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Declarative => "DECLARATIVE",
            SubscriptionKind::Programmatic => "PROGRAMMATIC",
            SubscriptionKind::Streaming => "STREAMING",
        }
    }
}

/// One routing rule: events matching the CEL expression `match_expr` go to `path`; an empty
/// expression matches everything (daprd keeps the default route as the last such rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A CEL expression over `event` (the CloudEvent as a map); empty for the default route.
    pub match_expr: String,
    /// The app path (HTTP) or the `path` field of the gRPC `TopicEventRequest`.
    pub path: String,
}

/// `bulkSubscribe` of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BulkSubscribe {
    /// Whether messages go to the app in batches.
    pub enabled: bool,
    /// The most messages per batch (daprd's default 100 when zero).
    pub max_messages_count: i32,
    /// The longest a batch waits to fill, in ms (daprd's default 1000 when zero).
    pub max_await_duration_ms: i32,
}

/// One subscription, as the runtime runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The resource name (declarative); empty otherwise.
    pub name: String,
    /// The pub/sub component's name.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// Routing rules in order; the default route last, with an empty expression.
    pub rules: Vec<Rule>,
    /// Where dropped and exhausted messages go; `None` for none.
    pub dead_letter_topic: Option<String>,
    /// Subscription metadata (`rawPayload`, broker options), over the component's.
    pub metadata: HashMap<String, String>,
    /// Batching to the app.
    pub bulk: BulkSubscribe,
    /// App ids the subscription applies to (declarative `scopes`); empty for all.
    pub scopes: Vec<String>,
    /// Who declared it.
    pub kind: SubscriptionKind,
    /// The file a declarative subscription came from, for error messages.
    pub source: Option<PathBuf>,
}

impl Subscription {
    /// A subscription of `kind` with one default route, no rules, nothing else set.
    pub fn new(kind: SubscriptionKind, pubsub: &str, topic: &str, path: &str) -> Self {
        Self {
            name: String::new(),
            pubsub: pubsub.to_string(),
            topic: topic.to_string(),
            rules: vec![Rule { match_expr: String::new(), path: path.to_string() }],
            dead_letter_topic: None,
            metadata: HashMap::new(),
            bulk: BulkSubscribe::default(),
            scopes: Vec::new(),
            kind,
            source: None,
        }
    }

    /// Whether `rawPayload=true` is set: the app gets the broker's bytes, not a CloudEvent.
    pub fn raw_payload(&self) -> bool {
        self.metadata.get("rawPayload").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}
