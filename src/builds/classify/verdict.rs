//! What the classifier is told about how the build ended ([`Exit`], [`DiskState`]) and what it
//! answers ([`Classification`]): plain values, no logic.

use crate::model::Reason;

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
