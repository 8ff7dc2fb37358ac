//! The in-process backend: every shard in this process, each a
//! [`ShardState`] behind a mutex, with a condition variable for readers
//! waiting on the SSP guarantee. This is what `petuumd run` uses; it is the
//! same state machine the replicated shards run.

use crate::batch::UpdateBatch;
use crate::error::TableError;
use crate::row::AnyRow;
use crate::service::{FetchRequest, PushSink, RowSnapshot, ShardService};
use crate::shard::ShardState;
use crate::types::{shard_of, JobId, RowId, ShardId, TableId, TableSpec};
use parking_lot::{Condvar, Mutex};

/// How long a read waiting for other workers' clocks stays runnable
/// (yielding its core to any other runnable thread) before it sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(500);

/// Readers of this process spinning now.
static SPINNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A reader's leave to spin: at most one fewer than the cores at once,
/// so a core stays for the worker being waited for (with more workers
/// than cores, spinning would take its time).
struct Spinner;

impl Spinner {
    fn enter() -> Option<Spinner> {
        use std::sync::atomic::Ordering::{AcqRel, Relaxed};
        static SLOTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let slots =
            *SLOTS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) - 1);
        let mut cur = SPINNING.load(Relaxed);
        loop {
            if cur >= slots {
                return None;
            }
            match SPINNING.compare_exchange_weak(cur, cur + 1, AcqRel, Relaxed) {
                Ok(_) => return Some(Spinner),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
use std::collections::HashMap;
use std::sync::{Arc, Weak};

struct ShardCell {
    state: Mutex<ShardState>,
    changed: Condvar,
}

/// All shards of a single-node cluster, in memory.
pub struct InProcShards {
    shards: Vec<ShardCell>,
    sinks: Mutex<Vec<Weak<dyn PushSink>>>,
    aborted: Mutex<HashMap<JobId, String>>,
}

impl InProcShards {
    pub fn new(num_shards: u32) -> Self {
        assert!(num_shards > 0, "at least one shard");
        InProcShards {
            shards: (0..num_shards)
                .map(|s| ShardCell {
                    state: Mutex::new(ShardState::new(s)),
                    changed: Condvar::new(),
                })
                .collect(),
            sinks: Mutex::new(Vec::new()),
            aborted: Mutex::new(HashMap::new()),
        }
    }

    fn cell(&self, shard: ShardId) -> Result<&ShardCell, TableError> {
        self.shards
            .get(shard as usize)
            .ok_or(TableError::NoSuchShard {
                shard,
                shards: self.shards.len() as u32,
            })
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

    /// Runs `f` on one shard's state (tests and checkpoints).
    pub fn with_shard<R>(&self, shard: ShardId, f: impl FnOnce(&ShardState) -> R) -> R {
        f(&self.shards[shard as usize].state.lock())
    }

    /// Runs `f` on one shard's state mutably (restoring a checkpoint before
    /// any worker starts).
    pub fn with_shard_mut<R>(&self, shard: ShardId, f: impl FnOnce(&mut ShardState) -> R) -> R {
        f(&mut self.shards[shard as usize].state.lock())
    }

    fn push_to_sinks(&self, shard: ShardId, job: JobId) {
        let sinks: Vec<Arc<dyn PushSink>> = {
            let mut sinks = self.sinks.lock();
            sinks.retain(|s| s.strong_count() > 0);
            sinks.iter().filter_map(Weak::upgrade).collect()
        };
        for sink in sinks {
            let keys = sink.subscribed(shard, job);
            if keys.is_empty() {
                continue;
            }
            let rows = {
                let st = self.shards[shard as usize].state.lock();
                let Ok(clocks) = st.job(job) else { return };
                let worker_clocks: Arc<[u64]> = clocks.applied().into();
                let min_clock = clocks.min_clock();
                keys.into_iter()
                    .filter_map(|k| {
                        let row = st.read(k.0, k.1).ok()?;
                        Some((
                            k,
                            RowSnapshot {
                                row: Arc::new(row),
                                min_clock,
                                worker_clocks: worker_clocks.clone(),
                                version: st.version(),
                            },
                        ))
                    })
                    .collect()
            };
            sink.push(shard, rows);
        }
    }
}

impl ShardService for InProcShards {
    fn num_shards(&self) -> u32 {
        self.shards.len() as u32
    }

    fn create_table(&self, spec: &TableSpec) -> Result<(), TableError> {
        for cell in &self.shards {
            cell.state.lock().create_table(spec)?;
        }
        Ok(())
    }

    fn register_job(
        &self,
        job: JobId,
        workers: u32,
        deterministic: bool,
    ) -> Result<(), TableError> {
        self.aborted.lock().remove(&job);
        for cell in &self.shards {
            cell.state.lock().register_job(job, workers, deterministic);
        }
        Ok(())
    }

    fn load(&self, table: TableId, rows: Vec<(RowId, AnyRow)>) -> Result<(), TableError> {
        let n = self.num_shards();
        for (row, value) in rows {
            let cell = self.cell(shard_of(table, row, n))?;
            cell.state.lock().load(table, row, value)?;
        }
        Ok(())
    }

    fn push(&self, batches: &[UpdateBatch]) -> Result<(), TableError> {
        for batch in batches {
            let job = batch.job;
            self.check_aborted(job)?;
            let shard = batch.shard;
            let cell = self.cell(shard)?;
            let outcome = cell.state.lock().apply_ref(batch)?;
            if outcome.min_clock_after > outcome.min_clock_before {
                cell.changed.notify_all();
                self.push_to_sinks(shard, job);
            } else if !outcome.duplicate {
                // Own-clock waiters (deterministic mode) may be satisfied.
                cell.changed.notify_all();
            }
        }
        Ok(())
    }

    fn fetch(&self, req: &FetchRequest) -> Result<RowSnapshot, TableError> {
        let shard = shard_of(req.table, req.row, self.num_shards());
        let cell = self.cell(shard)?;
        let mut st = cell.state.lock();
        // Both taken at the first wait (a read served at once pays for
        // neither); the spin slot is dropped (`Some(None)`) before sleeping.
        let mut began = None;
        let mut spin: Option<Option<Spinner>> = None;
        loop {
            self.check_aborted(req.job)?;
            if let Some(snap) = st.try_fetch(req)? {
                return Ok(snap);
            }
            if began.get_or_insert_with(std::time::Instant::now).elapsed() >= SPIN {
                spin = Some(None);
            }
            if spin.get_or_insert_with(Spinner::enter).is_some() {
                // Briefly runnable rather than asleep: a worker waiting for
                // another's clock and woken by it is put on the waker's
                // core (the wake is "affine"), and the two then take turns
                // on one core while the other stays idle (seen with BSP on
                // two cores: 0.7 ms scheduling delays each clock).
                parking_lot::MutexGuard::unlocked(&mut st, std::thread::yield_now);
                continue;
            }
            // Bounded wait so an abort is noticed even without a notify.
            cell.changed
                .wait_for(&mut st, std::time::Duration::from_millis(200));
        }
    }

    fn row_ids(&self, table: TableId) -> Result<Vec<RowId>, TableError> {
        let mut ids = Vec::new();
        for cell in &self.shards {
            let st = cell.state.lock();
            st.table(table)?;
            ids.extend(st.row_ids(table));
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn subscribe(&self, sink: Weak<dyn PushSink>) {
        self.sinks.lock().push(sink);
    }

    fn abort_job(&self, job: JobId, reason: &str) {
        self.aborted.lock().insert(job, reason.to_string());
        for cell in &self.shards {
            let _guard = cell.state.lock();
            cell.changed.notify_all();
        }
    }

    fn drop_job(&self, job: JobId) {
        for cell in &self.shards {
            cell.state.lock().drop_job(job);
        }
    }
}
