//! `--join`: a node that joins a running cluster starts with no members
//! but the nodes it was told to join, asks the leader (from a thread of its
//! own) to add it, and learns everything else from the log.

use super::*;

/// How long `--join` keeps asking (no leader yet, another membership
/// change in progress, ...).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between two attempts to join.
pub const JOIN_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// A joining node knows no members until the leader's log (or snapshot)
/// reaches it, yet it must answer the leader before that. The nodes it was
/// told to join are members, and their ids follow from their addresses, so
/// it starts with writers to those.
pub(super) fn join_seeds(join: Option<&[String]>) -> BTreeMap<NodeId, String> {
    join.unwrap_or_default()
        .iter()
        .filter_map(|address| crate::config::parse_address(address).ok())
        .collect()
}

/// `--join`: asks the cluster, from a thread of its own, to add this node.
/// The leader adds it as a learner; it learns everything else from the log.
pub(super) fn ask_to_join(creds: Credentials, id: NodeId, address: String, cluster: Vec<String>) {
    let spawned = std::thread::Builder::new()
        .name("join".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + JOIN_TIMEOUT;
            loop {
                let command = ClientCommand::AddMember {
                    address: address.clone(),
                };
                let outcome = client::request(&creds, &cluster, command, FORWARD_TIMEOUT);
                // Anything but success (no leader yet, a change in
                // progress, leadership moving) is worth another try until
                // the deadline.
                let last_error = match &outcome {
                    Ok(ClientResult::Written { .. } | ClientResult::Done) => {
                        say!("Node {id} was added to the cluster as a learner");
                        return;
                    }
                    Ok(ClientResult::Error { message }) if message.contains("already a member") => {
                        say!("Node {id} is already a member of the cluster");
                        return;
                    }
                    Ok(ClientResult::Error { message }) => message.clone(),
                    Ok(other) => format!("unexpected answer {other:?}"),
                    Err(e) => e.to_string(),
                };
                if std::time::Instant::now() > deadline {
                    say!(
                        "Node {id} could not join the cluster at {}: {last_error}",
                        cluster.join(",")
                    );
                    return;
                }
                debug!("join attempt failed ({last_error}); retrying");
                std::thread::sleep(JOIN_RETRY_INTERVAL);
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start a thread to join the cluster: {e}");
    }
}
