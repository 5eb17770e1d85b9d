//! raft: the Raft consensus algorithm, as a teaching reference and a node you can run.
//!
//! (The reading map is written once the modules exist.)

pub mod client;
pub mod config;
pub mod core;
pub mod message;
pub mod node;
pub mod state_machine;
pub mod storage;
pub mod transport;
