//! Keeping the connections in step with the membership: a writer to every
//! member and none to anyone else, the listener told whom to take messages
//! from, and the few exceptions Raft needs (a leader this node does not
//! know yet, a removed server still asking for votes), bounded by
//! [`MAX_STRANGER_WRITERS`].

use super::*;

/// The most writers (a thread and a queue each) a node keeps for nodes
/// outside its membership: a leader it has not learned of yet, a removed
/// node still asking for votes. Beyond this the oldest is stopped, so
/// messages claiming to come from many invented nodes cost a bounded number
/// of threads. (Such a writer also stops at the next membership change.)
pub const MAX_STRANGER_WRITERS: usize = 4;

impl Node {
    /// After a membership change (which takes effect when appended, §4.1),
    /// connect to the new members and stop talking to departed ones.
    pub(super) fn sync_membership(&mut self) {
        if *self.raft.membership() == self.membership {
            return;
        }
        let membership = self.raft.membership().clone();
        let id = self.raft.id().clone();
        let was_voter = self.membership.voters.contains_key(&id);
        let is_voter = membership.voters.contains_key(&id);
        let mut others: BTreeMap<NodeId, String> = membership
            .voters
            .iter()
            .chain(membership.learners.iter())
            .filter(|(member, address)| **member != id && !address.is_empty())
            .map(|(member, address)| (member.clone(), address.clone()))
            .collect();
        self.peers.update(&others);
        // `update` stopped every writer to a node outside the membership.
        self.strangers.clear();
        self.members.set(others.keys().cloned().collect());
        // No others in a membership that has voters: a cluster of one, not
        // a joining node that has yet to learn the members.
        self.members
            .set_alone(others.is_empty() && !membership.voters.is_empty());
        if let Some(own) = self.addresses.get(&id).cloned() {
            others.insert(id.clone(), own);
        }
        self.addresses = others;
        let addresses = &self.addresses;
        self.watch
            .heard
            .retain(|peer, _| addresses.contains_key(peer));
        // An entry that only records incarnations changes no member.
        let members_changed = self.membership.voters != membership.voters
            || self.membership.learners != membership.learners;
        if self.membership != Membership::default() && members_changed {
            say!(
                "Node {id} membership now: voters {}; learners {}",
                list(membership.voters.keys()),
                list(membership.learners.keys())
            );
            if is_voter && !was_voter {
                say!("Node {id} is now a voter");
            }
            let was_member = self.membership.contains(&id);
            if was_member && !membership.contains(&id) {
                say!("Node {id} was removed from the cluster; it can be stopped");
            }
        }
        self.membership = membership;
    }

    /// A node may hear from a leader it has no writer for: a joining node
    /// knows only the nodes it was told to join (see `join_seeds`) until the
    /// log entry that adds it arrives, and a member that missed the entry
    /// adding a server does not know that server when it becomes leader
    /// (dissertation §4.1). Either must answer that leader, or it never
    /// catches up. Ids follow from addresses (see `config`), so the address
    /// is known; the writer goes when the membership next changes.
    ///
    /// A stale message (of an older term) is from no leader to follow, so it
    /// gets no writer: the core's answer to it is dropped.
    pub(super) fn reach_leader(&mut self, msg: &Message) {
        if msg.body.is_from_leader() && msg.term >= self.raft.current_term() {
            self.reach_stranger(&msg.from);
        }
    }

    /// Starts a writer to `id`, which is not a member, if it has none:
    /// keeping at most [`MAX_STRANGER_WRITERS`] such writers, stopping the
    /// oldest first. Ids follow from addresses (see `config`).
    pub(super) fn reach_stranger(&mut self, id: &NodeId) {
        if self.peers.has(id) {
            return;
        }
        let address = match crate::config::parse_address(id.as_str()) {
            Ok((parsed, address)) if parsed == *id => address,
            _ => return debug!("cannot tell the address of {id}; not sending to it"),
        };
        if self.strangers.len() >= MAX_STRANGER_WRITERS {
            if let Some(oldest) = self.strangers.pop_front() {
                debug!("stopping the writer to non-member {oldest} to make room for {id}");
                self.peers.remove(&oldest);
            }
        }
        self.peers.add(id, &address);
        self.strangers.push_back(id.clone());
    }

    /// Sends a message, first starting a writer to a node this one has none
    /// for when it is a leader's AppendEntries: the core sends one to a
    /// removed server that still asks for votes, so that it learns it was
    /// removed (see `Raft::step`). Ids follow addresses (see `config`).
    pub(super) fn send(&mut self, msg: Message) {
        if self.partition.drops_sent(&msg.to) {
            return;
        }
        if matches!(msg.body, MessageBody::AppendEntries { .. }) {
            self.reach_stranger(&msg.to);
        }
        self.peers.send(msg);
    }
}
