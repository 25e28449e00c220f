//! The bilge binary under test: `bilge serve` on a free loopback port, `bilge clean`.

use super::*;

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
        Self::start_on_port(dir, state, docker_host, free_port(), args)
    }

    /// As [`Server::start_with_state`], listening on `port` (a member that comes back on the
    /// address the fleet knows it by).
    pub fn start_on_port(
        dir: PathBuf,
        state: &Path,
        docker_host: &str,
        port: u16,
        args: &[&str],
    ) -> Server {
        Self::start_on_addr(dir, state, docker_host, &format!("127.0.0.1:{port}"), args)
    }

    /// Starts `bilge serve` like [`Server::start_with_state`] without waiting for it (a server
    /// that speaks TLS cannot be asked over plain HTTP).
    pub fn spawn(dir: PathBuf, state: &Path, docker_host: &str, args: &[&str]) -> Server {
        Self::spawn_on_port(dir, state, docker_host, free_port(), args)
    }

    /// As [`Server::spawn`], listening on `port`.
    pub fn spawn_on_port(
        dir: PathBuf,
        state: &Path,
        docker_host: &str,
        port: u16,
        args: &[&str],
    ) -> Server {
        Self::spawn_on_addr(dir, state, docker_host, &format!("127.0.0.1:{port}"), args)
    }

    /// As [`Server::start_with_state`], listening on `addr` (`127.0.0.N:PORT`: a fleet member's
    /// own loopback address).
    pub fn start_on_addr(
        dir: PathBuf,
        state: &Path,
        docker_host: &str,
        addr: &str,
        args: &[&str],
    ) -> Server {
        let s = Self::spawn_on_addr(dir, state, docker_host, addr, args);
        wait_for("bilge to listen", Duration::from_secs(30), || {
            http("GET", &s.url("/-/healthy"), &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        s
    }

    /// As [`Server::spawn`], listening on `addr`.
    pub fn spawn_on_addr(
        dir: PathBuf,
        state: &Path,
        docker_host: &str,
        addr: &str,
        args: &[&str],
    ) -> Server {
        let addr = addr.to_string();
        let port = addr.rsplit(':').next().unwrap_or_default().to_string();
        let log = dir.join(format!("bilge-{port}.log"));
        let mut cmd = Command::new(BILGE);
        cmd.arg("serve")
            .args(["--web.listen-address", &addr])
            .args(["--docker.host", docker_host])
            .arg("--state.path")
            .arg(state)
            .args(args)
            .env_remove("DOCKER_HOST")
            // The tests collect every second or faster, on daemons small enough that the
            // default budget (0.5 %) would hold a costly answer for up to ~10 s and have them
            // wait on it: off here, unless a test passes `--docker.df-budget` (the flag beats
            // the variable), as the budget's own test does.
            .env("BILGE_DOCKER_DF_BUDGET", "100%")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        record_pid(&dir, &format!("bilge-{port}"), child.id());
        Server {
            addr,
            child,
            log,
            dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

impl Server {
    /// SIGKILLs it, as a host that goes down does, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
