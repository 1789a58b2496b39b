//! `NamespaceRegistry`: finds or starts the `Disseminator` of a namespace. A stream asks once, when
//! it connects; its later messages go straight to its namespace's process. Disseminators are kept
//! once started (a namespace left by every sidecar starts over inside its `Rounds`), so a stream
//! never holds the reference of a process that stopped, until leadership is lost: then all stop,
//! and with them every stream.

use std::collections::BTreeMap;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::namespace::{Disseminator, DisseminatorArgs, DisseminatorMsg};

/// Requests to the registry.
pub enum NamespaceRegistryMsg {
    /// The disseminator of a namespace, started if new.
    Get(String, RpcReplyPort<ActorRef<DisseminatorMsg>>),
    /// Every namespace's disseminator.
    All(RpcReplyPort<Vec<(String, ActorRef<DisseminatorMsg>)>>),
    /// This node became leader: each namespace of the replicated membership starts with its hosts
    /// kept in place (with fresh leases).
    Seed(std::sync::Arc<crate::placement::raft::state_machine::Membership>),
    /// This node stopped leading: every namespace stops, which ends every stream (its sidecars
    /// reconnect and find the new leader).
    Reset,
}

// A local message only (ractor's `cluster` feature, on with ractor_cluster, wants it said).
impl ractor::Message for NamespaceRegistryMsg {}

/// The process.
pub struct NamespaceRegistry;

/// Its state.
pub struct NamespaceRegistryState {
    args: DisseminatorArgs,
    namespaces: BTreeMap<String, ActorRef<DisseminatorMsg>>,
}

impl Actor for NamespaceRegistry {
    type Msg = NamespaceRegistryMsg;
    type State = NamespaceRegistryState;
    type Arguments = DisseminatorArgs;

    async fn pre_start(&self, _me: ActorRef<Self::Msg>, args: DisseminatorArgs) -> Result<Self::State, ActorProcessingErr> {
        Ok(NamespaceRegistryState { args, namespaces: BTreeMap::new() })
    }

    async fn handle(&self, me: ActorRef<Self::Msg>, msg: Self::Msg, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            NamespaceRegistryMsg::Get(ns, reply) => {
                let found = match st.namespaces.get(&ns) {
                    Some(d) => d.clone(),
                    None => {
                        let cell: ActorCell = me.get_cell();
                        let (d, _) = Actor::spawn_linked(None, Disseminator, (st.args.clone(), ns.clone()), cell).await?;
                        st.namespaces.insert(ns, d.clone());
                        d
                    }
                };
                let _ = reply.send(found);
            }
            NamespaceRegistryMsg::Seed(membership) => {
                for (ns, hosts) in &membership.namespaces {
                    let d = match st.namespaces.get(ns) {
                        Some(d) => d.clone(),
                        None => {
                            let (d, _) = Actor::spawn_linked(None, Disseminator, (st.args.clone(), ns.clone()), me.get_cell()).await?;
                            st.namespaces.insert(ns.clone(), d.clone());
                            d
                        }
                    };
                    let _ = d.send_message(DisseminatorMsg::Seed(hosts.values().cloned().collect()));
                }
            }
            NamespaceRegistryMsg::Reset => {
                for (_, d) in std::mem::take(&mut st.namespaces) {
                    d.stop(Some("leadership lost".into()));
                }
            }
            NamespaceRegistryMsg::All(reply) => {
                let _ = reply.send(st.namespaces.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
            }
        }
        Ok(())
    }
}
