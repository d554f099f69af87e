//! Sources → [`Bundle`]: the one pipeline shared by `serve`, hot reload and `check`.

use flowform_forms::CompiledForm;
use flowform_model::DiagCode;
use flowform_model::{Diagnostic, Model, Sources, WorkflowDef, diagnostic};
use flowform_rules::{Limits, RuleSet};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The loaded, checked, immutable set of all definitions of an application,
/// identified by a hash of its sources. Everything that runs reads one bundle.
#[derive(Debug)]
pub struct Bundle {
    /// Hex content hash (first 16 digits of SHA-256 over paths and texts).
    pub version: String,
    pub sources: Sources,
    pub model: Model,
    pub forms: BTreeMap<String, CompiledForm>,
    pub rules: RuleSet,
    /// Notification templates, strict: a missing variable is an error, never an empty string.
    pub templates: handlebars::Handlebars<'static>,
    /// Whether a rule of the bundle may ask to `pick` a person (its text
    /// names `pick`): only then can a decision depend on the teams' people.
    pub may_pick: bool,
    /// Per workflow, the record types its rules and guards (or the
    /// library's) `find` in: a command reads those types' live records.
    /// Found once here, not per command.
    pub finds: BTreeMap<String, Vec<String>>,
}

impl Bundle {
    /// `t` on the app's wall clock (`app.timezone`; UTC without one).
    pub fn local_text(&self, t: crate::Time) -> String {
        t.local_text(self.model.app.timezone.as_ref().map(|z| z.value.as_str()))
    }

    pub fn workflow(&self, name: &str) -> Option<&WorkflowDef> {
        self.model.workflows.get(name)
    }

    pub fn form(&self, name: &str) -> Option<&CompiledForm> {
        self.forms.get(name)
    }

    /// The record types the rules of `workflow` `find` in (see [`Bundle::finds`]).
    pub fn finds(&self, workflow: &str) -> &[String] {
        self.finds.get(workflow).map_or(&[], Vec::as_slice)
    }
}

/// The record types the rules and guards of `wf`, or any library script,
/// name in a `find(` call.
fn found_types(model: &Model, wf: &flowform_model::WorkflowDef) -> Vec<String> {
    let hooks = std::iter::once(&wf.start.hooks).chain(wf.transitions.iter().map(|t| &t.hooks));
    let mut texts: Vec<&str> = hooks.flat_map(|h| h.iter().filter_map(|(_, s)| model.scripts.get(&s.value)).map(|s| s.text.as_str())).collect();
    texts.extend(model.scripts.iter().filter(|(n, _)| n.starts_with("lib/")).map(|(_, s)| s.text.as_str()));
    texts.extend(wf.transitions.iter().filter_map(|t| t.when.as_ref()).map(|w| w.value.as_str()));
    let mut out: Vec<String> = Vec::new();
    for text in texts {
        for part in text.split("find(").skip(1) {
            let name: String = part.trim_start().trim_start_matches('"').chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if model.record_types.contains_key(&name) && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// The content hash of a set of sources.
pub fn version_of(sources: &Sources) -> String {
    let mut hasher = Sha256::new();
    for (path, text) in sources.iter() {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())[..16].to_string()
}

/// Runs every stage and collects every problem. A bundle is returned only when
/// there is none: a running system never sees a half-valid bundle.
pub fn compile(sources: Sources) -> Result<Bundle, Vec<Diagnostic>> {
    compile_with_limits(sources, Limits::default())
}

pub fn compile_with_limits(sources: Sources, limits: Limits) -> Result<Bundle, Vec<Diagnostic>> {
    let (model, mut diags) = flowform_model::load_and_check(&sources);
    if model.workflows.is_empty() && diags.is_empty() {
        diags.push(
            Diagnostic::new("definitions", flowform_model::Pos::new(1, 1), DiagCode::NoWorkflows, "no workflow is defined")
                .with_hint(Some("add a file under definitions/ that starts with `workflow:`".into())),
        );
    }
    let mut forms = BTreeMap::new();
    for def in model.forms.values() {
        match CompiledForm::compile(def) {
            Ok(form) => {
                forms.insert(def.name.clone(), form);
            }
            Err(d) => diags.push(d),
        }
    }
    let (rules, rule_diags) = RuleSet::compile(&model, limits);
    diags.extend(rule_diags);
    let mut templates = registry();
    for w in model.webhooks.values() {
        if let Err(e) = templates.register_template_string(&format!("webhook:{}", w.name), &w.body.value) {
            diags.push(Diagnostic::new(&w.file, w.body.pos, DiagCode::TemplateSyntax, format!("webhook `{}` body cannot be read: {}", w.name, e.reason())));
        }
    }
    if let Some(tz) = &model.app.timezone
        && jiff::tz::TimeZone::get(&tz.value).is_err()
    {
        diags.push(
            Diagnostic::new(&model.app.file, tz.pos, DiagCode::UnknownTimezone, format!("unknown time zone `{}`", tz.value))
                .with_hint(Some("use an IANA name such as Asia/Shanghai".into())),
        );
    }
    for sc in model.schedules.values() {
        if !sc.timezone.value.is_empty() && jiff::tz::TimeZone::get(&sc.timezone.value).is_err() {
            diags.push(
                Diagnostic::new(&sc.file, sc.timezone.pos, DiagCode::UnknownTimezone, format!("unknown time zone `{}`", sc.timezone.value))
                    .with_hint(Some("use an IANA name such as Asia/Shanghai or Europe/Berlin".into())),
            );
        }
    }
    for c in model.calendars.values() {
        if jiff::tz::TimeZone::get(&c.timezone.value).is_err() {
            diags.push(
                Diagnostic::new(&c.file, c.timezone.pos, DiagCode::UnknownTimezone, format!("unknown time zone `{}`", c.timezone.value))
                    .with_hint(Some("use an IANA name such as Asia/Shanghai".into())),
            );
        }
    }
    for t in model.templates.values() {
        for (part, src) in [("title", &t.title), ("body", &t.body)] {
            if let Err(e) = templates.register_template_string(&format!("{}.{part}", t.name), &src.value) {
                let (line, col) = e.pos().map_or((1, 1), |(l, c)| (l as u32, c as u32));
                let pos = flowform_model::Pos::new(src.pos.line + line.saturating_sub(1), if line <= 1 { src.pos.column + col } else { col });
                diags.push(Diagnostic::new(&t.file, pos, DiagCode::TemplateSyntax, format!("template `{}` ({part}) cannot be read: {}", t.name, e.reason())));
            }
        }
    }
    if !diags.is_empty() {
        diagnostic::sort(&mut diags);
        diags.dedup();
        return Err(diags);
    }
    let may_pick = model.scripts.values().any(|s| s.text.contains("pick"));
    let finds = model.workflows.iter().map(|(name, wf)| (name.clone(), found_types(&model, wf))).collect();
    Ok(Bundle { version: version_of(&sources), sources, model, forms, rules, templates, may_pick, finds })
}

/// The template registry: strict (an unknown variable is an error). Output is
/// not escaped by default, because the same rendered text goes to channels
/// that need different escaping: the inbox keeps plain text (pages escape it
/// as HTML when they show it), e-mail is sent as plain text, and a webhook
/// body escapes each value for its format with the helpers `json`,
/// `markdown` and `html` (e.g. `{{json (markdown body)}}` for a markdown
/// message inside a JSON payload).
pub fn registry() -> handlebars::Handlebars<'static> {
    let mut templates = handlebars::Handlebars::new();
    templates.set_strict_mode(true);
    templates.register_escape_fn(handlebars::no_escape);
    templates.register_helper("json", Box::new(json_helper));
    templates.register_helper("markdown", Box::new(markdown_helper));
    templates.register_helper("html", Box::new(html_helper));
    templates.register_helper("time", Box::new(time_helper));
    templates
}

/// `{{time event.at}}`: an RFC 3339 time as `2026-11-30 14:05` in the app's
/// time zone (`app.timezone` of the context); anything else as it is.
fn time_helper(
    h: &handlebars::Helper,
    _: &handlebars::Handlebars,
    ctx: &handlebars::Context,
    _: &mut handlebars::RenderContext,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let value = h.param(0).map(|p| p.value().clone()).unwrap_or(serde_json::Value::Null);
    let tz = ctx
        .data()
        .pointer("/app/timezone")
        .and_then(serde_json::Value::as_str)
        .and_then(|t| jiff::tz::TimeZone::get(t).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let text = match &value {
        serde_json::Value::String(s) => {
            s.parse::<jiff::Timestamp>().map_or_else(|_| s.clone(), |t| t.to_zoned_datetime(tz).strftime("%Y-%m-%d %H:%M").to_string())
        }
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    out.write(&text)?;
    Ok(())
}

/// Text that a markdown renderer shows as written: markdown punctuation is
/// backslash-escaped and HTML is written as entities.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '.' | '!' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text for HTML: `& < > " '` as entities.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

handlebars::handlebars_helper!(markdown_helper: |v: Json| escape_markdown(&text_of(v)));
handlebars::handlebars_helper!(html_helper: |v: Json| escape_html(&text_of(v)));

/// `{{json value}}`: the value as JSON (a string gets quotes and escapes), for webhook bodies.
fn json_helper(
    h: &handlebars::Helper,
    _: &handlebars::Handlebars,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let value = h.param(0).map(|p| p.value().clone()).unwrap_or(serde_json::Value::Null);
    out.write(&value.to_string())?;
    Ok(())
}

#[cfg(test)]
mod escaping_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn webhook_values_are_escaped_for_their_format() {
        let mut r = registry();
        r.register_template_string("md", r#"{"text": {{json (markdown body)}}}"#).unwrap();
        r.register_template_string("html", "<p>{{html body}}</p>").unwrap();
        let ctx = json!({"body": "<script>alert(1)</script> [点我](http://x) **urgent**"});
        let md: serde_json::Value = serde_json::from_str(&r.render("md", &ctx).unwrap()).unwrap();
        assert_eq!(md["text"], "&lt;script&gt;alert\\(1\\)&lt;/script&gt; \\[点我\\]\\(http://x\\) \\*\\*urgent\\*\\*");
        assert_eq!(r.render("html", &ctx).unwrap(), "<p>&lt;script&gt;alert(1)&lt;/script&gt; [点我](http://x) **urgent**</p>");
    }
}
