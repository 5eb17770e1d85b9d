//! The plumbing of `raft demo`: the nodes' output, their data root, their
//! ports.

use crate::console;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;

/// The longest line read from a node's output (longer ones are cut).
const MAX_NODE_LINE_BYTES: usize = 64 * 1024;

/// Copies a node's output lines to the console with the node's prefix.
pub(super) fn relay(stream: Box<dyn Read + Send>, prefix: String) {
    let spawned = std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let limit = MAX_NODE_LINE_BYTES as u64;
                match (&mut reader).take(limit).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        console::say_prefixed(&prefix, line.trim_end_matches(['\n', '\r']));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot relay a node's output: {e}");
    }
}

/// A fresh directory under the system's temporary directory.
pub(super) fn make_temp_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let dir = base.join(format!(
            "raft-demo-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "cannot create a temporary directory in {}: {e} (or give --data-dir)",
                    base.display()
                ))
            }
        }
    }
    Err(format!(
        "cannot find a free temporary directory name in {}",
        base.display()
    ))
}

/// `n` distinct loopback ports free right now: `first`, `first + 1`, ...
/// if they all are, else any; bound together, then released for the nodes
/// to bind.
pub(super) fn free_ports(first: u16, n: usize) -> Result<Vec<u16>, String> {
    if first != 0 {
        let wanted: Vec<TcpListener> = (0..n)
            .filter_map(|i| u16::try_from(i).ok().and_then(|i| first.checked_add(i)))
            .filter_map(|port| TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if wanted.len() == n {
            return Ok((0..n).map(|i| first + i as u16).collect());
        }
    }
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot find free loopback ports: {e}"))?;
    let mut ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find free loopback ports: {e}"))?;
    ports.sort_unstable();
    Ok(ports)
}

pub(super) fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
