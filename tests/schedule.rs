//! Scheduled hygiene on a private dockerd: schedules of a few seconds (the leading seconds
//! field) run at their times, audited as `schedule`, one prune at a time beside the webhook;
//! a slot missed while bilge was down is caught up once; a bad schedule stops start-up.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::*;

const TOKEN: &str = "schedule-test-token";
const NO_DOCKER: &str = "unix:///nonexistent/bilge-test/docker.sock";

/// Unix seconds now, with their fraction.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Sleeps until the wall clock is `offset` seconds past a multiple of `period`.
fn sleep_to_phase(period: f64, offset: f64) {
    let now = now_secs();
    let mut at = (now / period).floor() * period + offset;
    if at <= now {
        at += period;
    }
    std::thread::sleep(Duration::from_secs_f64(at - now));
}

/// An audit row's RFC 3339 time as Unix seconds.
fn secs(v: &serde_json::Value) -> f64 {
    let t = chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    t.timestamp_millis() as f64 / 1000.0
}

/// The ended rows of `trigger`, oldest first.
fn ended(s: &Server, trigger: &str) -> Vec<serde_json::Value> {
    let mut rows: Vec<_> = cleanups(s)
        .into_iter()
        .filter(|r| r["trigger"] == trigger && r["result"] != "running")
        .collect();
    rows.reverse();
    rows
}

fn serve(dir: std::path::PathBuf, d: &Daemon, cfg: &std::path::Path) -> Server {
    let token = token_file(&d.dir, TOKEN);
    Server::start_in(
        dir,
        &d.host,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--webhook.token-file",
            token.to_str().unwrap(),
        ],
    )
}

#[test]
fn a_schedule_every_four_seconds_runs_at_its_times_as_schedule_and_never_beside_a_webhook_run() {
    let d = Daemon::start("sched");
    for i in 0..3 {
        d.make_dangling(&format!("dangle{i}:1"), 2);
    }
    let cfg = policy_file(
        &d.dir,
        &[
            "until = \"0s\"",
            "cooldown = \"0s\"",
            "target_free = \"100%\"",
            "[[cleanup.schedule]]",
            "name = \"often\"",
            "cron = \"*/4 * * * * *\"",
            "level = \"dangling_images\"",
        ],
    );
    let s = serve(temp_dir("schedserve"), &d, &cfg);
    s.wait_ready();
    // The family exists from the start, and says when the schedule runs next.
    assert!(
        s.metrics()
            .contains("bilge_cleanup_runs_total{result=\"success\",trigger=\"schedule\"}"),
        "{}",
        s.metrics()
    );
    let next = wait_for("the next run's time", Duration::from_secs(10), || {
        s.metric("bilge_cleanup_next_run_timestamp_seconds{schedule=\"often\"}")
    });
    let now = now_secs();
    assert!(
        next > now - 1.0 && next <= now + 4.5,
        "next {next}, now {now}"
    );
    assert_eq!(next % 4.0, 0.0, "not on the schedule's seconds: {next}");
    // An alert delivered right on a slot: the two race for the host lock.
    sleep_to_phase(4.0, 3.95);
    let body = alert_payload("5c4ed", &s.addr, "standard", "2024-05-01T10:00:00Z");
    let r = post_alerts(&s, Some(TOKEN), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("four scheduled runs", Duration::from_secs(40), || {
        (ended(&s, "schedule").len() >= 4).then_some(())
    });
    let scheduled = ended(&s, "schedule");
    assert!(
        scheduled.iter().all(|r| r["result"] == "success"),
        "{scheduled:#?}"
    );
    let webhook = ended(&s, "webhook");
    assert_eq!(webhook.len(), 1, "{webhook:#?}");
    // One run at a time: no two runs' spans overlap.
    let mut spans: Vec<(f64, f64)> = scheduled
        .iter()
        .chain(&webhook)
        .map(|r| (secs(&r["started_at"]), secs(&r["finished_at"])))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in spans.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "two runs overlapped: {w:?}\n{}",
            s.log_text()
        );
    }
    // Each scheduled run starts on its slot, or (the one that met the webhook's run) right
    // after the run that held the lock.
    for r in &scheduled {
        let start = secs(&r["started_at"]);
        let on_slot = start % 4.0 < 1.5;
        let after_other = spans
            .iter()
            .any(|(_, end)| start >= *end && start - end < 1.5);
        assert!(
            on_slot || after_other,
            "a scheduled run at {start} is neither on a slot nor after another run: {spans:?}"
        );
    }
    // Consecutive scheduled runs are one slot apart (none doubled, none skipped).
    let starts: Vec<f64> = scheduled
        .iter()
        .map(|r| (secs(&r["started_at"]) / 4.0).floor())
        .collect();
    for w in starts.windows(2) {
        assert_eq!(w[1] - w[0], 1.0, "slots {starts:?}");
    }
    assert!(
        s.metric("bilge_cleanup_runs_total{result=\"success\",trigger=\"schedule\"}")
            .is_some_and(|n| n >= 4.0)
    );
}

#[test]
fn a_slot_missed_while_bilge_was_down_runs_once_after_start_and_none_runs_before_its_time() {
    let d = Daemon::start("catchup");
    let dir = temp_dir("catchupserve");
    let cfg = policy_file(
        &d.dir,
        &[
            "until = \"0s\"",
            "catch_up_delay = \"1s\"",
            "[[cleanup.schedule]]",
            "name = \"five\"",
            "cron = \"*/5 * * * * *\"",
            "level = \"build_cache\"",
        ],
    );
    // First start just after a slot: the schedule is new, so it counts from now.
    sleep_to_phase(5.0, 0.3);
    let s = serve(dir.clone(), &d, &cfg);
    s.wait_ready();
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    // Back before the next slot: nothing is due, nothing runs.
    let s = serve(dir.clone(), &d, &cfg);
    s.wait_ready();
    sleep_to_phase(5.0, 4.6);
    assert!(ended(&s, "schedule").is_empty(), "{:#?}", cleanups(&s));
    // The slot comes: one run.
    let first = wait_for("the scheduled run", Duration::from_secs(10), || {
        ended(&s, "schedule").into_iter().next()
    });
    assert!(secs(&first["started_at"]) % 5.0 < 1.5, "{first:#}");
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    // Down across three slots, back just after one: exactly one catch-up follows at once.
    std::thread::sleep(Duration::from_secs(11));
    sleep_to_phase(5.0, 0.3);
    let back = now_secs();
    let s = serve(dir, &d, &cfg);
    s.wait_ready();
    sleep_to_phase(5.0, 4.3);
    let after: Vec<_> = ended(&s, "schedule")
        .into_iter()
        .filter(|r| secs(&r["started_at"]) >= back)
        .collect();
    assert_eq!(after.len(), 1, "{after:#?}\n{}", s.log_text());
    assert!(
        s.log_text().contains("catching up once"),
        "{}",
        s.log_text()
    );
    // Then the schedule goes on from its next slot.
    wait_for("the next scheduled run", Duration::from_secs(10), || {
        (ended(&s, "schedule")
            .iter()
            .filter(|r| secs(&r["started_at"]) >= back)
            .count()
            == 2)
            .then_some(())
    });
    // The page, the dry run and `bilge df` say when it runs next.
    let page = s.get("/").text();
    assert!(
        page.contains("Scheduled cleanups") && page.contains("*/5 * * * * *"),
        "{page}"
    );
    let state = s.dir.join("bilge.db");
    let out = bilge_clean(
        &d,
        &state,
        &["--config", cfg.to_str().unwrap(), "--dry-run"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("schedule five \"*/5 * * * * *\": next ")
            && text.contains("would free about"),
        "{text}"
    );
    let out = Command::new(BILGE)
        .args([
            "df",
            "--docker.host",
            &d.host,
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("schedule five \"*/5 * * * * *\": next "),
        "{text}"
    );
}

#[test]
fn a_bad_cron_level_or_time_zone_stops_start_up_with_exit_2_naming_the_key() {
    let dir = temp_dir("badschedule");
    for (entry, key) in [
        ("cron = \"0 3 * * FUNDAY\"", "cleanup.schedule[0].cron"),
        (
            "cron = \"0 3 * * SUN\"\nlevel = \"nuke\"",
            "cleanup.schedule[0].level",
        ),
        (
            "cron = \"0 3 * * SUN\"\ntz = \"Moon/Tranquility\"",
            "cleanup.schedule[0].tz",
        ),
    ] {
        let cfg = policy_file(&dir, &["[[cleanup.schedule]]", entry]);
        let out = Command::new(BILGE)
            .args(["serve", "--config"])
            .arg(&cfg)
            .args(["--docker.host", NO_DOCKER])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{entry}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{entry}: {err}");
        assert!(err.contains(key), "{entry}: {err}");
    }
}
