//! Running reports: the rows a report reads (instances, events, movements or
//! records the caller may read, with the fields of referenced records the
//! report names), computed by the pure core, labelled for people.

use crate::facts::Cell;
use crate::{CommandError, Runtime};
use flowform_core::reports::{ReportQuery, ReportTable};
use flowform_core::{Actor, Bundle, Lang};
use flowform_model::{FieldDef, FieldType, ReportDef, ReportSource};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;

/// A report's table as people read it.
#[derive(Clone, Debug, Serialize)]
pub struct ReportView {
    pub name: String,
    pub title: String,
    pub description: String,
    pub chart: String,
    pub by: String,
    pub by_label: String,
    pub columns: Vec<Value>,
    pub rows: Vec<Value>,
    pub total: Value,
}

/// How many rows a report reads at most (a bound on memory; see docs/performance.md).
pub const MAX_REPORT_ROWS: usize = 2_000_000;

impl Runtime {
    /// The reports `actor` may run.
    pub fn reports_for(&self, actor: &Actor) -> Vec<ReportDef> {
        let bundle = self.bundle();
        bundle.model.reports.values().filter(|r| may_run(r, actor)).cloned().collect()
    }

    /// Runs report `name` for `actor` (404 as unknown when they may not).
    pub fn run_report(&self, name: &str, actor: &Actor, q: &ReportQuery, lang: Lang) -> Result<ReportView, CommandError> {
        let bundle = self.bundle();
        let rep = bundle.model.reports.get(name).filter(|r| may_run(r, actor)).ok_or_else(|| CommandError::RecordNotFound(format!("report `{name}`")))?;
        let dims: Vec<&str> = rep.dimensions.iter().map(|d| d.value.as_str()).collect();
        if !q.by.is_empty() && !dims.contains(&q.by.as_str()) && !dims.iter().any(|d| d.replace(' ', "") == q.by.replace(' ', "")) {
            return Err(CommandError::BadQuery(format!("`by={}` is not offered by this report; use one of: {}", q.by, dims.join(", "))));
        }
        let names = flowform_model::check::report_fields(&bundle.model, &rep.source);
        for (k, _) in &q.filters {
            if !names.contains(k) {
                return Err(CommandError::BadQuery(format!("`{k}` is not a field of this report's rows")));
            }
        }
        let tz = crate::app_zone(&bundle);
        if let Some(table) = self.report_from_facts(&bundle, rep, actor, q, &tz)? {
            return Ok(self.view(&bundle, rep, q, table, lang));
        }
        let rows = self.report_rows(&bundle, rep, actor, q)?;
        let table = flowform_core::reports::run(&bundle.model, rep, &rows, q, &tz);
        Ok(self.view(&bundle, rep, q, table, lang))
    }

    /// Builds `workflow`'s report facts now, on this thread (otherwise the
    /// first report over it starts a build in the background).
    pub fn build_report_facts(&self, workflow: &str) {
        let bundle = self.bundle();
        if self.facts().start_building(workflow) {
            build_facts(self.store.clone(), self.facts().clone(), workflow.to_string(), fact_columns(&bundle, workflow, &ReportQuery::default()));
        }
        // And the events that reports over the workflow read.
        for rep in bundle.model.reports.values() {
            if let ReportSource::Events { workflow: w, transition } = &rep.source
                && w.value == workflow
            {
                let t = transition.as_ref().map(|t| t.value.clone());
                let key = crate::facts::EventFacts::key(workflow, t.as_deref());
                if self.event_facts().start_building(&key) {
                    build_event_facts(self.store.clone(), self.event_facts().clone(), workflow.to_string(), t, key);
                }
            }
        }
    }

    /// The workflows some report reads the instances or events of.
    pub fn report_workflows(&self) -> Vec<String> {
        let bundle = self.bundle();
        let mut out: Vec<String> = bundle
            .model
            .reports
            .values()
            .filter_map(|r| match &r.source {
                ReportSource::Instances { workflow } | ReportSource::Events { workflow, .. } => Some(workflow.value.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// How many instances `workflow`'s report facts hold, if they are ready.
    pub fn report_facts_rows(&self, workflow: &str) -> Option<usize> {
        self.facts().table(workflow, &[]).ok().and_then(|t| t.read().ok().map(|t| t.len()))
    }

    /// [`Runtime::run_report`] computed from the store, never from facts (for comparisons).
    pub fn run_report_from_store(&self, name: &str, actor: &Actor, q: &ReportQuery, lang: Lang) -> Result<ReportView, CommandError> {
        let bundle = self.bundle();
        let rep = bundle.model.reports.get(name).filter(|r| may_run(r, actor)).ok_or_else(|| CommandError::RecordNotFound(format!("report `{name}`")))?;
        let rows = self.report_rows(&bundle, rep, actor, q)?;
        let table = flowform_core::reports::run(&bundle.model, rep, &rows, q, &crate::app_zone(&bundle));
        Ok(self.view(&bundle, rep, q, table, lang))
    }

    /// The report from the workflow's facts in memory, when they are ready
    /// and the caller sees every instance; `None` otherwise (the facts are
    /// then built in the background for the next time).
    fn report_from_facts(
        &self,
        bundle: &Bundle,
        rep: &ReportDef,
        actor: &Actor,
        q: &ReportQuery,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Option<ReportTable>, CommandError> {
        let (workflow, events) = match &rep.source {
            ReportSource::Instances { workflow } => (workflow, None),
            ReportSource::Events { workflow, transition } => {
                (workflow, Some(crate::facts::EventFacts::key(&workflow.value, transition.as_ref().map(|t| t.value.as_str()))))
            }
            _ => return Ok(None),
        };
        let Some(wf) = bundle.workflow(&workflow.value) else { return Ok(None) };
        if !actor.has_role("admin") && !flowform_core::visibility::sees_all(wf, actor) {
            return Ok(None);
        }
        let needed = fact_columns(bundle, &workflow.value, q);
        // Whoever sees everything waits for the facts rather than reading
        // every instance from the store (which takes the memory of them all).
        let waited = std::time::Instant::now();
        let table = loop {
            match self.facts().table(&workflow.value, &needed) {
                Ok(t) => break t,
                Err(build) => {
                    if build && self.facts().start_building(&workflow.value) {
                        let (store, facts, name, needed) = (self.store.clone(), self.facts().clone(), workflow.value.clone(), needed.clone());
                        std::thread::spawn(move || build_facts(store, facts, name, needed));
                    }
                    if waited.elapsed() > FACTS_WAIT {
                        return Err(CommandError::Unavailable("the report's data is still being prepared; try again in a minute".into()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        };
        let event_table = match &events {
            None => None,
            Some(key) => Some(loop {
                match self.event_facts().table(key) {
                    Ok(t) => break t,
                    Err(build) => {
                        if build && self.event_facts().start_building(key) {
                            let (store, facts, name, key) = (self.store.clone(), self.event_facts().clone(), workflow.value.clone(), key.clone());
                            let transition = match &rep.source {
                                ReportSource::Events { transition, .. } => transition.as_ref().map(|t| t.value.clone()),
                                _ => None,
                            };
                            std::thread::spawn(move || build_event_facts(store, facts, name, transition, key));
                        }
                        if waited.elapsed() > FACTS_WAIT {
                            return Err(CommandError::Unavailable("the report's data is still being prepared; try again in a minute".into()));
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            }),
        };
        let t = table.read().map_err(|_| CommandError::Internal("report facts poisoned".into()))?;
        let columns: HashMap<&str, usize> = t.columns.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let table: &crate::facts::FactTable = &t;
        // The records `REF.FIELD` names read: once per distinct id of the column.
        let types = ref_types(bundle, rep);
        let mut refs: HashMap<(String, String), Map<String, Value>> = HashMap::new();
        for head in read_names(rep, q).iter().filter_map(|n| n.split_once('.').map(|(h, _)| h.to_string())) {
            let (Some(&c), Some(kind)) = (columns.get(head.as_str()), types.get(&head)) else { continue };
            for id in t.distinct(c).iter().filter_map(Value::as_str) {
                if refs.contains_key(&(head.clone(), id.to_string())) {
                    continue;
                }
                if let Some(r) = self.store.record(kind, id)? {
                    let mut m = r.data.clone();
                    m.insert("title".into(), json!(r.title));
                    refs.insert((head.clone(), id.to_string()), m);
                }
            }
        }
        let micros = |ts: Option<flowform_core::reports::Timestamp>| ts.map(|t| t.as_microsecond());
        if let Some(events) = event_table {
            let e = events.read().map_err(|_| CommandError::Internal("report facts poisoned".into()))?;
            let by_time = rep.time.value == "at";
            let range = if by_time { e.range(micros(q.from), micros(q.to)) } else { 0..e.len() };
            let q = &ReportQuery { range_applied: by_time, ..q.clone() };
            let view = FactsView { table, columns, refs };
            let rows: Vec<EventRow> = range.map(|row| EventRow { events: &e, view: &view, row, instance: OnceCell::new(), own: OnceCell::new() }).collect();
            return Ok(Some(flowform_core::reports::run(&bundle.model, rep, &rows, q, tz)));
        }
        let by_time = rep.time.value == "created_at";
        let range = if by_time { t.range(micros(q.from), micros(q.to)) } else { 0..t.len() };
        let q = &ReportQuery { range_applied: by_time, ..q.clone() };
        let view = FactsView { table, columns, refs };
        let rows: Vec<FactRow> = range.map(|r| FactRow::new(&view, r)).collect();
        Ok(Some(flowform_core::reports::run(&bundle.model, rep, &rows, q, tz)))
    }

    /// The rows of a report's source that `actor` may read, with the
    /// `REF.FIELD` values the report (and the query) name.
    pub fn report_rows(&self, bundle: &Bundle, rep: &ReportDef, actor: &Actor, q: &ReportQuery) -> Result<Vec<Map<String, Value>>, CommandError> {
        let mut rows: Vec<Map<String, Value>> = Vec::new();
        match &rep.source {
            ReportSource::Instances { workflow } | ReportSource::Events { workflow, .. } => {
                let mut before = None;
                loop {
                    let filter = flowform_store::InstanceFilter {
                        workflow: Some(workflow.value.clone()),
                        before: before.clone(),
                        limit: 500,
                        visibility: self.visibility(actor),
                        ..Default::default()
                    };
                    let page = self.store.instances(&filter)?;
                    for i in &page.items {
                        let base = crate::facts::row_of(i);
                        match &rep.source {
                            ReportSource::Events { transition, .. } => {
                                for e in self.store.history(&i.id)? {
                                    if transition.as_ref().is_some_and(|t| e.transition.as_deref() != Some(t.value.as_str())) {
                                        continue;
                                    }
                                    let mut row = base.clone();
                                    row.insert("at".into(), json!(e.at));
                                    row.insert("actor".into(), json!(e.actor));
                                    row.insert("transition".into(), json!(e.transition));
                                    row.insert("instance".into(), json!(i.id));
                                    rows.push(row);
                                }
                            }
                            _ => rows.push(base),
                        }
                    }
                    if rows.len() >= MAX_REPORT_ROWS {
                        break;
                    }
                    // Pages come newest first: once a whole page was created
                    // before the range, so was everything after it.
                    let all_older = q.from.is_some_and(|from| {
                        rep.time.value == "created_at"
                            && matches!(rep.source, ReportSource::Instances { .. })
                            && page.items.iter().all(|i| i.created_at.timestamp() < from)
                    });
                    match page.next {
                        Some(next) if !all_older => before = Some(next),
                        _ => break,
                    }
                }
            }
            ReportSource::Movements { ledger } => {
                let readable = bundle.model.ledgers.get(&ledger.value).is_some_and(|l| l.readable_by(actor.roles.iter().map(String::as_str)));
                if readable {
                    let mut after = 0;
                    loop {
                        let batch = self.store.movements(&ledger.value, after, 1000)?;
                        let Some(last) = batch.last().map(|m| m.seq) else { break };
                        for m in batch {
                            let mut row: Map<String, Value> = m.dims.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                            for (k, v) in [
                                ("at", json!(m.at)),
                                ("actor", json!(m.actor)),
                                ("kind", json!(m.kind)),
                                ("quantity", json!(m.quantity)),
                                ("on_hand_delta", json!(m.on_hand_delta)),
                                ("reserved_delta", json!(m.reserved_delta)),
                                ("reason", json!(m.reason)),
                                ("instance", json!(m.instance_id)),
                                ("seq", json!(m.seq)),
                            ] {
                                row.insert(k.into(), v);
                            }
                            rows.push(row);
                        }
                        if rows.len() >= MAX_REPORT_ROWS {
                            break;
                        }
                        after = last;
                    }
                }
            }
            ReportSource::Records { record_type } => {
                let readable = bundle
                    .model
                    .record_types
                    .get(&record_type.value)
                    .is_some_and(|t| t.access.allows(flowform_model::RecordOp::Read, actor.roles.iter().map(String::as_str)));
                if readable {
                    for r in self.store.records(&record_type.value)?.into_iter().filter(|r| !r.archived) {
                        let mut row = r.data.clone();
                        row.insert("id".into(), json!(r.id));
                        row.insert("title".into(), json!(r.title));
                        row.insert("created_at".into(), json!(r.created_at));
                        row.insert("updated_at".into(), json!(r.updated_at));
                        rows.push(row);
                    }
                }
            }
        }
        self.add_referenced(bundle, rep, q, &mut rows)?;
        Ok(rows)
    }

    /// Fills `REF.FIELD` in each row for every such name the report or the
    /// query uses (each record read once).
    fn add_referenced(&self, bundle: &Bundle, rep: &ReportDef, q: &ReportQuery, rows: &mut [Map<String, Value>]) -> Result<(), CommandError> {
        let mut used: Vec<String> = rep.dimensions.iter().map(|d| d.value.clone()).collect();
        used.extend(q.filters.iter().map(|(k, _)| k.clone()));
        used.push(q.by.clone());
        used.push(rep.time.value.clone());
        if let Some((_, c)) = &rep.filter {
            used.extend(c.fields().into_iter().map(str::to_string));
        }
        for m in &rep.measures {
            used.extend(m.field.iter().map(|f| f.value.clone()));
            if let Some((_, c)) = &m.condition {
                used.extend(c.fields().into_iter().map(str::to_string));
            }
        }
        let paths: Vec<(String, String)> = used.iter().filter_map(|u| u.split_once('.')).map(|(a, b)| (a.to_string(), b.to_string())).collect();
        if paths.is_empty() {
            return Ok(());
        }
        let types = ref_types(bundle, rep);
        let mut cache: HashMap<(String, String), Option<Map<String, Value>>> = HashMap::new();
        for row in rows.iter_mut() {
            for (field, sub) in &paths {
                let Some(kind) = types.get(field) else { continue };
                let Some(id) = row.get(field).and_then(Value::as_str).map(str::to_string) else { continue };
                let entry = match cache.get(&(kind.clone(), id.clone())) {
                    Some(e) => e.clone(),
                    None => {
                        let e = self.store.record(kind, &id)?.map(|r| {
                            let mut m = r.data.clone();
                            m.insert("title".into(), json!(r.title));
                            m
                        });
                        cache.insert((kind.clone(), id.clone()), e.clone());
                        e
                    }
                };
                if let Some(v) = entry.and_then(|m| m.get(sub).cloned()) {
                    row.insert(format!("{field}.{sub}"), v);
                }
            }
        }
        Ok(())
    }

    fn view(&self, bundle: &Bundle, rep: &ReportDef, q: &ReportQuery, table: ReportTable, lang: Lang) -> ReportView {
        let code = lang.code();
        let columns: Vec<Value> = rep.measures.iter().map(|m| json!({"name": m.name, "label": m.label.get(code, &m.name), "unit": m.unit})).collect();
        let fields = form_fields(bundle, rep);
        let dims: Vec<&str> = q.by.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
        let label = |key: &str| {
            key.split(flowform_core::reports::KEY_SEP)
                .zip(&dims)
                .map(|(k, d)| self.dimension_label(bundle, rep, &fields, d, k, lang))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        // First and last times read as local times (the time of day within a day).
        let tz = crate::app_zone(bundle);
        let pattern = if dims.contains(&"day") { "%H:%M" } else { "%Y-%m-%d %H:%M" };
        let show = |m: &flowform_model::MeasureDef, v: Option<f64>| -> Value {
            match (m.kind, v) {
                (_, None) => Value::Null,
                (flowform_model::MeasureKind::First | flowform_model::MeasureKind::Last, Some(secs)) => {
                    jiff::Timestamp::from_second(secs as i64).map_or(Value::Null, |t| json!(t.to_zoned_datetime(tz.clone()).strftime(pattern).to_string()))
                }
                (_, Some(v)) => json!(round(v)),
            }
        };
        let row = |r: &flowform_core::reports::ReportRow, label: String| json!({"key": r.key, "label": label, "rows": r.rows, "values": rep.measures.iter().zip(&r.values).map(|(m, v)| show(m, *v)).collect::<Vec<_>>()});
        let by_label = dims
            .iter()
            .map(|b| {
                if flowform_model::TIME_BUCKETS.contains(b) {
                    bucket_label(b, lang).to_string()
                } else {
                    field_label(&fields, b, lang).unwrap_or_else(|| b.to_string())
                }
            })
            .collect::<Vec<_>>()
            .join(" · ");
        ReportView {
            name: rep.name.clone(),
            title: rep.title.get(code, &rep.name).to_string(),
            description: rep.description.get(code, "").to_string(),
            chart: rep.chart.value.clone(),
            by: q.by.clone(),
            by_label,
            columns,
            rows: table.rows.iter().map(|r| row(r, label(&r.key))).collect(),
            total: row(&table.total, if lang == Lang::En { "Total".into() } else { "合计".into() }),
        }
    }

    /// How people call a dimension's value: an option's label, a record's
    /// title, a team's or a person's name, a state's label; the value itself otherwise.
    fn dimension_label(&self, bundle: &Bundle, rep: &ReportDef, fields: &[FieldDef], by: &str, key: &str, lang: Lang) -> String {
        if key.is_empty() {
            return if lang == Lang::En { "(none)".into() } else { "（未填）".into() };
        }
        match by {
            "team" => return self.team_label(bundle, key, lang.code()),
            "assignee" | "requester" | "actor" => return self.display_name(key),
            "state" => {
                if let ReportSource::Instances { workflow } | ReportSource::Events { workflow, .. } = &rep.source
                    && let Some(s) = bundle.workflow(&workflow.value).and_then(|w| w.state(key))
                {
                    return s.label.get(lang.code(), key).to_string();
                }
            }
            _ => {}
        }
        let (head, sub) = by.split_once('.').map_or((by, None), |(a, b)| (a, Some(b)));
        let Some(f) = fields.iter().find(|f| f.name == head) else { return key.to_string() };
        let f = match (sub, &f.record) {
            (Some(sub), Some(kind)) => match bundle.model.record_types.get(&kind.value).and_then(|t| bundle.form(&t.form.value)) {
                Some(form) => match form.def.fields.iter().find(|x| x.name == sub) {
                    Some(x) => x.clone(),
                    None => return key.to_string(),
                },
                None => return key.to_string(),
            },
            _ => f.clone(),
        };
        match (f.field_type, &f.record) {
            (FieldType::Enum, _) => f.options.iter().find(|o| o.value == key).map_or_else(|| key.to_string(), |o| o.label.get(lang.code(), key).to_string()),
            (FieldType::Ref, Some(kind)) => self.store.record(&kind.value, key).ok().flatten().map_or_else(|| key.to_string(), |r| r.title),
            (FieldType::Boolean, _) => match (key, lang) {
                ("true", Lang::En) => "yes".into(),
                ("true", _) => "是".into(),
                ("false", Lang::En) => "no".into(),
                _ => "否".into(),
            },
            _ => key.to_string(),
        }
    }
}

/// A fact table as one report reads it: its columns by name and the
/// records `REF.FIELD` names.
struct FactsView<'a> {
    table: &'a crate::facts::FactTable,
    columns: HashMap<&'a str, usize>,
    refs: HashMap<(String, String), Map<String, Value>>,
}

/// A row of a fact table, with the referenced records' fields.
struct FactRow<'a> {
    view: &'a FactsView<'a>,
    row: usize,
    /// Times asked for as text (kept as numbers in the table), by column.
    texts: OnceCell<Box<[OnceCell<Value>]>>,
}

impl<'a> FactRow<'a> {
    fn new(view: &'a FactsView<'a>, row: usize) -> Self {
        FactRow { view, row, texts: OnceCell::new() }
    }

    fn value(&self, c: usize) -> &Value {
        let table = self.view.table;
        match table.cell(self.row, c) {
            Cell::Value(v) => v,
            Cell::Time => {
                let texts = self.texts.get_or_init(|| (0..table.columns.len()).map(|_| OnceCell::new()).collect());
                texts[c].get_or_init(|| table.time_value(self.row, c))
            }
        }
    }
}

impl flowform_core::reports::Row for FactRow<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        if let Some(&c) = self.view.columns.get(name) {
            return Some(self.value(c));
        }
        let (head, sub) = name.split_once('.')?;
        let id = self.value(*self.view.columns.get(head)?).as_str()?;
        self.view.refs.get(&(head.to_string(), id.to_string()))?.get(sub)
    }

    fn time(&self, name: &str) -> Option<i64> {
        match self.view.columns.get(name) {
            Some(&c) if self.view.table.is_time(c) => self.view.table.micros(self.row, c),
            _ => self.field(name).and_then(flowform_core::reports::micros),
        }
    }
}

/// How long a report waits for its facts to be read into memory.
const FACTS_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The names one query of a report reads (its grouping, not every dimension it offers).
fn read_names(rep: &ReportDef, q: &ReportQuery) -> Vec<String> {
    let mut all = used_names(rep, q);
    let offered: Vec<String> = rep.dimensions.iter().flat_map(|d| d.value.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>()).collect();
    let by: Vec<&str> = q.by.split(',').map(str::trim).collect();
    let needed_elsewhere = |n: &String| {
        rep.time.value == *n
            || q.filters.iter().any(|(k, _)| k == n)
            || rep.filter.as_ref().is_some_and(|(_, c)| c.fields().contains(&n.as_str()))
            || rep.measures.iter().any(|m| {
                m.field.as_ref().is_some_and(|f| f.value == *n)
                    || m.condition.iter().chain(m.filter.iter()).any(|(_, c)| c.fields().contains(&n.as_str()))
                    || m.between.as_ref().is_some_and(|(a, b, _)| a.value == *n || b.value == *n)
            })
    };
    all.retain(|n| !offered.contains(n) || by.contains(&n.as_str()) || needed_elsewhere(n));
    all
}

/// An event row: its own fields, the rest its instance's (found when first asked for).
struct EventRow<'a> {
    events: &'a crate::facts::EventTable,
    view: &'a FactsView<'a>,
    row: usize,
    instance: OnceCell<Option<FactRow<'a>>>,
    /// `at` and `instance` when asked for as values (kept as numbers in the table).
    own: OnceCell<Box<[OnceCell<Value>; 2]>>,
}

impl EventRow<'_> {
    fn instance(&self) -> Option<&FactRow<'_>> {
        self.instance.get_or_init(|| self.view.table.row_of_event(self.events, self.row).map(|r| FactRow::new(self.view, r))).as_ref()
    }

    fn own(&self, i: usize) -> &Value {
        let own = self.own.get_or_init(Default::default);
        own[i].get_or_init(|| if i == 0 { self.events.at_value(self.row) } else { Value::String(self.events.instance_id(self.row)) })
    }
}

impl flowform_core::reports::Row for EventRow<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        match name {
            "at" => Some(self.own(0)),
            "instance" => Some(self.own(1)),
            _ => self.events.name(self.row, name).or_else(|| self.instance()?.field(name)),
        }
    }

    fn time(&self, name: &str) -> Option<i64> {
        match name {
            "at" => self.events.at_micros(self.row),
            "actor" | "transition" | "instance" => self.field(name).and_then(flowform_core::reports::micros),
            _ => self.instance()?.time(name),
        }
    }

    fn number_of(&self, name: &str) -> Option<u128> {
        (name == "instance").then(|| self.events.instance_key(self.row))
    }
}

/// Reads every event of `workflow` (of `transition`, or all) into a new event table.
fn build_event_facts(store: Arc<dyn flowform_store::Store>, facts: Arc<crate::facts::EventFacts>, workflow: String, transition: Option<String>, key: String) {
    let mut table = crate::facts::EventTable::default();
    let mut before = None;
    loop {
        let filter = flowform_store::InstanceFilter { workflow: Some(workflow.clone()), before: before.clone(), limit: 500, ..Default::default() };
        let page = match store.instances(&filter) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(workflow = %workflow, error = %e, "report facts could not be read; reports read the store");
                facts.abandon(&key);
                return;
            }
        };
        let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        match store.histories(&ids) {
            Ok(histories) => histories.iter().flatten().filter(|e| transition.is_none() || e.transition == transition).for_each(|e| table.append(e)),
            Err(e) => {
                tracing::warn!(workflow = %workflow, error = %e, "report facts could not be read");
                facts.abandon(&key);
                return;
            }
        }
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    table.sort();
    facts.install(&key, table);
}

/// Every name a report (and its query) reads.
fn used_names(rep: &ReportDef, q: &ReportQuery) -> Vec<String> {
    let mut used: Vec<String> = rep.dimensions.iter().flat_map(|d| d.value.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>()).collect();
    used.extend(q.filters.iter().map(|(k, _)| k.clone()));
    used.extend(q.by.split(',').map(|x| x.trim().to_string()));
    used.push(rep.time.value.clone());
    if let Some((_, c)) = &rep.filter {
        used.extend(c.fields().into_iter().map(str::to_string));
    }
    for m in &rep.measures {
        used.extend(m.field.iter().map(|f| f.value.clone()));
        if let Some((a, b, _)) = &m.between {
            used.push(a.value.clone());
            used.push(b.value.clone());
        }
        for (_, c) in m.condition.iter().chain(m.filter.iter()) {
            used.extend(c.fields().into_iter().map(str::to_string));
        }
    }
    used.retain(|u| !u.is_empty() && !flowform_model::TIME_BUCKETS.contains(&u.as_str()));
    used
}

/// The columns of a workflow's facts: every field any report over its
/// instances reads (the head of `REF.FIELD`), and what the query filters on.
fn fact_columns(bundle: &Bundle, workflow: &str, q: &ReportQuery) -> Vec<String> {
    let mut out: Vec<String> = vec!["created_at".into()];
    for rep in bundle.model.reports.values() {
        match &rep.source {
            ReportSource::Instances { workflow: w } if w.value == workflow => out.extend(used_names(rep, &ReportQuery::default())),
            // Events read the fields of their instance from the same table.
            ReportSource::Events { workflow: w, .. } if w.value == workflow => {
                out.extend(used_names(rep, &ReportQuery::default()).into_iter().filter(|n| !["at", "actor", "transition", "instance"].contains(&n.as_str())))
            }
            _ => {}
        }
    }
    out.extend(q.filters.iter().map(|(k, _)| k.clone()));
    let mut heads: Vec<String> = out.into_iter().map(|n| n.split_once('.').map_or(n.clone(), |(h, _)| h.to_string())).collect();
    heads.sort();
    heads.dedup();
    heads
}

/// Reads every instance of `workflow` into a new fact table (on a thread of its own).
fn build_facts(store: Arc<dyn flowform_store::Store>, facts: Arc<crate::facts::Facts>, workflow: String, columns: Vec<String>) {
    let mut table = crate::facts::FactTable::new(columns);
    let mut before = None;
    loop {
        let filter = flowform_store::InstanceFilter { workflow: Some(workflow.clone()), before: before.clone(), limit: 500, ..Default::default() };
        match store.instances(&filter) {
            Ok(page) => {
                page.items.iter().for_each(|i| table.append_newest_first(i));
                match page.next {
                    Some(n) => before = Some(n),
                    None => break,
                }
            }
            Err(e) => {
                tracing::warn!(workflow = %workflow, error = %e, "report facts could not be read; reports read the store");
                facts.abandon(&workflow);
                return;
            }
        }
    }
    table.reverse();
    facts.install(&workflow, table);
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn may_run(rep: &ReportDef, actor: &Actor) -> bool {
    actor.has_role("admin") || rep.roles.iter().any(|r| r.value == flowform_model::EVERYONE || actor.has_role(&r.value))
}

pub fn bucket_label(by: &str, lang: Lang) -> &'static str {
    match (by, lang) {
        ("day", Lang::En) => "Day",
        ("week", Lang::En) => "Week",
        ("month", Lang::En) => "Month",
        ("quarter", Lang::En) => "Quarter",
        ("year", Lang::En) => "Year",
        ("day", _) => "日期",
        ("week", _) => "周",
        ("month", _) => "月份",
        ("quarter", _) => "季度",
        _ => "年份",
    }
}

/// The fields of the forms behind a report's rows (for labels).
pub fn form_fields(bundle: &Bundle, rep: &ReportDef) -> Vec<FieldDef> {
    match &rep.source {
        ReportSource::Instances { workflow } | ReportSource::Events { workflow, .. } => bundle
            .workflow(&workflow.value)
            .map(|w| {
                w.start
                    .form
                    .iter()
                    .chain(w.transitions.iter().filter_map(|t| t.form.as_ref()))
                    .filter_map(|f| bundle.form(&f.value))
                    .flat_map(|f| f.def.fields.clone())
                    .collect()
            })
            .unwrap_or_default(),
        ReportSource::Records { record_type } => {
            bundle.model.record_types.get(&record_type.value).and_then(|t| bundle.form(&t.form.value)).map(|f| f.def.fields.clone()).unwrap_or_default()
        }
        ReportSource::Movements { ledger } => bundle
            .model
            .ledgers
            .get(&ledger.value)
            .map(|l| {
                l.dimensions
                    .iter()
                    .map(|(d, t)| {
                        let mut f = FieldDef::new(&d.value, FieldType::Ref);
                        f.record = Some(t.clone());
                        f.label = bundle.model.record_types.get(&t.value).map(|rt| rt.title.clone()).unwrap_or_default();
                        f
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn field_label(fields: &[FieldDef], by: &str, lang: Lang) -> Option<String> {
    let (head, _) = by.split_once('.').unwrap_or((by, ""));
    fields
        .iter()
        .find(|f| f.name == head)
        .map(|f| f.label.get(lang.code(), &f.name).to_string())
        .map(|l| if by.contains('.') { format!("{l} · {}", by.split_once('.').map_or("", |(_, b)| b)) } else { l })
}

/// `ref` field → record type, for the rows of a report.
fn ref_types(bundle: &Bundle, rep: &ReportDef) -> HashMap<String, String> {
    form_fields(bundle, rep).into_iter().filter_map(|f| f.record.map(|r| (f.name, r.value))).collect()
}

impl Runtime {
    /// The instances of a list filter (every page), as a sheet: the number,
    /// state, times, team and people, then every field of the workflow's
    /// forms as people read it; `numeric` marks number columns.
    #[allow(clippy::type_complexity)]
    pub fn export_instances(&self, filter: &flowform_store::InstanceFilter, lang: Lang) -> Result<(Vec<String>, Vec<Vec<String>>, Vec<bool>), CommandError> {
        let bundle = self.bundle();
        let code = lang.code();
        let workflow = filter.workflow.clone().unwrap_or_default();
        let wf = bundle.workflow(&workflow).ok_or_else(|| CommandError::Rejected(flowform_core::Rejection::UnknownWorkflow(workflow.clone())))?;
        let mut fields: Vec<FieldDef> = Vec::new();
        for f in wf.start.form.iter().chain(wf.transitions.iter().filter_map(|t| t.form.as_ref())).filter_map(|f| bundle.form(&f.value)) {
            for x in &f.def.fields {
                if !fields.iter().any(|y| y.name == x.name) && !matches!(x.field_type, FieldType::Signature) {
                    fields.push(x.clone());
                }
            }
        }
        let en = lang == Lang::En;
        let mut header: Vec<String> = if en {
            ["Number", "State", "Created", "Updated", "Team", "Assignee", "Requester"].map(String::from).to_vec()
        } else {
            ["编号", "状态", "创建时间", "更新时间", "班组", "处理人", "报修人"].map(String::from).to_vec()
        };
        header.extend(fields.iter().map(|f| f.label.get(code, &f.name).to_string()));
        let mut numeric = vec![false; 7];
        numeric.extend(fields.iter().map(|f| matches!(f.field_type, FieldType::Integer | FieldType::Number)));
        let tz = crate::app_zone(&bundle);
        let local = |t: flowform_core::Time| t.timestamp().to_zoned_datetime(tz.clone()).strftime("%Y-%m-%d %H:%M").to_string();
        let mut rows = Vec::new();
        let mut page_filter = filter.clone();
        loop {
            let page = self.store.instances(&page_filter)?;
            for i in &page.items {
                let text = self.readable(&bundle, i);
                let mut row = vec![
                    i.number.clone().unwrap_or_else(|| i.id.clone()),
                    text["state"].as_str().unwrap_or_default().to_string(),
                    local(i.created_at),
                    local(i.updated_at),
                    i.assignment.team.as_deref().map(|t| self.team_label(&bundle, t, code)).unwrap_or_default(),
                    i.assignment.assignee.as_deref().map(|a| self.display_name(a)).unwrap_or_default(),
                    self.display_name(&i.requester),
                ];
                for f in &fields {
                    let cell = match (f.field_type, i.data.get(&f.name)) {
                        (FieldType::Integer | FieldType::Number, Some(Value::Number(n))) => n.to_string(),
                        _ => text.get(&f.name).and_then(Value::as_str).unwrap_or_default().to_string(),
                    };
                    row.push(cell);
                }
                rows.push(row);
            }
            match page.next {
                Some(next) if rows.len() < MAX_REPORT_ROWS => page_filter.before = Some(next),
                _ => break,
            }
        }
        Ok((header, rows, numeric))
    }
}

/// `YYYY-MM-DD` in the app's zone → the moment that day starts there.
pub fn day_start(bundle: &Bundle, text: &str) -> Result<jiff::Timestamp, String> {
    let date: jiff::civil::Date = text.parse().map_err(|_| format!("must be a date like 2026-11-01, not `{text}`"))?;
    date.to_datetime(jiff::civil::Time::midnight()).to_zoned_datetime(crate::app_zone(bundle)).map(|z| z.timestamp()).map_err(|e| e.to_string())
}

impl Runtime {
    /// The instances behind one group of a report (its drill-down): the
    /// ids of the kept rows whose group is `key`, newest first, at most `limit`.
    pub fn report_group_instances(
        &self,
        name: &str,
        actor: &Actor,
        q: &ReportQuery,
        key: &str,
        limit: usize,
    ) -> Result<Vec<flowform_core::Instance>, CommandError> {
        let bundle = self.bundle();
        let rep = bundle.model.reports.get(name).filter(|r| may_run(r, actor)).ok_or_else(|| CommandError::RecordNotFound(format!("report `{name}`")))?;
        if !matches!(rep.source, ReportSource::Instances { .. } | ReportSource::Events { .. }) {
            return Ok(Vec::new());
        }
        let rows = self.report_rows(&bundle, rep, actor, q)?;
        let tz = crate::app_zone(&bundle);
        let mut ids: Vec<String> = rows
            .iter()
            .filter(|r| flowform_core::reports::keeps(rep, r, q) && (q.by.is_empty() || flowform_core::reports::group_key(rep, r, &q.by, &tz) == key))
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        ids.dedup();
        let mut out = Vec::new();
        for id in ids.into_iter().take(limit) {
            if let Some(i) = self.store.instance(&id)? {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// The dashboards `actor` may see, their own roles' first.
    pub fn dashboards_for(&self, actor: &Actor) -> Vec<flowform_model::DashboardDef> {
        let bundle = self.bundle();
        let mut out: Vec<flowform_model::DashboardDef> =
            bundle.model.dashboards.values().filter(|d| actor.has_role("admin") || d.roles.iter().any(|r| actor.has_role(&r.value))).cloned().collect();
        out.sort_by_key(|d| !d.roles.iter().any(|r| actor.roles.contains(&r.value) && r.value != "admin"));
        out
    }
}
