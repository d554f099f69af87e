//! FormDef → JSON Schema (draft 2020-12).

use flowform_model::{FieldDef, FieldType, FormDef};
use serde_json::{Map, Value, json};

/// Upper bounds applied when a form gives none, so no field takes unbounded input.
pub const DEFAULT_MAX_STRING: u64 = 1_000;
pub const DEFAULT_MAX_TEXT: u64 = 20_000;
pub const MAX_SIGNATURE: u64 = 500_000;
pub const DEFAULT_MAX_ITEMS: u64 = 200;

pub fn form_schema(def: &FormDef) -> Value {
    let mut schema = object_schema(&def.fields);
    if let Value::Object(m) = &mut schema {
        m.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        m.insert("title".into(), json!(def.title.get("en", &def.name)));
        m.insert("x-label".into(), json!(def.title));
        m.insert("$id".into(), json!(format!("urn:flowform:form:{}", def.name)));
    }
    schema
}

fn object_schema(fields: &[FieldDef]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in fields {
        props.insert(f.name.clone(), field_schema(f));
        // `required` together with `visible_when` is enforced only while visible,
        // which a static `required` list cannot express.
        if f.required && f.visible_when.is_none() {
            required.push(json!(f.name));
        }
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn field_schema(f: &FieldDef) -> Value {
    let mut s = Map::new();
    let mut put = |k: &str, v: Value| {
        s.insert(k.to_string(), v);
    };
    match f.field_type {
        FieldType::String | FieldType::Text => {
            put("type", json!("string"));
            let cap = if f.field_type == FieldType::Text { DEFAULT_MAX_TEXT } else { DEFAULT_MAX_STRING };
            if let Some(n) = f.min_length {
                put("minLength", json!(n));
            }
            put("maxLength", json!(f.max_length.unwrap_or(cap)));
            if let Some(p) = &f.pattern {
                put("pattern", json!(p.value));
            }
        }
        FieldType::Integer | FieldType::Number => {
            put("type", json!(if f.field_type == FieldType::Integer { "integer" } else { "number" }));
            if let Some(n) = f.min {
                put("minimum", num(n));
            }
            if let Some(n) = f.max {
                put("maximum", num(n));
            }
        }
        FieldType::Boolean => put("type", json!("boolean")),
        FieldType::Enum => {
            let options: Vec<Value> = f.options.iter().map(|o| json!(o.value)).collect();
            if f.multiple {
                put("type", json!("array"));
                put("items", json!({"enum": options}));
                put("uniqueItems", json!(true));
            } else {
                put("type", json!("string"));
                put("enum", Value::Array(options));
            }
        }
        FieldType::Date => {
            put("type", json!("string"));
            put("format", json!("date"));
        }
        FieldType::Datetime => {
            put("type", json!("string"));
            put("format", json!("date-time"));
        }
        FieldType::Ref => {
            put("type", json!("string"));
            put("minLength", json!(1));
            put("maxLength", json!(200));
            if let Some(r) = &f.record {
                put("x-record", json!(r.value));
            }
        }
        FieldType::Files => {
            put("type", json!("array"));
            put("maxItems", json!(f.max.map_or(20, |m| m as u64)));
            let mut size = json!({"type": "integer", "minimum": 0});
            if let Some(max) = f.max_size {
                size["maximum"] = json!(max);
            }
            put(
                "items",
                json!({
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 255},
                        "type": {"type": "string", "maxLength": 255},
                        "size": size,
                        "id": {"type": "string", "minLength": 1, "maxLength": 200}
                    },
                    "required": ["name", "size", "id"],
                    "additionalProperties": false
                }),
            );
        }
        FieldType::Location => {
            put("type", json!("object"));
            put(
                "properties",
                json!({
                    "tag": {"type": "string", "minLength": 1, "maxLength": 200},
                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                    "lng": {"type": "number", "minimum": -180, "maximum": 180},
                    "accuracy": {"type": "number", "minimum": 0},
                    "label": {"type": "string", "maxLength": 200}
                }),
            );
            put("additionalProperties", json!(false));
            put("anyOf", json!([{"required": ["tag"]}, {"required": ["lat", "lng"]}]));
        }
        FieldType::Signature => {
            put("type", json!("string"));
            put("pattern", json!("^data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+$"));
            put("maxLength", json!(MAX_SIGNATURE));
        }
        FieldType::Group => {
            put("type", json!("array"));
            if let Some(n) = f.min {
                put("minItems", json!(n as u64));
            }
            put("maxItems", json!(f.max.map_or(DEFAULT_MAX_ITEMS, |m| m as u64)));
            put("items", object_schema(&f.fields));
        }
    }
    s.insert("title".into(), json!(f.label.get("en", &f.name)));
    s.insert("x-label".into(), json!(f.label));
    Value::Object(s)
}

fn num(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 { json!(n as i64) } else { json!(n) }
}
