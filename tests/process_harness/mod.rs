//! A harness for process-level tests: real `raft` processes on loopback
//! ports, driven through their stdin, their port and `raft client`.
//!
//! Rules it keeps:
//! - Every child is owned by a [`Cluster`] that kills it when dropped, so a
//!   failed assertion never leaves nodes running.
//! - Every wait is a poll with a deadline; a failed wait panics with what it
//!   was waiting for, and a panicking test prints every node's stdout and
//!   stderr (with timestamps) from the cluster's `Drop`.
//! - Each node has its own data directory in a [`TempDir`], laid out as in
//!   the three-terminal session: `raft-data/node-PORT`, with the cluster
//!   key the first node creates beside them (`raft-data/cluster.key`), so
//!   every node and every client of a test cluster shares it.
//! - Ports come from below the kernel's ephemeral range, so outgoing
//!   connections (clients, peer writers) never take a port a node is about
//!   to bind, or to bind again after a restart. If another process takes
//!   one anyway, [`Cluster::start`] tries other ports.

#![allow(dead_code)] // not every test binary that includes this uses all of it

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use raft::client;
use raft::message::{ClientCommand, ClientResult, Status};
use raft::metrics::Metrics;
use raft::transport::{ClusterKey, Credentials};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `raft` binary built for these tests.
pub const RAFT: &str = env!("CARGO_BIN_EXE_raft");

/// Between two looks at something we are waiting for.
pub const POLL: Duration = Duration::from_millis(20);

/// How long one `status` poll waits for a node (a stopped node never
/// answers, so this must stay short).
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a node may take to bind its port and recover its data.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ ports

/// Hands out blocks of consecutive ports from below the ephemeral range.
/// The start is a hash of the process id, so two test processes running at
/// once (two worktrees, say) start far apart; within one process the
/// cursor only moves forward, so parallel tests never share a port.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// The lowest port handed out.
const LOW_PORT: u32 = 10_000;

/// The lowest port the kernel may pick for an outgoing connection.
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&low: &u32| low > LOW_PORT + 2_000)
        .unwrap_or(32_768)
}

/// `n` consecutive loopback ports that are free right now: each is bound
/// and released. Binding port 0 would be simpler but hands out ephemeral
/// ports, which outgoing connections of other tests may take at any time.
/// Another process may still bind one before our node does; see
/// [`Cluster::start`], which then starts over on other ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    let n32 = n as u32;
    let high = ephemeral_low();
    let span = high - LOW_PORT - n32;
    let hash = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    let _ = NEXT_PORT.compare_exchange(
        0,
        LOW_PORT + (hash % u64::from(span)) as u32,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    // Where a block starts, given the cursor: wrap around at the top (a
    // port still in use there is caught by the bind below).
    let block_start = |cursor: u32| {
        if cursor + n32 >= high {
            LOW_PORT
        } else {
            cursor
        }
    };
    for _ in 0..1000 {
        let cursor = NEXT_PORT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                Some(block_start(c) + n32)
            })
            .expect("the update always succeeds");
        let base = block_start(cursor);
        let ports: Vec<u16> = (base..base + n32).map(|p| p as u16).collect();
        let listeners: Vec<_> = ports
            .iter()
            .map_while(|p| TcpListener::bind(("127.0.0.1", *p)).ok())
            .collect();
        if listeners.len() == n {
            return ports;
        }
    }
    panic!("could not find {n} free consecutive ports");
}

// --------------------------------------------------- one-shot invocations

/// Runs `raft ARGS` to completion, killing it (and failing) if it is still
/// running after `limit`: a command that should exit must not hang a test.
pub fn run_raft(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(RAFT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the raft binary");
    let out = read_all_on_thread(child.stdout.take().expect("piped stdout"));
    let err = read_all_on_thread(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for raft") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`raft {}` was still running after {limit:?}; stdout: {:?}, stderr: {:?}",
                    args.join(" "),
                    text(&out.recv().unwrap_or_default()),
                    text(&err.recv().unwrap_or_default())
                );
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    Output {
        status,
        stdout: out.recv().unwrap_or_default(),
        stderr: err.recv().unwrap_or_default(),
    }
}

fn read_all_on_thread(mut r: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `raft client --cluster-key KEY --timeout SECS ADDRS WORDS...`, bounded
/// by the client's own timeout plus a margin.
pub fn raft_client(key: &Path, addrs: &str, timeout: Duration, words: &[&str]) -> Output {
    let secs = format!("{}", timeout.as_secs_f64());
    let key = key.display().to_string();
    let mut args = vec!["client", "--cluster-key", &key, "--timeout", &secs, addrs];
    args.extend_from_slice(words);
    run_raft(&args, timeout + Duration::from_secs(10))
}

/// Sends one signal with the `kill` command (libc is not a dependency).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

// ----------------------------------------------------------------- nodes

/// One line a node printed, and when the harness read it.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// A running `raft` process. Dropping it kills it (SIGKILL) and reaps it.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<(Stream, Line)>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A member of a test cluster, across restarts.
pub struct Node {
    pub port: u16,
    /// The node's id: its port, since it listens on 127.0.0.1.
    pub id: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    proc: Option<Proc>,
    /// Every stdout line of every incarnation, in order.
    out: Vec<Line>,
    /// Where the current incarnation's lines start in `out`.
    incarnation_start: usize,
    err: Vec<Line>,
    /// How the last incarnation ended, once it has.
    exit: Option<ExitStatus>,
}

impl Node {
    /// A node on `port` with `options`, a data directory of its own under
    /// `root`, and then the cluster's `common` options; not started.
    fn new(port: u16, options: &[&str], root: &Path, common: &[String]) -> Node {
        let data_dir = root.join(DATA_ROOT).join(format!("node-{port}"));
        let mut args = vec![port.to_string()];
        args.extend(options.iter().map(|s| s.to_string()));
        args.push("--data-dir".into());
        args.push(data_dir.display().to_string());
        args.extend(common.iter().cloned());
        Node {
            port,
            id: port.to_string(),
            data_dir,
            args,
            proc: None,
            out: Vec::new(),
            incarnation_start: 0,
            err: Vec::new(),
            exit: None,
        }
    }

    /// The command line it is started with (after `raft`).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some() && self.exit.is_none()
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("node is running").child.id()
    }

    /// Moves what the reader threads have read into `out` and `err`.
    fn pump(&mut self) {
        let Some(proc) = &self.proc else { return };
        for (stream, line) in proc.lines.try_iter() {
            match stream {
                Stream::Out => self.out.push(line),
                Stream::Err => self.err.push(line),
            }
        }
    }

    fn start(&mut self, cwd: &Path) {
        assert!(self.proc.is_none(), "node {} is already running", self.id);
        let mut child = Command::new(RAFT)
            .args(&self.args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a raft node");
        let (tx, rx) = unbounded();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, reader) in [
            (Stream::Out, Box::new(stdout) as Box<dyn Read + Send>),
            (Stream::Err, Box::new(stderr)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(text) = line else { return };
                    let line = Line {
                        at: Instant::now(),
                        text,
                    };
                    if tx.send((stream, line)).is_err() {
                        return;
                    }
                }
            });
        }
        if !self.out.is_empty() {
            self.out.push(Line {
                at: Instant::now(),
                text: "=== (test harness) node restarted ===".into(),
            });
        }
        self.incarnation_start = self.out.len();
        self.exit = None;
        self.proc = Some(Proc {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        });
    }
}

/// Where the nodes' data directories are, under the cluster's directory
/// (as `raft-data` is under the directory a person starts nodes from).
pub const DATA_ROOT: &str = "raft-data";

/// The cluster key's file, in [`DATA_ROOT`].
pub const KEY_FILE: &str = "cluster.key";

/// The option that turns authentication off (test builds only).
pub const INSECURE: &str = "--insecure-no-auth";

/// A cluster of `raft` processes on loopback. Dropping it kills them all;
/// if the test is failing, it first prints everything they said.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub started: Instant,
    dir: TempDir,
    /// Options every node gets, after its own (`--snapshot-entries 20`,
    /// say), nodes added later included.
    common: Vec<String>,
    /// The cluster key, once the first node has created it.
    creds: std::sync::OnceLock<Credentials>,
}

impl Cluster {
    /// Starts `n` nodes, each told about all the others (`--peers none`
    /// for one node), with the default timeouts.
    ///
    /// Returns once every node has printed its recovery line (so it has its
    /// port and its data directory). If another process took one of the
    /// ports between [`free_ports`] and the node's bind, starts over on
    /// other ports: that is the machine's doing, not the node's.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// [`Cluster::start`], giving every node the options in `common` too
    /// (nodes added later with [`Cluster::start_new_node`] included).
    pub fn start_with(n: usize, common: &[&str]) -> Cluster {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut cluster = Cluster::new_with(n, common);
            for i in 0..n {
                cluster.nodes[i].start(cluster.dir.path());
            }
            match (0..n).try_for_each(|i| cluster.wait_started(i, START_TIMEOUT)) {
                Ok(()) => return cluster,
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("(test harness) {why}; starting the cluster again on other ports");
                }
                Err(why) => panic!("{why} ({ATTEMPTS} times)"),
            }
        }
        unreachable!()
    }

    /// Waits for node `i` to print its recovery line. `Err` if it exited
    /// because its port was in use; any other early exit fails the test.
    fn wait_started(&mut self, i: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let node = &mut self.nodes[i];
        let prefix = format!("Node {} recovered term ", node.id);
        loop {
            node.pump();
            if node.out[node.incarnation_start..]
                .iter()
                .any(|l| l.text.starts_with(&prefix))
            {
                return Ok(());
            }
            let proc = node.proc.as_mut().expect("started");
            if let Some(status) = proc.child.try_wait().expect("try_wait") {
                // Let the reader threads deliver the last lines.
                while let Ok((stream, line)) = proc.lines.recv_timeout(Duration::from_secs(1)) {
                    match stream {
                        Stream::Out => node.out.push(line),
                        Stream::Err => node.err.push(line),
                    }
                }
                node.exit = Some(status);
                if node
                    .err
                    .iter()
                    .any(|l| l.text.contains("address already in use"))
                {
                    return Err(format!(
                        "port {} was taken by another process before node {} could bind it",
                        node.port, node.id
                    ));
                }
                panic!("node {} exited on start: {status}", node.id);
            }
            if Instant::now() >= deadline {
                panic!("node {} did not start within {timeout:?}", node.id);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The cluster, configured but not started.
    pub fn new(n: usize) -> Cluster {
        Cluster::new_with(n, &[])
    }

    /// [`Cluster::new`], with options every node gets.
    pub fn new_with(n: usize, common: &[&str]) -> Cluster {
        let common: Vec<String> = common.iter().map(|s| s.to_string()).collect();
        let dir = tempfile::Builder::new()
            .prefix("raft-cluster-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(n);
        let nodes = ports
            .iter()
            .map(|&port| {
                let peers: Vec<String> = ports
                    .iter()
                    .filter(|&&p| p != port)
                    .map(u16::to_string)
                    .collect();
                let peers = if peers.is_empty() {
                    "none".to_string()
                } else {
                    peers.join(",")
                };
                Node::new(port, &["--peers", &peers], dir.path(), &common)
            })
            .collect();
        Cluster {
            nodes,
            started: Instant::now(),
            dir,
            common,
            creds: std::sync::OnceLock::new(),
        }
    }

    /// Configures one more node, on a port of its own, with `options`
    /// (like `--join 8000,8001,8002`), its own data directory and the
    /// cluster's common options; it is not started. Returns its index.
    pub fn add_node(&mut self, options: &[&str]) -> usize {
        let port = free_ports(1)[0];
        let node = Node::new(port, options, self.dir.path(), &self.common);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// [`Cluster::add_node`], and starts it. If another process took its
    /// port first, tries another port (as [`Cluster::start`] does).
    pub fn start_new_node(&mut self, options: &[&str]) -> usize {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let i = self.add_node(options);
            let dir = self.dir.path().to_path_buf();
            self.nodes[i].start(&dir);
            match self.wait_started(i, START_TIMEOUT) {
                Ok(()) => return i,
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("(test harness) {why}; starting the node on another port");
                    self.nodes.pop();
                }
                Err(why) => panic!("{why} ({ATTEMPTS} times)"),
            }
        }
        unreachable!()
    }

    /// Starts node `i` (again, after a kill: same port, same data dir).
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(proc) = &mut node.proc {
            let exited = node.exit.is_some() || proc.child.try_wait().ok().flatten().is_some();
            assert!(exited, "node {} is still running", node.id);
        }
        self.nodes[i].pump();
        self.nodes[i].proc = None;
        let dir = self.dir.path().to_path_buf();
        self.nodes[i].start(&dir);
        if let Err(why) = self.wait_started(i, START_TIMEOUT) {
            panic!("{why} while it was down");
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The directory the nodes are started from (`raft-data` is in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster key file the nodes share.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join(DATA_ROOT).join(KEY_FILE)
    }

    /// What the cluster's clients authenticate with: its key (which the
    /// first node created), or nothing for a cluster started with
    /// [`INSECURE`].
    pub fn credentials(&self) -> Credentials {
        if let Some(creds) = self.creds.get() {
            return creds.clone();
        }
        let creds = if self.common.iter().any(|o| o == INSECURE) {
            Credentials::insecure()
        } else {
            match ClusterKey::load(&self.key_path()) {
                Ok(key) => Credentials::new(key),
                // Not created yet: a key of no cluster, refused everywhere.
                Err(_) => return Credentials::new(ClusterKey::generate().expect("random key")),
            }
        };
        self.creds.get_or_init(|| creds).clone()
    }

    /// `raft client` with this cluster's key.
    pub fn client(&self, addrs: &str, timeout: Duration, words: &[&str]) -> Output {
        raft_client(&self.key_path(), addrs, timeout, words)
    }

    /// Indexes of the nodes other than `i`.
    pub fn others(&self, i: usize) -> Vec<usize> {
        (0..self.len()).filter(|&j| j != i).collect()
    }

    pub fn all(&self) -> Vec<usize> {
        (0..self.len()).collect()
    }

    /// `PORT,PORT,...` for `raft client`.
    pub fn addrs(&self, which: &[usize]) -> String {
        let ports: Vec<String> = which.iter().map(|&i| self.nodes[i].id.clone()).collect();
        ports.join(",")
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    // ----- output

    /// Number of stdout lines node `i` has printed so far: pass it to
    /// [`Cluster::wait_for_line_since`] to look only at what comes after.
    pub fn mark(&mut self, i: usize) -> usize {
        self.nodes[i].pump();
        self.nodes[i].out.len()
    }

    /// Waits for a stdout line of node `i`'s current incarnation that
    /// matches `pred`.
    pub fn wait_for_line(
        &mut self,
        i: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Line {
        let since = self.nodes[i].incarnation_start;
        self.wait_for_line_since(i, since, pred, timeout)
    }

    /// Waits for a stdout line of node `i`, at position `since` or later,
    /// that matches `pred`. Fails the test at the deadline.
    pub fn wait_for_line_since(
        &mut self,
        i: usize,
        since: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Line {
        let deadline = Instant::now() + timeout;
        let mut checked = since;
        loop {
            let node = &mut self.nodes[i];
            node.pump();
            if let Some(line) = node.out[checked.min(node.out.len())..]
                .iter()
                .find(|l| pred(&l.text))
            {
                return line.clone();
            }
            checked = checked.max(node.out.len());
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "node {} printed no matching line within {timeout:?} (looking from line {since})",
                    node.id
                );
            }
            // Block on the channel rather than spinning.
            let Some(proc) = &node.proc else {
                panic!("node {} is not running", node.id)
            };
            match proc
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok((Stream::Out, line)) => node.out.push(line),
                Ok((Stream::Err, line)) => node.err.push(line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // The node's output has ended; nothing more will come.
                    node.pump();
                    if !node.out[checked.min(node.out.len())..]
                        .iter()
                        .any(|l| pred(&l.text))
                    {
                        let proc = node.proc.as_mut().expect("started");
                        let status = proc.child.wait().ok();
                        node.exit = status;
                        panic!(
                            "node {} closed its output without printing a matching line (it exited: {status:?})",
                            node.id
                        );
                    }
                }
            }
        }
    }

    /// Waits for a stdout line matching `pred` from any of the `among`
    /// nodes, at position `since[k]` or later for `among[k]` (see
    /// [`Cluster::mark`]); for a line that whichever node leads prints.
    /// Returns the node's index and the line. Fails the test at the deadline.
    pub fn wait_for_line_on_any(
        &mut self,
        among: &[usize],
        since: &[usize],
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> (usize, Line) {
        assert_eq!(among.len(), since.len(), "one starting line per node");
        let deadline = Instant::now() + timeout;
        loop {
            for (&i, &from) in among.iter().zip(since) {
                let node = &mut self.nodes[i];
                node.pump();
                let from = from.min(node.out.len());
                if let Some(line) = node.out[from..].iter().find(|l| pred(&l.text)) {
                    return (i, line.clone());
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "none of nodes {} printed a matching line within {timeout:?}",
                    self.addrs(among)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The stdout lines of node `i` (every incarnation) so far.
    pub fn lines(&mut self, i: usize) -> Vec<String> {
        self.nodes[i].pump();
        self.nodes[i].out.iter().map(|l| l.text.clone()).collect()
    }

    /// The stderr lines (the log) of node `i` (every incarnation) so far.
    pub fn err_lines(&mut self, i: usize) -> Vec<String> {
        self.nodes[i].pump();
        self.nodes[i].err.iter().map(|l| l.text.clone()).collect()
    }

    /// Waits for a stderr line of node `i` that matches `pred`; fails the
    /// test at the deadline.
    pub fn wait_for_err_line(
        &mut self,
        i: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.err_lines(i).into_iter().find(|l| pred(l)) {
                return line;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {} logged no matching line within {timeout:?}",
                    self.nodes[i].id
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The stdout lines of node `i` (every incarnation) so far, with the
    /// moment the harness read each.
    pub fn timed_lines(&mut self, i: usize) -> Vec<Line> {
        self.nodes[i].pump();
        self.nodes[i].out.clone()
    }

    /// Everything every node printed, for a failure message.
    pub fn dump(&mut self) -> String {
        let mut s = String::new();
        for node in &mut self.nodes {
            node.pump();
            let state = match (&node.proc, node.exit) {
                (None, _) => "not running".to_string(),
                (Some(_), Some(status)) => format!("exited: {status}"),
                (Some(_), None) => "running".to_string(),
            };
            let _ = writeln!(
                s,
                "----- node {} ({state}): raft {} -----",
                node.id,
                node.args.join(" ")
            );
            for (name, lines) in [("stdout", &node.out), ("stderr", &node.err)] {
                let _ = writeln!(s, "  [{name}]");
                for line in lines {
                    let at = line.at.saturating_duration_since(self.started);
                    let _ = writeln!(s, "  {:>8.3}s  {}", at.as_secs_f64(), line.text);
                }
            }
        }
        s
    }

    // ----- control

    /// Writes one line to node `i`'s stdin, as a person at its prompt.
    pub fn type_line(&mut self, i: usize, line: &str) {
        let node = &mut self.nodes[i];
        let stdin = node
            .proc
            .as_mut()
            .and_then(|p| p.stdin.as_mut())
            .expect("node has a stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot write to node {}'s stdin: {e}", node.id));
    }

    /// Closes node `i`'s stdin, as Ctrl+D at its prompt would.
    pub fn close_stdin(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let proc = node.proc.as_mut().expect("node is running");
        assert!(
            proc.stdin.take().is_some(),
            "node {}'s stdin is already closed",
            node.id
        );
    }

    /// kill -9 of several nodes at once (all signalled before any is
    /// reaped).
    pub fn kill9_all(&mut self, which: &[usize]) {
        for &i in which {
            let proc = self.nodes[i].proc.as_mut().expect("node is running");
            proc.child.kill().expect("kill -9");
        }
        for &i in which {
            let node = &mut self.nodes[i];
            let proc = node.proc.as_mut().expect("node is running");
            node.exit = Some(proc.child.wait().expect("reap"));
        }
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let proc = node.proc.as_mut().expect("node is running");
        proc.child.kill().expect("kill -9");
        node.exit = Some(proc.child.wait().expect("reap"));
    }

    pub fn signal(&mut self, i: usize, name: &str) {
        signal(self.nodes[i].pid(), name);
    }

    /// Waits for node `i` to exit on its own; fails at the deadline.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let node = &mut self.nodes[i];
        let proc = node.proc.as_mut().expect("node was started");
        loop {
            if let Some(status) = proc.child.try_wait().expect("try_wait") {
                node.exit = Some(status);
                return status;
            }
            if Instant::now() >= deadline {
                panic!("node {} did not exit within {timeout:?}", node.id);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // ----- asking the cluster

    /// Node `i`'s `status`, or `None` if it does not answer quickly. Uses
    /// the library's client (what `raft client status` runs) in-process, so
    /// that polling does not spawn a process every few milliseconds.
    pub fn status(&self, i: usize) -> Option<Status> {
        match client::request(
            &self.credentials(),
            &[self.nodes[i].addr()],
            ClientCommand::Status,
            STATUS_TIMEOUT,
        ) {
            Ok(ClientResult::Status(status)) => Some(status),
            _ => None,
        }
    }

    /// Node `i`'s counters (`metrics`), or `None` if it does not answer.
    pub fn metrics(&self, i: usize) -> Option<Metrics> {
        match client::request(
            &self.credentials(),
            &[self.nodes[i].addr()],
            ClientCommand::Metrics,
            STATUS_TIMEOUT,
        ) {
            Ok(ClientResult::Metrics(metrics)) => Some(metrics),
            _ => None,
        }
    }

    /// Polls the `among` nodes until they all answer and agree on one
    /// leader in one term, and that leader (one of `among`) says it is the
    /// leader. Returns its index.
    pub fn wait_for_leader(&mut self, among: &[usize], timeout: Duration) -> usize {
        self.wait_for_agreement(among, timeout).0
    }

    /// [`Cluster::wait_for_leader`], also returning the statuses (in the
    /// order of `among`) that agreed.
    pub fn wait_for_agreement(
        &mut self,
        among: &[usize],
        timeout: Duration,
    ) -> (usize, Vec<Status>) {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<Option<Status>> = among.iter().map(|&i| self.status(i)).collect();
            if let Some(leader) = self.agreed_leader(among, &statuses) {
                return (leader, statuses.into_iter().flatten().collect());
            }
            if Instant::now() >= deadline {
                panic!(
                    "nodes {} did not agree on a leader within {timeout:?}; last statuses: {statuses:#?}",
                    self.addrs(among)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn agreed_leader(&self, among: &[usize], statuses: &[Option<Status>]) -> Option<usize> {
        let first = statuses.first()?.as_ref()?;
        let leader_id = first.leader.as_ref()?;
        let same = statuses.iter().all(|s| {
            s.as_ref()
                .is_some_and(|s| s.term == first.term && s.leader.as_ref() == Some(leader_id))
        });
        let leader = self.index_of(leader_id.as_str())?;
        let position = among.iter().position(|&i| i == leader)?;
        let says_leader = statuses[position].as_ref()?.role == "leader";
        (same && says_leader).then_some(leader)
    }

    /// Polls until `check` holds for node `i`'s status.
    pub fn wait_for_status(
        &mut self,
        i: usize,
        what: &str,
        check: impl Fn(&Status) -> bool,
        timeout: Duration,
    ) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(i);
            if let Some(s) = status.as_ref().filter(|s| check(s)) {
                return s.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {}: {what}: not within {timeout:?}; last status: {status:#?}",
                    self.nodes[i].id
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// `raft client --timeout T ADDRS(among) set VALUE`, once: it must
    /// succeed. Returns the index it committed at.
    pub fn set_once(&mut self, among: &[usize], value: &str, timeout: Duration) -> u64 {
        let out = self.client(&self.addrs(among), timeout, &["set", value]);
        committed_index(&out).unwrap_or_else(|| {
            panic!(
                "set {value:?} via {} failed: {}; stdout {:?}, stderr {:?}",
                self.addrs(among),
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            )
        })
    }

    /// Sets VALUE through `raft client`, as a script would: when an attempt
    /// fails because leadership changed under it (which a loaded machine
    /// can cause at any moment), tries again until `timeout` has passed.
    /// Returns the index of the attempt that committed. For tests where a
    /// write must succeed but a leader change is not what they check.
    pub fn set(&mut self, among: &[usize], value: &str, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = self.client(
                &self.addrs(among),
                left.max(Duration::from_millis(100)),
                &["set", value],
            );
            if let Some(index) = committed_index(&out) {
                return index;
            }
            let err = text(&out.stderr);
            if Instant::now() >= deadline {
                panic!(
                    "set {value:?} via {} failed until the deadline ({timeout:?}): {}; stdout {:?}, stderr {err:?}",
                    self.addrs(among),
                    out.status,
                    text(&out.stdout),
                );
            }
            eprintln!(
                "(test harness) set {value:?} failed, retrying: {}",
                err.trim_end()
            );
        }
    }
}

impl Cluster {
    /// [`Cluster::set`] without a process per write: the library's client
    /// (what `raft client set` runs), in-process, retried until `timeout`
    /// when leadership changes under it. For tests that write many values.
    pub fn write(&self, among: &[usize], value: &str, timeout: Duration) -> u64 {
        let addrs: Vec<String> = among.iter().map(|&i| self.nodes[i].addr()).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let command = ClientCommand::Set {
                value: value.to_string(),
            };
            let timeout = left.max(Duration::from_millis(100));
            let outcome = client::request(&self.credentials(), &addrs, command, timeout);
            match outcome {
                Ok(ClientResult::Written { index }) => return index,
                other if Instant::now() >= deadline => panic!(
                    "set {value:?} via {} failed until the deadline ({timeout:?}): {other:?}",
                    self.addrs(among)
                ),
                other => eprintln!("(test harness) set {value:?} failed, retrying: {other:?}"),
            }
        }
    }
}

/// The index in `committed at index N`, if the client succeeded.
pub fn committed_index(out: &Output) -> Option<u64> {
    if !out.status.success() {
        return None;
    }
    text(&out.stdout)
        .trim()
        .strip_prefix("committed at index ")?
        .parse()
        .ok()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill first, so the reader threads see the end of the output and
        // the dump has everything.
        for node in &mut self.nodes {
            if let Some(proc) = &mut node.proc {
                if node.exit.is_none() {
                    let _ = proc.child.kill();
                    node.exit = proc.child.wait().ok();
                }
            }
        }
        if std::thread::panicking() {
            // Give the reader threads a moment to deliver the last lines.
            let deadline = Instant::now() + Duration::from_millis(500);
            for node in &mut self.nodes {
                if let Some(proc) = &node.proc {
                    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                        match proc.lines.recv_timeout(left) {
                            Ok((Stream::Out, line)) => node.out.push(line),
                            Ok((Stream::Err, line)) => node.err.push(line),
                            Err(_) => break,
                        }
                    }
                }
            }
            eprintln!(
                "\n===== output of the cluster's nodes (seconds since the cluster started) =====\n{}",
                self.dump()
            );
        }
        // Dropping each Proc kills (again, harmlessly) and reaps it.
    }
}
