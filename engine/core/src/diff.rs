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
        d
    });
    dx.keyed("transition", name, o.transitions.iter().map(|t| (t.name.as_str(), t)), n.transitions.iter().map(|t| (t.name.as_str(), t)), |_, _, ot, nt| {
        transition_details(ot, nt)
    });
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
            field_details(of, nf)
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
    BundleDiff { from: old.version.clone(), to: new.version.clone(), changes: dx.changes }
}
