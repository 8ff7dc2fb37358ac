//! The Raft log of one group, in the node's RocksDB (docs/storage.md).
//!
//! Entries live in `raft_log` under `group ++ index` (big-endian), each
//! postcard-encoded and checksummed; vote, committed id and last purged id
//! live in `raft_meta`. An append is one `WriteBatch`, written with a
//! synced WAL before openraft is told it is durable.

use crate::codec::{checksum, frame, unframe};
use crate::db::NodeDb;
use crate::error::{RaftStorageError, Result, StorageError};
use crate::keys::{self, CF_LOG, CF_META, META_COMMITTED, META_PURGED, META_VOTE};
use crate::metrics::GroupMetrics;
use crate::types::{Entry, LogId, ShardRequest, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::borrow::Borrow;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The Raft log of group `group`. Cheap to clone (it is also its reader;
/// clones share the entry cache).
#[derive(Clone, Debug)]
pub struct RaftLogStore {
    db: Arc<NodeDb>,
    group: u64,
    metrics: GroupMetrics,
    read_budget: Arc<AtomicUsize>,
    cache: Arc<parking_lot::Mutex<EntryCache>>,
    /// The committed log id last read or saved (`save_committed` refuses
    /// one with a lower index).
    committed: Option<LogId>,
}

/// An entry to append: owned ones move into the entry cache, borrowed
/// ones are cloned into it.
pub trait LogEntry: Borrow<Entry> {
    fn into_entry(self) -> Entry;
}

impl LogEntry for Entry {
    fn into_entry(self) -> Entry {
        self
    }
}

impl LogEntry for &Entry {
    fn into_entry(self) -> Entry {
        self.clone()
    }
}

/// Bytes (as stored) of a group's latest entries kept in memory.
pub const CACHE_BYTES: usize = 2 << 20;

/// The latest entries of a group's log as they were appended, in memory:
/// what a leader reads back right after appending (to send to each
/// follower, and to apply once committed) and a follower reads to apply.
/// Those reads then cost a clone, not a RocksDB read, a checksum and a
/// decode each.
///
/// Invariant: the cached entries are a suffix of the log as stored
/// (possibly empty), never anything the log does not hold: an append adds
/// to the cache after its write, a truncation or purge removes from the
/// cache before its write. A read is served from the cache only when the
/// cache covers the whole range it asks for (a bounded range from the
/// cache's first index on, ending at most one past its last); anything
/// else reads RocksDB, as all reads did before.
#[derive(Debug, Default)]
struct EntryCache {
    /// Consecutive entries with their stored sizes.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl EntryCache {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    /// One past the last cached index.
    fn end(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index + 1)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds entries just written at the end of the log, keeping the
    /// latest within `cap` bytes. Entries that do not follow the cached
    /// ones replace them (the cache stays consecutive).
    fn append(&mut self, new: Vec<(Entry, usize)>, cap: usize) {
        let Some((head, _)) = new.first() else { return };
        if self.end() != Some(head.log_id.index) {
            self.clear();
        }
        for (e, size) in new {
            self.bytes += size;
            self.entries.push_back((e, size));
        }
        while self.bytes > cap {
            let Some((_, size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= size;
        }
    }

    /// How many cached entries come before index `index`.
    fn before(&self, index: u64) -> usize {
        self.first().map_or(0, |first| {
            (index.saturating_sub(first) as usize).min(self.entries.len())
        })
    }

    /// Drops the entries from `index` on.
    fn truncate(&mut self, index: u64) {
        let keep = self.before(index);
        self.bytes -= self.entries.drain(keep..).map(|(_, s)| s).sum::<usize>();
    }

    /// Drops the entries up to and including `index`.
    fn purge(&mut self, index: u64) {
        let gone = self.before(index.saturating_add(1));
        self.bytes -= self.entries.drain(..gone).map(|(_, s)| s).sum::<usize>();
    }

    /// Entries `start..end` (stopping, as a replication read does, after
    /// the first that brings their stored bytes to `budget`), when the
    /// cache holds all of them; `None` when it does not.
    fn get(&self, start: u64, end: u64, budget: usize) -> Option<Vec<Entry>> {
        let (first, last_end) = (self.first()?, self.end()?);
        if start < first || end > last_end {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let from = (start - first) as usize;
        for (e, size) in self
            .entries
            .range(from..)
            .take(end.saturating_sub(start) as usize)
        {
            if bytes >= budget {
                break;
            }
            bytes += size;
            out.push(e.clone());
        }
        Some(out)
    }
}

/// `v` displayed, or "none".
fn or_none<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}

/// Default bytes of entries one replication read returns (at least one
/// entry): see [`RaftLogStore::with_read_budget`].
pub const READ_BUDGET: usize = 8 << 20;

impl RaftLogStore {
    /// The log of `group` (any id but `u64::MAX`) in `db`.
    pub fn new(db: Arc<NodeDb>, group: u64) -> Self {
        assert!(group < u64::MAX, "group id u64::MAX is reserved");
        let metrics = db.metrics().group(group);
        RaftLogStore {
            db,
            group,
            metrics,
            read_budget: Arc::new(AtomicUsize::new(READ_BUDGET)),
            cache: Default::default(),
            committed: None,
        }
    }

    /// The stored bytes of entries one replication read returns (openraft's
    /// `limited_get_log_entries`; always at least one entry), read anew at
    /// each read: the network adapts it to what an append can carry in
    /// time. Without it openraft reads `max_payload_entries` entries per
    /// append whatever their size, and a follower behind on 64 KiB load
    /// entries cost the leader 16 MiB decoded per append of which the
    /// network sent a fraction.
    pub fn with_read_budget(mut self, bytes: Arc<AtomicUsize>) -> Self {
        self.read_budget = bytes;
        self
    }

    pub fn group(&self) -> u64 {
        self.group
    }

    /// The stored vote.
    pub fn vote(&self) -> Result<Option<Vote<u64>>> {
        self.read_meta(META_VOTE)
    }

    /// Appends entries durably: one `WriteBatch`, WAL synced. Returns when
    /// they would survive a crash.
    pub fn append_entries<E: LogEntry>(
        &self,
        entries: impl IntoIterator<Item = E>,
    ) -> Result<Option<LogId>> {
        self.write_entries(entries, true)
    }

    /// Appends entries as one `WriteBatch`, syncing the WAL when `sync`;
    /// readable when this returns either way.
    #[tracing::instrument(level = "trace", skip_all, fields(group = self.group))]
    fn write_entries<E: LogEntry>(
        &self,
        entries: impl IntoIterator<Item = E>,
        sync: bool,
    ) -> Result<Option<LogId>> {
        let cf = self.db.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        let mut last = None;
        let mut cached = Vec::new();
        let mut cached_bytes = 0usize;
        for owned in entries {
            let e = owned.borrow();
            let key = keys::log_key(self.group, e.log_id.index);
            if let Some(prev) = last.as_ref().map(|l: &LogId| l.index) {
                assert_eq!(
                    prev + 1,
                    e.log_id.index,
                    "appended entries must be consecutive"
                );
            }
            let value = self.encode_framed(e, &key, entry_size_hint(e))?;
            last = Some(e.log_id);
            // Entries past the cache's size would be dropped from it at
            // once: those of a large append are not kept at all.
            cached_bytes += value.len();
            if cached_bytes <= CACHE_BYTES {
                cached.push((owned.into_entry(), value.len()));
            }
            batch.put_cf(cf, key, value);
        }
        let Some(last_id) = last else { return Ok(None) };
        self.db.write_sync(
            batch,
            sync && self.db.config().sync_writes,
            "append",
            self.group,
            &keys::show(CF_LOG, &keys::log_key(self.group, last_id.index)),
        )?;
        let mut cache = self.cache.lock();
        if cached_bytes <= CACHE_BYTES {
            cache.append(cached, CACHE_BYTES);
        } else {
            // The log's end is not in the cache: it holds nothing.
            cache.clear();
        }
        Ok(last)
    }

    /// Entries with index in `range`, in order.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>> {
        self.read_entries(range, usize::MAX, false)
    }

    /// The entries in `range` in order, stopping after the first whose
    /// stored bytes reach `budget` in total (at least one entry when the
    /// range holds any), for sending to a follower: only consecutive
    /// entries from the range's start are returned, so when the start is
    /// missing (purged) the result is empty, never a later run of entries.
    /// openraft's leader sends what this returns right after the `prev` log
    /// id it chose, so entries that do not start at `start` would give a
    /// follower a log with a gap. (`entries`, openraft's
    /// `try_get_log_entries`, returns whatever the range holds, as its
    /// storage suite requires.)
    pub fn entries_within(
        &self,
        range: impl RangeBounds<u64>,
        budget: usize,
    ) -> Result<Vec<Entry>> {
        self.read_entries(range, budget, true)
    }

    fn read_entries(
        &self,
        range: impl RangeBounds<u64>,
        budget: usize,
        from_start: bool,
    ) -> Result<Vec<Entry>> {
        // `None`: an unbounded start, which follows from the first entry.
        let bounded = match range.start_bound() {
            Bound::Included(&x) => Some(x),
            Bound::Excluded(&x) => Some(x.saturating_add(1)),
            Bound::Unbounded => None,
        };
        let start = bounded.unwrap_or(0);
        let end = match range.end_bound() {
            Bound::Included(&x) => x.checked_add(1),
            Bound::Excluded(&x) => Some(x),
            Bound::Unbounded => None,
        };
        if let (Some(_), Some(end)) = (bounded, end) {
            if let Some(hit) = self.cache.lock().get(start, end, budget) {
                return Ok(hit);
            }
        }
        let end_key = match end {
            Some(end) => keys::log_key(self.group, end).to_vec(),
            None => keys::prefix_end(self.group).to_vec(),
        };
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(end_key);
        let from = keys::log_key(self.group, start);
        let iter = self.db.raw().iterator_cf_opt(
            self.db.cf(CF_LOG),
            ro,
            rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in iter {
            if bytes >= budget {
                break;
            }
            let (k, v) = item.map_err(|source| self.rocks("read logs", &from, source))?;
            bytes += v.len();
            let entry: Entry = self.decode_framed(&k, &v, "log entry")?;
            let index = keys::log_key_index(&k).unwrap_or(u64::MAX);
            if entry.log_id.index != index {
                return Err(self.corrupt(
                    &k,
                    "log entry",
                    format!("entry {} under index {index}", entry.log_id.index),
                ));
            }
            // The index the next entry must have: the range's start for a
            // read that must begin there, else one after the last.
            let first = out
                .first()
                .map_or(bounded.filter(|_| from_start), |e: &Entry| {
                    Some(e.log_id.index)
                });
            let expected = first.map_or(index, |f| f + out.len() as u64);
            if index != expected {
                tracing::warn!(
                    group = self.group,
                    expected,
                    found = index,
                    "log read: entries do not follow from the start of the range"
                );
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// First and last log ids present, and the last purged one.
    pub fn log_state(&self) -> Result<LogState<TypeConfig>> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_lower_bound(keys::prefix(self.group).to_vec());
        ro.set_iterate_upper_bound(keys::prefix_end(self.group).to_vec());
        let mut it = self.db.raw().raw_iterator_cf_opt(self.db.cf(CF_LOG), ro);
        it.seek_to_last();
        let last = if it.valid() {
            let k = it.key().expect("valid").to_vec();
            let v = it.value().expect("valid");
            let e: Entry = self.decode_framed(&k, v, "log entry")?;
            Some(e.log_id)
        } else {
            it.status().map_err(|source| {
                self.rocks("read log state", &keys::prefix(self.group), source)
            })?;
            None
        };
        let last_purged_log_id = self.read_meta::<LogId>(META_PURGED)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    /// Deletes entries from `index` on (a conflicting suffix).
    pub fn truncate_from(&self, index: u64) -> Result<()> {
        self.cache.lock().truncate(index);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            keys::log_key(self.group, index).to_vec(),
            keys::prefix_end(self.group).to_vec(),
        );
        self.db.write(
            batch,
            "truncate",
            self.group,
            &keys::show(CF_LOG, &keys::log_key(self.group, index)),
        )
    }

    /// Deletes entries up to and including `log_id`, recording it as the
    /// last purged id in the same write.
    ///
    /// Point deletes of the entries present from the last purge on, not a
    /// range delete: one range tombstone per purge per group piled up in
    /// the log's memtable and every later read of the log re-fragmented
    /// them (`perf` on a node during `petuum-jobs-bench`).
    pub fn purge_upto(&self, log_id: LogId) -> Result<()> {
        self.cache.lock().purge(log_id.index);
        let mut batch = WriteBatch::default();
        let key = keys::meta_key(self.group, META_PURGED);
        let from = self
            .read_meta::<LogId>(META_PURGED)?
            .map_or(0, |p| p.index.saturating_add(1));
        batch.put_cf(
            self.db.cf(CF_META),
            key,
            frame(&key, self.encode(&log_id, &key)?),
        );
        let until = keys::log_key(self.group, log_id.index.saturating_add(1));
        if from <= log_id.index {
            let cf = self.db.cf(CF_LOG);
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_upper_bound(until.to_vec());
            let mut it = self.db.raw().raw_iterator_cf_opt(cf, ro);
            it.seek(keys::log_key(self.group, from));
            while it.valid() {
                batch.delete_cf(cf, it.key().expect("valid iterator has a key"));
                it.next();
            }
            it.status()
                .map_err(|source| self.rocks("purge", &until, source))?;
        }
        self.db
            .write(batch, "purge", self.group, &keys::show(CF_META, &key))
    }

    /// Saves a metadata value, syncing the WAL when `sync`.
    fn write_meta<T: Serialize>(&self, tag: u8, value: &T, sync: bool) -> Result<()> {
        let key = keys::meta_key(self.group, tag);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_META),
            key,
            frame(&key, self.encode(value, &key)?),
        );
        let sync = sync && self.db.config().sync_writes;
        self.db.write_sync(
            batch,
            sync,
            "write meta",
            self.group,
            &keys::show(CF_META, &key),
        )
    }

    fn read_meta<T: DeserializeOwned>(&self, tag: u8) -> Result<Option<T>> {
        let key = keys::meta_key(self.group, tag);
        let v = self
            .db
            .raw()
            .get_pinned_cf(self.db.cf(CF_META), key)
            .map_err(|source| self.rocks("read meta", &key, source))?;
        match v {
            None => Ok(None),
            Some(v) => Ok(Some(self.decode_framed(&key, &v, "raft metadata")?)),
        }
    }

    fn encode<T: Serialize>(&self, value: &T, key: &[u8]) -> Result<Vec<u8>> {
        postcard::to_allocvec(value).map_err(|e| StorageError::Encode {
            what: "log value",
            shard: self.group as u32,
            reason: format!("{} at {}", e, keys::show(CF_LOG, key)),
        })
    }

    /// Encodes and frames a value into one buffer sized up front, so a
    /// 1 MiB entry is not copied again by a growing `Vec`.
    fn encode_framed<T: Serialize>(&self, value: &T, key: &[u8], hint: usize) -> Result<Vec<u8>> {
        let mut v = postcard::to_io(value, Vec::with_capacity(hint + 4)).map_err(|e| {
            StorageError::Encode {
                what: "log entry",
                shard: self.group as u32,
                reason: format!("{} at {}", e, keys::show(CF_LOG, key)),
            }
        })?;
        let crc = checksum(key, &v);
        v.extend_from_slice(&crc.to_le_bytes());
        Ok(v)
    }

    fn decode_framed<T: DeserializeOwned>(
        &self,
        key: &[u8],
        value: &[u8],
        what: &'static str,
    ) -> Result<T> {
        let payload = unframe(key, value).map_err(|r| self.corrupt(key, what, r))?;
        postcard::from_bytes(payload).map_err(|e| self.corrupt(key, what, e.to_string()))
    }

    fn corrupt(&self, key: &[u8], what: &'static str, reason: String) -> StorageError {
        StorageError::Corrupt {
            what,
            shard: self.group as u32,
            key: keys::show(
                if what == "raft metadata" {
                    CF_META
                } else {
                    CF_LOG
                },
                key,
            ),
            reason,
        }
    }

    fn rocks(&self, op: &'static str, key: &[u8], source: rocksdb::Error) -> StorageError {
        StorageError::Rocks {
            op,
            group: self.group,
            key: keys::show(CF_LOG, key),
            source,
        }
    }
}

/// A close upper estimate of an entry's encoded size (a buffer's
/// capacity: the log's writes, and the append to a follower).
pub fn entry_size_hint(e: &Entry) -> usize {
    match &e.payload {
        // Values (sparse ones counted with their column), plus varint
        // tags and lengths: a quarter more covers a sparse column's varint.
        EntryPayload::Normal(ShardRequest::Batch { batch, .. }) => batch_size_hint(batch),
        EntryPayload::Normal(ShardRequest::Batches { batches, .. }) => {
            batches.iter().map(batch_size_hint).sum()
        }
        // Byte strings (worker states, checkpoint parts, metadata) and
        // loaded rows: their own size, plus the entry's fields.
        EntryPayload::Normal(r) => r.approx_bytes() + 256,
        _ => 256,
    }
}

/// A batch's share of [`entry_size_hint`].
fn batch_size_hint(b: &petuum_core::batch::UpdateBatch) -> usize {
    b.value_bytes() * 5 / 4 + 32 * b.updates.len() + 64
}

impl RaftLogReader<TypeConfig> for RaftLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        self.entries(range)
            .map_err(|e| e.into_raft(ErrorVerb::Read))
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        self.entries_within(start..end, self.read_budget.load(Ordering::Relaxed).max(1))
            .map_err(|e| e.into_raft(ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for RaftLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        self.log_state().map_err(|e| e.into_raft(ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), RaftStorageError> {
        crate::db::blocking(|| self.write_meta(META_VOTE, vote, true))
            .map_err(|e| e.into_raft(ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, RaftStorageError> {
        self.read_meta(META_VOTE)
            .map_err(|e| e.into_raft(ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        // A committed entry is in every later leader's log, so the index
        // never goes back (openraft orders log ids by term first, and would
        // take a later term's lower index as an advance, then fail to read
        // the range to apply). Refused, with what the group looked like:
        // the group stops with this error instead of a panic in its core.
        if let (Some(prev), Some(new)) = (&self.committed, &committed) {
            if new.index < prev.index {
                let last = self.log_state().ok().and_then(|s| s.last_log_id);
                let vote = self.read_meta::<Vote<u64>>(META_VOTE).ok().flatten();
                let reason = format!(
                    "the committed log id went back from {prev} to {new} (last log id {}, vote {})",
                    or_none(last),
                    or_none(vote)
                );
                tracing::error!(group = self.group, "invariant broken: {reason}");
                return Err(StorageError::Invariant {
                    group: self.group,
                    reason,
                }
                .into_raft(ErrorVerb::Write));
            }
        }
        // Not synced: a committed id lost in a crash only means fewer
        // entries re-applied at start; openraft learns it again.
        if let Some(c) = &committed {
            self.metrics.commit_index.set(c.index as i64);
        }
        self.write_meta(META_COMMITTED, &committed, false)
            .map_err(|e| e.into_raft(ErrorVerb::Write))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        let committed = self
            .read_meta::<Option<LogId>>(META_COMMITTED)
            .map_err(|e| e.into_raft(ErrorVerb::Read))?
            .flatten();
        self.committed = committed;
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Group commit: the entries are written (readable) now, and
        // openraft hears they are durable after the node's next WAL sync,
        // which covers every group's appends written meanwhile. Writes
        // reach the WAL in order, so what a sync makes durable is always a
        // prefix of each group's writes (votes, appends, truncations).
        let started = std::time::Instant::now();
        let latency = self.metrics.append_seconds.clone();
        match self.write_entries(entries, false) {
            Ok(_) => {
                self.db.after_wal_sync(Box::new(move |r| {
                    latency.observe(started.elapsed().as_secs_f64());
                    callback.log_io_completed(r.map_err(std::io::Error::other))
                }));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_raft(ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        tracing::debug!(group = self.group, ?log_id, "truncate log");
        self.truncate_from(log_id.index)
            .map_err(|e| e.into_raft(ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        tracing::debug!(group = self.group, ?log_id, "purge log");
        self.purge_upto(log_id)
            .map_err(|e| e.into_raft(ErrorVerb::Delete))
    }
}
