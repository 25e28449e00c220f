//! The history in `bilge serve`: its build and cleanup metrics follow the store's summary, and
//! its old rows are pruned in the background.
//!
//! - [`follow`] reads the summary (a few small tables, whatever the history's length) every
//!   couple of seconds, or at once when the build API stored a row, so outcomes and runs that
//!   other processes wrote (`bilge build`, `bilge clean`) show within two seconds and nothing is
//!   counted twice. Counters survive a restart and retention, since the summary keeps them.
//! - [`retain`] deletes rows older than `--state.retention`, in small batches, shortly after
//!   start and then every hour.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::format::format_duration;
use crate::metrics::Metrics;
use crate::store::Store;

/// The default `--state.retention`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Time between two retention passes.
const RETAIN_EVERY: Duration = Duration::from_secs(3600);
/// The first retention pass waits this long after start, so start-up has the disk to itself.
const RETAIN_FIRST: Duration = Duration::from_secs(2);
/// Rows deleted per transaction.
const RETAIN_BATCH: usize = 2000;

/// Reads the store's summary into `metrics` (blocking thread); a failed read keeps the last.
pub async fn refresh(metrics: &Metrics, store: &Store) {
    let history = metrics.history.clone();
    let store = store.clone();
    if let Err(e) =
        tokio::task::spawn_blocking(move || history.refresh_with(|| store.summary(), &[])).await
    {
        tracing::warn!(error = %e, "reading the history summary failed");
    }
}

/// Keeps the metrics following the store until `cancel`: every `interval`, or when `changed`
/// is notified.
pub async fn follow(
    metrics: Metrics,
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
        refresh(&metrics, &store).await;
    }
}

/// Deletes rows older than `retention` until `cancel`: shortly after start, then every hour.
pub async fn retain(store: Store, retention: Duration, cancel: CancellationToken) {
    let mut wait = RETAIN_FIRST;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {},
        }
        wait = RETAIN_EVERY;
        let Ok(age) = chrono::Duration::from_std(retention) else {
            continue;
        };
        let cutoff = Utc::now() - age;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune(cutoff, RETAIN_BATCH)).await {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((builds, cleanups))) => tracing::info!(
                builds,
                cleanups,
                retention = %format_duration(retention),
                "pruned history rows older than the retention (the metrics keep counting them)"
            ),
            // The store has logged and counted its failure; the next pass tries again.
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!(error = %e, "the retention pass failed"),
        }
    }
}
