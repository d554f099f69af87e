//! Records, references and ledgers on the hospital application, through the API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request};
use flowform_tests::TestApp;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tower::ServiceExt;

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn search_finds_assets_by_a_partial_chinese_name() {
    let mut app = TestApp::hospital();
    let page = app.get("/api/v1/records/asset?q=冷水机", "nurse_li").await.expect(200);
    let found = ids(&page);
    assert!(found.contains(&"EQ-000101".to_string()), "{page}");
    assert!(page["items"].as_array().unwrap().iter().all(|r| r["data"]["name"].as_str().unwrap().contains("冷水机")));
    assert_eq!(app.get("/api/v1/records/asset?q=rfid-eq-000101", "nurse_li").await.expect(200)["total"], 1, "search is case-insensitive and covers the tag");
    let hvac = app.get("/api/v1/records/asset?category=hvac&sort=-code&limit=5", "nurse_li").await.expect(200);
    assert_eq!(hvac["total"], 15);
    assert_eq!(ids(&hvac)[0], "EQ-000115");
    let next = hvac["next_cursor"].as_str().unwrap().to_string();
    let page2 = app.get(&format!("/api/v1/records/asset?category=hvac&sort=-code&limit=5&cursor={next}"), "nurse_li").await.expect(200);
    assert_eq!(ids(&page2)[0], "EQ-000110");
    assert_eq!(app.get("/api/v1/records/asset?colour=red", "nurse_li").await.expect(400)["code"], "invalid_query");
    assert_eq!(app.get("/api/v1/records/spaceship", "nurse_li").await.expect(404)["code"], "unknown_record_type");
}

/// The plain list reads only its page (and kept counts); paged through, it
/// gives what the whole list sorted by id gives, archived records only when asked.
#[tokio::test]
async fn the_plain_list_pages_through_every_record_like_the_sorted_list() {
    let mut app = TestApp::hospital();
    app.request(Method::DELETE, "/api/v1/records/asset/EQ-000103", Some("admin"), None, &[]).await.expect(200);
    for (extra, query) in [("", ""), ("&include_archived=true", "include_archived=true&")] {
        let whole = app.get(&format!("/api/v1/records/asset?{query}sort=id&limit=1000"), "admin").await.expect(200);
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = app.get(&format!("/api/v1/records/asset?limit=7{extra}{cursor}"), "admin").await.expect(200);
            assert_eq!(page["total"], whole["total"], "{query}");
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(seen, ids(&whole), "{query}");
        assert_eq!(seen.contains(&"EQ-000103".to_string()), !extra.is_empty(), "the archived asset only when asked for");
    }
}

#[tokio::test]
async fn a_subtree_query_lists_every_asset_in_a_building() {
    let mut app = TestApp::hospital();
    let all = app.get("/api/v1/records/asset?limit=1000", "admin").await.expect(200);
    let floors = app.get("/api/v1/records/location?under=parent:ZY-B&limit=1000", "admin").await.expect(200);
    let inside: Vec<String> = ids(&floors);
    assert!(inside.contains(&"ZY-B-05F".to_string()) && inside.contains(&"ZY-B-05F-ICU".to_string()) && !inside.contains(&"ZY-B".to_string()));
    let expected: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| inside.contains(&a["data"]["location"].as_str().unwrap().to_string()))
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!expected.is_empty());
    let in_building = app.get("/api/v1/records/asset?under=location:ZY-B&limit=1000", "admin").await.expect(200);
    let mut got = ids(&in_building);
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(app.get("/api/v1/records/asset?under=location", "admin").await.expect(400)["code"], "invalid_query");
}

#[tokio::test]
async fn a_referenced_location_cannot_be_deleted_and_archiving_keeps_references_readable() {
    let mut app = TestApp::hospital();
    let refused = app.request(Method::DELETE, "/api/v1/records/location/ZY-B-05F-ICU?purge=true", Some("admin"), None, &[]).await.expect(409);
    assert_eq!(refused["code"], "record_referenced");
    assert!(refused["message"].as_str().unwrap().contains("record:asset/"), "{refused}");
    app.request(Method::DELETE, "/api/v1/records/location/ZY-B-05F-ICU", Some("nurse_li"), None, &[]).await.expect(403);
    let archived = app.request(Method::DELETE, "/api/v1/records/location/ZY-B-05F-ICU", Some("admin"), None, &[]).await.expect(200);
    assert_eq!(archived["archived"], true);
    assert_eq!(app.get("/api/v1/records/location/ZY-B-05F-ICU", "nurse_li").await.expect(200)["data"]["name"], "住院楼 5 层 重症监护室");
    let asset = app.get("/api/v1/records/asset?location=ZY-B-05F-ICU", "nurse_li").await.expect(200);
    assert!(asset["total"].as_u64().unwrap() > 0, "assets still point at the archived location");
    assert!(!ids(&app.get("/api/v1/records/location?limit=1000", "admin").await.expect(200)).contains(&"ZY-B-05F-ICU".to_string()));
    assert!(ids(&app.get("/api/v1/records/location?limit=1000&include_archived=true", "admin").await.expect(200)).contains(&"ZY-B-05F-ICU".to_string()));
    let new_ref =
        app.post("/api/v1/records/department", "admin", json!({"data": {"code": "D-NEW", "name": "新科室", "location": "ZY-B-05F-ICU"}})).await.expect(422);
    assert_eq!((new_ref["details"][0]["field"].as_str(), new_ref["details"][0]["code"].as_str()), (Some("location"), Some("unknown_reference")));
    // An unreferenced record can be purged.
    app.post("/api/v1/records/location", "admin", json!({"data": {"code": "TMP-1", "name": "临时", "kind": "room", "parent": "ZY-A"}})).await.expect(201);
    app.request(Method::DELETE, "/api/v1/records/location/TMP-1?purge=true", Some("admin"), None, &[]).await.expect(200);
    app.get("/api/v1/records/location/TMP-1", "admin").await.expect(404);
}

#[tokio::test]
async fn records_have_versions_and_a_history_that_includes_their_work_orders() {
    let mut app = TestApp::hospital();
    let created = app
        .post("/api/v1/records/asset", "admin", json!({"data": {"code": "EQ-009001", "name": "3号冷水机组", "category": "hvac", "location": "ZY-B-B1-PLANT"}}))
        .await
        .expect(201);
    assert_eq!((created["id"].as_str(), created["version"].as_u64(), created["title"].as_str()), (Some("EQ-009001"), Some(1), Some("3号冷水机组 (EQ-009001)")));
    assert_eq!(created["data"]["status"], "in_service", "defaults apply");
    let dup =
        app.post("/api/v1/records/asset", "admin", json!({"data": {"code": "EQ-009001", "name": "x", "category": "hvac", "location": "ZY"}})).await.expect(409);
    assert!(dup["message"].as_str().unwrap().contains("already exists"));
    let update = json!({"data": {"code": "EQ-009001", "name": "3号冷水机组", "category": "hvac", "location": "ZY-B-B1-PLANT", "status": "under_repair"}, "expected_version": 1});
    app.request(Method::PUT, "/api/v1/records/asset/EQ-009001", Some("admin"), Some(update.clone()), &[]).await.expect(200);
    let stale = app.request(Method::PUT, "/api/v1/records/asset/EQ-009001", Some("admin"), Some(update), &[]).await.expect(409);
    assert_eq!(stale["code"], "version_conflict");
    let rename = json!({"data": {"code": "EQ-009002", "name": "x", "category": "hvac", "location": "ZY"}});
    assert_eq!(
        app.request(Method::PUT, "/api/v1/records/asset/EQ-009001", Some("admin"), Some(rename), &[]).await.expect(422)["details"][0]["code"],
        "key_field"
    );

    let bad = app
        .start_instance(
            "repair",
            "nurse_li",
            json!({"asset": "EQ-999999", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了"}),
        )
        .await
        .expect(422);
    assert_eq!((bad["details"][0]["field"].as_str(), bad["details"][0]["code"].as_str()), (Some("asset"), Some("unknown_reference")));
    let wo = app
        .start_instance(
            "repair",
            "nurse_li",
            json!({"asset": "EQ-009001", "category": "hvac", "department": "D-ICU", "location": "机房", "description": "冷水机组报警停机"}),
        )
        .await
        .expect(201);
    let history = app.get("/api/v1/records/asset/EQ-009001/history", "admin").await.expect(200);
    let kinds: Vec<(&str, &str)> = history.as_array().unwrap().iter().map(|e| (e["source"].as_str().unwrap(), e["kind"].as_str().unwrap())).collect();
    assert_eq!(kinds, vec![("record", "created"), ("record", "updated"), ("instance", "started")]);
    assert_eq!(history[2]["instance_id"], wo["id"]);
    assert_eq!(history[1]["changes"]["status"], json!({"before": "in_service", "after": "under_repair"}));
}

async fn send(router: &axum::Router, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requisitions_for_the_last_units_never_go_negative_and_survive_a_restart() {
    let mut app = TestApp::hospital();
    app.post("/api/v1/records/part", "admin", json!({"data": {"code": "P-900", "name": "压缩机启动电容", "unit": "个", "category": "hvac", "min_level": 2}}))
        .await
        .expect(201);
    app.post(
        "/api/v1/ledgers/stock/movements",
        "keeper_qian",
        json!({"movements": [{"kind": "receive", "part": "P-900", "warehouse": "WH-ZY-B-1", "quantity": 5, "reason": "采购入库"}]}),
    )
    .await
    .expect(201);
    let wo = app
        .start_instance(
            "repair",
            "nurse_li",
            json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了"}),
        )
        .await
        .expect(201);
    let wo_id = wo["id"].as_str().unwrap().to_string();
    let tech = app.token("tech_wang");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let router = app.router.clone();
        let (tech, wo_id) = (tech.clone(), wo_id.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"data": {"work_order": wo_id, "warehouse": "WH-ZY-B-1", "lines": [{"part": "P-900", "quantity": 1}]}});
            send(&router, Method::POST, "/api/v1/workflows/requisition/instances", &tech, body).await
        }));
    }
    let mut created = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => created.push(body["id"].as_str().unwrap().to_string()),
            409 => refused.push(body),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created.len(), refused.len()), (5, 95));
    assert_eq!(refused[0]["code"], "ledger_violation");
    assert_eq!(refused[0]["details"], json!({"ledger": "stock", "dimensions": {"part": "P-900", "warehouse": "WH-ZY-B-1"}, "requested": 1, "available": 0}));
    assert!(refused[0]["message"].as_str().unwrap().contains("part `P-900`, warehouse `WH-ZY-B-1`: 1 requested, 0 available"), "{}", refused[0]);
    let balance = app.get("/api/v1/ledgers/stock/balances?part=P-900", "admin").await.expect(200);
    assert_eq!(balance["items"][0], json!({"dimensions": {"part": "P-900", "warehouse": "WH-ZY-B-1"}, "on_hand": 5, "reserved": 5, "available": 0}));
    for id in &created {
        app.transition(id, "approve", "keeper_qian", json!({})).await.expect(200);
    }
    app.transition(&created[0], "approve", "keeper_qian", json!({})).await.expect(409);
    let below = app.get("/api/v1/ledgers/stock/below_threshold", "admin").await.expect(200);
    assert!(below["items"].as_array().unwrap().iter().any(|i| i["part"] == "P-900" && i["available"] == 0 && i["minimum"] == 2));
    let events = app.get("/api/v1/ledger_events", "admin").await.expect(200);
    assert!(events.as_array().unwrap().iter().any(|e| e["kind"] == "ledger.below_threshold" && e["value"] == "P-900"));

    let mut app = app.restart();
    let balances = app.get("/api/v1/ledgers/stock/balances", "admin").await.expect(200);
    let movements = app.get("/api/v1/ledgers/stock/movements?limit=1000", "admin").await.expect(200);
    let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for m in movements["items"].as_array().unwrap() {
        let e = sums.entry(format!("{}/{}", m["dims"]["part"], m["dims"]["warehouse"])).or_default();
        e.0 += m["on_hand_delta"].as_i64().unwrap();
        e.1 += m["reserved_delta"].as_i64().unwrap();
    }
    for b in balances["items"].as_array().unwrap() {
        let k = format!("{}/{}", b["dimensions"]["part"], b["dimensions"]["warehouse"]);
        assert_eq!(sums[&k], (b["on_hand"].as_i64().unwrap(), b["reserved"].as_i64().unwrap()), "{k}");
        assert!(b["available"].as_i64().unwrap() >= 0);
    }
    let p900 = app.get("/api/v1/ledgers/stock/balances?part=P-900", "admin").await.expect(200);
    assert_eq!((p900["items"][0]["on_hand"].as_i64(), p900["items"][0]["reserved"].as_i64()), (Some(0), Some(0)));
    let by_instance = app.get(&format!("/api/v1/ledgers/stock/movements?instance={}", created[0]), "admin").await.expect(200);
    assert_eq!(by_instance["items"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect::<Vec<_>>(), vec!["reserve", "issue_reserved"]);
}

#[tokio::test]
async fn parts_are_returned_released_and_transferred() {
    let mut app = TestApp::hospital();
    let wo = app
        .start_instance(
            "repair",
            "nurse_li",
            json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了"}),
        )
        .await
        .expect(201);
    let start = |lines: Value| json!({"work_order": wo["id"], "warehouse": "WH-ZY-B-1", "lines": lines});
    let balance = |b: &Value| (b["items"][0]["on_hand"].as_i64().unwrap(), b["items"][0]["reserved"].as_i64().unwrap());
    let before = balance(&app.get("/api/v1/ledgers/stock/balances?part=P-001&warehouse=WH-ZY-B-1", "admin").await.expect(200));
    let req = app.start_instance("requisition", "tech_wang", start(json!([{"part": "P-001", "quantity": 3}]))).await.expect(201);
    let id = req["id"].as_str().unwrap().to_string();
    app.transition(&id, "approve", "keeper_qian", json!({})).await.expect(200);
    let over = app.transition(&id, "return_parts", "tech_wang", json!({"return_lines": [{"part": "P-001", "quantity": 4}]})).await.expect(422);
    assert_eq!(over["details"][0]["field"], "return_lines[0].quantity");
    app.transition(&id, "return_parts", "tech_wang", json!({"return_lines": [{"part": "P-001", "quantity": 2}]})).await.expect(200);
    app.transition(&id, "return_parts", "tech_wang", json!({"return_lines": [{"part": "P-001", "quantity": 2}]})).await.expect(422);
    let after = balance(&app.get("/api/v1/ledgers/stock/balances?part=P-001&warehouse=WH-ZY-B-1", "admin").await.expect(200));
    assert_eq!(after, (before.0 - 1, before.1));

    let cancelled = app.start_instance("requisition", "tech_wang", start(json!([{"part": "P-001", "quantity": 2}]))).await.expect(201);
    assert_eq!(balance(&app.get("/api/v1/ledgers/stock/balances?part=P-001&warehouse=WH-ZY-B-1", "admin").await.expect(200)).1, before.1 + 2);
    app.transition(cancelled["id"].as_str().unwrap(), "cancel", "tech_wang", json!({})).await.expect(200);
    assert_eq!(balance(&app.get("/api/v1/ledgers/stock/balances?part=P-001&warehouse=WH-ZY-B-1", "admin").await.expect(200)).1, before.1);

    let unknown = app.start_instance("requisition", "tech_wang", start(json!([{"part": "P-404", "quantity": 1}]))).await.expect(422);
    assert_eq!(unknown["details"][0]["field"], "lines[0].part");
    app.post(
        "/api/v1/ledgers/stock/movements",
        "nurse_li",
        json!({"movements": [{"kind": "receive", "part": "P-001", "warehouse": "WH-ZY-B-1", "quantity": 1}]}),
    )
    .await
    .expect(403);
    let bad = app
        .post(
            "/api/v1/ledgers/stock/movements",
            "keeper_qian",
            json!({"movements": [{"kind": "teleport", "part": "P-001", "warehouse": "WH-ZY-B-1", "quantity": 1}]}),
        )
        .await
        .expect(422);
    assert_eq!(bad["code"], "invalid_movement");

    const CAMPUS: &str = "/api/v1/ledgers/stock/balances?part=P-002&under=warehouse:WH-ZY&rollup=true";
    let total = app.get(CAMPUS, "admin").await.expect(200)["items"][0]["on_hand"].as_i64().unwrap();
    let moved = app
        .post("/api/v1/ledgers/stock/movements", "keeper_qian", json!({"movements": [{"kind": "transfer", "part": "P-002", "warehouse": "WH-ZY-B-1", "to": {"warehouse": "WH-ZY-C-1"}, "quantity": 5, "reason": "调拨"}]}))
        .await
        .expect(201);
    assert_eq!(moved["movements"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect::<Vec<_>>(), vec!["transfer_out", "transfer_in"]);
    assert_eq!(
        app.get(CAMPUS, "admin").await.expect(200)["items"][0]["on_hand"].as_i64().unwrap(),
        total,
        "a transfer inside the campus keeps the campus total"
    );
    let per = app.get("/api/v1/ledgers/stock/balances?part=P-002&under=warehouse:WH-ZY", "admin").await.expect(200);
    assert_eq!(per["items"].as_array().unwrap().len(), 2);
    let east = app.get("/api/v1/ledgers/stock/balances?part=P-002&under=warehouse:WH-DY&rollup=true", "admin").await.expect(200);
    assert_eq!(east["items"][0]["dimensions"]["warehouse"], "WH-DY");
    let below = app.get("/api/v1/ledgers/stock/below_threshold", "admin").await.expect(200);
    assert_eq!(below["items"].as_array().unwrap().iter().filter(|i| i["part"] == "P-020").count(), 1, "the demo leaves P-020 under its minimum: {below}");
}

#[tokio::test]
async fn import_reports_every_bad_row_and_writes_nothing_until_the_file_is_right() {
    let app = TestApp::hospital();
    let dir = tempfile::tempdir().unwrap();
    let bad = "设备编号,设备名称,设备类别,安装位置,安装日期\nEQ-700001,送风机,hvac,ZY-A,2024-05-01\nEQ-700002,排风机,空调,ZY-A,2024-05-01\nEQ-700003,新风机,hvac,ZY-Q,2024-05-01\nEQ-700004,回风机,空调暖通,ZY-A,2024-13-01\n";
    let path = dir.path().join("assets.csv");
    std::fs::write(&path, format!("\u{feff}{bad}")).unwrap();
    let admin = flowform_runtime::accounts::actor_of(&app.runtime.store().user("admin").unwrap().unwrap());
    let table = flowform_runtime::import::read_table(&path).unwrap();
    let report = app.runtime.import("asset", &table, false, false, &admin, flowform_core::Lang::En).unwrap();
    let problems: Vec<(usize, &str)> = report.errors.iter().map(|e| (e.row, e.field.as_str())).collect();
    assert_eq!(problems, vec![(3, "category"), (4, "location"), (5, "install_date")]);
    assert!(report.errors[0].message.contains("`空调` is not one of"), "{:?}", report.errors);
    assert_eq!(report.imported, 0);
    assert!(app.runtime.store().record("asset", "EQ-700001").unwrap().is_none(), "nothing written");
    let fixed = bad.replace(",空调,", ",hvac,").replace("ZY-Q", "ZY-B").replace("2024-13-01", "2024-12-01");
    std::fs::write(&path, fixed).unwrap();
    let table = flowform_runtime::import::read_table(&path).unwrap();
    let dry = app.runtime.import("asset", &table, true, false, &admin, flowform_core::Lang::En).unwrap();
    assert_eq!((dry.valid, dry.imported, dry.errors.len()), (4, 0, 0));
    let report = app.runtime.import("asset", &table, false, false, &admin, flowform_core::Lang::En).unwrap();
    assert_eq!((report.imported, report.errors.len()), (4, 0));
    assert_eq!(app.runtime.store().record("asset", "EQ-700004").unwrap().unwrap().data["category"], "hvac", "a label (空调暖通) imports as its value");

    let (header, rows) = app
        .runtime
        .export_table(
            "asset",
            &flowform_runtime::records::RecordQuery { q: Some("EQ-7000".into()), limit: 100, ..Default::default() },
            flowform_core::Lang::ZhCn,
        )
        .unwrap();
    assert_eq!(rows.len(), 4);
    let csv = flowform_runtime::import::to_csv(&header, &rows).unwrap();
    assert!(csv.starts_with("\u{feff}设备编号,设备名称,设备类别".as_bytes()));
    let xlsx = flowform_runtime::import::to_xlsx("asset", &header, &rows, &app.runtime.numeric_columns("asset").unwrap()).unwrap();
    let back = dir.path().join("assets.xlsx");
    std::fs::write(&back, xlsx).unwrap();
    let table = flowform_runtime::import::read_table(&back).unwrap();
    assert_eq!(table.rows.len(), 4);
    assert_eq!(table.rows[0].1[0], "EQ-700001");
    assert_eq!(table.rows[0].1[2], "空调暖通", "exported with labels, which import again");
}

#[tokio::test]
async fn the_api_exports_a_filtered_list() {
    let mut app = TestApp::hospital();
    let token = app.token("admin");
    let req = Request::builder()
        .uri("/api/v1/records/asset/export?format=csv&category=elevator")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.starts_with("\u{feff}设备编号"));
    assert_eq!(text.lines().count(), 11, "a header and the 10 elevators");
    assert!(text.contains(",电梯,"), "enum values as labels");
    assert_eq!(app.get("/api/v1/records/asset/export?format=pdf", "admin").await.expect(400)["code"], "invalid_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transitions_on_one_instance_one_wins_per_version() {
    let mut app = TestApp::hospital();
    let wo = app
        .start_instance(
            "repair",
            "nurse_li",
            json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了"}),
        )
        .await
        .expect(201);
    let id = wo["id"].as_str().unwrap().to_string();
    let wang = app.token("tech_wang");
    let zhang = app.token("tech_zhang");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let router = app.router.clone();
        let token = if i % 2 == 0 { wang.clone() } else { zhang.clone() };
        let path = format!("/api/v1/instances/{id}/transitions/accept");
        tasks.push(tokio::spawn(async move { send(&router, Method::POST, &path, &token, json!({"data": {}, "expected_version": 1})).await }));
    }
    let mut statuses = BTreeMap::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        if status == 409 {
            assert!(body["code"] == "version_conflict" || body["code"] == "transition_not_allowed", "{body}");
        }
    }
    assert_eq!(statuses.get(&200), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get(&409), Some(&39), "{statuses:?}");
    let history = app.get(&format!("/api/v1/instances/{id}/history"), "admin").await.expect(200);
    assert_eq!(history.as_array().unwrap().len(), 2, "one accept, recorded once");
}

/// Found by the crash test: a restock whose answer was lost and that the client
/// sent again moved the stock twice. With an Idempotency-Key it moves once.
#[tokio::test]
async fn a_retried_posting_with_the_same_idempotency_key_moves_the_stock_once() {
    let mut app = TestApp::hospital();
    let url = "/api/v1/ledgers/stock/balances?part=P-001&warehouse=WH-ZY-B-1";
    let on_hand = |v: &Value| v["items"][0]["on_hand"].as_i64().unwrap();
    let before = on_hand(&app.get(url, "admin").await.expect(200));
    let body = json!({"movements": [{"kind": "receive", "part": "P-001", "warehouse": "WH-ZY-B-1", "quantity": 7, "reason": "采购入库"}]});
    let headers = [("idempotency-key", "receipt-2026-11-25-001")];
    let path = "/api/v1/ledgers/stock/movements";
    let first = app.request(axum::http::Method::POST, path, Some("keeper_qian"), Some(body.clone()), &headers).await.expect(201);
    let again = app.request(axum::http::Method::POST, path, Some("keeper_qian"), Some(body), &headers).await.expect(201);
    assert_eq!(first, again, "the retry answers with the first posting's movements");
    assert_eq!(on_hand(&app.get(url, "admin").await.expect(200)), before + 7);
    let other = json!({"movements": [{"kind": "receive", "part": "P-001", "warehouse": "WH-ZY-B-1", "quantity": 8}]});
    let reused = app.request(axum::http::Method::POST, path, Some("keeper_qian"), Some(other), &headers).await.expect(422);
    assert_eq!(reused["code"], "idempotency_key_reused");
    assert_eq!(on_hand(&app.get(url, "admin").await.expect(200)), before + 7);
}

/// Regression: a record key's `{yyyyMMdd}` was the UTC date. At 00:30 in
/// Shanghai (16:30 UTC the day before) a reading is numbered with the
/// hospital's date, and a work order started then too.
#[tokio::test]
async fn dates_in_record_keys_are_the_apps_local_date() {
    let mut app = TestApp::hospital();
    app.clock.set("2026-11-30T16:30:00Z".parse().unwrap());
    let reading = json!({"data": {"asset": "EQ-000101", "category": "hvac", "reading": 10, "unit": "hours"}});
    let created = app.post("/api/v1/records/meter_reading", "tech_wang", reading).await.expect(201);
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("MR-20261201-"), "{id}");
    assert_eq!(created["created_at"], "2026-11-30T16:30:00.000Z");
}
