//! The Flowform HTTP API (axum). A thin layer: it authenticates, parses, calls
//! the runtime and renders. It knows nothing of any particular application.
//!
//! [`app`] builds the router (tested with `oneshot`, no socket); [`serve`]
//! runs it on a bound listener until the shutdown future resolves.

pub mod auth;
pub mod codes;
mod docs;
mod error;
mod extract;
mod files;
pub mod metrics;
mod records;
mod reports;
mod routes;
mod views;

use axum::Router;
use flowform_runtime::Runtime;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use codes::ErrorCode;
pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub auth: auth::AuthConfig,
}

impl axum::extract::FromRef<AppState> for Arc<Runtime> {
    fn from_ref(s: &AppState) -> Arc<Runtime> {
        s.runtime.clone()
    }
}

/// The whole API and the sign-in pages.
pub fn app(runtime: Arc<Runtime>) -> Router {
    app_with(runtime, auth::AuthConfig::default())
}

/// [`app`] with how the server is reached (e.g. behind a TLS proxy).
pub fn app_with(runtime: Arc<Runtime>, config: auth::AuthConfig) -> Router {
    let (api, document) = documented().split_for_parts();
    let spec = Arc::new(document.to_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
    let state = AppState { runtime, auth: config };
    let pages = flowform_web::router::<AppState>().layer(axum::middleware::from_fn_with_state(state.clone(), auth::web_session));
    api.merge(auth::pages())
        .merge(pages)
        .route("/api/v1/openapi.json", axum::routing::get(move || openapi_json(spec.clone())))
        .route("/api/v1/docs", axum::routing::get(docs::page))
        .route("/static/api-docs.js", axum::routing::get(docs::script))
        .fallback(routes::not_found)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::hsts))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(error::panic_response))
        // Outermost, so that a request that panicked is counted with its 500.
        .layer(axum::middleware::from_fn_with_state(state, metrics::track))
}

/// Every documented route, with the OpenAPI document they make: the router
/// and the document come from the same `#[utoipa::path]` annotations, so
/// they cannot drift apart.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::router())
        .merge(records::router())
        .merge(auth::router())
        .merge(files::router())
        .merge(reports::router())
        .routes(utoipa_axum::routes!(metrics::metrics))
}

/// The OpenAPI 3.1 document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().into_openapi()
}

async fn openapi_json(spec: Arc<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], spec.as_str().to_string()).into_response()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Flowform API", description = "The HTTP API of the Flowform workflow engine; see docs/api.md for errors, visibility and examples."),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("session" = []))
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                auth::SESSION_COOKIE,
                "the browser session from POST /login; changes also need X-CSRF-Token",
            ))),
        );
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in
/// flight finish. Handlers see the client's address (sign-in throttling, audit).
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown).await
}

/// Serves `app` to the local CLI on a Unix socket (created with mode 0600 in
/// the data directory): every request there acts as `cli` with the admin
/// role, as the owner of the data directory already may.
pub async fn serve_admin_socket(path: &std::path::Path, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    serve_admin_listener(bind_admin_socket(path)?, path, app, shutdown).await
}

/// Binds the admin socket (mode 0600), replacing a stale one, so that it
/// exists before the server says it is serving.
pub fn bind_admin_socket(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // Bound in a private folder (0700), made 0600, then moved into place: at
    // no moment can another local user connect to it.
    let parent = path.parent().unwrap_or(std::path::Path::new("."));
    let private = parent.join(format!(".admin-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
    let _ = std::fs::remove_file(path);
    std::fs::rename(&staged, path)?;
    let _ = std::fs::remove_dir(&private);
    Ok(listener)
}

/// [`serve_admin_socket`] on a socket already bound with [`bind_admin_socket`].
pub async fn serve_admin_listener(
    listener: tokio::net::UnixListener,
    path: &std::path::Path,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(axum::Extension(auth::LocalAdmin));
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    let _ = std::fs::remove_file(path);
    result
}
