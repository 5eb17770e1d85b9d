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
//! The bench shares the machine with the nodes it measures; on a 2-core
//! machine its own CPU time (reported as the `bench` row) is CPU the nodes
//! did not get. Tests never assert on these figures.

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
