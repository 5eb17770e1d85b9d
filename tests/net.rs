//! The client against fake nodes: real sockets and the real listener, with
//! a stand-in for the state-machine thread that answers as a test wants.
//! No fixed sleeps: every wait has a deadline.

use crossbeam_channel::Receiver;
use raft::client::{self, ClientError};
use raft::message::{ClientCommand, ClientResponse, ClientResult, NodeId, Status};
use raft::metrics::Metrics;
use raft::transport::{self, Inbound, Members};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Where the `raft` binary runs in these tests: its `raft-data/cluster.key`
/// is the key every fake node and client here shares.
fn work_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("net-tests")
}

/// The key every fake node and client of these tests shares.
fn creds() -> transport::Credentials {
    static KEY: std::sync::OnceLock<transport::ClusterKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let path = work_dir().join("raft-data").join("cluster.key");
        transport::ClusterKey::load_or_create(&path)
            .expect("the tests' key file")
            .0
    });
    transport::Credentials::new(key.clone())
}

/// Generous: only here so that a broken test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// Starts a listener whose every client request is answered by `answer`
/// (given how many requests came before). Returns its address.
fn fake_node(answer: impl Fn(u64, &ClientCommand) -> ClientResult + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local addr").to_string();
    let (tx, rx) = crossbeam_channel::bounded(16);
    transport::spawn_listener(
        listener,
        NodeId::new("fake"),
        Members::default(),
        tx,
        creds(),
    )
    .expect("spawn listener");
    thread::spawn(move || serve(rx, answer));
    addr
}

fn serve(rx: Receiver<Inbound>, answer: impl Fn(u64, &ClientCommand) -> ClientResult) {
    let count = AtomicU64::new(0);
    for item in rx {
        if let Inbound::Client { request, reply } = item {
            let n = count.fetch_add(1, Ordering::SeqCst);
            reply.send(ClientResponse {
                id: request.id,
                result: answer(n, &request.command),
            });
        }
    }
}

fn value(v: &str) -> ClientResult {
    ClientResult::Value { value: v.into() }
}

/// An address where nothing listens (a port just released).
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A "node" that completes the handshake, reads one request per
/// connection and closes without answering.
fn silent_closer() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(clone) = conn.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let _ = transport::auth::accept_handshake(&creds(), "fake", &mut reader, &mut &conn);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
        }
    });
    addr
}

#[test]
fn follows_leader_hints_in_both_spellings() {
    let leader = fake_node(|_, _| value("from the leader"));
    let port = leader.rsplit_once(':').expect("host:port").1.to_string();
    let by_addr = {
        let leader = leader.clone();
        fake_node(move |_, _| ClientResult::NotLeader {
            leader: Some(leader.clone()),
        })
    };
    let by_port = fake_node(move |_, _| ClientResult::NotLeader {
        leader: Some(port.clone()),
    });
    for follower in [by_addr, by_port] {
        let got = client::request(&creds(), &[follower], ClientCommand::Get, PATIENCE);
        assert_eq!(got, Ok(value("from the leader")));
    }
}

#[test]
fn skips_dead_nodes_and_waits_out_an_election() {
    // No leader known for the first two requests, as during an election.
    let node = fake_node(|n, _| {
        if n < 2 {
            ClientResult::NotLeader { leader: None }
        } else {
            ClientResult::Written { index: 3 }
        }
    });
    let got = client::request(
        &creds(),
        &[dead_addr(), node],
        ClientCommand::Set { value: "x".into() },
        PATIENCE,
    );
    assert_eq!(got, Ok(ClientResult::Written { index: 3 }));
}

#[test]
fn an_error_answer_is_final() {
    let node = fake_node(|_, _| ClientResult::Error {
        message: "disk full".into(),
    });
    let got = client::request(&creds(), &[node], ClientCommand::Get, PATIENCE);
    assert_eq!(
        got,
        Ok(ClientResult::Error {
            message: "disk full".into()
        })
    );
}

#[test]
fn no_node_means_a_clear_error_before_the_deadline() {
    let addr = dead_addr();
    let start = Instant::now();
    let err = client::request(
        &creds(),
        std::slice::from_ref(&addr),
        ClientCommand::Get,
        Duration::from_millis(300),
    )
    .expect_err("nobody is there");
    assert!(
        start.elapsed() < PATIENCE,
        "the client overran its deadline"
    );
    assert_eq!(
        err.to_string(),
        format!("no leader found among {addr} within 0.3s: last error: {addr}: connection refused (is a node running there?)")
    );
}

#[test]
fn a_set_whose_answer_is_lost_is_not_retried() {
    let addr = silent_closer();
    let err = client::request(
        &creds(),
        std::slice::from_ref(&addr),
        ClientCommand::Set { value: "x".into() },
        PATIENCE,
    )
    .expect_err("no answer");
    assert!(
        matches!(&err, ClientError::OutcomeUnknown { addr: a, .. } if *a == addr),
        "{err}"
    );
    assert!(
        err.to_string().contains("may or may not have been applied"),
        "{err}"
    );
}

#[test]
fn a_read_whose_answer_is_lost_is_retried_until_the_deadline() {
    let addr = silent_closer();
    let err = client::request(
        &creds(),
        &[addr],
        ClientCommand::Get,
        Duration::from_millis(300),
    )
    .expect_err("no answer");
    assert!(matches!(err, ClientError::NoLeader { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("closed the connection without answering"),
        "{err}"
    );
}

#[test]
fn a_node_that_never_answers_cannot_hold_the_client_past_its_deadline() {
    // Accepts connections and reads nothing: the request sits unanswered.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if let Ok(mut v) = keep.lock() {
                v.push(conn);
            }
        }
    });
    let start = Instant::now();
    let err = client::request(
        &creds(),
        &[addr],
        ClientCommand::Get,
        Duration::from_millis(300),
    )
    .expect_err("no answer");
    assert!(
        start.elapsed() < PATIENCE,
        "the client overran its deadline"
    );
    // It never answers the handshake, so that is where the client stops.
    assert!(
        err.to_string()
            .contains("no answer to the handshake within the deadline"),
        "{err}"
    );
}

// -- the binary ------------------------------------------------------------

/// Runs `raft ARGS` where it finds the tests' key as `raft-data/cluster.key`.
fn raft(args: &[&str]) -> std::process::Output {
    creds(); // the key file exists
    Command::new(env!("CARGO_BIN_EXE_raft"))
        .current_dir(work_dir())
        .args(args)
        .output()
        .expect("run the raft binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        &["0"][..],
        &["8000", "--peers", "8000"],
        &["8000", "--peers", ""],
        &["8000", "--heartbeat-ms", "0"],
        &["8000", "--election-timeout-ms", "300-150"],
        &["8000", "--bogus"],
        &["8000", "9000"],
        &["client", "8000"],
        &["client", "8000", "frob"],
        &["client", "--timeout", "-1", "8000", "get"],
    ] {
        let out = raft(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

#[test]
fn version_and_help_exit_0() {
    let out = raft(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("raft "));
    for args in [&["--help"][..], &["client", "--help"]] {
        let out = raft(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn a_taken_port_is_explained() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = raft(&[&port, "--peers", "none"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!("error: cannot listen on 127.0.0.1:{port}: address already in use (is another node running on this port?)")
    );
}

#[test]
fn client_commands_print_their_answers() {
    let status = Status {
        id: NodeId::new("8000"),
        role: "leader".into(),
        term: 2,
        leader: Some(NodeId::new("8000")),
        commit_index: 5,
        last_applied: 5,
        last_log_index: 5,
        value: "hello world".into(),
        members: vec![NodeId::new("8000"), NodeId::new("8001")],
        learners: vec![],
        snapshot_index: 0,
        last_heard_ms: [(NodeId::new("8001"), Some(12))].into(),
    };
    let answer = status.clone();
    let metrics = Metrics {
        fsyncs: 7,
        bytes_sent: 1234,
        messages_sent: 21,
        longest_sync_us: 180,
    };
    let counters = metrics.clone();
    let node = fake_node(move |_, cmd| match cmd {
        ClientCommand::Set { value } if value == "hello  world" => {
            ClientResult::Written { index: 6 }
        }
        ClientCommand::Set { value } => ClientResult::Error {
            message: format!("unexpected value {value:?}"),
        },
        ClientCommand::Get => value("hello world"),
        ClientCommand::Status => ClientResult::Status(answer.clone()),
        ClientCommand::Transfer { .. }
        | ClientCommand::AddMember { .. }
        | ClientCommand::RemoveMember { .. } => ClientResult::Done,
        ClientCommand::Log { .. } => ClientResult::Log { entries: vec![] },
        ClientCommand::Metrics => ClientResult::Metrics(counters.clone()),
    });
    let dead = dead_addr();
    let addrs = format!("{dead},{node}");

    let out = raft(&["client", &addrs, "set", "hello", "", "world"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "committed at index 6\n");

    let out = raft(&["client", &addrs, "get"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello world\n");

    let out = raft(&["client", &node, "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: Status = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON object");
    assert_eq!(printed, status);
    assert_eq!(text(&out.stdout).lines().count(), 1);

    let out = raft(&["client", &node, "metrics"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: Metrics = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON object");
    assert_eq!(printed, metrics);
    assert_eq!(text(&out.stdout).lines().count(), 1);

    let out = raft(&["client", "--timeout", "0.3", &dead, "get"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: no leader found among"),
        "{}",
        text(&out.stderr)
    );
}
