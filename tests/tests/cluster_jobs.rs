//! Algorithms on the cluster backend: the same algorithm code, unchanged,
//! runs against three real `petuumd serve` nodes through
//! `ClusterShards`. In deterministic mode the model must be byte-identical
//! to the embedded run's.

use petuum_core::inproc::InProcShards;
use petuum_core::runner::{run_job, table_specs, NoProgress, RunConfig};
use petuum_core::spec::JobSpec;
use petuum_core::worker::Node;
use petuum_tests::cluster::LocalCluster;
use petuum_tests::{datasets, mnist_job};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn deterministic_mnist_job_on_three_nodes_equals_embedded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let embedded_model = dir.path().join("embedded.safetensors");
    std::fs::write(
        &job,
        mnist_job(
            &embedded_model,
            "workers = 2\nconsistency = \"bsp\"\ndeterministic = true\nclocks = 24\nshards = 16\nseed = 3",
            "",
        ),
    )
    .unwrap();
    let spec = JobSpec::from_file(&job).unwrap();
    let algo = petuum_algorithms::build(&spec).unwrap();
    let cfg = RunConfig {
        job: 1,
        first_table: 1,
        workers: spec.run.workers,
        consistency: spec.consistency(),
        clocks: spec.clocks(),
        seed: spec.run.seed,
        deterministic: spec.run.deterministic,
    };
    let stop = AtomicBool::new(false);
    let embedded = Node::new(Arc::new(InProcShards::new(16)), Node::DEFAULT_CACHE_ROWS);
    let a = run_job(
        &embedded,
        algo.as_ref(),
        &cfg,
        &embedded_model,
        &NoProgress,
        &stop,
    )
    .unwrap();

    let c = LocalCluster::start(3, 16, "");
    let client = c.connect();
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    let cluster_model = dir.path().join("cluster.safetensors");
    let node = Node::new(Arc::new(client), Node::DEFAULT_CACHE_ROWS);
    let b = run_job(
        &node,
        algo.as_ref(),
        &cfg,
        &cluster_model,
        &NoProgress,
        &stop,
    )
    .unwrap();

    assert_eq!(a.clocks, b.clocks);
    assert_eq!(a.objective.to_bits(), b.objective.to_bits());
    let (ma, mb) = (
        std::fs::read(&embedded_model).unwrap(),
        std::fs::read(&cluster_model).unwrap(),
    );
    assert!(
        ma == mb,
        "the cluster run's model differs from the embedded run's"
    );
    // And it is a good model (scikit-learn's LogisticRegression: 92.67%;
    // 24 clocks here instead of the example's 200).
    let d = datasets().join("mnist");
    let report = petuum_algorithms::eval::evaluate(
        &cluster_model,
        &d.join("t10k-images-idx3-ubyte.gz"),
        Some(&d.join("t10k-labels-idx1-ubyte.gz")),
    )
    .unwrap();
    let acc = report
        .metrics
        .iter()
        .find(|(k, _)| k == "accuracy")
        .map(|(_, v)| *v)
        .unwrap();
    assert!(acc > 0.88, "accuracy {acc}");
}

/// Every data-parallel algorithm, deterministic, on one 3-node cluster:
/// each model byte-identical to its embedded run.
#[test]
fn every_algorithm_on_the_cluster_equals_embedded_bytes() {
    let d = datasets();
    let data = |f: &str| d.join(f).display().to_string();
    let jobs: Vec<(&str, String, u64)> = vec![
        (
            "logistic_regression",
            format!("[data]\nformat = \"libsvm\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 10.0\nbatch_size = 32\nbatches_per_clock = 10\nl2 = 0.0002", data("spamassassin/spam.libsvm")),
            30,
        ),
        (
            "svm",
            format!("[data]\nformat = \"libsvm\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 10.0\nbatch_size = 32\nbatches_per_clock = 10\nl2 = 0.0002", data("spamassassin/spam.libsvm")),
            30,
        ),
        (
            "kmeans",
            // Every clock runs (no stop rule), so the kill lands mid-run.
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\n[params]\nk = 10\ntol = 0.0", data("digits_8x8/digits.csv")),
            40,
        ),
        (
            "random_forest",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nnum_trees = 20", data("classification/satimage.csv")),
            10,
        ),
        (
            "dml",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nlearning_rate = 0.01", data("classification/ionosphere.csv")),
            60,
        ),
        (
            "lda",
            format!("[data]\nformat = \"uci_bow\"\ntrain = \"{}\"\nvocab = \"{}\"\n[params]\nnum_topics = 20", data("reuters395_lda/docword.txt"), data("reuters395_lda/vocab.txt")),
            20,
        ),
        (
            "nmf",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\n[params]\nk = 10", data("digits_8x8/digits.csv")),
            30,
        ),
        (
            "sparse_coding",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nk = 16\nlambda = 1.6", data("digits_8x8/digits.csv")),
            20,
        ),
        (
            // Working-set rounds along a λ path (about one round per λ).
            "lasso",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\nlabel_column = \"target\"\n[params]\nlambda = 0.1\npath_length = 40\nstandardize = true", data("regression/diabetes.csv")),
            40,
        ),
        (
            "mf",
            format!("[data]\nformat = \"csv\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[params]\nrank = 5\nlambda = 0.2\nsolver = \"ccd\"\nuser_column = \"userId\"\nitem_column = \"movieId\"\nrating_column = \"rating\"", data("movielens_dslabs/ratings.csv")),
            20,
        ),
    ];
    let c = LocalCluster::start(3, 16, "");
    let client = Arc::new(c.connect());
    c.wait_leaders(&client, &[1, 2, 3], Duration::from_secs(60));
    let cluster = Node::new(client.clone(), Node::DEFAULT_CACHE_ROWS);
    let stop = AtomicBool::new(false);
    for (i, (algorithm, body, clocks)) in jobs.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let model_a = dir.path().join("embedded.safetensors");
        let model_b = dir.path().join("cluster.safetensors");
        let path = dir.path().join("job.toml");
        std::fs::write(
            &path,
            format!(
                "name = \"{algorithm}\"\nalgorithm = \"{algorithm}\"\n[run]\nworkers = 2\nconsistency = \"bsp\"\ndeterministic = true\nseed = 5\nshards = 5\nclocks = {clocks}\n[model]\npath = \"{}\"\n{body}\n",
                model_a.display()
            ),
        )
        .unwrap();
        let spec = JobSpec::from_file(&path).unwrap();
        let algo = petuum_algorithms::build(&spec).unwrap();
        let cfg = RunConfig {
            job: 10 + i as u64,
            first_table: 100 * (i as u32 + 1),
            workers: spec.run.workers,
            consistency: spec.consistency(),
            clocks: spec.clocks(),
            seed: spec.run.seed,
            deterministic: spec.run.deterministic,
        };
        // On the cluster, the job's tables live on 5 of the 16 shards (its
        // span, from shard `job mod 16`, wrapping for job 13 onwards);
        // embedded, on 5 in-process shards: the bytes must not depend on it.
        let tables = table_specs(cfg.job, cfg.first_table, &algo.tables());
        client.set_job_shards(cfg.job, spec.run.shards(), tables.iter().map(|t| t.id));
        let embedded = Node::new(
            Arc::new(InProcShards::new(spec.run.shards())),
            Node::DEFAULT_CACHE_ROWS,
        );
        let a = run_job(&embedded, algo.as_ref(), &cfg, &model_a, &NoProgress, &stop).unwrap();
        let b = run_job(&cluster, algo.as_ref(), &cfg, &model_b, &NoProgress, &stop)
            .unwrap_or_else(|e| panic!("{algorithm} on the cluster: {e}\n{}", c.logs()));
        assert_eq!(a.objective.to_bits(), b.objective.to_bits(), "{algorithm}");
        assert!(
            std::fs::read(&model_a).unwrap() == std::fs::read(&model_b).unwrap(),
            "{algorithm}: the cluster run's model differs from the embedded run's"
        );
        cluster.service().drop_job(cfg.job);
    }
}
