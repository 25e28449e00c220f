//! `bilge df`: one collection, printed for a person (aligned tables, human sizes) or as JSON.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::cleanup::policy::{Budgets, Context, Policy, Recency};
use crate::collect::disk::FilesystemConfig;
use crate::collect::docker::TYPES;
use crate::collect::{Collector, Snapshot};
use crate::docker::DockerConfig;
use crate::format::{human_bytes, table};
use crate::store::Store;
use crate::{Error, Result};

/// Collects once. Filesystems always; Docker when reachable (its error is kept otherwise); the
/// footprint when asked and Docker answered.
pub async fn collect_once(
    docker: DockerConfig,
    filesystem: FilesystemConfig,
    footprint: bool,
) -> Arc<Snapshot> {
    let c = Arc::new(Collector::new(docker, filesystem));
    let docker = c.collect_docker().await;
    if let Err(e) = &docker {
        tracing::debug!(error = %e, "docker collection failed");
    }
    if let Err(e) = c.collect_filesystems().await {
        tracing::warn!(error = %e, "filesystem collection failed");
    }
    if footprint
        && docker.is_ok()
        && let Err(e) = c.collect_footprints().await
    {
        tracing::warn!(error = %e, "cannot measure the footprint");
    }
    c.snapshot()
}

/// The footprint tables: each storage filesystem's three parts, then the unaccounted paths.
fn render_footprints(s: &Snapshot) -> String {
    let mut rows = vec![vec![
        "FOOTPRINT OF".to_string(),
        "ROLE".into(),
        "DOCKER'S".into(),
        "NOT DOCKER'S".into(),
        "OUTSIDE THE ROOT".into(),
    ]];
    let mut paths = vec![vec![
        "NOT DOCKER'S".to_string(),
        "SIZE".into(),
        "USUALLY".into(),
    ]];
    let mut notes = String::new();
    for f in &s.footprints {
        rows.push(vec![
            f.mountpoint.clone(),
            f.role.as_str().into(),
            human_bytes(f.docker_bytes),
            human_bytes(f.unaccounted_bytes),
            human_bytes(f.outside_bytes),
        ]);
        for u in &f.unaccounted {
            paths.push(vec![
                u.path.clone(),
                human_bytes(u.bytes),
                u.kind.describe().into(),
            ]);
        }
        notes.push_str(&format!(
            "{} walked: {} in {} entries, {:.1}s{}\n",
            f.paths.join(" and "),
            human_bytes(f.walked_bytes),
            f.entries,
            f.seconds,
            if f.complete {
                ""
            } else {
                " (incomplete: a bound was hit; the figures are a lower bound)"
            }
        ));
    }
    let mut out = table(&rows);
    out.push_str(&notes);
    if paths.len() > 1 {
        out.push('\n');
        out.push_str(&table(&paths));
        out.push_str("bilge deletes none of these; the runbook says how to reclaim each safely.\n");
    }
    out
}

#[derive(Serialize)]
struct DfJson<'a> {
    #[serde(flatten)]
    snapshot: &'a Snapshot,
    /// The policy's warm budgets and what holds them.
    budgets: Budgets,
    /// The policy's schedules with their next runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    schedules: Vec<crate::cleanup::schedule::Upcoming>,
}

/// The policy's warm budgets over the snapshot, with the images' uses the state file recorded
/// (when it exists: `bilge df` creates no state file).
fn budgets(s: &Snapshot, policy: &Policy, state: &Path) -> Budgets {
    let Some(du) = &s.disk_usage else {
        return Budgets::default();
    };
    if policy.build_cache_keep.is_none() && policy.images_keep.is_none() {
        return Budgets::default();
    }
    let uses = state
        .exists()
        .then(|| prometheus::IntCounter::new("bilge_df_store_errors", "df's store errors").ok())
        .flatten()
        .and_then(|errors| Store::new(state, errors).image_uses().ok())
        .unwrap_or_default();
    let recency = Recency { uses };
    Budgets::now(
        du,
        policy,
        Context {
            recency: Some(&recency),
            fs_size: s.data_root.as_ref().map(|d| d.usage.size),
            ..Context::default()
        },
    )
}

/// Renders the snapshot as tables, with the policy's warm `budgets`.
pub fn render_text(s: &Snapshot, budgets: &Budgets) -> String {
    let mut out = String::new();
    let mut rows = vec![vec![
        "MOUNTPOINT".to_string(),
        "DEVICE".into(),
        "TYPE".into(),
        "SIZE".into(),
        "AVAIL".into(),
        "USE%".into(),
        "INODES FREE".into(),
    ]];
    for f in &s.filesystems {
        let root = s
            .storage_roots()
            .any(|d| d.mountpoint == f.mount.mountpoint);
        rows.push(vec![
            format!("{}{}", f.mount.mountpoint, if root { " *" } else { "" }),
            f.mount.device.clone(),
            f.mount.fstype.clone(),
            human_bytes(f.usage.size),
            human_bytes(f.usage.avail),
            format!("{:.1}%", f.usage.used_ratio() * 100.0),
            f.usage.files_free.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    if let Some(d) = &s.data_root {
        out.push_str(&format!(
            "* holds Docker's data root {} ({} available)\n",
            d.path,
            human_bytes(d.usage.avail)
        ));
    }
    if let Some(c) = &s.containerd_root {
        out.push_str(&format!(
            "* holds containerd's root {}, where the containerd image store keeps the images ({} available)\n",
            c.path,
            human_bytes(c.usage.avail)
        ));
    }
    out.push('\n');
    match &s.docker {
        None => out.push_str(&format!(
            "Docker: unreachable ({})\n",
            s.docker_error.as_deref().unwrap_or("unknown error")
        )),
        Some(d) => {
            let mut rows = vec![vec![
                "TYPE".to_string(),
                "TOTAL".into(),
                "ACTIVE".into(),
                "SIZE".into(),
                "RECLAIMABLE".into(),
            ]];
            for t in TYPES {
                let u = d.by_type(t);
                rows.push(vec![
                    t.to_string(),
                    u.objects.to_string(),
                    u.active.to_string(),
                    human_bytes(u.size),
                    human_bytes(u.reclaimable),
                ]);
            }
            rows.push(vec![
                "logs".into(),
                d.top_logs.len().to_string(),
                "-".into(),
                human_bytes(d.logs_bytes),
                "-".into(),
            ]);
            out.push_str(&format!(
                "Docker {} (API {}, {}) at {}\n",
                d.info.version, d.info.api_version, d.info.storage_driver, d.info.data_root
            ));
            out.push_str(&table(&rows));
            out.push_str(&format!(
                "dangling images: {} ({})\n\n",
                d.dangling_images,
                human_bytes(d.dangling_images_bytes)
            ));
            let mut rows = vec![vec![
                "BUILD CACHE UNUSED FOR".to_string(),
                "RECLAIMABLE".into(),
            ]];
            for (age, b) in &d.build_cache_by_age {
                rows.push(vec![format!("> {age}"), human_bytes(*b)]);
            }
            out.push_str(&table(&rows));
            for line in budgets.lines() {
                out.push_str(&line);
                out.push('\n');
            }
            for (title, list) in [
                ("LARGEST IMAGES", &d.top_images),
                ("LARGEST VOLUMES", &d.top_volumes),
                ("LARGEST LOGS", &d.top_logs),
            ] {
                if list.is_empty() {
                    continue;
                }
                out.push('\n');
                let mut rows = vec![vec![title.to_string(), "SIZE".into()]];
                for (n, b) in list {
                    rows.push(vec![n.clone(), human_bytes(*b)]);
                }
                out.push_str(&table(&rows));
            }
            out.push('\n');
            if s.footprints.is_empty() {
                out.push_str("Where the rest of the disk went: bilge df --footprint\n");
            } else {
                out.push_str(&render_footprints(s));
            }
            if !s.docker_up {
                out.push_str(&format!(
                    "\n(stale: {})\n",
                    s.docker_error.as_deref().unwrap_or("daemon unreachable")
                ));
            }
        }
    }
    out
}

/// Runs `bilge df`. Exit status is an error when Docker could not be reached.
pub async fn run(
    docker: DockerConfig,
    filesystem: FilesystemConfig,
    policy: &Policy,
    state: &Path,
    json: bool,
    footprint: bool,
) -> Result<()> {
    let s = collect_once(docker, filesystem, footprint).await;
    let budgets = {
        let (s, policy, state) = (s.clone(), policy.clone(), state.to_path_buf());
        tokio::task::spawn_blocking(move || budgets(&s, &policy, &state))
            .await
            .unwrap_or_default()
    };
    // The next scheduled runs (what they would free is the dry run's business).
    let now = chrono::Utc::now();
    let schedules = crate::cleanup::schedule::upcoming(&policy.schedules, now, |_, _| None);
    if json {
        let text = serde_json::to_string_pretty(&DfJson {
            snapshot: &s,
            budgets,
            schedules,
        })
        .map_err(|e| Error::Other(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", render_text(&s, &budgets));
        for u in &schedules {
            println!("{}", u.line(now));
        }
    }
    match (&s.docker, &s.docker_error) {
        (None, Some(e)) => Err(Error::docker(e.trim_start_matches("docker: "))),
        _ => Ok(()),
    }
}
