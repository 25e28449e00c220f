//! The names bilge's parts share, as types: cleanup levels, triggers and results, build results
//! and the reasons a build fails with.
//! Code compares these enums, never their text; the text (`as_str`, `FromStr`, serde's
//! snake_case) is for the edges only: SQL rows, JSON, metric labels, flags.
//!
//! A leaf: it imports nothing from the rest of the crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Text that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what} ({expected})")]
pub struct UnknownName {
    /// The text that was given.
    pub value: String,
    /// What it should have named.
    pub what: &'static str,
    /// The names accepted.
    pub expected: String,
}

/// Implements `Display` and `FromStr` from `as_str` and `ALL`.
macro_rules! named {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName {
                        value: s.to_string(),
                        what: $what,
                        expected: <$t>::ALL.map(|v| v.as_str()).join(", "),
                    })
            }
        }
    };
}

/// One cleanup level. Each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Build cache records not in use.
    BuildCache,
    /// Stopped (exited, created, dead) containers.
    StoppedContainers,
    /// Untagged images no container uses.
    DanglingImages,
    /// Every image no container uses.
    UnusedImages,
    /// Volumes no container uses (only where `allow_volumes`).
    UnusedVolumes,
}

impl Level {
    /// Every level, in the order they run.
    pub const ALL: [Level; 5] = [
        Level::BuildCache,
        Level::StoppedContainers,
        Level::DanglingImages,
        Level::UnusedImages,
        Level::UnusedVolumes,
    ];
    /// The `standard` preset: the first three levels.
    pub const STANDARD: Level = Level::DanglingImages;
    /// The `aggressive` preset: all five levels.
    pub const AGGRESSIVE: Level = Level::UnusedVolumes;

    /// The name used in flags, labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::BuildCache => "build_cache",
            Level::StoppedContainers => "stopped_containers",
            Level::DanglingImages => "dangling_images",
            Level::UnusedImages => "unused_images",
            Level::UnusedVolumes => "unused_volumes",
        }
    }

    /// Parses a level name or a preset (`standard`, `aggressive`) into the highest level it runs.
    pub fn parse(s: &str) -> Result<Level, String> {
        match s.trim() {
            "build_cache" => Ok(Level::BuildCache),
            "stopped_containers" => Ok(Level::StoppedContainers),
            "dangling_images" | "standard" => Ok(Level::DanglingImages),
            "unused_images" => Ok(Level::UnusedImages),
            "unused_volumes" | "aggressive" => Ok(Level::UnusedVolumes),
            other => Err(format!(
                "{other:?} is not a cleanup level (build_cache, stopped_containers, dangling_images, unused_images, unused_volumes, standard, aggressive)"
            )),
        }
    }

    /// The levels up to and including `self`, in order.
    pub fn up_to(self) -> impl Iterator<Item = Level> {
        Level::ALL.into_iter().filter(move |l| *l <= self)
    }

    /// True for the levels whose objects go one at a time, least recently used first, so that a
    /// run can stop inside them once its target is met: build cache and images.
    pub fn stops_inside(self) -> bool {
        matches!(
            self,
            Level::BuildCache | Level::DanglingImages | Level::UnusedImages
        )
    }

    /// True for levels beyond `standard`, which ask for confirmation on a terminal.
    pub fn is_aggressive(self) -> bool {
        self > Level::STANDARD
    }
}

named!(Level, "cleanup level");

/// What a cleanup run did, one per audit action: a level's prunes, or the opt-in last resort of
/// truncating container logs; the `action` label of `bilge_cleanup_reclaimed_bytes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A level ([`Level`]).
    Prune(Level),
    /// Truncating the largest container logs (`allow_log_truncation`).
    ContainerLogs,
}

impl Action {
    /// Every action, in the order a run takes them.
    pub const ALL: [Action; 6] = [
        Action::Prune(Level::BuildCache),
        Action::Prune(Level::StoppedContainers),
        Action::Prune(Level::DanglingImages),
        Action::Prune(Level::UnusedImages),
        Action::Prune(Level::UnusedVolumes),
        Action::ContainerLogs,
    ];

    /// The label value: the level's name, or `container_logs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Prune(l) => l.as_str(),
            Action::ContainerLogs => "container_logs",
        }
    }
}

named!(Action, "cleanup action");

/// What started a run; the `trigger` label of `bilge_cleanup_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An Alertmanager alert through `POST /api/v1/alerts`.
    Webhook,
    /// The data root fell under the low watermark.
    Watermark,
    /// `bilge clean`.
    Cli,
    /// `bilge build --clean-and-retry` after a disk failure.
    BuildRetry,
    /// The data root was predicted full within `forecast_watermark`.
    Forecast,
    /// A schedule of the policy file came due (or was missed while bilge was down).
    Schedule,
}

impl Trigger {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Watermark => "watermark",
            Trigger::Cli => "cli",
            Trigger::BuildRetry => "build_retry",
            Trigger::Forecast => "forecast",
            Trigger::Schedule => "schedule",
        }
    }

    /// Every trigger.
    pub const ALL: [Trigger; 6] = [
        Trigger::Webhook,
        Trigger::Watermark,
        Trigger::Cli,
        Trigger::BuildRetry,
        Trigger::Forecast,
        Trigger::Schedule,
    ];

    /// Automatic triggers are rate-limited by the policy's cooldown.
    pub fn is_automatic(self) -> bool {
        matches!(
            self,
            Trigger::Webhook | Trigger::Watermark | Trigger::Forecast
        )
    }

    /// Runs nobody watches start, which leave alone what running builds use: the automatic
    /// ones and the scheduled ones (a schedule is not rate-limited: it is its own rate).
    pub fn unattended(self) -> bool {
        self.is_automatic() || self == Trigger::Schedule
    }
}

named!(Trigger, "cleanup trigger");

/// How a cleanup run ended; the `result` label of `bilge_cleanup_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupResult {
    /// Every level it ran succeeded.
    Success,
    /// A level failed (what ran before it still counts).
    Failure,
    /// A dry run: planned and recorded, nothing deleted.
    DryRun,
    /// Not run: another run, the cooldown or the lock was in the way.
    Skipped,
    /// Stopped before its end (a shutdown, a cancel, or a process that died): what it freed
    /// until then is kept.
    Interrupted,
    /// Still executing: the audit row is written when a run starts and finished when it ends.
    /// Never a label of `bilge_cleanup_runs_total` (a run is counted once it has ended).
    Running,
}

impl CleanupResult {
    /// Every result.
    pub const ALL: [CleanupResult; 6] = [
        CleanupResult::Success,
        CleanupResult::Failure,
        CleanupResult::DryRun,
        CleanupResult::Skipped,
        CleanupResult::Interrupted,
        CleanupResult::Running,
    ];

    /// The results a run ends with: the `result` values of `bilge_cleanup_runs_total`.
    pub const ENDED: [CleanupResult; 5] = [
        CleanupResult::Success,
        CleanupResult::Failure,
        CleanupResult::DryRun,
        CleanupResult::Skipped,
        CleanupResult::Interrupted,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupResult::Success => "success",
            CleanupResult::Failure => "failure",
            CleanupResult::DryRun => "dry_run",
            CleanupResult::Skipped => "skipped",
            CleanupResult::Interrupted => "interrupted",
            CleanupResult::Running => "running",
        }
    }

    /// True for a run that pruned (or began to): the ones the cooldown counts from, and whose
    /// freed bytes and end time the metrics show.
    pub fn pruned(self) -> bool {
        matches!(
            self,
            CleanupResult::Success
                | CleanupResult::Failure
                | CleanupResult::Interrupted
                | CleanupResult::Running
        )
    }
}

named!(CleanupResult, "cleanup result");

/// How a build ended; the `result` label of the build families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildResult {
    /// The command exited 0.
    Success,
    /// It did not.
    Failure,
}

impl BuildResult {
    /// Every result.
    pub const ALL: [BuildResult; 2] = [BuildResult::Success, BuildResult::Failure];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildResult::Success => "success",
            BuildResult::Failure => "failure",
        }
    }
}

named!(BuildResult, "build result");

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

named!(Reason, "build reason");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_value() {
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>(), Ok(l));
        }
        for t in Trigger::ALL {
            assert_eq!(t.to_string().parse::<Trigger>(), Ok(t));
        }
        for r in CleanupResult::ALL {
            assert_eq!(r.as_str().parse::<CleanupResult>(), Ok(r));
        }
        for r in BuildResult::ALL {
            assert_eq!(r.as_str().parse::<BuildResult>(), Ok(r));
        }
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
        }
    }

    #[test]
    fn an_unknown_name_says_what_is_accepted() {
        let e = "sometimes".parse::<BuildResult>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"sometimes\" is not a build result (success, failure)"
        );
    }

    #[test]
    fn serde_and_as_str_agree() {
        for r in CleanupResult::ALL {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }
}
