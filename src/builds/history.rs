//! The build metrics follow the build history in the store, not the requests: `bilge serve`
//! replays the `builds` table at start (so counters, the duration histogram and the last
//! timestamps survive a restart) and then reads rows it has not seen yet every couple of seconds,
//! or at once when the build API stored one. Outcomes that `bilge build` wrote straight to the
//! store therefore show up too, and nothing is counted twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::record::ProjectCap;
use crate::Result;
use crate::metrics::Metrics;
use crate::store::{BuildRecord, Store};

/// Rows read from the store in one go.
const BATCH: usize = 1000;

/// The build metric families and what of the store they have seen.
#[derive(Debug)]
pub struct BuildMetrics {
    /// Where the families live.
    metrics: Metrics,
    /// Project label values handed out so far.
    cap: ProjectCap,
    /// The highest row id counted.
    last_id: i64,
}

impl BuildMetrics {
    /// Metrics that have seen nothing yet; at most `max_projects` project label values.
    pub fn new(metrics: Metrics, max_projects: usize) -> BuildMetrics {
        BuildMetrics {
            metrics,
            cap: ProjectCap::new(max_projects),
            last_id: 0,
        }
    }

    /// Counts one recorded build.
    pub fn observe(&mut self, b: &BuildRecord) {
        let project = self.cap.label(&b.project);
        // The store reads only known names, so the labels stay within the documented sets.
        let result = b.result.as_str();
        let reason = b.reason.as_str();
        let m = &self.metrics;
        m.builds.with_label_values(&[project, result, reason]).inc();
        m.build_duration
            .with_label_values(&[project, result])
            .observe(b.duration_seconds.max(0.0));
        let last = m.build_last.with_label_values(&[project, result]);
        let at = b.finished_at.timestamp_millis() as f64 / 1000.0;
        if at > last.get() {
            last.set(at);
        }
    }

    /// Counts every row stored since the last call; returns how many there were (blocking).
    pub fn catch_up(&mut self, store: &Store) -> Result<usize> {
        let mut total = 0;
        loop {
            let rows = store.builds_after(self.last_id, BATCH)?;
            for b in &rows {
                self.observe(b);
                if let Some(id) = b.id {
                    self.last_id = self.last_id.max(id);
                }
            }
            total += rows.len();
            if rows.len() < BATCH {
                return Ok(total);
            }
        }
    }
}

/// Build metrics shared between the follower and start-up.
pub type Shared = Arc<Mutex<BuildMetrics>>;

/// Catches up on a blocking thread (SQLite blocks); returns how many rows were new.
pub async fn catch_up(bm: Shared, store: Store) -> Result<usize> {
    let handle = tokio::task::spawn_blocking(move || {
        let mut guard = crate::sync::lock(&bm);
        guard.catch_up(&store)
    });
    handle
        .await
        .map_err(|e| crate::Error::Other(format!("build metrics task: {e}")))?
}

/// Keeps the metrics following the store until `cancel`: every `interval`, or when `changed`
/// is notified (the build API stored a row).
pub async fn follow(
    bm: Shared,
    store: Store,
    changed: Arc<Notify>,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changed.notified() => {},
            _ = tokio::time::sleep(interval) => {},
        }
        match catch_up(bm.clone(), store.clone()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "build metrics caught up with the store"),
            // The store has logged and counted its failure; the next round tries again.
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::classify::Reason;
    use crate::model::BuildResult;
    use chrono::DateTime;
    use prometheus::IntCounter;

    fn rec(project: &str, result: &str, reason: &str, at: i64) -> BuildRecord {
        let t = DateTime::from_timestamp(at, 0).unwrap_or_default();
        BuildRecord {
            id: None,
            project: project.into(),
            result: result.parse().unwrap_or(BuildResult::Failure),
            // As the store reads a row: a reason this version does not know is `unknown`.
            reason: reason.parse().unwrap_or(Reason::Unknown),
            exit_code: None,
            started_at: t,
            finished_at: t,
            duration_seconds: 3.0,
            evidence: None,
            host: None,
            attempt: 1,
        }
    }

    #[test]
    fn metrics_count_capped_projects_and_keep_the_newest_time() {
        let Ok(m) = Metrics::new() else {
            panic!("metrics")
        };
        let mut bm = BuildMetrics::new(m.clone(), 1);
        bm.observe(&rec("a", "failure", "no_space", 200));
        bm.observe(&rec("a", "failure", "no_space", 100));
        bm.observe(&rec("b", "success", "none", 300));
        bm.observe(&rec("a", "failure", "made_up", 50));
        let count = |l: &[&str]| m.builds.with_label_values(l).get();
        assert_eq!(count(&["a", "failure", "no_space"]), 2);
        assert_eq!(count(&["other", "success", "none"]), 1);
        assert_eq!(count(&["a", "failure", "unknown"]), 1);
        assert_eq!(
            m.build_last.with_label_values(&["a", "failure"]).get(),
            200.0
        );
        assert_eq!(
            m.build_duration
                .with_label_values(&["a", "failure"])
                .get_sample_count(),
            3
        );
    }

    #[test]
    fn catching_up_twice_counts_each_row_once() {
        let dir = std::env::temp_dir().join(format!("bilge-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let Ok(errors) = IntCounter::new("e", "e") else {
            panic!("counter")
        };
        let store = Store::new(&dir.join("b.db"), errors);
        let Ok(m) = Metrics::new() else {
            panic!("metrics")
        };
        let mut bm = BuildMetrics::new(m.clone(), 10);
        for i in 0..3 {
            assert!(store.insert_build(&rec("p", "success", "none", i)).is_ok());
        }
        assert_eq!(bm.catch_up(&store).ok(), Some(3));
        assert_eq!(bm.catch_up(&store).ok(), Some(0));
        assert!(store.insert_build(&rec("p", "success", "none", 9)).is_ok());
        assert_eq!(bm.catch_up(&store).ok(), Some(1));
        assert_eq!(
            m.builds.with_label_values(&["p", "success", "none"]).get(),
            4
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
