//! The OpenAPI document and a test generated from it: every documented
//! operation is called with a plausible request and with broken ones (bad
//! path values, a body that is not JSON, an unknown parameter), as an admin
//! and without credentials; none may answer 5xx, and every error has the
//! documented `{code, message, details}` shape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request};
use flowform_tests::TestApp;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A concrete URL for a documented path: known names where the hospital has them.
fn fill(path: &str, bad: bool) -> String {
    let mut out = path.to_string();
    for (param, good) in [("{type}", "asset"), ("{name}", "repair"), ("{id}", "NO-SUCH-ID"), ("{seq}", "1")] {
        out = out.replace(param, if bad { "%FF" } else { good });
    }
    if path.starts_with("/api/v1/ledgers/") && !bad {
        out = out.replace("/repair/", "/stock/");
    }
    if path.ends_with("/transitions/{name}") && !bad {
        out = out.replace("/transitions/repair", "/transitions/accept");
    }
    out
}

async fn send(app: &TestApp, method: &Method, uri: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_covers_the_api() {
    let mut app = TestApp::hospital();
    let (status, spec) = send(&app, &Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"), "{}", spec["openapi"]);
    let paths = spec["paths"].as_object().unwrap();
    for expected in [
        "/api/v1/workflows/{name}/instances",
        "/api/v1/instances/{id}/transitions/{name}",
        "/api/v1/records/{type}/{id}",
        "/api/v1/admin/users",
        "/api/v1/tokens/{id}",
        "/api/v1/admin/audit",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object() && spec["components"]["securitySchemes"]["session"].is_object());
    let (status, _) = send(&app, &Method::GET, "/api/v1/docs", None, None).await;
    assert_eq!(status, 200);
    // The document is served as it is generated from the code.
    assert_eq!(spec, serde_json::to_value(flowform_server::openapi()).unwrap());
    app.get("/api/v1/me", "admin").await.expect(200);
}

#[tokio::test]
async fn every_documented_operation_answers_without_5xx_and_errors_have_the_shape() {
    let mut app = TestApp::hospital();
    let admin = app.token("admin");
    let nurse = app.token("nurse_li");
    let spec = serde_json::to_value(flowform_server::openapi()).unwrap();
    let mut calls = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let has_body = op.get("requestBody").is_some();
            let good_body = has_body.then_some(r#"{"data": {}}"#);
            let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
                (fill(path, false), Some(admin.as_str()), good_body),
                (fill(path, false), Some(nurse.as_str()), good_body),
                (fill(path, false), None, good_body),
                (fill(path, true), Some(admin.as_str()), good_body),
                (format!("{}?zzz=%FF&limit=-1", fill(path, false)), Some(admin.as_str()), good_body),
                (fill(path, false), Some(admin.as_str()), has_body.then_some("{not json")),
                (fill(path, false), Some(admin.as_str()), has_body.then_some(r#"[1, 2, 3]"#)),
            ];
            for (uri, token, body) in cases {
                let (status, answer) = send(&app, &method, &uri, token, body).await;
                calls += 1;
                assert!(status < 500, "{method} {uri}: {status} {answer}");
                if status >= 400 {
                    assert!(
                        answer["code"].is_string() && answer["message"].is_string() && answer.get("details").is_some(),
                        "{method} {uri}: {status} without the error shape: {answer}"
                    );
                    assert!(
                        !(status == 404 && answer["message"].as_str().unwrap_or("").contains("no such endpoint")),
                        "{method} {uri} is documented but not routed"
                    );
                }
            }
        }
    }
    assert!(calls > 200, "{calls}");
}
