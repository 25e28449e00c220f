//! The executor: plans a cleanup from a fresh look at the daemon, runs the plan level by level
//! through the Docker edge ([`PruneEdge`]), re-measures the data root's filesystem after each
//! level and stops as soon as the free-space target is met. Every run, whatever started it, is
//! written to the audit table and counted in `bilge_cleanup_*`. Whether a run may start at all
//! is [`super::admission`]'s business; what it is labelled with ([`Trigger`], [`CleanupResult`])
//! comes from [`crate::model`].
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
//! and volume prune has no `until` filter (and, before API 1.42, takes named volumes too). An
//! object that is in use or gone by the time it is removed is skipped, not a failure.
//!
//! The engine takes the host's [`Policy`] and nothing else of the configuration.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::admission::Admission;
pub use super::admission::Refusal;
use super::policy::{Level, Plan, Policy, plan};
use crate::collect::disk::FilesystemConfig;
use crate::collect::{Collector, DataRoot};
use crate::docker::{DiskUsage, DockerConfig, PruneEdge, PruneFilters, Reclaimed, Removal};
use crate::format::{FreeTarget, format_duration, human_bytes};
use crate::metrics::Metrics;
pub use crate::model::{CleanupResult, Trigger};
use crate::store::{ActionRecord, CleanupRecord, Store};
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
    /// Docker's client and the data root's measurements.
    collector: Arc<Collector>,
    /// The audit table.
    store: Store,
    /// `bilge_cleanup_*`.
    metrics: Metrics,
    /// The host's policy.
    policy: Policy,
    /// Whether a run may start.
    admission: Admission,
}

impl Engine {
    /// An engine with the host's `policy`, over `collector`'s Docker daemon and data root,
    /// writing to `store` and `metrics`. The host lock file is `<store path>.lock`.
    pub fn new(
        policy: Policy,
        collector: Arc<Collector>,
        store: Store,
        metrics: Metrics,
    ) -> Engine {
        let mut lock = store.path().as_os_str().to_owned();
        lock.push(".lock");
        let admission = Admission::new(PathBuf::from(lock), policy.cooldown);
        Engine {
            collector,
            store,
            metrics,
            policy,
            admission,
        }
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
                r.trigger.is_automatic()
                    && matches!(r.result, CleanupResult::Success | CleanupResult::Failure)
            })
            .and_then(|r| {
                let ago = (Utc::now() - r.started_at).to_std().ok()?;
                Instant::now().checked_sub(ago)
            });
        if let Some(at) = last {
            self.admission.resume_cooldown(at);
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
        let du = self.collector.docker().await?.disk_usage().await?;
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
        let _ticket = self.admission.wait(req.trigger).await;
        self.execute(req).await
    }

    /// Starts `req` in the background if no run is in progress on this host and, for automatic
    /// triggers, the cooldown has passed; otherwise says why not (and starts nothing).
    pub fn try_start(
        self: &Arc<Self>,
        req: Request,
    ) -> std::result::Result<tokio::task::JoinHandle<Report>, Refusal> {
        let ticket = self.admission.try_admit(req.trigger)?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            let _ticket = ticket;
            me.execute(req).await
        }))
    }

    /// Records a request that was not run (`result="skipped"`), with why.
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
        };
        self.metrics
            .cleanup_runs
            .with_label_values(&[req.trigger.as_str(), CleanupResult::Skipped.as_str()])
            .inc();
        self.write(rec).await;
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

    /// Plans and (unless a dry run) executes `req`, then records and counts it.
    async fn execute(&self, req: Request) -> Report {
        let started = Utc::now();
        let real = !req.dry_run;
        if real {
            self.metrics.cleanup_in_progress.set(1);
        }
        let executor = Executor {
            policy: &self.policy,
            metrics: &self.metrics,
        };
        let run = match self.collector.docker().await {
            Ok(api) => executor.run(&api, &*self.collector, &req).await,
            Err(e) => executor.failed(&req, e),
        };
        let mut report = audit(&req, self.policy.cap(req.level), started, Utc::now(), run);
        let rec = &report.record;
        self.metrics
            .cleanup_runs
            .with_label_values(&[req.trigger.as_str(), report.result.as_str()])
            .inc();
        if real {
            self.metrics
                .cleanup_last_run
                .set(rec.finished_at.timestamp_millis() as f64 / 1000.0);
            self.metrics.cleanup_in_progress.set(0);
        }
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
        report.record_id = self.write(report.record.clone()).await;
        report
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
}

impl Done {
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
                error: None,
            },
            Err(e) => Done::failed(e),
        }
    }
}

/// Plans one request and calls the edge for it, level by level: the engine without its
/// admission, store and collector, so that unit tests drive it against a fake edge.
#[derive(Debug, Clone, Copy)]
struct Executor<'a> {
    /// The host's policy.
    policy: &'a Policy,
    /// Where each level's bytes are counted.
    metrics: &'a Metrics,
}

impl Executor<'_> {
    /// The run of a request whose daemon could not be reached: nothing planned, nothing done.
    fn failed(&self, req: &Request, e: Error) -> Run {
        Run {
            plan: None,
            levels: Vec::new(),
            data_root: None,
            avail_after: None,
            target_bytes: None,
            target: req.target_free.unwrap_or(self.policy.target_free),
            target_met: false,
            errors: vec![e.to_string()],
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
        let p = plan(&du, self.policy, req.level, until, Utc::now());
        let data_root = probe.data_root_now().await;
        let mut run = Run {
            plan: None,
            levels: Vec::new(),
            target_bytes: data_root.as_ref().map(|d| target.bytes_for(d.usage.size)),
            avail_after: data_root.as_ref().map(|d| d.usage.avail),
            data_root,
            target,
            target_met: false,
            errors: Vec::new(),
        };
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
                })
                .collect();
        } else {
            self.levels(edge, probe, &du, &p, until, &mut run).await;
        }
        run.plan = Some(p);
        run
    }

    /// Runs the plan's levels in order until the target is met.
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
            let done = self.level(edge, lp.level, until, &image_ids).await;
            self.metrics
                .cleanup_reclaimed
                .with_label_values(&[lp.level.as_str()])
                .inc_by(done.bytes);
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
            });
            run.avail_after = avail.or(run.avail_after);
            if let (Some(t), Some(a)) = (run.target_bytes, avail)
                && a >= t
            {
                run.target_met = true;
                break;
            }
        }
    }

    /// The prune filters every level shares: `until` and, when exact, the protect label.
    fn filters(&self, until: Duration) -> PruneFilters {
        let keep_label = match self.policy.protect_labels.as_slice() {
            [label] => Some(label.clone()),
            _ => None,
        };
        PruneFilters { until, keep_label }
    }

    /// Whether the prune endpoints' filters say exactly what the policy says (see module docs).
    fn prune_is_exact(&self) -> bool {
        self.policy.protect_labels.len() <= 1
    }

    /// Executes one level.
    async fn level(
        &self,
        edge: &impl PruneEdge,
        level: Level,
        until: Duration,
        image_ids: &HashSet<&str>,
    ) -> Done {
        let exact = self.prune_is_exact();
        let mut done = match level {
            Level::BuildCache => Done::pruned(edge.prune_build_cache(until).await, |_| true),
            Level::StoppedContainers if exact => {
                Done::pruned(edge.prune_containers(&self.filters(until)).await, |_| true)
            }
            Level::DanglingImages | Level::UnusedImages if exact => {
                let dangling = level == Level::DanglingImages;
                let r = edge.prune_images(&self.filters(until), dangling).await;
                Done::pruned(r, |id| image_ids.contains(id))
            }
            _ => self.remove_each(edge, level, until).await,
        };
        if matches!(level, Level::DanglingImages | Level::UnusedImages) {
            // BuildKit's records of the removed images' layers are unshared now: release them.
            let released = Done::pruned(edge.prune_build_cache(until).await, |_| true);
            done.bytes += released.bytes;
            if done.error.is_none() {
                done.error = released.error;
            }
        }
        done
    }

    /// Removes the objects of a fresh plan for `level` one by one. An object that is gone or in
    /// use by now is skipped; other errors fail the level (after trying every object).
    async fn remove_each(&self, edge: &impl PruneEdge, level: Level, until: Duration) -> Done {
        let du = match edge.disk_usage().await {
            Ok(du) => du,
            Err(e) => return Done::failed(e),
        };
        let p = plan(&du, self.policy, level, until, Utc::now());
        let Some(lp) = p.level(level) else {
            return Done::default();
        };
        let mut done = Done::default();
        for c in &lp.candidates {
            let r = match level {
                Level::StoppedContainers => edge.remove_container(&c.id).await,
                Level::UnusedVolumes => edge.remove_volume(&c.id).await,
                _ => edge.remove_image(&c.id, &tags(&du, &c.id)).await,
            };
            match r {
                Ok(Removal::Removed) => {
                    done.bytes += c.bytes;
                    done.removed += 1;
                }
                Ok(Removal::Kept) => {}
                Ok(Removal::InUse(why) | Removal::Gone(why)) => {
                    tracing::debug!(object = %c.name, error = %why, "skipped: in use or gone by now");
                }
                Err(e) => {
                    tracing::warn!(object = %c.name, error = %e, "cannot remove");
                    done.error.get_or_insert_with(|| format!("{}: {e}", c.name));
                }
            }
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

/// The report of `run` for `req` (capped to `level`), with its audit row: a dry run records
/// the estimates and reclaims nothing; any error makes the run a failure. Pure.
fn audit(
    req: &Request,
    level: Level,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    run: Run,
) -> Report {
    let result = if req.dry_run {
        CleanupResult::DryRun
    } else if run.errors.is_empty() {
        CleanupResult::Success
    } else {
        CleanupResult::Failure
    };
    let actions = run
        .levels
        .iter()
        .map(|l| ActionRecord {
            action: l.level.as_str().into(),
            reclaimed_bytes: if req.dry_run {
                l.estimated_bytes
            } else {
                l.reclaimed_bytes
            },
            removed: l.removed,
            error: l.error.clone(),
        })
        .collect();
    let reclaimed_bytes = if req.dry_run {
        0
    } else {
        run.levels.iter().map(|l| l.reclaimed_bytes).sum()
    };
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
            detail: (!run.errors.is_empty()).then(|| run.errors.join("; ")),
        },
        record_id: None,
        plan: run.plan,
        levels: run.levels,
        data_root: run.data_root,
        avail_after: run.avail_after,
        target_bytes: run.target_bytes,
        target: run.target.to_string(),
        target_met: run.target_met,
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
                in_use: HashSet::new(),
                gone: HashSet::new(),
            }
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

        async fn prune_build_cache(&self, _until: Duration) -> Result<Reclaimed> {
            let bytes = self.answer(Call::PruneBuildCache)?;
            let deleted = self.du.build_cache.iter().map(|r| r.id.clone()).collect();
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

        async fn remove_container(&self, id: &str) -> Result<Removal> {
            self.removal(Call::RemoveContainer(id.into()), id)
        }

        async fn remove_volume(&self, name: &str) -> Result<Removal> {
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
                path: "/var/lib/docker".into(),
                mountpoint: "/".into(),
                usage: Usage {
                    size: 100 * GIB,
                    free: avail,
                    avail,
                    ..Usage::default()
                },
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
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("metrics: {e}"));
        Executor {
            policy,
            metrics: &metrics,
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
        let fake = Fake::new(host(), 10)
            .frees(Call::PruneBuildCache, 2)
            .frees(Call::PruneContainers, 1)
            .frees(Call::PruneImages { dangling: true }, 3);
        let run = run(&policy(&["keep"]), &fake, &request(Level::UnusedImages, 15)).await;
        assert_eq!(
            fake.calls(),
            [
                Call::DiskUsage,
                Call::PruneBuildCache,
                Call::PruneContainers,
                Call::PruneImages { dangling: true },
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
    async fn each_levels_bytes_are_counted_under_its_action() {
        let fake = Fake::new(host(), 1)
            .frees(Call::PruneBuildCache, 2)
            .frees(Call::PruneContainers, 1);
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("metrics: {e}"));
        let policy = policy(&["keep"]);
        let executor = Executor {
            policy: &policy,
            metrics: &metrics,
        };
        executor
            .run(&fake, &fake, &request(Level::StoppedContainers, 99))
            .await;
        let counted = |action: &str| metrics.cleanup_reclaimed.with_label_values(&[action]).get();
        assert_eq!(counted("build_cache"), 2 * GIB);
        assert_eq!(counted("stopped_containers"), GIB);
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
}
