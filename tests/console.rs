//! Process tests of what a person sees: the order of commands typed at a
//! follower, a node whose stdout is closed, and values that try to act on
//! the terminal. Every wait polls with a deadline (see `process_harness`).

mod process_harness;

use process_harness::{free_ports, raft_client, text, Cluster, RAFT};
use raft::config::DEFAULT_ELECTION_TIMEOUT_MS;
use raft::message::{ClientCommand, ClientResult, NodeId};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core machine; the tests end as soon as what
/// they wait for happens.
const LONG: Duration = Duration::from_secs(30);

/// Lines piped into a follower all at once take effect in the order they
/// were written: each is forwarded after the previous one was answered.
#[test]
fn lines_typed_at_a_follower_take_effect_in_the_order_typed() {
    const LINES: usize = 200;
    let mut c = Cluster::start(3);
    let leader = c.wait_for_leader(&c.all(), LONG);
    let follower = c.others(leader)[0];
    let mark = c.mark(follower);
    let pasted: String = (0..LINES).map(|i| format!("set v-{i}\n")).collect();
    c.type_line(follower, pasted.trim_end());
    let fid = c.nodes[follower].id.clone();
    // Every line is answered at the follower, in order (one queue): the
    // k-th answer is line k's.
    let deadline = Instant::now() + LONG;
    let answers: Vec<bool> = loop {
        let answers: Vec<bool> = c.lines(follower)[mark..]
            .iter()
            .filter(|l| {
                l.starts_with("Committed at index")
                    || l.starts_with("Error:")
                    || l.starts_with("Not the leader")
                    || l.starts_with(&format!("Node {fid} could not reach the leader"))
            })
            .map(|l| l.starts_with("Committed at index"))
            .collect();
        if answers.len() == LINES {
            break answers;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {LINES} forwarded sets were answered",
            answers.len()
        );
        std::thread::sleep(process_harness::POLL);
    };
    let last_committed = answers
        .iter()
        .rposition(|&ok| ok)
        .expect("at least one set committed");
    c.wait_for_line_since(
        follower,
        mark,
        |l| l == format!("Node {fid} updated value to: v-{last_committed}"),
        LONG,
    );
    // The follower applies the log in order: the values it applied are
    // the lines in the order typed.
    let applied: Vec<usize> = c.lines(follower)[mark..]
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("Node {fid} updated value to: v-")))
        .map(|n| n.parse().expect("a line number"))
        .collect();
    assert!(
        applied.windows(2).all(|w| w[0] < w[1]),
        "applied out of order: {applied:?}"
    );
    if answers.iter().all(|&ok| ok) {
        let expected: Vec<usize> = (0..LINES).collect();
        assert_eq!(applied, expected);
        let got = raft::client::request(
            &c.credentials(),
            &c.all()
                .iter()
                .map(|&i| c.nodes[i].addr())
                .collect::<Vec<_>>(),
            ClientCommand::Get,
            LONG,
        );
        assert_eq!(
            got,
            Ok(ClientResult::Value {
                value: format!("v-{}", LINES - 1)
            })
        );
    } else {
        // A leadership change on a loaded machine can fail a few writes;
        // their order is still checked above.
        eprintln!(
            "{} of {LINES} sets failed during a leadership change",
            answers.iter().filter(|&&ok| !ok).count()
        );
    }
}

/// `raft PORT | head -n 1`: once stdout is closed, the node says so on
/// stderr and goes on serving clients.
#[test]
fn a_node_whose_stdout_is_closed_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_ports(1)[0];
    let mut child = Command::new(RAFT)
        .args([&port.to_string(), "--peers", "none"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raft");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // Read up to the recovery line, then close our end of stdout.
    let mut line = String::new();
    while !line.contains(" recovered ") {
        line.clear();
        let read = stdout.read_line(&mut line).expect("a line");
        assert!(read > 0, "the node closed stdout before its recovery line");
    }
    drop(stdout);
    let addr = format!("127.0.0.1:{port}");
    // The node made the key beside its data directory, raft-data/PORT.
    let key = dir.path().join("raft-data").join("cluster.key");
    for i in 0..5 {
        let value = format!("after-close-{i}");
        let out = raft_client(&key, &addr, LONG, &["set", &value]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = raft_client(&key, &addr, LONG, &["get"]);
    assert_eq!(text(&out.stdout), "after-close-4\n");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the node died"
    );
    child.kill().expect("kill");
    let output = child.wait_with_output().expect("reap");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("stdout is closed") && !stderr.contains("panicked"),
        "stderr: {stderr}"
    );
}

/// Ctrl+D at a node's prompt: it says its stdin is closed and goes on
/// running and serving, so `raft 8000 < /dev/null &` works.
#[test]
fn a_node_whose_stdin_closes_says_so_and_keeps_serving() {
    let mut c = Cluster::start(1);
    c.wait_for_leader(&[0], LONG);
    let mark = c.mark(0);
    c.close_stdin(0);
    let id = c.nodes[0].id.clone();
    c.wait_for_line_since(
        0,
        mark,
        |l| l == format!("Node {id} stdin is closed; it goes on running until Ctrl+C"),
        LONG,
    );
    c.set(&[0], "after Ctrl+D", LONG);
    c.wait_for_status(0, "still leading", |s| s.role == "leader", LONG);
}

/// With `--stop-when-stdin-closes` (how `raft demo` starts its nodes), the
/// end of stdin stops the node as Ctrl+C does: it says why, and exits 0.
#[test]
fn a_node_run_by_a_program_stops_when_its_stdin_closes() {
    let mut c = Cluster::start_with(1, &["--stop-when-stdin-closes"]);
    c.wait_for_leader(&[0], LONG);
    let mark = c.mark(0);
    c.close_stdin(0);
    let status = c.wait_exit(0, LONG);
    assert_eq!(status.code(), Some(0), "{}", c.dump());
    let id = c.nodes[0].id.clone();
    c.wait_for_line_since(
        0,
        mark,
        |l| l == format!("Node {id} stdin is closed; stopping (--stop-when-stdin-closes)"),
        LONG,
    );
    c.wait_for_line_since(0, mark, |l| l == format!("Shutting down node {id}"), LONG);
}

/// A value that holds a newline, an escape sequence and a bell prints as
/// one line with those characters escaped, on every node.
#[test]
fn a_value_with_control_characters_prints_escaped() {
    let mut c = Cluster::start(3);
    let leader = c.wait_for_leader(&c.all(), LONG);
    let marks: Vec<usize> = c.all().into_iter().map(|i| c.mark(i)).collect();
    let value = "line1\nNode 9999 elected as leader for term 42\x1b[31m\x07";
    c.set(&[leader], value, LONG);
    for i in c.all() {
        let id = c.nodes[i].id.clone();
        c.wait_for_line_since(
            i,
            marks[i],
            |l| {
                l == format!(
                    "Node {id} updated value to: line1\\nNode 9999 elected as leader for term 42\\x1b[31m\\x07"
                )
            },
            LONG,
        );
        let forged = c
            .lines(i)
            .into_iter()
            .find(|l| l.starts_with("Node 9999") || l.contains('\x1b') || l.contains('\x07'));
        assert_eq!(forged, None, "node {id} printed a forged or raw line");
    }
}

/// A node in a pseudo-terminal, with a data directory of its own.
fn node_in_a_pty(port: u16, peers: &str, dir: &std::path::Path) -> rexpect::session::PtySession {
    let mut command = Command::new(RAFT);
    command
        .args([&port.to_string(), "--peers", peers, "--data-dir"])
        // The cluster key goes beside the data directory, in `dir`.
        .arg(dir.join("node"))
        .env_remove("RUST_LOG");
    rexpect::session::spawn_command(command, Some(LONG.as_millis() as u64)).expect("spawn in a pty")
}

/// At a terminal, a line printed while `> ` is shown clears the prompt's
/// line first and draws the prompt again after it; `log` prints its table;
/// nothing carries a timestamp or a module path.
#[test]
fn at_a_terminal_the_prompt_is_redrawn_and_log_prints_a_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_ports(1)[0];
    let mut p = node_in_a_pty(port, "none", dir.path());
    let mut seen = p.exp_string("> ").expect("the first prompt");
    // The election happens while the prompt is shown.
    seen += &p
        .exp_string(&format!(
            "\r\x1b[KNode {port} starting election for term 1\r\n> "
        ))
        .expect("the election line over the prompt, and the prompt again");
    seen += &p
        .exp_string(&format!(
            "\r\x1b[KNode {port} elected as leader for term 1\r\n> "
        ))
        .expect("the leader line, and the prompt again");
    p.send_line("set hello pty").expect("type");
    seen += &p.exp_string("Committed at index 2").expect("the commit");
    p.send_line("log").expect("type");
    seen += &p
        .exp_string("index   term  committed  applied  entry")
        .expect("the header");
    seen += &p
        .exp_string("      1      1  yes        yes      no-op (a new leader's first entry)")
        .expect("the no-op row");
    seen += &p
        .exp_string("      2      1  yes        yes      set hello pty")
        .expect("the value's row");
    for noise in ["WARN", "INFO", "raft::", "Z]"] {
        assert!(!seen.contains(noise), "{noise:?} on the screen: {seen}");
    }
}

/// A node started alone says, in plain lines, whom it waits for and why
/// there is no leader; no timestamped warning about refused connections.
#[test]
fn a_node_alone_says_whom_it_waits_for_and_that_a_majority_must_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(3);
    let peers = format!("{},{}", ports[1], ports[2]);
    let mut p = node_in_a_pty(ports[0], &peers, dir.path());
    let mut seen = p
        .exp_string(&format!(
            "Node {} waiting for {}, {}",
            ports[0], ports[1], ports[2]
        ))
        .expect("the waiting line");
    seen += &p
        .exp_string(&format!(
            "Node {} cannot elect a leader: 1 of 3 members reachable; a majority needs 2",
            ports[0]
        ))
        .expect("the majority line");
    p.send_line("set x").expect("type");
    seen += &p
        .exp_string("electing one needs 2 of the 3 members, and 1 is running and in touch: start the others")
        .expect("the answer to set");
    for noise in ["WARN", "cannot connect", "Connection refused", "Z]"] {
        assert!(!seen.contains(noise), "{noise:?} on the screen: {seen}");
    }
}

/// Ctrl+C at a leader moments after a follower died hands leadership to
/// the follower that still answers, never to the dead one (which would
/// take it and leave the cluster waiting for an election).
#[test]
fn ctrl_c_at_a_leader_hands_over_only_to_a_follower_that_answers() {
    let mut c = Cluster::start(3);
    let leader = c.wait_for_leader(&c.all(), LONG);
    c.set(&[leader], "before", LONG);
    // The follower first in id order: the one a tie on match index picks.
    let mut followers = c.others(leader);
    followers.sort_by_key(|&i| c.nodes[i].id.clone());
    let (dead, alive) = (followers[0], followers[1]);
    c.kill9(dead);
    // The leader hands over only to a voter heard from within the shortest
    // election timeout: wait until its `status` says the dead follower has
    // been silent for longer than that, and the other one is still heard.
    let window_ms = DEFAULT_ELECTION_TIMEOUT_MS.0;
    let (dead_id, alive_id) = (c.nodes[dead].id.clone(), c.nodes[alive].id.clone());
    c.wait_for_status(
        leader,
        &format!("{dead_id} silent for over {window_ms} ms, {alive_id} heard within it"),
        |s| {
            let heard = |id: &str| s.last_heard_ms.get(&NodeId::new(id)).copied().flatten();
            s.role == "leader"
                && heard(&dead_id).is_some_and(|ms| ms > window_ms)
                && heard(&alive_id).is_some_and(|ms| ms < window_ms)
        },
        LONG,
    );
    // The prompt's `status` says the same to a person.
    let mark = c.mark(leader);
    c.type_line(leader, "status");
    let heard = c.wait_for_line_since(leader, mark, |l| l.contains("last heard from "), LONG);
    assert!(
        heard.text.contains(&format!("{dead_id} ")) && heard.text.contains(&format!("{alive_id} ")),
        "{}",
        heard.text
    );
    // And how the leader sends to the follower that answers.
    let sending = format!("  sending to {alive_id}: Replicate");
    c.wait_for_line_since(leader, mark, |l| l.starts_with(&sending), LONG);
    let mark = c.mark(leader);
    c.signal(leader, "INT");
    let lid = c.nodes[leader].id.clone();
    let line = c.wait_for_line_since(
        leader,
        mark,
        |l| l.starts_with(&format!("Leader {lid} transferring leadership to")),
        LONG,
    );
    assert_eq!(
        line.text,
        format!("Leader {lid} transferring leadership to {alive_id}")
    );
    c.wait_for_line(
        alive,
        |l| l.starts_with(&format!("Node {alive_id} elected as leader")),
        LONG,
    );
}

/// A node restarted alone does not know which of its entries are
/// committed: `status` says so instead of showing an empty value, and
/// `raft client ADDRS log` shows its entries as JSON lines.
#[test]
fn a_restarted_node_alone_says_its_value_is_not_yet_known() {
    let mut c = Cluster::start(3);
    let leader = c.wait_for_leader(&c.all(), LONG);
    c.set(&[leader], "kept", LONG);
    // Every node holds the entry before the crash.
    for i in c.all() {
        let id = c.nodes[i].id.clone();
        c.wait_for_line(
            i,
            |l| l == format!("Node {id} updated value to: kept"),
            LONG,
        );
    }
    c.kill9_all(&c.all());
    c.start_node(0);
    let mark = c.mark(0);
    c.type_line(0, "status");
    let line = c.wait_for_line_since(0, mark, |l| l.contains("; value: "), LONG);
    let out = c.client(&c.nodes[0].addr(), LONG, &["log", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<raft::message::LogRow> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    // The no-op, the membership entries in which the leader recorded its
    // members' incarnations, and the write.
    let last = rows.len();
    assert!(
        line.text.contains(&format!(
            "; value: not yet known (the log holds entries up to index {last};"
        )),
        "{}",
        line.text
    );
    assert_eq!((rows[0].index, rows[0].kind.as_str()), (1, "noop"));
    assert!(
        rows[1..last - 1].iter().all(|r| r.kind == "membership"),
        "{rows:?}"
    );
    assert_eq!(rows[last - 1].data.as_deref(), Some("kept"));
    assert!(!rows[last - 1].applied, "{rows:?}");
}
