//! Outbound: one writer thread per peer.

use super::frame::encode_frame;
use super::{
    connect, PEER_QUEUE_LEN, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, WRITER_BUFFER_BYTES,
};
use crate::message::{Frame, Message, NodeId};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Counters {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    messages_dropped: AtomicU64,
}

/// The outgoing side of a node: one writer thread and one bounded queue per
/// peer. [`Peers::send`] never blocks the state-machine thread.
///
/// Dropping `Peers` ends its writer threads (each notices at its next
/// message or at once if idle) and closes their connections.
#[derive(Debug)]
pub struct Peers {
    /// Each peer's queue, and the address its writer connects to.
    queues: BTreeMap<NodeId, (String, Sender<Message>)>,
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
    pub fn start(peers: &BTreeMap<NodeId, String>) -> Peers {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut started = Peers {
            queues: BTreeMap::new(),
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
        self.queues
            .retain(|id, (addr, _)| peers.get(id).is_some_and(|a| a == addr));
        for (id, addr) in peers {
            if !self.queues.contains_key(id) {
                let queue = self.spawn_writer(id, addr);
                self.queues.insert(id.clone(), (addr.clone(), queue));
            }
        }
    }

    /// Starts a writer for `id` at `addr`, unless `id` has one already.
    /// True if there is a writer for `id`.
    pub fn has(&self, id: &NodeId) -> bool {
        self.queues.contains_key(id)
    }

    pub fn add(&mut self, id: &NodeId, addr: &str) {
        if !self.queues.contains_key(id) {
            let queue = self.spawn_writer(id, addr);
            self.queues.insert(id.clone(), (addr.to_string(), queue));
        }
    }

    fn spawn_writer(&self, id: &NodeId, addr: &str) -> Sender<Message> {
        let (tx, rx) = crossbeam_channel::bounded(PEER_QUEUE_LEN);
        let writer = PeerWriter {
            id: id.clone(),
            addr: addr.to_string(),
            queue: rx,
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
        // Kept even if the spawn failed: `send` then finds the queue
        // disconnected and counts a drop.
        tx
    }

    /// Queues `msg` for `msg.to`. Never blocks: when that peer's queue is
    /// full the message is dropped (logged at `debug`); Raft resends.
    pub fn send(&self, msg: Message) {
        let Some((_, queue)) = self.queues.get(&msg.to) else {
            log::warn!(
                "dropping a message for {}: not one of this node's peers",
                msg.to
            );
            self.counters
                .messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        match queue.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                log::debug!(
                    "dropping a message for {}: its queue of {PEER_QUEUE_LEN} is full",
                    msg.to
                );
                self.counters
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(msg)) => {
                log::debug!("dropping a message for {}: no writer thread", msg.to);
                self.counters
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
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

/// One peer's writer thread.
struct PeerWriter {
    id: NodeId,
    addr: String,
    queue: Receiver<Message>,
    stop: Receiver<()>,
    counters: Arc<Counters>,
}

/// Encoded messages for one peer, written together.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    messages: u64,
}

/// A connection unused for this long is checked for a peer that closed it
/// before it is written to.
const IDLE_CHECK_AFTER: Duration = Duration::from_millis(10);

/// True if the peer has closed (or reset) our connection. Peers never send
/// anything on a connection we opened (messages are one-way), so anything
/// readable on it means end of file or an error.
fn peer_has_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

impl PeerWriter {
    fn run(self) {
        let mut conn: Option<TcpStream> = None;
        let mut backoff = RECONNECT_BACKOFF_MIN;
        // While a peer is unreachable, no new attempt before this instant;
        // messages arriving meanwhile are dropped rather than queued stale.
        let mut retry_at: Option<Instant> = None;
        let mut failures: u32 = 0;
        let mut last_write = Instant::now();
        loop {
            let first = crossbeam_channel::select! {
                recv(self.queue) -> msg => match msg {
                    Ok(msg) => msg,
                    Err(_) => return,
                },
                recv(self.stop) -> _ => return,
            };
            if self.stopped() {
                return;
            }
            let batch = self.encode_batch(first);
            if batch.messages == 0 {
                continue;
            }
            // A peer that restarted while this connection sat idle has
            // closed it; writing would lose the batch to a reset. Check first.
            let idle = last_write.elapsed() >= IDLE_CHECK_AFTER;
            if idle && conn.as_ref().is_some_and(peer_has_closed) {
                log::debug!("peer {} closed its connection; reconnecting", self.id);
                conn = None;
            }
            if conn.is_none() {
                if retry_at.is_some_and(|t| Instant::now() < t) {
                    self.dropped_batch(&batch, "not connected");
                    continue;
                }
                match connect(&self.addr) {
                    Ok(stream) => {
                        if failures > 0 {
                            log::info!("connected to peer {} at {}", self.id, self.addr);
                        } else {
                            log::debug!("connected to peer {} at {}", self.id, self.addr);
                        }
                        failures = 0;
                        backoff = RECONNECT_BACKOFF_MIN;
                        retry_at = None;
                        conn = Some(stream);
                    }
                    Err(e) => {
                        // Warn once per outage, not at every retry.
                        if failures == 0 {
                            log::warn!(
                                "cannot connect to peer {} at {}: {e}; retrying every {:?} at most",
                                self.id,
                                self.addr,
                                RECONNECT_BACKOFF_MAX
                            );
                        } else {
                            log::debug!("cannot connect to peer {} at {}: {e}", self.id, self.addr);
                        }
                        failures = failures.saturating_add(1);
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                        self.dropped_batch(&batch, "not connected");
                        continue;
                    }
                }
            }
            if let Some(stream) = conn.as_mut() {
                if self.write_with_one_retry(stream, &batch) {
                    last_write = Instant::now();
                } else {
                    conn = None;
                }
            }
        }
    }

    /// Writes a batch; if the connection turns out dead, reconnects once at
    /// once and writes it again (the peer most likely restarted). Returns
    /// false if the batch could not be sent.
    fn write_with_one_retry(&self, stream: &mut TcpStream, batch: &Batch) -> bool {
        let Err(e) = stream.write_all(&batch.bytes) else {
            self.sent(batch);
            return true;
        };
        log::info!(
            "lost the connection to peer {} at {}: {e}; reconnecting",
            self.id,
            self.addr
        );
        match connect(&self.addr).and_then(|mut fresh| {
            fresh.write_all(&batch.bytes)?;
            Ok(fresh)
        }) {
            Ok(fresh) => {
                *stream = fresh;
                self.sent(batch);
                true
            }
            Err(_) => {
                self.dropped_batch(batch, "connection lost");
                false
            }
        }
    }

    /// Encodes `first` and whatever else is already queued into one buffer:
    /// a burst of messages shares one write.
    fn encode_batch(&self, first: Message) -> Batch {
        let mut batch = Batch::default();
        self.encode_one(&mut batch, first);
        for _ in 1..PEER_QUEUE_LEN {
            match self.queue.try_recv() {
                Ok(msg) => self.encode_one(&mut batch, msg),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
            if batch.bytes.len() >= WRITER_BUFFER_BYTES {
                break;
            }
        }
        batch
    }

    fn encode_one(&self, batch: &mut Batch, msg: Message) {
        match encode_frame(&Frame::Peer(msg)) {
            Ok(line) => {
                if log::log_enabled!(log::Level::Debug) {
                    log::debug!(
                        "sent to {} ({}): {}",
                        self.id,
                        self.addr,
                        String::from_utf8_lossy(&line[..line.len() - 1])
                    );
                }
                batch.bytes.extend_from_slice(&line);
                batch.messages += 1;
            }
            Err(e) => {
                log::error!("dropping a message for peer {}: {e}", self.id);
                self.counters
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn sent(&self, batch: &Batch) {
        self.counters
            .messages_sent
            .fetch_add(batch.messages, Ordering::Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
    }

    fn dropped_batch(&self, batch: &Batch, why: &str) {
        log::debug!(
            "dropping {} message(s) for peer {} ({why})",
            batch.messages,
            self.id
        );
        self.counters
            .messages_dropped
            .fetch_add(batch.messages, Ordering::Relaxed);
    }

    /// True once the `Peers` that owns this writer has been dropped.
    fn stopped(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::read_frame;
    use crate::transport::test_support::{fake_driver, start_node, vote, DEADLINE};
    use std::io::BufReader;
    use std::net::TcpListener;
    use std::time::Duration;

    // -- peers ----------------------------------------------------------

    #[test]
    fn peers_deliver_through_a_listener() {
        let node = start_node("8001", &["8000"]);
        let peer_msgs = fake_driver(node.inbound);
        let peers = Peers::start(&BTreeMap::from([(NodeId::new("8001"), node.addr.clone())]));
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
        let peers = Peers::start(&BTreeMap::new());
        peers.send(vote("8000", "8009"));
        assert_eq!(peers.messages_dropped(), 1);
    }

    #[test]
    fn writers_stop_when_peers_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let peers = Peers::start(&BTreeMap::from([(NodeId::new("8001"), addr)]));
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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (accepted_tx, accepted) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if accepted_tx.send(conn).is_err() {
                    return;
                }
            }
        });
        let peers = Peers::start(&BTreeMap::from([(NodeId::new("8001"), addr)]));
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
}
