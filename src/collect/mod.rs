//! Background collectors and the snapshot they keep. `/metrics`, the status page and the cleanup
//! planner read the last snapshot; nothing in a request path waits on Docker.
//!
//! Four loops: filesystems every couple of seconds (statvfs is cheap, and watermarks need to react
//! fast); Docker every `--docker.refresh-interval`, asking only what changed ([`changes`]); the
//! Docker event stream that says what changed; and the footprint (a walk of the storage roots,
//! [`footprint`]) every `--docker.footprint-interval`. Each logs, counts and retries; none dies.
//!
//! Each collection swaps its part of the [`Snapshot`] in whole ([`SnapshotCell::update`]); the
//! exported families are built from the snapshot when a scrape asks ([`export`]), so the
//! collectors own no metric and need no registry.

pub mod changes;
pub mod disk;
pub mod docker;
pub mod export;
pub mod footprint;
pub mod forecast;
pub mod trend;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::docker::{DiskUsage, DockerApi, DockerConfig, DockerInfo};
use crate::sync::{lock, read, write};
use crate::{Error, Result};
use disk::{Filesystem, FilesystemConfig, Statter, Usage};
use docker::{ContainerLog, DockerSummary};
use footprint::{Footprint, Tree};

/// From this many Docker objects on, a collection is summarized on a blocking thread.
const OFFLOAD_OBJECTS: usize = 200;

/// How long the daemon's `/info` and `/version` answers are reused (each costs ~6 ms on Docker
/// 20.10, which runs `runc --version` to answer; BENCHMARKS.md, section 2).
const INFO_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);
/// The most image uses held between two [`Collector::take_image_uses`] (new keys beyond it wait
/// for the next event that names them).
const MAX_PENDING_USES: usize = 10_000;

/// What a storage root of Docker's holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Docker's data root (`DockerRootDir`).
    #[default]
    DataRoot,
    /// The root of a containerd that runs on its own and holds the containerd image store's
    /// images (content and snapshots), on another filesystem than the data root.
    ContainerdRoot,
}

impl Role {
    /// The `role` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::DataRoot => "data_root",
            Role::ContainerdRoot => "containerd_root",
        }
    }
}

/// The filesystem that holds one of Docker's storage roots: the data root, or containerd's root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataRoot {
    /// Which root this is.
    pub role: Role,
    /// Docker's `DockerRootDir`, or containerd's root.
    pub path: String,
    /// The mount point of the filesystem holding it.
    pub mountpoint: String,
    /// Its figures.
    #[serde(flatten)]
    pub usage: Usage,
    /// Seconds until it is full on the fitted line of its recent samples ([`forecast`]):
    /// `+Inf` when it is not filling, `None` until there are enough samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_full_seconds: Option<f64>,
}

/// How a collector's last run went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollectorRun {
    /// Whether it succeeded.
    pub ok: bool,
    /// How long it took.
    pub seconds: f64,
}

/// The last collected state of the host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Every included filesystem.
    pub filesystems: Vec<Filesystem>,
    /// Docker's data root filesystem, once the daemon told us where it is.
    pub data_root: Option<DataRoot>,
    /// containerd's root filesystem, when the containerd image store keeps the images there on
    /// another filesystem than the data root (see [`crate::docker::ContainerdRoot`]).
    pub containerd_root: Option<DataRoot>,
    /// The last good Docker summary (kept while the daemon is away).
    pub docker: Option<DockerSummary>,
    /// The last good raw disk usage, for the cleanup planner.
    #[serde(skip)]
    pub disk_usage: Option<Arc<DiskUsage>>,
    /// Whether the last Docker collection succeeded.
    pub docker_up: bool,
    /// Why the last Docker collection failed.
    pub docker_error: Option<String>,
    /// When Docker was last collected successfully.
    pub docker_last_success: Option<DateTime<Utc>>,
    /// When filesystems were last collected.
    pub filesystems_last_success: Option<DateTime<Utc>>,
    /// The last filesystem collection, once one ran.
    #[serde(skip)]
    pub filesystems_run: Option<CollectorRun>,
    /// The last Docker collection, once one ran.
    #[serde(skip)]
    pub docker_run: Option<CollectorRun>,
    /// Each storage filesystem's last measured footprint ([`footprint`]), once one was measured.
    pub footprints: Vec<Footprint>,
    /// When the footprint was last measured.
    pub footprint_last_success: Option<DateTime<Utc>>,
    /// The last footprint measurement, once one ran.
    #[serde(skip)]
    pub footprint_run: Option<CollectorRun>,
    /// Docker collections so far by what they asked.
    #[serde(skip)]
    pub docker_collections: Collections,
}

/// Docker collections by what they asked ([`changes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collections {
    /// All of `/system/df`.
    pub full: u64,
    /// Only what events said changed.
    pub partial: u64,
    /// Nothing: nothing changed.
    pub unchanged: u64,
    /// Periodic collections that left a costly answer for later (`--docker.df-budget`).
    pub deferred: u64,
}

/// The shared, current snapshot. Writers swap a changed copy in whole; readers get the one that
/// was current when they asked and keep it as long as they need, without holding a lock.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCell(Arc<RwLock<Arc<Snapshot>>>);

impl Snapshot {
    /// Docker's storage filesystems: the data root, then containerd's root when separate.
    pub fn storage_roots(&self) -> impl Iterator<Item = &DataRoot> {
        self.data_root.iter().chain(self.containerd_root.iter())
    }

    /// The storage filesystem with the least room ([`tightest`]).
    pub fn tightest_root(&self) -> Option<&DataRoot> {
        tightest(self.storage_roots())
    }
}

/// Of Docker's storage filesystems, the one with the smallest share available (pure): the one
/// that fills first, which the watermarks, `target_free` and `--min-free` measure. On a tie,
/// the first (the data root).
pub fn tightest<'a>(roots: impl Iterator<Item = &'a DataRoot>) -> Option<&'a DataRoot> {
    let share = |d: &DataRoot| {
        if d.usage.size == 0 {
            1.0
        } else {
            d.usage.avail as f64 / d.usage.size as f64
        }
    };
    roots.fold(None, |best: Option<&DataRoot>, d| match best {
        Some(b) if share(b) <= share(d) => Some(b),
        _ => Some(d),
    })
}

impl SnapshotCell {
    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        read(&self.0).clone()
    }

    /// Changes the snapshot through `f` and makes the result current, all under the write lock,
    /// so concurrent updates never lose one another and no reader sees a change half made.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut current = write(&self.0);
        f(Arc::make_mut(&mut current));
    }
}

/// The collectors and their shared snapshot.
#[derive(Debug)]
pub struct Collector {
    docker_cfg: DockerConfig,
    fs_cfg: FilesystemConfig,
    snapshot: SnapshotCell,
    statter: Statter,
    docker: tokio::sync::Mutex<Option<DockerApi>>,
    /// The daemon's info, asked once per connection (it changes only when the daemon restarts,
    /// which breaks the connection) and refreshed after [`INFO_MAX_AGE`].
    info: tokio::sync::Mutex<Option<(Instant, DockerInfo)>>,
    log_paths: Mutex<HashMap<String, Option<String>>>,
    data_root_path: RwLock<Option<String>>,
    /// containerd's root, when the daemon's images are there ([`crate::docker::ContainerdRoot`]).
    containerd_root_path: RwLock<Option<String>>,
    fs_done: AtomicBool,
    docker_done: AtomicBool,
    /// What Docker's events said changed since the last collection ([`changes`]).
    pending: Mutex<changes::Pending>,
    /// Images Docker's events said were used, not yet taken by [`Collector::take_image_uses`]
    /// (at most [`MAX_PENDING_USES`] keys).
    image_uses: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Each storage root's samples for its time-to-full ([`forecast`]), by role.
    forecasts: Mutex<HashMap<&'static str, forecast::Forecast>>,
    /// The forecast's clock.
    epoch: Instant,
    /// Each storage root's recent available space for the status page's chart ([`trend`]),
    /// by role.
    trends: Mutex<HashMap<&'static str, trend::Trend>>,
    /// When `/system/df` was last asked in full.
    last_full: Mutex<Option<Instant>>,
    /// Until when the daemon's costly answers (any `/system/df`) are held back, after the last
    /// one ([`changes::Budget`]).
    costly_after: Mutex<Option<Instant>>,
    /// The storage filesystems' used bytes at the last Docker collection ([`changes::moved`]).
    used_at_collection: Mutex<Vec<(Role, u64)>>,
    data_root_tx: tokio::sync::watch::Sender<Option<DataRoot>>,
}

impl Collector {
    /// A collector with an empty snapshot.
    pub fn new(docker: DockerConfig, filesystem: FilesystemConfig) -> Collector {
        Collector {
            docker_cfg: docker,
            fs_cfg: filesystem,
            snapshot: SnapshotCell::default(),
            statter: Statter::default(),
            docker: tokio::sync::Mutex::new(None),
            info: tokio::sync::Mutex::new(None),
            log_paths: Mutex::new(HashMap::new()),
            data_root_path: RwLock::new(None),
            containerd_root_path: RwLock::new(None),
            fs_done: AtomicBool::new(false),
            docker_done: AtomicBool::new(false),
            pending: Mutex::new(changes::Pending::default()),
            image_uses: Mutex::new(HashMap::new()),
            forecasts: Mutex::new(HashMap::new()),
            trends: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            last_full: Mutex::new(None),
            costly_after: Mutex::new(None),
            used_at_collection: Mutex::new(Vec::new()),
            data_root_tx: tokio::sync::watch::channel(None).0,
        }
    }

    /// The last snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load()
    }

    /// The families exported from this collector's snapshots, for a registry.
    pub fn families(&self) -> prometheus::Result<export::SnapshotFamilies> {
        export::SnapshotFamilies::new(self.snapshot.clone())
    }

    /// True once both collectors have finished their first run (successful or not).
    pub fn ready(&self) -> bool {
        self.fs_done.load(Ordering::Acquire) && self.docker_done.load(Ordering::Acquire)
    }

    /// Receives the data root's figures after every filesystem collection (for watermarks).
    pub fn watch_data_root(&self) -> tokio::sync::watch::Receiver<Option<DataRoot>> {
        self.data_root_tx.subscribe()
    }

    /// Where the host's files are (`--path.rootfs`).
    pub fn host_paths(&self) -> &disk::HostPaths {
        &self.fs_cfg.host
    }

    /// The Docker settings this collector runs with.
    pub fn docker_config(&self) -> &DockerConfig {
        &self.docker_cfg
    }

    /// A connected Docker client, connecting (and negotiating) when there is none.
    pub async fn docker(&self) -> Result<DockerApi> {
        let mut guard = self.docker.lock().await;
        if let Some(api) = guard.as_ref() {
            return Ok(api.clone());
        }
        let api = DockerApi::connect(&self.docker_cfg).await?;
        *guard = Some(api.clone());
        Ok(api)
    }

    /// Forgets the Docker client (and its info) so the next call reconnects and renegotiates.
    async fn reset_docker(&self) {
        *self.docker.lock().await = None;
        *self.info.lock().await = None;
    }

    /// The recent available space of the storage root of `role`, oldest first ([`trend`]).
    pub fn trend(&self, role: Role) -> Vec<(i64, u64)> {
        lock(&self.trends)
            .get(role.as_str())
            .map(trend::Trend::points)
            .unwrap_or_default()
    }

    /// Whether the daemon's last info said it keeps images in the containerd image store
    /// (false before any, or while a collection holds the cache).
    pub fn containerd_store(&self) -> bool {
        self.info
            .try_lock()
            .ok()
            .and_then(|g| g.as_ref().map(|(_, i)| i.containerd_store))
            .unwrap_or(false)
    }

    /// The daemon's info, from the cache while it is younger than [`INFO_MAX_AGE`].
    async fn cached_info(&self, api: &DockerApi) -> Result<DockerInfo> {
        let mut guard = self.info.lock().await;
        if let Some((at, info)) = guard.as_ref()
            && at.elapsed() < INFO_MAX_AGE
        {
            return Ok(info.clone());
        }
        let info = api.info().await?;
        *guard = Some((Instant::now(), info.clone()));
        Ok(info)
    }

    /// Stats Docker's storage filesystems (the data root, and containerd's root when the daemon
    /// keeps its images there) now, updating the snapshot. Returns the tightest
    /// ([`tightest`]), which is also sent to [`Collector::watch_data_root`].
    pub async fn measure_data_root(&self) -> Option<DataRoot> {
        let path = read(&self.data_root_path).clone()?;
        let data_root = self.measure_root(Role::DataRoot, path).await;
        let containerd_path = read(&self.containerd_root_path).clone();
        let containerd = match containerd_path {
            Some(p) => self.measure_root(Role::ContainerdRoot, p).await,
            None => None,
        };
        // containerd's root counts as its own only on another filesystem than the data root.
        let containerd = containerd.filter(|c| {
            data_root
                .as_ref()
                .is_none_or(|d| d.mountpoint != c.mountpoint)
        });
        {
            let mut trends = lock(&self.trends);
            let now = Utc::now().timestamp();
            for r in data_root.iter().chain(containerd.iter()) {
                trends
                    .entry(r.role.as_str())
                    .or_default()
                    .add(now, r.usage.avail);
            }
        }
        let (data_root, containerd) = {
            let mut forecasts = lock(&self.forecasts);
            let mut predict = |root: Option<DataRoot>| {
                root.map(|mut r| {
                    let f = forecasts
                        .entry(r.role.as_str())
                        .or_insert_with(|| forecast::Forecast::new(self.fs_cfg.forecast_window));
                    f.add(self.epoch.elapsed().as_secs_f64(), r.usage.avail);
                    r.predicted_full_seconds = f.seconds_to_full();
                    r
                })
            };
            (predict(data_root), predict(containerd))
        };
        let tightest = tightest(data_root.iter().chain(containerd.iter())).cloned();
        self.snapshot.update(|s| {
            if data_root.is_some() {
                s.data_root = data_root.clone();
            }
            s.containerd_root = containerd.clone();
        });
        if tightest.is_some() {
            self.data_root_tx.send_replace(tightest.clone());
        }
        tightest
    }

    /// Stats one storage root: its filesystem's figures and mount point.
    async fn measure_root(&self, role: Role, path: String) -> Option<DataRoot> {
        let host = &self.fs_cfg.host;
        let usage = match self
            .statter
            .stat(&host.file(Path::new(&path)), self.fs_cfg.stat_timeout)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(path = %path, role = role.as_str(), error = %e, "cannot stat a Docker storage root");
                return None;
            }
        };
        let mut usage = usage;
        let (mounts, table) = host
            .read_mounts()
            .unwrap_or((Vec::new(), disk::TableOf::Own));
        let mount = disk::mount_of(&mounts, Path::new(&path));
        // As for every filesystem: the table's read-only flag, not this process's view of it
        // (the data root is often bind-mounted `:ro` into bilge's container).
        if let Some(m) = mount {
            usage.readonly = m.readonly_in(table);
        }
        let mountpoint = mount
            .map(|m| m.mountpoint.clone())
            .unwrap_or_else(|| path.clone());
        Some(DataRoot {
            role,
            path,
            mountpoint,
            usage,
            predicted_full_seconds: None,
        })
    }

    /// Measures the data root now, first asking the daemon where it is when that is not known
    /// yet (a `bilge clean` has not collected anything before).
    pub async fn data_root_now(&self) -> Option<DataRoot> {
        if self.data_root_path().is_none() {
            let info = match self.docker().await {
                Ok(api) => api.info().await,
                Err(e) => Err(e),
            };
            match info {
                Ok(info) if !info.data_root.is_empty() => {
                    self.learn_roots(&info);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot ask Docker for its data root"),
            }
        }
        self.measure_data_root().await
    }

    /// One filesystem collection (all mounts, then the data root).
    pub async fn collect_filesystems(&self) -> Result<()> {
        let start = Instant::now();
        let result = disk::collect(&self.fs_cfg, &self.statter).await;
        let ok = match result {
            Ok(list) => {
                self.snapshot.update(|s| {
                    s.filesystems = list;
                    s.filesystems_last_success = Some(Utc::now());
                });
                Ok(())
            }
            Err(e) => Err(Error::io("reading /proc/self/mountinfo", e)),
        };
        self.measure_data_root().await;
        let run = CollectorRun {
            ok: ok.is_ok(),
            seconds: start.elapsed().as_secs_f64(),
        };
        self.snapshot.update(|s| s.filesystems_run = Some(run));
        self.fs_done.store(true, Ordering::Release);
        ok
    }

    /// The cache of container log paths (a panic elsewhere cannot leave it half-written).
    fn log_paths(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        lock(&self.log_paths)
    }

    /// The log paths already known, to be measured while `/system/df` is in flight.
    fn known_log_paths(&self) -> Vec<(String, String)> {
        self.log_paths()
            .iter()
            .filter_map(|(id, p)| Some((id.clone(), p.clone()?)))
            .collect()
    }

    /// Sizes of every container's log files. `sizes` holds those of the log paths known before
    /// this collection; the others are measured now, those of containers not seen yet looked up
    /// first (once per container). A container that never started has no log file nor path yet:
    /// it is looked up once it has started (its start event's inspection tells the path).
    async fn container_logs(
        &self,
        api: &DockerApi,
        du: &DiskUsage,
        mut sizes: HashMap<String, u64>,
    ) -> Vec<ContainerLog> {
        let (missing, unmeasured): (Vec<String>, Vec<(String, String)>) = {
            let cache = self.log_paths();
            let missing = du
                .containers
                .iter()
                .filter(|c| c.state != "created" && !cache.contains_key(&c.id))
                .map(|c| c.id.clone())
                .collect();
            let unmeasured = du
                .containers
                .iter()
                .filter(|c| !sizes.contains_key(&c.id))
                .filter_map(|c| Some((c.id.clone(), cache.get(&c.id)?.clone()?)))
                .collect();
            (missing, unmeasured)
        };
        let found: Vec<(String, Option<String>)> = futures_util::stream::iter(missing)
            .map(|id| async move {
                let p = api.log_path(&id).await.ok().flatten();
                (id, p)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let new_paths: Vec<(String, String)> = found
            .iter()
            .filter_map(|(id, p)| p.clone().map(|p| (id.clone(), p)))
            .chain(unmeasured)
            .collect();
        {
            let mut cache = self.log_paths();
            cache.extend(found);
            let live: std::collections::HashSet<&str> =
                du.containers.iter().map(|c| c.id.as_str()).collect();
            cache.retain(|id, _| live.contains(id.as_str()));
        }
        sizes.extend(log_sizes(&self.fs_cfg.host, new_paths).await);
        du.containers
            .iter()
            .map(|c| ContainerLog {
                container: c.name.clone(),
                bytes: sizes.get(&c.id).copied().unwrap_or(0),
            })
            .collect()
    }

    /// One Docker collection: info, all of `/system/df`, log sizes. On failure the last good
    /// figures stay in the snapshot, marked down.
    pub async fn collect_docker(&self) -> Result<DockerSummary> {
        self.collect_docker_as(false).await
    }

    /// One periodic Docker collection: what changed since the last one ([`changes`]), all of it
    /// when a full one is due.
    pub async fn refresh_docker(&self) -> Result<DockerSummary> {
        self.collect_docker_as(true).await
    }

    async fn collect_docker_as(&self, periodic: bool) -> Result<DockerSummary> {
        let start = Instant::now();
        let result = self.collect_docker_inner(periodic).await;
        if result.is_err() {
            self.reset_docker().await;
            lock(&self.pending).resync = true;
        }
        let run = CollectorRun {
            ok: result.is_ok(),
            seconds: start.elapsed().as_secs_f64(),
        };
        self.snapshot.update(|s| {
            s.docker_run = Some(run);
            match &result {
                Ok((summary, du, asked, deferred)) => {
                    match asked {
                        changes::Refresh::Full => s.docker_collections.full += 1,
                        changes::Refresh::Partial(_) => s.docker_collections.partial += 1,
                        changes::Refresh::Unchanged => s.docker_collections.unchanged += 1,
                    }
                    if *deferred {
                        s.docker_collections.deferred += 1;
                    }
                    s.docker = Some(summary.clone());
                    s.disk_usage = Some(du.clone());
                    s.docker_up = true;
                    s.docker_error = None;
                    s.docker_last_success = Some(Utc::now());
                }
                Err(e) => {
                    s.docker_up = false;
                    s.docker_error = Some(e.to_string());
                }
            }
        });
        self.docker_done.store(true, Ordering::Release);
        // A large collection's answer (or a partial one's merged copy) and the figures it
        // replaced are freed by now: hand their pages back, so they do not stay resident.
        if let Ok((_, du, asked, _)) = &result
            && *asked != changes::Refresh::Unchanged
            && du.objects() >= OFFLOAD_OBJECTS
        {
            let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
        }
        result.map(|(summary, ..)| summary)
    }

    async fn collect_docker_inner(
        &self,
        periodic: bool,
    ) -> Result<(DockerSummary, Arc<DiskUsage>, changes::Refresh, bool)> {
        let api = self.docker().await?;
        let info: DockerInfo = self.cached_info(&api).await?;
        let first_root = self.learn_roots(&info);
        if first_root {
            self.measure_data_root().await;
        }
        let now = self.snapshot();
        let last = now.disk_usage.clone();
        let every = self.docker_cfg.full_refresh_interval;
        // The used bytes of each storage filesystem now, and whether any moved since the last
        // collection further than events explain.
        let used: Vec<(Role, u64, u64)> = now
            .storage_roots()
            .map(|r| {
                (
                    r.role,
                    r.usage.size.saturating_sub(r.usage.free),
                    r.usage.size,
                )
            })
            .collect();
        let moved = {
            let then = lock(&self.used_at_collection);
            used.iter().any(|(role, u, size)| {
                then.iter()
                    .find(|(r, _)| r == role)
                    .is_some_and(|(_, t)| changes::moved(*t, *u, *size))
            })
        };
        let (asked, deferred) = {
            let full_due =
                every.is_zero() || lock(&self.last_full).is_none_or(|t| t.elapsed() >= every);
            let held = lock(&self.costly_after).is_some_and(|t| Instant::now() < t);
            let mut pending = lock(&self.pending);
            // A disk that moved further than events explain: changes were missed.
            pending.resync |= moved;
            let situation = changes::Situation {
                have_last: last.is_some(),
                full_due,
                typed: crate::docker::df_types_supported(api.api_version()),
                containerd: info.containerd_store,
                held,
            };
            let asked = match periodic {
                true => changes::decide(situation, &pending),
                false => changes::Refresh::Full,
            };
            // Whether the budget left a costly answer for later.
            let deferred = !asked.costly()
                && held
                && changes::decide(
                    changes::Situation {
                        held: false,
                        ..situation
                    },
                    &pending,
                )
                .costly();
            // Taken before asking: what changes meanwhile is noted for the next collection.
            pending.answered(&asked);
            (asked, deferred)
        };
        // The known containers' logs are measured while the daemon computes `/system/df`.
        let (du, sizes) = tokio::join!(
            self.ask(&api, &asked, last),
            log_sizes(&self.fs_cfg.host, self.known_log_paths())
        );
        let du = du?;
        if asked == changes::Refresh::Full {
            *lock(&self.last_full) = Some(Instant::now());
        }
        *lock(&self.used_at_collection) = used.iter().map(|(r, u, _)| (*r, *u)).collect();
        // Build cache in use belongs to a build still running: its records change when the build
        // ends, with no event to say so (the image's tag event comes first). Ask again next time.
        if du.build_cache.iter().any(|b| b.in_use) {
            lock(&self.pending)
                .dirty
                .insert(crate::docker::DfType::BuildCache);
        }
        let logs = self.container_logs(&api, &du, sizes).await;
        let top_n = self.docker_cfg.top_n;
        let large = du.objects() >= OFFLOAD_OBJECTS;
        crate::docker::offload(large, "summarizing /system/df", move || {
            let summary = docker::summarize(info, &du, &logs, Utc::now(), top_n);
            (summary, du, asked, deferred)
        })
        .await
    }

    /// Holds the next costly answer back after one that took `took` ([`changes::Budget`]). A
    /// failed answer (a daemon away or frozen) sets no pause: the figures after it come as soon
    /// as the daemon is back.
    fn costly_answered(&self, took: std::time::Duration) {
        let budget = changes::Budget {
            share: self.docker_cfg.df_budget,
        };
        *lock(&self.costly_after) = Some(Instant::now() + budget.pause_after(took));
    }

    /// Asks the daemon what `asked` says, merged into the `last` figures for a partial one.
    async fn ask(
        &self,
        api: &DockerApi,
        asked: &changes::Refresh,
        last: Option<Arc<DiskUsage>>,
    ) -> Result<Arc<DiskUsage>> {
        let (p, last) = match (asked, last) {
            // Nothing changed, but the daemon must still answer: an open event stream does not
            // tell a quiet daemon from a frozen one.
            (changes::Refresh::Unchanged, Some(last)) => {
                api.ping().await?;
                return Ok(last);
            }
            (changes::Refresh::Partial(p), Some(last)) => (p, last),
            _ => {
                let asking = Instant::now();
                let du = api.disk_usage().await?;
                self.costly_answered(asking.elapsed());
                return Ok(Arc::new(du));
            }
        };
        let typed = match p.df.is_empty() {
            true => None,
            false => {
                let asking = Instant::now();
                let du = api.disk_usage_of(&p.df).await?;
                self.costly_answered(asking.elapsed());
                Some(du)
            }
        };
        let containers = match p.containers {
            true => Some(api.container_list().await?),
            false => None,
        };
        let mut inspected = Vec::with_capacity(p.measure.len());
        for id in &p.measure {
            let found = api.container_inspect(id).await?;
            // Its log path is known from the start on: learn it here, not by another inspection.
            if let Some((c, Some(path))) = &found {
                self.log_paths().insert(c.id.clone(), Some(path.clone()));
            }
            inspected.push((id.clone(), found.map(|(c, _)| c)));
        }
        let volumes = match p.volumes {
            true => Some(api.volume_list().await?),
            false => None,
        };
        let df = p.df.clone();
        let large = last.objects() >= OFFLOAD_OBJECTS;
        crate::docker::offload(large, "merging Docker's changes", move || {
            Arc::new(changes::merge(
                &last, &df, typed, containers, inspected, volumes,
            ))
        })
        .await
    }

    /// Measures the footprint of each storage filesystem now ([`footprint`]): a walk of the data
    /// root (and containerd's root) on a thread of its own at idle priority, attributed with the
    /// last good `/system/df`. Slow on a big data root; the last good figures stay on failure.
    pub async fn collect_footprints(&self) -> Result<Vec<Footprint>> {
        let start = Instant::now();
        let result = self.collect_footprints_inner().await;
        let run = CollectorRun {
            ok: result.is_ok(),
            seconds: start.elapsed().as_secs_f64(),
        };
        let result = result.map(|mut fps| {
            for f in &mut fps {
                f.seconds = run.seconds;
            }
            fps
        });
        self.snapshot.update(|s| {
            s.footprint_run = Some(run);
            if let Ok(fps) = &result {
                s.footprints = fps.clone();
                s.footprint_last_success = Some(Utc::now());
            }
        });
        result
    }

    async fn collect_footprints_inner(&self) -> Result<Vec<Footprint>> {
        let s = self.snapshot();
        let (Some(du), Some(summary), Some(data_root)) = (&s.disk_usage, &s.docker, &s.data_root)
        else {
            return Err(Error::Other(
                "no footprint before a good Docker collection and data root".into(),
            ));
        };
        let driver = summary.info.storage_driver.clone();
        let host = self.fs_cfg.host.clone();
        // What to walk on each filesystem: the data root, and containerd's root on its own
        // filesystem or beside the data root on the same one (unless one holds the other).
        let mut plans = vec![(
            Role::DataRoot,
            data_root.mountpoint.clone(),
            vec![(Tree::DataRoot, data_root.path.clone())],
        )];
        let containerd = read(&self.containerd_root_path).clone();
        if let Some(c) = containerd {
            let (a, b) = (Path::new(&c), Path::new(&data_root.path));
            if !a.starts_with(b) && !b.starts_with(a) {
                match &s.containerd_root {
                    Some(cr) => plans.push((
                        Role::ContainerdRoot,
                        cr.mountpoint.clone(),
                        vec![(Tree::ContainerdRoot, c)],
                    )),
                    None if std::fs::symlink_metadata(host.file(a)).is_ok() => {
                        plans[0].2.push((Tree::ContainerdRoot, c));
                    }
                    None => {}
                }
            }
        }
        let mut known = footprint::Known {
            driver: driver.clone(),
            layers: None,
            containers: du.containers.iter().map(|c| c.id.clone()).collect(),
            volumes: du.volumes.iter().map(|v| v.name.clone()).collect(),
            now: None,
        };
        let host_root = host.file(Path::new(&data_root.path));
        let trees: Vec<Vec<(Tree, PathBuf)>> = plans
            .iter()
            .map(|(_, _, t)| {
                t.iter()
                    .map(|(tree, p)| (*tree, host.file(Path::new(p))))
                    .collect()
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("bilge-footprint".into())
            .spawn(move || {
                footprint::lower_priority();
                let layers = if footprint::LAYER_DRIVERS.contains(&driver.as_str()) {
                    footprint::read_layers(&host_root, &driver)
                } else {
                    Some(Default::default())
                };
                let walked: Vec<_> = trees.iter().map(|t| footprint::walk(t, &stop)).collect();
                let _ = tx.send((layers, walked, std::time::SystemTime::now()));
            })
            .map_err(|e| Error::Other(format!("cannot start the footprint walk: {e}")))?;
        let (layers, walked, ended) = rx
            .await
            .map_err(|_| Error::Other("the footprint walk ended without an answer".into()))?;
        known.layers = layers;
        known.now = Some(ended);
        // The filesystems as they are now that the walk is done.
        let now = self.snapshot();
        let mut out = Vec::new();
        for ((role, mountpoint, roots), walked) in plans.into_iter().zip(walked) {
            let walked =
                walked.map_err(|e| Error::Other(format!("cannot walk {}: {e}", roots[0].1)))?;
            let used = now
                .storage_roots()
                .find(|r| r.role == role)
                .map(|r| r.usage.size.saturating_sub(r.usage.free))
                .unwrap_or(0);
            out.push(footprint::footprint(
                role,
                &mountpoint,
                &roots,
                &walked,
                &known,
                used,
            ));
        }
        Ok(out)
    }

    /// Runs the four loops until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let fs = {
            let me = self.clone();
            let cancel = cancel.clone();
            async move {
                let mut tick = tokio::time::interval(me.fs_cfg.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {
                            if let Err(e) = me.collect_filesystems().await {
                                tracing::warn!(error = %e, "filesystem collection failed");
                            }
                        }
                    }
                }
            }
        };
        let dk = {
            let me = self.clone();
            let cancel = cancel.clone();
            async move {
                let mut tick = tokio::time::interval(me.docker_cfg.refresh_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut was_up = true;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {
                            match me.refresh_docker().await {
                                Ok(_) => {
                                    if !was_up {
                                        tracing::info!(host = %me.docker_cfg.host, "Docker daemon reachable again");
                                    }
                                    was_up = true;
                                }
                                Err(e) => {
                                    if was_up {
                                        tracing::warn!(host = %me.docker_cfg.host, error = %e,
                                            "Docker collection failed: bilge_docker_up is 0, the last good Docker figures (if any) stay, and bilge retries every --docker.refresh-interval");
                                    } else {
                                        tracing::debug!(error = %e, "Docker still unreachable");
                                    }
                                    was_up = false;
                                }
                            }
                        }
                    }
                }
            }
        };
        let ev = {
            let me = self.clone();
            let cancel = cancel.clone();
            async move { me.follow_changes(cancel).await }
        };
        let fp = self.footprint_loop(cancel);
        tokio::join!(fs, dk, ev, fp);
    }

    /// Follows Docker's events, noting what changed for the next periodic collection
    /// ([`changes`]). Whenever the stream is (re)opened or ends, the next collection is full:
    /// what happened outside the stream is not known. The same events tell which images were
    /// used ([`Collector::take_image_uses`]), so the stream is followed even when every
    /// collection is full.
    async fn follow_changes(&self, cancel: CancellationToken) {
        loop {
            if let Ok(api) = self.docker().await {
                let since = std::time::SystemTime::now();
                lock(&self.pending).resync = true;
                let mut events = std::pin::pin!(api.storage_events(since).ready_chunks(256));
                loop {
                    let batch = tokio::select! {
                        _ = cancel.cancelled() => return,
                        batch = events.next() => batch,
                    };
                    let Some(batch) = batch else { break };
                    let mut pending = lock(&self.pending);
                    let mut ended = false;
                    for e in batch {
                        match e {
                            Ok(e) => {
                                let kind = e.typ.map(|t| t.to_string()).unwrap_or_default();
                                let id = e.actor.as_ref().and_then(|a| a.id.as_deref());
                                let action = e.action.as_deref().unwrap_or("");
                                pending.note(&kind, action, id.unwrap_or(""));
                                let attr = e
                                    .actor
                                    .as_ref()
                                    .and_then(|a| a.attributes.as_ref())
                                    .and_then(|a| a.get("image"))
                                    .map(String::as_str);
                                if let Some(key) = crate::docker::image_used_by(
                                    &kind,
                                    action,
                                    id.unwrap_or(""),
                                    attr,
                                ) {
                                    let at = e
                                        .time_nano
                                        .map(DateTime::from_timestamp_nanos)
                                        .unwrap_or_else(Utc::now);
                                    let mut uses = lock(&self.image_uses);
                                    if uses.len() < MAX_PENDING_USES || uses.contains_key(&key) {
                                        let t = uses.entry(key).or_insert(at);
                                        *t = (*t).max(at);
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "Docker event stream ended");
                                ended = true;
                            }
                        }
                    }
                    if ended {
                        break;
                    }
                }
            }
            lock(&self.pending).resync = true;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            }
        }
    }

    /// The image uses Docker's events told since the last call, by
    /// [`crate::docker::image_key`].
    pub fn take_image_uses(&self) -> Vec<(String, DateTime<Utc>)> {
        std::mem::take(&mut *lock(&self.image_uses))
            .into_iter()
            .collect()
    }

    /// Measures the footprint every `--docker.footprint-interval` (off at 0), from the first good
    /// Docker collection on.
    async fn footprint_loop(&self, cancel: CancellationToken) {
        let every = self.docker_cfg.footprint_interval;
        if every.is_zero() {
            return;
        }
        while self.snapshot().disk_usage.is_none() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    if self.snapshot().data_root.is_none() {
                        tracing::debug!("no footprint: the data root is not on this machine");
                        continue;
                    }
                    match self.collect_footprints().await {
                        Ok(fps) => {
                            for f in &fps {
                                tracing::debug!(mountpoint = %f.mountpoint, role = f.role.as_str(),
                                    unaccounted = f.unaccounted_bytes, seconds = f.seconds, "footprint measured");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e,
                            "footprint measurement failed; the last figures stay, and bilge retries every --docker.footprint-interval"),
                    }
                }
            }
        }
    }

    /// Notes where the daemon keeps its data (the data root, and containerd's root when the
    /// images are there); true when that changed.
    fn learn_roots(&self, info: &DockerInfo) -> bool {
        let containerd = self
            .docker_cfg
            .containerd_root
            .resolve(info)
            .map(|p| p.display().to_string());
        let mut p = write(&self.data_root_path);
        let mut c = write(&self.containerd_root_path);
        let changed = p.as_deref() != Some(info.data_root.as_str()) || *c != containerd;
        *p = Some(info.data_root.clone());
        *c = containerd;
        changed
    }

    /// The path of Docker's data root, once known.
    pub fn data_root_path(&self) -> Option<PathBuf> {
        read(&self.data_root_path).clone().map(PathBuf::from)
    }
}

/// Sets the flag when dropped: a footprint walk whose caller went away (shutdown) stops.
#[derive(Debug)]
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Sizes of the given containers' log files (and rotated siblings), measured on a blocking
/// thread so the runtime's workers keep answering scrapes.
async fn log_sizes(host: &disk::HostPaths, paths: Vec<(String, String)>) -> HashMap<String, u64> {
    let large = !paths.is_empty();
    let host = host.clone();
    crate::docker::offload(large, "measuring container logs", move || {
        paths
            .into_iter()
            .map(|(id, p)| {
                let bytes = docker::log_file_bytes(&host.file(Path::new(&p)));
                (id, bytes)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(role: Role, avail: u64, size: u64) -> DataRoot {
        DataRoot {
            role,
            path: format!("/{}", role.as_str()),
            mountpoint: format!("/mnt/{}", role.as_str()),
            usage: Usage {
                size,
                avail,
                ..Usage::default()
            },
            predicted_full_seconds: None,
        }
    }

    #[test]
    fn the_tightest_root_is_the_one_with_the_smallest_share_available() {
        let data = root(Role::DataRoot, 50, 100);
        let containerd = root(Role::ContainerdRoot, 20, 1000);
        let roots = [data.clone(), containerd.clone()];
        assert_eq!(tightest(roots.iter()), Some(&containerd));
        // A tie keeps the data root; an unmeasurable size counts as roomy.
        let even = root(Role::ContainerdRoot, 500, 1000);
        assert_eq!(tightest([data.clone(), even].iter()), Some(&data));
        let unknown = root(Role::ContainerdRoot, 0, 0);
        assert_eq!(tightest([data.clone(), unknown].iter()), Some(&data));
        assert_eq!(tightest(std::iter::empty()), None);
        let snapshot = Snapshot {
            data_root: Some(data.clone()),
            containerd_root: Some(containerd.clone()),
            ..Snapshot::default()
        };
        assert_eq!(snapshot.storage_roots().count(), 2);
        assert_eq!(snapshot.tightest_root(), Some(&containerd));
    }
}
