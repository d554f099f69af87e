//! The diagnostic codes the engine can report and the table of them in
//! docs/definitions.md agree: every code the source reports is documented,
//! and every documented code is reported somewhere.

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
    let re = regex::Regex::new(r#"(?s)(?:Diagnostic::new|r\.error|\berr)\(\s*(?:[^()";]|\([^()]*\))*?"([a-z]+(?:_[a-z]+)*)""#).unwrap();
    let sources = sources();
    let used: BTreeSet<String> =
        sources.iter().flat_map(|s| re.captures_iter(s).map(|c| c[1].to_string()).collect::<Vec<_>>()).filter(|c| c != "definitions").collect();
    let documented = documented();
    let missing: Vec<&String> = used.iter().filter(|c| !documented.contains(*c)).collect();
    assert!(missing.is_empty(), "reported but not in docs/definitions.md: {missing:?}");
    let all_text = sources.join("\n");
    let unused: Vec<&String> = documented.iter().filter(|c| !all_text.contains(&format!("\"{c}\""))).collect();
    assert!(unused.is_empty(), "documented but never reported: {unused:?}");
}
