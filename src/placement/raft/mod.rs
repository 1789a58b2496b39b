//! The control plane's raft (issue 14 A.2): openraft 0.9 with the log, vote and snapshots in
//! SQLite (`log_store.rs`), the replicated placement membership as its state machine
//! (`state_machine.rs`), raft calls between nodes over ractor_cluster sessions (`network.rs`), and
//! the node that ties them together and says when it may lead (`node.rs`).

pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;

use serde::{Deserialize, Serialize};

/// A control-plane node's raft id.
pub type NodeId = u64;

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A host reported (or changed) its actor types.
    SetHost(state_machine::HostRecord),
    /// A host left the tables (its lease ended, or it reports no actor types).
    RemoveHost { namespace: String, name: String },
}

/// What applying a command answers (nothing yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult;

openraft::declare_raft_types!(
    /// The control plane's raft types.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[cfg(test)]
#[path = "store_tests.rs"]
mod store_tests;

#[cfg(test)]
#[path = "node_tests.rs"]
mod node_tests;
