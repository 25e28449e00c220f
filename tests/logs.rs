//! The opt-in truncation of container logs. Not in the engine matrix: on Docker 28.5 (with
//! bookworm's 20.10 CLI) `docker logs --tail` was seen to hang after a log was truncated in
//! place, so the README marks the option as proven on 20.10 only.

use std::time::Duration;

use crate::util::*;

#[test]
fn a_runaway_log_is_truncated_only_with_the_opt_in_and_its_container_keeps_running() {
    let d = Daemon::start("logs");
    d.build(Some("chat:1"), &[]);
    // About 30 MB of log at once, then a line a second.
    d.docker(&[
        "run", "-d", "--name", "chatty", "--network", "none", "chat:1", "sh", "-c",
        "yes 'a line of a runaway build log, written again and again' | head -c 30000000; while true; do echo alive; sleep 1; done",
    ]);
    let path = d.docker(&["inspect", "-f", "{{.LogPath}}", "chatty"]);
    let path = std::path::PathBuf::from(path.trim());
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // Until the burst is all written (the first "alive"): the JSON log passes 30 MB half-way
    // through it, and a truncation then would leave the rest of the burst behind (seen in CI).
    wait_for("the log's burst to end", Duration::from_secs(120), || {
        (size() >= 30_000_000
            && d.docker(&["logs", "--tail", "1", "chatty"])
                .contains("alive"))
        .then_some(())
    });
    let state = d.dir.join("state/bilge.db");
    let clean = |lines: &[&str]| {
        let mut all = vec![
            "until = \"0s\"",
            "target_free = \"100%\"",
            "log_truncate_over = \"10MiB\"",
        ];
        all.extend_from_slice(lines);
        let cfg = policy_file(&d.dir, &all);
        bilge_clean_json(&d, &state, &["--config", cfg.to_str().unwrap()])
    };
    // Without the opt-in, the log stays whole.
    let r = clean(&[]);
    assert!(size() >= 30_000_000, "{r:#}");
    assert!(
        r["record"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] != "container_logs"),
        "{r:#}"
    );
    // With it, the run (still short of its 100% target) truncates it and says so.
    let r = clean(&["allow_log_truncation = true"]);
    let logs = r["record"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "container_logs")
        .cloned()
        .unwrap_or_else(|| panic!("no container_logs action: {r:#}"));
    assert_eq!(logs["removed"], 1, "{r:#}");
    assert!(
        logs["reclaimed_bytes"].as_u64().unwrap() >= 30_000_000,
        "{r:#}"
    );
    assert!(size() < 1 << 20, "{} bytes left", size());
    // The container runs on, and `docker logs` reads what it wrote since.
    assert_eq!(
        d.docker(&["inspect", "-f", "{{.State.Running}}", "chatty"])
            .trim(),
        "true"
    );
    wait_for(
        "a line after the truncation",
        Duration::from_secs(10),
        || {
            d.docker(&["logs", "--tail", "5", "chatty"])
                .contains("alive")
                .then_some(())
        },
    );
    d.docker(&["rm", "-f", "chatty"]);
}
