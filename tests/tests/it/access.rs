//! People and access: accounts, tokens, sessions, visibility, record and
//! ledger permissions, and the defects a security review found — each test
//! named after what it guards, through the public API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use flowform_tests::TestApp;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn repair() -> Value {
    json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU 5 床", "description": "空调不制冷了"})
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

fn total(counts: &Value) -> u64 {
    counts["total"].as_u64().unwrap()
}

async fn on_hand(app: &mut TestApp, part: &str, warehouse: &str) -> i64 {
    let b = app.get(&format!("/api/v1/ledgers/stock/balances?part={part}&warehouse={warehouse}"), "admin").await.expect(200);
    b["items"][0]["on_hand"].as_i64().unwrap()
}

/// A requisition of `lines`, approved (issued) by the keeper; returns its id.
async fn issued_requisition(app: &mut TestApp, lines: Value) -> String {
    let wo = app.start_instance("repair", "nurse_li", repair()).await.expect(201);
    let req = app.start_instance("requisition", "tech_wang", json!({"work_order": wo["id"], "warehouse": "WH-ZY-B-1", "lines": lines})).await.expect(201);
    let id = req["id"].as_str().unwrap().to_string();
    app.transition(&id, "approve", "keeper_qian", json!({})).await.expect(200);
    id
}

// ---- 1. stock out of nothing ----

#[tokio::test]
async fn returning_repeated_lines_cannot_make_stock_out_of_nothing() {
    let mut app = TestApp::hospital();
    let id = issued_requisition(&mut app, json!([{"part": "P-004", "quantity": 1}])).await;
    let before = on_hand(&mut app, "P-004", "WH-ZY-B-1").await;
    let thirty: Vec<Value> = (0..30).map(|_| json!({"part": "P-004", "quantity": 1})).collect();
    app.transition(&id, "return_parts", "tech_wang", json!({"return_lines": thirty})).await.expect(422);
    assert_eq!(on_hand(&mut app, "P-004", "WH-ZY-B-1").await, before, "stock unchanged");
    app.transition(&id, "return_parts", "tech_wang", json!({"return_lines": [{"part": "P-004", "quantity": 1}]})).await.expect(200);
    app.transition(&id, "return_parts", "tech_wang", json!({"return_lines": [{"part": "P-004", "quantity": 1}]})).await.expect(422);
    assert_eq!(on_hand(&mut app, "P-004", "WH-ZY-B-1").await, before + 1);

    let id = issued_requisition(&mut app, json!([{"part": "P-004", "quantity": 2}])).await;
    let before = on_hand(&mut app, "P-004", "WH-ZY-B-1").await;
    let split = json!({"return_lines": [{"part": "P-004", "quantity": 2}, {"part": "P-004", "quantity": 2}]});
    app.transition(&id, "return_parts", "tech_wang", split).await.expect(422);
    assert_eq!(on_hand(&mut app, "P-004", "WH-ZY-B-1").await, before);
}

/// The bound is the engine's, not the rule's: a `post` rule that returns
/// more than was issued is refused with `posting_refused`, stock unchanged.
#[tokio::test]
async fn the_engine_refuses_a_return_over_what_was_issued_whatever_the_rule_says() {
    let mut app = TestApp::hospital_copy();
    // A validation rule that lets everything through.
    app.write("rules/check_return.rhai", "[]\n");
    app.runtime.reload();
    let id = issued_requisition(&mut app, json!([{"part": "P-004", "quantity": 1}])).await;
    let before = on_hand(&mut app, "P-004", "WH-ZY-B-1").await;
    let refused = app
        .transition(&id, "return_parts", "tech_wang", json!({"return_lines": [{"part": "P-004", "quantity": 1}, {"part": "P-004", "quantity": 1}]}))
        .await
        .expect(422);
    assert_eq!(refused["code"], "posting_refused", "{refused}");
    assert_eq!(refused["details"]["ReturnExceedsIssued"]["returnable"], 1, "{refused}");
    assert_eq!(on_hand(&mut app, "P-004", "WH-ZY-B-1").await, before);
    // A return by hand is not possible at all.
    let by_hand = app
        .post(
            "/api/v1/ledgers/stock/movements",
            "keeper_qian",
            json!({"movements": [{"kind": "return", "part": "P-004", "warehouse": "WH-ZY-B-1", "quantity": 1}]}),
        )
        .await
        .expect(422);
    assert_eq!(by_hand["code"], "posting_refused");
}

// ---- 2. record types without roles ----

#[tokio::test]
async fn record_operations_need_the_roles_their_type_grants() {
    let mut app = TestApp::hospital();
    let reading = json!({"data": {"asset": "EQ-000101", "category": "hvac", "reading": 10, "unit": "hours"}});
    app.post("/api/v1/records/meter_reading", "nurse_li", reading.clone()).await.expect(403);
    let created = app.post("/api/v1/records/meter_reading", "tech_wang", reading).await.expect(201);
    let id = created["id"].as_str().unwrap().to_string();
    app.get(&format!("/api/v1/records/meter_reading/{id}"), "nurse_li").await.expect(403);
    app.request(Method::DELETE, &format!("/api/v1/records/meter_reading/{id}?purge=true"), Some("tech_wang"), None, &[]).await.expect(403);
    app.request(Method::DELETE, &format!("/api/v1/records/meter_reading/{id}?purge=true"), Some("manager_zheng"), None, &[]).await.expect(403);
    app.request(Method::DELETE, &format!("/api/v1/records/meter_reading/{id}?purge=true"), Some("admin"), None, &[]).await.expect(200);
    // The trigger acts with the roles it declares (dispatcher), which may start an inspection.
    let over = json!({"data": {"asset": "EQ-000101", "category": "hvac", "reading": 6000, "unit": "hours"}});
    app.post("/api/v1/records/meter_reading", "tech_wang", over).await.expect(201);
    let started = app.get("/api/v1/instances?workflow=inspection", "admin").await.expect(200);
    assert_eq!(started["items"].as_array().unwrap().len(), 1, "{started}");
    assert_eq!(started["items"][0]["requester"], "trigger:meter_reading");
    // Read grants: everyone may pick an asset; vendors are not for nurses.
    app.get("/api/v1/records/asset/EQ-000101", "nurse_li").await.expect(200);
    app.get("/api/v1/records/vendor?limit=5", "nurse_li").await.expect(403);
    app.get("/api/v1/ledgers/stock/balances", "nurse_li").await.expect(403);
    app.get("/api/v1/ledgers/stock/balances", "tech_wang").await.expect(200);
    let denied = app.get("/api/v1/admin/audit?kind=permission_denied", "admin").await.expect(200);
    assert!(denied["items"].as_array().unwrap().iter().any(|e| e["actor"] == "nurse_li"), "{denied}");
}

#[tokio::test]
async fn a_record_type_that_grants_nothing_is_for_admins_only() {
    let mut app = TestApp::hospital_copy();
    let text = std::fs::read_to_string(app.app_dir.join("definitions/records/vendor.yaml")).unwrap();
    let stripped: String = text.lines().filter(|l| !l.starts_with("roles:") && !l.starts_with("access:")).map(|l| format!("{l}\n")).collect();
    app.write("definitions/records/vendor.yaml", &stripped);
    let outcome = app.runtime.reload();
    assert!(serde_json::to_value(&outcome).unwrap()["status"] != "rejected", "{:?}", serde_json::to_value(&outcome));
    app.get("/api/v1/records/vendor", "manager_zheng").await.expect(403);
    app.get("/api/v1/records/vendor", "admin").await.expect(200);
}

// ---- 3. CSV formula injection ----

#[tokio::test]
async fn csv_export_escapes_formulas_and_import_restores_them() {
    let cells = ["=HYPERLINK(\"http://x\"&A1,\"click\")", "+cmd|' /C calc'!A0", "-5", "@SUM(A1)", "\tx", "plain", "'quoted"];
    let rows = vec![cells.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    let csv = flowform_runtime::import::to_csv(&["a".into(), "b".into(), "c".into(), "d".into(), "e".into(), "f".into(), "g".into()], &rows).unwrap();
    let text = String::from_utf8(csv).unwrap();
    for line in text.lines().skip(1) {
        for cell in line.split(',') {
            let cell = cell.trim_matches('"');
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t']), "live formula in {line}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.csv");
    std::fs::write(&path, &text).unwrap();
    let table = flowform_runtime::import::read_table(&path).unwrap();
    let back: Vec<&str> = table.rows[0].1.iter().map(String::as_str).collect();
    assert_eq!(back, cells.to_vec(), "export → import gives back the same text");
}

// ---- 4. ledger overflow ----

#[tokio::test]
async fn huge_quantities_are_refused_with_the_limit_and_never_overflow() {
    let mut app = TestApp::hospital();
    let before = on_hand(&mut app, "P-001", "WH-ZY-B-1").await;
    let post = |q: i64| json!({"movements": [{"kind": "receive", "part": "P-001", "warehouse": "WH-ZY-B-1", "quantity": q}]});
    for q in [i64::MAX, 4_611_686_018_427_387_904, 1_000_001] {
        let refused = app.post("/api/v1/ledgers/stock/movements", "keeper_qian", post(q)).await.expect(422);
        assert_eq!(refused["code"], "posting_refused", "{refused}");
        assert!(refused["message"].as_str().unwrap().contains("1000000"), "names the limit: {refused}");
    }
    assert_eq!(on_hand(&mut app, "P-001", "WH-ZY-B-1").await, before);
    let long = json!({"movements": [{"kind": "receive", "part": "P-001", "warehouse": "WH-ZY-B-1", "quantity": 1, "reason": "x".repeat(501)}]});
    app.post("/api/v1/ledgers/stock/movements", "keeper_qian", long).await.expect(422);
    let many: Vec<Value> = (0..201).map(|_| json!({"kind": "receive", "part": "P-001", "warehouse": "WH-ZY-B-1", "quantity": 1})).collect();
    app.post("/api/v1/ledgers/stock/movements", "keeper_qian", json!({"movements": many})).await.expect(422);
}

#[test]
fn balances_refuse_to_overflow() {
    use flowform_core::ledger::{Balance, Delta, apply};
    let near = Balance { on_hand: i64::MAX - 5, reserved: 0 };
    let delta = Delta { dims: Default::default(), on_hand: 10, reserved: 0 };
    assert!(apply("stock", &near, &delta, true).is_err());
    assert!(apply("stock", &near, &delta, false).is_err(), "even without non_negative");
}

// ---- 6. one error shape ----

#[tokio::test]
async fn every_error_has_the_documented_shape() {
    let mut app = TestApp::hospital();
    for (method, path, status) in [
        (Method::POST, "/api/v1/inbox/abc/read", 400),
        (Method::GET, "/api/v1/instances/%FF", 400),
        (Method::GET, "/api/v1/records/asset/%FF", 400),
        (Method::GET, "/api/v1/admin/reload", 405),
    ] {
        let r = app.request(method.clone(), path, Some("admin"), None, &[]).await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.body);
        assert!(r.body["code"].is_string() && r.body["message"].is_string() && r.body.get("details").is_some(), "{method} {path}: {}", r.body);
    }
    let dup = json!({"data": {"code": "D-ICU", "name": "重症监护室"}});
    let r = app.post("/api/v1/records/department", "admin", dup.clone()).await;
    if r.status == StatusCode::CREATED {
        let again = app.post("/api/v1/records/department", "admin", dup).await.expect(409);
        assert_eq!(again["code"], "already_exists", "{again}");
    } else {
        assert_eq!(r.body["code"], "already_exists", "{}", r.body);
    }
}

// ---- accounts, tokens, sessions ----

#[tokio::test]
async fn a_disabled_user_and_a_revoked_token_are_refused_on_the_next_request() {
    let mut app = TestApp::hospital();
    let created = app.post("/api/v1/admin/users", "admin", json!({"id": "nurse_wu", "name": "吴护士", "roles": ["staff"]})).await.expect(201);
    assert_eq!(created["has_password"], false);
    app.post("/api/v1/admin/users", "admin", json!({"id": "nurse_wu", "roles": ["staff"]})).await.expect(409);
    let bad = app.post("/api/v1/admin/users", "admin", json!({"id": "x", "roles": ["surgeon"]})).await.expect(422);
    assert!(bad["message"].as_str().unwrap().contains("surgeon"));
    app.post("/api/v1/admin/users", "admin", json!({"id": "y", "roles": ["staff"], "teams": ["night_team"]})).await.expect(422);
    app.post("/api/v1/admin/users", "nurse_li", json!({"id": "z", "roles": ["admin"]})).await.expect(403);

    app.get("/api/v1/me", "nurse_wu").await.expect(200);
    app.request(Method::PATCH, "/api/v1/admin/users/nurse_wu", Some("admin"), Some(json!({"disabled": true})), &[]).await.expect(200);
    app.get("/api/v1/me", "nurse_wu").await.expect(401);
    app.request(Method::PATCH, "/api/v1/admin/users/nurse_wu", Some("admin"), Some(json!({"disabled": false})), &[]).await.expect(200);
    app.get("/api/v1/me", "nurse_wu").await.expect(200);

    // Own tokens: create, list, revoke; the secret is shown once.
    let token = app.post("/api/v1/tokens", "nurse_li", json!({"name": "手机", "expires_in_days": 30})).await.expect(201);
    let secret = token["token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {secret}");
    let me = app.request(Method::GET, "/api/v1/me", None, None, &[("authorization", &bearer)]).await.expect(200);
    assert_eq!(me["id"], "nurse_li");
    let listed = app.get("/api/v1/tokens", "nurse_li").await.expect(200);
    assert!(listed["items"].as_array().unwrap().iter().all(|t| t.get("token").is_none() && t.get("hash").is_none()));
    let tid = token["id"].as_str().unwrap();
    app.request(Method::DELETE, &format!("/api/v1/tokens/{tid}"), Some("nurse_chen"), None, &[]).await.expect(404);
    app.request(Method::DELETE, &format!("/api/v1/tokens/{tid}"), Some("nurse_li"), None, &[]).await.expect(200);
    app.request(Method::GET, "/api/v1/me", None, None, &[("authorization", &bearer)]).await.expect(401);

    let audit = app.get("/api/v1/admin/audit", "admin").await.expect(200);
    let kinds: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["user_created", "user_disabled", "token_created", "token_revoked", "permission_denied"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    app.get("/api/v1/admin/audit", "nurse_li").await.expect(403);
}

#[tokio::test]
async fn tokens_expire() {
    let mut app = TestApp::hospital();
    let token = app.post("/api/v1/tokens", "nurse_li", json!({"expires_in_days": 1})).await.expect(201);
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    app.request(Method::GET, "/api/v1/me", None, None, &[("authorization", &bearer)]).await.expect(200);
    app.clock.advance(jiff::SignedDuration::from_hours(25));
    app.request(Method::GET, "/api/v1/me", None, None, &[("authorization", &bearer)]).await.expect(401);
    app.post("/api/v1/tokens", "nurse_li", json!({"expires_in_days": 0})).await.expect(422);
}

/// A raw request to the router, returning status, headers and body text.
async fn raw(app: &TestApp, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app.router.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&bytes).to_string())
}

fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find(|c| c.starts_with(&format!("{name}="))).map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").unwrap() + "name=\"_csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

/// Signs in through the form; returns the session cookie and the page's CSRF token.
async fn sign_in(app: &TestApp, user: &str, password: &str) -> Result<(String, String), (StatusCode, String)> {
    let (_, headers, html) = raw(app, Method::GET, "/login", &[], "").await;
    let csrf = hidden_csrf(&html);
    let login_cookie = cookie_value(&set_cookie(&headers, "ff_login_csrf").unwrap());
    let cookie = format!("ff_login_csrf={login_cookie}");
    let body = format!("username={user}&password={password}&_csrf={csrf}");
    let (status, headers, html) = raw(
        app,
        Method::POST,
        "/login",
        &[("content-type", "application/x-www-form-urlencoded"), ("cookie", &cookie), ("host", "localhost"), ("origin", "http://localhost")],
        &body,
    )
    .await;
    if status != StatusCode::SEE_OTHER {
        return Err((status, html));
    }
    let session = set_cookie(&headers, "ff_session").unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"), "{session}");
    let session = cookie_value(&session);
    let (status, _, home) = raw(app, Method::GET, "/", &[("cookie", &format!("ff_session={session}"))], "").await;
    assert_eq!(status, StatusCode::OK);
    Ok((session, page_csrf(&home)))
}

/// The session's CSRF token, as every page carries it (`<meta name="csrf-token">`).
fn page_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf-token\" content=\"").unwrap() + "name=\"csrf-token\" content=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn sign_in_with_a_password_then_csrf_guards_every_change() {
    let mut app = TestApp::hospital();
    let (status, headers, html) = raw(&app, Method::GET, "/login", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("用户名") && html.contains("<label for=\"password\">"), "{html}");
    let csp = headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
    let (status, _, _) = raw(&app, Method::GET, "/", &[], "").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "signed out: / goes to the sign-in page");

    let (session, csrf) = sign_in(&app, "nurse_li", "demo2026").await.unwrap();
    let cookie = format!("ff_session={session}");
    let me = app.request(Method::GET, "/api/v1/me", None, None, &[("cookie", &cookie)]).await.expect(200);
    assert_eq!(me["id"], "nurse_li");
    // A change by cookie needs the CSRF token and a same-site Origin.
    let body = json!({"data": repair()});
    let r = app.request(Method::POST, "/api/v1/workflows/repair/instances", None, Some(body.clone()), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["code"], "csrf_failed");
    let evil = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str()), ("host", "localhost"), ("origin", "http://evil.example")];
    app.request(Method::POST, "/api/v1/workflows/repair/instances", None, Some(body.clone()), &evil).await.expect(403);
    let good = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str()), ("host", "localhost"), ("origin", "http://localhost")];
    app.request(Method::POST, "/api/v1/workflows/repair/instances", None, Some(body), &good).await.expect(201);

    // A new sign-in gets a new session id; signing out everywhere ends both.
    let (second, _) = sign_in(&app, "nurse_li", "demo2026").await.unwrap();
    assert_ne!(second, session);
    app.request(Method::DELETE, "/api/v1/me/sessions", None, None, &good).await.expect(200);
    app.request(Method::GET, "/api/v1/me", None, None, &[("cookie", &cookie)]).await.expect(401);
    app.request(Method::GET, "/api/v1/me", None, None, &[("cookie", &format!("ff_session={second}"))]).await.expect(401);
}

#[tokio::test]
async fn sessions_expire_when_idle_and_when_disabled() {
    let mut app = TestApp::hospital();
    let (session, _) = sign_in(&app, "tech_wang", "demo2026").await.unwrap();
    let cookie = format!("ff_session={session}");
    app.clock.advance(jiff::SignedDuration::from_hours(11));
    app.request(Method::GET, "/api/v1/me", None, None, &[("cookie", &cookie)]).await.expect(200);
    app.clock.advance(jiff::SignedDuration::from_hours(13));
    app.request(Method::GET, "/api/v1/me", None, None, &[("cookie", &cookie)]).await.expect(401);

    let (session, _) = sign_in(&app, "tech_wang", "demo2026").await.unwrap();
    let cookie = format!("ff_session={session}");
    app.request(Method::PATCH, "/api/v1/admin/users/tech_wang", Some("admin"), Some(json!({"disabled": true})), &[]).await.expect(200);
    app.request(Method::GET, "/api/v1/me", None, None, &[("cookie", &cookie)]).await.expect(401);
    assert!(sign_in(&app, "tech_wang", "demo2026").await.is_err(), "a disabled user cannot sign in");
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_with_a_generic_message() {
    let mut app = TestApp::hospital();
    let (status, html) = sign_in(&app, "nurse_li", "wrong-password").await.unwrap_err();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, unknown) = sign_in(&app, "nobody", "wrong-password").await.unwrap_err();
    let message = |html: &str| html.split("role=\"alert\"").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert_eq!(message(&html), message(&unknown), "the same message for a wrong password and an unknown user");
    for _ in 0..4 {
        sign_in(&app, "nurse_li", "wrong-password").await.unwrap_err();
    }
    let (status, _) = sign_in(&app, "nurse_li", "demo2026").await.unwrap_err();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    app.clock.advance(jiff::SignedDuration::from_mins(16));
    sign_in(&app, "nurse_li", "demo2026").await.unwrap();
    let audit = app.get("/api/v1/admin/audit?kind=login_failed", "admin").await.expect(200);
    assert!(audit["items"].as_array().unwrap().len() >= 6);
}

#[tokio::test]
async fn a_password_set_by_an_admin_works_at_once_and_is_never_shown() {
    let mut app = TestApp::hospital();
    app.post("/api/v1/admin/users", "admin", json!({"id": "keeper_he", "name": "何库管", "roles": ["storekeeper"]})).await.expect(201);
    assert!(sign_in(&app, "keeper_he", "new-secret-1").await.is_err());
    app.post("/api/v1/admin/users/keeper_he/password", "admin", json!({"password": "short"})).await.expect(422);
    app.post("/api/v1/admin/users/keeper_he/password", "admin", json!({"password": "new-secret-1"})).await.expect(200);
    sign_in(&app, "keeper_he", "new-secret-1").await.unwrap();
    let users = app.get("/api/v1/admin/users", "admin").await.expect(200);
    assert!(!users.to_string().contains("argon2"), "no password hash in the API");
}

// ---- visibility ----

#[tokio::test]
async fn a_nurse_reads_only_her_own_orders_a_technician_his_teams_a_manager_all() {
    let mut app = TestApp::hospital();
    let li = app.start_instance("repair", "nurse_li", repair()).await.expect(201);
    let li_id = li["id"].as_str().unwrap().to_string();
    let mut chen = repair();
    chen["category"] = json!("elevator");
    chen["asset"] = json!("EQ-000141");
    let chen = app.start_instance("repair", "nurse_chen", chen).await.expect(201);
    let chen_id = chen["id"].as_str().unwrap().to_string();

    // Another requester's order does not exist for her: 404, in every read route.
    app.get(&format!("/api/v1/instances/{chen_id}"), "nurse_li").await.expect(404);
    app.get(&format!("/api/v1/instances/{chen_id}/history"), "nurse_li").await.expect(404);
    app.transition(&chen_id, "cancel", "nurse_li", json!({})).await.expect(404);
    app.get(&format!("/api/v1/instances/{li_id}"), "nurse_li").await.expect(200);
    let mine = app.get("/api/v1/instances?workflow=repair", "nurse_li").await.expect(200);
    assert_eq!(ids(&mine), vec![li_id.clone()]);
    assert_eq!(total(&app.get("/api/v1/instances/counts", "nurse_li").await.expect(200)), 1);

    // The HVAC technician sees the HVAC order (his team), not the elevator one.
    let team = li["assignment"]["team"].as_str().unwrap_or_default().to_string();
    assert_eq!(team, "hvac_team", "{li}");
    let wang = app.get("/api/v1/instances?workflow=repair", "tech_wang").await.expect(200);
    assert_eq!(ids(&wang), vec![li_id.clone()]);
    app.get(&format!("/api/v1/instances/{chen_id}"), "tech_wang").await.expect(404);
    assert_eq!(total(&app.get("/api/v1/instances/counts?workflow=repair", "tech_wang").await.expect(200)), 1);

    // The manager and the dispatcher see both.
    for user in ["manager_zheng", "dispatcher_liu", "admin"] {
        let all = app.get("/api/v1/instances?workflow=repair", user).await.expect(200);
        assert_eq!(ids(&all), vec![chen_id.clone(), li_id.clone()], "{user}");
        assert_eq!(total(&app.get("/api/v1/instances/counts?workflow=repair", user).await.expect(200)), 2, "{user}");
    }
}

#[tokio::test]
async fn restricted_lists_page_through_the_merged_index_newest_first() {
    let mut app = TestApp::hospital();
    let mut mine = Vec::new();
    for i in 0..7 {
        let who = if i % 2 == 0 { "nurse_li" } else { "nurse_chen" };
        let r = app.start_instance("repair", who, repair()).await.expect(201);
        if who == "nurse_li" {
            mine.push(r["id"].as_str().unwrap().to_string());
        }
    }
    mine.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/instances?limit=2&cursor={c}"),
            None => "/api/v1/instances?limit=2".into(),
        };
        let page = app.get(&path, "nurse_li").await.expect(200);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, mine);
}

// ---- 5. xlsx export keeps text as text ----

#[tokio::test]
async fn xlsx_export_keeps_text_fields_as_written() {
    let mut app = TestApp::hospital();
    let vendors = [("V-PHONE", "+8613800000000"), ("V-LONG", "12345678901234567890"), ("V-EXP", "1e3"), ("V-NAN", "NaN"), ("V-ZERO", "007")];
    for (code, text) in vendors {
        app.post("/api/v1/records/vendor", "admin", json!({"data": {"code": code, "name": text, "phone": text}})).await.expect(201);
    }
    let query = flowform_runtime::records::RecordQuery { q: Some("V-".into()), limit: 100, ..Default::default() };
    let (header, rows) = app.runtime.export_table("vendor", &query, flowform_core::Lang::ZhCn).unwrap();
    let xlsx = flowform_runtime::import::to_xlsx("vendor", &header, &rows, &app.runtime.numeric_columns("vendor").unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendors.xlsx");
    std::fs::write(&path, xlsx).unwrap();
    let table = flowform_runtime::import::read_table(&path).unwrap();
    for (code, text) in vendors {
        let row = table.rows.iter().find(|(_, r)| r[0] == code).unwrap_or_else(|| panic!("{code} missing"));
        assert_eq!((row.1[1].as_str(), row.1[3].as_str()), (text, text), "{code}");
    }
    // Every cell read back equals the stored record's text, for every vendor.
    for (_, row) in &table.rows {
        let stored = app.runtime.store().record("vendor", &row[0]).unwrap().unwrap();
        for (i, field) in ["code", "name", "contact", "phone"].iter().enumerate() {
            assert_eq!(row[i], stored.data.get(*field).and_then(Value::as_str).unwrap_or_default(), "{} {field}", row[0]);
        }
    }
}

// ---- found in review ----

/// An asset's history lists the events of the orders that refer to it — only
/// those the caller may read (it listed every order, with its input, to anyone).
#[tokio::test]
async fn a_record_history_shows_only_the_instances_the_caller_may_read() {
    let mut app = TestApp::hospital();
    let chen = app.start_instance("repair", "nurse_chen", repair()).await.expect(201);
    let chen_id = chen["id"].as_str().unwrap().to_string();
    let mine = app.start_instance("repair", "nurse_li", repair()).await.expect(201);
    let mine_id = mine["id"].as_str().unwrap().to_string();
    let history = app.get("/api/v1/records/asset/EQ-000101/history", "nurse_li").await.expect(200);
    let instances: Vec<&str> = history.as_array().unwrap().iter().filter_map(|e| e["instance_id"].as_str()).collect();
    assert!(instances.contains(&mine_id.as_str()) && !instances.contains(&chen_id.as_str()), "{instances:?}");
    let all = app.get("/api/v1/records/asset/EQ-000101/history", "manager_zheng").await.expect(200);
    assert!(all.as_array().unwrap().iter().any(|e| e["instance_id"] == chen_id.as_str()));
}

/// Parallel guesses are counted before the password is checked: no more than
/// the allowed failures get through, however many arrive at once; and a
/// huge user name is logged cut to 64 characters.
#[tokio::test]
async fn parallel_guesses_cannot_outrun_the_throttle() {
    let mut app = TestApp::hospital();
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let runtime = app.runtime.clone();
            std::thread::spawn(move || runtime.login("nurse_li", "wrong-password", Some("10.0.0.9")))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let checked = results.iter().filter(|r| matches!(r, Err(flowform_runtime::accounts::AccountError::BadCredentials))).count();
    let throttled = results.iter().filter(|r| matches!(r, Err(flowform_runtime::accounts::AccountError::Throttled { .. }))).count();
    assert_eq!((checked, throttled), (5, 7));
    let long = "x".repeat(100_000);
    assert!(app.runtime.login(&long, "whatever-password", Some("10.0.0.10")).is_err());
    let audit = app.get("/api/v1/admin/audit?kind=login_failed", "admin").await.expect(200);
    assert!(audit["items"].as_array().unwrap().iter().all(|e| e["actor"].as_str().unwrap().chars().count() <= 64));
    let throttled_entries = audit["items"].as_array().unwrap().iter().filter(|e| e["detail"] == "throttled").count();
    assert_eq!(throttled_entries, 1, "a throttled name is logged once per window, not per attempt");
}

/// A new password ends the user's sessions and revokes their API tokens.
#[tokio::test]
async fn a_new_password_revokes_the_old_ways_in() {
    let mut app = TestApp::hospital();
    let token = app.post("/api/v1/tokens", "nurse_li", json!({"name": "old phone"})).await.expect(201);
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    app.request(Method::GET, "/api/v1/me", None, None, &[("authorization", &bearer)]).await.expect(200);
    app.post("/api/v1/admin/users/nurse_li/password", "admin", json!({"password": "a-brand-new-one"})).await.expect(200);
    app.request(Method::GET, "/api/v1/me", None, None, &[("authorization", &bearer)]).await.expect(401);
}

/// `visible_to: [department]`: users of the requester's department read the
/// order (lists and counts too); users of another department do not.
#[tokio::test]
async fn a_department_scope_shows_the_orders_of_ones_own_department() {
    let mut app = TestApp::hospital_copy();
    app.edit(
        "definitions/workflows/repair.yaml",
        "visible_to: [requester, assignee, team, role:dispatcher, role:manager]",
        "visible_to: [requester, assignee, team, department, role:dispatcher, role:manager]",
    );
    assert!(!matches!(app.runtime.reload(), flowform_runtime::reload::ReloadOutcome::Rejected { .. }));
    for (id, dept) in [("icu_a", "icu"), ("icu_b", "icu"), ("er_c", "emergency")] {
        app.post("/api/v1/admin/users", "admin", json!({"id": id, "roles": ["staff"], "department": dept})).await.expect(201);
    }
    let wo = app.start_instance("repair", "icu_a", repair()).await.expect(201);
    let id = wo["id"].as_str().unwrap().to_string();
    app.start_instance("repair", "nurse_li", repair()).await.expect(201);
    app.get(&format!("/api/v1/instances/{id}"), "icu_b").await.expect(200);
    app.get(&format!("/api/v1/instances/{id}"), "er_c").await.expect(404);
    assert_eq!(ids(&app.get("/api/v1/instances?workflow=repair", "icu_b").await.expect(200)), vec![id.clone()]);
    assert_eq!(total(&app.get("/api/v1/instances/counts?workflow=repair", "icu_b").await.expect(200)), 1);
    assert_eq!(total(&app.get("/api/v1/instances/counts?workflow=repair", "er_c").await.expect(200)), 0);
}
