//! Elastic membership benchmark (docs/performance.md, "Elastic
//! membership"): on three local `petuumd serve` nodes holding MB of shard
//! state (dense f32 rows, 3 replicas each), while a workload clocks:
//!
//! 1. a node is SIGKILLed for good and a new empty node joins; the bench
//!    reports the time from the node being declared dead (`down_after` =
//!    3 s after the kill) to every group being back at 3 replicas on the
//!    live members;
//! 2. the workload's clocks/s before the kill (once steady: two 5 s windows
//!    within 10%) and while the replicas move.
//!
//! Usage: petuum-elastic-bench [MB ...]   (default: 100; release build:
//! `cargo build --release --bins`)

use petuum_core::consistency::Consistency;
use petuum_core::row::{AnyRow, Row};
use petuum_core::service::ShardService;
use petuum_core::types::{ElemType, RowKind, TableSpec};
use petuum_core::worker::{Node, WorkerCtx};
use petuum_tests::cluster::{wait_settled, LocalCluster};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SHARDS: u32 = 16;
const COLUMNS: u32 = 4096;
const DOWN_AFTER_S: u64 = 3;

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("MB as an integer"))
        .collect();
    let sizes = if sizes.is_empty() { vec![100] } else { sizes };
    println!(
        "| shard state | declared dead -> 3 replicas again | workload before | while moving |"
    );
    println!("|---|---|---|---|");
    for mb in sizes {
        let r = run(mb);
        println!(
            "| {mb} MB | {:.1} s | {:.1} clocks/s | {:.1} clocks/s ({:+.0}%) |",
            r.restore_s,
            r.before,
            r.during,
            (r.during / r.before - 1.0) * 100.0
        );
    }
}

struct Result {
    restore_s: f64,
    before: f64,
    during: f64,
}

fn run(mb: u64) -> Result {
    let extra = format!("down_after = \"{DOWN_AFTER_S}s\"");
    let mut c = LocalCluster::start(3, SHARDS, &extra);
    let client = Arc::new(c.connect());
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    // The state: `mb` MB of dense rows in table 1 (job 1).
    let state = TableSpec {
        id: 1,
        name: "state".into(),
        job: 1,
        kind: RowKind::Dense,
        elem: ElemType::F32,
        columns: COLUMNS,
    };
    client.create_table(&state).unwrap();
    client.register_job(1, 1, false).unwrap();
    let rows = mb * (1 << 20) / (COLUMNS as u64 * 4);
    let started = Instant::now();
    for first in (0..rows).step_by(64) {
        let chunk: Vec<(u64, AnyRow)> = (first..(first + 64).min(rows))
            .map(|r| (r, AnyRow::F32(Row::Dense(vec![r as f32; COLUMNS as usize]))))
            .collect();
        client.load(1, chunk).unwrap();
    }
    eprintln!(
        "elastic-bench: {mb} MB loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The workload: one worker, SSP(1), 64 rows of 1000 floats per clock.
    let work = TableSpec {
        id: 2,
        name: "w".into(),
        job: 2,
        kind: RowKind::Dense,
        elem: ElemType::F32,
        columns: 1000,
    };
    client.create_table(&work).unwrap();
    client.register_job(2, 1, false).unwrap();
    let clocks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (node, clocks, stop) = (
            Node::new(client.clone() as Arc<dyn ShardService>, 1 << 16),
            clocks.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let mut ctx = WorkerCtx::new(
                node,
                2,
                0,
                1,
                Consistency::Ssp { staleness: 1 },
                std::slice::from_ref(&work),
                0,
            );
            let t = ctx.table::<f32>("w").unwrap();
            let delta = vec![0.5f32; 1000];
            let mut c = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for r in 0..64 {
                    ctx.batch_inc(t, (c * 7 + r) % 4096, &delta).unwrap();
                }
                ctx.clock().unwrap();
                c += 1;
                clocks.store(c, Ordering::SeqCst);
            }
            ctx.flush().unwrap();
        })
    };
    let rate = |from: (Instant, u64)| {
        let now = clocks.load(Ordering::SeqCst);
        (now - from.1) as f64 / from.0.elapsed().as_secs_f64()
    };
    // "Before": the workload's rate once it is steady. Right after a big
    // load the nodes are still compacting it and the rate climbs for a
    // while; the baseline is the first 5 s window within 10% of the one
    // before it (at most two minutes of waiting).
    std::thread::sleep(Duration::from_secs(2));
    let window = || {
        let t = (Instant::now(), clocks.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_secs(5));
        rate(t)
    };
    let waiting = Instant::now();
    let mut before = window();
    loop {
        let next = window();
        let steady = (next - before).abs() <= 0.1 * before.max(next);
        before = next;
        if steady || waiting.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    // Node 3 is gone for good; node 4 joins empty.
    c.kill(3);
    let killed = Instant::now();
    assert_eq!(c.join(&extra), 4);
    let dead_at = killed + Duration::from_secs(DOWN_AFTER_S);
    while Instant::now() < dead_at {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = (Instant::now(), clocks.load(Ordering::SeqCst));
    wait_settled(&c, &[1, 2, 4], 3, Duration::from_secs(3600));
    let restore_s = dead_at.elapsed().as_secs_f64();
    let during = rate(t);
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();
    eprintln!("elastic-bench: {mb} MB: back at 3 replicas {restore_s:.1} s after node 3 was declared dead");
    Result {
        restore_s,
        before,
        during,
    }
}
