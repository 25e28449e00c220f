//! Build records: the rules a build outcome must follow before it is stored, whoever sends it
//! (`bilge build` or a CI system through `POST /api/v1/builds`), project names, and the cap on the
//! project label. Pure: no I/O.
//!
//! Times and durations are checked against sane bounds ([`MAX_DURATION_SECONDS`], [`EARLIEST`])
//! before any arithmetic is done with them, and the arithmetic is checked too, so no input can
//! overflow it. Evidence lines are stored with credentials masked ([`mask_secrets`]): build output
//! often echoes `https://user:token@host/…` remotes and `Authorization:` headers.

use std::collections::HashSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::classify::Reason;
use crate::model::BuildResult;
use crate::store::BuildRecord;

/// Longest project name, in characters.
pub const MAX_PROJECT_LEN: usize = 128;
/// Longest evidence line accepted from a client, in bytes.
pub const MAX_EVIDENCE_BYTES: usize = 1024;
/// Longest host name accepted, in bytes (a DNS name's limit).
pub const MAX_HOST_LEN: usize = 253;
/// The project label value for every project beyond `--builds.max-projects`.
pub const OTHER_PROJECT: &str = "other";
/// The project recorded when the current directory gives no usable name.
pub const DEFAULT_PROJECT: &str = "default";
/// How far `duration_seconds` may differ from `finished_at - started_at` (clients round).
const DURATION_TOLERANCE_SECONDS: f64 = 2.0;
/// How far in the future `finished_at` may be (clock skew between CI and bilge).
const MAX_FUTURE_SECONDS: i64 = 300;
/// Longest build accepted: 31 days.
pub const MAX_DURATION_SECONDS: f64 = 31.0 * 86_400.0;
/// Earliest `started_at` accepted (RFC 3339): anything before is a clock that was never set.
pub const EARLIEST: &str = "2000-01-01T00:00:00Z";
/// What a masked credential is replaced with.
pub const MASK: &str = "***";

/// A build outcome as a client sends it. Unknown fields are refused so that typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildInput {
    /// Required: the project name.
    pub project: String,
    /// Required: `success` or `failure`.
    pub result: String,
    /// `none` (or absent) on success; a failure reason (absent means `unknown`).
    #[serde(default)]
    pub reason: Option<String>,
    /// The command's exit code: 0 on success, non-zero on failure, absent if unknown.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// RFC 3339; defaults to `finished_at - duration_seconds`.
    #[serde(default)]
    pub started_at: Option<String>,
    /// RFC 3339; defaults to `started_at + duration_seconds`, else to the time of receipt.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Seconds; defaults to `finished_at - started_at`.
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// The output line that shows the reason (one line, at most 1 KiB).
    #[serde(default)]
    pub evidence: Option<String>,
    /// The host that ran the build.
    #[serde(default)]
    pub host: Option<String>,
    /// 1 for a first attempt, 2 for a retry after a cleanup.
    #[serde(default)]
    pub attempt: Option<u32>,
}

/// Parses and validates a JSON body; `now` is the time of receipt.
pub fn parse(body: &[u8], now: DateTime<Utc>) -> Result<BuildRecord, String> {
    let input: BuildInput =
        serde_json::from_slice(body).map_err(|e| format!("invalid build record: {e}"))?;
    validate(input, now)
}

/// Checks a project name: 1 to 128 characters of `A-Z a-z 0-9 . _ - / : @ +`.
pub fn check_project(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the project name is empty".into());
    }
    if name.chars().count() > MAX_PROJECT_LEN {
        return Err(format!(
            "the project name is longer than {MAX_PROJECT_LEN} characters"
        ));
    }
    if let Some(c) = name.chars().find(|c| !project_char(*c)) {
        return Err(format!(
            "the project name {name:?} contains {c:?}; use letters, digits and . _ - / : @ +"
        ));
    }
    Ok(())
}

/// Checks a host name (a record's `host`, `--host.name`): 1 to 253 bytes of letters, digits and
/// `. - _ :`.
pub fn check_host(h: &str) -> Result<(), String> {
    if h.is_empty()
        || h.len() > MAX_HOST_LEN
        || !h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(format!(
            "host {h:?} is not a host name (letters, digits, . - _ :, at most {MAX_HOST_LEN} bytes)"
        ));
    }
    Ok(())
}

/// Whether `c` may appear in a project name.
fn project_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '+')
}

/// A project name made from a directory's name: other characters become `-`, cut at 128.
pub fn project_from_dir(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| if project_char(c) { c } else { '-' })
        .take(MAX_PROJECT_LEN)
        .collect();
    if name.chars().all(|c| c == '-') {
        DEFAULT_PROJECT.into()
    } else {
        name
    }
}

/// Parses one RFC 3339 timestamp field.
fn timestamp(field: &str, s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("{field} {s:?} is not an RFC 3339 time ({e}); example: 2025-01-31T12:00:00Z")
        })
}

/// Seconds from `a` to `b`, with millisecond precision.
fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// Turns seconds (already checked to lie within 0 and [`MAX_DURATION_SECONDS`]) into a chrono
/// duration, millisecond precision.
fn chrono_secs(s: f64) -> Result<chrono::Duration, String> {
    chrono::Duration::try_milliseconds((s * 1000.0).round() as i64)
        .ok_or_else(|| format!("duration_seconds {s} is out of range"))
}

/// `t + d`, or why it cannot be.
fn plus(t: DateTime<Utc>, d: chrono::Duration) -> Result<DateTime<Utc>, String> {
    t.checked_add_signed(d)
        .ok_or_else(|| "started_at + duration_seconds is out of range".to_string())
}

/// `t - d`, or why it cannot be.
fn minus(t: DateTime<Utc>, d: chrono::Duration) -> Result<DateTime<Utc>, String> {
    t.checked_sub_signed(d)
        .ok_or_else(|| "finished_at - duration_seconds is out of range".to_string())
}

/// Applies the defaults and checks every rule; the answer is ready to store.
pub fn validate(input: BuildInput, now: DateTime<Utc>) -> Result<BuildRecord, String> {
    check_project(&input.project)?;
    let success = match input.result.as_str() {
        "success" => true,
        "failure" => false,
        other => {
            return Err(format!(
                "result {other:?} must be \"success\" or \"failure\""
            ));
        }
    };
    let reason = match input.reason.as_deref() {
        None if success => Reason::None,
        None => Reason::Unknown,
        Some(r) => Reason::parse(r).ok_or_else(|| {
            let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
            format!("reason {r:?} is not one of {}", names.join(", "))
        })?,
    };
    if success && reason != Reason::None {
        return Err(format!(
            "a successful build has reason \"none\", not {:?}",
            reason.as_str()
        ));
    }
    if !success && reason == Reason::None {
        return Err("a failed build needs a reason other than \"none\" (or none at all, which records \"unknown\")".into());
    }
    match (success, input.exit_code) {
        (true, Some(c)) if c != 0 => {
            return Err(format!("a successful build has exit_code 0, not {c}"));
        }
        (false, Some(0)) => return Err("a failed build cannot have exit_code 0".into()),
        _ => {}
    }
    if let Some(d) = input.duration_seconds {
        if !(d.is_finite() && d >= 0.0) {
            return Err(format!(
                "duration_seconds {d} must be a number of seconds, 0 or more"
            ));
        }
        if d > MAX_DURATION_SECONDS {
            return Err(format!(
                "duration_seconds {d} is more than 31 days ({MAX_DURATION_SECONDS} s); send the build's real duration"
            ));
        }
    }
    let started = input
        .started_at
        .as_deref()
        .map(|s| timestamp("started_at", s))
        .transpose()?;
    let finished = input
        .finished_at
        .as_deref()
        .map(|s| timestamp("finished_at", s))
        .transpose()?;
    let earliest = timestamp("EARLIEST", EARLIEST)?;
    for (field, t) in [("started_at", started), ("finished_at", finished)] {
        if let Some(t) = t
            && t < earliest
        {
            return Err(format!(
                "{field} {} is before {EARLIEST}; check the sender's clock",
                t.to_rfc3339()
            ));
        }
        if let Some(t) = t
            && (t - now).num_seconds() > MAX_FUTURE_SECONDS
        {
            return Err(format!(
                "{field} {} is in the future (this server's clock says {})",
                t.to_rfc3339(),
                now.to_rfc3339()
            ));
        }
    }
    let (started, finished, duration) = match (started, finished, input.duration_seconds) {
        (Some(s), Some(f), d) => (s, f, d.unwrap_or_else(|| seconds_between(s, f))),
        (Some(s), None, Some(d)) => (s, plus(s, chrono_secs(d)?)?, d),
        (None, f, Some(d)) => {
            let f = f.unwrap_or(now);
            (minus(f, chrono_secs(d)?)?, f, d)
        }
        (Some(_), None, None) | (None, _, None) => {
            return Err("give started_at and finished_at, or duration_seconds (with either, or alone for a build that just finished)".into());
        }
    };
    // Two times alone give the duration: it is bounded like one that was sent.
    if duration > MAX_DURATION_SECONDS {
        return Err(format!(
            "finished_at - started_at is {duration} s, more than 31 days ({MAX_DURATION_SECONDS} s); send the build's real times"
        ));
    }
    if started < earliest {
        return Err(format!(
            "started_at {} is before {EARLIEST}; check the sender's clock",
            started.to_rfc3339()
        ));
    }
    if finished < started {
        return Err(format!(
            "finished_at {} is before started_at {}",
            finished.to_rfc3339(),
            started.to_rfc3339()
        ));
    }
    let span = seconds_between(started, finished);
    if (span - duration).abs() > DURATION_TOLERANCE_SECONDS {
        return Err(format!(
            "duration_seconds {duration} does not match finished_at - started_at ({span}s)"
        ));
    }
    if (finished - now).num_seconds() > MAX_FUTURE_SECONDS {
        return Err(format!(
            "started_at + duration_seconds ({}) is in the future (this server's clock says {})",
            finished.to_rfc3339(),
            now.to_rfc3339()
        ));
    }
    let evidence = input.evidence.filter(|e| !e.trim().is_empty());
    if let Some(e) = &evidence {
        if e.len() > MAX_EVIDENCE_BYTES {
            return Err(format!(
                "evidence is {} bytes; at most {MAX_EVIDENCE_BYTES} are accepted",
                e.len()
            ));
        }
        if e.contains(['\n', '\r']) {
            return Err("evidence is one output line; it must not contain line breaks".into());
        }
    }
    let evidence = evidence.map(|e| masked_evidence(&e));
    let host = input.host.filter(|h| !h.is_empty());
    if let Some(h) = &host {
        check_host(h)?;
    }
    let attempt = input.attempt.unwrap_or(1);
    if attempt == 0 {
        return Err("attempt counts from 1".into());
    }
    Ok(BuildRecord {
        id: None,
        project: input.project,
        result: if success {
            BuildResult::Success
        } else {
            BuildResult::Failure
        },
        reason,
        exit_code: input.exit_code,
        started_at: started,
        finished_at: finished,
        duration_seconds: duration,
        evidence,
        host,
        attempt,
    })
}

/// `line` with credentials masked: the user information of every URL (`https://user:token@host`
/// becomes `https://***@host`) and every `Authorization` header's value (the scheme stays:
/// `Authorization: Bearer ***`). Errs on the side of masking more.
/// `line` masked ([`mask_secrets`]) and at most [`MAX_EVIDENCE_BYTES`] long. Masking can lengthen
/// a line (`scheme://:@host` becomes `scheme://***@host`; found by the `build_record` fuzz
/// target), so an accepted line of the full size could be stored over the bound: the masked line
/// is then cut at a character boundary and masked again, further in each round until it fits. A
/// cut only drops text, so nothing unmasked comes back.
pub fn masked_evidence(line: &str) -> String {
    let mut masked = mask_secrets(line);
    let mut limit = MAX_EVIDENCE_BYTES;
    while masked.len() > MAX_EVIDENCE_BYTES {
        let mut cut = limit.min(masked.len());
        while !masked.is_char_boundary(cut) {
            cut -= 1;
        }
        masked = mask_secrets(&masked[..cut]);
        limit = limit.saturating_sub(16);
    }
    masked
}

pub fn mask_secrets(line: &str) -> String {
    mask_authorization(&mask_url_userinfo(line))
}

/// Masks the user information of every `scheme://user@host` in `s`.
fn mask_url_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '\\' | '`')
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) if at > 0 => {
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Masks the value of every `Authorization` (and `Proxy-Authorization`) header in `s`, written
/// as `Authorization: v`, `authorization=v` or `"Authorization": "v"`.
fn mask_authorization(s: &str) -> String {
    const NAME: &str = "authorization";
    let lower = s.to_ascii_lowercase();
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(NAME) {
        let mut i = from + found + NAME.len();
        from = i;
        // A closing quote of a JSON key, spaces, then `:` or `=`.
        if i < b.len() && matches!(b[i], b'"' | b'\'') {
            i += 1;
        }
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() || !matches!(b[i], b':' | b'=') {
            continue;
        }
        i += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let quote = (i < b.len() && matches!(b[i], b'"' | b'\'')).then(|| b[i]);
        if quote.is_some() {
            i += 1;
        }
        let value_end = match quote {
            Some(q) => s[i..].find(q as char).map_or(s.len(), |e| i + e),
            None => s[i..]
                .find(['"', '\'', '\r', '\n'])
                .map_or(s.len(), |e| i + e),
        };
        let value = &s[i..value_end];
        if value.trim().is_empty() || value.trim() == MASK {
            continue;
        }
        // Keep a leading scheme word (Basic, Bearer, token …), mask what follows it.
        let keep = match value.split_once(' ') {
            Some((scheme, rest))
                if !scheme.is_empty()
                    && scheme.chars().all(|c| c.is_ascii_alphabetic())
                    && !rest.trim().is_empty() =>
            {
                scheme.len() + 1
            }
            _ => 0,
        };
        out.push_str(&s[copied..i + keep]);
        out.push_str(MASK);
        copied = value_end;
        from = value_end;
    }
    out.push_str(&s[copied..]);
    out
}

/// The project label values in use: the first `max` distinct projects keep their names, later
/// ones are counted as [`OTHER_PROJECT`]. Fed in store order, it gives the same labels after a
/// restart.
#[derive(Debug)]
pub struct ProjectCap {
    /// Most distinct names.
    max: usize,
    /// The names that have a label of their own.
    known: HashSet<String>,
}

impl ProjectCap {
    /// A cap of `max` distinct project names.
    pub fn new(max: usize) -> ProjectCap {
        ProjectCap {
            max,
            known: HashSet::new(),
        }
    }

    /// The label value for `project`, admitting it while there is room.
    pub fn label<'a>(&mut self, project: &'a str) -> &'a str {
        if self.known.contains(project) {
            return project;
        }
        if self.known.len() < self.max {
            self.known.insert(project.to_string());
            return project;
        }
        OTHER_PROJECT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn ok(json: &str) -> BuildRecord {
        match parse(json.as_bytes(), now()) {
            Ok(r) => r,
            Err(e) => panic!("{json} was refused: {e}"),
        }
    }

    fn refused(json: &str) -> String {
        match parse(json.as_bytes(), now()) {
            Ok(r) => panic!("{json} was accepted: {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_complete_record_is_accepted_as_sent() {
        let r = ok(
            r#"{"project":"web","result":"failure","reason":"no_space","exit_code":1,
            "started_at":"2025-06-01T11:00:00Z","finished_at":"2025-06-01T11:02:00+00:00",
            "duration_seconds":120.4,"evidence":"No space left on device","host":"ci-1","attempt":2}"#,
        );
        assert_eq!(r.reason, Reason::NoSpace);
        assert_eq!(r.duration_seconds, 120.4);
        assert_eq!(r.attempt, 2);
        assert_eq!(r.host.as_deref(), Some("ci-1"));
    }

    #[test]
    fn missing_times_are_derived_from_the_others() {
        let r = ok(r#"{"project":"web","result":"success","duration_seconds":30}"#);
        assert_eq!(r.finished_at, now());
        assert_eq!((r.finished_at - r.started_at).num_seconds(), 30);
        assert_eq!(r.reason, Reason::None);
        let r = ok(
            r#"{"project":"web","result":"failure","started_at":"2025-06-01T11:00:00Z","finished_at":"2025-06-01T11:00:10Z"}"#,
        );
        assert_eq!(r.duration_seconds, 10.0);
        assert_eq!(r.reason, Reason::Unknown);
        let r = ok(
            r#"{"project":"web","result":"success","started_at":"2025-06-01T11:00:00Z","duration_seconds":5}"#,
        );
        assert_eq!(r.finished_at.to_rfc3339(), "2025-06-01T11:00:05+00:00");
    }

    #[test]
    fn inconsistent_records_are_refused_with_the_rule_they_break() {
        for (json, says) in [
            (
                r#"{"project":"","result":"success","duration_seconds":1}"#,
                "empty",
            ),
            (
                r#"{"project":"a b","result":"success","duration_seconds":1}"#,
                "' '",
            ),
            (
                r#"{"project":"a","result":"ok","duration_seconds":1}"#,
                "\"success\" or \"failure\"",
            ),
            (
                r#"{"project":"a","result":"success","reason":"no_space","duration_seconds":1}"#,
                "reason \"none\"",
            ),
            (
                r#"{"project":"a","result":"failure","reason":"none","duration_seconds":1}"#,
                "other than \"none\"",
            ),
            (
                r#"{"project":"a","result":"failure","reason":"disk_full","duration_seconds":1}"#,
                "is not one of",
            ),
            (
                r#"{"project":"a","result":"success","exit_code":2,"duration_seconds":1}"#,
                "exit_code 0",
            ),
            (
                r#"{"project":"a","result":"failure","exit_code":0,"duration_seconds":1}"#,
                "cannot have exit_code 0",
            ),
            (
                r#"{"project":"a","result":"success","duration_seconds":-1}"#,
                "0 or more",
            ),
            (r#"{"project":"a","result":"success"}"#, "duration_seconds"),
            (
                r#"{"project":"a","result":"success","started_at":"yesterday","duration_seconds":1}"#,
                "RFC 3339",
            ),
            (
                r#"{"project":"a","result":"success","started_at":"2025-06-01T11:00:10Z","finished_at":"2025-06-01T11:00:00Z"}"#,
                "before started_at",
            ),
            (
                r#"{"project":"a","result":"success","started_at":"2025-06-01T11:00:00Z","finished_at":"2025-06-01T11:00:10Z","duration_seconds":60}"#,
                "does not match",
            ),
            (
                r#"{"project":"a","result":"success","finished_at":"2025-06-02T12:00:00Z","duration_seconds":1}"#,
                "future",
            ),
            (
                r#"{"project":"a","result":"failure","evidence":"two\nlines","duration_seconds":1}"#,
                "line breaks",
            ),
            (
                r#"{"project":"a","result":"success","host":"a host","duration_seconds":1}"#,
                "host name",
            ),
            (
                r#"{"project":"a","result":"success","attempt":0,"duration_seconds":1}"#,
                "from 1",
            ),
            (
                r#"{"project":"a","result":"success","duration":1}"#,
                "unknown field `duration`",
            ),
            (r#"{"project":"a"}"#, "missing field `result`"),
            (r#"[1,2]"#, "invalid build record"),
        ] {
            let e = refused(json);
            assert!(e.contains(says), "{json}: {e:?} does not say {says:?}");
        }
        let long = format!(
            r#"{{"project":"a","result":"failure","evidence":"{}","duration_seconds":1}}"#,
            "x".repeat(1025)
        );
        assert!(refused(&long).contains("1024"));
        let long = format!(
            r#"{{"project":"{}","result":"success","duration_seconds":1}}"#,
            "p".repeat(129)
        );
        assert!(refused(&long).contains("128"));
    }

    #[test]
    fn durations_and_times_beyond_sane_bounds_are_refused_before_any_arithmetic() {
        for (json, says) in [
            (
                r#"{"project":"a","result":"success","duration_seconds":1e13}"#,
                "more than 31 days",
            ),
            (
                r#"{"project":"a","result":"success","duration_seconds":1e308}"#,
                "more than 31 days",
            ),
            (
                r#"{"project":"a","result":"success","started_at":"2025-06-01T11:00:00Z","duration_seconds":2678401}"#,
                "more than 31 days",
            ),
            (
                r#"{"project":"a","result":"success","started_at":"1970-01-01T00:00:00Z","duration_seconds":1}"#,
                "before 2000-01-01",
            ),
            (
                r#"{"project":"a","result":"success","finished_at":"0001-01-01T00:00:00Z","duration_seconds":1}"#,
                "before 2000-01-01",
            ),
            (
                r#"{"project":"a","result":"success","finished_at":"9999-12-31T23:59:59Z","started_at":"2025-06-01T11:00:00Z"}"#,
                "future",
            ),
            (
                r#"{"project":"a","result":"success","started_at":"+262142-12-31T23:59:59Z","duration_seconds":1}"#,
                "RFC 3339",
            ),
            (
                r#"{"project":"a","result":"success","finished_at":"2000-01-01T00:00:01Z","duration_seconds":100}"#,
                "before 2000-01-01",
            ),
        ] {
            let e = refused(json);
            assert!(e.contains(says), "{json}: {e:?} does not say {says:?}");
        }
        let r = ok(r#"{"project":"a","result":"success","duration_seconds":2678400}"#);
        assert_eq!(r.duration_seconds, MAX_DURATION_SECONDS);
    }

    /// Found by the `build_record` fuzz target: with `started_at` and `finished_at` and no
    /// `duration_seconds`, a build of a year was stored (and went into the duration histogram),
    /// although a sent duration over 31 days is refused.
    #[test]
    fn a_duration_taken_from_the_times_is_bounded_too() {
        let e = refused(
            r#"{"project":"web","result":"failure","started_at":"2024-06-01T11:00:00Z","finished_at":"2025-06-01T11:00:10Z"}"#,
        );
        assert!(e.contains("more than 31 days"), "{e}");
        let r = ok(
            r#"{"project":"web","result":"failure","started_at":"2025-05-01T12:00:00Z","finished_at":"2025-06-01T12:00:00Z"}"#,
        );
        assert_eq!(r.duration_seconds, MAX_DURATION_SECONDS);
    }

    #[test]
    fn credentials_in_urls_and_authorization_headers_are_masked() {
        for (line, masked) in [
            (
                "fatal: unable to access 'https://ci-bot:glpat-XYZ@gitlab.example/g/r.git/': 403",
                "fatal: unable to access 'https://***@gitlab.example/g/r.git/': 403",
            ),
            (
                "pulling https://user:p@ss@registry.example:5000/v2/ and http://a@b",
                "pulling https://***@registry.example:5000/v2/ and http://***@b",
            ),
            (
                "curl -H \"Authorization: Bearer eyJhbGci.x.y\" https://api.example/x",
                "curl -H \"Authorization: Bearer ***\" https://api.example/x",
            ),
            (
                "> authorization: Basic dXNlcjpwYXNz",
                "> authorization: Basic ***",
            ),
            (
                r#"{"headers":{"Authorization":"token abc123","x":1}}"#,
                r#"{"headers":{"Authorization":"token ***","x":1}}"#,
            ),
            ("Proxy-Authorization=s3cret", "Proxy-Authorization=***"),
            (
                "No space left on device: https://example.org/path@x",
                "No space left on device: https://example.org/path@x",
            ),
            ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
            ("authorization failed", "authorization failed"),
            ("Authorization: ***", "Authorization: ***"),
        ] {
            assert_eq!(mask_secrets(line), masked, "{line}");
        }
    }

    /// Found by the `build_record` fuzz target: 1,024 accepted bytes whose `://:@` masks to
    /// `://***@` were stored as 1,026 bytes of evidence, over the bound the API promises.
    #[test]
    fn evidence_that_masking_lengthens_is_still_stored_within_the_bound() {
        let line = "x".repeat(MAX_EVIDENCE_BYTES - 9) + "ect*://:@";
        assert_eq!(line.len(), MAX_EVIDENCE_BYTES);
        assert!(
            mask_secrets(&line).len() > MAX_EVIDENCE_BYTES,
            "the case grows"
        );
        let body = format!(
            r#"{{"project":"a","result":"failure","duration_seconds":1,"evidence":"{line}"}}"#
        );
        let r = parse(body.as_bytes(), Utc::now()).unwrap_or_else(|e| panic!("{e}"));
        let e = r.evidence.unwrap_or_default();
        assert!(e.len() <= MAX_EVIDENCE_BYTES, "{} bytes", e.len());
        assert_eq!(mask_secrets(&e), e);
        // The real crash input, replayed.
        let crash = include_str!("../../fuzz/seeds/build_record/masking-lengthens-evidence.json");
        let r = parse(crash.as_bytes(), Utc::now()).unwrap_or_else(|e| panic!("{e}"));
        let e = r.evidence.unwrap_or_default();
        assert!(e.len() <= MAX_EVIDENCE_BYTES, "{} bytes", e.len());
        assert_eq!(mask_secrets(&e), e);
    }

    #[test]
    fn pushed_evidence_is_stored_masked() {
        let r = ok(
            r#"{"project":"a","result":"failure","reason":"network","duration_seconds":1,"evidence":"clone https://bot:tok@git.example/r failed"}"#,
        );
        assert_eq!(
            r.evidence.as_deref(),
            Some("clone https://***@git.example/r failed")
        );
    }

    #[test]
    fn directory_names_become_valid_project_names() {
        assert_eq!(
            project_from_dir(Path::new("/src/my app (v2)")),
            "my-app--v2-"
        );
        assert_eq!(project_from_dir(Path::new("/")), DEFAULT_PROJECT);
        assert_eq!(project_from_dir(Path::new("/x/ünï")), "-n-");
        let long = project_from_dir(&Path::new("/").join("a".repeat(300)));
        assert_eq!(long.len(), MAX_PROJECT_LEN);
        assert!(check_project(&long).is_ok());
    }

    #[test]
    fn projects_beyond_the_cap_are_labelled_other() {
        let mut cap = ProjectCap::new(2);
        assert_eq!(cap.label("a"), "a");
        assert_eq!(cap.label("b"), "b");
        assert_eq!(cap.label("c"), OTHER_PROJECT);
        assert_eq!(cap.label("a"), "a");
        assert_eq!(cap.label("d"), OTHER_PROJECT);
    }
}
