//! Property tests of core invariants and of the definition pipeline's robustness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_core::{Actor, Bundle, Lang};
use flowform_model::Sources;
use flowform_tests::repo_root;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::OnceLock;

fn hospital_sources() -> &'static Sources {
    static SOURCES: OnceLock<Sources> = OnceLock::new();
    SOURCES.get_or_init(|| flowform_runtime::sources::read_dir(&repo_root()).unwrap())
}

fn hospital() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| flowform_core::compile(hospital_sources().clone()).unwrap())
}

fn actors() -> Vec<Actor> {
    let a = |id: &str, roles: &[&str], teams: &[&str]| Actor {
        id: id.into(),
        name: id.into(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        teams: teams.iter().map(|s| s.to_string()).collect(),
        email: None,
        department: None,
    };
    vec![
        a("nurse", &["staff"], &[]),
        a("other_nurse", &["staff"], &[]),
        a("tech_hvac", &["staff", "technician"], &["hvac_team"]),
        a("tech_util", &["staff", "technician"], &["utilities_team"]),
        a("dispatcher", &["staff", "dispatcher"], &[]),
    ]
}

fn inputs() -> Vec<Value> {
    vec![
        json!({}),
        json!({"place": {"tag": "RFID-1"}}),
        json!({"fault_cause": "wear", "work_notes": "fixed it well"}),
        json!({"rating": 5}),
        json!({"rating": 1}),
        json!({"reason": "still broken"}),
        json!({"team": "utilities_team"}),
        json!({"findings": "dust"}),
        json!({"escalate_to": "elevator_team", "reason": "needs the lift team"}),
        json!({"rating": "five"}),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever commands are sent, an instance is only ever in a declared state,
    /// only moves along a declared transition from its current state, and its
    /// version counts its events.
    #[test]
    fn commands_never_leave_the_definition(commands in proptest::collection::vec((0usize..12, 0usize..5, 0usize..10), 1..40), category in 0usize..4) {
        let bundle = hospital();
        let wf = bundle.workflow("repair").unwrap();
        let actors = actors();
        let category = ["hvac", "plumbing", "elevator", "other"][category];
        let report = json!({"asset": "EQ-000101", "category": category, "department": "D-ICU", "location": "L1", "description": "broken thing"});
        let mut instance = flowform_core::start(bundle, "repair", &report, &actors[0], flowform_core::time::tm("2026-01-01T00:00:00Z"), "i1", Lang::En).unwrap().instance;
        let names: Vec<&str> = wf.transitions.iter().map(|t| t.name.as_str()).chain(["nonsense", "close"]).collect();
        let mut events = 1;
        for (t, a, i) in commands {
            let name = names[t % names.len()];
            let before = instance.clone();
            let offered: Vec<String> = flowform_core::available_transitions(bundle, &instance, &actors[a], flowform_core::time::tm("2026-01-01T01:00:00Z")).into_iter().map(|t| t.name).collect();
            match flowform_core::transition(bundle, instance.clone(), name, &inputs()[i], &actors[a], flowform_core::time::tm("2026-01-01T01:00:00Z"), Lang::En) {
                Ok(outcome) => {
                    prop_assert!(offered.iter().any(|o| o == name), "{name} was taken but not offered to {} in {}", actors[a].id, before.state);
                    let def = wf.transition(name).unwrap();
                    prop_assert!(def.from.iter().any(|f| f.value == before.state), "{name} taken from {}", before.state);
                    prop_assert!(wf.state(&outcome.instance.state).is_some());
                    prop_assert_eq!(outcome.instance.version, before.version + 1);
                    prop_assert_eq!(outcome.event.seq, outcome.instance.version);
                    prop_assert_eq!(outcome.event.from_state.as_deref(), Some(before.state.as_str()));
                    prop_assert_eq!(&outcome.event.to_state, &outcome.instance.state);
                    // The changes the core records as it sets fields are exactly what differs.
                    prop_assert_eq!(&outcome.event.changes, &full_diff(&before, &outcome.instance));
                    if wf.state(&before.state).unwrap().is_final {
                        prop_assert!(false, "left a final state");
                    }
                    instance = outcome.instance;
                    events += 1;
                }
                // A refusal for state, role, team or guard is exactly "not offered";
                // what is offered may still be refused for its data.
                Err(flowform_core::Rejection::NotInThisState { .. } | flowform_core::Rejection::Forbidden(_) | flowform_core::Rejection::GuardFailed { .. } | flowform_core::Rejection::UnknownTransition { .. }) => {
                    prop_assert!(!offered.iter().any(|o| o == name), "{name} was offered to {} in {} but refused", actors[a].id, before.state);
                }
                Err(_) => {}
            }
        }
        prop_assert_eq!(instance.version, events);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    Truncate(usize),
    DuplicateLine(usize),
    ReplaceWord(usize, &'static str),
    Indent(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..10_000).prop_map(Mutation::DeleteLine),
        (0usize..100_000).prop_map(Mutation::Truncate),
        (0usize..10_000).prop_map(Mutation::DuplicateLine),
        (
            (0usize..10_000),
            prop::sample::select(vec!["in_progres", "42", "[", "{", "null", "- x", ":", "true", "\"", "'", "fields:", "type: nope", "&a", "*a", "!!binary x"])
        )
            .prop_map(|(l, w)| Mutation::ReplaceWord(l, w)),
        (0usize..10_000).prop_map(Mutation::Indent),
    ]
}

fn mutate(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return String::new();
    }
    let n = lines.len();
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::Truncate(at) => {
            let cut = text.char_indices().map(|(i, _)| i).nth(at % text.chars().count().max(1)).unwrap_or(0);
            return text[..cut].to_string();
        }
        Mutation::ReplaceWord(i, w) => {
            let line = &mut lines[i % n];
            if let Some(pos) = line.rfind(' ') {
                line.truncate(pos + 1);
                line.push_str(w);
            } else {
                *line = w.to_string();
            }
        }
        Mutation::Indent(i) => lines[i % n].insert_str(0, "   "),
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Broken definitions never panic the pipeline, and every diagnostic points
    /// at a real file and line.
    #[test]
    fn mutated_definitions_give_located_diagnostics(file in 0usize..100, mutations in proptest::collection::vec(mutation(), 1..4)) {
        let sources = hospital_sources();
        let paths: Vec<&str> = sources.iter().map(|(p, _)| p).collect();
        let path = paths[file % paths.len()];
        let mut text = sources.get(path).unwrap().to_string();
        for m in &mutations {
            text = mutate(&text, m);
        }
        let mut broken = sources.clone();
        broken.insert(path, text);
        match flowform_core::compile(broken.clone()) {
            Err(diags) => {
                prop_assert!(!diags.is_empty());
                for d in diags {
                    prop_assert!(d.line >= 1 && d.column >= 1, "{d:?}");
                    prop_assert!(broken.get(&d.file).is_some() || d.file == "definitions", "{d:?}");
                    prop_assert!(!d.message.is_empty());
                }
            }
            // A mutant that still compiles must still be consistent: what the
            // checker promises holds in the bundle it let through.
            Ok(bundle) => {
                for wf in bundle.model.workflows.values() {
                    prop_assert!(wf.state(&wf.initial.value).is_some(), "{}: initial state missing", wf.name);
                    for t in &wf.transitions {
                        prop_assert!(t.from.iter().all(|f| wf.state(&f.value).is_some()), "{}.{}: unknown from", wf.name, t.name);
                        prop_assert!(t.to.as_ref().is_none_or(|to| wf.state(&to.value).is_some()), "{}.{}: unknown to", wf.name, t.name);
                        if let Some(form) = &t.form {
                            prop_assert!(bundle.form(&form.value).is_some(), "{}.{}: unknown form", wf.name, t.name);
                        }
                    }
                }
            }
        }
    }

    /// Any JSON sent to a form gives either clean data with only its fields, or field errors.
    #[test]
    fn form_validation_never_panics(input in arb_json(3)) {
        let form = hospital().form("repair_report").unwrap();
        match form.validate(&input, Lang::En) {
            Ok(Value::Object(clean)) => {
                for k in clean.keys() {
                    prop_assert!(form.def.fields.iter().any(|f| &f.name == k), "unknown field {k} accepted");
                }
            }
            Ok(other) => prop_assert!(false, "not an object: {other}"),
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }
}

fn arb_json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-z_]{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["hvac", "urgent", "icu", "EQ-000001", "2026-01-01", ""]).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(depth, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "asset",
                    "category",
                    "department",
                    "location",
                    "priority",
                    "description",
                    "urgent_reason",
                    "photos",
                    "reporter_phone",
                    "x"
                ])
                .prop_map(String::from),
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One made-up closed-or-open repair order as a report row.
fn order_row() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    (
        prop::sample::select(vec!["D-ICU", "D-LAB", "D-WARD5"]),
        prop::sample::select(vec!["closed", "in_progress", "cancelled"]),
        prop::option::of(0u32..600),
        prop::option::of(any::<bool>()),
        0i64..(90 * 86_400),
    )
        .prop_map(|(dept, state, response, sla, secs)| {
            let created = jiff::Timestamp::from_second(1_790_000_000 + secs).unwrap();
            let mut m = serde_json::Map::new();
            m.insert("department".into(), json!(dept));
            m.insert("state".into(), json!(state));
            m.insert("created_at".into(), json!(format!("{created:.3}")));
            if let Some(r) = response {
                m.insert("response_minutes".into(), json!(r));
            }
            if let Some(s) = sla {
                m.insert("sla_met".into(), json!(s));
            }
            m
        })
}

fn nearest_rank(mut v: Vec<f64>, p: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return None;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every measure of the hospital's SLA and response-time reports equals a
    /// naive recomputation from the rows, for any rows, range and grouping.
    #[test]
    fn report_measures_equal_a_naive_recomputation(rows in prop::collection::vec(order_row(), 0..80), from_day in 0i64..60, days in 1i64..60, by_month in any::<bool>()) {
        let bundle = hospital();
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let from = jiff::Timestamp::from_second(1_790_000_000 + from_day * 86_400).unwrap();
        let to = jiff::Timestamp::from_second(1_790_000_000 + (from_day + days) * 86_400).unwrap();
        let by = if by_month { "month" } else { "department" };
        let q = flowform_core::reports::ReportQuery { from: Some(from), to: Some(to), by: by.into(), filters: vec![], range_applied: false };
        let in_range = |r: &serde_json::Map<String, Value>| {
            let t: jiff::Timestamp = r["created_at"].as_str().unwrap().parse().unwrap();
            t >= from && t < to
        };
        let group_of = |r: &serde_json::Map<String, Value>| -> String {
            if by_month {
                let t: jiff::Timestamp = r["created_at"].as_str().unwrap().parse().unwrap();
                let d = t.to_zoned_datetime(tz.clone()).date();
                format!("{:04}-{:02}", d.year(), d.month())
            } else {
                r["department"].as_str().unwrap().to_string()
            }
        };
        // SLA: closed rows only; count and the share met.
        let sla = &bundle.model.reports["sla_compliance"];
        let table = flowform_core::reports::run(&bundle.model, sla, &rows, &q, &tz);
        let kept: Vec<&serde_json::Map<String, Value>> = rows.iter().filter(|r| in_range(r) && r["state"] == "closed").collect();
        prop_assert_eq!(table.total.rows, kept.len());
        let mut groups: std::collections::BTreeMap<String, Vec<&serde_json::Map<String, Value>>> = Default::default();
        for r in &kept {
            groups.entry(group_of(r)).or_default().push(r);
        }
        prop_assert_eq!(table.rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>(), groups.keys().cloned().collect::<Vec<_>>());
        for row in &table.rows {
            let g = &groups[&row.key];
            let met = g.iter().filter(|r| r.get("sla_met") == Some(&json!(true))).count();
            prop_assert_eq!(row.values[0], Some(g.len() as f64));
            prop_assert_eq!(row.values[1], Some(100.0 * met as f64 / g.len() as f64));
        }
        // Response time: rows with a (non-zero) response; avg, p50, p90.
        let response = &bundle.model.reports["response_time"];
        let table = flowform_core::reports::run(&bundle.model, response, &rows, &q, &tz);
        let kept: Vec<f64> = rows
            .iter()
            .filter(|r| in_range(r) && r.get("response_minutes").and_then(Value::as_f64).is_some_and(|m| m != 0.0))
            .map(|r| r["response_minutes"].as_f64().unwrap())
            .collect();
        prop_assert_eq!(table.total.rows, kept.len());
        let avg = (!kept.is_empty()).then(|| kept.iter().sum::<f64>() / kept.len() as f64);
        prop_assert_eq!(table.total.values[1], avg);
        prop_assert_eq!(table.total.values[2], nearest_rank(kept.clone(), 0.5));
        prop_assert_eq!(table.total.values[3], nearest_rank(kept, 0.9));
    }

    /// Rows that share their values (as fact tables do: equal values mostly
    /// one allocation, sometimes two, a number and a text of the same
    /// characters) and keep their time as a number give every hospital report
    /// the same table as the same rows as plain maps, for any grouping.
    #[test]
    fn reports_over_shared_values_equal_reports_over_plain_rows(
        rows in prop::collection::vec((order_row(), any::<bool>(), prop::sample::select(vec![json!("1"), json!(1), json!("2"), Value::Null])), 0..60),
        by in prop::sample::select(vec!["", "department", "state", "priority", "month", "day", "week", "quarter", "department,month", "day,state,priority"]),
        filtered in any::<bool>(),
    ) {
        let bundle = hospital();
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let plain: Vec<serde_json::Map<String, Value>> = rows
            .iter()
            .map(|(r, _, priority)| {
                let mut r = r.clone();
                r.insert("priority".into(), priority.clone());
                r
            })
            .collect();
        let mut pool: std::collections::HashMap<String, std::sync::Arc<Value>> = Default::default();
        let shared: Vec<SharedRow> = plain
            .iter()
            .zip(&rows)
            .map(|(r, (_, share, _))| SharedRow {
                fields: r
                    .iter()
                    .map(|(k, v)| {
                        let v = if *share { pool.entry(v.to_string()).or_insert_with(|| std::sync::Arc::new(v.clone())).clone() } else { std::sync::Arc::new(v.clone()) };
                        (k.clone(), v)
                    })
                    .collect(),
            })
            .collect();
        let filters = if filtered { vec![("department".to_string(), "D-ICU".to_string())] } else { vec![] };
        let q = flowform_core::reports::ReportQuery { from: None, to: None, by: by.into(), filters, range_applied: false };
        for name in ["sla_compliance", "response_time", "repair_overview", "backlog"] {
            let rep = &bundle.model.reports[name];
            let a = flowform_core::reports::run(&bundle.model, rep, &shared, &q, &tz);
            let b = flowform_core::reports::run(&bundle.model, rep, &plain, &q, &tz);
            prop_assert_eq!(a, b, "{} by {}", name, by);
        }
    }
}

/// A report row whose values are shared allocations and whose time is kept as a number.
struct SharedRow {
    fields: Vec<(String, std::sync::Arc<Value>)>,
}

impl flowform_core::reports::Row for SharedRow {
    fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| &**v)
    }

    fn time(&self, name: &str) -> Option<i64> {
        // Parsed once here as the facts do when they read an instance; the same instant as the text.
        self.field(name).and_then(flowform_core::reports::micros)
    }
}

/// Every field of the data and the assignment that differs between two
/// versions of an instance, compared field by field.
fn full_diff(before: &flowform_core::Instance, after: &flowform_core::Instance) -> std::collections::BTreeMap<String, flowform_core::Change> {
    let mut changes = std::collections::BTreeMap::new();
    let mut keys: std::collections::BTreeSet<&String> = before.data.keys().collect();
    keys.extend(after.data.keys());
    for k in keys {
        let (b, a) = (before.data.get(k).cloned().unwrap_or_default(), after.data.get(k).cloned().unwrap_or_default());
        if b != a {
            changes.insert(k.clone(), flowform_core::Change { before: b, after: a });
        }
    }
    let text = |v: &Option<String>| v.clone().map_or(serde_json::Value::Null, serde_json::Value::String);
    for (k, b, a) in [
        ("assignment.team", &before.assignment.team, &after.assignment.team),
        ("assignment.assignee", &before.assignment.assignee, &after.assignment.assignee),
        ("assignment.vendor", &before.assignment.vendor, &after.assignment.vendor),
    ] {
        if b != a {
            changes.insert(k.to_string(), flowform_core::Change { before: text(b), after: text(a) });
        }
    }
    changes
}
