//! Forwarding alerts for other hosts to their bilge: the one HTTP client, the `X-Bilge-Relayed`
//! header and the timeout.
//!
//! [`Relayer::perform`] takes the relays [`decide`](super::decide()) chose ([`Forward`]s, one
//! per instance) and sends each to `http://<instance>/api/v1/alerts` with the API token, the
//! delivery as received but with only that instance's alerts, and an `X-Bilge-Relayed` header
//! naming this host, so the receiver never relays it again. Relays run concurrently, follow no
//! proxy and take at most [`RELAY_TIMEOUT`]. What the target answered becomes the `reason` of a
//! `relayed` decision; a failure is logged here once and answered the same way.

use std::time::Duration;

use reqwest::StatusCode;

/// The header that marks a request relayed by another bilge (its value names the relayer).
pub const RELAYED_HEADER: &str = "x-bilge-relayed";
/// Longest time a relay may take.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// One relay to make: an instance and the indices of the delivery's alerts that go there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The `host:port` the alerts name.
    pub instance: String,
    /// Indices into the delivery's `alerts`, in their order.
    pub alerts: Vec<usize>,
}

/// What came of one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The instance took the delivery and answered with these decisions.
    Answered {
        /// The instance relayed to.
        instance: String,
        /// Its decisions, in the order of the alerts sent.
        decisions: Vec<String>,
    },
    /// The instance answered with an error status.
    Refused {
        /// The instance relayed to.
        instance: String,
        /// The status it answered.
        status: StatusCode,
    },
    /// The request did not get an answer (connection, timeout).
    Failed {
        /// The instance relayed to.
        instance: String,
        /// What went wrong.
        error: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Answered {
                instance,
                decisions,
            } => write!(f, "{instance} answered: {}", decisions.join(", ")),
            Outcome::Refused { instance, status } => write!(f, "{instance} refused it: {status}"),
            Outcome::Failed { instance, error } => write!(f, "relay to {instance} failed: {error}"),
        }
    }
}

/// The webhook URL of `instance` (a `host:port` that `decide` checked).
pub fn url(instance: &str) -> String {
    format!("http://{instance}/api/v1/alerts")
}

/// The body relayed for `alerts`: the delivery as received (`raw`), with only those alerts.
pub fn body_for(raw: &serde_json::Value, alerts: &[usize]) -> serde_json::Value {
    let mut body = raw.clone();
    if let Some(all) = raw.get("alerts").and_then(|a| a.as_array()) {
        body["alerts"] =
            serde_json::Value::Array(alerts.iter().filter_map(|i| all.get(*i).cloned()).collect());
    }
    body
}

/// The decisions of a bilge webhook answer, in order (none when it is not one).
fn decisions_in(answer: &serde_json::Value) -> Vec<String> {
    answer["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["decision"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends relays: the HTTP client, the token to present and the name to put in the header.
#[derive(Debug, Clone)]
pub struct Relayer {
    /// Bounded by [`RELAY_TIMEOUT`], without proxies; or why it could not be built.
    client: Result<reqwest::Client, String>,
    /// The API token, presented as a bearer token.
    token: String,
    /// This host's name, the value of [`RELAYED_HEADER`].
    from: String,
}

impl Relayer {
    /// A relayer that presents `token` and names itself `from`.
    pub fn new(token: String, from: String) -> Relayer {
        // Relays go host to host inside the fleet, never through an HTTP proxy.
        let client = reqwest::Client::builder()
            .timeout(RELAY_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| {
                // Building fails only when the system's resolver setup cannot load; every
                // relay then fails with this error instead of bilge not starting.
                tracing::warn!(error = %e, "cannot build the HTTP client for --webhook.relay");
                format!("no HTTP client: {e}")
            });
        Relayer {
            client,
            token,
            from,
        }
    }

    /// Performs `forwards` concurrently for the delivery `raw`; each comes back with its outcome.
    pub async fn perform(
        &self,
        raw: &serde_json::Value,
        forwards: Vec<Forward>,
    ) -> Vec<(Forward, Outcome)> {
        let sends = forwards.into_iter().map(|f| async move {
            let outcome = self.send(&f.instance, &body_for(raw, &f.alerts)).await;
            (f, outcome)
        });
        futures_util::future::join_all(sends).await
    }

    /// Posts `body` to `instance`'s webhook and says what came of it.
    async fn send(&self, instance: &str, body: &serde_json::Value) -> Outcome {
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Failed {
                    instance: instance.to_string(),
                    error: e.clone(),
                };
            }
        };
        let sent = client
            .post(url(instance))
            .bearer_auth(&self.token)
            .header(RELAYED_HEADER, &self.from)
            .json(body)
            .send()
            .await;
        let instance = instance.to_string();
        match sent {
            Ok(r) if r.status().is_success() => {
                let answer: serde_json::Value = r.json().await.unwrap_or_default();
                Outcome::Answered {
                    instance,
                    decisions: decisions_in(&answer),
                }
            }
            Ok(r) => {
                tracing::warn!(instance = %instance, status = %r.status(), "relaying an alert failed");
                Outcome::Refused {
                    instance,
                    status: r.status(),
                }
            }
            Err(e) => {
                tracing::warn!(instance = %instance, error = %e, "relaying an alert failed");
                Outcome::Failed {
                    instance,
                    error: e.to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_carries_only_the_alerts_for_its_instance_and_keeps_the_rest_of_the_delivery() {
        let raw = serde_json::json!({
            "version": "4", "receiver": "bilge", "someFutureField": 1,
            "alerts": [{"fingerprint": "a"}, {"fingerprint": "b"}, {"fingerprint": "c"}]
        });
        let body = body_for(&raw, &[0, 2]);
        assert_eq!(
            body["alerts"],
            serde_json::json!([{"fingerprint": "a"}, {"fingerprint": "c"}])
        );
        assert_eq!(body["someFutureField"], 1);
        assert_eq!(body["receiver"], "bilge");
    }

    #[test]
    fn the_reason_of_a_relayed_alert_says_what_the_target_answered() {
        let answer =
            serde_json::json!({"alerts": [{"decision": "accepted"}, {"decision": "duplicate"}]});
        let o = Outcome::Answered {
            instance: "web2:9830".into(),
            decisions: decisions_in(&answer),
        };
        assert_eq!(o.to_string(), "web2:9830 answered: accepted, duplicate");
        let o = Outcome::Refused {
            instance: "web2:9830".into(),
            status: StatusCode::UNAUTHORIZED,
        };
        assert_eq!(o.to_string(), "web2:9830 refused it: 401 Unauthorized");
        assert!(decisions_in(&serde_json::json!("not an answer")).is_empty());
    }

    #[test]
    fn relays_go_to_the_instances_webhook() {
        assert_eq!(url("10.0.0.5:9830"), "http://10.0.0.5:9830/api/v1/alerts");
        assert_eq!(url("[::1]:9830"), "http://[::1]:9830/api/v1/alerts");
    }
}
