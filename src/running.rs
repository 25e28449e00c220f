//! The builds running on this host, as `bilge build` registers them, so that an automatic
//! cleanup leaves their build cache and images alone. Its own module: `builds` writes it and
//! `cleanup` reads it, and neither may depend on the other both ways.
//!
//! Each running `bilge build` keeps one small file in the folder next to the host's cleanup
//! lock (`<lock file>.builds/<pid>.json`: host, pid, project, start) and holds an exclusive
//! `flock` on it while the build runs. Whether a build is still running is the lock's answer,
//! not a pid test: the lock holds across PID namespaces (a `bilge serve` in a container and a
//! `bilge build` on the host share the state folder, not their pids), and it is released by the
//! kernel when the process dies however it dies. A file whose lock is free is a leftover and is
//! removed by the next reader. Reading is bounded: at most [`MAX_FILES`] files of at most
//! [`MAX_FILE_BYTES`] each.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// The most registration files read.
pub const MAX_FILES: usize = 1024;
/// The largest registration file read.
pub const MAX_FILE_BYTES: u64 = 4096;

/// One running build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningBuild {
    /// The host it runs on (`--host.name`).
    pub host: String,
    /// Its `bilge build` process id (in that process's own PID namespace).
    pub pid: u32,
    /// Its project.
    pub project: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// The registration folder for the host lock file `lock`: `<lock>.builds`.
pub fn folder_for(lock: &Path) -> PathBuf {
    let mut s = lock.as_os_str().to_owned();
    s.push(".builds");
    PathBuf::from(s)
}

/// A registration, held while the build runs; dropping it removes the file and frees the lock.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The file goes before the lock does: a reader never sees it free and takes it for a
        // leftover of this live build.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Registers `build` in `folder`. A registration that cannot be written (a full or read-only
/// disk) is an error the caller logs; the build runs anyway, unprotected.
pub fn register(folder: &Path, build: &RunningBuild) -> std::io::Result<Registration> {
    std::fs::create_dir_all(folder)?;
    let path = folder.join(format!("{}.json", build.pid));
    let tmp = folder.join(format!(".{}.json.tmp", build.pid));
    let mut f = File::create(&tmp)?;
    let body = serde_json::to_vec(build).map_err(std::io::Error::other)?;
    f.write_all(&body)?;
    f.sync_all()?;
    // Locked before it is visible under its name, so no reader ever finds it unlocked.
    let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    std::fs::rename(&tmp, &path)?;
    Ok(Registration { path, _lock: lock })
}

/// The builds running now, oldest first. Leftovers of builds that ended without removing their
/// file are removed; files that cannot be read or parsed are skipped.
pub fn running(folder: &Path) -> Vec<RunningBuild> {
    let Ok(dir) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten().take(MAX_FILES) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let Ok(f) = File::open(&path) else { continue };
        match Flock::lock(f, FlockArg::LockSharedNonblock) {
            // Free: the build that held it is gone.
            Ok(_free) => {
                let _ = std::fs::remove_file(&path);
            }
            Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut body = Vec::new();
                if (&mut f).take(MAX_FILE_BYTES).read_to_end(&mut body).is_ok()
                    && let Ok(b) = serde_json::from_slice::<RunningBuild>(&body)
                {
                    out.push(b);
                }
            }
            Err(_) => {}
        }
    }
    out.sort_by_key(|b| b.started_at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bilge-running-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn build(pid: u32, secs: i64) -> RunningBuild {
        RunningBuild {
            host: "ci-1".into(),
            pid,
            project: "app".into(),
            started_at: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn a_registered_build_is_running_until_its_registration_is_dropped() {
        let d = folder("drop");
        assert!(running(&d).is_empty());
        let late = register(&d, &build(2, 2000)).unwrap();
        let early = register(&d, &build(1, 1000)).unwrap();
        assert_eq!(running(&d), [build(1, 1000), build(2, 2000)]);
        drop(early);
        assert_eq!(running(&d), [build(2, 2000)]);
        drop(late);
        assert!(running(&d).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_nobody_holds_is_a_leftover_and_goes() {
        let d = folder("left");
        std::fs::create_dir_all(&d).unwrap();
        let stale = d.join("77.json");
        std::fs::write(&stale, serde_json::to_vec(&build(77, 5)).unwrap()).unwrap();
        std::fs::write(d.join("junk.json"), b"\0\0not json").unwrap();
        assert!(running(&d).is_empty());
        assert!(!stale.exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
