//! The router in-process, as axum's `testing` example drives it: the request cases (auth, bad
//! input, limits, query strings, methods) through `oneshot`, without a socket or a daemon. The
//! state is built from a real command line, so the flags and the web config file are the ones a
//! user would give.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use clap::Parser as _;
use tower::ServiceExt as _;

use bilge::cli::{Cli, Command};
use bilge::config::Config;

use crate::util::temp_dir;

const TOKEN: &str = "router-test-token";
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

/// The router of `bilge serve` with a token, a user `ops` (password `pw`), a 1 KiB body limit
/// and a 200 ms body timeout.
fn app() -> Router {
    let dir = temp_dir("router");
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  ops: {}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            bcrypt::hash("pw", 4).unwrap()
        ),
    )
    .unwrap();
    let cli = Cli::try_parse_from([
        "bilge",
        "serve",
        "--docker.host",
        NO_DOCKER,
        "--state.path",
        dir.join("bilge.db").to_str().unwrap(),
        "--webhook.token-file",
        token.to_str().unwrap(),
        "--web.config.file",
        web.to_str().unwrap(),
        "--web.max-body",
        "1KiB",
        "--web.body-timeout",
        "200ms",
    ])
    .unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    let settings = Config::from_args(&cli.global)
        .unwrap()
        .serve(&args)
        .unwrap();
    bilge::server::router(bilge::serve::state(settings).unwrap())
}

/// `Basic` credentials.
fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A request to `uri` with `method`, an optional `Authorization` and `body`.
fn request(method: &str, uri: &str, auth: Option<&str>, body: Body) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        r = r.header(header::AUTHORIZATION, a);
    }
    r.header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap()
}

/// The answer's status, `WWW-Authenticate`, content type and JSON body (Null if none).
async fn send(
    app: Router,
    req: Request<Body>,
) -> (
    StatusCode,
    Option<String>,
    Option<String>,
    serde_json::Value,
) {
    let resp = tokio::time::timeout(Duration::from_secs(10), app.oneshot(req))
        .await
        .expect("no answer within 10s")
        .unwrap();
    let status = resp.status();
    let h = |n: header::HeaderName| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (challenge, kind) = (h(header::WWW_AUTHENTICATE), h(header::CONTENT_TYPE));
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    (
        status,
        challenge,
        kind,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// A body that never ends: reading it would never finish.
fn endless() -> Body {
    Body::from_stream(futures_util::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >())
}

#[tokio::test]
async fn missing_or_wrong_basic_auth_is_a_json_401_with_a_basic_challenge() {
    let app = app();
    for auth in [
        None,
        Some(basic("ops", "nope")),
        Some(basic("nobody", "pw")),
        Some(format!("Bearer {TOKEN}")),
    ] {
        for uri in [
            "/metrics",
            "/",
            "/-/ready",
            "/api/v1/builds?limit=abc",
            "/nowhere",
        ] {
            let (status, challenge, kind, body) = send(
                app.clone(),
                request("GET", uri, auth.as_deref(), Body::empty()),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {auth:?}");
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Basic ")),
                "{uri}: {challenge:?}"
            );
            assert_eq!(kind.as_deref(), Some("application/json"));
            assert!(body["error"].is_string());
        }
    }
}

#[tokio::test]
async fn the_right_user_gets_in_and_liveness_needs_nobody() {
    let app = app();
    let ops = basic("ops", "pw");
    let resp = app
        .clone()
        .oneshot(request("GET", "/metrics", Some(&ops), Body::empty()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"deny"[..]),
        "the web config's headers are added"
    );
    let (status, ..) = send(app, request("GET", "/-/healthy", None, Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_before_the_body_is_read() {
    let app = app();
    let wrong = format!("Bearer not-{TOKEN}");
    let ops = basic("ops", "pw");
    for uri in ["/api/v1/builds", "/api/v1/alerts"] {
        for auth in [None, Some(wrong.as_str()), Some(ops.as_str())] {
            // The body never ends: an answer at all shows it was not read.
            let (status, challenge, _, body) =
                send(app.clone(), request("POST", uri, auth, endless())).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {auth:?}");
            assert_eq!(challenge.as_deref(), Some("Bearer realm=\"bilge\""));
            assert!(body["error"].is_string());
        }
    }
}

#[tokio::test]
async fn build_records_that_break_the_rules_are_json_400s() {
    let app = app();
    let token = format!("Bearer {TOKEN}");
    for (body, says) in [
        ("{not json", "invalid build record"),
        (
            r#"{"project":"a","result":"success","duration_seconds":1e13}"#,
            "more than 31 days",
        ),
        (
            r#"{"project":"a","result":"success","started_at":"1970-01-01T00:00:00Z","duration_seconds":1}"#,
            "before 2000-01-01",
        ),
        (
            r#"{"project":"a","result":"maybe","duration_seconds":1}"#,
            "success",
        ),
    ] {
        let (status, _, kind, json) = send(
            app.clone(),
            request("POST", "/api/v1/builds", Some(&token), Body::from(body)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert_eq!(kind.as_deref(), Some("application/json"));
        assert!(
            json["error"].as_str().unwrap_or_default().contains(says),
            "{body}: {json}"
        );
    }
    let (status, ..) = send(
        app,
        request(
            "POST",
            "/api/v1/builds",
            Some(&token),
            Body::from(r#"{"project":"a","result":"success","duration_seconds":2}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn bodies_beyond_the_size_or_the_time_limit_are_refused() {
    let app = app();
    let token = format!("Bearer {TOKEN}");
    for uri in ["/api/v1/builds", "/api/v1/alerts"] {
        let big = Body::from(vec![b' '; 4096]);
        let (status, _, _, json) = send(app.clone(), request("POST", uri, Some(&token), big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {json}");
        assert!(
            json["error"]
                .as_str()
                .unwrap_or_default()
                .contains("--web.max-body")
        );
        let (status, _, _, json) =
            send(app.clone(), request("POST", uri, Some(&token), endless())).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{uri}: {json}");
        assert!(
            json["error"]
                .as_str()
                .unwrap_or_default()
                .contains("--web.body-timeout")
        );
    }
}

#[tokio::test]
async fn query_string_and_method_errors_are_json_too() {
    let app = app();
    let ops = basic("ops", "pw");
    for (method, uri, want) in [
        ("GET", "/api/v1/builds?limit=abc", StatusCode::BAD_REQUEST),
        ("GET", "/api/v1/builds?limit=0", StatusCode::BAD_REQUEST),
        ("GET", "/api/v1/cleanups?limit=-1", StatusCode::BAD_REQUEST),
        ("GET", "/api/v1/plan?until=soon", StatusCode::BAD_REQUEST),
        ("DELETE", "/api/v1/builds", StatusCode::METHOD_NOT_ALLOWED),
        ("POST", "/metrics", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/api/v1/nothing", StatusCode::NOT_FOUND),
    ] {
        let (status, _, kind, json) =
            send(app.clone(), request(method, uri, Some(&ops), Body::empty())).await;
        assert_eq!(status, want, "{method} {uri}: {json}");
        assert_eq!(kind.as_deref(), Some("application/json"), "{method} {uri}");
        assert!(json["error"].is_string(), "{method} {uri}: {json}");
    }
    let (status, _, _, json) = send(
        app,
        request("GET", "/api/v1/builds?limit=abc", Some(&ops), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["error"].as_str().unwrap_or_default().contains("limit"),
        "{json}"
    );
}
