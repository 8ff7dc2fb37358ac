//! Consistent checkpoints of an embedded job: each shard's image of the job
//! and each worker's state go to the node's RocksDB (`petuum-storage`), and
//! only when every part is durable does the job record name the checkpoint
//! complete (`jobs/<id>/checkpoint`, written atomically). Resume reads the
//! newest complete checkpoint back.
//!
//! The images are taken while every worker waits at the checkpoint's
//! barrier (encoded in memory); the writing happens on a thread of its own
//! while the workers go on, one checkpoint at a time: the parts unsynced,
//! then one WAL sync for all of them, then the record. A crash before the
//! record leaves the previous checkpoint the newest complete one.

use anyhow::Context;
use parking_lot::Mutex;
use petuum_core::algorithm::BoxError;
use petuum_core::inproc::InProcShards;
use petuum_core::runner::{Checkpointer, Resume};
use petuum_core::types::{Clock, JobId};
use petuum_storage::image::encode_image;
use petuum_storage::{CheckpointStore, JobImage, NodeDb};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Writes checkpoints of one embedded job.
pub struct EmbeddedCheckpointer {
    shards: Arc<InProcShards>,
    out: Arc<Output>,
    workers: u32,
    deterministic: bool,
    pub every: Clock,
    /// The checkpoint being written, and its clock.
    writing: Mutex<Option<(Clock, Writing)>>,
    /// [`HELD_BYTES`] (smaller in tests).
    held_bytes: usize,
}

/// The thread writing one checkpoint.
type Writing = JoinHandle<Result<(), BoxError>>;

/// Where checkpoints go (shared with the writing thread).
struct Output {
    db: Arc<NodeDb>,
    /// Unsynced writes; [`NodeDb::sync_wal`] makes a checkpoint's parts
    /// durable together before its record is written.
    store: CheckpointStore,
    job_dir: PathBuf,
}

/// One checkpoint, taken, to be written.
struct Taken {
    job: JobId,
    clock: Clock,
    /// Encoded shard images not written yet, by shard.
    shards: Vec<(u32, Vec<u8>)>,
    workers: Vec<Vec<u8>>,
}

/// At most this many bytes of encoded images are held for the writer
/// thread; past it, the barrier's leader writes what it holds itself (a
/// large model's checkpoint then waits for part of its writing, instead
/// of doubling the job's memory).
const HELD_BYTES: usize = 256 << 20;

impl EmbeddedCheckpointer {
    pub fn new(
        shards: Arc<InProcShards>,
        db: Arc<NodeDb>,
        job_dir: PathBuf,
        workers: u32,
        deterministic: bool,
        every: Clock,
    ) -> Self {
        EmbeddedCheckpointer {
            shards,
            out: Arc::new(Output {
                store: CheckpointStore::deferred(db.clone()),
                db,
                job_dir,
            }),
            workers,
            deterministic,
            every,
            writing: Mutex::new(None),
            held_bytes: HELD_BYTES,
        }
    }

    /// Waits for the checkpoint being written, if any: an error names its
    /// clock. The job's end (and a pause, which must leave its checkpoint
    /// complete) waits here.
    pub fn wait(&self) -> Result<(), petuum_core::runner::JobError> {
        let Some((clock, handle)) = self.writing.lock().take() else {
            return Ok(());
        };
        handle
            .join()
            .unwrap_or_else(|_| Err("the checkpoint writer panicked".into()))
            .map_err(|source| petuum_core::runner::JobError::Checkpoint { clock, source })
    }
}

impl Output {
    fn write(&self, t: Taken) -> Result<(), BoxError> {
        let started = std::time::Instant::now();
        for (shard, bytes) in &t.shards {
            self.store.write_shard(t.job, t.clock, *shard, bytes)?;
        }
        for (w, state) in t.workers.iter().enumerate() {
            self.store
                .put_worker_blob(t.job, t.clock, w as u32, state)?;
        }
        self.db.sync_wal()?;
        write_atomic(
            &self.job_dir.join("checkpoint"),
            format!("{}\n", t.clock).as_bytes(),
        )?;
        // Complete: older checkpoints may go now (not before, or a crash
        // between the first part and the record could leave none).
        self.store.set_complete(t.job, t.clock)?;
        tracing::info!(
            job = t.job,
            clock = t.clock,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint complete"
        );
        Ok(())
    }
}

impl Checkpointer for EmbeddedCheckpointer {
    fn checkpoint(
        &self,
        job: JobId,
        clock: Clock,
        worker_states: &[Vec<u8>],
    ) -> Result<(), BoxError> {
        // One at a time: the previous one written (or its error) first.
        self.wait()
            .map_err(|e| -> BoxError { e.to_string().into() })?;
        let image = JobImage {
            job,
            workers: self.workers,
            deterministic: self.deterministic,
            checkpoint_every: self.every,
            requested: Default::default(),
            clock,
        };
        use petuum_core::service::ShardService;
        let mut shards = Vec::new();
        let mut held = 0;
        for shard in 0..self.shards.num_shards() {
            let bytes = self.shards.with_shard(shard, |st| {
                let tables = st.tables().filter(|t| t.job == job).collect();
                encode_image(st, tables, vec![image.clone()])
            })?;
            held += bytes.len();
            shards.push((shard, bytes));
            if held > self.held_bytes {
                for (shard, bytes) in shards.drain(..) {
                    self.out.store.write_shard(job, clock, shard, &bytes)?;
                }
                held = 0;
            }
        }
        let taken = Taken {
            job,
            clock,
            shards,
            workers: worker_states.to_vec(),
        };
        let out = self.out.clone();
        let handle = std::thread::Builder::new()
            .name(format!("checkpoint-{job}"))
            .spawn(move || out.write(taken))?;
        *self.writing.lock() = Some((clock, handle));
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

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_core::service::ShardService;
    use petuum_core::types::{ElemType, RowKind, TableSpec};
    use petuum_storage::StorageConfig;

    const JOB: JobId = 7;

    fn shards() -> Arc<InProcShards> {
        let shards = Arc::new(InProcShards::new(2));
        shards
            .create_table(&TableSpec {
                id: 1,
                name: "w".into(),
                job: JOB,
                kind: RowKind::Dense,
                elem: ElemType::F32,
                columns: 4,
            })
            .unwrap();
        shards.register_job(JOB, 2, true).unwrap();
        shards
    }

    fn images(shards: &InProcShards) -> Vec<Vec<u8>> {
        (0..shards.num_shards())
            .map(|s| {
                shards
                    .with_shard(s, |st| {
                        let tables = st.tables().filter(|t| t.job == JOB).collect();
                        encode_image(st, tables, Vec::new())
                    })
                    .unwrap()
            })
            .collect()
    }

    /// The writing goes on after `checkpoint` returns; once waited for,
    /// the record names the checkpoint and it restores what was taken.
    /// Also with every image past the bound of what is held for the
    /// writer (each then written under the barrier).
    #[test]
    fn a_checkpoint_written_in_the_background_is_complete_and_restores() {
        for held_bytes in [HELD_BYTES, 0] {
            background_checkpoint_restores(held_bytes);
        }
    }

    fn background_checkpoint_restores(held_bytes: usize) {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(StorageConfig::new(dir.path().join("db"))).unwrap();
        let job_dir = dir.path().join("job");
        std::fs::create_dir_all(&job_dir).unwrap();
        let taken = shards();
        let mut ck =
            EmbeddedCheckpointer::new(taken.clone(), db.clone(), job_dir.clone(), 2, true, 5);
        ck.held_bytes = held_bytes;
        let states = vec![b"worker 0".to_vec(), b"worker 1".to_vec()];
        ck.checkpoint(JOB, 5, &states).unwrap();
        // A second checkpoint waits for the first one's writing.
        ck.checkpoint(JOB, 10, &states).unwrap();
        ck.wait().unwrap();
        assert_eq!(complete_clock(&job_dir).unwrap(), Some(10));
        let store = CheckpointStore::new(db);
        let restored = Arc::new(InProcShards::new(2));
        let resume = restore(&restored, &store, JOB, 10, 2).unwrap();
        assert_eq!(resume.worker_states, states);
        assert_eq!(images(&restored), images(&taken));
    }

    /// A write that fails (here: the job's directory is gone, so its
    /// record cannot be written) fails the wait and the next checkpoint,
    /// naming the clock; nothing names the checkpoint complete.
    #[test]
    fn a_failed_background_write_is_an_error_naming_its_clock() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(StorageConfig::new(dir.path().join("db"))).unwrap();
        let job_dir = dir.path().join("no such job dir");
        let ck = EmbeddedCheckpointer::new(shards(), db, job_dir.clone(), 2, true, 5);
        ck.checkpoint(JOB, 5, &[Vec::new(), Vec::new()]).unwrap();
        let e = ck.wait().unwrap_err();
        assert!(
            matches!(
                e,
                petuum_core::runner::JobError::Checkpoint { clock: 5, .. }
            ),
            "{e}"
        );
        ck.checkpoint(JOB, 5, &[Vec::new(), Vec::new()]).unwrap();
        let e = ck
            .checkpoint(JOB, 10, &[Vec::new(), Vec::new()])
            .unwrap_err();
        assert!(
            e.to_string().contains("checkpoint at clock 5 failed"),
            "{e}"
        );
        assert_eq!(complete_clock(&job_dir).unwrap(), None);
    }
}
