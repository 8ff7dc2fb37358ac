//! Key layout (docs/storage.md, "Key layout"). Every integer in a key is
//! big-endian so RocksDB's byte order is numeric order: iterating a group's
//! log keys visits entries in log order.

use petuum_core::types::{Clock, JobId, ShardId, WorkerId};

/// Column family of Raft log entries: `group ++ index`.
pub const CF_LOG: &str = "raft_log";
/// Column family of per-group Raft metadata: `group ++ tag`.
pub const CF_META: &str = "raft_meta";
/// Column family of each group's current snapshot: `group ++ chunk`.
pub const CF_SNAPSHOT: &str = "snapshot";
/// Column family of consistent checkpoints and worker blobs:
/// `job ++ clock ++ kind ++ id ++ chunk`.
pub const CF_CHECKPOINT: &str = "checkpoint";

/// Every column family, in open order.
pub const ALL_CFS: [&str; 4] = [CF_LOG, CF_META, CF_SNAPSHOT, CF_CHECKPOINT];

/// Tag byte of the vote in `raft_meta`.
pub const META_VOTE: u8 = 1;
/// Tag byte of the committed log id in `raft_meta`.
pub const META_COMMITTED: u8 = 2;
/// Tag byte of the last purged log id in `raft_meta`.
pub const META_PURGED: u8 = 3;
/// Tag byte of a dropped replica's tombstone in `raft_meta` (the highest
/// tag: a group whose first meta key is its tombstone has no other state).
pub const META_DROPPED: u8 = 4;

/// Kind byte of a shard-state part in `checkpoint` keys.
pub const PART_SHARD: u8 = 0;
/// Kind byte of a worker blob in `checkpoint` keys.
pub const PART_WORKER: u8 = 1;

/// `group ++ index`, 16 bytes.
pub fn log_key(group: u64, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The index part of a log key.
pub fn log_key_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(8..16)?.try_into().ok()?))
}

/// The 8-byte prefix of a group (or job).
pub fn prefix(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The first key after every key of prefix `id`. `id < u64::MAX` is
/// enforced where groups are created.
pub fn prefix_end(id: u64) -> [u8; 8] {
    debug_assert!(id < u64::MAX);
    (id + 1).to_be_bytes()
}

/// `group ++ tag`, 9 bytes.
pub fn meta_key(group: u64, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = tag;
    k
}

/// `job ++ clock`, the prefix of every part of one checkpoint.
pub fn checkpoint_prefix(job: JobId, clock: Clock) -> [u8; 16] {
    log_key(job, clock)
}

/// `job ++ clock ++ kind ++ id`, the name of one part of a checkpoint (the
/// chunks of a blob follow it).
pub fn checkpoint_part(job: JobId, clock: Clock, kind: u8, id: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(21);
    k.extend_from_slice(&checkpoint_prefix(job, clock));
    k.push(kind);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The part key of a shard's state in a checkpoint.
pub fn checkpoint_shard(job: JobId, clock: Clock, shard: ShardId) -> Vec<u8> {
    checkpoint_part(job, clock, PART_SHARD, shard)
}

/// The part key of a worker's blob in a checkpoint.
pub fn checkpoint_worker(job: JobId, clock: Clock, worker: WorkerId) -> Vec<u8> {
    checkpoint_part(job, clock, PART_WORKER, worker)
}

/// Human-readable form of a key for error messages.
pub fn show(cf: &str, key: &[u8]) -> String {
    let mut s = String::with_capacity(cf.len() + 1 + key.len() * 2);
    s.push_str(cf);
    s.push(':');
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_in_log_order_within_and_across_groups() {
        let mut keys = [
            log_key(2, 0),
            log_key(1, 256),
            log_key(1, 1),
            log_key(1, u64::MAX - 1),
            log_key(1, 255),
        ];
        keys.sort();
        let decoded: Vec<(u64, u64)> = keys
            .iter()
            .map(|k| {
                (
                    u64::from_be_bytes(k[..8].try_into().unwrap()),
                    log_key_index(k).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            decoded,
            vec![(1, 1), (1, 255), (1, 256), (1, u64::MAX - 1), (2, 0)]
        );
        assert!(prefix(1).as_slice() < log_key(1, 0).as_slice());
        assert!(log_key(1, u64::MAX).as_slice() < prefix_end(1).as_slice());
    }

    #[test]
    fn checkpoint_parts_group_under_job_then_clock() {
        let a = checkpoint_shard(7, 9, 3);
        let b = checkpoint_worker(7, 9, 0);
        let c = checkpoint_shard(7, 10, 0);
        assert!(a < b && b < c);
        assert!(a.starts_with(&checkpoint_prefix(7, 9)));
    }
}
