//! The reasons a build ends with: the closed set of names that metrics, JSON, the store and the
//! CLI share, and their parsing. This file imports nothing else from the crate, so the type can
//! move to a shared model module without dragging the classifier along.

use std::fmt;
use std::str::FromStr;

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
