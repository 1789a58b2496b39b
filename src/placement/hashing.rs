//! daprd's consistent-hash ring for one actor type, as every daprd sidecar rebuilds it from the
//! placement table (daprd `pkg/placement/hashing`): a pure value, no I/O.
//!
//! - A key's hash is the first 8 bytes, little-endian, of the unkeyed BLAKE2b-512 digest of its
//!   UTF-8 bytes.
//! - Each host (by its table name, `host:internal-port`) stands on the ring `replication_factor`
//!   times: virtual node `i` is the hash of the name with the decimal `i` appended, no separator.
//! - An actor belongs to the host of the first virtual node at or after the hash of its id alone
//!   (the type picks the ring, so it is not hashed), wrapping round to the first.
//!
//! rapr must place exactly as daprd does: a rapr sidecar and a daprd sidecar in one cluster have to
//! agree on every actor's host. The bounded-load helpers daprd still carries are not on its
//! lookup path in v1.18, so they are not here.

use blake2::{Blake2b512, Digest};

/// daprd placement's `--replicationFactor` default: virtual nodes per host.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 100;

/// The ring hash of `key`.
pub fn hash(key: &str) -> u64 {
    let digest = Blake2b512::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The ring of one actor type: each host's virtual nodes, sorted by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// The hosts' table names, sorted (an index into this is a virtual node's owner).
    hosts: Vec<String>,
    /// (hash, index into `hosts`), ascending. Two equal hashes (a 64-bit collision, never
    /// expected) resolve to the first host by name, where daprd's map keeps either.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// The ring of `hosts` (table names; duplicates count once) with `replication_factor`
    /// virtual nodes each.
    pub fn new<I, S>(hosts: I, replication_factor: u32) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut hosts: Vec<String> = hosts.into_iter().map(Into::into).collect();
        hosts.sort();
        hosts.dedup();
        let mut points = Vec::with_capacity(hosts.len() * replication_factor as usize);
        let mut key = String::new();
        for (i, name) in hosts.iter().enumerate() {
            for v in 0..replication_factor {
                key.clear();
                key.push_str(name);
                key.push_str(itoa::Buffer::new().format(v));
                // `hosts` came from a Vec: far fewer than u32::MAX of them.
                points.push((hash(&key), i as u32));
            }
        }
        points.sort_unstable();
        Self { hosts, points }
    }

    /// The table name of the host that owns actor `id`; `None` on an empty ring (daprd's "no
    /// hosts added").
    pub fn host(&self, id: &str) -> Option<&str> {
        if self.points.is_empty() {
            return None;
        }
        let h = hash(id);
        let at = self.points.partition_point(|&(p, _)| p < h);
        let (_, owner) = self.points[if at == self.points.len() { 0 } else { at }];
        self.hosts.get(owner as usize).map(String::as_str)
    }

    /// The hosts on the ring, sorted.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
}

#[cfg(test)]
#[path = "hashing_tests.rs"]
mod tests;
