//! The authorization matrix of the hospital application: for every declared
//! role, every workflow start, record operation, ledger operation and admin
//! route, the outcome through the HTTP API is compared with the outcome the
//! test computes itself from the definitions' role lists (not with the
//! engine's permission code), and the whole matrix with a reviewed snapshot,
//! so a change in either the engine or the definitions shows up here.
//!
//! Every transition too: an instance is put straight into the transition's
//! source state (a fixture written to the store, not a path through the
//! workflow), and each role tries it; the roles, teams and `visible_to` of the
//! definitions say what should happen. The YAML scenarios (tests/scenarios/)
//! add the relational roles (requester, assignee) on real paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::Method;
use flowform_model::{EVERYONE, Model, RecordOp};
use flowform_tests::TestApp;
use serde_json::json;
use std::collections::BTreeMap;

/// Allowed or denied, as the test reads the definitions.
fn expected_start(model: &Model, workflow: &str, role: &str) -> bool {
    let roles: Vec<&str> = model.workflows[workflow].start.roles.iter().map(|r| r.value.as_str()).collect();
    roles.is_empty() || roles.contains(&role)
}

fn expected_record(model: &Model, record_type: &str, op: RecordOp, role: &str) -> bool {
    if role == "admin" {
        return true;
    }
    let granted: Vec<&str> =
        model.record_types[record_type].access.grants.iter().filter(|(o, _)| *o == op).flat_map(|(_, r)| r.iter().map(|r| r.value.as_str())).collect();
    granted.contains(&EVERYONE) || granted.contains(&role)
}

fn expected_ledger(model: &Model, ledger: &str, read: bool, role: &str) -> bool {
    let def = &model.ledgers[ledger];
    let post: Vec<&str> = def.roles.iter().map(|r| r.value.as_str()).collect();
    let reads: Vec<&str> = def.read.iter().map(|r| r.value.as_str()).collect();
    role == "admin" || post.contains(&role) || (read && (reads.contains(&role) || reads.contains(&EVERYONE)))
}

/// Whether a user with only `role` (no team, not the requester or assignee)
/// may take `transition`, as the definitions say: they must see the instance
/// (a `role:` in `visible_to`) and hold one of its roles (and it must need no team).
fn expected_transition(model: &Model, workflow: &str, transition: &str, role: &str) -> bool {
    let wf = &model.workflows[workflow];
    let t = wf.transition(transition).unwrap();
    let sees = role == "admin" || wf.audiences().iter().any(|a| matches!(a, flowform_model::Audience::Role(r) if r == role));
    let roles: Vec<&str> = t.roles.iter().map(|r| r.value.as_str()).collect();
    sees && t.teams.is_empty() && (roles.is_empty() || roles.contains(&role))
}

/// 2xx and the "valid request, bad data" answers count as allowed; 401/403/404 as denied.
fn allowed(status: u16) -> bool {
    match status {
        200..=299 | 400 | 409 | 422 => true,
        403 => false,
        other => panic!("unexpected status {other}"),
    }
}

#[tokio::test]
async fn every_role_gets_exactly_what_the_definitions_grant() {
    let mut app = TestApp::hospital();
    let model = app.runtime.bundle().model.clone();
    let roles: Vec<String> = model.roles.keys().cloned().collect();
    for role in &roles {
        app.post("/api/v1/admin/users", "admin", json!({"id": format!("m_{role}"), "roles": [role]})).await.expect(201);
    }
    let mut matrix: BTreeMap<String, BTreeMap<String, &'static str>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    let mut note = |what: String, role: &str, got: bool, want: bool| {
        matrix.entry(what.clone()).or_default().insert(role.to_string(), if got { "allow" } else { "deny" });
        if got != want {
            mismatches.push(format!(
                "{what} as {role}: got {}, the definitions say {}",
                if got { "allow" } else { "deny" },
                if want { "allow" } else { "deny" }
            ));
        }
    };

    for role in &roles {
        let user = format!("m_{role}");
        // Starting each workflow: an empty start is refused with 403 when not
        // allowed, and with a form error (422) when allowed: nothing is created.
        for wf in model.workflows.keys() {
            let r = app.post(&format!("/api/v1/workflows/{wf}/instances"), &user, json!({"data": {}})).await;
            note(format!("start {wf}"), role, allowed(r.status.as_u16()), expected_start(&model, wf, role));
        }
        // Records: read (list), create (empty data: 422 when allowed), update,
        // archive and purge of a record that does not exist (404 when allowed).
        for rt in model.record_types.keys() {
            let r = app.get(&format!("/api/v1/records/{rt}?limit=1"), &user).await;
            note(format!("record {rt}: read"), role, allowed(r.status.as_u16()), expected_record(&model, rt, RecordOp::Read, role));
            let r = app.post(&format!("/api/v1/records/{rt}"), &user, json!({"data": {}})).await;
            note(format!("record {rt}: create"), role, allowed(r.status.as_u16()), expected_record(&model, rt, RecordOp::Create, role));
            let r = app.request(Method::PUT, &format!("/api/v1/records/{rt}/NO-SUCH-ID"), Some(&user), Some(json!({"data": {}})), &[]).await;
            let status = if r.status.as_u16() == 404 { 200 } else { r.status.as_u16() };
            note(format!("record {rt}: update"), role, allowed(status), expected_record(&model, rt, RecordOp::Update, role));
            let r = app.request(Method::DELETE, &format!("/api/v1/records/{rt}/NO-SUCH-ID"), Some(&user), None, &[]).await;
            let status = if r.status.as_u16() == 404 { 200 } else { r.status.as_u16() };
            note(format!("record {rt}: archive"), role, allowed(status), expected_record(&model, rt, RecordOp::Archive, role));
            let r = app.request(Method::DELETE, &format!("/api/v1/records/{rt}/NO-SUCH-ID?purge=true"), Some(&user), None, &[]).await;
            let status = if r.status.as_u16() == 404 { 200 } else { r.status.as_u16() };
            note(format!("record {rt}: purge"), role, allowed(status), expected_record(&model, rt, RecordOp::Purge, role));
        }
        // Ledgers: read balances; post a movement with a bad kind (422 when allowed).
        for ledger in model.ledgers.keys() {
            let r = app.get(&format!("/api/v1/ledgers/{ledger}/balances"), &user).await;
            note(format!("ledger {ledger}: read"), role, allowed(r.status.as_u16()), expected_ledger(&model, ledger, true, role));
            let r = app.post(&format!("/api/v1/ledgers/{ledger}/movements"), &user, json!({"movements": [{"kind": "no_such_kind", "quantity": 1}]})).await;
            let status = if r.body["code"] == "invalid_movement" { 422 } else { r.status.as_u16() };
            note(format!("ledger {ledger}: post"), role, allowed(status), expected_ledger(&model, ledger, false, role));
        }
        // Admin routes: admins only.
        for (method, path) in [
            (Method::GET, "/api/v1/admin/users"),
            (Method::GET, "/api/v1/admin/audit"),
            (Method::GET, "/api/v1/admin/outbox"),
            (Method::GET, "/api/v1/tokens?user=all"),
            (Method::POST, "/api/v1/admin/reload"),
        ] {
            let r = app.request(method.clone(), path, Some(&user), None, &[]).await;
            let status = match r.status.as_u16() {
                // reload without a directory in the test app answers with its outcome
                500..=599 => panic!("{method} {path}: {}", r.body),
                s => s,
            };
            note(format!("{method} {path}"), role, allowed(status), role == "admin");
        }
    }
    assert!(mismatches.is_empty(), "the API and the definitions disagree:\n{}", mismatches.join("\n"));
    let table: Vec<String> = matrix
        .iter()
        .map(|(what, by_role)| {
            let allowed: Vec<&str> = by_role.iter().filter(|(_, v)| **v == "allow").map(|(r, _)| r.as_str()).collect();
            format!("{what}: {}", if allowed.is_empty() { "-".to_string() } else { allowed.join(", ") })
        })
        .collect();
    insta::assert_snapshot!("hospital_authorization_matrix", table.join("\n"));
}

#[tokio::test]
async fn every_role_may_take_exactly_the_transitions_the_definitions_grant() {
    let mut app = TestApp::hospital();
    let bundle = app.runtime.bundle();
    let model = bundle.model.clone();
    let roles: Vec<String> = model.roles.keys().cloned().collect();
    for role in &roles {
        app.post("/api/v1/admin/users", "admin", json!({"id": format!("m_{role}"), "roles": [role]})).await.expect(201);
    }
    let mut lines = Vec::new();
    let mut mismatches = Vec::new();
    let mut n = 0;
    for wf in model.workflows.values() {
        for t in &wf.transitions {
            let from = &t.from[0].value;
            let mut allowed_roles = Vec::new();
            for role in &roles {
                n += 1;
                let id = format!("01MATRIX{n:018}");
                // The fixture: an instance in the source state, reported by a nurse, with the HVAC team.
                let instance: flowform_core::Instance = serde_json::from_value(json!({
                    "id": id, "workflow": wf.name, "bundle_version": bundle.version, "version": 1, "state": from, "data": {},
                    "assignment": {"team": "hvac_team", "assignee": "tech_wang"}, "requester": "nurse_li",
                    "created_at": "2026-11-25T01:00:00.000Z", "updated_at": "2026-11-25T01:00:00.000Z"
                }))
                .unwrap();
                let event: flowform_core::Event = serde_json::from_value(json!({
                    "instance_id": id, "seq": 1, "kind": "started", "actor": "nurse_li", "at": "2026-11-25T01:00:00.000Z",
                    "bundle_version": bundle.version, "to_state": from, "input": {}, "changes": {}
                }))
                .unwrap();
                let write = flowform_store::CommandWrite {
                    children: Vec::new(),
                    meta: Vec::new(),
                    records: Vec::new(),
                    instance: instance.into(),
                    expected_version: 0,
                    event,
                    idempotency: None,
                    refs: vec![],
                    postings: vec![],
                    timers: None,
                    fired_timer: None,
                    inbox: vec![],
                    outbox: vec![],
                };
                app.runtime.store().commit(write).unwrap();
                let r = app.transition(&id, &t.name, &format!("m_{role}"), json!({})).await;
                let got = match (r.status.as_u16(), r.body["code"].as_str()) {
                    (404, _) | (403, Some("forbidden")) => false,
                    (s, _) if s < 500 => true,
                    (s, _) => panic!("{} {}: {s} {}", wf.name, t.name, r.body),
                };
                let want = expected_transition(&model, &wf.name, &t.name, role);
                if got != want {
                    mismatches.push(format!("{}.{} as {role}: got {got}, the definitions say {want} ({})", wf.name, t.name, r.body));
                }
                if got {
                    allowed_roles.push(role.as_str());
                }
            }
            lines.push(format!("{}.{} (from {from}): {}", wf.name, t.name, if allowed_roles.is_empty() { "-".to_string() } else { allowed_roles.join(", ") }));
        }
    }
    assert!(mismatches.is_empty(), "the API and the definitions disagree:\n{}", mismatches.join("\n"));
    insta::assert_snapshot!("hospital_transition_matrix", lines.join("\n"));
}

/// Reading instances follows `visible_to`: the matrix of who reads an order
/// reported by a nurse and dispatched to the HVAC team.
#[tokio::test]
async fn who_reads_a_repair_order() {
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
    let mut rows = Vec::new();
    for user in ["nurse_li", "nurse_chen", "tech_wang", "tech_zhao", "dispatcher_liu", "keeper_qian", "manager_zheng", "admin"] {
        let status = app.get(&format!("/api/v1/instances/{id}"), user).await.status.as_u16();
        let history = app.get(&format!("/api/v1/instances/{id}/history"), user).await.status.as_u16();
        let listed = app.get("/api/v1/instances?workflow=repair", user).await.expect(200)["items"].as_array().unwrap().len();
        assert_eq!(status, history, "{user}: the instance and its history agree");
        assert_eq!(listed == 1, status == 200, "{user}: the list agrees with the instance");
        rows.push(format!("{user}: {}", if status == 200 { "reads" } else { "404" }));
    }
    insta::assert_snapshot!("who_reads_a_repair_order", rows.join("\n"));
}
