//! # petuum-client
//!
//! The client side of petuum: validates job specs exactly as the server
//! does (docs/design.md §6: a spec is checked by the client before submission
//! and by the server again), and asks a cluster node for the cluster's
//! state over gRPC ([`cluster_status`]), and drives jobs through any node
//! ([`Client`]: submit, status, list, watch, cancel, resume, logs, model).

use petuum_core::spec::{JobSpec, SpecError};
use std::path::Path;

/// Why the client refused to go on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} refused: {message}")]
    Refused { endpoint: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("the server rejected the job: {0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    /// The CLI's exit code for this error: 2 bad input, 3 unreachable or
    /// refused by the cluster, 4 not found.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Spec(_) | ClientError::Invalid(_) | ClientError::Io(_) => 2,
            ClientError::Unreachable { .. } | ClientError::Refused { .. } => 3,
            ClientError::NotFound(_) => 4,
        }
    }
}

pub use petuum_proto::v1::{DatasetInfo, JobInfo};

/// The data fields of a job spec's `[data]` table that name files.
const DATA_FIELDS: [&str; 5] = ["train", "train_labels", "test", "test_labels", "vocab"];

/// The bytes of one upload message.
const UPLOAD_MESSAGE: usize = 1 << 20;

/// A file stored in the dataset store.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub info: DatasetInfo,
    /// Whether bytes were sent (false: the cluster had them already).
    pub sent: bool,
}

/// sha256 (hex) and size of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    hash_file_with(path, |_| {})
}

/// [`hash_file`], calling `progress` with the bytes hashed so far.
pub fn hash_file_with(
    path: &Path,
    mut progress: impl FnMut(u64),
) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
        progress(size);
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, size))
}

/// Reads until `buf` is full or the end of the file.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether a job state is final.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

/// A job spec checked on this machine, ready to submit.
#[derive(Clone, Debug)]
pub struct Submission {
    pub text: String,
    pub origin: String,
    /// The spec file's directory, absolute (relative paths in the spec).
    pub base_dir: std::path::PathBuf,
}

impl Submission {
    /// Reads and validates the spec as the server will ([`load_job`]).
    pub fn prepare(path: &Path) -> Result<Submission, ClientError> {
        load_job(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Io(format!("{}: {e}", path.display())))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base_dir = std::fs::canonicalize(dir)
            .map_err(|e| ClientError::Io(format!("{}: {e}", dir.display())))?;
        Ok(Submission {
            text,
            origin: path.display().to_string(),
            base_dir,
        })
    }
}

/// How a client proves who it is and checks the node it talks to
/// (docs/deploy.md, "Credentials").
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// The bearer token of the cluster's `client_token_file`.
    pub token: Option<String>,
    /// The cluster CA's certificate (PEM): verifies the node of an
    /// `https://` endpoint.
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate and its key (PEM), signed by the cluster CA
    /// (`petuumd certs`): a credential of its own, instead of the token.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl Credentials {
    fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
        std::fs::read(path).map_err(|e| ClientError::Io(format!("{what} {}: {e}", path.display())))
    }

    /// The `authorization` value of the token, if any.
    fn header(
        &self,
        endpoint: &str,
    ) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, ClientError> {
        match &self.token {
            Some(t) => format!("Bearer {}", t.trim())
                .parse()
                .map(Some)
                .map_err(|_| ClientError::Unreachable {
                    endpoint: endpoint.to_string(),
                    reason: "the token is not a valid header value".into(),
                }),
            None => Ok(None),
        }
    }

    /// A channel configuration for `endpoint`, with TLS for `https://`.
    pub fn endpoint(&self, endpoint: &str) -> Result<tonic::transport::Endpoint, ClientError> {
        let bad = |reason: String| ClientError::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| bad(format!("bad endpoint: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(3))
            // A node gone without a reset (a preempted VM, a partition)
            // ends a call that waits on it, a watch included, within 20 s.
            .http2_keep_alive_interval(std::time::Duration::from_secs(10))
            .keep_alive_timeout(std::time::Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .tcp_keepalive(Some(std::time::Duration::from_secs(10)));
        let https = endpoint.starts_with("https://");
        if !https {
            if self.ca.is_some() || self.cert.is_some() {
                return Err(bad(
                    "--ca and --cert are for TLS: use an https:// endpoint".into()
                ));
            }
            return Ok(ep);
        }
        let Some(ca) = &self.ca else {
            return Err(bad(
                "an https:// endpoint needs the cluster CA (--ca or PETUUM_CA)".into(),
            ));
        };
        let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(Self::read(ca, "CA certificate")?),
        );
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    Self::read(c, "client certificate")?,
                    Self::read(k, "client key")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(bad(
                    "a client certificate needs both --cert and --key".into()
                ))
            }
        }
        ep = ep.tls_config(tls).map_err(|e| bad(format!("TLS: {e}")))?;
        Ok(ep)
    }
}

/// A transport error with its causes (tonic's own says only "transport
/// error"; the cause names the TLS or connection problem).
fn transport_error(e: &tonic::transport::Error) -> String {
    petuum_core::error_chain(e)
}

/// A connection to a cluster node's job API.
#[derive(Clone)]
pub struct Client {
    endpoint: String,
    creds: Credentials,
    token: Option<Token>,
    jobs: Jobs,
    progress: Option<UploadProgress>,
    switches: Option<Switches>,
}

/// The gRPC client of the Jobs API.
type Jobs = petuum_proto::v1::jobs_client::JobsClient<tonic::transport::Channel>;

/// A bearer token as a request header.
type Token = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// `body` as a request, with the token when there is one.
fn authed<T>(token: &Option<Token>, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", t.clone());
    }
    r
}

/// Told when a [`Client::watch`] loses its node and when it goes on
/// through another one.
pub type Switches = std::sync::Arc<dyn Fn(&Switch) + Send + Sync>;

/// A watch's change of node (see [`Client::on_switch`]).
#[derive(Clone, Debug)]
pub enum Switch {
    /// The node stopped answering (`reason`); the watch tries the
    /// cluster's nodes, this one first, for up to [`WATCH_RECONNECT`].
    Lost { endpoint: String, reason: String },
    /// The watch goes on through `endpoint`.
    Resumed { endpoint: String },
    /// An upload goes on through `endpoint` from byte `offset` of `size`
    /// (0: that node held none of it, so it starts again).
    UploadResumed {
        endpoint: String,
        offset: u64,
        size: u64,
    },
}

/// What a reconnect asks a node before going on through it.
#[derive(Clone, Copy)]
enum Probe<'a> {
    /// That it answers the job API at all.
    Answers,
    /// That it answers for the job.
    Job(u64),
    /// How much of the upload it holds.
    Upload(&'a str),
}

/// How long a watch keeps trying the cluster's nodes after losing its own:
/// a node a preempted VM restarts is back within this, and any other live
/// node answers at once.
pub const WATCH_RECONNECT: std::time::Duration = std::time::Duration::from_secs(300);

/// How long a client waits for a node that has all of an upload and is
/// still storing it (its copies to the dataset's replicas go at disk
/// speed).
const UPLOAD_STORING: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether record `a` of a job is later than `b`: a later run (epoch),
/// or the same run further on (clock), or its end.
fn newer(a: &JobInfo, b: &JobInfo) -> bool {
    if is_terminal(&b.state) {
        return false;
    }
    (a.epoch, a.clock, is_terminal(&a.state)) > (b.epoch, b.clock, false)
        || (a.epoch == b.epoch && a.clock == b.clock && a != b)
}

/// Whether a failed call or stream means the node (or the connection to
/// it) went away, rather than an answer about the request: a watch then
/// goes on through another node.
fn lost_node(s: &tonic::Status) -> bool {
    // A status made here from a transport error (a reset, a keepalive
    // that timed out) carries that error; one a node answered does not.
    if std::error::Error::source(s).is_some() {
        return true;
    }
    match s.code() {
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Cancelled
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Aborted => true,
        // A connection reset mid-stream (hyper: "error reading a body from
        // connection").
        tonic::Code::Internal => s.message().starts_with("h2 protocol error"),
        _ => false,
    }
}

/// The sha256 of the bytes an upload sent, in file order across its
/// streams: a resumed stream starts where its node says, at or before
/// what was hashed, and bytes hashed already are skipped.
#[derive(Default)]
struct SentHash {
    upto: u64,
    hash: sha2::Sha256,
}

impl SentHash {
    fn feed(&mut self, at: u64, bytes: &[u8]) {
        use sha2::Digest;
        let end = at + bytes.len() as u64;
        // Hashed already, or (never: a stream starts at most where the
        // last one read to) past a gap.
        if end <= self.upto || at > self.upto {
            return;
        }
        self.hash.update(&bytes[(self.upto - at) as usize..]);
        self.upto = end;
    }

    /// The hex sha256 once every byte of the file was hashed.
    fn finish(self, size: u64) -> Option<String> {
        use sha2::Digest;
        (self.upto == size).then(|| {
            self.hash
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
    }
}

/// What every stream of one upload sends: the file, its upload id (a
/// fresh one when a node held nothing of it), what the first message
/// announces, and the hash of what was sent.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    path: &'a Path,
    id: &'a str,
    sha256: &'a str,
    name: &'a str,
    size: u64,
    hashed: &'a std::sync::Arc<std::sync::Mutex<SentHash>>,
}

/// Why one stream of an upload failed: the file here, or the call.
enum UploadFailure {
    Local(ClientError),
    Call(tonic::Status),
}

/// A fresh id for an upload or a submission: 128 random bits in hex
/// (std's per-process random hash keys, mixed with the time).
fn fresh_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u64(salt);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// Told how an upload goes: the phase (`"hashing"`, `"uploading"`), the
/// file, bytes done and the file's size.
pub type UploadProgress = std::sync::Arc<dyn Fn(&str, &Path, u64, u64) + Send + Sync>;

impl Client {
    /// Connects to `endpoint` (`http://host:port`), with a bearer token
    /// when given.
    pub async fn connect(endpoint: &str, token: Option<&str>) -> Result<Client, ClientError> {
        let creds = Credentials {
            token: token.map(str::to_string),
            ..Default::default()
        };
        Self::connect_with(endpoint, &creds).await
    }

    /// Connects to `endpoint` (`http://host:port`, or `https://host:port`
    /// with the cluster CA in `creds`).
    pub async fn connect_with(endpoint: &str, creds: &Credentials) -> Result<Client, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let token = creds.header(endpoint)?;
        let channel = creds
            .endpoint(endpoint)?
            .connect()
            .await
            .map_err(|e| unreachable(transport_error(&e)))?;
        Ok(Client {
            endpoint: endpoint.to_string(),
            creds: creds.clone(),
            token,
            jobs: petuum_proto::v1::jobs_client::JobsClient::new(channel)
                .max_decoding_message_size(64 << 20),
            progress: None,
            switches: None,
        })
    }

    /// Connects to the first of `list`'s endpoints (one, or several
    /// separated by commas, as `--endpoint` takes them) that accepts a
    /// connection, in order: a node that is down (a preempted VM) costs
    /// its connect timeout, not the command.
    pub async fn connect_any(list: &str, creds: &Credentials) -> Result<Client, ClientError> {
        first_reachable(list, |ep| Client::connect_with(ep, creds)).await
    }

    /// The node this client talks to now (a watch may have moved it).
    pub fn endpoint_in_use(&self) -> &str {
        &self.endpoint
    }

    /// Tells `f` when a watch loses its node and when it goes on through
    /// another (the CLI prints both).
    pub fn on_switch(&mut self, f: Switches) {
        self.switches = Some(f);
    }

    /// Reports the progress of uploads (hashing, then sending) to `f`
    /// (the CLI draws a bar with it on a terminal).
    pub fn on_upload_progress(&mut self, f: UploadProgress) {
        self.progress = Some(f);
    }

    fn req<T>(&self, body: T) -> tonic::Request<T> {
        authed(&self.token, body)
    }

    fn err(&self, s: tonic::Status) -> ClientError {
        match s.code() {
            tonic::Code::NotFound => ClientError::NotFound(s.message().to_string()),
            tonic::Code::InvalidArgument => ClientError::Invalid(s.message().to_string()),
            tonic::Code::Unavailable if s.message().contains("transport") => {
                ClientError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    reason: s.message().to_string(),
                }
            }
            _ => ClientError::Refused {
                endpoint: self.endpoint.clone(),
                message: s.message().to_string(),
            },
        }
    }

    /// Validates the spec here (as [`load_job`]), then submits it; the
    /// server validates it again.
    pub async fn submit(&mut self, path: &Path) -> Result<JobInfo, ClientError> {
        let s = Submission::prepare(path)?;
        self.submit_prepared(&s).await
    }

    /// Submits a spec [`Submission::prepare`] checked.
    pub async fn submit_prepared(&mut self, s: &Submission) -> Result<JobInfo, ClientError> {
        self.submit_text(&s.text, &s.origin, &s.base_dir).await
    }

    /// Submits spec text as is (the server validates it).
    pub async fn submit_text(
        &mut self,
        spec_toml: &str,
        origin: &str,
        base_dir: &Path,
    ) -> Result<JobInfo, ClientError> {
        // The submission names itself: sent again through another node
        // after its node went away (the answer lost, or the request), it
        // makes one job, not two.
        let body = petuum_proto::v1::SubmitRequest {
            spec_toml: spec_toml.to_string(),
            origin: origin.to_string(),
            base_dir: base_dir.display().to_string(),
            request_id: fresh_id(),
        };
        self.until_answered(|mut j, t| {
            let r = authed(&t, body.clone());
            async move { j.submit(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// `call` (a command the cluster applies once however often it is
    /// sent: it carries its client's id) on this client's node; when that
    /// node is lost before the answer came (killed, cut off, the
    /// connection gone), the same call again through the first of the
    /// cluster's nodes that answers, until one answers it or
    /// [`WATCH_RECONNECT`] passed.
    async fn until_answered<T, F, Fut>(&mut self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Jobs, Option<Token>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let candidates: Vec<String> = std::iter::once(self.endpoint.clone())
            .chain(self.peer_endpoints().await)
            .collect();
        let mut lost_since: Option<std::time::Instant> = None;
        loop {
            let reason = match call(self.jobs.clone(), self.token.clone()).await {
                Ok(r) => return Ok(r),
                Err(s) if lost_node(&s) => s.message().to_string(),
                Err(s) => return Err(self.err(s)),
            };
            let since = *lost_since.get_or_insert_with(std::time::Instant::now);
            self.reconnect(Probe::Answers, &candidates, &reason, since)
                .await?;
        }
    }

    /// `call` (a read) on this client's node; when that node is lost
    /// (gone, its connection broken, or unable to answer: cut off from the
    /// metadata group's majority), once on each of the cluster's other
    /// nodes as this node lists them, until one answers; the client then
    /// talks to that node. Any node's answer is as good: the cluster's
    /// reads of the metadata are linearizable whichever node answers.
    async fn read<T, F, Fut>(&mut self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Jobs, Option<Token>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let first = match call(self.jobs.clone(), self.token.clone()).await {
            Ok(r) => return Ok(r),
            Err(s) if lost_node(&s) => s,
            Err(s) => return Err(self.err(s)),
        };
        let peers = self.peer_endpoints().await;
        if peers.is_empty() {
            return Err(self.err(first));
        }
        self.notify(Switch::Lost {
            endpoint: self.endpoint.clone(),
            reason: first.message().to_string(),
        });
        for ep in peers {
            let Ok(mut c) = Client::connect_with(&ep, &self.creds).await else {
                continue;
            };
            match call(c.jobs.clone(), c.token.clone()).await {
                Ok(r) => {
                    c.progress = self.progress.take();
                    c.switches = self.switches.take();
                    *self = c;
                    self.notify(Switch::Resumed {
                        endpoint: self.endpoint.clone(),
                    });
                    return Ok(r);
                }
                Err(s) if lost_node(&s) => {}
                Err(s) => return Err(c.err(s)),
            }
        }
        Err(self.err(first))
    }

    /// The job's record (through another node when this one is lost).
    pub async fn status(&mut self, job: u64) -> Result<JobInfo, ClientError> {
        self.read(|mut j, t| async move {
            j.get(authed(&t, petuum_proto::v1::JobRef { job }))
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    /// Every job's record (through another node when this one is lost).
    pub async fn list(&mut self) -> Result<Vec<JobInfo>, ClientError> {
        self.read(|mut j, t| async move {
            j.list(authed(&t, petuum_proto::v1::ListRequest {}))
                .await
                .map(|r| r.into_inner().jobs)
        })
        .await
    }

    /// Cancels a job (a running one stops at its node; see the answer's
    /// state). Safe to lose the answer to, as [`Client::resume`].
    pub async fn cancel(&mut self, job: u64) -> Result<JobInfo, ClientError> {
        self.act(job, |mut j, r| async move { j.cancel(r).await })
            .await
    }

    /// Deletes an ended job everywhere (record, checkpoints, model). A
    /// delete sent again after its first attempt took effect is answered
    /// with the state `deleted` (the record is gone).
    pub async fn delete(&mut self, job: u64) -> Result<JobInfo, ClientError> {
        self.act(job, |mut j, r| async move { j.delete(r).await })
            .await
    }

    /// Resumes a paused or failed job from its newest checkpoint.
    pub async fn resume(&mut self, job: u64) -> Result<JobInfo, ClientError> {
        self.act(job, |mut j, r| async move { j.resume(r).await })
            .await
    }

    /// A command on a job (`call`: cancel, resume, delete) under an id
    /// this client chose, sent again through the cluster's other nodes
    /// while its node is lost ([`Client::until_answered`]); the cluster
    /// applies it once, so a resume does not start twice and a cancel or
    /// delete is not refused as "already ..." by its own first attempt.
    async fn act<F, Fut>(&mut self, job: u64, call: F) -> Result<JobInfo, ClientError>
    where
        F: Fn(Jobs, tonic::Request<petuum_proto::v1::JobAction>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<JobInfo>, tonic::Status>>,
    {
        let body = petuum_proto::v1::JobAction {
            job,
            request_id: fresh_id(),
        };
        let call = &call;
        self.until_answered(|j, t| {
            let r = authed(&t, body.clone());
            async move { call(j, r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Calls `each` with the job's record every time it changes, until the
    /// job ends; returns the final record.
    ///
    /// A watch outlives the node it talks to: when that node goes away
    /// (killed, preempted, restarting) it tries the node again and the
    /// cluster's other nodes (as the node listed them when the watch
    /// began) until one answers, for up to [`WATCH_RECONNECT`], and goes on
    /// from the job's record there. The job itself never depended on the
    /// node the client talks to. An answer about the request (no such
    /// job, not allowed) ends the watch as before.
    pub async fn watch(
        &mut self,
        job: u64,
        mut each: impl FnMut(&JobInfo),
    ) -> Result<JobInfo, ClientError> {
        // Every node the watch may go on through, this one first; fixed
        // for the whole watch, so the first node is tried again later.
        let candidates: Vec<String> = std::iter::once(self.endpoint.clone())
            .chain(self.peer_endpoints().await)
            .collect();
        let mut last: Option<JobInfo> = None;
        // Since when no stream has delivered a new record: bounds a node
        // that accepts calls but keeps breaking the stream, as it bounds
        // one that does not answer.
        let mut lost_since: Option<std::time::Instant> = None;
        loop {
            let mut fresh = false;
            let reason = match self
                .watch_stream(job, &mut each, &mut last, &mut fresh)
                .await
            {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => "the node ended the watch before the job ended".to_string(),
                Err(s) if lost_node(&s) => s.message().to_string(),
                Err(s) => return Err(self.err(s)),
            };
            if fresh {
                lost_since = None;
            } else if lost_since.is_some() {
                // Again without a new record: not at once.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            let since = *lost_since.get_or_insert_with(std::time::Instant::now);
            self.reconnect(Probe::Job(job), &candidates, &reason, since)
                .await?;
        }
    }

    /// One watch stream: `Ok(Some)` the job's final record, `Ok(None)` the
    /// stream ended first.
    async fn watch_stream(
        &mut self,
        job: u64,
        each: &mut impl FnMut(&JobInfo),
        last: &mut Option<JobInfo>,
        fresh: &mut bool,
    ) -> Result<Option<JobInfo>, tonic::Status> {
        let req = self.req(petuum_proto::v1::JobRef { job });
        let mut stream = self.jobs.watch(req).await?.into_inner();
        while let Some(info) = stream.message().await? {
            // A node that took over may first send what was already seen,
            // or, its replica behind, an older record: neither is shown.
            if last.as_ref().is_some_and(|l| !newer(&info, l)) {
                continue;
            }
            *fresh = true;
            each(&info);
            let end = is_terminal(&info.state);
            *last = Some(info);
            if end {
                return Ok(last.clone());
            }
        }
        Ok(None)
    }

    /// The client endpoints of the cluster's nodes other than this one,
    /// with this endpoint's scheme; empty when the node does not say.
    async fn peer_endpoints(&self) -> Vec<String> {
        let scheme = if self.endpoint.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        match cluster_status_with(&self.endpoint, &self.creds).await {
            Ok(status) => status
                .nodes
                .iter()
                .filter(|n| !n.addr.is_empty())
                .map(|n| format!("{scheme}://{}", n.addr))
                .filter(|ep| ep.trim_end_matches('/') != self.endpoint.trim_end_matches('/'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Says the node was lost (`reason`), then connects to the first of
    /// `candidates` (this client's node first), tried in turn with a growing pause, that answers `probe`; gives up
    /// [`WATCH_RECONNECT`] after `started`, with the last reason seen. A
    /// node's answer about the request itself (no such job, not allowed)
    /// is returned as the error it is. Returns where an upload goes on (0
    /// for a job, and for an upload the node holds nothing of).
    async fn reconnect(
        &mut self,
        probe: Probe<'_>,
        candidates: &[String],
        reason: &str,
        started: std::time::Instant,
    ) -> Result<u64, ClientError> {
        self.notify(Switch::Lost {
            endpoint: self.endpoint.clone(),
            reason: reason.to_string(),
        });
        let order: Vec<String> = std::iter::once(self.endpoint.clone())
            .chain(candidates.iter().filter(|c| **c != self.endpoint).cloned())
            .collect();
        let what = match probe {
            Probe::Answers => "",
            Probe::Job(_) => " for the job",
            Probe::Upload(_) => " for the upload",
        };
        let mut pause = std::time::Duration::from_millis(200);
        let mut last_error = reason.to_string();
        loop {
            for ep in &order {
                if started.elapsed() >= WATCH_RECONNECT {
                    return Err(ClientError::Unreachable {
                        endpoint: order.join(", "),
                        reason: format!(
                            "no node answered{what} within {} s after losing its node (last: {last_error})",
                            WATCH_RECONNECT.as_secs()
                        ),
                    });
                }
                let mut c = match Client::connect_with(ep, &self.creds).await {
                    Ok(c) => c,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                };
                // Answering a call, not only accepting the connection (a
                // stopped daemon still completes the TCP handshake).
                // A node asked about an upload may first wait for a stream
                // of it that is still open there to end (up to 30 s).
                let bound = match probe {
                    Probe::Answers | Probe::Job(_) => std::time::Duration::from_secs(10),
                    // Each answer comes within 30 s; a node still storing
                    // the upload's last bytes (syncing them, copying them
                    // to the dataset's replicas, bounded by their size)
                    // is asked until it is done, up to an hour.
                    Probe::Upload(_) => UPLOAD_STORING,
                };
                let asked = tokio::time::timeout(bound, async {
                    match probe {
                        // No job has id 0: "not found" is an answer.
                        Probe::Answers => {
                            let req = c.req(petuum_proto::v1::JobRef { job: 0 });
                            match c.jobs.get(req).await {
                                Err(s) if lost_node(&s) => Err(s),
                                _ => Ok(0),
                            }
                        }
                        Probe::Job(job) => {
                            let req = c.req(petuum_proto::v1::JobRef { job });
                            c.jobs.get(req).await.map(|_| 0)
                        }
                        Probe::Upload(id) => loop {
                            let req = c.req(petuum_proto::v1::UploadRef {
                                upload_id: id.to_string(),
                            });
                            match c.jobs.upload_offset(req).await {
                                // All of it arrived there and it is being
                                // stored: its answer comes from that node.
                                Ok(r) if r.get_ref().finishing => {
                                    tokio::time::sleep(std::time::Duration::from_secs(1)).await
                                }
                                Ok(r) => break Ok(r.into_inner().received),
                                // That node holds none of it: start again
                                // there.
                                Err(s) if s.code() == tonic::Code::NotFound => break Ok(0),
                                Err(s) => break Err(s),
                            }
                        },
                    }
                })
                .await;
                match asked {
                    Ok(Ok(at)) => {
                        c.progress = self.progress.take();
                        c.switches = self.switches.take();
                        *self = c;
                        // An upload says where it goes on itself.
                        if !matches!(probe, Probe::Upload(_)) {
                            self.notify(Switch::Resumed {
                                endpoint: self.endpoint.clone(),
                            });
                        }
                        return Ok(at);
                    }
                    Ok(Err(s)) if lost_node(&s) => last_error = format!("{ep}: {}", s.message()),
                    Ok(Err(s)) => return Err(c.err(s)),
                    Err(_) => last_error = format!("{ep}: no answer within {} s", bound.as_secs()),
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(5));
        }
    }

    fn notify(&self, s: Switch) {
        if let Some(f) = &self.switches {
            f(&s);
        }
    }

    /// The job's log: events and progress lines, oldest first.
    pub async fn logs(&mut self, job: u64) -> Result<Vec<(u64, String)>, ClientError> {
        self.read(|mut j, t| async move {
            j.logs(authed(&t, petuum_proto::v1::JobRef { job }))
                .await
                .map(|r| {
                    r.into_inner()
                        .lines
                        .into_iter()
                        .map(|l| (l.at_ms, l.text))
                        .collect()
                })
        })
        .await
    }

    /// A dataset of the cluster's store (`NotFound` when it has none with
    /// that sha256).
    pub async fn dataset(&mut self, sha256: &str) -> Result<DatasetInfo, ClientError> {
        self.read(|mut j, t| async move {
            let req = petuum_proto::v1::DatasetRef {
                sha256: sha256.to_string(),
            };
            j.dataset_stat(authed(&t, req))
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    /// Every dataset of the store.
    pub async fn datasets(&mut self) -> Result<Vec<DatasetInfo>, ClientError> {
        self.read(|mut j, t| async move {
            j.datasets(authed(&t, petuum_proto::v1::ListRequest {}))
                .await
                .map(|r| r.into_inner().datasets)
        })
        .await
    }

    /// Forgets a dataset (refused while a job that has not ended uses it).
    pub async fn remove_dataset(&mut self, sha256: &str) -> Result<DatasetInfo, ClientError> {
        let req = self.req(petuum_proto::v1::DatasetRef {
            sha256: sha256.to_string(),
        });
        self.jobs
            .remove_dataset(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.err(s))
    }

    /// Stores a local file in the cluster's dataset store. When the
    /// cluster holds a dataset of the file's size, the file is hashed here
    /// first, and if the cluster has those bytes nothing is sent
    /// (`Uploaded::sent` is false); otherwise the bytes are sent at once
    /// and the node that stores them computes their sha256.
    pub async fn upload(&mut self, path: &Path) -> Result<Uploaded, ClientError> {
        let io = |e: std::io::Error| ClientError::Io(format!("{}: {e}", path.display()));
        let total = std::fs::metadata(path).map_err(io)?.len();
        // The cluster can only hold these bytes already under a dataset of
        // the same size: only then is the file hashed first (a pass over
        // it before the first byte leaves) to ask. Otherwise the bytes go
        // at once and the node names them by the sha256 it computes.
        let same_size = self.datasets().await?.iter().any(|d| d.size == total);
        let mut known = String::new();
        if same_size {
            let progress = self.progress.clone();
            let (sha256, _) = hash_file_with(path, |done| {
                if let Some(p) = &progress {
                    p("hashing", path, done, total);
                }
            })
            .map_err(io)?;
            match self.dataset(&sha256).await {
                Ok(info) if info.ready => return Ok(Uploaded { info, sent: false }),
                Ok(_) | Err(ClientError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            known = sha256;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "data".into());
        // The upload names itself, so that a broken stream can be resumed
        // where the node says it stopped.
        let mut id = fresh_id();
        let candidates: Vec<String> = std::iter::once(self.endpoint.clone())
            .chain(self.peer_endpoints().await)
            .collect();
        let stamp = |m: std::fs::Metadata| (m.len(), m.modified().ok());
        let at_start = stamp(std::fs::metadata(path).map_err(io)?);
        let mut offset = 0u64;
        // The sha256 of what was sent, in file order across the streams.
        let hashed = std::sync::Arc::new(std::sync::Mutex::new(SentHash::default()));
        // Since when no stream has moved the upload on: bounds the retries
        // as a watch's are bounded.
        let mut lost_since: Option<std::time::Instant> = None;
        let gave_up = |since: std::time::Instant, why: &str, ep: &str| {
            (since.elapsed() >= WATCH_RECONNECT).then(|| ClientError::Unreachable {
                endpoint: ep.to_string(),
                reason: format!(
                    "the upload made no progress for {} s (last: {why})",
                    WATCH_RECONNECT.as_secs()
                ),
            })
        };
        loop {
            // A resumed stream sends the rest of the same bytes.
            if at_start != stamp(std::fs::metadata(path).map_err(io)?) {
                return Err(ClientError::Io(format!(
                    "{}: the file changed while it was being uploaded",
                    path.display()
                )));
            }
            let up = Outgoing {
                path,
                id: &id,
                sha256: &known,
                name: &name,
                size: total,
                hashed: &hashed,
            };
            let sent = self.upload_from(&up, offset).await;
            let s = match sent {
                Ok(info) => {
                    // End to end: the cluster names the bytes it stored by
                    // their sha256; they must be the file's.
                    let mine =
                        std::mem::take(&mut *hashed.lock().unwrap_or_else(|e| e.into_inner()))
                            .finish(total);
                    if let Some(mine) = mine.filter(|m| *m != info.sha256) {
                        return Err(ClientError::Refused {
                            endpoint: self.endpoint.clone(),
                            message: format!(
                                "{}: the cluster stored sha256:{} but the file's bytes hash to {mine}; do not use that dataset (petuum-client data rm)",
                                path.display(),
                                info.sha256
                            ),
                        });
                    }
                    return Ok(Uploaded { info, sent: true });
                }
                Err(UploadFailure::Local(e)) => return Err(e),
                Err(UploadFailure::Call(s)) => s,
            };
            let since = *lost_since.get_or_insert_with(std::time::Instant::now);
            if offset > 0 && !lost_node(&s) {
                match s.code() {
                    // The node let the upload go between our question and
                    // the resume (kept too long, or pushed out): start
                    // again there.
                    tonic::Code::NotFound => {
                        id = fresh_id();
                        offset = 0;
                        self.notify(Switch::UploadResumed {
                            endpoint: self.endpoint.clone(),
                            offset,
                            size: total,
                        });
                        continue;
                    }
                    // Busy with other uploads: the same node, shortly.
                    tonic::Code::ResourceExhausted => {
                        if let Some(e) = gave_up(since, s.message(), &self.endpoint) {
                            return Err(e);
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                    _ => {}
                }
            }
            if !lost_node(&s) {
                return Err(self.err(s));
            }
            let reason = s.message().to_string();
            let at = self
                .reconnect(Probe::Upload(&id), &candidates, &reason, since)
                .await?;
            if at > offset {
                lost_since = None;
            } else {
                // No progress since the last try: not at once again.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            if at == 0 {
                // That node holds nothing of it: a new upload there.
                id = fresh_id();
            }
            offset = at;
            self.notify(Switch::UploadResumed {
                endpoint: self.endpoint.clone(),
                offset,
                size: total,
            });
        }
    }

    /// One stream of an upload, from byte `offset` of the file on.
    async fn upload_from(
        &mut self,
        up: &Outgoing<'_>,
        offset: u64,
    ) -> Result<DatasetInfo, UploadFailure> {
        use std::io::Seek;
        let Outgoing {
            path,
            id,
            sha256,
            name,
            size,
            hashed,
        } = *up;
        let io = |e: std::io::Error| {
            UploadFailure::Local(ClientError::Io(format!("{}: {e}", path.display())))
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        file.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
        let shown = path.display().to_string();
        let (progress, owned, mut sent) = (self.progress.clone(), path.to_path_buf(), offset);
        // The file is read as the stream is sent (1 MiB a message).
        let mut first = Some((sha256.to_string(), name.to_string(), size));
        let (id, hashed) = (id.to_string(), hashed.clone());
        let messages = futures::stream::poll_fn(move |_| {
            let mut buf = vec![0u8; UPLOAD_MESSAGE];
            let n = match read_full(&mut file, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    // The server sees a short upload and refuses it.
                    eprintln!("petuum-client: reading {shown}: {e}");
                    0
                }
            };
            buf.truncate(n);
            hashed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .feed(sent, &buf);
            sent += n as u64;
            if let Some(p) = &progress {
                p("uploading", &owned, sent, size);
            }
            // The first message always goes (it names the file and where
            // the stream starts, and is the whole upload of an empty one);
            // later ones while bytes come.
            let is_first = first.is_some();
            let (sha256, name, size) = first.take().unwrap_or_default();
            if n == 0 && !is_first {
                return std::task::Poll::Ready(None);
            }
            std::task::Poll::Ready(Some(petuum_proto::v1::UploadChunk {
                sha256,
                name,
                size,
                data: buf.into(),
                upload_id: if is_first { id.clone() } else { String::new() },
                offset: if is_first { offset } else { 0 },
            }))
        });
        let req = self.req(messages);
        self.jobs
            .upload(req)
            .await
            .map(|r| r.into_inner())
            .map_err(UploadFailure::Call)
    }

    /// Uploads the local data files of a checked spec and points the spec
    /// at them (`sha256:<hex>`), so nodes that cannot see this machine's
    /// files can run it. A data path that is a URL, already a dataset, or
    /// not a file here is left for the cluster to resolve. Returns what
    /// was uploaded, by field.
    pub async fn upload_data(
        &mut self,
        s: &mut Submission,
    ) -> Result<Vec<(String, Uploaded)>, ClientError> {
        let mut doc: toml::Table = s.text.parse().map_err(|e: toml::de::Error| {
            ClientError::Invalid(format!("{}: {}", s.origin, e.message()))
        })?;
        let mut done = Vec::new();
        if let Some(toml::Value::Table(data)) = doc.get_mut("data") {
            for field in DATA_FIELDS {
                let Some(toml::Value::String(v)) = data.get_mut(field) else {
                    continue;
                };
                let p = Path::new(v.as_str());
                if petuum_core::spec::is_remote(p) {
                    continue;
                }
                let full = s.base_dir.join(p);
                if !full.is_file() {
                    continue;
                }
                let up = self.upload(&full).await?;
                *v = format!("sha256:{}", up.info.sha256);
                done.push((format!("data.{field}"), up));
            }
        }
        if !done.is_empty() {
            s.text = toml::to_string(&doc).map_err(|e| ClientError::Invalid(e.to_string()))?;
        }
        Ok(done)
    }

    /// Downloads the trained model to `out` (written atomically); returns
    /// its size.
    ///
    /// A download whose node goes away starts again through another node
    /// of the cluster (the model lives on the job's shards, not on the
    /// node that answered), for up to [`WATCH_RECONNECT`].
    pub async fn model(&mut self, job: u64, out: &Path) -> Result<u64, ClientError> {
        // The cluster's nodes, asked while this one answers.
        let candidates: Vec<String> = std::iter::once(self.endpoint.clone())
            .chain(self.peer_endpoints().await)
            .collect();
        let mut lost_since: Option<std::time::Instant> = None;
        let bytes = loop {
            let s = match self.model_bytes(job).await {
                Ok(bytes) => break bytes,
                Err(s) if lost_node(&s) => s,
                Err(s) => return Err(self.err(s)),
            };
            let since = *lost_since.get_or_insert_with(std::time::Instant::now);
            let reason = s.message().to_string();
            self.reconnect(Probe::Job(job), &candidates, &reason, since)
                .await?;
        };
        let tmp = out.with_extension("part");
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, out))
            .map_err(|e| ClientError::Io(format!("{}: {e}", out.display())))?;
        Ok(bytes.len() as u64)
    }
}

impl Client {
    /// The model file's bytes, in one stream.
    async fn model_bytes(&mut self, job: u64) -> Result<Vec<u8>, tonic::Status> {
        let req = self.req(petuum_proto::v1::JobRef { job });
        let mut stream = self.jobs.model(req).await?.into_inner();
        let mut bytes = Vec::new();
        while let Some(c) = stream.message().await? {
            bytes.extend_from_slice(&c.data);
        }
        Ok(bytes)
    }
}

/// The status of a cluster as one node sees it (its nodes and the Raft
/// groups it hosts, with their leaders).
pub use petuum_proto::v1::StatusReply;

/// The endpoints of an `--endpoint` value: one, or several separated by
/// commas.
pub fn endpoint_list(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect()
}

/// `call` on each of `list`'s endpoints in order until one is reachable:
/// its answer (success or refusal) is the answer. When none is, the error
/// names each endpoint's reason.
pub async fn first_reachable<'a, T, F, Fut>(list: &'a str, mut call: F) -> Result<T, ClientError>
where
    F: FnMut(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let endpoints = endpoint_list(list);
    if endpoints.is_empty() {
        return Err(ClientError::Unreachable {
            endpoint: list.to_string(),
            reason: "no endpoint given".into(),
        });
    }
    let mut reasons = Vec::new();
    for ep in &endpoints {
        match call(ep).await {
            Err(ClientError::Unreachable { endpoint, reason }) if endpoints.len() > 1 => {
                reasons.push(format!("{endpoint}: {reason}"));
            }
            other => return other,
        }
    }
    Err(ClientError::Unreachable {
        endpoint: endpoints.join(", "),
        reason: format!("none answered ({})", reasons.join("; ")),
    })
}

/// Asks the node at `endpoint` (`http://host:port`) for the cluster's
/// status, sending `token` as a bearer token when given.
pub async fn cluster_status(
    endpoint: &str,
    token: Option<&str>,
) -> Result<StatusReply, ClientError> {
    let creds = Credentials {
        token: token.map(str::to_string),
        ..Default::default()
    };
    cluster_status_with(endpoint, &creds).await
}

/// [`cluster_status`] with any [`Credentials`].
pub async fn cluster_status_with(
    endpoint: &str,
    creds: &Credentials,
) -> Result<StatusReply, ClientError> {
    cluster_call(endpoint, creds, None).await
}

/// Changes a member: `action` is "add" (back in service), "drain" (move
/// its replicas, leaderships and workers elsewhere) or "remove" (drain,
/// then leave the cluster). Answers with the status once the change is
/// recorded; the moves follow (watch them with [`cluster_status_with`]).
pub async fn membership(
    endpoint: &str,
    creds: &Credentials,
    action: &str,
    node: u64,
) -> Result<StatusReply, ClientError> {
    cluster_call(endpoint, creds, Some((action, node))).await
}

async fn cluster_call(
    endpoint: &str,
    creds: &Credentials,
    change: Option<(&str, u64)>,
) -> Result<StatusReply, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        endpoint: endpoint.to_string(),
        reason,
    };
    let channel = creds
        .endpoint(endpoint)?
        .timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| unreachable(transport_error(&e)))?;
    let mut client = petuum_proto::v1::cluster_client::ClusterClient::new(channel);
    let header = creds.header(endpoint)?;
    let reply = match change {
        None => {
            let mut req = tonic::Request::new(petuum_proto::v1::StatusRequest {});
            if let Some(v) = header {
                req.metadata_mut().insert("authorization", v);
            }
            client.status(req).await
        }
        Some((action, node)) => {
            let mut req = tonic::Request::new(petuum_proto::v1::MembershipRequest {
                action: action.to_string(),
                node,
            });
            if let Some(v) = header {
                req.metadata_mut().insert("authorization", v);
            }
            client.membership(req).await
        }
    };
    reply
        .map(|r| r.into_inner())
        .map_err(|s| ClientError::Refused {
            endpoint: endpoint.to_string(),
            message: s.message().to_string(),
        })
}

/// Reads a job spec, resolves its paths and validates it completely
/// (fields, data files, algorithm and hyperparameters).
pub fn load_job(path: &Path) -> Result<JobSpec, ClientError> {
    let mut spec = JobSpec::from_file(path)?;
    petuum_algorithms::apply_defaults(&mut spec);
    petuum_algorithms::validate(&spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::{lost_node, SentHash};
    use tonic::{Code, Status};

    /// Streams that overlap (a resume starts where the node stopped,
    /// before what this side read) hash each byte once, in order.
    #[test]
    fn an_uploads_hash_covers_each_byte_once_across_resumed_streams() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = {
            let mut h = SentHash::default();
            h.feed(0, &data);
            h.finish(data.len() as u64).unwrap()
        };
        let mut h = SentHash::default();
        h.feed(0, &data[..4000]);
        h.feed(4000, &data[4000..6000]);
        // The node held 3000 bytes: the next stream starts there.
        h.feed(3000, &data[3000..5000]);
        h.feed(5000, &data[5000..]);
        assert_eq!(h.finish(data.len() as u64).unwrap(), whole);
        // Short of the end: no hash to compare.
        let mut h = SentHash::default();
        h.feed(0, &data[..10]);
        assert!(h.finish(data.len() as u64).is_none());
    }

    #[test]
    fn a_watch_moves_on_for_a_lost_node_and_stops_for_an_answer() {
        // The node went away or the connection broke: try another node.
        for s in [
            Status::unavailable("transport error"),
            Status::unknown("connection reset"),
            Status::cancelled("the node is shutting down"),
            Status::new(
                Code::Internal,
                "h2 protocol error: error reading a body from connection",
            ),
        ] {
            assert!(lost_node(&s), "{s:?}");
        }
        // Made here from a transport error (a keepalive that timed out,
        // a broken pipe), whatever its code: the error is its source.
        let broken = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "http2 error",
        )));
        assert!(lost_node(&broken), "{broken:?}");
        // An answer about the request: the watch ends with it.
        for s in [
            Status::not_found("no job 7"),
            Status::unauthenticated("a bearer token is required"),
            Status::permission_denied("not allowed"),
            Status::invalid_argument("bad job id"),
            Status::internal("the job record is corrupt"),
        ] {
            assert!(!lost_node(&s), "{s:?}");
        }
    }
}

#[cfg(test)]
mod order {
    use super::{newer, JobInfo};

    fn rec(epoch: u64, clock: u64, state: &str) -> JobInfo {
        JobInfo {
            epoch,
            clock,
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_watch_shows_a_record_only_when_it_is_later_than_the_last() {
        let last = rec(2, 30, "running");
        // The same record again, or an older one from a replica behind.
        assert!(!newer(&rec(2, 30, "running"), &last));
        assert!(!newer(&rec(2, 29, "running"), &last));
        assert!(!newer(&rec(1, 40, "running"), &last));
        // Further on, a later run from an earlier checkpoint, a change at
        // the same clock, the end.
        assert!(newer(&rec(2, 31, "running"), &last));
        assert!(newer(&rec(3, 24, "recovering"), &last));
        assert!(newer(&rec(2, 30, "paused"), &last));
        assert!(newer(&rec(2, 30, "succeeded"), &last));
        // Nothing follows an end.
        assert!(!newer(&rec(3, 0, "running"), &rec(2, 30, "succeeded")));
    }
}
