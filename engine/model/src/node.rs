//! A YAML document as a tree of nodes that each know their position.
//!
//! serde-saphyr parses (rejecting duplicate keys, with YAML 1.2 booleans so `NO`
//! stays a string); we keep our own tree so the loader can report *every* problem
//! in a file instead of stopping at the first one, as serde derive would.

use crate::DiagCode;
use crate::diagnostic::{Diagnostic, Pos};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order.
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Looks up a key in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node as plain JSON (positions dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.scalar_text(), v.to_json())).collect()),
        }
    }

    /// A scalar's text (keys are usually strings, but `1:` is an integer key).
    pub fn scalar_text(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".into(),
            Value::Seq(_) | Value::Map(_) => String::new(),
        }
    }
}

/// Parses one YAML file. An empty file is a null node.
pub fn parse(file: &str, text: &str) -> Result<Node, Diagnostic> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| tab_error(file, text, &e).unwrap_or_else(|| yaml_error(file, &e)))
}

/// A tab in a line's indentation, reported at the tab itself (the parser
/// reports the first character after the indentation, which sends people
/// looking in the wrong place).
fn tab_error(file: &str, text: &str, error: &serde_saphyr::Error) -> Option<Diagnostic> {
    if !error.to_string().contains("tab") {
        return None;
    }
    let near = error.location().map_or(1, |l| l.line() as usize);
    // The reported line first, then the lines before it.
    let lines: Vec<&str> = text.lines().collect();
    let candidates = (1..=near.min(lines.len())).rev();
    for line in candidates {
        let content = lines[line - 1];
        let indent: &str = &content[..content.len() - content.trim_start().len()];
        if let Some(at) = indent.find('\t') {
            let column = indent[..at].chars().count() as u32 + 1;
            return Some(
                Diagnostic::new(
                    file,
                    Pos::new(line as u32, column),
                    DiagCode::YamlTab,
                    "YAML: a tab in the indentation; YAML indents with spaces only".to_string(),
                )
                .with_hint(Some("replace the tab with spaces (most editors: “convert indentation to spaces”)".to_string())),
            );
        }
    }
    None
}

fn yaml_error(file: &str, error: &serde_saphyr::Error) -> Diagnostic {
    let pos = error.location().map(|l| Pos::new(l.line() as u32, l.column() as u32)).unwrap_or(Pos::new(1, 1));
    let full = error.to_string();
    // The crate's Display repeats the location and adds a snippet; keep the sentence.
    let first = full.lines().next().unwrap_or(&full);
    let message = match first.split_once(": ") {
        Some((_, rest)) if first.starts_with("error: line") => rest.to_string(),
        _ => first.trim_start_matches("error: ").to_string(),
    };
    let message = message.split(", set DuplicateKeyPolicy").next().unwrap_or(&message).to_string();
    let (code, hint) = if message.contains("duplicate mapping key") {
        (DiagCode::DuplicateKey, Some("each key may appear only once in a mapping; remove or rename one of them".to_string()))
    } else {
        (DiagCode::YamlSyntax, Some("check indentation, colons and closing brackets around this place".to_string()))
    };
    Diagnostic::new(file, pos, code, format!("YAML: {message}")).with_hint(hint)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node { pos: Pos::new(spanned.referenced.line() as u32, spanned.referenced.column() as u32), value: spanned.value })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}
