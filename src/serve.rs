//! `bilge serve`: starts the collectors and the HTTP server, and stops both on SIGINT/SIGTERM.
//! The server is the router ([`crate::server`]) on bilge's own listener ([`crate::web::listen`]:
//! TLS from the web config, connection cap, timeouts); the web config is re-read on change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cleanup::{Engine, Policy};
use crate::collect::Collector;
use crate::collect::disk::FilesystemConfig;
use crate::docker::DockerConfig;
use crate::metrics::Metrics;
use crate::server::{AppState, ServeConfig, router};
use crate::store::Store;
use crate::web::{Live, WebSettings};
use crate::webhook::WebhookSettings;
use crate::{Error, Result};

/// How often the build and cleanup metrics look for rows other processes wrote to the store.
const HISTORY_FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Everything `bilge serve` runs with, validated; each part goes to the module that uses it.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The Docker daemon (collector, engine).
    pub docker: DockerConfig,
    /// Filesystem collection.
    pub filesystem: FilesystemConfig,
    /// The SQLite file.
    pub state_path: PathBuf,
    /// The cleanup policy.
    pub policy: Policy,
    /// The cleanup engine's host lock and shutdown grace.
    pub engine: crate::cleanup::engine::Settings,
    /// How long history rows are kept (`--state.retention`).
    pub retention: Duration,
    /// Cap on distinct project label values.
    pub max_projects: usize,
    /// Cap on distinct host label values.
    pub max_hosts: usize,
    /// This host's name (`--host.name`).
    pub host_name: String,
    /// The HTTP server.
    pub web: ServeConfig,
    /// The Alertmanager webhook (and the API tokens it shares with the build API).
    pub webhook: WebhookSettings,
    /// The web config (TLS, users) and the listener's bounds.
    pub http: WebSettings,
}

/// Builds the shared state for a server (used by `run` and by tests).
pub fn state(s: ServeSettings) -> Result<AppState> {
    // reqwest (the relay) finds its TLS provider as the process default.
    crate::web::tls::install_default_provider();
    let web = Arc::new(Live::new(s.http.config_file.clone(), s.http.loaded.clone()));
    let metrics = Metrics::new().map_err(|e| Error::Other(format!("metrics: {e}")))?;
    metrics.history.set_max_projects(s.max_projects);
    metrics.history.set_host(&s.host_name, s.max_hosts);
    let store = Store::new(&s.state_path, metrics.store_errors.clone());
    let webhook_on = s.webhook.tokens.is_some();
    let webhook = Arc::new(crate::webhook::Webhook::new(s.webhook));
    let collector = Arc::new(Collector::new(s.docker, s.filesystem));
    let families = collector
        .families()
        .map_err(|e| Error::Other(format!("metrics: {e}")))?;
    metrics
        .registry
        .register(Box::new(families))
        .map_err(|e| Error::Other(format!("metrics: {e}")))?;
    if webhook_on {
        metrics.start_webhook_outcomes(&crate::webhook::Outcome::ALL.map(|o| o.as_str()));
    }
    let engine = Arc::new(Engine::new(
        s.policy,
        s.engine,
        collector.clone(),
        store.clone(),
        metrics.clone(),
    ));
    Ok(AppState {
        metrics,
        collector,
        store,
        max_projects: s.max_projects,
        serve: Arc::new(s.web),
        engine,
        webhook,
        started: Instant::now(),
        builds_changed: Arc::new(tokio::sync::Notify::new()),
        web,
    })
}

/// Runs the server until `shutdown` resolves.
pub async fn run_until(
    settings: ServeSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listen = settings.web.listen;
    let mut bounds = settings.http.listen;
    let files = crate::web::listen::raise_open_files_limit();
    let (cap, lowered) = crate::web::listen::connection_cap(bounds.max_connections, files);
    if lowered {
        tracing::warn!(
            wanted = bounds.max_connections,
            max_connections = cap,
            open_files_limit = files,
            "--web.max-connections is above what the open files limit leaves room for; using the lower cap"
        );
    }
    bounds.max_connections = cap;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::io(
            format!("cannot listen on {listen} (--web.listen-address)"),
            e,
        )
    })?;
    let retention = settings.retention;
    let state = state(settings)?;
    // ---- history: resumed from the store's summary (its cost does not grow with the history),
    // then followed; old rows pruned in the background.
    if let Err(e) = state.store.check() {
        tracing::warn!(error = %e, "the state store is not usable yet; history will not be kept until it is (see --state.path)");
    }
    state.engine.resume().await;
    let cancel = CancellationToken::new();
    let follower = tokio::spawn(crate::history::follow(
        state.metrics.clone(),
        state.store.clone(),
        state.builds_changed.clone(),
        HISTORY_FOLLOW_INTERVAL,
        cancel.clone(),
    ));
    let retainer = tokio::spawn(crate::history::retain(
        state.store.clone(),
        retention,
        cancel.clone(),
    ));
    let collectors = tokio::spawn(state.collector.clone().run(cancel.clone()));
    let watermarks = tokio::spawn(crate::cleanup::watermark::watch(
        state.engine.clone(),
        cancel.clone(),
    ));
    let web_watch = tokio::spawn(state.web.clone().watch(cancel.clone()));
    let uses = tokio::spawn(state.engine.clone().record_uses(cancel.clone()));
    let policy = state.engine.policy();
    let schedules: Vec<_> = policy
        .schedules
        .iter()
        .map(|s| {
            tokio::spawn(crate::cleanup::schedule::follow(
                state.engine.clone(),
                s.clone(),
                policy.catch_up_delay,
                cancel.clone(),
            ))
        })
        .collect();
    let current = state.web.current();
    tracing::info!(
        address = %listen,
        tls = current.tls.is_some(),
        basic_auth_users = current.config.users.len(),
        max_connections = bounds.max_connections,
        docker = %state.collector.docker_config().host,
        state = %state.store.path().display(),
        webhook = state.webhook.tokens().is_some(),
        relay = state.webhook.relays(),
        max_level = %state.engine.policy().max_level,
        version = crate::VERSION,
        "bilge serving"
    );
    if current.tls.is_none() && current.has_users() {
        tracing::warn!(
            "basic_auth_users without tls_server_config: passwords travel in clear text (--web.config.file)"
        );
    }
    drop(current);
    let live = state.web.clone();
    let engine = state.engine.clone();
    let app = router(state);
    // ---- shutdown: on the signal the engine takes no more work while HTTP drains; then a
    // cleanup in progress gets the grace to stop between levels and record its end.
    let stopping = engine.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.stop();
    };
    crate::web::listen::serve(listener, live, app, bounds, shutdown).await;
    if !engine.shutdown().await {
        tracing::warn!(
            "the cleanup in progress did not stop within --cleanup.shutdown-grace; recorded as interrupted"
        );
    }
    cancel.cancel();
    if let Err(e) = web_watch.await {
        tracing::warn!(error = %e, "web config task ended abnormally");
    }
    if let Err(e) = collectors.await {
        tracing::warn!(error = %e, "collector task ended abnormally");
    }
    if let Err(e) = watermarks.await {
        tracing::warn!(error = %e, "watermark task ended abnormally");
    }
    if let Err(e) = uses.await {
        tracing::warn!(error = %e, "image use recorder ended abnormally");
    }
    for s in schedules {
        if let Err(e) = s.await {
            tracing::warn!(error = %e, "schedule task ended abnormally");
        }
    }
    if let Err(e) = follower.await {
        tracing::warn!(error = %e, "history metrics task ended abnormally");
    }
    if let Err(e) = retainer.await {
        tracing::warn!(error = %e, "retention task ended abnormally");
    }
    tracing::info!("bilge stopped");
    Ok(())
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(settings: ServeSettings) -> Result<()> {
    run_until(settings, shutdown_signal()).await
}
