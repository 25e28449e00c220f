//! The owned Prometheus registry and every metric family bilge exports. Collectors and handlers
//! get a shared [`Metrics`]; nothing is registered globally, so tests read values directly.
//!
//! Encoding the registry is most of what a scrape costs (gathering clones every family, and the
//! `process_*` collector reads `/proc`), so concurrent scrapes share encodings: see
//! [`Metrics::exposition`].

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Bytes;

use crate::model::{CleanupResult, Level, Trigger};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Build duration buckets, 1 s to 2 h.
pub const BUILD_DURATION_BUCKETS: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 5400.0, 7200.0,
];

/// Every metric family, registered on one registry: a handle to one shared [`Families`],
/// reached through `Deref` (`metrics.store_errors`). Cloning it is one reference count, not one per
/// family: axum clones the state, and so this, for every request.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Families>);

impl std::ops::Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.0
    }
}

/// The metric families themselves; see [`Metrics`].
#[derive(Debug)]
pub struct Families {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// The last encoding and when it began, shared by concurrent scrapes.
    last_exposition: Arc<tokio::sync::Mutex<Option<(Instant, Bytes)>>>,

    /// `bilge_exporter_build_info{version,revision}`.
    pub build_info: GaugeVec,
    /// `bilge_store_errors_total`.
    pub store_errors: IntCounter,

    /// `bilge_builds_total{project,result,reason}`.
    pub builds: IntCounterVec,
    /// `bilge_build_duration_seconds{project,result}`.
    pub build_duration: HistogramVec,
    /// `bilge_build_last_timestamp_seconds{project,result}`.
    pub build_last: GaugeVec,

    /// `bilge_cleanup_runs_total{trigger,result}`.
    pub cleanup_runs: IntCounterVec,
    /// `bilge_cleanup_reclaimed_bytes_total{action}`.
    pub cleanup_reclaimed: IntCounterVec,
    /// `bilge_cleanup_last_run_timestamp_seconds`.
    pub cleanup_last_run: Gauge,
    /// `bilge_cleanup_in_progress`.
    pub cleanup_in_progress: IntGauge,
    /// `bilge_webhook_requests_total{outcome}`.
    pub webhook_requests: IntCounterVec,
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// How long one reading of the `process_*` families is reused.
#[cfg(target_os = "linux")]
const PROCESS_SAMPLE: std::time::Duration = std::time::Duration::from_secs(1);

/// prometheus' process collector, read at most once per [`PROCESS_SAMPLE`]: a reading opens and
/// parses several `/proc/self` files and lists every open descriptor, about a fifth of a scrape's
/// CPU. Prometheus scrapes far less often than that, so it always gets a fresh reading; a burst
/// of scrapes shares one (CPU seconds only move in 10 ms ticks anyway).
#[cfg(target_os = "linux")]
struct SampledProcess {
    inner: prometheus::process_collector::ProcessCollector,
    last: std::sync::Mutex<Option<(Instant, Vec<prometheus::proto::MetricFamily>)>>,
}

#[cfg(target_os = "linux")]
impl Default for SampledProcess {
    fn default() -> Self {
        SampledProcess {
            inner: prometheus::process_collector::ProcessCollector::for_self(),
            last: std::sync::Mutex::new(None),
        }
    }
}

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for SampledProcess {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut last = crate::sync::lock(&self.last);
        if let Some((at, families)) = last.as_ref() {
            if at.elapsed() < PROCESS_SAMPLE {
                return families.clone();
            }
        }
        let families = self.inner.collect();
        *last = Some((Instant::now(), families.clone()));
        families
    }
}

impl Metrics {
    /// Creates every family on a new registry, with the process collector (Linux).
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(SampledProcess::default()))?;

        let build_info = gauge_vec(
            &r,
            "bilge_exporter_build_info",
            "bilge's version, git revision and rustc version; always 1.",
            &["version", "revision", "rustversion"],
        )?;
        build_info
            .with_label_values(&[crate::VERSION, crate::REVISION, crate::RUST_VERSION])
            .set(1.0);

        let store_errors = IntCounter::new(
            "bilge_store_errors_total",
            "Failed reads and writes of the SQLite state store.",
        )?;
        r.register(Box::new(store_errors.clone()))?;
        let gauge = |name: &str, help: &str| -> prometheus::Result<Gauge> {
            let g = Gauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let cleanup_last_run = gauge(
            "bilge_cleanup_last_run_timestamp_seconds",
            "When the last cleanup run finished, as a Unix timestamp.",
        )?;
        let cleanup_in_progress = IntGauge::new(
            "bilge_cleanup_in_progress",
            "1 while a cleanup run is executing.",
        )?;
        r.register(Box::new(cleanup_in_progress.clone()))?;

        let build_duration = HistogramVec::new(
            HistogramOpts::new(
                "bilge_build_duration_seconds",
                "Wall-clock duration of recorded builds.",
            )
            .buckets(BUILD_DURATION_BUCKETS.to_vec()),
            &["project", "result"],
        )?;
        r.register(Box::new(build_duration.clone()))?;

        let m = Families {
            last_exposition: Arc::default(),
            build_info,
            store_errors,
            builds: counter_vec(
                &r,
                "bilge_builds_total",
                "Recorded builds by project, result and failure reason.",
                &["project", "result", "reason"],
            )?,
            build_duration,
            build_last: gauge_vec(
                &r,
                "bilge_build_last_timestamp_seconds",
                "When the last build of a project with this result finished.",
                &["project", "result"],
            )?,
            cleanup_runs: counter_vec(
                &r,
                "bilge_cleanup_runs_total",
                "Cleanup runs by trigger and result.",
                &["trigger", "result"],
            )?,
            cleanup_reclaimed: counter_vec(
                &r,
                "bilge_cleanup_reclaimed_bytes_total",
                "Bytes Docker reported freed by cleanup, by action.",
                &["action"],
            )?,
            cleanup_last_run,
            cleanup_in_progress,
            webhook_requests: counter_vec(
                &r,
                "bilge_webhook_requests_total",
                "Webhook deliveries by what was decided.",
                &["outcome"],
            )?,
            registry: r,
        };
        // Families whose label values are known in advance exist from the start, at 0, so that
        // `increase()` has a first sample and a dashboard shows 0 rather than "No data".
        for t in Trigger::ALL {
            for res in CleanupResult::ALL {
                m.cleanup_runs
                    .with_label_values(&[t.as_str(), res.as_str()]);
            }
        }
        for l in Level::ALL {
            m.cleanup_reclaimed.with_label_values(&[l.as_str()]);
        }
        Ok(Metrics(Arc::new(m)))
    }

    /// Makes `bilge_webhook_requests_total` exist at 0 for every outcome (when the webhook is on).
    pub fn start_webhook_outcomes(&self, outcomes: &[&str]) {
        for o in outcomes {
            self.webhook_requests.with_label_values(&[o]);
        }
    }

    /// The text exposition for a scrape that arrives now, never older than the scrape: an
    /// encoding that began after the scrape arrived is shared, otherwise a new one is made.
    /// Scrapes that arrive while one encoding runs wait for it and then share the next, so under
    /// concurrent load one encoding serves many scrapes, and every value written before a scrape
    /// arrived is in its answer.
    pub async fn exposition(&self) -> Bytes {
        let arrived = Instant::now();
        let mut last = self.last_exposition.lock().await;
        if let Some((began, body)) = last.as_ref() {
            if *began > arrived {
                return body.clone();
            }
        }
        let began = Instant::now();
        let body = Bytes::from(self.encode());
        *last = Some((began, body.clone()));
        body
    }

    /// Encodes every family in the Prometheus text format.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug in this file.
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_registers_once_and_encodes() {
        let m = Metrics::new().map_err(|e| e.to_string());
        let Ok(m) = m else { panic!("{m:?}") };
        let text = String::from_utf8(m.encode()).unwrap_or_default();
        assert!(text.contains("bilge_exporter_build_info{"));
        assert!(text.contains("bilge_cleanup_in_progress 0"));
        assert!(text.contains("bilge_store_errors_total 0"));
    }

    #[tokio::test]
    async fn a_scrape_never_gets_an_encoding_older_than_itself() {
        let Ok(m) = Metrics::new() else {
            panic!("metrics")
        };
        let first = m.exposition().await;
        m.cleanup_in_progress.set(1);
        let second = m.exposition().await;
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        assert!(text(&first).contains("bilge_cleanup_in_progress 0"));
        assert!(text(&second).contains("bilge_cleanup_in_progress 1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_all_see_what_was_written_before_them() {
        let Ok(m) = Metrics::new() else {
            panic!("metrics")
        };
        for round in 0..50 {
            m.cleanup_last_run.set(f64::from(round));
            let want = format!("bilge_cleanup_last_run_timestamp_seconds {round}\n");
            let scrapes: Vec<_> = (0..8)
                .map(|_| {
                    let m = m.clone();
                    tokio::spawn(async move { m.exposition().await })
                })
                .collect();
            for s in scrapes {
                let Ok(body) = s.await else {
                    panic!("scrape task")
                };
                assert!(
                    String::from_utf8_lossy(&body).contains(&want),
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn cleanup_counters_exist_at_zero_before_any_run() {
        let Ok(m) = Metrics::new() else {
            panic!("metrics")
        };
        let text = String::from_utf8(m.encode()).unwrap_or_default();
        assert!(
            text.contains("bilge_cleanup_runs_total{result=\"skipped\",trigger=\"build_retry\"} 0")
        );
        assert!(text.contains("bilge_cleanup_reclaimed_bytes_total{action=\"unused_volumes\"} 0"));
        assert!(!text.contains("bilge_webhook_requests_total"));
        m.start_webhook_outcomes(&["accepted", "unauthorized"]);
        let text = String::from_utf8(m.encode()).unwrap_or_default();
        assert!(text.contains("bilge_webhook_requests_total{outcome=\"unauthorized\"} 0"));
    }

    #[test]
    fn gauges_are_never_named_total() {
        let Ok(m) = Metrics::new() else {
            panic!("metrics")
        };
        for f in m.registry.gather() {
            let counter = f.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(f.name().ends_with("_total"), counter, "{}", f.name());
        }
    }
}
