//! The cluster under test: either nodes this process starts (the real
//! `raft` binary, as child processes on free loopback ports), or an existing
//! cluster given by address.
//!
//! Local nodes run with their default timeouts and fsync on, each with its
//! own `--data-dir` in a temporary directory. Everything started here is
//! stopped here: children are killed when the [`LocalCluster`] is dropped
//! (also on an error or a panic), and the directory is removed after them.
//! A `kill -9` of the bench itself is the one case that leaves them behind.

use raft::message::{ClientCommand, ClientResult, Status};
use raft::metrics::Metrics;
use raft::{client, config};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one `status` question may take before that node counts as not
/// answering.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Pause between two rounds of `status` polls while waiting for the cluster.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long a node stopped with Ctrl+C may take to hand over and exit before
/// it is killed. Its hand-over is bounded by the longest election timeout
/// (300 ms by default), so this is generous.
pub const GRACEFUL_EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// How much of a node's stderr an error message quotes.
const STDERR_TAIL_BYTES: u64 = 2048;

/// A directory under the system's temporary directory, removed on drop.
///
/// `tempfile` is only a dev-dependency, so this is the small part of it the
/// bench needs: a name no other run can have (process id and a nanosecond
/// clock, created with `create_dir`, which fails rather than share).
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn create() -> Result<WorkDir, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("raft-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// One node this process started.
#[derive(Debug)]
struct LocalNode {
    port: u16,
    addr: String,
    data_dir: PathBuf,
    /// Where the node's stderr goes, quoted when it fails.
    stderr_path: PathBuf,
    /// `None` while stopped.
    child: Option<Child>,
}

/// Nodes started as child processes of the bench.
#[derive(Debug)]
pub struct LocalCluster {
    exe: PathBuf,
    nodes: Vec<LocalNode>,
    /// Declared last: dropped after the children are killed (see `Drop`).
    dir: WorkDir,
}

impl LocalCluster {
    /// Starts `n` nodes of this very binary, in `dir`.
    pub fn start(n: usize, dir: WorkDir) -> Result<LocalCluster, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the raft binary to start nodes: {e}"))?;
        let ports = free_ports(n)?;
        let nodes = ports
            .iter()
            .map(|&port| LocalNode {
                port,
                addr: format!("127.0.0.1:{port}"),
                data_dir: dir.path().join(format!("node-{port}")),
                stderr_path: dir.path().join(format!("node-{port}.stderr")),
                child: None,
            })
            .collect();
        let mut cluster = LocalCluster { exe, nodes, dir };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// The nodes' addresses, in start order.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The directory the nodes keep their data in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Which node listens on `addr`.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    /// Starts node `i` (again), with the same port and data directory.
    pub fn spawn(&mut self, i: usize) -> Result<(), String> {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, n)| n.port.to_string())
            .collect();
        // A cluster of one must say so: an empty list is refused (see
        // `config::NO_PEERS`).
        let peers = if peers.is_empty() {
            config::NO_PEERS.to_string()
        } else {
            peers.join(",")
        };
        let node = &mut self.nodes[i];
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&node.stderr_path)
            .map_err(|e| format!("cannot create {}: {e}", node.stderr_path.display()))?;
        let child = Command::new(&self.exe)
            .arg(node.port.to_string())
            .arg("--peers")
            .arg(peers)
            .arg("--data-dir")
            .arg(&node.data_dir)
            // Quiet nodes whatever the caller's RUST_LOG: at debug level a
            // node logs every message, and the bench would measure that.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            // The nodes print a line per write; the bench does not read them.
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// `kill -9` of node `i`: the process dies at once, without a word to
    /// its peers. Returns the moment the signal had been sent. Waits for the
    /// process to be gone (it cannot refuse).
    pub fn kill(&mut self, i: usize) -> Result<Instant, String> {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.child.take() else {
            return Err(format!("node {} is not running", node.port));
        };
        child
            .kill()
            .map_err(|e| format!("cannot kill node {}: {e}", node.port))?;
        let stopped = Instant::now();
        let _ = child.wait();
        Ok(stopped)
    }

    /// Ctrl+C to node `i` (SIGINT, through the `kill` command, so no libc
    /// binding is needed): a leader hands over before it exits. Returns the
    /// moment `kill` had sent the signal; the node is still running then,
    /// see [`LocalCluster::wait_stopped`].
    pub fn interrupt(&mut self, i: usize) -> Result<Instant, String> {
        let node = &self.nodes[i];
        let Some(child) = &node.child else {
            return Err(format!("node {} is not running", node.port));
        };
        let status = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status()
            .map_err(|e| format!("cannot run `kill -INT` for node {}: {e}", node.port))?;
        let sent = Instant::now();
        if !status.success() {
            return Err(format!("`kill -INT {}` failed: {status}", child.id()));
        }
        Ok(sent)
    }

    /// Waits for node `i` to exit after [`LocalCluster::interrupt`]; kills
    /// it if it takes longer than [`GRACEFUL_EXIT_DEADLINE`] (and says so).
    pub fn wait_stopped(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + GRACEFUL_EXIT_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "node {} did not exit within {GRACEFUL_EXIT_DEADLINE:?} of Ctrl+C; killed it",
                        node.port
                    ));
                }
                Err(e) => return Err(format!("waiting for node {}: {e}", node.port)),
            }
        }
    }

    /// An error if a node that should run has exited, quoting its stderr.
    pub fn check_running(&mut self) -> Result<(), String> {
        for node in &mut self.nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return Err(format!(
                    "node {} exited ({status}); its stderr ends with:\n{}",
                    node.port,
                    tail(&node.stderr_path)
                ));
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `self.dir` is dropped after this, removing the directory.
    }
}

/// `n` distinct loopback ports that were free a moment ago: all bound at
/// once (so distinct), then released for the nodes. Another program could
/// take one in between; the node then fails to start and says so.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free loopback port: {e}"))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| format!("cannot find a free loopback port: {e}"))
        })
        .collect()
}

/// The last [`STDERR_TAIL_BYTES`] of a file, for an error message.
fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(STDERR_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(s) if s.trim().is_empty() => "(nothing)".to_string(),
        Ok(s) => s,
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Asks one node for its status; `None` if it does not answer in time.
pub fn status(addr: &str) -> Option<Status> {
    let creds = super::credentials().ok()?;
    match client::request(
        creds,
        std::slice::from_ref(&addr.to_string()),
        ClientCommand::Status,
        STATUS_TIMEOUT,
    ) {
        Ok(ClientResult::Status(s)) => Some(s),
        _ => None,
    }
}

/// Asks one node for its counters; `None` if it does not answer in time.
pub fn metrics(addr: &str) -> Option<Metrics> {
    let creds = super::credentials().ok()?;
    match client::request(
        creds,
        std::slice::from_ref(&addr.to_string()),
        ClientCommand::Metrics,
        STATUS_TIMEOUT,
    ) {
        Ok(ClientResult::Metrics(m)) => Some(m),
        _ => None,
    }
}

/// Every node's status, in `addrs` order.
pub fn statuses(addrs: &[String]) -> Vec<Option<Status>> {
    // Asked one after the other: at most a few nodes, each answering in
    // well under a millisecond when healthy.
    addrs.iter().map(|a| status(a)).collect()
}

/// What [`wait_for_leader`] requires of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// A leader that a majority of the nodes answering agree on.
    Majority,
    /// Every node answers and agrees on the leader and term, and holds every
    /// entry the leader had committed when the wait began: the cluster is
    /// whole again after a node was restarted.
    Whole,
}

/// Polls `status` until a leader is known, as `quorum` requires; returns the
/// leader's address (the one it answered on). Gives up at `deadline`, when
/// `stop` is set, or when `check` fails (a local node died).
pub fn wait_for_leader(
    addrs: &[String],
    quorum: Quorum,
    deadline: Instant,
    stop: &AtomicBool,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<String, String> {
    let mut catch_up_to: Option<u64> = None;
    let mut last_seen = format!("no node answered at {}", addrs.join(","));
    loop {
        check()?;
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let all = statuses(addrs);
        if let Some((leader_at, leader)) = find_leader(&all) {
            let target = *catch_up_to.get_or_insert(leader.commit_index);
            let agree = all
                .iter()
                .flatten()
                .filter(|s| s.term == leader.term && s.leader.as_ref() == Some(&leader.id))
                .count();
            let ready = match quorum {
                Quorum::Majority => agree > addrs.len() / 2,
                Quorum::Whole => {
                    agree == addrs.len() && all.iter().flatten().all(|s| s.last_log_index >= target)
                }
            };
            if ready {
                return Ok(addrs[leader_at].clone());
            }
            last_seen = format!(
                "{} leads term {}; {agree} of {} nodes agree",
                leader.id,
                leader.term,
                addrs.len()
            );
        } else if all.iter().any(Option::is_some) {
            last_seen = "nodes answer, but none leads".into();
        }
        if Instant::now() >= deadline {
            return Err(format!("the cluster did not settle in time: {last_seen}"));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The node that says it leads, in the highest term if (briefly) two do.
fn find_leader(all: &[Option<Status>]) -> Option<(usize, &Status)> {
    all.iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
        .filter(|(_, s)| s.role == "leader")
        .max_by_key(|(_, s)| s.term)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(5).expect("ports");
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 5);
    }

    #[test]
    fn a_work_dir_is_removed_on_drop() {
        let dir = WorkDir::create().expect("create");
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("f"), b"x").expect("write");
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}
