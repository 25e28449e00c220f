//! The owned Prometheus registry and every metric family bilge exports. Collectors and handlers
//! get a shared [`Metrics`]; nothing is registered globally, so tests read values directly.
//!
//! Encoding the registry is most of what a scrape costs (gathering clones every family, and the
//! `process_*` collector reads `/proc`), so concurrent scrapes share encodings: see
//! [`Metrics::exposition`].
//!
//! The build and cleanup families are built at gather time from a [`History`]: the totals the
//! store's summary holds (refreshed by `history::follow`), plus the runs this process could not
//! write to the store (a full disk), so those still count here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use hyper::body::Bytes;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::model::{Action, CleanupResult, Trigger};
use crate::sync::{lock, read, write};
use crate::tally::{BUILD_DURATION_BUCKETS, Tally};

/// The default cap on distinct `host` label values (`--builds.max-hosts`).
pub const DEFAULT_MAX_HOSTS: usize = 64;
/// The default cap on distinct `project` label values (`--builds.max-projects`).
pub const DEFAULT_MAX_PROJECTS: usize = 50;

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

    /// The build and cleanup totals behind `bilge_builds_*`, `bilge_build_*` and
    /// `bilge_cleanup_*` (all but `bilge_cleanup_in_progress`).
    pub history: Arc<History>,
    /// `bilge_cleanup_in_progress`.
    pub cleanup_in_progress: IntGauge,
    /// `bilge_webhook_requests_total{outcome}`.
    pub webhook_requests: IntCounterVec,
    /// `bilge_cleanup_next_run_timestamp_seconds{schedule}`.
    pub schedule_next_run: GaugeVec,
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

/// The totals the build and cleanup families show: the store's summary as last read, plus what
/// this process counted but could not store. Shared by the engine, the follower and the scrape.
#[derive(Debug)]
pub struct History {
    /// The store's summary as last read, and this process's records the store did not take
    /// (by a key of their own): swapped together, so a scrape never counts one twice.
    state: RwLock<(Tally, BTreeMap<u64, Tally>)>,
    /// Held across a read of the store and its swap, so an older read never replaces a newer.
    refreshing: Mutex<()>,
    /// The next key for [`History::add_unstored`].
    next: AtomicU64,
    /// `--builds.max-projects`.
    max_projects: AtomicUsize,
    /// `--builds.max-hosts`.
    max_hosts: AtomicUsize,
    /// This host's name (`--host.name`): `bilge_host_info`'s, and the builds recorded without one.
    host_name: RwLock<String>,
}

impl Default for History {
    fn default() -> History {
        History {
            state: RwLock::default(),
            refreshing: Mutex::new(()),
            next: AtomicU64::new(1),
            max_projects: AtomicUsize::new(DEFAULT_MAX_PROJECTS),
            max_hosts: AtomicUsize::new(DEFAULT_MAX_HOSTS),
            host_name: RwLock::new("localhost".into()),
        }
    }
}

impl History {
    /// Replaces the stored totals with `t`.
    pub fn set_stored(&self, t: Tally) {
        write(&self.state).0 = t;
    }

    /// Reads the store's summary with `read` (blocking) and swaps it in, forgetting the
    /// unstored totals under `written` (the store has them now) in the same swap. A failed read
    /// keeps the last totals; the store has logged and counted it.
    pub fn refresh_with(&self, read: impl FnOnce() -> crate::Result<Tally>, written: &[u64]) {
        let _one = lock(&self.refreshing);
        if let Ok(t) = read() {
            let mut state = write(&self.state);
            state.0 = t;
            for k in written {
                state.1.remove(k);
            }
        }
    }

    /// Counts `t`, which the store did not take; the key removes it once the store has it.
    pub fn add_unstored(&self, t: Tally) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        write(&self.state).1.insert(key, t);
        key
    }

    /// Forgets the unstored totals under `key`.
    pub fn remove_unstored(&self, key: u64) {
        write(&self.state).1.remove(&key);
    }

    /// Sets the cap on distinct `project` label values.
    pub fn set_max_projects(&self, max: usize) {
        self.max_projects.store(max.max(1), Ordering::Relaxed);
    }

    /// Sets this host's name and the cap on distinct `host` label values.
    pub fn set_host(&self, name: &str, max_hosts: usize) {
        *write(&self.host_name) = name.to_string();
        self.max_hosts.store(max_hosts.max(1), Ordering::Relaxed);
    }

    /// This host's name.
    pub fn host_name(&self) -> String {
        read(&self.host_name).clone()
    }

    /// Everything counted: stored and unstored, projects and hosts capped, this host's builds
    /// under its name.
    pub fn total(&self) -> Tally {
        let state = read(&self.state);
        let mut t = state.0.clone();
        for u in state.1.values() {
            t.merge(u);
        }
        drop(state);
        t.capped(
            self.max_projects.load(Ordering::Relaxed),
            self.max_hosts.load(Ordering::Relaxed),
            &self.host_name(),
        )
    }
}

/// One history family: name, help, type, label names.
type FamilySpec = (
    &'static str,
    &'static str,
    MetricType,
    &'static [&'static str],
);

/// The history families, in the order [`history_families`] fills them.
const HISTORY_FAMILIES: [FamilySpec; 8] = [
    (
        "bilge_builds_total",
        "Recorded builds by project, result and failure reason.",
        MetricType::COUNTER,
        &["project", "result", "reason"],
    ),
    (
        "bilge_build_duration_seconds",
        "Wall-clock duration of recorded builds.",
        MetricType::HISTOGRAM,
        &["project", "result"],
    ),
    (
        "bilge_build_last_timestamp_seconds",
        "When the last build of a project with this result finished.",
        MetricType::GAUGE,
        &["project", "result"],
    ),
    (
        "bilge_cleanup_runs_total",
        "Cleanup runs by trigger and result.",
        MetricType::COUNTER,
        &["trigger", "result"],
    ),
    (
        "bilge_cleanup_reclaimed_bytes_total",
        "Bytes Docker reported freed by cleanup, by action.",
        MetricType::COUNTER,
        &["action"],
    ),
    (
        "bilge_cleanup_last_run_timestamp_seconds",
        "When the last cleanup run finished, as a Unix timestamp.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "bilge_host_info",
        "This bilge's host name (--host.name), the host label of the builds it runs; always 1. The rules join on it to find the instance of a build's host.",
        MetricType::GAUGE,
        &["host"],
    ),
    (
        "bilge_builds_by_host_total",
        "Recorded builds by the host that ran them (this host's own under its --host.name), result and failure reason.",
        MetricType::COUNTER,
        &["host", "result", "reason"],
    ),
];

/// The build and cleanup families, built at gather time from a [`History`].
struct HistoryFamilies {
    /// The totals.
    history: Arc<History>,
    /// One per [`HISTORY_FAMILIES`] entry.
    descs: Vec<Desc>,
}

impl HistoryFamilies {
    /// A collector of `history`.
    fn new(history: Arc<History>) -> prometheus::Result<HistoryFamilies> {
        let descs = HISTORY_FAMILIES
            .iter()
            .map(|(name, help, _, labels)| {
                Desc::new(
                    (*name).into(),
                    (*help).into(),
                    labels.iter().map(|l| (*l).to_string()).collect(),
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(HistoryFamilies { history, descs })
    }
}

/// A sample with `labels` (name, value), sorted by name as the registry's own families are.
fn sample(labels: &[(&str, &str)]) -> proto::Metric {
    let mut m = proto::Metric::default();
    let mut pairs: Vec<LabelPair> = labels
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect();
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    m.set_label(pairs);
    m
}

/// A counter sample.
fn counter(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut m = sample(labels);
    let mut c = proto::Counter::default();
    c.set_value(value);
    m.set_counter(c);
    m
}

/// A gauge sample.
fn gauge(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut m = sample(labels);
    let mut g = proto::Gauge::default();
    g.set_value(value);
    m.set_gauge(g);
    m
}

/// The families of `t` (pure): every cleanup series whose labels are known in advance, at 0
/// until counted; a build series for each project and result seen, and for each host; this
/// host's `bilge_host_info` under `host`.
fn history_families(t: &Tally, host: &str) -> Vec<MetricFamily> {
    let mut out: Vec<MetricFamily> = HISTORY_FAMILIES
        .iter()
        .map(|(name, help, kind, _)| {
            let mut mf = MetricFamily::default();
            mf.set_name((*name).into());
            mf.set_help((*help).into());
            mf.set_field_type(*kind);
            mf
        })
        .collect();
    let mut push = |i: usize, m: proto::Metric| {
        if let Some(f) = out.get_mut(i) {
            f.mut_metric().push(m);
        }
    };
    for ((project, result, reason), n) in &t.builds {
        let labels = [
            ("project", project.as_str()),
            ("result", result.as_str()),
            ("reason", reason.as_str()),
        ];
        push(0, counter(&labels, *n as f64));
    }
    for ((project, result), d) in &t.durations {
        let labels = [("project", project.as_str()), ("result", result.as_str())];
        let mut m = sample(&labels);
        let mut h = proto::Histogram::default();
        h.set_sample_count(d.count);
        h.set_sample_sum(d.sum);
        h.set_bucket(
            BUILD_DURATION_BUCKETS
                .iter()
                .zip(d.cumulative())
                .map(|(bound, n)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        m.set_histogram(h);
        push(1, m);
        push(2, gauge(&labels, d.last_finished));
    }
    for trigger in Trigger::ALL {
        for result in CleanupResult::ENDED {
            let n = t.cleanup_runs.get(&(trigger, result)).copied().unwrap_or(0);
            let labels = [("trigger", trigger.as_str()), ("result", result.as_str())];
            push(3, counter(&labels, n as f64));
        }
    }
    for action in Action::ALL {
        let n = t.cleanup_bytes.get(&action).copied().unwrap_or(0);
        push(4, counter(&[("action", action.as_str())], n as f64));
    }
    push(5, gauge(&[], t.cleanup_last_run.unwrap_or(0.0)));
    push(6, gauge(&[("host", host)], 1.0));
    for ((h, result, reason), n) in &t.host_builds {
        let labels = [
            ("host", h.as_str()),
            ("result", result.as_str()),
            ("reason", reason.as_str()),
        ];
        push(7, counter(&labels, *n as f64));
    }
    out
}

impl Collector for HistoryFamilies {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        history_families(&self.history.total(), &self.history.host_name())
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
        let cleanup_in_progress = IntGauge::new(
            "bilge_cleanup_in_progress",
            "1 while a cleanup run is executing.",
        )?;
        r.register(Box::new(cleanup_in_progress.clone()))?;
        let history = Arc::new(History::default());
        r.register(Box::new(HistoryFamilies::new(history.clone())?))?;

        let m = Families {
            last_exposition: Arc::default(),
            build_info,
            store_errors,
            history,
            cleanup_in_progress,
            webhook_requests: counter_vec(
                &r,
                "bilge_webhook_requests_total",
                "Webhook deliveries by what was decided.",
                &["outcome"],
            )?,
            schedule_next_run: gauge_vec(
                &r,
                "bilge_cleanup_next_run_timestamp_seconds",
                "When each schedule of the policy runs next (Unix seconds; a missed one: its catch-up).",
                &["schedule"],
            )?,
            registry: r,
        };
        Ok(Metrics(Arc::new(m)))
    }

    /// Sets when schedule `name` runs next; `None` (it never fires again) removes its series.
    pub fn schedule_next(&self, name: &str, at: Option<chrono::DateTime<chrono::Utc>>) {
        match at {
            Some(t) => self
                .schedule_next_run
                .with_label_values(&[name])
                .set(t.timestamp_millis() as f64 / 1000.0),
            None => {
                let _ = self.schedule_next_run.remove_label_values(&[name]);
            }
        }
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
    use crate::model::Level;

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
            m.history.set_stored(Tally {
                cleanup_last_run: Some(f64::from(round)),
                ..Tally::default()
            });
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

    #[test]
    fn build_families_come_from_the_totals_with_the_project_cap_and_unstored_runs() {
        use crate::model::BuildResult;
        use crate::model::Reason;
        let Ok(m) = Metrics::new() else {
            panic!("metrics")
        };
        m.history.set_max_projects(1);
        m.history.set_host("ci-1", 64);
        let mut stored = Tally::default();
        stored.observe_build("", "a", BuildResult::Success, Reason::None, 4.0, 100.0);
        stored.observe_build("ci-7", "b", BuildResult::Success, Reason::None, 20.0, 200.0);
        m.history.set_stored(stored);
        let mut lost = Tally::default();
        lost.observe_cleanup(
            Trigger::Webhook,
            CleanupResult::Success,
            1,
            &[(Action::Prune(Level::BuildCache), 5)],
            300.0,
        );
        let key = m.history.add_unstored(lost);
        let text = String::from_utf8(m.encode()).unwrap_or_default();
        for line in [
            "bilge_builds_total{project=\"a\",reason=\"none\",result=\"success\"} 1",
            "bilge_builds_total{project=\"other\",reason=\"none\",result=\"success\"} 1",
            "bilge_build_duration_seconds_bucket{project=\"a\",result=\"success\",le=\"5\"} 1",
            "bilge_build_duration_seconds_bucket{project=\"other\",result=\"success\",le=\"15\"} 0",
            "bilge_build_duration_seconds_bucket{project=\"other\",result=\"success\",le=\"+Inf\"} 1",
            "bilge_build_duration_seconds_sum{project=\"other\",result=\"success\"} 20",
            "bilge_build_last_timestamp_seconds{project=\"other\",result=\"success\"} 200",
            "bilge_cleanup_runs_total{result=\"success\",trigger=\"webhook\"} 1",
            "bilge_cleanup_reclaimed_bytes_total{action=\"build_cache\"} 5",
            "bilge_cleanup_last_run_timestamp_seconds 300",
            "bilge_host_info{host=\"ci-1\"} 1",
            "bilge_builds_by_host_total{host=\"ci-1\",reason=\"none\",result=\"success\"} 1",
            "bilge_builds_by_host_total{host=\"ci-7\",reason=\"none\",result=\"success\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Once the store has the run, it is no longer counted twice.
        m.history.remove_unstored(key);
        let text = String::from_utf8(m.encode()).unwrap_or_default();
        assert!(
            text.contains("bilge_cleanup_runs_total{result=\"success\",trigger=\"webhook\"} 0")
        );
    }
}
