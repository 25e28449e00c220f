//! What must hold, beyond a needle's bytes, for its match to count ([`check`]), and the per-line
//! record of the first match per cause ([`Found`]). Pure functions over one line.

use super::needles::{CAUSES, Cause, NEEDLES, Rule};
use super::stream::MAX_LINE;

/// Whether `b` counts as part of a word for [`Rule::Word`] and friends.
const fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The matches in one line, per cause the first one: the one that starts earliest and, of
/// two at the same place, the later in [`NEEDLES`] (the order the scanner has always
/// reported them in; it decides where a long line's evidence is cut).
#[derive(Debug)]
pub(super) struct Found {
    /// Per [`Cause`], the first match so far as `at << 8 | (255 - needle)` (smaller is
    /// first), or `u32::MAX` for none.
    pub(super) first: [u32; CAUSES],
    /// Whether any cause has a match.
    pub(super) any: bool,
}

/// Noting matches in any order and reading back the first per cause.
impl Found {
    /// No matches yet.
    pub(super) fn new() -> Self {
        const {
            assert!(
                NEEDLES.len() <= 255 && MAX_LINE < 1 << 24,
                "match keys must fit in a u32"
            );
        }
        Found {
            first: [u32::MAX; CAUSES],
            any: false,
        }
    }

    /// Notes a match of needle `k` at `at` that shows `cause`.
    pub(super) fn note(&mut self, cause: Cause, at: usize, k: usize) {
        let key = (at as u32) << 8 | (255 - k as u32);
        let first = &mut self.first[cause as usize];
        *first = (*first).min(key);
        self.any = true;
    }

    /// The position and needle of a key from [`Found::first`], if it is a match.
    pub(super) fn unpack(key: u32) -> Option<(usize, usize)> {
        (key != u32::MAX).then(|| ((key >> 8) as usize, 255 - (key & 0xff) as usize))
    }
}

/// Checks needle `k` at `line[at..]` and notes its cause if it really matches there.
pub(super) fn check(line: &[u8], at: usize, k: usize, found: &mut Found) {
    let Some(needle) = NEEDLES.get(k) else {
        return;
    };
    let end = at + needle.pat.len();
    let Some(matched) = line.get(at..end) else {
        return;
    };
    if !matched.eq_ignore_ascii_case(needle.pat) {
        return;
    }
    let word_before = at > 0 && is_word_byte(line[at - 1]);
    let word_after = line.get(end).is_some_and(|&b| is_word_byte(b));
    let cause = match needle.rule {
        Rule::Plain => Some(needle.cause),
        Rule::Word => (!word_before && !word_after).then_some(needle.cause),
        Rule::Errno => (!word_before
            && !word_after
            && matched
                .iter()
                .zip(needle.pat)
                .all(|(f, p)| *f == p.to_ascii_uppercase()))
        .then_some(needle.cause),
        Rule::Io => {
            if word_before && needle.pat == b"io error" {
                None
            } else if contains(line, b"getaddrinfo") || contains(line, b"ignoring http") {
                Some(Cause::Network)
            } else {
                Some(Cause::IoError)
            }
        }
        Rule::Eio => {
            (matched == b"EIO" && !word_before && !word_after && !contains(line, b"getaddrinfo"))
                .then_some(Cause::WeakIoError)
        }
        Rule::Killed => (matched == b"Killed"
            && !word_after
            && (killed_prefix_ok(&line[..at]) || names_a_tool_error(&line[..at])))
        .then_some(Cause::Oom),
        Rule::ExitCode => match exit_code_after(&line[end..]) {
            Some(0) => None,
            Some(137) => {
                found.note(Cause::Oom, at, k);
                Some(Cause::CommandFailed)
            }
            Some(_) => Some(Cause::CommandFailed),
            // "exit code" and "exit status" alone are too common to mean a failure without a
            // number after them (`ld returned 1 exit status` has it before).
            None => (!matches!(needle.pat, b"exit code" | b"exit status"))
                .then_some(Cause::CommandFailed),
        },
        Rule::Deadline => {
            let request = [
                &b"dial tcp"[..],
                b"failed to do request",
                b"http://",
                b"https://",
                b"lookup ",
            ];
            if request.iter().any(|r| contains(line, r)) {
                Some(Cause::Network)
            } else {
                Some(Cause::Timeout)
            }
        }
        Rule::NotFound => contains(line, b"not found").then_some(needle.cause),
        Rule::Parse => contains(line, b"parse").then_some(needle.cause),
        Rule::Denied => {
            (!word_before && !last_word_is(&line[..at], b"permission")).then_some(needle.cause)
        }
        Rule::Registry => {
            let registry = [
                &b"unexpected status"[..],
                b"oauth",
                b"authorize",
                b"manifest",
                b"/v2/",
                b"blobs",
                b"push",
                b"pull",
                b"registry",
            ];
            registry
                .iter()
                .any(|r| contains(line, r))
                .then_some(needle.cause)
        }
        Rule::TimedOut => {
            let transfer = [
                &b"connect"[..],
                b"errno",
                b"dial ",
                b"fetch",
                b"download",
                b"http://",
                b"https://",
                b" port ",
            ];
            if transfer.iter().any(|t| contains(line, t)) {
                Some(Cause::Network)
            } else {
                Some(Cause::Timeout)
            }
        }
        Rule::ShNotFound => contains(&line[..at], b"sh: ").then_some(needle.cause),
    };
    if let Some(cause) = cause {
        found.note(cause, at, k);
    }
}

/// Whether `hay` contains `needle` (lower-case), ignoring ASCII case.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether what precedes `Killed` makes it the kernel's kill notice: nothing, or a last word
/// made only of digits, `.`, `#` and `:` (a PID, or a BuildKit `#12 34.5` step prefix).
fn killed_prefix_ok(before: &[u8]) -> bool {
    if before.last().is_some_and(|b| !b.is_ascii_whitespace()) {
        return false;
    }
    match before
        .split(|b| b.is_ascii_whitespace())
        .rfind(|w| !w.is_empty())
    {
        None => true,
        Some(word) => word
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b'.' || b == b'#' || b == b':'),
    }
}

/// Whether the text before a `Killed` holds a tool's error label: `error:` (`g++: internal
/// compiler error: Killed`, `collect2: fatal error: ld terminated with signal 9 [Killed]`) or
/// make's `: *** ` (`make: *** [all] Killed`).
fn names_a_tool_error(before: &[u8]) -> bool {
    contains(before, b"error:") || contains(before, b": *** ")
}

/// Whether the last word of `before` (letters only, after any spaces) is `word` (lower-case),
/// ignoring ASCII case.
fn last_word_is(before: &[u8], word: &[u8]) -> bool {
    let trimmed = before.trim_ascii_end();
    let start = trimmed
        .iter()
        .rposition(|b| !b.is_ascii_alphabetic())
        .map_or(0, |p| p + 1);
    trimmed[start..].eq_ignore_ascii_case(word)
}

/// The exit code stated after a generic failure phrase: the number right after it
/// (`exit code: 1`, `non-zero code: 2`), else the number after the last `code` or `error`
/// further on (`... did not complete successfully: exit code: 1`, make's `] Error 2`).
fn exit_code_after(rest: &[u8]) -> Option<u32> {
    if let Some(code) = number_at(rest) {
        return Some(code);
    }
    let last = |key: &[u8]| {
        rest.windows(key.len())
            .rposition(|w| w.eq_ignore_ascii_case(key))
            .map(|p| p + key.len())
    };
    let after = last(b"code").max(last(b"error"))?;
    number_at(&rest[after..])
}

/// The decimal number at the start of `s`, after any spaces, `:` or `=`.
fn number_at(s: &[u8]) -> Option<u32> {
    let skip = s
        .iter()
        .position(|b| !(b.is_ascii_whitespace() || *b == b':' || *b == b'='))?;
    let tail = &s[skip..];
    let len = tail
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
        .min(9);
    if len == 0 {
        return None;
    }
    Some(
        tail[..len]
            .iter()
            .fold(0, |acc, &b| acc * 10 + u32::from(b - b'0')),
    )
}
