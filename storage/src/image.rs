//! A serializable image of a shard's state at one clock per job, built and
//! restored through `ShardState`'s public API only.
//!
//! An image is taken of a state where every worker of every job in it is at
//! the same clock (the "base" state at the min clock, docs/design.md §3), so one
//! clock per job describes all its workers.

use crate::error::{Result, StorageError};
use petuum_core::batch::UpdateBatch;
use petuum_core::row::AnyRow;
use petuum_core::shard::ShardState;
use petuum_core::types::{Clock, JobId, RowId, ShardId, TableId, TableSpec};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeSet;

/// A job as a shard knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobImage {
    pub job: JobId,
    pub workers: u32,
    pub deterministic: bool,
    pub checkpoint_every: Clock,
    /// Checkpoint clocks asked for and not yet reached.
    pub requested: BTreeSet<Clock>,
    /// Every worker's applied clock: all increments tagged below it are in
    /// the rows, none at or above it.
    pub clock: Clock,
}

/// Tables, jobs and rows of a shard (or of one job on a shard).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardImage {
    pub shard: ShardId,
    pub tables: Vec<TableSpec>,
    pub jobs: Vec<JobImage>,
    /// `(table, row, value)`, sorted by table then row.
    pub rows: Vec<(TableId, RowId, AnyRow)>,
}

/// Serializes exactly like [`ShardImage`], reading rows from a live state
/// one at a time instead of copying the whole state first.
pub struct ShardImageRef<'a> {
    pub state: &'a ShardState,
    pub tables: Vec<&'a TableSpec>,
    pub jobs: Vec<JobImage>,
}

impl Serialize for ShardImageRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ShardImage", 4)?;
        st.serialize_field("shard", &self.state.shard())?;
        st.serialize_field("tables", &self.tables)?;
        st.serialize_field("jobs", &self.jobs)?;
        st.serialize_field(
            "rows",
            &RowsRef {
                state: self.state,
                tables: self.tables.iter().map(|t| t.id).collect(),
            },
        )?;
        st.end()
    }
}

struct RowsRef<'a> {
    state: &'a ShardState,
    tables: Vec<TableId>,
}

impl Serialize for RowsRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let ids: Vec<(TableId, Vec<RowId>)> = self
            .tables
            .iter()
            .map(|&t| (t, self.state.row_ids(t)))
            .collect();
        let n = ids.iter().map(|(_, r)| r.len()).sum();
        let mut seq = s.serialize_seq(Some(n))?;
        for (t, rows) in &ids {
            for &r in rows {
                let value = self.state.read(*t, r).map_err(serde::ser::Error::custom)?;
                seq.serialize_element(&(*t, r, value))?;
            }
        }
        seq.end()
    }
}

impl ShardImage {
    /// Rebuilds a `ShardState` holding exactly this image.
    pub fn restore(&self) -> Result<ShardState> {
        let mut state = ShardState::new(self.shard);
        self.restore_into(&mut state)?;
        Ok(state)
    }

    /// Adds this image's tables, jobs and rows to `state` (whose other jobs
    /// are left alone).
    pub fn restore_into(&self, state: &mut ShardState) -> Result<()> {
        let shard = self.shard;
        let err = |what, source| StorageError::Restore {
            what,
            shard,
            source,
        };
        if state.shard() != shard {
            return Err(StorageError::WrongShard {
                what: "shard image",
                shard: state.shard(),
                found: shard,
            });
        }
        for t in &self.tables {
            state.create_table(t).map_err(|e| err("table", e))?;
        }
        for (t, r, v) in &self.rows {
            state.load(*t, *r, v.clone()).map_err(|e| err("row", e))?;
        }
        for j in &self.jobs {
            state.register_job(j.job, j.workers, j.deterministic);
            set_clock(state, j).map_err(|e| err("job clocks", e))?;
        }
        Ok(())
    }

    /// The image as bytes (postcard).
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_allocvec(self).map_err(|e| StorageError::Encode {
            what: "shard image",
            shard: self.shard,
            reason: e.to_string(),
        })
    }
}

/// Brings every worker of a freshly registered job to `j.clock`.
///
/// `ShardState` has no setter for clocks, so this feeds one empty batch per
/// worker per clock: O(clock × workers) cheap applies. (A
/// `ShardState::restore_job_clock` in core would make this O(workers).)
fn set_clock(
    state: &mut ShardState,
    j: &JobImage,
) -> std::result::Result<(), petuum_core::TableError> {
    let have = state.job(j.job)?.min_clock();
    for clock in have..j.clock {
        for worker in 0..j.workers {
            state.apply(UpdateBatch {
                job: j.job,
                worker,
                clock,
                shard: state.shard(),
                updates: Vec::new(),
            })?;
        }
    }
    Ok(())
}

/// Encodes an image of `state` limited to `jobs` (and their tables).
pub fn encode_image(
    state: &ShardState,
    tables: Vec<&TableSpec>,
    jobs: Vec<JobImage>,
) -> Result<Vec<u8>> {
    let shard = state.shard();
    postcard::to_allocvec(&ShardImageRef {
        state,
        tables,
        jobs,
    })
    .map_err(|e| StorageError::Encode {
        what: "shard image",
        shard,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use petuum_core::batch::RowUpdate;
    use petuum_core::row::Row;
    use petuum_core::types::{ElemType, RowKind};
    use std::collections::HashMap;

    fn table(id: TableId, kind: RowKind) -> TableSpec {
        TableSpec {
            id,
            name: format!("t{id}"),
            job: 1,
            kind,
            elem: ElemType::F32,
            columns: 4,
        }
    }

    #[test]
    fn image_round_trips_rows_tables_and_clocks() {
        let mut s = ShardState::new(3);
        let dense = table(1, RowKind::Dense);
        let sparse = table(2, RowKind::Sparse);
        s.create_table(&dense).unwrap();
        s.create_table(&sparse).unwrap();
        s.register_job(1, 2, false);
        for clock in 0..3 {
            for worker in 0..2 {
                s.apply(UpdateBatch {
                    job: 1,
                    worker,
                    clock,
                    shard: 3,
                    updates: vec![
                        RowUpdate {
                            table: 1,
                            row: clock,
                            delta: AnyRow::F32(Row::Dense(vec![1.0, 2.0, 3.0, worker as f32])),
                        },
                        RowUpdate {
                            table: 2,
                            row: 9,
                            delta: AnyRow::F32(Row::Sparse(HashMap::from([(3, 0.5)]))),
                        },
                    ],
                })
                .unwrap();
            }
        }
        let job = JobImage {
            job: 1,
            workers: 2,
            deterministic: false,
            checkpoint_every: 0,
            requested: BTreeSet::new(),
            clock: 3,
        };
        let bytes = encode_image(&s, vec![&dense, &sparse], vec![job]).unwrap();
        let image: ShardImage = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(image.rows.len(), 4);
        let back = image.restore().unwrap();
        assert_eq!(back.job(1).unwrap().applied(), vec![3, 3]);
        for (t, r, v) in &image.rows {
            assert_eq!(&back.read(*t, *r).unwrap(), v);
            assert_eq!(&s.read(*t, *r).unwrap(), v);
        }
        assert_eq!(
            back.read(2, 9).unwrap(),
            AnyRow::F32(Row::Sparse(HashMap::from([(3, 3.0)])))
        );
        // The restored state takes the next clock and refuses a replay.
        let next = |clock| UpdateBatch {
            job: 1,
            worker: 0,
            clock,
            shard: 3,
            updates: vec![],
        };
        let mut back = back;
        assert!(back.apply(next(2)).unwrap().duplicate);
        assert!(!back.apply(next(3)).unwrap().duplicate);
    }
}
