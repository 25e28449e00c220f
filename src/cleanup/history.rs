//! Cleanup metrics for runs other processes made. `bilge serve` counts its own runs (webhook,
//! watermark) as they happen, but `bilge clean` and `bilge build --clean-and-retry` run the
//! engine in their own short-lived processes; their runs reach the shared audit table only. So
//! serve replays the whole table at start (counters and the last-run time survive a restart) and
//! then follows new rows of those foreign triggers, counting each once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::metrics::Metrics;
use crate::model::{CleanupResult, Trigger};
use crate::store::{CleanupRecord, Store};

/// Rows read from the store in one go.
const BATCH: usize = 1000;

/// Triggers whose runs happen outside `bilge serve`.
const FOREIGN: [Trigger; 2] = [Trigger::Cli, Trigger::BuildRetry];

/// The cleanup families and how far into the audit table they have counted.
#[derive(Debug)]
pub struct CleanupMetrics {
    metrics: Metrics,
    last_id: i64,
    replayed: bool,
}

impl CleanupMetrics {
    /// Metrics that have seen no row yet.
    pub fn new(metrics: Metrics) -> CleanupMetrics {
        CleanupMetrics {
            metrics,
            last_id: 0,
            replayed: false,
        }
    }

    /// Counts one run as the engine would have.
    pub fn observe(&self, r: &CleanupRecord) {
        let m = &self.metrics;
        m.cleanup_runs
            .with_label_values(&[r.trigger.as_str(), r.result.as_str()])
            .inc();
        if matches!(r.result, CleanupResult::DryRun | CleanupResult::Skipped) {
            return;
        }
        for a in &r.actions {
            m.cleanup_reclaimed
                .with_label_values(&[a.action.as_str()])
                .inc_by(a.reclaimed_bytes);
        }
        let at = r.finished_at.timestamp_millis() as f64 / 1000.0;
        if at > m.cleanup_last_run.get() {
            m.cleanup_last_run.set(at);
        }
    }

    /// Counts the rows stored since the last call: every row the first time (the replay), then
    /// only foreign ones. Returns how many rows were counted (blocking).
    pub fn catch_up(&mut self, store: &Store) -> Result<usize> {
        let mut counted = 0;
        loop {
            let rows = store.cleanups_after(self.last_id, BATCH)?;
            for r in &rows {
                if !self.replayed || FOREIGN.contains(&r.trigger) {
                    self.observe(r);
                    counted += 1;
                }
                if let Some(id) = r.id {
                    self.last_id = self.last_id.max(id);
                }
            }
            if rows.len() < BATCH {
                self.replayed = true;
                return Ok(counted);
            }
        }
    }
}

/// Replays the whole audit table into fresh metrics (blocking thread). If the table cannot be
/// read, history is left out rather than risk counting serve's own later runs twice.
pub async fn replay(metrics: Metrics, store: Store) -> CleanupMetrics {
    let mut cm = CleanupMetrics::new(metrics.clone());
    let done = tokio::task::spawn_blocking(move || {
        let r = cm.catch_up(&store);
        cm.replayed = true;
        (cm, r)
    })
    .await;
    match done {
        Ok((cm, Ok(n))) => {
            tracing::debug!(cleanups = n, "cleanup history replayed into the metrics");
            cm
        }
        Ok((cm, Err(_))) => {
            tracing::warn!(
                "the cleanup history could not be read; cleanup metrics count from now on"
            );
            cm
        }
        Err(e) => {
            tracing::warn!(error = %e, "replaying the cleanup history failed");
            let mut cm = CleanupMetrics::new(metrics);
            cm.replayed = true;
            cm
        }
    }
}

/// Follows the audit table every `interval` until `cancel`, counting other processes' runs.
pub async fn follow(
    mut cm: CleanupMetrics,
    store: Store,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {},
        }
        let s = store.clone();
        let (back, result) = match tokio::task::spawn_blocking(move || {
            let r = cm.catch_up(&s);
            (cm, r)
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cleanup metrics task failed; cleanups by other processes are no longer counted");
                return;
            }
        };
        cm = back;
        if let Ok(n) = result
            && n > 0
        {
            tracing::debug!(rows = n, "cleanup metrics caught up with the audit table");
        }
        // A failed read was logged and counted by the store; the next round tries again.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Level;
    use crate::store::ActionRecord;
    use chrono::Utc;
    use prometheus::IntCounter;

    fn rec(trigger: &str, result: &str, bytes: u64) -> CleanupRecord {
        let now = Utc::now();
        CleanupRecord {
            id: None,
            trigger: trigger.parse().unwrap(),
            level: Level::DanglingImages,
            result: result.parse().unwrap(),
            started_at: now,
            finished_at: now,
            actions: vec![ActionRecord {
                action: "build_cache".into(),
                reclaimed_bytes: bytes,
                removed: 1,
                error: None,
            }],
            reclaimed_bytes: bytes,
            alert: None,
            detail: None,
        }
    }

    #[test]
    fn the_replay_counts_everything_and_then_only_other_processes_runs() {
        let dir = std::env::temp_dir().join(format!("bilge-ch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(&dir.join("b.db"), IntCounter::new("e", "e").unwrap());
        store
            .insert_cleanup(&rec("webhook", "success", 100))
            .unwrap();
        store.insert_cleanup(&rec("cli", "dry_run", 999)).unwrap();
        let m = Metrics::new().unwrap();
        let mut cm = CleanupMetrics::new(m.clone());
        assert_eq!(cm.catch_up(&store).unwrap(), 2);
        let reclaimed = |a: &str| m.cleanup_reclaimed.with_label_values(&[a]).get();
        assert_eq!(reclaimed("build_cache"), 100);
        assert!(m.cleanup_last_run.get() > 0.0);
        // serve counted its own webhook run already; a CLI run reaches it only through the table.
        store.insert_cleanup(&rec("webhook", "success", 5)).unwrap();
        store
            .insert_cleanup(&rec("build_retry", "success", 7))
            .unwrap();
        assert_eq!(cm.catch_up(&store).unwrap(), 1);
        assert_eq!(reclaimed("build_cache"), 107);
        let runs = |t: &str, r: &str| m.cleanup_runs.with_label_values(&[t, r]).get();
        assert_eq!(runs("webhook", "success"), 1);
        assert_eq!(runs("build_retry", "success"), 1);
        assert_eq!(runs("cli", "dry_run"), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
