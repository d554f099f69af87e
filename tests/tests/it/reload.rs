//! Hot reload, versions pinned per instance, semantic diff and migration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_runtime::reload::ReloadOutcome;
use flowform_tests::TestApp;
use serde_json::{Value, json};

const REPAIR: &str = "definitions/workflows/repair.yaml";
const RECORD_WORK: &str =
    "  - name: record_work\n    label: { zh-CN: 记录维修过程, en: Record work }\n    from: in_progress\n    roles: [assignee]\n    form: work_record\n\n";

fn report() -> Value {
    json!({"asset": "EQ-000101", "category": "hvac", "department": "D-WARD5", "location": "住院楼 5 层", "description": "空调不制冷,室温 30 度"})
}

async fn accepted(app: &mut TestApp) -> String {
    let wo = app.start_instance("repair", "nurse_li", report()).await.expect(201);
    let id = wo["id"].as_str().unwrap().to_string();
    app.transition(&id, "accept", "tech_wang", json!({})).await.expect(200);
    id
}

fn reload(app: &TestApp) -> ReloadOutcome {
    app.runtime.reload()
}

#[tokio::test]
async fn a_clean_edit_goes_live_and_a_broken_one_is_shown_while_the_last_good_serves() {
    let mut app = TestApp::hospital_copy();
    let v1 = app.runtime.bundle().version.clone();
    app.edit(REPAIR, "en: Accept }", "en: Take it }");
    let ReloadOutcome::Reloaded { from, to, .. } = reload(&app) else { panic!("not reloaded") };
    assert_eq!(from, v1);
    let bundle = app.get("/api/v1/bundle", "admin").await.expect(200);
    assert_eq!(bundle["version"], to.as_str());
    assert_eq!(bundle["last_rejected"], Value::Null);
    assert!(matches!(reload(&app), ReloadOutcome::Unchanged { .. }));

    app.edit(REPAIR, "to: in_progress\n", "to: in_progres\n");
    let ReloadOutcome::Rejected { version, diagnostics } = reload(&app) else { panic!("not rejected") };
    assert_eq!(version, to);
    assert_eq!(diagnostics.len(), 1);
    let bundle = app.get("/api/v1/bundle", "admin").await.expect(200);
    assert_eq!(bundle["version"], to.as_str(), "the last good version keeps serving");
    let d = &bundle["last_rejected"]["diagnostics"][0];
    assert_eq!(
        (d["file"].as_str(), d["line"].as_u64(), d["column"].as_u64(), d["code"].as_str()),
        (Some(REPAIR), Some(flowform_tests::line_of(&flowform_tests::repo_root().join(REPAIR), "to: in_progress\n") as u64), Some(9), Some("unknown_state"))
    );
    assert!(bundle["last_rejected"]["at"].as_str().is_some());
    app.start_instance("repair", "nurse_li", report()).await.expect(201);

    app.edit(REPAIR, "to: in_progres\n", "to: in_progress\n");
    assert!(matches!(reload(&app), ReloadOutcome::Unchanged { .. }));
    assert_eq!(app.get("/api/v1/bundle", "admin").await.expect(200)["last_rejected"], Value::Null, "fixed: nothing rejected any more");
}

#[tokio::test]
async fn instances_keep_the_version_they_started_on_also_after_a_restart() {
    let mut app = TestApp::hospital_copy();
    let old = accepted(&mut app).await;
    app.edit(REPAIR, RECORD_WORK, "");
    assert!(matches!(reload(&app), ReloadOutcome::Reloaded { .. }));
    let new = accepted(&mut app).await;
    let findings = json!({"findings": "风机积灰"});
    app.transition(&old, "record_work", "tech_wang", findings.clone()).await.expect(200);
    assert_eq!(app.transition(&new, "record_work", "tech_wang", findings.clone()).await.expect(404)["code"], "unknown_transition");
    let view = app.get(&format!("/api/v1/instances/{old}"), "tech_wang").await.expect(200);
    assert!(view["available_transitions"].as_array().unwrap().iter().any(|t| t["name"] == "record_work"));

    // Restart with the files changed again: both still resolve their definitions.
    app.edit(REPAIR, "en: Accept }", "en: Take it }");
    let mut app = app.restart();
    app.transition(&old, "record_work", "tech_wang", findings.clone()).await.expect(200);
    assert_eq!(app.transition(&new, "record_work", "tech_wang", findings).await.expect(404)["code"], "unknown_transition");
    app.transition(&new, "check_in", "tech_wang", json!({"place": {"tag": "RFID-EQ-000101"}})).await.expect(200);
    let versions = app.get("/api/v1/bundle/versions", "admin").await.expect(200);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn reload_through_the_admin_api_needs_the_admin_role() {
    let mut app = TestApp::hospital_copy();
    app.edit(REPAIR, "en: Accept }", "en: Take it }");
    assert_eq!(app.post("/api/v1/admin/reload", "nurse_li", json!({})).await.expect(403)["code"], "forbidden");
    let out = app.post("/api/v1/admin/reload", "admin", json!({})).await.expect(200);
    assert_eq!(out["status"], "reloaded");
    app.edit(REPAIR, "form: check_in\n", "form: check_inn\n");
    let out = app.post("/api/v1/admin/reload", "admin", json!({})).await.expect(200);
    assert_eq!(out["status"], "rejected");
    assert_eq!(out["diagnostics"][0]["code"], "unknown_form");
}

#[tokio::test]
async fn the_watcher_reloads_on_save() {
    let app = TestApp::hospital_copy();
    let _watcher = flowform_runtime::watch::watch(app.runtime.clone(), flowform_runtime::watch::WatchMode::Auto).unwrap();
    let before = app.runtime.bundle().version.clone();
    app.edit(REPAIR, "en: Accept }", "en: Take it }");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.runtime.bundle().version == before {
        assert!(std::time::Instant::now() < deadline, "the edit did not go live");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = app.runtime.bundle().version.clone();
    app.write("definitions/workflows/broken.yaml", "workflow: [\n");
    while app.runtime.last_rejected().is_none() {
        assert!(std::time::Instant::now() < deadline, "the broken file was not noticed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.runtime.bundle().version, before);
}

#[test]
fn editor_temporaries_do_not_trigger_a_reload() {
    use flowform_runtime::watch::relevant;
    use std::path::Path;
    let dir = Path::new("/app");
    assert!(relevant(dir, Path::new("/app/definitions/workflows/repair.yaml")));
    assert!(relevant(dir, Path::new("/app/rules/dispatch.rhai")));
    assert!(relevant(dir, Path::new("/app/forms/sub")));
    for ignored in [
        "/app/definitions/.repair.yaml.swp",
        "/app/definitions/repair.yaml~",
        "/app/forms/4913",
        "/app/rules/#dispatch.rhai#",
        "/app/forms/notes.txt",
        "/app/data/flowform.redb",
        "/elsewhere/x.yaml",
    ] {
        assert!(!relevant(dir, Path::new(ignored)), "{ignored}");
    }
}

#[tokio::test]
async fn the_diff_says_what_changed_in_words() {
    let mut app = TestApp::hospital_copy();
    let v1 = app.runtime.bundle().version.clone();
    app.edit(REPAIR, RECORD_WORK, "");
    app.edit(REPAIR, "roles: [technician]", "roles: [technician, dispatcher]");
    app.edit("forms/evaluation.yaml", "    max: 5\n", "    max: 10\n");
    app.edit("rules/dispatch.rhai", "\"urgent\" => 30,", "\"urgent\" => 20,");
    reload(&app);
    let diff = app.get(&format!("/api/v1/bundle/diff?from={v1}"), "admin").await.expect(200);
    let changes = diff["changes"].as_array().unwrap();
    let find = |area: &str, path: &str| changes.iter().find(|c| c["area"] == area && c["path"] == path).unwrap_or_else(|| panic!("no {area} {path} in {diff}"));
    assert_eq!(find("transition", "repair/record_work")["kind"], "removed");
    assert_eq!(find("transition", "repair/accept")["details"][0], "roles changed from [`technician`] to [`technician`, `dispatcher`]");
    assert_eq!(find("field", "evaluation/rating")["details"][0], "max changed from Some(5.0) to Some(10.0)");
    assert_eq!(find("rule", "dispatch")["kind"], "changed");
    assert_eq!(changes.len(), 4, "{diff}");
    assert_eq!(app.get("/api/v1/bundle/diff?from=nope", "admin").await.expect(404)["code"], "unknown_bundle_version");
}

#[tokio::test]
async fn a_migration_that_would_strand_instances_is_refused_and_a_mapping_makes_it_work() {
    let mut app = TestApp::hospital_copy();
    let id = accepted(&mut app).await;
    let waiting = app.start_instance("repair", "nurse_chen", report()).await.expect(201)["id"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(app.app_dir.join(REPAIR)).unwrap();
    app.write(REPAIR, &text.replace("in_progress", "working"));
    let ReloadOutcome::Reloaded { to, .. } = reload(&app) else { panic!("not reloaded") };

    let refused = app.post("/api/v1/admin/migrate", "admin", json!({"workflow": "repair", "to": "current"})).await.expect(200);
    assert_eq!(refused["status"], "refused");
    assert_eq!(refused["affected"].as_array().unwrap().len(), 2);
    assert_eq!(refused["blocked"][0]["id"], id.as_str());
    assert!(refused["blocked"][0]["problems"][0].as_str().unwrap().contains("state `in_progress` no longer exists"), "{refused}");
    assert_eq!(refused["migrated"], 0);
    assert_eq!(
        app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200)["bundle_version"],
        app.get(&format!("/api/v1/instances/{waiting}"), "admin").await.expect(200)["bundle_version"]
    );

    let dry = app.post("/api/v1/admin/migrate", "admin", json!({"workflow": "repair", "map": {"in_progress": "working"}, "dry_run": true})).await.expect(200);
    assert_eq!((dry["status"].as_str(), dry["migrated"].as_u64()), (Some("ok"), Some(0)));
    assert_ne!(app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200)["bundle_version"], to.as_str(), "a dry run changes nothing");

    assert_eq!(app.post("/api/v1/admin/migrate", "tech_wang", json!({"workflow": "repair"})).await.expect(403)["code"], "forbidden");
    let done = app.post("/api/v1/admin/migrate", "admin", json!({"workflow": "repair", "map": {"in_progress": "working"}})).await.expect(200);
    assert_eq!((done["status"].as_str(), done["migrated"].as_u64()), (Some("ok"), Some(2)));
    let view = app.get(&format!("/api/v1/instances/{id}"), "tech_wang").await.expect(200);
    assert_eq!((view["state"].as_str(), view["bundle_version"].as_str(), view["version"].as_u64()), (Some("working"), Some(to.as_str()), Some(3)));
    let history = app.get(&format!("/api/v1/instances/{id}/history"), "admin").await.expect(200);
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["kind"].as_str(), last["actor"].as_str(), last["from_state"].as_str(), last["to_state"].as_str()),
        (Some("migrated"), Some("admin"), Some("in_progress"), Some("working"))
    );
    assert_eq!(last["input"]["to_version"], to.as_str());
    assert_eq!(last["input"]["mapping"], json!({"in_progress": "working"}));
    app.transition(&id, "check_in", "tech_wang", json!({"place": {"tag": "RFID-EQ-000101"}})).await.expect(200);
}

#[tokio::test]
async fn data_the_new_forms_reject_blocks_a_migration() {
    let mut app = TestApp::hospital_copy();
    let id = app.start_instance("repair", "nurse_li", report()).await.expect(201)["id"].as_str().unwrap().to_string();
    app.edit("forms/repair_report.yaml", "      - { value: hvac, label: { zh-CN: 空调暖通, en: HVAC } }\n", "");
    reload(&app);
    let refused = app.post("/api/v1/admin/migrate", "admin", json!({"workflow": "repair"})).await.expect(200);
    assert_eq!(refused["blocked"][0]["id"], id.as_str());
    assert!(refused["blocked"][0]["problems"][0].as_str().unwrap().contains("category"), "{refused}");
}

#[tokio::test]
async fn on_new_version_migrate_moves_instances_when_it_is_trivially_safe() {
    let mut app = TestApp::hospital_copy();
    app.edit(REPAIR, "initial: unaccepted\n", "initial: unaccepted\non_new_version: migrate\n");
    reload(&app);
    let id = accepted(&mut app).await;
    app.edit(REPAIR, "en: Accept }", "en: Take it }");
    let ReloadOutcome::Reloaded { to, migrated, .. } = reload(&app) else { panic!("not reloaded") };
    assert_eq!(migrated[0].migrated, 1);
    assert_eq!(app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200)["bundle_version"], to.as_str());

    // A state removed: not trivially safe, so the instance keeps its version.
    let text = std::fs::read_to_string(app.app_dir.join(REPAIR)).unwrap();
    app.write(REPAIR, &text.replace("in_progress", "working"));
    let ReloadOutcome::Reloaded { migrated, .. } = reload(&app) else { panic!("not reloaded") };
    assert_eq!((migrated[0].migrated, migrated[0].blocked.len()), (0, 1));
    assert_eq!(app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200)["bundle_version"], to.as_str());
}

/// Regression: a form file with invalid UTF-8 failed the reload, but
/// `last_rejected` stayed `null` (only the log said why).
#[tokio::test]
async fn a_file_that_is_not_utf8_is_a_rejected_reload_with_its_place() {
    let mut app = TestApp::hospital_copy();
    let v1 = app.runtime.bundle().version.clone();
    std::fs::write(app.app_dir.join("forms/broken.yaml"), b"form: broken\ntitle: \xff\xfe\n").unwrap();
    let ReloadOutcome::Rejected { version, diagnostics } = reload(&app) else { panic!("not rejected") };
    assert_eq!(version, v1);
    assert_eq!(
        (diagnostics[0].file.as_str(), diagnostics[0].line, diagnostics[0].column, diagnostics[0].code.as_str()),
        ("forms/broken.yaml", 2, 8, "not_utf8")
    );
    let bundle = app.get("/api/v1/bundle", "admin").await.expect(200);
    assert_eq!(bundle["last_rejected"]["diagnostics"][0]["code"], "not_utf8", "{bundle}");
}

/// Regression: a FIFO named `definitions/x.yaml` blocked the reload (and
/// `POST /api/v1/admin/reload` hung) until something wrote to it.
#[tokio::test]
async fn a_pipe_among_the_definitions_is_reported_not_read() {
    let mut app = TestApp::hospital_copy();
    let fifo = app.app_dir.join("definitions/x.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let runtime = app.runtime.clone();
    std::thread::spawn(move || tx.send(runtime.reload()).unwrap());
    let outcome = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the reload must not block on a pipe");
    let ReloadOutcome::Rejected { diagnostics, .. } = outcome else { panic!("not rejected") };
    assert_eq!((diagnostics[0].file.as_str(), diagnostics[0].code.as_str()), ("definitions/x.yaml", "not_a_file"));
    assert_eq!(app.get("/api/v1/bundle", "admin").await.expect(200)["last_rejected"]["diagnostics"][0]["code"], "not_a_file");
    std::fs::remove_file(&fifo).unwrap();
    assert!(!matches!(reload(&app), ReloadOutcome::Rejected { .. }));
}

/// Regression: `every: { months: 300000 }` passed `check`, and the tick loop
/// then panicked in jiff's arithmetic, stopping every timer and schedule.
#[tokio::test]
async fn a_schedule_period_past_the_limits_is_refused_at_its_line() {
    let app = TestApp::hospital_copy();
    let file = "definitions/schedules/monthly_inspection.yaml";
    app.edit(file, "every: { months: 1 }", "every: { months: 300000 }");
    let ReloadOutcome::Rejected { diagnostics, .. } = reload(&app) else { panic!("not rejected") };
    let d = &diagnostics[0];
    assert_eq!((d.file.as_str(), d.code.as_str()), (file, "out_of_range"), "{d:?}");
    assert_eq!(d.line as usize, flowform_tests::line_of(&app.app_dir.join(file), "months: 300000"));
    app.edit(file, "every: { months: 300000 }", "every: { months: 1 }");
    app.edit("definitions/workflows/requisition.yaml", "sla: { minutes: 120", "sla: { minutes: 99999999999");
    let ReloadOutcome::Rejected { diagnostics, .. } = reload(&app) else { panic!("a huge SLA is refused too") };
    assert_eq!(diagnostics[0].code, "out_of_range", "{diagnostics:?}");
}
