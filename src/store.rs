//! The SQLite state store: build history and the cleanup audit. bilge runs on the disks it
//! cleans, so the store must tolerate a full or unwritable filesystem: it opens lazily, every
//! failure is logged and counted in `bilge_store_errors_total`, and callers carry on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::Reason;
use crate::model::{BuildResult, CleanupResult, Level, Trigger};
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

fn one() -> u32 {
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
    /// How it ended.
    pub result: CleanupResult,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: DateTime<Utc>,
    /// Per action, in the order they ran.
    pub actions: Vec<ActionRecord>,
    /// Sum of the actions' bytes.
    pub reclaimed_bytes: u64,
    /// The alert fingerprint when the webhook started it.
    pub alert: Option<String>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The columns [`cleanup_row`] reads, in its order.
const CLEANUP_COLUMNS: &str =
    "id, trigger, level, result, started_at, finished_at, actions, reclaimed_bytes, alert, detail";

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
    })
}

const SCHEMA: &str = "
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

/// The store. Cheap to clone; one connection behind a mutex.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    conn: Arc<Mutex<Option<Connection>>>,
    errors: IntCounter,
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

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
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

    fn open(path: &Path) -> Result<Connection> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    }

    /// Runs `f` on the connection, opening it first if needed; failures are logged and counted.
    fn with<T>(&self, what: &str, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut guard = crate::sync::lock(&self.conn);
        let r = (|| {
            if guard.is_none() {
                *guard = Some(Self::open(&self.path)?);
            }
            match guard.as_ref() {
                Some(c) => f(c),
                None => Err(Error::Other("state store not open".into())),
            }
        })();
        if let Err(e) = &r {
            self.errors.inc();
            tracing::warn!(path = %self.path.display(), error = %e, "state store: {what} failed");
        }
        r
    }

    /// Opens the store now (creating the schema), so start-up can report a problem early.
    pub fn check(&self) -> Result<()> {
        self.with("open", |_| Ok(()))
    }

    /// Appends a build; returns its id.
    pub fn insert_build(&self, b: &BuildRecord) -> Result<i64> {
        self.with("writing a build", |c| {
            c.execute(
                "INSERT INTO builds (project, result, reason, exit_code, started_at, finished_at, duration_seconds, evidence, host, attempt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![b.project, b.result.as_str(), b.reason.as_str(), b.exit_code, ts(&b.started_at), ts(&b.finished_at),
                        b.duration_seconds, b.evidence, b.host, b.attempt],
            )?;
            Ok(c.last_insert_rowid())
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

    /// Up to `limit` builds stored after row `id`, oldest first (for metrics that follow the table).
    pub fn builds_after(&self, id: i64, limit: usize) -> Result<Vec<BuildRecord>> {
        self.with("reading new builds", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![id, limit as i64], build_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// For each (project, result): the newest finish time, to restore gauges after a restart.
    pub fn last_build_times(&self) -> Result<Vec<(String, BuildResult, DateTime<Utc>)>> {
        self.with("reading build times", |c| {
            let mut st = c.prepare(
                "SELECT project, result, MAX(finished_at) FROM builds GROUP BY project, result",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, named(r, 1)?, parse_ts(r.get(2)?)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Distinct project names, oldest first (to rebuild the project cap after a restart).
    pub fn projects(&self) -> Result<Vec<String>> {
        self.with("reading projects", |c| {
            let mut st =
                c.prepare("SELECT project FROM builds GROUP BY project ORDER BY MIN(id)")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Appends a cleanup run; returns its id.
    pub fn insert_cleanup(&self, r: &CleanupRecord) -> Result<i64> {
        let actions = serde_json::to_string(&r.actions).map_err(|e| Error::Other(e.to_string()))?;
        self.with("writing a cleanup", |c| {
            c.execute(
                "INSERT INTO cleanups (trigger, level, result, started_at, finished_at, actions, reclaimed_bytes, alert, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![r.trigger.as_str(), r.level.as_str(), r.result.as_str(), ts(&r.started_at), ts(&r.finished_at), actions,
                        r.reclaimed_bytes as i64, r.alert, r.detail],
            )?;
            Ok(c.last_insert_rowid())
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

    /// Cleanup runs with an id above `id`, oldest first (for metrics that follow the table).
    pub fn cleanups_after(&self, id: i64, limit: usize) -> Result<Vec<CleanupRecord>> {
        self.with("reading new cleanups", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLEANUP_COLUMNS} FROM cleanups WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![id, limit as i64], cleanup_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The newest cleanup run, if any.
    pub fn last_cleanup(&self) -> Result<Option<CleanupRecord>> {
        Ok(self.list_cleanups(1)?.into_iter().next())
    }

    /// Number of build rows (for tests and the status page).
    pub fn count_builds(&self) -> Result<i64> {
        self.with("counting builds", |c| {
            Ok(c.query_row("SELECT COUNT(*) FROM builds", [], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn builds_round_trip_newest_first() {
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
        assert_eq!(s.last_build_times().unwrap().len(), 3);
        assert_eq!(s.projects().unwrap(), ["a", "b"]);
        let after: Vec<i64> = s
            .builds_after(1, 10)
            .unwrap()
            .iter()
            .filter_map(|b| b.id)
            .collect();
        assert_eq!(after, [2, 3]);
        assert_eq!(errors.get(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cleanups_round_trip_with_their_actions() {
        let (s, dir, _) = temp_store("cleanups");
        let now = Utc::now();
        let rec = CleanupRecord {
            id: None,
            trigger: Trigger::Cli,
            level: Level::DanglingImages,
            result: CleanupResult::Success,
            started_at: now,
            finished_at: now,
            actions: vec![ActionRecord {
                action: "build_cache".into(),
                reclaimed_bytes: 42,
                removed: 3,
                error: None,
            }],
            reclaimed_bytes: 42,
            alert: Some("abc".into()),
            detail: None,
        };
        s.insert_cleanup(&rec).unwrap();
        let got = s.last_cleanup().unwrap().unwrap();
        assert_eq!(got.actions, rec.actions);
        assert_eq!(got.alert.as_deref(), Some("abc"));
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
