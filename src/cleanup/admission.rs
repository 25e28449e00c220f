//! Admission: whether a cleanup run may start now. Three gates, taken in this order:
//!
//! - the **cooldown**: an automatic run ([`Trigger::is_automatic`]) starts no sooner than the
//!   policy's cooldown after the last automatic one that pruned (read back from the audit table
//!   after a restart);
//! - the **slot**: one run at a time in this process;
//! - the **host lock**: an `flock` on the lock file (by default `<state.path>.lock`), so that
//!   `bilge serve`, `bilge clean` and `bilge build --clean-and-retry` on one host never prune in
//!   parallel (Docker itself answers 409 to a second concurrent prune). The holder writes its pid
//!   into the file, so a waiter can say who holds it.
//!
//! The host lock **fails closed**: when the lock file cannot be opened or locked (a full or
//! read-only disk, a folder that cannot be created), no run starts, and the refusal says why.
//!
//! A [`Ticket`] holds the slot and the host lock until it is dropped. [`Admission::try_admit`]
//! refuses at once with a [`Refusal`]; [`Admission::wait`] waits for the run in progress instead
//! (at most the lock timeout, and it ignores the cooldown: it serves the triggers a person
//! started). Once [`Admission::close`]d (bilge is stopping), nothing more is admitted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use tokio_util::sync::CancellationToken;

use crate::format::format_duration;
use crate::model::Trigger;
use crate::sync::lock;

/// Why a run was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another run is in progress (in this process or another bilge on this host).
    Busy,
    /// The last automatic run started less than the cooldown ago; this much is left.
    Cooldown(Duration),
    /// The host lock cannot be taken (its file cannot be opened or locked): no run starts
    /// without it. The log says what failed.
    NoLock,
    /// bilge is stopping and takes no more work.
    Closed,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Busy => f.write_str("a cleanup is already running on this host"),
            Refusal::Cooldown(left) => write!(
                f,
                "the cooldown since the last automatic cleanup has {} left",
                format_duration(Duration::from_secs(left.as_secs().max(1)))
            ),
            Refusal::NoLock => f.write_str(
                "the host's cleanup lock file cannot be locked (see bilge's log); no cleanup runs without it",
            ),
            Refusal::Closed => f.write_str("bilge is shutting down"),
        }
    }
}

/// Why [`Admission::wait`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// Another process held the host lock for the whole lock timeout.
    #[error(
        "another cleanup held the host lock {path} for {waited} ({holder}); nothing was deleted. Wait for it to end, or raise --lock-timeout"
    )]
    Timeout {
        /// The lock file.
        path: String,
        /// How long bilge waited.
        waited: String,
        /// Who holds it, as its lock file says.
        holder: String,
    },
    /// The lock file cannot be opened or locked.
    #[error(
        "cannot lock {path}: {why}; nothing was deleted (bilge prunes only under the host lock: give --cleanup.lock-file a file on a writable disk)"
    )]
    Unavailable {
        /// The lock file.
        path: String,
        /// What failed.
        why: String,
    },
    /// Waiting was cancelled (bilge was asked to stop).
    #[error("canceled while waiting for the host's cleanup lock; nothing was deleted")]
    Canceled,
}

/// Where the host lock is and how long a run waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    /// The lock file (`--cleanup.lock-file`, by default `<state.path>.lock`).
    pub path: PathBuf,
    /// Longest wait for a run another process holds it for (`--lock-timeout`).
    pub timeout: Duration,
}

impl LockSettings {
    /// The default lock file of the store at `state_path`: `<state.path>.lock`.
    pub fn beside(state_path: &Path) -> PathBuf {
        let mut p = state_path.as_os_str().to_owned();
        p.push(".lock");
        PathBuf::from(p)
    }
}

/// Held while a run executes: this process's slot and the host lock.
#[derive(Debug)]
pub struct Ticket {
    /// This process's slot.
    _slot: tokio::sync::OwnedMutexGuard<()>,
    /// The host-wide lock.
    _host: HostGuard,
    /// When the run was admitted: the run's start.
    pub admitted_at: DateTime<Utc>,
}

/// The gates a run passes before it starts. One per engine.
#[derive(Debug)]
pub struct Admission {
    /// The in-process slot.
    slot: Arc<tokio::sync::Mutex<()>>,
    /// The host-wide lock file.
    host: HostLock,
    /// The longest wait for the host lock.
    timeout: Duration,
    /// The least time between two automatic runs.
    cooldown: Duration,
    /// When the last automatic run started (monotonic, for the cooldown; wall clock, for the
    /// audit table's cooldown window).
    last_automatic: Mutex<Option<(Instant, DateTime<Utc>)>>,
    /// True once bilge is stopping.
    closed: AtomicBool,
}

impl Admission {
    /// Gates with the host lock of `lock` (opened now, while the filesystem may still have room
    /// for it) and `cooldown` between automatic runs.
    pub fn new(lock: LockSettings, cooldown: Duration) -> Admission {
        let host = HostLock {
            path: lock.path,
            file: Mutex::new(None),
        };
        if let Err(e) = host.handle() {
            tracing::warn!(lock = %host.path.display(), error = %e,
                "cannot open the cleanup lock file; no cleanup runs until it can be opened");
        }
        Admission {
            slot: Arc::new(tokio::sync::Mutex::new(())),
            host,
            timeout: lock.timeout,
            cooldown,
            last_automatic: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// The host lock file's path.
    pub fn lock_path(&self) -> &Path {
        &self.host.path
    }

    /// True while a run of this process holds the slot.
    pub fn is_running(&self) -> bool {
        self.slot.try_lock().is_err()
    }

    /// Admits nothing more (bilge is stopping).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Time left before an automatic run may start again, if any.
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        let (last, _) = (*lock(&self.last_automatic))?;
        self.cooldown
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// When the last automatic run started: refusals after it belong to its cooldown window.
    pub fn window_start(&self) -> Option<DateTime<Utc>> {
        lock(&self.last_automatic).map(|(_, at)| at)
    }

    /// Continues the cooldown from an automatic run that started at `at` (read back from the
    /// audit table after a restart).
    pub fn resume_cooldown(&self, at: DateTime<Utc>) {
        let ago = (Utc::now() - at).to_std().unwrap_or_default();
        let instant = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        *lock(&self.last_automatic) = Some((instant, at));
    }

    /// Admits a run by `trigger` now, or says why not (and takes nothing). An automatic trigger
    /// that is admitted starts the cooldown.
    pub fn try_admit(&self, trigger: Trigger) -> Result<Ticket, Refusal> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Refusal::Closed);
        }
        // Held throughout, so two automatic requests cannot both pass the cooldown.
        let mut last = lock(&self.last_automatic);
        if trigger.is_automatic()
            && let Some((at, _)) = *last
            && let Some(left) = self.cooldown.checked_sub(at.elapsed())
            && !left.is_zero()
        {
            return Err(Refusal::Cooldown(left));
        }
        let slot = self
            .slot
            .clone()
            .try_lock_owned()
            .map_err(|_| Refusal::Busy)?;
        let host = match self.host.try_lock() {
            Ok(h) => h,
            Err(Taken::Busy) => return Err(Refusal::Busy),
            Err(Taken::Failed(e)) => {
                tracing::warn!(lock = %self.host.path.display(), error = %e,
                    "cannot lock the cleanup lock file; the cleanup does not run");
                return Err(Refusal::NoLock);
            }
        };
        let admitted_at = Utc::now();
        if trigger.is_automatic() {
            *last = Some((Instant::now(), admitted_at));
        }
        Ok(Ticket {
            _slot: slot,
            _host: host,
            admitted_at,
        })
    }

    /// Admits a run by `trigger` once the run in progress on this host (in this process or
    /// another) has ended, waiting at most the lock timeout for another process's run, and
    /// never past `stop`. Does not look at the cooldown; an automatic trigger starts it.
    pub async fn wait(
        &self,
        trigger: Trigger,
        stop: &CancellationToken,
    ) -> Result<Ticket, WaitError> {
        let started = Instant::now();
        let slot = match self.slot.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                tracing::info!("waiting for the cleanup already running in this process");
                tokio::select! {
                    g = self.slot.clone().lock_owned() => g,
                    _ = stop.cancelled() => return Err(WaitError::Canceled),
                }
            }
        };
        let mut told = false;
        let host = loop {
            if stop.is_cancelled() {
                return Err(WaitError::Canceled);
            }
            match self.host.try_lock() {
                Ok(h) => break h,
                Err(Taken::Failed(e)) => {
                    return Err(WaitError::Unavailable {
                        path: self.host.path.display().to_string(),
                        why: e.to_string(),
                    });
                }
                Err(Taken::Busy) => {}
            }
            let waited = started.elapsed();
            if waited >= self.timeout {
                return Err(WaitError::Timeout {
                    path: self.host.path.display().to_string(),
                    waited: format_duration(Duration::from_secs(waited.as_secs().max(1))),
                    holder: self.host.holder(),
                });
            }
            if !told {
                told = true;
                tracing::info!(lock = %self.host.path.display(), holder = %self.host.holder(),
                    timeout = %format_duration(self.timeout),
                    "waiting for the cleanup another bilge is running on this host");
            }
            tokio::select! {
                _ = stop.cancelled() => return Err(WaitError::Canceled),
                _ = tokio::time::sleep(LOCK_POLL.min(self.timeout.saturating_sub(waited))) => {}
            }
        };
        let admitted_at = Utc::now();
        if trigger.is_automatic() {
            *lock(&self.last_automatic) = Some((Instant::now(), admitted_at));
        }
        Ok(Ticket {
            _slot: slot,
            _host: host,
            admitted_at,
        })
    }

    /// The slot and the host lock, if no run holds them now (in this process or another), for
    /// work that needs no run to be in progress; neither the cooldown nor [`Admission::close`]
    /// applies. `None` when a run holds them or the lock cannot be taken.
    pub fn try_hold(&self) -> Option<Ticket> {
        let slot = self.slot.clone().try_lock_owned().ok()?;
        let host = self.host.try_lock().ok()?;
        Some(Ticket {
            _slot: slot,
            _host: host,
            admitted_at: Utc::now(),
        })
    }
}

/// How often a waiter tries the host lock again.
const LOCK_POLL: Duration = Duration::from_millis(200);

/// Why the host lock was not taken.
#[derive(Debug)]
enum Taken {
    /// Another process holds it.
    Busy,
    /// The file cannot be opened or locked.
    Failed(std::io::Error),
}

/// The host lock, held: the `flock` and the open file its holder's pid is written in.
#[derive(Debug)]
struct HostGuard(Flock<File>);

impl Drop for HostGuard {
    fn drop(&mut self) {
        // The pid goes before the lock does, so the file never names a process that left it.
        let _ = self.0.set_len(0);
    }
}

/// The host-wide lock: an `flock` on a file.
#[derive(Debug)]
struct HostLock {
    /// The lock file.
    path: PathBuf,
    /// The open file, kept so a full disk later cannot keep it from opening.
    file: Mutex<Option<File>>,
}

impl HostLock {
    /// A duplicate of the open lock file, opening it first if needed.
    fn handle(&self) -> std::io::Result<File> {
        let mut guard = lock(&self.file);
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        match guard.as_ref() {
            Some(f) => f.try_clone(),
            None => Err(std::io::Error::other("lock file not open")),
        }
    }

    /// Opens (creating it and its folder) the lock file.
    fn open(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.path)
    }

    /// Takes the lock without waiting, and writes this process's pid into the file.
    fn try_lock(&self) -> Result<HostGuard, Taken> {
        let f = self.handle().map_err(Taken::Failed)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => {
                // Best effort: a full disk keeps the pid out, not the lock.
                let pid = std::process::id();
                let _ = l
                    .set_len(0)
                    .and_then(|()| l.write_all_at(format!("{pid}\n").as_bytes(), 0));
                Ok(HostGuard(l))
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Taken::Busy),
            Err((_, e)) => Err(Taken::Failed(std::io::Error::from(e))),
        }
    }

    /// Who holds the lock, as its file says.
    fn holder(&self) -> String {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        match text.trim().parse::<u32>() {
            Ok(pid) => format!("held by pid {pid}"),
            Err(_) => "its holder wrote no pid: not a bilge, or one on a full disk".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lock settings of their own for one test.
    fn settings(name: &str) -> LockSettings {
        LockSettings {
            path: std::env::temp_dir()
                .join(format!("bilge-admission-{}", std::process::id()))
                .join(format!("{name}.lock")),
            timeout: Duration::from_secs(600),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn only_webhook_and_watermark_runs_are_rate_limited() {
        assert!(Trigger::Webhook.is_automatic() && Trigger::Watermark.is_automatic());
        assert!(!Trigger::Cli.is_automatic() && !Trigger::BuildRetry.is_automatic());
        assert_eq!(Trigger::BuildRetry.as_str(), "build_retry");
    }

    #[test]
    fn refusals_say_what_to_wait_for() {
        assert_eq!(
            Refusal::Cooldown(Duration::from_secs(90)).to_string(),
            "the cooldown since the last automatic cleanup has 1m30s left"
        );
        assert!(Refusal::Busy.to_string().contains("already running"));
        assert!(
            Refusal::NoLock
                .to_string()
                .contains("no cleanup runs without it")
        );
    }

    #[tokio::test]
    async fn a_second_run_in_this_process_is_busy_until_the_first_ends() {
        let a = Admission::new(settings("slot"), HOUR);
        let ticket = a.try_admit(Trigger::Cli);
        assert!(ticket.is_ok() && a.is_running());
        assert_eq!(a.try_admit(Trigger::Cli).err(), Some(Refusal::Busy));
        drop(ticket);
        assert!(!a.is_running());
        assert!(a.try_admit(Trigger::Cli).is_ok());
    }

    #[tokio::test]
    async fn another_process_holding_the_host_lock_makes_a_run_busy() {
        // Two admissions on one file stand for two processes: flock locks belong to the open
        // file, not to the process.
        let s = settings("host");
        let here = Admission::new(s.clone(), HOUR);
        let there = Admission::new(s.clone(), HOUR);
        let held = there.try_admit(Trigger::Cli);
        assert!(held.is_ok());
        // The holder's pid is in the lock file.
        let text = std::fs::read_to_string(&s.path).unwrap_or_default();
        assert_eq!(text.trim(), std::process::id().to_string());
        assert_eq!(here.try_admit(Trigger::Webhook).err(), Some(Refusal::Busy));
        // A refusal takes nothing: neither the slot nor the cooldown.
        assert!(!here.is_running() && here.cooldown_remaining().is_none());
        drop(held);
        assert!(here.try_admit(Trigger::Webhook).is_ok());
    }

    #[tokio::test]
    async fn an_automatic_run_starts_the_cooldown_and_a_manual_one_does_not() {
        let a = Admission::new(settings("cooldown"), HOUR);
        drop(a.try_admit(Trigger::Cli));
        drop(a.try_admit(Trigger::BuildRetry));
        assert!(a.cooldown_remaining().is_none() && a.window_start().is_none());
        drop(a.try_admit(Trigger::Watermark));
        assert!(a.cooldown_remaining().is_some_and(|d| d > HOUR / 2));
        assert!(a.window_start().is_some());
        assert!(matches!(
            a.try_admit(Trigger::Webhook).err(),
            Some(Refusal::Cooldown(_))
        ));
        // People are never held back by the cooldown.
        assert!(a.try_admit(Trigger::Cli).is_ok());
    }

    #[tokio::test]
    async fn a_resumed_cooldown_counts_from_the_recorded_run() {
        let a = Admission::new(settings("resume"), Duration::from_secs(60));
        a.resume_cooldown(Utc::now() - chrono::Duration::seconds(120));
        assert!(a.cooldown_remaining().is_none());
        assert!(a.try_admit(Trigger::Webhook).is_ok());
        a.resume_cooldown(Utc::now() - chrono::Duration::seconds(10));
        let left = a.cooldown_remaining().unwrap_or_default();
        assert!(left > Duration::from_secs(40) && left <= Duration::from_secs(50));
    }

    #[tokio::test]
    async fn waiting_admits_once_the_run_in_progress_ends() {
        let a = Arc::new(Admission::new(settings("wait"), HOUR));
        let first = a.try_admit(Trigger::Watermark);
        assert!(first.is_ok());
        let waiter = tokio::spawn({
            let a = a.clone();
            async move {
                a.wait(Trigger::Cli, &CancellationToken::new())
                    .await
                    .is_ok()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "admitted while the first run held the slot"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(second, Ok(Ok(true))), "{second:?}");
    }

    #[tokio::test]
    async fn waiting_gives_up_after_the_lock_timeout_and_names_the_holder() {
        let s = LockSettings {
            timeout: Duration::from_millis(300),
            ..settings("timeout")
        };
        let there = Admission::new(s.clone(), HOUR);
        let held = there.try_admit(Trigger::Cli);
        assert!(held.is_ok());
        let here = Admission::new(s, HOUR);
        let started = Instant::now();
        let r = here.wait(Trigger::Cli, &CancellationToken::new()).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains(&format!("held by pid {}", std::process::id()))
                && e.contains("--lock-timeout"),
            "{e}"
        );
        // A stop ends the wait at once.
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(
            here.wait(Trigger::Cli, &stop).await.err(),
            Some(WaitError::Canceled)
        );
    }

    #[tokio::test]
    async fn a_lock_file_that_cannot_be_opened_fails_closed() {
        // A file where the lock file's folder should be: the lock file cannot be created.
        let blocker = settings("blocker").path;
        if let Some(dir) = blocker.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&blocker, b"");
        let s = LockSettings {
            path: blocker.join("inside.lock"),
            timeout: HOUR,
        };
        let a = Admission::new(s, HOUR);
        assert_eq!(a.try_admit(Trigger::Webhook).err(), Some(Refusal::NoLock));
        // The refusal takes nothing: no slot, no cooldown.
        assert!(!a.is_running() && a.cooldown_remaining().is_none());
        let waited = a.wait(Trigger::Cli, &CancellationToken::new()).await;
        assert!(
            matches!(waited, Err(WaitError::Unavailable { .. })),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_admission_admits_nothing() {
        let a = Admission::new(settings("closed"), HOUR);
        a.close();
        assert_eq!(a.try_admit(Trigger::Cli).err(), Some(Refusal::Closed));
    }
}
