//! The monitoring stack for end-to-end tests: Debian's Prometheus, started on a free loopback
//! port with the bundled rules, and helpers to read its API.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// Rewrites every `for:` in a rules file to `for_` (the harness shortens waits, nothing else).
pub fn shorten_for(rules: &str, for_: &str) -> String {
    rules
        .lines()
        .map(|l| match l.find("for: ") {
            Some(i) if l[..i].trim().is_empty() => format!("{}for: {for_}", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running Prometheus, stopped on drop.
#[derive(Debug)]
pub struct Prometheus {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its directory (config, rules, TSDB, log).
    pub dir: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `bilge`) every `interval`, evaluating
    /// `rules` (file contents) and sending alerts to `alertmanager` (host:port), if any.
    pub fn start(
        targets: &[&str],
        interval: &str,
        rules: &str,
        alertmanager: Option<&str>,
    ) -> Self {
        Self::start_scraping(targets, None, interval, rules, alertmanager)
    }

    /// As [`Prometheus::start`], scraping the members of a `file_sd` targets file (the fleet's).
    pub fn start_file_sd(
        file: &Path,
        interval: &str,
        rules: &str,
        alertmanager: Option<&str>,
    ) -> Self {
        Self::start_scraping(&[], Some(file), interval, rules, alertmanager)
    }

    fn start_scraping(
        targets: &[&str],
        file_sd: Option<&Path>,
        interval: &str,
        rules: &str,
        alertmanager: Option<&str>,
    ) -> Self {
        require("/usr/bin/prometheus", "apt-get install prometheus");
        let dir = temp_dir("prom");
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let alerting = alertmanager
            .map(|am| {
                format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n")
            })
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
rule_files:\n  - {}\n{alerting}scrape_configs:\n  - job_name: bilge\n    {}\n",
            dir.join("rules.yml").display(),
            match file_sd {
                Some(f) => format!(
                    "file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s",
                    f.display()
                ),
                None => format!("static_configs:\n      - targets: [{targets}]"),
            }
        );
        std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-lifecycle")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        record_pid(&dir, "prometheus", child.id());
        let p = Prometheus { addr, dir, child };
        wait_for("prometheus to be ready", Duration::from_secs(60), || {
            http("GET", &p.url("/-/ready"), &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        p
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Evaluates an instant query; returns the result vector (panics on a query error).
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let body = format!("query={}", urlencode(expr));
        let r = http(
            "POST",
            &self.url("/api/v1/query"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .unwrap();
        let v = r.json();
        assert_eq!(v["status"], "success", "query {expr} failed: {v}");
        match &v["data"]["result"] {
            serde_json::Value::Array(a) => a.clone(),
            // Scalars and strings come back as one [time, value] pair.
            other => vec![serde_json::json!({ "value": other })],
        }
    }

    /// The first sample's value of an instant query, if any.
    pub fn value(&self, expr: &str) -> Option<f64> {
        self.query(expr)
            .first()
            .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse().ok()))
    }

    /// Alerts as Prometheus sees them (pending and firing).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let v = http("GET", &self.url("/api/v1/alerts"), &[], b"")
            .unwrap()
            .json();
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The state (`pending`, `firing`) of an alert by name, if it is active.
    pub fn alert_state(&self, name: &str) -> Option<String> {
        self.alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }

    /// Waits until every target is up.
    pub fn wait_targets_up(&self) {
        wait_for("targets up", Duration::from_secs(60), || {
            (self.value("min(up)") == Some(1.0)).then_some(())
        });
    }

    /// Its log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a form value.
pub fn urlencode(s: &str) -> String {
    let mut o = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

/// The repository's root (for bundled files).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shortening_for_touches_only_for_lines() {
    let r = "    for: 5m\n    expr: x\n  # for: not this\n";
    assert_eq!(
        shorten_for(r, "1s"),
        "    for: 1s\n    expr: x\n  # for: not this"
    );
}

#[test]
fn prometheus_scrapes_bilge_and_loads_the_bundled_rules() {
    let dir = temp_dir("promsmoke");
    let s = Server::start(&format!("unix://{}/none.sock", dir.display()), &[]);
    let rules = std::fs::read_to_string(repo().join("alerts/bilge.rules.yml")).unwrap();
    let p = Prometheus::start(&[&s.addr], "1s", &shorten_for(&rules, "1s"), None);
    p.wait_targets_up();
    wait_for("exporter series", Duration::from_secs(30), || {
        p.value("bilge_docker_up").filter(|v| *v == 0.0)
    });
    // With no daemon, the daemon-unreachable alert fires from the bundled rules.
    wait_for(
        "BilgeDockerDaemonUnreachable",
        Duration::from_secs(60),
        || {
            (p.alert_state("BilgeDockerDaemonUnreachable").as_deref() == Some("firing"))
                .then_some(())
        },
    );
}

/// One query of the bundled dashboard, its variables replaced so that Prometheus can evaluate it.
#[derive(Debug)]
pub struct DashboardQuery {
    /// The panel's id.
    pub panel: u64,
    /// The panel's title.
    pub title: String,
    /// The query.
    pub expr: String,
}

/// Every query of `dashboards/bilge.json` (`scripts/bundle_lint.py --dashboard-queries`).
pub fn dashboard_queries() -> Vec<DashboardQuery> {
    let out = Command::new("python3")
        .arg(repo().join("scripts/bundle_lint.py"))
        .arg("--dashboard-queries")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let q: serde_json::Value = serde_json::from_str(line).unwrap();
            DashboardQuery {
                panel: q["panel"].as_u64().unwrap_or_default(),
                title: q["title"].as_str().unwrap_or_default().to_string(),
                expr: q["expr"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}
