//! Linked workflows (`starts:` on a transition): children start with the
//! transition, atomically, linked both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::Method;
use flowform_tests::TestApp;
use serde_json::{Value, json};

async fn inspection_in_progress(app: &mut TestApp, asset: &str) -> String {
    let started = app
        .post("/api/v1/workflows/inspection/instances", "dispatcher_liu", json!({"data": {"asset": asset, "category": "hvac", "plan": "月度巡检"}}))
        .await
        .expect(201);
    let id = started["id"].as_str().unwrap().to_string();
    app.post(&format!("/api/v1/instances/{id}/transitions/start_work"), "tech_wang", json!({"data": {}})).await.expect(200);
    id
}

fn finish(items: &[(&str, &str)]) -> Value {
    let checklist: Vec<Value> = items.iter().map(|(item, result)| json!({"item": item, "result": result, "note": "见照片"})).collect();
    json!({"data": {"checklist": checklist, "summary": "巡检完成"}})
}

async fn repair_count(app: &mut TestApp) -> usize {
    app.get("/api/v1/instances?workflow=repair&limit=200", "admin").await.expect(200)["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn abnormal_items_start_linked_repair_orders_that_put_the_asset_under_repair() {
    let mut app = TestApp::hospital();
    let id = inspection_in_progress(&mut app, "EQ-000104").await;
    let before = repair_count(&mut app).await;
    let done = app.post(&format!("/api/v1/instances/{id}/transitions/finish"), "tech_wang", finish(&[("压力", "abnormal"), ("皮带", "ok")])).await.expect(200);
    assert_eq!(done["state"], "done");
    let children = done["children"].as_array().unwrap().clone();
    assert_eq!(children.len(), 1, "{done}");
    assert_eq!(repair_count(&mut app).await, before + 1);
    let child_id = children[0].as_str().unwrap();
    let child = app.get(&format!("/api/v1/instances/{child_id}"), "admin").await.expect(200);
    assert_eq!(child["parent"], json!(id));
    assert_eq!(child["workflow"], "repair");
    assert_eq!(child["requester"], "tech_wang", "the inspector reports it");
    assert_eq!(child["data"]["category"], "hvac", "filled from the asset");
    assert!(child["number"].as_str().unwrap().starts_with("WX-"));
    // Both histories say so.
    let parent_history = app.get(&format!("/api/v1/instances/{id}/history"), "admin").await.expect(200);
    assert_eq!(parent_history.as_array().unwrap().last().unwrap()["children"], json!([child_id]));
    let child_history = app.get(&format!("/api/v1/instances/{child_id}/history"), "admin").await.expect(200);
    assert_eq!(child_history[0]["parent"], json!(id));
    // The repair's own `update:` ran in the same transaction: the asset is under repair, caused by the child.
    let asset = app.get("/api/v1/records/asset/EQ-000104", "admin").await.expect(200);
    assert_eq!(asset["data"]["status"], "under_repair");
    let history = app.get("/api/v1/records/asset/EQ-000104/history", "admin").await.expect(200);
    let updates: Vec<&Value> = history.as_array().unwrap().iter().filter(|e| e["source"] == "record" && e["kind"] == "updated").collect();
    // Two changes in one transaction, each with its own cause: the inspection
    // records the maintenance date, the repair order puts the asset under repair.
    assert_eq!(updates.len(), 2, "{history}");
    assert_eq!((updates[0]["cause"].clone(), updates[0]["changes"]["last_maintained"]["after"].clone()), (json!(id), json!("2026-11-25")));
    assert_eq!((updates[1]["cause"].clone(), updates[1]["changes"]["status"]["after"].clone()), (json!(child_id), json!("under_repair")));
    assert_eq!(updates[1]["seq"], 3);
    assert_eq!(asset["version"], 3);
    // The technician of the asset's team sees it in the team queue.
    assert_eq!(child["assignment"]["team"], "hvac_team");
}

#[tokio::test]
async fn a_refused_linked_start_refuses_the_whole_transition_and_writes_nothing() {
    let mut app = TestApp::hospital();
    let id = inspection_in_progress(&mut app, "EQ-000104").await;
    // The department the linked repair is reported for is archived: its start is refused.
    app.request(Method::DELETE, "/api/v1/records/department/D-ADMIN", Some("admin"), None, &[]).await.expect(200);
    let before = repair_count(&mut app).await;
    let refused =
        app.post(&format!("/api/v1/instances/{id}/transitions/finish"), "tech_wang", finish(&[("压力", "ok"), ("排水", "abnormal")])).await.expect(422);
    assert_eq!(refused["code"], "linked_start_failed", "{refused}");
    assert_eq!(refused["details"]["workflow"], "repair");
    assert_eq!(refused["details"]["item"], 2);
    assert_eq!(refused["details"]["code"], "form_invalid");
    assert!(refused["message"].as_str().unwrap().contains("repair"), "{refused}");
    let inspection = app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200);
    assert_eq!(inspection["state"], "in_progress", "nothing was done");
    assert_eq!(inspection["children"], json!([]));
    assert_eq!(repair_count(&mut app).await, before);
    assert_eq!(app.get("/api/v1/records/asset/EQ-000104", "admin").await.expect(200)["data"]["status"], "in_service");
}

#[test]
fn check_names_what_a_linked_start_gets_wrong() {
    let app = TestApp::hospital_copy();
    app.edit("definitions/workflows/inspection.yaml", "for_each: checklist", "for_each: checklst");
    app.edit("definitions/workflows/inspection.yaml", "department: D-ADMIN", "departmnt: D-ADMIN");
    app.edit("definitions/workflows/inspection.yaml", "- workflow: repair", "- workflow: repairs");
    let sources = flowform_runtime::sources::read_dir(&app.app_dir).unwrap();
    let Err(diags) = flowform_core::compile(sources) else { panic!("accepted") };
    let all: Vec<String> = diags.iter().map(|d| format!("{}:{} {} {} {:?}", d.file, d.line, d.code, d.message, d.hint)).collect();
    let all = all.join("\n");
    assert!(all.contains("`starts` names workflow `repairs`") && all.contains("repair"), "{all}");
    app.edit("definitions/workflows/inspection.yaml", "- workflow: repairs", "- workflow: repair");
    let sources = flowform_runtime::sources::read_dir(&app.app_dir).unwrap();
    let Err(diags) = flowform_core::compile(sources) else { panic!("accepted") };
    let all: Vec<String> = diags.iter().map(|d| format!("{}:{} {} {}", d.file, d.line, d.code, d.message)).collect();
    let all = all.join("\n");
    assert!(all.contains("`for_each` names `checklst`"), "{all}");
    assert!(all.contains("`starts.data` sets `departmnt`"), "{all}");
    assert!(diags.iter().all(|d| d.file.ends_with("inspection.yaml") && d.line > 0), "{all}");
}
