//! Pub/sub delivery metrics: daprd's `component/pubsub_ingress/*` views
//! (`dapr_component_pubsub_ingress_count`, `dapr_component_pubsub_ingress_latencies`) with its
//! labels `app_id`, `component`, `namespace`, `process_status`, `status`, `topic`, recorded per
//! delivery attempt as daprd's postman does; and rapr's `rapr_pubsub_parked_count`, messages
//! parked at the poison limit (daprd has no such path: it acknowledges them).

use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{hist, latency, ms, Count, Hist, Metrics};

/// The ingress families of one sidecar's registry.
pub(super) struct IngressFamilies {
    count: Family<super::Labels, Count>,
    latency: Hist,
    parked: Family<super::Labels, Count>,
}

impl IngressFamilies {
    pub(super) fn new() -> Self {
        Self { count: Family::default(), latency: hist(latency), parked: Family::default() }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register("dapr_component_pubsub_ingress_count", "The number of incoming messages arriving from the pub/sub component", self.count.clone());
        r.register("dapr_component_pubsub_ingress_latencies", "The consuming app event processing latency", self.latency.clone());
        r.register("rapr_pubsub_parked_count", "The number of messages parked at the poison limit (kept by the broker, not redelivered)", self.parked.clone());
    }
}

impl Metrics {
    /// One event's fate: `process_status` and `status` as daprd (`success`, `retry`, `drop`);
    /// `started` is the app call's start (`None` for events the runtime settled without the app,
    /// which daprd counts but does not time).
    pub fn pubsub_ingress(&self, component: &str, topic: &str, process_status: &str, status: &str, started: Option<Instant>) {
        if !self.0.enabled {
            return;
        }
        let l = self.labels(&[("component", component), ("namespace", &self.0.namespace), ("process_status", process_status), ("status", status), ("topic", topic)]);
        let f = &self.0.f.pubsub_ingress;
        f.count.get_or_create(&l).0.inc();
        if let Some(s) = started {
            f.latency.get_or_create(&l).observe(ms(s));
        }
    }

    /// A message parked at the poison limit.
    pub fn pubsub_parked(&self, component: &str, topic: &str) {
        if !self.0.enabled {
            return;
        }
        let l = self.labels(&[("component", component), ("namespace", &self.0.namespace), ("topic", topic)]);
        self.0.f.pubsub_ingress.parked.get_or_create(&l).0.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_carries_daprds_labels_and_parking_is_counted() {
        let m = Metrics::new("app", true, false);
        m.pubsub_ingress("ps", "orders", "drop", "success", Some(Instant::now()));
        m.pubsub_ingress("ps", "orders", "retry", "retry", None);
        m.pubsub_parked("ps", "orders");
        let text = m.encode();
        let ns = std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into());
        let want = format!("dapr_component_pubsub_ingress_count{{app_id=\"app\",component=\"ps\",namespace=\"{ns}\",process_status=\"drop\",status=\"success\",topic=\"orders\"}} 1");
        assert!(text.contains(&want), "{text}");
        assert!(text.contains("dapr_component_pubsub_ingress_latencies_count{app_id=\"app\",component=\"ps\""), "{text}");
        assert!(!text.contains("dapr_component_pubsub_ingress_latencies_count{app_id=\"app\",component=\"ps\",namespace=\"default\",process_status=\"retry\""), "untimed: {text}");
        assert!(text.contains(&format!("rapr_pubsub_parked_count{{app_id=\"app\",component=\"ps\",namespace=\"{ns}\",topic=\"orders\"}} 1")), "{text}");
    }
}
