//! TEMPORARY stand-in for the driver (the state-machine thread), so that the
//! command line can be built and tried before the real `node::run` lands.
//! It binds the node's port, says so, and returns. Replace this whole file.

use crate::config::NodeOptions;
use crate::transport;

/// Runs a node until it is shut down. This stand-in only binds the port.
pub fn run(opts: NodeOptions) -> Result<(), String> {
    let _listener = transport::bind(&opts.listen_addr)?;
    let peers: Vec<String> = opts
        .peers
        .iter()
        .map(|(id, addr)| format!("{id} ({addr})"))
        .collect();
    println!(
        "Node {} listening on {} with peers [{}] (the Raft driver is not wired in yet)",
        opts.id,
        opts.listen_addr,
        peers.join(", ")
    );
    Ok(())
}
