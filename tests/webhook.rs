//! The Alertmanager webhook end to end: a real Alertmanager delivering to `bilge serve`, which
//! prunes a real daemon; authentication, duplicates, relay between two bilge instances, a busy
//! host, and a state store on a full filesystem.

use std::process::Command;
use std::time::Duration;

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
    serde_json::json!([{
        "labels": {
            "alertname": "BilgeDockerDataRootAlmostFull",
            "instance": instance,
            "job": "bilge",
            "mountpoint": "/var/lib/docker",
            "severity": "warning",
            "bilge_action": action
        },
        "annotations": {"summary": "Docker's data root is almost full."},
        "startsAt": chrono::Utc::now().to_rfc3339()
    }])
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
    let a = serve(&da, &policy, &["--webhook.relay"]);
    let b = serve(&db, &policy, &["--webhook.relay"]);

    let body = alert_payload("beef", &b.addr, "standard", "2024-05-01T10:00:00Z");
    let r = post_alerts(&a, Some(TOKEN), &body);
    assert_eq!(decisions(&r), ["relayed"]);
    let reason = r.json()["alerts"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("accepted"), "{reason}");

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
    assert!(b.log_text().contains("relayed by another bilge"));

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
    let history = wait_for("the first audit row", Duration::from_secs(60), || {
        let rows = cleanups(&s);
        (!rows.is_empty()).then_some(rows)
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
    let m = s.metrics();
    assert_eq!(
        sample(
            &m,
            "bilge_cleanup_runs_total{result=\"success\",trigger=\"webhook\"}"
        ),
        Some(2.0)
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
}
