//! Background collectors and the snapshot they keep. `/metrics`, the status page and the cleanup
//! planner read the last snapshot; nothing in a request path waits on Docker.
//!
//! Two loops: filesystems every couple of seconds (statvfs is cheap, and watermarks need to react
//! fast), Docker every `--docker.refresh-interval`. Both log, count and retry; neither dies.

pub mod disk;
pub mod docker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::docker::{DiskUsage, DockerApi, DockerInfo};
use crate::metrics::Metrics;
use crate::{Error, Result};
use disk::{Filesystem, Statter, Usage};
use docker::{ContainerLog, DockerSummary};

/// From this many Docker objects on, a collection is summarized on a blocking thread.
const OFFLOAD_OBJECTS: usize = 200;

/// How long the daemon's `/info` and `/version` answers are reused (each costs ~6 ms on Docker
/// 20.10, which runs `runc --version` to answer; BENCHMARKS.md, section 2).
const INFO_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// The filesystem that holds Docker's data root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataRoot {
    /// Docker's `DockerRootDir`.
    pub path: String,
    /// The mount point of the filesystem holding it.
    pub mountpoint: String,
    /// Its figures.
    #[serde(flatten)]
    pub usage: Usage,
}

/// The last collected state of the host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Every included filesystem.
    pub filesystems: Vec<Filesystem>,
    /// Docker's data root filesystem, once the daemon told us where it is.
    pub data_root: Option<DataRoot>,
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
}

/// The collectors, their shared snapshot and the metrics they fill.
#[derive(Debug)]
pub struct Collector {
    cfg: Config,
    metrics: Metrics,
    snapshot: RwLock<Snapshot>,
    statter: Statter,
    docker: tokio::sync::Mutex<Option<DockerApi>>,
    /// The daemon's info, asked once per connection (it changes only when the daemon restarts,
    /// which breaks the connection) and refreshed after [`INFO_MAX_AGE`].
    info: tokio::sync::Mutex<Option<(Instant, DockerInfo)>>,
    log_paths: Mutex<HashMap<String, Option<String>>>,
    data_root_path: RwLock<Option<String>>,
    fs_done: AtomicBool,
    docker_done: AtomicBool,
    data_root_tx: tokio::sync::watch::Sender<Option<DataRoot>>,
}

impl Collector {
    /// A collector with an empty snapshot.
    pub fn new(cfg: Config, metrics: Metrics) -> Collector {
        Collector {
            cfg,
            metrics,
            snapshot: RwLock::new(Snapshot::default()),
            statter: Statter::default(),
            docker: tokio::sync::Mutex::new(None),
            info: tokio::sync::Mutex::new(None),
            log_paths: Mutex::new(HashMap::new()),
            data_root_path: RwLock::new(None),
            fs_done: AtomicBool::new(false),
            docker_done: AtomicBool::new(false),
            data_root_tx: tokio::sync::watch::channel(None).0,
        }
    }

    /// A copy of the last snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// True once both collectors have finished their first run (successful or not).
    pub fn ready(&self) -> bool {
        self.fs_done.load(Ordering::Acquire) && self.docker_done.load(Ordering::Acquire)
    }

    /// Receives the data root's figures after every filesystem collection (for watermarks).
    pub fn watch_data_root(&self) -> tokio::sync::watch::Receiver<Option<DataRoot>> {
        self.data_root_tx.subscribe()
    }

    /// The settings this collector runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A connected Docker client, connecting (and negotiating) when there is none.
    pub async fn docker(&self) -> Result<DockerApi> {
        let mut guard = self.docker.lock().await;
        if let Some(api) = guard.as_ref() {
            return Ok(api.clone());
        }
        let api = DockerApi::connect(&self.cfg.docker).await?;
        *guard = Some(api.clone());
        Ok(api)
    }

    /// Forgets the Docker client (and its info) so the next call reconnects and renegotiates.
    async fn reset_docker(&self) {
        *self.docker.lock().await = None;
        *self.info.lock().await = None;
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

    /// Stats the data root (if known) now, updating the snapshot and its metrics.
    pub async fn measure_data_root(&self) -> Option<DataRoot> {
        let path = self.data_root_path.read().ok()?.clone()?;
        let usage = match self
            .statter
            .stat(Path::new(&path), self.cfg.filesystem.stat_timeout)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "cannot stat Docker's data root");
                return None;
            }
        };
        let mounts = disk::read_mounts().unwrap_or_default();
        let mountpoint = disk::mount_of(&mounts, Path::new(&path))
            .map(|m| m.mountpoint.clone())
            .unwrap_or_else(|| path.clone());
        let dr = DataRoot {
            path,
            mountpoint,
            usage,
        };
        let m = &self.metrics;
        for g in [
            &m.data_root_size,
            &m.data_root_avail,
            &m.data_root_files,
            &m.data_root_files_free,
        ] {
            g.reset();
        }
        let l = [dr.mountpoint.as_str()];
        m.data_root_size
            .with_label_values(&l)
            .set(usage.size as f64);
        m.data_root_avail
            .with_label_values(&l)
            .set(usage.avail as f64);
        m.data_root_files
            .with_label_values(&l)
            .set(usage.files as f64);
        m.data_root_files_free
            .with_label_values(&l)
            .set(usage.files_free as f64);
        if let Ok(mut s) = self.snapshot.write() {
            s.data_root = Some(dr.clone());
        }
        self.data_root_tx.send_replace(Some(dr.clone()));
        Some(dr)
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
                    if let Ok(mut p) = self.data_root_path.write() {
                        *p = Some(info.data_root);
                    }
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
        let result = disk::collect(&self.cfg.filesystem, &self.statter).await;
        let m = &self.metrics;
        let ok = match result {
            Ok(list) => {
                for g in [
                    &m.fs_size,
                    &m.fs_free,
                    &m.fs_avail,
                    &m.fs_files,
                    &m.fs_files_free,
                    &m.fs_readonly,
                ] {
                    g.reset();
                }
                for f in &list {
                    let l = [
                        f.mount.device.as_str(),
                        f.mount.mountpoint.as_str(),
                        f.mount.fstype.as_str(),
                    ];
                    m.fs_size.with_label_values(&l).set(f.usage.size as f64);
                    m.fs_free.with_label_values(&l).set(f.usage.free as f64);
                    m.fs_avail.with_label_values(&l).set(f.usage.avail as f64);
                    m.fs_files.with_label_values(&l).set(f.usage.files as f64);
                    m.fs_files_free
                        .with_label_values(&l)
                        .set(f.usage.files_free as f64);
                    m.fs_readonly
                        .with_label_values(&l)
                        .set(if f.usage.readonly { 1.0 } else { 0.0 });
                }
                if let Ok(mut s) = self.snapshot.write() {
                    s.filesystems = list;
                    s.filesystems_last_success = Some(Utc::now());
                }
                Ok(())
            }
            Err(e) => Err(Error::io("reading /proc/self/mountinfo", e)),
        };
        self.measure_data_root().await;
        self.finish("filesystem", start, ok.is_ok());
        self.fs_done.store(true, Ordering::Release);
        ok
    }

    fn finish(&self, collector: &str, start: Instant, ok: bool) {
        let m = &self.metrics;
        m.collector_duration
            .with_label_values(&[collector])
            .set(start.elapsed().as_secs_f64());
        m.collector_success
            .with_label_values(&[collector])
            .set(if ok { 1.0 } else { 0.0 });
        if ok {
            m.collector_last_success
                .with_label_values(&[collector])
                .set(Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }

    /// The cache of container log paths (a panic elsewhere cannot leave it half-written).
    fn log_paths(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.log_paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log paths already known, to be measured while `/system/df` is in flight.
    fn known_log_paths(&self) -> Vec<(String, String)> {
        self.log_paths()
            .iter()
            .filter_map(|(id, p)| Some((id.clone(), p.clone()?)))
            .collect()
    }

    /// Sizes of every container's log files. `sizes` holds those of the containers known before
    /// this collection; the log paths of new ones are looked up (once per container) and measured.
    async fn container_logs(
        &self,
        api: &DockerApi,
        du: &DiskUsage,
        mut sizes: HashMap<String, u64>,
    ) -> Vec<ContainerLog> {
        let missing: Vec<String> = {
            let cache = self.log_paths();
            du.containers
                .iter()
                .filter(|c| !cache.contains_key(&c.id))
                .map(|c| c.id.clone())
                .collect()
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
            .collect();
        {
            let mut cache = self.log_paths();
            cache.extend(found);
            let live: std::collections::HashSet<&str> =
                du.containers.iter().map(|c| c.id.as_str()).collect();
            cache.retain(|id, _| live.contains(id.as_str()));
        }
        sizes.extend(log_sizes(new_paths).await);
        du.containers
            .iter()
            .map(|c| ContainerLog {
                container: c.name.clone(),
                bytes: sizes.get(&c.id).copied().unwrap_or(0),
            })
            .collect()
    }

    /// One Docker collection: info, `/system/df`, log sizes.
    pub async fn collect_docker(&self) -> Result<DockerSummary> {
        let start = Instant::now();
        let result = self.collect_docker_inner().await;
        let m = &self.metrics;
        match &result {
            Ok((summary, _)) => {
                self.publish_docker(summary);
                m.docker_up.set(1);
            }
            Err(e) => {
                m.docker_up.set(0);
                if let Ok(mut s) = self.snapshot.write() {
                    s.docker_up = false;
                    s.docker_error = Some(e.to_string());
                }
                self.reset_docker().await;
            }
        }
        self.finish("docker", start, result.is_ok());
        self.docker_done.store(true, Ordering::Release);
        let (summary, du) = result?;
        if let Ok(mut s) = self.snapshot.write() {
            s.docker = Some(summary.clone());
            s.disk_usage = Some(Arc::new(du));
            s.docker_up = true;
            s.docker_error = None;
            s.docker_last_success = Some(Utc::now());
        }
        Ok(summary)
    }

    async fn collect_docker_inner(&self) -> Result<(DockerSummary, DiskUsage)> {
        let api = self.docker().await?;
        let info: DockerInfo = self.cached_info(&api).await?;
        let first_root = {
            let mut p = self
                .data_root_path
                .write()
                .map_err(|_| Error::Other("data root lock poisoned".into()))?;
            let first = p.as_deref() != Some(info.data_root.as_str());
            *p = Some(info.data_root.clone());
            first
        };
        if first_root {
            self.measure_data_root().await;
        }
        // The known containers' logs are measured while the daemon computes `/system/df`.
        let (du, sizes) = tokio::join!(api.disk_usage(), log_sizes(self.known_log_paths()));
        let du = du?;
        let logs = self.container_logs(&api, &du, sizes).await;
        let top_n = self.cfg.docker.top_n;
        let large = du.objects() >= OFFLOAD_OBJECTS;
        crate::docker::offload(large, "summarizing /system/df", move || {
            let summary = docker::summarize(info, &du, &logs, Utc::now(), top_n);
            (summary, du)
        })
        .await
    }

    fn publish_docker(&self, s: &DockerSummary) {
        let m = &self.metrics;
        m.docker_info.reset();
        m.docker_info
            .with_label_values(&[
                s.info.version.as_str(),
                s.info.api_version.as_str(),
                s.info.storage_driver.as_str(),
                s.info.data_root.as_str(),
            ])
            .set(1.0);
        for t in docker::TYPES {
            let u = s.by_type(t);
            m.docker_objects
                .with_label_values(&[t])
                .set(u.objects as f64);
            m.docker_active_objects
                .with_label_values(&[t])
                .set(u.active as f64);
            m.docker_size.with_label_values(&[t]).set(u.size as f64);
            m.docker_reclaimable
                .with_label_values(&[t])
                .set(u.reclaimable as f64);
        }
        m.docker_containers.reset();
        for (state, n) in &s.containers_by_state {
            m.docker_containers
                .with_label_values(&[state.as_str()])
                .set(*n as f64);
        }
        m.dangling_images.set(s.dangling_images as f64);
        m.dangling_images_bytes.set(s.dangling_images_bytes as f64);
        for (age, bytes) in &s.build_cache_by_age {
            m.build_cache_reclaimable_by_age
                .with_label_values(&[age.as_str()])
                .set(*bytes as f64);
        }
        m.logs_bytes.set(s.logs_bytes as f64);
        for (g, list) in [
            (&m.largest_image, &s.top_images),
            (&m.largest_volume, &s.top_volumes),
            (&m.largest_log, &s.top_logs),
        ] {
            g.reset();
            for (name, bytes) in list {
                g.with_label_values(&[name.as_str()]).set(*bytes as f64);
            }
        }
    }

    /// Runs both loops until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let fs = {
            let me = self.clone();
            let cancel = cancel.clone();
            async move {
                let mut tick = tokio::time::interval(me.cfg.filesystem.interval);
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
            async move {
                let mut tick = tokio::time::interval(me.cfg.docker.refresh_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut was_up = true;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {
                            match me.collect_docker().await {
                                Ok(_) => {
                                    if !was_up {
                                        tracing::info!(host = %me.cfg.docker.host, "Docker daemon reachable again");
                                    }
                                    was_up = true;
                                }
                                Err(e) => {
                                    if was_up {
                                        tracing::warn!(host = %me.cfg.docker.host, error = %e,
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
        tokio::join!(fs, dk);
    }

    /// The path of Docker's data root, once known.
    pub fn data_root_path(&self) -> Option<PathBuf> {
        self.data_root_path
            .read()
            .ok()
            .and_then(|p| p.clone())
            .map(PathBuf::from)
    }
}

/// Sizes of the given containers' log files (and rotated siblings), measured on a blocking
/// thread so the runtime's workers keep answering scrapes.
async fn log_sizes(paths: Vec<(String, String)>) -> HashMap<String, u64> {
    let large = !paths.is_empty();
    crate::docker::offload(large, "measuring container logs", move || {
        paths
            .into_iter()
            .map(|(id, p)| {
                let bytes = docker::log_file_bytes(Path::new(&p));
                (id, bytes)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}
