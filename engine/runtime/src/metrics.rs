//! Prometheus metrics (text format at `/metrics`): HTTP requests by route
//! and status with latency histograms, commands by workflow, transition and
//! outcome, reloads, timers fired and how late, the outbox and the timers
//! waiting, and the store's commit batches and log syncs.
//!
//! Label values are bounded: routes are the router's templates, workflows
//! and transitions only names the current definitions know (anything else
//! counts as `unknown`), outcomes a fixed list.

use crate::{CommandError, Runtime};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub workflow: String,
    pub transition: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: HistogramFamily<RouteLabels>,
    commands: Family<CommandLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    timers_fired: Counter,
    timer_late_seconds: Histogram,
    outbox_due: Gauge,
    outbox_dead: Gauge,
    timers_due: Gauge,
    timers_late: Gauge,
    timers_quarantined: Gauge,
    /// When the gauges were last read from the store: at most every
    /// [`GAUGES_EVERY`], however often the metrics are scraped.
    gauges_read: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long the gauges read from the store are reused between scrapes.
pub const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flowform");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_seconds = HistogramFamily::<RouteLabels>::new_with_constructor(latency as fn() -> Histogram);
        let commands = Family::<CommandLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let timers_fired = Counter::default();
        let timer_late_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        let (outbox_due, outbox_dead, timers_due, timers_late, timers_quarantined) =
            (Gauge::default(), Gauge::default(), Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("http_requests", "HTTP requests answered, by route template, method and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer an HTTP request, by route template and method", http_seconds.clone());
        registry.register("commands", "Starts and transitions, by workflow, transition (`start` for a start) and outcome", commands.clone());
        registry.register("reloads", "Definition reloads, by result (applied, unchanged, rejected, failed)", reloads.clone());
        registry.register("timers_fired", "Timers that fired (SLA breaches, escalations, timed transitions, deadlines)", timers_fired.clone());
        registry.register("timer_late_seconds", "How long after its due time a timer fired", timer_late_seconds.clone());
        registry.register("outbox_due", "Outbox messages due for delivery now (counted up to 10,000)", outbox_due.clone());
        registry.register("outbox_dead", "Outbox messages that gave up (dead letters; counted up to 10,000)", outbox_dead.clone());
        registry.register("timers_due", "Timers due now and not yet fired (counted up to 10,000)", timers_due.clone());
        registry.register("timers_late", "Timers due more than a minute ago and not yet fired", timers_late.clone());
        registry.register("timers_quarantined", "Timers taken out of the queue because they could not act", timers_quarantined.clone());
        let store = flowform_store::metrics::metrics();
        registry.register("store_commit_jobs", "Jobs in one commit of the store's writer (group commit)", store.batch_jobs.clone());
        registry.register("store_log_sync_seconds", "Time to append a commit to the write-ahead log and sync it", store.sync_seconds.clone());
        registry.register("store_checkpoints", "Checkpoints: the store's database synced with every write so far", store.checkpoints.clone());
        registry.register(
            "store_commits_here",
            "Commits made on the caller's own thread because the store's writer was idle (no hand-off); the rest are the writer thread's",
            store.commits_here.clone(),
        );
        registry.register(
            "store_paced_syncs",
            "Syncs of the database file and of new log segments made every 128 KiB they write, so the log's syncs never wait for a large flush",
            store.paced_syncs.clone(),
        );
        registry.register(
            "store_applied_batches",
            "Commits the store's applier copies from the log into its database in one transaction",
            store.applied_batches.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_seconds,
            commands,
            reloads,
            timers_fired,
            timer_late_seconds,
            outbox_due,
            outbox_dead,
            timers_due,
            timers_late,
            timers_quarantined,
            gauges_read: std::sync::Mutex::new(None),
        }
    }
}

/// A short, fixed name for how a command ended.
pub fn outcome(result: &Result<flowform_core::Instance, CommandError>) -> &'static str {
    use flowform_core::Rejection as R;
    match result {
        Ok(_) => "accepted",
        Err(CommandError::Rejected(r)) => match r {
            R::InvalidInput(_) => "invalid_input",
            R::Forbidden(_) => "forbidden",
            R::GuardFailed { .. } => "guard_failed",
            R::NotInThisState { .. } => "not_in_this_state",
            R::Posting(_) => "stock_refused",
            R::Rule(_) => "rule_error",
            R::UnknownWorkflow(_) | R::UnknownRecordType(_) | R::UnknownTransition { .. } => "not_found",
        },
        Err(CommandError::InvalidReferences(_)) => "invalid_input",
        Err(CommandError::Ledger(_)) => "stock_refused",
        Err(CommandError::StaleVersion { .. } | CommandError::TooMuchContention) => "conflict",
        Err(CommandError::IdempotencyKeyReused) => "idempotency_key_reused",
        Err(CommandError::InstanceNotFound(_)) => "not_found",
        Err(_) => "error",
    }
}

impl Runtime {
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts a start (`transition: None`) or a transition of `workflow`.
    pub(crate) fn count_command(&self, workflow: &str, transition: Option<&str>, outcome: &'static str) {
        let bundle = self.bundle();
        let known = bundle.workflow(workflow);
        let transition = match (known, transition) {
            (Some(_), None) => "start".to_string(),
            (Some(w), Some(t)) if w.transitions.iter().any(|x| x.name == t) => t.to_string(),
            _ => "unknown".to_string(),
        };
        let workflow = if known.is_some() { workflow.to_string() } else { "unknown".to_string() };
        self.metrics.commands.get_or_create(&CommandLabels { workflow, transition, outcome }).inc();
    }

    pub(crate) fn count_reload(&self, result: &'static str) {
        self.metrics.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    pub(crate) fn count_timer_fired(&self, due: flowform_core::Time, now: flowform_core::Time) {
        self.metrics.timers_fired.inc();
        self.metrics.timer_late_seconds.observe((now.since(due).as_secs_f64()).max(0.0));
    }

    /// The metrics in Prometheus' text format. The gauges are read from the
    /// store at most every [`GAUGES_EVERY`] (bounded reads: at most 10,000
    /// due timers and outbox messages), so frequent scrapes cost little.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let fresh = m.gauges_read.lock().map(|mut last| {
            let fresh = last.is_some_and(|t| t.elapsed() < GAUGES_EVERY);
            if !fresh {
                *last = Some(std::time::Instant::now());
            }
            fresh
        });
        if !fresh.unwrap_or(false) {
            self.read_gauges();
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
            tracing::error!(error = %e, "the metrics could not be written");
        }
        out
    }

    /// The gauges, read from the store (bounded reads).
    fn read_gauges(&self) {
        let m = &self.metrics;
        let now = self.now();
        if let Ok(due) = self.store.due_timers(now, 10_000) {
            m.timers_due.set(due.len() as i64);
            let minute_ago = now.checked_add_secs(-60).unwrap_or(now);
            m.timers_late.set(due.iter().filter(|t| t.due_at < minute_ago).count() as i64);
        }
        if let Ok(q) = self.store.quarantined() {
            m.timers_quarantined.set(q.len() as i64);
        }
        if let Ok(due) = self.store.due_outbox(now, 10_000) {
            m.outbox_due.set(due.len() as i64);
        }
        if let Ok(dead) = self.store.dead_letters(10_000) {
            m.outbox_dead.set(dead as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowform_core::Rejection as R;

    #[test]
    fn every_refusal_has_its_outcome_name() {
        let refused = |r: R| outcome(&Err(CommandError::Rejected(r)));
        assert_eq!(refused(R::UnknownWorkflow("x".into())), "not_found");
        assert_eq!(refused(R::UnknownRecordType("x".into())), "not_found");
        assert_eq!(refused(R::UnknownTransition { workflow: "w".into(), name: "t".into(), available: vec![] }), "not_found");
        assert_eq!(refused(R::NotInThisState { transition: "t".into(), state: "s".into(), allowed_from: vec![] }), "not_in_this_state");
        assert_eq!(refused(R::Forbidden("no".into())), "forbidden");
        assert_eq!(refused(R::GuardFailed { transition: "t".into(), message: "m".into() }), "guard_failed");
        assert_eq!(refused(R::InvalidInput(vec![])), "invalid_input");
        assert_eq!(outcome(&Err(CommandError::TooMuchContention)), "conflict");
        assert_eq!(outcome(&Err(CommandError::IdempotencyKeyReused)), "idempotency_key_reused");
    }
}
