//! Moving datasets between nodes: a node that needs a dataset it lacks
//! fetches its chunks from the holders (several at once, each from the
//! next holder when one fails), checks each against its hash, and becomes
//! a holder itself; a node that finds a chunk of its own copy corrupt
//! fetches that chunk again and writes it in place.

use super::store::{chunk_hash, sha256_hex, ChunkError, ChunkWriter, Store};

use super::{DatasetCommand, DatasetRecord};
use crate::meta::MetaCommand;
use crate::network::Method;
use crate::node::ClusterNode;
use crate::wire::{self, DataError, DataReply, DataRequest, KIND_CHUNK};
use bytes::Bytes;
use futures::StreamExt;
use std::path::PathBuf;
use std::time::Duration;

/// Chunks requested at once by one fetch.
const PARALLEL: usize = 8;
/// How long one chunk request may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a dataset could not be made available here.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "dataset {name} (sha256:{sha256}): no holder could send chunk {index} intact ({reason})"
    )]
    Unavailable {
        name: String,
        sha256: String,
        index: u64,
        reason: String,
    },
    #[error("dataset {name} (sha256:{sha256}): {reason}")]
    Io {
        name: String,
        sha256: String,
        reason: String,
    },
}

fn io_err(rec: &DatasetRecord, e: impl std::fmt::Display) -> FetchError {
    FetchError::Io {
        name: rec.name.clone(),
        sha256: rec.sha256.clone(),
        reason: e.to_string(),
    }
}

/// Makes sure this node has an intact copy of `rec` and returns its path:
/// a copy here is verified chunk by chunk (corrupt chunks are fetched
/// again from another holder); otherwise the dataset is fetched from the
/// holders and this node recorded as one.
pub async fn ensure(node: &ClusterNode, rec: &DatasetRecord) -> Result<PathBuf, FetchError> {
    rec.check().map_err(|e| io_err(rec, e))?;
    let store = node.datasets.clone();
    let lock = store.lock(&rec.sha256);
    let _held = lock.lock().await;
    let path = store.path(rec);
    if store.complete(rec) {
        let (s, r) = (store.clone(), rec.clone());
        let bad = tokio::task::spawn_blocking(move || s.verify(&r))
            .await
            .map_err(|e| io_err(rec, e))?
            .map_err(|e| io_err(rec, e))?;
        if bad.is_empty() {
            return Ok(path);
        }
        tracing::warn!(
            dataset = %rec.sha256, name = %rec.name, chunks = ?bad,
            "dataset copy here has corrupt chunks: fetching them again from other holders"
        );
        let manifest = manifest(node, rec).await?;
        fetch_chunks(node, rec, &manifest, &path, bad.clone()).await?;
        Store::write_manifest(&store.dir(&rec.sha256), &manifest).map_err(|e| io_err(rec, e))?;
        tracing::info!(dataset = %rec.sha256, chunks = ?bad, "corrupt chunks replaced");
        return Ok(path);
    }
    let started = std::time::Instant::now();
    let manifest = manifest(node, rec).await?;
    let dir = store.incoming_dir().map_err(|e| io_err(rec, e))?;
    let result = async {
        let path = dir.join(&rec.name);
        let file = std::fs::File::create(&path).map_err(|e| io_err(rec, e))?;
        file.set_len(rec.size).map_err(|e| io_err(rec, e))?;
        fetch_chunks(node, rec, &manifest, &path, (0..rec.chunks()).collect()).await?;
        Store::write_manifest(&dir, &manifest).map_err(|e| io_err(rec, e))?;
        store.install(&dir, &rec.sha256).map_err(|e| io_err(rec, e))
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        dataset = %rec.sha256, name = %rec.name, bytes = rec.size,
        mb_per_s = rec.size as f64 / 1e6 / secs.max(1e-9),
        "dataset fetched from its holders"
    );
    // Recorded as a holder (best effort: a copy nobody knows of is only a
    // cache, and the sweeper leaves copies of recorded datasets alone).
    let hold = MetaCommand::Dataset(DatasetCommand::Hold {
        sha256: rec.sha256.clone(),
        node: node.id(),
    });
    if let Err(e) = node.meta_command(hold).await {
        tracing::debug!(error = %e, "recording this node as a dataset holder failed");
    }
    Ok(path)
}

/// The holders to ask, this node left out.
fn sources(node: &ClusterNode, rec: &DatasetRecord) -> Vec<u64> {
    rec.holders
        .iter()
        .copied()
        .filter(|&h| h != node.id())
        .collect()
}

/// The chunk list, from the first holder whose copy matches the record.
async fn manifest(node: &ClusterNode, rec: &DatasetRecord) -> Result<Vec<u8>, FetchError> {
    let mut reason = "the dataset has no other holder".to_string();
    for h in sources(node, rec) {
        let req = DataRequest::DatasetManifest {
            record: rec.clone(),
        };
        match node.data_call(h, &req, CHUNK_TIMEOUT).await {
            Ok(DataReply::Bytes(m)) if sha256_hex(&m) == rec.chunks_sha256 => return Ok(m),
            Ok(DataReply::Bytes(_)) => {
                reason = format!("node {h} sent a chunk list that does not match")
            }
            Ok(other) => reason = format!("node {h}: unexpected reply {other:?}"),
            Err(e) => reason = format!("node {h}: {e}"),
        }
    }
    Err(FetchError::Unavailable {
        name: rec.name.clone(),
        sha256: rec.sha256.clone(),
        index: u64::MAX,
        reason,
    })
}

/// Fetches chunks `which` into `file`, verifying each; chunk i is asked of
/// holder i first (spreading the load), then of the others in turn. Each
/// chunk is checked and written on a blocking thread, several at once:
/// with direct I/O the writes of different chunks go to the disk side by
/// side (one writer thread, waiting on each write in turn, was the
/// fetch's bottleneck).
async fn fetch_chunks(
    node: &ClusterNode,
    rec: &DatasetRecord,
    manifest: &[u8],
    path: &std::path::Path,
    which: Vec<u64>,
) -> Result<(), FetchError> {
    let holders = sources(node, rec);
    let file = std::sync::Arc::new(ChunkWriter::open(path).map_err(|e| io_err(rec, e))?);
    let results = futures::stream::iter(which.into_iter().map(|i| {
        let (holders, file) = (&holders, file.clone());
        async move {
            let mut want = [0u8; 32];
            want.copy_from_slice(&manifest[i as usize * 32..][..32]);
            let (start, _) = rec.chunk_range(i);
            let mut reason = "the dataset has no other holder".to_string();
            for k in 0..holders.len() {
                let h = holders[(i as usize + k) % holders.len()];
                let b = match chunk_call(node, h, rec, i).await {
                    Ok(b) => b,
                    Err(e) => {
                        reason = format!("node {h}: {e}");
                        continue;
                    }
                };
                let file = file.clone();
                let intact = tokio::task::spawn_blocking(move || {
                    let intact = chunk_hash(&b) == want;
                    if intact {
                        file.write_at(&b, start)?;
                    }
                    Ok::<_, std::io::Error>(intact)
                })
                .await
                .map_err(|e| io_err(rec, e))?
                .map_err(|e| io_err(rec, e))?;
                if intact {
                    return Ok(());
                }
                reason = format!("node {h} sent chunk {i} damaged");
                tracing::warn!(dataset = %rec.sha256, node = h, chunk = i, "chunk arrived damaged; asking another holder");
                // The holder checks its copy of that chunk (a holder
                // serves chunks unchecked: the receiver's check is the
                // one that counts, and it is made here).
                let notice = DataRequest::DatasetDamaged {
                    record: rec.clone(),
                    index: i,
                };
                let _ = node.data_call(h, &notice, CHUNK_TIMEOUT).await;
            }
            Err(FetchError::Unavailable {
                name: rec.name.clone(),
                sha256: rec.sha256.clone(),
                index: i,
                reason,
            })
        }
    }))
    .buffer_unordered(PARALLEL)
    .collect::<Vec<_>>()
    .await;
    results.into_iter().collect::<Result<(), _>>()?;
    tokio::task::spawn_blocking(move || file.sync())
        .await
        .map_err(|e| io_err(rec, e))?
        .map_err(|e| io_err(rec, e))
}

/// Chunk `index` from holder `h` (another node: [`sources`] leaves this
/// one out), as a [`KIND_CHUNK`] call (the reply's
/// payload is the bytes alone), or as a plain data call to a holder that
/// does not know that kind (an older build).
async fn chunk_call(
    node: &ClusterNode,
    h: u64,
    rec: &DatasetRecord,
    index: u64,
) -> Result<Bytes, String> {
    let req = DataRequest::DatasetChunk {
        record: rec.clone(),
        index,
    };
    match node
        .peers
        .call(
            h,
            Method::Data,
            0,
            KIND_CHUNK,
            wire::encode(&req),
            CHUNK_TIMEOUT,
        )
        .await
    {
        Ok(b) => Ok(b),
        Err(e) if e.to_string().contains("unknown data message kind") => {
            match node.data_call(h, &req, CHUNK_TIMEOUT).await {
                Ok(DataReply::Bytes(b)) => Ok(b.into()),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Serves a chunk of this node's copy as it is on disk: the receiver
/// checks it against the chunk list and reports damage
/// ([`check_damage`]). The answer to a `DatasetChunk` sent as
/// [`KIND_CHUNK`]; see [`raw_chunk`] for the bytes alone.
pub async fn serve_chunk(
    node: &ClusterNode,
    record: DatasetRecord,
    index: u64,
) -> Result<DataReply, DataError> {
    raw_chunk(node, record, index)
        .await
        .map(|b| DataReply::Bytes(b.to_vec()))
}

/// Chunk `index` of this node's copy as it is on disk, unchecked: the
/// reply to a [`KIND_CHUNK`] message, whose payload is these bytes alone
/// (no encoding, no copy).
pub async fn raw_chunk(
    node: &ClusterNode,
    record: DatasetRecord,
    index: u64,
) -> Result<Bytes, DataError> {
    read_chunk(node, record, index, false).await
}

/// A receiver found chunk `index` of this node's copy damaged: it is
/// checked here, and a copy found corrupt is repaired at the next sweep.
pub async fn check_damage(
    node: &ClusterNode,
    record: DatasetRecord,
    index: u64,
) -> Result<DataReply, DataError> {
    read_chunk(node, record, index, true)
        .await
        .map(|_| DataReply::Ok)
}

/// Reads chunk `index` of this node's copy on a blocking thread, checked
/// against its hash or not.
async fn read_chunk(
    node: &ClusterNode,
    record: DatasetRecord,
    index: u64,
    checked: bool,
) -> Result<Bytes, DataError> {
    let (store, rec) = (node.datasets.clone(), record.clone());
    let read = tokio::task::spawn_blocking(move || {
        if checked {
            store.read_chunk(&rec, index)
        } else {
            store.read_chunk_unchecked(&rec, index)
        }
    })
    .await
    .map_err(|e| DataError::Unavailable(e.to_string()))?;
    served(node, record, read)
}

/// Serves the chunk list of this node's copy.
pub async fn serve_manifest(
    node: &ClusterNode,
    record: DatasetRecord,
) -> Result<DataReply, DataError> {
    let read = node.datasets.manifest(&record);
    served(node, record, read).map(|m| DataReply::Bytes(m.to_vec()))
}

fn served(
    node: &ClusterNode,
    record: DatasetRecord,
    read: Result<Bytes, ChunkError>,
) -> Result<Bytes, DataError> {
    match read {
        Ok(b) => Ok(b),
        Err(e) => {
            if matches!(e, ChunkError::Corrupt { .. }) {
                tracing::warn!(dataset = %record.sha256, error = %e, "a chunk of this copy is corrupt; it is repaired at the next sweep");
                node.datasets.note_corrupt(record);
            }
            Err(DataError::Unavailable(e.to_string()))
        }
    }
}
