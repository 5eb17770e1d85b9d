//! Who may speak for the cluster: attacks made with nothing but a socket
//! to a node's port, against real `raft` processes.
//!
//! Each attack runs twice. Against a cluster as it runs by default (with
//! its cluster key) it must be refused, and the test checks the harm did
//! not happen: no value injected, committed values identical on every
//! node, one leader per term, no acknowledged write lost, no leadership
//! churn, no wedged term, and the node of another cluster told why. Against
//! the same cluster started with the test-only `--insecure-no-auth`, the
//! same attack must succeed, which shows that it is the key that stops it
//! (and that each test can tell).
//!
//! The forged frames are plain JSON lines written to a fresh connection:
//! exactly what an attacker without the key can send. With the key in use
//! the node answers such a line with a refusal and closes the connection,
//! so reading the connection to its end is the moment the frame was
//! refused; no test waits a fixed time and hopes.

mod process_harness;

use process_harness::{run_raft, text, Cluster, INSECURE};
use raft::message::{
    Entry, EntryData, Frame, Membership, Message, MessageBody, NodeId, Snapshot, MAX_TERM,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// A deadline for anything a cluster should do; tests wait on events.
const LONG: Duration = Duration::from_secs(20);

/// Election timeouts long enough that no election starts by itself while
/// a test watches terms and leaders, even on a loaded machine.
const CALM: [&str; 4] = [
    "--election-timeout-ms",
    "1000-2000",
    "--heartbeat-ms",
    "100",
];

/// A node id that is no member of any test cluster.
const STRANGER: &str = "9399";

fn cluster(secure: bool) -> Cluster {
    let mut options = CALM.to_vec();
    if !secure {
        options.push(INSECURE);
    }
    Cluster::start_with(3, &options)
}

/// A cluster at rest: a leader, and every node holding, committing and
/// applying the same log, whose last entry is `index` of `term`.
struct Settled {
    leader: usize,
    term: u64,
    index: u64,
}

fn settle(c: &mut Cluster) -> Settled {
    let all = c.all();
    c.wait_for_leader(&all, LONG);
    let index = c.write(&all, "BASE", LONG);
    let (leader, statuses) = c.wait_for_agreement(&all, LONG);
    let term = statuses[0].term;
    for i in c.all() {
        c.wait_for_status(
            i,
            "hold, commit and apply the base write",
            |s| s.term == term && s.last_log_index == index && s.last_applied == index,
            LONG,
        );
    }
    Settled {
        leader,
        term,
        index,
    }
}

/// Writes `msg` as one plain JSON line on a new connection to node `to`,
/// and returns what the node wrote back before the connection ended.
fn forge(c: &Cluster, to: usize, msg: Message) -> String {
    let mut s = TcpStream::connect(c.nodes[to].addr()).expect("connect");
    s.set_read_timeout(Some(LONG)).expect("read timeout");
    let mut line = serde_json::to_vec(&Frame::Peer(msg)).expect("encode");
    line.push(b'\n');
    s.write_all(&line).expect("send the forged frame");
    // The end of our side: the node closes its side once it is done.
    let _ = s.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the node neither answered nor closed: {e}"),
    }
    text(&answer)
}

/// The forged frame was refused for want of the key.
fn assert_refused(answer: &str) {
    assert!(
        answer.starts_with("{\"refused\":") && answer.contains("authenticated"),
        "expected a refusal, got {answer:?}"
    );
}

fn message(c: &Cluster, from: &str, to: usize, term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId::new(from),
        to: NodeId::new(c.nodes[to].id.as_str()),
        term,
        body,
    }
}

fn append(prev: (u64, u64), entries: Vec<Entry>, leader_commit: u64) -> MessageBody {
    MessageBody::AppendEntries {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit,
        read_seq: 0,
        seq: 0,
    }
}

fn command(index: u64, term: u64, value: &str) -> Entry {
    Entry {
        term,
        index,
        data: EntryData::Command(value.to_string()),
    }
}

/// The values node `i` applied, in order (from its "updated value" lines).
fn applied(c: &mut Cluster, i: usize) -> Vec<String> {
    let prefix = format!("Node {} updated value to: ", c.nodes[i].id);
    c.lines(i)
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// After a refused attack: a real write still goes through, and then
/// every node has applied the same values in the same order, none of them
/// `forged`.
fn assert_untouched(c: &mut Cluster, forged: &[&str]) {
    let all = c.all();
    let index = c.write(&all, "AFTER", LONG);
    for i in c.all() {
        c.wait_for_status(
            i,
            "apply the write after the attack",
            |s| s.last_applied >= index && s.value == "AFTER",
            LONG,
        );
    }
    let first = applied(c, 0);
    for i in c.all() {
        let values = applied(c, i);
        assert_eq!(values, first, "node {} applied other values", c.nodes[i].id);
        for bad in forged {
            assert!(!values.iter().any(|v| v == bad), "{bad} got in: {values:?}");
        }
    }
}

/// Every "elected as leader for term N" line of every node: no term may
/// have two.
fn assert_one_leader_per_term(c: &mut Cluster) {
    let mut leaders: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for i in c.all() {
        for line in c.lines(i) {
            if let Some(term) = line
                .split_once(" elected as leader for term ")
                .and_then(|(_, t)| t.parse().ok())
            {
                leaders
                    .entry(term)
                    .or_default()
                    .insert(c.nodes[i].id.clone());
            }
        }
    }
    for (term, ids) in &leaders {
        assert_eq!(ids.len(), 1, "two leaders in term {term}: {ids:?}");
    }
}

// ---------------------------------------------------------------------------
// 1. A stranger injects a value
// ---------------------------------------------------------------------------

fn stranger_injects_a_value(secure: bool) {
    let mut c = cluster(secure);
    let s = settle(&mut c);
    // In a newer term: a stranger claiming to lead the current term, which
    // has a leader, is ignored even without the key (a second leader in a
    // term is a message Raft rules out: see `a_member_claiming_a_second_leader_is_ignored_with_a_warning`).
    let term = s.term + 1;
    for i in c.all() {
        let entry = command(s.index + 1, s.term, "FROM-STRANGER");
        let body = append((s.index, s.term), vec![entry], s.index + 1);
        let answer = forge(&c, i, message(&c, STRANGER, i, term, body));
        if secure {
            assert_refused(&answer);
        }
    }
    if secure {
        assert_untouched(&mut c, &["FROM-STRANGER"]);
    } else {
        let follower = c.others(s.leader)[0];
        c.wait_for_line(
            follower,
            |l| l.ends_with("updated value to: FROM-STRANGER"),
            LONG,
        );
    }
}

#[test]
fn attack_1_a_stranger_cannot_inject_a_value() {
    stranger_injects_a_value(true);
}

#[test]
fn attack_1_without_the_key_a_stranger_injects_a_value() {
    stranger_injects_a_value(false);
}

// ---------------------------------------------------------------------------
// 2. Forged entries make committed logs disagree
// ---------------------------------------------------------------------------

fn committed_logs_disagree(secure: bool) {
    let mut c = cluster(secure);
    let s = settle(&mut c);
    let leader_id = c.nodes[s.leader].id.clone();
    let followers = c.others(s.leader);
    for (&f, value) in followers.iter().zip(["EVIL-A", "EVIL-B"]) {
        let entry = command(s.index + 1, s.term, value);
        let body = append((s.index, s.term), vec![entry], s.index + 1);
        let answer = forge(&c, f, message(&c, &leader_id, f, s.term, body));
        if secure {
            assert_refused(&answer);
        }
    }
    if secure {
        assert_untouched(&mut c, &["EVIL-A", "EVIL-B"]);
        assert_one_leader_per_term(&mut c);
    } else {
        let (a, b) = (followers[0], followers[1]);
        c.wait_for_line(a, |l| l.ends_with("updated value to: EVIL-A"), LONG);
        c.wait_for_line(b, |l| l.ends_with("updated value to: EVIL-B"), LONG);
    }
}

#[test]
fn attack_2_forged_entries_cannot_make_committed_logs_disagree() {
    committed_logs_disagree(true);
}

#[test]
fn attack_2_without_the_key_committed_logs_disagree() {
    committed_logs_disagree(false);
}

// ---------------------------------------------------------------------------
// 3. A forged snapshot splits a node off: two leaders
// ---------------------------------------------------------------------------

fn forged_snapshot_splits_the_cluster(secure: bool) {
    let mut c = cluster(secure);
    let s = settle(&mut c);
    let leader_id = c.nodes[s.leader].id.clone();
    let victim = c.others(s.leader)[0];
    let victim_id = NodeId::new(c.nodes[victim].id.as_str());
    let snapshot = Snapshot {
        last_included_index: s.index + 1,
        last_included_term: s.term,
        membership: Membership {
            voters: BTreeMap::from([(victim_id.clone(), c.nodes[victim].addr())]),
            learners: BTreeMap::new(),
            incarnations: BTreeMap::new(),
        },
        data: "EVIL-SNAPSHOT".into(),
    };
    let body = MessageBody::InstallSnapshot {
        last_included_index: s.index + 1,
        last_included_term: s.term,
        offset: 0,
        data: serde_json::to_string(&snapshot).expect("encode"),
        done: true,
    };
    // In a newer term, as the leader of it: a snapshot from the leader of
    // the current term, while that leader goes on sending it heartbeats,
    // would keep the victim following it.
    let term = s.term + 1;
    let answer = forge(&c, victim, message(&c, &leader_id, victim, term, body));
    if secure {
        assert_refused(&answer);
        assert_untouched(&mut c, &["EVIL-SNAPSHOT"]);
        for i in c.all() {
            let status = c.status(i).expect("status");
            assert_eq!(status.members.len(), 3, "{status:?}");
        }
        assert_one_leader_per_term(&mut c);
    } else {
        // The victim believes it is alone, and leads, while the others
        // still count it as one of three: it commits writes on its own,
        // which no majority holds.
        c.wait_for_status(
            victim,
            "lead a cluster of one",
            |st| st.role == "leader" && st.members == [victim_id.clone()],
            LONG,
        );
        let witness = *c
            .others(victim)
            .iter()
            .find(|&&i| i != s.leader)
            .expect("a third node");
        let creds = c.credentials();
        let set = raft::message::ClientCommand::Set {
            value: "SPLIT".into(),
        };
        let outcome = raft::client::request(&creds, &[c.nodes[victim].addr()], set, LONG);
        assert!(
            matches!(outcome, Ok(raft::message::ClientResult::Written { .. })),
            "{outcome:?}"
        );
        let status = c.status(witness).expect("status");
        assert_eq!(status.members.len(), 3, "{status:?}");
        assert_ne!(status.value, "SPLIT", "{status:?}");
    }
}

#[test]
fn attack_3_a_forged_snapshot_cannot_make_two_leaders() {
    forged_snapshot_splits_the_cluster(true);
}

#[test]
fn attack_3_without_the_key_a_forged_snapshot_splits_a_node_off() {
    forged_snapshot_splits_the_cluster(false);
}

/// What the key cannot stop: a member that holds it and lies (a bug, or a
/// stolen key; run here without the key, which comes to the same). A
/// stranger claiming to lead the current term, which already has a leader,
/// is ignored by every node (Election Safety, see `core::impossible`), and
/// each says so in one warning line that names the sender and what it
/// claimed.
#[test]
fn a_member_claiming_a_second_leader_is_ignored_with_a_warning() {
    let mut c = cluster(false);
    let s = settle(&mut c);
    for i in c.all() {
        let entry = command(s.index + 1, s.term, "FROM-LIAR");
        let body = append((s.index, s.term), vec![entry], s.index + 1);
        forge(&c, i, message(&c, STRANGER, i, s.term, body));
    }
    let leader_id = c.nodes[s.leader].id.clone();
    for i in c.all() {
        let line = c.wait_for_err_line(i, |l| l.contains("ignored a message"), LONG);
        let from = format!("from member {STRANGER}");
        let claim = format!(
            "it claims to lead term {}, whose leader is {leader_id}",
            s.term
        );
        for part in [from.as_str(), claim.as_str(), "has a bug"] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
    }
    assert_untouched(&mut c, &["FROM-LIAR"]);
    assert_one_leader_per_term(&mut c);
}

// ---------------------------------------------------------------------------
// 4. Forged acknowledgements: an acknowledged write is lost
// ---------------------------------------------------------------------------

fn forged_acks_lose_a_write(secure: bool) {
    let mut c = cluster(secure);
    let s = settle(&mut c);
    let followers = c.others(s.leader);
    for &f in &followers {
        c.signal(f, "STOP");
    }
    // The write: in flight while the forged acknowledgements arrive.
    let creds = c.credentials();
    let leader_addr = c.nodes[s.leader].addr();
    let mark = c.mark(s.leader);
    let writer = std::thread::spawn(move || {
        let set = raft::message::ClientCommand::Set {
            value: "ACKED-THEN-LOST".into(),
        };
        raft::client::request(&creds, &[leader_addr], set, Duration::from_secs(3))
    });
    c.wait_for_line_since(
        s.leader,
        mark,
        |l| l.ends_with("setting value to: ACKED-THEN-LOST"),
        LONG,
    );
    for &f in &followers {
        let from = c.nodes[f].id.clone();
        let body = MessageBody::AppendEntriesResponse {
            success: true,
            match_index: s.index + 1,
            conflict: None,
            read_seq: 0,
            seq: 0,
            incarnation: 0,
        };
        let answer = forge(&c, s.leader, message(&c, &from, s.leader, s.term, body));
        if secure {
            assert_refused(&answer);
        }
    }
    let outcome = writer.join().expect("no panic");
    let written = matches!(outcome, Ok(raft::message::ClientResult::Written { .. }));
    if secure {
        // No follower could have it: it must not be acknowledged.
        assert!(
            !written,
            "acknowledged with both followers stopped: {outcome:?}"
        );
        for &f in &followers {
            c.signal(f, "CONT");
        }
        assert_untouched(&mut c, &[]);
    } else {
        assert!(
            written,
            "the forged acknowledgements did not work: {outcome:?}"
        );
        // Only the leader ever had it (the followers never ran to read
        // it): a crash of all three, and the two followers, a majority,
        // go on without it.
        c.kill9_all(&c.all());
        for &f in &followers {
            c.start_node(f);
        }
        let new = c.wait_for_leader(&followers, LONG);
        let value = c.status(new).expect("status").value;
        assert_eq!(value, "BASE", "the acknowledged write survived");
    }
}

#[test]
fn attack_4_forged_acknowledgements_cannot_lose_an_acknowledged_write() {
    forged_acks_lose_a_write(true);
}

#[test]
fn attack_4_without_the_key_an_acknowledged_write_is_lost() {
    forged_acks_lose_a_write(false);
}

// ---------------------------------------------------------------------------
// 5. Forged TimeoutNow: leadership churn
// ---------------------------------------------------------------------------

fn forged_timeout_now_churns(secure: bool) {
    let mut c = cluster(secure);
    let s = settle(&mut c);
    let all = c.all();
    let (mut leader, mut term) = (s.leader, s.term);
    for _ in 0..3 {
        let target = c.others(leader)[0];
        let from = c.nodes[leader].id.clone();
        let body = MessageBody::TimeoutNow;
        let answer = forge(&c, target, message(&c, &from, target, term, body));
        if secure {
            assert_refused(&answer);
            continue;
        }
        // Without the key: the target takes over, in a new term.
        let deadline = Instant::now() + LONG;
        loop {
            let (now_leader, statuses) = c.wait_for_agreement(&all, LONG);
            if statuses[0].term > term {
                (leader, term) = (now_leader, statuses[0].term);
                break;
            }
            assert!(Instant::now() < deadline, "no election followed");
            std::thread::sleep(process_harness::POLL);
        }
    }
    let (now_leader, statuses) = c.wait_for_agreement(&all, LONG);
    if secure {
        assert_eq!((now_leader, statuses[0].term), (s.leader, s.term), "churn");
    } else {
        assert!(statuses[0].term >= s.term + 3, "{statuses:?}");
    }
}

#[test]
fn attack_5_forged_timeout_now_cannot_churn_leadership() {
    forged_timeout_now_churns(true);
}

#[test]
fn attack_5_without_the_key_forged_timeout_now_churns_leadership() {
    forged_timeout_now_churns(false);
}

// ---------------------------------------------------------------------------
// 6. A term at the top of u64 wedges the cluster
// ---------------------------------------------------------------------------

fn huge_terms(secure: bool) {
    let mut c = cluster(secure);
    let s = settle(&mut c);
    let follower = c.others(s.leader)[0];
    // At the top of u64: refused as malformed, key or no key.
    let body = append((0, 0), Vec::new(), 0);
    let answer = forge(
        &c,
        follower,
        message(&c, STRANGER, follower, u64::MAX, body),
    );
    if secure {
        assert_refused(&answer);
    } else {
        c.wait_for_err_line(follower, |l| l.contains("above the highest term"), LONG);
    }
    // At the highest term a node accepts: only a forger can send it.
    let body = append((0, 0), Vec::new(), 0);
    let answer = forge(
        &c,
        follower,
        message(&c, STRANGER, follower, MAX_TERM, body),
    );
    if secure {
        assert_refused(&answer);
        let all = c.all();
        let (_, statuses) = c.wait_for_agreement(&all, LONG);
        assert!(statuses.iter().all(|st| st.term == s.term), "{statuses:?}");
        assert_untouched(&mut c, &[]);
    } else {
        // No term follows MAX_TERM: no election can ever succeed again.
        c.wait_for_status(
            follower,
            "reach the last term",
            |st| st.term == MAX_TERM,
            LONG,
        );
    }
}

#[test]
fn attack_6_a_huge_term_cannot_wedge_the_cluster() {
    huge_terms(true);
}

#[test]
fn attack_6_without_the_key_the_highest_term_wedges_the_cluster() {
    huge_terms(false);
}

#[test]
fn attack_6_a_snapshot_interval_that_would_wrap_is_refused() {
    let out = run_raft(
        &["8000", "--snapshot-entries", "18446744073709551615"],
        Duration::from_secs(10),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--snapshot-entries") && err.contains("1 to 1000000000"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// 7. A node of another cluster is told why, once
// ---------------------------------------------------------------------------

fn node_of_another_cluster(secure: bool) {
    let mut options = CALM.to_vec();
    if !secure {
        options.push(INSECURE);
    }
    let mut c = Cluster::start_with(3, &options);
    let all = c.all();
    c.wait_for_leader(&all, LONG);
    // Started from another directory: another key file, another cluster.
    let mut other = Cluster::new_with(0, &options);
    let members = c.addrs(&all);
    let stranger = other.start_new_node(&["--peers", &members]);
    let started = Instant::now();
    let why = if secure {
        "has a different cluster key"
    } else {
        "member"
    };
    let told = other.wait_for_err_line(stranger, |l| l.contains(why), LONG);
    for i in c.all() {
        c.wait_for_err_line(i, |l| l.contains(why), LONG);
    }
    if secure {
        let (ours, theirs) = (
            c.credentials().cluster_id().expect("id").to_string(),
            other.credentials().cluster_id().expect("id").to_string(),
        );
        assert!(told.contains(&ours) && told.contains(&theirs), "{told}");
    }
    // The cluster carries on, and nobody floods its log: at most one such
    // line per kind every REFUSAL_LOG_INTERVAL (10 s).
    c.write(&all, "STILL-HERE", LONG);
    let allowed = 1 + started.elapsed().as_secs() / 10;
    for i in c.all() {
        let said = c.err_lines(i).iter().filter(|l| l.contains(why)).count() as u64;
        assert!(
            said <= allowed,
            "node {} said it {said} times",
            c.nodes[i].id
        );
    }
    let said = other
        .err_lines(stranger)
        .iter()
        .filter(|l| l.contains(why))
        .count() as u64;
    assert!(said <= allowed, "the stranger said it {said} times");
}

#[test]
fn attack_7_a_node_of_another_cluster_is_told_why_once() {
    node_of_another_cluster(true);
}

#[test]
fn attack_7_without_the_key_a_node_of_another_cluster_is_told_only_that_it_is_no_member() {
    node_of_another_cluster(false);
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

#[test]
fn a_client_without_the_key_is_told_where_to_find_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(process_harness::RAFT)
        .current_dir(dir.path())
        .args(["client", "--timeout", "0.5", "8000", "get"])
        .output()
        .expect("run raft client");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("raft-data/cluster.key") && err.contains("--cluster-key"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Cluster identity on disk
// ---------------------------------------------------------------------------

/// A node keeps the id of its cluster in its data directory. With the key
/// file replaced (a new key is a new cluster) it refuses to start, naming
/// both clusters; with its data directory wiped it starts again, taking the
/// id from the key file still beside it.
#[test]
fn a_node_keeps_its_cluster_and_a_wiped_node_takes_it_from_the_key_file() {
    let mut c = Cluster::start_with(3, &CALM);
    let all = c.all();
    c.wait_for_leader(&all, LONG);
    let ours = c.credentials().cluster_id().expect("id").to_string();
    let recorded = |c: &Cluster, i: usize| {
        std::fs::read_to_string(c.nodes[i].data_dir.join("cluster-id")).unwrap_or_default()
    };
    assert_eq!(recorded(&c, 2).trim(), ours);
    c.kill9(2);

    // Another cluster's key file in its place: node 2 refuses to start.
    let key_path = c.key_path();
    let saved = std::fs::read(&key_path).expect("read the key");
    std::fs::remove_file(&key_path).expect("remove the key");
    let theirs = raft::transport::ClusterKey::load_or_create(&key_path)
        .expect("a new key")
        .0;
    let args: Vec<&str> = c.nodes[2].args().iter().map(String::as_str).collect();
    let out = std::process::Command::new(process_harness::RAFT)
        .current_dir(c.dir())
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the node");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&ours) && err.contains(theirs.cluster_id()),
        "{err}"
    );

    // The right key back, the data directory wiped: it starts, and
    // records the cluster of the key file.
    std::fs::write(&key_path, saved).expect("restore the key");
    std::fs::remove_dir_all(&c.nodes[2].data_dir).expect("wipe the data directory");
    c.start_node(2);
    assert_eq!(recorded(&c, 2).trim(), ours);
}
