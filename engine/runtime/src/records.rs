//! Records, references and ledgers at run time: integrity checks against the
//! store, record commands and queries, ledger postings and queries.

use crate::{CommandError, CommandOptions, Runtime, other_outcome};
use flowform_core::ledger::Posting;
use flowform_core::records::{self, Record};
use flowform_core::{Actor, Bundle, Effect, FieldError, Lang, Outcome, Rejection};
use flowform_model::{FieldDef, FieldType, RecordTypeDef};
use flowform_store::{BalanceRow, CommandWrite, CommitOutcome, IdempotencyKey, Job, LedgerWrite, Movement, PostingWrite, RecordWrite, Threshold};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn pick(lang: Lang, zh: String, en: String) -> String {
    if lang == Lang::En { en } else { zh }
}

impl Runtime {
    /// Whether `id` is a live record of `kind` (a record type, or a workflow's record kind).
    fn reference_problem(&self, bundle: &Bundle, kind: &str, id: &str, lang: Lang) -> Result<Option<String>, CommandError> {
        // The kind as people call it: the record type's (or workflow's) title in the language asked for.
        let code = lang.code();
        let named = bundle
            .model
            .record_types
            .get(kind)
            .map(|t| t.title.get(code, kind).to_string())
            .or_else(|| bundle.model.workflows.values().find(|w| w.record.as_deref() == Some(kind)).map(|w| w.title.get(code, kind).to_string()))
            .unwrap_or_else(|| kind.to_string());
        let kind_name = named.as_str();
        if bundle.model.record_types.contains_key(kind) {
            return Ok(match self.store.record(kind, id)? {
                None => Some(pick(lang, format!("没有编号为 {id} 的{kind_name}"), format!("there is no {kind_name} `{id}`"))),
                Some(r) if r.archived => Some(pick(
                    lang,
                    format!("{kind_name} {id} 已停用,不能再选用"),
                    format!("{kind_name} `{id}` is archived and cannot be referred to any more"),
                )),
                Some(_) => None,
            });
        }
        let ok = self.store.instance(id)?.is_some_and(|i| bundle.workflow(&i.workflow).and_then(|w| w.record.as_deref()) == Some(kind));
        Ok((!ok).then(|| pick(lang, format!("没有编号为 {id} 的{kind_name}"), format!("there is no {kind_name} `{id}`"))))
    }

    /// Field errors for `ref` values in `data` that do not point at a live record.
    pub fn check_references(
        &self,
        bundle: &Bundle,
        fields: &[FieldDef],
        data: &Map<String, Value>,
        prefix: &str,
        lang: Lang,
    ) -> Result<Vec<FieldError>, CommandError> {
        self.check_refs_inner(bundle, fields, data, prefix, lang, &BTreeSet::new())
    }

    /// Like [`Runtime::check_references`], also accepting records about to be
    /// created in the same import (`pending`: type and id).
    pub fn check_references_pending(
        &self,
        bundle: &Bundle,
        fields: &[FieldDef],
        data: &Map<String, Value>,
        lang: Lang,
        pending: &BTreeSet<(String, String)>,
    ) -> Result<Vec<FieldError>, CommandError> {
        self.check_refs_inner(bundle, fields, data, "", lang, pending)
    }

    fn check_refs_inner(
        &self,
        bundle: &Bundle,
        fields: &[FieldDef],
        data: &Map<String, Value>,
        prefix: &str,
        lang: Lang,
        pending: &BTreeSet<(String, String)>,
    ) -> Result<Vec<FieldError>, CommandError> {
        let mut errors = Vec::new();
        for f in fields {
            let path = if prefix.is_empty() { f.name.clone() } else { format!("{prefix}.{}", f.name) };
            match (f.field_type, data.get(&f.name), &f.record) {
                (FieldType::Ref, Some(Value::String(id)), Some(kind)) => {
                    if pending.contains(&(kind.value.clone(), id.clone())) {
                        continue;
                    }
                    if let Some(message) = self.reference_problem(bundle, &kind.value, id, lang)? {
                        errors.push(FieldError { field: path, code: "unknown_reference", message });
                    } else if let Some((_, cond)) = &f.filter
                        && let Some(record) = self.store.record(&kind.value, id)?
                        && !records::matches_filter(cond, &record)
                    {
                        let message = match lang {
                            Lang::En => format!("{} cannot be chosen here", record.title),
                            Lang::ZhCn => format!("此处不可选择“{}”", record.title),
                        };
                        errors.push(FieldError { field: path, code: "not_an_option", message });
                    }
                }
                (FieldType::Group, Some(Value::Array(items)), _) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Object(m) = item {
                            errors.extend(self.check_refs_inner(bundle, &f.fields, m, &format!("{path}[{i}]"), lang, pending)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(errors)
    }

    /// Postings with their ledger's settings; their dimensions must be live records.
    fn posting_writes(&self, bundle: &Bundle, postings: Vec<Posting>, lang: Lang) -> Result<Vec<PostingWrite>, CommandError> {
        let mut out = Vec::new();
        for posting in postings {
            let ledger = bundle.model.ledgers.get(&posting.ledger).ok_or_else(|| CommandError::Internal(format!("unknown ledger {}", posting.ledger)))?;
            let mut problems = Vec::new();
            for dims in std::iter::once(&posting.dims).chain(posting.to.as_ref()) {
                for (dim, record_type) in &ledger.dimensions {
                    if let Some(id) = dims.get(&dim.value)
                        && let Some(message) = self.reference_problem(bundle, &record_type.value, id, lang)?
                    {
                        problems.push(FieldError { field: dim.value.clone(), code: "unknown_reference", message });
                    }
                }
            }
            if !problems.is_empty() {
                return Err(CommandError::InvalidReferences(problems));
            }
            let threshold = match &ledger.threshold {
                Some((dim, field)) => {
                    let value = posting.dims.get(&dim.value).cloned().unwrap_or_default();
                    let record_type = ledger.dimensions.iter().find(|(d, _)| d.value == dim.value).map(|(_, r)| r.value.clone()).unwrap_or_default();
                    let minimum = self.store.record(&record_type, &value)?.and_then(|r| r.data.get(&field.value).and_then(Value::as_f64)).map(|f| f as i64);
                    minimum.map(|minimum| Threshold { dimension: dim.value.clone(), value, minimum })
                }
                None => None,
            };
            out.push(PostingWrite {
                dimensions: ledger.dimension_names().iter().map(|d| d.to_string()).collect(),
                non_negative: ledger.non_negative,
                threshold,
                posting,
            });
        }
        Ok(out)
    }

    /// Checks an outcome's references and turns it into the store write.
    pub(crate) fn prepare(
        &self,
        bundle: &Bundle,
        mut outcome: Outcome,
        form: Option<&str>,
        expected_version: u64,
        idempotency: Option<IdempotencyKey>,
        lang: Lang,
    ) -> Result<CommandWrite, CommandError> {
        if let (Some(form), Value::Object(input)) = (form.and_then(|f| bundle.form(f)), &outcome.event.input) {
            let mut errors = self.check_references(bundle, &form.def.fields, input, "", lang)?;
            // Files the instance held before the command may stay; new ones must be the actor's own uploads.
            let held = crate::files::ids_in(outcome.event.changes.values().map(|c| &c.before));
            let mut files = crate::files::FileCheck { actor: &outcome.event.actor, held: &held, errors: Vec::new() };
            self.check_files(&form.def.fields, input, "", lang, &mut files);
            errors.extend(files.errors);
            if !errors.is_empty() {
                return Err(CommandError::InvalidReferences(errors));
            }
            // What is stored about each file is what the server knows, not what was sent.
            let fields = &form.def.fields;
            if let Value::Object(input) = &mut outcome.event.input {
                self.canonical_files(fields, input);
            }
            self.canonical_files(fields, &mut outcome.instance.data);
        }
        // A person assigned by someone else (a rule, a dispatcher) must be an
        // active user, of the team or on duty for it.
        if let Some(change) = outcome.event.changes.get("assignment.assignee")
            && let Some(user) = change.after.as_str()
            && user != outcome.event.actor
        {
            let team = outcome.instance.assignment.team.clone();
            if let Some(message) = self.unfit_assignee(bundle, user, team.as_deref(), lang)? {
                return Err(CommandError::InvalidReferences(vec![flowform_core::FieldError { field: "assignee".into(), code: "unknown_user", message }]));
            }
        }
        let mut postings = Vec::new();
        let mut timers = None;
        let mut inbox = Vec::new();
        let mut outbox = Vec::new();
        let mut meta = Vec::new();
        for effect in &outcome.effects {
            match effect {
                Effect::Post { postings: p } => postings.extend(self.posting_writes(bundle, p.clone(), lang)?),
                Effect::Timers { arm } => timers = Some(arm.clone()),
                Effect::Notify { notifications } => {
                    let event = json!({"kind": outcome.event.kind, "transition": outcome.event.transition, "at": outcome.event.at, "from_state": outcome.event.from_state, "to_state": outcome.event.to_state});
                    let (i, o) = self.render_notifications(bundle, notifications, &outcome.instance, &outcome.event.actor, event)?;
                    inbox.extend(i);
                    outbox.extend(o);
                }
                Effect::Picked { team, method, person: Some(_) } if method == "round_robin" => {
                    let key = format!("turn:{team}");
                    let turn: u64 = self.store.meta(&key)?.and_then(|v| v.parse().ok()).unwrap_or(0);
                    meta.push((key, (turn + 1).to_string()));
                }
                Effect::Assigned { .. } | Effect::Start { .. } | Effect::Picked { .. } => {}
            }
        }
        let refs = records::instance_references(bundle, &outcome.instance.workflow, &outcome.instance.data, None);
        let record_writes = self.record_updates(bundle, &outcome.instance, &outcome.event, lang)?;
        Ok(CommandWrite {
            instance: Arc::new(outcome.instance),
            expected_version,
            event: outcome.event,
            idempotency,
            refs,
            postings,
            timers,
            fired_timer: None,
            inbox,
            outbox,
            records: record_writes,
            children: Vec::new(),
            meta,
        })
    }

    /// Why `user` cannot be assigned work of `team`, if they cannot: no such
    /// active user, or not a member of the team and not on duty for it.
    fn unfit_assignee(&self, bundle: &Bundle, user: &str, team: Option<&str>, lang: Lang) -> Result<Option<String>, CommandError> {
        let zh = lang == Lang::ZhCn;
        let Some(actor) = self.actors().into_iter().find(|a| a.id == user) else {
            return Ok(Some(if zh { format!("没有账号为 {user} 的在用人员") } else { format!("there is no active user `{user}`") }));
        };
        let Some(team) = team else { return Ok(None) };
        if actor.teams.iter().any(|t| t == team) {
            return Ok(None);
        }
        let on_duty = match &bundle.model.app.roster {
            Some(roster) => {
                let now: jiff::Timestamp = self.clock.now();
                self.store.records(&roster.value)?.iter().any(|r| {
                    let field = |f: &str| r.data.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
                    let covers = matches!((field("starts_at").parse::<jiff::Timestamp>(), field("ends_at").parse::<jiff::Timestamp>()), (Ok(a), Ok(b)) if a <= now && now < b);
                    !r.archived && field("team") == team && field("user") == user && covers
                })
            }
            None => false,
        };
        if on_duty {
            return Ok(None);
        }
        let team_name = self.team_label(bundle, team, lang.code());
        let name = self.display_name(user);
        Ok(Some(if zh {
            format!("{name} 不是{team_name}的成员，也不在该班组当前的值班表上")
        } else {
            format!("{name} is not a member of {team_name} nor on duty for it")
        }))
    }

    /// The record writes of the command's `update:` (of its transition, or of
    /// the start): each referenced record with the fields set, validated by
    /// its form, at the version read (the store refuses the command if it
    /// changed meanwhile), with the instance as the cause in its history.
    fn record_updates(
        &self,
        bundle: &Bundle,
        instance: &flowform_core::Instance,
        event: &flowform_core::Event,
        lang: Lang,
    ) -> Result<Vec<RecordWrite>, CommandError> {
        let Some(wf) = bundle.workflow(&instance.workflow) else { return Ok(Vec::new()) };
        let updates = match &event.transition {
            Some(t) => wf.transition(t).map(|t| t.update.as_slice()).unwrap_or_default(),
            None if event.kind == flowform_core::EventKind::Started => wf.start.update.as_slice(),
            None => &[],
        };
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let tz = bundle.model.app.timezone.as_ref().and_then(|t| jiff::tz::TimeZone::get(&t.value).ok()).unwrap_or(jiff::tz::TimeZone::UTC);
        let today = event.at.timestamp().to_zoned_datetime(tz).date().to_string();
        let forms: Vec<&FieldDef> = wf
            .start
            .form
            .iter()
            .chain(wf.transitions.iter().filter_map(|t| t.form.as_ref()))
            .filter_map(|f| bundle.form(&f.value))
            .flat_map(|f| f.def.fields.iter())
            .collect();
        let actor = flowform_core::Actor { id: event.actor.clone(), name: String::new(), roles: Vec::new(), teams: Vec::new(), email: None, department: None };
        let mut out = Vec::new();
        for u in updates {
            let Some(record_type) = forms.iter().find(|f| f.name == u.reference.value).and_then(|f| f.record.as_ref()) else { continue };
            let Some(id) = instance.data.get(&u.reference.value).and_then(Value::as_str) else { continue };
            let Some(current) = self.store.record(&record_type.value, id)? else { continue };
            let mut data = current.data.clone();
            for (name, value) in &u.set {
                // `{from: A, to: B}`: only when the field is A now (an asset retired
                // meanwhile stays retired).
                let value = match value {
                    Value::Object(m) if m.contains_key("to") && m.contains_key("from") => {
                        let from = &m["from"];
                        let current_value = current.data.get(&name.value).unwrap_or(&Value::Null);
                        let applies = match from {
                            Value::Array(options) => options.contains(current_value),
                            one => one == current_value,
                        };
                        if !applies {
                            continue;
                        }
                        &m["to"]
                    }
                    other => other,
                };
                let mut context = instance.data.clone();
                context.insert("now".into(), json!(event.at));
                context.insert("today".into(), json!(today));
                let value = records::fill_value(value, &context, &bundle.local_text(event.at));
                data.insert(name.value.clone(), value);
            }
            if data == current.data {
                continue; // already so: no change, no event
            }
            let (mut record, mut record_event) =
                records::update(bundle, &current, &Value::Object(data), &actor, event.at, lang).map_err(CommandError::Rejected)?;
            record_event.cause = Some(instance.id.clone());
            record.updated_at = event.at;
            let (_, form) = record_form(bundle, &record.record_type)?;
            // Only live records may be referred to, as for any record write.
            let problems = self.check_references(bundle, &form.def.fields, &record.data, "", lang)?;
            if !problems.is_empty() {
                return Err(CommandError::InvalidReferences(problems));
            }
            let refs = records::references(&form.def.fields, &record.data);
            out.push(RecordWrite { record, expected_version: current.version, event: record_event, refs, idempotency: None });
        }
        Ok(out)
    }

    fn record_type<'b>(&self, bundle: &'b Bundle, name: &str) -> Result<&'b RecordTypeDef, CommandError> {
        bundle.model.record_types.get(name).ok_or_else(|| CommandError::Rejected(Rejection::UnknownRecordType(name.to_string())))
    }

    fn submit(&self, job: Job) -> Result<CommitOutcome, CommandError> {
        Ok(self.store.submit(job)?)
    }

    fn write_record(
        &self,
        bundle: &Bundle,
        record: Record,
        event: flowform_core::records::RecordEvent,
        expected_version: u64,
        lang: Lang,
    ) -> Result<Record, CommandError> {
        let (rt, form) = record_form(bundle, &record.record_type)?;
        let mut errors = self.check_references(bundle, &form.def.fields, &record.data, "", lang)?;
        // A record's files: those it held may stay; new ones must be the actor's own uploads.
        let held = match self.store.record(&record.record_type, &record.id)? {
            Some(before) => crate::files::ids_in(before.data.values()),
            None => Default::default(),
        };
        let actor = event.actor.clone();
        let mut files = crate::files::FileCheck { actor: &actor, held: &held, errors: Vec::new() };
        self.check_files(&form.def.fields, &record.data, "", lang, &mut files);
        errors.extend(files.errors);
        if !errors.is_empty() {
            return Err(CommandError::InvalidReferences(errors));
        }
        let mut record = record;
        self.canonical_files(&form.def.fields, &mut record.data);
        if let Some(parent) = &rt.parent
            && let Some(Value::String(p)) = record.data.get(&parent.value)
            && self.ancestors(&record.record_type, &parent.value, p)?.contains(&record.id)
        {
            return Err(CommandError::InvalidReferences(vec![FieldError {
                field: parent.value.clone(),
                code: "cycle",
                message: format!("`{p}` is inside `{}`: a record cannot be its own ancestor", record.id),
            }]));
        }
        let refs = records::references(&form.def.fields, &record.data);
        match self.submit(Job::Record(Box::new(RecordWrite { record: record.clone(), expected_version, event, refs, idempotency: None })))? {
            CommitOutcome::Committed => Ok(record),
            CommitOutcome::Conflict { .. } if expected_version == 0 => {
                Err(CommandError::AlreadyExists(format!("a {} with id `{}` already exists", record.record_type, record.id)))
            }
            CommitOutcome::Conflict { current_version } => Err(CommandError::StaleVersion { expected: expected_version, current: current_version }),
            other => Err(other_outcome(other)),
        }
    }

    fn ancestors(&self, record_type: &str, parent_field: &str, start: &str) -> Result<Vec<String>, CommandError> {
        let mut out = Vec::new();
        let mut current = Some(start.to_string());
        while let Some(id) = current {
            if out.contains(&id) || out.len() > 64 {
                break;
            }
            out.push(id.clone());
            current = self.store.record(record_type, &id)?.and_then(|r| r.data.get(parent_field).and_then(Value::as_str).map(str::to_string));
        }
        Ok(out)
    }

    pub fn create_record(&self, type_name: &str, input: &Value, actor: &Actor, lang: Lang) -> Result<Record, CommandError> {
        let bundle = self.bundle();
        self.record_type(&bundle, type_name)?;
        let seq = if records::needs_sequence(&bundle, type_name) {
            match self.submit(Job::NextSequence(format!("record:{type_name}")))? {
                CommitOutcome::Sequence(n) => Some(n),
                other => return Err(other_outcome(other)),
            }
        } else {
            None
        };
        let (record, event) = records::create(&bundle, type_name, input, actor, self.now(), seq, lang)?;
        let record = self.write_record(&bundle, record, event, 0, lang)?;
        self.run_triggers(&bundle, &record);
        Ok(record)
    }

    /// Starts the workflows a new record triggers (`starts:` of its type), each at
    /// most once per record (an idempotency key per record and trigger).
    fn run_triggers(&self, bundle: &Bundle, record: &Record) {
        let Some(rt) = bundle.model.record_types.get(&record.record_type) else { return };
        for (i, t) in rt.starts.iter().enumerate() {
            let mut data = record.data.clone();
            data.insert("id".into(), json!(record.id));
            let fires = match &t.when {
                None => true,
                Some(_) => {
                    let ctx = flowform_rules::ScriptContext {
                        record: Value::Object(data),
                        input: json!({}),
                        actor: json!({"id": "system", "roles": [], "teams": []}),
                        records: std::sync::Arc::new(Value::Null),
                        now: self.now().to_string(),
                    };
                    match bundle.rules.run_guard(&flowform_rules::trigger_key(&rt.name, i), &ctx) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(record = %record.id, error = %e, "trigger condition failed");
                            false
                        }
                    }
                }
            };
            if !fires {
                continue;
            }
            let input: serde_json::Map<String, Value> = t.data.iter().map(|(k, v)| (k.clone(), crate::schedules::fill_value(v, record))).collect();
            // The trigger acts with the roles its definition declares, nothing more.
            let actor = Actor {
                id: format!("trigger:{}", rt.name),
                name: rt.title.get("zh-CN", &rt.name).to_string(),
                roles: t.roles.iter().map(|r| r.value.clone()).collect(),
                teams: Vec::new(),
                email: None,
                department: None,
            };
            let opts =
                crate::CommandOptions { lang: Lang::ZhCn, idempotency_key: Some(format!("trigger:{}:{}:{i}", rt.name, record.id)), expected_version: None };
            match self.start_blocking(&t.workflow.value, &Value::Object(input), &actor, &opts) {
                Ok(instance) => tracing::info!(record = %record.id, instance = %instance.id, workflow = %t.workflow.value, "record started a workflow"),
                Err(e) => {
                    tracing::warn!(record = %record.id, workflow = %t.workflow.value, error = %e, "record trigger could not start the workflow");
                    // Kept for admins (GET /api/v1/admin/quarantine), not only in the log.
                    let failure = flowform_store::FailedTrigger {
                        record_type: rt.name.clone(),
                        record: record.id.clone(),
                        workflow: t.workflow.value.clone(),
                        reason: e.to_string(),
                        at: self.now(),
                    };
                    if let Err(e) = self.store.submit(Job::FailedTrigger(failure)) {
                        tracing::error!(error = %e, "could not record a failed trigger");
                    }
                }
            }
        }
    }

    pub fn record(&self, type_name: &str, id: &str) -> Result<Record, CommandError> {
        self.record_type(&self.bundle(), type_name)?;
        self.store.record(type_name, id)?.ok_or_else(|| CommandError::RecordNotFound(format!("{type_name} `{id}`")))
    }

    pub fn update_record(
        &self,
        type_name: &str,
        id: &str,
        input: &Value,
        expected_version: Option<u64>,
        actor: &Actor,
        lang: Lang,
    ) -> Result<Record, CommandError> {
        let bundle = self.bundle();
        let current = self.record(type_name, id)?;
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(CommandError::StaleVersion { expected, current: current.version });
        }
        let (record, event) = records::update(&bundle, &current, input, actor, self.now(), lang)?;
        self.write_record(&bundle, record, event, current.version, lang)
    }

    pub fn archive_record(&self, type_name: &str, id: &str, archived: bool, actor: &Actor) -> Result<Record, CommandError> {
        let current = self.record(type_name, id)?;
        if current.archived == archived {
            return Ok(current);
        }
        let (record, event) = records::set_archived(&current, archived, actor, self.now());
        let refs = self
            .bundle()
            .model
            .record_types
            .get(type_name)
            .and_then(|rt| self.bundle().form(&rt.form.value).map(|f| records::references(&f.def.fields, &record.data)))
            .unwrap_or_default();
        match self.submit(Job::Record(Box::new(RecordWrite { record: record.clone(), expected_version: current.version, event, refs, idempotency: None })))? {
            CommitOutcome::Committed => Ok(record),
            CommitOutcome::Conflict { current_version } => Err(CommandError::StaleVersion { expected: current.version, current: current_version }),
            other => Err(other_outcome(other)),
        }
    }

    /// Deletes a record for good; refused while anything refers to it (archive it instead).
    pub fn purge_record(&self, type_name: &str, id: &str) -> Result<(), CommandError> {
        let current = self.record(type_name, id)?;
        match self.submit(Job::Purge { record_type: type_name.to_string(), id: id.to_string(), expected_version: current.version })? {
            CommitOutcome::Committed => Ok(()),
            CommitOutcome::Referenced(by) => {
                Err(CommandError::Referenced(format!("{type_name} `{id}` is referred to by {} and cannot be deleted; archive it instead", by.join(", "))))
            }
            other => Err(other_outcome(other)),
        }
    }

    /// Ids of `id` and every record below it in the hierarchy of `record_type`.
    pub fn subtree(&self, record_type: &str, id: &str) -> Result<BTreeSet<String>, CommandError> {
        let bundle = self.bundle();
        let mut out = BTreeSet::from([id.to_string()]);
        let Some(parent) = bundle.model.record_types.get(record_type).and_then(|rt| rt.parent.clone()) else { return Ok(out) };
        let all = self.store.records(record_type)?;
        loop {
            let before = out.len();
            for r in &all {
                if let Some(Value::String(p)) = r.data.get(&parent.value)
                    && out.contains(p)
                {
                    out.insert(r.id.clone());
                }
            }
            if out.len() == before {
                return Ok(out);
            }
        }
    }

    pub fn list_records(&self, type_name: &str, query: &RecordQuery) -> Result<RecordPage, CommandError> {
        let bundle = self.bundle();
        let (rt, form) = record_form(&bundle, type_name)?;
        for (field, _) in &query.filters {
            if !rt.filters.iter().any(|f| &f.value == field) && rt.parent.as_ref().is_none_or(|p| &p.value != field) {
                let allowed: Vec<&str> = rt.filters.iter().map(|f| f.value.as_str()).collect();
                return Err(CommandError::BadQuery(format!("`{field}` is not a filter of {type_name}; filters: {}", allowed.join(", "))));
            }
        }
        let under = match &query.under {
            Some((field, id)) => {
                let def = form.def.fields.iter().find(|f| &f.name == field && f.field_type == FieldType::Ref);
                let Some(target) = def.and_then(|f| f.record.as_ref()) else {
                    return Err(CommandError::BadQuery(format!("`under={field}:…` needs `{field}` to be a ref field of {type_name}")));
                };
                let mut set = self.subtree(&target.value, id)?;
                if target.value == type_name {
                    set.remove(id);
                    let mut with_root = set.clone();
                    with_root.insert(id.clone());
                    Some((field.clone(), with_root))
                } else {
                    Some((field.clone(), set))
                }
            }
            None => None,
        };
        // The plain list (no search, filter, order or subtree) reads only its page.
        if query.q.is_none() && query.filters.is_empty() && query.sort.is_none() && under.is_none() {
            let limit = query.limit.clamp(1, 1000);
            let (items, more) = self.store.records_page(type_name, query.cursor.as_deref(), limit, query.include_archived)?;
            let (all, live) = self.store.record_counts(type_name)?;
            let next_cursor = if more { items.last().map(|r| r.id.clone()) } else { None };
            return Ok(RecordPage { items, next_cursor, total: (if query.include_archived { all } else { live }) as usize });
        }
        let mut items: Vec<Record> = self
            .store
            .records(type_name)?
            .into_iter()
            .filter(|r| query.include_archived || !r.archived)
            .filter(|r| query.q.as_deref().is_none_or(|q| records::matches_query(rt, r, q)))
            .filter(|r| query.filters.iter().all(|(f, v)| field_matches(r.data.get(f), v)))
            .filter(|r| under.as_ref().is_none_or(|(f, set)| r.data.get(f).and_then(Value::as_str).is_some_and(|v| set.contains(v))))
            .collect();
        if let Some((field, _)) = &query.under
            && rt.parent.as_ref().is_some_and(|p| &p.value == field)
            && let Some((_, root)) = &query.under
        {
            items.retain(|r| &r.id != root);
        }
        if let Some(sort) = &query.sort {
            let (desc, field) = sort.strip_prefix('-').map_or((false, sort.as_str()), |f| (true, f));
            let value = |r: &Record| -> Value {
                match field {
                    "id" => json!(r.id),
                    "title" => json!(r.title),
                    "created_at" => json!(r.created_at),
                    "updated_at" => json!(r.updated_at),
                    f => r.data.get(f).cloned().unwrap_or(Value::Null),
                }
            };
            items.sort_by(|a, b| {
                let o = compare(&value(a), &value(b)).then_with(|| a.id.cmp(&b.id));
                if desc { o.reverse() } else { o }
            });
        }
        let start = match &query.cursor {
            Some(c) => items.iter().position(|r| &r.id == c).map_or(items.len(), |p| p + 1),
            None => 0,
        };
        let total = items.len();
        let limit = query.limit.clamp(1, 1000);
        let page: Vec<Record> = items.into_iter().skip(start).take(limit).collect();
        let next = (start + page.len() < total).then(|| page.last().map(|r| r.id.clone())).flatten();
        Ok(RecordPage { items: page, next_cursor: next, total })
    }

    /// The record's own events and the events of every instance that referred to it, by time.
    /// A record's own events and the events of the instances that refer to
    /// it — only those instances `actor` may read.
    pub fn record_history(&self, type_name: &str, id: &str, actor: &Actor) -> Result<Vec<Value>, CommandError> {
        self.record(type_name, id)?;
        let mut out: Vec<Value> = Vec::new();
        for e in self.store.record_history(type_name, id)? {
            let mut v = json!(e);
            v["source"] = json!("record");
            out.push(v);
        }
        for source in self.store.referrers(type_name, id)? {
            if let Some(instance_id) = source.strip_prefix("instance:")
                && let Some(instance) = self.store.instance(instance_id)?
                && self.may_read(&instance, actor)
            {
                for e in self.store.history(instance_id)? {
                    let mut v = json!(e);
                    // What the decision read (for what-if replay) stays inside, as in the instance's history.
                    if let Some(m) = v.as_object_mut() {
                        m.remove("decided_on");
                    }
                    v["source"] = json!("instance");
                    v["workflow"] = json!(instance.workflow);
                    out.push(v);
                }
            }
        }
        out.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
        Ok(out)
    }

    /// Movements posted by hand by a user with one of the ledger's roles.
    /// With `opts.idempotency_key`, a retried request gets the first one's movements
    /// instead of moving the stock again.
    pub fn post_movements(&self, ledger: &str, postings: Vec<Posting>, actor: &Actor, opts: &CommandOptions) -> Result<Vec<Movement>, CommandError> {
        let bundle = self.bundle();
        let def = bundle.model.ledgers.get(ledger).ok_or_else(|| CommandError::RecordNotFound(format!("ledger `{ledger}`")))?;
        if !actor.has_role("admin") && !def.roles.iter().any(|r| actor.has_role(&r.value)) {
            let mut roles: Vec<&str> = def.roles.iter().map(|r| r.value.as_str()).collect();
            roles.push("admin");
            return Err(CommandError::Rejected(Rejection::Forbidden(format!("posting to `{ledger}` needs one of the roles {}", roles.join(", ")))));
        }
        let refused = |e| CommandError::Rejected(Rejection::Posting(e));
        flowform_core::ledger::check_bounds(&postings, |_| def.max_quantity).map_err(refused)?;
        if postings.iter().any(|p| p.kind == flowform_core::ledger::MovementKind::Return) {
            return Err(refused(flowform_core::ledger::PostingRefused::ReturnByHand));
        }
        let request = serde_json::to_value(&postings).map_err(|e| CommandError::Internal(e.to_string()))?;
        let idempotency = crate::idempotency(actor, &format!("movements:{ledger}"), &request, opts)?;
        let writes = self.posting_writes(&bundle, postings, opts.lang)?;
        match self.submit(Job::Ledger(LedgerWrite { postings: writes, actor: actor.id.clone(), at: self.now(), idempotency: idempotency.clone() }))? {
            CommitOutcome::Moved(movements) => Ok(movements),
            CommitOutcome::Replay(first) => match (first.movements, idempotency) {
                (Some(movements), Some(idem)) if first.fingerprint == idem.fingerprint => Ok(movements),
                _ => Err(CommandError::IdempotencyKeyReused),
            },
            other => Err(other_outcome(other)),
        }
    }

    /// Balances of a ledger, filtered by dimension values; `under` (dimension, id)
    /// takes the subtree of that dimension's record hierarchy; `rollup` sums over it.
    pub fn balances(&self, ledger: &str, filters: &[(String, String)], under: Option<(String, String)>, rollup: bool) -> Result<Vec<BalanceRow>, CommandError> {
        let bundle = self.bundle();
        let def = bundle.model.ledgers.get(ledger).ok_or_else(|| CommandError::RecordNotFound(format!("ledger `{ledger}`")))?;
        let dims = def.dimension_names();
        for (f, _) in filters {
            if !dims.contains(&f.as_str()) {
                return Err(CommandError::BadQuery(format!("`{f}` is not a dimension of {ledger}; dimensions: {}", dims.join(", "))));
            }
        }
        let under = match under {
            Some((dim, id)) => {
                let Some((_, record_type)) = def.dimensions.iter().find(|(d, _)| d.value == dim) else {
                    return Err(CommandError::BadQuery(format!("`{dim}` is not a dimension of {ledger}")));
                };
                Some((dim.clone(), id.clone(), self.subtree(&record_type.value, &id)?))
            }
            None => None,
        };
        let rows: Vec<BalanceRow> = self
            .store
            .balances(ledger)?
            .into_iter()
            .filter(|r| filters.iter().all(|(f, v)| r.dims.get(f) == Some(v)))
            .filter(|r| under.as_ref().is_none_or(|(d, _, set)| r.dims.get(d).is_some_and(|v| set.contains(v))))
            .collect();
        if !rollup {
            return Ok(rows);
        }
        let Some((dim, root, _)) = under else {
            return Err(CommandError::BadQuery("`rollup=true` needs `under=DIMENSION:ID`".into()));
        };
        let mut totals: BTreeMap<String, BalanceRow> = BTreeMap::new();
        for r in rows {
            let mut dims = r.dims.clone();
            dims.insert(dim.clone(), root.clone());
            let k = flowform_core::ledger::balance_key(&dims, &dims.keys().cloned().collect::<Vec<_>>());
            let entry = totals.entry(k).or_insert_with(|| BalanceRow { dims, balance: Default::default() });
            entry.balance.on_hand += r.balance.on_hand;
            entry.balance.reserved += r.balance.reserved;
        }
        Ok(totals.into_values().collect())
    }

    /// Values of the threshold dimension whose total available is below their minimum.
    pub fn below_threshold(&self, ledger: &str) -> Result<Vec<Value>, CommandError> {
        let bundle = self.bundle();
        let def = bundle.model.ledgers.get(ledger).ok_or_else(|| CommandError::RecordNotFound(format!("ledger `{ledger}`")))?;
        let Some((dim, field)) = &def.threshold else { return Ok(Vec::new()) };
        let record_type = def.dimensions.iter().find(|(d, _)| d.value == dim.value).map(|(_, r)| r.value.clone()).unwrap_or_default();
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        for row in self.store.balances(ledger)? {
            if let Some(v) = row.dims.get(&dim.value) {
                *totals.entry(v.clone()).or_default() += row.balance.available();
            }
        }
        let mut out = Vec::new();
        for record in self.store.records(&record_type)?.into_iter().filter(|r| !r.archived) {
            let Some(minimum) = record.data.get(&field.value).and_then(Value::as_f64).map(|f| f as i64) else { continue };
            let available = totals.get(&record.id).copied().unwrap_or(0);
            if available < minimum {
                out.push(
                    json!({ dim.value.clone(): record.id, "title": record.title, "available": available, "minimum": minimum, "missing": minimum - available }),
                );
            }
        }
        Ok(out)
    }
}

/// A record type and the compiled form of its fields.
pub(crate) fn record_form<'b>(bundle: &'b Bundle, name: &str) -> Result<(&'b RecordTypeDef, &'b flowform_forms::CompiledForm), CommandError> {
    let rt = bundle.model.record_types.get(name).ok_or_else(|| CommandError::Rejected(Rejection::UnknownRecordType(name.to_string())))?;
    let form = bundle.form(&rt.form.value).ok_or_else(|| CommandError::Internal(format!("the form of record type `{name}` is missing")))?;
    Ok((rt, form))
}

fn field_matches(value: Option<&Value>, wanted: &str) -> bool {
    match value {
        Some(Value::String(s)) => s == wanted,
        Some(Value::Array(items)) => items.iter().any(|i| field_matches(Some(i), wanted)),
        Some(Value::Number(n)) => wanted.parse::<f64>().ok() == n.as_f64(),
        Some(Value::Bool(b)) => wanted.parse::<bool>().ok() == Some(*b),
        Some(Value::Null) | None => wanted.is_empty(),
        Some(Value::Object(_)) => false,
    }
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(std::cmp::Ordering::Equal),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Greater,
        (_, Value::Null) => std::cmp::Ordering::Less,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

#[derive(Clone, Debug, Default)]
pub struct RecordQuery {
    pub q: Option<String>,
    pub filters: Vec<(String, String)>,
    /// `(ref field, id)`: records whose field points at `id` or below it.
    pub under: Option<(String, String)>,
    /// A field, `id`, `title`, `created_at`; `-` in front for descending.
    pub sort: Option<String>,
    pub include_archived: bool,
    pub limit: usize,
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecordPage {
    pub items: Vec<Record>,
    pub next_cursor: Option<String>,
    pub total: usize,
}
