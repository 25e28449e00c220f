//! Acting before the disk fills: bilge's own time-to-full forecast starts a cleanup while the
//! low watermark is still far.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn a_steady_fill_starts_the_cleanup_before_the_low_watermark_is_crossed() {
    let d = Daemon::start_on_loop_fs("forecast", 1024);
    let start_mib = d.data_root_avail() >> 20;
    // The low mark is 400 MiB below what is free: at 5 MiB/s, 80 s away. The forecast mark
    // (150 s to full) is met once about 750 MiB are left, some 30 s into the fill.
    let low_mib = start_mib - 400;
    let cfg = policy_file(
        &d.dir,
        &[
            "until = \"0s\"",
            "cooldown = \"1h\"",
            &format!("low_watermark = \"{low_mib}MiB\""),
            "forecast_watermark = \"150s\"",
        ],
    );
    let s = Server::start(
        &d.host,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--collector.filesystem.interval",
            "1s",
            "--collector.filesystem.forecast-window",
            "30s",
        ],
    );
    s.wait_ready();
    // About 5 MiB/s, written and synced a MiB at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let filler = {
        let stop = stop.clone();
        let path = d.data_root.join("fill");
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).unwrap();
            let mib = vec![7u8; 1 << 20];
            let began = Instant::now();
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) && written < 700 {
                f.write_all(&mib).unwrap();
                f.sync_data().unwrap();
                written += 1;
                let due = Duration::from_millis(200 * written);
                if let Some(wait) = due.checked_sub(began.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            written
        })
    };
    let began = Instant::now();
    let row = wait_for("a forecast cleanup", Duration::from_secs(90), || {
        cleanups(&s)
            .into_iter()
            .find(|r| r["trigger"] == "forecast")
    });
    let avail_mib = d.data_root_avail() >> 20;
    let after = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let written = filler.join().unwrap();
    assert_ne!(row["result"], "failure", "{row:#}\n{}", s.log_text());
    // It started while the low mark was still ahead: no watermark run, and space to spare.
    assert!(
        avail_mib > low_mib,
        "{avail_mib} MiB left, the mark is {low_mib} MiB"
    );
    assert!(
        cleanups(&s).iter().all(|r| r["trigger"] != "watermark"),
        "{}",
        s.log_text()
    );
    let lead = (avail_mib - low_mib) as f64 / 5.0;
    eprintln!(
        "forecast cleanup {:.1}s into a 5 MiB/s fill ({written} MiB written), {avail_mib} MiB left: {lead:.0}s before the low watermark ({low_mib} MiB) would have been crossed",
        after.as_secs_f64()
    );
    assert!(lead >= 20.0, "lead {lead:.0}s");
    let m = s.metrics();
    assert!(
        m.lines()
            .any(|l| l.starts_with("bilge_docker_data_root_predicted_full_seconds{")),
        "{m}"
    );
    assert!(
        m.contains("bilge_cleanup_runs_total{result=\"success\",trigger=\"forecast\"}")
            || m.contains("bilge_cleanup_runs_total{trigger=\"forecast\""),
        "{m}"
    );
}
