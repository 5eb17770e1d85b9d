//! `raft bench`, run briefly: it starts a real cluster, drives it, cleans up
//! and reports. Only that it works is checked, never how fast: timings on a
//! shared CI machine say nothing.

use std::process::{Command, Output};

fn raft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raft"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the raft binary")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8 output")
}

#[test]
fn a_short_run_reports_committed_writes_as_json() {
    let out = raft(&[
        "bench",
        "--seconds",
        "1",
        "--warmup",
        "0.2",
        "--clients",
        "4",
        "--json",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout).expect("valid JSON");

    let writes = report["writes"]["count"].as_u64().expect("writes.count");
    assert!(writes > 0, "no writes committed: {stdout}\n{stderr}");
    assert!(report["writes"]["per_second"].as_f64().expect("per_second") > 0.0);
    assert!(report["writes"]["latency_ms"]["p99"].is_number());
    assert!(report["entries_committed"].as_u64().expect("entries") > 0);
    assert!(report["floor"]["fsync_ms"].is_number());
    assert!(report["floor"]["round_trip_ms"].is_number());
    assert!(report["fsyncs_per_entry"].is_number(), "{stdout}");
    assert!(report["bytes_sent_per_entry"].is_number(), "{stdout}");
    if cfg!(target_os = "linux") {
        // CPU time comes from /proc.
        assert!(report["cpu_us_per_entry"].is_number(), "{stdout}");
        assert!(report["nodes"][0]["peak_rss_mib"].is_number(), "{stdout}");
    }
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes.iter().filter(|n| n["role"] == "leader").count(),
        1,
        "{stdout}"
    );
    assert!(report["reads"].is_null());
    assert!(report["failover"].is_null());
    // Progress goes to stderr, never into the JSON.
    assert!(stderr.contains("bench:"), "{stderr}");

    // The nodes and their data are gone by the time the bench exits.
    let dir = report["cluster"]["data_dir"].as_str().expect("data_dir");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was left behind");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (args, expect) in [
        (&["bench", "--clients", "0"][..], "--clients"),
        (&["bench", "--value-size", "big"][..], "--value-size"),
        (&["bench", "--reads", "2"][..], "--reads"),
        (
            &["bench", "--cluster", "8000", "--failover", "1"][..],
            "--cluster",
        ),
        (
            &["bench", "--cluster", "8000", "--nodes", "3"][..],
            "--nodes",
        ),
    ] {
        let out = raft(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
