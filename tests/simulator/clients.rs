//! Simulated clients, the history they record, and its linearizability check.
//!
//! Each client does one operation at a time on the replicated register: a
//! `set` of a value no one else ever writes, or a `get`. It sends to the
//! node it believes leads, follows redirects, and records in a shared
//! history when each operation was invoked and what came back.
//!
//! The tricky part is an operation whose outcome is unknown: a `set` whose
//! node crashed, timed out, or stepped down before the entry committed. It
//! may or may not take effect, at any later time. Such an operation stays
//! "in flight" in the history for ever, and the client carries on as a new
//! logical thread (a linearizability checker allows one pending operation
//! per thread). A `get` has no effect, so a client simply retries it until
//! it gets an answer; the answer may come from any attempt.
//!
//! The history and its check live in [`super::history`].

use super::history::History;
use super::{node_id, trace, TICK};
use raft::message::NodeId;
use rand::rngs::StdRng;
use rand::Rng;
use stateright::semantics::register::RegisterRet;
use std::collections::BTreeMap;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Set(String),
    Get,
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The `set` is committed and applied.
    Written,
    /// The value a `get` read.
    Value(String),
    /// Not the leader; try the one named, if any. Nothing was done.
    NotLeader(Option<NodeId>),
    /// The `set` may or may not take effect.
    Unknown(&'static str),
    /// The node stopped leading before the `get` was confirmed; nothing was
    /// read.
    ReadFailed,
}

/// Names one attempt of one client's operation, so that a late answer to an
/// earlier attempt is recognised and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub client: usize,
    pub attempt: u64,
}

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How many clients run at once.
    pub count: usize,
    /// Operations each client does before it stops.
    pub ops: usize,
    /// Percentage of operations that are `get`s.
    pub get_percent: u32,
    /// Pause between two operations of a client, in virtual time units.
    pub think: (u64, u64),
    /// How long a client waits for an answer before giving up on an attempt.
    pub timeout: u64,
}

impl ClientConfig {
    /// No clients at all (scripted scenarios propose directly).
    pub fn none() -> ClientConfig {
        ClientConfig {
            count: 0,
            ops: 0,
            get_percent: 50,
            think: (0, 5 * TICK),
            timeout: 40 * TICK,
        }
    }

    pub fn new(count: usize, ops: usize) -> ClientConfig {
        ClientConfig {
            count,
            ops,
            ..ClientConfig::none()
        }
    }
}

/// What the cluster must do for the clients.
pub enum Action {
    /// Deliver `op` to `node` (after a network delay).
    Send { node: usize, tag: Tag, op: Op },
    /// Call `wake(client)` at this time.
    Wake { client: usize, at: u64 },
    /// Call `timeout(tag)` at this time.
    Timeout { tag: Tag, at: u64 },
}

/// An answer to a request, and the node that gave it. Recorded only when a
/// scenario asks for it (`Clients::record_answers`), to check what one node
/// answered, say a leader cut off from the others.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The client that asked; `None` for a probe (`Clients::probe_read`).
    pub client: Option<usize>,
    /// The node the request was sent to.
    pub node: usize,
    pub op: Op,
    /// When the request was sent.
    pub sent_at: u64,
    /// When the answer arrived, or the client gave up waiting.
    pub at: u64,
    /// `None` if the client gave up waiting.
    pub reply: Option<Reply>,
}

/// Where and when one attempt was sent, kept while answers are recorded.
struct Sent {
    client: Option<usize>,
    node: usize,
    op: Op,
    at: u64,
}

/// The operation a client is waiting on.
struct Current {
    op: Op,
    attempt: u64,
    /// The history thread the operation was invoked on.
    thread: u64,
    /// When the current attempt was sent.
    sent_at: u64,
}

struct Client {
    /// The node this client believes leads.
    leader_guess: usize,
    /// Its thread in the history; a fresh one after an unknown outcome.
    thread: u64,
    ops_left: usize,
    current: Option<Current>,
    /// Waiting to retry or to start the next operation.
    sleeping: bool,
}

/// Every client, and the history they share.
pub struct Clients {
    config: ClientConfig,
    /// The nodes clients send to: every machine in service (machines are
    /// added and retired by membership changes).
    targets: Vec<usize>,
    clients: Vec<Client>,
    pub history: History,
    next_thread: u64,
    next_attempt: u64,
    next_value: u64,
    /// Attempts that timed out although they were sent after this time
    /// (the liveness check sets it when the network heals).
    pub timeouts_after_calm: Vec<String>,
    calm_since: Option<u64>,
    /// Whether to keep every answer in `answers` (off by default).
    pub record_answers: bool,
    pub answers: Vec<Answer>,
    /// While recording: every attempt sent, by attempt number.
    sent: BTreeMap<u64, Sent>,
}

impl Clients {
    pub fn new(config: ClientConfig, nodes: usize, rng: &mut StdRng) -> Clients {
        let clients = (0..config.count)
            .map(|client| Client {
                leader_guess: rng.random_range(0..nodes),
                thread: client as u64,
                ops_left: config.ops,
                current: None,
                sleeping: false,
            })
            .collect();
        Clients {
            targets: (0..nodes).collect(),
            clients,
            history: History::default(),
            next_thread: config.count as u64,
            next_attempt: 1,
            next_value: 1,
            timeouts_after_calm: Vec::new(),
            calm_since: None,
            record_answers: false,
            answers: Vec::new(),
            sent: BTreeMap::new(),
            config,
        }
    }

    /// Every client wakes up at a random time in the first few ticks.
    pub fn start(&mut self, now: u64, rng: &mut StdRng) -> Vec<Action> {
        let mut actions = Vec::new();
        for client in 0..self.clients.len() {
            self.sleep(client, now + rng.random_range(0..=5 * TICK), &mut actions);
        }
        actions
    }

    /// Clients send only to these nodes from now on; a client that meant
    /// to try a node no longer in service tries the next one instead.
    pub fn set_targets(&mut self, targets: Vec<usize>) {
        assert!(!targets.is_empty(), "clients need a node to talk to");
        self.targets = targets;
        for client in 0..self.clients.len() {
            let guess = self.clients[client].leader_guess;
            if !self.targets.contains(&guess) {
                self.clients[client].leader_guess = self.next_target(guess);
            }
        }
    }

    /// The node after `node` in the target list (round robin).
    fn next_target(&self, node: usize) -> usize {
        let next = self.targets.iter().position(|&n| n > node).unwrap_or(0);
        self.targets[next]
    }

    /// From now on the network is calm, so every attempt should be answered.
    pub fn calm_from(&mut self, now: u64) {
        self.calm_since = Some(now);
    }

    /// Clients finish the operation they are on but start no new one.
    pub fn stop_new_ops(&mut self) {
        for client in &mut self.clients {
            client.ops_left = 0;
        }
    }

    /// The client's next attempt goes to `node` (it still follows redirects
    /// after that): lets a scenario send requests to a node it chose.
    pub fn aim(&mut self, client: usize, node: usize) {
        self.clients[client].leader_guess = node;
    }

    /// How many clients there are.
    pub fn count(&self) -> usize {
        self.clients.len()
    }

    /// A `get` sent to `node` outside every client's history: a probe whose
    /// answer only shows up in `answers` (turn `record_answers` on first).
    /// Reads change nothing, so the history stays complete without it.
    pub fn probe_read(&mut self, node: usize, now: u64) -> Vec<Action> {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        if self.record_answers {
            self.sent.insert(
                attempt,
                Sent {
                    client: None,
                    node,
                    op: Op::Get,
                    at: now,
                },
            );
        }
        // Client 0 carries it (the trace shows it as client 0's), but is not
        // waiting for it: `is_current` ignores its answer.
        let tag = Tag { client: 0, attempt };
        vec![Action::Send {
            node,
            tag,
            op: Op::Get,
        }]
    }

    /// Records the answer to `tag` if answers are recorded.
    fn record(&mut self, tag: Tag, now: u64, reply: Option<&Reply>) {
        if let Some(sent) = self.sent.get(&tag.attempt) {
            self.answers.push(Answer {
                client: sent.client,
                node: sent.node,
                op: sent.op.clone(),
                sent_at: sent.at,
                at: now,
                reply: reply.cloned(),
            });
        }
    }

    /// Gives every client `ops` more operations to do.
    pub fn add_ops(&mut self, ops: usize, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        for client in 0..self.clients.len() {
            let idle = self.clients[client].ops_left == 0 && self.clients[client].current.is_none();
            self.clients[client].ops_left += ops;
            if idle && !self.clients[client].sleeping {
                self.sleep(client, now, &mut actions);
            }
        }
        actions
    }

    /// True when no client has anything left to do.
    pub fn all_done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.current.is_none() && c.ops_left == 0)
    }

    /// Operations still waiting for an answer, for error messages.
    pub fn describe_pending(&self, now: u64) -> String {
        let pending: Vec<String> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let current = c.current.as_ref()?;
                Some(format!(
                    "client {i}: {:?} to {} (attempt sent at {}, now {})",
                    current.op,
                    node_id(c.leader_guess),
                    trace::time(current.sent_at),
                    trace::time(now)
                ))
            })
            .collect();
        pending.join("; ")
    }

    fn sleep(&mut self, client: usize, at: u64, actions: &mut Vec<Action>) {
        self.clients[client].sleeping = true;
        actions.push(Action::Wake { client, at });
    }

    /// A client's pause is over: retry its operation, or start the next.
    pub fn wake(&mut self, client: usize, now: u64, rng: &mut StdRng) -> Vec<Action> {
        let mut actions = Vec::new();
        self.clients[client].sleeping = false;
        if self.clients[client].current.is_some() {
            self.send_attempt(client, now, &mut actions);
            return actions;
        }
        if self.clients[client].ops_left == 0 {
            return actions;
        }
        self.clients[client].ops_left -= 1;
        let op = if rng.random_range(0..100) < self.config.get_percent {
            Op::Get
        } else {
            let value = format!("v{}", self.next_value);
            self.next_value += 1;
            Op::Set(value)
        };
        let thread = self.clients[client].thread;
        self.history.invoke(now, thread, op.clone());
        self.clients[client].current = Some(Current {
            op,
            attempt: 0,
            thread,
            sent_at: now,
        });
        self.send_attempt(client, now, &mut actions);
        actions
    }

    fn send_attempt(&mut self, client: usize, now: u64, actions: &mut Vec<Action>) {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let node = self.clients[client].leader_guess;
        let current = self.clients[client]
            .current
            .as_mut()
            .expect("an operation to send");
        current.attempt = attempt;
        current.sent_at = now;
        if self.record_answers {
            let sent = Sent {
                client: Some(client),
                node,
                op: current.op.clone(),
                at: now,
            };
            self.sent.insert(attempt, sent);
        }
        let tag = Tag { client, attempt };
        actions.push(Action::Send {
            node,
            tag,
            op: current.op.clone(),
        });
        actions.push(Action::Timeout {
            tag,
            at: now + self.config.timeout,
        });
    }

    /// True if `tag` is the attempt its client is waiting on.
    fn is_current(&self, tag: Tag) -> bool {
        self.clients[tag.client]
            .current
            .as_ref()
            .is_some_and(|c| c.attempt == tag.attempt)
    }

    /// An answer arrives.
    pub fn on_reply(&mut self, tag: Tag, reply: Reply, now: u64, rng: &mut StdRng) -> Vec<Action> {
        let mut actions = Vec::new();
        self.record(tag, now, Some(&reply));
        if !self.is_current(tag) {
            return actions; // an answer to an attempt we gave up on
        }
        let client = tag.client;
        match reply {
            Reply::Written => self.finish(client, RegisterRet::WriteOk, now, rng, &mut actions),
            Reply::Value(value) => {
                self.finish(client, RegisterRet::ReadOk(value), now, rng, &mut actions)
            }
            Reply::NotLeader(hint) => {
                // Nothing happened: retry the same operation elsewhere. With
                // no hint (an election is on) wait a little first.
                let known =
                    hint.and_then(|id| self.targets.iter().copied().find(|&n| node_id(n) == id));
                let pause = match known {
                    Some(node) if node != self.clients[client].leader_guess => {
                        self.clients[client].leader_guess = node;
                        0
                    }
                    _ => {
                        self.clients[client].leader_guess =
                            self.next_target(self.clients[client].leader_guess);
                        rng.random_range(TICK..=3 * TICK)
                    }
                };
                self.sleep(client, now + pause, &mut actions);
            }
            Reply::ReadFailed => {
                self.sleep(
                    client,
                    now + rng.random_range(TICK..=3 * TICK),
                    &mut actions,
                );
            }
            Reply::Unknown(_) => self.give_up(client, now, rng, &mut actions),
        }
        actions
    }

    /// An attempt got no answer in time.
    pub fn on_timeout(&mut self, tag: Tag, now: u64, rng: &mut StdRng) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.is_current(tag) {
            return actions;
        }
        self.record(tag, now, None);
        let client = tag.client;
        let current = self.clients[client].current.as_ref().expect("current");
        let is_get = current.op == Op::Get;
        if self.calm_since.is_some_and(|calm| current.sent_at >= calm) {
            self.timeouts_after_calm.push(format!(
                "client {client}: {:?} sent to {} at {} got no answer by {}",
                current.op,
                node_id(self.clients[client].leader_guess),
                trace::time(current.sent_at),
                trace::time(now)
            ));
        }
        // Try another node next time: this one may be down or cut off.
        self.clients[client].leader_guess = self.targets[rng.random_range(0..self.targets.len())];
        if is_get {
            self.sleep(client, now, &mut actions);
        } else {
            self.give_up(client, now, rng, &mut actions);
        }
        actions
    }

    fn finish(
        &mut self,
        client: usize,
        ret: RegisterRet<String>,
        now: u64,
        rng: &mut StdRng,
        actions: &mut Vec<Action>,
    ) {
        let current = self.clients[client].current.take().expect("current");
        self.history.answer(now, current.thread, ret);
        let think = rng.random_range(self.config.think.0..=self.config.think.1);
        self.sleep(client, now + think, actions);
    }

    /// The outcome of the current `set` is unknown: leave it in flight and
    /// carry on as a new thread.
    fn give_up(&mut self, client: usize, now: u64, rng: &mut StdRng, actions: &mut Vec<Action>) {
        let current = self.clients[client].current.take().expect("current");
        self.history.unknown(now, current.thread);
        self.clients[client].thread = self.next_thread;
        self.next_thread += 1;
        let think = rng.random_range(self.config.think.0..=self.config.think.1);
        self.sleep(client, now + think, actions);
    }
}
