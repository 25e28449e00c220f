//! The Debian package as a user gets it: the `.deb` that `scripts/deb.sh` built (`$BILGE_DEB`,
//! set by scripts/test.sh) installed into this machine with `dpkg -i`, its files, conffiles and
//! generated token checked, the installed `bilge --version`, `bilge df` and the unit's own command
//! line run against a private daemon, then removed and purged. A guard purges it whatever happens.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const UNIT: &str = "/usr/lib/systemd/system/bilge.service";

/// Purges the package on drop, so that a failed assertion leaves the machine as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("/usr/bin/dpkg")
            .args(["--purge", "bilge"])
            .output();
        let _ = std::fs::remove_file(test_root().join("deb-installed"));
    }
}

fn the_deb() -> PathBuf {
    let deb = std::env::var_os("BILGE_DEB")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .expect(
            "BILGE_DEB is not set: build the package with scripts/deb.sh and point BILGE_DEB at \
             the .deb it prints (scripts/test.sh does both)",
        );
    assert!(deb.is_file(), "BILGE_DEB={} is not a file", deb.display());
    deb
}

/// dpkg's state of the package here: `installed`, `config-files`, or "" when dpkg knows none.
fn dpkg_status() -> String {
    let out = Command::new("/usr/bin/dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", "bilge"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn field(deb: &Path, name: &str) -> String {
    run_ok(
        Command::new("/usr/bin/dpkg-deb")
            .arg("--field")
            .arg(deb)
            .arg(name),
    )
    .trim()
    .to_string()
}

/// The unit's `ExecStart=` command line (its continuation lines joined), split into words.
fn exec_start(unit: &str) -> Vec<String> {
    let mut line = String::new();
    let mut inside = false;
    for l in unit.lines() {
        if let Some(rest) = l.strip_prefix("ExecStart=") {
            inside = true;
            line.push_str(rest);
        } else if inside {
            line.push(' ');
            line.push_str(l.trim());
        } else {
            continue;
        }
        if line.ends_with('\\') {
            line.pop();
        } else {
            break;
        }
    }
    line.split_whitespace().map(str::to_string).collect()
}

fn render_man(gz: &str) -> String {
    groff(&run_ok(Command::new("/bin/zcat").arg(gz)), gz)
}

#[test]
fn the_deb_installs_runs_from_its_own_unit_line_and_purges_cleanly() {
    require_root();
    require("/usr/bin/dpkg", "apt-get install dpkg");
    require("/usr/bin/groff", "apt-get install groff-base");
    let deb = the_deb();
    // This test owns the package's paths for its run: it never replaces an operator's bilge.
    let status = dpkg_status();
    assert!(
        status.is_empty() || status == "not-installed",
        "a bilge package is already on this machine ({status}): the test installs and purges its \
         own, so run it where bilge is not installed (dpkg --purge bilge)"
    );
    for path in ["/usr/bin/bilge", "/etc/bilge", "/var/lib/bilge", UNIT] {
        assert!(
            !Path::new(path).exists(),
            "{path} exists and is not from a package: the test's purge would remove it; run the \
             test where bilge is not installed"
        );
    }

    // What dpkg will be told before installing it.
    assert_eq!(field(&deb, "Package"), "bilge");
    assert_eq!(
        field(&deb, "Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    let depends = field(&deb, "Depends");
    assert!(depends.contains("libc6"), "Depends: {depends}");

    // scripts/test.sh purges the package after a crash that skipped the guard, by this marker.
    std::fs::write(test_root().join("deb-installed"), "bilge\n").unwrap();
    let _guard = Installed;
    let d = Daemon::start("deb");
    d.build(Some("bilge-test/deb:one"), &[]);
    run_ok(Command::new("/usr/bin/dpkg").arg("-i").arg(&deb));
    assert_eq!(dpkg_status(), "installed");

    // Its files, and which of them are conffiles.
    let files = run_ok(Command::new("/usr/bin/dpkg").args(["-L", "bilge"]));
    for f in [
        "/usr/bin/bilge",
        UNIT,
        "/etc/bilge/bilge.toml",
        "/etc/default/bilge",
        "/usr/share/man/man1/bilge.1.gz",
        "/usr/share/man/man1/bilge-serve.1.gz",
        "/usr/share/man/man1/bilge-clean.1.gz",
        "/usr/share/bash-completion/completions/bilge",
        "/usr/share/zsh/vendor-completions/_bilge",
        "/usr/share/fish/vendor_completions.d/bilge.fish",
        "/usr/share/doc/bilge/copyright",
        "/usr/share/doc/bilge/runbook.md",
        "/usr/share/bilge/alerts/bilge.rules.yml",
        "/usr/share/bilge/dashboards/bilge.json",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "dpkg -L bilge has no {f}:\n{files}"
        );
        assert!(Path::new(f).is_file(), "{f} was not installed");
    }
    let conffiles =
        run_ok(Command::new("/usr/bin/dpkg-query").args(["-W", "-f=${Conffiles}", "bilge"]));
    for f in ["/etc/bilge/bilge.toml", "/etc/default/bilge"] {
        assert!(conffiles.contains(f), "{f} is not a conffile: {conffiles}");
    }

    // The postinst made the webhook token the unit hands over: 32 random bytes in hex, root's.
    let token_meta = std::fs::metadata("/etc/bilge/webhook-token")
        .expect("the postinst made no /etc/bilge/webhook-token");
    assert_eq!(token_meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string("/etc/bilge/webhook-token").unwrap();
    assert!(
        token.len() == 65 && token.trim_end().chars().all(|c| c.is_ascii_hexdigit()),
        "token {token:?}"
    );

    // The installed binary is the tree under test, revision and compiler included.
    let version = run_ok(Command::new("/usr/bin/bilge").arg("--version"));
    let ours = run_ok(Command::new(BILGE).arg("--version"));
    assert_eq!(version, ours);
    assert!(!version.contains("unknown"), "{version}");

    // bilge df on the private daemon, with the packaged policy file.
    let df = run_ok(Command::new("/usr/bin/bilge").args([
        "--config=/etc/bilge/bilge.toml",
        &format!("--docker.host={}", d.host),
        "df",
        "--json",
    ]));
    let df: serde_json::Value = serde_json::from_str(&df).unwrap();
    assert_eq!(df["docker_up"], true, "{df}");
    assert_eq!(df["docker"]["images"]["objects"], 1, "{df}");
    assert_eq!(
        df["data_root"]["path"],
        d.data_root.display().to_string(),
        "{df}"
    );

    // The unit: what systemd-analyze accepts, then its own command line run as systemd would
    // (the credentials directory %d replaced by where the credential comes from, a test port and
    // state path instead of :9830 and /var/lib/bilge, the private daemon).
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let verify = Command::new("/usr/bin/systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .unwrap();
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !verify_err.contains("bilge.service"),
        "systemd-analyze verify {UNIT}: {verify_err}"
    );
    let words = exec_start(&unit);
    assert_eq!(
        words.first().map(String::as_str),
        Some("/usr/bin/bilge"),
        "{unit}"
    );
    assert!(
        words.iter().any(|w| w == "--config=/etc/bilge/bilge.toml"),
        "{words:?}"
    );
    let dir = temp_dir("deb-serve");
    let port = free_port();
    let mut replaced = 0;
    let args: Vec<String> = words[1..]
        .iter()
        .map(|w| {
            let new = match w.as_str() {
                "--web.listen-address=:9830" => format!("--web.listen-address=127.0.0.1:{port}"),
                "--state.path=/var/lib/bilge/bilge.db" => {
                    format!("--state.path={}", dir.join("bilge.db").display())
                }
                _ => w.replace("%d/", "/etc/bilge/"),
            };
            replaced += usize::from(&new != w);
            new
        })
        .collect();
    assert_eq!(replaced, 3, "the unit's ExecStart changed: {words:?}");
    let log = dir.join("serve.log");
    let mut serve = Command::new("/usr/bin/bilge")
        .args(&args)
        .arg(format!("--docker.host={}", d.host))
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    record_pid(&dir, "bilge", serve.id());
    let metrics = wait_for_opt(Duration::from_secs(30), || {
        http("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], b"")
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .filter(|m| m.contains("bilge_docker_up 1"))
    });
    // The webhook is on, behind the generated token: a wrong one is refused.
    let wrong = http(
        "POST",
        &format!("http://127.0.0.1:{port}/api/v1/alerts"),
        &[("Authorization", "Bearer not-the-token")],
        b"{}",
    );
    let stopped = stop_child(&mut serve, Duration::from_secs(10));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let metrics =
        metrics.unwrap_or_else(|| panic!("the unit's bilge serve never scraped: {log_text}"));
    assert!(
        metrics.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{metrics}"
    );
    assert_eq!(wrong.map(|r| r.status).ok(), Some(401), "{log_text}");
    assert!(
        stopped.is_some_and(|s| s.success()),
        "bilge serve did not stop cleanly on SIGTERM: {stopped:?}\n{log_text}"
    );

    // The man pages render without a warning; the bash completion parses.
    for (gz, name) in [
        ("/usr/share/man/man1/bilge.1.gz", "bilge"),
        ("/usr/share/man/man1/bilge-df.1.gz", "bilge-df"),
    ] {
        let text = render_man(gz);
        assert!(text.contains(&format!("{name}(1)")), "{text}");
    }
    let bash = Command::new("/bin/bash")
        .args(["-n", "/usr/share/bash-completion/completions/bilge"])
        .output()
        .unwrap();
    assert!(bash.status.success(), "{bash:?}");

    // Remove keeps the conffiles and the token; purge takes everything the package made.
    run_ok(Command::new("/usr/bin/dpkg").args(["-r", "bilge"]));
    assert_eq!(dpkg_status(), "config-files");
    assert!(!Path::new("/usr/bin/bilge").exists() && !Path::new(UNIT).exists());
    assert!(Path::new("/etc/bilge/bilge.toml").exists());
    assert!(Path::new("/etc/bilge/webhook-token").exists());
    run_ok(Command::new("/usr/bin/dpkg").args(["--purge", "bilge"]));
    let status = dpkg_status();
    assert!(
        status.is_empty() || status == "not-installed",
        "after purge: {status}"
    );
    for path in [
        "/etc/bilge",
        "/etc/default/bilge",
        "/var/lib/bilge",
        "/etc/systemd/system/multi-user.target.wants/bilge.service",
    ] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} is left after dpkg --purge"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
