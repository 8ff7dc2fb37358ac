//! Writes the seeded synthetic Lasso problem of the tests and benchmarks
//! as libsvm, and its true coefficients (one per line).
//!
//! `cargo run --release -p petuum-algorithms --example lasso_synthetic -- OUT.libsvm [TRUTH.txt] [n d density k sigma seed]`

use petuum_algorithms::lasso::synthetic;
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .expect("usage: lasso_synthetic OUT.libsvm [TRUTH.txt] [n d density k sigma seed]");
    let num = |i: usize, default: f64| {
        args.get(i)
            .map_or(default, |s| s.parse().expect("a number"))
    };
    let (n, d, density, k, sigma, seed) = (
        num(2, 5000.0) as usize,
        num(3, 10000.0) as usize,
        num(4, 0.01),
        num(5, 100.0) as usize,
        num(6, 0.1),
        num(7, 7.0) as u64,
    );
    let s = synthetic::generate(n, d, density, k, sigma, seed);
    synthetic::write_libsvm(&s.design, std::path::Path::new(out)).expect("write libsvm");
    if let Some(t) = args.get(1) {
        let mut f = std::fs::File::create(t).expect("create truth file");
        for v in &s.truth {
            writeln!(f, "{v}").expect("write truth");
        }
    }
    eprintln!(
        "{n} x {d}, {} non-zeros, {k}-sparse truth, sigma {sigma}, seed {seed}",
        s.design.x.nnz()
    );
}
