//! `bilge clean`: the cleanup engine by hand. Prints the plan as a table (estimated bytes per
//! level), then runs it and prints what each level freed. `--dry-run` stops after the plan.
//!
//! The aggressive levels (`unused_images`, `unused_volumes`) ask for confirmation on a terminal
//! unless `--yes`; when stdin is not a terminal they are refused without `--yes` (exit code 2),
//! so a script never removes images by accident. Like every trigger, a run is capped by the
//! host's `max_level`, recorded in the audit table, and waits (at most `--lock-timeout`) for a
//! cleanup that is already running on this host instead of pruning in parallel.
//!
//! SIGINT (Ctrl-C) or SIGTERM stops the run after the object or prune call in flight, before
//! its next level, within `--cleanup.shutdown-grace`; the run is recorded `interrupted` with what
//! it freed, its table printed, and bilge exits 130 or 143 (128 + the signal). A second signal,
//! or the grace passing, records it from its progress so far and exits at once.
//!
//! `--min-free` makes it a pre-flight check (a CI runner's job-started hook): it measures the
//! data root first and cleans only when less than that is available, then up to the larger of
//! `--min-free` and the target; it says on stderr what it found. Its exit code answers whether
//! the data root has room at the end: 0 yes, [`EXIT_BELOW_MIN_FREE`] no (whatever else went
//! wrong), 1 when that cannot be told or the cleanup failed.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use super::admission::WaitError;
use super::engine::{Engine, Report, Request, Standalone, Trigger};
use super::policy::{Budgets, Level, Plan, Policy};
use crate::collect::DataRoot;
use crate::docker::DockerHost;
use crate::format::{FreeTarget, format_duration, human_bytes, table};
use crate::{Error, Result};

/// `bilge clean --min-free`'s exit code when the data root still has less than that available
/// when bilge ends (after a cleanup, a dry run, or a cleanup that could not run).
pub const EXIT_BELOW_MIN_FREE: u8 = 3;

/// `bilge clean`'s flags, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanOptions {
    /// The highest level asked for.
    pub level: Level,
    /// Minimum age, overriding the policy's.
    pub until: Option<Duration>,
    /// Free-space target, overriding the policy's.
    pub target_free: Option<FreeTarget>,
    /// Clean only below this much available on the data root (and exit 3 when still below).
    pub min_free: Option<FreeTarget>,
    /// Plan only.
    pub dry_run: bool,
    /// Skip the confirmation.
    pub yes: bool,
    /// JSON output.
    pub json: bool,
}

/// The signals that stop `bilge clean`, and the exit code each gives.
#[derive(Debug)]
struct Stops {
    /// SIGINT (Ctrl-C).
    int: tokio::signal::unix::Signal,
    /// SIGTERM.
    term: tokio::signal::unix::Signal,
}

impl Stops {
    /// Listens for SIGINT and SIGTERM (from now on they no longer end bilge at once).
    fn listen() -> Result<Stops> {
        let on = |k| signal(k).map_err(|e| Error::io("installing a signal handler", e));
        Ok(Stops {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
        })
    }

    /// The next signal: its name and the exit code it gives (128 + its number).
    async fn next(&mut self) -> (&'static str, u8) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", 130),
            _ = self.term.recv() => ("SIGTERM", 143),
        }
    }
}

/// Runs `bilge clean`; returns the exit code: 0 for a successful run or a dry run, 128 + N
/// after signal N stopped it. A failed run is an error (exit code 1) after its table is printed.
pub async fn run(engine: Standalone, opts: CleanOptions) -> Result<u8> {
    let level = engine.policy.cap(opts.level);
    let grace = engine.settings.shutdown_grace;
    let confirm = level.is_aggressive() && !opts.dry_run && !opts.yes;
    if confirm && !std::io::stdin().is_terminal() {
        return Err(Error::config(
            "--yes",
            format!(
                "{level} removes unused images{}; stdin is not a terminal to confirm it, so pass --yes (or --dry-run to look first)",
                if level == Level::UnusedVolumes {
                    " and volumes"
                } else {
                    ""
                }
            ),
        ));
    }
    let docker_host = engine.docker.host.clone();
    let engine = Engine::standalone(engine)?;
    let Some(min) = opts.min_free else {
        return clean(&engine, &opts, opts.target_free, confirm, grace).await;
    };
    // --min-free: measure first, clean only when short, and judge by a measurement at the end.
    let before = measure(&engine, &docker_host).await?;
    let (avail, size) = (before.usage.avail, before.usage.size);
    if min.met_by(avail, size) {
        eprintln!("bilge: {}", min_free_line(&before, min, Check::Before));
        if opts.json {
            let v = serde_json::json!({
                "min_free": min.to_string(),
                "min_free_bytes": min.bytes_for(size),
                "data_root": before,
                "cleaned": false,
            });
            print(&mut std::io::stdout(), &format!("{v:#}\n"));
        }
        return Ok(0);
    }
    let target = cleanup_target(
        min,
        opts.target_free.unwrap_or(engine.policy().target_free),
        size,
    );
    eprintln!(
        "bilge: {}; cleaning up (levels up to {level}) until {} is available",
        min_free_line(&before, min, Check::Before),
        described(target, size)
    );
    let ran = clean(&engine, &opts, Some(target), confirm, grace).await;
    if matches!(ran, Ok(code) if code != 0) {
        // Stopped by a signal: that is the answer.
        return ran;
    }
    let after = measure(&engine, &docker_host).await;
    let when = if ran.is_ok() {
        Check::Cleaned
    } else {
        Check::NotCleaned
    };
    match (ran, after) {
        (ran, Ok(after)) if !min.met_by(after.usage.avail, after.usage.size) => {
            if let Err(e) = ran {
                eprintln!("bilge: {e}");
            }
            eprintln!(
                "bilge: {} (exit {EXIT_BELOW_MIN_FREE})",
                min_free_line(&after, min, when)
            );
            Ok(EXIT_BELOW_MIN_FREE)
        }
        (Ok(code), Ok(after)) => {
            eprintln!("bilge: {}", min_free_line(&after, min, when));
            Ok(code)
        }
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

/// When a `--min-free` measurement is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Before anything was cleaned.
    Before,
    /// After the cleanup ran.
    Cleaned,
    /// After a cleanup that failed or could not start (the host lock).
    NotCleaned,
}

/// A target as the `--min-free` lines print it: a share with its bytes on a filesystem of
/// `size` bytes (`15% (1.50GiB)`), a size as it is (pure).
fn described(t: FreeTarget, size: u64) -> String {
    match t {
        FreeTarget::Percent(_) => format!("{t} ({})", human_bytes(t.bytes_for(size))),
        FreeTarget::Bytes(_) => t.to_string(),
    }
}

/// What a `--min-free` measurement found, as one line (pure).
fn min_free_line(d: &DataRoot, min: FreeTarget, when: Check) -> String {
    let (avail, size) = (d.usage.avail, d.usage.size);
    let needed = format!("--min-free {}", described(min, size));
    let fs = if d.mountpoint == d.path {
        String::new()
    } else {
        format!(" (filesystem {})", d.mountpoint)
    };
    let head = format!("{} available on {}{fs}", human_bytes(avail), d.path);
    match (when, min.met_by(avail, size)) {
        (Check::Before, true) => format!("{head}, at least {needed}: nothing to clean"),
        (Check::Before, false) => format!("{head}, less than {needed}"),
        (Check::Cleaned, true) => format!("{head} after the cleanup, at least {needed}"),
        (Check::Cleaned, false) => {
            format!("{head} after the cleanup, still less than {needed}")
        }
        (Check::NotCleaned, true) => format!("{head} now, at least {needed}"),
        (Check::NotCleaned, false) => format!("{head} now, still less than {needed}"),
    }
}

/// What a `--min-free` cleanup aims for: the larger (on a filesystem of `size` bytes) of the
/// minimum and the run's target, so that the next job does not find the disk short again (pure).
pub fn cleanup_target(min: FreeTarget, target: FreeTarget, size: u64) -> FreeTarget {
    if min.bytes_for(size) > target.bytes_for(size) {
        min
    } else {
        target
    }
}

/// Measures Docker's data root for `--min-free`: only a daemon on this host has one to measure.
async fn measure(engine: &Engine, docker_host: &str) -> Result<DataRoot> {
    if !DockerHost::parse(docker_host).is_ok_and(|h| h.is_local()) {
        return Err(Error::Other(format!(
            "cannot check --min-free: the daemon at {docker_host} is not on this host, so its data root cannot be measured here; run bilge on the daemon's host"
        )));
    }
    engine.collector().data_root_now().await.ok_or_else(|| {
        Error::Other(format!(
            "cannot check --min-free: Docker's data root could not be found or measured (is the daemon at {docker_host} up?)"
        ))
    })
}

/// Runs the cleanup itself (plan, confirmation, run, report) with `target_free`; returns the
/// exit code as [`run`] does.
async fn clean(
    engine: &Engine,
    opts: &CleanOptions,
    target_free: Option<FreeTarget>,
    confirm: bool,
    grace: Duration,
) -> Result<u8> {
    let req = Request {
        until: opts.until,
        target_free,
        dry_run: opts.dry_run,
        ..Request::new(Trigger::Cli, opts.level)
    };
    let mut out = std::io::stdout();
    if !opts.dry_run && (confirm || !opts.json) {
        // The plan first, from a fresh look at the daemon. When the daemon cannot be asked, the
        // run below fails and is recorded as failed (unless a confirmation was needed).
        match engine.plan_now(opts.level, opts.until, target_free).await {
            Ok(p) => {
                let text = render_plan(&p, engine.policy());
                if opts.json {
                    eprint!("{text}");
                } else {
                    print(&mut out, &text);
                }
                if confirm && !ask(&format!("Run these {} levels? [y/N] ", p.levels.len())).await {
                    return Err(Error::Other("aborted; nothing was deleted".into()));
                }
            }
            Err(e) if confirm => return Err(e),
            Err(_) => {}
        }
    }
    let mut stops = Stops::listen()?;
    let mut running = std::pin::pin!(engine.run(req));
    let mut stopped_by = None;
    let outcome = tokio::select! {
        r = &mut running => Some(r),
        (name, code) = stops.next() => {
            stopped_by = Some(code);
            eprintln!(
                "bilge: {name}: stopping the cleanup after the object in flight (at most {}; send it again to stop at once)",
                format_duration(grace)
            );
            engine.stop();
            tokio::select! {
                r = tokio::time::timeout(grace, &mut running) => r.ok(),
                _ = stops.next() => None,
            }
        }
    };
    let mut report = match outcome {
        Some(Ok(report)) => report,
        Some(Err(WaitError::Canceled)) | None if stopped_by.is_some() => {
            if outcome.is_none() {
                engine.abandon().await;
                eprintln!("bilge: the cleanup was recorded as interrupted with what it had freed");
            } else {
                eprintln!(
                    "bilge: stopped while waiting for the host's cleanup lock; nothing was deleted"
                );
            }
            return Ok(stopped_by.unwrap_or(1));
        }
        Some(Err(e)) => return Err(Error::Other(e.to_string())),
        None => return Err(Error::Other("the cleanup did not end".into())),
    };
    if opts.dry_run {
        report.schedules = engine.upcoming_now().await;
    }
    if opts.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| Error::Other(e.to_string()))?;
        print(&mut out, &format!("{text}\n"));
    } else if opts.dry_run {
        if let Some(p) = &report.plan {
            print(&mut out, &render_plan(p, engine.policy()));
        }
        let now = chrono::Utc::now();
        for u in &report.schedules {
            print(&mut out, &format!("{}\n", u.line(now)));
        }
        print(&mut out, "Dry run: nothing was deleted.\n");
    } else {
        print(&mut out, &format!("\n{}", render_report(&report)));
    }
    if let Some(code) = stopped_by {
        return Ok(code);
    }
    if report.succeeded() {
        Ok(0)
    } else {
        Err(Error::Other(format!(
            "cleanup failed: {}",
            report.record.detail.as_deref().unwrap_or("see the log")
        )))
    }
}

fn print(out: &mut std::io::Stdout, s: &str) {
    // A closed stdout (`| head`) is not worth failing a cleanup for.
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// Asks a yes/no question on the terminal; anything but `y`/`yes` is no.
async fn ask(question: &str) -> bool {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    })
    .await
    .unwrap_or(false)
}

/// Describes what a level leaves alone.
fn kept_text(k: &super::policy::Kept) -> String {
    let mut parts = Vec::new();
    if k.in_use > 0 {
        parts.push(format!("{} in use", k.in_use));
    }
    if k.protected > 0 {
        parts.push(format!("{} protected", k.protected));
    }
    if k.too_young > 0 {
        parts.push(format!("{} too young", k.too_young));
    }
    if k.budget > 0 {
        parts.push(format!("{} warm (budget)", k.budget));
    }
    if k.building > 0 {
        parts.push(format!("{} for running builds", k.building));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The plan as a table (pure).
pub fn render_plan(p: &Plan, policy: &Policy) -> String {
    let mut out = format!(
        "Cleanup plan: levels up to {}, objects older than {}",
        p.level,
        format_duration(p.until)
    );
    if !policy.protect_labels.is_empty() {
        out.push_str(&format!(
            ", protected by {}",
            policy.protect_labels.join(", ")
        ));
    }
    out.push('\n');
    if p.requested > p.level {
        out.push_str(&format!(
            "({} was asked for; this host's policy allows up to {}: max_level {}, allow_volumes {})\n",
            p.requested, p.level, policy.max_level, policy.allow_volumes
        ));
    }
    let mut rows = vec![vec![
        "LEVEL".to_string(),
        "OBJECTS".into(),
        "ESTIMATED".into(),
        "KEPT".into(),
    ]];
    for l in &p.levels {
        rows.push(vec![
            l.level.to_string(),
            l.objects.to_string(),
            human_bytes(l.bytes),
            kept_text(&l.kept),
        ]);
    }
    rows.push(vec![
        "total".into(),
        p.objects().to_string(),
        human_bytes(p.bytes),
        String::new(),
    ]);
    out.push_str(&table(&rows));
    out.push_str(&render_budgets(p));
    out.push_str(&render_order(p));
    out
}

/// Candidates shown per level in the order list; the rest are counted.
const ORDER_SHOWN: usize = 20;
/// Where the order list shows that the run stops.
const STOP_MARK: &str = "  -- the run stops here (target met, estimated) --\n";

/// The warm budgets of a plan and what holds them, one line each (pure).
fn render_budgets(p: &Plan) -> String {
    Budgets::of(p)
        .lines()
        .into_iter()
        .map(|l| l + "\n")
        .collect()
}

/// The order the levels that stop inside remove their objects in, least recently used first,
/// and where the run would stop from the estimates (pure).
fn render_order(p: &Plan) -> String {
    let inside: Vec<_> = p
        .levels
        .iter()
        .filter(|l| l.level.stops_inside() && !l.candidates.is_empty())
        .collect();
    let mut out = String::new();
    match p.stop {
        Some(s) => match s.level {
            Some(level) => out.push_str(&format!(
                "The run needs {} more available to meet its target; from the estimates it stops in {level} after {} object{}.\n",
                human_bytes(s.need_bytes),
                s.objects,
                if s.objects == 1 { "" } else { "s" }
            )),
            None => out.push_str(&format!(
                "The run needs {} more available to meet its target; from the estimates every level runs and that is not enough.\n",
                human_bytes(s.need_bytes)
            )),
        },
        None if !inside.is_empty() => out.push_str(
            "The target is met or unknown: a run goes through its first level whole and stops.\n",
        ),
        None => {}
    }
    for l in inside {
        out.push_str(&format!("{} (least recently used first):\n", l.level));
        let stop_here = p
            .stop
            .filter(|s| s.level == Some(l.level))
            .map(|s| s.objects);
        for (i, c) in l.candidates.iter().enumerate() {
            if stop_here == Some(i) {
                out.push_str(STOP_MARK);
            }
            if i >= ORDER_SHOWN {
                let rest = l.candidates.len() - i;
                match stop_here {
                    Some(at) if at > i => out.push_str(&format!(
                        "  ... and {rest} more; the run stops after object {at}\n"
                    )),
                    _ => out.push_str(&format!("  ... and {rest} more\n")),
                }
                break;
            }
            let used = c
                .last_used
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "never".into());
            out.push_str(&format!(
                "  {:>3}. {}  {}  last used {used}\n",
                i + 1,
                c.name,
                human_bytes(c.bytes)
            ));
        }
        if stop_here == Some(l.candidates.len()) && l.candidates.len() <= ORDER_SHOWN {
            out.push_str(STOP_MARK);
        }
    }
    out
}

/// What a run did, as a table (pure).
pub fn render_report(r: &Report) -> String {
    let mut rows = vec![vec![
        "LEVEL".to_string(),
        "REMOVED".into(),
        "RECLAIMED".into(),
        "AVAILABLE AFTER".into(),
    ]];
    for l in &r.levels {
        rows.push(vec![
            l.level.to_string(),
            l.removed.to_string(),
            human_bytes(l.reclaimed_bytes),
            match (&l.error, l.avail_after) {
                (Some(e), _) => format!("failed: {e}"),
                (None, Some(a)) => human_bytes(a),
                (None, None) => "-".into(),
            },
        ]);
    }
    rows.push(vec![
        "total".into(),
        r.levels.iter().map(|l| l.removed).sum::<u64>().to_string(),
        human_bytes(r.reclaimed_bytes()),
        r.avail_after.map(human_bytes).unwrap_or_else(|| "-".into()),
    ]);
    let mut out = table(&rows);
    let planned = r.plan.as_ref().map_or(0, |p| p.levels.len());
    if let Some(t) = r.target_bytes {
        if r.target_met {
            let last = r.levels.last().map(|l| l.level.to_string());
            out.push_str(&format!(
                "Target {} ({} available) met after {}{}.\n",
                r.target,
                human_bytes(t),
                last.unwrap_or_default(),
                if r.levels.len() < planned {
                    "; the remaining levels did not run"
                } else {
                    ""
                }
            ));
        } else {
            out.push_str(&format!(
                "Target {} ({} available) not met.\n",
                r.target,
                human_bytes(t)
            ));
        }
    }
    if let Some(d) = &r.record.detail {
        out.push_str(&format!("Failed: {d}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::policy::{Kept, LevelPlan};
    use crate::collect::disk::Usage;

    const GIB: u64 = 1 << 30;

    fn root(avail: u64, size: u64, mountpoint: &str) -> DataRoot {
        DataRoot {
            role: crate::collect::Role::DataRoot,
            path: "/var/lib/docker".into(),
            mountpoint: mountpoint.into(),
            usage: Usage {
                size,
                free: avail,
                avail,
                files: 1000,
                files_free: 900,
                readonly: false,
            },
            predicted_full_seconds: None,
        }
    }

    #[test]
    fn a_min_free_cleanup_aims_for_the_larger_of_the_minimum_and_the_target() {
        let (min, pct) = (FreeTarget::Bytes(10 * GIB), FreeTarget::Percent(15.0));
        // 15 % of 100 GiB is more than 10 GiB; 15 % of 40 GiB is less.
        assert_eq!(cleanup_target(min, pct, 100 * GIB), pct);
        assert_eq!(cleanup_target(min, pct, 40 * GIB), min);
        assert_eq!(cleanup_target(min, min, 40 * GIB), min);
    }

    #[test]
    fn the_min_free_lines_say_what_was_found_before_and_after() {
        let min = FreeTarget::Bytes(10 * GIB);
        assert_eq!(
            min_free_line(&root(12 * GIB, 100 * GIB, "/"), min, Check::Before),
            "12.0GiB available on /var/lib/docker (filesystem /), at least --min-free 10.0GiB: nothing to clean"
        );
        assert_eq!(
            min_free_line(&root(GIB, 100 * GIB, "/var/lib/docker"), min, Check::Before),
            "1.00GiB available on /var/lib/docker, less than --min-free 10.0GiB"
        );
        let pct = FreeTarget::Percent(20.0);
        assert_eq!(
            min_free_line(&root(GIB, 10 * GIB, "/"), pct, Check::Cleaned),
            "1.00GiB available on /var/lib/docker (filesystem /) after the cleanup, still less than --min-free 20% (2.00GiB)"
        );
        assert!(
            min_free_line(&root(3 * GIB, 10 * GIB, "/"), pct, Check::Cleaned)
                .ends_with("after the cleanup, at least --min-free 20% (2.00GiB)")
        );
        // A cleanup that could not run (the host lock) did not make the space.
        assert!(
            min_free_line(&root(GIB, 10 * GIB, "/"), pct, Check::NotCleaned)
                .ends_with("(filesystem /) now, still less than --min-free 20% (2.00GiB)")
        );
        assert_eq!(described(min, GIB), "10.0GiB");
    }

    #[test]
    fn the_plan_table_has_a_row_per_level_and_a_total() {
        let p = Plan {
            requested: Level::UnusedImages,
            level: Level::StoppedContainers,
            until: Duration::from_secs(3600),
            cutoff: None,
            levels: vec![
                LevelPlan {
                    level: Level::BuildCache,
                    objects: 3,
                    bytes: 3 << 20,
                    kept: Kept {
                        in_use: 2,
                        ..Kept::default()
                    },
                    budget: None,
                    candidates: Vec::new(),
                },
                LevelPlan {
                    level: Level::StoppedContainers,
                    objects: 1,
                    bytes: 1024,
                    kept: Kept::default(),
                    budget: None,
                    candidates: Vec::new(),
                },
            ],
            bytes: (3 << 20) + 1024,
            stop: None,
        };
        let t = render_plan(
            &p,
            &Policy {
                max_level: Level::StoppedContainers,
                ..Policy::default()
            },
        );
        assert!(t.contains("objects older than 1h"), "{t}");
        assert!(t.contains("unused_images was asked for"), "{t}");
        assert!(
            t.contains("build_cache               3    3.00MiB  2 in use"),
            "{t}"
        );
        assert!(t.contains("total                     4    3.00MiB"), "{t}");
    }
}
