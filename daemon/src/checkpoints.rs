//! Consistent checkpoints of an embedded job: each shard's image of the job
//! and each worker's state go to the node's RocksDB (`petuum-storage`), and
//! only when every part is synced does the job record name the checkpoint
//! complete (`jobs/<id>/checkpoint`, written atomically). Resume reads the
//! newest complete checkpoint back.

use anyhow::Context;
use petuum_core::algorithm::BoxError;
use petuum_core::inproc::InProcShards;
use petuum_core::runner::{Checkpointer, Resume};
use petuum_core::types::{Clock, JobId};
use petuum_storage::image::encode_image;
use petuum_storage::{CheckpointStore, JobImage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes checkpoints of one embedded job.
pub struct EmbeddedCheckpointer {
    pub shards: Arc<InProcShards>,
    pub store: CheckpointStore,
    pub job_dir: PathBuf,
    pub workers: u32,
    pub deterministic: bool,
    pub every: Clock,
}

impl Checkpointer for EmbeddedCheckpointer {
    fn checkpoint(
        &self,
        job: JobId,
        clock: Clock,
        worker_states: &[Vec<u8>],
    ) -> Result<(), BoxError> {
        let started = std::time::Instant::now();
        let image = JobImage {
            job,
            workers: self.workers,
            deterministic: self.deterministic,
            checkpoint_every: self.every,
            requested: Default::default(),
            clock,
        };
        use petuum_core::service::ShardService;
        for shard in 0..self.shards.num_shards() {
            let bytes = self.shards.with_shard(shard, |st| {
                let tables = st.tables().filter(|t| t.job == job).collect();
                encode_image(st, tables, vec![image.clone()])
            })?;
            self.store.write_shard(job, clock, shard, &bytes)?;
        }
        for (w, state) in worker_states.iter().enumerate() {
            self.store.put_worker_blob(job, clock, w as u32, state)?;
        }
        write_atomic(
            &self.job_dir.join("checkpoint"),
            format!("{clock}\n").as_bytes(),
        )?;
        // Complete: older checkpoints may go now (not before, or a crash
        // between the first part and the record could leave none).
        self.store.set_complete(job, clock)?;
        tracing::info!(
            job,
            clock,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint complete"
        );
        Ok(())
    }
}

/// Writes a small file so that it is either the old or the new content,
/// and durable once this returns.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The newest complete checkpoint of a job, if any.
pub fn complete_clock(job_dir: &Path) -> anyhow::Result<Option<Clock>> {
    let path = job_dir.join("checkpoint");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().parse().with_context(|| {
            format!("{} is corrupt: `{}`", path.display(), s.trim())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Restores every shard's part of the checkpoint of `job` at `clock` into
/// empty in-process shards and returns the workers' states.
pub fn restore(
    shards: &InProcShards,
    store: &CheckpointStore,
    job: JobId,
    clock: Clock,
    workers: u32,
) -> anyhow::Result<Resume> {
    use petuum_core::service::ShardService;
    for shard in 0..shards.num_shards() {
        let image = store.load_shard(job, clock, shard).with_context(|| {
            format!("loading shard {shard} of the checkpoint of job {job} at clock {clock}")
        })?;
        shards
            .with_shard_mut(shard, |st| image.restore_into(st))
            .with_context(|| format!("restoring shard {shard} of job {job} at clock {clock}"))?;
    }
    let mut worker_states = Vec::with_capacity(workers as usize);
    for w in 0..workers {
        let blob = store
            .load_worker_blob(job, clock, w)
            .with_context(|| format!("loading worker {w}'s state of job {job} at clock {clock}"))?
            .with_context(|| {
                format!("the checkpoint of job {job} at clock {clock} has no state for worker {w}")
            })?;
        worker_states.push(blob);
    }
    Ok(Resume {
        clock,
        worker_states,
    })
}
