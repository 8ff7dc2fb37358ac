//! Storage benchmark (docs/performance.md, "Storage"): Raft log appends of
//! update batches with a synced WAL, and checkpoint write/read of a 100 MB
//! shard, each beside the raw rate of the same disk measured in the same
//! run (a plain file: write + fdatasync per batch of the same size).
//!
//! Usage: petuum-storage-bench [DIR] [SECONDS_PER_CASE]
//! (SECONDS_PER_CASE = 0 runs the checkpoint cases only.)
//! DIR must be on the disk to measure (default: $TMPDIR).

use openraft::{CommittedLeaderId, EntryPayload, LogId};
use petuum_core::batch::{RowUpdate, UpdateBatch};
use petuum_core::row::{AnyRow, Row};
use petuum_core::shard::ShardState;
use petuum_core::types::{ElemType, RowKind, TableSpec};
use petuum_storage::image::{encode_image, JobImage};
use petuum_storage::{CheckpointStore, Entry, NodeDb, RaftLogStore, ShardRequest, StorageConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROW_FLOATS: usize = 1024;
const MB: f64 = 1e6;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root: PathBuf = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let secs: f64 = args
        .get(2)
        .map(|s| s.parse().expect("SECONDS"))
        .unwrap_or(3.0);
    let dir = root.join(format!("petuum-storage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    println!(
        "# petuum-storage-bench: dir {}, {secs} s per case",
        dir.display()
    );
    println!();
    println!("| case | batch | ops/s | MB/s | raw fdatasync'd file MB/s | ratio |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let sizes: &[usize] = if secs > 0.0 {
        &[4 << 10, 64 << 10, 1 << 20]
    } else {
        &[]
    };
    for &size in sizes {
        // Interleave short slices of both so a change of load on the
        // machine hits both alike.
        let (mut raw, mut log) = (Rate::default(), Rate::default());
        let db_path = dir.join(format!("log-{size}"));
        let mut appender = Appender::new(&db_path, size);
        for _ in 0..SLICES {
            raw.add(raw_file(&dir, size, secs / SLICES as f64));
            log.add(timed(secs / SLICES as f64, || appender.append()));
        }
        drop(appender);
        std::fs::remove_dir_all(&db_path).ok();
        println!(
            "| raft append (WAL synced) | {} | {:.0} | {:.1} | {:.1} | {:.0}% |",
            human(size),
            log.ops_per_s(),
            log.mb_per_s(size),
            raw.mb_per_s(size),
            100.0 * log.mb_per_s(size) / raw.mb_per_s(size)
        );
    }
    checkpoint(&dir);
    std::fs::remove_dir_all(&dir).ok();
}

fn human(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Slices per case (alternating raw file and Raft log).
const SLICES: usize = 5;

#[derive(Default)]
struct Rate {
    ops: usize,
    secs: f64,
}

impl Rate {
    fn add(&mut self, (ops, secs): (usize, f64)) {
        self.ops += ops;
        self.secs += secs;
    }
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn mb_per_s(&self, size: usize) -> f64 {
        (self.ops * size) as f64 / self.secs / MB
    }
}

/// Plain file: write `size` bytes then fdatasync, in a loop. (ops, seconds)
fn raw_file(dir: &Path, size: usize, secs: f64) -> (usize, f64) {
    let path = dir.join(format!("raw-{size}"));
    let mut f = std::fs::File::create(&path).expect("raw file");
    let buf = vec![0x5Au8; size];
    let r = timed(secs, || {
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
    });
    drop(f);
    std::fs::remove_file(&path).ok();
    r
}

/// One-entry appends of an update batch of `size` value bytes.
struct Appender {
    log: RaftLogStore,
    entry: Entry,
}

impl Appender {
    fn new(path: &Path, size: usize) -> Self {
        let db = NodeDb::open(StorageConfig::new(path)).expect("open");
        let rows = (size / 4).div_ceil(ROW_FLOATS);
        let width = (size / 4).min(ROW_FLOATS);
        let batch = UpdateBatch {
            job: 1,
            worker: 0,
            clock: 0,
            shard: 0,
            updates: (0..rows as u64)
                .map(|r| RowUpdate {
                    table: 1,
                    row: r,
                    delta: AnyRow::F32(Row::Dense((0..width).map(|i| i as f32 * 0.5).collect())),
                })
                .collect(),
        };
        assert_eq!(batch.value_bytes(), size);
        Appender {
            log: RaftLogStore::new(db, 1),
            entry: Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 0), 0),
                payload: EntryPayload::Normal(ShardRequest::Batch { epoch: 0, batch }),
            },
        }
    }

    /// Appends the next entry: the same batch under the next index and clock.
    fn append(&mut self) {
        self.entry.log_id.index += 1;
        if let EntryPayload::Normal(ShardRequest::Batch { batch: b, .. }) = &mut self.entry.payload
        {
            b.clock = self.entry.log_id.index;
        }
        self.log.append_entries([&self.entry]).expect("append");
    }
}

/// Runs `f` until `secs` have passed (at least 3 times). (count, seconds)
fn timed(secs: f64, mut f: impl FnMut()) -> (usize, f64) {
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    let mut n = 0;
    while n < 3 || start.elapsed() < budget {
        f();
        n += 1;
    }
    (n, start.elapsed().as_secs_f64())
}

fn checkpoint(dir: &Path) {
    const BYTES: usize = 100_000_000;
    let spec = TableSpec {
        id: 1,
        name: "w".into(),
        job: 1,
        kind: RowKind::Dense,
        elem: ElemType::F32,
        columns: ROW_FLOATS as u32,
    };
    let mut state = ShardState::new(0);
    state.create_table(&spec).unwrap();
    state.register_job(1, 1, false);
    let rows = BYTES / (ROW_FLOATS * 4);
    for r in 0..rows as u64 {
        let v: Vec<f32> = (0..ROW_FLOATS)
            .map(|i| (r as f32) + i as f32 * 1e-3)
            .collect();
        state.load(1, r, AnyRow::F32(Row::Dense(v))).unwrap();
    }
    let job = JobImage {
        job: 1,
        workers: 1,
        deterministic: false,
        checkpoint_every: 0,
        requested: Default::default(),
        clock: 0,
    };
    let path = dir.join("checkpoint");
    let db = NodeDb::open(StorageConfig::new(&path)).expect("open");
    let store = CheckpointStore::new(db);
    let value_mb = (rows * ROW_FLOATS * 4) as f64 / MB;
    // Raw: the same bytes to a plain file, one write + fdatasync, then
    // read back; best of 3 like the cases below.
    let raw_buf = vec![0x5Au8; rows * ROW_FLOATS * 4];
    let raw_path = dir.join("raw-checkpoint");
    let (mut raw_write, mut raw_read) = (0.0f64, 0.0f64);
    for _ in 0..3 {
        let t = Instant::now();
        {
            let mut f = std::fs::File::create(&raw_path).unwrap();
            f.write_all(&raw_buf).unwrap();
            f.sync_data().unwrap();
        }
        raw_write = raw_write.max(value_mb / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = std::fs::read(&raw_path).unwrap();
        raw_read = raw_read.max(value_mb / t.elapsed().as_secs_f64());
        assert_eq!(back.len(), raw_buf.len());
        std::fs::remove_file(&raw_path).ok();
    }
    drop(raw_buf);

    let mut best = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for clock in 0..3u64 {
        let t = Instant::now();
        let image = encode_image(&state, vec![&spec], vec![job.clone()]).unwrap();
        let encode_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        store.write_shard(1, clock, 0, &image).unwrap();
        let write_s = t.elapsed().as_secs_f64();
        drop(image);
        let t = Instant::now();
        let img = store.load_shard(1, clock, 0).unwrap();
        let read_s = t.elapsed().as_secs_f64();
        assert_eq!(img.rows.len(), rows);
        let t = Instant::now();
        let restored = img.restore().unwrap();
        let restore_s = t.elapsed().as_secs_f64();
        assert_eq!(restored.row_ids(1).len(), rows);
        best.0 = best.0.max(value_mb / write_s);
        best.1 = best.1.max(value_mb / (encode_s + write_s));
        best.2 = best.2.max(value_mb / read_s);
        best.3 = best.3.max(value_mb / (read_s + restore_s));
    }
    println!();
    println!(
        "| checkpoint of a {value_mb:.0} MB shard (best of 3) | MB/s | raw file MB/s (best of 3) |"
    );
    println!("| --- | ---: | ---: |");
    println!(
        "| write (SST file + ingest, synced) | {:.0} | {raw_write:.0} |",
        best.0
    );
    println!("| encode + write | {:.0} | |", best.1);
    println!(
        "| read + decode (checksums checked) | {:.0} | {raw_read:.0} |",
        best.2
    );
    println!("| read + decode + rebuild ShardState | {:.0} | |", best.3);
}
