use super::*;
use flowform_model::{Sources, load_and_check};
use serde_json::json;

const FORM: &str = r#"
form: report
fields:
  asset:       { type: ref, record: asset, required: true, label: { zh-CN: 设备, en: Asset } }
  priority:    { type: enum, options: [low, normal, urgent], default: normal }
  description: { type: text, min_length: 5, max_length: 50, required: true, label: { zh-CN: 故障描述, en: Description } }
  floor:       { type: integer, min: 1, max: 30 }
  code:        { type: string, pattern: "^EQ-[0-9]{6}$" }
  urgent_reason: { type: text, visible_when: "priority == 'urgent'", required_when: "priority == 'urgent'" }
  tags:        { type: enum, multiple: true, options: [a, b] }
  place:       { type: location }
  when:        { type: datetime }
  day:         { type: date }
  photos:      { type: files, max: 2 }
  parts:
    type: group
    max: 3
    fields:
      part: { type: string, required: true }
      quantity: { type: integer, min: 1, required: true }
"#;

fn form() -> CompiledForm {
    let mut sources = Sources::new();
    sources.insert("forms/report.yaml", FORM);
    sources.insert("definitions/asset.yaml", "record: asset\nform: report\nkey: \"{asset}\"\n");
    let (model, diags) = load_and_check(&sources);
    assert!(diags.is_empty(), "{diags:?}");
    CompiledForm::compile(&model.forms["report"]).expect("compiles")
}

fn errors(input: Value, lang: Lang) -> Vec<(String, &'static str)> {
    match form().validate(&input, lang) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.into_iter().map(|e| (e.field, e.code)).collect(),
    }
}

#[test]
fn valid_input_gets_defaults_and_loses_hidden_fields() {
    let data = form().validate(&json!({"asset": "EQ-000101", "description": "no cold air", "urgent_reason": "x"}), Lang::En).expect("valid");
    assert_eq!(data, json!({"asset": "EQ-000101", "description": "no cold air", "priority": "normal"}));
}

#[test]
fn each_constraint_reports_its_field() {
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (json!({}), vec![("asset", "required"), ("description", "required")]),
        (json!({"asset": "a", "description": "abc"}), vec![("description", "too_short")]),
        (json!({"asset": "a", "description": "abcdef", "floor": 31}), vec![("floor", "too_large")]),
        (json!({"asset": "a", "description": "abcdef", "floor": 2.5}), vec![("floor", "wrong_type")]),
        (json!({"asset": "a", "description": "abcdef", "code": "EQ-12"}), vec![("code", "bad_format")]),
        (json!({"asset": "a", "description": "abcdef", "priority": "asap"}), vec![("priority", "not_an_option")]),
        (json!({"asset": "a", "description": "abcdef", "priority": "urgent"}), vec![("urgent_reason", "required")]),
        (json!({"asset": "a", "description": "abcdef", "tags": ["a", "c"]}), vec![("tags[1]", "not_an_option")]),
        (json!({"asset": "a", "description": "abcdef", "place": {"label": "x"}}), vec![("place", "incomplete_location")]),
        (json!({"asset": "a", "description": "abcdef", "when": "yesterday"}), vec![("when", "bad_format")]),
        (json!({"asset": "a", "description": "abcdef", "day": "2026-13-01"}), vec![("day", "bad_format")]),
        (json!({"asset": "a", "description": "abcdef", "parts": [{"part": "p", "quantity": 0}]}), vec![("parts[0].quantity", "too_small")]),
        (json!({"asset": "a", "description": "abcdef", "parts": [{"quantity": 1}]}), vec![("parts[0].part", "required")]),
        (json!({"asset": "a", "description": "abcdef", "colour": "red"}), vec![("colour", "unknown_field")]),
        (
            json!({"asset": "a", "description": "abcdef", "photos": [{"name": "a.jpg", "size": 1, "id": "f1"}, {"name": "b", "size": 1, "id": "f2"}, {"name": "c", "size": 1, "id": "f3"}]}),
            vec![("photos", "too_many")],
        ),
    ];
    for (input, expected) in cases {
        let got = errors(input.clone(), Lang::En);
        let expected: Vec<(String, &str)> = expected.into_iter().map(|(f, c)| (f.to_string(), c)).collect();
        assert_eq!(got, expected, "input {input}");
    }
}

#[test]
fn messages_follow_the_language() {
    let errs = form().validate(&json!({"asset": "a"}), Lang::ZhCn).unwrap_err();
    assert_eq!(errs[0].message, "请填写“故障描述”");
    let errs = form().validate(&json!({"asset": "a"}), Lang::En).unwrap_err();
    assert_eq!(errs[0].message, "Description is required");
    assert_eq!(Lang::from_accept_language("en-US,en;q=0.9"), Some(Lang::En));
    assert_eq!(Lang::from_accept_language("zh-CN"), Some(Lang::ZhCn));
}

#[test]
fn not_an_object_is_one_error() {
    let errs = form().validate(&json!([1]), Lang::En).unwrap_err();
    assert_eq!(errs[0].code, "not_an_object");
}

#[test]
fn stored_data_is_not_held_to_required_when() {
    // A rule raised the priority after submission: the stored data must still migrate.
    let stored = json!({"asset": "a", "description": "abcdef", "priority": "urgent"});
    assert!(form().validate(&stored, Lang::En).is_err());
    assert!(form().validate_stored(&stored, Lang::En).is_ok());
    let errs = form().validate_stored(&json!({"asset": "a", "description": "abcdef", "floor": 99}), Lang::En).unwrap_err();
    assert_eq!(errs[0].field, "floor");
}

/// Regression: a quantity of `1.0` passed the form and then failed inside a
/// rule as `bad_result` (rules saw a float).
#[test]
fn an_integer_sent_as_a_whole_float_becomes_an_integer() {
    let form = form();
    let base = json!({"asset": "EQ-000001", "description": "broken fan"});
    let mut input = base.clone();
    input["floor"] = json!(3.0);
    input["parts"] = json!([{"part": "fan", "quantity": 2.0}]);
    let out = form.validate(&input, Lang::En).unwrap();
    assert!(out["floor"].is_i64() && out["parts"][0]["quantity"].is_i64(), "{out}");
    assert_eq!((out["floor"].as_i64(), out["parts"][0]["quantity"].as_i64()), (Some(3), Some(2)));
    let mut half = base;
    half["floor"] = json!(1.5);
    assert!(form.validate(&half, Lang::En).is_err());
}
