//! Table throughput against the machine's own limits, in one run.
//!
//! `cargo bench -p petuum-core --bench table`
//!
//! For dense f32 rows of 1k and 100k values, with 1 and 2 worker threads:
//! - `vector add` / `memcpy`: the physical limit, `dst += src` and a copy of
//!   the same bytes, in plain Rust on plain buffers;
//! - `batch_inc`: the worker adds a full-row delta into its op log;
//! - `batch_inc+clock`: 8 `batch_inc` per row, then `clock()`, which sends
//!   the aggregated batch to the shards and applies it there (amortised
//!   per `batch_inc`);
//! - `get`: a read served by the process cache (copy + own-write overlay).
//!
//! Each thread works on its own rows. GB/s counts the row bytes each
//! operation touches once (4 bytes per value).

use petuum_core::inproc::InProcShards;
use petuum_core::service::ShardService;
use petuum_core::types::{ElemType, RowKind, TableSpec};
use petuum_core::{Consistency, Node, WorkerCtx};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIN_TIME: Duration = Duration::from_millis(700);
const ROWS_PER_THREAD: u64 = 4;

fn rate<F: FnMut() -> u64>(mut f: F) -> f64 {
    // Returns operations per second; f runs a chunk and returns its op count.
    f(); // warm up
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed() < MIN_TIME {
        ops += f();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn parallel<F>(threads: usize, f: F) -> f64
where
    F: Fn(usize) -> f64 + Sync,
{
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn({
                    let f = &f;
                    move || f(t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

fn setup(width: u32, threads: u32) -> (Arc<Node>, TableSpec) {
    let svc = Arc::new(InProcShards::new(8));
    let spec = TableSpec {
        id: 1,
        name: "t".into(),
        job: 1,
        kind: RowKind::Dense,
        elem: ElemType::F32,
        columns: width,
    };
    svc.create_table(&spec).unwrap();
    svc.register_job(1, threads, false).unwrap();
    (Node::new(svc, 1 << 16), spec)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs benches in test mode
    // with no flag: then do a single quick pass so the code is exercised.
    let quick = !std::env::args().any(|a| a == "--bench");
    println!("| row | threads | op | Mops/s | GB/s | % of vector add |");
    println!("|---|---|---|---|---|---|");
    for width in [1_000u32, 100_000] {
        let bytes = width as f64 * 4.0;
        for threads in [1usize, 2] {
            let chunk = (4_000_000 / width as u64).max(1);
            let add = parallel(threads, |_| {
                let src = vec![1.0f32; width as usize];
                let mut dst = vec![0.0f32; width as usize];
                rate(|| {
                    for _ in 0..chunk {
                        for (d, s) in dst.iter_mut().zip(&src) {
                            *d += *s;
                        }
                        black_box(&mut dst);
                    }
                    chunk
                })
            });
            let copy = parallel(threads, |_| {
                let src = vec![1.0f32; width as usize];
                let mut dst = vec![0.0f32; width as usize];
                rate(|| {
                    for _ in 0..chunk {
                        dst.copy_from_slice(black_box(&src));
                        black_box(&mut dst);
                    }
                    chunk
                })
            });
            let (node, spec) = setup(width, threads as u32);
            let consistency = Consistency::Ssp { staleness: 2 };
            let inc = parallel(threads, |t| {
                let mut w = WorkerCtx::new(
                    node.clone(),
                    1,
                    t as u32,
                    threads as u32,
                    Consistency::Async,
                    std::slice::from_ref(&spec),
                    0,
                );
                let tb = w.table::<f32>("t").unwrap();
                let delta = vec![0.5f32; width as usize];
                let base = t as u64 * ROWS_PER_THREAD;
                rate(|| {
                    for i in 0..chunk {
                        w.batch_inc(tb, base + i % ROWS_PER_THREAD, &delta).unwrap();
                    }
                    chunk
                })
            });
            let (node, spec) = setup(width, threads as u32);
            let cycle = parallel(threads, |t| {
                let mut w = WorkerCtx::new(
                    node.clone(),
                    1,
                    t as u32,
                    threads as u32,
                    Consistency::Async,
                    std::slice::from_ref(&spec),
                    0,
                );
                let tb = w.table::<f32>("t").unwrap();
                let delta = vec![0.5f32; width as usize];
                let base = t as u64 * ROWS_PER_THREAD;
                rate(|| {
                    for _ in 0..8 {
                        for r in 0..ROWS_PER_THREAD {
                            w.batch_inc(tb, base + r, &delta).unwrap();
                        }
                    }
                    w.clock().unwrap();
                    8 * ROWS_PER_THREAD
                })
            });
            // Reads: one worker per thread at a fixed clock, so every read
            // after the first is a cache hit; the op log is empty.
            let (node, spec) = setup(width, threads as u32);
            let get = parallel(threads, |t| {
                let mut w = WorkerCtx::new(
                    node.clone(),
                    1,
                    t as u32,
                    threads as u32,
                    consistency,
                    std::slice::from_ref(&spec),
                    0,
                );
                let tb = w.table::<f32>("t").unwrap();
                let base = t as u64 * ROWS_PER_THREAD;
                let mut out = Vec::new();
                rate(|| {
                    for i in 0..chunk {
                        w.get_dense_into(tb, base + i % ROWS_PER_THREAD, &mut out)
                            .unwrap();
                        black_box(&out);
                    }
                    chunk
                })
            });
            for (name, r) in [
                ("vector add (limit)", add),
                ("memcpy (limit)", copy),
                ("batch_inc", inc),
                ("batch_inc+clock", cycle),
                ("get (cache hit)", get),
            ] {
                println!(
                    "| {}k f32 | {threads} | {name} | {:.3} | {:.2} | {:.0}% |",
                    width / 1000,
                    r / 1e6,
                    r * bytes / 1e9,
                    100.0 * r / add
                );
            }
            if quick {
                return;
            }
        }
    }
}
