//! Framing: one JSON [`Frame`] per line, with a limit on every line.

use super::auth::{FrameAuthError, Opener, Sealer, MAC_HEX_LEN, SEAL_BYTES};
use super::MAX_LINE_BYTES;
use crate::message::Frame;
use std::fmt;
use std::io::{self, BufRead, Read, Write};

/// The JSON of a typical frame fits in this many bytes (a longer one
/// grows its buffer as it is written).
const SMALL_FRAME_BYTES: usize = 128;

/// Why a line could not be read as a [`Frame`].
#[derive(Debug)]
pub enum FrameError {
    /// The socket failed (reset, timed out, ...).
    Io(io::Error),
    /// More than `limit` bytes arrived without a newline.
    TooLong { limit: usize },
    /// The connection closed after `bytes` bytes of a line with no newline.
    Truncated { bytes: usize },
    /// The line is not UTF-8; `valid_up_to` bytes of it were.
    NotUtf8 { valid_up_to: usize },
    /// The line is not JSON, or not a JSON `Frame`.
    Malformed(serde_json::Error),
    /// The line's MAC is missing or wrong (see `auth`).
    Unauthenticated(FrameAuthError),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "read failed: {e}"),
            FrameError::TooLong { limit } => {
                write!(f, "line longer than the limit of {limit} bytes")
            }
            FrameError::Truncated { bytes } => write!(
                f,
                "connection closed in the middle of a line ({bytes} bytes without a newline)"
            ),
            FrameError::NotUtf8 { valid_up_to } => {
                write!(
                    f,
                    "line is not UTF-8 (invalid byte at offset {valid_up_to})"
                )
            }
            FrameError::Malformed(e) => write!(f, "not a valid frame: {e}"),
            FrameError::Unauthenticated(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            FrameError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> FrameError {
        FrameError::Io(e)
    }
}

/// Encodes a frame as one line, newline included.
///
/// JSON escapes newlines inside strings, so the only newline is the last
/// byte. Refuses a frame the receiving side would reject as too long: better
/// to fail here, where the caller can log it, than to have the peer close
/// the connection.
pub fn encode_frame(frame: &Frame) -> io::Result<Vec<u8>> {
    let mut line = encode_json(frame)?;
    line.push(b'\n');
    Ok(line)
}

/// A frame's JSON, without the newline (and without a MAC: see
/// [`seal_frame`]), refused if its line would be over the limit.
pub fn encode_json(frame: &Frame) -> io::Result<Vec<u8>> {
    // Room for a small frame and what sealing adds (most frames are small:
    // a request, an answer, an acknowledgement), so neither reallocates.
    let mut line = Vec::with_capacity(SMALL_FRAME_BYTES + SEAL_BYTES);
    serde_json::to_writer(&mut line, frame).map_err(io::Error::other)?;
    // Room for the MAC that follows it: " " and the hex digits.
    if line.len() + 1 + MAC_HEX_LEN > MAX_LINE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes is over the line limit of {MAX_LINE_BYTES} bytes",
                line.len()
            ),
        ));
    }
    Ok(line)
}

/// A frame as its authenticated line, newline included.
pub fn seal_frame(frame: &Frame, sealer: &mut Sealer) -> io::Result<Vec<u8>> {
    let mut line = encode_json(frame)?;
    sealer
        .seal_in_place(&mut line, 0)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(line)
}

/// Writes one frame as one line. Does not flush: a `BufWriter` caller
/// decides when (see the peer writer, which batches).
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&encode_frame(frame)?)
}

/// Reads the next frame: `Ok(None)` on a clean end of stream (between
/// lines). Blank lines are skipped, so a person typing into `nc` may press
/// Enter twice.
///
/// At most [`MAX_LINE_BYTES`] + 1 bytes are buffered for one line, however
/// much the other side sends: the read goes through a `take` limit.
pub fn read_frame(r: &mut impl BufRead) -> Result<Option<Frame>, FrameError> {
    read_frame_limited(r, MAX_LINE_BYTES)
}

/// Reads the next frame of an authenticated connection: its MAC must
/// verify (see `auth`) before the JSON is even parsed.
pub fn read_sealed_frame(
    r: &mut impl BufRead,
    opener: &mut Opener,
) -> Result<Option<Frame>, FrameError> {
    let Some(line) = read_line(r, MAX_LINE_BYTES)? else {
        return Ok(None);
    };
    let json = opener.open(&line).map_err(FrameError::Unauthenticated)?;
    serde_json::from_str(json)
        .map(Some)
        .map_err(FrameError::Malformed)
}

fn read_frame_limited(r: &mut impl BufRead, limit: usize) -> Result<Option<Frame>, FrameError> {
    let Some(text) = read_line(r, limit)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(FrameError::Malformed)
}

/// The next line that is not blank, without its newline: at most `limit`
/// bytes are buffered for it.
pub(super) fn read_line(r: &mut impl BufRead, limit: usize) -> Result<Option<String>, FrameError> {
    loop {
        let mut line = Vec::new();
        // One byte more than the limit: a line of exactly `limit` bytes plus
        // its newline still fits.
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        let n = (&mut *r).take(cap).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            return Err(if n > limit {
                FrameError::TooLong { limit }
            } else {
                FrameError::Truncated { bytes: n }
            });
        }
        if let Some(text) = line_text(&line)? {
            // The line's own buffer becomes the string, without a copy.
            let len = text.len();
            line.truncate(len);
            return String::from_utf8(line)
                .map(Some)
                .map_err(|e| FrameError::NotUtf8 {
                    valid_up_to: e.utf8_error().valid_up_to(),
                });
        }
    }
}

/// One whole line as text without its line end; `None` if it is blank.
fn line_text(line: &[u8]) -> Result<Option<&str>, FrameError> {
    let text = std::str::from_utf8(line).map_err(|e| FrameError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(text.trim_end_matches(['\n', '\r'])))
}

/// One whole line (its newline included or not) as a frame; `Ok(None)` for
/// a blank line.
#[cfg(test)]
pub(super) fn parse_line(line: &[u8]) -> Result<Option<Frame>, FrameError> {
    let Some(text) = line_text(line)? else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(FrameError::Malformed)
}

/// One whole line of an authenticated connection as a frame: its MAC must
/// verify (see `auth`) before the JSON is even parsed. `Ok(None)` for a
/// blank line.
pub(super) fn parse_sealed_line(
    line: &[u8],
    opener: &mut Opener,
) -> Result<Option<Frame>, FrameError> {
    let Some(text) = line_text(line)? else {
        return Ok(None);
    };
    let json = opener.open(text).map_err(FrameError::Unauthenticated)?;
    serde_json::from_str(json)
        .map(Some)
        .map_err(FrameError::Malformed)
}

/// The frame as its JSON line, for `debug` logs: the learner sees exactly
/// what travels on the wire.
pub(super) fn frame_for_log(frame: &Frame) -> String {
    serde_json::to_string(frame).unwrap_or_else(|e| format!("<unprintable frame: {e}>"))
}

// ---------------------------------------------------------------------------
// Inbound: the listener and its connection readers
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientCommand, ClientRequest, ClientResponse, ClientResult};
    use crate::transport::test_support::{request, vote};
    use std::io::{BufReader, Cursor};

    // -- framing --------------------------------------------------------

    #[test]
    fn frames_round_trip_one_per_line() {
        let frames = vec![
            Frame::Peer(vote("8000", "8001")),
            Frame::Request(ClientRequest {
                id: 1,
                command: ClientCommand::Set {
                    value: "two\nlines".into(),
                },
            }),
            Frame::Response(ClientResponse {
                id: 1,
                result: ClientResult::Written { index: 4 },
            }),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f).expect("write to a Vec");
        }
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), frames.len());
        let mut r = Cursor::new(wire);
        for f in &frames {
            assert_eq!(read_frame(&mut r).expect("valid frame").as_ref(), Some(f));
        }
        assert!(read_frame(&mut r).expect("clean EOF").is_none());
    }

    #[test]
    fn clean_eof_is_none_and_blank_lines_are_skipped() {
        assert!(read_frame(&mut Cursor::new(b"")).expect("empty").is_none());
        assert!(read_frame(&mut Cursor::new(b"\n  \r\n"))
            .expect("blank lines")
            .is_none());
    }

    #[test]
    fn eof_in_the_middle_of_a_line_is_an_error() {
        let err = read_frame(&mut Cursor::new(b"{\"request\":")).expect_err("truncated");
        assert!(matches!(err, FrameError::Truncated { bytes: 11 }), "{err}");
    }

    #[test]
    fn malformed_json_is_rejected() {
        for line in [
            &b"not json\n"[..],
            b"{\"peer\":{\"from\":\"8000\"}}\n",
            b"{\"unknown\":{}}\n",
        ] {
            let err = read_frame(&mut Cursor::new(line)).expect_err("malformed");
            assert!(matches!(err, FrameError::Malformed(_)), "{err}");
        }
    }

    #[test]
    fn non_utf8_is_rejected() {
        let err = read_frame(&mut Cursor::new(b"{\"a\xff\":1}\n")).expect_err("bad utf8");
        assert!(
            matches!(err, FrameError::NotUtf8 { valid_up_to: 3 }),
            "{err}"
        );
    }

    #[test]
    fn a_line_at_the_limit_is_accepted() {
        let line = serde_json::to_vec(&Frame::Request(request(5))).expect("encode");
        let mut wire = line.clone();
        wire.push(b'\n');
        let got = read_frame_limited(&mut Cursor::new(wire), line.len()).expect("fits");
        assert_eq!(got, Some(Frame::Request(request(5))));
    }

    #[test]
    fn oversized_line_is_rejected_without_reading_it_all() {
        // An endless stream with no newline: an unbounded reader would never
        // return (or run out of memory). The limit makes it stop.
        let mut endless = BufReader::new(io::repeat(b'a'));
        let err = read_frame_limited(&mut endless, 1000).expect_err("too long");
        assert!(matches!(err, FrameError::TooLong { limit: 1000 }), "{err}");
        // And with the real limit (reads MAX_LINE_BYTES + 1, then stops).
        let mut endless = BufReader::new(io::repeat(b' '));
        let err = read_frame(&mut endless).expect_err("too long");
        assert!(matches!(err, FrameError::TooLong { .. }), "{err}");
    }

    #[test]
    fn encode_refuses_what_the_receiver_would_reject() {
        let huge = Frame::Request(ClientRequest {
            id: 1,
            command: ClientCommand::Set {
                value: "x".repeat(MAX_LINE_BYTES),
            },
        });
        let err = encode_frame(&huge).expect_err("too big");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
