//! Line streaming: the [`Classifier`] that is fed a build's output in chunks of any size, strips
//! ANSI escapes, cuts lines at `\n` or `\r`, keeps at most [`MAX_LINE`] bytes of the current
//! line, and hands each line to the scan; the first evidence per cause is all it keeps, except
//! for a tool's error lines, where it keeps the first line of the last run of them and how many
//! lines followed it (a compiler's error explains a failure only when it ends the output).

use super::decide::decide;
use super::evidence::evidence;
use super::index::scan;
use super::needles::{CAUSES, Cause, NEEDLES};
use super::rules::Found;
use super::verdict::{Classification, DiskState, Exit};

/// Longest line, in bytes, that is kept for matching; the rest of a longer line is read and dropped.
pub const MAX_LINE: usize = 8 * 1024;

/// How many non-empty lines may follow a tool's last error line for it still to explain the
/// failure: room for BuildKit's step summary and Dockerfile excerpt, or make's unwinding.
const TOOL_TAIL: u64 = 25;

/// Where the ANSI escape parser is between bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Ansi {
    /// Ordinary text.
    #[default]
    Text,
    /// After ESC.
    Esc,
    /// Inside an ESC sequence's intermediate bytes (e.g. `ESC ( B`).
    EscIntermediate,
    /// Inside a CSI sequence (`ESC [` ... final byte).
    Csi,
    /// Inside an OSC string (`ESC ]` ... BEL or ST).
    Osc,
    /// After ESC inside an OSC string (maybe the ST terminator).
    OscEsc,
}

/// The streaming classifier: feed it output in chunks of any size, then finish it.
#[derive(Debug, Default)]
pub struct Classifier {
    /// The current line (ANSI stripped) when it could not be matched straight from a chunk.
    pub(super) line: Vec<u8>,
    /// Whether the current line was longer than [`MAX_LINE`] and lost its tail.
    truncated: bool,
    /// ANSI parser state carried across chunks.
    ansi: Ansi,
    /// Per [`Cause`](super::needles::Cause), the evidence of the first line that showed it.
    pub(super) hits: [Option<String>; CAUSES],
    /// Non-empty lines scanned so far.
    lines: u64,
    /// The number (counted as in `lines`) of the last line that showed a tool's error.
    tool_line: u64,
}

/// Feeding output in and getting the verdict out.
impl Classifier {
    /// A classifier that has seen no output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes the next piece of output; chunk boundaries may fall anywhere, even inside a line
    /// or an escape sequence.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.ansi != Ansi::Text {
                rest = self.feed_escape(rest);
                continue;
            }
            match find_special(rest) {
                Some(at) => {
                    let text = &rest[..at];
                    let special = rest[at];
                    if special == 0x1b {
                        self.push_text(text);
                        self.ansi = Ansi::Esc;
                    } else if self.line.is_empty() && !self.truncated {
                        // The whole line is in this chunk and has no escapes: match it in place.
                        self.scan_line(text);
                    } else {
                        self.push_text(text);
                        self.end_line();
                    }
                    rest = &rest[at + 1..];
                }
                None => {
                    self.push_text(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Ends the output and decides why the build ended the way it did.
    pub fn finish(mut self, exit: Exit, disk: DiskState) -> Classification {
        self.end_line();
        if self.lines - self.tool_line > TOOL_TAIL {
            // The tool's errors were followed by more output: something else ended the build.
            self.hits[Cause::ToolError as usize] = None;
        }
        decide(self.hits, exit, disk)
    }

    /// Consumes bytes of an escape sequence; returns what is left once it ends (or the chunk does).
    fn feed_escape<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                // A line end always ends the line, even inside a broken escape sequence.
                self.ansi = Ansi::Text;
                self.end_line();
                return &chunk[i + 1..];
            }
            self.ansi = match (self.ansi, b) {
                (Ansi::Esc, b'[') => Ansi::Csi,
                (Ansi::Esc, b']') => Ansi::Osc,
                (Ansi::Esc | Ansi::EscIntermediate, 0x20..=0x2f) => Ansi::EscIntermediate,
                (Ansi::Esc | Ansi::EscIntermediate, _) => Ansi::Text,
                (Ansi::Csi, 0x40..=0x7e) => Ansi::Text,
                (Ansi::Csi, _) => Ansi::Csi,
                (Ansi::Osc, 0x07) => Ansi::Text,
                (Ansi::Osc | Ansi::OscEsc, 0x1b) => Ansi::OscEsc,
                (Ansi::OscEsc, b'\\') => Ansi::Text,
                (Ansi::Osc | Ansi::OscEsc, _) => Ansi::Osc,
                (Ansi::Text, _) => Ansi::Text,
            };
            if self.ansi == Ansi::Text {
                return &chunk[i + 1..];
            }
        }
        &[]
    }

    /// Appends text to the current line, keeping at most [`MAX_LINE`] bytes.
    fn push_text(&mut self, text: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        if text.len() > room {
            self.truncated = true;
        }
        if room > 0 && !text.is_empty() {
            if self.line.capacity() == 0 {
                self.line.reserve_exact(MAX_LINE);
            }
            self.line.extend_from_slice(&text[..text.len().min(room)]);
        }
    }

    /// Matches the buffered line, if any, and starts a new one.
    fn end_line(&mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.scan_line(&line);
            self.line = line;
            self.line.clear();
        }
        self.truncated = false;
    }

    /// Matches one line (without its terminator) against every needle.
    pub(super) fn scan_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        self.lines += 1;
        let line = &line[..line.len().min(MAX_LINE)];
        let mut found = Found::new();
        scan(line, &mut found);
        if found.any {
            for (cause, key) in found.first.iter().enumerate() {
                let Some((at, k)) = Found::unpack(*key) else {
                    continue;
                };
                let slot = &mut self.hits[cause];
                if cause == Cause::ToolError as usize {
                    // A run of tool errors after a stretch of other output starts afresh.
                    if slot.is_none() || self.lines - self.tool_line > TOOL_TAIL {
                        *slot = Some(evidence(line, at, NEEDLES[k].pat.len()));
                    }
                    self.tool_line = self.lines;
                } else if slot.is_none() {
                    *slot = Some(evidence(line, at, NEEDLES[k].pat.len()));
                }
            }
        }
    }
}

/// The first byte in `s` that is `\n`, `\r` or ESC.
fn find_special(s: &[u8]) -> Option<usize> {
    memchr::memchr3(b'\n', b'\r', 0x1b, s)
}
