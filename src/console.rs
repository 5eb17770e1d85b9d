//! The console: every line a node (or `raft demo`) prints for a person goes
//! through [`say`] (stdout) or [`complain`] (stderr), and nowhere else.
//! That one place keeps three promises:
//!
//! 1. **Text from outside cannot act on the terminal.** A value, an address,
//!    a stranger's id: any of them could hold a newline (a forged "Node 8000
//!    elected as leader" line on every operator's screen) or an escape
//!    sequence. [`say`] escapes every control character (`\n`, `\x1b`, ...)
//!    of the whole line, so each call prints exactly one line.
//! 2. **A closed stdout or stderr never stops the node.** `raft 8000 | head`
//!    or a `tee` whose reader died turns writes into `EPIPE`; `println!`
//!    would panic. Here the first failure is noted (once, on the other
//!    stream if it is still open) and later lines are dropped: the node goes
//!    on serving its peers and clients.
//! 3. **The prompt is not torn.** When stdin and stdout are both terminals,
//!    a line printed while `> ` is shown first clears the prompt's line
//!    (`\r` and erase-line), prints, then draws `> ` again. What the person
//!    had typed is still in the terminal's line buffer (Enter sends it);
//!    Ctrl+R shows it again. A line editor would redraw it by itself, but
//!    would be a new dependency and take over the terminal, for lines that
//!    arrive a few times a second at most.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

/// What the prompt looks like.
pub const PROMPT: &str = "> ";

/// Clears the terminal line the cursor is on: carriage return, erase line.
const CLEAR_LINE: &str = "\r\x1b[K";

struct Console {
    /// The prompt is drawn only when stdin and stdout are terminals.
    prompt_enabled: bool,
    /// `> ` is on the screen and nothing has been printed after it.
    prompt_shown: bool,
    stdout_gone: bool,
    stderr_gone: bool,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    prompt_enabled: false,
    prompt_shown: false,
    stdout_gone: false,
    stderr_gone: false,
});

fn console() -> std::sync::MutexGuard<'static, Console> {
    // A thread that panicked while printing leaves nothing half-done that
    // matters here: keep printing.
    CONSOLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Turns the prompt on if stdin and stdout are both terminals; returns
/// whether it is on.
pub fn enable_prompt() -> bool {
    let on = io::stdin().is_terminal() && io::stdout().is_terminal();
    console().prompt_enabled = on;
    on
}

/// Draws `> ` (if the prompt is on and not already shown).
pub fn show_prompt() {
    let mut c = console();
    if c.prompt_enabled && !c.prompt_shown && !c.stdout_gone {
        let mut out = io::stdout().lock();
        let ok = out.write_all(PROMPT.as_bytes()).and_then(|()| out.flush());
        drop(out);
        match ok {
            Ok(()) => c.prompt_shown = true,
            Err(e) => stdout_failed(&mut c, &e),
        }
    }
}

/// The person pressed Enter: the prompt's line is theirs, not ours to clear.
pub fn prompt_answered() {
    console().prompt_shown = false;
}

/// Prints one line on stdout, every control character escaped.
pub fn say(line: &str) {
    say_prefixed("", line);
}

/// Prints `prefix` (trusted: our own text, which may colour the line) and
/// then `line` (escaped) as one line on stdout.
pub fn say_prefixed(prefix: &str, line: &str) {
    let mut c = console();
    if c.stdout_gone {
        return;
    }
    let redraw = c.prompt_shown;
    let mut text = String::with_capacity(prefix.len() + line.len() + 16);
    if redraw {
        text.push_str(CLEAR_LINE);
    }
    text.push_str(prefix);
    text.push_str(&escape(line));
    text.push('\n');
    if redraw {
        text.push_str(PROMPT);
    }
    let mut out = io::stdout().lock();
    let ok = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    drop(out);
    if let Err(e) = ok {
        stdout_failed(&mut c, &e);
    }
}

/// Prints one line on stderr, every control character escaped (warnings
/// and errors; the log when `RUST_LOG` is set).
pub fn complain(line: &str) {
    let mut c = console();
    if c.stderr_gone {
        return;
    }
    // stderr may share the terminal with the prompt.
    let redraw = c.prompt_shown && !c.stdout_gone;
    if redraw {
        let mut out = io::stdout().lock();
        let _ = out
            .write_all(CLEAR_LINE.as_bytes())
            .and_then(|()| out.flush());
    }
    let text = format!("{}\n", escape(line));
    let ok = io::stderr().lock().write_all(text.as_bytes());
    if redraw {
        let mut out = io::stdout().lock();
        let _ = out.write_all(PROMPT.as_bytes()).and_then(|()| out.flush());
    }
    if let Err(e) = ok {
        c.stderr_gone = true;
        if !c.stdout_gone {
            let note = format!("stderr is closed ({e}); warnings are no longer shown\n");
            if io::stdout().lock().write_all(note.as_bytes()).is_err() {
                c.stdout_gone = true;
            }
        }
    }
}

fn stdout_failed(c: &mut Console, e: &io::Error) {
    c.stdout_gone = true;
    c.prompt_shown = false;
    if !c.stderr_gone {
        let note = format!(
            "stdout is closed ({e}); this process goes on running without printing its lines\n"
        );
        if io::stderr().lock().write_all(note.as_bytes()).is_err() {
            c.stderr_gone = true;
        }
    }
}

/// `say!("Node {id} ...")`: `format!` then [`say`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say(&format!($($arg)*))
    };
}

/// Whether `c` must not reach a terminal as it is: ASCII and Unicode
/// control characters, and the characters that reorder or break lines
/// (bidirectional overrides and isolates, line and paragraph separators),
/// which can make a line read differently from what it holds.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character written as an escape: `\n`, `\r`,
/// `\t`, `\x1b`, `\u{202e}`. Everything else, spaces and backslashes
/// included, is left as it is.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    // Printable ASCII, almost every line, is checked byte by byte, which
    // costs far less than decoding and classifying each character.
    let printable_ascii = text.bytes().all(|b| matches!(b, b' '..=b'~'));
    if printable_ascii || !text.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Sets up the log. With `RUST_LOG` set, env_logger's full log goes to
/// stderr (timestamps, levels, module paths) for whoever asked for it.
/// Without, warnings and errors only, each a plain escaped line through
/// [`complain`]: the screen tells the protocol's story, not the program's.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        env_logger::Builder::from_env(env_logger::Env::default()).init();
        return;
    }
    if log::set_logger(&PLAIN_LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// The default log: "warning: ..." and "error: ...", nothing else.
struct PlainLogger;

static PLAIN_LOGGER: PlainLogger = PlainLogger;

impl log::Log for PlainLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            _ => "warning",
        };
        complain(&format!("{level}: {}", record.args()));
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_and_escape_sequences_are_escaped() {
        let value = "line1\nNode 9999 elected as leader for term 42\x1b[31m\x07";
        assert_eq!(
            escape(value),
            "line1\\nNode 9999 elected as leader for term 42\\x1b[31m\\x07"
        );
        assert_eq!(escape("a\r\tb\u{7f}\u{9b}"), "a\\r\\tb\\x7f\\u{9b}");
        assert_eq!(escape("evil\u{202e}txt"), "evil\\u{202e}txt");
        // One unsafe byte among printable ASCII.
        assert_eq!(escape("bell\x07"), "bell\\x07");
        assert_eq!(escape("del\u{7f}"), "del\\x7f");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in ["hello  world ", "C:\\path", "naïve café ✓", ""] {
            assert!(matches!(escape(text), std::borrow::Cow::Borrowed(_)));
            assert_eq!(escape(text), text);
        }
    }
}
