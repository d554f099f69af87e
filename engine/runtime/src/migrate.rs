//! Migrating running instances of a workflow to another bundle version.
//!
//! All or nothing: the plan lists every live instance (not in a final state)
//! that runs on another version; if any of them cannot move (its state is gone
//! and no mapping is given, or the new forms reject its data) nothing moves and
//! the report says which and why. Otherwise each instance gets a `migrated`
//! event (actor, from, to, mapping) in its own commit.

use crate::{CommandError, Runtime};
use flowform_core::{Actor, Bundle, Instance};
use flowform_model::OnNewVersion;
use flowform_store::{CommandWrite, CommitOutcome, InstanceFilter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    pub workflow: String,
    /// A bundle version, or `current`.
    #[serde(default = "current")]
    pub to: String,
    /// old state → new state.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    #[serde(default)]
    pub dry_run: bool,
}

fn current() -> String {
    "current".into()
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedMove {
    pub id: String,
    pub from_version: String,
    pub state: String,
    pub to_state: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Blocked {
    pub id: String,
    pub from_version: String,
    pub state: String,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MigrationReport {
    pub workflow: String,
    pub to_version: String,
    pub dry_run: bool,
    pub mapping: BTreeMap<String, String>,
    /// Every live instance on another version, and where it goes.
    pub affected: Vec<PlannedMove>,
    /// Instances that cannot move; when not empty, nothing was migrated.
    pub blocked: Vec<Blocked>,
    /// How many instances were moved (0 for a dry run or a refusal).
    pub migrated: usize,
}

impl Runtime {
    /// A bundle by version, or `current`.
    pub fn bundle_named(&self, to: &str) -> Result<Arc<Bundle>, CommandError> {
        if to == "current" {
            return Ok(self.bundle());
        }
        match self.bundle_for(to) {
            Err(CommandError::BundleMissing(v)) => Err(CommandError::UnknownBundleVersion(v)),
            other => other,
        }
    }

    fn live_instances(&self, workflow: &str, target: &str) -> Result<Vec<Instance>, CommandError> {
        let mut out = Vec::new();
        let mut filter = InstanceFilter { workflow: Some(workflow.to_string()), limit: 500, ..Default::default() };
        loop {
            let page = self.store.instances(&filter)?;
            for i in page.items {
                if i.bundle_version == target {
                    continue;
                }
                let own = self.bundle_for(&i.bundle_version)?;
                let is_final = own.workflow(&i.workflow).and_then(|w| w.state(&i.state)).is_some_and(|s| s.is_final);
                if !is_final {
                    out.push(i);
                }
            }
            match page.next {
                Some(next) => filter.before = Some(next),
                None => break,
            }
        }
        Ok(out)
    }

    /// Plans and (unless `dry_run`, and unless anything is blocked) applies a migration.
    /// Blocking: call it from a blocking thread.
    pub fn migrate(&self, req: &MigrationRequest, actor: &Actor) -> Result<MigrationReport, CommandError> {
        let target = self.bundle_named(&req.to)?;
        if target.workflow(&req.workflow).is_none() && self.bundle().workflow(&req.workflow).is_none() {
            return Err(CommandError::Rejected(flowform_core::Rejection::UnknownWorkflow(req.workflow.clone())));
        }
        let mut report = MigrationReport {
            workflow: req.workflow.clone(),
            to_version: target.version.clone(),
            dry_run: req.dry_run,
            mapping: req.map.clone(),
            affected: Vec::new(),
            blocked: Vec::new(),
            migrated: 0,
        };
        let instances = self.live_instances(&req.workflow, &target.version)?;
        let mut plans = Vec::new();
        for i in instances {
            match flowform_core::migrate::check(&target, &i, &req.map) {
                Ok(to_state) => {
                    report.affected.push(PlannedMove {
                        id: i.id.clone(),
                        from_version: i.bundle_version.clone(),
                        state: i.state.clone(),
                        to_state: to_state.clone(),
                    });
                    plans.push((i, to_state));
                }
                Err(problems) => {
                    report.affected.push(PlannedMove {
                        id: i.id.clone(),
                        from_version: i.bundle_version.clone(),
                        state: i.state.clone(),
                        to_state: String::new(),
                    });
                    report.blocked.push(Blocked { id: i.id, from_version: i.bundle_version, state: i.state, problems });
                }
            }
        }
        if req.dry_run || !report.blocked.is_empty() {
            return Ok(report);
        }
        let now = self.now();
        for (instance, to_state) in plans {
            let outcome = flowform_core::migrate::migrate(&target, &instance, &to_state, &req.map, actor, now);
            let write = CommandWrite {
                children: Vec::new(),
                meta: Vec::new(),
                records: Vec::new(),
                instance: Arc::new(outcome.instance),
                expected_version: instance.version,
                event: outcome.event,
                idempotency: None,
                refs: Vec::new(),
                postings: Vec::new(),
                timers: None,
                fired_timer: None,
                inbox: Vec::new(),
                outbox: Vec::new(),
            };
            let noted = self.to_note(&write);
            match self.store.commit(write)? {
                CommitOutcome::Committed => {
                    self.note_facts(&noted);
                    report.migrated += 1;
                }
                // Changed since the plan (a transition raced it): it keeps its version;
                // running the migration again picks it up.
                _ => {
                    report.blocked.push(Blocked {
                        id: instance.id.clone(),
                        from_version: instance.bundle_version.clone(),
                        state: instance.state.clone(),
                        problems: vec!["the instance changed during the migration; run it again".into()],
                    });
                }
            }
        }
        Ok(report)
    }

    /// After a reload: migrate the workflows that declare `on_new_version: migrate`,
    /// when every instance can move without a mapping; otherwise they keep their
    /// version and the report says why.
    pub(crate) fn auto_migrate(&self, bundle: &Bundle) -> Vec<MigrationReport> {
        let system = Actor { id: "system".into(), name: "on_new_version: migrate".into(), roles: Vec::new(), teams: Vec::new(), email: None, department: None };
        let mut reports = Vec::new();
        for wf in bundle.model.workflows.values().filter(|w| w.on_new_version == OnNewVersion::Migrate) {
            let req = MigrationRequest { workflow: wf.name.clone(), to: bundle.version.clone(), map: BTreeMap::new(), dry_run: false };
            match self.migrate(&req, &system) {
                Ok(report) => {
                    if report.blocked.is_empty() {
                        tracing::info!(workflow = %wf.name, migrated = report.migrated, "instances migrated to the new version");
                    } else {
                        tracing::warn!(workflow = %wf.name, blocked = report.blocked.len(), "instances keep their version: not all can move without a mapping");
                    }
                    reports.push(report);
                }
                Err(e) => tracing::warn!(workflow = %wf.name, error = %e, "automatic migration failed; instances keep their version"),
            }
        }
        reports
    }
}
