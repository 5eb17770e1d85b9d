//! What a connection may hold, and for how long: slots, buffer budgets and
//! timeouts, so that nothing a remote party does holds a thread, a slot or
//! memory forever, and members never compete with clients.
//!
//! - **Slots.** A node serves up to [`ConnectionLimits::max_clients`] client
//!   connections and, apart from those, [`PEER_CONNECTION_SLOTS`] for its
//!   peers. A new connection cannot say what it is until its first frame,
//!   so it takes a client slot while any is free and is counted as a client
//!   until a frame shows it is a member's peer connection; then it moves to
//!   a peer slot, giving its client slot back. When every client slot is
//!   taken, a connection may still take a peer slot *on probation*: its
//!   first frame must come within [`ConnectionLimits::proof_timeout`] and be
//!   a member's, or it is closed (a client is told `the node is serving the
//!   most clients it takes (4096); retry later`). So a leader whose client
//!   slots are all held still takes back its restarted followers. Each
//!   connection is one thread, with a [`CONNECTION_STACK_BYTES`] stack.
//! - **Budgets.** Every connection reads through a small fixed buffer
//!   ([`LINE_BUFFER_BYTES`]); a line longer than that is kept in pieces of
//!   [`LINE_PIECE_BYTES`] drawn from a budget shared by all connections of
//!   its kind (clients, and connections not yet shown to be peers, share
//!   [`CLIENT_BUFFER_BUDGET_BYTES`]; peers share [`PEER_BUFFER_BUDGET_BYTES`]),
//!   and given back as soon as the line is parsed. The end of an answer a
//!   client does not read comes out of the client budget too.
//! - **Timeouts.** A connection is closed after
//!   [`ConnectionLimits::idle_timeout`] without a *useful* frame: a client
//!   request, or a peer message from a member in the current term or later.
//!   Bytes that do not complete a frame, and stale or refused frames, do not
//!   count: a connection that sends a term-0 AppendEntries every few
//!   seconds, or one byte every 20 s, is closed like a silent one. The
//!   handshake, before any frame, must be done within
//!   [`HANDSHAKE_TIMEOUT`](super::auth::HANDSHAKE_TIMEOUT) as a whole, not per
//!   read. A peer whose connection was closed for being idle reconnects when
//!   it next has something to send. An answer a client does not take within
//!   [`ConnectionLimits::write_timeout`] closes its connection.
//!
//! **Memory.** A frame that fits the read buffer is parsed where it lies. A
//! longer line is copied into pieces as it arrives (a client's line may not
//! pass [`MAX_CLIENT_LINE_BYTES`]; only peers may send up to the wire's
//! 16 MiB), and the pieces are freed as soon as the line is parsed (a whole
//! line is joined into one block first, for its MAC to be checked: only a
//! connection past the handshake gets that far). No connection keeps more
//! than its read buffer between frames, and no block larger than a piece is
//! ever allocated for a partial line, so the C allocator gives the memory
//! back after a burst (a block of 128 KiB or more would make it keep later
//! large blocks in per-thread pools instead). The first frame on a new
//! connection is held to a client's limit and budget, since nothing has shown
//! yet that it is a peer's. Every frame the core makes fits that limit: an
//! AppendEntries carries at most 1 MiB of values, six times that in the worst
//! JSON, and a snapshot chunk 256 KiB. But when outsiders hold the whole
//! clients' budget, a peer's long first frame is refused; its writer
//! reconnects and the leader sends again.
//!
//! **Strangers.** A peer message from a node outside the membership reaches
//! the core only if a member may need it (a leader it has not heard of yet,
//! dissertation §4.1, which must be of the current term or later; a removed
//! node asking for votes); anything else closes the connection. The writers
//! (a thread and a queue each) a node starts to answer such nodes are at most
//! 4 (`node::MAX_STRANGER_WRITERS`), the oldest stopped first.
//!
//! **What a connection costs.** One idle client connection adds one thread
//! and about 29 KiB of resident memory to a node (1,024 connections: +1,024
//! threads, +30 MiB, from a node at 9 MiB; `cargo test --test connections
//! a_thousand_clients -- --nocapture` prints it). 128 connections each
//! holding a 2 MiB partial line took a node from 9 MiB to 82-85 MiB (the
//! 64 MiB budget; the connections past it were closed), and back to
//! 14-17 MiB once they closed (`cargo test --test connections huge_partial
//! -- --nocapture`).
//!
//! Each connection is also a file descriptor: at start-up a node whose limit
//! on open files (`ulimit -n`) is below `--max-clients` + 128 + 64 says so on
//! stderr; raise the limit in the shell that starts it or lower
//! `--max-clients`. Connections not yet accepted wait in the kernel's queue
//! of 128 (the standard library's listen backlog); when more than that
//! arrive at once, the kernel drops the rest and their clients' kernels retry
//! after one second, so a burst of a thousand connections takes up to a
//! second or two to be served in full.

use crate::config::MAX_CLUSTER_SIZE;
use crate::core::MAX_COMMAND_BYTES;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most client connections a node serves at once (`--max-clients`).
/// Each is one thread with a small stack ([`CONNECTION_STACK_BYTES`]); an
/// idle one costs about 30 KiB of memory (see "What a connection costs"
/// above).
pub const MAX_CLIENT_CONNECTIONS: usize = 4096;

/// Connection slots kept for peers, apart from the clients' slots. A member
/// has one connection to each other member, and briefly a second while it
/// reconnects; a cluster has at most [`MAX_CLUSTER_SIZE`] members.
pub const PEER_CONNECTION_SLOTS: usize = 2 * MAX_CLUSTER_SIZE;

/// How long a connection may go without a useful frame (see the module
/// documentation) before it is closed (`--idle-timeout-ms`). A peer's
/// writer reconnects when it next has something to send, so closing an
/// idle peer connection costs one connect.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client may leave an answer unread before its connection is
/// closed (`--write-timeout-ms`).
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection on a peer slot taken on probation has to show, by
/// its first frame, that it is a member's. A peer's writer connects because
/// it has a message, and sends it at once.
pub const PEER_PROOF_TIMEOUT: Duration = Duration::from_secs(2);

/// The stack of a connection thread. Rust's default is 2 MiB of address
/// space; a reader needs far less (the deepest thing it does is parse JSON,
/// which `serde_json` limits to 128 levels of nesting; a test parses that
/// deep a frame on such a stack).
pub const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// The fixed read buffer of every connection. A frame that fits in it is
/// parsed where it lies, without a copy.
pub const LINE_BUFFER_BYTES: usize = 8 * 1024;

/// A line longer than what the read buffer holds is kept in pieces of this
/// size, each drawn from a budget. Smaller than the size above which the C
/// allocator maps memory of its own (128 KiB), whose first unmapping makes it
/// keep later large blocks in its per-thread pools instead of returning
/// them to the system.
pub const LINE_PIECE_BYTES: usize = 64 * 1024;

/// The longest line a connection may send before it has shown it is a
/// peer: a client's request, whose largest part is a value of at most
/// [`MAX_COMMAND_BYTES`] (up to six times as long in JSON, where a control
/// character becomes `\u00XX`), plus room for the rest. Only peers may send
/// up to [`MAX_LINE_BYTES`](super::MAX_LINE_BYTES).
pub const MAX_CLIENT_LINE_BYTES: usize = 6 * MAX_COMMAND_BYTES + 64 * 1024;

/// The most bytes all client connections (and those not yet shown to be
/// peers) may hold together in partial lines and unread answers, beyond
/// their fixed read buffers. A connection that needs more is closed.
pub const CLIENT_BUFFER_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// The same for peer connections, kept apart so that clients cannot use up
/// what peers need: four lines of the largest size at once.
pub const PEER_BUFFER_BUDGET_BYTES: usize = 4 * super::MAX_LINE_BYTES;

/// The listener's limits, with the constants above as defaults; the
/// command line changes some of them, and tests shorten the timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_clients: usize,
    pub peer_slots: usize,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub proof_timeout: Duration,
    pub client_buffer_budget_bytes: usize,
    pub peer_buffer_budget_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_clients: MAX_CLIENT_CONNECTIONS,
            peer_slots: PEER_CONNECTION_SLOTS,
            idle_timeout: IDLE_TIMEOUT,
            write_timeout: CLIENT_WRITE_TIMEOUT,
            proof_timeout: PEER_PROOF_TIMEOUT,
            client_buffer_budget_bytes: CLIENT_BUFFER_BUDGET_BYTES,
            peer_buffer_budget_bytes: PEER_BUFFER_BUDGET_BYTES,
        }
    }
}

/// File descriptors a node uses besides its connections: the listener,
/// the log and snapshot files, stdin/stdout/stderr, outgoing peer
/// connections, with room to spare.
const OTHER_OPEN_FILES: u64 = 64;

/// A warning to print at start-up if this process may not open enough
/// files for `limits` (each connection is one), read from
/// `/proc/self/limits`; `None` if it may, or where that file is missing.
pub fn open_files_warning(limits: &ConnectionLimits) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = soft_open_files_limit(&text)?;
    let wanted = u64::try_from(limits.max_clients + limits.peer_slots)
        .unwrap_or(u64::MAX)
        .saturating_add(OTHER_OPEN_FILES);
    (soft < wanted).then(|| {
        format!(
            "this process may open {soft} files, but {} clients and {} peer connections need about {wanted}; past {soft}, new connections fail until others close. Raise the limit (`ulimit -n {wanted}` in the shell that starts the node) or lower --max-clients",
            limits.max_clients, limits.peer_slots
        )
    })
}

/// The soft limit in the "Max open files" line of `/proc/self/limits`
/// (`None` when it is "unlimited" or missing).
fn soft_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Bytes that connections of one kind may hold together.
#[derive(Debug)]
pub(super) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` from the budget, or nothing if that would exceed it.
    pub(super) fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    pub(super) fn give_back(&self, bytes: usize) {
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(before >= bytes, "gave back more than was taken");
    }

    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// The connection slots of one node, by kind.
#[derive(Debug)]
pub(super) struct Slots {
    clients: AtomicUsize,
    peers: AtomicUsize,
    max_clients: usize,
    max_peers: usize,
}

/// What a connection's slot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotKind {
    /// A client slot: a client, or a connection that has not said yet.
    Client,
    /// A peer slot taken on probation, because the client slots were all
    /// taken: the first frame must be a member's.
    Probation,
    /// A peer slot of a connection shown to be a member's.
    Peer,
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    kind: SlotKind,
}

fn take_one(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl Slots {
    pub(super) fn new(limits: &ConnectionLimits) -> Arc<Slots> {
        Arc::new(Slots {
            clients: AtomicUsize::new(0),
            peers: AtomicUsize::new(0),
            max_clients: limits.max_clients,
            max_peers: limits.peer_slots,
        })
    }

    /// A slot for a new connection: a client slot if one is free, else a
    /// peer slot on probation, else none (the connection is refused).
    pub(super) fn take(self: &Arc<Self>) -> Option<Slot> {
        let kind = if take_one(&self.clients, self.max_clients) {
            SlotKind::Client
        } else if take_one(&self.peers, self.max_peers) {
            SlotKind::Probation
        } else {
            return None;
        };
        Some(Slot {
            slots: Arc::clone(self),
            kind,
        })
    }

    pub(super) fn max_clients(&self) -> usize {
        self.max_clients
    }

    #[cfg(test)]
    pub(super) fn in_use(&self) -> (usize, usize) {
        (
            self.clients.load(Ordering::Acquire),
            self.peers.load(Ordering::Acquire),
        )
    }
}

impl Slot {
    pub(super) fn kind(&self) -> SlotKind {
        self.kind
    }

    /// The connection showed it is a member's: it leaves its client slot
    /// for a peer slot, if one is free (else it keeps the client slot).
    pub(super) fn become_peer(&mut self) {
        match self.kind {
            SlotKind::Peer => {}
            SlotKind::Probation => self.kind = SlotKind::Peer,
            SlotKind::Client => {
                if take_one(&self.slots.peers, self.slots.max_peers) {
                    self.slots.clients.fetch_sub(1, Ordering::AcqRel);
                    self.kind = SlotKind::Peer;
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let count = match self.kind {
            SlotKind::Client => &self.slots.clients,
            SlotKind::Probation | SlotKind::Peer => &self.slots.peers,
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_clients: usize, peer_slots: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_clients,
            peer_slots,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn clients_first_then_peer_slots_on_probation_then_none() {
        let slots = Slots::new(&limits(2, 1));
        let a = slots.take().expect("a client slot");
        let b = slots.take().expect("a client slot");
        let c = slots.take().expect("a peer slot");
        assert_eq!(
            (a.kind(), b.kind(), c.kind()),
            (SlotKind::Client, SlotKind::Client, SlotKind::Probation)
        );
        assert!(slots.take().is_none());
        drop(a);
        assert_eq!(slots.in_use(), (1, 1));
        assert_eq!(slots.take().map(|s| s.kind()), Some(SlotKind::Client));
    }

    #[test]
    fn a_peer_gives_its_client_slot_back() {
        let slots = Slots::new(&limits(1, 1));
        let mut peer = slots.take().expect("a client slot");
        peer.become_peer();
        assert_eq!(peer.kind(), SlotKind::Peer);
        assert_eq!(slots.in_use(), (0, 1));
        // Its client slot is free for a client again.
        let client = slots.take().expect("a client slot");
        assert_eq!(client.kind(), SlotKind::Client);
        // With no peer slot free, a second peer keeps its client slot.
        let mut second = client;
        second.become_peer();
        assert_eq!(second.kind(), SlotKind::Client);
        drop(peer);
        drop(second);
        assert_eq!(slots.in_use(), (0, 0));
    }

    #[test]
    fn the_open_files_limit_is_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             96369                96369                processes \n\
                    Max open files            1024                 20000                files     \n";
        assert_eq!(soft_open_files_limit(text), Some(1024));
        assert_eq!(
            soft_open_files_limit("Max open files  unlimited unlimited files"),
            None
        );
    }

    #[test]
    fn a_budget_is_never_exceeded_and_is_given_back() {
        let budget = Budget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(41));
        assert!(budget.try_take(40));
        budget.give_back(60);
        assert_eq!(budget.used(), 40);
        assert!(budget.try_take(60));
    }
}
