//! Running schedules: one instance per matching record and period, never twice.

use crate::{CommandError, CommandOptions, Runtime};
use flowform_core::{Actor, Lang};
use flowform_store::Job;
use serde_json::{Map, Value};

/// What one schedule did in one round.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ScheduleRun {
    pub schedule: String,
    pub period: String,
    pub started: usize,
    pub skipped: bool,
    /// Starts refused (record id: why); the period is done all the same.
    pub refused: Vec<String>,
    /// A start failed for a reason that may pass (storage): the period runs again.
    pub retry: bool,
}

/// Fills `{field}` in a template value from a record (a lone `{field}` keeps the field's type).
pub(crate) fn fill_value(v: &Value, record: &flowform_core::records::Record) -> Value {
    match v {
        Value::String(s) if s.contains('{') => {
            let mut data = record.data.clone();
            data.insert("id".into(), Value::String(record.id.clone()));
            data.insert("title".into(), Value::String(record.title.clone()));
            // A lone `{field}` keeps the field's type (a number stays a number).
            let inner = s.trim();
            if inner.starts_with('{') && inner.ends_with('}') && inner.matches('{').count() == 1 {
                let name = &inner[1..inner.len() - 1];
                if let Some(v) = data.get(name) {
                    return v.clone();
                }
            }
            Value::String(flowform_core::records::fill(s, &data, None, ""))
        }
        other => other.clone(),
    }
}

impl Runtime {
    /// Starts the instances of every schedule whose current period has not run
    /// yet. Each instance is started with an idempotency key made of the
    /// schedule, the period and the record, so a crash half-way and a rerun
    /// never make duplicates; the period is marked done after all are started.
    pub async fn run_schedules(&self) -> Result<Vec<ScheduleRun>, CommandError> {
        let bundle = self.bundle();
        let now = self.now();
        let mut runs = Vec::new();
        for sc in bundle.model.schedules.values() {
            if sc.after_completion {
                let started = self.run_after_completion(sc, now).await?;
                if started > 0 {
                    runs.push(ScheduleRun {
                        schedule: sc.name.clone(),
                        period: "after completion".into(),
                        started,
                        skipped: false,
                        refused: Vec::new(),
                        retry: false,
                    });
                }
                continue;
            }
            let Some((period, start)) = flowform_core::schedules::period(sc, now) else { continue };
            let meta_key = format!("schedule:{}", sc.name);
            let store = self.store.clone();
            let last = tokio::task::spawn_blocking({
                let k = meta_key.clone();
                move || store.meta(&k)
            })
            .await
            .map_err(|e| CommandError::Internal(e.to_string()))??;
            if last.as_deref() == Some(period.as_str()) {
                continue;
            }
            let mut run = ScheduleRun { schedule: sc.name.clone(), period: period.clone(), started: 0, skipped: false, refused: Vec::new(), retry: false };
            // A period that began (and is being retried) is never skipped as missed.
            let begun_key = format!("schedule_begun:{}", sc.name);
            let begun = self.store.meta(&begun_key)?.as_deref() == Some(period.as_str());
            // A schedule that never ran (a new install, a schedule just added)
            // starts with its next period: it does not catch up past ones.
            let new_schedule = last.is_none();
            if !begun && (!sc.catch_up_once || new_schedule) && flowform_core::schedules::missed(start, now) {
                run.skipped = true;
            } else {
                if !begun {
                    self.store.submit(Job::SetMeta { key: begun_key.clone(), value: period.clone() })?;
                }
                let actor = self.schedule_actor(sc);
                let records = self.schedule_records(sc)?;
                let targets: Vec<Option<flowform_core::records::Record>> =
                    if sc.record.is_some() { records.into_iter().map(Some).collect() } else { vec![None] };
                for target in targets {
                    let data: Map<String, Value> =
                        sc.data.iter().map(|(k, v)| (k.clone(), target.as_ref().map_or_else(|| v.clone(), |r| fill_value(v, r)))).collect();
                    let key = format!("schedule:{}:{}:{}", sc.name, period, target.as_ref().map_or("-", |r| r.id.as_str()));
                    let opts = CommandOptions { lang: Lang::ZhCn, idempotency_key: Some(key), expected_version: None };
                    match self.start(&sc.workflow.value, &Value::Object(data), &actor, &opts).await {
                        Ok(_) => run.started += 1,
                        // Started in an earlier try of this period (its data changed since): started.
                        Err(CommandError::IdempotencyKeyReused) => run.started += 1,
                        // Storage or contention may pass: the period is not marked done, and the
                        // idempotency keys keep what did start from starting twice.
                        Err(e @ (CommandError::Store(_) | CommandError::Internal(_) | CommandError::TooMuchContention)) => {
                            tracing::warn!(schedule = %sc.name, error = %e, "scheduled start failed; the period is retried");
                            run.retry = true;
                        }
                        // Anything else is a refusal that stays one: reported, the period goes on.
                        Err(e) => {
                            tracing::warn!(schedule = %sc.name, record = ?target.as_ref().map(|r| &r.id), error = %e, "scheduled start refused");
                            run.refused.push(format!("{}: {e}", target.as_ref().map_or("-", |r| r.id.as_str())));
                        }
                    }
                }
            }
            if run.retry {
                runs.push(run);
                continue;
            }
            let store = self.store.clone();
            let job = Job::SetMeta { key: meta_key, value: period };
            tokio::task::spawn_blocking(move || store.submit(job)).await.map_err(|e| CommandError::Internal(e.to_string()))??;
            runs.push(run);
        }
        Ok(runs)
    }
}

impl Runtime {
    /// The live records a schedule starts instances for (its `where` holding).
    fn schedule_records(&self, sc: &flowform_model::ScheduleDef) -> Result<Vec<flowform_core::records::Record>, CommandError> {
        let Some(rt) = &sc.record else { return Ok(Vec::new()) };
        Ok(self
            .store
            .records(&rt.value)?
            .into_iter()
            .filter(|r| !r.archived && sc.filter.as_ref().is_none_or(|(_, cond)| flowform_core::records::matches_filter(cond, r)))
            .collect())
    }

    /// The schedule acts with the roles its definition declares, never with every role.
    fn schedule_actor(&self, sc: &flowform_model::ScheduleDef) -> Actor {
        Actor {
            id: format!("schedule:{}", sc.name),
            name: sc.title.get("zh-CN", &sc.name).to_string(),
            roles: sc.roles.iter().map(|r| r.value.clone()).collect(),
            teams: Vec::new(),
            email: None,
            department: None,
        }
    }

    /// `anchor: completion`: per record, the next instance is due `every` after
    /// the previous one reached a final state (the first one at once). The count
    /// is part of the idempotency key, so a crash never makes a duplicate.
    async fn run_after_completion(&self, sc: &flowform_model::ScheduleDef, now: flowform_core::Time) -> Result<usize, CommandError> {
        if sc.record.is_none() {
            return Ok(0);
        }
        let records = self.schedule_records(sc)?;
        let actor = self.schedule_actor(sc);
        let mut started = 0;
        for record in records {
            let meta_key = format!("schedule:{}:{}", sc.name, record.id);
            let last = self.store.meta(&meta_key)?;
            // The record's own interval (`every: { days: FIELD }`); without one it is not scheduled.
            let Some(interval) = flowform_core::schedules::interval_for(sc, &record.data) else { continue };
            let (n, due) = match last.as_deref().and_then(|v| v.split_once('|')) {
                // The first: due `every` after the record's last date (`first_due`), else at once.
                None => (1u64, flowform_core::schedules::first_due(sc, &record.data, interval).is_none_or(|d| d <= now)),
                Some((n, id)) => {
                    let n: u64 = n.parse().unwrap_or(1);
                    match self.store.instance(id)? {
                        None => (n + 1, true),
                        Some(i) => {
                            let finished =
                                self.bundle_for(&i.bundle_version)?.workflow(&i.workflow).and_then(|w| w.state(&i.state)).is_some_and(|s| s.is_final);
                            let next = flowform_core::schedules::next_after_n(sc, i.updated_at, interval);
                            (n + 1, finished && next.is_some_and(|d| d <= now))
                        }
                    }
                }
            };
            if !due {
                continue;
            }
            let data: Map<String, Value> = sc.data.iter().map(|(k, v)| (k.clone(), fill_value(v, &record))).collect();
            let opts = CommandOptions { lang: Lang::ZhCn, idempotency_key: Some(format!("schedule:{}:{}:#{n}", sc.name, record.id)), expected_version: None };
            match self.start(&sc.workflow.value, &Value::Object(data), &actor, &opts).await {
                Ok(instance) => {
                    let store = self.store.clone();
                    let job = Job::SetMeta { key: meta_key, value: format!("{n}|{}", instance.id) };
                    tokio::task::spawn_blocking(move || store.submit(job)).await.map_err(|e| CommandError::Internal(e.to_string()))??;
                    started += 1;
                }
                Err(e) => tracing::warn!(schedule = %sc.name, record = %record.id, error = %e, "scheduled start refused"),
            }
        }
        Ok(started)
    }
}
