//! Scheduled hygiene: the policy file's `[[cleanup.schedule]]` entries, each a cron expression
//! with a level and optional overrides, run by `bilge serve` itself and never missed.
//!
//! - **When.** Five standard cron fields (minute, hour, day of month, month, day of week; names,
//!   ranges, steps, lists and `@daily`-style nicknames, Vixie's rule that a restricted day of
//!   month and day of week match either), read by croner. A sixth, leading field of seconds is
//!   accepted as an extension. Times are the host's local time unless `tz` names an IANA zone.
//! - **Never missed, never doubled** ([`next_due`], pure). The store keeps the last slot each
//!   schedule handled. A slot that passed while bilge was down is run once soon after start,
//!   after a random delay within `catch_up_delay` (a fleet restarted together does not prune at
//!   once), however many slots were missed; a schedule seen for the first time starts counting
//!   from then. A run takes the host lock like every other trigger (it waits for a run in
//!   progress), is audited with trigger `schedule` and leaves alone what running builds use.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local, TimeZone, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::admission::WaitError;
use super::engine::{CleanupResult, Engine, Request};
use super::policy::Level;
use crate::format::{FreeTarget, format_duration};
use crate::model::Trigger;

/// The default `catch_up_delay`: a missed schedule runs within this after start.
pub const DEFAULT_CATCH_UP_DELAY: Duration = Duration::from_secs(300);
/// The most schedules a policy may have.
pub const MAX_SCHEDULES: usize = 32;
/// The longest schedule name.
pub const MAX_NAME: usize = 64;

/// One schedule of the policy file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// Its name: the `schedule` label and the store's key.
    pub name: String,
    /// The cron expression as written.
    pub cron: String,
    /// The IANA time zone it is read in; `None`: the host's local time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// The level it runs.
    pub level: Level,
    /// Its `until`, over the policy's.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration"
    )]
    pub until: Option<Duration>,
    /// Its `target_free`, over the policy's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_free: Option<FreeTarget>,
    /// Its `build_cache_keep`, over the policy's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_cache_keep: Option<FreeTarget>,
}

fn opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// Parses a cron expression: five fields, or six with leading seconds; no year field.
fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "{expr:?} has {fields} fields: write minute hour day-of-month month day-of-week (and optionally seconds first)"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// Parses an IANA time zone name.
fn parse_tz(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name.trim()).map_err(|_| {
        format!("{name:?} is not an IANA time zone (for example Europe/Berlin or UTC)")
    })
}

impl Schedule {
    /// Checks the expression and the zone, naming the field at fault (`cron` or `tz`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        parse_cron(&self.cron).map_err(|e| ("cron", e))?;
        if let Some(tz) = &self.tz {
            parse_tz(tz).map_err(|e| ("tz", e))?;
        }
        // An expression that never fires (30 February) is refused too.
        if self.next_after(Utc::now()).is_none() {
            return Err(("cron", format!("{:?} never comes", self.cron)));
        }
        Ok(())
    }

    /// The first slot strictly after `t`; `None` when there is none (or the schedule is
    /// invalid, which validation rules out).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = parse_cron(&self.cron).ok()?;
        match &self.tz {
            Some(tz) => occurrence(&cron, &t.with_timezone(&parse_tz(tz).ok()?), true),
            None => occurrence(&cron, &t.with_timezone(&Local), true),
        }
    }

    /// The latest slot at or before `t`.
    pub fn latest_until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = parse_cron(&self.cron).ok()?;
        match &self.tz {
            Some(tz) => occurrence(&cron, &t.with_timezone(&parse_tz(tz).ok()?), false),
            None => occurrence(&cron, &t.with_timezone(&Local), false),
        }
    }

    /// The request a slot of this schedule makes.
    pub fn request(&self) -> Request {
        Request {
            until: self.until,
            target_free: self.target_free,
            build_cache_keep: self.build_cache_keep,
            ..Request::new(Trigger::Schedule, self.level)
        }
    }
}

/// The next occurrence after `t` (`forward`), or the latest at or before it.
fn occurrence<Tz: TimeZone>(
    cron: &croner::Cron,
    t: &DateTime<Tz>,
    forward: bool,
) -> Option<DateTime<Utc>> {
    let found = if forward {
        cron.find_next_occurrence(t, false)
    } else {
        cron.find_previous_occurrence(t, true)
    };
    found.ok().map(|d| d.with_timezone(&Utc))
}

/// What a schedule should do next, given the last slot it handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Wait for this slot, then run it.
    At(DateTime<Utc>),
    /// A slot passed unrun (bilge was down, or a run outlasted the next slot): run once now
    /// (after the catch-up delay) for the latest passed slot, which is then handled.
    CatchUp(DateTime<Utc>),
    /// The schedule never fires again.
    Never,
}

/// The anacron rule (pure): the slot after `last` if it is still to come, else one catch-up
/// for the latest slot that has passed by `now`.
pub fn next_due(s: &Schedule, last: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    match s.next_after(last) {
        None => Due::Never,
        Some(next) if next > now => Due::At(next),
        Some(next) => Due::CatchUp(s.latest_until(now).unwrap_or(next).max(next)),
    }
}

/// A random share of `max`, different in every process (the standard library's hasher keys
/// are random per process): the catch-up delay.
fn jitter(max: Duration) -> Duration {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    let r = h.finish() as f64 / u64::MAX as f64;
    max.mul_f64(r.clamp(0.0, 1.0))
}

/// Sleeps until the wall clock reads `at` (in steps of at most a minute, so a clock that is
/// set meanwhile is followed); false when cancelled first.
async fn sleep_until(at: DateTime<Utc>, cancel: &CancellationToken) -> bool {
    loop {
        let left = (at - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(left.min(Duration::from_secs(60))) => {}
        }
    }
}

/// Runs schedule `s` until `cancel`: each slot once, a missed one once after start. The last
/// handled slot is kept in the store; the next slot goes to
/// `bilge_cleanup_next_run_timestamp_seconds`.
pub async fn follow(
    engine: Arc<Engine>,
    s: Schedule,
    catch_up_delay: Duration,
    cancel: CancellationToken,
) {
    let name = s.name.clone();
    let mut last = match engine.schedule_last(&name).await {
        Some(t) => t,
        None => {
            // Seen for the first time: slots count from now on.
            let now = Utc::now();
            engine.schedule_handled(&name, now).await;
            now
        }
    };
    loop {
        let (slot, wait_until) = match next_due(&s, last, Utc::now()) {
            Due::Never => {
                tracing::info!(schedule = %name, "the schedule never fires again");
                engine.metrics().schedule_next(&name, None);
                return;
            }
            Due::At(t) => (t, t),
            Due::CatchUp(t) => {
                let at = Utc::now()
                    + chrono::TimeDelta::from_std(jitter(catch_up_delay)).unwrap_or_default();
                tracing::info!(schedule = %name, missed = %t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), at = %at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "a scheduled cleanup was missed; catching up once");
                (t, at)
            }
        };
        engine.metrics().schedule_next(&name, Some(wait_until));
        if !sleep_until(wait_until, &cancel).await {
            return;
        }
        tracing::info!(schedule = %name, level = %s.level, "scheduled cleanup due");
        match engine.run(s.request()).await {
            // Stopped half-way or before the start by bilge's own shutdown: the slot stays
            // due, and the next start catches it up once.
            Ok(r) if r.record.result == CleanupResult::Interrupted => return,
            Err(WaitError::Canceled) => return,
            Ok(r) => {
                tracing::info!(schedule = %name, result = r.record.result.as_str(), "scheduled cleanup ended")
            }
            Err(e) => {
                tracing::warn!(schedule = %name, error = %e, "scheduled cleanup did not start");
                engine
                    .record_skipped(&s.request(), &format!("schedule {name}: {e}"))
                    .await;
            }
        }
        // Handled, run or refused: a slot is never taken twice.
        engine.schedule_handled(&name, slot).await;
        last = slot;
    }
}

/// A schedule as the page, `bilge df` and the dry run show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upcoming {
    /// The schedule.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Its next slot after now (`None`: never).
    pub next_run: Option<DateTime<Utc>>,
    /// What its level would free now, by the planner's estimate (when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_free_bytes: Option<u64>,
}

impl Upcoming {
    /// When it runs next, seen from `now`: `2026-12-06T03:00:00Z (in 2d9h)`, or `never`.
    pub fn next_run_text(&self, now: DateTime<Utc>) -> String {
        match self.next_run {
            Some(t) => format!(
                "{} (in {})",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                format_duration((t - now).to_std().unwrap_or_default())
            ),
            None => "never".into(),
        }
    }

    /// One line: name, when, what and the estimate.
    pub fn line(&self, now: DateTime<Utc>) -> String {
        let s = &self.schedule;
        let when = match self.next_run {
            Some(_) => format!("next {}", self.next_run_text(now)),
            None => "never again".into(),
        };
        let free = self
            .would_free_bytes
            .map(|b| format!(", would free about {} now", crate::format::human_bytes(b)))
            .unwrap_or_default();
        format!(
            "schedule {} \"{}\"{}: {}, up to {}{free}",
            s.name,
            s.cron,
            s.tz.as_deref()
                .map(|z| format!(" ({z})"))
                .unwrap_or_default(),
            when,
            s.level
        )
    }
}

/// Every schedule with its next slot after `now` and what `estimate` (a level and an `until`
/// to the bytes a plan would free) says it would free now.
pub fn upcoming(
    schedules: &[Schedule],
    now: DateTime<Utc>,
    estimate: impl Fn(Level, Option<Duration>) -> Option<u64>,
) -> Vec<Upcoming> {
    schedules
        .iter()
        .map(|s| Upcoming {
            next_run: s.next_after(now),
            would_free_bytes: estimate(s.level, s.until),
            schedule: s.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(cron: &str, tz: Option<&str>) -> Schedule {
        Schedule {
            name: "weekly".into(),
            cron: cron.into(),
            tz: tz.map(Into::into),
            level: Level::STANDARD,
            until: None,
            target_free: None,
            build_cache_keep: None,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn sunday_at_three_is_read_in_the_named_zone_through_a_dst_change() {
        let s = sched("0 3 * * SUN", Some("Europe/Berlin"));
        assert!(s.validate().is_ok());
        // Sunday 2026-03-29 is the spring change in Berlin (02:00 -> 03:00 CEST, UTC+2).
        assert_eq!(
            s.next_after(utc("2026-03-25T00:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        // The week before, still CET (UTC+1).
        assert_eq!(
            s.next_after(utc("2026-03-18T00:00:00Z")),
            Some(utc("2026-03-22T02:00:00Z"))
        );
        assert_eq!(
            s.latest_until(utc("2026-03-25T00:00:00Z")),
            Some(utc("2026-03-22T02:00:00Z"))
        );
    }

    #[test]
    fn standard_forms_parse_and_bad_ones_name_their_field() {
        for ok in [
            "*/15 * * * *",
            "0 3 * * 0",
            "30 2 1 * MON-FRI",
            "@daily",
            "*/5 * * * * *",
        ] {
            assert!(sched(ok, None).validate().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "0 3 * * 8",
            "every sunday",
            "0 0 30 2 *",
        ] {
            let e = sched(bad, None).validate().unwrap_err();
            assert_eq!(e.0, "cron", "{bad}: {e:?}");
        }
        let e = sched("0 3 * * *", Some("Mars/Olympus"))
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "tz");
        assert!(e.1.contains("IANA"), "{e:?}");
    }

    #[test]
    fn a_missed_slot_is_caught_up_once_and_a_slot_to_come_is_waited_for() {
        let s = sched("0 3 * * *", Some("UTC"));
        let last = utc("2026-12-01T03:00:00Z");
        // Down for three days: one catch-up, for the latest passed slot.
        assert_eq!(
            next_due(&s, last, utc("2026-12-04T10:00:00Z")),
            Due::CatchUp(utc("2026-12-04T03:00:00Z"))
        );
        // Back before the next slot: wait for it.
        assert_eq!(
            next_due(&s, last, utc("2026-12-02T02:59:00Z")),
            Due::At(utc("2026-12-02T03:00:00Z"))
        );
        // After the catch-up is handled, the next slot is tomorrow's.
        assert_eq!(
            next_due(&s, utc("2026-12-04T03:00:00Z"), utc("2026-12-04T10:00:01Z")),
            Due::At(utc("2026-12-05T03:00:00Z"))
        );
    }

    #[test]
    fn the_catch_up_delay_stays_within_its_bound() {
        let max = Duration::from_secs(10);
        for _ in 0..100 {
            assert!(jitter(max) <= max);
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn an_upcoming_run_reads_as_one_line() {
        let now = utc("2026-12-01T00:00:00Z");
        let u = upcoming(&[sched("0 3 * * *", Some("UTC"))], now, |_, _| {
            Some(3 << 30)
        });
        assert_eq!(
            u[0].line(now),
            "schedule weekly \"0 3 * * *\" (UTC): next 2026-12-01T03:00:00Z (in 3h), up to dangling_images, would free about 3.00GiB now"
        );
    }

    #[test]
    fn a_schedule_makes_a_request_with_its_overrides() {
        let mut s = sched("0 3 * * *", None);
        s.until = Some(Duration::from_secs(7 * 86_400));
        s.build_cache_keep = Some(FreeTarget::Bytes(1 << 30));
        let r = s.request();
        assert_eq!(r.trigger, Trigger::Schedule);
        assert_eq!(r.until, s.until);
        assert_eq!(r.build_cache_keep, s.build_cache_keep);
        assert!(!r.dry_run);
    }
}
