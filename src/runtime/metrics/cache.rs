//! Metric handles per label values, so a recorded call finds its series with one fast-hashed
//! lookup instead of building a label set (a `Vec` and a `String` per label) and hashing it with
//! std's SipHash once per family (measured: ~10 families per invocation, 6% of the sidecar's
//! user-space instructions in SipHash alone).
//!
//! A `HandleCache` belongs to one recording site (one set of families and label names); it maps
//! that site's label values to clones of its series (prometheus-client's counters and histograms
//! share their state between clones, so recording through a clone is recording in the family).
//! The map is copy-on-write behind an `ArcSwap`: a hit is a lock-free load and a foldhash of the
//! values; a miss (once per label set) asks the families and publishes a new map. Past
//! `MAX_ENTRIES` label sets (unbounded paths, say) nothing more is cached and each call asks the
//! families as before, so the cache never grows without bound.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hashbrown::{Equivalent, HashMap};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::Count;

/// Label sets a site caches at most.
const MAX_ENTRIES: usize = 512;

/// One series of a family.
#[derive(Clone)]
pub(super) enum Handle {
    /// A counter exported without `_total`.
    Count(Count),
    /// A counter exported with `_total`.
    Counter(Counter),
    /// A histogram.
    Hist(Histogram),
}

impl Handle {
    /// Adds one to a counter (nothing on a histogram).
    pub(super) fn inc(&self) {
        match self {
            Handle::Count(c) => {
                c.0.inc();
            }
            Handle::Counter(c) => {
                c.inc();
            }
            Handle::Hist(_) => {}
        }
    }

    /// Records `v` in a histogram (nothing on a counter).
    pub(super) fn observe(&self, v: f64) {
        if let Handle::Hist(h) = self {
            h.observe(v);
        }
    }
}

type Key = Box<[Box<str>]>;

/// A lookup's label values, hashed and compared as the owned key (both hash as a slice of
/// `str`: its length, then each value).
struct Values<'a>(&'a [&'a str]);

impl Hash for Values<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Equivalent<Key> for Values<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        key.len() == self.0.len() && key.iter().zip(self.0).all(|(a, b)| **a == **b)
    }
}

/// One recording site's handles by label values.
#[derive(Default)]
pub(super) struct HandleCache {
    map: ArcSwap<HashMap<Key, Arc<[Handle]>>>,
}

impl HandleCache {
    /// The handles for `values`, made by `make` (from the families) on the first call.
    pub(super) fn get(&self, values: &[&str], make: impl FnOnce() -> Vec<Handle>) -> Arc<[Handle]> {
        if let Some(h) = self.map.load().get(&Values(values)) {
            return Arc::clone(h);
        }
        let made: Arc<[Handle]> = make().into();
        if self.map.load().len() < MAX_ENTRIES {
            let key: Key = values.iter().map(|v| Box::<str>::from(*v)).collect();
            self.map.rcu(|m| {
                let mut m = HashMap::clone(m);
                m.entry(key.clone()).or_insert_with(|| Arc::clone(&made));
                m
            });
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_set_is_made_once_and_its_handles_record_into_the_family() {
        let cache = HandleCache::default();
        let counter = Counter::<u64>::default();
        let mut made = 0;
        for _ in 0..3 {
            let h = cache.get(&["GET", "/a"], || {
                made += 1;
                vec![Handle::Counter(counter.clone())]
            });
            h[0].inc();
        }
        assert_eq!((made, counter.get()), (1, 3));
        let other = cache.get(&["GET", "/b"], || vec![Handle::Counter(Counter::default())]);
        other[0].inc();
        assert_eq!(counter.get(), 3, "another label set is another series");
        assert!(cache.get(&["GET"], Vec::new).is_empty(), "a prefix is not the same key");
    }

    #[test]
    fn past_the_bound_nothing_more_is_cached() {
        let cache = HandleCache::default();
        for i in 0..MAX_ENTRIES + 10 {
            cache.get(&[&i.to_string()], || vec![Handle::Counter(Counter::default())]);
        }
        assert_eq!(cache.map.load().len(), MAX_ENTRIES);
        let mut made = false;
        cache.get(&[&(MAX_ENTRIES + 5).to_string()], || {
            made = true;
            Vec::new()
        });
        assert!(made, "an uncached label set is made again");
    }
}
