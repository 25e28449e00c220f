//! Running the build command as bilge's child, invisibly.
//!
//! What the command writes reaches bilge's own stdout and stderr byte for byte, as soon as it is
//! written (one `write` per `read`, no line buffering), while a [`Classifier`] reads along. Its
//! stdin is bilge's stdin.
//!
//! Terminals: when bilge's stdout or stderr is a terminal, the command gets a pseudo-terminal
//! in its place (raw, so nothing is translated; sized like the real one and resized with it).
//! The command therefore still sees a terminal — BuildKit draws its live progress, tools keep
//! their colours — and bilge still reads every byte. Plain pipes would be simpler, but then
//! `docker build` in a terminal would look different under bilge. A command writing both streams
//! to one terminal writes both to the one pseudo-terminal, so their order on screen is kept.
//!
//! Signals: the command stays in bilge's process group, so Ctrl-C and Ctrl-\ at a terminal reach
//! it directly, and bilge does not send them a second time (it checks that its group is the
//! terminal's foreground group). SIGINT or SIGQUIT sent to bilge alone, and SIGTERM and SIGHUP
//! always, are forwarded. bilge itself never dies of them: it waits for the command, so the
//! outcome (`canceled`) is still recorded.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

use super::classify::{Classifier, Exit};
use crate::sync::lock;

/// Bytes read per system call.
const CHUNK: usize = 64 * 1024;
/// Longest partial line a stream holds back so that stdout and stderr lines reach the
/// classifier whole rather than interleaved.
const HOLD: usize = 16 * 1024;
/// How long to wait for the output to end after the command exited (a background process it
/// started may hold the stream open for ever).
const DRAIN: Duration = Duration::from_secs(3);

/// How the command ended and what its output showed.
#[derive(Debug)]
pub struct Ran {
    /// Its exit status.
    pub exit: Exit,
    /// The classifier that read its output; finish it with the disk's state.
    pub classifier: Classifier,
    /// Whether the last thing shown where bilge's stderr goes ended a line (else the summary
    /// starts with a line break).
    pub at_line_start: bool,
}

/// The result of trying to run the command.
#[derive(Debug)]
pub enum Outcome {
    /// It ran and ended.
    Ran(Box<Ran>),
    /// It could not be started (not found, not executable).
    NotStarted(std::io::Error),
}

/// Where bilge writes one of the command's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// bilge's stdout.
    Stdout,
    /// bilge's stderr.
    Stderr,
}

/// One stream to copy: the end bilge reads, and where it goes.
#[derive(Debug)]
struct Source {
    /// The read end of a pipe, or a pseudo-terminal's master side.
    reader: OwnedFd,
    /// Where it is shown.
    dest: Dest,
    /// Whether this stream is shown where bilge's stderr (and so its summary) goes.
    shows_stderr: bool,
}

/// The file descriptors of one run.
#[derive(Debug)]
struct Plumbing {
    /// The command's stdout.
    stdout: Stdio,
    /// The command's stderr.
    stderr: Stdio,
    /// What bilge copies.
    sources: Vec<Source>,
    /// The pseudo-terminal's master side and the terminal it mirrors, for resizes.
    pty: Option<(OwnedFd, Dest)>,
}

/// Opens a raw pseudo-terminal sized like `like`; returns (master, slave).
fn open_pty(like: impl AsFd) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut termios = rustix::termios::tcgetattr(&slave)?;
    termios.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &termios)?;
    if let Ok(size) = rustix::termios::tcgetwinsize(like) {
        rustix::termios::tcsetwinsize(&master, size)?;
    }
    Ok((master, slave))
}

/// Whether two descriptors are the same device or file.
fn same_file(a: impl AsFd, b: impl AsFd) -> bool {
    match (rustix::fs::fstat(a), rustix::fs::fstat(b)) {
        (Ok(a), Ok(b)) => (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev),
        _ => false,
    }
}

/// A close-on-exec pipe; returns (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

impl Plumbing {
    /// Pipes for streams that bilge writes to files or pipes, a pseudo-terminal for those that
    /// go to a terminal.
    fn new() -> std::io::Result<Plumbing> {
        let out_tty = rustix::termios::isatty(std::io::stdout());
        // One pseudo-terminal stands for one terminal: stderr shares it only when it is the
        // same terminal as stdout (else stderr gets a pipe, to land where it belongs).
        let err_tty = rustix::termios::isatty(std::io::stderr())
            && (!out_tty || same_file(std::io::stdout(), std::io::stderr()));
        let mut sources = Vec::new();
        let mut pty = None;
        let mut slave = None;
        if out_tty || err_tty {
            let dest = if out_tty { Dest::Stdout } else { Dest::Stderr };
            let (master, s) = if out_tty {
                open_pty(std::io::stdout())?
            } else {
                open_pty(std::io::stderr())?
            };
            sources.push(Source {
                reader: master.try_clone()?,
                dest,
                shows_stderr: err_tty,
            });
            pty = Some((master, dest));
            slave = Some(s);
        }
        let mut stream = |tty: bool, dest: Dest| -> std::io::Result<Stdio> {
            match (&slave, tty) {
                (Some(s), true) => Ok(Stdio::from(s.try_clone()?)),
                _ => {
                    let (r, w) = pipe()?;
                    sources.push(Source {
                        reader: r,
                        dest,
                        shows_stderr: dest == Dest::Stderr,
                    });
                    Ok(Stdio::from(w))
                }
            }
        };
        let stdout = stream(out_tty, Dest::Stdout)?;
        let stderr = stream(err_tty, Dest::Stderr)?;
        Ok(Plumbing {
            stdout,
            stderr,
            sources,
            pty,
        })
    }
}

/// Writes all of `buf`, waiting out a non-blocking descriptor's EAGAIN.
fn write_all(out: &mut File, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Hands one stream's output to the shared classifier a whole line at a time where it can, so
/// that a line on stdout and a line on stderr are not mixed into one.
#[derive(Debug, Default)]
struct LineFeed {
    /// The unfinished last line (at most [`HOLD`] bytes plus one read).
    pending: Vec<u8>,
}

impl LineFeed {
    /// Feeds everything up to the chunk's last line end; keeps the rest for later.
    fn feed(&mut self, chunk: &[u8], classifier: &Mutex<Classifier>) {
        match chunk.iter().rposition(|&b| b == b'\n' || b == b'\r') {
            Some(end) => {
                let mut c = lock(classifier);
                c.feed(&self.pending);
                c.feed(&chunk[..=end]);
                drop(c);
                self.pending.clear();
                self.pending.extend_from_slice(&chunk[end + 1..]);
            }
            None => {
                self.pending.extend_from_slice(chunk);
                if self.pending.len() >= HOLD {
                    lock(classifier).feed(&self.pending);
                    self.pending.clear();
                }
            }
        }
    }

    /// Feeds what is left and ends the line.
    fn finish(&mut self, classifier: &Mutex<Classifier>) {
        let mut c = lock(classifier);
        c.feed(&self.pending);
        c.feed(b"\n");
        self.pending.clear();
    }
}

/// Copies one stream until it ends (blocking; runs on its own thread).
fn copy(source: Source, mut out: File, classifier: &Mutex<Classifier>, at_line_start: &AtomicBool) {
    let mut reader = File::from(source.reader);
    let mut buf = vec![0u8; CHUNK];
    let mut lines = LineFeed::default();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // EIO is how a pseudo-terminal's master says the last writer has gone.
            Err(_) => break,
        };
        let chunk = &buf[..n];
        if write_all(&mut out, chunk).is_err() {
            // bilge's own output is gone (a closed pipe): stop reading, so the command meets the
            // broken pipe just as it would without bilge.
            break;
        }
        if source.shows_stderr {
            at_line_start.store(chunk.ends_with(b"\n"), Ordering::Relaxed);
        }
        lines.feed(chunk, classifier);
    }
    lines.finish(classifier);
}

/// Whether bilge's process group is the foreground group of the terminal it runs on (so a
/// Ctrl-C there has already reached the command).
fn in_terminal_foreground() -> bool {
    let group = rustix::process::getpgrp();
    let fds = [
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
        std::io::stderr().as_fd().try_clone_to_owned(),
    ];
    fds.into_iter()
        .flatten()
        .filter(|fd| rustix::termios::isatty(fd))
        .any(|fd| rustix::termios::tcgetpgrp(&fd).ok() == Some(group))
}

/// Sends `sig` to the command if it has not been reaped yet.
fn forward(child: &tokio::process::Child, sig: Signal, from_terminal_too: bool) {
    if from_terminal_too && in_terminal_foreground() {
        return;
    }
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        if let Err(e) = nix::sys::signal::kill(pid, sig) {
            tracing::debug!(signal = %sig, error = %e, "forwarding a signal failed");
        }
    }
}

/// Registers a handler for `kind`, so bilge outlives the signal and can forward it.
fn listen(kind: SignalKind) -> crate::Result<tokio::signal::unix::Signal> {
    signal(kind).map_err(|e| crate::Error::io("installing a signal handler", e))
}

/// Waits for the next delivery of an optional signal (never, without one).
async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Runs `argv` to its end with the output passing through. Errors are bilge's own failures
/// (pipes, signal handlers); a command that cannot be started is an [`Outcome::NotStarted`].
pub async fn run(argv: &[String]) -> crate::Result<Outcome> {
    let Some((program, args)) = argv.split_first() else {
        return Err(crate::Error::Other("no command to run".into()));
    };
    let mut int = listen(SignalKind::interrupt())?;
    let mut term = listen(SignalKind::terminate())?;
    let mut hup = listen(SignalKind::hangup())?;
    let mut quit = listen(SignalKind::quit())?;
    let plumbing =
        Plumbing::new().map_err(|e| crate::Error::io("setting up the command's output", e))?;
    let mut winch = match plumbing.pty {
        Some(_) => Some(listen(SignalKind::window_change())?),
        None => None,
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::inherit())
        .stdout(plumbing.stdout)
        .stderr(plumbing.stderr);
    let spawned = cmd.spawn();
    // The command holds the child's ends of the pipes: close ours, or the output never ends.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return Ok(Outcome::NotStarted(e)),
    };

    let classifier = Arc::new(Mutex::new(Classifier::new()));
    let at_line_start = Arc::new(AtomicBool::new(true));
    let mut copiers = Vec::new();
    for source in plumbing.sources {
        let out = match source.dest {
            Dest::Stdout => std::io::stdout().as_fd().try_clone_to_owned(),
            Dest::Stderr => std::io::stderr().as_fd().try_clone_to_owned(),
        }
        .map_err(|e| crate::Error::io("duplicating bilge's output", e))?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let classifier = classifier.clone();
        let at_line_start = at_line_start.clone();
        // A plain thread, not spawn_blocking: a stream held open by a background process must
        // not keep the runtime from shutting down.
        std::thread::Builder::new()
            .name("bilge-copy".into())
            .spawn(move || {
                copy(source, File::from(out), &classifier, &at_line_start);
                let _ = done_tx.send(());
            })
            .map_err(|e| crate::Error::io("starting an output thread", e))?;
        copiers.push(done_rx);
    }

    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = int.recv() => forward(&child, Signal::SIGINT, true),
            _ = quit.recv() => forward(&child, Signal::SIGQUIT, true),
            _ = term.recv() => forward(&child, Signal::SIGTERM, false),
            _ = hup.recv() => forward(&child, Signal::SIGHUP, false),
            _ = next(&mut winch) => {
                if let Some((master, dest)) = &plumbing.pty {
                    let size = match dest {
                        Dest::Stdout => rustix::termios::tcgetwinsize(std::io::stdout()),
                        Dest::Stderr => rustix::termios::tcgetwinsize(std::io::stderr()),
                    };
                    if let Ok(size) = size {
                        let _ = rustix::termios::tcsetwinsize(master, size);
                    }
                }
            }
        }
    }
    .map_err(|e| crate::Error::io("waiting for the command", e))?;
    // The copiers end once every writer has closed the stream; keep the master open until then
    // so that reading it does not fail early.
    let drained = tokio::time::timeout(DRAIN, async {
        for done in copiers {
            let _ = done.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!("the command's output is still open after it exited; not waiting for it");
    }
    drop(plumbing.pty);
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(1),
    };
    let classifier = std::mem::take(&mut *lock(&classifier));
    Ok(Outcome::Ran(Box::new(Ran {
        exit,
        classifier,
        at_line_start: at_line_start.load(Ordering::Relaxed),
    })))
}

/// The exit code bilge passes on: the command's, or 128+N for signal N.
pub fn exit_code(exit: Exit) -> u8 {
    match exit {
        Exit::Code(c) => u8::try_from(c.rem_euclid(256)).unwrap_or(1),
        Exit::Signal(s) => u8::try_from(128 + s).unwrap_or(255),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(Exit::Code(0)), 0);
        assert_eq!(exit_code(Exit::Code(255)), 255);
        assert_eq!(exit_code(Exit::Signal(15)), 143);
        assert_eq!(exit_code(Exit::Signal(9)), 137);
    }

    #[test]
    fn lines_from_two_streams_reach_the_classifier_whole() {
        let c = Mutex::new(Classifier::new());
        let mut out = LineFeed::default();
        let mut err = LineFeed::default();
        err.feed(b"ERROR: write /big: no sp", &c);
        out.feed(b"step 3/4\nprogress ", &c);
        err.feed(b"ace left on device\n", &c);
        out.feed(b"50%", &c);
        out.finish(&c);
        err.finish(&c);
        let verdict = std::mem::take(&mut *lock(&c)).finish(Exit::Code(1), Default::default());
        assert_eq!(verdict.reason.as_str(), "no_space");
        assert_eq!(
            verdict.evidence.as_deref(),
            Some("ERROR: write /big: no space left on device")
        );
    }
}
