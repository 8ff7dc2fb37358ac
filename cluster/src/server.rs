//! The node's gRPC server: the Peer service (Raft and table traffic, in
//! versioned envelopes) and the Cluster service (status), on one port.

// tonic's handlers return `Result<_, Status>`; the checks below feed them.
#![allow(clippy::result_large_err)]

use crate::meta::{MetaCommand, Retire};
use crate::node::{ClusterNode, NodeError};
use crate::wire::{self, DataError, DataReply, DataRequest, KIND_CHUNK, KIND_DATA};
use petuum_proto::v1::cluster_server::{Cluster, ClusterServer};
use petuum_proto::v1::peer_server::{Peer, PeerServer};
use petuum_proto::v1::{Envelope, MembershipRequest, Reply, StatusReply, StatusRequest};
use petuum_proto::PROTOCOL_VERSION;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub use crate::auth::token_matches;
use crate::auth::{cert_names_node, Caller, Door, Guard, LeafCert};

/// The interceptor of node `node`'s services behind `door`.
pub fn guard(node: &ClusterNode, door: Door) -> Guard {
    Guard::new(
        door,
        node.token.as_deref(),
        node.config.tls.is_some(),
        node.members.clone(),
    )
}

struct PeerSvc {
    node: Arc<ClusterNode>,
}

impl PeerSvc {
    /// Checks a peer message: its version, cluster and sender. A joining
    /// node (cluster 0, or a certificate that names no member yet) may only
    /// send `Join` (`joining` says whether the message is one).
    fn check(&self, req: &Request<Envelope>, raft: bool, joining: bool) -> Result<(), Status> {
        let env = req.get_ref();
        let candidate = req.extensions().get::<Caller>() == Some(&Caller::Candidate);
        if env.version == PROTOCOL_VERSION && (env.cluster == 0 || candidate) {
            if raft || !joining {
                return Err(Status::permission_denied(
                    "a node that is not a member yet may only ask to join",
                ));
            }
            if candidate {
                // With TLS the id asked for must be the certificate's.
                let leaf = req.extensions().get::<LeafCert>();
                let ok = leaf.is_some_and(|c| env.from != 0 && cert_names_node(&c.0, env.from));
                if !ok {
                    return Err(Status::permission_denied(format!(
                        "joining as node {}: the certificate does not name node-{}.petuum",
                        env.from, env.from
                    )));
                }
            }
            return Ok(());
        }
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
        if self.node.is_removed(env.from) {
            return Err(Status::permission_denied(removed_refusal(env.from)));
        }
        if raft && !self.node.placement().nodes().contains(&env.from) {
            return Err(Status::permission_denied(format!(
                "Raft message from node {}, which is not a member",
                env.from
            )));
        }
        // (The guard let only peers in; with TLS it named the node.)
        if let Some(Caller::Node(id)) = req.extensions().get::<Caller>() {
            if *id != env.from {
                return Err(Status::permission_denied(format!(
                    "the certificate of node {id} was used for a message from node {}",
                    env.from
                )));
            }
        }
        Ok(())
    }
}

/// What a node answers a removed node's calls with; the removed node,
/// reading its own id in it, learns of its removal (a removed node whose
/// metadata replica was dropped before the record reached it can read the
/// metadata only from peers, and they all answer this).
pub(crate) fn removed_refusal(node: u64) -> String {
    format!("node {node} was removed from the cluster")
}

#[tonic::async_trait]
impl Peer for PeerSvc {
    async fn raft(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        self.check(&req, true, false)?;
        let env = req.into_inner();
        let payload = self
            .node
            .handle_raft(env.group, env.kind, &env.payload)
            .await?;
        Ok(Response::new(Reply {
            payload: payload.into(),
        }))
    }

    async fn data(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        if req.get_ref().kind == KIND_CHUNK {
            self.check(&req, false, false)?;
            let Ok(DataRequest::DatasetChunk { record, index }) =
                wire::decode(&req.get_ref().payload, "chunk request")
            else {
                return Err(Status::invalid_argument(
                    "a chunk message must carry a dataset chunk request",
                ));
            };
            record.check().map_err(Status::invalid_argument)?;
            let payload = crate::datasets::fetch::raw_chunk(&self.node, record, index)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            return Ok(Response::new(Reply { payload }));
        }
        if req.get_ref().kind != KIND_DATA {
            self.check(&req, false, false)?;
            return Err(Status::invalid_argument(format!(
                "unknown data message kind {}",
                req.get_ref().kind
            )));
        }
        let decoded: Result<DataRequest, String> =
            wire::decode(&req.get_ref().payload, "data request");
        let joining =
            matches!(&decoded, Ok(DataRequest::Join { id, .. }) if *id == req.get_ref().from);
        self.check(&req, false, joining)?;
        let request = decoded.map_err(Status::invalid_argument)?;
        let from = req.get_ref().from;
        let reply: Result<DataReply, DataError> = self.node.handle_data_from(request, from).await;
        Ok(Response::new(Reply {
            payload: wire::encode(&reply).into(),
        }))
    }
}

struct ClusterSvc {
    node: Arc<ClusterNode>,
}

#[tonic::async_trait]
impl Cluster for ClusterSvc {
    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.node.status()))
    }

    async fn membership(
        &self,
        req: Request<MembershipRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let r = req.into_inner();
        let how = match r.action.as_str() {
            "add" => None,
            "drain" => Some(Retire::Drain),
            "remove" => Some(Retire::Remove),
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown membership action `{other}` (add, drain or remove)"
                )))
            }
        };
        let cmd = MetaCommand::Retire { node: r.node, how };
        match self.node.meta_command(cmd).await {
            Ok(_) => {}
            Err(DataError::Refused(e)) => return Err(Status::failed_precondition(e.to_string())),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        }
        tracing::info!(node = r.node, action = %r.action, "membership change recorded");
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
        .max_frame_size(Some(1 << 20))
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
    let peer = tonic::service::interceptor::InterceptedService::new(
        PeerServer::new(PeerSvc { node: node.clone() })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
        guard(&node, Door::Peer),
    );
    let cluster = ClusterServer::with_interceptor(
        ClusterSvc { node: node.clone() },
        guard(&node, Door::Client),
    );
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
    // The drain after the stop signal is bounded: hyper's graceful
    // shutdown waits for every connection to close, and a connection whose
    // peer does not answer (stopped, or one that never sent a request)
    // held a stopping node for its keepalive's 20 s, long enough for the
    // cluster to declare it dead for good. By the signal the node's jobs
    // and leaderships have moved, so what is still in flight gets an error
    // and goes to another node.
    let (fired, on_fire) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = fired.send(());
    };
    let server = builder
        .add_routes(extra)
        .add_service(peer)
        .add_service(cluster)
        .serve_with_incoming_shutdown(incoming, signal);
    let drain_cap = async move {
        match on_fire.await {
            Ok(()) => tokio::time::sleep(DRAIN_CAP).await,
            // The server ended without the signal: nothing to bound.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        r = server => r.map_err(|e| NodeError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        }),
        () = drain_cap => {
            tracing::info!(
                node = node.id(),
                after_ms = DRAIN_CAP.as_millis() as u64,
                "connections still open after the stop; closing them"
            );
            Ok(())
        }
    }
}

/// How long a stopping node's server waits for open connections to close.
const DRAIN_CAP: Duration = Duration::from_secs(2);
