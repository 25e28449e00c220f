//! The Alertmanager webhook (`POST /api/v1/alerts`, payload version 4): what each alert of a
//! delivery does, and the thin shell that carries it out. The HTTP side (authentication, body
//! limits, the answer and its count in `bilge_webhook_requests_total{outcome}`) is the handler in
//! `server.rs`; this module never sees a request.
//!
//! - [`payload`]: the payload and its parsing; [`identity`]: the names this host answers to;
//!   [`dedup`]: the memory of alerts acted on; [`decide`](mod@decide): the decision table, pure;
//!   [`relay`]: forwarding to other bilge instances.
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
//!   "reason"?}]}`; the cleanup runs in the background.

pub mod decide;
pub mod dedup;
pub mod identity;
pub mod payload;
pub mod relay;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cleanup::Engine;
use crate::sync::lock;

pub use decide::{
    Answer, Availability, Decision, Outcome, Repeat, Route, Rules, Run, answer, decide, forwards,
    outcome, route, run,
};
pub use dedup::{DEDUP_CAPACITY, Dedup, MIN_DEDUP_WINDOW};
pub use identity::Identities;
pub use payload::{Alert, Payload, parse};
pub use relay::{RELAY_TIMEOUT, RELAYED_HEADER};

/// The webhook's settings, assembled from the flags by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The API token (`--webhook.token-file`), presented when relaying; `None`: the webhook is off.
    pub token: Option<String>,
    /// The `instance` values that name this host (`--webhook.instance` or the defaults).
    pub identities: Identities,
    /// `--webhook.relay`: forward alerts for other instances.
    pub relay: bool,
    /// The policy's cooldown between automatic runs; the dedup window is at least this.
    pub cooldown: Duration,
}

/// The webhook's settings and memory. Share it in an `Arc`.
#[derive(Debug)]
pub struct Webhook {
    /// The names this host answers to.
    identities: Identities,
    /// Present with `--webhook.relay` (and a token to relay with).
    relayer: Option<relay::Relayer>,
    /// How long an alert that acted counts as a duplicate.
    window: Duration,
    /// The alerts acted on; held across deciding and starting, so concurrent deliveries of one
    /// alert start one run.
    dedup: Mutex<Dedup>,
}

impl Webhook {
    /// The webhook for `settings`.
    pub fn new(settings: WebhookSettings) -> Webhook {
        let relayer = match (settings.relay, settings.token) {
            (true, Some(token)) => Some(relay::Relayer::new(token, settings.identities.first())),
            _ => None,
        };
        Webhook {
            identities: settings.identities,
            relayer,
            window: dedup::window(settings.cooldown),
            dedup: Mutex::new(Dedup::default()),
        }
    }

    /// The names this host answers to.
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// Carries out one delivery: decides every alert, starts the run they ask for (or records it
    /// as skipped), performs the relays, logs each decision and returns them in the order of
    /// `payload.alerts`. `raw` is the delivery as received (relays forward it); `relayed` marks
    /// a delivery another bilge forwarded.
    pub async fn deliver(
        &self,
        engine: &Arc<Engine>,
        payload: &Payload,
        raw: &serde_json::Value,
        relayed: bool,
    ) -> Vec<Decision> {
        let rules = Rules {
            identities: &self.identities,
            relay: self.relayer.is_some(),
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
        if let Some(relayer) = &self.relayer {
            for (forward, outcome) in relayer.perform(raw, forwards(&decisions)).await {
                for i in forward.alerts {
                    if let Some(d) = decisions.get_mut(i) {
                        *d = Decision::Relayed {
                            outcome: outcome.clone(),
                        };
                    }
                }
            }
        }
        for (alert, d) in payload.alerts.iter().zip(&decisions) {
            tracing::info!(
                fingerprint = %alert.fingerprint(),
                decision = d.as_str(),
                level = %d.level().map(|l| l.to_string()).unwrap_or_default(),
                instance = alert.instance().unwrap_or_default(),
                reason = d.reason().unwrap_or_default(),
                "webhook alert"
            );
        }
        decisions
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
