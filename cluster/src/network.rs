//! Connections to peers: one HTTP/2 channel per peer (tonic multiplexes
//! every Raft group and the table traffic over it), and openraft's network
//! traits on top.

use crate::wire::{
    self, RaftBatch, RaftBatchReply, KIND_APPEND, KIND_BATCH, KIND_SNAPSHOT, KIND_VOTE,
    MAX_BATCH_MESSAGES,
};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use petuum_proto::v1::peer_client::PeerClient;
use petuum_proto::v1::Envelope;
use petuum_proto::PROTOCOL_VERSION;
use petuum_storage::TypeConfig;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Which RPC of the Peer service.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    Raft,
    Data,
}

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused, reset or timed out.
    #[error("node {node} unreachable: {reason}")]
    Unreachable { node: u64, reason: String },
    /// The peer answered with an error status.
    #[error("node {node} refused: {message}")]
    Remote {
        node: u64,
        code: tonic::Code,
        message: String,
    },
}

/// Which of a peer's two connections a message takes. Raft's small
/// messages (votes, heartbeats, appends of a few entries) have their own
/// connection: on the shared one they queued behind snapshot chunks, large
/// appends, loads and long replies (HTTP/2 multiplexes streams but one TCP
/// connection and its flow-control window carry them all), missed the
/// election timeout, and a 400 MB load on a loaded machine turned into
/// elections every few hundred milliseconds and no leader for a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Small Raft messages.
    Control,
    /// Everything else: table traffic, snapshots, large appends.
    Bulk,
}

/// A Raft message of at most this many bytes takes the control lane.
pub const CONTROL_BYTES: usize = 64 << 10;

impl Lane {
    pub fn of(method: Method, payload: usize) -> Lane {
        match method {
            Method::Raft if payload <= CONTROL_BYTES => Lane::Control,
            _ => Lane::Bulk,
        }
    }
}

/// Peer addresses and their channels.
pub struct Peers {
    me: u64,
    cluster: u64,
    addrs: Mutex<HashMap<u64, String>>,
    /// Two connections per peer, by [`Lane`].
    channels: Mutex<HashMap<(u64, Lane), Channel>>,
    tls: Option<ClientTlsConfig>,
    token: Option<String>,
    /// Peers whose last call failed to reach them: one log line when a
    /// peer goes down and one when it answers again, not one per RPC.
    down: Mutex<std::collections::HashSet<u64>>,
    /// The node's adaptive bound on the bytes of one append.
    append_budget: AppendBudget,
    /// Whether small Raft messages to a peer are coalesced ([`Peers::call`]).
    coalesce: AtomicBool,
    /// Per peer, the queue of its coalescing task.
    coalescers: Mutex<HashMap<u64, mpsc::UnboundedSender<Queued>>>,
    /// Peers that do not know batches (an older version): one call each.
    no_batch: Mutex<std::collections::HashSet<u64>>,
    /// The source address of this node's connections, if set.
    source: Mutex<Option<std::net::IpAddr>>,
    this: Weak<Peers>,
}

/// A small Raft message waiting for its peer's coalescing task.
struct Queued {
    group: u64,
    kind: u32,
    payload: Vec<u8>,
    timeout: Duration,
    reply: oneshot::Sender<Result<tonic::codegen::Bytes, CallError>>,
}

/// Batches to one peer in flight at once: while they are out, the next
/// messages queue and leave together.
const BATCHES_IN_FLIGHT: usize = 2;

/// How long a batch keeps its call slot: one a peer is slow to answer
/// (its reply waits for every message in it) stops holding back the next
/// messages to that peer after this.
const SLOT_HOLD: Duration = Duration::from_millis(10);

/// The most payload bytes of one batch (well within the control lane).
const BATCH_BYTES: usize = CONTROL_BYTES / 2;

/// Raft messages of at most this many bytes are coalesced. Larger appends
/// go as their own calls: each group has one append in flight, and
/// queueing 16 KB appends of 16 groups behind two calls per peer cut the
/// committed bytes/s of `petuum-cluster-bench` by a fifth.
const COALESCE_BYTES: usize = 8 << 10;

impl Peers {
    /// `me` is 0 for a client that is not a node.
    pub fn new(
        me: u64,
        cluster: u64,
        addrs: HashMap<u64, String>,
        tls: Option<ClientTlsConfig>,
        token: Option<String>,
    ) -> Arc<Peers> {
        Arc::new_cyclic(|this| Peers {
            me,
            cluster,
            addrs: Mutex::new(addrs),
            channels: Mutex::new(HashMap::new()),
            tls,
            token,
            down: Mutex::new(Default::default()),
            append_budget: AppendBudget::new(append_bytes(256)),
            coalesce: AtomicBool::new(true),
            coalescers: Mutex::new(HashMap::new()),
            no_batch: Mutex::new(Default::default()),
            source: Mutex::new(None),
            this: this.clone(),
        })
    }

    /// Turns the coalescing of small Raft messages on or off (node.toml
    /// `[raft] coalesce_messages`).
    pub fn set_coalesce(&self, on: bool) {
        self.coalesce.store(on, Ordering::Relaxed);
    }

    /// The bound on the bytes of one append, shared by every group of the
    /// node ([`AppendBudget`]).
    pub fn append_budget(&self) -> &AppendBudget {
        &self.append_budget
    }

    /// Logs a peer's change of reachability (a node's calls only).
    fn note_reachability<T>(&self, node: u64, result: &Result<T, CallError>) {
        if self.me == 0 {
            return;
        }
        match result {
            Err(CallError::Unreachable { reason, .. }) => {
                if self.down.lock().insert(node) {
                    tracing::warn!(
                        node = self.me,
                        peer = node,
                        error = %reason,
                        "peer unreachable (logged again when it answers)"
                    );
                }
            }
            _ => {
                if self.down.lock().remove(&node) {
                    tracing::info!(node = self.me, peer = node, "peer reachable again");
                }
            }
        }
    }

    /// Whether the last call to `node` failed to reach it (a node's
    /// calls: the Raft heartbeats to it among them).
    pub fn is_down(&self, node: u64) -> bool {
        self.down.lock().contains(&node)
    }

    pub fn me(&self) -> u64 {
        self.me
    }

    pub fn cluster(&self) -> u64 {
        self.cluster
    }

    pub fn addr(&self, node: u64) -> Option<String> {
        self.addrs.lock().get(&node).cloned()
    }

    /// The address this node's connections come from (node.toml
    /// `source_address`); channels made before keep theirs.
    pub fn set_source(&self, ip: Option<std::net::IpAddr>) {
        *self.source.lock() = ip;
    }

    /// Records a peer's address unless one is known.
    pub fn set_addr_if_unknown(&self, node: u64, addr: String) {
        self.addrs.lock().entry(node).or_insert(addr);
    }

    /// Records (or changes) a peer's address; its channels reconnect.
    pub fn set_addr(&self, node: u64, addr: String) {
        self.channels.lock().retain(|(n, _), _| *n != node);
        self.addrs.lock().insert(node, addr);
    }

    /// The channel to a node (connected lazily, reconnected by tonic).
    pub fn channel(&self, node: u64) -> Result<Channel, CallError> {
        self.lane(node, Lane::Bulk)
    }

    /// The channel of one lane to a node.
    pub fn lane(&self, node: u64, lane: Lane) -> Result<Channel, CallError> {
        if let Some(c) = self.channels.lock().get(&(node, lane)) {
            return Ok(c.clone());
        }
        let addr = self.addr(node).ok_or_else(|| CallError::Unreachable {
            node,
            reason: "no address known".into(),
        })?;
        let ep = endpoint(&addr, self.tls.clone())
            .map_err(|reason| CallError::Unreachable { node, reason })?;
        let channel = match *self.source.lock() {
            // tonic's connector, as `connect_lazy` builds it, bound to the
            // source address (TLS and the connect timeout are added by
            // `connect_with_connector_lazy` as by `connect_lazy`).
            Some(ip) => {
                let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
                http.enforce_http(false);
                http.set_nodelay(true);
                http.set_local_address(Some(ip));
                ep.connect_with_connector_lazy(http)
            }
            None => ep.connect_lazy(),
        };
        self.channels.lock().insert((node, lane), channel.clone());
        Ok(channel)
    }

    fn client(&self, node: u64, lane: Lane) -> Result<PeerClient<Channel>, CallError> {
        Ok(PeerClient::new(self.lane(node, lane)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                req.metadata_mut().insert("authorization", v);
            }
        }
    }

    /// A node's status (the Cluster service).
    pub async fn status(
        &self,
        node: u64,
        timeout: Duration,
    ) -> Result<petuum_proto::v1::StatusReply, CallError> {
        let mut client = petuum_proto::v1::cluster_client::ClusterClient::new(self.channel(node)?);
        let mut req = tonic::Request::new(petuum_proto::v1::StatusRequest {});
        req.set_timeout(timeout);
        self.authorize(&mut req);
        match tokio::time::timeout(timeout, client.status(req)).await {
            Err(_) => Err(CallError::Unreachable {
                node,
                reason: format!("no answer within {timeout:?}"),
            }),
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(status_error(node, status)),
        }
    }

    /// Sends one envelope and returns the reply payload.
    ///
    /// A node's small Raft messages (heartbeats, votes, appends of at most
    /// [`COALESCE_BYTES`]) to one peer are coalesced: each peer has a task that sends
    /// what the node's groups queued for it together, in one call the peer
    /// answers message by message ([`KIND_BATCH`]). A clock writes an entry
    /// on every shard, so its appends to a follower left as one call per
    /// group (16 calls, 16 handler wake-ups on each side); they now leave
    /// as one or two. With at most [`BATCHES_IN_FLIGHT`] calls out per
    /// peer, a lone message still leaves at once.
    pub async fn call(
        &self,
        node: u64,
        method: Method,
        group: u64,
        kind: u32,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<tonic::codegen::Bytes, CallError> {
        let small = matches!(method, Method::Raft)
            && kind != KIND_SNAPSHOT
            && payload.len() <= COALESCE_BYTES;
        if small
            && self.me != 0
            && self.coalesce.load(Ordering::Relaxed)
            && !self.no_batch.lock().contains(&node)
        {
            let (reply, answer) = oneshot::channel();
            let queued = Queued {
                group,
                kind,
                payload,
                timeout,
                reply,
            };
            match self.coalescer(node).send(queued) {
                Ok(()) => {
                    return match tokio::time::timeout(timeout, answer).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(_)) => Err(CallError::Unreachable {
                            node,
                            reason: "the node is shutting down".into(),
                        }),
                        Err(_) => Err(CallError::Unreachable {
                            node,
                            reason: format!("no answer within {timeout:?}"),
                        }),
                    };
                }
                Err(mpsc::error::SendError(q)) => {
                    return self
                        .call_one(node, method, q.group, q.kind, q.payload, timeout)
                        .await
                }
            }
        }
        self.call_one(node, method, group, kind, payload, timeout)
            .await
    }

    /// The queue of `node`'s coalescing task, started on first use.
    fn coalescer(&self, node: u64) -> mpsc::UnboundedSender<Queued> {
        let mut all = self.coalescers.lock();
        if let Some(tx) = all.get(&node).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(coalesce(self.this.clone(), node, rx));
        all.insert(node, tx.clone());
        tx
    }

    /// Sends what a coalescing task took from its queue: one message as
    /// itself, several as a batch, and hands each its answer.
    async fn send_batch(&self, node: u64, mut batch: Vec<Queued>) {
        if batch.len() == 1 {
            let q = batch.pop().expect("one message");
            let r = self
                .call_one(node, Method::Raft, q.group, q.kind, q.payload, q.timeout)
                .await;
            let _ = q.reply.send(r);
            return;
        }
        let timeout = batch.iter().map(|q| q.timeout).max().expect("messages");
        let msgs: RaftBatch = batch
            .iter_mut()
            .map(|q| (q.group, q.kind, std::mem::take(&mut q.payload)))
            .collect();
        let r = self
            .call_one(
                node,
                Method::Raft,
                0,
                KIND_BATCH,
                wire::encode(&msgs),
                timeout,
            )
            .await;
        let answers: Vec<Result<tonic::codegen::Bytes, CallError>> = match r {
            Ok(bytes) => match wire::decode::<RaftBatchReply>(&bytes, "Raft batch reply") {
                Ok(a) if a.len() == batch.len() => a
                    .into_iter()
                    .map(|a| {
                        a.map(Into::into)
                            .map_err(|(code, message)| CallError::Remote {
                                node,
                                code: tonic::Code::from_i32(code),
                                message,
                            })
                    })
                    .collect(),
                other => {
                    let message = match other {
                        Ok(a) => format!("{} answers to {} messages", a.len(), batch.len()),
                        Err(e) => e,
                    };
                    let e = CallError::Remote {
                        node,
                        code: tonic::Code::Internal,
                        message: format!("Raft batch: {message}"),
                    };
                    vec![Err(e); batch.len()]
                }
            },
            Err(CallError::Remote { code, message, .. })
                if (code == tonic::Code::InvalidArgument
                    && message.contains("unknown Raft message kind"))
                    || code == tonic::Code::NotFound =>
            {
                // A peer of an older version: one call per message from
                // now on. It looks up the envelope's group (0, the
                // metadata group) before the kind, so one without a
                // metadata replica answers "not found"; a peer that knows
                // batches never does.
                tracing::info!(
                    node = self.me,
                    peer = node,
                    "peer does not take Raft batches; sending its messages one by one"
                );
                self.no_batch.lock().insert(node);
                for (q, (group, kind, payload)) in batch.into_iter().zip(msgs) {
                    let r = self
                        .call_one(node, Method::Raft, group, kind, payload, q.timeout)
                        .await;
                    let _ = q.reply.send(r);
                }
                return;
            }
            Err(e) => vec![Err(e); batch.len()],
        };
        for (q, a) in batch.into_iter().zip(answers) {
            let _ = q.reply.send(a);
        }
    }

    /// Sends one envelope as its own call.
    async fn call_one(
        &self,
        node: u64,
        method: Method,
        group: u64,
        kind: u32,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<tonic::codegen::Bytes, CallError> {
        let mut client = self.client(node, Lane::of(method, payload.len()))?;
        let mut req = tonic::Request::new(Envelope {
            version: PROTOCOL_VERSION,
            cluster: self.cluster,
            from: self.me,
            group,
            kind,
            payload: payload.into(),
        });
        req.set_timeout(timeout);
        self.authorize(&mut req);
        let fut = async {
            match method {
                Method::Raft => client.raft(req).await,
                Method::Data => client.data(req).await,
            }
        };
        let result = match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(CallError::Unreachable {
                node,
                reason: format!("no answer within {timeout:?}"),
            }),
            Ok(Ok(reply)) => Ok(reply.into_inner().payload),
            Ok(Err(status)) => Err(status_error(node, status)),
        };
        self.note_reachability(node, &result);
        result
    }
}

/// A peer's coalescing task: takes the first queued message, then (once a
/// call slot is free, and after letting the tasks woken by the same event
/// run) everything else queued up to [`BATCH_BYTES`], and sends it on its
/// own task. The peer answers a batch when every message in it is
/// handled, so one group that is slow there delays the others' answers in
/// that batch; [`SLOT_HOLD`] bounds how long it delays the next batch.
async fn coalesce(peers: Weak<Peers>, node: u64, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut held: Option<Queued> = None;
    loop {
        let first = match held.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::task::yield_now().await;
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_MESSAGES {
            match rx.try_recv() {
                Ok(q) if bytes + q.payload.len() > BATCH_BYTES => {
                    held = Some(q);
                    break;
                }
                Ok(q) => {
                    bytes += q.payload.len();
                    batch.push(q);
                }
                Err(_) => break,
            }
        }
        let Some(p) = peers.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let send = p.send_batch(node, batch);
            tokio::pin!(send);
            tokio::select! {
                _ = &mut send => return,
                _ = tokio::time::sleep(SLOT_HOLD) => drop(slot),
            }
            send.await;
        });
    }
}

fn status_error(node: u64, status: tonic::Status) -> CallError {
    match status.code() {
        // tonic reports connection failures (refused, reset mid-call) as
        // Unavailable or Unknown("transport error"); petuum's handlers never
        // answer Unknown themselves.
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Unknown => CallError::Unreachable {
            node,
            reason: status.message().to_string(),
        },
        // The HTTP/2 connection or stream broke (a peer stopping or
        // killed mid-call resets it): tonic says Internal, "h2 protocol
        // error: ...", but the peer answered nothing. Counted as a refusal
        // it ended a job's model export at once (a chaos run, a node
        // SIGTERMed) where a retry on the group's next leader would do.
        tonic::Code::Internal if status.message().starts_with("h2 protocol error") => {
            CallError::Unreachable {
                node,
                reason: status.message().to_string(),
            }
        }
        code => CallError::Remote {
            node,
            code,
            message: status.message().to_string(),
        },
    }
}

/// An endpoint for `addr` (`host:port`), over TLS when configured.
pub fn endpoint(addr: &str, tls: Option<ClientTlsConfig>) -> Result<Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address `{addr}`: {e}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls)
            .map_err(|e| format!("TLS setup for `{addr}`: {e}"))?;
    }
    Ok(ep)
}

/// How many bytes of log entries one append carries, adapted to what the
/// host manages: openraft 0.9 gives an append its heartbeat interval
/// (75 ms by default) from send to answer, follower's write and WAL sync
/// included, and drops it past that; an append too big for a loaded host
/// then times out every time, is sent again, and the follower falls behind
/// for good (it also hears no heartbeat meanwhile and starts elections).
/// So the budget shrinks by half on every append that ran out of time and
/// by a quarter on one that used more than three quarters of it, and grows
/// by a quarter after one that was cut to the budget and answered within
/// half of it (shrinking faster than it grows, as TCP's window does), between
/// [`AppendBudget::MIN`] and the cap ([`append_bytes`]). The replication
/// reads of the log store use the same figure
/// (`RaftLogStore::with_read_budget`), so what is read is what is sent.
#[derive(Debug)]
pub struct AppendBudget {
    /// Shared with the log stores' replication reads.
    bytes: Arc<std::sync::atomic::AtomicUsize>,
    cap: std::sync::atomic::AtomicUsize,
}

impl AppendBudget {
    /// The least it shrinks to (one entry always goes, whatever its size).
    pub const MIN: usize = 64 << 10;
    /// Where it starts.
    const START: usize = 1 << 20;

    fn new(cap: usize) -> Self {
        AppendBudget {
            bytes: Arc::new(Self::START.min(cap).into()),
            cap: cap.into(),
        }
    }

    /// Sets the cap (node.toml `max_message_mb`, [`append_bytes`]).
    pub fn set_cap(&self, cap: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.cap.store(cap.max(1), Relaxed);
        self.bytes.fetch_min(cap.max(1), Relaxed);
    }

    /// The bytes one append may carry now.
    pub fn get(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The shared figure, for the log store's reads.
    pub fn shared(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.bytes.clone()
    }

    /// An append of `sent` bytes (cut to the budget or not) was answered
    /// after `took` of its `deadline`, or (`took` = None) ran out of it.
    pub fn observe(&self, sent: usize, cut: bool, took: Option<Duration>, deadline: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let cap = self.cap.load(Relaxed);
        let _ = self.bytes.fetch_update(Relaxed, Relaxed, |b| {
            let next = match took {
                None => b / 2,
                Some(t) if t > deadline * 3 / 4 => b - b / 4,
                Some(t) if cut && t < deadline / 2 && sent * 2 >= b => b + b / 4,
                Some(_) => b,
            };
            Some(next.clamp(Self::MIN.min(cap), cap))
        });
    }
}

/// Reports an append that openraft dropped (its deadline passed) to the
/// budget; disarmed once the answer came.
struct AppendWatch<'a> {
    budget: &'a AppendBudget,
    sent: usize,
    deadline: Duration,
    armed: bool,
}

impl Drop for AppendWatch<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.budget.observe(self.sent, true, None, self.deadline);
        }
    }
}

/// openraft's network factory for one group.
pub struct GroupNetwork {
    pub peers: Arc<Peers>,
    pub group: u64,
    /// Counts the snapshots this group sends (Prometheus).
    pub snapshots_sent: prometheus_client::metrics::counter::Counter,
}

/// openraft's connection from one group's replica to a peer's replica.
pub struct GroupConn {
    peers: Arc<Peers>,
    group: u64,
    target: u64,
    snapshots_sent: prometheus_client::metrics::counter::Counter,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupConn;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> GroupConn {
        GroupConn {
            peers: self.peers.clone(),
            group: self.group,
            target,
            snapshots_sent: self.snapshots_sent.clone(),
        }
    }
}

fn network_err<E: std::error::Error>(msg: String) -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
}

/// The most bytes of log entries one append message carries (a single
/// larger entry still goes alone): 8 MiB, or a quarter of the peers'
/// message limit (node.toml `max_message_mb`) when that is smaller.
pub fn append_bytes(max_message_mb: u32) -> usize {
    (8usize << 20).min((max_message_mb as usize) << 18).max(1)
}

/// Encodes an append exactly as `wire::encode` would, but with only the
/// entries that fit in `budget` bytes (at least one), each encoded once:
/// a follower far behind on large entries is sent a bounded prefix without
/// the whole backlog being encoded first. Answers the bytes and, when
/// entries were left out, the last log id sent.
fn encode_append(
    rpc: &AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> (Vec<u8>, Option<openraft::LogId<u64>>) {
    // Each entry is encoded once, straight into one buffer sized from the
    // commands' own estimate (no doubling reallocations of a large entry),
    // and copied once more behind the header.
    let hint: usize = rpc
        .entries
        .iter()
        .map(petuum_storage::log_store::entry_size_hint)
        .sum();
    let mut entries = Vec::with_capacity(hint.min(budget.saturating_add(4096)));
    let mut keep = 0usize;
    for e in &rpc.entries {
        let before = entries.len();
        entries = postcard::to_io(e, entries)
            .expect("postcard encoding of in-memory values does not fail");
        if keep > 0 && entries.len() > budget {
            entries.truncate(before);
            break;
        }
        keep += 1;
    }
    // postcard writes a struct as its fields in order and a sequence as
    // its length (a varint, as a usize) followed by its elements.
    let head = wire::encode(&(&rpc.vote, &rpc.prev_log_id));
    let mut out = Vec::with_capacity(head.len() + entries.len() + 32);
    out.extend_from_slice(&head);
    out.extend_from_slice(&wire::encode(&keep));
    out.extend_from_slice(&entries);
    out.extend_from_slice(&wire::encode(&rpc.leader_commit));
    let cut = (keep < rpc.entries.len()).then(|| rpc.entries[keep - 1].log_id);
    (out, cut)
}

impl GroupConn {
    async fn raft_call<Req, Resp, E>(
        &self,
        kind: u32,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.raft_call_bytes(kind, wire::encode(req), option).await
    }

    async fn raft_call_bytes<Resp, E>(
        &self,
        kind: u32,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let bytes = self
            .peers
            .call(
                self.target,
                Method::Raft,
                self.group,
                kind,
                payload,
                option.hard_ttl(),
            )
            .await
            .map_err(|e| match e {
                CallError::Unreachable { .. } => {
                    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.to_string())))
                }
                CallError::Remote { .. } => network_err(e.to_string()),
            })?;
        let res: Result<Resp, RaftError<u64, E>> =
            wire::decode(&bytes, "raft reply").map_err(network_err)?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GroupConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        // One message carries at most `append_bytes` of entries (and at
        // least one entry): openraft bounds an append by its entry count
        // only, and a follower many large entries behind would otherwise
        // be sent one message past the peers' message limit or past the
        // RPC deadline, refused or timed out, and retried the same way
        // for ever. The prefix sent is answered as openraft's partial
        // success, and the next append carries on from it.
        let budget = self.peers.append_budget();
        let (bytes, cut) = encode_append(&rpc, budget.get());
        let mut watch = AppendWatch {
            budget,
            sent: bytes.len(),
            deadline: option.hard_ttl(),
            armed: !rpc.entries.is_empty(),
        };
        let started = std::time::Instant::now();
        let answer = self.raft_call_bytes(KIND_APPEND, bytes, &option).await;
        if watch.armed {
            watch.armed = false;
            // A refused or unreachable peer says nothing of the size.
            if answer.is_ok() {
                budget.observe(
                    watch.sent,
                    cut.is_some(),
                    Some(started.elapsed()),
                    watch.deadline,
                );
            }
        }
        let answer = answer?;
        Ok(match (answer, cut) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (answer, _) => answer,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let last = rpc.done;
        let r = self.raft_call(KIND_SNAPSHOT, &rpc, &option).await;
        if last && r.is_ok() {
            self.snapshots_sent.inc();
        }
        r
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.raft_call(KIND_VOTE, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_proto::v1::peer_server::{Peer, PeerServer};

    /// A broken HTTP/2 stream is no answer from the peer (tonic's own
    /// message for it, `Status::from_h2_error`); a peer's Internal answer
    /// is.
    #[test]
    fn a_broken_stream_is_unreachable_and_an_answer_is_remote() {
        let broken = tonic::Status::internal(
            "h2 protocol error: stream error received: unexpected internal error encountered",
        );
        assert!(matches!(
            status_error(6, broken),
            CallError::Unreachable { node: 6, .. }
        ));
        let answered = tonic::Status::internal("envelope of 3 bytes does not decode");
        assert!(matches!(
            status_error(6, answered),
            CallError::Remote {
                code: tonic::Code::Internal,
                ..
            }
        ));
    }
    use petuum_proto::v1::Reply;
    use std::sync::atomic::AtomicUsize;

    /// A peer that answers each Raft message with its payload reversed,
    /// the first two calls after 200 ms; with `old`, it refuses batches as
    /// a node that does not know them does. Counts its calls and batches.
    #[derive(Clone, Default)]
    struct FakePeer {
        /// How an older node refuses a batch (the envelope's group 0 is
        /// looked up first): unknown kind, or no such group here.
        old: Option<tonic::Code>,
        calls: Arc<AtomicUsize>,
        batches: Arc<AtomicUsize>,
    }

    fn reversed(p: &[u8]) -> Vec<u8> {
        p.iter().rev().copied().collect()
    }

    #[tonic::async_trait]
    impl Peer for FakePeer {
        async fn raft(
            &self,
            req: tonic::Request<Envelope>,
        ) -> Result<tonic::Response<Reply>, tonic::Status> {
            let env = req.into_inner();
            if self.calls.fetch_add(1, Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let payload = if env.kind == KIND_BATCH {
                match self.old {
                    Some(tonic::Code::NotFound) => {
                        return Err(tonic::Status::not_found(format!(
                            "group {} has no replica on node 2",
                            env.group
                        )))
                    }
                    Some(_) => {
                        return Err(tonic::Status::invalid_argument(format!(
                            "unknown Raft message kind {} for group {}",
                            env.kind, env.group
                        )))
                    }
                    None => {}
                }
                self.batches.fetch_add(1, Ordering::SeqCst);
                let batch: RaftBatch = wire::decode(&env.payload, "batch").unwrap();
                let reply: RaftBatchReply = batch.iter().map(|(_, _, p)| Ok(reversed(p))).collect();
                wire::encode(&reply)
            } else {
                reversed(&env.payload)
            };
            Ok(tonic::Response::new(Reply {
                payload: payload.into(),
            }))
        }

        async fn data(
            &self,
            _req: tonic::Request<Envelope>,
        ) -> Result<tonic::Response<Reply>, tonic::Status> {
            Err(tonic::Status::unimplemented("data"))
        }
    }

    /// Twelve messages to one peer: the first two go alone (both call
    /// slots), the ten queued behind them leave together once a slot is
    /// free, and each caller gets its own answer; a peer that refuses
    /// batches gets every message one by one, and the next ones too.
    #[tokio::test]
    async fn queued_raft_messages_to_a_peer_share_a_call_and_get_their_own_answers() {
        for old in [
            None,
            Some(tonic::Code::InvalidArgument),
            Some(tonic::Code::NotFound),
        ] {
            let fake = FakePeer {
                old,
                ..Default::default()
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(PeerServer::new(fake.clone()))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            let peers = Peers::new(1, 7, HashMap::from([(2, addr.to_string())]), None, None);
            let calls: Vec<_> = (0..12u8)
                .map(|i| {
                    let peers = peers.clone();
                    tokio::spawn(async move {
                        let payload = vec![i, 0, 255 - i];
                        let got = peers
                            .call(
                                2,
                                Method::Raft,
                                1 + i as u64,
                                KIND_APPEND,
                                payload,
                                Duration::from_secs(10),
                            )
                            .await
                            .unwrap();
                        assert_eq!(got.to_vec(), vec![255 - i, 0, i], "message {i}");
                    })
                })
                .collect();
            for c in calls {
                c.await.unwrap();
            }
            if old.is_some() {
                assert_eq!(fake.batches.load(Ordering::SeqCst), 0);
                assert!(peers.no_batch.lock().contains(&2));
                let before = fake.calls.load(Ordering::SeqCst);
                let got = peers
                    .call(
                        2,
                        Method::Raft,
                        1,
                        KIND_VOTE,
                        vec![1, 2],
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                assert_eq!(got.to_vec(), vec![2, 1]);
                assert_eq!(
                    fake.calls.load(Ordering::SeqCst),
                    before + 1,
                    "no batch tried again"
                );
            } else {
                assert!(fake.batches.load(Ordering::SeqCst) >= 1);
                assert!(
                    fake.calls.load(Ordering::SeqCst) < 12,
                    "{} calls for 12 messages",
                    fake.calls.load(Ordering::SeqCst)
                );
            }
            server.abort();
        }
    }

    #[test]
    fn small_raft_messages_take_their_own_lane() {
        assert_eq!(Lane::of(Method::Raft, 200), Lane::Control);
        assert_eq!(Lane::of(Method::Raft, CONTROL_BYTES + 1), Lane::Bulk);
        assert_eq!(Lane::of(Method::Data, 10), Lane::Bulk);
        let peers = Peers::new(
            1,
            7,
            HashMap::from([(2, "127.0.0.1:1".to_string())]),
            None,
            None,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            peers.lane(2, Lane::Control).unwrap();
            peers.lane(2, Lane::Bulk).unwrap();
            assert_eq!(peers.channels.lock().len(), 2);
            // A new address drops both connections.
            peers.set_addr(2, "127.0.0.1:2".into());
            assert!(peers.channels.lock().is_empty());
        });
    }

    #[test]
    fn an_append_is_cut_to_its_byte_budget() {
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
        let log_id = |i| LogId::new(CommittedLeaderId::new(3, 1), i);
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(4)),
            entries: (5..15)
                .map(|i| Entry {
                    log_id: log_id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: Some(log_id(4)),
        };
        let one = wire::encode(&rpc.entries[0]).len();
        // Within the budget: byte for byte what postcard writes.
        assert_eq!(encode_append(&rpc, 1 << 20), (wire::encode(&rpc), None));
        // Three entries' worth: the first three, decoding as such.
        let (bytes, cut) = encode_append(&rpc, 3 * one);
        assert_eq!(cut, Some(log_id(7)));
        let back: AppendEntriesRequest<TypeConfig> = wire::decode(&bytes, "append").unwrap();
        assert_eq!(back.entries.len(), 3);
        assert_eq!(back.leader_commit, rpc.leader_commit);
        // A budget below one entry still sends one.
        let (bytes, cut) = encode_append(&rpc, 1);
        assert_eq!(cut, Some(log_id(5)));
        let back: AppendEntriesRequest<TypeConfig> = wire::decode(&bytes, "append").unwrap();
        assert_eq!(back.entries.len(), 1);
        // A heartbeat (no entries) is never cut.
        let beat = AppendEntriesRequest::<TypeConfig> {
            entries: vec![],
            ..rpc.clone()
        };
        assert_eq!(encode_append(&beat, 1), (wire::encode(&beat), None));
        assert_eq!(append_bytes(256), 8 << 20);
        assert_eq!(append_bytes(1), 1 << 18);
    }

    #[test]
    fn the_append_budget_follows_what_arrives_in_time() {
        let ms = Duration::from_millis;
        let deadline = ms(75);
        let b = AppendBudget::new(8 << 20);
        assert_eq!(b.get(), 1 << 20);
        // Cut to the budget and answered quickly: grows, up to the cap.
        for _ in 0..40 {
            b.observe(b.get(), true, Some(ms(10)), deadline);
        }
        assert_eq!(b.get(), 8 << 20);
        // Not cut (the follower was nearly caught up): no evidence to grow.
        b.set_cap(4 << 20);
        assert_eq!(b.get(), 4 << 20);
        b.observe(1000, false, Some(ms(5)), deadline);
        assert_eq!(b.get(), 4 << 20);
        // Slow: shrinks by a quarter; ran out of time: halves.
        b.observe(b.get(), true, Some(ms(70)), deadline);
        assert_eq!(b.get(), 3 << 20);
        b.observe(b.get(), true, None, deadline);
        assert_eq!(b.get(), 3 << 19);
        // Never below the floor, whatever happens.
        for _ in 0..40 {
            b.observe(b.get(), true, None, deadline);
        }
        assert_eq!(b.get(), AppendBudget::MIN);
        // The log store reads the same figure.
        assert_eq!(
            b.shared().load(std::sync::atomic::Ordering::Relaxed),
            AppendBudget::MIN
        );
    }

    #[test]
    fn an_append_dropped_at_its_deadline_shrinks_the_budget() {
        let b = AppendBudget::new(8 << 20);
        {
            let _watch = AppendWatch {
                budget: &b,
                sent: 1 << 20,
                deadline: Duration::from_millis(75),
                armed: true,
            };
            // openraft's timeout drops the call's future here.
        }
        assert_eq!(b.get(), 1 << 19);
    }
}
