//! raft: the Raft consensus algorithm, as a teaching reference and a node you can run.
//!
//! (The reading map is written once the modules exist.)

pub mod message;
pub mod storage;
