//! The status page at `/`: one server-rendered HTML document, no scripts, readable in a terminal
//! browser and in Chromium alike. Pure: it renders a snapshot and history handed to it.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::chart::{self, Mark};
use crate::collect::docker::TYPES;
use crate::collect::{Role, Snapshot};
use crate::format::{esc, human_bytes};
use crate::model::{BuildResult, CleanupResult};
use crate::store::{BuildRecord, CleanupRecord};

fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "never".into(),
        Some(t) => {
            let s = (now - t).num_seconds().max(0);
            if s < 120 {
                format!("{s}s ago")
            } else if s < 7200 {
                format!("{}m ago", s / 60)
            } else if s < 172_800 {
                format!("{}h ago", s / 3600)
            } else {
                format!("{}d ago", s / 86_400)
            }
        }
    }
}

fn bar(ratio: f64) -> String {
    let pct = (ratio * 100.0).clamp(0.0, 100.0);
    let class = if pct >= 90.0 {
        "crit"
    } else if pct >= 80.0 {
        "warn"
    } else {
        "ok"
    };
    format!(
        "<div class=\"bar\" role=\"meter\" aria-valuenow=\"{pct:.0}\" aria-valuemin=\"0\" aria-valuemax=\"100\"><div class=\"{class}\" style=\"width:{pct:.1}%\"></div></div> {pct:.1}%"
    )
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fa}\
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .4rem}\
table{border-collapse:collapse;background:#fff;min-width:40rem}\
th,td{padding:.3rem .7rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.u{white-space:nowrap}\
.bar{display:inline-block;width:8rem;height:.7rem;background:#e3e6ea;border-radius:3px;vertical-align:middle}\
.bar div{height:100%;border-radius:3px}.ok{background:#3b8f5a}.warn{background:#d9a300}.crit{background:#c8322b}\
.bad{color:#c8322b;font-weight:600}.good{color:#3b8f5a;font-weight:600}.muted{color:#69707d}\
code{font-size:.9em}.chart{display:block;width:100%;max-width:44rem;background:#fff;margin:.4rem 0}";

/// "Where the disk went": each storage filesystem's three parts as one stacked bar and a row,
/// then the paths that are not Docker's.
fn footprints(h: &mut String, s: &Snapshot, now: DateTime<Utc>) {
    if s.footprints.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<h2 id=\"footprint\">Where the disk went</h2><p class=\"muted\">Measured {} by walking the storage roots (<code>--docker.footprint-interval</code>). bilge deletes none of what is not Docker's; the runbook says how to reclaim it.</p>\
<table><tr><th>filesystem</th><th></th><th class=\"n\">Docker's</th><th class=\"n\">under the root, not Docker's</th><th class=\"n\">outside the root</th></tr>",
        ago(s.footprint_last_success, now)
    );
    for f in &s.footprints {
        let used = (f.docker_bytes + f.unaccounted_bytes + f.outside_bytes).max(1) as f64;
        let pct = |b: u64| b as f64 * 100.0 / used;
        let _ = write!(
            h,
            "<tr><td><code>{}</code>{}</td><td><div class=\"bar\" title=\"Docker's · not Docker's · outside\"><div class=\"ok\" style=\"width:{:.1}%;float:left\"></div><div class=\"crit\" style=\"width:{:.1}%;float:left\"></div><div style=\"width:{:.1}%;float:left;background:#9aa1ad\"></div></div></td>\
<td class=\"n\">{}</td><td class=\"n\" id=\"unaccounted-{}\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&f.mountpoint),
            if f.complete {
                ""
            } else {
                " <span class=\"muted\">(incomplete walk: at least these)</span>"
            },
            pct(f.docker_bytes),
            pct(f.unaccounted_bytes),
            pct(f.outside_bytes),
            human_bytes(f.docker_bytes),
            f.role.as_str(),
            human_bytes(f.unaccounted_bytes),
            human_bytes(f.outside_bytes)
        );
    }
    h.push_str("</table>");
    let paths: Vec<_> = s.footprints.iter().flat_map(|f| &f.unaccounted).collect();
    if !paths.is_empty() {
        h.push_str(
            "<table><tr><th>not Docker's</th><th class=\"n\">size</th><th>usually</th></tr>",
        );
        for u in paths {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&u.path),
                human_bytes(u.bytes),
                u.kind.describe()
            );
        }
        h.push_str("</table>");
    }
}

/// The cleanups of `cleanups` that ran (not refusals or dry runs) as marks on a chart's time
/// axis.
fn marks(cleanups: &[CleanupRecord]) -> Vec<Mark> {
    cleanups
        .iter()
        .filter(|c| !matches!(c.result, CleanupResult::Skipped | CleanupResult::DryRun))
        .map(|c| Mark {
            at: c.started_at.timestamp(),
            label: format!(
                "{} cleanup ({}, {}): {} freed",
                c.trigger,
                c.level,
                c.result,
                human_bytes(c.reclaimed_bytes)
            ),
        })
        .collect()
}

/// Renders the whole page. `trends` are the storage roots' recent available space
/// ([`crate::collect::trend`]), drawn with the forecast and the `cleanups` marked on it.
pub fn render(
    s: &Snapshot,
    budgets: &crate::cleanup::policy::Budgets,
    builds: &[BuildRecord],
    cleanups: &[CleanupRecord],
    trends: &[(Role, Vec<(i64, u64)>)],
    schedules: &[crate::cleanup::schedule::Upcoming],
    now: DateTime<Utc>,
) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"30\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>bilge — Docker disk status</title><style>{STYLE}</style></head><body>\
<h1>bilge</h1><p class=\"muted\">Docker disk status · version {} · <a href=\"/metrics\">metrics</a> · <a href=\"/api/v1/plan\">cleanup plan</a> · <a href=\"/api/v1/builds\">builds</a> · <a href=\"/api/v1/cleanups\">cleanups</a></p>",
        esc(crate::VERSION)
    );

    // Collector health.
    h.push_str("<h2 id=\"health\">Collectors</h2><table><tr><th>collector</th><th>status</th><th>last success</th></tr>");
    let fs_ok = s.filesystems_last_success.is_some();
    let _ = write!(
        h,
        "<tr><td>filesystem</td><td class=\"{}\">{}</td><td>{}</td></tr>",
        if fs_ok { "good" } else { "bad" },
        if fs_ok { "ok" } else { "no data yet" },
        ago(s.filesystems_last_success, now)
    );
    let docker_status = if s.docker_up {
        "up".to_string()
    } else {
        format!(
            "down: {}",
            s.docker_error.as_deref().unwrap_or("not collected yet")
        )
    };
    let _ = write!(
        h,
        "<tr><td>docker</td><td class=\"{}\" id=\"docker-status\">{}</td><td>{}</td></tr>",
        if s.docker_up { "good" } else { "bad" },
        esc(&docker_status),
        ago(s.docker_last_success, now)
    );
    if let Some(run) = &s.footprint_run {
        let _ = write!(
            h,
            "<tr><td>footprint</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            if run.ok { "good" } else { "bad" },
            if run.ok { "ok" } else { "failed (see the log)" },
            ago(s.footprint_last_success, now)
        );
    }
    h.push_str("</table>");

    // Docker's storage filesystems.
    let cleanup_marks = marks(cleanups);
    for dr in s.storage_roots() {
        let (id, title, what) = match dr.role {
            Role::DataRoot => ("data-root", "Docker data root", ""),
            Role::ContainerdRoot => (
                "containerd-root",
                "containerd root",
                "The containerd image store keeps the images in ",
            ),
        };
        let _ = write!(
            h,
            "<h2 id=\"{id}\">{title}</h2><p>{what}<code>{}</code> on <code>{}</code>: {} available of {} · {} · inodes {} free of {}</p>",
            esc(&dr.path),
            esc(&dr.mountpoint),
            human_bytes(dr.usage.avail),
            human_bytes(dr.usage.size),
            bar(dr.usage.used_ratio()),
            dr.usage.files_free,
            dr.usage.files
        );
        let points = trends
            .iter()
            .find(|(r, _)| *r == dr.role)
            .map_or(&[][..], |(_, p)| p.as_slice());
        h.push_str(&chart::available(&chart::Available {
            id: &format!("{id}-chart"),
            points,
            size: dr.usage.size,
            full_in: dr.predicted_full_seconds,
            marks: &cleanup_marks,
            now: now.timestamp(),
        }));
        let _ = write!(
            h,
            "<p class=\"muted\">{}</p>",
            match dr.predicted_full_seconds {
                Some(f) if f.is_finite() => format!(
                    "At the recent rate (dashed) this filesystem is full in {}. Green marks are cleanups.",
                    crate::format::format_duration(std::time::Duration::from_secs_f64(
                        f.clamp(0.0, 1e12)
                    ))
                ),
                Some(_) => "Not filling at the recent rate. Green marks are cleanups.".to_string(),
                None => "Too few samples yet for a forecast. Green marks are cleanups.".to_string(),
            }
        );
    }

    footprints(&mut h, s, now);

    // Filesystems.
    h.push_str("<h2 id=\"filesystems\">Filesystems</h2><table><tr><th>mount point</th><th>device</th><th>type</th><th class=\"n\">size</th><th class=\"n\">available</th><th>used</th><th class=\"n\">inodes free</th></tr>");
    for f in &s.filesystems {
        let is_root = s
            .storage_roots()
            .any(|d| d.mountpoint == f.mount.mountpoint);
        let _ = write!(
            h,
            "<tr><td>{}{}{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"u\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&f.mount.mountpoint),
            if is_root {
                " <strong>(Docker data root)</strong>"
            } else {
                ""
            },
            if f.usage.readonly {
                " <span class=\"muted\">(read-only)</span>"
            } else {
                ""
            },
            esc(&f.mount.device),
            esc(&f.mount.fstype),
            human_bytes(f.usage.size),
            human_bytes(f.usage.avail),
            bar(f.usage.used_ratio()),
            f.usage.files_free
        );
    }
    h.push_str("</table>");

    // Docker.
    h.push_str("<h2 id=\"docker\">Docker storage</h2>");
    match &s.docker {
        None => h.push_str("<p class=\"bad\">No Docker data yet.</p>"),
        Some(d) => {
            let _ = write!(
                h,
                "<p class=\"muted\">Engine {} · API {} · {} · <code>{}</code>{}</p>",
                esc(&d.info.version),
                esc(&d.info.api_version),
                esc(&d.info.storage_driver),
                esc(&d.info.data_root),
                if s.docker_up {
                    ""
                } else {
                    " · <span class=\"bad\">stale: daemon unreachable</span>"
                }
            );
            h.push_str("<table><tr><th>type</th><th class=\"n\">total</th><th class=\"n\">active</th><th class=\"n\">size</th><th class=\"n\">reclaimable</th></tr>");
            for t in TYPES {
                let u = d.by_type(t);
                let _ = write!(
                    h,
                    "<tr><td>{t}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    u.objects,
                    u.active,
                    human_bytes(u.size),
                    human_bytes(u.reclaimable)
                );
            }
            let _ = write!(
                h,
                "<tr><td>container logs</td><td></td><td></td><td class=\"n\">{}</td><td></td></tr>\
<tr><th>reclaimable in all</th><td></td><td></td><td></td><th class=\"n\" id=\"reclaimable\">{}</th></tr></table>",
                human_bytes(d.logs_bytes),
                human_bytes(d.reclaimable_total())
            );
            let parts: Vec<(&str, u64)> = TYPES
                .iter()
                .map(|t| (*t, d.by_type(t).reclaimable))
                .collect();
            h.push_str(&chart::reclaimable(&parts));
            for line in budgets.lines() {
                let _ = write!(h, "<p class=\"budget\">{}</p>", esc(&line));
            }
            let _ = write!(
                h,
                "<p>{} dangling images holding {}. Reclaimable build cache: {}.</p>",
                d.dangling_images,
                human_bytes(d.dangling_images_bytes),
                d.build_cache_by_age
                    .iter()
                    .map(|(age, b)| format!("older than {age}: {}", human_bytes(*b)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (title, list) in [
                ("Largest images", &d.top_images),
                ("Largest volumes", &d.top_volumes),
                ("Largest container logs", &d.top_logs),
            ] {
                if list.is_empty() {
                    continue;
                }
                let _ = write!(h, "<h2>{title}</h2><table>");
                for (name, bytes) in list {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                        esc(name),
                        human_bytes(*bytes)
                    );
                }
                h.push_str("</table>");
            }
        }
    }

    // Schedules.
    if !schedules.is_empty() {
        h.push_str("<h2 id=\"schedules\">Scheduled cleanups</h2><table><tr><th>schedule</th><th>when</th><th>level</th><th>next run</th><th class=\"n\">would free now</th></tr>");
        for u in schedules {
            let s = &u.schedule;
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                esc(&s.name),
                esc(&s.cron),
                s.tz.as_deref()
                    .map(|z| format!(" {}", esc(z)))
                    .unwrap_or_default(),
                s.level,
                esc(&u.next_run_text(now)),
                u.would_free_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "unknown".into())
            );
        }
        h.push_str("</table>");
    }

    // History.
    h.push_str("<h2 id=\"builds\">Recent builds</h2>");
    if builds.is_empty() {
        h.push_str("<p class=\"muted\">No builds recorded yet. Run builds through <code>bilge build -- …</code>.</p>");
    } else {
        h.push_str("<table><tr><th>finished</th><th>project</th><th>result</th><th>reason</th><th class=\"n\">duration</th><th>evidence</th></tr>");
        for b in builds {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"n\">{:.1}s</td><td><code>{}</code></td></tr>",
                ago(Some(b.finished_at), now),
                esc(&b.project),
                if b.result == BuildResult::Success {
                    "good"
                } else {
                    "bad"
                },
                b.result,
                b.reason,
                b.duration_seconds,
                esc(b.evidence.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2 id=\"cleanups\">Recent cleanups</h2>");
    if cleanups.is_empty() {
        h.push_str("<p class=\"muted\">No cleanup has run yet.</p>");
    } else {
        h.push_str("<table><tr><th>finished</th><th>trigger</th><th>level</th><th>result</th><th class=\"n\">reclaimed</th></tr>");
        for c in cleanups {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td></tr>",
                ago(Some(c.finished_at), now),
                c.trigger,
                c.level,
                if c.result == CleanupResult::Failure {
                    "bad"
                } else {
                    "good"
                },
                c.result,
                human_bytes(c.reclaimed_bytes)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn an_empty_snapshot_renders_a_page_that_says_so() {
        let html = render(
            &Snapshot::default(),
            &Default::default(),
            &[],
            &[],
            &[],
            &[],
            Utc::now(),
        );
        assert!(html.contains("No Docker data yet"));
        assert!(html.contains("No builds recorded yet"));
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn the_footprint_shows_its_three_parts_and_the_paths_that_are_not_dockers() {
        use crate::collect::footprint::{Footprint, Unaccounted};
        let s = Snapshot {
            footprints: vec![Footprint {
                role: Role::DataRoot,
                mountpoint: "/".into(),
                paths: vec!["/var/lib/docker".into()],
                used_bytes: 3 << 30,
                walked_bytes: 2 << 30,
                docker_bytes: 1 << 30,
                unaccounted_bytes: 1 << 30,
                outside_bytes: 1 << 30,
                unaccounted: vec![Unaccounted {
                    path: "/var/lib/docker/<tmp>".into(),
                    kind: crate::collect::footprint::Kind::Tmp,
                    bytes: 1 << 30,
                }],
                entries: 7,
                complete: false,
                seconds: 1.0,
                at: Utc::now(),
            }],
            footprint_last_success: Some(Utc::now()),
            ..Snapshot::default()
        };
        let html = render(&s, &Default::default(), &[], &[], &[], &[], Utc::now());
        assert!(html.contains("Where the disk went"), "{html}");
        assert!(
            html.contains("id=\"unaccounted-data_root\">1.00GiB"),
            "{html}"
        );
        assert!(html.contains("/var/lib/docker/&lt;tmp&gt;"), "{html}");
        assert!(html.contains("incomplete walk"), "{html}");
        assert!(
            !render(
                &Snapshot::default(),
                &Default::default(),
                &[],
                &[],
                &[],
                &[],
                Utc::now()
            )
            .contains("Where the disk went")
        );
    }

    #[test]
    fn a_filling_data_root_is_drawn_with_its_forecast_its_cleanups_and_the_reclaimable_bar() {
        use crate::model::{Level, Trigger};
        let now = Utc::now();
        let t = now.timestamp();
        let du = crate::docker::DiskUsage {
            images: vec![crate::docker::Image {
                id: "sha256:a".into(),
                size: 5 << 20,
                shared_size: 0,
                containers: 0,
                created: t - 100,
                ..crate::docker::Image::default()
            }],
            ..crate::docker::DiskUsage::default()
        };
        let s = Snapshot {
            data_root: Some(crate::collect::DataRoot {
                role: Role::DataRoot,
                path: "/var/lib/docker".into(),
                mountpoint: "/".into(),
                usage: crate::collect::disk::Usage {
                    size: 1 << 30,
                    avail: 300 << 20,
                    ..Default::default()
                },
                predicted_full_seconds: Some(600.0),
            }),
            docker: Some(crate::collect::docker::summarize(
                crate::docker::DockerInfo::default(),
                &du,
                &[],
                now,
                10,
            )),
            ..Snapshot::default()
        };
        let at = |secs: i64| DateTime::from_timestamp(t - secs, 0).unwrap_or(now);
        let ran = CleanupRecord {
            id: Some(1),
            trigger: Trigger::Watermark,
            level: Level::DanglingImages,
            result: CleanupResult::Success,
            started_at: at(300),
            finished_at: at(299),
            actions: Vec::new(),
            reclaimed_bytes: 100 << 20,
            alert: None,
            detail: None,
            count: 1,
        };
        let refused = CleanupRecord {
            result: CleanupResult::Skipped,
            started_at: at(200),
            ..ran.clone()
        };
        let trend = vec![(
            Role::DataRoot,
            vec![(t - 600, 500 << 20), (t - 300, 400 << 20), (t, 300 << 20)],
        )];
        let html = render(
            &s,
            &Default::default(),
            &[],
            &[ran, refused],
            &trend,
            &[],
            now,
        );
        assert!(html.contains("<svg id=\"data-root-chart\""), "{html}");
        assert!(html.contains("class=\"avail\""), "{html}");
        assert!(html.contains("class=\"forecast\""), "{html}");
        assert_eq!(html.matches("class=\"cleanup\"").count(), 1, "{html}");
        assert!(
            html.contains("watermark cleanup (dangling_images, success): 100MiB freed"),
            "{html}"
        );
        assert!(html.contains("full in 10m"), "{html}");
        assert!(html.contains("<svg id=\"reclaimable-chart\""), "{html}");
        assert!(html.contains("data-kind=\"image\""), "{html}");
        // No script, nothing fetched.
        assert!(
            !html.contains("<script") && !html.contains("src=\"http"),
            "{html}"
        );
    }

    #[test]
    fn the_warm_budgets_show_with_what_holds_them() {
        let du = crate::docker::DiskUsage::default();
        let s = Snapshot {
            docker: Some(crate::collect::docker::summarize(
                crate::docker::DockerInfo::default(),
                &du,
                &[],
                Utc::now(),
                10,
            )),
            ..Snapshot::default()
        };
        let b = crate::cleanup::policy::Budgets {
            build_cache: Some(crate::cleanup::policy::Budget {
                keep_bytes: 20 << 30,
                held_bytes: 3 << 30,
            }),
            images: None,
        };
        let html = render(&s, &b, &[], &[], &[], &[], Utc::now());
        assert!(
            html.contains("Warm budget, build cache: keeps 20.0GiB of the most recently used; 3.00GiB held now."),
            "{html}"
        );
        assert!(!html.contains("Warm budget, unused images"), "{html}");
    }
}
