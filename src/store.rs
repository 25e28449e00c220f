//! The SQLite state store: build history, the cleanup audit, and a summary of both. bilge runs on
//! the disks it cleans, so the store must tolerate a full, locked or damaged file:
//!
//! - it opens lazily, in WAL mode with a busy timeout; a write that still loses the lock is
//!   retried before it counts as failed; every failure is logged and counted in
//!   `bilge_store_errors_total`, and callers carry on;
//! - a file that is not a SQLite database (or is corrupt) is moved aside to
//!   `<path>.corrupt-<time>` with one error line saying where, and a fresh one is started: it is
//!   never overwritten;
//! - the **summary tables** hold the totals the metrics show (builds by project, result and
//!   reason with their durations and last times; cleanup runs by trigger and result; bytes by
//!   action). They are updated in the same transaction as every row they count, so reading them
//!   costs the same however long the history is, and pruning old rows (retention) never lowers a
//!   counter;
//! - a cleanup run is written when it starts (`running`), updated after each level, and finished
//!   with its result; refusals are folded into one `skipped` row per cooldown window.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::model::Reason;
use crate::model::{Action, BuildResult, CleanupResult, Level, Trigger};
use crate::tally::{BUILD_DURATION_BUCKETS, Durations, Tally};
use crate::{Error, Result};

/// One recorded build, as pushed to and listed by `/api/v1/builds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Row id (absent until stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Project name (already capped by the caller).
    pub project: String,
    /// How it ended.
    pub result: BuildResult,
    /// `none` on success, else a classification reason.
    pub reason: Reason,
    /// The command's exit code (128+N for a signal).
    pub exit_code: Option<i32>,
    /// When the build started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Wall-clock seconds.
    pub duration_seconds: f64,
    /// The output line that decided the reason.
    pub evidence: Option<String>,
    /// The host that ran it.
    pub host: Option<String>,
    /// 1 for a first attempt, 2 for the retry after a cleanup.
    #[serde(default = "one")]
    pub attempt: u32,
}

/// serde's default for `attempt`.
fn one() -> u32 {
    1
}

/// serde's default for `count`.
fn one_run() -> u64 {
    1
}

/// What one cleanup action did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The level's name.
    pub action: String,
    /// Bytes Docker reported freed (estimated bytes in a dry run).
    pub reclaimed_bytes: u64,
    /// Objects removed (or that would be).
    pub removed: u64,
    /// The error, when the action failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it left alone for builds running on the host, and why (or why it did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// One cleanup run in the audit table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupRecord {
    /// Row id (absent until stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// What started it.
    pub trigger: Trigger,
    /// The highest level requested after capping.
    pub level: Level,
    /// How it ended (`running` while it executes).
    pub result: CleanupResult,
    /// Started (for folded refusals: the first one).
    pub started_at: DateTime<Utc>,
    /// Finished (while running: the last progress; for folded refusals: the last one).
    pub finished_at: DateTime<Utc>,
    /// Per action, in the order they ran.
    pub actions: Vec<ActionRecord>,
    /// Sum of the actions' bytes.
    pub reclaimed_bytes: u64,
    /// The alert fingerprint when the webhook started it (for folded refusals: the last one).
    pub alert: Option<String>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How many requests the row stands for: 1 for a run; the refusals folded into a `skipped` row.
    #[serde(default = "one_run")]
    pub count: u64,
}

impl CleanupRecord {
    /// What this row adds to the summary once it has ended (nothing while it runs).
    pub fn contribution(&self) -> Tally {
        let mut t = Tally::default();
        let bytes: Vec<(Action, u64)> = self
            .actions
            .iter()
            .filter_map(|a| Some((a.action.parse().ok()?, a.reclaimed_bytes)))
            .collect();
        t.observe_cleanup(
            self.trigger,
            self.result,
            self.count,
            &bytes,
            unix_seconds(&self.finished_at),
        );
        t
    }
}

impl BuildRecord {
    /// What this row adds to the summary.
    fn contribution(&self) -> Tally {
        let mut t = Tally::default();
        t.observe_build(
            self.host.as_deref().unwrap_or_default(),
            &self.project,
            self.result,
            self.reason,
            self.duration_seconds,
            unix_seconds(&self.finished_at),
        );
        t
    }
}

/// A time as Unix seconds with milliseconds.
fn unix_seconds(t: &DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The schema version this bilge writes (`PRAGMA user_version`). Version 0 is the schema before
/// the summary tables, version 1 the one before the per-host build totals, version 2 the one
/// before the images' last uses, version 3 the one before the schedules' last slots; all are
/// upgraded in place.
const SCHEMA_VERSION: i64 = 4;

/// What version 4 adds: the last slot each schedule of the policy handled (run, or seen when
/// the schedule was new), by name. Retention leaves it alone.
const SCHEDULE_TABLE: &str = "
CREATE TABLE IF NOT EXISTS schedule_slots (
    name TEXT PRIMARY KEY,
    last_slot REAL NOT NULL
) WITHOUT ROWID;
";

/// What version 3 adds: when each image was last used, by the planner's key
/// ([`crate::docker::image_key`]), from Docker's events.
const IMAGE_USE_TABLE: &str = "
CREATE TABLE IF NOT EXISTS image_uses (
    key TEXT PRIMARY KEY,
    last_used REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_uses_last ON image_uses (last_used);
";

/// The most image uses kept: beyond it the oldest go (a use older than every image is moot).
pub const MAX_IMAGE_USES: i64 = 100_000;

/// The history tables, as every version has had them.
const HISTORY_TABLES: &str = "
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT NOT NULL,
    exit_code INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    duration_seconds REAL NOT NULL,
    evidence TEXT,
    host TEXT,
    attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS builds_finished ON builds (finished_at);
CREATE TABLE IF NOT EXISTS cleanups (
    id INTEGER PRIMARY KEY,
    trigger TEXT NOT NULL,
    level TEXT NOT NULL,
    result TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    actions TEXT NOT NULL,
    reclaimed_bytes INTEGER NOT NULL,
    alert TEXT,
    detail TEXT
);
";

/// What version 1 adds: the refusal count, indexes for the cooldown and retention, the summary.
const SUMMARY_TABLES: &str = "
CREATE INDEX IF NOT EXISTS cleanups_started ON cleanups (started_at);
CREATE INDEX IF NOT EXISTS cleanups_finished ON cleanups (finished_at);
CREATE INDEX IF NOT EXISTS cleanups_result ON cleanups (result);
CREATE TABLE IF NOT EXISTS summary_projects (
    seq INTEGER PRIMARY KEY,
    project TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS summary_builds (
    project TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT NOT NULL,
    builds INTEGER NOT NULL,
    PRIMARY KEY (project, result, reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS summary_durations (
    project TEXT NOT NULL,
    result TEXT NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    buckets TEXT NOT NULL,
    last_finished REAL NOT NULL,
    PRIMARY KEY (project, result)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS summary_cleanup_runs (
    trigger TEXT NOT NULL,
    result TEXT NOT NULL,
    runs INTEGER NOT NULL,
    PRIMARY KEY (trigger, result)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS summary_cleanup_bytes (
    action TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS summary_meta (
    key TEXT PRIMARY KEY,
    value REAL NOT NULL
) WITHOUT ROWID;
";

/// What version 2 adds: builds by the host that ran them (`""`: this host), and the order hosts
/// were first seen in (the `--builds.max-hosts` cap keeps the first ones).
const HOST_TABLES: &str = "
CREATE TABLE IF NOT EXISTS summary_hosts (
    seq INTEGER PRIMARY KEY,
    host TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS summary_host_builds (
    host TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT NOT NULL,
    builds INTEGER NOT NULL,
    PRIMARY KEY (host, result, reason)
) WITHOUT ROWID;
";

/// The columns [`cleanup_row`] reads, in its order.
const CLEANUP_COLUMNS: &str = "id, trigger, level, result, started_at, finished_at, actions, reclaimed_bytes, alert, detail, count";

/// One `cleanups` row selected with [`CLEANUP_COLUMNS`].
fn cleanup_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CleanupRecord> {
    let actions: String = r.get(6)?;
    Ok(CleanupRecord {
        id: Some(r.get(0)?),
        trigger: named(r, 1)?,
        level: named(r, 2)?,
        result: named(r, 3)?,
        started_at: parse_ts(r.get(4)?)?,
        finished_at: parse_ts(r.get(5)?)?,
        actions: serde_json::from_str(&actions).unwrap_or_default(),
        reclaimed_bytes: r.get::<_, i64>(7)?.max(0) as u64,
        alert: r.get(8)?,
        detail: r.get(9)?,
        count: r.get::<_, i64>(10)?.max(1) as u64,
    })
}

/// The columns [`build_row`] reads, in its order.
const BUILD_COLUMNS: &str = "id, project, result, reason, exit_code, started_at, finished_at, duration_seconds, evidence, host, attempt";

/// One `builds` row selected with [`BUILD_COLUMNS`].
fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRecord> {
    Ok(BuildRecord {
        id: Some(r.get(0)?),
        project: r.get(1)?,
        result: named(r, 2)?,
        // A reason this version does not know (an edited file, another version) reads `unknown`.
        reason: named(r, 3).unwrap_or(Reason::Unknown),
        exit_code: r.get(4)?,
        started_at: parse_ts(r.get(5)?)?,
        finished_at: parse_ts(r.get(6)?)?,
        duration_seconds: r.get(7)?,
        evidence: r.get(8)?,
        host: r.get(9)?,
        attempt: r.get(10)?,
    })
}

/// Column `i` read as one of the named enums (stored as its `as_str` text).
fn named<T>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = r.get(i)?;
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A time as the store writes it: RFC 3339 in UTC with milliseconds, so that text order is time
/// order (retention and the cooldown compare it as text).
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A stored time.
fn parse_ts(s: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of a write that keeps losing the lock, before it counts as failed.
const WRITE_ATTEMPTS: u32 = 3;

/// SQLite's primary code of a failure, when it is one.
fn sqlite_code(e: &Error) -> Option<ErrorCode> {
    match e {
        Error::Store(rusqlite::Error::SqliteFailure(f, _)) => Some(f.code),
        _ => None,
    }
}

/// True when the file is not a database bilge can read: moved aside, never written over.
fn is_damaged(e: &Error) -> bool {
    matches!(
        sqlite_code(e),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// True when another connection held the lock longer than the busy timeout.
fn is_busy(e: &Error) -> bool {
    matches!(
        sqlite_code(e),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The open connection and which file it is (to tell, before moving a damaged file aside, that
/// it is still the one at the path).
#[derive(Debug)]
struct Open {
    /// The connection.
    conn: Connection,
    /// Device and inode of the file when it was opened.
    file: Option<(u64, u64)>,
}

/// Device and inode of `path`.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The store. Cheap to clone; one connection behind a mutex.
#[derive(Debug, Clone)]
pub struct Store {
    /// The database file.
    path: PathBuf,
    /// The connection, once opened.
    conn: Arc<Mutex<Option<Open>>>,
    /// `bilge_store_errors_total`.
    errors: IntCounter,
}

impl Store {
    /// A store at `path`; the file is opened (and created) on first use. `errors` counts failures.
    pub fn new(path: &Path, errors: IntCounter) -> Store {
        Store {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(None)),
            errors,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `path` (creating it and its folder) in WAL mode and brings its schema up to date.
    fn open(path: &Path) -> Result<Open> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers (the status page, the metrics) never wait for a writer, and a write is one
        // append. On a full disk the mode cannot change; the store still works in its old mode.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::debug!(path = %path.display(), mode, "state store: WAL mode not available");
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        migrate(&mut conn)?;
        Ok(Open {
            conn,
            file: file_id(path),
        })
    }

    /// Moves a damaged state file (and its WAL) aside and says where, unless another process
    /// already replaced it (then the fresh file at the path is left alone).
    fn set_aside(&self, opened: Option<(u64, u64)>, e: &Error) {
        let now = file_id(&self.path);
        if opened.is_some() && now != opened {
            tracing::warn!(path = %self.path.display(), "state store: the damaged state file was already replaced; reopening");
            return;
        }
        let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
        let mut aside = self.path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{stamp}"));
        let aside = PathBuf::from(aside);
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => {
                for suffix in ["-wal", "-shm"] {
                    let mut from = self.path.as_os_str().to_owned();
                    from.push(suffix);
                    let mut to = aside.as_os_str().to_owned();
                    to.push(suffix);
                    let _ = std::fs::rename(from, to);
                }
                tracing::error!(
                    path = %self.path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "the state file is not a readable database: moved it aside and started a fresh one (the history before now is in the moved file)"
                );
            }
            Err(re) => tracing::error!(
                path = %self.path.display(),
                error = %e,
                rename_error = %re,
                "the state file is not a readable database and cannot be moved aside; move or remove it by hand"
            ),
        }
    }

    /// Runs `f` on the connection, opening it first if needed. A damaged file is moved aside and
    /// `f` runs once more on a fresh one; a write that lost the lock is tried again. Failures
    /// that remain are logged and counted.
    fn with<T>(&self, what: &str, mut f: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        let mut guard = crate::sync::lock(&self.conn);
        let mut attempt = 0;
        let mut set_aside = false;
        let r = loop {
            attempt += 1;
            let r = (|| {
                if guard.is_none() {
                    *guard = Some(Self::open(&self.path)?);
                }
                match guard.as_mut() {
                    Some(o) => f(&mut o.conn),
                    None => Err(Error::Other("state store not open".into())),
                }
            })();
            match &r {
                Err(e) if is_damaged(e) && !set_aside => {
                    set_aside = true;
                    let opened = guard.take().and_then(|o| o.file);
                    self.set_aside(opened, e);
                }
                Err(e) if is_busy(e) && attempt < WRITE_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "state store: {what} lost the lock; trying again");
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                }
                _ => break r,
            }
        };
        if let Err(e) = &r {
            self.errors.inc();
            tracing::warn!(path = %self.path.display(), error = %e, "state store: {what} failed");
        }
        r
    }

    /// Runs `f` in one write transaction (taken at once, so the busy timeout applies).
    fn write<T>(&self, what: &str, mut f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(what, |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })
    }

    /// Opens the store now (creating the schema), so start-up can report a problem early.
    pub fn check(&self) -> Result<()> {
        self.with("open", |_| Ok(()))
    }

    /// Appends a build; returns its id.
    pub fn insert_build(&self, b: &BuildRecord) -> Result<i64> {
        self.write("writing a build", |tx| insert_build(tx, b))
    }

    /// Appends many builds in one transaction (an import, or seeding a test); returns how many.
    pub fn insert_builds(&self, builds: &[BuildRecord]) -> Result<usize> {
        self.write("writing builds", |tx| {
            for b in builds {
                insert_build(tx, b)?;
            }
            Ok(builds.len())
        })
    }

    /// The newest builds first.
    pub fn list_builds(&self, limit: usize) -> Result<Vec<BuildRecord>> {
        self.with("reading builds", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {BUILD_COLUMNS} FROM builds ORDER BY finished_at DESC, id DESC LIMIT ?1"
            ))?;
            let rows = st.query_map([limit as i64], build_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Number of build rows (for tests and the status page).
    pub fn count_builds(&self) -> Result<i64> {
        self.with("counting builds", |c| {
            Ok(c.query_row("SELECT COUNT(*) FROM builds", [], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    /// Appends a cleanup row (a run that starts as `running`, or one that has ended); returns its
    /// id. A row that has ended is added to the summary.
    pub fn insert_cleanup(&self, r: &CleanupRecord) -> Result<i64> {
        self.write("writing a cleanup", |tx| insert_cleanup(tx, r))
    }

    /// Writes row `id`'s progress or end. The summary counts the row once, when it goes from
    /// `running` to its result; a row that has already ended (another process marked it
    /// interrupted) is left as it is, and `false` says so.
    pub fn update_cleanup(&self, id: i64, r: &CleanupRecord) -> Result<bool> {
        self.write("writing a cleanup", |tx| {
            let old: Option<String> = tx
                .query_row("SELECT result FROM cleanups WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .optional()?;
            let Some(old) = old else {
                // Pruned by retention or gone with a damaged file: write it afresh.
                insert_cleanup(tx, r)?;
                return Ok(true);
            };
            if old != CleanupResult::Running.as_str() {
                return Ok(false);
            }
            let actions =
                serde_json::to_string(&r.actions).map_err(|e| Error::Other(e.to_string()))?;
            tx.execute(
                "UPDATE cleanups SET level = ?2, result = ?3, finished_at = ?4, actions = ?5,
                     reclaimed_bytes = ?6, alert = ?7, detail = ?8 WHERE id = ?1",
                params![
                    id,
                    r.level.as_str(),
                    r.result.as_str(),
                    ts(&r.finished_at),
                    actions,
                    r.reclaimed_bytes as i64,
                    r.alert,
                    r.detail
                ],
            )?;
            add_summary(tx, &r.contribution())?;
            Ok(true)
        })
    }

    /// Records a refused request: folded into the newest `skipped` row of its trigger that began
    /// at or after `since` (the start of the cooldown window: the last run that pruned), with
    /// one more in its count and this refusal's time, alert and reason; else a new row. Returns
    /// the row's id.
    pub fn fold_skipped(&self, r: &CleanupRecord, since: Option<DateTime<Utc>>) -> Result<i64> {
        self.write("writing a skipped cleanup", |tx| {
            let since = since.as_ref().map(ts).unwrap_or_default();
            let open: Option<i64> = tx
                .query_row(
                    "SELECT id FROM cleanups WHERE result = ?1 AND trigger = ?2 AND started_at >= ?3
                     ORDER BY id DESC LIMIT 1",
                    params![CleanupResult::Skipped.as_str(), r.trigger.as_str(), since],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(id) = open else {
                return insert_cleanup(tx, r);
            };
            tx.execute(
                "UPDATE cleanups SET count = count + ?2, finished_at = ?3, alert = COALESCE(?4, alert),
                     detail = ?5 WHERE id = ?1",
                params![id, r.count as i64, ts(&r.finished_at), r.alert, r.detail],
            )?;
            add_summary(tx, &r.contribution())?;
            Ok(id)
        })
    }

    /// Marks every `running` row except `keep` as `interrupted` (their process ended before the
    /// run did; the caller holds the host lock, so no other run is in progress), keeping what they
    /// freed, and counts them. Returns the rows as they now read.
    pub fn interrupt_running(&self, keep: &[i64]) -> Result<Vec<CleanupRecord>> {
        self.write("marking interrupted cleanups", |tx| {
            let mut st = tx.prepare(&format!(
                "SELECT {CLEANUP_COLUMNS} FROM cleanups WHERE result = ?1 ORDER BY id"
            ))?;
            let rows = st
                .query_map([CleanupResult::Running.as_str()], cleanup_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(st);
            let mut done = Vec::new();
            for mut r in rows {
                let Some(id) = r.id.filter(|id| !keep.contains(id)) else {
                    continue;
                };
                r.result = CleanupResult::Interrupted;
                let why = "the process running it ended before the run did";
                r.detail = Some(match r.detail.take() {
                    Some(d) => format!("{d}; {why}"),
                    None => why.to_string(),
                });
                tx.execute(
                    "UPDATE cleanups SET result = ?2, detail = ?3 WHERE id = ?1",
                    params![id, r.result.as_str(), r.detail],
                )?;
                add_summary(tx, &r.contribution())?;
                done.push(r);
            }
            Ok(done)
        })
    }

    /// When the newest run of an automatic trigger that pruned (or began to) started: the
    /// cooldown counts from it, however many refusals came after.
    pub fn last_automatic_start(&self) -> Result<Option<DateTime<Utc>>> {
        self.with("reading the last automatic cleanup", |c| {
            let pruned: Vec<&str> = CleanupResult::ALL
                .into_iter()
                .filter(|r| r.pruned())
                .map(CleanupResult::as_str)
                .collect();
            let automatic: Vec<&str> = Trigger::ALL
                .into_iter()
                .filter(|t| t.is_automatic())
                .map(Trigger::as_str)
                .collect();
            let list = |v: &[&str]| {
                v.iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let sql = format!(
                "SELECT started_at FROM cleanups WHERE result IN ({}) AND trigger IN ({})
                 ORDER BY started_at DESC LIMIT 1",
                list(&pruned),
                list(&automatic)
            );
            let at: Option<String> = c.query_row(&sql, [], |r| r.get(0)).optional()?;
            Ok(at.map(parse_ts).transpose()?)
        })
    }

    /// The newest cleanup runs first.
    pub fn list_cleanups(&self, limit: usize) -> Result<Vec<CleanupRecord>> {
        self.with("reading cleanups", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLEANUP_COLUMNS} FROM cleanups ORDER BY id DESC LIMIT ?1"
            ))?;
            let rows = st.query_map([limit as i64], cleanup_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The newest cleanup run, if any.
    pub fn last_cleanup(&self) -> Result<Option<CleanupRecord>> {
        Ok(self.list_cleanups(1)?.into_iter().next())
    }

    /// The totals the summary tables hold: every build and ended cleanup run ever stored,
    /// including those retention has pruned since.
    pub fn summary(&self) -> Result<Tally> {
        self.with("reading the summary", |c| read_summary(c))
    }

    /// Records image uses (`key`, when), keeping the newest per key and at most
    /// [`MAX_IMAGE_USES`] keys (the oldest uses go first).
    pub fn record_image_uses(&self, uses: &[(String, DateTime<Utc>)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        self.write("recording image uses", |tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO image_uses (key, last_used) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
            )?;
            for (key, at) in uses {
                st.execute(params![key, unix_seconds(at)])?;
            }
            tx.execute(
                "DELETE FROM image_uses WHERE key IN (SELECT key FROM image_uses
                 ORDER BY last_used DESC LIMIT -1 OFFSET ?1)",
                [MAX_IMAGE_USES],
            )?;
            Ok(())
        })
    }

    /// The last slot schedule `name` handled, if it ever ran here.
    pub fn schedule_slot(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
        self.with("reading a schedule's last slot", |c| {
            let secs: Option<f64> = c
                .prepare_cached("SELECT last_slot FROM schedule_slots WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?;
            Ok(secs.and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64)))
        })
    }

    /// Records `slot` as the last one schedule `name` handled (never moving it back).
    pub fn set_schedule_slot(&self, name: &str, slot: DateTime<Utc>) -> Result<()> {
        self.write("recording a schedule's slot", |tx| {
            tx.execute(
                "INSERT INTO schedule_slots (name, last_slot) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_slot = max(last_slot, excluded.last_slot)",
                params![name, unix_seconds(&slot)],
            )?;
            Ok(())
        })
    }

    /// Every recorded image use, by key.
    pub fn image_uses(&self) -> Result<HashMap<String, DateTime<Utc>>> {
        self.with("reading image uses", |c| {
            let mut st = c.prepare_cached("SELECT key, last_used FROM image_uses")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
            let mut out = HashMap::new();
            for row in rows {
                let (key, secs) = row?;
                if let Some(at) = DateTime::from_timestamp_millis((secs * 1000.0) as i64) {
                    out.insert(key, at);
                }
            }
            Ok(out)
        })
    }

    /// Deletes builds and ended cleanup runs that finished before `cutoff`, `batch` rows per
    /// transaction (so other writers wait at most one batch). The summary keeps counting them.
    /// Returns how many builds and cleanups went.
    pub fn prune(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<(u64, u64)> {
        let secs = unix_seconds(&cutoff);
        self.write("pruning old image uses", |tx| {
            Ok(tx.execute("DELETE FROM image_uses WHERE last_used < ?1", [secs])?)
        })?;
        let cutoff = ts(&cutoff);
        let mut gone = (0u64, 0u64);
        for (table, extra, count) in [
            ("builds", "", &mut gone.0),
            ("cleanups", " AND result != 'running'", &mut gone.1),
        ] {
            let sql = format!(
                "DELETE FROM {table} WHERE id IN
                 (SELECT id FROM {table} WHERE finished_at < ?1{extra} LIMIT ?2)"
            );
            loop {
                let n = self.write("pruning old rows", |tx| {
                    Ok(tx.execute(&sql, params![cutoff, batch as i64])?)
                })?;
                *count += n as u64;
                if n < batch {
                    break;
                }
            }
        }
        Ok(gone)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`]: creates it in a new file; in a file of version 0,
/// adds the refusal count and fills the summary from the rows there (once).
fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(Error::Other(format!(
            "the state file was written by a newer bilge (schema {version}, this one knows {SCHEMA_VERSION}); run that version, or give --state.path a new file"
        )));
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have migrated it while this one waited for the lock.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(tx.commit()?);
    }
    tx.execute_batch(IMAGE_USE_TABLE)?;
    tx.execute_batch(SCHEDULE_TABLE)?;
    if version == 2 || version == 3 {
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        return Ok(tx.commit()?);
    }
    if version == 1 {
        // The per-host totals start from the build rows still kept (older ones were counted
        // per project only, and stay so).
        tx.execute_batch(HOST_TABLES)?;
        let mut total = Tally::default();
        {
            let mut st = tx.prepare(&format!("SELECT {BUILD_COLUMNS} FROM builds ORDER BY id"))?;
            for b in st.query_map([], build_row)? {
                total.merge(&b?.contribution());
            }
        }
        add_host_summary(&tx, &total)?;
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        return Ok(tx.commit()?);
    }
    tx.execute_batch(HISTORY_TABLES)?;
    let has_count = tx
        .prepare("SELECT 1 FROM pragma_table_info('cleanups') WHERE name = 'count'")?
        .exists([])?;
    if !has_count {
        tx.execute_batch("ALTER TABLE cleanups ADD COLUMN count INTEGER NOT NULL DEFAULT 1")?;
    }
    tx.execute_batch(SUMMARY_TABLES)?;
    tx.execute_batch(HOST_TABLES)?;
    let mut total = Tally::default();
    {
        let mut st = tx.prepare(&format!("SELECT {BUILD_COLUMNS} FROM builds ORDER BY id"))?;
        for b in st.query_map([], build_row)? {
            total.merge(&b?.contribution());
        }
        let mut st = tx.prepare(&format!(
            "SELECT {CLEANUP_COLUMNS} FROM cleanups ORDER BY id"
        ))?;
        for r in st.query_map([], cleanup_row)? {
            total.merge(&r?.contribution());
        }
    }
    add_summary(&tx, &total)?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    tx.commit()?;
    Ok(())
}

/// Inserts one build row and counts it.
fn insert_build(tx: &Transaction<'_>, b: &BuildRecord) -> Result<i64> {
    tx.execute(
        "INSERT INTO builds (project, result, reason, exit_code, started_at, finished_at, duration_seconds, evidence, host, attempt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![b.project, b.result.as_str(), b.reason.as_str(), b.exit_code, ts(&b.started_at), ts(&b.finished_at),
                b.duration_seconds, b.evidence, b.host, b.attempt],
    )?;
    let id = tx.last_insert_rowid();
    add_summary(tx, &b.contribution())?;
    Ok(id)
}

/// Inserts one cleanup row and counts it (when it has ended).
fn insert_cleanup(tx: &Transaction<'_>, r: &CleanupRecord) -> Result<i64> {
    let actions = serde_json::to_string(&r.actions).map_err(|e| Error::Other(e.to_string()))?;
    tx.execute(
        "INSERT INTO cleanups (trigger, level, result, started_at, finished_at, actions, reclaimed_bytes, alert, detail, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![r.trigger.as_str(), r.level.as_str(), r.result.as_str(), ts(&r.started_at), ts(&r.finished_at), actions,
                r.reclaimed_bytes as i64, r.alert, r.detail, r.count as i64],
    )?;
    let id = tx.last_insert_rowid();
    add_summary(tx, &r.contribution())?;
    Ok(id)
}

/// Adds `t` to the summary tables (inside the caller's transaction).
fn add_summary(tx: &Transaction<'_>, t: &Tally) -> Result<()> {
    add_named(tx, &PROJECTS, &t.projects, &t.builds)?;
    for ((project, result), d) in &t.durations {
        let mut sum = tx
            .query_row(
                "SELECT count, sum, buckets, last_finished FROM summary_durations WHERE project = ?1 AND result = ?2",
                params![project, result.as_str()],
                durations_row,
            )
            .optional()?
            .unwrap_or_default();
        sum.merge(d);
        let buckets =
            serde_json::to_string(&sum.buckets[..]).map_err(|e| Error::Other(e.to_string()))?;
        tx.execute(
            "INSERT OR REPLACE INTO summary_durations (project, result, count, sum, buckets, last_finished)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![project, result.as_str(), sum.count as i64, sum.sum, buckets, sum.last_finished],
        )?;
    }
    add_host_summary(tx, t)?;
    for ((trigger, result), n) in &t.cleanup_runs {
        tx.execute(
            "INSERT INTO summary_cleanup_runs (trigger, result, runs) VALUES (?1, ?2, ?3)
             ON CONFLICT (trigger, result) DO UPDATE SET runs = runs + excluded.runs",
            params![trigger.as_str(), result.as_str(), *n as i64],
        )?;
    }
    for (level, n) in &t.cleanup_bytes {
        tx.execute(
            "INSERT INTO summary_cleanup_bytes (action, bytes) VALUES (?1, ?2)
             ON CONFLICT (action) DO UPDATE SET bytes = bytes + excluded.bytes",
            params![level.as_str(), *n as i64],
        )?;
    }
    if let Some(at) = t.cleanup_last_run {
        tx.execute(
            "INSERT INTO summary_meta (key, value) VALUES ('cleanup_last_run', ?1)
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            [at],
        )?;
    }
    Ok(())
}

/// Adds `t`'s per-host build totals to the summary tables.
fn add_host_summary(tx: &Transaction<'_>, t: &Tally) -> Result<()> {
    add_named(tx, &HOSTS, &t.hosts, &t.host_builds)
}

/// The summary tables of one capped build label: its names in first-seen order, and builds by
/// (name, result, reason).
#[derive(Debug)]
struct Named {
    /// The table of names (`seq`, the name column).
    names: &'static str,
    /// The name column in both tables.
    column: &'static str,
    /// The table of counts.
    counts: &'static str,
}

/// Builds by project.
const PROJECTS: Named = Named {
    names: "summary_projects",
    column: "project",
    counts: "summary_builds",
};

/// Builds by the host that ran them.
const HOSTS: Named = Named {
    names: "summary_hosts",
    column: "host",
    counts: "summary_host_builds",
};

/// Build totals by name, result and reason, as [`Tally`] keeps them.
type Counts = std::collections::BTreeMap<(String, BuildResult, Reason), u64>;

/// Adds `names` (in order) and `counts` to `n`'s tables.
fn add_named(tx: &Transaction<'_>, n: &Named, names: &[String], counts: &Counts) -> Result<()> {
    let (names_table, column, counts_table) = (n.names, n.column, n.counts);
    for name in names {
        tx.execute(
            &format!("INSERT OR IGNORE INTO {names_table} ({column}) VALUES (?1)"),
            [name],
        )?;
    }
    for ((name, result, reason), k) in counts {
        tx.execute(
            &format!(
                "INSERT INTO {counts_table} ({column}, result, reason, builds) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT ({column}, result, reason) DO UPDATE SET builds = builds + excluded.builds"
            ),
            params![name, result.as_str(), reason.as_str(), *k as i64],
        )?;
    }
    Ok(())
}

/// Reads `n`'s tables: the names in first-seen order and the counts (rows naming a result or
/// reason this version does not know are left out).
fn read_named(c: &Connection, n: &Named) -> Result<(Vec<String>, Counts)> {
    let (names_table, column, counts_table) = (n.names, n.column, n.counts);
    let mut st = c.prepare(&format!("SELECT {column} FROM {names_table} ORDER BY seq"))?;
    let names = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = c.prepare(&format!(
        "SELECT {column}, result, reason, builds FROM {counts_table}"
    ))?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut counts = Counts::new();
    for row in rows {
        let (name, result, reason, k) = row?;
        if let (Ok(result), Ok(reason)) = (result.parse(), reason.parse()) {
            *counts.entry((name, result, reason)).or_default() += k.max(0) as u64;
        }
    }
    Ok((names, counts))
}

/// One `summary_durations` row (count, sum, buckets, last_finished).
fn durations_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Durations> {
    let text: String = r.get(2)?;
    let stored: Vec<u64> = serde_json::from_str(&text).unwrap_or_default();
    let mut buckets = [0u64; BUILD_DURATION_BUCKETS.len() + 1];
    for (b, n) in buckets.iter_mut().zip(stored) {
        *b = n;
    }
    Ok(Durations {
        count: r.get::<_, i64>(0)?.max(0) as u64,
        sum: r.get(1)?,
        buckets,
        last_finished: r.get(3)?,
    })
}

/// Reads the summary tables. Rows naming a value this version does not know are left out.
fn read_summary(c: &Connection) -> Result<Tally> {
    let mut t = Tally::default();
    (t.projects, t.builds) = read_named(c, &PROJECTS)?;
    (t.hosts, t.host_builds) = read_named(c, &HOSTS)?;
    let mut st = c.prepare(
        "SELECT count, sum, buckets, last_finished, project, result FROM summary_durations",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            durations_row(r)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    for row in rows {
        let (d, p, result) = row?;
        if let Ok(result) = result.parse() {
            t.durations.entry((p, result)).or_default().merge(&d);
        }
    }
    let mut st = c.prepare("SELECT trigger, result, runs FROM summary_cleanup_runs")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (trigger, result, n) = row?;
        if let (Ok(trigger), Ok(result)) = (trigger.parse(), result.parse()) {
            *t.cleanup_runs.entry((trigger, result)).or_default() += n.max(0) as u64;
        }
    }
    let mut st = c.prepare("SELECT action, bytes FROM summary_cleanup_bytes")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (action, n) = row?;
        if let Ok(action) = action.parse::<Action>() {
            *t.cleanup_bytes.entry(action).or_default() += n.max(0) as u64;
        }
    }
    t.cleanup_last_run = c
        .query_row(
            "SELECT value FROM summary_meta WHERE key = 'cleanup_last_run'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Level;

    /// A store of its own under the temporary folder, its folder, and its error counter.
    fn temp_store(name: &str) -> (Store, PathBuf, IntCounter) {
        let dir = std::env::temp_dir().join(format!("bilge-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let errors = IntCounter::new("e", "e").unwrap();
        (
            Store::new(&dir.join("sub/bilge.db"), errors.clone()),
            dir,
            errors,
        )
    }

    /// A build of `project` that ended with `result`, `secs` after a fixed time.
    fn build(project: &str, result: BuildResult, secs: i64) -> BuildRecord {
        let t = DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        let ok = result == BuildResult::Success;
        BuildRecord {
            id: None,
            project: project.into(),
            result,
            reason: if ok { Reason::None } else { Reason::NoSpace },
            exit_code: Some(if ok { 0 } else { 1 }),
            started_at: t,
            finished_at: t,
            duration_seconds: 1.5,
            evidence: None,
            host: Some("h".into()),
            attempt: 1,
        }
    }

    /// A cleanup row of `trigger` with `result`, freeing `bytes` of build cache, at `at`.
    fn cleanup(
        trigger: Trigger,
        result: CleanupResult,
        bytes: u64,
        at: DateTime<Utc>,
    ) -> CleanupRecord {
        CleanupRecord {
            id: None,
            trigger,
            level: Level::DanglingImages,
            result,
            started_at: at,
            finished_at: at,
            actions: vec![ActionRecord {
                action: "build_cache".into(),
                reclaimed_bytes: bytes,
                removed: 3,
                error: None,
                held: None,
            }],
            reclaimed_bytes: bytes,
            alert: Some("abc".into()),
            detail: None,
            count: 1,
        }
    }

    #[test]
    fn builds_round_trip_newest_first_and_are_summed_as_they_are_written() {
        let (s, dir, errors) = temp_store("builds");
        s.insert_build(&build("a", BuildResult::Success, 1))
            .unwrap();
        s.insert_build(&build("a", BuildResult::Failure, 2))
            .unwrap();
        s.insert_build(&build("b", BuildResult::Success, 3))
            .unwrap();
        let list = s.list_builds(2).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].project, "b");
        assert_eq!(list[1].reason, Reason::NoSpace);
        let t = s.summary().unwrap();
        assert_eq!(t.projects, ["a", "b"]);
        assert_eq!(
            t.builds[&("a".to_string(), BuildResult::Failure, Reason::NoSpace)],
            1
        );
        let d = &t.durations[&("b".to_string(), BuildResult::Success)];
        assert_eq!((d.count, d.sum, d.last_finished), (1, 1.5, 1_700_000_003.0));
        assert_eq!(errors.get(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_run_is_counted_once_when_it_goes_from_running_to_its_result() {
        let (s, dir, _) = temp_store("running");
        let now = Utc::now();
        let mut rec = cleanup(Trigger::Cli, CleanupResult::Running, 0, now);
        let id = s.insert_cleanup(&rec).unwrap();
        assert!(s.summary().unwrap().cleanup_runs.is_empty());
        rec.actions[0].reclaimed_bytes = 42;
        assert!(s.update_cleanup(id, &rec).unwrap());
        assert!(s.summary().unwrap().cleanup_bytes.is_empty());
        rec.result = CleanupResult::Success;
        assert!(s.update_cleanup(id, &rec).unwrap());
        // A second end of the same row changes nothing.
        assert!(!s.update_cleanup(id, &rec).unwrap());
        let t = s.summary().unwrap();
        assert_eq!(t.cleanup_runs[&(Trigger::Cli, CleanupResult::Success)], 1);
        assert_eq!(t.cleanup_bytes[&Action::Prune(Level::BuildCache)], 42);
        let got = s.last_cleanup().unwrap().unwrap();
        assert_eq!(
            (got.result, got.actions.clone()),
            (CleanupResult::Success, rec.actions)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rows_left_running_become_interrupted_with_what_they_freed() {
        let (s, dir, _) = temp_store("interrupted");
        let now = Utc::now();
        let dead = s
            .insert_cleanup(&cleanup(Trigger::Webhook, CleanupResult::Running, 7, now))
            .unwrap();
        let ours = s
            .insert_cleanup(&cleanup(Trigger::Cli, CleanupResult::Running, 0, now))
            .unwrap();
        let done = s.interrupt_running(&[ours]).unwrap();
        assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), [Some(dead)]);
        let t = s.summary().unwrap();
        assert_eq!(
            t.cleanup_runs[&(Trigger::Webhook, CleanupResult::Interrupted)],
            1
        );
        assert_eq!(t.cleanup_bytes[&Action::Prune(Level::BuildCache)], 7);
        assert!(t.cleanup_last_run.is_some());
        // An interrupted automatic run counts for the cooldown from its start.
        assert_eq!(
            s.last_automatic_start()
                .unwrap()
                .map(|t| t.timestamp_millis()),
            Some(now.timestamp_millis())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_cooldown_start_is_the_newest_run_however_many_refusals_follow() {
        let (s, dir, _) = temp_store("cooldown");
        let t0 = Utc::now() - chrono::Duration::seconds(60);
        s.insert_cleanup(&cleanup(Trigger::Webhook, CleanupResult::Success, 1, t0))
            .unwrap();
        s.insert_cleanup(&cleanup(
            Trigger::Cli,
            CleanupResult::Success,
            1,
            Utc::now(),
        ))
        .unwrap();
        for i in 0..100 {
            let mut r = cleanup(
                Trigger::Webhook,
                CleanupResult::Skipped,
                0,
                t0 + chrono::Duration::seconds(1 + i),
            );
            r.actions.clear();
            s.fold_skipped(&r, Some(t0)).unwrap();
        }
        assert_eq!(
            s.last_automatic_start()
                .unwrap()
                .map(|t| t.timestamp_millis()),
            Some(t0.timestamp_millis())
        );
        // The hundred refusals are one row, with the first and the last time.
        let rows = s.list_cleanups(10).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].result, rows[0].count),
            (CleanupResult::Skipped, 100)
        );
        assert_eq!(
            rows[0].started_at.timestamp(),
            (t0 + chrono::Duration::seconds(1)).timestamp()
        );
        assert_eq!(
            rows[0].finished_at.timestamp(),
            (t0 + chrono::Duration::seconds(100)).timestamp()
        );
        let t = s.summary().unwrap();
        assert_eq!(
            t.cleanup_runs[&(Trigger::Webhook, CleanupResult::Skipped)],
            100
        );
        // A refusal of a later window opens a row of its own.
        let later = t0 + chrono::Duration::seconds(500);
        let mut r = cleanup(
            Trigger::Webhook,
            CleanupResult::Skipped,
            0,
            later + chrono::Duration::seconds(1),
        );
        r.actions.clear();
        s.fold_skipped(&r, Some(later)).unwrap();
        assert_eq!(s.list_cleanups(10).unwrap().len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn retention_prunes_old_rows_and_never_lowers_a_counter() {
        let (s, dir, _) = temp_store("retention");
        let old: Vec<BuildRecord> = (0..250)
            .map(|i| build("p", BuildResult::Success, i))
            .collect();
        assert_eq!(s.insert_builds(&old).unwrap(), 250);
        let recent = Utc::now();
        let mut new = build("p", BuildResult::Success, 0);
        new.finished_at = recent;
        s.insert_build(&new).unwrap();
        s.insert_cleanup(&cleanup(
            Trigger::Cli,
            CleanupResult::Success,
            5,
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        ))
        .unwrap();
        s.insert_cleanup(&cleanup(
            Trigger::Cli,
            CleanupResult::Running,
            0,
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        ))
        .unwrap();
        let before = s.summary().unwrap();
        let gone = s.prune(recent - chrono::Duration::days(1), 100).unwrap();
        assert_eq!(gone, (250, 1));
        assert_eq!(s.count_builds().unwrap(), 1);
        // The run still in progress stays, whatever its age.
        assert_eq!(
            s.list_cleanups(10).unwrap()[0].result,
            CleanupResult::Running
        );
        assert_eq!(s.summary().unwrap(), before);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_of_schema_one_gains_per_host_totals_from_its_kept_rows() {
        let (s, dir, _) = temp_store("upgrade-hosts");
        std::fs::create_dir_all(s.path().parent().unwrap()).unwrap();
        {
            let c = Connection::open(s.path()).unwrap();
            c.execute_batch(HISTORY_TABLES).unwrap();
            c.execute_batch("ALTER TABLE cleanups ADD COLUMN count INTEGER NOT NULL DEFAULT 1")
                .unwrap();
            c.execute_batch(SUMMARY_TABLES).unwrap();
            c.execute(
                "INSERT INTO builds (project, result, reason, exit_code, started_at, finished_at, duration_seconds, host)
                 VALUES ('web', 'failure', 'no_space', 1, '2025-06-01T10:00:00.000Z', '2025-06-01T10:00:07.000Z', 7.0, 'ci-7')",
                [],
            )
            .unwrap();
            // Counted per project by version 1, its row since deleted by retention.
            c.execute(
                "INSERT INTO summary_builds (project, result, reason, builds) VALUES ('web', 'failure', 'no_space', 3)",
                [],
            )
            .unwrap();
            c.execute_batch("PRAGMA user_version = 1").unwrap();
        }
        let t = s.summary().unwrap();
        assert_eq!(
            t.builds[&("web".to_string(), BuildResult::Failure, Reason::NoSpace)],
            3
        );
        assert_eq!(t.hosts, ["ci-7"]);
        assert_eq!(
            t.host_builds[&("ci-7".to_string(), BuildResult::Failure, Reason::NoSpace)],
            1
        );
        // And from now on each build is counted for its host too.
        let mut b = s.list_builds(1).unwrap().remove(0);
        b.id = None;
        b.host = None;
        s.insert_build(&b).unwrap();
        let t = s.summary().unwrap();
        assert_eq!(
            t.host_builds[&(String::new(), BuildResult::Failure, Reason::NoSpace)],
            1
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_of_the_first_schema_is_upgraded_with_its_history_summed() {
        let (s, dir, _) = temp_store("upgrade");
        std::fs::create_dir_all(s.path().parent().unwrap()).unwrap();
        {
            let c = Connection::open(s.path()).unwrap();
            c.execute_batch(HISTORY_TABLES).unwrap();
            c.execute(
                "INSERT INTO builds (project, result, reason, exit_code, started_at, finished_at, duration_seconds)
                 VALUES ('web', 'failure', 'no_space', 1, '2025-06-01T10:00:00.000Z', '2025-06-01T10:00:07.000Z', 7.0)",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO cleanups (trigger, level, result, started_at, finished_at, actions, reclaimed_bytes)
                 VALUES ('webhook', 'dangling_images', 'success', '2025-06-01T10:01:00.000Z', '2025-06-01T10:01:02.000Z',
                         '[{\"action\":\"dangling_images\",\"reclaimed_bytes\":9,\"removed\":1}]', 9)",
                [],
            )
            .unwrap();
        }
        let t = s.summary().unwrap();
        assert_eq!(
            t.builds[&("web".to_string(), BuildResult::Failure, Reason::NoSpace)],
            1
        );
        assert_eq!(t.cleanup_bytes[&Action::Prune(Level::DanglingImages)], 9);
        assert_eq!(s.list_cleanups(1).unwrap()[0].count, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_state_file_is_moved_aside_and_a_fresh_one_started() {
        let (s, dir, errors) = temp_store("damaged");
        std::fs::create_dir_all(s.path().parent().unwrap()).unwrap();
        let junk = vec![0x5au8; 64 * 1024];
        std::fs::write(s.path(), &junk).unwrap();
        s.insert_build(&build("a", BuildResult::Success, 1))
            .unwrap();
        assert_eq!(s.count_builds().unwrap(), 1);
        assert_eq!(errors.get(), 0);
        let aside: Vec<PathBuf> = std::fs::read_dir(s.path().parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        // The damaged file is kept as it was.
        assert_eq!(std::fs::read(&aside[0]).unwrap(), junk);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_counted_not_fatal() {
        let errors = IntCounter::new("e", "e").unwrap();
        let s = Store::new(Path::new("/proc/bilge/nope.db"), errors.clone());
        assert!(
            s.insert_build(&build("a", BuildResult::Success, 1))
                .is_err()
        );
        assert!(s.list_builds(1).is_err());
        assert_eq!(errors.get(), 2);
    }
}
