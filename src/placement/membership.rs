//! The hosts of one namespace as placement keeps them, and the tables it disseminates: a pure
//! core (daprd v1.18's disseminator store and report checks, docs/notes/placement-daprd.md §2, §6).
//!
//! Each sidecar stream has at most one entry: its last report, kept only while it names at least
//! one actor type. A report "changes" the membership when its sorted actor types, app id or
//! namespace differ from the entry's (a new stream only when it has actor types): that is what
//! starts a dissemination round. The tables carry, per actor type, each host's whole report by
//! its name; the ring is left for each sidecar to build (`hashing.rs`).

use std::collections::BTreeMap;

use rapr_proto::placement::v1::{Host, HostOperation, PlacementTable, PlacementTables};

/// Identifies one sidecar's stream (placement numbers them as they connect).
pub type StreamId = u64;

/// Why placement refuses a sidecar's message; the stream ends with it (daprd's codes and texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRefused {
    /// gRPC InvalidArgument.
    #[error("{0}")]
    InvalidArgument(String),
    /// gRPC PermissionDenied.
    #[error("{0}")]
    PermissionDenied(String),
}

/// daprd's checks on every message of a stream (without mTLS, which adds identity checks):
/// operation and version set together, app id and namespace present, and `dapr.internal.*` actor
/// types only as `dapr.internal.{namespace}.{app id}.…`, so an app cannot host another app's
/// internal (workflow) actors.
pub fn check_host(host: &Host) -> Result<(), HostRefused> {
    if host.operation == HostOperation::Unknown as i32 && host.version.is_some() {
        return Err(HostRefused::InvalidArgument("both operation and version must be set or both must be unset".into()));
    }
    if host.id.is_empty() || host.namespace.is_empty() {
        return Err(HostRefused::InvalidArgument("host ID and namespace must be provided".into()));
    }
    for entity in &host.entities {
        let parts: Vec<&str> = entity.split('.').collect();
        let reserved = parts.len() >= 2 && parts[0] == "dapr" && parts[1] == "internal";
        if reserved && (parts.len() < 4 || parts[2] != host.namespace || parts[3] != host.id) {
            return Err(HostRefused::PermissionDenied(format!(
                "entity {entity} is not allowed for app ID {} in namespace {}",
                host.id, host.namespace
            )));
        }
    }
    Ok(())
}

/// The reporting hosts of one namespace, by stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Membership {
    hosts: BTreeMap<StreamId, Host>,
}

impl Membership {
    /// Whether `report` from `stream` would change the tables (its actor types are compared
    /// sorted).
    pub fn changes(&self, stream: StreamId, report: &Host) -> bool {
        let mut entities = report.entities.clone();
        entities.sort();
        match self.hosts.get(&stream) {
            None => !entities.is_empty(),
            Some(known) => known.entities != entities || known.id != report.id || known.namespace != report.namespace,
        }
    }

    /// Records `report` from `stream`; `true` when that changed the tables. A report with no
    /// actor types removes the stream's entry.
    pub fn report(&mut self, stream: StreamId, mut report: Host) -> bool {
        if !self.changes(stream, &report) {
            return false;
        }
        if report.entities.is_empty() {
            self.hosts.remove(&stream);
        } else {
            report.entities.sort();
            self.hosts.insert(stream, report);
        }
        true
    }

    /// Forgets a closed stream; `true` when it had an entry (the tables change).
    pub fn remove(&mut self, stream: StreamId) -> bool {
        self.hosts.remove(&stream).is_some()
    }

    /// Whether `stream` hosts any actor type.
    pub fn has(&self, stream: StreamId) -> bool {
        self.hosts.contains_key(&stream)
    }

    /// No stream hosts any actor type.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The tables of round `version`: per actor type, each host's report by its name. daprd also
    /// sends the version as text and leaves the ring fields empty. Two streams reporting the same
    /// name (a sidecar reconnected before its old stream was noticed closed): the later stream's
    /// report wins, where daprd keeps whichever its map visits last.
    pub fn tables(&self, version: u64, replication_factor: i64) -> PlacementTables {
        let mut entries: std::collections::HashMap<String, PlacementTable> = std::collections::HashMap::new();
        // Ascending stream ids: a later stream overwrites an earlier one of the same name.
        for host in self.hosts.values() {
            for entity in &host.entities {
                entries.entry(entity.clone()).or_default().load_map.insert(host.name.clone(), host.clone());
            }
        }
        PlacementTables { entries, version: version.to_string(), api_level: 0, replication_factor }
    }

    /// Each host name's report as the tables carry it (a later stream's wins for a shared name).
    pub fn by_name(&self) -> BTreeMap<&str, &Host> {
        self.hosts.values().map(|h| (h.name.as_str(), h)).collect()
    }

    /// The hosts sorted by name (the metadata endpoint's view).
    pub fn hosts_by_name(&self) -> Vec<&Host> {
        let mut hosts: Vec<&Host> = self.hosts.values().collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        hosts
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
