//! Sources → [`Model`]: parse every file, read it into typed definitions,
//! collecting every diagnostic.

use crate::DiagCode;
use crate::condition::Condition;
use crate::defs::*;
use crate::diagnostic::{Diagnostic, Pos, did_you_mean};
use crate::grammar;
use crate::label::Label;
use crate::node::{self, Node, Value};
use crate::reader::{MapView, Reader, Sp};
use crate::sources::{SourceKind, Sources};
use std::collections::BTreeMap;

/// Reads all sources. Problems are appended to `diags`; the model holds whatever
/// could be read, so that later checks still find the rest of the problems.
pub fn load(sources: &Sources, diags: &mut Vec<Diagnostic>) -> Model {
    let mut model = Model {
        app: App {
            name: "app".into(),
            title: Label::plain("Flowform"),
            default_language: "zh-CN".into(),
            timezone: None,
            roster: None,
            teams_from: None,
            file: String::new(),
        },
        ..Model::default()
    };
    let mut app_seen: Option<(String, Pos)> = None;
    for (path, text) in sources.iter() {
        match SourceKind::of(path) {
            Some(SourceKind::Script) => {
                let name = crate::sources::script_name(path);
                model.scripts.insert(name.clone(), ScriptSource { name, file: path.to_string(), text: text.to_string() });
            }
            Some(SourceKind::Definition) => {
                let Some(root) = parse(path, text, diags) else {
                    model.unreadable.insert(stem(path));
                    continue;
                };
                let mut r = Reader::new(path, diags);
                load_definition_file(&mut r, &root, &mut model, &mut app_seen);
            }
            Some(SourceKind::Form) => {
                let Some(root) = parse(path, text, diags) else {
                    model.unreadable.insert(stem(path));
                    continue;
                };
                let mut r = Reader::new(path, diags);
                if let Some(form) = load_form(&mut r, &root) {
                    insert_unique(&mut r, &mut model.forms, form.name.clone(), form.pos, "form", |f| (&f.file, f.pos), form);
                }
                model.unreadable.extend(std::mem::take(&mut r.broken));
            }
            None => {}
        }
    }
    // Schedules without a time zone of their own take the app's.
    for sc in model.schedules.values_mut() {
        if sc.timezone.value.is_empty() {
            match &model.app.timezone {
                Some(tz) => sc.timezone = Sp::new(tz.value.clone(), sc.timezone.pos),
                None => diags.push(
                    Diagnostic::new(&sc.file, sc.pos, DiagCode::MissingKey, format!("schedule `{}` needs a time zone", sc.name))
                        .with_hint(Some("set `timezone: Asia/Shanghai` in the schedule, or once for the app under `app:`".into())),
                ),
            }
        }
    }
    model
}

/// `forms/parts_return.yaml` → `parts_return`: the name a file usually defines.
fn stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split('.').next().unwrap_or(file).to_string()
}

fn parse(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Node> {
    match node::parse(path, text) {
        Ok(root) if root.value == Value::Null => {
            diags.push(
                Diagnostic::new(path, Pos::new(1, 1), DiagCode::EmptyFile, "the file is empty")
                    .with_hint(Some("remove the file or write a definition in it".into())),
            );
            None
        }
        Ok(root) => Some(root),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

fn insert_unique<T>(r: &mut Reader, map: &mut BTreeMap<String, T>, name: String, pos: Pos, what: &str, locate: impl Fn(&T) -> (&String, Pos), value: T) {
    if let Some(existing) = map.get(&name) {
        let (file, at) = locate(existing);
        let msg = format!("{what} `{name}` is defined twice (first at {file}:{}:{})", at.line, at.column);
        r.error(pos, DiagCode::DuplicateName, msg, Some(format!("rename one of the {what}s")));
    } else {
        map.insert(name, value);
    }
}

fn load_definition_file(r: &mut Reader, root: &Node, model: &mut Model, app_seen: &mut Option<(String, Pos)>) {
    let Some(map) = r.map(root, "a definition file") else {
        return;
    };
    if map.get("record").is_some() && map.get("workflow").is_none() {
        if let Some(rt) = load_record_type(r, &map.as_kind(&grammar::RECORD)) {
            insert_unique(r, &mut model.record_types, rt.name.clone(), rt.pos, "record type", |d| (&d.file, d.pos), rt);
        }
        return;
    }
    if map.get("schedule").is_some() {
        if let Some(d) = load_schedule(r, &map.as_kind(&grammar::SCHEDULE)) {
            insert_unique(r, &mut model.schedules, d.name.clone(), d.pos, "schedule", |d| (&d.file, d.pos), d);
        }
        return;
    }
    if map.get("webhook").is_some() {
        if let Some(w) = load_webhook(r, &map.as_kind(&grammar::WEBHOOK)) {
            insert_unique(r, &mut model.webhooks, w.name.clone(), w.pos, "webhook", |d| (&d.file, d.pos), w);
        }
        return;
    }
    if map.get("calendar").is_some() {
        if let Some(c) = load_calendar(r, &map.as_kind(&grammar::CALENDAR)) {
            insert_unique(r, &mut model.calendars, c.name.clone(), c.pos, "calendar", |d| (&d.file, d.pos), c);
        }
        return;
    }
    if map.get("template").is_some() {
        if let Some(t) = load_template(r, &map.as_kind(&grammar::TEMPLATE)) {
            insert_unique(r, &mut model.templates, t.name.clone(), t.pos, "template", |d| (&d.file, d.pos), t);
        }
        return;
    }
    if map.get("dashboard").is_some() {
        if let Some(d) = load_dashboard(r, &map.as_kind(&grammar::DASHBOARD)) {
            insert_unique(r, &mut model.dashboards, d.name.clone(), d.pos, "dashboard", |d| (&d.file, d.pos), d);
        }
        return;
    }
    if map.get("report").is_some() {
        if let Some(rep) = load_report(r, &map.as_kind(&grammar::REPORT)) {
            insert_unique(r, &mut model.reports, rep.name.clone(), rep.pos, "report", |d| (&d.file, d.pos), rep);
        }
        return;
    }
    if map.get("ledger").is_some() {
        if let Some(l) = load_ledger(r, &map.as_kind(&grammar::LEDGER)) {
            insert_unique(r, &mut model.ledgers, l.name.clone(), l.pos, "ledger", |d| (&d.file, d.pos), l);
        }
        return;
    }
    if map.get("workflow").is_some() {
        if let Some(wf) = load_workflow(r, &map.as_kind(&grammar::WORKFLOW)) {
            insert_unique(r, &mut model.workflows, wf.name.clone(), wf.pos, "workflow", |w| (&w.file, w.pos), wf);
        }
        return;
    }
    let map = map.as_kind(&grammar::SETTINGS);
    let mut known = false;
    if let Some(app) = map.get("app") {
        known = true;
        if let Some((file, pos)) = app_seen {
            let msg = format!("`app` settings are given twice (first at {file}:{}:{})", pos.line, pos.column);
            r.error(app.pos, DiagCode::DuplicateName, msg, None);
        } else {
            *app_seen = Some((r.file.to_string(), app.pos));
            load_app(r, app, &mut model.app);
        }
    }
    if let Some(roles) = map.get("roles") {
        known = true;
        for (name, label) in named_entries(r, roles, "role") {
            let def = RoleDef { name: name.value.clone(), label, file: r.file.to_string(), pos: name.pos };
            insert_unique(r, &mut model.roles, name.value, name.pos, "role", |d| (&d.file, d.pos), def);
        }
    }
    if let Some(teams) = map.get("teams") {
        known = true;
        for (name, label) in named_entries(r, teams, "team") {
            let def = TeamDef { name: name.value.clone(), label, file: r.file.to_string(), pos: name.pos };
            insert_unique(r, &mut model.teams, name.value, name.pos, "team", |d| (&d.file, d.pos), def);
        }
    }
    if !known && map.entries().is_empty() {
        r.error(map.pos, DiagCode::UnknownDefinition, "the file defines nothing", None);
    }
    if !known {
        r.error(
            map.pos,
            DiagCode::UnknownDefinition,
            "a definition file must start with `workflow:`, `record:`, `ledger:`, `template:`, `webhook:`, `calendar:` or `schedule:`, or hold `app:`, `roles:` or `teams:`",
            None,
        );
        return;
    }
    map.finish(r, "a settings file");
}

fn load_app(r: &mut Reader, node: &Node, app: &mut App) {
    let Some(map) = r.map_of(node, "`app`", &grammar::APP) else {
        return;
    };
    if let Some(n) = map.get("name").and_then(|n| r.name(n, "the app name")) {
        app.name = n.value;
    }
    if let Some(l) = map.get("title").and_then(|n| r.label(n, "the app title")) {
        app.title = l;
    }
    if let Some(n) = map.get("default_language").and_then(|n| r.string(n, "the default language")) {
        if crate::label::LANGUAGES.contains(&n.value.as_str()) {
            app.default_language = n.value;
        } else {
            r.error(
                n.pos,
                DiagCode::UnknownLanguage,
                format!("unknown language `{}`", n.value),
                did_you_mean(&n.value, crate::label::LANGUAGES.iter().copied()),
            );
        }
    }
    if let Some(n) = map.get("timezone").and_then(|n| r.string(n, "the time zone")) {
        app.timezone = Some(n);
    }
    app.roster = map.get("roster").and_then(|n| r.name(n, "the record type of the duty roster"));
    app.teams_from = map.get("teams_from").and_then(|n| r.name(n, "the record type of the teams"));
    app.file = r.file.to_string();
    map.finish(r, "`app`");
}

/// `{name: {label: ...}}` or `{name: label}` entries of roles and teams.
fn named_entries(r: &mut Reader, node: &Node, what: &str) -> Vec<(Sp<String>, Label)> {
    let Some(map) = r.map(node, &format!("the {what}s")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in map.entries() {
        let Some(name) = r.name(k, &format!("a {what} name")) else {
            continue;
        };
        let label = match &v.value {
            Value::Map(_) if v.get("label").is_some() || v.get("description").is_some() => {
                let Some(m) = r.map_of(v, what, &grammar::ROLE) else { continue };
                let label = m.get("label").and_then(|l| r.label(l, "a label")).unwrap_or_default();
                m.get("description").and_then(|l| r.label(l, "a description"));
                m.finish(r, &format!("{what} `{}`", name.value));
                label
            }
            Value::Null => Label::default(),
            _ => r.label(v, "a label").unwrap_or_default(),
        };
        out.push((name.clone(), label.or_name(&name.value)));
    }
    out
}

fn opt_label(r: &mut Reader, map: &MapView, key: &'static str, what: &str) -> Label {
    map.get(key).and_then(|n| r.label(n, what)).unwrap_or_default()
}

fn load_hooks(r: &mut Reader, map: &MapView) -> Hooks {
    let mut script = |key: &'static str| map.get(key).and_then(|n| r.string(n, &format!("`{key}` (a script name under rules/)")));
    Hooks { validate: script("validate"), route: script("route"), compute: script("compute"), post: script("post") }
}

fn load_workflow(r: &mut Reader, map: &MapView) -> Option<WorkflowDef> {
    let name = map.require(r, "workflow", "a workflow").and_then(|n| r.name(n, "the workflow name"));
    let title = opt_label(r, map, "title", "the title");
    let description = opt_label(r, map, "description", "the description");
    let record = map.get("record").and_then(|n| r.name(n, "the record type")).map(|s| s.value);
    let number = map.get("number").and_then(|n| r.string(n, "`number`"));
    let start = match map.require(r, "start", "a workflow") {
        Some(node) => load_start(r, node),
        None => None,
    };
    let initial = map.require(r, "initial", "a workflow").and_then(|n| r.name(n, "the initial state"));
    let mut states = Vec::new();
    if let Some(node) = map.require(r, "states", "a workflow")
        && let Some(smap) = r.map(node, "`states`")
    {
        for (k, v) in smap.entries() {
            let Some(sname) = r.name(k, "a state name") else {
                continue;
            };
            if states.iter().any(|s: &StateDef| s.name == sname.value) {
                continue; // the YAML parser already reported the duplicate key
            }
            if let Some(state) = load_state(r, sname, v) {
                states.push(state);
            }
        }
        if smap.entries().is_empty() {
            r.error(smap.pos, DiagCode::MissingKey, "a workflow needs at least one state", None);
        }
    }
    let mut transitions: Vec<TransitionDef> = Vec::new();
    if let Some(node) = map.get("transitions") {
        match &node.value {
            Value::Seq(items) => {
                for item in items {
                    if let Some(t) = load_transition(r, item) {
                        if let Some(first) = transitions.iter().find(|x| x.name == t.name) {
                            let msg = format!("transition `{}` is defined twice (first at line {})", t.name, first.pos.line);
                            r.error(
                                t.pos,
                                DiagCode::DuplicateName,
                                msg,
                                Some("give each transition its own name; list several states in `from` instead".into()),
                            );
                        } else {
                            transitions.push(t);
                        }
                    }
                }
            }
            _ => r.error(
                node.pos,
                DiagCode::WrongType,
                format!("`transitions` must be a list, found {}", node.type_name()),
                Some("write each transition on a line starting with `- `".into()),
            ),
        }
    }
    let on_assigned = map.get("on_assigned").map(|n| load_notify_list(r, n)).unwrap_or_default();
    let mut deadlines = Vec::new();
    if let Some(n) = map.get("deadlines")
        && let Some(dm) = r.map(n, "`deadlines`")
    {
        for (k, v) in dm.entries() {
            if let Some(name) = r.name(k, "a deadline name")
                && let Some(d) = load_deadline(r, name, v)
            {
                deadlines.push(d);
            }
        }
    }
    let on_new_version = map.get("on_new_version").and_then(|n| r.string(n, "`on_new_version`")).map_or(OnNewVersion::Keep, |s| match s.value.as_str() {
        "keep" => OnNewVersion::Keep,
        "migrate" => OnNewVersion::Migrate,
        other => {
            r.error(s.pos, DiagCode::InvalidValue, format!("`on_new_version: {other}` is not known"), Some("use `keep` (the default) or `migrate`".into()));
            OnNewVersion::Keep
        }
    });
    let visible_to = map.get("visible_to").map(|n| {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        let mut out = Vec::new();
        for item in items {
            let Some(text) = r.string(item, "an entry of `visible_to`") else { continue };
            match Audience::parse(&text.value) {
                Some(a) => out.push(Sp::new(a, text.pos)),
                None => r.error(
                    text.pos,
                    DiagCode::InvalidValue,
                    format!("`{}` is not an audience of `visible_to`", text.value),
                    Some("use requester, assignee, team, department, or role:NAME (e.g. role:manager)".into()),
                ),
            }
        }
        out
    });
    map.finish(r, "a workflow");
    let name = name?;
    Some(WorkflowDef {
        visible_to,
        number,
        title: title.or_name(&name.value),
        name: name.value,
        file: r.file.to_string(),
        pos: name.pos,
        description,
        record,
        start: start?,
        initial: initial?,
        states,
        transitions,
        on_new_version,
        on_assigned,
        deadlines,
    })
}

/// One entry of `deadlines:`.
fn load_deadline(r: &mut Reader, name: Sp<String>, node: &Node) -> Option<DeadlineDef> {
    let what = format!("deadline `{}`", name.value);
    let m = r.map_of(node, &what, &grammar::DEADLINE)?;
    let label = opt_label(r, &m, "label", "the label").or_name(&name.value);
    let from = m.get("from").and_then(|n| r.name(n, "`start` or a transition")).filter(|f| f.value != "start");
    let minutes = m.require(r, "minutes", &what).and_then(|n| amount(r, n, "`minutes`"));
    let calendar = m.get("calendar").and_then(|n| r.name(n, "the calendar"));
    let until = m.get("until").map(|n| r.name_list(n, "a state")).unwrap_or_default();
    let paused_in = m.get("paused_in").map(|n| r.name_list(n, "a state")).unwrap_or_default();
    let mut escalations = Vec::new();
    if let Some(n) = m.get("escalations") {
        match &n.value {
            Value::Seq(items) => escalations.extend(items.iter().filter_map(|i| load_timer(r, i, "an escalation"))),
            _ => r.error(n.pos, DiagCode::WrongType, format!("`escalations` must be a list, found {}", n.type_name()), None),
        }
    }
    let notify = m.get("notify").map(|n| load_notify_list(r, n)).unwrap_or_default();
    let set = match m.get("set").map(|n| (n.pos, n.to_json())) {
        Some((_, serde_json::Value::Object(o))) => o,
        Some((pos, _)) => {
            r.error(pos, DiagCode::WrongType, "`set` must be a mapping of fields to values".to_string(), None);
            serde_json::Map::new()
        }
        None => serde_json::Map::new(),
    };
    m.finish(r, &format!("{what} (label, from, minutes, calendar, until, paused_in, escalations, notify, set)"));
    Some(DeadlineDef { name: name.value, pos: name.pos, label, from, minutes: minutes?, calendar, until, paused_in, escalations, notify, set })
}

fn load_start(r: &mut Reader, node: &Node) -> Option<StartDef> {
    let map = r.map_of(node, "`start`", &grammar::START)?;
    let form = map.get("form").and_then(|n| r.name(n, "the start form"));
    let roles = map.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
    let hooks = load_hooks(r, &map);
    let notify = map.get("notify").map(|n| load_notify_list(r, n)).unwrap_or_default();
    let update = map.get("update").map(|n| load_updates(r, n)).unwrap_or_default();
    map.finish(r, "`start`");
    Some(StartDef { pos: map.pos, form, roles, hooks, notify, update })
}

/// `update: { REF: { FIELD: value, … }, … }`.
fn load_updates(r: &mut Reader, node: &Node) -> Vec<RecordUpdateDef> {
    let mut out = Vec::new();
    let Some(map) = r.map(node, "`update`") else { return out };
    for (k, v) in map.entries() {
        let Some(reference) = r.name(k, "a `ref` field of the instance") else { continue };
        let Some(fields) = r.map(v, "the fields to set") else { continue };
        let mut set = Vec::new();
        for (fk, fv) in fields.entries() {
            if let Some(name) = r.name(fk, "a field of the record") {
                set.push((name, fv.to_json()));
            }
        }
        out.push(RecordUpdateDef { reference, set });
    }
    out
}

fn load_state(r: &mut Reader, name: Sp<String>, node: &Node) -> Option<StateDef> {
    let mut state = StateDef {
        name: name.value.clone(),
        pos: name.pos,
        label: Label::default(),
        description: Label::default(),
        is_final: false,
        color: None,
        sla: None,
        sla_calendar: None,
        sla_notify: Vec::new(),
        timers: Vec::new(),
    };
    if node.value == Value::Null {
        state.label = Label::plain(&name.value);
        return Some(state);
    }
    let map = r.map_of(node, &format!("state `{}`", name.value), &grammar::STATE)?;
    state.label = opt_label(r, &map, "label", "the label").or_name(&name.value);
    state.description = opt_label(r, &map, "description", "the description");
    state.is_final = map.get("final").and_then(|n| r.bool(n, "`final`")).unwrap_or(false);
    state.color = map.get("color").and_then(|n| r.string(n, "`color`")).map(|s| s.value);
    if let Some(n) = map.get("sla")
        && let Some(m) = r.map_of(n, "`sla`", &grammar::SLA)
    {
        state.sla = m.require(r, "minutes", "`sla`").and_then(|n| amount(r, n, "`minutes`"));
        state.sla_calendar = m.get("calendar").and_then(|n| r.name(n, "the calendar"));
        state.sla_notify = m.get("notify").map(|n| load_notify_list(r, n)).unwrap_or_default();
        m.finish(r, "`sla`");
    }
    if let Some(n) = map.get("escalations") {
        match &n.value {
            Value::Seq(items) => state.timers.extend(items.iter().filter_map(|i| load_timer(r, i, "an escalation"))),
            _ => r.error(
                n.pos,
                DiagCode::WrongType,
                format!("`escalations` must be a list, found {}", n.type_name()),
                Some("write each step on a line starting with `- `".into()),
            ),
        }
    }
    if let Some(n) = map.get("after")
        && let Some(t) = load_timer(r, n, "`after`")
    {
        if t.transition.is_none() {
            r.error(
                t.pos,
                DiagCode::MissingKey,
                "`after` needs a `transition` to take".to_string(),
                Some("e.g. `after: { minutes: 4320, transition: auto_close }`".into()),
            );
        }
        state.timers.push(t);
    }
    map.finish(r, &format!("state `{}`", name.value));
    Some(state)
}

fn load_transition(r: &mut Reader, node: &Node) -> Option<TransitionDef> {
    let map = r.map_of(node, "a transition", &grammar::TRANSITION)?;
    let name = map.require(r, "name", "a transition").and_then(|n| r.name(n, "the transition name"));
    let label = opt_label(r, &map, "label", "the label");
    let from = match map.require(r, "from", "a transition") {
        Some(n) => r.name_list(n, "a state name"),
        None => Vec::new(),
    };
    let to = map.get("to").and_then(|n| r.name(n, "the target state"));
    let roles = map.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
    let teams = map.get("teams").map(|n| r.name_list(n, "a team")).unwrap_or_default();
    // `when: "condition"`, or `when: {condition: "...", message: {zh-CN: ..., en: ...}}`.
    let (when, when_message) = match map.get("when") {
        Some(n) if matches!(n.value, Value::Map(_)) => match r.map_of(n, "`when`", &grammar::WHEN) {
            Some(m) => {
                let condition = m.require(r, "condition", "`when`").and_then(|c| r.string(c, "`condition` (a Rhai condition)"));
                let message = m.get("message").and_then(|l| r.label(l, "the message")).unwrap_or_default();
                m.finish(r, "`when`");
                (condition, message)
            }
            None => (None, Label::default()),
        },
        Some(n) => (r.string(n, "`when` (a Rhai condition)"), Label::default()),
        None => (None, Label::default()),
    };
    let form = map.get("form").and_then(|n| r.name(n, "the form name"));
    let update = map.get("update").map(|n| load_updates(r, n)).unwrap_or_default();
    let starts = map.get("starts").map(|n| load_linked_starts(r, n)).unwrap_or_default();
    let hooks = load_hooks(r, &map);
    let assign = map.get("assign").and_then(|n| r.string(n, "`assign`")).and_then(|s| match s.value.as_str() {
        "actor" => Some(Assign::Actor),
        "nobody" => Some(Assign::Nobody),
        other => {
            r.error(
                s.pos,
                DiagCode::InvalidValue,
                format!("`assign: {other}` is not known"),
                Some("use `actor` (the one who acts becomes the assignee) or `nobody`".into()),
            );
            None
        }
    });
    let notify = map.get("notify").map(|n| load_notify_list(r, n)).unwrap_or_default();
    let what = name.as_ref().map_or_else(|| "a transition".to_string(), |n| format!("transition `{}`", n.value));
    map.finish(r, &what);
    let name = name?;
    Some(TransitionDef {
        label: label.or_name(&name.value),
        name: name.value,
        pos: name.pos,
        from,
        to,
        roles,
        teams,
        when,
        when_message,
        form,
        hooks,
        assign,
        notify,
        update,
        starts,
    })
}

/// `starts:` of a transition: a mapping or a list of them.
fn load_linked_starts(r: &mut Reader, node: &Node) -> Vec<LinkedStartDef> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    let mut out = Vec::new();
    for item in items {
        let Some(m) = r.map_of(item, "`starts`", &grammar::LINKED_START) else { continue };
        let workflow = m.require(r, "workflow", "`starts`").and_then(|n| r.name(n, "the workflow"));
        let for_each = m.get("for_each").and_then(|n| r.name(n, "a `group` field"));
        let condition = m.get("where").and_then(|n| condition(r, n, "where"));
        let roles = m.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
        let data = match m.get("data").map(|d| (d.pos, d.to_json())) {
            Some((_, serde_json::Value::Object(o))) => o,
            Some((pos, _)) => {
                r.error(
                    pos,
                    DiagCode::WrongType,
                    "`data` must be a mapping of start-form fields".to_string(),
                    Some("e.g. `data: { asset: \"{asset}\" }`".into()),
                );
                serde_json::Map::new()
            }
            None => serde_json::Map::new(),
        };
        m.finish(r, "`starts` (workflow, for_each, where, roles, data)");
        if let Some(workflow) = workflow {
            out.push(LinkedStartDef { pos: m.pos, workflow, for_each, condition, roles, data });
        }
    }
    out
}

fn load_form(r: &mut Reader, root: &Node) -> Option<FormDef> {
    let map = r.map_of(root, "a form file", &grammar::FORM)?;
    let name = map.require(r, "form", "a form file").and_then(|n| r.name(n, "the form name"));
    let title = opt_label(r, &map, "title", "the title");
    let fields = match map.require(r, "fields", "a form") {
        Some(n) => load_fields(r, n),
        None => Vec::new(),
    };
    map.finish(r, "a form");
    let name = name?;
    Some(FormDef { title: title.or_name(&name.value), name: name.value, file: r.file.to_string(), pos: name.pos, fields })
}

fn load_fields(r: &mut Reader, node: &Node) -> Vec<FieldDef> {
    let Some(map) = r.map(node, "`fields`") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in map.entries() {
        let Some(name) = r.name(k, "a field name") else {
            continue;
        };
        if let Some(field) = load_field(r, name, v) {
            out.push(field);
        }
    }
    out
}

const COMMON_FIELD_KEYS: &[&str] =
    &["type", "label", "help", "placeholder", "widget", "required", "default", "visible_when", "required_when", "from", "editable"];

fn load_field(r: &mut Reader, name: Sp<String>, node: &Node) -> Option<FieldDef> {
    let what = format!("field `{}`", name.value);
    let map = r.map_of(node, &what, &grammar::FIELD)?;
    let type_node = map.require(r, "type", &what)?;
    let type_name = r.string(type_node, "the field type")?;
    let Some(field_type) = FieldType::ALL.iter().find(|(n, _)| *n == type_name.value).map(|(_, t)| *t) else {
        r.error(
            type_name.pos,
            DiagCode::UnknownFieldType,
            format!("unknown field type `{}`", type_name.value),
            did_you_mean(&type_name.value, FieldType::ALL.iter().map(|(n, _)| *n))
                .or_else(|| Some(format!("field types: {}", FieldType::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))),
        );
        r.broken.push(name.value.clone());
        return None;
    };
    let mut f = FieldDef {
        name: name.value.clone(),
        pos: name.pos,
        field_type,
        label: opt_label(r, &map, "label", "the label").or_name(&name.value),
        help: opt_label(r, &map, "help", "the help text"),
        placeholder: opt_label(r, &map, "placeholder", "the placeholder"),
        widget: map.get("widget").and_then(|n| r.string(n, "`widget`")).map(|s| s.value),
        required: map.get("required").and_then(|n| r.bool(n, "`required`")).unwrap_or(false),
        default: map.get("default").map(|n| Sp::new(n.to_json(), n.pos)),
        visible_when: map.get("visible_when").and_then(|n| condition(r, n, "visible_when")),
        required_when: map.get("required_when").and_then(|n| condition(r, n, "required_when")),
        from: map.get("from").and_then(|n| r.string(n, "`from` (REF.FIELD)")),
        editable: map.get("editable").and_then(|n| r.bool(n, "`editable`")).unwrap_or(false),
        min_length: None,
        max_length: None,
        pattern: None,
        min: None,
        max: None,
        unit: None,
        options: Vec::new(),
        multiple: false,
        record: None,
        filter: None,
        accept: None,
        max_size: None,
        fields: Vec::new(),
    };
    // Keys of other types are read too, so a misplaced key gets a precise message.
    let specific = field_type.specific_keys();
    let misplaced = |r: &mut Reader, key: &'static str, node: &Node| {
        if !specific.contains(&key) {
            r.error(
                node.pos,
                DiagCode::KeyNotForType,
                format!("`{key}` does not apply to a field of type `{}`", field_type.name()),
                Some(if specific.is_empty() { "remove it".to_string() } else { format!("keys for this type: {}", specific.join(", ")) }),
            );
            return true;
        }
        false
    };
    for key in ["min_length", "max_length", "max_size"] {
        if let Some(n) = map.get(key) {
            if misplaced(r, key, n) {
                continue;
            }
            match r.int(n, &format!("`{key}`")) {
                Some(v) if v >= 0 => {
                    let v = Some(v as u64);
                    match key {
                        "min_length" => f.min_length = v,
                        "max_length" => f.max_length = v,
                        _ => f.max_size = v,
                    }
                }
                Some(_) => r.error(n.pos, DiagCode::InvalidValue, format!("`{key}` cannot be negative"), None),
                None => {}
            }
        }
    }
    for key in ["min", "max"] {
        if let Some(n) = map.get(key) {
            if misplaced(r, key, n) {
                continue;
            }
            let v = r.number(n, &format!("`{key}`"));
            if key == "min" { f.min = v } else { f.max = v }
        }
    }
    if let (Some(lo), Some(hi)) = (f.min, f.max)
        && lo > hi
    {
        r.error(map.pos, DiagCode::InvalidValue, format!("{what}: `min` ({lo}) is greater than `max` ({hi})"), None);
    }
    if let (Some(lo), Some(hi)) = (f.min_length, f.max_length)
        && lo > hi
    {
        r.error(map.pos, DiagCode::InvalidValue, format!("{what}: `min_length` ({lo}) is greater than `max_length` ({hi})"), None);
    }
    if let Some(n) = map.get("pattern")
        && !misplaced(r, "pattern", n)
        && let Some(p) = r.string(n, "`pattern`")
    {
        if let Err(e) = regex::Regex::new(&p.value) {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("invalid").trim().trim_start_matches("error: ");
            r.error(
                p.pos,
                DiagCode::InvalidPattern,
                format!("`pattern` is not a valid regular expression: {last}"),
                Some("patterns use Rust/ECMAScript regex syntax, e.g. `^EQ-[0-9]{6}$`".into()),
            );
        } else {
            f.pattern = Some(p);
        }
    }
    if let Some(n) = map.get("unit")
        && !misplaced(r, "unit", n)
    {
        f.unit = r.string(n, "`unit`").map(|s| s.value);
    }
    if let Some(n) = map.get("multiple")
        && !misplaced(r, "multiple", n)
    {
        f.multiple = r.bool(n, "`multiple`").unwrap_or(false);
    }
    if let Some(n) = map.get("record")
        && !misplaced(r, "record", n)
    {
        f.record = r.name(n, "the record type");
    }
    if let Some(n) = map.get("where")
        && !misplaced(r, "where", n)
    {
        f.filter = condition(r, n, "where");
    }
    if let Some(n) = map.get("accept")
        && !misplaced(r, "accept", n)
    {
        f.accept = r.string(n, "`accept`").map(|s| s.value);
    }
    if let Some(n) = map.get("options")
        && !misplaced(r, "options", n)
    {
        f.options = load_options(r, n);
    }
    if let Some(n) = map.get("fields")
        && !misplaced(r, "fields", n)
    {
        f.fields = load_fields(r, n);
    }
    match field_type {
        FieldType::Enum if f.options.is_empty() => {
            r.error(map.pos, DiagCode::MissingKey, format!("{what} of type `enum` needs `options`"), Some("e.g. `options: [low, normal, urgent]`".into()))
        }
        FieldType::Ref if f.record.is_none() => {
            r.error(map.pos, DiagCode::MissingKey, format!("{what} of type `ref` needs `record` (the record type it points at)"), None)
        }
        FieldType::Group if f.fields.is_empty() => {
            r.error(map.pos, DiagCode::MissingKey, format!("{what} of type `group` needs `fields` (the fields of one item)"), None)
        }
        _ => {}
    }
    map.allow(COMMON_FIELD_KEYS);
    for key in ["min_length", "max_length", "pattern", "min", "max", "unit", "options", "multiple", "record", "where", "accept", "max_size", "fields"] {
        map.allow(&[key]);
    }
    map.finish(r, &what);
    Some(f)
}

fn condition(r: &mut Reader, node: &Node, key: &str) -> Option<(Sp<String>, Condition)> {
    let src = r.string(node, &format!("`{key}`"))?;
    match Condition::parse(&src.value) {
        Ok(c) => Some((src, c)),
        Err(e) => {
            // Points into the condition text (one column off when the YAML quotes it).
            let pos = Pos::new(src.pos.line, src.pos.column + e.offset as u32 + 1);
            r.error(
                pos,
                DiagCode::InvalidCondition,
                format!("`{key}` cannot be read: {}", e.message),
                Some("conditions look like `priority == 'urgent'`, combined with && || ! and `in [..]`".into()),
            );
            None
        }
    }
}

fn load_options(r: &mut Reader, node: &Node) -> Vec<EnumOption> {
    let Value::Seq(items) = &node.value else {
        r.error(
            node.pos,
            DiagCode::WrongType,
            format!("`options` must be a list, found {}", node.type_name()),
            Some("e.g. `options: [low, normal, urgent]`".into()),
        );
        return Vec::new();
    };
    let mut out: Vec<EnumOption> = Vec::new();
    for item in items {
        let option = match &item.value {
            Value::Map(_) => {
                let Some(m) = r.map_of(item, "an option", &grammar::OPTION) else {
                    continue;
                };
                let value = m.require(r, "value", "an option").and_then(|n| r.string(n, "the option value"));
                let label = opt_label(r, &m, "label", "the option label");
                m.finish(r, "an option");
                let Some(value) = value else { continue };
                EnumOption { label: label.or_name(&value.value), value: value.value, pos: value.pos }
            }
            _ => {
                let Some(value) = r.string(item, "an option") else {
                    continue;
                };
                EnumOption { label: Label::plain(&value.value), value: value.value, pos: value.pos }
            }
        };
        if out.iter().any(|o| o.value == option.value) {
            r.error(option.pos, DiagCode::DuplicateName, format!("option `{}` is listed twice", option.value), None);
            continue;
        }
        out.push(option);
    }
    out
}

fn load_record_type(r: &mut Reader, map: &MapView) -> Option<RecordTypeDef> {
    let name = map.require(r, "record", "a record type").and_then(|n| r.name(n, "the record type name"));
    let title = opt_label(r, map, "title", "the title");
    let form = map.require(r, "form", "a record type").and_then(|n| r.name(n, "the form"));
    let key = map.require(r, "key", "a record type").and_then(|n| r.string(n, "`key`"));
    let display = map.get("display").and_then(|n| r.string(n, "`display`"));
    let search = map.get("search").map(|n| r.name_list(n, "a field")).unwrap_or_default();
    let filters = map.get("filters").map(|n| r.name_list(n, "a field")).unwrap_or_default();
    let parent = map.get("parent").and_then(|n| r.name(n, "the parent field"));
    let roles = map.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
    let mut access = RecordAccess::default();
    if !roles.is_empty() {
        for op in [RecordOp::Create, RecordOp::Update, RecordOp::Archive] {
            access.grants.push((op, roles.clone()));
        }
    }
    if let Some(n) = map.get("access")
        && let Some(m) = r.map_of(n, "`access`", &grammar::RECORD_ACCESS)
    {
        for (key, op) in RecordOp::ALL {
            if let Some(list) = m.get(key) {
                access.grants.push((op, r.name_list(list, "a role")));
            }
        }
        m.finish(r, "`access` (read, create, update, archive, purge)");
    }
    let mut starts = Vec::new();
    if let Some(n) = map.get("starts") {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        for item in items {
            let Some(m) = r.map_of(item, "`starts`", &grammar::TRIGGER) else { continue };
            let workflow = m.require(r, "workflow", "`starts`").and_then(|n| r.name(n, "the workflow"));
            let when = m.get("when").and_then(|n| r.string(n, "`when` (a Rhai condition)"));
            let trigger_roles = m.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
            let data = match m.get("data").map(|d| d.to_json()) {
                Some(serde_json::Value::Object(o)) => o,
                Some(_) => {
                    r.error(m.pos, DiagCode::WrongType, "`data` must be a mapping".to_string(), None);
                    serde_json::Map::new()
                }
                None => serde_json::Map::new(),
            };
            m.finish(r, "`starts`");
            if let Some(workflow) = workflow {
                starts.push(TriggerDef { pos: m.pos, workflow, roles: trigger_roles, when, data });
            }
        }
    }
    map.finish(r, "a record type");
    let name = name?;
    Some(RecordTypeDef {
        title: title.or_name(&name.value),
        name: name.value,
        file: r.file.to_string(),
        pos: name.pos,
        form: form?,
        key: key?,
        display,
        search,
        filters,
        parent,
        access,
        starts,
    })
}

fn load_ledger(r: &mut Reader, map: &MapView) -> Option<LedgerDef> {
    let name = map.require(r, "ledger", "a ledger").and_then(|n| r.name(n, "the ledger name"));
    let title = opt_label(r, map, "title", "the title");
    let mut dimensions = Vec::new();
    if let Some(node) = map.require(r, "dimensions", "a ledger")
        && let Some(dims) = r.map(node, "`dimensions`")
    {
        for (k, v) in dims.entries() {
            let Some(dim) = r.name(k, "a dimension name") else { continue };
            let Some(m) = r.map_of(v, &format!("dimension `{}`", dim.value), &grammar::DIMENSION) else { continue };
            let record = m.require(r, "record", "a dimension").and_then(|n| r.name(n, "the record type"));
            m.finish(r, &format!("dimension `{}`", dim.value));
            if let Some(record) = record {
                dimensions.push((dim, record));
            }
        }
        if dims.entries().is_empty() {
            r.error(
                dims.pos,
                DiagCode::MissingKey,
                "a ledger needs at least one dimension",
                Some("e.g. `dimensions: { part: { record: part }, warehouse: { record: warehouse } }`".into()),
            );
        }
    }
    let non_negative = map.get("non_negative").and_then(|n| r.bool(n, "`non_negative`")).unwrap_or(true);
    let threshold = map.get("threshold").and_then(|n| {
        let m = r.map_of(n, "`threshold`", &grammar::THRESHOLD)?;
        let dim = m.require(r, "dimension", "`threshold`").and_then(|n| r.name(n, "the dimension"));
        let field = m.require(r, "field", "`threshold`").and_then(|n| r.name(n, "the field"));
        m.finish(r, "`threshold`");
        Some((dim?, field?))
    });
    let mut roles = map.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
    let mut read = Vec::new();
    if let Some(n) = map.get("access")
        && let Some(m) = r.map_of(n, "`access`", &grammar::LEDGER_ACCESS)
    {
        if let Some(list) = m.get("read") {
            read = r.name_list(list, "a role");
        }
        if let Some(list) = m.get("post") {
            roles.extend(r.name_list(list, "a role"));
        }
        m.finish(r, "`access` (read, post)");
    }
    let notify_below_threshold = map.get("notify_below_threshold").map(|n| load_notify_list(r, n)).unwrap_or_default();
    let max_quantity = match map.get("max_quantity") {
        None => crate::defs::DEFAULT_MAX_QUANTITY,
        Some(n) => match r.int(n, "`max_quantity`") {
            Some(q) if (1..=crate::defs::LIMIT_MAX_QUANTITY).contains(&q) => q,
            Some(q) => {
                r.error(
                    n.pos,
                    DiagCode::OutOfRange,
                    format!("`max_quantity` must be between 1 and {}, it is {q}", crate::defs::LIMIT_MAX_QUANTITY),
                    Some("the largest quantity one movement may move, e.g. `max_quantity: 100000`".into()),
                );
                crate::defs::DEFAULT_MAX_QUANTITY
            }
            None => crate::defs::DEFAULT_MAX_QUANTITY,
        },
    };
    map.finish(r, "a ledger");
    let name = name?;
    Some(LedgerDef {
        title: title.or_name(&name.value),
        name: name.value,
        file: r.file.to_string(),
        pos: name.pos,
        dimensions,
        non_negative,
        threshold,
        roles,
        read,
        notify_below_threshold,
        max_quantity,
    })
}

fn amount(r: &mut Reader, node: &Node, what: &str) -> Option<Amount> {
    match &node.value {
        Value::Int(i) if *i > crate::defs::MAX_MINUTES => {
            r.error(
                node.pos,
                DiagCode::OutOfRange,
                format!("{what} is {i} minutes; at most {} (10 years)", crate::defs::MAX_MINUTES),
                Some("durations are in minutes: 1440 is a day".into()),
            );
            None
        }
        Value::Int(i) if *i >= 0 => Some(Amount::Minutes(*i)),
        Value::Str(_) => r.name(node, &format!("{what} (a field name)")).map(Amount::Field),
        _ => {
            r.error(node.pos, DiagCode::WrongType, format!("{what} must be a number of minutes or a field name, found {}", node.type_name()), None);
            None
        }
    }
}

fn load_timer(r: &mut Reader, node: &Node, what: &str) -> Option<TimerDef> {
    let m = r.map_of(node, what, &grammar::TIMER)?;
    let (after, minutes) = (m.get("after"), m.get("minutes"));
    let after = after.or(minutes);
    let after = match after {
        Some(n) => amount(r, n, "`after`")?,
        None => {
            r.error(m.pos, DiagCode::MissingKey, format!("{what} needs `after` (minutes)"), None);
            return None;
        }
    };
    let notify = m.get("notify").map(|n| load_notify_list(r, n)).unwrap_or_default();
    let set = match m.get("set") {
        Some(n) => match n.to_json() {
            serde_json::Value::Object(o) => o,
            _ => {
                r.error(n.pos, DiagCode::WrongType, "`set` must be a mapping of fields to values".to_string(), None);
                serde_json::Map::new()
            }
        },
        None => serde_json::Map::new(),
    };
    let transition = m.get("transition").and_then(|n| r.name(n, "the transition"));
    let calendar = m.get("calendar").and_then(|n| r.name(n, "the calendar"));
    m.finish(r, what);
    if notify.is_empty() && set.is_empty() && transition.is_none() {
        r.error(m.pos, DiagCode::MissingKey, format!("{what} does nothing"), Some("give it `notify`, `set` or `transition`".into()));
    }
    Some(TimerDef { pos: m.pos, after, calendar, notify, set, transition })
}

/// `notify:` as one `{to, template}` or a list of them.
fn load_notify_list(r: &mut Reader, node: &Node) -> Vec<NotifyDef> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    items.into_iter().filter_map(|n| load_notify(r, n)).collect()
}

fn load_notify(r: &mut Reader, node: &Node) -> Option<NotifyDef> {
    let m = r.map_of(node, "`notify`", &grammar::NOTIFY)?;
    let mut to = Vec::new();
    if let Some(n) = m.require(r, "to", "`notify`") {
        let list: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        for item in list {
            let Some(s) = r.string(item, "a recipient") else { continue };
            match Recipient::parse(&s.value) {
                Some(rec) => to.push(Sp::new(rec, s.pos)),
                None => r.error(
                    s.pos,
                    DiagCode::InvalidValue,
                    format!("unknown recipient `{}`", s.value),
                    Some("use requester, assignee, team, role:NAME, user:ID or field:NAME".into()),
                ),
            }
        }
    }
    let template = m.require(r, "template", "`notify`").and_then(|n| r.name(n, "the template"));
    m.finish(r, "`notify`");
    Some(NotifyDef { pos: m.pos, to, template: template? })
}

fn load_template(r: &mut Reader, map: &MapView) -> Option<TemplateDef> {
    let name = map.require(r, "template", "a template").and_then(|n| r.name(n, "the template name"));
    let title = map.require(r, "title", "a template").and_then(|n| r.string(n, "`title`"));
    let body = map.require(r, "body", "a template").and_then(|n| r.string(n, "`body`"));
    let channels = map.get("channels").map(|n| r.name_list(n, "a channel")).unwrap_or_default();
    map.finish(r, "a template");
    let name = name?;
    Some(TemplateDef { name: name.value, file: r.file.to_string(), pos: name.pos, title: title?, body: body?, channels })
}

fn load_webhook(r: &mut Reader, map: &MapView) -> Option<WebhookDef> {
    let name = map.require(r, "webhook", "a webhook").and_then(|n| r.name(n, "the webhook name"));
    let url = map.require(r, "url", "a webhook").and_then(|n| r.string(n, "`url`"));
    let body = map.require(r, "body", "a webhook").and_then(|n| r.string(n, "`body`"));
    let content_type = map.get("content_type").and_then(|n| r.string(n, "`content_type`")).map_or_else(|| "application/json".to_string(), |s| s.value);
    map.finish(r, "a webhook");
    if let Some(u) = &url
        && !(u.value.starts_with("http://") || u.value.starts_with("https://") || u.value.starts_with("${"))
    {
        r.error(u.pos, DiagCode::InvalidValue, format!("`url` must start with http:// or https:// (or be ${{VARIABLE}}), not `{}`", u.value), None);
    }
    let name = name?;
    Some(WebhookDef { name: name.value, file: r.file.to_string(), pos: name.pos, url: url?, body: body?, content_type })
}

fn load_calendar(r: &mut Reader, map: &MapView) -> Option<CalendarDef> {
    let name = map.require(r, "calendar", "a calendar").and_then(|n| r.name(n, "the calendar name"));
    let timezone = map.require(r, "timezone", "a calendar").and_then(|n| r.string(n, "`timezone`"));
    let mut hours = Vec::new();
    if let Some(n) = map.require(r, "hours", "a calendar") {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        for item in items {
            let Some(s) = r.string(item, "working hours") else { continue };
            let ok = s.value.split_once('-').filter(|(a, b)| is_hhmm(a.trim()) && (is_hhmm(b.trim()) || b.trim() == "24:00") && a.trim() < b.trim());
            match ok {
                Some((a, b)) => hours.push((a.trim().to_string(), b.trim().to_string())),
                None => r.error(s.pos, DiagCode::InvalidValue, format!("`{}` is not a time range like 08:00-12:00", s.value), None),
            }
        }
    }
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let weekdays = match map.get("weekdays") {
        Some(n) => {
            let mut out = Vec::new();
            for d in r.name_list(n, "a weekday") {
                match DAYS.iter().position(|x| *x == d.value) {
                    Some(i) => out.push(i as u8 + 1),
                    None => {
                        r.error(d.pos, DiagCode::InvalidValue, format!("`{}` is not a weekday", d.value), Some("use mon, tue, wed, thu, fri, sat, sun".into()))
                    }
                }
            }
            out
        }
        None => vec![1, 2, 3, 4, 5],
    };
    let holidays = dates(r, map, "holidays");
    let workdays = dates(r, map, "workdays");
    map.finish(r, "a calendar");
    let name = name?;
    Some(CalendarDef { name: name.value, file: r.file.to_string(), pos: name.pos, timezone: timezone?, hours, weekdays, holidays, workdays })
}

fn dates(r: &mut Reader, map: &MapView, key: &'static str) -> Vec<String> {
    let Some(n) = map.get(key) else { return Vec::new() };
    let Value::Seq(items) = &n.value else {
        r.error(n.pos, DiagCode::WrongType, format!("`{key}` must be a list of dates"), None);
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in items {
        let Some(d) = r.string(i, "a date") else { continue };
        if is_date(&d.value) {
            out.push(d.value);
        } else {
            r.error(d.pos, DiagCode::InvalidValue, format!("`{}` is not a date like 2026-10-01", d.value), None);
        }
    }
    out
}

fn is_hhmm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5 && b[2] == b':' && b[..2].iter().chain(&b[3..]).all(u8::is_ascii_digit) && &s[..2] <= "23" && &s[3..] <= "59"
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn load_schedule(r: &mut Reader, map: &MapView) -> Option<ScheduleDef> {
    let name = map.require(r, "schedule", "a schedule").and_then(|n| r.name(n, "the schedule name"));
    let title = opt_label(r, map, "title", "the title");
    let workflow = map.require(r, "workflow", "a schedule").and_then(|n| r.name(n, "the workflow"));
    let mut every_field = None;
    let every = map.require(r, "every", "a schedule").and_then(|n| {
        let m = r.map_of(n, "`every`", &grammar::EVERY)?;
        let mut found = None;
        let mut given = false;
        for unit in ["minutes", "hours", "days", "weeks", "months"] {
            let Some(node) = m.get(unit) else { continue };
            given = true;
            // A field of the record: each record has its own interval.
            if let node::Value::Str(field) = &node.value
                && field.parse::<i64>().is_err()
            {
                let _ = field;
                every_field = r.name(node, "a field of the record");
                found = Some((unit.to_string(), 1));
                continue;
            }
            if let Some(v) = r.int(node, "`every`") {
                let max = crate::defs::every_limit(unit);
                if v < 1 {
                    r.error(node.pos, DiagCode::InvalidValue, "`every` must be at least 1".to_string(), None);
                } else if v > max {
                    r.error(
                        node.pos,
                        DiagCode::OutOfRange,
                        format!("`every: {{ {unit}: {v} }}` is too long; at most {max} {unit} (10 years)"),
                        Some("a schedule repeats at least once in 10 years".into()),
                    );
                } else {
                    found = Some((unit.to_string(), v as u32));
                }
            }
        }
        m.finish(r, "`every`");
        if !given {
            r.error(
                m.pos,
                DiagCode::MissingKey,
                "`every` needs one of minutes, hours, days, weeks, months".to_string(),
                Some("e.g. `every: { months: 1 }`".into()),
            );
        }
        found
    });
    let at = match map.get("at").and_then(|n| r.string(n, "`at`")) {
        Some(a) if is_hhmm(&a.value) => a.value,
        Some(a) => {
            r.error(a.pos, DiagCode::InvalidValue, format!("`at` must be a time like 08:00, not `{}`", a.value), None);
            "00:00".into()
        }
        None => "00:00".into(),
    };
    // Empty: the app's time zone, filled in once every file is read.
    let timezone = map.get("timezone").and_then(|n| r.string(n, "`timezone`")).unwrap_or_else(|| Sp::new(String::new(), map.pos));
    let mut record = None;
    let mut filter = None;
    if let Some(n) = map.get("for_each")
        && let Some(m) = r.map_of(n, "`for_each`", &grammar::FOR_EACH)
    {
        record = m.require(r, "record", "`for_each`").and_then(|n| r.name(n, "the record type"));
        if let Some(w) = m.get("where") {
            filter = match &w.value {
                // `{field: value, …}`: each field equals its value (typed as written).
                Value::Map(_) => r.map(w, "`where`").map(|wm| {
                    let mut args = Vec::new();
                    let mut text = Vec::new();
                    for (k, v) in wm.entries() {
                        if let Some(k) = r.name(k, "a field") {
                            let value = v.to_json();
                            text.push(format!("{} == {value}", k.value));
                            args.push(Condition::Compare { field: k.value, cmp: crate::condition::Cmp::Eq, value });
                        }
                    }
                    (Sp::new(text.join(" && "), w.pos), Condition::And { args })
                }),
                _ => condition(r, w, "where"),
            };
        }
        m.finish(r, "`for_each`");
    }
    let first_due = map.get("first_due").and_then(|n| r.name(n, "a date field of the record"));
    let data = match map.get("data") {
        Some(n) => match n.to_json() {
            serde_json::Value::Object(o) => o,
            _ => {
                r.error(n.pos, DiagCode::WrongType, "`data` must be a mapping of fields to values".to_string(), None);
                serde_json::Map::new()
            }
        },
        None => serde_json::Map::new(),
    };
    let catch_up_once = match map.get("catch_up").and_then(|n| r.string(n, "`catch_up`")) {
        Some(c) if c.value == "once" => true,
        Some(c) if c.value == "skip" => false,
        Some(c) => {
            r.error(
                c.pos,
                DiagCode::InvalidValue,
                format!("`catch_up: {}` is not known", c.value),
                Some("use `once` (run the latest missed period) or `skip`".into()),
            );
            true
        }
        None => true,
    };
    let after_completion = match map.get("anchor").and_then(|n| r.string(n, "`anchor`")) {
        Some(a) if a.value == "completion" => true,
        Some(a) if a.value == "fixed" => false,
        Some(a) => {
            r.error(
                a.pos,
                DiagCode::InvalidValue,
                format!("`anchor: {}` is not known", a.value),
                Some("use `fixed` (the default: fixed dates) or `completion` (after the last one finished)".into()),
            );
            false
        }
        None => false,
    };
    let roles = map.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
    map.finish(r, "a schedule");
    let name = name?;
    Some(ScheduleDef {
        title: title.or_name(&name.value),
        name: name.value,
        file: r.file.to_string(),
        pos: name.pos,
        workflow: workflow?,
        every: every?,
        every_field,
        first_due,
        at,
        timezone,
        record,
        filter,
        data,
        catch_up_once,
        after_completion,
        roles,
    })
}

fn load_report(r: &mut Reader, map: &MapView) -> Option<ReportDef> {
    let name = map.require(r, "report", "a report").and_then(|n| r.name(n, "the report name"));
    let title = opt_label(r, map, "title", "the title");
    let description = opt_label(r, map, "description", "the description");
    let source = map.require(r, "source", "a report").and_then(|n| {
        let m = r.map_of(n, "`source`", &grammar::SOURCE)?;
        let workflow = m.get("workflow").and_then(|n| r.name(n, "the workflow"));
        let events = m.get("events").and_then(|n| r.name(n, "a transition, or `all`"));
        let ledger = m.get("ledger").and_then(|n| r.name(n, "the ledger"));
        let records = m.get("records").and_then(|n| r.name(n, "the record type"));
        m.finish(r, "`source` (workflow, events, ledger, records)");
        match (workflow, ledger, records) {
            (Some(w), None, None) => Some(match events {
                None => ReportSource::Instances { workflow: w },
                Some(t) => ReportSource::Events { workflow: w, transition: (t.value != "all").then_some(t) },
            }),
            (None, Some(l), None) => Some(ReportSource::Movements { ledger: l }),
            (None, None, Some(t)) => Some(ReportSource::Records { record_type: t }),
            _ => {
                r.error(
                    m.pos,
                    DiagCode::InvalidValue,
                    "`source` names one of `workflow` (with `events` for its events), `ledger` or `records`".to_string(),
                    Some("e.g. `source: { workflow: repair }` or `source: { ledger: stock }`".into()),
                );
                None
            }
        }
    });
    let default_time = match &source {
        Some(ReportSource::Instances { .. }) | Some(ReportSource::Records { .. }) | None => "created_at",
        _ => "at",
    };
    let time = map.get("time").and_then(|n| r.name(n, "a timestamp field")).unwrap_or_else(|| Sp::new(default_time.to_string(), map.pos));
    let filter = map.get("where").and_then(|n| condition(r, n, "where"));
    let dimensions = map.get("by").map(|n| r.path_list(n, "a dimension")).unwrap_or_default();
    let mut measures = Vec::new();
    if let Some(n) = map.require(r, "measures", "a report")
        && let Some(mm) = r.map(n, "`measures`")
    {
        for (k, v) in mm.entries() {
            let Some(mname) = r.name(k, "a measure name") else { continue };
            if let Some(m) = load_measure(r, mname, v) {
                measures.push(m);
            }
        }
    }
    let chart = map.get("chart").and_then(|n| r.name(n, "the chart")).unwrap_or_else(|| Sp::new("table".to_string(), map.pos));
    if !CHARTS.contains(&chart.value.as_str()) {
        r.error(chart.pos, DiagCode::InvalidValue, format!("`chart: {}` is not known", chart.value), Some(format!("charts: {}", CHARTS.join(", "))));
    }
    let roles = map.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
    map.finish(r, "a report (report, title, description, source, time, where, by, measures, chart, roles)");
    let name = name?;
    Some(ReportDef {
        title: title.or_name(&name.value),
        name: name.value,
        file: r.file.to_string(),
        pos: name.pos,
        description,
        source: source?,
        time,
        filter,
        dimensions,
        measures,
        chart,
        roles,
    })
}

/// `NAME: { count: true | sum: FIELD | avg: FIELD | … | share: CONDITION, label, unit }`;
/// a field may be `{ minutes: [FROM, TO], calendar: C }`.
fn load_measure(r: &mut Reader, name: Sp<String>, node: &Node) -> Option<MeasureDef> {
    let what = format!("measure `{}`", name.value);
    let m = r.map_of(node, &what, &grammar::MEASURE)?;
    let label = opt_label(r, &m, "label", "the label").or_name(&name.value);
    let unit = m.get("unit").and_then(|n| r.string(n, "the unit")).map(|s| s.value);
    let filter = m.get("where").and_then(|n| condition(r, n, "where"));
    let mut found: Option<(MeasureKind, &Node)> = None;
    for (key, kind) in MeasureKind::ALL {
        if let Some(n) = m.get(key) {
            if found.is_some() {
                r.error(n.pos, DiagCode::InvalidValue, format!("{what} gives two kinds; give one of {}", MeasureKind::ALL.map(|(k, _)| k).join(", ")), None);
            }
            found = Some((kind, n));
        }
    }
    m.finish(r, &format!("{what} (one of count, sum, avg, min, max, p50, p90, distinct, share, first, last; label, unit, where)"));
    let Some((kind, n)) = found else {
        r.error(
            m.pos,
            DiagCode::MissingKey,
            format!("{what} needs one of {}", MeasureKind::ALL.map(|(k, _)| k).join(", ")),
            Some("e.g. `orders: { count: true }` or `avg_response: { avg: response_minutes }`".into()),
        );
        return None;
    };
    let mut def = MeasureDef { name: name.value.clone(), pos: name.pos, label, kind, field: None, between: None, condition: None, filter, unit };
    match kind {
        MeasureKind::Count => {}
        MeasureKind::Share => def.condition = condition(r, n, "share"),
        _ => match &n.value {
            Value::Map(_) => {
                let bm = r.map_of(n, "`minutes`", &grammar::DURATION)?;
                let pair = bm.require(r, "minutes", "a duration").map(|p| r.name_list(p, "a timestamp field")).unwrap_or_default();
                let calendar = bm.get("calendar").and_then(|c| r.name(c, "the calendar"));
                bm.finish(r, "a duration (minutes: [FROM, TO], calendar)");
                match <[Sp<String>; 2]>::try_from(pair) {
                    Ok([a, b]) => def.between = Some((a, b, calendar)),
                    Err(_) => r.error(bm.pos, DiagCode::InvalidValue, "`minutes` takes two timestamps: `[created_at, checked_in_at]`".to_string(), None),
                }
            }
            _ => def.field = r.name(n, "a field"),
        },
    }
    Some(def)
}

fn load_dashboard(r: &mut Reader, map: &MapView) -> Option<DashboardDef> {
    let name = map.require(r, "dashboard", "a dashboard").and_then(|n| r.name(n, "the dashboard name"));
    let title = opt_label(r, map, "title", "the title");
    let roles = map.get("roles").map(|n| r.name_list(n, "a role")).unwrap_or_default();
    let mut tiles = Vec::new();
    if let Some(n) = map.require(r, "tiles", "a dashboard") {
        match &n.value {
            Value::Seq(items) => {
                for item in items {
                    let Some(m) = r.map_of(item, "a tile", &grammar::TILE) else { continue };
                    let report = m.require(r, "report", "a tile").and_then(|n| r.name(n, "the report"));
                    let by = m.get("by").and_then(|n| {
                        let mut dims = r.path_list(n, "a dimension");
                        if dims.len() > 1 {
                            r.error(n.pos, DiagCode::InvalidValue, "a tile shows one dimension; give one in `by`".to_string(), None);
                        }
                        (!dims.is_empty()).then(|| dims.swap_remove(0))
                    });
                    let measure = m.get("measure").and_then(|n| r.name(n, "a measure of the report"));
                    let chart = m.get("chart").and_then(|n| r.name(n, "the chart"));
                    let title = opt_label(r, &m, "title", "the title");
                    m.finish(r, "a tile (report, by, measure, chart, title)");
                    if let Some(report) = report {
                        tiles.push(TileDef { pos: m.pos, report, by, measure, chart, title });
                    }
                }
            }
            _ => r.error(
                n.pos,
                DiagCode::WrongType,
                format!("`tiles` must be a list, found {}", n.type_name()),
                Some("write each tile on a line starting with `- `".into()),
            ),
        }
    }
    map.finish(r, "a dashboard (dashboard, title, roles, tiles)");
    let name = name?;
    Some(DashboardDef { title: title.or_name(&name.value), name: name.value, file: r.file.to_string(), pos: name.pos, roles, tiles })
}
