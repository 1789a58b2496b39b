//! Pub/sub delivery metrics: daprd's `component/pubsub_ingress/*` views
//! (`dapr_component_pubsub_ingress_count`, `dapr_component_pubsub_ingress_latencies`) with its
//! labels `app_id`, `component`, `namespace`, `process_status`, `status`, `topic`, recorded per
//! delivery attempt as daprd's postman does; the `bulk` views for `bulkSubscribe` batches
//! (`..._bulk_count` and `..._bulk_latencies` per app call, `..._bulk_event_count` per entry
//! status, its `process_status` spelt `SUCCESS`/`RETRY`/`DROP` as daprd's map keys are); and
//! rapr's `rapr_pubsub_parked_count`, messages parked at the poison limit (daprd has no such
//! path: it acknowledges them).
//!
//! daprd labels the bulk views with the literal `pubsubName` instead of the component's name
//! (it passes the metadata key); rapr writes the component's name, so the label means what the
//! other pub/sub views' does.

use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{ms, Buckets, Count, Hist, Metrics};

/// The ingress families of one sidecar's registry.
pub(super) struct IngressFamilies {
    count: Family<super::Labels, Count>,
    latency: Hist,
    parked: Family<super::Labels, Count>,
    bulk_count: Family<super::Labels, Count>,
    bulk_event_count: Family<super::Labels, Count>,
    bulk_latency: Hist,
}

impl IngressFamilies {
    pub(super) fn new(latency: &Buckets) -> Self {
        Self {
            count: Family::default(),
            latency: latency.family(),
            parked: Family::default(),
            bulk_count: Family::default(),
            bulk_event_count: Family::default(),
            bulk_latency: latency.family(),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register("dapr_component_pubsub_ingress_count", "The number of incoming messages arriving from the pub/sub component", self.count.clone());
        r.register("dapr_component_pubsub_ingress_latencies", "The consuming app event processing latency", self.latency.clone());
        r.register("dapr_component_pubsub_ingress_bulk_count", "The number of incoming bulk subscribe calls arriving from the bulk pub/sub component.", self.bulk_count.clone());
        r.register(
            "dapr_component_pubsub_ingress_bulk_event_count",
            "Total number of incoming messages arriving from the bulk pub/sub component via Bulk Subscribe.",
            self.bulk_event_count.clone(),
        );
        r.register("dapr_component_pubsub_ingress_bulk_latencies", "The consuming app event processing latency for the bulk pub/sub component.", self.bulk_latency.clone());
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

    /// One bulk delivery to the app finished: `started` is the app call's start (`None` when
    /// the app was not called), `statuses` how many entries ended `SUCCESS`, `RETRY` and `DROP`.
    /// As daprd: the call counts with an empty `process_status`, and only non-zero entry counts
    /// are recorded.
    pub fn pubsub_ingress_bulk(&self, component: &str, topic: &str, started: Option<Instant>, statuses: [(&str, u64); 3]) {
        if !self.0.enabled {
            return;
        }
        let f = &self.0.f.pubsub_ingress;
        let l = self.labels(&[("component", component), ("namespace", &self.0.namespace), ("process_status", ""), ("topic", topic)]);
        f.bulk_count.get_or_create(&l).0.inc();
        if let Some(s) = started {
            f.bulk_latency.get_or_create(&l).observe(ms(s));
        }
        for (status, n) in statuses.into_iter().filter(|(_, n)| *n > 0) {
            let l = self.labels(&[("component", component), ("namespace", &self.0.namespace), ("process_status", status), ("topic", topic)]);
            f.bulk_event_count.get_or_create(&l).0.inc_by(n);
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

    #[test]
    fn bulk_ingress_counts_calls_and_entries_by_status() {
        let m = Metrics::new("app", true, false);
        m.pubsub_ingress_bulk("ps", "orders", Some(Instant::now()), [("SUCCESS", 2), ("RETRY", 0), ("DROP", 1)]);
        let text = m.encode();
        let ns = std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into());
        assert!(text.contains(&format!("dapr_component_pubsub_ingress_bulk_count{{app_id=\"app\",component=\"ps\",namespace=\"{ns}\",process_status=\"\",topic=\"orders\"}} 1")), "{text}");
        assert!(text.contains(&format!("dapr_component_pubsub_ingress_bulk_event_count{{app_id=\"app\",component=\"ps\",namespace=\"{ns}\",process_status=\"SUCCESS\",topic=\"orders\"}} 2")), "{text}");
        assert!(!text.contains("process_status=\"RETRY\""), "{text}");
        assert!(text.contains("dapr_component_pubsub_ingress_bulk_latencies_count{app_id=\"app\""), "{text}");
    }
}
