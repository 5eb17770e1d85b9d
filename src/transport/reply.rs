//! The answer to one client request, from the state-machine thread back to
//! the client's connection.
//!
//! The plain path would be: the state-machine thread puts the answer in
//! the slot, and the client's connection thread, woken, writes it. As an
//! optimisation (the same one as `peers/direct_write.rs`), the state-machine
//! thread writes the answer to the client's socket itself, without
//! blocking, in [`Reply::send`]: waking the connection's thread to write it
//! would add a thread wake-up to every request's latency. Only what the
//! socket does not take at once (a client that stopped reading) is left to
//! the connection's thread, which may block.

use super::auth::Sealer;
use super::frame::seal_frame;
use super::write_nonblocking;
use crate::message::{ClientResponse, Frame};
use crossbeam_channel::RecvTimeoutError;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where the state-machine thread puts its answer to one client request.
///
/// A one-shot slot rather than a channel: the connection thread waiting on
/// it sleeps at once instead of spinning first, which under many clients
/// costs more CPU than the whole protocol (measured with `raft bench`).
/// Dropping a `Reply` without sending tells the waiter the node gave up.
#[derive(Debug)]
pub struct Reply(Arc<ReplySlot>);

#[derive(Debug)]
struct ReplySlot {
    state: Mutex<ReplyState>,
    changed: Condvar,
    /// The client's connection, shared with its connection thread.
    stream: Arc<TcpStream>,
    remote: SocketAddr,
    /// Authenticates the answer; shared with the connection thread, which
    /// seals the error it sends when no answer comes.
    sealer: Arc<Mutex<Sealer>>,
}

#[derive(Debug)]
enum ReplyState {
    Waiting,
    /// The answer is on its way to the client.
    Written,
    /// The end of the answer, which the socket did not take at once.
    Unsent(Vec<u8>),
    /// The node gave up on the request without answering.
    Dropped,
    /// The connection thread stopped waiting (and answered with an error);
    /// a late answer must not follow it.
    Abandoned,
}

/// What became of the answer, as the connection thread learns it.
#[derive(Debug)]
pub(super) enum Delivery {
    /// Written to the client in full.
    Written,
    /// Partly written; the connection thread writes the rest.
    Unsent(Vec<u8>),
}

/// The waiting side of a [`Reply`].
pub(super) struct ReplyWait(Arc<ReplySlot>);

impl Reply {
    pub(super) fn new(
        stream: Arc<TcpStream>,
        remote: SocketAddr,
        sealer: Arc<Mutex<Sealer>>,
    ) -> (Reply, ReplyWait) {
        let slot = Arc::new(ReplySlot {
            state: Mutex::new(ReplyState::Waiting),
            changed: Condvar::new(),
            stream,
            remote,
            sealer,
        });
        (Reply(Arc::clone(&slot)), ReplyWait(slot))
    }

    /// Answers the request. Never blocks; if the client is gone, or its
    /// connection thread stopped waiting, nothing happens.
    pub fn send(self, response: ClientResponse) {
        let Ok(mut state) = self.0.state.lock() else {
            return;
        };
        if !matches!(*state, ReplyState::Waiting) {
            return;
        }
        let frame = Frame::Response(response);
        let sealed = match self.0.sealer.lock() {
            Ok(mut sealer) => seal_frame(&frame, &mut sealer),
            Err(_) => return,
        };
        let bytes = match sealed {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("cannot answer client {}: {e}", self.0.remote);
                *state = ReplyState::Dropped;
                self.0.changed.notify_one();
                return;
            }
        };
        if log::log_enabled!(log::Level::Debug) {
            let text = String::from_utf8_lossy(&bytes);
            log::debug!("sent to client {}: {}", self.0.remote, text.trim_end());
        }
        // A failed write leaves it all to the connection thread, whose
        // blocking write then fails too and closes the connection.
        let written = write_nonblocking(&self.0.stream, &bytes).unwrap_or(0);
        *state = if written == bytes.len() {
            ReplyState::Written
        } else {
            ReplyState::Unsent(bytes[written..].to_vec())
        };
        // Unlocked first: the waiter, woken, takes the lock at once instead
        // of spinning on it while this thread is still in the wake-up call.
        drop(state);
        self.0.changed.notify_one();
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // A reply that was sent has woken its waiter already; waking it
        // again would cost a system call for nothing.
        let unanswered = match self.0.state.lock() {
            Ok(mut state) if matches!(*state, ReplyState::Waiting) => {
                *state = ReplyState::Dropped;
                true
            }
            Ok(_) => false,
            Err(_) => true, // poisoned: the waiter, woken, sees it and gives up
        };
        if unanswered {
            self.0.changed.notify_one();
        }
    }
}

impl ReplyWait {
    /// Waits up to `timeout` for the answer. After a timeout, a late answer
    /// is never written.
    pub(super) fn wait(&self, timeout: Duration) -> Result<Delivery, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let Ok(mut state) = self.0.state.lock() else {
            return Err(RecvTimeoutError::Disconnected);
        };
        loop {
            match std::mem::replace(&mut *state, ReplyState::Waiting) {
                ReplyState::Written => return Ok(Delivery::Written),
                ReplyState::Unsent(rest) => return Ok(Delivery::Unsent(rest)),
                ReplyState::Dropped | ReplyState::Abandoned => {
                    *state = ReplyState::Abandoned;
                    return Err(RecvTimeoutError::Disconnected);
                }
                ReplyState::Waiting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                *state = ReplyState::Abandoned;
                return Err(RecvTimeoutError::Timeout);
            }
            state = match self.0.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(_) => return Err(RecvTimeoutError::Disconnected),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ClientResult;
    use crate::transport::frame::read_frame;
    use crate::transport::test_support::DEADLINE;
    use std::io::{BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread;

    fn plain() -> Arc<Mutex<Sealer>> {
        Arc::new(Mutex::new(Sealer::plain()))
    }

    /// A client connected to a server-side stream, as a connection thread
    /// holds it.
    fn connection() -> (TcpStream, Arc<TcpStream>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        client.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let (server, remote) = listener.accept().expect("accept");
        (client, Arc::new(server), remote)
    }

    fn value(id: u64, value: String) -> ClientResponse {
        ClientResponse {
            id,
            result: ClientResult::Value { value },
        }
    }

    #[test]
    fn an_answer_the_socket_cannot_take_is_finished_by_the_connection_thread() {
        let (client, stream, remote) = connection();
        let (reply, wait) = Reply::new(Arc::clone(&stream), remote, plain());
        // Bigger than loopback socket buffers: the client reads nothing yet.
        let big = "v".repeat(12 * 1024 * 1024);
        reply.send(value(1, big.clone()));
        let rest = match wait.wait(DEADLINE) {
            Ok(Delivery::Unsent(rest)) => rest,
            other => panic!("expected part of the answer left over, got {other:?}"),
        };
        assert!(!rest.is_empty());
        let finisher = std::thread::spawn(move || (&*stream).write_all(&rest));
        let mut reader = BufReader::new(client);
        match read_frame(&mut reader) {
            Ok(Some(Frame::Response(response))) => assert_eq!(response, value(1, big)),
            other => panic!("expected the answer, got {other:?}"),
        }
        assert!(finisher.join().expect("no panic").is_ok());
    }

    #[test]
    fn a_late_answer_is_not_written_after_the_wait_gave_up() {
        let (mut client, stream, remote) = connection();
        let (reply, wait) = Reply::new(Arc::clone(&stream), remote, plain());
        assert!(matches!(
            wait.wait(Duration::ZERO),
            Err(RecvTimeoutError::Timeout)
        ));
        reply.send(value(2, "late".into()));
        // Close every server-side handle: the client then reads to the end
        // of what was written, which must be nothing.
        drop(wait);
        drop(stream);
        let mut written = Vec::new();
        client.read_to_end(&mut written).expect("read to EOF");
        assert!(written.is_empty(), "{}", String::from_utf8_lossy(&written));
    }

    /// Starts a connection thread's wait on another thread, and returns
    /// once that thread is about to sleep on the slot, as it usually is
    /// when the answer comes. Its outcome is the same if nothing wakes it
    /// (it looks at the slot again at its timeout), so the tests also check
    /// it did not wait that long.
    fn waiting(
        wait: ReplyWait,
    ) -> thread::JoinHandle<(Result<Delivery, RecvTimeoutError>, Duration)> {
        let (started, is_started) = crossbeam_channel::bounded(1);
        let waiter = thread::spawn(move || {
            let _ = started.send(());
            let start = Instant::now();
            (wait.wait(DEADLINE), start.elapsed())
        });
        is_started
            .recv_timeout(DEADLINE)
            .expect("the waiter started");
        waiter
    }

    #[test]
    fn a_sleeping_waiter_is_woken_by_the_answer() {
        let (_client, stream, remote) = connection();
        let (reply, wait) = Reply::new(stream, remote, plain());
        let waiter = waiting(wait);
        reply.send(value(4, "small".into()));
        let (outcome, waited) = waiter.join().expect("no panic");
        assert!(matches!(outcome, Ok(Delivery::Written)), "{outcome:?}");
        assert!(waited < DEADLINE, "woken only by its timeout");
    }

    #[test]
    fn a_sleeping_waiter_is_woken_by_a_reply_dropped_unanswered() {
        let (_client, stream, remote) = connection();
        let (reply, wait) = Reply::new(stream, remote, plain());
        let waiter = waiting(wait);
        drop(reply);
        let (outcome, waited) = waiter.join().expect("no panic");
        assert!(
            matches!(outcome, Err(RecvTimeoutError::Disconnected)),
            "{outcome:?}"
        );
        assert!(waited < DEADLINE, "woken only by its timeout");
    }

    #[test]
    fn an_answer_is_written_by_the_sender_and_reported_to_the_waiter() {
        let (client, stream, remote) = connection();
        let (reply, wait) = Reply::new(stream, remote, plain());
        reply.send(value(3, "small".into()));
        assert!(matches!(wait.wait(DEADLINE), Ok(Delivery::Written)));
        let mut reader = BufReader::new(client);
        match read_frame(&mut reader) {
            Ok(Some(Frame::Response(response))) => {
                assert_eq!(response, value(3, "small".into()))
            }
            other => panic!("expected the answer, got {other:?}"),
        }
    }
}
