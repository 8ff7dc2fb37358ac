//! Handling of peer and client requests: Raft messages, table reads and
//! writes (push, read barrier, exact fetch, long polls), metadata.

use super::{ClusterNode, ShardGroup};
use crate::placement::{shard_group, META_GROUP};
use crate::wire::{
    self, DataError, DataReply, DataRequest, RaftBatch, RaftBatchReply, Refusal, FETCH_REPLY_BYTES,
    KIND_APPEND, KIND_BATCH, KIND_SNAPSHOT, KIND_VOTE, MAX_BATCH_MESSAGES, MAX_WAIT_MS,
};
use futures::future::join_all;
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use petuum_core::batch::UpdateBatch;
use petuum_core::types::{JobId, ShardId};
use petuum_storage::{tombstone, EpochCheck, ShardRequest, TypeConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

impl ClusterNode {
    /// Handles a Raft message for one of this node's groups (in a `raft`
    /// span with the node and group, at debug level: one per RPC).
    #[tracing::instrument(level = "debug", name = "raft", skip(self, payload), fields(node = self.id()))]
    pub async fn handle_raft(
        &self,
        group: u64,
        kind: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, Status> {
        if kind != KIND_BATCH {
            return self.handle_raft_one(group, kind, payload).await;
        }
        // Several groups' messages from one peer: handled concurrently (as
        // separate calls would be), answered together.
        let batch: RaftBatch = wire::decode(payload, "Raft batch")
            .map_err(|e| Status::invalid_argument(format!("Raft batch: {e}")))?;
        if batch.len() > MAX_BATCH_MESSAGES {
            return Err(Status::invalid_argument(format!(
                "a Raft batch of {} messages (at most {MAX_BATCH_MESSAGES})",
                batch.len()
            )));
        }
        if let Some((g, k, _)) = batch.iter().find(|(_, k, _)| *k == KIND_BATCH) {
            return Err(Status::invalid_argument(format!(
                "a Raft batch inside a Raft batch (group {g}, kind {k})"
            )));
        }
        let answers = join_all(
            batch
                .iter()
                .map(|(g, k, p)| self.handle_raft_one(*g, *k, p)),
        )
        .await;
        let reply: RaftBatchReply = answers
            .into_iter()
            .map(|a| a.map_err(|s| (s.code() as i32, s.message().to_string())))
            .collect();
        Ok(wire::encode(&reply))
    }

    async fn handle_raft_one(
        &self,
        group: u64,
        kind: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, Status> {
        let raft = self.raft(group).ok_or_else(|| {
            Status::not_found(format!(
                "group {group} has no replica on node {}",
                self.id()
            ))
        })?;
        let bad = |e: String| Status::invalid_argument(format!("group {group}: {e}"));
        match kind {
            KIND_APPEND => {
                let req: AppendEntriesRequest<TypeConfig> =
                    wire::decode(payload, "append-entries").map_err(bad)?;
                let reply = tombstone::append_entries(&self.db, group, &raft, req).await;
                Ok(wire::encode(&reply))
            }
            KIND_VOTE => {
                let req: VoteRequest<u64> = wire::decode(payload, "vote").map_err(bad)?;
                Ok(wire::encode(
                    &tombstone::vote(&self.db, group, &raft, req).await,
                ))
            }
            KIND_SNAPSHOT => {
                let req: InstallSnapshotRequest<TypeConfig> =
                    wire::decode(payload, "install-snapshot").map_err(bad)?;
                let reply = tombstone::install_snapshot(&self.db, group, &raft, req).await;
                Ok(wire::encode(&reply))
            }
            k => Err(Status::invalid_argument(format!(
                "unknown Raft message kind {k} for group {group}"
            ))),
        }
    }

    /// A long poll on this node's replica of `shard`: `ready` looks at the
    /// replica after each applied entry until it finds what the read
    /// needs, or `wait_ms` (bounded) passes and the answer is `NotYet`.
    async fn long_poll<T, E: Into<DataError>>(
        &self,
        shard: ShardId,
        wait_ms: u64,
        mut ready: impl FnMut(&petuum_storage::Replica) -> Result<Option<T>, E>,
    ) -> Result<T, DataError> {
        let group = shard_group(shard);
        let g = self.shard(shard).ok_or(DataError::NotHere { group })?;
        let mut watch = g.handle.applied_watch();
        let deadline = long_poll_deadline(wait_ms);
        loop {
            // A replica its group let go of (a move) gets no more entries:
            // it must not keep a reader waiting, so it answers as if gone.
            if !self.serves(&g) {
                return Err(DataError::NotHere { group });
            }
            let _ = watch.borrow_and_update();
            if let Some(v) = g.handle.with_replica(&mut ready).map_err(Into::into)? {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, watch.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(DataError::Unavailable("shard closed".into())),
                Err(_) => return Err(DataError::NotYet),
            }
        }
    }

    /// A `Fetch` of this node's own workers answered in place when its
    /// replica already meets it (no task, no wait: the common case of a
    /// read right after its clock committed on this node); `None` when it
    /// would wait, or cannot be answered here, for
    /// [`handle_data`](Self::handle_data) to take.
    pub fn fetch_now(&self, req: &DataRequest) -> Option<DataReply> {
        let DataRequest::Fetch {
            shard, reqs, epoch, ..
        } = req
        else {
            return None;
        };
        let g = self.shard(*shard)?;
        if !self.serves(&g) {
            return None;
        }
        let rows = g
            .handle
            .with_replica(|r| exact_fetch_prefix(r, reqs, *epoch))
            .ok()??;
        Some(self.fetched(*shard, *epoch, self.id(), reqs, rows))
    }

    /// The reply to a fetch from node `from`: `rows` with the previews of
    /// other nodes' workers added.
    fn fetched(
        &self,
        shard: ShardId,
        epoch: u64,
        from: u64,
        reqs: &[petuum_core::service::FetchRequest],
        mut rows: Vec<petuum_core::service::RowSnapshot>,
    ) -> DataReply {
        if self.previews.holds_any() {
            for (req, snap) in reqs.iter().zip(rows.iter_mut()) {
                self.previews.overlay(shard, epoch, from, req, snap);
            }
        }
        DataReply::Snapshots(rows)
    }

    /// Handles a table or metadata request.
    pub async fn handle_data(&self, req: DataRequest) -> Result<DataReply, DataError> {
        self.handle_data_from(req, self.id()).await
    }

    /// Handles a request that node `from` sent (0: a client that is not a
    /// node). Only previews look at the sender: a read leaves out the
    /// previews its own node sent.
    pub async fn handle_data_from(
        &self,
        req: DataRequest,
        from: u64,
    ) -> Result<DataReply, DataError> {
        match req {
            DataRequest::Push { epoch, batches } => {
                Ok(DataReply::Pushed(self.push(epoch, batches).await))
            }
            DataRequest::Fetch {
                shard,
                reqs,
                epoch,
                wait_ms,
            } => {
                let rows = self
                    .long_poll(shard, wait_ms, |r| exact_fetch_prefix(r, &reqs, epoch))
                    .await?;
                Ok(self.fetched(shard, epoch, from, &reqs, rows))
            }
            DataRequest::FetchLatest { shard, reqs, epoch } => {
                let g = self.read_barrier(shard).await?;
                match g
                    .handle
                    .with_replica(|r| exact_fetch_prefix(r, &reqs, epoch))?
                {
                    Some(rows) => Ok(DataReply::Snapshots(rows)),
                    None => Err(DataError::NotYet),
                }
            }
            DataRequest::Commands { shard, commands } => {
                let group = shard_group(shard);
                let mut out = Vec::with_capacity(commands.len());
                for c in commands {
                    out.push(self.write(group, c).await?);
                }
                Ok(DataReply::Done(out))
            }
            DataRequest::RowIds { shard, table } => {
                // Exports list rows: every acknowledged write must be in
                // the list, so the leader answers after a read barrier.
                let g = self.read_barrier(shard).await?;
                let ids = g.handle.with_current(|st| {
                    st.table(table)?;
                    Ok::<_, petuum_core::TableError>(st.row_ids(table))
                })?;
                Ok(DataReply::RowIds(ids))
            }
            DataRequest::ReadLocal {
                shard,
                table,
                row,
                job,
            } => {
                let g = self.shard(shard).ok_or(DataError::NotHere {
                    group: shard_group(shard),
                })?;
                Ok(g.handle.with_replica(|r| DataReply::Local {
                    row: r.data.current().read(table, row).ok(),
                    last_applied: r.last_applied.map_or(0, |l| l.index),
                    worker_clocks: job
                        .and_then(|j| r.data.current().job(j).ok().map(|c| c.applied()))
                        .unwrap_or_default(),
                }))
            }
            DataRequest::Meta(cmd) => Ok(DataReply::Meta(self.meta_command(cmd).await?)),
            DataRequest::MetaAt(cmd) => {
                // Applied here too before the answer: the asking node
                // reads the metadata from this one first when it holds no
                // replica. Not passed on to other voters from here: the
                // asking node tries them itself.
                let (answer, index) = self.meta_command_seen(cmd, false).await?;
                Ok(DataReply::MetaAt(answer, index))
            }
            DataRequest::Watch {
                shard,
                job,
                epoch,
                after,
                rows,
                wait_ms,
            } => {
                let (min_clock, rows) = self
                    .long_poll(shard, wait_ms, |r| {
                        match r.data.check_epoch(job, epoch) {
                            EpochCheck::Stale { current } => {
                                return Err(petuum_core::TableError::StaleEpoch {
                                    job,
                                    epoch,
                                    current,
                                })
                            }
                            _ if !r.data.live_in(job, epoch) => return Ok(None),
                            _ => {}
                        }
                        let st = r.data.current();
                        let clocks = st.job(job)?;
                        let min_clock = clocks.min_clock();
                        if min_clock <= after {
                            return Ok::<_, petuum_core::TableError>(None);
                        }
                        let worker_clocks: Arc<[u64]> = clocks.applied().into();
                        let version = replica_version(r);
                        let out = rows
                            .iter()
                            .filter_map(|&(t, r)| {
                                let row = st.read(t, r).ok()?;
                                Some((
                                    (t, r),
                                    petuum_core::service::RowSnapshot {
                                        row: Arc::new(row),
                                        min_clock,
                                        worker_clocks: worker_clocks.clone(),
                                        version,
                                    },
                                ))
                            })
                            .collect();
                        Ok(Some((min_clock, out)))
                    })
                    .await?;
                Ok(DataReply::Rows { min_clock, rows })
            }
            DataRequest::Yield { group, to } => {
                self.yield_leadership(group, to).await?;
                Ok(DataReply::Ok)
            }
            DataRequest::MetaRead => match self.meta_handle() {
                Some(h) => Ok(DataReply::MetaState(Box::new(h.state()))),
                None => Err(DataError::NotHere { group: META_GROUP }),
            },
            DataRequest::Blob { job, clock, worker } => {
                let store = petuum_storage::CheckpointStore::new(self.db.clone());
                let blob = store
                    .load_worker_blob(job, clock, worker)
                    .map_err(|e| DataError::Unavailable(e.to_string()))?;
                Ok(DataReply::Blob(blob))
            }
            DataRequest::Ping => Ok(DataReply::Ok),
            DataRequest::Relay { to, req } => match *req {
                inner @ (DataRequest::Push { .. } | DataRequest::Commands { .. }) => {
                    if to == self.id() {
                        Box::pin(self.handle_data_from(inner, from)).await
                    } else {
                        self.data_call(to, &inner, crate::wire::RELAY_TIMEOUT).await
                    }
                }
                _ => Err(DataError::Refused(crate::wire::Refusal::Rejected(
                    "only writes are relayed".into(),
                ))),
            },
            DataRequest::MetaReadIndex => self.meta_leader_read_index().await.map(DataReply::Index),
            DataRequest::MetaLinear(read) => match *read {
                inner @ (DataRequest::MetaJob { .. }
                | DataRequest::MetaActive
                | DataRequest::MetaRead) => {
                    if !self.meta_caught_up().await? {
                        return Err(DataError::NotHere { group: META_GROUP });
                    }
                    Box::pin(self.handle_data_from(inner, from)).await
                }
                _ => Err(DataError::Refused(crate::wire::Refusal::Rejected(
                    "only metadata reads are answered linearizably".into(),
                ))),
            },
            DataRequest::PingPeer { node } => {
                if node == self.id() || self.ping(node, crate::wire::PING_PEER_TIMEOUT).await {
                    Ok(DataReply::Ok)
                } else {
                    Err(DataError::Unavailable(format!(
                        "node {node} did not answer node {} within {:?}",
                        self.id(),
                        crate::wire::PING_PEER_TIMEOUT
                    )))
                }
            }
            DataRequest::Preview { epoch, previews } => {
                for (shard, p) in previews {
                    let Some(g) = self.shard(shard) else { continue };
                    let checked = g
                        .handle
                        .with_replica(|r| crate::previews::check(&r.data, &p, epoch));
                    let held = checked
                        .and_then(|applied| self.previews.hold(shard, from, epoch, p, &applied));
                    if let Err(e) = held {
                        return Err(DataError::Refused(Refusal::Rejected(format!(
                            "preview for shard {shard}: {e}"
                        ))));
                    }
                }
                Ok(DataReply::Ok)
            }
            DataRequest::ShardImage { shard, job, clock } => {
                let store = petuum_storage::CheckpointStore::new(self.db.clone());
                let part = store
                    .load_shard_bytes(job, clock, shard)
                    .map_err(|e| DataError::Unavailable(e.to_string()))?;
                Ok(DataReply::Blob(part))
            }
            DataRequest::Elect { group } => {
                let raft = self.raft(group).ok_or(DataError::NotHere { group })?;
                if self.is_stopping() {
                    return Err(DataError::Refused(Refusal::Busy(format!(
                        "node {} is stopping: it campaigns for no group",
                        self.id()
                    ))));
                }
                raft.trigger()
                    .elect()
                    .await
                    .map_err(|e| DataError::Unavailable(e.to_string()))?;
                Ok(DataReply::Ok)
            }
            DataRequest::MetaJob { job } => match self.meta_handle() {
                Some(h) => {
                    Ok(DataReply::Job(h.with_state(|m| {
                        m.jobs.get(&job).map(|r| Box::new((**r).clone()))
                    })))
                }
                None => Err(DataError::NotHere { group: META_GROUP }),
            },
            DataRequest::MetaActive => match self.meta_handle() {
                Some(h) => Ok(DataReply::MetaState(Box::new(
                    h.with_state(crate::meta::MetaState::active),
                ))),
                None => Err(DataError::NotHere { group: META_GROUP }),
            },
            DataRequest::DatasetChunk { record, .. }
            | DataRequest::DatasetDamaged { record, .. }
            | DataRequest::DatasetManifest { record }
            | DataRequest::DatasetPull { record }
                if record.check().is_err() =>
            {
                Err(DataError::Refused(Refusal::Invalid(
                    record.check().unwrap_err(),
                )))
            }
            DataRequest::DatasetChunk { record, index } => {
                crate::datasets::fetch::serve_chunk(self, record, index).await
            }
            DataRequest::DatasetDamaged { record, index } => {
                crate::datasets::fetch::check_damage(self, record, index).await
            }
            DataRequest::DatasetManifest { record } => {
                crate::datasets::fetch::serve_manifest(self, record).await
            }
            DataRequest::DatasetPull { record } => {
                crate::datasets::fetch::ensure(self, &record)
                    .await
                    .map_err(|e| DataError::Unavailable(e.to_string()))?;
                Ok(DataReply::Ok)
            }
            DataRequest::Join { nonce, addr, id } => self.admit(nonce, addr, id).await,
            DataRequest::OpenGroup { group } => {
                self.host_group(group).await?;
                Ok(DataReply::Ok)
            }
            DataRequest::AddLearner { group, node, addr } => {
                self.add_learner(group, node, addr).await
            }
            DataRequest::SetVoters { group, voters } => self.set_voters(group, voters).await,
            DataRequest::DropGroup { group } => {
                // The driver asks once the group's voters no longer include
                // this node and the move is recorded. A replica that still
                // leads is not dropped.
                if let Some(raft) = self.raft(group) {
                    if raft.metrics().borrow().current_leader == Some(self.id()) {
                        return Err(DataError::Refused(Refusal::Busy(format!(
                            "node {} leads group {group}",
                            self.id()
                        ))));
                    }
                }
                self.drop_group(group).await?;
                Ok(DataReply::Ok)
            }
            DataRequest::CopyCheckpoints { shard, from, jobs } => {
                self.copy_checkpoints(shard, from, jobs).await?;
                Ok(DataReply::Ok)
            }
            DataRequest::CheckpointIndex { jobs } => {
                let store = petuum_storage::CheckpointStore::new(self.db.clone());
                let mut out = Vec::with_capacity(jobs.len());
                for job in jobs.into_iter().take(100_000) {
                    let list = store
                        .list(job)
                        .map_err(|e| DataError::Unavailable(e.to_string()))?;
                    if !list.is_empty() {
                        out.push((
                            job,
                            list.into_iter()
                                .map(|c| crate::wire::StoredCheckpoint {
                                    clock: c.clock,
                                    shards: c.shards,
                                    workers: c.workers,
                                })
                                .collect(),
                        ));
                    }
                }
                Ok(DataReply::Checkpoints(out))
            }
        }
    }

    /// Copies from node `from` the checkpoint parts of `shard` and the
    /// worker states (and finished models) committed through its group,
    /// that this node lacks: a replica that caught up by snapshot never
    /// wrote the ones before it.
    async fn copy_checkpoints(
        &self,
        shard: ShardId,
        from: u64,
        jobs: Vec<petuum_core::types::JobId>,
    ) -> Result<(), DataError> {
        let n = self.placement().shards();
        let store = petuum_storage::CheckpointStore::new(self.db.clone());
        let unavailable = |e: petuum_storage::StorageError| DataError::Unavailable(e.to_string());
        let index = match self
            .data_call(
                from,
                &DataRequest::CheckpointIndex { jobs },
                Duration::from_secs(60),
            )
            .await?
        {
            DataReply::Checkpoints(c) => c,
            other => {
                return Err(DataError::Unavailable(format!(
                    "unexpected checkpoint index {other:?}"
                )))
            }
        };
        let mut copied = 0usize;
        for (job, list) in index {
            // Worker states went through the shards of the job's span.
            let span = match self.meta_job(job).await {
                Ok(Some(r)) => r.span(n),
                _ => petuum_core::types::JobShards::all(n),
            };
            let have: std::collections::BTreeMap<u64, petuum_storage::CheckpointInfo> = store
                .list(job)
                .map_err(unavailable)?
                .into_iter()
                .map(|c| (c.clock, c))
                .collect();
            for c in list {
                let had = have.get(&c.clock);
                if c.shards.contains(&shard) && !had.is_some_and(|h| h.shards.contains(&shard)) {
                    let ask = DataRequest::ShardImage {
                        shard,
                        job,
                        clock: c.clock,
                    };
                    if let DataReply::Blob(Some(bytes)) =
                        self.data_call(from, &ask, Duration::from_secs(60)).await?
                    {
                        petuum_storage::checkpoint::decode_shard_part(&bytes, job, c.clock, shard)
                            .map_err(unavailable)?;
                        store
                            .put_shard_bytes(job, c.clock, shard, &bytes)
                            .map_err(unavailable)?;
                        copied += 1;
                    }
                }
                for &w in &c.workers {
                    // Worker states go through the `worker`-th shard of
                    // the job's span; a finished model (clock u64::MAX)
                    // through `job mod n`, the span's first.
                    let via = if c.clock == u64::MAX {
                        (job % n as u64) as ShardId
                    } else {
                        span.nth(w as u64)
                    };
                    if via != shard || had.is_some_and(|h| h.workers.contains(&w)) {
                        continue;
                    }
                    let ask = DataRequest::Blob {
                        job,
                        clock: c.clock,
                        worker: w,
                    };
                    if let DataReply::Blob(Some(bytes)) =
                        self.data_call(from, &ask, Duration::from_secs(60)).await?
                    {
                        store
                            .put_worker_blob(job, c.clock, w, &bytes)
                            .map_err(unavailable)?;
                        copied += 1;
                    }
                }
            }
        }
        self.db
            .sync_wal()
            .map_err(|e| DataError::Unavailable(e.to_string()))?;
        tracing::info!(
            node = self.id(),
            shard,
            from,
            parts = copied,
            "checkpoint parts copied"
        );
        Ok(())
    }

    async fn push(&self, epoch: u64, batches: Vec<UpdateBatch>) -> Vec<Result<(), DataError>> {
        // The batches of one job for one shard go to its group as one entry
        // (queued clocks, a node's workers), in the order they came.
        let n = batches.len();
        let mut entries: BTreeMap<(ShardId, JobId), (Vec<usize>, Vec<UpdateBatch>)> =
            BTreeMap::new();
        for (i, b) in batches.into_iter().enumerate() {
            let (idx, bs) = entries.entry((b.shard, b.job)).or_default();
            idx.push(i);
            bs.push(b);
        }
        let done = join_all(
            entries
                .into_iter()
                .map(|((shard, job), (idx, mut bs))| async move {
                    let group = shard_group(shard);
                    let req = if bs.len() == 1 {
                        ShardRequest::Batch {
                            epoch,
                            batch: bs.pop().expect("one batch"),
                        }
                    } else {
                        ShardRequest::Batches { epoch, batches: bs }
                    };
                    let r = match self.write(group, req).await {
                        Err(e) => Err(e),
                        Ok(resp) => match (resp.superseded_by, resp.error) {
                            (Some(current), _) => {
                                Err(DataError::Table(petuum_core::TableError::StaleEpoch {
                                    job,
                                    epoch,
                                    current,
                                }))
                            }
                            (None, Some(e)) => Err(DataError::Refused(Refusal::Shard(e))),
                            (None, None) => Ok(()),
                        },
                    };
                    (idx, r)
                }),
        )
        .await;
        let mut out: Vec<Option<Result<(), DataError>>> = (0..n).map(|_| None).collect();
        for (idx, r) in done {
            for i in idx {
                out[i] = Some(r.clone());
            }
        }
        out.into_iter()
            .map(|r| r.expect("every batch answered"))
            .collect()
    }

    /// Whether this replica still belongs to its group: a learner (a move
    /// under way), or a voter in the membership it applied that the
    /// recorded placement also puts here (a voter the placement dropped
    /// may be one that never heard of its removal).
    fn serves(&self, g: &ShardGroup) -> bool {
        let me = self.id();
        let m = g.raft.metrics().borrow().membership_config.clone();
        let learner = m.membership().learner_ids().any(|n| n == me);
        let voter = m.membership().voter_ids().any(|n| n == me);
        learner || (voter && self.placement().members(shard_group(g.shard)).contains(&me))
    }

    /// This node's replica of `shard` once it holds every write the group
    /// acknowledged: the leader, after confirming its leadership with a
    /// quorum (a linearizable read). Others answer `NotLeader`.
    async fn read_barrier(&self, shard: ShardId) -> Result<Arc<ShardGroup>, DataError> {
        let group = shard_group(shard);
        let g = self.shard(shard).ok_or(DataError::NotHere { group })?;
        match g.raft.ensure_linearizable().await {
            Ok(_) => Ok(g),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(DataError::NotLeader {
                    group,
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(DataError::Unavailable(format!("group {group}: {e}"))),
        }
    }
}

/// When a long poll asking for `wait_ms` gives up (capped at
/// [`MAX_WAIT_MS`]: a client-chosen wait cannot overflow the clock or park
/// a handler for long).
fn long_poll_deadline(wait_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(MAX_WAIT_MS))
}

/// A replica's version of its rows: the index of the last log entry it
/// applied. Replicas at the same index hold the same state and a higher
/// index is a later state, on every replica of the group (a restore or a
/// snapshot included), so caches can compare copies from any replica.
fn replica_version(r: &petuum_storage::Replica) -> u64 {
    r.last_applied.map_or(0, |l| l.index)
}

/// Reads of run `epoch` as this replica can serve them exactly (see
/// [`petuum_storage::ShardData::try_fetch`]), versioned by log index: the
/// longest ready prefix of `reqs` within [`FETCH_REPLY_BYTES`] (at least
/// one row), or `None` while the first is not ready.
fn exact_fetch_prefix(
    r: &petuum_storage::Replica,
    reqs: &[petuum_core::service::FetchRequest],
    epoch: u64,
) -> Result<Option<Vec<petuum_core::service::RowSnapshot>>, petuum_core::TableError> {
    if reqs.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let version = replica_version(r);
    let mut out = Vec::new();
    let mut bytes = 0;
    for req in reqs {
        if !out.is_empty() && bytes >= FETCH_REPLY_BYTES {
            break;
        }
        match r.data.try_fetch(req, epoch)? {
            Some(mut snap) => {
                snap.version = version;
                bytes += snap.row.value_bytes();
                out.push(snap);
            }
            None => break,
        }
    }
    Ok((!out.is_empty()).then_some(out))
}
