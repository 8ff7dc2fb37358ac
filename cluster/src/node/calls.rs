//! Calls out of a node: writes to the groups it leads, metadata reads and
//! commands (forwarded to the metadata leader), and data requests to peers.

use super::ClusterNode;
use crate::meta::{MetaAnswer, MetaCommand, MetaResult, MetaState};
use crate::network::Method;
use crate::placement::META_GROUP;
use crate::wire::{self, DataError, DataReply, DataRequest, KIND_DATA};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use petuum_storage::{ShardRequest, ShardResponse};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a client's read waits for a majority of the metadata voters
/// to confirm the leader's read index, and then for this node's replica
/// to apply it ([`ClusterNode::meta_view_linear`]).
const META_CONFIRM_FOR: Duration = Duration::from_secs(2);

/// How long a client's read of the metadata asks the voters again while
/// none confirms that it leads (an election).
const META_READ_FOR: Duration = Duration::from_secs(5);

impl ClusterNode {
    /// Writes one command to a group this node leads.
    pub(super) async fn write(
        &self,
        group: u64,
        req: ShardRequest,
    ) -> Result<ShardResponse, DataError> {
        Ok(self.write_at(group, req).await?.0)
    }

    /// [`write`](Self::write), with the index of the log entry that
    /// carried the command (applied here when this returns).
    async fn write_at(
        &self,
        group: u64,
        req: ShardRequest,
    ) -> Result<(ShardResponse, u64), DataError> {
        let raft = self.raft(group).ok_or(DataError::NotHere { group })?;
        if self.yielding.lock().contains(&group) {
            let me = self.id();
            return Err(DataError::NotLeader {
                group,
                leader: raft.metrics().borrow().current_leader.filter(|&l| l != me),
            });
        }
        let started = std::time::Instant::now();
        match raft.client_write(req).await {
            Ok(resp) => {
                self.db
                    .metrics()
                    .commit_seconds
                    .get_or_create(&petuum_storage::metrics::GroupLabel::of(group))
                    .observe(started.elapsed().as_secs_f64());
                Ok((resp.data, resp.log_id.index))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(DataError::NotLeader {
                    group,
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(DataError::Unavailable(format!("group {group}: {e}"))),
        }
    }

    /// The metadata: this node's replica when it holds one, else a voter's.
    /// (A copy shares the job records with the replica: it copies pointers,
    /// not histories.)
    pub async fn meta_read(&self) -> Result<MetaState, DataError> {
        self.meta_state_or(DataRequest::MetaRead).await
    }

    /// The metadata without the records of ended jobs when read from
    /// another node (the whole of it from a local replica, which costs no
    /// copy of the records): for loops that poll it.
    pub async fn meta_active(&self) -> Result<MetaState, DataError> {
        self.meta_state_or(DataRequest::MetaActive).await
    }

    /// This node's replica of the metadata, else `req`'s answer from a
    /// voter.
    async fn meta_state_or(&self, req: DataRequest) -> Result<MetaState, DataError> {
        if let Some(h) = self.current_meta() {
            return Ok(h.state());
        }
        match self.meta_remote(&req).await? {
            DataReply::MetaState(s) => Ok(*s),
            other => Err(DataError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// This node's metadata replica while it follows a leader and its
    /// group still lists it. One without a leader may be a replica the group
    /// removed while this node was away (it never hears of its removal);
    /// one whose last membership leaves it out was removed and hears
    /// nothing more, while still naming the leader of its last term (the
    /// record of the node's own removal may come after that membership, so
    /// it would never learn it): then reads go to the voters.
    fn current_meta(&self) -> Option<crate::meta::MetaHandle> {
        let h = self.meta_handle()?;
        let raft = self.raft(META_GROUP)?;
        current(&raft.metrics().borrow(), self.id()).then_some(h)
    }

    /// A metadata read answered by the first metadata voter that answers,
    /// asking first the one that last ran a command this node forwarded
    /// (the leader, whose replica holds that command).
    async fn meta_remote(&self, req: &DataRequest) -> Result<DataReply, DataError> {
        self.meta_remote_within(req, Duration::from_secs(3)).await
    }

    /// [`meta_remote`](Self::meta_remote), each voter given `timeout`.
    async fn meta_remote_within(
        &self,
        req: &DataRequest,
        timeout: Duration,
    ) -> Result<DataReply, DataError> {
        let mut last = DataError::Unavailable("no metadata replica reachable".into());
        let me = self.id();
        let mut voters = self.placement().meta_voters();
        let hint = self.meta_leader_hint.load(Ordering::Relaxed);
        if let Some(i) = voters.iter().position(|&v| v == hint) {
            voters[..=i].rotate_right(1);
        }
        // Those this node's last call failed to reach go last.
        voters.sort_by_key(|&v| self.peers.is_down(v));
        for t in voters {
            if t == me {
                continue;
            }
            match self.data_call(t, req, timeout).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One job's record; only that record is copied or sent (runs poll
    /// their record every few milliseconds; the whole metadata holds every
    /// job's history and events).
    pub async fn meta_job(
        &self,
        job: u64,
    ) -> Result<Option<std::sync::Arc<crate::jobs::JobRecord>>, DataError> {
        if let Some(h) = self.current_meta() {
            return Ok(h.with_state(|m| m.jobs.get(&job).cloned()));
        }
        match self.meta_remote(&DataRequest::MetaJob { job }).await? {
            DataReply::Job(r) => Ok(r.map(|r| std::sync::Arc::new(*r))),
            other => Err(DataError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// One dataset's record (local replica, or the active metadata of a
    /// voter).
    pub async fn meta_dataset(
        &self,
        sha256: &str,
    ) -> Result<Option<crate::datasets::DatasetRecord>, DataError> {
        if let Some(h) = self.current_meta() {
            return Ok(h.with_state(|m| m.datasets.get(sha256).cloned()));
        }
        Ok(self.meta_active().await?.datasets.remove(sha256))
    }

    /// One job's record as a client must see it: linearizable, holding
    /// every metadata command committed before the call (see
    /// [`meta_view_linear`](Self::meta_view_linear)).
    pub async fn meta_job_linear(
        &self,
        job: u64,
    ) -> Result<Option<std::sync::Arc<crate::jobs::JobRecord>>, DataError> {
        if self.meta_caught_up().await? {
            if let Some(h) = self.meta_handle() {
                return Ok(h.with_state(|m| m.jobs.get(&job).cloned()));
            }
        }
        match self
            .meta_linear_remote(DataRequest::MetaJob { job })
            .await?
        {
            DataReply::Job(r) => Ok(r.map(|r| std::sync::Arc::new(*r))),
            other => Err(DataError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// `f` of the metadata as a client must see it. What a client reads
    /// (a job's record, the list of jobs or datasets) is linearizable: it
    /// holds every metadata command committed before the call, whichever
    /// node answers. Without that a client saw a job `succeeded` and, on
    /// its next call to the same node, `running` (the node's replica had
    /// lost its leader in an election after a heal, so it read from
    /// another voter that was behind: CI, `a_partitioned_host_is_replaced_
    /// fenced_and_rejoins`), and a leader cut off by a partition answered
    /// from a state the majority had moved past.
    ///
    /// Raft's read index: the metadata leader confirms its leadership
    /// with a majority of the voters and names its commit index; the read
    /// is answered by this node's replica once it applied that index, or,
    /// on a node without a replica (or one that does not catch up in
    /// time), by a voter that did ([`DataRequest::MetaLinear`]). Costs one
    /// round trip to the leader and one from it to a majority; loops that
    /// poll the metadata (runs, the placement driver) read with
    /// [`meta_view`](Self::meta_view) and check what they read instead.
    pub async fn meta_view_linear<R>(
        &self,
        f: impl FnOnce(&MetaState) -> R,
    ) -> Result<R, DataError> {
        if self.meta_caught_up().await? {
            if let Some(h) = self.meta_handle() {
                return Ok(h.with_state(f));
            }
        }
        match self.meta_linear_remote(DataRequest::MetaRead).await? {
            DataReply::MetaState(s) => Ok(f(&s)),
            other => Err(DataError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Whether this node's metadata replica holds every command committed
    /// before the call: it applied the leader's read index within
    /// [`META_CONFIRM_FOR`]. False without a replica, or for one that does
    /// not catch up in time (removed from the group, or cut off from the
    /// leader while this node reaches it through others); an error when no
    /// leader confirms a read index.
    pub(super) async fn meta_caught_up(&self) -> Result<bool, DataError> {
        let Some(h) = self.meta_handle() else {
            return Ok(false);
        };
        let index = self.meta_read_index().await?;
        let mut applied = h.applied_watch();
        let caught_up = matches!(
            tokio::time::timeout(META_CONFIRM_FOR, applied.wait_for(|&a| a >= index)).await,
            Ok(Ok(_))
        );
        Ok(caught_up)
    }

    /// The metadata leader's read index: from this node's replica when it
    /// leads, else asked of the leader it follows, the last leader a
    /// command went to, then the other voters (each names the leader it
    /// follows when it does not lead). While the voters answer but none
    /// confirms (an election, a leader not yet sure of its term) it asks
    /// again, for up to [`META_READ_FOR`]; a leader that cannot reach a
    /// majority, or voters that do not answer, end it at once.
    async fn meta_read_index(&self) -> Result<u64, DataError> {
        let until = tokio::time::Instant::now() + META_READ_FOR;
        loop {
            let (r, electing) = self.meta_read_index_once().await;
            match r {
                Ok(index) => return Ok(index),
                Err(e) if electing && tokio::time::Instant::now() < until => {
                    tracing::debug!(error = %e, "no metadata read index yet; asking again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(DataError::NotLeader { .. }) => {
                    return Err(DataError::Unavailable(format!(
                        "the metadata group confirmed no leader within {META_READ_FOR:?} (an election?); ask again"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One round of [`meta_read_index`](Self::meta_read_index), and
    /// whether a voter answered that it does not lead (worth a new round).
    async fn meta_read_index_once(&self) -> (Result<u64, DataError>, bool) {
        let me = self.id();
        let leader = self
            .raft(META_GROUP)
            .and_then(|r| r.metrics().borrow().current_leader);
        if leader == Some(me) {
            let r = self.meta_leader_read_index().await;
            let electing = matches!(r, Err(DataError::NotLeader { .. }));
            return (r, electing);
        }
        let mut targets: Vec<u64> = leader.into_iter().collect();
        targets.push(self.meta_leader_hint.load(Ordering::Relaxed));
        targets.extend(self.placement().meta_voters());
        // Those this node's last call failed to reach go last (stably): a
        // cut link holds a call for its whole timeout.
        targets.sort_by_key(|&v| self.peers.is_down(v));
        let mut tried = Vec::new();
        let mut electing = false;
        let mut last = DataError::Unavailable("no metadata voter reachable".into());
        let mut i = 0;
        while i < targets.len() {
            let t = targets[i];
            i += 1;
            if t == 0 || tried.contains(&t) {
                continue;
            }
            tried.push(t);
            match self
                .data_call(t, &DataRequest::MetaReadIndex, Duration::from_secs(3))
                .await
            {
                Ok(DataReply::Index(index)) => {
                    self.meta_leader_hint.store(t, Ordering::Relaxed);
                    return (Ok(index), false);
                }
                Ok(other) => {
                    last = DataError::Unavailable(format!("unexpected reply {other:?}"));
                }
                Err(e @ DataError::NotLeader { leader, .. }) => {
                    electing = true;
                    // Ask the leader that voter follows next.
                    if let Some(l) = leader.filter(|l| !tried.contains(l)) {
                        targets.insert(i, l);
                    }
                    last = e;
                }
                Err(e) => last = e,
            }
        }
        (Err(last), electing)
    }

    /// This node's read index as the metadata leader (Raft's ReadIndex:
    /// its leadership confirmed by a majority of the voters). A leader cut
    /// off from the others by a partition keeps believing it leads until
    /// the heal, and would answer every client from a state the majority
    /// has moved past: it gets no read index.
    pub(super) async fn meta_leader_read_index(&self) -> Result<u64, DataError> {
        let raft = self
            .raft(META_GROUP)
            .ok_or(DataError::NotHere { group: META_GROUP })?;
        let leader = raft.metrics().borrow().current_leader;
        if leader != Some(self.id()) {
            return Err(DataError::NotLeader {
                group: META_GROUP,
                leader,
            });
        }
        match tokio::time::timeout(META_CONFIRM_FOR, raft.get_read_log_id()).await {
            Ok(Ok((read, _))) => Ok(read.map_or(0, |l| l.index)),
            // openraft's error names every member; the leader is enough.
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(DataError::NotLeader {
                    group: META_GROUP,
                    leader: f.leader_id,
                })
            }
            Ok(Err(_)) | Err(_) => Err(DataError::Unavailable(format!(
                "node {} cannot reach a majority of the metadata group's voters (is it cut off from them?); its view may be stale, so it does not answer",
                self.id()
            ))),
        }
    }

    /// `read` answered linearizably by a metadata voter, asking first the
    /// last leader a call went to (the one that named the read index).
    async fn meta_linear_remote(&self, read: DataRequest) -> Result<DataReply, DataError> {
        let req = DataRequest::MetaLinear(Box::new(read));
        self.meta_remote_within(&req, Duration::from_secs(5)).await
    }

    /// `f` of the metadata, without copying it when this node holds a
    /// replica.
    pub async fn meta_view<R>(&self, f: impl FnOnce(&MetaState) -> R) -> Result<R, DataError> {
        if let Some(h) = self.current_meta() {
            return Ok(h.with_state(f));
        }
        Ok(f(&self.meta_read().await?))
    }

    /// Changes of the metadata, to await instead of polling
    /// [`meta_read`](Self::meta_read); without a local replica they are
    /// polled every `poll`.
    pub fn meta_changes(&self, poll: Duration) -> MetaChanges {
        MetaChanges {
            rx: self.meta_handle().map(|h| h.applied_watch()),
            raft: self.raft(META_GROUP).map(|r| (r.metrics(), self.id())),
            pending: true,
            poll,
        }
    }

    /// Whether `node` answers within `timeout`.
    pub async fn ping(&self, node: u64, timeout: Duration) -> bool {
        matches!(
            self.data_call(node, &DataRequest::Ping, timeout).await,
            Ok(DataReply::Ok)
        )
    }

    /// Whether `node` answers a ping from `via` (an indirect probe; `via`
    /// pings it and reports), all within `timeout`.
    pub async fn ping_via(&self, via: u64, node: u64, timeout: Duration) -> bool {
        matches!(
            self.data_call(via, &DataRequest::PingPeer { node }, timeout)
                .await,
            Ok(DataReply::Ok)
        )
    }

    /// One data request to a node (this one: handled in place).
    pub async fn data_call(
        &self,
        node: u64,
        req: &DataRequest,
        timeout: Duration,
    ) -> Result<DataReply, DataError> {
        if node == self.id() {
            return Box::pin(self.handle_data(req.clone())).await;
        }
        let bytes = self
            .peers
            .call(node, Method::Data, 0, KIND_DATA, wire::encode(req), timeout)
            .await
            .map_err(|e| {
                self.note_refusal(&e);
                DataError::Unavailable(e.to_string())
            })?;
        let r: Result<DataReply, DataError> =
            wire::decode(&bytes, "data reply").map_err(DataError::Unavailable)?;
        r
    }

    /// A peer refusing this node as removed from the cluster (it read the
    /// removal in the metadata): this node learns of its removal there.
    /// Otherwise a removed node that reads the metadata from peers, its own
    /// replica dropped before the record reached it, never would: every
    /// read is refused (seen in the chaos run: "not told of its removal
    /// 180 s after `nodes remove`").
    fn note_refusal(&self, e: &crate::network::CallError) {
        let me = self.id();
        if let crate::network::CallError::Remote {
            node,
            code: tonic::Code::PermissionDenied,
            message,
        } = e
        {
            if *message == crate::server::removed_refusal(me) && self.removed.write().insert(me) {
                tracing::warn!(
                    node = me,
                    by = node,
                    "this node was removed from the cluster; it serves nothing (stop it)"
                );
            }
        }
    }

    /// Runs a metadata command on the metadata leader (forwarding once),
    /// and answers once this node's own replica (where it holds one)
    /// applied it, at most [`OWN_WRITE_WAIT`] later: a client that reads
    /// through this node next sees its own write (reads come from the
    /// local replica, which may trail the leader by a heartbeat).
    pub async fn meta_command(&self, cmd: MetaCommand) -> Result<MetaAnswer, DataError> {
        Ok(self.meta_command_seen(cmd, true).await?.0)
    }

    /// [`meta_command`](Self::meta_command), with the index of the
    /// command's log entry (what a forwarded command is answered with).
    /// Waits for this node's replica, where it holds one, to apply that
    /// entry, at most [`OWN_WRITE_WAIT`]: a replica that does not catch up
    /// in time (cut off from the leader) is left behind, the command is
    /// done either way. `relay`: whether the other voters may forward it
    /// when this node cannot reach the leader (not for a command another
    /// node forwarded here, so that a command goes through at most one
    /// other member).
    pub(super) async fn meta_command_seen(
        &self,
        cmd: MetaCommand,
        relay: bool,
    ) -> Result<(MetaAnswer, u64), DataError> {
        let (answer, index) = self.meta_command_at(cmd, relay).await?;
        if let Some(h) = self.current_meta() {
            let mut applied = h.applied_watch();
            let _ = tokio::time::timeout(OWN_WRITE_WAIT, applied.wait_for(|&a| a >= index)).await;
        }
        Ok((answer, index))
    }

    /// The command run on the metadata leader, here or forwarded, with the
    /// index of its log entry (a refusal, too, is an error).
    ///
    /// With `relay`, a leader this node cannot reach (a link cut between
    /// the two while both reach the rest: a partial partition, or a route
    /// that failed) is reached through the other voters, each of which
    /// forwards the command to the leader it follows; the leader is tried
    /// last when this node's last call to it already failed. A command may
    /// then be applied twice (a call that timed out may have been delivered
    /// late): the metadata's commands are written to be idempotent, as a
    /// caller's retry already needs (a job's reports are compare-and-set on
    /// its epoch, a submission carries its id).
    async fn meta_command_at(
        &self,
        cmd: MetaCommand,
        relay: bool,
    ) -> Result<(MetaAnswer, u64), DataError> {
        let mut targets: Vec<u64> = Vec::new();
        if self.meta_handle().is_some() {
            match self
                .write_at(META_GROUP, ShardRequest::Meta(wire::encode(&cmd)))
                .await
            {
                Ok((resp, index)) => return Ok((meta_answer(resp)?, index)),
                Err(DataError::NotLeader {
                    leader: Some(l), ..
                }) => targets.push(l),
                // No leader known here (an election, or this node is
                // handing off): ask the other voters.
                Err(DataError::NotLeader { leader: None, .. }) => {
                    let me = self.id();
                    targets = self
                        .placement()
                        .meta_voters()
                        .into_iter()
                        .filter(|&n| n != me)
                        .collect();
                }
                Err(e) => return Err(e),
            }
        } else {
            targets = self.placement().meta_voters();
        }
        if relay {
            let me = self.id();
            let others: Vec<u64> = self
                .placement()
                .meta_voters()
                .into_iter()
                .filter(|&n| n != me && !targets.contains(&n))
                .collect();
            targets.extend(others);
        }
        // Voters this node's last call failed to reach go last (stably):
        // a cut link holds a call for its whole timeout.
        targets.sort_by_key(|&t| self.peers.is_down(t));
        let n = targets.len();
        let mut last = DataError::Unavailable("no metadata replica reachable".into());
        for (i, t) in targets.into_iter().enumerate() {
            match self
                .peers
                .call(
                    t,
                    Method::Data,
                    META_GROUP,
                    KIND_DATA,
                    wire::encode(&DataRequest::MetaAt(cmd.clone())),
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(bytes) => {
                    let r: Result<DataReply, DataError> =
                        wire::decode(&bytes, "metadata reply").map_err(DataError::Unavailable)?;
                    match r {
                        Ok(DataReply::MetaAt(a, index)) => {
                            self.meta_leader_hint.store(t, Ordering::Relaxed);
                            return Ok((a, index));
                        }
                        Ok(other) => {
                            return Err(DataError::Unavailable(format!(
                                "unexpected metadata reply {other:?}"
                            )))
                        }
                        // The voter could not reach a leader either: the
                        // next one may.
                        Err(e @ DataError::Unavailable(_)) if i + 1 < n => last = e,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => last = DataError::Unavailable(e.to_string()),
            }
        }
        Err(last)
    }
}

/// How long a metadata command's answer waits for this node's replica to
/// apply it ([`ClusterNode::meta_command`]).
pub const OWN_WRITE_WAIT: Duration = Duration::from_secs(5);

/// Whether a metadata replica with these metrics is one to read: it
/// follows a leader and its group still lists it (see `current_meta`).
fn current(m: &openraft::RaftMetrics<u64, openraft::BasicNode>, me: u64) -> bool {
    m.current_leader.is_some() && super::lists(m.membership_config.membership(), me)
}

/// Changes of the metadata as [`ClusterNode::meta_read`] sees it: on a
/// node with a metadata replica that follows a leader, that replica's
/// applied-entries watch; elsewhere (the metadata is read from a voter) a
/// poll.
pub struct MetaChanges {
    rx: Option<tokio::sync::watch::Receiver<u64>>,
    /// The local replica's Raft metrics and this node's id: while that
    /// replica is not one to read (no leader: cut off from it, or an
    /// election), reads go to the voters, and changes are polled as
    /// without a replica; its applied entries would not say.
    raft: Option<(
        tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, openraft::BasicNode>>,
        u64,
    )>,
    /// A change not taken yet: the first one (nothing was read yet), or
    /// one [`wait`](Self::wait) saw (which marks it seen on the watch).
    pending: bool,
    /// The poll interval without a local replica.
    poll: Duration,
}

impl MetaChanges {
    /// Whether the metadata may have changed since the last call (always
    /// without a local replica), marking it seen: read it after this, and
    /// a change made meanwhile is taken by the next call.
    pub fn take(&mut self) -> bool {
        let pending = std::mem::replace(&mut self.pending, false);
        let local = self.local_current();
        match &mut self.rx {
            Some(rx) => {
                let changed = rx.has_changed().unwrap_or(true);
                rx.borrow_and_update();
                pending || changed || !local
            }
            None => true,
        }
    }

    /// Whether the local replica is one to read now.
    fn local_current(&self) -> bool {
        self.raft
            .as_ref()
            .is_some_and(|(m, me)| current(&m.borrow(), *me))
    }

    /// The read that followed the last [`take`](Self::take) failed: the
    /// next `take` says "changed" whatever happens meanwhile, so it is
    /// read again.
    pub fn again(&mut self) {
        self.pending = true;
    }

    /// Waits until the metadata may have changed, at most `max` (so the
    /// caller's own checks, such as an abort flag, run at least that
    /// often); without a local replica, at most the poll interval.
    pub async fn wait(&mut self, max: Duration) {
        let local = self.local_current();
        match &mut self.rx {
            Some(rx) if local => match tokio::time::timeout(max, rx.changed()).await {
                Ok(Ok(())) => self.pending = true,
                Err(_) => {}
                // The replica is gone (the node is stopping): poll.
                Ok(Err(_)) => tokio::time::sleep(max.min(self.poll)).await,
            },
            _ => tokio::time::sleep(max.min(self.poll)).await,
        }
    }
}

/// The answer (or typed refusal) the metadata state machine gave the
/// command this node proposed (see [`crate::meta::MetaResult`]).
fn meta_answer(resp: ShardResponse) -> Result<MetaAnswer, DataError> {
    let bytes = resp
        .payload
        .ok_or_else(|| DataError::Unavailable("metadata command without an answer".into()))?;
    let answer: MetaResult =
        wire::decode(&bytes, "metadata answer").map_err(DataError::Unavailable)?;
    answer.map_err(DataError::Refused)
}
