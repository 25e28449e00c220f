//! The Alertmanager webhook (`POST /api/v1/alerts`, payload version 4): authentication, routing
//! by the alert's `instance` label, deduplication, relay to other bilge instances.
//!
//! - Authentication: `Authorization: Bearer <token>`, or basic auth whose password is the token
//!   (the user name is ignored), compared in constant time with `--webhook.token-file`. Without
//!   a token file the webhook is off (404). A refused request changes nothing.
//! - Only firing alerts with a `bilge_action` label (a cleanup level or preset) act. Their level
//!   is capped by the host's `max_level`.
//! - `instance` must name this host (`--webhook.instance`, by default its hostname, addresses and
//!   loopback names with the listen port). Other hosts' alerts are ignored or, with
//!   `--webhook.relay`, forwarded once to `http://<instance>/api/v1/alerts` with the same token
//!   and an `X-Bilge-Relayed` header; a relayed request is never relayed again.
//! - The alerts of one delivery that act start one run at the highest level they ask for. A
//!   delivery of an alert already acted on (same fingerprint and `startsAt`) within the dedup
//!   window — the cooldown, at least ten minutes — is a duplicate; while a run is in progress or
//!   the cooldown lasts, alerts are answered `cooldown` and recorded as skipped runs, and they
//!   act again on Alertmanager's next repeat.
//! - The answer is immediate: `{"alerts": [{"fingerprint", "decision", "level"?, "instance"?,
//!   "reason"?}]}`; the cleanup runs in the background. `bilge_webhook_requests_total{outcome}`
//!   counts every answer, refusals included.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::cleanup::{Engine, Level, Policy, Request, Trigger};
use crate::metrics::Metrics;
use crate::server::AppError;
use crate::server::ServeConfig;

/// The header that marks a request relayed by another bilge (its value names the relayer).
pub const RELAYED_HEADER: &str = "x-bilge-relayed";
/// The shortest time a delivery of an alert already acted on counts as a duplicate.
pub const MIN_DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Most alerts remembered for deduplication.
pub const DEDUP_CAPACITY: usize = 4096;
/// Longest time a relay may take.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// One alert of a payload. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    #[serde(default)]
    pub status: String,
    /// Identifying labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing (RFC 3339, as Alertmanager wrote it).
    #[serde(default)]
    pub starts_at: String,
    /// When it ended (or the zero time).
    #[serde(default)]
    pub ends_at: String,
    /// Alertmanager's fingerprint of the label set.
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    /// The fingerprint, or one computed from the labels when the sender gave none.
    pub fn fingerprint(&self) -> String {
        if !self.fingerprint.is_empty() {
            return self.fingerprint.clone();
        }
        // FNV-1a over the sorted label pairs: stable, and only used in this process and the audit.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &self.labels {
            for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{h:016x}")
    }
}

/// A webhook payload (version 4). Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// `"4"`.
    #[serde(default)]
    pub version: String,
    /// The group's key.
    #[serde(default)]
    pub group_key: String,
    /// The receiver's name.
    #[serde(default)]
    pub receiver: String,
    /// `firing` or `resolved` for the group.
    #[serde(default)]
    pub status: String,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// Parses a payload; the raw JSON is kept for relaying it unchanged.
pub fn parse(body: &[u8]) -> Result<(Payload, serde_json::Value), String> {
    let raw: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let p: Payload = serde_json::from_value(raw.clone())
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if !p.version.is_empty() && p.version != "4" {
        return Err(format!(
            "payload version {:?} is not supported (bilge reads version 4)",
            p.version
        ));
    }
    Ok((p, raw))
}

/// True when an `Authorization` header carries `token`, as a bearer token or as the password of
/// basic auth. Constant time in the token's content.
pub fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(h) = header else { return false };
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h, ""));
    let given: Vec<u8> = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().as_bytes().to_vec()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
            return false;
        };
        match decoded.iter().position(|b| *b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    bool::from(given.as_slice().ct_eq(token.as_bytes()))
}

/// The `instance` values that name this host (lower-cased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identities(HashSet<String>);

impl Identities {
    /// `configured` when given; else hostname, interface addresses and loopback names, each
    /// with the listen port.
    pub fn new(configured: &[String], listen: SocketAddr) -> Identities {
        let names: Vec<String> = if configured.iter().any(|c| !c.trim().is_empty()) {
            configured.iter().map(|c| c.trim().to_string()).collect()
        } else {
            default_identities(listen.port())
        };
        Identities(
            names
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        )
    }

    /// Exactly these names (for tests).
    pub fn of(names: &[&str]) -> Identities {
        Identities(names.iter().map(|n| n.to_ascii_lowercase()).collect())
    }

    /// True when `instance` names this host.
    pub fn matches(&self, instance: &str) -> bool {
        self.0.contains(&instance.trim().to_ascii_lowercase())
    }

    /// One name, for the relay header and logs.
    pub fn first(&self) -> String {
        let mut v: Vec<&String> = self.0.iter().collect();
        v.sort();
        v.first().map(|s| s.to_string()).unwrap_or_default()
    }
}

/// Hostname, every interface address and the loopback names, with `port`.
fn default_identities(port: u16) -> Vec<String> {
    let mut v = vec![
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    if let Ok(h) = nix::unistd::gethostname()
        && let Some(h) = h.to_str()
    {
        v.push(format!("{h}:{port}"));
    }
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for a in addrs {
                let Some(addr) = a.address else { continue };
                if let Some(v4) = addr.as_sockaddr_in() {
                    v.push(format!("{}:{port}", v4.ip()));
                } else if let Some(v6) = addr.as_sockaddr_in6() {
                    v.push(format!("[{}]:{port}", v6.ip()));
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this host's addresses for --webhook.instance; set it explicitly")
        }
    }
    v
}

/// Where one alert goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This host cleans up to this level (before capping).
    Act(Level),
    /// Forward to this instance.
    Relay(String),
    /// Nothing to do, and why.
    Ignore(String),
}

/// Decides where one alert goes (pure). `relayed` marks a request another bilge forwarded.
pub fn route(alert: &Alert, ids: &Identities, relay: bool, relayed: bool) -> Route {
    if alert.status != "firing" {
        return Route::Ignore(format!("status {:?} is not firing", alert.status));
    }
    let Some(action) = alert.labels.get("bilge_action") else {
        return Route::Ignore("no bilge_action label".into());
    };
    let level = match Level::parse(action) {
        Ok(l) => l,
        Err(e) => return Route::Ignore(format!("bilge_action: {e}")),
    };
    let Some(instance) = alert.labels.get("instance").filter(|i| !i.is_empty()) else {
        return Route::Ignore("no instance label".into());
    };
    if ids.matches(instance) {
        return Route::Act(level);
    }
    if relayed {
        return Route::Ignore(format!(
            "instance {instance} is not this host, and relayed alerts are not relayed again"
        ));
    }
    if !relay {
        return Route::Ignore(format!(
            "instance {instance} is not this host (start bilge with --webhook.relay to forward it)"
        ));
    }
    if !is_authority(instance) {
        return Route::Ignore(format!(
            "instance {instance:?} is not host:port; cannot relay"
        ));
    }
    Route::Relay(instance.clone())
}

/// True for a plain `host:port` / `[v6]:port` with nothing that would change the relay URL.
fn is_authority(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && port.parse::<u16>().is_ok()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#' | '\\'))
}

/// Alerts acted on recently, keyed by (fingerprint, startsAt), bounded.
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashMap<(String, String), Instant>,
}

impl Dedup {
    /// True when `key` was acted on less than `window` before `now`.
    pub fn is_duplicate(&self, key: &(String, String), now: Instant, window: Duration) -> bool {
        self.seen
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < window)
    }

    /// Remembers `key` as acted on at `now`, forgetting expired keys and, when full, the oldest.
    pub fn remember(&mut self, key: (String, String), now: Instant, window: Duration) {
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        while self.seen.len() >= DEDUP_CAPACITY {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.seen.remove(&k),
                None => break,
            };
        }
        self.seen.insert(key, now);
    }

    /// Number of remembered alerts.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// What was decided for one alert, as answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// `accepted`, `relayed`, `duplicate`, `cooldown` or `ignored`.
    pub decision: &'static str,
    /// The level that runs (after capping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// The instance the alert names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The request's outcome label: the most consequential decision.
pub fn outcome(decisions: &[Decision]) -> &'static str {
    for d in ["accepted", "relayed", "cooldown", "duplicate"] {
        if decisions.iter().any(|x| x.decision == d) {
            return d;
        }
    }
    "ignored"
}

/// The webhook's settings and memory.
#[derive(Debug)]
pub struct Webhook {
    token: Option<String>,
    ids: Identities,
    relay: bool,
    window: Duration,
    dedup: Mutex<Dedup>,
    client: reqwest::Client,
}

impl Webhook {
    /// The webhook for `serve`'s settings and the host's policy.
    pub fn new(serve: &ServeConfig, policy: &Policy) -> Webhook {
        Webhook {
            token: serve.token.clone(),
            ids: Identities::new(&serve.instances, serve.listen),
            relay: serve.relay,
            window: policy.cooldown.max(MIN_DEDUP_WINDOW),
            dedup: Mutex::new(Dedup::default()),
            // Relays go host to host inside the fleet, never through an HTTP proxy.
            client: reqwest::Client::builder()
                .timeout(RELAY_TIMEOUT)
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    /// The names this host answers to.
    pub fn identities(&self) -> &Identities {
        &self.ids
    }
}

/// Handles one delivery: authenticate, parse, decide per alert, start or relay, answer. Every
/// answer is counted in `bilge_webhook_requests_total{outcome}`.
pub async fn handle(
    hook: &Webhook,
    engine: &Arc<Engine>,
    metrics: &Metrics,
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
) -> Response {
    let (outcome, resp) = match decide(hook, engine, headers, body, max_body).await {
        Ok(decisions) => (
            outcome(&decisions),
            Json(serde_json::json!({ "alerts": decisions })).into_response(),
        ),
        Err((outcome, e)) => (outcome, e.into_response()),
    };
    metrics.webhook_requests.with_label_values(&[outcome]).inc();
    resp
}

async fn decide(
    hook: &Webhook,
    engine: &Arc<Engine>,
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
) -> Result<Vec<Decision>, (&'static str, AppError)> {
    let Some(token) = hook.token.as_deref() else {
        return Err((
            "unauthorized",
            AppError::NotFound(
                "the webhook is off: start bilge serve with --webhook.token-file".into(),
            ),
        ));
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !authorized(auth, token) {
        return Err(("unauthorized", AppError::Unauthorized));
    }
    let bytes = axum::body::to_bytes(body, max_body).await.map_err(|_| {
        (
            "bad_request",
            AppError::Refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max_body} bytes (--web.max-body)"),
            ),
        )
    })?;
    let (payload, raw) = parse(&bytes).map_err(|m| ("bad_request", AppError::BadRequest(m)))?;
    let relayed = headers.contains_key(RELAYED_HEADER);
    if let Some(from) = headers.get(RELAYED_HEADER).and_then(|v| v.to_str().ok()) {
        tracing::info!(
            from,
            alerts = payload.alerts.len(),
            "webhook delivery relayed by another bilge"
        );
    }

    let routes: Vec<Route> = payload
        .alerts
        .iter()
        .map(|a| route(a, &hook.ids, hook.relay, relayed))
        .collect();
    let mut decisions: Vec<Decision> = payload
        .alerts
        .iter()
        .zip(&routes)
        .map(|(a, r)| Decision {
            fingerprint: a.fingerprint(),
            decision: "ignored",
            level: None,
            instance: a.labels.get("instance").cloned(),
            reason: match r {
                Route::Ignore(why) => Some(why.clone()),
                _ => None,
            },
        })
        .collect();

    // Act: one run for every acting alert of this delivery, at the highest level asked for.
    let mut skipped: Option<(Request, String)> = None;
    {
        let mut dedup = match hook.dedup.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        let mut acting: Vec<(usize, (String, String), Level)> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let Route::Act(level) = r else { continue };
            let key = (
                decisions[i].fingerprint.clone(),
                payload.alerts[i].starts_at.clone(),
            );
            if dedup.is_duplicate(&key, now, hook.window) {
                decisions[i].decision = "duplicate";
                decisions[i].reason = Some("this alert already started a cleanup".into());
            } else if acting.iter().any(|(_, k, _)| *k == key) {
                decisions[i].decision = "duplicate";
                decisions[i].reason = Some("the same alert appears twice in this delivery".into());
            } else {
                acting.push((i, key, *level));
            }
        }
        if let Some(wanted) = acting.iter().map(|(_, _, l)| *l).max() {
            let fingerprints: Vec<&str> = acting
                .iter()
                .map(|(i, _, _)| decisions[*i].fingerprint.as_str())
                .collect();
            let req = Request {
                alert: Some(fingerprints.join(",")),
                ..Request::new(Trigger::Webhook, wanted)
            };
            let level = engine.policy().cap(wanted);
            match engine.try_start(req.clone()) {
                Ok(_) => {
                    for (i, key, asked) in acting {
                        dedup.remember(key, now, hook.window);
                        decisions[i].decision = "accepted";
                        decisions[i].level = Some(level);
                        if engine.policy().cap(asked) < asked {
                            decisions[i].reason = Some(format!(
                                "{asked} capped to {} by this host's policy",
                                engine.policy().cap(asked)
                            ));
                        }
                    }
                }
                Err(why) => {
                    for (i, _, _) in &acting {
                        decisions[*i].decision = "cooldown";
                        decisions[*i].level = Some(level);
                        decisions[*i].reason = Some(why.to_string());
                    }
                    skipped = Some((req, why.to_string()));
                }
            }
        }
    }
    if let Some((req, why)) = skipped {
        engine.record_skipped(&req, &why).await;
    }

    // Relay: one request per other instance, with only its alerts, concurrently.
    let mut targets: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in routes.iter().enumerate() {
        if let Route::Relay(instance) = r {
            targets.entry(instance.clone()).or_default().push(i);
        }
    }
    let relays = targets.into_iter().map(|(instance, idx)| {
        let mut body = raw.clone();
        if let Some(all) = raw.get("alerts").and_then(|a| a.as_array()) {
            body["alerts"] = serde_json::Value::Array(
                idx.iter().filter_map(|i| all.get(*i).cloned()).collect(),
            );
        }
        let req = hook
            .client
            .post(format!("http://{instance}/api/v1/alerts"))
            .bearer_auth(token)
            .header(RELAYED_HEADER, hook.ids.first())
            .json(&body);
        async move {
            let answer = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    let said: Vec<String> = v["alerts"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|d| d["decision"].as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    format!("{instance} answered: {}", said.join(", "))
                }
                Ok(r) => {
                    tracing::warn!(instance = %instance, status = %r.status(), "relaying an alert failed");
                    format!("{instance} refused it: {}", r.status())
                }
                Err(e) => {
                    tracing::warn!(instance = %instance, error = %e, "relaying an alert failed");
                    format!("relay to {instance} failed: {e}")
                }
            };
            (idx, answer)
        }
    });
    for (idx, answer) in futures_util::future::join_all(relays).await {
        for i in idx {
            decisions[i].decision = "relayed";
            decisions[i].reason = Some(answer.clone());
        }
    }
    for d in &decisions {
        tracing::info!(
            fingerprint = %d.fingerprint,
            decision = d.decision,
            level = %d.level.map(|l| l.to_string()).unwrap_or_default(),
            instance = d.instance.as_deref().unwrap_or_default(),
            reason = d.reason.as_deref().unwrap_or_default(),
            "webhook alert"
        );
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload as Alertmanager 0.25 sends it, with a field bilge does not know.
    const PAYLOAD: &str = r#"{
      "receiver": "bilge", "status": "firing", "version": "4",
      "groupKey": "{}/{bilge_action=~\".+\"}:{alertname=\"X\"}", "truncatedAlerts": 0,
      "groupLabels": {"alertname": "X"}, "commonLabels": {}, "commonAnnotations": {},
      "externalURL": "http://am:9093", "someFutureField": [1, 2],
      "alerts": [
        {"status": "firing", "labels": {"alertname": "X", "instance": "web1:9830", "bilge_action": "standard"},
         "annotations": {"summary": "full"}, "startsAt": "2024-05-01T10:00:00Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": "abc123"},
        {"status": "resolved", "labels": {"instance": "web1:9830", "bilge_action": "standard"},
         "startsAt": "2024-05-01T09:00:00Z", "fingerprint": "def456"}
      ]
    }"#;

    fn alert(status: &str, labels: &[(&str, &str)]) -> Alert {
        Alert {
            status: status.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts_at: "2024-05-01T10:00:00Z".into(),
            ..Alert::default()
        }
    }

    #[test]
    fn an_alertmanager_payload_parses_with_unknown_fields() {
        let (p, raw) = parse(PAYLOAD.as_bytes()).unwrap_or_default();
        assert_eq!(p.alerts.len(), 2);
        assert_eq!(p.alerts[0].fingerprint, "abc123");
        assert_eq!(p.alerts[0].labels["bilge_action"], "standard");
        assert_eq!(raw["someFutureField"][1], 2);
    }

    #[test]
    fn payloads_that_are_not_version_4_webhooks_are_refused() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"version": "4"}"#).is_err());
        let e = parse(br#"{"version": "5", "alerts": []}"#).unwrap_err();
        assert!(e.contains("version"), "{e}");
        assert!(parse(br#"{"alerts": []}"#).is_ok());
    }

    #[test]
    fn bearer_and_basic_auth_carry_the_token() {
        assert!(authorized(Some("Bearer s3cret"), "s3cret"));
        assert!(authorized(Some("bearer s3cret"), "s3cret"));
        assert!(!authorized(Some("Bearer s3cre"), "s3cret"));
        assert!(!authorized(Some("Bearer s3crett"), "s3cret"));
        assert!(!authorized(Some("Bearer "), "s3cret"));
        assert!(!authorized(None, "s3cret"));
        let basic = base64::engine::general_purpose::STANDARD.encode("alertmanager:s3cret");
        assert!(authorized(Some(&format!("Basic {basic}")), "s3cret"));
        let wrong = base64::engine::general_purpose::STANDARD.encode("s3cret:nope");
        assert!(!authorized(Some(&format!("Basic {wrong}")), "s3cret"));
        assert!(!authorized(Some("Basic !!!"), "s3cret"));
        assert!(!authorized(Some("Token s3cret"), "s3cret"));
    }

    #[test]
    fn only_firing_alerts_with_an_action_for_this_host_act() {
        let ids = Identities::of(&["web1:9830"]);
        let a = alert(
            "firing",
            &[("instance", "WEB1:9830"), ("bilge_action", "aggressive")],
        );
        assert_eq!(route(&a, &ids, false, false), Route::Act(Level::AGGRESSIVE));
        let resolved = alert(
            "resolved",
            &[("instance", "web1:9830"), ("bilge_action", "standard")],
        );
        assert!(matches!(
            route(&resolved, &ids, false, false),
            Route::Ignore(_)
        ));
        let no_action = alert("firing", &[("instance", "web1:9830")]);
        assert_eq!(
            route(&no_action, &ids, false, false),
            Route::Ignore("no bilge_action label".into())
        );
        let bad = alert(
            "firing",
            &[("instance", "web1:9830"), ("bilge_action", "nuke")],
        );
        assert!(matches!(route(&bad, &ids, false, false), Route::Ignore(m) if m.contains("nuke")));
        let no_instance = alert("firing", &[("bilge_action", "standard")]);
        assert!(matches!(
            route(&no_instance, &ids, true, false),
            Route::Ignore(_)
        ));
    }

    #[test]
    fn other_hosts_alerts_are_relayed_once_and_only_with_relay_on() {
        let ids = Identities::of(&["web1:9830"]);
        let a = alert(
            "firing",
            &[("instance", "web2:9830"), ("bilge_action", "standard")],
        );
        assert!(
            matches!(route(&a, &ids, false, false), Route::Ignore(m) if m.contains("--webhook.relay"))
        );
        assert_eq!(
            route(&a, &ids, true, false),
            Route::Relay("web2:9830".into())
        );
        assert!(
            matches!(route(&a, &ids, true, true), Route::Ignore(m) if m.contains("not relayed again"))
        );
        let evil = alert(
            "firing",
            &[
                ("instance", "evil.example/x?:80"),
                ("bilge_action", "standard"),
            ],
        );
        assert!(matches!(route(&evil, &ids, true, false), Route::Ignore(_)));
        assert!(is_authority("[::1]:9830") && is_authority("10.0.0.5:9830"));
        assert!(!is_authority("web2") && !is_authority("user@web2:80"));
    }

    #[test]
    fn default_identities_include_loopback_with_the_listen_port() {
        let ids = Identities::new(
            &[],
            "0.0.0.0:9830".parse().unwrap_or_else(|_| unreachable!()),
        );
        for n in ["localhost:9830", "127.0.0.1:9830", "[::1]:9830"] {
            assert!(ids.matches(n), "{n}");
        }
        assert!(!ids.matches("127.0.0.1:9831"));
        let only = Identities::new(
            &["ci-7:9830".into()],
            "0.0.0.0:9830".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(only.matches("ci-7:9830") && !only.matches("localhost:9830"));
    }

    #[test]
    fn a_repeat_within_the_window_is_a_duplicate_and_after_it_acts_again() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(600);
        let key = ("abc".to_string(), "2024-05-01T10:00:00Z".to_string());
        assert!(!d.is_duplicate(&key, t0, w));
        d.remember(key.clone(), t0, w);
        assert!(d.is_duplicate(&key, t0 + Duration::from_secs(599), w));
        assert!(!d.is_duplicate(&key, t0 + Duration::from_secs(600), w));
        // A new firing of the same alert (new startsAt) is not a duplicate.
        let again = ("abc".to_string(), "2024-05-01T11:00:00Z".to_string());
        assert!(!d.is_duplicate(&again, t0, w));
    }

    #[test]
    fn the_dedup_memory_is_bounded() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(3600);
        for i in 0..(DEDUP_CAPACITY + 10) {
            d.remember(
                (format!("fp{i}"), String::new()),
                t0 + Duration::from_millis(i as u64),
                w,
            );
        }
        assert_eq!(d.len(), DEDUP_CAPACITY);
        // The oldest went first.
        assert!(!d.is_duplicate(&("fp0".into(), String::new()), t0, w));
    }

    #[test]
    fn fingerprints_are_computed_when_missing() {
        let a = alert("firing", &[("alertname", "X")]);
        let b = alert("firing", &[("alertname", "Y")]);
        assert_eq!(a.fingerprint().len(), 16);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    #[test]
    fn the_answer_is_counted_by_its_most_consequential_decision() {
        let d = |decision| Decision {
            fingerprint: "f".into(),
            decision,
            level: None,
            instance: None,
            reason: None,
        };
        assert_eq!(outcome(&[d("ignored"), d("accepted")]), "accepted");
        assert_eq!(outcome(&[d("duplicate"), d("relayed")]), "relayed");
        assert_eq!(outcome(&[d("duplicate"), d("cooldown")]), "cooldown");
        assert_eq!(outcome(&[]), "ignored");
    }
}
