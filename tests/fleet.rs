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
    let addr = format!("127.0.0.1:{port}");
    let server = start_member(&daemon, name, &addr, targets, dir, &state);
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
    let top = fleet_row_has_data(&prom, "build-7");
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
    let alert = almost_full_alert(&m.server.addr, "/var/lib/docker", "standard");
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
        sample(&text, &format!("{name}{{integration=\"webhook\"}}")).unwrap_or(f64::NAN)
    };
    value("alertmanager_notification_latency_seconds_sum")
        / value("alertmanager_notification_latency_seconds_count")
        * 1000.0
}

/// The fleet's roles by host number (1-based): the receiver, the three hosts whose data root
/// fills, the host whose bilge is down when its alert is delivered, and the host whose build is
/// recorded by another's bilge. The twenty-host bed uses the numbers; a smaller one packs
/// the same roles into its hosts.
struct Roles {
    filled: [usize; 3],
    down: usize,
    build: usize,
}

fn roles(n: usize) -> Roles {
    if n >= 20 {
        Roles {
            filled: [3, 9, 15],
            down: 12,
            build: 7,
        }
    } else {
        Roles {
            filled: [2, 3, 4],
            down: 5,
            build: 6,
        }
    }
}

/// A daemon's objects: image and container ids.
fn objects(d: &Daemon) -> (usize, usize) {
    let count = |args: &[&str]| d.docker(args).lines().filter(|l| !l.is_empty()).count();
    (
        count(&["images", "-aq", "--no-trunc"]),
        count(&["ps", "-aq", "--no-trunc"]),
    )
}

/// The webhook runs that pruned on a member.
fn prunes(s: &Server) -> Vec<serde_json::Value> {
    cleanups(s)
        .into_iter()
        .filter(|r| r["trigger"] == "webhook" && r["result"] == "success")
        .collect()
}

/// The fleet test bed: `BILGE_FLEET_HOSTS` hosts (6 in the suite; `scripts/fleet.sh` runs 20),
/// each a Docker daemon and a bilge on its own loopback address (127.0.0.2, …), one Debian
/// Prometheus scraping them all through one `file_sd` file with the bundled rules (its `for:`
/// shortened), one Debian Alertmanager with one bilge receiver (host 1), and the same file as
/// every bilge's relay list.
///
/// - Three hosts' data roots (small loop filesystems) fill: each fires the bundled alert, which
///   is delivered to host 1, relayed to that host, which prunes once.
/// - A `no_space` build of the build host, recorded through host 2's bilge, prunes the build host.
/// - The down host's bilge is SIGKILLed, its alert reaches Alertmanager, and it is started again
///   after host 1's relay failed twice: it still prunes, exactly once.
/// - Every other daemon keeps every object.
#[test]
fn a_fleet_prunes_each_host_for_its_own_alerts_only_and_loses_none_while_a_host_is_down() {
    let n: usize = std::env::var("BILGE_FLEET_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
        .max(6);
    let r = roles(n);
    let started = std::time::Instant::now();
    let dir = temp_dir("fleet-bed");
    let targets = dir.join("fleet.json");
    let addrs: Vec<String> = (1..=n)
        .map(|k| format!("127.0.0.{}:{}", k + 1, free_port()))
        .collect();
    std::fs::write(
        &targets,
        serde_json::json!([{"targets": addrs, "labels": {}}]).to_string(),
    )
    .unwrap();
    let on_loop = |k: usize| r.filled.contains(&k);
    let mut daemons = Vec::new();
    let mut servers = Vec::new();
    let mut states = Vec::new();
    for k in 1..=n {
        let name = format!("host{k:02}");
        let d = if on_loop(k) {
            Daemon::start_on_loop_fs(&name, 320)
        } else {
            Daemon::start(&name)
        };
        d.make_dangling("dangle:1", 1);
        let sdir = temp_dir(&name);
        let state = sdir.join("bilge.db");
        let s = start_member(&d, &name, &addrs[k - 1], &targets, sdir.clone(), &state);
        daemons.push(d);
        servers.push(s);
        states.push((sdir, state));
    }
    let before: Vec<(usize, usize)> = daemons.iter().map(objects).collect();
    let rules = shorten_for(
        &std::fs::read_to_string(repo().join("alerts/bilge.rules.yml")).unwrap(),
        "1s",
    );
    let token = token_file(&dir, TOKEN);
    let am = Alertmanager::start_for_bilge(&servers[0].url("/api/v1/alerts"), &token);
    let prom = Prometheus::start_file_sd(&targets, "1s", &rules, Some(&am.addr));
    wait_for("every host scraped", Duration::from_secs(120), || {
        (prom.value("count(up == 1)") == Some(n as f64)).then_some(())
    });
    let bed_up = started.elapsed();

    // Three data roots fill up.
    for k in r.filled {
        daemons[k - 1].make_dangling("fill:1", 250);
    }
    for k in r.filled {
        wait_for(
            &format!("host{k:02}'s prune"),
            Duration::from_secs(180),
            || (!prunes(&servers[k - 1]).is_empty()).then_some(()),
        );
    }

    // The build host's no_space build, recorded through host 2's bilge.
    let record = serde_json::json!({
        "project": "app", "result": "failure", "reason": "no_space", "duration_seconds": 3,
        "host": format!("host{:02}", r.build),
    });
    let resp = http(
        "POST",
        &servers[1].url("/api/v1/builds"),
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        record.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    wait_for("the build host's prune", Duration::from_secs(120), || {
        (!prunes(&servers[r.build - 1]).is_empty()).then_some(())
    });

    // The down host: its bilge is SIGKILLed, then its alert (as the bundled rule makes it) reaches
    // Alertmanager as Prometheus sends it; host 1's relays fail (503, retried) until the host is
    // back. Killing first keeps the order certain on a loaded machine: a data root filled here
    // would race its own alert against the kill.
    let down_addr = addrs[r.down - 1].clone();
    let failed = |s: &Server| {
        s.metric("bilge_webhook_requests_total{outcome=\"relay_failed\"}")
            .unwrap_or(0.0)
    };
    let failed_before = failed(&servers[0]);
    servers[r.down - 1].kill();
    am.post(&almost_full_alert(
        &down_addr,
        &daemons[r.down - 1].data_root.display().to_string(),
        "standard",
    ));
    wait_for(
        "two failed relays to the down host",
        Duration::from_secs(120),
        || (failed(&servers[0]) >= failed_before + 2.0).then_some(()),
    );
    let name = format!("host{:02}", r.down);
    let (sdir, state) = states[r.down - 1].clone();
    servers[r.down - 1] = start_member(
        &daemons[r.down - 1],
        &name,
        &down_addr,
        &targets,
        sdir,
        &state,
    );
    wait_for("the down host's prune", Duration::from_secs(180), || {
        (!prunes(&servers[r.down - 1]).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));

    // The Fleet row and the fleet rules, in this Prometheus of the whole bed.
    let top = fleet_row_has_data(&prom, &format!("host{:02}", r.build));
    assert_eq!(
        top[0]["metric"]["host"],
        format!("host{:02}", r.build).as_str(),
        "{top:?}"
    );

    // Each acted-on host pruned exactly once; every other daemon kept every object.
    let acted: Vec<usize> = r.filled.iter().copied().chain([r.build, r.down]).collect();
    for k in 1..=n {
        let p = prunes(&servers[k - 1]);
        if acted.contains(&k) {
            assert_eq!(p.len(), 1, "host{k:02}: {p:#?}");
        } else {
            assert!(p.is_empty(), "host{k:02} pruned: {p:#?}");
            assert_eq!(
                objects(&daemons[k - 1]),
                before[k - 1],
                "host{k:02} lost objects"
            );
        }
    }
    eprintln!(
        "fleet bed of {n}: up in {:.1} s; Alertmanager's mean webhook latency {:.1} ms (relays \
         included); scrape duration max {:.1} ms, mean {:.1} ms; relay failures while the down \
         host was down: {}; whole test {:.1} s",
        bed_up.as_secs_f64(),
        notification_ms(&am),
        prom.value("max(scrape_duration_seconds{job=\"bilge\"})")
            .unwrap_or(f64::NAN)
            * 1000.0,
        prom.value("avg(scrape_duration_seconds{job=\"bilge\"})")
            .unwrap_or(f64::NAN)
            * 1000.0,
        failed(&servers[0]) - failed_before,
        started.elapsed().as_secs_f64()
    );
}

/// Starts host `name`'s bilge on `addr` with the fleet's relay list and state at `state`.
fn start_member(
    d: &Daemon,
    name: &str,
    addr: &str,
    targets: &std::path::Path,
    dir: std::path::PathBuf,
    state: &std::path::Path,
) -> Server {
    let token = token_file(&d.dir, TOKEN);
    let cfg = policy_file(&d.dir, &["until = \"0s\"", "target_free = \"100%\""]);
    let host = format!("--host.name={name}");
    let instance = format!("--webhook.instance={addr}");
    Server::start_on_addr(
        dir,
        state,
        &d.host,
        addr,
        &[
            &host,
            &instance,
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
    )
}

/// Evaluates the dashboard's Fleet row and the fleet recording rules in `prom`, each until it
/// returns data; returns the answer of "Top hosts by disk build failures".
fn fleet_row_has_data(prom: &Prometheus, failing_host: &str) -> Vec<serde_json::Value> {
    let mut fleet = vec![
        "job_type:bilge_docker_reclaimable_bytes:sum".to_string(),
        format!("job_host:bilge_builds_disk_failures:increase1h{{host=\"{failing_host}\"}}"),
    ];
    for q in dashboard_queries() {
        if FLEET_PANELS.contains(&q.title.as_str()) {
            fleet.push(q.expr);
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
    let i = FLEET_PANELS
        .iter()
        .position(|t| *t == "Top hosts by disk build failures")
        .unwrap();
    prom.query(&fleet[2 + i])
}
