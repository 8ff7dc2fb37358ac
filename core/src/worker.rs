//! The worker's view of the tables: typed handles, `get`/`inc`/`batch_inc`
//! and `clock`, with the SSP guarantee enforced on every read.
//!
//! Increments are aggregated in a per-worker op log keyed by row and, at
//! `clock()`, grouped into one [`UpdateBatch`] per shard (per worker, clock
//! and shard), so nothing leaves the worker per `inc`.
//!
//! Reads go through the node's [`ProcessCache`]. A cached copy is used when
//! its min clock meets the model's bound; otherwise the worker fetches and
//! the shard answers once its min clock is high enough. The worker's own
//! increments are always visible: the current clock's op log, and its
//! flushed batches of the last `s + 1` clocks that the cached copy does not
//! yet include (known from the copy's per-worker applied clocks), are added
//! on top of the cached row.

use crate::batch::{RowUpdate, UpdateBatch};
use crate::budget::Bandwidth;
use crate::cache::{CacheEntry, ProcessCache};
use crate::consistency::Consistency;
use crate::error::TableError;
use crate::outbox::{Ack, Outbox};
use crate::row::{AnyRow, Row};
use crate::service::{FetchRequest, Preview, PushSink, ShardService, PREVIEW_ROW_OVERHEAD};
use crate::types::{
    Clock, Elem, JobId, JobShards, RowId, RowKind, ShardId, TableId, TableSpec, WorkerId,
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shards and the process cache of one node, shared by its workers.
pub struct Node {
    service: Arc<dyn ShardService>,
    cache: Arc<ProcessCache>,
    /// Workers of a job whose clocks leave this node together.
    groups: parking_lot::Mutex<HashMap<JobId, Group>>,
    /// Each job's bandwidth budget on this node (managed communication).
    budgets: parking_lot::Mutex<HashMap<JobId, Arc<Bandwidth>>>,
}

/// A job's workers on one node that have not yet joined their shared
/// outbox, and the outbox.
type Group = (Vec<WorkerId>, Arc<Outbox>);

impl Node {
    /// Default bound on cached rows per node.
    pub const DEFAULT_CACHE_ROWS: usize = 1 << 20;

    pub fn new(service: Arc<dyn ShardService>, cache_rows: usize) -> Arc<Node> {
        let cache = Arc::new(ProcessCache::new(service.num_shards(), cache_rows));
        let sink: Arc<dyn PushSink> = cache.clone();
        service.subscribe(Arc::downgrade(&sink));
        Arc::new(Node {
            service,
            cache,
            groups: Default::default(),
            budgets: Default::default(),
        })
    }

    /// Gives `job` a bandwidth budget of `bytes_per_second` on this node,
    /// shared by its workers here (call it before their contexts are
    /// made). Where the backend's previews reach other nodes
    /// ([`ShardService::previews`]), the workers then push the largest
    /// increments of their current clock early, within the budget
    /// (managed communication, docs/design.md); elsewhere it changes
    /// nothing. Not for deterministic jobs: what a read sees would then
    /// depend on timing (the job spec refuses the combination).
    pub fn set_bandwidth(&self, job: JobId, bytes_per_second: f64) {
        self.budgets
            .lock()
            .insert(job, Arc::new(Bandwidth::new(bytes_per_second)));
    }

    /// Declares `members`, the workers of `job` that run on this node:
    /// their clocks leave the node together, one batch per shard per clock
    /// for all of them (node-level aggregation; see the `outbox` module).
    /// Call it before their contexts are made; every member must then
    /// make one (a member's context that is dropped stops the others
    /// waiting for it). Only where pushes are pipelined, and only for
    /// models with a staleness bound: under async a worker never waits
    /// for another, here or anywhere.
    pub fn group(
        &self,
        job: JobId,
        members: &[WorkerId],
        consistency: Consistency,
        deterministic: bool,
    ) {
        if !self.service.pipelines() || members.len() < 2 || consistency.staleness().is_none() {
            return;
        }
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup();
        let outbox = Outbox::start(self.service.clone(), job, members.clone(), deterministic);
        self.groups.lock().insert(job, (members, outbox));
    }

    /// The outbox `worker` of `job` hands its clocks to: its group's (the
    /// first context made for a member only: a second one leaving must not
    /// drop the first from the group), or one of its own.
    fn outbox(&self, job: JobId, worker: WorkerId) -> Arc<Outbox> {
        let mut groups = self.groups.lock();
        if let Some((members, outbox)) = groups.get_mut(&job) {
            if let Some(i) = members.iter().position(|&m| m == worker) {
                members.remove(i);
                let outbox = outbox.clone();
                // Every member joined: the members hold the outbox now.
                if members.is_empty() {
                    groups.remove(&job);
                }
                return outbox;
            }
        }
        drop(groups);
        Outbox::start(self.service.clone(), job, vec![worker], false)
    }

    pub fn service(&self) -> &Arc<dyn ShardService> {
        &self.service
    }

    pub fn cache(&self) -> &Arc<ProcessCache> {
        &self.cache
    }
}

/// A typed handle to a table, checked once when it is obtained.
pub struct Table<T: Elem> {
    id: TableId,
    kind: RowKind,
    columns: u32,
    _t: PhantomData<fn() -> T>,
}

impl<T: Elem> Clone for Table<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Elem> Copy for Table<T> {}

impl<T: Elem> Table<T> {
    pub fn id(&self) -> TableId {
        self.id
    }
    pub fn columns(&self) -> u32 {
        self.columns
    }
    pub fn kind(&self) -> RowKind {
        self.kind
    }
}

/// Counters a worker keeps about its own table traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub reads: u64,
    pub fetches: u64,
    pub incs: u64,
    pub batches: u64,
    pub bytes_pushed: u64,
    /// Row values fetched from shards (cache misses and refreshes).
    pub bytes_pulled: u64,
    /// Time spent waiting on reads, including waits for the staleness
    /// bound (rows not yet fresh enough).
    pub wait: Duration,
    /// Time `clock()` spent waiting for the shards to acknowledge
    /// (commit) pushed clocks: each clock's under BSP, the clock `s`
    /// behind under SSP(s) when it is not acknowledged yet.
    pub commit_wait: Duration,
    /// Previews sent (managed communication) and their bytes on the
    /// network.
    pub previews: u64,
    pub preview_bytes: u64,
}

type Key = (TableId, RowId);
type OpLog = FxHashMap<Key, AnyRow>;

/// One flushed clock: its batches (one per shard) and where each row's
/// delta sits in them.
struct Flushed {
    clock: Clock,
    batches: Vec<UpdateBatch>,
    index: FxHashMap<Key, (u32, u32)>,
}

impl Flushed {
    fn delta(&self, key: &Key) -> Option<&AnyRow> {
        self.index
            .get(key)
            .map(|&(b, u)| &self.batches[b as usize].updates[u as usize].delta)
    }
}

/// Clocks whose batches are on their way to the shards: the worker hands
/// them to its outbox (its node's group's, or its own), whose push thread
/// sends them in clock order, so the worker goes on computing while they
/// commit (pipelined clocks).
struct Pipeline {
    outbox: Arc<Outbox>,
    worker: WorkerId,
    /// Each clock's time from `clock()` to its acknowledgement.
    acks: std::sync::mpsc::Receiver<Ack>,
    in_flight: usize,
    /// The first push that failed (every later wait returns it).
    failed: Option<TableError>,
}

impl Pipeline {
    fn join(node: &Node, job: JobId, worker: WorkerId) -> Pipeline {
        let outbox = node.outbox(job, worker);
        let acks = outbox.attach(worker);
        Pipeline {
            outbox,
            worker,
            acks,
            in_flight: 0,
            failed: None,
        }
    }

    /// Waits until at most `n` clocks are in flight.
    fn drain_to(&mut self, n: usize, commits: &mut Vec<Duration>) -> Result<(), TableError> {
        while self.in_flight > n {
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            match self.acks.recv() {
                Ok(Ok(d)) => {
                    self.in_flight -= 1;
                    commits.push(d);
                }
                Ok(Err(e)) => self.failed = Some(e),
                Err(_) => {
                    self.failed = Some(TableError::Unavailable("the push thread stopped".into()))
                }
            }
        }
        Ok(())
    }

    /// The error of a push that already failed, if any (without waiting).
    fn failure(&mut self, commits: &mut Vec<Duration>) -> Option<TableError> {
        while let Ok(r) = self.acks.try_recv() {
            match r {
                Ok(d) => {
                    self.in_flight -= 1;
                    commits.push(d);
                }
                Err(e) => self.failed = Some(e),
            }
        }
        self.failed.clone()
    }
}

/// How often (in single-value increments; a row's increment counts as
/// this many) a worker with a budget looks at whether an early push is
/// due, and the least time between two of its early pushes.
const PREVIEW_CHECK_EVERY: u32 = 16;
const PREVIEW_GAP: Duration = Duration::from_millis(2);

/// Managed communication (SSPAggr, Wei et al., SoCC 2015): between clocks,
/// the rows whose increment so far is largest relative to their value
/// leave early, as previews, while the node's budget has bytes left.
struct Manager {
    budget: Arc<Bandwidth>,
    /// Each row's increment as its last preview carried it (this clock).
    sent: FxHashMap<Key, AnyRow>,
    seq: u64,
    calls: u32,
    last: Instant,
    /// Bytes on the network per byte of preview values (replicas off the
    /// node), as the last preview went.
    fanout: f64,
}

/// Commit latencies a worker keeps until they are taken.
const MAX_COMMIT_SAMPLES: usize = 1 << 16;

/// A read's error, or the push failure behind it: a failed push ends the
/// run's waits, and its error is the one that says why. (Takes the two
/// fields, not the worker, so a caller can hold its cache meanwhile.)
fn read_error(
    pipeline: &mut Option<Pipeline>,
    commits: &mut Vec<Duration>,
    e: TableError,
) -> TableError {
    pipeline
        .as_mut()
        .and_then(|p| p.failure(commits))
        .unwrap_or(e)
}

/// One worker of one job.
pub struct WorkerCtx {
    node: Arc<Node>,
    job: JobId,
    worker: WorkerId,
    workers: u32,
    consistency: Consistency,
    clock: Clock,
    tables: HashMap<TableId, TableSpec>,
    names: HashMap<String, TableId>,
    oplog: OpLog,
    /// Flushed clocks kept for the own-write overlay, oldest first.
    history: VecDeque<Flushed>,
    /// The shards holding the job's tables (each gets every clock).
    span: JobShards,
    stats: WorkerStats,
    /// Pipelined clocks (cluster backends), started at the first clock.
    pipeline: Option<Pipeline>,
    /// Time from `clock()` to the acknowledgement of each clock seen so
    /// far (benchmarks), until taken.
    commits: Vec<Duration>,
    /// Early pushes within a bandwidth budget, when the job has one here.
    manager: Option<Manager>,
}

impl WorkerCtx {
    /// A worker starting at `clock` (0 for a new job, `c + 1` on resume).
    pub fn new(
        node: Arc<Node>,
        job: JobId,
        worker: WorkerId,
        workers: u32,
        consistency: Consistency,
        tables: &[TableSpec],
        clock: Clock,
    ) -> Self {
        let span = node.service.job_shards(job);
        let pipeline = node
            .service
            .pipelines()
            .then(|| Pipeline::join(&node, job, worker));
        let budget = node.budgets.lock().get(&job).cloned();
        let manager = budget
            .filter(|_| node.service.previews())
            .map(|budget| Manager {
                budget,
                sent: FxHashMap::default(),
                seq: 0,
                calls: 0,
                last: Instant::now(),
                fanout: 2.0,
            });
        WorkerCtx {
            node,
            job,
            worker,
            workers,
            consistency,
            clock,
            tables: tables.iter().map(|t| (t.id, t.clone())).collect(),
            names: tables.iter().map(|t| (t.name.clone(), t.id)).collect(),
            oplog: OpLog::default(),
            history: VecDeque::new(),
            span,
            stats: WorkerStats::default(),
            pipeline,
            commits: Vec::new(),
            manager,
        }
    }

    pub fn job(&self) -> JobId {
        self.job
    }
    pub fn worker(&self) -> WorkerId {
        self.worker
    }
    pub fn workers(&self) -> u32 {
        self.workers
    }
    /// The clock this worker is at (number of `clock()` calls so far).
    pub fn clock_now(&self) -> Clock {
        self.clock
    }
    /// Whether this worker pushes increments early within a bandwidth
    /// budget (managed communication): an algorithm that computes a
    /// clock's update locally may then add it to the op log in parts as it
    /// goes, so that there is something to push before the clock ends.
    pub fn manages_communication(&self) -> bool {
        self.manager.is_some()
    }

    pub fn consistency(&self) -> Consistency {
        self.consistency
    }
    pub fn stats(&self) -> WorkerStats {
        self.stats
    }

    /// A typed handle to a table of this job, by name.
    pub fn table<T: Elem>(&self, name: &str) -> Result<Table<T>, TableError> {
        let id = *self
            .names
            .get(name)
            .ok_or_else(|| TableError::NoSuchTableName(name.to_string()))?;
        let spec = &self.tables[&id];
        if spec.elem != T::TYPE {
            return Err(TableError::WrongType {
                table: id,
                expected: spec.elem,
                found: T::TYPE,
            });
        }
        Ok(Table {
            id,
            kind: spec.kind,
            columns: spec.columns,
            _t: PhantomData,
        })
    }

    /// Reads a row under the job's consistency model. Blocks when the
    /// guarantee cannot yet be met.
    pub fn get<T: Elem>(&mut self, t: Table<T>, row: RowId) -> Result<Row<T>, TableError> {
        let entry = self.entry(t.id, row)?;
        let mut out = T::from_any(&entry.snap.row)
            .ok_or(TableError::WrongType {
                table: t.id,
                expected: entry.snap.row.elem(),
                found: T::TYPE,
            })?
            .clone();
        self.overlay_own(t.id, row, &entry, &mut out);
        Ok(out)
    }

    /// Reads a dense row into `out` (resized to the row width); the
    /// allocation-free form of [`get`](Self::get) for hot loops.
    pub fn get_dense_into<T: Elem>(
        &mut self,
        t: Table<T>,
        row: RowId,
        out: &mut Vec<T>,
    ) -> Result<(), TableError> {
        if t.kind != RowKind::Dense {
            return Err(TableError::WrongKind {
                table: t.id,
                kind: t.kind,
            });
        }
        let entry = self.entry(t.id, row)?;
        out.clear();
        match T::from_any(&entry.snap.row) {
            Some(Row::Dense(v)) => out.extend_from_slice(v),
            Some(r @ Row::Sparse(_)) => out.extend(r.to_dense(t.columns)),
            None => {
                return Err(TableError::WrongType {
                    table: t.id,
                    expected: entry.snap.row.elem(),
                    found: T::TYPE,
                })
            }
        }
        let own = self.own_applied(&entry);
        for f in &self.history {
            if f.clock >= own {
                if let Some(d) = f.delta(&(t.id, row)).and_then(T::from_any) {
                    add_into_dense(out, d);
                }
            }
        }
        if let Some(d) = self.oplog.get(&(t.id, row)).and_then(T::from_any) {
            add_into_dense(out, d);
        }
        Ok(())
    }

    /// Appends a row's non-zero `(column, value)` entries to `out` (in no
    /// particular order for sparse rows), under the same guarantee as
    /// [`get`](Self::get) but without copying the cached row when none of
    /// this worker's own writes need to be added to it.
    pub fn get_entries_into<T: Elem>(
        &mut self,
        t: Table<T>,
        row: RowId,
        out: &mut Vec<(u32, T)>,
    ) -> Result<(), TableError> {
        let entry = self.entry(t.id, row)?;
        let key = (t.id, row);
        let own = self.own_applied(&entry);
        let overlay = self.oplog.contains_key(&key)
            || self
                .history
                .iter()
                .any(|f| f.clock >= own && f.delta(&key).is_some());
        let cached = T::from_any(&entry.snap.row).ok_or(TableError::WrongType {
            table: t.id,
            expected: entry.snap.row.elem(),
            found: T::TYPE,
        })?;
        let merged;
        let r = if overlay {
            let mut copy = cached.clone();
            self.overlay_own(t.id, row, &entry, &mut copy);
            merged = copy;
            &merged
        } else {
            cached
        };
        match r {
            Row::Sparse(m) => out.extend(m.iter().map(|(&c, &v)| (c, v))),
            Row::Dense(v) => out.extend(
                v.iter()
                    .enumerate()
                    .filter(|(_, x)| !x.is_zero())
                    .map(|(c, &x)| (c as u32, x)),
            ),
        }
        Ok(())
    }

    /// Adds `delta` to one value.
    pub fn inc<T: Elem>(
        &mut self,
        t: Table<T>,
        row: RowId,
        col: u32,
        delta: T,
    ) -> Result<(), TableError> {
        if col >= t.columns {
            return Err(TableError::ColumnOutOfRange {
                table: t.id,
                row,
                col,
                columns: t.columns,
            });
        }
        self.stats.incs += 1;
        self.log_row::<T>(t, row).add_at(col, delta);
        self.manage(1);
        Ok(())
    }

    /// Adds a full dense vector to a row.
    pub fn batch_inc<T: Elem>(
        &mut self,
        t: Table<T>,
        row: RowId,
        delta: &[T],
    ) -> Result<(), TableError> {
        if delta.len() != t.columns as usize {
            return Err(TableError::WidthMismatch {
                table: t.id,
                row,
                got: delta.len(),
                columns: t.columns,
            });
        }
        self.stats.incs += 1;
        self.log_row::<T>(t, row).add_slice(delta);
        self.manage(PREVIEW_CHECK_EVERY);
        Ok(())
    }

    /// Adds `(column, delta)` pairs to a row.
    pub fn batch_inc_sparse<T: Elem>(
        &mut self,
        t: Table<T>,
        row: RowId,
        delta: &[(u32, T)],
    ) -> Result<(), TableError> {
        if let Some(&(col, _)) = delta.iter().find(|(c, _)| *c >= t.columns) {
            return Err(TableError::ColumnOutOfRange {
                table: t.id,
                row,
                col,
                columns: t.columns,
            });
        }
        self.stats.incs += 1;
        let r = self.log_row::<T>(t, row);
        for &(c, d) in delta {
            r.add_at(c, d);
        }
        self.manage(PREVIEW_CHECK_EVERY);
        Ok(())
    }

    /// With a budget: every [`PREVIEW_CHECK_EVERY`] increments (`weight`
    /// counts this one), at most
    /// every [`PREVIEW_GAP`], sends a preview of the op log's rows in
    /// order of their unsent increment relative to their value (as the
    /// process cache has it; a row never read counts as zero), as many as
    /// the budget has bytes for.
    #[inline]
    fn manage(&mut self, weight: u32) {
        let Some(m) = self.manager.as_mut() else {
            return;
        };
        m.calls += weight;
        if m.calls < PREVIEW_CHECK_EVERY {
            return;
        }
        m.calls = 0;
        if m.last.elapsed() < PREVIEW_GAP {
            return;
        }
        m.last = Instant::now();
        let allowance = m.budget.available() / m.fanout;
        if allowance < PREVIEW_ROW_OVERHEAD as f64 {
            return;
        }
        let cache = &self.node.cache;
        let mut candidates: Vec<(f64, Key, usize)> = Vec::new();
        for (key, delta) in &self.oplog {
            let unsent = delta.dist2(m.sent.get(key));
            if unsent == 0.0 || !unsent.is_finite() {
                continue;
            }
            let shard = self.span.shard_of(key.0, key.1);
            let value = cache
                .lookup(shard, *key)
                .map_or(0.0, |e| e.snap.row.norm2());
            let priority = (unsent / value.max(f64::MIN_POSITIVE)).sqrt();
            candidates.push((priority, *key, delta.value_bytes() + PREVIEW_ROW_OVERHEAD));
        }
        if candidates.is_empty() {
            return;
        }
        candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut used = 0usize;
        let mut per_shard: FxHashMap<ShardId, Vec<RowUpdate>> = FxHashMap::default();
        for (_, key, bytes) in candidates {
            if (used + bytes) as f64 > allowance {
                continue;
            }
            used += bytes;
            let delta = self.oplog[&key].clone();
            m.sent.insert(key, delta.clone());
            per_shard
                .entry(self.span.shard_of(key.0, key.1))
                .or_default()
                .push(RowUpdate {
                    table: key.0,
                    row: key.1,
                    delta,
                });
        }
        if per_shard.is_empty() {
            return;
        }
        m.seq += 1;
        let previews = per_shard
            .into_iter()
            .map(|(shard, rows)| {
                let p = Preview {
                    job: self.job,
                    worker: self.worker,
                    clock: self.clock,
                    seq: m.seq,
                    rows,
                };
                (shard, p)
            })
            .collect();
        let sent = self.node.service.preview(previews);
        m.budget.charge(sent);
        m.fanout = (sent as f64 / used as f64).max(1.0);
        self.stats.previews += 1;
        self.stats.preview_bytes += sent as u64;
    }

    /// Clocks whose batches may still be uncommitted when `clock()`
    /// returns: the staleness bound `s` (SSP, ESSP), 1 under async, 0
    /// under BSP. Nothing is lost by it: a read that needs a clock waits on
    /// the shard until it is applied, own unacknowledged writes are in the
    /// overlay history (`s + 1` clocks), and [`flush`](Self::flush) waits
    /// for all.
    fn pipeline_depth(&self) -> usize {
        match self.consistency.staleness() {
            Some(s) => s as usize,
            None => 1,
        }
    }

    /// Waits until every clock's batches are acknowledged (end of the
    /// worker's run). Returns the error of a push that failed.
    pub fn flush(&mut self) -> Result<(), TableError> {
        match &mut self.pipeline {
            Some(p) => p.drain_to(0, &mut self.commits),
            None => Ok(()),
        }
    }

    /// Each acknowledged clock's time from `clock()` to its
    /// acknowledgement (commit latency, pipelined or not), since the last
    /// call.
    pub fn take_commit_latencies(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.commits)
    }

    /// Ends this worker's current clock: sends one batch per shard with the
    /// aggregated increments and advances. Returns once they are
    /// acknowledged, or, on a cluster under SSP(s), once at most `s`
    /// clocks are unacknowledged (pipelined clocks, in order per worker).
    pub fn clock(&mut self) -> Result<(), TableError> {
        let log = std::mem::take(&mut self.oplog);
        let mut batches: Vec<UpdateBatch> = self
            .span
            .iter()
            .map(|shard| UpdateBatch {
                job: self.job,
                worker: self.worker,
                clock: self.clock,
                shard,
                updates: Vec::new(),
            })
            .collect();
        let mut index = FxHashMap::default();
        index.reserve(log.len());
        for ((table, row), delta) in log {
            let slot = self.span.slot(table, row);
            let updates = &mut batches[slot as usize].updates;
            index.insert((table, row), (slot, updates.len() as u32));
            updates.push(RowUpdate { table, row, delta });
        }
        self.stats.batches += batches.len() as u64;
        let bytes = batches.iter().map(|b| b.value_bytes()).sum::<usize>();
        self.stats.bytes_pushed += bytes as u64;
        if let Some(m) = &mut self.manager {
            // The clock's batch carries every row previewed: what the
            // previews carried is superseded once it is applied.
            m.sent.clear();
            m.budget.charge(bytes);
        }
        let depth = self.pipeline_depth();
        let started = Instant::now();
        match &mut self.pipeline {
            None => {
                self.node.service.push(&batches)?;
                self.commits.push(started.elapsed());
            }
            Some(p) => {
                if let Some(e) = p.failure(&mut self.commits) {
                    return Err(e);
                }
                p.outbox.hand(self.worker, self.clock, batches.clone())?;
                p.in_flight += 1;
                p.drain_to(depth, &mut self.commits)?;
            }
        }
        self.stats.commit_wait += started.elapsed();
        self.commits.truncate(MAX_COMMIT_SAMPLES);
        self.history.push_back(Flushed {
            clock: self.clock,
            batches,
            index,
        });
        while self.history.len() > self.consistency.own_history_clocks() {
            self.history.pop_front();
        }
        self.clock += 1;
        Ok(())
    }

    fn log_row<T: Elem>(&mut self, t: Table<T>, row: RowId) -> &mut Row<T> {
        let entry = self
            .oplog
            .entry((t.id, row))
            .or_insert_with(|| AnyRow::zero(T::TYPE, t.kind, t.columns));
        T::from_any_mut(entry).expect("table handle type checked at creation")
    }

    /// Oldest own clock whose increments the worker can still overlay.
    fn own_floor(&self) -> Clock {
        self.clock - self.history.len() as Clock
    }

    fn own_applied(&self, entry: &CacheEntry) -> Clock {
        entry
            .snap
            .worker_clocks
            .get(self.worker as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Whether a cached copy may serve a read at the current clock.
    fn usable(&self, e: &CacheEntry) -> bool {
        if self.own_applied(e) < self.own_floor() {
            return false;
        }
        match self.consistency.required_min_clock(self.clock) {
            Some(m) => e.snap.min_clock >= m,
            // Async never waits, but refreshes a row once per clock.
            None => e.fetched_at >= self.clock,
        }
    }

    /// Brings rows of a table into the process cache under the guarantee
    /// of the current clock, fetching all that are missing or too stale
    /// together (one request per shard on a cluster, not one per row).
    /// The reads that follow at this clock are then cache hits. A clock
    /// that reads many rows should name them here first.
    pub fn prefetch<T: Elem>(
        &mut self,
        t: Table<T>,
        rows: impl IntoIterator<Item = RowId>,
    ) -> Result<(), TableError> {
        if !self.tables.contains_key(&t.id) {
            return Err(TableError::NoSuchTable(t.id));
        }
        let min_clock = self.consistency.required_min_clock(self.clock);
        let own_clock = self.own_floor();
        let cache = &self.node.cache;
        let mut seen = FxHashSet::default();
        let (mut reqs, mut shards) = (Vec::new(), Vec::new());
        for row in rows {
            if !seen.insert(row) {
                continue;
            }
            let shard = self.span.shard_of(t.id, row);
            if let Some(e) = cache.lookup(shard, (t.id, row)) {
                if self.usable(&e) {
                    continue;
                }
            }
            shards.push(shard);
            reqs.push(FetchRequest {
                job: self.job,
                table: t.id,
                row,
                worker: self.worker,
                min_clock,
                own_clock,
            });
        }
        if reqs.is_empty() {
            return Ok(());
        }
        self.stats.fetches += reqs.len() as u64;
        let started = Instant::now();
        let snaps = match self.node.service.fetch_many(&reqs) {
            Ok(s) => s,
            Err(e) => return Err(read_error(&mut self.pipeline, &mut self.commits, e)),
        };
        self.stats.wait += started.elapsed();
        self.stats.bytes_pulled += snaps
            .iter()
            .map(|s| s.row.value_bytes() as u64)
            .sum::<u64>();
        for ((req, snap), shard) in reqs.iter().zip(snaps).zip(shards) {
            let entry = CacheEntry {
                snap,
                job: self.job,
                fetched_at: self.clock,
                subscribed: self.consistency.pushes(),
            };
            cache.insert(shard, (t.id, req.row), entry);
        }
        Ok(())
    }

    fn entry(&mut self, table: TableId, row: RowId) -> Result<CacheEntry, TableError> {
        if !self.tables.contains_key(&table) {
            return Err(TableError::NoSuchTable(table));
        }
        self.stats.reads += 1;
        let shard = self.span.shard_of(table, row);
        let cache = &self.node.cache;
        if let Some(e) = cache.lookup(shard, (table, row)) {
            if self.usable(&e) {
                cache.count(true);
                return Ok(e);
            }
        }
        cache.count(false);
        self.stats.fetches += 1;
        let started = Instant::now();
        let snap = match self.node.service.fetch(&FetchRequest {
            job: self.job,
            table,
            row,
            worker: self.worker,
            min_clock: self.consistency.required_min_clock(self.clock),
            own_clock: self.own_floor(),
        }) {
            Ok(s) => s,
            Err(e) => return Err(read_error(&mut self.pipeline, &mut self.commits, e)),
        };
        self.stats.wait += started.elapsed();
        self.stats.bytes_pulled += snap.row.value_bytes() as u64;
        let entry = CacheEntry {
            snap,
            job: self.job,
            fetched_at: self.clock,
            subscribed: self.consistency.pushes(),
        };
        cache.insert(shard, (table, row), entry.clone());
        Ok(entry)
    }

    fn overlay_own<T: Elem>(
        &self,
        table: TableId,
        row: RowId,
        entry: &CacheEntry,
        out: &mut Row<T>,
    ) {
        let own = self.own_applied(entry);
        for f in &self.history {
            if f.clock >= own {
                if let Some(d) = f.delta(&(table, row)).and_then(T::from_any) {
                    out.add_row(d);
                }
            }
        }
        if let Some(d) = self.oplog.get(&(table, row)).and_then(T::from_any) {
            out.add_row(d);
        }
    }
}

impl Drop for WorkerCtx {
    /// The worker's group no longer waits for its clocks.
    fn drop(&mut self) {
        if let Some(p) = &self.pipeline {
            p.outbox.leave(p.worker);
        }
    }
}

fn add_into_dense<T: Elem>(out: &mut [T], d: &Row<T>) {
    match d {
        Row::Dense(v) => crate::row::add_assign_slice(out, v),
        Row::Sparse(m) => {
            for (&c, &x) in m {
                out[c as usize] += x;
            }
        }
    }
}
