//! Identifiers and element types shared by every layer.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;

/// A table id, unique within a cluster.
pub type TableId = u32;
/// A row id within a table.
pub type RowId = u64;
/// A worker's index within its job, `0..workers`.
pub type WorkerId = u32;
/// A shard index within the cluster's shard space.
pub type ShardId = u32;
/// A clock: the number of `clock()` calls a worker has made. A worker "at
/// clock c" is running its iteration `c`; its increments are tagged `c`.
pub type Clock = u64;
/// A job id, unique within a cluster.
pub type JobId = u64;

/// The element type of a table's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    F32,
    F64,
    I32,
    I64,
}

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ElemType::F32 => "f32",
            ElemType::F64 => "f64",
            ElemType::I32 => "i32",
            ElemType::I64 => "i64",
        })
    }
}

/// The layout of a table's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// A fixed-width vector of `columns` values.
    Dense,
    /// A map from column to value; absent columns are zero.
    Sparse,
}

/// A numeric type a table can hold. Implemented for f32, f64, i32 and i64.
pub trait Elem:
    Copy
    + Default
    + PartialEq
    + PartialOrd
    + Debug
    + Send
    + Sync
    + 'static
    + std::ops::AddAssign
    + std::ops::Add<Output = Self>
    + Serialize
    + DeserializeOwned
{
    /// The runtime tag of this type.
    const TYPE: ElemType;
    /// Wraps a typed row into the type-erased form.
    fn into_any(row: crate::row::Row<Self>) -> crate::row::AnyRow;
    /// Borrows the typed row inside a type-erased one, if the types match.
    fn from_any(row: &crate::row::AnyRow) -> Option<&crate::row::Row<Self>>;
    /// Mutably borrows the typed row inside a type-erased one.
    fn from_any_mut(row: &mut crate::row::AnyRow) -> Option<&mut crate::row::Row<Self>>;
    /// Lossy conversion for reporting.
    fn to_f64(self) -> f64;
    /// True for the additive identity.
    fn is_zero(self) -> bool {
        self == Self::default()
    }
}

macro_rules! impl_elem {
    ($t:ty, $tag:ident) => {
        impl Elem for $t {
            const TYPE: ElemType = ElemType::$tag;
            fn into_any(row: crate::row::Row<Self>) -> crate::row::AnyRow {
                crate::row::AnyRow::$tag(row)
            }
            fn from_any(row: &crate::row::AnyRow) -> Option<&crate::row::Row<Self>> {
                match row {
                    crate::row::AnyRow::$tag(r) => Some(r),
                    _ => None,
                }
            }
            fn from_any_mut(row: &mut crate::row::AnyRow) -> Option<&mut crate::row::Row<Self>> {
                match row {
                    crate::row::AnyRow::$tag(r) => Some(r),
                    _ => None,
                }
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    };
}
impl_elem!(f32, F32);
impl_elem!(f64, F64);
impl_elem!(i32, I32);
impl_elem!(i64, I64);

/// Definition of a table: what a job declares before it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    pub id: TableId,
    pub name: String,
    pub job: JobId,
    pub kind: RowKind,
    pub elem: ElemType,
    /// Width of a dense row; upper bound (exclusive) of column ids of a sparse row.
    pub columns: u32,
}

/// Stable assignment of a row to a shard (docs/design.md §2): a hash of
/// (table, row) that never changes between versions or runs.
pub fn shard_of(table: TableId, row: RowId, num_shards: u32) -> ShardId {
    debug_assert!(num_shards > 0);
    // splitmix64 finaliser over the pair: cheap, well mixed and fixed forever.
    let mut z = row ^ (table as u64).rotate_left(40) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % num_shards as u64) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable_and_spread() {
        // Pinned values: changing the hash would move every row of every
        // existing checkpoint to another shard.
        assert_eq!(shard_of(1, 0, 64), 43);
        assert_eq!(shard_of(1, 1, 64), 30);
        assert_eq!(shard_of(7, 123456789, 64), 33);
        assert_eq!(shard_of(3, 42, 8), 4);
        let mut counts = [0u32; 8];
        for r in 0..8000 {
            counts[shard_of(3, r, 8) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "unbalanced shards: {counts:?}");
        }
    }
}
