//! What a person types at `raft demo`'s prompt, parsed.

use crate::prompt::{DEFAULT_LOG_ROWS, MAX_LOG_ROWS};

/// A line typed at the demo's prompt, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DemoCommand {
    Set(String),
    Get,
    Status,
    Log(usize),
    /// A command about one node: its name, and the node's id.
    OnNode(NodeAction, String),
    Heal,
    Slow(bool),
    Help,
    Quit,
    Empty,
    Usage(String),
    Unknown(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeAction {
    Kill,
    Stop,
    Start,
    Pause,
    Resume,
    Partition,
}

impl NodeAction {
    pub(super) fn name(self) -> &'static str {
        match self {
            NodeAction::Kill => "kill",
            NodeAction::Stop => "stop",
            NodeAction::Start => "start",
            NodeAction::Pause => "pause",
            NodeAction::Resume => "resume",
            NodeAction::Partition => "partition",
        }
    }
}

pub(super) fn parse_demo(line: &str) -> DemoCommand {
    let trimmed = line.trim();
    let (word, rest) = match trimmed.split_once(char::is_whitespace) {
        Some((word, rest)) => (word.to_ascii_lowercase(), rest.trim_start()),
        None => (trimmed.to_ascii_lowercase(), ""),
    };
    let args: Vec<&str> = rest.split_whitespace().collect();
    let usage = |text: &str| DemoCommand::Usage(format!("usage: {text}"));
    let action = match word.as_str() {
        "kill" => Some(NodeAction::Kill),
        "stop" => Some(NodeAction::Stop),
        "start" => Some(NodeAction::Start),
        "pause" => Some(NodeAction::Pause),
        "resume" => Some(NodeAction::Resume),
        "partition" => Some(NodeAction::Partition),
        _ => None,
    };
    if let Some(action) = action {
        return match args.as_slice() {
            [id] => DemoCommand::OnNode(action, id.to_string()),
            _ => usage(&format!(
                "{} <id>, like {} 8001",
                action.name(),
                action.name()
            )),
        };
    }
    match (word.as_str(), args.as_slice()) {
        ("", _) => DemoCommand::Empty,
        ("set", []) => usage("set <value>, like set hello world"),
        ("set", _) => DemoCommand::Set(rest.to_string()),
        ("get", []) => DemoCommand::Get,
        ("status", []) => DemoCommand::Status,
        ("log", []) => DemoCommand::Log(DEFAULT_LOG_ROWS),
        ("log", [n]) => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_LOG_ROWS).contains(&n) => DemoCommand::Log(n),
            _ => usage(&format!("log [N], N from 1 to {MAX_LOG_ROWS}")),
        },
        ("heal", []) => DemoCommand::Heal,
        ("slow", []) => DemoCommand::Slow(true),
        ("fast", []) => DemoCommand::Slow(false),
        ("help" | "?", _) => DemoCommand::Help,
        ("quit" | "exit", []) => DemoCommand::Quit,
        ("get" | "status" | "heal" | "slow" | "fast" | "quit" | "exit", _) => {
            usage(&format!("{word} (it takes nothing after it)"))
        }
        ("log", _) => usage("log [N], like log 20"),
        _ => DemoCommand::Unknown(trimmed.to_string()),
    }
}

pub(super) const HELP: &[&str] = &[
    "Commands (each node's lines are prefixed by its id):",
    "  set <value>       write the value through the leader",
    "  get               read it, linearizably",
    "  status            a table of every node: role, term, leader, indexes, value",
    "  log [N]           the leader's last N log entries (default 10)",
    "  kill <id>         kill -9 the node: a crash",
    "  stop <id>         stop it as Ctrl+C does (a leader hands over first)",
    "  start <id>        start a killed or stopped node again, on its data",
    "  pause <id>        freeze it (SIGSTOP): alive but silent, like a long GC pause",
    "  resume <id>       let it run again (SIGCONT)",
    "  partition <id>    cut it off from every other node (messages dropped both ways)",
    "  heal              end every partition",
    "  slow / fast       run every node's clock 20 times slower (watch an election), or normally",
    "  help              this list",
    "  quit              stop every node and clean up (also Ctrl+C or Ctrl+D)",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_commands_parse_forgivingly() {
        assert_eq!(
            parse_demo(" set  hello world "),
            DemoCommand::Set("hello world".into())
        );
        assert_eq!(parse_demo("GET "), DemoCommand::Get);
        assert_eq!(parse_demo("status"), DemoCommand::Status);
        assert_eq!(parse_demo("log"), DemoCommand::Log(DEFAULT_LOG_ROWS));
        assert_eq!(parse_demo("log 4"), DemoCommand::Log(4));
        assert_eq!(
            parse_demo("kill 8001"),
            DemoCommand::OnNode(NodeAction::Kill, "8001".into())
        );
        assert_eq!(
            parse_demo("partition  8002 "),
            DemoCommand::OnNode(NodeAction::Partition, "8002".into())
        );
        assert_eq!(parse_demo("heal"), DemoCommand::Heal);
        assert_eq!(parse_demo("slow"), DemoCommand::Slow(true));
        assert_eq!(parse_demo("fast"), DemoCommand::Slow(false));
        assert_eq!(parse_demo("quit"), DemoCommand::Quit);
        assert_eq!(parse_demo(""), DemoCommand::Empty);
        assert_eq!(parse_demo("frob"), DemoCommand::Unknown("frob".into()));
    }

    #[test]
    fn demo_commands_without_their_argument_get_usage() {
        for line in [
            "set",
            "kill",
            "stop",
            "start",
            "pause 1 2",
            "resume",
            "partition",
            "log x",
            "heal now",
            "get x",
        ] {
            assert!(
                matches!(parse_demo(line), DemoCommand::Usage(_)),
                "{line}: {:?}",
                parse_demo(line)
            );
        }
    }

    #[test]
    fn help_names_every_command() {
        let help = HELP.join("\n");
        for word in [
            "set",
            "get",
            "status",
            "log",
            "kill",
            "stop",
            "start",
            "pause",
            "resume",
            "partition",
            "heal",
            "slow",
            "fast",
            "help",
            "quit",
        ] {
            assert!(
                help.contains(&format!("  {word}")) || help.contains(&format!("/ {word}")),
                "{word}"
            );
        }
    }
}
