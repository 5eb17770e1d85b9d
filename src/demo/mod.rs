//! `raft demo`: a whole cluster in one terminal.
//!
//! It starts N real `raft` processes of this same binary on free loopback
//! ports, each with `--data-dir ROOT/<id>` under one data root (a temporary
//! directory removed at exit, or `--data-dir ROOT`, kept). Their lines are
//! printed interleaved, each prefixed by its node (coloured when stdout is a
//! terminal), and one prompt drives them all:
//!
//! - `set`, `get`, `status` and `log` are client requests, sent with
//!   [`client::request`] like `raft client` does;
//! - `kill` (SIGKILL), `stop` (SIGINT, as Ctrl+C), `pause` / `resume`
//!   (SIGSTOP / SIGCONT) are signals, sent with the `kill` command;
//! - `partition`, `heal`, `slow` and `fast` are typed at the nodes' own
//!   prompts (their stdin), where a person could type them too: see
//!   [`crate::partition`] and the node's `slow`.
//!
//! What each command does:
//!
//! | command | what it does |
//! | --- | --- |
//! | `set <value>`, `get` | Write and read through the leader, as `raft client` does. |
//! | `status` | One row per node: role, term, leader, commit index, last applied, last log index, value; `down`, `paused`, `partitioned` from the demo's own knowledge. |
//! | `log [N]` | The leader's last N log entries (default 10). |
//! | `kill <id>` | `kill -9`: a crash. The node's data stays; `start` brings it back. |
//! | `stop <id>` | Ctrl+C for that node: a leader hands over to an up-to-date follower first. |
//! | `start <id>` | Start a killed or stopped node again, on its data directory. |
//! | `pause <id>`, `resume <id>` | SIGSTOP / SIGCONT: a node that is alive but silent (a long GC pause, a frozen VM), then wakes up believing it still leads. |
//! | `partition <id>`, `heal` | Cut a node off from every other (see below); `heal` ends every cut. |
//! | `slow`, `fast` | Run every node's clock 20 times slower (see "Watching it in slow motion" below), or normally. |
//! | `help`, `quit` | The list; stop every node and clean up (also Ctrl+C, or Ctrl+D). |
//!
//! Each node runs in a process group of its own, so Ctrl+C at the demo
//! reaches only the demo, which then stops every node and cleans up. The
//! nodes are started with `--stop-when-stdin-closes`: if the demo itself is
//! killed (`kill -9`) or crashes, the kernel closes the pipes to the nodes'
//! stdin, and each node stops as on Ctrl+C, freeing its port. Only the data
//! root is left behind then (a temporary one is under the system's temporary
//! directory, named `raft-demo-PID-...`; delete it by hand).
//!
//! Wrong input gets one line (`There is no node 1; the nodes are 8000, 8001,
//! 8002`, `Node 8002 is not running; start it with start 8002`, `No node is
//! partitioned; nothing to heal`) and the demo goes on.
//!
//! # Where the data goes
//!
//! Each node gets `--data-dir ROOT/<id>` under one data root, and runs with
//! ROOT as its working directory; the cluster key is `ROOT/cluster.key`, which
//! each node finds beside its data directory, and which the demo makes before
//! it starts the nodes (it prints how `raft client` can use it). ROOT is a new
//! directory under the system's temporary directory, removed at exit; with
//! `--data-dir DIR` it is DIR, kept: run the demo again with the same
//! `--data-dir` and the cluster recovers where it was. At Ctrl+C the nodes get
//! SIGTERM: their data is already durable.
//!
//! # How a partition is made
//!
//! `partition 8001` types `partition` at node 8001's own prompt (the demo holds
//! each node's stdin); the node's driver then drops every message to and from
//! its peers (see [`crate::partition`]). The connections stay open, so `heal`
//! takes effect at once; client connections still work, which is why `status`
//! can show the cut-off node. The same commands work at any node's prompt, and
//! `partition 8002` there cuts only the link to 8002.
//!
//! # Watching it in slow motion
//!
//! At the paper's timeouts (an election timeout of 150-300 ms, a heartbeat
//! every 50 ms) an election is over before you can read it. `slow` makes each
//! node's clock tick 20 times less often: the protocol counts time in ticks,
//! so every timeout becomes 20 times longer (3-6 s to notice a dead leader, a
//! heartbeat a second), while messages still travel at full speed.
//!
//! ```text
//! > slow
//! Every node's clock now runs 20 times slower: elections take seconds (fast to end it)
//! 8000 | Node 8000 clock now runs at 1/20 speed: election timeout 3000-6000 ms
//! ...
//! > kill 8001
//! Killed node 8001 (kill -9)
//!                        (two to five seconds of silence: the followers wait out their timeouts)
//! 8000 | Node 8000 starting election for term 2
//! 8002 | Node 8002 following leader 8000 in term 2
//! 8000 | Node 8000 elected as leader for term 2
//! > fast
//! ```
//!
//! Try `pause` on the leader while slow: its followers wait, one times out
//! first (randomized timeouts, §5.2), and when you `resume` the old leader it
//! hears of the new term and steps down. `slow` and `fast` also work at a
//! single node's prompt; a node started while the demo is slow is slowed too.

mod command;
mod plumbing;

use command::{parse_demo, DemoCommand, NodeAction, HELP};
use plumbing::{free_ports, list, make_temp_dir, relay};

use crate::client;
use crate::config::Exit;
use crate::console;
use crate::message::{ClientCommand, ClientResult, Status};
use crate::prompt::{log_table, spawn_stdin_reader};
use crate::say;
use crate::transport::auth::{default_key_path, KEY_FILE_NAME};
use crate::transport::{ClusterKey, Credentials};
use crossbeam_channel::{bounded, select, tick};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The fewest and most nodes `--nodes` accepts.
pub const MIN_NODES: usize = 1;
pub const MAX_NODES: usize = 9;

/// How long `set`, `get` and `log` wait for the cluster.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `status` waits for each node (a paused or cut-off one never
/// answers).
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(700);

/// How long `quit` lets the nodes stop by themselves before killing them.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// How often the demo looks for nodes that exited.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// The command line of `raft demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// How many nodes: 3, 5 or 7 make sense (at most 9).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub nodes: usize,

    /// Keep the nodes' data under DIR (one directory per node) instead of a
    /// temporary directory removed at exit.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The nodes' ports are PORT, PORT+1, ... when they are all free; else
    /// (and with 0) any free loopback ports.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_FIRST_PORT)]
    pub first_port: u16,
}

/// The first port tried, as in the three-terminal session.
pub const DEFAULT_FIRST_PORT: u16 = 8000;

/// Runs `raft demo` until `quit`, Ctrl+C or the end of stdin.
pub fn main(args: &DemoArgs) -> ExitCode {
    if !(MIN_NODES..=MAX_NODES).contains(&args.nodes) {
        eprintln!(
            "error: --nodes {} is out of range: give {MIN_NODES} to {MAX_NODES} (3, 5 and 7 are usual)",
            args.nodes
        );
        return ExitCode::from(Exit::Usage);
    }
    let mut demo = match Demo::start(args) {
        Ok(demo) => demo,
        Err(e) => {
            console::complain(&format!("error: {e}"));
            return ExitCode::from(Exit::Failure);
        }
    };
    let result = demo.run();
    demo.shut_down();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            console::complain(&format!("error: {e}"));
            ExitCode::from(Exit::Failure)
        }
    }
}

/// One node of the demo, across restarts.
struct DemoNode {
    id: String,
    port: u16,
    data_dir: PathBuf,
    /// Index into the colours.
    colour: usize,
    process: Option<Running>,
    paused: bool,
    partitioned: bool,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    /// Set when we killed or stopped it, so its exit is not a surprise.
    expected_exit: bool,
}

struct Demo {
    /// The data root, and whether to remove it at exit.
    root: PathBuf,
    /// The cluster key in the data root, shared by the nodes and the
    /// demo's own client requests.
    creds: Credentials,
    temporary: bool,
    nodes: Vec<DemoNode>,
    slow: bool,
    colour: bool,
}

impl Demo {
    fn start(args: &DemoArgs) -> Result<Demo, String> {
        let (root, temporary) = match &args.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create --data-dir {}: {e}", dir.display()))?;
                (dir.clone(), false)
            }
            None => (make_temp_dir()?, true),
        };
        let prepared = free_ports(args.first_port, args.nodes).and_then(|ports| {
            // The key every node finds beside its data directory
            // (ROOT/cluster.key for ROOT/<id>), made before any starts.
            let key_path = root.join(KEY_FILE_NAME);
            debug_assert_eq!(default_key_path(&root.join("node")), key_path);
            let (key, _) = ClusterKey::load_or_create(&key_path)?;
            Ok((ports, Credentials::new(key), key_path))
        });
        let (ports, creds, key_path) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                if temporary {
                    let _ = std::fs::remove_dir_all(&root);
                }
                return Err(e);
            }
        };
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &port)| DemoNode {
                id: port.to_string(),
                port,
                data_dir: root.join(port.to_string()),
                colour: i,
                process: None,
                paused: false,
                partitioned: false,
            })
            .collect();
        let mut demo = Demo {
            root,
            creds,
            temporary,
            nodes,
            slow: false,
            colour: std::io::stdout().is_terminal(),
        };
        let kept = if temporary {
            "removed at exit"
        } else {
            "kept at exit"
        };
        say!(
            "Starting {} nodes ({}); data in {} ({kept}). Type help for the commands.",
            demo.nodes.len(),
            list(demo.nodes.iter().map(|n| n.id.as_str())),
            demo.root.display()
        );
        say!(
            "The cluster key is {}: raft client --cluster-key {} talks to these nodes",
            key_path.display(),
            key_path.display()
        );
        for i in 0..demo.nodes.len() {
            if let Err(e) = demo.spawn(i) {
                demo.shut_down();
                return Err(e);
            }
        }
        Ok(demo)
    }

    /// Starts node `i` (not running) with its stdout and stderr relayed.
    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this program to start nodes: {e}"))?;
        let node = &self.nodes[i];
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.port != node.port)
            .map(|n| n.port.to_string())
            .collect();
        let peers = if peers.is_empty() {
            crate::config::NO_PEERS.to_string()
        } else {
            peers.join(",")
        };
        let mut child = Command::new(exe)
            .arg(node.port.to_string())
            .args(["--peers", &peers, "--data-dir"])
            .arg(&node.data_dir)
            // We hold the write end of its stdin; the kernel closes it when
            // the demo exits in any way (kill -9 included), and the node
            // then stops: no node outlives the demo.
            .arg("--stop-when-stdin-closes")
            // Nodes started from the data root find what they share there.
            .current_dir(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Ctrl+C at the demo is for the demo, which stops the nodes.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", node.id))?;
        let prefix = self.prefix(node);
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            relay(stream, prefix.clone());
        }
        let Some(mut stdin) = child.stdin.take() else {
            let _ = child.kill();
            return Err(format!("node {} has no stdin", node.id));
        };
        if self.slow {
            let _ = stdin.write_all(b"slow\n");
        }
        say!("Started node {} (pid {})", node.id, child.id());
        let node = &mut self.nodes[i];
        node.process = Some(Running {
            child,
            stdin,
            expected_exit: false,
        });
        node.paused = false;
        node.partitioned = false;
        Ok(())
    }

    /// "8000 | " in the node's colour (when stdout is a terminal).
    fn prefix(&self, node: &DemoNode) -> String {
        const COLOURS: [&str; 6] = ["36", "33", "35", "32", "34", "31"];
        if self.colour {
            let c = COLOURS[node.colour % COLOURS.len()];
            format!("\x1b[{c}m{} |\x1b[0m ", node.id)
        } else {
            format!("{} | ", node.id)
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let (ctrl_c_tx, ctrl_c) = bounded(1);
        ctrlc::set_handler(move || {
            let _ = ctrl_c_tx.try_send(());
        })
        .map_err(|e| format!("cannot install the Ctrl+C handler: {e}"))?;
        console::enable_prompt();
        let stdin = spawn_stdin_reader();
        let reaper = tick(REAP_INTERVAL);
        console::show_prompt();
        loop {
            select! {
                recv(stdin) -> line => match line {
                    Ok(line) => {
                        if !self.on_line(&line) {
                            return Ok(());
                        }
                        console::show_prompt();
                    }
                    Err(_) => {
                        say!("stdin is closed; stopping the demo");
                        return Ok(());
                    }
                },
                recv(ctrl_c) -> _ => return Ok(()),
                recv(reaper) -> _ => self.reap(),
            }
        }
    }

    /// Says which nodes exited by themselves (or as asked).
    fn reap(&mut self) {
        for node in &mut self.nodes {
            let Some(running) = &mut node.process else {
                continue;
            };
            if let Ok(Some(status)) = running.child.try_wait() {
                if running.expected_exit {
                    say!("Node {} stopped ({status})", node.id);
                } else {
                    say!("Node {} exited by itself ({status})", node.id);
                }
                node.process = None;
                node.paused = false;
                node.partitioned = false;
            }
        }
    }

    /// Carries out one line; false to quit.
    fn on_line(&mut self, line: &str) -> bool {
        self.reap();
        match parse_demo(line) {
            DemoCommand::Set(value) => self.request(ClientCommand::Set { value }),
            DemoCommand::Get => self.request(ClientCommand::Get),
            DemoCommand::Status => self.status_table(),
            DemoCommand::Log(count) => self.show_log(count),
            DemoCommand::OnNode(action, id) => self.on_node(action, &id),
            DemoCommand::Heal => self.heal(),
            DemoCommand::Slow(slow) => self.set_slow(slow),
            DemoCommand::Help => HELP.iter().for_each(|line| console::say(line)),
            DemoCommand::Quit => return false,
            DemoCommand::Empty => {}
            DemoCommand::Usage(text) => say!("{text}"),
            DemoCommand::Unknown(text) => {
                say!("Unknown command '{text}'; type help for the list of commands")
            }
        }
        true
    }

    fn running_addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    fn request(&mut self, command: ClientCommand) {
        let addresses = self.running_addresses();
        if addresses.is_empty() {
            say!("No node is running; start one with start <id>");
            return;
        }
        match client::request(&self.creds, &addresses, command, REQUEST_TIMEOUT) {
            Ok(ClientResult::Written { index }) => say!("Committed at index {index}"),
            Ok(ClientResult::Value { value }) => say!("Value: {value}"),
            Ok(ClientResult::Error { message }) => say!("Error: {message}"),
            Ok(other) => say!("Unexpected answer: {other:?}"),
            Err(e) => say!("No answer: {e}"),
        }
    }

    fn statuses(&self) -> Vec<(&DemoNode, Option<Status>)> {
        self.nodes
            .iter()
            .map(|node| {
                let status = if node.process.is_some() && !node.paused {
                    match client::request(
                        &self.creds,
                        &[format!("127.0.0.1:{}", node.port)],
                        ClientCommand::Status,
                        STATUS_TIMEOUT,
                    ) {
                        Ok(ClientResult::Status(status)) => Some(status),
                        _ => None,
                    }
                } else {
                    None
                };
                (node, status)
            })
            .collect()
    }

    fn status_table(&self) {
        say!(
            "{:<6} {:<27} {:>5} {:<7} {:>7} {:>8} {:>9}  value",
            "node",
            "state",
            "term",
            "leader",
            "commit",
            "applied",
            "last log"
        );
        for (node, status) in self.statuses() {
            let mut state = match (&node.process, node.paused, &status) {
                (None, _, _) => "down".to_string(),
                (Some(_), true, _) => "paused".to_string(),
                (Some(_), false, None) => "not answering".to_string(),
                (Some(_), false, Some(s)) => s.role.clone(),
            };
            if node.partitioned {
                state.push_str(" (partitioned)");
            }
            match status {
                Some(s) => say!(
                    "{:<6} {:<27} {:>5} {:<7} {:>7} {:>8} {:>9}  {}",
                    node.id,
                    state,
                    s.term,
                    s.leader.map_or("-".to_string(), |l| l.to_string()),
                    s.commit_index,
                    s.last_applied,
                    s.last_log_index,
                    s.value
                ),
                None => say!("{:<6} {state}", node.id),
            }
        }
    }

    fn show_log(&self, count: usize) {
        // The leader's log if one answers, else the first node that does.
        let statuses = self.statuses();
        let leader = statuses
            .iter()
            .find(|(_, s)| s.as_ref().is_some_and(|s| s.role == "leader"))
            .or_else(|| statuses.iter().find(|(_, s)| s.is_some()));
        let Some((node, status)) = leader else {
            say!("No node answers; start one with start <id>");
            return;
        };
        let role = status.as_ref().map_or("", |s| s.role.as_str());
        match client::request(
            &self.creds,
            &[format!("127.0.0.1:{}", node.port)],
            ClientCommand::Log { count },
            REQUEST_TIMEOUT,
        ) {
            Ok(ClientResult::Log { entries }) if entries.is_empty() => {
                say!("Node {} ({role}) log is empty", node.id)
            }
            Ok(ClientResult::Log { entries }) => {
                say!("Node {} ({role}), last {} entries:", node.id, entries.len());
                for line in log_table(&entries) {
                    console::say(&line);
                }
            }
            Ok(other) => say!("Unexpected answer from node {}: {other:?}", node.id),
            Err(e) => say!("No answer from node {}: {e}", node.id),
        }
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    fn on_node(&mut self, action: NodeAction, id: &str) {
        let Some(i) = self.find(id) else {
            let ids = list(self.nodes.iter().map(|n| n.id.as_str()));
            say!("There is no node {id}; the nodes are {ids}");
            return;
        };
        let running = self.nodes[i].process.is_some();
        let paused = self.nodes[i].paused;
        match (action, running, paused) {
            (NodeAction::Start, true, _) => say!("Node {id} is already running"),
            (NodeAction::Start, false, _) => {
                if let Err(e) = self.spawn(i) {
                    say!("Cannot start node {id}: {e}");
                }
            }
            (_, false, _) => say!("Node {id} is not running; start it with start {id}"),
            (NodeAction::Kill, true, _) => self.kill(i),
            (NodeAction::Stop, true, _) => {
                if paused {
                    self.signal(i, "CONT");
                }
                self.signal(i, "INT");
                say!("Stopping node {id} (as Ctrl+C would)");
            }
            (NodeAction::Pause, true, true) => say!("Node {id} is already paused"),
            (NodeAction::Pause, true, false) => {
                self.signal(i, "STOP");
                self.nodes[i].paused = true;
                say!("Paused node {id}: it is alive but neither hears nor speaks");
            }
            (NodeAction::Resume, true, false) => say!("Node {id} is not paused"),
            (NodeAction::Resume, true, true) => {
                self.signal(i, "CONT");
                self.nodes[i].paused = false;
                say!("Resumed node {id}");
            }
            (NodeAction::Partition, true, _) if self.nodes[i].partitioned => {
                say!("Node {id} is already partitioned; heal ends it")
            }
            (NodeAction::Partition, true, _) => {
                if self.type_at(i, "partition") {
                    self.nodes[i].partitioned = true;
                }
            }
        }
    }

    fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(running) = &mut node.process else {
            return;
        };
        running.expected_exit = true;
        match running.child.kill() {
            Ok(()) => {
                let _ = running.child.wait();
                say!("Killed node {} (kill -9)", node.id);
            }
            Err(e) => say!("Cannot kill node {}: {e}", node.id),
        }
        node.process = None;
        node.paused = false;
        node.partitioned = false;
    }

    /// Sends a signal with the `kill` command (no libc dependency).
    fn signal(&mut self, i: usize, name: &str) {
        let node = &mut self.nodes[i];
        let Some(running) = &mut node.process else {
            return;
        };
        if name == "INT" || name == "TERM" {
            running.expected_exit = true;
        }
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(running.child.id().to_string())
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => say!("kill -{name} of node {} failed: {s}", node.id),
            Err(e) => say!("cannot run kill -{name} for node {}: {e}", node.id),
        }
    }

    /// Types `line` at node `i`'s prompt. False if it could not.
    fn type_at(&mut self, i: usize, line: &str) -> bool {
        let node = &mut self.nodes[i];
        let Some(running) = &mut node.process else {
            return false;
        };
        match writeln!(running.stdin, "{line}").and_then(|()| running.stdin.flush()) {
            Ok(()) => true,
            Err(e) => {
                say!("Cannot type at node {}: {e}", node.id);
                false
            }
        }
    }

    fn heal(&mut self) {
        let cut: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].partitioned)
            .collect();
        if cut.is_empty() {
            say!("No node is partitioned; nothing to heal");
            return;
        }
        for i in cut {
            if self.type_at(i, "heal") {
                self.nodes[i].partitioned = false;
            }
        }
    }

    fn set_slow(&mut self, slow: bool) {
        if slow == self.slow {
            say!(
                "The clocks already run {}",
                if slow { "slow" } else { "fast" }
            );
            return;
        }
        self.slow = slow;
        let word = if slow { "slow" } else { "fast" };
        for i in 0..self.nodes.len() {
            if self.nodes[i].process.is_some() {
                self.type_at(i, word);
            }
        }
        if slow {
            say!("Every node's clock now runs 20 times slower: elections take seconds (fast to end it)");
        }
    }

    /// Stops every node (SIGTERM, then SIGKILL after a grace period) and
    /// removes the temporary data root.
    fn shut_down(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].process.is_some() {
                if self.nodes[i].paused {
                    self.signal(i, "CONT");
                }
                // SIGTERM ends a node at once (it hands nothing over: the
                // whole cluster is going), its data already durable.
                self.signal(i, "TERM");
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for node in &mut self.nodes {
            let Some(mut running) = node.process.take() else {
                continue;
            };
            loop {
                match running.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = running.child.kill();
                        let _ = running.child.wait();
                        break;
                    }
                }
            }
        }
        if self.temporary {
            match std::fs::remove_dir_all(&self.root) {
                Ok(()) => say!("Every node stopped; removed {}", self.root.display()),
                Err(e) => say!(
                    "Every node stopped; could not remove {}: {e}",
                    self.root.display()
                ),
            }
            self.temporary = false;
        } else {
            say!(
                "Every node stopped; their data is kept in {}",
                self.root.display()
            );
        }
    }
}
