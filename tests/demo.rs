//! `raft demo` driven through its stdin, as a student would: write, crash
//! the leader, watch a new one, partition it, heal, quit. Every wait polls
//! with a deadline.

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const RAFT: &str = env!("CARGO_BIN_EXE_raft");

/// Long enough for a loaded 2-core machine; waits end as soon as the line
/// shows up.
const LONG: Duration = Duration::from_secs(30);

struct Demo {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line so far, for failure messages.
    seen: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(RAFT)
            .arg("demo")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn raft demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Demo {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the demo");
        stdin.flush().expect("flush");
    }

    /// The next line (after those already read) that matches.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "no line {what} within {LONG:?}; the demo printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for "<id> | Node <id> elected as leader for term <t>" from a
    /// node other than `not`; returns the id.
    fn wait_for_leader(&mut self, not: Option<&str>) -> String {
        let line = self.wait_for("announcing a leader", |l| {
            leader_in(l).is_some_and(|id| Some(id.as_str()) != not)
        });
        leader_in(&line).expect("a leader line")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "8001 | Node 8001 elected as leader for term 2" -> "8001".
fn leader_in(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(" | Node ")?;
    let (id, rest) = rest.split_once(' ')?;
    rest.starts_with("elected as leader for term ")
        .then(|| id.to_string())
}

/// "Started node 8001 (pid 1234)" -> ("8001", 1234).
fn started(line: &str) -> Option<(String, u32)> {
    let rest = line.strip_prefix("Started node ")?;
    let (id, pid) = rest.split_once(" (pid ")?;
    Some((id.to_string(), pid.strip_suffix(')')?.parse().ok()?))
}

fn process_exists(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

/// The state letter of `pid` in /proc (`R`, `S`, `T` stopped, `Z` a
/// zombie: exited, not yet reaped by its new parent), if it exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "1234 (raft) S ...": the state follows the command's ")".
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Whether `pid` still runs: it exists and is not a zombie.
fn process_runs(pid: u32) -> bool {
    process_state(pid).is_some_and(|state| state != 'Z')
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The demo's nodes, killed (kill -9) when dropped if they still run, so
/// that a failing test leaves none behind.
struct Orphans(Vec<(String, u32)>);

impl Drop for Orphans {
    fn drop(&mut self) {
        for (_, pid) in &self.0 {
            if process_runs(*pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

#[test]
fn demo_survives_a_crash_and_a_partition_and_cleans_up() {
    let mut demo = Demo::start(&["--first-port", "0"]);
    let intro = demo.wait_for("naming the data directory", |l| {
        l.starts_with("Starting 3 nodes")
    });
    let dir = intro
        .split_once("; data in ")
        .and_then(|(_, rest)| rest.split_once(" (removed at exit)"))
        .map(|(dir, _)| PathBuf::from(dir))
        .unwrap_or_else(|| panic!("no data directory in {intro:?}"));
    assert!(dir.is_dir(), "{} does not exist", dir.display());
    let mut pids = Vec::new();
    for _ in 0..3 {
        let line = demo.wait_for("starting a node", |l| started(l).is_some());
        pids.push(started(&line).expect("started line"));
    }

    let first = demo.wait_for_leader(None);
    demo.type_line("set hello demo");
    demo.wait_for("committing the set", |l| {
        l.starts_with("Committed at index")
    });

    // Crash the leader: another node takes over, and the value survives.
    demo.type_line(&format!("kill {first}"));
    demo.wait_for("confirming the kill", |l| {
        l == format!("Killed node {first} (kill -9)")
    });
    let second = demo.wait_for_leader(Some(&first));
    demo.type_line("get");
    demo.wait_for("with the value", |l| l == "Value: hello demo");

    // Bad input: one clear line each, and the demo goes on.
    demo.type_line(&format!("kill {first}"));
    demo.wait_for("refusing to kill a dead node", |l| {
        l == format!("Node {first} is not running; start it with start {first}")
    });
    demo.type_line("kill 1");
    demo.wait_for("naming the real ids", |l| {
        l.starts_with("There is no node 1; the nodes are ")
    });
    demo.type_line("heal");
    demo.wait_for("saying nothing is cut", |l| {
        l == "No node is partitioned; nothing to heal"
    });
    demo.type_line("partition");
    demo.wait_for("with the usage", |l| {
        l == "usage: partition <id>, like partition 8001"
    });

    demo.type_line(&format!("start {first}"));
    let line = demo.wait_for("restarting the node", |l| {
        started(l).is_some_and(|(id, _)| id == first)
    });
    pids.push(started(&line).expect("started line"));

    // Cut the leader off: the others elect a new one.
    demo.type_line(&format!("partition {second}"));
    demo.wait_for("confirming the partition", |l| {
        l.starts_with(&format!(
            "{second} | Node {second} partitioned from every peer"
        ))
    });
    let third = demo.wait_for_leader(Some(&second));
    demo.type_line("heal");
    demo.wait_for("confirming the heal", |l| {
        l.starts_with(&format!("{second} | Node {second} healed"))
    });
    demo.wait_for("the healed node following the new leader", |l| {
        l.starts_with(&format!(
            "{second} | Node {second} following leader {third}"
        ))
    });

    // A follower paused and resumed, one stopped as Ctrl+C would, the
    // clocks slowed and sped up again: each says what it did.
    let follower = [&first, &second]
        .into_iter()
        .find(|id| **id != third)
        .expect("a follower")
        .clone();
    demo.type_line(&format!("pause {follower}"));
    demo.wait_for("confirming the pause", |l| {
        l.starts_with(&format!("Paused node {follower}"))
    });
    demo.type_line(&format!("pause {follower}"));
    demo.wait_for("refusing a second pause", |l| {
        l == format!("Node {follower} is already paused")
    });
    demo.type_line(&format!("resume {follower}"));
    demo.wait_for("confirming the resume", |l| {
        l == format!("Resumed node {follower}")
    });
    demo.type_line("slow");
    demo.wait_for("the leader's clock slowed", |l| {
        l == format!(
            "{third} | Node {third} clock now runs at 1/20 speed: election timeout 3000-6000 ms"
        )
    });
    demo.type_line("fast");
    demo.wait_for("the leader's clock back to real time", |l| {
        l == format!(
            "{third} | Node {third} clock now runs at real time: election timeout 150-300 ms"
        )
    });
    demo.type_line(&format!("stop {follower}"));
    demo.wait_for("the stopped node gone", |l| {
        l.starts_with(&format!("Node {follower} stopped ("))
    });

    demo.type_line("quit");
    demo.wait_for("removing the data", |l| {
        l == format!("Every node stopped; removed {}", dir.display())
    });
    let deadline = Instant::now() + LONG;
    while demo.child.try_wait().expect("try_wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the demo did not exit after quit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.exists(), "{} is still there", dir.display());
    for (id, pid) in pids {
        assert!(
            !process_exists(pid),
            "node {id} (pid {pid}) is still running"
        );
    }
}

/// `kill -9` of the demo itself (or a crash) stops its nodes: each notices
/// its stdin closing and stops as on Ctrl+C, so their ports are free for
/// the next demo.
#[test]
fn nodes_stop_when_the_demo_is_killed() {
    let scratch = tempfile::tempdir().expect("scratch directory");
    let data = scratch.path().join("demo-data");
    let data = data.to_str().expect("a UTF-8 path");
    let mut demo = Demo::start(&["--first-port", "0", "--data-dir", data]);
    let mut nodes = Orphans(Vec::new());
    for _ in 0..3 {
        let line = demo.wait_for("starting a node", |l| started(l).is_some());
        nodes.0.push(started(&line).expect("started line"));
    }
    demo.wait_for_leader(None);

    demo.child.kill().expect("kill -9 the demo");
    demo.child.wait().expect("reap the demo");

    let deadline = Instant::now() + LONG;
    loop {
        let left: Vec<&(String, u32)> = nodes
            .0
            .iter()
            .filter(|(id, pid)| process_runs(*pid) || !port_is_free(id.parse().expect("a port")))
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let states: Vec<String> = left
                .iter()
                .map(|(id, pid)| {
                    let free = port_is_free(id.parse().expect("a port"));
                    format!(
                        "node {id} (pid {pid}): state {:?}, port {}",
                        process_state(*pid),
                        if free { "free" } else { "in use" }
                    )
                })
                .collect();
            panic!(
                "{LONG:?} after the demo was killed:\n{}\nthe demo printed:\n{}",
                states.join("\n"),
                demo.seen.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
