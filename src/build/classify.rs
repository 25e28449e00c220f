//! Why a build failed: a streaming classifier over a build's combined output.
//!
//! `bilge build -- CMD` tees every byte the command writes through [`Classifier::feed`];
//! when the command ends, [`Classifier::finish`] turns what was seen, the way the command
//! ended ([`Exit`]) and the state of Docker's data root ([`DiskState`]) into one
//! [`Reason`] plus the output line that shows it. This module owns that decision and
//! nothing else: it does no I/O, keeps at most one capped line ([`MAX_LINE`] bytes) and
//! one evidence string per cause however much output it sees, and never allocates per byte.
//!
//! How it decides:
//! - Exit code 0 is [`Reason::None`], whatever the output says.
//! - Each output line (ended by `\n` or `\r`, ANSI escapes removed, cut at [`MAX_LINE`]
//!   bytes for matching) is matched case-insensitively against a fixed set of needles,
//!   each tied to a cause. The first line seen for each cause is kept as its evidence.
//!   To stay cheap per byte, a line is only sampled: a hashed 4-byte window every 5 bytes
//!   finds the needles of 8 bytes or more, and `memchr` finds the few shorter ones by a
//!   byte their rules make exact (the `E` of `ENOSPC`, the `K` of `Killed`, ...).
//! - The exit status adds a cause of its own: 137 or SIGKILL is `oom`, 124 (GNU
//!   `timeout`) is `timeout`, 130, 143, SIGINT and SIGTERM are `canceled`.
//! - Causes are ranked: `no_space`/`no_inodes`, `io_error`, `read_only_fs` (the disk
//!   causes) over `oom`, `registry_auth`, `network`, `dockerfile`, `timeout`, `canceled`;
//!   then, when nothing more specific was found but the caller saw the disk full
//!   ([`DiskState`]), `no_space`/`no_inodes`; then `command_failed`; then `unknown`.
//!
//! Finer tie-breaks, each pinned by a test:
//! - `no_space` becomes `no_inodes` whenever `disk.inodes_exhausted` is set.
//! - A generic "command failed" line whose exit code is 137 counts as `oom`.
//! - `i/o timeout`, `getaddrinfo EIO` and apk's `WARNING: Ignoring https://…: IO ERROR`
//!   are `network`, never `io_error`; a bare `EIO` code only counts as `io_error` when no
//!   network failure was seen anywhere in the output.
//! - `context deadline exceeded` is `network` when its line names a request (`dial tcp`,
//!   `failed to do request`, a URL, `lookup`), else `timeout`.
//! - `failed to compute cache key` is `dockerfile` only with `not found` on the line.
//! - `unexpected EOF` is deliberately not a `dockerfile` cue: it is far more often a
//!   broken download or tar stream.
//! - `unknown` carries no evidence (there is no line that explains it), and neither does a
//!   cause that only the exit status or the disk state supplied.

use std::fmt;
use std::str::FromStr;

/// Longest line, in bytes, that is kept for matching; the rest of a longer line is read and dropped.
pub const MAX_LINE: usize = 8 * 1024;

/// Longest evidence, in bytes of the original line (an ellipsis marks each cut end).
pub const MAX_EVIDENCE: usize = 300;

/// Why a build ended the way it did. Serialised snake_case: "none", "no_space", ...
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The build succeeded.
    None,
    /// The disk under the build ran out of space (ENOSPC, quota, "not enough free space").
    NoSpace,
    /// The disk looked full but it was the inodes that ran out.
    NoInodes,
    /// The kernel reported an I/O error (EIO) while the build wrote files.
    IoError,
    /// A filesystem the build wrote to was read-only (EROFS).
    ReadOnlyFs,
    /// A process ran out of memory or was killed by the OOM killer.
    Oom,
    /// DNS, connection or TLS failures reaching a registry or a package mirror.
    Network,
    /// The registry refused the credentials, or there were none.
    RegistryAuth,
    /// The Dockerfile did not parse, or named a file that is not in the build context.
    Dockerfile,
    /// The build ran past a deadline.
    Timeout,
    /// The build was interrupted or canceled.
    Canceled,
    /// A build step exited non-zero and nothing more specific explains it.
    CommandFailed,
    /// The build failed and nothing in its output or exit status says why.
    Unknown,
}

/// Names, parsing and groupings of reasons.
impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 13] = [
        Reason::None,
        Reason::NoSpace,
        Reason::NoInodes,
        Reason::IoError,
        Reason::ReadOnlyFs,
        Reason::Oom,
        Reason::Network,
        Reason::RegistryAuth,
        Reason::Dockerfile,
        Reason::Timeout,
        Reason::Canceled,
        Reason::CommandFailed,
        Reason::Unknown,
    ];

    /// The snake_case name used in metrics, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::NoSpace => "no_space",
            Reason::NoInodes => "no_inodes",
            Reason::IoError => "io_error",
            Reason::ReadOnlyFs => "read_only_fs",
            Reason::Oom => "oom",
            Reason::Network => "network",
            Reason::RegistryAuth => "registry_auth",
            Reason::Dockerfile => "dockerfile",
            Reason::Timeout => "timeout",
            Reason::Canceled => "canceled",
            Reason::CommandFailed => "command_failed",
            Reason::Unknown => "unknown",
        }
    }

    /// The reason named `s` (exactly as [`Reason::as_str`] writes it), if any.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the cause is the disk itself: no space, no inodes, I/O error or read-only.
    pub fn is_disk(self) -> bool {
        matches!(
            self,
            Reason::NoSpace | Reason::NoInodes | Reason::IoError | Reason::ReadOnlyFs
        )
    }

    /// Whether freeing disk space (a cleanup) may let a retry of the build succeed.
    pub fn is_retryable_by_cleanup(self) -> bool {
        matches!(self, Reason::NoSpace | Reason::NoInodes | Reason::IoError)
    }
}

/// Displays the snake_case name.
impl fmt::Display for Reason {
    /// Writes [`Reason::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Reason`]; its message lists the valid names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseReasonError {
    /// The string that was given.
    pub input: String,
}

/// Names the bad input and lists the valid values.
impl fmt::Display for ParseReasonError {
    /// Says what was given and what would have been accepted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown build reason {:?}; valid values are: ",
            self.input
        )?;
        for (i, reason) in Reason::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(reason.as_str())?;
        }
        Ok(())
    }
}

/// A plain error with no source.
impl std::error::Error for ParseReasonError {}

/// Parses the snake_case name; the error lists the valid values.
impl FromStr for Reason {
    /// The error for a name that is not a reason.
    type Err = ParseReasonError;

    /// Parses the snake_case name, as [`Reason::parse`] does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::parse(s).ok_or_else(|| ParseReasonError {
            input: s.to_owned(),
        })
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

/// The disk under Docker's data root at the moment of failure (filled by the caller from statvfs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskState {
    /// No free blocks were left for unprivileged writers.
    pub space_exhausted: bool,
    /// No free inodes were left.
    pub inodes_exhausted: bool,
}

/// The verdict on one build: why it ended, and the output line that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Why the build ended the way it did.
    pub reason: Reason,
    /// The matched output line, trimmed, ANSI escapes stripped, at most ~300 chars.
    pub evidence: Option<String>,
}

/// Classifies a whole output at once (for tests and the HTTP API).
pub fn classify(output: &[u8], exit: Exit, disk: DiskState) -> Classification {
    let mut classifier = Classifier::new();
    classifier.feed(output);
    classifier.finish(exit, disk)
}

/// A cause that an output line can show; the index into [`Classifier::hits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// ENOSPC and its relatives.
    NoSpace,
    /// EIO spelled out ("I/O error", "input/output error", apk's "IO ERROR").
    IoError,
    /// EROFS.
    ReadOnlyFs,
    /// Out of memory, or killed the way the OOM killer kills.
    Oom,
    /// Registry authentication or authorization.
    RegistryAuth,
    /// DNS, connect, reset and transfer timeouts.
    Network,
    /// Dockerfile syntax or build-context mistakes.
    Dockerfile,
    /// A deadline was exceeded.
    Timeout,
    /// The build was canceled.
    Canceled,
    /// A generic "this step exited non-zero" line.
    CommandFailed,
    /// A bare `EIO` code, which getaddrinfo also reports for DNS failures.
    WeakIoError,
}

/// How many [`Cause`]s there are.
const CAUSES: usize = 11;

/// Causes in the order they win, disk causes first.
const RANKED: [Cause; 10] = [
    Cause::NoSpace,
    Cause::IoError,
    Cause::ReadOnlyFs,
    Cause::Oom,
    Cause::RegistryAuth,
    Cause::Network,
    Cause::Dockerfile,
    Cause::Timeout,
    Cause::Canceled,
    Cause::CommandFailed,
];

/// What has to hold, beyond the needle itself, for a match to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// The needle anywhere in the line.
    Plain,
    /// The needle as a whole word (no letter, digit or `_` on either side).
    Word,
    /// An errno-style code: a whole word, and upper-case exactly (`EROFS`, not the `erofs` tools).
    Errno,
    /// An I/O-error phrase: network instead when the line is a DNS or repository-fetch failure.
    Io,
    /// The exact upper-case word `EIO`.
    Eio,
    /// The exact word `Killed`, alone or after a PID or a BuildKit step prefix.
    Killed,
    /// A generic failure line; an exit code of 137 after the needle makes it `oom`.
    ExitCode,
    /// A deadline: `network` when the line names a request, else `timeout`.
    Deadline,
    /// Only with "not found" elsewhere on the line.
    NotFound,
    /// Only with "parse" elsewhere on the line.
    Parse,
}

/// One thing to look for: lower-case ASCII bytes, the cause it shows, and its extra rule.
#[derive(Debug, Clone, Copy)]
struct Needle {
    /// The bytes, lower-case; matched ASCII-case-insensitively.
    pat: &'static [u8],
    /// The cause a match shows.
    cause: Cause,
    /// The extra condition.
    rule: Rule,
}

/// Shorthand for a [`Needle`] in the table below.
const fn n(pat: &'static str, cause: Cause, rule: Rule) -> Needle {
    Needle {
        pat: pat.as_bytes(),
        cause,
        rule,
    }
}

/// Everything the classifier looks for. Every pattern is lower-case. Those of [`LONG`] bytes
/// or more are found through [`INDEX`]; each shorter one must have a rule that fixes one of
/// its bytes in a match to one of [`ANCHORS`] ([`exact_byte`]).
const NEEDLES: &[Needle] = &[
    // no_space
    n("no space left", Cause::NoSpace, Rule::Plain),
    n("enospc", Cause::NoSpace, Rule::Errno),
    n("errno 28]", Cause::NoSpace, Rule::Plain),
    n("enough free space", Cause::NoSpace, Rule::Plain),
    n("not enough space", Cause::NoSpace, Rule::Plain),
    n("insufficient space", Cause::NoSpace, Rule::Plain),
    n("disk quota exceeded", Cause::NoSpace, Rule::Plain),
    n("edquot", Cause::NoSpace, Rule::Errno),
    n("errno 122]", Cause::NoSpace, Rule::Plain),
    n("database or disk is full", Cause::NoSpace, Rule::Plain),
    n("free data blocks", Cause::NoSpace, Rule::Plain),
    // io_error
    n("input/output error", Cause::IoError, Rule::Io),
    n("i/o error", Cause::IoError, Rule::Io),
    n("io error", Cause::IoError, Rule::Io),
    n("eio", Cause::WeakIoError, Rule::Eio),
    // read_only_fs
    n("read-only file system", Cause::ReadOnlyFs, Rule::Plain),
    n("read-only filesystem", Cause::ReadOnlyFs, Rule::Plain),
    n("read only file system", Cause::ReadOnlyFs, Rule::Plain),
    n("erofs", Cause::ReadOnlyFs, Rule::Errno),
    // oom
    n("out of memory", Cause::Oom, Rule::Plain),
    n("cannot allocate memory", Cause::Oom, Rule::Plain),
    n("memory exhausted", Cause::Oom, Rule::Plain),
    n("enomem", Cause::Oom, Rule::Errno),
    n("killed signal terminated program", Cause::Oom, Rule::Plain),
    n("oomkilled", Cause::Oom, Rule::Plain),
    n("oom-kill", Cause::Oom, Rule::Plain),
    n("oom killer", Cause::Oom, Rule::Plain),
    n("std::bad_alloc", Cause::Oom, Rule::Plain),
    n("memoryerror", Cause::Oom, Rule::Word),
    n("signal: 9, sigkill", Cause::Oom, Rule::Plain),
    n("signal: killed", Cause::Oom, Rule::Plain),
    n("killed", Cause::Oom, Rule::Killed),
    // registry_auth
    n("unauthorized: ", Cause::RegistryAuth, Rule::Plain),
    n("401 unauthorized", Cause::RegistryAuth, Rule::Plain),
    n("authentication required", Cause::RegistryAuth, Rule::Plain),
    n("pull access denied", Cause::RegistryAuth, Rule::Plain),
    n(
        "requested access to the resource is denied",
        Cause::RegistryAuth,
        Rule::Plain,
    ),
    n(
        "no basic auth credentials",
        Cause::RegistryAuth,
        Rule::Plain,
    ),
    n("insufficient_scope", Cause::RegistryAuth, Rule::Plain),
    n("authorization failed", Cause::RegistryAuth, Rule::Plain),
    n(
        "incorrect username or password",
        Cause::RegistryAuth,
        Rule::Plain,
    ),
    n(
        "authorization token has expired",
        Cause::RegistryAuth,
        Rule::Plain,
    ),
    n("toomanyrequests", Cause::RegistryAuth, Rule::Plain),
    // network
    n("temporary failure", Cause::Network, Rule::Plain),
    n("could not resolve host", Cause::Network, Rule::Plain),
    n("could not resolve '", Cause::Network, Rule::Plain),
    n("unable to resolve host", Cause::Network, Rule::Plain),
    n("name or service not known", Cause::Network, Rule::Plain),
    n("no such host", Cause::Network, Rule::Plain),
    n("nodename nor servname", Cause::Network, Rule::Plain),
    n("server misbehaving", Cause::Network, Rule::Plain),
    n("getaddrinfo", Cause::Network, Rule::Plain),
    n("dns lookup error", Cause::Network, Rule::Plain),
    n("connection refused", Cause::Network, Rule::Plain),
    n("connection reset", Cause::Network, Rule::Plain),
    n("connection timed out", Cause::Network, Rule::Plain),
    n("i/o timeout", Cause::Network, Rule::Plain),
    n("tls handshake timeout", Cause::Network, Rule::Plain),
    n("network is unreachable", Cause::Network, Rule::Plain),
    n("no route to host", Cause::Network, Rule::Plain),
    n("could not connect to", Cause::Network, Rule::Plain),
    n("failed to connect to", Cause::Network, Rule::Plain),
    n(
        "failed to establish a new connection",
        Cause::Network,
        Rule::Plain,
    ),
    n("max retries exceeded", Cause::Network, Rule::Plain),
    n("read timed out", Cause::Network, Rule::Plain),
    n("readtimeouterror", Cause::Network, Rule::Plain),
    n("connecttimeouterror", Cause::Network, Rule::Plain),
    n("remote end closed connection", Cause::Network, Rule::Plain),
    n(
        "request canceled while waiting for connection",
        Cause::Network,
        Rule::Plain,
    ),
    n("client.timeout exceeded", Cause::Network, Rule::Plain),
    n("proxyconnect tcp", Cause::Network, Rule::Plain),
    n("socket timeout", Cause::Network, Rule::Plain),
    n("network timeout", Cause::Network, Rule::Plain),
    n(
        "temporary error (try again later)",
        Cause::Network,
        Rule::Plain,
    ),
    n("etimedout", Cause::Network, Rule::Errno),
    n("econnreset", Cause::Network, Rule::Errno),
    n("econnrefused", Cause::Network, Rule::Errno),
    n("eai_again", Cause::Network, Rule::Errno),
    n("enotfound", Cause::Network, Rule::Errno),
    n("err_socket_timeout", Cause::Network, Rule::Errno),
    n("curl: (6)", Cause::Network, Rule::Plain),
    n("curl: (7)", Cause::Network, Rule::Plain),
    n("curl: (28)", Cause::Network, Rule::Plain),
    n("curl: (35)", Cause::Network, Rule::Plain),
    n("curl: (56)", Cause::Network, Rule::Plain),
    // dockerfile
    n("dockerfile parse error", Cause::Dockerfile, Rule::Plain),
    n("unknown instruction:", Cause::Dockerfile, Rule::Plain),
    n(
        "failed to solve with frontend dockerfile.v0",
        Cause::Dockerfile,
        Rule::Parse,
    ),
    n("failed to read dockerfile", Cause::Dockerfile, Rule::Plain),
    n(
        "no build stage in current context",
        Cause::Dockerfile,
        Rule::Plain,
    ),
    n(
        "unable to evaluate symlinks in dockerfile path",
        Cause::Dockerfile,
        Rule::Plain,
    ),
    n(
        "cannot locate specified dockerfile",
        Cause::Dockerfile,
        Rule::Plain,
    ),
    n("failed to parse stage name", Cause::Dockerfile, Rule::Plain),
    n(
        "unexpected end of statement",
        Cause::Dockerfile,
        Rule::Plain,
    ),
    n("copy failed: ", Cause::Dockerfile, Rule::Plain),
    n("add failed: ", Cause::Dockerfile, Rule::Plain),
    n("not found: not found", Cause::Dockerfile, Rule::Plain),
    n(
        "failed to compute cache key",
        Cause::Dockerfile,
        Rule::NotFound,
    ),
    n(
        "failed to calculate checksum of ref",
        Cause::Dockerfile,
        Rule::NotFound,
    ),
    // timeout
    n("context deadline exceeded", Cause::Timeout, Rule::Deadline),
    n("deadlineexceeded", Cause::Timeout, Rule::Deadline),
    n("timed out", Cause::Timeout, Rule::Plain),
    n("timeout exceeded", Cause::Timeout, Rule::Plain),
    n("timeout expired", Cause::Timeout, Rule::Plain),
    // canceled
    n("context canceled", Cause::Canceled, Rule::Plain),
    n("context cancelled", Cause::Canceled, Rule::Plain),
    n("canceled: ", Cause::Canceled, Rule::Plain),
    n("cancelled: ", Cause::Canceled, Rule::Plain),
    n("build canceled", Cause::Canceled, Rule::Plain),
    n("build cancelled", Cause::Canceled, Rule::Plain),
    // command_failed
    n(
        "did not complete successfully",
        Cause::CommandFailed,
        Rule::ExitCode,
    ),
    n(
        "returned a non-zero code",
        Cause::CommandFailed,
        Rule::ExitCode,
    ),
    n(
        "executor failed running",
        Cause::CommandFailed,
        Rule::ExitCode,
    ),
    n("exit code", Cause::CommandFailed, Rule::ExitCode),
    n(": *** ", Cause::CommandFailed, Rule::ExitCode),
    n("code elifecycle", Cause::CommandFailed, Rule::Plain),
];

/// Bytes in a window: the scanner hashes four bytes, one `u32`, at a time.
const GRAM: usize = 4;

/// Distance between the windows the scanner tests: only those starting at a multiple of it.
const STRIDE: usize = 5;

/// Shortest needle the window scan finds. A needle this long has `STRIDE` window starts
/// within it, so one of them is tested wherever the needle lies in the line.
const LONG: usize = GRAM + STRIDE - 1;

/// Bits of the window hash that pick a slot, so the slot table has `1 << HASH_BITS` entries.
const HASH_BITS: u32 = 12;

/// Number of slots in the window index.
const SLOTS: usize = 1 << HASH_BITS;

/// ASCII case fold of four bytes at once: sets bit 5 of every byte (exact for letters).
const FOLD: u32 = 0x2020_2020;

/// Bits of the hash that select a bit in [`BLOOM`] (the slot is its top [`HASH_BITS`]).
const BLOOM_BITS: u32 = 16;

/// The hash of a folded 4-byte window; its top bits pick the bloom bit and the slot.
const fn hash_of(folded: u32) -> u32 {
    folded.wrapping_mul(0x9E37_79B1)
}

/// Maps a folded 4-byte window to its slot.
const fn slot_of(folded: u32) -> usize {
    (hash_of(folded) >> (32 - HASH_BITS)) as usize
}

/// Maps a folded 4-byte window to its bit in [`BLOOM`].
const fn bloom_bit_of(folded: u32) -> usize {
    (hash_of(folded) >> (32 - BLOOM_BITS)) as usize
}

/// One bit per [`BLOOM_BITS`]-bit hash: set when some indexed window of a needle hashes there.
/// Testing it is all most windows of a line cost.
static BLOOM: [u64; (1 << BLOOM_BITS) / 64] = build_bloom();

/// Builds [`BLOOM`] from [`INDEX`]'s grams at compile time.
const fn build_bloom() -> [u64; (1 << BLOOM_BITS) / 64] {
    let index = build_index();
    let mut bits = [0u64; (1 << BLOOM_BITS) / 64];
    let mut e = 0;
    while e < ENTRIES {
        let bit = bloom_bit_of(index.gram[e]);
        bits[bit / 64] |= 1 << (bit % 64);
        e += 1;
    }
    bits
}

/// Whether the folded 4-byte window may be one of a needle's indexed windows, by [`BLOOM`].
#[inline(always)]
fn may_hold_needle(folded: u32) -> bool {
    let bit = bloom_bit_of(folded);
    BLOOM[bit / 64] & (1 << (bit % 64)) != 0
}

/// The folded little-endian word of `p[at..at + 4]`.
const fn gram_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]) | FOLD
}

/// The folded little-endian word of the (up to) four bytes of `line` at `at`; missing bytes
/// past the end of the line count as zero before folding.
#[inline(always)]
fn folded_at(line: &[u8], at: usize) -> u32 {
    if let Some(bytes) = line.get(at..).and_then(<[u8]>::first_chunk::<GRAM>) {
        return u32::from_le_bytes(*bytes) | FOLD;
    }
    let mut bytes = [0u8; GRAM];
    for (to, from) in bytes.iter_mut().zip(line.get(at..).unwrap_or_default()) {
        *to = *from;
    }
    u32::from_le_bytes(bytes) | FOLD
}

/// Whether `b` counts as part of a word for [`Rule::Word`] and friends.
const fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// How common a byte is in build output, roughly; [`build_index`] indexes each needle by
/// its least common windows, so that ordinary text hits the index less often.
const fn commonness(b: u8) -> u32 {
    match b.to_ascii_lowercase() {
        b' ' => 10,
        b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' => 6,
        b'-' | b'.' | b'/' | b':' | b'_' | b'0'..=b'9' => 5,
        b'l' | b'd' | b'c' | b'u' | b'h' | b'm' | b'p' | b'f' | b'g' => 4,
        b'a'..=b'z' => 2,
        _ => 1,
    }
}

/// [`commonness`] of the window `p[at..at + 4]`.
const fn gram_commonness(p: &[u8], at: usize) -> u32 {
    commonness(p[at]) + commonness(p[at + 1]) + commonness(p[at + 2]) + commonness(p[at + 3])
}

/// How many index entries the needles need: [`STRIDE`] per needle of [`LONG`] bytes or more.
const fn entry_count() -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < NEEDLES.len() {
        if NEEDLES[i].pat.len() >= LONG {
            count += STRIDE;
        }
        i += 1;
    }
    count
}

/// Number of entries in the window index.
const ENTRIES: usize = entry_count();

/// A hash index from folded 4-byte windows of the long needles to where they lie in them.
///
/// Each needle of at least [`LONG`] bytes has one entry per residue of its window offsets
/// modulo [`STRIDE`] (the least common window among those offsets). Wherever the needle
/// starts in a line, exactly one residue puts that window at a multiple of [`STRIDE`],
/// where the scanner tests it.
#[derive(Debug)]
struct Index {
    /// Per slot, 1 + the first entry in it, or 0 when empty.
    head: [u16; SLOTS],
    /// Per entry, 1 + the next entry in the same slot, or 0.
    next: [u16; ENTRIES],
    /// Per entry, the folded window, to reject hash collisions with one compare.
    gram: [u32; ENTRIES],
    /// Per entry, the index into [`NEEDLES`].
    needle: [u16; ENTRIES],
    /// Per entry, where the window starts in the needle.
    offset: [u16; ENTRIES],
    /// Per entry, the needle's own first window (folded), to reject most near misses
    /// before a full check.
    lead: [u32; ENTRIES],
}

/// Builds the [`Index`] at compile time.
const fn build_index() -> Index {
    assert!(
        ENTRIES < u16::MAX as usize,
        "index entries must fit in a u16"
    );
    let mut index = Index {
        head: [0; SLOTS],
        next: [0; ENTRIES],
        gram: [0; ENTRIES],
        needle: [0; ENTRIES],
        offset: [0; ENTRIES],
        lead: [0; ENTRIES],
    };
    let mut e = 0;
    let mut i = 0;
    while i < NEEDLES.len() {
        let pat = NEEDLES[i].pat;
        let mut residue = 0;
        while pat.len() >= LONG && residue < STRIDE {
            let mut best = residue;
            let mut at = residue + STRIDE;
            while at + GRAM <= pat.len() {
                if gram_commonness(pat, at) < gram_commonness(pat, best) {
                    best = at;
                }
                at += STRIDE;
            }
            let g = gram_at(pat, best);
            let s = slot_of(g);
            index.gram[e] = g;
            index.needle[e] = i as u16;
            index.offset[e] = best as u16;
            index.lead[e] = gram_at(pat, 0);
            index.next[e] = index.head[s];
            index.head[s] = (e + 1) as u16;
            e += 1;
            residue += 1;
        }
        i += 1;
    }
    assert!(e == ENTRIES, "entry count mismatch");
    index
}

/// The window index over the long [`NEEDLES`], built at compile time.
static INDEX: Index = build_index();

/// The bytes the needles shorter than [`LONG`] are found by, with `memchr3`: each short
/// needle has one of them, exactly, at its [`Short::anchor`] in every match.
///
/// Each short needle's rule wants an exact case (`EIO`, `ENOSPC` and the other errno codes
/// upper case, `Killed`) or it has no letter to fold (`: *** `), so its bytes in a match are
/// fixed; these three are rarer in ordinary output than, say, `:`.
const ANCHORS: [u8; 3] = [b'E', b'K', b'*'];

/// The byte at `j` of every match of `needle`, if its rule fixes it: upper case in the errno
/// codes, `Killed` as written, any byte that is not a letter as it is.
const fn exact_byte(needle: &Needle, j: usize) -> Option<u8> {
    let b = needle.pat[j];
    match needle.rule {
        Rule::Errno | Rule::Eio => Some(b.to_ascii_uppercase()),
        Rule::Killed if j == 0 => Some(b.to_ascii_uppercase()),
        Rule::Killed => Some(b),
        _ if !b.is_ascii_alphabetic() => Some(b),
        _ => None,
    }
}

/// How many needles are shorter than [`LONG`].
const fn short_count() -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < NEEDLES.len() {
        if NEEDLES[i].pat.len() < LONG {
            count += 1;
        }
        i += 1;
    }
    count
}

/// A needle shorter than [`LONG`], as the scanner looks for it.
#[derive(Debug, Clone, Copy)]
struct Short {
    /// The byte of [`ANCHORS`] that every match has at [`Short::anchor`].
    byte: u8,
    /// Where that byte is in the needle.
    anchor: u8,
    /// The folded first four bytes of the needle (fewer for a shorter one), to compare with
    /// the folded window at a candidate under [`Short::mask`] before a full check.
    lead: u32,
    /// The bits of [`Short::lead`] that the needle fills.
    mask: u32,
    /// The index into [`NEEDLES`].
    needle: u16,
}

/// The needles shorter than [`LONG`].
static SHORT: [Short; short_count()] = build_short();

/// Builds [`SHORT`] at compile time, checking that every short needle has an anchor.
const fn build_short() -> [Short; short_count()] {
    let mut short = [Short {
        byte: 0,
        anchor: 0,
        lead: 0,
        mask: 0,
        needle: 0,
    }; short_count()];
    let mut n = 0;
    let mut i = 0;
    while i < NEEDLES.len() {
        let needle = &NEEDLES[i];
        let pat = needle.pat;
        if pat.len() < LONG {
            if let Rule::Killed = needle.rule {
                assert!(
                    pat.len() == 6 && pat[0] == b'k' && pat[1] == b'i' && pat[5] == b'd',
                    "Rule::Killed matches exactly `Killed`"
                );
            }
            let mut anchor = 0;
            let mut byte = None;
            while byte.is_none() && anchor < pat.len() {
                match exact_byte(needle, anchor) {
                    Some(b) if b == ANCHORS[0] || b == ANCHORS[1] || b == ANCHORS[2] => {
                        byte = Some(b);
                    }
                    _ => anchor += 1,
                }
            }
            let Some(byte) = byte else {
                panic!("a needle shorter than LONG needs an exact byte from ANCHORS");
            };
            let len = if pat.len() < GRAM { pat.len() } else { GRAM };
            let mask = u32::MAX >> (8 * (GRAM - len));
            let mut lead = 0u32;
            let mut b = 0;
            while b < len {
                lead |= (pat[b] as u32) << (8 * b);
                b += 1;
            }
            short[n] = Short {
                byte,
                anchor: anchor as u8,
                lead: (lead | FOLD) & mask,
                mask,
                needle: i as u16,
            };
            n += 1;
        }
        i += 1;
    }
    assert!(short_count() == n);
    short
}

/// Where the ANSI escape parser is between bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Ansi {
    /// Ordinary text.
    #[default]
    Text,
    /// After ESC.
    Esc,
    /// Inside an ESC sequence's intermediate bytes (e.g. `ESC ( B`).
    EscIntermediate,
    /// Inside a CSI sequence (`ESC [` ... final byte).
    Csi,
    /// Inside an OSC string (`ESC ]` ... BEL or ST).
    Osc,
    /// After ESC inside an OSC string (maybe the ST terminator).
    OscEsc,
}

/// The streaming classifier: feed it output in chunks of any size, then finish it.
#[derive(Debug, Default)]
pub struct Classifier {
    /// The current line (ANSI stripped) when it could not be matched straight from a chunk.
    line: Vec<u8>,
    /// Whether the current line was longer than [`MAX_LINE`] and lost its tail.
    truncated: bool,
    /// ANSI parser state carried across chunks.
    ansi: Ansi,
    /// Per [`Cause`], the evidence of the first line that showed it.
    hits: [Option<String>; CAUSES],
}

/// Feeding output in and getting the verdict out.
impl Classifier {
    /// A classifier that has seen no output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes the next piece of output; chunk boundaries may fall anywhere, even inside a line
    /// or an escape sequence.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.ansi != Ansi::Text {
                rest = self.feed_escape(rest);
                continue;
            }
            match find_special(rest) {
                Some(at) => {
                    let text = &rest[..at];
                    let special = rest[at];
                    if special == 0x1b {
                        self.push_text(text);
                        self.ansi = Ansi::Esc;
                    } else if self.line.is_empty() && !self.truncated {
                        // The whole line is in this chunk and has no escapes: match it in place.
                        self.scan_line(text);
                    } else {
                        self.push_text(text);
                        self.end_line();
                    }
                    rest = &rest[at + 1..];
                }
                None => {
                    self.push_text(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Ends the output and decides why the build ended the way it did.
    pub fn finish(mut self, exit: Exit, disk: DiskState) -> Classification {
        self.end_line();
        if exit == Exit::Code(0) {
            return Classification {
                reason: Reason::None,
                evidence: None,
            };
        }
        let saw_network = self.hits[Cause::Network as usize].is_some();
        if !saw_network && self.hits[Cause::IoError as usize].is_none() {
            self.hits[Cause::IoError as usize] = self.hits[Cause::WeakIoError as usize].take();
        }
        for cause in RANKED {
            if cause == Cause::CommandFailed && (disk.space_exhausted || disk.inodes_exhausted) {
                return Classification {
                    reason: disk_reason(Reason::NoSpace, disk),
                    evidence: None,
                };
            }
            let evidence = self.hits[cause as usize].take();
            if evidence.is_some() || exit_shows(cause, exit) {
                return Classification {
                    reason: disk_reason(reason_of(cause), disk),
                    evidence,
                };
            }
        }
        Classification {
            reason: Reason::Unknown,
            evidence: None,
        }
    }

    /// Consumes bytes of an escape sequence; returns what is left once it ends (or the chunk does).
    fn feed_escape<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                // A line end always ends the line, even inside a broken escape sequence.
                self.ansi = Ansi::Text;
                self.end_line();
                return &chunk[i + 1..];
            }
            self.ansi = match (self.ansi, b) {
                (Ansi::Esc, b'[') => Ansi::Csi,
                (Ansi::Esc, b']') => Ansi::Osc,
                (Ansi::Esc | Ansi::EscIntermediate, 0x20..=0x2f) => Ansi::EscIntermediate,
                (Ansi::Esc | Ansi::EscIntermediate, _) => Ansi::Text,
                (Ansi::Csi, 0x40..=0x7e) => Ansi::Text,
                (Ansi::Csi, _) => Ansi::Csi,
                (Ansi::Osc, 0x07) => Ansi::Text,
                (Ansi::Osc | Ansi::OscEsc, 0x1b) => Ansi::OscEsc,
                (Ansi::OscEsc, b'\\') => Ansi::Text,
                (Ansi::Osc | Ansi::OscEsc, _) => Ansi::Osc,
                (Ansi::Text, _) => Ansi::Text,
            };
            if self.ansi == Ansi::Text {
                return &chunk[i + 1..];
            }
        }
        &[]
    }

    /// Appends text to the current line, keeping at most [`MAX_LINE`] bytes.
    fn push_text(&mut self, text: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        if text.len() > room {
            self.truncated = true;
        }
        if room > 0 && !text.is_empty() {
            if self.line.capacity() == 0 {
                self.line.reserve_exact(MAX_LINE);
            }
            self.line.extend_from_slice(&text[..text.len().min(room)]);
        }
    }

    /// Matches the buffered line, if any, and starts a new one.
    fn end_line(&mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.scan_line(&line);
            self.line = line;
            self.line.clear();
        }
        self.truncated = false;
    }

    /// Matches one line (without its terminator) against every needle.
    fn scan_line(&mut self, line: &[u8]) {
        let line = &line[..line.len().min(MAX_LINE)];
        let mut found = Found::new();
        // Long needles: the folded window at every multiple of STRIDE, through the index.
        let mut windows = line.chunks_exact(STRIDE);
        for (i, window) in (&mut windows).enumerate() {
            if let Some(bytes) = window.first_chunk::<GRAM>() {
                let folded = u32::from_le_bytes(*bytes) | FOLD;
                if may_hold_needle(folded) {
                    probe(line, i * STRIDE, folded, &mut found);
                }
            }
        }
        let rest = windows.remainder();
        if let Some(bytes) = rest.first_chunk::<GRAM>() {
            let folded = u32::from_le_bytes(*bytes) | FOLD;
            if may_hold_needle(folded) {
                probe(line, line.len() - rest.len(), folded, &mut found);
            }
        }
        // Short needles: where the exact byte each of them has is.
        for at in memchr::memchr3_iter(ANCHORS[0], ANCHORS[1], ANCHORS[2], line) {
            for short in &SHORT {
                if short.byte != line[at] {
                    continue;
                }
                if let Some(start) = at.checked_sub(usize::from(short.anchor)) {
                    if folded_at(line, start) & short.mask == short.lead {
                        check(line, start, usize::from(short.needle), &mut found);
                    }
                }
            }
        }
        if found.any {
            for (cause, key) in found.first.iter().enumerate() {
                let slot = &mut self.hits[cause];
                if slot.is_none() {
                    if let Some((at, k)) = Found::unpack(*key) {
                        *slot = Some(evidence(line, at, NEEDLES[k].pat.len()));
                    }
                }
            }
        }
    }
}

/// The matches in one line, per cause the first one: the one that starts earliest and, of
/// two at the same place, the later in [`NEEDLES`] (the order the scanner has always
/// reported them in; it decides where a long line's evidence is cut).
#[derive(Debug)]
struct Found {
    /// Per [`Cause`], the first match so far as `at << 8 | (255 - needle)` (smaller is
    /// first), or `u32::MAX` for none.
    first: [u32; CAUSES],
    /// Whether any cause has a match.
    any: bool,
}

/// Noting matches in any order and reading back the first per cause.
impl Found {
    /// No matches yet.
    fn new() -> Self {
        const {
            assert!(
                NEEDLES.len() <= 255 && MAX_LINE < 1 << 24,
                "match keys must fit in a u32"
            );
        }
        Found {
            first: [u32::MAX; CAUSES],
            any: false,
        }
    }

    /// Notes a match of needle `k` at `at` that shows `cause`.
    fn note(&mut self, cause: Cause, at: usize, k: usize) {
        let key = (at as u32) << 8 | (255 - k as u32);
        let first = &mut self.first[cause as usize];
        *first = (*first).min(key);
        self.any = true;
    }

    /// The position and needle of a key from [`Found::first`], if it is a match.
    fn unpack(key: u32) -> Option<(usize, usize)> {
        (key != u32::MAX).then(|| ((key >> 8) as usize, 255 - (key & 0xff) as usize))
    }
}

/// Checks every needle that has `folded` as an indexed window at `at` in `line`.
#[inline(never)]
fn probe(line: &[u8], at: usize, folded: u32, found: &mut Found) {
    let mut entry = INDEX.head[slot_of(folded)];
    while entry != 0 {
        let e = usize::from(entry - 1);
        if INDEX.gram[e] == folded {
            if let Some(start) = at.checked_sub(usize::from(INDEX.offset[e])) {
                if folded_at(line, start) == INDEX.lead[e] {
                    check(line, start, usize::from(INDEX.needle[e]), found);
                }
            }
        }
        entry = INDEX.next[e];
    }
}

/// Checks needle `k` at `line[at..]` and notes its cause if it really matches there.
fn check(line: &[u8], at: usize, k: usize, found: &mut Found) {
    let Some(needle) = NEEDLES.get(k) else {
        return;
    };
    let end = at + needle.pat.len();
    let Some(matched) = line.get(at..end) else {
        return;
    };
    if !matched.eq_ignore_ascii_case(needle.pat) {
        return;
    }
    let word_before = at > 0 && is_word_byte(line[at - 1]);
    let word_after = line.get(end).is_some_and(|&b| is_word_byte(b));
    let cause = match needle.rule {
        Rule::Plain => Some(needle.cause),
        Rule::Word => (!word_before && !word_after).then_some(needle.cause),
        Rule::Errno => (!word_before
            && !word_after
            && matched
                .iter()
                .zip(needle.pat)
                .all(|(f, p)| *f == p.to_ascii_uppercase()))
        .then_some(needle.cause),
        Rule::Io => {
            if word_before && needle.pat == b"io error" {
                None
            } else if contains(line, b"getaddrinfo") || contains(line, b"ignoring http") {
                Some(Cause::Network)
            } else {
                Some(Cause::IoError)
            }
        }
        Rule::Eio => {
            (matched == b"EIO" && !word_before && !word_after && !contains(line, b"getaddrinfo"))
                .then_some(Cause::WeakIoError)
        }
        Rule::Killed => (matched == b"Killed" && !word_after && killed_prefix_ok(&line[..at]))
            .then_some(Cause::Oom),
        Rule::ExitCode => match exit_code_after(&line[end..]) {
            Some(0) => None,
            Some(137) => {
                found.note(Cause::Oom, at, k);
                Some(Cause::CommandFailed)
            }
            Some(_) => Some(Cause::CommandFailed),
            // "exit code" alone is too common to mean a failure without a number.
            None => (needle.pat != b"exit code").then_some(Cause::CommandFailed),
        },
        Rule::Deadline => {
            let request = [
                &b"dial tcp"[..],
                b"failed to do request",
                b"http://",
                b"https://",
                b"lookup ",
            ];
            if request.iter().any(|r| contains(line, r)) {
                Some(Cause::Network)
            } else {
                Some(Cause::Timeout)
            }
        }
        Rule::NotFound => contains(line, b"not found").then_some(needle.cause),
        Rule::Parse => contains(line, b"parse").then_some(needle.cause),
    };
    if let Some(cause) = cause {
        found.note(cause, at, k);
    }
}

/// The reason a ranked cause stands for.
fn reason_of(cause: Cause) -> Reason {
    match cause {
        Cause::NoSpace => Reason::NoSpace,
        Cause::IoError | Cause::WeakIoError => Reason::IoError,
        Cause::ReadOnlyFs => Reason::ReadOnlyFs,
        Cause::Oom => Reason::Oom,
        Cause::RegistryAuth => Reason::RegistryAuth,
        Cause::Network => Reason::Network,
        Cause::Dockerfile => Reason::Dockerfile,
        Cause::Timeout => Reason::Timeout,
        Cause::Canceled => Reason::Canceled,
        Cause::CommandFailed => Reason::CommandFailed,
    }
}

/// `no_space` becomes `no_inodes` when the caller saw the inodes run out.
fn disk_reason(reason: Reason, disk: DiskState) -> Reason {
    if reason == Reason::NoSpace && disk.inodes_exhausted {
        Reason::NoInodes
    } else {
        reason
    }
}

/// Whether the way the command ended shows `cause` by itself.
fn exit_shows(cause: Cause, exit: Exit) -> bool {
    match cause {
        Cause::Oom => matches!(exit, Exit::Code(137) | Exit::Signal(9)),
        Cause::Timeout => exit == Exit::Code(124),
        Cause::Canceled => matches!(
            exit,
            Exit::Code(130) | Exit::Code(143) | Exit::Signal(2) | Exit::Signal(15)
        ),
        _ => false,
    }
}

/// The first byte in `s` that is `\n`, `\r` or ESC.
fn find_special(s: &[u8]) -> Option<usize> {
    memchr::memchr3(b'\n', b'\r', 0x1b, s)
}

/// Whether `hay` contains `needle` (lower-case), ignoring ASCII case.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether what precedes `Killed` makes it the kernel's kill notice: nothing, or a last word
/// made only of digits, `.`, `#` and `:` (a PID, or a BuildKit `#12 34.5` step prefix).
fn killed_prefix_ok(before: &[u8]) -> bool {
    if before.last().is_some_and(|b| !b.is_ascii_whitespace()) {
        return false;
    }
    match before
        .split(|b| b.is_ascii_whitespace())
        .rfind(|w| !w.is_empty())
    {
        None => true,
        Some(word) => word
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b'.' || b == b'#' || b == b':'),
    }
}

/// The exit code stated after a generic failure phrase: the number right after it
/// (`exit code: 1`, `non-zero code: 2`), else the number after the last `code` or `error`
/// further on (`... did not complete successfully: exit code: 1`, make's `] Error 2`).
fn exit_code_after(rest: &[u8]) -> Option<u32> {
    if let Some(code) = number_at(rest) {
        return Some(code);
    }
    let last = |key: &[u8]| {
        rest.windows(key.len())
            .rposition(|w| w.eq_ignore_ascii_case(key))
            .map(|p| p + key.len())
    };
    let after = last(b"code").max(last(b"error"))?;
    number_at(&rest[after..])
}

/// The decimal number at the start of `s`, after any spaces, `:` or `=`.
fn number_at(s: &[u8]) -> Option<u32> {
    let skip = s
        .iter()
        .position(|b| !(b.is_ascii_whitespace() || *b == b':' || *b == b'='))?;
    let tail = &s[skip..];
    let len = tail
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
        .min(9);
    if len == 0 {
        return None;
    }
    Some(
        tail[..len]
            .iter()
            .fold(0, |acc, &b| acc * 10 + u32::from(b - b'0')),
    )
}

/// Bytes of a long line's head kept in front of a match that lies beyond [`MAX_EVIDENCE`].
const EVIDENCE_HEAD: usize = 100;

/// Bytes kept after the end of such a match.
const EVIDENCE_AFTER: usize = 60;

/// The evidence for a match of `len` bytes at `at` in `line`: trimmed, control characters
/// dropped, invalid UTF-8 replaced, and at most [`MAX_EVIDENCE`] bytes of the line: its start,
/// or, when the match lies further on, the first [`EVIDENCE_HEAD`] bytes, `…`, and the bytes
/// leading up to just past the match.
fn evidence(line: &[u8], at: usize, len: usize) -> String {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    let mut out = String::with_capacity((end - start).min(MAX_EVIDENCE) + 8);
    if end - start <= MAX_EVIDENCE {
        push_clean(&mut out, &line[start..end]);
        return out;
    }
    let match_end = (at + len).clamp(start, end);
    if match_end - start <= MAX_EVIDENCE {
        let to = char_start(line, start + MAX_EVIDENCE, start);
        push_clean(&mut out, &line[start..to]);
        out.push('…');
        return out;
    }
    let head_end = char_start(line, start + EVIDENCE_HEAD, start);
    push_clean(&mut out, &line[start..head_end]);
    out.push('…');
    let to = char_start(line, (match_end + EVIDENCE_AFTER).min(end), head_end);
    let mut from = to - (MAX_EVIDENCE - EVIDENCE_HEAD);
    while from < to && line[from] & 0xc0 == 0x80 {
        from += 1;
    }
    push_clean(&mut out, &line[from..to]);
    if to < end {
        out.push('…');
    }
    out
}

/// `at`, moved back (not below `floor`) to the start of the UTF-8 character it falls in.
fn char_start(line: &[u8], at: usize, floor: usize) -> usize {
    let mut at = at.min(line.len());
    while at > floor && line.get(at).is_some_and(|b| b & 0xc0 == 0x80) {
        at -= 1;
    }
    at
}

/// Appends `bytes` as text: invalid UTF-8 replaced, tabs as spaces, other controls dropped.
fn push_clean(out: &mut String, bytes: &[u8]) {
    for ch in String::from_utf8_lossy(bytes).chars() {
        if ch == '\t' {
            out.push(' ');
        } else if !ch.is_control() {
            out.push(ch);
        }
    }
}

/// Unit tests and the real-world corpus check.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Shorthand: classify `output` after exit code 1 on a healthy disk.
    fn fail(output: &str) -> Classification {
        classify(output.as_bytes(), Exit::Code(1), DiskState::default())
    }

    /// One snippet of the real-world corpus.
    #[derive(Debug)]
    struct Snippet {
        /// The file it came from.
        name: String,
        /// Where the log was published.
        source: String,
        /// How the command ended.
        exit: Exit,
        /// The disk state to pretend.
        disk: DiskState,
        /// The reason it must get.
        expect: Reason,
        /// A substring the evidence must contain, or `None` for no evidence.
        evidence: Option<String>,
        /// The raw log excerpt.
        body: Vec<u8>,
    }

    /// Reads every snippet under `tests/fixtures/build-failures`.
    fn corpus() -> Vec<Snippet> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/build-failures");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("the corpus directory exists")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        files.into_iter().map(|p| parse_snippet(&p)).collect()
    }

    /// Parses one snippet file: `# key: value` header lines, a `---` line, then the log.
    fn parse_snippet(path: &std::path::Path) -> Snippet {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let raw = std::fs::read(path).unwrap();
        let split = raw
            .windows(5)
            .position(|w| w == b"\n---\n")
            .unwrap_or_else(|| panic!("{name}: no '---' line"));
        let header = String::from_utf8(raw[..split].to_vec()).unwrap();
        let body = raw[split + 5..].to_vec();
        let (mut source, mut exit, mut disk, mut expect, mut evidence) =
            (None, None, DiskState::default(), None, None);
        for line in header.lines() {
            let (key, value) = line
                .strip_prefix("# ")
                .and_then(|l| l.split_once(':'))
                .unwrap_or_else(|| panic!("{name}: bad header line {line:?}"));
            let value = value.trim();
            match key {
                "source" => source = Some(value.to_owned()),
                "exit" => {
                    exit = Some(match value.strip_prefix("signal:") {
                        Some(sig) => Exit::Signal(sig.trim().parse().unwrap()),
                        None => Exit::Code(value.parse().unwrap()),
                    })
                }
                "disk" => {
                    disk = match value {
                        "none" => DiskState::default(),
                        "space" => DiskState {
                            space_exhausted: true,
                            inodes_exhausted: false,
                        },
                        "inodes" => DiskState {
                            space_exhausted: false,
                            inodes_exhausted: true,
                        },
                        other => panic!("{name}: bad disk {other:?}"),
                    }
                }
                "expect" => expect = Some(value.parse::<Reason>().unwrap()),
                "evidence" => evidence = (value != "-").then(|| value.to_owned()),
                "note" => {}
                other => panic!("{name}: unknown header key {other:?}"),
            }
        }
        Snippet {
            source: source.unwrap_or_else(|| panic!("{name}: no source")),
            exit: exit.unwrap_or_else(|| panic!("{name}: no exit")),
            expect: expect.unwrap_or_else(|| panic!("{name}: no expect")),
            name,
            disk,
            evidence,
            body,
        }
    }

    /// Every corpus snippet gets its reason and evidence however it is chunked.
    #[test]
    fn every_corpus_snippet_gets_its_reason_and_evidence_however_it_is_chunked() {
        let snippets = corpus();
        let mut failures = Vec::new();
        for s in &snippets {
            assert!(
                s.source.starts_with("https://"),
                "{}: source must be a URL",
                s.name
            );
            let whole = classify(&s.body, s.exit, s.disk);
            let reason_ok = whole.reason == s.expect;
            let evidence_ok = match (&s.evidence, &whole.evidence) {
                (None, None) => true,
                (Some(want), Some(got)) => got.contains(want.as_str()),
                _ => false,
            };
            if !reason_ok || !evidence_ok {
                failures.push(format!(
                    "{}: want {} with evidence {:?}, got {} with {:?}",
                    s.name, s.expect, s.evidence, whole.reason, whole.evidence
                ));
                continue;
            }
            for size in [1, 7, 64] {
                let mut c = Classifier::new();
                for chunk in s.body.chunks(size) {
                    c.feed(chunk);
                }
                let chunked = c.finish(s.exit, s.disk);
                if chunked != whole {
                    failures.push(format!(
                        "{}: fed {size} bytes at a time it got {chunked:?}, whole it got {whole:?}",
                        s.name
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} snippets failed:\n{}",
            failures.len(),
            snippets.len(),
            failures.join("\n")
        );
    }

    /// Corpus has at least fifty snippets and covers every failure reason.
    #[test]
    fn corpus_has_at_least_fifty_snippets_and_covers_every_failure_reason() {
        let snippets = corpus();
        assert!(snippets.len() >= 50, "only {} snippets", snippets.len());
        for reason in Reason::ALL {
            let count = snippets.iter().filter(|s| s.expect == reason).count();
            if reason == Reason::None {
                continue;
            }
            assert!(count >= 2, "{reason}: only {count} snippets");
        }
    }

    /// Exit zero is none whatever the output says.
    #[test]
    fn exit_zero_is_none_whatever_the_output_says() {
        let c = classify(
            b"write /var/lib/docker/x: no space left on device\nKilled\n",
            Exit::Code(0),
            DiskState {
                space_exhausted: true,
                inodes_exhausted: true,
            },
        );
        assert_eq!(
            c,
            Classification {
                reason: Reason::None,
                evidence: None
            }
        );
    }

    /// Io timeout is network never io error.
    #[test]
    fn io_timeout_is_network_never_io_error() {
        let c = fail(
            "dial tcp: lookup registry-1.docker.io on 127.0.0.53:53: read udp 127.0.0.1:1->127.0.0.53:53: i/o timeout\n",
        );
        assert_eq!(c.reason, Reason::Network);
    }

    /// Getaddrinfo eio is network even with a bare eio code later.
    #[test]
    fn getaddrinfo_eio_is_network_even_with_a_bare_eio_code_later() {
        let c = fail("npm ERR! Error: getaddrinfo EIO\nnpm ERR! code EIO\nnpm ERR! errno EIO\n");
        assert_eq!(c.reason, Reason::Network);
        assert_eq!(
            c.evidence.as_deref(),
            Some("npm ERR! Error: getaddrinfo EIO")
        );
    }

    /// A bare eio code is io error when nothing else explains it.
    #[test]
    fn a_bare_eio_code_is_io_error_when_nothing_else_explains_it() {
        let c = fail("npm ERR! code EIO\nnpm ERR! code ELIFECYCLE\n");
        assert_eq!(c.reason, Reason::IoError);
        assert_eq!(c.evidence.as_deref(), Some("npm ERR! code EIO"));
        // but not inside a longer word
        assert_eq!(fail("THEIO error-free\n").reason, Reason::Unknown);
    }

    /// Apk ignoring a repository with io error is network.
    #[test]
    fn apk_ignoring_a_repository_with_io_error_is_network() {
        let c =
            fail("WARNING: Ignoring https://dl-cdn.alpinelinux.org/alpine/v3.17/main: IO ERROR\n");
        assert_eq!(c.reason, Reason::Network);
    }

    /// Disk cause beats the generic line that follows and exit 137.
    #[test]
    fn disk_cause_beats_the_generic_line_that_follows_and_exit_137() {
        let out = "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n\
                   The command '/bin/sh -c pip install -r requirements.txt' returned a non-zero code: 137\n";
        for exit in [Exit::Code(1), Exit::Code(137), Exit::Signal(9)] {
            let c = classify(out.as_bytes(), exit, DiskState::default());
            assert_eq!(c.reason, Reason::NoSpace, "{exit:?}");
            assert_eq!(
                c.evidence.as_deref(),
                Some(
                    "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"
                )
            );
        }
    }

    /// Inodes flag turns no space into no inodes.
    #[test]
    fn inodes_flag_turns_no_space_into_no_inodes() {
        let out = b"failed to register layer: write /usr/lib/x.so: no space left on device\n";
        let inodes = DiskState {
            space_exhausted: false,
            inodes_exhausted: true,
        };
        assert_eq!(
            classify(out, Exit::Code(1), inodes).reason,
            Reason::NoInodes
        );
        let both = DiskState {
            space_exhausted: true,
            inodes_exhausted: true,
        };
        assert_eq!(classify(out, Exit::Code(1), both).reason, Reason::NoInodes);
        assert_eq!(
            classify(out, Exit::Code(1), DiskState::default()).reason,
            Reason::NoSpace
        );
        // the flag does not touch other disk causes
        assert_eq!(
            classify(b"sh: echo: I/O error\n", Exit::Code(1), inodes).reason,
            Reason::IoError
        );
    }

    /// Exit 137 or sigkill alone is oom without evidence.
    #[test]
    fn exit_137_or_sigkill_alone_is_oom_without_evidence() {
        for exit in [Exit::Code(137), Exit::Signal(9)] {
            let c = classify(b"Step 4/9 : RUN make -j32\n", exit, DiskState::default());
            assert_eq!(
                c,
                Classification {
                    reason: Reason::Oom,
                    evidence: None
                }
            );
        }
    }

    /// Exit 137 with a killed line uses that line as evidence.
    #[test]
    fn exit_137_with_a_killed_line_uses_that_line_as_evidence() {
        let c = classify(b"#19 242.6 Killed\n", Exit::Code(137), DiskState::default());
        assert_eq!(c.reason, Reason::Oom);
        assert_eq!(c.evidence.as_deref(), Some("#19 242.6 Killed"));
    }

    /// Killed in prose is not oom.
    #[test]
    fn killed_in_prose_is_not_oom() {
        assert_eq!(
            fail("the worker was Killed by the test harness\n").reason,
            Reason::Unknown
        );
        assert_eq!(fail("processes killed: 0\n").reason, Reason::Unknown);
        assert_eq!(
            fail("/bin/sh: line 1:  4321 Killed  make -j8\n").reason,
            Reason::Oom
        );
    }

    /// A generic failure with code 137 is oom.
    #[test]
    fn a_generic_failure_with_code_137_is_oom() {
        let c = fail(
            "ERROR: process \"/bin/sh -c yarn build\" did not complete successfully: exit code: 137\n",
        );
        assert_eq!(c.reason, Reason::Oom);
        let c = fail("make: *** [Makefile:12: all] Error 137\n");
        assert_eq!(c.reason, Reason::Oom);
    }

    /// Command failed keeps the first generic line as evidence.
    #[test]
    fn command_failed_keeps_the_first_generic_line_as_evidence() {
        let c = fail(
            "#8 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n\
             ERROR: failed to solve: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n",
        );
        assert_eq!(c.reason, Reason::CommandFailed);
        assert_eq!(
            c.evidence.as_deref(),
            Some(
                "#8 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2"
            )
        );
    }

    /// Unknown has no evidence.
    #[test]
    fn unknown_has_no_evidence() {
        let c = fail("Step 1/3 : FROM alpine\nsomething odd happened\n");
        assert_eq!(
            c,
            Classification {
                reason: Reason::Unknown,
                evidence: None
            }
        );
        assert_eq!(
            classify(b"", Exit::Signal(11), DiskState::default()).reason,
            Reason::Unknown
        );
    }

    /// Timeouts and cancels from the exit status.
    #[test]
    fn timeouts_and_cancels_from_the_exit_status() {
        let quiet = b"building...\n";
        let healthy = DiskState::default();
        assert_eq!(
            classify(quiet, Exit::Code(124), healthy).reason,
            Reason::Timeout
        );
        for exit in [
            Exit::Code(130),
            Exit::Code(143),
            Exit::Signal(2),
            Exit::Signal(15),
        ] {
            assert_eq!(
                classify(quiet, exit, healthy).reason,
                Reason::Canceled,
                "{exit:?}"
            );
        }
        // GNU timeout's exit code outranks the "canceled" BuildKit prints when it is killed
        let c = classify(
            b"ERROR: failed to solve: Canceled: context canceled\n",
            Exit::Code(124),
            healthy,
        );
        assert_eq!(
            c,
            Classification {
                reason: Reason::Timeout,
                evidence: None
            }
        );
        // and a root cause in the output outranks both
        let c = classify(
            b"curl: (6) Could not resolve host: example.org\n",
            Exit::Code(130),
            healthy,
        );
        assert_eq!(c.reason, Reason::Network);
    }

    /// Deadline exceeded is network only when the line names a request.
    #[test]
    fn deadline_exceeded_is_network_only_when_the_line_names_a_request() {
        assert_eq!(
            fail("ERROR: failed to solve: DeadlineExceeded: context deadline exceeded\n").reason,
            Reason::Timeout
        );
        assert_eq!(
            fail("failed to do request: Head \"https://registry-1.docker.io/v2/x/manifests/1\": context deadline exceeded\n").reason,
            Reason::Network
        );
        assert_eq!(
            fail("curl: (7) Failed to connect to example.org port 443: Connection timed out\n")
                .reason,
            Reason::Network
        );
    }

    /// Dockerfile mistakes in both builders.
    #[test]
    fn dockerfile_mistakes_in_both_builders() {
        let c = fail(
            "ERROR: failed to solve: dockerfile parse error on line 2: unknown instruction: RUNN\n",
        );
        assert_eq!(c.reason, Reason::Dockerfile);
        let c = fail(
            "Error response from daemon: dockerfile parse error line 2: unknown instruction: RUNN\n",
        );
        assert_eq!(c.reason, Reason::Dockerfile);
        // a cache-key failure is a Dockerfile mistake only when something was not found
        assert_eq!(
            fail(
                "ERROR: failed to solve: failed to compute cache key: unlazy requires an applier\n"
            )
            .reason,
            Reason::Unknown
        );
        // and "dockerfile.v0" alone is just the frontend's name
        assert_eq!(
            fail("failed to solve with frontend dockerfile.v0: failed to build LLB: x\n").reason,
            Reason::Unknown
        );
    }

    /// The common message shapes of each tool get their reason.
    #[test]
    fn the_common_message_shapes_of_each_tool_get_their_reason() {
        let shapes = [
            ("npm ERR! code ENOSPC", Reason::NoSpace),
            (
                "OSError: [Errno 28] No space left on device",
                Reason::NoSpace,
            ),
            (
                "E: You don't have enough free space in /var/cache/apt/archives/.",
                Reason::NoSpace,
            ),
            (
                "ERROR: Failed to create usr/lib/libLLVM.so.17: No space left on device",
                Reason::NoSpace,
            ),
            (
                "/usr/bin/ld: final link failed: No space left on device",
                Reason::NoSpace,
            ),
            (
                "write /var/lib/docker/overlay2/abc/diff/x: no space left on device",
                Reason::NoSpace,
            ),
            (
                "mkdir /home/u/.local/share/docker/overlay2/x: disk quota exceeded",
                Reason::NoSpace,
            ),
            ("Error: EDQUOT: disk quota exceeded, write", Reason::NoSpace),
            (
                "ERROR: not enough space to extract the layer",
                Reason::NoSpace,
            ),
            ("insufficient space on device /dev/sda1", Reason::NoSpace),
            (
                "sqlite3.OperationalError: database or disk is full",
                Reason::NoSpace,
            ),
            (
                "devmapper: Thin Pool has 162394 free data blocks which is less than minimum required 163840 free data blocks",
                Reason::NoSpace,
            ),
            ("ERROR: busybox-1.36.1-r5: IO ERROR", Reason::IoError),
            (
                "cp: error writing '/app/x': Input/output error",
                Reason::IoError,
            ),
            ("Error: EIO: i/o error, read", Reason::IoError),
            (
                "touch: cannot touch '/etc/x': Read-only file system",
                Reason::ReadOnlyFs,
            ),
            ("npm ERR! code EROFS", Reason::ReadOnlyFs),
            ("Killed", Reason::Oom),
            ("bash: fork: Cannot allocate memory", Reason::Oom),
            ("fatal error: runtime: out of memory", Reason::Oom),
            ("Error: ENOMEM: not enough memory, read", Reason::Oom),
            (
                "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
                Reason::Oom,
            ),
            (
                "virtual memory exhausted: Cannot allocate memory",
                Reason::Oom,
            ),
            (
                "/usr/local/go/pkg/tool/linux_amd64/compile: signal: killed",
                Reason::Oom,
            ),
            ("MemoryError", Reason::Oom),
            (
                "unauthorized: authentication required",
                Reason::RegistryAuth,
            ),
            (
                "denied: requested access to the resource is denied",
                Reason::RegistryAuth,
            ),
            (
                "pull access denied for foo, repository does not exist",
                Reason::RegistryAuth,
            ),
            (
                "Get https://r.example/v2/: no basic auth credentials",
                Reason::RegistryAuth,
            ),
            (
                "failed to fetch oauth token: unexpected status: 401 Unauthorized",
                Reason::RegistryAuth,
            ),
            (
                "server message: insufficient_scope: authorization failed",
                Reason::RegistryAuth,
            ),
            (
                "toomanyrequests: You have reached your pull rate limit.",
                Reason::RegistryAuth,
            ),
            (
                "socket.gaierror: [Errno -3] Temporary failure in name resolution",
                Reason::Network,
            ),
            (
                "dial tcp: lookup registry-1.docker.io: no such host",
                Reason::Network,
            ),
            (
                "curl: (6) Could not resolve host: github.com",
                Reason::Network,
            ),
            (
                "dial tcp 1.2.3.4:443: connect: connection refused",
                Reason::Network,
            ),
            (
                "read tcp 1.2.3.4:1->5.6.7.8:443: read: connection reset by peer",
                Reason::Network,
            ),
            ("net/http: TLS handshake timeout", Reason::Network),
            (
                "dial tcp [2a03::1]:443: connect: network is unreachable",
                Reason::Network,
            ),
            (
                "E: Could not connect to archive.ubuntu.com:80",
                Reason::Network,
            ),
            ("npm ERR! code ETIMEDOUT", Reason::Network),
            ("npm ERR! code ECONNRESET", Reason::Network),
            ("npm ERR! code EAI_AGAIN", Reason::Network),
            (
                "Max retries exceeded with url: /simple/numpy/",
                Reason::Network,
            ),
            (
                "W: Failed to fetch http://deb.debian.org/x  Temporary failure resolving 'deb.debian.org'",
                Reason::Network,
            ),
            (
                "failed to solve: dockerfile parse error on line 2: unknown instruction: RUNN",
                Reason::Dockerfile,
            ),
            (
                "failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error line 2: unknown instruction: RUNN",
                Reason::Dockerfile,
            ),
            (
                "failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory",
                Reason::Dockerfile,
            ),
            (
                "COPY failed: file not found in build context or excluded by .dockerignore: stat app: file does not exist",
                Reason::Dockerfile,
            ),
            (
                "failed to solve: failed to compute cache key: \"/app\": not found",
                Reason::Dockerfile,
            ),
            (
                "Error response from daemon: No build stage in current context",
                Reason::Dockerfile,
            ),
            (
                "ERROR: failed to solve: DeadlineExceeded: context deadline exceeded",
                Reason::Timeout,
            ),
            (
                "Timeout exceeded while waiting for the build",
                Reason::Timeout,
            ),
            ("build timed out after 60 minutes", Reason::Timeout),
            (
                "ERROR: failed to solve: Canceled: context canceled",
                Reason::Canceled,
            ),
            (
                "The command '/bin/sh -c make' returned a non-zero code: 2",
                Reason::CommandFailed,
            ),
            (
                "ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2",
                Reason::CommandFailed,
            ),
            ("make: *** [Makefile:3: all] Error 1", Reason::CommandFailed),
            ("npm ERR! code ELIFECYCLE", Reason::CommandFailed),
            (
                "error Command failed with exit code 1.",
                Reason::CommandFailed,
            ),
        ];
        for (line, want) in shapes {
            assert_eq!(fail(line).reason, want, "{line}");
        }
    }

    /// Lookalikes in ordinary output are not causes.
    #[test]
    fn lookalikes_in_ordinary_output_are_not_causes() {
        let ordinary = [
            "Setting up erofs-utils (1.5-1) ...",
            "Step 3/9 : RUN echo killed processes",
            "#5 CANCELED",
            "npm WARN deprecated inflight@1.0.6: This module is not supported, and leaks memory.",
            "PermissionError: [Errno 13] Permission denied: '/app'",
            "Process exited with exit code: 0",
            "test tests::out_of_memory_is_reported ... ok",
            "handle_io_error(radio error)",
            "failed to solve with frontend dockerfile.v0: failed to build LLB: x",
            "Downloading https://example.org/deadline-exceeded.tar.gz",
        ];
        for line in ordinary {
            assert_eq!(fail(line).reason, Reason::Unknown, "{line}");
        }
    }

    /// Disk full at failure time explains an otherwise generic failure.
    #[test]
    fn disk_full_at_failure_time_explains_an_otherwise_generic_failure() {
        let out = b"The command '/bin/sh -c make' returned a non-zero code: 2\n";
        let full = DiskState {
            space_exhausted: true,
            inodes_exhausted: false,
        };
        assert_eq!(
            classify(out, Exit::Code(1), full),
            Classification {
                reason: Reason::NoSpace,
                evidence: None
            }
        );
        let no_inodes = DiskState {
            space_exhausted: false,
            inodes_exhausted: true,
        };
        assert_eq!(
            classify(b"", Exit::Code(1), no_inodes).reason,
            Reason::NoInodes
        );
        // but not a failure the output explains
        let auth =
            b"pull access denied for x, repository does not exist or may require 'docker login'\n";
        assert_eq!(
            classify(auth, Exit::Code(1), full).reason,
            Reason::RegistryAuth
        );
    }

    /// Ansi escapes are stripped before matching and from evidence.
    #[test]
    fn ansi_escapes_are_stripped_before_matching_and_from_evidence() {
        let out = b"\x1b[0m\x1b[91mERROR: write /var/lib/docker/x: no sp\x1b[1mace left on device\x1b[0m\r\n\x1b]0;title\x07";
        let c = classify(out, Exit::Code(1), DiskState::default());
        assert_eq!(c.reason, Reason::NoSpace);
        assert_eq!(
            c.evidence.as_deref(),
            Some("ERROR: write /var/lib/docker/x: no space left on device")
        );
        // split inside the escape sequences
        let mut cl = Classifier::new();
        for chunk in out.chunks(2) {
            cl.feed(chunk);
        }
        assert_eq!(cl.finish(Exit::Code(1), DiskState::default()), c);
    }

    /// Carriage returns and crlf end lines.
    #[test]
    fn carriage_returns_and_crlf_end_lines() {
        let out = b"Downloading 10%\rDownloading 20%\rERROR: pull access denied for x\r\nnext\r\n";
        let c = classify(out, Exit::Code(1), DiskState::default());
        assert_eq!(c.reason, Reason::RegistryAuth);
        assert_eq!(
            c.evidence.as_deref(),
            Some("ERROR: pull access denied for x")
        );
        // a line split across chunks still matches once
        let mut cl = Classifier::new();
        cl.feed(b"E: You don't have enough fr");
        cl.feed(b"ee space in /var/cache/apt/archives/.");
        assert_eq!(
            cl.finish(Exit::Code(100), DiskState::default()).reason,
            Reason::NoSpace
        );
    }

    /// A 100 mb line keeps the buffer capped and is still consumed.
    #[test]
    fn a_100_mb_line_keeps_the_buffer_capped_and_is_still_consumed() {
        let mut c = Classifier::new();
        let chunk = vec![b'a'; 64 * 1024];
        c.feed(b"no space left on device, and then a very long tail: ");
        for _ in 0..(100 * 1024 * 1024 / chunk.len()) {
            c.feed(&chunk);
            assert!(c.line.len() <= MAX_LINE);
            assert!(c.line.capacity() <= 2 * MAX_LINE);
        }
        c.feed(b"\nnpm ERR! code ELIFECYCLE\n");
        assert!(c.line.capacity() <= 2 * MAX_LINE);
        let got = c.finish(Exit::Code(1), DiskState::default());
        assert_eq!(got.reason, Reason::NoSpace);
        let evidence = got.evidence.unwrap();
        assert!(
            evidence.starts_with("no space left on device"),
            "{evidence}"
        );
        assert!(
            evidence.chars().count() <= MAX_EVIDENCE + 2,
            "{}",
            evidence.len()
        );
    }

    /// Only the first 8 kib of a line are matched.
    #[test]
    fn only_the_first_8_kib_of_a_line_are_matched() {
        let mut line = vec![b'x'; MAX_LINE + 100];
        line.extend_from_slice(b" no space left on device\n");
        assert_eq!(
            classify(&line, Exit::Code(1), DiskState::default()).reason,
            Reason::Unknown
        );
        // the same when the line arrives in pieces
        let mut c = Classifier::new();
        for chunk in line.chunks(1000) {
            c.feed(chunk);
        }
        assert_eq!(
            c.finish(Exit::Code(1), DiskState::default()).reason,
            Reason::Unknown
        );
    }

    /// Long evidence is cut around the match.
    #[test]
    fn long_evidence_is_cut_around_the_match() {
        let mut line = "x".repeat(1000);
        line.push_str(" write /var/lib/docker/tmp/f: no space left on device ");
        line.push_str(&"y".repeat(1000));
        let c = fail(&line);
        let ev = c.evidence.unwrap();
        assert!(ev.starts_with(&"x".repeat(EVIDENCE_HEAD)), "{ev}");
        assert!(ev.contains("…"), "{ev}");
        assert!(ev.contains("no space left on device"), "{ev}");
        assert!(ev.ends_with('…'), "{ev}");
        assert!(ev.chars().count() <= MAX_EVIDENCE + 2);
        // a match near the start keeps the start
        let early = format!("write /x: no space left on device {}", "z".repeat(1000));
        let ev = fail(&early).evidence.unwrap();
        assert!(
            ev.starts_with("write /x: no space") && ev.ends_with('…'),
            "{ev}"
        );
        assert!(ev.chars().count() <= MAX_EVIDENCE + 1);
    }

    /// Evidence never splits a utf8 character.
    #[test]
    fn evidence_never_splits_a_utf8_character() {
        let line = format!(
            "{} no space left on device {}",
            "é".repeat(400),
            "ü".repeat(400)
        );
        let ev = fail(&line).evidence.unwrap();
        assert!(!ev.contains('\u{fffd}'), "{ev}");
        assert!(ev.contains("no space left on device"));
    }

    /// Reason round trips through as str parse display and serde.
    #[test]
    fn reason_round_trips_through_as_str_parse_display_and_serde() {
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert_eq!(Reason::parse(name), Some(reason));
            assert_eq!(name.parse::<Reason>(), Ok(reason));
            assert_eq!(reason.to_string(), name);
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
        }
        assert_eq!(Reason::parse("No_Space"), None);
        let err = "nospace".parse::<Reason>().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"nospace\"") && msg.contains("no_space, no_inodes"),
            "{msg}"
        );
    }

    /// Disk and cleanup predicates.
    #[test]
    fn disk_and_cleanup_predicates() {
        let disk: Vec<_> = Reason::ALL.into_iter().filter(|r| r.is_disk()).collect();
        assert_eq!(
            disk,
            [
                Reason::NoSpace,
                Reason::NoInodes,
                Reason::IoError,
                Reason::ReadOnlyFs
            ]
        );
        let retry: Vec<_> = Reason::ALL
            .into_iter()
            .filter(|r| r.is_retryable_by_cleanup())
            .collect();
        assert_eq!(retry, [Reason::NoSpace, Reason::NoInodes, Reason::IoError]);
    }

    /// Every needle is lower case and found by the index.
    #[test]
    fn every_needle_is_lower_case_and_found_by_the_index() {
        for needle in NEEDLES {
            assert!(
                !needle.pat.iter().any(u8::is_ascii_uppercase),
                "{:?}",
                String::from_utf8_lossy(needle.pat)
            );
            assert!(needle.pat.len() >= 3);
        }
        // each needle, standing alone on a line, shows its cause (rules permitting)
        let plain: Vec<_> = NEEDLES
            .iter()
            .filter(|n| n.rule == Rule::Plain || n.rule == Rule::Word)
            .collect();
        for needle in plain {
            let mut c = Classifier::new();
            let mut line = b"> ".to_vec();
            line.extend_from_slice(needle.pat);
            line.extend_from_slice(b" <\n");
            c.feed(&line);
            assert!(
                c.hits[needle.cause as usize].is_some(),
                "{:?} was not found",
                String::from_utf8_lossy(needle.pat)
            );
        }
    }

    /// What one line leaves in a fresh classifier's per-cause evidence: (cause index, evidence).
    type LineVerdict = Vec<(usize, String)>;

    /// The causes and evidence that checking needle `k` at `at` alone records.
    fn check_alone(line: &[u8], at: usize, k: usize) -> LineVerdict {
        let mut found = Found::new();
        check(line, at, k, &mut found);
        found
            .first
            .iter()
            .enumerate()
            .filter_map(|(cause, &key)| Found::unpack(key).map(|m| (cause, m)))
            .map(|(cause, (at, k))| (cause, evidence(line, at, NEEDLES[k].pat.len())))
            .collect()
    }

    /// The reference scanner: every needle at every position of the (capped) line, positions
    /// left to right and, at one position, needles from last to first (the order the bucketed
    /// prefix index of the first scanner visited them in); the first evidence per cause wins.
    fn naive(line: &[u8]) -> LineVerdict {
        // Needles by their first byte, last to first (only a shortcut: `check` compares the
        // whole needle ignoring case anyway).
        static BY_FIRST: std::sync::LazyLock<Vec<Vec<usize>>> = std::sync::LazyLock::new(|| {
            let mut by_first = vec![Vec::new(); 256];
            for k in (0..NEEDLES.len()).rev() {
                by_first[usize::from(NEEDLES[k].pat[0].to_ascii_lowercase())].push(k);
            }
            by_first
        });
        let line = &line[..line.len().min(MAX_LINE)];
        let mut slots: [Option<String>; CAUSES] = Default::default();
        for at in 0..line.len() {
            for &k in &BY_FIRST[usize::from(line[at].to_ascii_lowercase())] {
                for (cause, ev) in check_alone(line, at, k) {
                    if slots[cause].is_none() {
                        slots[cause] = Some(ev);
                    }
                }
            }
        }
        slots
            .into_iter()
            .enumerate()
            .filter_map(|(cause, ev)| ev.map(|ev| (cause, ev)))
            .collect()
    }

    /// What the real scanner records for one line.
    fn fast(line: &[u8]) -> LineVerdict {
        let mut c = Classifier::new();
        c.scan_line(line);
        c.hits
            .iter()
            .enumerate()
            .filter_map(|(cause, ev)| ev.clone().map(|ev| (cause, ev)))
            .collect()
    }

    /// Compares the real scanner with the reference on every line; returns the mismatches.
    fn differences<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> (usize, Vec<String>) {
        let mut count = 0;
        let mut bad = Vec::new();
        for line in lines {
            count += 1;
            let (want, got) = (naive(line), fast(line));
            if want != got && bad.len() < 20 {
                bad.push(format!(
                    "{:?}: reference {want:?}, scanner {got:?}",
                    String::from_utf8_lossy(line)
                ));
            }
        }
        (count, bad)
    }

    /// The scanner finds exactly what the reference finds on every line of the corpus.
    #[test]
    fn scanner_matches_the_reference_on_every_corpus_line() {
        let snippets = corpus();
        let lines: Vec<&[u8]> = snippets
            .iter()
            .flat_map(|s| s.body.split(|&b| b == b'\n' || b == b'\r'))
            .collect();
        let (count, bad) = differences(lines);
        assert!(count > 500, "only {count} lines");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    /// `pat` with its letters upper-cased (`upper`), or every other letter upper-cased.
    fn recase(pat: &[u8], variant: usize) -> Vec<u8> {
        pat.iter()
            .enumerate()
            .map(|(i, b)| match variant {
                0 => *b,
                1 => b.to_ascii_uppercase(),
                2 if i % 2 == 0 => b.to_ascii_uppercase(),
                _ => *b,
            })
            .collect()
    }

    /// The case the short exact-case rules want: `EIO`, `ENOSPC`, `Killed`.
    fn rule_case(needle: &Needle) -> Vec<u8> {
        match needle.rule {
            Rule::Errno | Rule::Eio => needle.pat.to_ascii_uppercase(),
            Rule::Killed => b"Killed".to_vec(),
            _ => needle.pat.to_vec(),
        }
    }

    /// The scanner agrees with the reference for every needle at offsets 0 to `STRIDE + 1`, in several
    /// fillers, at the start, middle and end of the line, in several cases.
    #[test]
    fn scanner_matches_the_reference_for_every_needle_at_every_offset() {
        let fillers: [&[u8]; 6] = [
            b"abcdefghijklmnopqrstuvwxyz",
            b"                          ",
            b"#:./-_()[]*,;=+'\"#:./-_()[",
            b"01234567890123456789012345",
            b"#12 3.45 #12 3.45 #12 3.45",
            b"QrStUvWxYz QrStUvWxYz QrSt",
        ];
        let tails: [&[u8]; 5] = [b"", b" ", b"x", b": 137 done", b" exit code 2 not found"];
        let mut lines = Vec::new();
        for needle in NEEDLES {
            let forms = [
                recase(needle.pat, 0),
                recase(needle.pat, 1),
                recase(needle.pat, 2),
                rule_case(needle),
            ];
            for form in &forms {
                for filler in fillers {
                    // Every residue modulo the scan's stride, at the line's start and past it.
                    for offset in 0..=STRIDE + 1 {
                        for tail in tails {
                            let mut line = filler[..offset].to_vec();
                            line.extend_from_slice(form);
                            line.extend_from_slice(tail);
                            lines.push(line);
                        }
                    }
                }
            }
        }
        let (count, bad) = differences(lines.iter().map(Vec::as_slice));
        assert!(count > 50_000, "only {count} lines");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    /// The scanner agrees with the reference on pseudo-random lines made of needles, pieces
    /// of needles and filler, some longer than the evidence cap and some than [`MAX_LINE`].
    #[test]
    fn scanner_matches_the_reference_on_random_needle_soup() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let fillers: [&[u8]; 14] = [
            b" ",
            b"  ",
            b":",
            b"#12 ",
            b"3.45 ",
            b"137",
            b" 0",
            b"\t",
            b"https://x/",
            b"getaddrinfo ",
            b"not found",
            b"parse",
            "é".as_bytes(),
            b"_",
        ];
        let mut lines = Vec::new();
        for _ in 0..4000 {
            let mut line = Vec::new();
            if next(8) == 0 {
                line.resize(next(400), b'x');
            }
            if next(60) == 0 {
                line.resize(MAX_LINE - next(40), b'y');
            }
            for _ in 0..next(12) {
                let needle = &NEEDLES[next(NEEDLES.len())];
                match next(6) {
                    0 | 1 => line.extend_from_slice(&recase(needle.pat, next(3))),
                    2 => line.extend_from_slice(&rule_case(needle)),
                    3 => {
                        let from = next(needle.pat.len());
                        let to = from + next(needle.pat.len() - from + 1);
                        line.extend_from_slice(&recase(&needle.pat[from..to], next(3)));
                    }
                    _ => line.extend_from_slice(fillers[next(fillers.len())]),
                }
            }
            lines.push(line);
        }
        let (count, bad) = differences(lines.iter().map(Vec::as_slice));
        assert_eq!(count, 4000);
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
