//! What a cleanup run is labelled with: the [`Trigger`] that started it and the
//! [`CleanupResult`] it ended with. The engine, the webhook and the watermark watcher use these
//! enums; text appears only at the edges (the audit table, JSON, metric labels), through
//! `as_str` and `FromStr`, so no code compares `"success"` or `"webhook"` as strings.
//!
//! A leaf: it imports nothing from the crate.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// What started a run; the `trigger` label of `bilge_cleanup_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
}

impl Trigger {
    /// Every trigger, in the order the docs list them.
    pub const ALL: [Trigger; 4] = [
        Trigger::Webhook,
        Trigger::Watermark,
        Trigger::Cli,
        Trigger::BuildRetry,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Watermark => "watermark",
            Trigger::Cli => "cli",
            Trigger::BuildRetry => "build_retry",
        }
    }

    /// Automatic triggers are rate-limited by the policy's cooldown.
    pub fn is_automatic(self) -> bool {
        matches!(self, Trigger::Webhook | Trigger::Watermark)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = String;

    /// Reads a label value back (from the audit table).
    fn from_str(s: &str) -> Result<Trigger, String> {
        Trigger::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown cleanup trigger {s:?}"))
    }
}

/// How a run ended; the `result` label of `bilge_cleanup_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupResult {
    /// Every level it ran succeeded.
    Success,
    /// Docker could not be asked, or a level failed.
    Failure,
    /// Planned and recorded; nothing was deleted.
    DryRun,
    /// Not run (busy, or in the cooldown); recorded with why.
    Skipped,
}

impl CleanupResult {
    /// Every result, in the order the docs list them.
    pub const ALL: [CleanupResult; 4] = [
        CleanupResult::Success,
        CleanupResult::Failure,
        CleanupResult::DryRun,
        CleanupResult::Skipped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupResult::Success => "success",
            CleanupResult::Failure => "failure",
            CleanupResult::DryRun => "dry_run",
            CleanupResult::Skipped => "skipped",
        }
    }

    /// True when the run did what was asked: a success, or a dry run.
    pub fn succeeded(self) -> bool {
        matches!(self, CleanupResult::Success | CleanupResult::DryRun)
    }

    /// True when the run tried to delete (succeeded or not): such a run starts a cooldown.
    pub fn pruned(self) -> bool {
        matches!(self, CleanupResult::Success | CleanupResult::Failure)
    }
}

impl fmt::Display for CleanupResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CleanupResult {
    type Err = String;

    /// Reads a label value back (from the audit table).
    fn from_str(s: &str) -> Result<CleanupResult, String> {
        CleanupResult::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown cleanup result {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_webhook_and_watermark_runs_are_rate_limited() {
        assert!(Trigger::Webhook.is_automatic() && Trigger::Watermark.is_automatic());
        assert!(!Trigger::Cli.is_automatic() && !Trigger::BuildRetry.is_automatic());
        assert_eq!(Trigger::BuildRetry.as_str(), "build_retry");
    }

    #[test]
    fn every_label_value_reads_back_as_itself() {
        for t in Trigger::ALL {
            assert_eq!(t.as_str().parse::<Trigger>(), Ok(t));
        }
        for r in CleanupResult::ALL {
            assert_eq!(r.as_str().parse::<CleanupResult>(), Ok(r));
        }
        assert!("nuke".parse::<Trigger>().is_err());
        assert!("Success".parse::<CleanupResult>().is_err());
    }

    #[test]
    fn dry_runs_succeed_and_only_real_runs_count_as_pruning() {
        assert!(CleanupResult::DryRun.succeeded() && !CleanupResult::DryRun.pruned());
        assert!(CleanupResult::Failure.pruned() && !CleanupResult::Failure.succeeded());
        assert!(!CleanupResult::Skipped.succeeded() && !CleanupResult::Skipped.pruned());
    }

    #[test]
    fn serde_writes_the_label_value() {
        let json = serde_json::to_string(&(Trigger::BuildRetry, CleanupResult::DryRun));
        assert_eq!(json.ok().as_deref(), Some(r#"["build_retry","dry_run"]"#));
    }
}
