//! The decision: which of the causes that the output showed, the exit status and the disk state
//! wins, in a fixed rank, and the [`Reason`] it stands for.

use super::needles::{CAUSES, Cause};
use super::verdict::{Classification, DiskState, Exit};
use crate::model::Reason;

/// Causes in the order they win, disk causes first; a tool's own error line last.
const RANKED: [Cause; 11] = [
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
    Cause::ToolError,
];

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
        Cause::CommandFailed | Cause::ToolError => Reason::CommandFailed,
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

/// Decides the verdict from the first evidence per cause that the output showed (`hits`, indexed
/// by [`Cause`]), the way the command ended and the disk state.
pub(super) fn decide(
    mut hits: [Option<String>; CAUSES],
    exit: Exit,
    disk: DiskState,
) -> Classification {
    if exit == Exit::Code(0) {
        return Classification {
            reason: Reason::None,
            evidence: None,
        };
    }
    let saw_network = hits[Cause::Network as usize].is_some();
    if !saw_network && hits[Cause::IoError as usize].is_none() {
        hits[Cause::IoError as usize] = hits[Cause::WeakIoError as usize].take();
    }
    for cause in RANKED {
        if cause == Cause::CommandFailed && (disk.space_exhausted || disk.inodes_exhausted) {
            return Classification {
                reason: disk_reason(Reason::NoSpace, disk),
                evidence: None,
            };
        }
        let evidence = hits[cause as usize].take();
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
