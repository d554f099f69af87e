//! The files an application is made of, as text. Reading them from disk is the
//! caller's business: this crate does no I/O.

use std::collections::BTreeMap;

/// The top-level folders the pipeline reads.
pub const FOLDERS: &[&str] = &["definitions", "forms", "rules"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Definition,
    Form,
    Script,
}

impl SourceKind {
    /// What a file is, from its path relative to the application directory.
    pub fn of(path: &str) -> Option<SourceKind> {
        let yaml = path.ends_with(".yaml") || path.ends_with(".yml");
        if path.starts_with("definitions/") && yaml {
            Some(SourceKind::Definition)
        } else if path.starts_with("forms/") && yaml {
            Some(SourceKind::Form)
        } else if path.starts_with("rules/") && path.ends_with(".rhai") {
            Some(SourceKind::Script)
        } else {
            None
        }
    }
}

/// `rules/dispatch.rhai` → `dispatch`; `rules/stock/post.rhai` → `stock/post`.
pub fn script_name(path: &str) -> String {
    path.trim_start_matches("rules/").trim_end_matches(".rhai").to_string()
}

/// Path (relative, `/`-separated) → file text, sorted by path so that the
/// content hash and the diagnostics order are stable.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Sources(BTreeMap<String, String>);

impl Sources {
    pub fn new() -> Self {
        Sources::default()
    }

    pub fn insert(&mut self, path: impl Into<String>, text: impl Into<String>) {
        self.0.insert(path.into(), text.into());
    }

    pub fn get(&self, path: &str) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }

    pub fn remove(&mut self, path: &str) -> Option<String> {
        self.0.remove(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, String)> for Sources {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Sources(iter.into_iter().collect())
    }
}
