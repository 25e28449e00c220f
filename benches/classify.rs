//! Throughput of the build-output classifier (`cargo bench --bench classify`).
//!
//! Feeds three inputs through [`Classifier::feed`] in 64 KiB chunks, then [`Classifier::finish`],
//! seven times each, and prints MB/s (10^6 bytes per second) as median [min–max]:
//! 80-column lines of `x` (what `fold` makes), the real failing-build corpus repeated, and
//! generated text shaped like the log of a successful build. Arguments (`-- corpus`) keep only
//! the inputs whose names contain one of them.

use std::hint::black_box;
use std::time::Instant;

use bilge::builds::classify::{Classifier, DiskState, Exit};

/// Bytes handed to `feed` at a time, like the pty reader.
const CHUNK: usize = 64 * 1024;

/// Timed runs per input.
const RUNS: usize = 7;

fn main() {
    // Any argument that is not a flag (cargo passes `--bench`) picks inputs by name.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let inputs: [Input; 3] = [
        ("80-column x lines, 64 MB", || x_lines(64_000_000)),
        ("failing-build corpus, 16 MB", || corpus(16_000_000)),
        ("successful build log, 16 MB", || success_log(16_000_000)),
    ];
    for (name, make) in inputs {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let input = make();
        let mut rates: Vec<f64> = (0..RUNS).map(|_| run(&input)).collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "{name:<30} {:>7.0} MB/s [{:.0}–{:.0}] ({} bytes, {RUNS} runs)",
            rates[RUNS / 2],
            rates[0],
            rates[RUNS - 1],
            input.len()
        );
    }
}

/// An input's name and the function that makes it.
type Input = (&'static str, fn() -> Vec<u8>);

/// One classification of `input`; returns MB/s.
fn run(input: &[u8]) -> f64 {
    let start = Instant::now();
    let mut c = Classifier::new();
    for chunk in input.chunks(CHUNK) {
        c.feed(black_box(chunk));
    }
    black_box(c.finish(Exit::Code(1), DiskState::default()));
    input.len() as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// `len` bytes of 80 `x`s and a newline, over and over.
fn x_lines(len: usize) -> Vec<u8> {
    let mut line = vec![b'x'; 80];
    line.push(b'\n');
    line.iter().copied().cycle().take(len).collect()
}

/// The bodies of the corpus snippets, concatenated and repeated to at least `len` bytes.
fn corpus(len: usize) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/build-failures");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for path in files {
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let body = match raw.windows(5).position(|w| w == b"\n---\n") {
            Some(split) => &raw[split + 5..],
            None => &raw[..],
        };
        all.extend_from_slice(body);
        if !all.ends_with(b"\n") {
            all.push(b'\n');
        }
    }
    assert!(!all.is_empty(), "no corpus snippets under {dir}");
    let mut out = Vec::with_capacity(len + all.len());
    while out.len() < len {
        out.extend_from_slice(&all);
    }
    out
}

/// About `len` bytes of text shaped like a successful build: cargo, apt, npm under BuildKit,
/// gcc and make, pip, Docker's step lines. Nothing in it is a failure cue.
fn success_log(len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + 512);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut i = 0u64;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        i += 1;
        let t = (i % 600) as f64 / 10.0 + 0.3;
        let line = match state % 16 {
            0 => format!("   Compiling serde v1.0.{}", i % 220),
            1 => format!(
                "   Compiling tokio-util v0.7.{} (/src/vendor/tokio-util-0.7.{})",
                i % 17,
                i % 17
            ),
            2 => format!(
                "Get:{i} http://deb.debian.org/debian bookworm/main amd64 libfoo{} amd64 1.2-{} [{} kB]",
                i % 97,
                i % 13,
                100 + i % 900
            ),
            3 => format!("Setting up libbar{} (2.3-{}) ...", i % 89, i % 7),
            4 => format!(
                "Unpacking libbaz{}-dev:amd64 (4.{}.{}-1+deb12u1) ...",
                i % 61,
                i % 9,
                i % 5
            ),
            5 => format!(
                "#12 {t:.2} npm WARN deprecated inflight@1.0.{}: This module is not supported, and leaks memory. Do not use it.",
                i % 7
            ),
            6 => format!(
                "#14 {t:.2} added {} packages, and audited {} packages in {}s",
                i % 900,
                i % 1200,
                i % 40
            ),
            7 => format!(
                "gcc -DHAVE_CONFIG_H -I. -I../include -O2 -Wall -Wextra -g -fPIC -c src/module{}.c -o build/module{}.o",
                i % 300,
                i % 300
            ),
            8 => format!(
                "g++ -std=c++17 -O2 -Wall -pthread -Iinclude -c lib/parser_{}.cpp -o obj/parser_{}.o",
                i % 120,
                i % 120
            ),
            9 => format!("make[2]: Entering directory '/build/src/subdir{}'", i % 40),
            10 => format!(
                "  Downloading numpy-1.26.{}-cp311-cp311-manylinux_2_17_x86_64.whl ({}.{} MB)",
                i % 5,
                i % 20,
                i % 10
            ),
            11 => format!(
                "Successfully installed requests-2.31.0 urllib3-2.{}.{} certifi-2024.{}.{}",
                i % 3,
                i % 9,
                i % 12,
                i % 28
            ),
            12 => format!(
                "#{} [builder {}/{}] RUN apt-get update && apt-get install -y --no-install-recommends build-essential",
                i % 30,
                i % 9,
                i % 12
            ),
            13 => format!(
                "#{} sha256:{:016x}{:016x} {}.{}MB / 48.{}MB {t:.1}s",
                i % 30,
                state,
                state.rotate_left(17),
                i % 48,
                i % 10,
                i % 10
            ),
            14 => format!(
                "[{:>3}%] Building CXX object src/CMakeFiles/core.dir/engine/render_{}.cpp.o",
                i % 101,
                i % 250
            ),
            _ => format!(
                "2024-05-{:02}T10:{:02}:{:02}.{:03}Z INFO webpack compiled asset main.{:08x}.js {} KiB [emitted] [immutable]",
                1 + i % 28,
                i % 60,
                (i * 7) % 60,
                i % 1000,
                state as u32,
                i % 900
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.into_bytes()
}
