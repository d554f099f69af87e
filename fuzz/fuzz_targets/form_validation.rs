//! Any JSON against a form with every field type: validation answers, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const FORM: &str = r#"
form: everything
fields:
  s: { type: string, pattern: "^[A-Z]{2}-[0-9]+$", max_length: 20 }
  t: { type: text, min_length: 2, required: true }
  i: { type: integer, min: 0, max: 10 }
  n: { type: number }
  b: { type: boolean }
  e: { type: enum, options: [a, b, c], default: a }
  m: { type: enum, multiple: true, options: [x, y] }
  d: { type: date }
  dt: { type: datetime }
  f: { type: files, max: 2 }
  l: { type: location }
  sig: { type: signature }
  c: { type: text, visible_when: "e == 'b'", required_when: "i > 5" }
  g: { type: group, fields: { part: { type: string, required: true }, q: { type: integer, min: 1 } } }
"#;

fn form() -> &'static flowform_forms::CompiledForm {
    static FORM_CELL: OnceLock<flowform_forms::CompiledForm> = OnceLock::new();
    FORM_CELL.get_or_init(|| {
        let mut sources = flowform_model::Sources::new();
        sources.insert("forms/everything.yaml", FORM);
        let (model, diags) = flowform_model::load_and_check(&sources);
        assert!(diags.is_empty(), "{diags:?}");
        flowform_forms::CompiledForm::compile(&model.forms["everything"]).expect("compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let _ = form().validate(&value, flowform_forms::Lang::En);
});
