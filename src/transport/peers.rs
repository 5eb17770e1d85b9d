//! Outbound: sending to the other nodes.
//!
//! Each peer has a connection and a writer thread. The writer does the slow
//! work: connecting, reconnecting after a failure, and writing a backlog that
//! would block. But the common case, a message or two for a peer whose
//! socket has room, is written by the state-machine thread itself, at once
//! and without blocking: handing it to the writer would cost a thread
//! wake-up, and on a small machine a wake-up costs more than the write (tens
//! of microseconds; a 1-client write crosses this path twice, see the
//! measurements in [`bench`](mod@crate::bench)).
//!
//! Messages to one peer stay in order: the state-machine thread writes
//! directly only when nothing is queued for the writer, the writer holds the
//! connection's lock while it writes, and a frame the socket took only part
//! of is finished by the writer before anything else.

use super::auth::{self, Credentials, Opener, Role, Sealer};
use super::frame::encode_json;
use super::{
    connect, write_nonblocking, PEER_QUEUE_LEN, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN,
    WRITER_BUFFER_BYTES,
};
use crate::message::{Frame, Message, NodeId};
use crate::throttle::Throttle;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
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
    /// sealed for a connection) but could not write without blocking.
    Encoded(Vec<u8>),
    /// Finish the frame the state-machine thread wrote only part of (the
    /// rest is in [`Connection::unsent`]).
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
        let writer = PeerWriter {
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
        if let Some(job) = self.write_now(peer, msg) {
            self.enqueue(peer, job);
        }
    }

    /// The fast path: writes `msg` on this thread without blocking. Returns
    /// what is left for the writer thread, if anything.
    fn write_now(&self, peer: &PeerHandle, msg: Message) -> Option<Job> {
        if peer.link.queued.load(Ordering::Acquire) != 0 {
            return Some(Job::Send(msg)); // not before what is queued
        }
        // Held by the writer while it connects or writes: leave it the work.
        let Ok(mut conn) = peer.link.conn.try_lock() else {
            return Some(Job::Send(msg));
        };
        let ready = peer.link.queued.load(Ordering::Acquire) == 0
            && conn.unsent.is_empty()
            && conn.last_write.elapsed() < IDLE_CHECK_AFTER;
        if conn.stream.is_none() || !ready {
            return Some(Job::Send(msg));
        }
        let json = match encode_json(&Frame::Peer(msg)) {
            Ok(json) => json,
            Err(e) => {
                log::error!("dropping a message for peer {}: {e}", peer.addr);
                self.counters.dropped(1);
                return None;
            }
        };
        let Ok(bytes) = conn.sealer.seal(&json) else {
            conn.stream = None; // out of sequence numbers: a new connection
            return Some(Job::Encoded(json));
        };
        log_sent(&peer.addr, &bytes);
        let stream = conn.stream.as_ref()?;
        match write_nonblocking(stream, &bytes) {
            Ok(n) if n == bytes.len() => {
                conn.last_write = Instant::now();
                self.counters.sent(1, n);
                None
            }
            Ok(0) => {
                // Nothing left: the writer seals it again, with this number.
                conn.sealer.unseal_last();
                Some(Job::Encoded(json))
            }
            Ok(n) => {
                conn.last_write = Instant::now();
                self.counters.sent(0, n);
                conn.unsent = bytes[n..].to_vec();
                Some(Job::Finish)
            }
            Err(e) => {
                log::debug!(
                    "writing to peer {} failed: {e}; its writer reconnects",
                    peer.addr
                );
                conn.stream = None;
                Some(Job::Encoded(json))
            }
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

/// The lines of a batch, sealed for one connection, in one buffer.
fn seal_batch(sealer: &mut Sealer, batch: &Batch) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(batch.bytes + batch.jsons.len() * 66);
    for json in &batch.jsons {
        let line = sealer
            .seal(json)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        bytes.extend_from_slice(&line);
    }
    Ok(bytes)
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

/// One peer's writer thread.
struct PeerWriter {
    /// This node, as it introduces itself in the handshake.
    self_id: NodeId,
    creds: Credentials,
    id: NodeId,
    addr: String,
    queue: Receiver<Job>,
    link: Arc<Link>,
    stop: Receiver<()>,
    counters: Arc<Counters>,
}

/// Encoded messages for one peer, written together. Each is sealed for the
/// connection it goes out on only when it is written.
#[derive(Default)]
struct Batch {
    /// Each message's JSON, without newline or MAC.
    jsons: Vec<Vec<u8>>,
    bytes: usize,
    messages: u64,
    /// Jobs taken from the queue for this batch (done when it is written or
    /// dropped).
    jobs: usize,
}

/// True if the peer has closed (or reset) our connection. Peers send
/// nothing on a connection we opened (messages are one-way) except, just
/// before they close it, the reason they refuse us, which is logged here.
fn peer_has_closed(stream: &TcpStream, opener: &mut Opener, id: &NodeId) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => {
            log_refusal(stream, opener, id);
            true
        }
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

/// Reads the refusal a peer sent before closing our connection, and logs
/// it (rate-limited: a refused node is refused at every retry).
fn log_refusal(stream: &TcpStream, opener: &mut Opener, id: &NodeId) {
    const MAX_REFUSAL_BYTES: u64 = 4096;
    let mut line = Vec::new();
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = std::io::BufRead::read_until(
        &mut BufReader::new(stream.take(MAX_REFUSAL_BYTES)),
        b'\n',
        &mut line,
    );
    let text = String::from_utf8_lossy(&line);
    match auth::read_refusal(opener, text.trim_end()) {
        Some(reason) => auth::warn_rate_limited("refused-by-peer", || {
            format!("peer {id} refused this node's messages: {reason}")
        }),
        None => log::debug!("peer {id} sent something unexpected: {text:?}"),
    }
}

/// A writer's record of failed connection attempts.
struct Reconnect {
    backoff: Duration,
    /// While a peer is unreachable, no new attempt before this instant;
    /// messages arriving meanwhile are dropped rather than queued stale.
    retry_at: Option<Instant>,
    failures: u32,
}

impl Reconnect {
    fn new() -> Reconnect {
        Reconnect {
            backoff: RECONNECT_BACKOFF_MIN,
            retry_at: None,
            failures: 0,
        }
    }

    /// Connects to the peer and authenticates the connection, unless the
    /// last attempt failed too recently.
    fn connect(&mut self, writer: &PeerWriter) -> Option<(TcpStream, Sealer, Opener)> {
        let (id, addr) = (&writer.id, writer.addr.as_str());
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        match connect(addr).and_then(|stream| writer.handshake(stream)) {
            Ok(stream) => {
                if self.failures > 0 {
                    log::info!("connected to peer {id} at {addr}");
                } else {
                    log::debug!("connected to peer {id} at {addr}");
                }
                *self = Reconnect::new();
                Some(stream)
            }
            Err(e) => {
                // Warn once per outage, not at every retry; and, since a
                // message from an invented node can start a writer to it
                // (see `node`), at most a line a second over all peers.
                // Info, not a warning: a peer not started yet is normal, and
                // the node says whom it waits for on its console.
                static CANNOT_CONNECT: Throttle = Throttle::new();
                let note = (self.failures == 0 && e.kind() != io::ErrorKind::PermissionDenied)
                    .then(|| CANNOT_CONNECT.allow())
                    .flatten();
                // (Refused in the handshake: already logged, rate-limited.)
                if let Some(note) = note {
                    log::info!(
                        "cannot connect to peer {id} at {addr}: {e}; retrying every {RECONNECT_BACKOFF_MAX:?} at most{note}"
                    );
                } else {
                    log::debug!("cannot connect to peer {id} at {addr}: {e}");
                }
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
                None
            }
        }
    }
}

impl PeerWriter {
    /// The handshake on a new connection (see `auth`). A refusal is logged
    /// here (rate-limited) and comes back as `PermissionDenied`.
    fn handshake(&self, stream: TcpStream) -> io::Result<(TcpStream, Sealer, Opener)> {
        stream.set_read_timeout(Some(auth::HANDSHAKE_TIMEOUT))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let outcome = auth::connect_handshake(
            &self.creds,
            self.self_id.as_str(),
            Role::Peer,
            &mut reader,
            &mut &stream,
        );
        match outcome {
            Ok((sealer, opener)) => {
                stream.set_read_timeout(None)?;
                Ok((stream, sealer, opener))
            }
            Err(auth::HandshakeError::Io(e)) => Err(e),
            Err(e) => {
                auth::warn_rate_limited(e.kind(), || {
                    format!("cannot talk to peer {} at {}: {e}", self.id, self.addr)
                });
                Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    e.to_string(),
                ))
            }
        }
    }

    fn run(self) {
        let mut reconnect = Reconnect::new();
        loop {
            let first = crossbeam_channel::select! {
                recv(self.queue) -> job => match job {
                    Ok(job) => job,
                    Err(_) => return,
                },
                recv(self.stop) -> _ => return,
            };
            if self.stopped() {
                return;
            }
            let batch = self.encode_batch(first);
            // Holding the lock keeps the state-machine thread off this
            // connection while the writer connects or writes (it queues).
            let Ok(mut conn) = self.link.conn.lock() else {
                return; // a thread panicked holding it: give up on this peer
            };
            self.deliver(&mut conn, &batch, &mut reconnect);
            self.link.queued.fetch_sub(batch.jobs, Ordering::AcqRel);
        }
    }

    /// Writes what the state-machine thread left unfinished, then `batch`,
    /// connecting first if need be.
    fn deliver(&self, conn: &mut Connection, batch: &Batch, reconnect: &mut Reconnect) {
        // A peer that restarted while this connection sat idle has closed
        // it; writing would lose the batch to a reset. Check first.
        let idle = conn.last_write.elapsed() >= IDLE_CHECK_AFTER;
        let Connection { stream, opener, .. } = &mut *conn;
        if idle
            && stream
                .as_ref()
                .is_some_and(|s| peer_has_closed(s, opener, &self.id))
        {
            log::debug!("peer {} closed its connection; reconnecting", self.id);
            conn.stream = None;
        }
        // The tail of a frame the state-machine thread began goes first, on
        // the connection it began on; without that connection it is lost.
        let unsent = std::mem::take(&mut conn.unsent);
        let finished = match conn.stream.as_mut() {
            Some(stream) => self.finish_frame(stream, &unsent),
            None => {
                if !unsent.is_empty() {
                    self.counters.dropped(1);
                }
                true
            }
        };
        if !finished {
            conn.stream = None;
        }
        if batch.jsons.is_empty() {
            return;
        }
        if conn.stream.is_none() {
            if let Some((stream, sealer, opener)) = reconnect.connect(self) {
                *conn = Connection {
                    stream: Some(stream),
                    sealer,
                    opener,
                    unsent: Vec::new(),
                    last_write: Instant::now(),
                };
            }
        }
        if conn.stream.is_none() {
            self.dropped_batch(batch, "not connected");
            return;
        }
        if self.write_with_one_retry(conn, batch) {
            conn.last_write = Instant::now();
        } else {
            conn.stream = None;
        }
    }

    /// Writes the rest of a frame the state-machine thread began. False if
    /// the connection failed (the frame is lost with it).
    fn finish_frame(&self, stream: &mut TcpStream, unsent: &[u8]) -> bool {
        if unsent.is_empty() {
            return true;
        }
        match stream.write_all(unsent) {
            Ok(()) => {
                self.counters.sent(1, unsent.len());
                true
            }
            Err(e) => {
                log::info!(
                    "lost the connection to peer {} at {}: {e}; reconnecting",
                    self.id,
                    self.addr
                );
                self.counters.dropped(1);
                false
            }
        }
    }

    /// Writes a batch; if the connection turns out dead, reconnects once at
    /// once and writes it again (the peer most likely restarted). Returns
    /// false if the batch could not be sent.
    fn write_with_one_retry(&self, conn: &mut Connection, batch: &Batch) -> bool {
        if batch.jsons.is_empty() {
            return true;
        }
        let Some(stream) = conn.stream.as_mut() else {
            return false;
        };
        let written = seal_batch(&mut conn.sealer, batch)
            .and_then(|bytes| stream.write_all(&bytes).map(|()| bytes.len()));
        let e = match written {
            Ok(len) => {
                self.counters.sent(batch.messages, len);
                return true;
            }
            Err(e) => e,
        };
        log::info!(
            "lost the connection to peer {} at {}: {e}; reconnecting",
            self.id,
            self.addr
        );
        let fresh = connect(&self.addr)
            .and_then(|stream| self.handshake(stream))
            .and_then(|(mut stream, mut sealer, opener)| {
                let bytes = seal_batch(&mut sealer, batch)?;
                stream.write_all(&bytes)?;
                Ok((stream, sealer, opener, bytes.len()))
            });
        match fresh {
            Ok((stream, sealer, opener, len)) => {
                conn.stream = Some(stream);
                conn.sealer = sealer;
                conn.opener = opener;
                self.counters.sent(batch.messages, len);
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
    fn encode_batch(&self, first: Job) -> Batch {
        let mut batch = Batch::default();
        self.add_job(&mut batch, first);
        while batch.jobs < PEER_QUEUE_LEN && batch.bytes < WRITER_BUFFER_BYTES {
            match self.queue.try_recv() {
                Ok(job) => self.add_job(&mut batch, job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        batch
    }

    fn add_job(&self, batch: &mut Batch, job: Job) {
        batch.jobs += 1;
        match job {
            Job::Send(msg) => match encode_json(&Frame::Peer(msg)) {
                Ok(json) => {
                    log_sent(&self.addr, &json);
                    batch.bytes += json.len();
                    batch.jsons.push(json);
                    batch.messages += 1;
                }
                Err(e) => {
                    log::error!("dropping a message for peer {}: {e}", self.id);
                    self.counters.dropped(1);
                }
            },
            Job::Encoded(json) => {
                batch.bytes += json.len();
                batch.jsons.push(json);
                batch.messages += 1;
            }
            Job::Finish => {}
        }
    }

    fn dropped_batch(&self, batch: &Batch, why: &str) {
        log::debug!(
            "dropping {} message(s) for peer {} ({why})",
            batch.messages,
            self.id
        );
        self.counters.dropped(batch.messages);
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

    #[test]
    fn writers_stop_when_peers_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let peers = Peers::start(
            NodeId::new("8000"),
            Credentials::insecure(),
            &BTreeMap::from([(NodeId::new("8001"), addr)]),
        );
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
        let peers = Peers::start(
            NodeId::new("8000"),
            Credentials::insecure(),
            &BTreeMap::from([(NodeId::new("8001"), addr)]),
        );
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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let peers = Peers::start(
            NodeId::new("8000"),
            Credentials::insecure(),
            &BTreeMap::from([(NodeId::new("8001"), addr)]),
        );
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

    /// A peer handle with no writer thread, connected to `listener`, as the
    /// state-machine thread sees it.
    fn connected_handle(listener: &TcpListener) -> (PeerHandle, Receiver<Job>) {
        let addr = listener.local_addr().expect("addr").to_string();
        let stream = TcpStream::connect(&addr).expect("connect");
        let (tx, rx) = crossbeam_channel::bounded(PEER_QUEUE_LEN);
        let link = Arc::new(Link {
            conn: Mutex::new(Connection {
                stream: Some(stream),
                sealer: Sealer::plain(),
                opener: Opener::plain(),
                unsent: Vec::new(),
                last_write: Instant::now(),
            }),
            queued: AtomicUsize::new(0),
        });
        let handle = PeerHandle {
            addr,
            queue: tx,
            link,
        };
        (handle, rx)
    }

    #[test]
    fn the_state_machine_thread_writes_only_when_nothing_is_queued() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let peers = Peers::start(
            NodeId::new("8000"),
            Credentials::insecure(),
            &BTreeMap::new(),
        );
        let (handle, _queue) = connected_handle(&listener);
        // Idle, connected, room in the socket: written at once.
        assert!(peers.write_now(&handle, vote("8000", "8001")).is_none());
        assert_eq!(peers.messages_sent(), 1);
        // A message still queued for the writer must not be overtaken.
        handle.link.queued.store(1, Ordering::Release);
        let left = peers.write_now(&handle, vote("8000", "8001"));
        assert!(matches!(left, Some(Job::Send(_))), "{left:?}");
        handle.link.queued.store(0, Ordering::Release);
        // Nor the end of a frame the socket took only part of.
        if let Ok(mut conn) = handle.link.conn.lock() {
            conn.unsent = b"rest of a frame\n".to_vec();
        }
        let left = peers.write_now(&handle, vote("8000", "8001"));
        assert!(matches!(left, Some(Job::Send(_))), "{left:?}");
        assert_eq!(peers.messages_sent(), 1);
    }
}
