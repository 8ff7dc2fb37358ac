//! Cluster benchmark (docs/performance.md, "Cluster"):
//!
//! 1. replicated update throughput and clock()-to-commit latency on three
//!    local `petuumd serve` nodes, beside the same workload on the embedded
//!    single-node backend (in-process shards), in the same run;
//! 2. failover: time from SIGKILL of a shard leader to the first write
//!    committed by its successor, over N kills.
//!
//! Usage: petuum-cluster-bench [CLOCKS] [KILLS]   (release build:
//! `cargo build --release --bins && target/release/petuum-cluster-bench`)
//!
//! `PETUUM_BENCH_TLS=1` runs the nodes with mutual TLS (certificates from
//! `petuumd certs`) and `PETUUM_BENCH_TLS=0` without; either way the
//! benchmark's client connects as node 1 (with TLS, table traffic needs a
//! node's certificate), so the two runs compare TLS alone.
//!
//! `PETUUM_BENCH_HTTP=1` gives every node an `http_listen` and fetches
//! each node's `/metrics` every second while the workload runs
//! (`PETUUM_BENCH_HTTP=0`: the same without), for the cost of metrics;
//! with it, the bench also prints each phase's storage steps from the
//! nodes' histograms (mean Raft commit on the leaders, log append to
//! durable, WAL fsync, apply) and the quantiles of one write's Raft commit
//! (a clock commits with the slowest of its shards' writes).

use petuum_cluster::placement::shard_group;
use petuum_core::batch::{RowUpdate, UpdateBatch};
use petuum_core::consistency::Consistency;
use petuum_core::inproc::InProcShards;
use petuum_core::row::{AnyRow, Row};
use petuum_core::service::ShardService;
use petuum_core::types::{ElemType, RowKind, TableSpec};
use petuum_core::worker::{Node, WorkerCtx};
use petuum_tests::cluster::LocalCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKERS: u32 = 2;
const COLUMNS: u32 = 1000;
/// Rows each worker increments per clock (`PETUUM_BENCH_ROWS`, default 64)
/// and shards of the cluster (`PETUUM_BENCH_SHARDS`, default 16): a
/// clock's write on a shard is `rows * workers * 4000 / shards` bytes
/// (32 KB by default), one write per shard per clock.
static ROWS_PER_CLOCK: std::sync::LazyLock<u64> =
    std::sync::LazyLock::new(|| env_or("PETUUM_BENCH_ROWS", 64));
static SHARDS: std::sync::LazyLock<u32> =
    std::sync::LazyLock::new(|| env_or("PETUUM_BENCH_SHARDS", 16) as u32);

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name} must be a positive integer")),
        Err(_) => default,
    }
}

struct Figures {
    mb_s: f64,
    batches_s: f64,
    /// Time `clock()` takes (returns early when clocks are pipelined).
    p50_ms: f64,
    p99_ms: f64,
    /// Time from `clock()` to the clock's acknowledgement (committed).
    commit_p50_ms: f64,
    commit_p99_ms: f64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Workers doing dense f32 increments under SSP(1); returns throughput and
/// clock() latency (the time clock() takes: aggregation, send, commit).
/// `compute`: time each worker spends between its increments and its
/// `clock()` (zero: as fast as the shards take it).
fn workload(service: Arc<dyn ShardService>, job: u64, clocks: u64, compute: Duration) -> Figures {
    let spec = TableSpec {
        id: job as u32,
        name: "w".into(),
        job,
        kind: RowKind::Dense,
        elem: ElemType::F32,
        columns: COLUMNS,
    };
    service.create_table(&spec).unwrap();
    service.register_job(job, WORKERS, false).unwrap();
    let node = Node::new(service, 1 << 16);
    // The workers share one process: their clocks leave it together (one
    // batch per shard per clock), unless PETUUM_BENCH_AGGREGATE=0.
    if std::env::var("PETUUM_BENCH_AGGREGATE").as_deref() != Ok("0") {
        let all: Vec<u32> = (0..WORKERS).collect();
        node.group(job, &all, Consistency::Ssp { staleness: 1 }, false);
    }
    let start = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let node = node.clone();
            let spec = spec.clone();
            std::thread::spawn(move || {
                let mut ctx = WorkerCtx::new(
                    node,
                    job,
                    w,
                    WORKERS,
                    Consistency::Ssp { staleness: 1 },
                    std::slice::from_ref(&spec),
                    0,
                );
                let t = ctx.table::<f32>("w").unwrap();
                let delta = vec![0.5f32; COLUMNS as usize];
                let mut lat = Vec::new();
                for c in 0..clocks {
                    for r in 0..*ROWS_PER_CLOCK {
                        let row = (c * 7 + r * WORKERS as u64 + w as u64) % 4096;
                        ctx.batch_inc(t, row, &delta).unwrap();
                    }
                    if !compute.is_zero() {
                        std::thread::sleep(compute);
                    }
                    let t0 = Instant::now();
                    ctx.clock().unwrap();
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                // Every clock committed before the clock stops.
                ctx.flush().unwrap();
                let commit: Vec<f64> = ctx
                    .take_commit_latencies()
                    .iter()
                    .map(|d| d.as_secs_f64() * 1e3)
                    .collect();
                (lat, commit)
            })
        })
        .collect();
    let (mut lat, mut commit) = (Vec::new(), Vec::new());
    for h in handles {
        let (l, c) = h.join().unwrap();
        lat.extend(l);
        commit.extend(c);
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = (WORKERS as u64 * clocks * *ROWS_PER_CLOCK * COLUMNS as u64 * 4) as f64;
    let batches = (WORKERS as u64 * clocks * *SHARDS as u64) as f64;
    Figures {
        mb_s: bytes / secs / 1e6,
        batches_s: batches / secs,
        p50_ms: percentile(&mut lat, 0.5),
        p99_ms: percentile(&mut lat, 0.99),
        commit_p50_ms: percentile(&mut commit, 0.5),
        commit_p99_ms: percentile(&mut commit, 0.99),
    }
}

/// MB of deltas all workers push per clock.
fn clock_mb() -> f64 {
    (WORKERS as u64 * *ROWS_PER_CLOCK * COLUMNS as u64 * 4) as f64 / 1e6
}

/// The disk's raw rate of small synced writes where the nodes keep their
/// data: `block`-byte appends to one file, each followed by fdatasync, for
/// about two seconds. Returns (MB/s, syncs/s).
fn raw_sync_rate(dir: &std::path::Path, block: usize) -> (f64, f64) {
    use std::io::Write;
    let path = dir.join("raw-sync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let buf = vec![0x5au8; block];
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        f.write_all(&buf).expect("probe write");
        f.sync_data().expect("probe fdatasync");
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    (n as f64 * block as f64 / secs / 1e6, n as f64 / secs)
}

/// CPU seconds (user + system) the nodes' processes have used so far,
/// from `/proc/<pid>/stat`: steadier than latency on a shared machine, and
/// what a node costs per clock.
fn nodes_cpu_s(c: &mut LocalCluster, nodes: u64) -> f64 {
    (1..=nodes)
        .map(|id| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.pid(id)))
                .expect("a node's /proc stat");
            stat_cpu_s(&stat).expect("a node's /proc stat").1
        })
        .sum()
}

/// The command name and CPU seconds (utime + stime) of a `/proc/.../stat`
/// line; None when it does not parse.
fn stat_cpu_s(stat: &str) -> Option<(&str, f64)> {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the whole line.
    let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((&stat[open + 1..close], ticks / tick))
}

/// The nodes' CPU seconds so far by thread name (tokio's workers,
/// `wal-sync`, RocksDB's flush and compaction threads, ...), summed over
/// the nodes: where a clock's CPU goes, without a profiler.
fn nodes_thread_cpu_s(c: &mut LocalCluster, nodes: u64) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for id in 1..=nodes {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", c.pid(id))) else {
            continue;
        };
        for t in tasks.flatten() {
            // A thread that ended meanwhile has no stat: skipped.
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            let Some((name, secs)) = stat_cpu_s(&stat) else {
                continue;
            };
            // Numbered threads of one pool count as one name.
            let name =
                name.trim_end_matches(|ch: char| ch.is_ascii_digit() || ch == ':' || ch == '-');
            *out.entry(name.to_string()).or_insert(0.0) += secs;
        }
    }
    out
}

/// CPU seconds this process (the benchmark's workers and their client)
/// has used so far.
fn own_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Bytes the nodes' processes have written to their files so far
/// (`write_bytes` of `/proc/<pid>/io`, counted as pages are dirtied: the
/// log, snapshots, RocksDB's own flushes and compactions; not the
/// sockets): set against the deltas times the replicas, what storage
/// writes beyond the log itself.
fn nodes_written_mb(c: &mut LocalCluster, nodes: u64) -> f64 {
    (1..=nodes)
        .map(|id| {
            let io = std::fs::read_to_string(format!("/proc/{}/io", c.pid(id)))
                .expect("a node's /proc io");
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .expect("io has write_bytes")
                / 1e6
        })
        .sum()
}

/// The leader of `group` as a live node sees it.
fn leader_of(client: &petuum_cluster::ClusterShards, group: u64) -> u64 {
    (1..=3)
        .find_map(|n| client.status(n).ok())
        .expect("no node answered")
        .groups
        .iter()
        .find(|g| g.group == group)
        .map(|g| g.leader)
        .expect("group not hosted")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clocks: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let kills: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let kills = if std::env::var("PETUUM_BENCH_NODES").is_ok_and(|n| n == "1") {
        0
    } else {
        kills
    };

    let embedded = workload(
        Arc::new(InProcShards::new(*SHARDS)),
        1,
        clocks,
        Duration::ZERO,
    );
    let nodes: u64 = std::env::var("PETUUM_BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    // Extra node config lines, e.g. "replicas = 1" or a [raft] table.
    let extra = std::env::var("PETUUM_BENCH_CONFIG").unwrap_or_default();
    let tls = std::env::var("PETUUM_BENCH_TLS").ok();
    let certs = tempfile::tempdir().unwrap();
    let tables = if tls.as_deref() == Some("1") {
        petuum_tests::cluster::make_certs(certs.path(), nodes)
    } else {
        Vec::new()
    };
    let http = std::env::var("PETUUM_BENCH_HTTP").ok();
    let http_ports: Vec<u16> = match http.as_deref() {
        Some("1") => (0..nodes)
            .map(|_| petuum_tests::cluster::free_port())
            .collect(),
        _ => Vec::new(),
    };
    let mut c = LocalCluster::start_with(nodes, *SHARDS, |id| {
        let listen = http_ports.get(id as usize - 1).map_or(String::new(), |p| {
            format!("http_listen = \"127.0.0.1:{p}\"\n")
        });
        format!(
            "{listen}{extra}\n{}",
            tables.get(id as usize - 1).cloned().unwrap_or_default()
        )
    });
    if let Some(h) = &http {
        println!("metrics scraped every second: {}", h == "1");
    }
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = {
        let (ports, on) = (http_ports.clone(), scraping.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while on.load(std::sync::atomic::Ordering::SeqCst) && !ports.is_empty() {
                let t = Instant::now();
                for p in &ports {
                    if petuum_tests::http_get(&format!("127.0.0.1:{p}"), "/metrics", None)
                        .is_ok_and(|r| r.0 == 200)
                    {
                        n += 1;
                    }
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
            n
        })
    };
    let client = Arc::new(match tls.as_deref() {
        Some("1") => {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let read = |f: &str| std::fs::read(certs.path().join(f)).unwrap();
            c.connect_as(
                petuum_cluster::ConnectOptions {
                    tls: Some(
                        ClientTlsConfig::new()
                            .ca_certificate(Certificate::from_pem(read("ca.pem")))
                            .identity(Identity::from_pem(read("node1.pem"), read("node1.key"))),
                    ),
                    ..Default::default()
                },
                1,
            )
        }
        Some(_) => c.connect_as(Default::default(), 1),
        None => c.connect(),
    });
    if let Some(t) = &tls {
        println!("mutual TLS between nodes and client: {}", t == "1");
    }
    let ids: Vec<u64> = (1..=nodes).collect();
    c.wait_leaders(&client, &ids, Duration::from_secs(60));
    let addrs: Vec<String> = http_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    // What the nodes spend with nothing to do (heartbeats, timers, the
    // metrics scrapes): part of every clock's CPU below at a quarter load.
    let idle0 = nodes_cpu_s(&mut c, nodes);
    std::thread::sleep(Duration::from_secs(2));
    let idle_ms_s = (nodes_cpu_s(&mut c, nodes) - idle0) * 1e3 / 2.0;
    let texts0 = petuum_tests::scrape(&addrs);
    let raft0 = petuum_tests::write_steps(&texts0);
    let cpu0 = nodes_cpu_s(&mut c, nodes);
    let wr0 = nodes_written_mb(&mut c, nodes);
    let own0 = own_cpu_s();
    let replicated = workload(client.clone(), 1, clocks, Duration::ZERO);
    let cpu1 = nodes_cpu_s(&mut c, nodes);
    let wr1 = nodes_written_mb(&mut c, nodes);
    let own1 = own_cpu_s();
    let texts1 = petuum_tests::scrape(&addrs);
    let raft1 = petuum_tests::write_steps(&texts1);
    // The same at a quarter of that load: each worker computes for four
    // times what a clock took above (the commit latency a job that
    // computes sees). Saturated, queued clocks travel together; one at a
    // time they cost more each, so half the rate is close to saturated.
    let compute = Duration::from_secs_f64(4.0 * replicated.mb_s.recip() * clock_mb());
    let threads0 = nodes_thread_cpu_s(&mut c, nodes);
    let light = workload(client.clone(), 3, clocks, compute);
    let threads1 = nodes_thread_cpu_s(&mut c, nodes);
    let cpu2 = nodes_cpu_s(&mut c, nodes);
    let wr2 = nodes_written_mb(&mut c, nodes);
    let own2 = own_cpu_s();
    let texts2 = petuum_tests::scrape(&addrs);
    let raft2 = petuum_tests::write_steps(&texts2);
    scraping.store(false, std::sync::atomic::Ordering::SeqCst);
    let scrapes = scraper.join().unwrap();
    if !http_ports.is_empty() {
        println!("{scrapes} scrapes of /metrics during the workload");
        // The leaders' own time per write (proposal to answer): what of
        // clock() to commit is Raft's; and its storage steps on every node.
        println!(
            "the nodes' write steps (mean per observation, count)\n  saturated: {}\n  quarter load: {}",
            petuum_tests::write_step_means(&raft0, &raft1),
            petuum_tests::write_step_means(&raft1, &raft2)
        );
        // A clock commits when the slowest of its shards' writes does: the
        // tail of one write's commit is the clock's median.
        let commits =
            |t: &[String]| petuum_tests::histogram_buckets(t, "petuum_raft_commit_seconds");
        let (c0, c1, c2) = (commits(&texts0), commits(&texts1), commits(&texts2));
        let q = |a: &[(f64, f64)], b: &[(f64, f64)]| {
            [0.5, 0.9, 0.96, 0.99]
                .map(|p| {
                    format!(
                        "p{:.0} <= {:.1} ms",
                        p * 100.0,
                        petuum_tests::bucket_quantile_ms(a, b, p)
                    )
                })
                .join(", ")
        };
        println!(
            "  one write's Raft commit on its leader: saturated {}; quarter load {}",
            q(&c0, &c1),
            q(&c1, &c2)
        );
        let built = |t: &[String]| petuum_tests::metric_sum(t, "petuum_raft_snapshots_built");
        println!(
            "  snapshots built: {:.0} saturated, {:.0} at a quarter load",
            built(&texts1) - built(&texts0),
            built(&texts2) - built(&texts1)
        );
    }
    // One batch per shard per worker per clock: its size is what a synced
    // append of the cluster carries.
    let block = (*ROWS_PER_CLOCK as usize * COLUMNS as usize * 4 / *SHARDS as usize).max(4096);
    let (raw_mb_s, raw_syncs) = raw_sync_rate(c.path(), block);
    println!(
        "| backend | MB/s of deltas | batches/s | clock() p50 ms | clock() p99 ms | clock() to commit p50 ms | p99 ms |\n|---|---|---|---|---|---|---|"
    );
    let light_name = format!(
        "cluster at a quarter load ({:.1} ms of compute per clock)",
        compute.as_secs_f64() * 1e3
    );
    for (name, f) in [
        ("embedded (in-process shards)", &embedded),
        ("cluster on local nodes (Raft + RocksDB)", &replicated),
        (light_name.as_str(), &light),
    ] {
        println!(
            "| {name} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            f.mb_s, f.batches_s, f.p50_ms, f.p99_ms, f.commit_p50_ms, f.commit_p99_ms
        );
    }
    println!(
        "\nthe nodes' CPU per clock at a quarter load by thread: {}",
        threads1
            .iter()
            .map(|(name, s)| (
                name,
                (s - threads0.get(name).copied().unwrap_or(0.0)) * 1e3 / clocks as f64
            ))
            .filter(|(_, ms)| *ms >= 0.05)
            .map(|(name, ms)| format!("{name} {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "the nodes' CPU time per clock ({:.2} MB of deltas): {:.1} ms saturated, {:.1} ms at a quarter load",
        clock_mb(),
        (cpu1 - cpu0) * 1e3 / clocks as f64,
        (cpu2 - cpu1) * 1e3 / clocks as f64
    );
    println!("the nodes' CPU time while idle: {idle_ms_s:.1} ms per second");
    println!(
        "the benchmark's own CPU time per clock (its workers and their client): {:.1} ms saturated, {:.1} ms at a quarter load",
        (own1 - own0) * 1e3 / clocks as f64,
        (own2 - own1) * 1e3 / clocks as f64
    );
    println!(
        "the nodes' bytes written to their files per clock: {:.2} MB saturated, {:.2} MB at a quarter load (the deltas times 3 replicas: {:.2} MB)",
        (wr1 - wr0) / clocks as f64,
        (wr2 - wr1) / clocks as f64,
        clock_mb() * 3.0
    );
    println!(
        "\nthe disk under the nodes: {raw_mb_s:.1} MB/s in {block}-byte writes each followed by fdatasync ({raw_syncs:.0} syncs/s); / 3 replicas on one disk = {:.1} MB/s; the cluster reached {:.0}% of that",
        raw_mb_s / 3.0,
        100.0 * replicated.mb_s / (raw_mb_s / 3.0)
    );

    // Failover: kill the leader of shard 0, time the first committed write.
    client.register_job(2, 1, false).unwrap();
    let spec = TableSpec {
        id: 2,
        name: "f".into(),
        job: 2,
        kind: RowKind::Dense,
        elem: ElemType::F32,
        columns: 4,
    };
    client.create_table(&spec).unwrap();
    let mut clock = 0u64;
    let mut push = |client: &petuum_cluster::ClusterShards| {
        let b = UpdateBatch {
            job: 2,
            worker: 0,
            clock,
            shard: 0,
            updates: vec![RowUpdate {
                table: 2,
                row: 0,
                delta: AnyRow::F32(Row::Dense(vec![1.0; 4])),
            }],
        };
        clock += 1;
        client.push(&[b])
    };
    let mut times = Vec::new();
    for i in 0..kills {
        push(&client).unwrap();
        let leader = leader_of(&client, shard_group(0));
        c.kill(leader);
        let t0 = Instant::now();
        push(&client).unwrap();
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        times.push(dt);
        eprintln!("kill {i}: node {leader} -> first commit after {dt:.0} ms");
        c.spawn(leader);
        // Let it rejoin and leadership settle before the next kill.
        let ids = [1, 2, 3];
        c.wait_leaders(&client, &ids, Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(2));
    }
    if times.is_empty() {
        return;
    }
    let max = times.iter().cloned().fold(0.0, f64::max);
    let p50 = percentile(&mut times, 0.5);
    let timeouts = match std::env::var("PETUUM_BENCH_CONFIG") {
        Ok(c) if c.contains("[raft]") => {
            format!("timeouts of PETUUM_BENCH_CONFIG: {}", c.replace('\n', " "))
        }
        _ => "default timeouts".to_string(),
    };
    println!("\nfailover over {kills} kills of shard 0's leader: p50 {p50:.0} ms, max {max:.0} ms ({timeouts})");

    // Graceful stop (SIGTERM: hand-off first) of shard 0's leader.
    let mut graceful = Vec::new();
    for i in 0..kills.min(10) {
        push(&client).unwrap();
        let leader = leader_of(&client, shard_group(0));
        let pid = c.pid(leader);
        let t0 = Instant::now();
        petuum_tests::cluster::signal(pid, libc::SIGTERM);
        // Until a write commits under another leader: the stopping node
        // keeps leading (and committing) until it yields, after its jobs
        // reached a checkpoint.
        loop {
            push(&client).unwrap();
            if leader_of(&client, shard_group(0)) != leader {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        graceful.push(dt);
        eprintln!("stop {i}: node {leader} (SIGTERM) -> first commit after {dt:.0} ms");
        c.wait_exit(leader, Duration::from_secs(30));
        c.spawn(leader);
        c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(2));
    }
    let max = graceful.iter().cloned().fold(0.0, f64::max);
    let p50 = percentile(&mut graceful, 0.5);
    println!("graceful stop (SIGTERM, leadership handed off) of shard 0's leader, {} stops: p50 {p50:.0} ms, max {max:.0} ms to a write committed under its successor", graceful.len());
}
