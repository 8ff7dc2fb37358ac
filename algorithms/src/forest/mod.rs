//! Random forest classification, as Petuum's RF app: every worker grows
//! its share of the trees, each tree on a bootstrap sample (of the whole
//! training set, or with `partition = true` of the worker's partition) with a
//! random subset of features tried at every split (Breiman, "Random
//! Forests", Machine Learning 2001; CART with Gini impurity). A grown tree
//! is written into the `trees` table (one sparse row per tree: its node
//! count, then 4 floats per node), so the forest is assembled from all
//! workers' rows in the table; prediction is a majority vote.
//!
//! Tree `t` belongs to worker `t mod workers`; each worker spreads its trees
//! evenly over the job's clocks. The objective per clock is the mean
//! out-of-bag error of the single trees grown in it (not of the forest).

mod params;
pub mod tree;

pub use params::ForestParams;

use crate::data::{Dataset, Features};
use crate::model::{ModelError, ModelFile};
use crate::softmax::InputSpec;
use petuum_core::algorithm::{
    AlgoWorker, Algorithm, BoxError, ModelSummary, StepStats, TableDecl, TableReader,
};
use petuum_core::{ElemType, RowKind, WorkerCtx};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;
use tree::{bootstrap, grow, GrowParams, Tree};

pub const NAME: &str = "random_forest";
const TABLE: &str = "trees";
/// Columns of the tree table: room for 2^28 nodes.
const MAX_COLUMNS: u32 = 1 << 30;

/// A random forest with its data loaded.
pub struct RandomForest {
    params: ForestParams,
    train: Arc<Dataset>,
    test: Option<Arc<Dataset>>,
    input: InputSpec,
    clocks: u64,
}

impl RandomForest {
    pub fn new(
        params: ForestParams,
        train: Dataset,
        test: Option<Dataset>,
        input: InputSpec,
        clocks: u64,
    ) -> Self {
        RandomForest {
            params,
            train: Arc::new(train),
            test: test.map(Arc::new),
            input,
            clocks,
        }
    }

    fn grow_params(&self) -> GrowParams {
        let d = self.train.dim();
        GrowParams {
            max_depth: self.params.max_depth,
            min_samples_split: self.params.min_samples_split,
            max_features: self
                .params
                .max_features
                .unwrap_or(((d as f64).sqrt().floor() as usize).max(1)),
            num_classes: self.train.num_classes.max(1) as usize,
        }
    }
}

impl Algorithm for RandomForest {
    fn name(&self) -> &'static str {
        NAME
    }

    fn objective_name(&self) -> &'static str {
        "tree-oob-error"
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![TableDecl {
            name: TABLE.into(),
            kind: RowKind::Sparse,
            elem: ElemType::F32,
            columns: MAX_COLUMNS,
        }]
    }

    fn worker(&self, worker: u32, workers: u32) -> Result<Box<dyn AlgoWorker>, BoxError> {
        let n = self.train.len();
        if n > u32::MAX as usize {
            // Sort keys pack a row index into 32 bits.
            return Err(format!("{n} training rows; a forest takes at most 2^32").into());
        }
        let part: Vec<usize> = if self.params.partition {
            crate::data::worker_rows(n, worker, workers)
        } else {
            (0..n).collect()
        };
        if part.is_empty() {
            return Err(format!("worker {worker} of {workers} has no training samples").into());
        }
        let mine: Vec<u64> = (worker as u64..self.params.num_trees as u64)
            .step_by(workers as usize)
            .collect();
        let per_clock = mine.len().div_ceil(self.clocks.max(1) as usize);
        Ok(Box::new(ForestWorker {
            data: self.train.clone(),
            part,
            grow: self.grow_params(),
            trees: mine,
            per_clock,
            done: 0,
        }))
    }

    fn export(&self, tables: &TableReader<'_>, path: &Path) -> Result<ModelSummary, BoxError> {
        let g = self.grow_params();
        let mut trees = Vec::new();
        let ids = tables.row_ids(TABLE)?;
        tables.prefetch(TABLE, ids.iter().copied())?;
        for id in ids {
            let row = tables.read::<f32>(TABLE, id)?;
            trees.push(
                decode_row(&row.sorted_entries(), self.train.dim(), g.num_classes)
                    .map_err(|e| format!("tree {id}: {e}"))?,
            );
        }
        if trees.len() != self.params.num_trees {
            return Err(format!(
                "{} trees in the table, expected {}",
                trees.len(),
                self.params.num_trees
            )
            .into());
        }
        let model = ForestModel {
            trees,
            num_classes: g.num_classes,
            class_names: self.train.class_names.clone(),
        };
        let mut metrics = Vec::new();
        if let Some(test) = &self.test {
            metrics.push(("test_accuracy".to_string(), model.accuracy(test)));
        }
        metrics.push(("train_accuracy".to_string(), model.accuracy(&self.train)));
        metrics.push((
            "nodes".to_string(),
            model.trees.iter().map(|t| t.nodes.len()).sum::<usize>() as f64,
        ));
        let mut file = ModelFile::new(NAME);
        file.set("num_features", self.train.dim());
        file.set("num_classes", g.num_classes);
        self.input.record(&mut file);
        file.set("class_names", serde_json::to_string(&model.class_names)?);
        file.set("params", serde_json::to_string(&self.params)?);
        file.set_metrics(&metrics);
        let (nodes, offsets) = model.flatten();
        file.add_tensor("nodes", vec![nodes.len() / 4, 4], nodes);
        file.add_tensor("offsets", vec![offsets.len()], offsets);
        Ok(ModelSummary {
            bytes: file.save(path)?,
            metrics,
        })
    }
}

fn decode_row(
    entries: &[(u32, f32)],
    num_features: usize,
    num_classes: usize,
) -> Result<Tree, String> {
    let count = entries
        .first()
        .filter(|(c, _)| *c == 0)
        .map(|(_, v)| *v as usize)
        .ok_or("no node count")?;
    let mut v = vec![0f32; count * 4];
    for &(c, x) in entries.iter().skip(1) {
        let at = c as usize - 1;
        *v.get_mut(at)
            .ok_or(format!("column {c} beyond {count} nodes"))? = x;
    }
    Tree::decode(&v, num_features, num_classes)
}

struct ForestWorker {
    data: Arc<Dataset>,
    part: Vec<usize>,
    grow: GrowParams,
    trees: Vec<u64>,
    per_clock: usize,
    done: usize,
}

impl AlgoWorker for ForestWorker {
    fn step(&mut self, ctx: &mut WorkerCtx, rng: &mut ChaCha8Rng) -> Result<StepStats, BoxError> {
        let t = ctx.table::<f32>(TABLE)?;
        let (mut errors, mut oob_total, mut samples) = (0u64, 0u64, 0u64);
        let mut row = Vec::new();
        let end = (self.done + self.per_clock).min(self.trees.len());
        for k in self.done..end {
            let (mut drawn, oob) = bootstrap(&self.part, self.data.len(), rng);
            samples += self.part.len() as u64;
            let tree = grow(
                &self.data.features,
                &self.data.labels,
                &mut drawn,
                &self.grow,
                rng,
            );
            for &i in &oob {
                errors +=
                    (tree.predict(&self.data.features, i, &mut row) != self.data.labels[i]) as u64;
            }
            oob_total += oob.len() as u64;
            let enc = tree.encode();
            let mut entries: Vec<(u32, f32)> = vec![(0, tree.nodes.len() as f32)];
            entries.extend(
                enc.iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(c, &v)| (c as u32 + 1, v)),
            );
            ctx.batch_inc_sparse(t, self.trees[k], &entries)?;
        }
        self.done = end;
        Ok(StepStats {
            objective: errors as f64,
            weight: oob_total as f64,
            samples,
            ..Default::default()
        })
    }

    fn save_state(&self) -> Vec<u8> {
        (self.done as u64).to_le_bytes().to_vec()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let b: [u8; 8] = state
            .try_into()
            .map_err(|_| format!("forest worker state of {} bytes, expected 8", state.len()))?;
        self.done = u64::from_le_bytes(b) as usize;
        Ok(())
    }
}

/// A trained forest.
#[derive(Clone, Debug)]
pub struct ForestModel {
    pub trees: Vec<Tree>,
    pub num_classes: usize,
    pub class_names: Vec<String>,
}

impl ForestModel {
    fn flatten(&self) -> (Vec<f32>, Vec<f32>) {
        let mut nodes = Vec::new();
        let mut offsets = vec![0f32];
        for t in &self.trees {
            nodes.extend(t.encode());
            offsets.push((nodes.len() / 4) as f32);
        }
        (nodes, offsets)
    }

    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let nodes = file.tensor("nodes")?;
        let offsets = file.tensor("offsets")?;
        let num_classes: usize = file.meta("num_classes")?;
        let num_features: usize = file.meta("num_features")?;
        let bad = |reason: String| ModelError::Format {
            path: file.path.clone(),
            reason,
        };
        let class_names = file.class_names()?;
        let mut trees = Vec::new();
        for w in offsets.data.windows(2) {
            let (a, b) = (w[0] as usize * 4, w[1] as usize * 4);
            let slice = nodes
                .data
                .get(a..b)
                .ok_or_else(|| bad(format!("tree offsets {a}..{b} out of range")))?;
            trees.push(Tree::decode(slice, num_features, num_classes).map_err(bad)?);
        }
        Ok(ForestModel {
            trees,
            num_classes,
            class_names,
        })
    }

    /// Majority vote of the trees (ties to the lower class).
    pub fn predict(&self, x: &Features, i: usize, row: &mut Vec<f32>) -> u32 {
        row.resize(x.ncols(), 0.0);
        x.row_into(i, row);
        let mut votes = vec![0u32; self.num_classes];
        for t in &self.trees {
            votes[t.predict_row(row) as usize] += 1;
        }
        votes
            .iter()
            .enumerate()
            .max_by_key(|&(c, v)| (*v, std::cmp::Reverse(c)))
            .map_or(0, |(c, _)| c as u32)
    }

    pub fn accuracy(&self, data: &Dataset) -> f64 {
        if data.is_empty() {
            return 0.0;
        }
        let mut row = Vec::new();
        let correct = (0..data.len())
            .filter(|&i| self.predict(&data.features, i, &mut row) == data.labels[i])
            .count();
        correct as f64 / data.len() as f64
    }
}
