//! The Docker collector's arithmetic: from a `/system/df` answer and container log sizes to the
//! figures bilge exports. Pure; the definitions follow `docker system df` so the two agree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::docker::{DiskUsage, DockerInfo, total_bytes as total};

/// The object types of `bilge_docker_*{type}`.
pub const TYPES: [&str; 4] = ["image", "container", "volume", "build_cache"];
/// Container states, always exported (zero when none).
pub const STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];
/// The `older_than` ages of build cache, with their label values.
pub const CACHE_AGES: [(&str, i64); 3] = [("1h", 3600), ("24h", 86_400), ("168h", 604_800)];

/// Count, active count, size and reclaimable bytes of one object type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TypeUsage {
    /// Objects.
    pub objects: u64,
    /// Objects in use.
    pub active: u64,
    /// Bytes on disk.
    pub size: u64,
    /// Bytes a prune of unused objects would free.
    pub reclaimable: u64,
}

/// One container's log files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerLog {
    /// Container name.
    pub container: String,
    /// Bytes of its log file and rotated siblings.
    pub bytes: u64,
}

/// Everything the Docker collector exports, computed from one collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DockerSummary {
    /// The daemon.
    pub info: DockerInfo,
    /// Per type, in [`TYPES`] order.
    pub images: TypeUsage,
    /// Containers.
    pub containers: TypeUsage,
    /// Volumes.
    pub volumes: TypeUsage,
    /// Build cache.
    pub build_cache: TypeUsage,
    /// Containers by state.
    pub containers_by_state: BTreeMap<String, u64>,
    /// Dangling images.
    pub dangling_images: u64,
    /// Bytes only dangling images hold.
    pub dangling_images_bytes: u64,
    /// Reclaimable build cache by `older_than` label, in [`CACHE_AGES`] order.
    pub build_cache_by_age: Vec<(String, u64)>,
    /// All container log bytes.
    pub logs_bytes: u64,
    /// Largest images (name, bytes), largest first.
    pub top_images: Vec<(String, u64)>,
    /// Largest volumes (name, bytes), largest first.
    pub top_volumes: Vec<(String, u64)>,
    /// Largest container logs (name, bytes), largest first.
    pub top_logs: Vec<(String, u64)>,
}

impl DockerSummary {
    /// The usage of one of [`TYPES`].
    pub fn by_type(&self, t: &str) -> TypeUsage {
        match t {
            "image" => self.images,
            "container" => self.containers,
            "volume" => self.volumes,
            _ => self.build_cache,
        }
    }

    /// Reclaimable bytes over every type.
    pub fn reclaimable_total(&self) -> u64 {
        total(TYPES.iter().map(|t| self.by_type(t).reclaimable))
    }
}

fn pos(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn top(mut v: Vec<(String, u64)>, n: usize) -> Vec<(String, u64)> {
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Computes the summary (pure). `now` decides the build cache ages.
pub fn summarize(
    info: DockerInfo,
    du: &DiskUsage,
    logs: &[ContainerLog],
    now: DateTime<Utc>,
    top_n: usize,
) -> DockerSummary {
    // Images: size is every layer once; reclaimable is what images without containers hold.
    let image_size = du
        .layers_size
        .or_else(|| du.daemon_totals.as_ref().and_then(|t| t.images_size))
        .map(pos)
        .unwrap_or_else(|| total(du.images.iter().map(|i| pos(i.unique_size()))));
    let used = total(
        du.images
            .iter()
            .filter(|i| i.containers > 0 && i.shared_size >= 0)
            .map(|i| pos(i.size.saturating_sub(i.shared_size))),
    );
    let images = TypeUsage {
        objects: du.images.len() as u64,
        active: du.images.iter().filter(|i| i.containers > 0).count() as u64,
        size: image_size,
        reclaimable: image_size.saturating_sub(used),
    };

    let containers = TypeUsage {
        objects: du.containers.len() as u64,
        active: du.containers.iter().filter(|c| c.is_active()).count() as u64,
        size: total(du.containers.iter().map(|c| pos(c.size_rw))),
        reclaimable: total(
            du.containers
                .iter()
                .filter(|c| !c.is_active())
                .map(|c| pos(c.size_rw)),
        ),
    };

    let volumes = TypeUsage {
        objects: du.volumes.len() as u64,
        active: du.volumes.iter().filter(|v| v.ref_count > 0).count() as u64,
        size: total(du.volumes.iter().map(|v| pos(v.size))),
        reclaimable: total(
            du.volumes
                .iter()
                .filter(|v| v.ref_count == 0)
                .map(|v| pos(v.size)),
        ),
    };

    let unshared = || du.build_cache.iter().filter(|b| !b.shared);
    let build_cache = TypeUsage {
        objects: du.build_cache.len() as u64,
        active: du.build_cache.iter().filter(|b| b.in_use).count() as u64,
        size: total(unshared().map(|b| pos(b.size))),
        reclaimable: total(unshared().filter(|b| !b.in_use).map(|b| pos(b.size))),
    };

    let build_cache_by_age = CACHE_AGES
        .iter()
        .map(|(label, secs)| {
            let bytes = total(
                unshared()
                    .filter(|b| !b.in_use)
                    .filter(|b| {
                        b.last_touched()
                            .is_some_and(|t| (now - t).num_seconds() >= *secs)
                    })
                    .map(|b| pos(b.size)),
            );
            ((*label).to_string(), bytes)
        })
        .collect();

    let mut containers_by_state: BTreeMap<String, u64> =
        STATES.iter().map(|s| ((*s).to_string(), 0)).collect();
    for c in &du.containers {
        *containers_by_state.entry(c.state.clone()).or_default() += 1;
    }

    let dangling: Vec<_> = du.images.iter().filter(|i| i.is_dangling()).collect();

    DockerSummary {
        info,
        images,
        containers,
        volumes,
        build_cache,
        containers_by_state,
        dangling_images: dangling.len() as u64,
        dangling_images_bytes: total(dangling.iter().map(|i| pos(i.unique_size()))),
        build_cache_by_age,
        logs_bytes: total(logs.iter().map(|l| l.bytes)),
        top_images: top(
            du.images
                .iter()
                .map(|i| (i.display_name(), pos(i.size)))
                .collect(),
            top_n,
        ),
        top_volumes: top(
            du.volumes
                .iter()
                .map(|v| (v.name.clone(), pos(v.size)))
                .collect(),
            top_n,
        ),
        top_logs: top(
            logs.iter()
                .map(|l| (l.container.clone(), l.bytes))
                .collect(),
            top_n,
        ),
    }
}

/// Bytes of a container's log file plus rotated siblings (`LogPath.1`, `LogPath.2.gz`, …).
pub fn log_file_bytes(log_path: &std::path::Path) -> u64 {
    let mut total = std::fs::metadata(log_path).map(|m| m.len()).unwrap_or(0);
    let (Some(dir), Some(name)) = (log_path.parent(), log_path.file_name()) else {
        return total;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{BuildCacheRecord, Container, Image, Volume};
    use chrono::TimeZone;

    fn at(h: i64) -> Option<DateTime<Utc>> {
        Utc.timestamp_opt(1_700_000_000 - h * 3600, 0).single()
    }

    fn usage() -> DiskUsage {
        DiskUsage {
            layers_size: Some(3000),
            images: vec![
                Image {
                    id: "sha256:a".into(),
                    repo_tags: vec!["app:1".into()],
                    size: 2000,
                    shared_size: 500,
                    containers: 1,
                    ..Image::default()
                },
                Image {
                    id: "sha256:b".into(),
                    size: 1000,
                    shared_size: 0,
                    containers: 0,
                    ..Image::default()
                },
            ],
            containers: vec![
                Container {
                    name: "web".into(),
                    state: "running".into(),
                    size_rw: 10,
                    ..Container::default()
                },
                Container {
                    name: "old".into(),
                    state: "exited".into(),
                    size_rw: 20,
                    ..Container::default()
                },
            ],
            volumes: vec![
                Volume {
                    name: "data".into(),
                    size: 300,
                    ref_count: 0,
                    ..Volume::default()
                },
                Volume {
                    name: "db".into(),
                    size: 50,
                    ref_count: 1,
                    ..Volume::default()
                },
            ],
            build_cache: vec![
                BuildCacheRecord {
                    size: 400,
                    last_used_at: at(30),
                    ..BuildCacheRecord::default()
                },
                BuildCacheRecord {
                    size: 100,
                    created_at: at(2),
                    ..BuildCacheRecord::default()
                },
                BuildCacheRecord {
                    size: 999,
                    shared: true,
                    last_used_at: at(300),
                    ..BuildCacheRecord::default()
                },
                BuildCacheRecord {
                    size: 7,
                    in_use: true,
                    last_used_at: at(300),
                    ..BuildCacheRecord::default()
                },
            ],
            ..DiskUsage::default()
        }
    }

    fn summary() -> DockerSummary {
        let now = at(0).unwrap_or_default();
        let logs = [
            ContainerLog {
                container: "web".into(),
                bytes: 70,
            },
            ContainerLog {
                container: "old".into(),
                bytes: 5,
            },
        ];
        summarize(DockerInfo::default(), &usage(), &logs, now, 1)
    }

    /// Found by reviewing the `system_df` fuzz target's arithmetic, and replayed through it
    /// (`fuzz/seeds/system_df/overflow-*.json`): an image of `Size` `i64::MIN` with a
    /// `SharedSize` overflowed `unique_size`, and three volumes near `i64::MAX` overflowed the
    /// sums: a panic in a debug build, wrapped (small, wrong) figures in a release one.
    #[test]
    fn absurd_daemon_sizes_saturate_instead_of_overflowing() {
        let du = DiskUsage {
            images: vec![Image {
                id: "sha256:a".into(),
                size: i64::MIN,
                shared_size: 1,
                containers: 1,
                ..Image::default()
            }],
            volumes: ["a", "b", "c"]
                .iter()
                .map(|n| Volume {
                    name: (*n).into(),
                    size: i64::MAX,
                    ref_count: 0,
                    ..Volume::default()
                })
                .collect(),
            ..DiskUsage::default()
        };
        let s = summarize(DockerInfo::default(), &du, &[], Utc::now(), 3);
        assert_eq!(s.images.size, 0);
        assert_eq!(s.volumes.size, u64::MAX);
        assert_eq!(s.volumes.reclaimable, u64::MAX);
        assert_eq!(s.reclaimable_total(), u64::MAX);
    }

    #[test]
    fn types_are_counted_as_docker_system_df_counts_them() {
        let s = summary();
        assert_eq!(
            s.images,
            TypeUsage {
                objects: 2,
                active: 1,
                size: 3000,
                reclaimable: 1500
            }
        );
        assert_eq!(
            s.containers,
            TypeUsage {
                objects: 2,
                active: 1,
                size: 30,
                reclaimable: 20
            }
        );
        assert_eq!(
            s.volumes,
            TypeUsage {
                objects: 2,
                active: 1,
                size: 350,
                reclaimable: 300
            }
        );
        assert_eq!(
            s.build_cache,
            TypeUsage {
                objects: 4,
                active: 1,
                size: 507,
                reclaimable: 500
            }
        );
        assert_eq!(s.reclaimable_total(), 2320);
    }

    #[test]
    fn build_cache_ages_use_last_use_else_creation() {
        let s = summary();
        assert_eq!(
            s.build_cache_by_age,
            vec![("1h".into(), 500), ("24h".into(), 400), ("168h".into(), 0)]
        );
    }

    #[test]
    fn every_container_state_is_present_and_top_n_is_capped() {
        let s = summary();
        assert_eq!(s.containers_by_state.len(), STATES.len());
        assert_eq!(s.containers_by_state.get("exited"), Some(&1));
        assert_eq!(s.top_images, vec![("app:1".to_string(), 2000)]);
        assert_eq!(s.top_logs, vec![("web".to_string(), 70)]);
        assert_eq!(s.logs_bytes, 75);
        assert_eq!((s.dangling_images, s.dangling_images_bytes), (1, 1000));
    }

    #[test]
    fn rotated_logs_are_counted_with_the_live_file() {
        let dir = std::env::temp_dir().join(format!("bilge-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("c-json.log");
        std::fs::write(&log, b"12345").unwrap();
        std::fs::write(dir.join("c-json.log.1"), b"123").unwrap();
        std::fs::write(dir.join("other.log"), b"1234567").unwrap();
        assert_eq!(log_file_bytes(&log), 8);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
