//! The `raft` command: wiring only. Parsing rules live in `config`,
//! `client` and `bench`; the node itself in `node::run`.
//!
//! `raft bench` is a module of this binary, not of the library: it measures
//! the node from outside, through `raft::client` and `metrics` requests, as
//! any other program could.

mod bench;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};
use raft::config::Exit;
use raft::{client, config, console, demo, node};
use std::process::ExitCode;

/// Run a Raft node, or talk to a cluster of them.
///
/// `raft 8000` starts the node on port 8000 of a three-node cluster on ports
/// 8000, 8001 and 8002 (start the other two likewise). Set RUST_LOG=debug to
/// watch every message.
#[derive(Parser, Debug)]
#[command(
    name = "raft",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(flatten)]
    node: Option<config::NodeArgs>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send one command to a cluster: `raft client 8000,8001,8002 set hello`.
    ///
    /// Tries each address in turn, follows the leader hints of followers, and
    /// retries until --timeout. Exit status: 0 on success, 1 on failure, 2 on a
    /// usage error.
    Client(client::ClientArgs),
    /// Measure a cluster: `raft bench --clients 64 --seconds 10`.
    ///
    /// Starts a local cluster of this binary (or uses --cluster), measures
    /// this machine's fsync and loopback floor, runs concurrent clients and
    /// prints committed writes/s, latency percentiles, fsyncs and bytes per
    /// entry, CPU and memory per node; --failover N also times the recovery
    /// from stopping the leader. Exit status: 0 on success, 1 on failure, 2
    /// on a usage error.
    Bench(bench::BenchArgs),
    /// The whole cluster in one terminal: `raft demo` (try it first).
    ///
    /// Starts three nodes (or --nodes N) of this binary on free loopback
    /// ports, prints their lines prefixed by node, and drives them from one
    /// prompt: set, get, status, log, kill/stop/start, pause/resume,
    /// partition/heal, slow/fast. Data lives in a temporary directory
    /// removed at exit, unless --data-dir is given.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    console::init_logging();
    match cli.command {
        Some(Command::Client(args)) => client::main(&args),
        Some(Command::Bench(args)) => bench::main(&args),
        Some(Command::Demo(args)) => demo::main(&args),
        None => {
            // clap requires PORT when there is no subcommand, so `node` is
            // there; the `None` arm only satisfies the type.
            let Some(node_args) = cli.node else {
                eprintln!("error: give a PORT to run a node, or `client` (see raft --help)");
                return ExitCode::from(Exit::Usage);
            };
            let opts = match node_args.validate() {
                Ok(opts) => opts,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(Exit::Usage);
                }
            };
            match node::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(Exit::Failure)
                }
            }
        }
    }
}

/// Help and version go to stdout with status 0, as clap does. A usage error
/// becomes one line on stderr (clap's own is several) and status 2.
fn clap_exit(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            if let Some(message) = subcommand_conflict(&e) {
                eprintln!("error: {message} (see raft --help)");
                return ExitCode::from(Exit::Usage);
            }
            let text = e.render().to_string();
            // clap's message runs up to the first blank line; the rest is a
            // usage reminder, which the hint below replaces.
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{} (see raft --help)", message.join(" "));
            ExitCode::from(Exit::Usage)
        }
    }
}

/// clap reads a second word after `raft PORT` as an attempted subcommand
/// and says "the subcommand '9000' cannot be used with '<PORT>'", which
/// puzzles people; say what is actually wrong.
fn subcommand_conflict(e: &clap::Error) -> Option<String> {
    if e.kind() != ErrorKind::ArgumentConflict {
        return None;
    }
    match e.get(ContextKind::InvalidSubcommand) {
        Some(ContextValue::String(word)) if word == "bench" => Some(
            "`bench` must come first, without a PORT or node options: raft bench [OPTIONS]"
                .to_string(),
        ),
        Some(ContextValue::String(word)) if word == "demo" => Some(
            "`demo` must come first, without a PORT or node options: raft demo [--nodes N]"
                .to_string(),
        ),
        Some(ContextValue::String(word)) if word == "client" => Some(
            "`client` must come first, without a PORT or node options: raft client [--timeout SECS] ADDRS COMMAND"
                .to_string(),
        ),
        Some(ContextValue::String(word)) => Some(format!(
            "unexpected argument '{word}': a node takes a single PORT"
        )),
        _ => None,
    }
}
