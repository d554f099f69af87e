//! Cross-reference and graph checks over a loaded [`Model`].

use crate::DiagCode;
use crate::condition::Condition;
use crate::defs::*;
use crate::diagnostic::{Diagnostic, Pos, did_you_mean};
use crate::reader::Sp;
use serde_json::Value;
use std::collections::{BTreeSet, VecDeque};

pub fn check(model: &Model, diags: &mut Vec<Diagnostic>) {
    let mut found = Vec::new();
    check_all(model, &mut found);
    // A definition that could not be read (a file that is not YAML, a field
    // of an unknown type) is reported once, where it is broken: what names it
    // elsewhere is not reported again.
    found.retain(|d| !model.unreadable.iter().any(|name| d.message.contains(&format!("`{name}`")) || d.message.contains(&format!("`{name}."))));
    diags.extend(found);
}

fn check_all(model: &Model, diags: &mut Vec<Diagnostic>) {
    check_roster(model, diags);
    for rep in model.reports.values() {
        check_report(model, rep, diags);
    }
    for d in model.dashboards.values() {
        check_dashboard(model, d, diags);
    }
    if let Some(t) = &model.app.teams_from
        && !model.record_types.contains_key(&t.value)
    {
        err(
            diags,
            &model.app.file,
            t.pos,
            DiagCode::UnknownRecordType,
            format!("`teams_from` names `{}`, which is not a record type", t.value),
            did_you_mean(&t.value, model.record_types.keys().map(String::as_str)),
        );
    }
    for wf in model.workflows.values() {
        check_workflow(model, wf, diags);
    }
    for form in model.forms.values() {
        check_fields(&form.file, &form.fields, diags);
        check_refs(model, &form.file, &form.fields, diags);
        check_from(model, &form.file, &form.fields, diags);
    }
    for rt in model.record_types.values() {
        check_record_type(model, rt, diags);
    }
    for ledger in model.ledgers.values() {
        check_ledger(model, ledger, diags);
    }
    for t in model.templates.values() {
        for src in [&t.title, &t.body] {
            check_template_variables(&t.file, src, diags);
        }
        for c in &t.channels {
            if c.value != "inbox" && c.value != "email" && !model.webhooks.contains_key(&c.value) {
                let names: Vec<&str> = ["inbox", "email"].into_iter().chain(model.webhooks.keys().map(String::as_str)).collect();
                err(
                    diags,
                    &t.file,
                    c.pos,
                    DiagCode::UnknownChannel,
                    format!("unknown channel `{}`", c.value),
                    did_you_mean(&c.value, names.iter().copied()).or(Some("use `inbox`, `email` or the name of a `webhook:`".into())),
                );
            }
        }
    }
    for w in model.webhooks.values() {
        check_template_variables(&w.file, &w.body, diags);
    }
    for sc in model.schedules.values() {
        let file = sc.file.as_str();
        for role in &sc.roles {
            if !model.roles.contains_key(&role.value) {
                err(
                    diags,
                    &sc.file,
                    role.pos,
                    DiagCode::UnknownRole,
                    format!("unknown role `{}` for the schedule to act with", role.value),
                    did_you_mean(&role.value, model.roles.keys().map(String::as_str)),
                );
            }
        }
        let Some(wf) = model.workflows.get(&sc.workflow.value) else {
            err(
                diags,
                file,
                sc.workflow.pos,
                DiagCode::UnknownWorkflow,
                format!("unknown workflow `{}`", sc.workflow.value),
                did_you_mean(&sc.workflow.value, model.workflows.keys().map(String::as_str)),
            );
            continue;
        };
        if let Some(rt) = &sc.record {
            match model.record_types.get(&rt.value) {
                None => err(
                    diags,
                    file,
                    rt.pos,
                    DiagCode::UnknownRecordType,
                    format!("unknown record type `{}`", rt.value),
                    did_you_mean(&rt.value, model.record_types.keys().map(String::as_str)),
                ),
                Some(def) => {
                    if let Some(form) = model.forms.get(&def.form.value) {
                        if let Some((src, cond)) = &sc.filter {
                            for problem in condition_problems(cond, &form.fields, &format!("{} records", rt.value)) {
                                err(diags, file, src.pos, problem.0, problem.1, problem.2);
                            }
                        }
                        let field_of = |name: &Sp<String>, types: &[FieldType], what: &str, diags: &mut Vec<Diagnostic>| match form
                            .fields
                            .iter()
                            .find(|x| x.name == name.value)
                        {
                            None => err(
                                diags,
                                file,
                                name.pos,
                                DiagCode::UnknownField,
                                format!("{what} names `{}`, which {} records do not have", name.value, rt.value),
                                did_you_mean(&name.value, form.fields.iter().map(|x| x.name.as_str())),
                            ),
                            Some(f) if !types.contains(&f.field_type) => err(
                                diags,
                                file,
                                name.pos,
                                DiagCode::TypeMismatch,
                                format!(
                                    "{what}: `{}` is a {} field; it must be {}",
                                    name.value,
                                    f.field_type.name(),
                                    types.iter().map(|t| t.name()).collect::<Vec<_>>().join(" or ")
                                ),
                                None,
                            ),
                            Some(_) => {}
                        };
                        if let Some(f) = &sc.every_field {
                            field_of(f, &[FieldType::Integer], "`every`", diags);
                        }
                        if let Some(f) = &sc.first_due {
                            field_of(f, &[FieldType::Date, FieldType::Datetime], "`first_due`", diags);
                        }
                    }
                }
            }
        }
        for (key, given) in [("every", &sc.every_field), ("first_due", &sc.first_due)] {
            if let Some(f) = given
                && (!sc.after_completion || sc.record.is_none())
            {
                err(
                    diags,
                    file,
                    f.pos,
                    DiagCode::InvalidValue,
                    format!("`{key}` from a record's field needs `anchor: completion` and `for_each: {{ record: … }}` (each record has its own due dates)"),
                    Some("fixed-date schedules have one period for every record: give a number".into()),
                );
            }
        }
        check_start_data(model, file, sc.pos, wf, &sc.data, diags);
    }
}

/// Advice that does not stop a bundle from loading: `flowform check` prints
/// it as warnings. Today: a record type that grants no operation to any role
/// (only admins may use it — fine for an admin-only type, a surprise otherwise).
pub fn warnings(model: &Model) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for rt in model.record_types.values() {
        if rt.access.grants_nothing() {
            out.push(
                Diagnostic::new(
                    &rt.file,
                    rt.pos,
                    DiagCode::GrantsNothing,
                    format!("record type `{}` grants no operation to any role: only admins may read or change its records", rt.name),
                )
                .with_hint(Some("grant roles, e.g. `access: { read: [all], create: [manager] }` or `roles: [manager]`".into())),
            );
        }
    }
    crate::diagnostic::sort(&mut out);
    out
}

/// What every template can use.
pub const TEMPLATE_ROOTS: &[&str] = &["record", "text", "instance", "actor", "event", "app", "title", "body"];

/// Finds `{{ path }}` uses whose first name is not something a notification provides.
fn check_template_variables(file: &str, src: &Sp<String>, diags: &mut Vec<Diagnostic>) {
    const HELPERS: &[&str] =
        &["if", "unless", "each", "with", "lookup", "else", "this", "eq", "ne", "gt", "lt", "and", "or", "not", "len", "json", "markdown", "html", "time"];
    let text = &src.value;
    let mut rest = text.as_str();
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else { break };
        let inner = &rest[start + 2..start + end];
        let inner = inner.trim_start_matches('{').trim_start_matches(['#', '/', '^', '~', '&', '>']).trim_end_matches('}').trim_end_matches('~');
        if !inner.starts_with('!') {
            for token in inner.split_whitespace() {
                let token = token.trim_start_matches('(').trim_end_matches(')');
                if token.is_empty()
                    || token.starts_with('"')
                    || token.starts_with('\'')
                    || token.starts_with('@')
                    || token.contains('=')
                    || token.parse::<f64>().is_ok()
                    || token == "true"
                    || token == "false"
                    || token == "null"
                {
                    continue;
                }
                let root = token.split(['.', '/', '[']).next().unwrap_or(token);
                if HELPERS.contains(&root) || root == ".." || root.is_empty() {
                    continue;
                }
                if !TEMPLATE_ROOTS.contains(&root) {
                    let before = &text[..offset + start];
                    let line = src.pos.line + before.matches('\n').count() as u32;
                    let column = if before.contains('\n') {
                        before.rsplit('\n').next().map_or(1, |l| l.chars().count() as u32 + 3)
                    } else {
                        src.pos.column + before.chars().count() as u32 + 2
                    };
                    let hint = did_you_mean(root, TEMPLATE_ROOTS.iter().copied())
                        .or(Some(format!("templates can use {}", TEMPLATE_ROOTS.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "))));
                    diags.push(
                        Diagnostic::new(
                            file,
                            Pos::new(line, column),
                            DiagCode::UnknownTemplateVariable,
                            format!("the template uses `{token}`, which a notification does not provide"),
                        )
                        .with_hint(hint),
                    );
                }
            }
        }
        offset += start + end + 2;
        rest = &rest[start + end + 2..];
    }
}

fn record_kinds(model: &Model) -> Vec<&str> {
    let mut kinds: Vec<&str> = model.record_types.keys().map(String::as_str).collect();
    kinds.extend(model.workflows.values().filter_map(|w| w.record.as_deref()));
    kinds
}

/// `from: REF.FIELD`: REF a `ref` field beside it, FIELD a field of the
/// record type REF points at.
fn check_from(model: &Model, file: &str, fields: &[FieldDef], diags: &mut Vec<Diagnostic>) {
    for f in fields {
        check_from(model, file, &f.fields, diags);
        let Some(from) = &f.from else { continue };
        let Some((reference, name)) = from.value.split_once('.') else {
            err(
                diags,
                file,
                from.pos,
                DiagCode::InvalidValue,
                format!("`from: {}` must name a reference and its field", from.value),
                Some("e.g. `from: asset.category`".into()),
            );
            continue;
        };
        let siblings = fields.iter().filter(|x| x.field_type == FieldType::Ref).map(|x| x.name.as_str());
        let Some(target) = fields.iter().find(|x| x.name == reference && x.field_type == FieldType::Ref) else {
            err(
                diags,
                file,
                from.pos,
                DiagCode::UnknownField,
                format!("`from: {}` names `{reference}`, which is not a `ref` field of this form", from.value),
                did_you_mean(reference, siblings),
            );
            continue;
        };
        let form = target.record.as_ref().and_then(|r| model.record_types.get(&r.value)).and_then(|rt| model.forms.get(&rt.form.value));
        if let Some(form) = form
            && !form.fields.iter().any(|x| x.name == name)
        {
            err(
                diags,
                file,
                from.pos,
                DiagCode::UnknownField,
                format!("`from: {}`: form `{}` has no field `{name}`", from.value, form.name),
                did_you_mean(name, form.fields.iter().map(|x| x.name.as_str())),
            );
        }
    }
}

fn check_refs(model: &Model, file: &str, fields: &[FieldDef], diags: &mut Vec<Diagnostic>) {
    for f in fields {
        if let Some(target) = &f.record
            && !model.is_record_kind(&target.value)
        {
            let hint = did_you_mean(&target.value, record_kinds(model))
                .or(Some(format!("declare it in definitions/records/{}.yaml with `record: {}`", target.value, target.value)));
            err(diags, file, target.pos, DiagCode::UnknownRecordType, format!("unknown record type `{}`", target.value), hint);
        }
        // `where` of a ref: over the fields of the records it offers, typed.
        if let (Some((src, cond)), Some(form)) =
            (&f.filter, f.record.as_ref().and_then(|t| model.record_types.get(&t.value)).and_then(|rt| model.forms.get(&rt.form.value)))
        {
            let whose = format!("{} records", f.record.as_ref().map_or("", |r| r.value.as_str()));
            for (code, message, hint) in condition_problems(cond, &form.fields, &whose) {
                err(diags, file, src.pos, code, message, hint);
            }
        }
        check_refs(model, file, &f.fields, diags);
    }
}

/// Names in braces of a template: `{name} ({code})` → name, code; `{seq:4}` and dates are not fields.
pub fn template_fields(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else { break };
        let inner = &rest[start + 1..start + end];
        let name = inner.split(':').next().unwrap_or(inner);
        if !matches!(name, "seq" | "yyyyMMdd" | "yyyyMM" | "yyyy") {
            out.push(name.to_string());
        }
        rest = &rest[start + end + 1..];
    }
    out
}

fn check_record_type(model: &Model, rt: &RecordTypeDef, diags: &mut Vec<Diagnostic>) {
    let file = rt.file.as_str();
    let Some(form) = model.forms.get(&rt.form.value) else {
        if model.unreadable.contains(&rt.form.value) {
            return;
        }
        let hint = did_you_mean(&rt.form.value, model.forms.keys().map(String::as_str)).or(Some(format!("create forms/{}.yaml", rt.form.value)));
        err(diags, file, rt.form.pos, DiagCode::UnknownForm, format!("unknown form `{}`", rt.form.value), hint);
        return;
    };
    let names: Vec<&str> = form.fields.iter().map(|f| f.name.as_str()).collect();
    let field_ref = |diags: &mut Vec<Diagnostic>, name: &str, pos: Pos, what: &str| {
        if !names.contains(&name) {
            err(
                diags,
                file,
                pos,
                DiagCode::UnknownField,
                format!("{what} names `{name}`, which form `{}` does not define", form.name),
                did_you_mean(name, names.iter().copied()),
            );
        }
    };
    for t in [Some(&rt.key), rt.display.as_ref()].into_iter().flatten() {
        for name in template_fields(&t.value) {
            field_ref(diags, &name, t.pos, "the template");
        }
    }
    if !rt.key.value.contains('{') {
        err(
            diags,
            file,
            rt.key.pos,
            DiagCode::InvalidValue,
            "`key` must name fields or a sequence in braces".to_string(),
            Some("e.g. `key: \"{code}\"` or `key: \"LOC-{seq:4}\"`".into()),
        );
    }
    for s in rt.search.iter().chain(&rt.filters) {
        field_ref(diags, &s.value, s.pos, "`search`/`filters`");
    }
    for t in &rt.starts {
        match model.workflows.get(&t.workflow.value) {
            None => err(
                diags,
                file,
                t.workflow.pos,
                DiagCode::UnknownWorkflow,
                format!("unknown workflow `{}`", t.workflow.value),
                did_you_mean(&t.workflow.value, model.workflows.keys().map(String::as_str)),
            ),
            Some(wf) => {
                check_start_data(model, file, t.pos, wf, &t.data, diags);
            }
        }
    }
    let role_names: Vec<&str> = model.roles.keys().map(String::as_str).chain([crate::defs::EVERYONE]).collect();
    for t in &rt.starts {
        for role in &t.roles {
            if role.value == crate::defs::EVERYONE || !model.roles.contains_key(&role.value) {
                err(
                    diags,
                    file,
                    role.pos,
                    DiagCode::UnknownRole,
                    format!("unknown role `{}` for the trigger to act with", role.value),
                    did_you_mean(&role.value, model.roles.keys().map(String::as_str)),
                );
            }
        }
    }
    for role in rt.access.grants.iter().flat_map(|(_, roles)| roles) {
        if !role_names.contains(&role.as_str()) {
            err(diags, file, role.pos, DiagCode::UnknownRole, format!("unknown role `{}`", role.value), did_you_mean(&role.value, role_names.iter().copied()));
        }
    }
    if let Some(parent) = &rt.parent {
        match form.fields.iter().find(|f| f.name == parent.value) {
            None => field_ref(diags, &parent.value, parent.pos, "`parent`"),
            Some(f) if f.field_type != FieldType::Ref || f.record.as_ref().is_none_or(|r| r.value != rt.name) => err(
                diags,
                file,
                parent.pos,
                DiagCode::InvalidParent,
                format!("`parent` field `{}` must be a `ref` to `{}` itself", parent.value, rt.name),
                None,
            ),
            Some(_) => {}
        }
    }
}

fn check_ledger(model: &Model, ledger: &LedgerDef, diags: &mut Vec<Diagnostic>) {
    let file = ledger.file.as_str();
    for (_, record) in &ledger.dimensions {
        if !model.record_types.contains_key(&record.value) {
            let hint = did_you_mean(&record.value, model.record_types.keys().map(String::as_str));
            err(diags, file, record.pos, DiagCode::UnknownRecordType, format!("unknown record type `{}`", record.value), hint);
        }
    }
    if let Some((dim, field)) = &ledger.threshold {
        match ledger.dimensions.iter().find(|(d, _)| d.value == dim.value) {
            None => err(
                diags,
                file,
                dim.pos,
                DiagCode::UnknownDimension,
                format!("`threshold` names dimension `{}`, which the ledger does not have", dim.value),
                did_you_mean(&dim.value, ledger.dimension_names()),
            ),
            Some((_, record)) => {
                let form = model.record_types.get(&record.value).and_then(|rt| model.forms.get(&rt.form.value));
                if let Some(form) = form
                    && !form.fields.iter().any(|f| f.name == field.value && matches!(f.field_type, FieldType::Integer | FieldType::Number))
                {
                    err(
                        diags,
                        file,
                        field.pos,
                        DiagCode::UnknownField,
                        format!("`threshold` field `{}` must be a number field of `{}`", field.value, record.value),
                        did_you_mean(&field.value, form.fields.iter().map(|f| f.name.as_str())),
                    );
                }
            }
        }
    }
    check_notify(model, file, &ledger.notify_below_threshold, diags);
    let role_names: Vec<&str> = model.roles.keys().map(String::as_str).chain([crate::defs::EVERYONE]).collect();
    for role in ledger.roles.iter().chain(&ledger.read) {
        if !role_names.contains(&role.as_str()) {
            err(diags, file, role.pos, DiagCode::UnknownRole, format!("unknown role `{}`", role.value), did_you_mean(&role.value, role_names.iter().copied()));
        }
    }
}

fn err(diags: &mut Vec<Diagnostic>, file: &str, pos: Pos, code: DiagCode, msg: String, hint: Option<String>) {
    diags.push(Diagnostic::new(file, pos, code, msg).with_hint(hint));
}

/// `to: field:NAME` names a field of the workflow's forms holding a user id;
/// `to: field:REF.NAME` a field of the record a `ref` field points at
/// (`department.head`, `asset.responsible`).
fn check_recipient_fields(model: &Model, wf: &WorkflowDef, diags: &mut Vec<Diagnostic>) {
    let forms: Vec<&FormDef> =
        wf.start.form.iter().chain(wf.transitions.iter().filter_map(|t| t.form.as_ref())).filter_map(|f| model.forms.get(&f.value)).collect();
    let field = |name: &str| forms.iter().flat_map(|f| f.fields.iter()).find(|f| f.name == name);
    let mut specs: Vec<&NotifyDef> = wf.on_assigned.iter().chain(&wf.start.notify).collect();
    for t in &wf.transitions {
        specs.extend(&t.notify);
    }
    for s in &wf.states {
        specs.extend(&s.sla_notify);
        for timer in &s.timers {
            specs.extend(&timer.notify);
        }
    }
    for d in &wf.deadlines {
        specs.extend(&d.notify);
        for step in &d.escalations {
            specs.extend(&step.notify);
        }
    }
    for spec in specs {
        for to in &spec.to {
            let Recipient::Field(path) = &to.value else { continue };
            let (first, rest) = path.split_once('.').map_or((path.as_str(), None), |(a, b)| (a, Some(b)));
            let names: Vec<&str> = forms.iter().flat_map(|f| f.fields.iter().map(|x| x.name.as_str())).collect();
            let Some(f) = field(first) else {
                err(
                    diags,
                    &wf.file,
                    to.pos,
                    DiagCode::UnknownField,
                    format!("`to: field:{path}` names `{first}`, which no form of `{}` has", wf.name),
                    did_you_mean(first, names),
                );
                continue;
            };
            let Some(sub) = rest else { continue };
            let target = f.record.as_ref().and_then(|r| model.record_types.get(&r.value)).and_then(|rt| model.forms.get(&rt.form.value));
            match target {
                None => err(
                    diags,
                    &wf.file,
                    to.pos,
                    DiagCode::InvalidValue,
                    format!("`to: field:{path}`: `{first}` is not a reference to a record type"),
                    Some("`field:REF.NAME` reads NAME of the record a `ref` field points at".into()),
                ),
                Some(form) if !form.fields.iter().any(|x| x.name == sub) => err(
                    diags,
                    &wf.file,
                    to.pos,
                    DiagCode::UnknownField,
                    format!("`to: field:{path}`: form `{}` has no field `{sub}`", form.name),
                    did_you_mean(sub, form.fields.iter().map(|x| x.name.as_str())),
                ),
                Some(_) => {}
            }
        }
    }
}

/// `update: { REF: { FIELD: value } }`: REF a `ref` field of the workflow's
/// forms pointing at a record type, each FIELD a field of that type's form.
fn check_updates(model: &Model, wf: &WorkflowDef, diags: &mut Vec<Diagnostic>) {
    let forms: Vec<&FormDef> =
        wf.start.form.iter().chain(wf.transitions.iter().filter_map(|t| t.form.as_ref())).filter_map(|f| model.forms.get(&f.value)).collect();
    let refs: Vec<&FieldDef> = forms.iter().flat_map(|f| f.fields.iter()).filter(|f| f.field_type == FieldType::Ref).collect();
    for u in wf.start.update.iter().chain(wf.transitions.iter().flat_map(|t| t.update.iter())) {
        let Some(field) = refs.iter().find(|f| f.name == u.reference.value) else {
            err(
                diags,
                &wf.file,
                u.reference.pos,
                DiagCode::UnknownField,
                format!("`update` names `{}`, which is not a `ref` field of the forms of `{}`", u.reference.value, wf.name),
                did_you_mean(&u.reference.value, refs.iter().map(|f| f.name.as_str())),
            );
            continue;
        };
        let Some(form) = field.record.as_ref().and_then(|r| model.record_types.get(&r.value)).and_then(|rt| model.forms.get(&rt.form.value)) else {
            err(diags, &wf.file, u.reference.pos, DiagCode::InvalidValue, format!("`update`: `{}` does not point at a record type", u.reference.value), None);
            continue;
        };
        for (name, value) in &u.set {
            // A literal option must be one of the field's options (`{from, to}` both).
            if let Some(field) = form.fields.iter().find(|f| f.name == name.value && f.field_type == FieldType::Enum) {
                let literals: Vec<&serde_json::Value> = match value {
                    serde_json::Value::Object(m) => {
                        m.values().flat_map(|v| if let serde_json::Value::Array(a) = v { a.iter().collect() } else { vec![v] }).collect()
                    }
                    v => vec![v],
                };
                for v in literals.into_iter().filter_map(serde_json::Value::as_str).filter(|v| !v.contains('{')) {
                    if !field.options.iter().any(|o| o.value == v) {
                        err(
                            diags,
                            &wf.file,
                            name.pos,
                            DiagCode::NotAnOption,
                            format!("`update`: `{v}` is not an option of `{}`", name.value),
                            did_you_mean(v, field.options.iter().map(|o| o.value.as_str())),
                        );
                    }
                }
            }
            if !form.fields.iter().any(|f| f.name == name.value) {
                err(
                    diags,
                    &wf.file,
                    name.pos,
                    DiagCode::UnknownField,
                    format!("`update`: form `{}` has no field `{}`", form.name, name.value),
                    did_you_mean(&name.value, form.fields.iter().map(|f| f.name.as_str())),
                );
            }
        }
    }
}

/// `app.roster`: a record type whose form has the roster's fields.
fn check_roster(model: &Model, diags: &mut Vec<Diagnostic>) {
    let Some(roster) = &model.app.roster else { return };
    let file = model.app.file.as_str();
    let Some(form) = model.record_types.get(&roster.value).and_then(|rt| model.forms.get(&rt.form.value)) else {
        if !model.record_types.contains_key(&roster.value) {
            err(
                diags,
                file,
                roster.pos,
                DiagCode::UnknownRecordType,
                format!("`roster` names `{}`, which is not a record type", roster.value),
                did_you_mean(&roster.value, model.record_types.keys().map(String::as_str)),
            );
        }
        return;
    };
    for (name, types) in ROSTER_FIELDS {
        match form.fields.iter().find(|f| f.name == name) {
            Some(f) if types.contains(&f.field_type) => {}
            Some(f) => err(
                diags,
                file,
                roster.pos,
                DiagCode::TypeMismatch,
                format!(
                    "the roster's `{name}` is a {} field; it must be {}",
                    f.field_type.name(),
                    types.iter().map(|t| t.name()).collect::<Vec<_>>().join(" or ")
                ),
                None,
            ),
            None => err(
                diags,
                file,
                roster.pos,
                DiagCode::UnknownField,
                format!("the roster `{}` needs a field `{name}` (its form `{}` has none)", roster.value, form.name),
                Some("a roster's records have `team`, `user`, `starts_at` and `ends_at`".into()),
            ),
        }
    }
}

/// What is wrong with a condition over records or items with `fields`:
/// unknown fields, and comparisons that cannot be true (a number field with
/// text, a text field with a number, an option the field does not have).
/// (code, message, hint) each.
pub fn condition_problems(cond: &Condition, fields: &[FieldDef], whose: &str) -> Vec<(DiagCode, String, Option<String>)> {
    use serde_json::Value as J;
    let mut out = Vec::new();
    let mut check = |field: &str, value: &J| {
        let Some(f) = fields.iter().find(|x| x.name == field) else {
            if !matches!(field, "id" | "title") {
                out.push((
                    DiagCode::UnknownField,
                    format!("`where` names `{field}`, which {whose} do not have"),
                    did_you_mean(field, fields.iter().map(|x| x.name.as_str())),
                ));
            }
            return;
        };
        let numeric = matches!(f.field_type, FieldType::Integer | FieldType::Number);
        let textual = matches!(f.field_type, FieldType::String | FieldType::Text | FieldType::Enum | FieldType::Ref | FieldType::Date | FieldType::Datetime);
        let bad = match value {
            J::Null => None,
            J::String(_) if numeric => Some(format!("`{field}` is a number field, compared with the text {value}")),
            J::Number(_) if textual => Some(format!("`{field}` is a {} field, compared with the number {value}", f.field_type.name())),
            J::Bool(_) if f.field_type != FieldType::Boolean => Some(format!("`{field}` is a {} field, compared with {value}", f.field_type.name())),
            J::String(v) if f.field_type == FieldType::Enum && !f.options.iter().any(|o| &o.value == v) => {
                out.push((
                    DiagCode::NotAnOption,
                    format!("`where`: `{v}` is not an option of `{field}`, so this is never true"),
                    did_you_mean(v, f.options.iter().map(|o| o.value.as_str())),
                ));
                None
            }
            _ => None,
        };
        if let Some(message) = bad {
            let hint = if numeric { format!("write the number without quotes: {field} == 3") } else { format!("quote the text: {field} == '3'") };
            out.push((DiagCode::TypeMismatch, format!("{message}: this is never true"), Some(hint)));
        }
    };
    fn walk(c: &Condition, check: &mut dyn FnMut(&str, &serde_json::Value)) {
        match c {
            Condition::Truthy { field } => check(field, &serde_json::Value::Null),
            Condition::Not { arg } => walk(arg, check),
            Condition::And { args } | Condition::Or { args } => args.iter().for_each(|a| walk(a, check)),
            Condition::Compare { field, value, .. } => check(field, value),
            Condition::In { field, values } => {
                if values.is_empty() {
                    check(field, &serde_json::Value::Null);
                }
                values.iter().for_each(|v| check(field, v));
            }
        }
    }
    walk(cond, &mut check);
    out
}

/// `starts:` of a transition: the workflow exists, `for_each` is a group
/// field of the workflow's forms, `where` names fields of its items (or of
/// the forms), `roles` are declared, `data` names fields of the started
/// workflow's start form.
fn check_linked_starts(model: &Model, wf: &WorkflowDef, diags: &mut Vec<Diagnostic>) {
    let forms: Vec<&FormDef> =
        wf.start.form.iter().chain(wf.transitions.iter().filter_map(|t| t.form.as_ref())).filter_map(|f| model.forms.get(&f.value)).collect();
    let all_fields: Vec<&FieldDef> = forms.iter().flat_map(|f| f.fields.iter()).collect();
    for t in &wf.transitions {
        for link in &t.starts {
            let Some(target) = model.workflows.get(&link.workflow.value) else {
                if !model.unreadable.contains(&link.workflow.value) {
                    err(
                        diags,
                        &wf.file,
                        link.workflow.pos,
                        DiagCode::UnknownWorkflow,
                        format!("`starts` names workflow `{}`, which is not defined", link.workflow.value),
                        did_you_mean(&link.workflow.value, model.workflows.keys().map(String::as_str)),
                    );
                }
                continue;
            };
            // The names `where` and `data` may use: the item's fields, else the instance's.
            let mut names: Vec<&str> = all_fields.iter().map(|f| f.name.as_str()).collect();
            names.extend(["id", "number", "requester"]);
            if let Some(each) = &link.for_each {
                match all_fields.iter().find(|f| f.name == each.value) {
                    Some(f) if f.field_type == FieldType::Group => names.extend(f.fields.iter().map(|x| x.name.as_str())),
                    Some(_) => err(
                        diags,
                        &wf.file,
                        each.pos,
                        DiagCode::InvalidValue,
                        format!("`for_each: {}` must name a `group` field (one start per item)", each.value),
                        None,
                    ),
                    None => err(
                        diags,
                        &wf.file,
                        each.pos,
                        DiagCode::UnknownField,
                        format!("`for_each` names `{}`, which no form of `{}` has", each.value, wf.name),
                        did_you_mean(&each.value, all_fields.iter().filter(|f| f.field_type == FieldType::Group).map(|f| f.name.as_str())),
                    ),
                }
            }
            if let Some((src, cond)) = &link.condition {
                let group: Vec<FieldDef> =
                    link.for_each.as_ref().and_then(|each| all_fields.iter().find(|f| f.name == each.value)).map(|f| f.fields.clone()).unwrap_or_default();
                let fields: Vec<FieldDef> = group.into_iter().chain(all_fields.iter().map(|f| (*f).clone())).collect();
                for (code, message, hint) in condition_problems(cond, &fields, "the items").into_iter().filter(|p| p.0 != DiagCode::UnknownField) {
                    err(diags, &wf.file, src.pos, code, message, hint);
                }
                for name in cond.fields() {
                    if !names.contains(&name) {
                        err(
                            diags,
                            &wf.file,
                            src.pos,
                            DiagCode::UnknownField,
                            format!("`where` reads `{name}`, which is not a field here"),
                            did_you_mean(name, names.iter().copied()),
                        );
                    }
                }
            }
            for role in &link.roles {
                if !model.roles.contains_key(&role.value) {
                    err(
                        diags,
                        &wf.file,
                        role.pos,
                        DiagCode::UnknownRole,
                        format!("unknown role `{}` in `starts`", role.value),
                        did_you_mean(&role.value, model.roles.keys().map(String::as_str)),
                    );
                }
            }
            let start_form = target.start.form.as_ref().and_then(|f| model.forms.get(&f.value));
            for (key, value) in &link.data {
                if let Some(form) = start_form
                    && !form.fields.iter().any(|f| &f.name == key)
                {
                    err(
                        diags,
                        &wf.file,
                        link.pos,
                        DiagCode::UnknownField,
                        format!("`starts.data` sets `{key}`, which the start form `{}` of `{}` does not have", form.name, target.name),
                        did_you_mean(key, form.fields.iter().map(|f| f.name.as_str())),
                    );
                }
                for name in value.as_str().map(template_fields).unwrap_or_default() {
                    if !names.contains(&name.as_str()) {
                        err(
                            diags,
                            &wf.file,
                            link.pos,
                            DiagCode::UnknownField,
                            format!("`starts.data.{key}` names `{{{name}}}`, which is not a field here"),
                            did_you_mean(&name, names.iter().copied()),
                        );
                    }
                }
            }
            if target.start.hooks.post.is_some() {
                err(
                    diags,
                    &wf.file,
                    link.workflow.pos,
                    DiagCode::InvalidValue,
                    format!("`{}` posts ledger movements when it starts, which a linked start cannot do", target.name),
                    Some("start it by hand, or move the movements to a later transition".into()),
                );
            }
        }
    }
}

/// `deadlines:`: `from` a transition that changes the state, states that
/// exist, a calendar that exists, escalation steps and notifications.
fn check_deadlines(model: &Model, wf: &WorkflowDef, diags: &mut Vec<Diagnostic>) {
    let file = wf.file.as_str();
    let states: Vec<&str> = wf.states.iter().map(|s| s.name.as_str()).collect();
    for d in &wf.deadlines {
        if let Some(from) = &d.from {
            match wf.transition(&from.value) {
                None => err(
                    diags,
                    file,
                    from.pos,
                    DiagCode::UnknownTransition,
                    format!("deadline `{}` starts `from` `{}`, which is not a transition (or `start`)", d.name, from.value),
                    did_you_mean(&from.value, wf.transitions.iter().map(|t| t.name.as_str()).chain(["start"])),
                ),
                Some(t) if t.to.is_none() => err(
                    diags,
                    file,
                    from.pos,
                    DiagCode::InvalidValue,
                    format!("deadline `{}` starts `from` `{}`, which does not change the state", d.name, from.value),
                    Some("a deadline's clock starts with the start or with a transition that has `to:`".into()),
                ),
                Some(_) => {}
            }
        }
        for s in d.until.iter().chain(&d.paused_in) {
            if !states.contains(&s.value.as_str()) {
                err(
                    diags,
                    file,
                    s.pos,
                    DiagCode::UnknownState,
                    format!("unknown state `{}` in deadline `{}`", s.value, d.name),
                    did_you_mean(&s.value, states.iter().copied()),
                );
            }
        }
        if let Some(c) = &d.calendar
            && !model.calendars.contains_key(&c.value)
        {
            err(
                diags,
                file,
                c.pos,
                DiagCode::UnknownCalendar,
                format!("unknown calendar `{}`", c.value),
                did_you_mean(&c.value, model.calendars.keys().map(String::as_str)),
            );
        }
        check_notify(model, file, &d.notify, diags);
        for step in &d.escalations {
            check_notify(model, file, &step.notify, diags);
            if let Some(name) = &step.transition
                && wf.transition(&name.value).is_none()
            {
                err(
                    diags,
                    file,
                    name.pos,
                    DiagCode::UnknownTransition,
                    format!("unknown transition `{}`", name.value),
                    did_you_mean(&name.value, wf.transitions.iter().map(|t| t.name.as_str())),
                );
            }
        }
    }
}

fn check_workflow(model: &Model, wf: &WorkflowDef, diags: &mut Vec<Diagnostic>) {
    check_deadlines(model, wf, diags);
    check_recipient_fields(model, wf, diags);
    check_updates(model, wf, diags);
    check_linked_starts(model, wf, diags);
    let checked_from = diags.len();
    let file = wf.file.as_str();
    let state_names: Vec<&str> = wf.states.iter().map(|s| s.name.as_str()).collect();
    let state_ref = |diags: &mut Vec<Diagnostic>, s: &Sp<String>, what: &str| -> bool {
        if state_names.contains(&s.as_str()) {
            return true;
        }
        err(diags, file, s.pos, DiagCode::UnknownState, format!("unknown state `{}` in {what}", s.value), did_you_mean(&s.value, state_names.iter().copied()));
        false
    };
    if !wf.states.is_empty() {
        state_ref(diags, &wf.initial, "`initial`");
    }
    if let Some(number) = &wf.number {
        // `{field}` must be a field of the start form; `{seq}` makes numbers unique.
        let start_fields: Vec<&str> =
            wf.start.form.as_ref().and_then(|f| model.forms.get(&f.value)).map(|f| f.fields.iter().map(|x| x.name.as_str()).collect()).unwrap_or_default();
        for name in template_fields(&number.value) {
            if !start_fields.contains(&name.as_str()) {
                let hint = did_you_mean(&name, start_fields.iter().copied())
                    .or(Some("use `{seq:4}`, `{yyyyMMdd}`, `{yyyyMM}`, `{yyyy}` or a field of the start form".into()));
                err(diags, file, number.pos, DiagCode::UnknownField, format!("`number` names `{name}`, which is not a field of the start form"), hint);
            }
        }
        if !number.value.contains("{seq") {
            err(
                diags,
                file,
                number.pos,
                DiagCode::InvalidValue,
                "`number` needs a sequence (`{seq:4}`) so that no two instances share a number".to_string(),
                Some("e.g. `number: \"WX-{yyyyMMdd}-{seq:4}\"`".into()),
            );
        }
    }
    let role_names: Vec<&str> = model.roles.keys().map(String::as_str).chain(RELATIONAL_ROLES.iter().copied()).collect();
    let check_roles = |diags: &mut Vec<Diagnostic>, roles: &[Sp<String>]| {
        for role in roles {
            if !role_names.contains(&role.as_str()) {
                let hint = did_you_mean(&role.value, role_names.iter().copied()).or(Some("declare it under `roles:` in a definitions file".into()));
                err(diags, file, role.pos, DiagCode::UnknownRole, format!("unknown role `{}`", role.value), hint);
            }
        }
    };
    check_roles(diags, &wf.start.roles);
    for audience in wf.visible_to.iter().flatten() {
        if let crate::defs::Audience::Role(role) = &audience.value
            && !model.roles.contains_key(role)
        {
            err(
                diags,
                &wf.file,
                audience.pos,
                DiagCode::UnknownRole,
                format!("unknown role `{role}` in `visible_to`"),
                did_you_mean(role, model.roles.keys().map(String::as_str)),
            );
        }
    }
    let form_ref = |diags: &mut Vec<Diagnostic>, form: &Option<Sp<String>>| {
        if let Some(f) = form
            && !model.forms.contains_key(&f.value)
            && !model.unreadable.contains(&f.value)
        {
            let hint =
                did_you_mean(&f.value, model.forms.keys().map(String::as_str)).or(Some(format!("create forms/{}.yaml with `form: {}`", f.value, f.value)));
            err(diags, file, f.pos, DiagCode::UnknownForm, format!("unknown form `{}`", f.value), hint);
        }
    };
    form_ref(diags, &wf.start.form);
    let hooks_ref = |diags: &mut Vec<Diagnostic>, hooks: &Hooks| {
        for (kind, script) in hooks.iter() {
            if !model.scripts.contains_key(&script.value) {
                let hint = did_you_mean(&script.value, model.scripts.keys().map(String::as_str)).or(Some(format!("create rules/{}.rhai", script.value)));
                err(diags, file, script.pos, DiagCode::UnknownScript, format!("unknown script `{}` in `{kind}`", script.value), hint);
            }
        }
    };
    hooks_ref(diags, &wf.start.hooks);

    let team_names: Vec<&str> = model.teams.keys().map(String::as_str).collect();
    for t in &wf.transitions {
        let what = format!("transition `{}`", t.name);
        for from in &t.from {
            if state_ref(diags, from, &format!("`from` of {what}"))
                && let Some(state) = wf.state(&from.value)
                && state.is_final
            {
                err(
                    diags,
                    file,
                    from.pos,
                    DiagCode::TransitionFromFinal,
                    format!("{what} leaves `{}`, which is a final state", from.value),
                    Some(format!("remove `final: true` from `{}`, or remove it from `from`", from.value)),
                );
            }
        }
        if let Some(to) = &t.to {
            state_ref(diags, to, &format!("`to` of {what}"));
        }
        check_roles(diags, &t.roles);
        for team in &t.teams {
            // Teams kept as records (`teams_from`) are checked when the command runs.
            if !team_names.contains(&team.as_str()) && model.app.teams_from.is_none() {
                let hint = did_you_mean(&team.value, team_names.iter().copied()).or(Some("declare it under `teams:` in a definitions file".into()));
                err(diags, file, team.pos, DiagCode::UnknownTeam, format!("unknown team `{}`", team.value), hint);
            }
        }
        form_ref(diags, &t.form);
        hooks_ref(diags, &t.hooks);
        check_notify(model, file, &t.notify, diags);
    }
    let calendar_ref = |diags: &mut Vec<Diagnostic>, c: &Option<Sp<String>>| {
        if let Some(c) = c
            && !model.calendars.contains_key(&c.value)
        {
            err(
                diags,
                file,
                c.pos,
                DiagCode::UnknownCalendar,
                format!("unknown calendar `{}`", c.value),
                did_you_mean(&c.value, model.calendars.keys().map(String::as_str)),
            );
        }
    };
    check_notify(model, file, &wf.start.notify, diags);
    check_notify(model, file, &wf.on_assigned, diags);
    for state in &wf.states {
        calendar_ref(diags, &state.sla_calendar);
        check_notify(model, file, &state.sla_notify, diags);
        for timer in &state.timers {
            calendar_ref(diags, &timer.calendar);
            check_notify(model, file, &timer.notify, diags);
            if let Some(name) = &timer.transition {
                match wf.transition(&name.value) {
                    None => err(
                        diags,
                        file,
                        name.pos,
                        DiagCode::UnknownTransition,
                        format!("unknown transition `{}`", name.value),
                        did_you_mean(&name.value, wf.transitions.iter().map(|t| t.name.as_str())),
                    ),
                    Some(t) if !t.from.iter().any(|f| f.value == state.name) => err(
                        diags,
                        file,
                        name.pos,
                        DiagCode::TransitionNotFromState,
                        format!("transition `{}` does not start from state `{}`", name.value, state.name),
                        Some(format!("add `{}` to its `from`", state.name)),
                    ),
                    Some(_) => {}
                }
            }
        }
        if state.is_final && (state.sla.is_some() || !state.timers.is_empty()) {
            err(diags, file, state.pos, DiagCode::TimerOnFinalState, format!("final state `{}` cannot have an SLA or timers", state.name), None);
        }
    }

    // Reachability from the initial state. Skipped while state names are wrong:
    // the misspelling is the one problem to report, not its consequences.
    let broken_refs = diags[checked_from..].iter().any(|d| d.file == wf.file && d.code == DiagCode::UnknownState);
    if wf.state(&wf.initial.value).is_some() && !broken_refs {
        let mut seen = BTreeSet::from([wf.initial.value.as_str()]);
        let mut queue = VecDeque::from([wf.initial.value.as_str()]);
        while let Some(state) = queue.pop_front() {
            for t in wf.transitions.iter().filter(|t| t.from.iter().any(|f| f.value == state)) {
                if let Some(to) = &t.to
                    && wf.state(&to.value).is_some()
                    && seen.insert(to.value.as_str())
                {
                    queue.push_back(to.value.as_str());
                }
            }
        }
        for s in &wf.states {
            if !seen.contains(s.name.as_str()) {
                err(
                    diags,
                    file,
                    s.pos,
                    DiagCode::UnreachableState,
                    format!("state `{}` cannot be reached from the initial state `{}`", s.name, wf.initial.value),
                    Some("add a transition with `to: ".to_string() + &s.name + "`, or remove the state"),
                );
            }
        }
    }
    for s in wf.states.iter().filter(|s| !s.is_final && !broken_refs) {
        let leaves = wf.transitions.iter().any(|t| t.from.iter().any(|f| f.value == s.name) && t.to.as_ref().is_some_and(|to| to.value != s.name));
        if !leaves {
            err(
                diags,
                file,
                s.pos,
                DiagCode::DeadEndState,
                format!("state `{}` is not final and no transition leaves it", s.name),
                Some("add a transition from it, or mark it `final: true`".into()),
            );
        }
    }
    if !wf.states.iter().any(|s| s.is_final) && !wf.states.is_empty() {
        err(
            diags,
            file,
            wf.pos,
            DiagCode::NoFinalState,
            format!("workflow `{}` has no final state", wf.name),
            Some("mark the end state(s) with `final: true`".into()),
        );
    }
}

/// Start data given by a schedule or a trigger must name fields of the start form.
fn check_start_data(model: &Model, file: &str, pos: Pos, wf: &WorkflowDef, data: &serde_json::Map<String, Value>, diags: &mut Vec<Diagnostic>) {
    let Some(form) = wf.start.form.as_ref().and_then(|f| model.forms.get(&f.value)) else { return };
    for k in data.keys() {
        if !form.fields.iter().any(|x| &x.name == k) {
            let hint = did_you_mean(k, form.fields.iter().map(|x| x.name.as_str()));
            err(diags, file, pos, DiagCode::UnknownField, format!("`data` sets `{k}`, which the start form `{}` does not have", form.name), hint);
        }
    }
}

fn check_notify(model: &Model, file: &str, notify: &[NotifyDef], diags: &mut Vec<Diagnostic>) {
    for n in notify {
        if !model.templates.contains_key(&n.template.value) {
            let hint = did_you_mean(&n.template.value, model.templates.keys().map(String::as_str))
                .or(Some(format!("declare it in definitions/notifications/{}.yaml with `template: {}`", n.template.value, n.template.value)));
            err(diags, file, n.template.pos, DiagCode::UnknownTemplate, format!("unknown template `{}`", n.template.value), hint);
        }
        for to in &n.to {
            if let Recipient::Role(role) = &to.value
                && !model.roles.contains_key(role)
            {
                err(diags, file, to.pos, DiagCode::UnknownRole, format!("unknown role `{role}`"), did_you_mean(role, model.roles.keys().map(String::as_str)));
            }
        }
    }
}

fn check_fields(file: &str, fields: &[FieldDef], diags: &mut Vec<Diagnostic>) {
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    for f in fields {
        for (key, cond) in [("visible_when", &f.visible_when), ("required_when", &f.required_when)] {
            let Some((src, cond)) = cond else { continue };
            for used in cond.fields() {
                if !names.contains(&used) {
                    err(
                        diags,
                        file,
                        src.pos,
                        DiagCode::UnknownField,
                        format!("`{key}` of field `{}` names `{used}`, which this form does not define", f.name),
                        did_you_mean(used, names.iter().copied()),
                    );
                } else if used == f.name {
                    err(diags, file, src.pos, DiagCode::SelfCondition, format!("`{key}` of field `{}` depends on the field itself", f.name), None);
                }
            }
        }
        if let Some(default) = &f.default {
            check_default(file, f, default, diags);
        }
        if !f.fields.is_empty() {
            check_fields(file, &f.fields, diags);
        }
    }
}

fn check_default(file: &str, f: &FieldDef, default: &Sp<Value>, diags: &mut Vec<Diagnostic>) {
    let options: Vec<&str> = f.options.iter().map(|o| o.value.as_str()).collect();
    let bad = |diags: &mut Vec<Diagnostic>, msg: String, hint: Option<String>| err(diags, file, default.pos, DiagCode::InvalidDefault, msg, hint);
    match (f.field_type, &default.value) {
        (FieldType::Enum, Value::String(s)) if !f.multiple => {
            if !options.contains(&s.as_str()) {
                bad(diags, format!("default `{s}` of field `{}` is not one of its options", f.name), did_you_mean(s, options.iter().copied()));
            }
        }
        (FieldType::Enum, Value::Array(items)) if f.multiple => {
            for item in items {
                let s = item.as_str().unwrap_or_default();
                if !options.contains(&s) {
                    bad(diags, format!("default `{item}` of field `{}` is not one of its options", f.name), did_you_mean(s, options.iter().copied()));
                }
            }
        }
        (FieldType::Enum, v) => {
            bad(diags, format!("default `{v}` of field `{}` must be {}", f.name, if f.multiple { "a list of options" } else { "one of the options" }), None)
        }
        (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        (FieldType::Number, Value::Number(_)) => {}
        (FieldType::Boolean, Value::Bool(_)) => {}
        (FieldType::String | FieldType::Text | FieldType::Date | FieldType::Datetime | FieldType::Ref, Value::String(_)) => {}
        (t, v) => bad(diags, format!("default `{v}` does not fit field `{}` of type `{}`", f.name, t.name()), None),
    }
}

/// Every name a report over `source` may use: built-in fields of its rows,
/// the fields of the forms, fields rules compute (named as map keys in the
/// workflow's scripts), and `REF.FIELD` for the fields of referenced records.
pub fn report_fields(model: &Model, source: &ReportSource) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut refs: Vec<(String, String)> = Vec::new();
    let add_form = |form: &FormDef, out: &mut Vec<String>, refs: &mut Vec<(String, String)>| {
        for f in &form.fields {
            out.push(f.name.clone());
            if let Some(t) = &f.record {
                refs.push((f.name.clone(), t.value.clone()));
            }
        }
    };
    match source {
        ReportSource::Instances { workflow } | ReportSource::Events { workflow, .. } => {
            out.extend(["id", "number", "state", "team", "assignee", "vendor", "requester", "created_at", "updated_at", "workflow"].map(String::from));
            if matches!(source, ReportSource::Events { .. }) {
                out.extend(["at", "actor", "transition", "instance"].map(String::from));
            }
            if let Some(wf) = model.workflows.get(&workflow.value) {
                for f in wf.start.form.iter().chain(wf.transitions.iter().filter_map(|t| t.form.as_ref())).filter_map(|f| model.forms.get(&f.value)) {
                    add_form(f, &mut out, &mut refs);
                }
                // What rules compute: the keys of the maps they return.
                let hooks = std::iter::once(&wf.start.hooks).chain(wf.transitions.iter().map(|t| &t.hooks));
                for script in hooks.flat_map(|h| h.iter().map(|(_, s)| s.value.clone()).collect::<Vec<_>>()).filter_map(|n| model.scripts.get(&n)) {
                    out.extend(map_keys(&script.text));
                }
                for timer in wf.states.iter().flat_map(|s| s.timers.iter()) {
                    out.extend(timer.set.keys().cloned());
                }
                for d in &wf.deadlines {
                    out.extend(d.set.keys().cloned());
                }
            }
        }
        ReportSource::Movements { ledger } => {
            out.extend(["at", "actor", "kind", "quantity", "on_hand_delta", "reserved_delta", "reason", "instance", "seq"].map(String::from));
            if let Some(l) = model.ledgers.get(&ledger.value) {
                for (dim, t) in &l.dimensions {
                    out.push(dim.value.clone());
                    refs.push((dim.value.clone(), t.value.clone()));
                }
            }
        }
        ReportSource::Records { record_type } => {
            out.extend(["id", "title", "created_at", "updated_at"].map(String::from));
            if let Some(form) = model.record_types.get(&record_type.value).and_then(|rt| model.forms.get(&rt.form.value)) {
                add_form(form, &mut out, &mut refs);
            }
        }
    }
    for (field, t) in refs {
        if let Some(form) = model.record_types.get(&t).and_then(|rt| model.forms.get(&rt.form.value)) {
            out.extend(form.fields.iter().map(|f| format!("{field}.{}", f.name)));
            out.push(format!("{field}.title"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The keys of the map literals of a script (`#{ sla_met: …, closed_at: now }`):
/// every identifier written just before a single `:`.
fn map_keys(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for (i, c) in chars.iter().enumerate() {
        if *c != ':' || chars.get(i + 1) == Some(&':') || (i > 0 && chars[i - 1] == ':') {
            continue;
        }
        let mut end = i;
        while end > 0 && chars[end - 1] == ' ' {
            end -= 1;
        }
        let mut start = end;
        while start > 0 && (chars[start - 1].is_ascii_alphanumeric() || chars[start - 1] == '_') {
            start -= 1;
        }
        let key: String = chars[start..end].iter().collect();
        if key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
            out.push(key);
        }
    }
    out
}

fn check_report(model: &Model, rep: &ReportDef, diags: &mut Vec<Diagnostic>) {
    let file = rep.file.as_str();
    let exists = match &rep.source {
        ReportSource::Instances { workflow } | ReportSource::Events { workflow, .. } => {
            let ok = model.workflows.contains_key(&workflow.value);
            if !ok {
                err(
                    diags,
                    file,
                    workflow.pos,
                    DiagCode::UnknownWorkflow,
                    format!("unknown workflow `{}`", workflow.value),
                    did_you_mean(&workflow.value, model.workflows.keys().map(String::as_str)),
                );
            }
            if let (ReportSource::Events { transition: Some(t), .. }, Some(wf)) = (&rep.source, model.workflows.get(&workflow.value))
                && wf.transition(&t.value).is_none()
            {
                err(
                    diags,
                    file,
                    t.pos,
                    DiagCode::UnknownTransition,
                    format!("`{}` has no transition `{}`", wf.name, t.value),
                    did_you_mean(&t.value, wf.transitions.iter().map(|t| t.name.as_str()).chain(["all"])),
                );
            }
            ok
        }
        ReportSource::Movements { ledger } => {
            let ok = model.ledgers.contains_key(&ledger.value);
            if !ok {
                err(
                    diags,
                    file,
                    ledger.pos,
                    DiagCode::UnknownLedger,
                    format!("unknown ledger `{}`", ledger.value),
                    did_you_mean(&ledger.value, model.ledgers.keys().map(String::as_str)),
                );
            }
            ok
        }
        ReportSource::Records { record_type } => {
            let ok = model.record_types.contains_key(&record_type.value);
            if !ok {
                err(
                    diags,
                    file,
                    record_type.pos,
                    DiagCode::UnknownRecordType,
                    format!("unknown record type `{}`", record_type.value),
                    did_you_mean(&record_type.value, model.record_types.keys().map(String::as_str)),
                );
            }
            ok
        }
    };
    if !exists {
        return;
    }
    let names = report_fields(model, &rep.source);
    let known = |diags: &mut Vec<Diagnostic>, name: &Sp<String>, what: &str| {
        if !names.contains(&name.value) {
            err(
                diags,
                file,
                name.pos,
                DiagCode::UnknownField,
                format!("{what} `{}` is not a field of this report's rows", name.value),
                did_you_mean(&name.value, names.iter().map(String::as_str)),
            );
        }
    };
    known(diags, &rep.time, "`time`");
    for d in &rep.dimensions {
        for part in d.value.split(',').map(str::trim) {
            let part_sp = Sp::new(part.to_string(), d.pos);
            let d = &part_sp;
            if !TIME_BUCKETS.contains(&d.value.as_str()) && !names.contains(&d.value) {
                err(
                    diags,
                    file,
                    d.pos,
                    DiagCode::UnknownField,
                    format!("`by` names `{}`, which is neither a time bucket nor a field of this report's rows", d.value),
                    did_you_mean(&d.value, names.iter().map(String::as_str).chain(TIME_BUCKETS)),
                );
            }
        }
    }
    let check_condition = |diags: &mut Vec<Diagnostic>, c: &(Sp<String>, Condition)| {
        for f in c.1.fields() {
            if !names.iter().any(|n| n == f) {
                err(
                    diags,
                    file,
                    c.0.pos,
                    DiagCode::UnknownField,
                    format!("the condition reads `{f}`, which is not a field of this report's rows"),
                    did_you_mean(f, names.iter().map(String::as_str)),
                );
            }
        }
    };
    if let Some(c) = &rep.filter {
        check_condition(diags, c);
    }
    if rep.measures.is_empty() {
        err(
            diags,
            file,
            rep.pos,
            DiagCode::MissingKey,
            format!("report `{}` has no measures", rep.name),
            Some("e.g. `measures: { orders: { count: true } }`".into()),
        );
    }
    for m in &rep.measures {
        if let Some(f) = &m.field {
            known(diags, f, &format!("measure `{}`:", m.name));
        }
        if let Some((a, b, cal)) = &m.between {
            known(diags, a, &format!("measure `{}`:", m.name));
            known(diags, b, &format!("measure `{}`:", m.name));
            if let Some(c) = cal
                && !model.calendars.contains_key(&c.value)
            {
                err(
                    diags,
                    file,
                    c.pos,
                    DiagCode::UnknownCalendar,
                    format!("unknown calendar `{}`", c.value),
                    did_you_mean(&c.value, model.calendars.keys().map(String::as_str)),
                );
            }
        }
        if let Some(c) = &m.condition {
            check_condition(diags, c);
        }
        if let Some(c) = &m.filter {
            check_condition(diags, c);
        }
        if m.kind != MeasureKind::Count && m.kind != MeasureKind::Share && m.field.is_none() && m.between.is_none() {
            err(diags, file, m.pos, DiagCode::MissingKey, format!("measure `{}` needs a field", m.name), None);
        }
    }
    for role in &rep.roles {
        if !model.roles.contains_key(&role.value) && role.value != EVERYONE {
            err(
                diags,
                file,
                role.pos,
                DiagCode::UnknownRole,
                format!("unknown role `{}`", role.value),
                did_you_mean(&role.value, model.roles.keys().map(String::as_str)),
            );
        }
    }
}

fn check_dashboard(model: &Model, d: &DashboardDef, diags: &mut Vec<Diagnostic>) {
    let file = d.file.as_str();
    for role in &d.roles {
        if !model.roles.contains_key(&role.value) {
            err(
                diags,
                file,
                role.pos,
                DiagCode::UnknownRole,
                format!("unknown role `{}`", role.value),
                did_you_mean(&role.value, model.roles.keys().map(String::as_str)),
            );
        }
    }
    for t in &d.tiles {
        let Some(rep) = model.reports.get(&t.report.value) else {
            err(
                diags,
                file,
                t.report.pos,
                DiagCode::UnknownReport,
                format!("unknown report `{}`", t.report.value),
                did_you_mean(&t.report.value, model.reports.keys().map(String::as_str)),
            );
            continue;
        };
        if let Some(by) = &t.by
            && !rep.dimensions.iter().any(|x| x.value == by.value)
        {
            err(
                diags,
                file,
                by.pos,
                DiagCode::UnknownField,
                format!("report `{}` is not grouped by `{}`", rep.name, by.value),
                did_you_mean(&by.value, rep.dimensions.iter().map(|x| x.value.as_str())),
            );
        }
        if let Some(m) = &t.measure
            && !rep.measures.iter().any(|x| x.name == m.value)
        {
            err(
                diags,
                file,
                m.pos,
                DiagCode::UnknownField,
                format!("report `{}` has no measure `{}`", rep.name, m.value),
                did_you_mean(&m.value, rep.measures.iter().map(|x| x.name.as_str())),
            );
        }
        if let Some(c) = &t.chart
            && !CHARTS.contains(&c.value.as_str())
        {
            err(diags, file, c.pos, DiagCode::InvalidValue, format!("`chart: {}` is not known", c.value), Some(format!("charts: {}", CHARTS.join(", "))));
        }
    }
}
