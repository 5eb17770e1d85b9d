//! # raft
//!
//! The Raft consensus algorithm ("In Search of an Understandable Consensus
//! Algorithm", Ongaro and Ousterhout, 2014), written to be read with the
//! paper open beside it, and to be run for real: `raft 8000`, `raft 8001`,
//! `raft 8002` in three terminals give a replicated, durable string value.
//!
//! ## How the code is built
//!
//! A node is two layers. The **core** ([`core::Raft`]) holds every rule of the
//! protocol and nothing else: no sockets, no disk, no clock, no threads.
//! Time enters as ticks, messages as values, and what the core wants done
//! comes back as a [`core::Ready`]. The **driver** ([`node`]) is one thread
//! that feeds the core and carries out its wishes in the one safe order:
//! persist, then send, then apply.
//!
//! ```text
//!          stdin ──► [stdin thread] ─────────────┐
//!  peers/clients ──► [listener + reader threads] ─┤  crossbeam channels
//!          timer ──► [tick] ──────────────────────┤
//!         Ctrl+C ──► [ctrlc handler] ─────────────┘
//!                                                  ▼
//!                      [state-machine thread: node/]
//!                       select! → core.step / tick / propose
//!                       Ready → fsync → send → apply → answer
//!                                                  ▼
//!        sockets: written by that thread when they have room, else by
//!        [one writer thread per peer] or the client's [reader thread]
//! ```
//!
//! ## Reading order
//!
//! 1. [`message`]: the vocabulary. Terms, indexes, entries, and the RPCs of
//!    Figure 2 as one-way messages.
//! 2. [`core::log`]: the log, and the "at least as up-to-date" test.
//! 3. [`core`] (`core/mod.rs`): the `Raft` struct, shaped like Figure 2, its
//!    roles, and the `Ready` contract with the driver.
//! 4. [`core::election`]: timeouts, RequestVote, becoming leader; then
//!    PreVote, CheckQuorum and leadership transfer.
//! 5. [`core::replication`]: AppendEntries, the consistency check, conflict
//!    hints, and the commit rule of §5.4.2.
//! 6. [`core::read`]: linearizable reads without the log (ReadIndex).
//! 7. [`core::snapshot`]: log compaction and InstallSnapshot (§7).
//! 8. [`core::membership`]: adding and removing servers, one at a time.
//! 9. [`state_machine`]: what committed commands are applied to.
//! 10. [`storage`]: how term, vote, log and snapshot survive a crash.
//! 11. [`node`]: the driver, one file per job: the loop where "persist
//!     before you answer" happens (`node/event_loop.rs`), client requests
//!     waiting for their commit (`node/requests.rs`), connections kept in
//!     step with the membership, joining, what it says;
//!     [`prompt`], what a person types at it; [`console`], how every line
//!     reaches the screen; [`partition`], cutting a node off for a demo.
//! 12. [`transport`] (framing, the cluster key and the authentication of
//!     every connection and frame, the listener, answers to clients, sending
//!     to peers: a queue and a writer thread per peer that connects and
//!     retries, `transport/peers/writer.rs`, with one optimisation in front,
//!     `peers/direct_write.rs`), [`client`], [`config`]: sockets,
//!     `raft client`, and the command line.
//! 13. [`demo`]: `raft demo`, a whole cluster of this binary in one terminal.
//!
//! Measuring is kept off that path: [`metrics`] holds the counters a node
//! reports to `raft client ADDRS metrics`, and `raft bench`, which reads
//! them, is part of the `raft` binary (`src/bench/`), not of this library.
//!
//! Then the tests: `tests/paper.rs` (one test per rule of Figure 2),
//! `tests/extensions.rs` (PreVote, CheckQuorum, leadership transfer),
//! `tests/simulation.rs` (whole clusters under faults, deterministic),
//! `tests/disk_loss.rs` (a member that lost its disk),
//! `tests/storage.rs`, and `tests/cluster.rs` and `tests/membership.rs`
//! (real processes).

pub mod client;
pub mod config;
pub mod console;
pub mod core;
pub mod demo;
pub mod message;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod prompt;
pub mod state_machine;
pub mod storage;
pub mod throttle;
pub mod transport;
