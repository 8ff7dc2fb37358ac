//! Strads programs in deterministic mode: a run paused at a checkpoint
//! (every shard's state and every worker's state taken at a common clock,
//! as `petuumd` does on SIGTERM) and resumed on fresh shards writes the
//! same model, byte for byte, as a run that never stopped; so do two
//! uninterrupted runs.

mod common;
use common::datasets;
use petuum_core::algorithm::BoxError;
use petuum_core::inproc::InProcShards;
use petuum_core::runner::{
    run_job_with, Checkpointer, ClockProgress, JobError, NoProgress, ProgressSink, Resume,
    RunConfig, RunHooks,
};
use petuum_core::service::ShardService;
use petuum_core::shard::ShardState;
use petuum_core::spec::JobSpec;
use petuum_core::types::{Clock, JobId};
use petuum_core::worker::Node;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

/// A checkpoint: its clock, every shard's state, every worker's state.
type Taken = (Clock, Vec<ShardState>, Vec<Vec<u8>>);

/// Keeps the last checkpoint in memory.
struct MemCheckpoints {
    shards: Arc<InProcShards>,
    taken: Mutex<Option<Taken>>,
}

impl Checkpointer for MemCheckpoints {
    fn checkpoint(&self, _: JobId, clock: Clock, states: &[Vec<u8>]) -> Result<(), BoxError> {
        let images = (0..self.shards.num_shards())
            .map(|s| self.shards.with_shard(s, |st| st.clone()))
            .collect();
        *self.taken.lock().unwrap() = Some((clock, images, states.to_vec()));
        Ok(())
    }
}

/// Requests a stop once `at` clocks are done.
struct StopAt<'a> {
    at: Clock,
    stop: &'a AtomicBool,
}
impl ProgressSink for StopAt<'_> {
    fn on_clock(&self, p: &ClockProgress) {
        if p.clock >= self.at {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn spec(text: &str, model: &std::path::Path) -> JobSpec {
    let text = text
        .replace("{data}", &datasets().display().to_string())
        .replace("{model}", &model.display().to_string());
    JobSpec::parse(&text, "t.toml").unwrap()
}

fn config(spec: &JobSpec) -> RunConfig {
    RunConfig {
        job: 1,
        first_table: 1,
        workers: spec.run.workers,
        consistency: spec.consistency(),
        clocks: spec.clocks(),
        seed: spec.run.seed,
        deterministic: spec.run.deterministic,
    }
}

/// Runs `spec` uninterrupted on `shards`, reporting to `progress`.
fn run_through(
    spec: &JobSpec,
    algo: &dyn petuum_core::algorithm::Algorithm,
    shards: Arc<InProcShards>,
    progress: &dyn ProgressSink,
) -> petuum_core::runner::RunOutcome {
    let node = Node::new(shards, 1 << 16);
    let stop = AtomicBool::new(false);
    let hooks = RunHooks {
        progress,
        stop: &stop,
        checkpoint_every: 0,
        checkpointer: None,
        resume: None,
    };
    run_job_with(&node, algo, &config(spec), &spec.model.path, hooks).unwrap()
}

/// The model bytes of an uninterrupted run.
fn straight(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(text, &dir.path().join("m.safetensors"));
    let algo = petuum_algorithms::build(&spec).unwrap();
    let shards = Arc::new(InProcShards::new(spec.run.shards()));
    run_through(&spec, algo.as_ref(), shards, &NoProgress);
    std::fs::read(&spec.model.path).unwrap()
}

/// The model bytes of a run paused after `at` clocks and resumed.
fn paused_and_resumed(text: &str, at: Clock) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(text, &dir.path().join("m.safetensors"));
    let cfg = config(&spec);
    let shards = Arc::new(InProcShards::new(spec.run.shards()));
    let node = Node::new(shards.clone(), 1 << 16);
    let algo = petuum_algorithms::build(&spec).unwrap();
    let cp = MemCheckpoints {
        shards: shards.clone(),
        taken: Mutex::new(None),
    };
    let stop = AtomicBool::new(false);
    let hooks = RunHooks {
        progress: &StopAt { at, stop: &stop },
        stop: &stop,
        checkpoint_every: 0,
        checkpointer: Some(&cp),
        resume: None,
    };
    match run_job_with(&node, algo.as_ref(), &cfg, &spec.model.path, hooks) {
        Err(JobError::Paused { .. }) => {}
        other => panic!("expected a pause, got {:?}", other.map(|o| o.clocks)),
    }
    let (clock, images, states) = cp.taken.lock().unwrap().take().expect("a checkpoint");
    assert!(clock >= at, "paused at {clock}");
    // A fresh node, as after a restart: the shards restored, a new cache,
    // the algorithm built again from the spec.
    let shards = Arc::new(InProcShards::new(spec.run.shards()));
    for (s, image) in images.into_iter().enumerate() {
        shards.with_shard_mut(s as u32, |st| *st = image);
    }
    let node = Node::new(shards, 1 << 16);
    let algo = petuum_algorithms::build(&spec).unwrap();
    let stop = AtomicBool::new(false);
    let hooks = RunHooks {
        progress: &NoProgress,
        stop: &stop,
        checkpoint_every: 0,
        checkpointer: None,
        resume: Some(Resume {
            clock,
            worker_states: states,
        }),
    };
    run_job_with(&node, algo.as_ref(), &cfg, &spec.model.path, hooks).unwrap();
    std::fs::read(&spec.model.path).unwrap()
}

const LASSO: &str = "name = \"t\"\nalgorithm = \"lasso\"\n[data]\nformat = \"csv\"\ntrain = \"{data}/regression/ames_onehot.csv\"\nlabel_column = \"Sale_Price\"\n[run]\nworkers = 3\nconsistency = \"bsp\"\ndeterministic = true\nclocks = 100000\nseed = 5\n[model]\npath = \"{model}\"\n[params]\nlambda = 0.003\nstandardize = true\ntarget_transform = \"log\"\ntol = 1e-5\nscheduler = \"schmp\"\n";

#[test]
fn lasso_resumed_is_byte_identical() {
    let a = straight(LASSO);
    let b = straight(LASSO);
    assert_eq!(a, b, "two deterministic runs differ");
    // Pause in the middle of a gap interval (gap every 32 rounds here).
    let c = paused_and_resumed(LASSO, 1000);
    assert_eq!(a, c, "the resumed run's model differs");
}

/// The default scheduler (working sets, a gap every round, each block
/// solved exactly from its Gram matrix) along a λ path of four values,
/// paused in the middle of the path: the resumed workers start with an
/// empty Gram cache and must still compute the same bits.
const LASSO_WS: &str = "name = \"t\"\nalgorithm = \"lasso\"\n[data]\nformat = \"csv\"\ntrain = \"{data}/regression/ames_onehot.csv\"\nlabel_column = \"Sale_Price\"\n[run]\nworkers = 3\nconsistency = \"bsp\"\ndeterministic = true\nclocks = 100000\nseed = 5\n[model]\npath = \"{model}\"\n[params]\nlambda = 0.003\npath_length = 4\nstandardize = true\ntarget_transform = \"log\"\ntol = 1e-6\n";

#[test]
fn lasso_working_sets_resumed_is_byte_identical() {
    let a = straight(LASSO_WS);
    let b = straight(LASSO_WS);
    assert_eq!(a, b, "two deterministic runs differ");
    let c = paused_and_resumed(LASSO_WS, 5);
    assert_eq!(a, c, "the resumed run's model differs");
}

const MF: &str = "name = \"t\"\nalgorithm = \"mf\"\n[data]\nformat = \"csv\"\ntrain = \"{data}/movielens_dslabs/ratings.csv\"\ntest_fraction = 0.2\n[run]\nworkers = 3\nconsistency = \"bsp\"\ndeterministic = true\nclocks = 60\nseed = 2\n[model]\npath = \"{model}\"\n[params]\nrank = 4\nlambda = 0.1\nuser_column = \"userId\"\nitem_column = \"movieId\"\nrating_column = \"rating\"\n";

#[test]
fn mf_ccd_resumed_is_byte_identical() {
    let a = straight(MF);
    assert_eq!(a, straight(MF), "two deterministic runs differ");
    // An odd clock: the items' half of a rank.
    assert_eq!(
        a,
        paused_and_resumed(MF, 23),
        "the resumed run's model differs"
    );
}

#[test]
fn mf_sgd_resumed_is_byte_identical() {
    let spec = MF.replace(
        "lambda = 0.1\n",
        "lambda = 0.1\nsolver = \"sgd\"\nbatches = 4\n",
    );
    let a = straight(&spec);
    assert_eq!(a, straight(&spec), "two deterministic runs differ");
    assert_eq!(
        a,
        paused_and_resumed(&spec, 9),
        "the resumed run's model differs"
    );
}

/// Records the most rows any of `tables` held, every 50 clocks.
struct RowWatch {
    shards: Arc<InProcShards>,
    tables: Vec<u32>,
    most: Mutex<Vec<usize>>,
}
impl ProgressSink for RowWatch {
    fn on_clock(&self, p: &ClockProgress) {
        if !p.clock.is_multiple_of(50) {
            return;
        }
        let mut most = self.most.lock().unwrap();
        for (m, &t) in most.iter_mut().zip(&self.tables) {
            if let Ok(rows) = self.shards.row_ids(t) {
                *m = (*m).max(rows.len());
            }
        }
    }
}

/// The round tables cycle through three rows: through a Lasso run of
/// thousands of rounds its schedule, partials and gap tables never hold
/// more than three rows (before, one row per round stayed in every
/// replica and every checkpoint).
#[test]
fn lasso_round_tables_do_not_grow() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(LASSO, &dir.path().join("m.safetensors"));
    let algo = petuum_algorithms::build(&spec).unwrap();
    let shards = Arc::new(InProcShards::new(spec.run.shards()));
    let names = ["lasso_schedule", "lasso_partials", "lasso_gap"];
    let decls = algo.tables();
    let watch = RowWatch {
        shards: shards.clone(),
        tables: names
            .iter()
            .map(|n| 1 + decls.iter().position(|t| t.name == *n).expect(n) as u32)
            .collect(),
        most: Mutex::new(vec![0; names.len()]),
    };
    let out = run_through(&spec, algo.as_ref(), shards, &watch);
    assert!(out.clocks > 1000, "only {} rounds", out.clocks);
    let most = watch.most.lock().unwrap();
    for (name, &m) in names.iter().zip(most.iter()) {
        assert!(
            (1..=3).contains(&m),
            "{name}: up to {m} rows in {} rounds",
            out.clocks
        );
    }
}
