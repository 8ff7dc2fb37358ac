//! Uploads into the dataset store (docs/jobs.md, "Data that reaches every
//! node"), resumable: an upload that names itself (`upload_id`) and whose
//! stream breaks (a client's connection dropped, a laptop's Wi-Fi gone) is
//! kept here for [`KEPT_FOR`] with the bytes that arrived, still hashed,
//! and its client sends the rest in a new stream starting where this node
//! says it stopped (`UploadOffset`).
//!
//! Each upload is received on a task of its own, not in the call's
//! handler: the server drops a handler whose client went away at whatever
//! await it is in, while the task sees its stream end with an error and
//! keeps what arrived.
//!
//! A restart of the node keeps them too: every [`MARK_EVERY`] bytes, and
//! when its stream breaks, an upload with an id makes what arrived durable
//! and records beside it how to go on ([`ResumeRecord`]); the next life
//! hashes those bytes again and keeps the upload for [`KEPT_FOR`] as if
//! its stream had just broken ([`Uploads::restore`]).
// Errors here are the API's own (`tonic::Status`), made once per call.
#![allow(clippy::result_large_err)]

use crate::datasets::{ingest_status, publish_status, Ingests};
use futures::FutureExt;
use petuum_cluster::datasets::place::publish;
use petuum_cluster::datasets::store::{Ingest, IngestError};
use petuum_cluster::datasets::{is_sha256_hex, DatasetRecord};
use petuum_cluster::ClusterNode;
use petuum_proto::v1::UploadChunk;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tonic::Status;

/// How long a broken upload (and the answer of a finished one) waits here
/// for its client to come back.
pub const KEPT_FOR: Duration = petuum_cluster::datasets::store::RESUMABLE_FOR;

/// An upload with an id makes its bytes durable and records how to resume
/// it after a restart each time this many more have arrived.
const MARK_EVERY: u64 = 64 << 20;

/// What an upload's directory records to be resumed after a restart: the
/// id and the file its client named, and how many bytes are durable.
#[derive(serde::Serialize, serde::Deserialize)]
struct ResumeRecord {
    upload_id: String,
    sha256: String,
    name: String,
    size: u64,
    received: u64,
}

impl ResumeRecord {
    fn encode(id: &str, h: &Header, received: u64) -> Vec<u8> {
        serde_json::to_vec(&ResumeRecord {
            upload_id: id.to_string(),
            sha256: h.sha256.clone(),
            name: h.name.clone(),
            size: h.size,
            received,
        })
        .expect("a resume record serialises")
    }
}

/// How long `UploadOffset` waits for a stream of the upload still open
/// here to end, or for its last bytes to be synced and copied.
const SETTLE_FOR: Duration = Duration::from_secs(30);

/// The longest upload id a client may choose.
const MAX_ID: usize = 64;

/// What the first message of an upload said about the file: a resumed
/// stream must say the same.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    sha256: String,
    name: String,
    size: u64,
}

enum Slot {
    /// A stream is receiving it; notified, it stops (a resume supersedes
    /// a stream whose client is gone but whose end this node has not
    /// seen yet).
    Receiving { stop: Arc<Notify> },
    /// Every byte arrived: being synced and copied to its replicas.
    Finishing,
    /// Its stream broke after `ing.size()` bytes.
    Kept { ing: Ingest, header: Header },
    /// Stored: a client that lost the answer gets it again.
    Done { rec: DatasetRecord, header: Header },
}

struct Entry {
    slot: Slot,
    /// Which stream (or keeping) the entry belongs to: a later one's
    /// expiry or end does not touch it.
    generation: u64,
    since: Instant,
}

/// The uploads of this node that have an id.
#[derive(Clone)]
pub struct Uploads {
    entries: Arc<parking_lot::Mutex<HashMap<String, Entry>>>,
    next: Arc<AtomicU64>,
    /// At most this many broken uploads are kept (the oldest goes first);
    /// as many finished answers again, for their clients.
    max_kept: usize,
}

fn check_id(id: &str) -> Result<(), Status> {
    check_client_id("upload_id", id)
}

/// An id a client chose (an upload's, a submission's): at most
/// [`MAX_ID`] characters of `[0-9A-Za-z_-]`.
pub(crate) fn check_client_id(field: &str, id: &str) -> Result<(), Status> {
    if id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {MAX_ID} characters of [0-9A-Za-z_-]"
        )));
    }
    Ok(())
}

impl Uploads {
    pub fn new(max_kept: usize) -> Uploads {
        Uploads {
            entries: Default::default(),
            next: Arc::new(AtomicU64::new(1)),
            max_kept,
        }
    }

    /// Sets `id`'s slot under a new generation. What the id held before
    /// is let go: a kept upload abandoned, a stream still receiving told
    /// to stop (its end then finds its entry taken and abandons what it
    /// holds).
    fn set(&self, id: &str, slot: Slot) -> u64 {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let before = self.entries.lock().insert(
            id.to_string(),
            Entry {
                slot,
                generation,
                since: Instant::now(),
            },
        );
        if let Some(e) = before {
            if let Slot::Receiving { stop } = &e.slot {
                stop.notify_one();
            }
            abandon([e]);
        }
        generation
    }

    /// Replaces `id`'s slot if it is still `generation`'s; returns the
    /// new generation, or the slot when the entry is no longer this one's.
    fn advance(&self, id: &str, generation: u64, slot: Slot) -> Result<u64, Slot> {
        let mut m = self.entries.lock();
        let Some(e) = m.get_mut(id).filter(|e| e.generation == generation) else {
            return Err(slot);
        };
        let g = self.next.fetch_add(1, Ordering::Relaxed);
        *e = Entry {
            slot,
            generation: g,
            since: Instant::now(),
        };
        Ok(g)
    }

    /// Marks `id` as finishing (every byte arrived) if it is still
    /// `generation`'s.
    fn finishing(&self, id: &str, generation: u64) {
        if let Some(e) = self.entries.lock().get_mut(id) {
            if e.generation == generation {
                e.slot = Slot::Finishing;
            }
        }
    }

    /// Forgets `id` if it is still `generation`'s.
    fn forget(&self, id: &str, generation: u64) -> Option<Entry> {
        let mut m = self.entries.lock();
        if m.get(id).is_some_and(|e| e.generation == generation) {
            return m.remove(id);
        }
        None
    }

    /// Keeps (or records as done) `id` under `generation` for
    /// [`KEPT_FOR`], then forgets it; beyond `max_kept` such entries the
    /// oldest is forgotten now.
    fn keep(&self, id: &str, generation: u64, slot: Slot) {
        let kept = matches!(slot, Slot::Kept { .. });
        let g = match self.advance(id, generation, slot) {
            Ok(g) => g,
            // Another stream of the id took over: this one's bytes go.
            Err(slot) => {
                abandon([Entry {
                    slot,
                    generation,
                    since: Instant::now(),
                }]);
                return;
            }
        };
        let evicted = {
            let mut m = self.entries.lock();
            let same = |s: &Slot| match s {
                Slot::Kept { .. } => kept,
                Slot::Done { .. } => !kept,
                Slot::Receiving { .. } | Slot::Finishing => false,
            };
            let mut of_kind: Vec<(Instant, String)> = m
                .iter()
                .filter(|(_, e)| same(&e.slot))
                .map(|(k, e)| (e.since, k.clone()))
                .collect();
            of_kind.sort();
            let over = of_kind.len().saturating_sub(self.max_kept);
            of_kind
                .into_iter()
                .take(over)
                .filter_map(|(_, k)| m.remove(&k))
                .collect::<Vec<_>>()
        };
        abandon(evicted);
        let (me, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(KEPT_FOR).await;
            abandon(me.forget(&id, g));
        });
    }

    /// Keeps again the uploads a previous life of this node was
    /// receiving, from what each one's last mark made durable (their
    /// bytes hashed again on a blocking thread; meanwhile `offset` answers
    /// "still being stored", so a client asks again). A record that does
    /// not read, or whose bytes are not all there, goes with its bytes.
    pub async fn restore(self, node: Arc<ClusterNode>) {
        let store = node.datasets.clone();
        let max = node.config.datasets.max_mib << 20;
        for (dir, raw) in store.resumable() {
            let rec: ResumeRecord = match serde_json::from_slice(&raw) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "an upload's resume record does not read; its bytes go");
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
            };
            if check_id(&rec.upload_id).is_err() || rec.upload_id.is_empty() || rec.size > max {
                tracing::warn!(dir = %dir.display(), "an upload's resume record names no valid id or a size over this node's limit; its bytes go");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            let header = Header {
                sha256: rec.sha256,
                name: rec.name,
                size: rec.size,
            };
            let id = rec.upload_id;
            let g = self.set(&id, Slot::Finishing);
            let (name, received, size) = (header.name.clone(), rec.received, header.size);
            let d = dir.clone();
            let reopened =
                tokio::task::spawn_blocking(move || Ingest::reopen(d, &name, received, size)).await;
            match reopened {
                Ok(Ok(ing)) => {
                    tracing::info!(upload = %id, bytes = received, "an upload this node was receiving before it restarted is kept for its client to resume");
                    self.keep(&id, g, Slot::Kept { ing, header });
                }
                Ok(Err(e)) => {
                    tracing::warn!(upload = %id, error = %e, "an upload this node was receiving before it restarted cannot be resumed; its bytes go");
                    self.forget(&id, g);
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "restoring an upload");
                    self.forget(&id, g);
                }
            }
        }
    }

    /// How many bytes of `id` this node holds (`UploadOffset`), and
    /// whether they are all here and still being stored (synced, copied
    /// to the dataset's replicas: the client asks again). A stream of it
    /// still open is ended first; each answer waits at most
    /// [`SETTLE_FOR`].
    pub async fn offset(&self, id: &str) -> Result<(u64, bool), Status> {
        check_id(id)?;
        let until = Instant::now() + SETTLE_FOR;
        loop {
            {
                let m = self.entries.lock();
                match m.get(id).map(|e| &e.slot) {
                    None => {
                        return Err(Status::not_found(format!(
                            "upload {id}: this node holds none of it (start it again)"
                        )))
                    }
                    Some(Slot::Kept { ing, .. }) => return Ok((ing.size(), false)),
                    Some(Slot::Done { rec, .. }) => return Ok((rec.size, false)),
                    // A permit is stored if the stream is not waiting now.
                    Some(Slot::Receiving { stop }) => {
                        stop.notify_one();
                        if Instant::now() >= until {
                            return Err(Status::unavailable(format!(
                                "upload {id}: a stream of it is still open on this node; ask again"
                            )));
                        }
                    }
                    Some(Slot::Finishing) if Instant::now() >= until => return Ok((0, true)),
                    Some(Slot::Finishing) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Abandons what a forgotten entry held (a kept upload's file and its
/// hashers; the join waits for them, so not on the runtime's threads).
fn abandon(entries: impl IntoIterator<Item = Entry>) {
    for e in entries {
        if let Slot::Kept { ing, .. } = e.slot {
            tokio::task::spawn_blocking(move || ing.abandon());
        }
    }
}

/// Stores an uploaded file: the first message names it (its sha256 may be
/// left empty); the bytes are written and hashed as they come, checked
/// against the announced size (and sha256, when given), then published
/// (copied to a majority of its replicas; bytes the store holds already
/// are kept once). With an `upload_id`, a broken stream is kept for a
/// resume, and `offset` resumes one.
pub async fn upload(
    node: &Arc<ClusterNode>,
    ingests: &Ingests,
    mut stream: tonic::Streaming<UploadChunk>,
) -> Result<DatasetRecord, Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("an upload needs at least one message"))?;
    let header = Header {
        sha256: first.sha256.clone(),
        name: first.name.clone(),
        size: first.size,
    };
    let (sha, size) = (&header.sha256, header.size);
    // An empty sha256: the client did not hash the file (it only does when
    // the cluster may have those bytes already); they are named by the
    // sha256 computed here.
    if !sha.is_empty() && !is_sha256_hex(sha) {
        return Err(Status::invalid_argument(format!(
            "upload: `{}` is not a sha256 (64 lowercase hex digits)",
            sha.chars().take(80).collect::<String>()
        )));
    }
    check_id(&first.upload_id)?;
    let id = first.upload_id.clone();
    if id.is_empty() && first.offset != 0 {
        return Err(Status::invalid_argument(
            "upload: only an upload with an upload_id can start at an offset",
        ));
    }
    let max = node.config.datasets.max_mib << 20;
    if size > max {
        return Err(Status::resource_exhausted(format!(
            "upload of {size} bytes: larger than this cluster's limit of {max} bytes (datasets.max_mib)"
        )));
    }
    if !sha.is_empty() {
        if let Some(rec) = node.meta_dataset(sha).await.ok().flatten() {
            if rec.ready {
                return Ok(rec);
            }
        }
    }
    let uploads = &ingests.uploads;
    // A resume takes the kept upload (or the answer of a finished one).
    let resumed = if first.offset > 0 {
        let mut m = uploads.entries.lock();
        let held = match m.get(&id).map(|e| &e.slot) {
            None => None,
            Some(Slot::Kept { ing, header: h }) if *h == header => Some(ing.size()),
            Some(Slot::Done { rec, header: h }) if *h == header => return Ok(rec.clone()),
            Some(Slot::Kept { .. }) | Some(Slot::Done { .. }) => {
                return Err(Status::invalid_argument(format!(
                    "upload {id}: the resumed stream names another file (name, size or sha256) than its start"
                )))
            }
            Some(Slot::Receiving { .. }) | Some(Slot::Finishing) => {
                return Err(Status::failed_precondition(format!(
                    "upload {id}: a stream of it is still open on this node (ask UploadOffset first)"
                )))
            }
        };
        match held {
            Some(n) if n == first.offset => match m.remove(&id).map(|e| e.slot) {
                Some(Slot::Kept { ing, .. }) => Some(ing),
                _ => unreachable!("checked under the same lock"),
            },
            Some(n) => {
                return Err(Status::failed_precondition(format!(
                    "upload {id}: this node holds {n} bytes of it, the stream starts at {}",
                    first.offset
                )))
            }
            None => {
                return Err(Status::not_found(format!(
                    "upload {id}: this node holds none of it (start it again)"
                )))
            }
        }
    } else {
        None
    };
    let permit = match ingests.take() {
        Ok(p) => p,
        Err(e) => {
            // Kept again for a later try.
            if let Some(ing) = resumed {
                let g = uploads.set(&id, Slot::Finishing);
                uploads.keep(&id, g, Slot::Kept { ing, header });
            }
            return Err(Status::resource_exhausted(e));
        }
    };
    let ing = match resumed {
        Some(ing) => ing,
        None => node
            .datasets
            .ingest(&first.name, size)
            .map_err(|e| Status::internal(format!("upload: {e}")))?,
    };
    let stop = Arc::new(Notify::new());
    let generation = (!id.is_empty()).then(|| {
        let g = uploads.set(&id, Slot::Receiving { stop: stop.clone() });
        (id.clone(), g)
    });
    let (node, uploads) = (node.clone(), uploads.clone());
    let task = tokio::spawn(async move {
        let _permit = permit;
        let all_arrived = || {
            if let Some((id, g)) = &generation {
                uploads.finishing(id, *g);
            }
        };
        // A panic storing it must not leave its entry finishing for ever.
        let resume_id = generation.as_ref().map(|(id, _)| id.as_str());
        let stored = receive_and_store(
            &node,
            ing,
            first,
            stream,
            &stop,
            (&header, resume_id),
            all_arrived,
        );
        let r = match std::panic::AssertUnwindSafe(stored).catch_unwind().await {
            Ok(r) => r,
            Err(_) => {
                if let Some((id, g)) = &generation {
                    abandon(uploads.forget(id, *g));
                }
                return Err(Status::internal("upload: storing it failed (a panic)"));
            }
        };
        let Some((id, g)) = generation else {
            // Not resumable: what arrived goes.
            return r.map_err(|(s, kept)| {
                if let Some(ing) = kept {
                    tokio::task::spawn_blocking(move || ing.abandon());
                }
                s
            });
        };
        match r {
            Ok(rec) => {
                uploads.keep(
                    &id,
                    g,
                    Slot::Done {
                        rec: rec.clone(),
                        header,
                    },
                );
                Ok(rec)
            }
            Err((s, Some(ing))) => {
                tracing::info!(upload = %id, bytes = ing.size(), "upload stream broken; kept for its client to resume");
                uploads.keep(&id, g, Slot::Kept { ing, header });
                Err(s)
            }
            Err((s, None)) => {
                uploads.forget(&id, g);
                Err(s)
            }
        }
    });
    task.await
        .map_err(|e| Status::internal(format!("upload: {e}")))?
}

/// Receives the bytes, checks and stores them: the file its first message
/// named, and the upload's id if it has one (resumable, after a restart
/// too). An error with the ingest:
/// the stream broke (or a resume stopped it) after what the ingest holds,
/// which is whole and may be resumed; without: it is gone.
async fn receive_and_store(
    node: &Arc<ClusterNode>,
    ing: Ingest,
    first: UploadChunk,
    mut stream: tonic::Streaming<UploadChunk>,
    stop: &Notify,
    (header, resume_id): (&Header, Option<&str>),
    all_arrived: impl FnOnce(),
) -> Result<DatasetRecord, (Status, Option<Ingest>)> {
    let size = header.size;
    // How to resume it after a restart, at `received` bytes.
    let record = resume_id.map(|id| {
        let (id, header) = (id.to_string(), header.clone());
        move |received: u64| ResumeRecord::encode(&id, &header, received)
    });
    // The bytes are written and hashed on a thread of their own while the
    // next ones arrive; with an id, made durable every MARK_EVERY bytes.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let marks = record.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut ing = ing;
        let mut marked = ing.size();
        while let Some(data) = rx.blocking_recv() {
            let mut wrote = ing.write(data);
            if let (Ok(()), Some(rec)) = (&wrote, &marks) {
                if ing.size() >= marked + MARK_EVERY {
                    marked = ing.size();
                    wrote = ing.mark(&rec(marked)).map_err(IngestError::Io);
                }
            }
            if let Err(e) = wrote {
                ing.abandon();
                return Err(e);
            }
        }
        Ok(ing)
    });
    let started = Instant::now();
    let mut chunk = first;
    let received: Result<(), Status> = async {
        loop {
            if tx.send(std::mem::take(&mut chunk.data)).await.is_err() {
                // The writer stopped: its error is reported below.
                return Ok(());
            }
            tokio::select! {
                m = stream.message() => match m? {
                    Some(c) => chunk = c,
                    None => return Ok(()),
                },
                _ = stop.notified() => {
                    return Err(Status::aborted("upload: a resume of it took over"));
                }
            }
        }
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| (Status::internal(format!("upload: {e}")), None))?;
    let ing = match (received, written) {
        (_, Err(IngestError::TooLarge(_))) => {
            return Err((
                Status::invalid_argument(format!("upload: more bytes than the {size} announced")),
                None,
            ))
        }
        (_, Err(e)) => return Err((ingest_status(e), None)),
        // The stream broke: what arrived is kept whole (and durable, to be
        // resumed after a restart too).
        (Err(e), Ok(mut ing)) => {
            if let Some(rec) = &record {
                let r = rec(ing.size());
                if let Err(m) = tokio::task::block_in_place(|| ing.mark(&r)) {
                    tracing::warn!(error = %m, "recording a broken upload for a restart");
                }
            }
            return Err((e, Some(ing)));
        }
        (Ok(()), Ok(ing)) => ing,
    };
    all_arrived();
    let fail = |s: Status| Err((s, None));
    if ing.size() != size {
        let got = ing.size();
        ing.abandon();
        return fail(Status::invalid_argument(format!(
            "upload: {got} bytes arrived, {size} were announced"
        )));
    }
    let received_s = started.elapsed().as_secs_f64();
    let done = match tokio::task::block_in_place(|| ing.finish()) {
        Ok(d) => d,
        Err(e) => return fail(ingest_status(e)),
    };
    tracing::info!(
        bytes = size,
        received_s,
        synced_s = started.elapsed().as_secs_f64() - received_s,
        "upload received and synced"
    );
    let sha = &header.sha256;
    if !sha.is_empty() && done.sha256 != *sha {
        let _ = std::fs::remove_dir_all(&done.dir);
        return fail(Status::invalid_argument(format!(
            "upload: the bytes that arrived have sha256 {}, not the {sha} announced",
            done.sha256
        )));
    }
    match publish(node, done, "upload".into()).await {
        Ok(rec) => Ok(rec),
        Err(e) => fail(publish_status(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_cluster::datasets::store::Store;

    fn header(size: u64) -> Header {
        Header {
            sha256: String::new(),
            name: "f".into(),
            size,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_upload_is_kept_then_the_oldest_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("datasets")).unwrap();
        let uploads = Uploads::new(1);
        // Ids are bounded and plain.
        for bad in ["a/b", "x".repeat(65).as_str(), "é"] {
            let e = uploads.offset(bad).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e:?}");
        }
        assert_eq!(
            uploads.offset("a").await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        // A stream still receiving is told to stop, and what it held is
        // the answer once it is kept.
        let stop = Arc::new(Notify::new());
        let g = uploads.set("a", Slot::Receiving { stop: stop.clone() });
        let mut ing = store.ingest("f", 100).unwrap();
        ing.write(b"hello".to_vec()).unwrap();
        let (u, held) = (uploads.clone(), ing);
        let stream = tokio::spawn(async move {
            stop.notified().await;
            u.keep(
                "a",
                g,
                Slot::Kept {
                    ing: held,
                    header: header(100),
                },
            );
        });
        assert_eq!(uploads.offset("a").await.unwrap(), (5, false));
        stream.await.unwrap();
        // One broken upload is kept here: a second one pushes the first out.
        let g = uploads.set("b", Slot::Finishing);
        let mut ing = store.ingest("g", 100).unwrap();
        ing.write(b"hi".to_vec()).unwrap();
        uploads.keep(
            "b",
            g,
            Slot::Kept {
                ing,
                header: header(100),
            },
        );
        assert_eq!(uploads.offset("b").await.unwrap(), (2, false));
        assert_eq!(
            uploads.offset("a").await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        // A stale generation changes nothing.
        assert!(uploads.forget("b", g).is_none());
        assert_eq!(uploads.offset("b").await.unwrap(), (2, false));
    }
}
