//! The opt-in last resort for logs: Docker has no prune for container logs, and one runaway log
//! fills a build host as surely as build cache does. With `allow_log_truncation = true`, a run
//! that is still short of its target after its levels truncates the largest `json-file` and
//! `local` logs over `log_truncate_over`, largest first, measuring after each, until the target is
//! met. A container with a protect label keeps its log. The container keeps running: both
//! drivers append to their file, so after the truncation the next line lands at its start, and
//! `docker logs` reads what was written since. Rotated files (`max-file`) are left alone.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::policy::Policy;
use crate::docker::LogFile;

/// The log drivers whose file may be truncated.
pub const DRIVERS: [&str; 2] = ["json-file", "local"];

/// The logs to truncate, largest first: files of `DRIVERS` over the policy's
/// `log_truncate_over`, of containers without a protect label (pure). `files` pairs each log
/// with its size now.
pub fn candidates(policy: &Policy, files: Vec<(LogFile, u64)>) -> Vec<(LogFile, u64)> {
    let mut out: Vec<(LogFile, u64)> = files
        .into_iter()
        .filter(|(f, bytes)| {
            *bytes > policy.log_truncate_over
                && DRIVERS.contains(&f.driver.as_str())
                && !policy.protects(&f.labels)
        })
        .collect();
    out.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| a.0.container.cmp(&b.0.container))
    });
    out
}

/// Truncates the log file at `path` to nothing and says how many bytes it held. Only a
/// regular file is truncated: a symbolic link or anything else is refused.
pub fn truncate(path: &Path) -> std::io::Result<u64> {
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    f.set_len(0)?;
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FreeTarget;
    use std::collections::HashMap;

    fn log(name: &str, driver: &str, labels: &[(&str, &str)]) -> LogFile {
        LogFile {
            container: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            path: format!("/var/lib/docker/containers/{name}/{name}-json.log"),
            driver: driver.into(),
        }
    }

    #[test]
    fn only_large_file_logs_of_unprotected_containers_go_largest_first() {
        let policy = Policy {
            log_truncate_over: 100,
            target_free: FreeTarget::Percent(15.0),
            ..Policy::default()
        };
        let got = candidates(
            &policy,
            vec![
                (log("small", "json-file", &[]), 100),
                (log("big", "json-file", &[]), 500),
                (log("bigger", "local", &[]), 900),
                (log("kept", "json-file", &[("bilge.keep", "true")]), 5000),
                (log("journal", "journald", &[]), 5000),
            ],
        );
        let names: Vec<&str> = got.iter().map(|(f, _)| f.container.as_str()).collect();
        assert_eq!(names, ["bigger", "big"]);
    }

    #[test]
    fn a_log_is_truncated_in_place_and_a_link_is_refused() {
        let d = std::env::temp_dir().join(format!("bilge-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let file = d.join("c-json.log");
        std::fs::write(&file, vec![b'x'; 4096]).unwrap();
        let link = d.join("link.log");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(truncate(&link).is_err());
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 4096);
        assert_eq!(truncate(&file).unwrap(), 4096);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
        assert!(truncate(&d.join("missing.log")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
