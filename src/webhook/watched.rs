//! A small file that bilge re-reads when it changes, without a restart: the webhook's token file
//! and the relay's targets file. Promises:
//!
//! - [`Watched::load`] reads and parses the file once at start-up; a file that cannot be read or
//!   parsed then is an error (start-up stops with one line).
//! - [`Watched::current`] looks at the file's identity (device, inode, size, modification and
//!   change times) on each use, which costs one `stat`, and re-reads it only when that changed:
//!   an edit in place, a rename over it and a Kubernetes ConfigMap or Secret update (a symlink
//!   swap) all count.
//! - A file that turns unreadable, too large or invalid keeps the last good contents in force,
//!   and says so in the log once per problem (not once per request); the next good version is
//!   taken and logged.
//! - Reads are bounded: a file larger than its limit is refused, never read whole. A `stat` and,
//!   after a change, a read of a few KiB are cheap enough for the async threads.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// What identifies one version of a file: when any of it changes, the file is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// Device and inode: a rename over the file or a symlink swap changes these.
    dev: u64,
    /// The inode number.
    ino: u64,
    /// Size in bytes.
    size: u64,
    /// Modification time (seconds, nanoseconds).
    mtime: (i64, i64),
    /// Status change time (seconds, nanoseconds): also moves on a write that keeps the mtime.
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of `path` (following symlinks), or why it cannot be had.
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Parses a file's text into its contents, or says in one line what is wrong.
pub type Parse<T> = fn(&str) -> Result<T, String>;

/// What the watcher knows between uses.
#[derive(Debug)]
struct State<T> {
    /// The stamp of the version last read (good or bad); `None` when the file could not be
    /// looked at last time.
    stamp: Option<Stamp>,
    /// The contents in force: the last good version.
    current: Arc<T>,
    /// The problem last logged, so each is logged once.
    problem: Option<String>,
}

/// A file re-read when it changes, keeping its last good contents. Share it in an `Arc`.
#[derive(Debug)]
pub struct Watched<T> {
    /// The file.
    path: PathBuf,
    /// The flag that named it, for log lines and errors.
    flag: &'static str,
    /// Largest size read, in bytes.
    limit: u64,
    /// Turns the text into contents.
    parse: Parse<T>,
    /// The last version seen and the contents in force.
    state: Mutex<State<T>>,
}

impl<T> Watched<T> {
    /// Reads and parses `path` (named by `flag` in messages) once; an error says what is wrong
    /// with the file, for start-up to stop on.
    pub fn load(
        path: &Path,
        flag: &'static str,
        limit: u64,
        parse: Parse<T>,
    ) -> Result<Watched<T>, String> {
        let stamp = Stamp::of(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let contents = read(path, limit).and_then(|text| parse(&text))?;
        Ok(Watched {
            path: path.to_path_buf(),
            flag,
            limit,
            parse,
            state: Mutex::new(State {
                stamp: Some(stamp),
                current: Arc::new(contents),
                problem: None,
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The contents in force now: re-read first when the file changed since the last use. A
    /// file that turned bad leaves the last good contents in force (logged once).
    pub fn current(&self) -> Arc<T> {
        let mut state = lock(&self.state);
        let stamp = match Stamp::of(&self.path) {
            Ok(s) => s,
            Err(e) => {
                state.stamp = None;
                self.trouble(
                    &mut state,
                    format!("cannot read {}: {e}", self.path.display()),
                );
                return state.current.clone();
            }
        };
        if state.stamp == Some(stamp) {
            return state.current.clone();
        }
        // The stamp is taken before the read: a write racing the read changes the stamp again,
        // so the next use reads once more.
        state.stamp = Some(stamp);
        match read(&self.path, self.limit).and_then(|text| (self.parse)(&text)) {
            Ok(contents) => {
                state.current = Arc::new(contents);
                state.problem = None;
                tracing::info!(flag = self.flag, path = %self.path.display(), "re-read after a change");
            }
            Err(e) => self.trouble(&mut state, e),
        }
        state.current.clone()
    }

    /// Logs `problem` unless it is the one logged last.
    fn trouble(&self, state: &mut State<T>, problem: String) {
        if state.problem.as_deref() != Some(problem.as_str()) {
            tracing::warn!(
                flag = self.flag,
                path = %self.path.display(),
                error = %problem,
                "the file changed and cannot be used; the last good version stays in force"
            );
            state.problem = Some(problem);
        }
    }
}

/// Reads `path` as UTF-8 text of at most `limit` bytes.
fn read(path: &Path, limit: u64) -> Result<String, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(limit.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!(
            "{} is larger than {limit} bytes; is it the right file?",
            path.display()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts non-empty lines; refuses a file that says "bad".
    fn lines(text: &str) -> Result<usize, String> {
        if text.contains("bad") {
            return Err("the file says bad".into());
        }
        Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
    }

    /// A fresh directory for one test.
    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bilge-watched-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_bad_one_keeps_the_last_good_version() {
        let d = dir("change");
        let p = d.join("f");
        std::fs::write(&p, "a\n").unwrap();
        let w = Watched::load(&p, "--test", 1024, lines).unwrap();
        assert_eq!(*w.current(), 1);
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(*w.current(), 3);
        std::fs::write(&p, "bad\n").unwrap();
        assert_eq!(*w.current(), 3);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(*w.current(), 3);
        // A new file renamed over the old path (as editors and ConfigMaps do).
        let tmp = d.join("f.new");
        std::fs::write(&tmp, "x\ny\n").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(*w.current(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_over_its_limit_is_refused_at_start_and_kept_out_later() {
        let d = dir("limit");
        let p = d.join("f");
        std::fs::write(&p, "a\n".repeat(100)).unwrap();
        let e = Watched::load(&p, "--test", 64, lines).unwrap_err();
        assert!(e.contains("larger than 64 bytes"), "{e}");
        std::fs::write(&p, "a\n").unwrap();
        let w = Watched::load(&p, "--test", 64, lines).unwrap();
        std::fs::write(&p, "a\n".repeat(100)).unwrap();
        assert_eq!(*w.current(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_or_bad_file_at_start_is_an_error_naming_the_file() {
        let d = dir("start");
        let p = d.join("absent");
        let e = Watched::load(&p, "--test", 64, lines).unwrap_err();
        assert!(e.contains("cannot read") && e.contains("absent"), "{e}");
        std::fs::write(&p, "bad").unwrap();
        assert_eq!(
            Watched::load(&p, "--test", 64, lines).unwrap_err(),
            "the file says bad"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
