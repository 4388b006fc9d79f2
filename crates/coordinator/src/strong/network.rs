//! Raft's messages between a shard's members, over the cluster RPC
//! ([`crate::peers::PeerRequest::Raft`]). Openraft batches log entries into each append; an
//! append too large for one RPC frame is refused before it is sent, and openraft retries
//! with fewer entries.

use super::types::{GroupId, Member, RaftId, TypeConfig};
use crate::node::Node;
use crate::peers::{PeerRequest, PeerResponse};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use ringkv_cluster::rpc::RpcError;
use serde::{Deserialize, Serialize};
use std::sync::Weak;

/// Bytes of log entries one append may carry: well within an RPC frame.
const APPEND_BYTES_MAX: usize = 16 << 20;

/// A Raft message for one shard's member.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftMessage {
    /// Log entries, or a heartbeat.
    Append(AppendEntriesRequest<TypeConfig>),
    /// A candidate's request for a vote.
    Vote(VoteRequest<RaftId>),
    /// A chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftMessage`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// See [`RaftMessage::Append`].
    Append(Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>),
    /// See [`RaftMessage::Vote`].
    Vote(Result<VoteResponse<RaftId>, RaftError<RaftId>>),
    /// See [`RaftMessage::Snapshot`].
    Snapshot(Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>),
}

/// Makes the connections of one shard's Raft to its members.
pub struct Network {
    pub(super) node: Weak<Node>,
    pub(super) group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftId, member: &Member) -> Connection {
        Connection {
            node: self.node.clone(),
            group: self.group.clone(),
            target,
            member: member.clone(),
        }
    }
}

/// One shard's link to one of its members.
pub struct Connection {
    node: Weak<Node>,
    group: GroupId,
    target: RaftId,
    member: Member,
}

impl Connection {
    /// Sends `message` and waits up to `option`'s deadline for the member's answer.
    async fn send<E: std::error::Error>(
        &self,
        message: RaftMessage,
        option: &RPCOption,
    ) -> Result<RaftReply, RPCError<RaftId, Member, E>> {
        let unreachable = |reason: String| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason)))
        };
        let Some(node) = self.node.upgrade() else {
            return Err(unreachable("this node is stopping".into()));
        };
        let view = node.view();
        let Some(address) = view.address(&self.member.id) else {
            return Err(unreachable(format!("{} is unknown", self.member.id)));
        };
        let request = PeerRequest::Raft {
            group: self.group.clone(),
            message,
        };
        match node
            .peers
            .get(address)
            .call(request, option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Raft(reply)) => Ok(reply),
            Ok(other) => Err(network_error(format!("unexpected answer {other:?}"))),
            Err(RpcError::Unavailable { reason, .. }) => Err(unreachable(reason)),
            Err(error) => Err(network_error(error.to_string())),
        }
    }

    fn remote<E: std::error::Error>(&self, error: E) -> RPCError<RaftId, Member, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.member.clone(),
            error,
        ))
    }
}

fn network_error<E: std::error::Error>(reason: String) -> RPCError<RaftId, Member, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(reason)))
}

fn unexpected<E: std::error::Error>(reply: RaftReply) -> RPCError<RaftId, Member, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "unexpected answer {reply:?}"
    ))))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        if rpc.entries.len() > 1 {
            let bytes: usize = rpc
                .entries
                .iter()
                .map(|entry| match &entry.payload {
                    openraft::EntryPayload::Normal(command) => {
                        command.writes.iter().map(|w| w.bytes()).sum()
                    }
                    _ => 0,
                })
                .sum();
            if bytes > APPEND_BYTES_MAX {
                let fewer = (rpc.entries.len() as u64 / 2).max(1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(fewer),
                ));
            }
        }
        match self.send(RaftMessage::Append(rpc), &option).await {
            Ok(RaftReply::Append(Ok(response))) => Ok(response),
            Ok(RaftReply::Append(Err(error))) => Err(self.remote(error)),
            Ok(other) => Err(unexpected(other)),
            Err(error) => Err(error),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, Member, RaftError<RaftId, InstallSnapshotError>>,
    > {
        match self.send(RaftMessage::Snapshot(rpc), &option).await {
            Ok(RaftReply::Snapshot(Ok(response))) => Ok(response),
            Ok(RaftReply::Snapshot(Err(error))) => Err(self.remote(error)),
            Ok(other) => Err(unexpected(other)),
            Err(error) => Err(error),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        match self.send(RaftMessage::Vote(rpc), &option).await {
            Ok(RaftReply::Vote(Ok(response))) => Ok(response),
            Ok(RaftReply::Vote(Err(error))) => Err(self.remote(error)),
            Ok(other) => Err(unexpected(other)),
            Err(error) => Err(error),
        }
    }
}

/// The error a member answers with when it holds no Raft for the group asked.
pub fn stopped() -> RaftError<RaftId> {
    RaftError::Fatal(Fatal::Stopped)
}
