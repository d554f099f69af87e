//! A corpus of broken definitions and what `check` says about each, as
//! business staff read it (file:line:col, message, source line, hint), kept
//! as a reviewed snapshot: a change in any message or place shows up here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_tests::TestApp;

/// (what the mistake is, file, text to replace, replacement).
const CORPUS: &[(&str, &str, &str, &str)] = &[
    ("a misspelt state", "definitions/workflows/repair.yaml", "to: in_progress\n", "to: in_progres\n"),
    ("an unknown key", "definitions/workflows/repair.yaml", "initial: unaccepted", "initial: unaccepted\nfrom_state: unaccepted"),
    ("an unknown role", "definitions/workflows/requisition.yaml", "roles: [storekeeper]\n    post: issue_parts", "roles: [storekeper]\n    post: issue_parts"),
    ("an unknown field type", "forms/parts_return.yaml", "quantity: { type: integer", "quantity: { type: integr"),
    ("a duplicate key", "forms/parts_return.yaml", "  reason: { type: text", "  reason: { type: text }\n  reason: { type: text"),
    ("a period past the limit", "definitions/schedules/hvac_quarterly.yaml", "every: { months: 3 }", "every: { months: 300000 }"),
    ("a quantity limit out of range", "definitions/ledgers/stock.yaml", "non_negative: true", "non_negative: true\nmax_quantity: 0"),
    ("an unknown audience", "definitions/workflows/repair.yaml", "role:dispatcher, role:manager]", "role:dispatcher, manager]"),
    ("an undeclared role in an access list", "definitions/records/vendor.yaml", "access: { read: [dispatcher,", "access: { read: [dispatchers,"),
    ("a template variable notifications do not give", "definitions/notifications/dispatched.yaml", "{{record.description}}", "{{technician.name}}"),
    ("a Rhai syntax error", "rules/check_return.rhai", "let errors = [];", "let errors = [;"),
    ("a block never closed", "rules/check_return.rhai", "    i += 1;\n}", "    i += 1;\n"),
    ("a tab in the indentation", "forms/parts_return.yaml", "  reason: { type: text", "\t reason: { type: text"),
    ("an unknown time zone", "definitions/app.yaml", "timezone: Asia/Shanghai", "timezone: Asia/Shangai"),
];

#[test]
fn the_diagnostics_of_common_mistakes() {
    let mut out = String::new();
    for (what, file, from, to) in CORPUS {
        let app = TestApp::hospital_copy();
        app.edit(file, from, to);
        let sources = flowform_runtime::sources::read_dir(&app.app_dir).unwrap();
        let diags = match flowform_core::compile(sources.clone()) {
            Err(d) => d,
            Ok(_) => panic!("{what}: the broken definitions were accepted"),
        };
        out.push_str(&format!("## {what}\n"));
        for d in &diags {
            out.push_str(&d.render(sources.get(&d.file)));
        }
        out.push('\n');
    }
    insta::assert_snapshot!("diagnostics_corpus", out);
}

/// Regression: a broken definition cascaded into an error in every file
/// that names it (13 problems for one bad line in asset.yaml).
#[test]
fn a_broken_definition_is_reported_once_not_in_every_file_that_names_it() {
    for (file, from, to, code) in [
        ("definitions/records/asset.yaml", "key: \"{code}\"", "key: [oops", "yaml_syntax"),
        ("forms/repair_report.yaml", "  asset:\n    type: ref\n", "  asset:\n    type: reff\n", "unknown_field_type"),
    ] {
        let app = TestApp::hospital_copy();
        app.edit(file, from, to);
        let diags = flowform_core::compile(flowform_runtime::sources::read_dir(&app.app_dir).unwrap()).err().unwrap();
        let shown: Vec<String> = diags.iter().map(|d| format!("{}:{} {} {}", d.file, d.line, d.code, d.message)).collect();
        assert_eq!(diags.len(), 1, "{file}: {shown:#?}");
        assert_eq!((diags[0].file.as_str(), diags[0].code.as_str()), (file, code));
    }
}
