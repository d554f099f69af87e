//! Runs every YAML scenario under tests/scenarios/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_tests::scenario::run_file;
use std::path::Path;

#[tokio::test]
async fn hospital_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    files.sort();
    assert!(files.len() >= 4, "scenarios missing in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        if let Err(e) = run_file(file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{} of {} scenarios failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

#[test]
fn the_matcher_reports_the_first_difference() {
    use flowform_tests::scenario::matches;
    use serde_json::json;
    assert!(matches(&json!({"a": {"b": 1}}), &json!({"a": {"b": 1.0, "c": 2}}), "").is_ok());
    assert_eq!(matches(&json!({"a": [1, 2]}), &json!({"a": [1, 3]}), "").unwrap_err(), ".a[1]: expected 2, got 3");
    assert!(matches(&json!({"a": [1]}), &json!({"a": [1, 2]}), "").is_err());
    assert!(matches(&json!({"missing": null}), &json!({}), "").is_ok());
}

/// A `replay:` step whose expectation is wrong fails, saying what differs.
#[tokio::test]
async fn a_replay_step_fails_when_the_changed_definitions_do_not_do_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.yaml");
    std::fs::write(
        &path,
        r#"scenario: wrong
steps:
  - as: nurse_li
    start: repair
    data: { asset: EQ-000116, department: D-LAB, location: 检验科, description: 洗手池水管漏水了 }
  - replay:
      edit:
        - file: rules/dispatch.rhai
          replace: "let team = team_for(record.category);"
          with: "let team = if record.category == \"hvac\" { \"general_team\" } else { team_for(record.category) };"
      expect: { affected: 1 }
"#,
    )
    .unwrap();
    let e = run_file(&path).await.unwrap_err();
    assert!(e.contains("step 2") && e.contains("replay.affected: expected 1, got 0"), "{e}");
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("replace: \"let team", "replace: \"let teem")).unwrap();
    let e = run_file(&path).await.unwrap_err();
    assert!(e.contains("rules/dispatch.rhai has no `let teem"), "{e}");
}

/// A long `wait` passes time as a server would: a `catch_up: skip` schedule
/// whose period begins during the wait starts its orders (a single jump
/// would find the period late and skip it), and the checks of records and
/// instances fail when they do not hold.
#[tokio::test]
async fn a_long_wait_runs_each_schedule_at_its_time_and_record_checks_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wait.yaml");
    // The quarterly HVAC maintenance (catch_up: skip) begins on 1 Jan 08:00 Shanghai; the clock starts on 25 Nov.
    let write = |count: usize, status: &str| {
        let text = format!(
            r#"scenario: quarterly
steps:
  - wait: 37d
    instances: {{ workflow: inspection, data: {{ asset: EQ-000101, plan: 季度保养 1号冷水机组 }}, count: {count} }}
    records: {{ asset/EQ-000101: {{ data: {{ status: {status} }} }} }}
"#
        );
        std::fs::write(&path, text).unwrap()
    };
    write(1, "under_repair");
    run_file(&path).await.unwrap();
    write(0, "under_repair");
    let e = run_file(&path).await.unwrap_err();
    assert!(e.contains("expected 0 inspection instances") && e.contains("found 1"), "{e}");
    write(1, "retired");
    let e = run_file(&path).await.unwrap_err();
    assert!(e.contains("asset/EQ-000101.data.status: expected \"retired\", got \"under_repair\""), "{e}");
}

#[tokio::test]
async fn a_step_does_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.yaml");
    std::fs::write(&path, "scenario: two\nsteps:\n  - as: admin\n    start: repair\n    add_record: department\n    data: { code: D-X, name: X }\n").unwrap();
    let e = run_file(&path).await.unwrap_err();
    assert!(e.contains("a step does one of `start`, `do` and `add_record`"), "{e}");
}
