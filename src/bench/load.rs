//! The load: client threads, each with its own persistent connection to the
//! leader, sending one request at a time, back to back.
//!
//! One request in flight per connection is what `raft client` and the
//! node's own connection readers do, so C clients means C requests in
//! flight: the closed loop that makes latency and throughput two views of
//! the same run (Little's law: throughput = C / latency).

use super::histogram::Histogram;
use raft::message::{ClientCommand, ClientRequest, ClientResult};
use raft::transport::FrameError;
use raft::{client, config};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a load client waits for one answer before it gives up on the
/// connection. Longer than the node's own limit
/// (`transport::CLIENT_REPLY_TIMEOUT`), after which the node answers with
/// an error itself, so this only fires when a node is stuck.
pub const LOAD_IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause after a failed attempt or a "no leader known" answer, so that a
/// cluster in the middle of an election is polled, not hammered. Short,
/// because the failover figures are measured through it: it bounds their
/// resolution.
pub const RETRY_PAUSE: Duration = Duration::from_millis(1);

/// The stack of one load client thread: it only encodes and parses small
/// frames, and a thousand clients at Rust's default 2 MiB would reserve
/// 2 GiB of address space.
const CLIENT_STACK_BYTES: usize = 256 * 1024;

/// Phases of a run, in [`LoadShared::phase`].
pub const PHASE_WARMUP: u8 = 0;
pub const PHASE_MEASURE: u8 = 1;
pub const PHASE_DONE: u8 = 2;

/// What the coordinator and the clients share.
#[derive(Debug)]
pub struct LoadShared {
    /// `PHASE_WARMUP`, then `PHASE_MEASURE`, then `PHASE_DONE`.
    pub phase: AtomicU8,
    /// Totals over all phases, for the progress line.
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    pub errors: AtomicU64,
}

impl LoadShared {
    /// In the warm-up phase, nothing counted yet.
    pub fn new() -> LoadShared {
        LoadShared {
            phase: AtomicU8::new(PHASE_WARMUP),
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

/// What one client saw during the measured window.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub writes: Histogram,
    pub reads: Histogram,
    /// Requests refused by the node (an `Error` answer) or lost with the
    /// connection.
    pub errors: u64,
    /// `NotLeader` answers followed to another node.
    pub redirects: u64,
    /// The latest error, to show a person what went wrong.
    pub last_error: Option<String>,
}

impl ClientReport {
    /// Adds `other`'s figures to these.
    pub fn merge(&mut self, other: ClientReport) {
        self.writes.merge(&other.writes);
        self.reads.merge(&other.reads);
        self.errors += other.errors;
        self.redirects += other.redirects;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
    }
}

/// How one request ended.
#[derive(Debug)]
pub enum Outcome {
    /// Answered: committed (`set`) or read (`get`).
    Done,
    /// Not the leader: the session now points elsewhere; try again.
    Redirected,
    /// Not the leader, and no leader known: pause, then try again.
    NoLeader,
    /// The node refused with an error (overloaded, leadership changed).
    Refused(String),
    /// The connection failed, or the answer made no sense; the session will
    /// reconnect (to the next address).
    Failed(String),
}

/// A connection to whichever node is believed to lead, kept open across
/// requests and moved when a node says it does not lead.
pub struct Session {
    addrs: Vec<String>,
    target: String,
    /// The address tried after `target` fails: round robin over `addrs`.
    next_guess: usize,
    conn: Option<client::Connection>,
    next_id: u64,
    io_timeout: Duration,
}

impl Session {
    /// A session that first tries `leader`, then `addrs` in turn.
    pub fn new(addrs: Vec<String>, leader: String, io_timeout: Duration) -> Session {
        Session {
            addrs,
            target: leader,
            next_guess: 0,
            conn: None,
            next_id: 1,
            io_timeout,
        }
    }

    /// Sends `command` and reads its answer.
    pub fn call(&mut self, command: &ClientCommand) -> Outcome {
        match self.try_call(command) {
            Ok(ClientResult::Written { .. } | ClientResult::Value { .. }) => Outcome::Done,
            Ok(ClientResult::NotLeader { leader: Some(hint) }) => {
                self.conn = None;
                match config::parse_address(&hint) {
                    Ok((_, addr)) => {
                        self.target = addr;
                        Outcome::Redirected
                    }
                    Err(e) => {
                        self.move_on();
                        Outcome::Failed(format!("bad leader hint '{hint}': {e}"))
                    }
                }
            }
            Ok(ClientResult::NotLeader { leader: None }) => {
                self.move_on();
                Outcome::NoLeader
            }
            Ok(ClientResult::Error { message }) => Outcome::Refused(message),
            Ok(other) => {
                self.move_on();
                Outcome::Failed(format!("unexpected answer: {other:?}"))
            }
            Err(e) => {
                let failed = self.target.clone();
                self.move_on();
                Outcome::Failed(format!("{failed}: {e}"))
            }
        }
    }

    /// Drops the connection and aims at the next address.
    fn move_on(&mut self) {
        self.conn = None;
        if self.addrs.is_empty() {
            return;
        }
        self.next_guess = (self.next_guess + 1) % self.addrs.len();
        self.target = self.addrs[self.next_guess].clone();
    }

    fn try_call(&mut self, command: &ClientCommand) -> io::Result<ClientResult> {
        let id = self.next_id;
        self.next_id += 1;
        let request = ClientRequest {
            id,
            command: command.clone(),
        };
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let creds = super::credentials().map_err(io::Error::other)?;
                let conn = client::connect(creds, &self.target, self.io_timeout)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                conn.set_read_timeout(Some(self.io_timeout))?;
                self.conn.insert(conn)
            }
        };
        conn.send(&request)?;
        match conn.receive() {
            Ok(Some(r)) if r.id == id => Ok(r.result),
            Ok(Some(other)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not the answer to request {id}: {other:?}"),
            )),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the node closed the connection",
            )),
            Err(FrameError::Io(e)) => Err(e),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

/// What every load client is told.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    pub addrs: Vec<String>,
    pub leader: String,
    pub value_size: usize,
    /// The share of requests that are `get`s, 0..=1.
    pub read_fraction: f64,
}

/// The value client `n` writes: `value_size` bytes of plain ASCII (nothing
/// for JSON to escape), starting with the client's number so that a person
/// reading a node's output can tell the clients apart.
pub fn value_for(n: usize, value_size: usize) -> String {
    let mut value = format!("c{n}-");
    value.truncate(value_size);
    while value.len() < value_size {
        value.push('x');
    }
    value
}

/// Runs one client until the phase is `PHASE_DONE`.
pub fn run_client(n: usize, plan: &ClientPlan, shared: &LoadShared) -> ClientReport {
    let set = ClientCommand::Set {
        value: value_for(n, plan.value_size),
    };
    let get = ClientCommand::Get;
    let mut session = Session::new(plan.addrs.clone(), plan.leader.clone(), LOAD_IO_TIMEOUT);
    let mut report = ClientReport::default();
    // Reads are spread evenly (a `get` each time the running sum of the
    // fraction passes a whole number), not drawn at random: the mix is then
    // exact, and two runs do the same work. Each client starts at a
    // different point of the cycle.
    let mut read_credit = (n as f64 * plan.read_fraction).fract();
    let running = || shared.phase.load(Ordering::Relaxed) != PHASE_DONE;
    while running() {
        read_credit += plan.read_fraction;
        let is_read = read_credit >= 1.0;
        if is_read {
            read_credit -= 1.0;
        }
        let command = if is_read { &get } else { &set };
        let start = Instant::now();
        // Retry the same request through redirects and failures, so a
        // write's latency is what a client would see, redirects included.
        loop {
            let outcome = session.call(command);
            let measuring = shared.phase.load(Ordering::Relaxed) == PHASE_MEASURE;
            match outcome {
                Outcome::Done => {
                    let (hist, total) = if is_read {
                        (&mut report.reads, &shared.reads)
                    } else {
                        (&mut report.writes, &shared.writes)
                    };
                    if measuring {
                        hist.record(start.elapsed());
                    }
                    total.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Outcome::Redirected => {
                    if measuring {
                        report.redirects += 1;
                    }
                }
                Outcome::NoLeader => std::thread::sleep(RETRY_PAUSE),
                Outcome::Refused(e) | Outcome::Failed(e) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    if measuring {
                        report.errors += 1;
                    }
                    report.last_error = Some(e);
                    std::thread::sleep(RETRY_PAUSE);
                    break;
                }
            }
            if !running() {
                break;
            }
        }
    }
    report
}

/// Runs `clients` clients on their own threads; returns their handles.
pub fn spawn_clients(
    clients: usize,
    plan: &ClientPlan,
    shared: &Arc<LoadShared>,
) -> Result<Vec<std::thread::JoinHandle<ClientReport>>, String> {
    (0..clients)
        .map(|n| {
            let plan = plan.clone();
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name(format!("bench-client-{n}"))
                .stack_size(CLIENT_STACK_BYTES)
                .spawn(move || run_client(n, &plan, &shared))
                .map_err(|e| format!("cannot start client thread {n}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_asked_size() {
        assert_eq!(value_for(7, 16), "c7-xxxxxxxxxxxxx");
        assert_eq!(value_for(12345, 3), "c12");
        assert_eq!(value_for(0, 1), "c");
        assert_eq!(value_for(3, 1024).len(), 1024);
    }
}
