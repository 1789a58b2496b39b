//! Publish metrics: daprd's `component/pubsub_egress/*` views (`dapr_component_pubsub_egress_count`
//! and `_latencies` per publish, `dapr_component_pubsub_egress_bulk_count` and `_latencies` per
//! bulk call) with its labels `app_id`, `component`, `namespace`, `success`, `topic`, recorded
//! around the whole resiliency run as daprd's API handlers do. (daprd also measures a bulk event
//! count but registers no view for it, so it is not exported there either.)

use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{ms, Buckets, Count, Hist, Metrics};

/// The egress families of one sidecar's registry.
pub(super) struct EgressFamilies {
    count: Family<super::Labels, Count>,
    latency: Hist,
    bulk_count: Family<super::Labels, Count>,
    bulk_latency: Hist,
}

impl EgressFamilies {
    pub(super) fn new(latency: &Buckets) -> Self {
        Self { count: Family::default(), latency: latency.family(), bulk_count: Family::default(), bulk_latency: latency.family() }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register("dapr_component_pubsub_egress_count", "The number of outgoing messages published to the pub/sub component.", self.count.clone());
        r.register("dapr_component_pubsub_egress_latencies", "The latency of the response from the pub/sub component.", self.latency.clone());
        r.register("dapr_component_pubsub_egress_bulk_count", "The number of bulk publish calls to the pub/sub component.", self.bulk_count.clone());
        r.register("dapr_component_pubsub_egress_bulk_latencies", "The latency of the response for the bulk publish call from the pub/sub component.", self.bulk_latency.clone());
    }
}

impl Metrics {
    /// One publish (or, with `bulk`, one bulk publish call) finished.
    pub fn pubsub_egress(&self, component: &str, topic: &str, bulk: bool, success: bool, started: Instant) {
        if !self.0.enabled {
            return;
        }
        let success = if success { "true" } else { "false" };
        let l = self.labels(&[("component", component), ("namespace", &self.0.namespace), ("success", success), ("topic", topic)]);
        let f = &self.0.f.pubsub_egress;
        let (count, latency) = if bulk { (&f.bulk_count, &f.bulk_latency) } else { (&f.count, &f.latency) };
        count.get_or_create(&l).0.inc();
        latency.get_or_create(&l).observe(ms(started));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_carries_daprds_labels() {
        let m = Metrics::new("app", true, false);
        m.pubsub_egress("ps", "orders", false, true, Instant::now());
        m.pubsub_egress("ps", "orders", true, false, Instant::now());
        let text = m.encode();
        let ns = std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into());
        assert!(text.contains(&format!("dapr_component_pubsub_egress_count{{app_id=\"app\",component=\"ps\",namespace=\"{ns}\",success=\"true\",topic=\"orders\"}} 1")), "{text}");
        assert!(text.contains(&format!("dapr_component_pubsub_egress_bulk_count{{app_id=\"app\",component=\"ps\",namespace=\"{ns}\",success=\"false\",topic=\"orders\"}} 1")), "{text}");
        assert!(text.contains("dapr_component_pubsub_egress_latencies_count{app_id=\"app\""), "{text}");
        assert!(text.contains("dapr_component_pubsub_egress_bulk_latencies_count{app_id=\"app\""), "{text}");
    }
}
