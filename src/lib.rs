//! # raft
//!
//! The Raft consensus algorithm ("In Search of an Understandable Consensus
//! Algorithm", Ongaro and Ousterhout, 2014), written to be read with the
//! paper open beside it, and to be run for real: `raft 8000`, `raft 8001`,
//! `raft 8002` in three terminals give a replicated, durable string value.
//!
//! ## Embedding it, in one page
//!
//! The core decides; you carry out its decisions. Implement [`driver::Host`]
//! (a disk, a network, a state machine) and call [`driver::handle_ready`]
//! after every input. Three cores in memory elect a leader and commit `x`:
//!
//! ```
//! use raft::core::{Config, Raft, Ready, RoleKind};
//! use raft::driver::{handle_ready, Host};
//! use raft::message::{Entry, EntryData, HardState, Message, NodeId};
//!
//! struct Machine { raft: Raft, disk: (HardState, Vec<Entry>), applied: Vec<String>, outbox: Vec<Message> }
//!
//! impl Host for Machine {
//!     type Error = String;
//!     fn raft(&mut self) -> &mut Raft { &mut self.raft }
//!     fn persist(&mut self, ready: &Ready) -> Result<(), String> {
//!         if let Some(hard_state) = &ready.hard_state { self.disk.0 = hard_state.clone(); }
//!         if let Some(first) = ready.entries.first() {
//!             self.disk.1.truncate(first.index as usize - 1); // a conflicting suffix goes
//!             self.disk.1.extend_from_slice(&ready.entries);
//!         }
//!         Ok(()) // a real disk would fsync here
//!     }
//!     fn send(&mut self, msg: Message) { self.outbox.push(msg) }
//!     fn apply(&mut self, ready: Ready) -> Result<(), String> {
//!         for entry in ready.committed {
//!             if let EntryData::Command(command) = entry.data { self.applied.push(command) }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let ids: Vec<NodeId> = ["a", "b", "c"].map(NodeId::new).to_vec();
//! let mut cluster: Vec<Machine> = (0..3).map(|i| Machine {
//!     raft: Raft::new(Config::new(ids[i].clone(), ids.clone()), HardState::default(), vec![], i as u64),
//!     disk: Default::default(), applied: vec![], outbox: vec![],
//! }).collect();
//! let mut proposed = false;
//! for _tick in 0..1000 {
//!     for machine in &mut cluster {
//!         machine.raft.tick();
//!         handle_ready(machine)?;
//!     }
//!     let mut network: Vec<Message> = cluster.iter_mut().flat_map(|m| m.outbox.drain(..)).collect();
//!     while !network.is_empty() {
//!         let msg = network.remove(0);
//!         let to = cluster.iter_mut().find(|m| *m.raft.id() == msg.to).unwrap();
//!         to.raft.step(msg);
//!         handle_ready(to)?;
//!         network.extend(to.outbox.drain(..));
//!     }
//!     if let Some(leader) = cluster.iter_mut().find(|m| m.raft.role() == RoleKind::Leader) {
//!         if !proposed {
//!             leader.raft.propose("x".to_string()).map_err(|e| format!("{e:?}"))?;
//!             handle_ready(leader)?;
//!             proposed = true;
//!         }
//!     }
//!     if cluster.iter().all(|m| m.applied == ["x"]) { break; }
//! }
//! assert!(cluster.iter().all(|m| m.applied == ["x"]));
//! # Ok::<(), String>(())
//! ```
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
//! 3. [`core`] (`core/mod.rs`): the `Raft` struct first, shaped like
//!    Figure 2, then its roles and how a message reaches its rule
//!    ([`core::Raft::step`], [`core::Raft::check_term`]); [`core::ready`],
//!    the `Ready` contract with the driver; [`core::config`], the settings
//!    and limits.
//! 4. [`core::election`]: timeouts, RequestVote, becoming leader; then
//!    PreVote, CheckQuorum and leadership transfer.
//! 5. [`core::replication`]: AppendEntries, the consistency check, conflict
//!    hints, and the commit rule of §5.4.2.
//! 6. [`core::read`]: linearizable reads without the log (ReadIndex).
//! 7. [`core::snapshot`]: log compaction and InstallSnapshot (§7).
//! 8. [`core::membership`]: adding and removing servers, one at a time;
//!    [`core::impossible`]: messages Raft rules out (a second leader in a
//!    term, an entry contradicting a committed one), which a buggy or
//!    compromised member could send, refused before any rule acts on them.
//! 9. [`state_machine`]: what committed commands are applied to.
//! 10. [`storage`]: how term, vote, log and snapshot survive a crash.
//! 11. [`driver`]: the driver step, the one order (persist, send, apply) in
//!     which every embedder carries out a `Ready`; [`node`]: the driver
//!     thread of a running node, one file per job: the loop where "persist
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
//! Then the tests: `tests/traces/` (walkthroughs: each step of a scenario
//! and every message and state change it causes), `tests/paper.rs` (one
//! test per rule of Figure 2),
//! `tests/extensions.rs` (PreVote, CheckQuorum, leadership transfer),
//! `tests/simulation.rs` (whole clusters under faults, deterministic),
//! `tests/disk_loss.rs` (a member that lost its disk),
//! `tests/forged.rs` (messages a member could forge),
//! `tests/storage.rs`, and `tests/cluster.rs` and `tests/membership.rs`
//! (real processes).
//!
//! ## Figure 2, rule by rule
//!
//! Every rule of the paper's Figure 2, box by box, and the pieces it leaves
//! to the text, with the one function that implements it, a test that fails
//! if it is broken (in `tests/paper.rs` unless another file is named), and
//! the walkthrough in `tests/traces/` where it can be watched (by number:
//! `01_first_election.txt` ... `10_membership.txt`). The rule handlers are
//! private: read them in `cargo doc --document-private-items`.
//!
//! | Box | Rule | Implemented by | Test | Trace |
//! |---|---|---|---|---|
//! | State | Persistent state on all servers: `currentTerm`, `votedFor`, `log[]`, on stable storage before responding | [`Ready::hard_state`](core::Ready::hard_state), [`Ready::entries`](core::Ready::entries) | `a_restarted_node_keeps_its_term_vote_and_log` | 01 (`persists`) |
//! | State | Volatile state on all servers: `commitIndex`, `lastApplied` | [`Raft::commit_index`](core::Raft::commit_index), [`Raft::last_applied`](core::Raft::last_applied) | `committed_entries_are_handed_out_once_and_in_order` | 02 |
//! | State | Volatile state on leaders: `nextIndex[]`, `matchIndex[]` | [`Progress`](core::replication::Progress) | `a_leader_advances_match_and_next_index_on_success` | 02, 03 |
//! | AppendEntries receiver | 1. Reply false if term < currentTerm | [`Raft::check_term`](core::Raft::check_term), answered by [`Raft::reject_stale`](core::Raft::reject_stale) | `append_entries_from_an_older_term_is_refused` | — |
//! | AppendEntries receiver | 2. Reply false if log doesn't contain an entry at prevLogIndex whose term matches prevLogTerm | [`Raft::consistency_check`](core::Raft::consistency_check) | `append_entries_is_refused_when_the_previous_entry_has_another_term` | 03 |
//! | AppendEntries receiver | 3. If an existing entry conflicts with a new one, delete it and all that follow | [`Raft::append_from_leader`](core::Raft::append_from_leader) | `append_entries_deletes_a_conflicting_entry_and_all_that_follow_it` | 03, 04 (d) |
//! | AppendEntries receiver | 4. Append any new entries not already in the log | [`Raft::append_from_leader`](core::Raft::append_from_leader) | `append_entries_appends_entries_not_already_in_the_log` | 02 |
//! | AppendEntries receiver | 5. If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last new entry) | [`Raft::advance_follower_commit`](core::Raft::advance_follower_commit) | `append_entries_commits_up_to_leader_commit_but_not_past_the_last_new_entry` | 02 |
//! | RequestVote receiver | 1. Reply false if term < currentTerm | [`Raft::check_term`](core::Raft::check_term), answered by [`Raft::reject_stale`](core::Raft::reject_stale) | `request_vote_from_an_older_term_is_refused` | — |
//! | RequestVote receiver | 2. If votedFor is null or candidateId, and the candidate's log is at least as up-to-date, grant vote | [`Raft::may_vote_for`](core::Raft::may_vote_for) | `request_vote_grants_one_vote_per_term` | 01, 04 |
//! | All servers | If commitIndex > lastApplied: apply log\[lastApplied\] | [`Raft::ready`](core::Raft::ready) hands out [`Ready::committed`](core::Ready::committed) | `committed_entries_are_handed_out_once_and_in_order` | 02 |
//! | All servers | If RPC request or response contains term T > currentTerm: set currentTerm = T, convert to follower | [`Raft::check_term`](core::Raft::check_term) | `a_newer_term_in_any_message_makes_any_node_a_follower` | 03, 08 |
//! | Followers | Respond to RPCs from candidates and leaders | [`Raft::step`](core::Raft::step) | `a_request_from_an_older_term_is_refused_whatever_the_role` | all |
//! | Followers | If election timeout elapses without AppendEntries from the leader or granting a vote: convert to candidate | [`Raft::on_election_timeout`](core::Raft::on_election_timeout) | `a_follower_that_hears_nothing_becomes_a_candidate` | 01 |
//! | Candidates | On conversion: increment currentTerm, vote for self, reset election timer, send RequestVote | [`Raft::start_election`](core::Raft::start_election) | `a_new_candidate_increments_its_term_votes_for_itself_and_asks_everyone` | 01 |
//! | Candidates | If votes received from a majority: become leader | [`Raft::maybe_win_election`](core::Raft::maybe_win_election) | `a_candidate_with_votes_from_a_majority_becomes_leader` | 01 |
//! | Candidates | If AppendEntries received from new leader: convert to follower | [`Raft::follow`](core::Raft::follow), from [`Raft::on_append_entries`](core::Raft::on_append_entries) | `a_candidate_hearing_from_a_leader_of_its_term_becomes_a_follower` | — |
//! | Candidates | If election timeout elapses: start new election | [`Raft::on_election_timeout`](core::Raft::on_election_timeout) | `a_candidate_whose_election_times_out_starts_another_in_the_next_term` | 04 (c) |
//! | Leaders | Upon election: send initial empty AppendEntries; repeat during idle periods | [`Raft::become_leader`](core::Raft::become_leader), [`Raft::on_heartbeat_timeout`](core::Raft::on_heartbeat_timeout) | `an_idle_leader_sends_a_heartbeat_every_heartbeat_interval` | 01, 02 |
//! | Leaders | If command received from client: append entry to local log, respond after applied | [`Raft::propose`](core::Raft::propose) | `a_leader_appends_a_proposal_and_sends_it_to_the_followers` | 02 |
//! | Leaders | If last log index ≥ nextIndex: send AppendEntries with log entries starting at nextIndex | [`Raft::send_append`](core::Raft::send_append), as the follower's [`Replication`](core::replication::Replication) state allows | `a_leader_appends_a_proposal_and_sends_it_to_the_followers` | 02 |
//! | Leaders | If successful: update nextIndex and matchIndex; if it fails because of log inconsistency: decrement nextIndex and retry | [`Raft::on_append_response`](core::Raft::on_append_response) | `a_leader_advances_match_and_next_index_on_success` | 03 |
//! | Leaders | If there exists an N > commitIndex with a majority of matchIndex\[i\] ≥ N and log\[N\].term == currentTerm: commitIndex = N | [`Raft::maybe_commit`](core::Raft::maybe_commit) | `a_leader_commits_once_a_majority_holds_an_entry_of_its_term` | 02 |
//! | §5.3 | Conflict hint: the follower names the conflicting term, the leader skips it whole | [`Raft::consistency_check`](core::Raft::consistency_check), [`Raft::on_append_response`](core::Raft::on_append_response) | `a_leader_skips_a_whole_conflicting_term_it_does_not_have` | 03 |
//! | Flow control | Per follower, one probe at a time until it accepts (`Probe`), then a bounded stream (`Replicate`), or the snapshot chunk by chunk (`Snapshot`), with the transitions in one table | [`Replication`](core::replication::Replication), [`Progress`](core::replication::Progress) | `a_leader_probes_a_follower_until_it_accepts_and_then_streams_to_it`, `a_refusal_makes_the_leader_probe_a_follower_it_was_streaming_to`, `entries_nobody_acknowledges_for_a_heartbeat_interval_are_sent_again`, `a_follower_behind_the_leaders_snapshot_is_sent_it_chunk_by_chunk` | 03, 09 |
//! | §5.4.1 | Election restriction: vote only for a candidate whose log is at least as up-to-date | [`Log::is_up_to_date`](core::Log::is_up_to_date) | `request_vote_is_refused_to_a_candidate_whose_log_is_behind`, `bug_switch_vote_without_log_check_is_caught` | 04 |
//! | §5.4.2 | Commit only entries of the current term by counting replicas | [`Raft::maybe_commit`](core::Raft::maybe_commit) | `an_entry_from_an_earlier_term_is_not_committed_by_counting_replicas`, `bug_switch_commit_earlier_term_is_caught` | 04 |
//! | §8 | A new leader commits a no-op entry of its term | [`Raft::become_leader`](core::Raft::become_leader) | `a_new_leader_appends_a_noop_and_sends_append_entries_to_everyone` | 01 |
//! | §8, diss. §6.4 | ReadIndex: a read waits for the leader's commit of its term and a heartbeat round answered by a majority | [`Raft::read_index`](core::Raft::read_index), [`Raft::confirm_reads`](core::Raft::confirm_reads) | `a_read_completes_only_when_a_majority_answers_a_round_sent_after_it`, `bug_switch_read_without_quorum_is_caught` | 07 |
//! | diss. §9.6 | PreVote: ask "could I win?" before raising the term | [`Raft::start_pre_vote`](core::Raft::start_pre_vote), [`Raft::on_pre_vote`](core::Raft::on_pre_vote) | `tests/extensions.rs`: `with_pre_vote_an_isolated_node_keeps_its_term_however_often_it_times_out` | 05 |
//! | diss. §6.2, §4.2.3 | CheckQuorum: a leader that hears from no majority steps down; followers ignore votes while they hear from a leader | [`Raft::check_quorum`](core::Raft::check_quorum), [`Raft::ignore_vote_request`](core::Raft::ignore_vote_request) | `tests/extensions.rs`: `a_leader_that_hears_from_no_majority_for_an_election_timeout_steps_down` | 06, 05 |
//! | diss. §3.10 | Leadership transfer: catch the target up, then TimeoutNow | [`Raft::transfer_leadership`](core::Raft::transfer_leadership), [`Raft::on_timeout_now`](core::Raft::on_timeout_now) | `tests/extensions.rs`: `a_transfer_to_an_up_to_date_follower_sends_timeout_now_at_once` | 08 |
//! | §7 | Log compaction: the state machine's state replaces the applied log | [`Raft::compact`](core::Raft::compact) | `tests/simulator_scenarios/compaction.rs`: `snapshot_basic` | 09 |
//! | §7, Figure 13 | InstallSnapshot: chunks at offsets; keep the log after a matching last entry, else discard it; reset the state machine | [`Raft::send_snapshot_chunk`](core::Raft::send_snapshot_chunk), [`Raft::on_install_snapshot`](core::Raft::on_install_snapshot) | `tests/simulator_scenarios/compaction.rs`: `snapshot_install`, `bug_keep_log_conflicting_with_snapshot_is_caught` | 09 |
//! | diss. ch. 4 | Membership, one server at a time: a learner catches up, is promoted; one uncommitted change at most | [`Raft::add_learner`](core::Raft::add_learner), [`Raft::maybe_promote`](core::Raft::maybe_promote), [`Raft::remove_member`](core::Raft::remove_member) | `tests/simulator_scenarios/membership.rs`: `grow_3_to_5`, `bug_overlapping_membership_changes_is_caught` | 10 |
//! | Persist before answering | State reaches the disk before any message relying on it leaves | [`driver::handle_ready`] | `state_to_persist_comes_in_the_same_ready_as_the_answer_relying_on_it`; `tests/simulator_scenarios/bug_switches.rs`: `bug_reply_before_persist_is_caught` | all (`persists` before the answer) |

// The map above links to the private rule handlers, which
// `cargo doc --document-private-items` shows.
#![allow(rustdoc::private_intra_doc_links)]

pub mod client;
pub mod config;
pub mod console;
pub mod core;
pub mod demo;
pub mod driver;
pub mod message;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod prompt;
pub mod state_machine;
pub mod storage;
pub mod throttle;
pub mod transport;
