//! Reading frames from one connection within a deadline and in bounded
//! memory (see [`limits`](super::limits) for the why).
//!
//! A frame that fits in the connection's fixed read buffer is parsed where
//! it lies. A longer line is copied into pieces drawn from the connection's
//! budget as it arrives, checked against the line limit as it grows, and
//! the pieces are freed (and given back to the budget) as soon as it is
//! parsed: a connection holds no more than its read buffer between frames.

use super::frame::FrameError;
use super::limits::{Budget, LINE_BUFFER_BYTES, LINE_PIECE_BYTES};
use crate::message::Frame;
use std::io::{self, BufRead, BufReader, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The read timeout is lowered to what is left before the deadline once it
/// is more than this above it (raising it again happens when it fires), so
/// a steady stream of frames costs no system call to keep it right.
const TIMEOUT_SLACK: Duration = Duration::from_millis(100);

/// Makes one whole line a frame (`Ok(None)` for a blank line): parsing
/// its JSON, after checking its MAC on an authenticated connection.
pub(super) type Decode<'a> = dyn FnMut(&[u8]) -> Result<Option<Frame>, FrameError> + 'a;

/// Why no frame came.
#[derive(Debug)]
pub(super) enum ReadError {
    /// A bad line, or the socket failed.
    Frame(FrameError),
    /// The deadline passed before a whole frame arrived.
    Deadline,
    /// The line outgrew what its kind's budget had left.
    NoBufferSpace { budget_bytes: usize },
}

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> ReadError {
        ReadError::Frame(e)
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Frame(FrameError::Io(e))
    }
}

/// The reading side of one connection.
pub(super) struct LineReader {
    reader: BufReader<TcpStream>,
    /// The line so far, when it is longer than what the buffer held.
    pieces: Vec<Vec<u8>>,
    piece_bytes: usize,
    budget: Arc<Budget>,
    /// The socket's read timeout as last set.
    timeout_set: Option<Duration>,
}

impl LineReader {
    pub(super) fn new(stream: TcpStream, budget: Arc<Budget>) -> LineReader {
        LineReader {
            reader: BufReader::with_capacity(LINE_BUFFER_BYTES, stream),
            pieces: Vec::new(),
            piece_bytes: 0,
            budget,
            timeout_set: None,
        }
    }

    /// Long lines from now on come out of `budget` (a connection that has
    /// shown it is a peer's). Called between frames, when nothing is held.
    pub(super) fn use_budget(&mut self, budget: Arc<Budget>) {
        debug_assert!(self.pieces.is_empty());
        self.budget = budget;
    }

    /// The buffered reader for the handshake (which has its own limits on
    /// its lines), all of which must come by `deadline`: each read waits
    /// only what is left, so a handshake sent a byte at a time cannot hold
    /// the connection past it. Called before any frame.
    pub(super) fn for_handshake(&mut self, deadline: Instant) -> HandshakeReader<'_> {
        HandshakeReader {
            lines: self,
            deadline,
        }
    }

    /// The next frame, `Ok(None)` at a clean end of stream: the next whole
    /// line, as `decode` makes it a frame (`Ok(None)` from `decode`, a blank
    /// line, is skipped). A line longer than `limit` bytes is an error,
    /// found as soon as that many bytes have come; so is a frame not whole
    /// by `deadline`.
    pub(super) fn read_frame(
        &mut self,
        limit: usize,
        deadline: Instant,
        decode: &mut Decode<'_>,
    ) -> Result<Option<Frame>, ReadError> {
        let outcome = self.read_frame_inner(limit, deadline, decode);
        self.drop_pieces();
        outcome
    }

    fn read_frame_inner(
        &mut self,
        limit: usize,
        deadline: Instant,
        decode: &mut Decode<'_>,
    ) -> Result<Option<Frame>, ReadError> {
        loop {
            if self.fill(deadline)? == 0 {
                return match self.piece_bytes {
                    0 => Ok(None),
                    bytes => Err(FrameError::Truncated { bytes }.into()),
                };
            }
            let available = self.reader.buffer();
            let Some(end) = available.iter().position(|&b| b == b'\n') else {
                if self.piece_bytes + available.len() > limit {
                    return Err(FrameError::TooLong { limit }.into());
                }
                let n = available.len();
                self.keep(n)?;
                continue;
            };
            if self.piece_bytes + end > limit {
                return Err(FrameError::TooLong { limit }.into());
            }
            let parsed = if self.pieces.is_empty() {
                let parsed = decode(&available[..=end]);
                self.reader.consume(end + 1);
                parsed
            } else {
                self.keep(end + 1)?;
                // Whole now: a MAC is checked over all of it, so it is
                // joined (only a connection past the handshake gets here).
                decode(&self.pieces.concat())
            };
            self.drop_pieces();
            match parsed? {
                Some(frame) => return Ok(Some(frame)),
                None => continue, // a blank line
            }
        }
    }

    /// Waits for bytes in the buffer until `deadline`; 0 means end of stream.
    fn fill(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        loop {
            if !self.reader.buffer().is_empty() {
                return Ok(self.reader.buffer().len());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::Deadline);
            }
            if self
                .timeout_set
                .is_none_or(|set| set > left + TIMEOUT_SLACK)
            {
                self.reader.get_ref().set_read_timeout(Some(left))?;
                self.timeout_set = Some(left);
            }
            match self.reader.fill_buf() {
                Ok(buffer) => return Ok(buffer.len()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.timeout_set = None; // set it to what is left, above
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Moves the first `n` buffered bytes into the pieces, drawing new
    /// pieces from the budget.
    fn keep(&mut self, n: usize) -> Result<(), ReadError> {
        let mut taken = 0;
        while taken < n {
            let room = self
                .pieces
                .last()
                .map_or(0, |piece| piece.capacity() - piece.len());
            if room == 0 {
                if !self.budget.try_take(LINE_PIECE_BYTES) {
                    return Err(ReadError::NoBufferSpace {
                        budget_bytes: self.budget.limit(),
                    });
                }
                self.pieces.push(Vec::with_capacity(LINE_PIECE_BYTES));
                continue;
            }
            let count = room.min(n - taken);
            let bytes = &self.reader.buffer()[..count];
            if let Some(piece) = self.pieces.last_mut() {
                piece.extend_from_slice(bytes);
            }
            self.reader.consume(count);
            self.piece_bytes += count;
            taken += count;
        }
        Ok(())
    }

    fn drop_pieces(&mut self) {
        if self.pieces.is_empty() {
            return;
        }
        self.budget.give_back(self.pieces.len() * LINE_PIECE_BYTES);
        self.pieces = Vec::new();
        self.piece_bytes = 0;
    }
}

/// See [`LineReader::for_handshake`].
pub(super) struct HandshakeReader<'a> {
    lines: &'a mut LineReader,
    deadline: Instant,
}

impl Read for HandshakeReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for HandshakeReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.lines.reader.buffer().is_empty() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the handshake did not finish in time",
                ));
            }
            self.lines.reader.get_ref().set_read_timeout(Some(left))?;
            self.lines.timeout_set = None; // `read_frame` sets its own
        }
        self.lines.reader.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.lines.reader.consume(n);
    }
}

impl Drop for LineReader {
    fn drop(&mut self) {
        self.drop_pieces();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientCommand, ClientRequest};
    use crate::transport::frame::encode_frame;
    use crate::transport::frame::parse_line;
    use crate::transport::limits::CONNECTION_STACK_BYTES;
    use crate::transport::test_support::DEADLINE;
    use std::io::Write;
    use std::net::TcpListener;
    use std::thread;

    /// A connected pair: (the sending end, a reader on the receiving end).
    fn pair(budget: &Arc<Budget>) -> (TcpStream, LineReader) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, LineReader::new(server, Arc::clone(budget)))
    }

    fn set(value: String) -> Frame {
        Frame::Request(ClientRequest {
            id: 1,
            command: ClientCommand::Set { value },
        })
    }

    fn soon() -> Instant {
        Instant::now() + DEADLINE
    }

    #[test]
    fn long_lines_are_read_in_pieces_and_the_pieces_given_back() {
        let budget = Budget::new(4 * 1024 * 1024);
        let (mut client, mut reader) = pair(&budget);
        // Within the buffer, and in pieces.
        for size in [100, 50 * 1024, 700 * 1024] {
            let frame = set("v".repeat(size));
            let sender = {
                let line = encode_frame(&frame).expect("encode");
                let mut client = client.try_clone().expect("clone");
                thread::spawn(move || client.write_all(&line))
            };
            let got = reader
                .read_frame(1024 * 1024, soon(), &mut parse_line)
                .expect("a frame");
            assert_eq!(got, Some(frame), "size {size}");
            assert_eq!(budget.used(), 0, "size {size}");
            assert!(sender.join().expect("no panic").is_ok());
        }
        client.write_all(b"\n\n").expect("blank lines");
        drop(client);
        assert!(matches!(
            reader.read_frame(1024, soon(), &mut parse_line),
            Ok(None)
        ));
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_once_the_limit_is_passed() {
        let budget = Budget::new(4 * 1024 * 1024);
        let (client, mut reader) = pair(&budget);
        let mut writer = client.try_clone().expect("clone");
        // Sends without end: the reader must stop at the limit, not wait.
        let sender = thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            while writer.write_all(&chunk).is_ok() {}
        });
        let err = reader
            .read_frame(200 * 1024, soon(), &mut parse_line)
            .expect_err("too long");
        assert!(
            matches!(
                err,
                ReadError::Frame(FrameError::TooLong { limit: 204_800 })
            ),
            "{err:?}"
        );
        assert_eq!(budget.used(), 0);
        drop(reader);
        drop(client);
        let _ = sender.join();
    }

    #[test]
    fn a_line_that_outgrows_the_budget_is_refused_and_gives_it_back() {
        let budget = Budget::new(2 * LINE_PIECE_BYTES);
        let (mut client, mut reader) = pair(&budget);
        let line = encode_frame(&set("v".repeat(300 * 1024))).expect("encode");
        let sender = thread::spawn(move || client.write_all(&line));
        let err = reader
            .read_frame(1024 * 1024, soon(), &mut parse_line)
            .expect_err("no room");
        assert!(matches!(err, ReadError::NoBufferSpace { .. }), "{err:?}");
        assert_eq!(budget.used(), 0);
        drop(reader);
        let _ = sender.join();
    }

    #[test]
    fn bytes_that_do_not_complete_a_frame_do_not_move_the_deadline() {
        let budget = Budget::new(1024 * 1024);
        let (mut client, mut reader) = pair(&budget);
        // One byte every 20 ms, for far longer than the deadline.
        let sender = thread::spawn(move || {
            for _ in 0..500 {
                if client.write_all(b" ").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let err = reader
            .read_frame(1024, deadline, &mut parse_line)
            .expect_err("deadline");
        assert!(matches!(err, ReadError::Deadline), "{err:?}");
        let late = start.elapsed();
        assert!(late < DEADLINE, "closed only after {late:?}");
        drop(reader);
        let _ = sender.join();
    }

    #[test]
    fn a_handshake_sent_a_byte_at_a_time_ends_at_its_deadline() {
        let budget = Budget::new(1024 * 1024);
        let (mut client, mut reader) = pair(&budget);
        let sender = thread::spawn(move || {
            for _ in 0..500 {
                if client.write_all(b"x").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        let start = Instant::now();
        let mut handshake = reader.for_handshake(start + Duration::from_millis(300));
        let mut line = Vec::new();
        let err = handshake
            .read_until(b'\n', &mut line)
            .expect_err("past the deadline");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{err}"
        );
        assert!(
            start.elapsed() < DEADLINE,
            "ended only after {:?}",
            start.elapsed()
        );
        drop(reader);
        let _ = sender.join();
    }

    #[test]
    fn a_frame_nested_as_deep_as_json_allows_parses_on_a_connection_stack() {
        // A message body is read into a tree before its "type" is known,
        // by recursion, which the JSON parser stops at 128 levels. Both a
        // body nested just below that and one far deeper must fit.
        let nested = |depth: usize| {
            format!(
                "{{\"peer\":{{\"from\":\"a\",\"to\":\"b\",\"term\":1,\"body\":{{\"junk\":{}{},\"type\":\"timeout_now\"}}}}}}\n",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let outcome = thread::Builder::new()
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                (
                    parse_line(nested(120).as_bytes()).is_ok(),
                    parse_line(nested(100_000).as_bytes()).is_err(),
                )
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
        assert_eq!(outcome, (true, true));
    }
}
