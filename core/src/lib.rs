//! # petuum-core
//!
//! The Bosen parameter-server model shared by every part of petuum:
//! tables of rows updated by commutative increments, worker clocks, and the
//! consistency models BSP, SSP(s), ESSP and async (see `docs/consistency.md`).
//!
//! - [`worker::WorkerCtx`]: what an algorithm's worker thread uses
//!   (`get`, `inc`, `batch_inc`, `clock`).
//! - [`service::ShardService`]: the seam to the shards; implemented in
//!   process by [`inproc::InProcShards`] and over the network by the cluster.
//! - [`shard::ShardState`]: the sans-IO state machine of one shard.
//! - [`spec::JobSpec`]: the validated job description.
//! - [`runner`]: runs an [`algorithm::Algorithm`] on a node's workers.
//!
//! ```
//! use std::sync::Arc;
//! use petuum_core::{inproc::InProcShards, worker::{Node, WorkerCtx}, consistency::Consistency};
//! use petuum_core::types::{TableSpec, RowKind, ElemType};
//!
//! let shards = Arc::new(InProcShards::new(4));
//! let spec = TableSpec { id: 1, name: "w".into(), job: 1, kind: RowKind::Dense, elem: ElemType::F32, columns: 3 };
//! use petuum_core::service::ShardService;
//! shards.create_table(&spec).unwrap();
//! shards.register_job(1, 1, false).unwrap();
//! let node = Node::new(shards, 1024);
//! let mut w = WorkerCtx::new(node, 1, 0, 1, Consistency::Ssp { staleness: 1 }, &[spec], 0);
//! let t = w.table::<f32>("w").unwrap();
//! w.batch_inc(t, 0, &[1.0, 2.0, 3.0]).unwrap();
//! w.clock().unwrap();
//! let mut row = Vec::new();
//! w.get_dense_into(t, 0, &mut row).unwrap();
//! assert_eq!(row, vec![1.0, 2.0, 3.0]);
//! ```

pub mod algorithm;
pub mod batch;
pub mod budget;
pub mod cache;
pub mod consistency;
pub mod error;
pub mod inproc;
mod outbox;
pub mod row;
pub mod runner;
pub mod service;
pub mod shard;
pub mod spec;
pub mod types;
pub mod worker;

pub use consistency::Consistency;
pub use error::TableError;
pub use row::{AnyRow, Row};
pub use types::{Clock, Elem, ElemType, JobId, RowId, RowKind, TableId, TableSpec, WorkerId};
pub use worker::{Node, Table, WorkerCtx};

/// An error's message followed by its causes (`a: b: c`): wrappers such as
/// tonic's "transport error" say little without them. A cause the message
/// so far already ends with is not repeated: many error types quote their
/// source in their own message as well (`"data: {0}"` over a reader's
/// error), and the line would otherwise say it twice.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod error_chain_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("file.csv:2: field 2 is not a number")]
    struct Reader;

    #[derive(Debug, thiserror::Error)]
    enum Quoting {
        #[error("data: {0}")]
        Data(#[from] Reader),
        #[error("building the job")]
        Silent(#[source] Reader),
    }

    #[test]
    fn each_cause_is_said_once() {
        assert_eq!(
            super::error_chain(&Quoting::Data(Reader)),
            "data: file.csv:2: field 2 is not a number"
        );
        assert_eq!(
            super::error_chain(&Quoting::Silent(Reader)),
            "building the job: file.csv:2: field 2 is not a number"
        );
    }
}
