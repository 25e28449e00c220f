//! Helpers for the integration tests, one file for each thing they drive: private Docker daemons
//! and their objects ([`daemon`]), the bilge binary (`bilge serve` on a free loopback port,
//! `bilge clean`: [`bilge`]), a tiny HTTP client ([`http`]), Alertmanager and webhook payloads
//! ([`alerts`]), a proxy on a Docker socket ([`proxy`]); this file keeps what they share
//! (waiting, temp dirs, files, tool checks).
//!
//! Every test that needs Docker starts its own daemon on temporary paths, so tests can run in
//! parallel and see exactly the objects they made. Nothing here skips: a missing tool fails the
//! test with a message that says how to get it.
//!
//! Every temporary folder is made under `$BILGE_TEST_TMP` (scripts/test.sh points it at a
//! folder of its own run), else `/tmp`. What a helper starts is stopped by the process ids it
//! recorded, never by a pattern: each daemon writes `docker.pid`, and the servers and
//! Alertmanagers started here write a `.pid` file into their folder, so that scripts/test.sh
//! can stop exactly those after a crash.

#![allow(dead_code)]

mod alerts;
mod bilge;
mod daemon;
mod http;
mod proxy;

pub use alerts::*;
pub use bilge::*;
pub use daemon::*;
pub use http::*;
pub use proxy::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Debian's Docker CLI (20.10, with BuildKit); the `docker` earlier on PATH has no buildx.
pub const DOCKER: &str = "/usr/bin/docker";
/// The bilge binary under test.
pub const BILGE: &str = env!("CARGO_BIN_EXE_bilge");

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Fails the test with instructions when a required tool is missing.
pub fn require(path: &str, how: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: {how} (scripts/test.sh installs everything the tests need)"
    );
}

/// Fails unless running as root (dockerd and loop mounts need it).
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test starts a private dockerd and must run as root; run scripts/test.sh as root"
    );
}

/// The folder the tests' temporary folders go in: `$BILGE_TEST_TMP`, else `/tmp`.
pub fn test_root() -> PathBuf {
    std::env::var_os("BILGE_TEST_TMP")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// A unique temporary directory under [`test_root`] (short: it holds unix sockets).
pub fn temp_dir(name: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = test_root().join(format!("bt-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `pid` into `<dir>/<name>.pid`, so that scripts/test.sh can stop it after a crash.
pub fn record_pid(dir: &Path, name: &str, pid: u32) {
    let _ = std::fs::write(dir.join(format!("{name}.pid")), format!("{pid}\n"));
}

/// SIGKILLs the process whose id is in `pidfile`, if that process still names `owner` (a folder
/// of the test's own) on its command line: a recorded id, checked, never a pattern search.
pub fn kill_recorded(pidfile: &Path, owner: &Path) {
    let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return;
    };
    kill_if_owned(pid, owner);
}

/// SIGKILLs process `pid` if its command line names `owner`.
fn kill_if_owned(pid: i32, owner: &Path) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let owner = owner.display().to_string();
    if String::from_utf8_lossy(&cmdline).contains(&owner) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The parent of process `pid`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces, so read after its closing parenthesis.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Appends one fault's figures to `$BILGE_FAULTS_REPORT`, when set: what was done, what bilge
/// did, and its figures (scripts/faults.sh writes RELIABILITY.md from these lines).
pub fn fault_report(fault: &str, done: &str, did: &str, figures: serde_json::Value) {
    let Some(path) = std::env::var_os("BILGE_FAULTS_REPORT").filter(|p| !p.is_empty()) else {
        return;
    };
    let line = serde_json::json!({"fault": fault, "done": done, "did": did, "figures": figures});
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// The 99th percentile of `v` in milliseconds (nearest rank).
pub fn p99_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `f` until it returns Some, or gives None after `timeout`.
pub fn wait_for_opt<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Sends SIGTERM to `child`, waits up to `grace` for it to exit, then kills it. Returns the
/// exit status when it exited by itself.
pub fn stop_child(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs a command and panics with its output when it fails.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a `bilge --config` file with a `[cleanup]` table of `lines` into `dir`.
pub fn policy_file(dir: &Path, lines: &[&str]) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let p = dir.join(format!("policy{n}.toml"));
    std::fs::write(&p, format!("[cleanup]\n{}\n", lines.join("\n"))).unwrap();
    p
}

/// Writes a token file into `dir`.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let p = dir.join(format!("token{n}"));
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}

/// Renders a man page (roff) with groff as `man` would, failing on any warning; the text.
pub fn groff(roff: &str, what: &str) -> String {
    require("/usr/bin/groff", "apt-get install groff-base");
    let mut groff = Command::new("/usr/bin/groff")
        .args(["-man", "-Tascii", "-P-cbu", "-ww"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(roff.as_bytes())
        .unwrap();
    let out = groff.wait_with_output().unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.is_empty(),
        "{what}: {warnings}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
