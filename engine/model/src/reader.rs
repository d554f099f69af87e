//! Typed reading of [`Node`] trees that records a diagnostic for every problem
//! and keeps going, so one pass reports everything.

use crate::DiagCode;
use crate::diagnostic::{Diagnostic, Pos, did_you_mean};
use crate::grammar::Decl;
use crate::label::Label;
use crate::node::{Node, Value};
use std::cell::RefCell;

/// A value with the position it was written at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sp<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Sp<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Sp { value, pos }
    }
}

impl Sp<String> {
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

/// Collects diagnostics for one file.
pub struct Reader<'a> {
    pub file: &'a str,
    pub diags: &'a mut Vec<Diagnostic>,
    /// Names of definitions that could not be read (a field of an unknown
    /// type): what refers to them is not reported again.
    pub broken: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(file: &'a str, diags: &'a mut Vec<Diagnostic>) -> Self {
        Reader { file, diags, broken: Vec::new() }
    }

    pub fn error(&mut self, pos: Pos, code: DiagCode, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic::new(self.file, pos, code, message).with_hint(hint));
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(node.pos, DiagCode::WrongType, format!("{what} must be {expected}, found {}", node.type_name()), None);
    }

    /// Opens a mapping node; reports and returns `None` for anything else.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<MapView<'n>> {
        match &node.value {
            Value::Map(entries) => Some(MapView::new(node.pos, entries, None)),
            _ => {
                self.wrong_type(node, what, "a mapping (key: value lines)");
                None
            }
        }
    }

    /// Opens a mapping whose keys are declared in `decl` (see [`crate::grammar`]).
    pub fn map_of<'n>(&mut self, node: &'n Node, what: &str, decl: &'static Decl) -> Option<MapView<'n>> {
        let mut view = self.map(node, what)?;
        view.decl = Some(decl);
        Some(view)
    }

    pub fn string(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Str(s) => Some(Sp::new(s.clone(), node.pos)),
            // Numbers and booleans used where text is expected are taken as written.
            Value::Int(i) => Some(Sp::new(i.to_string(), node.pos)),
            Value::Float(f) => Some(Sp::new(f.to_string(), node.pos)),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    /// A name used as an identifier (state, field, role, ...): lowercase snake_case.
    pub fn name(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        let s = self.string(node, what)?;
        self.check_name(&s, what);
        Some(s)
    }

    pub fn check_name(&mut self, s: &Sp<String>, what: &str) {
        if !is_identifier(&s.value) {
            self.error(
                s.pos,
                DiagCode::InvalidName,
                format!("{what} `{}` is not a valid name", s.value),
                Some("use lowercase letters, digits and `_`, starting with a letter (e.g. `in_progress`)".into()),
            );
        }
    }

    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(node, what, "true or false");
                None
            }
        }
    }

    pub fn int(&mut self, node: &Node, what: &str) -> Option<i64> {
        match &node.value {
            Value::Int(i) => Some(*i),
            _ => {
                self.wrong_type(node, what, "an integer");
                None
            }
        }
    }

    pub fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => {
                self.wrong_type(node, what, "a number");
                None
            }
        }
    }

    /// A list of names; a single name is accepted as a list of one.
    pub fn name_list(&mut self, node: &Node, what: &str) -> Vec<Sp<String>> {
        match &node.value {
            Value::Seq(items) => items.iter().filter_map(|item| self.name(item, what)).collect(),
            Value::Str(_) => self.name(node, what).into_iter().collect(),
            _ => {
                self.wrong_type(node, what, "a name or a list of names");
                Vec::new()
            }
        }
    }

    /// A list of field paths (`asset.category`, `day,actor`): names joined by `.` or `,`.
    pub fn path_list(&mut self, node: &Node, what: &str) -> Vec<Sp<String>> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut out = Vec::new();
        for item in items {
            let Some(s) = self.string(item, what) else { continue };
            let valid = s.value.split([',', '.']).map(str::trim).all(is_identifier);
            if valid {
                out.push(s);
            } else {
                self.error(
                    s.pos,
                    DiagCode::InvalidName,
                    format!("{what} `{}` is not a field name or path", s.value),
                    Some("e.g. `department`, `asset.category` or `day,actor`".into()),
                );
            }
        }
        out
    }

    /// A label: either one string (used for every language) or `{zh-CN: ..., en: ...}`.
    pub fn label(&mut self, node: &Node, what: &str) -> Option<Label> {
        match &node.value {
            Value::Str(s) => Some(Label::plain(s)),
            Value::Map(entries) => {
                let mut label = Label::default();
                for (k, v) in entries {
                    let Some(lang) = self.string(k, "a language code") else {
                        continue;
                    };
                    if !crate::label::LANGUAGES.contains(&lang.value.as_str()) {
                        self.error(
                            lang.pos,
                            DiagCode::UnknownLanguage,
                            format!("unknown language `{}` in {what}", lang.value),
                            did_you_mean(&lang.value, crate::label::LANGUAGES.iter().copied()),
                        );
                        continue;
                    }
                    if let Some(text) = self.string(v, what) {
                        label.set(&lang.value, text.value);
                    }
                }
                Some(label)
            }
            _ => {
                self.wrong_type(node, what, "a text or a mapping of language to text");
                None
            }
        }
    }
}

pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_')) && s.len() <= 64
}

/// A mapping being read: remembers which keys were asked for, so that
/// [`MapView::finish`] can report unknown keys with a suggestion.
///
/// A view opened with a declaration ([`Reader::map_of`]) must read exactly
/// the declared keys: debug builds (every test) panic on a key read but not
/// declared, and on a declared key that nothing read before `finish`.
pub struct MapView<'n> {
    pub pos: Pos,
    entries: &'n [(Node, Node)],
    asked: RefCell<Vec<&'static str>>,
    decl: Option<&'static Decl>,
}

impl<'n> MapView<'n> {
    fn new(pos: Pos, entries: &'n [(Node, Node)], decl: Option<&'static Decl>) -> Self {
        MapView { pos, entries, asked: RefCell::new(Vec::new()), decl }
    }

    /// The same mapping, read afresh as the kind `decl` declares.
    pub fn as_kind(&self, decl: &'static Decl) -> MapView<'n> {
        MapView::new(self.pos, self.entries, Some(decl))
    }

    pub fn get(&self, key: &'static str) -> Option<&'n Node> {
        if let Some(decl) = self.decl {
            debug_assert!(decl.key(key).is_some(), "the reader reads `{key}` of {}, which crate::grammar does not declare", decl.id);
        }
        self.asked.borrow_mut().push(key);
        self.entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// Like [`MapView::get`], reporting a missing key.
    pub fn require(&self, r: &mut Reader, key: &'static str, what: &str) -> Option<&'n Node> {
        let found = self.get(key);
        if found.is_none() {
            r.error(self.pos, DiagCode::MissingKey, format!("{what} needs `{key}`"), None);
        }
        found
    }

    /// Declares keys that are allowed without reading them here.
    pub fn allow(&self, keys: &[&'static str]) {
        if let Some(decl) = self.decl {
            debug_assert!(keys.iter().all(|k| decl.key(k).is_some()), "the reader allows keys of {} that crate::grammar does not declare: {keys:?}", decl.id);
        }
        self.asked.borrow_mut().extend_from_slice(keys);
    }

    pub fn entries(&self) -> &'n [(Node, Node)] {
        self.entries
    }

    /// Reports every key that nothing asked for.
    pub fn finish(&self, r: &mut Reader, what: &str) {
        let asked = self.asked.borrow();
        if let Some(decl) = self.decl {
            let unread: Vec<&str> = decl.keys.iter().map(|k| k.name).filter(|k| !asked.contains(k)).collect();
            debug_assert!(unread.is_empty(), "crate::grammar declares keys of {} that the reader never reads: {unread:?}", decl.id);
        }
        for (key, _) in self.entries {
            let text = key.scalar_text();
            if !asked.contains(&text.as_str()) {
                r.error(key.pos, DiagCode::UnknownKey, format!("unknown key `{text}` in {what}"), did_you_mean(&text, asked.iter().copied()));
            }
        }
    }
}
