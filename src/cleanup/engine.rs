//! The executor: runs a [`Plan`] level by level against the Docker daemon, re-measures the data
//! root's filesystem after each level and stops as soon as the free-space target is met. Every
//! run, whatever started it, is written to the audit table and counted in `bilge_cleanup_*`.
//!
//! Levels run through Docker's prune endpoints, which act on the daemon's present state and
//! report `SpaceReclaimed`:
//!
//! - `build_cache`: `POST /build/prune` without `all` (records shared with an image stay) and
//!   `until=<secs>s` (last use);
//! - `stopped_containers`: `POST /containers/prune` with `until` and `label!=<protect label>`;
//! - `dangling_images` / `unused_images`: `POST /images/prune` with `dangling=true|false`, `until`
//!   and `label!`. An image that BuildKit built shares its layers with build cache records, so
//!   removing it frees nothing until those records go: each image level is followed by a second
//!   build cache prune, counted in the image level's bytes.
//!
//! Two cases cannot be said with prune filters, and there the engine removes the objects of a
//! fresh plan one by one (counting each object's planned bytes): Docker ANDs several `label!`
//! filters (so with more than one protect label an object carrying only one of them would go),
//! and volume prune has no `until` filter (and, before API 1.42, takes named volumes too).
//!
//! One run at a time: an in-process mutex, plus an `flock` on `<state.path>.lock` so that
//! `bilge serve`, `bilge clean` and `bilge build --clean-and-retry` on one host never prune in
//! parallel (Docker itself answers 409 to a second concurrent prune).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    PruneBuildOptions, PruneContainersOptions, PruneImagesOptions, RemoveContainerOptions,
    RemoveImageOptions, RemoveVolumeOptions,
};
use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::policy::{Level, Plan, Policy, plan};
use crate::collect::disk::FilesystemConfig;
use crate::collect::{Collector, DataRoot};
use crate::docker::{DiskUsage, DockerApi, DockerConfig};
use crate::format::{FreeTarget, format_duration, human_bytes};
use crate::metrics::Metrics;
pub use crate::model::Trigger;
use crate::store::{ActionRecord, CleanupRecord, Store};
use crate::{Error, Result};

/// Longest time one prune call may take (pruning gigabytes of build cache takes minutes).
const PRUNE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A request for a cleanup run.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Who asks.
    pub trigger: Trigger,
    /// The highest level wanted (capped by the host's policy).
    pub level: Level,
    /// Minimum age; `None` means the policy's `until`.
    pub until: Option<Duration>,
    /// Stop once this much is available; `None` means the policy's `target_free`.
    pub target_free: Option<FreeTarget>,
    /// Plan and record only; delete nothing.
    pub dry_run: bool,
    /// The alert fingerprint(s) when the webhook asks.
    pub alert: Option<String>,
}

impl Request {
    /// A real run of `level` with the policy's `until` and `target_free`.
    pub fn new(trigger: Trigger, level: Level) -> Request {
        Request {
            trigger,
            level,
            until: None,
            target_free: None,
            dry_run: false,
            alert: None,
        }
    }
}

/// What one level did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelOutcome {
    /// The level.
    pub level: Level,
    /// The plan's estimate.
    pub estimated_bytes: u64,
    /// Bytes Docker reported freed (0 in a dry run).
    pub reclaimed_bytes: u64,
    /// Objects removed (planned, in a dry run).
    pub removed: u64,
    /// Available bytes on the data root's filesystem after the level.
    pub avail_after: Option<u64>,
    /// Why the level failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The audit row, as written.
    pub record: CleanupRecord,
    /// Its row id, when the store took it.
    pub record_id: Option<i64>,
    /// The plan the run started from (absent when Docker could not be asked).
    pub plan: Option<Plan>,
    /// Per level, in the order they ran.
    pub levels: Vec<LevelOutcome>,
    /// The data root's filesystem before the run.
    pub data_root: Option<DataRoot>,
    /// Available bytes after the run.
    pub avail_after: Option<u64>,
    /// Bytes that had to be available to stop.
    pub target_bytes: Option<u64>,
    /// The target as given (`15%`, `10GiB`).
    pub target: String,
    /// True when the run stopped because the target was met.
    pub target_met: bool,
}

impl Report {
    /// True for a successful run or a dry run.
    pub fn succeeded(&self) -> bool {
        matches!(self.record.result.as_str(), "success" | "dry_run")
    }

    /// Bytes reclaimed over every level.
    pub fn reclaimed_bytes(&self) -> u64 {
        self.record.reclaimed_bytes
    }
}

/// Why a run was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another run is in progress (in this process or another bilge on this host).
    Busy,
    /// The last automatic run started less than the cooldown ago; this much is left.
    Cooldown(Duration),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Busy => f.write_str("a cleanup is already running on this host"),
            Refusal::Cooldown(left) => write!(
                f,
                "the cooldown since the last automatic cleanup has {} left",
                format_duration(Duration::from_secs(left.as_secs().max(1)))
            ),
        }
    }
}

/// Held while a run executes: the in-process slot and the host-wide lock.
#[derive(Debug)]
struct RunGuard {
    _slot: tokio::sync::OwnedMutexGuard<()>,
    _host: Option<Flock<File>>,
}

/// What executing one level gave.
#[derive(Debug, Default)]
struct Done {
    bytes: u64,
    removed: u64,
    error: Option<String>,
}

/// What an engine of its own (`bilge clean`, `bilge build`) needs.
#[derive(Debug, Clone)]
pub struct Standalone {
    /// The host's policy.
    pub policy: Policy,
    /// The daemon to prune.
    pub docker: DockerConfig,
    /// How the data root is measured.
    pub filesystem: FilesystemConfig,
    /// The store the audit goes to.
    pub state_path: PathBuf,
}

/// The cleanup engine. Share it in an `Arc`.
#[derive(Debug)]
pub struct Engine {
    collector: Arc<Collector>,
    store: Store,
    metrics: Metrics,
    policy: Policy,
    lock_path: PathBuf,
    lock_file: Mutex<Option<File>>,
    lock_warned: AtomicBool,
    slot: Arc<tokio::sync::Mutex<()>>,
    last_automatic: Mutex<Option<Instant>>,
}

impl Engine {
    /// An engine over `collector`'s Docker daemon and data root, with the host's `policy`,
    /// writing to `store` and `metrics`. The host lock file is `<store path>.lock`.
    pub fn new(
        policy: Policy,
        collector: Arc<Collector>,
        store: Store,
        metrics: Metrics,
    ) -> Engine {
        let mut lock = store.path().as_os_str().to_owned();
        lock.push(".lock");
        let engine = Engine {
            collector,
            store,
            metrics,
            policy,
            lock_path: PathBuf::from(lock),
            lock_file: Mutex::new(None),
            lock_warned: AtomicBool::new(false),
            slot: Arc::new(tokio::sync::Mutex::new(())),
            last_automatic: Mutex::new(None),
        };
        // Open the lock file now, while the filesystem may still have room for it.
        drop(engine.lock_handle());
        engine
    }

    /// An engine with its own metrics, store and collector, for `bilge clean` and `bilge build`.
    pub fn standalone(s: Standalone) -> Result<Arc<Engine>> {
        let metrics = Metrics::new().map_err(|e| Error::Other(format!("metrics: {e}")))?;
        let store = Store::new(&s.state_path, metrics.store_errors.clone());
        let collector = Arc::new(Collector::new(s.docker, s.filesystem));
        Ok(Arc::new(Engine::new(s.policy, collector, store, metrics)))
    }

    /// Continues the cooldown from the last automatic run in the audit table, so a restart does
    /// not allow an immediate second prune.
    pub fn resume_cooldown(&self) {
        let last = self
            .store
            .list_cleanups(50)
            .unwrap_or_default()
            .into_iter()
            .find(|r| {
                matches!(r.trigger.as_str(), "webhook" | "watermark")
                    && matches!(r.result.as_str(), "success" | "failure")
            })
            .and_then(|r| {
                let ago = (Utc::now() - r.started_at).to_std().ok()?;
                Instant::now().checked_sub(ago)
            });
        if last.is_some() {
            *lock(&self.last_automatic) = last;
        }
    }

    /// The host's policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The collector this engine measures with.
    pub fn collector(&self) -> &Arc<Collector> {
        &self.collector
    }

    /// True while a run of this process executes.
    pub fn is_running(&self) -> bool {
        self.slot.try_lock().is_err()
    }

    /// Time left before an automatic run may start again, if any.
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        let last = (*lock(&self.last_automatic))?;
        self.policy
            .cooldown
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// The plan for `level` from the collector's last snapshot (never waits on Docker).
    pub fn plan_from_snapshot(&self, level: Level, until: Option<Duration>) -> Option<Plan> {
        let du = self.collector.snapshot().disk_usage.clone()?;
        Some(plan(
            &du,
            &self.policy,
            level,
            until.unwrap_or(self.policy.until),
            Utc::now(),
        ))
    }

    /// The plan for `level` from a fresh `/system/df` (records nothing).
    pub async fn plan_now(&self, level: Level, until: Option<Duration>) -> Result<Plan> {
        let (_, du) = self.fresh_usage().await?;
        Ok(plan(
            &du,
            &self.policy,
            level,
            until.unwrap_or(self.policy.until),
            Utc::now(),
        ))
    }

    /// Runs `req` now, waiting first for a run already in progress on this host to end (it is
    /// never joined in parallel). Dry runs take no lock. The report says how it went; failures
    /// are in it, recorded and counted, never returned as errors.
    pub async fn run(&self, req: Request) -> Report {
        if req.dry_run {
            return self.execute(req).await;
        }
        let slot = match self.slot.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                tracing::info!("waiting for the cleanup already running in this process");
                self.slot.clone().lock_owned().await
            }
        };
        let host = match self.try_host_lock() {
            Ok(l) => l,
            Err(_) => {
                tracing::info!(lock = %self.lock_path.display(),
                    "waiting for the cleanup another bilge is running on this host");
                self.wait_host_lock().await
            }
        };
        let _guard = RunGuard {
            _slot: slot,
            _host: host,
        };
        if req.trigger.is_automatic() {
            *lock(&self.last_automatic) = Some(Instant::now());
        }
        self.execute(req).await
    }

    /// Starts `req` in the background if no run is in progress on this host and, for automatic
    /// triggers, the cooldown has passed; otherwise says why not (and starts nothing).
    pub fn try_start(
        self: &Arc<Self>,
        req: Request,
    ) -> std::result::Result<tokio::task::JoinHandle<Report>, Refusal> {
        let mut last = lock(&self.last_automatic);
        if req.trigger.is_automatic()
            && let Some(at) = *last
            && let Some(left) = self.policy.cooldown.checked_sub(at.elapsed())
            && !left.is_zero()
        {
            return Err(Refusal::Cooldown(left));
        }
        let slot = self
            .slot
            .clone()
            .try_lock_owned()
            .map_err(|_| Refusal::Busy)?;
        let host = self.try_host_lock()?;
        if req.trigger.is_automatic() {
            *last = Some(Instant::now());
        }
        drop(last);
        let me = self.clone();
        Ok(tokio::spawn(async move {
            let _guard = RunGuard {
                _slot: slot,
                _host: host,
            };
            me.execute(req).await
        }))
    }

    /// Records a request that was not run (`result="skipped"`), with why.
    pub async fn record_skipped(&self, req: &Request, why: &str) {
        let now = Utc::now();
        let rec = CleanupRecord {
            id: None,
            trigger: req.trigger.as_str().into(),
            level: self.policy.cap(req.level).as_str().into(),
            result: "skipped".into(),
            started_at: now,
            finished_at: now,
            actions: Vec::new(),
            reclaimed_bytes: 0,
            alert: req.alert.clone(),
            detail: Some(why.to_string()),
        };
        self.metrics
            .cleanup_runs
            .with_label_values(&[req.trigger.as_str(), "skipped"])
            .inc();
        self.write(rec).await;
    }

    /// A duplicate of the open lock file, opening it first if needed. `None` (warned once) when it
    /// cannot be opened: runs then go ahead with the in-process lock only.
    fn lock_handle(&self) -> Option<File> {
        let mut guard = lock(&self.lock_file);
        if guard.is_none() {
            let opened = (|| {
                if let Some(dir) = self
                    .lock_path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&self.lock_path)
            })();
            match opened {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    if !self.lock_warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(lock = %self.lock_path.display(), error = %e,
                            "cannot open the cleanup lock file; cleanups by other bilge processes on this host are not excluded");
                    }
                    return None;
                }
            }
        }
        guard.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// Takes the host-wide lock without waiting.
    fn try_host_lock(&self) -> std::result::Result<Option<Flock<File>>, Refusal> {
        let Some(f) = self.lock_handle() else {
            return Ok(None);
        };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Refusal::Busy),
            Err((_, e)) => {
                tracing::warn!(lock = %self.lock_path.display(), error = %e, "cannot lock the cleanup lock file");
                Ok(None)
            }
        }
    }

    /// Waits for the host-wide lock.
    async fn wait_host_lock(&self) -> Option<Flock<File>> {
        let f = self.lock_handle()?;
        match tokio::task::spawn_blocking(move || Flock::lock(f, FlockArg::LockExclusive)).await {
            Ok(Ok(l)) => Some(l),
            Ok(Err((_, e))) => {
                tracing::warn!(lock = %self.lock_path.display(), error = %e, "cannot lock the cleanup lock file");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the cleanup lock failed");
                None
            }
        }
    }

    /// Writes the audit row; a store failure is logged and counted by the store, never fatal.
    async fn write(&self, rec: CleanupRecord) -> Option<i64> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.insert_cleanup(&rec)).await {
            Ok(Ok(id)) => Some(id),
            Ok(Err(_)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "writing the cleanup audit row failed");
                None
            }
        }
    }

    /// Plans and (unless a dry run) executes `req`, then records it.
    async fn execute(&self, req: Request) -> Report {
        let started = Utc::now();
        let until = req.until.unwrap_or(self.policy.until);
        let target = req.target_free.unwrap_or(self.policy.target_free);
        let level = self.policy.cap(req.level);
        let real = !req.dry_run;
        if real {
            self.metrics.cleanup_in_progress.set(1);
        }
        let mut report = Report {
            record: CleanupRecord {
                id: None,
                trigger: req.trigger.as_str().into(),
                level: level.as_str().into(),
                result: String::new(),
                started_at: started,
                finished_at: started,
                actions: Vec::new(),
                reclaimed_bytes: 0,
                alert: req.alert.clone(),
                detail: None,
            },
            record_id: None,
            plan: None,
            levels: Vec::new(),
            data_root: None,
            avail_after: None,
            target_bytes: None,
            target: target.to_string(),
            target_met: false,
        };
        let mut errors: Vec<String> = Vec::new();
        match self.fresh_usage().await {
            Err(e) => errors.push(e.to_string()),
            Ok((api, du)) => {
                let p = plan(&du, &self.policy, req.level, until, Utc::now());
                report.data_root = self.collector.data_root_now().await;
                report.target_bytes = report
                    .data_root
                    .as_ref()
                    .map(|d| target.bytes_for(d.usage.size));
                report.avail_after = report.data_root.as_ref().map(|d| d.usage.avail);
                tracing::info!(
                    trigger = req.trigger.as_str(),
                    level = %p.level,
                    requested = %req.level,
                    until = %format_duration(until),
                    target = %target,
                    estimated = %human_bytes(p.bytes),
                    dry_run = req.dry_run,
                    "cleanup starting"
                );
                if real {
                    self.execute_levels(&api, &du, &p, until, &mut report, &mut errors)
                        .await;
                } else {
                    report.levels = p
                        .levels
                        .iter()
                        .map(|l| LevelOutcome {
                            level: l.level,
                            estimated_bytes: l.bytes,
                            reclaimed_bytes: 0,
                            removed: l.objects,
                            avail_after: None,
                            error: None,
                        })
                        .collect();
                }
                report.plan = Some(p);
            }
        }
        let result = if !real {
            "dry_run"
        } else if errors.is_empty() {
            "success"
        } else {
            "failure"
        };
        let rec = &mut report.record;
        rec.result = result.into();
        rec.finished_at = Utc::now();
        rec.actions = report
            .levels
            .iter()
            .map(|l| ActionRecord {
                action: l.level.as_str().into(),
                reclaimed_bytes: if real {
                    l.reclaimed_bytes
                } else {
                    l.estimated_bytes
                },
                removed: l.removed,
                error: l.error.clone(),
            })
            .collect();
        rec.reclaimed_bytes = if real {
            report.levels.iter().map(|l| l.reclaimed_bytes).sum()
        } else {
            0
        };
        if !errors.is_empty() {
            rec.detail = Some(errors.join("; "));
        }
        self.metrics
            .cleanup_runs
            .with_label_values(&[req.trigger.as_str(), result])
            .inc();
        if real {
            self.metrics
                .cleanup_last_run
                .set(rec.finished_at.timestamp_millis() as f64 / 1000.0);
            self.metrics.cleanup_in_progress.set(0);
        }
        let finished = report.record.clone();
        match result {
            "failure" => tracing::warn!(
                trigger = req.trigger.as_str(),
                level = %finished.level,
                reclaimed = %human_bytes(finished.reclaimed_bytes),
                error = finished.detail.as_deref().unwrap_or_default(),
                "cleanup failed"
            ),
            _ => tracing::info!(
                trigger = req.trigger.as_str(),
                level = %finished.level,
                result,
                reclaimed = %human_bytes(finished.reclaimed_bytes),
                target_met = report.target_met,
                "cleanup finished"
            ),
        }
        report.record_id = self.write(finished).await;
        report
    }

    /// A connected client and a fresh `/system/df`.
    async fn fresh_usage(&self) -> Result<(DockerApi, DiskUsage)> {
        let api = self.collector.docker().await?;
        let du = api.disk_usage().await?;
        Ok((api, du))
    }

    /// Runs the plan's levels in order until the target is met.
    async fn execute_levels(
        &self,
        api: &DockerApi,
        du: &DiskUsage,
        p: &Plan,
        until: Duration,
        report: &mut Report,
        errors: &mut Vec<String>,
    ) {
        let image_ids: HashSet<&str> = du.images.iter().map(|i| i.id.as_str()).collect();
        for lp in &p.levels {
            let done = self.execute_level(api, lp.level, until, &image_ids).await;
            self.metrics
                .cleanup_reclaimed
                .with_label_values(&[lp.level.as_str()])
                .inc_by(done.bytes);
            let after = match report.data_root {
                Some(_) => self.collector.measure_data_root().await,
                None => self.collector.data_root_now().await,
            };
            let avail = after.map(|d| d.usage.avail);
            tracing::info!(
                level = %lp.level,
                estimated = %human_bytes(lp.bytes),
                reclaimed = %human_bytes(done.bytes),
                removed = done.removed,
                available = %avail.map(human_bytes).unwrap_or_else(|| "unknown".into()),
                error = done.error.as_deref().unwrap_or_default(),
                "cleanup level done"
            );
            if let Some(e) = &done.error {
                errors.push(format!("{}: {e}", lp.level));
            }
            report.levels.push(LevelOutcome {
                level: lp.level,
                estimated_bytes: lp.bytes,
                reclaimed_bytes: done.bytes,
                removed: done.removed,
                avail_after: avail,
                error: done.error,
            });
            report.avail_after = avail.or(report.avail_after);
            if let (Some(t), Some(a)) = (report.target_bytes, avail)
                && a >= t
            {
                report.target_met = true;
                break;
            }
        }
    }

    /// The prune filters every level shares: `until` and, when exact, the protect label.
    fn filters(&self, until: Duration) -> HashMap<String, Vec<String>> {
        let mut f = HashMap::new();
        f.insert("until".to_string(), vec![format!("{}s", until.as_secs())]);
        if let [label] = self.policy.protect_labels.as_slice() {
            f.insert("label!".to_string(), vec![label.clone()]);
        }
        f
    }

    /// Whether the prune endpoints' filters say exactly what the policy says (see module docs).
    fn prune_is_exact(&self) -> bool {
        self.policy.protect_labels.len() <= 1
    }

    /// Executes one level.
    async fn execute_level(
        &self,
        api: &DockerApi,
        level: Level,
        until: Duration,
        image_ids: &HashSet<&str>,
    ) -> Done {
        let client = api.client().clone().with_timeout(PRUNE_TIMEOUT);
        let mut done = match level {
            Level::BuildCache => self.prune_build_cache(&client, until).await,
            Level::StoppedContainers if self.prune_is_exact() => {
                let opts = PruneContainersOptions {
                    filters: Some(self.filters(until)),
                };
                match timed(client.prune_containers(Some(opts))).await {
                    Ok(r) => Done {
                        bytes: pos(r.space_reclaimed),
                        removed: r.containers_deleted.map_or(0, |d| d.len() as u64),
                        error: None,
                    },
                    Err(e) => failed(e),
                }
            }
            Level::DanglingImages | Level::UnusedImages if self.prune_is_exact() => {
                let mut filters = self.filters(until);
                let dangling = level == Level::DanglingImages;
                filters.insert("dangling".into(), vec![dangling.to_string()]);
                let opts = PruneImagesOptions {
                    filters: Some(filters),
                };
                match timed(client.prune_images(Some(opts))).await {
                    Ok(r) => Done {
                        bytes: pos(r.space_reclaimed),
                        removed: r
                            .images_deleted
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|d| d.deleted.as_deref())
                            .filter(|id| image_ids.contains(id))
                            .count() as u64,
                        error: None,
                    },
                    Err(e) => failed(e),
                }
            }
            _ => self.remove_each(api, &client, level, until).await,
        };
        if matches!(level, Level::DanglingImages | Level::UnusedImages) {
            // BuildKit's records of the removed images' layers are unshared now: release them.
            let released = self.prune_build_cache(&client, until).await;
            done.bytes += released.bytes;
            if done.error.is_none() {
                done.error = released.error;
            }
        }
        done
    }

    /// `POST /build/prune` without `all`, records last used before the cut-off.
    async fn prune_build_cache(&self, client: &Docker, until: Duration) -> Done {
        let mut filters = HashMap::new();
        filters.insert("until".to_string(), vec![format!("{}s", until.as_secs())]);
        let opts = PruneBuildOptions {
            filters: Some(filters),
            ..PruneBuildOptions::default()
        };
        match timed(client.prune_build(Some(opts))).await {
            Ok(r) => Done {
                bytes: pos(r.space_reclaimed),
                removed: r.caches_deleted.map_or(0, |d| d.len() as u64),
                error: None,
            },
            Err(e) => failed(e),
        }
    }

    /// Removes the objects of a fresh plan for `level` one by one. An object that is gone or in
    /// use by now is skipped; other errors fail the level (after trying every object).
    async fn remove_each(
        &self,
        api: &DockerApi,
        client: &Docker,
        level: Level,
        until: Duration,
    ) -> Done {
        let du = match api.disk_usage().await {
            Ok(du) => du,
            Err(e) => return failed(e),
        };
        let p = plan(&du, &self.policy, level, until, Utc::now());
        let Some(lp) = p.level(level) else {
            return Done::default();
        };
        let mut done = Done::default();
        for c in &lp.candidates {
            let r = match level {
                Level::StoppedContainers => timed(client.remove_container(
                    &c.id,
                    Some(RemoveContainerOptions {
                        v: false,
                        force: false,
                        link: false,
                    }),
                ))
                .await
                .map(|()| true),
                Level::UnusedVolumes => {
                    timed(client.remove_volume(&c.id, Some(RemoveVolumeOptions { force: false })))
                        .await
                        .map(|()| true)
                }
                _ => self.remove_image(client, &du, &c.id).await,
            };
            match r {
                Ok(true) => {
                    done.bytes += c.bytes;
                    done.removed += 1;
                }
                Ok(false) => {}
                Err(Error::Docker(m)) if is_conflict_or_gone(&m) => {
                    tracing::debug!(object = %c.name, error = %m, "skipped: in use or gone by now");
                }
                Err(e) => {
                    tracing::warn!(object = %c.name, error = %e, "cannot remove");
                    done.error.get_or_insert_with(|| format!("{}: {e}", c.name));
                }
            }
        }
        done
    }

    /// Removes one image the way prune does: each tag, then (untagged) the id. True when the
    /// image itself was deleted.
    async fn remove_image(&self, client: &Docker, du: &DiskUsage, id: &str) -> Result<bool> {
        let opts = || {
            Some(RemoveImageOptions {
                force: false,
                noprune: false,
                ..RemoveImageOptions::default()
            })
        };
        let tags: Vec<String> = du
            .images
            .iter()
            .find(|i| i.id == id)
            .map(|i| {
                i.repo_tags
                    .iter()
                    .filter(|t| *t != "<none>:<none>")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut deleted = false;
        let names = if tags.is_empty() {
            vec![id.to_string()]
        } else {
            tags
        };
        for name in names {
            let items = timed(client.remove_image(&name, opts(), None)).await?;
            deleted |= items.iter().any(|d| d.deleted.as_deref() == Some(id));
        }
        Ok(deleted)
    }
}

/// Locks a std mutex, recovering from poisoning (the data stays consistent: plain values).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Runs a prune-sized Docker call with [`PRUNE_TIMEOUT`].
async fn timed<T>(
    f: impl std::future::Future<Output = std::result::Result<T, bollard::errors::Error>>,
) -> Result<T> {
    match tokio::time::timeout(PRUNE_TIMEOUT, f).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::DockerTimeout(PRUNE_TIMEOUT)),
    }
}

fn failed(e: Error) -> Done {
    Done {
        error: Some(e.to_string()),
        ..Done::default()
    }
}

fn pos(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// Docker's answers for an object that is in use (409) or already gone (404).
fn is_conflict_or_gone(message: &str) -> bool {
    message.contains("409") || message.contains("404") || message.contains("No such")
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
    fn refusals_say_what_to_wait_for() {
        assert_eq!(
            Refusal::Cooldown(Duration::from_secs(90)).to_string(),
            "the cooldown since the last automatic cleanup has 1m30s left"
        );
        assert!(Refusal::Busy.to_string().contains("already running"));
    }

    #[test]
    fn conflicts_and_vanished_objects_are_not_failures() {
        assert!(is_conflict_or_gone(
            "Docker responded with status code 409: conflict: unable to remove repository reference"
        ));
        assert!(is_conflict_or_gone("No such container: abc"));
        assert!(!is_conflict_or_gone(
            "Docker responded with status code 500: boom"
        ));
    }
}
