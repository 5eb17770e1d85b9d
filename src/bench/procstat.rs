//! CPU time and peak memory of a process, from Linux's `/proc`.
//!
//! Without a libc dependency there is no `getrusage` for a child that still
//! runs; `/proc/<pid>/stat` and `/proc/<pid>/status` give the same figures as
//! text. Elsewhere every reading is `None` and the report says "n/a".

use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second, used when `getconf CLK_TCK` cannot be asked: the
/// value on every common Linux system.
pub const DEFAULT_CLOCK_TICKS: u64 = 100;

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// The most resident memory the process has had (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
    /// How many threads it has now (a node has one per connection).
    pub threads: u64,
}

/// Reads process `pid` (`"self"` for this one); `None` if `/proc` is not
/// there or the process is gone.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    Some(ProcSample {
        cpu_seconds: ticks as f64 / clock_ticks() as f64,
        peak_rss_bytes: parse_peak_rss_kib(&status)? * 1024,
        threads: parse_status_number(&status, "Threads:")?,
    })
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name (the
/// second field) is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After the name: state (field 3), ..., utime (14), stime (15).
    const UTIME_AFTER_NAME: usize = 14 - 3;
    let mut fields = rest.split_whitespace().skip(UTIME_AFTER_NAME);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The `VmHWM:` line of `/proc/<pid>/status`, in KiB.
pub fn parse_peak_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The number after `field` (like `Threads:`) in `/proc/<pid>/status`.
pub fn parse_status_number(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// The kernel's clock tick rate, asked once.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(DEFAULT_CLOCK_TICKS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_is_read_from_status() {
        let status = "Name:\traft\nVmHWM:\t  9000 kB\nThreads:\t1031\n";
        assert_eq!(parse_status_number(status, "Threads:"), Some(1031));
        assert_eq!(parse_status_number(status, "Missing:"), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (raft (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 0 0 20 0 9 0 123 456 789";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn peak_rss_is_read_from_vmhwm() {
        let status = "Name:\traft\nVmPeak:\t  99999 kB\nVmHWM:\t    5120 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_peak_rss_kib(status), Some(5120));
        assert_eq!(parse_peak_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_read_on_linux() {
        if cfg!(target_os = "linux") {
            let s = sample("self").expect("/proc/self on Linux");
            assert!(s.peak_rss_bytes > 0);
            assert!(s.cpu_seconds >= 0.0);
        }
    }
}
