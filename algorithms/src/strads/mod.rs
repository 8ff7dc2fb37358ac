//! Strads: scheduled model parallelism (Kim et al., EuroSys 2016; Lee et
//! al., NIPS 2014), on the Bosen tables. See `docs/strads.md`.
//!
//! A Strads program runs in **rounds**, one per clock, under BSP:
//!
//! 1. The scheduler (worker 0) chooses the block of variables of round
//!    `c + 1` at clock `c` and writes it to row `c + 1` of the schedule
//!    table ([`Rounds::write_schedule`]). Every worker reads the block of
//!    round `c` from row `c` ([`Rounds::read_schedule`]); under BSP that
//!    row is complete and the same for everyone.
//! 2. Every worker computes its **partial** update for the block over its
//!    own data partition and adds it to row `c` of the partials table
//!    ([`Rounds::push_partials`]).
//! 3. At clock `c + 1` every worker reads the aggregated partials of round
//!    `c` ([`Rounds::read_partials`]: the sum over workers) and applies
//!    them with the same arithmetic, so every worker holds the same model;
//!    one worker records the change in the model table.
//!
//! Schedules, partials and the model are table rows, so they are
//! replicated, checkpointed and restored with the rest of the job; a
//! resumed deterministic run reads exactly the rows an uninterrupted one
//! would.
//!
//! Rounds reuse [`RING`] rows (round `r` lives in row `r mod 3`), so the
//! tables and their checkpoints do not grow with the rounds. Round `r`'s
//! block is written at clock `r - 1` and read at clocks `r` and `r + 1`;
//! its partials are added at clock `r`, read at `r + 1`, and cleared by
//! the scheduler at `r + 2` ([`Rounds::retire_partials`]: it adds minus
//! the complete sum, which leaves exactly 0); the row is next written at
//! `r + 3`. Under BSP a worker reaches clock `k` only after every worker
//! finished `k - 1`, so no one still reads a row when it is cleared or
//! rewritten, and the clear is applied before anyone writes the row
//! again: every read returns what a fresh row would hold, bit for bit.
//!
//! The schedule is a pure function of the job seed, the clock and table
//! values every worker reads at the same clock.
//!
//! Schedulers ([`Scheduler`]): [`PriorityScheduler`] samples variables
//! with probability ∝ priority (e.g. the last |Δ|) plus a floor and drops
//! candidates that interfere ([`Interference`]) with one already chosen
//! (SchMP); [`UniformScheduler`] samples uniformly (Shotgun);
//! [`Rotation`] gives worker `w` block `(c + w) mod B` of `B` disjoint
//! blocks (the static schedule of CCD++ and model-parallel LDA).

mod schedule;

pub use schedule::{
    Interference, NoInterference, PriorityScheduler, Rotation, Scheduler, UniformScheduler,
};

use petuum_core::algorithm::{BoxError, TableDecl, TableLoader};
use petuum_core::types::Clock;
use petuum_core::{ElemType, Row, RowKind, Table, WorkerCtx};

/// Rows a round-indexed table cycles through (see the module docs).
pub const RING: Clock = 3;

/// The row of round `round`.
pub fn ring_row(round: Clock) -> u64 {
    round % RING
}

/// Clears a row whose every reader is done: adds minus its complete value
/// (called by the row's one clearing worker; the row then holds exactly 0).
pub fn clear_row(ctx: &mut WorkerCtx, t: Table<f64>, row: u64) -> Result<(), BoxError> {
    let mut v = Vec::new();
    ctx.get_dense_into(t, row, &mut v)?;
    if v.iter().any(|x| *x != 0.0) {
        v.iter_mut().for_each(|x| *x = -*x);
        ctx.batch_inc(t, row, &v)?;
    }
    Ok(())
}

/// The tables of a Strads program's rounds.
#[derive(Clone, Debug)]
pub struct Rounds {
    prefix: String,
    /// Most variables in one block.
    pub max_block: usize,
    /// Partial values per scheduled variable.
    pub width: usize,
    /// Extra partial values per round (e.g. a residual sum).
    pub extra: usize,
}

impl Rounds {
    /// Rounds whose tables are named `{prefix}_schedule` and `{prefix}_partials`.
    pub fn new(prefix: &str, max_block: usize, width: usize, extra: usize) -> Self {
        Rounds {
            prefix: prefix.to_string(),
            max_block: max_block.max(1),
            width,
            extra,
        }
    }

    pub fn schedule_table(&self) -> String {
        format!("{}_schedule", self.prefix)
    }

    pub fn partials_table(&self) -> String {
        format!("{}_partials", self.prefix)
    }

    fn partial_columns(&self) -> usize {
        self.max_block * self.width + self.extra
    }

    /// The table declarations: the schedule (i64: `[len, v_0, v_1, ...]`
    /// per round) and the partials (f64, per round).
    pub fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl {
                name: self.schedule_table(),
                kind: RowKind::Dense,
                elem: ElemType::I64,
                columns: self.max_block as u32 + 1,
            },
            TableDecl {
                name: self.partials_table(),
                kind: RowKind::Dense,
                elem: ElemType::F64,
                columns: self.partial_columns() as u32,
            },
        ]
    }

    /// Writes the block of round 0 before any worker starts.
    pub fn load_first(&self, loader: &TableLoader<'_>, block: &[u32]) -> Result<(), BoxError> {
        let row = self.encode(block)?;
        loader.load(&self.schedule_table(), vec![(0, Row::Dense(row))])?;
        Ok(())
    }

    fn encode(&self, block: &[u32]) -> Result<Vec<i64>, BoxError> {
        if block.len() > self.max_block {
            return Err(format!(
                "a block of {} variables, at most {} allowed",
                block.len(),
                self.max_block
            )
            .into());
        }
        let mut row = vec![0i64; self.max_block + 1];
        row[0] = block.len() as i64;
        for (slot, &v) in row[1..].iter_mut().zip(block) {
            *slot = v as i64;
        }
        Ok(row)
    }

    /// Schedules `block` for round `round` (called by the scheduler, the
    /// row's only writer, at clock `round - 1`): replaces what the row
    /// held (the block of round `round - 3`).
    pub fn write_schedule(
        &self,
        ctx: &mut WorkerCtx,
        round: Clock,
        block: &[u32],
    ) -> Result<(), BoxError> {
        let mut row = self.encode(block)?;
        let t = ctx.table::<i64>(&self.schedule_table())?;
        let mut old = Vec::new();
        ctx.get_dense_into(t, ring_row(round), &mut old)?;
        for (v, o) in row.iter_mut().zip(&old) {
            *v -= o;
        }
        ctx.batch_inc(t, ring_row(round), &row)?;
        Ok(())
    }

    /// The block of round `round` (empty when nothing was scheduled).
    pub fn read_schedule(&self, ctx: &mut WorkerCtx, round: Clock) -> Result<Vec<u32>, BoxError> {
        let t = ctx.table::<i64>(&self.schedule_table())?;
        let mut row = Vec::new();
        ctx.get_dense_into(t, ring_row(round), &mut row)?;
        let len = row[0];
        if len < 0 || len as usize > self.max_block {
            return Err(format!("schedule of round {round} is corrupt (length {len})").into());
        }
        Ok(row[1..=len as usize].iter().map(|&v| v as u32).collect())
    }

    /// Adds this worker's partials of round `round`: `width` values per
    /// variable of the block, in block order, then the `extra` values.
    pub fn push_partials(
        &self,
        ctx: &mut WorkerCtx,
        round: Clock,
        block_len: usize,
        per_var: &[f64],
        extra: &[f64],
    ) -> Result<(), BoxError> {
        if per_var.len() != block_len * self.width || extra.len() != self.extra {
            return Err(format!(
                "{} partial values and {} extra for a block of {block_len} (width {}, extra {})",
                per_var.len(),
                extra.len(),
                self.width,
                self.extra
            )
            .into());
        }
        let mut row = vec![0f64; self.partial_columns()];
        row[..per_var.len()].copy_from_slice(per_var);
        row[self.max_block * self.width..].copy_from_slice(extra);
        let t = ctx.table::<f64>(&self.partials_table())?;
        ctx.batch_inc(t, ring_row(round), &row)?;
        Ok(())
    }

    /// Adds this worker's whole partials row of round `round` (`max_block
    /// × width + extra` values, laid out as [`Rounds::push_partials`]
    /// would), without copying it.
    pub fn push_row(&self, ctx: &mut WorkerCtx, round: Clock, row: &[f64]) -> Result<(), BoxError> {
        if row.len() != self.partial_columns() {
            return Err(format!(
                "a partials row of {} values, the table has {}",
                row.len(),
                self.partial_columns()
            )
            .into());
        }
        let t = ctx.table::<f64>(&self.partials_table())?;
        ctx.batch_inc(t, ring_row(round), row)?;
        Ok(())
    }

    /// The whole summed partials row of round `round`, into `row`.
    pub fn read_row_into(
        &self,
        ctx: &mut WorkerCtx,
        round: Clock,
        row: &mut Vec<f64>,
    ) -> Result<(), BoxError> {
        let t = ctx.table::<f64>(&self.partials_table())?;
        ctx.get_dense_into(t, ring_row(round), row)?;
        Ok(())
    }

    /// Clears the partials of round `round` (the scheduler, at clock
    /// `round + 2`, when every worker has read them).
    pub fn retire_partials(&self, ctx: &mut WorkerCtx, round: Clock) -> Result<(), BoxError> {
        let t = ctx.table::<f64>(&self.partials_table())?;
        clear_row(ctx, t, ring_row(round))
    }

    /// The partials of round `round` summed over the workers (complete at
    /// any clock after `round` under BSP): `(per variable, extra)`.
    pub fn read_partials(
        &self,
        ctx: &mut WorkerCtx,
        round: Clock,
        block_len: usize,
    ) -> Result<(Vec<f64>, Vec<f64>), BoxError> {
        let t = ctx.table::<f64>(&self.partials_table())?;
        let mut row = Vec::new();
        ctx.get_dense_into(t, ring_row(round), &mut row)?;
        let extra = row[self.max_block * self.width..].to_vec();
        row.truncate(block_len * self.width);
        Ok((row, extra))
    }
}

/// Why a Strads program refuses a consistency model.
pub fn require_bsp(spec: &petuum_core::spec::JobSpec) -> Result<(), petuum_core::spec::SpecError> {
    if spec.consistency_name() != petuum_core::spec::ConsistencyName::Bsp {
        return Err(petuum_core::spec::SpecError::invalid(
            "run.consistency",
            format!(
                "{} is a Strads program: every round reads the complete partials of the \
                 previous one, so it needs \"bsp\"",
                spec.algorithm
            ),
        ));
    }
    Ok(())
}
