//! The sidecar's placement metrics. daprd gives no leases, so these are rapr's own names
//! (`rapr_` prefix), beside daprd's: what an operator watches to see that a host keeps its place
//! through a placement leader change.
//!
//! - `rapr_placement_lease_fenced{app_id}`: 1 while this host may not run actors (its lease ran
//!   out, or it never had one), 0 while its lease holds.
//! - `rapr_placement_fences_total{app_id}`: how many times a held lease ran out (a leader
//!   change that placement rode through leaves it at 0).
//! - `rapr_placement_table_version{app_id}`: the version of the tables lookups read.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Labels, Metrics};

/// The placement families of one sidecar's registry.
#[derive(Default)]
pub(super) struct PlacementFamilies {
    fenced: Family<Labels, Gauge>,
    fences: Family<Labels, Counter>,
    version: Family<Labels, Gauge>,
}

impl PlacementFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register("rapr_placement_lease_fenced", "1 while this host may not run actors (no placement lease holds), 0 while its lease holds.", self.fenced.clone());
        r.register("rapr_placement_fences", "Number of times this host's placement lease ran out.", self.fences.clone());
        r.register("rapr_placement_table_version", "The version of the placement tables this host reads.", self.version.clone());
    }
}

impl Metrics {
    /// The placement status now: whether the host is fenced and its tables' version.
    pub fn placement_status(&self, fenced: bool, version: u64) {
        if !self.enabled() {
            return;
        }
        let l = self.labels(&[]);
        let f = &self.0.f.placement;
        f.fenced.get_or_create(&l).set(i64::from(fenced));
        f.version.get_or_create(&l).set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// A held lease ran out.
    pub fn placement_fenced(&self) {
        if self.enabled() {
            self.0.f.placement.fences.get_or_create(&self.labels(&[])).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_state_and_fences_are_exported() {
        let m = Metrics::new("a", true, true);
        m.placement_status(true, 0);
        m.placement_status(false, 7);
        m.placement_fenced();
        let text = m.encode();
        assert!(text.contains("rapr_placement_lease_fenced{app_id=\"a\"} 0"), "{text}");
        assert!(text.contains("rapr_placement_table_version{app_id=\"a\"} 7"), "{text}");
        assert!(text.contains("# TYPE rapr_placement_fences_total counter\nrapr_placement_fences_total{app_id=\"a\"} 1"), "{text}");
    }
}
