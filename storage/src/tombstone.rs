//! What a dropped replica had seen, kept after its state is deleted
//! (docs/storage.md, "Dropped replicas").
//!
//! Raft's safety rests on every node remembering its vote and the entries
//! it acknowledged. A node whose replica of a group is dropped (the group
//! moved away, or removed it while the node was away) deletes that state;
//! if the group is later hosted here again, the new replica starts with an
//! empty log and no vote. Answering Raft messages as such it would hand a
//! stale member of an old configuration the second vote it needs to lead
//! without the committed entries, or acknowledge a deposed leader's
//! appends so that it commits beside the real group.
//!
//! So [`NodeDb::delete_group`] keeps a tombstone: the replica's last vote
//! and last log id. Until the new replica has learned as much from the
//! group's current leader, the node answers for the old one as it would
//! have: it refuses a vote to a candidate whose term is not above the
//! forgotten vote's or whose log is behind the forgotten log, and refuses
//! appends and snapshots from a leader of an older term than the forgotten
//! vote. Refusing is always safe in Raft; these only cost the stale node
//! its election, and the current leader is not refused.

use crate::db::NodeDb;
use crate::error::StorageError;
use crate::types::{LogId, TypeConfig};
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{ErrorVerb, Raft, Vote};
use serde::{Deserialize, Serialize};

/// The last vote and last log id of a replica when it was dropped (the
/// latest of all its drops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub vote: Option<Vote<u64>>,
    pub last_log_id: Option<LogId>,
}

fn term(v: &Vote<u64>) -> u64 {
    v.leader_id().term
}

impl Tombstone {
    /// The later of two tombstones, field by field (a replica dropped,
    /// hosted again and dropped before it caught up keeps what the first
    /// one had seen).
    pub fn merge(self, other: Tombstone) -> Tombstone {
        let vote = match (self.vote, other.vote) {
            (Some(a), Some(b)) => Some(if term(&b) > term(&a) { b } else { a }),
            (a, b) => a.or(b),
        };
        Tombstone {
            vote,
            last_log_id: self.last_log_id.max(other.last_log_id),
        }
    }

    /// Whether the dropped replica could not have granted `req`: its term
    /// is not above the forgotten vote's (the replica may have voted for
    /// another candidate in that term), or its log is behind the forgotten
    /// log (the replica may have acknowledged entries the candidate lacks).
    pub fn refuses_vote(&self, req: &VoteRequest<u64>) -> bool {
        self.vote.is_some_and(|v| term(&req.vote) <= term(&v)) || req.last_log_id < self.last_log_id
    }

    /// Whether the dropped replica would have refused a leader of `vote`:
    /// its term is below the forgotten vote's.
    pub fn refuses_leader(&self, vote: &Vote<u64>) -> bool {
        self.vote.is_some_and(|v| term(vote) < term(&v))
    }

    /// The vote to answer a refused leader or candidate with: the
    /// forgotten one when its term is later than the replica's own, so that
    /// a leader steps down and a candidate's next term is above it.
    fn higher_vote(&self, current: Vote<u64>) -> Vote<u64> {
        match self.vote {
            Some(v) if term(&v) > term(&current) => v,
            _ => current,
        }
    }
}

/// The node's tombstone of `group`. One it cannot read refuses the message
/// (an error naming its key, see [`fatal`]): failing open would answer as
/// if nothing had been seen.
fn read(db: &NodeDb, group: u64) -> Result<Option<Tombstone>, StorageError> {
    db.tombstone(group).inspect_err(|e| {
        tracing::error!(group, error = %e, "tombstone unreadable: Raft message refused");
    })
}

/// A tombstone that cannot be read, as the Raft error the sender sees.
fn fatal<E: std::error::Error>(e: StorageError) -> RaftError<u64, E> {
    RaftError::Fatal(Fatal::StorageError(e.into_raft(ErrorVerb::Read)))
}

/// Answers a vote request for this node's replica `raft` of `group`, as
/// the replica dropped before it would have (see the module docs).
pub async fn vote(
    db: &NodeDb,
    group: u64,
    raft: &Raft<TypeConfig>,
    req: VoteRequest<u64>,
) -> Result<VoteResponse<u64>, RaftError<u64>> {
    if let Some(t) = read(db, group)
        .map_err(fatal)?
        .filter(|t| t.refuses_vote(&req))
    {
        let m = raft.metrics().borrow().clone();
        tracing::info!(
            group,
            candidate = %req.vote,
            candidate_log = ?req.last_log_id,
            forgotten_vote = ?t.vote,
            forgotten_log = ?t.last_log_id,
            "vote refused: a dropped replica of this group had seen more"
        );
        // The last log id only delays the candidate's next try; the
        // applied id is a lower bound of the replica's own. The forgotten
        // vote when it is later: the candidate moves to its term and its
        // next try is above it.
        let last = t.last_log_id.max(m.last_applied);
        return Ok(VoteResponse::new(t.higher_vote(m.vote), last, false));
    }
    raft.vote(req).await
}

/// Answers an append for this node's replica, refusing a leader older than
/// the vote a dropped replica had seen.
pub async fn append_entries(
    db: &NodeDb,
    group: u64,
    raft: &Raft<TypeConfig>,
    req: AppendEntriesRequest<TypeConfig>,
) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
    match refused_leader(db, group, raft, &req.vote).map_err(fatal)? {
        Some(vote) => Ok(AppendEntriesResponse::HigherVote(vote)),
        None => raft.append_entries(req).await,
    }
}

/// Answers a snapshot chunk for this node's replica, refusing a leader
/// older than the vote a dropped replica had seen.
pub async fn install_snapshot(
    db: &NodeDb,
    group: u64,
    raft: &Raft<TypeConfig>,
    req: InstallSnapshotRequest<TypeConfig>,
) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
    match refused_leader(db, group, raft, &req.vote).map_err(fatal)? {
        Some(vote) => Ok(InstallSnapshotResponse { vote }),
        None => raft.install_snapshot(req).await,
    }
}

/// The vote to refuse a leader of `leader` with (so that it steps down),
/// when the group's tombstone refuses it.
fn refused_leader(
    db: &NodeDb,
    group: u64,
    raft: &Raft<TypeConfig>,
    leader: &Vote<u64>,
) -> Result<Option<Vote<u64>>, StorageError> {
    let Some(t) = read(db, group)?.filter(|t| t.refuses_leader(leader)) else {
        return Ok(None);
    };
    tracing::info!(
        group,
        leader = %leader,
        forgotten_vote = ?t.vote,
        "leader refused: a dropped replica of this group had seen a later term"
    );
    Ok(Some(t.higher_vote(raft.metrics().borrow().vote)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, node: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, node), index))
    }

    #[test]
    fn a_tombstone_refuses_what_the_dropped_replica_would_have() {
        let t = Tombstone {
            vote: Some(Vote::new_committed(5, 1)),
            last_log_id: log(5, 1, 40),
        };
        let req = |term, node, last| VoteRequest::new(Vote::new(term, node), last);
        // Same term as the forgotten vote: it may have voted already.
        assert!(t.refuses_vote(&req(5, 2, log(5, 1, 50))));
        // A later term but a shorter log: it may hold entries this lacks.
        assert!(t.refuses_vote(&req(6, 2, log(5, 1, 39))));
        assert!(t.refuses_vote(&req(6, 2, None)));
        // A later term with at least the forgotten log: as Raft would.
        assert!(!t.refuses_vote(&req(6, 2, log(5, 1, 40))));
        // Leaders: an older term is refused, the current one is not.
        assert!(t.refuses_leader(&Vote::new_committed(4, 3)));
        assert!(!t.refuses_leader(&Vote::new_committed(5, 1)));
        assert!(!t.refuses_leader(&Vote::new_committed(7, 2)));
        assert_eq!(
            t.higher_vote(Vote::default()),
            Vote::new_committed(5, 1),
            "a refused leader hears the forgotten vote"
        );
        // Nothing forgotten: nothing refused.
        let none = Tombstone::default();
        assert!(!none.refuses_vote(&req(1, 2, None)));
        assert!(!none.refuses_leader(&Vote::new(1, 2)));
    }

    #[test]
    fn merged_tombstones_keep_the_latest_of_each() {
        let a = Tombstone {
            vote: Some(Vote::new(7, 2)),
            last_log_id: log(5, 1, 40),
        };
        let b = Tombstone {
            vote: Some(Vote::new_committed(6, 1)),
            last_log_id: log(6, 1, 45),
        };
        let m = a.merge(b);
        assert_eq!(m.vote, Some(Vote::new(7, 2)));
        assert_eq!(m.last_log_id, log(6, 1, 45));
        assert_eq!(Tombstone::default().merge(a), a);
    }
}
