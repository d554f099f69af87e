//! Who is asking: bearer tokens, browser sessions with CSRF protection, the
//! local admin socket; and the routes that manage them (sign-in page, API
//! tokens, users, the audit log).
//!
//! A request is authenticated in this order: the admin socket (the CLI, as
//! `cli` with the admin role); `Authorization: Bearer`; the session cookie.
//! A request authenticated by its cookie that changes something must carry
//! the session's CSRF token (`X-CSRF-Token` header or `_csrf` form field) and,
//! when the browser sends one, an `Origin` of this server.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Path};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use flowform_core::Actor;
use flowform_core::bundle::escape_html as escape;
use flowform_runtime::accounts::{AccountError, NewUser, UserChange};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ff_session";
/// The cookie that carries the sign-in form's CSRF token before a session exists.
const LOGIN_CSRF_COOKIE: &str = "ff_login_csrf";

/// Marks requests that came through the local admin socket.
#[derive(Clone, Copy, Debug)]
pub struct LocalAdmin;

/// How the server is reached, for cookies and client addresses.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Behind a reverse proxy that terminates TLS: cookies are `Secure`, and
    /// the client address is the last `X-Forwarded-For` entry (from the proxy only).
    pub behind_proxy: bool,
    /// The proxies' addresses (`FLOWFORM_TRUSTED_PROXIES`); empty: loopback.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// The authenticated user.
pub struct Auth(pub Actor);

/// How a request was authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    LocalAdmin,
    Token,
    Session { csrf: String },
}

/// The authenticated user and how.
pub struct Authenticated {
    pub actor: Actor,
    pub via: Via,
}

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The client's address: the connection's; behind a declared proxy, and only
/// for a connection from that proxy (loopback, or `trusted_proxies`), the
/// address the proxy appended last to `X-Forwarded-For`. An IPv6 client
/// counts as its /64 (one host can use a whole /64).
pub(crate) fn client_address(parts: &Parts, config: &AuthConfig) -> Option<String> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let from_proxy = peer.is_some_and(|p| if config.trusted_proxies.is_empty() { p.is_loopback() } else { config.trusted_proxies.contains(&p) });
    let forwarded = if config.behind_proxy && from_proxy {
        parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<std::net::IpAddr>().ok())
            .next_back()
    } else {
        None
    };
    forwarded.or(peer).map(|ip| match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        other => other.to_string(),
    })
}

/// Compares secrets without stopping at the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request's `Origin`, when present, is this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else { return false };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
    origin_host.eq_ignore_ascii_case(host)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if parts.extensions.get::<LocalAdmin>().is_some() {
            let actor = Actor { id: "cli".into(), name: "flowform CLI".into(), roles: vec!["admin".into()], teams: Vec::new(), email: None, department: None };
            return Ok(Authenticated { actor, via: Via::LocalAdmin });
        }
        if let Some(header) = parts.headers.get(AUTHORIZATION) {
            let token = header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
            let actor = state.runtime.authenticate(token).ok_or_else(|| ApiError::unauthorized("the token is not valid (unknown, expired or revoked)"))?;
            return Ok(Authenticated { actor, via: Via::Token });
        }
        if let Some(cookie) = cookie(&parts.headers, SESSION_COOKIE) {
            let session = state.runtime.session(cookie).ok_or_else(|| ApiError::unauthorized("the session has ended; sign in again"))?;
            if !is_safe(&parts.method) {
                let sent = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
                if !same_origin(&parts.headers) || !sent.is_some_and(|t| same_secret(t, &session.csrf)) {
                    state.runtime.audit_denied(&session.actor, &format!("{} {} without a valid CSRF token", parts.method, parts.uri.path()));
                    return Err(ApiError::new(
                        crate::codes::ErrorCode::CsrfFailed,
                        "this request needs the page's CSRF token (X-CSRF-Token) and must come from this site",
                    ));
                }
            }
            return Ok(Authenticated { actor: session.actor, via: Via::Session { csrf: session.csrf } });
        }
        Err(ApiError::unauthorized("sign in at /login, or send `Authorization: Bearer <token>` (get one with `flowform token --user NAME`)"))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Authenticated::from_request_parts(parts, state).await.map(|a| Auth(a.actor))
    }
}

/// The client address of a request, for the audit log and throttling.
pub struct ClientAddress(pub Option<String>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(parts, &state.auth)))
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let message = e.to_string();
        match e {
            AccountError::NoUser(_) | AccountError::NoToken(_) => ApiError::not_found(message),
            AccountError::UserExists(_) => ApiError::new(crate::codes::ErrorCode::AlreadyExists, message),
            AccountError::Invalid(_) => ApiError::new(crate::codes::ErrorCode::InvalidAccount, message),
            AccountError::BadCredentials => ApiError::unauthorized(message),
            AccountError::Throttled { .. } => ApiError::new(crate::codes::ErrorCode::TooManyRequests, message),
            AccountError::Forbidden(_) => ApiError::new(crate::codes::ErrorCode::Forbidden, message),
            AccountError::Store(e) => ApiError::from(e),
        }
    }
}

pub(crate) fn require_admin(s: &AppState, actor: &Actor, what: &str) -> Result<(), ApiError> {
    if actor.has_role("admin") {
        return Ok(());
    }
    s.runtime.audit_denied(actor, what);
    Err(ApiError::new(crate::codes::ErrorCode::Forbidden, "this needs the `admin` role"))
}

async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&flowform_runtime::Runtime) -> Result<T, AccountError> + Send + 'static,
) -> Result<T, ApiError> {
    let runtime = s.runtime.clone();
    Ok(tokio::task::spawn_blocking(move || f(&runtime)).await.map_err(ApiError::internal)??)
}

/// The sign-in pages (HTML, not part of the OpenAPI document).
pub fn pages() -> axum::Router<AppState> {
    axum::Router::new().route("/login", get(login_page).post(login)).route("/logout", post(logout))
}

/// Puts the signed-in user of a page request (session cookie) in the
/// request's extensions as a [`flowform_web::Viewer`]; pages without one
/// send the browser to the sign-in page.
pub async fn web_session(State(s): State<AppState>, mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if let Some(session) = cookie(request.headers(), SESSION_COOKIE).and_then(|c| s.runtime.session(c)) {
        let same_origin = same_origin(request.headers());
        request.extensions_mut().insert(flowform_web::Viewer { actor: session.actor, csrf: session.csrf, same_origin, language: session.language });
    }
    next.run(request).await
}

/// `Strict-Transport-Security` on every answer served over TLS: behind the
/// declared proxy, when it says the client came by HTTPS.
pub async fn hsts(State(s): State<AppState>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let tls = s.auth.behind_proxy && request.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let mut response = next.run(request).await;
    if tls {
        response.headers_mut().insert("strict-transport-security", axum::http::HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
    response
}

/// The documented account routes: tokens, sessions, users, audit.
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(end_my_sessions))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(set_password))
        .routes(routes!(end_user_sessions))
        .routes(routes!(audit))
}

// ---- tokens ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenQuery {
    /// Admins: `all`, or a user id; others: their own only.
    user: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts", summary = "API tokens (never the secret)", params(("user" = Option<String>, Query, description = "admins: a user id or `all`")), responses((status = 200, description = "API tokens (never the secret)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn list_tokens(State(s): State<AppState>, Auth(actor): Auth, ApiQuery(q): ApiQuery<TokenQuery>) -> Result<Json<Value>, ApiError> {
    let user = match q.user.as_deref() {
        None => Some(actor.id.clone()),
        Some(u) if u == actor.id => Some(actor.id.clone()),
        Some(other) => {
            require_admin(&s, &actor, "list other users' tokens")?;
            (other != "all").then(|| other.to_string())
        }
    };
    Ok(Json(json!({"items": s.runtime.tokens(user.as_deref())})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTokenBody {
    #[serde(default)]
    name: Option<String>,
    /// Lifetime in days (default 90).
    #[serde(default)]
    expires_in_days: Option<i64>,
    /// Admins only: a token for another user.
    #[serde(default)]
    user: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", summary = "Create an API token; the secret is shown once", request_body(content = Object, description = "{'name': '...', 'expires_in_days': 90, 'user': 'admins only'}", content_type = "application/json"), responses((status = 201, description = "Create an API token; the secret is shown once", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn create_token(State(s): State<AppState>, Auth(actor): Auth, ApiJson(body): ApiJson<NewTokenBody>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = body.user.clone().unwrap_or_else(|| actor.id.clone());
    if user != actor.id {
        require_admin(&s, &actor, "create a token for another user")?;
    }
    let token = blocking(&s, move |r| r.create_token(&user, body.name.as_deref().unwrap_or(""), body.expires_in_days, &actor.id)).await?;
    Ok((StatusCode::CREATED, Json(json!(token))))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "accounts", summary = "Revoke a token", params(("id" = String, Path, description = "token id (tok_…)")), responses((status = 200, description = "Revoke a token", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn revoke_token(State(s): State<AppState>, Auth(actor): Auth, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let owner = if actor.has_role("admin") { None } else { Some(actor.id.as_str()) };
    let owner = owner.map(str::to_string);
    Ok(Json(json!(blocking(&s, move |r| r.revoke_token(&id, owner.as_deref(), &actor.id)).await?)))
}

#[utoipa::path(delete, path = "/api/v1/me/sessions", tag = "accounts", summary = "Sign out everywhere", responses((status = 200, description = "Sign out everywhere", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn end_my_sessions(State(s): State<AppState>, Auth(actor): Auth, ClientAddress(address): ClientAddress) -> Result<Json<Value>, ApiError> {
    blocking(&s, move |r| r.end_sessions(&actor.id, &actor.id, address.as_deref())).await?;
    Ok(Json(json!({"ended": true})))
}

// ---- users (admin) ----

#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", summary = "Users (admin)", responses((status = 200, description = "Users (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn list_users(State(s): State<AppState>, Auth(actor): Auth) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "list users")?;
    Ok(Json(json!({"items": s.runtime.users()})))
}

#[utoipa::path(get, path = "/api/v1/admin/users/{id}", tag = "admin", summary = "One user (admin)", params(("id" = String, Path, description = "user id")), responses((status = 200, description = "One user (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn get_user(State(s): State<AppState>, Auth(actor): Auth, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "read a user")?;
    let user = s.runtime.user_account(&id).ok_or_else(|| ApiError::not_found(format!("no user `{id}`")))?;
    Ok(Json(json!(flowform_runtime::accounts::UserView::from(&user))))
}

#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", summary = "Create a user (admin)", request_body(content = Object, description = "{'id', 'name', 'roles', 'teams', 'department', 'language', 'email', 'password'}", content_type = "application/json"), responses((status = 201, description = "Create a user (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn create_user(State(s): State<AppState>, Auth(actor): Auth, ApiJson(body): ApiJson<NewUser>) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&s, &actor, "create a user")?;
    let user = blocking(&s, move |r| r.create_user(body, &actor.id)).await?;
    Ok((StatusCode::CREATED, Json(json!(user))))
}

#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin", summary = "Change a user (admin)", params(("id" = String, Path, description = "user id")), request_body(content = Object, description = "{'name', 'roles', 'teams', 'department', 'language', 'email', 'disabled'} — only what changes", content_type = "application/json"), responses((status = 200, description = "Change a user (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn update_user(
    State(s): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserChange>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "change a user")?;
    let user = blocking(&s, move |r| r.update_user(&id, body, &actor.id)).await?;
    Ok(Json(json!(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

#[utoipa::path(post, path = "/api/v1/admin/users/{id}/password", tag = "admin", summary = "Set a password (admin)", params(("id" = String, Path, description = "user id")), request_body(content = Object, description = "{'password': '...'}", content_type = "application/json"), responses((status = 200, description = "Set a password (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn set_password(
    State(s): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "set a password")?;
    blocking(&s, move |r| r.set_password(&id, &body.password, &actor.id)).await?;
    Ok(Json(json!({"changed": true})))
}

#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/sessions", tag = "admin", summary = "End a user's sessions (admin)", params(("id" = String, Path, description = "user id")), responses((status = 200, description = "End a user's sessions (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn end_user_sessions(
    State(s): State<AppState>,
    Auth(actor): Auth,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "end a user's sessions")?;
    if s.runtime.user_account(&id).is_none() {
        return Err(ApiError::not_found(format!("no user `{id}`")));
    }
    blocking(&s, move |r| r.end_sessions(&id, &actor.id, address.as_deref())).await?;
    Ok(Json(json!({"ended": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<u64>,
    limit: Option<usize>,
    kind: Option<String>,
}

/// Security events, newest first (`before` pages back).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", summary = "Security events, newest first (admin)", params(("kind" = Option<String>, Query, description = "event kind"), ("before" = Option<u64>, Query, description = "seq"), ("limit" = Option<u32>, Query, description = "1–1000")), responses((status = 200, description = "Security events, newest first (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn audit(State(s): State<AppState>, Auth(actor): Auth, ApiQuery(q): ApiQuery<AuditQuery>) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "read the audit log")?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::new(crate::codes::ErrorCode::InvalidQuery, "`limit` must be between 1 and 1000"));
    }
    let runtime = s.runtime.clone();
    let kind = q.kind.clone();
    let items = tokio::task::spawn_blocking(move || -> Result<Vec<_>, flowform_store::StoreError> {
        // Filtering by kind reads on until a page is full (the log is small next to instances).
        let mut out = Vec::new();
        let mut before = q.before;
        loop {
            let batch = runtime.audit_log(before, 1000)?;
            let done = batch.len() < 1000;
            before = batch.last().map(|e| e.seq);
            out.extend(batch.into_iter().filter(|e| kind.as_ref().is_none_or(|k| &e.kind == k)));
            if out.len() >= limit || done {
                out.truncate(limit);
                return Ok(out);
            }
        }
    })
    .await
    .map_err(ApiError::internal)??;
    let next = if items.len() == limit { items.last().map(|e| e.seq) } else { None };
    Ok(Json(json!({"items": items, "next_before": next})))
}

// ---- sign-in pages ----

struct Texts {
    lang: &'static str,
    title: &'static str,
    username: &'static str,
    password: &'static str,
    submit: &'static str,
    failed: &'static str,
    throttled: &'static str,
    expired: &'static str,
}

const ZH: Texts = Texts {
    lang: "zh-CN",
    title: "登录",
    username: "用户名",
    password: "密码",
    submit: "登录",
    failed: "用户名或密码不正确。",
    throttled: "登录失败次数过多，请稍后再试。",
    expired: "页面已过期，请重新登录。",
};

const EN: Texts = Texts {
    lang: "en",
    title: "Sign in",
    username: "User name",
    password: "Password",
    submit: "Sign in",
    failed: "Wrong user name or password.",
    throttled: "Too many failed attempts; try again later.",
    expired: "The page expired; please sign in again.",
};

fn texts(s: &AppState, headers: &HeaderMap) -> &'static Texts {
    let from_header = headers.get(axum::http::header::ACCEPT_LANGUAGE).and_then(|h| h.to_str().ok()).and_then(flowform_core::Lang::from_accept_language);
    let lang = from_header.unwrap_or(if s.runtime.bundle().model.app.default_language == "en" { flowform_core::Lang::En } else { flowform_core::Lang::ZhCn });
    if lang == flowform_core::Lang::En { &EN } else { &ZH }
}

fn page(t: &Texts, app_title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · {app}</title><link rel=\"stylesheet\" href=\"{css}\"></head><body><main>{body}</main></body></html>",
        lang = t.lang,
        title = escape(t.title),
        app = escape(app_title),
        css = flowform_web::assets::url("app.css"),
    )
}

/// Security headers of every page this module serves.
fn page_response(status: StatusCode, html: String, cookies: Vec<String>) -> Response {
    let mut response = (status, Html(html)).into_response();
    let h = response.headers_mut();
    h.insert(
        "content-security-policy",
        axum::http::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert("x-content-type-options", axum::http::HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", axum::http::HeaderValue::from_static("same-origin"));
    h.insert("cache-control", axum::http::HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(v) = axum::http::HeaderValue::from_str(&c) {
            h.append(SET_COOKIE, v);
        }
    }
    response
}

fn cookie_attributes(s: &AppState) -> &'static str {
    if s.auth.behind_proxy { "; Path=/; HttpOnly; SameSite=Lax; Secure" } else { "; Path=/; HttpOnly; SameSite=Lax" }
}

fn login_form(s: &AppState, t: &Texts, error: Option<&str>, username: &str, next: &str, status: StatusCode) -> Response {
    let mut csrf = [0u8; 16];
    rand::fill(&mut csrf);
    let csrf: String = csrf.iter().map(|b| format!("{b:02x}")).collect();
    let app_title = s.runtime.bundle().model.app.title.get(t.lang, &s.runtime.bundle().model.app.name).to_string();
    let error_html = error.map(|e| format!("<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>", escape(e))).unwrap_or_default();
    let described = if error.is_some() { " aria-describedby=\"login-error\"" } else { "" };
    let body = format!(
        "<h1>{app}</h1><form method=\"post\" action=\"/login\" class=\"card\"><h2>{title}</h2>{error_html}\
         <input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"username\">{ul}</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required value=\"{uv}\"{described}>\
         <label for=\"password\">{pl}</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{described}>\
         <button type=\"submit\">{submit}</button></form>",
        app = escape(&app_title),
        title = escape(t.title),
        ul = escape(t.username),
        uv = escape(username),
        next = escape(&local_path(next)),
        pl = escape(t.password),
        submit = escape(t.submit),
    );
    let cookie = format!("{LOGIN_CSRF_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict{}", if s.auth.behind_proxy { "; Secure" } else { "" });
    page_response(status, page(t, &app_title, &body), vec![cookie])
}

/// `next` if it is a path on this site, else `/` (never another site).
fn local_path(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') && !next.chars().any(char::is_control) {
        next.to_string()
    } else {
        "/".to_string()
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

async fn login_page(State(s): State<AppState>, headers: HeaderMap, axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    let t = texts(&s, &headers);
    if cookie(&headers, SESSION_COOKIE).and_then(|c| s.runtime.session(c)).is_some() {
        return Redirect::to(&local_path(&q.next)).into_response();
    }
    login_form(&s, t, None, "", &q.next, StatusCode::OK)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    next: String,
}

async fn login(State(s): State<AppState>, ClientAddress(address): ClientAddress, headers: HeaderMap, form: axum::Form<LoginForm>) -> Response {
    let t = texts(&s, &headers);
    let form = form.0;
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE);
    if !same_origin(&headers) || form.csrf.is_empty() || !expected.is_some_and(|e| same_secret(e, &form.csrf)) {
        return login_form(&s, t, Some(t.expired), &form.username, &form.next, StatusCode::FORBIDDEN);
    }
    let runtime = s.runtime.clone();
    let (username, password) = (form.username.clone(), form.password);
    let result = tokio::task::spawn_blocking(move || runtime.login(&username, &password, address.as_deref())).await;
    match result {
        Ok(Ok(session)) => {
            let mut response = Redirect::to(&local_path(&form.next)).into_response();
            let session_cookie = format!("{SESSION_COOKIE}={}{}", session.cookie, cookie_attributes(&s));
            let clear = format!("{LOGIN_CSRF_COOKIE}=; Path=/login; Max-Age=0");
            for c in [session_cookie, clear] {
                if let Ok(v) = axum::http::HeaderValue::from_str(&c) {
                    response.headers_mut().append(SET_COOKIE, v);
                }
            }
            response
        }
        Ok(Err(AccountError::Throttled { .. })) => login_form(&s, t, Some(t.throttled), &form.username, &form.next, StatusCode::TOO_MANY_REQUESTS),
        Ok(Err(AccountError::BadCredentials)) => login_form(&s, t, Some(t.failed), &form.username, &form.next, StatusCode::UNAUTHORIZED),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    /// `everywhere`: end every session of the user.
    #[serde(default)]
    scope: String,
}

async fn logout(State(s): State<AppState>, ClientAddress(address): ClientAddress, headers: HeaderMap, form: axum::Form<LogoutForm>) -> Response {
    let Some(cookie_value) = cookie(&headers, SESSION_COOKIE) else { return Redirect::to("/login").into_response() };
    let Some(session) = s.runtime.session(cookie_value) else { return Redirect::to("/login").into_response() };
    if !same_origin(&headers) || !same_secret(&form.csrf, &session.csrf) {
        return ApiError::new(crate::codes::ErrorCode::CsrfFailed, "this form needs the page's CSRF token").into_response();
    }
    let (everywhere, cookie_value, who) = (form.scope == "everywhere", cookie_value.to_string(), session.actor.id.clone());
    let result =
        blocking(&s, move |r| if everywhere { r.end_sessions(&who, &who, address.as_deref()) } else { r.logout(&cookie_value, address.as_deref()) }).await;
    if let Err(e) = result {
        return e.into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, "a=1; ff_session=abc ; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn origin_must_match_the_host_when_sent() {
        let mut h = HeaderMap::new();
        h.insert(HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut req = axum::http::Request::builder().uri("/");
        for f in forwarded {
            req = req.header("x-forwarded-for", *f);
        }
        let (mut parts, _) = req.body(()).unwrap_or_default().into_parts();
        parts.extensions.insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))));
        parts
    }

    #[test]
    fn the_forwarded_address_is_trusted_only_from_the_declared_proxy() {
        let off = AuthConfig::default();
        let on = AuthConfig { behind_proxy: true, trusted_proxies: Vec::new() };
        // Not declared: the header is ignored.
        assert_eq!(client_address(&parts("127.0.0.1:5000", &["1.2.3.4"]), &off).as_deref(), Some("127.0.0.1"));
        // Declared, from the proxy (loopback): the last address the proxy appended.
        assert_eq!(client_address(&parts("127.0.0.1:5000", &["6.6.6.6", "1.2.3.4"]), &on).as_deref(), Some("1.2.3.4"));
        assert_eq!(client_address(&parts("127.0.0.1:5000", &["6.6.6.6, 1.2.3.4"]), &on).as_deref(), Some("1.2.3.4"));
        // Declared, but the connection is not from the proxy: ignored.
        assert_eq!(client_address(&parts("8.8.8.8:5000", &["1.2.3.4"]), &on).as_deref(), Some("8.8.8.8"));
        // Garbage is not an address.
        assert_eq!(client_address(&parts("127.0.0.1:5000", &["not-an-ip"]), &on).as_deref(), Some("127.0.0.1"));
        // IPv6 clients count by /64.
        assert_eq!(client_address(&parts("[2001:db8:1:2:3:4:5:6]:5000", &[]), &off).as_deref(), Some("2001:db8:1:2::/64"));
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
