//! Disk watermarks: bilge protects a host that has no Alertmanager. After every filesystem tick
//! (every couple of seconds), and right after every Docker event that grows the data root (an
//! image pulled, imported, loaded, built or committed; a container that ended), the data root's
//! available space is compared with the policy's `low_watermark`; under it, the standard level
//! runs (capped by `max_level`) with the `high_watermark` as its target. With a
//! `forecast_watermark`, the same run starts (trigger `forecast`) when the data root's
//! time-to-full ([`crate::collect::forecast`]) falls within it, so a host without Prometheus is
//! protected before it fills. The cooldown and the one-run-at-a-time rule apply.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Refusal, Request, Trigger};
use super::policy::Level;
use crate::collect::DataRoot;
use crate::format::{FreeTarget, format_duration, human_bytes};

/// What a watermark check decides for one measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// Available space is at or above the low mark and the data root is not predicted full
    /// within the forecast mark (or nothing is configured).
    Fine,
    /// Under the low mark: clean up.
    Clean {
        /// Available bytes now.
        avail: u64,
        /// The low mark in bytes.
        low: u64,
    },
    /// Predicted full within the forecast mark: clean up before it fills.
    Forecast {
        /// Available bytes now.
        avail: u64,
        /// Seconds until full, predicted.
        seconds: f64,
    },
}

/// Compares one measurement with the low mark, then with the forecast mark (pure).
pub fn check(low: Option<FreeTarget>, forecast: Option<Duration>, dr: &DataRoot) -> Check {
    if let Some(low) = low.map(|l| l.bytes_for(dr.usage.size))
        && dr.usage.avail < low
    {
        return Check::Clean {
            avail: dr.usage.avail,
            low,
        };
    }
    match (forecast, dr.predicted_full_seconds) {
        (Some(within), Some(seconds)) if seconds <= within.as_secs_f64() => Check::Forecast {
            avail: dr.usage.avail,
            seconds,
        },
        _ => Check::Fine,
    }
}

/// Watches the data root until `cancel` fires; does nothing without a `low_watermark` or a
/// `forecast_watermark`. Under the low mark the standard level runs (trigger `watermark`); when
/// the data root is predicted full within the forecast mark, the same (trigger `forecast`).
/// Either cleans until the high mark is available (else the low one, else `target_free`).
pub async fn watch(engine: Arc<Engine>, cancel: CancellationToken) {
    let policy = engine.policy().clone();
    let (low, forecast) = (policy.low_watermark, policy.forecast_watermark);
    if low.is_none() && forecast.is_none() {
        return;
    }
    let target = policy.high_watermark.or(low).unwrap_or(policy.target_free);
    let mut rx = engine.collector().watch_data_root();
    let mut waiting = false;
    tracing::info!(
        low = %low.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
        forecast = %forecast.map(format_duration).unwrap_or_else(|| "none".into()),
        target = %target,
        "watching the data root's watermarks"
    );
    let events = tokio::spawn(measure_on_events(engine.clone(), cancel.clone()));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
        }
        let Some(dr) = rx.borrow_and_update().clone() else {
            continue;
        };
        let (trigger, said) = match check(low, forecast, &dr) {
            Check::Fine => {
                waiting = false;
                continue;
            }
            Check::Clean { avail, low } => (
                Trigger::Watermark,
                format!(
                    "Docker's data root is under the low watermark ({} available, the mark is {}); cleaning up to {target}",
                    human_bytes(avail),
                    human_bytes(low)
                ),
            ),
            Check::Forecast { avail, seconds } => (
                Trigger::Forecast,
                format!(
                    "Docker's data root is predicted full in {} ({} available), within forecast_watermark; cleaning up to {target}",
                    format_duration(Duration::from_secs_f64(seconds.clamp(0.0, 1e9))),
                    human_bytes(avail)
                ),
            ),
        };
        if engine.is_running() {
            continue;
        }
        let req = Request {
            target_free: Some(target),
            ..Request::new(trigger, Level::STANDARD)
        };
        match engine.try_start(req) {
            Ok(_) => {
                waiting = false;
                tracing::warn!(mountpoint = %dr.mountpoint, "{said}");
            }
            Err(Refusal::Closed) => break,
            Err(why @ (Refusal::Cooldown(_) | Refusal::Busy | Refusal::NoLock)) => {
                if !waiting {
                    tracing::info!(mountpoint = %dr.mountpoint, "{said}, but {why}; waiting");
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
            predicted_full_seconds: None,
        }
    }

    #[test]
    fn only_space_under_the_low_watermark_starts_a_cleanup() {
        let low = Some(FreeTarget::Percent(10.0));
        assert_eq!(check(low, None, &root(1000, 100)), Check::Fine);
        assert_eq!(
            check(low, None, &root(1000, 99)),
            Check::Clean {
                avail: 99,
                low: 100
            }
        );
        assert_eq!(check(None, None, &root(1000, 0)), Check::Fine);
        assert_eq!(
            check(Some(FreeTarget::Bytes(50)), None, &root(1000, 49)),
            Check::Clean { avail: 49, low: 50 }
        );
    }

    #[test]
    fn a_data_root_predicted_full_within_the_forecast_mark_starts_a_cleanup_before_the_low_mark() {
        let hour = Some(Duration::from_secs(3600));
        let filling = |secs| DataRoot {
            predicted_full_seconds: Some(secs),
            ..root(1000, 500)
        };
        assert_eq!(
            check(None, hour, &filling(1800.0)),
            Check::Forecast {
                avail: 500,
                seconds: 1800.0
            }
        );
        assert_eq!(check(None, hour, &filling(7200.0)), Check::Fine);
        assert_eq!(check(None, hour, &filling(f64::INFINITY)), Check::Fine);
        // Not enough samples yet: no forecast, nothing to do.
        assert_eq!(check(None, hour, &root(1000, 500)), Check::Fine);
        // Under the low mark, the low mark speaks first.
        let low = Some(FreeTarget::Bytes(600));
        assert_eq!(
            check(low, hour, &filling(1800.0)),
            Check::Clean {
                avail: 500,
                low: 600
            }
        );
    }
}
