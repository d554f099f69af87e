use super::*;
use flowform_model::{Sources, load_and_check};
use serde_json::json;
use std::time::Instant;

fn rules(files: &[(&str, &str)]) -> (RuleSet, Vec<Diagnostic>) {
    let mut sources = Sources::new();
    for (p, t) in files {
        sources.insert(*p, *t);
    }
    let (model, _) = load_and_check(&sources);
    RuleSet::compile(&model, Limits::default())
}

fn ctx() -> ScriptContext {
    ScriptContext {
        record: json!({"category": "hvac", "priority": "urgent", "team": "hvac_team"}),
        input: json!({}),
        actor: json!({"id": "u1", "roles": ["technician"], "teams": ["hvac_team"]}),
        now: "2026-11-25T08:00:00Z".into(),
        records: std::sync::Arc::new(
            json!({"asset": {"EQ-1": {"id": "EQ-1", "title": "1号冷水机组", "tag_id": "RFID-EQ-1", "category": "hvac"}, "EQ-2": {"id": "EQ-2", "category": "plumbing"}}}),
        ),
    }
}

#[test]
fn rules_read_the_records_they_are_handed_and_nothing_else() {
    let (set, diags) = rules(&[(
        "rules/r.rhai",
        r#"let a = lookup("asset", "EQ-1"); let none = lookup("asset", "EQ-9"); let hvac = find("asset", #{category: "hvac"}); [a.tag_id, none == (), hvac.len(), lookup("part", "P-1") == ()]"#,
    )]);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(set.run("r", &ctx()).unwrap(), json!(["RFID-EQ-1", true, 1, true]));
    // Nothing handed in: nothing found, and no way to reach the store.
    let bare = ScriptContext { records: std::sync::Arc::new(serde_json::Value::Null), ..ctx() };
    assert_eq!(set.run("r", &bare).unwrap_err().kind, crate::RuleErrorKind::Runtime, "a.tag_id on () is an error");
}

#[test]
fn runs_a_routing_script() {
    let (set, diags) = rules(&[(
        "rules/dispatch.rhai",
        "let team = switch record.category { \"hvac\" => \"hvac_team\", _ => \"general_team\" };\n#{ team: team, sla_minutes: if record.priority == \"urgent\" { 30 } else { 240 }, due: add_minutes(now, 30) }",
    )]);
    assert!(diags.is_empty(), "{diags:?}");
    let out = set.run("dispatch", &ctx()).unwrap();
    assert_eq!(out, json!({"team": "hvac_team", "sla_minutes": 30, "due": "2026-11-25T08:30:00Z"}));
}

#[test]
fn syntax_errors_point_into_the_file() {
    let (_, diags) = rules(&[("rules/bad.rhai", "let x = 1;\nlet y = ;\n")]);
    assert_eq!(diags.len(), 1);
    assert_eq!((diags[0].file.as_str(), diags[0].line, diags[0].code.as_str()), ("rules/bad.rhai", 2, "rhai_syntax"));
}

#[test]
fn undefined_variables_are_compile_errors() {
    let (_, diags) = rules(&[("rules/typo.rhai", "recrod.category")]);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].line, 1);
}

#[test]
fn eval_and_import_are_refused() {
    let (_, diags) = rules(&[("rules/e.rhai", "eval(\"1\")"), ("rules/i.rhai", "import \"x\" as y; 1")]);
    assert_eq!(diags.len(), 2, "{diags:?}");
}

#[test]
fn hostile_scripts_stop_quickly_with_a_clear_error() {
    let cases = [
        ("spin", "loop {}"),
        ("recurse", "fn f(x) { f(x + 1) } f(0)"),
        ("big_string", "let s = \"x\"; loop { s += s; }"),
        ("big_array", "let a = []; loop { a.push(1); }"),
        ("throw", "throw \"no\""),
    ];
    let files: Vec<(String, &str)> = cases.iter().map(|(n, t)| (format!("rules/{n}.rhai"), *t)).collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    let (set, diags) = rules(&refs);
    assert!(diags.is_empty(), "{diags:?}");
    for (name, _) in cases {
        let started = Instant::now();
        let err = set.run(name, &ctx()).unwrap_err();
        assert!(started.elapsed().as_millis() < 500, "{name} took {:?}", started.elapsed());
        assert_eq!(err.script, name);
        assert!(err.file.ends_with(".rhai"));
        let expected = if name == "throw" { RuleErrorKind::Runtime } else { RuleErrorKind::Limit };
        assert_eq!(err.kind, expected, "{name}: {err}");
    }
}

#[test]
fn guards_must_be_booleans() {
    let yaml = "workflow: w\nstart: {}\ninitial: a\nstates: { a: {}, b: { final: true } }\ntransitions:\n  - { name: go, from: a, to: b, when: \"actor.teams.contains(record.team)\" }\n  - { name: odd, from: a, to: b, when: \"1 + 1\" }\n";
    let (set, diags) = rules(&[("definitions/w.yaml", yaml)]);
    assert!(diags.is_empty(), "{diags:?}");
    assert!(set.run_guard(&guard_key("w", "go"), &ctx()).unwrap());
    let err = set.run_guard(&guard_key("w", "odd"), &ctx()).unwrap_err();
    assert_eq!(err.kind, RuleErrorKind::BadResult);
    assert_eq!(err.line, 7);
}

#[test]
fn json_reaches_scripts_as_the_serde_conversion_gives_it() {
    let values = [
        json!(null),
        json!(true),
        json!(42),
        json!(-7),
        json!(2.5),
        json!(u64::MAX),
        json!("空调不制冷"),
        json!([1, "a", null, [2.0], {"k": false}]),
        json!({"category": "hvac", "lines": [{"part": "P-001", "quantity": 2}], "place": {"lat": 23.1, "tag": null}}),
    ];
    for v in values {
        let direct = super::to_dynamic(&v);
        let via_serde = rhai::serde::to_dynamic(&v).unwrap();
        assert_eq!(direct.type_name(), via_serde.type_name(), "{v}");
        assert_eq!(format!("{direct:?}"), format!("{via_serde:?}"), "{v}");
    }
}

#[test]
fn library_functions_are_shared_and_libraries_hold_only_functions() {
    let (set, diags) = rules(&[
        ("rules/lib/util.rhai", "// shared\nfn double(x) { x * 2 }\nfn label(t) { `#${t}` }\n"),
        ("rules/uses.rhai", "label(double(21))"),
        ("definitions/app.yaml", "app: a\n"),
    ]);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(set.run("uses", &ctx()).unwrap(), json!("#42"));
    let (_, diags) = rules(&[("rules/lib/bad.rhai", "fn ok() { 1 }\n\nlet x = 1;\n")]);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!((diags[0].code.as_str(), diags[0].line), ("rhai_library", 3));
}

#[test]
fn an_unclosed_block_is_found_where_it_opens() {
    use crate::unclosed;
    assert_eq!(unclosed("let a = 1;\nif a > 0 {\n    a\n"), Some((2, 10, '{')));
    // The inner block lacks its `}`: the outer one's `}` is less indented than the inner opener.
    let text = "fn f(x) {\n    if x {\n        1\n    // no brace here\n}\n";
    assert_eq!(unclosed(text), Some((2, 10, '{')));
    // Brackets in strings and comments do not count.
    assert_eq!(unclosed("let s = \"{ [ (\"; // {\nlet t = `${s} {`;\n/* { */ s"), None);
    assert_eq!(unclosed("let m = #{ a: [1, 2], b: (3) };"), None);
    assert_eq!(unclosed("foo(1, [2, 3);"), Some((1, 8, '[')));
}

#[test]
fn a_script_gets_the_fields_of_record_it_reads_or_all_of_them() {
    use super::fields_read;
    assert_eq!(fields_read("actor.teams.contains(record.team) || record.assignee == actor.id", "record"), Some(vec!["team".into(), "assignee".into()]));
    assert_eq!(fields_read("let x = record ?. category; records.len() + my_record", "record"), Some(vec!["category".into()]));
    assert_eq!(fields_read("team_for(record)", "record"), None, "passed whole");
    assert_eq!(fields_read("record[\"team\"]", "record"), None, "indexed");
    assert_eq!(fields_read("let r = record; r.team", "record"), None, "bound to another name");
    assert_eq!(fields_read("42", "record"), Some(vec![]));
    assert_eq!(fields_read("record.team + record.keys().len()", "record"), None, "a method of the whole map");
    assert_eq!(fields_read("// Sees: record (the report)\nrecord.asset", "record"), Some(vec!["asset".into()]), "comments do not count");
    for unsure in ["/* a /* b */ don't */ record.team", "urgent!() || record.team == \"x\"", "#\"5\" tall\"# + record.team", "`${record}`"] {
        assert_eq!(fields_read(unsure, "record"), None, "{unsure}");
    }
    // A backtick string is verbatim: its backslash does not hide the next string's interpolation.
    assert_eq!(fields_read("let d = `C:\\`; let url = `https://x/${record.team}`;", "record"), Some(vec!["team".into()]));
    assert_eq!(fields_read("if !(record.a || record.b) { 1 }", "record"), Some(vec!["a".into(), "b".into()]), "a negation is no call");
    // Run both ways: a field read gives the same value as when everything is converted.
    let (set, diags) =
        rules(&[("rules/some.rhai", "record.category + \"/\" + record.team"), ("rules/all.rhai", "let r = record; r.category + \"/\" + r.team")]);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(set.run("some", &ctx()).unwrap(), json!("hvac/hvac_team"));
    assert_eq!(set.run("all", &ctx()).unwrap(), json!("hvac/hvac_team"));
}

#[test]
fn a_script_gets_the_fields_of_input_and_actor_it_reads_or_all_of_them() {
    let ctx = ScriptContext { input: json!({"qty": 2, "part": "P-1", "note": "x"}), ..ctx() };
    let (set, diags) = rules(&[
        ("rules/named.rhai", "`${input.part}×${input.qty} by ${actor.id}`"),
        ("rules/whole.rhai", "input.keys().len() + actor.keys().len()"),
        ("rules/none.rhai", "record.category"),
        ("rules/checked.rhai", "\"qty\" in input"),
    ]);
    assert!(diags.is_empty(), "{diags:?}");
    // Narrowed runs give what whole runs give (debug builds run both and compare).
    assert_eq!(set.run("named", &ctx).unwrap(), json!("P-1×2 by u1"));
    assert_eq!(set.run("whole", &ctx).unwrap(), json!(6), "a map method sees every field");
    assert_eq!(set.run("none", &ctx).unwrap(), json!("hvac"));
    assert_eq!(set.run("checked", &ctx).unwrap(), json!(true), "`in` uses the whole map");
    let compiled = |name: &str| set.scripts.get(name).unwrap();
    assert_eq!(compiled("named").input_fields, Some(vec!["part".into(), "qty".into()]));
    assert_eq!(compiled("named").actor_fields, Some(vec!["id".into()]));
    assert_eq!(compiled("whole").input_fields, None);
    assert_eq!(compiled("none").input_fields, Some(vec![]));
    assert_eq!(compiled("checked").input_fields, None);
}

#[test]
fn a_library_function_cannot_read_the_scripts_variables() {
    // What makes narrowing by a script's own text sound: the shared
    // functions it calls see only their arguments, never `record`,
    // `input` or `actor` (not even through `global::`).
    let (_, diags) = rules(&[("rules/lib/g.rhai", "fn cat() { global::record.category }")]);
    assert!(diags.iter().any(|d| d.message.contains("global")), "{diags:?}");
    let (set, diags) = rules(&[("rules/lib/h.rhai", "fn cat() { record.category }"), ("rules/uses.rhai", "cat()")]);
    assert!(!diags.is_empty() || set.run("uses", &ctx()).is_err(), "a function reads no variable of its caller");
    // …except one called in the caller's scope (`name!()`, spaces allowed):
    // such a script gets every map whole.
    let (set, diags) = rules(&[
        ("rules/lib/who.rhai", "fn who() { actor.id }"),
        ("rules/spaced.rhai", "#{ assignee: who !() }"),
        ("rules/broken.rhai", "#{ assignee: who!\n() }"),
    ]);
    assert!(diags.is_empty(), "{diags:?}");
    for name in ["spaced", "broken"] {
        assert!(set.reads_actor(name), "{name}");
        assert_eq!(set.run(name, &ctx()).unwrap(), json!({"assignee": "u1"}), "{name}");
    }
}

#[test]
fn what_the_scan_gives_up_on() {
    use super::fields_read;
    for unsure in ["who !()", "who! ()", "who!\n()", "who // x\n !()", "`${\"`\"}`; let u = \"a//b\"; input.y"] {
        assert_eq!(fields_read(unsure, "input"), None, "{unsure}");
    }
    // A negation before a parenthesis, and `!=`, are no calls.
    for sure in ["if !(input.a) { 1 }", "input.a != (2)", "let x = !(input.a); x", "return !(input.a)", "input.b && !(input.a)"] {
        assert!(fields_read(sure, "input").is_some(), "{sure}");
    }
    assert_eq!(fields_read("`${input.a} and ${input.b}`", "input"), Some(vec!["a".into(), "b".into()]));
}
