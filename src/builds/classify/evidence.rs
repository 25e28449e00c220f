//! Evidence extraction: the quoted output line that shows a cause, trimmed, cleaned of control
//! characters and cut to at most [`MAX_EVIDENCE`] bytes around the match.

/// Longest evidence, in bytes of the original line (an ellipsis marks each cut end).
pub const MAX_EVIDENCE: usize = 300;

/// Bytes of a long line's head kept in front of a match that lies beyond [`MAX_EVIDENCE`].
pub(super) const EVIDENCE_HEAD: usize = 100;

/// Bytes kept after the end of such a match.
const EVIDENCE_AFTER: usize = 60;

/// The evidence for a match of `len` bytes at `at` in `line`: trimmed, control characters
/// dropped, invalid UTF-8 replaced, and at most [`MAX_EVIDENCE`] bytes of the line: its start,
/// or, when the match lies further on, the first [`EVIDENCE_HEAD`] bytes, `…`, and the bytes
/// leading up to just past the match.
pub(super) fn evidence(line: &[u8], at: usize, len: usize) -> String {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    let mut out = String::with_capacity((end - start).min(MAX_EVIDENCE) + 8);
    if end - start <= MAX_EVIDENCE {
        push_clean(&mut out, &line[start..end]);
        return out;
    }
    let match_end = (at + len).clamp(start, end);
    if match_end - start <= MAX_EVIDENCE {
        let to = char_start(line, start + MAX_EVIDENCE, start);
        push_clean(&mut out, &line[start..to]);
        out.push('…');
        return out;
    }
    let head_end = char_start(line, start + EVIDENCE_HEAD, start);
    push_clean(&mut out, &line[start..head_end]);
    out.push('…');
    let to = char_start(line, (match_end + EVIDENCE_AFTER).min(end), head_end);
    let mut from = to - (MAX_EVIDENCE - EVIDENCE_HEAD);
    while from < to && line[from] & 0xc0 == 0x80 {
        from += 1;
    }
    push_clean(&mut out, &line[from..to]);
    if to < end {
        out.push('…');
    }
    out
}

/// `at`, moved back (not below `floor`) to the start of the UTF-8 character it falls in.
fn char_start(line: &[u8], at: usize, floor: usize) -> usize {
    let mut at = at.min(line.len());
    while at > floor && line.get(at).is_some_and(|b| b & 0xc0 == 0x80) {
        at -= 1;
    }
    at
}

/// Appends `bytes` as text: invalid UTF-8 replaced, tabs as spaces, other controls dropped.
fn push_clean(out: &mut String, bytes: &[u8]) {
    for ch in String::from_utf8_lossy(bytes).chars() {
        if ch == '\t' {
            out.push(' ');
        } else if !ch.is_control() {
            out.push(ch);
        }
    }
}
