//! `PlacementView`: the placement tables as a sidecar uses them, rebuilt from each update
//! (daprd's `inflight.Set`): per actor type, the ring of the hosts that registered it and each
//! host's app id. Lookups read the current view from an `ArcSwap` without a mailbox hop.

use std::collections::{BTreeMap, BTreeSet};

use rapr_proto::placement::v1::PlacementTables;

use crate::placement::hashing::Ring;

/// Where an actor lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorAddress {
    /// The host's internal gRPC address (`host:port`, its table name).
    pub address: String,
    /// The host's app id.
    pub app_id: String,
}

#[derive(Debug, Clone, PartialEq)]
struct TypeRing {
    ring: Ring,
    /// Host name -> app id.
    apps: BTreeMap<String, String>,
}

/// The tables of one update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementView {
    version: u64,
    replication_factor: i64,
    types: BTreeMap<String, TypeRing>,
}

/// Why a lookup found no host (daprd's errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No host registered the type (daprd's `ErrActorNoAddress`).
    #[error("did not find address for actor '{actor_type}||{actor_id}'")]
    NoAddress { actor_type: String, actor_id: String },
}

impl PlacementView {
    /// The view of `tables` at `version` (an absent replication factor is daprd's 100).
    pub fn from_tables(version: u64, tables: &PlacementTables) -> Self {
        let rf = if tables.replication_factor > 0 { tables.replication_factor } else { 100 };
        let vnodes = u32::try_from(rf).unwrap_or(u32::MAX);
        let types = tables
            .entries
            .iter()
            .map(|(t, table)| {
                let apps: BTreeMap<String, String> = table.load_map.iter().map(|(name, h)| (name.clone(), h.id.clone())).collect();
                (t.clone(), TypeRing { ring: Ring::new(apps.keys().cloned(), vnodes), apps })
            })
            .collect();
        Self { version, replication_factor: rf, types }
    }

    /// The version of the round that brought it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The actor types with at least one host.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().filter(|(_, r)| !r.apps.is_empty()).map(|(t, _)| t.as_str())
    }

    /// The host of actor `actor_type/actor_id`.
    pub fn lookup(&self, actor_type: &str, actor_id: &str) -> Result<ActorAddress, LookupError> {
        let none = || LookupError::NoAddress { actor_type: actor_type.to_string(), actor_id: actor_id.to_string() };
        let r = self.types.get(actor_type).ok_or_else(none)?;
        let address = r.ring.host(actor_id).ok_or_else(none)?;
        let app_id = r.apps.get(address).cloned().unwrap_or_default();
        Ok(ActorAddress { address: address.to_string(), app_id })
    }

    /// The actor types whose ring differs between `self` and `next` (added and removed types
    /// included): the ones whose actors may move (daprd locks those during a round).
    pub fn changed_types(&self, next: &PlacementView) -> BTreeSet<String> {
        let rf_changed = self.replication_factor != next.replication_factor;
        self.types
            .keys()
            .chain(next.types.keys())
            .filter(|t| rf_changed || self.types.get(*t).map(|r| &r.apps) != next.types.get(*t).map(|r| &r.apps))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapr_proto::placement::v1::{Host, PlacementTable};

    fn tables(hosts: &[(&str, &str, &[&str])]) -> PlacementTables {
        let mut t = PlacementTables { replication_factor: 100, version: "1".into(), ..Default::default() };
        for (name, app, types) in hosts {
            for ty in *types {
                let e: &mut PlacementTable = t.entries.entry(ty.to_string()).or_default();
                e.load_map.insert(name.to_string(), Host { name: name.to_string(), id: app.to_string(), ..Default::default() });
            }
        }
        t
    }

    #[test]
    fn lookups_follow_the_ring_of_the_type() {
        let v = PlacementView::from_tables(1, &tables(&[("a:1", "app-a", &["T", "U"]), ("b:1", "app-b", &["T"])]));
        let ring = Ring::new(["a:1", "b:1"], 100);
        for id in ["1", "2", "x", "actor-1"] {
            let found = v.lookup("T", id).unwrap();
            assert_eq!(found.address, ring.host(id).unwrap());
            assert_eq!(found.app_id, if found.address == "a:1" { "app-a" } else { "app-b" });
            assert_eq!(v.lookup("U", id).unwrap().address, "a:1", "only a hosts U");
        }
        assert_eq!(v.lookup("V", "1"), Err(LookupError::NoAddress { actor_type: "V".into(), actor_id: "1".into() }));
        assert_eq!(v.types().collect::<Vec<_>>(), ["T", "U"]);
    }

    #[test]
    fn changed_types_are_those_whose_hosts_changed() {
        let before = PlacementView::from_tables(1, &tables(&[("a:1", "a", &["T", "U"]), ("b:1", "b", &["T"])]));
        let after = PlacementView::from_tables(2, &tables(&[("a:1", "a", &["T", "U", "W"])]));
        assert_eq!(before.changed_types(&after).into_iter().collect::<Vec<_>>(), ["T", "W"]);
        assert!(before.changed_types(&before.clone()).is_empty());
    }
}
