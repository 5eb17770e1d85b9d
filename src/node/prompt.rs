//! The commands a person types at this node's prompt (parsed in
//! `crate::prompt`), carried out: `set` and `get` here or forwarded to the
//! leader, `status`, `log`, `transfer`, `partition`/`heal`, `slow`/`fast`.

use super::*;

impl Node {
    pub(super) fn on_prompt_line(&mut self, line: &str) {
        match parse_prompt(line) {
            PromptCommand::Set(value) => self.prompt_set(value),
            PromptCommand::Get => self.prompt_get(),
            PromptCommand::Status => self.print_status(),
            PromptCommand::Log(count) => self.print_log(count),
            PromptCommand::Transfer(target) => self.prompt_transfer(target),
            PromptCommand::Add(address) => self.add_member(&address, Waiter::Prompt),
            PromptCommand::Remove(id) => self.remove_member(id, Waiter::Prompt),
            PromptCommand::Partition(peers) => self.prompt_partition(&peers),
            PromptCommand::Heal => self.prompt_heal(),
            PromptCommand::Slow(factor) => self.set_clock(factor),
            PromptCommand::Help => HELP.iter().for_each(|line| console::say(line)),
            PromptCommand::Empty => {}
            PromptCommand::Usage(line) => say!("{line}"),
            PromptCommand::Unknown(word) => {
                say!("Unknown command '{word}'; type 'help' for the list of commands")
            }
        }
        console::show_prompt();
    }

    /// Here if this node leads and nothing typed earlier is still on its
    /// way to a leader; else through the prompt's queue, in order.
    fn prompt_set(&mut self, value: String) {
        if self.raft.role() == RoleKind::Leader && self.forwards.is_idle() {
            self.propose(value, Waiter::Prompt);
            return;
        }
        self.forward(ClientCommand::Set { value }, "set");
    }

    fn prompt_get(&mut self) {
        if self.raft.role() == RoleKind::Leader && self.forwards.is_idle() {
            self.read(Waiter::Prompt);
            return;
        }
        self.forward(ClientCommand::Get, "get");
    }

    fn forward(&mut self, command: ClientCommand, what: &str) {
        let id = self.raft.id().clone();
        let Some(leader) = self.raft.leader().cloned() else {
            say!("Node {id} knows no leader yet; {}", self.why_no_leader());
            return;
        };
        let Some(leader_address) = self.addresses.get(&leader).cloned() else {
            say!("Node {id} does not know the address of leader {leader}; try again in a moment");
            return;
        };
        if leader != id {
            say!("Node {id} is not the leader; forwarding {what} to leader {leader}");
        }
        // The leader first; the others let the request follow a new
        // leader's hint if leadership moves meanwhile.
        let mut addresses = vec![leader_address];
        addresses.extend(
            self.addresses
                .iter()
                .filter(|(member, _)| **member != leader && **member != id)
                .map(|(_, address)| address.clone()),
        );
        self.forwards.send(id, addresses, command);
    }

    /// "a leader needs 2 of the 3 members; 1 reachable now: try again in a
    /// moment" (or "start the others").
    fn why_no_leader(&self) -> String {
        let voters = self.raft.membership().voters.len();
        let majority = voters / 2 + 1;
        let window = self.election_timeout.1 * 2 * self.clock_factor();
        let id = self.raft.id();
        let reachable = self
            .raft
            .membership()
            .voters
            .keys()
            .filter(|v| *v == id || self.watch.heard_within(v, window))
            .count();
        if reachable < majority {
            let verb = if reachable == 1 { "is" } else { "are" };
            format!(
                "electing one needs {majority} of the {voters} members, and {reachable} {verb} running and in touch: start the others"
            )
        } else {
            "an election is under way; try again in a moment".to_string()
        }
    }

    fn prompt_transfer(&mut self, target: NodeId) {
        if self.raft.role() != RoleKind::Leader {
            let id = self.raft.id();
            match self.raft.leader() {
                Some(leader) => {
                    say!("Node {id} is not the leader; type transfer at leader {leader}")
                }
                None => say!("Node {id} is not the leader, and knows no leader yet"),
            }
            return;
        }
        self.transfer(target, Waiter::Prompt);
    }

    fn prompt_partition(&mut self, peers: &[NodeId]) {
        let id = self.raft.id().clone();
        if peers.contains(&id) {
            say!(
                "Node {id} cannot be partitioned from itself; name other members, or none for all"
            );
            return;
        }
        self.partition.cut(peers);
        say!(
            "Node {id} partitioned from {}: their messages to and from it are dropped until heal",
            self.partition.describe()
        );
    }

    fn prompt_heal(&mut self) {
        let id = self.raft.id().clone();
        let (sent, received) = self.partition.dropped;
        if self.partition.heal() {
            say!("Node {id} healed: talking to every peer again ({sent} messages out and {received} in were dropped)");
        } else {
            say!("Node {id} is not partitioned; nothing to heal");
        }
    }

    fn print_status(&self) {
        let s = self.status();
        let leader = s.leader.map_or("unknown".to_string(), |l| l.to_string());
        let learners = if s.learners.is_empty() {
            String::new()
        } else {
            format!("; learners {}", list(s.learners.iter()))
        };
        say!(
            "Node {}: {} in term {}, leader {leader}; members {}{learners}",
            s.id,
            s.role,
            s.term,
            list(s.members.iter()),
        );
        say!(
            "  commit index {}, last applied {}, last log index {}; value: {}",
            s.commit_index,
            s.last_applied,
            s.last_log_index,
            self.value_for_person()
        );
        if !s.last_heard_ms.is_empty() {
            let heard: Vec<String> = s
                .last_heard_ms
                .iter()
                .map(|(peer, ms)| format!("{peer} {}", heard_ago(*ms)))
                .collect();
            say!("  last heard from {}", heard.join(", "));
        }
        // A leader: how it sends to each follower (Probe, Replicate or
        // Snapshot) and how far each has got.
        for (follower, progress) in self.raft.progress().into_iter().flatten() {
            say!("  sending to {follower}: {progress}");
        }
        if self.partition.is_cut() {
            say!(
                "  partitioned from {} (heal to end it)",
                self.partition.describe()
            );
        }
        if self.slow_factor > 1 {
            say!(
                "  clock at {} (fast to end it)",
                clock_name(self.slow_factor)
            );
        }
    }

    /// The value, or why it is not known yet: a restarted node holds
    /// entries but learns which are committed only from a leader, and until
    /// then its value is that of the last entry it knows committed.
    fn value_for_person(&self) -> String {
        let behind = self.raft.last_applied() < self.raft.log().last_index();
        if behind && !self.watch.met_a_leader && self.raft.role() != RoleKind::Leader {
            return format!(
                "not yet known (the log holds entries up to index {}; which are committed, a leader will tell)",
                self.raft.log().last_index()
            );
        }
        match self.state_machine.read() {
            value if value.is_empty() => "(empty)".to_string(),
            value => value,
        }
    }

    fn print_log(&self, count: usize) {
        let rows = self.log_rows(count);
        let id = self.raft.id();
        let snapshot = self.raft.snapshot_index();
        if rows.is_empty() {
            match snapshot {
                0 => say!("Node {id} log is empty"),
                s => say!("Node {id} log is empty after the snapshot up to index {s}"),
            }
            return;
        }
        for line in log_table(&rows) {
            console::say(&line);
        }
        if snapshot > 0 && rows.first().is_some_and(|r| r.index == snapshot + 1) {
            say!("  (entries up to index {snapshot} are compacted into a snapshot)");
        }
    }

    /// How many times slower than real time the protocol's clock runs.
    pub(super) fn clock_factor(&self) -> u32 {
        u32::try_from(self.slow_factor).unwrap_or(u32::MAX)
    }

    /// `slow` / `fast`: the tick comes `factor` times less often, so every
    /// timeout (counted in ticks by the core) is `factor` times longer.
    fn set_clock(&mut self, factor: u64) {
        let id = self.raft.id().clone();
        if factor == self.slow_factor {
            say!("Node {id} clock already runs at {}", clock_name(factor));
            return;
        }
        self.slow_factor = factor;
        self.ticker = tick(Duration::from_millis(self.tick_ms * factor));
        let (min, max) = self.election_timeout;
        say!(
            "Node {id} clock now runs at {}: election timeout {}-{} ms",
            clock_name(factor),
            min.as_millis() * u128::from(factor),
            max.as_millis() * u128::from(factor)
        );
    }
}

/// "real time" or "1/20 speed".
fn clock_name(factor: u64) -> String {
    if factor <= 1 {
        "real time".to_string()
    } else {
        format!("1/{factor} speed")
    }
}
