//! Faults without loss (issue 12), each against a private daemon with real objects: a flood of
//! deliveries and a restart, SIGTERM/SIGINT in the middle of a prune (`bilge serve`, `bilge
//! clean`, `bilge build --clean-and-retry`), dockerd SIGKILLed mid-prune or frozen with
//! SIGSTOP, a tag re-pointed between the plan and the removal, a full state filesystem, and a
//! long history.
//!
//! Speed is not asserted here (the project measures it in scripts): where a fault has figures
//! (scrape p99, time to ready, time to recover), the test checks that bilge works and, when
//! `BILGE_FAULTS_REPORT` names a file, appends them to it as one JSON line; scripts/faults.sh
//! runs these tests that way and writes RELIABILITY.md from those lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

const TOKEN: &str = "faults-token-for-tests";

/// One audit row, read straight from the state file.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    trigger: String,
    result: String,
    reclaimed: u64,
    count: u64,
    detail: Option<String>,
}

/// The audit rows of the state file at `state`, oldest first (none while it does not exist).
fn audit(state: &Path) -> Vec<Row> {
    if !state.exists() {
        return Vec::new();
    }
    let Ok(c) =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let _ = c.busy_timeout(Duration::from_secs(5));
    let Ok(mut st) = c.prepare(
        "SELECT trigger, result, reclaimed_bytes, count, detail FROM cleanups ORDER BY id",
    ) else {
        return Vec::new();
    };
    st.query_map([], |r| {
        Ok(Row {
            trigger: r.get(0)?,
            result: r.get(1)?,
            reclaimed: r.get::<_, i64>(2)? as u64,
            count: r.get::<_, i64>(3)? as u64,
            detail: r.get(4)?,
        })
    })
    .map(|rows| rows.flatten().collect())
    .unwrap_or_default()
}

/// Rows that stand for a run (not folded refusals).
fn runs(rows: &[Row]) -> Vec<&Row> {
    rows.iter().filter(|r| r.result != "skipped").collect()
}

/// Scrapes `/metrics` `n` times; each scrape's time.
fn scrapes(s: &Server, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = s.get("/metrics");
            assert_eq!(r.status, 200);
            t.elapsed()
        })
        .collect()
}

/// A policy file in `dir`: no minimum age, every allowed level runs, two protect labels (so
/// that image levels remove object by object, each stoppable), and `extra` lines.
fn policy(dir: &Path, extra: &[&str]) -> PathBuf {
    let mut lines = vec![
        "until = \"0s\"",
        "target_free = \"100%\"",
        "max_level = \"aggressive\"",
        "protect_labels = [\"bilge.keep=true\", \"bilge.faults.keep\"]",
    ];
    lines.extend_from_slice(extra);
    policy_file(dir, &lines)
}

/// Work for a prune that is surely in flight for a while: about `cache_mib` MiB of build
/// cache that no image shares (one record per 128 MiB), and `images` small unused images made
/// with `docker import`; all more than a second old on return.
fn in_flight_work(d: &Daemon, name: &str, cache_mib: u32, images: usize) {
    let steps: Vec<String> = (0..cache_mib.div_ceil(128))
        .map(|i| {
            format!("RUN dd if=/dev/zero of=/cache{i} bs=1M count=128 2>/dev/null && echo {name}")
        })
        .collect();
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let tag = format!("{name}-cache:1");
    d.build(Some(&tag), &steps);
    d.docker(&["rmi", &tag]);
    for i in 0..images {
        import_image(d, &format!("{name}-small{i}:1"), &format!("{name} {i}"));
    }
    std::thread::sleep(Duration::from_millis(1100));
}

/// `docker import` of a one-file image holding `content`, tagged `tag`; its id.
fn import_image(d: &Daemon, tag: &str, content: &str) -> String {
    let n = format!("{:x}", content.len() ^ tag.len() << 8);
    let dir = d
        .dir
        .join(format!("imp-{n}-{}", tag.replace([':', '/'], "_")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("content"), content).unwrap();
    let tar = dir.join("image.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tar)
            .arg("content"),
    );
    d.docker(&["import", tar.to_str().unwrap(), tag]);
    std::fs::remove_dir_all(&dir).unwrap();
    d.docker(&["image", "inspect", "--format", "{{.Id}}", tag])
}

/// A webhook server on the daemon at `docker_host` with the state at `state` and `policy`.
fn hook_server(
    dir: &Path,
    docker_host: &str,
    state: &Path,
    policy: &Path,
    extra: &[&str],
) -> Server {
    let token = token_file(dir, TOKEN);
    let mut args = vec![
        "--webhook.token-file",
        token.to_str().unwrap(),
        "--config",
        policy.to_str().unwrap(),
        "--docker.refresh-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with_state(dir.to_path_buf(), state, docker_host, &args)
}

/// The decision of each alert in a webhook answer.
fn decisions(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["decision"].as_str().unwrap().to_string())
        .collect()
}

/// Waits for the newest run to show `running` in the audit table.
fn wait_running(state: &Path) {
    wait_for("a run recorded as running", Duration::from_secs(60), || {
        audit(state)
            .iter()
            .any(|r| r.result == "running")
            .then_some(())
    });
}

/// `bilge clean` started in the background with `args`, its stderr in `log`.
fn spawn_clean(docker_host: &str, state: &Path, log: &Path, args: &[&str]) -> Child {
    Command::new(BILGE)
        .arg("clean")
        .args(["--docker.host", docker_host])
        .arg("--state.path")
        .arg(state)
        .args(args)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits (at most `limit`) for `child` to exit; its exit code.
fn exit_code(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st
                .code()
                .unwrap_or_else(|| panic!("ended by a signal: {st:?}"));
        }
        assert!(start.elapsed() < limit, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// True when nobody holds the lock file `lock` (flock -n succeeds).
fn lock_is_free(lock: &Path) -> bool {
    Command::new("/usr/bin/flock")
        .args(["-n", "-E", "75"])
        .arg(lock)
        .arg("true")
        .status()
        .expect("flock (util-linux) is missing")
        .success()
}

/// `<state>.lock`, the host lock's default place.
fn lock_of(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

// ---- a flood, then a restart ----------------------------------------------------------------

#[test]
fn a_flood_then_a_restart_then_one_more_alert_prunes_once_and_folds_the_refusals() {
    let d = Daemon::start("flood");
    let dangling = d.make_dangling("dangle:1", 2);
    let dir = temp_dir("flood-state");
    let state = dir.join("bilge.db");
    let pol = policy(&d.dir, &["cooldown = \"1h\""]);
    let s = hook_server(&dir, &d.host, &state, &pol, &[]);
    // 1,000 deliveries of distinct alerts (so that none is a duplicate), from 10 senders, while
    // a scraper measures /metrics.
    let flood = Instant::now();
    let (answers, mut scraped) = std::thread::scope(|scope| {
        let scraper = scope.spawn(|| scrapes(&s, 200));
        let senders: Vec<_> = (0..10)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    (0..100)
                        .map(|i| {
                            let body = alert_payload(
                                &format!("f{t:02}{i:03}"),
                                &s.addr,
                                "standard",
                                "2024-05-01T10:00:00Z",
                            );
                            decisions(&post_alerts(s, Some(TOKEN), &body))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let answers: Vec<String> = senders
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .flatten()
            .collect();
        (answers, scraper.join().unwrap())
    });
    let flood_took = flood.elapsed();
    let accepted = answers.iter().filter(|a| *a == "accepted").count();
    let cooldown = answers.iter().filter(|a| *a == "cooldown").count();
    assert_eq!((accepted, cooldown), (1, 999), "{answers:?}");
    wait_for("the one prune to end", Duration::from_secs(60), || {
        runs(&audit(&state))
            .iter()
            .all(|r| r.result != "running")
            .then_some(())
    });
    assert!(!d.has_image(&dangling));
    // A restart, then one more alert inside the cooldown.
    drop(s);
    let restarted = Instant::now();
    let s = hook_server(&dir, &d.host, &state, &pol, &[]);
    let back = restarted.elapsed();
    let fresh = d.make_dangling("dangle:2", 1);
    let body = alert_payload("after", &s.addr, "standard", "2024-05-01T10:01:00Z");
    assert_eq!(
        decisions(&post_alerts(&s, Some(TOKEN), &body)),
        ["cooldown"]
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        d.has_image(&fresh),
        "a second prune ran inside the cooldown"
    );
    // The audit: one run and one folded refusal row for the 1,000 refusals (in the order they
    // were written: the first refusals may come before the run's row).
    let rows = audit(&state);
    let mut kinds: Vec<(&str, u64)> = rows.iter().map(|r| (r.result.as_str(), r.count)).collect();
    kinds.sort();
    assert_eq!(kinds, [("skipped", 1000), ("success", 1)], "{rows:#?}");
    let m = s.metrics();
    assert_eq!(
        sample(
            &m,
            "bilge_cleanup_runs_total{result=\"success\",trigger=\"webhook\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "bilge_cleanup_runs_total{result=\"skipped\",trigger=\"webhook\"}"
        ),
        Some(1000.0),
        "every refusal is counted"
    );
    fault_report(
        "flood",
        "1,000 webhook deliveries of distinct alerts from 10 senders, a restart of bilge serve, one more alert inside the 1 h cooldown",
        "one prune; 999 + 1 deliveries answered `cooldown`; the refusals are one folded audit row (count 1000), every one counted in bilge_cleanup_runs_total{result=\"skipped\"}",
        serde_json::json!({
            "lost_records": 0,
            "prunes_started": runs(&rows).len(),
            "scrape_p99_ms": p99_ms(&mut scraped),
            "recover_s": back.as_secs_f64(),
            "note": format!("flood took {:.2} s; audit rows: {}", flood_took.as_secs_f64(), rows.len()),
        }),
    );
}

// ---- SIGTERM / SIGINT in the middle of a prune ---------------------------------------------

#[test]
fn sigterm_to_serve_mid_prune_records_the_run_and_the_cooldown_survives_the_restart() {
    let d = Daemon::start("termserve");
    in_flight_work(&d, "ts", 1024, 40);
    let dir = temp_dir("termserve-state");
    let state = dir.join("bilge.db");
    let pol = policy(&d.dir, &["cooldown = \"1h\""]);
    // Through a proxy that tells when the build cache prune is in flight.
    let proxy = SocketProxy::new(&dir, &d);
    let mut s = hook_server(&dir, &proxy.host, &state, &pol, &[]);
    let pid = s.pid();
    let body = alert_payload("t1", &s.addr, "aggressive", "2024-05-01T10:00:00Z");
    assert_eq!(
        decisions(&post_alerts(&s, Some(TOKEN), &body)),
        ["accepted"]
    );
    wait_running(&state);
    proxy.wait_seen("/build/prune", Duration::from_secs(60));
    let signalled = Instant::now();
    signal(pid, Signal::SIGTERM);
    let stopped = wait_for("bilge serve to exit", Duration::from_secs(30), || {
        (!s.running()).then_some(signalled.elapsed())
    });
    let log = s.log_text();
    drop(s);
    let rows = audit(&state);
    let run = runs(&rows);
    assert_eq!(run.len(), 1, "{rows:#?}\n{log}");
    assert!(
        ["success", "interrupted"].contains(&run[0].result.as_str()),
        "{rows:#?}"
    );
    assert!(
        run[0].reclaimed > 0,
        "the bytes freed so far are kept: {rows:#?}"
    );
    // A restart: the run counts for the cooldown.
    let restarted = Instant::now();
    let s = hook_server(&dir, &d.host, &state, &pol, &[]);
    let back = restarted.elapsed();
    let body = alert_payload("t2", &s.addr, "aggressive", "2024-05-01T10:01:00Z");
    assert_eq!(
        decisions(&post_alerts(&s, Some(TOKEN), &body)),
        ["cooldown"]
    );
    let rows = audit(&state);
    assert_eq!(runs(&rows).len(), 1, "{rows:#?}");
    fault_report(
        "serve-sigterm",
        "SIGTERM to bilge serve while a webhook prune of ~1 GiB of build cache and 40 small images runs",
        &format!(
            "stopped between levels/objects and exited; the run is recorded `{}` with the bytes it freed; after the restart an alert is answered `cooldown`",
            run[0].result
        ),
        serde_json::json!({
            "lost_records": 0,
            "prunes_started": 1,
            "recover_s": back.as_secs_f64(),
            "note": format!("exited {:.2} s after SIGTERM; {} MiB recorded", stopped.as_secs_f64(), run[0].reclaimed >> 20),
        }),
    );
}

/// `bilge clean` stopped by `sig` mid-prune: exits `code`, the run recorded with its bytes.
fn clean_stopped_by(sig: Signal, code: i32, name: &str) -> (Row, Duration) {
    let d = Daemon::start(name);
    in_flight_work(&d, name, 1024, 40);
    let dir = temp_dir(&format!("{name}-state"));
    let state = dir.join("bilge.db");
    let pol = policy(&d.dir, &[]);
    let log = dir.join("clean.log");
    // Through a proxy that tells when the build cache prune is in flight.
    let proxy = SocketProxy::new(&dir, &d);
    let mut child = spawn_clean(
        &proxy.host,
        &state,
        &log,
        &[
            "--config",
            pol.to_str().unwrap(),
            "--level",
            "aggressive",
            "--yes",
        ],
    );
    wait_running(&state);
    proxy.wait_seen("/build/prune", Duration::from_secs(60));
    let signalled = Instant::now();
    signal(child.id(), sig);
    let got = exit_code(&mut child, Duration::from_secs(30));
    let took = signalled.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(got, code, "{text}");
    let rows = audit(&state);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(
        ["success", "interrupted"].contains(&rows[0].result.as_str()),
        "{rows:#?}\n{text}"
    );
    assert!(rows[0].reclaimed > 0, "{rows:#?}");
    assert!(lock_is_free(&lock_of(&state)));
    // The next run works and finds the rest.
    let next = bilge_clean_json(
        &d,
        &state,
        &[
            "--config",
            pol.to_str().unwrap(),
            "--level",
            "aggressive",
            "--yes",
        ],
    );
    assert_eq!(next["record"]["result"], "success", "{next:#}");
    (rows[0].clone(), took)
}

#[test]
fn sigint_to_bilge_clean_mid_prune_exits_130_and_records_the_run() {
    let (row, took) = clean_stopped_by(Signal::SIGINT, 130, "cleanint");
    fault_report(
        "clean-sigint",
        "SIGINT (Ctrl-C) to bilge clean --level aggressive while it prunes ~1 GiB of build cache and 40 small images",
        &format!(
            "stopped after the prune call in flight, printed its table, exited 130; the run is recorded `{}` with its bytes; the lock is free and the next run works",
            row.result
        ),
        serde_json::json!({
            "lost_records": 0,
            "prunes_started": 1,
            "note": format!("exited {:.2} s after SIGINT; {} MiB recorded", took.as_secs_f64(), row.reclaimed >> 20),
        }),
    );
}

#[test]
fn sigterm_to_bilge_clean_mid_prune_exits_143_and_records_the_run() {
    let (row, took) = clean_stopped_by(Signal::SIGTERM, 143, "cleanterm");
    fault_report(
        "clean-sigterm",
        "SIGTERM to bilge clean --level aggressive while it prunes ~1 GiB of build cache and 40 small images",
        &format!(
            "as for SIGINT, exit code 143; the run is recorded `{}` with its bytes",
            row.result
        ),
        serde_json::json!({
            "lost_records": 0,
            "prunes_started": 1,
            "note": format!("exited {:.2} s after SIGTERM; {} MiB recorded", took.as_secs_f64(), row.reclaimed >> 20),
        }),
    );
}

#[test]
fn a_cancel_during_clean_and_retry_records_canceled_and_starts_no_second_attempt() {
    let d = Daemon::start("retrycancel");
    in_flight_work(&d, "rc", 1024, 0);
    let dir = temp_dir("retrycancel-state");
    let state = dir.join("bilge.db");
    let pol = policy(&d.dir, &[]);
    let attempts = dir.join("attempts");
    // A build that fails as a full disk does; each attempt leaves a line in `attempts`.
    let script = format!(
        "echo attempt >> {}; echo 'write /big: no space left on device' >&2; exit 1",
        attempts.display()
    );
    // Through a proxy that tells when the build cache prune is in flight.
    let proxy = SocketProxy::new(&dir, &d);
    let mut child = Command::new(BILGE)
        .arg("build")
        .args(["--docker.host", &proxy.host])
        .arg("--state.path")
        .arg(&state)
        .args(["--config", pol.to_str().unwrap()])
        .args(["--project", "faults", "--clean-and-retry", "--", "sh", "-c"])
        .arg(&script)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("build.log")).unwrap())
        .spawn()
        .unwrap();
    wait_running(&state);
    proxy.wait_seen("/build/prune", Duration::from_secs(60));
    signal(child.id(), Signal::SIGTERM);
    let code = exit_code(&mut child, Duration::from_secs(30));
    let log = std::fs::read_to_string(dir.join("build.log")).unwrap_or_default();
    assert_eq!(code, 143, "{log}");
    let tries = std::fs::read_to_string(&attempts).unwrap_or_default();
    assert_eq!(tries.lines().count(), 1, "a second attempt started:\n{log}");
    let builds = Store::open_for_test(&state).list_builds(10).unwrap();
    let summary: Vec<(u32, String, String)> = builds
        .iter()
        .map(|b| (b.attempt, b.result.to_string(), b.reason.to_string()))
        .collect();
    assert_eq!(
        summary,
        [
            (2, "failure".to_string(), "canceled".to_string()),
            (1, "failure".to_string(), "no_space".to_string()),
        ],
        "{log}"
    );
    let rows = audit(&state);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(
        ["success", "interrupted"].contains(&rows[0].result.as_str()),
        "{rows:#?}"
    );
    fault_report(
        "build-retry-cancel",
        "SIGTERM to bilge build --clean-and-retry during its cleanup (~1 GiB of build cache) after a no_space failure",
        &format!(
            "the cleanup stopped (recorded `{}`), the build recorded `canceled` as attempt 2, no second attempt ran, exit 143",
            rows[0].result
        ),
        serde_json::json!({"lost_records": 0, "prunes_started": 1}),
    );
}

// ---- dockerd killed mid-prune --------------------------------------------------------------

#[test]
fn dockerd_sigkilled_mid_prune_records_a_failure_with_what_it_freed_and_frees_the_lock() {
    let mut d = Daemon::start("killdockerd");
    in_flight_work(&d, "kd", 256, 30);
    let dir = temp_dir("killdockerd-state");
    let state = dir.join("bilge.db");
    let pol = policy(&d.dir, &[]);
    // Every DELETE takes 300 ms through the proxy: the per-image level is surely in flight.
    let proxy = SocketProxy::new(&dir, &d);
    proxy.delay_deletes(Duration::from_millis(300));
    let log = dir.join("clean.log");
    let mut child = spawn_clean(
        &proxy.host,
        &state,
        &log,
        &[
            "--config",
            pol.to_str().unwrap(),
            "--level",
            "aggressive",
            "--yes",
        ],
    );
    // Once the build cache level is recorded, the image level runs: kill dockerd then.
    wait_for("the first level's bytes", Duration::from_secs(60), || {
        audit(&state)
            .iter()
            .any(|r| r.result == "running" && r.reclaimed > 0)
            .then_some(())
    });
    d.kill();
    let code = exit_code(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 1, "{text}");
    let rows = audit(&state);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].result, "failure", "{rows:#?}\n{text}");
    assert!(rows[0].reclaimed > 0, "what it freed is kept: {rows:#?}");
    assert!(lock_is_free(&lock_of(&state)), "the lock is still held");
    // dockerd back: the next run works.
    let back = Instant::now();
    d.restart();
    drop(proxy);
    let next = bilge_clean_json(
        &d,
        &state,
        &[
            "--config",
            pol.to_str().unwrap(),
            "--level",
            "aggressive",
            "--yes",
        ],
    );
    let recovered = back.elapsed();
    assert_eq!(next["record"]["result"], "success", "{next:#}");
    assert!(
        (0..30).all(|i| !d.has_image(&format!("kd-small{i}:1"))),
        "the next run removed the rest"
    );
    fault_report(
        "dockerd-sigkill",
        "dockerd SIGKILLed while bilge clean removes 30 images one by one (after ~256 MiB of build cache)",
        "the run is recorded `failure` with the bytes freed before the kill; bilge clean exits 1; the host lock is free; after dockerd is back the next run succeeds",
        serde_json::json!({
            "lost_records": 0,
            "prunes_started": 2,
            "recover_s": recovered.as_secs_f64(),
            "note": format!("{} MiB recorded by the failed run", rows[0].reclaimed >> 20),
        }),
    );
}

// ---- the tag race --------------------------------------------------------------------------

#[test]
fn a_tag_re_pointed_between_the_plan_and_the_removal_keeps_its_new_image() {
    let d = Daemon::start("tagrace");
    let old = import_image(&d, "app:1", "old app");
    std::thread::sleep(Duration::from_millis(1100));
    let dir = temp_dir("tagrace-state");
    let state = dir.join("bilge.db");
    let pol = policy(&d.dir, &[]);
    // The proxy holds bilge's DELETE of the planned image while a build moves app:1.
    let proxy = SocketProxy::new(&dir, &d);
    proxy.hold_first_delete();
    let log = dir.join("clean.log");
    let mut child = spawn_clean(
        &proxy.host,
        &state,
        &log,
        &[
            "--config",
            pol.to_str().unwrap(),
            "--level",
            "aggressive",
            "--yes",
        ],
    );
    let held = proxy.wait_held(Duration::from_secs(60));
    let new = import_image(&d, "app:1", "new app");
    assert_ne!(old, new);
    proxy.release();
    let code = exit_code(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 0, "{text}");
    assert!(
        d.has_image(&new),
        "the re-pointed tag's new image was removed ({held})\n{text}"
    );
    assert_eq!(
        d.docker(&["image", "inspect", "--format", "{{.Id}}", "app:1"]),
        new
    );
    assert!(!d.has_image(&old), "the planned image stays: {text}");
    fault_report(
        "tag-race",
        "a proxy on the Docker socket holds bilge's DELETE of the planned image app:1 while app:1 is re-pointed at a new image",
        "the removal names the planned image by ID: the old image went, the new app:1 survived",
        serde_json::json!({"lost_records": 0, "prunes_started": 1, "note": format!("held: {held}")}),
    );
}

// ---- the host lock -------------------------------------------------------------------------

#[test]
fn bilge_clean_gives_up_after_the_lock_timeout_names_the_holder_and_deletes_nothing() {
    let d = Daemon::start("locktimeout");
    import_image(&d, "held:1", "held");
    std::thread::sleep(Duration::from_millis(1100));
    let dir = temp_dir("locktimeout-state");
    let state = dir.join("bilge.db");
    let pol = policy(&d.dir, &[]);
    let flags = [
        "--config",
        pol.to_str().unwrap(),
        "--level",
        "aggressive",
        "--yes",
    ];
    // A first bilge clean holds the host lock while the proxy holds its DELETE.
    let proxy = SocketProxy::new(&dir, &d);
    proxy.hold_first_delete();
    let mut first = spawn_clean(&proxy.host, &state, &dir.join("first.log"), &flags);
    proxy.wait_held(Duration::from_secs(60));
    let fresh = d.make_dangling("fresh:1", 1);
    let start = Instant::now();
    let mut args = flags.to_vec();
    args.extend(["--lock-timeout", "2s"]);
    let out = bilge_clean(&d, &state, &args);
    let waited = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(waited >= Duration::from_secs(2), "did not wait: {waited:?}");
    assert!(
        err.contains(&format!("held by pid {}", first.id())) && err.contains("--lock-timeout"),
        "{err}"
    );
    assert!(
        d.has_image(&fresh),
        "the second run deleted something: {err}"
    );
    proxy.release();
    assert_eq!(exit_code(&mut first, Duration::from_secs(60)), 0);
    assert!(lock_is_free(&lock_of(&state)));
    fault_report(
        "lock-timeout",
        "a second bilge clean --lock-timeout 2s while a first one holds the host lock (its DELETE held by a proxy on the Docker socket)",
        &format!(
            "waited {:.1} s, named the holder (`held by pid N`, the pid the first one wrote into the lock file), exited 1 and deleted nothing; the first run then finished and freed the lock",
            waited.as_secs_f64()
        ),
        serde_json::json!({"lost_records": 0, "prunes_started": 1}),
    );
}

// ---- a full state filesystem for bilge clean and bilge build --------------------------------

/// Fills the filesystem at `mnt` to its last block.
fn fill(mnt: &Path) {
    let fill = mnt.join("fill");
    for bs in ["bs=64k", "bs=1k"] {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", bs, "oflag=append", "conv=notrunc"])
            .arg(format!("of={}", fill.display()))
            .output()
            .unwrap();
    }
    assert!(
        std::fs::write(mnt.join("probe"), [0u8; 4096]).is_err(),
        "the state filesystem is not full"
    );
}

#[test]
fn a_full_state_filesystem_does_not_stop_bilge_clean_or_bilge_build() {
    let d = Daemon::start("fullcli");
    let first = d.make_dangling("first:1", 2);
    let disk = LoopFs::new("fullcli", 8);
    let state = disk.mnt.join("bilge.db");
    let pol = policy(&d.dir, &[]);
    let flags = ["--config", pol.to_str().unwrap()];
    // History, written while there is room: a run and a build.
    bilge_clean_json(&d, &state, &flags);
    assert!(!d.has_image(&first));
    let ok = Command::new(BILGE)
        .arg("build")
        .args(["--docker.host", &d.host])
        .arg("--state.path")
        .arg(&state)
        .args(["--project", "faults", "--", "true"])
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    assert!(ok.status.success());
    let rows_before = audit(&state);
    let builds_before = Store::open_for_test(&state).list_builds(10).unwrap();
    assert_eq!((rows_before.len(), builds_before.len()), (1, 1));
    fill(&disk.mnt);

    // bilge clean still prunes, and says that it could not record the run.
    let second = d.make_dangling("second:1", 2);
    let out = bilge_clean(&d, &state, &flags);
    let clean_err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!d.has_image(&second), "the prune did not run: {clean_err}");
    assert!(
        clean_err.contains("state store"),
        "the failure is not said: {clean_err}"
    );
    // bilge build still runs the build, exits with its code, and says the record failed.
    let marker = d.dir.join("built");
    let out = Command::new(BILGE)
        .arg("build")
        .args(["--docker.host", &d.host])
        .arg("--state.path")
        .arg(&state)
        .args(["--project", "faults", "--", "sh", "-c"])
        .arg(format!("touch {}; exit 3", marker.display()))
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    let build_err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{build_err}");
    assert!(marker.exists(), "the build did not run");
    assert!(
        build_err.contains("state store"),
        "the failure is not said: {build_err}"
    );
    // The rows written before are intact.
    let _ = std::fs::remove_file(disk.mnt.join("fill"));
    assert_eq!(audit(&state)[..1], rows_before[..], "{clean_err}");
    let builds_after = Store::open_for_test(&state).list_builds(10).unwrap();
    assert_eq!(builds_after[builds_after.len() - 1].project, "faults");
    assert_eq!(
        builds_after.last().map(|b| b.started_at),
        builds_before.last().map(|b| b.started_at)
    );
    fault_report(
        "full-state-fs",
        "the state file's filesystem filled to its last block, then bilge clean and bilge build (bilge serve: tests/webhook.rs)",
        "the prune ran and the build ran and exited with its own code; each said on stderr that the state store could not be written (bilge_store_errors_total in serve); the rows written before are intact",
        serde_json::json!({"lost_records": 0, "prunes_started": 2}),
    );
}

// ---- a long history ------------------------------------------------------------------------

#[test]
fn a_hundred_thousand_build_rows_do_not_slow_start_up_and_old_ones_are_pruned() {
    let d = Daemon::start("history");
    let dir = temp_dir("history-state");
    let state = dir.join("bilge.db");
    // 100,000 builds: half older than the 90-day retention, half from yesterday.
    let now = chrono::Utc::now();
    let rows: Vec<bilge::store::BuildRecord> = (0..100_000)
        .map(|i| {
            let age = if i % 2 == 0 {
                chrono::Duration::days(120)
            } else {
                chrono::Duration::days(1)
            } - chrono::Duration::seconds(i);
            let started = now - age;
            bilge::store::BuildRecord {
                id: None,
                project: format!("p{}", i % 7),
                result: if i % 3 == 0 {
                    bilge::model::BuildResult::Failure
                } else {
                    bilge::model::BuildResult::Success
                },
                reason: if i % 3 == 0 {
                    bilge::model::Reason::NoSpace
                } else {
                    bilge::model::Reason::None
                },
                exit_code: Some(if i % 3 == 0 { 1 } else { 0 }),
                started_at: started,
                finished_at: started + chrono::Duration::seconds(30),
                duration_seconds: 30.0,
                evidence: None,
                host: None,
                attempt: 1,
            }
        })
        .collect();
    let store = Store::open_for_test(&state);
    assert_eq!(store.insert_builds(&rows).unwrap(), 100_000);
    drop(store);
    let started = Instant::now();
    let s = Server::start_with_state(dir.clone(), &state, &d.host, &["--state.retention", "90d"]);
    s.wait_ready();
    let ready = started.elapsed();
    let total: f64 = s
        .metrics()
        .lines()
        .filter(|l| l.starts_with("bilge_builds_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 100_000.0, "the counters come from the summary");
    let mut scraped = scrapes(&s, 200);
    // The background prune removes the old half; the counters keep counting them.
    let pruned = wait_for("the retention prune", Duration::from_secs(60), || {
        let n = Store::open_for_test(&state).count_builds().ok()?;
        (n == 50_000).then_some(started.elapsed())
    });
    let after: f64 = s
        .metrics()
        .lines()
        .filter(|l| l.starts_with("bilge_builds_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(after, 100_000.0);
    fault_report(
        "history-100k",
        "bilge serve started on a state file with 100,000 build rows, half of them older than --state.retention 90d",
        "ready without replaying the rows (the counters come from the store's summary); the background prune removed the 50,000 old rows, the counters still count them",
        serde_json::json!({
            "lost_records": 0,
            "prunes_started": 0,
            "ready_s": ready.as_secs_f64(),
            "scrape_p99_ms": p99_ms(&mut scraped),
            "note": format!("old rows gone {:.1} s after start", pruned.as_secs_f64()),
        }),
    );
}

// ---- dockerd frozen ------------------------------------------------------------------------

/// Sends SIGCONT to a frozen daemon on drop, so that a failed test does not leave it stopped.
struct Thaw<'a>(&'a Daemon);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.signal(Signal::SIGCONT);
    }
}

#[test]
fn dockerd_frozen_with_sigstop_leaves_scrapes_fast_and_docker_up_drops_then_recovers() {
    let d = Daemon::start("frozen");
    d.make_dangling("dangle:1", 1);
    let s = Server::start(
        &d.host,
        &["--docker.timeout", "2s", "--docker.refresh-interval", "1s"],
    );
    s.wait_ready();
    wait_for("bilge_docker_up 1", Duration::from_secs(30), || {
        (s.metric("bilge_docker_up") == Some(1.0)).then_some(())
    });
    let thaw = Thaw(&d);
    d.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    let mut scraped = Vec::new();
    let mut down_after = None;
    while frozen.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let r = s.get("/metrics");
        scraped.push(t.elapsed());
        assert_eq!(r.status, 200);
        if down_after.is_none() && sample(&r.text(), "bilge_docker_up") == Some(0.0) {
            down_after = Some(frozen.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let down_after =
        down_after.expect("bilge_docker_up did not drop to 0 while dockerd was frozen");
    // Within a refresh interval plus the timeout (and slack for a loaded machine).
    assert!(down_after < Duration::from_secs(6), "{down_after:?}");
    let worst = *scraped.iter().max().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "a scrape waited on Docker: {worst:?}"
    );
    drop(thaw);
    let thawed = Instant::now();
    let recovered = wait_for("bilge_docker_up 1 again", Duration::from_secs(30), || {
        (s.metric("bilge_docker_up") == Some(1.0)).then(|| thawed.elapsed())
    });
    assert_eq!(s.get("/-/healthy").status, 200);
    fault_report(
        "dockerd-sigstop",
        "dockerd frozen with SIGSTOP for 8 s while bilge serve collects every 1 s (--docker.timeout 2s), /metrics scraped every 10 ms, then SIGCONT",
        "scrapes kept answering from the last snapshot; bilge_docker_up dropped to 0 when the first collection after the freeze timed out (bound: one refresh interval + --docker.timeout = 3 s), and came back to 1 after SIGCONT",
        serde_json::json!({
            "lost_records": 0,
            "prunes_started": 0,
            "scrape_p99_ms": p99_ms(&mut scraped),
            "recover_s": recovered.as_secs_f64(),
            "note": format!("bilge_docker_up 0 after {:.2} s; {} scrapes", down_after.as_secs_f64(), scraped.len()),
        }),
    );
}

use bilge::store::Store;

/// Opening a state file from a test.
trait OpenForTest {
    fn open_for_test(path: &Path) -> Store;
}

impl OpenForTest for Store {
    fn open_for_test(path: &Path) -> Store {
        Store::new(
            path,
            prometheus::IntCounter::new("test_store_errors_total", "test").unwrap(),
        )
    }
}
