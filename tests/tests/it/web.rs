//! Attachments and the generated pages through the router (no browser): what
//! the upload accepts, who may read a file, what a `files` field accepts, the
//! headers of every page, and a workflow added to the definitions appearing
//! on the home page at the next reload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use flowform_testkit::TestApp;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02,
    0x00, 0x00, 0x00, 0x90, 0x77, 0x53, 0xDE, 0x00, 0x00, 0x00, 0x0C, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0xF8, 0xCF, 0xC0, 0x00, 0x00, 0x03, 0x01, 0x01,
    0x00, 0x18, 0xDD, 0x8D, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

struct Raw {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

async fn send(app: &TestApp, req: Request<Body>) -> Raw {
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Raw { status, headers, body }
}

async fn upload(app: &mut TestApp, user: &str, name: &str, content_type: &str, bytes: &[u8]) -> Raw {
    let boundary = "XyZ-boundary-42";
    let mut body =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n").into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/files")
        .header("authorization", format!("Bearer {}", app.token(user)))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
        .unwrap();
    send(app, req).await
}

async fn download(app: &mut TestApp, user: &str, path: &str) -> Raw {
    let req = Request::builder().uri(path).header("authorization", format!("Bearer {}", app.token(user))).body(Body::empty()).unwrap();
    send(app, req).await
}

fn report(photos: Value) -> Value {
    json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "住院楼 5 层", "description": "空调不制冷,室温 30 度", "photos": photos})
}

#[tokio::test]
async fn a_photo_is_uploaded_referenced_and_read_by_those_who_may_read_the_order() {
    let mut app = TestApp::hospital();
    let up = upload(&mut app, "nurse_li", "IMG_0001.png", "image/png", PNG).await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.text());
    let file = up.json();
    assert_eq!(file["type"], "image/png");
    assert_eq!(file["size"], PNG.len());
    let id = file["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "an opaque id, not the content's hash");

    let order = app.start_instance("repair", "nurse_li", report(json!([file]))).await.expect(201);
    let order_id = order["id"].as_str().unwrap().to_string();

    // The uploader reads it; the sniffed type and nosniff come with it.
    let mine = download(&mut app, "nurse_li", &format!("/api/v1/files/{id}")).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body, PNG);
    assert_eq!(mine.headers["content-type"], "image/png");
    assert_eq!(mine.headers["x-content-type-options"], "nosniff");
    // Someone who may read the order reads it through the order.
    let via = format!("/api/v1/files/{id}?instance={order_id}");
    assert_eq!(download(&mut app, "manager_zheng", &via).await.status, StatusCode::OK);
    // Someone who may not read the order does not, with or without it.
    assert_eq!(download(&mut app, "nurse_chen", &via).await.status, StatusCode::NOT_FOUND);
    assert_eq!(download(&mut app, "nurse_chen", &format!("/api/v1/files/{id}")).await.status, StatusCode::NOT_FOUND);
    // Naming an order one may read that does not contain the file gives nothing either.
    let other = app.start_instance("repair", "nurse_chen", report(json!([]))).await.expect(201);
    let wrong = format!("/api/v1/files/{id}?instance={}", other["id"].as_str().unwrap());
    assert_eq!(download(&mut app, "nurse_chen", &wrong).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn uploads_are_judged_by_their_bytes_not_their_names() {
    let mut app = TestApp::hospital();
    let html = b"<html><script>alert(1)</script></html>";
    let r = upload(&mut app, "nurse_li", "photo.png", "image/png", html).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.json()["code"], "file_rejected");
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>"#;
    assert_eq!(upload(&mut app, "nurse_li", "sign.svg", "image/svg+xml", svg).await.json()["code"], "file_rejected");
    assert_eq!(upload(&mut app, "nurse_li", "empty.png", "image/png", b"").await.json()["code"], "file_rejected");
    // A PDF is kept and served as an attachment, never inline.
    let pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF";
    let up = upload(&mut app, "nurse_li", "manual.pdf", "application/pdf", pdf).await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.text());
    let got = download(&mut app, "nurse_li", &format!("/api/v1/files/{}", up.json()["id"].as_str().unwrap())).await;
    assert_eq!(got.headers["content-type"], "application/pdf");
    assert!(got.headers["content-disposition"].to_str().unwrap().starts_with("attachment"));
    // …and a photos field that accepts images refuses it.
    let r = app.start_instance("repair", "nurse_li", report(json!([up.json()]))).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["details"][0]["field"], "photos[0]");
    assert_eq!(r.body["details"][0]["code"], "file_type_not_accepted");
}

#[tokio::test]
async fn a_files_field_accepts_only_files_the_store_holds() {
    let mut app = TestApp::hospital();
    let made_up = json!([{"id": "0123456789abcdef0123456789abcdef", "name": "x.png", "type": "image/png", "size": 10}]);
    let r = app.start_instance("repair", "nurse_li", report(made_up)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["details"][0]["field"], "photos[0]");
    assert_eq!(r.body["details"][0]["code"], "unknown_file");
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_while_it_arrives() {
    let mut app = TestApp::hospital();
    let mut big = PNG.to_vec();
    big.resize(flowform_runtime::files::DEFAULT_MAX_BYTES as usize + 1, 0);
    let r = upload(&mut app, "nurse_li", "big.png", "image/png", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.json()["code"], "file_too_large");
}

#[tokio::test]
async fn signatures_are_images_not_markup() {
    let mut app = TestApp::hospital();
    let order = app.start_instance("repair", "nurse_li", report(json!([]))).await.expect(201);
    let id = order["id"].as_str().unwrap().to_string();
    app.transition(&id, "accept", "tech_wang", json!({})).await.expect(200);
    let svg = "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9ImFsZXJ0KDEpIi8+";
    let r = app.transition(&id, "complete", "tech_wang", json!({"fault_cause": "wear", "work_notes": "更换电容,试机正常", "signature": svg})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["details"][0]["field"], "signature");
}

/// Signs in through the form and returns the session cookie.
async fn session(app: &TestApp, user: &str) -> String {
    let login = send(app, Request::builder().uri("/login").body(Body::empty()).unwrap()).await;
    let html = login.text();
    let at = html.find("name=\"_csrf\" value=\"").unwrap() + 20;
    let csrf = html[at..].split('"').next().unwrap().to_string();
    let login_cookie = login.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find(|c| c.starts_with("ff_login_csrf=")).unwrap();
    let login_cookie = login_cookie.split(';').next().unwrap().to_string();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", login_cookie)
        .body(Body::from(format!("username={user}&password=demo2026&_csrf={csrf}")))
        .unwrap();
    let r = send(app, req).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let c = r.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find(|c| c.starts_with("ff_session=")).unwrap();
    c.split(';').next().unwrap().to_string()
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> Raw {
    send(app, Request::builder().uri(path).header("cookie", cookie).header("accept-language", "zh-CN").body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn every_page_has_a_strict_content_security_policy_and_no_inline_script() {
    let app = TestApp::hospital();
    let cookie = session(&app, "admin").await;
    for path in [
        "/",
        "/tasks",
        "/start",
        "/start/repair",
        "/list/repair",
        "/board",
        "/inbox",
        "/me",
        "/records/asset",
        "/records/asset/EQ-000101",
        "/ledgers/stock",
        "/admin",
        "/admin/replay",
    ] {
        let r = page(&app, &cookie, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        let html = r.text();
        assert!(!html.contains("<script>") && !html.contains(" onclick=") && !html.contains(" onload="), "{path} has inline script");
        assert!(html.contains("<html lang=\"zh-CN\">"), "{path}");
        // End users never see raw ids of the instance or timestamps in UTC.
        assert!(!html.contains("T01:00:00"), "{path} shows a UTC timestamp");
    }
}

#[tokio::test]
async fn a_page_form_without_the_session_csrf_token_is_refused() {
    let app = TestApp::hospital();
    let cookie = session(&app, "nurse_li").await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/start/repair")
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("_csrf=forged&asset=EQ-000101&category=hvac&department=icu&location=x&description=abcdefg"))
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let none = app.runtime.instances(&flowform_store::InstanceFilter { limit: 10, ..Default::default() }).unwrap();
    assert!(none.items.is_empty(), "nothing was started");
}

#[tokio::test]
async fn signed_out_pages_go_to_the_sign_in_page_and_come_back() {
    let app = TestApp::hospital();
    let r = send(&app, Request::builder().uri("/list/repair?state=closed").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers["location"], "/login?next=/list/repair%3Fstate%3Dclosed");
    let login = send(&app, Request::builder().uri("/login?next=//evil.example/").body(Body::empty()).unwrap()).await;
    assert!(login.text().contains("name=\"next\" value=\"/\""), "another site is never a next page");
}

#[tokio::test]
async fn a_workflow_added_to_the_definitions_appears_on_the_home_page_at_the_next_reload() {
    let mut app = TestApp::hospital_copy();
    app.write(
        "definitions/workflows/key_request.yaml",
        "workflow: key_request\ntitle: { zh-CN: 钥匙借用, en: Key request }\nvisible_to: [requester]\nstart:\n  form: key_request\n  roles: [staff]\n\
         states:\n  open: { label: { zh-CN: 待归还, en: Open }, color: info }\n  returned: { label: { zh-CN: 已归还, en: Returned }, final: true, color: success }\n\
         initial: open\ntransitions:\n  - name: give_back\n    label: { zh-CN: 归还, en: Give back }\n    from: open\n    to: returned\n    roles: [requester]\n",
    );
    app.write(
        "forms/key_request.yaml",
        "form: key_request\ntitle: { zh-CN: 借钥匙, en: Key request }\nfields:\n  room:\n    type: string\n    required: true\n    label: { zh-CN: 房间, en: Room }\n  days:\n    type: integer\n    min: 1\n    max: 7\n    unit: 天\n    label: { zh-CN: 借用天数, en: Days }\n",
    );
    let reloaded = app.post("/api/v1/admin/reload", "admin", json!({})).await.expect(200);
    assert_eq!(reloaded["status"], "reloaded", "{reloaded}");
    let cookie = session(&app, "nurse_li").await;
    let home = page(&app, &cookie, "/").await.text();
    assert!(home.contains("钥匙借用") && home.contains("href=\"/start/key_request\""), "{home}");
    let form = page(&app, &cookie, "/start/key_request").await.text();
    assert!(form.contains("房间") && form.contains("借用天数") && form.contains("<span class=\"unit\">天</span>"), "{form}");
}

/// Nothing the web app or the server adds names a concept of the hospital:
/// no workflow, form, field, record type, ledger, role or team of its
/// definitions appears as a word in their sources (beyond the engine's own
/// vocabulary, which the hospital happens to use too).
#[test]
fn the_engine_names_no_concept_of_the_hospital() {
    let app = TestApp::hospital();
    let bundle = app.runtime.bundle();
    let m = &bundle.model;
    let mut names: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    names.extend(m.workflows.keys().cloned());
    names.extend(m.forms.keys().cloned());
    names.extend(m.record_types.keys().cloned());
    names.extend(m.ledgers.keys().cloned());
    names.extend(m.roles.keys().cloned());
    names.extend(m.teams.keys().cloned());
    fn fields(defs: &[flowform_model::FieldDef], out: &mut std::collections::BTreeSet<String>) {
        for f in defs {
            out.insert(f.name.clone());
            fields(&f.fields, out);
        }
    }
    // Fields, states and transitions named by a plain English word
    // (`description`, `value`) are too common to count; compound names are
    // the hospital's own (`parts_used`, `in_progress`, `check_in`).
    let mut compound = std::collections::BTreeSet::new();
    for f in m.forms.values() {
        fields(&f.fields, &mut compound);
    }
    for w in m.workflows.values() {
        compound.extend(w.states.iter().map(|s| s.name.clone()));
        compound.extend(w.transitions.iter().map(|t| t.name.clone()));
    }
    names.extend(compound.into_iter().filter(|n| n.contains('_')));
    // The engine's own words, which the hospital uses for the same things.
    for own in [
        "admin",
        "requester",
        "assignee",
        "team",
        "vendor",
        "name",
        "title",
        "code",
        "id",
        "open",
        "all",
        "state",
        "type",
        "file",
        "files",
        "label",
        "note",
        "comment",
        "parent",
        "location",
        "quantity",
        "reason",
        "version",
        "department",
        "part",
        "rejection",
    ] {
        names.remove(own);
    }
    let root = flowform_testkit::repo_root();
    let mut sources = Vec::new();
    for dir in ["engine/web/src", "engine/web/templates", "engine/web/assets", "engine/server/src"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("htmx")) {
                continue;
            }
            sources.push(path);
        }
    }
    let mut hits = Vec::new();
    for path in sources.iter().filter(|p| p.is_file()) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Tests inside a source file may use the hospital as their example.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for name in &names {
            let word = regex::Regex::new(&format!(r"(^|[^A-Za-z0-9_]){}($|[^A-Za-z0-9_])", regex::escape(name))).unwrap();
            if word.is_match(text) {
                hits.push(format!("{}: `{name}`", path.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(hits.is_empty(), "hospital concepts in the engine:\n{}", hits.join("\n"));
}

#[tokio::test]
async fn behind_a_tls_proxy_every_answer_asks_for_https_from_then_on() {
    let app = TestApp::hospital();
    let config = flowform_server::auth::AuthConfig { behind_proxy: true, trusted_proxies: Vec::new() };
    let router = flowform_server::app_with(app.runtime.clone(), config);
    let ask = |proto: &'static str| Request::builder().uri("/login").header("x-forwarded-proto", proto).body(Body::empty()).unwrap();
    let tls = router.clone().oneshot(ask("https")).await.unwrap();
    assert!(tls.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
    let plain = router.oneshot(ask("http")).await.unwrap();
    assert!(plain.headers().get("strict-transport-security").is_none());
    let direct = app.router.clone().oneshot(ask("https")).await.unwrap();
    assert!(direct.headers().get("strict-transport-security").is_none(), "not behind a declared proxy: the header is not trusted");
}

#[tokio::test]
async fn a_dead_letter_is_sent_again_only_by_an_admin() {
    let mut app = TestApp::hospital();
    let r = app.post("/api/v1/admin/outbox/999/retry", "nurse_li", json!({})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = app.post("/api/v1/admin/outbox/999/retry", "admin", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn an_admin_archives_and_restores_a_record_from_its_page() {
    let app = TestApp::hospital();
    let cookie = session(&app, "admin").await;
    let home = page(&app, &cookie, "/records/vendor").await.text();
    let marker = "name=\"csrf-token\" content=\"";
    let at = home.find(marker).unwrap() + marker.len();
    let csrf = home[at..].split('"').next().unwrap().to_string();
    let vendor = app.runtime.list_records("vendor", &flowform_runtime::records::RecordQuery { limit: 1, ..Default::default() }).unwrap().items[0].id.clone();
    let post = |archived: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(format!("/records/vendor/{vendor}/archive"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("_csrf={csrf}&archived={archived}")))
            .unwrap()
    };
    assert_eq!(send(&app, post("true")).await.status, StatusCode::SEE_OTHER);
    assert!(app.runtime.record("vendor", &vendor).unwrap().archived);
    let shown = page(&app, &cookie, &format!("/records/vendor/{vendor}")).await.text();
    assert!(shown.contains("已停用") && shown.contains("恢复"), "{shown}");
    assert_eq!(send(&app, post("false")).await.status, StatusCode::SEE_OTHER);
    assert!(!app.runtime.record("vendor", &vendor).unwrap().archived);
}

#[tokio::test]
async fn a_file_id_seen_elsewhere_cannot_be_copied_into_ones_own_order() {
    let mut app = TestApp::hospital();
    let up = upload(&mut app, "nurse_li", "IMG_0002.png", "image/png", PNG).await.json();
    let id = up["id"].as_str().unwrap().to_string();
    app.start_instance("repair", "nurse_li", report(json!([up.clone()]))).await.expect(201);
    // Another nurse who learnt the id puts it in her own order: refused.
    let r = app.start_instance("repair", "nurse_chen", report(json!([up]))).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["details"][0]["code"], "unknown_file");
    // …or in a text field of her own order, then asks through it: still nothing.
    let mut data = report(json!([]));
    data["description"] = json!(format!("see \"{id}\" please"));
    let mine = app.start_instance("repair", "nurse_chen", data).await.expect(201);
    let via = format!("/api/v1/files/{id}?instance={}", mine["id"].as_str().unwrap());
    assert_eq!(download(&mut app, "nurse_chen", &via).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn what_is_stored_about_a_file_is_what_the_server_knows() {
    let mut app = TestApp::hospital();
    let mut up = upload(&mut app, "nurse_li", "IMG_0003.png", "image/png", PNG).await.json();
    up["name"] = json!("totally-not-a-photo.exe");
    up["type"] = json!("text/html");
    up["size"] = json!(1);
    let order = app.start_instance("repair", "nurse_li", report(json!([up]))).await.expect(201);
    let stored = &order["data"]["photos"][0];
    assert_eq!((stored["name"].as_str(), stored["type"].as_str(), stored["size"].as_u64()), (Some("IMG_0003.png"), Some("image/png"), Some(PNG.len() as u64)));
}

#[tokio::test]
async fn a_record_picker_finds_what_is_typed() {
    let app = TestApp::hospital();
    let cookie = session(&app, "nurse_li").await;
    let found = page(&app, &cookie, "/pick/asset?_q_asset=%E5%86%B7%E5%8D%B4%E5%A1%94&field=asset").await.text();
    assert!(found.contains("冷却塔"), "{found}");
    assert_eq!(found.matches("pick-option").count(), 2, "the two cooling towers and nothing else: {found}");
    assert!(!found.contains("冷水机组"));
}

#[tokio::test]
async fn a_form_filled_from_the_address_names_only_what_the_user_may_read() {
    let mut app = TestApp::hospital();
    let mut data = report(json!([]));
    data["asset"] = json!("EQ-000116"); // plumbing: the utilities team's, not tech_wang's
    let other = app.start_instance("repair", "nurse_chen", data).await.expect(201);
    let id = other["id"].as_str().unwrap().to_string();
    let number = flowform_web::display::number(&app.runtime.instance(&id).unwrap(), &flowform_web::display::zone(&app.runtime.bundle()));
    let cookie = session(&app, "tech_wang").await;
    let form = page(&app, &cookie, &format!("/start/requisition?work_order={id}")).await.text();
    assert!(!form.contains(&number), "an order tech_wang may not read is not named");
    let cookie = session(&app, "admin").await;
    let form = page(&app, &cookie, &format!("/start/requisition?work_order={id}")).await.text();
    assert!(form.contains(&number), "an admin sees its number");
}

#[tokio::test]
async fn orders_get_readable_numbers_counted_per_day_in_the_app_zone() {
    let mut app = TestApp::hospital();
    let first = app.start_instance("repair", "nurse_li", report(json!([]))).await.expect(201);
    let second = app.start_instance("repair", "nurse_li", report(json!([]))).await.expect(201);
    // 2026-11-25T01:00Z is 09:00 in Shanghai.
    assert_eq!(first["number"], "WX-20261125-0001");
    assert_eq!(second["number"], "WX-20261125-0002");
    // 17:00Z is already the next day in Shanghai: the count starts again.
    app.clock.advance(jiff::SignedDuration::from_hours(16));
    let next_day = app.start_instance("repair", "nurse_li", report(json!([]))).await.expect(201);
    assert_eq!(next_day["number"], "WX-20261126-0001");
    let stored = app.get(&format!("/api/v1/instances/{}", first["id"].as_str().unwrap()), "nurse_li").await.expect(200);
    assert_eq!(stored["number"], "WX-20261125-0001", "kept with the instance");
}

#[tokio::test]
async fn a_number_template_must_count_and_name_only_start_fields() {
    let mut app = TestApp::hospital_copy();
    app.edit("definitions/workflows/repair.yaml", "number: \"WX-{yyyyMMdd}-{seq:4}\"", "number: \"WX-{yyyyMMdd}-{asset_code}\"");
    let r = app.post("/api/v1/admin/reload", "admin", json!({})).await.expect(200);
    assert_eq!(r["status"], "rejected", "{r}");
    let codes: Vec<&str> = r["diagnostics"].as_array().unwrap().iter().filter_map(|d| d["code"].as_str()).collect();
    assert_eq!(codes, vec!["invalid_value", "unknown_field"], "{r}");
    assert_eq!(r["diagnostics"][1]["hint"], "did you mean `asset`?", "{r}");
}

#[tokio::test]
async fn a_refused_guard_says_why_in_the_users_language_and_never_shows_its_source() {
    let mut app = TestApp::hospital_copy();
    // Technicians may read every order here, so the guard (not visibility) answers.
    app.edit("definitions/workflows/repair.yaml", "role:dispatcher, role:manager]", "role:dispatcher, role:manager, role:technician]");
    app.post("/api/v1/admin/reload", "admin", json!({})).await.expect(200);
    let order = app.start_instance("repair", "nurse_li", report(json!([]))).await.expect(201);
    let id = order["id"].as_str().unwrap().to_string();
    // An elevator technician may not accept an HVAC order.
    let zh = app
        .request(Method::POST, &format!("/api/v1/instances/{id}/transitions/accept"), Some("tech_sun"), Some(json!({})), &[("accept-language", "zh-CN")])
        .await;
    assert_eq!((zh.status.as_u16(), zh.body["code"].as_str()), (403, Some("guard_failed")), "{}", zh.body);
    assert_eq!(zh.body["message"], "该工单已派给其他班组，只有该班组的维修人员可以接单");
    let en =
        app.request(Method::POST, &format!("/api/v1/instances/{id}/transitions/accept"), Some("tech_sun"), Some(json!({})), &[("accept-language", "en")]).await;
    assert_eq!(en.body["message"], "This order is dispatched to another team; only its technicians may accept it");
    assert!(!en.body.to_string().contains("actor.teams"), "no script source in the answer: {}", en.body);
}

#[tokio::test]
async fn a_recipient_named_by_a_record_field_is_checked_across_files() {
    let mut app = TestApp::hospital_copy();
    app.edit("definitions/workflows/repair.yaml", "field:asset.responsible]", "field:asset.responsibel]");
    let r = app.post("/api/v1/admin/reload", "admin", json!({})).await.expect(200);
    assert_eq!(r["status"], "rejected", "{r}");
    let d = &r["diagnostics"][0];
    assert_eq!((d["code"].as_str(), d["hint"].as_str()), (Some("unknown_field"), Some("did you mean `responsible`?")), "{r}");
    assert!(d["message"].as_str().unwrap().contains("form `asset` has no field `responsibel`"), "{r}");
}

#[tokio::test]
async fn a_department_added_as_a_record_is_offered_and_accepted_at_once() {
    let mut app = TestApp::hospital();
    // 儿科 is not in any YAML: an admin adds it as a record.
    app.post("/api/v1/records/department", "admin", json!({"data": {"code": "D-PED", "name": "儿科"}})).await.expect(201);
    let cookie = session(&app, "nurse_li").await;
    let form = page(&app, &cookie, "/start/repair").await.text();
    assert!(form.contains("<option value=\"D-PED\">儿科</option>"), "the form offers it");
    let mut data = report(json!([]));
    data["department"] = json!("D-PED");
    let order = app.start_instance("repair", "nurse_li", data).await.expect(201);
    assert_eq!(order["data"]["department"], "D-PED");
    let mut data = report(json!([]));
    data["department"] = json!("D-NOPE");
    let r = app.start_instance("repair", "nurse_li", data).await;
    assert_eq!((r.status.as_u16(), r.body["details"][0]["code"].as_str()), (422, Some("unknown_reference")), "{}", r.body);
    assert_eq!(r.body["details"][0]["message"], "没有编号为 D-NOPE 的科室", "named as people call it, not by its type's key");
}

#[tokio::test]
async fn the_category_comes_from_the_asset_whatever_is_sent() {
    let mut app = TestApp::hospital();
    // A chiller (hvac) reported as a lift: it still goes to the HVAC team.
    let mut data = report(json!([]));
    data["category"] = json!("elevator");
    let order = app.start_instance("repair", "nurse_li", data).await.expect(201);
    assert_eq!(order["data"]["category"], "hvac");
    assert_eq!(order["assignment"]["team"], "hvac_team");
    // Not sent at all: filled in the same way.
    let mut data = report(json!([]));
    data.as_object_mut().unwrap().remove("category");
    let order = app.start_instance("repair", "nurse_li", data).await.expect(201);
    assert_eq!(order["data"]["category"], "hvac");
}

#[tokio::test]
async fn an_asset_is_under_repair_while_its_order_is_open_and_remembers_its_last_repair() {
    let mut app = TestApp::hospital();
    app.runtime
        .update_record(
            "asset",
            "EQ-000102",
            &serde_json::to_value(&app.runtime.record("asset", "EQ-000102").unwrap().data).unwrap(),
            None,
            &admin(&app),
            flowform_core::Lang::En,
        )
        .unwrap();
    let mut data = report(json!([]));
    data["asset"] = json!("EQ-000102");
    let order = app.start_instance("repair", "nurse_li", data).await.expect(201);
    let id = order["id"].as_str().unwrap().to_string();
    let asset = app.runtime.record("asset", "EQ-000102").unwrap();
    assert_eq!(asset.data["status"], "under_repair");
    let history = app.get("/api/v1/records/asset/EQ-000102/history", "admin").await.expect(200);
    let own: Vec<&Value> = history.as_array().unwrap().iter().filter(|e| e["source"] == "record").collect();
    assert_eq!(own.last().unwrap()["cause"], id.as_str(), "the change names the order that made it: {history}");
    app.transition(&id, "accept", "tech_wang", json!({})).await.expect(200);
    app.transition(&id, "check_in", "tech_wang", json!({"place": {"tag": "RFID-EQ-000102"}})).await.expect(200);
    app.transition(&id, "complete", "tech_wang", json!({"fault_cause": "wear", "work_notes": "更换电容,试机正常"})).await.expect(200);
    app.transition(&id, "confirm", "nurse_li", json!({"rating": 5})).await.expect(200);
    let asset = app.runtime.record("asset", "EQ-000102").unwrap();
    assert_eq!(asset.data["status"], "in_service");
    assert_eq!(asset.data["last_repair"], "2026-11-25", "the local day of the close-out");
}

fn admin(app: &TestApp) -> flowform_core::Actor {
    app.runtime.actors().into_iter().find(|a| a.id == "admin").unwrap()
}

#[tokio::test]
async fn an_asset_out_of_service_stays_so_and_a_retired_one_cannot_be_reported() {
    let mut app = TestApp::hospital();
    let set_status = |app: &TestApp, id: &str, status: &str| {
        let mut data = app.runtime.record("asset", id).unwrap().data;
        data.insert("status".into(), json!(status));
        app.runtime.update_record("asset", id, &Value::Object(data), None, &admin(app), flowform_core::Lang::En).unwrap();
    };
    set_status(&app, "EQ-000103", "out_of_service");
    let mut report_data = report(json!([]));
    report_data["asset"] = json!("EQ-000103");
    let order = app.start_instance("repair", "nurse_li", report_data).await.expect(201);
    assert_eq!(app.runtime.record("asset", "EQ-000103").unwrap().data["status"], "out_of_service");
    app.transition(order["id"].as_str().unwrap(), "cancel", "nurse_li", json!({"reason": "报错设备"})).await.expect(200);
    assert_eq!(app.runtime.record("asset", "EQ-000103").unwrap().data["status"], "out_of_service", "cancelling does not bring it back");
    // The repair form's asset is a `ref` with `where: "status != 'retired'"`.
    set_status(&app, "EQ-000105", "retired");
    let mut report_data = report(json!([]));
    report_data["asset"] = json!("EQ-000105");
    let refused = app.start_instance("repair", "nurse_li", report_data).await.expect(422);
    assert_eq!((refused["details"][0]["field"].as_str(), refused["details"][0]["code"].as_str()), (Some("asset"), Some("not_an_option")), "{refused}");
    // …and its picker does not offer it (the page sends the field's condition).
    let cookie = session(&app, "nurse_li").await;
    let form = page(&app, &cookie, "/start/repair").await.text();
    let vals = form.split("hx-vals='").nth(1).unwrap_or_default().split("' ").next().unwrap_or_default().to_string();
    assert_eq!(
        vals, r#"{"field":"asset","fill":"1","where":&quot;status !&#x3D; &#x27;retired&#x27;&quot;}"#,
        "the picker carries the condition (HTML-escaped JSON)"
    );
    let offered = page(&app, &cookie, "/pick/asset?_q_asset=%E9%A3%8E%E6%9C%BA%E7%9B%98%E7%AE%A1&field=asset&where=status%20!%3D%20%27retired%27").await.text();
    assert!(!offered.contains("EQ-000105") && offered.contains("EQ-000113"), "{offered}");
}

#[tokio::test]
async fn a_tree_of_records_lists_each_under_its_parent() {
    let app = TestApp::hospital();
    let cookie = session(&app, "admin").await;
    let html = page(&app, &cookie, "/records/location").await.text();
    let at = |id: &str| html.find(&format!("/records/location/{id}\"")).unwrap_or_else(|| panic!("{id} missing"));
    // 东院区 sorts before 总院区 by title, and each campus is followed by its own buildings.
    assert!(at("DY") < at("ZY"));
    assert!(at("ZY") < at("ZY-A") && at("ZY") < at("ZY-B"), "buildings under their campus");
    let dy_children = html[at("DY")..at("ZY")].to_string();
    assert!(!dy_children.contains("/records/location/ZY-"), "no building of 总院区 under 东院区");
    assert!(html.contains("item d1") && html.contains("item d2"), "indented by depth");
}

#[tokio::test]
async fn errors_asked_in_chinese_are_chinese_throughout() {
    let mut app = TestApp::hospital();
    let mut data = report(json!([]));
    data.as_object_mut().unwrap().remove("description");
    let zh = app
        .request(Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(json!({"data": data})), &[("accept-language", "zh-CN,zh;q=0.9")])
        .await;
    assert_eq!(zh.status.as_u16(), 422);
    assert_eq!(zh.body["message"], "填写的内容有误，请检查标出的字段", "{}", zh.body);
    assert_eq!(zh.body["message_en"], "the submitted data is not valid");
    assert!(zh.body["details"][0]["message"].as_str().unwrap().chars().any(|c| c > '\u{2e80}'), "the field's message too: {}", zh.body);
    let none = app.request(Method::GET, "/api/v1/instances/nope", Some("nurse_li"), None, &[("accept-language", "zh-CN")]).await;
    assert_eq!(none.body["message"], "找不到该内容，或您无权查看");
    // Asked in English, or not asked: as before.
    let en = app.request(Method::GET, "/api/v1/instances/nope", Some("nurse_li"), None, &[("accept-language", "en")]).await;
    assert!(en.body["message"].as_str().unwrap().is_ascii() && en.body.get("message_en").is_none());
}

#[tokio::test]
async fn the_language_of_a_users_account_chooses_the_pages_language() {
    let mut app = TestApp::hospital();
    app.request(Method::PATCH, "/api/v1/admin/users/nurse_chen", Some("admin"), Some(json!({"language": "en"})), &[]).await.expect(200);
    let cookie = session(&app, "nurse_chen").await;
    // The browser asks for Chinese; her account says English.
    let home = page(&app, &cookie, "/").await.text();
    assert!(home.contains("<html lang=\"en\">") && home.contains("Start something"), "{}", &home[..300]);
    // A choice made on the device (the language switch) comes first.
    let zh = send(&app, Request::builder().uri("/").header("cookie", format!("{cookie}; ff_lang=zh-CN")).body(Body::empty()).unwrap()).await.text();
    assert!(zh.contains("<html lang=\"zh-CN\">"));
}

#[tokio::test]
async fn the_order_page_shows_its_resolution_time_and_its_linked_orders() {
    let mut app = TestApp::hospital();
    let started = app
        .post("/api/v1/workflows/inspection/instances", "dispatcher_liu", json!({"data": {"asset": "EQ-000104", "category": "hvac", "plan": "月度巡检"}}))
        .await
        .expect(201);
    let id = started["id"].as_str().unwrap().to_string();
    app.post(&format!("/api/v1/instances/{id}/transitions/start_work"), "tech_wang", json!({"data": {}})).await.expect(200);
    let done = app
        .post(
            &format!("/api/v1/instances/{id}/transitions/finish"),
            "tech_wang",
            json!({"data": {"checklist": [{"item": "冷凝器压力", "result": "abnormal"}], "summary": "异常"}}),
        )
        .await
        .expect(200);
    let child = done["children"][0].as_str().unwrap().to_string();
    let cookie = session(&app, "tech_wang").await;
    let inspection = page(&app, &cookie, &format!("/i/{id}")).await.text();
    assert!(inspection.contains("关联工单") && inspection.contains(&format!("href=\"/i/{child}\"")) && inspection.contains("设备报修"), "{inspection}");
    let repair = page(&app, &cookie, &format!("/i/{child}")).await.text();
    assert!(repair.contains("发起自") && repair.contains(&format!("href=\"/i/{id}\"")), "{repair}");
    assert!(repair.contains("解决时限"), "the resolution deadline is shown: {repair}");
    // Someone who may not read the inspection does not see the link to it.
    let nurse = session(&app, "nurse_li").await;
    assert_eq!(page(&app, &nurse, &format!("/i/{child}")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_team_added_as_a_record_gets_members_orders_and_a_place_in_the_dispatch_form() {
    let mut app = TestApp::hospital_copy();
    // 锅炉班 is in no YAML file and no script: an admin adds it as a record.
    let unknown = app
        .post("/api/v1/admin/users", "admin", json!({"id": "tech_he", "name": "何师傅", "roles": ["technician"], "teams": ["boiler_team"]}))
        .await
        .expect(422);
    assert!(unknown["message"].as_str().unwrap().contains("boiler_team"), "{unknown}");
    app.post("/api/v1/records/team", "admin", json!({"data": {"code": "boiler_team", "name": "锅炉班", "categories": ["plumbing"]}})).await.expect(201);
    app.post(
        "/api/v1/admin/users",
        "admin",
        json!({"id": "tech_he", "name": "何师傅", "roles": ["staff", "technician"], "teams": ["boiler_team"], "password": "boiler-2026-ok"}),
    )
    .await
    .expect(201);
    // Plumbing now goes to it (the first team, by code, that handles the category).
    let order =
        app.start_instance("repair", "nurse_li", json!({"asset": "EQ-000120", "department": "D-WARD5", "description": "洗手池下水堵塞"})).await.expect(201);
    assert_eq!(order["assignment"]["team"], "boiler_team", "{order}");
    let id = order["id"].as_str().unwrap().to_string();
    let accepted = app.transition(&id, "accept", "tech_he", json!({})).await.expect(200);
    assert_eq!(accepted["assignment"]["assignee"], "tech_he");
    // The dispatcher's form offers it, by its name.
    let cookie = session(&app, "dispatcher_liu").await;
    let form = page(&app, &cookie, &format!("/i/{id}/t/dispatch")).await.text();
    assert!(form.contains("<option value=\"boiler_team\">锅炉班</option>"), "{form}");
    // The app's metadata lists it with the declared ones.
    let meta = app.get("/api/v1/bundle", "admin").await.expect(200);
    assert!(meta["teams"].as_array().unwrap().iter().any(|t| t["name"] == "boiler_team"), "{meta}");
    // A route to a team that is neither declared nor a record is refused, naming it.
    app.write("rules/route_inspection.rhai", "#{ team: \"ghost_team\" }\n");
    app.post("/api/v1/admin/reload", "admin", json!({})).await.expect(200);
    let ghost = app
        .post("/api/v1/workflows/inspection/instances", "dispatcher_liu", json!({"data": {"asset": "EQ-000104", "category": "hvac", "plan": "巡检"}}))
        .await
        .expect(422);
    assert!(ghost["message"].as_str().unwrap().contains("ghost_team"), "{ghost}");
}

#[tokio::test]
async fn the_managers_dashboard_draws_its_tiles_and_drills_down_to_the_orders() {
    let mut app = TestApp::hospital();
    for (asset, dept) in [("EQ-000101", "D-WARD5"), ("EQ-000102", "D-LAB"), ("EQ-000139", "D-ICU")] {
        app.start_instance("repair", "nurse_li", json!({"asset": asset, "department": dept, "description": "设备故障需要维修"})).await.expect(201);
    }
    let cookie = session(&app, "manager_zheng").await;
    let me = page(&app, &cookie, "/me").await.text();
    assert!(me.contains("href=\"/dashboards\""), "managers find their dashboards");
    let board = page(&app, &cookie, "/dashboards").await;
    assert_eq!(board.status, StatusCode::OK);
    // Attribute values as a browser reads them (handlebars writes `=` as an entity).
    let html = board.text().replace("&#x3D;", "=").replace("&amp;", "&");
    assert!(html.contains("后勤管理看板") && html.contains("每日报修量") && html.contains("故障类别分布"), "{html}");
    assert!(html.matches("<svg class=\"chart\"").count() >= 3, "charts are drawn (tiles with no data yet say so)");
    assert!(html.contains("<a class=\"card kpi-tile\" href=\"/reports/repair_overview/rows?from="), "a KPI links to its orders");
    // The pie's drill-down: the orders of one category.
    let at = html.find("/reports/repair_overview/rows?by=asset.category&key=elevator").expect("a slice for lifts");
    let href = html[at..].split('"').next().unwrap().to_string();
    let rows = page(&app, &cookie, &href).await.text();
    assert_eq!(rows.matches("<li class=\"card item\">").count(), 1, "one lift order: {rows}");
    // The report page: a table, a grouping choice, the downloads.
    let report = page(&app, &cookie, "/reports/repair_overview?by=department").await.text().replace("&#x3D;", "=");
    assert!(report.contains("<table class=\"report\">") && report.contains("检验科") && report.contains("format=xlsx"), "{report}");
    // Nobody else's: a nurse has no dashboard.
    let nurse = session(&app, "nurse_li").await;
    assert_eq!(page(&app, &nurse, "/dashboards").await.status, StatusCode::NOT_FOUND);
    assert!(!page(&app, &nurse, "/me").await.text().contains("href=\"/dashboards\""));
}

#[tokio::test]
async fn an_admin_replays_a_changed_dispatch_rule_on_a_page() {
    let mut app = TestApp::hospital_copy();
    let hvac = app
        .start_instance("repair", "nurse_li", json!({"asset": "EQ-000101", "department": "D-LAB", "description": "空调不制冷了,室温很高"}))
        .await
        .expect(201);
    app.start_instance("repair", "nurse_li", json!({"asset": "EQ-000116", "department": "D-LAB", "description": "洗手池水管漏水了"})).await.expect(201);
    let candidate = flowform_tests::changed_copy(
        &app.app_dir,
        &[(
            "rules/dispatch.rhai",
            "let team = team_for(record.category);",
            "let team = if record.category == \"hvac\" { \"general_team\" } else { team_for(record.category) };",
        )],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dispatch = candidate.path().join("rules/dispatch.rhai");
    let dir: String = url::form_urlencoded::byte_serialize(candidate.path().to_str().unwrap().as_bytes()).collect();

    let admin = session(&app, "admin").await;
    assert!(page(&app, &admin, "/admin").await.text().contains("href=\"/admin/replay\""), "the admin page links to it");
    let form = page(&app, &admin, "/admin/replay").await;
    assert_eq!(form.status, StatusCode::OK);
    let html = form.text();
    assert!(html.contains("name=\"dir\"") && html.contains("name=\"version\"") && html.contains("method=\"post\""));
    let csrf_of = |html: &str| {
        let marker = "name=\"csrf-token\" content=\"";
        let at = html.find(marker).unwrap() + marker.len();
        html[at..].split('"').next().unwrap().to_string()
    };
    let run = |cookie: &str, body: String| {
        Request::builder()
            .method(Method::POST)
            .uri("/admin/replay")
            .header("cookie", cookie)
            .header("accept-language", "zh-CN")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let csrf = csrf_of(&html);
    // A GET with the fields runs nothing (a link from another site must not start one).
    assert!(!page(&app, &admin, &format!("/admin/replay?dir={dir}")).await.text().contains("data-replay"));
    assert_eq!(send(&app, run(&admin, format!("dir={dir}&workflow=repair"))).await.status, StatusCode::FORBIDDEN, "no CSRF token");
    let done = send(&app, run(&admin, format!("_csrf={csrf}&dir={dir}&workflow=repair&since=30&version="))).await;
    assert_eq!(done.status, StatusCode::OK);
    let html = done.text();
    assert!(html.contains("重放 2 个实例（2 个步骤），1 个会有不同"), "{html}");
    assert!(html.contains("空调班 → 综合维修班") && html.contains("班组不同"), "{html}");
    assert!(html.contains(hvac["number"].as_str().unwrap()), "the order is listed: {html}");
    assert_eq!(html.matches("data-affected").count(), 1);
    // A broken candidate is named with its problems; nobody but admins may replay.
    std::fs::write(&dispatch, "let x = ;").unwrap();
    let broken = send(&app, run(&admin, format!("_csrf={csrf}&dir={dir}"))).await;
    assert_eq!(broken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(broken.text().contains("rules/dispatch.rhai"), "{}", broken.text());
    let manager = session(&app, "manager_zheng").await;
    let manager_csrf = csrf_of(&page(&app, &manager, "/me").await.text());
    assert_eq!(send(&app, run(&manager, format!("_csrf={manager_csrf}&dir={dir}"))).await.status, StatusCode::FORBIDDEN);
}
