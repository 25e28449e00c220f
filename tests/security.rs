//! The trust boundary against the real thing: `bilge serve` with a web config (TLS from
//! certificates that Debian's `openssl` makes here, bcrypt basic auth), Debian's Prometheus
//! scraping it over https with basic auth, Debian's Alertmanager delivering to its webhook over
//! https with the bearer token, `curl` as an independent client, `bilge build --server https://…`,
//! certificate reloads, and the server's bounds (timeouts, 1,000 idle connections).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const TOKEN: &str = "api-token-for-security-tests";
const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-password-for-tests";
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

/// A test PKI made with Debian's openssl: a CA and certificates it signs.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
}

impl Pki {
    /// A fresh CA in a temp directory.
    fn new(name: &str) -> Pki {
        require("/usr/bin/openssl", "apt-get install openssl");
        let dir = temp_dir(name);
        let ca = dir.join("ca.crt");
        run_ok(
            Command::new("/usr/bin/openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
                .args(["-subj", "/CN=bilge test CA"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(dir.join("ca.key"))
                .arg("-out")
                .arg(&ca),
        );
        Pki { dir, ca }
    }

    /// Issues `name.crt` / `name.key` for 127.0.0.1 (a server certificate, or a client one).
    fn issue(&self, name: &str, client: bool) -> (PathBuf, PathBuf) {
        let (crt, key, csr) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.csr")),
        );
        let ext = self.dir.join(format!("{name}.ext"));
        let usage = if client { "clientAuth" } else { "serverAuth" };
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
            ),
        )
        .unwrap();
        run_ok(
            Command::new("/usr/bin/openssl")
                .args([
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-subj", &format!("/CN={name}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        run_ok(
            Command::new("/usr/bin/openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.ca)
                .arg("-CAkey")
                .arg(self.dir.join("ca.key"))
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&crt),
        );
        (crt, key)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A web config with TLS from `crt`/`key` and the test user, written into `dir`.
fn web_config(dir: &Path, crt: &Path, key: &Path, extra_tls: &str) -> PathBuf {
    let hash = bcrypt::hash(PASSWORD, 6).unwrap();
    let p = dir.join("web-config.yml");
    std::fs::write(
        &p,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{extra_tls}basic_auth_users:\n  {USER}: {hash}\n",
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    p
}

/// An answer from curl.
#[derive(Debug)]
struct Answer {
    /// The HTTP status (0 when curl got none).
    status: u16,
    /// Header lines, as sent.
    head: String,
    /// The body.
    body: String,
}

impl Answer {
    /// The body as JSON.
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// A header's value (name case-insensitive).
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// curl `args` (plus `--cacert ca`), with the answer's head and body.
fn curl(ca: &Path, args: &[&str]) -> Answer {
    require("/usr/bin/curl", "apt-get install curl");
    let out = Command::new("/usr/bin/curl")
        .args(["-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A `bilge serve` with the web config at `web`, the test token and `extra` flags; waits until
/// `/-/healthy` answers over https.
fn serve_tls(docker_host: &str, web: &Path, ca: &Path, extra: &[&str]) -> Server {
    let dir = temp_dir("tls");
    let token = token_file(&dir, TOKEN);
    let mut args = vec![
        "--web.config.file".to_string(),
        web.display().to_string(),
        "--webhook.token-file".into(),
        token.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let state = dir.join("bilge.db");
    let mut s = Server::spawn(dir, &state, docker_host, &args);
    let url = format!("https://{}/-/healthy", s.addr);
    let started = Instant::now();
    while curl(ca, &[&url]).status != 200 {
        assert!(
            s.running() && started.elapsed() < Duration::from_secs(30),
            "bilge did not answer over https: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

/// `https://addr/path`.
fn https(s: &Server, path: &str) -> String {
    format!("https://{}{}", s.addr, path)
}

/// `user:password` for curl's `-u`.
fn user(password: &str) -> String {
    format!("{USER}:{password}")
}

#[test]
fn wrong_or_missing_credentials_get_401_on_every_protected_endpoint() {
    let pki = Pki::new("pki-401");
    let (crt, key) = pki.issue("server", false);
    let web = web_config(&pki.dir, &crt, &key, "");
    let s = serve_tls(NO_DOCKER, &web, &pki.ca, &[]);
    let protected = [
        "/",
        "/metrics",
        "/-/ready",
        "/api/v1/builds",
        "/api/v1/cleanups",
        "/api/v1/plan",
        "/api/v1/alerts",
        "/no/such/endpoint",
    ];
    let right = user(PASSWORD);
    let wrong = user("not-the-password");
    let stranger = format!("somebody:{PASSWORD}");
    for path in protected {
        let url = https(&s, path);
        for (what, extra) in [
            ("no credentials", vec![]),
            ("a wrong password", vec!["-u", wrong.as_str()]),
            ("an unknown user", vec!["-u", stranger.as_str()]),
            (
                "the API token",
                vec!["-H", "Authorization: Bearer api-token-for-security-tests"],
            ),
        ] {
            let mut args = extra.clone();
            args.push(&url);
            let a = curl(&pki.ca, &args);
            assert_eq!(a.status, 401, "{path} with {what}: {a:?}");
            assert_eq!(
                a.header("www-authenticate").as_deref(),
                Some("Basic realm=\"bilge\", charset=\"UTF-8\""),
                "{path} with {what}"
            );
            assert!(a.json()["error"].is_string(), "{path} with {what}: {a:?}");
        }
        let a = curl(&pki.ca, &["-u", &right, &url]);
        assert_ne!(a.status, 401, "{path} with the right password: {a:?}");
    }
    // Liveness stays open: it answers a constant.
    assert_eq!(curl(&pki.ca, &[&https(&s, "/-/healthy")]).status, 200);
    // The token endpoints take the token, not a user's password.
    let record = r#"{"project":"web","result":"success","duration_seconds":3}"#;
    let builds = https(&s, "/api/v1/builds");
    let post = |auth: &[&str]| {
        let mut args = vec!["-X", "POST", "-H", "Content-Type: application/json"];
        args.extend_from_slice(auth);
        args.extend(["--data", record, builds.as_str()]);
        curl(&pki.ca, &args)
    };
    let a = post(&["-u", &right]);
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(
        a.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"bilge\"")
    );
    assert_eq!(post(&[]).status, 401);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let a = post(&["-H", &bearer]);
    assert_eq!(a.status, 201, "{a:?}");
    let listed = curl(&pki.ca, &["-u", &right, &builds]);
    assert_eq!(listed.json()["builds"][0]["project"], "web");
}

#[test]
fn plain_http_to_a_tls_bilge_fails() {
    let pki = Pki::new("pki-plain");
    let (crt, key) = pki.issue("server", false);
    let web = web_config(&pki.dir, &crt, &key, "");
    let s = serve_tls(NO_DOCKER, &web, &pki.ca, &[]);
    for path in ["/-/healthy", "/metrics"] {
        let r = http("GET", &s.url(path), &[], b"");
        assert!(
            r.is_err(),
            "plain HTTP got an answer from a TLS bilge: {r:?}"
        );
    }
    // And over https without trusting the CA, curl refuses the certificate.
    let out = Command::new("/usr/bin/curl")
        .args(["-sS", "--max-time", "10", &https(&s, "/-/healthy")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl trusted a test certificate");
    assert!(s.log_text().contains("\"tls\"") || s.log_text().contains("tls=true"));
}

#[test]
fn client_certificates_are_required_when_the_web_config_says_so() {
    let pki = Pki::new("pki-mtls");
    let (crt, key) = pki.issue("server", false);
    let (client_crt, client_key) = pki.issue("client", true);
    let extra = format!(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
        pki.ca.display()
    );
    let web = web_config(&pki.dir, &crt, &key, &extra);
    let dir = temp_dir("mtls");
    let state = dir.join("bilge.db");
    let web_s = web.display().to_string();
    let mut s = Server::spawn(dir, &state, NO_DOCKER, &["--web.config.file", &web_s]);
    let cert_args = [
        "--cert",
        client_crt.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
    ];
    let healthy = https(&s, "/-/healthy");
    let started = Instant::now();
    loop {
        let mut args = cert_args.to_vec();
        args.push(&healthy);
        if curl(&pki.ca, &args).status == 200 {
            break;
        }
        assert!(
            s.running() && started.elapsed() < Duration::from_secs(30),
            "no answer with a client certificate: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        curl(&pki.ca, &[&healthy]).status,
        0,
        "a client without a certificate got an answer"
    );
}

#[test]
fn a_certificate_replaced_on_disk_is_served_without_restart_and_a_broken_one_is_not() {
    let pki = Pki::new("pki-reload");
    let (crt, key) = pki.issue("server", false);
    let web = web_config(&pki.dir, &crt, &key, "");
    let s = serve_tls(NO_DOCKER, &web, &pki.ca, &[]);
    let serial = || {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "/usr/bin/openssl s_client -connect {} </dev/null 2>/dev/null | /usr/bin/openssl x509 -noout -serial",
                s.addr
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let file_serial = |p: &Path| {
        run_ok(
            Command::new("/usr/bin/openssl")
                .args(["x509", "-noout", "-serial", "-in"])
                .arg(p),
        )
        .trim()
        .to_string()
    };
    let first = serial();
    assert_eq!(first, file_serial(&crt));
    // A new pair, moved into place as a certificate manager would.
    let (new_crt, new_key) = pki.issue("renewed", false);
    assert_ne!(file_serial(&new_crt), first);
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_crt, &crt).unwrap();
    let renewed = file_serial(&crt);
    wait_for("the renewed certificate", Duration::from_secs(10), || {
        (serial() == renewed).then_some(())
    });
    assert_eq!(
        curl(&pki.ca, &["-u", &user(PASSWORD), &https(&s, "/metrics")]).status,
        200
    );
    // A broken certificate is logged and the last good one stays.
    std::fs::write(&crt, "not a certificate\n").unwrap();
    wait_for(
        "the broken file to be noticed",
        Duration::from_secs(10),
        || {
            s.log_text()
                .contains("the last good one stays in force")
                .then_some(())
        },
    );
    assert_eq!(serial(), renewed);
    assert_eq!(curl(&pki.ca, &[&https(&s, "/-/healthy")]).status, 200);
}

#[test]
fn a_bad_web_config_stops_start_up_with_one_line_and_exit_2() {
    let dir = temp_dir("badweb");
    for (text, says) in [
        (
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
            "cannot read /nonexistent.crt",
        ),
        (
            "tls_server_config:\n  cipher_suites: [x]\n",
            "cipher_suites is not supported",
        ),
        ("basic_auth_users:\n  a: plain\n", "not a bcrypt hash"),
    ] {
        let p = dir.join("web.yml");
        std::fs::write(&p, text).unwrap();
        let out = Command::new(BILGE)
            .args(["serve", "--web.listen-address", "127.0.0.1:0"])
            .arg("--web.config.file")
            .arg(&p)
            .arg("--state.path")
            .arg(dir.join("bilge.db"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("--web.config.file") && err.contains(says),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bilge_build_server_https_records_a_build_through_a_tls_bilge() {
    let pki = Pki::new("pki-build");
    let (crt, key) = pki.issue("server", false);
    let web = web_config(&pki.dir, &crt, &key, "");
    let s = serve_tls(NO_DOCKER, &web, &pki.ca, &[]);
    let dir = temp_dir("tls-build");
    let token = token_file(&dir, TOKEN);
    let build = |project: &str, ca: Option<&Path>| {
        let mut c = Command::new(BILGE);
        c.args(["build", "--project", project, "--docker.host", NO_DOCKER])
            .arg("--state.path")
            .arg(dir.join("local.db"))
            .args(["--server", &format!("https://{}", s.addr)])
            .arg("--server.token-file")
            .arg(&token);
        if let Some(ca) = ca {
            c.arg("--server.ca-file").arg(ca);
        }
        c.args([
            "--",
            "sh",
            "-c",
            "echo 'fatal: https://bot:s3cr3t@git.example/r.git: No space left on device'; exit 1",
        ])
        .env_remove("BILGE_SERVER")
        .stdin(Stdio::null())
        .output()
        .unwrap()
    };
    let out = build("through-tls", Some(&pki.ca));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("could not send"), "{err}");
    assert!(
        !err.contains("s3cr3t"),
        "the summary shows the credential: {err}"
    );
    let listed = curl(
        &pki.ca,
        &["-u", &user(PASSWORD), &https(&s, "/api/v1/builds")],
    );
    let rec = &listed.json()["builds"][0];
    assert_eq!(rec["project"], "through-tls", "{listed:?}");
    assert_eq!(rec["reason"], "no_space");
    assert!(
        rec["evidence"]
            .as_str()
            .unwrap()
            .contains("https://***@git.example/r.git"),
        "{rec}"
    );
    // Without the CA the server's certificate is not trusted: the outcome stays local.
    let out = build("untrusted", None);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("could not send the outcome"), "{err}");
    let listed = curl(
        &pki.ca,
        &["-u", &user(PASSWORD), &https(&s, "/api/v1/builds")],
    );
    assert_eq!(listed.json()["builds"].as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `tcp://` daemon with `--tlsverify`, reached as the docker CLI reaches one: with the flags, or
/// with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` (ca.pem, cert.pem, key.pem). bilge verifies
/// the daemon against ca.pem only and presents its client certificate; a daemon that ca.pem did
/// not sign gets nothing from it, and plain HTTP to a TLS daemon fails.
#[test]
fn a_tls_verified_tcp_daemon_is_reached_as_the_docker_cli_reaches_it() {
    let pki = Pki::new("pki-docker");
    let (srv_crt, srv_key) = pki.issue("dockerd", false);
    let (cli_crt, cli_key) = pki.issue("client", true);
    let port = free_port();
    let d = Daemon::start_with_args(
        "docker-tls",
        &[
            format!("--host=tcp://127.0.0.1:{port}"),
            "--tlsverify".into(),
            format!("--tlscacert={}", pki.ca.display()),
            format!("--tlscert={}", srv_crt.display()),
            format!("--tlskey={}", srv_key.display()),
        ],
    );
    d.docker(&["volume", "create", "over-tls"]);
    let certs = pki.dir.join("docker-certs");
    std::fs::create_dir_all(&certs).unwrap();
    for (from, to) in [
        (&pki.ca, "ca.pem"),
        (&cli_crt, "cert.pem"),
        (&cli_key, "key.pem"),
    ] {
        std::fs::copy(from, certs.join(to)).unwrap();
    }
    let tcp = format!("tcp://127.0.0.1:{port}");
    let df = |env: &[(&str, &Path)], args: &[&str]| {
        let mut c = Command::new(BILGE);
        c.args(["df", "--docker.host", &tcp])
            .args(args)
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // The docker CLI's environment.
    let (code, text) = df(
        &[
            ("DOCKER_TLS_VERIFY", Path::new("1")),
            ("DOCKER_CERT_PATH", &certs),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("Docker ") && text.contains(" (API "),
        "{text}"
    );
    assert!(!text.contains("unreachable"), "{text}");
    // bilge's own flags, and a serve that collects through them.
    let s = Server::start(
        &tcp,
        &[
            "--docker.tls-verify",
            "--docker.cert-path",
            certs.to_str().unwrap(),
            "--docker.refresh-interval",
            "1s",
        ],
    );
    let up = wait_for_opt(Duration::from_secs(30), || {
        (s.metric("bilge_docker_objects{type=\"volume\"}") == Some(1.0)).then_some(())
    });
    assert!(
        up.is_some(),
        "the volume over TLS: {}\n{}",
        s.metrics(),
        s.log_text()
    );
    assert_eq!(s.metric("bilge_docker_up"), Some(1.0));
    // A ca.pem that did not sign the daemon's certificate: nothing is sent to it.
    let other = Pki::new("pki-docker-other");
    let wrong = pki.dir.join("wrong-ca");
    std::fs::create_dir_all(&wrong).unwrap();
    for (from, to) in [
        (&other.ca, "ca.pem"),
        (&cli_crt, "cert.pem"),
        (&cli_key, "key.pem"),
    ] {
        std::fs::copy(from, wrong.join(to)).unwrap();
    }
    let (code, text) = df(
        &[],
        &[
            "--docker.tls-verify",
            "--docker.cert-path",
            wrong.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("unreachable") && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    // Plain HTTP to the TLS port fails; so does a cert path without the files (exit 2).
    let (code, text) = df(&[], &[]);
    assert_eq!(code, Some(1), "{text}");
    let (code, text) = df(
        &[],
        &[
            "--docker.tls-verify",
            "--docker.cert-path",
            pki.dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("--docker.cert-path") && text.contains("ca.pem"),
        "{text}"
    );
}

/// A scratch image or a slim CI image has no CA bundle. The clients must still be built: plain
/// http works there, and an https server is refused for its certificate, not for a client that
/// could not be made (the scratch image's HEALTHCHECK once failed with "builder error").
#[test]
fn without_any_system_ca_certificate_plain_http_clients_still_work() {
    let dir = temp_dir("no-roots");
    let empty = dir.join("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    let token = token_file(&dir, TOKEN);
    let s = Server::start(
        NO_DOCKER,
        &["--webhook.token-file", token.to_str().unwrap()],
    );
    let no_roots = |c: &mut Command| {
        c.env("SSL_CERT_FILE", empty.join("none.pem"))
            .env("SSL_CERT_DIR", &empty)
            .env_remove("BILGE_SERVER")
            .stdin(Stdio::null());
    };
    let mut hc = Command::new(BILGE);
    hc.arg("healthcheck")
        .env("BILGE_WEB_LISTEN_ADDRESS", &s.addr)
        .env_remove("BILGE_WEB_CONFIG_FILE");
    no_roots(&mut hc);
    let out = hc.output().unwrap();
    assert!(
        out.status.success(),
        "healthcheck without CA certificates: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut build = Command::new(BILGE);
    build
        .args(["build", "--project", "no-roots", "--docker.host", NO_DOCKER])
        .arg("--state.path")
        .arg(dir.join("local.db"))
        .args(["--server", &format!("http://{}", s.addr)])
        .arg("--server.token-file")
        .arg(&token)
        .args(["--", "true"]);
    no_roots(&mut build);
    let out = build.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("could not send"), "{err}");
    let listed = s.get("/api/v1/builds").json();
    assert_eq!(listed["builds"][0]["project"], "no-roots", "{listed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bilge_healthcheck_speaks_tls_and_basic_auth_from_the_web_config() {
    let pki = Pki::new("pki-health");
    let (crt, key) = pki.issue("server", false);
    let web = web_config(&pki.dir, &crt, &key, "");
    let d = Daemon::start("health");
    let s = serve_tls(&d.host, &web, &pki.ca, &["--docker.refresh-interval", "1s"]);
    let password = pki.dir.join("probe-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let check = |args: &[&str], with_user: bool| {
        let mut c = Command::new(BILGE);
        c.arg("healthcheck")
            .args(args)
            .env("BILGE_WEB_LISTEN_ADDRESS", &s.addr)
            .env("BILGE_WEB_CONFIG_FILE", &web);
        if with_user {
            c.env("BILGE_HEALTHCHECK_USERNAME", USER)
                .env("BILGE_HEALTHCHECK_PASSWORD_FILE", &password);
        }
        c.output().unwrap()
    };
    let out = check(&[], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("bilge to be ready", Duration::from_secs(60), || {
        check(&["--ready"], true).status.success().then_some(())
    });
    let out = check(&["--ready"], false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// Prometheus with the bilge job of `deploy/prometheus.yml`, pointed at `target` with the test
/// CA and password file, scraping every second.
struct Prometheus {
    addr: String,
    dir: PathBuf,
    child: Child,
}

impl Prometheus {
    fn start(target: &str, ca: &Path, password_file: &Path) -> Prometheus {
        require("/usr/bin/prometheus", "apt-get install prometheus");
        let bundled: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus.yml"),
            )
            .unwrap(),
        )
        .unwrap();
        let mut job = bundled["scrape_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|j| j["job_name"] == "bilge")
            .expect("deploy/prometheus.yml has a bilge job")
            .clone();
        assert_eq!(
            job["scheme"], "https",
            "the bundled scrape is not over https"
        );
        assert!(job["tls_config"]["ca_file"].is_string());
        assert!(job["basic_auth"]["password_file"].is_string());
        job["tls_config"]["ca_file"] = ca.display().to_string().into();
        job["basic_auth"]["password_file"] = password_file.display().to_string().into();
        job["static_configs"] =
            serde_yaml_ng::from_str(&format!("[{{targets: ['{target}']}}]")).unwrap();
        job["scrape_interval"] = "1s".into();
        let dir = temp_dir("prom-tls");
        let config = serde_json::json!({"global": {"scrape_interval": "1s"}});
        let mut config: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&config.to_string()).unwrap();
        config["scrape_configs"] = serde_yaml_ng::Value::Sequence(vec![job]);
        std::fs::write(
            dir.join("prometheus.yml"),
            serde_yaml_ng::to_string(&config).unwrap(),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        record_pid(&dir, "prometheus", child.id());
        Prometheus { addr, dir, child }
    }

    /// The result vector of an instant query (empty while Prometheus is not up).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let body = format!("query={}", crate::stack::urlencode(expr));
        http(
            "POST",
            &format!("http://{}/api/v1/query", self.addr),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| r.json()["data"]["result"].as_array().cloned())
        .unwrap_or_default()
    }

    /// The bilge target's last scrape error.
    fn scrape_error(&self) -> String {
        http(
            "GET",
            &format!("http://{}/api/v1/targets", self.addr),
            &[],
            b"",
        )
        .map(|r| r.json()["data"]["activeTargets"][0]["lastError"].to_string())
        .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_bilge_over_tls_with_basic_auth() {
    let pki = Pki::new("pki-prom");
    let (crt, key) = pki.issue("server", false);
    let web = web_config(&pki.dir, &crt, &key, "");
    let s = serve_tls(NO_DOCKER, &web, &pki.ca, &[]);
    let password = pki.dir.join("scrape-password");
    std::fs::write(&password, PASSWORD).unwrap();
    let p = Prometheus::start(&s.addr, &pki.ca, &password);
    let up = wait_for_opt(Duration::from_secs(60), || {
        p.query("up{job=\"bilge\"} == 1").into_iter().next()
    });
    assert!(up.is_some(), "the target is not up: {}", p.scrape_error());
    let info = p.query("bilge_exporter_build_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(!p.query("bilge_filesystem_size_bytes").is_empty());
    // And with a wrong password the same scrape is refused.
    std::fs::write(&password, "wrong").unwrap();
    let refused = wait_for_opt(Duration::from_secs(30), || {
        p.scrape_error().contains("401").then_some(())
    });
    assert!(refused.is_some(), "{}", p.scrape_error());
}

#[test]
fn alertmanager_delivers_to_the_webhook_over_https_and_the_prune_happens() {
    let pki = Pki::new("pki-am");
    let (crt, key) = pki.issue("server", false);
    let web = web_config(&pki.dir, &crt, &key, "");
    let d = Daemon::start("am-tls");
    let dangling = d.make_dangling("dangle:1", 5);
    let policy = policy_file(&d.dir, &["until = \"0s\"", "target_free = \"100%\""]);
    let policy_s = policy.display().to_string();
    let s = serve_tls(
        &d.host,
        &web,
        &pki.ca,
        &["--config", &policy_s, "--docker.refresh-interval", "1s"],
    );
    let token = token_file(&d.dir, TOKEN);
    let am = Alertmanager::start_for_bilge_tls(&https(&s, "/api/v1/alerts"), &token, Some(&pki.ca));
    am.post(&serde_json::json!([{
        "labels": {
            "alertname": "BilgeDockerDataRootAlmostFull",
            "instance": s.addr,
            "job": "bilge",
            "severity": "warning",
            "bilge_action": "standard"
        },
        "annotations": {"summary": "Docker's data root is almost full."},
        "startsAt": chrono::Utc::now().to_rfc3339()
    }]));
    let row = wait_for("the webhook's cleanup", Duration::from_secs(60), || {
        let a = curl(
            &pki.ca,
            &["-u", &user(PASSWORD), &https(&s, "/api/v1/cleanups")],
        );
        a.json()["cleanups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|r| r["trigger"] == "webhook" && r["result"] == "success")
    });
    assert_eq!(row["level"], "dangling_images", "{row:#}");
    assert!(!d.has_image(&dangling), "the dangling image is still there");
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout() {
    let s = Server::start(NO_DOCKER, &["--web.read-header-timeout", "1s"]);
    for opening in [&b""[..], b"GET /metrics HTTP/1.1\r\nHost: x\r\n"] {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.write_all(opening).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        let took = start.elapsed();
        assert_eq!(n, 0, "the server answered {:?}", &buf[..n]);
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(5),
            "closed after {took:?}, not after the 1s header timeout"
        );
    }
}

#[test]
fn a_thousand_idle_connections_do_not_stop_scrapes() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    // The test holds 1,000 sockets itself.
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
    let s = Server::start(NO_DOCKER, &[]);
    let rss = || {
        std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let before = rss();
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        if i % 2 == 1 {
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Partial: ")
                .unwrap();
        }
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let r = http("GET", &s.url("/metrics"), &[], b"").unwrap();
        times.push(start.elapsed());
        assert_eq!(r.status, 200);
        assert!(r.text().contains("bilge_exporter_build_info"));
    }
    let during = rss();
    times.sort();
    println!(
        "scrape latency with 1,000 idle connections held: median {:?}, max {:?}; bilge RSS {} KiB before, {} KiB while held",
        times[times.len() / 2],
        times[times.len() - 1],
        before,
        during
    );
    assert!(
        times[times.len() - 1] < Duration::from_millis(100),
        "a scrape took {:?} while 1,000 idle connections were held",
        times[times.len() - 1]
    );
    // The held connections are still open (none was refused or reset).
    let mut alive = 0;
    for c in &mut held {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => alive += 1,
            _ => {}
        }
    }
    assert_eq!(
        alive, 1000,
        "bilge closed idle connections before their timeout"
    );
}

#[test]
fn the_bundled_web_config_is_one_bilge_accepts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/web-config.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = bilge::web::config::parse(&text, path.parent().unwrap())
        .unwrap_or_else(|e| panic!("deploy/web-config.yml is refused: {e}"));
    let tls = c.tls.expect("the sample sets up TLS");
    assert_eq!(
        tls.cert.path(),
        Some(path.parent().unwrap().join("tls/bilge.crt").as_path())
    );
    assert!(
        c.users.contains_key("prometheus"),
        "the sample's user is the scrape's"
    );
    assert!(!c.headers.is_empty());
}
