//! A node's copies of datasets: `DATA_DIR/datasets/<sha256>/` holds the
//! file under its recorded name and `.chunks.blake3`, the concatenated
//! 32-byte BLAKE3 hash of each chunk (the dataset's name is the sha256 of
//! the whole file; chunks use BLAKE3, cryptographic too and faster, since
//! every chunk is hashed whenever it is checked). New copies are written under
//! `.incoming-<n>/` and renamed into place once complete and synced, so a
//! `<sha256>/` directory is always a whole copy (its chunks may still rot
//! on disk: every read checks them).

use super::{DatasetRecord, CHUNK};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The chunk list's file name in a dataset's directory.
const MANIFEST: &str = ".chunks.blake3";
const INCOMING: &str = ".incoming-";
/// In an unfinished copy's directory: what its writer recorded to resume
/// it after a restart ([`Ingest::mark`]); taken out before it is installed.
const RESUME: &str = ".resume";
/// How long an unfinished copy with a resume record outlives a restart
/// (the daemon keeps a broken upload this long for its client).
pub const RESUMABLE_FOR: Duration = Duration::from_secs(600);

/// Starts writing a file's dirty pages in `[offset, offset + len)` to disk
/// without waiting (Linux `sync_file_range`), so the fsync that ends a
/// large write finds little left to do and the disk works while more
/// bytes arrive. Best effort: elsewhere (or on error) it does nothing.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open descriptor; it reads no memory.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Writes chunks at their offsets in a dataset file, from any number of
/// threads at once. Whole 4 KiB-aligned chunks go through `O_DIRECT` where
/// the file system allows it: they are copied once into an aligned buffer
/// the thread reuses and from there to the disk, instead of into freshly
/// allocated page-cache pages (the dearer copy on a VM, and a
/// multi-gigabyte dataset would evict everything else). The short last
/// chunk, and everything on a file system without `O_DIRECT`, goes through
/// the page cache.
pub struct ChunkWriter {
    buffered: File,
    direct: Option<File>,
    /// Cleared when the file system refuses direct I/O after all.
    direct_ok: std::sync::atomic::AtomicBool,
}

/// `O_DIRECT`'s alignment (of offsets, lengths and memory) on common disks.
const DIRECT_ALIGN: usize = 4096;

/// Runs `f` on this thread's aligned staging buffer of `len` bytes (for
/// `O_DIRECT` writes), reused from call to call.
fn with_aligned<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        if buf.len() < len + DIRECT_ALIGN {
            *buf = vec![0u8; len + DIRECT_ALIGN];
        }
        let skip = buf.as_ptr().align_offset(DIRECT_ALIGN);
        f(&mut buf[skip..skip + len])
    })
}

impl ChunkWriter {
    /// Opens an existing file for writing.
    pub fn open(path: &Path) -> io::Result<ChunkWriter> {
        let buffered = std::fs::OpenOptions::new().write(true).open(path)?;
        #[cfg(target_os = "linux")]
        let direct = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        };
        #[cfg(not(target_os = "linux"))]
        let direct = None;
        Ok(ChunkWriter {
            direct_ok: (direct.is_some()).into(),
            buffered,
            direct,
        })
    }

    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let aligned =
            offset.is_multiple_of(DIRECT_ALIGN as u64) && data.len().is_multiple_of(DIRECT_ALIGN);
        let direct_ok = self.direct_ok.load(Ordering::Relaxed);
        if let (Some(direct), true) = (&self.direct, direct_ok && aligned && !data.is_empty()) {
            let wrote = with_aligned(data.len(), |staged| {
                staged.copy_from_slice(data);
                direct.write_all_at(staged, offset)
            });
            match wrote {
                Ok(()) => return Ok(()),
                // This file system (or device) refuses direct I/O after
                // all: the page cache it is.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct_ok.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(data, offset)?;
        start_writeback(&self.buffered, offset, data.len() as u64);
        Ok(())
    }

    /// Makes everything written durable.
    pub fn sync(&self) -> io::Result<()> {
        self.buffered.sync_all()
    }
}

/// `len` bytes at `offset` of a file. Read with `O_DIRECT` where the file
/// system allows, straight into the buffer that is returned (aligned
/// inside it): a chunk served to another node is read once, so filling
/// the page cache with it (fresh pages, the dear part on a VM) and copying
/// out of it would only cost. Elsewhere, and for ranges `O_DIRECT` cannot
/// read, through the page cache.
fn read_at(path: &Path, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    #[cfg(target_os = "linux")]
    if offset.is_multiple_of(DIRECT_ALIGN as u64) {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        if let Ok(f) = direct {
            // Whole aligned blocks: a short last chunk reads to the end of
            // the file and stops there.
            let want = len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
            let mut buf = vec![0u8; want + DIRECT_ALIGN];
            let skip = buf.as_ptr().align_offset(DIRECT_ALIGN);
            let staged = &mut buf[skip..skip + want];
            let mut done = 0;
            let got = loop {
                if done >= len {
                    break Ok(true);
                }
                match f.read_at(&mut staged[done..], offset + done as u64) {
                    Ok(0) => break Ok(false),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
                // O_DIRECT reads whole blocks: after a partial one the
                // next read would be misaligned.
                if done < len && !done.is_multiple_of(DIRECT_ALIGN) {
                    break Ok(false);
                }
            };
            match got {
                Ok(true) => return Ok(bytes::Bytes::from(buf).slice(skip..skip + len)),
                // Short (the file shrank) or refused: read it plainly below,
                // which reports a short file as such.
                Ok(false) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf.into())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The hash of one chunk (BLAKE3), as kept in a chunk list.
pub fn chunk_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A file name safe to create in a dataset's directory: the last path
/// component of `name`, letters, digits and `._-+` kept, anything else
/// `_`, no leading dot, at most 128 bytes ("data" when nothing is left).
pub fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut s: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    while s.starts_with('.') {
        s.remove(0);
    }
    s.truncate(128);
    if s.is_empty() {
        "data".into()
    } else {
        s
    }
}

/// Why a chunk could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("this node has no complete copy of dataset sha256:{0}")]
    Missing(String),
    #[error("chunk {index} of dataset sha256:{sha256} is corrupt on this node")]
    Corrupt { sha256: String, index: u64 },
    #[error("dataset sha256:{sha256}: {reason}")]
    Io { sha256: String, reason: String },
}

/// The node's dataset directory.
pub struct Store {
    root: PathBuf,
    /// One lock per dataset: a fetch or repair at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next: AtomicU64,
    /// Copies found corrupt while serving, to repair at the next sweep.
    corrupt: Mutex<Vec<DatasetRecord>>,
    /// Chunk lists already read and checked against their records: a
    /// chunk served does not read and hash its dataset's whole list again.
    manifests: Mutex<HashMap<String, bytes::Bytes>>,
}

impl Store {
    /// Opens (creates) `root`, removing what unfinished writes left (but
    /// uploads to resume).
    pub fn open(root: PathBuf) -> io::Result<Store> {
        std::fs::create_dir_all(&root)?;
        let store = Store {
            root,
            locks: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            corrupt: Mutex::new(Vec::new()),
            manifests: Mutex::new(HashMap::new()),
        };
        store.clean_incoming(Duration::ZERO);
        Ok(store)
    }

    /// The unfinished copies whose writers recorded how to resume them
    /// ([`Ingest::mark`]): each directory and its record.
    pub fn resumable(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let Ok(d) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(INCOMING))
            .filter_map(|e| Some((e.path(), std::fs::read(e.path().join(RESUME)).ok()?)))
            .collect()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, sha256: &str) -> PathBuf {
        self.root.join(sha256)
    }

    /// Where the file of a dataset is (or will be) on this node.
    pub fn path(&self, rec: &DatasetRecord) -> PathBuf {
        self.dir(&rec.sha256).join(&rec.name)
    }

    /// The lock of one dataset.
    pub fn lock(&self, sha256: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .entry(sha256.to_string())
            .or_default()
            .clone()
    }

    /// Remembers a copy found corrupt, for [`take_corrupt`](Self::take_corrupt).
    pub fn note_corrupt(&self, rec: DatasetRecord) {
        let mut c = self.corrupt.lock();
        if !c.iter().any(|r| r.sha256 == rec.sha256) {
            c.push(rec);
        }
    }

    /// The copies found corrupt since the last call.
    pub fn take_corrupt(&self) -> Vec<DatasetRecord> {
        std::mem::take(&mut *self.corrupt.lock())
    }

    /// Whether a dataset is being fetched or repaired here now.
    pub fn busy(&self, sha256: &str) -> bool {
        self.locks
            .lock()
            .get(sha256)
            .is_some_and(|l| l.try_lock().is_err())
    }

    /// Whether this node has a whole copy (its chunks unchecked). A copy
    /// installed under another name (the same bytes uploaded twice under
    /// two names at once) is renamed to the recorded one.
    pub fn complete(&self, rec: &DatasetRecord) -> bool {
        let dir = self.dir(&rec.sha256);
        if !dir.join(MANIFEST).is_file() {
            return false;
        }
        let path = self.path(rec);
        if !path.is_file() {
            let other = std::fs::read_dir(&dir).ok().and_then(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .find(|p| p.file_name().is_some_and(|n| n != MANIFEST) && p.is_file())
            });
            match other {
                Some(o) if std::fs::rename(&o, &path).is_ok() => {}
                _ => return false,
            }
        }
        std::fs::metadata(&path).is_ok_and(|m| m.len() == rec.size)
    }

    /// The chunk list of a complete copy, checked against the record (read
    /// once, then kept until the copy is replaced or removed).
    pub fn manifest(&self, rec: &DatasetRecord) -> Result<bytes::Bytes, ChunkError> {
        if !self.complete(rec) {
            return Err(ChunkError::Missing(rec.sha256.clone()));
        }
        if let Some(m) = self.manifests.lock().get(&rec.sha256) {
            return Ok(m.clone());
        }
        let m = std::fs::read(self.dir(&rec.sha256).join(MANIFEST)).map_err(|e| self.io(rec, e))?;
        if sha256_hex(&m) != rec.chunks_sha256 || m.len() as u64 != rec.chunks() * 32 {
            return Err(ChunkError::Corrupt {
                sha256: rec.sha256.clone(),
                index: u64::MAX,
            });
        }
        let m = bytes::Bytes::from(m);
        self.manifests.lock().insert(rec.sha256.clone(), m.clone());
        Ok(m)
    }

    fn io(&self, rec: &DatasetRecord, e: io::Error) -> ChunkError {
        ChunkError::Io {
            sha256: rec.sha256.clone(),
            reason: e.to_string(),
        }
    }

    /// Chunk `index` of a complete copy as it is on disk, unchecked (for
    /// a receiver that checks it).
    pub fn read_chunk_unchecked(
        &self,
        rec: &DatasetRecord,
        index: u64,
    ) -> Result<bytes::Bytes, ChunkError> {
        if !self.complete(rec) {
            return Err(ChunkError::Missing(rec.sha256.clone()));
        }
        if index >= rec.chunks() {
            return Err(ChunkError::Io {
                sha256: rec.sha256.clone(),
                reason: format!("no chunk {index} (it has {})", rec.chunks()),
            });
        }
        let (a, b) = rec.chunk_range(index);
        read_at(&self.path(rec), a, (b - a) as usize).map_err(|e| self.io(rec, e))
    }

    /// Chunk `index`, verified against its hash.
    pub fn read_chunk(&self, rec: &DatasetRecord, index: u64) -> Result<bytes::Bytes, ChunkError> {
        let m = self.manifest(rec)?;
        let buf = self.read_chunk_unchecked(rec, index)?;
        if chunk_hash(&buf)[..] != m[index as usize * 32..][..32] {
            return Err(ChunkError::Corrupt {
                sha256: rec.sha256.clone(),
                index,
            });
        }
        Ok(buf)
    }

    /// The chunks of a complete copy that do not match their hashes (all
    /// of them when the chunk list itself is damaged).
    pub fn verify(&self, rec: &DatasetRecord) -> Result<Vec<u64>, ChunkError> {
        let m = match self.manifest(rec) {
            Ok(m) => m,
            Err(ChunkError::Corrupt { .. }) => return Ok((0..rec.chunks()).collect()),
            Err(e) => return Err(e),
        };
        let mut f = File::open(self.path(rec)).map_err(|e| self.io(rec, e))?;
        let mut buf = vec![0u8; rec.chunk_size as usize];
        let mut bad = Vec::new();
        for i in 0..rec.chunks() {
            let (a, b) = rec.chunk_range(i);
            let n = (b - a) as usize;
            f.read_exact(&mut buf[..n]).map_err(|e| self.io(rec, e))?;
            if chunk_hash(&buf[..n])[..] != m[i as usize * 32..][..32] {
                bad.push(i);
            }
        }
        Ok(bad)
    }

    /// A directory for a copy being written.
    pub fn incoming_dir(&self) -> io::Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self
            .root
            .join(format!("{INCOMING}{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Starts writing a new dataset read from a stream (an upload, a URL).
    pub fn ingest(&self, name: &str, max_bytes: u64) -> io::Result<Ingest> {
        let dir = self.incoming_dir()?;
        let name = safe_name(name);
        let path = dir.join(&name);
        File::create(&path)?;
        let file = ChunkWriter::open(&path)?;
        let hasher = Hasher::start()?;
        Ok(Ingest {
            dir,
            name,
            file,
            pending: Vec::with_capacity(CHUNK as usize),
            hasher: Some(hasher),
            size: 0,
            max_bytes,
        })
    }

    /// Writes the chunk list of a copy being fetched.
    pub fn write_manifest(dir: &Path, manifest: &[u8]) -> io::Result<()> {
        let mut f = File::create(dir.join(MANIFEST))?;
        f.write_all(manifest)?;
        f.sync_all()
    }

    /// Moves a complete, synced copy from `incoming` to its place. When a
    /// copy is already there (a concurrent upload of the same bytes), the
    /// new one is dropped.
    pub fn install(&self, incoming: &Path, sha256: &str) -> io::Result<()> {
        self.manifests.lock().remove(sha256);
        let to = self.dir(sha256);
        if to.join(MANIFEST).is_file() {
            let _ = std::fs::remove_dir_all(incoming);
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(&to);
        std::fs::rename(incoming, &to)?;
        File::open(&self.root)?.sync_all()
    }

    /// The datasets this node has a directory for.
    pub fn local(&self) -> Vec<String> {
        let Ok(d) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        d.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| super::is_sha256_hex(n))
            .collect()
    }

    /// Deletes this node's copy.
    pub fn remove(&self, sha256: &str) -> io::Result<()> {
        self.manifests.lock().remove(sha256);
        match std::fs::remove_dir_all(self.dir(sha256)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes unfinished copies untouched for `age`: neither their
    /// directory nor a file in it written since (a slow upload that is
    /// still arriving is kept however long it takes), except those
    /// recorded as resumable within [`RESUMABLE_FOR`] ([`Ingest::mark`]).
    pub fn clean_incoming(&self, age: Duration) {
        let Ok(d) = std::fs::read_dir(&self.root) else {
            return;
        };
        // Unreadable: idle; written "in the future" (the clock stepped
        // back): not idle.
        let idle = |p: &Path| match p.metadata().and_then(|m| m.modified()) {
            Ok(t) => t.elapsed().is_ok_and(|a| a >= age),
            Err(_) => true,
        };
        // A copy its writer recorded as resumable within RESUMABLE_FOR
        // stays whatever `age` (an upload kept across a restart).
        let resumable = |p: &Path| {
            p.join(RESUME)
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().map_or(true, |a| a < RESUMABLE_FOR))
        };
        for e in d.flatten() {
            if !e.file_name().to_string_lossy().starts_with(INCOMING) || resumable(&e.path()) {
                continue;
            }
            let old = idle(&e.path())
                && std::fs::read_dir(e.path())
                    .map(|files| files.flatten().all(|f| idle(&f.path())))
                    .unwrap_or(true);
            if old {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Why a stream could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the data is larger than this cluster's limit of {0} bytes (datasets.max_bytes)")]
    TooLarge(u64),
    #[error("writing the dataset: {0}")]
    Io(#[from] io::Error),
}

/// A dataset being written from a stream. The bytes are written here and
/// hashed on two threads of their own (the whole file's sha256, and BLAKE3
/// of each chunk), so writing and both hashes overlap.
pub struct Ingest {
    dir: PathBuf,
    name: String,
    file: ChunkWriter,
    /// Bytes not written yet: written a whole chunk at a time.
    pending: Vec<u8>,
    hasher: Option<Hasher>,
    size: u64,
    max_bytes: u64,
}

/// Pieces an ingest's hashers may lag behind its writes.
const HASH_QUEUE: usize = 16;

/// What the hashers of an ingest computed: the whole file's sha256 and the
/// concatenated chunk hashes.
struct Hashes {
    whole: [u8; 32],
    chunks: Vec<u8>,
}

/// An ingest's two hashing threads (the whole file's sha256, BLAKE3 of
/// each chunk), each fed by its own queue: on their own threads the two
/// passes run beside each other and beside the writes.
struct Hasher {
    whole: (
        std::sync::mpsc::SyncSender<bytes::Bytes>,
        std::thread::JoinHandle<[u8; 32]>,
    ),
    chunks: (
        std::sync::mpsc::SyncSender<bytes::Bytes>,
        std::thread::JoinHandle<Vec<u8>>,
    ),
}

impl Hasher {
    fn start() -> io::Result<Hasher> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(HASH_QUEUE);
        let whole = std::thread::Builder::new()
            .name("dataset-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for piece in rx {
                    h.update(&piece[..]);
                }
                h.finalize().into()
            })?;
        let (ctx, crx) = std::sync::mpsc::sync_channel(HASH_QUEUE);
        let chunks = std::thread::Builder::new()
            .name("dataset-chunks".into())
            .spawn(move || chunk_hashes(crx))?;
        Ok(Hasher {
            whole: (tx, whole),
            chunks: (ctx, chunks),
        })
    }

    fn send(&self, piece: &bytes::Bytes) {
        // A hasher ends only when its sender is dropped.
        let _ = self.whole.0.send(piece.clone());
        let _ = self.chunks.0.send(piece.clone());
    }

    fn finish(self) -> io::Result<Hashes> {
        let Hasher { whole, chunks } = self;
        let gone = || io::Error::other("a dataset hasher panicked");
        drop((whole.0, chunks.0));
        Ok(Hashes {
            whole: whole.1.join().map_err(|_| gone())?,
            chunks: chunks.1.join().map_err(|_| gone())?,
        })
    }
}

/// BLAKE3 of each [`CHUNK`] of a stream of pieces, concatenated.
fn chunk_hashes(rx: std::sync::mpsc::Receiver<bytes::Bytes>) -> Vec<u8> {
    let mut chunk = blake3::Hasher::new();
    let (mut in_chunk, mut chunks) = (0u64, Vec::new());
    for piece in rx {
        let mut data = &piece[..];
        while !data.is_empty() {
            let take = ((CHUNK - in_chunk) as usize).min(data.len());
            chunk.update(&data[..take]);
            in_chunk += take as u64;
            data = &data[take..];
            if in_chunk == CHUNK {
                chunks.extend_from_slice(chunk.finalize().as_bytes());
                chunk.reset();
                in_chunk = 0;
            }
        }
    }
    if in_chunk > 0 {
        chunks.extend_from_slice(chunk.finalize().as_bytes());
    }
    chunks
}

/// A complete, synced copy in its incoming directory.
#[derive(Debug)]
pub struct Ingested {
    pub dir: PathBuf,
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub chunks_sha256: String,
}

impl Ingest {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn write(&mut self, data: impl Into<bytes::Bytes>) -> Result<(), IngestError> {
        let data: bytes::Bytes = data.into();
        if self.size + data.len() as u64 > self.max_bytes {
            return Err(IngestError::TooLarge(self.max_bytes));
        }
        if let Some(h) = &self.hasher {
            h.send(&data);
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            if self.pending.is_empty() && rest.len() >= CHUNK as usize {
                // A whole chunk at a chunk boundary: no staging copy.
                let offset = self.size;
                self.file.write_at(&rest[..CHUNK as usize], offset)?;
                self.size += CHUNK;
                rest = &rest[CHUNK as usize..];
                continue;
            }
            let take = (CHUNK as usize - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            self.size += take as u64;
            rest = &rest[take..];
            if self.pending.len() == CHUNK as usize {
                self.flush_pending()?;
            }
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        let offset = self.size - self.pending.len() as u64;
        self.file.write_at(&self.pending, offset)?;
        self.pending.clear();
        Ok(())
    }

    fn hashes(&mut self) -> Result<Hashes, IngestError> {
        let hasher = self.hasher.take().expect("an ingest is finished once");
        Ok(hasher.finish()?)
    }

    /// Makes every byte written so far durable and records `record` (the
    /// writer's, opaque here) beside them: after a restart,
    /// [`Store::resumable`] lists it and [`Ingest::reopen`] goes on from
    /// these bytes.
    pub fn mark(&mut self, record: &[u8]) -> io::Result<()> {
        self.flush_pending()?;
        self.file.sync()?;
        let tmp = self.dir.join(".resume.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(record)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(RESUME))?;
        File::open(&self.dir)?.sync_all()
    }

    /// An unfinished copy in `dir` (its file `name`, as [`Store::ingest`]
    /// named it), its first `size` bytes kept (what a [`mark`](Self::mark)
    /// made durable; anything after them goes) and hashed again.
    pub fn reopen(dir: PathBuf, name: &str, size: u64, max_bytes: u64) -> io::Result<Ingest> {
        let name = safe_name(name);
        let path = dir.join(&name);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let len = f.metadata()?.len();
        if len < size || size > max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {len} bytes; its resume record says {size}",
                    path.display()
                ),
            ));
        }
        f.set_len(size)?;
        let hasher = Hasher::start()?;
        let mut buf = vec![0u8; CHUNK as usize];
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(CHUNK) as usize;
            f.read_exact_at(&mut buf[..n], at)?;
            hasher.send(&bytes::Bytes::copy_from_slice(&buf[..n]));
            at += n as u64;
        }
        Ok(Ingest {
            file: ChunkWriter::open(&path)?,
            dir,
            name,
            pending: Vec::with_capacity(CHUNK as usize),
            hasher: Some(hasher),
            size,
            max_bytes,
        })
    }

    /// Syncs the file and writes the chunk list.
    pub fn finish(mut self) -> Result<Ingested, IngestError> {
        // Whole now: not to be resumed after a restart.
        match std::fs::remove_file(self.dir.join(RESUME)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let hashes = self.hashes()?;
        self.flush_pending()?;
        self.file.sync()?;
        Store::write_manifest(&self.dir, &hashes.chunks)?;
        Ok(Ingested {
            sha256: hex(&hashes.whole),
            chunks_sha256: sha256_hex(&hashes.chunks),
            dir: self.dir,
            name: self.name,
            size: self.size,
        })
    }

    /// Drops what was written.
    pub fn abandon(mut self) {
        let _ = self.hashes();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ing: &Ingested) -> DatasetRecord {
        DatasetRecord {
            sha256: ing.sha256.clone(),
            name: ing.name.clone(),
            size: ing.size,
            chunk_size: CHUNK,
            chunks_sha256: ing.chunks_sha256.clone(),
            source: "upload".into(),
            holders: vec![1],
            ready: true,
            created_ms: 0,
        }
    }

    /// Chunks written out of order, whole ones (direct I/O where the file
    /// system allows) and a short last one (through the page cache), read
    /// back as the bytes that were written.
    #[test]
    fn a_chunk_writer_writes_every_chunk_where_it_belongs() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let data: Vec<u8> = (0..(3 * CHUNK + 777))
            .map(|i| (i * 31 % 253) as u8)
            .collect();
        File::create(&path)
            .unwrap()
            .set_len(data.len() as u64)
            .unwrap();
        let w = ChunkWriter::open(&path).unwrap();
        for i in [3u64, 1, 0, 2] {
            let a = (i * CHUNK) as usize;
            let b = (a + CHUNK as usize).min(data.len());
            w.write_at(&data[a..b], a as u64).unwrap();
        }
        // An unaligned piece goes through the page cache.
        w.write_at(&data[5..4101], 5).unwrap();
        w.sync().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[test]
    fn an_ingested_file_reads_back_verified_and_rot_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("datasets")).unwrap();
        let data: Vec<u8> = (0..(2 * CHUNK + 1000))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut ing = store.ingest("../../etc/pass wd.csv", 1 << 30).unwrap();
        for part in data.chunks(333_333) {
            ing.write(part.to_vec()).unwrap();
        }
        let done = ing.finish().unwrap();
        assert_eq!(done.name, "pass_wd.csv");
        assert_eq!(done.sha256, sha256_hex(&data));
        let rec = record(&done);
        store.install(&done.dir, &done.sha256).unwrap();
        assert!(store.complete(&rec));
        assert_eq!(
            store.read_chunk(&rec, 2).unwrap(),
            &data[2 * CHUNK as usize..]
        );
        assert!(store.verify(&rec).unwrap().is_empty());
        // Rot one byte of chunk 1.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(store.path(&rec))
            .unwrap();
        f.write_all_at(&[data[CHUNK as usize + 5] ^ 1], CHUNK + 5)
            .unwrap();
        assert!(matches!(
            store.read_chunk(&rec, 1),
            Err(ChunkError::Corrupt { index: 1, .. })
        ));
        assert_eq!(store.verify(&rec).unwrap(), vec![1]);
        assert_eq!(store.local(), vec![rec.sha256.clone()]);
        store.remove(&rec.sha256).unwrap();
        assert!(!store.complete(&rec));
    }

    #[test]
    fn an_ingest_past_the_limit_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().to_path_buf()).unwrap();
        let mut ing = store.ingest("x", 10).unwrap();
        ing.write(vec![0; 10]).unwrap();
        assert!(matches!(ing.write(vec![0]), Err(IngestError::TooLarge(10))));
        ing.abandon();
        assert!(store.local().is_empty());
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe_name("/a/b/train.csv"), "train.csv");
        assert_eq!(safe_name("..."), "data");
        assert_eq!(safe_name(".hidden"), "hidden");
        assert_eq!(safe_name("a b\u{e9}"), "a_b_");
    }
}
