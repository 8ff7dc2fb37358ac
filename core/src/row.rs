//! Rows: dense vectors or sparse maps of one element type, and their
//! type-erased form used by shards, batches and caches.

use crate::types::{Elem, ElemType, RowKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A row of one table, or an increment to one (a delta has the same shape).
///
/// Serialized (see [`serde_impl`]) as an enum of three variants: `Dense`
/// (a sequence of elements), `Sparse` (a map) and `DenseLe` (the dense
/// values as one string of little-endian bytes). Binary formats (postcard:
/// the Raft log, the wire, snapshots, checkpoints) get `DenseLe`, which
/// costs one copy where a sequence costs a serializer call per element;
/// human-readable ones (JSON) get `Dense`. Both dense forms are read back.
#[derive(Clone, Debug, PartialEq)]
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

mod serde_impl {
    //! `Row`'s serde: `Dense` = 0, `Sparse` = 1 (as the derived impl wrote
    //! them, so older encodings still read), `DenseLe` = 2.
    use super::Row;
    use crate::types::Elem;
    use serde::de::{self, EnumAccess, VariantAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;
    use std::marker::PhantomData;

    const VARIANTS: &[&str] = &["Dense", "Sparse", "DenseLe"];

    /// Bytes serialized as one byte string.
    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    impl<T: Elem> Serialize for Row<T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Row::Dense(v) if s.is_human_readable() => {
                    s.serialize_newtype_variant("Row", 0, "Dense", v)
                }
                Row::Dense(v) => {
                    s.serialize_newtype_variant("Row", 2, "DenseLe", &Bytes(&T::le_bytes(v)))
                }
                Row::Sparse(m) => s.serialize_newtype_variant("Row", 1, "Sparse", m),
            }
        }
    }

    enum Field {
        Dense,
        Sparse,
        DenseLe,
    }

    impl<'de> Deserialize<'de> for Field {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Field;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a row variant (Dense, Sparse or DenseLe)")
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field, E> {
                    match v {
                        0 => Ok(Field::Dense),
                        1 => Ok(Field::Sparse),
                        2 => Ok(Field::DenseLe),
                        _ => Err(E::invalid_value(
                            de::Unexpected::Unsigned(v),
                            &"variant index 0 <= i < 3",
                        )),
                    }
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                    match v {
                        "Dense" => Ok(Field::Dense),
                        "Sparse" => Ok(Field::Sparse),
                        "DenseLe" => Ok(Field::DenseLe),
                        _ => Err(E::unknown_variant(v, VARIANTS)),
                    }
                }
            }
            d.deserialize_identifier(V)
        }
    }

    /// A `DenseLe` payload: little-endian bytes of whole elements.
    struct LeBytes<T>(PhantomData<T>);

    impl<'de, T: Elem> de::DeserializeSeed<'de> for LeBytes<T> {
        type Value = Vec<T>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
            d.deserialize_bytes(self)
        }
    }

    impl<'de, T: Elem> Visitor<'de> for LeBytes<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                f,
                "little-endian bytes of whole {}-byte elements",
                std::mem::size_of::<T>()
            )
        }
        fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Vec<T>, E> {
            T::from_le_bytes_vec(b).ok_or_else(|| E::invalid_length(b.len(), &self))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // Human-readable formats write bytes as a list of numbers.
            let mut b = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(x) = seq.next_element::<u8>()? {
                b.push(x);
            }
            self.visit_bytes(&b)
        }
    }

    impl<'de, T: Elem> Deserialize<'de> for Row<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<'de, T: Elem> Visitor<'de> for V<T> {
                type Value = Row<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a row")
                }
                fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Row<T>, A::Error> {
                    let (field, v) = data.variant::<Field>()?;
                    Ok(match field {
                        Field::Dense => Row::Dense(v.newtype_variant::<Vec<T>>()?),
                        Field::Sparse => Row::Sparse(v.newtype_variant::<HashMap<u32, T>>()?),
                        Field::DenseLe => Row::Dense(v.newtype_variant_seed(LeBytes(PhantomData))?),
                    })
                }
            }
            d.deserialize_enum("Row", VARIANTS, V(PhantomData))
        }
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

    /// The derived encoding rows had before `DenseLe` (variants 0 and 1).
    #[derive(Serialize)]
    enum OldRow<T: Serialize> {
        Dense(Vec<T>),
        #[allow(dead_code)]
        Sparse(HashMap<u32, T>),
    }

    #[test]
    fn rows_round_trip_in_binary_and_json_and_old_encodings_still_read() {
        let mut m = HashMap::new();
        m.insert(7u32, -2.5f64);
        m.insert(1, 1e300);
        let rows = [
            AnyRow::F32(Row::Dense(vec![
                0.5,
                -0.0,
                f32::MAX,
                f32::MIN_POSITIVE,
                3.25,
            ])),
            AnyRow::F64(Row::Dense(vec![1e-300, -7.0, 0.1])),
            AnyRow::I32(Row::Dense(vec![i32::MIN, 0, -1, i32::MAX])),
            AnyRow::I64(Row::Dense(vec![i64::MIN, 42, i64::MAX])),
            AnyRow::F64(Row::Sparse(m)),
            AnyRow::F32(Row::Dense(Vec::new())),
        ];
        for r in &rows {
            let bin = postcard::to_stdvec(r).unwrap();
            assert_eq!(&postcard::from_bytes::<AnyRow>(&bin).unwrap(), r);
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(&serde_json::from_str::<AnyRow>(&json).unwrap(), r);
        }
        // Binary dense rows are their values' bytes plus a few of framing
        // (AnyRow's tag, Row's tag, the length), not one call per value.
        let wide = AnyRow::F32(Row::Dense((0..10_000).map(|i| i as f32 * 0.5).collect()));
        let bin = postcard::to_stdvec(&wide).unwrap();
        assert_eq!(bin.len(), 1 + 1 + 3 + 40_000);
        assert_eq!(&bin[9..13], &0.5f32.to_le_bytes()[..], "second value");
        // JSON keeps the readable form.
        let json = serde_json::to_string(&AnyRow::I32(Row::Dense(vec![1, 2]))).unwrap();
        assert_eq!(json, r#"{"I32":{"Dense":[1,2]}}"#);
        // What the log, snapshots and checkpoints hold from before reads
        // back the same.
        let old = postcard::to_stdvec(&OldRow::Dense(vec![1.5f64, -2.0, 0.25])).unwrap();
        assert_eq!(
            postcard::from_bytes::<Row<f64>>(&old).unwrap(),
            Row::Dense(vec![1.5, -2.0, 0.25])
        );
        let mut m = HashMap::new();
        m.insert(3u32, 9i64);
        let old = postcard::to_stdvec(&OldRow::Sparse(m.clone())).unwrap();
        assert_eq!(
            postcard::from_bytes::<Row<i64>>(&old).unwrap(),
            Row::Sparse(m)
        );
    }

    #[test]
    fn a_dense_row_of_partial_elements_is_refused_by_name() {
        // Variant DenseLe (2), 6 bytes: one f32 and half of another.
        let bad = [2u8, 6, 0, 0, 128, 63, 0, 0];
        let err = postcard::from_bytes::<Row<f32>>(&bad).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
        let err = serde_json::from_str::<Row<f32>>(r#"{"DenseLe":[0,0,128,63,0,0]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("whole 4-byte elements"), "{err}");
        let ok = serde_json::from_str::<Row<f32>>(r#"{"DenseLe":[0,0,128,63]}"#).unwrap();
        assert_eq!(ok, Row::Dense(vec![1.0]));
        let err = postcard::from_bytes::<Row<f32>>(&[3u8, 0]).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
    }

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
