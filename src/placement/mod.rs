//! Actor placement: which sidecar hosts an actor (issue 14).
//!
//! `hashing.rs` is the pure core every sidecar and the placement service share: daprd's
//! consistent-hash ring, rebuilt by each sidecar from the membership the placement service
//! disseminates (daprd v1.17+ sends only the hosts per actor type, never the ring itself).
//! `membership.rs` is the service's pure core of who hosts what, and the checks on reports;
//! `rounds.rs` the lock / update / unlock rounds that carry it to the sidecars; `leases.rs` how
//! long a host's actors stay put once it stops renewing (beyond daprd). `server/` is the service
//! (`rapr placement`) around those cores, `raft/` its cluster, `client/` the sidecar's
//! `PlacementClient`, and `conn.rs` the one place their connections are made (TLS goes there);
//! docs/notes/placement-daprd.md records what daprd v1.18 does, read from its source.

pub mod client;
pub mod conn;
pub mod hashing;
pub mod leases;
pub mod membership;
pub mod raft;
pub mod rounds;
pub mod server;

#[cfg(test)]
#[path = "proto_tests.rs"]
mod proto_tests;
