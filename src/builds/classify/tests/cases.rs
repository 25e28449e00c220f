//! Behaviour, case by case: ranks, tie-breaks, exit statuses, line handling and evidence.

use super::super::evidence::EVIDENCE_HEAD;
use super::super::{
    Classification, Classifier, DiskState, Exit, MAX_EVIDENCE, MAX_LINE, Reason, classify,
};

/// Shorthand: classify `output` after exit code 1 on a healthy disk.
fn fail(output: &str) -> Classification {
    classify(output.as_bytes(), Exit::Code(1), DiskState::default())
}

/// Exit zero is none whatever the output says.
#[test]
fn exit_zero_is_none_whatever_the_output_says() {
    let c = classify(
        b"write /var/lib/docker/x: no space left on device\nKilled\n",
        Exit::Code(0),
        DiskState {
            space_exhausted: true,
            inodes_exhausted: true,
        },
    );
    assert_eq!(
        c,
        Classification {
            reason: Reason::None,
            evidence: None
        }
    );
}

/// Io timeout is network never io error.
#[test]
fn io_timeout_is_network_never_io_error() {
    let c = fail(
        "dial tcp: lookup registry-1.docker.io on 127.0.0.53:53: read udp 127.0.0.1:1->127.0.0.53:53: i/o timeout\n",
    );
    assert_eq!(c.reason, Reason::Network);
}

/// Getaddrinfo eio is network even with a bare eio code later.
#[test]
fn getaddrinfo_eio_is_network_even_with_a_bare_eio_code_later() {
    let c = fail("npm ERR! Error: getaddrinfo EIO\nnpm ERR! code EIO\nnpm ERR! errno EIO\n");
    assert_eq!(c.reason, Reason::Network);
    assert_eq!(
        c.evidence.as_deref(),
        Some("npm ERR! Error: getaddrinfo EIO")
    );
}

/// A bare eio code is io error when nothing else explains it.
#[test]
fn a_bare_eio_code_is_io_error_when_nothing_else_explains_it() {
    let c = fail("npm ERR! code EIO\nnpm ERR! code ELIFECYCLE\n");
    assert_eq!(c.reason, Reason::IoError);
    assert_eq!(c.evidence.as_deref(), Some("npm ERR! code EIO"));
    // but not inside a longer word
    assert_eq!(fail("THEIO error-free\n").reason, Reason::Unknown);
}

/// Apk ignoring a repository with io error is network.
#[test]
fn apk_ignoring_a_repository_with_io_error_is_network() {
    let c = fail("WARNING: Ignoring https://dl-cdn.alpinelinux.org/alpine/v3.17/main: IO ERROR\n");
    assert_eq!(c.reason, Reason::Network);
}

/// Disk cause beats the generic line that follows and exit 137.
#[test]
fn disk_cause_beats_the_generic_line_that_follows_and_exit_137() {
    let out = "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n\
               The command '/bin/sh -c pip install -r requirements.txt' returned a non-zero code: 137\n";
    for exit in [Exit::Code(1), Exit::Code(137), Exit::Signal(9)] {
        let c = classify(out.as_bytes(), exit, DiskState::default());
        assert_eq!(c.reason, Reason::NoSpace, "{exit:?}");
        assert_eq!(
            c.evidence.as_deref(),
            Some(
                "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"
            )
        );
    }
}

/// Inodes flag turns no space into no inodes.
#[test]
fn inodes_flag_turns_no_space_into_no_inodes() {
    let out = b"failed to register layer: write /usr/lib/x.so: no space left on device\n";
    let inodes = DiskState {
        space_exhausted: false,
        inodes_exhausted: true,
    };
    assert_eq!(
        classify(out, Exit::Code(1), inodes).reason,
        Reason::NoInodes
    );
    let both = DiskState {
        space_exhausted: true,
        inodes_exhausted: true,
    };
    assert_eq!(classify(out, Exit::Code(1), both).reason, Reason::NoInodes);
    assert_eq!(
        classify(out, Exit::Code(1), DiskState::default()).reason,
        Reason::NoSpace
    );
    // the flag does not touch other disk causes
    assert_eq!(
        classify(b"sh: echo: I/O error\n", Exit::Code(1), inodes).reason,
        Reason::IoError
    );
}

/// Exit 137 or sigkill alone is oom without evidence.
#[test]
fn exit_137_or_sigkill_alone_is_oom_without_evidence() {
    for exit in [Exit::Code(137), Exit::Signal(9)] {
        let c = classify(b"Step 4/9 : RUN make -j32\n", exit, DiskState::default());
        assert_eq!(
            c,
            Classification {
                reason: Reason::Oom,
                evidence: None
            }
        );
    }
}

/// Exit 137 with a killed line uses that line as evidence.
#[test]
fn exit_137_with_a_killed_line_uses_that_line_as_evidence() {
    let c = classify(b"#19 242.6 Killed\n", Exit::Code(137), DiskState::default());
    assert_eq!(c.reason, Reason::Oom);
    assert_eq!(c.evidence.as_deref(), Some("#19 242.6 Killed"));
}

/// Killed in prose is not oom.
#[test]
fn killed_in_prose_is_not_oom() {
    assert_eq!(
        fail("the worker was Killed by the test harness\n").reason,
        Reason::Unknown
    );
    assert_eq!(fail("processes killed: 0\n").reason, Reason::Unknown);
    assert_eq!(
        fail("/bin/sh: line 1:  4321 Killed  make -j8\n").reason,
        Reason::Oom
    );
}

/// A generic failure with code 137 is oom.
#[test]
fn a_generic_failure_with_code_137_is_oom() {
    let c = fail(
        "ERROR: process \"/bin/sh -c yarn build\" did not complete successfully: exit code: 137\n",
    );
    assert_eq!(c.reason, Reason::Oom);
    let c = fail("make: *** [Makefile:12: all] Error 137\n");
    assert_eq!(c.reason, Reason::Oom);
}

/// Command failed keeps the first generic line as evidence.
#[test]
fn command_failed_keeps_the_first_generic_line_as_evidence() {
    let c = fail(
        "#8 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n\
         ERROR: failed to solve: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n",
    );
    assert_eq!(c.reason, Reason::CommandFailed);
    assert_eq!(
        c.evidence.as_deref(),
        Some("#8 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2")
    );
}

/// Unknown has no evidence.
#[test]
fn unknown_has_no_evidence() {
    let c = fail("Step 1/3 : FROM alpine\nsomething odd happened\n");
    assert_eq!(
        c,
        Classification {
            reason: Reason::Unknown,
            evidence: None
        }
    );
    assert_eq!(
        classify(b"", Exit::Signal(11), DiskState::default()).reason,
        Reason::Unknown
    );
}

/// Timeouts and cancels from the exit status.
#[test]
fn timeouts_and_cancels_from_the_exit_status() {
    let quiet = b"building...\n";
    let healthy = DiskState::default();
    assert_eq!(
        classify(quiet, Exit::Code(124), healthy).reason,
        Reason::Timeout
    );
    for exit in [
        Exit::Code(130),
        Exit::Code(143),
        Exit::Signal(2),
        Exit::Signal(15),
    ] {
        assert_eq!(
            classify(quiet, exit, healthy).reason,
            Reason::Canceled,
            "{exit:?}"
        );
    }
    // GNU timeout's exit code outranks the "canceled" BuildKit prints when it is killed
    let c = classify(
        b"ERROR: failed to solve: Canceled: context canceled\n",
        Exit::Code(124),
        healthy,
    );
    assert_eq!(
        c,
        Classification {
            reason: Reason::Timeout,
            evidence: None
        }
    );
    // and a root cause in the output outranks both
    let c = classify(
        b"curl: (6) Could not resolve host: example.org\n",
        Exit::Code(130),
        healthy,
    );
    assert_eq!(c.reason, Reason::Network);
}

/// Deadline exceeded is network only when the line names a request.
#[test]
fn deadline_exceeded_is_network_only_when_the_line_names_a_request() {
    assert_eq!(
        fail("ERROR: failed to solve: DeadlineExceeded: context deadline exceeded\n").reason,
        Reason::Timeout
    );
    assert_eq!(
        fail("failed to do request: Head \"https://registry-1.docker.io/v2/x/manifests/1\": context deadline exceeded\n").reason,
        Reason::Network
    );
    assert_eq!(
        fail("curl: (7) Failed to connect to example.org port 443: Connection timed out\n").reason,
        Reason::Network
    );
}

/// Dockerfile mistakes in both builders.
#[test]
fn dockerfile_mistakes_in_both_builders() {
    let c = fail(
        "ERROR: failed to solve: dockerfile parse error on line 2: unknown instruction: RUNN\n",
    );
    assert_eq!(c.reason, Reason::Dockerfile);
    let c = fail(
        "Error response from daemon: dockerfile parse error line 2: unknown instruction: RUNN\n",
    );
    assert_eq!(c.reason, Reason::Dockerfile);
    // a cache-key failure is a Dockerfile mistake only when something was not found
    assert_eq!(
        fail("ERROR: failed to solve: failed to compute cache key: unlazy requires an applier\n")
            .reason,
        Reason::Unknown
    );
    // and "dockerfile.v0" alone is just the frontend's name
    assert_eq!(
        fail("failed to solve with frontend dockerfile.v0: failed to build LLB: x\n").reason,
        Reason::Unknown
    );
}

/// The common message shapes of each tool get their reason.
#[test]
fn the_common_message_shapes_of_each_tool_get_their_reason() {
    let shapes = [
        ("npm ERR! code ENOSPC", Reason::NoSpace),
        (
            "OSError: [Errno 28] No space left on device",
            Reason::NoSpace,
        ),
        (
            "E: You don't have enough free space in /var/cache/apt/archives/.",
            Reason::NoSpace,
        ),
        (
            "ERROR: Failed to create usr/lib/libLLVM.so.17: No space left on device",
            Reason::NoSpace,
        ),
        (
            "/usr/bin/ld: final link failed: No space left on device",
            Reason::NoSpace,
        ),
        (
            "write /var/lib/docker/overlay2/abc/diff/x: no space left on device",
            Reason::NoSpace,
        ),
        (
            "mkdir /home/u/.local/share/docker/overlay2/x: disk quota exceeded",
            Reason::NoSpace,
        ),
        ("Error: EDQUOT: disk quota exceeded, write", Reason::NoSpace),
        (
            "ERROR: not enough space to extract the layer",
            Reason::NoSpace,
        ),
        ("insufficient space on device /dev/sda1", Reason::NoSpace),
        (
            "sqlite3.OperationalError: database or disk is full",
            Reason::NoSpace,
        ),
        (
            "devmapper: Thin Pool has 162394 free data blocks which is less than minimum required 163840 free data blocks",
            Reason::NoSpace,
        ),
        ("ERROR: busybox-1.36.1-r5: IO ERROR", Reason::IoError),
        (
            "cp: error writing '/app/x': Input/output error",
            Reason::IoError,
        ),
        ("Error: EIO: i/o error, read", Reason::IoError),
        (
            "touch: cannot touch '/etc/x': Read-only file system",
            Reason::ReadOnlyFs,
        ),
        ("npm ERR! code EROFS", Reason::ReadOnlyFs),
        ("Killed", Reason::Oom),
        ("bash: fork: Cannot allocate memory", Reason::Oom),
        ("fatal error: runtime: out of memory", Reason::Oom),
        ("Error: ENOMEM: not enough memory, read", Reason::Oom),
        (
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
            Reason::Oom,
        ),
        (
            "virtual memory exhausted: Cannot allocate memory",
            Reason::Oom,
        ),
        (
            "/usr/local/go/pkg/tool/linux_amd64/compile: signal: killed",
            Reason::Oom,
        ),
        ("MemoryError", Reason::Oom),
        (
            "unauthorized: authentication required",
            Reason::RegistryAuth,
        ),
        (
            "denied: requested access to the resource is denied",
            Reason::RegistryAuth,
        ),
        (
            "pull access denied for foo, repository does not exist",
            Reason::RegistryAuth,
        ),
        (
            "Get https://r.example/v2/: no basic auth credentials",
            Reason::RegistryAuth,
        ),
        (
            "failed to fetch oauth token: unexpected status: 401 Unauthorized",
            Reason::RegistryAuth,
        ),
        (
            "server message: insufficient_scope: authorization failed",
            Reason::RegistryAuth,
        ),
        (
            "toomanyrequests: You have reached your pull rate limit.",
            Reason::RegistryAuth,
        ),
        (
            "socket.gaierror: [Errno -3] Temporary failure in name resolution",
            Reason::Network,
        ),
        (
            "dial tcp: lookup registry-1.docker.io: no such host",
            Reason::Network,
        ),
        (
            "curl: (6) Could not resolve host: github.com",
            Reason::Network,
        ),
        (
            "dial tcp 1.2.3.4:443: connect: connection refused",
            Reason::Network,
        ),
        (
            "read tcp 1.2.3.4:1->5.6.7.8:443: read: connection reset by peer",
            Reason::Network,
        ),
        ("net/http: TLS handshake timeout", Reason::Network),
        (
            "dial tcp [2a03::1]:443: connect: network is unreachable",
            Reason::Network,
        ),
        (
            "E: Could not connect to archive.ubuntu.com:80",
            Reason::Network,
        ),
        ("npm ERR! code ETIMEDOUT", Reason::Network),
        ("npm ERR! code ECONNRESET", Reason::Network),
        ("npm ERR! code EAI_AGAIN", Reason::Network),
        (
            "Max retries exceeded with url: /simple/numpy/",
            Reason::Network,
        ),
        (
            "W: Failed to fetch http://deb.debian.org/x  Temporary failure resolving 'deb.debian.org'",
            Reason::Network,
        ),
        (
            "failed to solve: dockerfile parse error on line 2: unknown instruction: RUNN",
            Reason::Dockerfile,
        ),
        (
            "failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error line 2: unknown instruction: RUNN",
            Reason::Dockerfile,
        ),
        (
            "failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory",
            Reason::Dockerfile,
        ),
        (
            "COPY failed: file not found in build context or excluded by .dockerignore: stat app: file does not exist",
            Reason::Dockerfile,
        ),
        (
            "failed to solve: failed to compute cache key: \"/app\": not found",
            Reason::Dockerfile,
        ),
        (
            "Error response from daemon: No build stage in current context",
            Reason::Dockerfile,
        ),
        (
            "ERROR: failed to solve: DeadlineExceeded: context deadline exceeded",
            Reason::Timeout,
        ),
        (
            "Timeout exceeded while waiting for the build",
            Reason::Timeout,
        ),
        ("build timed out after 60 minutes", Reason::Timeout),
        (
            "ERROR: failed to solve: Canceled: context canceled",
            Reason::Canceled,
        ),
        (
            "The command '/bin/sh -c make' returned a non-zero code: 2",
            Reason::CommandFailed,
        ),
        (
            "ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2",
            Reason::CommandFailed,
        ),
        ("make: *** [Makefile:3: all] Error 1", Reason::CommandFailed),
        ("npm ERR! code ELIFECYCLE", Reason::CommandFailed),
        (
            "error Command failed with exit code 1.",
            Reason::CommandFailed,
        ),
    ];
    for (line, want) in shapes {
        assert_eq!(fail(line).reason, want, "{line}");
    }
}

/// Lookalikes in ordinary output are not causes.
#[test]
fn lookalikes_in_ordinary_output_are_not_causes() {
    let ordinary = [
        "Setting up erofs-utils (1.5-1) ...",
        "Step 3/9 : RUN echo killed processes",
        "#5 CANCELED",
        "npm WARN deprecated inflight@1.0.6: This module is not supported, and leaks memory.",
        "PermissionError: [Errno 13] Permission denied: '/app'",
        "Process exited with exit code: 0",
        "test tests::out_of_memory_is_reported ... ok",
        "handle_io_error(radio error)",
        "failed to solve with frontend dockerfile.v0: failed to build LLB: x",
        "Downloading https://example.org/deadline-exceeded.tar.gz",
    ];
    for line in ordinary {
        assert_eq!(fail(line).reason, Reason::Unknown, "{line}");
    }
}

/// Disk full at failure time explains an otherwise generic failure.
#[test]
fn disk_full_at_failure_time_explains_an_otherwise_generic_failure() {
    let out = b"The command '/bin/sh -c make' returned a non-zero code: 2\n";
    let full = DiskState {
        space_exhausted: true,
        inodes_exhausted: false,
    };
    assert_eq!(
        classify(out, Exit::Code(1), full),
        Classification {
            reason: Reason::NoSpace,
            evidence: None
        }
    );
    let no_inodes = DiskState {
        space_exhausted: false,
        inodes_exhausted: true,
    };
    assert_eq!(
        classify(b"", Exit::Code(1), no_inodes).reason,
        Reason::NoInodes
    );
    // but not a failure the output explains
    let auth =
        b"pull access denied for x, repository does not exist or may require 'docker login'\n";
    assert_eq!(
        classify(auth, Exit::Code(1), full).reason,
        Reason::RegistryAuth
    );
}

/// Ansi escapes are stripped before matching and from evidence.
#[test]
fn ansi_escapes_are_stripped_before_matching_and_from_evidence() {
    let out = b"\x1b[0m\x1b[91mERROR: write /var/lib/docker/x: no sp\x1b[1mace left on device\x1b[0m\r\n\x1b]0;title\x07";
    let c = classify(out, Exit::Code(1), DiskState::default());
    assert_eq!(c.reason, Reason::NoSpace);
    assert_eq!(
        c.evidence.as_deref(),
        Some("ERROR: write /var/lib/docker/x: no space left on device")
    );
    // split inside the escape sequences
    let mut cl = Classifier::new();
    for chunk in out.chunks(2) {
        cl.feed(chunk);
    }
    assert_eq!(cl.finish(Exit::Code(1), DiskState::default()), c);
}

/// Carriage returns and crlf end lines.
#[test]
fn carriage_returns_and_crlf_end_lines() {
    let out = b"Downloading 10%\rDownloading 20%\rERROR: pull access denied for x\r\nnext\r\n";
    let c = classify(out, Exit::Code(1), DiskState::default());
    assert_eq!(c.reason, Reason::RegistryAuth);
    assert_eq!(
        c.evidence.as_deref(),
        Some("ERROR: pull access denied for x")
    );
    // a line split across chunks still matches once
    let mut cl = Classifier::new();
    cl.feed(b"E: You don't have enough fr");
    cl.feed(b"ee space in /var/cache/apt/archives/.");
    assert_eq!(
        cl.finish(Exit::Code(100), DiskState::default()).reason,
        Reason::NoSpace
    );
}

/// A 100 mb line keeps the buffer capped and is still consumed.
#[test]
fn a_100_mb_line_keeps_the_buffer_capped_and_is_still_consumed() {
    let mut c = Classifier::new();
    let chunk = vec![b'a'; 64 * 1024];
    c.feed(b"no space left on device, and then a very long tail: ");
    for _ in 0..(100 * 1024 * 1024 / chunk.len()) {
        c.feed(&chunk);
        assert!(c.line.len() <= MAX_LINE);
        assert!(c.line.capacity() <= 2 * MAX_LINE);
    }
    c.feed(b"\nnpm ERR! code ELIFECYCLE\n");
    assert!(c.line.capacity() <= 2 * MAX_LINE);
    let got = c.finish(Exit::Code(1), DiskState::default());
    assert_eq!(got.reason, Reason::NoSpace);
    let evidence = got.evidence.unwrap();
    assert!(
        evidence.starts_with("no space left on device"),
        "{evidence}"
    );
    assert!(
        evidence.chars().count() <= MAX_EVIDENCE + 2,
        "{}",
        evidence.len()
    );
}

/// Only the first 8 kib of a line are matched.
#[test]
fn only_the_first_8_kib_of_a_line_are_matched() {
    let mut line = vec![b'x'; MAX_LINE + 100];
    line.extend_from_slice(b" no space left on device\n");
    assert_eq!(
        classify(&line, Exit::Code(1), DiskState::default()).reason,
        Reason::Unknown
    );
    // the same when the line arrives in pieces
    let mut c = Classifier::new();
    for chunk in line.chunks(1000) {
        c.feed(chunk);
    }
    assert_eq!(
        c.finish(Exit::Code(1), DiskState::default()).reason,
        Reason::Unknown
    );
}

/// Long evidence is cut around the match.
#[test]
fn long_evidence_is_cut_around_the_match() {
    let mut line = "x".repeat(1000);
    line.push_str(" write /var/lib/docker/tmp/f: no space left on device ");
    line.push_str(&"y".repeat(1000));
    let c = fail(&line);
    let ev = c.evidence.unwrap();
    assert!(ev.starts_with(&"x".repeat(EVIDENCE_HEAD)), "{ev}");
    assert!(ev.contains("…"), "{ev}");
    assert!(ev.contains("no space left on device"), "{ev}");
    assert!(ev.ends_with('…'), "{ev}");
    assert!(ev.chars().count() <= MAX_EVIDENCE + 2);
    // a match near the start keeps the start
    let early = format!("write /x: no space left on device {}", "z".repeat(1000));
    let ev = fail(&early).evidence.unwrap();
    assert!(
        ev.starts_with("write /x: no space") && ev.ends_with('…'),
        "{ev}"
    );
    assert!(ev.chars().count() <= MAX_EVIDENCE + 1);
}

/// Evidence never splits a utf8 character.
#[test]
fn evidence_never_splits_a_utf8_character() {
    let line = format!(
        "{} no space left on device {}",
        "é".repeat(400),
        "ü".repeat(400)
    );
    let ev = fail(&line).evidence.unwrap();
    assert!(!ev.contains('\u{fffd}'), "{ev}");
    assert!(ev.contains("no space left on device"));
}

/// Reason round trips through as str parse display and serde.
#[test]
fn reason_round_trips_through_as_str_parse_display_and_serde() {
    for reason in Reason::ALL {
        let name = reason.as_str();
        assert_eq!(Reason::parse(name), Some(reason));
        assert_eq!(name.parse::<Reason>(), Ok(reason));
        assert_eq!(reason.to_string(), name);
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
    }
    assert_eq!(Reason::parse("No_Space"), None);
    let err = "nospace".parse::<Reason>().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"nospace\"") && msg.contains("no_space, no_inodes"),
        "{msg}"
    );
}

/// Disk and cleanup predicates.
#[test]
fn disk_and_cleanup_predicates() {
    let disk: Vec<_> = Reason::ALL.into_iter().filter(|r| r.is_disk()).collect();
    assert_eq!(
        disk,
        [
            Reason::NoSpace,
            Reason::NoInodes,
            Reason::IoError,
            Reason::ReadOnlyFs
        ]
    );
    let retry: Vec<_> = Reason::ALL
        .into_iter()
        .filter(|r| r.is_retryable_by_cleanup())
        .collect();
    assert_eq!(retry, [Reason::NoSpace, Reason::NoInodes, Reason::IoError]);
}

/// A compiler or linker that reports its child killed by SIGKILL is oom (issue 18), but a
/// `Killed` in prose still is not.
#[test]
fn a_compiler_killed_by_sigkill_is_oom() {
    let killed = [
        "g++: internal compiler error: Killed (program cc1plus)",
        "collect2: fatal error: ld terminated with signal 9 [Killed]",
        "make[2]: *** [CMakeFiles/x.dir/all] Killed",
        "clang: error: unable to execute command: Killed",
    ];
    for line in killed {
        let c = fail(&format!("{line}\nmake: *** [all] Error 2\n"));
        assert_eq!(c.reason, Reason::Oom, "{line}");
        assert_eq!(c.evidence.as_deref(), Some(line));
    }
    assert_eq!(
        fail("the worker was Killed by the test harness\n").reason,
        Reason::Unknown
    );
}

/// Registry refusals in the newer forms are registry_auth; a file's permission denial is not.
#[test]
fn registry_refusals_in_newer_forms_are_registry_auth() {
    let refused = [
        "ERROR: denied: permission_denied: write_package",
        "denied: installation not allowed to Write organization package",
        "Error response from daemon: Get \"https://ghcr.io/v2/\": denied: denied",
        "ERROR: failed to solve: unexpected status: 403 Forbidden",
        "failed to fetch oauth token: unexpected status: 403 Forbidden",
    ];
    for line in refused {
        assert_eq!(fail(line).reason, Reason::RegistryAuth, "{line}");
    }
    let not_registry = [
        "PermissionError: [Errno 13] Permission denied: '/app'",
        "sh: 1: ./run.sh: Permission denied: x",
        "HTTP request sent, awaiting response... 403 Forbidden",
    ];
    for line in not_registry {
        assert_eq!(fail(line).reason, Reason::Unknown, "{line}");
    }
}

/// A bad image reference, as a FROM built from build arguments gives it, is a Dockerfile mistake.
#[test]
fn an_invalid_image_reference_is_dockerfile() {
    let c = fail("Step 2/8 : FROM $CI_REGISTRY_IMAGE:base\ninvalid reference format\n");
    assert_eq!(c.reason, Reason::Dockerfile);
    assert_eq!(c.evidence.as_deref(), Some("invalid reference format"));
}

/// Time limits as CI systems print them are timeout.
#[test]
fn ci_time_limits_and_watchdogs_are_timeout() {
    let limits = [
        "No output has been received in the last 10m0s, this potentially indicates a stalled build or something wrong with the build itself.",
        "Too long with no output (exceeded 10m0s)",
        "The job running on runner GitHub Actions 2 has exceeded the maximum execution time of 360 minutes.",
        "ERROR: Job failed: execution took longer than 1h0m0s seconds",
        "WARNING: step_script could not run to completion because the timeout was exceeded.",
        "#25 ERROR: no active session for os44n22472jqaz3bk2t3jktq2: context deadline exceeded",
        "The build has timed out.",
    ];
    for line in limits {
        assert_eq!(fail(line).reason, Reason::Timeout, "{line}");
    }
}

/// A timeout while connecting or transferring is network, not timeout.
#[test]
fn a_timeout_while_connecting_is_network() {
    let fetches = [
        "github.com[0: 140.82.121.4]: errno=Operation timed out",
        "fatal: unable to connect to github.com:",
        "Failed to connect to github.com port 443 after 75011 ms: Operation timed out",
        "connection broken by 'ConnectTimeoutError(<x>, 'Connection to pypi.org timed out. (connect timeout=15)')'",
        "E: Failed to fetch http://archive.ubuntu.com/x.deb  502  Bad Gateway [IP: 91.189.91.38 80]",
        "E: Failed to fetch http://jp.archive.ubuntu.com/x.deb  Connection failed [IP: 160.26.2.187 80]",
    ];
    for line in fetches {
        assert_eq!(fail(line).reason, Reason::Network, "{line}");
    }
}

/// The CI system's own cancel notice is canceled.
#[test]
fn the_ci_systems_cancel_notice_is_canceled() {
    assert_eq!(
        fail("##[error]The operation was canceled.\n").reason,
        Reason::Canceled
    );
}

/// A compiler's, linker's or shell's error that ends a failed build's output is command_failed,
/// quoting the first line of that last run of errors.
#[test]
fn a_tool_error_that_ends_the_output_is_command_failed() {
    let c = fail(
        "src/a.c:3:10: fatal error: foo.h: No such file or directory\n\
         compilation terminated.\n\
         /tmp/build.sh: line 35: exit status of last command: 1\n",
    );
    assert_eq!(c.reason, Reason::CommandFailed);
    assert_eq!(
        c.evidence.as_deref(),
        Some("src/a.c:3:10: fatal error: foo.h: No such file or directory")
    );
    let c = fail(
        "x.c:(.text+0x11): undefined reference to `dlopen'\ncollect2: error: ld returned 1 exit status\n",
    );
    assert_eq!(
        c.evidence.as_deref(),
        Some("x.c:(.text+0x11): undefined reference to `dlopen'")
    );
    assert_eq!(
        fail("/bin/sh: 1: foo: not found\n").reason,
        Reason::CommandFailed
    );
    assert_eq!(
        fail("bash: line 1: cargo: command not found\n").reason,
        Reason::CommandFailed
    );
    // podman's and Drone's "exit status N" is a generic failure line, wherever it is
    let c = fail("Error: building at STEP \"RUN make\": while running runtime: exit status 2\n");
    assert_eq!(c.reason, Reason::CommandFailed);
    assert_eq!(
        fail("collect2: error: ld returned 1 exit status\n")
            .evidence
            .as_deref(),
        Some("collect2: error: ld returned 1 exit status")
    );
    // but not on a successful build, and not a "not found" that sh did not print
    assert_eq!(
        classify(
            b"x.c:1:1: fatal error: y.h: No such file or directory\n",
            Exit::Code(0),
            DiskState::default()
        )
        .reason,
        Reason::None
    );
    assert_eq!(fail("key \"/app\": not found\n").reason, Reason::Unknown);
}

/// A tool's error followed by a long stretch of other output no longer explains the failure;
/// a later run of errors does, and is quoted from its own first line.
#[test]
fn a_tool_error_followed_by_more_output_does_not_explain_the_failure() {
    let mut out = String::from("a.c:1:1: fatal error: a.h: No such file or directory\n");
    for i in 0..30 {
        out.push_str(&format!("retrying step {i}\n"));
    }
    assert_eq!(fail(&out).reason, Reason::Unknown);
    out.push_str("b.c:2:2: fatal error: b.h: No such file or directory\n");
    let c = fail(&out);
    assert_eq!(c.reason, Reason::CommandFailed);
    assert_eq!(
        c.evidence.as_deref(),
        Some("b.c:2:2: fatal error: b.h: No such file or directory")
    );
    // blank lines do not count against the tail, however the output is chunked
    let mut tail = String::from("a.c:1:1: fatal error: a.h: No such file or directory\n");
    tail.push_str(&"\n\r\n".repeat(100));
    assert_eq!(fail(&tail).reason, Reason::CommandFailed);
}
