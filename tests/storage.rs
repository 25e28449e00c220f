//! Every filesystem that holds Docker's data: with the containerd image store on a containerd
//! of its own, the images live under containerd's root, which can be another filesystem than
//! the data root. bilge reports it beside the data root (its figures and its footprint), and
//! filling it fires the bundled disk alert.

use std::process::Command;
use std::time::Duration;

use crate::stack::{Prometheus, repo, shorten_for};
use crate::util::*;

#[test]
fn a_containerd_root_on_its_own_filesystem_is_reported_and_filling_it_fires_the_disk_alert() {
    // Declared first, dropped last: the daemon goes before the containerd it uses.
    let fs = LoopFs::new("ctrd-root", 512);
    let containerd = Containerd::start("ctrd", &fs.mnt);
    let d = Daemon::start_on_containerd("ctrd-docker", &containerd);
    let info = d.docker(&["info", "--format", "{{json .DriverStatus}}"]);
    assert!(info.contains("io.containerd.snapshotter.v1"), "{info}");
    // An image: its content and snapshots go under containerd's root, not the data root.
    let before = avail_of(&fs.mnt);
    d.build(
        Some("app:1"),
        &["RUN dd if=/dev/urandom of=/blob bs=1M count=20 2>/dev/null"],
    );
    assert!(
        before - avail_of(&fs.mnt) > 20 << 20,
        "the image did not land under containerd's root"
    );

    let mnt = fs.mnt.display().to_string();
    let s = Server::start(
        &d.host,
        &[
            "--docker.refresh-interval",
            "1s",
            "--collector.filesystem.interval",
            "1s",
            "--docker.containerd-root",
            &mnt,
            "--docker.footprint-interval",
            "1s",
        ],
    );
    s.wait_ready();
    let series = |m: &str, family: &str, role: &str, mp: &str| {
        sample(
            m,
            &format!("{family}{{mountpoint=\"{mp}\",role=\"{role}\"}}"),
        )
    };
    let m = wait_for(
        "the containerd root's figures",
        Duration::from_secs(30),
        || {
            let m = s.metrics();
            series(
                &m,
                "bilge_docker_data_root_size_bytes",
                "containerd_root",
                &mnt,
            )
            .map(|_| m)
        },
    );
    let size = series(
        &m,
        "bilge_docker_data_root_size_bytes",
        "containerd_root",
        &mnt,
    )
    .unwrap();
    let statvfs = nix::sys::statvfs::statvfs(&fs.mnt).unwrap();
    assert_eq!(
        size,
        (statvfs.blocks() * statvfs.fragment_size()) as f64,
        "{m}"
    );
    let data_mp = mount_point_of(&d.data_root);
    assert!(
        series(
            &m,
            "bilge_docker_data_root_size_bytes",
            "data_root",
            &data_mp
        )
        .is_some(),
        "the data root ({data_mp}) is still reported:\n{m}"
    );

    // Its footprint is measured on its own: the image's content and snapshots are Docker's.
    let docker_part = wait_for(
        "the containerd root's footprint",
        Duration::from_secs(30),
        || {
            sample(
                &s.metrics(),
                &format!(
                    "bilge_docker_footprint_bytes{{mountpoint=\"{mnt}\",part=\"docker\",role=\"containerd_root\"}}"
                ),
            )
        },
    );
    assert!(docker_part > (20 << 20) as f64, "{docker_part}");

    // bilge df names it.
    let out = Command::new(BILGE)
        .args([
            "df",
            "--docker.host",
            &d.host,
            "--docker.containerd-root",
            &mnt,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("holds containerd's root {mnt}")),
        "{text}"
    );

    // Fill containerd's root to under 10 % available: the bundled rules' disk alert fires for
    // it, labelled with its role and mount point.
    let rules = std::fs::read_to_string(repo().join("alerts/bilge.rules.yml")).unwrap();
    let p = Prometheus::start(&[&s.addr], "1s", &shorten_for(&rules, "5s"), None);
    p.wait_targets_up();
    let free = avail_of(&fs.mnt);
    let size = statvfs.blocks() * statvfs.fragment_size();
    let fill = free.saturating_sub(size / 20);
    run_ok(
        Command::new("fallocate")
            .args(["-l", &fill.to_string()])
            .arg(fs.mnt.join("filler")),
    );
    let alert = wait_for(
        "the disk alert for containerd's root",
        Duration::from_secs(90),
        || {
            p.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "BilgeDockerDataRootAlmostFull"
                    && a["labels"]["role"] == "containerd_root"
                    && a["state"] == "firing"
            })
        },
    );
    assert_eq!(alert["labels"]["mountpoint"], mnt.as_str(), "{alert}");
    assert_eq!(alert["labels"]["bilge_action"], "standard", "{alert}");
    // The data root, with room to spare, has no such alert.
    assert!(
        !p.alerts().iter().any(
            |a| a["labels"]["alertname"] == "BilgeDockerDataRootAlmostFull"
                && a["labels"]["role"] == "data_root"
        ),
        "{:?}",
        p.alerts()
    );
}

/// Available bytes of the filesystem holding `path`.
fn avail_of(path: &std::path::Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_available() * s.fragment_size()
}

/// The mount point of the filesystem holding `path`, as /proc/self/mountinfo has it.
fn mount_point_of(path: &std::path::Path) -> String {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "TARGET", "--target"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
