//! The needle table: every phrase the classifier looks for, the cause each one shows and the
//! rule that must hold beyond the phrase itself ([`Rule`], applied in `rules`). Adding a cue
//! means adding a row here; `index` builds its lookup tables from this table at compile time.

/// A cause that an output line can show; the index into [`Classifier::hits`](super::stream::Classifier::hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// ENOSPC and its relatives.
    NoSpace,
    /// EIO spelled out ("I/O error", "input/output error", apk's "IO ERROR").
    IoError,
    /// EROFS.
    ReadOnlyFs,
    /// Out of memory, or killed the way the OOM killer kills.
    Oom,
    /// Registry authentication or authorization.
    RegistryAuth,
    /// DNS, connect, reset and transfer timeouts.
    Network,
    /// Dockerfile syntax or build-context mistakes.
    Dockerfile,
    /// A deadline was exceeded.
    Timeout,
    /// The build was canceled.
    Canceled,
    /// A generic "this step exited non-zero" line.
    CommandFailed,
    /// A bare `EIO` code, which getaddrinfo also reports for DNS failures.
    WeakIoError,
    /// A compiler's, linker's or shell's own error line (`fatal error:`, `ld returned`,
    /// `sh: 1: x: not found`): `command_failed`, but only when such lines end the output.
    ToolError,
}

/// How many [`Cause`]s there are.
pub(super) const CAUSES: usize = 12;

/// What has to hold, beyond the needle itself, for a match to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    /// The needle anywhere in the line.
    Plain,
    /// The needle as a whole word (no letter, digit or `_` on either side).
    Word,
    /// An errno-style code: a whole word, and upper-case exactly (`EROFS`, not the `erofs` tools).
    Errno,
    /// An I/O-error phrase: network instead when the line is a DNS or repository-fetch failure.
    Io,
    /// The exact upper-case word `EIO`.
    Eio,
    /// The exact word `Killed`, alone or after a PID or a BuildKit step prefix, or after a
    /// tool's error label on the same line (`g++: internal compiler error: Killed`,
    /// `make: *** [all] Killed`): a tool reporting that its child died of SIGKILL.
    Killed,
    /// A generic failure line; an exit code of 137 after the needle makes it `oom`.
    ExitCode,
    /// A deadline: `network` when the line names a request, else `timeout`.
    Deadline,
    /// Only with "not found" elsewhere on the line.
    NotFound,
    /// Only with "parse" elsewhere on the line.
    Parse,
    /// A registry's `denied: ...` answer: not after the word "permission" (a file's
    /// `Permission denied: '/app'`), nor inside a word.
    Denied,
    /// An HTTP refusal that counts only when the line names a registry request (a status from
    /// a registry, a token fetch, a manifest or blob, a push or pull).
    Registry,
    /// A timeout: `network` when the line names a connection or a transfer, else `timeout`.
    TimedOut,
    /// A shell's "not found" for a command: only after `sh: ` on the line
    /// (`/bin/sh: 1: foo: not found`, `bash: line 1: cargo: command not found`).
    ShNotFound,
}

/// One thing to look for: lower-case ASCII bytes, the cause it shows, and its extra rule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Needle {
    /// The bytes, lower-case; matched ASCII-case-insensitively.
    pub(super) pat: &'static [u8],
    /// The cause a match shows.
    pub(super) cause: Cause,
    /// The extra condition.
    pub(super) rule: Rule,
}

/// Shorthand for a [`Needle`] in the table below.
const fn n(pat: &'static str, cause: Cause, rule: Rule) -> Needle {
    Needle {
        pat: pat.as_bytes(),
        cause,
        rule,
    }
}

/// Everything the classifier looks for. Every pattern is lower-case. Those of `index::LONG`
/// bytes or more are found through the window index; each shorter one must have a rule that
/// fixes one of its bytes in a match to one of the scan's anchor bytes (`index::exact_byte`).
pub(super) const NEEDLES: &[Needle] = &[
    // no_space
    n("no space left", Cause::NoSpace, Rule::Plain),
    n("enospc", Cause::NoSpace, Rule::Errno),
    n("errno 28]", Cause::NoSpace, Rule::Plain),
    n("enough free space", Cause::NoSpace, Rule::Plain),
    n("not enough space", Cause::NoSpace, Rule::Plain),
    n("insufficient space", Cause::NoSpace, Rule::Plain),
    n("disk quota exceeded", Cause::NoSpace, Rule::Plain),
    n("edquot", Cause::NoSpace, Rule::Errno),
    n("errno 122]", Cause::NoSpace, Rule::Plain),
    n("database or disk is full", Cause::NoSpace, Rule::Plain),
    n("free data blocks", Cause::NoSpace, Rule::Plain),
    // io_error
    n("input/output error", Cause::IoError, Rule::Io),
    n("i/o error", Cause::IoError, Rule::Io),
    n("io error", Cause::IoError, Rule::Io),
    n("eio", Cause::WeakIoError, Rule::Eio),
    // read_only_fs
    n("read-only file system", Cause::ReadOnlyFs, Rule::Plain),
    n("read-only filesystem", Cause::ReadOnlyFs, Rule::Plain),
    n("read only file system", Cause::ReadOnlyFs, Rule::Plain),
    n("erofs", Cause::ReadOnlyFs, Rule::Errno),
    // oom
    n("out of memory", Cause::Oom, Rule::Plain),
    n("cannot allocate memory", Cause::Oom, Rule::Plain),
    n("memory exhausted", Cause::Oom, Rule::Plain),
    n("enomem", Cause::Oom, Rule::Errno),
    n("killed signal terminated program", Cause::Oom, Rule::Plain),
    n("oomkilled", Cause::Oom, Rule::Plain),
    n("oom-kill", Cause::Oom, Rule::Plain),
    n("oom killer", Cause::Oom, Rule::Plain),
    n("std::bad_alloc", Cause::Oom, Rule::Plain),
    n("memoryerror", Cause::Oom, Rule::Word),
    n("signal: 9, sigkill", Cause::Oom, Rule::Plain),
    n("signal: killed", Cause::Oom, Rule::Plain),
    n("terminated with signal 9", Cause::Oom, Rule::Plain),
    n("killed", Cause::Oom, Rule::Killed),
    // registry_auth
    n("unauthorized: ", Cause::RegistryAuth, Rule::Plain),
    n("401 unauthorized", Cause::RegistryAuth, Rule::Plain),
    n("authentication required", Cause::RegistryAuth, Rule::Plain),
    n("pull access denied", Cause::RegistryAuth, Rule::Plain),
    n(
        "requested access to the resource is denied",
        Cause::RegistryAuth,
        Rule::Plain,
    ),
    n(
        "no basic auth credentials",
        Cause::RegistryAuth,
        Rule::Plain,
    ),
    n("insufficient_scope", Cause::RegistryAuth, Rule::Plain),
    n("authorization failed", Cause::RegistryAuth, Rule::Plain),
    n(
        "incorrect username or password",
        Cause::RegistryAuth,
        Rule::Plain,
    ),
    n(
        "authorization token has expired",
        Cause::RegistryAuth,
        Rule::Plain,
    ),
    n("toomanyrequests", Cause::RegistryAuth, Rule::Plain),
    n("denied: ", Cause::RegistryAuth, Rule::Denied),
    n("permission_denied", Cause::RegistryAuth, Rule::Plain),
    n("403 forbidden", Cause::RegistryAuth, Rule::Registry),
    // network
    n("temporary failure", Cause::Network, Rule::Plain),
    n("could not resolve host", Cause::Network, Rule::Plain),
    n("could not resolve '", Cause::Network, Rule::Plain),
    n("unable to resolve host", Cause::Network, Rule::Plain),
    n("name or service not known", Cause::Network, Rule::Plain),
    n("no such host", Cause::Network, Rule::Plain),
    n("nodename nor servname", Cause::Network, Rule::Plain),
    n("server misbehaving", Cause::Network, Rule::Plain),
    n("getaddrinfo", Cause::Network, Rule::Plain),
    n("dns lookup error", Cause::Network, Rule::Plain),
    n("connection refused", Cause::Network, Rule::Plain),
    n("connection reset", Cause::Network, Rule::Plain),
    n("connection timed out", Cause::Network, Rule::Plain),
    n("i/o timeout", Cause::Network, Rule::Plain),
    n("tls handshake timeout", Cause::Network, Rule::Plain),
    n("network is unreachable", Cause::Network, Rule::Plain),
    n("no route to host", Cause::Network, Rule::Plain),
    n("could not connect to", Cause::Network, Rule::Plain),
    n("failed to connect to", Cause::Network, Rule::Plain),
    n("unable to connect to", Cause::Network, Rule::Plain),
    n("connection attempt failed", Cause::Network, Rule::Plain),
    n("connection failed [ip: ", Cause::Network, Rule::Plain),
    n("bad gateway", Cause::Network, Rule::Plain),
    n("service unavailable", Cause::Network, Rule::Plain),
    n("gateway timeout", Cause::Network, Rule::Plain),
    n(
        "failed to establish a new connection",
        Cause::Network,
        Rule::Plain,
    ),
    n("max retries exceeded", Cause::Network, Rule::Plain),
    n("read timed out", Cause::Network, Rule::Plain),
    n("readtimeouterror", Cause::Network, Rule::Plain),
    n("connecttimeouterror", Cause::Network, Rule::Plain),
    n("remote end closed connection", Cause::Network, Rule::Plain),
    n(
        "request canceled while waiting for connection",
        Cause::Network,
        Rule::Plain,
    ),
    n("client.timeout exceeded", Cause::Network, Rule::Plain),
    n("proxyconnect tcp", Cause::Network, Rule::Plain),
    n("socket timeout", Cause::Network, Rule::Plain),
    n("network timeout", Cause::Network, Rule::Plain),
    n(
        "temporary error (try again later)",
        Cause::Network,
        Rule::Plain,
    ),
    n("etimedout", Cause::Network, Rule::Errno),
    n("econnreset", Cause::Network, Rule::Errno),
    n("econnrefused", Cause::Network, Rule::Errno),
    n("eai_again", Cause::Network, Rule::Errno),
    n("enotfound", Cause::Network, Rule::Errno),
    n("err_socket_timeout", Cause::Network, Rule::Errno),
    n("curl: (6)", Cause::Network, Rule::Plain),
    n("curl: (7)", Cause::Network, Rule::Plain),
    n("curl: (28)", Cause::Network, Rule::Plain),
    n("curl: (35)", Cause::Network, Rule::Plain),
    n("curl: (56)", Cause::Network, Rule::Plain),
    // dockerfile
    n("dockerfile parse error", Cause::Dockerfile, Rule::Plain),
    n("unknown instruction:", Cause::Dockerfile, Rule::Plain),
    n(
        "failed to solve with frontend dockerfile.v0",
        Cause::Dockerfile,
        Rule::Parse,
    ),
    n("failed to read dockerfile", Cause::Dockerfile, Rule::Plain),
    n(
        "no build stage in current context",
        Cause::Dockerfile,
        Rule::Plain,
    ),
    n(
        "unable to evaluate symlinks in dockerfile path",
        Cause::Dockerfile,
        Rule::Plain,
    ),
    n(
        "cannot locate specified dockerfile",
        Cause::Dockerfile,
        Rule::Plain,
    ),
    n("failed to parse stage name", Cause::Dockerfile, Rule::Plain),
    n(
        "unexpected end of statement",
        Cause::Dockerfile,
        Rule::Plain,
    ),
    n("invalid reference format", Cause::Dockerfile, Rule::Plain),
    n("copy failed: ", Cause::Dockerfile, Rule::Plain),
    n("add failed: ", Cause::Dockerfile, Rule::Plain),
    n("not found: not found", Cause::Dockerfile, Rule::Plain),
    n(
        "failed to compute cache key",
        Cause::Dockerfile,
        Rule::NotFound,
    ),
    n(
        "failed to calculate checksum of ref",
        Cause::Dockerfile,
        Rule::NotFound,
    ),
    // timeout
    n("context deadline exceeded", Cause::Timeout, Rule::Deadline),
    n("deadlineexceeded", Cause::Timeout, Rule::Deadline),
    n("timed out", Cause::Timeout, Rule::TimedOut),
    n("timeout exceeded", Cause::Timeout, Rule::Plain),
    n("timeout expired", Cause::Timeout, Rule::Plain),
    n("no output has been received", Cause::Timeout, Rule::Plain),
    n("too long with no output", Cause::Timeout, Rule::Plain),
    n(
        "exceeded the maximum execution time",
        Cause::Timeout,
        Rule::Plain,
    ),
    n("execution took longer than", Cause::Timeout, Rule::Plain),
    n("timeout was exceeded", Cause::Timeout, Rule::Plain),
    // canceled
    n("context canceled", Cause::Canceled, Rule::Plain),
    n("context cancelled", Cause::Canceled, Rule::Plain),
    n("canceled: ", Cause::Canceled, Rule::Plain),
    n("cancelled: ", Cause::Canceled, Rule::Plain),
    n("build canceled", Cause::Canceled, Rule::Plain),
    n("build cancelled", Cause::Canceled, Rule::Plain),
    n("operation was canceled", Cause::Canceled, Rule::Plain),
    n("operation was cancelled", Cause::Canceled, Rule::Plain),
    // command_failed
    n(
        "did not complete successfully",
        Cause::CommandFailed,
        Rule::ExitCode,
    ),
    n(
        "returned a non-zero code",
        Cause::CommandFailed,
        Rule::ExitCode,
    ),
    n(
        "executor failed running",
        Cause::CommandFailed,
        Rule::ExitCode,
    ),
    n("exit code", Cause::CommandFailed, Rule::ExitCode),
    n("exit status", Cause::CommandFailed, Rule::ExitCode),
    n(": *** ", Cause::CommandFailed, Rule::ExitCode),
    n("code elifecycle", Cause::CommandFailed, Rule::Plain),
    // tool errors: command_failed only when they end the output (see `decide`). Each is
    // phrased so that its indexed windows avoid the words of a successful build's log
    // ("Compiling", "recommends"): gcc's "compilation terminated." always follows a
    // `fatal error:` line, and cargo's "could not compile" says "previous error" too.
    n("fatal error: ", Cause::ToolError, Rule::Plain),
    n("undefined reference to", Cause::ToolError, Rule::Plain),
    n("ld returned", Cause::ToolError, Rule::Plain),
    n("error generated", Cause::ToolError, Rule::Plain),
    n("errors generated", Cause::ToolError, Rule::Plain),
    n("error[e0", Cause::ToolError, Rule::Plain),
    n("previous error", Cause::ToolError, Rule::Plain),
    n(" not found", Cause::ToolError, Rule::ShNotFound),
];
