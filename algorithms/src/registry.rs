//! From a job spec to a ready algorithm: name lookup, hyperparameter
//! validation (before any data is read) and data loading.

use crate::data::{idx, load_job_data, DataError};
use crate::dml::{self, Dml, DmlParams};
use crate::dnn::{self, DnnParams};
use crate::forest::{self, ForestParams, RandomForest};
use crate::kmeans::{self, KMeans, KMeansParams};
use crate::lasso;
use crate::lda;
use crate::limits;
use crate::linear::{self, BinaryLinear, LinearParams, Loss};
use crate::medlda;
use crate::mf;
use crate::nmf;
use crate::softmax::{self, InputSpec, MulticlassLr, SoftmaxParams};
use crate::sparse_coding;
use petuum_core::algorithm::Algorithm;
use petuum_core::spec::{parse_params, DataFormat, JobSpec, SpecError, DEFAULT_SHARDS};

/// Algorithms this build knows, by canonical name.
pub const ALGORITHMS: &[&str] = &[
    softmax::NAME,
    linear::LOGISTIC,
    linear::SVM,
    kmeans::NAME,
    forest::NAME,
    dml::NAME,
    lda::NAME,
    medlda::NAME,
    dnn::NAME,
    nmf::NAME,
    sparse_coding::NAME,
    lasso::NAME,
    mf::NAME,
];

/// Why a job could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("data: {0}")]
    Data(#[from] DataError),
}

/// Canonical name of an algorithm (accepts aliases).
pub fn canonical(name: &str) -> Option<&'static str> {
    match name {
        "multiclass_lr" | "softmax" | "mlr" | "multiclass_logistic_regression" => {
            Some(softmax::NAME)
        }
        "logistic_regression" | "lr" | "logistic" => Some(linear::LOGISTIC),
        "svm" | "linear_svm" => Some(linear::SVM),
        "kmeans" | "k_means" | "k-means" => Some(kmeans::NAME),
        "random_forest" | "rf" | "forest" => Some(forest::NAME),
        "dml" | "distance_metric_learning" => Some(dml::NAME),
        "lda" | "sparse_lda" | "sparselda" => Some(lda::NAME),
        "medlda" | "med_lda" => Some(medlda::NAME),
        "dnn" | "mlp" | "poseidon" => Some(dnn::NAME),
        "nmf" | "non_negative_matrix_factorization" => Some(nmf::NAME),
        "sparse_coding" | "sparsecoding" | "dictionary_learning" => Some(sparse_coding::NAME),
        "lasso" | "schmp_lasso" => Some(lasso::NAME),
        "mf" | "matrix_factorization" | "matrix_factorisation" => Some(mf::NAME),
        _ => None,
    }
}

fn algorithm_of(spec: &JobSpec) -> Result<&'static str, SpecError> {
    canonical(&spec.algorithm).ok_or_else(|| {
        SpecError::invalid(
            "algorithm",
            format!(
                "unknown algorithm `{}` (known: {})",
                spec.algorithm,
                ALGORITHMS.join(", ")
            ),
        )
    })
}

/// Validates a spec completely without loading data: the common fields,
/// the data files' presence, the algorithm name and its hyperparameters.
/// Fills in what an algorithm decides when the spec leaves it out: a
/// Strads program (`lasso`, `mf` with the `ccd` solver) and `nmf` (unless a
/// `staleness` is given) run under BSP;
/// a binary linear model (`logistic_regression`, `svm`) lives on one
/// shard, since each of its tables is a single row (the weights, their
/// average) and a row cannot spread: more shards would only carry every
/// worker's clock to groups that hold nothing of it. Every other
/// algorithm gets [`DEFAULT_SHARDS`]. `run.clocks` unset is
/// [`clocks_default`]'s. Called wherever a spec enters (submit, `petuumd
/// run`, `validate`), so the recorded spec says what runs.
pub fn apply_defaults(spec: &mut JobSpec) {
    if spec.run.clocks_set.is_none() {
        spec.run.clocks_set = Some(clocks_default(spec));
    }
    if spec.run.shards_set.is_none() {
        spec.run.shards_set = Some(match canonical(&spec.algorithm) {
            Some(linear::LOGISTIC | linear::SVM) => 1,
            _ => DEFAULT_SHARDS,
        });
    }
    if spec.run.consistency.is_some() {
        return;
    }
    let bsp = match canonical(&spec.algorithm) {
        Some(lasso::NAME) => true,
        Some(mf::NAME) => {
            parse_params::<mf::MfParams>(&spec.params).is_ok_and(|p| p.solver == mf::Solver::Ccd)
        }
        // One BSP clock is one iteration of scikit-learn's solver; under
        // SSP(2) the factors lag, and 200 clocks end 5% short of its
        // relative error on digits (0.274 against 0.260). A staleness
        // given asks for SSP.
        Some(nmf::NAME | sparse_coding::NAME) => spec.run.staleness.is_none(),
        _ => false,
    };
    if bsp {
        spec.run.consistency = Some(petuum_core::spec::ConsistencyName::Bsp);
    }
}

/// The clocks a learner that decides when it is done may run when the
/// spec does not say: an upper bound, not a count.
pub const UNTIL_CONVERGED_CLOCKS: i64 = 1000;

/// Lloyd's bound when `run.clocks` is unset: scikit-learn's `max_iter`.
pub const KMEANS_MAX_CLOCKS: i64 = 300;

/// NMF's and sparse coding's clocks when `run.clocks` is unset:
/// scikit-learn's `NMF` `max_iter` (one BSP clock is one of its
/// iterations), a bound: the engine's stop rules may end a job sooner
/// (NYT at K = 20 after 62).
pub const NMF_MAX_CLOCKS: i64 = 200;

/// Lasso's bound when `run.clocks` is unset: a clock is one round of
/// the scheduler, and the duality-gap stop rule always runs (`tol` must be
/// positive), so this is what the job may run, not what it runs (Ames
/// with the working sets: 9 rounds; SchMP and random blocks take
/// thousands on larger data, and a λ path solves every λ in turn).
pub const LASSO_MAX_CLOCKS: i64 = 100_000;

/// Passes over the ratings an `mf` job makes when `run.clocks` is unset:
/// LIBMF's default number of iterations. A pass is
/// [`MfParams::clocks_per_pass`](mf::MfParams::clocks_per_pass) clocks.
pub const MF_PASSES: i64 = 20;

/// Gibbs sweeps of `lda` and `medlda` when `run.clocks` is unset:
/// Mallet's default number of iterations (an LDA sweep is
/// `clocks_per_sweep` clocks, a MedLDA sweep one).
pub const GIBBS_SWEEPS: i64 = 1000;

/// Distance metric learning's clocks when `run.clocks` is unset (what its
/// defaults are checked with against scikit-learn's NCA).
pub const DML_CLOCKS: i64 = 200;

/// `run.clocks` for a spec that leaves it out. The linear models'
/// automatic configuration (no `learning_rate`; `logistic_regression`,
/// `svm`, `multiclass_lr`) stops on convergence, its L-BFGS finish taking
/// one clock per function evaluation (up to 100 iterations, after an SGD
/// phase of at most a third of the clocks): it gets
/// [`UNTIL_CONVERGED_CLOCKS`] as its bound, so a spec without `clocks`
/// ends at the optimum scikit-learn's `lbfgs` reaches instead of after
/// [`DEFAULT_CLOCKS`](petuum_core::spec::DEFAULT_CLOCKS) (ten clocks left
/// multi-class LR two to three points short on dna and satimage, the
/// finish cut off after a few evaluations). A `dnn` in its automatic
/// configuration (no `learning_rate`: Adam, clocks of 8 mini-batches)
/// gets [`UNTIL_CONVERGED_CLOCKS`] clocks, about 1M samples over two
/// workers: ten clocks were 10k samples, a fifth of an epoch of shuttle
/// (0.938 against scikit-learn's 0.999). Lloyd's k-means, which stops
/// once its centres settle, gets [`KMEANS_MAX_CLOCKS`] (ten left
/// satimage's inertia 13% above scikit-learn's). NMF gets
/// [`NMF_MAX_CLOCKS`] (ten left digits at a relative error of 0.419
/// against scikit-learn's 0.260), and so does sparse coding, on the same
/// engine (ten under SSP(2) left digits' held-out objective at 267.1,
/// 12% above scikit-learn's `MiniBatchDictionaryLearning`; 200 under BSP
/// reach 202.8). Lasso gets [`LASSO_MAX_CLOCKS`] as a bound (ten rounds
/// of SchMP left Ames at R² 0.35 against 0.92), `mf` [`MF_PASSES`]
/// passes, `lda` and `medlda` [`GIBBS_SWEEPS`] sweeps (ten left NYT's
/// 100 topics at a held-out perplexity of 1661 against 1244 after 1000,
/// and MedLDA's spam accuracy at 0.883 against 0.948 after 200), `dml`
/// [`DML_CLOCKS`]. Random forest and a tuned
/// spec (`learning_rate` set, every clock runs) keep
/// [`DEFAULT_CLOCKS`](petuum_core::spec::DEFAULT_CLOCKS). A spec whose
/// `[params]` do not parse gets that too; validation names the field.
pub fn clocks_default(spec: &JobSpec) -> i64 {
    use petuum_core::spec::DEFAULT_CLOCKS;
    // The stop rule runs when `tol` (default 1e-4 in the automatic
    // configuration, 0 with a learning rate) is positive.
    let stops = |lr: Option<f64>, tol: Option<f64>| tol.map_or(lr.is_none(), |t| t > 0.0);
    let bounded = |yes: bool| {
        if yes {
            UNTIL_CONVERGED_CLOCKS
        } else {
            DEFAULT_CLOCKS
        }
    };
    match canonical(&spec.algorithm) {
        Some(linear::LOGISTIC | linear::SVM) => bounded(
            parse_params::<LinearParams>(&spec.params).is_ok_and(|p| stops(p.learning_rate, p.tol)),
        ),
        Some(softmax::NAME) => bounded(
            parse_params::<SoftmaxParams>(&spec.params)
                .is_ok_and(|p| stops(p.learning_rate, p.tol)),
        ),
        Some(dnn::NAME) => bounded(parse_params::<DnnParams>(&spec.params).is_ok_and(|p| p.auto())),
        Some(nmf::NAME | sparse_coding::NAME) => NMF_MAX_CLOCKS,
        Some(lasso::NAME) => LASSO_MAX_CLOCKS,
        Some(mf::NAME) => parse_params::<mf::MfParams>(&spec.params)
            .map_or(DEFAULT_CLOCKS, |p| MF_PASSES * p.clocks_per_pass() as i64),
        Some(lda::NAME) => parse_params::<lda::LdaParams>(&spec.params)
            .map_or(DEFAULT_CLOCKS, |p| {
                GIBBS_SWEEPS * i64::from(p.clocks_per_sweep)
            }),
        Some(medlda::NAME) => GIBBS_SWEEPS,
        Some(dml::NAME) => DML_CLOCKS,
        Some(kmeans::NAME) => match parse_params::<KMeansParams>(&spec.params) {
            Ok(p) if kmeans_tol(&p, spec) > 0.0 => KMEANS_MAX_CLOCKS,
            _ => DEFAULT_CLOCKS,
        },
        _ => DEFAULT_CLOCKS,
    }
}

/// The k-means stop tolerance a job runs with: none under `async`, where
/// no clock's sums are ever guaranteed complete, so workers could not
/// agree on a stop.
fn kmeans_tol(p: &KMeansParams, spec: &JobSpec) -> f64 {
    if spec.consistency() == petuum_core::Consistency::Async {
        0.0
    } else {
        p.tol()
    }
}

pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    spec.validate()?;
    match algorithm_of(spec)? {
        softmax::NAME => {
            let p: SoftmaxParams = parse_params(&spec.params)?;
            p.validate()?;
            check_labelled_format(spec)
        }
        name @ (linear::LOGISTIC | linear::SVM) => {
            let p: LinearParams = parse_params(&spec.params)?;
            p.validate()?;
            if name == linear::LOGISTIC && p.loss.is_some() {
                return Err(SpecError::invalid(
                    "params.loss",
                    "logistic_regression has the log loss; `loss` (hinge or squared_hinge) is for svm",
                ));
            }
            check_labelled_format(spec)
        }
        kmeans::NAME => {
            let p: KMeansParams = parse_params(&spec.params)?;
            p.validate()?;
            check_labelled_format(spec)
        }
        forest::NAME => {
            let p: ForestParams = parse_params(&spec.params)?;
            p.validate()?;
            check_labelled_format(spec)
        }
        dml::NAME => {
            let p: DmlParams = parse_params(&spec.params)?;
            p.validate()?;
            check_labelled_format(spec)
        }
        lda::NAME => lda::job::validate(spec),
        lasso::NAME => lasso::validate(spec),
        mf::NAME => mf::validate(spec),
        medlda::NAME => medlda::validate(spec),
        nmf::NAME => nmf::validate(spec),
        sparse_coding::NAME => sparse_coding::validate(spec),
        dnn::NAME => {
            let p: DnnParams = parse_params(&spec.params)?;
            p.validate()?;
            p.check_sfb_on(spec.run.workers, spec.consistency(), spec.run.clocks())?;
            if p.frames.is_some()
                && (spec.data.format != DataFormat::Csv || spec.data.label_column.is_none())
            {
                return Err(SpecError::invalid(
                    "params.frames",
                    "frame data are read from CSV: set data.format = \"csv\" and data.label_column",
                ));
            }
            check_labelled_format(spec)
        }
        other => unreachable!("canonical name {other} without a builder"),
    }
}

/// Validates the spec, then loads its data and builds the algorithm.
pub fn build(spec: &JobSpec) -> Result<Box<dyn Algorithm>, BuildError> {
    validate(spec)?;
    match algorithm_of(spec)? {
        softmax::NAME => {
            let params: SoftmaxParams = parse_params(&spec.params)?;
            let (train, test, encoding) = load_job_data(&spec.data)?;
            let (d, c) = (train.dim() as u128, train.num_classes as u128);
            limits::check_model(
                "data.train",
                &format!("{d} features x {c} classes"),
                (d + 1) * c,
            )?;
            check_dense(&train, test.as_ref())?;
            Ok(Box::new(MulticlassLr::new(
                params,
                train,
                test,
                input_spec(spec, encoding),
                spec.clocks(),
            )))
        }
        name @ (linear::LOGISTIC | linear::SVM) => {
            let params: LinearParams = parse_params(&spec.params)?;
            let (train, test, encoding) = load_job_data(&spec.data)?;
            check_features(&train, "weights, their scaling and working copies")?;
            let loss = if name == linear::SVM {
                Loss::Hinge
            } else {
                Loss::Logistic
            };
            BinaryLinear::new(
                loss,
                params,
                train,
                test,
                input_spec(spec, encoding),
                spec.clocks(),
            )
            .map(|a| Box::new(a) as Box<dyn Algorithm>)
            .map_err(|e| SpecError::invalid("data.train", e.to_string()).into())
        }
        kmeans::NAME => {
            let mut params: KMeansParams = parse_params(&spec.params)?;
            let (train, test, encoding) = load_job_data(&spec.data)?;
            let d = train.dim() as u128;
            limits::check_model(
                "params.k",
                &format!("{} centres x {d} features", params.k),
                params.k as u128 * d,
            )?;
            check_dense(&train, test.as_ref())?;
            let staleness = spec.consistency().staleness().unwrap_or(0) as u64;
            params.tol = Some(kmeans_tol(&params, spec));
            KMeans::new(
                params,
                train,
                test,
                input_spec(spec, encoding),
                spec.run.seed,
                staleness,
            )
            .map(|a| Box::new(a) as Box<dyn Algorithm>)
            .map_err(|e| SpecError::invalid("params.k", e.to_string()).into())
        }
        forest::NAME => {
            let params: ForestParams = parse_params(&spec.params)?;
            let (train, test, encoding) = load_job_data(&spec.data)?;
            check_features(&train, "per-feature split statistics and sorted columns")?;
            Ok(Box::new(RandomForest::new(
                params,
                train,
                test,
                input_spec(spec, encoding),
                spec.clocks(),
            )))
        }
        dml::NAME => {
            let params: DmlParams = parse_params(&spec.params)?;
            let (train, test, encoding) = load_job_data(&spec.data)?;
            let d = train.dim() as u128;
            let k = params.dim.map_or(d, |k| k as u128);
            let field = if params.dim.is_some() {
                "params.dim"
            } else {
                "data.train"
            };
            limits::check_model(field, &format!("a {k} x {d} projection"), k * d)?;
            check_dense(&train, test.as_ref())?;
            Dml::new(params, train, test, input_spec(spec, encoding))
                .map(|a| Box::new(a) as Box<dyn Algorithm>)
                .map_err(|e| SpecError::invalid("data.train", e.to_string()).into())
        }
        lda::NAME => Ok(Box::new(lda::job::build(spec)?)),
        lasso::NAME => Ok(Box::new(lasso::build(spec)?)),
        mf::NAME => Ok(Box::new(mf::build(spec)?)),
        medlda::NAME => Ok(Box::new(medlda::build(spec)?)),
        nmf::NAME => Ok(Box::new(nmf::build(spec)?)),
        sparse_coding::NAME => Ok(Box::new(sparse_coding::build(spec)?)),
        dnn::NAME => match dnn::builder() {
            Some(b) => b(spec),
            None => Err(SpecError::invalid(
                "algorithm",
                "`dnn` needs Poseidon (petuum-poseidon), which this program was built without",
            )
            .into()),
        },
        other => unreachable!("canonical name {other} without a builder"),
    }
}

/// Refuses data whose feature count alone makes a model too large (a
/// libsvm file's feature ids set it): the per-feature scaling and weights.
fn check_features(train: &crate::data::Dataset, what: &str) -> Result<(), SpecError> {
    let d = train.dim() as u128;
    limits::check_model("data.train", &format!("{d} features: {what}"), 4 * (d + 1))
}

/// Refuses sparse data an algorithm makes dense (f32, half a counted
/// number each) when the dense copy would pass the model bound: a libsvm
/// file's largest feature id sets its width.
fn check_dense(
    train: &crate::data::Dataset,
    test: Option<&crate::data::Dataset>,
) -> Result<(), SpecError> {
    use crate::data::Features;
    let sparse = |d: &crate::data::Dataset| matches!(d.features, Features::Sparse(_));
    if !sparse(train) && !test.is_some_and(sparse) {
        return Ok(());
    }
    let n = (train.len() + test.map_or(0, |t| t.len())) as u128;
    let d = train.dim() as u128;
    limits::check_model(
        "data.train",
        &format!("the data made dense: {n} samples x {d} features"),
        n * d / 2,
    )
}

/// Formats with one label per sample.
pub fn check_labelled_format(spec: &JobSpec) -> Result<(), SpecError> {
    match spec.data.format {
        DataFormat::Idx | DataFormat::Libsvm | DataFormat::Csv => Ok(()),
        other => Err(SpecError::invalid(
            "data.format",
            format!(
                "`{other:?}` has no per-sample labels; {} reads idx, libsvm or csv",
                spec.algorithm
            )
            .to_lowercase(),
        )),
    }
}

/// How the model will read raw inputs (`csv`: the encoding of CSV
/// training data's columns).
pub fn input_spec(spec: &JobSpec, csv: Option<crate::data::csv::Encoding>) -> InputSpec {
    match spec.data.format {
        DataFormat::Idx => InputSpec {
            format: "idx_u8".into(),
            scale: idx::PIXEL_SCALE,
            label_column: None,
            csv: None,
        },
        DataFormat::Csv => InputSpec {
            format: "csv".into(),
            scale: 1.0,
            label_column: Some(
                spec.data
                    .label_column
                    .clone()
                    .unwrap_or_else(|| "label".into()),
            ),
            csv,
        },
        _ => InputSpec {
            format: "libsvm".into(),
            scale: 1.0,
            label_column: None,
            csv: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_core::consistency::Consistency;
    use petuum_core::spec::ConsistencyName;

    fn spec(algorithm: &str, run: &str, params: &str) -> JobSpec {
        let text = format!(
            "name = \"t\"\nalgorithm = \"{algorithm}\"\n[data]\nformat = \"csv\"\ntrain = \"x\"\n[run]\n{run}\n[model]\npath = \"m\"\n[params]\n{params}\n"
        );
        let mut s = JobSpec::parse(&text, "t.toml").unwrap();
        apply_defaults(&mut s);
        s
    }

    #[test]
    fn one_row_models_default_to_one_shard_and_a_given_count_stands() {
        assert_eq!(spec("logistic_regression", "", "").run.shards(), 1);
        assert_eq!(spec("svm", "", "").run.shards(), 1);
        assert_eq!(spec("lda", "", "").run.shards(), DEFAULT_SHARDS);
        assert_eq!(spec("mf", "", "").run.shards(), DEFAULT_SHARDS);
        assert_eq!(
            spec("logistic_regression", "shards = 4", "").run.shards(),
            4
        );
        assert_eq!(spec("lda", "shards = 2", "").run.shards(), 2);
        // Resolved into the recorded spec, so every node reads the same.
        let s = spec("svm", "", "");
        let back: JobSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.run.shards_set, Some(1));
        // Zero is refused with its field named, not taken as unset.
        let zero = spec("lda", "shards = 0", "");
        assert_eq!(zero.run.shards_set, Some(0));
        let e = zero.validate().unwrap_err().to_string();
        assert!(e.contains("run.shards"), "{e}");
    }

    #[test]
    fn clocks_left_out_resolve_to_each_algorithms_budget_and_a_given_count_stands() {
        for algo in ["logistic_regression", "svm", "multiclass_lr", "dnn"] {
            let s = spec(algo, "", "");
            assert_eq!(s.clocks(), UNTIL_CONVERGED_CLOCKS as u64, "{algo}");
            // Resolved into the recorded spec, so every node runs the same.
            let back: JobSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            assert_eq!(back.run.clocks_set, Some(UNTIL_CONVERGED_CLOCKS), "{algo}");
            // Tuned: every clock runs, so the old default stands.
            let tuned = spec(algo, "", "learning_rate = 0.1");
            assert_eq!(tuned.clocks(), 10, "{algo}");
            assert_eq!(spec(algo, "clocks = 37", "").clocks(), 37, "{algo}");
        }
        // A linear model told not to stop runs every clock.
        assert_eq!(spec("multiclass_lr", "", "tol = 0.0").clocks(), 10);
        assert_eq!(spec("svm", "", "tol = 1e-3").clocks(), 1000);
        // Each algorithm's budget, or its bound where it stops by itself.
        for (algo, run, params, clocks) in [
            ("nmf", "", "k = 3", 200),
            ("sparse_coding", "", "k = 3\nlambda = 1.0", 200),
            ("dml", "", "", 200),
            ("lasso", "", "lambda = 1.0", 100_000),
            // Topic models: 1000 sweeps; an LDA sweep of 4 clocks is 4000.
            ("lda", "", "", 1000),
            ("lda", "", "clocks_per_sweep = 4", 4000),
            ("medlda", "", "", 1000),
            // MF: 20 passes. CCD++ at rank 10 with biases: 2 clocks for
            // each of 12 ranks a pass; SGD: `batches` clocks a pass.
            ("mf", "", "", 480),
            ("mf", "", "rank = 5\nbiases = false\ninner = 2", 400),
            ("mf", "", "solver = \"sgd\"\nbatches = 4", 80),
            ("random_forest", "", "", 10),
            // Lloyd stops once its centres settle; mini-batch runs every
            // clock, and async never stops.
            ("kmeans", "", "k = 3", 300),
            ("kmeans", "", "k = 3\ntol = 0.0", 10),
            ("kmeans", "", "k = 3\nbatch_size = 100", 10),
            ("kmeans", "consistency = \"async\"", "k = 3", 10),
        ] {
            assert_eq!(spec(algo, run, params).clocks(), clocks, "{algo} {params}");
        }
        // Params that do not parse: the plain default; validation names
        // the field.
        assert_eq!(spec("dnn", "", "hiden = [3]").clocks(), 10);
        // Zero is refused with its field named, not taken as unset.
        let e = spec("svm", "clocks = 0", "")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("run.clocks"), "{e}");
    }

    #[test]
    fn strads_programs_and_deterministic_jobs_default_to_bsp_and_a_given_model_stands() {
        assert_eq!(spec("lasso", "", "").consistency(), Consistency::Bsp);
        assert_eq!(spec("schmp_lasso", "", "").consistency(), Consistency::Bsp);
        assert_eq!(spec("mf", "", "").consistency(), Consistency::Bsp);
        assert_eq!(spec("nmf", "", "k = 3").consistency(), Consistency::Bsp);
        assert_eq!(
            spec("sparse_coding", "", "k = 3\nlambda = 1.0").consistency(),
            Consistency::Bsp
        );
        assert_eq!(
            spec("nmf", "staleness = 1", "k = 3").consistency(),
            Consistency::Ssp { staleness: 1 }
        );
        assert_eq!(
            spec("nmf", "consistency = \"ssp\"", "k = 3").consistency(),
            Consistency::Ssp { staleness: 2 }
        );
        assert_eq!(
            spec("mf", "", "solver = \"sgd\"").consistency(),
            Consistency::Ssp { staleness: 2 }
        );
        assert_eq!(
            spec("logistic_regression", "", "").consistency(),
            Consistency::Ssp { staleness: 2 }
        );
        assert_eq!(
            spec("kmeans", "deterministic = true", "").consistency(),
            Consistency::Bsp
        );
        // What the user wrote stands (and a Strads program refuses it).
        let s = spec("lasso", "consistency = \"ssp\"", "");
        assert_eq!(s.run.consistency, Some(ConsistencyName::Ssp));
        assert!(crate::strads::require_bsp(&s).is_err());
        // The recorded spec names what runs.
        let json = serde_json::to_string(&spec("mf", "", "")).unwrap();
        assert!(json.contains("\"consistency\":\"bsp\""), "{json}");
    }
}
