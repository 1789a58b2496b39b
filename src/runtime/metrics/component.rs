//! Component call metrics: daprd's `component/state/*` and `component/secret/*` views
//! (`dapr_component_state_count`, `dapr_component_state_latencies`, and the `secret` pair), with
//! its labels `app_id`, `component` (the component's name), `namespace`, `operation`, `success`.
//!
//! One sample per API call, recorded by the facades around the whole call (every retry of its
//! resiliency policy included), as daprd records around its policy runner. The label values are
//! a fixed set (operation names, `true`/`false`) or configured names, so cardinality stays low.

use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::cache::Handle;
use super::{ms, Buckets, Count, Hist, Labels, Metrics};

/// The operation of a component call (daprd's `operation` label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentOp {
    /// A single read.
    Get,
    /// Saving one or more items (daprd's bulk set is one `set`).
    Set,
    /// A single delete.
    Delete,
    /// A bulk read.
    BulkGet,
    /// A bulk delete.
    BulkDelete,
    /// A state transaction.
    Transaction,
    /// A state query.
    Query,
}

impl ComponentOp {
    /// daprd's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentOp::Get => "get",
            ComponentOp::Set => "set",
            ComponentOp::Delete => "delete",
            ComponentOp::BulkGet => "bulk_get",
            ComponentOp::BulkDelete => "bulk_delete",
            ComponentOp::Transaction => "transaction",
            ComponentOp::Query => "query",
        }
    }
}

/// The component families of one sidecar's registry.
pub(super) struct ComponentFamilies {
    state_count: Family<Labels, Count>,
    state_latency: Hist,
    secret_count: Family<Labels, Count>,
    secret_latency: Hist,
}

impl ComponentFamilies {
    pub(super) fn new(latency: &Buckets) -> Self {
        Self { state_count: Family::default(), state_latency: latency.family(), secret_count: Family::default(), secret_latency: latency.family() }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register("dapr_component_state_count", "The number of operations performed on the state component", self.state_count.clone());
        r.register("dapr_component_state_latencies", "The latency of the response from the state component", self.state_latency.clone());
        r.register("dapr_component_secret_count", "The number of operations performed on the secret component", self.secret_count.clone());
        r.register("dapr_component_secret_latencies", "The latency of the response from the secret component", self.secret_latency.clone());
    }
}

/// Which building block a component call was for.
#[derive(Clone, Copy)]
enum Block {
    State,
    Secret,
}

impl Metrics {
    /// A state store call finished (the whole API call, retries included).
    pub fn state_call(&self, store: &str, op: ComponentOp, success: bool, started: Instant) {
        self.component_call(Block::State, store, op, success, started);
    }

    /// A secret store call finished.
    pub fn secret_call(&self, store: &str, op: ComponentOp, success: bool, started: Instant) {
        self.component_call(Block::Secret, store, op, success, started);
    }

    fn component_call(&self, block: Block, component: &str, op: ComponentOp, success: bool, started: Instant) {
        if !self.0.enabled {
            return;
        }
        let success = if success { "true" } else { "false" };
        let f = &self.0.f.component;
        let (count, latency, name) = match block {
            Block::State => (&f.state_count, &f.state_latency, "state"),
            Block::Secret => (&f.secret_count, &f.secret_latency, "secret"),
        };
        let h = self.0.cache.component.get(&[name, component, op.as_str(), success], || {
            let l = self.labels(&[("component", component), ("namespace", &self.0.namespace), ("operation", op.as_str()), ("success", success)]);
            vec![Handle::Count(count.get_or_create(&l).clone()), Handle::Hist(latency.get_or_create(&l).clone())]
        });
        h[0].inc();
        h[1].observe(ms(started));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_secret_calls_carry_daprds_labels() {
        let m = Metrics::new("app", true, false);
        let t = Instant::now();
        m.state_call("store", ComponentOp::Set, true, t);
        m.state_call("store", ComponentOp::Get, false, t);
        m.secret_call("vault", ComponentOp::BulkGet, true, t);
        let text = m.encode();
        let ns = &m.0.namespace;
        let want = format!("dapr_component_state_count{{app_id=\"app\",component=\"store\",namespace=\"{ns}\",operation=\"set\",success=\"true\"}} 1");
        assert!(text.contains(&want), "{text}");
        assert!(text.contains("# TYPE dapr_component_state_count counter"), "no _total suffix: {text}");
        assert!(text.contains("operation=\"get\",success=\"false\""), "{text}");
        assert!(text.contains("dapr_component_state_latencies_count{app_id=\"app\",component=\"store\""), "{text}");
        assert!(text.contains("dapr_component_secret_count{app_id=\"app\",component=\"vault\""), "{text}");
    }
}
