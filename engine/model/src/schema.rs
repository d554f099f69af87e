//! JSON Schemas of the definition language, generated from [`crate::grammar`]
//! (the declarations the reader uses) and the names of a bundle, for the YAML
//! language server: completion of keys and of declared names, a misspelt key
//! flagged as it is typed.
//!
//! Draft-07, which editors support best. One schema per kind of file, and
//! `definition.json`, which chooses the kind by the key that names it, as the
//! loader does.

use crate::defs::{MAX_MINUTES, Model};
use crate::grammar::{self, DEFINITION_KINDS, Decl, Refers, Shape};
use serde_json::{Map, Value, json};

/// The kinds written by `flowform schema`, with the declaration of each file.
pub const KINDS: &[&str] = &["workflow", "form", "record", "ledger", "schedule", "notification", "report", "dashboard", "app", "calendar", "definition"];

/// Every schema, as `(kind, schema)`, for the bundle `model` (its names are
/// offered where a key refers to one).
pub fn schemas(model: &Model) -> Vec<(&'static str, Value)> {
    let g = Gen { model };
    KINDS
        .iter()
        .map(|kind| {
            let body = match *kind {
                "workflow" => g.root(&[&grammar::WORKFLOW], json!({"$ref": "#/definitions/workflow"})),
                "form" => g.root(&[&grammar::FORM], json!({"$ref": "#/definitions/form"})),
                "record" => g.root(&[&grammar::RECORD], json!({"$ref": "#/definitions/record"})),
                "ledger" => g.root(&[&grammar::LEDGER], json!({"$ref": "#/definitions/ledger"})),
                "schedule" => g.root(&[&grammar::SCHEDULE], json!({"$ref": "#/definitions/schedule"})),
                "report" => g.root(&[&grammar::REPORT], json!({"$ref": "#/definitions/report"})),
                "dashboard" => g.root(&[&grammar::DASHBOARD], json!({"$ref": "#/definitions/dashboard"})),
                "app" => g.root(&[&grammar::SETTINGS], json!({"$ref": "#/definitions/app"})),
                "calendar" => g.root(&[&grammar::CALENDAR], json!({"$ref": "#/definitions/calendar"})),
                "notification" => g.root(
                    &[&grammar::TEMPLATE, &grammar::WEBHOOK],
                    json!({"if": {"required": ["webhook"]}, "then": {"$ref": "#/definitions/webhook"}, "else": {"$ref": "#/definitions/template"}}),
                ),
                _ => {
                    // As the loader: `record:` without `workflow:` is a record type, then
                    // the first kind whose key is there; otherwise a settings file.
                    let mut chain = json!({"$ref": "#/definitions/app"});
                    for (key, decl) in DEFINITION_KINDS.iter().rev() {
                        let test =
                            if *key == "record" { json!({"required": ["record"], "not": {"required": ["workflow"]}}) } else { json!({"required": [key]}) };
                        chain = json!({"if": test, "then": {"$ref": format!("#/definitions/{}", decl.id)}, "else": chain});
                    }
                    let mut decls: Vec<&'static Decl> = DEFINITION_KINDS.iter().map(|(_, d)| *d).collect();
                    decls.push(&grammar::SETTINGS);
                    g.root(&decls, chain)
                }
            };
            (*kind, body)
        })
        .collect()
}

struct Gen<'a> {
    model: &'a Model,
}

impl Gen<'_> {
    /// A schema file: `body` with the definitions of every declaration reachable from `decls`.
    fn root(&self, decls: &[&'static Decl], body: Value) -> Value {
        let mut seen: Vec<&'static Decl> = Vec::new();
        for d in decls {
            reach(d, &mut seen);
        }
        let definitions: Map<String, Value> = seen.iter().map(|d| (d.id.to_string(), self.decl(d))).collect();
        let mut out = Map::new();
        out.insert("$schema".into(), json!("http://json-schema.org/draft-07/schema#"));
        out.insert("title".into(), json!(format!("Flowform: {}", decls.iter().map(|d| d.id).collect::<Vec<_>>().join(", "))));
        if let Value::Object(b) = body {
            out.extend(b);
        }
        out.insert("definitions".into(), Value::Object(definitions));
        Value::Object(out)
    }

    fn decl(&self, d: &Decl) -> Value {
        let mut properties = Map::new();
        for k in d.keys {
            let mut schema = self.shape(&k.shape);
            if let Value::Object(o) = &mut schema {
                o.insert("description".into(), json!(format!("{}\n\n{}", k.en, k.zh)));
            }
            properties.insert(k.name.to_string(), schema);
        }
        let required: Vec<&str> = d.keys.iter().filter(|k| k.required).map(|k| k.name).collect();
        let mut obj = json!({
            "type": "object",
            "description": format!("{}\n\n{}", d.en, d.zh),
            "properties": properties,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            obj["required"] = json!(required);
        }
        if d.id == "field" {
            obj["allOf"] = field_type_rules();
        }
        if d.or.is_empty() {
            obj
        } else {
            let mut any = vec![obj];
            any.extend(d.or.iter().map(|s| self.shape(s)));
            json!({"anyOf": any})
        }
    }

    fn shape(&self, s: &Shape) -> Value {
        match s {
            Shape::Text => json!({"type": ["string", "number"]}),
            Shape::Name => name(),
            Shape::Names => one_or_list(name()),
            Shape::NamePair => json!({"type": "array", "items": name(), "minItems": 2, "maxItems": 2}),
            Shape::Int => json!({"type": "integer"}),
            Shape::Number => json!({"type": "number"}),
            Shape::Bool => json!({"type": "boolean"}),
            Shape::Label => json!({"anyOf": [
                {"type": "string"},
                {"type": "object", "properties": {"zh-CN": {"type": "string"}, "en": {"type": "string"}}, "additionalProperties": false}
            ]}),
            Shape::Condition => json!({"type": ["string", "number"]}),
            Shape::Minutes => json!({"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_MINUTES}, name()]}),
            Shape::Word(words) => json!({"enum": words}),
            Shape::Words(words) => one_or_list(json!({"enum": words})),
            Shape::Ref(r) => self.refers(*r),
            Shape::Refs(r) => one_or_list(self.refers(*r)),
            Shape::Obj(d) => reference(d),
            Shape::Objs(d) => one_or_list(reference(d)),
            Shape::List(d) => json!({"type": "array", "items": reference(d)}),
            Shape::Named(d) => json!({"type": "object", "propertyNames": name(), "additionalProperties": reference(d)}),
            Shape::Data => json!({"type": "object"}),
            Shape::MapOf(value) => json!({"type": "object", "propertyNames": name(), "additionalProperties": self.shape(value)}),
            Shape::Any => json!({}),
            Shape::Null => json!({"type": "null"}),
            Shape::Either(a, b) => json!({"anyOf": [self.shape(a), self.shape(b)]}),
            Shape::Texts => json!({"type": "array", "items": {"type": ["string", "number"]}}),
            Shape::Items(item) => json!({"type": "array", "items": self.shape(item)}),
            Shape::Recipients => {
                let mut words = vec!["requester".to_string(), "assignee".into(), "team".into()];
                words.extend(self.model.roles.keys().map(|r| format!("role:{r}")));
                one_or_list(json!({"anyOf": [{"enum": words}, {"type": "string", "pattern": "^(user|field):.+$"}]}))
            }
            Shape::Audiences => {
                let mut words = vec!["requester".to_string(), "assignee".into(), "team".into(), "department".into()];
                words.extend(self.model.roles.keys().map(|r| format!("role:{r}")));
                one_or_list(json!({"enum": words}))
            }
        }
    }

    /// The names of the bundle a key may refer to; any name when the bundle
    /// keeps them elsewhere (teams as records) or declares none.
    fn refers(&self, r: Refers) -> Value {
        let m = self.model;
        let roles = m.roles.keys().cloned();
        let names: Vec<String> = match r {
            Refers::Role => roles.collect(),
            Refers::ActorRole => roles.chain(crate::defs::RELATIONAL_ROLES.iter().map(|s| s.to_string())).collect(),
            Refers::RoleOrAll => roles.chain([crate::defs::EVERYONE.to_string()]).collect(),
            Refers::Team if m.app.teams_from.is_some() => Vec::new(),
            Refers::Team => m.teams.keys().cloned().collect(),
            Refers::Form => m.forms.keys().cloned().collect(),
            Refers::Record => m.record_types.keys().cloned().collect(),
            Refers::RecordKind => {
                let mut kinds: Vec<String> = m.record_types.keys().cloned().chain(m.workflows.values().filter_map(|w| w.record.clone())).collect();
                kinds.sort();
                kinds.dedup();
                kinds
            }
            Refers::Workflow => m.workflows.keys().cloned().collect(),
            Refers::Template => m.templates.keys().cloned().collect(),
            Refers::Calendar => m.calendars.keys().cloned().collect(),
            Refers::Ledger => m.ledgers.keys().cloned().collect(),
            Refers::Report => m.reports.keys().cloned().collect(),
            // Files under rules/lib/ hold functions for other scripts, never a hook.
            Refers::Rule => m.scripts.keys().filter(|k| !k.starts_with("lib/")).cloned().collect(),
            Refers::Channel => ["inbox", "email"].into_iter().map(String::from).chain(m.webhooks.keys().cloned()).collect(),
        };
        if names.is_empty() { if r == Refers::Rule { json!({"type": "string"}) } else { name() } } else { json!({"enum": names}) }
    }
}

fn name() -> Value {
    json!({"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "maxLength": 64})
}

fn one_or_list(item: Value) -> Value {
    json!({"anyOf": [item.clone(), {"type": "array", "items": item}]})
}

fn reference(d: &Decl) -> Value {
    json!({"$ref": format!("#/definitions/{}", d.id)})
}

/// Every declaration reachable from `d`, each once.
fn reach(d: &'static Decl, seen: &mut Vec<&'static Decl>) {
    if seen.iter().any(|s| std::ptr::eq(*s, d)) {
        return;
    }
    seen.push(d);
    fn walk(s: &'static Shape, seen: &mut Vec<&'static Decl>) {
        match s {
            Shape::Obj(d) | Shape::Objs(d) | Shape::List(d) | Shape::Named(d) => reach(d, seen),
            Shape::Either(a, b) => {
                walk(a, seen);
                walk(b, seen);
            }
            Shape::Items(i) | Shape::MapOf(i) => walk(i, seen),
            _ => {}
        }
    }
    for k in d.keys {
        walk(&k.shape, seen);
    }
    for s in d.or {
        walk(s, seen);
    }
}

/// Keys that belong to some field types only: `if type is T then not K`.
fn field_type_rules() -> Value {
    let all: Vec<&str> = {
        let mut v: Vec<&str> = crate::defs::FieldType::ALL.iter().flat_map(|(_, t)| t.specific_keys().iter().copied()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let rules: Vec<Value> = crate::defs::FieldType::ALL
        .iter()
        .map(|(n, t)| {
            let banned: Map<String, Value> = all.iter().filter(|k| !t.specific_keys().contains(k)).map(|k| (k.to_string(), json!(false))).collect();
            json!({"if": {"properties": {"type": {"const": n}}, "required": ["type"]}, "then": {"properties": banned}})
        })
        .collect();
    Value::Array(rules)
}
