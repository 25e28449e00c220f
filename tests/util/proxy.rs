//! A proxy on a Docker daemon's unix socket, for faults between bilge and Docker: it forwards
//! every byte both ways, and can hold the first image `DELETE` until the test releases it (the
//! tag race) or slow every `DELETE` down (so that a per-object prune is surely in flight), and
//! tells which requests it passed on (so that a test can act while a prune call is in flight).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};

use super::*;

/// What the proxy does to `DELETE` requests.
#[derive(Debug, Default)]
struct Rules {
    /// Hold the first image `DELETE` until [`SocketProxy::release`].
    hold_first: bool,
    /// The request line of the held `DELETE`, once one arrived.
    held: Option<String>,
    /// True once released.
    released: bool,
    /// A pause before every `DELETE` is passed on.
    delay: Duration,
    /// The request line of every request passed on so far.
    seen: Vec<String>,
}

/// A unix socket that forwards to a daemon's socket; stopped (its socket removed) on drop.
#[derive(Debug)]
pub struct SocketProxy {
    /// `unix://…/proxy.sock`, for `--docker.host`.
    pub host: String,
    /// The socket's path.
    path: PathBuf,
    /// The `DELETE` rules and their change signal.
    rules: Arc<(Mutex<Rules>, Condvar)>,
    /// Set on drop: the accept loop ends.
    stop: Arc<AtomicBool>,
}

impl SocketProxy {
    /// A proxy in `dir` in front of daemon `d`.
    pub fn new(dir: &Path, d: &Daemon) -> SocketProxy {
        let path = dir.join("proxy.sock");
        let _ = std::fs::remove_file(&path);
        let upstream = d.dir.join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let rules = Arc::new((Mutex::new(Rules::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (rules.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = UnixStream::connect(&upstream) else {
                    // The daemon is gone: the client sees its connection closed.
                    continue;
                };
                let r = r.clone();
                std::thread::spawn(move || pump(client, server, r));
            }
        });
        SocketProxy {
            host: format!("unix://{}", path.display()),
            path,
            rules,
            stop,
        }
    }

    /// Holds the first image `DELETE` from now on.
    pub fn hold_first_delete(&self) {
        lock_rules(&self.rules.0).hold_first = true;
    }

    /// Pauses every `DELETE` for `d` before passing it on.
    pub fn delay_deletes(&self, d: Duration) {
        lock_rules(&self.rules.0).delay = d;
    }

    /// Waits (up to `timeout`) for the held `DELETE`; its request line.
    pub fn wait_held(&self, timeout: Duration) -> String {
        let (m, cv) = &*self.rules;
        let start = Instant::now();
        let mut g = lock_rules(m);
        while g.held.is_none() {
            assert!(
                start.elapsed() < timeout,
                "no DELETE reached the proxy within {timeout:?}"
            );
            g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
        }
        g.held.clone().unwrap()
    }

    /// Waits (up to `timeout`) until a request whose line contains `part` has been passed on
    /// to the daemon; that line.
    pub fn wait_seen(&self, part: &str, timeout: Duration) -> String {
        let (m, cv) = &*self.rules;
        let start = Instant::now();
        let mut g = lock_rules(m);
        loop {
            if let Some(l) = g.seen.iter().find(|l| l.contains(part)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "no request with {part:?} reached the daemon within {timeout:?}: {:?}",
                g.seen
            );
            g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
        }
    }

    /// Lets the held `DELETE` (and any later one) through.
    pub fn release(&self) {
        let (m, cv) = &*self.rules;
        lock_rules(m).released = true;
        cv.notify_all();
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the stop.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock_rules(m: &Mutex<Rules>) -> std::sync::MutexGuard<'_, Rules> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forwards one connection both ways, applying the `DELETE` rules to the client's requests.
fn pump(mut client: UnixStream, mut server: UnixStream, rules: Arc<(Mutex<Rules>, Condvar)>) {
    let (Ok(mut client_w), Ok(mut server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_r, &mut client_w);
        let _ = client_w.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if chunk.starts_with(b"DELETE ") {
            let line = String::from_utf8_lossy(chunk)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let (m, cv) = &*rules;
            let mut g = lock_rules(m);
            if g.hold_first && g.held.is_none() && line.contains("/images/") {
                g.held = Some(line);
                cv.notify_all();
                while !g.released {
                    g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
            }
            let delay = g.delay;
            drop(g);
            std::thread::sleep(delay);
        }
        if server.write_all(chunk).is_err() {
            break;
        }
        if let Some(line) = request_line(chunk) {
            let (m, cv) = &*rules;
            lock_rules(m).seen.push(line);
            cv.notify_all();
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Write);
}

/// The request line when `chunk` starts a request (`METHOD /path HTTP/1.1`).
fn request_line(chunk: &[u8]) -> Option<String> {
    let line = String::from_utf8_lossy(chunk).lines().next()?.to_string();
    let (method, rest) = line.split_once(' ')?;
    (method.bytes().all(|b| b.is_ascii_uppercase()) && rest.ends_with("HTTP/1.1")).then_some(line)
}
