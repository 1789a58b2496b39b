//! `EndpointBreakers`: the circuit breaker instances of one app's endpoints.
//!
//! daprd keys service invocation breakers by app and endpoint (`EndpointPolicy(app,
//! "<app>:<method>")`), in a per-app LRU cache of `circuitBreakerCacheSize` entries (default
//! 100), so a failing method opens its own breaker and leaves the app's other methods alone.
//! This is that cache without a lock: a concurrent map plus a use counter per entry; when full,
//! the least recently used entry is forgotten (a forgotten breaker comes back closed, as in
//! daprd).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::breaker::{BreakerSpec, SharedBreaker};

/// daprd's `defaultEndpointCacheSize`.
pub const DEFAULT_CACHE_SIZE: usize = 100;

struct Entry {
    breaker: Arc<SharedBreaker>,
    /// The `clock` value of the last lookup.
    used: AtomicU64,
}

/// One app's endpoint breakers.
pub(crate) struct EndpointBreakers {
    capacity: usize,
    clock: AtomicU64,
    map: DashMap<String, Entry>,
}

impl EndpointBreakers {
    /// An empty cache of at most `capacity` breakers (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), clock: AtomicU64::new(0), map: DashMap::new() }
    }

    /// The breaker of `endpoint` (named after it, as daprd names endpoint breakers), created
    /// from `spec` on first use.
    pub(crate) fn get(&self, endpoint: &str, spec: &Arc<BreakerSpec>) -> Arc<SharedBreaker> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = self.map.get(endpoint) {
            e.used.store(now, Ordering::Relaxed);
            return Arc::clone(&e.breaker);
        }
        while self.map.len() >= self.capacity {
            // The iterator's shard guards are released before the removal.
            let oldest = self.map.iter().min_by_key(|e| e.used.load(Ordering::Relaxed)).map(|e| e.key().clone());
            match oldest {
                Some(k) => {
                    self.map.remove(&k);
                }
                None => break,
            }
        }
        let entry = self.map.entry(endpoint.to_string()).or_insert_with(|| Entry {
            breaker: Arc::new(SharedBreaker::new(endpoint.to_string(), Arc::clone(spec))),
            used: AtomicU64::new(now),
        });
        Arc::clone(&entry.breaker)
    }

    /// How many breakers are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_breaker_per_endpoint_and_the_least_recently_used_is_forgotten() {
        let spec = Arc::new(BreakerSpec::default());
        let cache = EndpointBreakers::new(2);
        let a = cache.get("app:a", &spec);
        assert!(Arc::ptr_eq(&a, &cache.get("app:a", &spec)), "the same endpoint shares its breaker");
        assert_eq!(a.name(), "app:a", "named after the endpoint, as daprd's");
        let b = cache.get("app:b", &spec);
        assert!(!Arc::ptr_eq(&a, &b));
        cache.get("app:a", &spec); // a is now more recent than b
        cache.get("app:c", &spec);
        assert_eq!(cache.len(), 2);
        assert!(Arc::ptr_eq(&a, &cache.get("app:a", &spec)), "a was used recently and is kept");
        assert!(!Arc::ptr_eq(&b, &cache.get("app:b", &spec)), "b was the least recently used and was forgotten");
    }
}
