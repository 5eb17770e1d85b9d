//! The machine's floor: what one durable, replicated write cannot beat.
//!
//! A Raft write needs at least one fsync on a majority and one network round
//! trip from the leader to a follower and back, so the 1-client latency is
//! judged against `fsync + loopback round trip`, measured here in the same
//! run, on the same disk and the same loopback the cluster uses. A figure
//! copied from another day or another machine would make the ratio
//! meaningless.

use super::histogram::{median, quantile_exact};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Appends + fsyncs timed for the fsync figure.
pub const FSYNC_SAMPLES: usize = 200;

/// Bytes written before each fsync: the size of a tiny log record, so the
/// figure is the cost of the flush, not of the copy.
pub const FSYNC_WRITE_BYTES: usize = 16;

/// Ping-pongs timed for the round-trip figure.
pub const ROUND_TRIP_SAMPLES: usize = 1000;

/// Untimed ping-pongs first, so connection set-up and cold caches do not
/// count.
const ROUND_TRIP_WARMUP: usize = 50;

/// Generous: a loopback echo that takes this long is broken, not slow.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// The file the fsync probe writes in the data directory, removed after.
const FSYNC_PROBE_FILE: &str = "fsync-probe";

/// The two medians, and how much the disk varies.
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    /// Appending to a file and `sync_data`: the plain cost of a durable
    /// write, and the floor a single client's latency is compared with.
    pub fsync: Duration,
    /// Writing into space reserved ahead with `set_len` and `sync_data`,
    /// as the node's log does (see `storage`): cheaper on most file
    /// systems, since no new file size must be made durable. The stricter
    /// floor, reported beside the other.
    pub fsync_reserved: Duration,
    /// A virtual disk's fsync latency can vary tenfold from one call to the
    /// next; the 90th percentile shows how much, beside the median.
    pub fsync_p90: Duration,
    pub round_trip: Duration,
}

impl Floor {
    pub fn sum(&self) -> Duration {
        self.fsync + self.round_trip
    }

    /// The floor with the fsync the node's log actually does.
    pub fn strict_sum(&self) -> Duration {
        self.fsync_reserved + self.round_trip
    }
}

/// Measures both figures; `dir` must be on the disk the nodes write to.
pub fn measure(dir: &Path) -> Result<Floor, String> {
    let (fsync, fsync_p90) = fsync_latency(dir, Growth::Append)?;
    let (fsync_reserved, _) = fsync_latency(dir, Growth::Reserved)?;
    Ok(Floor {
        fsync,
        fsync_reserved,
        fsync_p90,
        round_trip: loopback_round_trip()?,
    })
}

/// How the probe file takes each write.
#[derive(Clone, Copy, Debug)]
pub enum Growth {
    /// At its end: each `sync_data` also makes a new file size durable.
    Append,
    /// Into zeros reserved ahead with `set_len`, as the node's log does.
    Reserved,
}

/// Median and 90th percentile time of writing [`FSYNC_WRITE_BYTES`] to a
/// file in `dir`, one write after the other, and `sync_data`.
pub fn fsync_latency(dir: &Path, growth: Growth) -> Result<(Duration, Duration), String> {
    let path = dir.join(FSYNC_PROBE_FILE);
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        if let Growth::Reserved = growth {
            let reserved = (FSYNC_SAMPLES * FSYNC_WRITE_BYTES) as u64;
            file.set_len(reserved)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot reserve space in {}: {e}", path.display()))?;
        }
        let bytes = [b'x'; FSYNC_WRITE_BYTES];
        let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
        for _ in 0..FSYNC_SAMPLES {
            let start = Instant::now();
            file.write_all(&bytes)
                .and_then(|()| file.sync_data())
                .map_err(|e| format!("writing {} failed: {e}", path.display()))?;
            samples.push(start.elapsed());
        }
        let p90 = quantile_exact(&mut samples, 0.9);
        median(&mut samples)
            .zip(p90)
            .ok_or_else(|| "no fsync samples".to_string())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Median round trip of a short line over a loopback TCP connection to an
/// echo thread, with `TCP_NODELAY` as the nodes use it.
pub fn loopback_round_trip() -> Result<Duration, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind loopback: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("loopback listener: {e}"))?;
    let echo = std::thread::Builder::new()
        .name("bench-echo".into())
        .spawn(move || -> std::io::Result<()> {
            let (stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(ROUND_TRIP_TIMEOUT))?;
            let mut writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                writer.write_all(line.as_bytes())?;
            }
        })
        .map_err(|e| format!("cannot start the echo thread: {e}"))?;
    let samples = (|| -> std::io::Result<Vec<Duration>> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ROUND_TRIP_TIMEOUT))?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let mut samples = Vec::with_capacity(ROUND_TRIP_SAMPLES);
        for i in 0..ROUND_TRIP_WARMUP + ROUND_TRIP_SAMPLES {
            let start = Instant::now();
            writer.write_all(b"ping\n")?;
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the echo closed",
                ));
            }
            if i >= ROUND_TRIP_WARMUP {
                samples.push(start.elapsed());
            }
        }
        Ok(samples)
        // Dropping the stream here ends the echo thread.
    })();
    let echoed = echo.join();
    let mut samples = samples.map_err(|e| format!("loopback round trip failed: {e}"))?;
    match echoed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("loopback echo failed: {e}")),
        Err(_) => return Err("the loopback echo thread panicked".into()),
    }
    median(&mut samples).ok_or_else(|| "no round-trip samples".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_figures_are_measured() {
        let dir = tempfile::tempdir().expect("temp dir");
        let floor = measure(dir.path()).expect("floor");
        assert!(floor.fsync > Duration::ZERO);
        assert!(floor.fsync_reserved > Duration::ZERO);
        assert!(floor.fsync_p90 >= floor.fsync);
        assert!(floor.round_trip > Duration::ZERO);
        assert!(!dir.path().join(FSYNC_PROBE_FILE).exists());
    }
}
