//! The real-world corpus: every snippet under `tests/fixtures/build-failures` gets its reason
//! and evidence, whole and fed in small chunks.

use super::super::{Classifier, DiskState, Exit, Reason, classify};

/// One snippet of the real-world corpus.
#[derive(Debug)]
pub(super) struct Snippet {
    /// The file it came from.
    name: String,
    /// Where the log was published.
    source: String,
    /// How the command ended.
    exit: Exit,
    /// The disk state to pretend.
    disk: DiskState,
    /// The reason it must get.
    expect: Reason,
    /// A substring the evidence must contain, or `None` for no evidence.
    evidence: Option<String>,
    /// The raw log excerpt.
    pub(super) body: Vec<u8>,
}

/// Reads every snippet under `tests/fixtures/build-failures`.
pub(super) fn corpus() -> Vec<Snippet> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/build-failures");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the corpus directory exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files.into_iter().map(|p| parse_snippet(&p)).collect()
}

/// Parses one snippet file: `# key: value` header lines, a `---` line, then the log.
fn parse_snippet(path: &std::path::Path) -> Snippet {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let raw = std::fs::read(path).unwrap();
    let split = raw
        .windows(5)
        .position(|w| w == b"\n---\n")
        .unwrap_or_else(|| panic!("{name}: no '---' line"));
    let header = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 5..].to_vec();
    let (mut source, mut exit, mut disk, mut expect, mut evidence) =
        (None, None, DiskState::default(), None, None);
    for line in header.lines() {
        let (key, value) = line
            .strip_prefix("# ")
            .and_then(|l| l.split_once(':'))
            .unwrap_or_else(|| panic!("{name}: bad header line {line:?}"));
        let value = value.trim();
        match key {
            "source" => source = Some(value.to_owned()),
            "exit" => {
                exit = Some(match value.strip_prefix("signal:") {
                    Some(sig) => Exit::Signal(sig.trim().parse().unwrap()),
                    None => Exit::Code(value.parse().unwrap()),
                })
            }
            "disk" => {
                disk = match value {
                    "none" => DiskState::default(),
                    "space" => DiskState {
                        space_exhausted: true,
                        inodes_exhausted: false,
                    },
                    "inodes" => DiskState {
                        space_exhausted: false,
                        inodes_exhausted: true,
                    },
                    other => panic!("{name}: bad disk {other:?}"),
                }
            }
            "expect" => expect = Some(value.parse::<Reason>().unwrap()),
            "evidence" => evidence = (value != "-").then(|| value.to_owned()),
            "note" => {}
            other => panic!("{name}: unknown header key {other:?}"),
        }
    }
    Snippet {
        source: source.unwrap_or_else(|| panic!("{name}: no source")),
        exit: exit.unwrap_or_else(|| panic!("{name}: no exit")),
        expect: expect.unwrap_or_else(|| panic!("{name}: no expect")),
        name,
        disk,
        evidence,
        body,
    }
}

/// Every corpus snippet gets its reason and evidence however it is chunked.
#[test]
fn every_corpus_snippet_gets_its_reason_and_evidence_however_it_is_chunked() {
    let snippets = corpus();
    let mut failures = Vec::new();
    for s in &snippets {
        assert!(
            s.source.starts_with("https://"),
            "{}: source must be a URL",
            s.name
        );
        let whole = classify(&s.body, s.exit, s.disk);
        let reason_ok = whole.reason == s.expect;
        let evidence_ok = match (&s.evidence, &whole.evidence) {
            (None, None) => true,
            (Some(want), Some(got)) => got.contains(want.as_str()),
            _ => false,
        };
        if !reason_ok || !evidence_ok {
            failures.push(format!(
                "{}: want {} with evidence {:?}, got {} with {:?}",
                s.name, s.expect, s.evidence, whole.reason, whole.evidence
            ));
            continue;
        }
        for size in [1, 7, 64] {
            let mut c = Classifier::new();
            for chunk in s.body.chunks(size) {
                c.feed(chunk);
            }
            let chunked = c.finish(s.exit, s.disk);
            if chunked != whole {
                failures.push(format!(
                    "{}: fed {size} bytes at a time it got {chunked:?}, whole it got {whole:?}",
                    s.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} snippets failed:\n{}",
        failures.len(),
        snippets.len(),
        failures.join("\n")
    );
}

/// Corpus has at least fifty snippets and covers every failure reason.
#[test]
fn corpus_has_at_least_fifty_snippets_and_covers_every_failure_reason() {
    let snippets = corpus();
    assert!(snippets.len() >= 50, "only {} snippets", snippets.len());
    for reason in Reason::ALL {
        let count = snippets.iter().filter(|s| s.expect == reason).count();
        if reason == Reason::None {
            continue;
        }
        assert!(count >= 2, "{reason}: only {count} snippets");
    }
}
