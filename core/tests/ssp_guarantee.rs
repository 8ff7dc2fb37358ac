//! Tests of the consistency guarantee itself (docs/design.md §1), on the real
//! in-process backend with its process cache.
//!
//! Counters: worker `w` adds `c + 1` to column `w` of every row in its
//! clock `c`. Because batches carry whole clocks, the value of column `w`
//! is always a triangular number `k (k + 1) / 2` where `k` is the number of
//! `w`'s clocks visible to the reader. At every read by worker `x` at clock
//! `c` under SSP(s) we check: `k_w >= c - s` for every worker `w` (all clocks
//! older than `c - s` visible), `k_w <= clock(w)` (nothing from the future),
//! and for its own column the exact value including the current clock's
//! increments made before the read.

use parking_lot::Mutex;
use petuum_core::batch::UpdateBatch;
use petuum_core::inproc::InProcShards;
use petuum_core::row::{AnyRow, Row};
use petuum_core::service::{FetchRequest, PushSink, RowSnapshot, ShardService};
use petuum_core::types::{ElemType, RowKind, TableSpec};
use petuum_core::TableError;
use petuum_core::{Consistency, Node, WorkerCtx};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const JOB: u64 = 1;

fn table(workers: u32) -> TableSpec {
    TableSpec {
        id: 1,
        name: "counters".into(),
        job: JOB,
        kind: RowKind::Dense,
        elem: ElemType::I64,
        columns: workers,
    }
}

fn setup(workers: u32, shards: u32) -> (Arc<InProcShards>, Arc<Node>, TableSpec) {
    let svc = Arc::new(InProcShards::new(shards));
    let spec = table(workers);
    svc.create_table(&spec).unwrap();
    svc.register_job(JOB, workers, false).unwrap();
    let node = Node::new(svc.clone(), 1 << 16);
    (svc, node, spec)
}

/// The in-process backend with slow pushes that say they pipeline, as a
/// cluster's do (each waits up to 3 ms before it applies): workers then
/// leave up to `s` clocks in flight, and every read must still meet the
/// bound. (The cluster backend itself runs this workload in
/// tests/tests/cluster.rs.)
struct SlowPushes(Arc<InProcShards>, Gate);

/// Holds pushes back while closed.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, parking_lot::Condvar)>);

impl Gate {
    fn set_closed(&self, closed: bool) {
        *self.0 .0.lock() = closed;
        self.0 .1.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.0 .0.lock();
        while *closed {
            self.0 .1.wait(&mut closed);
        }
    }
}

impl ShardService for SlowPushes {
    fn num_shards(&self) -> u32 {
        self.0.num_shards()
    }
    fn create_table(&self, spec: &TableSpec) -> Result<(), TableError> {
        self.0.create_table(spec)
    }
    fn register_job(&self, job: u64, workers: u32, det: bool) -> Result<(), TableError> {
        self.0.register_job(job, workers, det)
    }
    fn load(&self, table: u32, rows: Vec<(u64, AnyRow)>) -> Result<(), TableError> {
        self.0.load(table, rows)
    }
    fn push(&self, batches: &[UpdateBatch]) -> Result<(), TableError> {
        let b = &batches[0];
        let jitter = (b.clock * 7919 + b.worker as u64 * 104_729) % 3_000;
        std::thread::sleep(Duration::from_micros(jitter));
        self.1.pass();
        self.0.push(batches)
    }
    fn pipelines(&self) -> bool {
        true
    }
    fn fetch(&self, req: &FetchRequest) -> Result<RowSnapshot, TableError> {
        self.0.fetch(req)
    }
    fn row_ids(&self, table: u32) -> Result<Vec<u64>, TableError> {
        self.0.row_ids(table)
    }
    fn subscribe(&self, sink: std::sync::Weak<dyn PushSink>) {
        self.0.subscribe(sink)
    }
    fn abort_job(&self, job: u64, reason: &str) {
        self.0.abort_job(job, reason)
    }
    fn drop_job(&self, job: u64) {
        self.0.drop_job(job)
    }
}

/// Row 0 of the counters table as the shards hold it, once their min
/// clock is at least `min_clock`.
fn row0(svc: &dyn ShardService, min_clock: Option<u64>) -> RowSnapshot {
    svc.fetch(&FetchRequest {
        job: JOB,
        table: 1,
        row: 0,
        worker: 0,
        min_clock,
        own_clock: 0,
    })
    .unwrap()
}

/// Number of whole clocks `k` with `k (k + 1) / 2 == v`, if `v` is triangular.
fn clocks_in(v: i64) -> Option<u64> {
    let k = (((8 * v + 1) as f64).sqrt() as i64 - 1) / 2;
    (0..=2)
        .map(|d| k - 1 + d)
        .find(|&k| k >= 0 && k * (k + 1) / 2 == v)
        .map(|k| k as u64)
}

/// Runs the counter workload and checks every read. Returns the number of
/// reads checked.
fn run_counters(workers: u32, consistency: Consistency, clocks: u64, rows: u64, seed: u64) -> u64 {
    let (_svc, node, spec) = setup(workers, 4);
    counters_on(node, spec, workers, consistency, clocks, rows, seed)
}

/// [`run_counters`] with pipelined clocks ([`SlowPushes`]).
fn run_counters_pipelined(
    workers: u32,
    consistency: Consistency,
    clocks: u64,
    rows: u64,
    seed: u64,
) -> u64 {
    let (svc, _, spec) = setup(workers, 4);
    let node = Node::new(Arc::new(SlowPushes(svc, Gate::default())), 1 << 16);
    counters_on(node, spec, workers, consistency, clocks, rows, seed)
}

fn counters_on(
    node: Arc<Node>,
    spec: TableSpec,
    workers: u32,
    consistency: Consistency,
    clocks: u64,
    rows: u64,
    seed: u64,
) -> u64 {
    // Clock each worker has finished, published after its clock() returns.
    let finished: Arc<Vec<AtomicU64>> = Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect());
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        for w in 0..workers {
            let node = node.clone();
            let spec = spec.clone();
            let finished = finished.clone();
            let reads = &reads;
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (w as u64 * 7919));
                let mut ctx = WorkerCtx::new(node, JOB, w, workers, consistency, &[spec], 0);
                let t = ctx.table::<i64>("counters").unwrap();
                for c in 0..clocks {
                    for r in 0..rows {
                        ctx.inc(t, r, w, c as i64 + 1).unwrap();
                        if rng.gen_bool(0.3) {
                            std::thread::sleep(Duration::from_micros(rng.gen_range(0..300)));
                        }
                        let row = ctx.get(t, r).unwrap().to_dense(workers);
                        for (x, &v) in row.iter().enumerate() {
                            let k = clocks_in(if x == w as usize { v - (c as i64 + 1) } else { v })
                                .unwrap_or_else(|| panic!("worker {w} clock {c}: column {x} = {v} is not whole clocks"));
                            if x == w as usize {
                                assert_eq!(k, c, "worker {w} clock {c}: own writes not all visible");
                            } else {
                                if let Some(min) = consistency.required_min_clock(c) {
                                    assert!(k >= min, "worker {w} at clock {c} under {consistency:?} sees only {k} clocks of worker {x}");
                                }
                                // Nothing from the future: at most what x has sent.
                                let sent = finished[x].load(Ordering::SeqCst) + 1;
                                assert!(k <= sent, "worker {w} sees {k} clocks of worker {x}, which sent {sent}");
                            }
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    ctx.clock().unwrap();
                    finished[w as usize].store(c + 1, Ordering::SeqCst);
                }
                ctx.flush().unwrap();
            });
        }
    });
    reads.into_inner()
}

#[test]
fn bsp_reads_see_every_earlier_clock() {
    assert_eq!(run_counters(4, Consistency::Bsp, 20, 6, 1), 4 * 20 * 6);
}

#[test]
fn ssp1_and_ssp3_reads_meet_the_bound() {
    run_counters(4, Consistency::Ssp { staleness: 1 }, 20, 6, 2);
    run_counters(4, Consistency::Ssp { staleness: 3 }, 20, 6, 3);
}

#[test]
fn essp_reads_meet_the_bound_and_receive_pushes() {
    run_counters(3, Consistency::Essp { staleness: 2 }, 20, 6, 4);
}

#[test]
fn async_reads_never_lose_own_writes() {
    run_counters(4, Consistency::Async, 20, 6, 5);
}

#[test]
fn clock_returns_with_s_clocks_uncommitted_and_flush_waits_for_them() {
    let (svc, _, spec) = setup(1, 2);
    let gate = Gate::default();
    let node = Node::new(Arc::new(SlowPushes(svc.clone(), gate.clone())), 1 << 16);
    let mut ctx = WorkerCtx::new(
        node,
        JOB,
        0,
        1,
        Consistency::Ssp { staleness: 2 },
        &[spec],
        0,
    );
    let t = ctx.table::<i64>("counters").unwrap();
    gate.set_closed(true);
    // Two clocks are handed over while no push can commit: SSP(2) lets
    // `clock()` return with both in flight.
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        for c in 0..2 {
            ctx.inc(t, 0, 0, c + 1).unwrap();
            ctx.clock().unwrap();
            tx.send(c).unwrap();
        }
        ctx.flush().unwrap();
        tx.send(99).unwrap();
    });
    for c in 0..2 {
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)),
            Ok(c),
            "clock {c} waited for its commit"
        );
    }
    let before = row0(&*svc, None);
    assert_eq!(
        before.worker_clocks[0], 0,
        "nothing committed while the gate is closed"
    );
    gate.set_closed(false);
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(99));
    worker.join().unwrap();
    let after = row0(&*svc, Some(2));
    assert_eq!(after.worker_clocks[0], 2);
    assert_eq!(after.row.as_ref(), &AnyRow::I64(Row::Dense(vec![3])));
}

#[test]
fn pipelined_clocks_keep_every_bound() {
    // BSP pipelines nothing; SSP(s) and ESSP(s) leave s clocks in flight,
    // async one.
    for (i, consistency) in [
        Consistency::Bsp,
        Consistency::Ssp { staleness: 1 },
        Consistency::Ssp { staleness: 3 },
        Consistency::Essp { staleness: 2 },
        Consistency::Async,
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            run_counters_pipelined(4, consistency, 20, 6, 10 + i as u64),
            4 * 20 * 6
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn ssp_guarantee_holds_for_random_schedules(
        workers in 2u32..5,
        staleness in 0u32..4,
        clocks in 3u64..12,
        rows in 1u64..5,
        seed in any::<u64>(),
    ) {
        run_counters(workers, Consistency::Ssp { staleness }, clocks, rows, seed);
    }
}

/// Worker 0 runs ahead while worker 1 sits at clock 0. Under SSP(s), worker
/// 0's read at clock `c` must return at once for `c <= s` and block for
/// `c = s + 1` until worker 1 finishes a clock.
fn blocks_exactly_when_it_must(consistency: Consistency) {
    let (_svc, node, spec) = setup(2, 2);
    let s = consistency.staleness().unwrap_or(u32::MAX) as u64;
    let mut slow = WorkerCtx::new(
        node.clone(),
        JOB,
        1,
        2,
        consistency,
        std::slice::from_ref(&spec),
        0,
    );
    let ts = slow.table::<i64>("counters").unwrap();
    slow.inc(ts, 0, 1, 5).unwrap();
    let returned_at: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let stop_after = if consistency.staleness().is_some() {
        s + 1
    } else {
        6
    };
    let done = Arc::new(AtomicBool::new(false));
    let fast = {
        let (node, spec, returned_at, done) = (
            node.clone(),
            spec.clone(),
            returned_at.clone(),
            done.clone(),
        );
        std::thread::spawn(move || {
            let mut ctx = WorkerCtx::new(node, JOB, 0, 2, consistency, &[spec], 0);
            let t = ctx.table::<i64>("counters").unwrap();
            for c in 0..=stop_after {
                let row = ctx.get(t, 0).unwrap();
                returned_at.lock().push(c);
                // Read-my-writes: the worker's own increments of every
                // earlier clock, under every model.
                assert_eq!(row.value(0), c as i64, "{consistency:?} clock {c}");
                if c == stop_after {
                    if consistency.staleness().is_some() {
                        // This read waited for worker 1's first clock.
                        assert_eq!(row.value(1), 5, "{consistency:?}");
                    } else {
                        // Async read at once, while worker 1 has not
                        // clocked: its buffered increment is not visible.
                        assert_eq!(row.value(1), 0, "{consistency:?}");
                    }
                }
                ctx.inc(t, 0, 0, 1).unwrap();
                ctx.clock().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    if consistency.staleness().is_some() {
        // Reads at clocks 0..=s return (however loaded the machine is)...
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while (returned_at.lock().len() as u64) < s + 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // ...and the read at s + 1 stays blocked while worker 1 sits at clock 0.
        std::thread::sleep(Duration::from_millis(300));
        let seen = returned_at.lock().clone();
        assert_eq!(seen, (0..=s).collect::<Vec<_>>(), "{consistency:?}");
        assert!(!done.load(Ordering::SeqCst));
        slow.clock().unwrap();
    } else {
        // Async never blocks: the fast worker finishes alone.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(done.load(Ordering::SeqCst), "async read blocked");
        assert_eq!(
            returned_at.lock().clone(),
            (0..=stop_after).collect::<Vec<_>>()
        );
    }
    fast.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(returned_at.lock().len() as u64, stop_after + 1);
}

#[test]
fn get_blocks_exactly_when_it_must_bsp() {
    blocks_exactly_when_it_must(Consistency::Bsp);
}

#[test]
fn get_blocks_exactly_when_it_must_ssp1() {
    blocks_exactly_when_it_must(Consistency::Ssp { staleness: 1 });
}

#[test]
fn get_blocks_exactly_when_it_must_ssp3() {
    blocks_exactly_when_it_must(Consistency::Ssp { staleness: 3 });
}

#[test]
fn get_never_blocks_async() {
    blocks_exactly_when_it_must(Consistency::Async);
}

#[test]
fn essp_pushes_fresh_rows_into_the_cache() {
    let (_svc, node, spec) = setup(2, 1);
    let c = Consistency::Essp { staleness: 0 };
    let mut a = WorkerCtx::new(node.clone(), JOB, 0, 2, c, std::slice::from_ref(&spec), 0);
    let mut b = WorkerCtx::new(node.clone(), JOB, 1, 2, c, std::slice::from_ref(&spec), 0);
    let ta = a.table::<i64>("counters").unwrap();
    let tb = b.table::<i64>("counters").unwrap();
    a.get(ta, 0).unwrap(); // subscribes row 0
    let before = node.cache().stats();
    a.inc(ta, 0, 0, 1).unwrap();
    b.inc(tb, 0, 1, 1).unwrap();
    a.clock().unwrap();
    b.clock().unwrap();
    assert!(
        node.cache().stats().pushes > before.pushes,
        "min clock advanced but nothing was pushed"
    );
    // The read at clock 1 is served from the pushed copy, without a fetch.
    let fetches = a.stats().fetches;
    assert_eq!(a.get(ta, 0).unwrap().to_dense(2), vec![1, 1]);
    assert_eq!(a.stats().fetches, fetches);
}

#[test]
fn deterministic_mode_gives_identical_float_sums_across_runs() {
    // Same per-worker increments, different thread timing: in deterministic
    // mode the f32 totals must be bit-identical.
    let run = |seed: u64| -> Vec<u32> {
        let svc = Arc::new(InProcShards::new(3));
        let spec = TableSpec {
            elem: ElemType::F32,
            columns: 4,
            ..table(4)
        };
        svc.create_table(&spec).unwrap();
        svc.register_job(JOB, 4, true).unwrap();
        let node = Node::new(svc.clone(), 1024);
        std::thread::scope(|s| {
            for w in 0..4u32 {
                let (node, spec) = (node.clone(), spec.clone());
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + w as u64);
                    let mut ctx = WorkerCtx::new(node, JOB, w, 4, Consistency::Bsp, &[spec], 0);
                    let t = ctx.table::<f32>("counters").unwrap();
                    for c in 0..10u32 {
                        let v = 1.0f32 / (1 + w * 10 + c) as f32 * 1e7f32.powi((w % 2) as i32);
                        ctx.batch_inc(t, 0, &[v, -v * 0.3, v * 1e-6, 1.0]).unwrap();
                        std::thread::sleep(Duration::from_micros(rng.gen_range(0..500)));
                        ctx.clock().unwrap();
                    }
                });
            }
        });
        let snap = row0(&*svc, None);
        let petuum_core::AnyRow::F32(petuum_core::Row::Dense(v)) = &*snap.row else {
            panic!()
        };
        v.iter().map(|x| x.to_bits()).collect()
    };
    let first = run(1);
    for seed in 2..6 {
        assert_eq!(run(seed), first, "deterministic mode gave different bits");
    }
}

#[test]
fn get_entries_into_matches_get_with_and_without_own_writes() {
    // One worker, so both reads see the same shard state.
    let svc = Arc::new(InProcShards::new(2));
    let spec = TableSpec {
        kind: RowKind::Sparse,
        columns: 1000,
        ..table(1)
    };
    svc.create_table(&spec).unwrap();
    svc.register_job(JOB, 1, false).unwrap();
    let node = Node::new(svc, 1024);
    let mut ctx = WorkerCtx::new(
        node,
        JOB,
        0,
        1,
        Consistency::Ssp { staleness: 2 },
        &[spec],
        0,
    );
    let t = ctx.table::<i64>("counters").unwrap();
    let check = |ctx: &mut WorkerCtx, what: &str| {
        for r in 0..3u64 {
            let want = ctx.get(t, r).unwrap().sorted_entries();
            let mut got = Vec::new();
            ctx.get_entries_into(t, r, &mut got).unwrap();
            got.sort_unstable();
            assert_eq!(got, want, "{what}, row {r}");
        }
    };
    for c in 0..6i64 {
        check(&mut ctx, "clock start (cached copies, flushed own writes)");
        ctx.batch_inc_sparse(t, (c % 3) as u64, &[(c as u32 * 7, c + 1), (999, 1)])
            .unwrap();
        check(&mut ctx, "pending own writes");
        ctx.clock().unwrap();
    }
    let mut all = Vec::new();
    ctx.get_entries_into(t, 0, &mut all).unwrap();
    all.sort_unstable();
    assert_eq!(all, vec![(0, 1), (21, 4), (999, 2)]);
}
