//! Networking: the listener, its connection readers, the peer writers, and
//! the framing they share with `raft client`.
//!
//! ```text
//!  peers/clients ──► [listener thread] ──► [one reader thread per connection]
//!                                                   │ Inbound (crossbeam)
//!                                                   ▼
//!                                       [state-machine thread: node::run]
//!                                                   │ Peers::send (never blocks)
//!                                                   ▼
//!                                 [one writer thread per peer: connect, write]
//! ```
//!
//! The wire is newline-delimited JSON: one [`Frame`] per line, peers and
//! clients on the node's one port, so a person can watch it with `nc`.
//! Messages between peers are one-way (a response is a message too, sent on
//! the responder's own outgoing connection), so a node only ever *reads* from
//! the connections it accepts, except to answer a client on its connection.
//!
//! Every line has a size limit, every queue a length, and the number of
//! connections is capped. Anything malformed is logged with the remote
//! address, its connection is closed, and the node carries on: nothing from
//! it reaches the core.
//!
//! Threads here are never joined: they end with the process. A reader ends
//! when its connection closes or the state-machine thread is gone; a writer
//! ends when its [`Peers`] is dropped.

use crate::message::{
    ClientRequest, ClientResponse, ClientResult, Frame, Message, MessageBody, NodeId,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest line (one frame, not counting its newline) a node accepts or
/// sends. Large enough for a generous AppendEntries batch; small enough that
/// a peer sending garbage without a newline cannot make us buffer without
/// bound. The core must keep its batches below this.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// How many messages may wait for one peer's writer. When it is full (the
/// peer is slow or unreachable) further messages are dropped: Raft tolerates
/// lost messages and resends what matters on the next heartbeat, whereas a
/// driver blocked on one slow peer would stop the whole node.
pub const PEER_QUEUE_LEN: usize = 1024;

/// The most connections a node serves at once. Each connection is a reader
/// thread, so this bounds the threads a flood of clients can make us spawn.
/// Peers need only one each, so a cluster is far below it.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a connection reader waits for the state-machine thread to answer
/// a client request before answering the client with an error itself. Longer
/// than `raft client`'s default deadline, so normally the client gives up
/// first; the point is that a reader thread is never stuck forever.
pub const CLIENT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may stay silent before it has shown itself to be
/// a peer. Client connections (and connections that have not sent anything
/// yet) are closed after this, so idle clients cannot hold all
/// [`MAX_CONNECTIONS`] slots. Peer connections have no idle limit: a
/// follower may not write to another follower for a long time, and that is
/// normal.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a peer writer waits for a TCP connection to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a peer writer waits for one write before it decides the
/// connection is dead and reconnects. A peer that stopped reading (paused,
/// overloaded) would otherwise hold its writer forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The first wait before retrying a failed connection to a peer...
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// ...doubling after each failure up to this, so a node that is down costs
/// its peers a connection attempt at most twice a second.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// After `accept` fails (for example: out of file descriptors), wait this
/// long before accepting again instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The buffer of a peer writer: one syscall carries many small messages.
const WRITER_BUFFER_BYTES: usize = 64 * 1024;

/// Binds the node's one port, for peers and clients alike.
///
/// The error names the address and says what to do, because this is the
/// first thing that goes wrong when a person starts a node.
pub fn bind(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| bind_error(addr, &e))
}

fn bind_error(addr: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "cannot listen on {addr}: address already in use (is another node running on this port?)"
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "cannot listen on {addr}: this machine has no such address (check --bind)"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "cannot listen on {addr}: permission denied (ports below 1024 need privileges; use a higher port)"
        ),
        _ => format!("cannot listen on {addr}: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Why a line could not be read as a [`Frame`].
#[derive(Debug)]
pub enum FrameError {
    /// The socket failed (reset, timed out, ...).
    Io(io::Error),
    /// More than `limit` bytes arrived without a newline.
    TooLong { limit: usize },
    /// The connection closed after `bytes` bytes of a line with no newline.
    Truncated { bytes: usize },
    /// The line is not UTF-8; `valid_up_to` bytes of it were.
    NotUtf8 { valid_up_to: usize },
    /// The line is not JSON, or not a JSON `Frame`.
    Malformed(serde_json::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "read failed: {e}"),
            FrameError::TooLong { limit } => {
                write!(f, "line longer than the limit of {limit} bytes")
            }
            FrameError::Truncated { bytes } => write!(
                f,
                "connection closed in the middle of a line ({bytes} bytes without a newline)"
            ),
            FrameError::NotUtf8 { valid_up_to } => {
                write!(
                    f,
                    "line is not UTF-8 (invalid byte at offset {valid_up_to})"
                )
            }
            FrameError::Malformed(e) => write!(f, "not a valid frame: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            FrameError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> FrameError {
        FrameError::Io(e)
    }
}

/// Encodes a frame as one line, newline included.
///
/// JSON escapes newlines inside strings, so the only newline is the last
/// byte. Refuses a frame the receiving side would reject as too long: better
/// to fail here, where the caller can log it, than to have the peer close
/// the connection.
pub fn encode_frame(frame: &Frame) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(frame).map_err(io::Error::other)?;
    if line.len() > MAX_LINE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes is over the line limit of {MAX_LINE_BYTES} bytes",
                line.len()
            ),
        ));
    }
    line.push(b'\n');
    Ok(line)
}

/// Writes one frame as one line. Does not flush: a `BufWriter` caller
/// decides when (see the peer writer, which batches).
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&encode_frame(frame)?)
}

/// Reads the next frame: `Ok(None)` on a clean end of stream (between
/// lines). Blank lines are skipped, so a person typing into `nc` may press
/// Enter twice.
///
/// At most [`MAX_LINE_BYTES`] + 1 bytes are buffered for one line, however
/// much the other side sends: the read goes through a `take` limit.
pub fn read_frame(r: &mut impl BufRead) -> Result<Option<Frame>, FrameError> {
    read_frame_limited(r, MAX_LINE_BYTES)
}

fn read_frame_limited(r: &mut impl BufRead, limit: usize) -> Result<Option<Frame>, FrameError> {
    loop {
        let mut line = Vec::new();
        // One byte more than the limit: a line of exactly `limit` bytes plus
        // its newline still fits.
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        let n = (&mut *r).take(cap).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            return Err(if n > limit {
                FrameError::TooLong { limit }
            } else {
                FrameError::Truncated { bytes: n }
            });
        }
        let text = std::str::from_utf8(&line).map_err(|e| FrameError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(text)
            .map(Some)
            .map_err(FrameError::Malformed);
    }
}

/// The frame as its JSON line, for `debug` logs: the learner sees exactly
/// what travels on the wire.
fn frame_for_log(frame: &Frame) -> String {
    serde_json::to_string(frame).unwrap_or_else(|e| format!("<unprintable frame: {e}>"))
}

// ---------------------------------------------------------------------------
// Inbound: the listener and its connection readers
// ---------------------------------------------------------------------------

/// What the connection readers hand to the state-machine thread.
#[derive(Debug)]
pub enum Inbound {
    /// A message from another member, already checked to be addressed to us
    /// by a member of the cluster.
    Peer(Message),
    /// A client request. The state-machine thread answers on `reply` (a
    /// `bounded(1)` channel, so sending never blocks); the connection's
    /// reader thread waits for it and writes it back to the client. Dropping
    /// `reply` without answering makes the reader answer with an error.
    Client {
        request: ClientRequest,
        reply: Reply,
    },
}

/// Who may send this node peer messages: the other members. Shared between
/// the driver, which updates it when the membership changes, and the
/// connection readers. An empty set (a node that is joining and does not
/// know the cluster yet) lets any peer in; the protocol core still decides
/// what to accept.
#[derive(Clone, Debug, Default)]
pub struct Members(Arc<std::sync::RwLock<BTreeSet<NodeId>>>);

impl Members {
    pub fn new(ids: BTreeSet<NodeId>) -> Members {
        Members(Arc::new(std::sync::RwLock::new(ids)))
    }

    /// Replaces the set (after a membership change).
    pub fn set(&self, ids: BTreeSet<NodeId>) {
        if let Ok(mut members) = self.0.write() {
            *members = ids;
        }
    }

    fn allows(&self, id: &NodeId) -> bool {
        self.0
            .read()
            .map(|members| members.is_empty() || members.contains(id))
            .unwrap_or(false)
    }

    fn describe(&self) -> String {
        self.0
            .read()
            .map(|members| join_ids(&members))
            .unwrap_or_default()
    }
}

/// Spawns the listener thread: it accepts connections and starts one reader
/// thread for each, at most [`MAX_CONNECTIONS`] at a time.
///
/// `members` are the nodes allowed to send us peer messages (the other
/// members). A peer frame from anyone else, from `self_id` itself, or
/// addressed to anyone but `self_id`, means a misconfigured cluster: it is
/// logged and its connection closed, so it never reaches the core.
///
/// The listener thread runs until the process exits; the handle is for
/// naming and inspection, not for joining.
///
/// A reader blocks when `inbound` is full: that is back-pressure on the
/// sender, by design. When the receiving side of `inbound` is gone the
/// readers end quietly.
pub fn spawn_listener(
    listener: TcpListener,
    self_id: NodeId,
    members: Members,
    inbound: Sender<Inbound>,
) -> io::Result<JoinHandle<()>> {
    let local = listener.local_addr()?;
    let ctx = Arc::new(ReaderContext {
        self_id,
        members,
        inbound,
    });
    thread::Builder::new()
        .name(format!("raft-listener-{local}"))
        .spawn(move || accept_loop(listener, ctx))
}

/// What every connection reader needs; shared, read-only.
struct ReaderContext {
    self_id: NodeId,
    members: Members,
    inbound: Sender<Inbound>,
}

/// Counts a live connection; the count goes down when the reader ends,
/// however it ends (including a failed thread spawn, which drops it).
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, ctx: Arc<ReaderContext>) {
    let live = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accepting a connection failed: {e}; retrying");
                thread::sleep(ACCEPT_ERROR_BACKOFF);
                continue;
            }
        };
        let remote = match stream.peer_addr() {
            Ok(a) => a,
            Err(e) => {
                log::debug!("connection closed before it could be served: {e}");
                continue;
            }
        };
        if live.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            live.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                "refusing connection from {remote}: already serving {MAX_CONNECTIONS} connections"
            );
            continue; // dropping `stream` closes it
        }
        let slot = ConnectionSlot(Arc::clone(&live));
        let ctx = Arc::clone(&ctx);
        let spawned = thread::Builder::new()
            .name(format!("raft-conn-{remote}"))
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, remote, &ctx);
            });
        if let Err(e) = spawned {
            log::error!("cannot start a thread for the connection from {remote}: {e}; closing it");
        }
    }
}

/// Reads frames from one connection until it closes or misbehaves.
fn serve_connection(stream: TcpStream, remote: SocketAddr, ctx: &ReaderContext) {
    log::debug!("connection from {remote}");
    // Replies to clients are single small lines: send them at once.
    let _ = stream.set_nodelay(true);
    if let Err(e) = stream.set_read_timeout(Some(CLIENT_IDLE_TIMEOUT)) {
        log::warn!("closing connection from {remote}: cannot set a read timeout: {e}");
        return;
    }
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log::warn!("closing connection from {remote}: {e}");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    let mut known_peer = false;
    loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                log::debug!("connection from {remote} closed");
                return;
            }
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                log::debug!("closing connection from {remote}: idle for {CLIENT_IDLE_TIMEOUT:?}");
                return;
            }
            Err(e) => {
                log::warn!("closing connection from {remote}: {e}");
                return;
            }
        };
        match frame {
            Frame::Peer(msg) => {
                if msg.from == ctx.self_id {
                    log::warn!(
                        "closing connection from {remote}: it sent a message from {}, which is this node's own id; is a second node running with the same address?",
                        msg.from
                    );
                    return;
                }
                // A leader this node does not know yet may be real: a member
                // that missed the entry adding it must still follow it
                // (dissertation §4.1). The core decides; anything else from a
                // stranger is refused here.
                let from_a_leader = matches!(
                    msg.body,
                    MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. }
                );
                if !from_a_leader && !ctx.members.allows(&msg.from) {
                    log::warn!(
                        "closing connection from {remote}: it sent a message from {}, which is not a member of this cluster ({}); start every node with the same members",
                        msg.from,
                        ctx.members.describe()
                    );
                    return;
                }
                if msg.to != ctx.self_id {
                    log::warn!(
                        "closing connection from {remote}: node {} sent a message for {}, but this node is {}; check the --peers and --bind of node {}",
                        msg.from, msg.to, ctx.self_id, msg.from
                    );
                    return;
                }
                if !known_peer {
                    // A peer may stay silent for long (followers rarely
                    // talk to each other): no idle limit from now on.
                    known_peer = true;
                    if let Err(e) = writer.set_read_timeout(None) {
                        log::warn!("closing connection from {remote}: {e}");
                        return;
                    }
                }
                // (log arguments are only evaluated when debug is on)
                log::debug!(
                    "received from {} ({remote}): {}",
                    msg.from,
                    frame_for_log(&Frame::Peer(msg.clone()))
                );
                if ctx.inbound.send(Inbound::Peer(msg)).is_err() {
                    return; // the state-machine thread is gone: shutting down
                }
            }
            Frame::Request(request) => {
                log::debug!(
                    "received from client {remote}: {}",
                    frame_for_log(&Frame::Request(request.clone()))
                );
                let Some(response) = ask_driver(ctx, request) else {
                    return;
                };
                let frame = Frame::Response(response);
                log::debug!("sent to client {remote}: {}", frame_for_log(&frame));
                if let Err(e) = write_frame(&mut writer, &frame).and_then(|()| writer.flush()) {
                    log::debug!("could not answer client {remote}: {e}");
                    return;
                }
            }
            Frame::Response(_) => {
                log::warn!(
                    "closing connection from {remote}: it sent a response frame, which only a node sends, to a client"
                );
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Where the state-machine thread puts its answer to one client request.
///
/// A one-shot slot rather than a channel: the connection thread waiting on
/// it sleeps at once instead of spinning first, which under many clients
/// costs more CPU than the whole protocol (measured with `raft bench`).
/// Dropping a `Reply` without sending tells the waiter the node gave up.
#[derive(Debug)]
pub struct Reply(Arc<ReplySlot>);

#[derive(Debug, Default)]
struct ReplySlot {
    state: std::sync::Mutex<ReplyState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct ReplyState {
    answer: Option<ClientResponse>,
    dropped: bool,
}

/// The waiting side of a [`Reply`].
struct ReplyWait(Arc<ReplySlot>);

impl Reply {
    fn new() -> (Reply, ReplyWait) {
        let slot = Arc::new(ReplySlot::default());
        (Reply(Arc::clone(&slot)), ReplyWait(slot))
    }

    /// Answers the request. Never blocks; if the client is gone, nothing
    /// happens.
    pub fn send(self, response: ClientResponse) {
        if let Ok(mut state) = self.0.state.lock() {
            state.answer = Some(response);
        }
        self.0.changed.notify_one();
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.dropped = true;
        }
        self.0.changed.notify_one();
    }
}

impl ReplyWait {
    fn wait(&self, timeout: Duration) -> Result<ClientResponse, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let Ok(mut state) = self.0.state.lock() else {
            return Err(RecvTimeoutError::Disconnected);
        };
        loop {
            if let Some(answer) = state.answer.take() {
                return Ok(answer);
            }
            if state.dropped {
                return Err(RecvTimeoutError::Disconnected);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            state = match self.0.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(_) => return Err(RecvTimeoutError::Disconnected),
            };
        }
    }
}

/// Hands a client request to the state-machine thread and waits for its
/// answer. `None` when the state-machine thread is gone (shutting down).
fn ask_driver(ctx: &ReaderContext, request: ClientRequest) -> Option<ClientResponse> {
    let id = request.id;
    let (reply, answer) = Reply::new();
    if ctx
        .inbound
        .send(Inbound::Client { request, reply })
        .is_err()
    {
        return None;
    }
    let message = match answer.wait(CLIENT_REPLY_TIMEOUT) {
        Ok(response) => return Some(response),
        Err(RecvTimeoutError::Timeout) => format!(
            "the node did not answer within {CLIENT_REPLY_TIMEOUT:?}; the command may or may not take effect"
        ),
        Err(RecvTimeoutError::Disconnected) => {
            "the node dropped the request without answering (is it shutting down?)".to_string()
        }
    };
    Some(ClientResponse {
        id,
        result: ClientResult::Error { message },
    })
}

fn join_ids(ids: &BTreeSet<NodeId>) -> String {
    let names: Vec<&str> = ids.iter().map(NodeId::as_str).collect();
    names.join(", ")
}

// ---------------------------------------------------------------------------
// Outbound: one writer thread per peer
// ---------------------------------------------------------------------------

/// Counters of what the peer writers did, shared with their threads.
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

/// Connects to `addr` ("host:port"), trying each address it resolves to,
/// each within [`CONNECT_TIMEOUT`]. Shared with the client.
pub(crate) fn connect(addr: &str) -> io::Result<TcpStream> {
    connect_within(addr, CONNECT_TIMEOUT)
}

/// Like [`connect`], with the caller's timeout per address. Sets
/// `TCP_NODELAY` (Raft messages are small and latency-bound) and a write
/// timeout of at most [`WRITE_TIMEOUT`].
pub(crate) fn connect_within(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last_error = None;
    for sock in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sock, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                return Ok(stream);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} does not resolve to any address"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientCommand, MessageBody};
    use std::io::Cursor;

    /// Long enough for a slow CI machine; tests wait on events, not on this.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn vote(from: &str, to: &str) -> Message {
        Message {
            from: NodeId::new(from),
            to: NodeId::new(to),
            term: 3,
            body: MessageBody::RequestVote {
                last_log_index: 7,
                last_log_term: 2,
                leadership_transfer: false,
            },
        }
    }

    fn request(id: u64) -> ClientRequest {
        ClientRequest {
            id,
            command: ClientCommand::Get,
        }
    }

    // -- framing --------------------------------------------------------

    #[test]
    fn frames_round_trip_one_per_line() {
        let frames = vec![
            Frame::Peer(vote("8000", "8001")),
            Frame::Request(ClientRequest {
                id: 1,
                command: ClientCommand::Set {
                    value: "two\nlines".into(),
                },
            }),
            Frame::Response(ClientResponse {
                id: 1,
                result: ClientResult::Written { index: 4 },
            }),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f).expect("write to a Vec");
        }
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), frames.len());
        let mut r = Cursor::new(wire);
        for f in &frames {
            assert_eq!(read_frame(&mut r).expect("valid frame").as_ref(), Some(f));
        }
        assert!(read_frame(&mut r).expect("clean EOF").is_none());
    }

    #[test]
    fn clean_eof_is_none_and_blank_lines_are_skipped() {
        assert!(read_frame(&mut Cursor::new(b"")).expect("empty").is_none());
        assert!(read_frame(&mut Cursor::new(b"\n  \r\n"))
            .expect("blank lines")
            .is_none());
    }

    #[test]
    fn eof_in_the_middle_of_a_line_is_an_error() {
        let err = read_frame(&mut Cursor::new(b"{\"request\":")).expect_err("truncated");
        assert!(matches!(err, FrameError::Truncated { bytes: 11 }), "{err}");
    }

    #[test]
    fn malformed_json_is_rejected() {
        for line in [
            &b"not json\n"[..],
            b"{\"peer\":{\"from\":\"8000\"}}\n",
            b"{\"unknown\":{}}\n",
        ] {
            let err = read_frame(&mut Cursor::new(line)).expect_err("malformed");
            assert!(matches!(err, FrameError::Malformed(_)), "{err}");
        }
    }

    #[test]
    fn non_utf8_is_rejected() {
        let err = read_frame(&mut Cursor::new(b"{\"a\xff\":1}\n")).expect_err("bad utf8");
        assert!(
            matches!(err, FrameError::NotUtf8 { valid_up_to: 3 }),
            "{err}"
        );
    }

    #[test]
    fn a_line_at_the_limit_is_accepted() {
        let line = serde_json::to_vec(&Frame::Request(request(5))).expect("encode");
        let mut wire = line.clone();
        wire.push(b'\n');
        let got = read_frame_limited(&mut Cursor::new(wire), line.len()).expect("fits");
        assert_eq!(got, Some(Frame::Request(request(5))));
    }

    #[test]
    fn oversized_line_is_rejected_without_reading_it_all() {
        // An endless stream with no newline: an unbounded reader would never
        // return (or run out of memory). The limit makes it stop.
        let mut endless = BufReader::new(io::repeat(b'a'));
        let err = read_frame_limited(&mut endless, 1000).expect_err("too long");
        assert!(matches!(err, FrameError::TooLong { limit: 1000 }), "{err}");
        // And with the real limit (reads MAX_LINE_BYTES + 1, then stops).
        let mut endless = BufReader::new(io::repeat(b' '));
        let err = read_frame(&mut endless).expect_err("too long");
        assert!(matches!(err, FrameError::TooLong { .. }), "{err}");
    }

    #[test]
    fn encode_refuses_what_the_receiver_would_reject() {
        let huge = Frame::Request(ClientRequest {
            id: 1,
            command: ClientCommand::Set {
                value: "x".repeat(MAX_LINE_BYTES),
            },
        });
        let err = encode_frame(&huge).expect_err("too big");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn bind_explains_an_address_in_use() {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let addr = first.local_addr().expect("local addr").to_string();
        let err = bind(&addr).expect_err("already bound");
        assert_eq!(
            err,
            format!("cannot listen on {addr}: address already in use (is another node running on this port?)")
        );
    }

    // -- listener -------------------------------------------------------

    struct Node {
        addr: String,
        inbound: Receiver<Inbound>,
    }

    fn start_node(self_id: &str, members: &[&str]) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local addr").to_string();
        let (tx, rx) = crossbeam_channel::bounded(16);
        let members = Members::new(members.iter().map(|m| NodeId::new(*m)).collect());
        spawn_listener(listener, NodeId::new(self_id), members, tx).expect("spawn listener");
        Node { addr, inbound: rx }
    }

    /// A stand-in for the state-machine thread: answers every `get` with
    /// the request id as the value, and forwards peer messages to the test.
    fn fake_driver(inbound: Receiver<Inbound>) -> Receiver<Message> {
        let (peer_tx, peer_rx) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            for item in inbound {
                match item {
                    Inbound::Client { request, reply } => {
                        reply.send(ClientResponse {
                            id: request.id,
                            result: ClientResult::Value {
                                value: format!("answer {}", request.id),
                            },
                        });
                    }
                    Inbound::Peer(msg) => {
                        let _ = peer_tx.send(msg);
                    }
                }
            }
        });
        peer_rx
    }

    fn client(addr: &str) -> (TcpStream, BufReader<TcpStream>) {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        (stream, reader)
    }

    fn ask(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, id: u64) -> ClientResponse {
        write_frame(stream, &Frame::Request(request(id))).expect("send request");
        match read_frame(reader).expect("read response") {
            Some(Frame::Response(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// True once the server has closed the connection (EOF or reset).
    fn closed_by_server(reader: &mut BufReader<TcpStream>) -> bool {
        let mut rest = Vec::new();
        match reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    #[test]
    fn client_requests_are_answered_on_their_connection() {
        let node = start_node("8000", &["8001"]);
        let _peers = fake_driver(node.inbound);
        let (mut s, mut r) = client(&node.addr);
        for id in [1, 2, 3] {
            let resp = ask(&mut s, &mut r, id);
            assert_eq!(resp.id, id);
            assert_eq!(
                resp.result,
                ClientResult::Value {
                    value: format!("answer {id}")
                }
            );
        }
    }

    #[test]
    fn a_dropped_reply_becomes_an_error_response() {
        let node = start_node("8000", &[]);
        thread::spawn(move || {
            for item in node.inbound {
                drop(item); // never answers
            }
        });
        let (mut s, mut r) = client(&node.addr);
        let resp = ask(&mut s, &mut r, 9);
        assert_eq!(resp.id, 9);
        assert!(matches!(resp.result, ClientResult::Error { .. }));
    }

    #[test]
    fn garbage_closes_only_that_connection() {
        let node = start_node("8000", &["8001"]);
        let _peers = fake_driver(node.inbound);
        let bad_inputs: Vec<Vec<u8>> = vec![
            b"hello\n".to_vec(),
            b"\xff\xfe\n".to_vec(),
            serde_json::to_vec(&Frame::Response(ClientResponse {
                id: 1,
                result: ClientResult::Written { index: 1 },
            }))
            .expect("encode"),
        ];
        for mut bad in bad_inputs {
            if bad.last() != Some(&b'\n') {
                bad.push(b'\n');
            }
            let (mut s, mut r) = client(&node.addr);
            s.write_all(&bad).expect("send garbage");
            assert!(closed_by_server(&mut r));
            // The node carries on: a new connection is served.
            let (mut s, mut r) = client(&node.addr);
            assert_eq!(ask(&mut s, &mut r, 7).id, 7);
        }
    }

    #[test]
    fn an_oversized_line_closes_the_connection() {
        let node = start_node("8000", &[]);
        let _peers = fake_driver(node.inbound);
        let (s, mut r) = client(&node.addr);
        // Write more than the limit from another thread: the server stops
        // reading at the limit, so our writes would block once the socket
        // buffers fill; the writer thread just ends with an error then.
        let mut w = s.try_clone().expect("clone");
        let sender = thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent <= MAX_LINE_BYTES {
                if w.write_all(&chunk).is_err() {
                    return;
                }
                sent += chunk.len();
            }
        });
        assert!(closed_by_server(&mut r));
        drop(s);
        let _ = sender.join();
        let (mut s, mut r) = client(&node.addr);
        assert_eq!(ask(&mut s, &mut r, 8).id, 8);
    }

    #[test]
    fn peer_messages_from_strangers_or_for_others_are_refused() {
        let node = start_node("8000", &["8001", "8002"]);
        let peer_msgs = fake_driver(node.inbound);
        for bad in [
            vote("9999", "8000"),
            vote("8001", "8002"),
            vote("8000", "8000"),
        ] {
            let (mut s, mut r) = client(&node.addr);
            write_frame(&mut s, &Frame::Peer(bad)).expect("send");
            assert!(closed_by_server(&mut r));
        }
        // A good one on a fresh connection gets through, and only it does.
        let (mut s, _r) = client(&node.addr);
        write_frame(&mut s, &Frame::Peer(vote("8002", "8000"))).expect("send");
        let got = peer_msgs.recv_timeout(DEADLINE).expect("forwarded");
        assert_eq!(got, vote("8002", "8000"));
        assert!(peer_msgs.try_recv().is_err());
    }

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
