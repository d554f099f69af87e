//! Templates (handlebars, strict, HTML-escaped) and the page response with
//! its security headers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use handlebars::Handlebars;
use serde_json::Value;
use std::sync::LazyLock;

static TEMPLATES: &[(&str, &str)] = &[
    ("layout", include_str!("../templates/layout.hbs")),
    ("field", include_str!("../templates/field.hbs")),
    ("instance_card", include_str!("../templates/instance_card.hbs")),
    ("home", include_str!("../templates/home.hbs")),
    ("tasks", include_str!("../templates/tasks.hbs")),
    ("start", include_str!("../templates/start.hbs")),
    ("form", include_str!("../templates/form.hbs")),
    ("instance", include_str!("../templates/instance.hbs")),
    ("list", include_str!("../templates/list.hbs")),
    ("inbox", include_str!("../templates/inbox.hbs")),
    ("me", include_str!("../templates/me.hbs")),
    ("pick", include_str!("../templates/pick.hbs")),
    ("records", include_str!("../templates/records.hbs")),
    ("record", include_str!("../templates/record.hbs")),
    ("labels", include_str!("../templates/labels.hbs")),
    ("ledger", include_str!("../templates/ledger.hbs")),
    ("admin", include_str!("../templates/admin.hbs")),
    ("diff", include_str!("../templates/diff.hbs")),
    ("replay", include_str!("../templates/replay.hbs")),
    ("message", include_str!("../templates/message.hbs")),
    ("dashboard", include_str!("../templates/dashboard.hbs")),
    ("report", include_str!("../templates/report.hbs")),
    ("report_rows", include_str!("../templates/report_rows.hbs")),
];

static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.set_prevent_indent(true);
    for (name, text) in TEMPLATES {
        if let Err(e) = h.register_template_string(name, *text) {
            // A template of ours that does not parse: the unit test below fails first.
            tracing::error!(template = name, error = %e, "template does not parse");
        }
    }
    h
});

/// Renders template `name` with `data`.
pub fn html(name: &str, data: &Value) -> Result<String, String> {
    REGISTRY.render(name, data).map_err(|e| format!("template {name}: {e}"))
}

/// The Content-Security-Policy and the other headers of every page.
pub fn security_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("permissions-policy", HeaderValue::from_static("camera=(self), geolocation=(self), microphone=()"));
}

/// A whole page: `body` rendered, then wrapped in the layout.
pub fn page(status: StatusCode, body_template: &str, mut data: Value) -> Response {
    let body = match html(body_template, &data) {
        Ok(b) => b,
        Err(e) => return internal(&e),
    };
    data["body"] = Value::String(body);
    match html("layout", &data) {
        Ok(page) => {
            let mut r = (status, axum::response::Html(page)).into_response();
            security_headers(r.headers_mut());
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => internal(&e),
    }
}

/// A fragment for htmx (no layout).
pub fn fragment(template: &str, data: &Value) -> Response {
    match html(template, data) {
        Ok(b) => {
            let mut r = axum::response::Html(b).into_response();
            security_headers(r.headers_mut());
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => internal(&e),
    }
}

fn internal(e: &str) -> Response {
    tracing::error!(error = e, "page could not be rendered");
    let mut r = (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered; the error is in the server log").into_response();
    security_headers(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses() {
        let mut h = handlebars::Handlebars::new();
        h.set_strict_mode(true);
        for (name, text) in super::TEMPLATES {
            if let Err(e) = h.register_template_string(name, *text) {
                panic!("{name}: {e}");
            }
        }
    }
}
