//! An optimisation: the state-machine thread writes a message to a peer's
//! socket itself when it can do so at once, instead of waking the peer's
//! writer thread (see the module above for why, and for the plain path,
//! which this only shortcuts).
//!
//! It writes only when nothing is queued for the writer (so nothing is
//! overtaken), only if it gets the connection's lock without waiting (the
//! writer holds it while it connects or writes), and never blocks: what the
//! socket does not take is handed to the writer, whole ([`Job::Encoded`])
//! or as the tail of a frame ([`Job::Finish`], the bytes in
//! `Connection::unsent`).

use super::{log_sent, Job, PeerHandle, Peers, IDLE_CHECK_AFTER};
use crate::message::{Frame, Message};
use crate::transport::frame::encode_json;
use crate::transport::write_nonblocking;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Peers {
    /// The fast path: writes `msg` on this thread without blocking. Returns
    /// what is left for the writer thread, if anything.
    pub(super) fn write_now(&self, peer: &PeerHandle, msg: Message) -> Option<Job> {
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
}

#[cfg(test)]
mod tests {
    use super::super::{Connection, Link};
    use super::*;
    use crate::message::NodeId;
    use crate::transport::auth::{Credentials, Opener, Sealer};
    use crate::transport::test_support::vote;
    use crate::transport::PEER_QUEUE_LEN;
    use crossbeam_channel::Receiver;
    use std::collections::BTreeMap;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

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
