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
