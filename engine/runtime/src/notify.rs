//! Notifications and timers at run time: rendering templates for the
//! recipients of a notification, and firing due timers exactly once.

use crate::{CommandError, Runtime};
use flowform_core::timers::NotifySpec;
use flowform_core::{Actor, Bundle, Instance, Lang};
use flowform_model::Recipient;
use flowform_store::{CommitOutcome, InboxItem};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// What a template sees: `record`, `instance`, `actor`, `event`, `app`.
pub fn template_context(bundle: &Bundle, instance: &Instance, actor: &str, event: Value) -> Value {
    let mut record = instance.data.clone();
    for (k, v) in [
        ("id", json!(instance.id)),
        ("state", json!(instance.state)),
        ("team", json!(instance.assignment.team)),
        ("assignee", json!(instance.assignment.assignee)),
        ("vendor", json!(instance.assignment.vendor)),
        ("requester", json!(instance.requester)),
        ("created_at", json!(instance.created_at)),
    ] {
        record.insert(k.into(), v);
    }
    let wf = bundle.workflow(&instance.workflow);
    let state_label = wf.and_then(|w| w.state(&instance.state)).map(|s| s.label.get("zh-CN", &instance.state).to_string());
    json!({
        "record": record,
        "instance": {
            "id": instance.id, "workflow": instance.workflow,
            "workflow_title": wf.map(|w| w.title.get("zh-CN", &w.name).to_string()),
            "state": instance.state, "state_label": state_label, "version": instance.version,
            "due_at": instance.due_at, "overdue": instance.overdue, "assignment": instance.assignment,
            "state_entered_at": instance.state_entered_at,
        },
        "actor": {"id": actor},
        "event": event,
        "app": {"name": bundle.model.app.name, "title": bundle.model.app.title.get("zh-CN", &bundle.model.app.name)},
    })
}

impl Runtime {
    /// The users a notification goes to.
    fn recipients(&self, to: &[Recipient], instance: &Instance) -> Result<BTreeSet<String>, CommandError> {
        let mut out = BTreeSet::new();
        let mut users: Option<Vec<Actor>> = None;
        for r in to {
            match r {
                Recipient::Requester => {
                    out.insert(instance.requester.clone());
                }
                Recipient::Assignee => out.extend(instance.assignment.assignee.clone()),
                Recipient::User(u) => {
                    out.insert(u.clone());
                }
                Recipient::Field(f) => out.extend(instance.data.get(f).and_then(Value::as_str).map(str::to_string)),
                Recipient::Team | Recipient::Role(_) => {
                    if users.is_none() {
                        users = Some(self.store.users()?);
                    }
                    for u in users.iter().flatten() {
                        let hit = match r {
                            Recipient::Team => instance.assignment.team.as_ref().is_some_and(|t| u.teams.contains(t)),
                            Recipient::Role(role) => u.has_role(role),
                            _ => false,
                        };
                        if hit {
                            out.insert(u.id.clone());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Renders notifications into inbox items, one per recipient.
    pub(crate) fn render_notifications(
        &self,
        bundle: &Bundle,
        specs: &[NotifySpec],
        instance: &Instance,
        actor: &str,
        event: Value,
    ) -> Result<Vec<InboxItem>, CommandError> {
        let context = template_context(bundle, instance, actor, event);
        let now = self.now();
        let mut items = Vec::new();
        for spec in specs {
            let render = |part: &str| bundle.templates.render(&format!("{}.{part}", spec.template), &context);
            let (title, body) = match (render("title"), render("body")) {
                (Ok(t), Ok(b)) => (t, b),
                (Err(e), _) | (_, Err(e)) => {
                    // The check makes sure templates only use what is provided; a field
                    // that an instance happens not to have is reported, not fatal.
                    tracing::warn!(template = %spec.template, error = %e, "notification template failed");
                    (format!("[{}]", spec.template), format!("template error: {}", e.reason()))
                }
            };
            for user in self.recipients(&spec.to, instance)? {
                items.push(InboxItem {
                    seq: 0,
                    user,
                    template: spec.template.clone(),
                    title: title.clone(),
                    body: body.clone(),
                    instance_id: Some(instance.id.clone()),
                    at: now.clone(),
                    read: false,
                });
            }
        }
        Ok(items)
    }

    /// Fires every timer that is due now. Each firing is one command that also
    /// deletes the timer, so a timer fires exactly once even across crashes.
    /// Blocking: call it from a blocking thread.
    pub fn fire_due_timers(&self) -> Result<usize, CommandError> {
        let mut fired = 0;
        loop {
            let now = self.now();
            let due = self.store.due_timers(&now, 100)?;
            if due.is_empty() {
                return Ok(fired);
            }
            let mut progressed = false;
            for timer in due {
                let Some(instance) = self.store.instance(&timer.instance_id)? else {
                    self.store.submit(flowform_store::Job::DropTimer(timer))?;
                    continue;
                };
                let bundle = self.bundle_for(&instance.bundle_version)?;
                match flowform_core::timers::fire(&bundle, &instance, &timer, &now) {
                    Ok(None) => {
                        self.store.submit(flowform_store::Job::DropTimer(timer))?;
                        progressed = true;
                    }
                    Ok(Some(outcome)) => {
                        let mut write = self.prepare(&bundle, outcome, None, instance.version, None, Lang::ZhCn)?;
                        write.fired_timer = Some(timer.clone());
                        match self.store.commit(write)? {
                            CommitOutcome::Committed => {
                                fired += 1;
                                progressed = true;
                            }
                            CommitOutcome::TimerGone => progressed = true,
                            // The instance changed meanwhile: the next round decides again.
                            _ => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(instance = %timer.instance_id, timer = %timer.timer, error = %e, "timer could not act; dropped");
                        self.store.submit(flowform_store::Job::DropTimer(timer))?;
                        progressed = true;
                    }
                }
            }
            if !progressed {
                return Ok(fired);
            }
        }
    }

    pub fn inbox(&self, user: &str) -> Result<Vec<InboxItem>, CommandError> {
        Ok(self.store.inbox(user)?)
    }

    pub fn mark_read(&self, user: &str, seq: u64) -> Result<(), CommandError> {
        match self.store.submit(flowform_store::Job::MarkRead { user: user.to_string(), seq })? {
            CommitOutcome::Committed => Ok(()),
            _ => Err(CommandError::RecordNotFound(format!("inbox item {seq}"))),
        }
    }
}
