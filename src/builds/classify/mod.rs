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
//! - Some cues are judgements rather than phrases: a `Killed` after a tool's error label on the
//!   same line (`g++: internal compiler error: Killed`, `make: *** [all] Killed`) is `oom`; a
//!   compiler's, linker's or shell's own error line (`fatal error:`, `ld returned`,
//!   `undefined reference to`, `sh: 1: x: not found`) is `command_failed`, but only when no
//!   more than 25 non-empty lines follow the last of them, and it is quoted from the first line
//!   of that last run of errors.
//! - The exit status adds a cause of its own: 137 or SIGKILL is `oom`, 124 (GNU
//!   `timeout`) is `timeout`, 130, 143, SIGINT and SIGTERM are `canceled`.
//! - Causes are ranked: `no_space`/`no_inodes`, `io_error`, `read_only_fs` (the disk
//!   causes) over `oom`, `registry_auth`, `network`, `dockerfile`, `timeout`, `canceled`;
//!   then, when nothing more specific was found but the caller saw the disk full
//!   ([`DiskState`]), `no_space`/`no_inodes`; then `command_failed` (a generic failure line
//!   first, then a tool's error at the end of the output); then `unknown`.
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
//! - `timed out` is `network` when its line names a connection or a transfer (`connect`,
//!   `errno`, `fetch`, a URL, a port), else `timeout`.
//! - `denied: ` is `registry_auth` unless the word before it is "permission" (a file's
//!   `Permission denied: '/app'`); `403 Forbidden` only when the line names a registry request
//!   (`unexpected status`, a token, a manifest, `/v2/`, a push or pull).
//! - `unexpected EOF` is deliberately not a `dockerfile` cue: it is far more often a
//!   broken download or tar stream.
//! - `unknown` carries no evidence (there is no line that explains it), and neither does a
//!   cause that only the exit status or the disk state supplied.

//!
//! Layout, one concern a file: `verdict` holds the answer's types (the `Reason` itself is
//! `crate::model`'s); `needles`
//! is the table of what to look for; `rules` says what must hold beyond a needle for its match
//! to count; `index` finds the needles in a line cheaply; `stream` cuts the output into lines
//! ([`Classifier`]); `decide` ranks the causes into one [`Reason`]; `evidence` makes the quoted
//! line. The tests and the real-world corpus check are in `tests/`.

mod decide;
mod evidence;
mod index;
mod needles;
mod rules;
mod stream;
mod verdict;

#[cfg(test)]
mod tests;

pub use crate::model::Reason;
pub use evidence::MAX_EVIDENCE;
pub use stream::{Classifier, MAX_LINE};
pub use verdict::{Classification, DiskState, Exit};

/// Classifies a whole output at once (for tests and the HTTP API).
pub fn classify(output: &[u8], exit: Exit, disk: DiskState) -> Classification {
    let mut classifier = Classifier::new();
    classifier.feed(output);
    classifier.finish(exit, disk)
}
