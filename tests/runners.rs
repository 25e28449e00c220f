//! bilge on self-hosted CI runners (docs/ci.md). deploy/ci's hooks run the way each runner runs
//! them, from the example runner configs in deploy/ci: GitHub's job-started hook as `bash -e
//! HOOK` in the runner's environment (its `.env` file) plus the job's default variables, the
//! job's step only after the hook exited 0; GitLab's `pre_build_script` inside the job's own shell
//! under `set -eo pipefail`, followed by the job's script, with the `[[runners]]` section's
//! `environment`. Each test has a private daemon with images and build cache to clean, and the
//! job's build step runs under `bilge build`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::*;

/// deploy/ci in this checkout.
fn ci_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ci")
}

/// `path` as the checkout has it: the examples install the scripts in another folder.
fn installed_here(path: &str) -> String {
    let name = Path::new(path)
        .file_name()
        .unwrap_or_else(|| panic!("{path:?} names no file"));
    let here = ci_dir().join(name);
    assert!(
        here.exists(),
        "the example names {path}, not a script in deploy/ci"
    );
    here.display().to_string()
}

/// What every runner's environment has here: bilge under test first on PATH (as `bilge`, for
/// the hook and the job's `bilge build`), Debian's Docker CLI, and the daemon in `DOCKER_HOST`.
fn base_env(d: &Daemon) -> Vec<(String, String)> {
    let bin = Path::new(BILGE).parent().unwrap().display().to_string();
    [
        ("PATH", format!("{bin}:/usr/sbin:/usr/bin:/sbin:/bin")),
        ("HOME", d.dir.display().to_string()),
        ("DOCKER_HOST", d.host.clone()),
        ("DOCKER_BUILDKIT", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Sets `key` in `env`, replacing an earlier value.
fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
}

/// Sets every pair of `overrides`.
fn set_all(env: &mut Vec<(String, String)>, overrides: &[(&str, &str)]) {
    for (k, v) in overrides {
        set(env, k, v);
    }
}

/// How a job went: the pre-job hook's output and, when it let the job start, the job's.
#[derive(Debug)]
struct Job {
    /// The hook (GitHub), or the whole job's shell (GitLab).
    hook: Output,
    /// Whether the job's own step or script ran.
    ran: bool,
    /// The job's step (GitHub, when the hook let it run).
    step: Option<Output>,
}

impl Job {
    /// The hook's stdout and stderr, for messages.
    fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.hook.stdout),
            String::from_utf8_lossy(&self.hook.stderr)
        )
    }
}

/// A GitHub Actions job on a self-hosted runner configured by deploy/ci/github-runner.env (with
/// `overrides`): the runner runs ACTIONS_RUNNER_HOOK_JOB_STARTED with `bash -e` and the job's
/// default variables; exit 0 lets the job's `step` run (`bash -e -c`, in the workspace),
/// anything else fails the job without running it.
fn github_job(d: &Daemon, overrides: &[(&str, &str)], step: &str) -> Job {
    let dotenv = std::fs::read_to_string(ci_dir().join("github-runner.env")).unwrap();
    let mut env = base_env(d);
    for line in dotenv.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("github-runner.env: {line:?} is not KEY=VALUE"));
        set(&mut env, k, v);
    }
    let hook = env
        .iter()
        .find(|(k, _)| k == "ACTIONS_RUNNER_HOOK_JOB_STARTED")
        .map(|(_, v)| installed_here(v))
        .expect("github-runner.env sets no ACTIONS_RUNNER_HOOK_JOB_STARTED");
    set_all(&mut env, overrides);
    let workspace = d.dir.join("_work/app/app");
    std::fs::create_dir_all(&workspace).unwrap();
    set_all(
        &mut env,
        &[
            ("CI", "true"),
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/app"),
            ("GITHUB_JOB", "build"),
            ("GITHUB_RUN_ID", "4242"),
            ("GITHUB_SHA", "0123456789abcdef"),
            ("GITHUB_WORKSPACE", workspace.to_str().unwrap()),
            ("RUNNER_NAME", "ci-7"),
            ("RUNNER_OS", "Linux"),
        ],
    );
    let run = |c: &mut Command| {
        c.env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(Command::new("bash").arg("-e").arg(&hook));
    let step = out
        .status
        .success()
        .then(|| run(Command::new("bash").args(["-e", "-c", step])));
    Job {
        hook: out,
        ran: step.is_some(),
        step,
    }
}

/// A GitLab CI job on a shell runner configured by deploy/ci/gitlab-runner.config.toml (with
/// `overrides` on its `environment`): one bash, as the runner's generated job script, with
/// `set -eo pipefail`, the `pre_build_script`, then the job's `script` lines. A failing
/// command ends the job with its exit code.
fn gitlab_job(d: &Daemon, overrides: &[(&str, &str)], script: &[&str]) -> Job {
    let text = std::fs::read_to_string(ci_dir().join("gitlab-runner.config.toml")).unwrap();
    let cfg: toml::Table = toml::from_str(&text).unwrap();
    let runner = &cfg["runners"].as_array().unwrap()[0];
    assert_eq!(runner["executor"].as_str(), Some("shell"));
    let pre = installed_here(runner["pre_build_script"].as_str().unwrap());
    let mut env = base_env(d);
    for kv in runner["environment"].as_array().unwrap() {
        let (k, v) = kv.as_str().unwrap().split_once('=').unwrap();
        set(&mut env, k, v);
    }
    set_all(&mut env, overrides);
    let project_dir = d.dir.join("builds/acme/app");
    std::fs::create_dir_all(&project_dir).unwrap();
    let marker = d.dir.join("job-script-ran");
    let _ = std::fs::remove_file(&marker);
    set_all(
        &mut env,
        &[
            ("CI", "true"),
            ("GITLAB_CI", "true"),
            ("CI_JOB_ID", "9001"),
            ("CI_JOB_NAME", "build-image"),
            ("CI_PROJECT_PATH", "acme/app"),
            ("CI_PROJECT_DIR", project_dir.to_str().unwrap()),
            ("CI_COMMIT_SHORT_SHA", "0123abcd"),
            ("CI_RUNNER_DESCRIPTION", "docker-build-host"),
        ],
    );
    let job_script = format!(
        "set -eo pipefail\n{pre}\ntouch {}\n{}\n",
        marker.display(),
        script.join("\n")
    );
    let out = Command::new("bash")
        .args(["-c", &job_script])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&project_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Job {
        ran: marker.exists(),
        hook: out,
        step: None,
    }
}

/// The cleanup audit of a state file, newest first.
fn audit(state: &Path) -> Vec<bilge::store::CleanupRecord> {
    let errors = prometheus::IntCounter::new("e", "e").unwrap();
    bilge::store::Store::new(state, errors)
        .list_cleanups(100)
        .unwrap()
}

/// The builds in a state file, newest first.
fn builds(state: &Path) -> Vec<bilge::store::BuildRecord> {
    let errors = prometheus::IntCounter::new("e", "e").unwrap();
    bilge::store::Store::new(state, errors)
        .list_builds(100)
        .unwrap()
}

/// `cache_mib` MiB of build cache that no image shares (its image is removed) and a dangling
/// image. Returns every build cache record id and the dangling image's id.
fn leftovers(d: &Daemon, cache_mib: u32) -> (Vec<String>, String) {
    d.build(
        Some("old:1"),
        &[&format!(
            "RUN dd if=/dev/zero of=/old bs=1M count={cache_mib} 2>/dev/null"
        )],
    );
    d.docker(&["rmi", "old:1"]);
    let dangling = d.make_dangling("dangle:1", 2);
    (d.build_cache_ids(), dangling)
}

#[test]
fn the_github_hook_cleans_a_short_data_root_lets_the_job_start_and_serve_sees_both() {
    let d = Daemon::start_on_loop_fs("gh-short", 512);
    let (cache, dangling) = leftovers(&d, 100);
    // The host's `bilge serve`, on the state file the runner's .env names for the hook too.
    let sdir = temp_dir("gh-serve");
    let state = sdir.join("bilge.db");
    let token = token_file(&sdir, "ci-token");
    let s = Server::start_with_state(
        sdir.clone(),
        &state,
        &d.host,
        &["--webhook.token-file", token.to_str().unwrap()],
    );
    // Short by 50 MiB: the build cache's 100 MiB are enough.
    let min = (d.data_root_avail() + (50 << 20)).to_string();
    let url = format!("http://{}", s.addr);
    let ctx = build_context(&d.dir.join("_work/app"), &["RUN echo built > /built"]);
    let step = format!(
        "bilge build --project \"$GITHUB_REPOSITORY\" -- docker build --network none -t app:1 {}",
        ctx.display()
    );
    let job = github_job(
        &d,
        &[
            ("BILGE_STATE_PATH", state.to_str().unwrap()),
            ("BILGE_CI_MIN_FREE", &min),
            ("BILGE_CLEAN_UNTIL", "0s"),
            ("BILGE_SERVER", &url),
            ("BILGE_SERVER_TOKEN_FILE", token.to_str().unwrap()),
        ],
        &step,
    );
    let text = job.text();
    assert_eq!(job.hook.status.code(), Some(0), "{text}");
    assert!(
        text.contains("job build of acme/app (run 4242) on runner ci-7"),
        "{text}"
    );
    assert!(
        text.contains("::group::bilge clean --min-free") && text.contains("::endgroup::"),
        "{text}"
    );
    assert!(text.contains(", less than --min-free"), "{text}");
    assert!(
        text.contains("after the cleanup, at least --min-free"),
        "{text}"
    );
    assert!(
        !text.contains("::error") && !text.contains("::warning"),
        "{text}"
    );
    // Build cache went, least recently used first (the 100 MiB record was enough; records that
    // images share stay); the run stopped once the minimum was met, so the dangling image
    // stayed. The job's own build made records of its own since.
    let left = d.build_cache_ids();
    assert!(cache.iter().any(|c| !left.contains(c)), "{left:?}\n{text}");
    assert!(d.has_image(&dangling), "{text}");
    assert!(d.data_root_avail() >= min.parse::<u64>().unwrap());

    // The run is in the host's audit, as `bilge serve` lists it.
    let rows = cleanups(&s);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["trigger"], "cli");
    assert_eq!(rows[0]["result"], "success");
    assert!(
        rows[0]["reclaimed_bytes"].as_u64().unwrap() >= 100 * 1000 * 1000,
        "{rows:#?}"
    );

    // The job ran, and its build step, under `bilge build`, reached the server.
    let step = job.step.expect("the job's step did not run");
    let err = String::from_utf8_lossy(&step.stderr);
    assert!(step.status.success(), "{err}");
    assert!(err.contains("bilge: build success"), "{err}");
    assert!(d.has_image("app:1"));
    let rec = wait_for(
        "the build in serve's history",
        Duration::from_secs(20),
        || {
            let r = s.get("/api/v1/builds");
            r.json()["builds"]
                .as_array()
                .and_then(|b| b.iter().find(|b| b["project"] == "acme/app").cloned())
        },
    );
    assert_eq!(rec["result"], "success", "{rec}");
}

#[test]
fn the_gitlab_pre_build_script_leaves_a_roomy_data_root_alone() {
    let d = Daemon::start("gl-roomy");
    let (cache, dangling) = leftovers(&d, 2);
    let state = temp_dir("gl-roomy-state").join("bilge.db");
    let job = gitlab_job(
        &d,
        &[
            ("BILGE_STATE_PATH", state.to_str().unwrap()),
            ("BILGE_CI_MIN_FREE", "1MiB"),
            ("BILGE_CLEAN_UNTIL", "0s"),
            // The example sends outcomes to the host's server; here there is none.
            ("BILGE_SERVER", ""),
        ],
        &["bilge build --project \"$CI_PROJECT_PATH\" -- true"],
    );
    let text = job.text();
    assert_eq!(job.hook.status.code(), Some(0), "{text}");
    assert!(job.ran, "the job's script did not run: {text}");
    assert!(
        text.contains("job 9001 (build-image) of acme/app on runner docker-build-host"),
        "{text}"
    );
    assert!(
        text.contains("at least --min-free 1.00MiB: nothing to clean"),
        "{text}"
    );
    // Nothing was pruned or recorded as a cleanup; the job's build was recorded.
    assert_eq!(d.build_cache_ids(), cache);
    assert!(d.has_image(&dangling));
    assert!(audit(&state).is_empty(), "{:?}", audit(&state));
    let b = builds(&state);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].project, "acme/app");
    // `bilge clean --min-free --json` says the same as JSON.
    let v = bilge_clean_json(&d, &state, &["--min-free", "1MiB"]);
    assert_eq!(v["cleaned"], false, "{v:#}");
    assert_eq!(v["min_free_bytes"], 1 << 20, "{v:#}");
    assert_eq!(v["data_root"]["path"], d.data_root.display().to_string());
    assert!(audit(&state).is_empty());
}

#[test]
fn a_data_root_still_short_after_the_cleanup_fails_the_job_unless_the_hook_is_set_to_warn() {
    let d = Daemon::start("ci-still-short");
    let (_, dangling) = leftovers(&d, 2);
    let state = temp_dir("ci-short-state").join("bilge.db");
    let state_s = state.to_str().unwrap();
    // 100 % can never be available: the cleanup runs every standard level and is not enough.
    let short = [
        ("BILGE_STATE_PATH", state_s),
        ("BILGE_CI_MIN_FREE", "100%"),
        ("BILGE_CLEAN_UNTIL", "0s"),
    ];
    let job = gitlab_job(&d, &short, &[]);
    let text = job.text();
    assert_eq!(job.hook.status.code(), Some(3), "{text}");
    assert!(!job.ran, "the job's script ran: {text}");
    assert!(
        text.contains("after the cleanup, still less than --min-free 100%"),
        "{text}"
    );
    assert!(text.contains("the job is not started"), "{text}");
    // The cleanup did run, and is in the audit.
    assert!(!d.has_image(&dangling), "{text}");
    let rows = audit(&state);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].trigger.as_str(), rows[0].result.as_str()),
        ("cli", "success")
    );
    assert_eq!(rows[0].level.to_string(), "dangling_images");

    // BILGE_CI_ON_LOW_SPACE=warn: the same finding, and the job starts.
    let mut warn = short.to_vec();
    warn.push(("BILGE_CI_ON_LOW_SPACE", "warn"));
    let job = gitlab_job(&d, &warn, &[]);
    let text = job.text();
    assert_eq!(job.hook.status.code(), Some(0), "{text}");
    assert!(job.ran, "{text}");
    assert!(text.contains("starting the job anyway"), "{text}");

    // GitHub's hook: exit 3 fails the job before its step, with an error annotation.
    let job = github_job(&d, &short, "true");
    let text = job.text();
    assert_eq!(job.hook.status.code(), Some(3), "{text}");
    assert!(!job.ran);
    assert!(
        String::from_utf8_lossy(&job.hook.stdout).contains("::error title=bilge pre-flight::"),
        "{text}"
    );
    assert_eq!(audit(&state).len(), 3);
}

#[test]
fn the_hook_prunes_nothing_while_another_cleanup_holds_the_host_lock() {
    let d = Daemon::start("ci-lock");
    let (cache, dangling) = leftovers(&d, 2);
    let state = temp_dir("ci-lock-state").join("bilge.db");
    // Another bilge's cleanup (a `bilge serve` on the same state file) holds the host lock.
    let lock_path = PathBuf::from(format!("{}.lock", state.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    let job = gitlab_job(
        &d,
        &[
            ("BILGE_STATE_PATH", state.to_str().unwrap()),
            ("BILGE_CI_MIN_FREE", "100%"),
            ("BILGE_CLEAN_UNTIL", "0s"),
            ("BILGE_LOCK_TIMEOUT", "1s"),
        ],
        &[],
    );
    let text = job.text();
    // Still short (nothing could be cleaned): the job is not started.
    assert_eq!(job.hook.status.code(), Some(3), "{text}");
    assert!(!job.ran);
    assert!(
        text.contains("another cleanup held the host lock"),
        "{text}"
    );
    assert!(
        text.contains("now, still less than --min-free 100%"),
        "{text}"
    );
    assert!(
        d.has_image(&dangling) && d.build_cache_ids() == cache,
        "{text}"
    );
    assert!(
        audit(&state).iter().all(|r| r.result.as_str() != "success"),
        "{:?}",
        audit(&state)
    );
    drop(held);
}

#[test]
fn a_hook_whose_bilge_cannot_check_lets_the_job_start_unless_set_to_fail() {
    let d = Daemon::start("ci-error");
    let state = temp_dir("ci-error-state").join("bilge.db");
    let state_s = state.to_str().unwrap();
    let no_docker = [
        ("BILGE_STATE_PATH", state_s),
        ("BILGE_DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    ];
    // bilge cannot ask the daemon where its data root is: exit 1, a warning, the job starts.
    let job = github_job(&d, &no_docker, "true");
    let text = job.text();
    assert_eq!(job.hook.status.code(), Some(0), "{text}");
    assert!(job.ran);
    assert!(text.contains("cannot check --min-free"), "{text}");
    assert!(
        text.contains("::warning title=bilge pre-flight::bilge clean --min-free 10GiB exited 1"),
        "{text}"
    );
    // BILGE_CI_ON_ERROR=fail: the job fails with bilge's code.
    let mut fail = no_docker.to_vec();
    fail.push(("BILGE_CI_ON_ERROR", "fail"));
    let job = gitlab_job(&d, &fail, &[]);
    assert_eq!(job.hook.status.code(), Some(1), "{}", job.text());
    assert!(!job.ran);
    // No bilge at all is an error of the same kind.
    let job = gitlab_job(
        &d,
        &[
            ("BILGE_BIN", "/nonexistent/bilge"),
            ("BILGE_STATE_PATH", state_s),
        ],
        &[],
    );
    let text = job.text();
    assert_eq!(job.hook.status.code(), Some(0), "{text}");
    assert!(job.ran);
    assert!(
        text.contains("bilge was not found at /nonexistent/bilge"),
        "{text}"
    );
    // A setting the script does not know fails the job, whatever BILGE_CI_ON_ERROR says.
    let job = gitlab_job(&d, &[("BILGE_CI_ON_LOW_SPACE", "ignore")], &[]);
    assert_eq!(job.hook.status.code(), Some(2), "{}", job.text());
    assert!(!job.ran);
}
