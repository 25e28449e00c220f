//! Disk watermarks: bilge protects a host that has no Alertmanager. After every filesystem tick
//! (every couple of seconds), and right after every Docker event that grows the data root (an
//! image pulled, imported, loaded, built or committed; a container that ended), the data root's
//! available space is compared with the policy's `low_watermark`; under it, the standard level
//! runs (capped by `max_level`) with the `high_watermark` as its target. The cooldown and the
//! one-run-at-a-time rule apply.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Refusal, Request, Trigger};
use super::policy::Level;
use crate::collect::DataRoot;
use crate::format::{FreeTarget, human_bytes};

/// What a watermark check decides for one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Available space is at or above the low mark (or nothing is configured).
    Fine,
    /// Under the low mark: clean until `target` bytes are available.
    Clean {
        /// Available bytes now.
        avail: u64,
        /// The low mark in bytes.
        low: u64,
    },
}

/// Compares one measurement with the watermarks (pure).
pub fn check(low: Option<FreeTarget>, dr: &DataRoot) -> Check {
    let Some(low) = low else { return Check::Fine };
    let low = low.bytes_for(dr.usage.size);
    if dr.usage.avail < low {
        Check::Clean {
            avail: dr.usage.avail,
            low,
        }
    } else {
        Check::Fine
    }
}

/// Watches the data root until `cancel` fires; does nothing without a `low_watermark`.
pub async fn watch(engine: Arc<Engine>, cancel: CancellationToken) {
    let policy = engine.policy().clone();
    let Some(low) = policy.low_watermark else {
        return;
    };
    let high = policy.high_watermark.unwrap_or(low);
    let mut rx = engine.collector().watch_data_root();
    let mut waiting = false;
    tracing::info!(low = %low, high = %high, "watching the data root's watermarks");
    let events = tokio::spawn(measure_on_events(engine.clone(), cancel.clone()));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
        }
        let Some(dr) = rx.borrow_and_update().clone() else {
            continue;
        };
        let Check::Clean {
            avail,
            low: low_bytes,
        } = check(Some(low), &dr)
        else {
            waiting = false;
            continue;
        };
        if engine.is_running() {
            continue;
        }
        let req = Request {
            target_free: Some(high),
            ..Request::new(Trigger::Watermark, Level::STANDARD)
        };
        match engine.try_start(req) {
            Ok(_) => {
                waiting = false;
                tracing::warn!(
                    mountpoint = %dr.mountpoint,
                    available = %human_bytes(avail),
                    low_watermark = %human_bytes(low_bytes),
                    "Docker's data root is under the low watermark; cleaning up to the high watermark"
                );
            }
            Err(Refusal::Closed) => break,
            Err(why @ (Refusal::Cooldown(_) | Refusal::Busy | Refusal::NoLock)) => {
                if !waiting {
                    tracing::info!(
                        mountpoint = %dr.mountpoint,
                        available = %human_bytes(avail),
                        "under the low watermark, but {why}; waiting"
                    );
                }
                waiting = true;
            }
        }
    }
    events.abort();
}

/// Docker event actions after which the data root may have grown.
pub const GROWTH_EVENTS: [&str; 6] = ["pull", "import", "load", "tag", "commit", "die"];

/// Measures the data root right after each [`GROWTH_EVENTS`] event, so the watcher sees a pulled
/// image at once rather than at the next filesystem tick. Events that arrive together are
/// measured once. When the daemon is away it retries every few seconds, asking for the events
/// since the last stream ended so none in between is missed; the filesystem ticks go on
/// regardless, so growth without an event (build cache, logs) is still caught by them.
async fn measure_on_events(engine: Arc<Engine>, cancel: CancellationToken) {
    let collector = engine.collector();
    let retry = Duration::from_secs(5);
    let mut since = std::time::SystemTime::now();
    loop {
        if let Ok(api) = collector.docker().await {
            let mut events = std::pin::pin!(api.events(since, &GROWTH_EVENTS).ready_chunks(64));
            loop {
                let batch = tokio::select! {
                    _ = cancel.cancelled() => return,
                    batch = events.next() => batch,
                };
                let Some(batch) = batch else { break };
                if let Some(Err(e)) = batch.iter().find(|e| e.is_err()) {
                    tracing::debug!(error = %e, "Docker event stream ended");
                    break;
                }
                tracing::debug!(
                    events = ?batch
                        .iter()
                        .filter_map(|e| e.as_ref().ok())
                        .map(|e| e.action.as_deref().unwrap_or(""))
                        .collect::<Vec<_>>(),
                    "Docker events: measuring the data root"
                );
                collector.measure_data_root().await;
            }
            since = std::time::SystemTime::now();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::disk::Usage;

    fn root(size: u64, avail: u64) -> DataRoot {
        DataRoot {
            role: crate::collect::Role::DataRoot,
            path: "/var/lib/docker".into(),
            mountpoint: "/".into(),
            usage: Usage {
                size,
                avail,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn only_space_under_the_low_watermark_starts_a_cleanup() {
        let low = Some(FreeTarget::Percent(10.0));
        assert_eq!(check(low, &root(1000, 100)), Check::Fine);
        assert_eq!(
            check(low, &root(1000, 99)),
            Check::Clean {
                avail: 99,
                low: 100
            }
        );
        assert_eq!(check(None, &root(1000, 0)), Check::Fine);
        assert_eq!(
            check(Some(FreeTarget::Bytes(50)), &root(1000, 49)),
            Check::Clean { avail: 49, low: 50 }
        );
    }
}
