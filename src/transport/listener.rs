//! Inbound: the listener thread, one reader thread per connection, and the
//! checks a frame passes before it reaches the state-machine thread.

use super::auth::{self, Credentials, Opener, Role, Sealer, HANDSHAKE_TIMEOUT};
use super::frame::{frame_for_log, read_sealed_frame, seal_frame, FrameError};
use super::reply::{Delivery, Reply};
use super::{ACCEPT_ERROR_BACKOFF, CLIENT_IDLE_TIMEOUT, CLIENT_REPLY_TIMEOUT, MAX_CONNECTIONS};
use crate::message::{
    ClientRequest, ClientResponse, ClientResult, Frame, Message, MessageBody, NodeId,
};
use crossbeam_channel::{RecvTimeoutError, Sender};
use std::collections::BTreeSet;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

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
        })))
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

    fn allows(&self, id: &NodeId) -> bool {
        self.0
            .read()
            .map(|members| members.current.is_empty() || members.current.contains(id))
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
    creds: Credentials,
) -> io::Result<JoinHandle<()>> {
    let local = listener.local_addr()?;
    let ctx = Arc::new(ReaderContext {
        self_id,
        members,
        inbound,
        creds,
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
    /// The cluster key every connection must prove it holds.
    creds: Credentials,
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
    let writer = match stream.try_clone() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            log::warn!("closing connection from {remote}: {e}");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    let Some(mut conn) = authenticate(ctx, &mut reader, &writer, remote) else {
        return;
    };
    let mut known_peer = false;
    loop {
        let frame = match read_sealed_frame(&mut reader, &mut conn.opener) {
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
                if let Err(why) = conn.check_peer(&msg) {
                    log::warn!("closing connection from {remote}: {why}");
                    return;
                }
                if let Err(e) = msg.check_numbers() {
                    log::warn!(
                        "closing connection from {remote}: a malformed message from {}: {e}",
                        msg.from
                    );
                    return;
                }
                if msg.from == ctx.self_id {
                    log::warn!(
                        "closing connection from {remote}: it sent a message from {}, which is this node's own id; is a second node running with the same address?",
                        msg.from
                    );
                    return;
                }
                // A leader this node does not know yet may be real: a member
                // that missed the entry adding it must still follow it
                // (dissertation §4.1); and a leader that removed itself hands
                // over with TimeoutNow as it goes. The core decides; anything
                // else from a stranger is refused here.
                let from_a_leader = matches!(
                    msg.body,
                    MessageBody::AppendEntries { .. }
                        | MessageBody::InstallSnapshot { .. }
                        | MessageBody::TimeoutNow
                );
                if !from_a_leader
                    && !ctx.members.allows(&msg.from)
                    && !let_in_stranger(ctx, &msg, remote, &writer, &conn.sealer)
                {
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
                if !answer_client(ctx, request, &writer, remote, &conn.sealer) {
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
/// down) or the client cannot be written to.
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
        Ok(Delivery::Unsent(rest)) => (&**stream).write_all(&rest),
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
    reader: &mut BufReader<TcpStream>,
    writer: &TcpStream,
    remote: SocketAddr,
) -> Option<Authenticated> {
    if let Err(e) = writer.set_read_timeout(Some(HANDSHAKE_TIMEOUT)) {
        log::warn!("closing connection from {remote}: cannot set a read timeout: {e}");
        return None;
    }
    let outcome = auth::accept_handshake(&ctx.creds, ctx.self_id.as_str(), reader, &mut &*writer);
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
    if let Err(e) = writer.set_read_timeout(Some(CLIENT_IDLE_TIMEOUT)) {
        log::warn!("closing connection from {remote}: cannot set a read timeout: {e}");
        return None;
    }
    Some(Authenticated {
        peer,
        opener,
        sealer: Arc::new(Mutex::new(sealer)),
    })
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
    use crate::transport::MAX_LINE_BYTES;
    use std::io::Read;

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

    #[test]
    fn a_client_cannot_send_peer_messages() {
        let node = start_node_with("8000", &["8001"], keyed(test_key()));
        let peer_msgs = fake_driver(node.inbound);
        let stream = TcpStream::connect(&node.addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let (mut sealer, _) = auth::connect_handshake(
            &keyed(test_key()),
            "8001",
            Role::Client,
            &mut reader,
            &mut &stream,
        )
        .expect("handshake");
        let line = seal_frame(&Frame::Peer(vote("8001", "8000")), &mut sealer).expect("seal");
        (&stream).write_all(&line).expect("send");
        assert!(closed_by_server(&mut reader));
        assert!(peer_msgs.try_recv().is_err());
    }

    #[test]
    fn a_peer_speaks_only_for_itself() {
        let node = start_node_with("8000", &["8001", "8002"], keyed(test_key()));
        let peer_msgs = fake_driver(node.inbound);
        let stream = TcpStream::connect(&node.addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let (mut sealer, _) = auth::connect_handshake(
            &keyed(test_key()),
            "8001",
            Role::Peer,
            &mut reader,
            &mut &stream,
        )
        .expect("handshake");
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
