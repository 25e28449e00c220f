//! Alertmanager (Debian's `prometheus-alertmanager`) and the webhook payloads tests post.

use super::*;

/// A webhook payload (version 4) with one firing alert.
pub fn alert_payload(fingerprint: &str, instance: &str, action: &str, starts_at: &str) -> String {
    serde_json::json!({
        "version": "4",
        "status": "firing",
        "receiver": "bilge",
        "groupKey": "{}:{alertname=\"BilgeDockerDataRootAlmostFull\"}",
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": "BilgeDockerDataRootAlmostFull"},
        "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{
            "status": "firing",
            "labels": {
                "alertname": "BilgeDockerDataRootAlmostFull",
                "instance": instance,
                "bilge_action": action,
                "severity": "warning"
            },
            "annotations": {"summary": "almost full"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph",
            "fingerprint": fingerprint
        }]
    })
    .to_string()
}

/// POSTs a payload to a bilge server's webhook with a bearer token.
pub fn post_alerts(s: &Server, token: Option<&str>, body: &str) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    http("POST", &s.url("/api/v1/alerts"), &headers, body.as_bytes()).unwrap()
}

/// The audit rows of a server, newest first.
pub fn cleanups(s: &Server) -> Vec<serde_json::Value> {
    let r = s.get("/api/v1/cleanups?limit=1000");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["cleanups"].as_array().cloned().unwrap_or_default()
}

/// A Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port,
/// stopped on drop.
#[derive(Debug)]
pub struct Alertmanager {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its directory (config, storage, log).
    pub dir: PathBuf,
    child: Child,
}

impl Alertmanager {
    /// Starts Alertmanager with the project's `alerts/alertmanager.yml`, its `bilge` receiver
    /// pointed at `webhook_url` with the token in `token_file`, and every `group_wait` at 1s.
    pub fn start_for_bilge(webhook_url: &str, token_file: &Path) -> Alertmanager {
        Self::start_for_bilge_tls(webhook_url, token_file, None)
    }

    /// As [`Alertmanager::start_for_bilge`], trusting `ca_file` for an https webhook URL.
    pub fn start_for_bilge_tls(
        webhook_url: &str,
        token_file: &Path,
        ca_file: Option<&Path>,
    ) -> Alertmanager {
        Self::start(&bundled_for_tests(webhook_url, token_file, ca_file))
    }

    /// As [`Alertmanager::start_for_bilge`], one peer of a cluster: it gossips on
    /// `cluster_addr` and joins `peers` (`--cluster.*` on loopback); `peer_timeout`, if given, is
    /// how long each peer waits for the ones before it (Alertmanager's default is 15s).
    pub fn start_peer_for_bilge(
        webhook_url: &str,
        token_file: &Path,
        cluster_addr: &str,
        peers: &[&str],
        peer_timeout: &[&str],
    ) -> Alertmanager {
        let mut args = vec![format!("--cluster.listen-address={cluster_addr}")];
        args.extend(
            peer_timeout
                .iter()
                .map(|t| format!("--cluster.peer-timeout={t}")),
        );
        args.extend(peers.iter().map(|p| format!("--cluster.peer={p}")));
        // Loopback peers settle quickly; the defaults are meant for real networks.
        args.push("--cluster.settle-timeout=2s".into());
        args.push("--cluster.pushpull-interval=2s".into());
        args.push("--cluster.gossip-interval=200ms".into());
        Self::start_with(&bundled_for_tests(webhook_url, token_file, None), &args)
    }

    /// Starts Alertmanager with `config` (YAML), alone (no cluster).
    pub fn start(config: &str) -> Alertmanager {
        Self::start_with(config, &["--cluster.listen-address=".to_string()])
    }

    /// Starts Alertmanager with `config` (YAML) and more flags.
    pub fn start_with(config: &str, extra: &[String]) -> Alertmanager {
        require(
            "/usr/bin/prometheus-alertmanager",
            "apt-get install prometheus-alertmanager",
        );
        let dir = temp_dir("am");
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let child = Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "prometheus-alertmanager did not start; apt-get install prometheus-alertmanager",
            );
        record_pid(&dir, "alertmanager", child.id());
        let mut am = Alertmanager { addr, dir, child };
        let start = Instant::now();
        loop {
            let ready = http("GET", &am.url("/-/ready"), &[], b"")
                .map(|r| r.status == 200)
                .unwrap_or(false);
            if ready {
                break;
            }
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("Alertmanager exited ({status}): {}", am.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Alertmanager not ready after 30s: {}",
                am.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Posts alerts (a JSON array of `{labels, annotations, startsAt}`) to its v2 API.
    pub fn post(&self, alerts: &serde_json::Value) {
        let r = http(
            "POST",
            &self.url("/api/v2/alerts"),
            &[("Content-Type", "application/json")],
            alerts.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            r.status,
            200,
            "Alertmanager refused the alerts: {}",
            r.text()
        );
    }

    /// The alerts it holds (v2 API).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let r = http("GET", &self.url("/api/v2/alerts"), &[], b"").unwrap();
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// Its log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The bundled config for a test: the webhook's URL, token and CA file set, `group_wait` 1s.
fn bundled_for_tests(webhook_url: &str, token_file: &Path, ca_file: Option<&Path>) -> String {
    bundled_alertmanager_config_tls(webhook_url, token_file, ca_file)
        .lines()
        .map(|l| match l.trim_start().strip_prefix("group_wait:") {
            Some(_) => format!("{}group_wait: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The bundled Alertmanager config with only the bilge webhook's URL and token file changed,
/// for a bilge that speaks plain HTTP: the receiver's `tls_config` (its CA file) is left out.
pub fn bundled_alertmanager_config(webhook_url: &str, token_file: &Path) -> String {
    bundled_alertmanager_config_tls(webhook_url, token_file, None)
}

/// The bundled Alertmanager config with the bilge webhook's URL, token file and CA file
/// (`tls_config.ca_file`; `None` drops the `tls_config` block) changed.
pub fn bundled_alertmanager_config_tls(
    webhook_url: &str,
    token_file: &Path,
    ca_file: Option<&Path>,
) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/alertmanager.yml"),
    )
    .unwrap();
    let mut url_done = false;
    let mut cred_done = false;
    let mut ca_done = false;
    let out: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            let t = l.trim_start();
            if !url_done && t.starts_with("- url: http") && t.contains("://bilge:") {
                url_done = true;
                Some(format!("{indent}- url: {webhook_url}"))
            } else if !cred_done && t.starts_with("credentials_file:") {
                cred_done = true;
                Some(format!(
                    "{indent}credentials_file: {}",
                    token_file.display()
                ))
            } else if t == "tls_config:" {
                ca_file.map(|_| l.to_string())
            } else if !ca_done && t.starts_with("ca_file:") {
                ca_done = true;
                ca_file.map(|ca| format!("{indent}ca_file: {}", ca.display()))
            } else {
                Some(l.to_string())
            }
        })
        .collect();
    assert!(
        url_done && cred_done && ca_done,
        "alerts/alertmanager.yml changed shape: the bilge receiver's url/credentials_file/ca_file lines were not found"
    );
    out.join("\n") + "\n"
}

/// A firing `BilgeDockerDataRootAlmostFull` as the bundled rule makes it and Prometheus posts it
/// to Alertmanager's v2 API, for `instance`, its data root's `mountpoint`, asking `action`.
pub fn almost_full_alert(instance: &str, mountpoint: &str, action: &str) -> serde_json::Value {
    serde_json::json!([{
        "labels": {
            "alertname": "BilgeDockerDataRootAlmostFull",
            "instance": instance,
            "job": "bilge",
            "mountpoint": mountpoint,
            "severity": "warning",
            "bilge_action": action
        },
        "annotations": {"summary": "Docker's data root is almost full."},
        "startsAt": chrono::Utc::now().to_rfc3339()
    }])
}
