//! `flowform diff` (and `GET /api/v1/bundle/diff`) report a change in every
//! kind of definition: one edit per kind, and the change it must show.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_tests::TestApp;

/// Applies `from → to` in `file` of a copy of the hospital and returns the
/// changes as text, `area path: details` per line.
fn changes(file: &str, from: &str, to: &str) -> String {
    let app = TestApp::hospital_copy();
    let old = flowform_runtime::load_bundle(&app.app_dir).unwrap();
    app.edit(file, from, to);
    let new = flowform_runtime::load_bundle(&app.app_dir).unwrap_or_else(|e| panic!("{file}: {e:?}"));
    flowform_core::diff::diff(&old, &new).to_text()
}

fn shows(file: &str, from: &str, to: &str, expected: &[&str]) {
    let text = changes(file, from, to);
    for e in expected {
        assert!(text.contains(e), "{file}: `{from}` → `{to}` should show `{e}`, got:\n{text}");
    }
}

#[test]
fn a_change_in_every_kind_of_definition_is_reported() {
    shows("definitions/workflows/requisition.yaml", "post: issue_parts", "post: release_parts", &["changed transition `requisition/approve`", "post rule"]);
    shows(
        "definitions/workflows/requisition.yaml",
        "sla: { minutes: 120, calendar: working }",
        "sla: { minutes: 90, calendar: working }",
        &["changed state `requisition/requested`", "SLA changed"],
    );
    shows(
        "definitions/workflows/repair.yaml",
        "visible_to: [requester, assignee, team, role:dispatcher, role:manager]",
        "visible_to: [requester, assignee, team, role:manager]",
        &["changed workflow `repair`", "visible_to"],
    );
    shows(
        "definitions/records/vendor.yaml",
        "access: { read: [dispatcher, manager, storekeeper, technician] }",
        "access: { read: [dispatcher, manager] }",
        &["changed record type `vendor`", "who may read"],
    );
    shows("definitions/ledgers/stock.yaml", "non_negative: true", "non_negative: true\nmax_quantity: 5000", &["changed ledger `stock`", "max_quantity"]);
    shows(
        "definitions/schedules/hvac_quarterly.yaml",
        "every: { months: 3 }",
        "every: { months: 6 }",
        &["changed schedule `hvac_quarterly_maintenance`", "every"],
    );
    shows("definitions/notifications/dispatched.yaml", "前接单", "前接单!", &["changed template `dispatched`", "body"]);
    shows("definitions/notifications/wecom.yaml", "\"mentioned_list\": [\"@all\"]", "\"mentioned_list\": []", &["changed webhook `wecom_duty_group`", "body"]);
    shows(
        "definitions/calendar.yaml",
        "hours: [\"08:00-12:00\", \"13:30-17:30\"]",
        "hours: [\"08:00-12:00\", \"13:00-17:00\"]",
        &["changed calendar", "working hours"],
    );
    shows("forms/parts_return.yaml", "max: 30", "max: 20", &["changed field `parts_return/return_lines`", "max"]);
    shows("rules/check_return.rhai", "let errors = [];", "let errors = []; // checked", &["changed rule `check_return`"]);
    shows(
        "definitions/app.yaml",
        "dispatcher:  { label: { zh-CN: 调度员, en: Dispatcher } }",
        "dispatcher:  { label: { zh-CN: 派单员, en: Dispatcher } }",
        &["changed role `dispatcher`"],
    );
}

#[test]
fn a_comment_or_a_moved_line_is_not_a_change() {
    let text = changes("definitions/ledgers/stock.yaml", "non_negative: true", "\n# 不允许负库存\nnon_negative: true");
    assert!(text.starts_with("no changes"), "{text}");
}
