//! Extractors that turn every rejection into an [`ApiError`].

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header::{ACCEPT_LANGUAGE, AUTHORIZATION};
use axum::http::request::Parts;
use flowform_core::{Actor, Lang};

/// JSON body; malformed JSON gets our error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query string; bad parameters get our error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The authenticated user, from `Authorization: Bearer <token>`.
pub struct Auth(pub Actor);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header; get a token with `flowform token --user NAME`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        // Known tokens come from memory; only an unknown one (or a changed users
        // file) reads the file, on a blocking thread.
        let actor = match state.runtime.authenticate_cached(token) {
            Some(actor) => Some(actor),
            None => {
                let runtime = state.runtime.clone();
                let token = token.to_string();
                tokio::task::spawn_blocking(move || runtime.authenticate(&token)).await.map_err(ApiError::internal)??
            }
        };
        actor.map(Auth).ok_or_else(|| ApiError::unauthorized("the token is not valid"))
    }
}

/// The language for messages: `Accept-Language`, else the app's default.
pub struct UserLang(pub Lang);

impl FromRequestParts<AppState> for UserLang {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let from_header = parts.headers.get(ACCEPT_LANGUAGE).and_then(|h| h.to_str().ok()).and_then(Lang::from_accept_language);
        let default = if state.runtime.bundle().model.app.default_language == "en" { Lang::En } else { Lang::ZhCn };
        Ok(UserLang(from_header.unwrap_or(default)))
    }
}

/// The optional `Idempotency-Key` header.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("idempotency-key") {
            None => Ok(IdempotencyKey(None)),
            Some(v) => {
                let key = v
                    .to_str()
                    .map_err(|_| ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_idempotency_key", "Idempotency-Key must be visible ASCII"))?;
                if key.is_empty() || key.len() > 200 {
                    return Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_idempotency_key", "Idempotency-Key must be 1 to 200 characters"));
                }
                Ok(IdempotencyKey(Some(key.to_string())))
            }
        }
    }
}
