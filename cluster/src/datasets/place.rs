//! Where datasets live: publishing a new one (recorded, copied to enough
//! holders, sealed) and the periodic sweep that keeps every node's copies
//! in line with the records (removed datasets deleted, corrupt copies
//! repaired, missing replicas made, abandoned uploads forgotten).

use super::fetch::ensure;
use super::store::Ingested;
use super::{DatasetCommand, DatasetRecord, CHUNK};
use crate::meta::{MetaCommand, MetaState};
use crate::node::ClusterNode;
use crate::wire::{DataError, DataRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often every node sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// An unsealed record older than this is an abandoned upload.
const STAGED_FOR: Duration = Duration::from_secs(3600);
/// A copy of a dataset absent from the records is deleted once it has been
/// absent this long (a copy is installed just after its record commits, and
/// this node's replica of the metadata may lag the leader a little).
const ABSENT_FOR: Duration = Duration::from_secs(8);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Nodes in the order they should hold a dataset (rendezvous hashing on
/// the sha256: each dataset spreads over its own nodes, and the order
/// stays when nodes are added).
pub fn preferred(sha256: &str, nodes: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<(u64, u64)> = nodes
        .into_iter()
        .map(|n| {
            let h = crc32c::crc32c(format!("{sha256}/{n}").as_bytes()) as u64;
            (h, n)
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("recording the dataset: {0}")]
    Meta(DataError),
    #[error("storing the dataset: {0}")]
    Io(std::io::Error),
    #[error("only {have} of the {need} copies needed could be made ({reasons})")]
    TooFewCopies {
        have: usize,
        need: usize,
        reasons: String,
    },
}

/// How long a dataset command waits for the metadata group (an election
/// after its leader died takes a few seconds).
const RECORD_FOR: Duration = Duration::from_secs(30);

/// Runs a dataset command (both are idempotent: staging the same record,
/// sealing a sealed dataset) on the metadata group, retried while the group
/// cannot take it (no leader, its leader unreachable) for up to
/// [`RECORD_FOR`]; a refusal is returned at once.
async fn recorded(node: &ClusterNode, cmd: DatasetCommand) -> Result<(), PublishError> {
    let mut attempts = crate::retry::Retry::META.within(RECORD_FOR).start();
    loop {
        match node.meta_command(MetaCommand::Dataset(cmd.clone())).await {
            Ok(_) => return Ok(()),
            Err(e @ DataError::Refused(_)) => return Err(PublishError::Meta(e)),
            Err(e) if attempts.expired() => return Err(PublishError::Meta(e)),
            Err(e) => {
                tracing::debug!(error = %e, "recording a dataset: the metadata group is not answering; again");
                attempts.wait().await;
            }
        }
    }
}

/// Records a dataset this node has just written whole (`ingested`), puts
/// it in place, has other nodes copy it until a majority of its replicas
/// hold it, and seals it. Returns the record as sealed.
pub async fn publish(
    node: &ClusterNode,
    ingested: Ingested,
    source: String,
) -> Result<DatasetRecord, PublishError> {
    let me = node.id();
    let record = DatasetRecord {
        sha256: ingested.sha256.clone(),
        name: ingested.name.clone(),
        size: ingested.size,
        chunk_size: CHUNK,
        chunks_sha256: ingested.chunks_sha256.clone(),
        source,
        holders: vec![me],
        ready: false,
        created_ms: now_ms(),
    };
    if let Err(e) = recorded(
        node,
        DatasetCommand::Stage {
            record: record.clone(),
        },
    )
    .await
    {
        // Not recorded: the bytes go (a client sends them again).
        let _ = std::fs::remove_dir_all(&ingested.dir);
        return Err(e);
    }
    node.datasets
        .install(&ingested.dir, &ingested.sha256)
        .map_err(PublishError::Io)?;
    // The record as the group has it now (the same bytes may have been
    // recorded before, under another name, with other holders).
    let mut rec = node
        .meta_dataset(&record.sha256)
        .await
        .ok()
        .flatten()
        .unwrap_or(record);
    if !rec.holders.contains(&me) {
        rec.holders.push(me);
    }
    node.datasets.complete(&rec);
    let placement = node.placement();
    let nodes = placement.nodes();
    let want = node.config.dataset_replicas(nodes.len());
    let need = want / 2 + 1;
    let mut reasons = Vec::new();
    if rec.holders.len() < want {
        let targets: Vec<u64> = preferred(&rec.sha256, nodes.iter().copied())
            .into_iter()
            .filter(|n| !rec.holders.contains(n))
            .collect();
        let missing = want - rec.holders.len();
        // Ask the preferred nodes first; one that fails is replaced by
        // the next.
        let mut queue = targets.into_iter();
        let mut asked: Vec<u64> = queue.by_ref().take(missing).collect();
        while !asked.is_empty() {
            let results = futures::future::join_all(asked.iter().map(|&t| {
                let req = DataRequest::DatasetPull {
                    record: rec.clone(),
                };
                // A generous bound: the copy goes at disk speed.
                let timeout = Duration::from_secs(60 + rec.size / (5 << 20));
                async move { (t, node.data_call(t, &req, timeout).await) }
            }))
            .await;
            let mut failed = 0;
            for (t, r) in results {
                match r {
                    Ok(_) => rec.holders.push(t),
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(node = t, dataset = %rec.sha256, error = %e, "copying a new dataset failed");
                        reasons.push(format!("node {t}: {e}"));
                    }
                }
            }
            asked = queue.by_ref().take(failed).collect();
        }
    }
    if rec.holders.len() < need {
        return Err(PublishError::TooFewCopies {
            have: rec.holders.len(),
            need,
            reasons: reasons.join("; "),
        });
    }
    recorded(
        node,
        DatasetCommand::Seal {
            sha256: rec.sha256.clone(),
        },
    )
    .await?;
    rec.ready = true;
    tracing::info!(dataset = %rec.sha256, name = %rec.name, bytes = rec.size, holders = ?rec.holders, "dataset stored");
    Ok(rec)
}

/// What a node's sweeps remember between rounds.
#[derive(Default)]
pub struct Sweeper {
    /// Local copies not in the records, and since when.
    absent: HashMap<String, Instant>,
}

impl Sweeper {
    /// One round on this node.
    pub async fn sweep(&mut self, node: &Arc<ClusterNode>) {
        let Ok(meta) = node.meta_active().await else {
            return;
        };
        if meta.placement.is_none() {
            return;
        }
        let store = node.datasets.clone();
        store.clean_incoming(STAGED_FOR);
        // Copies of removed datasets.
        let now = Instant::now();
        let local = store.local();
        self.absent.retain(|sha, _| local.contains(sha));
        for sha in local {
            if meta.datasets.contains_key(&sha) {
                self.absent.remove(&sha);
                continue;
            }
            let since = *self.absent.entry(sha.clone()).or_insert(now);
            if now.duration_since(since) >= ABSENT_FOR && !store.busy(&sha) {
                match store.remove(&sha) {
                    Ok(()) => tracing::info!(dataset = %sha, "dataset removed from this node"),
                    Err(e) => {
                        tracing::warn!(dataset = %sha, error = %e, "removing a dataset copy failed")
                    }
                }
                self.absent.remove(&sha);
            }
        }
        // Copies found corrupt while serving.
        for rec in store.take_corrupt() {
            if let Some(rec) = meta.datasets.get(&rec.sha256) {
                if let Err(e) = ensure(node, rec).await {
                    tracing::warn!(error = %e, "repairing a dataset copy failed");
                }
            }
        }
        self.replicate(node, &meta).await;
        if node.is_meta_leader() {
            forget_abandoned(node, &meta).await;
        }
    }

    /// Copies sealed datasets short of holders: each is copied by the
    /// first non-holders in its preferred order, so nodes do not all
    /// copy the same dataset at once.
    async fn replicate(&self, node: &Arc<ClusterNode>, meta: &MetaState) {
        let me = node.id();
        let nodes: Vec<u64> = meta.nodes.keys().copied().collect();
        let want = node.config.dataset_replicas(nodes.len());
        for rec in meta.datasets.values() {
            // Copies on members count (a removed node's do not).
            let held = rec
                .holders
                .iter()
                .filter(|h| meta.nodes.contains_key(h))
                .count();
            if !rec.ready || held >= want || rec.holders.contains(&me) {
                continue;
            }
            let mine = preferred(&rec.sha256, nodes.iter().copied())
                .into_iter()
                .filter(|n| !rec.holders.contains(n))
                .take(want - rec.holders.len())
                .any(|n| n == me);
            if mine {
                match ensure(node, rec).await {
                    Ok(_) => {
                        tracing::info!(dataset = %rec.sha256, "dataset copied here to restore its replica count")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "copying a dataset short of replicas failed")
                    }
                }
            }
        }
    }
}

/// The metadata leader forgets uploads abandoned for an hour.
async fn forget_abandoned(node: &ClusterNode, meta: &MetaState) {
    let now = now_ms();
    for rec in meta.datasets.values() {
        if !rec.ready && now.saturating_sub(rec.created_ms) > STAGED_FOR.as_millis() as u64 {
            let cmd = MetaCommand::Dataset(DatasetCommand::Remove {
                sha256: rec.sha256.clone(),
                only_staged: true,
            });
            if node.meta_command(cmd).await.is_ok() {
                tracing::info!(dataset = %rec.sha256, "abandoned upload forgotten");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preferred;

    /// Each dataset has its own order of nodes, and a node added later
    /// does not reorder the others (so copies stay where they are).
    #[test]
    fn preferred_orders_are_per_dataset_and_stable_under_growth() {
        let a = preferred(&"a".repeat(64), [1, 2, 3]);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3]);
        let grown = preferred(&"a".repeat(64), [1, 2, 3, 4]);
        let without: Vec<u64> = grown.into_iter().filter(|&n| n != 4).collect();
        assert_eq!(without, a);
        let firsts: std::collections::BTreeSet<u64> = (0..32)
            .map(|i| preferred(&format!("{i:064x}"), [1, 2, 3])[0])
            .collect();
        assert_eq!(firsts.len(), 3, "datasets spread their first copies");
    }
}
