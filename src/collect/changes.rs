//! Collection whose cost follows change, not size. `/system/df` stays the truth, but asking all
//! of it walks every volume and every container's writable layer, which takes minutes on a big
//! host. So between two full collections (`--docker.full-refresh-interval`), each periodic one
//! asks only what Docker's events say changed:
//!
//! - images and build cache through `/system/df?type=` (API 1.42 and later; older engines get a
//!   full one), which costs the layer store's and BuildKit's figures, not a walk;
//! - containers and volumes through their cheap lists, which answer exactly which exist, their
//!   states, images and mounts (so which images and volumes are in use); the writable layer of
//!   each container an event named (created, started, ended, committed) is measured alone, up to
//!   [`MAX_MEASURED`] of them (more: all containers through `?type=container`, or a full one);
//!   other sizes, which only a walk measures (volumes, the layers of containers still running),
//!   are kept from the last full collection until the next (0 for a new volume);
//! - nothing but `/_ping` when nothing changed (a frozen daemon keeps its event stream open and
//!   silent, so the ping is what tells it from a quiet one).
//!
//! Build cache in use (a build still running) is asked again at every collection until it is
//! not: its records change when the build ends, and the only event (the image's tag) comes first.
//! A gap in the event stream (start, daemon restart, a failed collection) makes the next one full,
//! and so does a storage filesystem whose used bytes moved by [`GROWTH`] since the last
//! collection without an event to say why: an untagged build (BuildKit's cache has no event of its
//! own), or containers writing to their layers or volumes.
//! The pure parts live here: which event changes what, what to ask, how answers merge.

use std::collections::{BTreeSet, HashMap};

/// How far a storage filesystem's used bytes may move between two collections before the next is
/// full whatever the events said: this share of the filesystem, and at least [`GROWTH_MIN`].
pub const GROWTH: f64 = 0.01;
/// The least movement that makes the next collection full.
pub const GROWTH_MIN: u64 = 64 << 20;

/// Whether used bytes moved from `then` to `now` on a filesystem of `size` bytes by more than
/// events explain ([`GROWTH`]).
pub fn moved(then: u64, now: u64, size: u64) -> bool {
    let limit = ((size as f64 * GROWTH) as u64).max(GROWTH_MIN);
    then.abs_diff(now) >= limit
}

/// Most containers whose writable layers one partial collection measures one by one.
pub const MAX_MEASURED: usize = 64;

use crate::docker::{Container, DfType, DiskUsage, Volume};

/// What changed since the last collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The parts events said changed.
    pub dirty: BTreeSet<DfType>,
    /// Changes may have been missed (no event stream yet, a gap, a failure): ask everything.
    pub resync: bool,
    /// Containers whose writable layer may have changed size (ids from the events).
    pub measure: BTreeSet<String>,
    /// More than [`MAX_MEASURED`] containers changed: measure them all.
    pub measure_all: bool,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            dirty: BTreeSet::new(),
            resync: true,
            measure: BTreeSet::new(),
            measure_all: false,
        }
    }
}

impl Pending {
    /// Notes one event (`Type`, `Action` and the actor's id of Docker's event message).
    pub fn note(&mut self, kind: &str, action: &str, id: &str) {
        self.dirty.extend(changed_by(kind, action).iter().copied());
        let action = action.split(':').next().unwrap_or(action).trim();
        if kind == "container"
            && matches!(action, "create" | "start" | "die" | "commit" | "update")
            && !id.is_empty()
        {
            if self.measure.len() < MAX_MEASURED {
                self.measure.insert(id.to_string());
            } else if !self.measure.contains(id) {
                self.measure_all = true;
            }
        }
    }
}

/// The parts of `/system/df` an event changes (pure).
pub fn changed_by(kind: &str, action: &str) -> &'static [DfType] {
    use DfType::*;
    // Actions carry arguments on some engines ("exec_start: sh", "health_status: healthy").
    let action = action.split(':').next().unwrap_or(action).trim();
    match (kind, action) {
        // A container's creation or removal changes which volumes are in use (and which images:
        // the container list tells, see `merge`).
        ("container", "create" | "destroy" | "remove" | "prune") => &[Container, Volume],
        ("container", "commit") => &[Container, Image, BuildCache],
        ("container", "start" | "die" | "pause" | "unpause" | "rename" | "update") => &[Container],
        // A build that tags its image also changed the build cache.
        ("image", "pull" | "tag" | "untag" | "delete" | "import" | "load" | "prune") => {
            &[Image, BuildCache]
        }
        ("volume", "create" | "destroy" | "remove" | "prune") => &[Volume],
        ("builder", _) => &[BuildCache],
        _ => &[],
    }
}

/// What one periodic collection asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// All of `/system/df`.
    Full,
    /// Only what changed.
    Partial(Partial),
    /// Nothing: no change since the last collection.
    Unchanged,
}

/// The parts of a partial collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Asked from `/system/df?type=` (images, build cache).
    pub df: Vec<DfType>,
    /// The container list is asked.
    pub containers: bool,
    /// The containers whose writable layers are measured one by one.
    pub measure: Vec<String>,
    /// The volume list is asked.
    pub volumes: bool,
}

/// Decides what a periodic collection asks (pure): everything when there is nothing to build
/// on, changes may have been missed, the disk `moved` ([`moved`]) or a full collection is due;
/// else what changed, through
/// `?type=` where the API has it (`typed`) and a full one where it has not.
pub fn decide(
    have_last: bool,
    full_due: bool,
    moved: bool,
    typed: bool,
    pending: &Pending,
) -> Refresh {
    if !have_last || full_due || moved || pending.resync {
        return Refresh::Full;
    }
    if pending.dirty.is_empty() {
        return Refresh::Unchanged;
    }
    let mut df: Vec<DfType> = pending
        .dirty
        .iter()
        .copied()
        .filter(|t| matches!(t, DfType::Image | DfType::BuildCache))
        .collect();
    let changed = pending.dirty.contains(&DfType::Container);
    // Where images can be asked alone, a container change asks them too: with the containerd
    // image store an image's figures (not only its count of containers) follow its containers.
    // Elsewhere the container list recounts them (`merge`).
    if changed && typed && !df.contains(&DfType::Image) {
        df.insert(0, DfType::Image);
    }
    // Too many containers to measure one by one: all of them at once.
    let all = changed && pending.measure_all;
    if all {
        df.push(DfType::Container);
    }
    if !df.is_empty() && !typed {
        return Refresh::Full;
    }
    Refresh::Partial(Partial {
        df,
        containers: changed && !all,
        measure: match all {
            true => Vec::new(),
            false => pending.measure.iter().cloned().collect(),
        },
        volumes: changed || pending.dirty.contains(&DfType::Volume),
    })
}

/// The last figures with a partial collection's answers merged in (pure): the `typed` answer's
/// lists for the types in `df`; the container and volume lists as given, with the sizes
/// `measured` now or else those already known (0 for new ones: a walk measures them at the next
/// full collection), and the in-use counts that the lists determine (containers per image
/// unless images were asked, containers per volume).
pub fn merge(
    last: &DiskUsage,
    df: &[DfType],
    typed: Option<DiskUsage>,
    containers: Option<Vec<Container>>,
    measured: &HashMap<String, i64>,
    volumes: Option<Vec<Volume>>,
) -> DiskUsage {
    let mut du = last.clone();
    if let Some(t) = typed {
        for ty in df {
            match ty {
                DfType::Image => {
                    du.images = t.images.clone();
                    du.layers_size = t.layers_size;
                    du.daemon_totals = t.daemon_totals.clone();
                }
                DfType::BuildCache => du.build_cache = t.build_cache.clone(),
                DfType::Container => du.containers = t.containers.clone(),
                DfType::Volume => du.volumes = t.volumes.clone(),
            }
        }
    }
    if let Some(mut list) = containers {
        let sizes: HashMap<&str, i64> = last
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c.size_rw))
            .collect();
        for c in &mut list {
            c.size_rw = measured
                .get(&c.id)
                .or_else(|| sizes.get(c.id.as_str()))
                .copied()
                .unwrap_or(0);
        }
        du.containers = list;
        if !df.contains(&DfType::Image) {
            let mut per_image: HashMap<&str, i64> = HashMap::new();
            for c in &du.containers {
                *per_image.entry(c.image_id.as_str()).or_default() += 1;
            }
            for i in &mut du.images {
                i.containers = per_image.get(i.id.as_str()).copied().unwrap_or(0);
            }
        }
    }
    if let Some(mut list) = volumes {
        let sizes: HashMap<&str, i64> = last
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.size))
            .collect();
        let mut refs: HashMap<&str, i64> = HashMap::new();
        for c in &du.containers {
            for v in &c.volumes {
                *refs.entry(v.as_str()).or_default() += 1;
            }
        }
        for v in &mut list {
            v.size = sizes.get(v.name.as_str()).copied().unwrap_or(0);
            v.ref_count = refs.get(v.name.as_str()).copied().unwrap_or(0);
        }
        du.volumes = list;
    }
    du
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::Image;

    fn pending(dirty: &[DfType]) -> Pending {
        Pending {
            dirty: dirty.iter().copied().collect(),
            resync: false,
            ..Pending::default()
        }
    }

    #[test]
    fn events_mark_what_they_change_and_noise_marks_nothing() {
        let mut p = pending(&[]);
        p.note("container", "exec_start: sh -c true", "c1");
        p.note("container", "health_status: healthy", "c1");
        p.note("network", "connect", "n1");
        assert!(p.dirty.is_empty());
        assert!(p.measure.is_empty());
        p.note("container", "start", "c1");
        assert_eq!(p.dirty, [DfType::Container].into());
        assert_eq!(p.measure, ["c1".to_string()].into());
        p.note("image", "tag", "sha256:1");
        p.note("volume", "create", "v1");
        let all = [
            DfType::Image,
            DfType::Container,
            DfType::Volume,
            DfType::BuildCache,
        ];
        assert_eq!(p.dirty, all.into());
        assert_eq!(
            changed_by("container", "destroy"),
            &[DfType::Container, DfType::Volume]
        );
        assert_eq!(changed_by("builder", "prune"), &[DfType::BuildCache]);
        // Past the bound, every container is measured at once.
        for i in 0..MAX_MEASURED + 1 {
            p.note("container", "die", &format!("c{i}"));
        }
        assert_eq!(p.measure.len(), MAX_MEASURED);
        assert!(p.measure_all);
    }

    #[test]
    fn a_collection_asks_everything_after_a_gap_nothing_without_change_and_only_the_change_else() {
        let none = pending(&[]);
        assert_eq!(decide(false, false, false, true, &none), Refresh::Full);
        assert_eq!(decide(true, true, false, true, &none), Refresh::Full);
        assert_eq!(
            decide(true, false, false, true, &Pending::default()),
            Refresh::Full
        );
        assert_eq!(decide(true, false, false, true, &none), Refresh::Unchanged);
        // A started container: the list, its layer (and the volumes that it may mount).
        let mut started = pending(&[DfType::Container]);
        started.note("container", "start", "c1");
        assert_eq!(
            decide(true, false, false, false, &started),
            Refresh::Partial(Partial {
                df: vec![],
                containers: true,
                measure: vec!["c1".into()],
                volumes: true
            })
        );
        // Too many: all containers through ?type=, or a full one without it.
        assert_eq!(
            decide(true, false, false, true, &started),
            Refresh::Partial(Partial {
                df: vec![DfType::Image],
                containers: true,
                measure: vec!["c1".into()],
                volumes: true
            })
        );
        started.measure_all = true;
        assert_eq!(
            decide(true, false, false, true, &started),
            Refresh::Partial(Partial {
                df: vec![DfType::Image, DfType::Container],
                containers: false,
                measure: vec![],
                volumes: true
            })
        );
        assert_eq!(decide(true, false, false, false, &started), Refresh::Full);
        let tagged = pending(&[DfType::Image, DfType::BuildCache]);
        assert_eq!(
            decide(true, false, false, true, &tagged),
            Refresh::Partial(Partial {
                df: vec![DfType::Image, DfType::BuildCache],
                containers: false,
                measure: vec![],
                volumes: false
            })
        );
        // The disk moved without an event: everything.
        assert_eq!(decide(true, false, true, true, &none), Refresh::Full);
        assert!(!moved(10 << 30, (10 << 30) + (63 << 20), 100 << 30 >> 4));
        assert!(moved(10 << 30, (10 << 30) + (64 << 20), 1 << 30));
        assert!(!moved(50 << 30, (50 << 30) - (900 << 20), 100 << 30));
        assert!(moved(50 << 30, (50 << 30) - (1100 << 20), 100 << 30));
        // Without ?type= an image change costs a full one.
        assert_eq!(decide(true, false, false, false, &tagged), Refresh::Full);
    }

    fn container(id: &str, image: &str, size: i64, volumes: &[&str]) -> Container {
        Container {
            id: id.into(),
            image_id: image.into(),
            size_rw: size,
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            ..Container::default()
        }
    }

    fn volume(name: &str, size: i64) -> Volume {
        Volume {
            name: name.into(),
            size,
            ref_count: -1,
            ..Volume::default()
        }
    }

    #[test]
    fn lists_merge_with_the_known_sizes_and_recount_what_is_in_use() {
        let last = DiskUsage {
            images: vec![
                Image {
                    id: "i1".into(),
                    containers: 1,
                    ..Image::default()
                },
                Image {
                    id: "i2".into(),
                    containers: 0,
                    ..Image::default()
                },
            ],
            containers: vec![container("c1", "i1", 500, &["data"])],
            volumes: vec![volume("data", 7000)],
            ..DiskUsage::default()
        };
        // c1 stays, c2 is new on i2 with a new volume.
        let list = vec![
            container("c1", "i1", -1, &["data"]),
            container("c2", "i2", -1, &["new"]),
        ];
        let vols = vec![volume("data", -1), volume("new", -1)];
        let du = merge(
            &last,
            &[],
            None,
            Some(list.clone()),
            &HashMap::new(),
            Some(vols),
        );
        let sizes: Vec<i64> = du.containers.iter().map(|c| c.size_rw).collect();
        assert_eq!(sizes, [500, 0]);
        let measured = HashMap::from([("c2".to_string(), 4096)]);
        let du2 = merge(&last, &[], None, Some(list), &measured, None);
        let sizes: Vec<i64> = du2.containers.iter().map(|c| c.size_rw).collect();
        assert_eq!(sizes, [500, 4096]);
        let counts: Vec<i64> = du.images.iter().map(|i| i.containers).collect();
        assert_eq!(counts, [1, 1]);
        let v: Vec<(i64, i64)> = du.volumes.iter().map(|v| (v.size, v.ref_count)).collect();
        assert_eq!(v, [(7000, 1), (0, 1)]);

        // A typed image answer replaces the images (and their counts) and nothing else.
        let typed = DiskUsage {
            images: vec![Image {
                id: "i3".into(),
                containers: 0,
                ..Image::default()
            }],
            layers_size: Some(42),
            ..DiskUsage::default()
        };
        let du = merge(
            &last,
            &[DfType::Image],
            Some(typed),
            None,
            &HashMap::new(),
            None,
        );
        assert_eq!(du.images.len(), 1);
        assert_eq!(du.layers_size, Some(42));
        assert_eq!(du.containers, last.containers);
        assert_eq!(du.volumes, last.volumes);
    }
}
