//! Rows: dense vectors or sparse maps of one element type, and their
//! type-erased form used by shards, batches and caches.

use crate::types::{Elem, ElemType, RowKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A row of one table, or an increment to one (a delta has the same shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Row<T: Elem> {
    Dense(Vec<T>),
    Sparse(HashMap<u32, T>),
}

impl<T: Elem> Row<T> {
    /// The zero row of a table of this kind and width.
    pub fn zero(kind: RowKind, columns: u32) -> Self {
        match kind {
            RowKind::Dense => Row::Dense(vec![T::default(); columns as usize]),
            RowKind::Sparse => Row::Sparse(HashMap::new()),
        }
    }

    /// Value at `col` (zero when absent or out of range).
    pub fn value(&self, col: u32) -> T {
        match self {
            Row::Dense(v) => v.get(col as usize).copied().unwrap_or_default(),
            Row::Sparse(m) => m.get(&col).copied().unwrap_or_default(),
        }
    }

    /// Adds `delta` at `col`. Dense rows ignore nothing: the caller checks bounds.
    #[inline]
    pub fn add_at(&mut self, col: u32, delta: T) {
        match self {
            Row::Dense(v) => v[col as usize] += delta,
            Row::Sparse(m) => {
                let e = m.entry(col).or_default();
                *e += delta;
                if e.is_zero() {
                    m.remove(&col);
                }
            }
        }
    }

    /// Adds a dense slice element-wise (a dense row must have the same width).
    #[inline]
    pub fn add_slice(&mut self, delta: &[T]) {
        match self {
            Row::Dense(v) => add_assign_slice(v, delta),
            Row::Sparse(_) => {
                for (c, d) in delta.iter().enumerate() {
                    if !d.is_zero() {
                        self.add_at(c as u32, *d);
                    }
                }
            }
        }
    }

    /// Adds another row of the same table.
    pub fn add_row(&mut self, delta: &Row<T>) {
        match delta {
            Row::Dense(d) => self.add_slice(d),
            Row::Sparse(d) => {
                for (&c, &x) in d {
                    self.add_at(c, x);
                }
            }
        }
    }

    /// Number of stored values (dense width or sparse non-zeros).
    pub fn len(&self) -> usize {
        match self {
            Row::Dense(v) => v.len(),
            Row::Sparse(m) => m.len(),
        }
    }

    /// True when the row stores no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row as a dense vector of `columns` values.
    pub fn to_dense(&self, columns: u32) -> Vec<T> {
        match self {
            Row::Dense(v) => v.clone(),
            Row::Sparse(m) => {
                let mut out = vec![T::default(); columns as usize];
                for (&c, &x) in m {
                    if (c as usize) < out.len() {
                        out[c as usize] = x;
                    }
                }
                out
            }
        }
    }

    /// Squared Euclidean norm.
    pub fn norm2(&self) -> f64 {
        match self {
            Row::Dense(v) => v.iter().map(|x| x.to_f64() * x.to_f64()).sum(),
            Row::Sparse(m) => m.values().map(|x| x.to_f64() * x.to_f64()).sum(),
        }
    }

    /// Squared Euclidean distance to another row of the same table.
    pub fn dist2(&self, other: &Row<T>) -> f64 {
        let d = |a: T, b: T| {
            let x = a.to_f64() - b.to_f64();
            x * x
        };
        match (self, other) {
            (Row::Dense(a), Row::Dense(b)) if a.len() == b.len() => {
                a.iter().zip(b).map(|(&x, &y)| d(x, y)).sum()
            }
            (Row::Sparse(a), Row::Sparse(b)) => {
                a.iter()
                    .map(|(c, &x)| d(x, b.get(c).copied().unwrap_or_default()))
                    .sum::<f64>()
                    + b.iter()
                        .filter(|(c, _)| !a.contains_key(c))
                        .map(|(_, &y)| d(T::default(), y))
                        .sum::<f64>()
            }
            _ => {
                let n = self.len().max(other.len()) as u32;
                let (a, b) = (self.to_dense(n), other.to_dense(n));
                a.iter().zip(&b).map(|(&x, &y)| d(x, y)).sum()
            }
        }
    }

    /// Sparse entries sorted by column (dense rows list their non-zeros).
    pub fn sorted_entries(&self) -> Vec<(u32, T)> {
        match self {
            Row::Dense(v) => v
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.is_zero())
                .map(|(c, &x)| (c as u32, x))
                .collect(),
            Row::Sparse(m) => {
                let mut e: Vec<(u32, T)> = m.iter().map(|(&c, &x)| (c, x)).collect();
                e.sort_unstable_by_key(|&(c, _)| c);
                e
            }
        }
    }
}

/// `dst[i] += src[i]`, written so the compiler vectorises it.
#[inline]
pub fn add_assign_slice<T: Elem>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "row width mismatch");
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// A row of any element type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AnyRow {
    F32(Row<f32>),
    F64(Row<f64>),
    I32(Row<i32>),
    I64(Row<i64>),
}

macro_rules! dispatch {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            AnyRow::F32($r) => $e,
            AnyRow::F64($r) => $e,
            AnyRow::I32($r) => $e,
            AnyRow::I64($r) => $e,
        }
    };
}

impl AnyRow {
    /// The zero row for a table.
    pub fn zero(elem: ElemType, kind: RowKind, columns: u32) -> Self {
        match elem {
            ElemType::F32 => AnyRow::F32(Row::zero(kind, columns)),
            ElemType::F64 => AnyRow::F64(Row::zero(kind, columns)),
            ElemType::I32 => AnyRow::I32(Row::zero(kind, columns)),
            ElemType::I64 => AnyRow::I64(Row::zero(kind, columns)),
        }
    }

    pub fn elem(&self) -> ElemType {
        match self {
            AnyRow::F32(_) => ElemType::F32,
            AnyRow::F64(_) => ElemType::F64,
            AnyRow::I32(_) => ElemType::I32,
            AnyRow::I64(_) => ElemType::I64,
        }
    }

    pub fn kind(&self) -> RowKind {
        dispatch!(self, r => match r { Row::Dense(_) => RowKind::Dense, Row::Sparse(_) => RowKind::Sparse })
    }

    pub fn len(&self) -> usize {
        dispatch!(self, r => r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `delta` of the same type. Returns false (and changes nothing) on
    /// a type mismatch.
    pub fn add(&mut self, delta: &AnyRow) -> bool {
        match (self, delta) {
            (AnyRow::F32(a), AnyRow::F32(b)) => a.add_row(b),
            (AnyRow::F64(a), AnyRow::F64(b)) => a.add_row(b),
            (AnyRow::I32(a), AnyRow::I32(b)) => a.add_row(b),
            (AnyRow::I64(a), AnyRow::I64(b)) => a.add_row(b),
            _ => return false,
        }
        true
    }

    /// Squared Euclidean norm (as f64, whatever the element type).
    pub fn norm2(&self) -> f64 {
        dispatch!(self, r => r.norm2())
    }

    /// Squared Euclidean distance to `other` (a row of the same table;
    /// `None` is the zero row). Rows of different types are infinitely far.
    pub fn dist2(&self, other: Option<&AnyRow>) -> f64 {
        match (self, other) {
            (a, None) => a.norm2(),
            (AnyRow::F32(a), Some(AnyRow::F32(b))) => a.dist2(b),
            (AnyRow::F64(a), Some(AnyRow::F64(b))) => a.dist2(b),
            (AnyRow::I32(a), Some(AnyRow::I32(b))) => a.dist2(b),
            (AnyRow::I64(a), Some(AnyRow::I64(b))) => a.dist2(b),
            _ => f64::INFINITY,
        }
    }

    /// Size in bytes of the values (for throughput accounting).
    pub fn value_bytes(&self) -> usize {
        let width = match self.elem() {
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F64 | ElemType::I64 => 8,
        };
        let per = match self.kind() {
            RowKind::Dense => width,
            RowKind::Sparse => width + 4,
        };
        self.len() * per
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_rows_drop_zeros_and_add() {
        let mut r: Row<i32> = Row::zero(RowKind::Sparse, 10);
        r.add_at(3, 2);
        r.add_at(3, -2);
        assert!(r.is_empty());
        r.add_slice(&[0, 1, 0, 4]);
        assert_eq!(r.sorted_entries(), vec![(1, 1), (3, 4)]);
        assert_eq!(r.to_dense(5), vec![0, 1, 0, 4, 0]);
    }

    #[test]
    fn norms_and_distances_agree_between_dense_and_sparse() {
        let dense = AnyRow::F32(Row::Dense(vec![3.0, 0.0, 4.0]));
        let mut m = HashMap::new();
        m.insert(0u32, 3.0f32);
        m.insert(2, 4.0);
        let sparse = AnyRow::F32(Row::Sparse(m));
        assert_eq!(dense.norm2(), 25.0);
        assert_eq!(sparse.norm2(), 25.0);
        assert_eq!(dense.dist2(None), 25.0);
        assert_eq!(dense.dist2(Some(&sparse)), 0.0);
        let other = AnyRow::F32(Row::Dense(vec![0.0, 1.0, 4.0]));
        assert_eq!(dense.dist2(Some(&other)), 10.0);
        let mut m2 = HashMap::new();
        m2.insert(1u32, 1.0f32);
        let sparse2 = AnyRow::F32(Row::Sparse(m2));
        assert_eq!(sparse.dist2(Some(&sparse2)), 26.0);
        assert!(dense
            .dist2(Some(&AnyRow::I32(Row::Dense(vec![0; 3]))))
            .is_infinite());
    }

    #[test]
    fn any_row_type_mismatch_is_refused() {
        let mut a = AnyRow::zero(ElemType::F32, RowKind::Dense, 2);
        let b = AnyRow::zero(ElemType::I64, RowKind::Dense, 2);
        assert!(!a.add(&b));
        let mut d: Row<f32> = Row::zero(RowKind::Dense, 2);
        d.add_at(1, 1.5);
        assert!(a.add(&AnyRow::F32(d)));
        assert_eq!(f32::from_any(&a).unwrap().value(1), 1.5);
    }
}
