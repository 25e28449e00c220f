//! Fuzzes the streaming build-output classifier, `bilge::builds::classify::Classifier`, the way
//! `bilge build` feeds it: the output in chunks whose boundaries fall anywhere, inside a line, a
//! needle, a UTF-8 character or an ANSI escape sequence.
//!
//! The input is a small header, then the build output:
//! - byte 0 picks how the build ended (one of [`EXITS`]), byte 1 the disk state (bit 0: space
//!   exhausted, bit 1: inodes exhausted);
//! - byte 2 (mod 32) is a number `k` of cut points, then `k` little-endian `u16`s: where the
//!   output is cut (each modulo the output's length plus one), chosen by the fuzzer;
//! - the rest is the output.
//!
//! Promises checked, besides "no panic":
//! - the output fed in the fuzzer's chunks, and fed a byte at a time, gets exactly the verdict
//!   (reason and evidence) of the output fed in one chunk (`classify`);
//! - exit code 0 is always `none`, a failure never is, and `unknown` never carries evidence;
//! - evidence is one bounded, non-blank line without escape bytes, and the build API
//!   (`bilge::builds::record::parse`) accepts the record `bilge build` sends with it.

#![no_main]

use bilge::builds::classify::{
    Classification, Classifier, DiskState, Exit, MAX_EVIDENCE, Reason, classify,
};
use bilge::builds::record::{self, mask_secrets};
use bilge::model::BuildResult;
use bilge::store::BuildRecord;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

/// The ways a build can end that the classifier tells apart.
const EXITS: [Exit; 10] = [
    Exit::Code(1),
    Exit::Code(2),
    Exit::Code(137),
    Exit::Code(124),
    Exit::Code(130),
    Exit::Code(143),
    Exit::Signal(9),
    Exit::Signal(15),
    Exit::Signal(2),
    Exit::Code(0),
];

fuzz_target!(|data: &[u8]| {
    let Some((&[e, d, k], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let exit = EXITS[usize::from(e) % EXITS.len()];
    let disk = DiskState {
        space_exhausted: d & 1 != 0,
        inodes_exhausted: d & 2 != 0,
    };
    let k = usize::from(k % 32);
    let (cuts, output) = rest.split_at((2 * k).min(rest.len()));
    let mut at: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (output.len() + 1))
        .collect();
    at.sort_unstable();
    at.dedup();

    let whole = classify(output, exit, disk);
    check(&whole, exit);

    let mut c = Classifier::new();
    let mut from = 0;
    for to in at.into_iter().chain([output.len()]) {
        c.feed(&output[from..to]);
        from = to;
    }
    assert_eq!(
        c.finish(exit, disk),
        whole,
        "fed in the fuzzer's chunks, the verdict differs"
    );

    let mut c = Classifier::new();
    for b in output.chunks(1) {
        c.feed(b);
    }
    assert_eq!(
        c.finish(exit, disk),
        whole,
        "fed a byte at a time, the verdict differs"
    );
});

/// Asserts the promises on one verdict for a build that ended with `exit`.
fn check(v: &Classification, exit: Exit) {
    if exit == Exit::Code(0) {
        assert_eq!(v.reason, Reason::None);
    } else {
        assert_ne!(v.reason, Reason::None, "a failed build classified as none");
    }
    if v.reason == Reason::Unknown || v.reason == Reason::None {
        assert_eq!(v.evidence, None);
    }
    let Some(e) = &v.evidence else { return };
    // MAX_EVIDENCE counts bytes of the original line: each invalid byte becomes U+FFFD (3 bytes
    // in UTF-8), and an ellipsis (3 bytes) may mark each cut end.
    assert!(
        e.len() <= 3 * MAX_EVIDENCE + 6,
        "{} bytes of evidence",
        e.len()
    );
    assert!(!e.trim().is_empty(), "blank evidence");
    assert!(!e.contains(['\n', '\r', '\x1b']), "evidence {e:?}");
    accepted_by_the_build_api(v);
}

/// Asserts that the build API takes the record `bilge build` sends for verdict `v` (its evidence
/// masked, as `bilge build` masks it).
fn accepted_by_the_build_api(v: &Classification) {
    let finished = DateTime::<Utc>::from_timestamp(1_748_779_200, 0).unwrap_or_default();
    let rec = BuildRecord {
        id: None,
        project: "fuzz".into(),
        result: BuildResult::Failure,
        reason: v.reason,
        exit_code: Some(1),
        started_at: finished - chrono::Duration::seconds(10),
        finished_at: finished,
        duration_seconds: 10.0,
        evidence: v.evidence.as_deref().map(mask_secrets),
        host: Some("ci-1".into()),
        attempt: 1,
    };
    let body = serde_json::to_vec(&rec).unwrap_or_default();
    if let Err(e) = record::parse(&body, finished) {
        panic!("the build API refuses the evidence {:?}: {e}", rec.evidence);
    }
}
