//! The executor: plans a cleanup from a fresh look at the daemon, runs the plan level by level
//! through the Docker edge ([`PruneEdge`]), re-measures the data root's filesystem after each
//! level and stops as soon as the free-space target is met. Whether a run may start at all is
//! [`super::admission`]'s business; what it is labelled with ([`Trigger`], [`CleanupResult`])
//! comes from [`crate::model`].
//!
//! **A run is recorded when it starts.** Its audit row is written as `running` before the first
//! prune and updated after each level with the bytes so far; its end writes the result. Before a
//! run starts (holding the host lock, so no other run is in progress), rows that a dead process
//! left `running` become `interrupted`, keeping what they freed. A run that cannot write its
//! row still runs; its end is kept in memory, counted in this process's metrics and written
//! as soon as the store takes it.
//!
//! **A run stops when asked** ([`Engine::shutdown`]): it finishes the object or prune call in
//! flight and stops before the next level (or object), and is recorded `interrupted` with what
//! it freed. When the grace period passes first, the row is finished from the progress so far.
//!
//! Levels run through Docker's prune endpoints, which act on the daemon's present state and
//! report `SpaceReclaimed`:
//!
//! - `build_cache`: `POST /build/prune` without `all` (records shared with an image stay) and
//!   `until=<secs>s` (last use);
//! - `stopped_containers`: `POST /containers/prune` with `until` and `label!=<protect label>`;
//! - `dangling_images` / `unused_images`: `POST /images/prune` with `dangling=true|false`, `until`
//!   and `label!`. For containers and images `until` is the plan's cut-off as a Unix timestamp,
//!   not a duration Docker would count from the prune's own moment: an object made after the
//!   plan is never taken by a prune (BuildKit's `until` takes durations only). An image that BuildKit built shares its layers with build cache records, so
//!   removing it frees nothing until those records go: each image level is followed by a second
//!   build cache prune, counted in the image level's bytes.
//!
//! Two cases cannot be said with prune filters, and there the engine removes the objects of a
//! fresh plan one by one (counting each object's planned bytes): Docker ANDs several `label!`
//! filters (so with more than one protect label an object carrying only one of them would go),
//! and volume prune has no `until` filter (and, before API 1.42, takes named volumes too). While
//! running builds are held for, every level goes object by object too: a prune would take what
//! the builds made or used since the plan. Each
//! object is removed as the one planned: containers and images by ID (a tag moved to another
//! image since the plan is left alone), volumes only while they are the volume planned. An
//! object that is in use, gone or changed by the time it is removed is skipped, not a failure.
//!
//! The engine takes the host's [`Policy`] and its own [`Settings`], nothing else of the
//! configuration.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use super::admission::Refusal;
use super::admission::{Admission, LockSettings, Ticket, WaitError};
use super::policy::{Context, Level, LevelPlan, Plan, Policy, Recency, Stop, plan_with};
use crate::collect::disk::FilesystemConfig;
use crate::collect::disk::HostPaths;
use crate::collect::{Collector, DataRoot};
use crate::docker::{DiskUsage, DockerConfig, PruneEdge, PruneFilters, Reclaimed, Removal};
use crate::format::{FreeTarget, format_duration, human_bytes};
use crate::metrics::Metrics;
use crate::model::Action;
pub use crate::model::{CleanupResult, Trigger};
use crate::running::RunningBuild;
use crate::store::{ActionRecord, CleanupRecord, Store};
use crate::sync::{lock, read, write};
use crate::{Error, Result};

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
    /// A `build_cache_keep` over the policy's (a schedule's override).
    pub build_cache_keep: Option<FreeTarget>,
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
            build_cache_keep: None,
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
    /// What it left alone for running builds, and why (or why it did not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How the run ended (also in the record, as text).
    #[serde(skip)]
    pub result: CleanupResult,
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
    /// The policy's schedules with their next runs and estimates (a dry run's, filled by
    /// `bilge clean --dry-run`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<super::schedule::Upcoming>,
}

impl Report {
    /// True for a successful run or a dry run.
    pub fn succeeded(&self) -> bool {
        matches!(self.result, CleanupResult::Success | CleanupResult::DryRun)
    }

    /// Bytes reclaimed over every level.
    pub fn reclaimed_bytes(&self) -> u64 {
        self.record.reclaimed_bytes
    }
}

/// The engine's own settings: the host lock and how long a stopping run may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The host lock file and the longest wait for it.
    pub lock: LockSettings,
    /// How long [`Engine::shutdown`] lets a run in progress reach a stopping point
    /// (`--cleanup.shutdown-grace`).
    pub shutdown_grace: Duration,
}

/// The default `--cleanup.shutdown-grace`: inside Kubernetes' default 30 s termination grace.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What an engine of its own (`bilge clean`, `bilge build`) needs.
#[derive(Debug, Clone)]
pub struct Standalone {
    /// The host's policy.
    pub policy: Policy,
    /// The host lock and the shutdown grace.
    pub settings: Settings,
    /// The daemon to prune.
    pub docker: DockerConfig,
    /// How the data root is measured.
    pub filesystem: FilesystemConfig,
    /// The store the audit goes to.
    pub state_path: PathBuf,
}

/// The run in progress: its row and its record so far, for a shutdown that cannot wait for it.
#[derive(Debug)]
struct Current {
    /// Its audit row, when the store took it.
    row: Option<i64>,
    /// The record as of the last level.
    record: CleanupRecord,
    /// True once [`Engine::shutdown`] wrote its end: the run itself writes nothing more.
    abandoned: bool,
}

/// An ended run the store did not take yet.
#[derive(Debug)]
struct Pending {
    /// Its `running` row, when that was written.
    row: Option<i64>,
    /// Its end.
    record: CleanupRecord,
    /// Its totals' key in this process's unstored metrics.
    key: u64,
}

/// The cleanup engine. Share it in an `Arc`.
#[derive(Debug)]
pub struct Engine {
    /// Docker's client and the data root's measurements.
    collector: Arc<Collector>,
    /// The audit table.
    store: Store,
    /// `bilge_cleanup_*`.
    metrics: Metrics,
    /// The host's policy.
    policy: Policy,
    /// The engine's own settings.
    settings: Settings,
    /// Whether a run may start.
    admission: Admission,
    /// Cancelled when bilge stops: runs stop at their next stopping point.
    stop: CancellationToken,
    /// When [`Engine::stop`] was first called: the shutdown grace counts from the signal, not
    /// from the end of the HTTP drain.
    stopped_at: Mutex<Option<tokio::time::Instant>>,
    /// The run in progress.
    current: Mutex<Option<Current>>,
    /// Ended runs whose end the store has not taken yet.
    pending: Mutex<Vec<Pending>>,
    /// The images' last uses as last read from the store ([`Engine::recency`]).
    recency: RwLock<Arc<Recency>>,
}

impl Engine {
    /// An engine with the host's `policy` and its `settings`, over `collector`'s Docker daemon
    /// and data root, writing to `store` and `metrics`.
    pub fn new(
        policy: Policy,
        settings: Settings,
        collector: Arc<Collector>,
        store: Store,
        metrics: Metrics,
    ) -> Engine {
        let admission = Admission::new(settings.lock.clone(), policy.cooldown);
        Engine {
            collector,
            store,
            metrics,
            policy,
            settings,
            admission,
            stop: CancellationToken::new(),
            stopped_at: Mutex::new(None),
            current: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            recency: RwLock::new(Arc::new(Recency::default())),
        }
    }

    /// An engine with its own metrics, store and collector, for `bilge clean` and `bilge build`.
    pub fn standalone(s: Standalone) -> Result<Arc<Engine>> {
        let metrics = Metrics::new().map_err(|e| Error::Other(format!("metrics: {e}")))?;
        let store = Store::new(&s.state_path, metrics.store_errors.clone());
        let collector = Arc::new(Collector::new(s.docker, s.filesystem));
        Ok(Arc::new(Engine::new(
            s.policy, s.settings, collector, store, metrics,
        )))
    }

    /// Continues from the audit table after a start: the cooldown from the newest automatic run
    /// that pruned (however many refusals came after it), and, when no run is in progress on
    /// this host, rows a dead process left `running` become `interrupted`.
    pub async fn resume(&self) {
        let store = self.store.clone();
        if let Ok(Ok(Some(at))) =
            tokio::task::spawn_blocking(move || store.last_automatic_start()).await
        {
            self.admission.resume_cooldown(at);
        }
        // Holding the slot and the host lock: no run is in progress anywhere on this host.
        if let Some(held) = self.admission.try_hold() {
            let store = self.store.clone();
            let interrupted = blocking(move || store.interrupt_running(&[]).unwrap_or_default())
                .await
                .unwrap_or_default();
            drop(held);
            self.log_interrupted(&interrupted);
        }
        self.refresh().await;
    }

    /// Says which rows were found interrupted.
    fn log_interrupted(&self, rows: &[CleanupRecord]) {
        for r in rows {
            tracing::warn!(
                id = r.id.unwrap_or_default(),
                trigger = r.trigger.as_str(),
                started = %r.started_at,
                reclaimed = %human_bytes(r.reclaimed_bytes),
                "a cleanup run was left unfinished by a process that ended; recorded as interrupted"
            );
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
        self.admission.is_running()
    }

    /// Time left before an automatic run may start again, if any.
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        self.admission.cooldown_remaining()
    }

    /// The plan for `level` from the collector's last snapshot and the last read of the images'
    /// uses (never waits on Docker or the store).
    pub fn plan_from_snapshot(&self, level: Level, until: Option<Duration>) -> Option<Plan> {
        let snap = self.collector.snapshot();
        let du = snap.disk_usage.clone()?;
        let recency = read(&self.recency).clone();
        let mut p = plan_with(
            &du,
            &self.policy,
            level,
            until.unwrap_or(self.policy.until),
            Utc::now(),
            Context {
                recency: Some(&recency),
                fs_size: snap.data_root.as_ref().map(|d| d.usage.size),
                containerd_store: self.collector.containerd_store(),
                ..Context::default()
            },
        );
        if let Some(d) = &snap.data_root {
            let need = self.policy.target_free.bytes_for(d.usage.size);
            let need = need.saturating_sub(d.usage.avail);
            p.stop = (need > 0).then(|| Stop::of(&p, need));
        }
        Some(p)
    }

    /// The policy's schedules with their next runs and what each would free now, from the
    /// collector's last snapshot (for the page; never waits on Docker).
    pub fn upcoming_from_snapshot(&self) -> Vec<super::schedule::Upcoming> {
        super::schedule::upcoming(&self.policy.schedules, Utc::now(), |level, until| {
            self.plan_from_snapshot(level, until).map(|p| p.bytes)
        })
    }

    /// As [`Engine::upcoming_from_snapshot`], from one fresh `/system/df` (for `bilge clean
    /// --dry-run`); no estimate when the daemon cannot be asked.
    pub async fn upcoming_now(&self) -> Vec<super::schedule::Upcoming> {
        let du = match self.collector.docker().await {
            Ok(api) => match api.disk_usage().await {
                Ok(du) => Some((
                    du,
                    PruneEdge::containerd_image_store(&api)
                        .await
                        .unwrap_or(false),
                )),
                Err(_) => None,
            },
            Err(_) => None,
        };
        let recency = self.recency().await;
        let fs_size = self.collector.data_root_now().await.map(|d| d.usage.size);
        let now = Utc::now();
        super::schedule::upcoming(&self.policy.schedules, now, |level, until| {
            let (du, containerd_store) = du.as_ref()?;
            let ctx = Context {
                recency: Some(&recency),
                fs_size,
                containerd_store: *containerd_store,
                ..Context::default()
            };
            let until = until.unwrap_or(self.policy.until);
            Some(plan_with(du, &self.policy, level, until, now, ctx).bytes)
        })
    }

    /// The plan for `level` from a fresh `/system/df` and the images' recorded uses, with where
    /// a run for `target` (the policy's when `None`) would stop (records nothing).
    pub async fn plan_now(
        &self,
        level: Level,
        until: Option<Duration>,
        target: Option<FreeTarget>,
    ) -> Result<Plan> {
        let api = self.collector.docker().await?;
        let du = api.disk_usage().await?;
        let containerd_store = PruneEdge::containerd_image_store(&api)
            .await
            .unwrap_or(false);
        let recency = self.recency().await;
        let data_root = self.collector.data_root_now().await;
        let mut p = plan_with(
            &du,
            &self.policy,
            level,
            until.unwrap_or(self.policy.until),
            Utc::now(),
            Context {
                recency: Some(&recency),
                fs_size: data_root.as_ref().map(|d| d.usage.size),
                containerd_store,
                ..Context::default()
            },
        );
        if let Some(d) = &data_root {
            let need = target
                .unwrap_or(self.policy.target_free)
                .bytes_for(d.usage.size);
            let need = need.saturating_sub(d.usage.avail);
            p.stop = (need > 0).then(|| Stop::of(&p, need));
        }
        Ok(p)
    }

    /// The builds running on this host ([`crate::running`], beside the host lock) and
    /// what an automatic run does about them.
    async fn building(&self) -> Option<Building> {
        let folder = crate::running::folder_for(&self.settings.lock.path);
        let builds = blocking(move || crate::running::running(&folder))
            .await
            .unwrap_or_default();
        let root = self.collector.data_root_now().await;
        Building::decide(
            &builds,
            root.as_ref().map(|d| d.usage.avail),
            root.as_ref().map(|d| d.usage.size),
            self.policy.emergency_free,
        )
    }

    /// Writes the image uses the collector saw since the last call to the store (blocking
    /// thread); true when there were some.
    async fn record_image_uses(&self) -> bool {
        let uses = self.collector.take_image_uses();
        if uses.is_empty() {
            return false;
        }
        let store = self.store.clone();
        blocking(move || store.record_image_uses(&uses)).await;
        true
    }

    /// Records the images' uses that Docker's events tell, every couple of seconds until
    /// `cancel` (and once more then), re-reading them for [`Engine::plan_from_snapshot`] when
    /// there were new ones. `bilge serve` runs it; runs and plans record what is left first.
    pub async fn record_uses(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(Duration::from_secs(2)) => false,
            };
            if stopping {
                self.record_image_uses().await;
                return;
            }
            if self.record_image_uses().await {
                self.recency().await;
            }
        }
    }

    /// The images' last uses: what the collector saw, recorded, and the store read back
    /// (uses recorded by an earlier process included). A store that cannot be read gives the
    /// last read.
    pub async fn recency(&self) -> Arc<Recency> {
        self.record_image_uses().await;
        let store = self.store.clone();
        if let Some(Ok(uses)) = blocking(move || store.image_uses()).await {
            *write(&self.recency) = Arc::new(Recency { uses });
        }
        read(&self.recency).clone()
    }

    /// Runs `req` now, waiting first (at most the lock timeout) for a run already in progress
    /// on this host to end: it is never joined in parallel. Dry runs take no lock. The report
    /// says how the run went (its failures are in it, recorded and counted); the error says why
    /// it could not start.
    pub async fn run(&self, req: Request) -> std::result::Result<Report, WaitError> {
        if req.dry_run {
            return Ok(self.execute(req, None).await);
        }
        let ticket = self.admission.wait(req.trigger, &self.stop).await?;
        Ok(self.execute(req, Some(ticket)).await)
    }

    /// Starts `req` in the background if no run is in progress on this host and, for automatic
    /// triggers, the cooldown has passed; otherwise says why not (and starts nothing).
    pub fn try_start(
        self: &Arc<Self>,
        req: Request,
    ) -> std::result::Result<tokio::task::JoinHandle<Report>, Refusal> {
        let ticket = self.admission.try_admit(req.trigger)?;
        let me = self.clone();
        Ok(tokio::spawn(
            async move { me.execute(req, Some(ticket)).await },
        ))
    }

    /// Stops taking work and asks the run in progress to stop at its next stopping point (after
    /// the object or prune call in flight, before the next level).
    pub fn stop(&self) {
        {
            let mut at = lock(&self.stopped_at);
            if at.is_none() {
                *at = Some(tokio::time::Instant::now());
            }
        }
        self.admission.close();
        self.stop.cancel();
    }

    /// Stops ([`Engine::stop`]) and waits at most `--cleanup.shutdown-grace` from the first stop
    /// for the run in progress to record its end. When the grace passes first, the run is recorded as
    /// interrupted with what it freed so far. Returns true when no run was left behind.
    pub async fn shutdown(&self) -> bool {
        self.stop();
        let grace = self.settings.shutdown_grace;
        let since = (*lock(&self.stopped_at)).unwrap_or_else(tokio::time::Instant::now);
        let deadline = since + grace;
        while self.is_running() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !self.is_running() {
            return true;
        }
        self.abandon().await;
        false
    }

    /// Finishes the row of the run in progress as interrupted, from its progress so far (the
    /// run, should it still end, writes nothing more): for a stop that cannot wait for it.
    pub async fn abandon(&self) {
        let grace = self.settings.shutdown_grace;
        let taken = {
            let mut cur = lock(&self.current);
            cur.as_mut().filter(|c| !c.abandoned).map(|c| {
                c.abandoned = true;
                (c.row, c.record.clone())
            })
        };
        let Some((row, mut rec)) = taken else { return };
        rec.result = CleanupResult::Interrupted;
        rec.finished_at = Utc::now();
        let why = format!(
            "bilge stopped; the level in progress did not end within the shutdown grace ({})",
            format_duration(grace)
        );
        rec.detail = Some(match rec.detail.take() {
            Some(d) => format!("{d}; {why}"),
            None => why,
        });
        tracing::warn!(
            trigger = rec.trigger.as_str(),
            reclaimed = %human_bytes(rec.reclaimed_bytes),
            "cleanup interrupted: the shutdown grace passed"
        );
        self.finish(row, rec).await;
    }

    /// This engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The last slot schedule `name` handled on this host, from the store (`None` when it never
    /// ran here, or the store cannot say: the schedule then starts counting afresh).
    pub async fn schedule_last(&self, name: &str) -> Option<DateTime<Utc>> {
        let store = self.store.clone();
        let name = name.to_string();
        match blocking(move || store.schedule_slot(&name)).await {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the schedule's last run from the store");
                None
            }
            None => None,
        }
    }

    /// Records `slot` as handled by schedule `name`.
    pub async fn schedule_handled(&self, name: &str, slot: DateTime<Utc>) {
        let store = self.store.clone();
        let name = name.to_string();
        if let Some(Err(e)) = blocking(move || store.set_schedule_slot(&name, slot)).await {
            tracing::warn!(error = %e, "cannot record the schedule's run in the store");
        }
    }

    /// Records a request that was not run (`result="skipped"`), with why: folded into the one
    /// row of the present cooldown window, with a count and the first and last time.
    pub async fn record_skipped(&self, req: &Request, why: &str) {
        let now = Utc::now();
        let rec = CleanupRecord {
            id: None,
            trigger: req.trigger,
            level: self.policy.cap(req.level),
            result: CleanupResult::Skipped,
            started_at: now,
            finished_at: now,
            actions: Vec::new(),
            reclaimed_bytes: 0,
            alert: req.alert.clone(),
            detail: Some(why.to_string()),
            count: 1,
        };
        let store = self.store.clone();
        let since = self.admission.window_start();
        let folded = rec.clone();
        let stored = blocking(move || store.fold_skipped(&folded, since).is_ok())
            .await
            .unwrap_or(false);
        if stored {
            self.refresh().await;
        } else {
            self.metrics.history.add_unstored(rec.contribution());
        }
    }

    /// Reads the store's summary into the metrics (a failed read keeps the last one).
    async fn refresh(&self) {
        let store = self.store.clone();
        let history = self.metrics.history.clone();
        blocking(move || history.refresh_with(|| store.summary(), &[])).await;
    }

    /// Writes the ends the store did not take before, then (holding the host lock: no other run
    /// is in progress) marks the rows dead processes left `running` as interrupted.
    async fn recover(&self) {
        let pending: Vec<Pending> = std::mem::take(&mut *lock(&self.pending));
        let store = self.store.clone();
        let history = self.metrics.history.clone();
        let left = blocking(move || {
            let mut left = Vec::new();
            let mut written = Vec::new();
            for p in pending {
                let r = match p.row {
                    Some(id) => store.update_cleanup(id, &p.record).map(|_| id),
                    None => store.insert_cleanup(&p.record),
                };
                match r {
                    Ok(_) => written.push(p.key),
                    Err(_) => left.push(p),
                }
            }
            if !written.is_empty() {
                history.refresh_with(|| store.summary(), &written);
            }
            let keep: Vec<i64> = left.iter().filter_map(|p| p.row).collect();
            let interrupted = store.interrupt_running(&keep).unwrap_or_default();
            (left, interrupted)
        })
        .await;
        if let Some((left, interrupted)) = left {
            lock(&self.pending).extend(left);
            self.log_interrupted(&interrupted);
        }
    }

    /// Writes a run's end; when the store does not take it, counts it in this process's
    /// metrics and keeps it to write before the next run. Returns the row id.
    async fn finish(&self, row: Option<i64>, rec: CleanupRecord) -> Option<i64> {
        let store = self.store.clone();
        let history = self.metrics.history.clone();
        let r = {
            let rec = rec.clone();
            blocking(move || {
                let r = match row {
                    Some(id) => store.update_cleanup(id, &rec).map(|_| id),
                    None => store.insert_cleanup(&rec),
                };
                if r.is_ok() {
                    history.refresh_with(|| store.summary(), &[]);
                }
                r.ok()
            })
            .await
            .flatten()
        };
        if r.is_none() {
            let key = self.metrics.history.add_unstored(rec.contribution());
            lock(&self.pending).push(Pending {
                row,
                record: rec,
                key,
            });
        }
        r
    }

    /// Plans and (unless a dry run) executes `req` under `ticket`, recording it as it goes.
    async fn execute(&self, req: Request, ticket: Option<Ticket>) -> Report {
        let real = ticket.is_some();
        let started = ticket.as_ref().map_or_else(Utc::now, |t| t.admitted_at);
        let level = self.policy.cap(req.level);
        let mut row = None;
        let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writer = None;
        if real {
            self.metrics.cleanup_in_progress.set(1);
            self.recover().await;
            let first = CleanupRecord {
                result: CleanupResult::Running,
                ..audit(
                    &req,
                    level,
                    started,
                    started,
                    Run::empty(&req, &self.policy),
                )
                .record
            };
            let store = self.store.clone();
            let rec = first.clone();
            row = blocking(move || store.insert_cleanup(&rec).ok())
                .await
                .flatten();
            *lock(&self.current) = Some(Current {
                row,
                record: first,
                abandoned: false,
            });
            if let Some(id) = row {
                writer = Some(tokio::spawn(write_progress(
                    self.store.clone(),
                    id,
                    progress_rx,
                )));
            }
        }
        let on_level = |levels: &[LevelOutcome]| {
            let mut cur = lock(&self.current);
            let Some(c) = cur.as_mut().filter(|c| !c.abandoned) else {
                return;
            };
            c.record.actions = levels.iter().map(|l| action(l, false)).collect();
            c.record.reclaimed_bytes = levels.iter().map(|l| l.reclaimed_bytes).sum();
            c.record.finished_at = Utc::now();
            let _ = progress_tx.send(c.record.clone());
        };
        let recency = self.recency().await;
        let building = if req.trigger.unattended() {
            self.building().await
        } else {
            None
        };
        if let Some(b) = &building {
            tracing::info!(held = b.since.is_some(), "{}", b.why);
        }
        // A schedule's own warm budget stands in for the policy's in its runs.
        let policy = match req.build_cache_keep {
            Some(keep) => std::borrow::Cow::Owned(Policy {
                build_cache_keep: Some(keep),
                ..self.policy.clone()
            }),
            None => std::borrow::Cow::Borrowed(&self.policy),
        };
        let executor = Executor {
            policy: &policy,
            stop: &self.stop,
            on_level: &on_level,
            recency: &recency,
            building: building.as_ref(),
            host: self.collector.host_paths(),
        };
        let run = match self.collector.docker().await {
            Ok(api) => executor.run(&api, &*self.collector, &req).await,
            Err(e) => executor.failed(&req, e),
        };
        drop(progress_tx);
        if let Some(w) = writer {
            let _ = w.await;
        }
        let mut report = audit(&req, level, started, Utc::now(), run);
        let rec = &report.record;
        match report.result {
            CleanupResult::Failure => tracing::warn!(
                trigger = req.trigger.as_str(),
                level = %rec.level,
                reclaimed = %human_bytes(rec.reclaimed_bytes),
                error = rec.detail.as_deref().unwrap_or_default(),
                "cleanup failed"
            ),
            result => tracing::info!(
                trigger = req.trigger.as_str(),
                level = %rec.level,
                result = result.as_str(),
                reclaimed = %human_bytes(rec.reclaimed_bytes),
                target_met = report.target_met,
                "cleanup finished"
            ),
        }
        let abandoned = real && lock(&self.current).take().is_none_or(|c| c.abandoned);
        report.record_id = if abandoned {
            // The shutdown wrote this run's end already.
            row
        } else {
            self.finish(row, report.record.clone()).await
        };
        if real {
            self.metrics.cleanup_in_progress.set(0);
        }
        drop(ticket);
        report
    }
}

/// Writes each progress record of the run in row `id`, in order, skipping to the newest when
/// several wait (each holds everything so far).
async fn write_progress(
    store: Store,
    id: i64,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<CleanupRecord>,
) {
    while let Some(mut rec) = rx.recv().await {
        while let Ok(newer) = rx.try_recv() {
            rec = newer;
        }
        let store = store.clone();
        blocking(move || store.update_cleanup(id, &rec)).await;
    }
}

/// Runs blocking store work off the async workers; `None` if the task itself failed (logged).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "a state store task failed");
            None
        }
    }
}

/// Where the executor measures free space: the data root's filesystem.
trait DataRootProbe: Send + Sync {
    /// The data root's filesystem now (asking Docker where it is, when that is not known yet);
    /// `None` when it cannot be measured.
    fn data_root_now(&self) -> impl Future<Output = Option<DataRoot>> + Send;
}

impl DataRootProbe for Collector {
    async fn data_root_now(&self) -> Option<DataRoot> {
        Collector::data_root_now(self).await
    }
}

/// What executing a request gave, before it is audited.
#[derive(Debug)]
struct Run {
    /// The plan it started from (absent when Docker could not be asked).
    plan: Option<Plan>,
    /// Per level, in the order they ran (planned ones, in a dry run).
    levels: Vec<LevelOutcome>,
    /// The data root's filesystem before the run.
    data_root: Option<DataRoot>,
    /// Available bytes after the run (before it, when no level measured).
    avail_after: Option<u64>,
    /// Bytes that had to be available to stop.
    target_bytes: Option<u64>,
    /// The target the run aimed for.
    target: FreeTarget,
    /// True when the run stopped because the target was met.
    target_met: bool,
    /// What failed, each with where.
    errors: Vec<String>,
    /// Where the run stopped when asked to (the level it did not finish or start).
    stopped_before: Option<Level>,
    /// What truncating container logs did, when it ran.
    logs: Option<ActionRecord>,
}

impl Run {
    /// Bytes still to free to meet the target, when the data root was measured (0: met).
    fn need(&self) -> Option<u64> {
        match (self.target_bytes, self.avail_after) {
            (Some(t), Some(a)) => Some(t.saturating_sub(a)),
            _ => None,
        }
    }
}

impl Run {
    /// A run that has done nothing yet.
    fn empty(req: &Request, policy: &Policy) -> Run {
        Run {
            plan: None,
            levels: Vec::new(),
            data_root: None,
            avail_after: None,
            target_bytes: None,
            target: req.target_free.unwrap_or(policy.target_free),
            target_met: false,
            errors: Vec::new(),
            stopped_before: None,
            logs: None,
        }
    }
}

/// What executing one level gave.
#[derive(Debug, Default, PartialEq)]
struct Done {
    /// Bytes freed.
    bytes: u64,
    /// Objects removed.
    removed: u64,
    /// Why the level failed.
    error: Option<String>,
    /// True when it stopped before its last object because the run was asked to stop.
    stopped: bool,
}

impl Done {
    /// Adds a release of build cache (its bytes, and its error when the level had none).
    fn add_release(&mut self, released: Done) {
        self.bytes = self.bytes.saturating_add(released.bytes);
        if self.error.is_none() {
            self.error = released.error;
        }
    }

    /// A failed call.
    fn failed(e: Error) -> Done {
        Done {
            error: Some(e.to_string()),
            ..Done::default()
        }
    }

    /// A prune call's answer, counting the deleted ids that `counts` says are objects of the
    /// level (an image prune also lists layers).
    fn pruned(r: Result<Reclaimed>, counts: impl Fn(&str) -> bool) -> Done {
        match r {
            Ok(r) => Done {
                bytes: r.bytes,
                removed: r.deleted.iter().filter(|id| counts(id)).count() as u64,
                ..Done::default()
            },
            Err(e) => Done::failed(e),
        }
    }
}

/// Plans one request and calls the edge for it, level by level: the engine without its
/// admission, store and collector, so that unit tests drive it against a fake edge.
#[derive(Clone, Copy)]
struct Executor<'a> {
    /// The host's policy.
    policy: &'a Policy,
    /// Cancelled when the run is to stop at its next stopping point.
    stop: &'a CancellationToken,
    /// Told the levels so far after each level.
    on_level: &'a (dyn Fn(&[LevelOutcome]) + Send + Sync),
    /// Images' last uses, for the order images go in.
    recency: &'a Recency,
    /// Builds running on the host, for an automatic run.
    building: Option<&'a Building>,
    /// Where the host's files are, for the container logs.
    host: &'a HostPaths,
}

/// What an automatic run knows of the builds running on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Building {
    /// When the oldest started, when their objects are left alone (`None`: below
    /// `emergency_free`, disk space wins).
    pub since: Option<DateTime<Utc>>,
    /// The decision, for the log and the audit.
    pub why: String,
}

impl Building {
    /// The decision for `builds` (oldest first) on a data root with `avail` of `size` bytes
    /// available, under `emergency` (pure). `None` when no build runs.
    pub fn decide(
        builds: &[RunningBuild],
        avail: Option<u64>,
        size: Option<u64>,
        emergency: FreeTarget,
    ) -> Option<Building> {
        let oldest = builds.first()?;
        let n = builds.len();
        let what = format!(
            "{n} running build{} (the oldest: pid {} on {}, project {}, since {})",
            if n == 1 { "" } else { "s" },
            oldest.pid,
            oldest.host,
            oldest.project,
            oldest
                .started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        Some(match (avail, size) {
            (Some(a), Some(s)) if a < emergency.bytes_for(s) => Building {
                since: None,
                why: format!(
                    "nothing held for {what}: the data root has {} available, under emergency_free ({emergency}), and disk space wins",
                    human_bytes(a)
                ),
            },
            _ => Building {
                since: Some(oldest.started_at),
                why: format!("used since the oldest of {what} started"),
            },
        })
    }

    /// What the audit says of a level that kept `kept` objects for the builds.
    fn held(&self, kept: u64) -> Option<String> {
        match self.since {
            Some(_) if kept > 0 => Some(format!("{kept} kept for builds: {}", self.why)),
            Some(_) => None,
            None => Some(self.why.clone()),
        }
    }
}

impl std::fmt::Debug for Executor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("policy", self.policy)
            .field("stopped", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Executor<'_> {
    /// The run of a request whose daemon could not be reached: nothing planned, nothing done.
    fn failed(&self, req: &Request, e: Error) -> Run {
        Run {
            errors: vec![e.to_string()],
            ..Run::empty(req, self.policy)
        }
    }

    /// What a level kept for running builds, for the audit.
    fn held(&self, lp: &LevelPlan) -> Option<String> {
        self.building
            .filter(|_| lp.level.stops_inside())
            .and_then(|b| b.held(lp.kept.building))
    }

    /// The planner's context for a data root of `fs_size` bytes, asking `edge` which image
    /// store it has (the classic one when it cannot say: shared records then stay).
    async fn ctx(&self, edge: &impl PruneEdge, fs_size: Option<u64>) -> Context<'_> {
        Context {
            recency: Some(self.recency),
            fs_size,
            building_since: self.building.and_then(|b| b.since),
            containerd_store: edge.containerd_image_store().await.unwrap_or(false),
        }
    }

    /// Plans `req` from a fresh `/system/df` and, unless it is a dry run, executes the plan.
    async fn run(&self, edge: &impl PruneEdge, probe: &impl DataRootProbe, req: &Request) -> Run {
        let until = req.until.unwrap_or(self.policy.until);
        let target = req.target_free.unwrap_or(self.policy.target_free);
        let du = match edge.disk_usage().await {
            Ok(du) => du,
            Err(e) => return self.failed(req, e),
        };
        let data_root = probe.data_root_now().await;
        let fs_size = data_root.as_ref().map(|d| d.usage.size);
        let mut p = plan_with(
            &du,
            self.policy,
            req.level,
            until,
            Utc::now(),
            self.ctx(edge, fs_size).await,
        );
        let mut run = Run {
            target_bytes: data_root.as_ref().map(|d| target.bytes_for(d.usage.size)),
            avail_after: data_root.as_ref().map(|d| d.usage.avail),
            data_root,
            ..Run::empty(req, self.policy)
        };
        let need = run.need();
        p.stop = need.filter(|n| *n > 0).map(|n| Stop::of(&p, n));
        tracing::info!(
            trigger = req.trigger.as_str(),
            level = %p.level,
            requested = %req.level,
            until = %format_duration(until),
            target = %target,
            need = %need.map(human_bytes).unwrap_or_else(|| "unknown".into()),
            estimated = %human_bytes(p.bytes),
            dry_run = req.dry_run,
            "cleanup starting"
        );
        if req.dry_run {
            run.levels = p
                .levels
                .iter()
                .map(|l| LevelOutcome {
                    level: l.level,
                    estimated_bytes: l.bytes,
                    reclaimed_bytes: 0,
                    removed: l.objects,
                    avail_after: None,
                    error: None,
                    held: self.held(l),
                })
                .collect();
        } else {
            self.levels(edge, probe, &du, &p, until, &mut run).await;
            self.logs(edge, probe, &mut run).await;
        }
        run.plan = Some(p);
        run
    }

    /// The opt-in last resort ([`super::logs`]): a run still short of its target after its
    /// levels truncates the largest container logs, measuring after each, until it is met.
    async fn logs(&self, edge: &impl PruneEdge, probe: &impl DataRootProbe, run: &mut Run) {
        let short = run.need().is_some_and(|n| n > 0);
        if !self.policy.allow_log_truncation
            || !short
            || run.stopped_before.is_some()
            || self.stop.is_cancelled()
        {
            return;
        }
        let mut rec = ActionRecord {
            action: Action::ContainerLogs.as_str().into(),
            reclaimed_bytes: 0,
            removed: 0,
            error: None,
            held: None,
        };
        let files = match edge.log_files().await {
            Ok(f) => f,
            Err(e) => {
                run.errors.push(format!("container_logs: {e}"));
                rec.error = Some(e.to_string());
                run.logs = Some(rec);
                return;
            }
        };
        let host = self.host.clone();
        let sized = blocking(move || {
            files
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::metadata(host.file(Path::new(&f.path)))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    (f, bytes)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (f, bytes) in super::logs::candidates(self.policy, sized) {
            if self.stop.is_cancelled() {
                break;
            }
            let path = self.host.file(Path::new(&f.path));
            match blocking(move || super::logs::truncate(&path)).await {
                Some(Ok(freed)) => {
                    rec.reclaimed_bytes = rec.reclaimed_bytes.saturating_add(freed);
                    rec.removed += 1;
                    tracing::warn!(container = %f.container, bytes = %human_bytes(freed), was = %human_bytes(bytes), "truncated a container's log (allow_log_truncation): the data root was still short of its target");
                }
                Some(Err(e)) => {
                    tracing::warn!(container = %f.container, error = %e, "cannot truncate the container's log");
                    let e = format!("{}: {e}", f.container);
                    run.errors.push(format!("container_logs: {e}"));
                    rec.error.get_or_insert(e);
                }
                None => {}
            }
            let avail = probe.data_root_now().await.map(|d| d.usage.avail);
            run.avail_after = avail.or(run.avail_after);
            if let (Some(t), Some(a)) = (run.target_bytes, avail)
                && a >= t
            {
                run.target_met = true;
                break;
            }
        }
        if rec.removed > 0 || rec.error.is_some() {
            run.logs = Some(rec);
        }
    }

    /// Runs the plan's levels in order until the target is met or the run is asked to stop. A
    /// run that starts short of its target stops as soon as it is met, inside a level where the
    /// level allows ([`Level::stops_inside`]); one that starts with the target met runs its
    /// first level whole (within the budgets) and stops; without a measurement every level runs.
    async fn levels(
        &self,
        edge: &impl PruneEdge,
        probe: &impl DataRootProbe,
        du: &DiskUsage,
        p: &Plan,
        until: Duration,
        run: &mut Run,
    ) {
        let image_ids: HashSet<&str> = du.images.iter().map(|i| i.id.as_str()).collect();
        for lp in &p.levels {
            if self.stop.is_cancelled() {
                run.stopped_before = Some(lp.level);
                tracing::info!(level = %lp.level, "cleanup stopping before this level: bilge was asked to stop");
                break;
            }
            let need = run.need().filter(|n| *n > 0);
            let done = self
                .level(
                    edge,
                    probe,
                    lp,
                    (until, p.cutoff),
                    &image_ids,
                    need,
                    run.target_bytes,
                )
                .await;
            let avail = probe.data_root_now().await.map(|d| d.usage.avail);
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
                run.errors.push(format!("{}: {e}", lp.level));
            }
            run.levels.push(LevelOutcome {
                level: lp.level,
                estimated_bytes: lp.bytes,
                reclaimed_bytes: done.bytes,
                removed: done.removed,
                avail_after: avail,
                error: done.error,
                held: self.held(lp),
            });
            (self.on_level)(&run.levels);
            run.avail_after = avail.or(run.avail_after);
            if done.stopped {
                run.stopped_before = Some(lp.level);
                break;
            }
            if let (Some(t), Some(a)) = (run.target_bytes, avail)
                && a >= t
            {
                run.target_met = true;
                break;
            }
        }
    }

    /// The prune filters every level shares: the plan's cut-off and, when exact, the protect
    /// label.
    fn filters(&self, before: DateTime<Utc>) -> PruneFilters {
        let keep_label = match self.policy.protect_labels.as_slice() {
            [label] => Some(label.clone()),
            _ => None,
        };
        PruneFilters { before, keep_label }
    }

    /// Whether running builds hold objects back in this run: then no level goes by a prune
    /// call, which would take what the plan kept for them (and what they made since).
    fn holds_for_builds(&self) -> bool {
        self.building.is_some_and(|b| b.since.is_some())
    }

    /// Whether the prune endpoints' filters say exactly what the policy says (see module docs).
    fn prune_is_exact(&self) -> bool {
        self.policy.protect_labels.len() <= 1
    }

    /// Whether an image prune with [`Self::filters`] removes what the plan says: always without
    /// a protect label; with one, unless the image store ignores `label!` (then, and when the
    /// daemon cannot say, images are removed one by one, which never removes a protected one).
    async fn image_filters_hold(&self, edge: &impl PruneEdge) -> bool {
        if self.policy.protect_labels.is_empty() {
            return true;
        }
        match edge.containerd_image_store().await {
            Ok(containerd) => !containerd,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the daemon about its image store; removing images one by one");
                false
            }
        }
    }

    /// Executes one level. `need` (bytes still to free, when the run started short of its
    /// target) lets a level that stops inside go object by object, least recently used first,
    /// until `target` bytes are available. A level that must go whole and has nothing held by
    /// a budget or running builds uses Docker's prune endpoint: one call, whose `until` is the
    /// plan's cut-off (`(until, cutoff)`).
    #[allow(clippy::too_many_arguments)]
    async fn level(
        &self,
        edge: &impl PruneEdge,
        probe: &impl DataRootProbe,
        lp: &LevelPlan,
        (until, cutoff): (Duration, Option<DateTime<Utc>>),
        image_ids: &HashSet<&str>,
        need: Option<u64>,
        target: Option<u64>,
    ) -> Done {
        let level = lp.level;
        let exact = self.prune_is_exact();
        // The whole level goes when no target can stop it inside and neither a budget nor a
        // running build holds any of it.
        let whole = need.is_none_or(|n| n >= lp.bytes)
            && lp.budget.is_none()
            && lp.kept.building == 0
            && !self.holds_for_builds();
        let images = matches!(level, Level::DanglingImages | Level::UnusedImages);
        let mut done = match (level, cutoff) {
            (Level::BuildCache, _) if whole => {
                let pruned = edge.prune_build_cache(until).await;
                let left: Vec<&str> = match &pruned {
                    Ok(r) => lp
                        .candidates
                        .iter()
                        .map(|c| c.id.as_str())
                        .filter(|id| !r.deleted.iter().any(|d| d == id))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let mut done = Done::pruned(pruned, |_| true);
                // What the plan holds and the prune left: records Docker calls shared, which
                // the containerd image store lets go (see the planner), one by one.
                for id in left {
                    if self.stop.is_cancelled() {
                        done.stopped = true;
                        break;
                    }
                    let one = Done::pruned(edge.remove_build_cache(id, until).await, |_| true);
                    done.removed += one.removed;
                    done.add_release(one);
                }
                done
            }
            (Level::StoppedContainers, Some(before)) if exact && !self.holds_for_builds() => {
                Done::pruned(edge.prune_containers(&self.filters(before)).await, |_| true)
            }
            (Level::DanglingImages | Level::UnusedImages, Some(before))
                if whole && exact && self.image_filters_hold(edge).await =>
            {
                let dangling = level == Level::DanglingImages;
                let r = edge.prune_images(&self.filters(before), dangling).await;
                Done::pruned(r, |id| image_ids.contains(id))
            }
            _ => {
                let need = need.filter(|_| level.stops_inside());
                return self
                    .remove_each(edge, probe, level, until, need, target)
                    .await;
            }
        };
        if images && !done.stopped {
            done.add_release(self.release(edge, until).await);
        }
        done
    }

    /// Releases the build cache that removed images held (BuildKit's records of their layers
    /// are unshared now): one prune without a budget, else record by record within it.
    async fn release(&self, edge: &impl PruneEdge, until: Duration) -> Done {
        if self.policy.build_cache_keep.is_none() && !self.holds_for_builds() {
            return Done::pruned(edge.prune_build_cache(until).await, |_| true);
        }
        let du = match edge.disk_usage().await {
            Ok(du) => du,
            Err(e) => return Done::failed(e),
        };
        let p = plan_with(
            &du,
            self.policy,
            Level::BuildCache,
            until,
            Utc::now(),
            self.ctx(edge, None).await,
        );
        let mut done = Done::default();
        for c in p
            .level(Level::BuildCache)
            .map_or(&[][..], |l| &l.candidates)
        {
            done.add_release(Done::pruned(
                edge.remove_build_cache(&c.id, until).await,
                |_| true,
            ));
        }
        done
    }

    /// Removes the objects of a fresh plan for `level` one by one, in the plan's order, each
    /// only as the object planned. With `need`, it goes in batches: objects until their
    /// estimates add up to what is still needed, then (for images) the build cache they held is
    /// released and the filesystem measured; it stops once `target` bytes are available. An
    /// object that is gone, in use or changed by now is skipped; other errors fail the level
    /// (after trying every object). A stop ends the loop after the object in flight.
    async fn remove_each(
        &self,
        edge: &impl PruneEdge,
        probe: &impl DataRootProbe,
        level: Level,
        until: Duration,
        mut need: Option<u64>,
        target: Option<u64>,
    ) -> Done {
        let du = match edge.disk_usage().await {
            Ok(du) => du,
            Err(e) => return Done::failed(e),
        };
        let fs_size = probe.data_root_now().await.map(|d| d.usage.size);
        let p = plan_with(
            &du,
            self.policy,
            level,
            until,
            Utc::now(),
            self.ctx(edge, fs_size).await,
        );
        let Some(lp) = p.level(level) else {
            return Done::default();
        };
        let images = matches!(level, Level::DanglingImages | Level::UnusedImages);
        let mut done = Done::default();
        let mut batch = 0u64;
        let mut unreleased = false;
        for c in &lp.candidates {
            if self.stop.is_cancelled() {
                done.stopped = true;
                break;
            }
            let r = match level {
                // SpaceReclaimed is exact for a record: it is counted here, not the estimate.
                Level::BuildCache => match edge.remove_build_cache(&c.id, until).await {
                    Ok(r) if r.deleted.is_empty() => Ok(Removal::Gone(format!(
                        "{} is in use, shared or gone by now",
                        c.name
                    ))),
                    Ok(r) => {
                        done.bytes = done.bytes.saturating_add(r.bytes);
                        done.removed += 1;
                        Ok(Removal::Kept)
                    }
                    Err(e) => Err(e),
                },
                Level::StoppedContainers => edge.remove_container(&c.id).await,
                Level::UnusedVolumes => edge.remove_volume(&c.id, volume_created(&du, &c.id)).await,
                _ => edge.remove_image(&c.id, &tags(&du, &c.id)).await,
            };
            match r {
                Ok(Removal::Removed) => {
                    done.bytes = done.bytes.saturating_add(c.bytes);
                    done.removed += 1;
                    unreleased = images;
                }
                Ok(Removal::Kept) => {}
                Ok(Removal::InUse(why) | Removal::Gone(why)) => {
                    tracing::debug!(object = %c.name, error = %why, "skipped: in use or gone by now");
                }
                Ok(Removal::Changed(why)) => {
                    tracing::info!(object = %c.name, why = %why, "skipped: not the object planned any more");
                }
                Err(e) => {
                    tracing::warn!(object = %c.name, error = %e, "cannot remove");
                    done.error.get_or_insert_with(|| format!("{}: {e}", c.name));
                }
            }
            batch = batch.saturating_add(c.bytes);
            let Some(n) = need else { continue };
            if batch < n {
                continue;
            }
            // The end of a batch: release what the images held, then measure.
            if unreleased {
                done.add_release(self.release(edge, until).await);
                unreleased = false;
            }
            batch = 0;
            let avail = probe.data_root_now().await.map(|d| d.usage.avail);
            match (avail, target) {
                (Some(a), Some(t)) if a >= t => {
                    tracing::info!(level = %level, removed = done.removed, "target met inside the level");
                    return done;
                }
                (Some(a), Some(t)) => need = Some(t - a),
                _ => need = None,
            }
        }
        if unreleased && !done.stopped {
            done.add_release(self.release(edge, until).await);
        }
        done
    }
}

/// The tags of image `id` in `du` (none for a dangling one).
fn tags(du: &DiskUsage, id: &str) -> Vec<String> {
    du.images
        .iter()
        .find(|i| i.id == id)
        .map(|i| {
            i.repo_tags
                .iter()
                .filter(|t| *t != "<none>:<none>")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// When volume `name` of `du` was created, as planned.
fn volume_created(du: &DiskUsage, name: &str) -> Option<DateTime<Utc>> {
    du.volumes
        .iter()
        .find(|v| v.name == name)
        .and_then(|v| v.created_at)
}

/// A level's outcome as the audit row keeps it (estimates in a dry run).
fn action(l: &LevelOutcome, dry_run: bool) -> ActionRecord {
    ActionRecord {
        action: l.level.as_str().into(),
        reclaimed_bytes: if dry_run {
            l.estimated_bytes
        } else {
            l.reclaimed_bytes
        },
        removed: l.removed,
        error: l.error.clone(),
        held: l.held.clone(),
    }
}

/// The report of `run` for `req` (capped to `level`), with its audit row: a dry run records
/// the estimates and reclaims nothing; a run asked to stop is interrupted; otherwise any error
/// makes the run a failure. Pure.
fn audit(
    req: &Request,
    level: Level,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    run: Run,
) -> Report {
    let result = if req.dry_run {
        CleanupResult::DryRun
    } else if run.stopped_before.is_some() {
        CleanupResult::Interrupted
    } else if run.errors.is_empty() {
        CleanupResult::Success
    } else {
        CleanupResult::Failure
    };
    let mut actions: Vec<ActionRecord> =
        run.levels.iter().map(|l| action(l, req.dry_run)).collect();
    actions.extend(run.logs.clone());
    let reclaimed_bytes = if req.dry_run {
        0
    } else {
        run.levels.iter().map(|l| l.reclaimed_bytes).sum::<u64>()
            + run.logs.as_ref().map_or(0, |l| l.reclaimed_bytes)
    };
    let mut detail: Vec<String> = run.errors.clone();
    if let Some(l) = run.stopped_before {
        detail.push(format!(
            "interrupted at {l}: bilge was asked to stop; the levels before it ran"
        ));
    }
    Report {
        result,
        record: CleanupRecord {
            id: None,
            trigger: req.trigger,
            level,
            result,
            started_at: started,
            finished_at: finished,
            actions,
            reclaimed_bytes,
            alert: req.alert.clone(),
            detail: (!detail.is_empty()).then(|| detail.join("; ")),
            count: 1,
        },
        record_id: None,
        plan: run.plan,
        levels: run.levels,
        data_root: run.data_root,
        avail_after: run.avail_after,
        target_bytes: run.target_bytes,
        target: run.target.to_string(),
        target_met: run.target_met,
        schedules: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::collect::disk::Usage;
    use crate::docker::{BuildCacheRecord, Container, Image, Volume};
    use crate::sync::lock;

    const GIB: u64 = 1 << 30;

    /// A creation time old enough for any `until` the tests use (2020-09-13).
    const OLD: i64 = 1_600_000_000;

    /// One call the executor made, as the fake records it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        DiskUsage,
        PruneBuildCache,
        RemoveBuildCache(String),
        PruneContainers,
        PruneImages { dangling: bool },
        RemoveContainer(String),
        RemoveVolume(String),
        RemoveImage(String, Vec<String>),
    }

    /// A fake Docker edge over one `/system/df` answer, and a fake 100 GiB data root whose
    /// available space grows by what each call frees.
    #[derive(Debug)]
    struct Fake {
        du: DiskUsage,
        calls: Mutex<Vec<Call>>,
        /// Bytes the next matching call frees, used up in order.
        frees: Mutex<Vec<(Call, u64)>>,
        /// Available bytes; `None` when the data root cannot be measured.
        avail: Mutex<Option<u64>>,
        /// Calls that fail with a 500.
        failing: Vec<Call>,
        /// Objects Docker says are in use by now.
        in_use: HashSet<String>,
        /// Objects Docker says are gone by now.
        gone: HashSet<String>,
        /// A call after which the run is asked to stop.
        stop_after: Option<(Call, CancellationToken)>,
        /// The containers' log files.
        logs: Vec<crate::docker::LogFile>,
        /// Images in the containerd image store, whose prune ignores `label!`.
        containerd_store: bool,
    }

    impl Fake {
        /// A daemon holding `du`, on a data root with `avail_gib` GiB available.
        fn new(du: DiskUsage, avail_gib: u64) -> Fake {
            Fake {
                du,
                calls: Mutex::new(Vec::new()),
                frees: Mutex::new(Vec::new()),
                avail: Mutex::new(Some(avail_gib * GIB)),
                failing: Vec::new(),
                containerd_store: false,
                in_use: HashSet::new(),
                gone: HashSet::new(),
                stop_after: None,
                logs: Vec::new(),
            }
        }

        /// Cancels `stop` when `call` is made.
        fn stop_after(mut self, call: Call, stop: &CancellationToken) -> Fake {
            self.stop_after = Some((call, stop.clone()));
            self
        }

        /// The next `call` frees `gib` GiB.
        fn frees(self, call: Call, gib: u64) -> Fake {
            lock(&self.frees).push((call, gib * GIB));
            self
        }

        /// `call` fails with Docker's 500.
        fn failing(mut self, call: Call) -> Fake {
            self.failing.push(call);
            self
        }

        /// The data root cannot be measured.
        fn unmeasurable(self) -> Fake {
            *lock(&self.avail) = None;
            self
        }

        /// Docker answers 409 for removing `id`.
        fn in_use(mut self, id: &str) -> Fake {
            self.in_use.insert(id.into());
            self
        }

        /// Docker answers 404 for removing `id`.
        fn gone(mut self, id: &str) -> Fake {
            self.gone.insert(id.into());
            self
        }

        /// The calls made so far.
        fn calls(&self) -> Vec<Call> {
            lock(&self.calls).clone()
        }

        /// Records `call`; fails it when asked to, else frees what it was set to free.
        fn answer(&self, call: Call) -> Result<u64> {
            lock(&self.calls).push(call.clone());
            if let Some((c, stop)) = &self.stop_after
                && *c == call
            {
                stop.cancel();
            }
            if self.failing.contains(&call) {
                return Err(Error::Docker {
                    status: Some(500),
                    message: "Docker responded with status code 500: boom".into(),
                    source: None,
                });
            }
            let mut frees = lock(&self.frees);
            let bytes = match frees.iter().position(|(c, _)| *c == call) {
                Some(i) => frees.remove(i).1,
                None => 0,
            };
            if let Some(a) = lock(&self.avail).as_mut() {
                *a += bytes;
            }
            Ok(bytes)
        }

        /// A remove call's answer for `id`.
        fn removal(&self, call: Call, id: &str) -> Result<Removal> {
            self.answer(call)?;
            Ok(if self.in_use.contains(id) {
                Removal::InUse(format!("{id} is in use"))
            } else if self.gone.contains(id) {
                Removal::Gone(format!("no such object: {id}"))
            } else {
                Removal::Removed
            })
        }
    }

    impl PruneEdge for Fake {
        async fn disk_usage(&self) -> Result<DiskUsage> {
            self.answer(Call::DiskUsage)?;
            Ok(self.du.clone())
        }

        async fn log_files(&self) -> Result<Vec<crate::docker::LogFile>> {
            Ok(self.logs.clone())
        }

        async fn prune_build_cache(&self, _until: Duration) -> Result<Reclaimed> {
            let bytes = self.answer(Call::PruneBuildCache)?;
            let deleted = self.du.build_cache.iter().map(|r| r.id.clone()).collect();
            Ok(Reclaimed { bytes, deleted })
        }

        async fn remove_build_cache(&self, id: &str, _until: Duration) -> Result<Reclaimed> {
            let bytes = self.answer(Call::RemoveBuildCache(id.into()))?;
            let deleted = if self.gone.contains(id) {
                Vec::new()
            } else {
                vec![id.to_string()]
            };
            Ok(Reclaimed { bytes, deleted })
        }

        async fn prune_containers(&self, _filters: &PruneFilters) -> Result<Reclaimed> {
            let bytes = self.answer(Call::PruneContainers)?;
            let deleted = self
                .du
                .containers
                .iter()
                .filter(|c| !c.is_active())
                .map(|c| c.id.clone())
                .collect();
            Ok(Reclaimed { bytes, deleted })
        }

        async fn prune_images(&self, _filters: &PruneFilters, dangling: bool) -> Result<Reclaimed> {
            let bytes = self.answer(Call::PruneImages { dangling })?;
            // Docker lists the layers it deleted along with the images.
            let mut deleted: Vec<String> = self
                .du
                .images
                .iter()
                .filter(|i| i.is_dangling() == dangling && i.containers == 0)
                .map(|i| i.id.clone())
                .collect();
            deleted.push("sha256:some-layer".into());
            Ok(Reclaimed { bytes, deleted })
        }

        async fn containerd_image_store(&self) -> Result<bool> {
            Ok(self.containerd_store)
        }

        async fn remove_container(&self, id: &str) -> Result<Removal> {
            self.removal(Call::RemoveContainer(id.into()), id)
        }

        async fn remove_volume(
            &self,
            name: &str,
            _created: Option<DateTime<Utc>>,
        ) -> Result<Removal> {
            self.removal(Call::RemoveVolume(name.into()), name)
        }

        async fn remove_image(&self, id: &str, tags: &[String]) -> Result<Removal> {
            self.removal(Call::RemoveImage(id.into(), tags.to_vec()), id)
        }
    }

    impl DataRootProbe for Fake {
        async fn data_root_now(&self) -> Option<DataRoot> {
            let avail = (*lock(&self.avail))?;
            Some(DataRoot {
                role: crate::collect::Role::DataRoot,
                path: "/var/lib/docker".into(),
                mountpoint: "/".into(),
                usage: Usage {
                    size: 100 * GIB,
                    free: avail,
                    avail,
                    ..Usage::default()
                },
                predicted_full_seconds: None,
            })
        }
    }

    /// A host with something for every level: a build cache record, a stopped container (and
    /// the image only it uses), a running one, a dangling image and an unused volume.
    fn host() -> DiskUsage {
        let container = |name: &str, state: &str, image: &str| Container {
            id: format!("id-{name}"),
            name: name.into(),
            image_id: image.into(),
            state: state.into(),
            size_rw: GIB as i64,
            created: OLD,
            ..Container::default()
        };
        let image = |id: &str, tags: &[&str], containers: i64| Image {
            id: id.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            created: OLD,
            size: 3 * GIB as i64,
            shared_size: 0,
            containers,
            labels: HashMap::new(),
        };
        let old = DateTime::from_timestamp(OLD, 0);
        DiskUsage {
            build_cache: vec![BuildCacheRecord {
                id: "r1".into(),
                kind: "regular".into(),
                size: 2 * GIB as i64,
                created_at: old,
                last_used_at: old,
                ..BuildCacheRecord::default()
            }],
            containers: vec![
                container("old", "exited", "sha256:app"),
                container("web", "running", "sha256:web"),
            ],
            images: vec![
                image("sha256:app", &["app:1"], 1),
                image("sha256:web", &["web:1"], 1),
                image("sha256:dangling", &[], 0),
            ],
            volumes: vec![Volume {
                name: "data".into(),
                size: GIB as i64,
                ref_count: 0,
                created_at: old,
                ..Volume::default()
            }],
            ..DiskUsage::default()
        }
    }

    /// A policy that allows every level, with `labels` as its protect labels.
    fn policy(labels: &[&str]) -> Policy {
        Policy {
            max_level: Level::UnusedVolumes,
            allow_volumes: true,
            protect_labels: labels.iter().map(|l| l.to_string()).collect(),
            ..Policy::default()
        }
    }

    /// A real run of `level` by hand that stops at `target_gib` GiB available.
    fn request(level: Level, target_gib: u64) -> Request {
        Request {
            target_free: Some(FreeTarget::Bytes(target_gib * GIB)),
            ..Request::new(Trigger::Cli, level)
        }
    }

    /// Runs `req` under `policy` against `fake`.
    async fn run(policy: &Policy, fake: &Fake, req: &Request) -> Run {
        Executor {
            policy,
            stop: &CancellationToken::new(),
            on_level: &|_| {},
            recency: &Recency::default(),
            building: None,
            host: &HostPaths::default(),
        }
        .run(fake, fake, req)
        .await
    }

    /// The levels that ran.
    fn levels(run: &Run) -> Vec<Level> {
        run.levels.iter().map(|l| l.level).collect()
    }

    #[tokio::test]
    async fn the_run_stops_after_the_level_that_meets_the_target() {
        // 10 GiB available, 15 wanted: the build cache (2) and the containers (1) go whole, as
        // their estimates do not reach what is still needed; the dangling image's 3 GiB
        // estimate does, so its level goes image by image, releases the build cache the image
        // held, measures, and stops there.
        let fake = Fake::new(host(), 10)
            .frees(Call::PruneBuildCache, 2)
            .frees(Call::PruneContainers, 1)
            .frees(Call::RemoveImage("sha256:dangling".into(), vec![]), 3);
        let run = run(&policy(&["keep"]), &fake, &request(Level::UnusedImages, 15)).await;
        assert_eq!(
            fake.calls(),
            [
                Call::DiskUsage,
                Call::PruneBuildCache,
                Call::PruneContainers,
                Call::DiskUsage,
                Call::RemoveImage("sha256:dangling".into(), vec![]),
                Call::PruneBuildCache,
            ]
        );
        assert_eq!(
            levels(&run),
            [
                Level::BuildCache,
                Level::StoppedContainers,
                Level::DanglingImages
            ]
        );
        assert!(run.target_met);
        assert_eq!(run.target_bytes, Some(15 * GIB));
        assert_eq!(run.avail_after, Some(16 * GIB));
        let after: Vec<Option<u64>> = run.levels.iter().map(|l| l.avail_after).collect();
        assert_eq!(after, [Some(12 * GIB), Some(13 * GIB), Some(16 * GIB)]);
        assert!(run.errors.is_empty(), "{:?}", run.errors);
    }

    /// A host whose build cache is three records of 1 GiB each, last used in the order
    /// r-cold, r-mid, r-warm, and nothing else.
    fn cache_host() -> DiskUsage {
        let record = |id: &str, at: i64| BuildCacheRecord {
            id: id.into(),
            kind: "regular".into(),
            size: GIB as i64,
            created_at: DateTime::from_timestamp(OLD, 0),
            last_used_at: DateTime::from_timestamp(at, 0),
            ..BuildCacheRecord::default()
        };
        DiskUsage {
            build_cache: vec![
                record("rwarm", OLD + 300),
                record("rcold", OLD + 100),
                record("rmid", OLD + 200),
            ],
            ..DiskUsage::default()
        }
    }

    #[tokio::test]
    async fn a_run_short_of_its_target_removes_the_coldest_cache_first_and_stops_once_it_is_met() {
        // 10 GiB available, 12 wanted: two of the three records are enough.
        let fake = Fake::new(cache_host(), 10)
            .frees(Call::RemoveBuildCache("rcold".into()), 1)
            .frees(Call::RemoveBuildCache("rmid".into()), 1);
        let run = run(&policy(&[]), &fake, &request(Level::STANDARD, 12)).await;
        assert_eq!(
            fake.calls(),
            [
                Call::DiskUsage,
                Call::DiskUsage,
                Call::RemoveBuildCache("rcold".into()),
                Call::RemoveBuildCache("rmid".into()),
            ]
        );
        assert!(run.target_met);
        assert_eq!(levels(&run), [Level::BuildCache]);
        assert_eq!(run.levels[0].removed, 2);
        assert_eq!(run.levels[0].reclaimed_bytes, 2 * GIB);
        // The plan said the same beforehand.
        let stop = run.plan.as_ref().and_then(|p| p.stop);
        assert_eq!(stop.and_then(|s| s.level), Some(Level::BuildCache));
        assert_eq!(stop.map(|s| s.objects), Some(2));
    }

    #[tokio::test]
    async fn estimates_that_fall_short_are_measured_and_the_next_batch_removes_more() {
        // Each record frees half what it says. 11.25 GiB wanted from 10: the first batch
        // (rcold, estimated 1 GiB) leaves 10.5 available, the second (rmid) 11, the third
        // (rwarm) 11.5; each batch is sized by what the last measurement said was missing.
        let fake = Fake::new(cache_host(), 10);
        lock(&fake.frees).extend([
            (Call::RemoveBuildCache("rcold".into()), GIB / 2),
            (Call::RemoveBuildCache("rmid".into()), GIB / 2),
            (Call::RemoveBuildCache("rwarm".into()), GIB / 2),
        ]);
        let req = Request {
            target_free: Some(FreeTarget::Bytes(11 * GIB + GIB / 4)),
            ..Request::new(Trigger::Cli, Level::BuildCache)
        };
        let run = run(&policy(&[]), &fake, &req).await;
        let removed: Vec<Call> = fake
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::RemoveBuildCache(_)))
            .collect();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(run.target_met);
    }

    #[tokio::test]
    async fn a_warm_budget_keeps_the_most_recent_records_even_when_every_level_runs() {
        let p = Policy {
            build_cache_keep: Some(FreeTarget::Bytes(GIB)),
            ..policy(&[])
        };
        let fake = Fake::new(cache_host(), 10);
        let run = run(&p, &fake, &request(Level::BuildCache, 99)).await;
        assert_eq!(
            fake.calls(),
            [
                Call::DiskUsage,
                Call::DiskUsage,
                Call::RemoveBuildCache("rcold".into()),
                Call::RemoveBuildCache("rmid".into()),
            ]
        );
        assert!(!run.target_met);
        let lp = run
            .plan
            .as_ref()
            .and_then(|p| p.level(Level::BuildCache).cloned());
        assert_eq!(lp.map(|l| l.kept.budget), Some(1));
    }

    #[tokio::test]
    async fn a_record_gone_by_the_time_it_is_removed_is_skipped_not_counted() {
        let fake = Fake::new(cache_host(), 10).gone("rcold");
        let p = Policy {
            build_cache_keep: Some(FreeTarget::Bytes(1)),
            ..policy(&[])
        };
        let run = run(&p, &fake, &request(Level::BuildCache, 99)).await;
        assert_eq!(run.levels[0].removed, 1);
        assert!(run.errors.is_empty(), "{:?}", run.errors);
    }

    #[tokio::test]
    async fn a_run_that_starts_with_its_target_met_runs_its_first_level_whole_and_stops() {
        let fake = Fake::new(cache_host(), 50);
        let run = run(&policy(&[]), &fake, &request(Level::STANDARD, 12)).await;
        assert_eq!(fake.calls(), [Call::DiskUsage, Call::PruneBuildCache]);
        assert!(run.target_met);
        assert_eq!(run.plan.as_ref().and_then(|p| p.stop), None);
    }

    #[test]
    fn running_builds_are_held_for_unless_the_data_root_is_under_the_emergency_mark() {
        let b = |pid, secs| RunningBuild {
            host: "ci-1".into(),
            pid,
            project: "app".into(),
            started_at: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
        };
        let builds = [b(7, OLD), b(8, OLD + 60)];
        let two = FreeTarget::Percent(2.0);
        assert_eq!(Building::decide(&[], Some(GIB), Some(100 * GIB), two), None);
        let held = Building::decide(&builds, Some(5 * GIB), Some(100 * GIB), two);
        assert_eq!(
            held.as_ref().and_then(|h| h.since),
            DateTime::from_timestamp(OLD, 0)
        );
        let why = held.map(|h| h.why).unwrap_or_default();
        assert!(
            why.contains("2 running builds") && why.contains("pid 7"),
            "{why}"
        );
        let emergency = Building::decide(&builds, Some(GIB), Some(100 * GIB), two);
        assert_eq!(emergency.as_ref().and_then(|h| h.since), None);
        let why = emergency.map(|h| h.why).unwrap_or_default();
        assert!(why.contains("under emergency_free (2%)"), "{why}");
        // Unmeasured, the builds are held for.
        let blind = Building::decide(&builds, None, None, two);
        assert!(blind.and_then(|h| h.since).is_some());
    }

    #[tokio::test]
    async fn while_builds_are_held_for_no_level_goes_by_a_prune_call() {
        // Every level's estimate is needed (99 GiB wanted of 100), which alone would mean one
        // prune call per level. A build running since before everything was made holds
        // nothing of this host, yet a prune could take what it makes while the run goes (the
        // CI failure this guards against: a dangling image built after the plan went with a
        // whole `dangling_images` prune). So each object goes by itself, as planned.
        let fake = Fake::new(host(), 1);
        let held = Building {
            since: DateTime::from_timestamp(OLD + 10, 0),
            why: "used since the oldest of 1 running build started".into(),
        };
        let policy = policy(&["keep"]);
        Executor {
            policy: &policy,
            stop: &CancellationToken::new(),
            on_level: &|_| {},
            recency: &Recency::default(),
            building: Some(&held),
            host: &HostPaths::default(),
        }
        .run(&fake, &fake, &request(Level::DanglingImages, 99))
        .await;
        let calls = fake.calls();
        assert!(
            !calls.iter().any(|c| matches!(
                c,
                Call::PruneBuildCache | Call::PruneContainers | Call::PruneImages { .. }
            )),
            "{calls:?}"
        );
        assert!(
            calls.contains(&Call::RemoveBuildCache("r1".into())),
            "{calls:?}"
        );
        assert!(
            calls.contains(&Call::RemoveContainer("id-old".into())),
            "{calls:?}"
        );
        assert!(
            calls.contains(&Call::RemoveImage("sha256:dangling".into(), vec![])),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn a_run_still_short_truncates_the_largest_logs_only_with_the_opt_in() {
        let dir = std::env::temp_dir().join(format!("bilge-trunc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = |name: &str, bytes: usize, labels: &[&str]| {
            let path = dir.join(format!("{name}-json.log"));
            std::fs::write(&path, vec![b'x'; bytes]).unwrap();
            crate::docker::LogFile {
                container: name.into(),
                labels: labels
                    .iter()
                    .map(|l| (l.to_string(), "true".to_string()))
                    .collect(),
                path: path.display().to_string(),
                driver: "json-file".into(),
            }
        };
        let logs = vec![
            log("chatty", 3000, &[]),
            log("quiet", 10, &[]),
            log("kept", 5000, &["keep"]),
        ];
        let size = |n: &str| {
            std::fs::metadata(dir.join(format!("{n}-json.log")))
                .unwrap()
                .len()
        };
        let mut fake = Fake::new(DiskUsage::default(), 10);
        fake.logs = logs;
        // Off by default: nothing is truncated.
        let run1 = run(&policy(&["keep"]), &fake, &request(Level::STANDARD, 99)).await;
        assert!(run1.logs.is_none());
        assert_eq!(size("chatty"), 3000);
        let p = Policy {
            allow_log_truncation: true,
            log_truncate_over: 100,
            ..policy(&["keep"])
        };
        let run2 = run(&p, &fake, &request(Level::STANDARD, 99)).await;
        let rec = run2.logs.clone().unwrap();
        assert_eq!(
            (rec.action.as_str(), rec.removed, rec.reclaimed_bytes),
            ("container_logs", 1, 3000)
        );
        assert_eq!((size("chatty"), size("quiet"), size("kept")), (0, 10, 5000));
        // The audit row carries it and counts its bytes.
        let report = audit(
            &request(Level::STANDARD, 99),
            Level::STANDARD,
            Utc::now(),
            Utc::now(),
            run2,
        );
        assert!(
            report
                .record
                .actions
                .iter()
                .any(|a| a.action == "container_logs")
        );
        assert_eq!(report.record.reclaimed_bytes, 3000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn levels_run_in_order_and_never_beyond_the_requested_one() {
        let fake = Fake::new(host(), 1);
        let run = run(
            &policy(&["keep"]),
            &fake,
            &request(Level::StoppedContainers, 99),
        )
        .await;
        assert_eq!(
            fake.calls(),
            [
                Call::DiskUsage,
                Call::PruneBuildCache,
                Call::PruneContainers
            ]
        );
        assert_eq!(levels(&run), [Level::BuildCache, Level::StoppedContainers]);
        assert!(!run.target_met);
    }

    #[tokio::test]
    async fn a_request_beyond_the_hosts_max_level_runs_up_to_the_max_level() {
        let fake = Fake::new(host(), 1);
        let standard = Policy {
            max_level: Level::STANDARD,
            ..policy(&["keep"])
        };
        let run = run(&standard, &fake, &request(Level::UnusedVolumes, 99)).await;
        assert_eq!(
            levels(&run),
            [
                Level::BuildCache,
                Level::StoppedContainers,
                Level::DanglingImages
            ]
        );
        assert!(
            !fake
                .calls()
                .contains(&Call::PruneImages { dangling: false })
        );
    }

    #[tokio::test]
    async fn without_a_measurement_every_planned_level_runs() {
        let fake = Fake::new(host(), 0)
            .unmeasurable()
            .frees(Call::PruneBuildCache, 50);
        let run = run(&policy(&["keep"]), &fake, &request(Level::UnusedImages, 1)).await;
        assert_eq!(run.levels.len(), 4);
        assert!(!run.target_met && run.target_bytes.is_none() && run.avail_after.is_none());
    }

    #[tokio::test]
    async fn image_levels_release_the_build_cache_their_layers_held() {
        let fake = Fake::new(host(), 1)
            .frees(Call::PruneBuildCache, 0)
            .frees(Call::PruneImages { dangling: true }, 1)
            .frees(Call::PruneBuildCache, 4);
        let run = run(
            &policy(&["keep"]),
            &fake,
            &request(Level::DanglingImages, 99),
        )
        .await;
        let images = &run.levels[2];
        assert_eq!(images.level, Level::DanglingImages);
        assert_eq!(images.reclaimed_bytes, 5 * GIB);
        // The layer Docker listed is not an image removed.
        assert_eq!(images.removed, 1);
    }

    #[tokio::test]
    async fn the_progress_is_told_after_each_level_with_the_bytes_so_far() {
        let fake = Fake::new(host(), 1)
            .frees(Call::PruneBuildCache, 2)
            .frees(Call::PruneContainers, 1);
        let policy = policy(&["keep"]);
        let told = Mutex::new(Vec::new());
        let on_level = |levels: &[LevelOutcome]| {
            lock(&told).push(levels.iter().map(|l| l.reclaimed_bytes).sum::<u64>());
        };
        let executor = Executor {
            policy: &policy,
            stop: &CancellationToken::new(),
            on_level: &on_level,
            recency: &Recency::default(),
            building: None,
            host: &HostPaths::default(),
        };
        executor
            .run(&fake, &fake, &request(Level::StoppedContainers, 99))
            .await;
        assert_eq!(*lock(&told), [2 * GIB, 3 * GIB]);
    }

    #[tokio::test]
    async fn a_stop_ends_the_run_before_its_next_level_and_it_is_recorded_interrupted() {
        let fake = Fake::new(host(), 1).frees(Call::PruneBuildCache, 2);
        let policy = policy(&["keep"]);
        let stop = CancellationToken::new();
        // Asked to stop while the first level runs: it ends, the next does not start.
        let on_level = |_: &[LevelOutcome]| stop.cancel();
        let req = request(Level::DanglingImages, 99);
        let run = Executor {
            policy: &policy,
            stop: &stop,
            on_level: &on_level,
            recency: &Recency::default(),
            building: None,
            host: &HostPaths::default(),
        }
        .run(&fake, &fake, &req)
        .await;
        assert_eq!(levels(&run), [Level::BuildCache]);
        assert_eq!(fake.calls(), [Call::DiskUsage, Call::PruneBuildCache]);
        let report = audit(&req, Level::DanglingImages, Utc::now(), Utc::now(), run);
        assert_eq!(report.result, CleanupResult::Interrupted);
        assert_eq!(report.record.reclaimed_bytes, 2 * GIB);
        let detail = report.record.detail.unwrap_or_default();
        assert!(
            detail.contains("interrupted at stopped_containers"),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn a_stop_during_removals_one_by_one_ends_after_the_object_in_flight() {
        let mut du = host();
        du.images.push(Image {
            id: "sha256:second".into(),
            created: OLD,
            size: GIB as i64,
            containers: 0,
            ..Image::default()
        });
        let stop = CancellationToken::new();
        let first = Call::RemoveImage("sha256:dangling".into(), vec![]);
        let fake = Fake::new(du, 1).stop_after(first.clone(), &stop);
        let policy = policy(&["keep", "pin"]);
        let run = Executor {
            policy: &policy,
            stop: &stop,
            on_level: &|_| {},
            recency: &Recency::default(),
            building: None,
            host: &HostPaths::default(),
        }
        .run(&fake, &fake, &request(Level::DanglingImages, 99))
        .await;
        let calls = fake.calls();
        assert_eq!(calls.last(), Some(&first), "{calls:?}");
        assert!(!calls.contains(&Call::RemoveImage("sha256:second".into(), vec![])));
        assert_eq!(run.stopped_before, Some(Level::DanglingImages));
        // The object in flight was removed and counted.
        assert_eq!(run.levels.last().map(|l| l.removed), Some(1));
    }

    #[tokio::test]
    async fn with_several_protect_labels_objects_are_removed_one_by_one() {
        let fake = Fake::new(host(), 1);
        let run = run(
            &policy(&["keep", "pin"]),
            &fake,
            &request(Level::UnusedImages, 99),
        )
        .await;
        let calls = fake.calls();
        // Prune's filters would AND the labels: no container or image prune at all.
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::PruneContainers | Call::PruneImages { .. }))
        );
        assert!(calls.contains(&Call::RemoveContainer("id-old".into())));
        assert!(calls.contains(&Call::RemoveImage("sha256:dangling".into(), vec![])));
        assert!(calls.contains(&Call::RemoveImage(
            "sha256:app".into(),
            vec!["app:1".into()]
        )));
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::RemoveImage(id, _) if id == "sha256:web"))
        );
        // Each object counts its planned bytes.
        assert_eq!(run.levels[1].reclaimed_bytes, GIB);
        assert_eq!(run.levels[1].removed, 1);
        assert!(run.errors.is_empty(), "{:?}", run.errors);
    }

    #[tokio::test]
    async fn on_the_containerd_image_store_images_are_removed_one_by_one_and_protected_ones_stay() {
        // Its image prune ignores `label!` and removes nothing (moby#52334): a prune would
        // report success and free nothing.
        let mut fake = Fake::new(host(), 1);
        fake.containerd_store = true;
        let done = run(&policy(&["keep"]), &fake, &request(Level::UnusedImages, 99)).await;
        let calls = fake.calls();
        assert!(!calls.iter().any(|c| matches!(c, Call::PruneImages { .. })));
        // Containers still go through their prune, whose label filter works.
        assert!(calls.contains(&Call::PruneContainers));
        assert!(calls.contains(&Call::RemoveImage("sha256:dangling".into(), vec![])));
        assert!(calls.contains(&Call::RemoveImage(
            "sha256:app".into(),
            vec!["app:1".into()]
        )));
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::RemoveImage(id, _) if id == "sha256:web"))
        );
        assert!(done.errors.is_empty(), "{:?}", done.errors);
        // Without a protect label no filter is sent, and the prune is used.
        let mut fake = Fake::new(host(), 1);
        fake.containerd_store = true;
        run(&policy(&[]), &fake, &request(Level::DanglingImages, 99)).await;
        assert!(fake.calls().contains(&Call::PruneImages { dangling: true }));
    }

    #[tokio::test]
    async fn volumes_are_removed_one_by_one_from_a_fresh_plan() {
        let fake = Fake::new(host(), 1);
        let run = run(
            &policy(&["keep"]),
            &fake,
            &request(Level::UnusedVolumes, 99),
        )
        .await;
        let calls = fake.calls();
        assert_eq!(calls.last(), Some(&Call::RemoveVolume("data".into())));
        // The fresh plan asked Docker again before removing.
        assert_eq!(calls[calls.len() - 2], Call::DiskUsage);
        assert_eq!(
            run.levels.last().map(|l| l.level),
            Some(Level::UnusedVolumes)
        );
        assert_eq!(run.levels.last().map(|l| l.reclaimed_bytes), Some(GIB));
    }

    #[tokio::test]
    async fn a_conflict_from_docker_is_not_a_failure() {
        let fake = Fake::new(host(), 1)
            .in_use("id-old")
            .gone("sha256:dangling");
        let run = run(
            &policy(&["keep", "pin"]),
            &fake,
            &request(Level::DanglingImages, 99),
        )
        .await;
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        let containers = &run.levels[1];
        assert_eq!((containers.removed, containers.reclaimed_bytes), (0, 0));
        assert_eq!(containers.error, None);
        let images = &run.levels[2];
        assert_eq!((images.removed, images.error.as_deref()), (0, None));
        let report = audit(
            &request(Level::DanglingImages, 99),
            Level::DanglingImages,
            Utc::now(),
            Utc::now(),
            run,
        );
        assert_eq!(report.result, CleanupResult::Success);
    }

    #[tokio::test]
    async fn a_failing_level_fails_the_run_and_the_levels_after_it_still_run() {
        let fake = Fake::new(host(), 1).failing(Call::PruneContainers);
        let req = request(Level::DanglingImages, 99);
        let run = run(&policy(&["keep"]), &fake, &req).await;
        assert_eq!(run.levels.len(), 3);
        assert!(
            run.levels[1]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("500"))
        );
        let report = audit(&req, Level::DanglingImages, Utc::now(), Utc::now(), run);
        assert_eq!(report.result, CleanupResult::Failure);
        assert!(!report.succeeded());
        assert_eq!(report.record.result, CleanupResult::Failure);
        let detail = report.record.detail.unwrap_or_default();
        assert!(
            detail.starts_with("stopped_containers: docker: "),
            "{detail}"
        );
        assert_eq!(report.record.actions[1].action, "stopped_containers");
        assert!(report.record.actions[1].error.is_some());
    }

    #[tokio::test]
    async fn a_daemon_that_cannot_be_asked_fails_the_run_with_its_error() {
        let fake = Fake::new(host(), 1).failing(Call::DiskUsage);
        let req = request(Level::DanglingImages, 99);
        let run = run(&policy(&["keep"]), &fake, &req).await;
        assert_eq!(fake.calls(), [Call::DiskUsage]);
        let report = audit(&req, Level::DanglingImages, Utc::now(), Utc::now(), run);
        assert_eq!(report.result, CleanupResult::Failure);
        assert!(report.plan.is_none() && report.levels.is_empty());
        assert!(report.record.detail.is_some_and(|d| d.contains("boom")));
    }

    #[tokio::test]
    async fn a_dry_run_plans_and_deletes_nothing() {
        let fake = Fake::new(host(), 1);
        let req = Request {
            dry_run: true,
            ..request(Level::DanglingImages, 99)
        };
        let run = run(&policy(&["keep"]), &fake, &req).await;
        assert_eq!(fake.calls(), [Call::DiskUsage]);
        let report = audit(&req, Level::DanglingImages, Utc::now(), Utc::now(), run);
        assert_eq!(report.result, CleanupResult::DryRun);
        assert!(report.succeeded());
        assert_eq!(report.record.result, CleanupResult::DryRun);
        assert_eq!(report.record.reclaimed_bytes, 0);
        // The audit keeps what each level would have freed.
        let estimates: Vec<u64> = report
            .record
            .actions
            .iter()
            .map(|a| a.reclaimed_bytes)
            .collect();
        assert_eq!(estimates, [2 * GIB, GIB, 3 * GIB]);
    }

    #[test]
    fn the_audit_row_names_the_trigger_the_capped_level_and_the_alert() {
        let req = Request {
            alert: Some("fp1,fp2".into()),
            ..Request::new(Trigger::Webhook, Level::UnusedVolumes)
        };
        let run = Run {
            plan: None,
            levels: Vec::new(),
            data_root: None,
            avail_after: None,
            target_bytes: None,
            target: FreeTarget::Percent(15.0),
            target_met: false,
            errors: Vec::new(),
            stopped_before: None,
            logs: None,
        };
        let report = audit(&req, Level::STANDARD, Utc::now(), Utc::now(), run);
        let rec = &report.record;
        assert_eq!(
            (rec.trigger.as_str(), rec.level.as_str()),
            ("webhook", "dangling_images")
        );
        assert_eq!(rec.alert.as_deref(), Some("fp1,fp2"));
        assert_eq!(
            (rec.result.as_str(), rec.detail.as_ref()),
            ("success", None)
        );
        assert_eq!(report.target, "15%");
    }

    /// An engine over a daemon that does not exist, with its store and lock in `dir`.
    fn engine_in(dir: &std::path::Path, state: &std::path::Path) -> Engine {
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("metrics: {e}"));
        let store = Store::new(state, metrics.store_errors.clone());
        let docker = DockerConfig {
            host: format!("unix://{}/no-docker.sock", dir.display()),
            timeout: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(60),
            footprint_interval: Duration::from_secs(3600),
            full_refresh_interval: Duration::from_secs(600),
            df_budget: 0.005,
            top_n: 10,
            tls: None,
            containerd_root: crate::docker::ContainerdRoot::Auto,
        };
        let filesystem = FilesystemConfig {
            mount_points_exclude: regex::Regex::new("^$").unwrap_or_else(|e| panic!("{e}")),
            fs_types_exclude: regex::Regex::new("^$").unwrap_or_else(|e| panic!("{e}")),
            forecast_window: Duration::from_secs(3600),
            stat_timeout: Duration::from_secs(1),
            interval: Duration::from_secs(2),
            host: crate::collect::disk::HostPaths::default(),
        };
        let settings = Settings {
            lock: LockSettings {
                path: dir.join("bilge.lock"),
                timeout: Duration::from_secs(5),
            },
            shutdown_grace: Duration::from_secs(1),
        };
        let collector = Arc::new(Collector::new(docker, filesystem));
        Engine::new(Policy::default(), settings, collector, store, metrics)
    }

    /// A folder of its own for one test.
    fn test_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bilge-engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    /// A series' value in the engine's metrics.
    fn series(e: &Engine, line: &str) -> Option<f64> {
        let text = String::from_utf8(e.metrics.encode()).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
    }

    #[tokio::test]
    async fn a_run_that_cannot_reach_docker_is_written_once_as_a_failure_and_counted() {
        let dir = test_dir("failure");
        let e = engine_in(&dir, &dir.join("bilge.db"));
        let report = e.run(Request::new(Trigger::Cli, Level::BuildCache)).await;
        let Ok(report) = report else {
            panic!("{report:?}")
        };
        assert_eq!(report.result, CleanupResult::Failure);
        let rows = e.store.list_cleanups(10).unwrap_or_default();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            (rows[0].result, rows[0].id),
            (CleanupResult::Failure, report.record_id)
        );
        assert_eq!(
            series(
                &e,
                "bilge_cleanup_runs_total{result=\"failure\",trigger=\"cli\"}"
            ),
            Some(1.0)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_run_whose_row_cannot_be_written_still_counts_in_this_process() {
        let dir = test_dir("unstored");
        let e = engine_in(&dir, std::path::Path::new("/proc/bilge/nope.db"));
        let report = e.run(Request::new(Trigger::Cli, Level::BuildCache)).await;
        assert!(report.is_ok_and(|r| r.record_id.is_none()));
        assert_eq!(
            series(
                &e,
                "bilge_cleanup_runs_total{result=\"failure\",trigger=\"cli\"}"
            ),
            Some(1.0)
        );
        assert!(series(&e, "bilge_store_errors_total").unwrap_or(0.0) >= 2.0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn refusals_of_one_cooldown_window_are_one_row_and_every_one_is_counted() {
        let dir = test_dir("skipped");
        let e = engine_in(&dir, &dir.join("bilge.db"));
        let req = Request::new(Trigger::Webhook, Level::STANDARD);
        for _ in 0..5 {
            e.record_skipped(&req, "the cooldown lasts").await;
        }
        let rows = e.store.list_cleanups(10).unwrap_or_default();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].result, rows[0].count), (CleanupResult::Skipped, 5));
        assert_eq!(
            series(
                &e,
                "bilge_cleanup_runs_total{result=\"skipped\",trigger=\"webhook\"}"
            ),
            Some(5.0)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn after_a_restart_a_row_left_running_is_interrupted_and_holds_the_cooldown() {
        let dir = test_dir("resume");
        let state = dir.join("bilge.db");
        let started = Utc::now() - chrono::Duration::seconds(30);
        {
            let e = engine_in(&dir, &state);
            let rec = CleanupRecord {
                result: CleanupResult::Running,
                ..audit(
                    &Request::new(Trigger::Webhook, Level::STANDARD),
                    Level::STANDARD,
                    started,
                    started,
                    Run::empty(&Request::new(Trigger::Webhook, Level::STANDARD), &e.policy),
                )
                .record
            };
            assert!(e.store.insert_cleanup(&rec).is_ok());
        }
        let e = engine_in(&dir, &state);
        e.resume().await;
        let rows = e.store.list_cleanups(10).unwrap_or_default();
        assert_eq!(rows[0].result, CleanupResult::Interrupted);
        // The default cooldown is 5 minutes: it still has about four and a half left.
        let left = e.cooldown_remaining().unwrap_or_default();
        assert!(
            left > Duration::from_secs(240) && left < Duration::from_secs(271),
            "{left:?}"
        );
        assert_eq!(
            series(
                &e,
                "bilge_cleanup_runs_total{result=\"interrupted\",trigger=\"webhook\"}"
            ),
            Some(1.0)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
