//! How the parts that run on their own are doing: the store's writer, the
//! tick loop (timers, schedules, outbox), the file watcher. `/healthz`
//! answers from here, so a load balancer or an admin sees a stopped part
//! instead of a server that only looks alive.

use crate::Runtime;
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A tick loop that has not finished a round for this long is stalled.
const TICK_STALLED_SECS: i64 = 60;

#[derive(Default)]
pub struct Health {
    ticking: AtomicBool,
    last_tick: Mutex<Option<jiff::Timestamp>>,
    last_tick_error: Mutex<Option<String>>,
    delivering: AtomicBool,
    last_delivery_error: Mutex<Option<String>>,
    watcher: Mutex<Option<bool>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Component {
    /// `ok`; `warning` (needs an admin's look, the server works: quarantined
    /// timers, failing deliveries); `degraded` (a part has stopped); `off`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    /// `ok`, `warning`, or `degraded` when a component is (then `/healthz` is 503).
    pub status: &'static str,
    pub components: std::collections::BTreeMap<&'static str, Component>,
}

impl HealthReport {
    /// Whether the server works (answers 200): nothing is degraded.
    pub fn is_ok(&self) -> bool {
        self.status != "degraded"
    }
}

fn ok() -> Component {
    Component { status: "ok", detail: None }
}

impl Runtime {
    /// The tick loop finished a round (with the first error of the round, if any).
    pub fn tick_done(&self, error: Option<String>) {
        self.health.ticking.store(true, Ordering::Relaxed);
        if let Ok(mut t) = self.health.last_tick.lock() {
            *t = Some(self.clock.now());
        }
        if let Ok(mut e) = self.health.last_tick_error.lock() {
            *e = error;
        }
    }

    /// The outbox loop finished a round (with its error, if any).
    pub fn delivery_done(&self, error: Option<String>) {
        self.health.delivering.store(true, Ordering::Relaxed);
        if let Ok(mut e) = self.health.last_delivery_error.lock() {
            *e = error;
        }
    }

    /// Whether a file watcher serves reloads (`false`: it failed; never set: off).
    pub fn set_watcher(&self, running: bool) {
        if let Ok(mut w) = self.health.watcher.lock() {
            *w = Some(running);
        }
    }

    pub fn health(&self) -> HealthReport {
        let mut components = std::collections::BTreeMap::new();
        components.insert(
            "writer",
            if self.store.healthy() { ok() } else { Component { status: "degraded", detail: Some("the store's writer has stopped; writes fail".into()) } },
        );
        let timers = if !self.health.ticking.load(Ordering::Relaxed) {
            Component { status: "off", detail: None }
        } else {
            let last = self.health.last_tick.lock().ok().and_then(|t| *t);
            let stalled = last.is_none_or(|t| self.clock.now().duration_since(t).as_secs() > TICK_STALLED_SECS);
            let quarantined = self.store.quarantined().unwrap_or_default();
            let error = self.health.last_tick_error.lock().ok().and_then(|e| e.clone());
            if stalled {
                Component { status: "degraded", detail: Some(format!("no timer round finished for over {TICK_STALLED_SECS} s")) }
            } else if !quarantined.is_empty() {
                // Which ones and why is for admins (GET /api/v1/admin/quarantine), not for anyone who asks.
                Component { status: "warning", detail: Some(format!("{} timer(s) quarantined; see GET /api/v1/admin/quarantine", quarantined.len())) }
            } else if error.is_some() {
                Component { status: "warning", detail: Some("the last timer round had an error; see the log".into()) }
            } else {
                ok()
            }
        };
        components.insert("timers", timers);
        let failed = self.store.failed_triggers().map(|f| f.len()).unwrap_or(0);
        components.insert(
            "triggers",
            if failed == 0 {
                ok()
            } else {
                Component {
                    status: "warning",
                    detail: Some(format!("{failed} record trigger(s) could not start their workflow; see GET /api/v1/admin/quarantine")),
                }
            },
        );
        components.insert(
            "watcher",
            match self.health.watcher.lock().ok().and_then(|w| *w) {
                None => Component { status: "off", detail: None },
                Some(true) => ok(),
                Some(false) => Component { status: "degraded", detail: Some("the file watcher stopped; reload with POST /api/v1/admin/reload".into()) },
            },
        );
        let outbox = match self.health.last_delivery_error.lock().ok().and_then(|e| e.clone()) {
            Some(_) => Component { status: "warning", detail: Some("the last delivery round failed; see the log and GET /api/v1/admin/outbox".into()) },
            None if self.health.delivering.load(Ordering::Relaxed) => ok(),
            None => Component { status: "off", detail: None },
        };
        components.insert("outbox", outbox);
        let status = if components.values().any(|c| c.status == "degraded") {
            "degraded"
        } else if components.values().any(|c| c.status == "warning") {
            "warning"
        } else {
            "ok"
        };
        HealthReport { status, components }
    }
}

/// How long what is done is kept (days; `None`: forever). Set by the binary
/// from `FLOWFORM_KEEP_*_DAYS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub outbox_days: Option<i64>,
    pub ledger_events_days: Option<i64>,
    pub idempotency_days: Option<i64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { outbox_days: Some(30), ledger_events_days: Some(90), idempotency_days: Some(30) }
    }
}

impl Runtime {
    /// Rewrites what an older version kept as JSON (events, then
    /// instances) in the compact format (`flowform_store::codec`): small
    /// jobs for up to 200 ms per call, so commands wait a few milliseconds
    /// at most behind one; once nothing is left it does nothing. Called
    /// every second by the server (a million work orders take minutes).
    /// Blocking. Returns how many entries it looked at.
    pub fn compact_store_step(&self) -> Result<u64, crate::CommandError> {
        use std::sync::atomic::Ordering::Relaxed;
        const CHUNK: usize = 500;
        const BUDGET: std::time::Duration = std::time::Duration::from_millis(200);
        if self.store_compact.load(Relaxed) {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let mut looked = 0;
        while started.elapsed() < BUDGET {
            match self.store.submit(flowform_store::Job::Compact { limit: CHUNK })? {
                flowform_store::CommitOutcome::Sequence(0) => {
                    self.store_compact.store(true, Relaxed);
                    if self.compacted.load(Relaxed) > 0 {
                        tracing::info!("every event and instance is in the compact format now");
                    }
                    break;
                }
                flowform_store::CommitOutcome::Sequence(n) => {
                    looked += n;
                    self.compacted.fetch_add(n, Relaxed);
                }
                _ => break,
            }
        }
        Ok(looked)
    }

    pub fn set_retention(&self, retention: Retention) {
        if let Ok(mut r) = self.retention.lock() {
            *r = retention;
        }
    }

    /// Deletes delivered outbox messages, notified ledger events and
    /// idempotency keys past their retention, once a day (the first call of
    /// a day does it). Blocking. Returns how many entries were deleted.
    pub fn prune_daily(&self) -> Result<u64, crate::CommandError> {
        const MARK: &str = "pruned_on";
        let now = self.clock.now();
        let today = now.to_zoned_datetime(jiff::tz::TimeZone::UTC).date().to_string();
        if self.store.meta(MARK)?.as_deref() == Some(today.as_str()) {
            return Ok(0);
        }
        let retention = self.retention.lock().map(|r| *r).unwrap_or_default();
        let cutoff = |days: Option<i64>| {
            days.and_then(|d| now.checked_sub(jiff::SignedDuration::from_hours(d.clamp(0, 36_600) * 24)).ok()).map(flowform_core::Time::from)
        };
        let before = flowform_store::PruneBefore {
            outbox: cutoff(retention.outbox_days),
            ledger_events: cutoff(retention.ledger_events_days),
            idempotency: cutoff(retention.idempotency_days),
        };
        let upto: u64 = self.store.meta("notified_ledger_events")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut total = 0;
        // A batch per job; a large backlog takes a few jobs (bounded per day).
        let mut result = Ok(());
        for _ in 0..20 {
            match self.store.submit(flowform_store::Job::Prune { before: before.clone(), ledger_events_upto: upto }) {
                Ok(flowform_store::CommitOutcome::Sequence(n)) => {
                    total += n;
                    if n < 10_000 {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Marked done even when it failed: tried again tomorrow, not every second.
        self.store.submit(flowform_store::Job::SetMeta { key: MARK.into(), value: today })?;
        result?;
        if total > 0 {
            tracing::info!(deleted = total, "pruned what retention lets go");
        }
        match self.sweep_files() {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed uploads nothing refers to"),
            Err(e) => tracing::warn!(error = %e, "could not sweep unreferenced uploads"),
        }
        Ok(total)
    }
}
