//! The networked table backend: [`ShardService`] over gRPC to a cluster.
//! Update batches go to each shard's leader and return once committed;
//! reads go to any replica (follower reads), which answers only when its
//! applied clocks meet the SSP condition of the request.
//!
//! The API is blocking (worker threads call it); it runs its own tokio
//! runtime and must not be called from inside another runtime.

use crate::meta::MetaCommand;
use crate::network::{CallError, Method, Peers};
use crate::placement::Placement;
use crate::wire::{self, DataError, DataReply, DataRequest, Refusal, KIND_DATA};
use parking_lot::{Mutex, RwLock};
use petuum_core::batch::UpdateBatch;
use petuum_core::row::AnyRow;
use petuum_core::service::{FetchRequest, PushSink, RowSnapshot, ShardService};
use petuum_core::types::{Clock, JobId, JobShards, RowId, ShardId, TableId, TableSpec};
use petuum_core::TableError;
use petuum_proto::v1::StatusReply;
use petuum_storage::{ShardRequest, ShardResponse};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

mod admin;
mod routing;
mod watch;

/// The most row bytes one `Load` entry carries (far below the message
/// limit, small enough that one entry's fsync stays short).
const LOAD_CHUNK_BYTES: usize = 1 << 20;

/// The job a shard command belongs to, when it is a job's.
fn request_job(req: &ShardRequest) -> Option<JobId> {
    match req {
        ShardRequest::RegisterJob { job, .. }
        | ShardRequest::Checkpoint { job, .. }
        | ShardRequest::WorkerBlob { job, .. }
        | ShardRequest::RestoreImage { job, .. }
        | ShardRequest::DropJob { job, .. } => Some(*job),
        ShardRequest::Batch { batch, .. } => Some(batch.job),
        ShardRequest::Batches { batches, .. } => batches.first().map(|b| b.job),
        ShardRequest::CreateTable(t) => Some(t.job),
        // Not a run's: an ended job's, refused by no epoch.
        ShardRequest::Load { .. } | ShardRequest::Meta(_) | ShardRequest::ForgetJob { .. } => None,
    }
}

/// Options of a cluster connection.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// How long an operation keeps retrying (leader changes, a node down)
    /// before it fails.
    pub deadline: Duration,
    /// Bearer token, when the cluster requires one.
    pub token: Option<String>,
    /// TLS to the nodes.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Deadline of one RPC.
    pub rpc_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            deadline: Duration::from_secs(60),
            token: None,
            tls: None,
            rpc_timeout: Duration::from_secs(3),
        }
    }
}

/// A connection to a cluster's shards.
pub struct ClusterShards {
    rt: tokio::runtime::Runtime,
    peers: Arc<Peers>,
    /// The placement as last read from a node (refreshed in the
    /// background: replicas move as nodes join and leave).
    placement: Arc<RwLock<Arc<Placement>>>,
    leaders: Mutex<HashMap<ShardId, u64>>,
    aborted: Mutex<HashMap<JobId, String>>,
    sinks: Arc<Mutex<Vec<Weak<dyn PushSink>>>>,
    /// Jobs registered through this connection (ESSP watchers follow them).
    jobs: Arc<Mutex<std::collections::BTreeSet<JobId>>>,
    watching: std::sync::atomic::AtomicBool,
    opts: ConnectOptions,
    /// Where node-local follower reads go first (0: spread over replicas).
    local: u64,
    /// The run (epoch) each job's commands and reads name; 0 for a job
    /// never set (tools and benchmarks that run outside the scheduler).
    epochs: Arc<Mutex<HashMap<JobId, u64>>>,
    /// The job of each table created through this connection (a load
    /// names its table only).
    table_jobs: Mutex<HashMap<TableId, JobId>>,
    /// How many shards hold each job's tables, for jobs set with
    /// [`set_job_shards`](Self::set_job_shards) (others span every shard).
    spans: Arc<Mutex<HashMap<JobId, u32>>>,
    /// The node this connection's workers run on, when they run inside
    /// it: its requests go to its handlers in process (on the node's own
    /// runtime), not through loopback gRPC.
    in_process: Option<(Arc<crate::node::ClusterNode>, tokio::runtime::Handle)>,
    /// Group -> (leader, term) as last seen in a status (refreshed by
    /// [`follow`](Self::follow)); ends waits on a deposed leader early
    /// ([`guarded`](Self::guarded)).
    seen_leaders: Arc<Mutex<HashMap<u64, (u64, u64)>>>,
}

/// How often a guarded call checks whether to give up.
const GUARD_TICK: Duration = Duration::from_millis(100);

/// A call to a leader runs at least this long before a newer leader seen
/// elsewhere ends it (an answer normally comes much sooner; a status
/// seen a moment before the call may be about to change).
const MOVED_GRACE: Duration = Duration::from_millis(500);

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A job's span from the lengths set on a connection.
fn span_of(spans: &Mutex<HashMap<JobId, u32>>, job: JobId, total: u32) -> JobShards {
    match spans.lock().get(&job) {
        Some(&len) => JobShards::of_job(job, len, total),
        None => JobShards::all(total),
    }
}

fn unavailable(e: impl std::fmt::Display) -> TableError {
    TableError::Unavailable(e.to_string())
}

impl ClusterShards {
    /// Connects through any of `endpoints` (`host:port`), learning the
    /// cluster's nodes and placement from the first that answers.
    pub fn connect(
        endpoints: &[String],
        opts: ConnectOptions,
    ) -> Result<ClusterShards, TableError> {
        Self::connect_as(endpoints, opts, 0)
    }

    /// Like [`connect`](Self::connect), for workers on node `local`, whose
    /// reads go to the local replica when there is one.
    pub fn connect_as(
        endpoints: &[String],
        opts: ConnectOptions,
        local: u64,
    ) -> Result<ClusterShards, TableError> {
        let s = Self::build(endpoints, opts, local)?;
        s.follow();
        Ok(s)
    }

    fn build(
        endpoints: &[String],
        opts: ConnectOptions,
        local: u64,
    ) -> Result<ClusterShards, TableError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("petuum-net")
            .enable_all()
            .build()
            .map_err(unavailable)?;
        let status = rt.block_on(first_status(endpoints, &opts))?;
        let addrs: HashMap<u64, String> = status
            .nodes
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        let placement = Arc::new(RwLock::new(Arc::new(placement_of(&status)?)));
        let peers = Peers::new(
            local,
            status.cluster,
            addrs,
            opts.tls.clone(),
            opts.token.clone(),
        );
        Ok(ClusterShards {
            rt,
            peers,
            placement,
            leaders: Mutex::new(HashMap::new()),
            aborted: Mutex::new(HashMap::new()),
            sinks: Arc::new(Mutex::new(Vec::new())),
            jobs: Arc::new(Mutex::new(Default::default())),
            watching: std::sync::atomic::AtomicBool::new(false),
            opts,
            local,
            epochs: Arc::new(Mutex::new(HashMap::new())),
            table_jobs: Mutex::new(HashMap::new()),
            spans: Arc::new(Mutex::new(HashMap::new())),
            in_process: None,
            seen_leaders: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// A connection for workers running inside `node` (a daemon's jobs):
    /// like [`connect_as`](Self::connect_as) through the node's own
    /// endpoint, except that requests for `node` itself are handled in
    /// process on `rt` (the node's runtime), without encoding, loopback
    /// TCP and decoding. Requests for other nodes go over gRPC.
    pub fn connect_in(
        node: Arc<crate::node::ClusterNode>,
        rt: tokio::runtime::Handle,
        opts: ConnectOptions,
    ) -> Result<ClusterShards, TableError> {
        let mut s = Self::build(&[node.endpoint()], opts, node.id())?;
        s.peers.set_source(node.source_address());
        s.in_process = Some((node, rt));
        s.follow();
        Ok(s)
    }

    /// Makes every command and read of `job` through this connection name
    /// run `epoch`: the shards refuse them once a newer run has begun.
    pub fn set_epoch(&self, job: JobId, epoch: u64) {
        self.epochs.lock().insert(job, epoch);
    }

    /// Places `job`'s tables (`tables`, its table ids) on `len` of the
    /// cluster's shards ([`JobShards::of_job`]; every shard when `len` is
    /// at least their number): its rows, clocks, registration, checkpoints
    /// and reads go to those shards only. Every connection that serves the
    /// job (coordinator, hosts, tools) must set the same span before use.
    pub fn set_job_shards(&self, job: JobId, len: u32, tables: impl IntoIterator<Item = TableId>) {
        self.spans.lock().insert(job, len.max(1));
        let mut t = self.table_jobs.lock();
        for id in tables {
            t.insert(id, job);
        }
    }

    /// The shards holding `job`'s tables through this connection.
    pub fn span(&self, job: JobId) -> JobShards {
        span_of(&self.spans, job, self.placement().shards())
    }

    /// The span of the job of `table`, when this connection knows it
    /// (every shard otherwise: tools and tests that create tables without
    /// a job's span).
    fn table_span(&self, table: TableId) -> JobShards {
        match self.table_jobs.lock().get(&table) {
            Some(&job) => self.span(job),
            None => JobShards::all(self.placement().shards()),
        }
    }

    /// The run this connection's commands of `job` name.
    pub fn epoch(&self, job: JobId) -> u64 {
        self.epochs.lock().get(&job).copied().unwrap_or(0)
    }

    /// The placement as this connection last learned it.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.read().clone()
    }

    /// Follows the cluster's placement and addresses (every second) while
    /// the connection lives.
    fn follow(&self) {
        let (placement, peers, timeout) = (
            self.placement.clone(),
            self.peers.clone(),
            self.opts.rpc_timeout,
        );
        let node = self.in_process.as_ref().map(|(n, _)| Arc::downgrade(n));
        let seen = self.seen_leaders.clone();
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let local = node.as_ref().and_then(|w| w.upgrade()).map(|n| n.status());
                let status = match local {
                    Some(s) => Some(s),
                    None => {
                        let nodes = placement.read().nodes().to_vec();
                        let mut got = None;
                        for n in nodes {
                            if let Ok(s) = peers.status(n, timeout).await {
                                got = Some(s);
                                break;
                            }
                        }
                        got
                    }
                };
                let Some(status) = status else { continue };
                {
                    let mut seen = seen.lock();
                    for g in status.groups.iter().filter(|g| g.leader != 0) {
                        let e = seen.entry(g.group).or_insert((g.leader, g.term));
                        if g.term >= e.1 {
                            *e = (g.leader, g.term);
                        }
                    }
                }
                for n in &status.nodes {
                    if peers.addr(n.id).as_deref() != Some(n.addr.as_str()) && !n.addr.is_empty() {
                        peers.set_addr(n.id, n.addr.clone());
                    }
                }
                if let Ok(p) = placement_of(&status) {
                    if **placement.read() != p {
                        *placement.write() = Arc::new(p);
                    }
                }
            }
        });
    }

    /// A node's status.
    pub fn status(&self, node: u64) -> Result<StatusReply, TableError> {
        self.rt
            .block_on(self.peers.status(node, self.opts.rpc_timeout))
            .map_err(unavailable)
    }

    /// Sends one `Data` request to one node.
    pub fn call(&self, node: u64, req: &DataRequest) -> Result<DataReply, TableError> {
        self.rt
            .block_on(self.data(node, req, self.opts.rpc_timeout))
            .map_err(|e| match e {
                Failure::Unreachable(e) => unavailable(e),
                Failure::Data(DataError::Table(t)) => t,
                Failure::Data(d) => unavailable(d),
            })
    }

    /// A row as node `node`'s replica has it now, with its applied log
    /// index and the job's worker clocks there.
    pub fn read_local(
        &self,
        node: u64,
        table: TableId,
        row: RowId,
        job: Option<JobId>,
    ) -> Result<(Option<AnyRow>, u64, Vec<Clock>), TableError> {
        let shard = self.table_span(table).shard_of(table, row);
        match self.call(
            node,
            &DataRequest::ReadLocal {
                shard,
                table,
                row,
                job,
            },
        )? {
            DataReply::Local {
                row,
                last_applied,
                worker_clocks,
            } => Ok((row, last_applied, worker_clocks)),
            other => Err(unavailable(format!("unexpected reply {other:?}"))),
        }
    }

    async fn data(
        &self,
        node: u64,
        req: &DataRequest,
        timeout: Duration,
    ) -> Result<DataReply, Failure> {
        if let Some((me, rt)) = self.in_process.as_ref().filter(|_| node == self.local) {
            // A read its replica can answer now is answered on this
            // thread: no hand-off to the node's runtime and back.
            if let Some(reply) = me.fetch_now(req) {
                return Ok(reply);
            }
            // A push is proposed from this thread too: its Raft answer
            // wakes this thread, not a task on the node's runtime that
            // would then wake it (one hand-off less per clock). Past the
            // deadline the proposal's future is dropped, as a cancelled
            // handler's would be.
            if let DataRequest::Push { .. } = req {
                return match tokio::time::timeout(timeout, me.handle_data(req.clone())).await {
                    Ok(reply) => reply.map_err(Failure::Data),
                    Err(_) => Err(Failure::Unreachable(format!(
                        "node {node}: no answer within {timeout:?}"
                    ))),
                };
            }
            let (me, req) = (me.clone(), req.clone());
            let handler = rt.spawn(async move { me.handle_data(req).await });
            // As a gRPC deadline or a dropped call would: a handler past
            // the deadline, or whose caller gave up, is cancelled.
            let _cancel = AbortOnDrop(handler.abort_handle());
            return match tokio::time::timeout(timeout, handler).await {
                Ok(Ok(reply)) => reply.map_err(Failure::Data),
                Ok(Err(e)) => Err(Failure::Unreachable(format!(
                    "node {node}: the request's handler failed: {e}"
                ))),
                Err(_) => Err(Failure::Unreachable(format!(
                    "node {node}: no answer within {timeout:?}"
                ))),
            };
        }
        let bytes = self
            .peers
            .call(node, Method::Data, 0, KIND_DATA, wire::encode(req), timeout)
            .await
            .map_err(|e| match e {
                CallError::Unreachable { .. } => Failure::Unreachable(e.to_string()),
                CallError::Remote { .. } => {
                    Failure::Data(DataError::Refused(Refusal::Rejected(e.to_string())))
                }
            })?;
        let r: Result<DataReply, DataError> = wire::decode(&bytes, "data reply").map_err(|e| {
            Failure::Data(DataError::Refused(Refusal::BadReply(format!(
                "node {node}: {e}"
            ))))
        })?;
        r.map_err(Failure::Data)
    }

    /// [`data`](Self::data) for a request to the leader of `shards` (or a
    /// replica of them, `leader_call` false) on behalf of `job`, given up
    /// early when waiting longer cannot help: the job's run was aborted
    /// (superseded, cancelled), or the shards' group has elected another
    /// leader than `node` since (a leader cut off from its group by a
    /// partition, or a preempted VM that vanished without a reset, holds
    /// the call until its deadline or the connection's keepalive, seconds,
    /// and can commit nothing once a majority has elected another). The
    /// early end is a `NotLeader` naming the new leader, which the callers
    /// follow at once, as after a deadline.
    async fn guarded(
        &self,
        node: u64,
        req: &DataRequest,
        timeout: Duration,
        shards: &[ShardId],
        job: Option<JobId>,
        leader_call: bool,
    ) -> Result<DataReply, Failure> {
        let call = self.data(node, req, timeout);
        tokio::pin!(call);
        let started = Instant::now();
        let mut tick = tokio::time::interval(GUARD_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The same request relayed through another member, once this node
        // has found the leader unreachable (tried once per call).
        type Pending<'a> =
            std::pin::Pin<Box<dyn std::future::Future<Output = Result<DataReply, Failure>> + 'a>>;
        let mut relay: Option<Pending<'_>> = None;
        let mut relayed = false;
        loop {
            tokio::select! {
                r = &mut call => return r,
                r = async { relay.as_mut().expect("a relay").await }, if relay.is_some() => {
                    match r {
                        Ok(reply) => return Ok(reply),
                        // The leader's own answer (not the leader, a
                        // refusal): as if it had come directly.
                        Err(Failure::Data(d)) if !matches!(d, DataError::Unavailable(_)) => {
                            return Err(Failure::Data(d))
                        }
                        // The relay could not help: wait for the call.
                        Err(_) => relay = None,
                    }
                }
                _ = tick.tick() => {
                    if let Some(job) = job {
                        self.check_aborted(job)
                            .map_err(|e| Failure::Data(DataError::Table(e)))?;
                    }
                    // A leader this node already finds unreachable is
                    // relayed to at the first tick; others after the grace.
                    let via = if relayed { None } else { self.relay_for(node, shards, req) };
                    if !leader_call || (started.elapsed() < MOVED_GRACE && via.is_none()) {
                        continue;
                    }
                    if !relayed {
                        if let Some(via) = via {
                            relayed = true;
                            tracing::debug!(
                                to = node,
                                via,
                                "the shard's leader is unreachable from this node: the call goes through another member"
                            );
                            let relayed_req = DataRequest::Relay {
                                to: node,
                                req: Box::new(req.clone()),
                            };
                            relay = Some(Box::pin(async move {
                                self.data(via, &relayed_req, timeout).await
                            }));
                        }
                    }
                    if let Some((shard, leader)) =
                        shards.iter().find_map(|&s| Some((s, self.moved_away(s, node)?)))
                    {
                        tracing::info!(
                            shard,
                            from = node,
                            to = leader,
                            "the shard's group elected another leader: the call goes there"
                        );
                        return Err(Failure::Data(DataError::NotLeader {
                            group: crate::placement::shard_group(shard),
                            leader: Some(leader),
                        }));
                    }
                }
            }
        }
    }

    /// A member of `shards`' group to relay a write for `leader` through,
    /// when this connection runs inside a node that cannot reach the
    /// leader (its last call to it, a Raft heartbeat among them, failed)
    /// and `req` is a write the shards apply once however often it comes
    /// (`Push`, `Commands`): reads are never relayed.
    fn relay_for(&self, leader: u64, shards: &[ShardId], req: &DataRequest) -> Option<u64> {
        if !matches!(req, DataRequest::Push { .. } | DataRequest::Commands { .. }) {
            return None;
        }
        let (node, _) = self.in_process.as_ref()?;
        if !node.peers.is_down(leader) {
            return None;
        }
        let shard = *shards.first()?;
        self.placement()
            .replicas_of(shard)
            .into_iter()
            .find(|&m| m != leader && m != self.local && !node.peers.is_down(m))
    }

    /// Whether the replica of `shard`'s group on the node this connection
    /// runs in hears from no leader, so that it falls behind: it names
    /// none (an election; or it is cut off from the leader the others
    /// follow and campaigns in vain), or names one this node cannot reach
    /// now.
    pub(super) fn local_replica_unled(&self, shard: ShardId) -> bool {
        let Some((node, _)) = self.in_process.as_ref() else {
            return false;
        };
        let Some(raft) = node.raft(crate::placement::shard_group(shard)) else {
            return false;
        };
        let leader = raft.metrics().borrow().current_leader;
        leader.is_none_or(|l| l != self.local && node.peers.is_down(l))
    }

    /// The replica after `i` in `replicas` to read from, skipping those
    /// the node this connection runs in cannot reach now (when every
    /// other one is unreachable, simply the next).
    pub(super) fn next_replica(&self, replicas: &[u64], i: usize) -> usize {
        let n = replicas.len().max(1);
        let down = |m: u64| {
            self.in_process
                .as_ref()
                .is_some_and(|(node, _)| node.peers.is_down(m))
        };
        (1..n)
            .map(|k| (i + k) % n)
            .find(|&j| !down(replicas[j]))
            .unwrap_or((i + 1) % n)
    }

    /// The leader of `shard`'s group as seen now: by the node's own
    /// replica when this connection runs inside a node that has one, else
    /// as the followed node's status last said.
    fn seen_leader(&self, shard: ShardId) -> Option<u64> {
        let group = crate::placement::shard_group(shard);
        if let Some(raft) = self.in_process.as_ref().and_then(|(n, _)| n.raft(group)) {
            return raft.metrics().borrow().current_leader;
        }
        self.seen_leaders.lock().get(&group).map(|&(l, _)| l)
    }

    /// The leader of `shard`'s group as seen now, when it is not `node`.
    fn moved_away(&self, shard: ShardId, node: u64) -> Option<u64> {
        self.seen_leader(shard).filter(|&l| l != 0 && l != node)
    }

    fn check_aborted(&self, job: JobId) -> Result<(), TableError> {
        match self.aborted.lock().get(&job) {
            Some(reason) => Err(TableError::Aborted {
                job,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

enum Failure {
    Unreachable(String),
    Data(DataError),
}

/// The placement a status reply records (the initial rule while the
/// cluster is forming and records none).
fn placement_of(status: &StatusReply) -> Result<Placement, TableError> {
    let nodes: Vec<u64> = status.nodes.iter().map(|n| n.id).collect();
    if status.placement.is_empty() || status.meta_voters.is_empty() {
        if nodes.is_empty() || status.shards == 0 || status.replicas == 0 {
            return Err(unavailable("the node's status names no cluster yet"));
        }
        return Ok(Placement::new(nodes, status.shards, status.replicas));
    }
    let mut groups = vec![Vec::new(); status.shards as usize];
    for r in &status.placement {
        if let Some(g) = groups.get_mut(r.shard as usize) {
            *g = r.nodes.clone();
        }
    }
    Placement::from_parts(
        nodes,
        status.shards,
        status.replicas,
        groups,
        status.meta_voters.clone(),
    )
    .map_err(unavailable)
}

async fn first_status(
    endpoints: &[String],
    opts: &ConnectOptions,
) -> Result<StatusReply, TableError> {
    let mut last = String::from("no endpoints given");
    for (i, ep) in endpoints.iter().enumerate() {
        // A throwaway Peers object for one bootstrap call.
        let peers = Peers::new(
            0,
            0,
            [(i as u64 + 1, ep.clone())].into(),
            opts.tls.clone(),
            opts.token.clone(),
        );
        match peers.status(i as u64 + 1, opts.rpc_timeout).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{ep}: {e}"),
        }
    }
    Err(unavailable(format!(
        "no cluster endpoint answered ({last})"
    )))
}

impl ShardService for ClusterShards {
    fn num_shards(&self) -> u32 {
        self.placement().shards()
    }

    fn job_shards(&self, job: JobId) -> JobShards {
        self.span(job)
    }

    fn create_table(&self, spec: &TableSpec) -> Result<(), TableError> {
        self.meta(MetaCommand::DefineTable(spec.clone()))?;
        self.table_jobs.lock().insert(spec.id, spec.job);
        self.commands(
            Some(spec.job),
            self.job_shards_req(spec.job, ShardRequest::CreateTable(spec.clone())),
        )
    }

    fn register_job(
        &self,
        job: JobId,
        workers: u32,
        deterministic: bool,
    ) -> Result<(), TableError> {
        self.register_job_every(job, workers, deterministic, 0)
    }

    fn load(&self, table: TableId, rows: Vec<(RowId, AnyRow)>) -> Result<(), TableError> {
        let span = self.table_span(table);
        let job = self.table_jobs.lock().get(&table).copied();
        let epoch = job.map_or(0, |j| self.epoch(j));
        // Rows grouped per shard into entries of about LOAD_CHUNK_BYTES:
        // one Raft append (one fsync per replica) per chunk, where a
        // command per row made a 4k-row initialisation take a minute on a
        // busy machine.
        let mut per_shard: BTreeMap<ShardId, Vec<Vec<(RowId, AnyRow)>>> = BTreeMap::new();
        for (row, value) in rows {
            let chunks = per_shard.entry(span.shard_of(table, row)).or_default();
            let bytes = |c: &Vec<(RowId, AnyRow)>| {
                c.iter().map(|(_, v)| v.value_bytes() + 16).sum::<usize>()
            };
            match chunks.last_mut() {
                Some(c) if bytes(c) + value.value_bytes() + 16 <= LOAD_CHUNK_BYTES => {
                    c.push((row, value))
                }
                _ => chunks.push(vec![(row, value)]),
            }
        }
        let cmds = per_shard
            .into_iter()
            .flat_map(|(shard, chunks)| {
                chunks
                    .into_iter()
                    .map(move |rows| (shard, ShardRequest::Load { epoch, table, rows }))
            })
            .collect();
        self.commands(job, cmds)
    }

    fn push(&self, batches: &[UpdateBatch]) -> Result<(), TableError> {
        let Some(job) = batches.first().map(|b| b.job) else {
            return Ok(());
        };
        debug_assert!(batches.iter().all(|b| b.job == job), "one job per push");
        let epoch = self.epoch(job);
        let items = batches.iter().map(|b| (b.shard, b.clone())).collect();
        self.rt
            .block_on(self.to_leaders(
                Some(job),
                items,
                // The shards a node leads in one call: batches name their
                // shards, and the node writes each shard's as one entry.
                Some(|b: &UpdateBatch| b.value_bytes() + 64),
                |_, batches| DataRequest::Push { epoch, batches },
                |reply| {
                    match reply {
                        DataReply::Pushed(rs) => Ok(rs
                            .into_iter()
                            .map(|r| r.map(|()| ShardResponse::default()))
                            .collect()),
                        other => Err(DataError::Refused(Refusal::BadReply(format!(
                            "unexpected reply {other:?}"
                        )))),
                    }
                },
            ))
            .map(|_| ())
    }

    fn pipelines(&self) -> bool {
        true
    }

    fn previews(&self) -> bool {
        true
    }

    /// Sends each shard's preview to its replicas off this node (their
    /// readers see it; this node's own workers add their increments
    /// themselves), one call per node, without waiting for the answers.
    fn preview(&self, previews: Vec<(ShardId, petuum_core::service::Preview)>) -> usize {
        let Some(job) = previews.first().map(|(_, p)| p.job) else {
            return 0;
        };
        let epoch = self.epoch(job);
        let placement = self.placement();
        let mut per_node: BTreeMap<u64, Vec<(ShardId, petuum_core::service::Preview)>> =
            BTreeMap::new();
        let mut sent = 0;
        for (shard, p) in previews {
            let bytes = p.wire_bytes();
            for node in placement.replicas_of(shard) {
                if node != self.local {
                    sent += bytes;
                    per_node.entry(node).or_default().push((shard, p.clone()));
                }
            }
        }
        let timeout = self.opts.rpc_timeout;
        for (node, previews) in per_node {
            let peers = self.peers.clone();
            let req = wire::encode(&DataRequest::Preview { epoch, previews });
            self.rt.spawn(async move {
                if let Err(e) = peers
                    .call(node, Method::Data, 0, KIND_DATA, req, timeout)
                    .await
                {
                    tracing::debug!(node, error = %e, "a preview was not delivered");
                }
            });
        }
        sent
    }

    fn fetch(&self, req: &FetchRequest) -> Result<RowSnapshot, TableError> {
        self.fetch_rows(std::slice::from_ref(req))?
            .pop()
            .ok_or_else(|| unavailable("a fetch returned no row"))
    }

    fn fetch_many(&self, reqs: &[FetchRequest]) -> Result<Vec<RowSnapshot>, TableError> {
        self.fetch_rows(reqs)
    }

    fn row_ids(&self, table: TableId) -> Result<Vec<RowId>, TableError> {
        let mut ids = Vec::new();
        for shard in self.table_span(table).iter() {
            // The leader answers after a read barrier: an export must list
            // every acknowledged row.
            let got = match self.to_leader(
                shard,
                None,
                &DataRequest::RowIds { shard, table },
                &format!("a listing of table {table}"),
            )? {
                DataReply::RowIds(r) => r,
                other => return Err(unavailable(format!("unexpected reply {other:?}"))),
            };
            ids.extend(got);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn subscribe(&self, sink: Weak<dyn PushSink>) {
        self.sinks.lock().push(sink);
        if !self
            .watching
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.start_watchers();
        }
    }

    fn abort_job(&self, job: JobId, reason: &str) {
        self.aborted.lock().insert(job, reason.to_string());
    }

    fn drop_job(&self, job: JobId) {
        if let Err(e) = self.drop_job_checked(job) {
            tracing::warn!(job, error = %e, "dropping the job's shard state");
        }
    }
}
