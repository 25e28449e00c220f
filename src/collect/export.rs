//! The filesystem, data-root, Docker and collector-health families (gauges, and two counters of
//! Docker collections), built when a scrape asks, from
//! the one [`Snapshot`] the collectors last swapped in.
//!
//! Nothing here is pushed into gauges between scrapes, so a scrape can never fall into the gap
//! between a `reset()` and a refill: it sees every family of one snapshot, or of the next, never
//! half of one. Families whose figures are unknown (Docker before its first good collection)
//! are absent, not zero; once known they stay, with the last good figures, while the daemon is
//! away (`bilge_docker_up` says so).

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::docker::TYPES;
use super::{Snapshot, SnapshotCell};

/// Labels of the `bilge_filesystem_*` families, as node_exporter names them.
const FS: &[&str] = &["device", "mountpoint", "fstype"];
/// The label of the data-root families.
const ROOT: &[&str] = &["mountpoint", "role"];
/// The label of the collector-health families.
const COLLECTOR: &[&str] = &["collector"];

/// Every family this module builds: name, help, label names.
const FAMILIES: &[(&str, &str, &[&str])] = &[
    (
        "bilge_collector_success",
        "1 if the collector's last run succeeded, else 0.",
        COLLECTOR,
    ),
    (
        "bilge_collector_duration_seconds",
        "How long the collector's last run took.",
        COLLECTOR,
    ),
    (
        "bilge_collector_last_success_timestamp_seconds",
        "When the collector last succeeded, as a Unix timestamp.",
        COLLECTOR,
    ),
    (
        "bilge_filesystem_size_bytes",
        "Filesystem size in bytes.",
        FS,
    ),
    (
        "bilge_filesystem_free_bytes",
        "Filesystem free space in bytes.",
        FS,
    ),
    (
        "bilge_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
        FS,
    ),
    ("bilge_filesystem_files", "Filesystem total file nodes.", FS),
    (
        "bilge_filesystem_files_free",
        "Filesystem free file nodes.",
        FS,
    ),
    (
        "bilge_filesystem_readonly",
        "1 if the filesystem is read-only.",
        FS,
    ),
    (
        "bilge_docker_data_root_size_bytes",
        "Size of the filesystem holding Docker's data root (role data_root) or containerd's root (role containerd_root).",
        ROOT,
    ),
    (
        "bilge_docker_data_root_avail_bytes",
        "Space available on the filesystem holding Docker's data root (role data_root) or containerd's root (role containerd_root).",
        ROOT,
    ),
    (
        "bilge_docker_data_root_files",
        "File nodes of the filesystem holding Docker's data root (role data_root) or containerd's root (role containerd_root).",
        ROOT,
    ),
    (
        "bilge_docker_data_root_files_free",
        "Free file nodes of the filesystem holding Docker's data root (role data_root) or containerd's root (role containerd_root).",
        ROOT,
    ),
    (
        "bilge_docker_data_root_predicted_full_seconds",
        "Seconds until the filesystem holding Docker's data root (or containerd's root) is full, on a least-squares line over its available space in the last --collector.filesystem.forecast-window (predict_linear's shape); +Inf when it is not filling. Absent until the samples span a quarter of the window (at most a minute).",
        ROOT,
    ),
    (
        "bilge_docker_footprint_bytes",
        "Bytes in use on a Docker storage filesystem by part: under its root and Docker's (part docker), under its root and not Docker's (unaccounted), elsewhere on the filesystem (outside). Measured every --docker.footprint-interval.",
        &["mountpoint", "role", "part"],
    ),
    (
        "bilge_docker_unaccounted_bytes",
        "Bytes under a Docker storage root that Docker's accounting does not explain, by path (orphaned layers, tmp, …).",
        &["mountpoint", "role", "path"],
    ),
    (
        "bilge_docker_footprint_complete",
        "1 if the last footprint walk of the filesystem finished, 0 if it hit a bound (its figures are a lower bound).",
        ROOT,
    ),
    (
        "bilge_docker_collections_total",
        "Docker collections by what they asked: full (all of /system/df), partial (only what Docker's events said changed), unchanged (nothing changed, nothing asked).",
        &["kind"],
    ),
    (
        "bilge_docker_collections_deferred_total",
        "Periodic Docker collections that left a /system/df answer (a full one, or images, build cache or all containers by type) for a later one, to keep within --docker.df-budget.",
        &[],
    ),
    (
        "bilge_docker_up",
        "1 if the last Docker collection reached the daemon, else 0.",
        &[],
    ),
    (
        "bilge_docker_info",
        "The Docker daemon's version, API version, storage driver and data root; always 1.",
        &["version", "api_version", "storage_driver", "data_root"],
    ),
    ("bilge_docker_objects", "Docker objects by type.", &["type"]),
    (
        "bilge_docker_active_objects",
        "Docker objects in use by type (as docker system df counts ACTIVE).",
        &["type"],
    ),
    (
        "bilge_docker_size_bytes",
        "Disk used by Docker objects by type (as docker system df counts SIZE).",
        &["type"],
    ),
    (
        "bilge_docker_reclaimable_bytes",
        "Bytes a prune of unused objects would free, by type (as docker system df).",
        &["type"],
    ),
    (
        "bilge_docker_containers",
        "Containers by state.",
        &["state"],
    ),
    (
        "bilge_docker_dangling_images",
        "Untagged images that no container uses.",
        &[],
    ),
    (
        "bilge_docker_dangling_images_bytes",
        "Bytes held only by dangling images.",
        &[],
    ),
    (
        "bilge_docker_build_cache_reclaimable_bytes",
        "Reclaimable build cache last used longer ago than older_than.",
        &["older_than"],
    ),
    (
        "bilge_docker_logs_bytes",
        "Bytes of all containers' log files (LogPath).",
        &[],
    ),
    (
        "bilge_docker_largest_image_bytes",
        "The largest images (top N).",
        &["image"],
    ),
    (
        "bilge_docker_largest_volume_bytes",
        "The largest volumes (top N).",
        &["volume"],
    ),
    (
        "bilge_docker_largest_container_log_bytes",
        "The largest container log files (top N).",
        &["container"],
    ),
];

/// The families of the table `FAMILIES` as a prometheus collector reading a [`SnapshotCell`].
#[derive(Debug)]
pub struct SnapshotFamilies {
    cell: SnapshotCell,
    descs: Vec<Desc>,
}

impl SnapshotFamilies {
    /// A collector of the snapshots that `cell` holds.
    pub fn new(cell: SnapshotCell) -> prometheus::Result<SnapshotFamilies> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, labels)| {
                Desc::new(
                    (*name).into(),
                    (*help).into(),
                    labels.iter().map(|l| (*l).to_string()).collect(),
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(SnapshotFamilies { cell, descs })
    }
}

impl Collector for SnapshotFamilies {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.cell.load())
    }
}

/// One family under construction.
struct Family {
    labels: &'static [&'static str],
    mf: MetricFamily,
}

impl Family {
    /// Adds one sample; `values` follow the family's label names.
    /// Label pairs are sorted by name, as the `prometheus` crate's own vectors write them.
    fn push(&mut self, values: &[&str], value: f64) {
        let mut m = Metric::default();
        let mut pairs: Vec<LabelPair> = self
            .labels
            .iter()
            .zip(values)
            .map(|(n, v)| {
                let mut l = LabelPair::default();
                l.set_name((*n).to_string());
                l.set_value((*v).to_string());
                l
            })
            .collect();
        pairs.sort_by(|a, b| a.name().cmp(b.name()));
        m.set_label(pairs);
        if self.mf.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.mf.mut_metric().push(m);
    }
}

/// The families, in [`FAMILIES`] order (the unit tests check that the two agree).
#[derive(Debug, Clone, Copy)]
enum F {
    Success,
    Duration,
    LastSuccess,
    FsSize,
    FsFree,
    FsAvail,
    FsFiles,
    FsFilesFree,
    FsReadonly,
    RootSize,
    RootAvail,
    RootFiles,
    RootFilesFree,
    RootFull,
    Footprint,
    Unaccounted,
    FootprintComplete,
    Collections,
    Deferred,
    Up,
    Info,
    Objects,
    Active,
    Size,
    Reclaimable,
    Containers,
    Dangling,
    DanglingBytes,
    CacheByAge,
    Logs,
    TopImages,
    TopVolumes,
    TopLogs,
}

/// The families of one snapshot being filled.
struct Out(Vec<Family>);

impl Out {
    /// Adds a sample to family `f`.
    fn push(&mut self, f: F, values: &[&str], value: f64) {
        if let Some(fam) = self.0.get_mut(f as usize) {
            fam.push(values, value);
        }
    }
}

/// The families of one snapshot (pure). A family with no sample is left out, as the registry
/// would prune it anyway.
pub fn families(s: &Snapshot) -> Vec<MetricFamily> {
    let mut out = Out(FAMILIES
        .iter()
        .map(|(name, help, labels)| {
            let mut mf = MetricFamily::default();
            mf.set_name((*name).into());
            mf.set_help((*help).into());
            // The counters among them are named so.
            let counter = name.ends_with("_total");
            mf.set_field_type(if counter {
                MetricType::COUNTER
            } else {
                MetricType::GAUGE
            });
            Family { labels, mf }
        })
        .collect());

    for (name, run, last) in [
        (
            "filesystem",
            &s.filesystems_run,
            &s.filesystems_last_success,
        ),
        ("docker", &s.docker_run, &s.docker_last_success),
        ("footprint", &s.footprint_run, &s.footprint_last_success),
    ] {
        // The footprint is exported once it ran (it is off at interval 0, and waits for Docker).
        if name == "footprint" && run.is_none() {
            continue;
        }
        out.push(F::Success, &[name], bool_value(run.is_some_and(|r| r.ok)));
        if let Some(r) = run {
            out.push(F::Duration, &[name], r.seconds);
        }
        if let Some(t) = last {
            out.push(
                F::LastSuccess,
                &[name],
                t.timestamp_millis() as f64 / 1000.0,
            );
        }
    }

    for fs in &s.filesystems {
        let l = [
            fs.mount.device.as_str(),
            fs.mount.mountpoint.as_str(),
            fs.mount.fstype.as_str(),
        ];
        let u = &fs.usage;
        out.push(F::FsSize, &l, u.size as f64);
        out.push(F::FsFree, &l, u.free as f64);
        out.push(F::FsAvail, &l, u.avail as f64);
        out.push(F::FsFiles, &l, u.files as f64);
        out.push(F::FsFilesFree, &l, u.files_free as f64);
        out.push(F::FsReadonly, &l, bool_value(u.readonly));
    }

    for dr in s.storage_roots() {
        let l = [dr.mountpoint.as_str(), dr.role.as_str()];
        out.push(F::RootSize, &l, dr.usage.size as f64);
        out.push(F::RootAvail, &l, dr.usage.avail as f64);
        out.push(F::RootFiles, &l, dr.usage.files as f64);
        out.push(F::RootFilesFree, &l, dr.usage.files_free as f64);
        if let Some(t) = dr.predicted_full_seconds {
            out.push(F::RootFull, &l, t);
        }
    }

    for f in &s.footprints {
        let (m, r) = (f.mountpoint.as_str(), f.role.as_str());
        for (part, bytes) in [
            ("docker", f.docker_bytes),
            ("unaccounted", f.unaccounted_bytes),
            ("outside", f.outside_bytes),
        ] {
            out.push(F::Footprint, &[m, r, part], bytes as f64);
        }
        for u in &f.unaccounted {
            out.push(F::Unaccounted, &[m, r, u.path.as_str()], u.bytes as f64);
        }
        out.push(F::FootprintComplete, &[m, r], bool_value(f.complete));
    }

    if s.docker_run.is_some() {
        let c = &s.docker_collections;
        for (kind, n) in [
            ("full", c.full),
            ("partial", c.partial),
            ("unchanged", c.unchanged),
        ] {
            out.push(F::Collections, &[kind], n as f64);
        }
        out.push(F::Deferred, &[], c.deferred as f64);
    }

    out.push(F::Up, &[], bool_value(s.docker_up));
    if let Some(d) = &s.docker {
        let i = &d.info;
        let l = [
            i.version.as_str(),
            i.api_version.as_str(),
            i.storage_driver.as_str(),
            i.data_root.as_str(),
        ];
        out.push(F::Info, &l, 1.0);
        for t in TYPES {
            let u = d.by_type(t);
            out.push(F::Objects, &[t], u.objects as f64);
            out.push(F::Active, &[t], u.active as f64);
            out.push(F::Size, &[t], u.size as f64);
            out.push(F::Reclaimable, &[t], u.reclaimable as f64);
        }
        for (state, n) in &d.containers_by_state {
            out.push(F::Containers, &[state.as_str()], *n as f64);
        }
        out.push(F::Dangling, &[], d.dangling_images as f64);
        out.push(F::DanglingBytes, &[], d.dangling_images_bytes as f64);
        for (age, bytes) in &d.build_cache_by_age {
            out.push(F::CacheByAge, &[age.as_str()], *bytes as f64);
        }
        out.push(F::Logs, &[], d.logs_bytes as f64);
        for (f, list) in [
            (F::TopImages, &d.top_images),
            (F::TopVolumes, &d.top_volumes),
            (F::TopLogs, &d.top_logs),
        ] {
            for (name, bytes) in list {
                out.push(f, &[name.as_str()], *bytes as f64);
            }
        }
    }

    out.0
        .into_iter()
        .map(|f| f.mf)
        .filter(|mf| !mf.get_metric().is_empty())
        .collect()
}

/// 1 for true, 0 for false.
fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::disk::{Filesystem, Mount, Usage};
    use crate::collect::docker::DockerSummary;
    use crate::collect::footprint::{Footprint, Unaccounted};
    use crate::collect::{CollectorRun, DataRoot};

    fn names(fams: &[MetricFamily]) -> Vec<String> {
        fams.iter().map(|f| f.name().to_string()).collect()
    }

    fn full() -> Snapshot {
        let usage = Usage {
            size: 100,
            free: 40,
            avail: 30,
            files: 10,
            files_free: 5,
            readonly: false,
        };
        Snapshot {
            filesystems: vec![Filesystem {
                mount: Mount {
                    device: "/dev/vda".into(),
                    mountpoint: "/".into(),
                    fstype: "ext4".into(),
                    readonly: false,
                    dev: Some((252, 0)),
                    fs_readonly: false,
                },
                usage,
            }],
            data_root: Some(DataRoot {
                role: crate::collect::Role::DataRoot,
                path: "/var/lib/docker".into(),
                mountpoint: "/".into(),
                usage,
                predicted_full_seconds: Some(f64::INFINITY),
            }),
            docker: Some(DockerSummary {
                containers_by_state: [("running".to_string(), 2)].into(),
                build_cache_by_age: vec![("1h".into(), 7)],
                top_images: vec![("app:1".into(), 9)],
                top_volumes: vec![("data".into(), 8)],
                top_logs: vec![("web".into(), 6)],
                ..DockerSummary::default()
            }),
            docker_up: true,
            filesystems_run: Some(CollectorRun {
                ok: true,
                seconds: 0.01,
            }),
            docker_run: Some(CollectorRun {
                ok: true,
                seconds: 0.2,
            }),
            filesystems_last_success: Some(chrono::Utc::now()),
            docker_last_success: Some(chrono::Utc::now()),
            footprints: vec![Footprint {
                role: crate::collect::Role::DataRoot,
                mountpoint: "/".into(),
                paths: vec!["/var/lib/docker".into()],
                used_bytes: 60,
                walked_bytes: 50,
                docker_bytes: 45,
                unaccounted_bytes: 5,
                outside_bytes: 10,
                unaccounted: vec![Unaccounted {
                    path: "/var/lib/docker/tmp".into(),
                    kind: crate::collect::footprint::Kind::Tmp,
                    bytes: 5,
                }],
                entries: 9,
                complete: true,
                seconds: 0.5,
                at: chrono::Utc::now(),
            }],
            footprint_run: Some(CollectorRun {
                ok: true,
                seconds: 0.5,
            }),
            footprint_last_success: Some(chrono::Utc::now()),
            ..Snapshot::default()
        }
    }

    /// The samples of a family as (labels, value).
    fn samples(fams: &[MetricFamily], name: &str) -> Vec<(Vec<String>, f64)> {
        fams.iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|m| {
                let labels = m.get_label().iter().map(|l| l.value().to_string());
                (labels.collect(), m.get_gauge().get_value())
            })
            .collect()
    }

    #[test]
    fn the_footprint_is_exported_in_three_parts_with_its_paths_and_health() {
        let fams = families(&full());
        let parts = samples(&fams, "bilge_docker_footprint_bytes");
        let v = |part: &str| {
            parts
                .iter()
                .find(|(l, _)| l[1] == part)
                .map(|(l, v)| (l[0].clone(), l[2].clone(), *v))
        };
        assert_eq!(v("docker"), Some(("/".into(), "data_root".into(), 45.0)));
        assert_eq!(
            v("unaccounted"),
            Some(("/".into(), "data_root".into(), 5.0))
        );
        assert_eq!(v("outside"), Some(("/".into(), "data_root".into(), 10.0)));
        assert_eq!(
            samples(&fams, "bilge_docker_unaccounted_bytes"),
            [(
                vec!["/".into(), "/var/lib/docker/tmp".into(), "data_root".into()],
                5.0
            )]
        );
        let health = samples(&fams, "bilge_collector_duration_seconds");
        assert!(
            health.contains(&(vec!["footprint".into()], 0.5)),
            "{health:?}"
        );
        // Off (or not run yet): no footprint health sample that would read as failing.
        let none = families(&Snapshot::default());
        assert!(
            !samples(&none, "bilge_collector_success")
                .iter()
                .any(|(l, _)| l[0] == "footprint")
        );
    }

    #[test]
    fn a_full_snapshot_gives_every_family_once() {
        let fams = families(&full());
        let want: Vec<String> = FAMILIES.iter().map(|f| f.0.to_string()).collect();
        assert_eq!(names(&fams), want);
    }

    #[test]
    fn the_family_index_follows_the_table() {
        assert_eq!(FAMILIES.len(), F::TopLogs as usize + 1);
        assert_eq!(
            FAMILIES[F::FsAvail as usize].0,
            "bilge_filesystem_avail_bytes"
        );
        assert_eq!(FAMILIES[F::Up as usize].0, "bilge_docker_up");
        assert_eq!(
            FAMILIES[F::TopLogs as usize].0,
            "bilge_docker_largest_container_log_bytes"
        );
    }

    #[test]
    fn before_any_collection_only_health_and_docker_up_are_exported_as_zero() {
        let fams = families(&Snapshot::default());
        assert_eq!(names(&fams), ["bilge_collector_success", "bilge_docker_up"]);
        for f in &fams {
            for m in f.get_metric() {
                assert_eq!(m.get_gauge().get_value(), 0.0, "{}", f.name());
            }
        }
    }

    #[test]
    fn labels_follow_the_family_and_values_the_snapshot() {
        let fams = families(&full());
        let avail = fams
            .iter()
            .find(|f| f.name() == "bilge_filesystem_avail_bytes")
            .map(|f| f.get_metric().to_vec())
            .unwrap_or_default();
        assert_eq!(avail.len(), 1);
        let labels: Vec<(String, String)> = avail[0]
            .get_label()
            .iter()
            .map(|l| (l.name().to_string(), l.value().to_string()))
            .collect();
        assert_eq!(
            labels,
            [
                ("device".to_string(), "/dev/vda".to_string()),
                ("fstype".into(), "ext4".into()),
                ("mountpoint".into(), "/".into())
            ]
        );
        assert_eq!(avail[0].get_gauge().get_value(), 30.0);
    }

    #[test]
    fn labels_are_written_in_name_order_as_the_crates_vectors_write_them() {
        let r = prometheus::Registry::new();
        let cell = SnapshotCell::default();
        cell.update(|s| *s = full());
        let Ok(c) = SnapshotFamilies::new(cell) else {
            panic!("collector")
        };
        assert!(r.register(Box::new(c)).is_ok());
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        assert!(prometheus::Encoder::encode(&enc, &r.gather(), &mut buf).is_ok());
        assert!(String::from_utf8_lossy(&buf).contains(
            "bilge_filesystem_size_bytes{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/\"} 100"
        ));
    }

    #[test]
    fn the_collector_registers_and_encodes_on_a_registry() {
        let cell = SnapshotCell::default();
        cell.update(|s| *s = full());
        let r = prometheus::Registry::new();
        let c = SnapshotFamilies::new(cell.clone()).map_err(|e| e.to_string());
        let Ok(c) = c else { panic!("{c:?}") };
        assert!(r.register(Box::new(c)).is_ok());
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        assert!(prometheus::Encoder::encode(&enc, &r.gather(), &mut buf).is_ok());
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("bilge_docker_largest_image_bytes{image=\"app:1\"} 9"));
        assert!(text.contains("bilge_docker_up 1"));
        cell.update(|s| s.docker_up = false);
        buf.clear();
        assert!(prometheus::Encoder::encode(&enc, &r.gather(), &mut buf).is_ok());
        assert!(String::from_utf8_lossy(&buf).contains("bilge_docker_up 0"));
    }
}
