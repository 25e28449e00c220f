//! `bilge build`, the build API and the build metrics, against real commands, real BuildKit
//! builds on private daemons (one of them on a 1 GiB disk) and a real `bilge serve`.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::*;

/// A socket where no daemon listens, for builds that do not need Docker.
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";
/// The API token the tests' servers use.
const TOKEN: &str = "s3cret-build-token";

/// Writes the API token into `dir` and returns its path.
fn token_file(dir: &Path) -> PathBuf {
    let p = dir.join("token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    p
}

/// `bilge build` with `flags`, then `--`, then `cmd`; stdin empty, output captured.
fn bilge_build(docker_host: &str, state: &Path, flags: &[&str], cmd: &[&str]) -> Output {
    Command::new(BILGE)
        .arg("build")
        .args(["--docker.host", docker_host])
        .arg("--state.path")
        .arg(state)
        .args(flags)
        .arg("--")
        .args(cmd)
        .env("DOCKER_HOST", docker_host)
        .env("DOCKER_BUILDKIT", "1")
        .env_remove("BILGE_SERVER")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// stderr as text.
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last line of stderr: bilge's summary.
fn summary_line(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or_default().to_string()
}

/// A server with the build API on (the token from [`token_file`]).
fn api_server(docker_host: &str, extra: &[&str]) -> Server {
    let dir = temp_dir("api");
    let token = token_file(&dir);
    let mut args = vec!["--webhook.token-file", token.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start_in(dir, docker_host, &args)
}

/// The value of the sample of `name` whose labels are exactly `labels`, in any order.
fn sample_of(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let mut got: Vec<(String, String)> = rest
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        got.sort();
        want.sort();
        (got == want).then(|| value.parse().ok())?
    })
}

/// Waits until a build counter reaches `n`.
fn wait_for_builds(s: &Server, project: &str, result: &str, reason: &str, n: f64) {
    wait_for(
        &format!("bilge_builds_total{{{project},{result},{reason}}} to reach {n}"),
        Duration::from_secs(15),
        || {
            let v = sample_of(
                &s.metrics(),
                "bilge_builds_total",
                &[("project", project), ("result", result), ("reason", reason)],
            );
            (v == Some(n)).then_some(())
        },
    );
}

/// POSTs a build outcome with the given Authorization header.
fn push(s: &Server, auth: Option<&str>, body: &str) -> Response {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    http("POST", &s.url("/api/v1/builds"), &headers, body.as_bytes()).unwrap()
}

/// The recorded builds, newest first.
fn history(s: &Server) -> Vec<serde_json::Value> {
    let r = s.get("/api/v1/builds?limit=100");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["builds"].as_array().unwrap().clone()
}

/// Bytes that a terminal-aware program might write: every byte value, colours, a carriage
/// return without a line feed, a cursor move, and no newline at the end.
fn awkward_bytes(tag: &str) -> Vec<u8> {
    let mut b = format!("{tag} start\n\x1b[1;31mred\x1b[0m\r\x1b[2Kprogress 50%\rprogress 100%\n")
        .into_bytes();
    b.extend(0u8..=255);
    b.extend_from_slice(b"\n\x1b]0;title\x07tail without newline");
    b
}

#[test]
fn output_passes_through_byte_for_byte_and_exit_codes_match() {
    let dir = temp_dir("passthrough");
    let state = dir.join("bilge.db");
    std::fs::write(dir.join("out.bin"), awkward_bytes("out")).unwrap();
    std::fs::write(dir.join("err.bin"), awkward_bytes("err")).unwrap();
    for (script, code) in [
        ("cat out.bin; cat err.bin >&2; cat out.bin", 0),
        ("cat err.bin >&2; cat out.bin; exit 3", 3),
        ("cat out.bin; printf 'done\\n' >&2; exit 255", 255),
        ("cat out.bin; kill -TERM $$", 143),
    ] {
        let alone = Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .output()
            .unwrap();
        let wrapped = Command::new(BILGE)
            .args(["build", "--project", "pass", "--docker.host", NO_DOCKER])
            .arg("--state.path")
            .arg(&state)
            .args(["--", "sh", "-c", script])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            wrapped.status.code(),
            Some(code),
            "{script}: {}",
            stderr(&wrapped)
        );
        assert_eq!(
            wrapped.stdout, alone.stdout,
            "{script}: stdout differs from the command run alone"
        );
        // stderr is the command's, then (on a fresh line) the one summary line.
        let summary = summary_line(&wrapped);
        assert!(summary.starts_with("bilge: build "), "{summary:?}");
        let mut expected = alone.stderr.clone();
        if !expected.is_empty() && !expected.ends_with(b"\n") {
            expected.push(b'\n');
        }
        expected.extend_from_slice(summary.as_bytes());
        expected.push(b'\n');
        assert_eq!(
            wrapped.stderr, expected,
            "{script}: stderr is not the command's plus one summary line"
        );
        let result = if code == 0 { "success" } else { "failure" };
        assert!(summary.contains(result), "{summary}");
        if code != 0 {
            assert!(summary.contains(&format!("exit {code}")), "{summary}");
        }
    }
    let signalled = Command::new(BILGE)
        .args(["build", "--project", "pass", "--docker.host", NO_DOCKER])
        .arg("--state.path")
        .arg(&state)
        .args(["--", "sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert!(summary_line(&signalled).contains("(canceled, exit 143)"));
}

#[test]
fn signals_sent_to_bilge_reach_the_build_and_it_is_recorded_as_canceled() {
    use std::io::BufRead;
    let dir = temp_dir("signals");
    for (sig, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        let mut child = Command::new(BILGE)
            .args(["build", "--project", "sig", "--docker.host", NO_DOCKER])
            .arg("--state.path")
            .arg(dir.join("bilge.db"))
            .args(["--", "sh", "-c", "echo ready; exec sleep 60"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let status = wait_for(
            "bilge to end after the signal",
            Duration::from_secs(10),
            || child.try_wait().unwrap(),
        );
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(code), "{sig}: {err}");
        assert!(
            err.contains(&format!("(canceled, exit {code})")),
            "{sig}: {err}"
        );
    }
}

#[test]
fn a_command_that_cannot_start_exits_127_and_is_recorded() {
    let dir = temp_dir("nostart");
    let state = dir.join("bilge.db");
    let o = bilge_build(
        NO_DOCKER,
        &state,
        &["--project", "x"],
        &["/nonexistent/make", "image"],
    );
    assert_eq!(o.status.code(), Some(127));
    let line = summary_line(&o);
    assert!(
        line.contains("command_failed") && line.contains("/nonexistent/make"),
        "{line}"
    );
    let stored = stored_builds(&state);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].reason.as_str(), "command_failed");
    assert_eq!(stored[0].exit_code, Some(127));
}

/// The builds in a state file, newest first.
fn stored_builds(state: &Path) -> Vec<bilge::store::BuildRecord> {
    let errors = prometheus::IntCounter::new("e", "e").unwrap();
    bilge::store::Store::new(state, errors)
        .list_builds(100)
        .unwrap()
}

#[test]
fn a_terminal_stays_a_terminal_for_the_command() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 33,
            ws_col: 111,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    let dir = temp_dir("tty");
    let mut child = Command::new(BILGE)
        .args(["build", "--project", "tty", "--docker.host", NO_DOCKER])
        .arg("--state.path")
        .arg(dir.join("bilge.db"))
        .args([
            "--",
            "sh",
            "-c",
            "test -t 1 && test -t 2 && echo both-are-terminals; stty -F /dev/stdout size; echo to-stderr >&2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.as_fd().try_clone_to_owned().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // Read until bilge exits and the terminal has nothing more (EIO once every writer is gone).
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let status = child.wait().unwrap();
    let screen = reader.join().unwrap();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("both-are-terminals"), "{screen:?}");
    assert!(
        screen.contains("33 111"),
        "the window size did not pass through: {screen:?}"
    );
    assert!(screen.contains("to-stderr"), "{screen:?}");
    assert!(screen.contains("bilge: build success"), "{screen:?}");
}

#[test]
fn the_build_api_authenticates_validates_and_lists() {
    let s = api_server(NO_DOCKER, &[]);
    let good = r#"{"project":"web","result":"failure","reason":"no_space","exit_code":1,
        "started_at":"2025-06-01T11:00:00Z","finished_at":"2025-06-01T11:02:00Z",
        "duration_seconds":120,"evidence":"write /big: no space left on device","host":"ci-7"}"#;

    let r = push(&s, None, good);
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
    assert_eq!(push(&s, Some("Bearer wrong"), good).status, 401);
    assert_eq!(push(&s, Some(TOKEN), good).status, 401);

    let bearer = format!("Bearer {TOKEN}");
    let r = push(
        &s,
        Some(&bearer),
        r#"{"project":"web","result":"failure","reason":"disk_full","duration_seconds":1}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("no_space"),
        "{}",
        r.text()
    );
    let r = push(&s, Some(&bearer), "not json");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
    assert!(history(&s).is_empty(), "a refused request stored something");

    let r = push(&s, Some(&bearer), good);
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = r.json();
    assert!(stored["id"].as_i64().is_some());
    assert_eq!(stored["reason"], "no_space");

    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ci:{TOKEN}"))
    );
    let r = push(
        &s,
        Some(&basic),
        r#"{"project":"web","result":"success","duration_seconds":42.5}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());

    let list = history(&s);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["result"], "success", "newest first: {list:?}");
    assert_eq!(list[1]["evidence"], "write /big: no space left on device");
    assert_eq!(list[1]["host"], "ci-7");
    for key in [
        "project",
        "result",
        "reason",
        "exit_code",
        "started_at",
        "finished_at",
        "duration_seconds",
        "evidence",
        "host",
    ] {
        assert!(list[1].get(key).is_some(), "{key} missing from {}", list[1]);
    }

    wait_for_builds(&s, "web", "failure", "no_space", 1.0);
    wait_for_builds(&s, "web", "success", "none", 1.0);
    let text = s.metrics();
    assert_eq!(
        sample_of(
            &text,
            "bilge_build_duration_seconds_count",
            &[("project", "web"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_of(
            &text,
            "bilge_build_last_timestamp_seconds",
            &[("project", "web"), ("result", "failure")]
        ),
        Some(1748775720.0)
    );

    // Without a token the endpoint is off, and says how to turn it on.
    let off = Server::start(NO_DOCKER, &[]);
    let r = push(&off, Some(&bearer), good);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("--webhook.token-file"), "{}", r.text());
}

#[test]
fn build_metrics_cap_projects_and_survive_a_restart() {
    let s = api_server(NO_DOCKER, &["--builds.max-projects", "2"]);
    let bearer = format!("Bearer {TOKEN}");
    for (project, at) in [
        ("a", "10:00"),
        ("b", "10:01"),
        ("c", "10:02"),
        ("d", "10:03"),
    ] {
        let body = format!(
            r#"{{"project":"{project}","result":"success","finished_at":"2025-06-01T{at}:00Z","duration_seconds":5}}"#
        );
        assert_eq!(push(&s, Some(&bearer), &body).status, 201);
    }
    wait_for_builds(&s, "other", "success", "none", 2.0);
    let before = s.metrics();
    let last_other = sample_of(
        &before,
        "bilge_build_last_timestamp_seconds",
        &[("project", "other"), ("result", "success")],
    );
    assert_eq!(last_other, Some(1748772180.0));
    assert_eq!(
        sample_of(
            &before,
            "bilge_builds_total",
            &[("project", "c"), ("result", "success"), ("reason", "none")]
        ),
        None,
        "a project beyond the cap got a label of its own"
    );
    // The history keeps the real names.
    assert_eq!(history(&s)[0]["project"], "d");

    let dir = s.dir.clone();
    assert!(s.terminate().success());
    let token = dir.join("token");
    let again = Server::start_in(
        dir,
        NO_DOCKER,
        &[
            "--webhook.token-file",
            token.to_str().unwrap(),
            "--builds.max-projects",
            "2",
        ],
    );
    let after = again.metrics();
    for (name, labels) in [
        (
            "bilge_builds_total",
            vec![("project", "a"), ("result", "success"), ("reason", "none")],
        ),
        (
            "bilge_builds_total",
            vec![
                ("project", "other"),
                ("result", "success"),
                ("reason", "none"),
            ],
        ),
        (
            "bilge_build_last_timestamp_seconds",
            vec![("project", "other"), ("result", "success")],
        ),
        (
            "bilge_build_duration_seconds_sum",
            vec![("project", "b"), ("result", "success")],
        ),
    ] {
        assert_eq!(
            sample_of(&after, name, &labels),
            sample_of(&before, name, &labels),
            "{name}{labels:?} changed across a restart"
        );
    }
}

#[test]
fn outcomes_reach_a_running_server_directly_or_through_the_store() {
    let s = api_server(NO_DOCKER, &[]);
    let state = s.dir.join("bilge.db");
    let token = s.dir.join("token");
    let url = format!("http://{}", s.addr);

    // Sent to the server.
    let o = bilge_build(
        NO_DOCKER,
        &s.dir.join("unused.db"),
        &[
            "--project",
            "direct",
            "--server",
            &url,
            "--server.token-file",
            token.to_str().unwrap(),
        ],
        &["true"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).lines().count(),
        1,
        "more than the summary: {}",
        stderr(&o)
    );
    wait_for_builds(&s, "direct", "success", "none", 1.0);
    assert!(!s.dir.join("unused.db").exists());

    // No server named: written to the store the server reads, and counted from there.
    let o = bilge_build(NO_DOCKER, &state, &["--project", "local"], &["false"]);
    assert_eq!(o.status.code(), Some(1));
    wait_for_builds(&s, "local", "failure", "unknown", 1.0);

    // The server refuses (no token): the outcome falls back to the local store, and bilge says so.
    let fallback = s.dir.join("fallback.db");
    let o = bilge_build(
        NO_DOCKER,
        &fallback,
        &["--project", "refused", "--server", &url],
        &["true"],
    );
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(err.contains("401") && err.contains("fallback.db"), "{err}");
    assert!(fallback.exists());

    // Nothing listens: the same.
    let o = bilge_build(
        NO_DOCKER,
        &fallback,
        &["--project", "refused", "--server", "http://127.0.0.1:9"],
        &["true"],
    );
    assert!(o.status.success());
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));

    // Neither works: the record is printed as JSON so the CI log keeps it.
    let o = bilge_build(
        NO_DOCKER,
        Path::new("/proc/bilge/cannot.db"),
        &["--project", "lost", "--server", "http://127.0.0.1:9"],
        &["true"],
    );
    assert!(o.status.success());
    let err = stderr(&o);
    let json = err
        .lines()
        .find_map(|l| l.split_once("here it is: ").map(|(_, j)| j.to_string()))
        .unwrap_or_else(|| panic!("no JSON record in {err}"));
    let rec: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rec["project"], "lost");
    assert_eq!(rec["result"], "success");

    let projects: Vec<String> = history(&s)
        .iter()
        .map(|b| b["project"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(projects, ["local", "direct"]);
}

#[test]
fn bad_build_flags_stop_with_exit_code_2() {
    let dir = temp_dir("badflags");
    for (flags, names) in [
        (vec!["--project", "has space"], "--project"),
        (vec!["--min-free", "lots"], "--min-free"),
        (vec!["--server", "ftp://x:1"], "--server"),
        (
            vec![
                "--server",
                "https://x:1",
                "--server.ca-file",
                "/nonexistent",
            ],
            "--server.ca-file",
        ),
        (
            vec![
                "--server",
                "http://x:1",
                "--server.token-file",
                "/nonexistent",
            ],
            "--server.token-file",
        ),
    ] {
        let o = bilge_build(NO_DOCKER, &dir.join("b.db"), &flags, &["true"]);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(names), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
}

/// A BuildKit build of `lines` (after busybox is installed) through `bilge build`.
fn docker_build(d: &Daemon, state: &Path, flags: &[&str], lines: &[&str]) -> Output {
    let ctx = build_context(&d.dir, lines);
    bilge_build(
        &d.host,
        state,
        flags,
        &[DOCKER, "build", "--network", "none", ctx.to_str().unwrap()],
    )
}

#[test]
fn real_builds_are_classified_success_dockerfile_and_command_failed() {
    let d = Daemon::start("realbuilds");
    let s = api_server(&d.host, &[]);
    let url = format!("http://{}", s.addr);
    let token = s.dir.join("token");
    let state = d.dir.join("unused.db");
    let flags = |p: &'static str| {
        vec![
            "--project".to_string(),
            p.to_string(),
            "--server".into(),
            url.clone(),
            "--server.token-file".into(),
            token.to_str().unwrap().to_string(),
        ]
    };
    let run = |p: &'static str, lines: &[&str]| {
        let f = flags(p);
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        docker_build(&d, &state, &f, lines)
    };

    let ok = run("ok", &["RUN echo built > /built"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(
        summary_line(&ok).starts_with("bilge: build success"),
        "{}",
        stderr(&ok)
    );
    // BuildKit's own progress output passed through.
    assert!(stderr(&ok).contains("RUN echo built"), "{}", stderr(&ok));

    let syntax = run("syntax", &["RUNN echo typo"]);
    assert_eq!(syntax.status.code(), Some(1), "{}", stderr(&syntax));
    let line = summary_line(&syntax);
    assert!(line.contains("(dockerfile, exit 1)"), "{}", stderr(&syntax));
    assert!(line.to_lowercase().contains("runn"), "{line}");

    let failing = run("failing", &["RUN echo about to fail; exit 7"]);
    assert_eq!(failing.status.code(), Some(1), "{}", stderr(&failing));
    assert!(
        summary_line(&failing).contains("(command_failed, exit 1)"),
        "{}",
        stderr(&failing)
    );

    wait_for_builds(&s, "ok", "success", "none", 1.0);
    wait_for_builds(&s, "syntax", "failure", "dockerfile", 1.0);
    wait_for_builds(&s, "failing", "failure", "command_failed", 1.0);
    let list = history(&s);
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|b| b["host"].is_string()));
    assert!(
        list[1]["evidence"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("runn")
    );
}

#[test]
fn the_seed_scenario_fails_with_no_space_and_serve_shows_it() {
    let d = Daemon::start_on_loop_fs("seed", 1024);
    let s = api_server(&d.host, &["--docker.refresh-interval", "1s"]);
    let url = format!("http://{}", s.addr);
    let token = s.dir.join("token");
    let o = docker_build(
        &d,
        &d.dir.join("unused.db"),
        &[
            "--project",
            "seed",
            "--server",
            &url,
            "--server.token-file",
            token.to_str().unwrap(),
        ],
        &["RUN dd if=/dev/zero of=/big bs=1M count=2000"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line = summary_line(&o);
    assert!(line.contains("(no_space, exit 1)"), "{err}");
    assert!(line.contains("No space left on device"), "{line}");

    wait_for_builds(&s, "seed", "failure", "no_space", 1.0);
    let rec = &history(&s)[0];
    assert_eq!(rec["reason"], "no_space");
    assert!(
        rec["evidence"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{rec}"
    );
    let text = s.metrics();
    assert!(
        sample_of(
            &text,
            "bilge_build_last_timestamp_seconds",
            &[("project", "seed"), ("result", "failure")]
        )
        .unwrap()
            > 1.7e9
    );
}

#[test]
fn min_free_refuses_to_start_a_build_on_a_full_disk() {
    let d = Daemon::start("minfree");
    let state = d.dir.join("bilge.db");
    let marker = d.dir.join("ran");
    let o = bilge_build(
        &d.host,
        &state,
        &["--project", "guarded", "--min-free", "100%"],
        &["touch", marker.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!marker.exists(), "the build ran despite --min-free");
    let line = summary_line(&o);
    assert!(
        line.contains("(no_space)") && line.contains("--min-free 100%"),
        "{line}"
    );
    assert!(
        line.contains(&d.data_root.display().to_string()),
        "the check was not made on the daemon's data root: {line}"
    );

    // With --clean-and-retry the standard cleanup runs first; 100% can never be met, so the
    // build still does not start.
    let o = bilge_build(
        &d.host,
        &state,
        &[
            "--project",
            "guarded",
            "--min-free",
            "100%",
            "--clean-and-retry",
        ],
        &["touch", marker.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!marker.exists());
    let err = stderr(&o);
    assert!(err.contains("running the standard cleanup first"), "{err}");
    assert!(err.contains("bilge: cleanup: "), "{err}");
    let errors = prometheus::IntCounter::new("e", "e").unwrap();
    let audit = bilge::store::Store::new(&state, errors)
        .list_cleanups(10)
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].trigger.as_str(), "build_retry");

    // A modest minimum lets the build run.
    let o = bilge_build(
        &d.host,
        &state,
        &["--project", "guarded", "--min-free", "1MiB"],
        &["touch", marker.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(marker.exists());
}

#[test]
fn clean_and_retry_frees_a_full_small_disk_and_the_retry_succeeds() {
    let d = Daemon::start_on_loop_fs("retry", 1024);
    // Earlier builds leave build cache and dangling (untagged) images behind: 3 × 250 MB. The
    // containerd image store keeps each layer twice (BuildKit's snapshot, and the image's
    // unpacked one), so there the same fill is 3 × 120 MB and the build 300 MB.
    let (fill_mib, build_mib) = if engine().containerd_store {
        (120, 300)
    } else {
        (250, 400)
    };
    let mut fill = Vec::new();
    for i in 0..3 {
        fill.push(d.build(
            None,
            &[&format!(
                "RUN echo fill-{i} > /id && dd if=/dev/zero of=/fill bs=1M count={fill_mib}"
            )],
        ));
    }
    assert!(
        d.docker(&["images", "-q", "--filter", "dangling=true"])
            .lines()
            .count()
            >= 3
    );
    let s = api_server(&d.host, &[]);
    let url = format!("http://{}", s.addr);
    let token = s.dir.join("token");
    let policy = s.dir.join("policy.toml");
    std::fs::write(&policy, "[cleanup]\nuntil = \"0s\"\n").unwrap();
    let flags = [
        "--project",
        "retry",
        "--clean-and-retry",
        "--config",
        policy.to_str().unwrap(),
        "--server",
        &url,
        "--server.token-file",
        token.to_str().unwrap(),
    ];
    let state = s.dir.join("bilge.db");
    let o = docker_build(
        &d,
        &state,
        &flags,
        &[&format!(
            "RUN dd if=/dev/zero of=/big bs=1M count={build_mib}"
        )],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let first = err
        .lines()
        .find(|l| l.starts_with("bilge: build failure"))
        .unwrap_or_else(|| panic!("the first attempt did not fail: {err}"));
    assert!(
        first.contains("(no_space, exit 1)") && first.ends_with("cleaning up and retrying once"),
        "{first}"
    );
    assert!(err.contains("bilge: cleanup: "), "{err}");
    assert!(
        summary_line(&o).starts_with("bilge: build success")
            && summary_line(&o).contains("attempt 2"),
        "{err}"
    );

    let builds: Vec<serde_json::Value> = history(&s)
        .into_iter()
        .filter(|b| b["project"] == "retry")
        .collect();
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert_eq!(builds[0]["attempt"], 2);
    assert_eq!(builds[0]["result"], "success");
    assert_eq!(builds[1]["attempt"], 1);
    assert_eq!(builds[1]["reason"], "no_space");
    wait_for_builds(&s, "retry", "failure", "no_space", 1.0);
    wait_for_builds(&s, "retry", "success", "none", 1.0);

    // The cleanup is in the audit, as a build_retry run of the standard level that freed space.
    let r = s.get("/api/v1/cleanups");
    let cleanups = r.json()["cleanups"].as_array().unwrap().clone();
    let run = cleanups
        .iter()
        .find(|c| c["trigger"] == "build_retry")
        .unwrap_or_else(|| panic!("no build_retry cleanup in {cleanups:?}"));
    assert_eq!(run["result"], "success", "{run}");
    assert_eq!(run["level"], "dangling_images", "{run}");
    assert!(
        run["reclaimed_bytes"].as_u64().unwrap() > 2 * fill_mib * 1_000_000,
        "{run}"
    );
    let left = d.docker(&["images", "-q", "--no-trunc"]);
    for id in &fill {
        assert!(!left.contains(id.as_str()), "{id} survived the cleanup");
    }
}

#[test]
fn clean_and_retry_does_not_retry_a_failure_a_cleanup_cannot_fix() {
    let dir = temp_dir("noretry");
    let o = bilge_build(
        NO_DOCKER,
        &dir.join("bilge.db"),
        &["--project", "noretry", "--clean-and-retry"],
        &[
            "sh",
            "-c",
            "echo 'ERROR: failed to solve: dockerfile parse error on line 3: unknown instruction: RUNN' >&2; exit 1",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(!err.contains("cleanup"), "{err}");
    assert_eq!(stored_builds(&dir.join("bilge.db")).len(), 1);
}
