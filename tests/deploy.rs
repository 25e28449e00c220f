//! The deploy image: `deploy/Dockerfile`, the file users build, built on a private daemon around
//! the dist binary that `scripts/test.sh` builds, run with the Docker socket and the host's `/`
//! mounted, scraped, health-checked, and compared with bilge run directly on the host.
//!
//! No base image can be pulled here, so the test makes the two the Dockerfile names from this
//! machine's own files and passes them as build arguments, the only thing it changes: a busybox
//! builder (`RUST_IMAGE`), which takes the binary built outside through the Dockerfile's
//! `BILGE_PREBUILT` path instead of compiling, and a runtime (`RUNTIME_IMAGE`) that holds what
//! distroless's `cc-debian12:nonroot` holds for bilge: the glibc and libgcc the binary links
//! against (Debian 12's, from this machine), the CA bundle, and the `nonroot` user 65532.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The dist binary built by scripts/test.sh (`BILGE_DIST_BIN`), as a path inside the repository
/// (the build context), where `.dockerignore` lets it in.
fn dist_binary() -> (PathBuf, String) {
    let path = std::env::var("BILGE_DIST_BIN").unwrap_or_else(|_| {
        panic!(
            "BILGE_DIST_BIN is not set: run through scripts/test.sh, which builds it with \
             cargo build --profile dist"
        )
    });
    let p = PathBuf::from(path);
    assert!(p.exists(), "BILGE_DIST_BIN={} does not exist", p.display());
    let rel = p
        .strip_prefix(REPO)
        .ok()
        .map(|r| r.display().to_string())
        .filter(|r| r == "target/dist/bilge")
        .unwrap_or_else(|| {
            panic!(
                "BILGE_DIST_BIN={} must be {REPO}/target/dist/bilge, the one build output the image's context lets in",
                p.display()
            )
        });
    (p, rel)
}

/// The runtime base: the shared libraries `bin` loads (by `ldd`), the CA bundle, and the users of
/// distroless's `nonroot` variant, `FROM scratch`.
fn runtime_image(d: &Daemon, bin: &Path, tag: &str) {
    require("/usr/bin/ldd", "apt-get install libc-bin");
    require(
        "/etc/ssl/certs/ca-certificates.crt",
        "apt-get install ca-certificates",
    );
    let ctx = temp_dir("runtime-image");
    let root = ctx.join("root");
    let ldd = run_ok(std::process::Command::new("/usr/bin/ldd").arg(bin));
    let libs: Vec<&str> = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .collect();
    assert!(
        libs.iter().any(|l| l.contains("libc.so")),
        "ldd found no libc in {}: {ldd}",
        bin.display()
    );
    for lib in libs
        .iter()
        .copied()
        .chain(["/etc/ssl/certs/ca-certificates.crt"])
    {
        let dest = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // Through symlinks: the image gets the file under the name the loader asks for.
        std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nUSER 65532:65532\n",
    )
    .unwrap();
    d.docker(&[
        "build",
        "--network",
        "none",
        "-q",
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&ctx);
}

/// `deploy/Dockerfile` built with only the base images substituted, and the binary built outside.
fn build_image(d: &Daemon, tag: &str) -> PathBuf {
    let (bin, rel) = dist_binary();
    d.build(Some("bilge-test/rust:busybox"), &[]);
    runtime_image(d, &bin, "bilge-test/cc-debian12:nonroot");
    d.docker(&[
        "build",
        "--network",
        "none",
        "-q",
        "-f",
        &format!("{REPO}/deploy/Dockerfile"),
        "--build-arg",
        "RUST_IMAGE=bilge-test/rust:busybox",
        "--build-arg",
        "RUNTIME_IMAGE=bilge-test/cc-debian12:nonroot",
        "--build-arg",
        &format!("BILGE_PREBUILT={rel}"),
        "-t",
        tag,
        REPO,
    ]);
    bin
}

/// Filesystems as bilge's /metrics gives them: mountpoint => (size, read-only).
fn metrics_filesystems(text: &str) -> BTreeMap<String, (u64, bool)> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("bilge_filesystem_size_bytes{") else {
            continue;
        };
        let Some(mp) = rest
            .split("mountpoint=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let size = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let labels = &rest[..rest.find('}').unwrap_or(rest.len())];
        let ro = sample(text, &format!("bilge_filesystem_readonly{{{labels}}}"));
        out.insert(
            mp.to_string(),
            (size.unwrap_or(-1.0) as u64, ro == Some(1.0)),
        );
    }
    out
}

/// Without the other tests' loop filesystems (their folders under [`test_root`]): this
/// machine's `/` is a private mount, so one unmounted after the container started stays in the
/// container's view for good, as it would not under the `rslave` a real host's deploy file uses.
fn own(mut fs: BTreeMap<String, (u64, bool)>, d: &Daemon) -> BTreeMap<String, (u64, bool)> {
    let others = test_root();
    fs.retain(|mp, _| {
        let mp = Path::new(mp);
        !mp.starts_with(&others) || mp.starts_with(&d.dir)
    });
    fs
}

/// Filesystems as `bilge df --json` on the host gives them, in the same shape.
fn df_filesystems(json: &serde_json::Value) -> BTreeMap<String, (u64, bool)> {
    json["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["mountpoint"].as_str().unwrap().to_string(),
                (
                    f["size"].as_u64().unwrap(),
                    f["readonly"].as_bool().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn the_image_users_build_runs_non_root_sees_the_host_and_is_healthy() {
    require_root();
    let d = Daemon::start("image");
    // The image runs bilge as uid 65532, which reaches the data root's mount point as it reaches
    // /var/lib/docker on a host: by searching every folder above it. A test bed that others may
    // not search would hide the mount from the container alone (scripts/test.sh makes its own
    // 0711).
    for dir in d.data_root.ancestors().skip(1) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} (mode {:o}) may not be searched by others, so the container's bilge cannot reach \
             the data root under it: chmod o+x it, or point BILGE_TEST_TMP elsewhere",
            dir.display(),
            mode & 0o7777
        );
    }
    let bin = build_image(&d, "bilge:test");
    let inspect = d.docker(&[
        "image",
        "inspect",
        "bilge:test",
        "--format",
        "{{.Config.User}} {{json .Config.Healthcheck}} {{json .Config.Entrypoint}}",
    ]);
    assert!(inspect.starts_with("65532:65532 "), "image user: {inspect}");
    assert!(
        inspect.contains("\"bilge\",\"healthcheck\""),
        "no HEALTHCHECK: {inspect}"
    );
    assert!(inspect.ends_with("[\"bilge\"]"), "entrypoint: {inspect}");

    // The daemon's socket is group-owned by root here; the container reaches it through --group-add.
    let sock = d.dir.join("docker.sock");
    let gid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&sock).unwrap().gid().to_string()
    };
    let port = free_port();
    // The host's / read-only at /host, as the README, compose and the DaemonSet mount it; without
    // `rslave` here because this machine's / is a private mount, which Docker refuses to
    // propagate from (the device check keeps a mount made later from being misreported).
    d.docker(&[
        "run",
        "-d",
        "--name",
        "bilge",
        "--network",
        "host",
        "--group-add",
        &gid,
        "--group-add",
        "0",
        "-v",
        &format!("{}:/var/run/docker.sock", sock.display()),
        "-v",
        "/:/host:ro",
        "-e",
        &format!("BILGE_WEB_LISTEN_ADDRESS=127.0.0.1:{port}"),
        // The image's own health check command, run more often than its 30s default.
        "--health-interval=2s",
        "bilge:test",
        "serve",
        "--state.path=/var/lib/bilge/bilge.db",
        "--path.rootfs=/host",
        "--docker.refresh-interval=1s",
    ]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let metrics = wait_for(
        "the container's /metrics with docker up",
        Duration::from_secs(60),
        || {
            let r = http("GET", &url, &[], b"").ok()?;
            let text = r.text();
            // The first collection can run before dockerd has marked the container running.
            let running = sample(&text, "bilge_docker_containers{state=\"running\"}");
            (sample(&text, "bilge_docker_up") == Some(1.0) && running == Some(1.0)).then_some(text)
        },
    );
    // The shipped binary carries the revision it was built from (build.rs), in `--version` and in
    // build_info alike.
    let git = std::process::Command::new("git")
        .args(["-C", REPO, "rev-parse", "--short=12", "HEAD"])
        .output()
        .expect("git is needed to check the compiled-in revision: apt-get install git");
    let head = String::from_utf8_lossy(&git.stdout).trim().to_string();
    assert_eq!(head.len(), 12, "git rev-parse: {git:?}");
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(
        version.starts_with("bilge ") && version.contains(&format!("(revision {head}, rustc ")),
        "{version}"
    );
    assert!(
        metrics.contains(&format!("revision=\"{head}\"")) && metrics.contains("rustversion=\""),
        "{metrics}"
    );
    // It sees the daemon it runs on, including its own image.
    assert!(
        metrics.contains("bilge_docker_largest_image_bytes{image=\"bilge:test\"}"),
        "{metrics}"
    );

    // The host's view: the same filesystems, sizes and read-only flags as bilge run on the host,
    // and the data root (bind-mounted read-only into the container) writable. Other tests mount
    // and unmount filesystems meanwhile, so the two are compared until a pair agrees: the host's
    // list before and after the container's scrape must match, and the container's must equal it.
    let mut last = String::new();
    let agreed = wait_for_opt(Duration::from_secs(60), || {
        let host = || {
            let out = run_ok(
                std::process::Command::new(BILGE)
                    .args(["df", "--json"])
                    .env("DOCKER_HOST", &d.host),
            );
            serde_json::from_str::<serde_json::Value>(&out).unwrap()
        };
        let before = host();
        // A collection that started after `before`.
        std::thread::sleep(Duration::from_secs(3));
        let text = http("GET", &url, &[], b"").ok()?.text();
        let after = host();
        let (b, c, a) = (
            own(df_filesystems(&before), &d),
            own(metrics_filesystems(&text), &d),
            own(df_filesystems(&after), &d),
        );
        last = format!("host {b:?}\ncontainer {c:?}");
        (b == a && b == c).then_some((after, text))
    });
    let Some((host, text)) = agreed else {
        panic!("the container's filesystems never equalled the host's:\n{last}")
    };
    assert!(
        host["filesystems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["mountpoint"] == "/"),
        "{host}"
    );
    assert!(
        !text.contains("mountpoint=\"/host"),
        "the container's own mounts: {text}"
    );
    assert!(
        !text.contains("mountpoint=\"/etc/hosts\""),
        "the container's own mounts: {text}"
    );
    // The data root: where the host has it, on the host's filesystem, writable.
    let dr = &host["data_root"];
    assert_eq!(dr["path"], d.data_root.display().to_string(), "{host}");
    let plan = http(
        "GET",
        &format!("http://127.0.0.1:{port}/api/v1/plan"),
        &[],
        b"",
    )
    .unwrap()
    .json();
    let ours = &plan["data_root"];
    for key in ["path", "mountpoint", "size", "readonly"] {
        assert_eq!(
            ours[key], dr[key],
            "data root {key}: container {ours} vs host {dr}"
        );
    }
    assert_eq!(ours["readonly"], false, "{ours}");
    let mp = dr["mountpoint"].as_str().unwrap();
    assert_eq!(
        sample(
            &text,
            &format!("bilge_docker_data_root_size_bytes{{mountpoint=\"{mp}\",role=\"data_root\"}}")
        ),
        dr["size"].as_f64(),
        "data root size, container vs host:\n{text}"
    );
    // The host's root filesystem, bind-mounted read-only at /host, is writable, as it is.
    let root = metrics_filesystems(&text);
    assert_eq!(root.get("/").map(|(_, ro)| *ro), Some(false), "{root:?}");

    // The image's HEALTHCHECK reports healthy.
    wait_for(
        "the container to be healthy",
        Duration::from_secs(90),
        || {
            (d.docker(&["inspect", "bilge", "--format", "{{.State.Health.Status}}"]) == "healthy")
                .then_some(())
        },
    );
}

/// What a package installs besides the binary: completion scripts and man pages, generated from
/// the flags, so they cannot drift from them.
#[test]
fn completions_and_man_pages_come_from_the_flags_and_render() {
    require("/bin/bash", "apt-get install bash");
    require("/usr/bin/groff", "apt-get install groff-base");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BILGE)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "bilge {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("--docker.host") && bash.contains("--webhook.relay-targets"));
    let check = std::process::Command::new("/bin/bash")
        .args(["-n", "-c", &bash])
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            run(&["completions", shell]).contains("docker.host"),
            "{shell}"
        );
    }
    // One page for bilge, one per command, each rendered by groff without a warning.
    for (args, name, flag) in [
        (vec!["man"], "bilge", "serve"),
        (vec!["man", "serve"], "bilge-serve", "--web.listen-address"),
        (vec!["man", "clean"], "bilge-clean", "--docker.host"),
    ] {
        let text = groff(&run(&args), name);
        assert!(text.contains(&format!("{name}(1)")), "{text}");
        assert!(text.contains(flag), "{name}: no {flag}: {text}");
    }
    let out = std::process::Command::new(BILGE)
        .args(["man", "no-such-command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command"));
}

/// The systemd unit's sandbox, as far as this machine allows: systemd is not PID 1 here, so
/// `systemd-run` cannot start the unit's service. What its `ProtectSystem=strict` and
/// `ProtectProc=invisible` do to bilge is made by hand instead: a private mount namespace where
/// every mount is remounted read-only (a bind remount, the filesystems stay writable), a proc
/// that hides other users' processes, and bilge run as an unprivileged user holding only the
/// unit's `CAP_DAC_READ_SEARCH`, so it cannot read PID 1's table and falls back to its own. Its
/// filesystems and read-only flags must equal those bilge reports outside the sandbox.
#[test]
fn bilge_inside_a_read_only_sandbox_reports_the_filesystems_true_flags() {
    require_root();
    require("/usr/bin/unshare", "apt-get install util-linux");
    require("/usr/bin/setpriv", "apt-get install util-linux");
    let dir = temp_dir("sandbox");
    let bin = dir.join("bilge");
    // Outside /tmp's own mounts and readable by the unprivileged user.
    std::fs::copy(BILGE, &bin).unwrap();
    let script = format!(
        r#"set -e
awk '{{print $5}}' /proc/self/mountinfo | sed 's/\\040/ /g' | while read -r m; do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
mount -t proc -o hidepid=invisible proc /proc
# The unit's user: unprivileged, with CAP_DAC_READ_SEARCH alone (AmbientCapabilities=,
# CapabilityBoundingSet=), which lets it stat mounts under folders it may not search.
AS_SERVICE="setpriv --reuid=65534 --regid=65534 --clear-groups --bounding-set=-all,+dac_read_search --inh-caps=-all,+dac_read_search --ambient-caps=-all,+dac_read_search"
# The sandbox holds: / is a read-only mount, and PID 1 is hidden from the user bilge runs as.
awk '$5 == "/" {{print "root-mount-options " $6}}' /proc/self/mountinfo
$AS_SERVICE sh -c 'test -e /proc/1/mountinfo && echo pid1-visible || echo pid1-hidden'
$AS_SERVICE {bin} --docker.host=unix:///nonexistent.sock df --json \
  || echo "bilge-exit $?" >&2
"#,
        bin = bin.display()
    );
    let outside = || {
        let out = std::process::Command::new(BILGE)
            .args(["--docker.host=unix:///nonexistent.sock", "df", "--json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Without a daemon bilge df still prints the filesystems, then exits 1 saying why.
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("no socket at /nonexistent.sock"),
            "{stderr}"
        );
        df_filesystems(&serde_json::from_slice(&out.stdout).unwrap())
    };
    let mut last = String::new();
    let agreed = wait_for_opt(Duration::from_secs(60), || {
        let before = outside();
        let run = std::process::Command::new("/usr/bin/unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "the sandbox failed: {stderr}");
        // The same exit as outside: 1, for the missing daemon, and nothing else.
        assert!(
            stderr.contains("bilge-exit 1") && stderr.contains("no socket at /nonexistent.sock"),
            "bilge in the sandbox did not exit 1 for the missing daemon alone: {stderr}"
        );
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        let after = outside();
        let (head, json) = out
            .split_once('{')
            .expect("bilge df --json printed no JSON");
        assert!(
            head.contains("root-mount-options ro,"),
            "the sandbox did not make / a read-only mount:\n{head}"
        );
        assert!(
            head.contains("pid1-hidden"),
            "PID 1 stayed visible:\n{head}"
        );
        let inside = df_filesystems(&serde_json::from_str(&format!("{{{json}")).unwrap());
        last = format!("outside {before:?}\ninside {inside:?}");
        (before == after && inside == before).then_some(inside)
    });
    let Some(inside) = agreed else {
        panic!("bilge in the sandbox never reported the filesystems as outside it:\n{last}")
    };
    // The root filesystem, a read-only mount in the sandbox, is writable, as it is.
    assert_eq!(
        inside.get("/").map(|(_, ro)| *ro),
        Some(false),
        "{inside:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
