//! The Raft state machine of a shard group: [`ShardData`] plus I/O
//! (checkpoints, snapshots) behind openraft's `RaftStateMachine`.
//!
//! The state lives in memory. What survives a restart is the group's last
//! snapshot (stored in the `snapshot` column family, synced) and the Raft
//! log after it, which openraft re-applies up to the committed index.

use crate::checkpoint::CheckpointStore;
use crate::db::NodeDb;
use crate::error::{RaftStorageError, Result, StorageError};
use crate::keys::{self, CF_SNAPSHOT};
use crate::metrics::GroupMetrics;
use crate::shard_data::{Effect, ShardData};
use crate::snapshot::{self, PartKind, SnapshotHeader, StoredPart};
use crate::types::{
    Entry, LogId, ShardRequest, ShardResponse, SnapshotData, SnapshotMeta, StoredMembership,
    TypeConfig,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use parking_lot::RwLock;
use petuum_core::shard::ShardState;
use petuum_core::types::ShardId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The applied state of a replica.
#[derive(Debug)]
pub struct Replica {
    pub data: ShardData,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Shared read access to a replica's state, for follower reads and tests
/// (openraft owns the state machine itself).
#[derive(Clone, Debug)]
pub struct ShardHandle {
    inner: Arc<RwLock<Replica>>,
    applied: tokio::sync::watch::Receiver<u64>,
    log: Arc<LogSinceSnapshot>,
}

/// What a replica has applied since its last snapshot: the log a restart
/// would replay (see [`ShardHandle::snapshot_due`]).
#[derive(Debug, Default)]
struct LogSinceSnapshot {
    /// About how many bytes of entries were applied since the last
    /// snapshot was built or installed.
    bytes: AtomicU64,
    /// The size of that snapshot.
    snapshot_bytes: AtomicU64,
}

impl ShardHandle {
    /// Runs `f` on the current state (every applied batch).
    pub fn with_current<R>(&self, f: impl FnOnce(&ShardState) -> R) -> R {
        f(self.inner.read().data.current())
    }

    /// Runs `f` on the whole replica.
    pub fn with_replica<R>(&self, f: impl FnOnce(&Replica) -> R) -> R {
        f(&self.inner.read())
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.inner.read().last_applied
    }

    /// A receiver that changes whenever entries are applied or a snapshot
    /// is installed (readers waiting on the SSP guarantee wait on it).
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Whether the entries applied since the last snapshot are worth a new
    /// one: at least `min_bytes` of them, and at least as many bytes as
    /// that snapshot holds. A restart replays this log (openraft
    /// re-applies it), so the rule bounds a restart's replay by the size
    /// of the state (or `min_bytes`) and spends at most about one state's
    /// worth of snapshot writing per state's worth of log.
    pub fn snapshot_due(&self, min_bytes: u64) -> bool {
        let (bytes, snapshot) = self.log_since_snapshot();
        bytes >= min_bytes.max(snapshot)
    }

    /// Bytes of entries applied since the last snapshot, and that
    /// snapshot's size.
    pub fn log_since_snapshot(&self) -> (u64, u64) {
        (
            self.log.bytes.load(Ordering::Relaxed),
            self.log.snapshot_bytes.load(Ordering::Relaxed),
        )
    }
}

/// The bytes of log a node's groups may hold together since their
/// snapshots: half of the log's memtable (`write_buffer_bytes`). Measured
/// in docs/performance.md against a quarter and against none.
pub fn node_log_budget(write_buffer_bytes: usize) -> u64 {
    write_buffer_bytes as u64 / 2
}

/// Which groups to snapshot so that a node's log stays within `budget`
/// bytes, given each group's `(bytes since its snapshot, snapshot size)`:
/// none while the groups' logs together are within it; otherwise the
/// largest logs first until a quarter of the budget is left, skipping any
/// log smaller than its group's last snapshot (snapshotting a state more
/// often than a state's worth of log is not worth its writing). Answers
/// indices into `logs`.
pub fn over_budget(logs: &[(u64, u64)], budget: u64) -> Vec<usize> {
    let mut total: u64 = logs.iter().map(|l| l.0).sum();
    if total <= budget {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..logs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(logs[i].0));
    let mut out = Vec::new();
    for i in order {
        if total <= budget / 4 {
            break;
        }
        let (bytes, snapshot) = logs[i];
        if bytes > 0 && bytes >= snapshot {
            total -= bytes;
            out.push(i);
        }
    }
    out
}

/// The state machine of one shard group.
#[derive(Debug)]
pub struct ShardStateMachine {
    db: Arc<NodeDb>,
    group: u64,
    shard: ShardId,
    checkpoints: CheckpointStore,
    inner: Arc<RwLock<Replica>>,
    applied: Arc<tokio::sync::watch::Sender<u64>>,
    log: Arc<LogSinceSnapshot>,
    metrics: GroupMetrics,
    /// Set by [`meta_only_at_start`](Self::meta_only_at_start): the next
    /// `get_current_snapshot` leaves the stored parts out.
    meta_only_next: bool,
}

impl ShardStateMachine {
    /// Opens the state machine of `group` (holding `shard`), restoring its
    /// last snapshot if one is stored. A stored snapshot that fails its
    /// checks is an error: the node must not start from a damaged state.
    pub fn open(db: Arc<NodeDb>, group: u64, shard: ShardId) -> Result<Self> {
        assert!(group < u64::MAX, "group id u64::MAX is reserved");
        let sm = ShardStateMachine {
            checkpoints: CheckpointStore::deferred(db.clone()),
            metrics: db.metrics().group(group),
            db,
            group,
            shard,
            inner: Arc::new(RwLock::new(Replica {
                data: ShardData::new(shard),
                last_applied: None,
                membership: StoredMembership::default(),
            })),
            applied: Arc::new(tokio::sync::watch::channel(0).0),
            log: Arc::default(),
            meta_only_next: false,
        };
        if let Some(bytes) = sm.stored_snapshot()? {
            let (header, data) = snapshot::decode(&bytes, shard, &sm.snapshot_key())?;
            tracing::info!(group, shard, last_applied = ?header.last_applied, "state restored from snapshot");
            sm.log
                .snapshot_bytes
                .store(bytes.len() as u64, Ordering::Relaxed);
            *sm.inner.write() = Replica {
                data,
                last_applied: header.last_applied,
                membership: header.membership,
            };
        }
        Ok(sm)
    }

    /// For a machine about to be handed to `Raft::new`: openraft's start
    /// reads the current snapshot only for its meta, so that first read
    /// leaves the group's stored parts out (reading every checkpoint part
    /// of every job at each group's start is slow, and it raced the
    /// pruning of other groups on the node). Later reads, which are for
    /// sending, carry them.
    pub fn meta_only_at_start(mut self) -> Self {
        self.meta_only_next = true;
        self
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn group(&self) -> u64 {
        self.group
    }

    /// A read handle that stays valid after the machine moves into openraft.
    pub fn handle(&self) -> ShardHandle {
        ShardHandle {
            inner: self.inner.clone(),
            applied: self.applied.subscribe(),
            log: self.log.clone(),
        }
    }

    /// The node's checkpoint store.
    pub fn checkpoints(&self) -> &CheckpointStore {
        &self.checkpoints
    }

    /// Applies committed entries in order. Entries at or below the last
    /// applied index (a replay after restart) change nothing.
    #[tracing::instrument(level = "debug", skip_all, fields(group = self.group, shard = self.shard))]
    pub fn apply_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<ShardResponse>> {
        let mut out = Vec::new();
        for entry in entries {
            let mut effects = Vec::new();
            let resp = {
                let mut r = self.inner.write();
                if r.last_applied
                    .is_some_and(|l| l.index >= entry.log_id.index)
                {
                    out.push(ShardResponse {
                        duplicate: true,
                        ..Default::default()
                    });
                    continue;
                }
                r.last_applied = Some(entry.log_id);
                if let EntryPayload::Normal(req) = &entry.payload {
                    self.log
                        .bytes
                        .fetch_add(req.approx_bytes() as u64, Ordering::Relaxed);
                }
                match entry.payload {
                    EntryPayload::Blank => ShardResponse::default(),
                    EntryPayload::Membership(m) => {
                        r.membership = StoredMembership::new(Some(entry.log_id), m);
                        ShardResponse::default()
                    }
                    EntryPayload::Normal(ShardRequest::RestoreImage {
                        job,
                        epoch,
                        clock,
                        image,
                    }) => {
                        // Every replica gets the same bytes: a bad part (or
                        // a superseded run) is refused by all, and the state
                        // stays as it was. A failing disk is fatal for this
                        // replica (as for any write), not a refusal the
                        // others did not see.
                        if let crate::shard_data::EpochCheck::Stale { current } =
                            r.data.check_epoch(job, epoch)
                        {
                            out.push(ShardResponse::stale(job, epoch, current));
                            continue;
                        }
                        let decoded =
                            crate::checkpoint::decode_shard_part(&image, job, clock, self.shard);
                        if decoded.is_ok() {
                            self.checkpoints
                                .put_shard_bytes(job, clock, self.shard, &image)?;
                        }
                        match decoded.and_then(|img| r.data.restore_job(job, epoch, &img)) {
                            Ok(()) => {
                                tracing::info!(
                                    shard = self.shard,
                                    job,
                                    clock,
                                    "job restored from a shipped checkpoint part"
                                );
                                ShardResponse::default()
                            }
                            Err(e) => ShardResponse::refused(format!(
                                "restoring job {job} at clock {clock}: {e}"
                            )),
                        }
                    }
                    EntryPayload::Normal(req) => {
                        let (resp, fx) = r.data.apply(req);
                        effects = fx;
                        resp
                    }
                }
            };
            for fx in effects {
                match fx {
                    Effect::Checkpoint(c) => self
                        .checkpoints
                        .write_shard(c.job, c.clock, self.shard, &c.image)?,
                    Effect::WorkerBlob {
                        job,
                        clock,
                        worker,
                        data,
                    } => self
                        .checkpoints
                        .put_worker_blob(job, clock, worker, &data)?,
                    Effect::Forget(job) => self.checkpoints.forget(job)?,
                }
            }
            out.push(resp);
        }
        self.notify_applied();
        Ok(out)
    }

    /// Encodes a snapshot of the current state.
    #[tracing::instrument(level = "debug", skip_all, fields(group = self.group, shard = self.shard))]
    pub fn encode_snapshot(&self) -> Result<(SnapshotMeta, Vec<u8>)> {
        let r = self.inner.read();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let snapshot_id = match r.last_applied {
            Some(l) => format!("{}-{}-{}-{nanos}", self.group, l.leader_id, l.index),
            None => format!("{}--{nanos}", self.group),
        };
        let header = SnapshotHeader {
            shard: self.shard,
            snapshot_id: snapshot_id.clone(),
            last_applied: r.last_applied,
            membership: r.membership.clone(),
            clocks: snapshot::clocks_of(&r.data),
        };
        let bytes = snapshot::encode(&header, &r.data)?;
        // (Under the read lock: no entry is applied meanwhile.)
        self.log.bytes.store(0, Ordering::Relaxed);
        self.log
            .snapshot_bytes
            .store(bytes.len() as u64, Ordering::Relaxed);
        let meta = SnapshotMeta {
            last_log_id: r.last_applied,
            last_membership: r.membership.clone(),
            snapshot_id,
        };
        Ok((meta, bytes))
    }

    /// Builds a snapshot and stores it as the group's current one (synced).
    pub fn build_and_store_snapshot(&self) -> Result<(SnapshotMeta, Vec<u8>)> {
        let (meta, bytes) = self.encode_snapshot()?;
        store_snapshot(&self.db, self.group, &bytes)?;
        Ok((meta, bytes))
    }

    /// Checks a received snapshot completely, stores it, then replaces the
    /// state. A corrupt, truncated or mismatched snapshot changes nothing.
    #[tracing::instrument(level = "info", skip_all, fields(group = self.group, shard = self.shard, bytes = bytes.len()))]
    pub fn install(&self, meta: &SnapshotMeta, bytes: Vec<u8>) -> Result<()> {
        let key = self.snapshot_key();
        let (header, data, parts) = snapshot::decode_with_parts(&bytes, self.shard, &key)?;
        if header.last_applied != meta.last_log_id
            || header.membership != meta.last_membership
            || header.snapshot_id != meta.snapshot_id
        {
            return Err(StorageError::Corrupt {
                what: "snapshot",
                shard: self.shard,
                key,
                reason: format!(
                    "contents ({:?}, {}) do not match the metadata sent with it ({:?}, {})",
                    header.last_applied, header.snapshot_id, meta.last_log_id, meta.snapshot_id
                ),
            });
        }
        tracing::info!(group = self.group, shard = self.shard, last_applied = ?meta.last_log_id, "installing a snapshot");
        // A test hook (the crash tests): an install that takes this long,
        // so that a test can kill the node in the middle of one.
        if let Some(ms) = std::env::var("PETUUM_TEST_SNAPSHOT_INSTALL_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        // The parts first (the snapshot's store syncs them), then the
        // snapshot without them: they live in the checkpoint store.
        let n = parts.len();
        for p in parts {
            match p.kind {
                PartKind::Shard => self
                    .checkpoints
                    .put_shard_bytes(p.job, p.clock, self.shard, &p.bytes)?,
                PartKind::Worker(w) => self
                    .checkpoints
                    .put_worker_blob(p.job, p.clock, w, &p.bytes)?,
            }
        }
        let bytes = snapshot::attach_parts(&bytes, &[], self.shard, &key)?;
        store_snapshot(&self.db, self.group, &bytes)?;
        tracing::debug!(parts = n, "stored parts received with the snapshot");
        let size = bytes.len() as u64;
        *self.inner.write() = Replica {
            data,
            last_applied: header.last_applied,
            membership: header.membership,
        };
        self.log.bytes.store(0, Ordering::Relaxed);
        self.log.snapshot_bytes.store(size, Ordering::Relaxed);
        self.notify_applied();
        tracing::info!(group = self.group, shard = self.shard, last_applied = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    /// The stored snapshot's header and bytes, checked, with the group's
    /// stored parts attached if `with_parts` (what a replica it is sent to
    /// installs).
    pub fn current_snapshot(&self, with_parts: bool) -> Result<Option<(SnapshotHeader, Vec<u8>)>> {
        let Some(bytes) = self.stored_snapshot()? else {
            return Ok(None);
        };
        let key = self.snapshot_key();
        let header = snapshot::decode_header(&bytes, self.shard, &key)?;
        if !with_parts {
            return Ok(Some((header, bytes)));
        }
        let parts = self.stored_parts()?;
        let bytes = snapshot::attach_parts(&bytes, &parts, self.shard, &key)?;
        Ok(Some((header, bytes)))
    }

    /// What this group stored beside its state: the shard's checkpoint
    /// parts of every job that ran on it, and the worker blobs and models
    /// committed through it (those since pruned are skipped). A part that
    /// fails its checks is left out with an error in the log: the parts
    /// ride along so that a new replica holds them too, and one damaged
    /// part must not stop the group from ever sending a snapshot (a restore
    /// that needs it looks for it on the other replicas). A disk that
    /// cannot be read is an error.
    pub fn stored_parts(&self) -> Result<Vec<StoredPart>> {
        let (jobs, blobs) = {
            let r = self.inner.read();
            let mut jobs: std::collections::BTreeSet<_> = r.data.fences().map(|(j, _)| j).collect();
            jobs.extend(r.data.jobs().map(|j| j.job));
            (jobs, r.data.blobs().collect::<Vec<_>>())
        };
        let mut parts = Vec::new();
        for job in jobs {
            for info in self.checkpoints.list(job)? {
                if !info.shards.contains(&self.shard) {
                    continue;
                }
                let loaded = self
                    .checkpoints
                    .load_shard_bytes(job, info.clock, self.shard);
                if let Some(bytes) = self.skip_corrupt(loaded)? {
                    parts.push(StoredPart {
                        job,
                        clock: info.clock,
                        kind: PartKind::Shard,
                        bytes,
                    });
                }
            }
        }
        for (job, clock, worker) in blobs {
            let loaded = self.checkpoints.load_worker_blob(job, clock, worker);
            if let Some(bytes) = self.skip_corrupt(loaded)? {
                parts.push(StoredPart {
                    job,
                    clock,
                    kind: PartKind::Worker(worker),
                    bytes,
                });
            }
        }
        Ok(parts)
    }

    /// A stored part as read, or `None` (logged) if it fails its checks.
    fn skip_corrupt(&self, loaded: Result<Option<Vec<u8>>>) -> Result<Option<Vec<u8>>> {
        match loaded {
            Err(e @ StorageError::Corrupt { .. }) => {
                tracing::error!(group = self.group, shard = self.shard, error = %e, "a stored part is damaged; the snapshot is sent without it");
                Ok(None)
            }
            other => other,
        }
    }

    fn notify_applied(&self) {
        let index = self.inner.read().last_applied.map_or(0, |l| l.index);
        self.applied.send_replace(index);
    }

    fn stored_snapshot(&self) -> Result<Option<Vec<u8>>> {
        self.db.get_blob(
            CF_SNAPSHOT,
            &keys::prefix(self.group),
            "snapshot",
            self.shard,
        )
    }

    fn snapshot_key(&self) -> String {
        keys::show(CF_SNAPSHOT, &keys::prefix(self.group))
    }
}

/// Stores `group`'s snapshot durably, with one sync: the snapshot is
/// written unsynced, then the WAL is synced, which makes durable both the
/// snapshot and the checkpoint writes of the entries it covers (not
/// synced when applied, `CheckpointStore::deferred`) before openraft can
/// purge those entries. (A snapshot large enough to be ingested is
/// durable by itself.) Was a sync for each: a node's groups come due for
/// snapshots together, and every sync on a disk the replicas share holds
/// up the WAL syncs of every commit behind it.
fn store_snapshot(db: &NodeDb, group: u64, bytes: &[u8]) -> Result<()> {
    db.write_blob_opt(
        CF_SNAPSHOT,
        &keys::prefix(group),
        &[bytes],
        "store snapshot",
        group,
        false,
    )?;
    db.sync_wal()
}

/// A snapshot as stored.
type Prepared = (SnapshotMeta, Vec<u8>);

/// Builds a snapshot prepared when openraft asked for the builder (so it is
/// consistent with the applied state at that moment).
pub struct ShardSnapshotBuilder {
    /// The snapshot as stored.
    prepared: Option<Result<Prepared>>,
    metrics: GroupMetrics,
    db: Arc<NodeDb>,
    group: u64,
    shard: ShardId,
}

impl RaftSnapshotBuilder<TypeConfig> for ShardSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let prepared = self
            .prepared
            .take()
            .unwrap_or_else(|| Err(StorageError::Config("snapshot builder used twice".into())));
        let (meta, bytes) = prepared.map_err(|e| e.into_raft(ErrorVerb::Write))?;
        // Its sync off the runtime's thread (`blocking`). A job's groups
        // come due for snapshots together, and their builds on a node's
        // two runtime threads, each waiting on fsyncs behind the others,
        // used to stop every group's heartbeats for longer than an
        // election timeout: a wave of elections (docs/performance.md).
        crate::db::blocking(|| store_snapshot(&self.db, self.group, &bytes))
            .map_err(|e| e.into_raft(ErrorVerb::Write))?;
        tracing::info!(group = self.group, shard = self.shard, bytes = bytes.len(), last = ?meta.last_log_id, "snapshot built");
        self.metrics.snapshots_built.inc();
        // Without the parts: openraft keeps only the meta of a built
        // snapshot and sends what `get_current_snapshot` returns, which
        // attaches them then. Reading every stored part at every build was
        // wasted work.
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let r = self.inner.read();
        Ok((r.last_applied, r.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ShardResponse>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let metrics = self.metrics.clone();
        metrics
            .time_apply(|| self.apply_entries(entries))
            .map_err(|e| e.into_raft(ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ShardSnapshotBuilder {
            prepared: Some(self.encode_snapshot()),
            metrics: self.metrics.clone(),
            db: self.db.clone(),
            group: self.group,
            shard: self.shard,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, RaftStorageError> {
        let shard = self.shard;
        Ok(Box::new(SnapshotData::receiving(move |b| {
            snapshot::check_received(b, shard)
        })))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), RaftStorageError> {
        // Synced writes: off the runtime's thread, as in `build_snapshot`.
        crate::db::blocking(|| self.install(meta, snapshot.into_inner()))
            .map_err(|e| e.into_raft(ErrorVerb::Write))?;
        self.metrics.snapshots_installed.inc();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let with_parts = !std::mem::take(&mut self.meta_only_next);
        let cur = self
            .current_snapshot(with_parts)
            .map_err(|e| e.into_raft(ErrorVerb::Read))?;
        Ok(cur.map(|(h, bytes)| Snapshot {
            meta: SnapshotMeta {
                last_log_id: h.last_applied,
                last_membership: h.membership,
                snapshot_id: h.snapshot_id,
            },
            snapshot: Box::new(SnapshotData::new(bytes)),
        }))
    }
}
