//! FormDef → UI description for generated web and mobile forms.

use flowform_model::{FieldDef, FieldType, FormDef};
use serde_json::{Map, Value, json};

pub fn form_ui(def: &FormDef) -> Value {
    json!({
        "form": def.name,
        "title": def.title,
        "fields": def.fields.iter().map(field_ui).collect::<Vec<_>>(),
    })
}

fn default_widget(f: &FieldDef) -> &'static str {
    match f.field_type {
        FieldType::String => "input",
        FieldType::Text => "textarea",
        FieldType::Integer | FieldType::Number => "number",
        FieldType::Boolean => "switch",
        FieldType::Enum if f.multiple => "checkboxes",
        FieldType::Enum if f.options.len() <= 4 => "radio",
        FieldType::Enum => "select",
        FieldType::Date => "date",
        FieldType::Datetime => "datetime",
        FieldType::Ref => "record_picker",
        FieldType::Files => "file_upload",
        FieldType::Location => "location",
        FieldType::Signature => "signature_pad",
        FieldType::Group => "repeater",
    }
}

fn field_ui(f: &FieldDef) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(f.name));
    m.insert("type".into(), json!(f.field_type.name()));
    m.insert("label".into(), json!(f.label));
    m.insert("widget".into(), json!(f.widget.as_deref().unwrap_or(default_widget(f))));
    m.insert("required".into(), json!(f.required));
    if !f.help.is_empty() {
        m.insert("help".into(), json!(f.help));
    }
    if !f.placeholder.is_empty() {
        m.insert("placeholder".into(), json!(f.placeholder));
    }
    if let Some(d) = &f.default {
        m.insert("default".into(), d.value.clone());
    }
    if let Some((src, cond)) = &f.visible_when {
        m.insert("visible_when".into(), json!({"source": src.value, "condition": cond}));
    }
    if let Some((src, cond)) = &f.required_when {
        m.insert("required_when".into(), json!({"source": src.value, "condition": cond}));
    }
    for (k, v) in [("min_length", f.min_length), ("max_length", f.max_length), ("max_size", f.max_size)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [("min", f.min), ("max", f.max)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(p) = &f.pattern {
        m.insert("pattern".into(), json!(p.value));
    }
    if let Some(u) = &f.unit {
        m.insert("unit".into(), json!(u));
    }
    if f.field_type == FieldType::Enum {
        m.insert("multiple".into(), json!(f.multiple));
        m.insert("options".into(), f.options.iter().map(|o| json!({"value": o.value, "label": o.label})).collect());
    }
    if let Some(r) = &f.record {
        m.insert("record".into(), json!(r.value));
    }
    if let Some(a) = &f.accept {
        m.insert("accept".into(), json!(a));
    }
    if f.field_type == FieldType::Group {
        m.insert("fields".into(), f.fields.iter().map(field_ui).collect());
    }
    Value::Object(m)
}
