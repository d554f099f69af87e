//! Flowform forms: a YAML form definition compiled to a JSON Schema (draft
//! 2020-12) and a UI description, and validation of submitted data with
//! field-level errors in the user's language.
//!
//! Validation is the schema (checked by `jsonschema`) plus what a schema cannot
//! say well: defaults, fields hidden by `visible_when` (their values are dropped),
//! and `required_when`. Pure: no I/O.

mod messages;
mod schema;
mod ui;

use flowform_model::DiagCode;
use flowform_model::{Diagnostic, FieldDef, FieldType, FormDef};
use serde::Serialize;
use serde_json::{Map, Value};

pub use messages::Lang;

/// A problem with one field of submitted data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field: `description`, `parts[1].quantity`; empty for the whole form.
    pub field: String,
    /// Stable code: `required`, `too_short`, `not_an_option`, ...
    pub code: &'static str,
    pub message: String,
}

/// A form ready to validate data and to describe itself to clients.
#[derive(Debug)]
pub struct CompiledForm {
    pub def: FormDef,
    pub json_schema: Value,
    pub ui: Value,
    validator: jsonschema::Validator,
}

impl CompiledForm {
    /// Builds the schema and the validator. Failure is a bug in the generator or
    /// a definition the model checks did not catch; it is reported as a diagnostic.
    pub fn compile(def: &FormDef) -> Result<CompiledForm, Diagnostic> {
        let json_schema = schema::form_schema(def);
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&json_schema)
            .map_err(|e| Diagnostic::new(&def.file, def.pos, DiagCode::InvalidForm, format!("form `{}` does not make a valid schema: {e}", def.name)))?;
        Ok(CompiledForm { ui: ui::form_ui(def), json_schema, validator, def: def.clone() })
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Validates submitted data. Returns the cleaned data (defaults applied,
    /// empty values and hidden fields removed) or every field error.
    pub fn validate(&self, input: &Value, lang: Lang) -> Result<Value, Vec<FieldError>> {
        self.validate_with(input, lang, Mode::Submission)
    }

    /// Checks data already stored (e.g. before migrating an instance to a new
    /// version): every value must still fit its field, and statically required
    /// fields must be there, but `required_when` is not applied, because rules may
    /// have changed the fields it reads since the form was submitted.
    pub fn validate_stored(&self, data: &Value, lang: Lang) -> Result<Value, Vec<FieldError>> {
        self.validate_with(data, lang, Mode::Stored)
    }

    fn validate_with(&self, input: &Value, lang: Lang, mode: Mode) -> Result<Value, Vec<FieldError>> {
        let Value::Object(obj) = input else {
            return Err(vec![FieldError { field: String::new(), code: "not_an_object", message: lang.msg_not_object() }]);
        };
        let mut errors = Vec::new();
        let cleaned = clean(&self.def.fields, obj, "", lang, mode, &mut errors);
        let cleaned = Value::Object(cleaned);
        // Valid input (the common case) is checked without collecting errors.
        if errors.is_empty() && self.validator.is_valid(&cleaned) {
            return Ok(cleaned);
        }
        for e in self.validator.iter_errors(&cleaned) {
            let path = pointer_to_path(&e.instance_path().to_string());
            let fe = messages::describe(&path, e.kind(), &self.def.fields, lang);
            if !errors.iter().any(|x: &FieldError| x.field == fe.field) {
                errors.push(fe);
            }
        }
        if errors.is_empty() { Ok(cleaned) } else { Err(errors) }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Applies defaults, drops empty values and hidden fields, checks `required_when`.
/// Unknown keys are kept so that the schema reports them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Submission,
    Stored,
}

fn clean(fields: &[FieldDef], obj: &Map<String, Value>, prefix: &str, lang: Lang, mode: Mode, errors: &mut Vec<FieldError>) -> Map<String, Value> {
    let mut out = Map::with_capacity(obj.len().max(fields.len()));
    for (k, v) in obj {
        if !is_empty(v) {
            out.insert(k.clone(), v.clone());
        }
    }
    for f in fields {
        if let Some(d) = &f.default
            && !out.contains_key(&f.name)
        {
            out.insert(f.name.clone(), d.value.clone());
        }
    }
    // A whole number sent as `1.0` is the number 1: rules and the store see an integer.
    for f in fields {
        if f.field_type == FieldType::Integer
            && let Some(Value::Number(n)) = out.get(&f.name)
            && n.as_i64().is_none()
            && let Some(x) = n.as_f64()
            && x.fract() == 0.0
            && x.abs() < 9_007_199_254_740_992.0
        {
            out.insert(f.name.clone(), Value::from(x as i64));
        }
    }
    // Conditions read the data as submitted (with defaults).
    // (Copied only when a field has a condition: most forms have none.)
    let conditional = fields.iter().any(|f| f.visible_when.is_some() || f.required_when.is_some());
    let snapshot = if conditional { Value::Object(out.clone()) } else { Value::Null };
    for f in fields {
        if !conditional && f.field_type != FieldType::Group {
            continue;
        }
        let path = if prefix.is_empty() { f.name.clone() } else { format!("{prefix}.{}", f.name) };
        let visible = f.visible_when.as_ref().is_none_or(|(_, c)| c.eval(&snapshot));
        if !visible {
            out.remove(&f.name);
            continue;
        }
        let required_now = mode == Mode::Submission && f.required_when.as_ref().is_some_and(|(_, c)| c.eval(&snapshot));
        if required_now && !out.contains_key(&f.name) {
            errors.push(FieldError { field: path.clone(), code: "required", message: lang.msg_required(&f.label) });
        }
        if f.field_type == FieldType::Group
            && let Some(Value::Array(items)) = out.get(&f.name)
        {
            let items: Vec<Value> = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(o) => Value::Object(clean(&f.fields, o, &format!("{path}[{i}]"), lang, mode, errors)),
                    other => other.clone(),
                })
                .collect();
            out.insert(f.name.clone(), Value::Array(items));
        }
    }
    out
}

/// `/parts/1/quantity` → `parts[1].quantity`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

#[cfg(test)]
mod tests;
