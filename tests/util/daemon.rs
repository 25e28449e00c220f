//! Private Docker daemons on temporary paths, the objects tests make on them (busybox images
//! built `FROM scratch`, containers, volumes), loop filesystems, and the Docker CLI's sizes.

use super::*;

/// The Docker Engine every test daemon runs: Debian bookworm's (`/usr/sbin/dockerd`, 20.10) by
/// default; with `BILGE_TEST_ENGINE_DIR`, the newer engine that `scripts/engines.sh` unpacked
/// there (its dockerd, and its containerd first on dockerd's PATH); with
/// `BILGE_TEST_ENGINE_STORE=containerd`, that engine with the containerd image store.
/// `scripts/test.sh` runs the Docker-facing tests once per set-up.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The dockerd binary.
    pub dockerd: PathBuf,
    /// The unpacked packages' root, for a newer engine.
    pub dir: Option<PathBuf>,
    /// Whether images live in the containerd image store.
    pub containerd_store: bool,
}

/// The engine of this run, read once from the environment.
pub fn engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = std::env::var_os("BILGE_TEST_ENGINE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let store = std::env::var("BILGE_TEST_ENGINE_STORE").unwrap_or_default();
        let containerd_store = match store.as_str() {
            "" | "classic" => false,
            "containerd" => true,
            other => panic!("BILGE_TEST_ENGINE_STORE={other:?}: use classic or containerd"),
        };
        let dockerd = match &dir {
            Some(d) => {
                let bin = d.join("usr/sbin/dockerd");
                assert!(
                    bin.exists(),
                    "BILGE_TEST_ENGINE_DIR={} has no usr/sbin/dockerd: run scripts/engines.sh and pass the folder it prints",
                    d.display()
                );
                bin
            }
            None => PathBuf::from("/usr/sbin/dockerd"),
        };
        assert!(
            !containerd_store || dir.is_some(),
            "BILGE_TEST_ENGINE_STORE=containerd needs a newer engine in BILGE_TEST_ENGINE_DIR (scripts/engines.sh)"
        );
        Engine {
            dockerd,
            dir,
            containerd_store,
        }
    })
}

/// Debian's newest packaged engine, for the tests that need it whatever engine the run
/// tests (a containerd of its own): `BILGE_TEST_ENGINE_DIR` when the run tests it, else
/// `BILGE_TEST_NEWEST_ENGINE_DIR`, which scripts/test.sh sets from scripts/engines.sh.
pub fn newest_engine(containerd_store: bool) -> Engine {
    let dir = [std::env::var_os("BILGE_TEST_ENGINE_DIR"), std::env::var_os("BILGE_TEST_NEWEST_ENGINE_DIR")]
        .into_iter()
        .flatten()
        .find(|d| !d.is_empty())
        .map(PathBuf::from)
        .expect("this test needs Debian's newest packaged Docker Engine: set BILGE_TEST_NEWEST_ENGINE_DIR=$(scripts/engines.sh) (scripts/test.sh does)");
    let dockerd = dir.join("usr/sbin/dockerd");
    assert!(
        dockerd.exists(),
        "{} has no usr/sbin/dockerd: run scripts/engines.sh",
        dir.display()
    );
    Engine {
        dockerd,
        dir: Some(dir),
        containerd_store,
    }
}

impl Engine {
    /// The arguments and environment this engine's dockerd needs beyond the tests' own flags:
    /// a config file enabling the containerd image store, no IPv6 firewall rules (newer
    /// engines add them by default, and a test daemon must leave the host's firewall alone),
    /// and the unpacked containerd first on its PATH.
    fn apply(&self, cmd: &mut Command, dir: &Path) {
        let Some(root) = &self.dir else {
            return;
        };
        let config = dir.join("daemon.json");
        let features = if self.containerd_store {
            r#"{"features": {"containerd-snapshotter": true}}"#
        } else {
            r#"{"features": {"containerd-snapshotter": false}}"#
        };
        std::fs::write(&config, features).unwrap();
        cmd.arg("--config-file")
            .arg(&config)
            .arg("--ip6tables=false");
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env(
            "PATH",
            format!(
                "{}:{}:{path}",
                root.join("usr/bin").display(),
                root.join("usr/sbin").display()
            ),
        );
    }
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
    /// More dockerd arguments (another `--host`, TLS).
    extra_args: Vec<String>,
    /// The engine it runs.
    engine: Engine,
}

impl Daemon {
    /// Starts a daemon whose data root is a directory under [`test_root`].
    pub fn start(name: &str) -> Daemon {
        let dir = temp_dir(name);
        let data_root = dir.join("data");
        Self::start_with(dir, data_root, None)
    }

    /// Starts a daemon like [`Daemon::start`], with more dockerd arguments (it still listens
    /// on its socket, which the tests' docker CLI uses).
    pub fn start_with_args(name: &str, args: &[String]) -> Daemon {
        let dir = temp_dir(name);
        let data_root = dir.join("data");
        let mut d = Self::prepare(dir, data_root, None);
        d.extra_args = args.to_vec();
        d.launch();
        d
    }

    /// Starts a daemon whose data root is a fresh ext4 loop filesystem of `size_mib` MiB.
    pub fn start_on_loop_fs(name: &str, size_mib: u64) -> Daemon {
        let dir = temp_dir(name);
        let mnt = dir.join("data");
        make_loop_fs(&dir.join("disk.img"), &mnt, size_mib);
        Self::start_with(dir, mnt.clone(), Some(mnt))
    }

    /// Starts Debian's newest engine with the containerd image store on `containerd`, a
    /// containerd of its own (`dockerd --containerd`), as a host whose system containerd keeps
    /// the images under its own root.
    pub fn start_on_containerd(name: &str, containerd: &Containerd) -> Daemon {
        let dir = temp_dir(name);
        let data_root = dir.join("data");
        let mut d = Self::prepare(dir, data_root, None);
        d.engine = newest_engine(true);
        d.extra_args = vec![
            "--containerd".into(),
            containerd.socket.display().to_string(),
        ];
        d.launch();
        d
    }

    fn start_with(dir: PathBuf, data_root: PathBuf, loop_mount: Option<PathBuf>) -> Daemon {
        let mut d = Self::prepare(dir, data_root, loop_mount);
        d.launch();
        d
    }

    fn prepare(dir: PathBuf, data_root: PathBuf, loop_mount: Option<PathBuf>) -> Daemon {
        require_root();
        require("/usr/sbin/dockerd", "apt-get install docker.io");
        let _ = engine();
        require(DOCKER, "apt-get install docker.io");
        std::fs::create_dir_all(&data_root).unwrap();
        Daemon {
            host: format!("unix://{}", dir.join("docker.sock").display()),
            data_root,
            child: None,
            loop_mount,
            extra_args: Vec::new(),
            engine: engine().clone(),
            dir,
        }
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("dockerd.log")).unwrap();
        let mut cmd = Command::new(&self.engine.dockerd);
        self.engine.apply(&mut cmd, &self.dir);
        let child = cmd
            .arg("--host")
            .arg(&self.host)
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .args(["--iptables=false", "--bridge=none", "--ip-masq=false"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd did not start; apt-get install docker.io");
        self.child = Some(child);
        let host = self.host.clone();
        let dir = self.dir.clone();
        let up = wait_for_opt(Duration::from_secs(60), || {
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
        if up.is_none() {
            let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
            panic!("dockerd did not answer within 60s; its log:\n{log}");
        }
    }

    /// Stops the daemon (keeping its files), as if it had been stopped by hand.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(20));
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// SIGKILLs the daemon, as a crash would, and reaps it; what it started (containerd, shims)
    /// is stopped by the ids they recorded, so that the daemon can start again on its paths.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let containerd_pid = self.dir.join("exec/containerd/containerd.pid");
        let containerd = std::fs::read_to_string(&containerd_pid)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        self.kill_leftovers();
        // The killed containerd may stay a zombie for a while (nobody here is its parent), and
        // a new dockerd would take it for a running one and wait on its socket: wait for it to
        // end, and let the next dockerd start its own.
        if let Some(pid) = containerd {
            let _ = wait_for_opt(Duration::from_secs(10), || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().next());
                matches!(state, None | Some("Z" | "X")).then_some(())
            });
            let _ = std::fs::remove_file(&containerd_pid);
        }
    }

    /// Stops what the daemon started and left behind: each container's shim and first process
    /// (from the `init.pid` files under its exec root) and its containerd (`containerd.pid`),
    /// each checked to name this daemon's folder.
    fn kill_leftovers(&self) {
        let exec = self.dir.join("exec");
        let tasks = exec.join("containerd/daemon/io.containerd.runtime.v2.task/moby");
        for entry in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            let Some(init) = std::fs::read_to_string(entry.path().join("init.pid"))
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            else {
                continue;
            };
            // The container's first process is killed only as the child of this daemon's shim
            // (an id alone may have been reused by now).
            let Some(shim) = parent_of(init).filter(|p| *p > 1) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&exec.display().to_string()) {
                for pid in [init, shim] {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        kill_recorded(&exec.join("containerd/containerd.pid"), &exec);
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

    /// `docker ARGS` for `docker system df`: asked again a few times while the daemon answers
    /// that an object it measures is gone (28.5 with the containerd store says "NotFound:
    /// snapshot … does not exist" while a build's snapshots go), as bilge's own edge does.
    fn docker_df(&self, args: &[&str]) -> String {
        for _ in 0..10 {
            let out = self.docker_output(args);
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !err.contains("not found") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        self.docker(args)
    }

    /// Writes `docker system df` JSON for later comparison.
    pub fn system_df(&self) -> Vec<serde_json::Value> {
        self.docker_df(&["system", "df", "--format", "{{json .}}"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `GET path` of the daemon's API (`/v1.41/system/df`, say), as JSON: what Docker itself
    /// answers, exact bytes included (the CLI rounds them). A 404 is asked again a few times:
    /// on 28.5 with the containerd store, `/system/df` answers 404 when an object it measures
    /// goes meanwhile (a build's snapshots, say), as bilge's own edge knows.
    pub fn api(&self, path: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut last = String::new();
        for _ in 0..10 {
            let mut s =
                std::os::unix::net::UnixStream::connect(self.dir.join("docker.sock")).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).unwrap();
            let text = String::from_utf8_lossy(&answer);
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
                return serde_json::from_str(body).unwrap();
            }
            assert!(head.contains(" 404 "), "{head}\n{body}");
            last = format!("{head}\n{body}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("GET {path} kept answering 404: {last}");
    }

    /// `docker system df -v` as one JSON object.
    pub fn system_df_verbose(&self) -> serde_json::Value {
        serde_json::from_str(&self.docker_df(&["system", "df", "-v", "--format", "{{json .}}"]))
            .unwrap()
    }
}

/// A containerd of its own (from Debian's newest packages), as a system containerd runs beside
/// dockerd, with its root in a folder the test chose; stopped on drop. Its process id is in
/// `containerd.pid` in its folder, where scripts/test.sh finds it after a crash.
#[derive(Debug)]
pub struct Containerd {
    /// Its gRPC socket, for `dockerd --containerd`.
    pub socket: PathBuf,
    /// Its root.
    pub root: PathBuf,
    child: Child,
}

impl Containerd {
    /// Starts containerd with its root at `root` and the rest of its files in a new folder.
    pub fn start(name: &str, root: &Path) -> Containerd {
        require_root();
        let engine = newest_engine(true);
        let bin = engine.dir.as_ref().unwrap().join("usr/bin/containerd");
        let dir = temp_dir(name);
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 3\nroot = {:?}\nstate = {:?}\n\n[grpc]\n  address = {:?}\n\n[ttrpc]\n  address = {:?}\n",
                root.display().to_string(),
                dir.join("state").display().to_string(),
                socket.display().to_string(),
                dir.join("ttrpc.sock").display().to_string(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .env(
                "PATH",
                format!("{}:{path}", bin.parent().unwrap().display()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd did not start");
        std::fs::write(dir.join("containerd.pid"), child.id().to_string()).unwrap();
        let up = wait_for_opt(Duration::from_secs(30), || socket.exists().then_some(()));
        if up.is_none() {
            let log = std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            panic!("containerd did not make its socket within 30s; its log:\n{log}");
        }
        Containerd {
            socket,
            root: root.to_path_buf(),
            child,
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
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

/// A small ext4 loop filesystem under [`test_root`], unmounted and removed on drop.
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
        self.kill_leftovers();
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

    /// Makes a dangling image of about `mib` MiB, more than a second old on return (Docker's
    /// `until` filter counts whole seconds, so even `until=0s` keeps an image from the current
    /// second), and builds `tag` with other content. Returns the dangling image's id.
    ///
    /// The dangling image is an untagged build: with the classic store a tag moved by a
    /// rebuild leaves the old image dangling, but the containerd image store deletes it, and
    /// an untagged build is dangling in both.
    pub fn make_dangling(&self, tag: &str, mib: u32) -> String {
        let first = self.build(
            None,
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
