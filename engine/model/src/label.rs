//! Labels in several languages.

use serde::Serialize;
use std::collections::BTreeMap;

/// The languages labels may be written in. The first is the fallback.
pub const LANGUAGES: &[&str] = &["zh-CN", "en"];

/// A text in several languages: `{zh-CN: 未接单, en: Unaccepted}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Label(BTreeMap<String, String>);

impl Label {
    /// The same text for every language.
    pub fn plain(text: &str) -> Self {
        Label(LANGUAGES.iter().map(|l| (l.to_string(), text.to_string())).collect())
    }

    pub fn set(&mut self, lang: &str, text: String) {
        self.0.insert(lang.to_string(), text);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text in `lang`, falling back to any language written, then to `default`.
    pub fn get<'a>(&'a self, lang: &str, default: &'a str) -> &'a str {
        self.0.get(lang).or_else(|| LANGUAGES.iter().find_map(|l| self.0.get(*l))).map(String::as_str).unwrap_or(default)
    }

    /// The label, or the name itself in every language when none was written.
    pub fn or_name(&self, name: &str) -> Label {
        if self.is_empty() { Label::plain(name) } else { self.clone() }
    }
}
