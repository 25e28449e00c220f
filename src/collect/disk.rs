//! The filesystem collector: the host's mount table, sizes from statvfs. A stat runs on a
//! blocking thread with a timeout; a mount whose stat hangs (dead NFS, FUSE) is marked stuck and
//! skipped until that stat returns, so one bad mount never stalls a collection.
//!
//! The mount table is PID 1's (`<procfs>/1/mountinfo`), as node_exporter reads it: in a container
//! given the host's `/` at `--path.rootfs` that is the host's table, and under a systemd sandbox
//! (`ProtectSystem=strict` remounts nearly everything read-only for the service alone) it is the
//! table outside the sandbox. When PID 1 is hidden (`ProtectProc=invisible`), bilge's own table is
//! read instead, and then only a filesystem's own read-only flag (its super block's) counts: the
//! read-only flag of a mount is how one process sees it, not what the filesystem can do.

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
    /// The window of the time-to-full forecast ([`super::forecast`]).
    pub forecast_window: Duration,
    /// Where the host's files and its `/proc` are (`--path.rootfs`, `--path.procfs`).
    pub host: HostPaths,
}

/// Where bilge finds the host: node_exporter's `--path.rootfs` and `--path.procfs`. A container
/// given the host's `/` at `/host` runs with `rootfs = /host`; on the host itself both are the
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// The host's `/`.
    pub rootfs: PathBuf,
    /// The host's `/proc`.
    pub procfs: PathBuf,
}

impl Default for HostPaths {
    fn default() -> HostPaths {
        HostPaths::new(None, None)
    }
}

/// Which mount table was read, and so which read-only flags it can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableOf {
    /// PID 1's: the host's view, mount flags included.
    Host,
    /// bilge's own (PID 1 could not be read): mount flags are this process's view only.
    Own,
}

impl HostPaths {
    /// `rootfs` defaults to `/`, `procfs` to the rootfs's `proc` (so `--path.rootfs=/host` alone
    /// reads `/host/proc`, the host's proc mounted under the host's root).
    pub fn new(rootfs: Option<PathBuf>, procfs: Option<PathBuf>) -> HostPaths {
        let rootfs = rootfs.unwrap_or_else(|| PathBuf::from("/"));
        let procfs = procfs.unwrap_or_else(|| rootfs.join("proc"));
        HostPaths { rootfs, procfs }
    }

    /// Where this process finds the host's `path` (an absolute path as the host names it, such as
    /// Docker's data root or a container's `LogPath`).
    pub fn file(&self, path: &Path) -> PathBuf {
        if self.rootfs == Path::new("/") {
            return path.to_path_buf();
        }
        self.rootfs.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The host's mount table: PID 1's, else this process's own with the mounts outside the
    /// rootfs left out and the rootfs's prefix taken off the rest.
    pub fn read_mounts(&self) -> std::io::Result<(Vec<Mount>, TableOf)> {
        let pid1 = self.procfs.join("1/mountinfo");
        match std::fs::read_to_string(&pid1) {
            Ok(text) => Ok((parse_mountinfo(&text), TableOf::Host)),
            Err(e) => {
                own_table_once(&pid1, &e);
                let text = std::fs::read_to_string("/proc/self/mountinfo")?;
                Ok((own_view(parse_mountinfo(&text), &self.rootfs), TableOf::Own))
            }
        }
    }
}

/// Says once per process that PID 1's table could not be read.
fn own_table_once(path: &Path, e: &std::io::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::info!(
            path = %path.display(),
            error = %e,
            "cannot read PID 1's mount table: reading bilge's own; read-only flags are the filesystems' own (mount flags are this process's view)"
        );
    });
}

/// bilge's own table seen as the host's: with a rootfs other than `/`, only the mounts under it,
/// named as the host names them (`/host/var/lib/docker` is `/var/lib/docker`) (pure).
pub fn own_view(mounts: Vec<Mount>, rootfs: &Path) -> Vec<Mount> {
    if rootfs == Path::new("/") {
        return mounts;
    }
    mounts
        .into_iter()
        .filter_map(|mut m| {
            let rest = Path::new(&m.mountpoint).strip_prefix(rootfs).ok()?;
            m.mountpoint = Path::new("/").join(rest).to_string_lossy().into_owned();
            Some(m)
        })
        .collect()
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
    /// Mounted read-only (the mount's own flag). Not serialized: a [`Filesystem`] reports it
    /// once, through its usage (see [`Mount::readonly_in`]).
    #[serde(skip)]
    pub readonly: bool,
    /// The device number (`major:minor`) mountinfo gives the mount, when it parses.
    #[serde(skip)]
    pub dev: Option<(u64, u64)>,
    /// The filesystem itself is read-only: its super block's flag (mounted `ro`, or remounted
    /// read-only after errors), the same in every mount namespace.
    #[serde(skip)]
    pub fs_readonly: bool,
}

impl Mount {
    /// Whether the host cannot write to it, as far as a table of `table` can tell.
    pub fn readonly_in(&self, table: TableOf) -> bool {
        match table {
            TableOf::Host => self.readonly || self.fs_readonly,
            TableOf::Own => self.fs_readonly,
        }
    }
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
            dev: l[2]
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))),
            fs_readonly: r.get(2).is_some_and(|o| o.split(',').any(|o| o == "ro")),
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

/// statvfs on `path`, which must be on device `dev` (blocking): a mount of the host's that did not
/// reach this process's view of the rootfs (mounted after a container started, without `rslave`
/// propagation) would otherwise report the filesystem beneath it under its name.
pub fn statvfs_of(path: &Path, dev: Option<(u64, u64)>) -> std::io::Result<Usage> {
    if let Some((major, minor)) = dev {
        let st = nix::sys::stat::stat(path).map_err(std::io::Error::from)?;
        let found = (
            nix::sys::stat::major(st.st_dev),
            nix::sys::stat::minor(st.st_dev),
        );
        if found != (major, minor) {
            return Err(std::io::Error::other(format!(
                "{} is on device {}:{}, not the mount's {major}:{minor}: the mount is not visible here (mount the host's / with rslave propagation)",
                path.display(),
                found.0,
                found.1
            )));
        }
    }
    statvfs(path)
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
        self.stat_on(path, None, timeout).await
    }

    /// [`Statter::stat`] of a path that must be on device `dev` ([`statvfs_of`]).
    pub async fn stat_on(
        &self,
        path: &Path,
        dev: Option<(u64, u64)>,
        timeout: Duration,
    ) -> Result<Usage, StatError> {
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
            let r = statvfs_of(&p, dev);
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
    let (mounts, table) = cfg.host.read_mounts()?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for m in mounts.into_iter().filter(|m| included(m, cfg)) {
        // A mount point mounted over twice reports the top mount only, once.
        if !seen.insert(m.mountpoint.clone()) {
            out.retain(|f: &Filesystem| f.mount.mountpoint != m.mountpoint);
        }
        // Through a rootfs, the path must still be the mount's (see `statvfs_of`); on the host
        // itself a mount point is its mount by definition. btrfs and bcachefs give each
        // subvolume a device number of its own, unlike the one mountinfo shows: not checked.
        let dev = (cfg.host.rootfs != Path::new("/")
            && !matches!(m.fstype.as_str(), "btrfs" | "bcachefs"))
        .then_some(m.dev)
        .flatten();
        match statter
            .stat_on(
                &cfg.host.file(Path::new(&m.mountpoint)),
                dev,
                cfg.stat_timeout,
            )
            .await
        {
            // statvfs's read-only flag is this process's view of the mount (a container's `:ro`
            // bind, a sandbox): the table says what the host sees.
            Ok(mut usage) => {
                usage.readonly = m.readonly_in(table);
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
            forecast_window: Duration::from_secs(3600),
            interval: Duration::from_secs(1),
            host: HostPaths::default(),
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

    /// A container's `:ro` bind of a writable filesystem, and a systemd sandbox's read-only
    /// remounts, are read-only mounts of read-write filesystems: read-only in the host's table
    /// only when the host mounted them so, never from bilge's own table. A filesystem remounted
    /// read-only after errors is read-only in every table.
    #[test]
    fn read_only_is_the_filesystems_in_bilges_own_table_and_the_hosts_in_pid_1s() {
        let m = parse_mountinfo(concat!(
            "61 60 252:0 /var/lib/docker /var/lib/docker ro,relatime - ext4 /dev/vda rw\n",
            "62 60 7:3 / /data rw,relatime - ext4 /dev/loop3 ro,errors=remount-ro\n",
            "63 60 7:4 / /srv rw,relatime - ext4 /dev/loop4 rw\n",
        ));
        assert_eq!(m[0].dev, Some((252, 0)));
        let flags = |t| m.iter().map(|m| m.readonly_in(t)).collect::<Vec<_>>();
        assert_eq!(flags(TableOf::Host), [true, true, false]);
        assert_eq!(flags(TableOf::Own), [false, true, false]);
    }

    #[test]
    fn the_host_is_found_under_the_rootfs() {
        let h = HostPaths::default();
        assert_eq!(h.procfs, Path::new("/proc"));
        assert_eq!(
            h.file(Path::new("/var/lib/docker")),
            Path::new("/var/lib/docker")
        );
        let h = HostPaths::new(Some("/host".into()), None);
        assert_eq!(h.procfs, Path::new("/host/proc"));
        assert_eq!(
            h.file(Path::new("/var/lib/docker/containers/a/a-json.log")),
            Path::new("/host/var/lib/docker/containers/a/a-json.log")
        );
        let h = HostPaths::new(Some("/host".into()), Some("/proc".into()));
        assert_eq!(h.procfs, Path::new("/proc"));
    }

    /// bilge's own table through a rootfs: its own mounts (`/etc/hosts`, secrets) are not the
    /// host's and go; the host's are named as the host names them.
    #[test]
    fn the_own_table_through_a_rootfs_keeps_the_hosts_mounts_under_their_names() {
        let m = parse_mountinfo(concat!(
            "70 69 0:80 / / rw - overlay overlay rw\n",
            "71 70 252:0 /etc/hosts /etc/hosts rw - ext4 /dev/vda rw\n",
            "72 70 252:0 / /host ro,rslave - ext4 /dev/vda rw\n",
            "73 72 7:0 / /host/srv ro,rslave - ext4 /dev/loop0 rw\n",
            "74 70 0:90 / /hostile rw - tmpfs tmpfs rw\n",
        ));
        let names: Vec<String> = own_view(m.clone(), Path::new("/host"))
            .into_iter()
            .map(|m| m.mountpoint)
            .collect();
        assert_eq!(names, ["/", "/srv"]);
        assert_eq!(own_view(m, Path::new("/")).len(), 5);
    }

    /// A host mount that did not reach the container's view of the rootfs is refused rather than
    /// reported with the figures of the filesystem beneath it.
    #[test]
    fn a_path_on_another_device_than_its_mount_is_refused() {
        use std::os::unix::fs::MetadataExt as _;
        let dev = std::fs::metadata("/").unwrap().dev();
        let own = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        assert!(statvfs_of(Path::new("/"), Some(own)).is_ok());
        let e = statvfs_of(Path::new("/"), Some((own.0, own.1 + 1))).unwrap_err();
        assert!(e.to_string().contains("not visible here"), "{e}");
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
