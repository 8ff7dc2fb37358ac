//! Job specs (docs/design.md §6): the TOML a user writes, validated before any
//! work starts, with errors that name the field and the problem.
//!
//! ```toml
//! name = "mnist-softmax"
//! algorithm = "multiclass_lr"
//!
//! [data]
//! format = "idx"
//! train = "data/mnist/train-images-idx3-ubyte"
//! train_labels = "data/mnist/train-labels-idx1-ubyte"
//!
//! [run]
//! workers = 2
//! consistency = "ssp"
//! staleness = 2
//! clocks = 10
//!
//! [model]
//! path = "models/mnist-softmax.safetensors"
//!
//! [params]
//! learning_rate = 0.5
//! ```
//!
//! Relative paths are resolved against the directory of the spec file.

use crate::consistency::Consistency;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A problem with a job spec.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SpecError {
    #[error("cannot read job spec {path}: {message}")]
    Read { path: String, message: String },
    #[error("job spec {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("job spec field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Formats of training data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// IDX images + IDX labels (MNIST), optionally gzip-compressed.
    Idx,
    /// libsvm / svmlight sparse text.
    Libsvm,
    /// CSV with a header row; the label column is named by `label_column`.
    Csv,
    /// UCI bag of words (`docword.txt`, with `vocab.txt`).
    UciBow,
    /// LDA-C (`N id:count ...`).
    Ldac,
    /// MatrixMarket (`%%MatrixMarket matrix coordinate|array ...`): a
    /// feature matrix (targets in `train_labels`) or a ratings matrix.
    MatrixMarket,
    /// Whitespace-separated `row col value` lines (ratings).
    Triples,
}

/// Where the data is and how to read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub format: DataFormat,
    pub train: PathBuf,
    #[serde(default)]
    pub train_labels: Option<PathBuf>,
    #[serde(default)]
    pub test: Option<PathBuf>,
    #[serde(default)]
    pub test_labels: Option<PathBuf>,
    /// CSV: the name of the label column (also of `train_labels`/`test_labels`
    /// when those are CSV files, e.g. `spam` in spamassassin's labels.csv).
    #[serde(default)]
    pub label_column: Option<String>,
    /// UCI bag of words: the vocabulary file (one word per line).
    #[serde(default)]
    pub vocab: Option<PathBuf>,
    /// libsvm: whether feature indices start at 1 (detected when absent).
    #[serde(default)]
    pub one_based: Option<bool>,
    /// Hold out this fraction of `train` as the test set when `test` is absent.
    #[serde(default)]
    pub test_fraction: Option<f64>,
}

/// Consistency model names as written in specs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyName {
    Bsp,
    Ssp,
    Essp,
    Async,
}

/// Bounds of `run.bandwidth_mbps`.
pub const MIN_BANDWIDTH_MBPS: f64 = 0.01;
pub const MAX_BANDWIDTH_MBPS: f64 = 1_000_000.0;

fn default_workers() -> u32 {
    2
}
/// `run.clocks` when neither the spec nor the algorithm's default
/// (`petuum_algorithms::apply_defaults`) says otherwise.
pub const DEFAULT_CLOCKS: i64 = 10;
fn default_seed() -> u64 {
    42
}
/// `run.shards` when neither the spec nor the algorithm's default
/// (`petuum_algorithms::apply_defaults`) says otherwise.
pub const DEFAULT_SHARDS: u32 = 8;

/// How to run the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Unset: "bsp" for a deterministic job or an algorithm that needs it
    /// (`petuum_algorithms::apply_defaults`), "ssp" otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyName>,
    /// SSP/ESSP staleness (default 2); not allowed with bsp or async.
    #[serde(default)]
    pub staleness: Option<i64>,
    /// Number of clocks (iterations) to run; for an algorithm that stops
    /// on convergence, the most it may run. Unset: the algorithm's default
    /// (1000 for the learners that stop on convergence or train a network
    /// in their automatic configuration; see
    /// `petuum_algorithms::apply_defaults`), else [`DEFAULT_CLOCKS`]; read
    /// it with [`RunSpec::clocks`].
    #[serde(default, rename = "clocks", skip_serializing_if = "Option::is_none")]
    pub clocks_set: Option<i64>,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Take a consistent checkpoint every this many clocks (0: never).
    #[serde(default)]
    pub checkpoint_every: i64,
    /// BSP, per-(worker, clock) RNG streams, batches applied in worker order:
    /// the same spec gives the same model bit for bit, even across resumes.
    #[serde(default)]
    pub deterministic: bool,
    /// How many shards hold the job's tables: the in-process shards of an
    /// embedded run; on a cluster, that many of the cluster's shards (all
    /// of them if it has fewer). Each clock of each worker is one entry on
    /// every shard of the job (each shard keeps every worker's clock), so
    /// a small model clocks fastest on few shards; many shards spread a
    /// large model's updates over more Raft groups and leaders. Unset: the
    /// algorithm's default (1 where every table is one row, which cannot
    /// spread; see `petuum_algorithms::apply_defaults`), else
    /// [`DEFAULT_SHARDS`]; read it with [`RunSpec::shards`].
    #[serde(default, rename = "shards", skip_serializing_if = "Option::is_none")]
    pub shards_set: Option<u32>,
    /// Managed communication: a budget, in megabits per second, for what
    /// this job's workers on one node send (clock pushes and early
    /// pushes). Within it, workers on a cluster push the largest
    /// increments of the clock they are in early, so readers on other
    /// nodes see them before the clock ends (docs/design.md). Unset: no
    /// early pushes. Not with `deterministic`; no effect embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<f64>,
    /// On a cluster, how many of the job's workers may share a node (as
    /// Bosen's worker threads share a client process); the scheduler
    /// fills a node up to it before the next. Unset: 1, one worker per
    /// node while nodes last. Workers on one node send their clocks
    /// together (node-level aggregation) and read the node's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_per_node: Option<u32>,
}

impl RunSpec {
    /// How many shards hold the job's tables: `run.shards` as set (by the
    /// spec or the algorithm's default), else [`DEFAULT_SHARDS`].
    pub fn shards(&self) -> u32 {
        self.shards_set.unwrap_or(DEFAULT_SHARDS)
    }

    /// How many clocks to run: `run.clocks` as set (by the spec or the
    /// algorithm's default), else [`DEFAULT_CLOCKS`].
    pub fn clocks(&self) -> i64 {
        self.clocks_set.unwrap_or(DEFAULT_CLOCKS)
    }
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            workers: default_workers(),
            consistency: None,
            staleness: None,
            clocks_set: None,
            seed: default_seed(),
            checkpoint_every: 0,
            deterministic: false,
            shards_set: None,
            bandwidth_mbps: None,
            workers_per_node: None,
        }
    }
}

/// Where the trained model goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub path: PathBuf,
}

/// A job as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub algorithm: String,
    pub data: DataSpec,
    #[serde(default)]
    pub run: RunSpec,
    pub model: ModelSpec,
    /// Algorithm hyperparameters, validated by the algorithm.
    #[serde(default)]
    pub params: toml::Table,
}

/// Limits that keep a typo from asking for a million threads.
pub const MAX_WORKERS: u32 = 4096;
pub const MAX_STALENESS: i64 = 1000;
pub const MAX_SHARDS: u32 = 4096;

impl JobSpec {
    /// Parses TOML text. `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<JobSpec, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads a spec file and resolves its relative paths against the
    /// file's directory.
    pub fn from_file(path: &Path) -> Result<JobSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut spec = JobSpec::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        spec.resolve_paths(base);
        Ok(spec)
    }

    /// The data files the job reads, with their field names.
    pub fn data_files(&self) -> Vec<(&'static str, &Path)> {
        let d = &self.data;
        let mut out = vec![("data.train", d.train.as_path())];
        for (field, p) in [
            ("data.train_labels", &d.train_labels),
            ("data.test", &d.test),
            ("data.test_labels", &d.test_labels),
            ("data.vocab", &d.vocab),
        ] {
            if let Some(p) = p {
                out.push((field, p.as_path()));
            }
        }
        out
    }

    /// Makes every relative path absolute against `base` (a dataset of the
    /// store or a URL is left as it is).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !is_remote(p) {
                *p = normalize(&base.join(&*p));
            }
        };
        fix(&mut self.data.train);
        for p in [
            &mut self.data.train_labels,
            &mut self.data.test,
            &mut self.data.test_labels,
            &mut self.data.vocab,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        fix(&mut self.model.path);
    }

    /// The consistency model's name: as given, else "bsp" for a
    /// deterministic job and "ssp" otherwise.
    pub fn consistency_name(&self) -> ConsistencyName {
        self.run.consistency.unwrap_or(if self.run.deterministic {
            ConsistencyName::Bsp
        } else {
            ConsistencyName::Ssp
        })
    }

    /// The consistency model the spec asks for.
    pub fn consistency(&self) -> Consistency {
        let s = self.run.staleness.unwrap_or(2).clamp(0, MAX_STALENESS) as u32;
        match self.consistency_name() {
            ConsistencyName::Bsp => Consistency::Bsp,
            ConsistencyName::Ssp => Consistency::Ssp { staleness: s },
            ConsistencyName::Essp => Consistency::Essp { staleness: s },
            ConsistencyName::Async => Consistency::Async,
        }
    }

    /// Number of clocks to run (validated to be positive).
    pub fn clocks(&self) -> u64 {
        self.run.clocks().max(0) as u64
    }

    /// Checks everything that does not depend on the algorithm, including
    /// that the data files exist. Algorithms check `params` themselves.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() {
            return Err(SpecError::invalid("name", "must not be empty"));
        }
        let r = &self.run;
        if r.workers == 0 || r.workers > MAX_WORKERS {
            return Err(SpecError::invalid(
                "run.workers",
                format!("must be between 1 and {MAX_WORKERS} (got {})", r.workers),
            ));
        }
        if let Some(n) = r.shards_set.filter(|&n| n == 0 || n > MAX_SHARDS) {
            return Err(SpecError::invalid(
                "run.shards",
                format!("must be between 1 and {MAX_SHARDS} (got {n})"),
            ));
        }
        if let Some(s) = r.staleness {
            if s < 0 {
                return Err(SpecError::invalid(
                    "run.staleness",
                    format!("must be >= 0 (got {s})"),
                ));
            }
            if s > MAX_STALENESS {
                return Err(SpecError::invalid(
                    "run.staleness",
                    format!("must be <= {MAX_STALENESS} (got {s})"),
                ));
            }
            let c = self.consistency_name();
            if matches!(c, ConsistencyName::Bsp | ConsistencyName::Async) {
                return Err(SpecError::invalid(
                    "run.staleness",
                    format!("only ssp and essp take a staleness (consistency is {c:?})")
                        .to_lowercase(),
                ));
            }
        }
        if r.clocks() < 1 {
            return Err(SpecError::invalid(
                "run.clocks",
                format!("must be >= 1 (got {})", r.clocks()),
            ));
        }
        if r.checkpoint_every < 0 {
            return Err(SpecError::invalid(
                "run.checkpoint_every",
                format!("must be >= 0 (got {})", r.checkpoint_every),
            ));
        }
        if let Some(k) = r.workers_per_node {
            if k == 0 || k > MAX_WORKERS {
                return Err(SpecError::invalid(
                    "run.workers_per_node",
                    format!("must be between 1 and {MAX_WORKERS} (got {k})"),
                ));
            }
        }
        if let Some(b) = r.bandwidth_mbps {
            if !(b.is_finite() && (MIN_BANDWIDTH_MBPS..=MAX_BANDWIDTH_MBPS).contains(&b)) {
                return Err(SpecError::invalid(
                    "run.bandwidth_mbps",
                    format!(
                        "must be between {MIN_BANDWIDTH_MBPS} and {MAX_BANDWIDTH_MBPS} megabits per second (got {b})"
                    ),
                ));
            }
            if r.deterministic {
                return Err(SpecError::invalid(
                    "run.bandwidth_mbps",
                    "early pushes make what a read sees depend on timing: not with run.deterministic",
                ));
            }
        }
        if r.deterministic && self.consistency_name() != ConsistencyName::Bsp {
            return Err(SpecError::invalid(
                "run.deterministic",
                "requires run.consistency = \"bsp\"",
            ));
        }
        let d = &self.data;
        check_file("data.train", &d.train)?;
        for (field, p) in [
            ("data.train_labels", &d.train_labels),
            ("data.test", &d.test),
            ("data.test_labels", &d.test_labels),
            ("data.vocab", &d.vocab),
        ] {
            if let Some(p) = p {
                check_file(field, p)?;
            }
        }
        if d.format == DataFormat::Idx && d.train_labels.is_none() {
            return Err(SpecError::invalid(
                "data.train_labels",
                "the idx format needs a labels file",
            ));
        }
        if d.format == DataFormat::Idx && d.test.is_some() != d.test_labels.is_some() {
            return Err(SpecError::invalid(
                "data.test_labels",
                "give both data.test and data.test_labels, or neither",
            ));
        }
        if let Some(f) = d.test_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(SpecError::invalid(
                    "data.test_fraction",
                    format!("must be between 0 and 1, exclusive (got {f})"),
                ));
            }
        }
        if self.model.path.as_os_str().is_empty() {
            return Err(SpecError::invalid("model.path", "must not be empty"));
        }
        if self.model.path.is_dir() {
            return Err(SpecError::invalid(
                "model.path",
                format!("{} is a directory", self.model.path.display()),
            ));
        }
        Ok(())
    }
}

/// Removes `.` and `dir/..` pairs without touching the file system, so
/// paths in messages read as the user would write them.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// Whether a data path names something other than a local file: a
/// dataset of a cluster's store (`sha256:<hex>`) or an `http(s)://` URL
/// (docs/jobs.md, "Data that reaches every node"). Such paths are checked
/// by the cluster, not against this machine's file system.
pub fn is_remote(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.starts_with("sha256:") || s.starts_with("http://") || s.starts_with("https://")
}

fn check_file(field: &str, p: &Path) -> Result<(), SpecError> {
    if is_remote(p) {
        return Ok(());
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(SpecError::invalid(
            field,
            format!("{} is not a regular file", p.display()),
        )),
        Err(e) => Err(SpecError::invalid(
            field,
            format!("cannot read {}: {e}", p.display()),
        )),
    }
}

/// Hyperparameter checks shared by the algorithms: `field` names the
/// offending value in the error.
pub fn check_positive(field: &str, v: f64) -> Result<(), SpecError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(SpecError::invalid(
            field,
            format!("must be a positive number (got {v})"),
        ))
    }
}

/// A finite value `>= 0`.
pub fn check_non_negative(field: &str, v: f64) -> Result<(), SpecError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(SpecError::invalid(field, format!("must be >= 0 (got {v})")))
    }
}

/// `lo <= v <= hi` for a count-like hyperparameter.
pub fn check_range(field: &str, v: usize, lo: usize, hi: usize) -> Result<(), SpecError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(SpecError::invalid(
            field,
            format!("must be between {lo} and {hi} (got {v})"),
        ))
    }
}

/// Deserialises an algorithm's `[params]` table into its typed
/// hyperparameters, naming the offending field on error.
pub fn parse_params<P: serde::de::DeserializeOwned>(params: &toml::Table) -> Result<P, SpecError> {
    P::deserialize(toml::Value::Table(params.clone())).map_err(|e| {
        let msg = e.to_string();
        SpecError::invalid("params", msg.trim_end().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> String {
        let file = std::env::current_exe().unwrap();
        format!(
            "name = \"t\"\nalgorithm = \"x\"\n[data]\nformat = \"libsvm\"\ntrain = \"{}\"\n[model]\npath = \"/tmp/m\"\n",
            file.display()
        )
    }

    fn err(extra: &str) -> SpecError {
        let text = format!("{}{}", base(), extra);
        match JobSpec::parse(&text, "t.toml") {
            Ok(s) => s.validate().unwrap_err(),
            Err(e) => e,
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_spec_dir() {
        let mut s = JobSpec::parse(&base(), "t.toml").unwrap();
        s.model.path = PathBuf::from("../../models/m.safetensors");
        s.resolve_paths(Path::new("examples/jobs"));
        assert_eq!(s.model.path, PathBuf::from("models/m.safetensors"));
        s.model.path = PathBuf::from("./m");
        s.resolve_paths(Path::new("/a/b"));
        assert_eq!(s.model.path, PathBuf::from("/a/b/m"));
    }

    #[test]
    fn valid_spec_passes() {
        let s = JobSpec::parse(&base(), "t.toml").unwrap();
        s.validate().unwrap();
        assert_eq!(s.consistency(), Consistency::Ssp { staleness: 2 });
    }

    #[test]
    fn errors_name_the_field() {
        let e = err("[run]\nstaleness = -1\n");
        assert!(e.to_string().contains("run.staleness"), "{e}");
        assert!(e.to_string().contains(">= 0"), "{e}");
        let e = err("[run]\nworkers = \"four\"\n");
        assert!(e.to_string().contains("workers"), "{e}");
        let e = err("[run]\nconsistency = \"bsp\"\nstaleness = 2\n");
        assert!(e.to_string().contains("run.staleness"), "{e}");
        let e = err("[run]\nconsistency = \"ssp\"\ndeterministic = true\n");
        assert!(e.to_string().contains("run.deterministic"), "{e}");
        let e = err("[run]\nworkers_per_node = 0\n");
        assert!(e.to_string().contains("run.workers_per_node"), "{e}");
        let e = err("[run]\nbandwidth_mbps = 0.0\n");
        assert!(e.to_string().contains("run.bandwidth_mbps"), "{e}");
        let e = err("[run]\nbandwidth_mbps = nan\n");
        assert!(e.to_string().contains("run.bandwidth_mbps"), "{e}");
        let e = err("[run]\nconsistency = \"bsp\"\ndeterministic = true\nbandwidth_mbps = 100\n");
        assert!(e.to_string().contains("not with run.deterministic"), "{e}");
        let e = err("[run]\nworkerz = 3\n");
        assert!(e.to_string().contains("workerz"), "{e}");
        let e = err("[run]\nclocks = 0\n");
        assert!(e.to_string().contains("run.clocks"), "{e}");
    }

    #[test]
    fn missing_data_file_is_named() {
        let text = base().replace(
            &std::env::current_exe().unwrap().display().to_string(),
            "/nonexistent/x.libsvm",
        );
        let e = JobSpec::parse(&text, "t.toml")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("data.train"), "{e}");
        assert!(e.to_string().contains("/nonexistent/x.libsvm"), "{e}");
    }
}
