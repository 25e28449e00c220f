//! Fuzzes what `POST /api/v1/alerts` does with a body once it is authenticated: the bounded
//! payload parser (`bilge::webhook::parse`) and, on what it parses, the pure decision table
//! (`bilge::webhook::decide`, `run`, `forwards`, `outcome`, `answer`) under four fixed hosts.
//!
//! Promises checked on every input, besides "no panic":
//! - parsing: a delivery never holds more than `max_alerts` alerts, and the same body under a
//!   smaller cap is refused as too many exactly when it holds more; what a relay would forward
//!   for all the alerts (`RawDelivery::body_for`) parses back to the same payload, and for a
//!   subset, to exactly those alerts;
//! - deciding: one decision per alert, in order; only a firing alert with a known
//!   `bilge_action` for this host ever acts, at one level for the whole delivery and never beyond
//!   the host's cap; nothing acts while the engine is busy or cooling down; an alert already
//!   acted on never acts again, nor does the same alert twice in one delivery; a relay goes only
//!   to the member the targets list holds for the alert's `instance` (never to an address taken
//!   from the alert), never from a relayed delivery and never with relay off; the run asked for
//!   matches the decisions; every relay is forwarded once;
//! - answering: the answer has one entry per alert, and each entry stays bounded (the echoed
//!   fingerprint and instance clipped to `MAX_ECHO` bytes, the reason a sentence of bounded
//!   length), whatever the alert holds; deciding twice gives the same answer.

#![no_main]

use std::time::{Duration, Instant};

use bilge::cleanup::Policy;
use bilge::model::Level;
use bilge::webhook::{
    self, Alert, Answer, Availability, Decision, Dedup, Identities, ParseError, Payload, Rules,
    Run, Scheme, Targets, answer, decide, forwards, outcome, run,
};
use libfuzzer_sys::fuzz_target;

/// The cap on alerts per delivery, as `--webhook.max-alerts` sets it by default.
const MAX_ALERTS: usize = webhook::DEFAULT_MAX_ALERTS;

/// Longest text of an alert echoed back (the answer's fingerprint and instance), in bytes.
const ECHO: usize = webhook::payload::MAX_ECHO + '…'.len_utf8();

/// Longest reason in an answer: a sentence quoting at most a clipped text or two, each of which
/// `{:?}` may escape to six bytes a byte (`\u{1b}`).
const MAX_REASON: usize = 512 + 8 * webhook::payload::MAX_ECHO;

/// One host the delivery is decided for.
struct Host {
    /// Forward other hosts' alerts to the fleet list.
    relay: bool,
    /// The delivery was itself relayed by another bilge.
    relayed: bool,
    /// The highest level the host allows.
    max_level: Level,
    /// Whether `unused_volumes` may run.
    allow_volumes: bool,
    /// The engine's state.
    availability: Availability,
    /// Remember every other alert of the delivery as already acted on.
    remember_even: bool,
}

/// The four hosts every input is decided for: together they reach every row of the table.
const HOSTS: [Host; 4] = [
    Host {
        relay: false,
        relayed: false,
        max_level: Level::STANDARD,
        allow_volumes: false,
        availability: Availability::Free,
        remember_even: false,
    },
    Host {
        relay: true,
        relayed: false,
        max_level: Level::AGGRESSIVE,
        allow_volumes: true,
        availability: Availability::Free,
        remember_even: true,
    },
    Host {
        relay: true,
        relayed: true,
        max_level: Level::BuildCache,
        allow_volumes: false,
        availability: Availability::Running,
        remember_even: false,
    },
    Host {
        relay: true,
        relayed: false,
        max_level: Level::AGGRESSIVE,
        allow_volumes: false,
        availability: Availability::Cooldown(Duration::from_secs(60)),
        remember_even: true,
    },
];

/// The names the fuzzed host answers to.
const NAMES: [&str; 2] = ["web1:9830", "127.0.0.1:9830"];

/// The fleet list of the relaying hosts (the seeds name these instances).
const FLEET: [(&str, Scheme); 3] = [
    ("web2:9830", Scheme::Http),
    ("web3:9830", Scheme::Https),
    ("10.0.0.7:9830", Scheme::Http),
];

fuzz_target!(|data: &[u8]| {
    let delivery = match webhook::parse(data, MAX_ALERTS) {
        Ok(d) => d,
        Err(ParseError::TooManyAlerts { max }) => {
            assert_eq!(max, MAX_ALERTS);
            return;
        }
        Err(ParseError::Invalid(_)) => return,
    };
    let payload = &delivery.payload;
    let n = payload.alerts.len();
    assert!(n <= MAX_ALERTS, "{n} alerts under a cap of {MAX_ALERTS}");
    if n > 0 {
        match webhook::parse(data, n - 1) {
            Err(ParseError::TooManyAlerts { max }) => assert_eq!(max, n - 1),
            other => panic!("{n} alerts under a cap of {}: {other:?}", n - 1),
        }
    }
    relay_bodies_parse_back(&delivery);

    let ids = Identities::of(&NAMES);
    let fleet = Targets::of(&FLEET);
    // An hour ahead, so that "acted on a second ago" is always a valid instant.
    let now = Instant::now() + Duration::from_secs(3600);
    for host in &HOSTS {
        check(payload, &ids, &fleet, host, now);
    }
});

/// Asserts that what a relay forwards parses back to the alerts it was made for.
fn relay_bodies_parse_back(delivery: &webhook::Delivery) {
    let payload = &delivery.payload;
    let all: Vec<usize> = (0..payload.alerts.len()).collect();
    let body = delivery.raw.body_for(&all);
    match webhook::parse(&body, MAX_ALERTS) {
        Ok(back) => assert_eq!(
            back.payload, *payload,
            "the relayed body changed the payload"
        ),
        Err(e) => panic!(
            "the relayed body {} is refused: {e}",
            String::from_utf8_lossy(&body)
        ),
    }
    let odd: Vec<usize> = all.iter().copied().filter(|i| i % 2 == 1).collect();
    let body = delivery.raw.body_for(&odd);
    match webhook::parse(&body, MAX_ALERTS) {
        Ok(back) => {
            let want: Vec<&Alert> = odd.iter().map(|i| &payload.alerts[*i]).collect();
            let got: Vec<&Alert> = back.payload.alerts.iter().collect();
            assert_eq!(got, want, "a relay of some alerts carries others");
        }
        Err(e) => panic!("a relay of some alerts is refused: {e}"),
    }
}

/// Decides `payload` for `host` and checks every promise of the module doc.
fn check(payload: &Payload, ids: &Identities, fleet: &Targets, host: &Host, now: Instant) {
    let policy = Policy {
        max_level: host.max_level,
        allow_volumes: host.allow_volumes,
        ..Policy::default()
    };
    let window = Duration::from_secs(600);
    let mut dedup = Dedup::default();
    let mut remembered = Vec::new();
    if host.remember_even {
        for alert in payload.alerts.iter().step_by(2) {
            dedup.remember(alert.key(), now - Duration::from_secs(1), window);
            remembered.push(alert.key());
        }
    }
    let rules = Rules {
        identities: ids,
        relay: host.relay.then_some(fleet),
        policy: &policy,
        window,
    };
    let decisions = decide(
        payload,
        host.relayed,
        &rules,
        &dedup,
        now,
        host.availability,
    );
    assert_eq!(
        decisions.len(),
        payload.alerts.len(),
        "one decision per alert"
    );

    let mut run_level = None;
    let mut acting_keys = Vec::new();
    for (alert, d) in payload.alerts.iter().zip(&decisions) {
        match d {
            Decision::Accepted { level, asked, .. } | Decision::Cooldown { level, asked, .. } => {
                assert_acts_here(alert, ids, *asked);
                assert_eq!(policy.cap(*level), *level, "{level} is beyond the cap");
                assert!(*run_level.get_or_insert(*level) == *level, "two run levels");
                assert!(
                    !remembered.contains(&alert.key()),
                    "a remembered alert acted"
                );
                assert!(!acting_keys.contains(&alert.key()), "one alert acted twice");
                acting_keys.push(alert.key());
                let accepted = matches!(d, Decision::Accepted { .. });
                assert_eq!(accepted, host.availability == Availability::Free);
            }
            Decision::Duplicate(_) => {
                let action = alert.labels.get("bilge_action").map(String::as_str);
                let asked = action.and_then(|a| Level::parse(a).ok());
                match asked {
                    Some(asked) => assert_acts_here(alert, ids, asked),
                    None => panic!("a duplicate without a level: {alert:?}"),
                }
            }
            Decision::Relay { target } => {
                assert!(
                    host.relay && !host.relayed,
                    "relayed with relay off or twice"
                );
                assert!(alert.is_firing());
                let instance = alert.instance().unwrap_or_default();
                assert!(!ids.matches(instance), "relayed an alert for this host");
                assert_eq!(
                    fleet.get(instance),
                    Some(target),
                    "relayed {instance:?} to a member the list does not hold for it"
                );
            }
            Decision::Relayed | Decision::RelayFailed => {
                panic!("decide never performs a relay")
            }
            Decision::Ignored(why) => assert!(!why.is_empty(), "ignored without a reason"),
        }
    }

    let relays = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Relay { .. }))
        .count();
    let forwarded: usize = forwards(&decisions).iter().map(|f| f.alerts.len()).sum();
    assert_eq!(forwarded, relays, "every relay is forwarded exactly once");

    match run(payload, &decisions) {
        None => assert!(acting_keys.is_empty(), "alerts acted but no run"),
        Some(Run::Start { request, acted }) => {
            assert_eq!(host.availability, Availability::Free);
            assert_eq!(acted, acting_keys);
            assert_eq!(Some(policy.cap(request.level)), run_level);
        }
        Some(Run::Skip { request, refusal }) => {
            assert_eq!(host.availability.refusal(), Some(refusal));
            assert_eq!(Some(policy.cap(request.level)), run_level);
        }
    }

    let _ = outcome(&decisions);
    for (alert, d) in payload.alerts.iter().zip(&decisions) {
        let a = Answer::new(alert, d);
        assert!(
            a.fingerprint.len() <= ECHO,
            "fingerprint {:?}",
            a.fingerprint
        );
        assert!(
            a.instance.as_ref().is_none_or(|i| i.len() <= ECHO),
            "{:?}",
            a.instance
        );
        let reason = a.reason.unwrap_or_default();
        assert!(
            reason.len() <= MAX_REASON,
            "a reason of {} bytes grows with the alert: {:?}",
            reason.len(),
            reason.get(..200)
        );
    }
    let body = answer(payload, &decisions);
    let entries = body["alerts"].as_array().map_or(0, Vec::len);
    assert_eq!(entries, payload.alerts.len(), "one answer entry per alert");
    if let Err(e) = serde_json::to_vec(&body) {
        panic!("the answer does not serialize: {e}");
    }

    let again = decide(
        payload,
        host.relayed,
        &rules,
        &dedup,
        now,
        host.availability,
    );
    assert_eq!(again, decisions, "deciding is deterministic");
}

/// Asserts that `alert` is a firing alert for this host asking for `asked`.
fn assert_acts_here(alert: &Alert, ids: &Identities, asked: Level) {
    assert!(alert.is_firing(), "a {:?} alert acted", alert.status);
    let action = alert.labels.get("bilge_action").map(String::as_str);
    assert_eq!(action.and_then(|a| Level::parse(a).ok()), Some(asked));
    assert!(
        alert.instance().is_some_and(|i| ids.matches(i)),
        "an alert for {:?} acted here",
        alert.instance()
    );
}
