//! Matrix factorisation quality: MovieLens (ml-latest-small via dslabs,
//! every 5th rating held out) against LIBMF at the same rank and λ grid,
//! and a seeded synthetic low-rank matrix whose noise level bounds the
//! attainable test RMSE.

mod common;
use common::{datasets, metric, run_spec, run_spec_at, run_spec_with_defaults};

fn movielens(solver: &str, lambda: f64, clocks: u32, extra: &str) -> f64 {
    let out = run_spec(&format!(
        "name = \"t\"\nalgorithm = \"mf\"\n[data]\nformat = \"csv\"\ntrain = \"{{data}}/movielens_dslabs/ratings.csv\"\ntest_fraction = 0.2\n[run]\nworkers = 2\nconsistency = \"bsp\"\nclocks = {clocks}\nseed = 1\n[model]\npath = \"{{model}}\"\n[params]\nrank = 10\nlambda = {lambda}\nsolver = \"{solver}\"\nuser_column = \"userId\"\nitem_column = \"movieId\"\nrating_column = \"rating\"\n{extra}\n"
    ));
    metric(&out, "test_rmse")
}

/// LIBMF 2.01 through the `libmf` crate 0.3.0 (rank 10, 2 threads, 20
/// iterations, its default; λ_p2 = λ_q2 = λ), same hold-out and id maps,
/// test ratings with unseen ids skipped as here: test RMSE 0.9185 (λ 0.02),
/// 0.9019 (0.05), 0.8952 (0.1), 0.9157 (0.2); best 0.8952. LIBMF with 2
/// threads is not deterministic: its best over five runs was 0.8949–0.8990
/// (1 thread: 0.8956); we take the best seen. With 100 iterations its best
/// is 0.9004 (λ 0.1). Program: `bench/strads/libmf_ref` (`bench/strads.py` runs it).
const LIBMF_BEST: f64 = 0.8949;

#[test]
fn movielens_ccd_and_sgd_against_libmf() {
    let grid = [0.02, 0.05, 0.1, 0.2];
    // SGD: 20 epochs of 4 clocks (the workers merge their changes 4 times
    // per pass over the data).
    let sgd = grid
        .iter()
        .map(|&l| movielens("sgd", l, 80, "batches = 4"))
        .fold(f64::INFINITY, f64::min);
    // CCD++: 20 passes over the 10 ranks and the 2 bias ranks (2 clocks
    // per rank).
    let ccd = grid
        .iter()
        .map(|&l| movielens("ccd", l, 480, ""))
        .fold(f64::INFINITY, f64::min);
    eprintln!("best test RMSE: sgd {sgd:.4}, ccd {ccd:.4}, LIBMF {LIBMF_BEST}");
    // Measured with user and item biases (the default): sgd 0.8788 (λ 0.1),
    // ccd 0.8727 (λ 0.2). Without them (`biases = false`, LIBMF's model):
    // sgd 0.8901, ccd 0.8996.
    assert!(sgd <= LIBMF_BEST, "sgd {sgd} vs LIBMF {LIBMF_BEST}");
    assert!(ccd <= LIBMF_BEST, "ccd {ccd} vs LIBMF {LIBMF_BEST}");
}

/// LIBMF at its own defaults (8 factors, λ_p2 = λ_q2 = 0.1, 20
/// iterations), 2 threads, the same hold-out: MovieLens test RMSE 0.9019,
/// 0.9008, 0.9006 (three runs; 1 thread 0.9003), through
/// `bench/strads/libmf_ref` (`libmf_ref ratings.csv userId movieId rating
/// 8 2 20 0.1`), 2026-12-04.
const LIBMF_DEFAULTS: f64 = 0.9003;

/// An `mf` job that names only its columns (rank 10, λ 0.1, biases,
/// CCD++ under BSP, and with `run.clocks` left out 20 passes over the
/// ranks, 480 clocks; until 2026-12-06 it got 10 clocks, not one pass)
/// against LIBMF's defaults on
/// MovieLens. Measured: 0.8856 (before biases were fitted 0.9053, 0.5%
/// behind; with the earlier default λ 0.05 it was 0.9532). On the
/// synthetic set of `bench/strads.py` (rank-10 truth) the defaults are
/// ahead: 0.6042 against LIBMF's 0.7288 (before biases).
#[test]
fn default_settings_beat_libmf_defaults() {
    let out = run_spec_with_defaults(
        "name = \"t\"\nalgorithm = \"mf\"\n[data]\nformat = \"csv\"\ntrain = \"{data}/movielens_dslabs/ratings.csv\"\ntest_fraction = 0.2\n[run]\nworkers = 2\nseed = 1\n[model]\npath = \"{model}\"\n[params]\nuser_column = \"userId\"\nitem_column = \"movieId\"\nrating_column = \"rating\"\n",
    );
    let rmse = metric(&out, "test_rmse");
    eprintln!("defaults: test RMSE {rmse:.4}, LIBMF defaults {LIBMF_DEFAULTS}");
    assert!(
        rmse <= LIBMF_DEFAULTS,
        "defaults {rmse} vs LIBMF defaults {LIBMF_DEFAULTS}"
    );
}

#[test]
fn synthetic_low_rank_reaches_the_noise_floor() {
    // 1000 x 1000, rank 5, 30% observed, noise sigma = 0.5 (seed 3): the
    // best possible test RMSE is sigma; within 5% of it.
    let sigma = 0.5;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ratings.txt");
    std::fs::write(
        &file,
        petuum_algorithms::mf::synthetic(1000, 1000, 5, 0.3, sigma, 3),
    )
    .unwrap();
    for solver in ["ccd", "sgd"] {
        let clocks = if solver == "ccd" { 200 } else { 30 };
        let out = run_spec(&format!(
            "name = \"t\"\nalgorithm = \"mf\"\n[data]\nformat = \"triples\"\ntrain = \"{}\"\ntest_fraction = 0.2\n[run]\nworkers = 2\nconsistency = \"bsp\"\nclocks = {clocks}\nseed = 1\n[model]\npath = \"{{model}}\"\n[params]\nrank = 5\nlambda = 0.02\nsolver = \"{solver}\"\n",
            file.display()
        ));
        let rmse = metric(&out, "test_rmse");
        eprintln!("{solver}: test RMSE {rmse:.4} (sigma {sigma})");
        assert!(
            rmse <= 1.05 * sigma,
            "{solver}: test RMSE {rmse} vs sigma {sigma}"
        );
    }
}

/// `petuumd recommend`'s library call on a MovieLens model: the best
/// items of a user, best first, none the user rated in the file named,
/// scores as the model predicts them; an unknown user is refused by name.
#[test]
fn movielens_top_n_leaves_out_what_a_user_rated() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mf.safetensors");
    run_spec_at(
        "name = \"t\"\nalgorithm = \"mf\"\n[data]\nformat = \"csv\"\ntrain = \"{data}/movielens_dslabs/ratings.csv\"\n[run]\nworkers = 2\nconsistency = \"bsp\"\nclocks = 40\nseed = 1\n[model]\npath = \"{model}\"\n[params]\nrank = 10\nlambda = 0.1\nsolver = \"sgd\"\nbatches = 4\nuser_column = \"userId\"\nitem_column = \"movieId\"\nrating_column = \"rating\"\n",
        &model,
    );
    let ratings = datasets().join("movielens_dslabs/ratings.csv");
    let users = vec!["1".to_string(), "414".to_string()];
    let recs = petuum_algorithms::eval::recommend(&model, &users, 10, Some(&ratings)).unwrap();
    let text = std::fs::read_to_string(&ratings).unwrap();
    for (user, items) in &recs {
        assert_eq!(items.len(), 10, "{user}: {items:?}");
        let rated: std::collections::HashSet<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0] == user).then_some(f[1])
            })
            .collect();
        assert!(!rated.is_empty());
        for (item, _) in items {
            assert!(!rated.contains(item.as_str()), "{user} rated {item}");
        }
        assert!(
            items.windows(2).all(|w| w[0].1 >= w[1].1),
            "not best first: {items:?}"
        );
        // The full ranking with the rated items left out.
        let expected: Vec<(String, f64)> = full_ranking(&model, user)
            .into_iter()
            .filter(|(i, _)| !rated.contains(i.as_str()))
            .take(10)
            .collect();
        assert_eq!(items, &expected);
    }
    let err = petuum_algorithms::eval::recommend(&model, &["no-such-user".into()], 5, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`no-such-user` is not in the model"), "{err}");
}

/// Every item for `user`, best first, nothing excluded.
fn full_ranking(model: &std::path::Path, user: &str) -> Vec<(String, f64)> {
    petuum_algorithms::eval::recommend(model, &[user.to_string()], usize::MAX, None)
        .unwrap()
        .remove(0)
        .1
}
