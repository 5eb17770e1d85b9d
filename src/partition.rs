//! `partition` and `heal` at a node's prompt (and `raft demo`'s
//! `partition <id>`): cut this node off from some or all of its peers, to
//! watch Raft cope with a network split, then join it back.
//!
//! How it works: the driver drops the messages itself, both ways, just
//! outside the core. [`Node::send`](crate::node) asks [`Partition::drops`]
//! before a message reaches the peer writers, and the inbound path asks it
//! before a peer's message reaches the core. To Raft this is a network that
//! loses every packet between this node and those peers; connections stay
//! open, so healing is immediate. The core (`src/core/`) knows nothing of
//! it, and client connections are untouched: a person can still ask a
//! cut-off node for its status, or watch a cut-off leader fail to commit.
//!
//! Dropping at one end is enough for a whole split: a node cut off from all
//! its peers neither hears nor is heard, whatever the others do.

use crate::message::NodeId;
use std::collections::BTreeSet;

/// Which peers this node's traffic is dropped with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Partition {
    cut: Cut,
    /// Messages dropped since the last `heal`: sent, received.
    pub dropped: (u64, u64),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Cut {
    #[default]
    Nobody,
    Everyone,
    Peers(BTreeSet<NodeId>),
}

impl Partition {
    /// Cuts this node off from `peers`, or from every peer if it is empty.
    /// Replaces any earlier cut.
    pub fn cut(&mut self, peers: &[NodeId]) {
        self.cut = if peers.is_empty() {
            Cut::Everyone
        } else {
            Cut::Peers(peers.iter().cloned().collect())
        };
    }

    /// Ends the partition. Returns whether there was one.
    pub fn heal(&mut self) -> bool {
        let was_cut = self.is_cut();
        self.cut = Cut::Nobody;
        self.dropped = (0, 0);
        was_cut
    }

    pub fn is_cut(&self) -> bool {
        self.cut != Cut::Nobody
    }

    /// Whether traffic with `peer` is dropped.
    pub fn drops(&self, peer: &NodeId) -> bool {
        match &self.cut {
            Cut::Nobody => false,
            Cut::Everyone => true,
            Cut::Peers(peers) => peers.contains(peer),
        }
    }

    /// Drops an outgoing message to `peer`? Counts it if so.
    pub fn drops_sent(&mut self, peer: &NodeId) -> bool {
        let drop = self.drops(peer);
        self.dropped.0 += u64::from(drop);
        drop
    }

    /// Drops an incoming message from `peer`? Counts it if so.
    pub fn drops_received(&mut self, peer: &NodeId) -> bool {
        let drop = self.drops(peer);
        self.dropped.1 += u64::from(drop);
        drop
    }

    /// "every peer", "8001, 8002", or "nobody".
    pub fn describe(&self) -> String {
        match &self.cut {
            Cut::Nobody => "nobody".into(),
            Cut::Everyone => "every peer".into(),
            Cut::Peers(peers) => {
                let names: Vec<&str> = peers.iter().map(NodeId::as_str).collect();
                names.join(", ")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s)
    }

    #[test]
    fn a_cut_drops_both_ways_until_healed() {
        let mut p = Partition::default();
        assert!(!p.drops(&id("8001")));
        p.cut(&[]);
        assert!(p.drops_sent(&id("8001")) && p.drops_received(&id("8002")));
        assert_eq!(p.dropped, (1, 1));
        assert!(p.heal());
        assert!(!p.drops(&id("8001")));
        assert!(!p.heal(), "healing twice says nothing was cut");
    }

    #[test]
    fn a_cut_from_some_peers_keeps_the_others() {
        let mut p = Partition::default();
        p.cut(&[id("8002")]);
        assert!(p.drops(&id("8002")));
        assert!(!p.drops(&id("8001")));
        assert_eq!(p.describe(), "8002");
    }
}
