//! Networking: the listener, its connection readers, the peer writers, and
//! the framing they share with `raft client`.
//!
//! ```text
//!  peers/clients ──► [listener thread] ──► [one reader thread per connection]
//!                                                   │ Inbound (crossbeam)
//!                                                   ▼
//!                                       [state-machine thread: node::run]
//!                                                   │ Peers::send, Reply::send
//!                                                   │ (never block: write what
//!                                                   │  the socket takes now)
//!                                                   ▼
//!              [one writer thread per peer: connect, reconnect, the rest]
//! ```
//!
//! The wire is newline-delimited JSON: one [`Frame`](crate::message::Frame)
//! per line (every message, as it travels, is shown in the docs of
//! [`message`](crate::message)), peers and clients on the node's one port, so
//! a person can read the traffic with `tcpdump`, and `RUST_LOG=debug` shows
//! each frame's JSON as it leaves and arrives. Every connection starts with a
//! handshake proving both ends hold the cluster key, and every frame after it
//! ends with a space and its MAC (see [`auth`]); `nc` gets only the refusal
//! (try `echo '{"request":{"id":1,"command":{"op":"status"}}}' | nc 127.0.0.1
//! 8000`).
//!
//! Messages between peers are one-way (a response is a message too, sent on
//! the responder's own outgoing connection), so the protocol core never waits
//! on a socket, and a node only ever *reads* from the connections it accepts,
//! except to answer a client on its connection. Each node keeps one outgoing
//! connection per peer, with a writer thread and a bounded queue. When nothing
//! is queued and the socket has room, the state-machine thread writes a
//! message itself, without blocking (a thread wake-up costs more than the
//! write; see the measurements in `src/bench/mod.rs`); anything else,
//! including the rest of a frame the socket took only part of, goes to the
//! writer, so messages to a peer keep their order and the node never waits on
//! a slow peer. When the queue is full or the peer is down, messages are
//! dropped (Raft tolerates lost messages) and the writer reconnects with a
//! backoff of 10 ms doubling to 500 ms. Answers to clients work the same way:
//! written by the state-machine thread when the client's socket takes them,
//! finished by the connection's thread when it does not.
//!
//! A line longer than its limit, malformed JSON, an unknown message type, a
//! frame whose MAC does not verify, a term or index above the bounds
//! ([`MAX_TERM`](crate::message::MAX_TERM),
//! [`MAX_INDEX`](crate::message::MAX_INDEX)), a peer message from a node that
//! is not a member (or not addressed to this node, or not from the node that
//! authenticated the connection): the node logs a warning naming the remote
//! address (at most one line a second of each kind, see
//! [`throttle`](crate::throttle)), closes that connection and carries on.
//! Nothing from such a line reaches the protocol core. (Some messages from a
//! non-member do reach the core, which decides: AppendEntries and
//! InstallSnapshot, since a node that missed the entry adding a new leader
//! must still follow it; TimeoutNow, from a leader that removed itself and
//! hands over as it goes; and a removed member's requests for votes, which a
//! leader answers with the entry that removed it.)
//!
//! Every line has a size limit, every queue a length, and the number of
//! connections is capped, with slots kept for peers; every connection has a
//! deadline and its buffers a budget (see `limits.rs`, and the table below).
//!
//! Threads here are never joined: they end with the process. A reader ends
//! when its connection closes or the state-machine thread is gone; a writer
//! ends when its [`Peers`] is dropped.
//!
//! The submodules, in reading order: `frame` (one JSON line per frame, with
//! limits), `auth` (the cluster key, the handshake and the MAC on every
//! frame), `limits` (slots, budgets and timeouts of connections), `lines`
//! (reading frames within them), `listener` (accepting connections and
//! checking what arrives),
//! `reply` (the answer to a client), `peers` (sending to the other nodes).
//!
//! # Limits
//!
//! Everything that grows has a named limit; what exceeds it gets a clear error
//! or is dropped (for messages, which Raft resends), never unbounded memory.
//!
//! | limit | value | where |
//! | --- | --- | --- |
//! | a line on the wire | 16 MiB | [`transport::MAX_LINE_BYTES`](crate::transport::MAX_LINE_BYTES) |
//! | a value (`set`) | 1 MiB | [`core::MAX_COMMAND_BYTES`](crate::core::MAX_COMMAND_BYTES) |
//! | one AppendEntries | 512 entries, about 1 MiB | [`core::MAX_ENTRIES_PER_APPEND`](crate::core::MAX_ENTRIES_PER_APPEND), [`core::MAX_APPEND_BYTES`](crate::core::MAX_APPEND_BYTES) |
//! | entries in flight to one follower | 4,096, and about 8 MiB | [`core::MAX_INFLIGHT_ENTRIES`](crate::core::MAX_INFLIGHT_ENTRIES), [`core::MAX_INFLIGHT_BYTES`](crate::core::MAX_INFLIGHT_BYTES) |
//! | a snapshot chunk / a snapshot | 256 KiB / 64 MiB | [`core::snapshot::MAX_SNAPSHOT_CHUNK_BYTES`](crate::core::snapshot::MAX_SNAPSHOT_CHUNK_BYTES), [`storage::MAX_SNAPSHOT_BYTES`](crate::storage::MAX_SNAPSHOT_BYTES) |
//! | the log in memory and on disk | `--snapshot-entries` (10,000) past the last snapshot | [`config::DEFAULT_SNAPSHOT_ENTRIES`](crate::config::DEFAULT_SNAPSHOT_ENTRIES) |
//! | messages queued for one peer | 1,024 | [`transport::PEER_QUEUE_LEN`](crate::transport::PEER_QUEUE_LEN) |
//! | inputs queued for the state-machine thread | 4,096 | `node::INBOUND_QUEUE_LEN` |
//! | inputs handled per turn (one fsync) | 1,024 | `node::MAX_BATCH` |
//! | client requests waiting at once | 16,384 | `node::MAX_PENDING_REQUESTS` |
//! | bytes of values proposed at a leader and not yet committed | 64 MiB | `node::MAX_PENDING_WRITE_BYTES` |
//! | client connections served at once | 4,096 (`--max-clients`) | [`transport::MAX_CLIENT_CONNECTIONS`](crate::transport::MAX_CLIENT_CONNECTIONS) |
//! | connection slots kept for peers, apart from the clients' | 128 | [`transport::PEER_CONNECTION_SLOTS`](crate::transport::PEER_CONNECTION_SLOTS) |
//! | a line from a client (or a connection not yet shown to be a peer's) | 6 MiB + 64 KiB (a 1 MiB value, escaped) | [`transport::MAX_CLIENT_LINE_BYTES`](crate::transport::MAX_CLIENT_LINE_BYTES) |
//! | bytes of partial lines and unread answers, all client connections together | 64 MiB | [`transport::CLIENT_BUFFER_BUDGET_BYTES`](crate::transport::CLIENT_BUFFER_BUDGET_BYTES) |
//! | bytes of partial lines, all peer connections together | 64 MiB | [`transport::PEER_BUFFER_BUDGET_BYTES`](crate::transport::PEER_BUFFER_BUDGET_BYTES) |
//! | a connection's fixed read buffer; longer lines are held in pieces of | 8 KiB; 64 KiB | [`transport::LINE_BUFFER_BYTES`](crate::transport::LINE_BUFFER_BYTES), [`transport::LINE_PIECE_BYTES`](crate::transport::LINE_PIECE_BYTES) |
//! | a connection without a useful frame | closed after 60 s (`--idle-timeout-ms`) | [`transport::IDLE_TIMEOUT`](crate::transport::IDLE_TIMEOUT) |
//! | an answer a client does not read | closed after 10 s | [`transport::CLIENT_WRITE_TIMEOUT`](crate::transport::CLIENT_WRITE_TIMEOUT) |
//! | a connection on a peer slot that has not shown it is a member's | closed after 2 s | [`transport::PEER_PROOF_TIMEOUT`](crate::transport::PEER_PROOF_TIMEOUT) |
//! | writer threads to nodes outside the membership | 4 | `node::MAX_STRANGER_WRITERS` |
//! | a warning a remote party can cause | one line a second per kind, with a count of those left out | [`throttle::THROTTLE_INTERVAL`](crate::throttle::THROTTLE_INTERVAL) |
//! | a line typed at the prompt | 64 KiB | [`prompt::MAX_STDIN_LINE_BYTES`](crate::prompt::MAX_STDIN_LINE_BYTES) |
//! | a record in the log file | 8 MiB | [`storage::MAX_RECORD_BYTES`](crate::storage::MAX_RECORD_BYTES) |
//! | cluster size | 64 | [`config::MAX_CLUSTER_SIZE`](crate::config::MAX_CLUSTER_SIZE) |
//! | a term, from the wire or the disk | 2^62 | [`message::MAX_TERM`](crate::message::MAX_TERM) |
//! | an index, offset or count, from the wire or the disk | 2^62 | [`message::MAX_INDEX`](crate::message::MAX_INDEX) |
//! | `--snapshot-entries` | 1,000,000,000 | [`config::MAX_SNAPSHOT_ENTRIES`](crate::config::MAX_SNAPSHOT_ENTRIES) |
//! | a handshake | 5 s, a line of 4 KiB | [`transport::auth::HANDSHAKE_TIMEOUT`](crate::transport::auth::HANDSHAKE_TIMEOUT) |

pub mod auth;
mod frame;
mod limits;
mod lines;
mod listener;
mod peers;
mod reply;

pub use auth::{ClusterKey, Credentials};
pub use frame::{
    encode_frame, encode_json, read_frame, read_sealed_frame, seal_frame, write_frame, FrameError,
};
pub use limits::open_files_warning;
pub use limits::{
    ConnectionLimits, CLIENT_BUFFER_BUDGET_BYTES, CLIENT_WRITE_TIMEOUT, CONNECTION_STACK_BYTES,
    IDLE_TIMEOUT, LINE_BUFFER_BYTES, LINE_PIECE_BYTES, MAX_CLIENT_CONNECTIONS,
    MAX_CLIENT_LINE_BYTES, PEER_BUFFER_BUDGET_BYTES, PEER_CONNECTION_SLOTS, PEER_PROOF_TIMEOUT,
};
pub use listener::{spawn_listener, spawn_listener_with, Inbound, Members};
pub use peers::Peers;
pub use reply::Reply;

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

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

/// How long a connection reader waits for the state-machine thread to answer
/// a client request before answering the client with an error itself. Longer
/// than `raft client`'s default deadline, so normally the client gives up
/// first; the point is that a reader thread is never stuck forever.
pub const CLIENT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Writes as much of `bytes` as the socket takes without blocking and
/// returns how much that was (0 if its buffer is full). The socket is left
/// blocking, as the threads that share it expect.
///
/// This is how the state-machine thread answers a client or sends to a peer
/// itself, without waking another thread and without ever waiting on a slow
/// receiver: what the socket does not take is left to a thread that may
/// block.
pub(crate) fn write_nonblocking(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    stream.set_nonblocking(true)?;
    let mut written = 0;
    let outcome = loop {
        if written == bytes.len() {
            break Ok(written);
        }
        match (&*stream).write(&bytes[written..]) {
            Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    outcome
}

#[cfg(test)]
mod test_support {
    use super::{spawn_listener, ClusterKey, Credentials, Inbound, Members};
    use crate::message::{
        ClientCommand, ClientRequest, ClientResponse, ClientResult, Message, MessageBody, NodeId,
    };
    use crossbeam_channel::Receiver;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    /// Long enough for a slow CI machine; tests wait on events, not on this.
    pub const DEADLINE: Duration = Duration::from_secs(10);

    pub fn vote(from: &str, to: &str) -> Message {
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

    pub fn request(id: u64) -> ClientRequest {
        ClientRequest {
            id,
            command: ClientCommand::Get,
        }
    }

    pub struct Node {
        pub addr: String,
        pub inbound: Receiver<Inbound>,
    }

    /// The key the authenticated test nodes and their clients share.
    pub fn test_key() -> ClusterKey {
        static KEY: std::sync::OnceLock<ClusterKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| ClusterKey::generate().expect("random key"))
            .clone()
    }

    /// A node without authentication, for tests of what happens to frames
    /// after the handshake (they write plain lines with a raw socket).
    pub fn start_node(self_id: &str, members: &[&str]) -> Node {
        start_node_with(self_id, members, Credentials::insecure())
    }

    pub fn start_node_with(self_id: &str, members: &[&str], creds: Credentials) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local addr").to_string();
        let (tx, rx) = crossbeam_channel::bounded(16);
        let members = Members::new(members.iter().map(|m| NodeId::new(*m)).collect());
        spawn_listener(listener, NodeId::new(self_id), members, tx, creds).expect("spawn listener");
        Node { addr, inbound: rx }
    }

    /// A stand-in for the state-machine thread: answers every `get` with
    /// the request id as the value, and forwards peer messages to the test.
    pub fn fake_driver(inbound: Receiver<Inbound>) -> Receiver<Message> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
