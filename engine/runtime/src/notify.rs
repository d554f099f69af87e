//! Notifications and timers at run time: rendering templates for the
//! recipients of a notification, and firing due timers exactly once.

use crate::{CommandError, Runtime, other_outcome};
use flowform_core::timers::NotifySpec;
use flowform_core::{Actor, Bundle, Instance, Lang, Time};
use flowform_model::Recipient;
use flowform_store::{CommitOutcome, InboxItem, OutboxItem};
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
            "id": instance.id, "number": instance.number.clone().unwrap_or_else(|| instance.id.clone()), "workflow": instance.workflow,
            "workflow_title": wf.map(|w| w.title.get("zh-CN", &w.name).to_string()),
            "state": instance.state, "state_label": state_label, "version": instance.version,
            "due_at": instance.due_at, "overdue": instance.overdue, "assignment": instance.assignment,
            "state_entered_at": instance.state_entered_at,
        },
        "actor": {"id": actor},
        "event": event,
        "app": {
            "name": bundle.model.app.name,
            "title": bundle.model.app.title.get("zh-CN", &bundle.model.app.name),
            "timezone": bundle.model.app.timezone.as_ref().map(|t| t.value.clone()),
        },
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
                Recipient::Field(f) => match f.split_once('.') {
                    None => out.extend(instance.data.get(f).and_then(Value::as_str).map(str::to_string)),
                    // `field:department.head`: the user named by a field of the record a `ref` field points at.
                    Some((reference, name)) => {
                        let bundle = self.bundle_for(&instance.bundle_version).unwrap_or_else(|_| self.bundle());
                        let record_type =
                            bundle.workflow(&instance.workflow).and_then(|w| {
                                w.start.form.iter().chain(w.transitions.iter().filter_map(|t| t.form.as_ref())).filter_map(|f| bundle.form(&f.value)).find_map(
                                    |form| form.def.fields.iter().find(|x| x.name == reference).and_then(|x| x.record.as_ref()).map(|r| r.value.clone()),
                                )
                            });
                        if let (Some(t), Some(id)) = (record_type, instance.data.get(reference).and_then(Value::as_str))
                            && let Some(r) = self.store.record(&t, id)?
                        {
                            out.extend(r.data.get(name).and_then(Value::as_str).map(str::to_string));
                        }
                    }
                },
                Recipient::Team | Recipient::Role(_) => {
                    if users.is_none() {
                        users = Some(self.actors());
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

    /// Renders notifications: inbox items (one per recipient) and outbox items
    /// (one per webhook channel of the template).
    /// Every field of an instance as people read it, for templates
    /// (`{{text.priority}}` → 紧急): option labels, record titles, display
    /// names, team labels, times in the app's zone, yes/no — in the app's
    /// default language. Also `number`, `state`, `team`, `assignee`,
    /// `requester`, `due_at`, `created_at`.
    pub fn readable(&self, bundle: &Bundle, instance: &Instance) -> Value {
        let lang = bundle.model.app.default_language.as_str();
        let tz = bundle.model.app.timezone.as_ref().and_then(|t| jiff::tz::TimeZone::get(&t.value).ok()).unwrap_or(jiff::tz::TimeZone::UTC);
        let local = |t: Time| t.timestamp().to_zoned_datetime(tz.clone()).strftime("%Y-%m-%d %H:%M").to_string();
        let mut out = serde_json::Map::new();
        let forms = bundle
            .workflow(&instance.workflow)
            .map(|w| w.start.form.iter().chain(w.transitions.iter().filter_map(|t| t.form.as_ref())).collect::<Vec<_>>())
            .unwrap_or_default();
        for form in forms.into_iter().filter_map(|f| bundle.form(&f.value)) {
            for f in &form.def.fields {
                if out.contains_key(&f.name) {
                    continue;
                }
                // Every field is there (empty when not filled), so a strict template never fails on it.
                let Some(v) = instance.data.get(&f.name) else {
                    out.insert(f.name.clone(), json!(""));
                    continue;
                };
                let text = match (f.field_type, v) {
                    (flowform_model::FieldType::Enum, Value::String(s)) => {
                        f.options.iter().find(|o| &o.value == s).map_or_else(|| s.clone(), |o| o.label.get(lang, s).to_string())
                    }
                    (flowform_model::FieldType::Enum, Value::Array(items)) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| f.options.iter().find(|o| o.value == s).map_or_else(|| s.to_string(), |o| o.label.get(lang, s).to_string()))
                        .collect::<Vec<_>>()
                        .join("、"),
                    (flowform_model::FieldType::Ref, Value::String(id)) => match f.record.as_ref().map(|r| r.value.as_str()) {
                        Some(t) if bundle.model.record_types.contains_key(t) => self.store.record(t, id).ok().flatten().map_or_else(|| id.clone(), |r| r.title),
                        _ => self.store.instance(id).ok().flatten().and_then(|i| i.number).unwrap_or_else(|| id.clone()),
                    },
                    (flowform_model::FieldType::Datetime, Value::String(t)) => Time::parse(t).map_or_else(|| t.clone(), local),
                    (flowform_model::FieldType::Boolean, Value::Bool(b)) => (if *b {
                        if lang == "en" { "yes" } else { "是" }
                    } else if lang == "en" {
                        "no"
                    } else {
                        "否"
                    })
                    .to_string(),
                    (_, Value::String(s)) => s.clone(),
                    (_, Value::Number(n)) => n.to_string(),
                    (flowform_model::FieldType::Files, Value::Array(items)) => {
                        items.iter().filter_map(|i| i.get("name").and_then(Value::as_str)).collect::<Vec<_>>().join(", ")
                    }
                    (flowform_model::FieldType::Location, Value::Object(m)) => m.get("tag").and_then(Value::as_str).unwrap_or("").to_string(),
                    _ => String::new(),
                };
                out.insert(f.name.clone(), json!(text));
            }
        }
        let wf = bundle.workflow(&instance.workflow);
        let team = instance.assignment.team.as_deref().map(|t| self.team_label(bundle, t, lang));
        for (k, v) in [
            ("number", Some(instance.number.clone().unwrap_or_else(|| instance.id.clone()))),
            (
                "state",
                Some(wf.and_then(|w| w.state(&instance.state)).map_or_else(|| instance.state.clone(), |s| s.label.get(lang, &instance.state).to_string())),
            ),
            ("team", team),
            ("assignee", instance.assignment.assignee.as_deref().map(|a| self.display_name(a))),
            ("vendor", instance.assignment.vendor.clone()),
            ("requester", Some(self.display_name(&instance.requester))),
            ("due_at", instance.due_at.map(local)),
            ("created_at", Some(local(instance.created_at))),
        ] {
            out.insert(k.into(), json!(v.unwrap_or_default()));
        }
        Value::Object(out)
    }

    pub(crate) fn render_notifications(
        &self,
        bundle: &Bundle,
        specs: &[NotifySpec],
        instance: &Instance,
        actor: &str,
        event: Value,
    ) -> Result<(Vec<InboxItem>, Vec<OutboxItem>), CommandError> {
        let mut context = template_context(bundle, instance, actor, event);
        context["text"] = self.readable(bundle, instance);
        let now = self.now();
        let mut items = Vec::new();
        let mut outbox = Vec::new();
        for spec in specs {
            let render = |part: &str, context: &Value| bundle.templates.render(&format!("{}.{part}", spec.template), context);
            let (title, body) = match (render("title", &context), render("body", &context)) {
                (Ok(t), Ok(b)) => (t, b),
                (Err(e), _) | (_, Err(e)) => {
                    // The check makes sure templates only use what is provided; a field
                    // that an instance happens not to have is reported, not fatal.
                    tracing::warn!(template = %spec.template, error = %e, "notification template failed");
                    (format!("[{}]", spec.template), format!("template error: {}", template_problem(e.reason())))
                }
            };
            let channels: Vec<String> =
                bundle.model.templates.get(&spec.template).map(|t| t.channels.iter().map(|c| c.value.clone()).collect()).unwrap_or_default();
            if channels.is_empty() || channels.iter().any(|c| c == "inbox") {
                for user in self.recipients(&spec.to, instance)? {
                    items.push(InboxItem {
                        seq: 0,
                        user,
                        template: spec.template.clone(),
                        title: title.clone(),
                        body: body.clone(),
                        instance_id: Some(instance.id.clone()),
                        at: now,
                        read: false,
                    });
                }
            }
            if channels.iter().any(|c| c == "email") {
                for user in self.recipients(&spec.to, instance)? {
                    let Some(address) = self.store.user(&user)?.and_then(|u| u.email) else { continue };
                    outbox.push(pending(
                        "email",
                        format!("mailto:{address}"),
                        json!({"subject": title, "text": body}).to_string(),
                        &spec.template,
                        instance,
                        now,
                    ));
                }
            }
            for channel in channels.iter().filter(|c| *c != "inbox" && *c != "email") {
                let Some(hook) = bundle.model.webhooks.get(channel) else { continue };
                context["title"] = json!(title);
                context["body"] = json!(body);
                let payload = bundle
                    .templates
                    .render(&format!("webhook:{channel}"), &context)
                    .unwrap_or_else(|e| json!({"error": e.to_string(), "title": title, "body": body}).to_string());
                outbox.push(pending(channel, hook.url.value.clone(), payload, &spec.template, instance, now));
            }
        }
        Ok((items, outbox))
    }

    /// Tries to deliver every pending outbox message that is due; a failure is
    /// retried with exponential backoff (1 s, 2 s, 4 s, … up to an hour), and
    /// after [`MAX_ATTEMPTS`] the message is dead with its last error. Never runs
    /// inside a command. Blocking: call it from a blocking thread.
    pub fn deliver_outbox(&self) -> Result<(usize, usize), CommandError> {
        let now = self.now();
        let (mut delivered, mut failed) = (0, 0);
        let bundle = self.bundle();
        for item in self.store.due_outbox(now, 500)? {
            let content_type = bundle.model.webhooks.get(&item.channel).map_or("application/json", |w| w.content_type.as_str()).to_string();
            let result = if item.channel == "email" {
                self.send_mail(&item)
            } else {
                self.expand_variables(&item.url).and_then(|url| post(&url, &content_type, &item.body))
            };
            let job = match result {
                Ok(()) => {
                    delivered += 1;
                    flowform_store::Job::Delivery { seq: item.seq, delivered: true, error: None, next_at: None }
                }
                Err(error) => {
                    failed += 1;
                    tracing::warn!(channel = %item.channel, seq = item.seq, attempt = item.attempts + 1, %error, "webhook delivery failed");
                    let next_at = (item.attempts + 1 < MAX_ATTEMPTS).then(|| flowform_core::timers::add_seconds(now, backoff_seconds(item.attempts))).flatten();
                    flowform_store::Job::Delivery { seq: item.seq, delivered: false, error: Some(error), next_at }
                }
            };
            self.store.submit(job)?;
        }
        Ok((delivered, failed))
    }

    /// Puts a dead letter back in the queue, due now (after the receiver was
    /// fixed). Answers whether there was such a message.
    pub fn retry_outbox(&self, seq: u64) -> Result<bool, CommandError> {
        let now = self.clock.time();
        Ok(!matches!(self.store.submit(flowform_store::Job::RetryDelivery { seq, at: now })?, flowform_store::CommitOutcome::Missing))
    }

    pub fn outbox(&self) -> Result<Vec<OutboxItem>, CommandError> {
        Ok(self.store.outbox()?)
    }

    /// Fires every timer that is due now. Each firing is one command that also
    /// deletes the timer, so a timer fires exactly once even across crashes.
    /// Blocking: call it from a blocking thread.
    pub fn fire_due_timers(&self) -> Result<usize, CommandError> {
        let mut fired = 0;
        loop {
            let now = self.now();
            let due = self.store.due_timers(now, 100)?;
            if due.is_empty() {
                return Ok(fired);
            }
            let mut progressed = false;
            let mut transient: Option<String> = None;
            for timer in due {
                // Each timer alone: one that cannot act is quarantined with its
                // reason, and the others still fire. A panic counts as cannot act.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fire_one(&timer, now)))
                    .unwrap_or_else(|_| Err(Failure::Permanent("firing the timer panicked (a bug; see the log)".into())));
                match outcome {
                    Ok(Fired::Acted) => {
                        self.count_timer_fired(timer.due_at, now);
                        fired += 1;
                        progressed = true;
                    }
                    Ok(Fired::Done) => progressed = true,
                    Ok(Fired::Retry) => {}
                    // Storage trouble may pass: the timer stays due and is tried next round.
                    Err(Failure::Transient(e)) => {
                        tracing::warn!(instance = %timer.instance_id, timer = %timer.timer, error = %e, "timer could not fire now; retrying");
                        transient.get_or_insert(e);
                    }
                    Err(Failure::Permanent(reason)) => {
                        tracing::error!(instance = %timer.instance_id, timer = %timer.timer, %reason, "timer quarantined");
                        let q = flowform_store::Quarantined { timer: timer.clone(), reason, at: now };
                        self.store.submit(flowform_store::Job::QuarantineTimer(q))?;
                        progressed = true;
                    }
                }
            }
            if let Some(e) = transient
                && !progressed
            {
                return Err(CommandError::Internal(format!("timers could not fire: {e}")));
            }
            if !progressed {
                return Ok(fired);
            }
        }
    }

    /// Fires one due timer. `Err`: why it cannot fire — for now (storage),
    /// or for good (the instance's definitions, a refused posting, a rule).
    fn fire_one(&self, timer: &flowform_core::timers::TimerSpec, now: Time) -> Result<Fired, Failure> {
        let Some(instance) = self.store.instance(&timer.instance_id).map_err(Failure::from_store)? else {
            self.store.submit(flowform_store::Job::DropTimer(timer.clone())).map_err(Failure::from_store)?;
            return Ok(Fired::Done);
        };
        let bundle = self.bundle_for(&instance.bundle_version).map_err(Failure::from_command)?;
        match flowform_core::timers::fire(&bundle, &instance, timer, now) {
            Ok(None) => {
                self.store.submit(flowform_store::Job::DropTimer(timer.clone())).map_err(Failure::from_store)?;
                Ok(Fired::Done)
            }
            Ok(Some(outcome)) => {
                let effects = outcome.effects.clone();
                let mut write = self.prepare(&bundle, outcome, None, instance.version, None, Lang::ZhCn).map_err(Failure::from_command)?;
                let system =
                    flowform_core::Actor { id: "system".into(), name: "timer".into(), roles: Vec::new(), teams: Vec::new(), email: None, department: None };
                self.link_children(&bundle, &mut write, &effects, &system, Lang::ZhCn).map_err(Failure::from_command)?;
                write.fired_timer = Some(timer.clone());
                let noted = self.to_note(&write);
                match self.store.commit(write).map_err(Failure::from_store)? {
                    CommitOutcome::Committed => {
                        self.note_facts(&noted);
                        Ok(Fired::Acted)
                    }
                    CommitOutcome::TimerGone => Ok(Fired::Done),
                    // The instance changed meanwhile: the next round decides again.
                    CommitOutcome::Conflict { .. } => Ok(Fired::Retry),
                    other => Err(Failure::Permanent(other_outcome(other).to_string())),
                }
            }
            Err(e) => Err(Failure::Permanent(format!("the timer could not act: {e}"))),
        }
    }

    /// Sends the notifications of ledger events (`ledger.below_threshold`) that
    /// have not been sent yet; the inbox items and the marker of the last event
    /// notified are written together, so each event is notified exactly once.
    pub fn notify_ledger_events(&self) -> Result<usize, CommandError> {
        const MARK: &str = "notified_ledger_events";
        let last: u64 = self.store.meta(MARK)?.and_then(|v| v.parse().ok()).unwrap_or(0);
        let events: Vec<flowform_store::LedgerEvent> = self.store.ledger_events_after(last, 500)?;
        let Some(newest) = events.last().map(|e| e.seq) else { return Ok(0) };
        let bundle = self.bundle();
        let now = self.now();
        let users = self.actors();
        let mut inbox = Vec::new();
        for e in &events {
            let Some(ledger) = bundle.model.ledgers.get(&e.ledger) else { continue };
            let record_type = ledger.dimensions.iter().find(|(d, _)| d.value == e.dimension).map(|(_, r)| r.value.clone()).unwrap_or_default();
            let mut record = self
                .store
                .record(&record_type, &e.value)?
                .map(|r| {
                    let mut m = r.data.clone();
                    m.insert("id".into(), json!(r.id));
                    m.insert("title".into(), json!(r.title));
                    m
                })
                .unwrap_or_default();
            record.entry("id").or_insert(json!(e.value));
            let context = json!({
                    "record": record,
                    "instance": {},
                    "actor": {"id": "system"},
                    "event": {"kind": e.kind, "ledger": e.ledger, "dimension": e.dimension, "value": e.value, "available": e.available, "minimum": e.minimum, "at": e.at},
                    "app": {
                "name": bundle.model.app.name,
                "title": bundle.model.app.title.get("zh-CN", &bundle.model.app.name),
                "timezone": bundle.model.app.timezone.as_ref().map(|t| t.value.clone()),
            },
                });
            for spec in flowform_core::timers::notify_specs(&ledger.notify_below_threshold) {
                let render = |part: &str| {
                    bundle
                        .templates
                        .render(&format!("{}.{part}", spec.template), &context)
                        .unwrap_or_else(|err| format!("template error: {}", template_problem(err.reason())))
                };
                let (title, body) = (render("title"), render("body"));
                let mut to = std::collections::BTreeSet::new();
                for r in &spec.to {
                    match r {
                        Recipient::Role(role) => to.extend(users.iter().filter(|u| u.has_role(role)).map(|u| u.id.clone())),
                        Recipient::User(u) => {
                            to.insert(u.clone());
                        }
                        _ => {}
                    }
                }
                for user in to {
                    inbox.push(InboxItem {
                        seq: 0,
                        user,
                        template: spec.template.clone(),
                        title: title.clone(),
                        body: body.clone(),
                        instance_id: None,
                        at: now,
                        read: false,
                    });
                }
            }
        }
        let sent = inbox.len();
        self.store.submit(flowform_store::Job::Notify { inbox, outbox: Vec::new(), meta: (MARK.to_string(), newest.to_string()) })?;
        Ok(sent)
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

/// A new outbox message, due at once.
fn pending(channel: &str, url: String, body: String, template: &str, instance: &Instance, now: Time) -> OutboxItem {
    OutboxItem {
        seq: 0,
        channel: channel.to_string(),
        url,
        body,
        template: template.to_string(),
        instance_id: Some(instance.id.clone()),
        created_at: now,
        status: "pending".into(),
        attempts: 0,
        next_at: now,
        last_error: None,
    }
}

/// Delivery attempts before a message is dead.
pub const MAX_ATTEMPTS: u32 = 8;

fn backoff_seconds(attempts: u32) -> i64 {
    (1i64 << attempts.min(12)).min(3600)
}

impl Runtime {
    /// Sets a variable for `${NAME}` in webhook URLs, taking precedence over the
    /// environment (tests, or secrets injected by an embedding program).
    pub fn set_variable(&self, name: &str, value: &str) {
        if let Ok(mut v) = self.variables.lock() {
            v.insert(name.to_string(), value.to_string());
        }
    }

    fn variable(&self, name: &str) -> Option<String> {
        self.variables.lock().ok().and_then(|v| v.get(name).cloned()).or_else(|| std::env::var(name).ok())
    }

    /// Sends an `email` outbox item over SMTP: `FLOWFORM_SMTP_URL`
    /// (`smtp://host:port`, a relay without TLS or login) and `FLOWFORM_MAIL_FROM`.
    fn send_mail(&self, item: &OutboxItem) -> Result<(), String> {
        use lettre::Transport;
        let smtp = self.variable("FLOWFORM_SMTP_URL").ok_or("FLOWFORM_SMTP_URL is not set")?;
        let from = self.variable("FLOWFORM_MAIL_FROM").ok_or("FLOWFORM_MAIL_FROM is not set")?;
        let hostport = smtp.strip_prefix("smtp://").ok_or_else(|| format!("FLOWFORM_SMTP_URL must look like smtp://host:25, not {smtp}"))?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.trim_end_matches('/').parse::<u16>().map_err(|_| format!("bad port in {smtp}"))?),
            None => (hostport.trim_end_matches('/').to_string(), 25),
        };
        let to = item.url.strip_prefix("mailto:").unwrap_or(&item.url);
        let content: Value = serde_json::from_str(&item.body).map_err(|e| e.to_string())?;
        let message = lettre::Message::builder()
            .from(from.parse().map_err(|e| format!("FLOWFORM_MAIL_FROM: {e}"))?)
            .to(to.parse().map_err(|e| format!("address {to}: {e}"))?)
            .subject(content["subject"].as_str().unwrap_or_default())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(content["text"].as_str().unwrap_or_default().to_string())
            .map_err(|e| e.to_string())?;
        let transport = lettre::SmtpTransport::builder_dangerous(host).port(port).timeout(Some(std::time::Duration::from_secs(10))).build();
        transport.send(&message).map(|_| ()).map_err(|e| e.to_string())
    }

    fn expand_variables(&self, url: &str) -> Result<String, String> {
        let vars = self.variables.lock().map(|v| v.clone()).unwrap_or_default();
        expand(url, |name| vars.get(name).cloned().or_else(|| std::env::var(name).ok()))
    }
}

/// `${NAME}` in a URL is replaced by the variable, so secrets stay out of the files.
fn expand(url: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = url;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else { return Err(format!("unclosed `${{` in {url}")) };
        let name = &rest[start + 2..start + end];
        let value = lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn post(url: &str, content_type: &str, body: &str) -> Result<(), String> {
    let agent = ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(10))).http_status_as_error(false).build().new_agent();
    let response = agent.post(url).header("content-type", content_type).send(body.as_bytes()).map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("HTTP {}", status.as_u16())) }
}

/// What firing one timer did.
enum Fired {
    /// It acted (a command committed).
    Acted,
    /// Dropped or already gone: nothing more to do.
    Done,
    /// The instance changed under it: decide again next round.
    Retry,
}

/// Why a timer did not fire.
enum Failure {
    /// May pass (storage): try again next round.
    Transient(String),
    /// Will not pass by itself: quarantine.
    Permanent(String),
}

impl Failure {
    fn from_store(e: flowform_store::StoreError) -> Self {
        Failure::Transient(e.to_string())
    }

    fn from_command(e: CommandError) -> Self {
        match e {
            CommandError::Store(_) | CommandError::Internal(_) | CommandError::TooMuchContention => Failure::Transient(e.to_string()),
            other => Failure::Permanent(other.to_string()),
        }
    }
}

/// A template's failure in words (no Rust `Some(…)`): what is missing, or the reason.
fn template_problem(reason: &handlebars::RenderErrorReason) -> String {
    match reason {
        handlebars::RenderErrorReason::MissingVariable(Some(path)) => format!("`{path}` has no value here"),
        other => other.to_string(),
    }
}
