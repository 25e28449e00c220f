//! Validated configuration: raw flags from [`crate::cli`] plus the optional TOML policy file,
//! checked once at start-up. A bad value stops start-up with one line naming it.
//!
//! This module only assembles. Each setting's type belongs to the module that uses it
//! ([`DockerConfig`] to the Docker edge, [`FilesystemConfig`] to the filesystem collector, the
//! policy to the cleanup engine, [`LogConfig`] to logging, [`BuildConfig`] to the build
//! wrapper, [`ServeConfig`] to the server); here they are built from the flags and handed out,
//! each part only its slice. No module below this one imports it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::builds::record::{check_project, project_from_dir};
use crate::builds::run::BuildConfig;
use crate::builds::submit::ServerTarget;
use crate::cleanup::admission::LockSettings;
use crate::cleanup::cli::CleanOptions;
use crate::cleanup::engine::Settings as EngineSettings;
use crate::cleanup::policy::{Level, Policy};
use crate::cli::{
    BuildArgs, CleanArgs, GlobalArgs, HealthcheckArgs, LogFormat as LogFormatArg, ServeArgs,
};
use crate::collect::disk::FilesystemConfig;
use crate::docker::{DEFAULT_HOST, DockerConfig, DockerHost, TLS_FILES};
use crate::format::{parse_duration, parse_free_target, parse_size};
use crate::logging::{LogConfig, LogFormat};
use crate::serve::ServeSettings;
use crate::server::ServeConfig;
use crate::web::WebSettings;
use crate::web::health::HealthcheckSettings;
use crate::web::listen::ListenSettings;
use crate::web::tls::Trust;
use crate::webhook::{self, Identities, RelaySettings, WebhookSettings};
use crate::{Error, Result};

/// Settings every subcommand shares.
#[derive(Debug, Clone)]
pub struct Config {
    /// Docker access.
    pub docker: DockerConfig,
    /// Filesystem collection.
    pub filesystem: FilesystemConfig,
    /// The SQLite file.
    pub state_path: PathBuf,
    /// The cleanup policy (defaults, then the TOML file).
    pub policy: Policy,
    /// The cleanup engine's host lock and shutdown grace.
    pub engine: EngineSettings,
    /// Cap on distinct project label values.
    pub max_projects: usize,
    /// Cap on distinct host label values (`--builds.max-hosts`).
    pub max_hosts: usize,
    /// This host's name (`--host.name`, else the hostname).
    pub host_name: String,
}

/// The TOML policy file, as written by the user. Unknown keys are refused so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    until: Option<String>,
    protect_labels: Option<Vec<String>>,
    max_level: Option<String>,
    allow_volumes: Option<bool>,
    target_free: Option<String>,
    cooldown: Option<String>,
    low_watermark: Option<String>,
    high_watermark: Option<String>,
    build_cache_keep: Option<String>,
    images_keep: Option<String>,
    emergency_free: Option<String>,
    forecast_watermark: Option<String>,
    allow_log_truncation: Option<bool>,
    log_truncate_over: Option<String>,
    catch_up_delay: Option<String>,
    #[serde(default)]
    schedule: Vec<ScheduleFile>,
}

/// One `[[cleanup.schedule]]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    name: Option<String>,
    cron: Option<String>,
    level: Option<String>,
    tz: Option<String>,
    until: Option<String>,
    target_free: Option<String>,
    build_cache_keep: Option<String>,
}

/// Reads schedule `i` of the file, naming the key at fault (`cleanup.schedule[i].cron`, say).
fn parse_schedule(
    i: usize,
    f: ScheduleFile,
) -> std::result::Result<crate::cleanup::schedule::Schedule, String> {
    use crate::cleanup::schedule::{MAX_NAME, Schedule};
    let key = |k: &str, e: String| format!("cleanup.schedule[{i}].{k}: {e}");
    let name = f.name.unwrap_or_else(|| format!("schedule-{i}"));
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(key(
            "name",
            format!("{name:?}: use 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"),
        ));
    }
    let cron = f.cron.ok_or_else(|| {
        key(
            "cron",
            "missing: for example \"0 3 * * SUN\" (minute hour day-of-month month day-of-week)"
                .into(),
        )
    })?;
    let level =
        Level::parse(f.level.as_deref().unwrap_or("standard")).map_err(|e| key("level", e))?;
    let s = Schedule {
        name,
        cron,
        tz: f.tz,
        level,
        until: f
            .until
            .map(|v| parse_duration(&v))
            .transpose()
            .map_err(|e| key("until", e))?,
        target_free: f
            .target_free
            .map(|v| parse_free_target(&v))
            .transpose()
            .map_err(|e| key("target_free", e))?,
        build_cache_keep: f
            .build_cache_keep
            .map(|v| parse_free_target(&v))
            .transpose()
            .map_err(|e| key("build_cache_keep", e))?,
    };
    s.validate().map_err(|(k, e)| key(k, e))?;
    Ok(s)
}

/// The TOML file: a `[cleanup]` table (more tables may follow).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    cleanup: PolicyFile,
}

/// TLS to a `tcp://` daemon, read as the docker CLI reads it: on with `--docker.tls-verify` or a
/// non-empty `DOCKER_TLS_VERIFY`; the files from `--docker.cert-path`, else `DOCKER_CERT_PATH`,
/// else `~/.docker`. A local socket needs none. The files must be there at start-up (one line
/// and exit 2 otherwise); their contents are read when bilge connects.
fn docker_tls(g: &GlobalArgs, host: &DockerHost) -> Result<Option<PathBuf>> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let on = g.docker_tls_verify || env("DOCKER_TLS_VERIFY").is_some();
    if !on || matches!(host, DockerHost::Unix(_)) {
        return Ok(None);
    }
    let dir = match (&g.docker_cert_path, env("DOCKER_CERT_PATH")) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => PathBuf::from(d),
        (None, None) => match env("HOME") {
            Some(h) => PathBuf::from(h).join(".docker"),
            None => {
                return Err(Error::config(
                    "--docker.cert-path",
                    "TLS to the daemon needs the folder of ca.pem, cert.pem and key.pem (no $HOME to find ~/.docker)",
                ));
            }
        },
    };
    for f in TLS_FILES {
        let p = dir.join(f);
        if !p.is_file() {
            return Err(Error::config(
                "--docker.cert-path",
                format!(
                    "TLS to the daemon needs {} (ca.pem, cert.pem and key.pem, as the docker CLI's DOCKER_CERT_PATH)",
                    p.display()
                ),
            ));
        }
    }
    Ok(Some(dir))
}

fn flag<T>(name: &str, r: std::result::Result<T, String>) -> Result<T> {
    r.map_err(|m| Error::config(name, m))
}

/// `--path.rootfs` and `--path.procfs`: absolute directories that exist.
fn host_paths(
    rootfs: Option<&std::path::Path>,
    procfs: Option<&std::path::Path>,
) -> Result<crate::collect::disk::HostPaths> {
    let dir = |name: &str, p: Option<&std::path::Path>| -> Result<()> {
        let Some(p) = p else { return Ok(()) };
        if !p.is_absolute() {
            return Err(Error::config(
                name,
                format!("{} is not an absolute path", p.display()),
            ));
        }
        if !p.is_dir() {
            return Err(Error::config(
                name,
                format!("{} is not a directory", p.display()),
            ));
        }
        Ok(())
    };
    dir("--path.rootfs", rootfs)?;
    dir("--path.procfs", procfs)?;
    Ok(crate::collect::disk::HostPaths::new(
        rootfs.map(Into::into),
        procfs.map(Into::into),
    ))
}

impl Config {
    /// Validates the shared flags and reads the policy file.
    pub fn from_args(g: &GlobalArgs) -> Result<Config> {
        let host = match &g.docker_host {
            Some(h) => h.clone(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| DEFAULT_HOST.into()),
        };
        let parsed = DockerHost::parse(&host).map_err(|m| Error::config("--docker.host", m))?;
        let tls = docker_tls(g, &parsed)?;
        let timeout = flag("--docker.timeout", parse_duration(&g.docker_timeout))?;
        if timeout.is_zero() {
            return Err(Error::config("--docker.timeout", "must be more than 0s"));
        }
        let regex = |name: &str, s: &str| {
            Regex::new(s).map_err(|e| {
                // regex's messages span several lines; keep start-up errors to one.
                let text = e.to_string();
                let last = text.lines().last().unwrap_or_default();
                let why = last.trim().trim_start_matches("error: ");
                Error::config(name, format!("{s:?} is not a valid regexp: {why}"))
            })
        };
        let policy = match &g.config {
            Some(path) => load_policy(path)?,
            None => Policy::default(),
        };
        let containerd_root = crate::docker::ContainerdRoot::parse(&g.docker_containerd_root)
            .map_err(|m| Error::config("--docker.containerd-root", m))?;
        if g.docker_top_n == 0 {
            return Err(Error::config("--docker.top-n", "must be at least 1"));
        }
        if g.max_projects == 0 {
            return Err(Error::config("--builds.max-projects", "must be at least 1"));
        }
        if g.max_hosts == 0 {
            return Err(Error::config("--builds.max-hosts", "must be at least 1"));
        }
        let host_name = match g.host_name.as_deref().map(str::trim) {
            Some(h) if !h.is_empty() => {
                crate::builds::record::check_host(h)
                    .map_err(|m| Error::config("--host.name", m))?;
                h.to_string()
            }
            _ => own_host_name(),
        };
        let lock_timeout = flag("--lock-timeout", parse_duration(&g.lock_timeout))?;
        let shutdown_grace = flag(
            "--cleanup.shutdown-grace",
            parse_duration(&g.shutdown_grace),
        )?;
        let engine = EngineSettings {
            lock: LockSettings {
                path: g
                    .lock_file
                    .clone()
                    .unwrap_or_else(|| LockSettings::beside(&g.state_path)),
                timeout: lock_timeout,
            },
            shutdown_grace,
        };
        Ok(Config {
            docker: DockerConfig {
                host,
                timeout,
                refresh_interval: Duration::from_secs(60),
                footprint_interval: Duration::from_secs(3600),
                full_refresh_interval: Duration::from_secs(600),
                df_budget: 0.005,
                top_n: g.docker_top_n,
                tls,
                containerd_root,
            },
            filesystem: FilesystemConfig {
                mount_points_exclude: regex(
                    "--collector.filesystem.mount-points-exclude",
                    g.mount_points_exclude
                        .as_deref()
                        .unwrap_or(crate::collect::disk::DEFAULT_MOUNT_POINTS_EXCLUDE),
                )?,
                fs_types_exclude: regex(
                    "--collector.filesystem.fs-types-exclude",
                    g.fs_types_exclude
                        .as_deref()
                        .unwrap_or(crate::collect::disk::DEFAULT_FS_TYPES_EXCLUDE),
                )?,
                forecast_window: crate::collect::forecast::DEFAULT_WINDOW,
                stat_timeout: flag(
                    "--collector.filesystem.stat-timeout",
                    parse_duration(&g.stat_timeout),
                )?,
                interval: Duration::from_secs(2),
                host: host_paths(g.rootfs.as_deref(), g.procfs.as_deref())?,
            },
            state_path: g.state_path.clone(),
            policy,
            engine,
            max_projects: g.max_projects,
            max_hosts: g.max_hosts,
            host_name,
        })
    }

    /// Validates `bilge serve`'s own flags and hands out the server's settings.
    pub fn serve(mut self, s: &ServeArgs) -> Result<ServeSettings> {
        self.docker.refresh_interval = flag(
            "--docker.refresh-interval",
            parse_duration(&s.docker_refresh_interval),
        )?;
        if self.docker.refresh_interval < Duration::from_millis(100) {
            return Err(Error::config(
                "--docker.refresh-interval",
                "must be at least 100ms",
            ));
        }
        self.docker.full_refresh_interval = flag(
            "--docker.full-refresh-interval",
            parse_duration(&s.docker_full_refresh_interval),
        )?;
        self.docker.df_budget = flag(
            "--docker.df-budget",
            crate::format::parse_share(&s.docker_df_budget),
        )?;
        self.docker.footprint_interval = flag(
            "--docker.footprint-interval",
            parse_duration(&s.docker_footprint_interval),
        )?;
        if !self.docker.footprint_interval.is_zero()
            && self.docker.footprint_interval < Duration::from_secs(1)
        {
            return Err(Error::config(
                "--docker.footprint-interval",
                "must be 0 (off) or at least 1s",
            ));
        }
        self.filesystem.interval = flag(
            "--collector.filesystem.interval",
            parse_duration(&s.filesystem_interval),
        )?;
        self.filesystem.forecast_window = flag(
            "--collector.filesystem.forecast-window",
            parse_duration(&s.forecast_window),
        )?;
        if self.filesystem.forecast_window < Duration::from_secs(10) {
            return Err(Error::config(
                "--collector.filesystem.forecast-window",
                "must be at least 10s",
            ));
        }
        if self.filesystem.interval < Duration::from_millis(100) {
            return Err(Error::config(
                "--collector.filesystem.interval",
                "must be at least 100ms",
            ));
        }
        let listen = parse_listen(&s.listen_address)?;
        if !s.telemetry_path.starts_with('/') || s.telemetry_path.len() < 2 {
            return Err(Error::config(
                "--web.telemetry-path",
                format!("{:?} must start with / and name a path", s.telemetry_path),
            ));
        }
        let webhook = webhook_settings(s, listen, self.policy.cooldown)?;
        let max_body = flag("--web.max-body", parse_size(&s.max_body))?;
        let timeout = |name: &str, v: &str| -> Result<Duration> {
            let d = flag(name, parse_duration(v))?;
            if d < Duration::from_millis(100) {
                return Err(Error::config(name, "must be at least 100ms"));
            }
            Ok(d)
        };
        let header_timeout = timeout("--web.read-header-timeout", &s.read_header_timeout)?;
        let body_timeout = timeout("--web.body-timeout", &s.body_timeout)?;
        let idle_timeout = timeout("--web.idle-timeout", &s.idle_timeout)?;
        if s.max_connections == 0 {
            return Err(Error::config("--web.max-connections", "must be at least 1"));
        }
        let loaded = match &s.web_config_file {
            Some(p) => crate::web::load(p).map_err(|m| Error::config("--web.config.file", m))?,
            None => crate::web::Loaded::plain(),
        };
        let retention = flag("--state.retention", parse_duration(&s.retention))?;
        if retention < Duration::from_secs(3600) || retention <= self.policy.cooldown {
            return Err(Error::config(
                "--state.retention",
                "must be at least 1h and longer than the policy's cooldown (the cooldown is read back from the kept rows)",
            ));
        }
        Ok(ServeSettings {
            docker: self.docker,
            filesystem: self.filesystem,
            state_path: self.state_path,
            policy: self.policy,
            engine: self.engine,
            retention,
            max_projects: self.max_projects,
            max_hosts: self.max_hosts,
            host_name: self.host_name,
            web: ServeConfig {
                listen,
                telemetry_path: s.telemetry_path.clone(),
                max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
                body_timeout,
            },
            http: WebSettings {
                config_file: s.web_config_file.clone(),
                loaded,
                listen: ListenSettings {
                    max_connections: s.max_connections,
                    header_timeout,
                    idle_timeout,
                    shutdown_grace: SHUTDOWN_GRACE,
                },
            },
            webhook,
        })
    }

    /// Validates `bilge healthcheck`'s flags: where to ask, over what, with which credentials.
    pub fn healthcheck(a: &HealthcheckArgs) -> Result<HealthcheckSettings> {
        let port = match a.listen_address.as_deref().map(str::trim) {
            None | Some("") => 9830,
            Some(l) => parse_listen(l)?.port(),
        };
        let web_config = match &a.web_config_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::config(
                        "--web.config.file",
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                let dir = p.parent().unwrap_or_else(|| Path::new("."));
                Some(
                    crate::web::config::parse(&text, dir)
                        .map_err(|m| Error::config("--web.config.file", m))?,
                )
            }
            None => None,
        };
        let tls = web_config.as_ref().and_then(|c| c.tls.as_ref());
        let trust = match tls {
            Some(plan) => {
                let chain = crate::web::tls::certificates(&plan.cert, "cert")
                    .map_err(|m| Error::config("--web.config.file", m))?;
                match chain.into_iter().next() {
                    Some(c) => Trust::Pinned(c),
                    None => Trust::System,
                }
            }
            None => Trust::System,
        };
        let path = if a.ready { "/-/ready" } else { "/-/healthy" };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = match a.url.as_deref().map(str::trim) {
            None | Some("") => format!("{scheme}://127.0.0.1:{port}{path}"),
            Some(u) => u.to_string(),
        };
        let credentials = match (&a.username, &a.password_file) {
            (None, None) => None,
            (Some(u), Some(p)) => Some((
                u.clone(),
                read_token_file("--healthcheck.password-file", p)?,
            )),
            (Some(_), None) => {
                return Err(Error::config(
                    "--healthcheck.username",
                    "give --healthcheck.password-file with it",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "--healthcheck.password-file",
                    "give --healthcheck.username with it",
                ));
            }
        };
        let identity = match (&a.cert_file, &a.key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let chain = crate::web::tls::certificates(
                    &crate::web::config::Pem::File(c.clone()),
                    "cert",
                )
                .map_err(|m| Error::config("--healthcheck.cert-file", m))?;
                let key = crate::web::tls::private_key(&crate::web::config::Pem::File(k.clone()))
                    .map_err(|m| Error::config("--healthcheck.key-file", m))?;
                Some((chain, key))
            }
            _ => {
                return Err(Error::config(
                    "--healthcheck.cert-file",
                    "give --healthcheck.cert-file and --healthcheck.key-file together",
                ));
            }
        };
        Ok(HealthcheckSettings {
            url,
            trust,
            identity,
            credentials,
        })
    }

    /// Validates `bilge clean`'s flags.
    pub fn clean(a: &CleanArgs) -> Result<CleanOptions> {
        let level = Level::parse(&a.level).map_err(|m| Error::config("--level", m))?;
        let until = a
            .until
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|m| Error::config("--until", m))?;
        let target_free = a
            .target_free
            .as_deref()
            .map(parse_free_target)
            .transpose()
            .map_err(|m| Error::config("--target-free", m))?;
        let min_free = match a.min_free.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(flag("--min-free", parse_free_target(s))?),
        };
        Ok(CleanOptions {
            level,
            until,
            target_free,
            min_free,
            dry_run: a.dry_run,
            yes: a.yes,
            json: a.json,
        })
    }

    /// Validates `--log.level` and `--log.format`.
    pub fn log(g: &GlobalArgs) -> Result<LogConfig> {
        let format = match g.log_format {
            LogFormatArg::Logfmt => LogFormat::Logfmt,
            LogFormatArg::Json => LogFormat::Json,
        };
        LogConfig::new(&g.log_level, format).map_err(|m| Error::config("--log.level", m))
    }
}

impl Config {
    /// Validates `bilge build`'s own flags and returns its settings.
    pub fn build(&self, b: &BuildArgs) -> Result<BuildConfig> {
        let project = match &b.project {
            Some(p) => {
                check_project(p).map_err(|m| Error::config("--project", m))?;
                p.clone()
            }
            None => {
                let cwd = std::env::current_dir().map_err(|e| {
                    Error::config(
                        "--project",
                        format!(
                            "no current directory to name the project after ({e}); give --project"
                        ),
                    )
                })?;
                project_from_dir(&cwd)
            }
        };
        let min_free = match b.min_free.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(flag("--min-free", parse_free_target(s))?),
        };
        let server = match b.server.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(ServerTarget {
                url: parse_server(s)?,
                token: b
                    .server_token_file
                    .as_deref()
                    .map(|p| read_token_file("--server.token-file", p))
                    .transpose()?,
                trust: match &b.server_ca_file {
                    Some(p) => Trust::Roots(
                        crate::web::tls::certificates(
                            &crate::web::config::Pem::File(p.clone()),
                            "CA",
                        )
                        .map_err(|m| Error::config("--server.ca-file", m))?,
                    ),
                    None => Trust::System,
                },
            }),
        };
        if b.command.is_empty() {
            return Err(Error::config(
                "command",
                "give the build command after `--`",
            ));
        }
        Ok(BuildConfig {
            project,
            min_free,
            clean_and_retry: b.clean_and_retry,
            server,
            command: b.command.clone(),
            docker: self.docker.clone(),
            state_path: self.state_path.clone(),
            host_name: self.host_name.clone(),
            running_dir: crate::running::folder_for(&self.engine.lock.path),
        })
    }
}

/// How long connections may finish their requests when `bilge serve` stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Checks `--server`: an `http://` or `https://` URL (`http://` when the scheme is left out);
/// returns it without a trailing slash.
pub fn parse_server(s: &str) -> Result<String> {
    let full = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let bad = |why: &str| Error::config("--server", format!("{s:?} {why}"));
    let url = reqwest::Url::parse(&full).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(bad(&format!(
                "has scheme {other:?}; use https://host:port (or http://)"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("names no host; example: http://127.0.0.1:9830"));
    }
    Ok(full.trim_end_matches('/').to_string())
}

/// The hostname when it is a usable host name, else `localhost` (`--host.name` overrides it).
fn own_host_name() -> String {
    crate::host::hostname()
        .filter(|h| crate::builds::record::check_host(h).is_ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Parses `host:port`, `:port` (every interface) or `[v6]:port`.
pub fn parse_listen(s: &str) -> Result<SocketAddr> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else if s.starts_with("localhost:") {
        s.replacen("localhost", "127.0.0.1", 1)
    } else {
        s.to_string()
    };
    full.parse().map_err(|_| {
        Error::config(
            "--web.listen-address",
            format!("{s:?} is not host:port (examples: :9830, 127.0.0.1:9830)"),
        )
    })
}

/// Validates the webhook's flags: the token file, the alert cap and the relay (which needs a
/// token file and a targets file, and reads its CA file here), and hands out its settings.
fn webhook_settings(
    s: &ServeArgs,
    listen: SocketAddr,
    cooldown: Duration,
) -> Result<WebhookSettings> {
    let tokens = s
        .webhook_token_file
        .as_deref()
        .map(|p| webhook::tokens::load(p).map(Arc::new))
        .transpose()
        .map_err(|m| Error::config(webhook::tokens::FLAG, m))?;
    if s.webhook_max_alerts == 0 {
        return Err(Error::config("--webhook.max-alerts", "must be at least 1"));
    }
    let relay = match (s.webhook_relay, s.webhook_relay_targets.as_deref()) {
        (false, None) if s.webhook_relay_ca_file.is_some() => {
            return Err(Error::config(
                "--webhook.relay-ca-file",
                "is for relays, which are off: add --webhook.relay and --webhook.relay-targets, or drop it",
            ));
        }
        (false, None) => None,
        (false, Some(_)) => {
            return Err(Error::config(
                webhook::targets::FLAG,
                "lists whom to relay to, but relaying is off: add --webhook.relay, or drop it",
            ));
        }
        (true, None) => {
            return Err(Error::config(
                "--webhook.relay",
                "needs --webhook.relay-targets FILE, a Prometheus file_sd file of the fleet members alerts may be relayed to (bilge relays to no one else)",
            ));
        }
        (true, Some(_)) if tokens.is_none() => {
            return Err(Error::config(
                "--webhook.relay",
                "needs --webhook.token-file: without it the webhook is off",
            ));
        }
        (true, Some(path)) => {
            let targets = webhook::targets::load(path)
                .map_err(|m| Error::config(webhook::targets::FLAG, m))?;
            let ca = s
                .webhook_relay_ca_file
                .as_deref()
                .map(webhook::relay::read_ca_file)
                .transpose()
                .map_err(|m| Error::config("--webhook.relay-ca-file", m))?;
            let tls = webhook::relay::client_tls(ca.as_deref())
                .map_err(|m| Error::config("--webhook.relay-ca-file", m))?;
            Some(RelaySettings {
                targets: Arc::new(targets),
                tls: Arc::new(tls),
            })
        }
    };
    Ok(WebhookSettings {
        tokens,
        identities: Identities::new(&s.webhook_instance, listen),
        relay,
        cooldown,
        max_alerts: s.webhook_max_alerts,
    })
}

/// Reads the token file given by `flag` (named in errors): one line, surrounding whitespace
/// ignored, never empty.
pub fn read_token_file(flag: &str, path: &Path) -> Result<String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| Error::config(flag, format!("cannot read {}: {e}", path.display())))?;
    let token = raw.trim().to_string();
    if token.is_empty() {
        return Err(Error::config(flag, format!("{} is empty", path.display())));
    }
    Ok(token)
}

/// Reads the TOML policy file and validates every value.
pub fn load_policy(path: &Path) -> Result<Policy> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
        path: path.into(),
        message: e.to_string(),
    })?;
    parse_policy(&text).map_err(|message| Error::ConfigFile {
        path: path.into(),
        message,
    })
}

/// Parses the TOML text of a policy file (pure; see [`load_policy`]).
pub fn parse_policy(text: &str) -> std::result::Result<Policy, String> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let f = file.cleanup;
    let mut p = Policy::default();
    let key = |k: &str, e: String| format!("cleanup.{k}: {e}");
    if let Some(v) = f.until {
        p.until = parse_duration(&v).map_err(|e| key("until", e))?;
    }
    if let Some(v) = f.protect_labels {
        if v.iter().any(|l| l.trim().is_empty() || l.starts_with('=')) {
            return Err(key(
                "protect_labels",
                "each entry is `key` or `key=value`".into(),
            ));
        }
        p.protect_labels = v;
    }
    if let Some(v) = f.max_level {
        p.max_level = Level::parse(&v).map_err(|e| key("max_level", e))?;
    }
    if let Some(v) = f.allow_volumes {
        p.allow_volumes = v;
    }
    if let Some(v) = f.target_free {
        p.target_free = parse_free_target(&v).map_err(|e| key("target_free", e))?;
    }
    if let Some(v) = f.cooldown {
        p.cooldown = parse_duration(&v).map_err(|e| key("cooldown", e))?;
    }
    if let Some(v) = f.low_watermark {
        p.low_watermark = Some(parse_free_target(&v).map_err(|e| key("low_watermark", e))?);
    }
    if let Some(v) = f.high_watermark {
        p.high_watermark = Some(parse_free_target(&v).map_err(|e| key("high_watermark", e))?);
    }
    // A budget is a size or a share of the data root's filesystem: the syntax of a free target.
    if let Some(v) = f.build_cache_keep {
        p.build_cache_keep = Some(parse_free_target(&v).map_err(|e| key("build_cache_keep", e))?);
    }
    if let Some(v) = f.images_keep {
        p.images_keep = Some(parse_free_target(&v).map_err(|e| key("images_keep", e))?);
    }
    if let Some(v) = f.forecast_watermark {
        let d = parse_duration(&v).map_err(|e| key("forecast_watermark", e))?;
        if d.is_zero() {
            return Err(key("forecast_watermark", "must be more than 0s".into()));
        }
        p.forecast_watermark = Some(d);
    }
    if let Some(v) = f.allow_log_truncation {
        p.allow_log_truncation = v;
    }
    if let Some(v) = f.log_truncate_over {
        p.log_truncate_over = parse_size(&v).map_err(|e| key("log_truncate_over", e))?;
    }
    if let Some(v) = f.emergency_free {
        p.emergency_free = parse_free_target(&v).map_err(|e| key("emergency_free", e))?;
    }
    if let Some(v) = f.catch_up_delay {
        p.catch_up_delay = parse_duration(&v).map_err(|e| key("catch_up_delay", e))?;
    }
    if f.schedule.len() > crate::cleanup::schedule::MAX_SCHEDULES {
        return Err(key(
            "schedule",
            format!(
                "{} schedules; at most {}",
                f.schedule.len(),
                crate::cleanup::schedule::MAX_SCHEDULES
            ),
        ));
    }
    for (i, s) in f.schedule.into_iter().enumerate() {
        let s = parse_schedule(i, s)?;
        if p.schedules.iter().any(|o| o.name == s.name) {
            return Err(format!(
                "cleanup.schedule[{i}].name: {:?} is the name of an earlier schedule",
                s.name
            ));
        }
        p.schedules.push(s);
    }
    match (p.low_watermark, p.high_watermark) {
        (None, Some(_)) => return Err("cleanup.high_watermark needs cleanup.low_watermark".into()),
        (Some(low), None) => p.high_watermark = Some(low),
        _ => {}
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FreeTarget;

    #[test]
    fn listen_addresses_accept_the_exporter_forms() {
        assert_eq!(parse_listen(":9830").ok(), "0.0.0.0:9830".parse().ok());
        assert_eq!(parse_listen("127.0.0.1:1").ok(), "127.0.0.1:1".parse().ok());
        assert_eq!(
            parse_listen("localhost:80").ok(),
            "127.0.0.1:80".parse().ok()
        );
        assert!(parse_listen("9830").is_err());
    }

    #[test]
    fn server_urls_are_http_or_https_with_a_host() {
        assert_eq!(
            parse_server("127.0.0.1:9830/").ok().as_deref(),
            Some("http://127.0.0.1:9830")
        );
        assert_eq!(
            parse_server("http://bilge.internal").ok().as_deref(),
            Some("http://bilge.internal")
        );
        assert_eq!(
            parse_server("https://bilge.internal:9830/").ok().as_deref(),
            Some("https://bilge.internal:9830")
        );
        assert!(parse_server("ftp://x").is_err());
        assert!(parse_server("http://").is_err());
    }

    fn args(level: &str) -> CleanArgs {
        CleanArgs {
            level: level.into(),
            until: None,
            target_free: None,
            min_free: None,
            dry_run: false,
            yes: false,
            json: false,
        }
    }

    #[test]
    fn bad_clean_flags_name_the_flag() {
        let e = Config::clean(&args("everything")).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("--level"), "{e}");
        let e = Config::clean(&CleanArgs {
            until: Some("soon".into()),
            ..args("standard")
        })
        .unwrap_err();
        assert!(e.to_string().contains("--until"), "{e}");
        let e = Config::clean(&CleanArgs {
            target_free: Some("120%".into()),
            ..args("standard")
        })
        .unwrap_err();
        assert!(e.to_string().contains("--target-free"), "{e}");
        let e = Config::clean(&CleanArgs {
            min_free: Some("lots".into()),
            ..args("standard")
        })
        .unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("--min-free"), "{e}");
    }

    #[test]
    fn clean_min_free_takes_a_size_or_a_share_and_empty_means_none() {
        let opts = |v: &str| {
            Config::clean(&CleanArgs {
                min_free: Some(v.into()),
                ..args("standard")
            })
            .unwrap()
            .min_free
        };
        assert_eq!(opts("10GiB"), Some(FreeTarget::Bytes(10 << 30)));
        assert_eq!(opts(" 15% "), Some(FreeTarget::Percent(15.0)));
        assert_eq!(opts(""), None);
    }

    /// `bilge serve ARGS` assembled, or the error that stops start-up.
    fn serve(args: &[&str]) -> Result<ServeSettings> {
        use clap::Parser as _;
        let all = [&["bilge", "serve"], args].concat();
        let cli = crate::cli::Cli::try_parse_from(all)
            .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
        let crate::cli::Command::Serve(s) = &cli.command else {
            unreachable!("parsed as serve")
        };
        Config::from_args(&cli.global)?.serve(s)
    }

    /// A file `name` holding `text`, in a directory of this test run.
    fn file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("bilge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    #[test]
    fn relay_without_a_targets_file_is_refused_and_says_what_to_add() {
        let token = file("relay-token", "t\n");
        let e = serve(&["--webhook.token-file", &token, "--webhook.relay"]).unwrap_err();
        assert!(e.is_usage(), "{e}");
        let line = e.to_string();
        assert!(
            line.contains("--webhook.relay-targets") && !line.contains('\n'),
            "{line}"
        );
        let targets = file("relay-targets.json", r#"[{"targets": ["web2:9830"]}]"#);
        let e = serve(&[
            "--webhook.token-file",
            &token,
            "--webhook.relay-targets",
            &targets,
        ]);
        assert!(e.unwrap_err().to_string().contains("add --webhook.relay"));
        let e = serve(&["--webhook.relay", "--webhook.relay-targets", &targets]).unwrap_err();
        assert!(e.to_string().contains("--webhook.token-file"), "{e}");
        let ok = serve(&[
            "--webhook.token-file",
            &token,
            "--webhook.relay",
            "--webhook.relay-targets",
            &targets,
        ])
        .unwrap();
        let relay = ok.webhook.relay.unwrap();
        assert!(relay.targets.current().get("web2:9830").is_some());
    }

    #[test]
    fn a_bad_targets_or_ca_file_stops_start_up_naming_its_flag() {
        let token = file("bad-token", "t\n");
        let relay = ["--webhook.token-file", &token, "--webhook.relay"];
        let bad = file("bad-targets.yml", "- targets: [user@web2:9830]\n");
        let e = serve(&[&relay[..], &["--webhook.relay-targets", &bad]].concat()).unwrap_err();
        assert!(
            e.to_string().contains("--webhook.relay-targets")
                && e.to_string().contains("user@web2"),
            "{e}"
        );
        let txt = file("targets.txt", "[]");
        let e = serve(&[&relay[..], &["--webhook.relay-targets", &txt]].concat()).unwrap_err();
        assert!(e.to_string().contains(".json, .yml or .yaml"), "{e}");
        let good = file("good-targets.yml", "[]\n");
        let ca = file("ca.pem", "no certificate here\n");
        let e = serve(
            &[
                &relay[..],
                &[
                    "--webhook.relay-targets",
                    &good,
                    "--webhook.relay-ca-file",
                    &ca,
                ],
            ]
            .concat(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--webhook.relay-ca-file"), "{e}");
        let e = serve(&["--webhook.relay-ca-file", &ca]).unwrap_err();
        assert!(e.to_string().contains("relays, which are off"), "{e}");
    }

    #[test]
    fn a_host_name_that_is_no_host_name_or_a_zero_host_cap_stops_start_up_naming_the_flag() {
        for bad in ["a host", "x/y", "ci-1;rm", &"h".repeat(254)] {
            let e = serve(&[&format!("--host.name={bad}")]).unwrap_err();
            assert!(e.to_string().contains("--host.name"), "{bad:?}: {e}");
        }
        let e = serve(&["--builds.max-hosts=0"]).unwrap_err();
        assert!(e.to_string().contains("--builds.max-hosts"), "{e}");
        let ok = serve(&["--host.name=ci-7.example:1"]).unwrap();
        assert_eq!(ok.host_name, "ci-7.example:1");
        // Without the flag, the hostname (or localhost when it is no usable name).
        assert!(!serve(&[]).unwrap().host_name.is_empty());
    }

    #[test]
    fn an_empty_token_file_stops_start_up_and_a_file_of_two_tokens_is_taken() {
        let empty = file("empty-token", "\n \n");
        let e = serve(&["--webhook.token-file", &empty]).unwrap_err();
        assert!(
            e.to_string().contains("--webhook.token-file") && e.to_string().contains("no token"),
            "{e}"
        );
        let two = file("two-tokens", "old\nnew\n");
        let ok = serve(&["--webhook.token-file", &two]).unwrap();
        assert_eq!(ok.webhook.tokens.unwrap().current().len(), 2);
    }

    #[test]
    fn the_alert_cap_defaults_to_the_bundled_alertmanager_max_alerts() {
        let s = serve(&[]).unwrap();
        assert_eq!(s.webhook.max_alerts, webhook::DEFAULT_MAX_ALERTS);
        let bundled = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/alertmanager.yml"),
        )
        .unwrap();
        assert!(
            bundled.contains(&format!("max_alerts: {}", webhook::DEFAULT_MAX_ALERTS)),
            "alerts/alertmanager.yml must set max_alerts: {} on bilge's receiver",
            webhook::DEFAULT_MAX_ALERTS
        );
        let e = serve(&["--webhook.max-alerts", "0"]).unwrap_err();
        assert!(e.to_string().contains("--webhook.max-alerts"), "{e}");
    }

    #[test]
    fn an_empty_policy_file_gives_the_safe_defaults() {
        assert_eq!(parse_policy(""), Ok(Policy::default()));
    }

    #[test]
    fn a_policy_file_sets_every_key() {
        let p = parse_policy(
            r#"[cleanup]
until = "1h"
protect_labels = ["keep", "tier=prod"]
max_level = "aggressive"
allow_volumes = true
target_free = "20%"
cooldown = "10m"
low_watermark = "10%"
high_watermark = "2GiB"
build_cache_keep = "20GiB"
images_keep = "5%"
emergency_free = "1GiB"
forecast_watermark = "2h"
allow_log_truncation = true
log_truncate_over = "512MiB"
"#,
        );
        let Ok(p) = p else { panic!("{p:?}") };
        assert_eq!(p.build_cache_keep, Some(FreeTarget::Bytes(20 << 30)));
        assert_eq!(p.images_keep, Some(FreeTarget::Percent(5.0)));
        assert_eq!(p.emergency_free, FreeTarget::Bytes(1 << 30));
        assert_eq!(p.forecast_watermark, Some(Duration::from_secs(7200)));
        assert!(p.allow_log_truncation);
        assert_eq!(p.log_truncate_over, 512 << 20);
        assert_eq!(p.until, Duration::from_secs(3600));
        assert_eq!(p.max_level, Level::UnusedVolumes);
        assert!(p.allow_volumes);
        assert_eq!(p.target_free, FreeTarget::Percent(20.0));
        assert_eq!(p.low_watermark, Some(FreeTarget::Percent(10.0)));
        assert_eq!(p.high_watermark, Some(FreeTarget::Bytes(2 << 30)));
    }

    #[test]
    fn a_typo_in_the_policy_file_names_the_key() {
        let e = parse_policy("[cleanup]\nuntill = \"1h\"\n").unwrap_err();
        assert!(e.contains("untill"), "{e}");
        let e = parse_policy("[cleanup]\nmax_level = \"all\"\n").unwrap_err();
        assert!(e.contains("cleanup.max_level"), "{e}");
        let e = parse_policy("[cleanup]\nbuild_cache_keep = \"lots\"\n").unwrap_err();
        assert!(e.contains("cleanup.build_cache_keep"), "{e}");
        let e = parse_policy("[cleanup]\nimages_keep = \"150%\"\n").unwrap_err();
        assert!(e.contains("cleanup.images_keep"), "{e}");
    }

    #[test]
    fn schedules_are_read_with_their_overrides_and_a_bad_one_names_its_key() {
        let p = parse_policy(
            "[cleanup]\ncatch_up_delay = \"1m\"\n\n[[cleanup.schedule]]\nname = \"weekly\"\ncron = \"0 3 * * SUN\"\nlevel = \"standard\"\nuntil = \"7d\"\n\n[[cleanup.schedule]]\ncron = \"30 4 * * *\"\nlevel = \"build_cache\"\ntz = \"UTC\"\nbuild_cache_keep = \"10GiB\"\n",
        )
        .unwrap();
        assert_eq!(p.catch_up_delay, Duration::from_secs(60));
        assert_eq!(p.schedules.len(), 2);
        assert_eq!(p.schedules[0].name, "weekly");
        assert_eq!(p.schedules[0].until, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(p.schedules[1].name, "schedule-1");
        assert_eq!(p.schedules[1].level, Level::BuildCache);
        assert_eq!(
            p.schedules[1].build_cache_keep,
            Some(FreeTarget::Bytes(10 << 30))
        );
        for (entry, key) in [
            ("cron = \"0 25 * * *\"", "cleanup.schedule[0].cron"),
            (
                "cron = \"0 3 * * *\"\nlevel = \"everything\"",
                "cleanup.schedule[0].level",
            ),
            (
                "cron = \"0 3 * * *\"\ntz = \"Europe/Atlantis\"",
                "cleanup.schedule[0].tz",
            ),
            ("level = \"standard\"", "cleanup.schedule[0].cron"),
            (
                "cron = \"0 3 * * *\"\nname = \"a b\"",
                "cleanup.schedule[0].name",
            ),
            (
                "cron = \"0 3 * * *\"\nuntil = \"soon\"",
                "cleanup.schedule[0].until",
            ),
        ] {
            let e = parse_policy(&format!("[[cleanup.schedule]]\n{entry}\n")).unwrap_err();
            assert!(e.starts_with(key), "{entry}: {e}");
        }
        let twice = "[[cleanup.schedule]]\nname = \"x\"\ncron = \"@daily\"\n";
        let e = parse_policy(&format!("{twice}{twice}")).unwrap_err();
        assert!(e.contains("earlier schedule"), "{e}");
    }
}
