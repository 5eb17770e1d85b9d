//! The prompt: what a person types at a node's stdin, read on a thread of
//! its own and parsed into commands for the state-machine thread.
//!
//! `> ` is shown when stdin and stdout are terminals. Spaces around a command
//! are ignored, the command word may be in any case, and a command used
//! wrongly answers with its usage line (`help` lists them all; the README has
//! the table).
//!
//! Commands typed at a follower go to the leader one at a time, in the order
//! typed, from one queue: a pasted list of `set`s ends with the last one's
//! value (3,000 lines pasted at a follower: all 3,000 applied in order). At
//! most 1,024 wait for the leader at once; past that the node reads no more of
//! stdin until one is answered, so a longer paste waits in the pipe rather than
//! being dropped. How the prompt survives lines printed while a person types is
//! in [`console`](crate::console).
//!
//! A restarted node prints `updated value to` again for the values in its
//! log: the value lives in memory only, and is rebuilt by applying the log
//! again (or the latest snapshot, then the entries after it) once a leader
//! says how far it is committed. Until then `status` says the value is `not
//! yet known` rather than showing an empty one.
//!
//! End of stdin (Ctrl+D) does not stop the node: it says `stdin is closed; it
//! goes on running until Ctrl+C`, so `raft 8000 < /dev/null &` runs it in the
//! background. (With `--stop-when-stdin-closes`, as `raft demo` starts its
//! nodes, it stops instead, as on Ctrl+C: see [`config`](crate::config).)
//! Ctrl+C stops the node (a leader hands over first, to an up-to-date
//! follower heard from within the shortest election timeout; `status` shows
//! how long ago each member was heard from), printing `Shutting down node
//! <id>`, with exit status 0.

use crate::client;
use crate::message::NodeId;
use crate::message::{ClientCommand, ClientResult, LogRow};
use crate::say;
use crate::transport::Credentials;
use crossbeam_channel::{bounded, Receiver, Sender};
use log::{debug, warn};
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest command line read from stdin.
pub const MAX_STDIN_LINE_BYTES: usize = 64 * 1024;

/// Rows `log` prints when no count is given.
pub const DEFAULT_LOG_ROWS: usize = 10;

/// The most rows `log N` prints (and `raft client ADDRS log N` returns).
pub const MAX_LOG_ROWS: usize = 1000;

/// A line typed at the prompt, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PromptCommand {
    Set(String),
    Get,
    Status,
    /// The last N log entries.
    Log(usize),
    Transfer(NodeId),
    Add(String),
    Remove(NodeId),
    /// Drop this node's traffic with these peers (all of them if empty).
    Partition(Vec<NodeId>),
    Heal,
    /// Let the protocol's time run this many times slower (1: real time).
    Slow(u64),
    Help,
    Empty,
    /// A known command used wrongly: the line to print.
    Usage(String),
    Unknown(String),
}

/// How much slower `slow` makes the protocol's clock.
pub const SLOW_FACTOR: u64 = 20;

/// Parses one line, forgivingly: surrounding whitespace is ignored, the
/// command word may be in any case, and a known command used wrongly gets
/// its usage line. For `set`, the value is the rest of the line after the
/// word and the spaces following it, with its inner spaces kept.
pub(crate) fn parse_prompt(line: &str) -> PromptCommand {
    let trimmed = line.trim();
    let (word, rest) = match trimmed.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (trimmed, ""),
    };
    let word = word.to_ascii_lowercase();
    let args: Vec<&str> = rest.split_whitespace().collect();
    let usage = |text: &str| PromptCommand::Usage(format!("usage: {text}"));
    match (word.as_str(), args.as_slice()) {
        ("", _) => PromptCommand::Empty,
        ("set", []) => usage("set <value>, like set hello world"),
        ("set", _) => PromptCommand::Set(rest.to_string()),
        ("get", []) => PromptCommand::Get,
        ("get", _) => usage("get (it takes nothing after it; to change the value: set <value>)"),
        ("status", []) => PromptCommand::Status,
        ("status", _) => usage("status (it takes nothing after it)"),
        ("log", []) => PromptCommand::Log(DEFAULT_LOG_ROWS),
        ("log", [n]) => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_LOG_ROWS).contains(&n) => PromptCommand::Log(n),
            _ => usage(&format!(
                "log [N], N from 1 to {MAX_LOG_ROWS} (default {DEFAULT_LOG_ROWS}), like log 20"
            )),
        },
        ("log", _) => usage("log [N], like log 20"),
        ("transfer", [id]) => PromptCommand::Transfer(NodeId::new(*id)),
        ("transfer", _) => usage("transfer <id>, like transfer 8001"),
        ("add", [address]) => PromptCommand::Add(address.to_string()),
        ("add", _) => usage("add <port or host:port>, like add 8003"),
        ("remove", [id]) => PromptCommand::Remove(NodeId::new(*id)),
        ("remove", _) => usage("remove <id>, like remove 8003"),
        ("partition", ids) => {
            PromptCommand::Partition(ids.iter().map(|id| NodeId::new(*id)).collect())
        }
        ("heal", []) => PromptCommand::Heal,
        ("heal", _) => {
            usage("heal (it takes nothing after it: it ends every partition of this node)")
        }
        ("slow", []) => PromptCommand::Slow(SLOW_FACTOR),
        ("fast", []) => PromptCommand::Slow(1),
        ("slow" | "fast", _) => usage(&format!("{word} (it takes nothing after it)")),
        ("help" | "?", _) => PromptCommand::Help,
        _ => PromptCommand::Unknown(trimmed.to_string()),
    }
}

/// The lines of `help`.
pub(crate) const HELP: &[&str] = &[
    "Commands:",
    "  set <value>       replace the value (the rest of the line); at a follower it is forwarded to the leader",
    "  get               read the value, linearizably (through the leader)",
    "  status            this node's role, term, leader, members, indexes, value, and when it last heard from each peer",
    "  log [N]           the last N log entries (default 10): index, term, what, committed, applied",
    "  transfer <id>     (at the leader) hand leadership to member <id>, e.g. transfer 8001",
    "  add <addr>        (at the leader) add the node at PORT or HOST:PORT, learner first, e.g. add 8003",
    "  remove <id>       (at the leader) remove member <id>, e.g. remove 8003",
    "  partition [id..]  drop this node's messages to and from those peers (all if none given)",
    "  heal              end the partition: talk to every peer again",
    "  slow / fast       let this node's clock run 20 times slower (to watch an election), or normally",
    "  help              this list",
    "  Ctrl+R            show again what you had typed, after a line printed over it",
    "  Ctrl+C            stop this node (a leader first hands over to an up-to-date follower)",
];

/// Reads stdin lines on their own thread. A line longer than
/// `MAX_STDIN_LINE_BYTES`, or not UTF-8, is refused with a message.
pub(crate) fn spawn_stdin_reader() -> Receiver<String> {
    let (tx, rx) = bounded(16);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            loop {
                let mut buf = Vec::new();
                let limit = (MAX_STDIN_LINE_BYTES + 1) as u64;
                match (&mut input).take(limit).read_until(b'\n', &mut buf) {
                    Ok(0) => return,
                    Ok(_) if buf.len() > MAX_STDIN_LINE_BYTES => {
                        say!("Line too long (more than {MAX_STDIN_LINE_BYTES} bytes); ignored");
                        skip_rest_of_line(&mut input);
                    }
                    Ok(_) => match String::from_utf8(buf) {
                        Ok(line) => {
                            // Enter moved the cursor past the prompt.
                            crate::console::prompt_answered();
                            if tx.send(line).is_err() {
                                return;
                            }
                        }
                        Err(_) => say!("That line is not valid UTF-8; ignored"),
                    },
                    Err(e) => {
                        debug!("stdin closed: {e}");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the stdin thread; the prompt is off: {e}");
    }
    rx
}

fn skip_rest_of_line(input: &mut impl BufRead) {
    let mut sink = Vec::new();
    loop {
        sink.clear();
        match input.by_ref().take(64 * 1024).read_until(b'\n', &mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) if sink.ends_with(b"\n") => return,
            Ok(_) => {}
        }
    }
}

/// Most prompt commands waiting to be forwarded to the leader. Past this,
/// the node reads no more of stdin until one has been answered.
pub const MAX_FORWARD_QUEUE: usize = 1024;

/// A command typed at a follower, on its way to the leader.
struct Forward {
    from: NodeId,
    /// The leader's address first, then every other member's.
    addresses: Vec<String>,
    command: ClientCommand,
}

/// The prompt's one queue to the leader. Commands typed at a follower are
/// sent from one thread, one at a time, each after the previous one was
/// answered: so they take effect in the order typed, and the
/// state-machine thread never waits on the network.
pub(crate) struct ForwardQueue {
    /// The cluster key, to connect to the leader.
    creds: Credentials,
    tx: Option<Sender<Forward>>,
    /// Commands queued or on their way and not answered yet.
    in_flight: Arc<AtomicUsize>,
}

impl ForwardQueue {
    pub(crate) fn new(creds: Credentials) -> ForwardQueue {
        ForwardQueue {
            creds,
            tx: None,
            in_flight: Arc::default(),
        }
    }

    /// Whether no forwarded command is waiting for its answer. While one
    /// is, even a node that has become leader sends its own prompt's
    /// commands through the queue (to itself), to keep them in order.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Whether the queue is full. The node then stops reading stdin until
    /// it has room, so a long paste waits in the pipe instead of being
    /// dropped.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) >= MAX_FORWARD_QUEUE
    }

    /// Queues `command` for the leader at `addresses[0]`.
    pub(crate) fn send(&mut self, from: NodeId, addresses: Vec<String>, command: ClientCommand) {
        let in_flight = self.in_flight.clone();
        let Some(tx) = self.sender() else {
            say!("Node {from} cannot forward to the leader: no thread for it; type the command at the leader");
            return;
        };
        in_flight.fetch_add(1, Ordering::SeqCst);
        let forward = Forward {
            from,
            addresses,
            command,
        };
        if let Err(e) = tx.try_send(forward) {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            say!(
                "Node {} has {MAX_FORWARD_QUEUE} commands waiting for the leader already; this one was dropped",
                e.into_inner().from
            );
        }
    }

    fn sender(&mut self) -> Option<&Sender<Forward>> {
        if self.tx.is_none() {
            let (tx, rx) = bounded::<Forward>(MAX_FORWARD_QUEUE);
            let in_flight = self.in_flight.clone();
            let creds = self.creds.clone();
            let spawned = std::thread::Builder::new()
                .name("forward".into())
                .spawn(move || {
                    for f in rx {
                        forward_one(&creds, &f);
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        crate::console::show_prompt();
                    }
                });
            match spawned {
                Ok(_) => self.tx = Some(tx),
                Err(e) => warn!("cannot start the thread that forwards to the leader: {e}"),
            }
        }
        self.tx.as_ref()
    }
}

fn forward_one(creds: &Credentials, f: &Forward) {
    match client::request(
        creds,
        &f.addresses,
        f.command.clone(),
        crate::node::FORWARD_TIMEOUT,
    ) {
        Ok(result) => print_result(&result),
        Err(e) => say!("Node {} could not reach the leader: {e}", f.from),
    }
}

/// Prints the answer to a command typed at the prompt.
pub(crate) fn print_result(result: &ClientResult) {
    match result {
        ClientResult::Written { index } => say!("Committed at index {index}"),
        ClientResult::Done => say!("Done"),
        ClientResult::Value { value } => say!("Value: {value}"),
        ClientResult::Status(_) | ClientResult::Log { .. } | ClientResult::Metrics(_) => {}
        ClientResult::NotLeader {
            leader: Some(leader),
        } => say!("Not the leader; the leader is {}", id_of(leader)),
        ClientResult::NotLeader { leader: None } => {
            say!("Not the leader, and no leader is known yet; try again in a moment")
        }
        ClientResult::Error { message } => say!("Error: {message}"),
    }
}

/// A node's id from its address: `8000` for `127.0.0.1:8000` (see `config`).
pub(crate) fn id_of(address: &str) -> String {
    crate::config::parse_address(address)
        .map_or_else(|_| address.to_string(), |(id, _)| id.to_string())
}

/// The longest value `log` shows whole; longer ones are cut with "...".
const MAX_SHOWN_VALUE_CHARS: usize = 60;

/// `log` as a table, a header and one line per entry (oldest first).
pub(crate) fn log_table(rows: &[LogRow]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:>7}  {:>5}  {:<9}  {:<7}  entry",
        "index", "term", "committed", "applied"
    )];
    for row in rows {
        let what = match (row.kind.as_str(), &row.data) {
            ("command", Some(value)) => format!("set {}", shorten(value, MAX_SHOWN_VALUE_CHARS)),
            ("noop", _) => "no-op (a new leader's first entry)".to_string(),
            (_, Some(members)) => format!("membership: {members}"),
            (kind, None) => kind.to_string(),
        };
        lines.push(format!(
            "{:>7}  {:>5}  {:<9}  {:<7}  {what}",
            row.index,
            row.term,
            yes_no(row.committed),
            yes_no(row.applied)
        ));
    }
    lines
}

fn shorten(value: &str, max_chars: usize) -> String {
    if value.chars().count() <= max_chars {
        return value.to_string();
    }
    let cut: String = value.chars().take(max_chars).collect();
    format!("{cut}...")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(line: &str) -> String {
        match parse_prompt(line) {
            PromptCommand::Usage(text) => text,
            other => panic!("{line:?} should get its usage line, got {other:?}"),
        }
    }

    #[test]
    fn set_takes_the_rest_of_the_line_with_its_inner_spaces() {
        assert_eq!(
            parse_prompt("set hello  world \n"),
            PromptCommand::Set("hello  world".into())
        );
        assert_eq!(
            parse_prompt("  set\t -5 and more\r\n"),
            PromptCommand::Set("-5 and more".into())
        );
    }

    #[test]
    fn surrounding_whitespace_and_case_are_forgiven() {
        assert_eq!(parse_prompt("get \n"), PromptCommand::Get);
        assert_eq!(parse_prompt("  GET"), PromptCommand::Get);
        assert_eq!(parse_prompt("status \r\n"), PromptCommand::Status);
        assert_eq!(parse_prompt("Help"), PromptCommand::Help);
        assert_eq!(parse_prompt("   \n"), PromptCommand::Empty);
        assert_eq!(
            parse_prompt("transfer  8001 "),
            PromptCommand::Transfer(NodeId::new("8001"))
        );
    }

    #[test]
    fn a_command_without_its_argument_gets_its_usage_line() {
        assert_eq!(usage_of("set"), "usage: set <value>, like set hello world");
        assert_eq!(
            usage_of("set   "),
            "usage: set <value>, like set hello world"
        );
        assert!(usage_of("transfer").contains("transfer <id>"));
        assert!(usage_of("transfer 8001 8002").contains("transfer <id>"));
        assert!(usage_of("add").contains("add <port"));
        assert!(usage_of("remove").contains("remove <id>"));
        assert!(usage_of("get x").contains("set <value>"));
        assert!(usage_of("status now").starts_with("usage: status"));
        assert!(usage_of("heal 8001").starts_with("usage: heal"));
        assert!(usage_of("slow 3").starts_with("usage: slow"));
    }

    #[test]
    fn log_takes_an_optional_bounded_count() {
        assert_eq!(parse_prompt("log"), PromptCommand::Log(DEFAULT_LOG_ROWS));
        assert_eq!(parse_prompt("log 3 "), PromptCommand::Log(3));
        for bad in ["log 0", "log -1", "log x", "log 1 2", "log 1001"] {
            assert!(usage_of(bad).contains("log [N]"), "{bad}");
        }
    }

    #[test]
    fn partition_heal_slow_and_fast() {
        assert_eq!(parse_prompt("partition"), PromptCommand::Partition(vec![]));
        assert_eq!(
            parse_prompt("partition 8001 8002"),
            PromptCommand::Partition(vec![NodeId::new("8001"), NodeId::new("8002")])
        );
        assert_eq!(parse_prompt("heal"), PromptCommand::Heal);
        assert_eq!(parse_prompt("slow"), PromptCommand::Slow(SLOW_FACTOR));
        assert_eq!(parse_prompt("fast"), PromptCommand::Slow(1));
    }

    #[test]
    fn unknown_commands_are_named_whole() {
        assert_eq!(
            parse_prompt(" frobnicate 3 \n"),
            PromptCommand::Unknown("frobnicate 3".into())
        );
    }

    #[test]
    fn help_lists_every_command_the_parser_knows() {
        let help = HELP.join("\n");
        for word in [
            "set",
            "get",
            "status",
            "log",
            "transfer",
            "add",
            "remove",
            "partition",
            "heal",
            "slow",
            "fast",
            "help",
        ] {
            assert!(help.contains(word), "{word} missing from help");
            assert!(
                !matches!(parse_prompt(word), PromptCommand::Unknown(_)),
                "{word} is in help but not parsed"
            );
        }
    }
}
