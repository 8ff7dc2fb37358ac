//! ESSP in cluster mode: long polls that push fresh rows to the
//! subscribed caches as each shard's min clock advances.

use super::ClusterShards;
use crate::network::{Method, Peers};
use crate::placement::shard_group;
use crate::retry::Retry;
use crate::wire::{self, DataError, DataReply, DataRequest, KIND_DATA};
use parking_lot::Mutex;
use petuum_core::service::PushSink;
use petuum_core::types::{Clock, JobId, RowId, ShardId, TableId};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

impl ClusterShards {
    /// ESSP in cluster mode: one long poll per (shard, job) that returns
    /// the subscribed rows each time the shard's min clock advances, pushed
    /// into the subscribed sinks (the process cache).
    pub(super) fn start_watchers(&self) {
        let peers = self.peers.clone();
        let sinks = self.sinks.clone();
        let jobs = self.jobs.clone();
        let placement = self.placement.clone();
        let local = self.local;
        let timeout = self.opts.rpc_timeout;
        let epochs = self.epochs.clone();
        let spans = self.spans.clone();
        self.rt.spawn(async move {
            let mut running: HashMap<(ShardId, JobId), tokio::task::JoinHandle<()>> =
                HashMap::new();
            // Runs until the connection (and with it this runtime) is dropped.
            loop {
                let live: Vec<JobId> = jobs.lock().iter().copied().collect();
                running.retain(|(_, j), h| live.contains(j) && !h.is_finished());
                for &job in &live {
                    let total = placement.read().shards();
                    for shard in super::span_of(&spans, job, total).iter() {
                        if running.contains_key(&(shard, job)) {
                            continue;
                        }
                        let epoch = epochs.lock().get(&job).copied().unwrap_or(0);
                        let task = watch_shard(
                            epoch,
                            peers.clone(),
                            sinks.clone(),
                            jobs.clone(),
                            placement.clone(),
                            local,
                            shard,
                            job,
                            timeout,
                        );
                        running.insert((shard, job), tokio::spawn(task));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch_shard(
    epoch: u64,
    peers: Arc<Peers>,
    sinks: Arc<Mutex<Vec<Weak<dyn PushSink>>>>,
    jobs: Arc<Mutex<BTreeSet<JobId>>>,
    placement: Arc<parking_lot::RwLock<Arc<crate::placement::Placement>>>,
    local: u64,
    shard: ShardId,
    job: JobId,
    timeout: Duration,
) {
    let mut replicas = placement.read().replicas_of(shard);
    let mut i = replicas.iter().position(|&n| n == local).unwrap_or(0);
    let mut after: Clock = 0;
    let mut attempts = Retry::LEADER.start();
    while jobs.lock().contains(&job) {
        let live: Vec<Arc<dyn PushSink>> = {
            let mut s = sinks.lock();
            s.retain(|w| w.strong_count() > 0);
            s.iter().filter_map(Weak::upgrade).collect()
        };
        let mut rows: Vec<(TableId, RowId)> =
            live.iter().flat_map(|s| s.subscribed(shard, job)).collect();
        rows.sort_unstable();
        rows.dedup();
        if rows.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let wait_ms = 1000;
        let req = DataRequest::Watch {
            shard,
            job,
            epoch,
            after,
            rows,
            wait_ms,
        };
        let node = replicas[i];
        let r = peers
            .call(
                node,
                Method::Data,
                shard_group(shard),
                KIND_DATA,
                wire::encode(&req),
                timeout + Duration::from_millis(wait_ms),
            )
            .await;
        let reply = r
            .map_err(|e| e.to_string())
            .and_then(|b| wire::decode::<Result<DataReply, DataError>>(&b, "watch reply"));
        match reply {
            Ok(Ok(DataReply::Rows { min_clock, rows })) => {
                after = min_clock;
                for s in &live {
                    s.push(shard, rows.clone());
                }
                attempts.progressed();
            }
            Ok(Err(DataError::NotYet)) => attempts.progressed(),
            _ => {
                // The replicas may have moved: follow the placement.
                replicas = placement.read().replicas_of(shard);
                i = (i + 1) % replicas.len();
                attempts.wait().await;
            }
        }
    }
}
