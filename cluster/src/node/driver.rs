//! The placement driver: on the metadata leader, keeps every group at its
//! replication factor on members in service, with replicas and preferred
//! leaders balanced, moving one replica per group at a time:
//! host an empty replica on the new node → add it as a learner (it
//! catches up by snapshot and log) → copy the checkpoint parts it missed →
//! replace the voters (openraft's joint consensus; a leader that leaves
//! hands its leadership off first) → record the move → drop the old
//! replica. A member down for longer than `down_after` is declared dead
//! and its replicas are rebuilt elsewhere; a drained or removed member's
//! are moved off while it still serves.

use super::ClusterNode;
use crate::meta::{MetaCommand, MetaState, Retire};
use crate::placement::{group_shard, Placement, META_GROUP};
use crate::wire::{DataError, DataReply, DataRequest};
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the driver looks at the cluster.
const TICK: Duration = Duration::from_secs(1);

/// How long the driver waits for a member's status.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Moves under way at once (each may ship a snapshot).
pub const MOVES_AT_ONCE: usize = 2;

/// How long a learner may take to catch up before the move is retried.
const CATCH_UP: Duration = Duration::from_secs(300);

/// One step of the driver: add a replica on `add`, remove the one on
/// `remove`, or both (a move).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub group: u64,
    pub add: Option<u64>,
    pub remove: Option<u64>,
}

/// The moves that bring the placement closer to its goal, at most
/// `limit`, no two on one group and at most one new replica per node:
/// first groups with a replica on a retiring member or short of replicas,
/// then (when nothing needs repair) one replica from the fullest to the
/// emptiest member in service when they differ by more than one.
/// `eligible`: members in service that answer (they may take replicas).
pub fn plan(
    p: &Placement,
    retiring: &BTreeMap<u64, Retire>,
    eligible: &BTreeSet<u64>,
    limit: usize,
    busy: &BTreeSet<u64>,
) -> Vec<Move> {
    let mut load: BTreeMap<u64, usize> = eligible.iter().map(|&n| (n, 0)).collect();
    for g in p.all_groups().filter(|&g| g != META_GROUP) {
        for n in p.members(g) {
            if let Some(l) = load.get_mut(&n) {
                *l += 1;
            }
        }
    }
    let mut out: Vec<Move> = Vec::new();
    let mut targets_used: BTreeSet<u64> = BTreeSet::new();
    let in_service = p
        .nodes()
        .iter()
        .filter(|n| !retiring.contains_key(n))
        .count();
    for g in p.all_groups().filter(|g| !busy.contains(g)) {
        if out.len() >= limit {
            return out;
        }
        let members = p.members(g);
        let want = if g == META_GROUP {
            in_service.min(crate::placement::MAX_META_VOTERS)
        } else {
            in_service.min(p.replicas() as usize)
        }
        .max(1);
        let bad: Vec<u64> = members
            .iter()
            .copied()
            .filter(|n| retiring.contains_key(n))
            .collect();
        let staying = members.len() - bad.len();
        if staying < want {
            let target = load
                .iter()
                .filter(|(n, _)| !members.contains(n))
                .min_by_key(|(&n, &l)| (l, n))
                .map(|(&n, _)| n);
            if let Some(t) = target {
                *load.get_mut(&t).expect("eligible") += 1;
                out.push(Move {
                    group: g,
                    add: Some(t),
                    remove: bad.first().copied(),
                });
                continue;
            }
        }
        if let Some(&r) = bad.first() {
            if staying >= want {
                out.push(Move {
                    group: g,
                    add: None,
                    remove: Some(r),
                });
            }
        } else if staying > want {
            // More replicas than wanted (a move whose last steps failed
            // and was recorded as its joint configuration): drop one from
            // the fullest member, never the preferred leader.
            if let Some(&r) = members[1..]
                .iter()
                .max_by_key(|&&n| (load.get(&n).copied().unwrap_or(usize::MAX), n))
            {
                if let Some(l) = load.get_mut(&r) {
                    *l = l.saturating_sub(1);
                }
                out.push(Move {
                    group: g,
                    add: None,
                    remove: Some(r),
                });
            }
        }
    }
    // Balance only when nothing needs repair and every member in service
    // answers (a member that is merely slow to answer is not moved off).
    if !out.is_empty() || !busy.is_empty() || in_service != eligible.len() {
        return out;
    }
    // Balance: replicas from the fullest members to the emptiest, one per
    // group and per receiving node.
    let mut used: BTreeSet<u64> = busy.clone();
    while out.len() < limit {
        let (Some((&full, &hi)), Some((&empty, &lo))) = (
            load.iter()
                .filter(|(n, _)| !targets_used.contains(n))
                .max_by_key(|(&n, &l)| (l, std::cmp::Reverse(n))),
            load.iter()
                .filter(|(n, _)| !targets_used.contains(n))
                .min_by_key(|(&n, &l)| (l, n)),
        ) else {
            break;
        };
        if hi <= lo + 1 {
            break;
        }
        // Prefer a group `full` does not lead first (no hand-off needed).
        let mut candidates: Vec<u64> = p
            .all_groups()
            .filter(|&g| g != META_GROUP && !used.contains(&g))
            .filter(|&g| {
                let m = p.members(g);
                m.contains(&full) && !m.contains(&empty)
            })
            .collect();
        candidates.sort_by_key(|&g| (p.preferred(g) == full, g));
        let Some(&g) = candidates.first() else { break };
        used.insert(g);
        targets_used.insert(empty);
        targets_used.insert(full);
        *load.get_mut(&full).expect("eligible") -= 1;
        *load.get_mut(&empty).expect("eligible") += 1;
        out.push(Move {
            group: g,
            add: Some(empty),
            remove: Some(full),
        });
    }
    out
}

/// The members after `m` is done: the removed one out, the added one last;
/// the preferred leader stays first unless it was removed.
pub fn after(members: &[u64], m: &Move) -> Vec<u64> {
    let mut out: Vec<u64> = members
        .iter()
        .copied()
        .filter(|&n| Some(n) != m.remove)
        .collect();
    if let Some(a) = m.add {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// A reordering of one group's members that evens out preferred leaders
/// among `eligible` members (none when they differ by at most one).
pub fn rebalance_preferred(p: &Placement, eligible: &BTreeSet<u64>) -> Option<(u64, Vec<u64>)> {
    let mut prefs: BTreeMap<u64, usize> = eligible.iter().map(|&n| (n, 0)).collect();
    let shards: Vec<u64> = p.all_groups().filter(|&g| g != META_GROUP).collect();
    for &g in &shards {
        if let Some(c) = prefs.get_mut(&p.preferred(g)) {
            *c += 1;
        }
    }
    let (&few, &lo) = prefs.iter().min_by_key(|(&n, &c)| (c, n))?;
    let (&many, &hi) = prefs
        .iter()
        .max_by_key(|(&n, &c)| (c, std::cmp::Reverse(n)))?;
    if hi <= lo + 1 {
        return None;
    }
    let g = shards.into_iter().find(|&g| {
        let m = p.members(g);
        m[0] == many && m.contains(&few)
    })?;
    let mut m = p.members(g);
    m.retain(|&n| n != few);
    m.insert(0, few);
    Some((g, m))
}

impl ClusterNode {
    /// Runs the placement driver while this node leads the metadata group.
    pub(super) async fn drive_placement(self: Arc<Self>) {
        let in_flight: Arc<parking_lot::Mutex<BTreeSet<u64>>> = Default::default();
        // The driver's probes time out after a second, once per tick.
        let mut silence = crate::liveness::Silence::new(TICK + PROBE_TIMEOUT);
        loop {
            tokio::time::sleep(TICK).await;
            if self.is_stopping() {
                return;
            }
            if !self.is_meta_leader() {
                // A node that may come to lead the metadata group (it holds
                // a replica of it) keeps counting the members' silence by
                // its own pings while it follows, so a leader that takes
                // over does not start from zero: under a metadata group
                // whose leader changes more often than `down_after`, a
                // member gone for good was never declared dead (a chaos
                // run: 141 s with `down_after` 20 s, jobs paused for want
                // of quorum all along). Only rounds this node ran count
                // (the silence's cap), whichever role it had.
                if self.meta_handle().is_some() {
                    let placement = self.placement();
                    let answered = self.ping_round(placement.nodes()).await;
                    if let Some(a) = self.vouched(placement.nodes(), answered).await {
                        silence.round(Instant::now(), placement.nodes(), &a);
                    }
                } else {
                    silence.reset();
                }
                continue;
            }
            let Some(meta) = self.meta_state() else {
                continue;
            };
            let Some(placement) = meta.placement.clone() else {
                continue;
            };
            let view = self.look(&placement).await;
            if let Some(a) = self.vouched(placement.nodes(), view.answered.clone()).await {
                silence.round(Instant::now(), placement.nodes(), &a);
            }
            for &n in placement.nodes() {
                let silent = silence.of(n);
                if silent >= self.config.down_after && !meta.retiring.contains_key(&n) {
                    tracing::warn!(
                        node = n,
                        silent_s = silent.as_secs(),
                        "node declared dead for good: its replicas are rebuilt elsewhere"
                    );
                    let _ = self
                        .meta_command(MetaCommand::Retire {
                            node: n,
                            how: Some(Retire::Dead),
                        })
                        .await;
                }
            }
            let busy: BTreeSet<u64> = in_flight.lock().clone();
            if self.reconcile(&placement, &view, &busy).await {
                continue;
            }
            self.drop_strays(&placement, &view, &busy).await;
            let eligible: BTreeSet<u64> = view
                .answered
                .iter()
                .copied()
                .filter(|&n| {
                    meta.in_service(n)
                        && meta.node_states.get(&n) != Some(&crate::meta::NodeState::Leaving)
                })
                .collect();
            let room = MOVES_AT_ONCE.saturating_sub(busy.len());
            let moves = plan(&placement, &meta.retiring, &eligible, room, &busy);
            if moves.is_empty() {
                if busy.is_empty() {
                    self.finish_retirements(&meta).await;
                    if let Some((group, members)) = rebalance_preferred(&placement, &eligible) {
                        tracing::info!(group, ?members, "preferred leader moved");
                        let _ = self
                            .meta_command(MetaCommand::SetMembers { group, members })
                            .await;
                    }
                }
                continue;
            }
            // Every job's: running ones restore from their checkpoints,
            // ended ones keep their model there.
            let jobs: Arc<Vec<u64>> = Arc::new(meta.jobs.keys().copied().collect());
            let (placement, view) = (Arc::new(placement), Arc::new(view));
            // Each move runs on its own: a slow one (a big snapshot) holds
            // up neither the others nor the failure detector.
            for m in moves {
                in_flight.lock().insert(m.group);
                let (node, placement, view, jobs, in_flight) = (
                    self.clone(),
                    placement.clone(),
                    view.clone(),
                    jobs.clone(),
                    in_flight.clone(),
                );
                tokio::spawn(async move {
                    let started = Instant::now();
                    match node.move_replica(&placement, &view, &m, &jobs).await {
                        Ok(()) => tracing::info!(
                            group = m.group,
                            add = ?m.add,
                            remove = ?m.remove,
                            ms = started.elapsed().as_millis() as u64,
                            "replica moved"
                        ),
                        Err(e) => tracing::warn!(
                            group = m.group,
                            add = ?m.add,
                            remove = ?m.remove,
                            error = %e,
                            "replica move failed; retried next round"
                        ),
                    }
                    in_flight.lock().remove(&m.group);
                });
            }
        }
    }

    /// Asks members that still host a replica their group's leader no
    /// longer counts (a removal they never heard of, a move whose last step
    /// failed) to drop it. Learners are left alone (a move under way).
    async fn drop_strays(&self, placement: &Placement, view: &View, busy: &BTreeSet<u64>) {
        for (&n, hosted) in &view.hosted {
            for &(group, learner) in hosted {
                if learner || busy.contains(&group) {
                    continue;
                }
                let Some(voters) = view.voters.get(&group) else {
                    continue;
                };
                if voters.contains(&n)
                    || view.leaders.get(&group) == Some(&n)
                    || placement.members(group).contains(&n)
                {
                    continue;
                }
                tracing::info!(node = n, group, "asking a stray replica to drop itself");
                let _ = self
                    .data_call(n, &DataRequest::DropGroup { group }, Duration::from_secs(5))
                    .await;
            }
        }
    }

    /// The members of `nodes` that answer a ping within [`PROBE_TIMEOUT`].
    async fn ping_round(&self, nodes: &[u64]) -> BTreeSet<u64> {
        join_all(
            nodes
                .iter()
                .map(|&n| async move { (n, self.ping(n, PROBE_TIMEOUT).await) }),
        )
        .await
        .into_iter()
        .filter(|&(_, ok)| ok)
        .map(|(n, _)| n)
        .collect()
    }

    /// The members that count as alive after a round in which `direct`
    /// answered this node: those, and the ones that did not but answer a
    /// member that did (up to two asked, `PingPeer`, as SWIM's indirect
    /// probes and the job scheduler's). A link broken between this node
    /// and one member alone (a partial partition) is no reason to declare
    /// that member dead for good and rebuild its replicas: a chaos run
    /// declared a live node dead after a link cut between it and the
    /// metadata leader (seed 7). None when no other member answered: this
    /// node is cut off itself (or every other member is down, and then it
    /// has no quorum to act on), so the round says nothing of the others,
    /// and silence counted while cut off no longer declares the members
    /// dead the moment the node is back.
    async fn vouched(&self, nodes: &[u64], direct: BTreeSet<u64>) -> Option<BTreeSet<u64>> {
        let me = self.id();
        let helpers: Vec<u64> = direct.iter().copied().filter(|&h| h != me).collect();
        if helpers.is_empty() && nodes.iter().any(|&n| n != me) {
            return None;
        }
        let missing: Vec<u64> = nodes
            .iter()
            .copied()
            .filter(|&n| n != me && !direct.contains(&n))
            .collect();
        let asks = missing
            .into_iter()
            .flat_map(|n| {
                helpers
                    .iter()
                    .copied()
                    .filter(move |&h| h != n)
                    .take(2)
                    .map(move |h| (n, h))
            })
            .map(|(n, h)| async move { (n, self.ping_via(h, n, PROBE_TIMEOUT).await) });
        let mut alive = direct;
        alive.extend(
            join_all(asks)
                .await
                .into_iter()
                .filter(|&(_, ok)| ok)
                .map(|(n, _)| n),
        );
        Some(alive)
    }

    /// Every member's status: who answered, and each group's leader and
    /// voters as its leader reports them.
    async fn look(&self, placement: &Placement) -> View {
        let me = self.id();
        let replies = join_all(placement.nodes().iter().map(|&n| async move {
            if n == me {
                return (n, Some(self.status()));
            }
            (n, self.peers.status(n, PROBE_TIMEOUT).await.ok())
        }))
        .await;
        Self::view_of(replies)
    }

    /// The driver's view from the members' status replies (`None`: no
    /// answer).
    fn view_of(replies: Vec<(u64, Option<petuum_proto::v1::StatusReply>)>) -> View {
        let mut view = View::default();
        // Each group's replicas' terms, by node.
        let mut terms: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        // Each group's leader and its term: of those that say they lead,
        // the highest term (a deposed one that has not heard yet still
        // says it leads).
        let mut best: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (n, reply) in replies {
            let Some(reply) = reply else { continue };
            view.answered.insert(n);
            view.hosted.insert(
                n,
                reply
                    .groups
                    .iter()
                    .map(|g| (g.group, g.state == "learner"))
                    .collect(),
            );
            for g in reply.groups {
                terms.entry(g.group).or_default().push((n, g.term));
                if g.state == "leader"
                    && g.leader == n
                    && best.get(&g.group).is_none_or(|&(_, t)| t < g.term)
                {
                    best.insert(g.group, (n, g.term));
                    view.voters.insert(g.group, g.voters);
                }
            }
        }
        // A leader one of its own voters has seen a higher term than is
        // deposed (an election is on). A higher term from a replica that is
        // not among its voters says nothing of it: a replica the group
        // removed, or one it never added, hears no leader and campaigns in
        // vain, its term climbing, and counting it would hide the group's
        // leader from this driver for as long as it runs (seen in the chaos
        // run: "group 8 has no leader" for 100 s while the group's leader
        // was stable, so the move that would drop that replica never came).
        for (group, (leader, term)) in best {
            let voters = view.voters.get(&group).map_or(&[][..], |v| &v[..]);
            if terms[&group]
                .iter()
                .any(|&(m, t)| t > term && voters.contains(&m))
            {
                view.voters.remove(&group);
            } else {
                view.leaders.insert(group, leader);
            }
        }
        view
    }

    /// Records the voters a group's leader reports when they differ from
    /// the placement (a move that a previous driver began and did not
    /// record). Returns whether it changed anything.
    async fn reconcile(&self, placement: &Placement, view: &View, busy: &BTreeSet<u64>) -> bool {
        let mut changed = false;
        for (&group, voters) in view.voters.iter().filter(|(g, _)| !busy.contains(g)) {
            let recorded = placement.members(group);
            let a: BTreeSet<u64> = recorded.iter().copied().collect();
            let b: BTreeSet<u64> = voters.iter().copied().collect();
            if a == b || voters.iter().any(|n| !placement.nodes().contains(n)) {
                continue;
            }
            let mut members: Vec<u64> =
                recorded.iter().copied().filter(|n| b.contains(n)).collect();
            members.extend(voters.iter().copied().filter(|n| !a.contains(n)));
            tracing::info!(group, ?members, "recording the voters the group has");
            if self
                .meta_command(MetaCommand::SetMembers { group, members })
                .await
                .is_ok()
            {
                changed = true;
            }
        }
        changed
    }

    /// Removes retiring members (remove, dead) that hold no replica and no
    /// job's workers.
    async fn finish_retirements(&self, meta: &MetaState) {
        let Some(p) = &meta.placement else { return };
        for (&n, &how) in &meta.retiring {
            if how == Retire::Drain || !p.groups_of(n).is_empty() {
                continue;
            }
            let has_workers = meta
                .jobs
                .values()
                .any(|r| !r.state.is_terminal() && r.placement.contains(&n));
            if has_workers {
                continue;
            }
            match self.meta_command(MetaCommand::RemoveNode { node: n }).await {
                Ok(_) => {
                    tracing::info!(node = n, why = how.name(), "node removed from the cluster")
                }
                Err(e) => tracing::warn!(node = n, error = %e, "removing a node"),
            }
        }
    }

    /// Carries out one move (see the module doc).
    async fn move_replica(
        &self,
        placement: &Placement,
        view: &View,
        m: &Move,
        jobs: &[u64],
    ) -> Result<(), DataError> {
        let group = m.group;
        let mut leader = *view
            .leaders
            .get(&group)
            .ok_or_else(|| DataError::Unavailable(format!("group {group} has no leader")))?;
        let members = placement.members(group);
        if let Some(add) = m.add {
            self.data_call(
                add,
                &DataRequest::OpenGroup { group },
                Duration::from_secs(30),
            )
            .await?;
            let addr = self
                .peers
                .addr(add)
                .ok_or_else(|| DataError::Unavailable(format!("no address of node {add}")))?;
            self.data_call(
                leader,
                &DataRequest::AddLearner {
                    group,
                    node: add,
                    addr,
                },
                CATCH_UP,
            )
            .await?;
            if let Some(shard) = group_shard(group) {
                if !jobs.is_empty() {
                    self.data_call(
                        add,
                        &DataRequest::CopyCheckpoints {
                            shard,
                            from: leader,
                            jobs: jobs.to_vec(),
                        },
                        CATCH_UP,
                    )
                    .await?;
                }
            }
        }
        let new_members = after(&members, m);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let r = self
                .data_call(
                    leader,
                    &DataRequest::SetVoters {
                        group,
                        voters: new_members.clone(),
                    },
                    Duration::from_secs(60),
                )
                .await;
            match r {
                Ok(_) => break,
                // The leader handed off (it is the one leaving): ask the
                // new one.
                Err(DataError::NotLeader {
                    leader: Some(l), ..
                }) if attempts < 10 => {
                    leader = l;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(DataError::NotLeader { leader: None, .. }) if attempts < 10 => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Some(l) = self.leader_of(group, &new_members).await {
                        leader = l;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.meta_command(MetaCommand::SetMembers {
            group,
            members: new_members,
        })
        .await?;
        if let Some(r) = m.remove {
            // Best effort: a dead node drops it when (if) it returns.
            let _ = self
                .data_call(r, &DataRequest::DropGroup { group }, Duration::from_secs(5))
                .await;
        }
        Ok(())
    }

    /// The leader of `group` as one of `among` reports it.
    async fn leader_of(&self, group: u64, among: &[u64]) -> Option<u64> {
        let me = self.id();
        for &n in among {
            let reply = if n == me {
                Some(self.status())
            } else {
                self.peers.status(n, Duration::from_secs(1)).await.ok()
            };
            if let Some(l) = reply
                .and_then(|r| r.groups.into_iter().find(|g| g.group == group))
                .map(|g| g.leader)
                .filter(|&l| l != 0)
            {
                return Some(l);
            }
        }
        None
    }

    /// The leader's side of a move: add `node` as a learner of `group` and
    /// wait until it has caught up.
    pub(super) async fn add_learner(
        &self,
        group: u64,
        node: u64,
        addr: String,
    ) -> Result<DataReply, DataError> {
        let raft = self.raft(group).ok_or(DataError::NotHere { group })?;
        self.check_leads(group, &raft)?;
        if node == self.id() {
            return Ok(DataReply::Ok);
        }
        self.peers.set_addr_if_unknown(node, addr.clone());
        let added = tokio::time::timeout(
            CATCH_UP,
            raft.add_learner(node, openraft::BasicNode { addr }, true),
        )
        .await
        .map_err(|_| {
            DataError::Unavailable(format!(
                "group {group}: node {node} did not catch up within {CATCH_UP:?}"
            ))
        })?;
        added.map_err(|e| write_error(group, e))?;
        Ok(DataReply::Ok)
    }

    /// The leader's side of a move: make `voters` the group's voters. A
    /// leader that is not among them hands its leadership to one that is
    /// (and already a voter) and answers `NotLeader`.
    pub(super) async fn set_voters(
        &self,
        group: u64,
        voters: Vec<u64>,
    ) -> Result<DataReply, DataError> {
        let raft = self.raft(group).ok_or(DataError::NotHere { group })?;
        self.check_leads(group, &raft)?;
        let me = self.id();
        if voters.is_empty() {
            return Err(DataError::Refused(crate::wire::Refusal::Invalid(format!(
                "group {group}: no voters"
            ))));
        }
        if !voters.contains(&me) {
            let current: BTreeSet<u64> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            let to = voters
                .iter()
                .copied()
                .find(|n| current.contains(n))
                .ok_or_else(|| {
                    DataError::Unavailable(format!(
                        "group {group}: no voter of {voters:?} to hand leadership to"
                    ))
                })?;
            self.hand_to(group, to).await?;
            return Err(DataError::NotLeader {
                group,
                leader: Some(to),
            });
        }
        let want: BTreeSet<u64> = voters.into_iter().collect();
        if !self.changing.lock().insert(group) {
            return Err(DataError::Refused(crate::wire::Refusal::Busy(format!(
                "group {group} is already changing its voters"
            ))));
        }
        // Leadership stays here until both steps (joint, then the new
        // configuration) are committed; cleared however this call ends.
        struct Done<'a>(&'a parking_lot::Mutex<std::collections::HashSet<u64>>, u64);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.lock().remove(&self.1);
            }
        }
        let _done = Done(&self.changing, group);
        raft.change_membership(openraft::ChangeMembers::ReplaceAllVoters(want), false)
            .await
            .map_err(|e| write_error(group, e))?;
        Ok(DataReply::Ok)
    }

    fn check_leads(
        &self,
        group: u64,
        raft: &openraft::Raft<petuum_storage::TypeConfig>,
    ) -> Result<(), DataError> {
        let leader = raft.metrics().borrow().current_leader;
        if leader != Some(self.id()) || self.yielding.lock().contains(&group) {
            return Err(DataError::NotLeader {
                group,
                leader: leader.filter(|&l| l != self.id()),
            });
        }
        Ok(())
    }
}

fn write_error(
    group: u64,
    e: openraft::error::RaftError<u64, openraft::error::ClientWriteError<u64, openraft::BasicNode>>,
) -> DataError {
    use openraft::error::{ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => DataError::NotLeader {
            group,
            leader: f.leader_id,
        },
        e => DataError::Unavailable(format!("group {group}: {e}")),
    }
}

/// What the driver saw in one round.
#[derive(Default)]
struct View {
    /// Members that answered.
    answered: BTreeSet<u64>,
    /// Each group's leader, as the leader itself reports.
    leaders: BTreeMap<u64, u64>,
    /// Each group's voters, as its leader reports.
    voters: BTreeMap<u64, Vec<u64>>,
    /// The groups each member hosts, and whether as a learner.
    hosted: BTreeMap<u64, Vec<(u64, bool)>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::shard_group;
    use petuum_proto::v1::{GroupInfo, StatusReply};

    /// One member's status: `(group, state, leader, term, voters)` each.
    fn reply(groups: &[(u64, &str, u64, u64, &[u64])]) -> Option<StatusReply> {
        Some(StatusReply {
            groups: groups
                .iter()
                .map(|&(group, state, leader, term, voters)| GroupInfo {
                    group,
                    state: state.into(),
                    leader,
                    term,
                    voters: voters.to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn a_replica_outside_the_voters_campaigning_hides_no_leader() {
        // Group 8 is led by node 2 (term 96, voters 2, 3, 5); node 1, which
        // the group removed before the placement recorded it, campaigns in
        // vain at term 140.
        let view = ClusterNode::view_of(vec![
            (1, reply(&[(8, "candidate", 0, 140, &[1, 2, 3])])),
            (2, reply(&[(8, "leader", 2, 96, &[2, 3, 5])])),
            (3, reply(&[(8, "follower", 2, 96, &[2, 3, 5])])),
            (5, reply(&[(8, "follower", 2, 96, &[2, 3, 5])])),
            (4, None),
        ]);
        assert_eq!(view.leaders.get(&8), Some(&2));
        assert_eq!(view.voters.get(&8), Some(&vec![2, 3, 5]));
        assert_eq!(view.answered.len(), 4);
    }

    #[test]
    fn a_deposed_leader_is_no_leader() {
        // Node 1 still says it leads at term 5; its voter 3 has moved to
        // term 6 (an election, or a leader this driver did not hear).
        let view = ClusterNode::view_of(vec![
            (1, reply(&[(8, "leader", 1, 5, &[1, 2, 3])])),
            (3, reply(&[(8, "follower", 0, 6, &[1, 2, 3])])),
        ]);
        assert_eq!(view.leaders.get(&8), None);
        // The new leader heard: it is the one.
        let view = ClusterNode::view_of(vec![
            (1, reply(&[(8, "leader", 1, 5, &[1, 2, 3])])),
            (2, reply(&[(8, "leader", 2, 6, &[1, 2, 3])])),
            (3, reply(&[(8, "follower", 2, 6, &[1, 2, 3])])),
        ]);
        assert_eq!(view.leaders.get(&8), Some(&2));
    }

    fn apply(p: &mut Placement, moves: &[Move]) {
        for m in moves {
            let members = after(&p.members(m.group), m);
            p.set_members(m.group, members).unwrap();
        }
    }

    fn settle(
        p: &mut Placement,
        retiring: &BTreeMap<u64, Retire>,
        eligible: &BTreeSet<u64>,
    ) -> usize {
        let mut rounds = 0;
        loop {
            let moves = plan(p, retiring, eligible, MOVES_AT_ONCE, &BTreeSet::new());
            if moves.is_empty() {
                return rounds;
            }
            let groups: BTreeSet<u64> = moves.iter().map(|m| m.group).collect();
            assert_eq!(groups.len(), moves.len(), "one move per group at a time");
            apply(p, &moves);
            rounds += 1;
            assert!(rounds < 1000, "the plan does not settle");
        }
    }

    fn loads(p: &Placement) -> BTreeMap<u64, usize> {
        let mut l = BTreeMap::new();
        for s in 0..p.shards() {
            for n in p.members(shard_group(s)) {
                *l.entry(n).or_default() += 1;
            }
        }
        l
    }

    /// Growing 3 → 5 spreads replicas evenly and adds metadata voters;
    /// draining two nodes moves everything off them, keeping 3 replicas.
    #[test]
    fn grow_and_drain_settle_balanced_at_full_replication() {
        let mut p = Placement::new(vec![1, 2, 3], 16, 3);
        p.add_node(4);
        p.add_node(5);
        let all: BTreeSet<u64> = [1, 2, 3, 4, 5].into();
        settle(&mut p, &BTreeMap::new(), &all);
        let l = loads(&p);
        assert_eq!(l.values().sum::<usize>(), 48);
        assert!(
            l.values().max().unwrap() - l.values().min().unwrap() <= 1,
            "{l:?}"
        );
        assert_eq!(p.meta_voters().len(), 5);
        // Preferred leaders even out too.
        while let Some((g, m)) = rebalance_preferred(&p, &all) {
            p.set_members(g, m).unwrap();
        }
        let mut prefs = BTreeMap::<u64, usize>::new();
        for s in 0..16 {
            *prefs.entry(p.preferred_leader(s)).or_default() += 1;
        }
        assert!(
            prefs.values().max().unwrap() - prefs.values().min().unwrap() <= 1,
            "{prefs:?}"
        );

        let retiring: BTreeMap<u64, Retire> = [(4, Retire::Remove), (5, Retire::Drain)].into();
        let rest: BTreeSet<u64> = [1, 2, 3].into();
        settle(&mut p, &retiring, &rest);
        for s in 0..16 {
            let m = p.replicas_of(s);
            assert_eq!(m.len(), 3);
            assert!(m.iter().all(|n| rest.contains(n)), "{m:?}");
        }
        assert_eq!(p.meta_voters().len(), 3);
        p.remove_node(4).unwrap();
        p.remove_node(5).unwrap();
    }

    /// A dead node's replicas are rebuilt on the replacement; with no
    /// replacement the groups shrink to the members left.
    #[test]
    fn a_dead_node_is_replaced() {
        let mut p = Placement::new(vec![1, 2, 3], 8, 3);
        let dead: BTreeMap<u64, Retire> = [(2, Retire::Dead)].into();
        p.add_node(4);
        let live: BTreeSet<u64> = [1, 3, 4].into();
        settle(&mut p, &dead, &live);
        assert!(p.groups_of(2).is_empty());
        for s in 0..8 {
            assert_eq!(p.replicas_of(s).len(), 3);
        }
        // A group recorded with four replicas (a joint configuration) is
        // brought back to three.
        let mut over = Placement::new(vec![1, 2, 3, 4], 4, 3);
        over.set_members(shard_group(0), vec![1, 2, 3, 4]).unwrap();
        settle(&mut over, &BTreeMap::new(), &[1, 2, 3, 4].into());
        assert_eq!(over.replicas_of(0).len(), 3);
        assert_eq!(over.preferred_leader(0), 1);
        let mut small = Placement::new(vec![1, 2, 3], 4, 3);
        settle(&mut small, &dead, &[1, 3].into());
        for s in 0..4 {
            assert_eq!(small.replicas_of(s).len(), 2);
        }
    }
}
