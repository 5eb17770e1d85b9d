//! The answer to one client request, from the state-machine thread back to
//! the client's connection.

use crate::message::ClientResponse;
use crossbeam_channel::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
pub(super) struct ReplyWait(Arc<ReplySlot>);

impl Reply {
    pub(super) fn new() -> (Reply, ReplyWait) {
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
    pub(super) fn wait(&self, timeout: Duration) -> Result<ClientResponse, RecvTimeoutError> {
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
