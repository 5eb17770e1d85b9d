//! Inbound: the listener thread, one reader thread per connection, and the
//! checks a frame passes before it reaches the state-machine thread.

use super::auth::{self, Credentials, Opener, Role, Sealer, HANDSHAKE_TIMEOUT};
use super::frame::{encode_frame, frame_for_log, parse_sealed_line, seal_frame, FrameError};
use super::limits::{
    Budget, ConnectionLimits, Slot, SlotKind, Slots, CONNECTION_STACK_BYTES, MAX_CLIENT_LINE_BYTES,
};
use super::lines::{LineReader, ReadError};
use super::reply::{Delivery, Reply};
use super::{write_nonblocking, ACCEPT_ERROR_BACKOFF, CLIENT_REPLY_TIMEOUT, MAX_LINE_BYTES};
use crate::message::{
    ClientRequest, ClientResponse, ClientResult, Frame, Message, MessageBody, NodeId, Term,
};
use crate::throttle::Throttle;
use crossbeam_channel::{RecvTimeoutError, Sender};
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// What the connection readers hand to the state-machine thread.
#[derive(Debug)]
pub enum Inbound {
    /// A message from another member, already checked to be addressed to us
    /// by a member of the cluster.
    Peer(Message),
    /// A client request. The state-machine thread answers with `reply`,
    /// which never blocks: it writes what the client's socket takes at once,
    /// and the connection's reader thread, waiting on it, writes the rest.
    /// Dropping `reply` without answering makes the reader answer with an
    /// error.
    Client {
        request: ClientRequest,
        reply: Reply,
    },
}

/// The most removed members a node remembers, to recognise them when they
/// still write to it (beyond this, the oldest ids are forgotten).
const MAX_REMEMBERED_REMOVED: usize = 64;

/// Who may send this node peer messages: the other members. Shared between
/// the driver, which updates it when the membership changes, and the
/// connection readers. An empty set (a node that is joining and does not
/// know the cluster yet) lets any peer in; the protocol core still decides
/// what to accept.
#[derive(Clone, Debug, Default)]
pub struct Members(Arc<std::sync::RwLock<MemberSet>>);

#[derive(Debug, Default)]
struct MemberSet {
    current: BTreeSet<NodeId>,
    /// Nodes that were members and were removed, in the order they left,
    /// and whether this node has told its operator about each already. A
    /// removed node is not told (once the leader has appended the change it
    /// sends it nothing more, dissertation §4.2.3), so it goes on asking for
    /// votes; that deserves one clear line, not one per election timeout.
    removed: Vec<(NodeId, bool)>,
    /// This node's current term, as the driver last said: a peer message
    /// of an older term does not keep its connection open.
    current_term: Term,
    /// The set is empty because this node is a cluster of one, not because
    /// it has yet to learn the members: then nobody is a member.
    alone: bool,
}

/// What a reader does with a peer message from a node that is not a member.
enum Stranger {
    /// A former member: said once, then quietly refused.
    Removed { first_time: bool },
    /// Anyone else: a misconfiguration, said every time.
    Unknown,
}

impl Members {
    pub fn new(ids: BTreeSet<NodeId>) -> Members {
        Members(Arc::new(std::sync::RwLock::new(MemberSet {
            current: ids,
            removed: Vec::new(),
            current_term: 0,
            alone: false,
        })))
    }

    /// Records this node's current term (cheap when it has not changed).
    pub fn set_term(&self, term: Term) {
        if self.term() == term {
            return;
        }
        if let Ok(mut members) = self.0.write() {
            members.current_term = term;
        }
    }

    fn term(&self) -> Term {
        self.0.read().map(|m| m.current_term).unwrap_or(0)
    }

    /// Replaces the set (after a membership change); the members that left
    /// are remembered as removed.
    pub fn set(&self, ids: BTreeSet<NodeId>) {
        let Ok(mut members) = self.0.write() else {
            return;
        };
        let left: Vec<NodeId> = members.current.difference(&ids).cloned().collect();
        members.removed.retain(|(id, _)| !ids.contains(id));
        for id in left {
            if !members.removed.iter().any(|(r, _)| *r == id) {
                members.removed.push((id, false));
            }
        }
        let excess = members.removed.len().saturating_sub(MAX_REMEMBERED_REMOVED);
        members.removed.drain(..excess);
        members.current = ids;
    }

    /// Says whether an empty set means a cluster of one (nobody else is a
    /// member) rather than a node that does not know its cluster yet.
    pub fn set_alone(&self, alone: bool) {
        if let Ok(mut members) = self.0.write() {
            members.alone = alone;
        }
    }

    fn allows(&self, id: &NodeId) -> bool {
        self.0
            .read()
            .map(|members| {
                (members.current.is_empty() && !members.alone) || members.current.contains(id)
            })
            .unwrap_or(false)
    }

    /// Classifies a sender that `allows` refused.
    fn stranger(&self, id: &NodeId) -> Stranger {
        let Ok(mut members) = self.0.write() else {
            return Stranger::Unknown;
        };
        match members.removed.iter_mut().find(|(r, _)| r == id) {
            Some((_, told)) => {
                let first_time = !*told;
                *told = true;
                Stranger::Removed { first_time }
            }
            None => Stranger::Unknown,
        }
    }

    fn describe(&self) -> String {
        self.0
            .read()
            .map(|members| join_ids(&members.current))
            .unwrap_or_default()
    }
}

/// Spawns the listener thread: it accepts connections and starts one reader
/// thread for each, within the slots of [`ConnectionLimits::default`] (see
/// [`spawn_listener_with`]).
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
    creds: Credentials,
) -> io::Result<JoinHandle<()>> {
    spawn_listener_with(
        listener,
        self_id,
        members,
        inbound,
        creds,
        ConnectionLimits::default(),
    )
}

/// [`spawn_listener`] with other limits (slots, timeouts, budgets).
pub fn spawn_listener_with(
    listener: TcpListener,
    self_id: NodeId,
    members: Members,
    inbound: Sender<Inbound>,
    creds: Credentials,
    limits: ConnectionLimits,
) -> io::Result<JoinHandle<()>> {
    let local = listener.local_addr()?;
    let ctx = Arc::new(ReaderContext {
        self_id,
        members,
        inbound,
        creds,
        slots: Slots::new(&limits),
        client_budget: Budget::new(limits.client_buffer_budget_bytes),
        peer_budget: Budget::new(limits.peer_buffer_budget_bytes),
        limits,
    });
    thread::Builder::new()
        .name(format!("raft-listener-{local}"))
        .spawn(move || accept_loop(listener, ctx))
}

/// What every connection reader needs; shared.
struct ReaderContext {
    self_id: NodeId,
    members: Members,
    inbound: Sender<Inbound>,
    /// The cluster key every connection must prove it holds.
    creds: Credentials,
    limits: ConnectionLimits,
    slots: Arc<Slots>,
    /// For the long lines and unread answers of clients, and of
    /// connections not yet shown to be peers.
    client_budget: Arc<Budget>,
    /// For the long lines of peers.
    peer_budget: Arc<Budget>,
}

// One throttle per kind of warning a remote party can cause at will.
static REFUSED: Throttle = Throttle::new();
static NO_THREAD: Throttle = Throttle::new();
static CLOSED: Throttle = Throttle::new();
static SAME_ID: Throttle = Throttle::new();
static WRONG_NODE: Throttle = Throttle::new();

fn accept_loop(listener: TcpListener, ctx: Arc<ReaderContext>) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, say: a flood can cause it.
                static ACCEPT_FAILED: Throttle = Throttle::new();
                if let Some(note) = ACCEPT_FAILED.allow() {
                    log::warn!("accepting a connection failed: {e}; retrying{note}");
                }
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
        match ctx.slots.take() {
            Some(slot) => spawn_reader(stream, remote, slot, &ctx),
            None => refuse_connection(&stream, remote, &ctx),
        }
    }
}

/// Every slot is taken: says so to the other side (without waiting for
/// it) and closes the connection.
fn refuse_connection(stream: &TcpStream, remote: SocketAddr, ctx: &ReaderContext) {
    if let Some(note) = REFUSED.allow() {
        log::warn!(
            "refusing connection from {remote}: serving the most clients this node takes ({}) and every peer slot is taken{note}; if these are real clients, raise --max-clients",
            ctx.slots.max_clients()
        );
    }
    // Without authentication, a client reads this as the answer to what
    // it is about to ask; with it, the client expects a handshake first,
    // and just sees the connection closed.
    if ctx.creds.cluster_id().is_none() {
        if let Ok(line) = encode_frame(&too_many_clients(ctx, 0)) {
            let _ = write_nonblocking(stream, &line);
        }
    }
}

/// The answer to a client this node has no room for: to request `id`, or
/// (0) to whatever it was about to ask.
fn too_many_clients(ctx: &ReaderContext, id: u64) -> Frame {
    Frame::Response(ClientResponse {
        id,
        result: ClientResult::Error {
            message: format!(
                "the node is serving the most clients it takes ({}); retry later",
                ctx.slots.max_clients()
            ),
        },
    })
}

fn spawn_reader(stream: TcpStream, remote: SocketAddr, slot: Slot, ctx: &Arc<ReaderContext>) {
    let ctx = Arc::clone(ctx);
    let spawned = thread::Builder::new()
        .name(format!("raft-conn-{remote}"))
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || serve_connection(stream, remote, slot, &ctx));
    // A failed spawn drops the closure, and with it the stream and the slot.
    if let Err(e) = spawned {
        if let Some(note) = NO_THREAD.allow() {
            log::error!(
                "cannot start a thread for the connection from {remote}: {e}; closing it{note}"
            );
        }
    }
}

/// One connection as its reader sees it.
struct Conn {
    remote: SocketAddr,
    slot: Slot,
    accepted: Instant,
    /// When the last useful frame came: a client request (answered), or a
    /// peer message of the current term or later that went to the core.
    last_useful: Instant,
    /// A frame showed this is a member's connection.
    peer: bool,
}

impl Conn {
    /// When the next frame must be whole.
    fn deadline(&self, limits: &ConnectionLimits) -> Instant {
        match self.slot.kind() {
            SlotKind::Probation => self.accepted + limits.proof_timeout,
            SlotKind::Client | SlotKind::Peer => self.last_useful + limits.idle_timeout,
        }
    }

    /// The longest line it may send: only peers need room for a large
    /// AppendEntries.
    fn line_limit(&self) -> usize {
        if self.peer {
            MAX_LINE_BYTES
        } else {
            MAX_CLIENT_LINE_BYTES
        }
    }
}

/// What became of a peer message.
enum PeerVerdict {
    /// Close the connection (already logged).
    Close,
    /// Handed to the core. `useful` if of the current term or later;
    /// `member` if its sender is a member.
    Forwarded { useful: bool, member: bool },
}

/// Reads frames from one connection until it closes, misbehaves or has
/// nothing useful to say for too long.
fn serve_connection(stream: TcpStream, remote: SocketAddr, slot: Slot, ctx: &ReaderContext) {
    log::debug!("connection from {remote}");
    // Replies to clients are single small lines: send them at once.
    let _ = stream.set_nodelay(true);
    // An answer the client does not read must not hold this thread.
    if let Err(e) = stream.set_write_timeout(Some(ctx.limits.write_timeout)) {
        log::warn!("closing connection from {remote}: cannot set a write timeout: {e}");
        return;
    }
    let writer = match stream.try_clone() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            log::warn!("closing connection from {remote}: {e}");
            return;
        }
    };
    let now = Instant::now();
    let mut conn = Conn {
        remote,
        slot,
        accepted: now,
        last_useful: now,
        peer: false,
    };
    let mut reader = LineReader::new(stream, Arc::clone(&ctx.client_budget));
    let Some(mut auth) = authenticate(ctx, &mut reader, &writer, remote) else {
        return;
    };
    loop {
        let deadline = conn.deadline(&ctx.limits);
        let opener = &mut auth.opener;
        let frame = match reader.read_frame(conn.line_limit(), deadline, &mut |line| {
            parse_sealed_line(line, opener)
        }) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                log::debug!("connection from {remote} closed");
                return;
            }
            Err(e) => return log_read_error(&conn, &e, ctx),
        };
        if conn.slot.kind() == SlotKind::Probation && !is_members_frame(ctx, &frame) {
            return refuse_on_probation(&writer, remote, &frame, &auth.sealer, ctx);
        }
        match frame {
            Frame::Peer(msg) => {
                if !authenticated_peer_message(&auth, &msg, remote) {
                    return;
                }
                match on_peer_frame(ctx, msg, remote, &writer, &auth.sealer) {
                    PeerVerdict::Close => return,
                    PeerVerdict::Forwarded { useful, member } => {
                        if member && !conn.peer {
                            conn.peer = true;
                            conn.slot.become_peer();
                            reader.use_budget(Arc::clone(&ctx.peer_budget));
                        }
                        if useful {
                            conn.last_useful = Instant::now();
                        }
                    }
                }
            }
            Frame::Request(request) => {
                log::debug!(
                    "received from client {remote}: {}",
                    frame_for_log(&Frame::Request(request.clone()))
                );
                if !answer_client(ctx, request, &writer, remote, &auth.sealer) {
                    return;
                }
                // The client could not send its next request before this.
                conn.last_useful = Instant::now();
            }
            Frame::Response(_) => {
                if let Some(note) = CLOSED.allow() {
                    log::warn!(
                        "closing connection from {remote}: it sent a response frame, which only a node sends, to a client{note}"
                    );
                }
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Why a connection is being closed, for the log: a remote party's mistake
/// (throttled) or just the end of an idle connection.
fn log_read_error(conn: &Conn, e: &ReadError, ctx: &ReaderContext) {
    let remote = conn.remote;
    match e {
        ReadError::Deadline if conn.slot.kind() == SlotKind::Probation => log::debug!(
            "closing connection from {remote}: it took a slot kept for peers and sent no member's frame within {:?}",
            ctx.limits.proof_timeout
        ),
        ReadError::Deadline => log::debug!(
            "closing connection from {remote}: nothing useful from it for {:?}",
            ctx.limits.idle_timeout
        ),
        ReadError::Frame(FrameError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            log::debug!("connection from {remote} lost: {e}")
        }
        ReadError::Frame(e) => {
            if let Some(note) = CLOSED.allow() {
                log::warn!("closing connection from {remote}: {e}{note}");
            }
        }
        ReadError::NoBufferSpace { budget_bytes } => {
            if let Some(note) = CLOSED.allow() {
                log::warn!(
                    "closing connection from {remote}: its line outgrew what is left of the {budget_bytes} bytes all connections of its kind may hold{note}"
                );
            }
        }
    }
}

/// Whether `frame` shows its connection is a member's: a peer message from
/// a member (or, on a joining node that knows no members yet, anyone's).
fn is_members_frame(ctx: &ReaderContext, frame: &Frame) -> bool {
    matches!(frame, Frame::Peer(msg) if ctx.members.allows(&msg.from))
}

/// A connection on a peer slot taken on probation sent something other
/// than a member's frame: a client is told there is no room; then it is
/// closed.
fn refuse_on_probation(
    stream: &TcpStream,
    remote: SocketAddr,
    frame: &Frame,
    sealer: &Mutex<Sealer>,
    ctx: &ReaderContext,
) {
    if let Some(note) = REFUSED.allow() {
        log::warn!(
            "closing connection from {remote}: serving the most clients this node takes ({}), and the slot it took is kept for peers{note}; if these are real clients, raise --max-clients",
            ctx.slots.max_clients()
        );
    }
    if let Frame::Request(request) = frame {
        if let Ok(mut sealer) = sealer.lock() {
            if let Ok(line) = seal_frame(&too_many_clients(ctx, request.id), &mut sealer) {
                let _ = (&*stream).write_all(&line);
            }
        }
    }
}

/// Checks a peer message and hands it to the core, or says why not.
fn on_peer_frame(
    ctx: &ReaderContext,
    msg: Message,
    remote: SocketAddr,
    writer: &TcpStream,
    sealer: &Mutex<Sealer>,
) -> PeerVerdict {
    if msg.from == ctx.self_id {
        if let Some(note) = SAME_ID.allow() {
            log::warn!(
                "closing connection from {remote}: it sent a message from {}, which is this node's own id; is a second node running with the same address?{note}",
                msg.from
            );
        }
        return PeerVerdict::Close;
    }
    let member = ctx.members.allows(&msg.from);
    let current = msg.term >= ctx.members.term();
    // A leader this node does not know yet may be real: a member that
    // missed the entry adding it must still follow it (dissertation §4.1);
    // and a leader that removed itself hands over with TimeoutNow as it
    // goes. The core decides, unless the message is stale: then it is from
    // no leader anyone needs to hear, and an outsider could make many such.
    let from_a_leader = msg.body.is_from_leader() || msg.body == MessageBody::TimeoutNow;
    let let_in =
        member || (from_a_leader && current) || let_in_stranger(ctx, &msg, remote, writer, sealer);
    if !let_in {
        return PeerVerdict::Close;
    }
    if msg.to != ctx.self_id {
        if let Some(note) = WRONG_NODE.allow() {
            log::warn!(
                "closing connection from {remote}: node {} sent a message for {}, but this node is {}; check the --peers and --bind of node {}{note}",
                msg.from, msg.to, ctx.self_id, msg.from
            );
        }
        return PeerVerdict::Close;
    }
    // (log arguments are only evaluated when debug is on)
    log::debug!(
        "received from {} ({remote}): {}",
        msg.from,
        frame_for_log(&Frame::Peer(msg.clone()))
    );
    if ctx.inbound.send(Inbound::Peer(msg)).is_err() {
        return PeerVerdict::Close; // the state-machine thread is gone: shutting down
    }
    PeerVerdict::Forwarded {
        useful: current,
        member,
    }
}

/// Whether a peer message from a non-member goes on to the core. Only a
/// removed member's request for votes does: a leader answers it with the
/// entry that removed that member (see `Raft::step`). Anything else is
/// refused, saying why (the caller closes the connection).
fn let_in_stranger(
    ctx: &ReaderContext,
    msg: &Message,
    remote: SocketAddr,
    writer: &TcpStream,
    sealer: &Mutex<Sealer>,
) -> bool {
    let from = &msg.from;
    match ctx.members.stranger(from) {
        Stranger::Removed { first_time } => {
            if first_time {
                log::warn!(
                    "node {from} was removed from the cluster but is still running and asking for votes; the leader sends it the change that removed it; stop it"
                );
            }
            let asks_for_votes = matches!(
                msg.body,
                MessageBody::PreVote { .. } | MessageBody::RequestVote { .. }
            );
            if !asks_for_votes {
                log::debug!(
                    "closing connection from {remote}: node {from} was removed from the cluster"
                );
            }
            asks_for_votes
        }
        Stranger::Unknown => {
            let members = ctx.members.describe();
            auth::warn_rate_limited("not-a-member", || {
                format!(
                    "refused node {from} ({remote}): it is not a member of this cluster ({members}); start every node with the same members"
                )
            });
            let reason = format!(
                "node {} does not count {from} as a member (its members are {members}); start every node with the same members",
                ctx.self_id
            );
            if let Ok(mut sealer) = sealer.lock() {
                if let Some(line) = auth::refusal_frame(&mut sealer, &reason) {
                    let _ = (&*writer).write_all(&line);
                }
            }
            false
        }
    }
}

/// Hands a client request to the state-machine thread and waits until it
/// has answered (it writes the answer itself; see [`Reply`]). False when the
/// connection should close: the state-machine thread is gone (shutting
/// down) or the client cannot be written to (or does not read: see
/// [`ConnectionLimits::write_timeout`]).
fn answer_client(
    ctx: &ReaderContext,
    request: ClientRequest,
    stream: &Arc<TcpStream>,
    remote: SocketAddr,
    sealer: &Arc<Mutex<Sealer>>,
) -> bool {
    let id = request.id;
    let (reply, answer) = Reply::new(Arc::clone(stream), remote, Arc::clone(sealer));
    if ctx
        .inbound
        .send(Inbound::Client { request, reply })
        .is_err()
    {
        return false;
    }
    let outcome = match answer.wait(CLIENT_REPLY_TIMEOUT) {
        Ok(Delivery::Written) => return true,
        Ok(Delivery::Unsent(rest)) => return finish_answer(ctx, stream, remote, rest),
        Err(e) => {
            let message = match e {
                RecvTimeoutError::Timeout => format!(
                    "the node did not answer within {CLIENT_REPLY_TIMEOUT:?}; the command may or may not take effect"
                ),
                RecvTimeoutError::Disconnected => {
                    "the node dropped the request without answering (is it shutting down?)"
                        .to_string()
                }
            };
            let frame = Frame::Response(ClientResponse {
                id,
                result: ClientResult::Error { message },
            });
            log::debug!("sent to client {remote}: {}", frame_for_log(&frame));
            let line = match sealer.lock() {
                Ok(mut sealer) => seal_frame(&frame, &mut sealer),
                Err(_) => return false,
            };
            line.and_then(|line| (&**stream).write_all(&line))
        }
    };
    if let Err(e) = outcome {
        log::debug!("could not answer client {remote}: {e}");
        return false;
    }
    true
}

/// One connection's authentication: what it proved in the handshake, and
/// the keys for its frames.
struct Authenticated {
    /// Who the handshake said is at the other end (`None` with
    /// authentication off).
    peer: Option<auth::Peer>,
    opener: Opener,
    /// Shared with the [`Reply`] of each request, which seals the answer.
    sealer: Arc<Mutex<Sealer>>,
}

/// Whether a peer message may come on this connection (see
/// [`Authenticated::check_peer`]); if not, says why (the caller closes it).
fn authenticated_peer_message(auth: &Authenticated, msg: &Message, remote: SocketAddr) -> bool {
    if let Err(why) = auth.check_peer(msg) {
        if let Some(note) = CLOSED.allow() {
            log::warn!("closing connection from {remote}: {why}{note}");
        }
        return false;
    }
    if let Err(e) = msg.check_numbers() {
        if let Some(note) = CLOSED.allow() {
            log::warn!(
                "closing connection from {remote}: a malformed message from {}: {e}{note}",
                msg.from
            );
        }
        return false;
    }
    true
}

impl Authenticated {
    /// A peer message must come on a peer's connection, from the node that
    /// authenticated it.
    fn check_peer(&self, msg: &Message) -> Result<(), String> {
        match &self.peer {
            None => Ok(()),
            Some(peer) if peer.role == Role::Client => Err(format!(
                "a client ({}) sent a peer message, which only nodes send",
                peer.id
            )),
            Some(peer) if peer.id != msg.from.as_str() => Err(format!(
                "node {} sent a message from {}; a node speaks only for itself",
                peer.id, msg.from
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The handshake (see `auth`), within [`HANDSHAKE_TIMEOUT`]. `None` if it
/// failed: that was logged (at most once per kind every
/// `auth::REFUSAL_LOG_INTERVAL`), and the other side was told why.
fn authenticate(
    ctx: &ReaderContext,
    reader: &mut LineReader,
    writer: &TcpStream,
    remote: SocketAddr,
) -> Option<Authenticated> {
    let outcome = auth::accept_handshake(
        &ctx.creds,
        ctx.self_id.as_str(),
        &mut reader.for_handshake(Instant::now() + HANDSHAKE_TIMEOUT),
        &mut &*writer,
    );
    let (sealer, opener, peer) = match outcome {
        Ok(done) => done,
        Err(auth::HandshakeError::Io(e)) => {
            log::debug!("closing connection from {remote}: handshake failed: {e}");
            return None;
        }
        Err(e) => {
            auth::warn_rate_limited(e.kind(), || format!("refused {remote}: {e}"));
            return None;
        }
    };
    Some(Authenticated {
        peer,
        opener,
        sealer: Arc::new(Mutex::new(sealer)),
    })
}

/// Writes the end of an answer the client's socket did not take at once,
/// within the write timeout, counting it against the clients' budget while
/// it is held. False when the connection should close.
fn finish_answer(
    ctx: &ReaderContext,
    stream: &TcpStream,
    remote: SocketAddr,
    rest: Vec<u8>,
) -> bool {
    if !ctx.client_budget.try_take(rest.len()) {
        if let Some(note) = CLOSED.allow() {
            log::warn!(
                "closing connection from {remote}: it is not reading its answers, and the {} bytes left of one do not fit in what clients may hold together ({} bytes){note}",
                rest.len(),
                ctx.client_budget.limit()
            );
        }
        return false;
    }
    let outcome = (&*stream).write_all(&rest);
    ctx.client_budget.give_back(rest.len());
    if let Err(e) = outcome {
        log::debug!(
            "closing connection from {remote}: could not write its answer within {:?}: {e}",
            ctx.limits.write_timeout
        );
        return false;
    }
    true
}

fn join_ids(ids: &BTreeSet<NodeId>) -> String {
    let names: Vec<&str> = ids.iter().map(NodeId::as_str).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::{read_frame, write_frame};
    use crate::transport::test_support::{
        fake_driver, request, start_node, start_node_with, test_key, vote, DEADLINE,
    };
    use crate::transport::ClusterKey;
    use std::io::{BufReader, Read};

    // -- listener -------------------------------------------------------

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

    // -- authentication ------------------------------------------------

    fn keyed(key: ClusterKey) -> Credentials {
        Credentials::new(key)
    }

    #[test]
    fn an_authenticated_node_serves_only_clients_with_its_key() {
        use crate::client;
        let node = start_node_with("8000", &["8001"], keyed(test_key()));
        let _peers = fake_driver(node.inbound);
        // With the key: served.
        let mut conn = client::connect(&keyed(test_key()), &node.addr, DEADLINE).expect("connect");
        conn.send(&request(4)).expect("send");
        let answer = conn.receive().expect("answer").expect("not closed");
        assert_eq!(answer.id, 4);
        // Without it, or with another cluster's: refused in the handshake.
        let other = keyed(ClusterKey::generate().expect("random"));
        let err = client::connect(&other, &node.addr, DEADLINE)
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("has a different cluster key"),
            "{err}"
        );
        // A plain request: answered only with the refusal, then closed.
        let (mut s, mut r) = client(&node.addr);
        write_frame(&mut s, &Frame::Request(request(5))).expect("send");
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut r, &mut answer).expect("read");
        assert!(answer.contains("\"refused\""), "{answer}");
        assert!(closed_by_server(&mut r));
    }

    /// A connection to `addr` that has finished the handshake as 8001, in
    /// `role`, with the test key.
    fn handshaken(addr: &str, role: Role) -> (TcpStream, BufReader<TcpStream>, auth::Sealer) {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let (sealer, _) =
            auth::connect_handshake(&keyed(test_key()), "8001", role, &mut reader, &mut &stream)
                .expect("handshake");
        (stream, reader, sealer)
    }

    #[test]
    fn a_client_cannot_send_peer_messages() {
        let node = start_node_with("8000", &["8001"], keyed(test_key()));
        let peer_msgs = fake_driver(node.inbound);
        let (stream, mut reader, mut sealer) = handshaken(&node.addr, Role::Client);
        let line = seal_frame(&Frame::Peer(vote("8001", "8000")), &mut sealer).expect("seal");
        (&stream).write_all(&line).expect("send");
        assert!(closed_by_server(&mut reader));
        assert!(peer_msgs.try_recv().is_err());
    }

    #[test]
    fn a_peer_speaks_only_for_itself() {
        let node = start_node_with("8000", &["8001", "8002"], keyed(test_key()));
        let peer_msgs = fake_driver(node.inbound);
        let (stream, mut reader, mut sealer) = handshaken(&node.addr, Role::Peer);
        for (msg, delivered) in [(vote("8001", "8000"), true), (vote("8002", "8000"), false)] {
            let line = seal_frame(&Frame::Peer(msg.clone()), &mut sealer).expect("seal");
            (&stream).write_all(&line).expect("send");
            if delivered {
                assert_eq!(peer_msgs.recv_timeout(DEADLINE).expect("delivered"), msg);
            }
        }
        assert!(closed_by_server(&mut reader));
        assert!(peer_msgs.try_recv().is_err());
    }

    fn ids(names: &[&str]) -> BTreeSet<NodeId> {
        names.iter().map(|n| NodeId::new(*n)).collect()
    }

    #[test]
    fn a_removed_member_is_recognised_and_reported_once() {
        let members = Members::new(ids(&["8001", "8002"]));
        members.set(ids(&["8002"]));
        assert!(!members.allows(&NodeId::new("8001")));
        assert!(matches!(
            members.stranger(&NodeId::new("8001")),
            Stranger::Removed { first_time: true }
        ));
        assert!(matches!(
            members.stranger(&NodeId::new("8001")),
            Stranger::Removed { first_time: false }
        ));
        assert!(matches!(
            members.stranger(&NodeId::new("9999")),
            Stranger::Unknown
        ));
        // Added back, then removed again: a new removal, reported again.
        members.set(ids(&["8001", "8002"]));
        assert!(members.allows(&NodeId::new("8001")));
        members.set(ids(&["8002"]));
        assert!(matches!(
            members.stranger(&NodeId::new("8001")),
            Stranger::Removed { first_time: true }
        ));
    }

    #[test]
    fn a_cluster_of_one_has_no_members_but_a_joining_node_takes_any() {
        let members = Members::default();
        assert!(members.allows(&NodeId::new("9999")));
        members.set_alone(true);
        assert!(!members.allows(&NodeId::new("9999")));
    }

    #[test]
    fn removed_members_are_remembered_up_to_a_limit() {
        let members = Members::new(ids(&["keep"]));
        for n in 0..(2 * MAX_REMEMBERED_REMOVED) {
            let name = format!("n{n}");
            members.set(ids(&["keep", &name]));
            members.set(ids(&["keep"]));
        }
        let remembered = members.0.read().map(|m| m.removed.len()).unwrap_or(0);
        assert_eq!(remembered, MAX_REMEMBERED_REMOVED);
        // The newest are kept.
        let newest = format!("n{}", 2 * MAX_REMEMBERED_REMOVED - 1);
        assert!(matches!(
            members.stranger(&NodeId::new(newest)),
            Stranger::Removed { .. }
        ));
    }
}
