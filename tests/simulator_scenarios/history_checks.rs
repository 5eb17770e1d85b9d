//! The linearizability check on hand-written histories: it must accept
//! what is linearizable and reject what is not, including when the history
//! is cut into segments and when outcomes are unknown.

use crate::simulator::clients::Op;
use crate::simulator::history::History;
use stateright::semantics::register::RegisterRet;

/// Builds a history from lines `(time, thread, what)`.
enum Line {
    Set(&'static str),
    Get,
    Ok,
    Read(&'static str),
    Unknown,
}

fn history(lines: &[(u64, u64, Line)]) -> History {
    let mut history = History::default();
    for (at, thread, line) in lines {
        match line {
            Line::Set(value) => history.invoke(*at, *thread, Op::Set(value.to_string())),
            Line::Get => history.invoke(*at, *thread, Op::Get),
            Line::Ok => history.answer(*at, *thread, RegisterRet::WriteOk),
            Line::Read(value) => {
                history.answer(*at, *thread, RegisterRet::ReadOk(value.to_string()))
            }
            Line::Unknown => history.unknown(*at, *thread),
        }
    }
    history
}

fn linearizable(lines: &[(u64, u64, Line)]) -> bool {
    history(lines).check_linearizable(0).is_ok()
}

use Line::*;

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    assert!(linearizable(&[
        (1, 0, Set("a")),
        (2, 1, Get),
        (3, 1, Read("")),
        (4, 1, Get),
        (5, 0, Ok),
        (6, 1, Read("a")),
    ]));
}

#[test]
fn a_read_after_a_finished_write_must_see_it() {
    assert!(!linearizable(&[
        (1, 0, Set("a")),
        (2, 0, Ok),
        (3, 1, Get),
        (4, 1, Read("")),
    ]));
}

#[test]
fn a_value_never_written_cannot_be_read() {
    assert!(!linearizable(&[(1, 0, Get), (2, 0, Read("z"))]));
}

#[test]
fn a_stale_read_after_a_cut_is_caught() {
    // The get at 3-4 fixes the value at "a" and nothing is in flight at 5,
    // so the history is checked in two segments; the stale read is in the
    // second.
    assert!(!linearizable(&[
        (1, 0, Set("a")),
        (2, 0, Ok),
        (3, 1, Get),
        (4, 1, Read("a")),
        (5, 0, Set("b")),
        (6, 0, Ok),
        (7, 1, Get),
        (8, 1, Read("a")),
    ]));
    let good = history(&[
        (1, 0, Set("a")),
        (2, 0, Ok),
        (3, 1, Get),
        (4, 1, Read("a")),
        (5, 0, Set("b")),
        (6, 0, Ok),
        (7, 1, Get),
        (8, 1, Read("b")),
    ]);
    let stats = good.check_linearizable(0).expect("linearizable");
    assert_eq!(
        stats.segments, 2,
        "a cut after each get that fixes the value"
    );
}

#[test]
fn an_unknown_write_may_take_effect_late() {
    // x's outcome is unknown: it may take effect after y, so reading x
    // after y finished is fine...
    assert!(linearizable(&[
        (1, 0, Set("x")),
        (2, 0, Unknown),
        (3, 1, Set("y")),
        (4, 1, Ok),
        (5, 2, Get),
        (6, 2, Read("x")),
    ]));
    // ...but then y cannot come back after x was read.
    assert!(!linearizable(&[
        (1, 0, Set("x")),
        (2, 0, Unknown),
        (3, 1, Set("y")),
        (4, 1, Ok),
        (5, 2, Get),
        (6, 2, Read("x")),
        (7, 2, Get),
        (8, 2, Read("y")),
    ]));
}

#[test]
fn an_unknown_write_no_one_read_changes_nothing() {
    assert!(linearizable(&[
        (1, 0, Set("x")),
        (2, 0, Unknown),
        (3, 1, Get),
        (4, 1, Read("")),
    ]));
}

#[test]
fn a_write_cannot_be_read_before_it_was_invoked() {
    assert!(!linearizable(&[
        (1, 1, Get),
        (2, 1, Read("a")),
        (3, 0, Set("a")),
        (4, 0, Ok),
    ]));
}
