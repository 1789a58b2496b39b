//! Raft between control-plane nodes over `ractor_cluster` sessions (authenticated with the
//! cluster cookie). Each node's `RaftRpcServer` joins a process group named for its raft id; a
//! call finds the remote member of the target's group (there is one only while a session to that
//! node is up) and sends the request as JSON with openraft's time-to-live as the call timeout,
//! since a session notices a silent peer only when a write fails.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NodeId, TypeConfig};

/// A raft call between nodes: the method, its JSON request, the JSON `Result` back. The variant
/// name is its tag on the wire: keep it.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum RaftRpcMsg {
    #[rpc]
    Call(String, Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// The process group of node `id` within `scope`.
pub fn group(id: NodeId) -> String {
    format!("raft-node-{id}")
}

/// Serves this node's raft to the others; each call runs in its own task so none waits behind
/// another.
pub struct RaftRpcServer;

fn answer<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

async fn dispatch(raft: Raft<TypeConfig>, method: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    Ok(match method {
        "append" => answer(&raft.append_entries(serde_json::from_slice(payload).map_err(|e| e.to_string())?).await),
        "vote" => answer(&raft.vote(serde_json::from_slice(payload).map_err(|e| e.to_string())?).await),
        "snapshot" => answer(&raft.install_snapshot(serde_json::from_slice(payload).map_err(|e| e.to_string())?).await),
        other => return Err(format!("unknown raft method {other:?}")),
    })
}

impl Actor for RaftRpcServer {
    type Msg = RaftRpcMsg;
    type State = Raft<TypeConfig>;
    type Arguments = Raft<TypeConfig>;

    async fn pre_start(&self, _me: ActorRef<Self::Msg>, raft: Raft<TypeConfig>) -> Result<Self::State, ActorProcessingErr> {
        Ok(raft)
    }

    async fn handle(&self, _me: ActorRef<Self::Msg>, msg: Self::Msg, raft: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let RaftRpcMsg::Call(method, payload, reply) = msg;
        let raft = raft.clone();
        tokio::spawn(async move {
            match dispatch(raft, &method, &payload).await {
                Ok(bytes) => {
                    let _ = reply.send(bytes);
                }
                // A malformed call gets no answer: the caller's timeout covers it.
                Err(e) => tracing::warn!(error = %e, "malformed raft call from a peer"),
            }
        });
        Ok(())
    }
}

/// Connections to peers, found by process group in `scope`.
#[derive(Clone)]
pub struct ClusterNetwork {
    pub scope: String,
}

/// One peer.
pub struct PeerConn {
    scope: String,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for ClusterNetwork {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> PeerConn {
        PeerConn { scope: self.scope.clone(), target }
    }
}

impl PeerConn {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
        opt: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>> {
        let members = ractor::pg::get_scoped_members(&self.scope, &group(self.target));
        let Some(cell) = members.into_iter().find(|m| !m.get_id().is_local()) else {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!("no session to raft node {}", self.target)))));
        };
        let actor: ActorRef<RaftRpcMsg> = cell.into();
        let payload = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ms = u64::try_from(opt.hard_ttl().as_millis()).unwrap_or(u64::MAX).max(1);
        let bytes = ractor::call_t!(actor, RaftRpcMsg::Call, ms, method.to_string(), payload)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.to_string()))))?;
        let res: Result<Resp, E> = serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}
