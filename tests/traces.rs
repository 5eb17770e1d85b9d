//! Protocol traces: the walkthroughs in `tests/traces/`, checked word for word.
//!
//! Each file is a script of steps (start nodes, tick, propose, deliver,
//! partition, crash, restart ...), each followed by `----` and exactly what
//! the step made the cluster do: the messages sent, in the crate's notation
//! (`8000→8001 AppendEntries(term 1, prev 0@0, entries [1@1 noop], commit 0)`),
//! what each node persisted and applied, and what it became. The nodes are
//! real cores driven by the real driver step ([`raft::driver`]) over an
//! in-memory disk and network; nothing is random but the election timeouts,
//! which are seeded.
//!
//! When a change of behaviour is intended, rewrite the expected output with
//!
//! ```text
//! REWRITE=1 cargo test --test traces
//! ```
//!
//! and read the diff (`git diff tests/traces/`) before committing it: it is
//! the change in behaviour, step by step. `RUN=figure8.txt cargo test --test
//! traces` runs one file.
//!
//! The steps (arguments are `key=value`, lists `key=(a,b)`):
//!
//! - `start ids=(8000,8001,8002) [pre-vote=false] [check-quorum=false]
//!   [snapshot-chunk=N]`: voters with empty disks. `join id=8003` starts a
//!   node with no membership, as a server about to be added.
//! - `tick id=8000 [n=1]`: time passes for one node; `campaign id=8000`
//!   ticks it until its election timeout fires.
//! - `tick-all [n=1]`: time passes for every running node.
//! - `propose id=8000 value=foo`, `read id=8000`, `transfer id=8000 to=8001`,
//!   `add id=8000 node=8003`, `remove id=8000 node=8002`, `compact id=8000`:
//!   requests to a node.
//! - `deliver [from=8000] [to=8001]`: delivers the messages in flight (those
//!   matching), oldest first; what they cause is sent but not yet
//!   delivered. `stabilize` delivers until nothing is in flight.
//! - `drop [from=8000] [to=8001]`: loses the messages in flight that match.
//! - `partition id=8002` cuts a node off (messages to and from it are lost);
//!   `heal` restores every link.
//! - `crash id=8001` loses everything not on its disk; `restart id=8001`
//!   brings it back from its disk.
//! - `status`: each node's role, term, commit index and log.

use datadriven::{walk, TestCase};
use raft::core::{Config, Raft, ReadOutcome, Ready};
use raft::driver::{self, Host};
use raft::message::{Entry, HardState, Message, MessageBody, NodeId, ShowEntries, Snapshot};
use raft::state_machine::{StateMachine, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Most ticks `campaign` waits for an election timeout.
const MAX_CAMPAIGN_TICKS: u64 = 1000;
/// Most rounds of delivery `stabilize` runs before calling the cluster stuck.
const MAX_STABILIZE_ROUNDS: usize = 100;

#[test]
fn traces() {
    walk("tests/traces", |file| {
        let mut cluster = Cluster::default();
        file.run(|case| -> String {
            match cluster.run(case) {
                Ok(()) => {}
                Err(e) => cluster.out.push(format!("error: {e}")),
            }
            let lines = std::mem::take(&mut cluster.out);
            lines.iter().map(|line| format!("{line}\n")).collect()
        })
    });
}

/// What a node has on stable storage.
#[derive(Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// The entries after the snapshot.
    log: Vec<Entry>,
}

impl Disk {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.last_included_index)
    }

    /// As `Storage::save_snapshot`: keeps the entries after the snapshot if
    /// they follow from it (Figure 13, receiver rule 6), else none (rule 7).
    fn save_snapshot(&mut self, snapshot: &Snapshot) {
        let base = self.snapshot_index();
        let index = snapshot.last_included_index;
        let keep = index > base
            && self
                .log
                .get((index - base - 1) as usize)
                .is_some_and(|e| e.term == snapshot.last_included_term);
        if keep {
            self.log.drain(..(index - base) as usize);
        } else if index > base {
            self.log.clear();
        }
        self.snapshot = Some(snapshot.clone());
    }

    /// As `Storage::append`: entries at or below the last stored index
    /// replace the stored suffix from there on.
    fn append(&mut self, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            let keep = first.index.saturating_sub(self.snapshot_index() + 1);
            self.log.truncate(keep as usize);
            self.log.extend_from_slice(entries);
        }
    }
}

/// One machine: a core (while up), its disk and its state machine, and
/// what it says, which the cluster collects.
struct Machine {
    config: Config,
    raft: Option<Raft>,
    disk: Disk,
    state: Value,
    /// Messages sent, for the cluster to put in flight.
    outbox: Vec<Message>,
    /// Lines for the trace.
    said: Vec<String>,
}

impl Host for Machine {
    type Error = String;

    fn raft(&mut self) -> &mut Raft {
        self.raft
            .as_mut()
            .expect("only a running machine is driven")
    }

    fn persist(&mut self, ready: &Ready) -> Result<(), String> {
        let id = &self.config.id;
        if let Some(snapshot) = &ready.snapshot {
            self.said.push(format!(
                "{id} saves the leader's snapshot up to {}@{}",
                snapshot.last_included_index, snapshot.last_included_term
            ));
            self.disk.save_snapshot(snapshot);
        }
        if let Some(hard_state) = &ready.hard_state {
            let vote = hard_state
                .voted_for
                .as_ref()
                .map_or("-".into(), |v| v.0.clone());
            self.said.push(format!(
                "{id} persists term {}, vote {vote}",
                hard_state.current_term
            ));
            self.disk.hard_state = hard_state.clone();
        }
        if !ready.entries.is_empty() {
            self.said.push(format!(
                "{id} persists entries {}",
                ShowEntries(&ready.entries)
            ));
            self.disk.append(&ready.entries);
        }
        Ok(())
    }

    fn send(&mut self, msg: Message) {
        self.said.push(msg.to_string());
        self.outbox.push(msg);
    }

    fn apply(&mut self, ready: Ready) -> Result<(), String> {
        let id = &self.config.id;
        if let Some(snapshot) = &ready.snapshot {
            self.state.restore(&snapshot.data)?;
            self.said.push(format!(
                "{id} restores its state from the snapshot: value {:?}",
                self.state.read()
            ));
        }
        for entry in &ready.committed {
            if let raft::message::EntryData::Command(command) = &entry.data {
                self.state.apply(entry.index, command);
            }
            self.said.push(format!("{id} applies {entry}"));
        }
        for (read, outcome) in &ready.reads {
            self.said.push(match outcome {
                ReadOutcome::Ready { index } => format!(
                    "{id} answers read {read} at index {index}: value {:?}",
                    self.state.read()
                ),
                ReadOutcome::Failed => format!("{id} fails read {read}"),
            });
        }
        for event in &ready.events {
            self.said.push(format!("{id} {event}"));
        }
        Ok(())
    }
}

/// The machines and the messages in flight between them.
#[derive(Default)]
struct Cluster {
    machines: BTreeMap<NodeId, Machine>,
    in_flight: VecDeque<Message>,
    cut_off: BTreeSet<NodeId>,
    next_read: u64,
    out: Vec<String>,
}

impl Cluster {
    fn run(&mut self, case: &mut TestCase) -> Result<(), String> {
        match case.directive.as_str() {
            "start" => {
                let ids: Vec<String> = case.take_args("ids").map_err(|e| format!("ids: {e}"))?;
                let voters: Vec<NodeId> = ids.into_iter().map(NodeId).collect();
                let mut config = Config::new(voters[0].clone(), voters.clone());
                config.pre_vote = flag(case, "pre-vote", true)?;
                config.check_quorum = flag(case, "check-quorum", true)?;
                for id in &voters {
                    self.start(Config {
                        id: id.clone(),
                        ..config.clone()
                    });
                }
            }
            "join" => {
                let id = NodeId(take(case, "id")?);
                self.start(Config::new(id, Vec::new()));
            }
            "tick" => {
                let id = node(case)?;
                for _ in 0..count(case)? {
                    self.machine(&id)?.raft().tick();
                    self.drive(&id)?;
                }
            }
            "tick-all" => {
                for _ in 0..count(case)? {
                    for id in self.running() {
                        self.machine(&id)?.raft().tick();
                        self.drive(&id)?;
                    }
                }
            }
            "campaign" => {
                let id = node(case)?;
                let term = self.machine(&id)?.raft().current_term();
                for ticks in 1..=MAX_CAMPAIGN_TICKS {
                    let raft = self.machine(&id)?.raft();
                    raft.tick();
                    if raft.has_ready() {
                        self.out
                            .push(format!("{id}'s election timeout fires after {ticks} ticks"));
                        return self.drive(&id);
                    }
                }
                return Err(format!("{id} did not campaign from term {term}"));
            }
            "propose" => {
                let id = node(case)?;
                let value = take(case, "value")?;
                let index = self.machine(&id)?.raft().propose(value.clone());
                self.out.push(format!(
                    "{id} is asked to append {value:?}: {}",
                    outcome(index)
                ));
                self.drive(&id)?;
            }
            "read" => {
                let id = node(case)?;
                self.next_read += 1;
                let read = self.next_read;
                let answer = self.machine(&id)?.raft().read_index(read);
                self.out
                    .push(format!("{id} takes read {read}: {}", outcome(answer)));
                self.drive(&id)?;
            }
            "transfer" => {
                let id = node(case)?;
                let to = NodeId(take(case, "to")?);
                let answer = self.machine(&id)?.raft().transfer_leadership(to);
                self.out
                    .push(format!("{id} transfers leadership: {}", outcome(answer)));
                self.drive(&id)?;
            }
            "add" => {
                let id = node(case)?;
                let new = NodeId(take(case, "node")?);
                let address = format!("127.0.0.1:{new}");
                let answer = self.machine(&id)?.raft().add_learner(new, address);
                self.out
                    .push(format!("{id} adds a learner: {}", outcome(answer)));
                self.drive(&id)?;
            }
            "remove" => {
                let id = node(case)?;
                let gone = NodeId(take(case, "node")?);
                let answer = self.machine(&id)?.raft().remove_member(gone);
                self.out
                    .push(format!("{id} removes a member: {}", outcome(answer)));
                self.drive(&id)?;
            }
            "compact" => {
                let id = node(case)?;
                self.compact(&id)?;
            }
            "deliver" => {
                let (from, to) = (maybe_node(case, "from")?, maybe_node(case, "to")?);
                self.deliver(from, to)?;
            }
            "drop" => {
                let (from, to) = (maybe_node(case, "from")?, maybe_node(case, "to")?);
                let (lost, kept) = std::mem::take(&mut self.in_flight)
                    .into_iter()
                    .partition(|m| matches(m, &from, &to));
                self.in_flight = kept;
                for msg in Vec::from(lost) {
                    self.out.push(format!("lost: {msg}"));
                }
            }
            "stabilize" => {
                for _ in 0..MAX_STABILIZE_ROUNDS {
                    if self.in_flight.is_empty() {
                        return Ok(());
                    }
                    self.deliver(None, None)?;
                }
                return Err("still busy after stabilizing".into());
            }
            "partition" => {
                let id = node(case)?;
                self.out.push(format!("{id} is cut off"));
                self.cut_off.insert(id);
            }
            "heal" => {
                self.cut_off.clear();
                self.out.push("every link is back".into());
            }
            "crash" => {
                let id = node(case)?;
                let machine = self.machine(&id)?;
                machine.raft = None;
                self.in_flight.retain(|m| m.to != id);
                self.out.push(format!("{id} crashes"));
            }
            "restart" => {
                let id = node(case)?;
                let machine = self.machines.get_mut(&id).ok_or("no such node")?;
                let disk = &machine.disk;
                machine.state = Value::default();
                if let Some(snapshot) = &disk.snapshot {
                    machine.state.restore(&snapshot.data)?;
                }
                machine.raft = Some(Raft::restore(
                    machine.config.clone(),
                    disk.hard_state.clone(),
                    disk.snapshot.clone(),
                    disk.log.clone(),
                    seed(&id),
                ));
                self.out.push(format!("{id} restarts from its disk"));
                self.drive(&id)?;
            }
            "status" => {
                for machine in self.machines.values_mut() {
                    let line = match &machine.raft {
                        None => format!("{} is down", machine.config.id),
                        Some(raft) => format!(
                            "{} {} term {} commit {} log {} value {:?}",
                            raft.id(),
                            raft.role(),
                            raft.current_term(),
                            raft.commit_index(),
                            show_log(raft),
                            machine.state.read()
                        ),
                    };
                    self.out.push(line);
                    let leading = machine.raft.as_ref().and_then(|raft| raft.progress());
                    for (follower, progress) in leading.into_iter().flatten() {
                        self.out.push(format!("  {follower}: {progress}"));
                    }
                }
            }
            other => return Err(format!("unknown step {other:?}")),
        }
        Ok(())
    }

    fn start(&mut self, config: Config) {
        let id = config.id.clone();
        let raft = Raft::new(config.clone(), HardState::default(), Vec::new(), seed(&id));
        self.machines.insert(
            id,
            Machine {
                config,
                raft: Some(raft),
                disk: Disk::default(),
                state: Value::default(),
                outbox: Vec::new(),
                said: Vec::new(),
            },
        );
    }

    fn machine(&mut self, id: &NodeId) -> Result<&mut Machine, String> {
        match self.machines.get_mut(id) {
            Some(machine) if machine.raft.is_some() => Ok(machine),
            Some(_) => Err(format!("{id} is down")),
            None => Err(format!("no node {id}")),
        }
    }

    fn running(&self) -> Vec<NodeId> {
        let up = self.machines.values().filter(|m| m.raft.is_some());
        up.map(|m| m.config.id.clone()).collect()
    }

    /// Runs the driver step on one node and collects what it said and sent.
    fn drive(&mut self, id: &NodeId) -> Result<(), String> {
        let machine = self.machine(id)?;
        driver::handle_ready(machine)?;
        let said = std::mem::take(&mut machine.said);
        let sent = std::mem::take(&mut machine.outbox);
        self.out.extend(said);
        self.in_flight.extend(sent);
        Ok(())
    }

    /// Delivers the matching messages now in flight, oldest first.
    fn deliver(&mut self, from: Option<NodeId>, to: Option<NodeId>) -> Result<(), String> {
        let (now, later) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|m| matches(m, &from, &to));
        self.in_flight = later;
        for msg in Vec::from(now) {
            let down = self.machines.get(&msg.to).is_none_or(|m| m.raft.is_none());
            if self.cut_off.contains(&msg.from) || self.cut_off.contains(&msg.to) || down {
                self.out.push(format!("lost: {msg}"));
                continue;
            }
            let to = msg.to.clone();
            let request = is_request(&msg);
            let shown = request.then(|| msg.to_string());
            let before = self.out.len();
            self.machine(&to)?.raft().step(msg);
            self.drive(&to)?;
            if let Some(msg) = shown.filter(|_| self.out.len() == before) {
                self.out.push(format!("{to} drops {msg}"));
            }
        }
        Ok(())
    }

    /// §7: snapshots the state machine at the last applied entry.
    fn compact(&mut self, id: &NodeId) -> Result<(), String> {
        let machine = self.machine(id)?;
        let data = machine.state.snapshot();
        let raft = machine.raft();
        let applied = raft.last_applied();
        match raft.compact(applied, data) {
            Ok(snapshot) => {
                machine.disk.save_snapshot(&snapshot);
                self.out.push(format!(
                    "{id} compacts its log up to {applied} into a snapshot"
                ));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A request's answer: `at index 3`, `accepted`, or `refused: NotLeader ...`.
fn outcome<T: std::fmt::Debug, E: std::fmt::Debug>(answer: Result<T, E>) -> String {
    match answer {
        Ok(index) => {
            let index = format!("{index:?}");
            if index == "()" {
                "accepted".into()
            } else {
                format!("accepted at index {index}")
            }
        }
        Err(e) => format!("refused: {e:?}"),
    }
}

/// Requests get an answer unless the receiver drops them; responses often
/// change nothing visible.
fn is_request(msg: &Message) -> bool {
    match msg.body {
        MessageBody::RequestVote { .. }
        | MessageBody::PreVote { .. }
        | MessageBody::AppendEntries { .. }
        | MessageBody::InstallSnapshot { .. }
        | MessageBody::TimeoutNow => true,
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::PreVoteResponse { .. }
        | MessageBody::AppendEntriesResponse { .. }
        | MessageBody::InstallSnapshotResponse { .. } => false,
    }
}

fn matches(msg: &Message, from: &Option<NodeId>, to: &Option<NodeId>) -> bool {
    from.as_ref().is_none_or(|f| *f == msg.from) && to.as_ref().is_none_or(|t| *t == msg.to)
}

/// The whole log as `[1@1 noop, 2@1 "x"]`, after `snapshot 5 then` if
/// compacted.
fn show_log(raft: &Raft) -> String {
    let log = raft.log();
    let entries = log.slice(log.first_index(), log.last_index());
    let list: Vec<String> = entries.iter().map(Entry::to_string).collect();
    match raft.snapshot_index() {
        0 => format!("[{}]", list.join(", ")),
        base => format!("snapshot {base} then [{}]", list.join(", ")),
    }
}

/// The same seed every run: the election timeouts are a function of the id.
fn seed(id: &NodeId) -> u64 {
    id.0.bytes().fold(7, |h, b| h * 31 + u64::from(b))
}

fn take(case: &mut TestCase, key: &str) -> Result<String, String> {
    case.take_arg(key).map_err(|e| format!("{key}: {e}"))
}

fn maybe(case: &mut TestCase, key: &str) -> Result<Option<String>, String> {
    case.try_take_arg(key).map_err(|e| format!("{key}: {e}"))
}

fn node(case: &mut TestCase) -> Result<NodeId, String> {
    take(case, "id").map(NodeId)
}

fn maybe_node(case: &mut TestCase, key: &str) -> Result<Option<NodeId>, String> {
    maybe(case, key).map(|v| v.map(NodeId))
}

fn count(case: &mut TestCase) -> Result<u64, String> {
    match maybe(case, "n")? {
        None => Ok(1),
        Some(n) => n.parse().map_err(|e| format!("n={n}: {e}")),
    }
}

fn flag(case: &mut TestCase, key: &str, default: bool) -> Result<bool, String> {
    match maybe(case, key)? {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| format!("{key}={v}: {e}")),
    }
}
