//! The seed scenario, end to end, with nothing faked: a 1 GiB data root fills up with build
//! cache and dangling images from real builds until a build fails `no_space`; then, with no
//! further action by the test, the bundled rules fire in Debian's Prometheus, the bundled
//! Alertmanager config calls bilge's webhook, bilge prunes, free space rises above the target,
//! the alert resolves and the same build succeeds. Afterwards every dashboard query is evaluated
//! in that Prometheus and every metric the bundle names is checked against bilge's real output.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::stack::*;
use crate::util::*;

/// Seconds since `t0`, for the timeline.
struct Timeline {
    t0: Instant,
    wall0: chrono::DateTime<chrono::Utc>,
    events: Vec<(f64, String)>,
}

impl Timeline {
    fn mark(&mut self, what: impl Into<String>) {
        let t = self.t0.elapsed().as_secs_f64();
        let what = what.into();
        eprintln!("[{t:7.1}s] {what}");
        self.events.push((t, what));
    }

    /// Seconds from the start to an RFC 3339 time another program reported.
    fn at(&self, rfc3339: &str) -> f64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .map(|t| {
                (t.with_timezone(&chrono::Utc) - self.wall0).num_milliseconds() as f64 / 1000.0
            })
            .unwrap_or(f64::NAN)
    }
}

/// Available and total bytes of the filesystem at `p`.
fn avail(p: &Path) -> (u64, u64) {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    let f = s.fragment_size() as u64;
    (s.blocks_available() as u64 * f, s.blocks() as u64 * f)
}

/// Runs `bilge build` around a BuildKit build of `lines` on `d`; returns (exit code, stderr).
fn bilge_build(
    d: &Daemon,
    server: &Server,
    token: &Path,
    project: &str,
    tag: &str,
    lines: &[&str],
) -> (i32, String) {
    let ctx = build_context(&d.dir, lines);
    let out = Command::new(BILGE)
        .args(["build", "--project", project, "--server", &server.url("")])
        .arg("--server.token-file")
        .arg(token)
        .args(["--docker.host", &d.host])
        .arg("--state.path")
        .arg(d.dir.join("client.db"))
        .args(["--", DOCKER, "build", "--network", "none", "-t", tag])
        .arg(&ctx)
        .env("DOCKER_HOST", &d.host)
        .env("DOCKER_BUILDKIT", "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&ctx);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Dashboard panels that may rightly be empty at the end of this scenario, with the reason.
const MAY_BE_EMPTY: &[(&str, &str)] = &[(
    "Estimated time to full",
    "only shown while the data root is shrinking; after the prune it is growing",
)];

#[test]
fn a_full_disk_fires_the_alert_and_bilge_prunes_it_back_without_anyone() {
    let mut tl = Timeline {
        t0: Instant::now(),
        wall0: chrono::Utc::now(),
        events: Vec::new(),
    };
    let d = Daemon::start_on_loop_fs("e2e", 1024);
    let state = temp_dir("e2e-state");
    let token = state.join("token");
    std::fs::write(&token, "e2e-secret-token\n").unwrap();
    let policy = state.join("bilge.toml");
    std::fs::write(
        &policy,
        "[cleanup]\nuntil = \"0s\"\ntarget_free = \"50%\"\ncooldown = \"20s\"\nmax_level = \"standard\"\n",
    )
    .unwrap();
    let s = Server::start_in(
        state.clone(),
        &d.host,
        &[
            "--docker.refresh-interval",
            "1s",
            "--webhook.token-file",
            token.to_str().unwrap(),
            "--config",
            policy.to_str().unwrap(),
        ],
    );
    s.wait_ready();
    let am = Alertmanager::start(&bundled_alertmanager_config(
        &s.url("/api/v1/alerts"),
        &token,
    ));
    let rules = std::fs::read_to_string(repo().join("alerts/bilge.rules.yml")).unwrap();
    let p = Prometheus::start(
        &[&s.addr],
        "1s",
        &shorten_for(&rules, "10s"),
        Some(&am.addr),
    );
    p.wait_targets_up();
    tl.mark("stack up: dockerd on a 1 GiB loop fs, bilge, Prometheus, Alertmanager");

    // A running service with a volume and a log, so that every dashboard panel has something
    // to show and the prune has something it must leave alone.
    d.build(Some("base:1"), &[]);
    d.docker(&["volume", "create", "cache"]);
    let service = "echo hello; echo data > /c/f; exec sleep 600";
    d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "-v",
        "cache:/c",
        "base:1",
        "sh",
        "-c",
        service,
    ]);

    // Fill: each build adds a unique layer and re-tags `fill:latest`, leaving the last one
    // dangling; BuildKit keeps the cache. Stop at 7-9 % available.
    let (_, size) = avail(&d.data_root);
    let mut n = 0;
    loop {
        let (free, _) = avail(&d.data_root);
        let ratio = free as f64 / size as f64;
        if ratio < 0.09 {
            break;
        }
        let mib = ((free as f64 - 0.075 * size as f64) / 1048576.0).clamp(1.0, 160.0) as u64;
        n += 1;
        let marker = format!(
            "RUN echo fill {n} > /marker && dd if=/dev/zero of=/fill bs=1M count={mib} 2>/dev/null"
        );
        let (code, err) = bilge_build(&d, &s, &token, "fill", "fill:latest", &[&marker]);
        assert_eq!(code, 0, "fill build {n} ({mib} MiB) failed: {err}");
        assert!(n < 40, "the disk did not fill up");
    }
    let (free, _) = avail(&d.data_root);
    tl.mark(format!(
        "filled with {n} builds: {:.1}% available",
        100.0 * free as f64 / size as f64
    ));

    // The build that needs more than is left.
    let app = ["RUN dd if=/dev/zero of=/app bs=1M count=300"];
    let (code, err) = bilge_build(&d, &s, &token, "app", "app:latest", &app);
    assert_ne!(
        code, 0,
        "the app build should have failed on a full disk: {err}"
    );
    assert!(
        err.contains("no_space"),
        "bilge's summary should say no_space: {err}"
    );
    assert!(
        err.to_lowercase().contains("no space left on device"),
        "{err}"
    );
    tl.mark("app build failed: no_space");

    let alert = wait_for("the disk alert to fire", Duration::from_secs(120), || {
        p.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "BilgeDockerDataRootAlmostFull" && a["state"] == "firing"
        })
    });
    let active = tl.at(alert["activeAt"].as_str().unwrap_or_default());
    tl.mark(format!(
        "Prometheus: BilgeDockerDataRootAlmostFull firing (active since {active:.1}s)"
    ));
    wait_for(
        "Alertmanager to hold the alert",
        Duration::from_secs(60),
        || {
            am.alerts()
                .iter()
                .any(|a| a["labels"]["alertname"] == "BilgeDockerDataRootAlmostFull")
                .then_some(())
        },
    );
    tl.mark("Alertmanager: alert received");
    wait_for(
        "the webhook to accept an alert",
        Duration::from_secs(90),
        || {
            s.metric("bilge_webhook_requests_total{outcome=\"accepted\"}")
                .filter(|v| *v >= 1.0)
        },
    );
    tl.mark("bilge: webhook accepted the alert");
    let cleanup = wait_for(
        "a webhook cleanup in the audit",
        Duration::from_secs(120),
        || {
            let v = s.get("/api/v1/cleanups").json();
            v["cleanups"]
                .as_array()?
                .iter()
                .find(|c| c["trigger"] == "webhook" && c["result"] == "success")
                .cloned()
        },
    );
    let reclaimed = cleanup["reclaimed_bytes"].as_u64().unwrap();
    tl.mark(format!(
        "bilge: pruned {} MiB ({})",
        reclaimed >> 20,
        cleanup["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| format!("{}={}", a["action"].as_str().unwrap(), a["reclaimed_bytes"]))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    assert!(
        reclaimed > 300 << 20,
        "the prune freed only {reclaimed} bytes: {cleanup}"
    );
    assert!(
        cleanup["alert"].as_str().is_some_and(|f| !f.is_empty()),
        "{cleanup}"
    );
    let (free, _) = avail(&d.data_root);
    assert!(
        free as f64 >= 0.5 * size as f64,
        "free space {free} is below the 50% target after the prune"
    );
    tl.mark(format!(
        "free space above target: {:.1}% available",
        100.0 * free as f64 / size as f64
    ));
    wait_for(
        "the disk alert to resolve",
        Duration::from_secs(120),
        || {
            p.alert_state("BilgeDockerDataRootAlmostFull")
                .is_none()
                .then_some(())
        },
    );
    tl.mark("Prometheus: BilgeDockerDataRootAlmostFull resolved");

    let (code, err) = bilge_build(&d, &s, &token, "app", "app:latest", &app);
    assert_eq!(
        code, 0,
        "the same build should succeed after the prune: {err}"
    );
    tl.mark("app build succeeded");

    // What Prometheus recorded.
    wait_for(
        "the failed and the good build in Prometheus",
        Duration::from_secs(30),
        || {
            let failed = p.value(
                "bilge_builds_total{project=\"app\",result=\"failure\",reason=\"no_space\"}",
            );
            let good = p.value("bilge_builds_total{project=\"app\",result=\"success\"}");
            (failed == Some(1.0) && good == Some(1.0)).then_some(())
        },
    );
    let pruned = p
        .value("sum(bilge_cleanup_reclaimed_bytes_total)")
        .unwrap_or(0.0);
    assert!(
        pruned >= reclaimed as f64,
        "Prometheus saw {pruned} reclaimed bytes"
    );

    eprintln!("\ntimeline:");
    for (t, what) in &tl.events {
        eprintln!("  {t:7.1}s  {what}");
    }

    // Every dashboard query returns data in this Prometheus.
    let mut empty = Vec::new();
    let mut count = 0;
    for q in dashboard_queries() {
        count += 1;
        if p.query(&q.expr).is_empty() && !MAY_BE_EMPTY.iter().any(|(t, _)| *t == q.title) {
            empty.push(format!("panel {} {:?}: {}", q.panel, q.title, q.expr));
        }
    }
    assert!(count > 20, "only {count} dashboard queries");
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    // Every metric the dashboard and rules name exists in bilge's real output.
    let metrics = state.join("metrics.txt");
    std::fs::write(&metrics, s.metrics()).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("scripts/bundle_lint.py"))
        .arg("--metrics")
        .arg(&metrics)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "metrics named by the bundle but missing from bilge: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
