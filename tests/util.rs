//! Helpers for the integration tests: private Docker daemons, busybox images built `FROM
//! scratch`, a `bilge serve` on a free loopback port, and a tiny HTTP client.
//!
//! Every test that needs Docker starts its own daemon on temporary paths, so tests can run in
//! parallel and see exactly the objects they made. Nothing here skips: a missing tool fails the
//! test with a message that says how to get it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Debian's Docker CLI (20.10, with BuildKit); the `docker` earlier on PATH has no buildx.
pub const DOCKER: &str = "/usr/bin/docker";
/// The bilge binary under test.
pub const BILGE: &str = env!("CARGO_BIN_EXE_bilge");

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Fails the test with instructions when a required tool is missing.
pub fn require(path: &str, how: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: {how} (scripts/test.sh installs everything the tests need)"
    );
}

/// Fails unless running as root (dockerd and loop mounts need it).
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test starts a private dockerd and must run as root; run scripts/test.sh as root"
    );
}

/// A unique temporary directory under /tmp (short: it holds unix sockets).
pub fn temp_dir(name: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = PathBuf::from(format!("/tmp/bt-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `f` until it returns Some, or gives None after `timeout`.
pub fn wait_for_opt<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Sends SIGTERM to `child`, waits up to `grace` for it to exit, then kills it. Returns the
/// exit status when it exited by itself.
pub fn stop_child(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A private dockerd on temporary paths, torn down (containers, shims, mounts, files) on drop.
#[derive(Debug)]
pub struct Daemon {
    /// Its directory (socket, data root, exec root, log).
    pub dir: PathBuf,
    /// Its data root.
    pub data_root: PathBuf,
    /// `unix://…/docker.sock`.
    pub host: String,
    child: Option<Child>,
    /// A loop filesystem mounted under the data root, unmounted on drop.
    loop_mount: Option<PathBuf>,
}

impl Daemon {
    /// Starts a daemon whose data root is a directory under /tmp.
    pub fn start(name: &str) -> Daemon {
        let dir = temp_dir(name);
        let data_root = dir.join("data");
        Self::start_with(dir, data_root, None)
    }

    /// Starts a daemon whose data root is a fresh ext4 loop filesystem of `size_mib` MiB.
    pub fn start_on_loop_fs(name: &str, size_mib: u64) -> Daemon {
        let dir = temp_dir(name);
        let mnt = dir.join("data");
        make_loop_fs(&dir.join("disk.img"), &mnt, size_mib);
        Self::start_with(dir, mnt.clone(), Some(mnt))
    }

    fn start_with(dir: PathBuf, data_root: PathBuf, loop_mount: Option<PathBuf>) -> Daemon {
        require_root();
        require("/usr/sbin/dockerd", "apt-get install docker.io");
        require(DOCKER, "apt-get install docker.io");
        std::fs::create_dir_all(&data_root).unwrap();
        let mut d = Daemon {
            host: format!("unix://{}", dir.join("docker.sock").display()),
            data_root,
            child: None,
            loop_mount,
            dir,
        };
        d.launch();
        d
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("dockerd.log")).unwrap();
        let child = Command::new("/usr/sbin/dockerd")
            .arg("--host")
            .arg(&self.host)
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .args(["--iptables=false", "--bridge=none", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd did not start; apt-get install docker.io");
        self.child = Some(child);
        let host = self.host.clone();
        let dir = self.dir.clone();
        wait_for("dockerd to answer", Duration::from_secs(60), || {
            let ok = Command::new(DOCKER)
                .args(["version", "--format", "{{.Server.Version}}"])
                .env("DOCKER_HOST", &host)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
                assert!(
                    !log.contains("level=fatal") && !log.contains("failed to start daemon"),
                    "dockerd failed to start:\n{log}"
                );
            }
            ok.then_some(())
        });
    }

    /// Stops the daemon (keeping its files), as if it had crashed or been stopped by hand.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(20));
        }
    }

    /// Starts the daemon again on the same paths.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// A `docker` command aimed at this daemon.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", &self.host).env("DOCKER_BUILDKIT", "1");
        c
    }

    /// Runs `docker ARGS`, panicking with its output when it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs `docker ARGS` and returns the raw output, success or not.
    pub fn docker_output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Builds an image `FROM scratch` with busybox plus the given Dockerfile lines (BuildKit,
    /// no network). Returns the image id.
    pub fn build(&self, tag: Option<&str>, lines: &[&str]) -> String {
        let ctx = build_context(&self.dir, lines);
        let mut args = vec!["build", "--network", "none", "-q"];
        if let Some(t) = tag {
            args.extend(["-t", t]);
        }
        let ctx_s = ctx.display().to_string();
        args.push(&ctx_s);
        let id = self.docker(&args);
        std::fs::remove_dir_all(&ctx).unwrap();
        id
    }

    /// Writes `docker system df` JSON for later comparison.
    pub fn system_df(&self) -> Vec<serde_json::Value> {
        self.docker(&["system", "df", "--format", "{{json .}}"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `docker system df -v` as one JSON object.
    pub fn system_df_verbose(&self) -> serde_json::Value {
        serde_json::from_str(&self.docker(&["system", "df", "-v", "--format", "{{json .}}"]))
            .unwrap()
    }
}

/// Makes a build context with busybox and a Dockerfile: `FROM scratch`, busybox installed,
/// then `lines`.
pub fn build_context(parent: &Path, lines: &[&str]) -> PathBuf {
    require("/bin/busybox", "apt-get install busybox-static");
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let ctx = parent.join(format!("ctx{n}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    let mut df = String::from(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    );
    for l in lines {
        df.push_str(l);
        df.push('\n');
    }
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    ctx
}

/// Creates an ext4 image file of `size_mib` and loop-mounts it at `mnt`.
pub fn make_loop_fs(img: &Path, mnt: &Path, size_mib: u64) {
    require("/sbin/mkfs.ext4", "apt-get install e2fsprogs");
    std::fs::create_dir_all(mnt).unwrap();
    let f = std::fs::File::create(img).unwrap();
    f.set_len(size_mib * 1024 * 1024).unwrap();
    run_ok(Command::new("/sbin/mkfs.ext4").args(["-q", "-F"]).arg(img));
    run_ok(Command::new("mount").args(["-o", "loop"]).arg(img).arg(mnt));
}

/// A small ext4 loop filesystem under /tmp, unmounted and removed on drop.
#[derive(Debug)]
pub struct LoopFs {
    /// Where it is mounted.
    pub mnt: PathBuf,
    dir: PathBuf,
}

impl LoopFs {
    /// Makes and mounts a filesystem of `size_mib` MiB.
    pub fn new(name: &str, size_mib: u64) -> LoopFs {
        require_root();
        let dir = temp_dir(name);
        let mnt = dir.join("mnt");
        make_loop_fs(&dir.join("disk.img"), &mnt, size_mib);
        LoopFs { mnt, dir }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command and panics with its output when it fails.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self
                .cmd()
                .args(["ps", "-aq"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.cmd().args(["rm", "-f"]).args(&ids).output();
            }
        }
        self.stop();
        // Shims outlive dockerd when containers were left running; they name the exec root.
        let exec = self.dir.join("exec").display().to_string();
        let _ = Command::new("pkill").args(["-9", "-f", &exec]).status();
        // Unmount everything under the directory, deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount")
                .args(["-l", p])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(m) = &self.loop_mount {
            let _ = Command::new("umount")
                .args(["-l"])
                .arg(m)
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `bilge serve`, stopped (SIGTERM) on drop.
#[derive(Debug)]
pub struct Server {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Child,
    /// Its stderr log file.
    pub log: PathBuf,
    /// Its state directory.
    pub dir: PathBuf,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `bilge serve` with `args` (plus a listen address and state path) and waits until
    /// `/-/healthy` answers.
    pub fn start(docker_host: &str, args: &[&str]) -> Server {
        let dir = temp_dir("serve");
        Self::start_in(dir, docker_host, args)
    }

    /// As [`Server::start`], with a chosen state directory.
    pub fn start_in(dir: PathBuf, docker_host: &str, args: &[&str]) -> Server {
        let state = dir.join("bilge.db");
        Self::start_with_state(dir, &state, docker_host, args)
    }

    /// As [`Server::start`], with the log in `dir` and the state at `state`.
    pub fn start_with_state(
        dir: PathBuf,
        state: &Path,
        docker_host: &str,
        args: &[&str],
    ) -> Server {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join(format!("bilge-{port}.log"));
        let mut cmd = Command::new(BILGE);
        cmd.arg("serve")
            .args(["--web.listen-address", &addr])
            .args(["--docker.host", docker_host])
            .arg("--state.path")
            .arg(state)
            .args(args)
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let s = Server {
            addr,
            child,
            log,
            dir,
        };
        wait_for("bilge to listen", Duration::from_secs(30), || {
            http("GET", &s.url("/-/healthy"), &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        s
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GETs a path, panicking on a transport error.
    pub fn get(&self, path: &str) -> Response {
        http("GET", &self.url(path), &[], b"").unwrap()
    }

    /// The metrics text.
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200);
        r.text()
    }

    /// The value of one sample (`name{labels}` exactly as exposed, or a bare name).
    pub fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.metrics(), series)
    }

    /// Waits until `/-/ready` answers 200.
    pub fn wait_ready(&self) {
        wait_for("bilge to be ready", Duration::from_secs(60), || {
            (self.get("/-/ready").status == 200).then_some(())
        });
    }

    /// Everything bilge logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        stop_child(&mut self.child, Duration::from_secs(15))
            .expect("bilge did not stop within 15s of SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
    }
}

/// Finds one sample's value in Prometheus text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for loopback tests.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
}

/// Parses a size as the Docker CLI prints it (`7.225MB`, `0B`, `1.982kB`; decimal units).
pub fn cli_size(s: &str) -> f64 {
    let s = s.split_whitespace().next().unwrap_or("0B");
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("bad CLI size {s:?}"));
    n * match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => panic!("unknown CLI unit {other:?} in {s:?}"),
    }
}

/// True when `ours` matches the CLI's rounded `cli` text: within 1 % or the rounding of its
/// four significant digits.
pub fn size_agrees(ours: u64, cli: &str) -> bool {
    let theirs = cli_size(cli);
    let diff = (ours as f64 - theirs).abs();
    // Four significant digits: the last digit's half-unit.
    let digits = cli.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let decimals = digits.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
    let unit = theirs / digits.parse::<f64>().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let rounding = 0.5 * 10f64.powi(-decimals) * if theirs == 0.0 { 1.0 } else { unit };
    diff <= (theirs * 0.01).max(rounding) + 1.0
}

/// Writes a `bilge --config` file with a `[cleanup]` table of `lines` into `dir`.
pub fn policy_file(dir: &Path, lines: &[&str]) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let p = dir.join(format!("policy{n}.toml"));
    std::fs::write(&p, format!("[cleanup]\n{}\n", lines.join("\n"))).unwrap();
    p
}

/// Writes a token file into `dir`.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let p = dir.join(format!("token{n}"));
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}

/// Runs `bilge clean ARGS` against `d`, with the state in `state` (a file path); stdin is not a
/// terminal.
pub fn bilge_clean(d: &Daemon, state: &Path, args: &[&str]) -> Output {
    Command::new(BILGE)
        .arg("clean")
        .args(["--docker.host", &d.host])
        .arg("--state.path")
        .arg(state)
        .args(args)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `bilge clean --json` that must succeed; returns its report.
pub fn bilge_clean_json(d: &Daemon, state: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = bilge_clean(d, state, &all);
    assert!(
        out.status.success(),
        "bilge clean {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bilge clean --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

impl Daemon {
    /// Image ids, tags and dangling ones alike.
    pub fn image_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .docker(&["images", "-aq", "--no-trunc"])
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// True when an image (id or tag) exists.
    pub fn has_image(&self, name: &str) -> bool {
        self.docker_output(&["image", "inspect", name])
            .status
            .success()
    }

    /// True when a container exists.
    pub fn has_container(&self, name: &str) -> bool {
        self.docker_output(&["container", "inspect", name])
            .status
            .success()
    }

    /// True when a volume exists.
    pub fn has_volume(&self, name: &str) -> bool {
        self.docker_output(&["volume", "inspect", name])
            .status
            .success()
    }

    /// Names of every container.
    pub fn container_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .docker(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    /// Names of every volume.
    pub fn volume_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .docker(&["volume", "ls", "-q"])
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    /// Ids of every build cache record.
    pub fn build_cache_ids(&self) -> Vec<String> {
        let v = self.system_df_verbose();
        let mut ids: Vec<String> = v["BuildCache"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["ID"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Builds `tag` twice with different content: the first build becomes a dangling image of
    /// about `mib` MiB, more than a second old on return (Docker's `until` filter counts whole
    /// seconds, so even `until=0s` keeps an image from the current second). Returns its id.
    pub fn make_dangling(&self, tag: &str, mib: u32) -> String {
        let first = self.build(
            Some(tag),
            &[&format!(
                "RUN dd if=/dev/zero of=/dangling bs=1M count={mib} 2>/dev/null"
            )],
        );
        std::thread::sleep(Duration::from_millis(1100));
        self.build(Some(tag), &["RUN echo replaced > /replaced"]);
        first
    }

    /// Runs a container that writes `mib` MiB into its writable layer and exits; it is more than
    /// a second old on return.
    pub fn make_stopped(&self, name: &str, image: &str, mib: u32, labels: &[&str]) {
        let mut args = vec!["run", "--name", name, "--network", "none"];
        for l in labels {
            args.extend(["--label", l]);
        }
        let script = format!("dd if=/dev/zero of=/written bs=1M count={mib} 2>/dev/null");
        args.extend([image, "sh", "-c", &script]);
        self.docker(&args);
        // More than a second old on return, as for make_dangling.
        std::thread::sleep(Duration::from_millis(1100));
    }

    /// Available bytes on the filesystem of the data root (statvfs `f_bavail`).
    pub fn data_root_avail(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.data_root).unwrap();
        s.blocks_available() * s.fragment_size()
    }
}

/// A webhook payload (version 4) with one firing alert.
pub fn alert_payload(fingerprint: &str, instance: &str, action: &str, starts_at: &str) -> String {
    serde_json::json!({
        "version": "4",
        "status": "firing",
        "receiver": "bilge",
        "groupKey": "{}:{alertname=\"BilgeDockerDataRootAlmostFull\"}",
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": "BilgeDockerDataRootAlmostFull"},
        "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{
            "status": "firing",
            "labels": {
                "alertname": "BilgeDockerDataRootAlmostFull",
                "instance": instance,
                "bilge_action": action,
                "severity": "warning"
            },
            "annotations": {"summary": "almost full"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph",
            "fingerprint": fingerprint
        }]
    })
    .to_string()
}

/// POSTs a payload to a bilge server's webhook with a bearer token.
pub fn post_alerts(s: &Server, token: Option<&str>, body: &str) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    http("POST", &s.url("/api/v1/alerts"), &headers, body.as_bytes()).unwrap()
}

/// The audit rows of a server, newest first.
pub fn cleanups(s: &Server) -> Vec<serde_json::Value> {
    let r = s.get("/api/v1/cleanups?limit=1000");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["cleanups"].as_array().cloned().unwrap_or_default()
}

/// A Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port,
/// stopped on drop.
#[derive(Debug)]
pub struct Alertmanager {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its directory (config, storage, log).
    pub dir: PathBuf,
    child: Child,
}

impl Alertmanager {
    /// Starts Alertmanager with the project's `alerts/alertmanager.yml`, its `bilge` receiver
    /// pointed at `webhook_url` with the token in `token_file`, and every `group_wait` at 1s.
    pub fn start_for_bilge(webhook_url: &str, token_file: &Path) -> Alertmanager {
        let config: Vec<String> = bundled_alertmanager_config(webhook_url, token_file)
            .lines()
            .map(|l| match l.trim_start().strip_prefix("group_wait:") {
                Some(_) => format!("{}group_wait: 1s", &l[..l.len() - l.trim_start().len()]),
                None => l.to_string(),
            })
            .collect();
        Self::start(&config.join("\n"))
    }

    /// Starts Alertmanager with `config` (YAML).
    pub fn start(config: &str) -> Alertmanager {
        require(
            "/usr/bin/prometheus-alertmanager",
            "apt-get install prometheus-alertmanager",
        );
        let dir = temp_dir("am");
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let child = Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "prometheus-alertmanager did not start; apt-get install prometheus-alertmanager",
            );
        let mut am = Alertmanager { addr, dir, child };
        let start = Instant::now();
        loop {
            let ready = http("GET", &am.url("/-/ready"), &[], b"")
                .map(|r| r.status == 200)
                .unwrap_or(false);
            if ready {
                break;
            }
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("Alertmanager exited ({status}): {}", am.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Alertmanager not ready after 30s: {}",
                am.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Posts alerts (a JSON array of `{labels, annotations, startsAt}`) to its v2 API.
    pub fn post(&self, alerts: &serde_json::Value) {
        let r = http(
            "POST",
            &self.url("/api/v2/alerts"),
            &[("Content-Type", "application/json")],
            alerts.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            r.status,
            200,
            "Alertmanager refused the alerts: {}",
            r.text()
        );
    }

    /// The alerts it holds (v2 API).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let r = http("GET", &self.url("/api/v2/alerts"), &[], b"").unwrap();
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// Its log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The bundled Alertmanager config with only the bilge webhook's URL and token file changed.
pub fn bundled_alertmanager_config(webhook_url: &str, token_file: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/alertmanager.yml"),
    )
    .unwrap();
    let mut url_done = false;
    let mut cred_done = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            if !url_done && l.trim_start().starts_with("- url: http://bilge:") {
                url_done = true;
                format!("{indent}- url: {webhook_url}")
            } else if !cred_done && l.trim_start().starts_with("credentials_file:") {
                cred_done = true;
                format!("{indent}credentials_file: {}", token_file.display())
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(
        url_done && cred_done,
        "alerts/alertmanager.yml changed shape: the bilge receiver's url/credentials_file lines were not found"
    );
    out.join("\n") + "\n"
}
