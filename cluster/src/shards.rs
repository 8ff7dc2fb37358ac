//! The networked table backend: [`ShardService`] over gRPC to a cluster.
//! Update batches go to each shard's leader and return once committed;
//! reads go to any replica (follower reads), which answers only when its
//! applied clocks meet the SSP condition of the request.
//!
//! The API is blocking (worker threads call it); it runs its own tokio
//! runtime and must not be called from inside another runtime.

use crate::meta::MetaCommand;
use crate::network::{CallError, Method, Peers};
use crate::placement::{shard_group, Placement};
use crate::wire::{self, DataError, DataReply, DataRequest, KIND_DATA};
use futures::future::join_all;
use parking_lot::Mutex;
use petuum_core::batch::UpdateBatch;
use petuum_core::row::AnyRow;
use petuum_core::service::{FetchRequest, PushSink, RowSnapshot, ShardService};
use petuum_core::types::{shard_of, Clock, JobId, RowId, ShardId, TableId, TableSpec};
use petuum_core::TableError;
use petuum_proto::v1::StatusReply;
use petuum_storage::{ShardRequest, ShardResponse};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The job a shard command belongs to, when it is a job's.
/// The most row bytes one `Load` entry carries (far below the message
/// limit, small enough that one entry's fsync stays short).
const LOAD_CHUNK_BYTES: usize = 1 << 20;

fn request_job(req: &ShardRequest) -> Option<JobId> {
    match req {
        ShardRequest::RegisterJob { job, .. }
        | ShardRequest::Checkpoint { job, .. }
        | ShardRequest::WorkerBlob { job, .. }
        | ShardRequest::RestoreImage { job, .. }
        | ShardRequest::DropJob { job, .. } => Some(*job),
        ShardRequest::Batch { batch, .. } => Some(batch.job),
        ShardRequest::CreateTable(t) => Some(t.job),
        ShardRequest::Load { .. } | ShardRequest::Meta(_) => None,
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
    placement: Placement,
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
        let placement = Placement::new(
            status.nodes.iter().map(|n| n.id).collect(),
            status.shards,
            status.replicas,
        );
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
        })
    }

    /// Makes every command and read of `job` through this connection name
    /// run `epoch`: the shards refuse them once a newer run has begun.
    pub fn set_epoch(&self, job: JobId, epoch: u64) {
        self.epochs.lock().insert(job, epoch);
    }

    /// The run this connection's commands of `job` name.
    pub fn epoch(&self, job: JobId) -> u64 {
        self.epochs.lock().get(&job).copied().unwrap_or(0)
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
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
        let shard = shard_of(table, row, self.placement.shards());
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
        let bytes = self
            .peers
            .call(node, Method::Data, 0, KIND_DATA, wire::encode(req), timeout)
            .await
            .map_err(|e| match e {
                CallError::Unreachable { .. } => Failure::Unreachable(e.to_string()),
                CallError::Remote { .. } => Failure::Data(DataError::Refused(e.to_string())),
            })?;
        let r: Result<DataReply, DataError> = wire::decode(&bytes, "data reply")
            .map_err(|e| Failure::Data(DataError::Refused(format!("node {node}: {e}"))))?;
        r.map_err(Failure::Data)
    }

    fn leader_guess(&self, shard: ShardId) -> u64 {
        *self
            .leaders
            .lock()
            .entry(shard)
            .or_insert_with(|| self.placement.preferred_leader(shard))
    }

    /// Moves the guess to the next replica after `failed`.
    fn rotate(&self, shard: ShardId, failed: u64) {
        let reps = self.placement.replicas_of(shard);
        let i = reps.iter().position(|&n| n == failed).unwrap_or(0);
        self.leaders
            .lock()
            .insert(shard, reps[(i + 1) % reps.len()]);
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

    /// Sends per-shard payloads to shard leaders until each is accepted,
    /// following leader hints and failing over.
    async fn to_leaders<T: Clone>(
        &self,
        job: Option<JobId>,
        items: Vec<(ShardId, T)>,
        make: impl Fn(ShardId, Vec<T>) -> DataRequest,
        // Per item result from a reply: Ok(Some(x)) done, Ok(None) retry.
        take: impl Fn(DataReply) -> Result<Vec<Result<ShardResponse, DataError>>, DataError>,
    ) -> Result<Vec<(ShardId, ShardResponse)>, TableError> {
        let (make, take) = (&make, &take);
        let start = Instant::now();
        let mut pending = items;
        let mut done = Vec::new();
        let mut backoff = Duration::from_millis(10);
        let mut last_error = String::new();
        // Nodes that did not answer during this operation: a stale hint
        // naming one of them is not followed.
        let mut dead = std::collections::HashSet::new();
        loop {
            // A run that was aborted (superseded, cancelled) stops here,
            // not after the deadline.
            if let Some(job) = job {
                self.check_aborted(job)?;
            }
            let mut by_node: BTreeMap<u64, BTreeMap<ShardId, Vec<T>>> = BTreeMap::new();
            for (shard, item) in pending.drain(..) {
                by_node
                    .entry(self.leader_guess(shard))
                    .or_default()
                    .entry(shard)
                    .or_default()
                    .push(item);
            }
            let calls = by_node.into_iter().map(|(node, shards)| async move {
                let mut replies = Vec::new();
                // One RPC per shard keeps each group's commands in order;
                // the node runs them concurrently with other shards'.
                let futs = shards.into_iter().map(|(shard, items)| async move {
                    let r = self
                        .data(node, &make(shard, items.clone()), self.opts.rpc_timeout * 4)
                        .await;
                    (shard, items, r)
                });
                replies.extend(join_all(futs).await);
                (node, replies)
            });
            let mut progress = false;
            for (node, replies) in join_all(calls).await {
                for (shard, items, r) in replies {
                    if matches!(r, Err(Failure::Unreachable(_))) {
                        dead.insert(node);
                    }
                    let per_item = match r.map_err(|f| match f {
                        Failure::Unreachable(e) => DataError::Unavailable(e),
                        Failure::Data(d) => d,
                    }) {
                        Ok(reply) => take(reply),
                        Err(e) => Err(e),
                    };
                    match per_item {
                        Ok(results) => {
                            for (item, res) in items.into_iter().zip(results) {
                                match res {
                                    Ok(resp) => {
                                        if let (Some(current), Some(job)) =
                                            (resp.superseded_by, job)
                                        {
                                            return Err(TableError::StaleEpoch {
                                                job,
                                                epoch: self.epoch(job),
                                                current,
                                            });
                                        }
                                        if let Some(e) = &resp.error {
                                            return Err(unavailable(format!(
                                                "shard {shard} refused: {e}"
                                            )));
                                        }
                                        progress = true;
                                        done.push((shard, resp));
                                    }
                                    Err(e) => {
                                        self.retry_on(shard, node, &e, &dead, &mut progress)?;
                                        last_error = e.to_string();
                                        pending.push((shard, item));
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            self.retry_on(shard, node, &e, &dead, &mut progress)?;
                            last_error = e.to_string();
                            pending.extend(items.into_iter().map(|i| (shard, i)));
                        }
                    }
                }
            }
            if pending.is_empty() {
                return Ok(done);
            }
            if start.elapsed() > self.opts.deadline {
                return Err(unavailable(format!(
                    "{} shard operations not acknowledged within {:?}; last error: {last_error}",
                    pending.len(),
                    self.opts.deadline
                )));
            }
            if !progress {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            } else {
                backoff = Duration::from_millis(10);
            }
        }
    }

    /// Updates the leader guess after a failure; errors that retrying
    /// cannot fix are returned.
    fn retry_on(
        &self,
        shard: ShardId,
        node: u64,
        e: &DataError,
        dead: &std::collections::HashSet<u64>,
        progress: &mut bool,
    ) -> Result<(), TableError> {
        match e {
            DataError::NotLeader {
                leader: Some(l), ..
            } if *l != node && !dead.contains(l) => {
                self.leaders.lock().insert(shard, *l);
                *progress = true;
                Ok(())
            }
            DataError::NotLeader { .. } | DataError::NotHere { .. } | DataError::Unavailable(_) => {
                self.rotate(shard, node);
                Ok(())
            }
            DataError::Table(t) => Err(t.clone()),
            DataError::Refused(m) => Err(unavailable(format!("shard {shard}: {m}"))),
            DataError::NotYet => Ok(()),
        }
    }

    /// Runs commands (of `job`, when they are a job's) on every listed
    /// shard's leader, in order per shard.
    fn commands(
        &self,
        job: Option<JobId>,
        per_shard: Vec<(ShardId, ShardRequest)>,
    ) -> Result<(), TableError> {
        self.rt
            .block_on(self.to_leaders(
                job,
                per_shard,
                |shard, commands| DataRequest::Commands { shard, commands },
                |reply| match reply {
                    DataReply::Done(rs) => Ok(rs.into_iter().map(Ok).collect()),
                    other => Err(DataError::Refused(format!("unexpected reply {other:?}"))),
                },
            ))
            .map(|_| ())
    }

    fn all_shards(&self, req: ShardRequest) -> Vec<(ShardId, ShardRequest)> {
        (0..self.placement.shards())
            .map(|s| (s, req.clone()))
            .collect()
    }

    /// Runs one command on a shard's leader and returns its response
    /// (checkpoint requests, restores, worker blobs); a refusal is an error.
    pub fn command(&self, shard: ShardId, req: ShardRequest) -> Result<ShardResponse, TableError> {
        let job = request_job(&req);
        let mut out = self.rt.block_on(self.to_leaders(
            job,
            vec![(shard, req)],
            |shard, commands| DataRequest::Commands { shard, commands },
            |reply| match reply {
                DataReply::Done(rs) => Ok(rs.into_iter().map(Ok).collect()),
                other => Err(DataError::Refused(format!("unexpected reply {other:?}"))),
            },
        ))?;
        Ok(out.pop().map(|(_, r)| r).unwrap_or_default())
    }

    /// Rolls `job` back to its checkpoint at `clock` (the label: the last
    /// clock it includes) on every shard: each part is read from a replica
    /// that has it and shipped through the group's log, so replicas that
    /// never wrote it (caught up from a snapshot) restore it too.
    pub fn restore_checkpoint(&self, job: JobId, clock: Clock) -> Result<(), TableError> {
        let mut parts = Vec::with_capacity(self.placement.shards() as usize);
        for shard in 0..self.placement.shards() {
            let image = self
                .ask_replicas(shard, &DataRequest::ShardImage { shard, job, clock })?
                .ok_or_else(|| {
                    unavailable(format!(
                        "no replica has shard {shard}'s part of the checkpoint of job {job} at clock {clock}"
                    ))
                })?;
            parts.push((
                shard,
                ShardRequest::RestoreImage {
                    job,
                    epoch: self.epoch(job),
                    clock,
                    image,
                },
            ));
        }
        self.commands(Some(job), parts)
    }

    /// A worker blob of `job` at `clock` committed through `shard`'s
    /// group, from the first replica that has it.
    pub fn fetch_blob(
        &self,
        shard: ShardId,
        job: JobId,
        clock: Clock,
        worker: u32,
    ) -> Result<Option<Vec<u8>>, TableError> {
        self.ask_replicas(shard, &DataRequest::Blob { job, clock, worker })
    }

    /// Asks `shard`'s replicas, the local one first, for a stored part
    /// (`DataReply::Blob`) until one has it. None when every replica
    /// answered without it; the last error when some did not answer.
    fn ask_replicas(
        &self,
        shard: ShardId,
        req: &DataRequest,
    ) -> Result<Option<Vec<u8>>, TableError> {
        let mut members = self.placement.members(crate::placement::shard_group(shard));
        members.sort_by_key(|&n| n != self.local);
        let mut last = None;
        for node in members {
            match self.call(node, req) {
                Ok(DataReply::Blob(Some(b))) => return Ok(Some(b)),
                Ok(_) => {}
                Err(e) => last = Some(e),
            }
        }
        last.map_or(Ok(None), Err)
    }

    /// Registers a job whose shards write a consistent checkpoint by
    /// themselves every `checkpoint_every` clocks (docs/design.md §3).
    pub fn register_job_every(
        &self,
        job: JobId,
        workers: u32,
        deterministic: bool,
        checkpoint_every: Clock,
    ) -> Result<(), TableError> {
        self.aborted.lock().remove(&job);
        self.jobs.lock().insert(job);
        self.commands(
            Some(job),
            self.all_shards(ShardRequest::RegisterJob {
                job,
                epoch: self.epoch(job),
                workers,
                deterministic,
                checkpoint_every,
            }),
        )
    }

    /// Drops `job`'s tables, rows and clocks on every shard under this
    /// connection's run of it (which begins that run there, see
    /// [`ShardRequest::DropJob`]).
    pub fn drop_job_checked(&self, job: JobId) -> Result<(), TableError> {
        self.jobs.lock().remove(&job);
        self.commands(
            Some(job),
            self.all_shards(ShardRequest::DropJob {
                job,
                epoch: self.epoch(job),
            }),
        )
    }

    /// Runs a metadata command.
    pub fn meta(&self, cmd: MetaCommand) -> Result<crate::meta::MetaAnswer, TableError> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < self.opts.deadline {
            for &node in self.placement.nodes() {
                match self.call(node, &DataRequest::Meta(cmd.clone())) {
                    Ok(DataReply::Meta(a)) => return Ok(a),
                    Ok(other) => return Err(unavailable(format!("unexpected reply {other:?}"))),
                    Err(TableError::Unavailable(e)) if e.contains("refused:") => {
                        return Err(TableError::Unavailable(e))
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(unavailable(format!("metadata group unavailable: {last}")))
    }
}

impl ClusterShards {
    /// A read that waits for no clock (job init and model export): every
    /// acknowledged write must be in it, so it goes to the shard's leader,
    /// which confirms its leadership (linearizable read) before answering.
    fn fetch_latest(&self, shard: ShardId, req: &FetchRequest) -> Result<RowSnapshot, TableError> {
        let ask = DataRequest::FetchLatest {
            shard,
            req: req.clone(),
            epoch: self.epoch(req.job),
        };
        let what = format!("a read of table {} row {}", req.table, req.row);
        match self.to_leader(shard, Some(req.job), &ask, &what)? {
            DataReply::Row(snap) => Ok(snap),
            other => Err(unavailable(format!("unexpected reply {other:?}"))),
        }
    }

    /// One request to `shard`'s leader (reads behind a read barrier):
    /// follows leader hints and fails over until the deadline; a job's
    /// request stops as soon as the job is aborted. `what` names it in the
    /// timeout error.
    fn to_leader(
        &self,
        shard: ShardId,
        job: Option<JobId>,
        req: &DataRequest,
        what: &str,
    ) -> Result<DataReply, TableError> {
        let start = Instant::now();
        let mut last = String::new();
        let mut dead = std::collections::HashSet::new();
        loop {
            if let Some(job) = job {
                self.check_aborted(job)?;
            }
            if start.elapsed() > self.opts.deadline {
                return Err(unavailable(format!(
                    "shard {shard}: no leader answered {what} within {:?}: {last}",
                    self.opts.deadline
                )));
            }
            let node = self.leader_guess(shard);
            let e = match self
                .rt
                .block_on(self.data(node, req, self.opts.rpc_timeout))
            {
                Ok(reply) => return Ok(reply),
                Err(Failure::Data(DataError::Table(e))) => return Err(e),
                Err(Failure::Data(DataError::Refused(e))) => return Err(unavailable(e)),
                Err(Failure::Unreachable(e)) => {
                    dead.insert(node);
                    DataError::Unavailable(e)
                }
                Err(Failure::Data(d)) => d,
            };
            let mut progress = false;
            self.retry_on(shard, node, &e, &dead, &mut progress)?;
            last = e.to_string();
            if !progress {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// ESSP in cluster mode: one long poll per (shard, job) that returns
    /// the subscribed rows each time the shard's min clock advances, pushed
    /// into the subscribed sinks (the process cache).
    fn start_watchers(&self) {
        let peers = self.peers.clone();
        let sinks = self.sinks.clone();
        let jobs = self.jobs.clone();
        let placement = self.placement.clone();
        let local = self.local;
        let timeout = self.opts.rpc_timeout;
        let epochs = self.epochs.clone();
        self.rt.spawn(async move {
            let mut running: HashMap<(ShardId, JobId), tokio::task::JoinHandle<()>> =
                HashMap::new();
            // Runs until the connection (and with it this runtime) is dropped.
            loop {
                let live: Vec<JobId> = jobs.lock().iter().copied().collect();
                running.retain(|(_, j), h| live.contains(j) && !h.is_finished());
                for &job in &live {
                    for shard in 0..placement.shards() {
                        if running.contains_key(&(shard, job)) {
                            continue;
                        }
                        let epoch = epochs.lock().get(&job).copied().unwrap_or(0);
                        let task = watch_shard(
                            epoch,
                            peers.clone(),
                            sinks.clone(),
                            jobs.clone(),
                            placement.replicas_of(shard),
                            local,
                            shard,
                            job,
                            timeout,
                        );
                        running.insert((shard, job), tokio::spawn(task));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch_shard(
    epoch: u64,
    peers: Arc<Peers>,
    sinks: Arc<Mutex<Vec<Weak<dyn PushSink>>>>,
    jobs: Arc<Mutex<std::collections::BTreeSet<JobId>>>,
    replicas: Vec<u64>,
    local: u64,
    shard: ShardId,
    job: JobId,
    timeout: Duration,
) {
    let mut i = replicas.iter().position(|&n| n == local).unwrap_or(0);
    let mut after: Clock = 0;
    while jobs.lock().contains(&job) {
        let live: Vec<Arc<dyn PushSink>> = {
            let mut s = sinks.lock();
            s.retain(|w| w.strong_count() > 0);
            s.iter().filter_map(Weak::upgrade).collect()
        };
        let mut rows: Vec<(TableId, RowId)> =
            live.iter().flat_map(|s| s.subscribed(shard, job)).collect();
        rows.sort_unstable();
        rows.dedup();
        if rows.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let wait_ms = 1000;
        let req = DataRequest::Watch {
            shard,
            job,
            epoch,
            after,
            rows,
            wait_ms,
        };
        let node = replicas[i];
        let r = peers
            .call(
                node,
                Method::Data,
                shard_group(shard),
                KIND_DATA,
                wire::encode(&req),
                timeout + Duration::from_millis(wait_ms),
            )
            .await;
        let reply = r
            .map_err(|e| e.to_string())
            .and_then(|b| wire::decode::<Result<DataReply, DataError>>(&b, "watch reply"));
        match reply {
            Ok(Ok(DataReply::Rows { min_clock, rows })) => {
                after = min_clock;
                for s in &live {
                    s.push(shard, rows.clone());
                }
            }
            Ok(Err(DataError::NotYet)) => {}
            _ => {
                i = (i + 1) % replicas.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

enum Failure {
    Unreachable(String),
    Data(DataError),
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
        self.placement.shards()
    }

    fn create_table(&self, spec: &TableSpec) -> Result<(), TableError> {
        self.meta(MetaCommand::DefineTable(spec.clone()))?;
        self.table_jobs.lock().insert(spec.id, spec.job);
        self.commands(
            Some(spec.job),
            self.all_shards(ShardRequest::CreateTable(spec.clone())),
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
        let n = self.num_shards();
        let job = self.table_jobs.lock().get(&table).copied();
        let epoch = job.map_or(0, |j| self.epoch(j));
        // Rows grouped per shard into entries of about LOAD_CHUNK_BYTES:
        // one Raft append (one fsync per replica) per chunk, where a
        // command per row made a 4k-row initialisation take a minute on a
        // busy machine.
        let mut per_shard: BTreeMap<ShardId, Vec<Vec<(RowId, AnyRow)>>> = BTreeMap::new();
        for (row, value) in rows {
            let chunks = per_shard.entry(shard_of(table, row, n)).or_default();
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
                |_, batches| DataRequest::Push { epoch, batches },
                |reply| {
                    match reply {
                        DataReply::Pushed(rs) => Ok(rs
                            .into_iter()
                            .map(|r| r.map(|()| ShardResponse::default()))
                            .collect()),
                        other => Err(DataError::Refused(format!("unexpected reply {other:?}"))),
                    }
                },
            ))
            .map(|_| ())
    }

    fn fetch(&self, req: &FetchRequest) -> Result<RowSnapshot, TableError> {
        let shard = shard_of(req.table, req.row, self.num_shards());
        if req.min_clock.is_none() && req.own_clock == 0 {
            return self.fetch_latest(shard, req);
        }
        let replicas = self.placement.replicas_of(shard);
        let mut i = match replicas.iter().position(|&n| n == self.local) {
            Some(p) => p,
            None => req.worker as usize % replicas.len(),
        };
        let mut start = Instant::now();
        let mut last = String::new();
        loop {
            self.check_aborted(req.job)?;
            if start.elapsed() > self.opts.deadline {
                return Err(unavailable(format!(
                    "shard {shard}: no replica answered a read of table {} row {} within {:?}: {last}",
                    req.table, req.row, self.opts.deadline
                )));
            }
            let node = replicas[i];
            let wait_ms = 500;
            let r = self.rt.block_on(self.data(
                node,
                &DataRequest::Fetch {
                    shard,
                    req: req.clone(),
                    epoch: self.epoch(req.job),
                    wait_ms,
                },
                self.opts.rpc_timeout + Duration::from_millis(wait_ms),
            ));
            match r {
                Ok(DataReply::Row(snap)) => return Ok(snap),
                Ok(other) => return Err(unavailable(format!("unexpected reply {other:?}"))),
                // The replica is alive and the run current, waiting for a
                // slower worker's clock: keep waiting as long as that is
                // so. A dead worker's host makes the scheduler begin a new
                // run, and this one's next read is refused as stale.
                Err(Failure::Data(DataError::NotYet)) => start = Instant::now(),
                Err(Failure::Data(DataError::Table(e))) => return Err(e),
                Err(Failure::Data(DataError::Refused(e))) => return Err(unavailable(e)),
                Err(Failure::Unreachable(e)) | Err(Failure::Data(DataError::Unavailable(e))) => {
                    last = e;
                    i = (i + 1) % replicas.len();
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(Failure::Data(e)) => {
                    last = e.to_string();
                    i = (i + 1) % replicas.len();
                }
            }
        }
    }

    fn row_ids(&self, table: TableId) -> Result<Vec<RowId>, TableError> {
        let mut ids = Vec::new();
        for shard in 0..self.num_shards() {
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
