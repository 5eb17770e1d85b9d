//! The simulated network between Raft nodes.
//!
//! Raft assumes an asynchronous network: messages may be delayed without
//! bound, arrive out of order, arrive twice, or not at all (§5.1: "RPCs ...
//! may be lost, duplicated or reordered"). This network does all of that,
//! drawing every choice from the run's one seeded RNG, and can cut links to
//! make partitions. Links are directed, so a partition can be one-way: A
//! hears B while B does not hear A, which real networks (and firewalls) do.

use super::{node_id, TICK};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeSet;

/// How badly the network behaves. Delays are in virtual time units
/// (`TICK` per tick).
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// A message normally arrives after a delay drawn from this range.
    pub delay: (u64, u64),
    /// Chance that a message is lost.
    pub drop_rate: f64,
    /// Chance that a message is delivered twice (each copy with its own
    /// delay, so the copies may also swap places with other messages).
    pub duplicate_rate: f64,
    /// Chance that a message is held back much longer than usual, so that
    /// messages sent after it overtake it.
    pub long_delay_rate: f64,
    pub long_delay: (u64, u64),
}

impl NetworkConfig {
    /// Every message arrives, in a tenth of a tick to one tick.
    pub fn reliable() -> NetworkConfig {
        NetworkConfig {
            delay: (TICK / 10, TICK),
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            long_delay_rate: 0.0,
            long_delay: (TICK, 10 * TICK),
        }
    }

    /// Loses one message in ten, duplicates one in twenty, and holds one in
    /// twenty back for up to 20 ticks.
    pub fn unreliable() -> NetworkConfig {
        NetworkConfig {
            delay: (TICK / 10, 2 * TICK),
            drop_rate: 0.10,
            duplicate_rate: 0.05,
            long_delay_rate: 0.05,
            long_delay: (2 * TICK, 20 * TICK),
        }
    }
}

/// The links between nodes and how they behave.
pub struct Network {
    pub config: NetworkConfig,
    size: usize,
    /// Directed links `(from, to)` that currently lose every message.
    cut: BTreeSet<(usize, usize)>,
}

impl Network {
    pub fn new(size: usize, config: NetworkConfig) -> Network {
        Network {
            config,
            size,
            cut: BTreeSet::new(),
        }
    }

    /// True if a message from `from` can reach `to` right now.
    pub fn connected(&self, from: usize, to: usize) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// When the copies of a message sent now will arrive: none if it is
    /// lost, two if it is duplicated.
    pub fn arrival_delays(&self, rng: &mut StdRng) -> Vec<u64> {
        let config = &self.config;
        if config.drop_rate > 0.0 && rng.random_bool(config.drop_rate) {
            return Vec::new();
        }
        let copies = if config.duplicate_rate > 0.0 && rng.random_bool(config.duplicate_rate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                if config.long_delay_rate > 0.0 && rng.random_bool(config.long_delay_rate) {
                    rng.random_range(config.long_delay.0..=config.long_delay.1)
                } else {
                    rng.random_range(config.delay.0..=config.delay.1)
                }
            })
            .collect()
    }

    /// A new machine is plugged in, with links to every node.
    pub fn add_node(&mut self) {
        self.size += 1;
    }

    /// Every link works again.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&mut self, node: usize) {
        for peer in 0..self.size {
            if peer != node {
                self.cut.insert((node, peer));
                self.cut.insert((peer, node));
            }
        }
    }

    /// Restores every link to and from `node` (others stay as they are).
    pub fn reconnect(&mut self, node: usize) {
        self.cut.retain(|&(from, to)| from != node && to != node);
    }

    /// A symmetric partition: nodes in different groups cannot talk. Nodes
    /// in no group keep whatever links they had.
    pub fn split(&mut self, groups: &[Vec<usize>]) {
        for (i, group) in groups.iter().enumerate() {
            for other in &groups[i + 1..] {
                self.cut_one_way(group, other);
                self.cut_one_way(other, group);
            }
        }
    }

    /// Messages from `from` to `to` are lost; the other direction works.
    pub fn cut_one_way(&mut self, from: &[usize], to: &[usize]) {
        for &a in from {
            for &b in to {
                if a != b {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// `left` and `right` cannot talk to each other, but `bridge` talks to
    /// both: the classic case where the bridge node keeps hearing two sides
    /// that cannot hear each other.
    pub fn bridge(&mut self, left: &[usize], right: &[usize], bridge: usize) {
        let left: Vec<usize> = left.iter().copied().filter(|&n| n != bridge).collect();
        let right: Vec<usize> = right.iter().copied().filter(|&n| n != bridge).collect();
        self.split(&[left, right]);
    }

    /// The cut links, for the trace: `n1->n2 n2->n1 ...`, or `none`.
    pub fn describe_cuts(&self) -> String {
        if self.cut.is_empty() {
            return "none".to_string();
        }
        let links: Vec<String> = self
            .cut
            .iter()
            .map(|&(from, to)| format!("{}->{}", node_id(from), node_id(to)))
            .collect();
        links.join(" ")
    }
}
