//! Admission: whether a cleanup run may start now. Three gates, taken in this order:
//!
//! - the **cooldown**: an automatic run ([`Trigger::is_automatic`]) starts no sooner than the
//!   policy's cooldown after the last automatic one;
//! - the **slot**: one run at a time in this process;
//! - the **host lock**: an `flock` on `<state.path>.lock`, so that `bilge serve`, `bilge clean`
//!   and `bilge build --clean-and-retry` on one host never prune in parallel (Docker itself
//!   answers 409 to a second concurrent prune).
//!
//! A [`Ticket`] holds the slot and the host lock until it is dropped. [`Admission::try_admit`]
//! refuses at once with a [`Refusal`]; [`Admission::wait`] waits for the run in progress instead
//! (and ignores the cooldown: it serves the triggers a person started).
//!
//! The host lock **fails open** today: when the lock file cannot be opened or locked (a full or
//! read-only disk), runs go ahead with the in-process slot only, with a warning.
//! `HostLock::degraded` is the one place that decides this.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

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
        }
    }
}

/// Held while a run executes: the in-process slot and (when it could be taken) the host lock.
#[derive(Debug)]
pub struct Ticket {
    /// This process's slot.
    _slot: tokio::sync::OwnedMutexGuard<()>,
    /// The host-wide lock; `None` when the lock file failed open.
    _host: Option<Flock<File>>,
}

/// The gates a run passes before it starts. One per engine.
#[derive(Debug)]
pub struct Admission {
    /// The in-process slot.
    slot: Arc<tokio::sync::Mutex<()>>,
    /// The host-wide lock file.
    host: HostLock,
    /// The least time between two automatic runs.
    cooldown: Duration,
    /// When the last automatic run started.
    last_automatic: Mutex<Option<Instant>>,
}

impl Admission {
    /// Gates with the host lock at `lock_path` (opened now, while the filesystem may still have
    /// room for it) and `cooldown` between automatic runs.
    pub fn new(lock_path: PathBuf, cooldown: Duration) -> Admission {
        let host = HostLock {
            path: lock_path,
            file: Mutex::new(None),
            warned: AtomicBool::new(false),
        };
        drop(host.handle());
        Admission {
            slot: Arc::new(tokio::sync::Mutex::new(())),
            host,
            cooldown,
            last_automatic: Mutex::new(None),
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

    /// Time left before an automatic run may start again, if any.
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        let last = (*lock(&self.last_automatic))?;
        self.cooldown
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Continues the cooldown from an automatic run that started at `at` (read back from the
    /// audit table after a restart).
    pub fn resume_cooldown(&self, at: Instant) {
        *lock(&self.last_automatic) = Some(at);
    }

    /// Admits a run by `trigger` now, or says why not (and takes nothing). An automatic trigger
    /// that is admitted starts the cooldown.
    pub fn try_admit(&self, trigger: Trigger) -> Result<Ticket, Refusal> {
        // Held throughout, so two automatic requests cannot both pass the cooldown.
        let mut last = lock(&self.last_automatic);
        if trigger.is_automatic()
            && let Some(at) = *last
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
        let host = self.host.try_lock()?;
        if trigger.is_automatic() {
            *last = Some(Instant::now());
        }
        Ok(Ticket {
            _slot: slot,
            _host: host,
        })
    }

    /// Admits a run by `trigger` once the run in progress on this host (in this process or
    /// another) has ended; never refuses, and does not look at the cooldown. An automatic
    /// trigger starts the cooldown.
    pub async fn wait(&self, trigger: Trigger) -> Ticket {
        let slot = match self.slot.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                tracing::info!("waiting for the cleanup already running in this process");
                self.slot.clone().lock_owned().await
            }
        };
        let host = match self.host.try_lock() {
            Ok(l) => l,
            Err(_) => {
                tracing::info!(lock = %self.host.path.display(),
                    "waiting for the cleanup another bilge is running on this host");
                self.host.lock().await
            }
        };
        if trigger.is_automatic() {
            *lock(&self.last_automatic) = Some(Instant::now());
        }
        Ticket {
            _slot: slot,
            _host: host,
        }
    }
}

/// The host-wide lock: an `flock` on a file next to the state store.
#[derive(Debug)]
struct HostLock {
    /// `<state.path>.lock`.
    path: PathBuf,
    /// The open file, kept so a full disk later cannot keep it from opening.
    file: Mutex<Option<File>>,
    /// True once the failure to open it was logged.
    warned: AtomicBool,
}

impl HostLock {
    /// A duplicate of the open lock file, opening it first if needed; `None` (warned once) when
    /// it cannot be opened.
    fn handle(&self) -> Option<File> {
        let mut guard = lock(&self.file);
        if guard.is_none() {
            match self.open() {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(lock = %self.path.display(), error = %e,
                            "cannot open the cleanup lock file; cleanups by other bilge processes on this host are not excluded");
                    }
                    return None;
                }
            }
        }
        guard.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// Opens (creating it and its folder) the lock file.
    fn open(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
    }

    /// Takes the lock without waiting: [`Refusal::Busy`] when another process holds it.
    fn try_lock(&self) -> Result<Option<Flock<File>>, Refusal> {
        let Some(f) = self.handle() else {
            return Ok(self.degraded());
        };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Refusal::Busy),
            Err((_, e)) => {
                tracing::warn!(lock = %self.path.display(), error = %e, "cannot lock the cleanup lock file");
                Ok(self.degraded())
            }
        }
    }

    /// Waits for the lock.
    async fn lock(&self) -> Option<Flock<File>> {
        let Some(f) = self.handle() else {
            return self.degraded();
        };
        match tokio::task::spawn_blocking(move || Flock::lock(f, FlockArg::LockExclusive)).await {
            Ok(Ok(l)) => Some(l),
            Ok(Err((_, e))) => {
                tracing::warn!(lock = %self.path.display(), error = %e, "cannot lock the cleanup lock file");
                self.degraded()
            }
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the cleanup lock failed");
                self.degraded()
            }
        }
    }

    /// What a run gets when the lock file cannot be opened or locked: no host lock, and the run
    /// goes ahead (fail open). To fail closed instead, this is the one place to refuse.
    fn degraded(&self) -> Option<Flock<File>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock path of its own for one test.
    fn lock_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("bilge-admission-{}", std::process::id()))
            .join(format!("{name}.lock"))
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
    }

    #[tokio::test]
    async fn a_second_run_in_this_process_is_busy_until_the_first_ends() {
        let a = Admission::new(lock_path("slot"), HOUR);
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
        let path = lock_path("host");
        let here = Admission::new(path.clone(), HOUR);
        let there = Admission::new(path, HOUR);
        let held = there.try_admit(Trigger::Cli);
        assert!(held.is_ok());
        assert_eq!(here.try_admit(Trigger::Webhook).err(), Some(Refusal::Busy));
        // A refusal takes nothing: neither the slot nor the cooldown.
        assert!(!here.is_running() && here.cooldown_remaining().is_none());
        drop(held);
        assert!(here.try_admit(Trigger::Webhook).is_ok());
    }

    #[tokio::test]
    async fn an_automatic_run_starts_the_cooldown_and_a_manual_one_does_not() {
        let a = Admission::new(lock_path("cooldown"), HOUR);
        drop(a.try_admit(Trigger::Cli));
        drop(a.try_admit(Trigger::BuildRetry));
        assert!(a.cooldown_remaining().is_none());
        drop(a.try_admit(Trigger::Watermark));
        assert!(a.cooldown_remaining().is_some_and(|d| d > HOUR / 2));
        assert!(matches!(
            a.try_admit(Trigger::Webhook).err(),
            Some(Refusal::Cooldown(_))
        ));
        // People are never held back by the cooldown.
        assert!(a.try_admit(Trigger::Cli).is_ok());
    }

    #[tokio::test]
    async fn a_resumed_cooldown_counts_from_the_recorded_run() {
        let a = Admission::new(lock_path("resume"), Duration::from_secs(60));
        let long_ago = Instant::now().checked_sub(Duration::from_secs(120));
        let just_now = Instant::now().checked_sub(Duration::from_secs(10));
        let (Some(long_ago), Some(just_now)) = (long_ago, just_now) else {
            panic!("the monotonic clock started less than two minutes ago");
        };
        a.resume_cooldown(long_ago);
        assert!(a.cooldown_remaining().is_none());
        assert!(a.try_admit(Trigger::Webhook).is_ok());
        a.resume_cooldown(just_now);
        let left = a.cooldown_remaining().unwrap_or_default();
        assert!(left > Duration::from_secs(40) && left <= Duration::from_secs(50));
    }

    #[tokio::test]
    async fn waiting_admits_once_the_run_in_progress_ends() {
        let a = Arc::new(Admission::new(lock_path("wait"), HOUR));
        let first = a.try_admit(Trigger::Watermark);
        assert!(first.is_ok());
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.wait(Trigger::Cli).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "admitted while the first run held the slot"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(second, Ok(Ok(_))), "{second:?}");
    }

    #[tokio::test]
    async fn a_lock_file_that_cannot_be_opened_fails_open() {
        // A folder where the lock file's folder should be: the file cannot be created.
        let blocker = lock_path("blocker");
        if let Some(dir) = blocker.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&blocker, b"");
        let a = Admission::new(blocker.join("inside.lock"), HOUR);
        let ticket = a.try_admit(Trigger::Cli);
        assert!(ticket.is_ok(), "{:?}", ticket.err());
        assert_eq!(a.try_admit(Trigger::Cli).err(), Some(Refusal::Busy));
    }
}
