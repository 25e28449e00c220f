//! Fuzzes the parsers of what people type in flags and the policy file (`bilge::format`:
//! `parse_duration`, `parse_size`, `parse_free_target`) and the printers that answer them.
//!
//! The input is read twice: as text for the parsers, and as raw numbers (a duration and a byte
//! count) for the printers. Promises checked, besides "no panic":
//! - a parsed duration prints (`format_duration`) as text that parses back to it, cut to whole
//!   seconds from a minute up (the printer's documented precision), and prints the same again;
//! - a parsed size, and any byte count, prints (`human_bytes`, three significant digits) as text
//!   that parses back within half a percent;
//! - a free-space target prints (its `Display`, as `bilge clean` shows it) as text that parses
//!   back: a percentage exactly, a size within half a percent; and a percentage of a filesystem
//!   (`bytes_for`, up to a PiB, where `f64` is exact) never exceeds it.

#![no_main]

use std::time::Duration;

use bilge::format::{
    FreeTarget, format_duration, human_bytes, parse_duration, parse_free_target, parse_size,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(d) = parse_duration(&text) {
        duration_prints_back(d);
    }
    if let Ok(b) = parse_size(&text) {
        size_prints_back(b);
    }
    if let Ok(t) = parse_free_target(&text) {
        target_prints_back(t);
    }
    if let Some(raw) = data.first_chunk::<12>() {
        let (secs, millis) = raw.split_at(8);
        let secs = u64::from_le_bytes(secs.try_into().unwrap_or_default());
        let millis = u32::from_le_bytes(millis.try_into().unwrap_or_default()) % 1000;
        duration_prints_back(Duration::new(secs, millis * 1_000_000));
        size_prints_back(secs);
    }
});

/// Asserts that `d` prints as text that parses back to it (whole seconds from a minute up).
fn duration_prints_back(d: Duration) {
    let text = format_duration(d);
    let back = parse_duration(&text);
    let expected = if d < Duration::from_secs(60) {
        Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
    } else {
        Duration::from_secs(d.as_secs())
    };
    assert_eq!(back, Ok(expected), "{d:?} printed as {text:?}");
    assert_eq!(format_duration(expected), text, "{d:?} prints two ways");
}

/// Asserts that `b` prints as a size that parses back within half a percent.
fn size_prints_back(b: u64) {
    let text = human_bytes(b);
    match parse_size(&text) {
        Ok(back) => assert!(
            (back as f64 - b as f64).abs() <= b as f64 * 0.005 + 0.5,
            "{b} printed as {text:?}, which reads back as {back}"
        ),
        Err(e) => panic!("{b} printed as {text:?}, which does not parse back: {e}"),
    }
}

/// Asserts that `t` prints as text that parses back to it.
fn target_prints_back(t: FreeTarget) {
    let text = t.to_string();
    match (t, parse_free_target(&text)) {
        (FreeTarget::Percent(p), Ok(FreeTarget::Percent(q))) => {
            assert_eq!(p.to_bits(), q.to_bits(), "{p}% printed as {text:?}");
            for size in [0, 1, 4096, 1 << 40, 1 << 50] {
                assert!(
                    t.bytes_for(size) <= size,
                    "{p}% of {size} is more than {size}"
                );
            }
        }
        (FreeTarget::Bytes(b), Ok(FreeTarget::Bytes(_))) => size_prints_back(b),
        (_, back) => panic!("{t:?} printed as {text:?}, which reads back as {back:?}"),
    }
}
