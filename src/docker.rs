//! The edge to the Docker Engine. bollard does the calls; `/system/df` is read raw because its
//! answer changed shape across API versions (arrays up to 1.51, per-type summary objects with
//! `Items` from 1.52) and bollard's model only knows the newer one. Everything is converted to
//! the plain structs below before it leaves this module.
//!
//! The cleanup engine reaches Docker only through [`PruneEdge`], which [`DockerApi`] implements:
//! prune and remove calls with typed answers ([`Reclaimed`], [`Removal`]) and no bollard types.
//! Errors keep the daemon's HTTP status ([`Error::docker_status`]), so callers tell an object in
//! use (409) or gone (404) from a failure without reading messages.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    PruneBuildOptions, PruneContainersOptions, PruneImagesOptions, RemoveContainerOptions,
    RemoveImageOptions, RemoveVolumeOptions,
};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where a Docker daemon listens: `--docker.host` parsed once, for every part that connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    /// `unix:///path/to/docker.sock`.
    Unix(String),
    /// `tcp://host:port` (or `http://host:port`): the `host:port` part.
    Tcp(String),
}

impl DockerHost {
    /// Parses `unix:///path`, `tcp://host:port` or `http://host:port`; the error says what fits.
    pub fn parse(s: &str) -> std::result::Result<DockerHost, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!(
                    "{s:?} names no socket path (example: unix:///var/run/docker.sock)"
                ));
            }
            return Ok(DockerHost::Unix(path.to_string()));
        }
        let rest = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"));
        match rest.map(|r| r.trim_end_matches('/')) {
            Some(addr) if !addr.is_empty() => Ok(DockerHost::Tcp(addr.to_string())),
            Some(_) => Err(format!(
                "{s:?} names no host:port (example: tcp://127.0.0.1:2375)"
            )),
            None => Err(format!("{s:?} must start with unix://, tcp:// or http://")),
        }
    }

    /// Whether the daemon runs on this machine, so that its data root can be stat'ed here.
    pub fn is_local(&self) -> bool {
        match self {
            DockerHost::Unix(_) => true,
            DockerHost::Tcp(addr) => ["127.", "localhost:", "[::1]:"]
                .iter()
                .any(|p| addr.starts_with(p)),
        }
    }
}

/// Where Docker listens when neither `--docker.host` nor `$DOCKER_HOST` says.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Where the Docker daemon is and how patiently to talk to it.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`.
    pub host: String,
    /// Longest time one API call may take.
    pub timeout: Duration,
    /// Time between two collections (serve only).
    pub refresh_interval: Duration,
    /// Time between two footprint measurements (serve only; zero: off).
    pub footprint_interval: Duration,
    /// Longest time between two full `/system/df` collections; the ones between ask only what
    /// Docker's events say changed (serve only; zero: every collection is full).
    pub full_refresh_interval: Duration,
    /// The largest share of the time bilge keeps the daemon computing `/system/df` answers, in
    /// (0, 1] (serve only; 1: no bound).
    pub df_budget: f64,
    /// How many largest images/volumes/logs to export.
    pub top_n: usize,
    /// TLS to a `tcp://` daemon: the folder with `ca.pem`, `cert.pem` and `key.pem`, as the
    /// docker CLI's `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` give it. `None`: plain.
    pub tls: Option<std::path::PathBuf>,
    /// The containerd root measured beside the data root (containerd image store only).
    pub containerd_root: ContainerdRoot,
}

/// The files of a TLS-verified `tcp://` daemon in `DOCKER_CERT_PATH`, as the docker CLI names them.
pub const TLS_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

/// The client TLS of a `tcp://` daemon, as `docker --tlsverify` does it: the daemon's
/// certificate is verified against `ca.pem` only (not the system's roots, so no public CA can
/// stand in for it), for the host name or IP of `--docker.host`, and bilge presents
/// `cert.pem`/`key.pem`.
pub fn docker_tls(dir: &std::path::Path) -> std::result::Result<rustls::ClientConfig, String> {
    use crate::web::config::Pem;
    use crate::web::tls;
    let [ca, cert, key] = TLS_FILES.map(|f| Pem::File(dir.join(f)));
    let roots = tls::root_store(tls::certificates(&ca, "ca")?)
        .map_err(|e| format!("{}: {e}", ca.describe("ca")))?;
    let chain = tls::certificates(&cert, "cert")?;
    let key = tls::private_key(&key)?;
    rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} does not match {}: {e}",
                cert.describe("cert"),
                TLS_FILES[2]
            )
        })
}

/// The name a `host:port` daemon address is verified as.
fn server_name(addr: &str) -> Result<rustls_pki_types::ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Error::docker(format!("{addr}: not a name TLS can verify: {e}")))
}

/// A TLS connection to a `tcp://` daemon.
async fn tls_connect(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    addr: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = server_name(addr)?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Error::docker_from(format!("{addr}: {e}"), e))?;
    tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| Error::docker_from(format!("{addr}: TLS: {e}"), e))
}

/// bollard over [`tls_connect`]: one connection per request (bollard's own clients keep none
/// either), the request sent in origin form with the daemon's address as `Host`.
fn tls_client(tls: std::sync::Arc<rustls::ClientConfig>, addr: &str, secs: u64) -> Result<Docker> {
    let target = addr.to_string();
    let transport = move |req: bollard::BollardRequest| {
        let tls = tls.clone();
        let addr = target.clone();
        Box::pin(async move {
            let fail = |e: Error| bollard::errors::Error::IOError {
                err: std::io::Error::other(e.to_string()),
            };
            let stream = tls_connect(&tls, &addr).await.map_err(fail)?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| fail(Error::docker_from(e.to_string(), e)))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "docker TLS connection closed");
                }
            });
            let (mut parts, body) = req.into_parts();
            if let Some(pq) = parts.uri.path_and_query().cloned() {
                parts.uri = hyper::Uri::from(pq);
            }
            if let Ok(host) = hyper::header::HeaderValue::from_str(&addr) {
                parts.headers.insert(hyper::header::HOST, host);
            }
            sender
                .send_request(hyper::Request::from_parts(parts, body))
                .await
                .map_err(bollard::errors::Error::from)
        })
    };
    Ok(Docker::connect_with_custom_transport(
        transport,
        Some(format!("https://{addr}")),
        secs,
        bollard::API_DEFAULT_VERSION,
    )?)
}

/// What the daemon says about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DockerInfo {
    /// Engine version, e.g. `20.10.24`.
    pub version: String,
    /// The API version bilge negotiated, e.g. `1.41`.
    pub api_version: String,
    /// Storage driver, e.g. `overlay2`.
    pub storage_driver: String,
    /// `DockerRootDir`, e.g. `/var/lib/docker`.
    pub data_root: String,
    /// Whether images live in the containerd image store (the daemon's `DriverStatus` names
    /// `io.containerd.snapshotter.v1`): the default for fresh installs from Docker 29 on.
    pub containerd_store: bool,
    /// The containerd socket the daemon uses (`Containerd.Address`, API 1.46 and later).
    pub containerd_address: Option<String>,
}

/// Where containerd keeps its data when it runs on its own (its `root` default).
pub const SYSTEM_CONTAINERD_ROOT: &str = "/var/lib/containerd";
/// The sockets of a containerd that runs on its own (a system service), as the daemon's
/// `Containerd.Address` names them. A dockerd that starts its own containerd names a socket
/// under its exec root instead, and that containerd's root is under the data root.
pub const SYSTEM_CONTAINERD_SOCKETS: [&str; 2] = [
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
];

/// `--docker.containerd-root`: which containerd root holds the daemon's images when they live
/// in the containerd image store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ContainerdRoot {
    /// [`SYSTEM_CONTAINERD_ROOT`] when the daemon uses a system containerd's socket.
    #[default]
    Auto,
    /// Never measure one.
    Off,
    /// This folder, whenever the daemon uses the containerd image store.
    At(std::path::PathBuf),
}

impl ContainerdRoot {
    /// Parses the flag: `auto`, `none`, or an absolute path.
    pub fn parse(s: &str) -> std::result::Result<ContainerdRoot, String> {
        match s.trim() {
            "" | "auto" => Ok(ContainerdRoot::Auto),
            "none" => Ok(ContainerdRoot::Off),
            p if p.starts_with('/') => Ok(ContainerdRoot::At(p.into())),
            p => Err(format!("{p:?} is not an absolute path (or auto, or none)")),
        }
    }

    /// The containerd root to measure beside the data root of a daemon that says `info`
    /// (pure): none with the classic image store, whose images are under the data root.
    pub fn resolve(&self, info: &DockerInfo) -> Option<std::path::PathBuf> {
        if !info.containerd_store {
            return None;
        }
        match self {
            ContainerdRoot::Off => None,
            ContainerdRoot::At(p) => Some(p.clone()),
            ContainerdRoot::Auto => info
                .containerd_address
                .as_deref()
                .filter(|a| SYSTEM_CONTAINERD_SOCKETS.contains(a))
                .map(|_| SYSTEM_CONTAINERD_ROOT.into()),
        }
    }
}

/// Whether a daemon's `DriverStatus` says its images live in the containerd image store.
pub fn is_containerd_store(driver_status: &[Vec<String>]) -> bool {
    driver_status.iter().any(|kv| {
        kv.first().map(String::as_str) == Some("driver-type")
            && kv.get(1).map(String::as_str) == Some("io.containerd.snapshotter.v1")
    })
}

/// One image as `/system/df` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Image {
    /// `sha256:…`.
    pub id: String,
    /// Tags; empty for a dangling image.
    pub repo_tags: Vec<String>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Total size including shared layers.
    pub size: i64,
    /// Bytes shared with other images (-1 when unknown).
    pub shared_size: i64,
    /// Containers using the image (-1 when unknown).
    pub containers: i64,
    /// Image labels.
    pub labels: HashMap<String, String>,
}

impl Image {
    /// True when the image has no tag (Docker's `dangling=true`).
    pub fn is_dangling(&self) -> bool {
        self.repo_tags.is_empty() || self.repo_tags.iter().all(|t| t == "<none>:<none>")
    }

    /// Bytes only this image holds (what removing it frees); never negative, and never an
    /// overflow whatever the daemon reported.
    pub fn unique_size(&self) -> i64 {
        self.size.saturating_sub(self.shared_size.max(0)).max(0)
    }

    /// A bounded, readable name: the first tag, else the short id.
    pub fn display_name(&self) -> String {
        match self.repo_tags.iter().find(|t| *t != "<none>:<none>") {
            Some(t) => t.clone(),
            None => format!("<none>@{}", short_id(&self.id)),
        }
    }
}

/// One container as `/system/df` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// The image id it runs.
    pub image_id: String,
    /// `running`, `exited`, `created`, …
    pub state: String,
    /// Bytes in its writable layer (-1 when unknown).
    pub size_rw: i64,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Container labels.
    pub labels: HashMap<String, String>,
    /// Names of the volumes it mounts (empty when the daemon does not say).
    pub volumes: Vec<String>,
}

impl Container {
    /// Active as `docker system df` counts it: running, paused or restarting.
    pub fn is_active(&self) -> bool {
        ["running", "paused", "restarting"]
            .iter()
            .any(|s| self.state.contains(s))
    }
}

/// One volume as `/system/df` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Volume {
    /// Volume name.
    pub name: String,
    /// Bytes used (-1 when the driver cannot tell).
    pub size: i64,
    /// Containers referencing it (-1 when unknown).
    pub ref_count: i64,
    /// Volume labels.
    pub labels: HashMap<String, String>,
    /// Creation time, if reported.
    pub created_at: Option<DateTime<Utc>>,
    /// True for anonymous volumes (64 hex characters, no name given).
    pub anonymous: bool,
}

/// One BuildKit build cache record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BuildCacheRecord {
    /// Record id.
    pub id: String,
    /// `regular`, `exec.cachemount`, `source.local`, …
    pub kind: String,
    /// In use by a running build.
    pub in_use: bool,
    /// Shared with another record (its bytes are counted there).
    pub shared: bool,
    /// Bytes.
    pub size: i64,
    /// Created.
    pub created_at: Option<DateTime<Utc>>,
    /// Last used (None when never used since creation).
    pub last_used_at: Option<DateTime<Utc>>,
    /// The records it was built on (`Parents`, or `Parent` before API 1.42), at most
    /// [`MAX_PARENTS`]: BuildKit removes a record only once nothing is built on it.
    pub parents: Vec<String>,
}

/// The longest key [`image_key`] gives: a longer reference is not recorded.
pub const MAX_IMAGE_KEY: usize = 256;

/// The key of an image reference as an event names it: `id:<first 12 hex digits>` for an id
/// (`sha256:…`, or 12 to 64 hex digits), else the reference with `:latest` when it names no
/// tag or digest. `None` for an empty or oversized reference.
pub fn image_key(reference: &str) -> Option<String> {
    let r = reference.trim();
    if r.is_empty() || r.len() > MAX_IMAGE_KEY || r.contains(char::is_whitespace) {
        return None;
    }
    let hex = r.strip_prefix("sha256:").unwrap_or(r);
    let is_hex = hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && (r.starts_with("sha256:") || hex.len() == 12 || hex.len() == 64) {
        return Some(format!("id:{}", hex[..12].to_ascii_lowercase()));
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || r.contains('@') {
        Some(r.to_string())
    } else {
        Some(format!("{r}:latest"))
    }
}

/// The image an event says was used, as a [`image_key`]: an image's `pull`, `tag`, `import` or
/// `load` (the event's actor is the image), or a container's `create` or `start` (its `image`
/// attribute is the reference it was made from).
pub fn image_used_by(
    kind: &str,
    action: &str,
    actor: &str,
    image_attr: Option<&str>,
) -> Option<String> {
    match (kind, action) {
        ("image", "pull" | "tag" | "import" | "load") => image_key(actor),
        ("container", "create" | "start") => image_attr.and_then(image_key),
        _ => None,
    }
}

/// One container's log file, as the daemon names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The container's name.
    pub container: String,
    /// Its labels (a protect label keeps its log whole).
    pub labels: HashMap<String, String>,
    /// `LogPath`, on the host.
    pub path: String,
    /// The log driver (`json-file`, `local`, …).
    pub driver: String,
}

/// The most containers whose logs the truncation looks at.
pub const MAX_LOG_FILES: usize = 10_000;

/// The most parents kept per build cache record.
pub const MAX_PARENTS: usize = 8;

impl BuildCacheRecord {
    /// When the record was last touched: last use, else creation.
    pub fn last_touched(&self) -> Option<DateTime<Utc>> {
        self.last_used_at.or(self.created_at)
    }
}

/// Everything `/system/df` answered, in plain form.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiskUsage {
    /// Total bytes of all image layers, counted once (older APIs).
    pub layers_size: Option<i64>,
    /// The daemon's own per-type totals (API 1.52+), when it sent them.
    pub daemon_totals: Option<DaemonTotals>,
    /// Images.
    pub images: Vec<Image>,
    /// Containers.
    pub containers: Vec<Container>,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// Build cache records.
    pub build_cache: Vec<BuildCacheRecord>,
}

impl DiskUsage {
    /// Images, containers, volumes and build cache records together.
    pub fn objects(&self) -> usize {
        self.images.len() + self.containers.len() + self.volumes.len() + self.build_cache.len()
    }
}

/// Per-type totals that newer daemons compute themselves.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DaemonTotals {
    /// Total size of images (layers counted once).
    pub images_size: Option<i64>,
}

/// The sum of sizes a daemon reported, stopping at `u64::MAX`: its numbers are not trusted, and
/// a few absurd ones must not wrap the total round to a small figure (or panic in a debug build).
pub fn total_bytes(bytes: impl Iterator<Item = u64>) -> u64 {
    bytes.fold(0, u64::saturating_add)
}

/// Shortens `sha256:0123456789abcdef…` to `0123456789ab`: the first 12 characters, cut at a
/// character boundary, since a daemon's answer is not trusted to hold hex.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    let end = hex.char_indices().nth(12).map_or(hex.len(), |(i, _)| i);
    &hex[..end]
}

// ---- raw wire shapes of /system/df (both generations) ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireDf {
    layers_size: Option<i64>,
    images: Option<Vec<WireImage>>,
    containers: Option<Vec<WireContainer>>,
    volumes: Option<Vec<WireVolume>>,
    build_cache: Option<Vec<WireBuildCache>>,
    image_usage: Option<WireUsage<WireImage>>,
    container_usage: Option<WireUsage<WireContainer>>,
    volume_usage: Option<WireUsage<WireVolume>>,
    build_cache_usage: Option<WireUsage<WireBuildCache>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireUsage<T> {
    total_size: Option<i64>,
    items: Option<Vec<T>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireImage {
    id: String,
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    size: i64,
    shared_size: Option<i64>,
    containers: Option<i64>,
    labels: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireContainer {
    id: String,
    names: Option<Vec<String>>,
    #[serde(rename = "ImageID")]
    image_id: Option<String>,
    state: Option<String>,
    size_rw: Option<i64>,
    #[serde(default)]
    created: i64,
    labels: Option<HashMap<String, String>>,
    mounts: Option<Vec<WireMount>>,
}

/// One container of `/containers/{id}/json`, the fields the list also gives.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireInspect {
    id: String,
    name: Option<String>,
    /// The image id (the list's `ImageID`).
    image: Option<String>,
    state: Option<WireState>,
    size_rw: Option<i64>,
    created: Option<String>,
    config: Option<WireConfig>,
    mounts: Option<Vec<WireMount>>,
    log_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireState {
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireConfig {
    labels: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireMount {
    #[serde(rename = "Type")]
    kind: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireVolume {
    name: String,
    usage_data: Option<WireVolumeUsage>,
    labels: Option<HashMap<String, String>>,
    created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireVolumeUsage {
    size: i64,
    ref_count: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireBuildCache {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(default)]
    in_use: bool,
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    size: i64,
    created_at: Option<String>,
    last_used_at: Option<String>,
    parent: Option<String>,
    parents: Option<Vec<String>>,
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let s = s?;
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    // Docker writes the zero time (0001-01-01) for "never".
    (t.timestamp() > 0).then_some(t)
}

fn is_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container of `/system/df` or of `/containers/json`, in plain form.
fn container_of(c: WireContainer) -> Container {
    Container {
        name: c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| short_id(&c.id).to_string()),
        id: c.id,
        image_id: c.image_id.unwrap_or_default(),
        state: c.state.unwrap_or_default(),
        size_rw: c.size_rw.unwrap_or(-1),
        created: c.created,
        labels: c.labels.unwrap_or_default(),
        volumes: c
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.kind.as_deref() == Some("volume"))
            .filter_map(|m| m.name)
            .collect(),
    }
}

/// Whether `id` (from an event) is a plain object id or name that stays one path segment: not
/// empty, only letters, digits, `_`, `.` and `-`, and not `.` or `..`.
fn is_object_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// An inspected container in the list's form, and its log path (if it has one yet).
fn inspected_of(c: WireInspect) -> (Container, Option<String>) {
    let created = parse_time(c.created.as_deref()).map_or(0, |t| t.timestamp());
    let log_path = c.log_path.filter(|p| !p.is_empty());
    let container = container_of(WireContainer {
        names: c.name.map(|n| vec![n]),
        id: c.id,
        image_id: c.image,
        state: c.state.and_then(|s| s.status),
        size_rw: c.size_rw,
        created,
        labels: c.config.and_then(|c| c.labels),
        mounts: c.mounts,
    });
    (container, log_path)
}

/// A volume of `/system/df` or of `/volumes`, in plain form.
fn volume_of(v: WireVolume) -> Volume {
    Volume {
        anonymous: is_anonymous(&v.name),
        size: v.usage_data.as_ref().map_or(-1, |u| u.size),
        ref_count: v.usage_data.as_ref().map_or(-1, |u| u.ref_count),
        labels: v.labels.unwrap_or_default(),
        created_at: parse_time(v.created_at.as_deref()),
        name: v.name,
    }
}

/// The parts of `/system/df` that can be asked for alone (`?type=`, API 1.42 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DfType {
    /// Images (cheap: the layer store's figures).
    Image,
    /// Containers with their writable layers' sizes (walks every writable layer).
    Container,
    /// Volumes with their sizes (walks every local volume).
    Volume,
    /// BuildKit's cache records.
    BuildCache,
}

impl DfType {
    /// The `type=` value.
    pub fn as_query(self) -> &'static str {
        match self {
            DfType::Image => "image",
            DfType::Container => "container",
            DfType::Volume => "volume",
            DfType::BuildCache => "build-cache",
        }
    }
}

/// Whether the daemon's API answers `/system/df?type=` (1.42, Docker 23, and later).
pub fn df_types_supported(api_version: &str) -> bool {
    let mut parts = api_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 42)
}

/// The event actions after which `/system/df` answers differently (a container's start or end
/// changes what is active; creation and removal change every list that counts containers).
pub const STORAGE_EVENTS: [&str; 17] = [
    "create", "destroy", "start", "die", "pause", "unpause", "rename", "commit", "prune", "pull",
    "tag", "untag", "delete", "import", "load", "update", "remove",
];

/// Parses a `/system/df` answer of any API generation into plain structs.
pub fn parse_disk_usage(body: &[u8]) -> Result<DiskUsage> {
    let w: WireDf = serde_json::from_slice(body)
        .map_err(|e| Error::docker_from(format!("unexpected /system/df answer: {e}"), e))?;
    let daemon_totals = w.image_usage.as_ref().map(|u| DaemonTotals {
        images_size: u.total_size,
    });
    let images = w
        .images
        .or_else(|| w.image_usage.and_then(|u| u.items))
        .unwrap_or_default();
    let containers = w
        .containers
        .or_else(|| w.container_usage.and_then(|u| u.items))
        .unwrap_or_default();
    let volumes = w
        .volumes
        .or_else(|| w.volume_usage.and_then(|u| u.items))
        .unwrap_or_default();
    let build_cache = w
        .build_cache
        .or_else(|| w.build_cache_usage.and_then(|u| u.items))
        .unwrap_or_default();
    Ok(DiskUsage {
        layers_size: w.layers_size,
        daemon_totals,
        images: images
            .into_iter()
            .map(|i| Image {
                id: i.id,
                repo_tags: i.repo_tags.unwrap_or_default(),
                created: i.created,
                size: i.size,
                shared_size: i.shared_size.unwrap_or(-1),
                containers: i.containers.unwrap_or(-1),
                labels: i.labels.unwrap_or_default(),
            })
            .collect(),
        containers: containers.into_iter().map(container_of).collect(),
        volumes: volumes.into_iter().map(volume_of).collect(),
        build_cache: build_cache
            .into_iter()
            .map(|b| BuildCacheRecord {
                id: b.id,
                kind: b.kind.unwrap_or_default(),
                in_use: b.in_use,
                shared: b.shared,
                size: b.size,
                created_at: parse_time(b.created_at.as_deref()),
                last_used_at: parse_time(b.last_used_at.as_deref()),
                parents: b
                    .parents
                    .unwrap_or_default()
                    .into_iter()
                    .chain(b.parent)
                    .filter(|p| !p.is_empty())
                    .take(MAX_PARENTS)
                    .collect(),
            })
            .collect(),
    })
}

/// A `/system/df` answer at least this long (a couple of hundred objects) is parsed on a blocking
/// thread; a smaller one parses in well under a millisecond, less than the hand-off would cost.
const OFFLOAD_BYTES: usize = 128 * 1024;

/// Runs `f` on a blocking thread when the work is `large` (so the runtime's workers keep
/// answering scrapes), else right here. `what` names the work in the error a panic becomes.
pub async fn offload<T, F>(large: bool, what: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if !large {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("{what}: {e}")))
}

/// Longest time one prune or remove call may take (pruning gigabytes of build cache takes
/// minutes); every other call has `--docker.timeout`.
pub const PRUNE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The status an engine before 23.0 answers a second concurrent `/system/df` with.
const DF_BUSY_STATUS: u16 = 500;

/// The status `/system/df` answers when an object it was measuring went away mid-walk (on the
/// containerd store, a build's snapshot that BuildKit removed: "snapshot … does not exist").
const DF_VANISHED_STATUS: u16 = 404;

/// Whether a failed `/system/df` is worth asking again: the daemon was busy with another one,
/// or an object vanished while it walked. Both pass; a lasting one is returned at the timeout.
fn df_retryable(status: Option<u16>) -> bool {
    matches!(status, Some(DF_BUSY_STATUS | DF_VANISHED_STATUS))
}

/// Runs a Docker call, giving up after `timeout`: every call but the event stream (which stays
/// open while the daemon is up) goes through here.
async fn within<T, E>(
    timeout: Duration,
    f: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T>
where
    E: Into<Error>,
{
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(Error::DockerTimeout(timeout)),
    }
}

/// The filters the prune endpoints share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneFilters {
    /// Only objects created before this instant's whole second (Docker's `until` as a Unix
    /// timestamp, which it reads as "created no later than").
    pub before: DateTime<Utc>,
    /// Objects carrying this label (`key` or `key=value`) stay (Docker's `label!`).
    pub keep_label: Option<String>,
}

impl PruneFilters {
    /// The filters as the prune endpoints take them.
    fn to_query(&self) -> HashMap<String, Vec<String>> {
        let mut f = HashMap::new();
        f.insert(
            "until".to_string(),
            vec![self.before.timestamp().to_string()],
        );
        if let Some(label) = &self.keep_label {
            f.insert("label!".to_string(), vec![label.clone()]);
        }
        f
    }
}

/// `until` as Docker reads it: whole seconds.
fn until_secs(until: Duration) -> String {
    format!("{}s", until.as_secs())
}

/// What a prune call freed, as Docker reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// `SpaceReclaimed`.
    pub bytes: u64,
    /// The ids Docker says it deleted (for an image prune, the layers' ids too).
    pub deleted: Vec<String>,
}

/// How Docker answered a request to remove one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The object is deleted.
    Removed,
    /// Docker answered, and the object is still there (an image that got a new tag since it
    /// was planned keeps that tag).
    Kept,
    /// Docker refused: the object is in use by now (409), in its words.
    InUse(String),
    /// Docker knows no such object any more (404), in its words.
    Gone(String),
    /// The name now stands for another object than the one planned (a volume re-created under
    /// its name, every planned tag moved to another image): left alone, with what changed.
    Changed(String),
}

impl Removal {
    /// Sorts a failed remove call: an object in use or gone by now is an answer, not a failure.
    fn refused(e: Error) -> Result<Removal> {
        match e.docker_status() {
            Some(409) => Ok(Removal::InUse(e.to_string())),
            Some(404) => Ok(Removal::Gone(e.to_string())),
            _ => Err(e),
        }
    }
}

/// Docker's prune and remove calls as the cleanup engine needs them, with typed answers.
/// [`DockerApi`] is the real one; the engine's unit tests drive a fake.
pub trait PruneEdge: Send + Sync {
    /// A fresh `/system/df`, parsed.
    fn disk_usage(&self) -> impl Future<Output = Result<DiskUsage>> + Send;

    /// `POST /build/prune` without `all` (records shared with an image stay), for records last
    /// used before `until` ago.
    fn prune_build_cache(&self, until: Duration) -> impl Future<Output = Result<Reclaimed>> + Send;

    /// `POST /build/prune` of the one record `id` (BuildKit's `id` filter, anchored, with `all`),
    /// when it is idle and last used before `until` ago: how a level removes cache least
    /// recently used first. An id that is not a BuildKit record id is refused without a call.
    fn remove_build_cache(
        &self,
        id: &str,
        until: Duration,
    ) -> impl Future<Output = Result<Reclaimed>> + Send;

    /// Every container's log file with its driver, for the opt-in truncation of logs.
    fn log_files(&self) -> impl Future<Output = Result<Vec<LogFile>>> + Send;

    /// `POST /containers/prune` with `filters`.
    fn prune_containers(
        &self,
        filters: &PruneFilters,
    ) -> impl Future<Output = Result<Reclaimed>> + Send;

    /// `POST /images/prune` with `filters`, of untagged images only when `dangling`.
    fn prune_images(
        &self,
        filters: &PruneFilters,
        dangling: bool,
    ) -> impl Future<Output = Result<Reclaimed>> + Send;

    /// Whether the daemon keeps images in the containerd image store (Docker 28 with it on, 29
    /// by default). Its `POST /images/prune` prunes nothing when given a `label!` filter
    /// (moby#52334), so the engine then removes images one by one; and its build cache records
    /// shared with an image are copies that free their bytes when removed.
    fn containerd_image_store(&self) -> impl Future<Output = Result<bool>> + Send;

    /// `DELETE /containers/{id}`, neither forced nor taking its volumes.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<Removal>> + Send;

    /// `DELETE /volumes/{name}`, not forced, if the volume of that name is still the one
    /// created at `created` (when known): else [`Removal::Changed`].
    fn remove_volume(
        &self,
        name: &str,
        created: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Removal>> + Send;

    /// Removes image `id`, planned with `tags`, never forced and never through a tag that names
    /// another image by now: by its ID when its tags are in one repository (Docker then
    /// removes them with it; a tag moved away since the plan is not among them), else tag by
    /// tag, each checked just before it is removed. [`Removal::Removed`] when Docker reports
    /// `id` deleted.
    fn remove_image(
        &self,
        id: &str,
        tags: &[String],
    ) -> impl Future<Output = Result<Removal>> + Send;
}

/// A bollard count of bytes (`None` or negative when Docker did not say) as bytes.
fn bytes(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

impl PruneEdge for DockerApi {
    async fn disk_usage(&self) -> Result<DiskUsage> {
        DockerApi::disk_usage(self).await
    }

    async fn log_files(&self) -> Result<Vec<LogFile>> {
        use futures_util::StreamExt;
        let containers = self.container_list().await?;
        let found = futures_util::stream::iter(containers.into_iter().take(MAX_LOG_FILES))
            .map(|c| async move {
                let i = self
                    .call(self.client.inspect_container(&c.id, None))
                    .await
                    .ok()?;
                let path = i.log_path.filter(|p| !p.is_empty())?;
                let driver = i
                    .host_config
                    .and_then(|h| h.log_config)
                    .and_then(|l| l.typ)
                    .unwrap_or_default();
                Some(LogFile {
                    container: c.name,
                    labels: c.labels,
                    path,
                    driver,
                })
            })
            .buffer_unordered(16)
            .filter_map(|f| async move { f })
            .collect()
            .await;
        Ok(found)
    }

    async fn prune_build_cache(&self, until: Duration) -> Result<Reclaimed> {
        let opts = PruneBuildOptions {
            filters: Some(HashMap::from([(
                "until".to_string(),
                vec![until_secs(until)],
            )])),
            ..PruneBuildOptions::default()
        };
        let r = within(PRUNE_TIMEOUT, self.pruning().prune_build(Some(opts))).await?;
        Ok(Reclaimed {
            bytes: bytes(r.space_reclaimed),
            deleted: r.caches_deleted.unwrap_or_default(),
        })
    }

    async fn remove_build_cache(&self, id: &str, until: Duration) -> Result<Reclaimed> {
        // The filter is a regular expression: only a plain record id goes in it.
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Other(format!(
                "{id:?} is not a build cache record id; not removed"
            )));
        }
        let opts = PruneBuildOptions {
            filters: Some(HashMap::from([
                ("until".to_string(), vec![until_secs(until)]),
                ("id".to_string(), vec![format!("^{id}$")]),
            ])),
            // Only this record: `all` lets a record Docker calls shared go too, which the
            // planner allows on the containerd image store alone.
            all: Some(true),
            ..PruneBuildOptions::default()
        };
        let r = within(PRUNE_TIMEOUT, self.pruning().prune_build(Some(opts))).await?;
        Ok(Reclaimed {
            bytes: bytes(r.space_reclaimed),
            deleted: r.caches_deleted.unwrap_or_default(),
        })
    }

    async fn prune_containers(&self, filters: &PruneFilters) -> Result<Reclaimed> {
        let opts = PruneContainersOptions {
            filters: Some(filters.to_query()),
        };
        let r = within(PRUNE_TIMEOUT, self.pruning().prune_containers(Some(opts))).await?;
        Ok(Reclaimed {
            bytes: bytes(r.space_reclaimed),
            deleted: r.containers_deleted.unwrap_or_default(),
        })
    }

    async fn prune_images(&self, filters: &PruneFilters, dangling: bool) -> Result<Reclaimed> {
        let mut query = filters.to_query();
        query.insert("dangling".into(), vec![dangling.to_string()]);
        let opts = PruneImagesOptions {
            filters: Some(query),
        };
        let r = within(PRUNE_TIMEOUT, self.pruning().prune_images(Some(opts))).await?;
        Ok(Reclaimed {
            bytes: bytes(r.space_reclaimed),
            deleted: r
                .images_deleted
                .unwrap_or_default()
                .into_iter()
                .filter_map(|d| d.deleted)
                .collect(),
        })
    }

    async fn containerd_image_store(&self) -> Result<bool> {
        let info = self.call(self.client.info()).await?;
        Ok(is_containerd_store(&info.driver_status.unwrap_or_default()))
    }

    async fn remove_container(&self, id: &str) -> Result<Removal> {
        let opts = RemoveContainerOptions {
            v: false,
            force: false,
            link: false,
        };
        match within(
            PRUNE_TIMEOUT,
            self.pruning().remove_container(id, Some(opts)),
        )
        .await
        {
            Ok(()) => Ok(Removal::Removed),
            Err(e) => Removal::refused(e),
        }
    }

    async fn remove_volume(&self, name: &str, created: Option<DateTime<Utc>>) -> Result<Removal> {
        if let Some(planned) = created {
            let now = match self.call(self.client.inspect_volume(name)).await {
                Ok(v) => parse_time(v.created_at.as_deref()),
                Err(e) => return Removal::refused(e),
            };
            if now != Some(planned) {
                return Ok(Removal::Changed(format!(
                    "volume {name} was created again since the plan ({planned} then, {} now)",
                    now.map_or_else(|| "unknown".to_string(), |t| t.to_string())
                )));
            }
        }
        let opts = RemoveVolumeOptions { force: false };
        match within(
            PRUNE_TIMEOUT,
            self.pruning().remove_volume(name, Some(opts)),
        )
        .await
        {
            Ok(()) => Ok(Removal::Removed),
            Err(e) => Removal::refused(e),
        }
    }

    async fn remove_image(&self, id: &str, tags: &[String]) -> Result<Removal> {
        let client = self.pruning();
        let opts = || RemoveImageOptions {
            force: false,
            noprune: false,
            ..RemoveImageOptions::default()
        };
        if one_repository(tags) {
            let items =
                match within(PRUNE_TIMEOUT, client.remove_image(id, Some(opts()), None)).await {
                    Ok(items) => items,
                    Err(e) => return Removal::refused(e),
                };
            let untagged: Vec<&str> = items.iter().filter_map(|d| d.untagged.as_deref()).collect();
            for t in tags.iter().filter(|t| !untagged.iter().any(|u| u == t)) {
                tracing::info!(image = %short_id(id), tag = %t, "the tag names another image since the plan; left alone");
            }
            return Ok(if items.iter().any(|d| d.deleted.as_deref() == Some(id)) {
                Removal::Removed
            } else {
                Removal::Kept
            });
        }
        // Docker removes an image with tags in several repositories only tag by tag (or forced).
        let mut deleted = false;
        let mut moved = Vec::new();
        for tag in tags {
            match self.call(self.client.inspect_image(tag)).await {
                Ok(i) if i.id.as_deref() == Some(id) => {}
                Ok(_) => {
                    tracing::info!(image = %short_id(id), tag = %tag, "the tag names another image since the plan; left alone");
                    moved.push(tag.as_str());
                    continue;
                }
                Err(e) if e.docker_status() == Some(404) => continue,
                Err(e) => return Removal::refused(e),
            }
            match within(PRUNE_TIMEOUT, client.remove_image(tag, Some(opts()), None)).await {
                Ok(items) => deleted |= items.iter().any(|d| d.deleted.as_deref() == Some(id)),
                Err(e) => return Removal::refused(e),
            }
        }
        Ok(if deleted {
            Removal::Removed
        } else if !moved.is_empty() && moved.len() == tags.len() {
            Removal::Changed(format!(
                "its tags {} name another image now",
                moved.join(", ")
            ))
        } else {
            Removal::Kept
        })
    }
}

/// True when every tag is in one repository (or there is none): Docker then removes the image
/// by its ID, tags and all, unforced.
fn one_repository(tags: &[String]) -> bool {
    let repo = |t: &str| match t.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
        _ => t.to_string(),
    };
    let mut repos = tags.iter().map(|t| repo(t));
    match repos.next() {
        None => true,
        Some(first) => repos.all(|r| r == first),
    }
}

/// A connection to one Docker daemon, with the negotiated API version and a timeout on
/// every call.
#[derive(Debug, Clone)]
pub struct DockerApi {
    client: Docker,
    host: DockerHost,
    version: String,
    timeout: Duration,
    /// The connection `/system/df` is asked on, kept open between calls. Holding it serializes
    /// this process's `/system/df` calls: the daemon refuses a second concurrent one.
    df_conn: std::sync::Arc<tokio::sync::Mutex<Option<RawConn>>>,
    /// The client TLS of a `tcp://` daemon with `--docker.tls-verify`.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// A kept HTTP/1 connection to the daemon, for the raw calls.
type RawConn = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl DockerApi {
    /// Connects and negotiates the API version (downgrading for older daemons).
    pub async fn connect(cfg: &DockerConfig) -> Result<DockerApi> {
        let secs = cfg.timeout.as_secs().max(1);
        let host = DockerHost::parse(&cfg.host).map_err(Error::docker)?;
        let mut tls = None;
        let client = if let DockerHost::Unix(path) = &host {
            if !std::path::Path::new(path).exists() {
                return Err(Error::docker(format!(
                    "no socket at {path}: is dockerd running? (start it, or point --docker.host / DOCKER_HOST at its socket)"
                )));
            }
            Docker::connect_with_unix(&cfg.host, secs, bollard::API_DEFAULT_VERSION)?
        } else if let (DockerHost::Tcp(addr), Some(dir)) = (&host, &cfg.tls) {
            let config = std::sync::Arc::new(docker_tls(dir).map_err(Error::docker)?);
            tls = Some(config.clone());
            tls_client(config, addr, secs)?
        } else {
            Docker::connect_with_http(&cfg.host, secs, bollard::API_DEFAULT_VERSION)?
        };
        let client = within(cfg.timeout, client.negotiate_version()).await?;
        let v = client.client_version();
        Ok(DockerApi {
            client,
            host,
            version: format!("{}.{}", v.major_version, v.minor_version),
            timeout: cfg.timeout,
            tls,
            df_conn: Default::default(),
        })
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> &str {
        &self.version
    }

    /// Runs a Docker call with the configured timeout.
    async fn call<T>(
        &self,
        f: impl Future<Output = std::result::Result<T, bollard::errors::Error>>,
    ) -> Result<T> {
        within(self.timeout, f).await
    }

    /// The client for prune-sized calls: bollard's own request timeout raised to
    /// [`PRUNE_TIMEOUT`] (run them through [`within`] with the same bound).
    fn pruning(&self) -> Docker {
        self.client.clone().with_timeout(PRUNE_TIMEOUT)
    }

    /// `GET /info`, reduced to what bilge reports.
    pub async fn info(&self) -> Result<DockerInfo> {
        let info = self.call(self.client.info()).await?;
        let version = self.call(self.client.version()).await?;
        Ok(DockerInfo {
            version: version.version.unwrap_or_default(),
            api_version: self.version.clone(),
            storage_driver: info.driver.unwrap_or_default(),
            data_root: info.docker_root_dir.unwrap_or_default(),
            containerd_store: is_containerd_store(&info.driver_status.unwrap_or_default()),
            containerd_address: info
                .containerd
                .and_then(|c| c.address)
                .filter(|a| !a.is_empty()),
        })
    }

    /// `GET /system/df` (verbose where the API has summaries), parsed for either generation.
    ///
    /// Engines before 23.0 run one disk usage operation at a time and refuse others with a 500
    /// ("a disk usage operation is already running"; newer ones share the running answer): calls
    /// from this process wait for each other, and a call that meets another process's (a
    /// `bilge clean` next to `bilge serve`) retries within the timeout. The refusal has no status
    /// of its own, so any 500 is retried: a lasting one is returned once the timeout has passed.
    /// A 404 is retried the same way: the endpoint exists on every engine, so it means that an
    /// object being measured was removed meanwhile (seen on 28.5 with the containerd store while a
    /// failed build's snapshots went).
    pub async fn disk_usage(&self) -> Result<DiskUsage> {
        self.df("/system/df?verbose=1").await
    }

    /// `GET /system/df?type=…` for the given types only (API 1.42 and later, [`df_types_supported`]):
    /// the other types' lists come back empty. Busy and vanished answers are retried as for
    /// [`DockerApi::disk_usage`].
    pub async fn disk_usage_of(&self, types: &[DfType]) -> Result<DiskUsage> {
        let mut path = "/system/df?verbose=1".to_string();
        for t in types {
            path.push_str("&type=");
            path.push_str(t.as_query());
        }
        self.df(&path).await
    }

    async fn df(&self, path: &str) -> Result<DiskUsage> {
        let mut conn = self.df_conn.lock().await;
        let start = std::time::Instant::now();
        loop {
            match self.raw_get(&mut conn, path).await {
                Ok(body) => {
                    let large = body.len() >= OFFLOAD_BYTES;
                    return offload(large, "parsing /system/df", move || parse_disk_usage(&body))
                        .await?;
                }
                Err(e) if df_retryable(e.docker_status()) && start.elapsed() < self.timeout => {
                    tracing::debug!(error = %e, "disk usage busy or an object vanished; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every container (`/containers/json?all=1`, without sizes: the cheap list), as
    /// `/system/df` would list them but with `size_rw` unknown (-1).
    pub async fn container_list(&self) -> Result<Vec<Container>> {
        let wire: Vec<WireContainer> = self.get_parsed("/containers/json?all=1").await?;
        Ok(wire.into_iter().map(container_of).collect())
    }

    /// Every volume (`/volumes`, the cheap list), as `/system/df` would list them but with
    /// `size` and `ref_count` unknown (-1).
    pub async fn volume_list(&self) -> Result<Vec<Volume>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct WireVolumes {
            volumes: Option<Vec<WireVolume>>,
        }
        let wire: WireVolumes = self.get_parsed("/volumes").await?;
        Ok(wire
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(volume_of)
            .collect())
    }

    /// A raw GET on the kept connection, its JSON answer parsed (on a blocking thread when large).
    async fn get_parsed<T>(&self, path: &str) -> Result<T>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let mut conn = self.df_conn.lock().await;
        let body = self.raw_get(&mut conn, path).await?;
        drop(conn);
        let large = body.len() >= OFFLOAD_BYTES;
        let what = path.to_string();
        offload(large, path, move || {
            serde_json::from_slice(&body)
                .map_err(|e| Error::docker_from(format!("unexpected {what} answer: {e}"), e))
        })
        .await?
    }

    /// Docker's event stream from `since` on, limited to the [`STORAGE_EVENTS`] that change
    /// what `/system/df` answers. No timeout; it ends when the connection does.
    pub fn storage_events(
        &self,
        since: std::time::SystemTime,
    ) -> impl futures_util::Stream<Item = Result<bollard::models::EventMessage>> + use<> {
        self.events_of(
            since,
            &["image", "container", "volume", "builder"],
            &STORAGE_EVENTS,
        )
    }

    /// Docker's event stream from `since` on (the daemon replays the recent events it still
    /// holds), limited to `actions` on images and containers. It has no timeout (it stays open
    /// while the daemon is up); it ends when the connection does.
    pub fn events(
        &self,
        since: std::time::SystemTime,
        actions: &[&str],
    ) -> impl futures_util::Stream<Item = Result<bollard::models::EventMessage>> + use<> {
        self.events_of(since, &["image", "container"], actions)
    }

    fn events_of(
        &self,
        since: std::time::SystemTime,
        types: &[&str],
        actions: &[&str],
    ) -> impl futures_util::Stream<Item = Result<bollard::models::EventMessage>> + use<> {
        use futures_util::StreamExt;
        let filters = HashMap::from([
            (
                "type".to_string(),
                types.iter().map(|t| (*t).to_string()).collect(),
            ),
            (
                "event".to_string(),
                actions.iter().map(|a| (*a).to_string()).collect(),
            ),
        ]);
        let since = since
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let options = bollard::query_parameters::EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            filters: Some(filters),
            ..Default::default()
        };
        self.client
            .events(Some(options))
            .map(|e| e.map_err(Error::from))
    }

    /// `GET /_ping`: the daemon answers without work, so this tells a frozen or gone daemon
    /// from one that had nothing to report, within the timeout.
    pub async fn ping(&self) -> Result<()> {
        self.call(self.client.ping()).await.map(|_| ())
    }

    /// One container as the list gives it, with its writable layer's size (`inspect ?size=1`: a
    /// walk of that layer only), and its log file's path (none before its first start, or when
    /// its log driver keeps no file); `None` when the container is gone.
    pub async fn container_inspect(&self, id: &str) -> Result<Option<(Container, Option<String>)>> {
        if !is_object_id(id) {
            return Err(Error::docker(format!("not a container id: {id:?}")));
        }
        let path = format!("/containers/{id}/json?size=1");
        match self.get_parsed::<WireInspect>(&path).await {
            Ok(w) => Ok(Some(inspected_of(w))),
            Err(e) if e.docker_status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The `LogPath` of a container (empty when its log driver keeps no file).
    pub async fn log_path(&self, id: &str) -> Result<Option<String>> {
        let c = self.call(self.client.inspect_container(id, None)).await?;
        Ok(c.log_path.filter(|p| !p.is_empty()))
    }

    /// A raw GET on the versioned API, for answers bollard cannot model, on the kept connection
    /// `conn` (made when there is none or it was closed; left empty after a failure).
    async fn raw_get(&self, conn: &mut Option<RawConn>, path: &str) -> Result<Bytes> {
        let uri = format!("/v{}{}", self.version, path);
        let request = || {
            hyper::Request::get(uri.as_str())
                .header(hyper::header::HOST, "docker")
                .body(Empty::<Bytes>::new())
                .map_err(|e| Error::docker_from(e.to_string(), e))
        };
        let fut = async {
            let kept = conn.take().filter(|c| c.is_ready());
            let reused = kept.is_some();
            let mut sender = match kept {
                Some(c) => c,
                None => self.raw_connect().await?,
            };
            let resp = match sender.send_request(request()?).await {
                Ok(r) => r,
                // The daemon may have closed the kept connection just now: once more, afresh.
                Err(_) if reused => {
                    sender = self.raw_connect().await?;
                    sender
                        .send_request(request()?)
                        .await
                        .map_err(|e| Error::docker_from(e.to_string(), e))?
                }
                Err(e) => return Err(Error::docker_from(e.to_string(), e)),
            };
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::docker_from(e.to_string(), e))?
                .to_bytes();
            *conn = Some(sender);
            if !status.is_success() {
                return Err(Error::Docker {
                    status: Some(status.as_u16()),
                    message: format!(
                        "{path}: {status}: {}",
                        String::from_utf8_lossy(&body).trim()
                    ),
                    source: None,
                });
            }
            Ok(body)
        };
        within(self.timeout, fut).await
    }

    /// A new HTTP/1 connection to the daemon; its driver runs as a task until it closes.
    async fn raw_connect(&self) -> Result<RawConn> {
        match (&self.host, &self.tls) {
            (DockerHost::Unix(p), _) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| Error::docker_from(format!("{p}: {e}"), e))?;
                handshake(s).await
            }
            (DockerHost::Tcp(addr), Some(tls)) => handshake(tls_connect(tls, addr).await?).await,
            (DockerHost::Tcp(addr), None) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| Error::docker_from(format!("{addr}: {e}"), e))?;
                handshake(s).await
            }
        }
    }
}

async fn handshake<S>(stream: S) -> Result<RawConn>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::docker_from(e.to_string(), e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "docker connection closed");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts_parse_into_a_socket_or_an_address() {
        assert_eq!(
            DockerHost::parse("unix:///run/docker.sock"),
            Ok(DockerHost::Unix("/run/docker.sock".into()))
        );
        assert_eq!(
            DockerHost::parse("tcp://10.0.0.2:2375/"),
            Ok(DockerHost::Tcp("10.0.0.2:2375".into()))
        );
        assert!(DockerHost::parse("ssh://host").is_err());
        assert!(DockerHost::parse("unix://").is_err());
        assert!(DockerHost::parse("tcp://").is_err());
    }

    /// Found by the `system_df` fuzz target's long run: an image ID with a multi-byte character
    /// across byte 12 panicked while being shortened (a slice inside a character).
    #[test]
    fn ids_that_are_not_hex_are_shortened_without_a_panic() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("-----------\u{71b}x"), "-----------\u{71b}");
        assert_eq!(short_id("ab"), "ab");
        let crash = include_str!("../fuzz/seeds/system_df/image-id-not-hex.json");
        let df = parse_disk_usage(crash.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = df.images.iter().map(Image::display_name).collect();
        assert_eq!(names, ["<none>@-----------\u{71b}"]);
    }

    /// An inspection gives the container as the list does (the fields named differently), with
    /// its log path once it has one.
    #[test]
    fn an_inspected_container_reads_as_the_listed_one() {
        let listed: WireContainer = serde_json::from_str(
            r#"{"Id":"c0ffee","Names":["/web"],"ImageID":"sha256:1a","State":"running",
                "SizeRw":4096,"Created":1700000000,"Labels":{"team":"ci"},
                "Mounts":[{"Type":"volume","Name":"data"},{"Type":"bind","Source":"/srv"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let inspected: WireInspect = serde_json::from_str(
            r#"{"Id":"c0ffee","Name":"/web","Image":"sha256:1a","State":{"Status":"running"},
                "SizeRw":4096,"Created":"2023-11-14T22:13:20.5Z","Config":{"Labels":{"team":"ci"}},
                "Mounts":[{"Type":"volume","Name":"data"},{"Type":"bind","Source":"/srv"}],
                "LogPath":"/var/lib/docker/containers/c0ffee/c0ffee-json.log"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (c, log) = inspected_of(inspected);
        assert_eq!(c, container_of(listed));
        assert_eq!(c.volumes, ["data"]);
        assert_eq!(
            log.as_deref(),
            Some("/var/lib/docker/containers/c0ffee/c0ffee-json.log")
        );
        // An id from an event goes into the path only as one plain segment.
        assert!(is_object_id("c0ffee") && is_object_id("web_1.x-2"));
        for bad in [
            "",
            ".",
            "..",
            "../../info",
            "a/b",
            "a?size=0",
            "c%2F",
            "a b",
        ] {
            assert!(!is_object_id(bad), "{bad:?}");
        }
        // Never started: no log path yet.
        let created: WireInspect =
            serde_json::from_str(r#"{"Id":"c0ffee","State":{"Status":"created"},"LogPath":""}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let (c, log) = inspected_of(created);
        assert_eq!((c.state.as_str(), log), ("created", None));
    }

    #[test]
    fn a_tls_daemon_is_verified_as_the_host_of_its_address() {
        use rustls_pki_types::ServerName;
        let name = |a: &str| server_name(a).map(|n| n.to_str().into_owned());
        assert_eq!(name("127.0.0.1:2376").unwrap(), "127.0.0.1");
        assert_eq!(name("[::1]:2376").unwrap(), "::1");
        assert_eq!(name("docker.internal:2376").unwrap(), "docker.internal");
        assert!(matches!(
            server_name("10.0.0.2:2376"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(server_name("bad name:2376").is_err());
    }

    #[test]
    fn docker_tls_names_the_file_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("bilge-docker-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = docker_tls(&dir).unwrap_err();
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(dir.join("ca.pem"), "not pem").unwrap();
        let e = docker_tls(&dir).unwrap_err();
        assert!(
            e.contains("ca.pem") && e.contains("holds no certificate"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    const OLD: &str = r#"{"LayersSize":3000,"Images":[
        {"Id":"sha256:aaaaaaaaaaaaaaaaaaaa","ParentId":"","RepoTags":["app:1"],"Created":1700000000,"Size":2000,"SharedSize":500,"VirtualSize":2000,"Labels":null,"Containers":1},
        {"Id":"sha256:bbbbbbbbbbbbbbbbbbbb","RepoTags":["<none>:<none>"],"Created":1700000001,"Size":1000,"SharedSize":0,"Labels":{},"Containers":0}],
      "Containers":[{"Id":"c1","Names":["/web"],"ImageID":"sha256:aaaa","State":"running","SizeRw":10,"Created":1700000002,"Labels":{},
                     "Mounts":[{"Type":"volume","Name":"data","Destination":"/d"},{"Type":"bind","Source":"/etc","Destination":"/e"}]},
                    {"Id":"c2","Names":["/old"],"ImageID":"sha256:aaaa","State":"exited","SizeRw":20,"Created":1700000003}],
      "Volumes":[{"Name":"data","Driver":"local","UsageData":{"Size":300,"RefCount":0},"CreatedAt":"2024-01-01T00:00:00Z","Labels":null},
                 {"Name":"0123456789012345678901234567890123456789012345678901234567890123","UsageData":{"Size":-1,"RefCount":1}}],
      "BuildCache":[{"ID":"r1","Parent":"","Type":"regular","Description":"x","InUse":false,"Shared":false,"Size":400,"CreatedAt":"2024-01-01T00:00:00Z","LastUsedAt":null,"UsageCount":1}]}"#;

    const NEW: &str = r#"{"ImageUsage":{"ActiveCount":1,"TotalCount":1,"Reclaimable":0,"TotalSize":2000,
        "Items":[{"Id":"sha256:aaaa","RepoTags":["app:1"],"Created":1,"Size":2000,"SharedSize":0,"Containers":1}]},
      "ContainerUsage":{"ActiveCount":0,"TotalCount":1,"Reclaimable":5,"TotalSize":5,"Items":[{"Id":"c9","Names":["/x"],"State":"exited","SizeRw":5}]},
      "VolumeUsage":{"ActiveCount":0,"TotalCount":0,"Reclaimable":0,"TotalSize":0,"Items":[]},
      "BuildCacheUsage":{"ActiveCount":0,"TotalCount":1,"Reclaimable":7,"TotalSize":7,
        "Items":[{"ID":"r2","Type":"regular","InUse":false,"Shared":false,"Size":7,"CreatedAt":"2024-01-01T00:00:00Z","LastUsedAt":"2024-02-01T00:00:00Z"}]}}"#;

    #[test]
    fn the_api_1_41_answer_is_read_in_full() {
        let du = parse_disk_usage(OLD.as_bytes());
        let Ok(du) = du else { panic!("{du:?}") };
        assert_eq!(du.layers_size, Some(3000));
        assert_eq!(du.images.len(), 2);
        assert!(du.images[1].is_dangling());
        assert_eq!(du.images[0].unique_size(), 1500);
        assert_eq!(du.containers[0].name, "web");
        assert_eq!(du.containers[0].volumes, ["data"]);
        assert!(du.containers[0].is_active() && !du.containers[1].is_active());
        assert_eq!(du.volumes[1].size, -1);
        assert!(du.volumes[1].anonymous && !du.volumes[0].anonymous);
        assert_eq!(du.build_cache[0].last_used_at, None);
        assert!(du.build_cache[0].last_touched().is_some());
    }

    #[test]
    fn the_summary_answer_of_newer_engines_is_read_from_its_items() {
        let du = parse_disk_usage(NEW.as_bytes());
        let Ok(du) = du else { panic!("{du:?}") };
        assert_eq!(du.layers_size, None);
        assert_eq!(du.daemon_totals.and_then(|t| t.images_size), Some(2000));
        assert_eq!(du.images.len(), 1);
        assert_eq!(du.containers[0].size_rw, 5);
        assert_eq!(du.build_cache[0].size, 7);
        assert_eq!(
            du.build_cache[0].last_used_at.map(|t| t.timestamp()),
            Some(1_706_745_600)
        );
    }

    #[test]
    fn a_malformed_answer_is_an_error_not_a_panic() {
        assert!(parse_disk_usage(b"{\"Images\": 3}").is_err());
        assert!(parse_disk_usage(b"not json").is_err());
    }

    /// The error bollard gives for a daemon's answer with `status`.
    fn answered(status: u16, message: &str) -> Error {
        Error::from(bollard::errors::Error::DockerResponseServerError {
            status_code: status,
            message: message.into(),
        })
    }

    #[test]
    fn a_busy_daemon_or_a_vanished_object_is_asked_again_and_nothing_else_is() {
        assert!(df_retryable(Some(500)));
        assert!(df_retryable(Some(404)));
        for other in [None, Some(400), Some(403), Some(409), Some(503)] {
            assert!(!df_retryable(other), "{other:?}");
        }
    }

    #[test]
    fn an_object_in_use_or_gone_is_an_answer_and_other_errors_stay_errors() {
        let in_use = answered(409, "conflict: unable to remove repository reference");
        assert!(
            matches!(Removal::refused(in_use), Ok(Removal::InUse(m)) if m.contains("conflict"))
        );
        let gone = answered(404, "No such container: abc");
        assert!(matches!(Removal::refused(gone), Ok(Removal::Gone(_))));
        let broken = answered(500, "boom");
        assert!(matches!(Removal::refused(broken), Err(e) if e.docker_status() == Some(500)));
        let timeout = Error::DockerTimeout(PRUNE_TIMEOUT);
        assert!(matches!(
            Removal::refused(timeout),
            Err(Error::DockerTimeout(_))
        ));
    }

    #[test]
    fn an_image_is_removed_by_id_unless_its_tags_span_several_repositories() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(one_repository(&[]));
        assert!(one_repository(&t(&["app:1", "app:2"])));
        assert!(one_repository(&t(&[
            "reg:5000/app:1",
            "reg:5000/app:latest"
        ])));
        assert!(!one_repository(&t(&["app:1", "web:1"])));
        assert!(!one_repository(&t(&["reg:5000/app", "reg:5001/app"])));
    }

    #[test]
    fn prune_filters_say_until_as_the_plans_whole_second_and_keep_the_protect_label() {
        let f = PruneFilters {
            before: DateTime::from_timestamp(1_796_316_300, 700_000_000).unwrap(),
            keep_label: Some("bilge.keep=true".into()),
        };
        let q = f.to_query();
        assert_eq!(q.get("until"), Some(&vec!["1796316300".to_string()]));
        assert_eq!(q.get("label!"), Some(&vec!["bilge.keep=true".to_string()]));
        let bare = PruneFilters {
            keep_label: None,
            ..f
        };
        assert!(!bare.to_query().contains_key("label!"));
    }

    #[tokio::test]
    async fn a_call_that_outlasts_its_bound_is_a_timeout() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), Error>(())
        };
        let r = within(Duration::from_millis(10), slow).await;
        assert!(matches!(r, Err(Error::DockerTimeout(d)) if d == Duration::from_millis(10)));
    }

    #[test]
    fn image_names_are_bounded() {
        let i = Image {
            id: "sha256:0123456789abcdef0123".into(),
            ..Image::default()
        };
        assert_eq!(i.display_name(), "<none>@0123456789ab");
    }

    #[test]
    fn the_containerd_root_is_measured_only_for_the_containerd_store_of_a_system_containerd() {
        let info = |store: bool, addr: Option<&str>| DockerInfo {
            containerd_store: store,
            containerd_address: addr.map(String::from),
            ..DockerInfo::default()
        };
        let system = Some("/run/containerd/containerd.sock");
        let own = Some("/var/run/docker/containerd/containerd.sock");
        let auto = ContainerdRoot::Auto;
        assert_eq!(
            auto.resolve(&info(true, system)),
            Some("/var/lib/containerd".into())
        );
        // dockerd's own containerd keeps its root under the data root.
        assert_eq!(auto.resolve(&info(true, own)), None);
        assert_eq!(auto.resolve(&info(true, None)), None);
        // The classic store keeps images under the data root, whatever the flag says.
        assert_eq!(auto.resolve(&info(false, system)), None);
        let at = ContainerdRoot::parse("/srv/containerd").unwrap();
        assert_eq!(at.resolve(&info(true, own)), Some("/srv/containerd".into()));
        assert_eq!(at.resolve(&info(false, own)), None);
        assert_eq!(
            ContainerdRoot::parse("none")
                .unwrap()
                .resolve(&info(true, system)),
            None
        );
        assert!(ContainerdRoot::parse("var/lib/containerd").is_err());
        assert_eq!(ContainerdRoot::parse("auto"), Ok(ContainerdRoot::Auto));
    }

    #[test]
    fn the_containerd_store_is_told_by_the_driver_status() {
        let st = |k: &str, v: &str| vec![vec![k.to_string(), v.to_string()]];
        assert!(is_containerd_store(&st(
            "driver-type",
            "io.containerd.snapshotter.v1"
        )));
        assert!(!is_containerd_store(&st("Backing Filesystem", "extfs")));
        assert!(!is_containerd_store(&[]));
    }
}
