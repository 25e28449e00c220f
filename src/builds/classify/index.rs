//! The scan index: finds every needle of the table in one line without testing each byte.
//! Long needles through a compile-time hash index of 4-byte windows sampled every [`STRIDE`]
//! bytes (with a bloom filter in front), short ones through `memchr` on a byte their rule makes
//! exact. [`scan`] reports to [`Found`] exactly what testing every needle at every byte would.

use super::needles::{NEEDLES, Needle, Rule};
use super::rules::{Found, check};

/// Bytes in a window: the scanner hashes four bytes, one `u32`, at a time.
const GRAM: usize = 4;

/// Distance between the windows the scanner tests: only those starting at a multiple of it.
pub(super) const STRIDE: usize = 5;

/// Shortest needle the window scan finds. A needle this long has `STRIDE` window starts
/// within it, so one of them is tested wherever the needle lies in the line.
const LONG: usize = GRAM + STRIDE - 1;

/// Bits of the window hash that pick a slot, so the slot table has `1 << HASH_BITS` entries.
const HASH_BITS: u32 = 12;

/// Number of slots in the window index.
const SLOTS: usize = 1 << HASH_BITS;

/// ASCII case fold of four bytes at once: sets bit 5 of every byte (exact for letters).
const FOLD: u32 = 0x2020_2020;

/// Bits of the hash that select a bit in [`BLOOM`] (the slot is its top [`HASH_BITS`]).
const BLOOM_BITS: u32 = 16;

/// The hash of a folded 4-byte window; its top bits pick the bloom bit and the slot.
const fn hash_of(folded: u32) -> u32 {
    folded.wrapping_mul(0x9E37_79B1)
}

/// Maps a folded 4-byte window to its slot.
const fn slot_of(folded: u32) -> usize {
    (hash_of(folded) >> (32 - HASH_BITS)) as usize
}

/// Maps a folded 4-byte window to its bit in [`BLOOM`].
const fn bloom_bit_of(folded: u32) -> usize {
    (hash_of(folded) >> (32 - BLOOM_BITS)) as usize
}

/// One bit per [`BLOOM_BITS`]-bit hash: set when some indexed window of a needle hashes there.
/// Testing it is all most windows of a line cost.
static BLOOM: [u64; (1 << BLOOM_BITS) / 64] = build_bloom();

/// Builds [`BLOOM`] from [`INDEX`]'s grams at compile time.
const fn build_bloom() -> [u64; (1 << BLOOM_BITS) / 64] {
    let index = build_index();
    let mut bits = [0u64; (1 << BLOOM_BITS) / 64];
    let mut e = 0;
    while e < ENTRIES {
        let bit = bloom_bit_of(index.gram[e]);
        bits[bit / 64] |= 1 << (bit % 64);
        e += 1;
    }
    bits
}

/// Whether the folded 4-byte window may be one of a needle's indexed windows, by [`BLOOM`].
#[inline(always)]
fn may_hold_needle(folded: u32) -> bool {
    let bit = bloom_bit_of(folded);
    BLOOM[bit / 64] & (1 << (bit % 64)) != 0
}

/// The folded little-endian word of `p[at..at + 4]`.
const fn gram_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]) | FOLD
}

/// The folded little-endian word of the (up to) four bytes of `line` at `at`; missing bytes
/// past the end of the line count as zero before folding.
#[inline(always)]
fn folded_at(line: &[u8], at: usize) -> u32 {
    if let Some(bytes) = line.get(at..).and_then(<[u8]>::first_chunk::<GRAM>) {
        return u32::from_le_bytes(*bytes) | FOLD;
    }
    let mut bytes = [0u8; GRAM];
    for (to, from) in bytes.iter_mut().zip(line.get(at..).unwrap_or_default()) {
        *to = *from;
    }
    u32::from_le_bytes(bytes) | FOLD
}

/// How common a byte is in build output, roughly; [`build_index`] indexes each needle by
/// its least common windows, so that ordinary text hits the index less often.
const fn commonness(b: u8) -> u32 {
    match b.to_ascii_lowercase() {
        b' ' => 10,
        b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' => 6,
        b'-' | b'.' | b'/' | b':' | b'_' | b'0'..=b'9' => 5,
        b'l' | b'd' | b'c' | b'u' | b'h' | b'm' | b'p' | b'f' | b'g' => 4,
        b'a'..=b'z' => 2,
        _ => 1,
    }
}

/// [`commonness`] of the window `p[at..at + 4]`.
const fn gram_commonness(p: &[u8], at: usize) -> u32 {
    commonness(p[at]) + commonness(p[at + 1]) + commonness(p[at + 2]) + commonness(p[at + 3])
}

/// How many index entries the needles need: [`STRIDE`] per needle of [`LONG`] bytes or more.
const fn entry_count() -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < NEEDLES.len() {
        if NEEDLES[i].pat.len() >= LONG {
            count += STRIDE;
        }
        i += 1;
    }
    count
}

/// Number of entries in the window index.
const ENTRIES: usize = entry_count();

/// A hash index from folded 4-byte windows of the long needles to where they lie in them.
///
/// Each needle of at least [`LONG`] bytes has one entry per residue of its window offsets
/// modulo [`STRIDE`] (the least common window among those offsets). Wherever the needle
/// starts in a line, exactly one residue puts that window at a multiple of [`STRIDE`],
/// where the scanner tests it.
#[derive(Debug)]
struct Index {
    /// Per slot, 1 + the first entry in it, or 0 when empty.
    head: [u16; SLOTS],
    /// Per entry, 1 + the next entry in the same slot, or 0.
    next: [u16; ENTRIES],
    /// Per entry, the folded window, to reject hash collisions with one compare.
    gram: [u32; ENTRIES],
    /// Per entry, the index into [`NEEDLES`].
    needle: [u16; ENTRIES],
    /// Per entry, where the window starts in the needle.
    offset: [u16; ENTRIES],
    /// Per entry, the needle's own first window (folded), to reject most near misses
    /// before a full check.
    lead: [u32; ENTRIES],
}

/// Builds the [`Index`] at compile time.
const fn build_index() -> Index {
    assert!(
        ENTRIES < u16::MAX as usize,
        "index entries must fit in a u16"
    );
    let mut index = Index {
        head: [0; SLOTS],
        next: [0; ENTRIES],
        gram: [0; ENTRIES],
        needle: [0; ENTRIES],
        offset: [0; ENTRIES],
        lead: [0; ENTRIES],
    };
    let mut e = 0;
    let mut i = 0;
    while i < NEEDLES.len() {
        let pat = NEEDLES[i].pat;
        let mut residue = 0;
        while pat.len() >= LONG && residue < STRIDE {
            let mut best = residue;
            let mut at = residue + STRIDE;
            while at + GRAM <= pat.len() {
                if gram_commonness(pat, at) < gram_commonness(pat, best) {
                    best = at;
                }
                at += STRIDE;
            }
            let g = gram_at(pat, best);
            let s = slot_of(g);
            index.gram[e] = g;
            index.needle[e] = i as u16;
            index.offset[e] = best as u16;
            index.lead[e] = gram_at(pat, 0);
            index.next[e] = index.head[s];
            index.head[s] = (e + 1) as u16;
            e += 1;
            residue += 1;
        }
        i += 1;
    }
    assert!(e == ENTRIES, "entry count mismatch");
    index
}

/// The window index over the long [`NEEDLES`], built at compile time.
static INDEX: Index = build_index();

/// The bytes the needles shorter than [`LONG`] are found by, with `memchr3`: each short
/// needle has one of them, exactly, at its [`Short::anchor`] in every match.
///
/// Each short needle's rule wants an exact case (`EIO`, `ENOSPC` and the other errno codes
/// upper case, `Killed`) or it has no letter to fold (`: *** `), so its bytes in a match are
/// fixed; these three are rarer in ordinary output than, say, `:`.
const ANCHORS: [u8; 3] = [b'E', b'K', b'*'];

/// The byte at `j` of every match of `needle`, if its rule fixes it: upper case in the errno
/// codes, `Killed` as written, any byte that is not a letter as it is.
const fn exact_byte(needle: &Needle, j: usize) -> Option<u8> {
    let b = needle.pat[j];
    match needle.rule {
        Rule::Errno | Rule::Eio => Some(b.to_ascii_uppercase()),
        Rule::Killed if j == 0 => Some(b.to_ascii_uppercase()),
        Rule::Killed => Some(b),
        _ if !b.is_ascii_alphabetic() => Some(b),
        _ => None,
    }
}

/// How many needles are shorter than [`LONG`].
const fn short_count() -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < NEEDLES.len() {
        if NEEDLES[i].pat.len() < LONG {
            count += 1;
        }
        i += 1;
    }
    count
}

/// A needle shorter than [`LONG`], as the scanner looks for it.
#[derive(Debug, Clone, Copy)]
struct Short {
    /// The byte of [`ANCHORS`] that every match has at [`Short::anchor`].
    byte: u8,
    /// Where that byte is in the needle.
    anchor: u8,
    /// The folded first four bytes of the needle (fewer for a shorter one), to compare with
    /// the folded window at a candidate under [`Short::mask`] before a full check.
    lead: u32,
    /// The bits of [`Short::lead`] that the needle fills.
    mask: u32,
    /// The index into [`NEEDLES`].
    needle: u16,
}

/// The needles shorter than [`LONG`].
static SHORT: [Short; short_count()] = build_short();

/// Builds [`SHORT`] at compile time, checking that every short needle has an anchor.
const fn build_short() -> [Short; short_count()] {
    let mut short = [Short {
        byte: 0,
        anchor: 0,
        lead: 0,
        mask: 0,
        needle: 0,
    }; short_count()];
    let mut n = 0;
    let mut i = 0;
    while i < NEEDLES.len() {
        let needle = &NEEDLES[i];
        let pat = needle.pat;
        if pat.len() < LONG {
            if let Rule::Killed = needle.rule {
                assert!(
                    pat.len() == 6 && pat[0] == b'k' && pat[1] == b'i' && pat[5] == b'd',
                    "Rule::Killed matches exactly `Killed`"
                );
            }
            let mut anchor = 0;
            let mut byte = None;
            while byte.is_none() && anchor < pat.len() {
                match exact_byte(needle, anchor) {
                    Some(b) if b == ANCHORS[0] || b == ANCHORS[1] || b == ANCHORS[2] => {
                        byte = Some(b);
                    }
                    _ => anchor += 1,
                }
            }
            let Some(byte) = byte else {
                panic!("a needle shorter than LONG needs an exact byte from ANCHORS");
            };
            let len = if pat.len() < GRAM { pat.len() } else { GRAM };
            let mask = u32::MAX >> (8 * (GRAM - len));
            let mut lead = 0u32;
            let mut b = 0;
            while b < len {
                lead |= (pat[b] as u32) << (8 * b);
                b += 1;
            }
            short[n] = Short {
                byte,
                anchor: anchor as u8,
                lead: (lead | FOLD) & mask,
                mask,
                needle: i as u16,
            };
            n += 1;
        }
        i += 1;
    }
    assert!(short_count() == n);
    short
}

/// Checks every needle that has `folded` as an indexed window at `at` in `line`.
#[inline(never)]
fn probe(line: &[u8], at: usize, folded: u32, found: &mut Found) {
    let mut entry = INDEX.head[slot_of(folded)];
    while entry != 0 {
        let e = usize::from(entry - 1);
        if INDEX.gram[e] == folded {
            if let Some(start) = at.checked_sub(usize::from(INDEX.offset[e])) {
                if folded_at(line, start) == INDEX.lead[e] {
                    check(line, start, usize::from(INDEX.needle[e]), found);
                }
            }
        }
        entry = INDEX.next[e];
    }
}

/// Notes in `found` every needle match in `line` whose rule holds.
pub(super) fn scan(line: &[u8], found: &mut Found) {
    // Long needles: the folded window at every multiple of STRIDE, through the index.
    let mut windows = line.chunks_exact(STRIDE);
    for (i, window) in (&mut windows).enumerate() {
        if let Some(bytes) = window.first_chunk::<GRAM>() {
            let folded = u32::from_le_bytes(*bytes) | FOLD;
            if may_hold_needle(folded) {
                probe(line, i * STRIDE, folded, found);
            }
        }
    }
    let rest = windows.remainder();
    if let Some(bytes) = rest.first_chunk::<GRAM>() {
        let folded = u32::from_le_bytes(*bytes) | FOLD;
        if may_hold_needle(folded) {
            probe(line, line.len() - rest.len(), folded, found);
        }
    }
    // Short needles: where the exact byte each of them has is.
    for at in memchr::memchr3_iter(ANCHORS[0], ANCHORS[1], ANCHORS[2], line) {
        for short in &SHORT {
            if short.byte != line[at] {
                continue;
            }
            if let Some(start) = at.checked_sub(usize::from(short.anchor)) {
                if folded_at(line, start) & short.mask == short.lead {
                    check(line, start, usize::from(short.needle), found);
                }
            }
        }
    }
}
