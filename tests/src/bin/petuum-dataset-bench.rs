//! The dataset store's throughput against a plain copy of the same file on
//! the same disk (docs/performance.md, "Dataset store"), on local
//! `petuumd serve` nodes:
//!
//! - plain copy: read the file, write it to a new file, fsync it; once
//!   with the file in the page cache, once read from the disk (evicted
//!   first), as a fetch reads a holder's copy;
//! - upload, 1 copy: `petuum-client`'s upload (sent at once; the node
//!   writes, hashes and fsyncs it) to a 3-node cluster with
//!   `[datasets] replicas = 1`;
//! - upload, 2 copies: the same with `replicas = 2`: acknowledged once a
//!   second node has fetched it from the first, on this same disk;
//! - fetch: that second node's copy (chunks over gRPC, each verified
//!   where it arrives, written in place, fsynced), as the node reports it.
//!
//! With each upload, the CPU seconds per GB it cost the client and the
//! three nodes (user + system, from `/proc`): on a machine whose cores
//! the client and the nodes share, throughput is bounded by that sum.
//!
//! `petuum-dataset-bench [MIB] [RUNS]` (default 256 MiB, 3 runs), release
//! build: `cargo build --release --bins`.

use petuum_tests::cluster::{connect_client, LocalCluster};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A file of `mib` MiB of incompressible bytes (a fixed xorshift stream).
fn make_file(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
}

/// Drops a file's pages from the page cache (its bytes are on disk: it
/// was synced), so the next read of it comes from the disk.
fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: an advisory syscall on an open descriptor; no memory read.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// A plain copy of `src` (read, write, fsync); `cold`: with `src` read
/// from the disk rather than the page cache.
fn plain_copy(src: &Path, dst: &Path, cold: bool) -> f64 {
    let _ = std::fs::remove_file(dst);
    if cold {
        evict(src);
    }
    let start = Instant::now();
    std::fs::copy(src, dst).unwrap();
    std::fs::File::open(dst).unwrap().sync_all().unwrap();
    start.elapsed().as_secs_f64()
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at
    // field 3 (the state).
    let field = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf reads a constant of the system; no memory involved.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    field(14)
        .zip(field(15))
        .map_or(0.0, |(u, s)| (u + s) / tick)
}

/// Uploads `file` to a fresh 3-node cluster keeping `replicas` copies:
/// the upload's seconds, the CPU seconds it cost (client and nodes), and
/// the fetch rates (MB/s) the nodes that copied it logged.
fn upload(file: &Path, replicas: u32) -> (f64, f64, Vec<f64>) {
    let mut c = LocalCluster::start(3, 4, &format!("[datasets]\nreplicas = {replicas}"));
    c.wait_leaders(&c.connect(), &[1, 2, 3], Duration::from_secs(60));
    let ep = format!("http://{}", c.nodes[0].addr);
    let mut pids: Vec<String> = (1..=3).map(|n| c.pid(n).to_string()).collect();
    pids.push("self".into());
    let cpu = |pids: &[String]| pids.iter().map(|p| cpu_seconds(p)).sum::<f64>();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (secs, used) = rt.block_on(async {
        let mut client = connect_client(&ep).await;
        let (start, before) = (Instant::now(), cpu(&pids));
        let up = client.upload(file).await.expect("upload");
        assert!(up.sent);
        (start.elapsed().as_secs_f64(), cpu(&pids) - before)
    });
    let logs = c.logs();
    // The node's own account of the upload (receive, then sync).
    for l in logs
        .lines()
        .filter(|l| l.contains("upload received and synced"))
    {
        let field = |k: &str| {
            l.split(&format!("{k}=")[..])
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        println!(
            "  node: received in {:.3} s, synced in {:.3} s; whole upload {secs:.3} s",
            field("received_s"),
            field("synced_s")
        );
    }
    let fetches = logs
        .lines()
        .filter(|l| l.contains("dataset fetched from its holders"))
        .filter_map(|l| l.split("mb_per_s=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    (secs, used, fetches)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data.bin");
    make_file(&src, mib);
    let mb = (mib << 20) as f64 / 1e6;
    let t = Instant::now();
    petuum_client::hash_file(&src).unwrap();
    println!(
        "client-side sha256 of the file: {:.1} MB/s",
        mb / t.elapsed().as_secs_f64()
    );
    let (mut copy, mut cold, mut one, mut two, mut fetch) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut cpu1, mut cpu2) = (vec![], vec![]);
    let gb = mb / 1e3;
    for run in 0..runs {
        let cc = plain_copy(&src, &dir.path().join("copy.bin"), true);
        let c = plain_copy(&src, &dir.path().join("copy.bin"), false);
        let (u1, c1, _) = upload(&src, 1);
        let (u2, c2, f2) = upload(&src, 2);
        println!(
            "run {run}: plain copy {:.1} MB/s (source on disk: {:.1} MB/s); upload 1 copy {:.1} MB/s ({:.2} CPU s/GB); upload 2 copies {:.1} MB/s ({:.2} CPU s/GB); fetch {:?} MB/s",
            mb / c,
            mb / cc,
            mb / u1,
            c1 / gb,
            mb / u2,
            c2 / gb,
            f2.iter().map(|f| (f * 10.0).round() / 10.0).collect::<Vec<_>>()
        );
        copy.push(mb / c);
        cold.push(mb / cc);
        one.push(mb / u1);
        two.push(mb / u2);
        cpu1.push(c1 / gb);
        cpu2.push(c2 / gb);
        fetch.extend(f2);
    }
    let (c, cc, u1, u2) = (median(copy), median(cold), median(one), median(two));
    let f = median(fetch);
    println!(
        "CPU seconds per GB (client and the three nodes, median): upload 1 copy {:.2}, upload 2 copies {:.2}",
        median(cpu1),
        median(cpu2)
    );
    println!(
        "median over {runs} runs, {mib} MiB: plain copy {c:.1} MB/s, source on disk {cc:.1} MB/s | upload (1 copy) {u1:.1} MB/s = {:.0}% | fetch {f:.1} MB/s = {:.0}% ({:.0}% of the copy from disk) | upload (2 copies, one disk) {u2:.1} MB/s = {:.0}%",
        100.0 * u1 / c,
        100.0 * f / c,
        100.0 * f / cc,
        100.0 * u2 / c
    );
}
