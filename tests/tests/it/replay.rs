//! What-if replay: past work orders decided again under changed definitions,
//! nothing written; what would have gone differently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_core::replay::DiffKind;
use flowform_runtime::replay::{ReplayOptions, ReplayReport};
use flowform_tests::TestApp;
use serde_json::{Value, json};

async fn report(app: &mut TestApp, asset: &str, department: &str) -> String {
    let body = json!({"asset": asset, "department": department, "location": "住院楼 5 层", "description": "设备故障,需要维修"});
    let v = app.start_instance("repair", "nurse_li", body).await.expect(201);
    v["id"].as_str().unwrap().to_string()
}

/// Orders of several categories, some taken further, minutes apart.
async fn past_orders(app: &mut TestApp) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for (asset, category, dept, accept_by) in [
        ("EQ-000101", "hvac", "D-LAB", Some("tech_wang")),
        ("EQ-000116", "plumbing", "D-LAB", Some("tech_zhao")),
        ("EQ-000102", "hvac", "D-IMG", None),
        ("EQ-000132", "elevator", "D-ICU", Some("tech_sun")),
        ("EQ-000142", "medical_gas", "D-LAB", None),
    ] {
        let id = report(app, asset, dept).await;
        app.clock.advance(jiff::SignedDuration::from_mins(7));
        if let Some(tech) = accept_by {
            app.transition(&id, "accept", tech, json!({})).await.expect(200);
        }
        out.push((id, category));
    }
    out
}

fn what_if(app: &TestApp) -> ReplayReport {
    let candidate = flowform_runtime::load_bundle(&app.app_dir).unwrap();
    app.runtime.what_if(&candidate, &ReplayOptions { lang: flowform_core::Lang::En, ..ReplayOptions::default() }).unwrap()
}

fn with_kind(r: &ReplayReport, kind: DiffKind) -> Vec<String> {
    r.items.iter().filter(|i| i.differences.iter().any(|d| d.kind == kind)).map(|i| i.id.clone()).collect()
}

#[tokio::test]
async fn unchanged_definitions_decide_every_past_command_the_same_way() {
    let mut app = TestApp::hospital_copy();
    let orders = past_orders(&mut app).await;
    let r = what_if(&app);
    assert_eq!(r.summary.instances, orders.len());
    // Five starts and three accepts, each decided again with what it read then.
    assert_eq!(r.summary.steps, 8);
    assert_eq!(r.summary.affected, 0, "{:#?}", r.items);
}

#[tokio::test]
async fn a_changed_dispatch_rule_lists_exactly_the_orders_whose_team_would_change() {
    let mut app = TestApp::hospital_copy();
    let orders = past_orders(&mut app).await;
    app.edit(
        "rules/dispatch.rhai",
        "let team = team_for(record.category);",
        "let team = if record.category == \"hvac\" { \"general_team\" } else { team_for(record.category) };",
    );
    let before = app.runtime.store().history(&orders[0].0).unwrap();
    let r = what_if(&app);
    let hvac: Vec<String> = orders.iter().filter(|(_, c)| *c == "hvac").map(|(id, _)| id.clone()).collect();
    assert_eq!(with_kind(&r, DiffKind::Team), hvac);
    assert_eq!(r.summary.affected, 2);
    assert_eq!(r.summary.by_kind.get(&DiffKind::Team), Some(&2));
    assert_eq!(r.summary.team_moves.get("hvac_team → general_team"), Some(&2));
    let first = &r.items[0].differences[0];
    assert_eq!((first.seq, first.step.as_str(), first.kind), (1, "start", DiffKind::Team));
    assert_eq!((first.recorded.clone(), first.replayed.clone()), (json!("hvac_team"), json!("general_team")));
    // Nothing was written.
    assert_eq!(app.runtime.store().history(&orders[0].0).unwrap(), before);
    assert_eq!(app.runtime.store().instance(&orders[0].0).unwrap().unwrap().assignment.team.as_deref(), Some("hvac_team"));
}

#[tokio::test]
async fn a_shorter_sla_lists_the_orders_that_would_have_missed_it() {
    let mut app = TestApp::hospital_copy();
    // Urgent orders (the ICU is a critical area): accepted after 5 and after 20 minutes.
    let quick = report(&mut app, "EQ-000104", "D-ICU").await;
    app.clock.advance(jiff::SignedDuration::from_mins(5));
    app.transition(&quick, "accept", "tech_wang", json!({})).await.expect(200);
    let slow = report(&mut app, "EQ-000105", "D-ICU").await;
    app.clock.advance(jiff::SignedDuration::from_mins(20));
    app.transition(&slow, "accept", "tech_wang", json!({})).await.expect(200);
    // Urgent: 30 minutes to accept → 10.
    app.edit("rules/dispatch.rhai", "\"urgent\" => 30,", "\"urgent\" => 10,");
    let r = what_if(&app);
    assert_eq!(with_kind(&r, DiffKind::Deadline), vec![slow.clone()]);
    let d = r.items.iter().find(|i| i.id == slow).unwrap().differences.iter().find(|d| d.kind == DiffKind::Deadline).unwrap().clone();
    assert_eq!(d.what, "sla:unaccepted");
    assert_eq!((d.recorded["met"].clone(), d.replayed["met"].clone()), (json!(true), json!(false)));
    // The computed fields show the new SLA on both orders; no order changes team.
    assert_eq!(r.summary.by_kind.get(&DiffKind::Data), Some(&2));
    assert!(with_kind(&r, DiffKind::Team).is_empty());
}

#[tokio::test]
async fn a_command_the_changed_definitions_refuse_is_reported_with_the_reason() {
    let mut app = TestApp::hospital_copy();
    let orders = past_orders(&mut app).await;
    // Accepting now needs the dispatcher role, which no technician has.
    app.edit("definitions/workflows/repair.yaml", "    to: in_progress\n    roles: [technician]", "    to: in_progress\n    roles: [dispatcher]");
    let r = what_if(&app);
    let accepted: Vec<String> = orders.iter().enumerate().filter(|(k, _)| [0, 1, 3].contains(k)).map(|(_, (id, _))| id.clone()).collect();
    assert_eq!(with_kind(&r, DiffKind::Refused), accepted);
    let d = &r.items[0].differences[0];
    assert_eq!((d.step.as_str(), d.seq), ("accept", 2));
    assert!(d.message.contains("dispatcher"), "{}", d.message);
}

#[tokio::test]
async fn admins_replay_a_candidate_directory_through_the_api_and_others_may_not() {
    let mut app = TestApp::hospital_copy();
    past_orders(&mut app).await;
    let candidate = flowform_tests::changed_copy(
        &app.app_dir,
        &[(
            "rules/dispatch.rhai",
            "let team = team_for(record.category);",
            "let team = if record.category == \"hvac\" { \"general_team\" } else { team_for(record.category) };",
        )],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let body = json!({"dir": candidate.path().to_str().unwrap(), "workflow": "repair"});
    app.post("/api/v1/admin/replay", "manager_zheng", body.clone()).await.expect(403);
    let r = app.post("/api/v1/admin/replay", "admin", body).await.expect(200);
    assert_eq!(r["summary"]["affected"], json!(2));
    assert_eq!(r["summary"]["by_kind"]["team"], json!(2));
    assert_eq!(r["items"][0]["differences"][0]["kind"], json!("team"));
    // The live definitions are untouched; a stored version is a candidate too.
    let version = app.runtime.bundle().version.clone();
    let same = app.post("/api/v1/admin/replay", "admin", json!({"version": version})).await.expect(200);
    assert_eq!(same["summary"]["affected"], json!(0));
    let bad = app.post("/api/v1/admin/replay", "admin", json!({"dir": "/nonexistent/flowform"})).await.expect(422);
    assert_eq!(bad["code"], Value::from("invalid_candidate"));
    let neither = app.post("/api/v1/admin/replay", "admin", json!({})).await.expect(422);
    assert!(neither["message"].as_str().unwrap().contains("dir"), "{neither}");
}
