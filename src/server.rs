//! The HTTP surface: one axum `Router` over shared state. Handlers read snapshots and the store;
//! none waits on Docker. Errors are JSON `{"error": "..."}` with the right status; bad input is
//! not logged, internal errors are logged once and answered with a plain 500.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::cleanup::{Engine, Level};
use crate::collect::Collector;
use crate::format::parse_duration;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::webhook::Webhook;

/// Settings of `bilge serve` only.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The metrics path.
    pub telemetry_path: String,
    /// The webhook/API bearer token; `None` turns the authenticated endpoints off.
    pub token: Option<String>,
    /// Extra `instance` values that name this host.
    pub instances: Vec<String>,
    /// Relay alerts for other instances.
    pub relay: bool,
    /// Largest request body.
    pub max_body: usize,
}

/// Everything a handler may need.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The metric families.
    pub metrics: Metrics,
    /// The collectors and their snapshot.
    pub collector: Arc<Collector>,
    /// The state store.
    pub store: Store,
    /// `bilge serve`'s settings.
    pub serve: Arc<ServeConfig>,
    /// Cap on distinct project label values.
    pub max_projects: usize,
    /// The cleanup engine.
    pub engine: Arc<Engine>,
    /// The Alertmanager webhook's settings and memory.
    pub webhook: Arc<Webhook>,
    /// When the server started.
    pub started: Instant,
    /// Notified when the build API stored an outcome, so the build metrics catch up at once.
    pub builds_changed: Arc<Notify>,
}

/// An error answer.
#[derive(Debug)]
pub enum AppError {
    /// 400 with a message for the caller.
    BadRequest(String),
    /// 401: missing or wrong credentials.
    Unauthorized,
    /// 404: the endpoint is off or unknown.
    NotFound(String),
    /// 409 / 429 style refusals with a message.
    Refused(StatusCode, String),
    /// 503: not available right now (e.g. the store).
    Unavailable(String),
    /// 500: logged here, answered without details.
    Internal(crate::Error),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or invalid credentials".to_string(),
            ),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            AppError::Refused(s, m) => (s, m),
            AppError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            AppError::Internal(e) => {
                tracing::error!(error = %e, "internal error answering a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
        };
        let mut resp = (status, Json(serde_json::json!({ "error": msg }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bilge\""),
            );
        }
        resp
    }
}

/// `?limit=` for history endpoints.
#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    /// Rows to return (1 to 1000, default 50).
    pub limit: Option<usize>,
}

impl LimitQuery {
    /// The validated limit.
    pub fn get(&self) -> Result<usize, AppError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=1000).contains(&n) => Ok(n),
            Some(n) => Err(AppError::BadRequest(format!(
                "limit {n} is out of range (1 to 1000)"
            ))),
        }
    }
}

/// Builds the router for `state`.
pub fn router(state: AppState) -> Router {
    let max_body = state.serve.max_body;
    let telemetry = state.serve.telemetry_path.clone();
    Router::new()
        .route("/", get(page))
        .route(&telemetry, get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/api/v1/builds", get(list_builds).post(push_build))
        .route("/api/v1/cleanups", get(list_cleanups))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/alerts", post(alerts))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.metrics.exposition().await,
    )
        .into_response()
}

async fn healthy() -> &'static str {
    "bilge is healthy.\n"
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.collector.ready() {
        (StatusCode::OK, "bilge is ready.\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "bilge is not ready: the first collection has not finished.\n",
        )
            .into_response()
    }
}

async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint".into())
}

async fn list_builds(
    State(s): State<AppState>,
    Query(q): Query<LimitQuery>,
) -> Result<Response, AppError> {
    let limit = q.get()?;
    let store = s.store.clone();
    let builds = tokio::task::spawn_blocking(move || store.list_builds(limit))
        .await
        .map_err(|e| AppError::Internal(crate::Error::Other(e.to_string())))?
        .map_err(|_| AppError::Unavailable("the state store is unavailable".into()))?;
    Ok(Json(serde_json::json!({ "builds": builds })).into_response())
}

/// Checks `Authorization` against the API token: `Bearer <token>`, or Basic auth whose password
/// is the token (any user name), compared in constant time.
pub fn authorize(headers: &HeaderMap, token: &str) -> Result<(), AppError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if crate::webhook::authorized(value, token) {
        Ok(())
    } else {
        Err(AppError::Unauthorized)
    }
}

/// `POST /api/v1/builds`: validates one outcome and stores it; the build metrics follow the store.
async fn push_build(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let Some(token) = s.serve.token.as_deref() else {
        return Err(AppError::NotFound(
            "the build API is off: start bilge serve with --webhook.token-file to accept build outcomes".into(),
        ));
    };
    authorize(&headers, token)?;
    let body = body.map_err(|e| AppError::Refused(e.status(), e.body_text()))?;
    let mut record =
        crate::build::record::parse(&body, chrono::Utc::now()).map_err(AppError::BadRequest)?;
    let store = s.store.clone();
    let row = record.clone();
    let id = tokio::task::spawn_blocking(move || store.insert_build(&row))
        .await
        .map_err(|e| AppError::Internal(crate::Error::Other(e.to_string())))?
        .map_err(|_| {
            AppError::Unavailable(
                "the state store is unavailable; the build was not recorded".into(),
            )
        })?;
    record.id = Some(id);
    s.builds_changed.notify_one();
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

async fn list_cleanups(
    State(s): State<AppState>,
    Query(q): Query<LimitQuery>,
) -> Result<Response, AppError> {
    let limit = q.get()?;
    let store = s.store.clone();
    let cleanups = tokio::task::spawn_blocking(move || store.list_cleanups(limit))
        .await
        .map_err(|e| AppError::Internal(crate::Error::Other(e.to_string())))?
        .map_err(|_| AppError::Unavailable("the state store is unavailable".into()))?;
    Ok(Json(serde_json::json!({ "cleanups": cleanups })).into_response())
}

async fn alerts(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    crate::webhook::handle(
        &s.webhook,
        &s.engine,
        &s.metrics,
        &headers,
        body,
        s.serve.max_body,
    )
    .await
}

/// `?level=` and `?until=` for `/api/v1/plan`.
#[derive(Debug, Deserialize)]
pub struct PlanQuery {
    /// Highest level to plan (default: every level the host allows).
    pub level: Option<String>,
    /// Minimum age (default: the policy's `until`).
    pub until: Option<String>,
}

/// Candidates listed per level in `/api/v1/plan` (the counts and bytes cover all of them).
const PLAN_CANDIDATES: usize = 50;

async fn plan(State(s): State<AppState>, Query(q): Query<PlanQuery>) -> Result<Response, AppError> {
    let level = match q.level.as_deref() {
        Some(l) => Level::parse(l).map_err(AppError::BadRequest)?,
        None => Level::AGGRESSIVE,
    };
    let until = q
        .until
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(AppError::BadRequest)?;
    let Some(mut p) = s.engine.plan_from_snapshot(level, until) else {
        return Err(AppError::Unavailable(
            "no Docker usage collected yet; try again after the first Docker collection".into(),
        ));
    };
    let snapshot = s.collector.snapshot();
    for l in &mut p.levels {
        l.candidates.truncate(PLAN_CANDIDATES);
    }
    let policy = s.engine.policy();
    let target = snapshot
        .data_root
        .as_ref()
        .map(|d| policy.target_free.bytes_for(d.usage.size));
    Ok(Json(serde_json::json!({
        "plan": p,
        "as_of": snapshot.docker_last_success,
        "data_root": snapshot.data_root,
        "target_free": policy.target_free.to_string(),
        "target_free_bytes": target,
        "max_level": policy.max_level,
        "allow_volumes": policy.allow_volumes,
        "protect_labels": policy.protect_labels,
        "cleanup_in_progress": s.engine.is_running(),
    }))
    .into_response())
}

async fn page(State(s): State<AppState>) -> Html<String> {
    let snapshot = s.collector.snapshot();
    let store = s.store.clone();
    let (builds, cleanups) = tokio::task::spawn_blocking(move || {
        (
            store.list_builds(10).unwrap_or_default(),
            store.list_cleanups(10).unwrap_or_default(),
        )
    })
    .await
    .unwrap_or_default();
    Html(crate::page::render(
        &snapshot,
        &builds,
        &cleanups,
        chrono::Utc::now(),
    ))
}
