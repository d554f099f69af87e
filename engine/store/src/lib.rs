//! Flowform storage: the [`Store`] trait and its implementations.
//!
//! - [`RedbStore`]: the embedded default. One redb file for instances, the
//!   event log, idempotency keys, records, ledgers and bundle versions;
//!   concurrent writes are batched into one durable commit (group commit) by a
//!   writer thread. Users, API tokens (as hashes), sessions and the audit
//!   log are tables of the same file; while a server holds it, the CLI
//!   changes them through the server's admin socket.
//! - [`MemoryStore`]: the same semantics in memory, for tests.
//!
//! An implementation provides two primitives — run a [`Job`] in one atomic,
//! durable transaction, and read from a consistent snapshot — over the
//! key-value tables of `tables.rs`; every rule (optimistic concurrency,
//! idempotency, reference integrity, ledger invariants) is written once in
//! `logic.rs`.
//!
//! Invariant: a job is applied completely or not at all: its checks run before
//! any of its writes, and a job that fails a check writes nothing.

mod accounts;
pub mod codec;
mod legacy_auth;
mod logic;
mod memory;
pub mod metrics;
mod overlay;
mod paced;
mod redb_store;
pub mod tables;
pub mod wal;

use flowform_core::ledger::{Balance, Posting, Violation};
use flowform_core::records::{Record, RecordEvent};
use flowform_core::timers::TimerSpec;
use flowform_core::{Event, Instance, Time};
use flowform_model::Sources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tables::Read;

pub use accounts::{AuditEntry, AuthOp, SessionRecord, TokenRecord, UserAccount};
pub use legacy_auth::LegacyAuth;
pub use memory::MemoryStore;
pub use redb_store::RedbStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("the data directory {path} is in use by another Flowform process")]
    Locked { path: String },
    #[error("stored data is corrupt ({what}): {detail}")]
    Corrupt { what: String, detail: String },
    #[error("the store is shutting down")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A ledger posting with what the store needs to apply it.
#[derive(Clone, Debug, PartialEq)]
pub struct PostingWrite {
    pub posting: Posting,
    /// The ledger's dimensions in order (the balance key).
    pub dimensions: Vec<String>,
    pub non_negative: bool,
    /// The minimum level for the threshold dimension's value, if the ledger has one.
    pub threshold: Option<Threshold>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub dimension: String,
    pub value: String,
    pub minimum: i64,
}

/// One command on an instance: written together or not at all.
#[derive(Clone, Debug)]
pub struct CommandWrite {
    /// The instance as the command leaves it; its `version` is the new version.
    /// Shared: the store keeps it decoded for reads until redb holds it.
    pub instance: Arc<Instance>,
    /// The version the instance must still have (0: it must not exist yet).
    pub expected_version: u64,
    pub event: Event,
    pub idempotency: Option<IdempotencyKey>,
    /// Records the instance's data refers to (added to the reference index).
    pub refs: Vec<(String, String)>,
    pub postings: Vec<PostingWrite>,
    /// `Some` when the instance entered a state: its timers are replaced by these.
    pub timers: Option<Vec<TimerSpec>>,
    /// The timer this command fires; the command is refused if it is gone
    /// (already fired), which makes firing exactly-once.
    pub fired_timer: Option<TimerSpec>,
    pub inbox: Vec<InboxItem>,
    pub outbox: Vec<OutboxItem>,
    /// Records the command updates (`update:`), each at the version it was read at.
    pub records: Vec<RecordWrite>,
    /// New instances the command starts (`starts:`), in the same transaction:
    /// each must not exist yet and posts no movements; their record updates
    /// are merged into `records`.
    pub children: Vec<CommandWrite>,
    /// Settings to write with the command (a team's round-robin turn).
    pub meta: Vec<(String, String)>,
}

/// A timer taken out of the queue because it could not act.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    pub timer: TimerSpec,
    pub reason: String,
    pub at: Time,
}

/// A record's trigger that could not start its workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedTrigger {
    pub record_type: String,
    pub record: String,
    pub workflow: String,
    pub reason: String,
    pub at: Time,
}

/// A message in a user's in-app inbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    pub seq: u64,
    pub user: String,
    pub template: String,
    pub title: String,
    pub body: String,
    pub instance_id: Option<String>,
    pub at: Time,
    pub read: bool,
}

/// A message waiting to be delivered to an outside channel (webhook).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub seq: u64,
    pub channel: String,
    pub url: String,
    pub body: String,
    pub template: String,
    pub instance_id: Option<String>,
    pub created_at: Time,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: u32,
    pub next_at: Time,
    pub last_error: Option<String>,
}

/// A record created, changed or archived.
#[derive(Clone, Debug)]
pub struct RecordWrite {
    pub record: Record,
    pub expected_version: u64,
    pub event: RecordEvent,
    /// What the record refers to now.
    pub refs: Vec<(String, String)>,
    pub idempotency: Option<IdempotencyKey>,
}

/// Movements posted by hand (receipts, transfers, adjustments).
#[derive(Clone, Debug)]
pub struct LedgerWrite {
    pub postings: Vec<PostingWrite>,
    pub actor: String,
    pub at: Time,
    /// A retried request with the same key gets the first request's movements.
    pub idempotency: Option<IdempotencyKey>,
}

/// An instance with its whole history, written as it is (a bulk import from
/// another system, or the scale benchmark's generator).
#[derive(Clone, Debug)]
pub struct ImportedInstance {
    pub instance: Instance,
    /// Oldest first; `seq` 1..=instance.version.
    pub events: Vec<Event>,
    /// Records the instance refers to (so their histories include it).
    pub refs: Vec<(String, String)>,
}

/// How many instances of a workflow are in a state with a team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCount {
    pub workflow: String,
    pub state: String,
    /// `None`: not assigned to a team.
    pub team: Option<String>,
    pub count: u64,
}

/// What [`Store::submit_then`] calls with a job's outcome.
pub type Done = Box<dyn FnOnce(Result<CommitOutcome>) + Send>;

/// What a writer applies in one transaction.
#[derive(Clone, Debug)]
pub enum Job {
    Command(Box<CommandWrite>),
    Record(Box<RecordWrite>),
    /// Deletes a record for good; refused while anything refers to it.
    Purge {
        record_type: String,
        id: String,
        expected_version: u64,
    },
    Ledger(LedgerWrite),
    /// Instances with their histories, all or none; refused (`Conflict`) when an id exists.
    ImportInstances(Vec<ImportedInstance>),
    /// Builds the instance index and counts of a store written before they existed.
    EnsureIndexes,
    /// Rewrites events and instances kept as JSON (before the compact
    /// format, see [`codec`]) compactly, looking at no more than `limit`
    /// entries after where the last job stopped: answers `Sequence(n)` with
    /// how many it looked at (0: none is left, the store is compact).
    Compact {
        limit: usize,
    },
    /// The next number of a named sequence (for record ids).
    NextSequence(String),
    PutBundle {
        version: String,
        sources: Sources,
    },
    SetCurrentBundle(String),
    /// Drops a timer that no longer applies (the instance left the state).
    DropTimer(TimerSpec),
    /// Takes a timer that cannot act out of the queue, keeping it with the
    /// reason for admins (`GET /api/v1/admin/quarantine`), so it never blocks
    /// the others.
    QuarantineTimer(Quarantined),
    /// Keeps a trigger that could not start its workflow, for admins.
    FailedTrigger(FailedTrigger),
    /// Forgets the quarantined timers (and failed triggers) admins have seen: those at
    /// or before `upto` (all: `None`).
    ClearQuarantine {
        upto: Option<String>,
    },
    /// Puts quarantined timers back in the queue (those whose instance is
    /// still in the state they were armed for), e.g. after a fix; answers
    /// `Sequence(n)` with how many went back.
    RequeueQuarantined,
    /// Deletes what retention lets go (at most a batch per job): answers
    /// `Sequence(n)` with how many entries were deleted.
    Prune {
        before: PruneBefore,
        /// Ledger events up to this seq were notified (only those may go).
        ledger_events_upto: u64,
    },
    /// Sets a small named value (e.g. the last period a schedule ran for).
    /// Notifications not caused by a command (e.g. low stock), written together
    /// with the marker of what has been notified.
    Notify {
        inbox: Vec<InboxItem>,
        outbox: Vec<OutboxItem>,
        meta: (String, String),
    },
    SetMeta {
        key: String,
        value: String,
    },
    MarkRead {
        user: String,
        seq: u64,
    },
    /// Changes to users, tokens and sessions, with the security events they
    /// make (numbered by the store), all in one transaction.
    Auth {
        ops: Vec<AuthOp>,
        audit: Vec<AuditEntry>,
    },
    /// The result of a delivery attempt of an outbox item.
    Delivery {
        seq: u64,
        delivered: bool,
        error: Option<String>,
        next_at: Option<Time>,
    },
    /// A dead letter goes back to the queue (an admin fixed the receiver):
    /// pending again, due `at`, its attempts counted afresh.
    RetryDelivery {
        seq: u64,
        at: Time,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// Scoped by the caller (actor and operation) so keys of different users never meet.
    pub key: String,
    /// A hash of the request, to refuse the same key reused for another request.
    pub fingerprint: String,
}

/// The stored answer of an idempotent command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdempotentResult {
    pub fingerprint: String,
    /// The instance as the first request left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
    /// The movements a posting by hand made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub movements: Option<Vec<Movement>>,
    /// When the first request was made (for retention; older keys have none and are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// Cut-off times of a [`Job::Prune`]; `None`: keep that kind forever.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneBefore {
    /// Delivered outbox messages created before this time.
    pub outbox: Option<Time>,
    /// Ledger events (already notified) from before this time.
    pub ledger_events: Option<Time>,
    /// Idempotency keys first used before this time.
    pub idempotency: Option<Time>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommitOutcome {
    Committed,
    /// The instance or record changed since the command was decided (or already exists).
    Conflict {
        current_version: u64,
    },
    /// The idempotency key was used before: here is the first result.
    Replay(Box<IdempotentResult>),
    /// A movement would break the ledger's invariant; nothing was written.
    Violation(Violation),
    /// A record is referred to by these sources and cannot be deleted.
    Referenced(Vec<String>),
    /// No such record.
    Missing,
    /// The next number of a sequence.
    Sequence(u64),
    /// The movements a ledger job recorded.
    Moved(Vec<Movement>),
    /// The timer this command fires is gone: it fired already.
    TimerGone,
    /// A record the command updates changed since it was read: decide again.
    RecordChanged,
}

#[derive(Clone, Debug, Default)]
pub struct InstanceFilter {
    pub workflow: Option<String>,
    pub state: Option<String>,
    pub team: Option<String>,
    pub assignee: Option<String>,
    /// Only instances past (or not past) the deadline of their state.
    pub overdue: Option<bool>,
    /// Return instances created before this id (ids sort by creation time).
    pub before: Option<String>,
    pub limit: usize,
    /// Only what this user may read (`None`: everything, e.g. an admin).
    pub visibility: Option<Visibility>,
}

/// What one user may read, for lists and counts: built by the runtime from
/// the workflows' `visible_to`, applied by the store through its indexes
/// (requester, assignee, team), so a restricted list never scans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    pub user: String,
    pub teams: Vec<String>,
    pub department: Option<String>,
    /// Per workflow, what makes an instance readable; a workflow absent here is not.
    pub workflows: BTreeMap<String, Reach>,
}

/// The relations that make an instance of one workflow readable to a user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Every instance (a role of the user is in `visible_to`).
    pub all: bool,
    pub requester: bool,
    pub assignee: bool,
    pub team: bool,
    /// Instances whose requester was of the user's department.
    pub department: bool,
}

impl Visibility {
    pub fn allows(&self, i: &Instance) -> bool {
        self.workflows.get(&i.workflow).is_some_and(|r| {
            r.all
                || (r.requester && i.requester == self.user)
                || (r.assignee && i.assignment.assignee.as_deref() == Some(self.user.as_str()))
                || (r.team && i.assignment.team.as_ref().is_some_and(|t| self.teams.contains(t)))
                || (r.department && i.requester_department.is_some() && i.requester_department == self.department)
        })
    }

    /// Whether every instance of `workflow` (of every workflow: `None`) is readable.
    pub fn sees_all(&self, workflow: Option<&str>) -> bool {
        match workflow {
            Some(w) => self.workflows.get(w).is_some_and(|r| r.all),
            None => false,
        }
    }
}

impl InstanceFilter {
    pub fn matches(&self, i: &Instance) -> bool {
        self.workflow.as_ref().is_none_or(|w| &i.workflow == w)
            && self.state.as_ref().is_none_or(|s| &i.state == s)
            && self.team.as_ref().is_none_or(|t| i.assignment.team.as_ref() == Some(t))
            && self.assignee.as_ref().is_none_or(|a| i.assignment.assignee.as_ref() == Some(a))
            && self.overdue.is_none_or(|o| i.overdue == o)
    }
}

/// A page of instances, newest first, with the cursor of the next page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub items: Vec<Instance>,
    pub next: Option<String>,
}

/// The balance of one combination of dimensions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalanceRow {
    pub dims: BTreeMap<String, String>,
    #[serde(flatten)]
    pub balance: Balance,
}

/// One change of one balance, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Movement {
    pub seq: u64,
    pub ledger: String,
    /// `receive`, `issue`, `reserve`, `release`, `issue_reserved`, `adjust`, `transfer_out`, `transfer_in`.
    pub kind: String,
    pub dims: BTreeMap<String, String>,
    pub quantity: i64,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub reason: String,
    pub actor: String,
    pub at: Time,
    /// The instance and event that caused it, when a transition posted it.
    pub instance_id: Option<String>,
    pub event_seq: Option<u64>,
}

/// Something a ledger noticed, e.g. `ledger.below_threshold`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEvent {
    pub seq: u64,
    pub kind: String,
    pub ledger: String,
    pub dimension: String,
    pub value: String,
    pub available: i64,
    pub minimum: i64,
    pub at: Time,
}

/// What [`Store::submit_here`] did with a job.
pub enum Here {
    /// Committed on the calling thread: the outcome.
    Done(Result<CommitOutcome>),
    /// Given back, untouched: queue it ([`Store::submit_then`]).
    Queue(Job),
}

/// Where instances, events, records, ledgers, bundle versions and users are kept.
///
/// Implementations provide [`Store::submit`] (atomic and durable before it
/// returns, safe from many threads at once) and [`Store::read`] (a consistent
/// snapshot); everything else is provided.
pub trait Store: Send + Sync + 'static {
    fn submit(&self, job: Job) -> Result<CommitOutcome>;
    /// Submits a job and calls `done` with its outcome once it is durable, from
    /// whichever thread applied it. The default applies it on the calling thread;
    /// a store with a writer thread queues it, so that async callers wait
    /// without holding a thread.
    fn submit_then(&self, job: Job, done: Done) {
        done(self.submit(job));
    }
    /// Commits `job` on the calling thread if that needs no waiting for
    /// other jobs (a store with a writer thread: nothing is queued and the
    /// writer is idle), else gives it back. A sequential caller then waits for
    /// its commit without a thread hand-off each way. It may block for a
    /// sync: async callers call it where blocking is allowed.
    fn submit_here(&self, job: Job) -> Here {
        Here::Queue(job)
    }
    /// A hint (it may change at once): [`Store::submit_here`] would likely
    /// commit now rather than give the job back.
    fn writer_idle(&self) -> bool {
        false
    }
    fn read(&self, f: &mut dyn FnMut(&dyn Read) -> Result<()>) -> Result<()>;
    /// Whether writes can be applied (a store with a writer thread: it runs).
    fn healthy(&self) -> bool {
        true
    }
    /// A clean stop: the writer finishes what is queued, writes everything
    /// into the database and stops; later writes answer `Closed`. (Dropping
    /// the last handle does the same.)
    fn close(&self) {}

    /// Adds or replaces a user account (no audit entry: tools and tests).
    fn put_user(&self, user: &UserAccount) -> Result<()> {
        self.submit(Job::Auth { ops: vec![AuthOp::PutUser(user.clone())], audit: Vec::new() }).map(|_| ())
    }
    fn user(&self, id: &str) -> Result<Option<UserAccount>> {
        read_with(self, |r| logic::get(r, tables::Table::Users, id, "user"))
    }
    /// Every user account, in id order.
    fn users(&self) -> Result<Vec<UserAccount>> {
        read_with(self, |r| logic::all(r, tables::Table::Users, "user"))
    }
    /// Every API token (hashes only), in hash order.
    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        read_with(self, |r| logic::all(r, tables::Table::Tokens, "token"))
    }
    fn sessions(&self) -> Result<Vec<SessionRecord>> {
        read_with(self, |r| logic::all(r, tables::Table::Sessions, "session"))
    }
    /// Security events, newest first, before `before` (a seq) if given.
    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        read_with(self, |r| logic::audit(r, before, limit))
    }

    fn commit(&self, write: CommandWrite) -> Result<CommitOutcome> {
        self.submit(Job::Command(Box::new(write)))
    }
    fn instance(&self, id: &str) -> Result<Option<Instance>> {
        read_with(self, |r| logic::instance(r, id))
    }
    fn instances(&self, filter: &InstanceFilter) -> Result<Page> {
        read_with(self, |r| logic::instances(r, filter))
    }
    /// Instances per workflow, state and team (of one workflow, or all).
    fn instance_counts(&self, workflow: Option<&str>) -> Result<Vec<InstanceCount>> {
        read_with(self, |r| logic::instance_counts(r, workflow))
    }
    /// [`Store::instance_counts`] of what one user may read: the kept counts
    /// for what the user sees whole (a workflow by role, a team), plus the
    /// user's own requests and assignments outside those.
    fn instance_counts_visible(&self, workflow: Option<&str>, visibility: &Visibility) -> Result<Vec<InstanceCount>> {
        read_with(self, |r| logic::instance_counts_visible(r, workflow, visibility))
    }
    /// How many instances are assigned to `user`: (workflow, state, count).
    fn assigned_counts(&self, user: &str) -> Result<Vec<(String, String, u64)>> {
        read_with(self, |r| logic::assigned_counts(r, user))
    }
    /// Events of one instance, oldest first.
    fn history(&self, id: &str) -> Result<Vec<Event>> {
        read_with(self, |r| logic::history(r, id))
    }

    /// The histories of several instances, read in one snapshot.
    fn histories(&self, ids: &[&str]) -> Result<Vec<Vec<Event>>> {
        read_with(self, |r| ids.iter().map(|id| logic::history(r, id)).collect())
    }
    fn idempotent(&self, key: &str) -> Result<Option<IdempotentResult>> {
        read_with(self, |r| logic::idempotent(r, key))
    }
    fn put_bundle(&self, version: &str, sources: &Sources) -> Result<()> {
        self.submit(Job::PutBundle { version: version.to_string(), sources: sources.clone() }).map(|_| ())
    }
    fn bundle(&self, version: &str) -> Result<Option<Sources>> {
        read_with(self, |r| logic::bundle(r, version))
    }
    /// Every stored bundle version, oldest first.
    fn bundle_versions(&self) -> Result<Vec<String>> {
        read_with(self, logic::bundle_versions)
    }
    /// Marks the version being served, so a restart with broken files can serve it.
    fn set_current_bundle(&self, version: &str) -> Result<()> {
        self.submit(Job::SetCurrentBundle(version.to_string())).map(|_| ())
    }
    fn current_bundle(&self) -> Result<Option<String>> {
        read_with(self, logic::current_bundle)
    }
    fn record(&self, record_type: &str, id: &str) -> Result<Option<Record>> {
        read_with(self, |r| logic::record(r, record_type, id))
    }
    /// Every record of a type, archived ones included, in id order.
    fn records(&self, record_type: &str) -> Result<Vec<Record>> {
        read_with(self, |r| logic::records(r, record_type))
    }
    /// Up to `limit` records of a type after the id `after`, in id order
    /// (archived ones only when `archived`), and whether more follow: a page
    /// read without reading the rest of the type.
    fn records_page(&self, record_type: &str, after: Option<&str>, limit: usize, archived: bool) -> Result<(Vec<Record>, bool)> {
        read_with(self, |r| logic::records_page(r, record_type, after, limit, archived))
    }
    /// How many records of a type there are: `(all, not archived)`, kept with every write.
    fn record_counts(&self, record_type: &str) -> Result<(u64, u64)> {
        read_with(self, |r| logic::record_counts(r, record_type))
    }
    fn record_history(&self, record_type: &str, id: &str) -> Result<Vec<RecordEvent>> {
        read_with(self, |r| logic::record_history(r, record_type, id))
    }
    /// Who refers to a record: `instance:ID` or `record:TYPE/ID`.
    fn referrers(&self, record_type: &str, id: &str) -> Result<Vec<String>> {
        read_with(self, |r| logic::referrers(r, record_type, id))
    }
    fn balances(&self, ledger: &str) -> Result<Vec<BalanceRow>> {
        read_with(self, |r| logic::balances(r, ledger))
    }
    /// Movements after `after` (a sequence number), oldest first.
    fn movements(&self, ledger: &str, after: u64, limit: usize) -> Result<Vec<Movement>> {
        read_with(self, |r| logic::movements(r, ledger, after, limit))
    }
    /// The newest movements of a ledger, newest first.
    fn recent_movements(&self, ledger: &str, limit: usize) -> Result<Vec<Movement>> {
        read_with(self, |r| logic::recent_movements(r, ledger, limit))
    }
    fn ledger_events(&self) -> Result<Vec<LedgerEvent>> {
        read_with(self, logic::ledger_events)
    }
    /// Timers due at or before `now`, earliest first.
    fn due_timers(&self, now: Time, limit: usize) -> Result<Vec<TimerSpec>> {
        read_with(self, |r| logic::due_timers(r, now, limit))
    }
    /// Timers of one instance.
    fn timers_of(&self, instance: &str) -> Result<Vec<TimerSpec>> {
        read_with(self, |r| logic::timers_of(r, instance))
    }
    fn inbox(&self, user: &str) -> Result<Vec<InboxItem>> {
        read_with(self, |r| logic::inbox(r, user))
    }
    fn outbox(&self) -> Result<Vec<OutboxItem>> {
        read_with(self, logic::outbox)
    }
    /// Pending outbox messages due at or before `now` (by index, never the whole outbox).
    fn due_outbox(&self, now: Time, limit: usize) -> Result<Vec<OutboxItem>> {
        read_with(self, |r| logic::due_outbox(r, now, limit))
    }
    /// Ledger events after `after` (a seq), oldest first.
    fn ledger_events_after(&self, after: u64, limit: usize) -> Result<Vec<LedgerEvent>> {
        read_with(self, |r| logic::ledger_events_after(r, after, limit))
    }
    /// Dead letters of the outbox, counted up to `limit` (an index, not the outbox).
    fn dead_letters(&self, limit: usize) -> Result<usize> {
        read_with(self, |r| logic::dead_letters(r, limit))
    }
    /// Timers taken out of the queue, oldest first.
    fn quarantined(&self) -> Result<Vec<Quarantined>> {
        read_with(self, |r| collect_quarantine(r))
    }
    /// Record triggers that could not start their workflow, oldest first.
    fn failed_triggers(&self) -> Result<Vec<FailedTrigger>> {
        read_with(self, |r| {
            let (lo, hi) = tables::prefix_range("failed_trigger");
            let mut out = Vec::new();
            r.range(tables::Table::Meta, std::ops::Bound::Included(&lo), std::ops::Bound::Excluded(&hi), false, &mut |_, v| {
                out.push(from_bytes("failed trigger", v)?);
                Ok(true)
            })?;
            Ok(out)
        })
    }
    fn meta(&self, key: &str) -> Result<Option<String>> {
        read_with(self, |r| Ok(r.get(tables::Table::Meta, &format!("user{}{key}", tables::SEP))?.map(|v| String::from_utf8_lossy(&v).to_string())))
    }
}

fn read_with<S: Store + ?Sized, T>(store: &S, f: impl FnOnce(&dyn Read) -> Result<T>) -> Result<T> {
    let mut f = Some(f);
    let mut out = None;
    store.read(&mut |r| {
        if let Some(f) = f.take() {
            out = Some(f(r)?);
        }
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Backend("read did not run".into()))
}

fn collect_quarantine(r: &dyn Read) -> Result<Vec<Quarantined>> {
    let (lo, hi) = tables::prefix_range("quarantine");
    let mut out = Vec::new();
    r.range(tables::Table::Meta, std::ops::Bound::Included(&lo), std::ops::Bound::Excluded(&hi), false, &mut |_, v| {
        out.push(from_bytes("quarantined timer", v)?);
        Ok(true)
    })?;
    Ok(out)
}

fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("cannot encode: {e}")))
}

fn from_bytes<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { what: what.to_string(), detail: e.to_string() })
}

#[cfg(test)]
mod tests;
