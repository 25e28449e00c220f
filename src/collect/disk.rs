//! The filesystem collector: mounts from `/proc/self/mountinfo`, sizes from statvfs. A stat runs
//! on a blocking thread with a timeout; a mount whose stat hangs (dead NFS, FUSE) is marked stuck
//! and skipped until that stat returns, so one bad mount never stalls a collection.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use serde::Serialize;

/// node_exporter's default `--collector.filesystem.mount-points-exclude`.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter's default `--collector.filesystem.fs-types-exclude`.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$";

/// Which filesystems to report and how long a stat may take.
#[derive(Debug, Clone)]
pub struct FilesystemConfig {
    /// Mount points matching this are left out.
    pub mount_points_exclude: Regex,
    /// Filesystem types matching this are left out.
    pub fs_types_exclude: Regex,
    /// Longest time one statvfs may take before the mount counts as stuck.
    pub stat_timeout: Duration,
    /// Time between two filesystem collections (and watermark checks).
    pub interval: Duration,
}

/// One line of mountinfo, reduced to what bilge reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The mount source, e.g. `/dev/vda1`.
    pub device: String,
    /// Where it is mounted.
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mounted read-only. Not serialized: a [`Filesystem`] reports it once, through its usage,
    /// which includes it.
    #[serde(skip)]
    pub readonly: bool,
}

/// statvfs figures in bytes and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Total size.
    pub size: u64,
    /// Free, including blocks reserved for root.
    pub free: u64,
    /// Available to unprivileged users.
    pub avail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
    /// Read-only.
    pub readonly: bool,
}

impl Usage {
    /// Share of the filesystem that is used, as df computes it (used / (used + avail)).
    pub fn used_ratio(&self) -> f64 {
        let used = self.size.saturating_sub(self.free);
        let denom = used + self.avail;
        if denom == 0 {
            0.0
        } else {
            used as f64 / denom as f64
        }
    }
}

/// A mount with its figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filesystem {
    /// The mount.
    #[serde(flatten)]
    pub mount: Mount,
    /// Its figures.
    #[serde(flatten)]
    pub usage: Usage,
}

/// Decodes mountinfo's octal escapes (`\040` is a space). Only `\000` to `\377` are escapes
/// (one byte each); anything else, `\777` included, is kept as written.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` text (pure).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 2 {
            continue;
        }
        out.push(Mount {
            device: unescape(r[1]),
            mountpoint: unescape(l[4]),
            // The kernel escapes the type as it does the paths (`show_type` in
            // fs/proc_namespace.c), e.g. a FUSE subtype with a space.
            fstype: unescape(r[0]),
            readonly: l[5].split(',').any(|o| o == "ro"),
        });
    }
    out
}

/// Applies the exclusion regexps, as node_exporter does.
pub fn included(m: &Mount, cfg: &FilesystemConfig) -> bool {
    !cfg.mount_points_exclude.is_match(&m.mountpoint) && !cfg.fs_types_exclude.is_match(&m.fstype)
}

/// The mount holding `path`: the longest mount point that is a prefix of it.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.len())
}

/// statvfs on one path (blocking).
pub fn statvfs(path: &Path) -> std::io::Result<Usage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = s.fragment_size() as u64;
    let frag = if frag == 0 {
        s.block_size() as u64
    } else {
        frag
    };
    Ok(Usage {
        size: (s.blocks() as u64).saturating_mul(frag),
        free: (s.blocks_free() as u64).saturating_mul(frag),
        avail: (s.blocks_available() as u64).saturating_mul(frag),
        files: s.files() as u64,
        files_free: s.files_free() as u64,
        readonly: s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
    })
}

/// Reads the mount table of this process.
pub fn read_mounts() -> std::io::Result<Vec<Mount>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Stats paths with a timeout, remembering mounts whose stat never returned.
#[derive(Debug, Clone, Default)]
pub struct Statter {
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Why a stat gave no figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatError {
    /// A previous stat of this path has not returned yet.
    Stuck,
    /// This stat took longer than the timeout (it is left running and the path marked stuck).
    TimedOut,
    /// The stat failed.
    Failed(String),
}

impl std::fmt::Display for StatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatError::Stuck => f.write_str("an earlier stat has not returned (mount stuck)"),
            StatError::TimedOut => f.write_str("stat timed out; mount marked stuck"),
            StatError::Failed(e) => f.write_str(e),
        }
    }
}

impl Statter {
    /// statvfs(`path`) on a blocking thread, giving up after `timeout`.
    pub async fn stat(&self, path: &Path, timeout: Duration) -> Result<Usage, StatError> {
        let key = path.to_path_buf();
        {
            let stuck = self.stuck.lock().map_err(|_| StatError::Stuck)?;
            if stuck.contains(&key) {
                return Err(StatError::Stuck);
            }
        }
        let stuck = self.stuck.clone();
        let p = key.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let r = statvfs(&p);
            if let Ok(mut s) = stuck.lock() {
                s.remove(&p);
            }
            r
        });
        match tokio::time::timeout(timeout, handle).await {
            Ok(Ok(Ok(u))) => Ok(u),
            Ok(Ok(Err(e))) => Err(StatError::Failed(e.to_string())),
            Ok(Err(e)) => Err(StatError::Failed(e.to_string())),
            Err(_) => {
                if let Ok(mut s) = self.stuck.lock() {
                    s.insert(key);
                }
                Err(StatError::TimedOut)
            }
        }
    }
}

/// Collects every included filesystem. Mounts that fail to stat are logged and left out.
pub async fn collect(
    cfg: &FilesystemConfig,
    statter: &Statter,
) -> std::io::Result<Vec<Filesystem>> {
    let mounts = read_mounts()?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for m in mounts.into_iter().filter(|m| included(m, cfg)) {
        // A mount point mounted over twice reports the top mount only, once.
        if !seen.insert(m.mountpoint.clone()) {
            out.retain(|f: &Filesystem| f.mount.mountpoint != m.mountpoint);
        }
        match statter
            .stat(Path::new(&m.mountpoint), cfg.stat_timeout)
            .await
        {
            Ok(mut usage) => {
                usage.readonly |= m.readonly;
                out.push(Filesystem { mount: m, usage });
            }
            Err(e) => {
                tracing::debug!(mountpoint = %m.mountpoint, error = %e, "skipping filesystem");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:5 / /dev rw - devtmpfs udev rw
30 22 7:0 / /mnt/with\\040space rw,relatime - ext4 /dev/loop0 rw
31 22 7:1 / /srv/ro ro,relatime - ext4 /dev/loop1 ro
40 22 0:50 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw
";

    fn cfg() -> FilesystemConfig {
        FilesystemConfig {
            mount_points_exclude: Regex::new(DEFAULT_MOUNT_POINTS_EXCLUDE).unwrap(),
            fs_types_exclude: Regex::new(DEFAULT_FS_TYPES_EXCLUDE).unwrap(),
            stat_timeout: Duration::from_secs(1),
            interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_read_only_flags() {
        let m = parse_mountinfo(MI);
        assert_eq!(m.len(), 6);
        assert_eq!(m[3].mountpoint, "/mnt/with space");
        assert_eq!(m[3].device, "/dev/loop0");
        assert!(m[4].readonly && !m[0].readonly);
    }

    /// Found by the `mountinfo` fuzz target: the filesystem type was returned as written, with
    /// the kernel's `\040` escapes in it, while the mount point and source were decoded.
    #[test]
    fn the_filesystem_type_is_unescaped_as_the_kernel_escapes_it() {
        let m = parse_mountinfo("50 22 0:60 / /mnt/x rw - fuse.my\\040fs me\\134you rw\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].fstype, "fuse.my fs");
        assert_eq!(m[0].device, "me\\you");
    }

    /// Found by the `mountinfo` fuzz target: `\\777` (above one byte) overflowed the decoding
    /// of an octal escape, a panic in a debug build and a wrong byte in a release one.
    #[test]
    fn an_octal_escape_above_one_byte_is_kept_as_written() {
        let m = parse_mountinfo("50 22 0:60 / /mnt/\\777x\\400 rw - ext4 /dev/\\377 rw\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mountpoint, "/mnt/\\777x\\400");
        assert_eq!(m[0].device, "/dev/\u{fffd}");
    }

    #[test]
    fn node_exporters_default_exclusions_apply() {
        let c = cfg();
        let kept: Vec<String> = parse_mountinfo(MI)
            .into_iter()
            .filter(|m| included(m, &c))
            .map(|m| m.mountpoint)
            .collect();
        assert_eq!(kept, ["/", "/mnt/with space", "/srv/ro"]);
    }

    #[test]
    fn the_data_root_belongs_to_the_longest_matching_mount() {
        let m = parse_mountinfo(MI);
        let got = mount_of(&m, Path::new("/mnt/with space/docker")).map(|m| m.device.as_str());
        assert_eq!(got, Some("/dev/loop0"));
        assert_eq!(
            mount_of(&m, Path::new("/var/lib/docker")).map(|m| m.mountpoint.as_str()),
            Some("/")
        );
    }

    #[test]
    fn used_ratio_matches_df() {
        let u = Usage {
            size: 100,
            free: 10,
            avail: 5,
            ..Usage::default()
        };
        assert!((u.used_ratio() - 90.0 / 95.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_real_stat_of_the_root_filesystem_gives_figures() {
        let u = Statter::default()
            .stat(Path::new("/"), Duration::from_secs(5))
            .await;
        let Ok(u) = u else { panic!("{u:?}") };
        assert!(u.size > 0 && u.avail <= u.size && u.files > 0);
    }
}
