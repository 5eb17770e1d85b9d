//! The figures of a run, as a table for a person or one JSON object for a
//! program. Both come from the same [`Report`], so they cannot disagree.
//!
//! Per-entry figures divide a node's counter, taken at both ends of the
//! measured window, by the entries committed in that window (the rise of
//! the highest `commit_index`): fsyncs per entry shows how well group commit
//! works (1.0 means one fsync per write), bytes and messages per entry how
//! well replication batches. A figure the cluster cannot give (an existing
//! cluster's CPU time, a node that does not report counters) is `null` in
//! JSON and "n/a" in the table.

use super::failover::FailoverTimes;
use super::floor::Floor;
use super::histogram::{quantile_exact, Histogram};
use super::procstat::ProcSample;
use super::{BenchOptions, LoadResult, NodeSnapshot, Target};
use raft::metrics::Metrics;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub cluster: ClusterInfo,
    pub clients: usize,
    pub value_size: usize,
    pub read_fraction: f64,
    pub warmup_seconds: f64,
    /// The measured window, as timed (a little over `--seconds`).
    pub seconds: f64,
    pub floor: FloorFigures,
    pub writes: OpFigures,
    /// Only when `--reads` is above 0.
    pub reads: Option<OpFigures>,
    /// The 1-client write p50 over the floor; only with `--clients 1`.
    pub p50_over_floor: Option<f64>,
    /// The same over the stricter floor (`fsync_reserved_ms` + round trip).
    pub p50_over_strict_floor: Option<f64>,
    pub errors: u64,
    pub redirects: u64,
    pub last_error: Option<String>,
    pub entries_committed: u64,
    /// Whole-cluster totals per committed entry.
    pub fsyncs_per_entry: Option<f64>,
    pub bytes_sent_per_entry: Option<f64>,
    pub messages_sent_per_entry: Option<f64>,
    /// The nodes' CPU time (all of them, during the window) per entry, in
    /// microseconds: what a write costs, whatever the machine's core count.
    pub cpu_us_per_entry: Option<f64>,
    pub nodes: Vec<NodeFigures>,
    /// The bench process itself (its clients), which shares the machine.
    pub bench_cpu_seconds: Option<f64>,
    pub bench_cpu_percent: Option<f64>,
    pub bench_peak_rss_mib: Option<f64>,
    pub failover: Option<FailoverFigures>,
}

#[derive(Debug, Serialize)]
pub struct ClusterInfo {
    /// `local` (started by the bench) or `existing` (`--cluster`).
    pub mode: &'static str,
    pub nodes: usize,
    pub addrs: Vec<String>,
    /// Where local nodes kept their data during the run (removed since).
    pub data_dir: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FloorFigures {
    /// Median.
    pub fsync_ms: f64,
    pub fsync_p90_ms: f64,
    /// Median fsync of a write into reserved space, as the log does it.
    pub fsync_reserved_ms: f64,
    pub round_trip_ms: f64,
    pub sum_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct OpFigures {
    pub count: u64,
    pub per_second: f64,
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct NodeFigures {
    pub id: String,
    pub addr: String,
    /// The role at the end of the window.
    pub role: Option<String>,
    pub fsyncs_per_entry: Option<f64>,
    pub bytes_sent_per_entry: Option<f64>,
    pub messages_sent_per_entry: Option<f64>,
    /// CPU time (user + system) during the window.
    pub cpu_seconds: Option<f64>,
    /// The same, as a share of one core.
    pub cpu_percent: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Its threads at the start of the measured window (every client
    /// connected): one per client connection, one per peer, and a few more.
    pub threads: Option<u64>,
    /// The longest one sync (writes and fsync) held up the node's
    /// state-machine thread since it started, in ms: while it lasts the
    /// node ticks, sends and answers nothing.
    pub longest_sync_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FailoverFigures {
    pub kill: Distribution,
    pub interrupt: Distribution,
}

/// Gaps from a stop to the next committed write.
#[derive(Debug, Serialize)]
pub struct Distribution {
    pub rounds: usize,
    pub median_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub samples_ms: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn latency(h: &Histogram) -> Latency {
    Latency {
        p50: h.quantile(0.5).map(ms),
        p90: h.quantile(0.9).map(ms),
        p99: h.quantile(0.99).map(ms),
        max: (h.count() > 0).then(|| ms(h.max())),
    }
}

fn op_figures(h: &Histogram, window: Duration) -> OpFigures {
    OpFigures {
        count: h.count(),
        per_second: h.count() as f64 / window.as_secs_f64(),
        latency_ms: latency(h),
    }
}

fn distribution(mut samples: Vec<Duration>) -> Distribution {
    let samples_ms = samples.iter().copied().map(ms).collect();
    Distribution {
        rounds: samples.len(),
        median_ms: quantile_exact(&mut samples, 0.5).map(ms),
        p99_ms: quantile_exact(&mut samples, 0.99).map(ms),
        max_ms: samples.iter().max().copied().map(ms),
        samples_ms,
    }
}

/// A counter's rise over the window, if the node reported it at both ends.
/// A node that reports counters has always done some fsyncs (creating its
/// directory), so zero fsyncs means "not reported".
fn rise(start: &NodeSnapshot, end: &NodeSnapshot, counter: fn(&Metrics) -> u64) -> Option<u64> {
    let (s, e) = (start.metrics.as_ref()?, end.metrics.as_ref()?);
    if e.fsyncs == 0 {
        return None;
    }
    Some(counter(e).saturating_sub(counter(s)))
}

fn per(value: Option<u64>, entries: u64) -> Option<f64> {
    (entries > 0).then_some(value? as f64 / entries as f64)
}

impl Report {
    pub fn new(
        opts: &BenchOptions,
        addrs: &[String],
        data_dir: Option<String>,
        floor: Floor,
        load: LoadResult,
        failover: Option<FailoverTimes>,
    ) -> Report {
        let window = load.window;
        let highest_commit = |snaps: &[NodeSnapshot]| {
            snaps
                .iter()
                .filter_map(|s| s.status.as_ref().map(|s| s.commit_index))
                .max()
                .unwrap_or(0)
        };
        let entries = highest_commit(&load.end).saturating_sub(highest_commit(&load.start));
        let cpu = |start: Option<ProcSample>, end: Option<ProcSample>| {
            let (s, e) = (start?, end?);
            Some((e.cpu_seconds - s.cpu_seconds).max(0.0))
        };
        let mut totals: [Option<u64>; 3] = [Some(0); 3];
        let counters: [fn(&Metrics) -> u64; 3] =
            [|s| s.fsyncs, |s| s.bytes_sent, |s| s.messages_sent];
        let nodes: Vec<NodeFigures> = addrs
            .iter()
            .zip(load.start.iter().zip(&load.end))
            .map(|(addr, (start, end))| {
                let rises = counters.map(|c| rise(start, end, c));
                for (total, r) in totals.iter_mut().zip(rises) {
                    *total = total.zip(r).map(|(t, r)| t + r);
                }
                let cpu_seconds = cpu(start.proc, end.proc);
                NodeFigures {
                    id: end
                        .status
                        .as_ref()
                        .or(start.status.as_ref())
                        .map_or_else(|| addr.clone(), |s| s.id.to_string()),
                    addr: addr.clone(),
                    role: end.status.as_ref().map(|s| s.role.clone()),
                    fsyncs_per_entry: per(rises[0], entries),
                    bytes_sent_per_entry: per(rises[1], entries),
                    messages_sent_per_entry: per(rises[2], entries),
                    cpu_seconds,
                    cpu_percent: cpu_seconds.map(|c| 100.0 * c / window.as_secs_f64()),
                    peak_rss_mib: end.proc.map(|p| mib(p.peak_rss_bytes)),
                    threads: start.proc.map(|p| p.threads),
                    longest_sync_ms: end
                        .metrics
                        .as_ref()
                        .filter(|s| s.longest_sync_us > 0)
                        .map(|s| s.longest_sync_us as f64 / 1000.0),
                }
            })
            .collect();
        let nodes_cpu: Option<f64> = nodes.iter().map(|n| n.cpu_seconds).sum();
        let bench_cpu = cpu(load.bench_start, load.bench_end);
        let c = &load.clients;
        let writes = op_figures(&c.writes, window);
        let over = |floor: Duration| {
            let p50 = c.writes.quantile(0.5).filter(|_| opts.clients == 1)?;
            Some(p50.as_secs_f64() / floor.as_secs_f64())
        };
        let p50_over_floor = over(floor.sum());
        let p50_over_strict_floor = over(floor.strict_sum());
        Report {
            cluster: ClusterInfo {
                mode: match opts.target {
                    Target::Local { .. } => "local",
                    Target::Cluster { .. } => "existing",
                },
                nodes: addrs.len(),
                addrs: addrs.to_vec(),
                data_dir,
            },
            clients: opts.clients,
            value_size: opts.value_size,
            read_fraction: opts.read_fraction,
            warmup_seconds: opts.warmup.as_secs_f64(),
            seconds: window.as_secs_f64(),
            floor: FloorFigures {
                fsync_ms: ms(floor.fsync),
                fsync_p90_ms: ms(floor.fsync_p90),
                fsync_reserved_ms: ms(floor.fsync_reserved),
                round_trip_ms: ms(floor.round_trip),
                sum_ms: ms(floor.sum()),
            },
            writes,
            reads: (opts.read_fraction > 0.0).then(|| op_figures(&c.reads, window)),
            p50_over_floor,
            p50_over_strict_floor,
            errors: c.errors,
            redirects: c.redirects,
            last_error: c.last_error.clone(),
            entries_committed: entries,
            fsyncs_per_entry: per(totals[0], entries),
            bytes_sent_per_entry: per(totals[1], entries),
            messages_sent_per_entry: per(totals[2], entries),
            cpu_us_per_entry: nodes_cpu
                .filter(|_| entries > 0)
                .map(|c| c * 1e6 / entries as f64),
            nodes,
            bench_cpu_seconds: bench_cpu,
            bench_cpu_percent: bench_cpu.map(|c| 100.0 * c / window.as_secs_f64()),
            bench_peak_rss_mib: load.bench_end.map(|p| mib(p.peak_rss_bytes)),
            failover: failover.map(|f| FailoverFigures {
                kill: distribution(f.kill),
                interrupt: distribution(f.interrupt),
            }),
        }
    }

    /// The report as a person reads it.
    pub fn table(&self) -> String {
        let mut t = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_table(&mut t);
        t
    }

    fn write_table(&self, t: &mut String) -> std::fmt::Result {
        let who = match self.cluster.mode {
            "local" => format!(
                "{} local {}",
                self.cluster.nodes,
                plural(self.cluster.nodes, "node")
            ),
            _ => format!("existing cluster {}", self.cluster.addrs.join(",")),
        };
        writeln!(
            t,
            "raft bench: {who}, {} {}, {}-byte values, {:.0}% reads; {:.1} s measured after {:.1} s warm-up",
            self.clients,
            plural(self.clients, "client"),
            self.value_size,
            self.read_fraction * 100.0,
            self.seconds,
            self.warmup_seconds
        )?;
        let f = &self.floor;
        writeln!(
            t,
            "floor (medians): fsync {:.3} ms + loopback round trip {:.3} ms = {:.3} ms (fsync p90 {:.3} ms)",
            f.fsync_ms, f.round_trip_ms, f.sum_ms, f.fsync_p90_ms
        )?;
        if self.cluster.mode != "local" {
            writeln!(
                t,
                "(fsync measured in {}, which may not be the nodes' disk)",
                std::env::temp_dir().display()
            )?;
        }
        writeln!(t)?;
        writeln!(
            t,
            "{:<18} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "", "count", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        )?;
        op_row(t, "committed writes", &self.writes)?;
        if let Some(reads) = &self.reads {
            op_row(t, "reads", reads)?;
        }
        if let Some(ratio) = self.p50_over_floor {
            writeln!(t, "1-client write p50 / floor: {ratio:.2}x")?;
        }
        if let Some(ratio) = self.p50_over_strict_floor {
            writeln!(
                t,
                "1-client write p50 / (fsync into reserved space {:.3} ms + round trip): {ratio:.2}x",
                self.floor.fsync_reserved_ms
            )?;
        }
        writeln!(t)?;
        writeln!(
            t,
            "entries committed: {}; per entry, whole cluster: {} fsyncs, {} bytes sent, {} messages sent",
            self.entries_committed,
            opt(self.fsyncs_per_entry, 3),
            opt(self.bytes_sent_per_entry, 0),
            opt(self.messages_sent_per_entry, 2)
        )?;
        writeln!(
            t,
            "node CPU per committed entry, whole cluster: {} µs",
            opt(self.cpu_us_per_entry, 1)
        )?;
        write!(
            t,
            "errors: {}, leader redirects: {}",
            self.errors, self.redirects
        )?;
        match &self.last_error {
            Some(e) if self.errors > 0 => writeln!(t, " (last: {e})")?,
            _ => writeln!(t)?,
        }
        writeln!(t)?;
        writeln!(
            t,
            "{:<16} {:<9} {:>12} {:>11} {:>10} {:>7} {:>6} {:>10} {:>8} {:>12}",
            "node",
            "role",
            "fsyncs/entry",
            "bytes/entry",
            "msgs/entry",
            "cpu s",
            "cpu %",
            "peak RSS",
            "threads",
            "max sync ms"
        )?;
        for n in &self.nodes {
            writeln!(
                t,
                "{:<16} {:<9} {:>12} {:>11} {:>10} {:>7} {:>6} {:>10} {:>8} {:>12}",
                n.id,
                n.role.as_deref().unwrap_or("?"),
                opt(n.fsyncs_per_entry, 3),
                opt(n.bytes_sent_per_entry, 0),
                opt(n.messages_sent_per_entry, 2),
                opt(n.cpu_seconds, 2),
                opt(n.cpu_percent, 0),
                mib_cell(n.peak_rss_mib),
                n.threads.map_or("n/a".to_string(), |t| t.to_string()),
                opt(n.longest_sync_ms, 2),
            )?;
        }
        writeln!(
            t,
            "{:<16} {:<9} {:>12} {:>11} {:>10} {:>7} {:>6} {:>10} {:>8} {:>12}",
            "bench (clients)",
            "-",
            "-",
            "-",
            "-",
            opt(self.bench_cpu_seconds, 2),
            opt(self.bench_cpu_percent, 0),
            mib_cell(self.bench_peak_rss_mib),
            "-",
            "-",
        )?;
        if let Some(fo) = &self.failover {
            writeln!(t)?;
            writeln!(
                t,
                "failover: time from stopping the leader to the next committed write"
            )?;
            writeln!(
                t,
                "{:<18} {:>6} {:>10} {:>9} {:>9}",
                "", "rounds", "median ms", "p99 ms", "max ms"
            )?;
            for (label, d) in [
                ("kill -9 (SIGKILL)", &fo.kill),
                ("Ctrl+C (SIGINT)", &fo.interrupt),
            ] {
                writeln!(
                    t,
                    "{:<18} {:>6} {:>10} {:>9} {:>9}",
                    label,
                    d.rounds,
                    opt(d.median_ms, 1),
                    opt(d.p99_ms, 1),
                    opt(d.max_ms, 1)
                )?;
            }
        }
        Ok(())
    }
}

fn op_row(t: &mut String, label: &str, op: &OpFigures) -> std::fmt::Result {
    let l = &op.latency_ms;
    writeln!(
        t,
        "{:<18} {:>9} {:>10.1} {:>9} {:>9} {:>9} {:>9}",
        label,
        op.count,
        op.per_second,
        opt(l.p50, 2),
        opt(l.p90, 2),
        opt(l.p99, 2),
        opt(l.max, 2)
    )
}

/// A figure with `decimals` places, or "n/a".
fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.decimals$}"))
}

fn mib_cell(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1} MiB"))
}

/// "node" or "nodes".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
