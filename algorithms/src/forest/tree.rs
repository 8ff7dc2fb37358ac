//! CART classification trees (Gini impurity), grown on a bootstrap sample
//! with a random feature subset at every split.

use crate::data::Features;
use rand::seq::index::sample;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One node. A leaf has `feature == None` and predicts `class`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Node {
    pub feature: Option<u32>,
    pub threshold: f32,
    pub left: u32,
    pub right: u32,
    pub class: u32,
}

/// A tree: nodes with the root at index 0.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// How to grow trees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrowParams {
    pub max_depth: usize,
    pub min_samples_split: usize,
    pub max_features: usize,
    pub num_classes: usize,
}

impl Tree {
    /// The predicted class of sample `i` of `x`.
    pub fn predict(&self, x: &Features, i: usize, row: &mut Vec<f32>) -> u32 {
        row.resize(x.ncols(), 0.0);
        x.row_into(i, row);
        self.predict_row(row)
    }

    pub fn predict_row(&self, row: &[f32]) -> u32 {
        let mut n = 0usize;
        loop {
            let node = &self.nodes[n];
            match node.feature {
                None => return node.class,
                Some(f) => {
                    n = if row[f as usize] <= node.threshold {
                        node.left
                    } else {
                        node.right
                    } as usize;
                }
            }
        }
    }

    /// Nodes flattened as 4 floats each: `feature + 1` (0 for a leaf),
    /// threshold (the class for a leaf), left, right.
    pub fn encode(&self) -> Vec<f32> {
        self.nodes
            .iter()
            .flat_map(|n| match n.feature {
                None => [0.0, n.class as f32, 0.0, 0.0],
                Some(f) => [f as f32 + 1.0, n.threshold, n.left as f32, n.right as f32],
            })
            .collect()
    }

    /// Inverse of [`encode`](Self::encode); checks every index.
    pub fn decode(v: &[f32], num_features: usize, num_classes: usize) -> Result<Tree, String> {
        if !v.len().is_multiple_of(4) || v.is_empty() {
            return Err(format!("tree encoding of {} floats", v.len()));
        }
        let n = v.len() / 4;
        let mut nodes = Vec::with_capacity(n);
        for (i, c) in v.chunks_exact(4).enumerate() {
            if c[0] == 0.0 {
                let class = c[1] as usize;
                if class >= num_classes {
                    return Err(format!("node {i}: class {class} out of range"));
                }
                nodes.push(Node {
                    feature: None,
                    threshold: 0.0,
                    left: 0,
                    right: 0,
                    class: class as u32,
                });
            } else {
                let f = c[0] as usize - 1;
                let (l, r) = (c[2] as usize, c[3] as usize);
                if f >= num_features || l >= n || r >= n || l <= i || r <= i {
                    return Err(format!(
                        "node {i}: feature {f} or children {l}, {r} out of range"
                    ));
                }
                nodes.push(Node {
                    feature: Some(f as u32),
                    threshold: c[1],
                    left: l as u32,
                    right: r as u32,
                    class: 0,
                });
            }
        }
        Ok(Tree { nodes })
    }
}

/// Grows a tree on the samples `idx` (with repeats, from bootstrapping).
pub fn grow(
    x: &Features,
    y: &[u32],
    idx: &mut [usize],
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
) -> Tree {
    let mut tree = Tree::default();
    let mut scratch = Vec::new();
    build(x, y, idx, 0, p, rng, &mut tree, &mut scratch);
    tree
}

fn majority(y: &[u32], idx: &[usize], k: usize) -> (u32, usize) {
    let mut counts = vec![0usize; k];
    for &i in idx {
        counts[y[i] as usize] += 1;
    }
    let (c, n) = counts
        .iter()
        .enumerate()
        .max_by_key(|&(c, n)| (*n, std::cmp::Reverse(c)))
        .expect("k > 0");
    (c as u32, *n)
}

#[allow(clippy::too_many_arguments)]
fn build(
    x: &Features,
    y: &[u32],
    idx: &mut [usize],
    depth: usize,
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
    tree: &mut Tree,
    scratch: &mut Vec<(f32, u32)>,
) -> u32 {
    let me = tree.nodes.len() as u32;
    let (class, top) = majority(y, idx, p.num_classes);
    tree.nodes.push(Node {
        feature: None,
        threshold: 0.0,
        left: 0,
        right: 0,
        class,
    });
    if depth >= p.max_depth || idx.len() < p.min_samples_split || top == idx.len() {
        return me;
    }
    let Some((feature, threshold)) = best_split(x, y, idx, p, rng, scratch) else {
        return me;
    };
    // Partition idx in place: left (<= threshold) first.
    let mut split = 0;
    for i in 0..idx.len() {
        if value(x, idx[i], feature) <= threshold {
            idx.swap(i, split);
            split += 1;
        }
    }
    if split == 0 || split == idx.len() {
        return me;
    }
    let (l, r) = idx.split_at_mut(split);
    let left = build(x, y, l, depth + 1, p, rng, tree, scratch);
    let right = build(x, y, r, depth + 1, p, rng, tree, scratch);
    tree.nodes[me as usize] = Node {
        feature: Some(feature),
        threshold,
        left,
        right,
        class,
    };
    me
}

#[inline]
fn value(x: &Features, i: usize, f: u32) -> f32 {
    match x {
        Features::Dense(a) => a[[i, f as usize]],
        Features::Sparse(c) => {
            let (idx, val) = c.row(i);
            idx.binary_search(&f).map(|k| val[k]).unwrap_or(0.0)
        }
    }
}

/// The split among `max_features` random features that lowers the
/// weighted Gini impurity most.
fn best_split(
    x: &Features,
    y: &[u32],
    idx: &[usize],
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
    scratch: &mut Vec<(f32, u32)>,
) -> Option<(u32, f32)> {
    let d = x.ncols();
    let k = p.num_classes;
    let n = idx.len() as f64;
    let mut total = vec![0f64; k];
    for &i in idx {
        total[y[i] as usize] += 1.0;
    }
    let gini = |c: &[f64], m: f64| {
        if m == 0.0 {
            0.0
        } else {
            1.0 - c.iter().map(|v| (v / m) * (v / m)).sum::<f64>()
        }
    };
    let parent = gini(&total, n);
    let mut best: Option<(f64, u32, f32)> = None;
    let mut left = vec![0f64; k];
    for f in sample(rng, d, p.max_features.min(d)).into_iter() {
        scratch.clear();
        scratch.extend(idx.iter().map(|&i| (value(x, i, f as u32), y[i])));
        scratch.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        left.iter_mut().for_each(|v| *v = 0.0);
        let mut right = total.clone();
        for s in 0..scratch.len() - 1 {
            let c = scratch[s].1 as usize;
            left[c] += 1.0;
            right[c] -= 1.0;
            if scratch[s].0 == scratch[s + 1].0 {
                continue;
            }
            let nl = (s + 1) as f64;
            let nr = n - nl;
            let imp = (nl * gini(&left, nl) + nr * gini(&right, nr)) / n;
            if imp < parent - 1e-12 && best.is_none_or(|b| imp < b.0) {
                let thr = scratch[s].0 + (scratch[s + 1].0 - scratch[s].0) / 2.0;
                best = Some((imp, f as u32, thr));
            }
        }
    }
    best.map(|(_, f, t)| (f, t))
}

/// A bootstrap sample of `from` (with replacement), and the out-of-bag rest.
pub fn bootstrap(from: &[usize], rng: &mut ChaCha8Rng) -> (Vec<usize>, Vec<usize>) {
    let n = from.len();
    let mut seen = vec![false; n];
    let picks: Vec<usize> = (0..n)
        .map(|_| {
            let k = rng.gen_range(0..n);
            seen[k] = true;
            from[k]
        })
        .collect();
    let oob = (0..n).filter(|&k| !seen[k]).map(|k| from[k]).collect();
    (picks, oob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;
    use rand::SeedableRng;

    #[test]
    fn learns_a_threshold_and_round_trips() {
        let x = Features::Dense(arr2(&[[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]));
        let y = [0, 0, 1, 1];
        let p = GrowParams {
            max_depth: 4,
            min_samples_split: 2,
            max_features: 2,
            num_classes: 2,
        };
        let mut idx = vec![0, 1, 2, 3];
        let t = grow(&x, &y, &mut idx, &p, &mut ChaCha8Rng::seed_from_u64(1));
        let mut row = Vec::new();
        for (i, &yi) in y.iter().enumerate() {
            assert_eq!(t.predict(&x, i, &mut row), yi);
        }
        assert_eq!(t.nodes[0].feature, Some(0));
        assert_eq!(t.nodes[0].threshold, 1.5);
        assert_eq!(Tree::decode(&t.encode(), 2, 2).unwrap(), t);
        assert!(Tree::decode(&[1.0, 0.5, 7.0, 9.0], 2, 2).is_err());
    }
}
