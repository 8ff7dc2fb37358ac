//! `petuumd run` on LDA jobs end to end: the real binary, the shared
//! Reuters corpus (395 documents, 84,010 tokens), the embedded single-node
//! cluster; then `petuumd eval` on the saved model; and deterministic mode
//! giving identical model bytes.

use petuum_tests::{datasets, json_lines, run};
use std::path::Path;

fn lda_job(model: &Path, run_extra: &str) -> String {
    let d = datasets().join("reuters395_lda");
    format!(
        r#"name = "reuters-lda-test"
algorithm = "lda"

[data]
format = "uci_bow"
train = "{train}"
vocab = "{vocab}"
test_fraction = 0.1

[run]
{run_extra}

[model]
path = "{model}"

[params]
num_topics = 20
alpha = 0.1
beta = 0.01
clocks_per_sweep = 2
"#,
        train = d.join("docword.txt").display(),
        vocab = d.join("vocab.txt").display(),
        model = model.display(),
    )
}

#[test]
fn reuters_lda_runs_exports_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lda.safetensors");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        lda_job(
            &model,
            "workers = 2\nconsistency = \"ssp\"\nstaleness = 1\nclocks = 60\nseed = 11",
        ),
    )
    .unwrap();
    let out = run(
        "petuumd",
        &["run", job.to_str().unwrap(), "--json", "--data-dir", "pd"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "petuumd run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let clocks: Vec<_> = lines.iter().filter(|l| l["event"] == "clock").collect();
    assert_eq!(clocks.len(), 60, "one progress line per clock");
    // Throughput is tokens/s; every clock samples half of each worker's
    // documents (clocks_per_sweep = 2).
    assert!(clocks
        .iter()
        .all(|l| l["throughput"].as_f64().unwrap() > 0.0));
    // The objective is the corpus log-likelihood log p(w, z) of the state
    // at the start of each clock: negative, and rising as topics form.
    let first = clocks[0]["objective"].as_f64().unwrap();
    let last = clocks[59]["objective"].as_f64().unwrap();
    assert!(first < 0.0 && last < 0.0, "{first} {last}");
    assert!(
        last > first * 0.8,
        "log-likelihood did not rise enough: {first} -> {last}"
    );
    let done = lines.last().unwrap();
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["clocks"], 60);
    assert_eq!(done["model_path"], model.display().to_string());
    // The final state's log-likelihood is reported at export: one
    // half-sweep after the last per-clock figure, so close to it.
    let ll = done["loglik"].as_f64().unwrap();
    assert!(ll > last * 1.01, "final loglik {ll} vs last clock {last}");
    // Held-out perplexity by document completion on the 10% split must
    // beat a uniform model, whose perplexity is the vocabulary size (4258).
    let ppl = done["heldout_perplexity"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 4258.0, "held-out perplexity {ppl}");

    // `petuumd eval` reads the model and scores held-out documents given
    // as LDA-C (the corpus's own .ldac copy), printing topics to stderr.
    let d = datasets().join("reuters395_lda");
    let out = run(
        "petuumd",
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            d.join("reuters.ldac").to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = &json_lines(&out)[0];
    assert_eq!(report["algorithm"], "lda");
    assert_eq!(report["samples"], 395);
    let eval_ppl = report["perplexity"].as_f64().unwrap();
    assert!(eval_ppl > 1.0 && eval_ppl < 4258.0, "{eval_ppl}");
    let topics = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        topics.lines().filter(|l| l.starts_with("topic ")).count(),
        20,
        "{topics}"
    );
}

#[test]
fn deterministic_lda_runs_write_identical_models() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for i in 0..2 {
        let model = dir.path().join(format!("m{i}.safetensors"));
        let job = dir.path().join(format!("job{i}.toml"));
        std::fs::write(
            &job,
            lda_job(
                &model,
                "workers = 3\nconsistency = \"bsp\"\ndeterministic = true\nclocks = 10\nseed = 3",
            ),
        )
        .unwrap();
        let out = run(
            "petuumd",
            &["run", job.to_str().unwrap(), "--json", "--data-dir", "pd"],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bytes.push(std::fs::read(&model).unwrap());
    }
    assert!(
        bytes[0] == bytes[1],
        "deterministic mode produced different model bytes"
    );
}

#[test]
fn bad_lda_specs_and_corpora_are_rejected_with_the_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let good = lda_job(&model, "workers = 2\nclocks = 2");
    let bad_corpus = dir.path().join("docword.txt");
    // Line 5 names word 9, but the header says W = 3.
    std::fs::write(&bad_corpus, "2\n3\n3\n1 1 1\n2 9 1\n1 2 1\n").unwrap();
    let reuters = datasets().join("reuters395_lda");
    let cases: Vec<(String, &[&str])> = vec![
        (
            good.replace("num_topics = 20", "num_topics = 1"),
            &["params.num_topics", "between 2"],
        ),
        (
            good.replace("beta = 0.01", "beta = -1.0"),
            &["params.beta", "positive"],
        ),
        (
            good.replace("format = \"uci_bow\"", "format = \"libsvm\""),
            &["data.format"],
        ),
        (
            good.replace(
                &reuters.join("docword.txt").display().to_string(),
                &bad_corpus.display().to_string(),
            )
            .replace(
                &format!("vocab = \"{}\"\n", reuters.join("vocab.txt").display()),
                "",
            ),
            &["docword.txt:5:", "wordID 9 out of range 1..=3"],
        ),
    ];
    for (text, needles) in cases {
        let job = dir.path().join("bad.toml");
        std::fs::write(&job, &text).unwrap();
        let out = run(
            "petuumd",
            &["run", job.to_str().unwrap(), "--data-dir", "pd"],
            dir.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{err}");
        for n in needles {
            assert!(err.contains(n), "`{n}` not in: {err}");
        }
    }
}

/// `petuumd run` on a MedLDA job built from the spec (labels from
/// labels.csv column `spam`, seeded 20% split), then `petuumd eval` with
/// the labels. A short run (K = 10, 10 sweeps) measured 95.9% held-out
/// accuracy (seed 5); the bar is well above the 68.6% of always
/// answering ham (4,150 of 6,046 mails).
#[test]
fn spam_medlda_runs_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("medlda.safetensors");
    let s = datasets().join("spamassassin");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"name = "spam-medlda-test"
algorithm = "medlda"

[data]
format = "uci_bow"
train = "{train}"
vocab = "{vocab}"
train_labels = "{labels}"
label_column = "spam"
test_fraction = 0.2

[run]
workers = 2
consistency = "ssp"
staleness = 1
clocks = 10
seed = 5

[model]
path = "{model}"

[params]
num_topics = 10
c = 16.0
"#,
            train = s.join("docword.txt").display(),
            vocab = s.join("vocab.txt").display(),
            labels = s.join("labels.csv").display(),
            model = model.display(),
        ),
    )
    .unwrap();
    let out = run(
        "petuumd",
        &["run", job.to_str().unwrap(), "--json", "--data-dir", "pd"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let done = lines.last().unwrap();
    assert_eq!(done["state"], "succeeded");
    let acc = done["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "held-out accuracy {acc}");
    // The objective is the mean training hinge loss: it falls.
    let clocks: Vec<f64> = lines
        .iter()
        .filter(|l| l["event"] == "clock")
        .map(|l| l["objective"].as_f64().unwrap())
        .collect();
    assert_eq!(clocks.len(), 10);
    assert!(clocks[9] < clocks[1], "{clocks:?}");

    let out = run(
        "petuumd",
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            s.join("docword.txt").to_str().unwrap(),
            "--labels",
            s.join("labels.csv").to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = &json_lines(&out)[0];
    assert_eq!(report["algorithm"], "medlda");
    assert_eq!(report["samples"], 6046);
    assert!(report["accuracy"].as_f64().unwrap() > 0.9);
}
