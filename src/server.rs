//! The HTTP surface: one axum `Router` over shared state. Handlers read snapshots and the store;
//! none waits on Docker. Errors are [`AppError`]s: JSON `{"error": "..."}` with the right status;
//! bad input is not logged, internal errors are logged once and answered with a plain 500.
//!
//! Access: with `basic_auth_users` in the web config every endpoint needs one of those users
//! ([`access`] says which need what), checked by [`guard`] before any handler runs, so before any
//! body is read; `/-/healthy` stays open for liveness probes (it answers a constant). A refusal is a
//! JSON 401 with `WWW-Authenticate: Basic`. Every error answer is JSON, a bad query string
//! ([`JsonQuery`]) and a wrong method included; bodies are read within `--web.body-timeout`.
//!
//! The webhook and `POST /api/v1/builds` take the API token through one extractor,
//! [`ApiToken`]: `Authorization: Bearer <token>`, or basic auth whose password is the token (the
//! user name is ignored), checked against every token of `--webhook.token-file` in constant time
//! ([`crate::webhook::tokens`]; the file is re-read when it changes). Without a token file both
//! endpoints are off (404); a refused request changes nothing. The webhook handler counts every answer,
//! refusals included, in `bilge_webhook_requests_total{outcome}`; what each alert does is
//! decided in [`crate::webhook`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::cleanup::Engine;
use crate::collect::Collector;
use crate::format::parse_duration;
pub use crate::http_error::AppError;
use crate::metrics::Metrics;
use crate::model::Level;
use crate::store::Store;
use crate::web::Live;
use crate::webhook::{Credential, Decision, Outcome, ParseError, Payload, RELAYED_HEADER, Webhook};

/// Settings of `bilge serve` only.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The metrics path.
    pub telemetry_path: String,
    /// Largest request body.
    pub max_body: usize,
    /// Longest time a request body may take to arrive.
    pub body_timeout: Duration,
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
    /// The web config in force (TLS, users, headers) and the basic-auth checker.
    pub web: Arc<Live>,
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

/// `Query`, refusing a bad query string with a JSON 400 like every other error.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for JsonQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| JsonQuery(q))
            .map_err(|e| AppError::BadRequest(format!("bad query string: {}", e.body_text())))
    }
}

/// What a request needs to get in, with users configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: `/-/healthy`, a constant answer for liveness probes.
    Open,
    /// The API token, checked by the handler ([`ApiToken`]): the webhook and the build API.
    Token,
    /// One of the web config's `basic_auth_users`: everything else, unknown paths included.
    Users,
}

/// Which credentials `method` on `path` needs when the web config has users.
pub fn access(method: &Method, path: &str) -> Access {
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/-/healthy") => Access::Open,
        (&Method::POST, "/api/v1/alerts" | "/api/v1/builds") => Access::Token,
        _ => Access::Users,
    }
}

/// Basic auth for every [`Access::Users`] request (before any handler, so before any body is
/// read) and the web config's headers on every answer.
pub async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let web = s.web.current();
    let mut resp = if web.has_users() && access(req.method(), req.uri().path()) == Access::Users {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if s.web.auth.allows(&web.config.users, given).await {
            next.run(req).await
        } else {
            let mut r = AppError::Unauthorized.into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"bilge\", charset=\"UTF-8\""),
            );
            r
        }
    } else {
        next.run(req).await
    };
    for (name, value) in &web.config.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// Reads a request body of at most `max` bytes within `timeout`: 413 beyond the size, 408 past
/// the time, 400 for a body that breaks off.
pub async fn read_body(body: Body, max: usize, timeout: Duration) -> Result<Bytes, AppError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Err(_) => Err(AppError::Refused(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {}s (--web.body-timeout)",
                timeout.as_secs_f64()
            ),
        )),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                Err(AppError::Refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {max} bytes (--web.max-body)"),
                ))
            } else {
                Err(AppError::BadRequest(format!(
                    "cannot read the body: {inner}"
                )))
            }
        }
        Ok(Ok(b)) => Ok(b),
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
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
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

async fn method_not_allowed() -> AppError {
    AppError::Refused(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method".into(),
    )
}

async fn list_builds(
    State(s): State<AppState>,
    JsonQuery(q): JsonQuery<LimitQuery>,
) -> Result<Response, AppError> {
    let limit = q.get()?;
    let store = s.store.clone();
    let mut builds = tokio::task::spawn_blocking(move || store.list_builds(limit))
        .await
        .map_err(AppError::internal)?
        .map_err(|_| AppError::Unavailable("the state store is unavailable".into()))?;
    // Rows stored before evidence was masked are masked on the way out.
    mask_evidence(&mut builds);
    Ok(Json(serde_json::json!({ "builds": builds })).into_response())
}

/// Extracted from a request that carries one of the API tokens: the credential it presented
/// (a relay forwards it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken(pub Credential);

/// Why a request did not get past [`ApiToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// No token is configured: the authenticated endpoints are off.
    Off,
    /// Missing or wrong credentials.
    Invalid,
}

impl From<TokenRejection> for AppError {
    fn from(r: TokenRejection) -> AppError {
        match r {
            TokenRejection::Off => AppError::NotFound(
                "this endpoint is off: start bilge serve with --webhook.token-file (the API token of the webhook and the build API)".into(),
            ),
            TokenRejection::Invalid => AppError::Unauthorized,
        }
    }
}

impl IntoResponse for TokenRejection {
    fn into_response(self) -> Response {
        AppError::from(self).into_response()
    }
}

impl FromRequestParts<AppState> for ApiToken {
    type Rejection = TokenRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<ApiToken, TokenRejection> {
        let Some(tokens) = state.webhook.tokens() else {
            return Err(TokenRejection::Off);
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match crate::webhook::tokens::presented(given) {
            Some(c) if tokens.current().accepts(&c) => Ok(ApiToken(c)),
            _ => Err(TokenRejection::Invalid),
        }
    }
}

/// `POST /api/v1/builds`: validates one outcome and stores it; the build metrics follow the store.
async fn push_build(
    State(s): State<AppState>,
    _token: ApiToken,
    body: Body,
) -> Result<Response, AppError> {
    let body = read_body(body, s.serve.max_body, s.serve.body_timeout).await?;
    let mut record =
        crate::builds::record::parse(&body, chrono::Utc::now()).map_err(AppError::BadRequest)?;
    let store = s.store.clone();
    let row = record.clone();
    let id = tokio::task::spawn_blocking(move || store.insert_build(&row))
        .await
        .map_err(AppError::internal)?
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
    JsonQuery(q): JsonQuery<LimitQuery>,
) -> Result<Response, AppError> {
    let limit = q.get()?;
    let store = s.store.clone();
    let cleanups = tokio::task::spawn_blocking(move || store.list_cleanups(limit))
        .await
        .map_err(AppError::internal)?
        .map_err(|_| AppError::Unavailable("the state store is unavailable".into()))?;
    Ok(Json(serde_json::json!({ "cleanups": cleanups })).into_response())
}

/// `POST /api/v1/alerts`: authenticate, read and parse the delivery, let the webhook carry it
/// out, answer what it decided. Every answer is counted by its outcome.
async fn alerts(
    State(s): State<AppState>,
    token: Result<ApiToken, TokenRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (outcome, resp) = match receive_alerts(&s, token, &headers, body).await {
        Ok((payload, decisions)) => {
            // A failed relay: 503, so that Alertmanager delivers again (see `retry_later`).
            let status = if crate::webhook::retry_later(&decisions) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (
                crate::webhook::outcome(&decisions),
                (status, Json(crate::webhook::answer(&payload, &decisions))).into_response(),
            )
        }
        Err((outcome, e)) => (outcome, e.into_response()),
    };
    s.metrics
        .webhook_requests
        .with_label_values(&[outcome.as_str()])
        .inc();
    resp
}

/// The webhook's work for one request: the decisions, or the refusal and how it is counted.
/// The body is read only once the token checked out.
async fn receive_alerts(
    s: &AppState,
    token: Result<ApiToken, TokenRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Payload, Vec<Decision>), (Outcome, AppError)> {
    let ApiToken(credential) = token.map_err(|r| (Outcome::Unauthorized, AppError::from(r)))?;
    let bytes = read_body(body, s.serve.max_body, s.serve.body_timeout)
        .await
        .map_err(|e| (Outcome::BadRequest, e))?;
    // Over the cap: refused whole, before anything is decided (no prune, relay or audit row).
    let delivery = crate::webhook::parse(&bytes, s.webhook.max_alerts()).map_err(|e| {
        let refusal = match &e {
            ParseError::TooManyAlerts { .. } => {
                AppError::Refused(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            ParseError::Invalid(_) => AppError::BadRequest(e.to_string()),
        };
        (Outcome::BadRequest, refusal)
    })?;
    // Any value marks the delivery as relayed (never relayed again), even one that is not text.
    let relayed_by = headers
        .get(RELAYED_HEADER)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let decisions = s
        .webhook
        .deliver(&s.engine, &delivery, &credential, relayed_by)
        .await;
    Ok((delivery.payload, decisions))
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

async fn plan(
    State(s): State<AppState>,
    JsonQuery(q): JsonQuery<PlanQuery>,
) -> Result<Response, AppError> {
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
    let (mut builds, cleanups) = tokio::task::spawn_blocking(move || {
        (
            store.list_builds(10).unwrap_or_default(),
            store.list_cleanups(10).unwrap_or_default(),
        )
    })
    .await
    .unwrap_or_default();
    mask_evidence(&mut builds);
    let budgets = s
        .engine
        .plan_from_snapshot(crate::cleanup::policy::Level::DanglingImages, None)
        .map(|p| crate::cleanup::policy::Budgets::of(&p))
        .unwrap_or_default();
    let trends: Vec<_> = snapshot
        .storage_roots()
        .map(|r| (r.role, s.collector.trend(r.role)))
        .collect();
    Html(crate::page::render(
        &snapshot,
        &budgets,
        &builds,
        &cleanups,
        &trends,
        &s.engine.upcoming_from_snapshot(),
        chrono::Utc::now(),
    ))
}

/// Masks credentials in the evidence of `builds` (see [`crate::builds::record::mask_secrets`]).
fn mask_evidence(builds: &mut [crate::store::BuildRecord]) {
    for b in builds {
        if let Some(e) = &b.evidence {
            b.evidence = Some(crate::builds::record::mask_secrets(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_guard_everything_but_liveness_and_the_token_endpoints() {
        assert_eq!(access(&Method::GET, "/-/healthy"), Access::Open);
        assert_eq!(access(&Method::POST, "/api/v1/alerts"), Access::Token);
        assert_eq!(access(&Method::POST, "/api/v1/builds"), Access::Token);
        for (m, p) in [
            (Method::GET, "/"),
            (Method::GET, "/metrics"),
            (Method::GET, "/-/ready"),
            (Method::GET, "/api/v1/builds"),
            (Method::GET, "/api/v1/cleanups"),
            (Method::GET, "/api/v1/plan"),
            (Method::GET, "/api/v1/alerts"),
            (Method::POST, "/-/healthy"),
            (Method::GET, "/no/such/path"),
        ] {
            assert_eq!(access(&m, p), Access::Users, "{m} {p}");
        }
    }

    #[test]
    fn an_endpoint_without_a_token_is_off_and_says_how_to_turn_it_on() {
        let off = AppError::from(TokenRejection::Off);
        assert_eq!(off.status(), StatusCode::NOT_FOUND);
        assert!(matches!(off, AppError::NotFound(m) if m.contains("--webhook.token-file")));
        assert_eq!(
            AppError::from(TokenRejection::Invalid).status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
