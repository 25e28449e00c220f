//! The deploy image: `deploy/Dockerfile.scratch` built on a private daemon around the static
//! dist binary that `scripts/test.sh` builds, run with the Docker socket mounted, scraped.

use std::path::PathBuf;
use std::time::Duration;

use crate::util::*;

/// The static binary built by scripts/test.sh (`BILGE_DIST_BIN`).
fn dist_binary() -> PathBuf {
    let path = std::env::var("BILGE_DIST_BIN").unwrap_or_else(|_| {
        panic!(
            "BILGE_DIST_BIN is not set: run through scripts/test.sh, which builds it with \
             cargo build --profile dist"
        )
    });
    let p = PathBuf::from(path);
    assert!(p.exists(), "BILGE_DIST_BIN={} does not exist", p.display());
    p
}

#[test]
fn the_scratch_image_runs_as_non_root_and_serves_metrics_through_the_socket() {
    let bin = dist_binary();
    let d = Daemon::start("image");
    let ctx = temp_dir("imagectx");
    std::fs::copy(&bin, ctx.join("bilge")).unwrap();
    let dockerfile =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile.scratch");
    d.docker(&[
        "build",
        "-q",
        "-f",
        dockerfile.to_str().unwrap(),
        "-t",
        "bilge:test",
        ctx.to_str().unwrap(),
    ]);
    let inspect = d.docker(&[
        "image",
        "inspect",
        "bilge:test",
        "--format",
        "{{.Config.User}} {{json .Config.Healthcheck}}",
    ]);
    assert!(inspect.starts_with("65532"), "image user: {inspect}");
    assert!(inspect.contains("healthcheck"), "no HEALTHCHECK: {inspect}");

    // The daemon's socket is group-owned by root here; the container reaches it through --group-add.
    let sock = d.dir.join("docker.sock");
    let gid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&sock).unwrap().gid().to_string()
    };
    let port = free_port();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "bilge",
        "--network",
        "host",
        "--group-add",
        &gid,
        "-v",
        &format!("{}:/var/run/docker.sock", sock.display()),
        "-e",
        &format!("BILGE_WEB_LISTEN_ADDRESS=127.0.0.1:{port}"),
        "--tmpfs",
        "/var/lib/bilge:uid=65532,gid=65532",
        // The image's own health check command, run more often than its 30s default.
        "--health-interval=2s",
        "bilge:test",
        "serve",
        "--state.path=/var/lib/bilge/bilge.db",
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
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
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
    // The image's HEALTHCHECK reports healthy.
    wait_for(
        "the container to be healthy",
        Duration::from_secs(90),
        || {
            (d.docker(&["inspect", "bilge", "--format", "{{.State.Health.Status}}"]) == "healthy")
                .then_some(())
        },
    );
    let user = d.docker(&["inspect", "bilge", "--format", "{{.Config.User}}"]);
    assert_eq!(user, "65532:65532");
    let _ = std::fs::remove_dir_all(&ctx);
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
        let roff = run(&args);
        let mut groff = std::process::Command::new("/usr/bin/groff")
            .args(["-man", "-Tascii", "-P-cbu", "-ww"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(roff.as_bytes())
            .unwrap();
        let out = groff.wait_with_output().unwrap();
        let (text, warnings) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success() && warnings.is_empty(), "{warnings}");
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
