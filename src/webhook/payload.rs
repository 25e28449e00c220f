//! Alertmanager's webhook payload (version 4) as bilge reads it: the alerts, their labels,
//! fingerprints and `startsAt`. Pure: no I/O.
//!
//! Parsing is bounded before anything is built: a delivery with more than `max_alerts` alerts is
//! refused at the first alert over the cap, without reading the rest ([`ParseError::TooManyAlerts`]),
//! and so is one with more than [`MAX_FIELDS`] top-level fields or an alert with more than
//! [`MAX_LABELS`] labels or annotations. Memory is then a small multiple of the body, whatever it
//! holds. The delivery's text is kept beside the typed payload ([`RawDelivery`]), so a relay
//! forwards what Alertmanager sent, unknown fields included.

use std::cell::Cell;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::dedup::Key;

/// Most top-level fields of a delivery (Alertmanager sends ten).
pub const MAX_FIELDS: usize = 64;
/// Most labels, and most annotations, of one alert.
pub const MAX_LABELS: usize = 128;
/// Longest text of an alert (instance, fingerprint, …) echoed into an answer, a reason or the log.
pub const MAX_ECHO: usize = 256;

/// One alert of a payload. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    #[serde(default)]
    pub status: String,
    /// Identifying labels.
    #[serde(default, deserialize_with = "bounded_map")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, deserialize_with = "bounded_map")]
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

/// A webhook payload (version 4): the fields bilge reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// `"4"`.
    pub version: String,
    /// The group's key.
    pub group_key: String,
    /// The receiver's name.
    pub receiver: String,
    /// `firing` or `resolved` for the group.
    pub status: String,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// A delivery as received: every top-level field and every alert as its JSON text.
#[derive(Debug, Clone, Default)]
pub struct RawDelivery {
    /// The top-level fields other than `alerts`, in the order received.
    fields: Vec<(String, Box<RawValue>)>,
    /// The alerts.
    alerts: Vec<Box<RawValue>>,
}

impl RawDelivery {
    /// The body relayed for `alerts` (indices into the delivery's alerts): the delivery as
    /// received, with only those alerts.
    pub fn body_for(&self, alerts: &[usize]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        out.push(b'{');
        for (key, value) in &self.fields {
            // A String always serializes; the fallback keeps the body valid JSON regardless.
            out.extend(
                serde_json::to_string(key)
                    .unwrap_or_else(|_| "\"\"".into())
                    .bytes(),
            );
            out.push(b':');
            out.extend(value.get().bytes());
            out.push(b',');
        }
        out.extend(b"\"alerts\":[");
        let mut first = true;
        for a in alerts.iter().filter_map(|i| self.alerts.get(*i)) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend(a.get().bytes());
        }
        out.extend(b"]}");
        out
    }
}

/// A parsed delivery: the typed payload and the text it came from.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// What bilge reads.
    pub payload: Payload,
    /// What a relay forwards.
    pub raw: RawDelivery,
}

/// Why a body is not a delivery bilge takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// More alerts than `--webhook.max-alerts`.
    TooManyAlerts {
        /// The cap.
        max: usize,
    },
    /// Not JSON, not a version 4 payload, or over one of the other bounds.
    Invalid(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::TooManyAlerts { max } => write!(
                f,
                "the delivery has more than {max} alerts (--webhook.max-alerts); set max_alerts: {max} on bilge's webhook receiver in Alertmanager's config"
            ),
            ParseError::Invalid(m) => f.write_str(m),
        }
    }
}

/// Parses a delivery of at most `max_alerts` alerts.
pub fn parse(body: &[u8], max_alerts: usize) -> Result<Delivery, ParseError> {
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = Top {
        max_alerts,
        too_many: &too_many,
    }
    .deserialize(&mut de)
    .and_then(|raw| de.end().map(|()| raw))
    .map_err(|e| {
        if too_many.get() {
            return ParseError::TooManyAlerts { max: max_alerts };
        }
        ParseError::Invalid(match e.classify() {
            serde_json::error::Category::Data => {
                format!("not an Alertmanager webhook payload: {e}")
            }
            _ => format!("the body is not JSON: {e}"),
        })
    })?;
    let text = |name: &str| -> Result<String, ParseError> {
        let Some((_, v)) = raw.fields.iter().find(|(k, _)| k == name) else {
            return Ok(String::new());
        };
        serde_json::from_str::<Option<String>>(v.get())
            .map(Option::unwrap_or_default)
            .map_err(|e| {
                ParseError::Invalid(format!("not an Alertmanager webhook payload: {name}: {e}"))
            })
    };
    let version = text("version")?;
    if !version.is_empty() && version != "4" {
        return Err(ParseError::Invalid(format!(
            "payload version {:?} is not supported (bilge reads version 4)",
            clip(&version)
        )));
    }
    let alerts = raw
        .alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::from_str::<Alert>(a.get()).map_err(|e| {
                ParseError::Invalid(format!(
                    "not an Alertmanager webhook payload: alert {}: {e}",
                    i + 1
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Delivery {
        payload: Payload {
            version,
            group_key: text("groupKey")?,
            receiver: text("receiver")?,
            status: text("status")?,
            alerts,
        },
        raw,
    })
}

/// `s`, cut to at most [`MAX_ECHO`] bytes (on a character boundary, marked with `…`): text from
/// an alert that goes into an answer or the log, so neither grows with what a sender writes.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_ECHO {
        return s.into();
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// Reads the top-level object: each field as text, `alerts` through [`Alerts`].
struct Top<'a> {
    /// The cap on alerts.
    max_alerts: usize,
    /// Set when the cap was hit, to tell that error from the others.
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = RawDelivery;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawDelivery, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = RawDelivery;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object with an `alerts` list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDelivery, A::Error> {
        let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
        let mut alerts = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "alerts" {
                if alerts.is_some() {
                    return Err(de::Error::duplicate_field("alerts"));
                }
                alerts = Some(map.next_value_seed(Alerts {
                    max: self.max_alerts,
                    too_many: self.too_many,
                })?);
                continue;
            }
            if fields.len() >= MAX_FIELDS {
                return Err(de::Error::custom(format!(
                    "more than {MAX_FIELDS} top-level fields"
                )));
            }
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!(
                    "duplicate field `{}`",
                    clip(&key)
                )));
            }
            let value = map.next_value::<Box<RawValue>>()?;
            fields.push((key, value));
        }
        let alerts = alerts.ok_or_else(|| de::Error::missing_field("alerts"))?;
        Ok(RawDelivery { fields, alerts })
    }
}

/// Reads the `alerts` list as text, refusing it at the first alert over the cap.
struct Alerts<'a> {
    /// The cap.
    max: usize,
    /// Set when the cap was hit.
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Alerts<'_> {
    type Value = Vec<Box<RawValue>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Alerts<'_> {
    type Value = Vec<Box<RawValue>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of alerts")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(alert) = seq.next_element::<Box<RawValue>>()? {
            if out.len() >= self.max {
                self.too_many.set(true);
                return Err(de::Error::custom(format!("more than {} alerts", self.max)));
            }
            out.push(alert);
        }
        Ok(out)
    }
}

/// Reads a string map of at most [`MAX_LABELS`] entries (labels, annotations).
fn bounded_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    /// The visitor of [`bounded_map`].
    struct Bounded;

    impl<'de> Visitor<'de> for Bounded {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a map of at most {MAX_LABELS} strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if out.len() >= MAX_LABELS {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_LABELS} labels or annotations"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }

    d.deserialize_map(Bounded)
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

    /// Parses with the default cap of 64 alerts.
    fn parse64(body: &[u8]) -> Result<Delivery, ParseError> {
        parse(body, 64)
    }

    #[test]
    fn an_alertmanager_payload_parses_with_unknown_fields() {
        let d = parse64(PAYLOAD.as_bytes()).unwrap();
        let p = &d.payload;
        assert_eq!((p.version.as_str(), p.receiver.as_str()), ("4", "bilge"));
        assert_eq!(p.alerts.len(), 2);
        assert_eq!(p.alerts[0].fingerprint, "abc123");
        assert_eq!(p.alerts[0].labels["bilge_action"], "standard");
        let all: serde_json::Value = serde_json::from_slice(&d.raw.body_for(&[0, 1])).unwrap();
        let sent: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
        assert_eq!(all, sent);
    }

    #[test]
    fn payloads_that_are_not_version_4_webhooks_are_refused() {
        let invalid = |body: &[u8]| match parse64(body) {
            Err(ParseError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(invalid(b"not json").starts_with("the body is not JSON"));
        assert!(invalid(b"{\"alerts\": [] trailing").starts_with("the body is not JSON"));
        let m = invalid(br#"{"version": "4"}"#);
        assert!(m.contains("missing field `alerts`"), "{m}");
        assert!(invalid(b"[]").starts_with("not an Alertmanager webhook payload"));
        assert!(invalid(br#"{"alerts": {}}"#).contains("a list of alerts"));
        assert!(invalid(br#"{"alerts": [], "alerts": []}"#).contains("duplicate field"));
        assert!(invalid(br#"{"alerts": [{"labels": {"a": 1}}]}"#).contains("alert 1"));
        let m = invalid(br#"{"version": "5", "alerts": []}"#);
        assert!(m.contains("version"), "{m}");
        assert!(parse64(br#"{"alerts": []}"#).is_ok());
        assert!(parse64(br#"{"version": null, "alerts": []}"#).is_ok());
    }

    #[test]
    fn a_delivery_over_the_alert_cap_is_refused_without_reading_the_rest() {
        let alerts = vec!["{}"; 65].join(",");
        let body = format!(r#"{{"alerts": [{alerts}]}}"#);
        assert_eq!(
            parse64(body.as_bytes()).unwrap_err(),
            ParseError::TooManyAlerts { max: 64 }
        );
        // Refused at the 65th alert: what follows it is never looked at, not even its syntax.
        let body = format!(r#"{{"alerts": [{alerts}, not json at all"#);
        assert_eq!(
            parse64(body.as_bytes()).unwrap_err(),
            ParseError::TooManyAlerts { max: 64 }
        );
        let at_cap = format!(r#"{{"alerts": [{}]}}"#, vec!["{}"; 64].join(","));
        assert_eq!(parse64(at_cap.as_bytes()).unwrap().payload.alerts.len(), 64);
        let e = ParseError::TooManyAlerts { max: 64 }.to_string();
        assert!(
            e.contains("--webhook.max-alerts") && e.contains("max_alerts: 64"),
            "{e}"
        );
    }

    #[test]
    fn too_many_fields_or_labels_are_refused() {
        let fields: Vec<String> = (0..65).map(|i| format!(r#""f{i}": 0"#)).collect();
        let body = format!(r#"{{{}, "alerts": []}}"#, fields.join(","));
        assert!(
            matches!(parse64(body.as_bytes()), Err(ParseError::Invalid(m)) if m.contains("top-level fields"))
        );
        let labels: Vec<String> = (0..129).map(|i| format!(r#""l{i}": "v""#)).collect();
        let body = format!(r#"{{"alerts": [{{"labels": {{{}}}}}]}}"#, labels.join(","));
        assert!(
            matches!(parse64(body.as_bytes()), Err(ParseError::Invalid(m)) if m.contains("more than 128"))
        );
    }

    #[test]
    fn a_relay_carries_only_the_alerts_for_its_instance_and_keeps_the_rest_of_the_delivery() {
        let d = parse64(
            br#"{"version": "4", "receiver": "bilge", "someFutureField": {"x": [1]},
                 "alerts": [{"fingerprint": "a"}, {"fingerprint": "b"}, {"fingerprint": "c"}]}"#,
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&d.raw.body_for(&[0, 2])).unwrap();
        assert_eq!(
            body["alerts"],
            serde_json::json!([{"fingerprint": "a"}, {"fingerprint": "c"}])
        );
        assert_eq!(body["someFutureField"]["x"][0], 1);
        assert_eq!(body["receiver"], "bilge");
    }

    #[test]
    fn long_text_from_an_alert_is_clipped_before_it_is_echoed() {
        assert_eq!(clip("web1:9830"), "web1:9830");
        let long = "é".repeat(300);
        let c = clip(&long);
        assert!(c.len() <= MAX_ECHO + "…".len() && c.ends_with('…'), "{c}");
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
