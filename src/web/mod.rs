//! The web layer under the router: the web configuration file (`--web.config.file`, in
//! exporter-toolkit's format: [`config`]), TLS ([`tls`]), basic auth ([`auth`]) and the listener
//! that serves HTTP/1.1 over plain TCP or TLS with bounded connections and timeouts ([`listen`]).
//!
//! [`Live`] holds the configuration in force and re-reads it when the file, or a certificate, key
//! or CA file it names, changes (checked once a second): new connections get the new certificate,
//! new requests the new users, with no restart. A file that turns bad is logged once and the last
//! good configuration stays; a bad file at start-up stops start-up instead ([`load`]).

pub mod auth;
pub mod config;
pub mod health;
pub mod listen;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

pub use self::config::WebConfig;
use crate::sync::{lock, read, write};

/// The web layer's settings for `bilge serve`.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// `--web.config.file`, re-read on change.
    pub config_file: Option<PathBuf>,
    /// The configuration read from it at start-up (plain HTTP without a file).
    pub loaded: Loaded,
    /// The listener's bounds.
    pub listen: listen::ListenSettings,
}

/// How often [`Live::watch`] looks at the files.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A web configuration with its certificates read: what the listener serves.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checked file.
    pub config: WebConfig,
    /// The TLS server configuration, when the file sets up TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The files it was made from (the config file, certificate, key, client CA).
    files: Vec<PathBuf>,
}

impl Loaded {
    /// Plain HTTP without users: what bilge serves without `--web.config.file`.
    pub fn plain() -> Loaded {
        Loaded {
            config: WebConfig::default(),
            tls: None,
            files: Vec::new(),
        }
    }

    /// Reads the certificates `config` names (`file`: the config file itself, watched too).
    pub fn from_config(config: WebConfig, file: Option<&Path>) -> Result<Loaded, String> {
        let mut files: Vec<PathBuf> = file.map(Path::to_path_buf).into_iter().collect();
        let tls = match &config.tls {
            Some(plan) => {
                files.extend(
                    [Some(&plan.cert), Some(&plan.key), plan.client_ca.as_ref()]
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.path().map(Path::to_path_buf)),
                );
                Some(Arc::new(tls::server_config(plan)?))
            }
            None => None,
        };
        Ok(Loaded { config, tls, files })
    }

    /// Whether basic auth is on.
    pub fn has_users(&self) -> bool {
        !self.config.users.is_empty()
    }
}

/// Reads, checks and loads the web configuration file at `path`.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let config = config::parse(&text, dir)?;
    Loaded::from_config(config, Some(path))
}

/// What identifies one version of a file: its modification time, size and inode.
type Stamp = Option<(SystemTime, u64, u64)>;

/// The stamps of `files`, in order (`None` for a file that cannot be stat'ed).
fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

/// The web configuration in force, and the basic-auth checker that outlives its reloads.
#[derive(Debug)]
pub struct Live {
    /// The file to re-read; `None`: the configuration is fixed.
    path: Option<PathBuf>,
    /// The configuration in force.
    current: RwLock<Arc<Loaded>>,
    /// The stamps of its files when last looked at.
    seen: Mutex<Vec<Stamp>>,
    /// Checks basic-auth credentials.
    pub auth: auth::Authenticator,
}

impl Live {
    /// Serves `loaded`, re-reading `path` when it (or a file it names) changes.
    pub fn new(path: Option<PathBuf>, loaded: Loaded) -> Live {
        let seen = stamps(&loaded.files);
        Live {
            path,
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(seen),
            auth: auth::Authenticator::new(),
        }
    }

    /// A fixed configuration (tests, and serve without a file).
    pub fn fixed(loaded: Loaded) -> Live {
        Live::new(None, loaded)
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Loaded> {
        read(&self.current).clone()
    }

    /// Re-reads the configuration if any of its files changed since the last look. `None`:
    /// nothing changed; `Some(Ok)`: the new one is in force; `Some(Err)`: it is bad and the last
    /// good one stays. Blocking (stats and reads files).
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let path = self.path.as_ref()?;
        let files = self.current().files.clone();
        let now = stamps(&files);
        {
            let mut seen = lock(&self.seen);
            if *seen == now {
                return None;
            }
            // Remembered before reading, so a bad version is reported once, and a change made
            // while it is read is seen on the next look.
            *seen = now;
        }
        match load(path) {
            Ok(loaded) => {
                let seen = stamps(&loaded.files);
                *write(&self.current) = Arc::new(loaded);
                *lock(&self.seen) = seen;
                Some(Ok(()))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// Looks for changes every [`RELOAD_CHECK_INTERVAL`] until `cancel`, logging each outcome.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        if self.path.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                Ok(None) => {}
                Ok(Some(Ok(()))) => {
                    let c = self.current();
                    tracing::info!(
                        tls = c.tls.is_some(),
                        users = c.config.users.len(),
                        "web config reloaded (--web.config.file)"
                    );
                }
                Ok(Some(Err(e))) => tracing::warn!(
                    error = %e,
                    "the changed web config is not usable; the last good one stays in force (--web.config.file)"
                ),
                Err(e) => tracing::warn!(error = %e, "web config check ended abnormally"),
            }
        }
    }
}
