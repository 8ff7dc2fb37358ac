//! CART classification trees (Gini impurity), grown on a bootstrap sample
//! with a random feature subset at every split.

use crate::data::Features;
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

/// A bootstrap sample: the distinct rows drawn and how often each was drawn.
/// Growing on weights rather than on repeated rows gives the same splits
/// (a repeated row only adds its weight to the counts) while sorting and
/// partitioning each distinct row once, as scikit-learn does with
/// `sample_weight`.
pub struct Sample {
    /// Distinct rows drawn, in ascending order.
    pub rows: Vec<usize>,
    /// Times each row of the data set was drawn (0 for rows not drawn).
    pub weight: Vec<u32>,
}

/// Grows a tree on a bootstrap sample.
pub fn grow(
    x: &Features,
    y: &[u32],
    sample: &mut Sample,
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
) -> Tree {
    let mut tree = Tree::default();
    let mut g = Grower {
        x,
        y,
        w: &sample.weight,
        p,
        keys: Vec::new(),
        spare: Vec::new(),
        features: Vec::new(),
        counts: vec![0.0; 3 * p.num_classes.max(1)],
    };
    g.build(&mut sample.rows, 0, rng, &mut tree);
    tree
}

/// What growing one tree needs besides the rows of the node: the data, the
/// weights, and reused scratch space.
struct Grower<'a> {
    x: &'a Features,
    y: &'a [u32],
    w: &'a [u32],
    p: &'a GrowParams,
    /// Sort keys: the order-preserving bits of a value above the row index.
    keys: Vec<u64>,
    /// Scratch for the radix sort of `keys`.
    spare: Vec<u64>,
    /// Feature ids, shuffled in place as a node draws its candidates.
    features: Vec<u32>,
    /// Class counts: the node's, the left side's and the right side's.
    counts: Vec<f64>,
}

/// A float's bits, mapped so that unsigned order is the float's order
/// (-0.0 becomes 0.0 first, so the two stay equal).
#[inline]
fn order_bits(v: f32) -> u32 {
    let b = (v + 0.0).to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[inline]
fn from_order_bits(b: u32) -> f32 {
    f32::from_bits(if b & 0x8000_0000 != 0 {
        b & 0x7fff_ffff
    } else {
        !b
    })
}

impl Grower<'_> {
    fn build(
        &mut self,
        idx: &mut [usize],
        depth: usize,
        rng: &mut ChaCha8Rng,
        tree: &mut Tree,
    ) -> u32 {
        let me = tree.nodes.len() as u32;
        let k = self.p.num_classes.max(1);
        let total = &mut self.counts[..k];
        total.iter_mut().for_each(|c| *c = 0.0);
        let mut n = 0.0;
        for &i in idx.iter() {
            let w = self.w[i] as f64;
            total[self.y[i] as usize] += w;
            n += w;
        }
        let (class, top) = total
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(c, &v)| (c as u32, v))
            .expect("k > 0");
        tree.nodes.push(Node {
            feature: None,
            threshold: 0.0,
            left: 0,
            right: 0,
            class,
        });
        if depth >= self.p.max_depth || n < self.p.min_samples_split as f64 || top == n {
            return me;
        }
        let Some((feature, threshold)) = self.best_split(idx, n, rng) else {
            return me;
        };
        // Partition idx in place: left (<= threshold) first.
        let mut split = 0;
        for i in 0..idx.len() {
            if value(self.x, idx[i], feature) <= threshold {
                idx.swap(i, split);
                split += 1;
            }
        }
        if split == 0 || split == idx.len() {
            return me;
        }
        let (l, r) = idx.split_at_mut(split);
        let left = self.build(l, depth + 1, rng, tree);
        let right = self.build(r, depth + 1, rng, tree);
        tree.nodes[me as usize] = Node {
            feature: Some(feature),
            threshold,
            left,
            right,
            class,
        };
        me
    }

    /// The split among `max_features` random features that lowers the
    /// weighted Gini impurity most. With class counts `c` over `m` samples,
    /// `m · gini = m − Σc²/m`, so the best split maximises
    /// `Σl²/nl + Σr²/nr`, and moving one sample of class `c` from right to
    /// left changes both sums of squares in O(1).
    fn best_split(&mut self, idx: &[usize], n: f64, rng: &mut ChaCha8Rng) -> Option<(u32, f32)> {
        let d = self.x.ncols();
        let k = self.p.num_classes.max(1);
        let (total, rest) = self.counts.split_at_mut(k);
        let (left, right) = rest.split_at_mut(k);
        let parent_sq: f64 = total.iter().map(|c| c * c).sum();
        // A split must beat the parent by more than rounding.
        let floor = parent_sq / n + 1e-12 * n;
        let mut best: Option<(f64, u32, f32)> = None;
        // Features in random order until `max_features` that are not
        // constant on this node's rows have been tried (as scikit-learn
        // does: a constant feature cannot split, and counting it would
        // leave nodes of sparse or padded data with few real candidates).
        let features = &mut self.features;
        if features.len() != d {
            *features = (0..d as u32).collect();
        }
        let (mut tried, mut next) = (0, 0);
        while tried < self.p.max_features.min(d) && next < d {
            let pick = rng.gen_range(next..d);
            features.swap(next, pick);
            let f = features[next];
            next += 1;
            self.keys.clear();
            let (mut lo, mut hi) = (u32::MAX, 0u32);
            self.keys.extend(idx.iter().map(|&i| {
                let b = order_bits(value(self.x, i, f));
                lo = lo.min(b);
                hi = hi.max(b);
                ((b as u64) << 32) | i as u64
            }));
            if lo == hi {
                continue;
            }
            tried += 1;
            sort_by_value(&mut self.keys, &mut self.spare);
            left.iter_mut().for_each(|v| *v = 0.0);
            right.copy_from_slice(total);
            let (mut sl, mut sr, mut nl) = (0.0, parent_sq, 0.0);
            for s in 0..self.keys.len() - 1 {
                let i = (self.keys[s] & 0xffff_ffff) as usize;
                let c = self.y[i] as usize;
                let w = self.w[i] as f64;
                sl += w * (2.0 * left[c] + w);
                sr -= w * (2.0 * right[c] - w);
                left[c] += w;
                right[c] -= w;
                nl += w;
                let (here, after) = ((self.keys[s] >> 32) as u32, (self.keys[s + 1] >> 32) as u32);
                if here == after {
                    continue;
                }
                let score = sl / nl + sr / (n - nl);
                if score > floor && best.is_none_or(|b| score > b.0) {
                    let (a, b) = (from_order_bits(here), from_order_bits(after));
                    best = Some((score, f, a + (b - a) / 2.0));
                }
            }
        }
        best.map(|(_, f, t)| (f, t))
    }
}

/// Sorts keys by their upper 32 bits (the order of rows with equal values
/// does not matter). Large slices go through an LSD radix sort, one pass
/// per byte that is not the same in every key (small-integer features
/// often need one or two), small ones through `sort_unstable`.
fn sort_by_value(keys: &mut Vec<u64>, spare: &mut Vec<u64>) {
    if keys.len() < 256 {
        keys.sort_unstable();
        return;
    }
    let mut counts = [[0u32; 256]; 4];
    for &k in keys.iter() {
        let v = (k >> 32) as u32;
        for (b, c) in counts.iter_mut().enumerate() {
            c[((v >> (8 * b)) & 0xff) as usize] += 1;
        }
    }
    let n = keys.len() as u32;
    spare.resize(keys.len(), 0);
    for (b, c) in counts.iter_mut().enumerate() {
        let shift = 32 + 8 * b;
        if c[((keys[0] >> shift) & 0xff) as usize] == n {
            continue;
        }
        let mut at = 0u32;
        for slot in c.iter_mut() {
            let here = *slot;
            *slot = at;
            at += here;
        }
        for &k in keys.iter() {
            let slot = &mut c[((k >> shift) & 0xff) as usize];
            spare[*slot as usize] = k;
            *slot += 1;
        }
        std::mem::swap(keys, spare);
    }
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

/// A bootstrap sample of `from` (with replacement) over a data set of `n`
/// rows, and the out-of-bag rest.
pub fn bootstrap(from: &[usize], n: usize, rng: &mut ChaCha8Rng) -> (Sample, Vec<usize>) {
    let m = from.len();
    let mut weight = vec![0u32; n];
    for _ in 0..m {
        weight[from[rng.gen_range(0..m)]] += 1;
    }
    let (rows, oob) = from.iter().partition(|&&i| weight[i] > 0);
    (Sample { rows, weight }, oob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;
    use rand::SeedableRng;

    #[test]
    fn radix_sort_orders_values_of_every_sign() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let vals: Vec<f32> = (0..5000)
            .map(|i| match i % 4 {
                0 => rng.gen_range(-1e6f32..1e6),
                1 => rng.gen_range(0..16) as f32,
                2 => -0.0,
                _ => rng.gen_range(-1e-3f32..1e-3),
            })
            .collect();
        let mut keys: Vec<u64> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| ((order_bits(v) as u64) << 32) | i as u64)
            .collect();
        sort_by_value(&mut keys, &mut Vec::new());
        let sorted: Vec<f32> = keys
            .iter()
            .map(|k| vals[(k & 0xffff_ffff) as usize])
            .collect();
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
        assert!(keys
            .iter()
            .all(|k| from_order_bits((k >> 32) as u32) == vals[(k & 0xffff_ffff) as usize]));
        let mut idx: Vec<u64> = keys.iter().map(|k| k & 0xffff_ffff).collect();
        idx.sort_unstable();
        assert!(idx.iter().enumerate().all(|(i, &k)| k == i as u64));
    }

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
        let mut all = Sample {
            rows: vec![0, 1, 2, 3],
            weight: vec![1; 4],
        };
        let t = grow(&x, &y, &mut all, &p, &mut ChaCha8Rng::seed_from_u64(1));
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
