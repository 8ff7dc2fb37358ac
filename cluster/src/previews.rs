//! Previews held by a node's replicas (managed communication,
//! docs/design.md): early copies of other nodes' workers' increments of
//! the clocks they are in, added to reads until the replica applies those
//! clocks. In memory only: a preview is never written to the log or a
//! checkpoint, and losing one (a restart, a leader change) loses nothing,
//! since the clock's batch carries the same increments.

use parking_lot::Mutex;
use petuum_core::batch::RowUpdate;
use petuum_core::row::AnyRow;
use petuum_core::service::{FetchRequest, Preview, RowSnapshot};
use petuum_core::types::{Clock, JobId, RowId, ShardId, TableId, WorkerId};
use petuum_storage::{EpochCheck, ShardData};
use std::collections::HashMap;
use std::sync::Arc;

/// The most bytes of values a node holds in previews; beyond it new ones
/// are refused (no client input may exhaust a node's memory).
pub const MAX_PREVIEW_BYTES: usize = 64 << 20;

/// A preview not refreshed for this long is dropped (its job ended, or
/// its worker went away): previews are for clocks in progress.
pub const PREVIEW_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// One worker's preview of one clock on one shard.
struct Held {
    /// When it last changed.
    at: std::time::Instant,
    /// The node it came from: reads from that node leave it out (its
    /// workers add their own increments themselves).
    from: u64,
    epoch: u64,
    clock: Clock,
    seq: u64,
    rows: HashMap<(TableId, RowId), AnyRow>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    by_shard: HashMap<(ShardId, JobId), HashMap<WorkerId, Held>>,
    bytes: usize,
    /// When previews past [`PREVIEW_TTL`] were last dropped (at most once
    /// a second, not on every preview).
    swept: Option<std::time::Instant>,
}

/// A node's previews, by shard, job and worker.
#[derive(Default)]
pub struct Previews {
    inner: Mutex<Inner>,
}

/// Checks a preview against a replica: the run is the job's current one,
/// the job is registered and not deterministic, the worker is one of its
/// workers, and every row's increment fits its table. Returns the job's
/// applied clock of each worker on the replica.
pub fn check(data: &ShardData, p: &Preview, epoch: u64) -> Result<Vec<Clock>, String> {
    match data.check_epoch(p.job, epoch) {
        EpochCheck::Current => {}
        _ => return Err(format!("job {}: run {epoch} is not current here", p.job)),
    }
    let state = data.current();
    let job = state
        .job(p.job)
        .map_err(|_| format!("job {} is not registered on this shard", p.job))?;
    if job.deterministic() {
        return Err(format!(
            "job {} is deterministic: it takes no previews",
            p.job
        ));
    }
    if p.worker >= job.workers() {
        return Err(format!("job {} has no worker {}", p.job, p.worker));
    }
    for u in &p.rows {
        let spec = state
            .table(u.table)
            .map_err(|_| format!("no table {} on this shard", u.table))?;
        if spec.job != p.job {
            return Err(format!("table {} is not job {}'s", u.table, p.job));
        }
        petuum_core::shard::check_delta(spec, u.row, &u.delta).map_err(|e| e.to_string())?;
    }
    Ok(job.applied())
}

impl Previews {
    /// Holds `p` (checked with [`check`]; `applied` is what it returned)
    /// from node `from`. An older preview of the same worker (an earlier
    /// clock, or an earlier `seq` of the same clock) changes nothing; one
    /// of a clock the replica applied already is dropped.
    pub fn hold(
        &self,
        shard: ShardId,
        from: u64,
        epoch: u64,
        p: Preview,
        applied: &[Clock],
    ) -> Result<(), String> {
        let mut inner = self.inner.lock();
        let Inner {
            by_shard,
            bytes,
            swept,
        } = &mut *inner;
        let now = std::time::Instant::now();
        if swept.is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1)) {
            *swept = Some(now);
            by_shard.retain(|_, workers| {
                workers.retain(|_, h| {
                    let keep = now.duration_since(h.at) < PREVIEW_TTL;
                    if !keep {
                        *bytes -= h.bytes;
                    }
                    keep
                });
                !workers.is_empty()
            });
        }
        let workers = by_shard.entry((shard, p.job)).or_default();
        // Drop what the replica has applied since (its clock's batch
        // carries it now).
        workers.retain(|w, h| {
            let keep = h.epoch == epoch && applied.get(*w as usize).is_some_and(|&a| h.clock >= a);
            if !keep {
                *bytes -= h.bytes;
            }
            keep
        });
        if applied.get(p.worker as usize).is_none_or(|&a| p.clock < a) {
            return Ok(());
        }
        let held = workers.entry(p.worker).or_insert_with(|| Held {
            at: now,
            from,
            epoch,
            clock: p.clock,
            seq: 0,
            rows: HashMap::new(),
            bytes: 0,
        });
        if (p.clock, p.seq) <= (held.clock, held.seq) {
            return Ok(());
        }
        if p.clock > held.clock {
            *bytes -= held.bytes;
            held.rows.clear();
            held.bytes = 0;
            held.clock = p.clock;
        }
        let incoming: usize = p.rows.iter().map(|u| u.delta.value_bytes()).sum();
        if *bytes + incoming > MAX_PREVIEW_BYTES {
            return Err(format!(
                "the node holds {} bytes of previews already (at most {MAX_PREVIEW_BYTES})",
                *bytes
            ));
        }
        held.from = from;
        held.seq = p.seq;
        held.at = now;
        for RowUpdate { table, row, delta } in p.rows {
            let add = delta.value_bytes();
            if let Some(old) = held.rows.insert((table, row), delta) {
                held.bytes -= old.value_bytes();
                *bytes -= old.value_bytes();
            }
            held.bytes += add;
            *bytes += add;
        }
        Ok(())
    }

    /// Adds to `snap` (the answer to `req`, a read of run `epoch` on
    /// `shard`, for a reader on node `reader`) the previews of other nodes' workers whose
    /// clocks the copy lacks: `snap.worker_clocks` says which it has, so a
    /// clock is never counted twice, whenever its batch lands.
    pub fn overlay(
        &self,
        shard: ShardId,
        epoch: u64,
        reader: u64,
        req: &FetchRequest,
        snap: &mut RowSnapshot,
    ) {
        let (job, table, row) = (req.job, req.table, req.row);
        let inner = self.inner.lock();
        let Some(workers) = inner.by_shard.get(&(shard, job)) else {
            return;
        };
        for (w, h) in workers {
            if h.from == reader || h.epoch != epoch {
                continue;
            }
            let applied = snap.worker_clocks.get(*w as usize).copied();
            if applied.is_none_or(|a| h.clock < a) {
                continue;
            }
            if let Some(d) = h.rows.get(&(table, row)) {
                Arc::make_mut(&mut snap.row).add(d);
            }
        }
    }

    /// Forgets the previews of a job on a shard (the job ended there).
    pub fn forget(&self, shard: ShardId, job: JobId) {
        let mut inner = self.inner.lock();
        if let Some(workers) = inner.by_shard.remove(&(shard, job)) {
            inner.bytes -= workers.values().map(|h| h.bytes).sum::<usize>();
        }
    }

    /// Whether any preview is held (reads skip the overlay otherwise).
    pub fn holds_any(&self) -> bool {
        !self.inner.lock().by_shard.is_empty()
    }

    /// Bytes of values held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_core::row::Row;

    fn preview(worker: WorkerId, clock: Clock, seq: u64, v: f32) -> Preview {
        Preview {
            job: 1,
            worker,
            clock,
            seq,
            rows: vec![RowUpdate {
                table: 1,
                row: 7,
                delta: AnyRow::F32(Row::Dense(vec![v, v])),
            }],
        }
    }

    fn snap(clocks: &[Clock]) -> RowSnapshot {
        RowSnapshot {
            row: Arc::new(AnyRow::F32(Row::Dense(vec![10.0, 10.0]))),
            min_clock: 0,
            worker_clocks: clocks.into(),
            version: 1,
        }
    }

    fn req() -> FetchRequest {
        FetchRequest {
            job: 1,
            table: 1,
            row: 7,
            worker: 0,
            min_clock: Some(0),
            own_clock: 0,
        }
    }

    fn read(p: &Previews, reader: u64, clocks: &[Clock]) -> f32 {
        let mut s = snap(clocks);
        p.overlay(0, 5, reader, &req(), &mut s);
        match &*s.row {
            AnyRow::F32(Row::Dense(v)) => v[0],
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_preview_counts_until_its_clock_is_applied_and_never_for_its_own_node() {
        let p = Previews::default();
        // Worker 1 (on node 2) is in clock 3; the replica applied 0..3.
        p.hold(0, 2, 5, preview(1, 3, 1, 1.5), &[3, 3]).unwrap();
        assert_eq!(read(&p, 9, &[3, 3]), 11.5, "another node's reader sees it");
        assert_eq!(read(&p, 2, &[3, 3]), 10.0, "its own node's readers do not");
        assert_eq!(
            read(&p, 9, &[3, 4]),
            10.0,
            "a copy with clock 3 applied has it already"
        );
        // A later seq replaces the row's copy; an older one changes nothing.
        p.hold(0, 2, 5, preview(1, 3, 3, 2.0), &[3, 3]).unwrap();
        p.hold(0, 2, 5, preview(1, 3, 2, 9.0), &[3, 3]).unwrap();
        assert_eq!(read(&p, 9, &[3, 3]), 12.0);
        // The next clock's preview replaces the last clock's; a late
        // preview of an applied clock is dropped.
        p.hold(0, 2, 5, preview(1, 4, 1, 0.5), &[3, 4]).unwrap();
        assert_eq!(read(&p, 9, &[3, 4]), 10.5);
        p.hold(0, 2, 5, preview(1, 3, 9, 7.0), &[3, 4]).unwrap();
        assert_eq!(read(&p, 9, &[3, 4]), 10.5);
        // Another run's reads do not see them.
        let mut s = snap(&[3, 4]);
        p.overlay(0, 6, 9, &req(), &mut s);
        assert_eq!(*s.row, AnyRow::F32(Row::Dense(vec![10.0, 10.0])));
        assert_eq!(p.bytes(), 8);
        p.forget(0, 1);
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn previews_beyond_the_node_limit_are_refused() {
        let p = Previews::default();
        let big = Preview {
            job: 1,
            worker: 0,
            clock: 0,
            seq: 1,
            rows: vec![RowUpdate {
                table: 1,
                row: 1,
                delta: AnyRow::F64(Row::Dense(vec![0.0; MAX_PREVIEW_BYTES / 8 + 1])),
            }],
        };
        let e = p.hold(0, 2, 1, big, &[0]).unwrap_err();
        assert!(e.contains("previews"), "{e}");
        assert_eq!(p.bytes(), 0);
    }
}
