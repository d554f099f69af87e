//! The one error shape of the API: `{code, message, details}` with a stable
//! snake_case `code`. Every layer's error maps to exactly one status and code
//! here. 5xx answers hide internals and log them with an error id.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowform_core::Rejection;
use flowform_runtime::CommandError;
use serde_json::{Value, json};

pub use crate::codes::ErrorCode;

/// The error shape, as the OpenAPI document describes it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, snake_case (docs/api.md lists them).
    pub code: String,
    /// For people, in the user's language where the engine has it.
    pub message: String,
    /// Field errors (`[{field, code, message}]`) or other structured detail.
    #[schema(value_type = Object)]
    pub details: Value,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    /// An error with `code` and the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status: code.status(), code, message: message.into(), details: json!([]) }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, what)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        let id = ulid::Ulid::generate().to_string();
        tracing::error!(error_id = %id, error = %error, "internal error");
        ApiError::new(ErrorCode::Internal, format!("internal error; the server log has the details under error id {id}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code.as_str(), "message": self.message, "details": self.details}))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match &r {
            JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType),
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidBody),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson),
            // A body that cannot be read as text at all: bad request, with the code of a wrong body.
            _ => (StatusCode::BAD_REQUEST, ErrorCode::InvalidBody),
        };
        ApiError { status, ..ApiError::new(code, r.body_text()) }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(ErrorCode::InvalidPath, format!("a part of the URL is not valid: {}", r.body_text()))
    }
}

/// The `code` of an error answer made outside our handlers (the router's 405,
/// a body over the size limit, …), by status.
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBody,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyRequests,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}

/// What a request that panicked answers (the catch-panic layer): a logged
/// 500 with an error id, in the error shape; the server goes on.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown".into());
    ApiError::internal(format!("a request panicked: {what}")).into_response()
}

/// Middleware: every error answer of the API has the `{code, message,
/// details}` shape, also those made before a handler runs (405 from the
/// router, 413 from the body limit, rejections of axum's own extractors).
pub async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // A client that asks for Chinese gets the top-level message in Chinese too.
    let zh = request
        .headers()
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(flowform_core::Lang::from_accept_language)
        .is_some_and(|l| l == flowform_core::Lang::ZhCn);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        return if zh { in_chinese(response).await } else { response };
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    // The status stays as it was made; the code is the one for that status.
    let mut error = ApiError { status, ..ApiError::new(code_for_status(status), message) }.into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            error.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if zh { in_chinese(error).await } else { error }
}

/// An error answer whose message is not Chinese gets its code's Chinese
/// meaning as `message`, the original kept as `message_en`.
async fn in_chinese(response: Response) -> Response {
    let is_json = response.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else { return Response::from_parts(parts, axum::body::Body::empty()) };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    let code = value.get("code").and_then(serde_json::Value::as_str).and_then(ErrorCode::parse);
    let message = value.get("message").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
    if let Some(code) = code
        && message.is_ascii()
    {
        value["message_en"] = serde_json::Value::String(message);
        value["message"] = serde_json::Value::String(code.zh().to_string());
    }
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(value.to_string()))
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(ErrorCode::InvalidQuery, r.body_text())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let message = e.to_string();
        match e {
            CommandError::Rejected(r) => match r {
                Rejection::UnknownWorkflow(_) => ApiError::new(ErrorCode::UnknownWorkflow, message),
                Rejection::UnknownRecordType(_) => ApiError::new(ErrorCode::UnknownRecordType, message),
                Rejection::UnknownTransition { available, .. } => {
                    ApiError::new(ErrorCode::UnknownTransition, message).with_details(json!({"transitions": available}))
                }
                Rejection::NotInThisState { state, allowed_from, .. } => {
                    ApiError::new(ErrorCode::TransitionNotAllowed, message).with_details(json!({"state": state, "allowed_from": allowed_from}))
                }
                Rejection::Forbidden(_) => ApiError::new(ErrorCode::Forbidden, message),
                Rejection::GuardFailed { .. } => ApiError::new(ErrorCode::GuardFailed, message),
                Rejection::InvalidInput(errors) => ApiError::new(ErrorCode::FormInvalid, "the submitted data is not valid").with_details(json!(errors)),
                Rejection::Posting(refused) => ApiError::new(ErrorCode::PostingRefused, message).with_details(json!(refused)),
                Rejection::Rule(err) => ApiError::new(ErrorCode::RuleFailed, message)
                    .with_details(json!([{"script": err.script, "file": err.file, "line": err.line, "column": err.column, "kind": err.kind}])),
            },
            CommandError::InstanceNotFound(_) | CommandError::RecordNotFound(_) => ApiError::not_found(message),
            CommandError::BadQuery(_) => ApiError::new(ErrorCode::InvalidQuery, message),
            CommandError::InvalidReferences(errors) => ApiError::new(ErrorCode::FormInvalid, "the submitted data is not valid").with_details(json!(errors)),
            CommandError::Referenced(_) => ApiError::new(ErrorCode::RecordReferenced, message),
            CommandError::AlreadyExists(_) => ApiError::new(ErrorCode::AlreadyExists, message),
            CommandError::Ledger(v) => {
                let dims: Vec<String> = v.dims.iter().map(|(k, val)| format!("{k} `{val}`")).collect();
                let message = format!("not enough in {} for {}: {} requested, {} available", v.ledger, dims.join(", "), v.requested, v.available);
                ApiError::new(ErrorCode::LedgerViolation, message)
                    .with_details(json!({"ledger": v.ledger, "dimensions": v.dims, "requested": v.requested, "available": v.available}))
            }
            CommandError::UnknownBundleVersion(_) => ApiError::new(ErrorCode::UnknownBundleVersion, message),
            CommandError::StaleVersion { expected, current } => {
                ApiError::new(ErrorCode::VersionConflict, message).with_details(json!({"expected_version": expected, "current_version": current}))
            }
            CommandError::IdempotencyKeyReused => ApiError::new(ErrorCode::IdempotencyKeyReused, message),
            CommandError::TooMuchContention => ApiError::new(ErrorCode::Contention, message),
            CommandError::Unavailable(_) => ApiError::new(ErrorCode::NotReady, message),
            CommandError::LinkedStart { workflow, item, source } => {
                let inner = ApiError::from(*source);
                ApiError::new(ErrorCode::LinkedStartFailed, message)
                    .with_details(json!({"workflow": workflow, "item": item, "code": inner.code.as_str(), "details": inner.details}))
            }
            CommandError::Store(flowform_store::StoreError::Closed) => ApiError::new(ErrorCode::ShuttingDown, "the server is shutting down"),
            other => ApiError::internal(other),
        }
    }
}

impl From<flowform_store::StoreError> for ApiError {
    fn from(e: flowform_store::StoreError) -> Self {
        ApiError::from(CommandError::Store(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A panic in a handler is a logged 500 in the error shape, and the next request is served.
    #[tokio::test]
    async fn a_panicking_request_answers_500_and_the_server_goes_on() {
        #[allow(clippy::panic)]
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app = axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response));
        let get = |path: &'static str| axum::http::Request::builder().uri(path).body(axum::body::Body::empty()).unwrap_or_default();
        let r = app.clone().oneshot(get("/boom")).await.unwrap_or_else(|e| match e {});
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["code"], "internal");
        assert!(v["message"].as_str().unwrap_or_default().contains("error id"));
        let r = app.oneshot(get("/ok")).await.unwrap_or_else(|e| match e {});
        assert_eq!(r.status(), StatusCode::OK);
    }
}
