//! A small linear SVM: L2-regularised hinge loss solved in the dual by
//! coordinate descent (Hsieh et al., "A dual coordinate descent method for
//! large-scale linear SVM", ICML 2008 — liblinear's `-s 3`), one-vs-all for
//! several classes, with a bias feature. The baseline MedLDA is compared
//! against ("LDA topic proportions + linear SVM").

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A trained one-vs-all linear SVM (one binary classifier for 2 classes).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearSvm {
    /// Per classifier: weights then bias (`dim + 1`).
    pub weights: Vec<Vec<f64>>,
    pub num_classes: u32,
}

impl LinearSvm {
    /// Trains on dense samples `x` with classes `y` in `0..num_classes`:
    /// `min ½‖w‖² + c Σ max(0, 1 - y wᵀx)` per classifier, `epochs` passes
    /// of dual coordinate descent in a seeded random order.
    pub fn train(
        x: &[Vec<f64>],
        y: &[u32],
        num_classes: u32,
        c: f64,
        epochs: usize,
        seed: u64,
    ) -> Self {
        assert_eq!(x.len(), y.len(), "one label per sample");
        let dim = x.first().map_or(0, Vec::len);
        let binary = num_classes <= 2;
        let m = if binary { 1 } else { num_classes as usize };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let qii: Vec<f64> = x
            .iter()
            .map(|r| r.iter().map(|v| v * v).sum::<f64>() + 1.0)
            .collect();
        let mut weights = Vec::with_capacity(m);
        for j in 0..m {
            let target = |i: usize| -> f64 {
                let pos = if binary {
                    y[i] == 1
                } else {
                    y[i] as usize == j
                };
                if pos {
                    1.0
                } else {
                    -1.0
                }
            };
            let mut w = vec![0.0; dim + 1];
            let mut alpha = vec![0.0; x.len()];
            let mut order: Vec<usize> = (0..x.len()).collect();
            for _ in 0..epochs {
                order.shuffle(&mut rng);
                let mut max_pg = 0.0f64;
                for &i in &order {
                    let yi = target(i);
                    let g = yi * (dot(&w[..dim], &x[i]) + w[dim]) - 1.0;
                    let pg = if alpha[i] == 0.0 {
                        g.min(0.0)
                    } else if alpha[i] == c {
                        g.max(0.0)
                    } else {
                        g
                    };
                    max_pg = max_pg.max(pg.abs());
                    if pg != 0.0 {
                        let old = alpha[i];
                        alpha[i] = (old - g / qii[i]).clamp(0.0, c);
                        let d = (alpha[i] - old) * yi;
                        for (wk, xk) in w[..dim].iter_mut().zip(&x[i]) {
                            *wk += d * xk;
                        }
                        w[dim] += d;
                    }
                }
                if max_pg < 1e-4 {
                    break;
                }
            }
            weights.push(w);
        }
        LinearSvm {
            weights,
            num_classes: num_classes.max(2),
        }
    }

    /// Decision values, one per classifier.
    pub fn decision(&self, x: &[f64]) -> Vec<f64> {
        self.weights
            .iter()
            .map(|w| dot(&w[..w.len() - 1], x) + w[w.len() - 1])
            .collect()
    }

    pub fn predict(&self, x: &[f64]) -> u32 {
        let d = self.decision(x);
        if d.len() == 1 {
            return u32::from(d[0] >= 0.0);
        }
        argmax(&d) as u32
    }

    /// Fraction of samples classified correctly.
    pub fn accuracy(&self, x: &[Vec<f64>], y: &[u32]) -> f64 {
        if x.is_empty() {
            return 0.0;
        }
        let ok = x
            .iter()
            .zip(y)
            .filter(|(r, &l)| self.predict(r) == l)
            .count();
        ok as f64 / x.len() as f64
    }
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_separable_data() {
        // Class 1 iff x0 + x1 > 1, with a margin gap around the line.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut x = Vec::new();
        let mut y = Vec::new();
        use rand::Rng;
        while x.len() < 200 {
            let p = vec![rng.gen::<f64>() * 2.0, rng.gen::<f64>() * 2.0];
            let s = p[0] + p[1] - 1.0;
            if s.abs() > 0.1 {
                y.push(u32::from(s > 0.0));
                x.push(p);
            }
        }
        let svm = LinearSvm::train(&x, &y, 2, 100.0, 200, 2);
        assert_eq!(svm.accuracy(&x, &y), 1.0);
        // Three classes by the larger coordinate, or neither.
        let y3: Vec<u32> = x
            .iter()
            .map(|p| {
                if p[0] > 1.2 {
                    0
                } else if p[1] > 1.2 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let svm = LinearSvm::train(&x, &y3, 3, 10.0, 200, 2);
        assert!(svm.accuracy(&x, &y3) > 0.9, "{}", svm.accuracy(&x, &y3));
    }
}
