//! What an algorithm provides to the runner.

use crate::error::TableError;
use crate::row::{AnyRow, Row};
use crate::service::{FetchRequest, ShardService};
use crate::types::{Elem, ElemType, RowId, RowKind, TableId, TableSpec};
use crate::worker::WorkerCtx;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

/// Errors crossing the algorithm boundary. Algorithms define their own
/// typed errors (with `thiserror`) and box them here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A table an algorithm needs; the runner assigns its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDecl {
    pub name: String,
    pub kind: RowKind,
    pub elem: ElemType,
    pub columns: u32,
}

/// What one worker did in one clock.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// The worker's part of the objective (summed over workers, then
    /// divided by the summed `weight`).
    pub objective: f64,
    /// Weight of `objective` (e.g. samples seen, for a mean loss).
    pub weight: f64,
    /// Samples (or tokens) processed, for throughput.
    pub samples: u64,
    /// Values of the job as a whole after this clock besides the objective
    /// (a duality gap, the non-zeros, a held-out error).
    pub metrics: ClockMetrics,
}

/// Up to [`ClockMetrics::CAPACITY`] named values a worker reports with a
/// clock. They describe the job, not the worker's share of it: workers
/// that report one report the same value (or one worker reports it), and
/// the progress keeps the lowest-numbered worker's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClockMetrics {
    items: [(&'static str, f64); ClockMetrics::CAPACITY],
    len: usize,
}

impl ClockMetrics {
    pub const CAPACITY: usize = 4;

    /// Adds a value (beyond the capacity it is dropped).
    pub fn push(&mut self, name: &'static str, value: f64) {
        if self.len < Self::CAPACITY {
            self.items[self.len] = (name, value);
            self.len += 1;
        }
    }

    /// Builder form of [`push`](Self::push).
    pub fn with(mut self, name: &'static str, value: f64) -> Self {
        self.push(name, value);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.items[..self.len].iter().copied()
    }
}

/// How a trained model was written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelSummary {
    pub bytes: u64,
    /// Metrics measured on held-out data at export, by name.
    pub metrics: Vec<(String, f64)>,
}

/// A training algorithm over the table API.
pub trait Algorithm: Send + Sync {
    /// Registry name.
    fn name(&self) -> &'static str;
    /// Name of the objective reported per clock (e.g. "loss").
    fn objective_name(&self) -> &'static str {
        "loss"
    }
    /// Tables the job needs.
    fn tables(&self) -> Vec<TableDecl>;
    /// Bulk-loads initial values (before any worker starts).
    fn initialize(&self, _loader: &TableLoader<'_>) -> Result<(), BoxError> {
        Ok(())
    }
    /// Creates worker `worker` of `workers` (its data partition, buffers).
    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError>;
    /// Writes the trained model, reading the final tables.
    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError>;
}

/// One worker's training loop body, called once per clock.
pub trait AlgoWorker: Send {
    /// Runs one clock of work. The runner calls `ctx.clock()` after it.
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError>;
    /// Worker-local state for checkpoints (data position, local counts...).
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Restores what `save_state` returned.
    fn restore_state(&mut self, _state: &[u8]) -> Result<(), BoxError> {
        Ok(())
    }
    /// Whether the worker has finished before the job's last clock (a
    /// convergence rule): the runner stops it after the clock just run.
    /// Every worker of a job must answer the same after the same clock
    /// (decide from table values all of them read), or the others wait
    /// for it forever.
    fn finished(&self) -> bool {
        false
    }
}

/// A read of a row's current value, waiting for no clock (init and
/// export: every acknowledged write is in it).
fn latest(spec: &TableSpec, row: RowId) -> FetchRequest {
    FetchRequest {
        job: spec.job,
        table: spec.id,
        row,
        worker: 0,
        min_clock: None,
        own_clock: 0,
    }
}

/// Access to a job's tables by name, for init and export.
pub struct TableReader<'a> {
    pub(crate) service: &'a dyn ShardService,
    pub(crate) tables: &'a [TableSpec],
    /// Rows read ahead by [`prefetch`](Self::prefetch).
    fetched: parking_lot::Mutex<std::collections::HashMap<(TableId, RowId), Arc<AnyRow>>>,
}

impl<'a> TableReader<'a> {
    pub fn new(service: &'a dyn ShardService, tables: &'a [TableSpec]) -> Self {
        TableReader {
            service,
            tables,
            fetched: Default::default(),
        }
    }

    /// Reads rows ahead, all at once (one request per shard on a
    /// cluster): an export that reads a table row by row names the rows
    /// here first. The later [`read`](Self::read)s of these rows return
    /// the values read now.
    pub fn prefetch(
        &self,
        name: &str,
        rows: impl IntoIterator<Item = RowId>,
    ) -> Result<(), TableError> {
        let spec = self.spec(name)?;
        let reqs: Vec<FetchRequest> = {
            let fetched = self.fetched.lock();
            rows.into_iter()
                .filter(|&row| !fetched.contains_key(&(spec.id, row)))
                .map(|row| latest(spec, row))
                .collect()
        };
        let snaps = self.service.fetch_many(&reqs)?;
        let mut fetched = self.fetched.lock();
        for (req, snap) in reqs.iter().zip(snaps) {
            fetched.insert((spec.id, req.row), snap.row);
        }
        Ok(())
    }

    pub fn spec(&self, name: &str) -> Result<&TableSpec, TableError> {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| TableError::NoSuchTableName(name.to_string()))
    }

    /// The current value of a row, without waiting for any clock.
    pub fn read<T: Elem>(&self, name: &str, row: RowId) -> Result<Row<T>, TableError> {
        let spec = self.spec(name)?;
        let row = match self.fetched.lock().get(&(spec.id, row)) {
            Some(r) => r.clone(),
            None => self.service.fetch(&latest(spec, row))?.row,
        };
        T::from_any(&row).cloned().ok_or(TableError::WrongType {
            table: spec.id,
            expected: spec.elem,
            found: T::TYPE,
        })
    }

    /// Row ids written so far in a table.
    pub fn row_ids(&self, name: &str) -> Result<Vec<RowId>, TableError> {
        self.service.row_ids(self.spec(name)?.id)
    }
}

/// Bulk loading of initial values.
pub struct TableLoader<'a> {
    pub(crate) reader: TableReader<'a>,
}

impl<'a> TableLoader<'a> {
    pub fn new(service: &'a dyn ShardService, tables: &'a [TableSpec]) -> Self {
        TableLoader {
            reader: TableReader::new(service, tables),
        }
    }

    pub fn load<T: Elem>(&self, name: &str, rows: Vec<(RowId, Row<T>)>) -> Result<(), TableError> {
        let spec = self.reader.spec(name)?;
        if spec.elem != T::TYPE {
            return Err(TableError::WrongType {
                table: spec.id,
                expected: spec.elem,
                found: T::TYPE,
            });
        }
        let rows: Vec<(RowId, AnyRow)> =
            rows.into_iter().map(|(r, v)| (r, T::into_any(v))).collect();
        self.reader.service.load(spec.id, rows)
    }
}
