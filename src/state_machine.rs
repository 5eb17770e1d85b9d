//! The replicated state machine: what the log's commands are applied to.
//!
//! Raft does not care what the commands mean; it only guarantees that every
//! node applies the same commands in the same order (State Machine Safety,
//! §5.4.3). A library user plugs in their own state through
//! [`StateMachine`]; the binary ships the original Python project's state,
//! one string value.

use crate::message::Index;

/// Anything the log's commands can be applied to. Both methods must be
/// deterministic: the same commands in the same order give the same state
/// on every node.
pub trait StateMachine {
    /// Applies the committed command at `index`. Called once per committed
    /// command, in index order.
    fn apply(&mut self, index: Index, command: &str);

    /// The state as a client sees it (`get`).
    fn read(&self) -> String;

    /// The whole state, serialised, for a snapshot (§7).
    fn snapshot(&self) -> String;

    /// Replaces the whole state with one from `snapshot`. An error says
    /// what is wrong with the data.
    fn restore(&mut self, snapshot: &str) -> Result<(), String>;
}

/// The original project's state: one string, replaced by each `set`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Value {
    value: String,
}

impl StateMachine for Value {
    fn apply(&mut self, _index: Index, command: &str) {
        command.clone_into(&mut self.value);
    }

    fn read(&self) -> String {
        self.value.clone()
    }

    /// The value is its own serialisation.
    fn snapshot(&self) -> String {
        self.value.clone()
    }

    fn restore(&mut self, snapshot: &str) -> Result<(), String> {
        snapshot.clone_into(&mut self.value);
        Ok(())
    }
}
