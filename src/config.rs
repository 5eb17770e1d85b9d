//! The node's command line: `raft <PORT> [--bind HOST] [--peers LIST] ...`,
//! parsed and checked into [`NodeOptions`].
//!
//! Naming rule (shared by every node, so they agree on each other's ids
//! without being told): a node on `127.0.0.1` (or `localhost`) is known by
//! its port, `8000`; any other node by `HOST:PORT`. An id depends only on
//! the address, so it is the same after a restart, which matters because the
//! id is in the durable state (`voted_for`).
//!
//! Every check is a plain function with a unit test; `main.rs` only hands
//! the strings over. An error is one line that names the bad value and what
//! to do instead.
//!
//! # The command line
//!
//! ```text
//! raft <PORT> [--peers LIST | --join ADDRS] [--bind HOST] [--data-dir DIR]
//!             [--election-timeout-ms MIN-MAX] [--heartbeat-ms MS] [--snapshot-entries N]
//!             [--cluster-key FILE] [--max-clients N] [--idle-timeout-ms MS]
//!             [--stop-when-stdin-closes]
//! ```
//!
//! - Without `--peers` the cluster is the original's: ports 8000, 8001 and 8002
//!   on 127.0.0.1, and `PORT` must be one of them.
//! - `--peers` names the *other* members, comma-separated, as `PORT` or
//!   `HOST:PORT`: any cluster size works (`raft 9000 --peers 9001,9002,9003,9004`
//!   for five nodes). `--peers none` runs a cluster of one.
//! - `--election-timeout-ms` (default `150-300`) and `--heartbeat-ms` (default
//!   `50`), each at most 60000 ms ([`MAX_TIMEOUT_MS`]). Time inside the core is
//!   counted in ticks of 10 ms (or the heartbeat, if shorter).
//! - `--data-dir` (default `raft-data/<id>`): where the node keeps its state
//!   (see [`storage`](crate::storage)).
//! - `--snapshot-entries N` (default 10000, at most 1,000,000,000): snapshot the
//!   state and compact the log every N applied entries.
//! - `--cluster-key FILE` (default: `cluster.key` beside the data directory,
//!   that is `raft-data/cluster.key`, created by the first node that finds
//!   none): the cluster's key file (see [`auth`](crate::transport::auth)). A
//!   node on another host gets a copy of the file (it must exist then; it is
//!   never created from this option).
//! - `--max-clients N` (default 4096): the most client connections served at
//!   once; peers have 128 slots of their own (see the limits in
//!   [`transport`](crate::transport)).
//! - `--idle-timeout-ms MS` (default 60000): close a connection after this long
//!   without a useful frame. (A hidden `--write-timeout-ms MS`, default 10000,
//!   sets how long an answer may wait for a client that does not read; tests
//!   shorten both.)
//! - `--stop-when-stdin-closes`: stop, as Ctrl+C would (a leader hands over
//!   first), when stdin closes. Without it the end of stdin (Ctrl+D) is only
//!   reported and the node goes on running. `raft demo` starts its nodes with
//!   it: it holds each node's stdin, and the kernel closes it when the demo
//!   exits, even by `kill -9` or a crash, so no node outlives the demo.
//! - `--join ADDRS`: start an empty node that asks the cluster at `ADDRS` to add
//!   it. It is added as a learner, copies the log (or a snapshot), and becomes a
//!   voter once it has caught up:
//!
//!   ```text
//!   $ raft 8003 --join 8000,8001,8002
//!   Node 8003 was added to the cluster as a learner
//!   Node 8003 membership now: voters 8000, 8001, 8002; learners 8003
//!   Node 8003 updated value to: hello world
//!   Node 8003 membership now: voters 8000, 8001, 8002, 8003; learners none
//!   Node 8003 is now a voter
//!   ```
//!
//! A bad port, a port in use, a duplicate peer, this node among its own peers:
//! one line on stderr saying what to change, and exit status 2 (1 for problems
//! found after the arguments were accepted, such as a port in use).

use crate::message::NodeId;
use crate::transport::{ConnectionLimits, MAX_CLIENT_CONNECTIONS};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

/// How the `raft` command ends, the same for a node, `client`, `bench` and
/// `demo`; success is `ExitCode::SUCCESS` (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The command started but failed (a node stopped on an error, no
    /// leader answered, a bench run could not finish).
    Failure = 1,
    /// A command-line mistake, as clap and BSD sysexits number it.
    Usage = 2,
    /// Stopped by Ctrl+C, as shells report a process killed by SIGINT.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The host a node binds to and peers are assumed on when none is given.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The cluster used when `--peers` is not given: three nodes on these ports
/// of the bind host, as in the original Python project.
pub const DEFAULT_CLUSTER_PORTS: [u16; 3] = [8000, 8001, 8002];

/// The word that, given to `--peers`, makes a cluster of one. An empty
/// `--peers ""` is refused instead: it is what an unset shell variable
/// (`--peers "$PEERS"`) produces, and a node that wrongly believes it is
/// alone elects itself and commits without the others: two leaders.
pub const NO_PEERS: &str = "none";

/// Default election timeout range (§5.2: "e.g., 150–300ms").
pub const DEFAULT_ELECTION_TIMEOUT_MS: (u64, u64) = (150, 300);

/// Default interval between a leader's heartbeats; well below the election
/// timeout so that followers do not start elections while a leader lives
/// (§5.6: broadcastTime ≪ electionTimeout).
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;

/// Upper bound for any timeout option: a typo like `1500000` should be an
/// error, not a cluster that takes half an hour to elect a leader.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// The most members a cluster may have. Each peer costs a writer thread and
/// a connection on every other node (see `transport::PEER_CONNECTION_SLOTS`), and
/// Raft clusters are small: 3, 5 or 7 nodes.
pub const MAX_CLUSTER_SIZE: usize = 64;

/// The most `--max-clients` may be: each client is a thread and a file
/// descriptor.
pub const MAX_CLIENTS_OPTION: usize = 65_536;

/// Where each node keeps its durable state unless `--data-dir` says
/// otherwise: `raft-data/<id>`.
pub const DEFAULT_DATA_ROOT: &str = "raft-data";

/// A node snapshots its state machine and compacts its log once this many
/// entries have been applied since the last snapshot (§7).
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 10_000;

/// The largest `--snapshot-entries`: a billion entries between snapshots
/// is already far more log than a node should replay at start-up; above
/// it is a typo (and `snapshot_index + snapshot_entries` must have room).
pub const MAX_SNAPSHOT_ENTRIES: u64 = 1_000_000_000;

/// Everything a node needs to start, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    /// This node's id: `8000` on 127.0.0.1/localhost, else `HOST:PORT`.
    pub id: NodeId,
    /// Where to listen, as `host:port` (`127.0.0.1:8000`).
    pub listen_addr: String,
    /// The *other* members: id -> `host:port`.
    pub peers: BTreeMap<NodeId, String>,
    /// The range the randomized election timeout is drawn from (§5.2).
    pub election_timeout_ms: (u64, u64),
    /// How often a leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// Where this node keeps its log and hard state.
    pub data_dir: PathBuf,
    /// Entries applied past the last snapshot that trigger a new one.
    pub snapshot_entries: u64,
    /// With `--join`: the existing cluster's addresses, to ask to add this
    /// node. Such a node starts with no members of its own (`peers` is
    /// empty) and learns the membership from the leader's log.
    pub join: Option<Vec<String>>,
    /// The cluster's key file: `--cluster-key`, or `cluster.key` beside
    /// the data directory (created there if absent).
    pub cluster_key: PathBuf,
    /// Whether the cluster key was given with `--cluster-key` (then it must
    /// exist; it is never created).
    pub cluster_key_given: bool,
    /// False only with the test-only `--insecure-no-auth`.
    pub authenticate: bool,
    /// Connection slots, timeouts and buffer budgets of the listener.
    pub limits: ConnectionLimits,
    /// `--stop-when-stdin-closes`: the end of stdin stops the node as
    /// Ctrl+C does, instead of being only reported.
    pub stop_when_stdin_closes: bool,
}

/// The node's options as typed, before any checking. `main.rs` parses the
/// command line into this with clap; [`NodeArgs::validate`] does the rest.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeArgs {
    /// The port this node listens on, for peers and clients alike.
    #[arg(value_name = "PORT")]
    pub port: String,

    /// The address to listen on, and the one other nodes use to reach this
    /// one (so not 0.0.0.0).
    #[arg(long, value_name = "HOST", default_value = DEFAULT_HOST)]
    pub bind: String,

    /// The OTHER members, comma-separated: PORT (meaning 127.0.0.1:PORT) or
    /// HOST:PORT; `none` for a cluster of one. Default: the cluster is
    /// ports 8000, 8001 and 8002.
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub peers: Option<String>,

    /// The range an election timeout is drawn from, MIN-MAX in milliseconds.
    #[arg(long, value_name = "MIN-MAX", default_value = "150-300")]
    pub election_timeout_ms: String,

    /// Interval between a leader's heartbeats, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "50")]
    pub heartbeat_ms: String,

    /// Directory for this node's durable state [default: raft-data/ID, like raft-data/8000].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Take a snapshot and compact the log every N applied entries.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SNAPSHOT_ENTRIES)]
    pub snapshot_entries: u64,

    /// Join an existing cluster: ask the nodes at ADDRS (PORT or HOST:PORT,
    /// comma-separated) to add this node, as a learner first, then as a
    /// voter once it has caught up.
    #[arg(long, value_name = "ADDRS", conflicts_with = "peers")]
    pub join: Option<String>,

    /// The cluster's key file, copied from the node that created it
    /// [default: cluster.key beside the data directory, like
    /// raft-data/cluster.key, created by the first node that finds none].
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,

    /// Test builds only: no cluster key, no authentication (plain JSON
    /// lines from anyone), to show what the key prevents.
    #[cfg(feature = "bug-switches")]
    #[arg(long, hide = true)]
    pub insecure_no_auth: bool,
    /// The most client connections served at once (peers have slots of
    /// their own).
    #[arg(long, value_name = "N", default_value_t = MAX_CLIENT_CONNECTIONS)]
    pub max_clients: usize,

    /// Close a connection after this many milliseconds without a useful
    /// frame (a client request, or a current peer message).
    #[arg(long, value_name = "MS", default_value = "60000")]
    pub idle_timeout_ms: String,

    /// Close a client's connection when an answer to it cannot be written
    /// for this many milliseconds (it does not read).
    #[arg(long, value_name = "MS", default_value = "10000", hide = true)]
    pub write_timeout_ms: String,

    /// Stop, as Ctrl+C would, when stdin closes (without it, the node goes
    /// on running). For a program that runs the node with a pipe to its
    /// stdin, like raft demo: the node stops when that program exits or
    /// dies.
    #[arg(long)]
    pub stop_when_stdin_closes: bool,
}

/// A command-line mistake: one line, meant for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl NodeArgs {
    /// Checks every option and derives the node's id, its peers' ids and
    /// its data directory.
    pub fn validate(&self) -> Result<NodeOptions, ConfigError> {
        let port = parse_port(&self.port)?;
        let host = parse_bind_host(&self.bind)?;
        let id = node_id(&host, port);
        let listen_addr = address(&host, port);

        let join = match &self.join {
            Some(list) => Some(parse_join(list, &id)?),
            None => None,
        };
        let peers = match (&self.peers, &join) {
            (_, Some(_)) => BTreeMap::new(),
            (Some(list), None) => parse_peers(list, &id)?,
            (None, None) => default_peers(&host, port)?,
        };
        if !(1..=MAX_SNAPSHOT_ENTRIES).contains(&self.snapshot_entries) {
            return err(format!(
                "invalid --snapshot-entries {}: expected 1 to {MAX_SNAPSHOT_ENTRIES} (the default is {DEFAULT_SNAPSHOT_ENTRIES})",
                self.snapshot_entries
            ));
        }

        let election_timeout_ms = parse_election_timeout(&self.election_timeout_ms)?;
        let heartbeat_ms = parse_heartbeat(&self.heartbeat_ms)?;
        check_timing(election_timeout_ms, heartbeat_ms)?;

        let data_dir = match &self.data_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return err("--data-dir is empty: give a directory, or leave the option out");
            }
            Some(dir) => dir.clone(),
            None => default_data_dir(&id),
        };

        let cluster_key = match &self.cluster_key {
            Some(file) if file.as_os_str().is_empty() => {
                return err(
                    "--cluster-key is empty: give the cluster's key file, or leave the option out",
                );
            }
            Some(file) => file.clone(),
            None => crate::transport::auth::default_key_path(&data_dir),
        };
        #[cfg(feature = "bug-switches")]
        let authenticate = !self.insecure_no_auth;
        #[cfg(not(feature = "bug-switches"))]
        let authenticate = true;

        Ok(NodeOptions {
            id,
            listen_addr,
            peers,
            election_timeout_ms,
            heartbeat_ms,
            data_dir,
            snapshot_entries: self.snapshot_entries,
            join,
            cluster_key,
            cluster_key_given: self.cluster_key.is_some(),
            authenticate,
            limits: self.limits()?,
            stop_when_stdin_closes: self.stop_when_stdin_closes,
        })
    }

    fn limits(&self) -> Result<ConnectionLimits, ConfigError> {
        if !(1..=MAX_CLIENTS_OPTION).contains(&self.max_clients) {
            return err(format!(
                "invalid --max-clients {}: expected 1 to {MAX_CLIENTS_OPTION} (the default is {MAX_CLIENT_CONNECTIONS})",
                self.max_clients
            ));
        }
        let ms = |s: &str, what: &str| parse_ms(s, what).map(std::time::Duration::from_millis);
        Ok(ConnectionLimits {
            max_clients: self.max_clients,
            idle_timeout: ms(&self.idle_timeout_ms, "--idle-timeout-ms")?,
            write_timeout: ms(&self.write_timeout_ms, "--write-timeout-ms")?,
            ..ConnectionLimits::default()
        })
    }
}

/// `--join ADDRS`: the addresses of the cluster to join, not this node's.
pub fn parse_join(list: &str, self_id: &NodeId) -> Result<Vec<String>, ConfigError> {
    let mut addrs = Vec::new();
    for part in list.split(',').filter(|p| !p.trim().is_empty()) {
        let (id, addr) = parse_address(part)?;
        if id == *self_id {
            return err(format!(
                "--join names this node itself ({id}): list the nodes of the cluster to join"
            ));
        }
        addrs.push(addr);
    }
    if addrs.is_empty() {
        return err(
            "--join is empty: list the nodes of the cluster to join, like --join 8000,8001",
        );
    }
    Ok(addrs)
}

/// A TCP port, 1..=65535, digits only.
pub fn parse_port(s: &str) -> Result<u16, ConfigError> {
    let bad = || {
        err(format!(
            "invalid port '{s}': expected a number from 1 to 65535"
        ))
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return bad();
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => bad(),
        Ok(port) => Ok(port),
    }
}

/// True for the hosts whose nodes are named by their port alone.
fn is_loopback_name(host: &str) -> bool {
    host == "127.0.0.1" || host == "localhost"
}

/// Checks a host name or address and puts it in the one spelling ids are
/// made from: lower case, `localhost` as `127.0.0.1` (it may resolve to
/// `::1` first, where no node listens), an IPv6 address in brackets.
pub fn normalize_host(host: &str) -> Result<String, ConfigError> {
    if host.is_empty() {
        return err("empty host name: expected a name or address like 127.0.0.1");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == ',' || c == '/')
    {
        return err(format!(
            "invalid host '{host}': expected a name or address like 127.0.0.1"
        ));
    }
    let host = host.to_ascii_lowercase();
    if host == "localhost" {
        return Ok(DEFAULT_HOST.to_string());
    }
    if host.starts_with('[') {
        if !host.ends_with(']') || host[1..host.len() - 1].contains(['[', ']']) {
            return err(format!(
                "invalid host '{host}': expected an IPv6 address like [::1]"
            ));
        }
        return Ok(host);
    }
    if host.contains(':') {
        return Ok(format!("[{host}]"));
    }
    Ok(host)
}

/// The `--bind` host. Refuses wildcard addresses: the bind address is also
/// this node's name, and peers cannot name a node `0.0.0.0`.
pub fn parse_bind_host(s: &str) -> Result<String, ConfigError> {
    let host = normalize_host(s)?;
    if host == "0.0.0.0" || host == "[::]" {
        return err(format!(
            "cannot use --bind {s}: the bind address is also the name other nodes know this one by; give the address they reach it at, like 10.0.0.5"
        ));
    }
    Ok(host)
}

/// The id of the node at `host:port` (host already normalized).
pub fn node_id(host: &str, port: u16) -> NodeId {
    if is_loopback_name(host) {
        NodeId::new(port.to_string())
    } else {
        NodeId::new(format!("{host}:{port}"))
    }
}

/// `host:port` (host already normalized).
pub fn address(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// A comma-separated list of addresses, as `raft client` and
/// `raft bench --cluster` take it: each normalized (see [`parse_address`]),
/// in the order given, without repeats.
pub fn parse_address_list(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut addrs = Vec::new();
    for item in list.split(',') {
        let (_, addr) = parse_address(item)?;
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    Ok(addrs)
}

/// One address as a person types it: `PORT` (on 127.0.0.1) or
/// `HOST:PORT`. Returns the node's id and its normalized `host:port`.
pub fn parse_address(s: &str) -> Result<(NodeId, String), ConfigError> {
    let s = s.trim();
    if s.is_empty() {
        return err("empty address: expected PORT or HOST:PORT");
    }
    let (host, port) = match s.rsplit_once(':') {
        None => (DEFAULT_HOST.to_string(), s),
        Some((host, port)) => {
            if host.contains(':') && !host.starts_with('[') {
                return err(format!(
                    "invalid address '{s}': write an IPv6 address in brackets, like [::1]:8000"
                ));
            }
            (
                normalize_host(host)
                    .map_err(|e| ConfigError(format!("invalid address '{s}': {e}")))?,
                port,
            )
        }
    };
    let port = parse_port(port).map_err(|e| ConfigError(format!("invalid address '{s}': {e}")))?;
    Ok((node_id(&host, port), address(&host, port)))
}

/// The `--peers` list: the OTHER members, comma-separated, or `none`.
pub fn parse_peers(list: &str, self_id: &NodeId) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let trimmed = list.trim();
    if trimmed.eq_ignore_ascii_case(NO_PEERS) {
        return Ok(BTreeMap::new());
    }
    if trimmed.is_empty() {
        return err(format!(
            "--peers is empty: list the other members (like --peers 8001,8002), or write --peers {NO_PEERS} for a cluster of one"
        ));
    }
    let mut peers = BTreeMap::new();
    for item in trimmed.split(',') {
        if item.trim().is_empty() {
            return err(format!(
                "--peers '{list}' has an empty entry: remove the extra comma"
            ));
        }
        let (id, addr) = parse_address(item).map_err(|e| ConfigError(format!("--peers: {e}")))?;
        if &id == self_id {
            return err(format!(
                "--peers names this node itself ({id}): list only the OTHER members"
            ));
        }
        if peers.insert(id.clone(), addr).is_some() {
            return err(format!("--peers names {id} twice: list each member once"));
        }
    }
    if peers.len() + 1 > MAX_CLUSTER_SIZE {
        return err(format!(
            "--peers makes a cluster of {} nodes; at most {MAX_CLUSTER_SIZE} are supported",
            peers.len() + 1
        ));
    }
    Ok(peers)
}

/// The peers of the default cluster (ports 8000-8002 on `host`), for a node
/// on `port`, which must be one of them.
pub fn default_peers(host: &str, port: u16) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    if !DEFAULT_CLUSTER_PORTS.contains(&port) {
        let ports: Vec<String> = DEFAULT_CLUSTER_PORTS.iter().map(u16::to_string).collect();
        return err(format!(
            "port {port} is not in the default cluster ({}); name the other members with --peers, like --peers 9001,9002",
            ports.join(", ")
        ));
    }
    Ok(DEFAULT_CLUSTER_PORTS
        .iter()
        .filter(|&&p| p != port)
        .map(|&p| (node_id(host, p), address(host, p)))
        .collect())
}

/// A number of milliseconds for option `what`, 1..=[`MAX_TIMEOUT_MS`].
fn parse_ms(s: &str, what: &str) -> Result<u64, ConfigError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!(
            "invalid {what} '{s}': expected a whole number of milliseconds"
        ));
    }
    match s.parse::<u64>() {
        Ok(0) => err(format!(
            "invalid {what} '0': must be at least 1 millisecond"
        )),
        Ok(ms) if ms <= MAX_TIMEOUT_MS => Ok(ms),
        _ => err(format!(
            "invalid {what} '{s}': at most {MAX_TIMEOUT_MS} milliseconds"
        )),
    }
}

/// `--election-timeout-ms MIN-MAX`, with MIN < MAX: the randomness of the
/// timeout is what keeps split votes rare (§5.2), so an empty range is
/// refused.
pub fn parse_election_timeout(s: &str) -> Result<(u64, u64), ConfigError> {
    let Some((min, max)) = s.split_once('-') else {
        return err(format!(
            "invalid --election-timeout-ms '{s}': expected MIN-MAX in milliseconds, like 150-300"
        ));
    };
    let min = parse_ms(min, "--election-timeout-ms minimum")?;
    let max = parse_ms(max, "--election-timeout-ms maximum")?;
    if min >= max {
        return err(format!(
            "invalid --election-timeout-ms '{s}': the minimum must be below the maximum, so that nodes time out at different moments (like 150-300)"
        ));
    }
    Ok((min, max))
}

/// `--heartbeat-ms MS`.
pub fn parse_heartbeat(s: &str) -> Result<u64, ConfigError> {
    parse_ms(s, "--heartbeat-ms")
}

/// A leader must be heard from before any follower's election timer can
/// fire (§5.6), so the heartbeat must be shorter than the smallest timeout.
pub fn check_timing(election_timeout_ms: (u64, u64), heartbeat_ms: u64) -> Result<(), ConfigError> {
    let (min, _) = election_timeout_ms;
    if min <= heartbeat_ms {
        return err(format!(
            "--heartbeat-ms {heartbeat_ms} is not below the minimum election timeout {min}: followers would start elections while the leader is alive; use a heartbeat several times smaller (like 50 with 150-300)"
        ));
    }
    Ok(())
}

/// `raft-data/<id>`, with characters that are awkward in a file name (the
/// `:` and brackets of `HOST:PORT` ids) replaced by `_`.
pub fn default_data_dir(id: &NodeId) -> PathBuf {
    let name: String = id
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(DEFAULT_DATA_ROOT).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(port: &str) -> NodeArgs {
        NodeArgs {
            port: port.to_string(),
            bind: DEFAULT_HOST.to_string(),
            peers: None,
            election_timeout_ms: "150-300".to_string(),
            heartbeat_ms: "50".to_string(),
            data_dir: None,
            snapshot_entries: DEFAULT_SNAPSHOT_ENTRIES,
            join: None,
            cluster_key: None,
            #[cfg(feature = "bug-switches")]
            insecure_no_auth: false,
            max_clients: MAX_CLIENT_CONNECTIONS,
            idle_timeout_ms: "60000".to_string(),
            write_timeout_ms: "10000".to_string(),
            stop_when_stdin_closes: false,
        }
    }

    fn ids(peers: &BTreeMap<NodeId, String>) -> Vec<&str> {
        peers.keys().map(NodeId::as_str).collect()
    }

    fn error_of(a: NodeArgs) -> String {
        a.validate().expect_err("should be refused").0
    }

    #[test]
    fn defaults_make_the_three_node_cluster() {
        let opts = args("8001").validate().expect("valid");
        assert_eq!(opts.id, NodeId::new("8001"));
        assert_eq!(opts.listen_addr, "127.0.0.1:8001");
        assert_eq!(ids(&opts.peers), ["8000", "8002"]);
        assert_eq!(opts.peers[&NodeId::new("8000")], "127.0.0.1:8000");
        assert_eq!(opts.election_timeout_ms, (150, 300));
        assert_eq!(opts.heartbeat_ms, 50);
        assert_eq!(opts.data_dir, PathBuf::from("raft-data/8001"));
        assert_eq!(opts.cluster_key, PathBuf::from("raft-data/cluster.key"));
        assert!(opts.authenticate && !opts.cluster_key_given);
    }

    #[test]
    fn a_port_outside_the_default_cluster_needs_peers() {
        let e = error_of(args("9000"));
        assert!(
            e.contains("not in the default cluster") && e.contains("--peers"),
            "{e}"
        );
    }

    #[test]
    fn bad_ports_are_refused() {
        for bad in [
            "0",
            "65536",
            "99999999999",
            "abc",
            "",
            "-1",
            "+80",
            "80.0",
            " 80",
        ] {
            let e = parse_port(bad).expect_err(bad).0;
            assert!(
                e.contains("invalid port") && e.contains("1 to 65535"),
                "{bad}: {e}"
            );
        }
        assert_eq!(parse_port("65535"), Ok(65535));
        assert_eq!(parse_port("08000"), Ok(8000));
    }

    #[test]
    fn ids_depend_only_on_the_address() {
        assert_eq!(parse_address("8001").expect("port").0, NodeId::new("8001"));
        assert_eq!(
            parse_address("127.0.0.1:8001").expect("loopback"),
            (NodeId::new("8001"), "127.0.0.1:8001".to_string())
        );
        assert_eq!(
            parse_address("LocalHost:08001").expect("localhost"),
            (NodeId::new("8001"), "127.0.0.1:8001".to_string())
        );
        assert_eq!(
            parse_address("Node-A.example:9000").expect("name"),
            (
                NodeId::new("node-a.example:9000"),
                "node-a.example:9000".to_string()
            )
        );
        assert_eq!(
            parse_address("[::1]:9000").expect("v6"),
            (NodeId::new("[::1]:9000"), "[::1]:9000".to_string())
        );
        for bad in [":8000", "host:", "host:0", "::1:9000", "a b:80", "[::1:80"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_are_parsed() {
        let me = NodeId::new("9000");
        let peers = parse_peers("9001, 10.0.0.2:9002,localhost:9003", &me).expect("valid");
        assert_eq!(ids(&peers), ["10.0.0.2:9002", "9001", "9003"]);
        assert_eq!(peers[&NodeId::new("9003")], "127.0.0.1:9003");
        // Even-sized clusters are allowed (just not useful).
        assert_eq!(parse_peers("9001", &me).expect("two").len(), 1);
    }

    #[test]
    fn a_cluster_of_one_is_spelled_none() {
        let me = NodeId::new("9000");
        assert!(parse_peers("none", &me).expect("none").is_empty());
        let mut a = args("9000");
        a.peers = Some("none".into());
        assert!(a.validate().expect("alone").peers.is_empty());
        let e = parse_peers("", &me).expect_err("empty").0;
        assert!(e.contains("--peers none"), "{e}");
        assert!(parse_peers("  ", &me).is_err());
    }

    #[test]
    fn bad_peer_lists_are_refused() {
        let me = NodeId::new("9000");
        let cases = [
            ("9001,9001", "twice"),
            ("9001,127.0.0.1:9001", "twice"),
            ("9001,localhost:9001", "twice"),
            ("9001,9000", "itself"),
            ("localhost:9000", "itself"),
            ("9001,,9002", "empty entry"),
            ("9001,", "empty entry"),
            ("9001,70000", "invalid port"),
            ("9001,x:y", "invalid port"),
        ];
        for (list, expect) in cases {
            let e = parse_peers(list, &me).expect_err(list).0;
            assert!(e.contains(expect), "{list}: {e}");
        }
        let too_many: Vec<String> = (1..=MAX_CLUSTER_SIZE)
            .map(|p| (10_000 + p).to_string())
            .collect();
        let e = parse_peers(&too_many.join(","), &me)
            .expect_err("too many")
            .0;
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn own_address_among_peers_with_a_bind_host() {
        let mut a = args("9000");
        a.bind = "10.0.0.1".into();
        a.peers = Some("10.0.0.2:9000,10.0.0.1:9000".into());
        let e = error_of(a.clone());
        assert!(e.contains("itself (10.0.0.1:9000)"), "{e}");
        a.peers = Some("10.0.0.2:9000,9001".into());
        let opts = a.validate().expect("valid");
        assert_eq!(opts.id, NodeId::new("10.0.0.1:9000"));
        assert_eq!(opts.listen_addr, "10.0.0.1:9000");
        assert_eq!(opts.data_dir, PathBuf::from("raft-data/10.0.0.1_9000"));
        // A peer given as a bare port is on 127.0.0.1, named by its port.
        assert_eq!(ids(&opts.peers), ["10.0.0.2:9000", "9001"]);
    }

    #[test]
    fn default_cluster_follows_the_bind_host() {
        let mut a = args("8000");
        a.bind = "localhost".into();
        assert_eq!(a.validate().expect("valid").id, NodeId::new("8000"));
        a.bind = "10.0.0.1".into();
        let opts = a.validate().expect("valid");
        assert_eq!(ids(&opts.peers), ["10.0.0.1:8001", "10.0.0.1:8002"]);
    }

    #[test]
    fn wildcard_bind_is_refused() {
        for host in ["0.0.0.0", "::", "[::]"] {
            let mut a = args("8000");
            a.bind = host.into();
            let e = error_of(a);
            assert!(e.contains("--bind"), "{host}: {e}");
        }
        let mut a = args("8000");
        a.bind = String::new();
        assert!(error_of(a).contains("empty host"));
    }

    #[test]
    fn election_timeout_ranges() {
        assert_eq!(parse_election_timeout("150-300"), Ok((150, 300)));
        assert_eq!(parse_election_timeout(" 10 - 20 "), Ok((10, 20)));
        for bad in [
            "150",
            "150-",
            "-300",
            "a-b",
            "150-300-450",
            "1.5-3",
            "",
            "0-300",
        ] {
            let e = parse_election_timeout(bad).expect_err(bad).0;
            assert!(e.contains("--election-timeout-ms"), "{bad}: {e}");
        }
        for bad in ["300-150", "200-200"] {
            let e = parse_election_timeout(bad).expect_err(bad).0;
            assert!(
                e.contains("minimum must be below the maximum"),
                "{bad}: {e}"
            );
        }
        let e = parse_election_timeout("150-999999").expect_err("huge").0;
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn heartbeat_must_be_positive_and_below_the_election_timeout() {
        assert_eq!(parse_heartbeat("50"), Ok(50));
        for bad in ["0", "", "-5", "fast", "70000"] {
            let e = parse_heartbeat(bad).expect_err(bad).0;
            assert!(e.contains("--heartbeat-ms"), "{bad}: {e}");
        }
        assert!(check_timing((150, 300), 149).is_ok());
        for hb in [150, 200] {
            let e = check_timing((150, 300), hb).expect_err("too slow").0;
            assert!(e.contains("not below the minimum election timeout"), "{e}");
        }
        let mut a = args("8000");
        a.heartbeat_ms = "150".into();
        assert!(error_of(a).contains("--heartbeat-ms 150"));
    }

    #[test]
    fn clap_defaults_match_the_named_constants() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            node: NodeArgs,
        }
        let cli = Cli::try_parse_from(["raft", "8000"]).expect("parses");
        let opts = cli.node.validate().expect("valid");
        assert_eq!(opts.election_timeout_ms, DEFAULT_ELECTION_TIMEOUT_MS);
        assert_eq!(opts.heartbeat_ms, DEFAULT_HEARTBEAT_MS);
        assert_eq!(opts.listen_addr, format!("{DEFAULT_HOST}:8000"));
        assert_eq!(opts.limits, ConnectionLimits::default());
    }

    #[test]
    fn connection_limits_come_from_their_options() {
        let mut a = args("8000");
        a.max_clients = 16;
        a.idle_timeout_ms = "1500".into();
        a.write_timeout_ms = "700".into();
        let limits = a.validate().expect("valid").limits;
        assert_eq!(limits.max_clients, 16);
        assert_eq!(limits.idle_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(limits.write_timeout, std::time::Duration::from_millis(700));
        for bad in [0, MAX_CLIENTS_OPTION + 1] {
            let mut a = args("8000");
            a.max_clients = bad;
            assert!(error_of(a).contains("--max-clients"), "{bad}");
        }
        let mut a = args("8000");
        a.idle_timeout_ms = "0".into();
        assert!(error_of(a).contains("--idle-timeout-ms"));
    }

    #[test]
    fn snapshot_entries_have_a_range() {
        for bad in [0, MAX_SNAPSHOT_ENTRIES + 1, u64::MAX] {
            let mut a = args("8000");
            a.snapshot_entries = bad;
            let e = error_of(a);
            assert!(
                e.contains("--snapshot-entries") && e.contains("1 to 1000000000"),
                "{bad}: {e}"
            );
        }
        let mut a = args("8000");
        a.snapshot_entries = MAX_SNAPSHOT_ENTRIES;
        assert!(a.validate().is_ok());
    }

    #[test]
    fn data_dir_is_taken_as_given() {
        let mut a = args("8000");
        a.data_dir = Some(PathBuf::from("/var/lib/raft"));
        assert_eq!(
            a.validate().expect("valid").data_dir,
            PathBuf::from("/var/lib/raft")
        );
        a.data_dir = Some(PathBuf::new());
        assert!(error_of(a).contains("--data-dir"));
    }
}
