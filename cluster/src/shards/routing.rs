//! Getting requests to the right replica: the leader guess per shard and
//! its rotation, commands to shard leaders (following hints, failing
//! over), reads behind a leader's read barrier, and SSP reads from any
//! replica.

use super::{request_job, unavailable, ClusterShards, Failure};
use crate::retry::Retry;
use crate::wire::{DataError, DataReply, DataRequest, Refusal};
use futures::future::join_all;
use petuum_core::service::{FetchRequest, RowSnapshot};
use petuum_core::types::{JobId, JobShards, ShardId};
use petuum_core::TableError;
use petuum_storage::{ShardRequest, ShardResponse};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// About the most payload bytes one per-node call of
/// [`ClusterShards::to_leaders`] carries: far below the peers' message
/// limit, so many shards' batches share a call without one growing large.
const PER_NODE_CALL_BYTES: usize = 8 << 20;

impl ClusterShards {
    pub(super) fn leader_guess(&self, shard: ShardId) -> u64 {
        *self
            .leaders
            .lock()
            .entry(shard)
            .or_insert_with(|| self.placement().preferred_leader(shard))
    }

    /// Moves the guess to the next replica after `failed`.
    pub(super) fn rotate(&self, shard: ShardId, failed: u64) {
        let reps = self.placement().replicas_of(shard);
        let i = reps.iter().position(|&n| n == failed).unwrap_or(0);
        self.leaders
            .lock()
            .insert(shard, reps[(i + 1) % reps.len()]);
    }

    /// Sends per-shard payloads to shard leaders until each is accepted,
    /// following leader hints and failing over. With `per_node`, the
    /// payloads of the shards a node leads go in one RPC, up to about
    /// [`PER_NODE_CALL_BYTES`] as `per_node` weighs them (a shard's are
    /// never split; `make` then gets them shard by shard in order, and the
    /// first shard's id, so the request must name each item's shard
    /// itself, as a push's batches do); otherwise one RPC per shard.
    pub(super) async fn to_leaders<T: Clone>(
        &self,
        job: Option<JobId>,
        items: Vec<(ShardId, T)>,
        per_node: Option<fn(&T) -> usize>,
        make: impl Fn(ShardId, Vec<T>) -> DataRequest,
        // Per item result from a reply: Ok(Some(x)) done, Ok(None) retry.
        take: impl Fn(DataReply) -> Result<Vec<Result<ShardResponse, DataError>>, DataError>,
    ) -> Result<Vec<(ShardId, ShardResponse)>, TableError> {
        let (make, take) = (&make, &take);
        let mut attempts = Retry::LEADER.within(self.opts.deadline).start();
        let mut pending = items;
        let mut done = Vec::new();
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
            // The calls: (node, the shards' items it carries, the reply).
            let calls = by_node.into_iter().map(|(node, shards)| async move {
                // One RPC per shard (or per node) keeps each group's
                // commands in order; the node runs them concurrently with
                // other shards'.
                let units: Vec<Vec<(ShardId, Vec<T>)>> = match per_node {
                    Some(weigh) => {
                        let mut units: Vec<Vec<(ShardId, Vec<T>)>> = vec![Vec::new()];
                        let mut bytes = 0;
                        for (shard, items) in shards {
                            let w: usize = items.iter().map(weigh).sum();
                            if bytes > 0 && bytes + w > PER_NODE_CALL_BYTES {
                                units.push(Vec::new());
                                bytes = 0;
                            }
                            bytes += w;
                            units.last_mut().expect("one unit").push((shard, items));
                        }
                        units
                    }
                    None => shards.into_iter().map(|s| vec![s]).collect(),
                };
                let futs = units.into_iter().map(|unit| async move {
                    let first = unit[0].0;
                    let flat: Vec<T> = unit.iter().flat_map(|(_, i)| i.iter().cloned()).collect();
                    let shards: Vec<ShardId> = unit.iter().map(|(s, _)| *s).collect();
                    let r = self
                        .guarded(
                            node,
                            &make(first, flat),
                            self.opts.rpc_timeout * 4,
                            &shards,
                            job,
                            true,
                        )
                        .await;
                    (unit, r)
                });
                (node, join_all(futs).await)
            });
            let mut progress = false;
            for (node, replies) in join_all(calls).await {
                for (unit, r) in replies {
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
                            let mut results = results.into_iter();
                            for (shard, items) in unit {
                                for (item, res) in items.into_iter().zip(results.by_ref()) {
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
                        }
                        Err(e) => {
                            for (shard, items) in unit {
                                self.retry_on(shard, node, &e, &dead, &mut progress)?;
                                pending.extend(items.into_iter().map(|i| (shard, i)));
                            }
                            last_error = e.to_string();
                        }
                    }
                }
            }
            if pending.is_empty() {
                return Ok(done);
            }
            if attempts.expired() {
                return Err(unavailable(format!(
                    "{} shard operations not acknowledged within {:?}; last error: {last_error}",
                    pending.len(),
                    self.opts.deadline
                )));
            }
            // Progress (an acknowledgement, a leader hint to follow): the
            // next round goes at once, and waits start small again.
            if progress {
                attempts.progressed();
            } else {
                attempts.wait().await;
            }
        }
    }

    /// Updates the leader guess after a failure; errors that retrying
    /// cannot fix are returned.
    pub(super) fn retry_on(
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
    pub(super) fn commands(
        &self,
        job: Option<JobId>,
        per_shard: Vec<(ShardId, ShardRequest)>,
    ) -> Result<(), TableError> {
        self.rt
            .block_on(self.to_leaders(
                job,
                per_shard,
                None,
                |shard, commands| DataRequest::Commands { shard, commands },
                |reply| match reply {
                    DataReply::Done(rs) => Ok(rs.into_iter().map(Ok).collect()),
                    other => Err(DataError::Refused(Refusal::BadReply(format!(
                        "unexpected reply {other:?}"
                    )))),
                },
            ))
            .map(|_| ())
    }

    pub(super) fn all_shards(&self, req: ShardRequest) -> Vec<(ShardId, ShardRequest)> {
        (0..self.placement().shards())
            .map(|s| (s, req.clone()))
            .collect()
    }

    /// `req` for each shard of `job`'s span.
    pub(super) fn job_shards_req(
        &self,
        job: JobId,
        req: ShardRequest,
    ) -> Vec<(ShardId, ShardRequest)> {
        self.span(job).iter().map(|s| (s, req.clone())).collect()
    }

    /// Runs one command on a shard's leader and returns its response
    /// (checkpoint requests, restores, worker blobs); a refusal is an error.
    pub fn command(&self, shard: ShardId, req: ShardRequest) -> Result<ShardResponse, TableError> {
        let job = request_job(&req);
        let mut out = self.rt.block_on(self.to_leaders(
            job,
            vec![(shard, req)],
            None,
            |shard, commands| DataRequest::Commands { shard, commands },
            |reply| match reply {
                DataReply::Done(rs) => Ok(rs.into_iter().map(Ok).collect()),
                other => Err(DataError::Refused(Refusal::BadReply(format!(
                    "unexpected reply {other:?}"
                )))),
            },
        ))?;
        Ok(out.pop().map(|(_, r)| r).unwrap_or_default())
    }

    /// One request to `shard`'s leader (reads behind a read barrier):
    /// follows leader hints and fails over until the deadline; a job's
    /// request stops as soon as the job is aborted. `what` names it in the
    /// timeout error.
    pub(super) fn to_leader(
        &self,
        shard: ShardId,
        job: Option<JobId>,
        req: &DataRequest,
        what: &str,
    ) -> Result<DataReply, TableError> {
        self.rt.block_on(self.ask_leader(shard, job, req, what))
    }

    /// [`to_leader`](Self::to_leader) inside the runtime.
    async fn ask_leader(
        &self,
        shard: ShardId,
        job: Option<JobId>,
        req: &DataRequest,
        what: &str,
    ) -> Result<DataReply, TableError> {
        let mut attempts = Retry::LEADER.within(self.opts.deadline).start();
        let mut last = String::new();
        let mut dead = std::collections::HashSet::new();
        loop {
            if let Some(job) = job {
                self.check_aborted(job)?;
            }
            if attempts.expired() {
                return Err(unavailable(format!(
                    "shard {shard}: no leader answered {what} within {:?}: {last}",
                    self.opts.deadline
                )));
            }
            let node = self.leader_guess(shard);
            let e = match self
                .guarded(node, req, self.opts.rpc_timeout, &[shard], job, true)
                .await
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
            // A leader hint is followed at once.
            if progress {
                attempts.progressed();
            } else {
                attempts.wait().await;
            }
        }
    }

    /// Reads rows. Those that wait for no clock (job init and model
    /// export) must see every acknowledged write, so they go to their
    /// shard's leader, which confirms its leadership (linearizable read)
    /// before answering; the others go to any replica once its clocks
    /// meet the SSP condition of the request (the local replica first,
    /// else spread by worker), failing over to the next. Requests are
    /// grouped by shard: one RPC per shard at a time, all shards at once.
    pub(super) fn fetch_rows(&self, reqs: &[FetchRequest]) -> Result<Vec<RowSnapshot>, TableError> {
        let mut groups: BTreeMap<(ShardId, JobId, bool), Vec<usize>> = BTreeMap::new();
        let mut spans: HashMap<JobId, JobShards> = HashMap::new();
        for (i, r) in reqs.iter().enumerate() {
            let shard = spans
                .entry(r.job)
                .or_insert_with(|| self.span(r.job))
                .shard_of(r.table, r.row);
            let latest = r.min_clock.is_none() && r.own_clock == 0;
            groups.entry((shard, r.job, latest)).or_default().push(i);
        }
        let reads = groups
            .into_iter()
            .map(|((shard, _, latest), idx)| async move {
                let part: Vec<FetchRequest> = idx.iter().map(|&i| reqs[i].clone()).collect();
                let rows = if latest {
                    self.fetch_latest(shard, part).await?
                } else {
                    self.fetch_replica(shard, part).await?
                };
                Ok::<_, TableError>((idx, rows))
            });
        let done = self.rt.block_on(futures::future::try_join_all(reads))?;
        let mut out: Vec<Option<RowSnapshot>> = vec![None; reqs.len()];
        for (idx, rows) in done {
            for (i, row) in idx.into_iter().zip(rows) {
                out[i] = Some(row);
            }
        }
        out.into_iter()
            .map(|r| r.ok_or_else(|| unavailable("a fetch left a row unanswered")))
            .collect()
    }

    /// Reads of one shard behind its leader's read barrier, a reply's
    /// prefix at a time.
    async fn fetch_latest(
        &self,
        shard: ShardId,
        mut reqs: Vec<FetchRequest>,
    ) -> Result<Vec<RowSnapshot>, TableError> {
        let job = reqs[0].job;
        let mut out = Vec::with_capacity(reqs.len());
        while !reqs.is_empty() {
            let what = match reqs.len() {
                1 => format!("a read of table {} row {}", reqs[0].table, reqs[0].row),
                n => format!("a read of {n} rows"),
            };
            let ask = DataRequest::FetchLatest {
                shard,
                reqs: reqs.clone(),
                epoch: self.epoch(job),
            };
            let rows = take_rows(self.ask_leader(shard, Some(job), &ask, &what).await?, &reqs)?;
            reqs.drain(..rows.len());
            out.extend(rows);
        }
        Ok(out)
    }

    /// Reads of one shard from any replica that meets their clock
    /// conditions, a reply's prefix at a time.
    async fn fetch_replica(
        &self,
        shard: ShardId,
        mut reqs: Vec<FetchRequest>,
    ) -> Result<Vec<RowSnapshot>, TableError> {
        let job = reqs[0].job;
        let mut replicas = self.placement().replicas_of(shard);
        let mut i = match replicas.iter().position(|&n| n == self.local) {
            // The local replica hears from no leader (a partition, an
            // election): start with another.
            Some(p) if self.local_replica_unled(shard) => self.next_replica(&replicas, p),
            Some(p) => p,
            None => reqs[0].worker as usize % replicas.len(),
        };
        let mut attempts = Retry::LEADER.within(self.opts.deadline).start();
        let mut last = String::new();
        let mut out = Vec::with_capacity(reqs.len());
        // Waits in a row on the current replica.
        let mut not_yet = 0u32;
        while !reqs.is_empty() {
            self.check_aborted(job)?;
            if attempts.expired() {
                return Err(unavailable(format!(
                    "shard {shard}: no replica answered a read of table {} row {} within {:?}: {last}",
                    reqs[0].table, reqs[0].row, self.opts.deadline
                )));
            }
            let node = replicas[i];
            let wait_ms = 500;
            let r = self
                .guarded(
                    node,
                    &DataRequest::Fetch {
                        shard,
                        reqs: reqs.clone(),
                        epoch: self.epoch(job),
                        wait_ms,
                    },
                    self.opts.rpc_timeout + Duration::from_millis(wait_ms),
                    &[shard],
                    Some(job),
                    false,
                )
                .await;
            match r {
                Ok(reply) => {
                    let rows = take_rows(reply, &reqs)?;
                    reqs.drain(..rows.len());
                    out.extend(rows);
                    attempts.restart();
                    not_yet = 0;
                }
                // The replica is alive and the run current, waiting for a
                // slower worker's clock: keep waiting as long as that is
                // so. A dead worker's host makes the scheduler begin a new
                // run, and this one's next read is refused as stale. The
                // replica itself may be the one behind (cut off from its
                // leader by a partition: it hears no more entries), so
                // after two waits in a row the read moves to the next
                // replica; one that meets the clock answers.
                Err(Failure::Data(DataError::NotYet)) => {
                    attempts.restart();
                    not_yet += 1;
                    if not_yet >= 2 {
                        not_yet = 0;
                        replicas = self.placement().replicas_of(shard);
                        i = self.next_replica(&replicas, i);
                    }
                }
                Err(Failure::Data(DataError::Table(e))) => return Err(e),
                Err(Failure::Data(DataError::Refused(e))) => return Err(unavailable(e)),
                Err(Failure::Unreachable(e)) | Err(Failure::Data(DataError::Unavailable(e))) => {
                    last = e;
                    // Replicas move (membership changes): follow them.
                    replicas = self.placement().replicas_of(shard);
                    i = (i + 1) % replicas.len();
                    attempts.wait().await;
                }
                Err(Failure::Data(e)) => {
                    last = e.to_string();
                    replicas = self.placement().replicas_of(shard);
                    i = (i + 1) % replicas.len();
                    attempts.wait().await;
                }
            }
        }
        Ok(out)
    }
}

/// The rows of a fetch reply: a non-empty prefix of what was asked.
fn take_rows(reply: DataReply, asked: &[FetchRequest]) -> Result<Vec<RowSnapshot>, TableError> {
    match reply {
        DataReply::Snapshots(rows) if !rows.is_empty() && rows.len() <= asked.len() => Ok(rows),
        DataReply::Snapshots(rows) => Err(unavailable(format!(
            "a fetch reply holds {} rows for {} asked",
            rows.len(),
            asked.len()
        ))),
        other => Err(unavailable(format!("unexpected reply {other:?}"))),
    }
}
