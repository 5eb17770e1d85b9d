//! The prompt: what a person types at a node's stdin, read on a thread of
//! its own and parsed into commands for the state-machine thread.

use crate::message::NodeId;
use crossbeam_channel::{bounded, Receiver};
use log::{debug, warn};
use std::io::{BufRead, Read};

/// Longest command line read from stdin.
pub const MAX_STDIN_LINE_BYTES: usize = 64 * 1024;

/// A line typed at the prompt, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PromptCommand {
    Set(String),
    Get,
    Status,
    Transfer(NodeId),
    Add(String),
    Remove(NodeId),
    Help,
    Empty,
    Unknown(String),
}

/// Parses one line. The first word is the command; for `set` the value is
/// the rest of the line after one space, verbatim (spaces included).
pub(crate) fn parse_prompt(line: &str) -> PromptCommand {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    let (word, rest) = match trimmed.split_once(' ') {
        Some((word, rest)) => (word, Some(rest)),
        None => (trimmed, None),
    };
    match (word, rest) {
        ("", _) => PromptCommand::Empty,
        // The value is the rest of the line, verbatim.
        ("set", Some(value)) if !value.is_empty() => PromptCommand::Set(value.to_string()),
        ("set", _) => PromptCommand::Unknown("set (with no value; usage: set <value>)".into()),
        ("get", None) => PromptCommand::Get,
        ("status", None) => PromptCommand::Status,
        ("help", None) => PromptCommand::Help,
        ("transfer", Some(target)) if !target.trim().is_empty() => {
            PromptCommand::Transfer(NodeId::new(target.trim()))
        }
        ("add", Some(address)) if !address.trim().is_empty() => {
            PromptCommand::Add(address.trim().to_string())
        }
        ("remove", Some(id)) if !id.trim().is_empty() => {
            PromptCommand::Remove(NodeId::new(id.trim()))
        }
        _ => PromptCommand::Unknown(trimmed.to_string()),
    }
}

pub(crate) fn print_help() {
    println!("Commands:");
    println!("  set <value>   replace the value (the rest of the line); at a follower it is forwarded to the leader");
    println!("  get           read the value, linearizably (through the leader)");
    println!("  status        this node's role, term, leader, indexes and value");
    println!("  transfer <id> (at the leader) hand leadership to member <id>, e.g. transfer 8001");
    println!("  add <addr>    (at the leader) add the node at PORT or HOST:PORT, learner first, e.g. add 8003");
    println!("  remove <id>   (at the leader) remove member <id>, e.g. remove 8003");
    println!("  help          this list");
    println!("  Ctrl+C        stop this node");
}

/// Reads stdin lines on their own thread. A line longer than
/// `MAX_STDIN_LINE_BYTES`, or not UTF-8, is refused with a message.
pub(crate) fn spawn_stdin_reader() -> Receiver<String> {
    let (tx, rx) = bounded(16);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            loop {
                let mut buf = Vec::new();
                let limit = (MAX_STDIN_LINE_BYTES + 1) as u64;
                match (&mut input).take(limit).read_until(b'\n', &mut buf) {
                    Ok(0) => return,
                    Ok(_) if buf.len() > MAX_STDIN_LINE_BYTES => {
                        println!("Line too long (more than {MAX_STDIN_LINE_BYTES} bytes); ignored");
                        skip_rest_of_line(&mut input);
                    }
                    Ok(_) => match String::from_utf8(buf) {
                        Ok(line) => {
                            if tx.send(line).is_err() {
                                return;
                            }
                        }
                        Err(_) => println!("That line is not valid UTF-8; ignored"),
                    },
                    Err(e) => {
                        debug!("stdin closed: {e}");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the stdin thread; the prompt is off: {e}");
    }
    rx
}

fn skip_rest_of_line(input: &mut impl BufRead) {
    let mut sink = Vec::new();
    loop {
        sink.clear();
        match input.by_ref().take(64 * 1024).read_until(b'\n', &mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) if sink.ends_with(b"\n") => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_takes_the_rest_of_the_line_verbatim() {
        assert_eq!(
            parse_prompt("set hello  world \n"),
            PromptCommand::Set("hello  world ".into())
        );
    }

    #[test]
    fn prompt_commands_parse() {
        assert_eq!(parse_prompt("get\n"), PromptCommand::Get);
        assert_eq!(parse_prompt("status"), PromptCommand::Status);
        assert_eq!(parse_prompt("help"), PromptCommand::Help);
        assert_eq!(parse_prompt("   \n"), PromptCommand::Empty);
        assert!(matches!(parse_prompt("set"), PromptCommand::Unknown(_)));
        assert!(matches!(
            parse_prompt("frobnicate 3"),
            PromptCommand::Unknown(_)
        ));
    }
}
