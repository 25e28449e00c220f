//! Fuzzes what bilge does with a Docker daemon's `/system/df` answer: the parser of both
//! shapes, `bilge::docker::parse_disk_usage` (API 1.41's full answer with `LayersSize`,
//! `Images`, `Containers`, `Volumes`, `BuildCache`, and newer engines' `ImageUsage`-style
//! summaries, whole or one type at a time as `?type=` asks), then the Docker collector's
//! arithmetic on what it parsed, `bilge::collect::docker::summarize`, and the cleanup planner's,
//! `bilge::cleanup::policy::plan` (what `GET /api/v1/plan` and every cleanup run compute).
//!
//! Promises checked, besides "no panic" (a daemon's numbers are not trusted: negative, huge or
//! absurd sizes must not overflow):
//! - every object is counted once per type; no type has more active objects than objects, nor
//!   more reclaimable bytes than bytes; old build cache is a subset of younger build cache, which
//!   is a subset of reclaimable build cache; the container states add up to the containers; the
//!   top lists are at most `top_n` long and largest first; the summary serializes, as
//!   `bilge df --json` prints it;
//! - the plan of every level has each level's objects largest first, at most as many objects as
//!   the answer holds, and its bytes are the (saturating) sum of its levels' bytes;
//! - the two shapes agree: an answer in API 1.41's shape, rewritten into the summary shape
//!   (`LayersSize` as `ImageUsage.TotalSize`, each list as its `*Usage.Items`), parses to the
//!   same objects and gives the same summary and plan.

#![no_main]

use std::time::Duration;

use bilge::cleanup::policy::{Plan, plan};
use bilge::cleanup::{Level, Policy};
use bilge::collect::docker::{ContainerLog, DockerSummary, summarize};
use bilge::docker::{DiskUsage, DockerInfo, parse_disk_usage, total_bytes};
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// How many of the largest objects the summary keeps.
const TOP_N: usize = 3;

/// API 1.41's lists and the summary objects newer engines put them in.
const SHAPES: [(&str, &str); 4] = [
    ("Images", "ImageUsage"),
    ("Containers", "ContainerUsage"),
    ("Volumes", "VolumeUsage"),
    ("BuildCache", "BuildCacheUsage"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(du) = parse_disk_usage(data) else {
        return;
    };
    let s = summary(&du);
    check(&du, &s);
    let p = every_level(&du);
    check_plan(&du, &p);
    if let Some(newer) = in_summary_shape(data) {
        match parse_disk_usage(&newer) {
            Ok(again) => {
                assert_eq!(again.images, du.images);
                assert_eq!(again.containers, du.containers);
                assert_eq!(again.volumes, du.volumes);
                assert_eq!(again.build_cache, du.build_cache);
                assert_eq!(summary(&again), s, "the two shapes summarize differently");
                assert_eq!(every_level(&again), p, "the two shapes plan differently");
            }
            Err(e) => panic!(
                "the summary shape {} is refused: {e}",
                String::from_utf8_lossy(&newer)
            ),
        }
    }
});

/// The collector's summary of `du`, with fixed log sizes and a fixed time.
fn summary(du: &DiskUsage) -> DockerSummary {
    // Log sizes come from the filesystem, not the daemon: a few fixed ones, one per container.
    let logs: Vec<ContainerLog> = du
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| ContainerLog {
            container: c.name.clone(),
            bytes: 1 << (i % 40),
        })
        .collect();
    // The time the collection ran: fixed, so that a crash replays.
    let now = DateTime::<Utc>::from_timestamp(1_706_745_600, 0).unwrap_or_default();
    summarize(DockerInfo::default(), du, &logs, now, TOP_N)
}

/// The plan of every level, volumes allowed, objects older than an hour at the fixed time.
fn every_level(du: &DiskUsage) -> Plan {
    let policy = Policy {
        max_level: Level::AGGRESSIVE,
        allow_volumes: true,
        protect_labels: vec!["bilge.keep=true".into(), "keep".into()],
        ..Policy::default()
    };
    let now = DateTime::<Utc>::from_timestamp(1_706_745_600, 0).unwrap_or_default();
    plan(
        du,
        &policy,
        Level::AGGRESSIVE,
        Duration::from_secs(3600),
        now,
    )
}

/// Asserts the plan's promises.
fn check_plan(du: &DiskUsage, p: &Plan) {
    assert_eq!(p.level, Level::AGGRESSIVE);
    assert!(p.objects() <= du.objects() as u64, "{p:?}");
    for l in &p.levels {
        assert_eq!(l.objects, l.candidates.len() as u64);
        assert_eq!(l.bytes, total_bytes(l.candidates.iter().map(|c| c.bytes)));
        // Levels that stop at the target go least recently used first (never used first);
        // the others largest first.
        if l.level.stops_inside() {
            let sorted = l
                .candidates
                .windows(2)
                .all(|w| w[0].last_used <= w[1].last_used);
            assert!(sorted, "{:?} is not least recently used first", l.level);
        } else {
            let sorted = l.candidates.windows(2).all(|w| w[0].bytes >= w[1].bytes);
            assert!(sorted, "{:?} is not largest first", l.level);
        }
    }
    assert_eq!(p.bytes, total_bytes(p.levels.iter().map(|l| l.bytes)));
    if let Err(e) = serde_json::to_vec(p) {
        panic!("the plan does not serialize: {e}");
    }
}

/// Asserts the summary's promises.
fn check(du: &DiskUsage, s: &DockerSummary) {
    assert_eq!(s.images.objects, du.images.len() as u64);
    assert_eq!(s.containers.objects, du.containers.len() as u64);
    assert_eq!(s.volumes.objects, du.volumes.len() as u64);
    assert_eq!(s.build_cache.objects, du.build_cache.len() as u64);
    for (t, u) in [
        ("image", s.images),
        ("container", s.containers),
        ("volume", s.volumes),
        ("build_cache", s.build_cache),
    ] {
        assert!(u.active <= u.objects, "{t}: {u:?}");
        assert!(u.reclaimable <= u.size, "{t}: {u:?}");
    }
    let mut previous = s.build_cache.reclaimable;
    for (age, bytes) in &s.build_cache_by_age {
        assert!(*bytes <= previous, "build cache older than {age}: {s:?}");
        previous = *bytes;
    }
    let states: u64 = s.containers_by_state.values().sum();
    assert_eq!(states, s.containers.objects);
    assert!(s.dangling_images <= s.images.objects);
    for top in [&s.top_images, &s.top_volumes, &s.top_logs] {
        assert!(top.len() <= TOP_N);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "{top:?}");
    }
    if let Err(e) = serde_json::to_vec(s) {
        panic!("the summary does not serialize: {e}");
    }
}

/// `data`, an answer in API 1.41's shape, rewritten into the summary shape; `None` when it is not
/// an object of the old shape alone.
fn in_summary_shape(data: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut old)) = serde_json::from_slice::<Value>(data) else {
        return None;
    };
    if SHAPES.iter().any(|(_, new)| old.contains_key(*new)) {
        return None;
    }
    let mut newer = Map::new();
    for (list, usage) in SHAPES {
        let mut u = Map::new();
        if let Some(items) = old.remove(list) {
            u.insert("Items".into(), items);
        }
        if list == "Images"
            && let Some(total) = old.remove("LayersSize")
        {
            u.insert("TotalSize".into(), total);
        }
        if !u.is_empty() {
            newer.insert(usage.into(), Value::Object(u));
        }
    }
    newer.extend(old);
    serde_json::to_vec(&Value::Object(newer)).ok()
}
