//! Consistent checkpoints (docs/design.md §3): each shard's state of a job at
//! clock `c`, and each worker's opaque local state at `c`, under keys
//! `(job, c, part)` in the `checkpoint` column family.
//!
//! Retention: a checkpoint is complete when every part of it is stored
//! somewhere, which this store cannot see (a cluster's parts lie on many
//! nodes, and its job record says which checkpoint is complete); the layer
//! that knows tells it with [`CheckpointStore::set_complete`]. The newest
//! `keep_checkpoints` complete clocks of each job are kept, and every clock
//! after the newest complete one; nothing of a job is pruned before its
//! complete clock is known. (Counting clocks alone deleted the checkpoint a
//! recovery needed whenever the parts ran more than `keep_checkpoints`
//! checkpoints ahead of the record.)

use crate::db::NodeDb;
use crate::error::{Result, StorageError};
use crate::image::ShardImage;
use crate::keys::{self, CF_CHECKPOINT, PART_SHARD, PART_WORKER};
use petuum_core::types::{Clock, JobId, ShardId, WorkerId};
use rocksdb::WriteBatch;
use std::collections::BTreeMap;
use std::sync::Arc;

/// First bytes of a shard checkpoint part.
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"PCKP";
/// The format version this build writes and reads.
pub const CHECKPOINT_VERSION: u16 = 1;
const HEADER_BYTES: usize = 4 + 2 + 4 + 8 + 8;

/// The parts of one checkpoint present on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub clock: Clock,
    pub shards: Vec<ShardId>,
    pub workers: Vec<WorkerId>,
}

/// The checkpoint store of a node.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    db: Arc<NodeDb>,
    /// Whether each write is synced before it returns.
    sync: bool,
}

impl CheckpointStore {
    /// A store whose writes are synced before they return.
    pub fn new(db: Arc<NodeDb>) -> Self {
        CheckpointStore { db, sync: true }
    }

    /// A store for a shard group's state machine, whose writes are not
    /// synced one by one: each is produced by applying a Raft log entry,
    /// and that entry stays in the (synced) log until a snapshot is stored,
    /// which first syncs every earlier write ([`NodeDb::sync_wal`]). A
    /// crash before that loses the write and the replay after the restart
    /// writes it again. One fsync per checkpoint part per replica made a
    /// restart replay thousands of them (seconds per node on a busy VM).
    pub fn deferred(db: Arc<NodeDb>) -> Self {
        CheckpointStore { db, sync: false }
    }

    /// Persists a shard's encoded image of `job` at `clock`. Nothing is
    /// pruned here: a new part only adds a clock newer than the complete
    /// one, which pruning never touches; [`set_complete`](Self::set_complete)
    /// prunes as the complete clock advances.
    #[tracing::instrument(level = "debug", skip(self, image), fields(bytes = image.len()))]
    pub fn write_shard(
        &self,
        job: JobId,
        clock: Clock,
        shard: ShardId,
        image: &[u8],
    ) -> Result<()> {
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(&CHECKPOINT_MAGIC);
        header.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        header.extend_from_slice(&shard.to_le_bytes());
        header.extend_from_slice(&job.to_le_bytes());
        header.extend_from_slice(&clock.to_le_bytes());
        let part = keys::checkpoint_shard(job, clock, shard);
        self.db.write_blob_opt(
            CF_CHECKPOINT,
            &part,
            &[&header, image],
            "write checkpoint",
            shard as u64,
            self.sync,
        )?;
        tracing::info!(
            job,
            clock,
            shard,
            bytes = HEADER_BYTES + image.len(),
            "checkpoint part written"
        );
        Ok(())
    }

    /// Loads a shard's part of the checkpoint of `job` at `clock`.
    pub fn load_shard(&self, job: JobId, clock: Clock, shard: ShardId) -> Result<ShardImage> {
        let value = self
            .load_shard_bytes(job, clock, shard)?
            .ok_or(StorageError::NoCheckpoint { job, clock, shard })?;
        decode_shard_part(&value, job, clock, shard)
    }

    /// A shard's part of a checkpoint as stored (header and image), to
    /// ship to a replica that lacks it.
    pub fn load_shard_bytes(
        &self,
        job: JobId,
        clock: Clock,
        shard: ShardId,
    ) -> Result<Option<Vec<u8>>> {
        let part = keys::checkpoint_shard(job, clock, shard);
        self.db.get_blob(CF_CHECKPOINT, &part, "checkpoint", shard)
    }

    /// Stores a shard's part as [`load_shard_bytes`] returned it (the
    /// caller has checked it with [`decode_shard_part`]).
    ///
    /// [`load_shard_bytes`]: Self::load_shard_bytes
    pub fn put_shard_bytes(
        &self,
        job: JobId,
        clock: Clock,
        shard: ShardId,
        value: &[u8],
    ) -> Result<()> {
        let part = keys::checkpoint_shard(job, clock, shard);
        self.db.write_blob_opt(
            CF_CHECKPOINT,
            &part,
            &[value],
            "write checkpoint",
            shard as u64,
            self.sync,
        )
    }

    /// Persists a worker's local state for the checkpoint of `job` at `clock`.
    pub fn put_worker_blob(
        &self,
        job: JobId,
        clock: Clock,
        worker: WorkerId,
        data: &[u8],
    ) -> Result<()> {
        let part = keys::checkpoint_worker(job, clock, worker);
        self.db.write_blob_opt(
            CF_CHECKPOINT,
            &part,
            &[data],
            "write worker blob",
            job,
            self.sync,
        )
    }

    /// Loads a worker's local state, if stored. In errors the `shard` field
    /// holds the worker id; the key names the part exactly.
    pub fn load_worker_blob(
        &self,
        job: JobId,
        clock: Clock,
        worker: WorkerId,
    ) -> Result<Option<Vec<u8>>> {
        let part = keys::checkpoint_worker(job, clock, worker);
        self.db
            .get_blob(CF_CHECKPOINT, &part, "worker blob", worker)
    }

    /// Checkpoints of `job` present on this node, oldest first.
    pub fn list(&self, job: JobId) -> Result<Vec<CheckpointInfo>> {
        let cf = self.db.cf(CF_CHECKPOINT);
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(keys::prefix_end(job).to_vec());
        let mut it = self.db.raw().raw_iterator_cf_opt(cf, ro);
        match self.db.checkpoint_floor.lock().get(&job) {
            Some(&c) => it.seek(keys::checkpoint_prefix(job, c)),
            None => it.seek(keys::prefix(job)),
        }
        let mut by_clock: BTreeMap<Clock, CheckpointInfo> = BTreeMap::new();
        while it.valid() {
            let k = it.key().expect("valid iterator has a key").to_vec();
            // job(8) clock(8) kind(1) id(4) chunk(4)
            if k.len() != 25 {
                return Err(StorageError::Corrupt {
                    what: "checkpoint key",
                    shard: 0,
                    key: keys::show(CF_CHECKPOINT, &k),
                    reason: format!("key of {} bytes, expected 25", k.len()),
                });
            }
            let clock = u64::from_be_bytes(k[8..16].try_into().expect("8"));
            let kind = k[16];
            let id = u32::from_be_bytes(k[17..21].try_into().expect("4"));
            let info = by_clock.entry(clock).or_insert_with(|| CheckpointInfo {
                clock,
                ..Default::default()
            });
            match kind {
                PART_SHARD => info.shards.push(id),
                PART_WORKER => info.workers.push(id),
                _ => {}
            }
            // Skip this part's chunks.
            it.seek(crate::codec::chunk_key(&k[..21], u32::MAX));
        }
        it.status().map_err(|source| StorageError::Rocks {
            op: "list checkpoints",
            group: job,
            key: keys::show(CF_CHECKPOINT, &keys::prefix(job)),
            source,
        })?;
        Ok(by_clock.into_values().collect())
    }

    /// The newest checkpoint clock of `job` holding `shard`'s part.
    pub fn latest(&self, job: JobId, shard: ShardId) -> Result<Option<Clock>> {
        Ok(self
            .list(job)?
            .into_iter()
            .rev()
            .find(|c| c.shards.contains(&shard))
            .map(|c| c.clock))
    }

    /// Deletes every part stored for `job` (checkpoints, worker states,
    /// the model).
    pub fn forget(&self, job: JobId) -> Result<()> {
        let n = self.delete_keys(
            job,
            &keys::prefix(job),
            &keys::prefix_end(job),
            "forget job",
        )?;
        self.db.checkpoint_floor.lock().remove(&job);
        self.db.checkpoint_complete.lock().remove(&job);
        tracing::debug!(job, keys = n, "job forgotten");
        Ok(())
    }

    /// Records that the checkpoint of `job` at `clock` is complete (every
    /// part stored where it belongs) and prunes the job's older ones. A
    /// clock older than the one already known changes nothing.
    pub fn set_complete(&self, job: JobId, clock: Clock) -> Result<Vec<Clock>> {
        {
            let mut known = self.db.checkpoint_complete.lock();
            let was = known.entry(job).or_insert(clock);
            if *was > clock {
                return Ok(Vec::new());
            }
            *was = clock;
        }
        self.prune(job, self.db.config().keep_checkpoints)
    }

    /// The newest complete checkpoint clock of `job` this store was told
    /// of ([`set_complete`](Self::set_complete)) since the node started.
    pub fn complete(&self, job: JobId) -> Option<Clock> {
        self.db.checkpoint_complete.lock().get(&job).copied()
    }

    /// Deletes the checkpoints of `job` older than the newest `keep` of
    /// those at or before its complete clock; clocks after it (parts of
    /// checkpoints not known complete yet) stay, and nothing is deleted
    /// while the complete clock is unknown. Returns the clocks deleted.
    pub fn prune(&self, job: JobId, keep: usize) -> Result<Vec<Clock>> {
        let keep = keep.max(1);
        let Some(complete) = self.complete(job) else {
            return Ok(Vec::new());
        };
        let clocks: Vec<Clock> = self.list(job)?.into_iter().map(|c| c.clock).collect();
        let done = clocks.partition_point(|&c| c <= complete);
        if done <= keep {
            return Ok(Vec::new());
        }
        let cut = clocks[done - keep];
        let from = match self.db.checkpoint_floor.lock().get(&job) {
            Some(&c) => keys::checkpoint_prefix(job, c),
            None => keys::checkpoint_prefix(job, 0),
        };
        self.delete_keys(
            job,
            &from,
            &keys::checkpoint_prefix(job, cut),
            "prune checkpoints",
        )?;
        self.db.checkpoint_floor.lock().insert(job, cut);
        let deleted: Vec<Clock> = clocks.into_iter().filter(|&c| c < cut).collect();
        tracing::debug!(job, ?deleted, "old checkpoints deleted");
        Ok(deleted)
    }

    /// Deletes the keys of `job` in `[from, until)` in one write; returns
    /// how many. Point deletes, not a range delete: range tombstones pile
    /// up in the memtable and every later read of the column family pays
    /// for all of them (checkpoint_every = 1 got slower with every
    /// checkpoint).
    fn delete_keys(
        &self,
        job: JobId,
        from: &[u8],
        until: &[u8],
        op: &'static str,
    ) -> Result<usize> {
        let cf = self.db.cf(CF_CHECKPOINT);
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(until.to_vec());
        let mut it = self.db.raw().raw_iterator_cf_opt(cf, ro);
        it.seek(from);
        let mut batch = WriteBatch::default();
        let mut n = 0;
        while it.valid() {
            batch.delete_cf(cf, it.key().expect("valid iterator has a key"));
            n += 1;
            it.next();
        }
        let shown = keys::show(CF_CHECKPOINT, &keys::prefix(job));
        it.status().map_err(|source| StorageError::Rocks {
            op,
            group: job,
            key: shown.clone(),
            source,
        })?;
        drop(it);
        self.db.write_sync(
            batch,
            self.sync && self.db.config().sync_writes,
            op,
            job,
            &shown,
        )?;
        Ok(n)
    }
}

/// Checks and decodes a stored shard part of the checkpoint of `job` at
/// `clock`.
pub fn decode_shard_part(
    value: &[u8],
    job: JobId,
    clock: Clock,
    shard: ShardId,
) -> Result<ShardImage> {
    check_part_header(value, job, clock, shard)?;
    let key = keys::show(CF_CHECKPOINT, &keys::checkpoint_shard(job, clock, shard));
    let image: ShardImage =
        postcard::from_bytes(&value[HEADER_BYTES..]).map_err(|e| StorageError::Corrupt {
            what: "checkpoint",
            shard,
            key: key.clone(),
            reason: format!("image: {e}"),
        })?;
    if image.shard != shard {
        return Err(StorageError::Corrupt {
            what: "checkpoint",
            shard,
            key,
            reason: format!("image of shard {}", image.shard),
        });
    }
    Ok(image)
}

/// Checks a stored shard part's header (magic, version, and that it names
/// `shard`, `job` and `clock`) without decoding the image.
pub fn check_part_header(value: &[u8], job: JobId, clock: Clock, shard: ShardId) -> Result<()> {
    let key = keys::show(CF_CHECKPOINT, &keys::checkpoint_shard(job, clock, shard));
    let corrupt = |reason: String| StorageError::Corrupt {
        what: "checkpoint",
        shard,
        key: key.clone(),
        reason,
    };
    if value.len() < HEADER_BYTES || value[..4] != CHECKPOINT_MAGIC {
        return Err(corrupt("bad checkpoint header".into()));
    }
    let version = u16::from_le_bytes([value[4], value[5]]);
    if version != CHECKPOINT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            what: "checkpoint",
            shard,
            key,
            found: version,
            supported: CHECKPOINT_VERSION,
        });
    }
    let h_shard = u32::from_le_bytes(value[6..10].try_into().expect("4"));
    let h_job = u64::from_le_bytes(value[10..18].try_into().expect("8"));
    let h_clock = u64::from_le_bytes(value[18..26].try_into().expect("8"));
    if (h_shard, h_job, h_clock) != (shard, job, clock) {
        return Err(corrupt(format!(
            "header names shard {h_shard} job {h_job} clock {h_clock}"
        )));
    }
    Ok(())
}
