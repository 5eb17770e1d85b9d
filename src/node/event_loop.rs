//! The loop: one turn waits for one input (a message, a request, a line
//! typed, a tick), takes what else is already queued, and then carries out
//! what the core asked in the order that keeps Raft safe across crashes:
//! **persist, then send, then apply**. One fsync covers the whole turn
//! (group commit). Also the last act of a leader stopped with Ctrl+C:
//! handing leadership over before it exits.

use super::*;

impl Node {
    pub(super) fn run_loop(
        &mut self,
        inbound: &Receiver<Inbound>,
        stdin: &Receiver<String>,
        shutdown: &Receiver<()>,
    ) -> Result<(), String> {
        let never = crossbeam_channel::never();
        let mut stdin_open = true;
        loop {
            // Backpressure: while the forwarding queue is full, lines wait
            // in the pipe (the tick wakes this loop to look again).
            let stdin_rx = if stdin_open && !self.forwards.is_full() {
                stdin
            } else {
                &never
            };
            let ticker = self.ticker.clone();
            select! {
                recv(inbound) -> msg => match msg {
                    Ok(msg) => self.on_inbound(msg),
                    Err(_) => return Err("the listener thread stopped".to_string()),
                },
                recv(stdin_rx) -> line => match line {
                    Ok(line) => self.on_prompt_line(&line),
                    // With `--stop-when-stdin-closes` (as `raft demo`
                    // starts its nodes), the program holding our stdin is
                    // gone: stop as on Ctrl+C.
                    Err(_) if self.stop_when_stdin_closes => {
                        say!("Node {} stdin is closed; stopping (--stop-when-stdin-closes)", self.raft.id());
                        return Ok(());
                    }
                    // Otherwise the end of stdin does not stop the node, so
                    // `raft 8000 < /dev/null &` runs in the background.
                    Err(_) => {
                        stdin_open = false;
                        say!("Node {} stdin is closed; it goes on running until Ctrl+C", self.raft.id());
                    }
                },
                recv(ticker) -> _ => {
                    self.raft.tick();
                    self.watch_peers();
                }
                recv(shutdown) -> _ => return Ok(()),
            }
            // Group commit: take what else is already waiting, so that one
            // fsync serves the whole batch.
            for msg in inbound.try_iter().take(MAX_BATCH) {
                self.on_inbound(msg);
            }
            // Before applying, so "following leader" comes before the
            // values that leader's first message commits.
            self.notice_leader();
            self.handle_ready()?;
            self.answer_status_requests();
            self.members.set_term(self.raft.current_term());
            self.notice_leader();
        }
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Peer(msg) => {
                if self.partition.drops_received(&msg.from) {
                    return;
                }
                self.heard_from(&msg.from);
                self.reach_leader(&msg);
                debug!("received {msg}");
                self.raft.step(msg)
            }
            Inbound::Client { request, reply } => self.on_client_request(request, reply),
        }
    }

    /// Does what the core asked, in the order that keeps it safe.
    pub(super) fn handle_ready(&mut self) -> Result<(), String> {
        // The one order, shared with the simulator: send what may go early,
        // persist, send the answers, apply (see `driver`).
        driver::handle_ready(self)
    }

    /// Persist before you answer: term, vote and entries reach the disk, with
    /// one fsync for the batch, before any message of this Ready is sent.
    /// A failed write or fsync stops the node: it cannot know what is on
    /// disk, and answering anyway could break the promises Raft makes.
    pub(super) fn persist(&mut self, ready: &Ready) -> Result<(), String> {
        if let Some(snapshot) = &ready.snapshot {
            self.storage
                .save_snapshot(snapshot)
                .map_err(|e| e.to_string())?;
        }
        if let Some(hard_state) = &ready.hard_state {
            self.storage
                .save_hard_state(hard_state)
                .map_err(|e| e.to_string())?;
        }
        if !ready.entries.is_empty() {
            self.storage
                .append(&ready.entries)
                .map_err(|e| e.to_string())?;
        }
        self.storage.sync().map_err(|e| e.to_string())
    }

    /// Applies committed entries in order, answers the writes that wait for
    /// them, then the reads whose index is now applied.
    pub(super) fn apply(&mut self, ready: &Ready) {
        for entry in &ready.committed {
            if let EntryData::Command(value) = &entry.data {
                self.state_machine.apply(entry.index, value);
                say!("Node {} updated value to: {}", self.raft.id(), value);
            }
            self.answer_write(entry);
        }
        self.answer_reads(ready);
    }

    /// §7: once enough entries were applied since the last snapshot, write
    /// the state machine's state to a snapshot and compact the log.
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let applied = self.raft.last_applied();
        // Saturating: both are bounded (MAX_INDEX, MAX_SNAPSHOT_ENTRIES), so
        // this never saturates; if it did, "not yet" is the safe answer.
        if applied
            < self
                .raft
                .snapshot_index()
                .saturating_add(self.snapshot_entries)
        {
            return Ok(());
        }
        let data = self.state_machine.snapshot();
        let snapshot = match self.raft.compact(applied, data) {
            Ok(snapshot) => snapshot,
            // A node that joined learns the membership from the leader; it
            // snapshots once it has (a later call).
            Err(CompactError::MembershipUnknown { .. }) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        self.storage
            .save_snapshot(&snapshot)
            .map_err(|e| e.to_string())?;
        say!(
            "Node {} snapshot at index {} ({})",
            self.raft.id(),
            applied,
            human_bytes(self.storage.disk_bytes())
        );
        Ok(())
    }

    /// Ctrl+C on a leader: hand leadership to the most up-to-date follower
    /// that answers (heard from within the shortest election timeout; how
    /// long ago each was heard from is in `status`) before exiting
    /// (dissertation §3.10), so the cluster does not wait an election
    /// timeout to notice we are gone. Bounded by `limit`.
    pub(super) fn hand_over_leadership(
        &mut self,
        inbound: &Receiver<Inbound>,
        limit: Duration,
    ) -> Result<(), String> {
        let ticker = self.ticker.clone();
        let Some(target) = self.most_up_to_date_follower() else {
            if self.raft.role() == RoleKind::Leader {
                say!(
                    "Leader {} hands over to nobody: no follower answered within the last election timeout",
                    self.raft.id()
                );
            }
            return Ok(());
        };
        if let Err(e) = self.raft.transfer_leadership(target) {
            debug!("no leadership transfer on shutdown: {e}");
            return Ok(());
        }
        let deadline = crossbeam_channel::after(limit);
        loop {
            self.handle_ready()?;
            self.answer_status_requests();
            let handed_over = self.raft.role() != RoleKind::Leader
                && self.raft.leader().is_some_and(|l| l != self.raft.id());
            if handed_over {
                return Ok(());
            }
            select! {
                recv(inbound) -> msg => match msg {
                    Ok(msg) => self.on_inbound(msg),
                    Err(_) => return Ok(()),
                },
                recv(ticker) -> _ => self.raft.tick(),
                recv(deadline) -> _ => return Ok(()),
            }
        }
    }

    fn most_up_to_date_follower(&self) -> Option<NodeId> {
        // Only a voter that answered within the shortest election timeout:
        // one stopped a moment ago would take leadership and then never
        // use it, and the cluster would wait for an election.
        let window = self.election_timeout.0 * self.clock_factor();
        self.raft.most_up_to_date_voter(|id| {
            self.watch.heard_within(id, window) && !self.partition.drops(id)
        })
    }
}

/// What the driver step (see [`driver`]) needs of a running node: its
/// storage, its connections to peers and its state machine.
impl driver::Host for Node {
    type Error = String;

    fn raft(&mut self) -> &mut Raft {
        &mut self.raft
    }

    /// Term, vote, entries and snapshot reach the disk with one fsync.
    fn persist(&mut self, ready: &Ready) -> Result<(), String> {
        Node::persist(self, ready)
    }

    fn send(&mut self, msg: Message) {
        Node::send(self, msg)
    }

    fn apply(&mut self, ready: Ready) -> Result<(), String> {
        if let Some(snapshot) = &ready.snapshot {
            // Figure 13, receiver rule 8: reset the state machine.
            self.state_machine
                .restore(&snapshot.data)
                .map_err(|e| format!("cannot load the snapshot from the leader: {e}"))?;
            say!(
                "Node {} installed a snapshot up to index {} from the leader; value: {}",
                self.raft.id(),
                snapshot.last_included_index,
                self.state_machine.read()
            );
        }
        Node::apply(self, &ready);
        // After applying: a leader that stepped down in this Ready may
        // still have committed some of the writes waiting on it.
        for event in &ready.events {
            self.say_event(event);
            self.settle_requests(event);
        }
        self.sync_membership();
        self.maybe_snapshot()
    }
}
