//! The node's gRPC server: the Peer service (Raft and table traffic, in
//! versioned envelopes) and the Cluster service (status), on one port.

// tonic's handlers return `Result<_, Status>`; the checks below feed them.
#![allow(clippy::result_large_err)]

use crate::node::{ClusterNode, NodeError};
use crate::wire::{self, DataError, DataReply, DataRequest, KIND_DATA};
use petuum_proto::v1::cluster_server::{Cluster, ClusterServer};
use petuum_proto::v1::peer_server::{Peer, PeerServer};
use petuum_proto::v1::{Envelope, Reply, StatusReply, StatusRequest};
use petuum_proto::PROTOCOL_VERSION;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Whether `got` is the token `want`, compared without early exit (the
/// time taken does not depend on where they differ).
pub fn token_matches(want: &str, got: &str) -> bool {
    let (a, b) = (want.as_bytes(), got.as_bytes());
    let mut diff = (a.len() != b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Checks the bearer token when the node has one configured. The token is
/// never logged.
pub fn check_token<T>(node: &ClusterNode, req: &Request<T>) -> Result<(), Status> {
    let Some(want) = &node.token else {
        return Ok(());
    };
    let got = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token_matches(want, got) {
        return Err(Status::unauthenticated(
            "missing or wrong bearer token (this node requires client_token_file's token)",
        ));
    }
    Ok(())
}

struct PeerSvc {
    node: Arc<ClusterNode>,
}

impl PeerSvc {
    fn check(&self, req: &Request<Envelope>, raft: bool) -> Result<(), Status> {
        check_token(&self.node, req)?;
        let env = req.get_ref();
        if env.version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported: node {} speaks version {PROTOCOL_VERSION}",
                env.version,
                self.node.id()
            )));
        }
        if env.cluster != self.node.cluster_id {
            return Err(Status::permission_denied(format!(
                "message for cluster {:016x}, but node {} belongs to cluster {:016x} \
                 (check that every node lists the same peers, shards and replicas)",
                env.cluster,
                self.node.id(),
                self.node.cluster_id
            )));
        }
        if raft {
            if !self.node.placement.nodes().contains(&env.from) {
                return Err(Status::permission_denied(format!(
                    "Raft message from node {}, which is not a member",
                    env.from
                )));
            }
            if self.node.config.tls.is_some() && req.peer_certs().is_none() {
                return Err(Status::unauthenticated(
                    "Raft messages need a peer certificate signed by the cluster CA",
                ));
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Peer for PeerSvc {
    async fn raft(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        self.check(&req, true)?;
        let env = req.into_inner();
        let payload = self
            .node
            .handle_raft(env.group, env.kind, &env.payload)
            .await?;
        Ok(Response::new(Reply { payload }))
    }

    async fn data(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        self.check(&req, false)?;
        let env = req.into_inner();
        if env.kind != KIND_DATA {
            return Err(Status::invalid_argument(format!(
                "unknown data message kind {}",
                env.kind
            )));
        }
        let request: DataRequest =
            wire::decode(&env.payload, "data request").map_err(Status::invalid_argument)?;
        let reply: Result<DataReply, DataError> = self.node.handle_data(request).await;
        Ok(Response::new(Reply {
            payload: wire::encode(&reply),
        }))
    }
}

struct ClusterSvc {
    node: Arc<ClusterNode>,
}

#[tonic::async_trait]
impl Cluster for ClusterSvc {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        check_token(&self.node, &req)?;
        Ok(Response::new(self.node.status()))
    }
}

/// Serves the node until `shutdown` resolves. Binds first, so a busy port
/// is reported at once; `on_ready` runs once the port is bound and the
/// node's groups are bootstrapped (petuumd tells systemd there).
pub async fn serve(
    node: Arc<ClusterNode>,
    extra: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(),
) -> Result<(), NodeError> {
    let addr = node.config.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = &node.config.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| NodeError::Tls(format!("{}: {e}", p.display())))
        };
        let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        let ca = tonic::transport::Certificate::from_pem(read(&tls.ca)?);
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(identity)
                    .client_ca_root(ca)
                    .client_auth_optional(true),
            )
            .map_err(|e| NodeError::Tls(e.to_string()))?;
    }
    // A peer's message is bounded (node.toml `max_message_mb`): one that
    // claims more is refused before it is buffered.
    let max_message = node.config.max_message_mb as usize * (1 << 20);
    let peer = PeerServer::new(PeerSvc { node: node.clone() })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let cluster = ClusterServer::new(ClusterSvc { node: node.clone() });
    // Accepted sockets get TCP_NODELAY here: with a caller-bound listener
    // tonic does not set it, and Nagle + delayed ACKs add ~40 ms per RPC.
    let incoming = tonic::transport::server::TcpIncoming::from_listener(
        listener,
        true,
        Some(Duration::from_secs(30)),
    )
    .map_err(|e| NodeError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    tracing::info!(node = node.id(), %addr, "listening");
    node.bootstrap().await;
    tokio::spawn(node.clone().balance_leaders());
    tokio::spawn(node.clone().schedule_snapshots());
    node.watch_elections();
    on_ready();
    builder
        .add_routes(extra)
        .add_service(peer)
        .add_service(cluster)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| NodeError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}
