//! Who may speak for the cluster: the cluster key, the handshake that opens
//! every connection, and the MAC on every frame after it.
//!
//! Every node and client of a cluster holds one secret, the cluster key
//! (a file: [`ClusterKey`]). A connection starts with a handshake in which
//! both ends prove they hold it without sending it:
//!
//! ```text
//!  connector                                         acceptor
//!  {"hello":{"id","role","cluster","nonce":Nc}}  ──►
//!                         ◄──  {"welcome":{"id","cluster","nonce":Na,"proof":Pa}}
//!  {"proof":{"proof":Pc}}                        ──►      (or {"refused":{"reason"}})
//! ```
//!
//! `Pa` and `Pc` are HMAC-SHA256s under the cluster key of everything said
//! in the hello and the welcome (both nonces, both ids, the role and the
//! cluster id), each with its own label, so neither can stand in for the
//! other. The nonces are fresh random bytes from the operating system, so an
//! old handshake replayed proves nothing. Both ends then derive a session
//! key from the cluster key and both nonces, and every frame after the
//! handshake is one JSON line followed by a space and the hex HMAC, under
//! that session key, of (direction, sequence number, JSON). A frame
//! therefore cannot be altered, replayed, reordered, dropped from the middle
//! or moved to another connection without the receiver noticing; the
//! receiver closes the connection at the first frame that fails.
//!
//!
//! ```text
//! {"peer":{"from":"8000","to":"8001","term":2,"body":{"type":"timeout_now"}}} 9f2c...64 hex digits
//! ```
//!
//! A frame is also refused if it was reflected back to its sender (the
//! direction is in the MAC). MACs are compared in constant time. A node
//! speaks only for itself: a peer message must name as its sender the node
//! that authenticated the connection, and a client connection may not send
//! peer messages. Without the key a process cannot write a value, change the
//! log or the membership, move leadership, read the value, or even ask for
//! `status`: a node answers a connection that does not authenticate with one
//! line saying why (`{"refused":{"reason":"node 8000 accepts only
//! authenticated connections: ..."}}`) and closes it.
//!
//! The wire stays readable, which is the point of this project. Why not
//! mutual TLS (rustls): it would also hide the traffic, but it brings
//! certificates to make, a larger dependency tree and an unreadable wire, for
//! a property (confidentiality) the value does not need in a teaching cluster
//! on one machine. Cost: one HMAC-SHA256 per frame each way (see the
//! measurements in `src/bench/mod.rs`).
//!
//! # The key file
//!
//! `cluster.key`, beside the data directories (`raft-data/cluster.key`),
//! mode 0600, holds a 256-bit random key and the cluster's id, a random
//! 64-bit name:
//!
//! ```text
//! # raft cluster key: every node and client of the cluster needs a copy.
//! # Keep it secret (mode 0600): whoever holds it can speak for the cluster.
//! cluster_id = 3f9a1c0d5e7b2a64
//! key = <64 hex digits>
//! ```
//!
//! The first node that finds no key file creates one, from the operating
//! system's random source. Nodes started at the same moment agree on one key:
//! the file is written whole under a temporary name, fsynced, and hard-linked
//! into place, which fails for all but the first node, and the others read
//! the winner's. A node on another host, or with its data elsewhere, is given
//! a copy with `--cluster-key FILE`. A key file others can read draws a
//! warning.
//!
//! # Cluster identity
//!
//! A node records its cluster's id in its data directory
//! (`raft-data/8000/cluster-id`) on first start and refuses to start with a
//! key file of another cluster ("raft-data/8000 holds data of cluster ...,
//! but the key file ... is of cluster ..."): a replaced key makes a new
//! cluster, and a node must not bring an old cluster's log into it. A node
//! whose data directory was deleted finds the key file still beside it and
//! adopts its id, so it rejoins as before. A node of another cluster that
//! tries to talk to this one (a different key file) is refused in the
//! handshake, and both sides log one line naming both clusters: `cannot talk
//! to peer 8000 at 127.0.0.1:8000: node 8000 has a different cluster key: it
//! is of cluster 3f9a..., ours of cluster 77c0...`. A node of this cluster
//! configured with other members is refused with the reason sent back to it
//! ("node 8000 does not count 9309 as a member ..."). Each kind of refusal is
//! logged at most once every 10 s, with a count of those left unsaid
//! ([`REFUSAL_LOG_INTERVAL`]), however often the other side retries.
//!
//! # Threat model
//!
//! - *Protected:* the integrity and authenticity of every message. Whoever
//!   can reach a port (another user of the machine, or anyone on the network
//!   once `--bind` is used), see the traffic, or alter it in flight, cannot
//!   make a node accept anything: not a forged entry, vote, acknowledgement,
//!   snapshot, leadership transfer or client request. `tests/security.rs`
//!   replays seven such attacks, made with a plain socket, and shows each
//!   refused, and each succeeding with authentication off.
//! - *Not protected:* confidentiality (anyone who sees the traffic reads the
//!   values; use TLS or a VPN for that); a stolen key (anyone holding it is a
//!   member: protect the file, and to change it, stop the cluster, make a new
//!   cluster and its data anew); a malicious member (Raft is not
//!   Byzantine-tolerant: a node with the key that lies breaks it, exactly as
//!   a buggy one would; but it cannot crash a node, and a message Raft rules
//!   out is ignored with a warning: see [`impossible`](crate::core::impossible)); denial of service (anyone who can reach the port can
//!   open connections, up to `--max-clients`, with slots kept for peers, and
//!   each costs a handshake; see the limits in [`transport`](super)).
//! - *Across untrusted networks:* copy the key file over a secure channel
//!   (`scp`), `chmod 600` it, give it with `--cluster-key`; firewall the ports
//!   to the cluster's hosts; and if the values are secret, carry the traffic
//!   over a VPN or an SSH or TLS tunnel (WireGuard, stunnel), since this
//!   protocol does not encrypt.
//!
//! Every number from outside is checked too: see
//! [`MAX_TERM`](crate::message::MAX_TERM) and
//! [`MAX_INDEX`](crate::message::MAX_INDEX).
//!
//! **What a test build can turn off.** With the `bug-switches` feature (which
//! `cargo test` turns on, and release builds never have), a hidden
//! `--insecure-no-auth` makes a node accept plain JSON lines from anyone, as
//! before the key existed: the attack tests use it to show that each attack
//! succeeds without the key.

use hmac::{Hmac, Mac};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

type HmacSha256 = Hmac<Sha256>;

/// The name of the key file, beside the nodes' data directories:
/// `raft-data/cluster.key` for the default `raft-data/<id>`.
pub const KEY_FILE_NAME: &str = "cluster.key";

/// Bytes of secret in a cluster key (256 bits, the size of the hash).
pub const KEY_BYTES: usize = 32;

/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 16;

/// Bytes of a cluster id: random, so two clusters never share one.
pub const CLUSTER_ID_BYTES: usize = 8;

/// Hex digits of a frame's MAC (the whole HMAC-SHA256: 32 bytes).
pub const MAC_HEX_LEN: usize = 64;

/// What sealing adds to a frame's JSON: a space, the MAC and the newline.
pub const SEAL_BYTES: usize = 1 + MAC_HEX_LEN + 1;

/// The longest a handshake may take, each way. Long enough for a loaded
/// machine; short enough that a connection that never says hello gives
/// its slot back soon.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest handshake line accepted (a hello is about 150 bytes).
const MAX_HANDSHAKE_LINE: u64 = 4096;

/// The longest node id accepted in a hello.
const MAX_ID_BYTES: usize = 300;

/// Refusals of one kind are logged at most once per this interval, with a
/// count of those left unsaid: a misconfigured node retries several times a
/// second, and each retry is not news.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Domain separation: every MAC says what it is for.
const LABEL_ACCEPTOR_PROOF: &[u8] = b"raft v1 acceptor proof";
const LABEL_CONNECTOR_PROOF: &[u8] = b"raft v1 connector proof";
const LABEL_SESSION: &[u8] = b"raft v1 session key";

// ---------------------------------------------------------------------------
// The key file
// ---------------------------------------------------------------------------

/// A cluster's secret and its id, as kept in the key file:
///
/// ```text
/// # raft cluster key: every node and client of the cluster needs a copy.
/// cluster_id = 3f9a1c0d5e7b2a64
/// key = <64 hex digits>
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    cluster_id: String,
    key: [u8; KEY_BYTES],
}

impl fmt::Debug for ClusterKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClusterKey {{ cluster_id: {}, key: <secret> }}",
            self.cluster_id
        )
    }
}

impl ClusterKey {
    /// A new random key and cluster id, from the operating system's
    /// random source.
    pub fn generate() -> io::Result<ClusterKey> {
        let mut key = [0u8; KEY_BYTES];
        let mut id = [0u8; CLUSTER_ID_BYTES];
        os_random(&mut key)?;
        os_random(&mut id)?;
        Ok(ClusterKey {
            cluster_id: hex(&id),
            key,
        })
    }

    /// The cluster's id, which names it in messages (not secret).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn to_file_text(&self) -> String {
        format!(
            "# raft cluster key: every node and client of the cluster needs a copy.\n\
             # Keep it secret (mode 0600): whoever holds it can speak for the cluster.\n\
             cluster_id = {}\nkey = {}\n",
            self.cluster_id,
            hex(&self.key)
        )
    }

    fn parse(text: &str) -> Result<ClusterKey, String> {
        let mut cluster_id = None;
        let mut key = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(format!("a line is not `name = value`: {line:?}"));
            };
            match name.trim() {
                "cluster_id" => cluster_id = Some(value.trim().to_string()),
                "key" => key = Some(value.trim().to_string()),
                other => return Err(format!("unknown setting {other:?}")),
            }
        }
        let cluster_id = cluster_id.ok_or("no cluster_id line")?;
        let valid_id = cluster_id.len() == 2 * CLUSTER_ID_BYTES
            && cluster_id.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_id {
            return Err(format!(
                "cluster_id {cluster_id:?} is not {} hex digits",
                2 * CLUSTER_ID_BYTES
            ));
        }
        let key = key.ok_or("no key line")?;
        let key: [u8; KEY_BYTES] = unhex(&key)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| format!("the key is not {} hex digits", 2 * KEY_BYTES))?;
        Ok(ClusterKey {
            cluster_id: cluster_id.to_ascii_lowercase(),
            key,
        })
    }

    /// Reads the key file at `path`. The error names the file and says what
    /// to do.
    pub fn load(path: &Path) -> Result<ClusterKey, String> {
        let mut text = String::new();
        File::open(path)
            .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => format!(
                    "no cluster key at {}: start a node of the cluster from this directory first (it creates the key), or give the cluster's key file with --cluster-key FILE",
                    path.display()
                ),
                _ => format!("cannot read the cluster key {}: {e}", path.display()),
            })?;
        warn_if_readable_by_others(path);
        ClusterKey::parse(&text).map_err(|e| {
            format!(
                "{} is not a raft cluster key: {e}; copy the cluster's key file again",
                path.display()
            )
        })
    }

    /// Reads the key file at `path`, or creates it (with a new cluster id)
    /// if there is none. Nodes started at the same moment end up with the
    /// same key: the file is written in full under a temporary name and
    /// then hard-linked into place, which fails if another node got there
    /// first, and then that node's key is read. Returns the key and whether
    /// this call created it.
    pub fn load_or_create(path: &Path) -> Result<(ClusterKey, bool), String> {
        match ClusterKey::load(path) {
            Ok(key) => return Ok((key, false)),
            Err(_) if !path.exists() => {}
            // Either the file is there but unreadable, or another node
            // created it between the two looks above (a file appears whole,
            // see below). Read it once more: a real problem shows again.
            Err(_) => return ClusterKey::load(path).map(|key| (key, false)),
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {} for the cluster key: {e}", dir.display()))?;
        let key =
            ClusterKey::generate().map_err(|e| format!("cannot draw a random cluster key: {e}"))?;
        let temp = dir.join(format!(
            ".{KEY_FILE_NAME}.{}.{}",
            std::process::id(),
            hex(&random_nonce().unwrap_or_default()[..4])
        ));
        let created = write_private(&temp, key.to_file_text().as_bytes())
            .and_then(|()| match fs::hard_link(&temp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            })
            .map_err(|e| format!("cannot create the cluster key {}: {e}", path.display()));
        let _ = fs::remove_file(&temp);
        if created? {
            let _ = File::open(&dir).and_then(|d| d.sync_all());
            Ok((key, true))
        } else {
            // Another node created it first: use theirs.
            ClusterKey::load(path).map(|key| (key, false))
        }
    }
}

/// Writes `bytes` to a new file at `path` that only its owner may read,
/// and makes it durable.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                log::warn!(
                    "the cluster key {} can be read by other users of this machine; anyone who can read it can speak for the cluster: chmod 600 {}",
                    path.display(),
                    path.display()
                );
            }
        }
    }
}

/// The key file that goes with a node's data directory: beside it, in its
/// parent (`raft-data/cluster.key` for `raft-data/8000`).
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    match data_dir.parent() {
        Some(parent) => parent.join(KEY_FILE_NAME),
        None => PathBuf::from(KEY_FILE_NAME),
    }
}

// ---------------------------------------------------------------------------
// Credentials: what a node or client brings to a connection
// ---------------------------------------------------------------------------

/// How this process authenticates its connections: with the cluster key,
/// or (only in test builds, for showing what the key prevents) not at all.
#[derive(Clone, Debug)]
pub struct Credentials {
    key: Option<Arc<ClusterKey>>,
}

impl Credentials {
    pub fn new(key: ClusterKey) -> Credentials {
        Credentials {
            key: Some(Arc::new(key)),
        }
    }

    /// No authentication: plain JSON lines, as before the key existed.
    /// Exists only with the `bug-switches` feature, so that tests can show
    /// each attack the key stops succeeding without it.
    #[cfg(any(test, feature = "bug-switches"))]
    pub fn insecure() -> Credentials {
        Credentials { key: None }
    }

    /// The cluster's id, if authentication is on.
    pub fn cluster_id(&self) -> Option<&str> {
        self.key.as_deref().map(ClusterKey::cluster_id)
    }
}

// ---------------------------------------------------------------------------
// Frames after the handshake
// ---------------------------------------------------------------------------

/// Which way a frame travels; part of every MAC, so a frame cannot be
/// reflected back to its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    FromConnector,
    FromAcceptor,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::FromConnector => b'C',
            Direction::FromAcceptor => b'A',
        }
    }
}

/// Adds the MAC to each outgoing frame of one connection.
#[derive(Clone, Debug)]
pub struct Sealer(Option<FrameKey>);

/// Checks the MAC of each incoming frame of one connection.
#[derive(Clone, Debug)]
pub struct Opener(Option<FrameKey>);

#[derive(Clone)]
struct FrameKey {
    /// HMAC keyed with the session key, before any input: cloned for each
    /// frame, so the key's own hashing is done once per connection, not
    /// once per frame.
    keyed: HmacSha256,
    direction: Direction,
    /// The sequence number of the next frame this way.
    seq: u64,
}

impl fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameKey {{ {:?}, seq {} }}", self.direction, self.seq)
    }
}

impl FrameKey {
    fn new(session: [u8; 32], direction: Direction) -> FrameKey {
        FrameKey {
            keyed: HmacSha256::new_from_slice(&session).expect("HMAC takes any key size"),
            direction,
            seq: 0,
        }
    }

    fn mac(&self, json: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(&[self.direction.byte()]);
        mac.update(&self.seq.to_be_bytes());
        mac.update(json);
        mac
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameAuthError {
    /// No ` <mac>` at the end of the line.
    MissingMac,
    /// The MAC does not match: altered, replayed, reordered, from another
    /// connection, or made with another key.
    BadMac { seq: u64 },
    /// 2^64 frames on one connection.
    SequenceExhausted,
}

impl fmt::Display for FrameAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameAuthError::MissingMac => f.write_str(
                "a frame without its MAC (is the sender a raft without authentication?)",
            ),
            FrameAuthError::BadMac { seq } => write!(
                f,
                "frame {seq} failed authentication (altered, replayed, out of order, or from another connection)"
            ),
            FrameAuthError::SequenceExhausted => f.write_str("the connection ran out of sequence numbers"),
        }
    }
}

impl Sealer {
    /// A sealer for no connection yet (it adds no MAC).
    pub(super) fn plain() -> Sealer {
        Sealer(None)
    }

    /// Turns one frame's JSON (no newline) into its line on the wire,
    /// newline included: `JSON HEXMAC\n`, or just `JSON\n` without
    /// authentication.
    pub fn seal(&mut self, json: &[u8]) -> Result<Vec<u8>, FrameAuthError> {
        let mut line = Vec::with_capacity(json.len() + SEAL_BYTES);
        line.extend_from_slice(json);
        self.seal_in_place(&mut line, 0)?;
        Ok(line)
    }

    /// [`Sealer::seal`] without a line of its own: the frame's JSON is
    /// `buffer[json_start..]`, and its MAC and newline are appended there
    /// (saving an allocation and a copy of the frame; a batch of frames
    /// is sealed one after another in one buffer). On an error, `buffer` is
    /// left as it was.
    pub fn seal_in_place(
        &mut self,
        buffer: &mut Vec<u8>,
        json_start: usize,
    ) -> Result<(), FrameAuthError> {
        if let Some(key) = &mut self.0 {
            let tag = key.mac(&buffer[json_start..]).finalize().into_bytes();
            key.seq = key
                .seq
                .checked_add(1)
                .ok_or(FrameAuthError::SequenceExhausted)?;
            let mut digits = [0u8; MAC_HEX_LEN];
            hex_into(&tag, &mut digits);
            buffer.push(b' ');
            buffer.extend_from_slice(&digits);
        }
        buffer.push(b'\n');
        Ok(())
    }

    /// Takes back the last sequence number, for a frame sealed but never
    /// sent (the socket took none of it): the next frame reuses it.
    pub fn unseal_last(&mut self) {
        if let Some(key) = &mut self.0 {
            key.seq = key.seq.saturating_sub(1);
        }
    }

    /// True if frames are sent without a MAC (authentication off).
    pub fn is_plain(&self) -> bool {
        self.0.is_none()
    }
}

impl Opener {
    /// An opener for no connection yet (it checks no MAC).
    pub(super) fn plain() -> Opener {
        Opener(None)
    }

    /// Checks one received line (without its newline) and returns the JSON
    /// part. The MAC is compared in constant time.
    pub fn open<'a>(&mut self, line: &'a str) -> Result<&'a str, FrameAuthError> {
        let Some(key) = &mut self.0 else {
            return Ok(line);
        };
        let line = line.trim_end_matches(['\r', ' ']);
        let (json, tag) = line.rsplit_once(' ').ok_or(FrameAuthError::MissingMac)?;
        if tag.len() != MAC_HEX_LEN {
            return Err(FrameAuthError::MissingMac);
        }
        let mut tag_bytes = [0u8; MAC_HEX_LEN / 2];
        unhex_into(tag, &mut tag_bytes).ok_or(FrameAuthError::MissingMac)?;
        key.mac(json.as_bytes())
            .verify_slice(&tag_bytes)
            .map_err(|_| FrameAuthError::BadMac { seq: key.seq })?;
        key.seq = key
            .seq
            .checked_add(1)
            .ok_or(FrameAuthError::SequenceExhausted)?;
        Ok(json)
    }
}

// ---------------------------------------------------------------------------
// The handshake
// ---------------------------------------------------------------------------

/// What the connecting side is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Another node: sends peer messages.
    Peer,
    /// `raft client`, `raft bench`, a node forwarding a prompt command:
    /// sends requests and reads answers.
    Client,
}

/// The handshake lines. Plain JSON, one per line, like every frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Handshake {
    Hello {
        id: String,
        role: Role,
        cluster: String,
        nonce: String,
    },
    Welcome {
        id: String,
        cluster: String,
        nonce: String,
        proof: String,
    },
    Proof {
        proof: String,
    },
    Refused {
        reason: String,
    },
}

/// Why a handshake failed, from this side's point of view. The `Display`
/// is the one line logged.
#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    /// The other side is of another cluster (its cluster id differs).
    OtherCluster {
        theirs: String,
        ours: String,
        who: String,
    },
    /// Same cluster id, but the proof does not verify: another key.
    DifferentKey {
        who: String,
    },
    /// The other side refused us, saying why.
    RefusedBy {
        who: String,
        reason: String,
    },
    /// The other side did not speak the handshake at all; `json` if what
    /// it sent was JSON (so it speaks some protocol, and is told why).
    NoHandshake {
        who: String,
        got: String,
        json: bool,
    },
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                f.write_str("no answer to the handshake within the deadline")
            }
            HandshakeError::Io(e) => write!(f, "handshake failed: {e}"),
            HandshakeError::OtherCluster { theirs, ours, who } => write!(
                f,
                "{who} has a different cluster key: it is of cluster {theirs}, ours of cluster {ours}; give both the same key file (--cluster-key) if they are meant to be one cluster"
            ),
            HandshakeError::DifferentKey { who } => write!(
                f,
                "{who} has a different cluster key (same cluster id, but its proof does not match this key): one of the key files was changed; copy the cluster's key file again"
            ),
            HandshakeError::RefusedBy { who, reason } => write!(f, "{who} refused the connection: {reason}"),
            HandshakeError::NoHandshake { who, got, .. } => write!(
                f,
                "{who} did not authenticate: {got}; every node and client needs the cluster key (raft-data/cluster.key, or --cluster-key FILE)"
            ),
        }
    }
}

impl HandshakeError {
    /// The kind, for rate-limiting the log.
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeError::Io(_) => "handshake-io",
            HandshakeError::OtherCluster { .. } => "other-cluster",
            HandshakeError::DifferentKey { .. } => "different-key",
            HandshakeError::RefusedBy { .. } => "refused-by",
            HandshakeError::NoHandshake { .. } => "no-handshake",
        }
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

/// What the acceptor learned about the connector.
#[derive(Clone, Debug)]
pub struct Peer {
    pub id: String,
    pub role: Role,
}

/// The connecting side: says hello as `id` in `role`, checks the acceptor's
/// proof, sends its own. Returns the sealer for what this side sends, the
/// opener for what it receives, and the acceptor's id. Without
/// authentication, sends nothing and returns plain ones.
pub fn connect_handshake(
    creds: &Credentials,
    id: &str,
    role: Role,
    reader: &mut impl BufRead,
    writer: &mut impl Write,
) -> Result<(Sealer, Opener), HandshakeError> {
    let Some(key) = creds.key.as_deref() else {
        return Ok((Sealer(None), Opener(None)));
    };
    let nonce_c = random_nonce()?;
    write_line(
        writer,
        &Handshake::Hello {
            id: id.to_string(),
            role: role.clone(),
            cluster: key.cluster_id.clone(),
            nonce: hex(&nonce_c),
        },
    )?;
    let (their_id, cluster, nonce_a, proof) = match read_line(reader)? {
        Handshake::Welcome {
            id,
            cluster,
            nonce,
            proof,
        } => (id, cluster, nonce, proof),
        Handshake::Refused { reason } => {
            return Err(HandshakeError::RefusedBy {
                who: "the node".into(),
                reason,
            })
        }
        other => {
            return Err(HandshakeError::NoHandshake {
                who: "the node".into(),
                got: format!("it answered {other:?}"),
                json: true,
            })
        }
    };
    let who = format!("node {their_id}");
    if cluster != key.cluster_id {
        return Err(HandshakeError::OtherCluster {
            theirs: cluster,
            ours: key.cluster_id.clone(),
            who,
        });
    }
    let nonce_a = unhex(&nonce_a).filter(|n| n.len() == NONCE_BYTES);
    let transcript = nonce_a.as_ref().map(|nonce_a| Transcript {
        nonce_c: &nonce_c,
        nonce_a,
        cluster: &key.cluster_id,
        id_c: id,
        role: &role,
        id_a: &their_id,
    });
    let verified = transcript.as_ref().is_some_and(|t| {
        unhex(&proof).is_some_and(|p| t.mac(key, LABEL_ACCEPTOR_PROOF).verify_slice(&p).is_ok())
    });
    let Some(transcript) = transcript.filter(|_| verified) else {
        let _ = write_line(
            writer,
            &Handshake::Refused {
                reason: format!(
                    "{id} has a different cluster key (your proof does not verify with its key for cluster {})",
                    key.cluster_id
                ),
            },
        );
        return Err(HandshakeError::DifferentKey { who });
    };
    let proof = transcript
        .mac(key, LABEL_CONNECTOR_PROOF)
        .finalize()
        .into_bytes();
    write_line(writer, &Handshake::Proof { proof: hex(&proof) })?;
    let session = transcript.session_key(key);
    Ok((
        Sealer(Some(FrameKey::new(session, Direction::FromConnector))),
        Opener(Some(FrameKey::new(session, Direction::FromAcceptor))),
    ))
}

/// The accepting side, node `self_id`: waits for a hello, refuses another
/// cluster, proves itself, checks the connector's proof. Without
/// authentication, reads nothing and returns plain ones (and no peer).
pub fn accept_handshake(
    creds: &Credentials,
    self_id: &str,
    reader: &mut impl BufRead,
    writer: &mut impl Write,
) -> Result<(Sealer, Opener, Option<Peer>), HandshakeError> {
    let Some(key) = creds.key.as_deref() else {
        return Ok((Sealer(None), Opener(None), None));
    };
    let refuse = |writer: &mut dyn Write, reason: String| {
        let _ = write_line(writer, &Handshake::Refused { reason });
    };
    let hello = match read_line(reader) {
        Ok(hello) => hello,
        Err(HandshakeError::NoHandshake {
            got, json: true, ..
        }) => {
            // Someone speaking the protocol without a key (a raft without
            // authentication, or a person with nc): say why.
            refuse(
                writer,
                format!("node {self_id} accepts only authenticated connections: use raft client with the cluster key (raft-data/cluster.key, or --cluster-key FILE)"),
            );
            return Err(HandshakeError::NoHandshake {
                who: "a connection".into(),
                got,
                json: true,
            });
        }
        Err(e) => return Err(e),
    };
    let Handshake::Hello {
        id,
        role,
        cluster,
        nonce,
    } = hello
    else {
        return Err(HandshakeError::NoHandshake {
            who: "a connection".into(),
            got: "its first line was not a hello".into(),
            json: true,
        });
    };
    let who = match role {
        Role::Peer => format!("node {id}"),
        Role::Client => format!("a client ({id})"),
    };
    if cluster != key.cluster_id {
        refuse(
            writer,
            format!(
                "node {self_id} has a different cluster key: it belongs to cluster {}, you to cluster {cluster}",
                key.cluster_id
            ),
        );
        return Err(HandshakeError::OtherCluster {
            theirs: cluster,
            ours: key.cluster_id.clone(),
            who,
        });
    }
    let nonce_c = unhex(&nonce).filter(|n| n.len() == NONCE_BYTES);
    let Some(nonce_c) = nonce_c.filter(|_| id.len() <= MAX_ID_BYTES) else {
        return Err(HandshakeError::NoHandshake {
            who,
            got: "its hello is malformed".into(),
            json: true,
        });
    };
    let nonce_a = random_nonce()?;
    let transcript = Transcript {
        nonce_c: &nonce_c,
        nonce_a: &nonce_a,
        cluster: &key.cluster_id,
        id_c: &id,
        role: &role,
        id_a: self_id,
    };
    let proof = transcript
        .mac(key, LABEL_ACCEPTOR_PROOF)
        .finalize()
        .into_bytes();
    write_line(
        writer,
        &Handshake::Welcome {
            id: self_id.to_string(),
            cluster: key.cluster_id.clone(),
            nonce: hex(&nonce_a),
            proof: hex(&proof),
        },
    )?;
    let their_proof = match read_line(reader)? {
        Handshake::Proof { proof } => proof,
        Handshake::Refused { reason } => return Err(HandshakeError::RefusedBy { who, reason }),
        other => {
            return Err(HandshakeError::NoHandshake {
                who,
                got: format!("it sent {other:?} instead of its proof"),
                json: true,
            })
        }
    };
    let verified = unhex(&their_proof).is_some_and(|p| {
        transcript
            .mac(key, LABEL_CONNECTOR_PROOF)
            .verify_slice(&p)
            .is_ok()
    });
    if !verified {
        refuse(
            writer,
            format!("node {self_id} has a different cluster key: your proof does not verify"),
        );
        return Err(HandshakeError::DifferentKey { who });
    }
    let session = transcript.session_key(key);
    Ok((
        Sealer(Some(FrameKey::new(session, Direction::FromAcceptor))),
        Opener(Some(FrameKey::new(session, Direction::FromConnector))),
        Some(Peer { id, role }),
    ))
}

/// Everything both sides said, in one fixed order, each part
/// length-prefixed so that no two transcripts read the same.
struct Transcript<'a> {
    nonce_c: &'a [u8],
    nonce_a: &'a [u8],
    cluster: &'a str,
    id_c: &'a str,
    role: &'a Role,
    id_a: &'a str,
}

impl Transcript<'_> {
    fn mac(&self, key: &ClusterKey, label: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&key.key).expect("HMAC takes any key size");
        let role: &[u8] = match self.role {
            Role::Peer => b"peer",
            Role::Client => b"client",
        };
        for part in [
            label,
            self.nonce_c,
            self.nonce_a,
            self.cluster.as_bytes(),
            self.id_c.as_bytes(),
            role,
            self.id_a.as_bytes(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    fn session_key(&self, key: &ClusterKey) -> [u8; 32] {
        self.mac(key, LABEL_SESSION).finalize().into_bytes().into()
    }
}

fn write_line(writer: &mut (impl Write + ?Sized), frame: &Handshake) -> io::Result<()> {
    let mut line = serde_json::to_vec(frame).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

fn read_line(reader: &mut impl BufRead) -> Result<Handshake, HandshakeError> {
    let mut line = Vec::new();
    reader
        .take(MAX_HANDSHAKE_LINE)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(HandshakeError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed during the handshake",
        )));
    }
    serde_json::from_slice(&line).map_err(|_| {
        let text = String::from_utf8_lossy(&line);
        let start: String = text.trim_end().chars().take(60).collect();
        HandshakeError::NoHandshake {
            who: "a connection".into(),
            got: format!("it sent {start:?} instead of a handshake"),
            json: serde_json::from_slice::<serde_json::Value>(&line).is_ok(),
        }
    })
}

/// The line a node sends, sealed, on an authenticated connection just
/// before it closes it for a reason the other side should know.
pub fn refusal_frame(sealer: &mut Sealer, reason: &str) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(&Handshake::Refused {
        reason: reason.to_string(),
    })
    .ok()?;
    sealer.seal(&json).ok()
}

/// Reads a refusal [`refusal_frame`] made, if that is what `line` is.
pub fn read_refusal(opener: &mut Opener, line: &str) -> Option<String> {
    let json = opener.open(line).ok()?;
    match serde_json::from_str(json).ok()? {
        Handshake::Refused { reason } => Some(reason),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Logging refusals without flooding
// ---------------------------------------------------------------------------

/// Logs `message` as a warning unless one of the same `kind` was logged in
/// the last [`REFUSAL_LOG_INTERVAL`]; the next one logged says how many
/// were left unsaid meanwhile.
pub fn warn_rate_limited(kind: &'static str, message: impl FnOnce() -> String) {
    static LAST: OnceLock<Mutex<HashMap<&'static str, (Instant, u64)>>> = OnceLock::new();
    let Ok(mut last) = LAST.get_or_init(Default::default).lock() else {
        return;
    };
    let now = Instant::now();
    match last.get_mut(kind) {
        Some((at, unsaid)) if now.duration_since(*at) < REFUSAL_LOG_INTERVAL => {
            *unsaid += 1;
        }
        entry => {
            let unsaid = entry.map_or(0, |(_, unsaid)| *unsaid);
            let more = if unsaid > 0 {
                format!(" ({unsaid} more like it in the last {REFUSAL_LOG_INTERVAL:?})")
            } else {
                String::new()
            };
            log::warn!("{}{more}", message());
            last.insert(kind, (now, 0));
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn os_random(buf: &mut [u8]) -> io::Result<()> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| io::Error::other(format!("the operating system's random source failed: {e}")))
}

fn random_nonce() -> io::Result<[u8; NONCE_BYTES]> {
    let mut nonce = [0u8; NONCE_BYTES];
    os_random(&mut nonce)?;
    Ok(nonce)
}

fn hex(bytes: &[u8]) -> String {
    let mut digits = vec![0; 2 * bytes.len()];
    hex_into(bytes, &mut digits);
    digits.into_iter().map(char::from).collect()
}

/// Writes `bytes` into `out`, twice as long, as lowercase hex digits. Into
/// a buffer the caller owns: every frame sent has its MAC encoded here.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert_eq!(out.len(), 2 * bytes.len());
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut bytes = vec![0; s.len() / 2];
    unhex_into(s, &mut bytes)?;
    Some(bytes)
}

/// Decodes `s`, exactly twice as many hex digits (either case) as `out`
/// has bytes, into `out`; `None` if it is not that. Into a buffer the
/// caller owns: every frame received has its MAC decoded here.
fn unhex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != 2 * out.len() {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

// ---------------------------------------------------------------------------
// The cluster a data directory belongs to
// ---------------------------------------------------------------------------

/// The file in a node's data directory naming the cluster its data is of.
pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// Checks that the data directory `data_dir` belongs to the cluster of
/// `key` (the key file at `key_path`), or records that it does if it does
/// not say yet: a new node, a node from before cluster ids, or a node whose
/// data directory was wiped and which rejoins with the key file still
/// beside it. Refuses data of another cluster, which would mean the key
/// file was replaced (a new key makes a new cluster) or the directory is
/// another cluster's.
pub fn check_cluster_id(data_dir: &Path, key: &ClusterKey, key_path: &Path) -> Result<(), String> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) if text.trim() == key.cluster_id => Ok(()),
        Ok(text) => Err(format!(
            "{} holds data of cluster {}, but the key file {} is of cluster {}: give this node its cluster's key file with --cluster-key, or, to start a new cluster, remove the old data directories",
            data_dir.display(),
            text.trim(),
            key_path.display(),
            key.cluster_id
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let temp = data_dir.join(format!("{CLUSTER_ID_FILE}.tmp"));
            let _ = fs::remove_file(&temp);
            write_private(&temp, format!("{}\n", key.cluster_id).as_bytes())
                .and_then(|()| fs::rename(&temp, &path))
                .and_then(|()| File::open(data_dir)?.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    type Connector = Result<(Sealer, Opener), HandshakeError>;
    type Acceptor = Result<(Sealer, Opener, Option<Peer>), HandshakeError>;

    /// Runs both sides of a handshake over a loopback connection.
    fn handshake(connector: &Credentials, acceptor: &Credentials) -> (Connector, Acceptor) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = acceptor.clone();
        let accepting = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
                .expect("timeout");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            accept_handshake(&acceptor, "8001", &mut reader, &mut &stream)
        });
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let connected = connect_handshake(connector, "8000", Role::Peer, &mut reader, &mut &stream);
        drop(stream);
        (connected, accepting.join().expect("no panic"))
    }

    fn key() -> Credentials {
        Credentials::new(ClusterKey::generate().expect("random"))
    }

    /// A connected pair: what the connector sends, the acceptor opens.
    fn session(creds: &Credentials) -> (Sealer, Opener) {
        let (connected, accepted) = handshake(creds, creds);
        let (sealer, _) = connected.expect("connector");
        let (_, opener, peer) = accepted.expect("acceptor");
        let peer = peer.expect("authenticated");
        assert_eq!((peer.id.as_str(), peer.role), ("8000", Role::Peer));
        (sealer, opener)
    }

    fn line(sealed: Vec<u8>) -> String {
        String::from_utf8(sealed)
            .expect("utf8")
            .trim_end()
            .to_string()
    }

    const FRAME: &[u8] =
        br#"{"peer":{"from":"8000","to":"8001","term":2,"body":{"type":"timeout_now"}}}"#;

    #[test]
    fn frames_pass_in_order_and_stay_readable() {
        let (mut sealer, mut opener) = session(&key());
        for _ in 0..3 {
            let wire = line(sealer.seal(FRAME).expect("seal"));
            assert!(wire.starts_with(std::str::from_utf8(FRAME).expect("utf8")));
            assert_eq!(
                opener.open(&wire),
                Ok(std::str::from_utf8(FRAME).expect("utf8"))
            );
        }
    }

    #[test]
    fn frames_sealed_one_after_another_in_one_buffer_each_open() {
        let (mut sealer, mut opener) = session(&key());
        let frames = [&br#"{"a":1}"#[..], br#"{"b":2}"#, FRAME];
        let mut buffer = Vec::new();
        for json in frames {
            let start = buffer.len();
            buffer.extend_from_slice(json);
            sealer.seal_in_place(&mut buffer, start).expect("seal");
        }
        let wire = String::from_utf8(buffer).expect("utf8");
        let opened: Vec<&str> = wire
            .lines()
            .map(|line| opener.open(line).expect("each frame opens"))
            .collect();
        let sent: Vec<&str> = frames
            .iter()
            .map(|json| std::str::from_utf8(json).expect("utf8"))
            .collect();
        assert_eq!(opened, sent);
    }

    #[test]
    fn a_flipped_bit_is_refused() {
        let (mut sealer, mut opener) = session(&key());
        let wire = sealer.seal(FRAME).expect("seal");
        // A bit of the JSON.
        let mut bad_json = wire.clone();
        bad_json[20] ^= 0x01;
        // A digit of the MAC changed into another hex digit. (Flipping a
        // bit of 'a' or 'f' gives a character that is not hex at all; the
        // session key is random, so which digit is where varies by run.)
        let mut bad_mac = wire.clone();
        let at = wire.len() - 5;
        bad_mac[at] = if wire[at] == b'0' { b'1' } else { b'0' };
        for (what, bad) in [("JSON", bad_json), ("MAC", bad_mac)] {
            assert!(
                matches!(
                    opener.clone().open(&line(bad)),
                    Err(FrameAuthError::BadMac { seq: 0 })
                ),
                "a flipped bit in the {what}"
            );
        }
        // A MAC digit that is no longer hex is no MAC at all.
        let mut not_hex = wire.clone();
        not_hex[at] = b'g';
        assert_eq!(
            opener.clone().open(&line(not_hex)),
            Err(FrameAuthError::MissingMac)
        );
        assert!(opener.open(&line(wire)).is_ok());
    }

    #[test]
    fn a_replayed_or_reordered_frame_is_refused() {
        let (mut sealer, mut opener) = session(&key());
        let first = line(sealer.seal(FRAME).expect("seal"));
        let second = line(sealer.seal(FRAME).expect("seal"));
        assert!(opener.clone().open(&second).is_err(), "second before first");
        assert!(opener.open(&first).is_ok());
        assert_eq!(
            opener.open(&first),
            Err(FrameAuthError::BadMac { seq: 1 }),
            "the same frame again"
        );
        assert!(opener.open(&second).is_ok());
    }

    #[test]
    fn a_frame_sealed_but_never_sent_gives_its_number_back() {
        // The state-machine thread seals a frame, the socket takes none of
        // it, and the writer thread seals it again: same number, or the
        // receiver would see a gap and close the connection.
        let (mut sealer, mut opener) = session(&key());
        let _unsent = sealer.seal(FRAME).expect("seal");
        sealer.unseal_last();
        let sent = line(sealer.seal(FRAME).expect("seal"));
        assert!(opener.open(&sent).is_ok());
    }

    #[test]
    fn a_frame_from_another_connection_is_refused() {
        let creds = key();
        let (mut sealer_a, _) = session(&creds);
        let (_, mut opener_b) = session(&creds);
        let wire = line(sealer_a.seal(FRAME).expect("seal"));
        assert_eq!(opener_b.open(&wire), Err(FrameAuthError::BadMac { seq: 0 }));
    }

    #[test]
    fn a_frame_sent_back_the_other_way_is_refused() {
        // Same session key, same sequence number: only the direction
        // differs, and it is enough.
        let creds = key();
        let (connected, accepted) = handshake(&creds, &creds);
        let (mut connector_sealer, mut connector_opener) = connected.expect("connector");
        let (mut acceptor_sealer, mut acceptor_opener, _) = accepted.expect("acceptor");
        let from_connector = line(connector_sealer.seal(FRAME).expect("seal"));
        let from_acceptor = line(acceptor_sealer.seal(FRAME).expect("seal"));
        assert!(connector_opener.clone().open(&from_connector).is_err());
        assert!(acceptor_opener.clone().open(&from_acceptor).is_err());
        assert!(connector_opener.open(&from_acceptor).is_ok());
        assert!(acceptor_opener.open(&from_connector).is_ok());
    }

    #[test]
    fn a_truncated_or_missing_mac_is_refused() {
        let (mut sealer, mut opener) = session(&key());
        let wire = line(sealer.seal(FRAME).expect("seal"));
        let truncated = &wire[..wire.len() - 2];
        assert_eq!(
            opener.clone().open(truncated),
            Err(FrameAuthError::MissingMac)
        );
        let json = std::str::from_utf8(FRAME).expect("utf8");
        assert_eq!(opener.clone().open(json), Err(FrameAuthError::MissingMac));
        // A truncated frame: the MAC no longer covers what is left.
        let (json_part, mac) = wire.rsplit_once(' ').expect("mac");
        let cut = format!("{} {mac}", &json_part[..json_part.len() - 1]);
        assert!(matches!(
            opener.open(&cut),
            Err(FrameAuthError::BadMac { .. })
        ));
    }

    #[test]
    fn a_wrong_key_of_the_same_cluster_fails_the_handshake_on_both_sides() {
        let good = ClusterKey::generate().expect("random");
        let mut forged = good.clone();
        forged.key[0] ^= 1;
        let (connected, accepted) = handshake(&Credentials::new(forged), &Credentials::new(good));
        let connected = connected.expect_err("connector refuses the acceptor's proof");
        assert!(
            matches!(connected, HandshakeError::DifferentKey { .. }),
            "{connected}"
        );
        assert!(connected
            .to_string()
            .contains("has a different cluster key"));
        let accepted = accepted.expect_err("acceptor is told");
        assert!(
            matches!(accepted, HandshakeError::RefusedBy { .. }),
            "{accepted}"
        );
        assert!(
            accepted.to_string().contains("has a different cluster key"),
            "{accepted}"
        );
    }

    #[test]
    fn another_cluster_is_refused_naming_both() {
        let (ours, theirs) = (key(), key());
        let (connected, accepted) = handshake(&theirs, &ours);
        let connected = connected.expect_err("refused").to_string();
        let accepted = accepted.expect_err("refused").to_string();
        for text in [&connected, &accepted] {
            assert!(text.contains("has a different cluster key"), "{text}");
            assert!(text.contains(ours.cluster_id().expect("id")), "{text}");
            assert!(text.contains(theirs.cluster_id().expect("id")), "{text}");
        }
    }

    #[test]
    fn a_plain_frame_instead_of_a_hello_is_refused_with_a_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let creds = key();
        let accepting = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            accept_handshake(&creds, "8001", &mut reader, &mut &stream)
        });
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(FRAME)
            .and_then(|()| stream.write_all(b"\n"))
            .expect("send");
        let err = accepting.join().expect("no panic").expect_err("refused");
        assert!(matches!(err, HandshakeError::NoHandshake { .. }), "{err}");
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).expect("read");
        assert!(
            answer.contains("refused") && answer.contains("cluster key"),
            "{answer}"
        );
    }

    #[test]
    fn without_authentication_lines_are_plain() {
        let plain = Credentials::insecure();
        let (connected, accepted) = handshake(&plain, &plain);
        let (mut sealer, _) = connected.expect("plain");
        let (_, mut opener, peer) = accepted.expect("plain");
        assert!(peer.is_none() && sealer.is_plain());
        let wire = line(sealer.seal(FRAME).expect("seal"));
        assert_eq!(wire.as_bytes(), FRAME);
        assert!(opener.open(&wire).is_ok());
    }

    // -- the key file --------------------------------------------------

    #[test]
    fn the_key_file_is_created_once_private_and_found_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("raft-data").join(KEY_FILE_NAME);
        let (created, fresh) = ClusterKey::load_or_create(&path).expect("create");
        assert!(fresh);
        let (found, fresh) = ClusterKey::load_or_create(&path).expect("load");
        assert!(!fresh);
        assert_eq!(created, found);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the key file is left behind: no temporary files.
        let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [KEY_FILE_NAME]);
    }

    #[test]
    fn nodes_starting_at_once_agree_on_one_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE_NAME);
        let keys: Vec<ClusterKey> = (0..8)
            .map(|_| {
                let path = path.clone();
                thread::spawn(move || ClusterKey::load_or_create(&path).expect("key").0)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("no panic"))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_damaged_key_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE_NAME);
        for bad in [
            "",
            "cluster_id = 0011223344556677\n",
            "cluster_id = xyz\nkey = 00\n",
            "cluster_id = 0011223344556677\nkey = 0011\n",
            "garbage",
        ] {
            fs::write(&path, bad).expect("write");
            let e = ClusterKey::load(&path).expect_err(bad);
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(ClusterKey::load_or_create(&path).is_err(), "{bad}");
        }
        let missing = dir.path().join("none.key");
        let e = ClusterKey::load(&missing).expect_err("missing");
        assert!(e.contains("--cluster-key"), "{e}");
    }

    #[test]
    fn the_key_is_never_printed() {
        let key = ClusterKey::generate().expect("random");
        let shown = format!("{key:?} {:?}", Credentials::new(key.clone()));
        assert!(!shown.contains(&hex(&key.key)), "{shown}");
    }

    #[test]
    fn a_data_directory_keeps_its_cluster() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ours, theirs) = (
            ClusterKey::generate().expect("random"),
            ClusterKey::generate().expect("random"),
        );
        let key_path = dir.path().join(KEY_FILE_NAME);
        // First start (or a wiped directory): adopted from the key.
        check_cluster_id(dir.path(), &ours, &key_path).expect("adopt");
        check_cluster_id(dir.path(), &ours, &key_path).expect("same cluster");
        let e = check_cluster_id(dir.path(), &theirs, &key_path).expect_err("another cluster");
        assert!(
            e.contains(&ours.cluster_id) && e.contains(&theirs.cluster_id),
            "{e}"
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        let mut digits = [0u8; 4];
        hex_into(&[0x0a, 0xff], &mut digits);
        assert_eq!(&digits, b"0aff");
        assert_eq!(unhex("00abFF"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        let mut two = [0u8; 2];
        assert_eq!(unhex_into("0aFf", &mut two), Some(()));
        assert_eq!(two, [0x0a, 0xff]);
        assert_eq!(unhex_into("0aF", &mut two), None);
        assert_eq!(unhex_into("0aFf00", &mut two), None);
        assert_eq!(unhex_into("0g00", &mut two), None);
        assert_eq!(unhex_into("+1+1", &mut two), None);
    }

    /// Not a test of correctness: the cost of the MAC on a typical frame.
    /// `cargo test --release --lib mac_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn mac_cost() {
        let (mut sealer, mut opener) = session(&key());
        let frame = vec![b'x'; 200];
        const N: u32 = 1_000_000;
        let start = Instant::now();
        let mut lines = Vec::with_capacity(N as usize);
        for _ in 0..N {
            lines.push(sealer.seal(&frame).expect("seal"));
        }
        let seal_ns = start.elapsed().as_nanos() / u128::from(N);
        let text: Vec<String> = lines.into_iter().map(line).collect();
        let start = Instant::now();
        for wire in &text {
            opener.open(wire).expect("open");
        }
        let open_ns = start.elapsed().as_nanos() / text.len() as u128;
        println!("seal: {seal_ns} ns per 200-byte frame; open: {open_ns} ns per frame");
    }
}
