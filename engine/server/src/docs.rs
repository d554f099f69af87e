//! `/api/v1/docs`: a small local page that reads `/api/v1/openapi.json` and
//! lists every operation with its parameters and answers. Served from the
//! binary (no CDN), with a strict Content-Security-Policy.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

pub async fn page() -> Response {
    let mut r = Html(include_str!("assets/api-docs.html")).into_response();
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

pub async fn script() -> Response {
    let mut r = include_str!("assets/api-docs.js").into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}
