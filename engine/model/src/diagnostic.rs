//! Diagnostics: what the definition pipeline reports to business staff.
//!
//! Every problem found in the definition files becomes one [`Diagnostic`] with a
//! file, a 1-based line and column, a stable `code`, a plain message and, where the
//! pipeline can guess the fix, a hint. The pipeline collects all of them in one pass.

use serde::Serialize;
use std::fmt::Write as _;

/// A position in a definition file, 1-based like editors show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub const fn new(line: u32, column: u32) -> Self {
        Pos { line, column }
    }
}

/// One problem in the definitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Path relative to the application directory, with `/` separators.
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// Stable, snake_case; documented in docs/definitions.md.
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &str, pos: Pos, code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic { file: file.to_string(), line: pos.line, column: pos.column, code, message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    /// Renders the diagnostic like a compiler does: location, message, the source
    /// line with a caret under the column, and the hint.
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "error[{}]: {}", self.code, self.message);
        let _ = writeln!(out, "  --> {}:{}:{}", self.file, self.line, self.column);
        if let Some(text) = source.and_then(|s| s.lines().nth(self.line.saturating_sub(1) as usize)) {
            let number = self.line.to_string();
            let pad = " ".repeat(number.len());
            let caret_pad: String = text
                .chars()
                .take(self.column.saturating_sub(1) as usize)
                .map(|c| {
                    if c == '\t' {
                        '\t'
                    } else if is_wide(c) {
                        '　'
                    } else {
                        ' '
                    }
                })
                .collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {text}");
            let _ = writeln!(out, "{pad} | {caret_pad}^");
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
        out
    }
}

/// East Asian wide characters take two columns in a terminal; an ideographic
/// space under them keeps the caret aligned.
fn is_wide(c: char) -> bool {
    matches!(c as u32, 0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6)
}

/// Sorts diagnostics by file and position so output is stable.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| (&a.file, a.line, a.column, a.code).cmp(&(&b.file, b.line, b.column, b.code)));
}

/// "did you mean" for a misspelt name: the closest candidate, if it is close enough.
pub fn suggest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(wrong, candidate);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// A hint sentence from [`suggest`], or a list of what is allowed when nothing is close.
pub fn did_you_mean<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str> + Clone) -> Option<String> {
    if let Some(best) = suggest(wrong, candidates.clone()) {
        return Some(format!("did you mean `{best}`?"));
    }
    let all: Vec<&str> = candidates.into_iter().collect();
    if all.is_empty() {
        None
    } else if all.len() <= 12 {
        Some(format!("expected one of: {}", all.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")))
    } else {
        None
    }
}
