//! Cleanup levels, the host's cleanup policy and the planner. Pure: no I/O.
//!
//! The planner answers "what would each level remove now, and how many bytes would that free?"
//! from one `/system/df` answer. It uses the definitions Docker's prune endpoints use, so that a
//! dry run's estimate and a real run's `SpaceReclaimed` agree:
//!
//! - build cache: records neither in use nor shared with an image, and not BuildKit's own
//!   `internal`/`frontend` records (`docker builder prune` without `--all`), last used before the
//!   cut-off; bytes are the records' sizes. On the containerd image store a record that Docker
//!   calls shared goes too: the image keeps its own snapshot and content there, so removing the
//!   record frees its bytes and leaves the image whole (measured on 28.5: `builder prune -a`
//!   freed a 50 MiB build's records and the image still ran), and Docker's flag flips from one
//!   answer to the next for the same records;
//! - containers: every container that is not running, paused, restarting or being removed,
//!   created before the cut-off; bytes are their writable layers (`SizeRw`);
//! - images: not used by any container that survives the run (a stopped container removed by an
//!   earlier level no longer holds its image), created before the cut-off; dangling ones first,
//!   then tagged ones; bytes are each image's unique size (size minus shared size);
//! - volumes: not mounted by any surviving container, created before the cut-off; bytes are their
//!   usage data.
//!
//! Every level skips objects that carry a protect label. Build cache records have no labels.
//!
//! **Least recently used first.** Build cache records are removed in the order of their last
//! use (BuildKit's `LastUsedAt`, else their creation), images in the order of bilge's own
//! record of their last use ([`Recency`], from Docker's events; else their creation), so that a
//! run stopping at its target inside a level ([`stop_point`]) has removed the coldest objects.
//! Containers and volumes are removed largest first (their levels run whole).
//!
//! **Warm budgets.** `build_cache_keep` and `images_keep` keep the most recently used build
//! cache (every record BuildKit could remove, in use ones included) and the most recently used
//! unused images (dangling or tagged) until their sizes add up to at least the budget, whatever
//! the level.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::docker::{DiskUsage, total_bytes as total};
pub use crate::docker::{MAX_IMAGE_KEY, image_key, image_used_by};
use crate::format::{FreeTarget, format_duration};
pub use crate::model::Level;

/// The host's cleanup policy: what may be removed, how much, how often.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Only objects older than this are removed.
    pub until: Duration,
    /// Labels (`key` or `key=value`) that protect an object from every level.
    pub protect_labels: Vec<String>,
    /// The highest level any request may reach on this host.
    pub max_level: Level,
    /// Whether `unused_volumes` may run at all.
    pub allow_volumes: bool,
    /// Stop once the data root has this much available.
    pub target_free: FreeTarget,
    /// Least time between the start of two runs from the webhook or watermarks.
    pub cooldown: Duration,
    /// Start the standard level when available space falls under this.
    pub low_watermark: Option<FreeTarget>,
    /// With a low watermark: clean until available space is above this.
    pub high_watermark: Option<FreeTarget>,
    /// Build cache kept whatever the level, most recently used first.
    pub build_cache_keep: Option<FreeTarget>,
    /// Unused images kept whatever the level, most recently used first.
    pub images_keep: Option<FreeTarget>,
    /// Under this much available, an automatic run holds nothing back for running builds.
    pub emergency_free: FreeTarget,
    /// Start the standard level when the data root is predicted full within this.
    pub forecast_watermark: Option<Duration>,
    /// Whether a run still short of its target may truncate container logs ([`super::logs`]).
    pub allow_log_truncation: bool,
    /// Only logs larger than this are truncated.
    pub log_truncate_over: u64,
    /// Cleanups on a calendar ([`super::schedule`]).
    pub schedules: Vec<super::schedule::Schedule>,
    /// A schedule missed while bilge was down runs at a random moment within this after start.
    pub catch_up_delay: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            until: Duration::from_secs(24 * 3600),
            protect_labels: vec!["bilge.keep=true".into()],
            max_level: Level::STANDARD,
            allow_volumes: false,
            target_free: FreeTarget::Percent(15.0),
            cooldown: Duration::from_secs(300),
            low_watermark: None,
            high_watermark: None,
            build_cache_keep: None,
            images_keep: None,
            emergency_free: FreeTarget::Percent(2.0),
            forecast_watermark: None,
            allow_log_truncation: false,
            log_truncate_over: 1 << 30,
            schedules: Vec::new(),
            catch_up_delay: super::schedule::DEFAULT_CATCH_UP_DELAY,
        }
    }
}

impl Policy {
    /// The highest level a request for `wanted` may run on this host.
    pub fn cap(&self, wanted: Level) -> Level {
        let mut top = wanted.min(self.max_level);
        if top == Level::UnusedVolumes && !self.allow_volumes {
            top = Level::UnusedImages;
        }
        top
    }

    /// True when `labels` carry one of the protect labels (`key` matches any value).
    pub fn protects(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        self.protect_labels.iter().any(|p| match p.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(p.as_str()),
        })
    }
}

/// One object a level would remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Full id (volume name for volumes).
    pub id: String,
    /// A readable, bounded name.
    pub name: String,
    /// Bytes removing it frees, as Docker counts them.
    pub bytes: u64,
    /// When it was last used, as far as anyone knows (build cache and images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
}

/// Objects a level leaves alone, by reason (an object is counted under its first reason).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// Running, or used by a container that stays (build cache: in use or shared).
    pub in_use: u64,
    /// Carrying a protect label.
    pub protected: u64,
    /// Younger than `until` (or of unknown age).
    pub too_young: u64,
    /// Among the most recently used, inside the level's warm budget.
    pub budget: u64,
    /// Used since the oldest running build started (or, for tagged images, possibly a running
    /// build's base image), kept for the builds.
    pub building: u64,
}

/// A warm budget and what fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Bytes the budget keeps (at least).
    pub keep_bytes: u64,
    /// Bytes of the most recently used objects it holds now (in use ones included).
    pub held_bytes: u64,
}

/// What one level would remove.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelPlan {
    /// The level.
    pub level: Level,
    /// Number of objects it would remove.
    pub objects: u64,
    /// Estimated bytes freed.
    pub bytes: u64,
    /// What it leaves alone and why.
    pub kept: Kept,
    /// Its warm budget, when the policy sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The objects in the order they go: least recently used first where the level can stop
    /// inside ([`Level::stops_inside`]), else largest first.
    pub candidates: Vec<Candidate>,
}

/// A cleanup plan: for each level up to the capped one, what it would remove.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The level asked for.
    pub requested: Level,
    /// The level the host's policy allows for that request.
    pub level: Level,
    /// Only objects older than this are removed.
    #[serde(serialize_with = "serialize_duration")]
    pub until: Duration,
    /// The instant `until` cut at when the plan was made (`None`: nothing is old enough). A
    /// level that goes whole passes it to Docker's prune as an absolute `until`, so the prune
    /// removes nothing the plan judged too young, however long the run has taken by then.
    #[serde(skip)]
    pub cutoff: Option<DateTime<Utc>>,
    /// Levels in the order they run.
    pub levels: Vec<LevelPlan>,
    /// Estimated bytes over every level.
    pub bytes: u64,
    /// Where a run would stop, from the estimates, when it starts short of its target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
}

/// The warm budgets of a plan and what holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Budgets {
    /// `build_cache_keep`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_cache: Option<Budget>,
    /// `images_keep`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Budget>,
}

impl Budgets {
    /// The budgets plan `p` applied (the image one once it reaches `dangling_images`).
    pub fn of(p: &Plan) -> Budgets {
        let of = |l: Level| p.level(l).and_then(|l| l.budget);
        Budgets {
            build_cache: of(Level::BuildCache),
            images: of(Level::DanglingImages).or_else(|| of(Level::UnusedImages)),
        }
    }

    /// The budgets of `policy` over `du` now, whatever their level's age limit.
    pub fn now(du: &DiskUsage, policy: &Policy, ctx: Context<'_>) -> Budgets {
        Budgets::of(&plan_with(
            du,
            policy,
            Level::DanglingImages,
            policy.until,
            Utc::now(),
            ctx,
        ))
    }

    /// One line per budget set, for a person.
    pub fn lines(&self) -> Vec<String> {
        [
            ("build cache", self.build_cache),
            ("unused images", self.images),
        ]
        .into_iter()
        .filter_map(|(what, b)| {
            let b = b?;
            Some(format!(
                "Warm budget, {what}: keeps {} of the most recently used; {} held now.",
                crate::format::human_bytes(b.keep_bytes),
                crate::format::human_bytes(b.held_bytes)
            ))
        })
        .collect()
    }
}

/// Where a run would stop from the plan's estimates ([`stop_point`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stop {
    /// Bytes the run needs to free to meet its target.
    pub need_bytes: u64,
    /// The level it would stop in, or `None` when the whole plan would not free that much.
    pub level: Option<Level>,
    /// How many of that level's candidates it would remove (in their order).
    pub objects: usize,
}

impl Stop {
    /// The stop of a run that needs `need` bytes more under plan `p`.
    pub fn of(p: &Plan, need: u64) -> Stop {
        let at = stop_point(p, need);
        Stop {
            need_bytes: need,
            level: at.map(|a| a.0),
            objects: at.map_or(0, |a| a.1),
        }
    }
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

impl Plan {
    /// The plan of one level, if the plan includes it.
    pub fn level(&self, level: Level) -> Option<&LevelPlan> {
        self.levels.iter().find(|l| l.level == level)
    }

    /// Objects over every level.
    pub fn objects(&self) -> u64 {
        self.levels.iter().map(|l| l.objects).sum()
    }
}

fn pos(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Builds one level's plan from its candidates: those of a level that stops inside come in the
/// order they go (least recently used first, see [`by_use`] and [`chain_use`]); the others are
/// put largest first.
fn level_plan(level: Level, mut candidates: Vec<Candidate>, kept: Kept) -> LevelPlan {
    if !level.stops_inside() {
        candidates.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    }
    LevelPlan {
        level,
        objects: candidates.len() as u64,
        bytes: total(candidates.iter().map(|c| c.bytes)),
        kept,
        budget: None,
        candidates,
    }
}

/// Orders candidates least recently used first: never used first, then by last use, larger
/// first on a tie.
fn by_use(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        a.last_used
            .cmp(&b.last_used)
            .then_with(|| b.bytes.cmp(&a.bytes))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// True when `used` is at or after `since`'s whole second (never, without a `since`): Docker
/// gives images' creation in whole seconds, so an image built in the second a build started
/// counts as used since.
fn used_since(used: Option<DateTime<Utc>>, since: Option<DateTime<Utc>>) -> bool {
    matches!((used, since), (Some(u), Some(s)) if u.timestamp() >= s.timestamp())
}

/// The most ancestors followed from one build cache record.
const MAX_ANCESTORS: usize = 256;

/// Each build cache record's last use as a chain, and its number of ancestors. BuildKit removes
/// a record only once nothing is built on it, and using a record uses what it was built on: so
/// a record counts as used when anything built on it was, and goes after them (it has fewer
/// ancestors than each of them).
fn chain_use(
    records: &[crate::docker::BuildCacheRecord],
) -> HashMap<&str, (Option<DateTime<Utc>>, usize)> {
    let by_id: HashMap<&str, &crate::docker::BuildCacheRecord> =
        records.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut out: HashMap<&str, (Option<DateTime<Utc>>, usize)> = records
        .iter()
        .map(|r| (r.id.as_str(), (r.last_touched(), 0)))
        .collect();
    for r in records {
        let used = r.last_touched();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut up: Vec<&str> = r.parents.iter().map(String::as_str).collect();
        while let Some(p) = up.pop() {
            if seen.len() >= MAX_ANCESTORS || !seen.insert(p) {
                continue;
            }
            if let Some(e) = out.get_mut(p) {
                e.0 = e.0.max(used);
            }
            if let Some(parent) = by_id.get(p) {
                up.extend(parent.parents.iter().map(String::as_str));
            }
        }
        if let Some(e) = out.get_mut(r.id.as_str()) {
            e.1 = seen.len();
        }
    }
    out
}

/// bilge's record of when images were last used, from Docker's events (pull, tag, import,
/// load, a container's create or start), keyed by [`image_key`]. Docker keeps no such record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recency {
    /// Last use by key.
    pub uses: HashMap<String, DateTime<Utc>>,
}

impl Recency {
    /// When `image` was last used: the newest of its creation and every recorded use of its
    /// id or of one of its tags.
    pub fn image_last_used(&self, image: &crate::docker::Image) -> Option<DateTime<Utc>> {
        let created = DateTime::from_timestamp(image.created, 0).filter(|_| image.created > 0);
        let by_id = image_key(&image.id).and_then(|k| self.uses.get(&k).copied());
        let by_tag = image
            .repo_tags
            .iter()
            .filter(|t| *t != "<none>:<none>")
            .filter_map(|t| self.uses.get(t.as_str()).copied())
            .max();
        [created, by_id, by_tag].into_iter().flatten().max()
    }
}

/// What the planner needs beyond `/system/df`: the images' last uses and the data root's size
/// (for budgets given as a share of it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// Images' last uses.
    pub recency: Option<&'a Recency>,
    /// The data root filesystem's size in bytes, when measured.
    pub fs_size: Option<u64>,
    /// When the oldest build running on the host started, when its objects are to be left
    /// alone: build cache and dangling images used since then are kept, and every tagged image
    /// (Docker does not say which ones a running build stands on: a build's base image is
    /// removable while the build runs, and the next build would find it gone).
    pub building_since: Option<DateTime<Utc>>,
    /// Whether the daemon keeps images in the containerd image store, where a build cache
    /// record shared with an image is a copy of its own (see the module docs).
    pub containerd_store: bool,
}

/// The warm budget `keep` over `items` (each `(key, bytes, recency)`, the greater recency the
/// more recently used): walking from the most recently used, every item is held until the held
/// bytes reach the budget. Returns the keys
/// held and the budget's figures. A percentage of an unmeasured filesystem keeps nothing.
fn fill_budget<K: Ord>(
    keep: Option<FreeTarget>,
    fs_size: Option<u64>,
    mut items: Vec<(&str, u64, K)>,
) -> (HashSet<&str>, Option<Budget>) {
    let Some(keep) = keep else {
        return (HashSet::new(), None);
    };
    let keep_bytes = match (keep, fs_size) {
        (FreeTarget::Bytes(b), _) => b,
        (FreeTarget::Percent(_), Some(size)) => keep.bytes_for(size),
        (FreeTarget::Percent(_), None) => 0,
    };
    items.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0)));
    let mut held = HashSet::new();
    let mut held_bytes = 0u64;
    for (key, bytes, _) in items {
        if held_bytes >= keep_bytes {
            break;
        }
        held_bytes = held_bytes.saturating_add(bytes);
        held.insert(key);
    }
    (
        held,
        Some(Budget {
            keep_bytes,
            held_bytes,
        }),
    )
}

/// Where a run that needs `need` more bytes available would stop, from the plan's estimates:
/// the level, and how many of its candidates it would remove (every one, for a level that runs
/// whole). `None` when the whole plan would not free that much.
pub fn stop_point(p: &Plan, need: u64) -> Option<(Level, usize)> {
    let mut freed = 0u64;
    for l in &p.levels {
        if need == 0 || freed >= need {
            return Some((l.level, 0));
        }
        if l.level.stops_inside() {
            for (i, c) in l.candidates.iter().enumerate() {
                freed = freed.saturating_add(c.bytes);
                if freed >= need {
                    return Some((l.level, i + 1));
                }
            }
        } else {
            freed = freed.saturating_add(l.bytes);
            if freed >= need {
                return Some((l.level, l.candidates.len()));
            }
        }
    }
    None
}

/// Plans a cleanup of `du` up to `wanted` (capped by `policy`), removing only objects older than
/// `until` at `now`, without a record of images' use or the filesystem's size. Pure.
pub fn plan(
    du: &DiskUsage,
    policy: &Policy,
    wanted: Level,
    until: Duration,
    now: DateTime<Utc>,
) -> Plan {
    plan_with(du, policy, wanted, until, now, Context::default())
}

/// [`plan`] with what `ctx` knows: images ordered by their recorded last use, budgets given as
/// a share of the data root. Pure.
pub fn plan_with(
    du: &DiskUsage,
    policy: &Policy,
    wanted: Level,
    until: Duration,
    now: DateTime<Utc>,
    ctx: Context<'_>,
) -> Plan {
    let level = policy.cap(wanted);
    let no_record = Recency::default();
    let recency = ctx.recency.unwrap_or(&no_record);
    // An `until` beyond chrono's range leaves no cut-off: nothing is old enough.
    let cutoff = TimeDelta::from_std(until)
        .ok()
        .and_then(|d| now.checked_sub_signed(d));
    // BuildKit compares exact times: a record last used at or before the cut-off goes.
    let old = |t: Option<DateTime<Utc>>| matches!((t, cutoff), (Some(t), Some(c)) if t <= c);
    // Docker turns `until` into whole Unix seconds and keeps objects created after that, while
    // `/system/df` reports creation in whole seconds: an object created in the cut-off's own
    // second is (but for its first nanosecond) younger, so only earlier seconds are old enough.
    let old_secs = |secs: i64| cutoff.is_some_and(|c| secs < c.timestamp());
    let mut levels = Vec::new();

    if level >= Level::BuildCache {
        let removable = |r: &&crate::docker::BuildCacheRecord| {
            !((r.shared && !ctx.containerd_store) || r.kind == "internal" || r.kind == "frontend")
        };
        let chains = chain_use(&du.build_cache);
        let chain = |r: &crate::docker::BuildCacheRecord| {
            chains
                .get(r.id.as_str())
                .copied()
                .unwrap_or((r.last_touched(), 0))
        };
        // Held newest first and, on a tie, what others are built on first.
        let (warm, budget) = fill_budget(
            policy.build_cache_keep,
            ctx.fs_size,
            du.build_cache
                .iter()
                .filter(removable)
                .map(|r| {
                    let (used, ancestors) = chain(r);
                    (
                        r.id.as_str(),
                        pos(r.size),
                        (used, std::cmp::Reverse(ancestors)),
                    )
                })
                .collect(),
        );
        let mut kept = Kept::default();
        let mut cands = Vec::new();
        for r in &du.build_cache {
            if r.in_use || !removable(&r) {
                kept.in_use += 1;
            } else if !old(r.last_touched()) {
                kept.too_young += 1;
            } else if warm.contains(r.id.as_str()) {
                kept.budget += 1;
            } else if used_since(chain(r).0, ctx.building_since) {
                kept.building += 1;
            } else {
                let (used, ancestors) = chain(r);
                cands.push((
                    ancestors,
                    Candidate {
                        id: r.id.clone(),
                        name: format!("{} {}", r.kind, crate::docker::short_id(&r.id)),
                        bytes: pos(r.size),
                        last_used: used,
                    },
                ));
            }
        }
        // Least recently used chains first and, inside one, what is built on a record first.
        cands.sort_by(|a, b| {
            (
                a.1.last_used,
                std::cmp::Reverse(a.0),
                std::cmp::Reverse(a.1.bytes),
                &a.1.id,
            )
                .cmp(&(
                    b.1.last_used,
                    std::cmp::Reverse(b.0),
                    std::cmp::Reverse(b.1.bytes),
                    &b.1.id,
                ))
        });
        let cands = cands.into_iter().map(|c| c.1).collect();
        let mut lp = level_plan(Level::BuildCache, cands, kept);
        lp.budget = budget;
        levels.push(lp);
    }

    // Containers that this plan removes: their images and volumes are free afterwards.
    let mut removed: HashSet<&str> = HashSet::new();
    if level >= Level::StoppedContainers {
        let mut kept = Kept::default();
        let mut cands = Vec::new();
        for c in &du.containers {
            if c.is_active() || c.state.contains("removing") {
                kept.in_use += 1;
            } else if policy.protects(&c.labels) {
                kept.protected += 1;
            } else if !old_secs(c.created) {
                kept.too_young += 1;
            } else {
                removed.insert(c.id.as_str());
                cands.push(Candidate {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    bytes: pos(c.size_rw),
                    last_used: None,
                });
            }
        }
        levels.push(level_plan(Level::StoppedContainers, cands, kept));
    }
    let staying = || {
        du.containers
            .iter()
            .filter(|c| !removed.contains(c.id.as_str()))
    };
    let used_images: HashSet<&str> = staying().map(|c| c.image_id.as_str()).collect();
    // A daemon that counts containers per image but lists none we can match: trust it.
    let in_use = |i: &crate::docker::Image| {
        used_images.contains(i.id.as_str()) || (i.containers > 0 && du.containers.is_empty())
    };
    let (warm_images, image_budget) = if level >= Level::DanglingImages {
        fill_budget(
            policy.images_keep,
            ctx.fs_size,
            du.images
                .iter()
                .filter(|i| !in_use(i))
                .map(|i| {
                    let used = recency.image_last_used(i);
                    (i.id.as_str(), pos(i.unique_size()), used)
                })
                .collect(),
        )
    } else {
        (HashSet::new(), None)
    };

    for (img_level, dangling) in [(Level::DanglingImages, true), (Level::UnusedImages, false)] {
        if level < img_level {
            continue;
        }
        let mut kept = Kept::default();
        let mut cands = Vec::new();
        for i in du.images.iter().filter(|i| i.is_dangling() == dangling) {
            if in_use(i) {
                kept.in_use += 1;
            } else if policy.protects(&i.labels) {
                kept.protected += 1;
            } else if !old_secs(i.created) {
                kept.too_young += 1;
            } else if warm_images.contains(i.id.as_str()) {
                kept.budget += 1;
            } else if ctx.building_since.is_some()
                && (!dangling || used_since(recency.image_last_used(i), ctx.building_since))
            {
                kept.building += 1;
            } else {
                cands.push(Candidate {
                    id: i.id.clone(),
                    name: i.display_name(),
                    bytes: pos(i.unique_size()),
                    last_used: recency.image_last_used(i),
                });
            }
        }
        by_use(&mut cands);
        let mut lp = level_plan(img_level, cands, kept);
        lp.budget = image_budget;
        levels.push(lp);
    }

    if level >= Level::UnusedVolumes {
        let mut kept = Kept::default();
        let mut cands = Vec::new();
        for v in &du.volumes {
            let freed = du
                .containers
                .iter()
                .filter(|c| removed.contains(c.id.as_str()) && c.volumes.contains(&v.name))
                .count() as i64;
            let mounted = staying().any(|c| c.volumes.contains(&v.name));
            // An unknown reference count (-1) counts as in use.
            if mounted || v.ref_count < 0 || v.ref_count - freed > 0 {
                kept.in_use += 1;
            } else if policy.protects(&v.labels) {
                kept.protected += 1;
            } else if !v.created_at.is_some_and(|t| old_secs(t.timestamp())) {
                kept.too_young += 1;
            } else {
                cands.push(Candidate {
                    id: v.name.clone(),
                    name: if v.anonymous {
                        crate::docker::short_id(&v.name).to_string()
                    } else {
                        v.name.clone()
                    },
                    bytes: pos(v.size),
                    last_used: None,
                });
            }
        }
        levels.push(level_plan(Level::UnusedVolumes, cands, kept));
    }

    Plan {
        requested: wanted,
        level,
        until,
        cutoff,
        bytes: total(levels.iter().map(|l| l.bytes)),
        levels,
        stop: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{BuildCacheRecord, Container, Image, Volume};
    use std::collections::HashMap;

    /// The planner's clock: 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(NOW, 0).unwrap_or_default()
    }

    fn hours_ago(h: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(NOW - h * 3600, 0)
    }

    fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cache(id: &str, size: i64, age_h: i64) -> BuildCacheRecord {
        BuildCacheRecord {
            id: id.into(),
            kind: "regular".into(),
            size,
            created_at: hours_ago(age_h + 1),
            last_used_at: hours_ago(age_h),
            ..BuildCacheRecord::default()
        }
    }

    fn container(name: &str, state: &str, image: &str, age_h: i64) -> Container {
        Container {
            id: format!("id-{name}"),
            name: name.into(),
            image_id: image.into(),
            state: state.into(),
            size_rw: 10,
            created: NOW - age_h * 3600,
            ..Container::default()
        }
    }

    fn image(id: &str, tag: Option<&str>, unique: i64, age_h: i64) -> Image {
        Image {
            id: id.into(),
            repo_tags: tag.map(|t| vec![t.to_string()]).unwrap_or_default(),
            created: NOW - age_h * 3600,
            size: unique + 100,
            shared_size: 100,
            containers: 0,
            ..Image::default()
        }
    }

    fn volume(name: &str, refs: i64, age_h: i64) -> Volume {
        Volume {
            name: name.into(),
            size: 1000,
            ref_count: refs,
            created_at: hours_ago(age_h),
            ..Volume::default()
        }
    }

    /// A host with one object for every reason to keep or remove it. Old means 48 h.
    fn host() -> DiskUsage {
        let mut shared = cache("shared", 5000, 48);
        shared.shared = true;
        let mut busy = cache("busy", 5000, 48);
        busy.in_use = true;
        let mut internal = cache("internal", 5000, 48);
        internal.kind = "internal".into();
        let mut unused_never = cache("never-used", 30, 48);
        unused_never.last_used_at = None;
        let mut keep = container("keep", "exited", "sha256:C", 48);
        keep.labels = labels(&[("bilge.keep", "true")]);
        let mut old = container("old", "exited", "sha256:B", 48);
        old.volumes = vec!["v-old".into()];
        let mut web = container("web", "running", "sha256:A", 48);
        web.volumes = vec!["web-vol".into()];
        let mut f = image("sha256:F", None, 6, 48);
        f.labels = labels(&[("bilge.keep", "true")]);
        let mut kept_vol = volume("kept", 0, 48);
        kept_vol.labels = labels(&[("bilge.keep", "true")]);
        DiskUsage {
            build_cache: vec![
                cache("old", 100, 48),
                cache("young", 200, 1),
                shared,
                busy,
                internal,
                unused_never,
            ],
            containers: vec![
                web,
                old,
                keep,
                container("new", "exited", "sha256:D", 1),
                container("paused", "paused", "sha256:A", 48),
                container("dead", "dead", "sha256:A", 48),
            ],
            images: vec![
                image("sha256:A", Some("app:1"), 1, 48),
                image("sha256:B", Some("old:1"), 2, 48),
                image("sha256:C", Some("kept:1"), 3, 48),
                image("sha256:D", None, 4, 48),
                image("sha256:E", None, 5, 48),
                f,
                image("sha256:G", Some("young:1"), 7, 1),
                image("sha256:H", Some("unused:1"), 8, 48),
            ],
            volumes: vec![
                volume("data", 0, 48),
                volume("v-old", 1, 48),
                volume("web-vol", 1, 48),
                kept_vol,
                volume("fresh", 0, 1),
            ],
            ..DiskUsage::default()
        }
    }

    fn aggressive_host() -> Policy {
        Policy {
            max_level: Level::UnusedVolumes,
            allow_volumes: true,
            ..Policy::default()
        }
    }

    fn ids(p: &Plan, l: Level) -> Vec<String> {
        let mut v: Vec<String> = p
            .level(l)
            .map(|l| l.candidates.iter().map(|c| c.id.clone()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn on_the_containerd_image_store_a_shared_record_is_removable() {
        let at = |containerd_store| {
            let p = plan_with(
                &host(),
                &Policy::default(),
                Level::BuildCache,
                Duration::from_secs(24 * 3600),
                now(),
                Context {
                    containerd_store,
                    ..Context::default()
                },
            );
            ids(&p, Level::BuildCache)
        };
        assert_eq!(at(false), ["never-used", "old"]);
        // Busy and BuildKit's internal records stay on either store.
        assert_eq!(at(true), ["never-used", "old", "shared"]);
    }

    /// The planner's share of the `system_df` fuzz target's overflow finding: three old unused
    /// volumes that report near `i64::MAX` bytes overflowed the level's and the plan's sums.
    #[test]
    fn absurd_volume_sizes_saturate_the_plan_instead_of_overflowing() {
        let du = DiskUsage {
            volumes: ["a", "b", "c"]
                .iter()
                .map(|n| Volume {
                    name: (*n).into(),
                    size: i64::MAX,
                    ref_count: 0,
                    created_at: hours_ago(100),
                    ..Volume::default()
                })
                .collect(),
            ..DiskUsage::default()
        };
        let policy = Policy {
            max_level: Level::AGGRESSIVE,
            allow_volumes: true,
            ..Policy::default()
        };
        let p = plan(
            &du,
            &policy,
            Level::AGGRESSIVE,
            Duration::from_secs(3600),
            now(),
        );
        assert_eq!(p.level(Level::UnusedVolumes).map(|l| l.objects), Some(3));
        assert_eq!(p.bytes, u64::MAX);
    }

    #[test]
    fn the_standard_plan_has_three_levels_and_removes_only_old_unused_unprotected_objects() {
        let p = plan(
            &host(),
            &Policy::default(),
            Level::STANDARD,
            Duration::from_secs(24 * 3600),
            now(),
        );
        assert_eq!(p.levels.len(), 3);
        assert_eq!(ids(&p, Level::BuildCache), ["never-used", "old"]);
        assert_eq!(ids(&p, Level::StoppedContainers), ["id-dead", "id-old"]);
        // D is used by a young container that stays; F is protected.
        assert_eq!(ids(&p, Level::DanglingImages), ["sha256:E"]);
        let cache = p.level(Level::BuildCache).map(|l| (l.bytes, l.kept));
        assert_eq!(
            cache,
            Some((
                130,
                Kept {
                    in_use: 3,
                    protected: 0,
                    too_young: 1,
                    budget: 0,
                    building: 0
                }
            ))
        );
        assert_eq!(p.bytes, 130 + 20 + 5);
        assert_eq!(p.objects(), 5);
    }

    #[test]
    fn running_containers_and_their_images_are_never_candidates() {
        let p = plan(
            &host(),
            &aggressive_host(),
            Level::AGGRESSIVE,
            Duration::ZERO,
            now(),
        );
        let containers = ids(&p, Level::StoppedContainers);
        assert!(!containers.contains(&"id-web".to_string()));
        assert!(!containers.contains(&"id-paused".to_string()));
        for l in [Level::DanglingImages, Level::UnusedImages] {
            assert!(!ids(&p, l).contains(&"sha256:A".to_string()), "{l}");
        }
        assert!(!ids(&p, Level::UnusedVolumes).contains(&"web-vol".to_string()));
    }

    #[test]
    fn images_of_containers_removed_by_an_earlier_level_are_unused() {
        let p = plan(
            &host(),
            &aggressive_host(),
            Level::UnusedImages,
            Duration::from_secs(24 * 3600),
            now(),
        );
        // B's only container ("old") goes in stopped_containers; C's container is protected;
        // G is too young; H was never used.
        assert_eq!(ids(&p, Level::UnusedImages), ["sha256:B", "sha256:H"]);
        let kept = p.level(Level::UnusedImages).map(|l| l.kept);
        assert_eq!(
            kept,
            Some(Kept {
                in_use: 2,
                protected: 0,
                too_young: 1,
                budget: 0,
                building: 0
            })
        );
        assert_eq!(p.level(Level::UnusedImages).map(|l| l.bytes), Some(10));
    }

    #[test]
    fn a_plan_that_keeps_stopped_containers_keeps_their_images() {
        let policy = Policy {
            protect_labels: vec!["bilge.keep".into()],
            ..aggressive_host()
        };
        // With a week's `until`, no container is old enough to go, so B stays in use.
        let p = plan(
            &host(),
            &policy,
            Level::UnusedImages,
            Duration::from_secs(7 * 24 * 3600),
            now(),
        );
        assert!(ids(&p, Level::StoppedContainers).is_empty());
        assert!(ids(&p, Level::UnusedImages).is_empty());
    }

    #[test]
    fn volumes_go_only_where_the_host_allows_them() {
        let p = plan(
            &host(),
            &Policy {
                max_level: Level::UnusedVolumes,
                ..Policy::default()
            },
            Level::AGGRESSIVE,
            Duration::ZERO,
            now(),
        );
        assert_eq!(p.level, Level::UnusedImages);
        assert!(p.level(Level::UnusedVolumes).is_none());

        let p = plan(
            &host(),
            &aggressive_host(),
            Level::AGGRESSIVE,
            Duration::from_secs(24 * 3600),
            now(),
        );
        // v-old was mounted only by "old", which goes first; "kept" is protected; "fresh" is young.
        assert_eq!(ids(&p, Level::UnusedVolumes), ["data", "v-old"]);
    }

    #[test]
    fn objects_younger_than_until_survive_every_level() {
        let p = plan(
            &host(),
            &aggressive_host(),
            Level::AGGRESSIVE,
            Duration::from_secs(1000 * 3600),
            now(),
        );
        assert_eq!(p.objects(), 0, "{p:#?}");
        assert_eq!(p.bytes, 0);
    }

    #[test]
    fn objects_at_the_cutoff_are_judged_as_docker_judges_them() {
        // BuildKit: exact times, a record last used at the cut-off goes.
        let p = plan(
            &host(),
            &Policy::default(),
            Level::BuildCache,
            Duration::from_secs(48 * 3600),
            now(),
        );
        assert_eq!(ids(&p, Level::BuildCache), ["never-used", "old"]);
        // Containers and images: Docker's cut-off is whole seconds and keeps what was created
        // after it, so an object from the cut-off's second stays; one a second older goes.
        let mut du = host();
        du.containers = vec![
            container("same-second", "exited", "sha256:A", 0),
            Container {
                created: NOW - 1,
                ..container("second-before", "exited", "sha256:A", 0)
            },
        ];
        let at = DateTime::from_timestamp(NOW, 500_000_000).unwrap_or_default();
        let p = plan(&du, &Policy::default(), Level::STANDARD, Duration::ZERO, at);
        assert_eq!(ids(&p, Level::StoppedContainers), ["id-second-before"]);
    }

    #[test]
    fn an_until_beyond_the_calendar_keeps_everything() {
        let p = plan(
            &host(),
            &aggressive_host(),
            Level::AGGRESSIVE,
            Duration::MAX,
            now(),
        );
        assert_eq!(p.objects(), 0);
    }

    #[test]
    fn protect_labels_match_by_key_or_by_key_and_value() {
        let p = Policy {
            protect_labels: vec!["keep".into(), "tier=prod".into()],
            ..Policy::default()
        };
        assert!(p.protects(&labels(&[("keep", "")])));
        assert!(p.protects(&labels(&[("keep", "no")])));
        assert!(p.protects(&labels(&[("tier", "prod")])));
        assert!(!p.protects(&labels(&[("tier", "dev")])));
        assert!(!p.protects(&labels(&[])));
    }

    #[test]
    fn a_plan_serializes_with_level_names_and_a_readable_until() {
        let p = plan(
            &host(),
            &Policy::default(),
            Level::BuildCache,
            Duration::from_secs(3600),
            now(),
        );
        let v = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(v["until"], "1h");
        assert_eq!(v["levels"][0]["level"], "build_cache");
        // Least recently used first: "never-used" was created 49 hours ago.
        assert_eq!(v["levels"][0]["candidates"][0]["id"], "never-used");
    }

    #[test]
    fn presets_name_the_highest_level_they_run() {
        assert_eq!(Level::parse("standard"), Ok(Level::DanglingImages));
        assert_eq!(Level::parse("aggressive"), Ok(Level::UnusedVolumes));
        assert_eq!(Level::STANDARD.up_to().count(), 3);
        assert!(Level::parse("everything").is_err());
    }

    #[test]
    fn a_request_never_goes_beyond_the_hosts_policy() {
        let p = Policy::default();
        assert_eq!(p.cap(Level::UnusedVolumes), Level::DanglingImages);
        let p = Policy {
            max_level: Level::UnusedVolumes,
            ..Policy::default()
        };
        assert_eq!(p.cap(Level::UnusedVolumes), Level::UnusedImages);
        let p = Policy {
            allow_volumes: true,
            ..p
        };
        assert_eq!(p.cap(Level::UnusedVolumes), Level::UnusedVolumes);
    }

    /// Three removable records last used 100, 50 and 30 hours ago, and one in use.
    fn caches() -> DiskUsage {
        let mut busy = cache("busy", 400, 1);
        busy.in_use = true;
        DiskUsage {
            build_cache: vec![
                cache("mid", 200, 50),
                cache("cold", 100, 100),
                cache("warm", 300, 30),
                busy,
            ],
            ..DiskUsage::default()
        }
    }

    fn order(p: &Plan, l: Level) -> Vec<String> {
        p.level(l)
            .map(|l| l.candidates.iter().map(|c| c.id.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn build_cache_goes_least_recently_used_first() {
        let p = plan(
            &caches(),
            &Policy::default(),
            Level::BuildCache,
            Duration::ZERO,
            now(),
        );
        assert_eq!(order(&p, Level::BuildCache), ["cold", "mid", "warm"]);
        assert!(
            p.level(Level::BuildCache)
                .is_some_and(|l| l.budget.is_none())
        );
    }

    #[test]
    fn the_warm_budget_keeps_the_most_recently_used_cache_until_it_holds_at_least_the_budget() {
        let policy = |keep| Policy {
            build_cache_keep: Some(keep),
            ..Policy::default()
        };
        // The record in use (400) fills 400 of 500; "warm" (300) brings it past: both held.
        let p = plan(
            &caches(),
            &policy(FreeTarget::Bytes(500)),
            Level::BuildCache,
            Duration::ZERO,
            now(),
        );
        let l = p.level(Level::BuildCache).cloned();
        assert_eq!(order(&p, Level::BuildCache), ["cold", "mid"]);
        assert_eq!(l.as_ref().map(|l| l.kept.budget), Some(1));
        assert_eq!(
            l.and_then(|l| l.budget),
            Some(Budget {
                keep_bytes: 500,
                held_bytes: 700
            })
        );
        // A share of the filesystem needs its size: 10% of 9,000 bytes holds busy, warm, mid.
        let ctx = Context {
            fs_size: Some(9_000),
            ..Context::default()
        };
        let p = plan_with(
            &caches(),
            &policy(FreeTarget::Percent(10.0)),
            Level::BuildCache,
            Duration::ZERO,
            now(),
            ctx,
        );
        assert_eq!(order(&p, Level::BuildCache), ["cold"]);
        let p = plan_with(
            &caches(),
            &policy(FreeTarget::Percent(10.0)),
            Level::BuildCache,
            Duration::ZERO,
            now(),
            Context {
                fs_size: Some(1_000_000),
                ..ctx
            },
        );
        assert!(order(&p, Level::BuildCache).is_empty());
        // Unmeasured, a share keeps nothing rather than guessing.
        let p = plan(
            &caches(),
            &policy(FreeTarget::Percent(10.0)),
            Level::BuildCache,
            Duration::ZERO,
            now(),
        );
        assert_eq!(order(&p, Level::BuildCache), ["cold", "mid", "warm"]);
    }

    /// Four unused tagged images created 90, 80, 70 and 60 hours ago.
    fn images() -> DiskUsage {
        DiskUsage {
            images: vec![
                image("sha256:aaaaaaaaaaaa1111", Some("a:1"), 10, 90),
                image("sha256:bbbbbbbbbbbb2222", Some("b:1"), 20, 80),
                image("sha256:cccccccccccc3333", Some("c:1"), 30, 70),
                image("sha256:dddddddddddd4444", Some("d:1"), 40, 60),
            ],
            ..DiskUsage::default()
        }
    }

    #[test]
    fn images_go_least_recently_used_first_by_bilges_record_of_their_use() {
        let policy = aggressive_host();
        let p = plan(
            &images(),
            &policy,
            Level::UnusedImages,
            Duration::ZERO,
            now(),
        );
        // Without a record, by creation.
        let ids = |p: &Plan| -> Vec<String> {
            order(p, Level::UnusedImages)
                .iter()
                .map(|i| i[7..8].to_string())
                .collect()
        };
        assert_eq!(ids(&p), ["a", "b", "c", "d"]);
        // "a" was run (by tag) an hour ago, "c" tagged (by id) 2 hours ago.
        let used = |h| hours_ago(h).unwrap_or_default();
        let recency = Recency {
            uses: HashMap::from([
                ("a:1".to_string(), used(1)),
                ("id:cccccccccccc".to_string(), used(2)),
                ("unrelated:1".to_string(), used(0)),
            ]),
        };
        let ctx = Context {
            recency: Some(&recency),
            ..Context::default()
        };
        let p = plan_with(
            &images(),
            &policy,
            Level::UnusedImages,
            Duration::ZERO,
            now(),
            ctx,
        );
        assert_eq!(ids(&p), ["b", "d", "c", "a"]);
        // images_keep holds the most recently used unused images: a (10), then c (30).
        let keep = Policy {
            images_keep: Some(FreeTarget::Bytes(15)),
            ..policy
        };
        let p = plan_with(
            &images(),
            &keep,
            Level::UnusedImages,
            Duration::ZERO,
            now(),
            ctx,
        );
        assert_eq!(ids(&p), ["b", "d"]);
        let l = p.level(Level::UnusedImages);
        assert_eq!(l.map(|l| l.kept.budget), Some(2));
        assert_eq!(l.and_then(|l| l.budget).map(|b| b.held_bytes), Some(40));
    }

    #[test]
    fn image_keys_name_ids_by_their_short_form_and_references_with_their_tag() {
        let id = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(image_key(id).as_deref(), Some("id:0123456789ab"));
        assert_eq!(image_key(&id[7..]).as_deref(), Some("id:0123456789ab"));
        assert_eq!(
            image_key("0123456789AB").as_deref(),
            Some("id:0123456789ab")
        );
        assert_eq!(image_key("busybox").as_deref(), Some("busybox:latest"));
        assert_eq!(image_key("app:1").as_deref(), Some("app:1"));
        assert_eq!(
            image_key("registry:5000/team/app").as_deref(),
            Some("registry:5000/team/app:latest")
        );
        assert_eq!(image_key("app@sha256:00").as_deref(), Some("app@sha256:00"));
        // A name that only looks hex at another length is a name.
        assert_eq!(image_key("deadbeef").as_deref(), Some("deadbeef:latest"));
        assert_eq!(image_key(""), None);
        assert_eq!(image_key(&"x".repeat(MAX_IMAGE_KEY + 1)), None);
        assert_eq!(image_key("a b"), None);
        assert_eq!(
            image_used_by("container", "start", "c1", Some("app:1")).as_deref(),
            Some("app:1")
        );
        assert_eq!(
            image_used_by("image", "tag", id, None).as_deref(),
            Some("id:0123456789ab")
        );
        assert_eq!(image_used_by("container", "die", "c1", Some("app:1")), None);
        assert_eq!(image_used_by("image", "delete", id, None), None);
    }

    #[test]
    fn the_stop_point_is_where_the_estimates_first_reach_the_need() {
        let p = plan(
            &DiskUsage {
                containers: vec![container("gone", "exited", "sha256:A", 48)],
                ..caches()
            },
            &Policy::default(),
            Level::STANDARD,
            Duration::ZERO,
            now(),
        );
        // cold 100, mid 200, warm 300, then the container (10) as a whole level.
        assert_eq!(stop_point(&p, 1), Some((Level::BuildCache, 1)));
        assert_eq!(stop_point(&p, 100), Some((Level::BuildCache, 1)));
        assert_eq!(stop_point(&p, 101), Some((Level::BuildCache, 2)));
        assert_eq!(stop_point(&p, 600), Some((Level::BuildCache, 3)));
        assert_eq!(stop_point(&p, 605), Some((Level::StoppedContainers, 1)));
        assert_eq!(stop_point(&p, 611), None);
        assert_eq!(Stop::of(&p, 611).level, None);
    }

    #[test]
    fn a_record_goes_after_what_is_built_on_it_and_counts_as_used_when_they_are() {
        // "base" (used 10 h ago) is the parent of "step" (used 5 h ago); "other" was used 7 h
        // ago. BuildKit keeps a record while something is built on it.
        let mut step = cache("step", 10, 5);
        step.parents = vec!["base".into()];
        let du = DiskUsage {
            build_cache: vec![cache("base", 10, 10), step, cache("other", 10, 7)],
            ..DiskUsage::default()
        };
        let p = plan(
            &du,
            &Policy::default(),
            Level::BuildCache,
            Duration::ZERO,
            now(),
        );
        assert_eq!(order(&p, Level::BuildCache), ["other", "step", "base"]);
        // A budget of one record holds the chain's root first: "step" alone could not be kept
        // while "base" went, as BuildKit would refuse to remove "base".
        let keep = Policy {
            build_cache_keep: Some(FreeTarget::Bytes(10)),
            ..Policy::default()
        };
        let p = plan(&du, &keep, Level::BuildCache, Duration::ZERO, now());
        assert_eq!(order(&p, Level::BuildCache), ["other", "step"]);
    }

    #[test]
    fn while_builds_run_what_they_may_use_is_held() {
        let since = hours_ago(40);
        let du = DiskUsage {
            images: vec![
                image("sha256:dangling-old", None, 1, 48),
                image("sha256:dangling-new", None, 2, 30),
                image("sha256:tagged-old", Some("base:1"), 3, 48),
            ],
            ..caches()
        };
        let ctx = Context {
            building_since: since,
            ..Context::default()
        };
        let p = plan_with(
            &du,
            &aggressive_host(),
            Level::UnusedImages,
            Duration::ZERO,
            now(),
            ctx,
        );
        // Cache used in the last 40 hours (warm) and the dangling image made since stay; every
        // tagged image stays (it may be a running build's base image).
        assert_eq!(order(&p, Level::BuildCache), ["cold", "mid"]);
        assert_eq!(p.level(Level::BuildCache).map(|l| l.kept.building), Some(1));
        assert_eq!(order(&p, Level::DanglingImages), ["sha256:dangling-old"]);
        assert!(order(&p, Level::UnusedImages).is_empty());
        assert_eq!(
            p.level(Level::UnusedImages).map(|l| l.kept.building),
            Some(1)
        );
        // Without running builds, all of it goes.
        let p = plan(
            &du,
            &aggressive_host(),
            Level::UnusedImages,
            Duration::ZERO,
            now(),
        );
        assert_eq!(order(&p, Level::BuildCache).len(), 3);
        assert_eq!(order(&p, Level::UnusedImages).len(), 1);
    }
}
