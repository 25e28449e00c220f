//! The HTTP error answer: [`AppError`] and how it becomes a response. Every refusal is JSON
//! `{"error": "..."}` with its 4xx (a 401 also says how to authenticate) and is not logged: the
//! caller caused it and is told what to do. An internal error is logged here, once, and answered
//! with a plain 500 that shows none of its details. A leaf: it imports nothing from the crate.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The error behind an internal-error answer, kept with its source for the log.
pub type Internal = Box<dyn std::error::Error + Send + Sync>;

/// An error answer.
#[derive(Debug)]
pub enum AppError {
    /// 400 with a message for the caller.
    BadRequest(String),
    /// 401: missing or wrong credentials.
    Unauthorized,
    /// 404: the endpoint is off or unknown.
    NotFound(String),
    /// 409 / 413 / 429 style refusals with a message.
    Refused(StatusCode, String),
    /// 503: not available right now (e.g. the store).
    Unavailable(String),
    /// 500: logged once when answered, answered without details.
    Internal(Internal),
}

impl AppError {
    /// An internal error from anything that can be one (an error, a message).
    pub fn internal(e: impl Into<Internal>) -> AppError {
        AppError::Internal(e.into())
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Refused(s, _) => *s,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let msg = match self {
            AppError::BadRequest(m)
            | AppError::NotFound(m)
            | AppError::Refused(_, m)
            | AppError::Unavailable(m) => m,
            AppError::Unauthorized => "missing or invalid credentials".to_string(),
            AppError::Internal(e) => {
                tracing::error!(error = %e, "internal error answering a request");
                "internal error".to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The status and the JSON body of `e`'s answer.
    async fn answered(e: AppError) -> (StatusCode, Option<String>, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status();
        let auth = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        (
            status,
            auth,
            serde_json::from_slice(&body).unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn a_refusal_is_json_with_its_status_and_message() {
        let (status, auth, body) = answered(AppError::BadRequest("limit 0".into())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(auth, None);
        assert_eq!(body, serde_json::json!({"error": "limit 0"}));
        let too_big = AppError::Refused(StatusCode::PAYLOAD_TOO_LARGE, "too big".into());
        assert_eq!(answered(too_big).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn an_unauthorized_answer_says_how_to_authenticate() {
        let (status, auth, body) = answered(AppError::Unauthorized).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(auth.as_deref(), Some("Bearer realm=\"bilge\""));
        assert!(body["error"].is_string());
    }

    #[tokio::test]
    async fn an_internal_error_is_a_plain_500_without_its_details() {
        let (status, _, body) = answered(AppError::internal("disk on fire at /secret")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, serde_json::json!({"error": "internal error"}));
    }
}
