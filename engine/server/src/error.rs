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
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: json!([]) }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        let id = ulid::Ulid::generate().to_string();
        tracing::error!(error_id = %id, error = %error, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("internal error; the server log has the details under error id {id}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code, "message": self.message, "details": self.details}))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match &r {
            JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            _ => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", format!("a part of the URL is not valid: {}", r.body_text()))
    }
}

/// The `code` of an error answer made outside our handlers (the router's 405,
/// a body over the size limit, …), by status.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        s if s.is_server_error() => "internal",
        _ => "error",
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
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut error = ApiError::new(status, code_for_status(status), message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            error.headers_mut().insert(name.clone(), value.clone());
        }
    }
    error
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        match e {
            CommandError::Rejected(r) => match r {
                Rejection::UnknownWorkflow(_) => ApiError::new(S::NOT_FOUND, "unknown_workflow", message),
                Rejection::UnknownRecordType(_) => ApiError::new(S::NOT_FOUND, "unknown_record_type", message),
                Rejection::UnknownTransition { available, .. } => {
                    ApiError::new(S::NOT_FOUND, "unknown_transition", message).with_details(json!({"transitions": available}))
                }
                Rejection::NotInThisState { state, allowed_from, .. } => {
                    ApiError::new(S::CONFLICT, "transition_not_allowed", message).with_details(json!({"state": state, "allowed_from": allowed_from}))
                }
                Rejection::Forbidden(_) => ApiError::new(S::FORBIDDEN, "forbidden", message),
                Rejection::GuardFailed { .. } => ApiError::new(S::FORBIDDEN, "guard_failed", message),
                Rejection::InvalidInput(errors) => {
                    ApiError::new(S::UNPROCESSABLE_ENTITY, "form_invalid", "the submitted data is not valid").with_details(json!(errors))
                }
                Rejection::Posting(refused) => ApiError::new(S::UNPROCESSABLE_ENTITY, "posting_refused", message).with_details(json!(refused)),
                Rejection::Rule(err) => ApiError::new(S::UNPROCESSABLE_ENTITY, "rule_failed", message)
                    .with_details(json!([{"script": err.script, "file": err.file, "line": err.line, "column": err.column, "kind": err.kind}])),
            },
            CommandError::InstanceNotFound(_) | CommandError::RecordNotFound(_) => ApiError::not_found(message),
            CommandError::BadQuery(_) => ApiError::new(S::BAD_REQUEST, "invalid_query", message),
            CommandError::InvalidReferences(errors) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "form_invalid", "the submitted data is not valid").with_details(json!(errors))
            }
            CommandError::Referenced(_) => ApiError::new(S::CONFLICT, "record_referenced", message),
            CommandError::AlreadyExists(_) => ApiError::new(S::CONFLICT, "already_exists", message),
            CommandError::Ledger(v) => {
                let dims: Vec<String> = v.dims.iter().map(|(k, val)| format!("{k} `{val}`")).collect();
                let message = format!("not enough in {} for {}: {} requested, {} available", v.ledger, dims.join(", "), v.requested, v.available);
                ApiError::new(S::CONFLICT, "ledger_violation", message)
                    .with_details(json!({"ledger": v.ledger, "dimensions": v.dims, "requested": v.requested, "available": v.available}))
            }
            CommandError::UnknownBundleVersion(_) => ApiError::new(S::NOT_FOUND, "unknown_bundle_version", message),
            CommandError::StaleVersion { expected, current } => {
                ApiError::new(S::CONFLICT, "version_conflict", message).with_details(json!({"expected_version": expected, "current_version": current}))
            }
            CommandError::IdempotencyKeyReused => ApiError::new(S::UNPROCESSABLE_ENTITY, "idempotency_key_reused", message),
            CommandError::TooMuchContention => ApiError::new(S::CONFLICT, "contention", message),
            CommandError::Store(flowform_store::StoreError::Closed) => ApiError::new(S::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down"),
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
