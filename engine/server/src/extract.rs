//! Extractors that turn every rejection into an [`ApiError`].

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header::ACCEPT_LANGUAGE;
use axum::http::request::Parts;
use flowform_core::Lang;

/// JSON body; malformed JSON gets our error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query string; bad parameters get our error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Path parameters; a parameter that is not valid UTF-8 or not a number
/// where one is expected gets our error shape (`invalid_path`).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// The language for messages: `Accept-Language`, else the app's default.
pub struct UserLang(pub Lang);

impl FromRequestParts<AppState> for UserLang {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let from_header = parts.headers.get(ACCEPT_LANGUAGE).and_then(|h| h.to_str().ok()).and_then(Lang::from_accept_language);
        let default = if state.runtime.bundle().model.app.default_language == "en" { Lang::En } else { Lang::ZhCn };
        // A signed-in browser's own setting comes before the header.
        if let Some(language) = crate::auth::cookie(&parts.headers, crate::auth::SESSION_COOKIE).and_then(|c| state.runtime.session(c)).and_then(|s| s.language)
        {
            return Ok(UserLang(if language == "en" { Lang::En } else { Lang::ZhCn }));
        }
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
                let key = v.to_str().map_err(|_| ApiError::new(crate::codes::ErrorCode::InvalidIdempotencyKey, "Idempotency-Key must be visible ASCII"))?;
                if key.is_empty() || key.len() > 200 {
                    return Err(ApiError::new(crate::codes::ErrorCode::InvalidIdempotencyKey, "Idempotency-Key must be 1 to 200 characters"));
                }
                Ok(IdempotencyKey(Some(key.to_string())))
            }
        }
    }
}
