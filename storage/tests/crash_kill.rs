//! Crash safety with a real process: a child appends and applies workload
//! entries and is killed with SIGKILL at random points; after each kill the
//! store is reopened and checked:
//! - every entry acknowledged before the kill is in the log, unaltered;
//! - the stored snapshot and every checkpoint pass their checksums;
//! - the state (snapshot + log replay) equals a replay of the workload;
//! - the checkpoints kept equal the replay's checkpoints at their clocks;
//! - every large (ingested) blob present is whole.

use petuum_storage::image::ShardImage;
use petuum_storage::{workload, NodeDb, RaftLogStore, ShardStateMachine, StorageConfig};
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KILLS: u32 = 80;
const GROUP: u64 = 1;

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_entry() {
    let bin = env!("CARGO_BIN_EXE_petuum-storage-crashloop");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5EED_C0DE);
    let started = Instant::now();
    let mut acked_max = 0u64;
    let mut appends_seen = 0u64;
    let mut blobs_checked = 0usize;
    for round in 0..KILLS {
        let mut child = Command::new(bin)
            .arg(dir.path())
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crashloop child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("child did not open its store");
        assert!(
            ready.starts_with("ready "),
            "unexpected first line {ready:?}"
        );
        let next: u64 = ready[6..].parse().unwrap();
        assert!(
            next > acked_max,
            "round {round}: child restarted at {next}, but {acked_max} was acknowledged"
        );
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..80_000)));
        child.kill().expect("SIGKILL child");
        let status = child.wait().unwrap();
        assert!(!status.success(), "child exited on its own: {status}");
        reader.join().unwrap();
        for line in rx.try_iter() {
            acked_max = acked_max.max(line.parse().expect("an acknowledged index"));
            appends_seen += 1;
        }
        blobs_checked += verify(dir.path(), acked_max, round);
    }
    assert!(
        appends_seen >= 100,
        "only {appends_seen} appends acknowledged over {KILLS} runs: the test exercised too little"
    );
    assert!(blobs_checked > 0, "no large blob was ever written");
    eprintln!(
        "{KILLS} kills, {appends_seen} appends acknowledged, last index {acked_max}, \
         {blobs_checked} blob checks, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Checks the store; returns the number of large blobs checked.
fn verify(path: &std::path::Path, acked_max: u64, round: u32) -> usize {
    let db = NodeDb::open(StorageConfig::new(path)).unwrap();
    let log = RaftLogStore::new(db.clone(), GROUP);
    let state = log.log_state().unwrap();
    let last = state.last_log_id.map_or(0, |l| l.index);
    assert!(
        last >= acked_max,
        "round {round}: log ends at {last}, but {acked_max} was acknowledged"
    );
    let first = state.last_purged_log_id.map_or(1, |l| l.index + 1);
    let entries = log.entries(first..=last).unwrap();
    assert_eq!(
        entries.len() as u64,
        last + 1 - first,
        "round {round}: hole in the log"
    );
    for e in &entries {
        assert_eq!(
            *e,
            workload::entry(e.log_id.index),
            "round {round}: entry altered"
        );
    }
    // Reopen the state machine (snapshot) and replay the log after it.
    let sm = ShardStateMachine::open(db.clone(), GROUP, workload::SHARD).unwrap();
    let applied = sm.handle().last_applied().map_or(0, |l| l.index);
    assert!(
        applied >= first - 1,
        "round {round}: snapshot at {applied} is below the purged log {first}"
    );
    sm.apply_entries(log.entries(applied + 1..=last).unwrap())
        .unwrap();
    let (expected, images) = workload::replay(last);
    sm.handle().with_replica(|r| {
        assert_eq!(r.last_applied.map(|l| l.index), Some(last));
        for state in [
            (r.data.current(), expected.current()),
            (r.data.base(), expected.base()),
        ] {
            let (got, want) = state;
            for t in workload::tables() {
                assert_eq!(
                    got.row_ids(t.id),
                    want.row_ids(t.id),
                    "round {round}: rows of table {}",
                    t.id
                );
                for row in want.row_ids(t.id) {
                    assert_eq!(got.read(t.id, row).unwrap(), want.read(t.id, row).unwrap());
                }
            }
            if last >= workload::SETUP_ENTRIES {
                assert_eq!(
                    got.job(workload::JOB).unwrap().applied(),
                    want.job(workload::JOB).unwrap().applied(),
                    "round {round}: clocks"
                );
            }
        }
    });
    // Checkpoints: at most `keep` complete ones, and the one the child may
    // have written before it was killed and could mark complete; each
    // intact and equal to the replay's.
    let cps = sm.checkpoints().list(workload::JOB).unwrap();
    assert!(
        cps.len() <= db.config().keep_checkpoints + 1,
        "round {round}: {} checkpoints kept",
        cps.len()
    );
    if let Some(newest) = images.keys().next_back() {
        assert_eq!(
            cps.last().map(|c| c.clock),
            Some(*newest),
            "round {round}: newest checkpoint missing"
        );
    }
    for cp in cps {
        let got = sm
            .checkpoints()
            .load_shard(workload::JOB, cp.clock, workload::SHARD)
            .unwrap();
        let want: ShardImage = postcard::from_bytes(&images[&cp.clock]).unwrap();
        assert_eq!(got, want, "round {round}: checkpoint at clock {}", cp.clock);
    }
    // Large blobs: each one listed is whole (ingestion is atomic).
    let blobs = sm.checkpoints().list(workload::BLOB_JOB).unwrap();
    for cp in &blobs {
        let got = sm
            .checkpoints()
            .load_worker_blob(workload::BLOB_JOB, cp.clock, 0)
            .unwrap();
        assert!(
            got == Some(workload::blob(cp.clock)),
            "round {round}: blob {} damaged",
            cp.clock
        );
    }
    blobs.len()
}
