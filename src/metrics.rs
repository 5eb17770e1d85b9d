//! Counters for measuring a node at work, kept apart from the protocol.
//!
//! `raft client ADDRS metrics` (or a [`ClientCommand::Metrics`] request)
//! answers with one [`Metrics`] object: what this node's disk and network
//! have done since it started. `raft bench` reads it at both ends of its
//! measured window and divides the rise by the entries committed, giving
//! fsyncs, bytes and messages per entry. Nothing in the protocol depends on
//! these numbers; `status` is what to read to learn what a node believes.
//!
//! [`ClientCommand::Metrics`]: crate::message::ClientCommand::Metrics

use serde::{Deserialize, Serialize};

/// What `metrics` reports. Every counter starts at zero when the process
/// starts; a node that does not know one reports zero (`#[serde(default)]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// fsyncs this node's storage has done since it started (of files and
    /// directories, those made while opening it included).
    #[serde(default)]
    pub fsyncs: u64,
    /// Bytes written to peer connections since the node started.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Messages written to peer connections since the node started.
    #[serde(default)]
    pub messages_sent: u64,
    /// The longest the node's disk held up its state-machine thread in one
    /// sync (writes and fsync), in microseconds, since it started.
    #[serde(default)]
    pub longest_sync_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_counters_read_as_zero() {
        let m: Metrics = serde_json::from_str(r#"{"fsyncs":3}"#).expect("parses");
        assert_eq!(
            m,
            Metrics {
                fsyncs: 3,
                ..Metrics::default()
            }
        );
    }
}
