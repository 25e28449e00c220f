//! The Alertmanager webhook (`POST /api/v1/alerts`, payload version 4): what each alert of a
//! delivery does, and the thin shell that carries it out. The HTTP side (reading the body within
//! `--web.max-body`, the answer and its count in `bilge_webhook_requests_total{outcome}`) is the
//! handler in `server.rs`; this module never sees a request.
//!
//! - [`payload`]: the payload and its bounded parsing; [`identity`]: the names this host answers
//!   to; [`tokens`]: the API tokens and the credential check; [`targets`]: the fleet members a
//!   relay may go to; [`watched`]: re-reading those two files when they change; [`dedup`]: the
//!   memory of alerts acted on; [`decide`](mod@decide): the decision table, pure; [`relay`]:
//!   forwarding to other members.
//! - Only firing alerts with a `bilge_action` label (a cleanup level or preset) act. Their level
//!   is capped by the host's `max_level`.
//! - `instance` must name this host (`--webhook.instance`, by default its hostname, addresses and
//!   loopback names with the listen port). Other hosts' alerts are ignored or, with
//!   `--webhook.relay`, forwarded once to the member `--webhook.relay-targets` lists under that
//!   instance, with the credential the delivery presented and an `X-Bilge-Relayed` header; an
//!   unlisted instance is ignored, and a relayed request is never relayed again.
//! - A delivery carries at most `--webhook.max-alerts` alerts; one with more is refused whole
//!   before anything is decided.
//! - The alerts of one delivery that act start one run at the highest level they ask for. A
//!   delivery of an alert already acted on (same fingerprint and `startsAt`) within the dedup
//!   window — the cooldown, at least ten minutes — is a duplicate; while a run is in progress or
//!   the cooldown lasts, alerts are answered `cooldown` and recorded as skipped runs, and they
//!   act again on Alertmanager's next repeat.
//! - The answer is immediate: `{"alerts": [{"fingerprint", "decision", "level"?, "instance"?,
//!   "reason"?}]}`; the cleanup runs in the background. It is a 200, or a 503 with the same body
//!   when a relay failed, so that Alertmanager delivers again ([`retry_later`]). Each delivery is logged in one summary
//!   line, whatever its size.

pub mod decide;
pub mod dedup;
pub mod identity;
pub mod payload;
pub mod relay;
pub mod targets;
pub mod tokens;
pub mod watched;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cleanup::Engine;
use crate::sync::lock;

pub use decide::{
    Answer, Availability, Decision, Outcome, Repeat, Route, Rules, Run, answer, decide, forwards,
    outcome, retry_later, route, run,
};
pub use dedup::{DEDUP_CAPACITY, Dedup, MIN_DEDUP_WINDOW};
pub use identity::Identities;
pub use payload::{Alert, Delivery, ParseError, Payload, RawDelivery, clip, parse};
pub use relay::{RELAY_TIMEOUT, RELAYED_HEADER, RelaySettings};
pub use targets::{Scheme, Target, Targets, TargetsFile};
pub use tokens::{Credential, TokenSet, Tokens};

/// Alerts per delivery when `--webhook.max-alerts` is not given; the bundled Alertmanager
/// config sets the same `max_alerts` on bilge's receiver.
pub const DEFAULT_MAX_ALERTS: usize = 64;
/// Distinct reasons, and relay failures, named in a delivery's log line (the rest are counted).
const LOGGED_REASONS: usize = 4;

/// The webhook's settings, assembled from the flags by `config.rs`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The API tokens (`--webhook.token-file`), re-read when the file changes; `None`: the
    /// webhook and the build API are off.
    pub tokens: Option<Arc<Tokens>>,
    /// The `instance` values that name this host (`--webhook.instance` or the defaults).
    pub identities: Identities,
    /// `--webhook.relay` with its targets file and TLS trust; `None`: relay off.
    pub relay: Option<RelaySettings>,
    /// The policy's cooldown between automatic runs; the dedup window is at least this.
    pub cooldown: Duration,
    /// Most alerts in one delivery (`--webhook.max-alerts`).
    pub max_alerts: usize,
}

/// The webhook's settings and memory. Share it in an `Arc`.
#[derive(Debug)]
pub struct Webhook {
    /// The API tokens, or `None` when the webhook is off.
    tokens: Option<Arc<Tokens>>,
    /// The names this host answers to.
    identities: Identities,
    /// Present with `--webhook.relay`: the fleet list and the client.
    relay: Option<(Arc<TargetsFile>, relay::Relayer)>,
    /// How long an alert that acted counts as a duplicate.
    window: Duration,
    /// Most alerts in one delivery.
    max_alerts: usize,
    /// The alerts acted on; held across deciding and starting, so concurrent deliveries of one
    /// alert start one run.
    dedup: Mutex<Dedup>,
}

impl Webhook {
    /// The webhook for `settings`.
    pub fn new(settings: WebhookSettings) -> Webhook {
        let relay = settings.relay.map(|r| {
            let relayer = relay::Relayer::new(&r.tls, &settings.identities.first());
            (r.targets, relayer)
        });
        Webhook {
            tokens: settings.tokens,
            identities: settings.identities,
            relay,
            window: dedup::window(settings.cooldown),
            max_alerts: settings.max_alerts.max(1),
            dedup: Mutex::new(Dedup::default()),
        }
    }

    /// The names this host answers to.
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// The API tokens, when the webhook is on.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_deref()
    }

    /// True with `--webhook.relay`.
    pub fn relays(&self) -> bool {
        self.relay.is_some()
    }

    /// Most alerts in one delivery.
    pub fn max_alerts(&self) -> usize {
        self.max_alerts
    }

    /// Carries out one delivery: decides every alert, starts the run they ask for (or records it
    /// as skipped), performs the relays with `credential` (the one the delivery was
    /// authenticated with), logs one summary line and returns the decisions in the order of
    /// the alerts. `relayed_by` names the bilge that relayed this delivery, if one did.
    pub async fn deliver(
        &self,
        engine: &Arc<Engine>,
        delivery: &Delivery,
        credential: &Credential,
        relayed_by: Option<&str>,
    ) -> Vec<Decision> {
        let payload = &delivery.payload;
        let relayed = relayed_by.is_some();
        let targets = self.relay.as_ref().map(|(file, _)| file.current());
        let rules = Rules {
            identities: &self.identities,
            relay: targets.as_deref(),
            policy: engine.policy(),
            window: self.window,
        };
        let now = Instant::now();
        let mut skipped = None;
        let mut decisions = {
            let mut dedup = lock(&self.dedup);
            let decisions = decide(payload, relayed, &rules, &dedup, now, availability(engine));
            match run(payload, &decisions) {
                None => decisions,
                Some(Run::Skip { request, refusal }) => {
                    skipped = Some((request, refusal));
                    decisions
                }
                Some(Run::Start { request, acted }) => match engine.try_start(request.clone()) {
                    Ok(_) => {
                        for key in acted {
                            dedup.remember(key, now, self.window);
                        }
                        decisions
                    }
                    // The engine knows more than `availability` (another bilge on this host holds
                    // its lock): the same table, with its refusal.
                    Err(refusal) => {
                        skipped = Some((request, refusal));
                        decide(payload, relayed, &rules, &dedup, now, refusal.into())
                    }
                },
            }
        };
        if let Some((request, refusal)) = skipped {
            engine.record_skipped(&request, &refusal.to_string()).await;
        }
        let mut failures = Vec::new();
        if let Some((_, relayer)) = &self.relay {
            let sent = relayer
                .perform(&delivery.raw, forwards(&decisions), credential)
                .await;
            for (forward, result) in sent {
                let done = match result {
                    relay::Outcome::Delivered => Decision::Relayed,
                    relay::Outcome::Failed(why) => {
                        failures.push(format!("{}: {why}", forward.target));
                        Decision::RelayFailed
                    }
                };
                for i in forward.alerts {
                    if let Some(d) = decisions.get_mut(i) {
                        *d = done.clone();
                    }
                }
            }
        }
        log_delivery(payload, &decisions, &failures, relayed_by);
        decisions
    }
}

/// Logs one line for a delivery: how many alerts got each decision, the level run, the first
/// few fingerprints and distinct reasons, and why relays failed. Bounded whatever the delivery
/// holds: alert text is clipped and only [`LOGGED_REASONS`] of each list are named.
fn log_delivery(
    payload: &Payload,
    decisions: &[Decision],
    relay_failures: &[String],
    relayed_by: Option<&str>,
) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut reasons: Vec<String> = Vec::new();
    for d in decisions {
        *counts.entry(d.as_str()).or_default() += 1;
        if let Some(r) = d.reason()
            && !reasons.contains(&r)
        {
            reasons.push(r);
        }
    }
    let named = |items: &[String]| {
        let mut text = items
            .iter()
            .take(LOGGED_REASONS)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if items.len() > LOGGED_REASONS {
            text.push_str(&format!("; and {} more", items.len() - LOGGED_REASONS));
        }
        text
    };
    let fingerprints: Vec<String> = payload
        .alerts
        .iter()
        .map(|a| clip(&a.fingerprint()).into_owned())
        .collect();
    let decided = counts
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let level = decisions
        .iter()
        .find_map(Decision::level)
        .map(|l| l.to_string())
        .unwrap_or_default();
    let relayed_by = relayed_by.map(|r| clip(r).into_owned()).unwrap_or_default();
    if relay_failures.is_empty() {
        tracing::info!(
            alerts = decisions.len(),
            decisions = %decided,
            level = %level,
            fingerprints = %named(&fingerprints),
            reasons = %named(&reasons),
            relayed_by = %relayed_by,
            "webhook delivery"
        );
    } else {
        tracing::warn!(
            alerts = decisions.len(),
            decisions = %decided,
            level = %level,
            fingerprints = %named(&fingerprints),
            reasons = %named(&reasons),
            relayed_by = %relayed_by,
            relay_failures = %named(relay_failures),
            "webhook delivery"
        );
    }
}

/// Whether `engine` can take an automatic run now: the cooldown first, then a run in progress
/// in this process (the engine's `try_start` has the last word, host lock included).
pub fn availability(engine: &Engine) -> Availability {
    match engine.cooldown_remaining() {
        Some(left) => Availability::Cooldown(left),
        None if engine.is_running() => Availability::Running,
        None => Availability::Free,
    }
}
