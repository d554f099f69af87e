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

macro_rules! diag_codes {
    ($($variant:ident = ($name:literal, $doc:literal),)*) => {
        /// What kind of problem a diagnostic reports: stable, snake_case in
        /// output; the table under "Diagnostic codes" in docs/definitions.md
        /// lists exactly these (a test compares them).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum DiagCode {
            $(#[doc = $doc] $variant,)*
        }

        impl DiagCode {
            pub const ALL: &'static [DiagCode] = &[$(DiagCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(DiagCode::$variant => $name,)*
                }
            }

            /// What the code means, in words (the table of docs/definitions.md).
            pub fn doc(self) -> &'static str {
                match self {
                    $(DiagCode::$variant => $doc,)*
                }
            }
        }
    };
}

diag_codes! {
    YamlSyntax = ("yaml_syntax", "the file is not valid YAML"),
    YamlTab = ("yaml_tab", "a tab in a line's indentation (YAML indents with spaces only), reported at the tab"),
    DuplicateKey = ("duplicate_key", "a key appears twice in one mapping"),
    EmptyFile = ("empty_file", "the file is empty"),
    UnknownKey = ("unknown_key", "a key that does not exist here (with a suggestion)"),
    MissingKey = ("missing_key", "a required key is missing"),
    WrongType = ("wrong_type", "a value of the wrong kind (a list where a name is expected, …)"),
    InvalidName = ("invalid_name", "a name that is not lowercase snake_case"),
    InvalidValue = ("invalid_value", "a value out of its range (`assign: someone`, negative lengths, `min > max`)"),
    UnknownDefinition = ("unknown_definition", "a definitions file that is neither a workflow, a record type, a ledger nor settings"),
    UnknownRecordType = ("unknown_record_type", "a `ref` field or a ledger dimension names a record type that does not exist"),
    UnknownLedger = ("unknown_ledger", "a report's `source` names a ledger that is not defined"),
    UnknownReport = ("unknown_report", "a dashboard tile names a report that is not defined"),
    UnknownDimension = ("unknown_dimension", "a ledger `threshold` names a dimension the ledger does not have"),
    InvalidParent = ("invalid_parent", "a record type's `parent` is not a `ref` to the type itself"),
    DuplicateName = ("duplicate_name", "two workflows, forms, roles, teams, transitions or options with one name"),
    UnknownLanguage = ("unknown_language", "a label language other than `zh-CN` / `en`"),
    UnknownState = ("unknown_state", "a reference to something not defined"),
    UnknownRole = ("unknown_role", "a reference to something not defined"),
    UnknownTeam = ("unknown_team", "a reference to something not defined"),
    UnknownForm = ("unknown_form", "a reference to something not defined"),
    UnknownScript = ("unknown_script", "a reference to something not defined"),
    UnknownWorkflow = ("unknown_workflow", "a reference to something not defined"),
    UnknownField = ("unknown_field", "a condition names a field the form does not have"),
    SelfCondition = ("self_condition", "a field's condition depends on the field itself"),
    UnknownFieldType = ("unknown_field_type", "a field `type` that does not exist"),
    KeyNotForType = ("key_not_for_type", "a key that does not apply to the field's type"),
    InvalidPattern = ("invalid_pattern", "a `pattern` that is not a regular expression"),
    InvalidDefault = ("invalid_default", "a `default` that does not fit the field"),
    InvalidCondition = ("invalid_condition", "a `visible_when` / `required_when` that cannot be read"),
    UnreachableState = ("unreachable_state", "no path from `initial` leads to the state"),
    DeadEndState = ("dead_end_state", "a non-final state that no transition leaves"),
    TransitionFromFinal = ("transition_from_final", "a transition leaves a final state"),
    NoFinalState = ("no_final_state", "the workflow has no final state"),
    NoWorkflows = ("no_workflows", "the application defines no workflow"),
    RhaiSyntax = ("rhai_syntax", "a script or `when` condition does not compile; a bracket opened and never closed is reported where it opens (“this `{` is never closed: a `}` is missing”)"),
    RhaiLibrary = ("rhai_library", "a file under `rules/lib/` holds something besides functions"),
    NotAnOption = ("not_an_option", "an `update:` sets an option that the record's field does not have; a `where` compares with an option the field does not have"),
    TypeMismatch = ("type_mismatch", "a `where` compares a number field with text or a text field with a number (never true); `every`/`first_due` name a field of the wrong type"),
    UnknownTemplate = ("unknown_template", "a reference to something not defined"),
    UnknownCalendar = ("unknown_calendar", "a reference to something not defined"),
    UnknownChannel = ("unknown_channel", "a reference to something not defined"),
    UnknownTransition = ("unknown_transition", "a reference to something not defined"),
    UnknownTemplateVariable = ("unknown_template_variable", "a template uses a name notifications do not provide"),
    TemplateSyntax = ("template_syntax", "a template does not compile"),
    UnknownTimezone = ("unknown_timezone", "a time zone (of the app, a schedule or a calendar) is not known"),
    TransitionNotFromState = ("transition_not_from_state", "a timed step takes a transition that does not start from its state"),
    TimerOnFinalState = ("timer_on_final_state", "a final state has an SLA or timers"),
    InvalidForm = ("invalid_form", "a form that does not make a valid JSON Schema (report it as a bug)"),
    OutOfRange = ("out_of_range", "a number past its limit (`max_quantity`)"),
    NotAFile = ("not_a_file", "a path under `definitions/`, `forms/` or `rules/` that is not a regular file (a pipe, socket, device); it is not read"),
    FileTooLarge = ("file_too_large", "a definition file over 1 MiB"),
    NotUtf8 = ("not_utf8", "a file that is not UTF-8 text (at the first invalid byte)"),
    Unreadable = ("unreadable", "a file or folder that could not be read at all (permissions)"),
    GrantsNothing = ("grants_nothing", "a record type grants no operation to any role: only admins may read or change its records"),
}

impl std::fmt::Display for DiagCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DiagCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for DiagCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for DiagCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// One problem in the definitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Path relative to the application directory, with `/` separators.
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// Stable, snake_case in output; documented in docs/definitions.md.
    pub code: DiagCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &str, pos: Pos, code: DiagCode, message: impl Into<String>) -> Self {
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
    diags.sort_by(|a, b| (&a.file, a.line, a.column, a.code.as_str()).cmp(&(&b.file, b.line, b.column, b.code.as_str())));
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
