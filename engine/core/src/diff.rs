//! Semantic diff of two bundles: what changed, in words a business user reads.

use crate::bundle::Bundle;
use flowform_model::{FieldDef, Hooks, Label, Sp, TransitionDef, WorkflowDef};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Debug;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BundleDiff {
    pub from: String,
    pub to: String,
    pub changes: Vec<Change>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// `workflow`, `start`, `state`, `transition`, `form`, `field`, `rule`, `role`, `team`, `app`.
    pub area: &'static str,
    /// Where: `repair`, `repair/accept`, `repair_report/priority`, `dispatch`.
    pub path: String,
    /// What changed, one sentence each (for `changed`).
    pub details: Vec<String>,
}

impl BundleDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// One line per change, grouped as they come (workflows, forms, rules, roles, teams).
    pub fn to_text(&self) -> String {
        if self.changes.is_empty() {
            return format!("no changes between {} and {}\n", self.from, self.to);
        }
        let mut out = format!("changes from {} to {}:\n", self.from, self.to);
        for c in &self.changes {
            let verb = match c.kind {
                ChangeKind::Added => "added",
                ChangeKind::Removed => "removed",
                ChangeKind::Changed => "changed",
            };
            out.push_str(&format!("  {verb} {} `{}`", c.area, c.path));
            if c.details.is_empty() {
                out.push('\n');
            } else {
                out.push_str(": ");
                out.push_str(&c.details.join("; "));
                out.push('\n');
            }
        }
        out
    }
}

struct Differ {
    changes: Vec<Change>,
}

fn show<T: Debug>(v: &T) -> String {
    format!("{v:?}").replace('"', "`")
}

fn names(list: &[Sp<String>]) -> Vec<&str> {
    list.iter().map(|s| s.value.as_str()).collect()
}

fn opt(v: &Option<Sp<String>>) -> Option<&str> {
    v.as_ref().map(|s| s.value.as_str())
}

fn label_text(l: &Label) -> String {
    format!("{} / {}", l.get("zh-CN", ""), l.get("en", ""))
}

impl Differ {
    fn push(&mut self, kind: ChangeKind, area: &'static str, path: String, details: Vec<String>) {
        if kind != ChangeKind::Changed || !details.is_empty() {
            self.changes.push(Change { kind, area, path, details });
        }
    }

    fn keyed<'a, T>(
        &mut self,
        area: &'static str,
        prefix: &str,
        old: impl Iterator<Item = (&'a str, &'a T)> + Clone,
        new: impl Iterator<Item = (&'a str, &'a T)> + Clone,
        mut details: impl FnMut(&mut Self, &str, &T, &T) -> Vec<String>,
    ) where
        T: 'a,
    {
        let old_names: BTreeSet<&str> = old.clone().map(|(k, _)| k).collect();
        let new_names: BTreeSet<&str> = new.clone().map(|(k, _)| k).collect();
        let path = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        for (name, _) in old.clone() {
            if !new_names.contains(name) {
                self.push(ChangeKind::Removed, area, path(name), Vec::new());
            }
        }
        for (name, n) in new {
            match old.clone().find(|(k, _)| *k == name) {
                None if !old_names.contains(name) => self.push(ChangeKind::Added, area, path(name), Vec::new()),
                Some((_, o)) => {
                    let d = details(self, name, o, n);
                    self.push(ChangeKind::Changed, area, path(name), d);
                }
                None => {}
            }
        }
    }
}

fn cmp<T: PartialEq + Debug>(out: &mut Vec<String>, what: &str, old: T, new: T) {
    if old != new {
        out.push(format!("{what} changed from {} to {}", show(&old), show(&new)));
    }
}

fn hooks(out: &mut Vec<String>, old: &Hooks, new: &Hooks) {
    cmp(out, "validate rule", opt(&old.validate), opt(&new.validate));
    cmp(out, "route rule", opt(&old.route), opt(&new.route));
    cmp(out, "compute rule", opt(&old.compute), opt(&new.compute));
    cmp(out, "post rule", opt(&old.post), opt(&new.post));
}

/// A definition's text without its places in the file: a comment or a moved
/// line is not a change, anything else is.
fn without_places<T: Debug>(v: &T) -> String {
    let text = format!("{v:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("pos: Pos {") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match rest.find('}') {
            Some(end) => rest = &rest[end + 1..],
            None => break,
        }
    }
    out.push_str(rest);
    // The file a definition is in is not part of what it says either.
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("file: \"") {
        cleaned.push_str(&rest[..at]);
        let after = &rest[at + 7..];
        match after.find('"') {
            Some(end) => rest = &after[end + 1..],
            None => {
                rest = after;
                break;
            }
        }
    }
    cleaned.push_str(rest);
    cleaned
}

/// `details` when it says something; else, if anything else of the
/// definition differs, that it did — so no key can change unreported.
fn or_any<T: Debug>(mut details: Vec<String>, old: &T, new: &T) -> Vec<String> {
    if details.is_empty() && without_places(old) != without_places(new) {
        details.push("its definition changed".to_string());
    }
    details
}

fn transition_details(o: &TransitionDef, n: &TransitionDef) -> Vec<String> {
    let mut d = Vec::new();
    if o.label != n.label {
        d.push(format!("label changed from {} to {}", label_text(&o.label), label_text(&n.label)));
    }
    cmp(&mut d, "from", names(&o.from), names(&n.from));
    cmp(&mut d, "to", opt(&o.to), opt(&n.to));
    cmp(&mut d, "roles", names(&o.roles), names(&n.roles));
    cmp(&mut d, "teams", names(&o.teams), names(&n.teams));
    cmp(&mut d, "condition (when)", opt(&o.when), opt(&n.when));
    cmp(&mut d, "form", opt(&o.form), opt(&n.form));
    cmp(&mut d, "assign", o.assign, n.assign);
    hooks(&mut d, &o.hooks, &n.hooks);
    d
}

fn field_details(o: &FieldDef, n: &FieldDef) -> Vec<String> {
    let mut d = Vec::new();
    cmp(&mut d, "type", o.field_type.name(), n.field_type.name());
    cmp(&mut d, "required", o.required, n.required);
    if o.label != n.label {
        d.push(format!("label changed from {} to {}", label_text(&o.label), label_text(&n.label)));
    }
    let (oo, no): (Vec<&str>, Vec<&str>) = (o.options.iter().map(|x| x.value.as_str()).collect(), n.options.iter().map(|x| x.value.as_str()).collect());
    for added in no.iter().filter(|x| !oo.contains(x)) {
        d.push(format!("option `{added}` added"));
    }
    for removed in oo.iter().filter(|x| !no.contains(x)) {
        d.push(format!("option `{removed}` removed"));
    }
    cmp(&mut d, "multiple", o.multiple, n.multiple);
    cmp(&mut d, "min", o.min, n.min);
    cmp(&mut d, "max", o.max, n.max);
    cmp(&mut d, "min_length", o.min_length, n.min_length);
    cmp(&mut d, "max_length", o.max_length, n.max_length);
    cmp(&mut d, "pattern", opt(&o.pattern), opt(&n.pattern));
    cmp(&mut d, "default", o.default.as_ref().map(|v| &v.value), n.default.as_ref().map(|v| &v.value));
    cmp(&mut d, "visible_when", o.visible_when.as_ref().map(|c| &c.0.value), n.visible_when.as_ref().map(|c| &c.0.value));
    cmp(&mut d, "required_when", o.required_when.as_ref().map(|c| &c.0.value), n.required_when.as_ref().map(|c| &c.0.value));
    cmp(&mut d, "record", opt(&o.record), opt(&n.record));
    let (of, nf): (Vec<&str>, Vec<&str>) = (o.fields.iter().map(|f| f.name.as_str()).collect(), n.fields.iter().map(|f| f.name.as_str()).collect());
    cmp(&mut d, "item fields", of, nf);
    d
}

fn workflow_details(dx: &mut Differ, name: &str, o: &WorkflowDef, n: &WorkflowDef) -> Vec<String> {
    let mut d = Vec::new();
    if o.title != n.title {
        d.push(format!("title changed from {} to {}", label_text(&o.title), label_text(&n.title)));
    }
    cmp(&mut d, "initial state", &o.initial.value, &n.initial.value);
    cmp(&mut d, "on_new_version", show(&o.on_new_version), show(&n.on_new_version));
    let mut start = Vec::new();
    cmp(&mut start, "start form", opt(&o.start.form), opt(&n.start.form));
    cmp(&mut start, "roles that may start", names(&o.start.roles), names(&n.start.roles));
    hooks(&mut start, &o.start.hooks, &n.start.hooks);
    dx.push(ChangeKind::Changed, "start", name.to_string(), start);
    dx.keyed("state", name, o.states.iter().map(|s| (s.name.as_str(), s)), n.states.iter().map(|s| (s.name.as_str(), s)), |_, _, os, ns| {
        let mut d = Vec::new();
        if os.label != ns.label {
            d.push(format!("label changed from {} to {}", label_text(&os.label), label_text(&ns.label)));
        }
        cmp(&mut d, "final", os.is_final, ns.is_final);
        cmp(&mut d, "color", &os.color, &ns.color);
        if without_places(&os.sla) != without_places(&ns.sla) || opt(&os.sla_calendar) != opt(&ns.sla_calendar) {
            d.push(format!("SLA changed from {} to {}", without_places(&os.sla), without_places(&ns.sla)).replace('"', "`"));
        }
        if without_places(&os.timers) != without_places(&ns.timers) {
            d.push(format!("timed steps changed ({} → {})", os.timers.len(), ns.timers.len()));
        }
        if without_places(&os.sla_notify) != without_places(&ns.sla_notify) {
            d.push("notifications on breach changed".to_string());
        }
        or_any(d, os, ns)
    });
    dx.keyed("transition", name, o.transitions.iter().map(|t| (t.name.as_str(), t)), n.transitions.iter().map(|t| (t.name.as_str(), t)), |_, _, ot, nt| {
        or_any(transition_details(ot, nt), ot, nt)
    });
    let audiences = |w: &WorkflowDef| w.audiences().into_iter().map(|a| format!("{a:?}")).collect::<BTreeSet<String>>();
    if audiences(o) != audiences(n) {
        d.push(format!("who may read it (visible_to) changed from {:?} to {:?}", o.audiences(), n.audiences()).replace('"', "`"));
    }
    if without_places(&o.on_assigned) != without_places(&n.on_assigned) {
        d.push("notifications on dispatch (on_assigned) changed".to_string());
    }
    if without_places(&o.start) != without_places(&n.start) && !dx.changes.iter().any(|c| c.area == "start" && c.path == name) {
        dx.push(ChangeKind::Changed, "start", name.to_string(), vec!["its definition changed".to_string()]);
    }
    let others = without_places(&(&o.description, &o.record));
    if others != without_places(&(&n.description, &n.record)) {
        d.push("description or record changed".to_string());
    }
    d
}

/// Everything that differs between `old` and `new`.
pub fn diff(old: &Bundle, new: &Bundle) -> BundleDiff {
    let mut dx = Differ { changes: Vec::new() };
    let (om, nm) = (&old.model, &new.model);
    let mut app = Vec::new();
    if om.app.title != nm.app.title {
        app.push(format!("title changed from {} to {}", label_text(&om.app.title), label_text(&nm.app.title)));
    }
    cmp(&mut app, "default language", &om.app.default_language, &nm.app.default_language);
    dx.push(ChangeKind::Changed, "app", nm.app.name.clone(), app);
    dx.keyed("workflow", "", om.workflows.iter().map(|(k, v)| (k.as_str(), v)), nm.workflows.iter().map(|(k, v)| (k.as_str(), v)), workflow_details);
    dx.keyed("form", "", om.forms.iter().map(|(k, v)| (k.as_str(), v)), nm.forms.iter().map(|(k, v)| (k.as_str(), v)), |dx, name, o, n| {
        dx.keyed("field", name, o.fields.iter().map(|f| (f.name.as_str(), f)), n.fields.iter().map(|f| (f.name.as_str(), f)), |_, _, of, nf| {
            or_any(field_details(of, nf), of, nf)
        });
        let mut d = Vec::new();
        if o.title != n.title {
            d.push(format!("title changed from {} to {}", label_text(&o.title), label_text(&n.title)));
        }
        let (of, nf): (Vec<&str>, Vec<&str>) = (o.fields.iter().map(|f| f.name.as_str()).collect(), n.fields.iter().map(|f| f.name.as_str()).collect());
        let common_old: Vec<&str> = of.iter().copied().filter(|f| nf.contains(f)).collect();
        let common_new: Vec<&str> = nf.iter().copied().filter(|f| of.contains(f)).collect();
        if common_old != common_new {
            d.push("the order of the fields changed".to_string());
        }
        d
    });
    dx.keyed("rule", "", om.scripts.iter().map(|(k, v)| (k.as_str(), v)), nm.scripts.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        if o.text != n.text { vec![format!("the script {} changed", n.file)] } else { Vec::new() }
    });
    dx.keyed("role", "", om.roles.iter().map(|(k, v)| (k.as_str(), v)), nm.roles.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        if o.label != n.label { vec![format!("label changed from {} to {}", label_text(&o.label), label_text(&n.label))] } else { Vec::new() }
    });
    dx.keyed("team", "", om.teams.iter().map(|(k, v)| (k.as_str(), v)), nm.teams.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        if o.label != n.label { vec![format!("label changed from {} to {}", label_text(&o.label), label_text(&n.label))] } else { Vec::new() }
    });
    dx.keyed("record type", "", om.record_types.iter().map(|(k, v)| (k.as_str(), v)), nm.record_types.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        let mut d = Vec::new();
        cmp(&mut d, "form", &o.form.value, &n.form.value);
        cmp(&mut d, "key", &o.key.value, &n.key.value);
        cmp(&mut d, "display", opt(&o.display), opt(&n.display));
        cmp(&mut d, "search", names(&o.search), names(&n.search));
        cmp(&mut d, "filters", names(&o.filters), names(&n.filters));
        cmp(&mut d, "parent", opt(&o.parent), opt(&n.parent));
        for (op_name, op) in flowform_model::RecordOp::ALL {
            cmp(&mut d, &format!("who may {op_name}"), o.access.roles(op), n.access.roles(op));
        }
        let workflows = |r: &flowform_model::RecordTypeDef| r.starts.iter().map(|t| t.workflow.value.clone()).collect::<Vec<_>>();
        cmp(&mut d, "workflows it starts", workflows(o), workflows(n));
        or_any(d, o, n)
    });
    dx.keyed("ledger", "", om.ledgers.iter().map(|(k, v)| (k.as_str(), v)), nm.ledgers.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        let mut d = Vec::new();
        cmp(&mut d, "dimensions", o.dimension_names(), n.dimension_names());
        cmp(&mut d, "non_negative", o.non_negative, n.non_negative);
        cmp(&mut d, "max_quantity", o.max_quantity, n.max_quantity);
        cmp(&mut d, "who may post", names(&o.roles), names(&n.roles));
        cmp(&mut d, "who may read", names(&o.read), names(&n.read));
        or_any(d, o, n)
    });
    dx.keyed("schedule", "", om.schedules.iter().map(|(k, v)| (k.as_str(), v)), nm.schedules.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        let mut d = Vec::new();
        cmp(&mut d, "workflow", &o.workflow.value, &n.workflow.value);
        cmp(&mut d, "every", &o.every, &n.every);
        cmp(&mut d, "at", &o.at, &n.at);
        cmp(&mut d, "timezone", &o.timezone.value, &n.timezone.value);
        cmp(&mut d, "for each record of", opt(&o.record), opt(&n.record));
        cmp(&mut d, "roles it starts with", names(&o.roles), names(&n.roles));
        cmp(&mut d, "start data", &o.data, &n.data);
        or_any(d, o, n)
    });
    dx.keyed("template", "", om.templates.iter().map(|(k, v)| (k.as_str(), v)), nm.templates.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        let mut d = Vec::new();
        cmp(&mut d, "title", &o.title.value, &n.title.value);
        cmp(&mut d, "body", &o.body.value, &n.body.value);
        cmp(&mut d, "channels", names(&o.channels), names(&n.channels));
        or_any(d, o, n)
    });
    dx.keyed("webhook", "", om.webhooks.iter().map(|(k, v)| (k.as_str(), v)), nm.webhooks.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        let mut d = Vec::new();
        cmp(&mut d, "url", &o.url.value, &n.url.value);
        cmp(&mut d, "body", &o.body.value, &n.body.value);
        cmp(&mut d, "content type", &o.content_type, &n.content_type);
        or_any(d, o, n)
    });
    dx.keyed("calendar", "", om.calendars.iter().map(|(k, v)| (k.as_str(), v)), nm.calendars.iter().map(|(k, v)| (k.as_str(), v)), |_, _, o, n| {
        let mut d = Vec::new();
        cmp(&mut d, "timezone", &o.timezone.value, &n.timezone.value);
        cmp(&mut d, "working hours", &o.hours, &n.hours);
        or_any(d, o, n)
    });
    BundleDiff { from: old.version.clone(), to: new.version.clone(), changes: dx.changes }
}
