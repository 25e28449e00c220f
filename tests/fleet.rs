//! A fleet behind one Alertmanager, through the real engines: each host's bilge names itself
//! (`--host.name`), builds count for the host that ran them whichever bilge recorded them, the
//! bundled rules in Debian's Prometheus name that host's bilge, and Debian's Alertmanager
//! delivers to one receiver, which relays to it.

use std::time::Duration;

use crate::stack::*;
use crate::util::*;

const TOKEN: &str = "fleet-token-for-tests";

/// The panels of the dashboard's Fleet row.
const FLEET_PANELS: [&str; 4] = [
    "Hosts by data root free space",
    "Fleet reclaimable by type",
    "Top hosts by disk build failures",
    "Cleanups by host",
];

/// One fleet member: its daemon, its bilge on a port chosen first, and a dangling image there.
struct Member {
    daemon: Daemon,
    server: Server,
    dangling: String,
}

/// Starts `name`'s bilge on `port`, relaying to the members of `targets`.
fn member(name: &str, port: u16, targets: &std::path::Path) -> Member {
    let daemon = Daemon::start(name);
    let dangling = daemon.make_dangling("dangle:1", 2);
    let dir = temp_dir(name);
    let state = dir.join("bilge.db");
    let token = token_file(&daemon.dir, TOKEN);
    let cfg = policy_file(&daemon.dir, &["until = \"0s\"", "target_free = \"100%\""]);
    let host = format!("--host.name={name}");
    let server = Server::start_on_port(
        dir,
        &state,
        &daemon.host,
        port,
        &[
            &host,
            "--webhook.token-file",
            token.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--webhook.relay",
            "--webhook.relay-targets",
            targets.to_str().unwrap(),
            "--docker.refresh-interval",
            "1s",
        ],
    );
    Member {
        daemon,
        server,
        dangling,
    }
}

#[test]
fn a_build_that_failed_on_one_host_and_was_recorded_by_another_prunes_the_host_that_ran_it() {
    let dir = temp_dir("fleet");
    let (p1, p7) = (free_port(), free_port());
    let (a1, a7) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p7}"));
    // The one file Prometheus scrapes the fleet from and every bilge relays through.
    let targets = dir.join("fleet.json");
    std::fs::write(
        &targets,
        serde_json::json!([{"targets": [a1, a7], "labels": {}}]).to_string(),
    )
    .unwrap();
    let m1 = member("build-1", p1, &targets);
    let m7 = member("build-7", p7, &targets);
    let rules = shorten_for(
        &std::fs::read_to_string(repo().join("alerts/bilge.rules.yml")).unwrap(),
        "1s",
    );
    // The one receiver: build-1's bilge.
    let token = token_file(&dir, TOKEN);
    let am = Alertmanager::start_for_bilge(&m1.server.url("/api/v1/alerts"), &token);
    let prom = Prometheus::start(&[&a1, &a7], "1s", &rules, Some(&am.addr));
    prom.wait_targets_up();
    wait_for(
        "both bilges' bilge_host_info",
        Duration::from_secs(60),
        || (prom.value("count(bilge_host_info)") == Some(2.0)).then_some(()),
    );

    // build-7's build ran out of space; a CI system recorded it through build-1's bilge.
    let record = serde_json::json!({
        "project": "app",
        "result": "failure",
        "reason": "no_space",
        "duration_seconds": 3,
        "evidence": "write /var/lib/docker/tmp: no space left on device",
        "host": "build-7",
    });
    let r = http(
        "POST",
        &m1.server.url("/api/v1/builds"),
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        record.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    // The alert names build-7's bilge, not the recorder.
    let alert = wait_for(
        "BilgeBuildsFailingOutOfDisk firing",
        Duration::from_secs(90),
        || {
            prom.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "BilgeBuildsFailingOutOfDisk" && a["state"] == "firing"
            })
        },
    );
    assert_eq!(alert["labels"]["instance"], a7.as_str(), "{alert:#}");
    assert_eq!(alert["labels"]["host"], "build-7", "{alert:#}");
    assert_eq!(alert["labels"]["bilge_action"], "standard", "{alert:#}");

    let row = wait_for("build-7's cleanup", Duration::from_secs(90), || {
        cleanups(&m7.server)
            .into_iter()
            .find(|r| r["trigger"] == "webhook" && r["result"] == "success")
    });
    assert_eq!(row["level"], "dangling_images", "{row:#}");
    assert!(!m7.daemon.has_image(&m7.dangling));
    // What the relay costs: Alertmanager's own delivery latency to the receiver, which answers
    // once build-7's bilge took the relay and started its prune (an upper bound of both).
    eprintln!(
        "Alertmanager -> build-1 -> relay -> build-7 prune started: {:.1} ms (Alertmanager's notification latency); scrape duration, max of 2 targets: {:.1} ms; series per host: {}",
        notification_ms(&am),
        prom.value("max(scrape_duration_seconds{job=\"bilge\"})")
            .unwrap_or(f64::NAN)
            * 1000.0,
        prom.value(&format!("count({{instance=\"{a7}\"}})"))
            .unwrap_or(f64::NAN)
    );
    // The recorder relayed and pruned nothing of its own.
    assert!(m1.daemon.has_image(&m1.dangling));
    assert!(
        cleanups(&m1.server)
            .iter()
            .all(|r| r["trigger"] != "webhook" || r["result"] == "skipped"),
        "{:#?}",
        cleanups(&m1.server)
    );
    assert!(
        m1.server
            .metric("bilge_webhook_requests_total{outcome=\"relayed\"}")
            >= Some(1.0),
        "{}",
        m1.server.log_text()
    );
    // The dashboard's fleet row and the fleet recording rules have data in this Prometheus.
    let out = std::process::Command::new("python3")
        .arg(repo().join("scripts/bundle_lint.py"))
        .arg("--dashboard-queries")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fleet = vec![
        "job_type:bilge_docker_reclaimable_bytes:sum".to_string(),
        "job_host:bilge_builds_disk_failures:increase1h{host=\"build-7\"}".to_string(),
    ];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let q: serde_json::Value = serde_json::from_str(line).unwrap();
        if FLEET_PANELS.contains(&q["title"].as_str().unwrap_or_default()) {
            fleet.push(q["expr"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(fleet.len(), 2 + FLEET_PANELS.len(), "{fleet:?}");
    for expr in &fleet {
        let got = wait_for_opt(Duration::from_secs(30), || {
            let r = prom.query(expr);
            (!r.is_empty()).then_some(r)
        });
        assert!(got.is_some(), "no data for {expr}");
    }
    let top = prom.query(
        &fleet[2 + FLEET_PANELS
            .iter()
            .position(|t| *t == "Top hosts by disk build failures")
            .unwrap()],
    );
    assert_eq!(top[0]["metric"]["host"], "build-7", "{top:?}");

    // No page for an unwatched host: build-7's bilge names itself.
    assert!(
        prom.alerts()
            .iter()
            .all(|a| a["labels"]["alertname"] != "BilgeBuildsFailingOutOfDiskUnwatched"),
        "{:#?}",
        prom.alerts()
    );
}

/// Alertmanager in HA: two peers gossiping on loopback, each given the alert as Prometheus gives
/// it to every Alertmanager. With no wait between peers (`--cluster.peer-timeout=0s`) both
/// deliver it; bilge's de-duplication (fingerprint and `startsAt`) starts exactly one prune.
#[test]
fn two_alertmanager_peers_that_both_deliver_an_alert_start_exactly_one_prune() {
    let dir = temp_dir("fleet-ha");
    let port = free_port();
    let targets = dir.join("fleet.json");
    std::fs::write(
        &targets,
        serde_json::json!([{"targets": [format!("127.0.0.1:{port}")]}]).to_string(),
    )
    .unwrap();
    let m = member("build-3", port, &targets);
    let token = token_file(&dir, TOKEN);
    let url = m.server.url("/api/v1/alerts");
    let (c1, c2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let am1 = Alertmanager::start_peer_for_bilge(&url, &token, &c1, &[&c2], &["0s"]);
    let am2 = Alertmanager::start_peer_for_bilge(&url, &token, &c2, &[&c1], &["0s"]);
    wait_for(
        "the two peers to see each other",
        Duration::from_secs(60),
        || {
            let peers = |am: &Alertmanager| {
                http("GET", &am.url("/api/v2/status"), &[], b"")
                    .ok()
                    .map(|r| r.json()["cluster"]["peers"].as_array().map_or(0, Vec::len))
            };
            (peers(&am1) == Some(2) && peers(&am2) == Some(2)).then_some(())
        },
    );
    let alert = serde_json::json!([{
        "labels": {
            "alertname": "BilgeDockerDataRootAlmostFull",
            "instance": m.server.addr,
            "job": "bilge",
            "mountpoint": "/var/lib/docker",
            "severity": "warning",
            "bilge_action": "standard"
        },
        "annotations": {"summary": "Docker's data root is almost full."},
        "startsAt": chrono::Utc::now().to_rfc3339()
    }]);
    am1.post(&alert);
    am2.post(&alert);
    wait_for("the prune", Duration::from_secs(60), || {
        cleanups(&m.server)
            .into_iter()
            .find(|r| r["trigger"] == "webhook" && r["result"] == "success")
    });
    // Both peers' deliveries have arrived (or never will) well within this.
    std::thread::sleep(Duration::from_secs(5));
    let rows = cleanups(&m.server);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(!m.daemon.has_image(&m.dangling));
    let count = |outcome: &str| {
        m.server
            .metric(&format!(
                "bilge_webhook_requests_total{{outcome=\"{outcome}\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert_eq!(count("accepted"), 1.0, "{}", m.server.log_text());
    eprintln!(
        "two peers: {} delivery accepted, {} duplicate(s), one prune; direct delivery latency {:.1} / {:.1} ms",
        count("accepted"),
        count("duplicate"),
        notification_ms(&am1),
        notification_ms(&am2)
    );
}

/// Alertmanager's mean webhook delivery latency so far, in milliseconds (its own histogram).
fn notification_ms(am: &Alertmanager) -> f64 {
    let text = http("GET", &am.url("/metrics"), &[], b"").unwrap().text();
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains("integration=\"webhook\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    value("alertmanager_notification_latency_seconds_sum")
        / value("alertmanager_notification_latency_seconds_count")
        * 1000.0
}
