//! Behaviour of the API on the hospital application, through `oneshot`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_tests::TestApp;
use serde_json::{Value, json};

fn report() -> Value {
    json!({
        "asset": "EQ-000101",
        "category": "hvac",
        "department": "D-WARD5",
        "location": "住院楼 5 层 502 室",
        "description": "空调不制冷,室温 30 度",
    })
}

async fn started(app: &mut TestApp) -> Value {
    app.start_instance("repair", "nurse_li", report()).await.expect(201)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_invalid_report_gets_every_field_error() {
    let mut app = TestApp::hospital();
    let body = app.start_instance("repair", "nurse_li", json!({"category": "boiler", "description": "bad", "priority": "urgent"})).await.expect(422);
    assert_eq!(body["code"], "form_invalid");
    let fields: Vec<&str> = body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    for f in ["asset", "category", "department", "description", "urgent_reason"] {
        assert!(fields.contains(&f), "{f} missing in {fields:?}");
    }
    assert!(body["details"].as_array().unwrap().iter().all(|d| d["message"].as_str().is_some_and(|m| !m.is_empty())));
}

#[tokio::test]
async fn field_errors_follow_accept_language() {
    let mut app = TestApp::hospital();
    let body = json!({"data": {}});
    let en = app
        .request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(body.clone()), &[("accept-language", "en")])
        .await
        .expect(422);
    assert!(en["details"][0]["message"].as_str().unwrap().ends_with("is required"), "{en}");
    let zh = app
        .request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(body), &[("accept-language", "zh-CN")])
        .await
        .expect(422);
    assert!(zh["details"][0]["message"].as_str().unwrap().starts_with("请填写"), "{zh}");
}

#[tokio::test]
async fn a_valid_report_is_routed_by_the_dispatch_rule() {
    let mut app = TestApp::hospital();
    let wo = started(&mut app).await;
    assert_eq!(wo["state"], "unaccepted");
    assert_eq!(wo["version"], 1);
    assert_eq!(wo["assignment"]["team"], "hvac_team");
    assert_eq!(wo["data"]["priority"], "normal");
    assert_eq!(wo["data"]["sla_minutes"], 240);
    assert_eq!(wo["requester"], "nurse_li");
    assert_eq!(wo["bundle_version"], app.runtime.bundle().version);

    let mut icu = report();
    icu["department"] = json!("D-ICU");
    icu["category"] = json!("elevator");
    icu["asset"] = json!("EQ-000132"); // a lift: the category comes from the asset
    let wo = app.start_instance("repair", "nurse_li", icu).await.expect(201);
    assert_eq!(wo["assignment"]["team"], "elevator_team");
    assert_eq!(wo["data"]["priority"], "urgent", "critical departments raise the priority");
    assert_eq!(wo["data"]["sla_minutes"], 30);
}

#[tokio::test]
async fn only_the_assigned_team_can_accept() {
    let mut app = TestApp::hospital();
    let wo = started(&mut app).await;
    // Another team's technician and another nurse do not even see the order (visible_to).
    let body = app.transition(&id(&wo), "accept", "tech_zhao", json!({})).await.expect(404);
    assert_eq!(body["code"], "not_found");
    let body = app.transition(&id(&wo), "accept", "nurse_chen", json!({})).await.expect(404);
    assert_eq!(body["code"], "not_found");
    // The dispatcher sees it but is not a technician.
    let body = app.transition(&id(&wo), "accept", "dispatcher_liu", json!({})).await.expect(403);
    assert_eq!(body["code"], "forbidden");
    app.get(&format!("/api/v1/instances/{}", id(&wo)), "tech_zhao").await.expect(404);
    let view = app.get(&format!("/api/v1/instances/{}", id(&wo)), "dispatcher_liu").await.expect(200);
    assert!(view["available_transitions"].as_array().unwrap().iter().all(|t| t["name"] != "accept"));
    let view = app.get(&format!("/api/v1/instances/{}", id(&wo)), "tech_wang").await.expect(200);
    assert!(view["available_transitions"].as_array().unwrap().iter().any(|t| t["name"] == "accept"));
}

#[tokio::test]
async fn a_work_order_goes_from_report_to_closed_with_full_history() {
    let mut app = TestApp::hospital();
    let wo = started(&mut app).await;
    let wo_id = id(&wo);
    app.clock.advance(jiff::SignedDuration::from_mins(10));
    let v = app.transition(&wo_id, "accept", "tech_wang", json!({})).await.expect(200);
    assert_eq!((v["state"].as_str(), v["assignment"]["assignee"].as_str()), (Some("in_progress"), Some("tech_wang")));

    let early = app.transition(&wo_id, "complete", "tech_wang", json!({"fault_cause": "wear", "work_notes": "replaced the fan capacitor"})).await.expect(422);
    assert!(early["details"][0]["message"].as_str().unwrap().contains("check in"), "{early}");

    app.clock.advance(jiff::SignedDuration::from_mins(15));
    let v = app.transition(&wo_id, "check_in", "tech_wang", json!({"place": {"tag": "RFID-EQ-000101"}})).await.expect(200);
    assert_eq!(v["state"], "in_progress");
    assert_eq!(v["data"]["response_minutes"], 25);
    // Regression: the check-in place once had the report's field name and overwrote it.
    assert_eq!(v["data"]["location"], "住院楼 5 层 502 室");
    assert_eq!(v["data"]["check_in_place"], json!({"tag": "RFID-EQ-000101"}));

    let bad = app.transition(&wo_id, "complete", "tech_wang", json!({"fault_cause": "wear"})).await.expect(422);
    assert_eq!(bad["details"][0]["field"], "work_notes");
    app.transition(
        &wo_id,
        "complete",
        "tech_wang",
        json!({"fault_cause": "wear", "work_notes": "replaced the fan capacitor", "parts_used": [{"part": "capacitor 35uF", "quantity": 1}]}),
    )
    .await
    .expect(200);

    app.transition(&wo_id, "confirm", "nurse_chen", json!({"rating": 5})).await.expect(404);
    let not_requester = app.transition(&wo_id, "confirm", "dispatcher_liu", json!({"rating": 5})).await.expect(403);
    assert_eq!(not_requester["code"], "forbidden");
    let v = app.transition(&wo_id, "confirm", "nurse_li", json!({"rating": 4, "comment": "很快"})).await.expect(200);
    assert_eq!(v["state"], "closed");
    assert_eq!(v["data"]["first_time_fix"], true);
    assert_eq!(v["available_transitions"], json!([]));

    let history = app.get(&format!("/api/v1/instances/{wo_id}/history"), "admin").await.expect(200);
    let events = history.as_array().unwrap();
    let summary: Vec<(Option<&str>, &str, &str)> =
        events.iter().map(|e| (e["transition"].as_str(), e["actor"].as_str().unwrap(), e["to_state"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        vec![
            (None, "nurse_li", "unaccepted"),
            (Some("accept"), "tech_wang", "in_progress"),
            (Some("check_in"), "tech_wang", "in_progress"),
            (Some("complete"), "tech_wang", "awaiting_close"),
            (Some("confirm"), "nurse_li", "closed"),
        ]
    );
    assert!(events.iter().all(|e| { e["at"].as_str().is_some_and(|t| t.starts_with("2026-11-25T01:")) }));
    assert_eq!(events[1]["changes"]["assignment.assignee"], json!({"before": null, "after": "tech_wang"}));
    assert_eq!(events.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_transition_not_valid_in_the_state_is_a_conflict() {
    let mut app = TestApp::hospital();
    let wo = started(&mut app).await;
    let body = app.transition(&id(&wo), "confirm", "nurse_li", json!({"rating": 5})).await.expect(409);
    assert_eq!(body["code"], "transition_not_allowed");
    assert_eq!(body["details"]["state"], "unaccepted");
    let body = app.transition(&id(&wo), "teleport", "nurse_li", json!({})).await.expect(404);
    assert_eq!(body["code"], "unknown_transition");
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict() {
    let mut app = TestApp::hospital();
    let wo = started(&mut app).await;
    let path = format!("/api/v1/instances/{}/transitions/accept", id(&wo));
    let body = app.post(&path, "tech_wang", json!({"data": {}, "expected_version": 7})).await.expect(409);
    assert_eq!(body["code"], "version_conflict");
    assert_eq!(body["details"]["current_version"], 1);
    app.post(&path, "tech_wang", json!({"data": {}, "expected_version": 1})).await.expect(200);
}

#[tokio::test]
async fn the_same_idempotency_key_twice_makes_one_instance() {
    let mut app = TestApp::hospital();
    let body = json!({"data": report()});
    let headers = [("idempotency-key", "report-42")];
    let first = app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(body.clone()), &headers).await.expect(201);
    let second = app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(body), &headers).await.expect(201);
    assert_eq!(first["id"], second["id"]);
    let list = app.get("/api/v1/instances?workflow=repair", "admin").await.expect(200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let other = json!({"data": {"asset": "EQ-000102", "category": "other", "department": "D-ICU", "location": "x", "description": "something else"}});
    let reused = app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(other), &headers).await.expect(422);
    assert_eq!(reused["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn instances_and_events_survive_a_restart() {
    let mut app = TestApp::hospital();
    let wo = started(&mut app).await;
    app.transition(&id(&wo), "accept", "tech_wang", json!({})).await.expect(200);
    let mut app = app.restart();
    let v = app.get(&format!("/api/v1/instances/{}", id(&wo)), "tech_wang").await.expect(200);
    assert_eq!((v["state"].as_str(), v["version"].as_u64()), (Some("in_progress"), Some(2)));
    let history = app.get(&format!("/api/v1/instances/{}/history", id(&wo)), "admin").await.expect(200);
    assert_eq!(history.as_array().unwrap().len(), 2);
    // A position by coordinates must be near the asset's place: the nearest
    // place above its room with coordinates is the campus (总院区).
    let far = app.transition(&id(&wo), "check_in", "tech_wang", json!({"place": {"lat": 23.1, "lng": 113.3}})).await.expect(422);
    assert!(far["details"][0]["message"].as_str().unwrap().contains("不在 总院区 附近"), "{far}");
    app.transition(&id(&wo), "check_in", "tech_wang", json!({"place": {"lat": 23.1288, "lng": 113.2648}})).await.expect(200);
}

#[tokio::test]
async fn reopening_re_dispatches() {
    let mut app = TestApp::hospital();
    let wo = started(&mut app).await;
    let wo_id = id(&wo);
    app.transition(&wo_id, "accept", "tech_wang", json!({})).await.expect(200);
    app.transition(&wo_id, "check_in", "tech_wang", json!({"place": {"tag": "RFID-EQ-000101"}})).await.expect(200);
    app.transition(&wo_id, "complete", "tech_wang", json!({"fault_cause": "wear", "work_notes": "cleaned the filter"})).await.expect(200);
    let v = app.transition(&wo_id, "reopen", "nurse_li", json!({"reason": "still too warm"})).await.expect(200);
    assert_eq!(v["state"], "unaccepted");
    assert_eq!(v["assignment"], json!({"team": "hvac_team", "assignee": null, "vendor": null}));
    assert_eq!(v["data"]["dispatch_count"], 2);
}

#[tokio::test]
async fn lists_filter_and_page() {
    let mut app = TestApp::hospital();
    // The category comes from the asset: one asset of each.
    for (category, asset) in [("hvac", "EQ-000101"), ("elevator", "EQ-000132"), ("hvac", "EQ-000102"), ("plumbing", "EQ-000116"), ("hvac", "EQ-000103")] {
        let mut r = report();
        r["category"] = json!(category);
        r["asset"] = json!(asset);
        app.start_instance("repair", "nurse_li", r).await.expect(201);
    }
    let hvac = app.get("/api/v1/instances?team=hvac_team&limit=2", "admin").await.expect(200);
    assert_eq!(hvac["items"].as_array().unwrap().len(), 2);
    let cursor = hvac["next_cursor"].as_str().unwrap().to_string();
    let rest = app.get(&format!("/api/v1/instances?team=hvac_team&limit=2&cursor={cursor}"), "admin").await.expect(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    let all = app.get("/api/v1/instances?state=unaccepted&workflow=repair", "admin").await.expect(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    let bad = app.get("/api/v1/instances?limit=abc", "admin").await.expect(400);
    assert_eq!(bad["code"], "invalid_query");
}

#[tokio::test]
async fn requests_need_a_valid_token() {
    let mut app = TestApp::hospital();
    let none = app.request(axum::http::Method::GET, "/api/v1/bundle", None, None, &[]).await.expect(401);
    assert_eq!(none["code"], "unauthorized");
    app.request(axum::http::Method::GET, "/api/v1/bundle", None, None, &[("authorization", "Bearer ff_nope")]).await.expect(401);
    app.request(axum::http::Method::GET, "/healthz", None, None, &[]).await.expect(200);
}

#[tokio::test]
async fn bad_bodies_and_unknown_things_get_json_errors() {
    let mut app = TestApp::hospital();
    let token = app.token("nurse_li");
    let auth = format!("Bearer {token}");
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/workflows/repair/instances")
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{not json"))
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.router.clone(), req).await.unwrap();
    assert_eq!(res.status(), 400);
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["code"], "invalid_json");

    let body = app.post("/api/v1/workflows/repair/instances", "nurse_li", json!({"data": {}, "extra": 1})).await.expect(422);
    assert_eq!(body["code"], "invalid_body");
    assert_eq!(app.get("/api/v1/instances/nope", "admin").await.expect(404)["code"], "not_found");
    assert_eq!(app.get("/api/v1/workflows/nope", "admin").await.expect(404)["code"], "unknown_workflow");
    assert_eq!(app.start_instance("nope", "admin", json!({})).await.expect(404)["code"], "unknown_workflow");
    assert_eq!(app.get("/api/v1/forms/nope", "admin").await.expect(404)["code"], "unknown_form");
    assert_eq!(app.get("/api/v1/nothing", "admin").await.expect(404)["code"], "not_found");
}

#[tokio::test]
async fn the_bundle_workflows_and_forms_describe_themselves() {
    let mut app = TestApp::hospital();
    let bundle = app.get("/api/v1/bundle", "admin").await.expect(200);
    assert_eq!(bundle["version"], app.runtime.bundle().version);
    assert!(bundle["workflows"].as_array().unwrap().contains(&json!("repair")));
    assert!(bundle["forms"].as_array().unwrap().contains(&json!("repair_report")));
    assert!(bundle["loaded_at"].as_str().is_some());
    let list = app.get("/api/v1/workflows", "admin").await.expect(200);
    assert!(list.as_array().unwrap().iter().any(|w| w["name"] == "repair" && w["start"]["form"] == "repair_report"));
    let wf = app.get("/api/v1/workflows/repair", "admin").await.expect(200);
    assert_eq!(wf["start"]["form"], "repair_report");
    assert_eq!(
        wf["states"][0],
        json!({"name": "unaccepted", "label": {"zh-CN": "未接单", "en": "Unaccepted"}, "description": {}, "final": false, "color": "warning"})
    );
    assert!(wf["transitions"].as_array().unwrap().iter().any(|t| t["name"] == "accept" && t["roles"] == json!(["technician"])));
    let form = app.get("/api/v1/forms/repair_report", "admin").await.expect(200);
    assert_eq!(form["json_schema"]["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(form["json_schema"]["properties"]["category"]["enum"][0], "hvac");
    assert_eq!(form["ui"]["fields"][0]["name"], "asset");
    assert_eq!(form["ui"]["fields"][0]["label"]["zh-CN"], "设备");
    let urgent = form["ui"]["fields"].as_array().unwrap().iter().find(|f| f["name"] == "urgent_reason").unwrap();
    assert_eq!(urgent["visible_when"]["condition"], json!({"op": "compare", "field": "priority", "cmp": "==", "value": "urgent"}));
}

#[tokio::test]
async fn instance_counts_follow_every_command_by_state_and_team() {
    let mut app = TestApp::hospital();
    let a = started(&mut app).await;
    started(&mut app).await;
    let mut elevator = report();
    elevator["category"] = json!("elevator");
    elevator["asset"] = json!("EQ-000132");
    app.start_instance("repair", "nurse_li", elevator).await.expect(201);
    app.transition(&id(&a), "accept", "tech_wang", json!({})).await.expect(200);

    let counts = app.get("/api/v1/instances/counts?workflow=repair", "manager_zheng").await.expect(200);
    assert_eq!(counts["total"], 3);
    assert_eq!(
        counts["items"],
        json!([
            {"state": "in_progress", "team": "hvac_team", "count": 1},
            {"state": "unaccepted", "team": "elevator_team", "count": 1},
            {"state": "unaccepted", "team": "hvac_team", "count": 1},
        ])
    );
    let by_state = app.get("/api/v1/instances/counts?workflow=repair&by=state", "manager_zheng").await.expect(200);
    assert_eq!(by_state["items"], json!([{"state": "in_progress", "count": 1}, {"state": "unaccepted", "count": 2}]));
    let bad = app.get("/api/v1/instances/counts?by=colour", "manager_zheng").await.expect(400);
    assert_eq!(bad["code"], "invalid_query");
    assert!(bad["message"].as_str().unwrap().contains("`colour`"), "{bad}");
    // The filtered list goes through the same index.
    let list = app.get("/api/v1/instances?workflow=repair&state=unaccepted&team=hvac_team", "manager_zheng").await.expect(200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// Regression: the fingerprint hashed the JSON text with keys in the order
/// sent, so a retry of the same body with its keys in another order was
/// refused as a reused key.
#[tokio::test]
async fn a_retry_with_the_keys_in_another_order_is_the_same_request() {
    let mut app = TestApp::hospital();
    let headers = [("idempotency-key", "report-43")];
    let a: serde_json::Value = serde_json::from_str(
        r#"{"data": {"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了"}}"#,
    )
    .unwrap();
    let b: serde_json::Value = serde_json::from_str(
        r#"{"data": {"description": "空调不制冷了", "location": "ICU", "department": "D-ICU", "category": "hvac", "asset": "EQ-000101"}}"#,
    )
    .unwrap();
    let first = app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(a), &headers).await.expect(201);
    let second = app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(b), &headers).await.expect(201);
    assert_eq!(first["id"], second["id"]);
}

/// Regression: a routing rule that returned only fields cleared the team and the assignee.
#[tokio::test]
async fn a_routing_rule_that_returns_only_fields_keeps_the_assignment() {
    let mut app = TestApp::hospital_copy();
    app.write("rules/escalate.rhai", "#{ escalations: (record.escalations ?? 0) + 1 }\n");
    assert!(!matches!(app.runtime.reload(), flowform_runtime::reload::ReloadOutcome::Rejected { .. }));
    let wo = started(&mut app).await;
    app.transition(&id(&wo), "accept", "tech_wang", json!({})).await.expect(200);
    let body = app.transition(&id(&wo), "escalate", "tech_wang", json!({"escalate_to": "team", "to_team": "utilities_team", "reason": "需要水电配合"})).await;
    let v = body.expect(200);
    // The team stays (the transition itself hands the order back: no assignee).
    assert_eq!(v["assignment"]["team"].as_str(), Some("hvac_team"), "{v}");
    assert_eq!(v["data"]["escalations"], 1);
}

/// The value of one series in a scrape (`None` when absent).
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_are_for_admins_and_move_with_the_work() {
    let mut app = TestApp::hospital();
    app.request(axum::http::Method::GET, "/metrics", None, None, &[]).await.expect(401);
    app.get("/metrics", "nurse_li").await.expect(403);
    let before = app.get("/metrics", "admin").await.expect(200);
    let before = before.as_str().unwrap().to_string();
    assert!(before.contains("# TYPE flowform_store_checkpoints counter"), "{before}");
    assert!(before.contains("# TYPE flowform_store_commits_here counter"), "{before}");
    assert!(before.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    let order = started(&mut app).await;
    let id = id(&order);
    // Refused: nurse_li may not accept.
    app.post(&format!("/api/v1/instances/{id}/transitions/accept"), "nurse_li", json!({})).await.expect(403);
    app.get(&format!("/api/v1/instances/{id}"), "nurse_li").await.expect(200);
    app.get("/no/such/path", "nurse_li").await.expect(404);
    let after = app.get("/metrics", "admin").await.expect(200);
    let after = after.as_str().unwrap();
    assert_eq!(series(after, r#"flowform_commands_total{workflow="repair",transition="start",outcome="accepted"}"#), Some(1.0), "{after}");
    assert_eq!(series(after, r#"flowform_commands_total{workflow="repair",transition="accept",outcome="forbidden"}"#), Some(1.0), "{after}");
    assert_eq!(series(after, r#"flowform_http_requests_total{method="GET",route="/api/v1/instances/{id}",status="200"}"#), Some(1.0), "{after}");
    assert_eq!(series(after, r#"flowform_http_requests_total{method="GET",route="unmatched",status="404"}"#), Some(1.0), "{after}");
    assert!(series(after, r#"flowform_http_request_duration_seconds_count{method="POST",route="/api/v1/workflows/{name}/instances"}"#).is_some(), "{after}");
    // The store's writer: the start was one commit at least, its log synced.
    assert!(series(after, "flowform_store_commit_jobs_count").unwrap() >= 1.0, "{after}");
    assert!(series(after, "flowform_store_log_sync_seconds_count").unwrap() >= 1.0, "{after}");
    assert_eq!(series(after, "flowform_timers_due"), Some(0.0), "{after}");
}

#[tokio::test]
async fn an_event_records_only_the_fields_whose_value_changed() {
    let mut app = TestApp::hospital();
    let wo_id = id(&started(&mut app).await);
    app.transition(&wo_id, "accept", "tech_wang", json!({})).await.expect(200);
    app.transition(&wo_id, "check_in", "tech_wang", json!({"place": {"tag": "RFID-EQ-000101"}})).await.expect(200);
    let work = json!({"findings": "风机电容老化", "steps": [{"action": "断电检查", "minutes": 10}]});
    app.transition(&wo_id, "record_work", "tech_wang", work.clone()).await.expect(200);
    // The same findings again, one more step: only the steps changed.
    let more = json!({"findings": "风机电容老化", "steps": [{"action": "断电检查", "minutes": 10}, {"action": "更换电容", "minutes": 25}]});
    app.transition(&wo_id, "record_work", "tech_wang", more).await.expect(200);
    let history = app.get(&format!("/api/v1/instances/{wo_id}/history"), "admin").await.expect(200);
    let events = history.as_array().unwrap();
    let first = &events[events.len() - 2]["changes"];
    assert_eq!(first["findings"], json!({"before": null, "after": "风机电容老化"}), "{first}");
    let last = &events[events.len() - 1]["changes"];
    let fields: Vec<&String> = last.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["steps"], "{last}");
    assert_eq!(last["steps"]["before"], work["steps"]);
}
