//! The snapshot format of a shard group (docs/storage.md, "Snapshot").
//!
//! ```text
//! magic "PSNP" | version u16 | header_len u32 | header | body_len u64 | body
//!   | parts_len u64 | parts | crc32c u32
//! ```
//! Integers little-endian; header, body and parts are postcard. The crc
//! covers every byte before it. A snapshot is decoded and checked completely
//! before anything is installed.
//!
//! The parts (version 3) are what the group stored beside its state: the
//! shard's checkpoint parts and the worker blobs and models committed
//! through it. They are attached when a snapshot leaves the node
//! ([`attach_parts`]) and written to the checkpoint store when one is
//! installed; the copy a node keeps of its own snapshot has none (the
//! parts are in its checkpoint store already). Version 2 (no parts
//! section, no blob list) is still read.

use crate::error::{Result, StorageError};
use crate::image::{ShardImage, ShardImageRef};
use crate::shard_data::ShardData;
use crate::types::{LogId, StoredMembership};
use petuum_core::batch::UpdateBatch;
use petuum_core::types::{Clock, JobId, ShardId, WorkerId};
use serde::{Deserialize, Serialize};

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"PSNP";
/// The format version this build writes and reads.
pub const SNAPSHOT_VERSION: u16 = 3;
/// The oldest version this build reads.
pub const SNAPSHOT_OLDEST: u16 = 2;
const FIXED_BYTES: usize = 4 + 2 + 4 + 8 + 4;

/// What a snapshot says about itself, readable without the body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub shard: ShardId,
    pub snapshot_id: String,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// `(job, min clock, per-worker applied clocks)` of the current state.
    pub clocks: Vec<(JobId, Clock, Vec<Clock>)>,
}

#[derive(Serialize)]
struct BodyRef<'a> {
    base: ShardImageRef<'a>,
    pending: Vec<&'a UpdateBatch>,
    fences: Vec<(JobId, u64)>,
    blobs: Vec<(JobId, Clock, WorkerId)>,
}

/// The state in a snapshot: the base image and the batches above it.
#[derive(Deserialize)]
pub struct SnapshotBody {
    pub base: ShardImage,
    pub pending: Vec<UpdateBatch>,
    /// Each job's newest run on the shard (version 2).
    pub fences: Vec<(JobId, u64)>,
    /// The worker blobs committed through the group (version 3).
    pub blobs: Vec<(JobId, Clock, WorkerId)>,
}

/// A version-2 body.
#[derive(Deserialize)]
struct SnapshotBodyV2 {
    base: ShardImage,
    pending: Vec<UpdateBatch>,
    fences: Vec<(JobId, u64)>,
}

/// Which stored part of a job a [`StoredPart`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartKind {
    /// The shard's part of the checkpoint at the clock (as
    /// `CheckpointStore::load_shard_bytes` returns it).
    Shard,
    /// A worker's state at the clock, or the model (`MODEL_CLOCK`).
    Worker(WorkerId),
}

/// A part the group stored outside its state (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    pub job: JobId,
    pub clock: Clock,
    pub kind: PartKind,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Encodes a snapshot of `data`.
pub fn encode(header: &SnapshotHeader, data: &ShardData) -> Result<Vec<u8>> {
    let shard = data.shard();
    let enc = |e: postcard::Error| StorageError::Encode {
        what: "snapshot",
        shard,
        reason: e.to_string(),
    };
    let body = BodyRef {
        base: ShardImageRef {
            state: data.base(),
            tables: data.tables().collect(),
            jobs: data.jobs().cloned().collect(),
        },
        pending: data.pending().collect(),
        fences: data.fences().collect(),
        blobs: data.blobs().collect(),
    };
    let header_bytes = postcard::to_allocvec(header).map_err(enc)?;
    let body_bytes = postcard::to_allocvec(&body).map_err(enc)?;
    let mut out = Vec::with_capacity(FIXED_BYTES + header_bytes.len() + body_bytes.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&(body_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&body_bytes);
    drop(body_bytes);
    out.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks the framing and checksum and decodes the header. `shard` and
/// `key` name the snapshot in errors.
pub fn decode_header(bytes: &[u8], shard: ShardId, key: &str) -> Result<SnapshotHeader> {
    Ok(frame(bytes, shard, key)?.header)
}

/// Whether received bytes are a whole snapshot of `shard`: framing,
/// version, checksum and shard (the contents are decoded when it is
/// installed).
pub fn check_received(bytes: &[u8], shard: ShardId) -> std::result::Result<(), String> {
    frame(bytes, shard, "received")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The sections of a checked snapshot.
struct Frame<'a> {
    version: u16,
    header: SnapshotHeader,
    /// Every byte up to the end of the body.
    through_body: &'a [u8],
    body: &'a [u8],
    /// Empty in a version-2 snapshot.
    parts: &'a [u8],
}

/// Checks the framing and checksum and splits a snapshot into its sections.
fn frame<'a>(bytes: &'a [u8], shard: ShardId, key: &str) -> Result<Frame<'a>> {
    let corrupt = |reason: String| StorageError::Corrupt {
        what: "snapshot",
        shard,
        key: key.to_string(),
        reason,
    };
    if bytes.len() < FIXED_BYTES {
        return Err(corrupt(format!(
            "{} bytes is shorter than any snapshot",
            bytes.len()
        )));
    }
    if bytes[..4] != SNAPSHOT_MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if !(SNAPSHOT_OLDEST..=SNAPSHOT_VERSION).contains(&version) {
        return Err(StorageError::UnsupportedVersion {
            what: "snapshot",
            shard,
            key: key.to_string(),
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let (content, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(content);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored:08x}, computed {actual:08x} over {} bytes (truncated or altered)",
            content.len()
        )));
    }
    let header_len = u32::from_le_bytes(content[6..10].try_into().expect("4")) as usize;
    let header_end = 10usize
        .checked_add(header_len)
        .filter(|&e| e + 8 <= content.len())
        .ok_or_else(|| corrupt(format!("header length {header_len} runs past the end")))?;
    let header: SnapshotHeader = postcard::from_bytes(&content[10..header_end])
        .map_err(|e| corrupt(format!("header: {e}")))?;
    let body_len = u64::from_le_bytes(content[header_end..header_end + 8].try_into().expect("8"));
    let rest = &content[header_end + 8..];
    let (body, parts) = if version == 2 {
        if rest.len() as u64 != body_len {
            return Err(corrupt(format!(
                "body of {} bytes, header says {body_len}",
                rest.len()
            )));
        }
        (rest, &rest[rest.len()..])
    } else {
        let body_end = usize::try_from(body_len)
            .ok()
            .filter(|&b| b.checked_add(8).is_some_and(|e| e <= rest.len()))
            .ok_or_else(|| {
                corrupt(format!(
                    "body length {body_len} runs past the end ({} bytes left)",
                    rest.len()
                ))
            })?;
        let (body, tail) = rest.split_at(body_end);
        let parts_len = u64::from_le_bytes(tail[..8].try_into().expect("8"));
        let parts = &tail[8..];
        if parts.len() as u64 != parts_len {
            return Err(corrupt(format!(
                "parts of {} bytes, header says {parts_len}",
                parts.len()
            )));
        }
        (body, parts)
    };
    if header.shard != shard {
        return Err(StorageError::WrongShard {
            what: "snapshot",
            shard,
            found: header.shard,
        });
    }
    let through_body = &content[..content.len() - parts.len() - 8 * usize::from(version > 2)];
    Ok(Frame {
        version,
        header,
        through_body,
        body,
        parts,
    })
}

/// Decodes and checks a whole snapshot and rebuilds the replica state.
pub fn decode(bytes: &[u8], shard: ShardId, key: &str) -> Result<(SnapshotHeader, ShardData)> {
    let (header, data, _) = decode_with_parts(bytes, shard, key)?;
    Ok((header, data))
}

/// [`decode`], and the stored parts the snapshot carries (checked: each
/// shard part names this shard, its job and clock).
pub fn decode_with_parts(
    bytes: &[u8],
    shard: ShardId,
    key: &str,
) -> Result<(SnapshotHeader, ShardData, Vec<StoredPart>)> {
    let f = frame(bytes, shard, key)?;
    let corrupt = |what: &str, e: postcard::Error| StorageError::Corrupt {
        what: "snapshot",
        shard,
        key: key.to_string(),
        reason: format!("{what}: {e}"),
    };
    let body: SnapshotBody = if f.version == 2 {
        let b: SnapshotBodyV2 = postcard::from_bytes(f.body).map_err(|e| corrupt("body", e))?;
        SnapshotBody {
            base: b.base,
            pending: b.pending,
            fences: b.fences,
            blobs: Vec::new(),
        }
    } else {
        postcard::from_bytes(f.body).map_err(|e| corrupt("body", e))?
    };
    if body.base.shard != shard {
        return Err(StorageError::WrongShard {
            what: "snapshot body",
            shard,
            found: body.base.shard,
        });
    }
    let parts: Vec<StoredPart> = if f.parts.is_empty() {
        Vec::new()
    } else {
        postcard::from_bytes(f.parts).map_err(|e| corrupt("parts", e))?
    };
    for p in &parts {
        if p.kind == PartKind::Shard {
            crate::checkpoint::check_part_header(&p.bytes, p.job, p.clock, shard)?;
        }
    }
    let mut data = ShardData::from_parts(&body.base, body.pending, &body.fences)?;
    data.set_blobs(body.blobs);
    Ok((f.header, data, parts))
}

/// A stored snapshot with `parts` attached (replacing any it had), to send
/// to another replica. The header, state and snapshot id are unchanged.
pub fn attach_parts(
    bytes: &[u8],
    parts: &[StoredPart],
    shard: ShardId,
    key: &str,
) -> Result<Vec<u8>> {
    let f = frame(bytes, shard, key)?;
    let encoded = if parts.is_empty() {
        Vec::new()
    } else {
        postcard::to_allocvec(parts).map_err(|e| StorageError::Encode {
            what: "snapshot parts",
            shard,
            reason: e.to_string(),
        })?
    };
    if f.version != SNAPSHOT_VERSION {
        // A version-2 snapshot stored before an upgrade: sent as it is
        // (its receiver rebuilds the state; the parts stay behind).
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::with_capacity(f.through_body.len() + 8 + encoded.len() + 4);
    out.extend_from_slice(f.through_body);
    out.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
    out.extend_from_slice(&encoded);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The clocks of `data`'s current state, for a header.
pub fn clocks_of(data: &ShardData) -> Vec<(JobId, Clock, Vec<Clock>)> {
    data.jobs()
        .filter_map(|j| {
            let c = data.current().job(j.job).ok()?;
            Some((j.job, c.min_clock(), c.applied()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::StoredMembership;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            shard: 3,
            snapshot_id: "s".into(),
            last_applied: None,
            membership: StoredMembership::default(),
            clocks: vec![],
        }
    }

    /// A version-2 snapshot (no blob list, no parts section), stored by a
    /// node before an upgrade, still opens; it is sent on as it is.
    #[test]
    fn version_2_is_read() {
        let mut data = ShardData::new(3);
        data.set_blobs([(9, 4, 1)]);
        let v3 = encode(&header(), &ShardData::new(3)).unwrap();
        // v3 body of an empty blob list ends in postcard's empty-vec byte.
        let header_len = u32::from_le_bytes(v3[6..10].try_into().unwrap()) as usize;
        let body_at = 10 + header_len + 8;
        let body_len = u64::from_le_bytes(v3[body_at - 8..body_at].try_into().unwrap()) as usize;
        assert_eq!(v3[body_at + body_len - 1], 0);
        let mut v2 = v3[..body_at - 8].to_vec();
        v2[4..6].copy_from_slice(&2u16.to_le_bytes());
        v2.extend_from_slice(&((body_len - 1) as u64).to_le_bytes());
        v2.extend_from_slice(&v3[body_at..body_at + body_len - 1]);
        let crc = crc32c::crc32c(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        let (h, d, parts) = decode_with_parts(&v2, 3, "k").unwrap();
        assert_eq!(h, header());
        assert_eq!(d.blobs().count(), 0);
        assert!(parts.is_empty());
        let part = StoredPart {
            job: 9,
            clock: 4,
            kind: PartKind::Worker(1),
            bytes: vec![1, 2, 3],
        };
        assert_eq!(
            attach_parts(&v2, std::slice::from_ref(&part), 3, "k").unwrap(),
            v2
        );
        // Version 3 carries the blob list and the parts, and drops them
        // again.
        let v3 = encode(&header(), &data).unwrap();
        let sent = attach_parts(&v3, std::slice::from_ref(&part), 3, "k").unwrap();
        let (_, d, parts) = decode_with_parts(&sent, 3, "k").unwrap();
        assert_eq!(d.blobs().collect::<Vec<_>>(), vec![(9, 4, 1)]);
        assert_eq!(parts, vec![part]);
        assert_eq!(attach_parts(&sent, &[], 3, "k").unwrap(), v3);
        // A part that lies about its length is refused.
        let mut bad = sent[..sent.len() - 4].to_vec();
        let at = bad.len() - 1;
        bad.truncate(at);
        let crc = crc32c::crc32c(&bad);
        bad.extend_from_slice(&crc.to_le_bytes());
        let e = decode_with_parts(&bad, 3, "k").unwrap_err().to_string();
        assert!(e.contains("parts of"), "{e}");
    }
}
