//! `raft client`: send one command to a cluster and print the answer.
//!
//! ```text
//! raft client 8000,8001,8002 set hello world   # returns once committed
//! raft client 8000,8001,8002 get               # prints the value
//! raft client 8001 status                      # one JSON object
//! raft client 8001 metrics                     # its counters, one JSON object
//! ```
//!
//! Only the leader serves `set` and `get`; any other node answers
//! `NotLeader`, with the leader's address when it knows it. So the client
//! tries the addresses in turn, follows those hints, and starts another round
//! after a short pause, until it has an answer or its deadline passes. A node
//! reuses [`request`] to forward a follower's `set` to the leader.
//!
//! Each attempt is one connection carrying one request; every connect, read
//! and write has a timeout cut to the time left, so the client never runs
//! past its deadline by more than a connect attempt.
//!
//! Every connection proves it holds the cluster key before it may ask
//! anything (see `transport::auth`); [`connect`] is the one place that sets
//! one up, for `raft client`, `raft bench` and a node forwarding its
//! prompt's commands alike. The key is found as a node finds it:
//! `raft-data/cluster.key` under the current directory, or `--cluster-key`.
//!
//! # Usage
//!
//! ```text
//! raft client [--timeout SECS] [--cluster-key FILE] ADDRS COMMAND
//! raft client 8001 log 5                       # its last 5 log entries, one JSON object a line
//! raft client 8000,8001,8002 transfer 8002     # hands leadership to 8002
//! raft client 8000,8001,8002 add 8003          # adds the node on port 8003 (learner, then voter)
//! raft client 8000,8001,8002 remove 8003       # removes it again
//! ```
//!
//! `ADDRS` is a comma-separated list of `PORT` (meaning `127.0.0.1:PORT`) or
//! `HOST:PORT`. The timeout defaults to 5 s. Exit status: 0 on success, 1 on
//! failure (the reason on stderr; also when no key file is found, after saying
//! where it looked), 2 on a usage error. A `set` whose answer is lost after it
//! was sent is not retried (it could be applied twice); the client says the
//! outcome is unknown.

use crate::config::{self, Exit};
use crate::message::{ClientCommand, ClientRequest, ClientResponse, ClientResult, Frame};
use crate::transport::auth::{self, Opener, Role, Sealer};
use crate::transport::{self, ClusterKey, Credentials, FrameError};
use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How a client introduces itself in the handshake (nodes use their id).
pub const CLIENT_NAME: &str = "client";

/// How long `raft client` keeps trying when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `--timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Pause between rounds over all addresses, so a cluster in the middle of
/// an election (no leader for one or two election timeouts) is polled a few
/// times per timeout, not hammered.
pub const ROUND_BACKOFF: Duration = Duration::from_millis(50);

/// The most attempts in one round: each address once, plus leader hints.
/// Stops two nodes that point at each other from bouncing a request around
/// at full speed; the next round starts after [`ROUND_BACKOFF`].
pub const MAX_ATTEMPTS_PER_ROUND: usize = 16;

/// Below this much time left, another attempt cannot succeed.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(1);

/// The command line of `raft client`, as typed.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// Give up after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "5")]
    pub timeout: String,

    /// The cluster's key file [default: raft-data/cluster.key, which the
    /// nodes started from this directory share].
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,

    /// The nodes to ask, comma-separated: PORT (meaning 127.0.0.1:PORT) or
    /// HOST:PORT.
    #[arg(value_name = "ADDRS")]
    pub addrs: String,

    /// One of: `set <VALUE...>` (the words joined by single spaces), `get`,
    /// `status` (one JSON object), `metrics` (the node's counters, one JSON
    /// object), `log [N]` (the last N entries, default
    /// 10, as JSON lines), `transfer <ID>`, `add <HOST:PORT>`,
    /// `remove <ID>`.
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// Why a request got no answer: said so that a person knows what to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// `request` was called with no addresses.
    NoAddresses,
    /// No node gave a final answer before the deadline.
    NoLeader {
        /// The addresses tried, comma-separated.
        addrs: String,
        timeout: Duration,
        /// What went wrong last, naming the node.
        last_error: String,
    },
    /// The request reached `addr` but no answer came back, so the command
    /// may or may not take effect. Only a `set` is reported like this (it is
    /// not retried, to avoid applying it twice); reads are simply retried.
    OutcomeUnknown { addr: String, error: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoAddresses => f.write_str("no node addresses given"),
            ClientError::NoLeader {
                addrs,
                timeout,
                last_error,
            } => write!(
                f,
                "no leader found among {addrs} within {}: last error: {last_error}",
                seconds(*timeout)
            ),
            ClientError::OutcomeUnknown { addr, error } => write!(
                f,
                "sent the request to {addr} but got no answer ({error}); it may or may not have been applied: check with `get`"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// `5s`, `0.5s`: how a person writes it on the command line.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Sends `command` to the cluster at `addrs` (`host:port`, or a bare port
/// meaning 127.0.0.1) and returns the first answer that is not `NotLeader`,
/// following leader hints, until `timeout` has passed.
///
/// An `Error` answer is returned as `Ok`: the node decided, and retrying
/// elsewhere would not help.
pub fn request(
    creds: &Credentials,
    addrs: &[String],
    command: ClientCommand,
    timeout: Duration,
) -> Result<ClientResult, ClientError> {
    if addrs.is_empty() {
        return Err(ClientError::NoAddresses);
    }
    let deadline = Instant::now() + timeout;
    let request = ClientRequest {
        id: rand::random(),
        command,
    };
    // Only reads are safe to send twice.
    let may_retry_after_send = matches!(
        request.command,
        ClientCommand::Get
            | ClientCommand::Status
            | ClientCommand::Log { .. }
            | ClientCommand::Metrics
    );
    let mut last_error = String::from("no attempt was made");
    let mut hint: Option<String> = None;
    loop {
        // One round: the latest hint first, then every address once.
        let mut queue: Vec<String> = addrs.iter().rev().cloned().collect();
        queue.extend(hint.take());
        let mut tried = BTreeSet::new();
        let mut attempts = 0;
        while let Some(addr) = queue.pop() {
            let addr = match config::parse_address(&addr) {
                Ok((_, addr)) => addr,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            if !tried.insert(addr.clone()) {
                continue;
            }
            attempts += 1;
            if attempts > MAX_ATTEMPTS_PER_ROUND {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT_TIME {
                return Err(no_leader(addrs, timeout, last_error));
            }
            match attempt(creds, &addr, &request, left) {
                Ok(ClientResult::NotLeader {
                    leader: Some(leader),
                }) => {
                    log::debug!("{addr} is not the leader; it points to {leader}");
                    last_error = format!("{addr} is not the leader; it points to {leader}");
                    hint = Some(leader.clone());
                    queue.push(leader);
                }
                Ok(ClientResult::NotLeader { leader: None }) => {
                    log::debug!("{addr} is not the leader and knows none");
                    last_error = format!(
                        "{addr} is not the leader and knows of none (is an election going on, or is a majority down?)"
                    );
                }
                Ok(result) => return Ok(result),
                Err(Failure::BeforeSend(e)) => {
                    log::debug!("{addr}: {e}");
                    last_error = format!("{addr}: {e}");
                }
                Err(Failure::AfterSend(e)) => {
                    log::debug!("{addr}: {e}");
                    if !may_retry_after_send {
                        return Err(ClientError::OutcomeUnknown { addr, error: e });
                    }
                    last_error = format!("{addr}: {e}");
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_ATTEMPT_TIME {
            return Err(no_leader(addrs, timeout, last_error));
        }
        // A poll loop with a deadline: the cluster may be electing a leader.
        std::thread::sleep(ROUND_BACKOFF.min(left));
    }
}

fn no_leader(addrs: &[String], timeout: Duration, last_error: String) -> ClientError {
    let addrs = addrs
        .iter()
        .map(|a| config::parse_address(a).map_or_else(|_| a.clone(), |(_, a)| a))
        .collect::<Vec<_>>()
        .join(",");
    ClientError::NoLeader {
        addrs,
        timeout,
        last_error,
    }
}

/// How one attempt failed: before the request left (safe to retry
/// anything), or after (a `set` may have been applied).
enum Failure {
    BeforeSend(String),
    AfterSend(String),
}

/// An authenticated connection to one node, for requests and their
/// answers. Made by [`connect`].
pub struct Connection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    sealer: Sealer,
    opener: Opener,
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// No TCP connection (refused, timed out, unresolvable).
    Connect(io::Error),
    /// Connected, but the handshake failed: another cluster's key, no key,
    /// or the connection broke.
    Handshake(auth::HandshakeError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Connect(e) => f.write_str(&describe_connect_error(e)),
            ConnectError::Handshake(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Opens a connection to the node at `addr` (`host:port`) and proves this
/// process holds the cluster key, all within `timeout`. Every client
/// connection, whoever makes it, is made here.
pub fn connect(
    creds: &Credentials,
    addr: &str,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let deadline = Instant::now() + timeout;
    let stream = transport::connect_within(addr, timeout.min(transport::CONNECT_TIMEOUT))
        .map_err(ConnectError::Connect)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_ATTEMPT_TIME);
    let setup = || -> io::Result<BufReader<TcpStream>> {
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))?;
        Ok(BufReader::new(stream.try_clone()?))
    };
    let mut reader = setup().map_err(ConnectError::Connect)?;
    let (sealer, opener) =
        auth::connect_handshake(creds, CLIENT_NAME, Role::Client, &mut reader, &mut &stream)
            .map_err(ConnectError::Handshake)?;
    Ok(Connection {
        stream,
        reader,
        sealer,
        opener,
    })
}

impl Connection {
    /// Sends one request. Part of the line may have left on an error; a
    /// node acts only on whole lines whose MAC verifies.
    pub fn send(&mut self, request: &ClientRequest) -> io::Result<()> {
        let line = transport::seal_frame(&Frame::Request(request.clone()), &mut self.sealer)?;
        self.stream.write_all(&line)?;
        self.stream.flush()
    }

    /// Reads the next answer; `Ok(None)` if the node closed the connection.
    pub fn receive(&mut self) -> Result<Option<ClientResponse>, FrameError> {
        match transport::read_sealed_frame(&mut self.reader, &mut self.opener)? {
            None => Ok(None),
            Some(Frame::Response(response)) => Ok(Some(response)),
            Some(other) => Err(FrameError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected an answer, got {other:?}"),
            ))),
        }
    }

    /// Limits how long [`Connection::receive`] waits.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Limits how long [`Connection::send`] waits.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_write_timeout(timeout)
    }
}

/// The credentials of a client: the key file at `key_file`, or at
/// `raft-data/cluster.key` under the current directory.
pub fn credentials(key_file: Option<&Path>) -> Result<Credentials, String> {
    let default = Path::new(config::DEFAULT_DATA_ROOT).join(auth::KEY_FILE_NAME);
    let path = key_file.unwrap_or(&default);
    ClusterKey::load(path).map(Credentials::new)
}

/// One connection, one request, one answer, all within `left`.
fn attempt(
    creds: &Credentials,
    addr: &str,
    request: &ClientRequest,
    left: Duration,
) -> Result<ClientResult, Failure> {
    let deadline = Instant::now() + left;
    let mut conn = connect(creds, addr, left).map_err(|e| Failure::BeforeSend(e.to_string()))?;
    let time_left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        (left >= MIN_ATTEMPT_TIME).then_some(left)
    };
    let Some(write_time) = time_left() else {
        return Err(Failure::BeforeSend("out of time".into()));
    };
    conn.set_write_timeout(Some(write_time))
        .map_err(|e| Failure::BeforeSend(e.to_string()))?;
    if let Err(e) = conn.send(request) {
        // Part of the line may have left; a node acts only on whole lines,
        // and a partial one is closed unread, so nothing was applied.
        return Err(Failure::BeforeSend(format!("sending failed: {e}")));
    }
    let Some(read_time) = time_left() else {
        return Err(Failure::AfterSend("no answer within the deadline".into()));
    };
    conn.set_read_timeout(Some(read_time))
        .map_err(|e| Failure::AfterSend(e.to_string()))?;
    match conn.receive() {
        Ok(Some(response)) if response.id == request.id => Ok(response.result),
        Ok(Some(other)) => Err(Failure::AfterSend(format!(
            "unexpected answer (not a response to request {}): {other:?}",
            request.id
        ))),
        Ok(None) => Err(Failure::AfterSend(
            "the node closed the connection without answering".into(),
        )),
        Err(FrameError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(Failure::AfterSend("no answer within the deadline".into()))
        }
        Err(e) => Err(Failure::AfterSend(e.to_string())),
    }
}

fn describe_connect_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused (is a node running there?)".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            "connecting timed out (is the host reachable?)".into()
        }
        _ => format!("cannot connect: {e}"),
    }
}

/// A `raft client` command line, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientInvocation {
    pub addrs: Vec<String>,
    pub command: ClientCommand,
    pub timeout: Duration,
    /// `--cluster-key`, if given.
    pub cluster_key: Option<PathBuf>,
}

/// Checks `raft client` arguments; the error is a one-line usage message.
pub fn parse_args(args: &ClientArgs) -> Result<ClientInvocation, config::ConfigError> {
    let timeout = parse_timeout(&args.timeout)?;
    let addrs = config::parse_address_list(&args.addrs)?;
    let command = parse_command(&args.command)?;
    Ok(ClientInvocation {
        addrs,
        command,
        timeout,
        cluster_key: args.cluster_key.clone(),
    })
}

/// `--timeout SECS`: positive, at most [`MAX_TIMEOUT`].
pub fn parse_timeout(s: &str) -> Result<Duration, config::ConfigError> {
    let bad = || {
        config::ConfigError(format!(
            "invalid --timeout '{s}': expected a number of seconds above 0 and at most {}",
            MAX_TIMEOUT.as_secs()
        ))
    };
    let secs: f64 = s.trim().parse().map_err(|_| bad())?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT.as_secs_f64()) {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `set <VALUE...>`, `get` or `status`.
pub fn parse_command(words: &[String]) -> Result<ClientCommand, config::ConfigError> {
    let usage = |msg: String| config::ConfigError(msg);
    let Some((verb, rest)) = words.split_first() else {
        return Err(usage(
            "no command given: expected set <VALUE...>, get, status, metrics, log [N], transfer <ID>, add <HOST:PORT> or remove <ID>".into(),
        ));
    };
    match verb.as_str() {
        "set" if rest.is_empty() => Err(usage(
            "set needs a value: raft client ADDRS set <VALUE...>".into(),
        )),
        "set" => Ok(ClientCommand::Set {
            value: rest.join(" "),
        }),
        "get" | "status" | "metrics" if !rest.is_empty() => Err(usage(format!(
            "{verb} takes no arguments, but was given '{}'",
            rest.join(" ")
        ))),
        "get" => Ok(ClientCommand::Get),
        "log" => match rest {
            [] => Ok(ClientCommand::Log {
                count: crate::prompt::DEFAULT_LOG_ROWS,
            }),
            [n] => match n.parse::<usize>() {
                Ok(count) if (1..=crate::prompt::MAX_LOG_ROWS).contains(&count) => {
                    Ok(ClientCommand::Log { count })
                }
                _ => Err(usage(format!(
                    "log takes a count from 1 to {}, not '{n}': raft client ADDRS log [N]",
                    crate::prompt::MAX_LOG_ROWS
                ))),
            },
            _ => Err(usage("log takes at most one count: raft client ADDRS log [N]".into())),
        },
        "status" => Ok(ClientCommand::Status),
        "metrics" => Ok(ClientCommand::Metrics),
        "add" => match rest {
            [address] => Ok(ClientCommand::AddMember {
                address: config::parse_address(address)
                    .map_err(|e| usage(format!("add: {e}")))?
                    .1,
            }),
            _ => Err(usage(
                "add needs one address: raft client ADDRS add <HOST:PORT>, like add 8003".into(),
            )),
        },
        "remove" => match rest {
            [id] => Ok(ClientCommand::RemoveMember {
                id: crate::message::NodeId::new(id.as_str()),
            }),
            _ => Err(usage(
                "remove needs one member id: raft client ADDRS remove <ID>, like remove 8003"
                    .into(),
            )),
        },
        "transfer" => match rest {
            [target] => Ok(ClientCommand::Transfer {
                to: crate::message::NodeId::new(target.as_str()),
            }),
            _ => Err(usage(
                "transfer needs one member id: raft client ADDRS transfer <ID>, like transfer 8001"
                    .into(),
            )),
        },
        other => Err(usage(format!(
            "unknown command '{other}': expected set <VALUE...>, get, status, metrics, log [N], transfer <ID>, add <HOST:PORT> or remove <ID>"
        ))),
    }
}

/// Runs `raft client`: 0 on success, 1 when the cluster gave no usable
/// answer (the reason on stderr), 2 on a usage error.
pub fn main(args: &ClientArgs) -> ExitCode {
    let inv = match parse_args(args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Usage);
        }
    };
    let creds = match credentials(inv.cluster_key.as_deref()) {
        Ok(creds) => creds,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Failure);
        }
    };
    let result = match request(&creds, &inv.addrs, inv.command.clone(), inv.timeout) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Failure);
        }
    };
    match (&inv.command, result) {
        (ClientCommand::Set { .. }, ClientResult::Written { index }) => {
            println!("committed at index {index}");
        }
        (ClientCommand::Get, ClientResult::Value { value }) => print_value(&value),
        (ClientCommand::Log { .. }, ClientResult::Log { entries }) => {
            for row in &entries {
                match serde_json::to_string(row) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("error: cannot print the log: {e}");
                        return ExitCode::from(Exit::Failure);
                    }
                }
            }
        }
        (ClientCommand::Status, ClientResult::Status(status)) => {
            if let Err(code) = print_json(&status, "status") {
                return code;
            }
        }
        (ClientCommand::Metrics, ClientResult::Metrics(metrics)) => {
            if let Err(code) = print_json(&metrics, "metrics") {
                return code;
            }
        }
        (ClientCommand::Transfer { to }, ClientResult::Done) => {
            println!("leadership transferred to {to}");
        }
        (
            ClientCommand::AddMember { address },
            ClientResult::Done | ClientResult::Written { .. },
        ) => {
            println!("added {address} as a learner; it becomes a voter once it has caught up");
        }
        (ClientCommand::RemoveMember { id }, ClientResult::Done | ClientResult::Written { .. }) => {
            println!("removed {id}");
        }
        (_, ClientResult::Error { message }) => {
            eprintln!("error: the node refused: {message}");
            return ExitCode::from(Exit::Failure);
        }
        (_, other) => {
            eprintln!("error: unexpected answer from the cluster: {other:?}");
            return ExitCode::from(Exit::Failure);
        }
    }
    ExitCode::SUCCESS
}

/// Prints `value` as one line of JSON; `what` names it in the error.
fn print_json(value: &impl serde::Serialize, what: &str) -> Result<(), ExitCode> {
    match serde_json::to_string(value) {
        Ok(json) => {
            println!("{json}");
            Ok(())
        }
        Err(e) => {
            eprintln!("error: cannot print the {what}: {e}");
            Err(ExitCode::from(Exit::Failure))
        }
    }
}

/// The value as it is when stdout is a pipe or a file (it is data there);
/// with control characters escaped when stdout is a terminal, where they
/// would act on the screen.
fn print_value(value: &str) {
    use std::io::IsTerminal;
    if io::stdout().is_terminal() {
        crate::console::say(value);
    } else {
        println!("{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn commands_are_parsed() {
        assert_eq!(
            parse_command(&words("set hello  world")),
            Ok(ClientCommand::Set {
                value: "hello  world".into()
            })
        );
        assert_eq!(
            parse_command(&words("set -5")),
            Ok(ClientCommand::Set { value: "-5".into() })
        );
        assert_eq!(parse_command(&words("get")), Ok(ClientCommand::Get));
        assert_eq!(parse_command(&words("status")), Ok(ClientCommand::Status));
        assert_eq!(parse_command(&words("metrics")), Ok(ClientCommand::Metrics));
        assert_eq!(
            parse_command(&words("log")),
            Ok(ClientCommand::Log { count: 10 })
        );
        assert_eq!(
            parse_command(&words("log 3")),
            Ok(ClientCommand::Log { count: 3 })
        );
        for bad in ["log 0", "log x", "log 1 2"] {
            assert!(parse_command(&words(bad)).is_err(), "{bad}");
        }
        for bad in ["set", "get x", "status now", "delete", "SET x"] {
            assert!(parse_command(&words(bad)).is_err(), "{bad}");
        }
        assert!(parse_command(&[]).is_err());
    }

    #[test]
    fn timeouts_are_parsed() {
        assert_eq!(parse_timeout("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "abc", "", "NaN", "inf", "1e9"] {
            let e = parse_timeout(bad).expect_err(bad).0;
            assert!(e.contains("--timeout"), "{bad}: {e}");
        }
    }

    #[test]
    fn addresses_are_normalized_and_deduplicated() {
        let args = ClientArgs {
            timeout: "5".into(),
            cluster_key: None,
            addrs: "8000,127.0.0.1:8000,localhost:8001,10.0.0.1:9000".into(),
            command: words("get"),
        };
        let inv = parse_args(&args).expect("valid");
        assert_eq!(
            inv.addrs,
            ["127.0.0.1:8000", "127.0.0.1:8001", "10.0.0.1:9000"]
        );
        let bad = ClientArgs {
            addrs: "8000,,8001".into(),
            ..args
        };
        assert!(parse_args(&bad).is_err());
    }

    #[test]
    fn no_addresses_is_an_error() {
        let creds = Credentials::new(ClusterKey::generate().expect("random key"));
        assert_eq!(
            request(&creds, &[], ClientCommand::Get, DEFAULT_TIMEOUT),
            Err(ClientError::NoAddresses)
        );
    }

    #[test]
    fn the_error_names_the_addresses_and_the_deadline() {
        let e = ClientError::NoLeader {
            addrs: "127.0.0.1:8000,127.0.0.1:8001".into(),
            timeout: Duration::from_secs(5),
            last_error: "127.0.0.1:8001: connection refused (is a node running there?)".into(),
        };
        assert_eq!(
            e.to_string(),
            "no leader found among 127.0.0.1:8000,127.0.0.1:8001 within 5s: last error: 127.0.0.1:8001: connection refused (is a node running there?)"
        );
    }
}
