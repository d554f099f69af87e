//! Flowform rules: Rhai scripts in a hardened sandbox.
//!
//! Every script of a bundle is compiled once, with strict variables, so a typo in
//! a variable name is a `flowform check` error rather than a run-time surprise.
//! Scripts see `record`, `input`, `actor` and `now` and a few pure helpers; they
//! cannot read files, reach the network, `eval` or import modules, and every run
//! is bounded in operations, call depth, expression depth, data sizes and wall
//! time. A script failure is a [`RuleError`] naming the script, file and line.

mod helpers;
mod sandbox;

use flowform_model::DiagCode;
use flowform_model::{Diagnostic, Model, Pos};
use rhai::{AST, Dynamic, Engine, Scope};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

pub use sandbox::Limits;

/// What a script sees. All values are plain JSON.
#[derive(Clone, Debug, Default)]
pub struct ScriptContext {
    /// The instance's data plus `id`, `state`, `team`, `assignee`, `vendor`, `requester`.
    pub record: Value,
    /// The form data of this command (validated).
    pub input: Value,
    /// `{id, roles, teams}`.
    pub actor: Value,
    /// The command's time, RFC 3339.
    pub now: String,
    /// The records the command reads, handed in by the runtime so the
    /// decision stays pure: `{TYPE: {ID: {fields…, id, title, archived}}}`.
    /// `lookup(type, id)` and `find(type, filter)` read them. Shared, never copied per run.
    pub records: std::sync::Arc<Value>,
}

/// Which script failed, where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rule `{script}` failed at {file}:{line}:{column}: {message}")]
pub struct RuleError {
    pub script: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub kind: RuleErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleErrorKind {
    /// Ran past its operation, depth, size or time limit.
    Limit,
    /// Raised an error while running (`throw`, a type mismatch, ...).
    Runtime,
    /// Returned something the caller cannot use.
    BadResult,
}

/// One compiled script, with where its text came from (for error positions).
#[derive(Debug)]
struct Compiled {
    ast: AST,
    /// The fields of `record` the script reads (`record.FIELD`); `None` when
    /// it uses `record` as a whole. Only these are converted for a run.
    record_fields: Option<Vec<String>>,
    /// The same for `input` and `actor` (an empty list: the script does not
    /// mention it, and gets an empty map).
    input_fields: Option<Vec<String>>,
    actor_fields: Option<Vec<String>>,
    file: String,
    /// Added to Rhai's 1-based line/column: non-zero for expressions inline in YAML.
    origin: Pos,
}

impl Compiled {
    fn new(ast: AST, text: &str, file: String, origin: Pos) -> Compiled {
        Compiled {
            ast,
            record_fields: fields_read(text, "record"),
            input_fields: fields_read(text, "input"),
            actor_fields: fields_read(text, "actor"),
            file,
            origin,
        }
    }
}

/// All scripts of a bundle, compiled.
#[derive(Debug)]
pub struct RuleSet {
    engine: Engine,
    scripts: HashMap<String, Compiled>,
    wall_limit: Duration,
}

/// The key of the `when` of the `index`-th trigger of a record type.
pub fn trigger_key(record_type: &str, index: usize) -> String {
    format!("record:{record_type}.{index}.when")
}

/// The key of an inline `when` guard.
pub fn guard_key(workflow: &str, transition: &str) -> String {
    format!("{workflow}.{transition}.when")
}

impl RuleSet {
    /// Compiles every script and inline guard of the model; syntax errors become
    /// diagnostics pointing into the `.rhai` file or the YAML line.
    pub fn compile(model: &Model, limits: Limits) -> (RuleSet, Vec<Diagnostic>) {
        let engine = sandbox::engine(&limits);
        let scope = declared_scope();
        let mut scripts = HashMap::new();
        let mut diags = Vec::new();
        // Shared code: the functions of rules/lib/*.rhai, available to every script and guard.
        let mut library = AST::empty();
        for script in model.scripts.values().filter(|s| is_library(&s.name)) {
            match engine.compile_with_scope(&scope, &script.text) {
                Ok(ast) if <AST as AsRef<[_]>>::as_ref(&ast).is_empty() => library = library.merge(&ast),
                Ok(_) => {
                    // The first line that is not a function, a comment or blank.
                    let line = first_statement_line(&script.text);
                    diags.push(
                        Diagnostic::new(
                            &script.file,
                            Pos::new(line, 1),
                            DiagCode::RhaiLibrary,
                            "a file under rules/lib/ holds only functions (`fn name(…) { … }`)".to_string(),
                        )
                        .with_hint(Some("move this statement into a script, or into a function".into())),
                    );
                }
                Err(e) => diags.push(script_syntax_error(&script.file, &script.text, &e)),
            }
        }
        let with_library = |ast: AST| if library.iter_functions().next().is_some() { library.merge(&ast) } else { ast };
        for script in model.scripts.values().filter(|s| !is_library(&s.name)) {
            match engine.compile_with_scope(&scope, &script.text) {
                Ok(ast) => {
                    scripts.insert(script.name.clone(), Compiled::new(with_library(ast), &script.text, script.file.clone(), Pos::new(0, 0)));
                }
                Err(e) => diags.push(script_syntax_error(&script.file, &script.text, &e)),
            }
        }
        for wf in model.workflows.values() {
            for t in &wf.transitions {
                let Some(when) = &t.when else { continue };
                match engine.compile_expression_with_scope(&scope, &when.value) {
                    Ok(ast) => {
                        let origin = Pos::new(when.pos.line.saturating_sub(1), when.pos.column.saturating_sub(1));
                        scripts.insert(guard_key(&wf.name, &t.name), Compiled::new(with_library(ast), &when.value, wf.file.clone(), origin));
                    }
                    Err(e) => {
                        let pos = Pos::new(when.pos.line + e.1.line().unwrap_or(1) as u32 - 1, when.pos.column + e.1.position().unwrap_or(1) as u32 - 1);
                        diags.push(
                            Diagnostic::new(&wf.file, pos, DiagCode::RhaiSyntax, format!("`when` of transition `{}` cannot be read: {}", t.name, e.0))
                                .with_hint(syntax_hint(&e.0.to_string())),
                        );
                    }
                }
            }
        }
        for rt in model.record_types.values() {
            for (i, t) in rt.starts.iter().enumerate() {
                let Some(when) = &t.when else { continue };
                match engine.compile_expression_with_scope(&scope, &when.value) {
                    Ok(ast) => {
                        let origin = Pos::new(when.pos.line.saturating_sub(1), when.pos.column.saturating_sub(1));
                        scripts.insert(trigger_key(&rt.name, i), Compiled::new(with_library(ast), &when.value, rt.file.clone(), origin));
                    }
                    Err(e) => {
                        let pos = Pos::new(when.pos.line + e.1.line().unwrap_or(1) as u32 - 1, when.pos.column + e.1.position().unwrap_or(1) as u32 - 1);
                        diags.push(
                            Diagnostic::new(&rt.file, pos, DiagCode::RhaiSyntax, format!("`when` of a trigger of `{}` cannot be read: {}", rt.name, e.0))
                                .with_hint(syntax_hint(&e.0.to_string())),
                        );
                    }
                }
            }
        }
        (RuleSet { engine, scripts, wall_limit: limits.wall_time }, diags)
    }

    pub fn has(&self, name: &str) -> bool {
        self.scripts.contains_key(name)
    }

    /// The fields of `record` that script `name` reads, when they are known
    /// (`None`: it may read the whole record, or there is no such script).
    /// A caller may hand the script a `record` of just these fields.
    pub fn record_fields(&self, name: &str) -> Option<&[String]> {
        self.scripts.get(name)?.record_fields.as_deref()
    }

    /// Whether script `name` may read `actor` (a caller may hand `Null`
    /// to a script that never names it).
    pub fn reads_actor(&self, name: &str) -> bool {
        self.scripts.get(name).is_none_or(|c| c.actor_fields.as_ref().is_none_or(|f| !f.is_empty()))
    }

    /// Runs a script and returns its value as JSON.
    pub fn run(&self, name: &str, ctx: &ScriptContext) -> Result<Value, RuleError> {
        let Some(compiled) = self.scripts.get(name) else {
            return Err(RuleError {
                script: name.into(),
                file: String::new(),
                line: 0,
                column: 0,
                kind: RuleErrorKind::Runtime,
                message: "no such script in this bundle".into(),
            });
        };
        let result = self.eval(name, compiled, ctx, true);
        // Every test run checks that the fields converted are all the script needs.
        #[cfg(debug_assertions)]
        if compiled.record_fields.is_some() || compiled.input_fields.is_some() || compiled.actor_fields.is_some() {
            let whole = self.eval(name, compiled, ctx, false);
            // A script stopped by the wall clock stops wherever the clock found it: only the kind is the same.
            let stopped = |r: &Result<Value, RuleError>| matches!(r, Err(e) if e.kind == RuleErrorKind::Limit);
            if stopped(&result) || stopped(&whole) {
                debug_assert_eq!(stopped(&result), stopped(&whole), "script `{name}` reads more of `record`, `input` or `actor` than it names");
            } else {
                debug_assert_eq!(format!("{result:?}"), format!("{whole:?}"), "script `{name}` reads more of `record`, `input` or `actor` than it names");
            }
        }
        result
    }

    /// Runs a script; `narrow`: `record`, `input` and `actor` hold only the
    /// fields it names (when those are known), not the whole maps.
    fn eval(&self, name: &str, compiled: &Compiled, ctx: &ScriptContext, narrow: bool) -> Result<Value, RuleError> {
        let convert = |fields: &Option<Vec<String>>, value: &Value| match (fields, value) {
            (Some(fields), Value::Object(all)) if narrow => {
                Dynamic::from_map(fields.iter().filter_map(|f| all.get(f).map(|v| (f.as_str().into(), to_dynamic(v)))).collect())
            }
            (_, whole) => to_dynamic(whole),
        };
        let mut scope = Scope::new();
        scope.push_constant_dynamic("record", convert(&compiled.record_fields, &ctx.record));
        scope.push_constant_dynamic("input", convert(&compiled.input_fields, &ctx.input));
        scope.push_constant_dynamic("actor", convert(&compiled.actor_fields, &ctx.actor));
        scope.push_constant("now", ctx.now.clone());
        let result = helpers::with_records(&ctx.records, || {
            sandbox::with_deadline(self.wall_limit, || self.engine.eval_ast_with_scope::<Dynamic>(&mut scope, &compiled.ast))
        });
        let error_at = |pos: rhai::Position, kind, message: String| {
            let (line, column) = (pos.line().unwrap_or(1) as u32, pos.position().unwrap_or(1) as u32);
            RuleError {
                script: name.into(),
                file: compiled.file.clone(),
                line: compiled.origin.line + line,
                column: if line == 1 { compiled.origin.column + column } else { column },
                kind,
                message,
            }
        };
        match result {
            Ok(value) => {
                if value.is_unit() {
                    return Ok(Value::Null);
                }
                rhai::serde::from_dynamic::<Value>(&value)
                    .map_err(|e| error_at(rhai::Position::NONE, RuleErrorKind::BadResult, format!("the result cannot be used: {e}")))
            }
            Err(e) => {
                let pos = e.position();
                let (kind, message) = sandbox::describe(&e, self.wall_limit);
                Err(error_at(pos, kind, message))
            }
        }
    }

    /// Runs a guard; anything but `true` or `false` is an error.
    pub fn run_guard(&self, name: &str, ctx: &ScriptContext) -> Result<bool, RuleError> {
        match self.run(name, ctx)? {
            Value::Bool(b) => Ok(b),
            other => {
                let compiled = self.scripts.get(name);
                Err(RuleError {
                    script: name.into(),
                    file: compiled.map(|c| c.file.clone()).unwrap_or_default(),
                    line: compiled.map_or(0, |c| c.origin.line + 1),
                    column: compiled.map_or(0, |c| c.origin.column + 1),
                    kind: RuleErrorKind::BadResult,
                    message: format!("a `when` condition must be true or false, it gave {other}"),
                })
            }
        }
    }
}

/// Roughly where a library's first statement is: the first line at the top
/// level (outside braces) that is not blank, a comment or a `fn`.
fn first_statement_line(text: &str) -> u32 {
    let mut depth = 0i32;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if depth == 0 && !trimmed.is_empty() && !trimmed.starts_with("//") && !trimmed.starts_with("fn ") && !trimmed.starts_with("private fn ") {
            return n as u32 + 1;
        }
        depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
    }
    1
}

/// Scripts under `rules/lib/` are shared functions, not rules of their own.
pub fn is_library(name: &str) -> bool {
    name.starts_with("lib/")
}

/// The variables every script may use; with strict variables on, anything else
/// is a compile error.
fn declared_scope() -> Scope<'static> {
    // Plain variables, not constants: the optimizer would inline constant values.
    let mut scope = Scope::new();
    scope.push_dynamic("record", Dynamic::from_map(Default::default()));
    scope.push_dynamic("input", Dynamic::from_map(Default::default()));
    scope.push_dynamic("actor", Dynamic::from_map(Default::default()));
    scope.push("now", String::new());
    scope
}

/// A script that does not parse. A bracket opened and never closed is
/// reported where it was opened (the parser only notices at the end of the
/// file, or at the next statement), with what is missing.
fn script_syntax_error(file: &str, text: &str, e: &rhai::ParseError) -> Diagnostic {
    if let Some((line, column, open)) = unclosed(text) {
        let close = match open {
            '{' => '}',
            '(' => ')',
            _ => ']',
        };
        return Diagnostic::new(
            file,
            Pos::new(line, column),
            DiagCode::RhaiSyntax,
            format!("script error: this `{open}` is never closed: a `{close}` is missing"),
        )
        .with_hint(Some(format!("add the `{close}` where this block ends (the parser said: {})", e.0)));
    }
    let (line, column) = (e.1.line().unwrap_or(1) as u32, e.1.position().unwrap_or(1) as u32);
    Diagnostic::new(file, Pos::new(line, column), DiagCode::RhaiSyntax, format!("script error: {}", e.0)).with_hint(syntax_hint(&e.0.to_string()))
}

/// The bracket (line, column, char) that a script opens and never closes, if
/// any, skipping strings and comments. A closing bracket less indented than
/// the line that opened the innermost block closes the block of its own
/// indentation: the inner one is the unclosed one.
pub fn unclosed(text: &str) -> Option<(u32, u32, char)> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |line: u32| lines.get(line as usize - 1).map_or(0, |l| l.len() - l.trim_start().len());
    let mut stack: Vec<(u32, u32, char)> = Vec::new();
    let mut unclosed = None;
    let (mut line, mut column) = (1u32, 0u32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        match c {
            '\n' => {
                line += 1;
                column = 0;
            }
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        column = 0;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for n in chars.by_ref() {
                    column += 1;
                    if n == '\n' {
                        line += 1;
                        column = 0;
                    }
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
            }
            '"' | '`' | '\'' => {
                let mut escaped = false;
                for n in chars.by_ref() {
                    column += 1;
                    if n == '\n' {
                        line += 1;
                        column = 0;
                    }
                    if !escaped && n == c {
                        break;
                    }
                    escaped = !escaped && n == '\\';
                }
            }
            '{' | '(' | '[' => stack.push((line, column, c)),
            '}' | ')' | ']' => {
                let open = match c {
                    '}' => '{',
                    ')' => '(',
                    _ => '[',
                };
                let Some(mut top) = stack.pop() else { continue };
                // `foo(1, [2, 3)`: the `[` is the one left open.
                if top.2 != open {
                    unclosed.get_or_insert(top);
                    while top.2 != open {
                        let Some(next) = stack.pop() else { break };
                        top = next;
                    }
                    continue;
                }
                if c == '}' && top.2 == '{' && indent(line) < indent(top.0) {
                    // Closed by indentation: find the opener of this indentation.
                    if let Some(i) = stack.iter().rposition(|o| o.2 == '{' && indent(o.0) == indent(line)) {
                        unclosed.get_or_insert(top);
                        stack.truncate(i);
                    }
                }
            }
            _ => {}
        }
    }
    unclosed.or_else(|| stack.pop())
}

fn syntax_hint(message: &str) -> Option<String> {
    if message.contains("Variable not found") || message.contains("Undefined variable") {
        Some("scripts can use `record`, `input`, `actor`, `now`, `lookup(type, id)`, `find(type, filter)` and variables they define with `let`".into())
    } else if message.contains("eval") {
        Some("`eval` is disabled in rules".into())
    } else if message.contains("import") {
        Some("rules cannot import modules".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests;

/// The fields of variable `var` that `source` reads (`var.FIELD`, `var?.FIELD`),
/// or `None` when it uses `var` any other way (passed whole, indexed, bound
/// to another name) — then the whole value is needed. Conservative: a
/// mention in a string or a comment only adds a field or asks for all.
pub(crate) fn fields_read(source: &str, var: &str) -> Option<Vec<String>> {
    // What a text scan could misread, the whole record instead: raw strings,
    // block comments (they nest), and `f!()` calls (a function run in the
    // caller's scope sees `record`). Strings are scanned as code: an
    // interpolation `${record.x}` counts, a mention in text only adds a field.
    if source.contains("#\"") || source.contains("/*") {
        return None;
    }
    let source = without_comments(source)?;
    if calls_in_callers_scope(&source) {
        return None;
    }
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut fields: Vec<String> = Vec::new();
    let mut rest = source.as_str();
    let mut before: Option<char> = None;
    while let Some(at) = rest.find(var) {
        let prev = rest[..at].chars().next_back().or(if at == 0 { before } else { None });
        let after = &rest[at + var.len()..];
        before = var.chars().next_back();
        let whole_word = !prev.is_some_and(ident) && !after.chars().next().is_some_and(ident);
        if whole_word {
            let tail = after.trim_start();
            let tail = tail.strip_prefix("?.").or_else(|| tail.strip_prefix('.'))?;
            let tail = tail.trim_start();
            let name: String = tail.chars().take_while(|c| ident(*c)).collect();
            // `record.len()`, `record.keys()`: a method of the whole map.
            if name.is_empty() || tail[name.len()..].trim_start().starts_with('(') {
                return None;
            }
            if !fields.contains(&name) {
                fields.push(name);
            }
        }
        rest = after;
    }
    Some(fields)
}

/// Whether `text` (comments blanked) calls a function in the caller's scope:
/// `name!(…)`, with any spaces or line breaks around the `!`. A negation
/// before a parenthesis (`if !(…)`, `x && !(…)`) is not one.
fn calls_in_callers_scope(text: &str) -> bool {
    const BEFORE_AN_EXPRESSION: [&str; 11] = ["if", "while", "until", "return", "throw", "in", "switch", "else", "do", "let", "const"];
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices('!').any(|(at, _)| {
        let after = text[at + 1..].trim_start();
        if text[at + 1..].starts_with('=') || !after.starts_with('(') {
            return false;
        }
        let before = text[..at].trim_end();
        let word = &before[before.trim_end_matches(ident).len()..];
        !word.is_empty() && !BEFORE_AN_EXPRESSION.contains(&word)
    })
}

/// `source` with its `//` and `/* */` comments blanked out (strings kept);
/// `None` when a string's interpolation holds a quote (the scan would lose
/// track of which strings are open).
fn without_comments(source: &str) -> Option<String> {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                // An interpolation that holds a quote of its own would make
                // this scan lose track of which strings are open.
                if q == '`' && c == '$' && chars.peek() == Some(&'{') {
                    let mut depth = 0usize;
                    for n in chars.by_ref() {
                        out.push(n);
                        match n {
                            '{' => depth += 1,
                            '}' if depth == 1 => break,
                            '}' => depth -= 1,
                            '"' | '\'' | '`' => return None,
                            _ => {}
                        }
                    }
                    continue;
                }
                // Backtick strings are verbatim: a backslash escapes nothing there.
                if c == '\\' && q != '`' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '/' && chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            None if c == '/' && chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
                out.push(' ');
            }
            None => {
                if matches!(c, '"' | '`' | '\'') {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    Some(out)
}

/// JSON → Rhai value, directly: what `rhai::serde::to_dynamic` gives, without
/// the serializer machinery (which cost more than running most scripts).
fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(rhai::ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(fields) => Dynamic::from_map(fields.iter().map(|(k, v)| (k.as_str().into(), to_dynamic(v))).collect()),
    }
}
