//! The webhook's decision table, as pure functions: what each alert of a delivery does, given
//! the names of this host, the relay switch, the host's policy, the deduplication memory, the
//! time and whether the engine can take a run now. No I/O, no HTTP, no Docker: the async shell in
//! [`super`] reads the engine's state into an [`Availability`], calls [`decide`], and carries out
//! what [`run`] and [`forwards`] say.
//!
//! Per alert, in this order:
//!
//! 1. not firing, no `bilge_action`, an unknown level, or no `instance`: `ignored`;
//! 2. another host's `instance`: `ignored` when the delivery was itself relayed, when
//!    `--webhook.relay` is off, or when the instance is not listed in `--webhook.relay-targets`
//!    (the reason says which); else `relay` to the listed member, whose address and scheme come
//!    from the targets file, never from the alert;
//! 3. this host: `duplicate` when the same fingerprint and `startsAt` acted within the window or
//!    appear earlier in the same delivery;
//! 4. the rest act together: one run at the highest level they ask for, capped by the policy:
//!    `accepted` when the engine is free, else `cooldown` (and a skipped run is recorded).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::dedup::{Dedup, Key};
use super::identity::Identities;
use super::payload::{Alert, Payload, clip};
use super::relay::Forward;
use super::targets::{Target, Targets};
use crate::cleanup::{Policy, Refusal, Request};
use crate::model::{Level, Trigger};

/// Where one alert goes, before deduplication and the engine's availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This host cleans up to this level (before capping).
    Act(Level),
    /// Forward to this listed fleet member.
    Relay(Target),
    /// Nothing to do, and why.
    Ignore(String),
}

/// Decides where one alert goes (pure). `relay` is the fleet list with `--webhook.relay`
/// (`None` without it); `relayed` marks a request another bilge forwarded.
pub fn route(alert: &Alert, ids: &Identities, relay: Option<&Targets>, relayed: bool) -> Route {
    if !alert.is_firing() {
        return Route::Ignore(format!("status {:?} is not firing", clip(&alert.status)));
    }
    let Some(action) = alert.labels.get("bilge_action") else {
        return Route::Ignore("no bilge_action label".into());
    };
    let level = match Level::parse(action) {
        Ok(l) => l,
        // The error quotes the value: quote it clipped, as all alert text (a clipped value is
        // never a level, so this is the same error, bounded).
        Err(e) => {
            let e = Level::parse(&clip(action)).err().unwrap_or(e);
            return Route::Ignore(format!("bilge_action: {e}"));
        }
    };
    let Some(instance) = alert.instance().filter(|i| !i.is_empty()) else {
        return Route::Ignore("no instance label".into());
    };
    if ids.matches(instance) {
        return Route::Act(level);
    }
    let instance = clip(instance);
    if relayed {
        return Route::Ignore(format!(
            "instance {instance} is not this host, and relayed alerts are not relayed again"
        ));
    }
    let Some(targets) = relay else {
        return Route::Ignore(format!(
            "instance {instance} is not this host (start bilge with --webhook.relay to forward it)"
        ));
    };
    match targets.get(&instance) {
        Some(target) => Route::Relay(target.clone()),
        None => Route::Ignore(format!(
            "instance {instance} is not this host and not listed in --webhook.relay-targets; not relayed"
        )),
    }
}

/// Whether the engine can take a run now, as read just before deciding: the "admission" input
/// of [`decide`], a plain value (the gate itself is `cleanup::admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// No run in progress and no cooldown: a run may start.
    Free,
    /// A run is in progress on this host.
    Running,
    /// The cooldown since the last automatic run has this much left.
    Cooldown(Duration),
}

impl Availability {
    /// Why a run cannot start now, if it cannot.
    pub fn refusal(self) -> Option<Refusal> {
        match self {
            Availability::Free => None,
            Availability::Running => Some(Refusal::Busy),
            Availability::Cooldown(left) => Some(Refusal::Cooldown(left)),
        }
    }
}

impl From<Refusal> for Availability {
    fn from(r: Refusal) -> Availability {
        match r {
            // Whatever keeps the engine from running now, the alert acts on a later repeat.
            Refusal::Busy | Refusal::NoLock | Refusal::Closed => Availability::Running,
            Refusal::Cooldown(left) => Availability::Cooldown(left),
        }
    }
}

/// Why an alert of this host is a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The same fingerprint and `startsAt` acted within the deduplication window.
    AlreadyActed,
    /// The same fingerprint and `startsAt` came earlier in this delivery.
    InThisDelivery,
}

impl std::fmt::Display for Repeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Repeat::AlreadyActed => "this alert already started a cleanup",
            Repeat::InThisDelivery => "the same alert appears twice in this delivery",
        })
    }
}

/// What was decided for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The alert starts this delivery's run.
    Accepted {
        /// The level the run goes to: the highest any alert of the delivery asked for, capped.
        level: Level,
        /// The level this alert asked for.
        asked: Level,
        /// What the host's policy capped this alert's level to, when it did.
        capped_to: Option<Level>,
    },
    /// The alert is to be forwarded to this listed member (the shell makes it
    /// [`Decision::Relayed`] or [`Decision::RelayFailed`]).
    Relay {
        /// The member, from the targets file.
        target: Target,
    },
    /// The member took the alert.
    Relayed,
    /// The relay failed; why is in this host's log only, never in the answer.
    RelayFailed,
    /// The alert already acted.
    Duplicate(Repeat),
    /// The alert would act, but the engine cannot take a run now.
    Cooldown {
        /// The level the run would have gone to.
        level: Level,
        /// The level this alert asked for.
        asked: Level,
        /// Why the run cannot start.
        refusal: Refusal,
    },
    /// Nothing to do, and why.
    Ignored(String),
}

impl Decision {
    /// The decision's name in the answer, snake_case.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Accepted { .. } => "accepted",
            Decision::Relay { .. } => "relay",
            Decision::Relayed => "relayed",
            Decision::RelayFailed => "relay_failed",
            Decision::Duplicate(_) => "duplicate",
            Decision::Cooldown { .. } => "cooldown",
            Decision::Ignored(_) => "ignored",
        }
    }

    /// The level that runs (accepted) or would have run (cooldown).
    pub fn level(&self) -> Option<Level> {
        match self {
            Decision::Accepted { level, .. } | Decision::Cooldown { level, .. } => Some(*level),
            _ => None,
        }
    }

    /// The reason given in the answer, if any.
    pub fn reason(&self) -> Option<String> {
        match self {
            Decision::Accepted {
                asked,
                capped_to: Some(to),
                ..
            } => Some(format!("{asked} capped to {to} by this host's policy")),
            Decision::Accepted { .. } | Decision::Relay { .. } | Decision::Relayed => None,
            Decision::RelayFailed => Some("relay failed (this bilge's log says why)".into()),
            Decision::Duplicate(repeat) => Some(repeat.to_string()),
            Decision::Cooldown { refusal, .. } => Some(refusal.to_string()),
            Decision::Ignored(why) => Some(why.clone()),
        }
    }

    /// The level this alert asked this host for, when it acts (accepted or cooldown).
    fn acting(&self) -> Option<Level> {
        match self {
            Decision::Accepted { asked, .. } | Decision::Cooldown { asked, .. } => Some(*asked),
            _ => None,
        }
    }
}

/// One alert's entry in the webhook's answer, in the shape the README documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// [`Decision::as_str`].
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

impl Answer {
    /// The answer for `alert` decided `decision`.
    pub fn new(alert: &Alert, decision: &Decision) -> Answer {
        Answer {
            fingerprint: clip(&alert.fingerprint()).into_owned(),
            decision: decision.as_str(),
            level: decision.level(),
            instance: alert.instance().map(|i| clip(i).into_owned()),
            reason: decision.reason(),
        }
    }
}

/// The webhook's answer to a delivery: `{"alerts": [...]}`, one entry per alert, in order.
pub fn answer(payload: &Payload, decisions: &[Decision]) -> serde_json::Value {
    let alerts: Vec<Answer> = payload
        .alerts
        .iter()
        .zip(decisions)
        .map(|(a, d)| Answer::new(a, d))
        .collect();
    serde_json::json!({ "alerts": alerts })
}

/// What [`decide`] knows about this host.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The `instance` values that name this host.
    pub identities: &'a Identities,
    /// With `--webhook.relay`: the fleet members other hosts' alerts may be forwarded to.
    pub relay: Option<&'a Targets>,
    /// The host's policy, for the `max_level` (and `allow_volumes`) cap.
    pub policy: &'a Policy,
    /// How long an alert that acted counts as a duplicate.
    pub window: Duration,
}

/// Decides every alert of one delivery (pure). `relayed` marks a delivery another bilge
/// forwarded; `dedup` is read, never changed: the shell remembers the alerts of a run that
/// started ([`run`]). The decisions come in the order of `payload.alerts`.
pub fn decide(
    payload: &Payload,
    relayed: bool,
    rules: &Rules<'_>,
    dedup: &Dedup,
    now: Instant,
    availability: Availability,
) -> Vec<Decision> {
    let mut acting: Vec<Key> = Vec::new();
    let mut decisions: Vec<Decision> = payload
        .alerts
        .iter()
        .map(|alert| {
            match route(alert, rules.identities, rules.relay, relayed) {
                Route::Ignore(why) => Decision::Ignored(why),
                Route::Relay(target) => Decision::Relay { target },
                Route::Act(asked) => {
                    let key = alert.key();
                    if dedup.is_duplicate(&key, now, rules.window) {
                        Decision::Duplicate(Repeat::AlreadyActed)
                    } else if acting.contains(&key) {
                        Decision::Duplicate(Repeat::InThisDelivery)
                    } else {
                        acting.push(key);
                        // The run's level is known once every alert is routed; set below.
                        Decision::Accepted {
                            level: asked,
                            asked,
                            capped_to: None,
                        }
                    }
                }
            }
        })
        .collect();
    let Some(wanted) = decisions.iter().filter_map(Decision::acting).max() else {
        return decisions;
    };
    let level = rules.policy.cap(wanted);
    for d in &mut decisions {
        let Some(asked) = d.acting() else { continue };
        *d = match availability.refusal() {
            None => Decision::Accepted {
                level,
                asked,
                capped_to: Some(rules.policy.cap(asked)).filter(|to| *to < asked),
            },
            Some(refusal) => Decision::Cooldown {
                level,
                asked,
                refusal,
            },
        };
    }
    decisions
}

/// What a delivery's decisions ask of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    /// Start `request`; once it started, remember `acted` as acted on.
    Start {
        /// The run: trigger `webhook`, the highest level asked for, the fingerprints.
        request: Request,
        /// The accepted alerts, for deduplication.
        acted: Vec<Key>,
    },
    /// Record `request` as a skipped run, with why.
    Skip {
        /// The run that was not started.
        request: Request,
        /// Why not.
        refusal: Refusal,
    },
}

/// The run that `decisions` (for `payload`) ask for, if any (pure).
pub fn run(payload: &Payload, decisions: &[Decision]) -> Option<Run> {
    let acting: Vec<(&Alert, Level)> = payload
        .alerts
        .iter()
        .zip(decisions)
        .filter_map(|(a, d)| d.acting().map(|asked| (a, asked)))
        .collect();
    let wanted = acting.iter().map(|(_, l)| *l).max()?;
    let fingerprints: Vec<String> = acting.iter().map(|(a, _)| a.fingerprint()).collect();
    let request = Request {
        alert: Some(fingerprints.join(",")),
        ..Request::new(Trigger::Webhook, wanted)
    };
    let refusal = decisions.iter().find_map(|d| match d {
        Decision::Cooldown { refusal, .. } => Some(*refusal),
        _ => None,
    });
    Some(match refusal {
        Some(refusal) => Run::Skip { request, refusal },
        None => Run::Start {
            request,
            acted: acting.iter().map(|(a, _)| a.key()).collect(),
        },
    })
}

/// The relays `decisions` ask for: one per member (in address order), with its alerts.
pub fn forwards(decisions: &[Decision]) -> Vec<Forward> {
    let mut by_target: BTreeMap<&Target, Vec<usize>> = BTreeMap::new();
    for (i, d) in decisions.iter().enumerate() {
        if let Decision::Relay { target } = d {
            by_target.entry(target).or_default().push(i);
        }
    }
    by_target
        .into_iter()
        .map(|(target, alerts)| Forward {
            target: target.clone(),
            alerts,
        })
        .collect()
}

/// The `outcome` label of `bilge_webhook_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// An alert started a run.
    Accepted,
    /// An alert was forwarded to another fleet member.
    Relayed,
    /// A relay to another fleet member failed.
    RelayFailed,
    /// An alert had already acted.
    Duplicate,
    /// An alert would have acted, but a run was in progress or the cooldown lasted.
    Cooldown,
    /// Nothing acted.
    Ignored,
    /// Missing or wrong credentials, or the webhook is off.
    Unauthorized,
    /// The body was too large or not a version 4 payload.
    BadRequest,
}

impl Outcome {
    /// Every outcome, for families that exist before their first event.
    pub const ALL: [Outcome; 8] = [
        Outcome::Accepted,
        Outcome::Relayed,
        Outcome::RelayFailed,
        Outcome::Duplicate,
        Outcome::Cooldown,
        Outcome::Ignored,
        Outcome::Unauthorized,
        Outcome::BadRequest,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Relayed => "relayed",
            Outcome::RelayFailed => "relay_failed",
            Outcome::Duplicate => "duplicate",
            Outcome::Cooldown => "cooldown",
            Outcome::Ignored => "ignored",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BadRequest => "bad_request",
        }
    }
}

/// The request's outcome: its most consequential decision (accepted, then relayed, relay
/// failed, cooldown, duplicate; else ignored).
pub fn outcome(decisions: &[Decision]) -> Outcome {
    let of = |d: &Decision| match d {
        Decision::Accepted { .. } => Outcome::Accepted,
        Decision::Relay { .. } | Decision::Relayed => Outcome::Relayed,
        Decision::RelayFailed => Outcome::RelayFailed,
        Decision::Cooldown { .. } => Outcome::Cooldown,
        Decision::Duplicate(_) => Outcome::Duplicate,
        Decision::Ignored(_) => Outcome::Ignored,
    };
    [
        Outcome::Accepted,
        Outcome::Relayed,
        Outcome::RelayFailed,
        Outcome::Cooldown,
        Outcome::Duplicate,
    ]
    .into_iter()
    .find(|o| decisions.iter().any(|d| of(d) == *o))
    .unwrap_or(Outcome::Ignored)
}

/// Whether the sender should deliver again: a relay failed (the member was down, slow, or
/// answered anything but 2xx). The answer is then a 503, which Alertmanager retries with backoff
/// and again at each `group_interval` until it succeeds; the alerts this host acted on come back
/// as duplicates, and a member that already took its relay answers `duplicate` too, so a retry
/// never starts a second run anywhere. One rule for every failure, so the status tells the
/// sender no more than the body does.
pub fn retry_later(decisions: &[Decision]) -> bool {
    decisions.iter().any(|d| matches!(d, Decision::RelayFailed))
}

#[cfg(test)]
mod tests {
    use super::super::targets::Scheme;
    use super::*;

    #[test]
    fn only_a_failed_relay_asks_the_sender_to_deliver_again() {
        assert!(!retry_later(&[]));
        assert!(!retry_later(&[
            Decision::Relayed,
            Decision::Duplicate(Repeat::AlreadyActed),
            Decision::Ignored("resolved".into()),
        ]));
        assert!(retry_later(&[Decision::Relayed, Decision::RelayFailed]));
    }

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

    /// A firing alert with fingerprint `fp` for `instance`, asking for `action`.
    fn firing(fp: &str, instance: &str, action: &str) -> Alert {
        Alert {
            fingerprint: fp.into(),
            ..alert(
                "firing",
                &[
                    ("alertname", "BilgeDockerDataRootAlmostFull"),
                    ("instance", instance),
                    ("bilge_action", action),
                ],
            )
        }
    }

    /// One delivery of `alerts`.
    fn payload(alerts: Vec<Alert>) -> Payload {
        Payload {
            version: "4".into(),
            alerts,
            ..Payload::default()
        }
    }

    /// A host named `web1:9830` with the default policy (max `standard`) and relay off, whose
    /// engine is free and whose dedup memory is empty; builder methods change one thing.
    struct Host {
        ids: Identities,
        relay: Option<Targets>,
        relayed: bool,
        policy: Policy,
        dedup: Dedup,
        now: Instant,
        availability: Availability,
    }

    impl Host {
        fn new() -> Host {
            Host {
                ids: Identities::of(&["web1:9830"]),
                relay: None,
                relayed: false,
                policy: Policy::default(),
                dedup: Dedup::default(),
                // An hour ahead, so that "acted on ten minutes ago" is always a valid instant.
                now: Instant::now() + Duration::from_secs(3600),
                availability: Availability::Free,
            }
        }

        /// Relay on, to the fleet members `web2:9830` and `web3:9830` (plain http).
        fn with_relay(self) -> Host {
            self.with_relay_to(Targets::of(&[
                ("web2:9830", Scheme::Http),
                ("web3:9830", Scheme::Http),
            ]))
        }

        /// Relay on, to exactly `targets`.
        fn with_relay_to(mut self, targets: Targets) -> Host {
            self.relay = Some(targets);
            self
        }

        fn delivery_relayed_by_another_bilge(mut self) -> Host {
            self.relayed = true;
            self
        }

        fn max_level(mut self, level: Level, allow_volumes: bool) -> Host {
            self.policy.max_level = level;
            self.policy.allow_volumes = allow_volumes;
            self
        }

        fn availability(mut self, a: Availability) -> Host {
            self.availability = a;
            self
        }

        /// Remembers `alert` as acted on `ago` before now.
        fn acted_on(mut self, alert: &Alert, ago: Duration) -> Host {
            let w = self.window();
            self.dedup.remember(alert.key(), self.now - ago, w);
            self
        }

        fn window(&self) -> Duration {
            super::super::dedup::window(self.policy.cooldown)
        }

        fn decide(&self, alerts: &[Alert]) -> Vec<Decision> {
            let rules = Rules {
                identities: &self.ids,
                relay: self.relay.as_ref(),
                policy: &self.policy,
                window: self.window(),
            };
            decide(
                &payload(alerts.to_vec()),
                self.relayed,
                &rules,
                &self.dedup,
                self.now,
                self.availability,
            )
        }
    }

    /// Accepted at `level`, as asked, not capped.
    fn accepted(level: Level) -> Decision {
        Decision::Accepted {
            level,
            asked: level,
            capped_to: None,
        }
    }

    /// True when `d` is ignored with a reason containing `words`.
    fn ignored_because(d: &Decision, words: &str) -> bool {
        matches!(d, Decision::Ignored(why) if why.contains(words))
    }

    // The decision table, case by case.

    #[test]
    fn a_firing_alert_for_this_host_is_accepted_at_the_level_it_asks() {
        let d = Host::new().decide(&[firing("a1", "web1:9830", "standard")]);
        assert_eq!(d, [accepted(Level::DanglingImages)]);
    }

    #[test]
    fn the_instance_is_matched_without_regard_to_case() {
        let d = Host::new().decide(&[firing("a1", "WEB1:9830", "build_cache")]);
        assert_eq!(d, [accepted(Level::BuildCache)]);
    }

    #[test]
    fn a_resolved_alert_is_ignored_and_starts_nothing() {
        let mut a = firing("a1", "web1:9830", "standard");
        a.status = "resolved".into();
        let p = payload(vec![a.clone()]);
        let d = Host::new().decide(&[a]);
        assert!(
            ignored_because(&d[0], "\"resolved\" is not firing"),
            "{d:?}"
        );
        assert_eq!(run(&p, &d), None);
    }

    #[test]
    fn an_alert_without_bilge_action_is_ignored() {
        let a = alert("firing", &[("instance", "web1:9830")]);
        let d = Host::new().decide(&[a]);
        assert_eq!(d, [Decision::Ignored("no bilge_action label".into())]);
    }

    #[test]
    fn an_unknown_level_is_ignored_and_named_in_the_reason() {
        let d = Host::new().decide(&[firing("a1", "web1:9830", "nuke")]);
        assert!(
            ignored_because(&d[0], "\"nuke\" is not a cleanup level"),
            "{d:?}"
        );
    }

    #[test]
    fn an_alert_without_an_instance_is_ignored_even_with_relay_on() {
        let a = alert("firing", &[("bilge_action", "standard")]);
        let d = Host::new().with_relay().decide(&[a]);
        assert_eq!(d, [Decision::Ignored("no instance label".into())]);
    }

    #[test]
    fn a_level_beyond_max_level_is_capped_and_the_answer_says_so() {
        let d = Host::new().decide(&[firing("a1", "web1:9830", "aggressive")]);
        let capped = Decision::Accepted {
            level: Level::DanglingImages,
            asked: Level::UnusedVolumes,
            capped_to: Some(Level::DanglingImages),
        };
        assert_eq!(d, [capped]);
        assert_eq!(
            d[0].reason().as_deref(),
            Some("unused_volumes capped to dangling_images by this host's policy")
        );
    }

    #[test]
    fn volumes_are_capped_away_where_the_host_does_not_allow_them() {
        let host = Host::new().max_level(Level::UnusedVolumes, false);
        let d = host.decide(&[firing("a1", "web1:9830", "aggressive")]);
        assert_eq!(d[0].level(), Some(Level::UnusedImages));
        let host = Host::new().max_level(Level::UnusedVolumes, true);
        let d = host.decide(&[firing("a1", "web1:9830", "aggressive")]);
        assert_eq!(d, [accepted(Level::UnusedVolumes)]);
    }

    #[test]
    fn the_alerts_of_one_delivery_share_one_run_at_the_highest_level_asked() {
        let host = Host::new().max_level(Level::UnusedImages, false);
        let alerts = [
            firing("a1", "web1:9830", "build_cache"),
            firing("a2", "web1:9830", "unused_images"),
        ];
        let d = host.decide(&alerts);
        assert_eq!(
            d,
            [
                Decision::Accepted {
                    level: Level::UnusedImages,
                    asked: Level::BuildCache,
                    capped_to: None,
                },
                accepted(Level::UnusedImages),
            ]
        );
        let Some(Run::Start { request, acted }) = run(&payload(alerts.to_vec()), &d) else {
            panic!("no run started: {d:?}");
        };
        assert_eq!(request.trigger, Trigger::Webhook);
        assert_eq!(request.level, Level::UnusedImages);
        assert_eq!(request.alert.as_deref(), Some("a1,a2"));
        assert_eq!(acted, [alerts[0].key(), alerts[1].key()]);
    }

    #[test]
    fn a_foreign_instance_with_relay_off_is_ignored_and_says_how_to_relay() {
        let d = Host::new().decide(&[firing("a1", "web2:9830", "standard")]);
        assert!(ignored_because(&d[0], "--webhook.relay"), "{d:?}");
        assert!(forwards(&d).is_empty());
    }

    /// The member at `address` over plain http.
    fn http(address: &str) -> Target {
        Target {
            scheme: Scheme::Http,
            address: address.into(),
        }
    }

    #[test]
    fn a_listed_foreign_instance_with_relay_on_is_relayed_and_starts_nothing_here() {
        let alerts = [firing("a1", "web2:9830", "standard")];
        let d = Host::new().with_relay().decide(&alerts);
        assert_eq!(
            d,
            [Decision::Relay {
                target: http("web2:9830")
            }]
        );
        assert_eq!(run(&payload(alerts.to_vec()), &d), None);
    }

    #[test]
    fn an_unlisted_foreign_instance_is_ignored_with_relay_on_and_the_reason_says_why() {
        let d = Host::new()
            .with_relay()
            .decide(&[firing("a1", "127.0.0.1:4444", "standard")]);
        assert_eq!(
            d,
            [Decision::Ignored(
                "instance 127.0.0.1:4444 is not this host and not listed in --webhook.relay-targets; not relayed"
                    .into()
            )]
        );
        assert!(forwards(&d).is_empty());
        assert_eq!(outcome(&d), Outcome::Ignored);
    }

    #[test]
    fn with_an_empty_targets_file_nothing_is_relayed() {
        let d = Host::new()
            .with_relay_to(Targets::default())
            .decide(&[firing("a1", "web2:9830", "standard")]);
        assert!(ignored_because(&d[0], "not listed"), "{d:?}");
    }

    #[test]
    fn the_relay_goes_to_the_listed_scheme_and_address_not_to_what_the_alert_wrote() {
        let listed = Targets::of(&[("web2:9830", Scheme::Https)]);
        let d = Host::new()
            .with_relay_to(listed)
            .decide(&[firing("a1", "WEB2:9830", "standard")]);
        let [Decision::Relay { target }] = d.as_slice() else {
            panic!("{d:?}");
        };
        assert_eq!(target.url(), "https://web2:9830/api/v1/alerts");
    }

    #[test]
    fn a_relay_that_failed_is_answered_relay_failed_and_nothing_more() {
        assert_eq!(Decision::RelayFailed.as_str(), "relay_failed");
        assert_eq!(
            Decision::RelayFailed.reason().as_deref(),
            Some("relay failed (this bilge's log says why)")
        );
        assert_eq!(Decision::Relayed.as_str(), "relayed");
        assert_eq!(Decision::Relayed.reason(), None);
    }

    #[test]
    fn a_long_instance_is_clipped_in_the_reason_and_the_answer() {
        let long = format!("{}:9830", "h".repeat(5000));
        let a = firing("a1", &long, "standard");
        let d = Host::new().with_relay().decide(std::slice::from_ref(&a));
        assert!(d[0].reason().unwrap_or_default().len() < 400, "{d:?}");
        let answer = Answer::new(&a, &d[0]);
        assert!(answer.instance.unwrap_or_default().len() <= 260);
    }

    /// Found by the `webhook` fuzz target's bound on the answer: a long `status` or
    /// `bilge_action` was quoted whole in the reason, so the answer and the delivery's log line
    /// grew with what the sender wrote, while the instance and fingerprint were clipped.
    #[test]
    fn a_long_status_or_action_is_clipped_in_the_reason() {
        let mut a = firing("a1", "web1:9830", "standard");
        a.status = "y".repeat(5000);
        let b = firing("b1", "web1:9830", &"x".repeat(5000));
        let d = Host::new().decide(&[a, b]);
        for d in &d {
            let why = d.reason().unwrap_or_default();
            assert!(why.len() < 500, "a reason of {} bytes", why.len());
        }
        assert!(ignored_because(&d[0], "is not firing"), "{d:?}");
        assert!(ignored_because(&d[1], "is not a cleanup level"), "{d:?}");
    }

    #[test]
    fn relays_are_grouped_one_per_instance() {
        let d = Host::new().with_relay().decide(&[
            firing("a1", "web3:9830", "standard"),
            firing("a2", "web1:9830", "standard"),
            firing("a3", "web2:9830", "standard"),
            firing("a4", "web3:9830", "build_cache"),
        ]);
        let to = |address: &str, alerts: Vec<usize>| Forward {
            target: http(address),
            alerts,
        };
        assert_eq!(
            forwards(&d),
            [to("web2:9830", vec![2]), to("web3:9830", vec![0, 3])]
        );
    }

    #[test]
    fn a_foreign_instance_that_is_not_host_port_is_never_relayed() {
        let d = Host::new()
            .with_relay()
            .decide(&[firing("a1", "evil.example/x?:80", "standard")]);
        assert!(ignored_because(&d[0], "not listed"), "{d:?}");
    }

    #[test]
    fn two_spellings_of_one_member_make_one_relay() {
        let d = Host::new().with_relay().decide(&[
            firing("a1", "web2:9830", "standard"),
            firing("a2", "WEB2:9830", "build_cache"),
        ]);
        assert_eq!(
            forwards(&d),
            [Forward {
                target: http("web2:9830"),
                alerts: vec![0, 1]
            }]
        );
    }

    #[test]
    fn an_already_relayed_request_is_never_relayed_again() {
        let host = Host::new().with_relay().delivery_relayed_by_another_bilge();
        let d = host.decide(&[firing("a1", "web2:9830", "standard")]);
        assert!(ignored_because(&d[0], "not relayed again"), "{d:?}");
        assert!(forwards(&d).is_empty());
    }

    #[test]
    fn an_already_relayed_request_for_this_host_acts() {
        let host = Host::new().delivery_relayed_by_another_bilge();
        let d = host.decide(&[firing("a1", "web1:9830", "standard")]);
        assert_eq!(d, [accepted(Level::DanglingImages)]);
    }

    #[test]
    fn a_repeat_within_the_window_is_a_duplicate_and_starts_nothing() {
        let a = firing("a1", "web1:9830", "standard");
        let host = Host::new().acted_on(&a, Duration::from_secs(599));
        let d = host.decide(std::slice::from_ref(&a));
        assert_eq!(d, [Decision::Duplicate(Repeat::AlreadyActed)]);
        assert_eq!(
            d[0].reason().as_deref(),
            Some("this alert already started a cleanup")
        );
        assert_eq!(run(&payload(vec![a]), &d), None);
    }

    #[test]
    fn a_repeat_after_the_window_acts_again() {
        let a = firing("a1", "web1:9830", "standard");
        let host = Host::new().acted_on(&a, Duration::from_secs(600));
        assert_eq!(host.decide(&[a]), [accepted(Level::DanglingImages)]);
    }

    #[test]
    fn a_new_firing_of_the_same_alert_is_not_a_duplicate() {
        let a = firing("a1", "web1:9830", "standard");
        let host = Host::new().acted_on(&a, Duration::from_secs(1));
        let again = Alert {
            starts_at: "2024-05-01T11:00:00Z".into(),
            ..a
        };
        assert_eq!(host.decide(&[again]), [accepted(Level::DanglingImages)]);
    }

    #[test]
    fn the_same_alert_twice_in_one_delivery_acts_once() {
        let a = firing("a1", "web1:9830", "standard");
        let alerts = [a.clone(), a];
        let d = Host::new().decide(&alerts);
        assert_eq!(
            d,
            [
                accepted(Level::DanglingImages),
                Decision::Duplicate(Repeat::InThisDelivery)
            ]
        );
        let Some(Run::Start { request, acted }) = run(&payload(alerts.to_vec()), &d) else {
            panic!("no run started: {d:?}");
        };
        assert_eq!(request.alert.as_deref(), Some("a1"));
        assert_eq!(acted.len(), 1);
    }

    #[test]
    fn an_alert_while_a_run_is_in_progress_is_answered_cooldown_and_recorded_as_skipped() {
        let alerts = [firing("a1", "web1:9830", "standard")];
        let d = Host::new()
            .availability(Availability::Running)
            .decide(&alerts);
        assert_eq!(
            d,
            [Decision::Cooldown {
                level: Level::DanglingImages,
                asked: Level::DanglingImages,
                refusal: Refusal::Busy,
            }]
        );
        assert!(
            d[0].reason()
                .unwrap_or_default()
                .contains("already running")
        );
        let Some(Run::Skip { request, refusal }) = run(&payload(alerts.to_vec()), &d) else {
            panic!("no skipped run: {d:?}");
        };
        assert_eq!(refusal, Refusal::Busy);
        assert_eq!(request.alert.as_deref(), Some("a1"));
    }

    #[test]
    fn an_alert_during_the_cooldown_is_answered_cooldown_with_the_time_left() {
        let left = Duration::from_secs(90);
        let host = Host::new().availability(Availability::Cooldown(left));
        let d = host.decide(&[firing("a1", "web1:9830", "standard")]);
        assert_eq!(d[0].as_str(), "cooldown");
        assert_eq!(d[0].level(), Some(Level::DanglingImages));
        assert!(d[0].reason().unwrap_or_default().contains("1m30s"), "{d:?}");
    }

    #[test]
    fn a_duplicate_stays_a_duplicate_during_the_cooldown() {
        let a = firing("a1", "web1:9830", "standard");
        let host = Host::new()
            .acted_on(&a, Duration::from_secs(10))
            .availability(Availability::Cooldown(Duration::from_secs(60)));
        assert_eq!(
            host.decide(&[a]),
            [Decision::Duplicate(Repeat::AlreadyActed)]
        );
    }

    #[test]
    fn relays_and_ignored_alerts_do_not_wait_for_the_engine() {
        let host = Host::new().with_relay().availability(Availability::Running);
        let d = host.decide(&[
            firing("a1", "web2:9830", "standard"),
            firing("a2", "web1:9830", "nuke"),
        ]);
        assert_eq!(d[0].as_str(), "relay");
        assert_eq!(d[1].as_str(), "ignored");
    }

    #[test]
    fn a_refusal_from_the_engine_decides_the_same_alerts_as_cooldown() {
        let alerts = [firing("a1", "web1:9830", "standard")];
        let host = Host::new();
        let free = host.decide(&alerts);
        let refused = Host::new()
            .availability(Availability::from(Refusal::Busy))
            .decide(&alerts);
        assert_eq!(free[0].as_str(), "accepted");
        assert_eq!(refused[0].as_str(), "cooldown");
        assert_eq!(
            Availability::from(Refusal::Busy).refusal(),
            Some(Refusal::Busy)
        );
        assert_eq!(Availability::Free.refusal(), None);
    }

    #[test]
    fn a_delivery_without_alerts_decides_nothing_and_asks_for_no_run() {
        let d = Host::new().decide(&[]);
        assert!(d.is_empty());
        assert_eq!(run(&payload(vec![]), &d), None);
        assert_eq!(outcome(&d), Outcome::Ignored);
    }

    // The answer and its outcome label.

    #[test]
    fn the_answer_has_the_shape_the_readme_documents() {
        let alerts = vec![
            firing("3f2a", "ci-7:9830", "standard"),
            firing("77aa", "web9:9830", "nuke"),
        ];
        let d = vec![
            accepted(Level::DanglingImages),
            Decision::Ignored("why".into()),
        ];
        assert_eq!(
            answer(&payload(alerts), &d),
            serde_json::json!({"alerts": [
                {"fingerprint": "3f2a", "decision": "accepted", "level": "dangling_images", "instance": "ci-7:9830"},
                {"fingerprint": "77aa", "decision": "ignored", "instance": "web9:9830", "reason": "why"},
            ]})
        );
    }

    #[test]
    fn the_answer_is_counted_by_its_most_consequential_decision() {
        let d = |decision: &str| match decision {
            "accepted" => accepted(Level::BuildCache),
            "relayed" => Decision::Relayed,
            "relay_failed" => Decision::RelayFailed,
            "duplicate" => Decision::Duplicate(Repeat::AlreadyActed),
            "cooldown" => Decision::Cooldown {
                level: Level::BuildCache,
                asked: Level::BuildCache,
                refusal: Refusal::Busy,
            },
            _ => Decision::Ignored("f".into()),
        };
        assert_eq!(outcome(&[d("ignored"), d("accepted")]).as_str(), "accepted");
        assert_eq!(outcome(&[d("duplicate"), d("relayed")]).as_str(), "relayed");
        assert_eq!(
            outcome(&[d("relay_failed"), d("relayed")]).as_str(),
            "relayed"
        );
        assert_eq!(
            outcome(&[d("cooldown"), d("relay_failed")]).as_str(),
            "relay_failed"
        );
        assert_eq!(
            outcome(&[d("duplicate"), d("cooldown")]).as_str(),
            "cooldown"
        );
        assert_eq!(outcome(&[]).as_str(), "ignored");
    }

    #[test]
    fn every_outcome_has_its_label() {
        let labels: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            labels,
            [
                "accepted",
                "relayed",
                "relay_failed",
                "duplicate",
                "cooldown",
                "ignored",
                "unauthorized",
                "bad_request"
            ]
        );
    }

    // The routing rules on their own (the first step of the table).

    #[test]
    fn only_firing_alerts_with_an_action_for_this_host_act() {
        let ids = Identities::of(&["web1:9830"]);
        let fleet = Targets::of(&[("web2:9830", Scheme::Http)]);
        let a = alert(
            "firing",
            &[("instance", "WEB1:9830"), ("bilge_action", "aggressive")],
        );
        assert_eq!(route(&a, &ids, None, false), Route::Act(Level::AGGRESSIVE));
        let resolved = alert(
            "resolved",
            &[("instance", "web1:9830"), ("bilge_action", "standard")],
        );
        assert!(matches!(
            route(&resolved, &ids, None, false),
            Route::Ignore(_)
        ));
        let no_action = alert("firing", &[("instance", "web1:9830")]);
        assert_eq!(
            route(&no_action, &ids, None, false),
            Route::Ignore("no bilge_action label".into())
        );
        let bad = alert(
            "firing",
            &[("instance", "web1:9830"), ("bilge_action", "nuke")],
        );
        assert!(matches!(route(&bad, &ids, None, false), Route::Ignore(m) if m.contains("nuke")));
        let no_instance = alert("firing", &[("bilge_action", "standard")]);
        assert!(matches!(
            route(&no_instance, &ids, Some(&fleet), false),
            Route::Ignore(_)
        ));
    }

    #[test]
    fn other_hosts_alerts_are_relayed_once_and_only_to_listed_members() {
        let ids = Identities::of(&["web1:9830"]);
        let fleet = Targets::of(&[("web2:9830", Scheme::Http)]);
        let a = alert(
            "firing",
            &[("instance", "web2:9830"), ("bilge_action", "standard")],
        );
        assert!(
            matches!(route(&a, &ids, None, false), Route::Ignore(m) if m.contains("--webhook.relay"))
        );
        assert_eq!(
            route(&a, &ids, Some(&fleet), false),
            Route::Relay(http("web2:9830"))
        );
        assert!(
            matches!(route(&a, &ids, Some(&fleet), true), Route::Ignore(m) if m.contains("not relayed again"))
        );
        let evil = alert(
            "firing",
            &[
                ("instance", "evil.example/x?:80"),
                ("bilge_action", "standard"),
            ],
        );
        assert!(matches!(
            route(&evil, &ids, Some(&fleet), false),
            Route::Ignore(_)
        ));
        let unlisted = alert(
            "firing",
            &[("instance", "web9:9830"), ("bilge_action", "standard")],
        );
        assert!(
            matches!(route(&unlisted, &ids, Some(&fleet), false), Route::Ignore(m) if m.contains("not listed in --webhook.relay-targets"))
        );
    }
}
