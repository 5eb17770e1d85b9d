//! Failover: how long the cluster takes to commit again after its leader
//! stops.
//!
//! One client writes continuously to whoever leads. The leader is stopped,
//! either with `kill -9` (it vanishes; the others must notice by election
//! timeout) or with Ctrl+C (it hands leadership over first, dissertation
//! §3.10). The figure of a round is the time from the signal to the commit
//! of the first write that was *sent* after it. A write already in flight
//! at the old leader does not count, even if it commits during a Ctrl+C
//! hand-over: it would hide the gap the next client sees. Between rounds
//! the stopped node is restarted and the cluster left to become whole again.

use super::cluster::{wait_for_leader, LocalCluster, Quorum};
use super::load::{value_for, Outcome, Session, RETRY_PAUSE};
use raft::message::ClientCommand;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the failover writer waits for one answer. A killed leader's
/// connections close at once, so this only matters for a node that hangs.
pub const FAILOVER_IO_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest the cluster may go without committing after a stop before
/// the run is abandoned: far beyond any election timeout.
pub const GAP_DEADLINE: Duration = Duration::from_secs(10);

/// How long a restarted node and the cluster may take to be whole again.
pub const WHOLE_DEADLINE: Duration = Duration::from_secs(20);

/// The newest commits the writer remembers. The coordinator looks for the
/// first one after a stop within milliseconds of it happening, and a single
/// client commits at most a few thousand writes a second, so this is ample.
const RECENT_COMMITS: usize = 4096;

/// How often the coordinator looks for the first commit after a stop:
/// well under the resolution of the figure (see `RETRY_PAUSE`).
const GAP_POLL: Duration = Duration::from_micros(200);

/// The two ways to stop a leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// SIGKILL.
    Kill,
    /// SIGINT, as Ctrl+C.
    Interrupt,
}

impl StopKind {
    pub fn label(self) -> &'static str {
        match self {
            StopKind::Kill => "kill -9",
            StopKind::Interrupt => "Ctrl+C",
        }
    }
}

/// The measured gaps, one per round, in round order.
#[derive(Debug, Default)]
pub struct FailoverTimes {
    pub kill: Vec<Duration>,
    pub interrupt: Vec<Duration>,
}

/// (sent, committed) instants of recent writes.
type Commits = Mutex<VecDeque<(Instant, Instant)>>;

/// Runs `rounds` rounds of each kind of stop against `cluster`.
pub fn run(
    cluster: &mut LocalCluster,
    rounds: u32,
    value_size: usize,
    stop: &AtomicBool,
) -> Result<FailoverTimes, String> {
    let addrs = cluster.addrs();
    let leader = wait_for_leader(
        &addrs,
        Quorum::Whole,
        Instant::now() + WHOLE_DEADLINE,
        stop,
        || cluster.check_running(),
    )?;
    let commits: Arc<Commits> = Arc::new(Mutex::new(VecDeque::new()));
    let writer_stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let commits = Arc::clone(&commits);
        let writer_stop = Arc::clone(&writer_stop);
        let addrs = addrs.clone();
        std::thread::Builder::new()
            .name("bench-failover-writer".into())
            .spawn(move || write_continuously(addrs, leader, value_size, &commits, &writer_stop))
            .map_err(|e| format!("cannot start the failover writer: {e}"))?
    };
    let result = (|| {
        let mut times = FailoverTimes::default();
        for kind in [StopKind::Kill, StopKind::Interrupt] {
            for round in 1..=rounds {
                let gap = one_round(cluster, kind, &commits, stop)?;
                eprintln!(
                    "bench: {} of the leader, round {round}/{rounds}: next commit after {:.1} ms",
                    kind.label(),
                    gap.as_secs_f64() * 1e3
                );
                match kind {
                    StopKind::Kill => times.kill.push(gap),
                    StopKind::Interrupt => times.interrupt.push(gap),
                }
            }
        }
        Ok(times)
    })();
    writer_stop.store(true, Ordering::Relaxed);
    if writer.join().is_err() {
        return Err("the failover writer panicked".into());
    }
    result
}

/// Waits for a whole cluster and a writer that commits, stops the leader,
/// measures the gap, restarts the node.
fn one_round(
    cluster: &mut LocalCluster,
    kind: StopKind,
    commits: &Commits,
    stop: &AtomicBool,
) -> Result<Duration, String> {
    let addrs = cluster.addrs();
    let leader = wait_for_leader(
        &addrs,
        Quorum::Whole,
        Instant::now() + WHOLE_DEADLINE,
        stop,
        || cluster.check_running(),
    )?;
    let i = cluster
        .index_of(&leader)
        .ok_or_else(|| format!("the leader {leader} is not one of the local nodes"))?;
    // The writer must be committing at this leader before it is stopped,
    // or the gap would include the writer finding it.
    let settled = Instant::now();
    first_commit_sent_after(settled, commits, stop)?;
    let stopped_at = match kind {
        StopKind::Kill => cluster.kill(i)?,
        StopKind::Interrupt => cluster.interrupt(i)?,
    };
    let committed = first_commit_sent_after(stopped_at, commits, stop)?;
    if kind == StopKind::Interrupt {
        if let Err(e) = cluster.wait_stopped(i) {
            eprintln!("warning: {e}");
        }
    }
    cluster.spawn(i)?;
    Ok(committed.saturating_duration_since(stopped_at))
}

/// The commit instant of the first write sent at or after `after`.
fn first_commit_sent_after(
    after: Instant,
    commits: &Commits,
    stop: &AtomicBool,
) -> Result<Instant, String> {
    let deadline = after + GAP_DEADLINE;
    loop {
        {
            let recent = commits
                .lock()
                .map_err(|_| "the failover writer panicked".to_string())?;
            if let Some(&(_, done)) = recent.iter().find(|(sent, _)| *sent >= after) {
                return Ok(done);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no write committed within {GAP_DEADLINE:?} (the cluster did not recover)"
            ));
        }
        std::thread::sleep(GAP_POLL);
    }
}

/// The failover writer: `set` after `set` to whoever leads, remembering
/// when each committed write was sent and answered.
fn write_continuously(
    addrs: Vec<String>,
    leader: String,
    value_size: usize,
    commits: &Commits,
    stop: &AtomicBool,
) {
    let set = ClientCommand::Set {
        value: value_for(0, value_size),
    };
    let mut session = Session::new(addrs, leader, FAILOVER_IO_TIMEOUT);
    while !stop.load(Ordering::Relaxed) {
        // The send time of this attempt, not of the first try of the
        // write: a retry after the stop is a write sent after the stop.
        let sent = Instant::now();
        match session.call(&set) {
            Outcome::Done => {
                let done = Instant::now();
                let Ok(mut recent) = commits.lock() else {
                    return;
                };
                if recent.len() == RECENT_COMMITS {
                    recent.pop_front();
                }
                recent.push_back((sent, done));
            }
            Outcome::Redirected => {}
            Outcome::NoLeader | Outcome::Refused(_) | Outcome::Failed(_) => {
                std::thread::sleep(RETRY_PAUSE)
            }
        }
    }
}
