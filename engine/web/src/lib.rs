//! The Flowform web app: server-rendered, phone-first pages generated from
//! the bundle. Nothing here names a workflow, form, field, record type, role
//! or team of any application: every label, state, color, option and button
//! comes from the definitions, and a workflow added to them appears on the
//! home pages of those who may start it at the next reload.
//!
//! The server authenticates (session cookie) and puts a [`Viewer`] in the
//! request's extensions; pages call the same runtime functions as the JSON
//! API, with the same authorization and visibility.

#![recursion_limit = "256"]

pub mod assets;
mod charts;
mod dashboards;
mod diagram;
pub mod display;
pub mod formview;
mod pages;
mod render;
pub mod texts;

use axum::Router;
use axum::extract::FromRef;
use flowform_core::Actor;
use flowform_runtime::Runtime;
use std::sync::Arc;

pub use render::security_headers;

/// The signed-in user of a page request, put in the request's extensions by
/// the server after it checked the session.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub actor: Actor,
    /// The session's CSRF token: every form carries it, every post is checked.
    pub csrf: String,
    /// Whether the request's `Origin` (when sent) is this server.
    pub same_origin: bool,
    /// The language set on the user's account (`flowform user set --language`).
    pub language: Option<String>,
}

/// The pages, for a server whose state gives the runtime.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Runtime>: FromRef<S>,
{
    use axum::routing::{get, post};
    let statics = Router::new().route("/static/{file}", get(assets::serve)).layer(tower_http::compression::CompressionLayer::new().gzip(true).br(true));
    Router::new()
        .route("/", get(pages::home))
        .route("/tasks", get(pages::tasks))
        .route("/start", get(pages::start_list))
        .route("/start/{workflow}", get(pages::start_form).post(pages::start_submit))
        .route("/i/{id}", get(pages::instance))
        .route("/i/{id}/t/{transition}", get(pages::transition_form).post(pages::transition_submit))
        .route("/list/{workflow}", get(pages::list))
        .route("/board", get(pages::board))
        .route("/inbox", get(pages::inbox))
        .route("/inbox/{seq}/read", post(pages::mark_read))
        .route("/me", get(pages::me))
        .route("/lang/{code}", post(pages::set_lang))
        .route("/pick/{record_type}", get(pages::pick))
        .route("/records", get(pages::record_types))
        .route("/records/{record_type}", get(pages::records))
        .route("/records/{record_type}/new", get(pages::record_new).post(pages::record_create))
        .route("/records/{record_type}/labels", get(pages::labels))
        .route("/records/{record_type}/{id}", get(pages::record))
        .route("/records/{record_type}/{id}/edit", get(pages::record_edit).post(pages::record_update))
        .route("/records/{record_type}/{id}/qr.svg", get(pages::qr))
        .route("/records/{record_type}/{id}/archive", post(pages::record_archive))
        .route("/ledgers/{ledger}", get(pages::ledger))
        .route("/dashboards", get(dashboards::dashboards))
        .route("/dashboards/{name}", get(dashboards::dashboard))
        .route("/reports/{name}", get(dashboards::report))
        .route("/reports/{name}/rows", get(dashboards::report_rows))
        .route("/admin", get(pages::admin))
        .route("/admin/reload", post(pages::admin_reload))
        .route("/admin/outbox/{seq}/retry", post(pages::admin_retry))
        .route("/admin/diff", get(pages::admin_diff))
        .route("/admin/replay", get(pages::admin_replay).post(pages::admin_replay_run))
        .route("/admin/diagram/{workflow}", get(pages::diagram))
        .merge(statics)
}
