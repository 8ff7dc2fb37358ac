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
    /// `v` as little-endian bytes (a dense row's binary encoding: one
    /// byte string, not one serializer call per element); borrowed from
    /// `v` where memory is little-endian, so encoding copies it once.
    fn le_bytes(v: &[Self]) -> std::borrow::Cow<'_, [u8]>;
    /// Reads little-endian elements back; `None` when `b` is not a whole
    /// number of elements.
    fn from_le_bytes_vec(b: &[u8]) -> Option<Vec<Self>>;
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
            fn le_bytes(v: &[Self]) -> std::borrow::Cow<'_, [u8]> {
                #[cfg(target_endian = "little")]
                {
                    // SAFETY: a primitive number has no padding and its
                    // in-memory bytes are its little-endian bytes here;
                    // the slice covers exactly `v`'s initialised elements
                    // and borrows `v` for its lifetime.
                    std::borrow::Cow::Borrowed(unsafe {
                        std::slice::from_raw_parts(
                            v.as_ptr().cast::<u8>(),
                            std::mem::size_of_val(v),
                        )
                    })
                }
                #[cfg(not(target_endian = "little"))]
                {
                    std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            }
            fn from_le_bytes_vec(b: &[u8]) -> Option<Vec<Self>> {
                const N: usize = std::mem::size_of::<$t>();
                if b.len() % N != 0 {
                    return None;
                }
                Some(
                    b.chunks_exact(N)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks of N bytes")))
                        .collect(),
                )
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

/// The shards that hold a job's tables: `len` consecutive shards of the
/// cluster's `total`, from `base` (wrapping). Every clock of the job is an
/// entry on each of them (each keeps every worker's clock), so a small
/// model on few shards clocks at the cost of few Raft entries; by default
/// a job spans every shard. A row's shard is fixed by the span, which is
/// fixed for the job's life (its spec and the cluster's shard count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobShards {
    base: ShardId,
    len: u32,
    total: u32,
}

impl JobShards {
    /// Every shard: rows placed by [`shard_of`] over the whole space.
    pub fn all(total: u32) -> Self {
        assert!(total > 0, "at least one shard");
        JobShards {
            base: 0,
            len: total,
            total,
        }
    }

    /// `len` shards (at most `total`, at least 1) of job `job`: they begin
    /// at the job's own shard (`job % total`, where its model is kept), so
    /// jobs with few shards spread over the space.
    pub fn of_job(job: JobId, len: u32, total: u32) -> Self {
        assert!(total > 0, "at least one shard");
        let len = len.clamp(1, total);
        if len == total {
            return Self::all(total);
        }
        JobShards {
            base: (job % total as u64) as ShardId,
            len,
            total,
        }
    }

    /// Number of shards in the span.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Never empty (kept for the `len`/`is_empty` pair).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the span is the whole shard space.
    pub fn is_all(&self) -> bool {
        self.len == self.total
    }

    /// The `i`-th shard of the span (`i` modulo its length).
    pub fn nth(&self, i: u64) -> ShardId {
        if self.is_all() {
            return (i % self.total as u64) as ShardId;
        }
        ((self.base as u64 + i % self.len as u64) % self.total as u64) as ShardId
    }

    /// The position in the span (`0..len`) of a row's shard:
    /// `nth(slot(..)) == shard_of(..)`.
    pub fn slot(&self, table: TableId, row: RowId) -> u32 {
        shard_of(table, row, self.len)
    }

    /// The shard of a row of one of the job's tables.
    pub fn shard_of(&self, table: TableId, row: RowId) -> ShardId {
        self.nth(self.slot(table, row) as u64)
    }

    /// A shard outside the span (the one after its last), if any.
    pub fn first_outside(&self) -> Option<ShardId> {
        (!self.is_all()).then(|| (self.base + self.len) % self.total)
    }

    /// Whether `shard` is one of the span's.
    pub fn contains(&self, shard: ShardId) -> bool {
        shard < self.total && (shard + self.total - self.base) % self.total < self.len
    }

    /// The span's shards, in order from its first.
    pub fn iter(&self) -> impl Iterator<Item = ShardId> + '_ {
        (0..self.len as u64).map(move |i| self.nth(i))
    }
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

    #[test]
    fn a_job_span_places_rows_on_its_shards_only() {
        // The whole space places rows exactly as `shard_of` does.
        let all = JobShards::all(16);
        assert!(all.is_all());
        assert_eq!(all.shard_of(1, 0), shard_of(1, 0, 16));
        assert_eq!(all.iter().collect::<Vec<_>>(), (0..16).collect::<Vec<_>>());
        assert_eq!(JobShards::of_job(5, 99, 16), all);
        // Three shards of job 14 of 16: 14, 15, 0 (wrapping).
        let s = JobShards::of_job(14, 3, 16);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![14, 15, 0]);
        assert_eq!(s.nth(0), 14);
        assert_eq!(s.nth(4), 15);
        assert_eq!(s.first_outside(), Some(1));
        assert_eq!(all.first_outside(), None);
        for sh in 0..16 {
            assert_eq!(s.contains(sh), [14, 15, 0].contains(&sh), "shard {sh}");
        }
        let mut counts = [0u32; 16];
        for r in 0..3000 {
            counts[s.shard_of(3, r) as usize] += 1;
        }
        for sh in 0..16 {
            if s.contains(sh) {
                assert!((800..1200).contains(&counts[sh as usize]), "{counts:?}");
            } else {
                assert_eq!(counts[sh as usize], 0, "{counts:?}");
            }
        }
        assert_eq!(JobShards::of_job(7, 0, 4).len(), 1);
    }
}
