//! Outbound: sending to the other nodes.
//!
//! **The plain path.** [`Peers::send`] puts the message on that peer's
//! bounded queue. The peer's writer thread (`writer.rs`) takes it off,
//! together with whatever else is queued, and writes them in one go,
//! connecting, authenticating and reconnecting as needed. The state-machine
//! thread never blocks on a socket: a message that finds the queue full is
//! dropped, and Raft resends.
//!
//! **An optimisation in front of it** (`direct_write.rs`). When the peer's
//! connection is idle and its socket has room, the state-machine thread
//! writes the message itself: handing it to the writer would cost a thread
//! wake-up, and on a small machine a wake-up costs more than the write
//! (tens of microseconds; a 1-client write crosses this path twice, and the
//! direct write is worth about 15% of throughput). Without it every message
//! would take the plain path and the node would behave the same, only
//! slower; a first reading can skip it. It is why a [`Connection`] sits
//! behind a lock shared with the writer, why the queue's length is counted
//! in an atomic, and why a frame can be left half-written (`unsent`,
//! [`Job::Finish`]).
//!
//! Messages to one peer stay in order: the state-machine thread writes
//! directly only when nothing is queued for the writer, the writer holds the
//! connection's lock while it writes, and a frame the socket took only part
//! of is finished by the writer before anything else.

mod direct_write;
mod writer;

use super::auth::{Credentials, Opener, Sealer};
use super::PEER_QUEUE_LEN;
use crate::message::{Message, NodeId};
use crate::throttle::Throttle;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A connection unused for this long is checked for a peer that closed it
/// before it is written to (by the writer thread: the state-machine thread
/// leaves such a connection to it).
const IDLE_CHECK_AFTER: Duration = Duration::from_millis(10);

/// Counters of what was sent, shared with the writer threads.
#[derive(Debug, Default)]
struct Counters {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    messages_dropped: AtomicU64,
}

impl Counters {
    fn sent(&self, messages: u64, bytes: usize) {
        self.messages_sent.fetch_add(messages, Ordering::Relaxed);
        self.bytes_sent
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn dropped(&self, messages: u64) {
        self.messages_dropped.fetch_add(messages, Ordering::Relaxed);
    }
}

/// What a writer thread is asked to do.
#[derive(Debug)]
enum Job {
    /// Encode and send a message.
    Send(Message),
    /// Send one frame the state-machine thread encoded (as JSON, not yet
    /// sealed for a connection) but could not write without blocking
    /// (only the direct write hands these over).
    Encoded(Vec<u8>),
    /// Finish the frame the state-machine thread wrote only part of (the
    /// rest is in [`Connection::unsent`]; only the direct write leaves one).
    Finish,
}

/// One peer's connection, shared by the state-machine thread and the
/// peer's writer thread.
#[derive(Debug)]
struct Link {
    conn: Mutex<Connection>,
    /// Jobs handed to the writer and not yet done. The state-machine thread
    /// writes directly only when this is zero, so nothing overtakes them.
    queued: AtomicUsize,
}

#[derive(Debug)]
struct Connection {
    stream: Option<TcpStream>,
    /// The keys of `stream`'s frames, from its handshake.
    sealer: Sealer,
    opener: Opener,
    /// The tail of a frame the socket took only part of. It belongs to this
    /// stream: on a new connection it is thrown away, not sent.
    unsent: Vec<u8>,
    last_write: Instant,
}

/// The state-machine thread's handle on one peer.
#[derive(Debug)]
struct PeerHandle {
    addr: String,
    queue: Sender<Job>,
    link: Arc<Link>,
}

/// The outgoing side of a node: per peer, a connection, a writer thread and
/// a bounded queue. [`Peers::send`] never blocks the state-machine thread.
///
/// Dropping `Peers` ends its writer threads (each notices at its next
/// message or at once if idle) and closes their connections.
#[derive(Debug)]
pub struct Peers {
    peers: BTreeMap<NodeId, PeerHandle>,
    /// This node, as it introduces itself in each handshake.
    self_id: NodeId,
    creds: Credentials,
    counters: Arc<Counters>,
    /// Never sent on: dropping it tells the writers to stop, even while
    /// messages are still queued for them.
    _stop: Sender<()>,
    stop_rx: Receiver<()>,
}

impl Peers {
    /// Starts one writer per peer (`id -> "host:port"`). Writers connect on
    /// their first message, not before, and reconnect as needed.
    ///
    /// If a writer thread cannot be started (the process is out of
    /// resources), that is logged and messages to that peer are dropped, as
    /// if it were unreachable; Raft copes with an unreachable peer.
    pub fn start(self_id: NodeId, creds: Credentials, peers: &BTreeMap<NodeId, String>) -> Peers {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut started = Peers {
            peers: BTreeMap::new(),
            self_id,
            creds,
            counters: Arc::new(Counters::default()),
            _stop: stop_tx,
            stop_rx,
        };
        started.update(peers);
        started
    }

    /// Makes the set of writers match `peers` after a membership change:
    /// starts writers for new peers (or new addresses) and stops those of
    /// peers that left (dropping a queue ends its writer).
    pub fn update(&mut self, peers: &BTreeMap<NodeId, String>) {
        self.peers
            .retain(|id, peer| peers.get(id).is_some_and(|a| *a == peer.addr));
        for (id, addr) in peers {
            self.add(id, addr);
        }
    }

    /// True if there is a writer for `id`.
    pub fn has(&self, id: &NodeId) -> bool {
        self.peers.contains_key(id)
    }

    /// Stops the writer for `id`, if there is one (its thread ends).
    pub fn remove(&mut self, id: &NodeId) {
        self.peers.remove(id);
    }

    /// Starts a writer for `id` at `addr`, unless `id` has one already.
    pub fn add(&mut self, id: &NodeId, addr: &str) {
        if !self.peers.contains_key(id) {
            let peer = self.spawn_writer(id, addr);
            self.peers.insert(id.clone(), peer);
        }
    }

    fn spawn_writer(&self, id: &NodeId, addr: &str) -> PeerHandle {
        let (tx, rx) = crossbeam_channel::bounded(PEER_QUEUE_LEN);
        let link = Arc::new(Link {
            conn: Mutex::new(Connection::none()),
            queued: AtomicUsize::new(0),
        });
        let writer = writer::PeerWriter {
            self_id: self.self_id.clone(),
            creds: self.creds.clone(),
            id: id.clone(),
            addr: addr.to_string(),
            queue: rx,
            link: Arc::clone(&link),
            stop: self.stop_rx.clone(),
            counters: Arc::clone(&self.counters),
        };
        if let Err(e) = thread::Builder::new()
            .name(format!("raft-peer-{id}"))
            .spawn(move || writer.run())
        {
            log::error!(
                "cannot start the writer thread for peer {id} ({addr}): {e}; messages to it will be dropped"
            );
        }
        // Kept even if the spawn failed: the link never connects, so `send`
        // queues, finds the queue disconnected and counts a drop.
        PeerHandle {
            addr: addr.to_string(),
            queue: tx,
            link,
        }
    }

    /// Sends `msg` to `msg.to`: written at once if that peer's connection is
    /// idle and its socket has room, else queued for its writer. Never
    /// blocks: when the queue is full the message is dropped (logged at
    /// `debug`); Raft resends.
    pub fn send(&self, msg: Message) {
        let Some(peer) = self.peers.get(&msg.to) else {
            // The answer to a message from a node outside the membership
            // (which anyone can send): at most a line a second.
            static NO_WRITER: Throttle = Throttle::new();
            if let Some(note) = NO_WRITER.allow() {
                log::warn!(
                    "dropping a message for {}: not one of this node's peers{note}",
                    msg.to
                );
            }
            self.counters.dropped(1);
            return;
        };
        // The optimisation: written at once if the socket has room.
        if let Some(job) = self.write_now(peer, msg) {
            // The plain path: the writer thread sends it.
            self.enqueue(peer, job);
        }
    }

    fn enqueue(&self, peer: &PeerHandle, job: Job) {
        peer.link.queued.fetch_add(1, Ordering::AcqRel);
        let why = match peer.queue.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => format!("its queue of {PEER_QUEUE_LEN} is full"),
            Err(TrySendError::Disconnected(_)) => "no writer thread".to_string(),
        };
        peer.link.queued.fetch_sub(1, Ordering::AcqRel);
        log::debug!("dropping a message for {}: {why}", peer.addr);
        self.counters.dropped(1);
    }

    /// Messages written to peer sockets so far.
    pub fn messages_sent(&self) -> u64 {
        self.counters.messages_sent.load(Ordering::Relaxed)
    }

    /// Bytes written to peer sockets so far (newlines included).
    pub fn bytes_sent(&self) -> u64 {
        self.counters.bytes_sent.load(Ordering::Relaxed)
    }

    /// Messages dropped: queue full, peer unreachable, or connection lost.
    pub fn messages_dropped(&self) -> u64 {
        self.counters.messages_dropped.load(Ordering::Relaxed)
    }
}

/// With `debug` logging on, shows each frame as it leaves.
fn log_sent(to: &str, line: &[u8]) {
    if log::log_enabled!(log::Level::Debug) {
        let text = String::from_utf8_lossy(line);
        log::debug!("sent to {to}: {}", text.trim_end());
    }
}

impl Connection {
    /// Not connected.
    fn none() -> Connection {
        Connection {
            stream: None,
            sealer: Sealer::plain(),
            opener: Opener::plain(),
            unsent: Vec::new(),
            last_write: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Frame;
    use crate::transport::frame::read_frame;
    use crate::transport::test_support::{fake_driver, start_node, vote, DEADLINE};
    use crate::transport::RECONNECT_BACKOFF_MIN;
    use std::io::BufReader;
    use std::net::TcpListener;
    use std::time::Duration;

    // -- peers ----------------------------------------------------------

    #[test]
    fn peers_deliver_through_a_listener() {
        let node = start_node("8001", &["8000"]);
        let peer_msgs = fake_driver(node.inbound);
        let peers = Peers::start(
            NodeId::new("8000"),
            Credentials::insecure(),
            &BTreeMap::from([(NodeId::new("8001"), node.addr.clone())]),
        );
        // The first attempt races nothing (the listener is already bound),
        // but send until one arrives anyway so the test never depends on it.
        let deadline = Instant::now() + DEADLINE;
        let got = loop {
            peers.send(vote("8000", "8001"));
            if let Ok(m) = peer_msgs.recv_timeout(Duration::from_millis(100)) {
                break m;
            }
            assert!(Instant::now() < deadline, "no message arrived");
        };
        assert_eq!(got, vote("8000", "8001"));
        assert!(peers.messages_sent() >= 1);
        assert!(peers.bytes_sent() > 0);
    }

    #[test]
    fn unknown_peer_is_dropped_not_panicked() {
        let peers = Peers::start(
            NodeId::new("8000"),
            Credentials::insecure(),
            &BTreeMap::new(),
        );
        peers.send(vote("8000", "8009"));
        assert_eq!(peers.messages_dropped(), 1);
    }

    /// `Peers` of node 8000, whose one peer 8001 listens (and reads
    /// nothing until the test says so) on the returned listener.
    fn peers_of_8000_with_8001_listening() -> (TcpListener, Peers) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let peers = Peers::start(
            NodeId::new("8000"),
            Credentials::insecure(),
            &BTreeMap::from([(NodeId::new("8001"), addr)]),
        );
        (listener, peers)
    }

    #[test]
    fn writers_stop_when_peers_is_dropped() {
        let (listener, peers) = peers_of_8000_with_8001_listening();
        peers.send(vote("8000", "8001"));
        let (conn, _) = listener.accept().expect("writer connects");
        conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut r = BufReader::new(conn);
        assert!(matches!(read_frame(&mut r), Ok(Some(Frame::Peer(_)))));
        drop(peers);
        // The writer thread ends and so closes its connection: EOF.
        assert!(matches!(read_frame(&mut r), Ok(None)));
    }

    #[test]
    fn writer_reconnects_after_losing_its_connection() {
        let (listener, peers) = peers_of_8000_with_8001_listening();
        let (accepted_tx, accepted) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if accepted_tx.send(conn).is_err() {
                    return;
                }
            }
        });
        peers.send(vote("8000", "8001"));
        let first = accepted.recv_timeout(DEADLINE).expect("first connection");
        drop(first);
        // Keep sending: writes into the closed connection fail, the writer
        // reconnects, and a later message arrives on a new connection.
        let deadline = Instant::now() + DEADLINE;
        let second = loop {
            peers.send(vote("8000", "8001"));
            match accepted.recv_timeout(RECONNECT_BACKOFF_MIN) {
                Ok(conn) => break conn,
                Err(_) => assert!(Instant::now() < deadline, "writer never reconnected"),
            }
        };
        second.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut r = BufReader::new(second);
        assert!(matches!(read_frame(&mut r), Ok(Some(Frame::Peer(_)))));
    }

    fn append_entries(from: &str, to: &str, seq: u64, payload: &str) -> Message {
        use crate::message::{Entry, EntryData, MessageBody};
        Message {
            from: NodeId::new(from),
            to: NodeId::new(to),
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_index: seq,
                prev_log_term: 1,
                seq: 0,
                entries: vec![Entry {
                    term: 1,
                    index: seq + 1,
                    data: EntryData::Command(payload.to_string()),
                }],
                leader_commit: 0,
                read_seq: 0,
            },
        }
    }

    #[test]
    fn a_backlog_the_socket_cannot_take_arrives_whole_and_in_order() {
        // The peer reads nothing until every message was handed over, so
        // its socket fills: writes on the state-machine thread come back
        // partial or empty, the rest waits in the queue, and the writer
        // finishes both. Every message must arrive whole, once, in order.
        let (listener, peers) = peers_of_8000_with_8001_listening();
        peers.send(append_entries("8000", "8001", 0, "first"));
        let (conn, _) = listener.accept().expect("the writer connects");
        conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut reader = BufReader::new(conn);
        assert!(matches!(read_frame(&mut reader), Ok(Some(Frame::Peer(_)))));

        // 48 MiB in all: far more than loopback socket buffers hold.
        let payload = "x".repeat(512 * 1024);
        let count = 96;
        for seq in 1..=count {
            peers.send(append_entries("8000", "8001", seq, &payload));
        }
        for seq in 1..=count {
            match read_frame(&mut reader) {
                Ok(Some(Frame::Peer(msg))) => {
                    assert_eq!(msg, append_entries("8000", "8001", seq, &payload));
                }
                other => panic!("message {seq}: expected it, got {other:?}"),
            }
        }
        assert_eq!(peers.messages_dropped(), 0);
    }

    #[test]
    fn an_authenticated_backlog_arrives_whole_in_order_and_verified() {
        // As above, but through an authenticated listener: frames the
        // state-machine thread sealed and wrote in part, frames it sealed
        // and could not write at all, and frames the writer sealed must
        // all carry the right sequence numbers, or the listener closes
        // the connection and messages are lost.
        use crate::transport::test_support::{start_node_with, test_key};
        let creds = Credentials::new(test_key());
        let node = start_node_with("8001", &["8000"], creds.clone());
        let peer_msgs = fake_driver(node.inbound);
        let peers = Peers::start(
            NodeId::new("8000"),
            creds,
            &BTreeMap::from([(NodeId::new("8001"), node.addr.clone())]),
        );
        let payload = "x".repeat(512 * 1024);
        let count = 48;
        for seq in 1..=count {
            peers.send(append_entries("8000", "8001", seq, &payload));
        }
        for seq in 1..=count {
            let got = peer_msgs.recv_timeout(DEADLINE).expect("message arrives");
            assert_eq!(got, append_entries("8000", "8001", seq, &payload));
        }
        assert_eq!(peers.messages_dropped(), 0);
    }
}
