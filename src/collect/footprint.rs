//! Where the disk went: the bytes under Docker's data root (and containerd's root), walked as
//! `du -x` counts them, set beside what Docker's accounting explains. Each storage filesystem
//! splits into three parts: Docker's (images, containers, volumes, build cache, logs and the
//! daemon's own state), under the root but not Docker's (orphaned layer directories, `tmp`,
//! abandoned downloads, anything else), and outside the root.
//!
//! The walk is the expensive part, so it runs on a slow cadence on a thread of its own at idle I/O
//! priority and lowest CPU priority; it never crosses into another filesystem (a running
//! container's overlay, a volume's mount), counts a hard-linked file once, and stops at
//! [`MAX_ENTRIES`]. Attribution is pure and reads only names, ages and Docker's own lists:
//!
//! - `overlay2/<64 hex>` (and `-init`) is Docker's while the layer store (`image/<driver>/layerdb`)
//!   names it as a layer's `cache-id` or a container's `mount-id`/`init-id`. BuildKit's snapshots
//!   and the layers it commits are named by 25-character ids and are not in the layer store, so
//!   they count as Docker's (its build cache); an orphaned BuildKit snapshot is not found here.
//! - `containers/<id>` and `volumes/<name>` are Docker's while `/system/df` lists them.
//! - `tmp` is never Docker's accounting (downloads and contexts in flight, and leftovers).
//! - A directory younger than [`ORPHAN_GRACE`] (by its newest mtime) is Docker's: it may be a
//!   layer being extracted or a container being created after the last `/system/df`.
//!
//! bilge deletes nothing here: the figures say where to look, the runbook says how to reclaim.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Role;

/// How young a directory may be and still count as Docker's though no list names it yet.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(30 * 60);
/// Most entries one measurement visits; past it the figures are marked incomplete.
pub const MAX_ENTRIES: u64 = 20_000_000;
/// Most hard-linked files remembered (to count each once); past it the figures are incomplete.
pub const MAX_LINKS: usize = 2_000_000;
/// Most unaccounted paths named per filesystem; the rest are summed as `other`.
pub const MAX_PATHS: usize = 12;
/// The longest directory name kept in a path label.
const MAX_NAME: usize = 64;

/// The storage drivers that keep one directory per layer under `<data root>/<driver>`.
pub const LAYER_DRIVERS: &[&str] = &["overlay2", "fuse-overlayfs"];
/// Every classic storage driver's directory under the data root.
const DRIVER_DIRS: &[&str] = &[
    "overlay2",
    "fuse-overlayfs",
    "aufs",
    "btrfs",
    "devicemapper",
    "vfs",
    "zfs",
];
/// The data root's own directories and files other than the driver's, `containers`, `volumes`
/// and `tmp` (`rootfs` holds the containers' mounts with the containerd image store).
const DOCKER_DIRS: &[&str] = &[
    "buildkit",
    "builder",
    "containerd",
    "engine-id",
    "image",
    "network",
    "plugins",
    "rootfs",
    "runtimes",
    "swarm",
    "trust",
];
/// Files of `volumes` that are no volume.
const VOLUMES_FILES: &[&str] = &["metadata.db", "backingFsBlockDev"];
/// containerd's content store, whose `ingest` holds downloads in flight (or abandoned).
const CONTENT: &str = "io.containerd.content.v1.content";

/// What a walked tree is, which decides how its entries are attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Docker's data root.
    DataRoot,
    /// containerd's root.
    ContainerdRoot,
}

impl Tree {
    /// Whether this top-level entry is measured child by child (each may be an orphan).
    fn split(self, top: &str) -> bool {
        match self {
            Tree::DataRoot => {
                LAYER_DRIVERS.contains(&top) || top == "containers" || top == "volumes"
            }
            Tree::ContainerdRoot => top == CONTENT,
        }
    }
}

/// The bytes under one top-level entry of a tree, or under one child of a split one.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The tree it is in.
    pub tree: Tree,
    /// Its name under the tree's root: one component, or two for a split entry's child.
    pub key: Vec<String>,
    /// Bytes allocated to it and everything under it (`st_blocks` × 512).
    pub bytes: u64,
    /// The newest modification time in it.
    pub newest: Option<SystemTime>,
}

/// What one walk found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Walked {
    /// Every top-level entry (and split entry's child) with its bytes.
    pub nodes: Vec<Node>,
    /// All bytes walked, the roots' own inodes included.
    pub bytes: u64,
    /// Entries visited.
    pub entries: u64,
    /// False when a bound was hit or the walk was stopped: the figures are a lower bound.
    pub complete: bool,
}

/// Walks each tree (`du -x`: allocated bytes, one filesystem, hard links once), up to the bounds.
/// An entry that vanishes or cannot be read while walking is left out; a root that cannot be read
/// is an error.
pub fn walk(trees: &[(Tree, PathBuf)], stop: &AtomicBool) -> std::io::Result<Walked> {
    walk_bounded(trees, stop, MAX_ENTRIES, MAX_LINKS)
}

fn walk_bounded(
    trees: &[(Tree, PathBuf)],
    stop: &AtomicBool,
    max_entries: u64,
    max_links: usize,
) -> std::io::Result<Walked> {
    let mut out = Walked {
        complete: true,
        ..Walked::default()
    };
    let mut links: HashSet<(u64, u64)> = HashSet::new();
    for (tree, root) in trees {
        let meta = std::fs::symlink_metadata(root)?;
        let dev = meta.dev();
        out.bytes += meta.blocks() * 512;
        out.entries += 1;
        // Directories still to read: path, depth below the root, node they count to.
        let mut pending: Vec<(PathBuf, usize, Option<usize>)> = vec![(root.clone(), 0, None)];
        while let Some((dir, depth, node)) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if stop.load(Ordering::Relaxed) || out.entries >= max_entries {
                    out.complete = false;
                    return Ok(out);
                }
                let Ok(m) = entry.metadata() else { continue };
                out.entries += 1;
                if m.nlink() > 1 && !m.is_dir() {
                    if links.len() >= max_links {
                        out.complete = false;
                    } else if !links.insert((m.dev(), m.ino())) {
                        continue;
                    }
                }
                let bytes = m.blocks() * 512;
                let newest = m.modified().ok();
                // The entry's node: its own at the top (and below a split entry), else its
                // directory's.
                let top = out.nodes.get(node.unwrap_or(usize::MAX));
                let own = depth == 0
                    || (depth == 1
                        && top.is_some_and(|t| tree.split(&t.key[0]) && t.key.len() == 1));
                let idx = if own {
                    let mut key = top.map(|t| t.key.clone()).unwrap_or_default();
                    key.push(label_name(&entry.file_name().to_string_lossy()));
                    out.nodes.push(Node {
                        tree: *tree,
                        key,
                        bytes: 0,
                        newest: None,
                    });
                    out.nodes.len() - 1
                } else {
                    match node {
                        Some(i) => i,
                        None => continue,
                    }
                };
                if let Some(n) = out.nodes.get_mut(idx) {
                    n.bytes += bytes;
                    n.newest = n.newest.max(newest);
                }
                out.bytes += bytes;
                if m.is_dir() && m.dev() == dev {
                    pending.push((entry.path(), depth + 1, Some(idx)));
                }
            }
        }
    }
    Ok(out)
}

/// A directory name as a label: lossy UTF-8, at most [`MAX_NAME`] characters.
fn label_name(name: &str) -> String {
    name.chars().take(MAX_NAME).collect()
}

/// What Docker's own lists say is its, for [`attribute`].
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The daemon's storage driver (`overlay2`, or `overlayfs` for the containerd store).
    pub driver: String,
    /// The layer directories the layer store names; `None` when it could not be read (then no
    /// layer directory counts as orphaned).
    pub layers: Option<HashSet<String>>,
    /// Full ids of the containers `/system/df` listed.
    pub containers: HashSet<String>,
    /// Names of the volumes `/system/df` listed.
    pub volumes: HashSet<String>,
    /// Now, for the grace period.
    pub now: Option<SystemTime>,
}

/// Reads the layer directories that `<data root>/image/<driver>/layerdb` names: each layer's
/// `cache-id`, each container's `mount-id` and `init-id`. No layer store (a fresh daemon, the
/// containerd store) names none; one that cannot be read is `None`.
pub fn read_layers(data_root: &Path, driver: &str) -> Option<HashSet<String>> {
    let db = data_root.join("image").join(driver).join("layerdb");
    let mut layers = HashSet::new();
    for (dir, files) in [
        ("sha256", &["cache-id"][..]),
        ("mounts", &["mount-id", "init-id"][..]),
    ] {
        let entries = match std::fs::read_dir(db.join(dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        for entry in entries {
            let entry = entry.ok()?;
            for f in files {
                match read_id(&entry.path().join(f)) {
                    Ok(id) => {
                        layers.insert(id);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => return None,
                }
            }
        }
    }
    Some(layers)
}

/// The longest id read from a layer store file: a layer folder's name is 64 hex digits (and
/// `-init`), BuildKit's 25 characters; more is not an id and is not read.
const MAX_ID: u64 = 128;

/// An id file of the layer store, trimmed, read up to [`MAX_ID`] bytes whatever its size.
fn read_id(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut id = String::new();
    std::fs::File::open(path)?
        .take(MAX_ID)
        .read_to_string(&mut id)
        .or_else(|e| match e.kind() {
            // Not UTF-8: no id a layer folder could have.
            std::io::ErrorKind::InvalidData => Ok(0),
            _ => Err(e),
        })?;
    Ok(id.trim().to_string())
}

/// Whether `name` has the shape of a layer directory of the classic store: 64 hex digits, or
/// those and `-init` (a container's init layer).
fn layer_shaped(name: &str) -> bool {
    let id = name.strip_suffix("-init").unwrap_or(name);
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What kind of bytes an unaccounted path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Layer folders that no layer or container mount names.
    OrphanedLayers,
    /// The folder of a storage driver the daemon does not run (now).
    InactiveDriver,
    /// The data root's `tmp`.
    Tmp,
    /// Container folders Docker does not list.
    OrphanedContainers,
    /// Volume folders Docker does not list.
    OrphanedVolumes,
    /// containerd downloads never finished.
    Ingest,
    /// containerd's temporary mounts.
    Tmpmounts,
    /// Anything else under a root.
    Foreign,
    /// The paths past [`MAX_PATHS`], summed.
    Other,
}

impl Kind {
    /// What such bytes usually are, in a few words (for `bilge df` and the page).
    pub fn describe(self) -> &'static str {
        match self {
            Kind::OrphanedLayers => "orphaned layer folders",
            Kind::InactiveDriver => "a storage driver or image store the daemon does not run now",
            Kind::Tmp => "downloads and build contexts in flight, or left behind",
            Kind::OrphanedContainers => "folders of containers Docker does not list",
            Kind::OrphanedVolumes => "folders of volumes Docker does not list",
            Kind::Ingest => "downloads never finished",
            Kind::Tmpmounts => "containerd's temporary mounts",
            Kind::Foreign => "not Docker's",
            Kind::Other => "more paths that are not Docker's",
        }
    }
}

/// Where a node's bytes go (pure): `None` for Docker's, else the unaccounted path they count to
/// (relative to the tree's root) and their kind.
pub fn attribute(node: &Node, known: &Known) -> Option<(String, Kind)> {
    let young = match (node.newest, known.now) {
        (Some(t), Some(now)) => now.duration_since(t).unwrap_or_default() < ORPHAN_GRACE,
        _ => false,
    };
    let top = node.key.first()?.as_str();
    let child = node.key.get(1).map(String::as_str);
    let of = |kind| Some((top.to_string(), kind));
    match node.tree {
        Tree::DataRoot => match (top, child) {
            ("tmp", _) => of(Kind::Tmp),
            (d, child) if DRIVER_DIRS.contains(&d) => {
                if d != known.driver {
                    // The folder of a driver the daemon does not run now: left from before a
                    // switch of driver or of image store.
                    return of(Kind::InactiveDriver);
                }
                let name = child?;
                let layers = known.layers.as_ref()?;
                let orphan = layer_shaped(name) && !young && !layers.contains(name);
                if orphan {
                    of(Kind::OrphanedLayers)
                } else {
                    None
                }
            }
            ("containers", Some(id)) if !young && !known.containers.contains(id) => {
                of(Kind::OrphanedContainers)
            }
            ("volumes", Some(v))
                if !young && !VOLUMES_FILES.contains(&v) && !known.volumes.contains(v) =>
            {
                of(Kind::OrphanedVolumes)
            }
            ("containers" | "volumes", _) => None,
            (d, _) if DOCKER_DIRS.contains(&d) => None,
            _ => of(Kind::Foreign),
        },
        Tree::ContainerdRoot => match (top, child) {
            ("tmpmounts", _) => of(Kind::Tmpmounts),
            (CONTENT, Some("ingest")) if !young => {
                Some((format!("{CONTENT}/ingest"), Kind::Ingest))
            }
            _ => None,
        },
    }
}

/// One unaccounted path and its bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unaccounted {
    /// The path (absolute, as the daemon names it), or `other` for the rest past [`MAX_PATHS`].
    pub path: String,
    /// What its bytes usually are.
    pub kind: Kind,
    /// Its bytes.
    pub bytes: u64,
}

/// One storage filesystem's footprint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Footprint {
    /// Which root's filesystem.
    pub role: Role,
    /// Its mount point.
    pub mountpoint: String,
    /// The directories walked on it (the data root, and containerd's root when it is there too).
    pub paths: Vec<String>,
    /// Bytes in use on the filesystem (size − free) when the walk ended.
    pub used_bytes: u64,
    /// Bytes walked under the roots.
    pub walked_bytes: u64,
    /// Of those, Docker's.
    pub docker_bytes: u64,
    /// Of those, not Docker's.
    pub unaccounted_bytes: u64,
    /// In use on the filesystem outside the roots (used − walked).
    pub outside_bytes: u64,
    /// The unaccounted bytes by path, largest first.
    pub unaccounted: Vec<Unaccounted>,
    /// Entries visited.
    pub entries: u64,
    /// False when the walk hit a bound or was stopped (the figures are a lower bound).
    pub complete: bool,
    /// How long the walk took.
    pub seconds: f64,
    /// When it ended.
    pub at: DateTime<Utc>,
}

/// The footprint of one filesystem from its walk (pure). `roots` are the walked trees' paths as
/// the daemon names them, for the labels; `used` is the filesystem's size − free.
pub fn footprint(
    role: Role,
    mountpoint: &str,
    roots: &[(Tree, String)],
    walked: &Walked,
    known: &Known,
    used: u64,
) -> Footprint {
    let mut by_path: HashMap<(String, Kind), u64> = HashMap::new();
    for node in &walked.nodes {
        if let Some((rel, kind)) = attribute(node, known) {
            let root = roots
                .iter()
                .find(|(t, _)| *t == node.tree)
                .map(|(_, p)| p.trim_end_matches('/'))
                .unwrap_or("");
            *by_path.entry((format!("{root}/{rel}"), kind)).or_default() += node.bytes;
        }
    }
    let mut paths: Vec<Unaccounted> = by_path
        .into_iter()
        .filter(|(_, b)| *b > 0)
        .map(|((path, kind), bytes)| Unaccounted { path, kind, bytes })
        .collect();
    paths.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    if paths.len() > MAX_PATHS {
        let rest: u64 = paths.drain(MAX_PATHS - 1..).map(|u| u.bytes).sum();
        paths.push(Unaccounted {
            path: "other".into(),
            kind: Kind::Other,
            bytes: rest,
        });
    }
    let unaccounted: u64 = paths.iter().map(|u| u.bytes).sum();
    Footprint {
        role,
        mountpoint: mountpoint.into(),
        paths: roots.iter().map(|(_, p)| p.clone()).collect(),
        used_bytes: used,
        walked_bytes: walked.bytes,
        docker_bytes: walked.bytes.saturating_sub(unaccounted),
        unaccounted_bytes: unaccounted,
        outside_bytes: used.saturating_sub(walked.bytes),
        unaccounted: paths,
        entries: walked.entries,
        complete: walked.complete,
        seconds: 0.0,
        at: Utc::now(),
    }
}

/// Lowers the calling thread to idle I/O priority and the lowest CPU priority, so a walk takes
/// only what the disk and the CPU have spare. Best effort: a refusal leaves the thread as it was.
pub fn lower_priority() {
    // On Linux a thread's nice value is its own (the `who` of setpriority is a thread id).
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!(error = %e, "cannot lower the footprint walk's CPU priority");
    }
    if !set_idle_io_priority() {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the footprint walk's I/O priority"
        );
    }
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE)` for the calling thread; true when done.
#[allow(unsafe_code)]
fn set_idle_io_priority() -> bool {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: u32 = 13;
    // SAFETY: ioprio_set takes three integers and touches no memory of this process; with
    // who = 0 it changes only the calling thread's I/O priority.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const OLD: Duration = Duration::from_secs(3 * 3600);

    fn node(tree: Tree, key: &[&str], bytes: u64, age: Duration) -> Node {
        Node {
            tree,
            key: key.iter().map(|k| k.to_string()).collect(),
            bytes,
            newest: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) - age),
        }
    }

    fn known() -> Known {
        Known {
            driver: "overlay2".into(),
            layers: Some([HEX.to_string(), format!("{HEX}-init")].into()),
            containers: ["c1".to_string()].into(),
            volumes: ["data".to_string()].into(),
            now: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)),
        }
    }

    fn at(key: &[&str], age: Duration) -> Option<String> {
        attribute(&node(Tree::DataRoot, key, 1, age), &known()).map(|(p, _)| p)
    }

    #[test]
    fn layer_directories_the_layer_store_does_not_name_are_orphans_once_past_the_grace() {
        let orphan = "f".repeat(64);
        assert_eq!(at(&["overlay2", &orphan], OLD), Some("overlay2".into()));
        assert_eq!(
            at(&["overlay2", &format!("{orphan}-init")], OLD),
            Some("overlay2".into())
        );
        assert_eq!(at(&["overlay2", &orphan], Duration::from_secs(60)), None);
        assert_eq!(at(&["overlay2", HEX], OLD), None);
        assert_eq!(at(&["overlay2", &format!("{HEX}-init")], OLD), None);
        // BuildKit's snapshots and the link folder are Docker's.
        assert_eq!(at(&["overlay2", "th5srpt2rf8w12rfkgg3e4dx5"], OLD), None);
        assert_eq!(at(&["overlay2", "l"], OLD), None);
        assert_eq!(at(&["overlay2"], OLD), None);
        // An unreadable layer store makes no orphan.
        let unsure = Known {
            layers: None,
            ..known()
        };
        assert_eq!(
            attribute(
                &node(Tree::DataRoot, &["overlay2", &orphan], 1, OLD),
                &unsure
            ),
            None
        );
        let kind = attribute(
            &node(Tree::DataRoot, &["overlay2", &orphan], 1, OLD),
            &known(),
        );
        assert_eq!(kind.map(|(_, k)| k), Some(Kind::OrphanedLayers));
    }

    #[test]
    fn tmp_unknown_entries_and_an_inactive_driver_are_unaccounted_docker_dirs_are_not() {
        assert_eq!(at(&["tmp"], Duration::ZERO), Some("tmp".into()));
        assert_eq!(at(&["backup.tar"], OLD), Some("backup.tar".into()));
        assert_eq!(at(&["vfs"], OLD), Some("vfs".into()));
        for d in DOCKER_DIRS {
            assert_eq!(at(&[d], OLD), None, "{d}");
        }
        let containerd_store = Known {
            driver: "overlayfs".into(),
            ..known()
        };
        assert_eq!(
            attribute(
                &node(Tree::DataRoot, &["overlay2", HEX], 1, OLD),
                &containerd_store
            ),
            Some(("overlay2".into(), Kind::InactiveDriver))
        );
        assert_eq!(at(&["rootfs"], OLD), None);
    }

    #[test]
    fn containers_and_volumes_docker_does_not_list_are_unaccounted_once_past_the_grace() {
        assert_eq!(at(&["containers", "c1"], OLD), None);
        assert_eq!(at(&["containers", "gone"], OLD), Some("containers".into()));
        assert_eq!(at(&["containers", "new"], Duration::from_secs(5)), None);
        assert_eq!(at(&["volumes", "data"], OLD), None);
        assert_eq!(at(&["volumes", "metadata.db"], OLD), None);
        assert_eq!(at(&["volumes", "lost"], OLD), Some("volumes".into()));
        let c = |key: &[&str], age| {
            attribute(&node(Tree::ContainerdRoot, key, 1, age), &known()).map(|(p, _)| p)
        };
        assert_eq!(c(&["tmpmounts"], OLD), Some("tmpmounts".into()));
        assert_eq!(
            c(&[CONTENT, "ingest"], OLD),
            Some(format!("{CONTENT}/ingest"))
        );
        assert_eq!(c(&[CONTENT, "ingest"], Duration::from_secs(5)), None);
        assert_eq!(c(&[CONTENT, "blobs"], OLD), None);
        assert_eq!(c(&["io.containerd.snapshotter.v1.overlayfs"], OLD), None);
    }

    #[test]
    fn the_footprint_splits_the_used_bytes_into_three_parts_and_caps_the_paths() {
        let mut nodes = vec![
            node(Tree::DataRoot, &["image"], 100, OLD),
            node(Tree::DataRoot, &["tmp"], 30, OLD),
            node(Tree::DataRoot, &["overlay2", &"e".repeat(64)], 20, OLD),
        ];
        for i in 0..MAX_PATHS + 3 {
            nodes.push(node(Tree::DataRoot, &[&format!("junk{i:02}")], 1, OLD));
        }
        let walked = Walked {
            bytes: 200,
            entries: 42,
            complete: true,
            nodes,
        };
        let roots = [(Tree::DataRoot, "/var/lib/docker".to_string())];
        let f = footprint(Role::DataRoot, "/", &roots, &walked, &known(), 1000);
        assert_eq!(f.walked_bytes, 200);
        assert_eq!(f.unaccounted_bytes, 30 + 20 + (MAX_PATHS as u64 + 3));
        assert_eq!(f.docker_bytes + f.unaccounted_bytes, 200);
        assert_eq!(f.outside_bytes, 800);
        assert_eq!(f.unaccounted.len(), MAX_PATHS);
        assert_eq!(f.unaccounted[0].path, "/var/lib/docker/tmp");
        assert_eq!(f.unaccounted[1].path, "/var/lib/docker/overlay2");
        let other = f.unaccounted.last().map(|u| (u.path.as_str(), u.bytes));
        assert_eq!(other, Some(("other", 6)));
    }

    #[test]
    fn the_walk_counts_allocated_bytes_once_per_hard_linked_file_and_stops_at_its_bound() {
        let dir = std::env::temp_dir().join(format!("bilge-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layer = dir.join("overlay2").join("a".repeat(64)).join("diff");
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(layer.join("f"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(layer.join("f"), layer.join("g")).unwrap();
        std::fs::write(dir.join("tmp").join("t"), vec![1u8; 32 * 1024]).unwrap();
        let stop = AtomicBool::new(false);
        let trees = [(Tree::DataRoot, dir.clone())];
        let w = walk(&trees, &stop).unwrap();
        assert!(w.complete);
        let bytes = |key: &[&str]| {
            w.nodes
                .iter()
                .find(|n| n.key == key)
                .map(|n| n.bytes)
                .unwrap_or(0)
        };
        let a = "a".repeat(64);
        // The layer's file counts once although it has two names; its folders count too.
        let layer_bytes = bytes(&["overlay2", &a]);
        assert!(
            (64 * 1024..64 * 1024 + 5 * 8192).contains(&layer_bytes),
            "{layer_bytes}"
        );
        let tmp = bytes(&["tmp"]);
        assert!((32 * 1024..32 * 1024 + 8192).contains(&tmp), "{tmp}");
        let total: u64 = w.nodes.iter().map(|n| n.bytes).sum();
        assert!(
            w.bytes >= total && w.bytes - total <= 8192,
            "{} {total}",
            w.bytes
        );
        assert!(!w.nodes.iter().any(|n| n.key.len() > 2));
        let bounded = walk_bounded(&trees, &stop, 3, MAX_LINKS).unwrap();
        assert!(!bounded.complete);
        stop.store(true, Ordering::Relaxed);
        assert!(!walk(&trees, &stop).unwrap().complete);
        assert!(walk(&[(Tree::DataRoot, dir.join("missing"))], &stop).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_layer_store_names_layers_and_container_mounts() {
        let dir = std::env::temp_dir().join(format!("bilge-layerdb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = dir.join("image/overlay2/layerdb");
        std::fs::create_dir_all(db.join("sha256/abc")).unwrap();
        std::fs::create_dir_all(db.join("mounts/c1")).unwrap();
        std::fs::write(db.join("sha256/abc/cache-id"), "L1").unwrap();
        std::fs::write(db.join("mounts/c1/mount-id"), "M1\n").unwrap();
        std::fs::write(db.join("mounts/c1/init-id"), "M1-init").unwrap();
        let layers = read_layers(&dir, "overlay2").unwrap();
        let want: HashSet<String> = ["L1", "M1", "M1-init"].map(String::from).into();
        assert_eq!(layers, want);
        // An absurd id file (a megabyte) is read only up to the longest id.
        std::fs::create_dir_all(db.join("sha256/big")).unwrap();
        std::fs::write(db.join("sha256/big/cache-id"), "a".repeat(1 << 20)).unwrap();
        let layers = read_layers(&dir, "overlay2").unwrap();
        assert!(
            layers.iter().all(|l| l.len() <= MAX_ID as usize),
            "{layers:?}"
        );
        assert_eq!(layers.len(), 4);
        assert_eq!(read_layers(&dir, "vfs"), Some(HashSet::new()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!layer_shaped("l"));
        assert!(layer_shaped(HEX));
        assert!(!layer_shaped(&format!("{HEX}x")));
    }
}
