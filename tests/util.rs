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
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join(format!("bilge-{port}.log"));
        let mut cmd = Command::new(BILGE);
        cmd.arg("serve")
            .args(["--web.listen-address", &addr])
            .args(["--docker.host", docker_host])
            .arg("--state.path")
            .arg(dir.join("bilge.db"))
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
