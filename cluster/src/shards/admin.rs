//! Job administration through a connection: registration, drop,
//! checkpoint restore and stored parts, and metadata commands.

use super::{unavailable, ClusterShards, Failure};
use crate::meta::{MetaAnswer, MetaCommand};
use crate::retry::Retry;
use crate::wire::{DataError, DataReply, DataRequest};
use petuum_core::types::{Clock, JobId, ShardId};
use petuum_core::TableError;
use petuum_storage::ShardRequest;

impl ClusterShards {
    /// Rolls `job` back to its checkpoint at `clock` (the label: the last
    /// clock it includes) on every shard: each part is read from a replica
    /// that has it and shipped through the group's log, so replicas that
    /// never wrote it (caught up from a snapshot) restore it too.
    pub fn restore_checkpoint(&self, job: JobId, clock: Clock) -> Result<(), TableError> {
        let span = self.span(job);
        let mut parts = Vec::with_capacity(span.len() as usize);
        for shard in span.iter() {
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
        let mut members = self
            .placement()
            .members(crate::placement::shard_group(shard));
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

    /// Whether the checkpoint of `job` at `clock` has a part on a shard
    /// outside the job's span: a job that began under protocol version 8
    /// kept its tables on every shard, and restoring its span alone would
    /// lose rows. Asks the replicas of the shard after the span; an error
    /// only when none of them answered. (Not [`ask_replicas`](Self::ask_replicas),
    /// which fails when any replica is unreachable and none has the part:
    /// right where a part must exist, but here absence is the usual answer,
    /// and a dead node would hold up every restore of a job with a span.)
    pub fn checkpoint_outside_span(&self, job: JobId, clock: Clock) -> Result<bool, TableError> {
        let Some(shard) = self.span(job).first_outside() else {
            return Ok(false);
        };
        let req = DataRequest::ShardImage { shard, job, clock };
        let mut last = None;
        let mut answered = false;
        for node in self
            .placement()
            .members(crate::placement::shard_group(shard))
        {
            match self.call(node, &req) {
                Ok(DataReply::Blob(Some(_))) => return Ok(true),
                Ok(_) => answered = true,
                Err(e) => last = Some(e),
            }
        }
        match (answered, last) {
            (false, Some(e)) => Err(e),
            _ => Ok(false),
        }
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
        self.follow_job(job);
        self.commands(
            Some(job),
            self.job_shards_req(
                job,
                ShardRequest::RegisterJob {
                    job,
                    epoch: self.epoch(job),
                    workers,
                    deterministic,
                    checkpoint_every,
                },
            ),
        )
    }

    /// Makes this connection treat `job` as one it registered (ESSP
    /// watchers follow it; an earlier abort is forgotten) without a
    /// command: for the hosts of a run whose coordinator registered it on
    /// every shard before marking the run ready.
    pub fn follow_job(&self, job: JobId) {
        self.aborted.lock().remove(&job);
        self.jobs.lock().insert(job);
    }

    /// Drops `job`'s tables, rows and clocks on the shards of its span under this
    /// connection's run of it (which begins that run there, see
    /// [`ShardRequest::DropJob`]).
    pub fn drop_job_checked(&self, job: JobId) -> Result<(), TableError> {
        self.jobs.lock().remove(&job);
        self.commands(
            Some(job),
            self.job_shards_req(
                job,
                ShardRequest::DropJob {
                    job,
                    epoch: self.epoch(job),
                },
            ),
        )
    }

    /// Forgets an ended `job` on every shard: its tables, and what each
    /// replica stored for it (checkpoints, worker states, the model).
    pub fn forget_job(&self, job: JobId) -> Result<(), TableError> {
        self.jobs.lock().remove(&job);
        self.commands(None, self.all_shards(ShardRequest::ForgetJob { job }))
    }

    /// Runs a metadata command.
    /// A refusal (the metadata group's, or a node rejecting the call) is
    /// returned at once; anything else is retried on every node until the
    /// connection's deadline.
    pub fn meta(&self, cmd: MetaCommand) -> Result<MetaAnswer, TableError> {
        let req = DataRequest::Meta(cmd);
        let mut attempts = Retry::META.within(self.opts.deadline).start();
        let mut last = String::new();
        while !attempts.expired() {
            for &node in self.placement().nodes().to_vec().iter() {
                match self
                    .rt
                    .block_on(self.data(node, &req, self.opts.rpc_timeout))
                {
                    Ok(DataReply::Meta(a)) => return Ok(a),
                    Ok(other) => return Err(unavailable(format!("unexpected reply {other:?}"))),
                    Err(Failure::Data(DataError::Refused(r))) => return Err(unavailable(r)),
                    Err(Failure::Data(DataError::Table(t))) => last = t.to_string(),
                    Err(Failure::Data(d)) => last = unavailable(d).to_string(),
                    Err(Failure::Unreachable(e)) => last = unavailable(e).to_string(),
                }
            }
            attempts.wait_blocking();
        }
        Err(unavailable(format!("metadata group unavailable: {last}")))
    }
}
