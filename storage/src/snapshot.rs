//! The snapshot format of a shard group (docs/storage.md, "Snapshot").
//!
//! ```text
//! magic "PSNP" | version u16 | header_len u32 | header | body_len u64 | body | crc32c u32
//! ```
//! Integers little-endian; header and body are postcard. The crc covers
//! every byte before it. A snapshot is decoded and checked completely before
//! anything is installed.

use crate::error::{Result, StorageError};
use crate::image::{ShardImage, ShardImageRef};
use crate::shard_data::ShardData;
use crate::types::{LogId, StoredMembership};
use petuum_core::batch::UpdateBatch;
use petuum_core::types::{Clock, JobId, ShardId};
use serde::{Deserialize, Serialize};

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"PSNP";
/// The format version this build writes and reads.
pub const SNAPSHOT_VERSION: u16 = 2;
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
}

/// The state in a snapshot: the base image and the batches above it.
#[derive(Deserialize)]
pub struct SnapshotBody {
    pub base: ShardImage,
    pub pending: Vec<UpdateBatch>,
    /// Each job's newest run on the shard (version 2).
    pub fences: Vec<(JobId, u64)>,
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
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks the framing and checksum and decodes the header. `shard` and
/// `key` name the snapshot in errors.
pub fn decode_header<'a>(
    bytes: &'a [u8],
    shard: ShardId,
    key: &str,
) -> Result<(SnapshotHeader, &'a [u8])> {
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
    if version != SNAPSHOT_VERSION {
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
    let body = &content[header_end + 8..];
    if body.len() as u64 != body_len {
        return Err(corrupt(format!(
            "body of {} bytes, header says {body_len}",
            body.len()
        )));
    }
    if header.shard != shard {
        return Err(StorageError::WrongShard {
            what: "snapshot",
            shard,
            found: header.shard,
        });
    }
    Ok((header, body))
}

/// Decodes and checks a whole snapshot and rebuilds the replica state.
pub fn decode(bytes: &[u8], shard: ShardId, key: &str) -> Result<(SnapshotHeader, ShardData)> {
    let (header, body) = decode_header(bytes, shard, key)?;
    let body: SnapshotBody = postcard::from_bytes(body).map_err(|e| StorageError::Corrupt {
        what: "snapshot",
        shard,
        key: key.to_string(),
        reason: format!("body: {e}"),
    })?;
    if body.base.shard != shard {
        return Err(StorageError::WrongShard {
            what: "snapshot body",
            shard,
            found: body.base.shard,
        });
    }
    let data = ShardData::from_parts(&body.base, body.pending, &body.fences)?;
    Ok((header, data))
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
