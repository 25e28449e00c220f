//! `bilge build`: the seed's "resilient build" script, done properly. It checks free space on
//! Docker's data root (`--min-free`), runs the command with its output passing through
//! ([`super::child`]), classifies a failure from the output, the exit status and the disk's state
//! while it ran, records the outcome ([`super::submit`]), prints one summary line on stderr and
//! exits with the command's code. With `--clean-and-retry`, a failure that a cleanup can fix
//! (`no_space`, `no_inodes`, `io_error`) is followed by one cleanup and one more attempt, and
//! both attempts are recorded. A SIGINT, SIGTERM or SIGHUP during that cleanup stops it (within
//! `--cleanup.shutdown-grace`, recorded `interrupted`), records the build as `canceled` and
//! starts no second attempt; bilge exits 128 + the signal's number.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::OnceCell;

use super::child::{self, Outcome};
use super::classify::{Classification, DiskState, Exit, Reason};
use super::submit::{Recorder, ServerTarget};
use crate::cleanup::engine::{Engine, Request, Standalone, Trigger};
use crate::cleanup::policy::Level;
use crate::collect::disk::{Statter, Usage};
use crate::docker::{DockerApi, DockerConfig, DockerHost};
use crate::format::{FreeTarget, human_bytes};
use crate::model::BuildResult;
use crate::store::{BuildRecord, Store};
use crate::{Error, Result};

/// Settings of `bilge build` only.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// The project recorded with the outcome.
    pub project: String,
    /// Least free space on Docker's data root to start a build with.
    pub min_free: Option<FreeTarget>,
    /// Clean up and build once more after a disk failure.
    pub clean_and_retry: bool,
    /// Where to send the outcome (else the local store).
    pub server: Option<ServerTarget>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The Docker daemon whose data root is watched.
    pub docker: DockerConfig,
    /// The store outcomes go to without `--server`.
    pub state_path: PathBuf,
    /// This host's name (`--host.name`, else the hostname): the `host` of an outcome sent to
    /// `--server`, so that the bilge there counts it for this host.
    pub host_name: String,
    /// Where the build registers while it runs ([`crate::running`]), beside the host lock.
    pub running_dir: PathBuf,
}

/// Where Docker keeps its data when the daemon cannot be asked.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/docker";
/// Longest time spent asking the daemon for its data root.
const DATA_ROOT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time between two measurements of the data root while the command runs.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Longest time one statvfs may take.
const STAT_TIMEOUT: Duration = Duration::from_secs(2);
/// Exit code when bilge refuses to start the build (`--min-free` not met).
pub const EXIT_NO_SPACE: u8 = 1;

/// Frees disk space for `--clean-and-retry` and `--min-free`: the cleanup engine's standard
/// level, with trigger `build_retry`, capped by the host's policy.
pub trait Cleaner {
    /// Runs one cleanup that may stop once `target` is available; answers a one-line account
    /// of what it did, or why it failed.
    fn clean(&self, target: FreeTarget) -> impl std::future::Future<Output = Result<String>>;

    /// Asks the cleanup in progress (or about to start) to stop at its next stopping point.
    fn stop(&self);

    /// Records the cleanup in progress as interrupted now, from its progress so far.
    fn abandon(&self) -> impl std::future::Future<Output = ()>;

    /// How long a stopped cleanup may take to reach its stopping point.
    fn grace(&self) -> Duration;
}

/// The cleanup engine, started on first use (a build that never cleans never opens it).
#[derive(Debug)]
pub struct EngineCleaner {
    /// Settings for the engine.
    settings: Standalone,
    /// The engine, once started.
    engine: OnceCell<Arc<Engine>>,
    /// Set by [`Cleaner::stop`], for an engine not started yet.
    stopped: std::sync::atomic::AtomicBool,
}

impl EngineCleaner {
    /// A cleaner for the daemon, store and policy in `settings`.
    pub fn new(settings: Standalone) -> EngineCleaner {
        EngineCleaner {
            settings,
            engine: OnceCell::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Cleaner for EngineCleaner {
    async fn clean(&self, target: FreeTarget) -> Result<String> {
        let engine = self
            .engine
            .get_or_try_init(|| async { Engine::standalone(self.settings.clone()) })
            .await?;
        if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            engine.stop();
        }
        let mut req = Request::new(Trigger::BuildRetry, Level::STANDARD);
        req.target_free = Some(target);
        let report = engine
            .run(req)
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
        let levels: Vec<&str> = report.levels.iter().map(|l| l.level.as_str()).collect();
        let mut what = format!(
            "{} freed ({})",
            human_bytes(report.reclaimed_bytes()),
            if levels.is_empty() {
                "nothing ran".to_string()
            } else {
                levels.join(", ")
            }
        );
        if let Some(avail) = report.avail_after {
            what.push_str(&format!("; {} available now", human_bytes(avail)));
        }
        if report.succeeded() {
            Ok(what)
        } else {
            let why = report.record.detail.as_deref().unwrap_or("unknown error");
            Err(Error::Other(format!("{why} ({what})")))
        }
    }

    fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(e) = self.engine.get() {
            e.stop();
        }
    }

    async fn abandon(&self) {
        if let Some(e) = self.engine.get() {
            e.abandon().await;
        }
    }

    fn grace(&self) -> Duration {
        self.settings.settings.shutdown_grace
    }
}

/// A retry needs as much room as the build takes, which nobody knows: run every level the
/// standard cleanup allows rather than stopping at the policy's `target_free`.
const RETRY_TARGET: FreeTarget = FreeTarget::Percent(100.0);

/// Whether a filesystem counts as full: under 64 MiB available, or under 1 % of its size
/// (at most 1 GiB); out of inodes under 1 % of them (at most 10 000) free.
pub fn disk_state(u: &Usage) -> DiskState {
    let floor = (u.size / 100).clamp(64 << 20, 1 << 30);
    let inode_floor = (u.files / 100).clamp(1, 10_000);
    DiskState {
        space_exhausted: u.size > 0 && u.avail < floor,
        inodes_exhausted: u.files > 0 && u.files_free < inode_floor,
    }
}

/// Docker's data root on this host: asked from the daemon, else [`DEFAULT_DATA_ROOT`] when it
/// exists. None when the daemon runs elsewhere or nothing fits.
async fn find_data_root(docker: DockerConfig) -> Option<PathBuf> {
    if !DockerHost::parse(&docker.host).is_ok_and(|h| h.is_local()) {
        return None;
    }
    let mut d = docker;
    d.timeout = d.timeout.min(DATA_ROOT_TIMEOUT);
    let asked = tokio::time::timeout(DATA_ROOT_TIMEOUT * 2, async {
        DockerApi::connect(&d).await?.info().await
    })
    .await;
    match asked {
        Ok(Ok(info)) if !info.data_root.is_empty() => {
            // With the containerd image store on a containerd of its own, builds write their
            // snapshots under containerd's root: watch whichever of the two has less room.
            let data_root = PathBuf::from(&info.data_root);
            match d.containerd_root.resolve(&info) {
                Some(c) => Some(tighter(data_root, c).await),
                None => Some(data_root),
            }
        }
        other => {
            tracing::debug!(answer = ?other.map(|r| r.map(|i| i.data_root)), "could not ask Docker for its data root");
            Path::new(DEFAULT_DATA_ROOT)
                .exists()
                .then(|| PathBuf::from(DEFAULT_DATA_ROOT))
        }
    }
}

/// Of two storage roots, the one with the smaller share available (`a` when `b` cannot be
/// measured or on a tie).
async fn tighter(a: PathBuf, b: PathBuf) -> PathBuf {
    let share = |u: Option<Usage>| {
        u.filter(|u| u.size > 0)
            .map(|u| u.avail as f64 / u.size as f64)
    };
    match (share(stat(&a).await), share(stat(&b).await)) {
        (Some(sa), Some(sb)) if sb < sa => b,
        (None, Some(_)) => b,
        _ => a,
    }
}

/// statvfs with a timeout (a hung mount must not hang the build's end).
async fn stat(path: &Path) -> Option<Usage> {
    Statter::default().stat(path, STAT_TIMEOUT).await.ok()
}

/// The lowest available space and inodes seen.
fn lowest(a: Option<Usage>, b: Usage) -> Usage {
    match a {
        None => b,
        Some(a) => Usage {
            avail: a.avail.min(b.avail),
            free: a.free.min(b.free),
            files_free: a.files_free.min(b.files_free),
            ..b
        },
    }
}

/// Measures the data root every second while an attempt runs, keeping the lowest figures: a
/// build that filled the disk may have had its layer removed by the time it exits.
#[derive(Debug)]
struct DiskWatch {
    /// The lowest figures so far.
    low: Arc<Mutex<Option<Usage>>>,
    /// The sampling task.
    task: tokio::task::JoinHandle<()>,
}

impl DiskWatch {
    /// Starts sampling once the data root is known.
    fn start(root: Arc<OnceCell<Option<PathBuf>>>, docker: DockerConfig) -> DiskWatch {
        let low = Arc::new(Mutex::new(None));
        let l = low.clone();
        let task = tokio::spawn(async move {
            let Some(path) = root.get_or_init(|| find_data_root(docker)).await.clone() else {
                return;
            };
            loop {
                if let Some(u) = stat(&path).await
                    && let Ok(mut g) = l.lock()
                {
                    *g = Some(lowest(*g, u));
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        DiskWatch { low, task }
    }

    /// Stops sampling after one last measurement; the disk's state over the attempt.
    async fn finish(self, root: Option<&Path>) -> DiskState {
        self.task.abort();
        let last = match root {
            Some(p) => stat(p).await,
            None => None,
        };
        let low = self.low.lock().ok().and_then(|g| *g);
        match (low, last) {
            (low, Some(u)) => disk_state(&lowest(low, u)),
            (Some(u), None) => disk_state(&u),
            (None, None) => DiskState::default(),
        }
    }
}

/// Seconds as the summary prints them: `12.3s`, `4m05s`, `1h02m03s`.
pub fn format_seconds(s: f64) -> String {
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m{sec:02}s")
    } else {
        format!("{m}m{sec:02}s")
    }
}

/// The one summary line: result, reason, exit code, duration, evidence.
pub fn summary(rec: &BuildRecord) -> String {
    let took = format_seconds(rec.duration_seconds);
    if rec.result == BuildResult::Success {
        let attempt = if rec.attempt > 1 {
            format!(" (attempt {})", rec.attempt)
        } else {
            String::new()
        };
        return format!("bilge: build success after {took}{attempt}");
    }
    let mut detail = rec.reason.to_string();
    if let Some(c) = rec.exit_code {
        detail.push_str(&format!(", exit {c}"));
    }
    if rec.attempt > 1 {
        detail.push_str(&format!(", attempt {}", rec.attempt));
    }
    let evidence = rec
        .evidence
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    format!("bilge: build failure ({detail}) after {took}{evidence}")
}

/// What `bilge build` needs while it runs.
#[derive(Debug)]
struct Build<'a> {
    /// The validated flags.
    b: &'a BuildConfig,
    /// Docker access (for the data root).
    docker: DockerConfig,
    /// The data root, once found.
    root: Arc<OnceCell<Option<PathBuf>>>,
    /// Where outcomes go.
    recorder: Recorder,
    /// This host's name.
    host: Option<String>,
}

/// One attempt's record and the code to exit with.
#[derive(Debug)]
struct Attempt {
    /// What is recorded.
    record: BuildRecord,
    /// Why it ended.
    reason: Reason,
    /// bilge's exit code for it.
    code: u8,
    /// Whether the summary can start on a fresh line.
    at_line_start: bool,
}

impl Build<'_> {
    /// The data root, asking for it if that has not happened yet.
    async fn data_root(&self) -> Option<PathBuf> {
        let docker = self.docker.clone();
        self.root
            .get_or_init(|| find_data_root(docker))
            .await
            .clone()
    }

    /// A record of this build with the given verdict.
    fn record(
        &self,
        verdict: &Classification,
        exit_code: Option<i32>,
        started: chrono::DateTime<Utc>,
        took: Duration,
        attempt: u32,
    ) -> BuildRecord {
        let success = verdict.reason == Reason::None;
        BuildRecord {
            id: None,
            project: self.b.project.clone(),
            result: if success {
                BuildResult::Success
            } else {
                BuildResult::Failure
            },
            reason: verdict.reason,
            exit_code,
            started_at: started,
            finished_at: started
                + chrono::Duration::from_std(took).unwrap_or(chrono::Duration::zero()),
            duration_seconds: took.as_secs_f64(),
            // Stored, sent and printed with credentials masked.
            evidence: verdict
                .evidence
                .as_deref()
                .map(super::record::masked_evidence),
            host: self.host.clone(),
            attempt,
        }
    }

    /// Runs the command once and records the outcome.
    async fn attempt(&self, n: u32) -> Result<Attempt> {
        let started = Utc::now();
        let clock = Instant::now();
        let watch = DiskWatch::start(self.root.clone(), self.docker.clone());
        let outcome = child::run(&self.b.command).await?;
        let took = clock.elapsed();
        let (verdict, exit_code, code, at_line_start) = match outcome {
            Outcome::Ran(ran) => {
                let disk = if ran.exit == Exit::Code(0) {
                    watch.task.abort();
                    DiskState::default()
                } else {
                    let root = self.data_root().await;
                    watch.finish(root.as_deref()).await
                };
                let verdict = ran.classifier.finish(ran.exit, disk);
                let code = child::exit_code(ran.exit);
                (verdict, Some(i32::from(code)), code, ran.at_line_start)
            }
            Outcome::NotStarted(e) => {
                watch.task.abort();
                let code: u8 = if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                let verdict = Classification {
                    reason: Reason::CommandFailed,
                    evidence: Some(format!("cannot run {:?}: {e}", self.b.command[0])),
                };
                (verdict, Some(i32::from(code)), code, true)
            }
        };
        let record = self.record(&verdict, exit_code, started, took, n);
        self.recorder.record(&record).await;
        Ok(Attempt {
            record,
            reason: verdict.reason,
            code,
            at_line_start,
        })
    }

    /// Prints an attempt's summary line (after a line break if the output left a line open).
    fn print_summary(&self, a: &Attempt, note: &str) {
        let lead = if a.at_line_start { "" } else { "\n" };
        eprintln!("{lead}{}{note}", summary(&a.record));
    }

    /// `--min-free`: Some(exit code) when the build must not start.
    async fn check_min_free(&self, cleaner: &impl Cleaner) -> Option<u8> {
        let min = self.b.min_free?;
        let Some(root) = self.data_root().await else {
            eprintln!(
                "bilge: cannot check --min-free: Docker's data root is not on this host or cannot be found; building anyway"
            );
            return None;
        };
        let short = |u: &Usage| !min.met_by(u.avail, u.size);
        let Some(mut usage) = stat(&root).await else {
            eprintln!(
                "bilge: cannot check --min-free: {} cannot be measured; building anyway",
                root.display()
            );
            return None;
        };
        if short(&usage) && self.b.clean_and_retry {
            eprintln!(
                "bilge: {} free on {}, less than --min-free {min}; running the standard cleanup first",
                human_bytes(usage.avail),
                root.display()
            );
            if let Some(stop) = clean(cleaner, min).await {
                return Some(self.canceled(stop, 1, "before the build").await);
            }
            usage = stat(&root).await.unwrap_or(usage);
        }
        if !short(&usage) {
            return None;
        }
        let evidence = format!(
            "{} free on {}, less than --min-free {min}; the build was not started",
            human_bytes(usage.avail),
            root.display()
        );
        let verdict = Classification {
            reason: Reason::NoSpace,
            evidence: Some(evidence),
        };
        let record = self.record(&verdict, None, Utc::now(), Duration::ZERO, 1);
        self.recorder.record(&record).await;
        eprintln!("{}", summary(&record));
        Some(EXIT_NO_SPACE)
    }
}

impl Build<'_> {
    /// Records attempt `n` as canceled by `stop` during the cleanup `when` (it was not started);
    /// returns the exit code (128 + the signal's number).
    async fn canceled(&self, stop: Stop, n: u32, when: &str) -> u8 {
        let verdict = Classification {
            reason: Reason::Canceled,
            evidence: Some(format!(
                "{} during the cleanup {when}; the build was not started again",
                stop.name
            )),
        };
        let record = self.record(
            &verdict,
            Some(i32::from(stop.code)),
            Utc::now(),
            Duration::ZERO,
            n,
        );
        self.recorder.record(&record).await;
        eprintln!("{}", summary(&record));
        stop.code
    }
}

/// A signal that stopped a cleanup: its name and the exit code it gives.
#[derive(Debug, Clone, Copy)]
struct Stop {
    /// `SIGTERM`, …
    name: &'static str,
    /// 128 + its number.
    code: u8,
}

/// Waits for SIGINT, SIGTERM or SIGHUP (never, when they cannot be listened for).
async fn next_stop() -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term, mut hup) = (
        signal(SignalKind::interrupt()).ok(),
        signal(SignalKind::terminate()).ok(),
        signal(SignalKind::hangup()).ok(),
    );
    tokio::select! {
        _ = delivered(&mut int) => Stop { name: "SIGINT", code: 130 },
        _ = delivered(&mut term) => Stop { name: "SIGTERM", code: 143 },
        _ = delivered(&mut hup) => Stop { name: "SIGHUP", code: 129 },
    }
}

/// The next delivery of a signal listened for (never, without a listener).
async fn delivered(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Runs the cleanup and tells the user what it did; a signal stops it (within the cleaner's
/// grace) and is returned.
async fn clean(cleaner: &impl Cleaner, target: FreeTarget) -> Option<Stop> {
    let mut cleaning = std::pin::pin!(cleaner.clean(target));
    let r = tokio::select! {
        r = &mut cleaning => r,
        stop = next_stop() => {
            eprintln!("bilge: {}: stopping the cleanup; the build is not started again", stop.name);
            cleaner.stop();
            match tokio::time::timeout(cleaner.grace(), &mut cleaning).await {
                Ok(Ok(what)) => eprintln!("bilge: cleanup interrupted: {what}"),
                Ok(Err(e)) => eprintln!("bilge: cleanup interrupted: {e}"),
                Err(_) => cleaner.abandon().await,
            }
            return Some(stop);
        }
    };
    match r {
        Ok(what) => eprintln!("bilge: cleanup: {what}"),
        Err(e) => eprintln!("bilge: cleanup failed: {e}"),
    }
    None
}

/// Runs `bilge build` to its end; returns the exit code.
pub async fn run(b: &BuildConfig, cleaner: &impl Cleaner) -> Result<u8> {
    let store = Store::new(
        &b.state_path,
        prometheus::IntCounter::new("bilge_store_errors_total", "store errors")
            .map_err(|e| Error::Other(e.to_string()))?,
    );
    let build = Build {
        b,
        docker: b.docker.clone(),
        root: Arc::new(OnceCell::new()),
        recorder: Recorder::new(b.server.clone(), store),
        // Sent to another bilge, the outcome names this host; written to this host's own state
        // file it names none, which its `bilge serve` counts as its own (whatever name that
        // serve was given).
        host: b.server.as_ref().map(|_| b.host_name.clone()),
    };
    // Look for the data root while the build runs, so a failure does not wait for it.
    let root = build.root.clone();
    let docker = build.docker.clone();
    tokio::spawn(async move {
        root.get_or_init(|| find_data_root(docker)).await;
    });
    if let Some(code) = build.check_min_free(cleaner).await {
        return Ok(code);
    }
    // Registered while it runs, so automatic cleanups leave its cache and images alone.
    let me = crate::running::RunningBuild {
        host: b.host_name.clone(),
        pid: std::process::id(),
        project: b.project.clone(),
        started_at: Utc::now(),
    };
    let _registered = match crate::running::register(&b.running_dir, &me) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(folder = %b.running_dir.display(), error = %e, "cannot register the build as running: automatic cleanups will not know to leave its cache alone");
            None
        }
    };
    let first = build.attempt(1).await?;
    let retry = b.clean_and_retry && first.reason.is_retryable_by_cleanup();
    if !retry {
        build.print_summary(&first, "");
        return Ok(first.code);
    }
    build.print_summary(&first, "; cleaning up and retrying once");
    if let Some(stop) = clean(cleaner, RETRY_TARGET).await {
        return Ok(build.canceled(stop, 2, "before the retry").await);
    }
    let second = build.attempt(2).await?;
    build.print_summary(&second, "");
    Ok(second.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(size: u64, avail: u64, files: u64, files_free: u64) -> Usage {
        Usage {
            size,
            free: avail,
            avail,
            files,
            files_free,
            readonly: false,
        }
    }

    #[test]
    fn a_disk_is_full_below_a_floor_that_grows_with_its_size() {
        const GIB: u64 = 1 << 30;
        assert!(disk_state(&usage(GIB, 10 << 20, 65536, 60000)).space_exhausted);
        assert!(!disk_state(&usage(GIB, 100 << 20, 65536, 60000)).space_exhausted);
        assert!(disk_state(&usage(1000 * GIB, GIB / 2, 1 << 26, 1 << 25)).space_exhausted);
        assert!(!disk_state(&usage(1000 * GIB, 2 * GIB, 1 << 26, 1 << 25)).space_exhausted);
        assert!(disk_state(&usage(GIB, GIB / 2, 65536, 100)).inodes_exhausted);
        assert!(!disk_state(&usage(GIB, GIB / 2, 0, 0)).inodes_exhausted);
    }

    #[test]
    fn only_local_daemons_have_a_data_root_bilge_can_measure() {
        let is_local = |h: &str| DockerHost::parse(h).is_ok_and(|h| h.is_local());
        assert!(is_local("unix:///var/run/docker.sock"));
        assert!(is_local("tcp://127.0.0.1:2375"));
        assert!(!is_local("tcp://build-host:2375"));
    }

    fn rec(result: &str, reason: &str, evidence: Option<&str>, attempt: u32) -> BuildRecord {
        BuildRecord {
            id: None,
            project: "p".into(),
            result: result.parse().unwrap(),
            reason: reason.parse().unwrap(),
            exit_code: Some(if result == "success" { 0 } else { 1 }),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            duration_seconds: 754.2,
            evidence: evidence.map(Into::into),
            host: None,
            attempt,
        }
    }

    #[test]
    fn the_summary_is_one_line_with_result_reason_duration_and_evidence() {
        assert_eq!(
            summary(&rec("success", "none", None, 1)),
            "bilge: build success after 12m34s"
        );
        assert_eq!(
            summary(&rec("success", "none", None, 2)),
            "bilge: build success after 12m34s (attempt 2)"
        );
        assert_eq!(
            summary(&rec(
                "failure",
                "no_space",
                Some("write /big: no space left on device"),
                1
            )),
            "bilge: build failure (no_space, exit 1) after 12m34s: write /big: no space left on device"
        );
        assert_eq!(format_seconds(3.04), "3.0s");
        assert_eq!(format_seconds(3723.0), "1h02m03s");
    }
}
