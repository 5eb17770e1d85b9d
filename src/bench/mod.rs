//! `raft bench`: how fast the cluster commits, and how long it is
//! unavailable when its leader dies.
//!
//! ```text
//! raft bench                                  # 3 local nodes, 64 clients, 16-byte values, 10 s
//! raft bench --clients 1                      # latency, against this machine's floor
//! raft bench --clients 64 --value-size 1024
//! raft bench --reads 0.5 --clients 16         # half the requests are linearizable gets
//! raft bench --failover 10                    # then 10 kill -9 and 10 Ctrl+C of the leader
//! raft bench --cluster 8000,8001,8002         # an existing cluster instead
//! raft bench --json                           # the same figures as one JSON object
//! ```
//!
//! A run, in order:
//! 1. **Floor** (`floor.rs`): the fsync latency of the disk the nodes write to
//!    and a loopback TCP round trip, measured now, on this machine.
//! 2. **Cluster** (`cluster.rs`): start the nodes (the real binary, fsync on,
//!    default timeouts, a temporary data directory) and wait for a leader.
//! 3. **Load** (`load.rs`): C client threads, each with a persistent
//!    connection to the leader, one request at a time; a warm-up whose
//!    figures are thrown away, then the measured window. The nodes' own
//!    counters (fsyncs, bytes and messages sent, from `metrics`) and, for
//!    local nodes, their CPU time and peak memory from `/proc`, are read
//!    at both ends of the window.
//! 4. **Failover** (`failover.rs`), if asked: stop the leader, time the gap
//!    to the next committed write, restart, repeat.
//! 5. **Report** (`report.rs`): a table, or one JSON object.
//!
//! It starts the nodes itself (this binary, on free loopback ports, fsync on,
//! default timeouts, data in a temporary directory it removes afterwards, also
//! after Ctrl+C), measures this machine's floor first (the median fsync latency
//! of that directory's disk, appending to a file, and a loopback TCP round trip;
//! and, as a stricter second floor, the fsync of a write into reserved space,
//! which is what the log does), waits for a leader, warms up for `--warmup`
//! seconds (default 1), then runs `--clients` connections, each with one
//! request in flight, for `--seconds`. Progress goes to stderr once a second;
//! the table (or `--json`) to stdout: committed writes/s and latency
//! percentiles, fsyncs, bytes and messages sent per committed entry (from the
//! counters `raft client ADDRS metrics` shows), CPU time, peak memory and threads per node (from
//! `/proc`, so Linux only; "n/a" with `--cluster`; threads when the measured
//! window starts, every client connected), and each node's longest sync since
//! it started (`max sync ms`: how long its disk held up its loop at worst). The
//! `bench` row is the bench's own clients, which share the machine. With
//! `--failover N` the time from stopping the leader to the next committed write
//! (of a write sent after the stop) is measured N times for each of `kill -9`
//! and Ctrl+C, restarting the node in between. Exit status: 0, 1 if the run
//! failed, 2 on a usage error, 130 after Ctrl+C.
//!
//! The bench shares the machine with the nodes it measures; on a 2-core
//! machine its own CPU time (reported as the `bench` row) is CPU the nodes
//! did not get. Tests never assert on these figures.
//!
//! # Measurements
//!
//! All measured on the development machine (2 cores, 24 GiB, an ext4 disk
//! whose fsync takes 0.10–0.25 ms when the machine is quiet), in a release build,
//! 3 nodes on loopback, fsync on, default timeouts, while the machine was
//! otherwise idle. They vary by 10–20% from run to run; on a busy machine they
//! are worse.
//!
//! ## Throughput and latency (`raft bench`)
//!
//! One run of each (`cargo build --release`, then `target/release/raft bench`
//! with the flags shown and `--seconds 10`); repeated runs vary by 5–10%.
//!
//! | command | writes/s | p50 ms | p90 ms | p99 ms | fsyncs per entry (cluster) | node CPU per entry |
//! | --- | ---: | ---: | ---: | ---: | ---: | ---: |
//! | `raft bench --clients 1` | 3,135 | 0.31 | 0.37 | 0.47 | 3.00 | 288 µs |
//! | `raft bench --clients 32` | 27,436 | 1.12 | 1.38 | 1.95 | 0.26 | 41 µs |
//! | `raft bench --clients 64` (16-byte values) | 36,213 | 1.68 | 2.08 | 4.80 | 0.13 | 33 µs |
//! | `raft bench --clients 64 --value-size 1024` | 24,530 | 2.40 | 2.98 | 6.59 | 0.14 | 46 µs |
//! | `raft bench --clients 16 --reads 0.5` | 9,864 writes + 9,864 reads | 0.80 | 1.05 | 1.31 | 0.92 | – |
//! | `raft bench --clients 16 --reads 1` | 45,494 reads | 0.34 | 0.43 | 0.53 | – | – |
//! | `raft bench --clients 16 --reads 0` | 16,887 | 0.92 | 1.20 | 1.53 | 0.54 | 65 µs |
//!
//! Many clients (one connection each, one request in flight per connection,
//! 16-byte values; `--seconds 10`). Leader RSS is its peak, leader threads its
//! count when the measured window starts:
//!
//! | command | writes/s | p99 ms | leader RSS | leader threads |
//! | --- | ---: | ---: | ---: | ---: |
//! | `raft bench --clients 256` | 24,043 | 19.2 | 16.0 MiB | 264 |
//! | `raft bench --clients 1024` | 22,143 | 63.5 | 31.0 MiB | 1,032 |
//!
//! (Both with the cluster key on, `--seconds 6`, one run each, 0 errors. A
//! build from before the connection limits refused connections past 256 and
//! its 256-client run failed. The 1,024-client p99 is mostly queueing: 1,024
//! requests wait for one leader.)
//!
//! The table above was measured before every connection was authenticated and
//! limited. The same day, one build against the other, alternating, `--seconds 6`:
//! 64 clients, seven runs each, 20,619–25,833 writes/s before (median 25,331) and
//! 18,934–25,667 after (median 22,945), node CPU per entry median 47 µs before and
//! 52 µs after; 1 client, two runs each, p50 0.37–0.41 ms before, 0.39–0.43 ms
//! after. Both builds are bimodal from run to run (a fast and a slow mode, as
//! the scheduler places the threads), so the medians say more than any pair.
//! In a profile of a 64-client run the MAC itself (SHA-256, hex, seal and open)
//! is under 2% of the machine's samples.
//!
//! What bounds each measurement:
//!
//! - **One client** (p50 0.28–0.31 ms in 20 of 22 runs, 0.34–0.35 in two). The floor is one fsync
//!   (0.10–0.15 ms, appending) plus one loopback round trip, and the round trip
//!   the probe measures has two modes: 40–70 µs when its two threads run on
//!   different cores, 12–13 µs when they share one. So the p50 is 1.4–1.95 times
//!   the floor in the first case and 1.8–2.5 times in the second; against the
//!   stricter floor (the fsync of a write into reserved space, 0.07–0.10 ms,
//!   which is what the log does) it is 1.9–3.6 times. The rest is thread
//!   wake-ups: a write is handed between threads six times on the nodes (the
//!   leader's connection reader to its state-machine thread, then a follower's
//!   reader and state-machine thread, then the leader's reader and
//!   state-machine thread again), and on this 2-core VM a wake-up on the other
//!   core costs 20–40 µs. The follower's fsync also runs while the two other
//!   nodes fsync on the same disk, which makes it 20–40 µs slower than alone.
//! - **64 clients**: the CPU. The leader's process uses 82–89% of a core, the
//!   followers 17–18% each, and the bench's own 64 clients 35%; the machine is
//!   about 85% busy. The leader's state-machine thread alone uses about 57% of
//!   a core; a `perf` profile of it shows 53% of its samples in socket sends
//!   (on loopback a send also runs the receiving side's TCP processing and
//!   wake-up), 15% in waking other threads and 10% in fsync; encoding JSON
//!   is under 2%. Group commit
//!   makes one fsync serve about 25 entries on each node, and each follower
//!   gets one AppendEntries per turn of the leader's loop (0.07 messages per
//!   entry), not one per entry.
//! - **The disk does not hold up the loop**: `raft bench` shows each node's
//!   longest sync (writes and fsync) since it started; under 64 clients it is
//!   4–7 ms, against a 50 ms heartbeat and a 150 ms election timeout.
//! - Reads: ReadIndex reads (no log entry, one heartbeat round shared by all
//!   reads waiting at that moment) run at 45,500/s with 16 clients. A read
//!   through the log costs what a write costs (an entry, its replication and
//!   its fsyncs), so the write figure, 16,900/s, stands for it: ReadIndex is 2.7
//!   times faster.
//! - Memory and disk stay flat under load: snapshots every 10,000 entries keep
//!   the log short. After 899,856 writes in 30 s (`raft bench --cluster
//!   127.0.0.1:8200,127.0.0.1:8201,127.0.0.1:8202 --clients 64 --seconds 30
//!   --warmup 0` against three release nodes started by hand) each node used
//!   8.5–10.4 MiB of memory (peak) and about 600 KiB of disk (the log since the
//!   last snapshot, in a file with up to 1 MiB reserved ahead). Earlier, with
//!   the previous build: restarting a node took 6 ms to its "recovered" line,
//!   and a node that missed about 150,000 entries caught up in 480 ms, with one
//!   InstallSnapshot.
//! - Idle cost: an idle 3-node cluster uses 0.40–0.70% of a core per node (the
//!   leader most: it sends 20 heartbeats a second to each follower; every node
//!   wakes 100 times a second for its tick). Measured from `/proc/<pid>/stat`
//!   over 20 s of three release nodes started by hand.
//!
//! What moved these measurements (same machine, same day, two runs each):
//!
//! | build | 1 client p50 | 64 clients writes/s | node CPU per entry (64 clients) |
//! | --- | ---: | ---: | ---: |
//! | before this work (commit `bd9780b`) | 0.36–0.39 ms | 25,523–31,247 | 40 µs |
//! | + the state-machine thread writes to sockets itself | 0.32–0.33 ms | 34,787–36,232 | 32 µs |
//! | + space reserved ahead of the log | 0.28–0.29 ms | 36,061–37,375 | 31 µs |
//!
//! Tried and not kept: writing the leader's own log on a disk thread, so its
//! state-machine thread handles acknowledgements during its fsync (the second
//! half of dissertation §10.2.1). The 1-client p50 stayed at 0.29–0.30 ms (the
//! three fsyncs finish at about the same time, so nothing waits less) and 64
//! clients fell to 34,000–34,400 writes/s (a thread hop per batch, and commits
//! arriving at more separate moments, so more AppendEntries rounds). With the
//! longest sync at 4–7 ms, the disk does not delay ticks here either, so the
//! simpler synchronous write stays.
//!
//! ## Elections and failover
//!
//! | what | median | p99 / max | command |
//! | --- | ---: | ---: | --- |
//! | start of 3 nodes → first leader | 177–187 ms | 236–238 ms max (20 runs, two series) | `cargo test --release --test cluster -- --ignored --nocapture measure` |
//! | kill -9 of the leader → next committed write | 171–195 ms | 275–314 ms (two runs of 10) | `raft bench --clients 4 --seconds 2 --failover 10` |
//! | Ctrl+C of the leader (leadership transfer) → next committed write | 1.6–2.2 ms | 2.9–3.4 ms (two runs of 10) | `raft bench --clients 4 --seconds 2 --failover 10` |
//! | leader removes itself (`remove <its id>`): its step-down → another node elected | 0.8 ms | 1.1 ms (10 runs; 211 ms median without the hand-over) | `cargo test --release --test membership -- --ignored --nocapture measure` |
//!
//! A kill -9 costs one election timeout (150–300 ms) plus a PreVote and a vote
//! round; a Ctrl+C costs one round of TimeoutNow and votes, since the old leader
//! hands over before it exits.
//!
//! ## Durability
//!
//! - fsyncs per committed entry, counting all three nodes: 3.0 with 1 client
//!   (each node syncs each entry), 0.26 with 32 clients and 0.13 with 64
//!   (`raft bench --clients 1`, `--clients 32`): group commit.
//! - Recovering a log of 100,000 entries: 25–55 ms
//!   (`cargo test --release --test storage -- --ignored --nocapture`).

mod cluster;
mod failover;
mod floor;
mod histogram;
mod load;
mod procstat;
mod report;

use cluster::{wait_for_leader, LocalCluster, Quorum, WorkDir};
use load::{ClientPlan, ClientReport, LoadShared, PHASE_DONE, PHASE_MEASURE};
use procstat::ProcSample;
use raft::config::{self, ConfigError, Exit};
use raft::message::Status;
use raft::metrics::Metrics;
use raft::transport::auth::KEY_FILE_NAME;
use raft::transport::{ClusterKey, Credentials};
use report::Report;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The most local nodes: each is a process on this machine, and Raft
/// clusters are 3, 5 or 7 nodes.
pub const MAX_LOCAL_NODES: usize = 9;

/// The most clients. A node serves at most
/// `transport::MAX_CLIENT_CONNECTIONS` clients; the rest of them are left for
/// `status` polls.
pub const MAX_CLIENTS: usize = raft::transport::MAX_CLIENT_CONNECTIONS - CONNECTION_HEADROOM;
const CONNECTION_HEADROOM: usize = 64;

/// The largest `--value-size`. A full AppendEntries carries
/// `core::MAX_ENTRIES_PER_APPEND` entries and must stay a line the receiver
/// accepts (`transport::MAX_LINE_BYTES`), with room for the JSON around
/// each value.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
const _: () = assert!(
    2 * MAX_VALUE_BYTES * raft::core::MAX_ENTRIES_PER_APPEND <= raft::transport::MAX_LINE_BYTES
);

/// The longest `--seconds` or `--warmup`.
pub const MAX_SECONDS: u64 = 3600;

/// The most `--failover` rounds (of each kind of stop).
pub const MAX_FAILOVER_ROUNDS: u32 = 1000;

/// How long a fresh local cluster may take to elect a leader that a
/// majority follows: many election timeouts.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(10);

/// How often the progress line is printed on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How often the coordinator wakes to check for Ctrl+C and dead nodes.
const COORDINATOR_TICK: Duration = Duration::from_millis(50);

/// `raft bench` as typed.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Nodes in the local cluster the bench starts (and stops).
    #[arg(long, value_name = "N", default_value = "3")]
    pub nodes: String,

    /// Drive an existing cluster instead, given as for `raft client`:
    /// PORT or HOST:PORT, comma-separated. CPU and memory are then n/a, and
    /// --failover is not available.
    #[arg(long, value_name = "ADDRS", conflicts_with = "nodes")]
    pub cluster: Option<String>,

    /// Concurrent client connections, each with one request in flight.
    #[arg(long, value_name = "C", default_value = "64")]
    pub clients: String,

    /// Bytes in each value written.
    #[arg(long, value_name = "BYTES", default_value = "16")]
    pub value_size: String,

    /// Length of the measured window, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "10")]
    pub seconds: String,

    /// Load before the window, not measured, in seconds (0 for none).
    #[arg(long, value_name = "SECS", default_value = "1")]
    pub warmup: String,

    /// The share of requests that are linearizable `get`s, 0 to 1.
    #[arg(long, value_name = "FRACTION", default_value = "0")]
    pub reads: String,

    /// After the load, stop the leader N times with kill -9 and N times
    /// with Ctrl+C, and report the time to the next committed write.
    #[arg(long, value_name = "N", default_value = "0")]
    pub failover: String,

    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// With --cluster: the cluster's key file [default:
    /// raft-data/cluster.key]. The local cluster gets a key of its own.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_key: Option<std::path::PathBuf>,
}

/// Which cluster to measure.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Start this many nodes here.
    Local { nodes: usize },
    /// Use the nodes at these addresses (`host:port`).
    Cluster { addrs: Vec<String> },
}

/// `raft bench` options, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    pub target: Target,
    pub clients: usize,
    pub value_size: usize,
    pub seconds: Duration,
    pub warmup: Duration,
    pub read_fraction: f64,
    pub failover_rounds: u32,
    pub json: bool,
    /// `--cluster-key`, for `--cluster`.
    pub cluster_key: Option<std::path::PathBuf>,
}

impl BenchArgs {
    /// Checks every option; the error is one line for a person.
    pub fn validate(&self) -> Result<BenchOptions, ConfigError> {
        let target = match &self.cluster {
            Some(list) => Target::Cluster {
                addrs: parse_cluster(list)?,
            },
            None => Target::Local {
                nodes: parse_count(&self.nodes, "--nodes", 1, MAX_LOCAL_NODES)?,
            },
        };
        let failover_rounds = parse_count(
            &self.failover,
            "--failover",
            0,
            MAX_FAILOVER_ROUNDS as usize,
        )? as u32;
        if failover_rounds > 0 {
            match &target {
                Target::Cluster { .. } => {
                    return Err(ConfigError(
                        "--failover stops and restarts nodes, so it needs the local cluster the bench starts; leave out --cluster".into(),
                    ))
                }
                Target::Local { nodes } if *nodes < 3 => {
                    return Err(ConfigError(format!(
                        "--failover needs at least 3 nodes (a majority must survive the stopped leader); --nodes is {nodes}"
                    )))
                }
                Target::Local { .. } => {}
            }
        }
        Ok(BenchOptions {
            target,
            clients: parse_count(&self.clients, "--clients", 1, MAX_CLIENTS)?,
            value_size: parse_count(&self.value_size, "--value-size", 1, MAX_VALUE_BYTES)?,
            seconds: parse_seconds(&self.seconds, "--seconds", false)?,
            warmup: parse_seconds(&self.warmup, "--warmup", true)?,
            read_fraction: parse_fraction(&self.reads)?,
            failover_rounds,
            json: self.json,
            cluster_key: self.cluster_key.clone(),
        })
    }
}

/// A whole number for option `what`, in `min..=max`.
fn parse_count(s: &str, what: &str, min: usize, max: usize) -> Result<usize, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "invalid {what} '{s}': expected a whole number from {min} to {max}"
        ))
    };
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match t.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// Seconds for option `what`: above 0 (or 0 itself if `zero_ok`), at most
/// [`MAX_SECONDS`], fractions allowed.
fn parse_seconds(s: &str, what: &str, zero_ok: bool) -> Result<Duration, ConfigError> {
    let least = if zero_ok { "from 0" } else { "above 0" };
    let bad = || {
        ConfigError(format!(
            "invalid {what} '{s}': expected a number of seconds {least} and at most {MAX_SECONDS}"
        ))
    };
    let secs: f64 = s.trim().parse().map_err(|_| bad())?;
    let low_ok = if zero_ok { secs >= 0.0 } else { secs > 0.0 };
    if !(low_ok && secs <= MAX_SECONDS as f64) {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `--reads`: a fraction from 0 to 1.
fn parse_fraction(s: &str) -> Result<f64, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "invalid --reads '{s}': expected the share of requests that are reads, from 0 to 1 (like 0.5)"
        ))
    };
    let f: f64 = s.trim().parse().map_err(|_| bad())?;
    if !(0.0..=1.0).contains(&f) {
        return Err(bad());
    }
    Ok(f)
}

/// `--cluster ADDRS`, normalized and without repeats.
fn parse_cluster(list: &str) -> Result<Vec<String>, ConfigError> {
    config::parse_address_list(list).map_err(|e| ConfigError(format!("--cluster: {e}")))
}

/// Runs `raft bench`: 0 on success, 1 if the run failed, 2 on a usage error,
/// 130 after Ctrl+C (the nodes stopped and their directory removed first).
pub fn main(args: &BenchArgs) -> ExitCode {
    let opts = match args.validate() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Usage);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)) {
        eprintln!("error: cannot install the Ctrl+C handler: {e}");
        return ExitCode::from(Exit::Failure);
    }
    // Everything `run` started is stopped and removed by the time it
    // returns, whichever way it returns.
    let result = run(&opts, &stop);
    if stop.load(Ordering::Relaxed) {
        eprintln!("bench: interrupted; the nodes it started are stopped and their data removed");
        return ExitCode::from(Exit::Interrupted);
    }
    match result {
        Ok(report) => {
            if opts.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the report: {e}");
                        return ExitCode::from(Exit::Failure);
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Failure)
        }
    }
}

/// The cluster key every connection of this bench proves it holds: set
/// once, before the first connection, and read by every client thread.
static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// The bench's credentials (set by `run` before anything connects).
fn credentials() -> Result<&'static Credentials, String> {
    CREDENTIALS
        .get()
        .ok_or_else(|| "the bench has no cluster key yet".to_string())
}

/// Finds the cluster key: a new one for the local cluster (its nodes find
/// it beside their data directories), or the existing cluster's.
fn set_credentials(opts: &BenchOptions, work: &WorkDir) -> Result<(), String> {
    let creds = match &opts.target {
        Target::Local { .. } => {
            let (key, _) = ClusterKey::load_or_create(&work.path().join(KEY_FILE_NAME))?;
            Credentials::new(key)
        }
        Target::Cluster { .. } => raft::client::credentials(opts.cluster_key.as_deref())?,
    };
    // Each run's local cluster has a key of its own, so a second run in
    // one process could not use the first one's: refuse it.
    if CREDENTIALS.set(creds).is_err() {
        return Err("raft bench runs once per process".to_string());
    }
    Ok(())
}

/// The whole run, from the floor to the failover rounds.
fn run(opts: &BenchOptions, stop: &AtomicBool) -> Result<Report, String> {
    let work = WorkDir::create()?;
    set_credentials(opts, &work)?;
    eprintln!(
        "bench: measuring this machine's floor (fsync in {}, loopback round trip)",
        work.path().display()
    );
    let floor = floor::measure(work.path())?;
    match &opts.target {
        Target::Local { nodes } => {
            let mut cluster = LocalCluster::start(*nodes, work)?;
            let addrs = cluster.addrs();
            eprintln!(
                "bench: started {nodes} {} on {} (data in {})",
                report::plural(*nodes, "node"),
                addrs.join(", "),
                cluster.dir().display()
            );
            let leader = wait_for_leader(
                &addrs,
                Quorum::Majority,
                Instant::now() + LEADER_DEADLINE,
                stop,
                || cluster.check_running(),
            )?;
            let pids: Vec<Option<u32>> = (0..addrs.len()).map(|i| cluster.pid(i)).collect();
            let load = run_load(opts, &addrs, leader, &pids, stop, || {
                cluster.check_running()
            })?;
            let failover = if opts.failover_rounds > 0 {
                Some(failover::run(
                    &mut cluster,
                    opts.failover_rounds,
                    opts.value_size,
                    stop,
                )?)
            } else {
                None
            };
            let data_dir = Some(cluster.dir().display().to_string());
            Ok(Report::new(opts, &addrs, data_dir, floor, load, failover))
        }
        Target::Cluster { addrs } => {
            let leader = wait_for_leader(
                addrs,
                Quorum::Majority,
                Instant::now() + LEADER_DEADLINE,
                stop,
                || Ok(()),
            )?;
            let pids = vec![None; addrs.len()];
            let load = run_load(opts, addrs, leader, &pids, stop, || Ok(()))?;
            Ok(Report::new(opts, addrs, None, floor, load, None))
        }
    }
}

/// One node at one end of the window.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    pub status: Option<Status>,
    pub metrics: Option<Metrics>,
    pub proc: Option<ProcSample>,
}

/// What the load phase measured.
#[derive(Debug)]
pub struct LoadResult {
    /// The measured window, as the coordinator timed it.
    pub window: Duration,
    pub clients: ClientReport,
    pub start: Vec<NodeSnapshot>,
    pub end: Vec<NodeSnapshot>,
    pub bench_start: Option<ProcSample>,
    pub bench_end: Option<ProcSample>,
}

fn snapshot(addrs: &[String], pids: &[Option<u32>]) -> Vec<NodeSnapshot> {
    addrs
        .iter()
        .zip(pids)
        .map(|(addr, pid)| NodeSnapshot {
            status: cluster::status(addr),
            metrics: cluster::metrics(addr),
            proc: pid.and_then(|p| procstat::sample(&p.to_string())),
        })
        .collect()
}

/// Warm-up, then the measured window, with the clients running throughout.
fn run_load(
    opts: &BenchOptions,
    addrs: &[String],
    leader: String,
    pids: &[Option<u32>],
    stop: &AtomicBool,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<LoadResult, String> {
    let plan = ClientPlan {
        addrs: addrs.to_vec(),
        leader,
        value_size: opts.value_size,
        read_fraction: opts.read_fraction,
    };
    // The clients end when the phase is `PHASE_DONE`, which the coordinator
    // sets however it leaves this function (Ctrl+C included).
    let shared = Arc::new(LoadShared::new());
    eprintln!(
        "bench: {} {}, {}-byte values{}, {:.1} s warm-up, {:.1} s measured",
        opts.clients,
        report::plural(opts.clients, "client"),
        opts.value_size,
        if opts.read_fraction > 0.0 {
            format!(", {:.0}% reads", opts.read_fraction * 100.0)
        } else {
            String::new()
        },
        opts.warmup.as_secs_f64(),
        opts.seconds.as_secs_f64()
    );
    let handles = match load::spawn_clients(opts.clients, &plan, &shared) {
        Ok(handles) => handles,
        Err(e) => {
            // Clients already started see this and end.
            shared.phase.store(PHASE_DONE, Ordering::Relaxed);
            return Err(e);
        }
    };
    let measured = (|| {
        let mut progress = Progress::new(&shared, opts.read_fraction > 0.0);
        progress.run("warm-up", opts.warmup, stop, &mut check)?;
        let start = snapshot(addrs, pids);
        let bench_start = procstat::sample("self");
        shared.phase.store(PHASE_MEASURE, Ordering::Relaxed);
        let window_start = Instant::now();
        progress.run("measuring", opts.seconds, stop, &mut check)?;
        shared.phase.store(PHASE_DONE, Ordering::Relaxed);
        let window = window_start.elapsed();
        let end = snapshot(addrs, pids);
        let bench_end = procstat::sample("self");
        Ok::<_, String>((window, start, end, bench_start, bench_end))
    })();
    // However the window ended, end the clients and collect them; each
    // finishes the request it has in flight.
    shared.phase.store(PHASE_DONE, Ordering::Relaxed);
    let mut clients = ClientReport::default();
    for handle in handles {
        match handle.join() {
            Ok(report) => clients.merge(report),
            Err(_) => return Err("a client thread panicked".into()),
        }
    }
    let (window, start, end, bench_start, bench_end) = measured?;
    Ok(LoadResult {
        window,
        clients,
        start,
        end,
        bench_start,
        bench_end,
    })
}

/// The progress line on stderr, once a second: rates over the last second.
struct Progress<'a> {
    shared: &'a LoadShared,
    show_reads: bool,
    last_at: Instant,
    last: (u64, u64, u64),
}

impl<'a> Progress<'a> {
    fn new(shared: &'a LoadShared, show_reads: bool) -> Progress<'a> {
        Progress {
            shared,
            show_reads,
            last_at: Instant::now(),
            last: (0, 0, 0),
        }
    }

    fn totals(&self) -> (u64, u64, u64) {
        (
            self.shared.writes.load(Ordering::Relaxed),
            self.shared.reads.load(Ordering::Relaxed),
            self.shared.errors.load(Ordering::Relaxed),
        )
    }

    /// Waits `length`, printing the progress line every
    /// [`PROGRESS_INTERVAL`]; stops early with an error on Ctrl+C or when
    /// `check` fails (a local node died).
    fn run(
        &mut self,
        phase: &str,
        length: Duration,
        stop: &AtomicBool,
        check: &mut impl FnMut() -> Result<(), String>,
    ) -> Result<(), String> {
        let start = Instant::now();
        let end = start + length;
        self.last_at = start;
        self.last = self.totals();
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            if stop.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            check()?;
            if now.duration_since(self.last_at) >= PROGRESS_INTERVAL {
                self.print(phase, now.duration_since(start), length, now);
            }
            std::thread::sleep(COORDINATOR_TICK.min(end - now));
        }
    }

    fn print(&mut self, phase: &str, elapsed: Duration, length: Duration, now: Instant) {
        let totals = self.totals();
        let secs = now.duration_since(self.last_at).as_secs_f64();
        let rate = |now: u64, then: u64| (now - then) as f64 / secs;
        let mut line = format!(
            "bench: {phase} {:>4.0}/{:.0} s: {:>8.0} writes/s",
            elapsed.as_secs_f64(),
            length.as_secs_f64(),
            rate(totals.0, self.last.0)
        );
        if self.show_reads {
            line.push_str(&format!(", {:>8.0} reads/s", rate(totals.1, self.last.1)));
        }
        line.push_str(&format!(", {} errors", totals.2 - self.last.2));
        eprintln!("{line}");
        self.last = totals;
        self.last_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BenchArgs {
        BenchArgs {
            nodes: "3".into(),
            cluster: None,
            clients: "64".into(),
            value_size: "16".into(),
            seconds: "10".into(),
            warmup: "1".into(),
            reads: "0".into(),
            failover: "0".into(),
            json: false,
            cluster_key: None,
        }
    }

    fn refused(a: BenchArgs) -> String {
        a.validate().expect_err("should be refused").0
    }

    #[test]
    fn defaults_are_the_issue_s_run() {
        let o = args().validate().expect("valid");
        assert_eq!(o.target, Target::Local { nodes: 3 });
        assert_eq!(o.clients, 64);
        assert_eq!(o.value_size, 16);
        assert_eq!(o.seconds, Duration::from_secs(10));
        assert_eq!(o.warmup, Duration::from_secs(1));
        assert_eq!(o.read_fraction, 0.0);
        assert_eq!(o.failover_rounds, 0);
    }

    #[test]
    fn bad_numbers_are_refused_with_the_option_named() {
        type Setter = fn(&mut BenchArgs, &str);
        let cases: [(Setter, &str, &[&str]); 6] = [
            (
                |a, v| a.clients = v.into(),
                "--clients",
                &["0", "-1", "x", "1.5", "100000", ""],
            ),
            (
                |a, v| a.value_size = v.into(),
                "--value-size",
                &["0", "16385", "1k"],
            ),
            (
                |a, v| a.seconds = v.into(),
                "--seconds",
                &["0", "-1", "abc", "NaN", "inf", "3601"],
            ),
            (
                |a, v| a.warmup = v.into(),
                "--warmup",
                &["-0.5", "x", "3601"],
            ),
            (
                |a, v| a.reads = v.into(),
                "--reads",
                &["-0.1", "1.5", "half", "NaN"],
            ),
            (|a, v| a.nodes = v.into(), "--nodes", &["0", "10", "three"]),
        ];
        for (set, name, bad) in cases {
            for v in bad {
                let mut a = args();
                set(&mut a, v);
                let e = refused(a);
                assert!(e.contains(name), "{name} {v}: {e}");
            }
        }
    }

    #[test]
    fn edges_that_are_allowed() {
        let mut a = args();
        a.clients = MAX_CLIENTS.to_string();
        a.value_size = MAX_VALUE_BYTES.to_string();
        a.seconds = "0.5".into();
        a.warmup = "0".into();
        a.reads = "1".into();
        a.nodes = "1".into();
        let o = a.validate().expect("valid");
        assert_eq!(o.seconds, Duration::from_millis(500));
        assert_eq!(o.warmup, Duration::ZERO);
        assert_eq!(o.read_fraction, 1.0);
    }

    #[test]
    fn failover_needs_a_local_cluster_of_three() {
        let mut a = args();
        a.failover = "2".into();
        assert_eq!(a.clone().validate().expect("valid").failover_rounds, 2);
        a.cluster = Some("8000,8001,8002".into());
        assert!(refused(a.clone()).contains("--cluster"));
        a.cluster = None;
        a.nodes = "1".into();
        assert!(refused(a).contains("at least 3 nodes"));
    }

    #[test]
    fn cluster_addresses_are_normalized() {
        let mut a = args();
        a.cluster = Some("8000,localhost:8000,10.0.0.1:9000".into());
        assert_eq!(
            a.clone().validate().expect("valid").target,
            Target::Cluster {
                addrs: vec!["127.0.0.1:8000".into(), "10.0.0.1:9000".into()]
            }
        );
        a.cluster = Some("8000,,8001".into());
        assert!(refused(a).contains("--cluster"));
    }
}
