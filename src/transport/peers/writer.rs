//! The plain path to a peer: one writer thread per peer takes messages off
//! its queue and writes them, a burst in one write. It owns the slow work:
//! connecting, the handshake, noticing a peer that closed the connection,
//! reconnecting with a growing pause ([`Reconnect`]), and finishing a frame
//! the state-machine thread's direct write left half-sent.

use super::{log_sent, Connection, Counters, Job, Link, IDLE_CHECK_AFTER};
use crate::message::{Frame, NodeId};
use crate::throttle::Throttle;
use crate::transport::auth::{self, Credentials, Opener, Role, Sealer, SEAL_BYTES};
use crate::transport::frame::encode_json;
use crate::transport::{
    connect, PEER_QUEUE_LEN, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, WRITER_BUFFER_BYTES,
};
use crossbeam_channel::{Receiver, TryRecvError};
use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lines of a batch, sealed for one connection, in one buffer.
fn seal_batch(sealer: &mut Sealer, batch: &Batch) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(batch.bytes + batch.jsons.len() * SEAL_BYTES);
    for json in &batch.jsons {
        let start = bytes.len();
        bytes.extend_from_slice(json);
        sealer
            .seal_in_place(&mut bytes, start)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    }
    Ok(bytes)
}

/// One peer's writer thread.
pub(super) struct PeerWriter {
    /// This node, as it introduces itself in the handshake.
    pub(super) self_id: NodeId,
    pub(super) creds: Credentials,
    pub(super) id: NodeId,
    pub(super) addr: String,
    pub(super) queue: Receiver<Job>,
    pub(super) link: Arc<Link>,
    pub(super) stop: Receiver<()>,
    pub(super) counters: Arc<Counters>,
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

    pub(super) fn run(self) {
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
