//! The JSON Schemas for editors (`flowform schema`) against the loader: every
//! definition file of the repository validates; an unknown key is refused by
//! both, wherever it is put; the hospital's schema offers its roles; the
//! schemas shipped in `schemas/` are the ones the code generates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_model::{SourceKind, Sources, schema};
use flowform_tests::{fixture, repo_root};
use serde_json::Value;
use std::path::Path;

fn bundles() -> Vec<std::path::PathBuf> {
    vec![repo_root(), repo_root().join("bench/app"), fixture("library")]
}

fn schemas_of(dir: &Path) -> (Sources, Vec<(&'static str, Value)>) {
    let sources = flowform_runtime::sources::read_dir(dir).unwrap();
    let (model, diags) = flowform_model::load_and_check(&sources);
    assert!(diags.is_empty(), "{}: {diags:?}", dir.display());
    (sources, schema::schemas(&model))
}

fn validator(schemas: &[(&str, Value)], kind: &str) -> jsonschema::Validator {
    let s = &schemas.iter().find(|(k, _)| *k == kind).unwrap().1;
    jsonschema::draft7::new(s).unwrap_or_else(|e| panic!("{kind}.json is not a valid schema: {e}"))
}

fn json_of(path: &str, text: &str) -> Value {
    flowform_model::node::parse(path, text).unwrap().to_json()
}

/// The YAML files of a bundle with the schema each is checked against.
fn files(sources: &Sources) -> Vec<(String, String, &'static str)> {
    sources
        .iter()
        .filter_map(|(path, text)| match SourceKind::of(path) {
            Some(SourceKind::Definition) => Some((path.to_string(), text.to_string(), "definition")),
            Some(SourceKind::Form) => Some((path.to_string(), text.to_string(), "form")),
            _ => None,
        })
        .collect()
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[test]
fn every_definition_file_in_the_repository_validates_against_its_schema() {
    let mut checked = 0;
    for dir in bundles() {
        let (sources, schemas) = schemas_of(&dir);
        let by_kind = [("definition", validator(&schemas, "definition")), ("form", validator(&schemas, "form"))];
        for (path, text, kind) in files(&sources) {
            let v = &by_kind.iter().find(|(k, _)| *k == kind).unwrap().1;
            let errs = errors(v, &json_of(&path, &text));
            assert!(errs.is_empty(), "{}/{path} does not validate against {kind}.json: {errs:#?}", dir.display());
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} files checked");
}

/// The schema and the loader agree on where a key may be: a key added to
/// any mapping of any file is refused by both or accepted by both.
#[test]
fn an_unknown_key_anywhere_is_refused_by_both_the_schema_and_the_loader() {
    let mut refused = 0;
    for dir in bundles() {
        let (sources, schemas) = schemas_of(&dir);
        let by_kind = [("definition", validator(&schemas, "definition")), ("form", validator(&schemas, "form"))];
        for (path, text, kind) in files(&sources) {
            let v = &by_kind.iter().find(|(k, _)| *k == kind).unwrap().1;
            let doc = json_of(&path, &text);
            assert!(v.is_valid(&doc), "{path} does not validate");
            let mut objects = Vec::new();
            pointers(&doc, String::new(), &mut objects);
            for at in objects {
                let mut changed = doc.clone();
                changed.pointer_mut(&at).unwrap().as_object_mut().unwrap().insert("zz_unknown".into(), Value::from(1));
                let schema_refuses = !v.is_valid(&changed);
                // JSON is YAML: the loader reads the same document.
                let mut one = Sources::new();
                one.insert(path.clone(), serde_json::to_string_pretty(&changed).unwrap());
                let mut diags = Vec::new();
                flowform_model::load::load(&one, &mut diags);
                let loader_refuses = !diags.is_empty();
                assert_eq!(
                    schema_refuses,
                    loader_refuses,
                    "{}/{path}: a key added at `{at}` is {} by the schema but {} by the loader ({diags:?})",
                    dir.display(),
                    if schema_refuses { "refused" } else { "accepted" },
                    if loader_refuses { "refused" } else { "accepted" },
                );
                refused += usize::from(schema_refuses);
            }
        }
    }
    assert!(refused > 500, "only {refused} mutations were refused");
}

/// JSON pointers of every mapping in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            out.push(at.clone());
            for (k, x) in o {
                pointers(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_hospital_schema_offers_its_roles_and_refuses_a_misspelt_key() {
    let (sources, schemas) = schemas_of(&repo_root());
    let workflow = &schemas.iter().find(|(k, _)| *k == "workflow").unwrap().1;
    let roles = &workflow["definitions"]["transition"]["properties"]["roles"]["anyOf"][0]["enum"];
    let roles: Vec<&str> = roles.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for role in ["staff", "dispatcher", "technician", "manager", "requester", "assignee"] {
        assert!(roles.contains(&role), "`{role}` is not offered for transitions[].roles: {roles:?}");
    }
    let teams_hint = &workflow["definitions"]["transition"]["properties"]["roles"]["description"];
    assert!(teams_hint.as_str().unwrap().contains("可执行的角色"), "the description is in English and Chinese");

    let path = "definitions/workflows/repair.yaml";
    let mut doc = json_of(path, sources.get(path).unwrap());
    let first = doc["transitions"][0].as_object_mut().unwrap();
    let from = first.remove("from").unwrap();
    first.insert("from_state".into(), from);
    let v = validator(&schemas, "workflow");
    let errs = errors(&v, &doc);
    assert!(errs.iter().any(|e| e.contains("from_state") && e.contains("/transitions/0")), "{errs:#?}");
    // The loader says the same, with the name it meant.
    let mut one = Sources::new();
    one.insert(path, serde_json::to_string(&doc).unwrap());
    let mut diags = Vec::new();
    flowform_model::load::load(&one, &mut diags);
    let unknown = diags.iter().find(|d| d.code == "unknown_key").expect("the loader refuses from_state");
    assert!(unknown.message.contains("from_state") && unknown.hint.as_deref().unwrap_or("").contains("from"), "{unknown:?}");
    // An undeclared role is flagged as it is typed.
    let mut doc = json_of(path, sources.get(path).unwrap());
    doc["transitions"][0]["roles"] = serde_json::json!(["dispatcher", "dispacher"]);
    assert!(!v.is_valid(&doc));
}

/// The schemas shipped for the editor (`.vscode/settings.json` points at
/// them) are the ones `flowform schema --dir . --out schemas` writes today.
#[test]
fn the_shipped_schemas_are_up_to_date() {
    let (_, schemas) = schemas_of(&repo_root());
    for (kind, schema) in schemas {
        let path = repo_root().join("schemas").join(format!("{kind}.json"));
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            shipped,
            serde_json::to_string_pretty(&schema).unwrap() + "\n",
            "{} is out of date: run `cargo run -- schema --dir . --out schemas`",
            path.display()
        );
    }
    let settings: Value = serde_json::from_str(&std::fs::read_to_string(repo_root().join(".vscode/settings.json")).unwrap()).unwrap();
    assert_eq!(settings["yaml.schemas"]["./schemas/definition.json"], serde_json::json!(["definitions/**/*.yaml", "definitions/**/*.yml"]));
    assert_eq!(settings["yaml.schemas"]["./schemas/form.json"], serde_json::json!(["forms/**/*.yaml", "forms/**/*.yml"]));
}
