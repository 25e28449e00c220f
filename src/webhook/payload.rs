//! Alertmanager's webhook payload (version 4) as bilge reads it: the alerts, their labels,
//! fingerprints and `startsAt`. Parsing keeps the raw JSON beside the typed payload, so a relay
//! forwards what Alertmanager sent, unknown fields included. Pure: no I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::dedup::Key;

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

    /// True when Alertmanager says the alert is firing.
    pub fn is_firing(&self) -> bool {
        self.status == "firing"
    }

    /// The `instance` label, when the alert has one.
    pub fn instance(&self) -> Option<&str> {
        self.labels.get("instance").map(String::as_str)
    }

    /// What deduplication remembers the alert by: its fingerprint and when it started firing.
    pub fn key(&self) -> Key {
        (self.fingerprint(), self.starts_at.clone())
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

    /// An alert with `status` and `labels`, started at a fixed time.
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
    fn fingerprints_are_computed_when_missing() {
        let a = alert("firing", &[("alertname", "X")]);
        let b = alert("firing", &[("alertname", "Y")]);
        assert_eq!(a.fingerprint().len(), 16);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    #[test]
    fn an_alert_is_remembered_by_its_fingerprint_and_start() {
        let mut a = alert("firing", &[]);
        a.fingerprint = "abc".into();
        assert_eq!(a.key(), ("abc".into(), "2024-05-01T10:00:00Z".into()));
    }
}
