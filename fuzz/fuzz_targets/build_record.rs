//! Fuzzes what `POST /api/v1/builds` runs on a body: `bilge::builds::record::parse` (JSON, then
//! every validation rule), with the time of receipt fixed.
//!
//! Promises checked on every input, besides "no panic" (the issue's `duration_seconds: 1e13`
//! panicked here once): an accepted record keeps the rules it was checked against (a valid
//! project; a finite duration from 0 to `MAX_DURATION_SECONDS` that matches its times within the
//! tolerance; times from `EARLIEST` on and not in the future; bounded one-line evidence with its
//! credentials masked; a valid host; attempt from 1; an exit code and a reason that agree with the
//! result); and what the API lists (the accepted record as JSON) is accepted again unchanged.

#![no_main]

use bilge::builds::classify::Reason;
use bilge::builds::record::{
    self, EARLIEST, MAX_DURATION_SECONDS, MAX_EVIDENCE_BYTES, MAX_HOST_LEN, mask_secrets,
};
use bilge::model::BuildResult;
use bilge::store::BuildRecord;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

/// How far a duration may differ from its times (the module's tolerance, in seconds).
const TOLERANCE: f64 = 2.0;

/// The time of receipt: fixed, so that a crash replays.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_748_779_200, 0).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Ok(r) = record::parse(data, now()) else {
        return;
    };
    check(&r);
    let listed = match serde_json::to_vec(&r) {
        Ok(json) => json,
        Err(e) => panic!("an accepted record does not serialize: {e}"),
    };
    match record::parse(&listed, now()) {
        Ok(again) => {
            check(&again);
            assert_same(&r, &again);
        }
        Err(e) => panic!(
            "the listed record {} is refused: {e}",
            String::from_utf8_lossy(&listed)
        ),
    }
});

/// Asserts the rules an accepted record was checked against.
fn check(r: &BuildRecord) {
    assert!(record::check_project(&r.project).is_ok(), "{:?}", r.project);
    let d = r.duration_seconds;
    assert!(d.is_finite() && d >= 0.0, "duration {d}");
    assert!(d <= MAX_DURATION_SECONDS, "a build of {d} s: {r:?}");
    let earliest = DateTime::parse_from_rfc3339(EARLIEST).map(|t| t.with_timezone(&Utc));
    assert!(earliest.is_ok_and(|e| r.started_at >= e), "{r:?}");
    assert!(r.finished_at >= r.started_at);
    let span = (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0;
    assert!((span - d).abs() <= TOLERANCE, "{span} vs {r:?}");
    assert!(
        (r.finished_at - now()).num_seconds() <= 300,
        "in the future"
    );
    if let Some(e) = &r.evidence {
        assert!(
            e.len() <= MAX_EVIDENCE_BYTES,
            "{} bytes of evidence",
            e.len()
        );
        assert!(!e.contains(['\n', '\r']), "{e:?}");
        assert!(!e.trim().is_empty(), "blank evidence");
        assert_eq!(
            mask_secrets(e),
            *e,
            "stored evidence masks differently again"
        );
    }
    if let Some(h) = &r.host {
        assert!(!h.is_empty() && h.len() <= MAX_HOST_LEN);
    }
    assert!(r.attempt >= 1);
    match r.result {
        BuildResult::Success => {
            assert_eq!(r.reason, Reason::None);
            assert!(r.exit_code.is_none_or(|c| c == 0));
        }
        BuildResult::Failure => {
            assert_ne!(r.reason, Reason::None);
            assert_ne!(r.exit_code, Some(0));
        }
    }
}

/// Asserts that a record pushed again is the record listed (the duration within a rounding step
/// of JSON's decimal form).
fn assert_same(a: &BuildRecord, b: &BuildRecord) {
    let close = (a.duration_seconds - b.duration_seconds).abs() <= a.duration_seconds * 1e-12;
    assert!(
        close,
        "{} became {}",
        a.duration_seconds, b.duration_seconds
    );
    let b = BuildRecord {
        duration_seconds: a.duration_seconds,
        ..b.clone()
    };
    assert_eq!(*a, b, "the record changed on its way back");
}
