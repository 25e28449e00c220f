//! The raw command line, as clap parses it. Every flag has a `BILGE_*` environment variable.
//! Nothing here is validated beyond its shape: `config.rs` turns these into each part's
//! settings. A leaf: it imports nothing from the rest of the crate.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// bilge keeps Docker hosts from running out of disk.
#[derive(Debug, Parser)]
// The version line carries what build.rs compiled in (as `bilge_exporter_build_info` does).
#[command(
    name = "bilge",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (revision ",
        env!("BILGE_BUILD_REVISION"),
        ", rustc ",
        env!("BILGE_BUILD_RUSTC"),
        ")"
    ),
    about,
    max_term_width = 100
)]
pub struct Cli {
    /// Flags shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the exporter, the status page, the build API and the Alertmanager webhook.
    Serve(Box<ServeArgs>),
    /// Run a build command, stream its output, classify a failure and record the outcome.
    Build(BuildArgs),
    /// Run the cleanup engine by hand: print the plan, then what each level freed.
    Clean(CleanArgs),
    /// Show disk usage: filesystems, Docker by type, build cache by age, the largest logs.
    Df(DfArgs),
    /// Exit 0 when a bilge server answers its health endpoint (for container HEALTHCHECKs).
    Healthcheck(HealthcheckArgs),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print a man page (roff): bilge's (`bilge man > bilge.1`) or a command's (`bilge man serve > bilge-serve.1`).
    Man(ManArgs),
}

/// `bilge man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (serve, build, clean, df, healthcheck, completions); none: bilge's own.
    pub command: Option<String>,
}

/// `bilge completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `key=value` pairs, one event a line.
    Logfmt,
    /// One JSON object a line.
    Json,
}

/// Flags that every subcommand understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Docker daemon address (unix:///path, tcp://host:port). Defaults to $DOCKER_HOST, else the local socket.
    #[arg(long = "docker.host", env = "BILGE_DOCKER_HOST", global = true)]
    pub docker_host: Option<String>,
    /// Speak TLS to a tcp:// daemon and verify it, as `docker --tlsverify` (also: $DOCKER_TLS_VERIFY set and not empty).
    #[arg(
        long = "docker.tls-verify",
        env = "BILGE_DOCKER_TLS_VERIFY",
        global = true
    )]
    pub docker_tls_verify: bool,
    /// Folder with ca.pem, cert.pem and key.pem for --docker.tls-verify. Defaults to $DOCKER_CERT_PATH, else ~/.docker.
    #[arg(
        long = "docker.cert-path",
        env = "BILGE_DOCKER_CERT_PATH",
        global = true
    )]
    pub docker_cert_path: Option<std::path::PathBuf>,
    /// How long one Docker API call may take (e.g. 30s).
    #[arg(
        long = "docker.timeout",
        env = "BILGE_DOCKER_TIMEOUT",
        default_value = "30s",
        global = true
    )]
    pub docker_timeout: String,
    /// How many of the largest images, volumes and container logs to export.
    #[arg(
        long = "docker.top-n",
        env = "BILGE_DOCKER_TOP_N",
        default_value_t = 10,
        global = true
    )]
    pub docker_top_n: usize,
    /// containerd's root folder, measured beside Docker's data root when images live in the containerd image store of a containerd that runs on its own (dockerd --containerd): an absolute path, "auto" (/var/lib/containerd when the daemon uses /run/containerd/containerd.sock) or "none".
    #[arg(
        long = "docker.containerd-root",
        env = "BILGE_DOCKER_CONTAINERD_ROOT",
        default_value = "auto",
        global = true
    )]
    pub docker_containerd_root: String,
    /// Regexp of mount points to leave out. Default: node_exporter's (/dev, /proc, /sys, /run/credentials, Docker's and Podman's own mounts).
    #[arg(
        long = "collector.filesystem.mount-points-exclude",
        env = "BILGE_COLLECTOR_FILESYSTEM_MOUNT_POINTS_EXCLUDE",
        global = true
    )]
    pub mount_points_exclude: Option<String>,
    /// Regexp of filesystem types to leave out. Default: node_exporter's (pseudo and overlay filesystems).
    #[arg(
        long = "collector.filesystem.fs-types-exclude",
        env = "BILGE_COLLECTOR_FILESYSTEM_FS_TYPES_EXCLUDE",
        global = true
    )]
    pub fs_types_exclude: Option<String>,
    /// How long one filesystem stat may take before the mount is marked stuck and skipped.
    #[arg(
        long = "collector.filesystem.stat-timeout",
        env = "BILGE_COLLECTOR_FILESYSTEM_STAT_TIMEOUT",
        default_value = "5s",
        global = true
    )]
    pub stat_timeout: String,
    /// Where the host's `/` is, as node_exporter's flag: in a container given the host's root at /host (read-only, rslave), `--path.rootfs=/host` reports the host's filesystems with the host's read-only flags, and finds Docker's data root and log files under it. Default: /.
    #[arg(long = "path.rootfs", env = "BILGE_PATH_ROOTFS", global = true)]
    pub rootfs: Option<PathBuf>,
    /// Where the host's /proc is (PID 1's mount table is read from it). Default: the rootfs's proc.
    #[arg(long = "path.procfs", env = "BILGE_PATH_PROCFS", global = true)]
    pub procfs: Option<PathBuf>,
    /// SQLite file for build history and the cleanup audit.
    #[arg(
        long = "state.path",
        env = "BILGE_STATE_PATH",
        default_value = "./bilge-data/bilge.db",
        global = true
    )]
    pub state_path: PathBuf,
    /// The host's cleanup lock: every bilge that prunes one Docker daemon must name the same file (default: the state file's path with `.lock` added).
    #[arg(
        long = "cleanup.lock-file",
        env = "BILGE_CLEANUP_LOCK_FILE",
        global = true
    )]
    pub lock_file: Option<PathBuf>,
    /// Longest wait for a cleanup another process is running (bilge clean, bilge build --clean-and-retry); then bilge says who holds the lock and exits 1.
    #[arg(
        long = "lock-timeout",
        env = "BILGE_LOCK_TIMEOUT",
        default_value = "10m",
        global = true
    )]
    pub lock_timeout: String,
    /// On SIGTERM or SIGINT, how long a cleanup in progress may take to reach a stopping point (the end of the object in flight) before it is recorded as interrupted.
    #[arg(
        long = "cleanup.shutdown-grace",
        env = "BILGE_CLEANUP_SHUTDOWN_GRACE",
        default_value = "20s",
        global = true
    )]
    pub shutdown_grace: String,
    /// TOML file with the cleanup policy (levels, ages, watermarks).
    #[arg(long = "config", env = "BILGE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Least severe log level shown: error, warn, info, debug or trace.
    #[arg(
        long = "log.level",
        env = "BILGE_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub log_level: String,
    /// Log format.
    #[arg(
        long = "log.format",
        env = "BILGE_LOG_FORMAT",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    pub log_format: LogFormat,
    /// Largest number of distinct project label values; the rest are counted as `other`.
    #[arg(
        long = "builds.max-projects",
        env = "BILGE_BUILDS_MAX_PROJECTS",
        default_value_t = 50,
        global = true
    )]
    pub max_projects: usize,
    /// Largest number of distinct host label values in bilge_builds_by_host_total; the rest are counted as `other`.
    #[arg(
        long = "builds.max-hosts",
        env = "BILGE_BUILDS_MAX_HOSTS",
        default_value_t = 64,
        global = true
    )]
    pub max_hosts: usize,
    /// This host's name: the `host` of the builds it runs or records and of bilge_host_info. Default: the hostname.
    #[arg(long = "host.name", env = "BILGE_HOST_NAME", global = true)]
    pub host_name: Option<String>,
}

/// Flags of `bilge serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (`:9830` means every interface).
    #[arg(
        long = "web.listen-address",
        env = "BILGE_WEB_LISTEN_ADDRESS",
        default_value = ":9830"
    )]
    pub listen_address: String,
    /// Path under which metrics are served.
    #[arg(
        long = "web.telemetry-path",
        env = "BILGE_WEB_TELEMETRY_PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,
    /// How often the Docker collector asks the daemon (e.g. 60s).
    #[arg(
        long = "docker.refresh-interval",
        env = "BILGE_DOCKER_REFRESH_INTERVAL",
        default_value = "60s"
    )]
    pub docker_refresh_interval: String,
    /// How often the bytes under Docker's data root (and containerd's root) are walked to find what Docker's accounting does not explain (e.g. 1h; 0 turns it off). The walk runs at idle I/O priority.
    #[arg(
        long = "docker.footprint-interval",
        env = "BILGE_DOCKER_FOOTPRINT_INTERVAL",
        default_value = "1h"
    )]
    pub docker_footprint_interval: String,
    /// Longest time between two full /system/df collections (e.g. 10m); those between ask only what Docker's events say changed, and nothing when nothing did. 0: every collection is full.
    #[arg(
        long = "docker.full-refresh-interval",
        env = "BILGE_DOCKER_FULL_REFRESH_INTERVAL",
        default_value = "10m"
    )]
    pub docker_full_refresh_interval: String,
    /// The largest share of the time the daemon spends computing bilge's /system/df answers (full or by type), e.g. 0.5%: after one that took t, the next waits until t is at most that share of the time since. Cheap answers (inspections, lists, pings) are never held. 100% turns the bound off.
    #[arg(
        long = "docker.df-budget",
        env = "BILGE_DOCKER_DF_BUDGET",
        default_value = "0.5%"
    )]
    pub docker_df_budget: String,
    /// How often filesystems are stat'ed and watermarks checked (e.g. 2s).
    #[arg(
        long = "collector.filesystem.interval",
        env = "BILGE_COLLECTOR_FILESYSTEM_INTERVAL",
        default_value = "2s"
    )]
    pub filesystem_interval: String,
    /// How much of the data root's history the time-to-full forecast fits a line over (bilge_docker_data_root_predicted_full_seconds, forecast_watermark).
    #[arg(
        long = "collector.filesystem.forecast-window",
        env = "BILGE_COLLECTOR_FILESYSTEM_FORECAST_WINDOW",
        default_value = "1h"
    )]
    pub forecast_window: String,
    /// File of API tokens for the webhook and the build API, one a line (any is accepted; re-read when it changes). Without it both are off.
    #[arg(long = "webhook.token-file", env = "BILGE_WEBHOOK_TOKEN_FILE")]
    pub webhook_token_file: Option<PathBuf>,
    /// An `instance` label value that names this host (repeatable). Default: hostname, addresses and loopback with the listen port.
    #[arg(
        long = "webhook.instance",
        env = "BILGE_WEBHOOK_INSTANCE",
        value_delimiter = ','
    )]
    pub webhook_instance: Vec<String>,
    /// Forward alerts for other instances once to that instance's webhook, if --webhook.relay-targets lists it.
    #[arg(long = "webhook.relay", env = "BILGE_WEBHOOK_RELAY")]
    pub webhook_relay: bool,
    /// Prometheus file_sd file (.json, .yml or .yaml) of the fleet members alerts may be relayed to; `__scheme__` picks http or https. Re-read when it changes.
    #[arg(long = "webhook.relay-targets", env = "BILGE_WEBHOOK_RELAY_TARGETS")]
    pub webhook_relay_targets: Option<PathBuf>,
    /// PEM file of the CA certificates that https relay targets are verified against (default: the system's roots).
    #[arg(long = "webhook.relay-ca-file", env = "BILGE_WEBHOOK_RELAY_CA_FILE")]
    pub webhook_relay_ca_file: Option<PathBuf>,
    /// Most alerts in one webhook delivery; a delivery with more is refused (413). Match Alertmanager's max_alerts.
    #[arg(
        long = "webhook.max-alerts",
        env = "BILGE_WEBHOOK_MAX_ALERTS",
        default_value_t = 64
    )]
    pub webhook_max_alerts: usize,
    /// How long build and cleanup history rows are kept; older ones are pruned in the background (the metrics keep counting them).
    #[arg(
        long = "state.retention",
        env = "BILGE_STATE_RETENTION",
        default_value = "90d"
    )]
    pub retention: String,
    /// Largest webhook or build API request body accepted.
    #[arg(
        long = "web.max-body",
        env = "BILGE_WEB_MAX_BODY",
        default_value = "1MiB"
    )]
    pub max_body: String,
    /// exporter-toolkit web config (YAML): TLS and basic auth, as node_exporter and Prometheus take it. Re-read on change.
    #[arg(long = "web.config.file", env = "BILGE_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Most client connections open at once; more wait until one closes.
    #[arg(
        long = "web.max-connections",
        env = "BILGE_WEB_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub max_connections: usize,
    /// How long a client has for the TLS handshake and a request's header.
    #[arg(
        long = "web.read-header-timeout",
        env = "BILGE_WEB_READ_HEADER_TIMEOUT",
        default_value = "10s"
    )]
    pub read_header_timeout: String,
    /// How long a request's body may take to arrive.
    #[arg(
        long = "web.body-timeout",
        env = "BILGE_WEB_BODY_TIMEOUT",
        default_value = "30s"
    )]
    pub body_timeout: String,
    /// How long a kept-alive connection may wait between two requests.
    #[arg(
        long = "web.idle-timeout",
        env = "BILGE_WEB_IDLE_TIMEOUT",
        default_value = "60s"
    )]
    pub idle_timeout: String,
}

/// Flags of `bilge build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Project name recorded with the outcome (default: the current directory's name).
    #[arg(long, env = "BILGE_PROJECT")]
    pub project: Option<String>,
    /// Fail fast (or clean first, with --clean-and-retry) when Docker's data root has less free space.
    #[arg(long = "min-free", env = "BILGE_MIN_FREE")]
    pub min_free: Option<String>,
    /// After a disk failure, run the standard cleanup once and the build once more.
    #[arg(long = "clean-and-retry", env = "BILGE_CLEAN_AND_RETRY")]
    pub clean_and_retry: bool,
    /// A running `bilge serve` to send the outcome to (else it is written to the local store).
    #[arg(long, env = "BILGE_SERVER")]
    pub server: Option<String>,
    /// File holding the API token for --server.
    #[arg(long = "server.token-file", env = "BILGE_SERVER_TOKEN_FILE")]
    pub server_token_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign an https --server's certificate (default: the system's).
    #[arg(long = "server.ca-file", env = "BILGE_SERVER_CA_FILE")]
    pub server_ca_file: Option<PathBuf>,
    /// The build command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Flags of `bilge clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Highest level to run: build_cache, stopped_containers, dangling_images, unused_images, unused_volumes, standard or aggressive.
    #[arg(long, env = "BILGE_CLEAN_LEVEL", default_value = "standard")]
    pub level: String,
    /// Only remove objects older than this (e.g. 24h). Default: the policy's `until`.
    #[arg(long, env = "BILGE_CLEAN_UNTIL")]
    pub until: Option<String>,
    /// Stop once the data root has this much free (`15%` or `10GiB`). Default: the policy's.
    #[arg(long = "target-free", env = "BILGE_CLEAN_TARGET_FREE")]
    pub target_free: Option<String>,
    /// Clean only when Docker's data root has less than this available (`10GiB` or `15%`), then
    /// up to the larger of this and the target; exit 3 when it still has less (CI pre-job hooks).
    #[arg(long = "min-free", env = "BILGE_CLEAN_MIN_FREE")]
    pub min_free: Option<String>,
    /// Print the plan with estimated bytes and delete nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Do not ask for confirmation of the aggressive levels.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the plan and the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `bilge df`.
#[derive(Debug, Args)]
pub struct DfArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also walk Docker's data root (and containerd's root), at idle I/O priority, to show what lies there that Docker's accounting does not explain. Slow on a big data root.
    #[arg(long)]
    pub footprint: bool,
}

/// Flags of `bilge healthcheck`. It reads the server's own `BILGE_WEB_LISTEN_ADDRESS` and
/// `BILGE_WEB_CONFIG_FILE`, so in the server's container it needs no flags.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The URL to ask. Default: `/-/healthy` (or `/-/ready`) on loopback at the port of
    /// --web.listen-address, over https when the web config sets up TLS.
    #[arg(long, env = "BILGE_HEALTHCHECK_URL")]
    pub url: Option<String>,
    /// Ask `/-/ready` (ready once the first collection finished) instead of `/-/healthy`.
    #[arg(long, env = "BILGE_HEALTHCHECK_READY")]
    pub ready: bool,
    /// The server's listen address; its port is the one asked.
    #[arg(long = "web.listen-address", env = "BILGE_WEB_LISTEN_ADDRESS")]
    pub listen_address: Option<String>,
    /// The server's web config: with TLS, the check speaks https and trusts exactly the certificate it names.
    #[arg(long = "web.config.file", env = "BILGE_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,
    /// A basic_auth_users name to send (needed for /-/ready when the web config has users).
    #[arg(long = "healthcheck.username", env = "BILGE_HEALTHCHECK_USERNAME")]
    pub username: Option<String>,
    /// File holding that user's password.
    #[arg(
        long = "healthcheck.password-file",
        env = "BILGE_HEALTHCHECK_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// Client certificate (PEM) to present, when the server requires one.
    #[arg(long = "healthcheck.cert-file", env = "BILGE_HEALTHCHECK_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long = "healthcheck.key-file", env = "BILGE_HEALTHCHECK_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn build_takes_everything_after_the_double_dash() {
        let cli =
            Cli::try_parse_from(["bilge", "build", "--project", "p", "--", "make", "-j", "4"])
                .map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::Build(b),
            ..
        }) = cli
        else {
            panic!("not a build: {cli:?}");
        };
        assert_eq!(b.command, ["make", "-j", "4"]);
        assert_eq!(b.project.as_deref(), Some("p"));
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["bilge", "df", "--docker.host", "unix:///x.sock"]);
        assert_eq!(
            cli.map(|c| c.global.docker_host).ok().flatten().as_deref(),
            Some("unix:///x.sock")
        );
    }
}
