//! Child process of the crash test (storage/tests/crash_kill.rs): appends
//! workload entries to a RocksDB Raft log and applies them, forever, until
//! it is killed. Prints `ready <next index>` once open, then the last index
//! of every append as soon as the append is durable (WAL synced). Every so
//! often it stores a snapshot, purges the log below it and stores a large
//! worker blob (written by SST ingestion). The workload has one shard, so
//! each checkpoint is complete once its part is written: the loop says so
//! (`set_complete`) after each apply, and retention prunes the older ones.
//!
//! Usage: petuum-storage-crashloop DIR SEED

use petuum_storage::{workload, NodeDb, RaftLogStore, ShardStateMachine, StorageConfig};
use rand::{Rng, SeedableRng};
use std::io::Write;

/// Raft group of the workload.
const GROUP: u64 = 1;
/// Store a snapshot about every this many entries.
const SNAPSHOT_EVERY: u64 = 40;
/// Entries kept below a snapshot when purging.
const KEEP_BELOW_SNAPSHOT: u64 = 10;
/// Bound on the loop (never reached in the test: it is killed first).
const MAX_INDEX: u64 = 10_000_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: petuum-storage-crashloop DIR SEED");
        std::process::exit(2);
    }
    let seed: u64 = args[2].parse().expect("SEED is a u64");
    if let Err(e) = run(&args[1], seed) {
        eprintln!("crashloop: {e}");
        std::process::exit(1);
    }
}

fn run(dir: &str, seed: u64) -> Result<(), petuum_storage::StorageError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let db = NodeDb::open(StorageConfig::new(dir))?;
    let log = RaftLogStore::new(db.clone(), GROUP);
    let sm = ShardStateMachine::open(db, GROUP, workload::SHARD)?;
    // Catch up: everything in the log counts as committed here.
    let state = log.log_state()?;
    let last = state.last_log_id.map_or(0, |l| l.index);
    let applied = sm.handle().last_applied().map_or(0, |l| l.index);
    sm.apply_entries(log.entries(applied + 1..=last)?)?;
    confirm(&sm)?;
    let mut next = last + 1;
    let out = std::io::stdout();
    writeln!(out.lock(), "ready {next}").expect("stdout");
    let mut last_snapshot = applied;
    while next < MAX_INDEX {
        let n: u64 = rng.gen_range(1..=8);
        let entries: Vec<_> = (next..next + n).map(workload::entry).collect();
        log.append_entries(entries.clone())?;
        {
            let mut o = out.lock();
            writeln!(o, "{}", next + n - 1).expect("stdout");
            o.flush().expect("stdout");
        }
        sm.apply_entries(entries)?;
        confirm(&sm)?;
        next += n;
        if next > last_snapshot + SNAPSHOT_EVERY {
            let (meta, _) = sm.build_and_store_snapshot()?;
            let at = meta.last_log_id.expect("applied entries");
            if at.index > KEEP_BELOW_SNAPSHOT {
                let purge = workload::entry(at.index - KEEP_BELOW_SNAPSHOT).log_id;
                log.purge_upto(purge)?;
            }
            last_snapshot = at.index;
            // A large blob (SST ingestion path), killed mid-write sometimes.
            let cps = sm.checkpoints();
            cps.put_worker_blob(workload::BLOB_JOB, at.index, 0, &workload::blob(at.index))?;
            cps.set_complete(workload::BLOB_JOB, at.index)?;
        }
    }
    Ok(())
}

/// Marks the newest checkpoint of the workload's job complete.
fn confirm(sm: &ShardStateMachine) -> Result<(), petuum_storage::StorageError> {
    let cps = sm.checkpoints();
    if let Some(clock) = cps.latest(workload::JOB, workload::SHARD)? {
        cps.set_complete(workload::JOB, clock)?;
    }
    Ok(())
}
