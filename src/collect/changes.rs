//! Collection whose cost follows change, not size. `/system/df` stays the truth, but asking all
//! of it walks every volume and every container's writable layer, which takes minutes on a big
//! host. So between two full collections (`--docker.full-refresh-interval`), each periodic one
//! asks only what Docker's events say changed:
//!
//! - images and build cache through `/system/df?type=` (API 1.42 and later; older engines get a
//!   full one), which costs the layer store's and BuildKit's figures, not a walk;
//! - each container an event named through its own inspection (`?size=1`: its state, image,
//!   mounts and a walk of its writable layer alone, or a 404 when it went), up to
//!   [`MAX_MEASURED`] of them (more: all containers through `?type=container`, or a full one;
//!   an event that names none, such as a prune's, asks the cheap container list); which images
//!   and volumes are in use is recounted from the containers, except that with the containerd
//!   image store an image's own figures follow its containers, so images are asked too;
//! - volumes through their cheap list, only on a volume's event;
//! - other sizes, which only a walk measures (volumes, the layers of containers still running),
//!   are kept from the last full collection until the next (0 for a new volume);
//! - nothing but `/_ping` when nothing changed (a frozen daemon keeps its event stream open and
//!   silent, so the ping is what tells it from a quiet one).
//!
//! Every `/system/df` answer, full or typed, is also spaced out by its own cost ([`Budget`],
//! `--docker.df-budget`): where one takes long (a big host), the next costly one waits, the cheap
//! parts above go ahead, and the rest stays pending until the budget allows.
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
    /// Containers that changed (ids from the events), to be inspected one by one.
    pub measure: BTreeSet<String>,
    /// A container event named no container (a prune): the container list is asked.
    pub list: bool,
    /// More than [`MAX_MEASURED`] containers changed: measure them all.
    pub measure_all: bool,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            dirty: BTreeSet::new(),
            resync: true,
            measure: BTreeSet::new(),
            list: false,
            measure_all: false,
        }
    }
}

impl Pending {
    /// Notes one event (`Type`, `Action` and the actor's id of Docker's event message).
    pub fn note(&mut self, kind: &str, action: &str, id: &str) {
        let changed = changed_by(kind, action);
        self.dirty.extend(changed.iter().copied());
        if kind != "container" || changed.is_empty() {
            return;
        }
        let action = action.split(':').next().unwrap_or(action).trim();
        if id.is_empty() || action == "prune" {
            self.list = true;
        } else {
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
        // A container's creation or removal also changes which images and volumes are in use:
        // the containers tell (see `merge`).
        ("container", "commit") => &[Container, Image, BuildCache],
        (
            "container",
            "create" | "destroy" | "remove" | "prune" | "start" | "die" | "pause" | "unpause"
            | "rename" | "update",
        ) => &[Container],
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

impl Refresh {
    /// Whether it asks `/system/df` (in full or by type): the daemon's costly answers.
    pub fn costly(&self) -> bool {
        match self {
            Refresh::Full => true,
            Refresh::Partial(p) => !p.df.is_empty(),
            Refresh::Unchanged => false,
        }
    }
}

/// The parts of a partial collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Asked from `/system/df?type=` (images, build cache).
    pub df: Vec<DfType>,
    /// The container list is asked.
    pub containers: bool,
    /// The containers inspected one by one (with their writable layers' sizes).
    pub measure: Vec<String>,
    /// The volume list is asked.
    pub volumes: bool,
}

/// What a periodic collection knows before it asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Situation {
    /// There are last figures to merge a partial answer into.
    pub have_last: bool,
    /// `--docker.full-refresh-interval` has passed since the last full collection.
    pub full_due: bool,
    /// The API has `/system/df?type=` (1.42 and later).
    pub typed: bool,
    /// The daemon keeps images in the containerd image store.
    pub containerd: bool,
    /// The daemon's costly answers (any `/system/df`) are held back for now: the last one took
    /// long enough that asking again would exceed `--docker.df-budget` ([`Budget`]).
    pub held: bool,
}

/// Decides what a periodic collection asks (pure): everything when there is nothing to build
/// on, changes may have been missed (`pending.resync`, which a disk that [`moved`] also sets)
/// or a full collection is due; else what changed, through `?type=` where the API has it and a
/// full one where it has not. With the containerd image store a container change asks images
/// too. While costly answers are `held`, only the cheap parts of that are asked (inspections,
/// the container and volume lists); the rest stays pending ([`Pending::answered`]) until the
/// budget allows, and figures from the first collection on are never held.
pub fn decide(s: Situation, pending: &Pending) -> Refresh {
    if !s.have_last {
        return Refresh::Full;
    }
    if (s.full_due || pending.resync) && !s.held {
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
    // With the containerd image store an image's figures (not only its count of containers)
    // follow its containers: a container change asks them too. Elsewhere the containers
    // recount them (`merge`).
    if changed && s.containerd && !df.contains(&DfType::Image) {
        df.insert(0, DfType::Image);
    }
    // Too many containers to measure one by one: all of them at once (while that is held, their
    // cheap list: states and which exist, the sizes of new ones later).
    let all = changed && pending.measure_all;
    if all {
        df.push(DfType::Container);
    }
    if s.held {
        df.clear();
    }
    if !df.is_empty() && !s.typed {
        return Refresh::Full;
    }
    let p = Partial {
        df,
        containers: changed && (if all { s.held } else { pending.list }),
        measure: match all {
            true => Vec::new(),
            false => pending.measure.iter().cloned().collect(),
        },
        volumes: pending.dirty.contains(&DfType::Volume),
    };
    if p.df.is_empty() && !p.containers && p.measure.is_empty() && !p.volumes {
        return Refresh::Unchanged;
    }
    Refresh::Partial(p)
}

impl Pending {
    /// What is still pending once `asked` is answered: nothing after a full collection; after a
    /// partial one, whatever it did not ask (what a held budget left, and a due resync).
    pub fn answered(&mut self, asked: &Refresh) {
        match asked {
            Refresh::Unchanged => {}
            Refresh::Full => {
                *self = Pending {
                    resync: false,
                    ..Pending::default()
                }
            }
            Refresh::Partial(p) => {
                for t in &p.df {
                    self.dirty.remove(t);
                }
                if p.df.contains(&DfType::Container) {
                    self.measure_all = false;
                    self.measure.clear();
                }
                if p.volumes {
                    self.dirty.remove(&DfType::Volume);
                }
                if p.containers && !self.measure_all {
                    self.list = false;
                }
                for id in &p.measure {
                    self.measure.remove(id);
                }
                if !self.measure_all && !self.list && self.measure.is_empty() {
                    self.dirty.remove(&DfType::Container);
                }
            }
        }
    }
}

/// How much of the time the daemon may spend computing bilge's `/system/df` answers
/// (`--docker.df-budget`): after an answer that took `t`, the next waits until `t` is at most
/// `share` of the time since the one before began. A walk of every volume and writable layer
/// that takes a minute on a big host is then asked at most every `1 / share` minutes, and one of
/// 50 ms on a small host is never held at the usual intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Share of the time, in (0, 1]; 1 turns the bound off.
    pub share: f64,
}

impl Budget {
    /// How long after an answer that took `took` ended the next may be asked (pure).
    pub fn pause_after(&self, took: std::time::Duration) -> std::time::Duration {
        if self.share >= 1.0 || self.share.is_nan() || self.share <= 0.0 {
            return std::time::Duration::ZERO;
        }
        let secs = took.as_secs_f64() * (1.0 / self.share - 1.0);
        // Bounded: a stalled answer must not hold the next for ever (a day at most).
        std::time::Duration::from_secs_f64(secs.clamp(0.0, 86_400.0))
    }
}

/// The last figures with a partial collection's answers merged in (pure): the `typed` answer's
/// lists for the types in `df`; the container and volume lists as given, with the sizes already
/// known (0 for new ones: a walk measures them at the next full collection); each container
/// `inspected` put in (replacing the one of its id, or first as the newest) or, when it is gone
/// (`None`), taken out; and the in-use counts that the containers determine (containers per
/// image unless images were asked, containers per volume).
pub fn merge(
    last: &DiskUsage,
    df: &[DfType],
    typed: Option<DiskUsage>,
    containers: Option<Vec<Container>>,
    inspected: Vec<(String, Option<Container>)>,
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
    let containers_changed =
        containers.is_some() || !inspected.is_empty() || df.contains(&DfType::Container);
    if let Some(mut list) = containers {
        let sizes: HashMap<&str, i64> = last
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c.size_rw))
            .collect();
        for c in &mut list {
            c.size_rw = sizes.get(c.id.as_str()).copied().unwrap_or(0);
        }
        du.containers = list;
    }
    for (id, c) in inspected {
        let at = du.containers.iter().position(|k| k.id == id);
        match (at, c) {
            (Some(i), Some(c)) => du.containers[i] = c,
            (None, Some(c)) => du.containers.insert(0, c),
            (Some(i), None) => {
                du.containers.remove(i);
            }
            (None, None) => {}
        }
    }
    if containers_changed && !df.contains(&DfType::Image) {
        let mut per_image: HashMap<&str, i64> = HashMap::new();
        for c in &du.containers {
            *per_image.entry(c.image_id.as_str()).or_default() += 1;
        }
        for i in &mut du.images {
            i.containers = per_image.get(i.id.as_str()).copied().unwrap_or(0);
        }
    }
    let volumes_asked = volumes.is_some();
    if let Some(mut list) = volumes {
        let sizes: HashMap<&str, i64> = last
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.size))
            .collect();
        for v in &mut list {
            v.size = sizes.get(v.name.as_str()).copied().unwrap_or(0);
        }
        du.volumes = list;
    }
    if !containers_changed && !volumes_asked {
        return du;
    }
    let mut refs: HashMap<&str, i64> = HashMap::new();
    for c in &du.containers {
        for v in &c.volumes {
            *refs.entry(v.as_str()).or_default() += 1;
        }
    }
    for v in &mut du.volumes {
        v.ref_count = refs.get(v.name.as_str()).copied().unwrap_or(0);
    }
    du
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::Image;

    /// [`decide`] without a held budget; a disk that `moved` sets the resync, as the collector does.
    fn decide_at(
        have_last: bool,
        full_due: bool,
        moved: bool,
        typed: bool,
        containerd: bool,
        p: &Pending,
    ) -> Refresh {
        let mut p = p.clone();
        p.resync |= moved;
        let s = Situation {
            have_last,
            full_due,
            typed,
            containerd,
            held: false,
        };
        decide(s, &p)
    }

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
        assert_eq!(changed_by("container", "destroy"), &[DfType::Container]);
        assert_eq!(changed_by("builder", "prune"), &[DfType::BuildCache]);
        // A prune names no container: the list is asked.
        assert!(!p.list);
        p.note("container", "prune", "");
        assert!(p.list);
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
        assert_eq!(
            decide_at(false, false, false, true, false, &none),
            Refresh::Full
        );
        assert_eq!(
            decide_at(true, true, false, true, false, &none),
            Refresh::Full
        );
        assert_eq!(
            decide_at(true, false, false, true, false, &Pending::default()),
            Refresh::Full
        );
        assert_eq!(
            decide_at(true, false, false, true, false, &none),
            Refresh::Unchanged
        );
        // A started container: that container alone, on any API and with the classic store.
        let mut started = pending(&[]);
        started.note("container", "start", "c1");
        let alone = Refresh::Partial(Partial {
            df: vec![],
            containers: false,
            measure: vec!["c1".into()],
            volumes: false,
        });
        assert_eq!(decide_at(true, false, false, false, false, &started), alone);
        assert_eq!(decide_at(true, false, false, true, false, &started), alone);
        // With the containerd image store its image's figures too.
        assert_eq!(
            decide_at(true, false, false, true, true, &started),
            Refresh::Partial(Partial {
                df: vec![DfType::Image],
                containers: false,
                measure: vec!["c1".into()],
                volumes: false
            })
        );
        // A prune: the list as well.
        let mut pruned = started.clone();
        pruned.note("container", "prune", "");
        assert_eq!(
            decide_at(true, false, false, true, false, &pruned),
            Refresh::Partial(Partial {
                df: vec![],
                containers: true,
                measure: vec!["c1".into()],
                volumes: false
            })
        );
        // Too many: all containers through ?type=, or a full one without it.
        started.measure_all = true;
        assert_eq!(
            decide_at(true, false, false, true, true, &started),
            Refresh::Partial(Partial {
                df: vec![DfType::Image, DfType::Container],
                containers: false,
                measure: vec![],
                volumes: false
            })
        );
        assert_eq!(
            decide_at(true, false, false, false, false, &started),
            Refresh::Full
        );
        let tagged = pending(&[DfType::Image, DfType::BuildCache]);
        assert_eq!(
            decide_at(true, false, false, true, false, &tagged),
            Refresh::Partial(Partial {
                df: vec![DfType::Image, DfType::BuildCache],
                containers: false,
                measure: vec![],
                volumes: false
            })
        );
        // A volume's event asks the volume list, nothing else.
        let mut volume = pending(&[]);
        volume.note("volume", "create", "v1");
        assert_eq!(
            decide_at(true, false, false, false, false, &volume),
            Refresh::Partial(Partial {
                df: vec![],
                containers: false,
                measure: vec![],
                volumes: true
            })
        );
        // The disk moved without an event: everything.
        assert_eq!(
            decide_at(true, false, true, true, false, &none),
            Refresh::Full
        );
        assert!(!moved(10 << 30, (10 << 30) + (63 << 20), 100 << 30 >> 4));
        assert!(moved(10 << 30, (10 << 30) + (64 << 20), 1 << 30));
        assert!(!moved(50 << 30, (50 << 30) - (900 << 20), 100 << 30));
        assert!(moved(50 << 30, (50 << 30) - (1100 << 20), 100 << 30));
        // Without ?type= an image change costs a full one.
        assert_eq!(
            decide_at(true, false, false, false, false, &tagged),
            Refresh::Full
        );
    }

    #[test]
    fn a_held_budget_asks_only_the_cheap_parts_and_keeps_the_rest_pending_until_it_allows() {
        let held = Situation {
            have_last: true,
            typed: true,
            held: true,
            ..Situation::default()
        };
        let free = Situation {
            held: false,
            ..held
        };
        // A tagged build alone: nothing is asked while held, and it stays pending.
        let mut p = pending(&[DfType::Image, DfType::BuildCache]);
        assert_eq!(decide(held, &p), Refresh::Unchanged);
        p.answered(&Refresh::Unchanged);
        assert_eq!(p.dirty.len(), 2);
        // A started container meanwhile: its inspection is cheap, so it goes ahead alone.
        p.note("container", "start", "c1");
        let asked = decide(held, &p);
        assert_eq!(
            asked,
            Refresh::Partial(Partial {
                df: vec![],
                containers: false,
                measure: vec!["c1".into()],
                volumes: false
            })
        );
        p.answered(&asked);
        assert!(p.measure.is_empty());
        assert_eq!(
            p.dirty.iter().copied().collect::<Vec<_>>(),
            vec![DfType::Image, DfType::BuildCache]
        );
        // Once the budget allows, the images and build cache.
        let asked = decide(free, &p);
        assert_eq!(
            asked,
            Refresh::Partial(Partial {
                df: vec![DfType::Image, DfType::BuildCache],
                containers: false,
                measure: vec![],
                volumes: false
            })
        );
        p.answered(&asked);
        assert!(p.dirty.is_empty());
        assert_eq!(decide(free, &p), Refresh::Unchanged);

        // A due full collection, or a resync, waits for the budget too (the cheap parts go
        // ahead, the resync stays); the first collection never does.
        let mut p = pending(&[]);
        p.resync = true;
        p.note("volume", "create", "v1");
        let due = Situation {
            full_due: true,
            ..held
        };
        let asked = decide(due, &p);
        assert_eq!(
            asked,
            Refresh::Partial(Partial {
                df: vec![],
                containers: false,
                measure: vec![],
                volumes: true
            })
        );
        p.answered(&asked);
        assert!(p.resync && p.dirty.is_empty());
        assert_eq!(decide(free, &p), Refresh::Full);
        p.answered(&Refresh::Full);
        assert!(!p.resync);
        let first = Situation {
            have_last: false,
            ..held
        };
        assert_eq!(decide(first, &pending(&[])), Refresh::Full);

        // Too many containers: their cheap list while held, all of them by ?type= after.
        let mut p = pending(&[]);
        for i in 0..MAX_MEASURED + 1 {
            p.note("container", "die", &format!("c{i}"));
        }
        let asked = decide(held, &p);
        assert_eq!(
            asked,
            Refresh::Partial(Partial {
                df: vec![],
                containers: true,
                measure: vec![],
                volumes: false
            })
        );
        p.answered(&asked);
        assert!(p.measure_all && p.dirty.contains(&DfType::Container));
        let asked = decide(free, &p);
        assert_eq!(
            asked,
            Refresh::Partial(Partial {
                df: vec![DfType::Container],
                containers: false,
                measure: vec![],
                volumes: false
            })
        );
        p.answered(&asked);
        assert!(!p.measure_all && p.measure.is_empty() && p.dirty.is_empty());
    }

    #[test]
    fn the_budget_pauses_in_proportion_to_the_last_answer_and_within_bounds() {
        use std::time::Duration;
        let one_percent = Budget { share: 0.01 };
        assert_eq!(
            one_percent.pause_after(Duration::from_secs(1)),
            Duration::from_secs(99)
        );
        assert_eq!(
            one_percent.pause_after(Duration::from_millis(50)),
            Duration::from_millis(4950)
        );
        assert_eq!(
            Budget { share: 1.0 }.pause_after(Duration::from_secs(60)),
            Duration::ZERO
        );
        assert_eq!(
            one_percent.pause_after(Duration::from_secs(10_000)),
            Duration::from_secs(86_400)
        );
        for share in [0.0, -1.0, f64::NAN] {
            assert_eq!(
                Budget { share }.pause_after(Duration::from_secs(1)),
                Duration::ZERO
            );
        }
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
        // c1 stays, c2 is new on i2 with a new volume: the list, then the lists' merge.
        let list = vec![
            container("c1", "i1", -1, &["data"]),
            container("c2", "i2", -1, &["new"]),
        ];
        let vols = vec![volume("data", -1), volume("new", -1)];
        let du = merge(&last, &[], None, Some(list), Vec::new(), Some(vols));
        let sizes: Vec<i64> = du.containers.iter().map(|c| c.size_rw).collect();
        assert_eq!(sizes, [500, 0]);
        let counts: Vec<i64> = du.images.iter().map(|i| i.containers).collect();
        assert_eq!(counts, [1, 1]);
        let v: Vec<(i64, i64)> = du.volumes.iter().map(|v| (v.size, v.ref_count)).collect();
        assert_eq!(v, [(7000, 1), (0, 1)]);

        // The same through inspections alone: c2 comes first (the newest) with its measured
        // size; then c1 goes, and the counts follow without the volume list.
        let c2 = container("c2", "i2", 4096, &["data"]);
        let du = merge(&last, &[], None, None, vec![("c2".into(), Some(c2))], None);
        let ids: Vec<(&str, i64)> = du
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c.size_rw))
            .collect();
        assert_eq!(ids, [("c2", 4096), ("c1", 500)]);
        let counts: Vec<i64> = du.images.iter().map(|i| i.containers).collect();
        assert_eq!(counts, [1, 1]);
        assert_eq!(du.volumes[0].ref_count, 2);
        let du = merge(
            &du,
            &[],
            None,
            None,
            vec![("c1".into(), None), ("gone".into(), None)],
            None,
        );
        let ids: Vec<&str> = du.containers.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c2"]);
        let counts: Vec<i64> = du.images.iter().map(|i| i.containers).collect();
        assert_eq!(counts, [0, 1]);
        assert_eq!((du.volumes[0].size, du.volumes[0].ref_count), (7000, 1));
        // A started container's new state replaces the old.
        let mut running = container("c2", "i2", 8192, &["data"]);
        running.state = "running".into();
        let du = merge(
            &du,
            &[],
            None,
            None,
            vec![("c2".into(), Some(running.clone()))],
            None,
        );
        assert_eq!(du.containers, [running]);

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
        let du = merge(&last, &[DfType::Image], Some(typed), None, Vec::new(), None);
        assert_eq!(du.images.len(), 1);
        assert_eq!(du.layers_size, Some(42));
        assert_eq!(du.containers, last.containers);
        assert_eq!(du.volumes, last.volumes);
    }
}
