//! A seeded sparse regression problem: `y = X β* + σ ε` with `X` sparse
//! (each entry present with probability `density`, values N(0, 1)), `β*`
//! with `k` non-zeros of magnitude in [1, 2] and random signs, ε ~ N(0, 1).

use super::data::{Csc, Design};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::Path;

/// The generated problem and its truth.
pub struct Synthetic {
    pub design: Design,
    pub truth: Vec<f64>,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller.
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Values are rounded to f32 (what a text file round-trips exactly).
pub fn generate(n: usize, d: usize, density: f64, k: usize, sigma: f64, seed: u64) -> Synthetic {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut truth = vec![0.0; d];
    for j in rand::seq::index::sample(&mut rng, d, k.min(d)) {
        let m: f64 = rng.gen_range(1.0..2.0);
        truth[j] = if rng.gen::<bool>() { m } else { -m } as f32 as f64;
    }
    let mut t = Vec::new();
    for i in 0..n {
        for j in 0..d {
            if rng.gen::<f64>() < density {
                t.push((i as u32, j as u32, normal(&mut rng) as f32 as f64));
            }
        }
    }
    let x = Csc::from_triples(n, d, t);
    let mut y = x.matvec(&truth);
    for v in &mut y {
        *v = (*v + sigma * normal(&mut rng)) as f32 as f64;
    }
    Synthetic {
        design: Design { x, y },
        truth,
    }
}

/// Writes the design as a 1-based libsvm file.
pub fn write_libsvm(d: &Design, path: &Path) -> std::io::Result<()> {
    let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); d.n()];
    for j in 0..d.d() {
        let (r, v) = d.x.col(j);
        for (&i, &x) in r.iter().zip(v) {
            rows[i as usize].push((j as u32, x));
        }
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (row, y) in rows.iter().zip(&d.y) {
        write!(w, "{}", *y as f32)?;
        for &(j, x) in row {
            write!(w, " {}:{}", j + 1, x as f32)?;
        }
        writeln!(w)?;
    }
    w.flush()
}
