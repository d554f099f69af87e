//! The diagnostic codes the engine can report (`DiagCode`) and the table of
//! them in docs/definitions.md agree, and every code is reported somewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

fn sources() -> Vec<String> {
    let root = flowform_tests::repo_root().join("engine");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    out
}

/// The codes in the first column of the tables under "## Diagnostic codes".
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(flowform_tests::repo_root().join("docs/definitions.md")).unwrap();
    let section = doc.split("## Diagnostic codes").nth(1).unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| l.split('|').nth(1).unwrap_or("").split(',').map(|c| c.trim().trim_matches('`').to_string()).collect::<Vec<_>>())
        .collect()
}

#[test]
fn every_diagnostic_code_is_documented_and_every_documented_code_is_used() {
    let codes: BTreeSet<String> = flowform_model::DiagCode::ALL.iter().map(|c| c.as_str().to_string()).collect();
    let documented = documented();
    let missing: Vec<&String> = codes.difference(&documented).collect();
    assert!(missing.is_empty(), "codes not in docs/definitions.md: {missing:?}");
    let unknown: Vec<&String> = documented.difference(&codes).collect();
    assert!(unknown.is_empty(), "documented but no such code: {unknown:?}");
    // Every code is reported somewhere (outside the table that declares them).
    let sources: String = sources().into_iter().filter(|s| !s.contains("macro_rules! diag_codes")).collect::<Vec<_>>().join("\n");
    let unused: Vec<String> = flowform_model::DiagCode::ALL
        .iter()
        .map(|c| format!("{c:?}"))
        .filter(|v| !regex::Regex::new(&format!(r"DiagCode::{v}\b")).unwrap().is_match(&sources))
        .collect();
    assert!(unused.is_empty(), "declared but never reported: {unused:?}");
}
