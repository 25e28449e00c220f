//! The scan: every needle is indexed, and the fast scanner finds exactly what a naive
//! every-needle-at-every-byte reference finds, on the corpus, at every offset and on random soup.

use super::super::evidence::evidence;
use super::super::index::STRIDE;
use super::super::needles::{CAUSES, NEEDLES, Needle, Rule};
use super::super::rules::{Found, check};
use super::super::{Classifier, MAX_LINE};
use super::corpus::corpus;

#[test]
fn every_needle_is_lower_case_and_found_by_the_index() {
    for needle in NEEDLES {
        assert!(
            !needle.pat.iter().any(u8::is_ascii_uppercase),
            "{:?}",
            String::from_utf8_lossy(needle.pat)
        );
        assert!(needle.pat.len() >= 3);
    }
    // each needle, standing alone on a line, shows its cause (rules permitting)
    let plain: Vec<_> = NEEDLES
        .iter()
        .filter(|n| n.rule == Rule::Plain || n.rule == Rule::Word)
        .collect();
    for needle in plain {
        let mut c = Classifier::new();
        let mut line = b"> ".to_vec();
        line.extend_from_slice(needle.pat);
        line.extend_from_slice(b" <\n");
        c.feed(&line);
        assert!(
            c.hits[needle.cause as usize].is_some(),
            "{:?} was not found",
            String::from_utf8_lossy(needle.pat)
        );
    }
}

/// What one line leaves in a fresh classifier's per-cause evidence: (cause index, evidence).
type LineVerdict = Vec<(usize, String)>;

/// The causes and evidence that checking needle `k` at `at` alone records.
fn check_alone(line: &[u8], at: usize, k: usize) -> LineVerdict {
    let mut found = Found::new();
    check(line, at, k, &mut found);
    found
        .first
        .iter()
        .enumerate()
        .filter_map(|(cause, &key)| Found::unpack(key).map(|m| (cause, m)))
        .map(|(cause, (at, k))| (cause, evidence(line, at, NEEDLES[k].pat.len())))
        .collect()
}

/// The reference scanner: every needle at every position of the (capped) line, positions
/// left to right and, at one position, needles from last to first (the order the bucketed
/// prefix index of the first scanner visited them in); the first evidence per cause wins.
fn naive(line: &[u8]) -> LineVerdict {
    // Needles by their first byte, last to first (only a shortcut: `check` compares the
    // whole needle ignoring case anyway).
    static BY_FIRST: std::sync::LazyLock<Vec<Vec<usize>>> = std::sync::LazyLock::new(|| {
        let mut by_first = vec![Vec::new(); 256];
        for k in (0..NEEDLES.len()).rev() {
            by_first[usize::from(NEEDLES[k].pat[0].to_ascii_lowercase())].push(k);
        }
        by_first
    });
    let line = &line[..line.len().min(MAX_LINE)];
    let mut slots: [Option<String>; CAUSES] = Default::default();
    for at in 0..line.len() {
        for &k in &BY_FIRST[usize::from(line[at].to_ascii_lowercase())] {
            for (cause, ev) in check_alone(line, at, k) {
                if slots[cause].is_none() {
                    slots[cause] = Some(ev);
                }
            }
        }
    }
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(cause, ev)| ev.map(|ev| (cause, ev)))
        .collect()
}

/// What the real scanner records for one line.
fn fast(line: &[u8]) -> LineVerdict {
    let mut c = Classifier::new();
    c.scan_line(line);
    c.hits
        .iter()
        .enumerate()
        .filter_map(|(cause, ev)| ev.clone().map(|ev| (cause, ev)))
        .collect()
}

/// Compares the real scanner with the reference on every line; returns the mismatches.
fn differences<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut bad = Vec::new();
    for line in lines {
        count += 1;
        let (want, got) = (naive(line), fast(line));
        if want != got && bad.len() < 20 {
            bad.push(format!(
                "{:?}: reference {want:?}, scanner {got:?}",
                String::from_utf8_lossy(line)
            ));
        }
    }
    (count, bad)
}

/// The scanner finds exactly what the reference finds on every line of the corpus.
#[test]
fn scanner_matches_the_reference_on_every_corpus_line() {
    let snippets = corpus();
    let lines: Vec<&[u8]> = snippets
        .iter()
        .flat_map(|s| s.body.split(|&b| b == b'\n' || b == b'\r'))
        .collect();
    let (count, bad) = differences(lines);
    assert!(count > 500, "only {count} lines");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `pat` with its letters upper-cased (`upper`), or every other letter upper-cased.
fn recase(pat: &[u8], variant: usize) -> Vec<u8> {
    pat.iter()
        .enumerate()
        .map(|(i, b)| match variant {
            0 => *b,
            1 => b.to_ascii_uppercase(),
            2 if i % 2 == 0 => b.to_ascii_uppercase(),
            _ => *b,
        })
        .collect()
}

/// The case the short exact-case rules want: `EIO`, `ENOSPC`, `Killed`.
fn rule_case(needle: &Needle) -> Vec<u8> {
    match needle.rule {
        Rule::Errno | Rule::Eio => needle.pat.to_ascii_uppercase(),
        Rule::Killed => b"Killed".to_vec(),
        _ => needle.pat.to_vec(),
    }
}

/// The scanner agrees with the reference for every needle at offsets 0 to `STRIDE + 1`, in several
/// fillers, at the start, middle and end of the line, in several cases.
#[test]
fn scanner_matches_the_reference_for_every_needle_at_every_offset() {
    let fillers: [&[u8]; 6] = [
        b"abcdefghijklmnopqrstuvwxyz",
        b"                          ",
        b"#:./-_()[]*,;=+'\"#:./-_()[",
        b"01234567890123456789012345",
        b"#12 3.45 #12 3.45 #12 3.45",
        b"QrStUvWxYz QrStUvWxYz QrSt",
    ];
    let tails: [&[u8]; 5] = [b"", b" ", b"x", b": 137 done", b" exit code 2 not found"];
    let mut lines = Vec::new();
    for needle in NEEDLES {
        let forms = [
            recase(needle.pat, 0),
            recase(needle.pat, 1),
            recase(needle.pat, 2),
            rule_case(needle),
        ];
        for form in &forms {
            for filler in fillers {
                // Every residue modulo the scan's stride, at the line's start and past it.
                for offset in 0..=STRIDE + 1 {
                    for tail in tails {
                        let mut line = filler[..offset].to_vec();
                        line.extend_from_slice(form);
                        line.extend_from_slice(tail);
                        lines.push(line);
                    }
                }
            }
        }
    }
    let (count, bad) = differences(lines.iter().map(Vec::as_slice));
    assert!(count > 50_000, "only {count} lines");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The scanner agrees with the reference on pseudo-random lines made of needles, pieces
/// of needles and filler, some longer than the evidence cap and some than [`MAX_LINE`].
#[test]
fn scanner_matches_the_reference_on_random_needle_soup() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let fillers: [&[u8]; 14] = [
        b" ",
        b"  ",
        b":",
        b"#12 ",
        b"3.45 ",
        b"137",
        b" 0",
        b"\t",
        b"https://x/",
        b"getaddrinfo ",
        b"not found",
        b"parse",
        "é".as_bytes(),
        b"_",
    ];
    let mut lines = Vec::new();
    for _ in 0..4000 {
        let mut line = Vec::new();
        if next(8) == 0 {
            line.resize(next(400), b'x');
        }
        if next(60) == 0 {
            line.resize(MAX_LINE - next(40), b'y');
        }
        for _ in 0..next(12) {
            let needle = &NEEDLES[next(NEEDLES.len())];
            match next(6) {
                0 | 1 => line.extend_from_slice(&recase(needle.pat, next(3))),
                2 => line.extend_from_slice(&rule_case(needle)),
                3 => {
                    let from = next(needle.pat.len());
                    let to = from + next(needle.pat.len() - from + 1);
                    line.extend_from_slice(&recase(&needle.pat[from..to], next(3)));
                }
                _ => line.extend_from_slice(fillers[next(fillers.len())]),
            }
        }
        lines.push(line);
    }
    let (count, bad) = differences(lines.iter().map(Vec::as_slice));
    assert_eq!(count, 4000);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
