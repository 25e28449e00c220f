//! The Alertmanager webhook end to end: a real Alertmanager delivering to `bilge serve`, which
//! prunes a real daemon; authentication and token rotation, duplicates, the alert cap, relay
//! between two bilge instances and to listeners the test owns (plain and TLS, listed and not,
//! redirecting), a busy host, and a state store on a full filesystem.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::util::*;

const TOKEN: &str = "s3cret-token-for-tests";

/// A server on `d` with the test token and `policy` lines, refreshing Docker every second.
fn serve(d: &Daemon, policy: &[&str], extra: &[&str]) -> Server {
    let dir = temp_dir("hook");
    serve_in(dir, d, policy, extra)
}

fn serve_in(dir: std::path::PathBuf, d: &Daemon, policy: &[&str], extra: &[&str]) -> Server {
    let token = token_file(&d.dir, TOKEN);
    let cfg = policy_file(&d.dir, policy);
    let mut args = vec![
        "--webhook.token-file".to_string(),
        token.display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "--docker.refresh-interval".into(),
        "1s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_in(dir, &d.host, &args)
}

fn decisions(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["decision"].as_str().unwrap().to_string())
        .collect()
}

/// Alerts as Prometheus would post them to Alertmanager's v2 API.
fn am_alert(instance: &str, action: &str) -> serde_json::Value {
    almost_full_alert(instance, "/var/lib/docker", action)
}

#[test]
fn an_alert_through_a_real_alertmanager_prunes_and_is_audited() {
    let d = Daemon::start("am-ok");
    let dangling = d.make_dangling("dangle:1", 20);
    d.make_stopped("stopped", "dangle:1", 2, &[]);
    let s = serve(&d, &["until = \"0s\"", "target_free = \"100%\""], &[]);
    s.wait_ready();
    // What the alert will do can be read first.
    let plan = wait_for("a plan", Duration::from_secs(30), || {
        let r = s.get("/api/v1/plan");
        (r.status == 200).then(|| r.json())
    });
    let levels = plan["plan"]["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 3, "{plan:#}");
    assert_eq!(levels[2]["level"], "dangling_images");
    assert_eq!(levels[2]["objects"], 1);
    assert!(levels[2]["bytes"].as_u64().unwrap() >= 20 * 1000 * 1000);
    assert_eq!(s.get("/api/v1/plan?level=everything").status, 400);
    let token = token_file(&d.dir, TOKEN);
    let am = Alertmanager::start_for_bilge(&s.url("/api/v1/alerts"), &token);
    am.post(&am_alert(&s.addr, "standard"));

    let row = wait_for("the webhook's cleanup", Duration::from_secs(60), || {
        cleanups(&s)
            .into_iter()
            .find(|r| r["trigger"] == "webhook" && r["result"] == "success")
    });
    let fingerprint = am.alerts()[0]["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(row["alert"], fingerprint.as_str());
    assert_eq!(row["level"], "dangling_images");
    let reclaimed = row["reclaimed_bytes"].as_u64().unwrap();
    assert!(reclaimed >= 20 * 1000 * 1000, "{row:#}");
    assert!(!d.has_image(&dangling) && !d.has_container("stopped"));
    let m = s.metrics();
    let total: f64 = ["build_cache", "stopped_containers", "dangling_images"]
        .iter()
        .filter_map(|a| {
            sample(
                &m,
                &format!("bilge_cleanup_reclaimed_bytes_total{{action=\"{a}\"}}"),
            )
        })
        .sum();
    assert_eq!(total as u64, reclaimed);
    assert_eq!(
        sample(
            &m,
            "bilge_cleanup_runs_total{result=\"success\",trigger=\"webhook\"}"
        ),
        Some(1.0)
    );
    assert!(sample(&m, "bilge_webhook_requests_total{outcome=\"accepted\"}") >= Some(1.0));
    assert_eq!(
        sample(&m, "bilge_webhook_requests_total{outcome=\"unauthorized\"}"),
        Some(0.0)
    );
}

#[test]
fn the_same_alert_with_a_wrong_token_in_alertmanager_prunes_nothing() {
    let d = Daemon::start("am-bad");
    let dangling = d.make_dangling("dangle:1", 2);
    let s = serve(&d, &["until = \"0s\"", "target_free = \"100%\""], &[]);
    s.wait_ready();
    let wrong = token_file(&d.dir, "not-the-token");
    let am = Alertmanager::start_for_bilge(&s.url("/api/v1/alerts"), &wrong);
    am.post(&am_alert(&s.addr, "standard"));
    wait_for(
        "Alertmanager's refused delivery",
        Duration::from_secs(60),
        || {
            (s.metric("bilge_webhook_requests_total{outcome=\"unauthorized\"}") >= Some(1.0))
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(cleanups(&s).is_empty());
    assert!(d.has_image(&dangling));
    let m = s.metrics();
    // The run counters start at 0 (they exist before their first event); none moved.
    let runs: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("bilge_cleanup_runs_total{"))
        .collect();
    assert!(runs.iter().all(|l| l.ends_with(" 0")), "{m}");
    assert_eq!(
        sample(&m, "bilge_webhook_requests_total{outcome=\"accepted\"}"),
        Some(0.0)
    );
}

#[test]
fn twenty_duplicate_deliveries_of_one_alert_start_exactly_one_prune() {
    let d = Daemon::start("dups");
    let dangling = d.make_dangling("dangle:1", 2);
    // No cooldown: only the deduplication can keep the duplicates from pruning again.
    let s = serve(
        &d,
        &[
            "until = \"0s\"",
            "cooldown = \"0s\"",
            "target_free = \"100%\"",
        ],
        &[],
    );
    let body = alert_payload("f00d", &s.addr, "standard", "2024-05-01T10:00:00Z");
    let answers: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| decisions(&post_alerts(&s, Some(TOKEN), &body))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted = answers.iter().filter(|a| a[0] == "accepted").count();
    let duplicate = answers.iter().filter(|a| a[0] == "duplicate").count();
    assert_eq!((accepted, duplicate), (1, 19), "{answers:?}");
    wait_for("the one cleanup", Duration::from_secs(60), || {
        (!d.has_image(&dangling)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let rows = cleanups(&s);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["alert"], "f00d");
    let m = s.metrics();
    assert_eq!(
        sample(
            &m,
            "bilge_cleanup_runs_total{result=\"success\",trigger=\"webhook\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "bilge_webhook_requests_total{outcome=\"duplicate\"}"),
        Some(19.0)
    );
    // A new firing of the same alert (a new startsAt) acts again.
    let again = alert_payload("f00d", &s.addr, "standard", "2024-05-01T11:00:00Z");
    assert_eq!(
        decisions(&post_alerts(&s, Some(TOKEN), &again)),
        ["accepted"]
    );
}

#[test]
fn an_alert_for_another_instance_is_relayed_once_and_prunes_there() {
    let da = Daemon::start("relay-a");
    let db = Daemon::start("relay-b");
    let dangling_a = da.make_dangling("dangle:1", 2);
    let dangling_b = db.make_dangling("dangle:1", 2);
    let policy = ["until = \"0s\"", "target_free = \"100%\""];
    // Each lists the other (B's port is known only once it runs: A's file is written after).
    let a_targets = da.dir.join("fleet-a.json");
    std::fs::write(&a_targets, "[]").unwrap();
    let a = serve(&da, &policy, &relay_to(&a_targets));
    let b_targets = targets_file(&db.dir, &[("http", &a.addr)]);
    let b = serve(&db, &policy, &relay_to(&b_targets));
    std::fs::write(&a_targets, targets_json(&[("http", &b.addr)])).unwrap();

    let body = alert_payload("beef", &b.addr, "standard", "2024-05-01T10:00:00Z");
    let r = post_alerts(&a, Some(TOKEN), &body);
    assert_eq!(decisions(&r), ["relayed"]);
    // The sender hears nothing of what B answered.
    assert!(
        r.json()["alerts"][0].get("reason").is_none(),
        "{}",
        r.text()
    );

    let row = wait_for("B's cleanup", Duration::from_secs(60), || {
        cleanups(&b).into_iter().find(|r| r["result"] == "success")
    });
    assert_eq!(row["alert"], "beef");
    assert!(!db.has_image(&dangling_b));
    // A did not prune.
    assert!(da.has_image(&dangling_a));
    assert!(cleanups(&a).is_empty());
    assert_eq!(
        a.metric("bilge_webhook_requests_total{outcome=\"relayed\"}"),
        Some(1.0)
    );
    assert_eq!(
        b.metric("bilge_webhook_requests_total{outcome=\"accepted\"}"),
        Some(1.0)
    );
    // B got exactly one delivery, marked as relayed by A.
    let b_log = b.log_text();
    let deliveries: Vec<&str> = b_log
        .lines()
        .filter(|l| l.contains("msg=\"webhook delivery\""))
        .collect();
    assert_eq!(deliveries.len(), 1, "{b_log}");
    assert!(deliveries[0].contains("relayed_by="), "{}", deliveries[0]);

    // A relayed delivery that does not name its receiver is not relayed again.
    let back = alert_payload("cafe", &a.addr, "standard", "2024-05-01T10:00:00Z");
    let r = http(
        "POST",
        &b.url("/api/v1/alerts"),
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("X-Bilge-Relayed", "someone-else:9830"),
        ],
        back.as_bytes(),
    )
    .unwrap();
    assert_eq!(decisions(&r), ["ignored"]);
    assert!(r.text().contains("not relayed again"), "{}", r.text());
    assert_eq!(
        a.metric("bilge_webhook_requests_total{outcome=\"relayed\"}"),
        Some(1.0)
    );
    assert_eq!(
        b.metric("bilge_webhook_requests_total{outcome=\"relayed\"}"),
        Some(0.0)
    );
    assert_eq!(
        a.metric("bilge_webhook_requests_total{outcome=\"accepted\"}"),
        Some(0.0)
    );
    assert!(da.has_image(&dangling_a));
}

/// Host B's bilge is down when Alertmanager delivers B's alert to A. A's relay fails and A
/// answers 503, so Alertmanager delivers again, with backoff; once B is back on the address the
/// fleet knows it by, the relay goes through and B prunes, exactly once. A prunes nothing.
#[test]
fn an_alert_for_a_member_that_is_down_prunes_there_once_it_is_back_exactly_once() {
    let da = Daemon::start("down-a");
    let db = Daemon::start("down-b");
    let dangling_a = da.make_dangling("dangle:1", 2);
    let dangling_b = db.make_dangling("dangle:1", 2);
    let policy = ["until = \"0s\"", "target_free = \"100%\""];
    let b_port = free_port();
    let b_addr = format!("127.0.0.1:{b_port}");
    let a_targets = targets_file(&da.dir, &[("http", &b_addr)]);
    let a = serve(&da, &policy, &relay_to(&a_targets));
    let token = token_file(&da.dir, TOKEN);
    let am = Alertmanager::start_for_bilge(&a.url("/api/v1/alerts"), &token);
    am.post(&am_alert(&b_addr, "standard"));

    // Alertmanager delivers, hears 503, and delivers again while B is still down.
    let failed = |a: &Server| {
        a.metric("bilge_webhook_requests_total{outcome=\"relay_failed\"}")
            .unwrap_or(0.0)
    };
    wait_for(
        "two failed relays (a delivery and Alertmanager's retry)",
        Duration::from_secs(60),
        || (failed(&a) >= 2.0).then_some(()),
    );
    let b_dir = temp_dir("hook");
    let b_state = b_dir.join("bilge.db");
    let b_token = token_file(&db.dir, TOKEN);
    let b_cfg = policy_file(&db.dir, &policy);
    let b = Server::start_on_port(
        b_dir,
        &b_state,
        &db.host,
        b_port,
        &[
            "--webhook.token-file",
            b_token.to_str().unwrap(),
            "--config",
            b_cfg.to_str().unwrap(),
        ],
    );
    let row = wait_for("B's cleanup", Duration::from_secs(90), || {
        cleanups(&b)
            .into_iter()
            .find(|r| r["trigger"] == "webhook" && r["result"] == "success")
    });
    assert_eq!(row["level"], "dangling_images", "{row:#}");
    // Alertmanager stops once a delivery succeeded; whatever it still had in flight is a
    // duplicate at B. Exactly one run, on B only.
    std::thread::sleep(Duration::from_secs(3));
    let rows = cleanups(&b);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(!db.has_image(&dangling_b));
    assert!(da.has_image(&dangling_a));
    assert!(cleanups(&a).is_empty(), "{:#?}", cleanups(&a));
    assert!(
        a.metric("bilge_webhook_requests_total{outcome=\"relayed\"}") >= Some(1.0),
        "{}",
        a.log_text()
    );
    let retries = failed(&a);
    assert!(retries >= 2.0, "{retries}");
    eprintln!("relay failed {retries} time(s) before B was back; B pruned once");
}

#[test]
fn without_a_valid_token_the_webhook_refuses_and_prunes_nothing() {
    let d = Daemon::start("auth");
    let dangling = d.make_dangling("dangle:1", 2);
    let policy = ["until = \"0s\"", "target_free = \"100%\""];

    // No token file: the webhook is off.
    let off = Server::start(&d.host, &[]);
    let body = alert_payload("a1", &off.addr, "standard", "2024-05-01T10:00:00Z");
    let r = post_alerts(&off, Some(TOKEN), &body);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("--webhook.token-file"), "{}", r.text());
    drop(off);

    let s = serve(&d, &policy, &["--web.max-body", "4KiB"]);
    let body = alert_payload("a1", &s.addr, "standard", "2024-05-01T10:00:00Z");
    for (auth, why) in [
        (None, "no credentials"),
        (Some("Bearer wrong"), "a wrong bearer token"),
        (
            Some("Bearer s3cret-token-for-test"),
            "a prefix of the token",
        ),
        (
            Some("Basic YWxlcnRtYW5hZ2VyOndyb25n"),
            "a wrong basic password",
        ),
    ] {
        let mut headers = vec![];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let r = http("POST", &s.url("/api/v1/alerts"), &headers, body.as_bytes()).unwrap();
        assert_eq!(r.status, 401, "{why}: {}", r.text());
        assert!(r.header("www-authenticate").is_some());
    }
    let r = post_alerts(&s, Some(TOKEN), "{not json");
    assert_eq!(r.status, 400);
    let big = format!("{{\"alerts\": [], \"pad\": \"{}\"}}", "x".repeat(8192));
    let r = post_alerts(&s, Some(TOKEN), &big);
    assert_eq!(r.status, 413, "{}", r.text());
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.has_image(&dangling));
    assert!(cleanups(&s).is_empty());
    assert_eq!(
        s.metric("bilge_webhook_requests_total{outcome=\"unauthorized\"}"),
        Some(4.0)
    );
    assert_eq!(
        s.metric("bilge_webhook_requests_total{outcome=\"bad_request\"}"),
        Some(2.0)
    );

    // Basic auth with the token as password works (Alertmanager's basic_auth).
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alertmanager:{TOKEN}"))
    );
    let r = http(
        "POST",
        &s.url("/api/v1/alerts"),
        &[("Authorization", &basic)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(decisions(&r), ["accepted"]);
    wait_for("the cleanup", Duration::from_secs(60), || {
        (!d.has_image(&dangling)).then_some(())
    });
}

#[test]
fn an_alert_while_a_cleanup_runs_is_answered_cooldown_and_acts_when_repeated() {
    let d = Daemon::start("busy");
    let dangling = d.make_dangling("dangle:1", 2);
    let dir = temp_dir("busystate");
    let s = serve_in(
        dir.clone(),
        &d,
        &[
            "until = \"0s\"",
            "target_free = \"100%\"",
            "cooldown = \"0s\"",
        ],
        &[],
    );
    // `bilge clean` (here: flock) holds the host's cleanup lock.
    let mut holder = Command::new("/usr/bin/flock")
        .arg(dir.join("bilge.db.lock"))
        .args(["sleep", "3"])
        .spawn()
        .expect("flock (util-linux) is missing");
    std::thread::sleep(Duration::from_millis(500));
    let body = alert_payload("b00c", &s.addr, "standard", "2024-05-01T10:00:00Z");
    let r = post_alerts(&s, Some(TOKEN), &body);
    assert_eq!(decisions(&r), ["cooldown"]);
    assert!(r.text().contains("already running"), "{}", r.text());
    let rows = cleanups(&s);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["result"], "skipped");
    assert!(d.has_image(&dangling));
    holder.wait().unwrap();
    // Alertmanager's next delivery of the same alert acts.
    assert_eq!(
        decisions(&post_alerts(&s, Some(TOKEN), &body)),
        ["accepted"]
    );
    wait_for("the cleanup", Duration::from_secs(60), || {
        (!d.has_image(&dangling)).then_some(())
    });
    assert_eq!(
        s.metric("bilge_cleanup_runs_total{result=\"skipped\",trigger=\"webhook\"}"),
        Some(1.0)
    );
}

#[test]
fn a_full_state_filesystem_does_not_stop_the_webhook() {
    let d = Daemon::start("fullstate");
    let first = d.make_dangling("first:1", 2);
    let disk = LoopFs::new("fullstate", 8);
    let mnt = disk.mnt.clone();
    let s = Server::start_with_state(
        temp_dir("fullstate-log"),
        &mnt.join("bilge.db"),
        &d.host,
        &[
            "--webhook.token-file",
            token_file(&d.dir, TOKEN).to_str().unwrap(),
            "--config",
            policy_file(
                &d.dir,
                &[
                    "until = \"0s\"",
                    "target_free = \"100%\"",
                    "cooldown = \"0s\"",
                ],
            )
            .to_str()
            .unwrap(),
        ],
    );
    // History, written while there is room.
    let body = alert_payload("0001", &s.addr, "standard", "2024-05-01T10:00:00Z");
    assert_eq!(
        decisions(&post_alerts(&s, Some(TOKEN), &body)),
        ["accepted"]
    );
    // (A run's row is written when it starts, as `running`: wait for its end.)
    let history = wait_for("the first audit row", Duration::from_secs(60), || {
        let rows = cleanups(&s);
        (!rows.is_empty() && rows.iter().all(|r| r["result"] != "running")).then_some(rows)
    });
    assert!(!d.has_image(&first));
    let errors_before = s.metric("bilge_store_errors_total").unwrap_or(0.0);

    // Fill the state filesystem to the last block.
    let fill = mnt.join("fill");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", fill.display()))
        .output()
        .unwrap();
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1k", "oflag=append", "conv=notrunc"])
        .arg(format!("of={}", fill.display()))
        .output()
        .unwrap();
    // (ext4 keeps a few clusters for its own metadata; nobody else gets them.)
    let probe = std::fs::write(mnt.join("probe"), [0u8; 4096]);
    assert!(probe.is_err(), "the state filesystem is not full");

    let second = d.make_dangling("second:1", 2);
    let body = alert_payload("0002", &s.addr, "standard", "2024-05-01T10:05:00Z");
    assert_eq!(
        decisions(&post_alerts(&s, Some(TOKEN), &body)),
        ["accepted"]
    );
    wait_for(
        "the prune on a full state disk",
        Duration::from_secs(60),
        || (!d.has_image(&second)).then_some(()),
    );
    wait_for(
        "the failed write to be counted",
        Duration::from_secs(30),
        || (s.metric("bilge_store_errors_total").unwrap_or(0.0) > errors_before).then_some(()),
    );
    // The write that fails first is the run's `running` row, at its start: the run is counted
    // once it has ended (regression: this read the counter right after the first failure).
    wait_for(
        "the unrecorded run to be counted",
        Duration::from_secs(30),
        || {
            (s.metric("bilge_cleanup_runs_total{result=\"success\",trigger=\"webhook\"}")
                == Some(2.0))
            .then_some(())
        },
    );
    assert!(
        s.log_text()
            .contains("state store: writing a cleanup failed")
    );
    // The history written before is intact, and bilge still answers.
    assert_eq!(cleanups(&s), history);
    assert_eq!(s.get("/-/healthy").status, 200);
    let log = s.log_text();
    assert!(!log.contains("panicked"), "{log}");
    drop(s);
    fault_report(
        "full-state-fs-serve",
        "the state file's filesystem filled to its last block under a running bilge serve, then an alert",
        "the webhook accepted it and the prune ran; the failed write was logged and counted in bilge_store_errors_total; the audit rows written before are intact",
        serde_json::json!({"lost_records": 0, "prunes_started": 2}),
    );
}

// ---- relay targets, listeners the test owns, TLS, rotation, the alert cap ------------------

/// A Docker host that does not exist: for a bilge that only decides and relays, never prunes.
const NO_DOCKER: &str = "unix:///nonexistent/bilge-test/docker.sock";

/// The flags that turn relaying on, to the members listed in `targets`.
fn relay_to(targets: &Path) -> Vec<&str> {
    vec![
        "--webhook.relay",
        "--webhook.relay-targets",
        targets.to_str().unwrap(),
    ]
}

/// A `file_sd` JSON list with one group per `(scheme, host:port)` member.
fn targets_json(members: &[(&str, &str)]) -> String {
    let groups: Vec<serde_json::Value> = members
        .iter()
        .map(|(scheme, addr)| {
            serde_json::json!({"targets": [addr], "labels": {"__scheme__": scheme, "job": "bilge"}})
        })
        .collect();
    serde_json::Value::Array(groups).to_string()
}

/// Writes [`targets_json`] of `members` into a fresh file under `dir`.
fn targets_file(dir: &Path, members: &[(&str, &str)]) -> PathBuf {
    let p = dir.join(format!("fleet-{}.json", free_port()));
    std::fs::write(&p, targets_json(members)).unwrap();
    p
}

/// A bilge that relays to `targets` and never prunes (no Docker), with the test token file
/// `token` (or the test token).
fn relay_only(targets: &Path, token: Option<&Path>, extra: &[&str]) -> Server {
    let dir = temp_dir("relayer");
    let token = match token {
        Some(t) => t.to_path_buf(),
        None => token_file(&dir, TOKEN),
    };
    let mut args = vec!["--webhook.token-file", token.to_str().unwrap()];
    args.extend(relay_to(targets));
    args.extend(extra);
    Server::start_in(dir, NO_DOCKER, &args)
}

/// One request a listener received: its head (request line and headers) and its body.
#[derive(Debug, Clone)]
struct Received {
    /// The request line and headers.
    head: String,
    /// The body.
    body: Vec<u8>,
}

impl Received {
    /// A header's value (name matched case-insensitively).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one HTTP/1.1 request (head, then `Content-Length` bytes of body) from `s`.
fn read_request(s: &mut impl Read) -> Option<Received> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(Received { head, body })
}

/// How a [`Listener`] speaks.
enum Wire {
    /// Plain TCP.
    Plain,
    /// TLS with this server configuration.
    Tls(Arc<rustls::ServerConfig>),
}

/// A loopback listener the test owns: it counts every TCP connection, records every request it
/// reads, and answers each with `answer`. Stops on drop.
struct Listener {
    /// `127.0.0.1:PORT`.
    addr: String,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    /// Requests read.
    requests: Arc<Mutex<Vec<Received>>>,
    /// Set on drop: the thread stops accepting.
    stop: Arc<AtomicBool>,
    /// The accepting thread.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// A plain HTTP listener answering `answer` (a whole HTTP response).
    fn plain(answer: &str) -> Listener {
        Self::start(Wire::Plain, answer)
    }

    /// A TLS listener presenting `cert`/`key` (PEM files) and answering `answer`.
    fn tls(cert: &Path, key: &Path, answer: &str) -> Listener {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::start(Wire::Tls(Arc::new(config)), answer)
    }

    /// Binds a free loopback port and serves it from a thread, one connection at a time.
    fn start(wire: Wire, answer: &str) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answer = answer.to_string();
        let thread = {
            let (connections, requests, stop) =
                (connections.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let got = match &wire {
                        Wire::Plain => exchange(stream, &answer),
                        Wire::Tls(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                                continue;
                            };
                            exchange(rustls::StreamOwned::new(conn, stream), &answer)
                        }
                    };
                    if let Some(r) = got {
                        requests.lock().unwrap().push(r);
                    }
                }
            })
        };
        Listener {
            addr,
            connections,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// TCP connections accepted so far.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far.
    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests read once there are `n` (or after 10 s, those there are). bilge answers
    /// `relayed` once it has sent the request, which this listener's thread may still be
    /// reading (regression: a TLS member's request was read after the test looked).
    fn wait_requests(&self, n: usize) -> Vec<Received> {
        wait_for_opt(Duration::from_secs(10), || {
            let got = self.requests();
            (got.len() >= n).then_some(got)
        })
        .unwrap_or_else(|| self.requests())
    }
}

/// Reads one request from `s` and answers it with `answer`.
fn exchange(mut s: impl Read + Write, answer: &str) -> Option<Received> {
    let r = read_request(&mut s)?;
    let _ = s.write_all(answer.as_bytes());
    let _ = s.flush();
    Some(r)
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a bilge webhook answers when it takes a delivery.
const OK_ANSWER: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"alerts\":[]}";

/// A redirect with status `code` to `location`.
fn redirect(code: u16, location: &str) -> String {
    format!(
        "HTTP/1.1 {code} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

/// The answer's `(decision, reason)` per alert.
fn decided(r: &Response) -> Vec<(String, String)> {
    decided_with(r, 200)
}

/// As [`decided`], for an answer of `status` (503 when a relay failed).
fn decided_with(r: &Response, status: u16) -> Vec<(String, String)> {
    assert_eq!(r.status, status, "{}", r.text());
    r.json()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["decision"].as_str().unwrap().to_string(),
                a["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// One delivery with a firing `standard` alert per instance (fingerprints f0, f1, …).
fn alerts_for(instances: &[&str]) -> String {
    let alerts: Vec<serde_json::Value> = instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            serde_json::json!({
                "status": "firing",
                "labels": {"alertname": "BilgeDockerDataRootAlmostFull", "instance": inst, "bilge_action": "standard"},
                "startsAt": "2024-05-01T10:00:00Z",
                "fingerprint": format!("f{i}")
            })
        })
        .collect();
    serde_json::json!({"version": "4", "status": "firing", "receiver": "bilge", "alerts": alerts})
        .to_string()
}

#[test]
fn an_alert_naming_an_unlisted_listener_is_never_sent_anywhere() {
    let listed = Listener::plain(OK_ANSWER);
    let unlisted = Listener::plain(OK_ANSWER);
    let dir = temp_dir("unlisted");
    let targets = targets_file(&dir, &[("http", &listed.addr)]);
    let s = relay_only(&targets, None, &[]);
    let r = post_alerts(&s, Some(TOKEN), &alerts_for(&[&unlisted.addr]));
    let why = format!(
        "instance {} is not this host and not listed in --webhook.relay-targets; not relayed",
        unlisted.addr
    );
    assert_eq!(decided(&r), [("ignored".to_string(), why.clone())]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        unlisted.connections(),
        0,
        "the unlisted listener was contacted"
    );
    assert_eq!(listed.connections(), 0);
    assert!(s.log_text().contains(&why), "{}", s.log_text());
    assert_eq!(
        s.metric("bilge_webhook_requests_total{outcome=\"ignored\"}"),
        Some(1.0)
    );
}

#[test]
fn a_member_added_to_the_targets_file_is_relayed_to_without_a_restart() {
    let member = Listener::plain(OK_ANSWER);
    let dir = temp_dir("addmember");
    let targets = targets_file(&dir, &[]);
    let s = relay_only(&targets, None, &[]);
    let body = alerts_for(&[&member.addr]);
    assert_eq!(decisions(&post_alerts(&s, Some(TOKEN), &body)), ["ignored"]);
    assert_eq!(member.connections(), 0);

    std::fs::write(&targets, targets_json(&[("http", &member.addr)])).unwrap();
    assert_eq!(decisions(&post_alerts(&s, Some(TOKEN), &body)), ["relayed"]);
    let got = member.wait_requests(1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].head.starts_with("POST /api/v1/alerts HTTP/1.1"),
        "{}",
        got[0].head
    );

    // A broken file keeps the last good list in force, and says so once in the log.
    std::fs::write(&targets, "[{\"targets\": [\"user@elsewhere:1\"]}]").unwrap();
    for _ in 0..3 {
        assert_eq!(decisions(&post_alerts(&s, Some(TOKEN), &body)), ["relayed"]);
    }
    let log = s.log_text();
    let warned = log
        .lines()
        .filter(|l| l.contains("the last good version stays in force"))
        .count();
    assert_eq!(warned, 1, "{log}");
    assert!(log.contains("user@elsewhere"), "{log}");
    assert_eq!(member.wait_requests(4).len(), 4);
}

#[test]
fn a_listed_member_that_redirects_is_not_followed_and_the_sender_hears_only_relay_failed() {
    let elsewhere = Listener::plain(OK_ANSWER);
    let to_elsewhere = format!("http://{}/api/v1/alerts", elsewhere.addr);
    let found = Listener::plain(&redirect(302, &to_elsewhere));
    let temporary = Listener::plain(&redirect(307, &to_elsewhere));
    // A listed member that is down: the sender must not learn that either.
    let down = free_port();
    let down = format!("127.0.0.1:{down}");
    let dir = temp_dir("redirect");
    let targets = targets_file(
        &dir,
        &[
            ("http", &found.addr),
            ("http", &temporary.addr),
            ("http", &down),
        ],
    );
    let s = relay_only(&targets, None, &[]);
    let r = post_alerts(
        &s,
        Some(TOKEN),
        &alerts_for(&[&found.addr, &temporary.addr, &down]),
    );
    let failed = (
        "relay_failed".to_string(),
        "relay failed (this bilge's log says why)".to_string(),
    );
    // A 503, so that Alertmanager delivers again; the same for every kind of failure.
    assert_eq!(
        decided_with(&r, 503),
        [failed.clone(), failed.clone(), failed]
    );
    let text = r.text();
    for leak in [
        "302",
        "307",
        "Location",
        "refused",
        "connect",
        &elsewhere.addr,
    ] {
        assert!(!text.contains(leak), "the answer tells {leak:?}: {text}");
    }
    // Each redirecting member got the relay once; the address it pointed to got nothing.
    for l in [&found, &temporary] {
        let got = l.wait_requests(1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(got[0].header("x-bilge-relayed").is_some());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(elsewhere.connections(), 0, "a redirect was followed");
    // The why is in the log, in the delivery's one line.
    let log = s.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("msg=\"webhook delivery\""))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("redirects are not followed"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(&down), "{}", lines[0]);
    assert_eq!(
        s.metric("bilge_webhook_requests_total{outcome=\"relay_failed\"}"),
        Some(1.0)
    );
}

/// A test CA and certificates made with Debian's openssl, in `dir`.
struct TestPki {
    /// The CA bilge is told to trust.
    ca: PathBuf,
    /// A certificate for 127.0.0.1 signed by that CA, and its key.
    good: (PathBuf, PathBuf),
    /// A certificate for 127.0.0.1 signed by another CA, and its key.
    rogue: (PathBuf, PathBuf),
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl did not run; apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPki {
    /// Makes both CAs and both certificates in `dir`.
    fn new(dir: &Path) -> TestPki {
        require("/usr/bin/openssl", "apt-get install openssl");
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        for name in ["ca", "rogue-ca"] {
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=bilge test {name}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        for (name, ca) in [("good", "ca"), ("rogue", "rogue-ca")] {
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "server.ext",
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        TestPki {
            ca: dir.join("ca.pem"),
            good: (dir.join("good.pem"), dir.join("good.key")),
            rogue: (dir.join("rogue.pem"), dir.join("rogue.key")),
        }
    }
}

#[test]
fn an_https_member_verified_by_the_relay_ca_gets_the_alert_and_the_token_and_an_impostor_nothing() {
    let dir = temp_dir("tlsrelay");
    let pki = TestPki::new(&dir);
    let member = Listener::tls(&pki.good.0, &pki.good.1, OK_ANSWER);
    let impostor = Listener::tls(&pki.rogue.0, &pki.rogue.1, OK_ANSWER);
    let targets = targets_file(&dir, &[("https", &member.addr), ("https", &impostor.addr)]);
    let s = relay_only(
        &targets,
        None,
        &["--webhook.relay-ca-file", pki.ca.to_str().unwrap()],
    );

    let r = post_alerts(&s, Some(TOKEN), &alerts_for(&[&member.addr]));
    assert_eq!(decisions(&r), ["relayed"]);
    let got = member.wait_requests(1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].head.starts_with("POST /api/v1/alerts "),
        "{}",
        got[0].head
    );
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let relayed: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(relayed["alerts"][0]["fingerprint"], "f0");
    assert_eq!(relayed["alerts"].as_array().unwrap().len(), 1);

    let r = post_alerts(&s, Some(TOKEN), &alerts_for(&[&impostor.addr]));
    let failed = decided_with(&r, 503);
    assert_eq!(failed[0].0, "relay_failed", "{failed:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        impostor.requests().is_empty(),
        "a certificate from another CA got the request: {:?}",
        impostor.requests()
    );
    let log = s.log_text();
    assert!(log.contains("certificate"), "{log}");
}

#[test]
fn relay_without_a_targets_file_stops_start_up_with_one_line_and_exit_code_2() {
    let dir = temp_dir("norelaytargets");
    let token = token_file(&dir, TOKEN);
    let out = Command::new(BILGE)
        .args(["serve", "--webhook.relay", "--webhook.token-file"])
        .arg(&token)
        .args(["--docker.host", NO_DOCKER])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--webhook.relay-targets"), "{err}");
}

/// POSTs an empty delivery with `token`; the status.
fn knock(s: &Server, token: &str) -> u16 {
    post_alerts(s, Some(token), r#"{"version": "4", "alerts": []}"#).status
}

#[test]
fn after_the_token_file_changes_the_old_token_gets_401_and_the_new_one_works_without_a_restart() {
    let dir = temp_dir("rotate");
    let token = dir.join("tokens");
    std::fs::write(&token, "old-token\n").unwrap();
    let s = Server::start_in(
        dir.clone(),
        NO_DOCKER,
        &["--webhook.token-file", token.to_str().unwrap()],
    );
    assert_eq!((knock(&s, "old-token"), knock(&s, "new-token")), (200, 401));
    // The overlap of a rotation: both lines are in force.
    std::fs::write(&token, "new-token\n  old-token  \n\n").unwrap();
    assert_eq!((knock(&s, "old-token"), knock(&s, "new-token")), (200, 200));
    // The old token retired, by a new file renamed over the old one (as a Secret update does).
    let next = dir.join("tokens.next");
    std::fs::write(&next, "new-token\n").unwrap();
    std::fs::rename(&next, &token).unwrap();
    assert_eq!((knock(&s, "old-token"), knock(&s, "new-token")), (401, 200));
    let build = http(
        "POST",
        &s.url("/api/v1/builds"),
        &[("Authorization", "Bearer old-token")],
        b"{}",
    )
    .unwrap();
    assert_eq!(build.status, 401, "the build API takes the same tokens");
    // An emptied file keeps the last good tokens, logged once.
    std::fs::write(&token, "\n").unwrap();
    assert_eq!((knock(&s, "old-token"), knock(&s, "new-token")), (401, 200));
    assert_eq!(knock(&s, "new-token"), 200);
    std::fs::remove_file(&token).unwrap();
    assert_eq!(knock(&s, "new-token"), 200);
    let log = s.log_text();
    let kept = log
        .lines()
        .filter(|l| l.contains("the last good version stays in force"))
        .count();
    assert_eq!(
        kept, 2,
        "one line for the empty file, one for the missing file: {log}"
    );
    assert!(
        !log.contains("new-token") && !log.contains("old-token"),
        "{log}"
    );
}

#[test]
fn with_two_tokens_in_the_file_both_work_and_a_relay_presents_the_one_the_delivery_used() {
    let member = Listener::plain(OK_ANSWER);
    let dir = temp_dir("twotokens");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "first-token\nsecond-token\n").unwrap();
    let targets = targets_file(&dir, &[("http", &member.addr)]);
    let s = relay_only(&targets, Some(&tokens), &[]);
    assert_eq!(
        (knock(&s, "first-token"), knock(&s, "second-token")),
        (200, 200)
    );
    assert_eq!(knock(&s, "third-token"), 401);
    for token in ["second-token", "first-token"] {
        let r = post_alerts(&s, Some(token), &alerts_for(&[&member.addr]));
        assert_eq!(decisions(&r), ["relayed"]);
    }
    let presented: Vec<String> = member
        .wait_requests(2)
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_string())
        .collect();
    assert_eq!(presented, ["Bearer second-token", "Bearer first-token"]);
}

/// The resident memory of the process listening on `addr` (found by its command line), in bytes.
fn rss_of_server(addr: &str) -> u64 {
    let needle = format!("--web.listen-address\0{addr}\0");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        return kib * 1024;
    }
    panic!("no process serves {addr}");
}

#[test]
fn a_one_mib_delivery_over_the_alert_cap_gets_a_quick_4xx_changes_nothing_and_costs_little_memory()
{
    let d = Daemon::start("cap");
    let dangling = d.make_dangling("dangle:1", 2);
    let s = serve(&d, &["until = \"0s\"", "target_free = \"100%\""], &[]);
    s.wait_ready();
    // Alerts that would all prune this host, then minimal ones up to just under 1 MiB (the
    // default --web.max-body), so only the alert cap can refuse it.
    let acting = serde_json::json!({
        "status": "firing",
        "labels": {"instance": s.addr, "bilge_action": "standard"},
        "startsAt": "2024-05-01T10:00:00Z"
    })
    .to_string();
    let mut body = String::from("{\"version\":\"4\",\"alerts\":[");
    for _ in 0..100 {
        body.push_str(&acting);
        body.push(',');
    }
    while body.len() < (1 << 20) - 16 {
        body.push_str("{},");
    }
    body.push_str("{}]}");
    assert!(body.len() <= 1 << 20 && body.len() > 1_000_000);
    let alerts = body.matches("{}").count() + 100;

    let before = rss_of_server(&s.addr);
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let start = Instant::now();
        let r = post_alerts(&s, Some(TOKEN), &body);
        slowest = slowest.max(start.elapsed());
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.body.len() < 1024, "a {} byte answer", r.body.len());
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("more than 64 alerts"), "{error}");
        assert!(error.contains("max_alerts"), "{error}");
    }
    let after = rss_of_server(&s.addr);
    let grew = after.saturating_sub(before);
    eprintln!(
        "a {} byte delivery of {alerts} alerts, 5 times: slowest answer {slowest:?}, VmRSS {} KiB -> {} KiB (+{} KiB)",
        body.len(),
        before / 1024,
        after / 1024,
        grew / 1024
    );
    assert!(slowest < Duration::from_secs(1), "answered in {slowest:?}");
    assert!(grew < 16 << 20, "resident memory grew by {grew} bytes");

    // Nothing happened: no prune, no audit row, no delivery logged; counted as bad requests.
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.has_image(&dangling));
    assert!(cleanups(&s).is_empty());
    assert!(!s.log_text().contains("msg=\"webhook delivery\""));
    assert_eq!(
        s.metric("bilge_webhook_requests_total{outcome=\"bad_request\"}"),
        Some(5.0)
    );
    // A delivery at the cap acts, and its answer lists each of its alerts.
    let at_cap = format!(
        "{{\"version\":\"4\",\"alerts\":[{}]}}",
        vec![acting.as_str(); 64].join(",")
    );
    let r = post_alerts(&s, Some(TOKEN), &at_cap);
    let d64 = decisions(&r);
    assert_eq!(d64.len(), 64);
    assert_eq!(d64[0], "accepted");
    wait_for("the cleanup", Duration::from_secs(60), || {
        (!d.has_image(&dangling)).then_some(())
    });
}
