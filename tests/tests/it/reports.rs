//! Reports and exports of the hospital application, through the API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flowform_tests::TestApp;
use http_body_util::BodyExt;
use jiff::SignedDuration;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn raw(app: &mut TestApp, user: &str, path: &str) -> (StatusCode, String, Vec<u8>) {
    let token = app.token(user);
    let req = Request::builder().uri(path).header("authorization", format!("Bearer {token}")).header("accept-language", "zh-CN").body(Body::empty()).unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, content_type, res.into_body().collect().await.unwrap().to_bytes().to_vec())
}

/// A repair reported by `nurse` for `department`, taken to `state`
/// (`unaccepted`, `in_progress`, `closed` with a rating, or `auto` closed unconfirmed).
async fn order(app: &mut TestApp, asset: &str, department: &str, state: &str, rating: i64) -> String {
    let o =
        app.start_instance("repair", "nurse_li", json!({"asset": asset, "department": department, "description": "空调不制冷，需要维修"})).await.expect(201);
    let id = o["id"].as_str().unwrap().to_string();
    if state == "unaccepted" {
        return id;
    }
    let team = o["assignment"]["team"].as_str().unwrap().to_string();
    let tech = match team.as_str() {
        "hvac_team" => "tech_wang",
        "utilities_team" => "tech_zhao",
        "elevator_team" => "tech_sun",
        "medical_gas_team" => "tech_zhou",
        _ => "tech_wu",
    };
    app.transition(&id, "accept", tech, json!({})).await.expect(200);
    app.clock.advance(SignedDuration::from_mins(15));
    app.transition(&id, "check_in", tech, json!({"place": {"tag": format!("RFID-{asset}")}})).await.expect(200);
    if state == "in_progress" {
        return id;
    }
    app.transition(&id, "complete", tech, json!({"fault_cause": "wear", "work_notes": "更换部件，运行正常"})).await.expect(200);
    if state == "auto" {
        app.clock.advance(SignedDuration::from_hours(73));
        let runtime = app.runtime.clone();
        tokio::task::spawn_blocking(move || runtime.fire_due_timers()).await.unwrap().unwrap();
        return id;
    }
    app.transition(&id, "confirm", "nurse_li", json!({"rating": rating, "comment": "很好，谢谢师傅"})).await.expect(200);
    id
}

#[tokio::test]
async fn the_hospital_reports_are_listed_for_managers_and_hidden_from_others() {
    let mut app = TestApp::hospital();
    let list = app.get("/api/v1/reports", "manager_zheng").await.expect(200);
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for expected in
        ["repair_overview", "response_time", "mttr", "sla_compliance", "satisfaction", "backlog", "attendance", "stock_consumption", "stock_on_hand"]
    {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    assert_eq!(list["items"][0]["title"].as_str().map(|t| !t.is_empty()), Some(true));
    let nurse = app.get("/api/v1/reports", "nurse_li").await.expect(200);
    assert_eq!(nurse["items"], json!([]));
    assert_eq!(app.get("/api/v1/reports/sla_compliance", "nurse_li").await.expect(404)["code"], "not_found");
    let keeper = app.get("/api/v1/reports", "keeper_qian").await.expect(200);
    let names: Vec<&str> = keeper["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"stock_consumption") && !names.contains(&"satisfaction"), "{names:?}");
}

#[tokio::test]
async fn sla_compliance_by_department_equals_a_recomputation_from_the_orders() {
    let mut app = TestApp::hospital();
    order(&mut app, "EQ-000101", "D-WARD5", "closed", 5).await;
    order(&mut app, "EQ-000120", "D-WARD5", "closed", 4).await;
    order(&mut app, "EQ-000102", "D-LAB", "closed", 3).await;
    order(&mut app, "EQ-000103", "D-LAB", "in_progress", 0).await;
    // An order that waits four days: closed well past its 4-hour deadline.
    let late = app
        .start_instance("repair", "nurse_li", json!({"asset": "EQ-000105", "department": "D-LAB", "description": "风机盘管噪音大，影响休息"}))
        .await
        .expect(201);
    let late_id = late["id"].as_str().unwrap().to_string();
    app.clock.advance(SignedDuration::from_hours(96));
    app.transition(&late_id, "accept", "tech_wang", json!({})).await.expect(200);
    app.transition(&late_id, "check_in", "tech_wang", json!({"place": {"tag": "RFID-EQ-000105"}})).await.expect(200);
    app.transition(&late_id, "complete", "tech_wang", json!({"fault_cause": "wear", "work_notes": "已更换风机"})).await.expect(200);
    app.transition(&late_id, "confirm", "nurse_li", json!({"rating": 2, "comment": "等待时间太长"})).await.expect(200);

    let report = app.get("/api/v1/reports/sla_compliance?by=department", "manager_zheng").await.expect(200);
    // The naive recomputation from the orders themselves.
    let all = app.get("/api/v1/instances?workflow=repair&limit=500", "admin").await.expect(200);
    for row in report["rows"].as_array().unwrap() {
        let dept = row["key"].as_str().unwrap();
        let closed: Vec<&Value> = all["items"].as_array().unwrap().iter().filter(|i| i["state"] == "closed" && i["data"]["department"] == dept).collect();
        let met = closed.iter().filter(|i| i["data"]["sla_met"] == true).count();
        assert_eq!(row["values"][0], json!(closed.len() as f64), "{dept}");
        let expected = ((100.0 * met as f64 / closed.len() as f64) * 100.0).round() / 100.0;
        assert_eq!(row["values"][1], json!(expected), "{dept}: {report}");
    }
    let lab = report["rows"].as_array().unwrap().iter().find(|r| r["key"] == "D-LAB").unwrap();
    assert_eq!(lab["label"], "检验科", "departments by name");
    assert_eq!((lab["values"][0].clone(), lab["values"][1].clone()), (json!(2.0), json!(50.0)), "one of the two closed in time: {report}");
    assert_eq!(report["total"]["values"][0], json!(4.0));
    // A range in the app's zone: nothing was reported in October.
    let october = app.get("/api/v1/reports/sla_compliance?from=2026-10-01&to=2026-11-01", "manager_zheng").await.expect(200);
    assert_eq!(october["total"]["rows"], 0);
    // Bad queries say what is wrong.
    assert_eq!(app.get("/api/v1/reports/sla_compliance?by=colour", "manager_zheng").await.expect(400)["code"], "invalid_query");
    assert_eq!(app.get("/api/v1/reports/sla_compliance?from=yesterday", "manager_zheng").await.expect(400)["code"], "invalid_query");
    assert_eq!(app.get("/api/v1/reports/sla_compliance?colour=red", "manager_zheng").await.expect(400)["code"], "invalid_query");
    // A filter on any field: only the lab's orders.
    let lab_only = app.get("/api/v1/reports/sla_compliance?by=team&department=D-LAB", "manager_zheng").await.expect(200);
    assert_eq!(lab_only["total"]["values"][0], json!(2.0));
    // Satisfaction: the average of rated orders; unconfirmed ones counted apart.
    order(&mut app, "EQ-000104", "D-ICU", "auto", 0).await;
    let sat = app.get("/api/v1/reports/satisfaction?by=team", "manager_zheng").await.expect(200);
    assert_eq!(sat["total"]["values"], json!([4.0, 3.5, 1.0]), "{sat}");
}

#[tokio::test]
async fn three_check_ins_in_a_day_are_three_check_ins_in_attendance() {
    let mut app = TestApp::hospital();
    for asset in ["EQ-000101", "EQ-000102", "EQ-000104"] {
        order(&mut app, asset, "D-WARD5", "in_progress", 0).await;
    }
    let sheet = app.get("/api/v1/reports/attendance?by=day,actor", "manager_zheng").await.expect(200);
    let wang = sheet["rows"].as_array().unwrap().iter().find(|r| r["key"].as_str().unwrap().ends_with("tech_wang")).unwrap_or_else(|| panic!("{sheet}"));
    assert_eq!(wang["label"], "2026-11-25 · 王师傅 (空调班)");
    // first, last, check-ins, orders: 09:15, 09:45 local (15 minutes per order).
    assert_eq!(wang["values"], json!(["09:15", "09:45", 3.0, 3.0]), "{sheet}");
}

#[tokio::test]
async fn csv_and_xlsx_exports_keep_numbers_as_numbers_and_text_safe() {
    let mut app = TestApp::hospital();
    // A department whose name would run as a spreadsheet formula.
    app.post("/api/v1/records/department", "admin", json!({"data": {"code": "D-XSS", "name": "=HYPERLINK(\"x\")"}})).await.expect(201);
    order(&mut app, "EQ-000101", "D-XSS", "closed", 5).await;
    let (status, content_type, csv) = raw(&mut app, "manager_zheng", "/api/v1/reports/sla_compliance?by=department&format=csv").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/csv"));
    let text = String::from_utf8(csv).unwrap();
    assert!(text.starts_with('\u{feff}'), "a BOM, so spreadsheets read UTF-8");
    assert!(text.contains("科室") && text.contains("SLA 达成率 (%)"), "Chinese headers: {text}");
    assert!(text.contains("'=HYPERLINK"), "formula-looking text is escaped: {text}");
    let (status, content_type, xlsx) = raw(&mut app, "manager_zheng", "/api/v1/reports/sla_compliance?by=department&format=xlsx").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.contains("spreadsheetml"));
    use calamine::Reader;
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(xlsx)).unwrap();
    let sheet = book.worksheet_range("report").unwrap();
    let rows: Vec<Vec<calamine::Data>> = sheet.rows().map(|r| r.to_vec()).collect();
    assert_eq!(rows[0][0], calamine::Data::String("报修科室".into()), "the dimension by the field's label");
    assert!(matches!(rows[1][2], calamine::Data::Float(f) if f == 1.0), "numbers are numbers: {:?}", rows[1]);
    // The work orders themselves, with the instance list's filters.
    let (status, _, export) = raw(&mut app, "manager_zheng", "/api/v1/instances/export?workflow=repair&state=closed&format=xlsx").await;
    assert_eq!(status, StatusCode::OK);
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(export)).unwrap();
    let sheet = book.worksheet_range("export").unwrap();
    let rows: Vec<Vec<calamine::Data>> = sheet.rows().map(|r| r.to_vec()).collect();
    assert_eq!(rows.len(), 2, "the header and the one closed order");
    let header: Vec<String> = rows[0].iter().map(|c| c.to_string()).collect();
    let rating = header.iter().position(|h| h == "满意度").unwrap();
    assert!(matches!(rows[1][rating], calamine::Data::Float(f) if f == 5.0), "{:?}", rows[1]);
    assert_eq!(rows[1][1], calamine::Data::String("已关单".into()));
    let (status, _, csv) = raw(&mut app, "nurse_li", "/api/v1/instances/export?workflow=repair&format=csv").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8(csv).unwrap().lines().count(), 2, "a nurse exports what she may read: her own order");
    assert_eq!(raw(&mut app, "manager_zheng", "/api/v1/instances/export?workflow=repair&format=pdf").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn mtbf_is_the_mean_gap_between_an_assets_reports_and_pm_compliance_counts_late_ones() {
    let mut app = TestApp::hospital();
    for _ in 0..3 {
        app.start_instance("repair", "nurse_li", json!({"asset": "EQ-000101", "department": "D-LAB", "description": "冷水机组再次停机"})).await.expect(201);
        app.clock.advance(SignedDuration::from_hours(10));
    }
    app.start_instance("repair", "nurse_li", json!({"asset": "EQ-000102", "department": "D-LAB", "description": "冷水机组停机"})).await.expect(201);
    let mtbf = app.get("/api/v1/reports/mtbf?by=asset", "manager_zheng").await.expect(200);
    let row = |key: &str| mtbf["rows"].as_array().unwrap().iter().find(|r| r["key"] == key).cloned().unwrap();
    assert_eq!(row("EQ-000101")["values"], json!([3.0, 10.0]), "three reports ten hours apart: {mtbf}");
    assert_eq!(row("EQ-000101")["label"], "1号冷水机组 (EQ-000101)");
    assert_eq!(row("EQ-000102")["values"], json!([1.0, null]), "one report: no interval");
    // Preventive maintenance: one inspection done in time, one past its three working days.
    for late in [false, true] {
        let i = app
            .post("/api/v1/workflows/inspection/instances", "dispatcher_liu", json!({"data": {"asset": "EQ-000104", "category": "hvac", "plan": "季度保养"}}))
            .await
            .expect(201);
        let id = i["id"].as_str().unwrap().to_string();
        app.transition(&id, "start_work", "tech_wang", json!({})).await.expect(200);
        if late {
            app.clock.advance(SignedDuration::from_hours(24 * 7));
            let runtime = app.runtime.clone();
            tokio::task::spawn_blocking(move || runtime.fire_due_timers()).await.unwrap().unwrap();
        }
        app.transition(&id, "finish", "tech_wang", json!({"checklist": [{"item": "滤网", "result": "ok"}], "summary": "正常"})).await.expect(200);
    }
    let pm = app.get("/api/v1/reports/pm_compliance?by=team", "manager_zheng").await.expect(200);
    assert_eq!(pm["total"]["values"], json!([2.0, 50.0]), "{pm}");
}

/// The facts kept in memory give exactly what reading the store gives, for
/// every instance report and grouping, after commands that came before and
/// after they were built.
#[tokio::test]
async fn reports_from_facts_in_memory_equal_reports_from_the_store() {
    let mut app = TestApp::hospital();
    order(&mut app, "EQ-000101", "D-WARD5", "closed", 5).await;
    order(&mut app, "EQ-000102", "D-LAB", "in_progress", 0).await;
    app.runtime.build_report_facts("repair");
    app.runtime.build_report_facts("inspection");
    // After the build: new orders and transitions are noted as they commit.
    order(&mut app, "EQ-000120", "D-ICU", "closed", 3).await;
    order(&mut app, "EQ-000139", "D-OPD", "unaccepted", 0).await;
    order(&mut app, "EQ-000104", "D-ICU", "auto", 0).await;
    let manager =
        flowform_core::Actor {
            id: "manager_zheng".into(), name: "郑主管".into(), roles: vec!["manager".into()], teams: vec![], email: None, department: None
        };
    assert_eq!(app.runtime.report_facts_rows("repair"), Some(5), "the facts hold every order, the later ones noted");
    let bundle = app.runtime.bundle();
    let mut compared = 0;
    for rep in bundle
        .model
        .reports
        .values()
        .filter(|r| matches!(r.source, flowform_model::ReportSource::Instances { .. } | flowform_model::ReportSource::Events { .. }))
    {
        for by in rep.dimensions.iter().map(|d| d.value.clone()).chain([String::new()]) {
            for (from, to) in [(None, None), (Some("2026-11-25"), Some("2026-11-26")), (Some("2026-12-01"), None)] {
                let day = |d: Option<&str>| d.map(|d| flowform_runtime::reports::day_start(&bundle, d).unwrap());
                let q = flowform_core::reports::ReportQuery { from: day(from), to: day(to), by: by.clone(), filters: vec![], range_applied: false };
                let facts = app.runtime.run_report(&rep.name, &manager, &q, flowform_core::Lang::ZhCn).unwrap();
                let store = app.runtime.run_report_from_store(&rep.name, &manager, &q, flowform_core::Lang::ZhCn).unwrap();
                assert_eq!(json!(facts), json!(store), "{} by {by} from {from:?}", rep.name);
                compared += 1;
            }
        }
    }
    assert!(compared > 30, "{compared}");
    // An event report (attendance) was among them; and a filter, too.
    let q = flowform_core::reports::ReportQuery { by: "team".into(), filters: vec![("department".into(), "D-ICU".into())], ..Default::default() };
    assert_eq!(
        json!(app.runtime.run_report("repair_overview", &manager, &q, flowform_core::Lang::ZhCn).unwrap()),
        json!(app.runtime.run_report_from_store("repair_overview", &manager, &q, flowform_core::Lang::ZhCn).unwrap())
    );
}

/// A hot reload that makes a report read another field: the facts are read
/// again with it, and the report still equals a recomputation from the store.
#[tokio::test]
async fn a_reloaded_report_that_reads_a_new_field_rebuilds_its_facts() {
    let mut app = TestApp::hospital_copy();
    order(&mut app, "EQ-000101", "D-WARD5", "closed", 5).await;
    order(&mut app, "EQ-000120", "D-LAB", "closed", 2).await;
    app.runtime.build_report_facts("repair");
    let manager =
        flowform_core::Actor {
            id: "manager_zheng".into(), name: "郑主管".into(), roles: vec!["manager".into()], teams: vec![], email: None, department: None
        };
    let q = flowform_core::reports::ReportQuery { by: "department".into(), ..Default::default() };
    let before = app
        .runtime
        .run_report("satisfaction", &manager, &flowform_core::reports::ReportQuery { by: "team".into(), ..Default::default() }, flowform_core::Lang::ZhCn)
        .unwrap();
    assert_eq!(before.total["values"][1], json!(3.5));
    // The satisfaction report now also counts the orders fixed the first time, by department.
    app.edit("definitions/reports/satisfaction.yaml", "by: [team, month, department, assignee]", "by: [team, month, department, assignee, dispatch_count]");
    app.edit(
        "definitions/reports/satisfaction.yaml",
        "  unverified: { count: true",
        "  first_fix: { share: \"first_time_fix\", label: { zh-CN: 一次修复率, en: First-time fix }, unit: \"%\" }\n  unverified: { count: true",
    );
    app.post("/api/v1/admin/reload", "admin", json!({})).await.expect(200);
    order(&mut app, "EQ-000102", "D-LAB", "closed", 4).await;
    let facts = app.runtime.run_report("satisfaction", &manager, &q, flowform_core::Lang::ZhCn).unwrap();
    let store = app.runtime.run_report_from_store("satisfaction", &manager, &q, flowform_core::Lang::ZhCn).unwrap();
    assert_eq!(json!(facts), json!(store));
    assert_eq!(facts.columns.len(), 4, "the new measure is there");
    assert_eq!(facts.total["values"][2], json!(100.0), "{:?}", facts.total);
    let by_fix = flowform_core::reports::ReportQuery { by: "dispatch_count".into(), ..Default::default() };
    assert_eq!(
        json!(app.runtime.run_report("satisfaction", &manager, &by_fix, flowform_core::Lang::ZhCn).unwrap()),
        json!(app.runtime.run_report_from_store("satisfaction", &manager, &by_fix, flowform_core::Lang::ZhCn).unwrap())
    );
}
