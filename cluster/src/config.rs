//! A node's configuration file (`petuumd serve --config node.toml`),
//! validated with errors that name the field.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// An error in a node configuration, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `{field}`: {reason}")]
    Field {
        path: String,
        field: String,
        reason: String,
    },
}

/// One member of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node id (> 0, unique).
    pub id: u64,
    /// `host:port` where the peer listens (its `advertise` address).
    pub addr: String,
}

/// Raft timing and batching knobs (docs/cluster.md, "Tuning").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a random time in
    /// `[election_timeout_min_ms, election_timeout_max_ms)` starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and purge the log before it) after this many entries.
    pub snapshot_after_entries: u64,
    /// Also take one once this many MiB of entries were applied since the
    /// last snapshot, and at least as many as that snapshot holds: bounds
    /// the log a restart replays.
    pub snapshot_after_mib: u64,
    /// Entries kept in the log behind a snapshot (openraft purges the rest
    /// once the snapshot is stored): a follower that far behind catches up
    /// from the log, one further behind gets the snapshot. Few, so that the
    /// entries are deleted while still in RocksDB's memtable and are never
    /// flushed to disk (docs/performance.md, "The second job's memtable
    /// flush").
    pub log_kept_after_snapshot: u64,
    /// Most entries in one append-entries message.
    pub max_entries_per_append: u64,
    /// Deadline of one Raft RPC.
    pub rpc_timeout_ms: u64,
    /// Send the small Raft messages of all groups to a peer together (one
    /// call for what is queued), rather than one call per message. Off by
    /// default until a RaftCore panic seen once in a chaos run with it on
    /// is explained (docs/performance.md).
    pub coalesce_messages: bool,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 75,
            // A follower campaigns after the leader lease (openraft: the
            // maximum) plus a random timeout: 480-640 ms without a
            // heartbeat. 300-600 made it 900-1200 ms and a failover 1.2 s
            // at the median, 1.6-2.1 s at worst (docs/performance.md).
            election_timeout_min_ms: 160,
            election_timeout_max_ms: 320,
            snapshot_after_entries: 5000,
            // Small against RocksDB's 64 MiB memtable: with few entries
            // kept behind a snapshot, the log's entries are deleted before
            // their memtable is flushed (docs/performance.md, "The second
            // job's memtable flush"); the snapshot's own size still bounds
            // how often a large state is written.
            snapshot_after_mib: 4,
            log_kept_after_snapshot: 20,
            max_entries_per_append: 256,
            rpc_timeout_ms: 2000,
            coalesce_messages: false,
        }
    }
}

/// How long ended jobs are kept (their records, checkpoints and models):
/// the metadata leader deletes the oldest beyond `keep_finished`, and any
/// that ended more than `keep_days` ago. 0 turns a limit off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub keep_finished: u32,
    pub keep_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_finished: 1000,
            keep_days: 30,
        }
    }
}

impl Retention {
    /// The ended jobs to delete now: `(id, finished_ms)` of every ended job,
    /// at time `now_ms`.
    pub fn expired(&self, mut ended: Vec<(u64, u64)>, now_ms: u64) -> Vec<u64> {
        // Newest first.
        ended.sort_by_key(|&(id, at)| std::cmp::Reverse((at, id)));
        let max_age = self.keep_days as u64 * 86_400_000;
        ended
            .into_iter()
            .enumerate()
            .filter(|&(i, (_, at))| {
                (self.keep_finished > 0 && i >= self.keep_finished as usize)
                    || (self.keep_days > 0 && now_ms.saturating_sub(at) > max_age)
            })
            .map(|(_, (id, _))| id)
            .collect()
    }
}

/// The dataset store (docs/jobs.md, "Data that reaches every node").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetsConfig {
    /// Nodes that keep a copy of each dataset (0: the cluster's
    /// `replicas`). An upload is acknowledged once a majority of them have
    /// it; the rest copy it in the background.
    pub replicas: u32,
    /// The largest dataset an upload or URL may bring, in MiB.
    pub max_mib: u64,
    /// Uploads and URL fetches one node takes at once; more are refused
    /// as busy.
    pub max_ingests: u32,
    /// Let job specs name `http(s)://` URLs on loopback or private
    /// addresses. Off by default: a client could otherwise make the nodes
    /// fetch from their own network (cloud metadata services, internal
    /// endpoints). Link-local addresses are refused always.
    pub allow_private_urls: bool,
}

impl Default for DatasetsConfig {
    fn default() -> Self {
        DatasetsConfig {
            replicas: 0,
            max_mib: 64 << 10,
            max_ingests: 4,
            allow_private_urls: false,
        }
    }
}

/// TLS files for mutual authentication between nodes (and with clients).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// The CA that signs every node's certificate (PEM); peers must present
    /// a certificate it signed.
    pub ca: PathBuf,
}

/// A node's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (> 0, one of `peers`). A node that joins with `join`
    /// may leave it out (0) and get one from the cluster, except with
    /// `[tls]`, where it must be the id its certificate names.
    #[serde(default)]
    pub id: u64,
    /// Address the node listens on (Raft, table traffic and the client API
    /// share it).
    pub listen: SocketAddr,
    /// Address peers and clients use to reach this node (default: `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// The address this node's connections to its peers come from
    /// (default: the system's choice). Set it on a host with several
    /// addresses so that peers, firewalls and network policies see the
    /// node by its own address; the test harness gives each local node one
    /// of 127.0.0.0/8 so that a partition can be made between two of them.
    #[serde(default)]
    pub source_address: Option<std::net::IpAddr>,
    /// Where the node keeps its RocksDB and cluster identity.
    pub data_dir: PathBuf,
    /// Every member of the initial cluster, this node included. All nodes
    /// that form a cluster must list the same ids. Only read on a node's
    /// first start (and as addresses to try): from then on the members are
    /// what the metadata group records.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Addresses (`host:port`) of members of a running cluster: a node
    /// with no cluster identity yet joins through the first that answers,
    /// and starts empty; the placement driver then moves replicas to it.
    #[serde(default)]
    pub join: Vec<String>,
    /// How long a member may stay unreachable before it is declared dead
    /// for good and its replicas are rebuilt on other nodes: `"10m"`,
    /// `"90s"`, `"1h"`, or seconds (default 10 minutes). A preempted VM
    /// that comes back sooner keeps its replicas.
    #[serde(default = "default_down_after", with = "duration_text")]
    pub down_after: std::time::Duration,
    /// Replicas per shard (fewer when the cluster is smaller).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Shards in the cluster's shard space: every table is spread over
    /// them. Fixed when the cluster forms; unset, a forming cluster takes
    /// [`DEFAULT_SHARDS`] and a node with a stored identity its stored
    /// value (so a change of the default never strands a cluster formed
    /// under the old one). Read it through [`NodeConfig::shards`].
    #[serde(default)]
    pub shards: Option<u32>,
    #[serde(default)]
    pub raft: RaftTuning,
    /// Mutual TLS between nodes; without it traffic is plain HTTP/2.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// A file holding the bearer token clients must send (never logged).
    #[serde(default)]
    pub client_token_file: Option<PathBuf>,
    /// The largest message a node accepts from a peer, in MiB (a Raft
    /// append, a checkpoint part, a batch). A larger one is refused with
    /// OUT_OF_RANGE (tonic) before it is buffered whole.
    #[serde(default = "default_max_message_mb")]
    pub max_message_mb: u32,
    /// The most memory one job's model may use on this node, in MiB; a
    /// larger one (its sizes come from the spec and the data) fails the
    /// job at its start with the sizes that made it large. 0 (the
    /// default): a quarter of the node's memory.
    #[serde(default)]
    pub max_model_mb: u64,
    /// Serve without `[tls]` or `client_token_file` on an address other
    /// machines can reach. Off by default: such a node refuses to start
    /// (anyone who reaches the port could submit or drop jobs, forge Raft
    /// messages and read every table). When on, every start logs a warning.
    #[serde(default)]
    pub insecure: bool,
    /// Address of the HTTP endpoint: Prometheus metrics at `/metrics` and
    /// the web dashboard at `/` (docs/operations.md). Off when absent. It
    /// asks for the client token when `client_token_file` is set; an
    /// address beyond loopback needs that token unless `insecure = true`.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// Directories job data may come from. A submitted spec whose data
    /// files (after resolving links) lie outside all of them is refused,
    /// naming the field. Empty (the default): any path the daemon's user
    /// can read.
    #[serde(default)]
    pub data_roots: Vec<PathBuf>,
    /// Deleting ended jobs (docs/jobs.md, "Retention").
    #[serde(default)]
    pub retention: Retention,
    /// The dataset store.
    #[serde(default)]
    pub datasets: DatasetsConfig,
}

fn default_down_after() -> std::time::Duration {
    std::time::Duration::from_secs(600)
}

/// A duration written as `"10m"`, `"90s"`, `"1h"`, `"500ms"`, or a number
/// of seconds.
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Secs(u64),
            Text(String),
        }
        match Text::deserialize(d)? {
            Text::Secs(s) => Ok(Duration::from_secs(s)),
            Text::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    pub fn parse(t: &str) -> Result<Duration, String> {
        let t = t.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{t}` is not a duration such as \"10m\" or \"90s\""))?;
        let ms = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            u => return Err(format!("`{t}`: unknown unit `{u}` (ms, s, m or h)")),
        };
        n.checked_mul(ms)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("`{t}` is too long"))
    }
}

fn default_max_message_mb() -> u32 {
    256
}

fn default_replicas() -> u32 {
    3
}
/// The shard space of a cluster whose founders' configs leave `shards`
/// out. Every clock of every worker is a Raft entry on every shard (each
/// shard tracks each worker's clock), so a clock's cost grows with the
/// shard count, not with the rows it touches: the README's MNIST job on
/// three local nodes took 7.5-8.4 s with 64 shards, 4.1-4.4 s with 16 and 3.4-3.6 s
/// with 8 (docs/performance.md). 16 spreads leaders and replicas over up
/// to 16 nodes; a larger cluster sets more.
pub const DEFAULT_SHARDS: u32 = 16;

impl NodeConfig {
    /// The shard space: as set, or [`DEFAULT_SHARDS`] (after a node has
    /// opened its data directory, the cluster's).
    pub fn shards(&self) -> u32 {
        self.shards.unwrap_or(DEFAULT_SHARDS)
    }

    /// How many nodes keep each dataset: `datasets.replicas`, else the
    /// cluster's `replicas`, at most the number of nodes (`members`).
    pub fn dataset_replicas(&self, members: usize) -> usize {
        let r = match self.datasets.replicas {
            0 => self.replicas,
            r => r,
        };
        (r as usize).clamp(1, members.max(1))
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let cfg: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string().trim().to_string(),
        })?;
        cfg.validate(&shown)?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::Field {
            path: path.to_string(),
            field: field.to_string(),
            reason,
        };
        if self.id == 0 && (self.join.is_empty() || self.tls.is_some()) {
            return Err(err(
                "id",
                if self.join.is_empty() {
                    "node ids start at 1 (0 means `no node`)".into()
                } else {
                    "a node joining with [tls] needs the id its certificate names".into()
                },
            ));
        }
        if self.peers.is_empty() && self.join.is_empty() {
            return Err(err(
                "peers",
                "list at least this node (or give `join` to join a running cluster)".into(),
            ));
        }
        for (i, a) in self.join.iter().enumerate() {
            if !a.contains(':') {
                return Err(err(
                    &format!("join[{i}]"),
                    format!("`{a}` is not host:port"),
                ));
            }
        }
        if self.down_after < std::time::Duration::from_secs(1) {
            return Err(err("down_after", "must be at least one second".into()));
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.id == 0 {
                return Err(err(&format!("peers[{i}].id"), "node ids start at 1".into()));
            }
            if !ids.insert(p.id) {
                return Err(err(
                    &format!("peers[{i}].id"),
                    format!("node {} listed twice", p.id),
                ));
            }
            if !p.addr.contains(':') {
                return Err(err(
                    &format!("peers[{i}].addr"),
                    format!("`{}` is not host:port", p.addr),
                ));
            }
            if !addrs.insert(p.addr.clone()) {
                return Err(err(
                    &format!("peers[{i}].addr"),
                    format!("address {} listed twice", p.addr),
                ));
            }
        }
        if !self.peers.is_empty() && self.join.is_empty() && !ids.contains(&self.id) {
            return Err(err(
                "peers",
                format!("this node (id {}) is not among the peers", self.id),
            ));
        }
        if self.replicas == 0 {
            return Err(err("replicas", "must be at least 1".into()));
        }
        if !(1..=4096).contains(&self.max_message_mb) {
            return Err(err(
                "max_message_mb",
                format!("{} is not in 1..=4096", self.max_message_mb),
            ));
        }
        if self.datasets.max_mib == 0 || self.datasets.max_ingests == 0 {
            return Err(err(
                "datasets",
                "max_mib and max_ingests must be positive".into(),
            ));
        }
        if let Some(n) = self.shards.filter(|n| !(1..=4096).contains(n)) {
            return Err(err("shards", format!("{n} is not in 1..=4096")));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 {
            return Err(err("raft.heartbeat_ms", "must be positive".into()));
        }
        if r.election_timeout_min_ms <= r.heartbeat_ms * 2 {
            return Err(err(
                "raft.election_timeout_min_ms",
                format!(
                    "{} ms must exceed twice the heartbeat ({} ms)",
                    r.election_timeout_min_ms, r.heartbeat_ms
                ),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(err(
                "raft.election_timeout_max_ms",
                "must exceed election_timeout_min_ms".into(),
            ));
        }
        if r.snapshot_after_entries == 0
            || r.snapshot_after_mib == 0
            || r.max_entries_per_append == 0
            || r.rpc_timeout_ms == 0
        {
            return Err(err(
                "raft",
                "snapshot_after_entries, snapshot_after_mib, max_entries_per_append and rpc_timeout_ms must be positive"
                    .into(),
            ));
        }
        if let Some(tls) = &self.tls {
            for (field, p) in [
                ("tls.cert", &tls.cert),
                ("tls.key", &tls.key),
                ("tls.ca", &tls.ca),
            ] {
                if !p.is_file() {
                    return Err(err(
                        field,
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        if let Some(t) = &self.client_token_file {
            if !t.is_file() {
                return Err(err(
                    "client_token_file",
                    format!("{} is not a readable file", t.display()),
                ));
            }
        }
        for (i, r) in self.data_roots.iter().enumerate() {
            if !r.is_absolute() || !r.is_dir() {
                return Err(err(
                    &format!("data_roots[{i}]"),
                    format!("{} is not an absolute path to a directory", r.display()),
                ));
            }
        }
        if let Some(http) = self.http_listen {
            if http == self.listen {
                return Err(err(
                    "http_listen",
                    format!("{http} is also `listen`: the HTTP endpoint needs its own port"),
                ));
            }
            if !http.ip().is_loopback() && self.client_token_file.is_none() && !self.insecure {
                return Err(err(
                    "http_listen",
                    format!(
                        "{http} is reachable beyond this machine but client_token_file is not configured, so anyone who reaches it could read every job and metric: configure client_token_file (docs/operations.md), use a loopback address, or set insecure = true"
                    ),
                ));
            }
        }
        let missing = self.missing_protection();
        if !missing.is_empty() && !self.insecure {
            return Err(err(
                "listen",
                format!(
                    "{} is reachable beyond this machine but {} {} not configured, so peers and clients would be unauthenticated: configure {} (docs/deploy.md), or set insecure = true to run open anyway",
                    self.listen,
                    missing.join(" and "),
                    if missing.len() > 1 { "are" } else { "is" },
                    if missing.len() > 1 { "them" } else { "it" },
                ),
            ));
        }
        Ok(())
    }

    /// Refuses data files outside `data_roots` (when it is set), naming the
    /// spec field. Paths are compared after resolving links, so a link
    /// inside a root cannot point out of it.
    pub fn check_data_paths<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a str, &'a Path)>,
    ) -> Result<(), String> {
        if self.data_roots.is_empty() {
            return Ok(());
        }
        let roots: Vec<PathBuf> = self
            .data_roots
            .iter()
            .map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone()))
            .collect();
        for (field, path) in files {
            if petuum_core::spec::is_remote(path) {
                continue;
            }
            let real = std::fs::canonicalize(path)
                .map_err(|e| format!("`{field}`: {}: {e}", path.display()))?;
            if !roots.iter().any(|r| real.starts_with(r)) {
                return Err(format!(
                    "`{field}`: {} is outside this cluster's data_roots ({}); put the data under one of them",
                    path.display(),
                    self.data_roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(())
    }

    /// What is missing for a node reachable beyond this machine (a
    /// `listen` address that is not loopback): `[tls]`, `client_token_file`
    /// or both. Empty on loopback or when both are configured.
    pub fn missing_protection(&self) -> Vec<&'static str> {
        if self.listen.ip().is_loopback() {
            return Vec::new();
        }
        let mut missing = Vec::new();
        if self.tls.is_none() {
            missing.push("[tls]");
        }
        if self.client_token_file.is_none() {
            missing.push("client_token_file");
        }
        missing
    }

    /// The address peers use for this node.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "node.toml".into(),
            message: e.to_string(),
        })?;
        cfg.validate("node.toml")?;
        Ok(cfg)
    }

    const GOOD: &str = r#"
id = 1
listen = "127.0.0.1:7070"
data_dir = "/tmp/x"
peers = [{ id = 1, addr = "127.0.0.1:7070" }, { id = 2, addr = "127.0.0.1:7071" }]
"#;

    #[test]
    fn defaults_and_errors_name_the_field() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            (c.replicas, c.shards(), c.shards),
            (3, DEFAULT_SHARDS, None)
        );
        assert_eq!(c.advertised(), "127.0.0.1:7070");
        let e = parse(&GOOD.replace("id = 1\n", "id = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`peers`") && e.contains("id 3"), "{e}");
        let e = parse(&GOOD.replace("id = 1\n", "id = \"one\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("id"), "{e}");
        let e = parse(&format!("{GOOD}\nshards = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`shards`"), "{e}");
        let e = parse(&format!("{GOOD}\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = parse(&format!("{GOOD}\n[raft]\nelection_timeout_min_ms = 100\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("raft.election_timeout_min_ms"), "{e}");
        let e = parse(&GOOD.replace("7071", "7070"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("peers[1].addr"), "{e}");
    }

    #[test]
    fn a_node_reachable_from_other_machines_needs_tls_and_a_token_or_insecure() {
        let open = GOOD.replace("listen = \"127.0.0.1:7070\"", "listen = \"0.0.0.0:7070\"");
        let e = parse(&open).unwrap_err().to_string();
        assert!(
            e.contains("`listen`")
                && e.contains("[tls] and client_token_file")
                && e.contains("insecure = true"),
            "{e}"
        );
        // With only a token, TLS is still missing.
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret").unwrap();
        let with_token = format!(
            "client_token_file = {:?}\n{open}",
            token.display().to_string()
        );
        let e = parse(&with_token).unwrap_err().to_string();
        assert!(e.contains("[tls] is not configured"), "{e}");
        assert!(!e.contains("s3cret"), "the token leaked into an error: {e}");
        // Said explicitly, it starts (and logs a warning at every start).
        let c = parse(&format!("insecure = true\n{open}")).unwrap();
        assert_eq!(c.missing_protection(), vec!["[tls]", "client_token_file"]);
        // Loopback needs nothing.
        assert!(parse(GOOD).unwrap().missing_protection().is_empty());
    }

    #[test]
    fn an_http_endpoint_beyond_loopback_needs_the_client_token() {
        let c = parse(&format!("http_listen = \"127.0.0.1:9100\"\n{GOOD}")).unwrap();
        assert_eq!(c.http_listen, Some("127.0.0.1:9100".parse().unwrap()));
        let open = format!("http_listen = \"0.0.0.0:9100\"\n{GOOD}");
        let e = parse(&open).unwrap_err().to_string();
        assert!(
            e.contains("`http_listen`") && e.contains("client_token_file"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret").unwrap();
        let c = parse(&format!(
            "client_token_file = {:?}\n{open}",
            token.display().to_string()
        ))
        .unwrap();
        assert!(c.http_listen.is_some());
        let e = parse(&format!("http_listen = \"127.0.0.1:7070\"\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("its own port"), "{e}");
    }

    #[test]
    fn data_outside_the_roots_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(root.join("train.csv"), "a\n").unwrap();
        std::fs::write(other.join("secret.csv"), "a\n").unwrap();
        // A link inside the root that points out of it.
        std::os::unix::fs::symlink(other.join("secret.csv"), root.join("link.csv")).unwrap();
        let c = parse(&format!(
            "data_roots = [{:?}]\n{GOOD}",
            root.display().to_string()
        ))
        .unwrap();
        let train = root.join("train.csv");
        assert!(c
            .check_data_paths([("data.train", train.as_path())])
            .is_ok());
        let secret = other.join("secret.csv");
        let e = c
            .check_data_paths([
                ("data.train", train.as_path()),
                ("data.test", secret.as_path()),
            ])
            .unwrap_err();
        assert!(e.contains("`data.test`") && e.contains("data_roots"), "{e}");
        let link = root.join("link.csv");
        let e = c
            .check_data_paths([("data.train", link.as_path())])
            .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        // No roots: any path.
        let open = parse(GOOD).unwrap();
        assert!(open
            .check_data_paths([("data.test", secret.as_path())])
            .is_ok());
        let e = parse(&format!("data_roots = [\"relative\"]\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("data_roots[0]"), "{e}");
    }

    #[test]
    fn retention_keeps_the_newest_and_the_recent() {
        let day = 86_400_000u64;
        let now = 100 * day;
        let ended = vec![(1, 10 * day), (2, 99 * day), (3, 98 * day), (4, 97 * day)];
        let r = Retention {
            keep_finished: 2,
            keep_days: 30,
        };
        let mut gone = r.expired(ended.clone(), now);
        gone.sort();
        assert_eq!(gone, vec![1, 4]);
        let off = Retention {
            keep_finished: 0,
            keep_days: 0,
        };
        assert!(off.expired(ended.clone(), now).is_empty());
        let by_age = Retention {
            keep_finished: 0,
            keep_days: 30,
        };
        assert_eq!(by_age.expired(ended, now), vec![1]);
        let c = parse(&format!("{GOOD}\n[retention]\nkeep_finished = 5\n")).unwrap();
        assert_eq!((c.retention.keep_finished, c.retention.keep_days), (5, 30));
    }
}
