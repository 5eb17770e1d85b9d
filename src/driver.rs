//! The driver step: the one order in which the work a core hands out is done.
//!
//! The core ([`Raft`]) decides; whatever embeds it carries out the decisions.
//! That embedder (the node's thread in [`node`](crate::node), the
//! deterministic simulator in `tests/`, or your own program) says how to
//! write to its disk, put a message on its network and apply a command to
//! its state machine, by implementing [`Host`]. [`handle_ready`] then takes
//! every [`Ready`] from the core and does its work in the order that keeps
//! Raft safe across crashes:
//!
//! 1. **send** the messages that promise nothing about this node's disk (a
//!    leader's AppendEntries, so followers write while the leader does:
//!    dissertation §10.2.1; see [`MessageBody::may_precede_persist`](crate::message::MessageBody::may_precede_persist));
//! 2. **persist** the snapshot, term, vote and entries, with one fsync;
//! 3. tell the core they are durable ([`Raft::advance`]);
//! 4. **send** everything else: only now may a vote or an acknowledgement
//!    leave, since it promises that what it votes for or acknowledges will
//!    survive a crash ("persist before you answer");
//! 5. **apply**: install the leader's snapshot, apply the committed entries
//!    in order, answer the reads, react to the events.
//!
//! Because this order lives here once, the real node and the simulator run
//! the same code, and the simulator's crash tests check the real order.

use crate::core::{Raft, Ready};
use crate::message::Message;

/// What an embedder provides to the driver step: a core to drive, a disk,
/// a network and a state machine.
pub trait Host {
    /// Why persisting or applying failed (a full disk, a corrupt snapshot).
    type Error;

    /// The core this host drives.
    fn raft(&mut self) -> &mut Raft;

    /// Makes the `Ready`'s snapshot (if any, first), hard state and entries
    /// durable: when this returns they must survive a crash. Entries at or
    /// below the last stored index replace the stored suffix from there on.
    fn persist(&mut self, ready: &Ready) -> Result<(), Self::Error>;

    /// Hands one message to the network. Sending may fail silently: Raft
    /// tolerates lost messages.
    fn send(&mut self, msg: Message);

    /// Installs `ready.snapshot` (Figure 13, receiver rule 8), applies
    /// `ready.committed` in order (Figure 2, All Servers, rule 1), then
    /// answers `ready.reads` and reacts to `ready.events`. Its messages have
    /// been sent already.
    fn apply(&mut self, ready: Ready) -> Result<(), Self::Error>;
}

/// Carries out every `Ready` the core has, each in the safe order (see the
/// module docs), until the core has nothing more to hand out.
pub fn handle_ready<H: Host>(host: &mut H) -> Result<(), H::Error> {
    while host.raft().has_ready() {
        handle_one_ready(host)?;
    }
    Ok(())
}

/// Carries out one `Ready`: send what may go early, persist, advance, send
/// the rest, apply.
pub fn handle_one_ready<H: Host>(host: &mut H) -> Result<(), H::Error> {
    let mut ready = host.raft().ready();
    // A Ready that changes the term or vote sends nothing early: its
    // AppendEntries would carry a term not yet on disk.
    let (early, late): (Vec<Message>, Vec<Message>) = std::mem::take(&mut ready.messages)
        .into_iter()
        .partition(|msg| ready.hard_state.is_none() && msg.body.may_precede_persist());
    for msg in early {
        host.send(msg);
    }
    host.persist(&ready)?;
    host.raft().advance(&ready);
    for msg in late {
        host.send(msg);
    }
    host.apply(ready)
}
